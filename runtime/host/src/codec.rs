//! ferray's canonical binary encoding of WIT values.
//!
//! The encoding is [postcard's wire format] applied to WIT types: a Rust
//! guest or embedder that serializes the "obvious" Rust mirror of a WIT type
//! with serde + postcard produces exactly the bytes [`encode`] produces, and
//! [`decode`] accepts exactly what [`encode`] produces (it is stricter than
//! postcard only in rejecting non-minimal varints, so every value has one
//! encoding). See `docs/VALUES.md` for the full mapping.
//!
//! [`decode`] is fed bytes from untrusted guests: it never panics, bounds
//! nesting depth ([`MAX_DEPTH`]) and never allocates more than the input's
//! length justifies.
//!
//! [postcard's wire format]: https://postcard.jamesmunk.com/wire-format.html

use std::fmt;

/// The WIT types and values the codec works on (wasmtime's): for the host
/// and its tools only; the embedding API exposes none of them.
pub use wasmtime::component::{Type, Val};

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
    /// The i-th element of a list, fixed-length list or tuple.
    Element(usize),
    /// The payload of a variant case.
    Case(String),
    /// The payload of `some`.
    Some,
    /// The payload of `ok`.
    Ok,
    /// The payload of `err`.
    Err,
    /// The key of the i-th map entry.
    Key(usize),
    /// The value of the i-th map entry.
    MapValue(usize),
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
            PathSegment::Key(i) => write!(f, "key of entry {i}"),
            PathSegment::MapValue(i) => write!(f, "value of entry {i}"),
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
        got: &'static str,
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

fn mismatch(ty: &Type, val: &Val) -> CodecError {
    CodecError::Mismatch {
        path: ValuePath::default(),
        expected: type_name(ty),
        got: val_kind(val),
    }
}

fn unsupported(ty: &Type) -> CodecError {
    CodecError::Unsupported {
        path: ValuePath::default(),
        ty: type_name(ty),
    }
}

// ---------------------------------------------------------------------------
// Encoding

/// Appends the encoding of `val`, which must be a value of type `ty`, to `out`.
///
/// On error `out` is left as it was.
pub fn encode(val: &Val, ty: &Type, out: &mut Vec<u8>) -> Result<()> {
    let start = out.len();
    let result = encode_val(val, ty, out, 0, MAX_DEPTH);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Encodes a list of values (e.g. a function's arguments): the concatenation
/// of their encodings.
pub fn encode_all(vals: &[Val], tys: &[Type]) -> Result<Vec<u8>> {
    if vals.len() != tys.len() {
        return Err(CodecError::Arity {
            expected: tys.len(),
            got: vals.len(),
        });
    }
    let mut out = Vec::new();
    for (i, (val, ty)) in vals.iter().zip(tys).enumerate() {
        encode_val(val, ty, &mut out, 0, MAX_DEPTH).map_err(|e| e.at(PathSegment::Value(i)))?;
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

fn encode_val(val: &Val, ty: &Type, out: &mut Vec<u8>, depth: usize, limit: usize) -> Result<()> {
    if depth >= limit {
        return Err(CodecError::TooDeep { limit });
    }
    let depth = depth + 1;
    match (ty, val) {
        (Type::Bool, Val::Bool(b)) => out.push(u8::from(*b)),
        (Type::S8, Val::S8(v)) => out.push(*v as u8),
        (Type::U8, Val::U8(v)) => out.push(*v),
        (Type::S16, Val::S16(v)) => put_varint(out, zigzag(i64::from(*v))),
        (Type::U16, Val::U16(v)) => put_varint(out, u64::from(*v)),
        (Type::S32, Val::S32(v)) => put_varint(out, zigzag(i64::from(*v))),
        (Type::U32, Val::U32(v)) => put_varint(out, u64::from(*v)),
        (Type::S64, Val::S64(v)) => put_varint(out, zigzag(*v)),
        (Type::U64, Val::U64(v)) => put_varint(out, *v),
        (Type::Float32, Val::Float32(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (Type::Float64, Val::Float64(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (Type::Char, Val::Char(c)) => {
            let mut buf = [0; 4];
            let s = c.encode_utf8(&mut buf);
            out.push(s.len() as u8);
            out.extend_from_slice(s.as_bytes());
        }
        (Type::String, Val::String(s)) => {
            put_len(out, s.len())?;
            out.extend_from_slice(s.as_bytes());
        }
        (Type::List(list), Val::List(items)) => {
            put_len(out, items.len())?;
            encode_elements(&list.ty(), items, out, depth, limit)?;
        }
        (Type::FixedLengthList(list), Val::FixedLengthList(items) | Val::List(items)) => {
            let len = list.len() as usize;
            if items.len() != len {
                return Err(invalid(format!(
                    "expected {len} elements for {}, got {}",
                    type_name(ty),
                    items.len()
                )));
            }
            encode_elements(&list.ty(), items, out, depth, limit)?;
        }
        (Type::Map(map), Val::Map(entries)) => {
            put_len(out, entries.len())?;
            let (key_ty, value_ty) = (map.key(), map.value());
            for (i, (k, v)) in entries.iter().enumerate() {
                encode_val(k, &key_ty, out, depth, limit).map_err(|e| e.at(PathSegment::Key(i)))?;
                encode_val(v, &value_ty, out, depth, limit)
                    .map_err(|e| e.at(PathSegment::MapValue(i)))?;
            }
        }
        (Type::Record(record), Val::Record(fields)) => {
            let field_tys = record.fields();
            if field_tys.len() != fields.len() {
                return Err(invalid(format!(
                    "expected {} fields for {}, got {}",
                    field_tys.len(),
                    type_name(ty),
                    fields.len()
                )));
            }
            for (field_ty, (name, v)) in field_tys.zip(fields) {
                if name.as_str() != field_ty.name {
                    return Err(invalid(format!(
                        "expected field `{}`, got `{name}`",
                        field_ty.name
                    )));
                }
                encode_val(v, &field_ty.ty, out, depth, limit)
                    .map_err(|e| e.at(PathSegment::Field(name.clone())))?;
            }
        }
        (Type::Tuple(tuple), Val::Tuple(items)) => {
            let tys = tuple.types();
            if tys.len() != items.len() {
                return Err(invalid(format!(
                    "expected {} elements for {}, got {}",
                    tys.len(),
                    type_name(ty),
                    items.len()
                )));
            }
            for (i, (elem_ty, v)) in tys.zip(items).enumerate() {
                encode_val(v, &elem_ty, out, depth, limit)
                    .map_err(|e| e.at(PathSegment::Element(i)))?;
            }
        }
        (Type::Variant(variant), Val::Variant(name, payload)) => {
            let Some((index, case)) = variant
                .cases()
                .enumerate()
                .find(|(_, c)| c.name == name.as_str())
            else {
                return Err(invalid(format!(
                    "unknown case `{name}` of {}",
                    type_name(ty)
                )));
            };
            put_varint(out, index as u64);
            match (&case.ty, payload) {
                (None, None) => {}
                (Some(payload_ty), Some(payload)) => {
                    encode_val(payload, payload_ty, out, depth, limit)
                        .map_err(|e| e.at(PathSegment::Case(name.clone())))?
                }
                (None, Some(_)) => {
                    return Err(invalid(format!("case `{name}` has no payload, got one")));
                }
                (Some(_), None) => {
                    return Err(invalid(format!("case `{name}` needs a payload, got none")));
                }
            }
        }
        (Type::Enum(enum_), Val::Enum(name)) => {
            let Some(index) = enum_.names().position(|n| n == name.as_str()) else {
                return Err(invalid(format!(
                    "unknown case `{name}` of {}",
                    type_name(ty)
                )));
            };
            put_varint(out, index as u64);
        }
        (Type::Option(option), Val::Option(v)) => match v {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                encode_val(v, &option.ty(), out, depth, limit)
                    .map_err(|e| e.at(PathSegment::Some))?;
            }
        },
        (Type::Result(result), Val::Result(v)) => {
            let (tag, payload_ty, payload, seg) = match v {
                Ok(payload) => (0, result.ok(), payload, PathSegment::Ok),
                Err(payload) => (1, result.err(), payload, PathSegment::Err),
            };
            out.push(tag);
            match (payload_ty, payload) {
                (None, None) => {}
                (Some(payload_ty), Some(payload)) => {
                    encode_val(payload, &payload_ty, out, depth, limit).map_err(|e| e.at(seg))?;
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
        (Type::Flags(flags), Val::Flags(set)) => {
            let mut mask: u32 = 0;
            for name in set {
                let Some(bit) = flags.names().position(|n| n == name.as_str()) else {
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
        (
            Type::Own(_) | Type::Borrow(_) | Type::Future(_) | Type::Stream(_) | Type::ErrorContext,
            _,
        ) => return Err(unsupported(ty)),
        (ty, val) => return Err(mismatch(ty, val)),
    }
    Ok(())
}

/// Elements of a list or fixed-length list (the count is already written).
fn encode_elements(
    elem_ty: &Type,
    items: &[Val],
    out: &mut Vec<u8>,
    depth: usize,
    limit: usize,
) -> Result<()> {
    if let Type::U8 = elem_ty {
        // Fast path for `list<u8>`: one tight loop, no per-element dispatch.
        out.reserve(items.len());
        for (i, item) in items.iter().enumerate() {
            let Val::U8(b) = item else {
                return Err(mismatch(elem_ty, item).at(PathSegment::Element(i)));
            };
            out.push(*b);
        }
        return Ok(());
    }
    for (i, item) in items.iter().enumerate() {
        encode_val(item, elem_ty, out, depth, limit).map_err(|e| e.at(PathSegment::Element(i)))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Decoding

/// Decodes one value of type `ty` from the front of `input` and advances
/// `input` past it. On error `input` is left as it was.
pub fn decode(ty: &Type, input: &mut &[u8]) -> Result<Val> {
    decode_with_limit(ty, input, MAX_DEPTH)
}

fn decode_with_limit(ty: &Type, input: &mut &[u8], limit: usize) -> Result<Val> {
    let mut r = Reader { buf: input, pos: 0 };
    let val = decode_val(ty, &mut r, 0, limit)?;
    *input = r.rest();
    Ok(val)
}

/// Decodes a list of values (e.g. a function's arguments) that must take up
/// `bytes` exactly: left-over bytes are an error.
pub fn decode_all(tys: &[Type], bytes: &[u8]) -> Result<Vec<Val>> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let mut vals = Vec::with_capacity(tys.len());
    for (i, ty) in tys.iter().enumerate() {
        vals.push(decode_val(ty, &mut r, 0, MAX_DEPTH).map_err(|e| e.at(PathSegment::Value(i)))?);
    }
    if r.remaining() != 0 {
        return Err(CodecError::TrailingBytes {
            offset: r.pos,
            count: r.remaining(),
        });
    }
    Ok(vals)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    fn malformed(&self, offset: usize, message: impl Into<String>) -> CodecError {
        CodecError::Malformed {
            path: ValuePath::default(),
            offset,
            message: message.into(),
        }
    }

    fn eof(&self, needed: usize) -> CodecError {
        CodecError::UnexpectedEnd {
            path: ValuePath::default(),
            offset: self.buf.len(),
            needed,
        }
    }

    fn byte(&mut self) -> Result<u8> {
        match self.buf.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(self.eof(1)),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or_else(|| self.eof(n))?;
        match self.buf.get(self.pos..end) {
            Some(bytes) => {
                self.pos = end;
                Ok(bytes)
            }
            None => Err(self.eof(n - self.remaining())),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// An unsigned LEB128 varint of a `bits`-wide integer, by postcard's
    /// rules (at most ceil(bits/7) bytes, no bits beyond `bits`) plus one
    /// more for canonicity: no superfluous trailing zero bytes.
    fn varint(&mut self, bits: u32) -> Result<u64> {
        debug_assert!(!bits.is_multiple_of(7) && bits <= 64);
        let start = self.pos;
        let max_bytes = bits.div_ceil(7);
        let max_last = (1u8 << (bits % 7)) - 1;
        let mut out: u64 = 0;
        for i in 0..max_bytes {
            let b = self.byte()?;
            out |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if i == max_bytes - 1 && b > max_last {
                    return Err(self.malformed(start, format!("varint overflows u{bits}")));
                }
                if i > 0 && b == 0 {
                    return Err(self.malformed(start, "overlong (non-minimal) varint"));
                }
                return Ok(out);
            }
        }
        Err(self.malformed(
            start,
            format!("varint longer than {max_bytes} bytes for u{bits}"),
        ))
    }

    fn u32(&mut self) -> Result<u32> {
        // `varint(32)` never returns more than 32 bits.
        Ok(self.varint(32)? as u32)
    }

    /// The length of a string, list or map, checked against the input left:
    /// every element takes at least one byte, so a longer list cannot be
    /// valid, and nothing is allocated for it.
    fn length(&mut self, what: &str) -> Result<usize> {
        let start = self.pos;
        let n = self.u32()? as usize;
        if n > self.remaining() {
            return Err(self.malformed(
                start,
                format!(
                    "{what} length {n} exceeds the {} byte(s) left",
                    self.remaining()
                ),
            ));
        }
        Ok(n)
    }

    fn discriminant(&mut self, cases: usize, what: impl FnOnce() -> String) -> Result<usize> {
        let start = self.pos;
        let index = self.u32()? as usize;
        if index >= cases {
            return Err(self.malformed(
                start,
                format!(
                    "case index {index} out of range for {} ({cases} cases)",
                    what()
                ),
            ));
        }
        Ok(index)
    }
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn decode_val(ty: &Type, r: &mut Reader<'_>, depth: usize, limit: usize) -> Result<Val> {
    if depth >= limit {
        return Err(CodecError::TooDeep { limit });
    }
    let depth = depth + 1;
    Ok(match ty {
        Type::Bool => match r.byte()? {
            0 => Val::Bool(false),
            1 => Val::Bool(true),
            b => return Err(r.malformed(r.pos - 1, format!("invalid bool byte {b:#04x}"))),
        },
        Type::S8 => Val::S8(r.byte()? as i8),
        Type::U8 => Val::U8(r.byte()?),
        // The casts below are lossless: `varint(bits)` rejects wider values.
        Type::S16 => Val::S16(unzigzag(r.varint(16)?) as i16),
        Type::U16 => Val::U16(r.varint(16)? as u16),
        Type::S32 => Val::S32(unzigzag(r.varint(32)?) as i32),
        Type::U32 => Val::U32(r.u32()?),
        Type::S64 => Val::S64(unzigzag(r.varint(64)?)),
        Type::U64 => Val::U64(r.varint(64)?),
        Type::Float32 => Val::Float32(f32::from_le_bytes(r.array()?)),
        Type::Float64 => Val::Float64(f64::from_le_bytes(r.array()?)),
        Type::Char => {
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
                (Some(c), None) => Val::Char(c),
                _ => return Err(r.malformed(start, "char is not exactly one character")),
            }
        }
        Type::String => {
            let n = r.length("string")?;
            let start = r.pos;
            let bytes = r.take(n)?;
            let s = std::str::from_utf8(bytes)
                .map_err(|e| r.malformed(start + e.valid_up_to(), "string is not valid UTF-8"))?;
            Val::String(s.to_owned())
        }
        Type::List(list) => {
            let n = r.length("list")?;
            Val::List(decode_elements(&list.ty(), n, r, depth, limit)?)
        }
        Type::FixedLengthList(list) => {
            let n = list.len() as usize;
            Val::FixedLengthList(decode_elements(&list.ty(), n, r, depth, limit)?)
        }
        Type::Map(map) => {
            let n = r.length("map")?;
            let (key_ty, value_ty) = (map.key(), map.value());
            let mut entries = Vec::with_capacity(n);
            for i in 0..n {
                let k =
                    decode_val(&key_ty, r, depth, limit).map_err(|e| e.at(PathSegment::Key(i)))?;
                let v = decode_val(&value_ty, r, depth, limit)
                    .map_err(|e| e.at(PathSegment::MapValue(i)))?;
                entries.push((k, v));
            }
            Val::Map(entries)
        }
        Type::Record(record) => {
            let fields = record.fields();
            let mut out = Vec::with_capacity(fields.len());
            for field in fields {
                let v = decode_val(&field.ty, r, depth, limit)
                    .map_err(|e| e.at(PathSegment::Field(field.name.to_owned())))?;
                out.push((field.name.to_owned(), v));
            }
            Val::Record(out)
        }
        Type::Tuple(tuple) => {
            let tys = tuple.types();
            let mut out = Vec::with_capacity(tys.len());
            for (i, elem_ty) in tys.enumerate() {
                out.push(
                    decode_val(&elem_ty, r, depth, limit)
                        .map_err(|e| e.at(PathSegment::Element(i)))?,
                );
            }
            Val::Tuple(out)
        }
        Type::Variant(variant) => {
            let index = r.discriminant(variant.cases().len(), || type_name(ty))?;
            let Some(case) = variant.cases().nth(index) else {
                return Err(r.malformed(r.pos, "variant case vanished"));
            };
            let payload = match &case.ty {
                None => None,
                Some(payload_ty) => Some(Box::new(
                    decode_val(payload_ty, r, depth, limit)
                        .map_err(|e| e.at(PathSegment::Case(case.name.to_owned())))?,
                )),
            };
            Val::Variant(case.name.to_owned(), payload)
        }
        Type::Enum(enum_) => {
            let index = r.discriminant(enum_.names().len(), || type_name(ty))?;
            match enum_.names().nth(index) {
                Some(name) => Val::Enum(name.to_owned()),
                None => return Err(r.malformed(r.pos, "enum case vanished")),
            }
        }
        Type::Option(option) => match r.byte()? {
            0 => Val::Option(None),
            1 => Val::Option(Some(Box::new(
                decode_val(&option.ty(), r, depth, limit).map_err(|e| e.at(PathSegment::Some))?,
            ))),
            b => return Err(r.malformed(r.pos - 1, format!("invalid option tag {b:#04x}"))),
        },
        Type::Result(result) => {
            let ok = r.discriminant(2, || type_name(ty))? == 0;
            let (payload_ty, seg) = if ok {
                (result.ok(), PathSegment::Ok)
            } else {
                (result.err(), PathSegment::Err)
            };
            let payload = match payload_ty {
                None => None,
                Some(payload_ty) => Some(Box::new(
                    decode_val(&payload_ty, r, depth, limit).map_err(|e| e.at(seg))?,
                )),
            };
            Val::Result(if ok { Ok(payload) } else { Err(payload) })
        }
        Type::Flags(flags) => {
            let start = r.pos;
            let mask = r.u32()?;
            let count = flags.names().len();
            let known = if count >= 32 {
                u32::MAX
            } else {
                (1u32 << count) - 1
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
            Val::Flags(
                flags
                    .names()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, name)| name.to_owned())
                    .collect(),
            )
        }
        Type::Own(_) | Type::Borrow(_) | Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
            return Err(unsupported(ty));
        }
    })
}

/// `n` elements of a list or fixed-length list.
fn decode_elements(
    elem_ty: &Type,
    n: usize,
    r: &mut Reader<'_>,
    depth: usize,
    limit: usize,
) -> Result<Vec<Val>> {
    if let Type::U8 = elem_ty {
        // Fast path for `list<u8>`: take the bytes in one go.
        return Ok(r.take(n)?.iter().map(|&b| Val::U8(b)).collect());
    }
    // Every element takes at least one byte: cap the allocation by the input.
    let mut out = Vec::with_capacity(n.min(r.remaining()));
    for i in 0..n {
        out.push(decode_val(elem_ty, r, depth, limit).map_err(|e| e.at(PathSegment::Element(i)))?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// WAVE and type names

/// The WIT types of `func`'s parameters (for the host's tools and benchmarks;
/// the embedding API shows none of wasmtime's types).
pub fn param_types(func: &crate::FuncInfo) -> Vec<Type> {
    func.param_types()
}

/// Parses WAVE text (e.g. `{name: "x", count: 3}`) as a value of type `ty`.
pub fn parse_wave(ty: &Type, text: &str) -> Result<Val> {
    wasm_wave::from_str::<Val>(ty, text).map_err(|e| CodecError::Wave(e.to_string()))
}

/// Renders a value as WAVE text.
pub fn to_wave(val: &Val) -> Result<String> {
    wasm_wave::to_string(val).map_err(|e| CodecError::Wave(e.to_string()))
}

/// A WIT-like rendering of a type for error messages and `ferray inspect`,
/// e.g. `list<s64>`, `record { name: string, count: u32 }`,
/// `option<string>`, `result<u32, string>`.
///
/// Records, variants, enums and flags are rendered structurally (the type
/// does not carry its WIT name); resources as `own<resource>`.
pub fn type_name(ty: &Type) -> String {
    let mut s = String::new();
    write_type(&mut s, ty, 0);
    s
}

fn write_type(s: &mut String, ty: &Type, depth: usize) {
    use std::fmt::Write as _;
    if depth >= MAX_DEPTH {
        s.push('…');
        return;
    }
    let depth = depth + 1;
    match ty {
        Type::Bool => s.push_str("bool"),
        Type::S8 => s.push_str("s8"),
        Type::U8 => s.push_str("u8"),
        Type::S16 => s.push_str("s16"),
        Type::U16 => s.push_str("u16"),
        Type::S32 => s.push_str("s32"),
        Type::U32 => s.push_str("u32"),
        Type::S64 => s.push_str("s64"),
        Type::U64 => s.push_str("u64"),
        Type::Float32 => s.push_str("f32"),
        Type::Float64 => s.push_str("f64"),
        Type::Char => s.push_str("char"),
        Type::String => s.push_str("string"),
        Type::List(list) => {
            s.push_str("list<");
            write_type(s, &list.ty(), depth);
            s.push('>');
        }
        Type::FixedLengthList(list) => {
            s.push_str("list<");
            write_type(s, &list.ty(), depth);
            let _ = write!(s, ", {}>", list.len());
        }
        Type::Map(map) => {
            s.push_str("map<");
            write_type(s, &map.key(), depth);
            s.push_str(", ");
            write_type(s, &map.value(), depth);
            s.push('>');
        }
        Type::Record(record) => {
            s.push_str("record { ");
            for (i, field) in record.fields().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                s.push_str(field.name);
                s.push_str(": ");
                write_type(s, &field.ty, depth);
            }
            s.push_str(" }");
        }
        Type::Tuple(tuple) => {
            s.push_str("tuple<");
            for (i, elem) in tuple.types().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                write_type(s, &elem, depth);
            }
            s.push('>');
        }
        Type::Variant(variant) => {
            s.push_str("variant { ");
            for (i, case) in variant.cases().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                s.push_str(case.name);
                if let Some(payload) = &case.ty {
                    s.push('(');
                    write_type(s, payload, depth);
                    s.push(')');
                }
            }
            s.push_str(" }");
        }
        Type::Enum(enum_) => {
            let _ = write!(
                s,
                "enum {{ {} }}",
                enum_.names().collect::<Vec<_>>().join(", ")
            );
        }
        Type::Flags(flags) => {
            let _ = write!(
                s,
                "flags {{ {} }}",
                flags.names().collect::<Vec<_>>().join(", ")
            );
        }
        Type::Option(option) => {
            s.push_str("option<");
            write_type(s, &option.ty(), depth);
            s.push('>');
        }
        Type::Result(result) => match (result.ok(), result.err()) {
            (None, None) => s.push_str("result"),
            (Some(ok), None) => {
                s.push_str("result<");
                write_type(s, &ok, depth);
                s.push('>');
            }
            (ok, Some(err)) => {
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
        Type::Own(_) => s.push_str("own<resource>"),
        Type::Borrow(_) => s.push_str("borrow<resource>"),
        Type::Future(future) => match future.ty() {
            Some(payload) => {
                s.push_str("future<");
                write_type(s, &payload, depth);
                s.push('>');
            }
            None => s.push_str("future"),
        },
        Type::Stream(stream) => match stream.ty() {
            Some(payload) => {
                s.push_str("stream<");
                write_type(s, &payload, depth);
                s.push('>');
            }
            None => s.push_str("stream"),
        },
        Type::ErrorContext => s.push_str("error-context"),
    }
}

/// The kind of a value, for error messages.
fn val_kind(val: &Val) -> &'static str {
    match val {
        Val::Bool(_) => "bool",
        Val::S8(_) => "s8",
        Val::U8(_) => "u8",
        Val::S16(_) => "s16",
        Val::U16(_) => "u16",
        Val::S32(_) => "s32",
        Val::U32(_) => "u32",
        Val::S64(_) => "s64",
        Val::U64(_) => "u64",
        Val::Float32(_) => "f32",
        Val::Float64(_) => "f64",
        Val::Char(_) => "char",
        Val::String(_) => "string",
        Val::List(_) => "list",
        Val::FixedLengthList(_) => "fixed-length list",
        Val::Map(_) => "map",
        Val::Record(_) => "record",
        Val::Tuple(_) => "tuple",
        Val::Variant(..) => "variant",
        Val::Enum(_) => "enum",
        Val::Option(_) => "option",
        Val::Result(_) => "result",
        Val::Flags(_) => "flags",
        Val::Resource(_) => "resource",
        Val::Future(_) => "future",
        Val::Stream(_) => "stream",
        Val::ErrorContext(_) => "error-context",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Serialize};
    use std::collections::BTreeMap;
    use std::fmt::Debug;
    use std::sync::LazyLock;
    use wasmtime::component::Component;
    use wasmtime::component::types::ComponentItem;
    use wasmtime::{Config, Engine};

    // ----- fixture: WIT types, exported from a component -----

    /// Exported types are how a component without code exposes `Type`s;
    /// records, variants, enums and flags must be exported (named) before
    /// other exported types may use them, hence `$x'` → `$x`.
    const TYPES_WAT: &str = r#"
(component
  (type $point' (record (field "x" s32) (field "y" s32)))
  (export $point "point" (type $point'))
  (type $person' (record (field "name" string) (field "age" u8)
                         (field "tags" (list string)) (field "score" (option f64))))
  (export "person" (type $person'))
  (type $counter' (record (field "name" string) (field "count" u32)))
  (export "counter" (type $counter'))
  (type $shape' (variant (case "circle" f32) (case "rect" $point) (case "empty")))
  (export $shape "shape" (type $shape'))
  (type $color' (enum "red" "green" "blue"))
  (export $color "color" (type $color'))
  (type $perms' (flags "read" "write" "exec"))
  (export $perms "perms" (type $perms'))
  (type $flags32' (flags "f0" "f1" "f2" "f3" "f4" "f5" "f6" "f7" "f8" "f9" "f10" "f11"
                         "f12" "f13" "f14" "f15" "f16" "f17" "f18" "f19" "f20" "f21" "f22"
                         "f23" "f24" "f25" "f26" "f27" "f28" "f29" "f30" "f31"))
  (export "flags32" (type $flags32'))
  (type $bool bool) (export "bool" (type $bool))
  (type $u32 u32) (export "u32" (type $u32))
  (type $char char) (export "char" (type $char))
  (type $string string) (export "string" (type $string))
  (type $ints (tuple u8 s8 u16 s16 u32 s32 u64 s64)) (export "ints" (type $ints))
  (type $floats (tuple f32 f64)) (export "floats" (type $floats))
  (type $text (tuple bool char string)) (export "text" (type $text))
  (type $bytes (list u8)) (export "bytes" (type $bytes))
  (type $s64s (list s64)) (export "s64s" (type $s64s))
  (type $strings (list string)) (export "strings" (type $strings))
  (type $res (result u32 (error string))) (export "res" (type $res))
  (type $res-unit (result)) (export "res-unit" (type $res-unit))
  (type $res-ok (result string)) (export "res-ok" (type $res-ok))
  (type $res-err (result (error u32))) (export "res-err" (type $res-err))
  (type $opt (option (option u32))) (export "opt" (type $opt))
  (type $nested (list (tuple string (option $shape) (list $color) $perms (list u8))))
  (export "nested" (type $nested))
  (type $deep (option (option (option (option (option (option (option (option (option (option
               (option (option (option (option (option (option (option (option (option (option
               u32)))))))))))))))))))))
  (export "deep" (type $deep))
  (import "thing" (type $thing (sub resource)))
  (type $own (own $thing)) (export "own" (type $own))
  ;; Imported functions may only use imported (or primitive/anonymous) types.
  (import "ipoint" (type $ipoint (eq $point)))
  (import "icolor" (type $icolor (eq $color)))
  (import "f" (func (param "p" $ipoint) (param "n" u32) (param "s" string) (param "c" $icolor)))
)
"#;

    /// Map and fixed-length lists need features of their own.
    const EXTRA_WAT: &str = r#"
(component
  (type $point' (record (field "x" s32) (field "y" s32)))
  (export $point "point" (type $point'))
  (type $map (map string u32)) (export "map" (type $map))
  (type $fixed (list u8 4)) (export "fixed" (type $fixed))
  (type $fixed-points (list $point 2)) (export "fixed-points" (type $fixed-points))
)
"#;

    struct Fixture {
        engine: Engine,
        types: Component,
        extra: Option<Component>,
    }

    static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .wasm_component_model_map(true)
            .wasm_component_model_fixed_length_lists(true);
        let engine = Engine::new(&config).expect("engine");
        let types = Component::new(&engine, TYPES_WAT).expect("types component");
        let extra = Component::new(&engine, EXTRA_WAT)
            .map_err(|e| eprintln!("map / fixed-length lists unavailable: {e:#}"))
            .ok();
        Fixture {
            engine,
            types,
            extra,
        }
    });

    fn export_of(component: &Component, name: &str) -> Type {
        let f = &*FIXTURE;
        let ct = component.component_type();
        match ct.get_export(&f.engine, name).map(|e| e.ty) {
            Some(ComponentItem::Type(ty)) => ty,
            other => panic!("export `{name}` is not a type: {other:?}"),
        }
    }

    fn ty(name: &str) -> Type {
        export_of(&FIXTURE.types, name)
    }

    /// The parameter types of the imported function `f`.
    fn params_of_f() -> Vec<(String, Type)> {
        let f = &*FIXTURE;
        let ct = f.types.component_type();
        match ct.get_import(&f.engine, "f").map(|e| e.ty) {
            Some(ComponentItem::ComponentFunc(func)) => {
                func.params().map(|(n, t)| (n.to_owned(), t)).collect()
            }
            other => panic!("import `f` is not a function: {other:?}"),
        }
    }

    // ----- Rust mirrors of the WIT types -----

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    struct Point {
        x: i32,
        y: i32,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    struct Person {
        name: String,
        age: u8,
        tags: Vec<String>,
        score: Option<f64>,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    struct Counter {
        name: String,
        count: u32,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    enum Shape {
        Circle(f32),
        Rect(Point),
        Empty,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone, Copy)]
    enum Color {
        Red,
        Green,
        Blue,
    }

    const READ: u32 = 1;
    const EXEC: u32 = 4;

    // ----- Val builders -----

    fn s(x: &str) -> Val {
        Val::String(x.to_owned())
    }

    fn some(v: Val) -> Val {
        Val::Option(Some(Box::new(v)))
    }

    fn record(fields: &[(&str, Val)]) -> Val {
        Val::Record(
            fields
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.clone()))
                .collect(),
        )
    }

    fn point(x: i32, y: i32) -> Val {
        record(&[("x", Val::S32(x)), ("y", Val::S32(y))])
    }

    fn color(c: Color) -> Val {
        Val::Enum(format!("{c:?}").to_lowercase())
    }

    fn flags(names: &[&str]) -> Val {
        Val::Flags(names.iter().map(|n| (*n).to_owned()).collect())
    }

    fn bytes_val(b: &[u8]) -> Val {
        Val::List(b.iter().map(|&b| Val::U8(b)).collect())
    }

    /// Both ways: postcard bytes decode to `val`, `val` encodes to the same
    /// bytes, and those bytes deserialize back to `rust`.
    #[track_caller]
    fn check<T>(ty: &Type, rust: &T, val: &Val)
    where
        T: Serialize + DeserializeOwned + PartialEq + Debug,
    {
        let bytes = postcard::to_allocvec(rust).expect("postcard serializes");
        let decoded = decode_all(std::slice::from_ref(ty), &bytes)
            .unwrap_or_else(|e| panic!("decoding {rust:?} as {}: {e}", type_name(ty)));
        assert_eq!(decoded, std::slice::from_ref(val), "decoding {rust:?}");
        let mut out = Vec::new();
        encode(val, ty, &mut out).unwrap_or_else(|e| panic!("encoding {val:?}: {e}"));
        assert_eq!(out, bytes, "encoding {val:?}");
        let back: T = postcard::from_bytes(&out).expect("postcard deserializes");
        assert_eq!(&back, rust);
        // Every strict prefix of a valid encoding is an error (encodings are
        // self-delimiting), never a panic.
        for cut in 0..bytes.len() {
            assert!(decode_all(std::slice::from_ref(ty), &bytes[..cut]).is_err());
        }
    }

    /// The error of decoding `bytes` as one value of type `ty` (without the
    /// `value 0` step that `decode_all` adds to paths).
    #[track_caller]
    fn decode_err(ty: &Type, bytes: &[u8]) -> CodecError {
        let mut input = bytes;
        match decode(ty, &mut input) {
            Err(e) => e,
            Ok(_) if !input.is_empty() => {
                decode_all(std::slice::from_ref(ty), bytes).expect_err("trailing bytes")
            }
            Ok(v) => panic!("decoding {bytes:?} as {} gave {v:?}", type_name(ty)),
        }
    }

    // ----- tests -----

    #[test]
    fn codec_primitives_match_postcard() {
        check(&ty("bool"), &true, &Val::Bool(true));
        check(&ty("bool"), &false, &Val::Bool(false));
        for n in [0, 1, 127, 128, 300, 16_383, 16_384, u32::MAX] {
            check(&ty("u32"), &n, &Val::U32(n));
        }
        for c in ['a', 'é', '€', '🦀', '\0'] {
            check(&ty("char"), &c, &Val::Char(c));
        }
        check(&ty("string"), &String::new(), &s(""));
        check(&ty("string"), &"héllo wörld".to_owned(), &s("héllo wörld"));
        let ints = ty("ints");
        type Ints = (u8, i8, u16, i16, u32, i32, u64, i64);
        let cases: [Ints; 4] = [
            (0, 0, 0, 0, 0, 0, 0, 0),
            (255, -1, 300, -300, 70_000, -70_000, 1 << 40, -(1 << 40)),
            (
                u8::MAX,
                i8::MIN,
                u16::MAX,
                i16::MIN,
                u32::MAX,
                i32::MIN,
                u64::MAX,
                i64::MIN,
            ),
            (1, i8::MAX, 1, i16::MAX, 1, i32::MAX, 1, i64::MAX),
        ];
        for t in cases {
            let val = Val::Tuple(vec![
                Val::U8(t.0),
                Val::S8(t.1),
                Val::U16(t.2),
                Val::S16(t.3),
                Val::U32(t.4),
                Val::S32(t.5),
                Val::U64(t.6),
                Val::S64(t.7),
            ]);
            check(&ints, &t, &val);
        }
        let floats = ty("floats");
        for t in [
            (0.0f32, 0.0f64),
            (-0.0, -0.0),
            (1.5, -2.25e300),
            (f32::INFINITY, f64::MIN_POSITIVE),
        ] {
            check(
                &floats,
                &t,
                &Val::Tuple(vec![Val::Float32(t.0), Val::Float64(t.1)]),
            );
        }
        check(
            &ty("text"),
            &(true, 'x', "yz".to_owned()),
            &Val::Tuple(vec![Val::Bool(true), Val::Char('x'), s("yz")]),
        );
    }

    #[test]
    fn codec_worked_byte_examples() {
        // The examples in docs/VALUES.md.
        let mut out = Vec::new();
        encode(
            &record(&[("name", s("x")), ("count", Val::U32(300))]),
            &ty("counter"),
            &mut out,
        )
        .expect("encodes");
        assert_eq!(out, [0x01, b'x', 0xac, 0x02]);
        let out = encode_all(&[Val::S64(-3)], &[Type::S64]).expect("encodes");
        assert_eq!(out, [0x05]);
        let mut out = Vec::new();
        encode(
            &Val::Variant("rect".into(), Some(Box::new(point(1, -1)))),
            &ty("shape"),
            &mut out,
        )
        .expect("encodes");
        assert_eq!(out, [0x01, 0x02, 0x01]);
        let mut out = Vec::new();
        let res = Val::Result(Err(Some(Box::new(s("no")))));
        encode(&res, &ty("res"), &mut out).expect("encodes");
        assert_eq!(out, [0x01, 0x02, b'n', b'o']);
    }

    #[test]
    fn codec_records_variants_enums_flags_match_postcard() {
        check(&ty("point"), &Point { x: -5, y: 7 }, &point(-5, 7));
        check(
            &ty("counter"),
            &Counter {
                name: "n".into(),
                count: 300,
            },
            &record(&[("name", s("n")), ("count", Val::U32(300))]),
        );
        let person = Person {
            name: "Ada".into(),
            age: 36,
            tags: vec!["math".into(), "engines".into()],
            score: Some(99.5),
        };
        let person_val = record(&[
            ("name", s("Ada")),
            ("age", Val::U8(36)),
            ("tags", Val::List(vec![s("math"), s("engines")])),
            ("score", some(Val::Float64(99.5))),
        ]);
        check(&ty("person"), &person, &person_val);

        let shape = ty("shape");
        check(
            &shape,
            &Shape::Circle(2.5),
            &Val::Variant("circle".into(), Some(Box::new(Val::Float32(2.5)))),
        );
        check(
            &shape,
            &Shape::Rect(Point { x: 1, y: 2 }),
            &Val::Variant("rect".into(), Some(Box::new(point(1, 2)))),
        );
        check(&shape, &Shape::Empty, &Val::Variant("empty".into(), None));

        for c in [Color::Red, Color::Green, Color::Blue] {
            check(&ty("color"), &c, &color(c));
        }

        let perms = ty("perms");
        check(&perms, &0u32, &flags(&[]));
        check(&perms, &(READ | EXEC), &flags(&["read", "exec"]));
        check(&perms, &7u32, &flags(&["read", "write", "exec"]));
        check(&ty("flags32"), &((1u32 << 31) | 1), &flags(&["f0", "f31"]));
        // Flags given out of order or twice encode like the set they denote.
        let mut out = Vec::new();
        encode(&flags(&["exec", "read", "exec"]), &perms, &mut out).expect("encodes");
        assert_eq!(out, [5]);
    }

    #[test]
    fn codec_options_and_results_match_postcard() {
        let opt = ty("opt");
        check(&opt, &None::<Option<u32>>, &Val::Option(None));
        check(&opt, &Some(None::<u32>), &some(Val::Option(None)));
        check(&opt, &Some(Some(500u32)), &some(some(Val::U32(500))));

        let res = ty("res");
        check(
            &res,
            &Ok::<u32, String>(7),
            &Val::Result(Ok(Some(Box::new(Val::U32(7))))),
        );
        check(
            &res,
            &Err::<u32, String>("bad".into()),
            &Val::Result(Err(Some(Box::new(s("bad"))))),
        );
        check(&ty("res-unit"), &Ok::<(), ()>(()), &Val::Result(Ok(None)));
        check(&ty("res-unit"), &Err::<(), ()>(()), &Val::Result(Err(None)));
        check(
            &ty("res-ok"),
            &Ok::<String, ()>("y".into()),
            &Val::Result(Ok(Some(Box::new(s("y"))))),
        );
        check(
            &ty("res-ok"),
            &Err::<String, ()>(()),
            &Val::Result(Err(None)),
        );
        check(&ty("res-err"), &Ok::<(), u32>(()), &Val::Result(Ok(None)));
        check(
            &ty("res-err"),
            &Err::<(), u32>(9),
            &Val::Result(Err(Some(Box::new(Val::U32(9))))),
        );
    }

    #[test]
    fn codec_lists_and_nesting_match_postcard() {
        check(&ty("bytes"), &Vec::<u8>::new(), &bytes_val(&[]));
        check(
            &ty("bytes"),
            &vec![0u8, 1, 255, 128],
            &bytes_val(&[0, 1, 255, 128]),
        );
        check(
            &ty("s64s"),
            &vec![0i64, 1, -1, i64::MAX],
            &Val::List(vec![
                Val::S64(0),
                Val::S64(1),
                Val::S64(-1),
                Val::S64(i64::MAX),
            ]),
        );
        let many: Vec<String> = (0..200).map(|i| format!("s{i}")).collect();
        check(
            &ty("strings"),
            &many,
            &Val::List(many.iter().map(|x| s(x)).collect()),
        );

        type Row = (String, Option<Shape>, Vec<Color>, u32, Vec<u8>);
        let rows: Vec<Row> = vec![
            ("a".into(), None, vec![], 0, vec![]),
            (
                "b".into(),
                Some(Shape::Empty),
                vec![Color::Blue, Color::Red],
                READ,
                vec![1, 2, 3],
            ),
            (
                "c".into(),
                Some(Shape::Rect(Point { x: 3, y: -4 })),
                vec![Color::Green],
                7,
                vec![9],
            ),
        ];
        let row_vals = vec![
            Val::Tuple(vec![
                s("a"),
                Val::Option(None),
                Val::List(vec![]),
                flags(&[]),
                bytes_val(&[]),
            ]),
            Val::Tuple(vec![
                s("b"),
                some(Val::Variant("empty".into(), None)),
                Val::List(vec![color(Color::Blue), color(Color::Red)]),
                flags(&["read"]),
                bytes_val(&[1, 2, 3]),
            ]),
            Val::Tuple(vec![
                s("c"),
                some(Val::Variant("rect".into(), Some(Box::new(point(3, -4))))),
                Val::List(vec![color(Color::Green)]),
                flags(&["read", "write", "exec"]),
                bytes_val(&[9]),
            ]),
        ];
        check(&ty("nested"), &rows, &Val::List(row_vals));
    }

    #[test]
    fn codec_argument_list_is_a_postcard_tuple() {
        let params = params_of_f();
        let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["p", "n", "s", "c"]);
        let tys: Vec<Type> = params.into_iter().map(|(_, t)| t).collect();
        let rust = (Point { x: 1, y: 2 }, 1000u32, "hi".to_owned(), Color::Blue);
        let vals = [point(1, 2), Val::U32(1000), s("hi"), color(Color::Blue)];
        let bytes = postcard::to_allocvec(&rust).expect("serializes");
        assert_eq!(encode_all(&vals, &tys).expect("encodes"), bytes);
        assert_eq!(decode_all(&tys, &bytes).expect("decodes"), vals);

        assert_eq!(
            encode_all(&vals[..2], &tys),
            Err(CodecError::Arity {
                expected: 4,
                got: 2
            })
        );
        let err = encode_all(&[point(1, 2), s("x"), s("hi"), color(Color::Blue)], &tys)
            .expect_err("mismatch");
        assert_eq!(err.to_string(), "at value 1: expected u32, got string");
    }

    #[test]
    fn codec_map_and_fixed_length_lists_match_postcard() {
        let Some(extra) = &FIXTURE.extra else {
            return; // reported by the fixture; optional types
        };
        let map_ty = export_of(extra, "map");
        let m: BTreeMap<String, u32> = [("a".to_owned(), 1), ("b".to_owned(), 300)].into();
        check(
            &map_ty,
            &m,
            &Val::Map(vec![(s("a"), Val::U32(1)), (s("b"), Val::U32(300))]),
        );
        check(
            &export_of(extra, "fixed"),
            &[1u8, 2, 3, 255],
            &Val::FixedLengthList(vec![Val::U8(1), Val::U8(2), Val::U8(3), Val::U8(255)]),
        );
        let pts = [Point { x: 1, y: 2 }, Point { x: -3, y: 4 }];
        check(
            &export_of(extra, "fixed-points"),
            &pts,
            &Val::FixedLengthList(vec![point(1, 2), point(-3, 4)]),
        );
        let err = encode(
            &Val::FixedLengthList(vec![Val::U8(1)]),
            &export_of(extra, "fixed"),
            &mut Vec::new(),
        )
        .expect_err("wrong length");
        assert!(err.to_string().contains("expected 4 elements"), "{err}");
    }

    #[test]
    fn codec_encode_checks_the_value_against_the_type() {
        let counter = ty("counter");
        let mut out = vec![0xaa];
        let err = encode(
            &record(&[("name", s("x")), ("count", s("3"))]),
            &counter,
            &mut out,
        )
        .expect_err("mismatch");
        assert_eq!(
            err.to_string(),
            "at field `count`: expected u32, got string"
        );
        assert_eq!(out, [0xaa], "output is left as it was on error");

        let err = encode(
            &record(&[("count", Val::U32(1)), ("name", s("x"))]),
            &counter,
            &mut out,
        )
        .expect_err("field order");
        assert_eq!(err.to_string(), "expected field `name`, got `count`");
        let err =
            encode(&record(&[("name", s("x"))]), &counter, &mut out).expect_err("missing field");
        assert!(err.to_string().starts_with("expected 2 fields"), "{err}");

        let err =
            encode(&Val::Variant("square".into(), None), &ty("shape"), &mut out).expect_err("case");
        assert!(
            err.to_string().starts_with("unknown case `square`"),
            "{err}"
        );
        let err = encode(&Val::Variant("circle".into(), None), &ty("shape"), &mut out)
            .expect_err("payload");
        assert_eq!(err.to_string(), "case `circle` needs a payload, got none");
        let err = encode(&Val::Enum("pink".into()), &ty("color"), &mut out).expect_err("enum");
        assert!(err.to_string().starts_with("unknown case `pink`"), "{err}");
        let err = encode(&flags(&["fly"]), &ty("perms"), &mut out).expect_err("flag");
        assert!(err.to_string().starts_with("unknown flag `fly`"), "{err}");
        let err = encode(&Val::Result(Ok(None)), &ty("res"), &mut out).expect_err("ok payload");
        assert_eq!(
            err.to_string(),
            "`ok` of result<u32, string> needs a payload, got none"
        );

        let nested = Val::List(vec![Val::Tuple(vec![
            s("a"),
            some(Val::Variant(
                "rect".into(),
                Some(Box::new(record(&[("x", Val::S32(1)), ("y", Val::U32(2))]))),
            )),
            Val::List(vec![]),
            flags(&[]),
            bytes_val(&[]),
        ])]);
        let err = encode(&nested, &ty("nested"), &mut out).expect_err("deep mismatch");
        assert_eq!(
            err.to_string(),
            "at field `y` of case `rect` of `some` of element 1 of element 0: expected s32, got u32"
        );
        let err = encode(
            &Val::List(vec![Val::U8(1), Val::S8(2)]),
            &ty("bytes"),
            &mut out,
        )
        .expect_err("byte list");
        assert_eq!(err.to_string(), "at element 1: expected u8, got s8");
    }

    #[test]
    fn codec_unsupported_types() {
        let own = ty("own");
        assert_eq!(type_name(&own), "own<resource>");
        let err = encode(&Val::U32(1), &own, &mut Vec::new()).expect_err("own");
        assert_eq!(
            err.to_string(),
            "type own<resource> cannot be passed as a value between tasks"
        );
        assert!(matches!(
            decode_err(&own, &[0]),
            CodecError::Unsupported { .. }
        ));
        assert!(matches!(
            decode_err(&Type::ErrorContext, &[0]),
            CodecError::Unsupported { .. }
        ));
    }

    #[test]
    fn codec_malformed_input_is_an_error() {
        let counter = ty("counter");
        // Truncated, and trailing bytes.
        assert!(matches!(
            decode_err(&counter, &[0x01, b'x', 0xac]),
            CodecError::UnexpectedEnd { .. }
        ));
        assert!(matches!(
            decode_err(&counter, &[0x05, b'x']),
            CodecError::Malformed { .. }
        ));
        assert_eq!(
            decode_err(&counter, &[0x01, b'x', 0x03, 0x00]),
            CodecError::TrailingBytes {
                offset: 3,
                count: 1
            }
        );
        let mut input: &[u8] = &[0x01, b'x', 0x03, 0x00];
        decode(&counter, &mut input).expect("decode leaves the rest");
        assert_eq!(input, [0x00]);
        let mut input: &[u8] = &[0x01, b'x'];
        decode(&counter, &mut input).expect_err("truncated");
        assert_eq!(input, [0x01, b'x'], "input is left as it was on error");

        // Bad bool, option tag, result tag.
        let err = decode_err(&ty("bool"), &[2]);
        assert_eq!(
            err.to_string(),
            "invalid encoding at byte 0: invalid bool byte 0x02"
        );
        assert!(matches!(
            decode_err(&ty("opt"), &[2]),
            CodecError::Malformed { .. }
        ));
        assert!(matches!(
            decode_err(&ty("res"), &[2, 0]),
            CodecError::Malformed { .. }
        ));

        // Bad UTF-8 in strings and chars; chars of zero, two or five bytes.
        let err = decode_err(&counter, &[0x02, b'a', 0xff, 0x00]);
        assert_eq!(
            err.to_string(),
            "at field `name`: invalid encoding at byte 2: string is not valid UTF-8"
        );
        assert!(matches!(
            decode_err(&ty("char"), &[1, 0xc3]),
            CodecError::Malformed { .. }
        ));
        assert!(matches!(
            decode_err(&ty("char"), &[0]),
            CodecError::Malformed { .. }
        ));
        assert!(matches!(
            decode_err(&ty("char"), &[2, b'a', b'b']),
            CodecError::Malformed { .. }
        ));
        assert!(matches!(
            decode_err(&ty("char"), &[5, b'a', b'b', b'c', b'd', b'e']),
            CodecError::Malformed { .. }
        ));
        // A surrogate code point is not a char.
        assert!(matches!(
            decode_err(&ty("char"), &[3, 0xed, 0xa0, 0x80]),
            CodecError::Malformed { .. }
        ));

        // Varints: overlong, overflowing, non-minimal.
        let u32_ty = ty("u32");
        assert_eq!(
            decode_all(
                std::slice::from_ref(&u32_ty),
                &[0xff, 0xff, 0xff, 0xff, 0x0f]
            )
            .expect("max"),
            [Val::U32(u32::MAX)]
        );
        assert!(matches!(
            decode_err(&u32_ty, &[0xff, 0xff, 0xff, 0xff, 0x1f]),
            CodecError::Malformed { .. }
        ));
        assert!(matches!(
            decode_err(&u32_ty, &[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
            CodecError::Malformed { .. }
        ));
        assert!(matches!(
            decode_err(&u32_ty, &[0x80, 0x00]),
            CodecError::Malformed { .. }
        ));
        assert!(matches!(
            decode_err(&u32_ty, &[0x81, 0x80, 0x00]),
            CodecError::Malformed { .. }
        ));
        assert!(matches!(
            decode_err(&u32_ty, &[0x80]),
            CodecError::UnexpectedEnd { .. }
        ));
        assert!(matches!(
            decode_err(&Type::U16, &[0xff, 0xff, 0x04]),
            CodecError::Malformed { .. }
        ));
        assert_eq!(
            decode_all(&[Type::U16], &[0xff, 0xff, 0x03]).expect("max"),
            [Val::U16(u16::MAX)]
        );
        let u64_max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(
            decode_all(&[Type::U64], &u64_max).expect("max"),
            [Val::U64(u64::MAX)]
        );
        let mut over = u64_max;
        over[9] = 0x02;
        assert!(matches!(
            decode_err(&Type::U64, &over),
            CodecError::Malformed { .. }
        ));
        assert_eq!(
            decode_all(&[Type::S64], &u64_max).expect("min"),
            [Val::S64(i64::MIN)]
        );

        // Out-of-range cases and unknown flag bits.
        let err = decode_err(&ty("color"), &[3]);
        assert_eq!(
            err.to_string(),
            "invalid encoding at byte 0: case index 3 out of range for enum { red, green, blue } (3 cases)"
        );
        assert!(matches!(
            decode_err(&ty("shape"), &[3]),
            CodecError::Malformed { .. }
        ));
        assert!(matches!(
            decode_err(&ty("shape"), &[0xff, 0xff, 0xff, 0xff, 0x0f]),
            CodecError::Malformed { .. }
        ));
        let err = decode_err(&ty("perms"), &[8]);
        assert_eq!(
            err.to_string(),
            "invalid encoding at byte 0: unknown flag bits 0x8 for flags { read, write, exec }"
        );
        assert!(decode_all(&[ty("flags32")], &[0xff, 0xff, 0xff, 0xff, 0x0f]).is_ok());
    }

    #[test]
    fn codec_huge_counts_fail_fast() {
        let huge = [0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2];
        for name in ["bytes", "s64s", "strings", "nested", "string"] {
            let err = decode_err(&ty(name), &huge);
            assert!(
                err.to_string()
                    .contains("length 4294967295 exceeds the 2 byte(s) left"),
                "{name}: {err}"
            );
        }
        // Wider than u32: lengths are u32 in the component model.
        let err = decode_err(&ty("bytes"), &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert!(matches!(err, CodecError::Malformed { .. }), "{err}");
        // A list of lists whose inner counts lie.
        let err = decode_err(&ty("strings"), &[2, 0x7f, b'a']);
        assert!(err.to_string().starts_with("at element 0: "), "{err}");
    }

    #[test]
    fn codec_nesting_depth_is_bounded() {
        let deep = ty("deep");
        let mut val = Val::U32(5);
        for _ in 0..20 {
            val = some(val);
        }
        let mut bytes = Vec::new();
        encode(&val, &deep, &mut bytes).expect("encodes");
        assert_eq!(bytes.len(), 21);
        assert_eq!(
            decode_all(std::slice::from_ref(&deep), &bytes).expect("decodes"),
            [val.clone()]
        );
        // 21 levels with a limit of 10.
        let mut input = &bytes[..];
        assert_eq!(
            decode_with_limit(&deep, &mut input, 10),
            Err(CodecError::TooDeep { limit: 10 })
        );
        assert_eq!(
            encode_val(&val, &deep, &mut Vec::new(), 0, 10),
            Err(CodecError::TooDeep { limit: 10 })
        );
        let mut input = &bytes[..];
        assert!(decode_with_limit(&deep, &mut input, 21).is_ok());
    }

    #[test]
    fn codec_garbage_never_panics() {
        // xorshift: deterministic, no dependency.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let names = [
            "point", "person", "counter", "shape", "color", "perms", "flags32", "bool", "u32",
            "char", "string", "ints", "floats", "text", "bytes", "s64s", "strings", "res",
            "res-unit", "res-ok", "res-err", "opt", "nested", "deep",
        ];
        let types: Vec<Type> = names.iter().map(|n| ty(n)).collect();
        let mut buf = Vec::new();
        for _ in 0..3000 {
            let len = (next() % 48) as usize;
            buf.clear();
            // Mostly small bytes, so that counts and tags are often plausible.
            buf.extend((0..len).map(|_| {
                let r = next();
                if r % 4 == 0 {
                    (r >> 8) as u8
                } else {
                    (r >> 8) as u8 % 4
                }
            }));
            for ty in &types {
                if let Ok(vals) = decode_all(std::slice::from_ref(ty), &buf) {
                    // Whatever decodes re-encodes to the same bytes.
                    assert_eq!(
                        encode_all(&vals, std::slice::from_ref(ty)).expect("re-encodes"),
                        buf
                    );
                }
                let mut input = &buf[..];
                let _ = decode(ty, &mut input);
            }
        }
    }

    #[test]
    fn codec_big_byte_list_round_trip() {
        let data: Vec<u8> = (0..4u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let val = Val::List(data.iter().map(|&b| Val::U8(b)).collect());
        let bytes_ty = ty("bytes");
        let start = std::time::Instant::now();
        let mut out = Vec::new();
        encode(&val, &bytes_ty, &mut out).expect("encodes");
        assert_eq!(out, postcard::to_allocvec(&data).expect("serializes"));
        let back = decode_all(&[bytes_ty], &out).expect("decodes");
        eprintln!("4 MiB list<u8> encode + decode: {:?}", start.elapsed());
        assert!(back == [val]);
    }

    #[test]
    fn codec_wave_round_trip() {
        let counter = ty("counter");
        let val = parse_wave(&counter, "{name: \"x\", count: 3}").expect("parses");
        assert_eq!(val, record(&[("name", s("x")), ("count", Val::U32(3))]));
        assert_eq!(to_wave(&val).expect("prints"), "{name: \"x\", count: 3}");

        let s64s = ty("s64s");
        let val = parse_wave(&s64s, "[0, 1, 4]").expect("parses");
        assert_eq!(val, Val::List(vec![Val::S64(0), Val::S64(1), Val::S64(4)]));
        assert_eq!(to_wave(&val).expect("prints"), "[0, 1, 4]");
        assert_eq!(encode_all(&[val], &[s64s]).expect("encodes"), [3, 0, 2, 8]);

        assert!(matches!(
            parse_wave(&counter, "{name: 3}"),
            Err(CodecError::Wave(_))
        ));
    }

    #[test]
    fn codec_type_names() {
        assert_eq!(
            type_name(&ty("person")),
            "record { name: string, age: u8, tags: list<string>, score: option<f64> }"
        );
        assert_eq!(
            type_name(&ty("counter")),
            "record { name: string, count: u32 }"
        );
        assert_eq!(
            type_name(&ty("shape")),
            "variant { circle(f32), rect(record { x: s32, y: s32 }), empty }"
        );
        assert_eq!(type_name(&ty("color")), "enum { red, green, blue }");
        assert_eq!(type_name(&ty("perms")), "flags { read, write, exec }");
        assert_eq!(type_name(&ty("s64s")), "list<s64>");
        assert_eq!(
            type_name(&ty("ints")),
            "tuple<u8, s8, u16, s16, u32, s32, u64, s64>"
        );
        assert_eq!(type_name(&ty("res")), "result<u32, string>");
        assert_eq!(type_name(&ty("res-unit")), "result");
        assert_eq!(type_name(&ty("res-ok")), "result<string>");
        assert_eq!(type_name(&ty("res-err")), "result<_, u32>");
        assert_eq!(type_name(&ty("opt")), "option<option<u32>>");
        if let Some(extra) = &FIXTURE.extra {
            assert_eq!(type_name(&export_of(extra, "map")), "map<string, u32>");
            assert_eq!(type_name(&export_of(extra, "fixed")), "list<u8, 4>");
        }
    }
}
