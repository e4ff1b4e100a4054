//! ferray's canonical binary encoding of WIT values.
//!
//! The encoding is [postcard's wire format] applied to WIT types: a Rust
//! guest or embedder that serializes the "obvious" Rust mirror of a WIT type
//! with serde + postcard produces exactly the bytes [`encode`] produces, and
//! [`decode`] accepts exactly what [`encode`] produces (it is stricter than
//! postcard only in rejecting non-minimal varints, so every value has one
//! encoding). A value type with one NaN, as the component model and WAVE's
//! `Value` have, reads every NaN's bits as that NaN, so its payload comes
//! back canonical. See `docs/VALUES.md` for the full mapping.
//!
//! [`decode`] is fed bytes from untrusted guests: it never panics, bounds
//! nesting depth ([`MAX_DEPTH`]) and never allocates more than the input's
//! length justifies.
//!
//! [postcard's wire format]: https://postcard.jamesmunk.com/wire-format.html

use std::fmt;

use std::borrow::Cow;
use std::marker::PhantomData;

use wasm_wave::wasm::{WasmType, WasmTypeKind, WasmValue, WasmValueError};

/// The deepest nesting of values [`encode`] and [`decode`] accept.
///
/// Validated component types are never deeper than 100 levels, so this
/// only guards against pathological inputs.
pub const MAX_DEPTH: usize = 128;

/// One step from a value to a value inside it, used in error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSegment {
    /// The i-th value of an argument or result list.
    Value(usize),
    /// A record field.
    Field(String),
    /// The i-th element of a list or tuple.
    Element(usize),
    /// The payload of a variant case.
    Case(String),
    /// The payload of `some`.
    Some,
    /// The payload of `ok`.
    Ok,
    /// The payload of `err`.
    Err,
}

impl fmt::Display for PathSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathSegment::Value(i) => write!(f, "value {i}"),
            PathSegment::Field(name) => write!(f, "field `{name}`"),
            PathSegment::Element(i) => write!(f, "element {i}"),
            PathSegment::Case(name) => write!(f, "case `{name}`"),
            PathSegment::Some => f.write_str("`some`"),
            PathSegment::Ok => f.write_str("`ok`"),
            PathSegment::Err => f.write_str("`err`"),
        }
    }
}

/// Where inside a value an error happened, innermost step first.
///
/// Displays as `"at field `count` of element 2: "`, or as nothing when the
/// error concerns the outermost value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValuePath(pub Vec<PathSegment>);

impl fmt::Display for ValuePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some((first, rest)) = self.0.split_first() else {
            return Ok(());
        };
        write!(f, "at {first}")?;
        for seg in rest {
            write!(f, " of {seg}")?;
        }
        f.write_str(": ")
    }
}

/// Error of encoding or decoding a value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
    /// Encoding: the value's shape does not match its type.
    #[error("{path}expected {expected}, got {got}")]
    Mismatch {
        /// Where in the value.
        path: ValuePath,
        /// The type, as [`type_name`] renders it.
        expected: String,
        /// The kind of value found.
        got: String,
    },
    /// Encoding: the value has the right kind but is not a value of the type
    /// (unknown case or flag, wrong field name, wrong number of elements).
    #[error("{path}{message}")]
    InvalidValue {
        /// Where in the value.
        path: ValuePath,
        /// What is wrong.
        message: String,
    },
    /// Decoding: the bytes are not a valid encoding of the type.
    #[error("{path}invalid encoding at byte {offset}: {message}")]
    Malformed {
        /// Where in the value.
        path: ValuePath,
        /// Offset of the offending bytes in the input.
        offset: usize,
        /// What is wrong.
        message: String,
    },
    /// Decoding: the input ends inside a value.
    #[error("{path}unexpected end of input at byte {offset} ({needed} more byte(s) needed)")]
    UnexpectedEnd {
        /// Where in the value.
        path: ValuePath,
        /// Offset of the end of input.
        offset: usize,
        /// How many more bytes were needed at least.
        needed: usize,
    },
    /// Decoding: bytes are left over after the last value.
    #[error("{count} trailing byte(s) after the last value, at byte {offset}")]
    TrailingBytes {
        /// Offset of the first left-over byte.
        offset: usize,
        /// How many bytes are left over.
        count: usize,
    },
    /// Values are nested deeper than the limit.
    #[error("value nesting exceeds the limit of {limit} levels")]
    TooDeep {
        /// The limit ([`MAX_DEPTH`]).
        limit: usize,
    },
    /// A type that only makes sense inside one instance (resources, futures,
    /// streams, error contexts).
    #[error("{path}type {ty} cannot be passed as a value between tasks")]
    Unsupported {
        /// Where in the value.
        path: ValuePath,
        /// The type, as [`type_name`] renders it.
        ty: String,
    },
    /// [`encode_all`]: the number of values differs from the number of types.
    #[error("expected {expected} value(s), got {got}")]
    Arity {
        /// Number of types.
        expected: usize,
        /// Number of values.
        got: usize,
    },
    /// WAVE text could not be parsed or printed.
    #[error("WAVE: {0}")]
    Wave(String),
}

impl CodecError {
    /// Prepends the step `seg` (from an outer value into the erroneous one).
    fn at(mut self, seg: PathSegment) -> Self {
        match &mut self {
            CodecError::Mismatch { path, .. }
            | CodecError::InvalidValue { path, .. }
            | CodecError::Malformed { path, .. }
            | CodecError::UnexpectedEnd { path, .. }
            | CodecError::Unsupported { path, .. } => path.0.push(seg),
            CodecError::TrailingBytes { .. }
            | CodecError::TooDeep { .. }
            | CodecError::Arity { .. }
            | CodecError::Wave(_) => {}
        }
        self
    }

    /// The path inside the value where the error happened, if it has one.
    pub fn path(&self) -> Option<&ValuePath> {
        match self {
            CodecError::Mismatch { path, .. }
            | CodecError::InvalidValue { path, .. }
            | CodecError::Malformed { path, .. }
            | CodecError::UnexpectedEnd { path, .. }
            | CodecError::Unsupported { path, .. } => Some(path),
            _ => None,
        }
    }
}

type Result<T, E = CodecError> = std::result::Result<T, E>;

fn invalid(message: impl Into<String>) -> CodecError {
    CodecError::InvalidValue {
        path: ValuePath::default(),
        message: message.into(),
    }
}

fn mismatch<V: WasmValue>(ty: &V::Type, val: &V) -> CodecError {
    CodecError::Mismatch {
        path: ValuePath::default(),
        expected: type_name(ty),
        got: val.kind().to_string(),
    }
}

fn unsupported<T: WasmType>(ty: &T) -> CodecError {
    CodecError::Unsupported {
        path: ValuePath::default(),
        ty: type_name(ty),
    }
}

fn wave_error(e: WasmValueError) -> CodecError {
    invalid(e.to_string())
}

// ---------------------------------------------------------------------------
// Values

/// How [`decode`] builds values of a type that implements [`WasmValue`]:
/// wasmtime's `Val` on a node, WAVE's own `Value` (typed by a component's
/// WIT, read without compiling it) on a client. Encoding only reads values,
/// through [`WasmValue`]'s `unwrap_*`.
///
/// The checked `make_*` constructors of [`WasmValue`] re-validate the whole
/// value at every level; a decoded value is well typed by construction, so
/// an implementation may build it directly. The defaults take the checked
/// path ([`Checked`]).
pub trait Build {
    type Value: WasmValue;

    /// A list's or tuple's elements as a slice, when the value type keeps
    /// them so: encoding then reads them directly instead of through
    /// `unwrap_list`'s boxed iterator (the fast path for big lists).
    fn items(_value: &Self::Value) -> Option<&[Self::Value]> {
        None
    }
    /// A record's fields as a slice, in the type's order, when kept so.
    fn fields(_value: &Self::Value) -> Option<&[(String, Self::Value)]> {
        None
    }
    /// Append the bytes of `list<u8>` elements; `false` if one is not a `u8`
    /// (the caller then finds and reports it).
    fn push_u8s(items: &[Self::Value], out: &mut Vec<u8>) -> bool {
        for item in items {
            if item.kind() != WasmTypeKind::U8 {
                return false;
            }
            out.push(item.unwrap_u8());
        }
        true
    }

    fn list(ty: &Ty<Self>, items: Vec<Self::Value>) -> Result<Self::Value, WasmValueError> {
        Self::Value::make_list(ty, items)
    }
    /// A `list<u8>`, from its bytes.
    fn bytes(ty: &Ty<Self>, bytes: &[u8]) -> Result<Self::Value, WasmValueError> {
        Self::Value::make_list(ty, bytes.iter().map(|&b| Self::Value::make_u8(b)))
    }
    /// Fields in the type's order.
    fn record(
        ty: &Ty<Self>,
        fields: Vec<(Cow<'_, str>, Self::Value)>,
    ) -> Result<Self::Value, WasmValueError> {
        Self::Value::make_record(ty, fields.iter().map(|(n, v)| (n.as_ref(), v.clone())))
    }
    fn tuple(ty: &Ty<Self>, items: Vec<Self::Value>) -> Result<Self::Value, WasmValueError> {
        Self::Value::make_tuple(ty, items)
    }
    fn variant(
        ty: &Ty<Self>,
        case: &str,
        payload: Option<Self::Value>,
    ) -> Result<Self::Value, WasmValueError> {
        Self::Value::make_variant(ty, case, payload)
    }
    fn enum_case(ty: &Ty<Self>, case: &str) -> Result<Self::Value, WasmValueError> {
        Self::Value::make_enum(ty, case)
    }
    fn option(ty: &Ty<Self>, value: Option<Self::Value>) -> Result<Self::Value, WasmValueError> {
        Self::Value::make_option(ty, value)
    }
    #[allow(clippy::type_complexity)]
    fn result(
        ty: &Ty<Self>,
        value: std::result::Result<Option<Self::Value>, Option<Self::Value>>,
    ) -> Result<Self::Value, WasmValueError> {
        Self::Value::make_result(ty, value)
    }
    fn flags(ty: &Ty<Self>, names: Vec<&str>) -> Result<Self::Value, WasmValueError> {
        Self::Value::make_flags(ty, names)
    }
}

/// The type of a builder's values.
pub type Ty<B> = <<B as Build>::Value as WasmValue>::Type;

/// Builds any [`WasmValue`] with its checked constructors.
#[derive(Debug)]
pub struct Checked<V>(PhantomData<V>);

impl<V: WasmValue> Build for Checked<V> {
    type Value = V;
}

mod reader;

use reader::{Reader, unzigzag};

// ---------------------------------------------------------------------------
// Encoding

/// Appends the encoding of `val`, which must be a value of type `ty`, to `out`.
///
/// On error `out` is left as it was.
pub fn encode<B: Build + ?Sized>(val: &B::Value, ty: &Ty<B>, out: &mut Vec<u8>) -> Result<()> {
    encode_with_limit::<B>(val, ty, out, MAX_DEPTH)
}

/// [`encode`] with a nesting limit other than [`MAX_DEPTH`].
pub fn encode_with_limit<B: Build + ?Sized>(
    val: &B::Value,
    ty: &Ty<B>,
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<()> {
    let start = out.len();
    let result = encode_val::<B>(val, ty, out, 0, limit);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Encodes a list of values (e.g. a function's arguments): the concatenation
/// of their encodings.
pub fn encode_all<B: Build + ?Sized>(vals: &[B::Value], tys: &[Ty<B>]) -> Result<Vec<u8>> {
    if vals.len() != tys.len() {
        return Err(CodecError::Arity {
            expected: tys.len(),
            got: vals.len(),
        });
    }
    let mut out = Vec::new();
    for (i, (val, ty)) in vals.iter().zip(tys).enumerate() {
        encode_val::<B>(val, ty, &mut out, 0, MAX_DEPTH)
            .map_err(|e| e.at(PathSegment::Value(i)))?;
    }
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_len(out: &mut Vec<u8>, len: usize) -> Result<()> {
    let len = u32::try_from(len)
        .map_err(|_| invalid(format!("length {len} exceeds the component model's 2^32-1")))?;
    put_varint(out, u64::from(len));
    Ok(())
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn encode_val<B: Build + ?Sized>(
    val: &B::Value,
    ty: &Ty<B>,
    out: &mut Vec<u8>,
    depth: usize,
    limit: usize,
) -> Result<()> {
    if depth >= limit {
        return Err(CodecError::TooDeep { limit });
    }
    let depth = depth + 1;
    let kind = ty.kind();
    if !supported(kind) {
        return Err(unsupported(ty));
    }
    if val.kind() != kind {
        return Err(mismatch(ty, val));
    }
    match kind {
        _ if encode_scalar(kind, val, out)? => {}
        WasmTypeKind::List => {
            let elem_ty = element_type(ty)?;
            match B::items(val) {
                Some(items) => {
                    put_len(out, items.len())?;
                    // `list<u8>`: no recursion per byte.
                    let start = out.len();
                    if elem_ty.kind() == WasmTypeKind::U8 && !B::push_u8s(items, out) {
                        out.truncate(start);
                    }
                    if out.len() - start != items.len() {
                        encode_elements::<B, _>(items.iter(), &elem_ty, out, depth, limit)?;
                    }
                }
                None => {
                    put_len(out, val.unwrap_list().count())?;
                    encode_elements::<B, _>(val.unwrap_list(), &elem_ty, out, depth, limit)?;
                }
            }
        }
        WasmTypeKind::Record => match B::fields(val) {
            Some(fields) => encode_fields::<B, _>(
                ty,
                fields.len(),
                fields.iter().map(|(n, v)| (Cow::Borrowed(n.as_str()), v)),
                out,
                depth,
                limit,
            )?,
            None => encode_fields::<B, _>(
                ty,
                val.unwrap_record().count(),
                val.unwrap_record(),
                out,
                depth,
                limit,
            )?,
        },
        WasmTypeKind::Tuple => {
            let tys: Vec<_> = ty.tuple_element_types().collect();
            let items: Vec<_> = val.unwrap_tuple().collect();
            if tys.len() != items.len() {
                return Err(invalid(format!(
                    "expected {} elements for {}, got {}",
                    tys.len(),
                    type_name(ty),
                    items.len()
                )));
            }
            for (i, (elem_ty, v)) in tys.iter().zip(&items).enumerate() {
                encode_val::<B>(v.as_ref(), elem_ty, out, depth, limit)
                    .map_err(|e| e.at(PathSegment::Element(i)))?;
            }
        }
        WasmTypeKind::Variant => {
            let (name, payload) = val.unwrap_variant();
            let Some((index, (_, case_ty))) = ty
                .variant_cases()
                .enumerate()
                .find(|(_, (n, _))| *n == name)
            else {
                return Err(invalid(format!(
                    "unknown case `{name}` of {}",
                    type_name(ty)
                )));
            };
            put_varint(out, index as u64);
            match (case_ty, payload) {
                (None, None) => {}
                (Some(payload_ty), Some(payload)) => {
                    encode_val::<B>(payload.as_ref(), &payload_ty, out, depth, limit)
                        .map_err(|e| e.at(PathSegment::Case(name.to_string())))?
                }
                (None, Some(_)) => {
                    return Err(invalid(format!("case `{name}` has no payload, got one")));
                }
                (Some(_), None) => {
                    return Err(invalid(format!("case `{name}` needs a payload, got none")));
                }
            }
        }
        WasmTypeKind::Enum => {
            let name = val.unwrap_enum();
            let Some(index) = ty.enum_cases().position(|n| n == name) else {
                return Err(invalid(format!(
                    "unknown case `{name}` of {}",
                    type_name(ty)
                )));
            };
            put_varint(out, index as u64);
        }
        WasmTypeKind::Option => match val.unwrap_option() {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                let some_ty = ty
                    .option_some_type()
                    .ok_or_else(|| invalid("option type without a payload type"))?;
                encode_val::<B>(v.as_ref(), &some_ty, out, depth, limit)
                    .map_err(|e| e.at(PathSegment::Some))?;
            }
        },
        WasmTypeKind::Result => {
            let (ok_ty, err_ty) = ty
                .result_types()
                .ok_or_else(|| invalid("result type without its cases"))?;
            let (tag, payload_ty, payload, seg) = match val.unwrap_result() {
                Ok(payload) => (0, ok_ty, payload, PathSegment::Ok),
                Err(payload) => (1, err_ty, payload, PathSegment::Err),
            };
            out.push(tag);
            match (payload_ty, payload) {
                (None, None) => {}
                (Some(payload_ty), Some(payload)) => {
                    encode_val::<B>(payload.as_ref(), &payload_ty, out, depth, limit)
                        .map_err(|e| e.at(seg))?;
                }
                (None, Some(_)) => {
                    return Err(invalid(format!(
                        "{seg} of {} has no payload, got one",
                        type_name(ty)
                    )));
                }
                (Some(_), None) => {
                    return Err(invalid(format!(
                        "{seg} of {} needs a payload, got none",
                        type_name(ty)
                    )));
                }
            }
        }
        WasmTypeKind::Flags => {
            let names: Vec<_> = ty.flags_names().collect();
            let mut mask: u32 = 0;
            for name in val.unwrap_flags() {
                let Some(bit) = names.iter().position(|n| *n == name) else {
                    return Err(invalid(format!(
                        "unknown flag `{name}` of {}",
                        type_name(ty)
                    )));
                };
                if bit >= 32 {
                    return Err(invalid(format!("{} has more than 32 flags", type_name(ty))));
                }
                mask |= 1 << bit;
            }
            put_varint(out, u64::from(mask));
        }
        _ => return Err(unsupported(ty)),
    }
    Ok(())
}

/// A value of a kind without parts (numbers, `char`, `string`); `false`
/// for other kinds. The caller checked that the value is of `kind`.
fn encode_scalar<V: WasmValue>(kind: WasmTypeKind, val: &V, out: &mut Vec<u8>) -> Result<bool> {
    match kind {
        WasmTypeKind::Bool => out.push(u8::from(val.unwrap_bool())),
        WasmTypeKind::S8 => out.push(val.unwrap_s8() as u8),
        WasmTypeKind::U8 => out.push(val.unwrap_u8()),
        WasmTypeKind::S16 => put_varint(out, zigzag(i64::from(val.unwrap_s16()))),
        WasmTypeKind::U16 => put_varint(out, u64::from(val.unwrap_u16())),
        WasmTypeKind::S32 => put_varint(out, zigzag(i64::from(val.unwrap_s32()))),
        WasmTypeKind::U32 => put_varint(out, u64::from(val.unwrap_u32())),
        WasmTypeKind::S64 => put_varint(out, zigzag(val.unwrap_s64())),
        WasmTypeKind::U64 => put_varint(out, val.unwrap_u64()),
        WasmTypeKind::F32 => out.extend_from_slice(&val.unwrap_f32().to_le_bytes()),
        WasmTypeKind::F64 => out.extend_from_slice(&val.unwrap_f64().to_le_bytes()),
        WasmTypeKind::Char => {
            let mut buf = [0; 4];
            let s = val.unwrap_char().encode_utf8(&mut buf);
            out.push(s.len() as u8);
            out.extend_from_slice(s.as_bytes());
        }
        WasmTypeKind::String => {
            let s = val.unwrap_string();
            put_len(out, s.len())?;
            out.extend_from_slice(s.as_bytes());
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// A list's elements (the count is written already).
fn encode_elements<B: Build + ?Sized, R: std::ops::Deref<Target = B::Value>>(
    items: impl Iterator<Item = R>,
    elem_ty: &Ty<B>,
    out: &mut Vec<u8>,
    depth: usize,
    limit: usize,
) -> Result<()> {
    let kind = elem_ty.kind();
    for (i, item) in items.enumerate() {
        // Scalars without a recursion (and its checks) per element.
        if item.kind() == kind && encode_scalar(kind, &*item, out)? {
            continue;
        }
        encode_val::<B>(&item, elem_ty, out, depth, limit)
            .map_err(|e| e.at(PathSegment::Element(i)))?;
    }
    Ok(())
}

/// A record's fields, checked against the type's, in order.
fn encode_fields<'n, B: Build + ?Sized, R: std::ops::Deref<Target = B::Value>>(
    ty: &Ty<B>,
    count: usize,
    fields: impl Iterator<Item = (Cow<'n, str>, R)>,
    out: &mut Vec<u8>,
    depth: usize,
    limit: usize,
) -> Result<()> {
    let expected = ty.record_fields().count();
    if expected != count {
        return Err(invalid(format!(
            "expected {expected} fields for {}, got {count}",
            type_name(ty)
        )));
    }
    for ((field_name, field_ty), (name, v)) in ty.record_fields().zip(fields) {
        if name != field_name {
            return Err(invalid(format!(
                "expected field `{field_name}`, got `{name}`"
            )));
        }
        encode_val::<B>(&v, &field_ty, out, depth, limit)
            .map_err(|e| e.at(PathSegment::Field(name.to_string())))?;
    }
    Ok(())
}

/// The kinds of value that can pass between tasks. Fixed-length lists and
/// maps need proposals ferray's engine leaves off; resources, futures and
/// streams live inside one instance.
fn supported(kind: WasmTypeKind) -> bool {
    !matches!(
        kind,
        WasmTypeKind::FixedLengthList | WasmTypeKind::Unsupported
    )
}

fn element_type<T: WasmType>(ty: &T) -> Result<T> {
    ty.list_element_type()
        .ok_or_else(|| invalid("list type without an element type"))
}

// ---------------------------------------------------------------------------
// Decoding

/// Decodes one value of type `ty` from the front of `input` and advances
/// `input` past it. On error `input` is left as it was.
pub fn decode<B: Build + ?Sized>(ty: &Ty<B>, input: &mut &[u8]) -> Result<B::Value> {
    decode_with_limit::<B>(ty, input, MAX_DEPTH)
}

/// [`decode`] with a nesting limit other than [`MAX_DEPTH`].
pub fn decode_with_limit<B: Build + ?Sized>(
    ty: &Ty<B>,
    input: &mut &[u8],
    limit: usize,
) -> Result<B::Value> {
    let mut r = Reader { buf: input, pos: 0 };
    let val = decode_val::<B>(ty, &mut r, 0, limit)?;
    *input = r.rest();
    Ok(val)
}

/// Decodes a list of values (e.g. a function's arguments) that must take up
/// `bytes` exactly: left-over bytes are an error.
pub fn decode_all<B: Build + ?Sized>(tys: &[Ty<B>], bytes: &[u8]) -> Result<Vec<B::Value>> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let mut vals = Vec::with_capacity(tys.len());
    for (i, ty) in tys.iter().enumerate() {
        vals.push(
            decode_val::<B>(ty, &mut r, 0, MAX_DEPTH).map_err(|e| e.at(PathSegment::Value(i)))?,
        );
    }
    if r.remaining() != 0 {
        return Err(CodecError::TrailingBytes {
            offset: r.pos,
            count: r.remaining(),
        });
    }
    Ok(vals)
}

/// Whether values of `kind` have no parts.
fn is_scalar(kind: WasmTypeKind) -> bool {
    matches!(
        kind,
        WasmTypeKind::Bool
            | WasmTypeKind::S8
            | WasmTypeKind::U8
            | WasmTypeKind::S16
            | WasmTypeKind::U16
            | WasmTypeKind::S32
            | WasmTypeKind::U32
            | WasmTypeKind::S64
            | WasmTypeKind::U64
            | WasmTypeKind::F32
            | WasmTypeKind::F64
            | WasmTypeKind::Char
            | WasmTypeKind::String
    )
}

/// A value of a kind without parts; `None` for other kinds.
fn decode_scalar<V: WasmValue>(kind: WasmTypeKind, r: &mut Reader<'_>) -> Result<Option<V>> {
    Ok(Some(match kind {
        WasmTypeKind::Bool => match r.byte()? {
            0 => V::make_bool(false),
            1 => V::make_bool(true),
            b => return Err(r.malformed(r.pos - 1, format!("invalid bool byte {b:#04x}"))),
        },
        WasmTypeKind::S8 => V::make_s8(r.byte()? as i8),
        WasmTypeKind::U8 => V::make_u8(r.byte()?),
        // The casts below are lossless: `varint(bits)` rejects wider values.
        WasmTypeKind::S16 => V::make_s16(unzigzag(r.varint(16)?) as i16),
        WasmTypeKind::U16 => V::make_u16(r.varint(16)? as u16),
        WasmTypeKind::S32 => V::make_s32(unzigzag(r.varint(32)?) as i32),
        WasmTypeKind::U32 => V::make_u32(r.u32()?),
        WasmTypeKind::S64 => V::make_s64(unzigzag(r.varint(64)?)),
        WasmTypeKind::U64 => V::make_u64(r.varint(64)?),
        WasmTypeKind::F32 => V::make_f32(f32::from_le_bytes(r.array()?)),
        WasmTypeKind::F64 => V::make_f64(f64::from_le_bytes(r.array()?)),
        WasmTypeKind::Char => {
            let start = r.pos;
            let n = r.u32()? as usize;
            if !(1..=4).contains(&n) {
                return Err(r.malformed(start, format!("char of {n} bytes")));
            }
            let bytes = r.take(n)?;
            let mut chars = std::str::from_utf8(bytes)
                .map_err(|_| r.malformed(start, "char is not valid UTF-8"))?
                .chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => V::make_char(c),
                _ => return Err(r.malformed(start, "char is not exactly one character")),
            }
        }
        WasmTypeKind::String => {
            let n = r.length("string")?;
            let start = r.pos;
            let bytes = r.take(n)?;
            let s = std::str::from_utf8(bytes)
                .map_err(|e| r.malformed(start + e.valid_up_to(), "string is not valid UTF-8"))?;
            V::make_string(Cow::Borrowed(s))
        }
        _ => return Ok(None),
    }))
}

fn decode_val<B: Build + ?Sized>(
    ty: &Ty<B>,
    r: &mut Reader<'_>,
    depth: usize,
    limit: usize,
) -> Result<B::Value> {
    type V<B> = <B as Build>::Value;
    if depth >= limit {
        return Err(CodecError::TooDeep { limit });
    }
    let depth = depth + 1;
    Ok(match ty.kind() {
        kind if is_scalar(kind) => match decode_scalar::<V<B>>(kind, r)? {
            Some(v) => v,
            None => return Err(unsupported(ty)),
        },
        WasmTypeKind::List => {
            let n = r.length("list")?;
            let elem_ty = element_type(ty)?;
            if elem_ty.kind() == WasmTypeKind::U8 {
                // `list<u8>`: take the bytes in one go.
                B::bytes(ty, r.take(n)?).map_err(wave_error)?
            } else {
                // Every element takes at least one byte: cap the allocation
                // by the input.
                let mut items = Vec::with_capacity(n.min(r.remaining()));
                let kind = elem_ty.kind();
                for i in 0..n {
                    // Scalars without a recursion (and its checks) per element.
                    if is_scalar(kind) {
                        match decode_scalar::<V<B>>(kind, r) {
                            Ok(Some(v)) => {
                                items.push(v);
                                continue;
                            }
                            Ok(None) => {}
                            Err(e) => return Err(e.at(PathSegment::Element(i))),
                        }
                    }
                    items.push(
                        decode_val::<B>(&elem_ty, r, depth, limit)
                            .map_err(|e| e.at(PathSegment::Element(i)))?,
                    );
                }
                B::list(ty, items).map_err(wave_error)?
            }
        }
        WasmTypeKind::Record => {
            let mut fields = Vec::new();
            for (name, field_ty) in ty.record_fields() {
                let v = decode_val::<B>(&field_ty, r, depth, limit)
                    .map_err(|e| e.at(PathSegment::Field(name.to_string())))?;
                fields.push((name, v));
            }
            B::record(ty, fields).map_err(wave_error)?
        }
        WasmTypeKind::Tuple => {
            let mut items = Vec::new();
            for (i, elem_ty) in ty.tuple_element_types().enumerate() {
                items.push(
                    decode_val::<B>(&elem_ty, r, depth, limit)
                        .map_err(|e| e.at(PathSegment::Element(i)))?,
                );
            }
            B::tuple(ty, items).map_err(wave_error)?
        }
        WasmTypeKind::Variant => {
            let index = r.discriminant(ty.variant_cases().count(), || type_name(ty))?;
            let Some((name, case_ty)) = ty.variant_cases().nth(index) else {
                return Err(r.malformed(r.pos, "variant case vanished"));
            };
            let payload = match case_ty {
                None => None,
                Some(payload_ty) => Some(
                    decode_val::<B>(&payload_ty, r, depth, limit)
                        .map_err(|e| e.at(PathSegment::Case(name.to_string())))?,
                ),
            };
            B::variant(ty, &name, payload).map_err(wave_error)?
        }
        WasmTypeKind::Enum => {
            let index = r.discriminant(ty.enum_cases().count(), || type_name(ty))?;
            match ty.enum_cases().nth(index) {
                Some(name) => B::enum_case(ty, &name).map_err(wave_error)?,
                None => return Err(r.malformed(r.pos, "enum case vanished")),
            }
        }
        WasmTypeKind::Option => match r.byte()? {
            0 => B::option(ty, None).map_err(wave_error)?,
            1 => {
                let some_ty = ty
                    .option_some_type()
                    .ok_or_else(|| invalid("option type without a payload type"))?;
                let v = decode_val::<B>(&some_ty, r, depth, limit)
                    .map_err(|e| e.at(PathSegment::Some))?;
                B::option(ty, Some(v)).map_err(wave_error)?
            }
            b => return Err(r.malformed(r.pos - 1, format!("invalid option tag {b:#04x}"))),
        },
        WasmTypeKind::Result => {
            let ok = r.discriminant(2, || type_name(ty))? == 0;
            let (ok_ty, err_ty) = ty
                .result_types()
                .ok_or_else(|| invalid("result type without its cases"))?;
            let (payload_ty, seg) = if ok {
                (ok_ty, PathSegment::Ok)
            } else {
                (err_ty, PathSegment::Err)
            };
            let payload = match payload_ty {
                None => None,
                Some(payload_ty) => {
                    Some(decode_val::<B>(&payload_ty, r, depth, limit).map_err(|e| e.at(seg))?)
                }
            };
            B::result(ty, if ok { Ok(payload) } else { Err(payload) }).map_err(wave_error)?
        }
        WasmTypeKind::Flags => {
            let start = r.pos;
            let mask = r.u32()?;
            let names: Vec<_> = ty.flags_names().collect();
            let known = if names.len() >= 32 {
                u32::MAX
            } else {
                (1u32 << names.len()) - 1
            };
            if mask & !known != 0 {
                return Err(r.malformed(
                    start,
                    format!(
                        "unknown flag bits {:#x} for {}",
                        mask & !known,
                        type_name(ty)
                    ),
                ));
            }
            let set = names
                .iter()
                .enumerate()
                // Past 32 names no bit is left: those flags are never set.
                .filter(|&(i, _)| {
                    1u32.checked_shl(i as u32)
                        .is_some_and(|bit| mask & bit != 0)
                })
                .map(|(_, name)| name.as_ref())
                .collect();
            B::flags(ty, set).map_err(wave_error)?
        }
        _ => return Err(unsupported(ty)),
    })
}

/// Whether `encoded`, the canonical encoding of a function's `results`, is
/// an `err(..)`: the one check, for retries and for exit codes. A
/// `result<_, _>` encodes `err` as a leading 1.
pub fn returns_err<T: WasmType>(results: &[T], encoded: &[u8]) -> bool {
    matches!(results, [one] if one.kind() == WasmTypeKind::Result) && encoded.first() == Some(&1)
}

// ---------------------------------------------------------------------------
// WAVE and type names

/// Parses WAVE text (e.g. `{name: "x", count: 3}`) as a value of type `ty`.
pub fn parse_wave<V: WasmValue>(ty: &V::Type, text: &str) -> Result<V> {
    wasm_wave::from_str::<V>(ty, text).map_err(|e| CodecError::Wave(e.to_string()))
}

/// Renders a value as WAVE text.
pub fn to_wave<V: WasmValue>(val: &V) -> Result<String> {
    wasm_wave::to_string(val).map_err(|e| CodecError::Wave(e.to_string()))
}

/// A WIT-like rendering of a type for error messages and `ferray inspect`,
/// e.g. `list<s64>`, `record { name: string, count: u32 }`,
/// `option<string>`, `result<u32, string>`.
///
/// Records, variants, enums and flags are rendered structurally (the type
/// does not carry its WIT name).
pub fn type_name<T: WasmType>(ty: &T) -> String {
    let mut s = String::new();
    write_type(&mut s, ty, 0);
    s
}

fn write_type<T: WasmType>(s: &mut String, ty: &T, depth: usize) {
    use std::fmt::Write as _;
    if depth >= MAX_DEPTH {
        s.push('…');
        return;
    }
    let depth = depth + 1;
    let kind = ty.kind();
    match kind {
        WasmTypeKind::List => {
            s.push_str("list<");
            if let Some(elem) = ty.list_element_type() {
                write_type(s, &elem, depth);
            }
            s.push('>');
        }
        WasmTypeKind::Record => {
            s.push_str("record { ");
            for (i, (name, field_ty)) in ty.record_fields().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                s.push_str(&name);
                s.push_str(": ");
                write_type(s, &field_ty, depth);
            }
            s.push_str(" }");
        }
        WasmTypeKind::Tuple => {
            s.push_str("tuple<");
            for (i, elem) in ty.tuple_element_types().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                write_type(s, &elem, depth);
            }
            s.push('>');
        }
        WasmTypeKind::Variant => {
            s.push_str("variant { ");
            for (i, (name, payload)) in ty.variant_cases().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                s.push_str(&name);
                if let Some(payload) = payload {
                    s.push('(');
                    write_type(s, &payload, depth);
                    s.push(')');
                }
            }
            s.push_str(" }");
        }
        WasmTypeKind::Enum => {
            let names: Vec<_> = ty.enum_cases().collect();
            let _ = write!(s, "enum {{ {} }}", names.join(", "));
        }
        WasmTypeKind::Flags => {
            let names: Vec<_> = ty.flags_names().collect();
            let _ = write!(s, "flags {{ {} }}", names.join(", "));
        }
        WasmTypeKind::Option => {
            s.push_str("option<");
            if let Some(some) = ty.option_some_type() {
                write_type(s, &some, depth);
            }
            s.push('>');
        }
        WasmTypeKind::Result => match ty.result_types() {
            None | Some((None, None)) => s.push_str("result"),
            Some((Some(ok), None)) => {
                s.push_str("result<");
                write_type(s, &ok, depth);
                s.push('>');
            }
            Some((ok, Some(err))) => {
                s.push_str("result<");
                match ok {
                    Some(ok) => write_type(s, &ok, depth),
                    None => s.push('_'),
                }
                s.push_str(", ");
                write_type(s, &err, depth);
                s.push('>');
            }
        },
        // wasmtime's resources, futures, streams and maps.
        WasmTypeKind::Unsupported => s.push_str("<resource, future, stream or map>"),
        // Primitives print as WIT writes them (`s64`, `string`, ...).
        other => {
            let _ = write!(s, "{other}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_wave::value::{Type, Value};

    /// A type of more than 32 flags (no validated component has one) decodes
    /// its first 32 from the mask and never sets the others; found by the
    /// fuzzer (`fuzz/regressions/codec/`).
    #[test]
    fn flags_past_32_are_never_set() {
        let names: Vec<String> = (0..35).map(|i| format!("f{i}")).collect();
        let ty = Type::flags(names).expect("flags");
        let mut bytes = Vec::new();
        put_varint(&mut bytes, u64::from(u32::MAX));
        let vals =
            decode_all::<Checked<Value>>(std::slice::from_ref(&ty), &bytes).expect("decodes");
        assert_eq!(vals[0].unwrap_flags().count(), 32);
        assert!(vals[0].unwrap_flags().all(|n| n != "f32"));
        let mut out = Vec::new();
        encode::<Checked<Value>>(&vals[0], &ty, &mut out).expect("encodes");
        assert_eq!(out, bytes);
    }
}
