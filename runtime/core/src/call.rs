/// One piece of an argument list: canonically encoded bytes of one or more
/// parameters, or an object whose value stands there once ready (a
/// dependency). The pieces of a call are concatenated, then decoded against
/// the callee's parameter types.
#[derive(Debug, Clone)]
pub enum Arg<R> {
    Value(Vec<u8>),
    Ref(R),
}

impl<R> Arg<R> {
    pub fn as_ref(&self) -> Option<&R> {
        match self {
            Arg::Ref(r) => Some(r),
            Arg::Value(_) => None,
        }
    }
}
