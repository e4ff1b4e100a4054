//! Fuzz targets for what ferray reads from untrusted bytes.
//!
//! One plain function per target; each takes arbitrary bytes, derives its
//! inputs from them, calls the public API and panics only on a real bug (a
//! broken round trip, an invariant that does not hold). An error is a fine
//! answer to bad input; a panic, a hang or an allocation the input does not
//! justify is not.
//!
//! - [`codec`]: bytes decoded against a generated WIT type, re-encoded to the
//!   same bytes, printed as WAVE and parsed back.
//! - [`wave`]: WAVE text parsed against a generated type, encoded, decoded.
//! - [`pull_frames`]: the pull path's parser of gRPC frames and chunk
//!   headers, fed a stream cut at arbitrary frame boundaries.
//! - [`component`]: component loading (`ComponentInfo::read`, what
//!   `ferray inspect` shows) on arbitrary bytes.
//! - [`head_state`]: the head's state machine fed event sequences decoded
//!   from the bytes, its invariants checked after every step.
//!
//! The libFuzzer binaries in `fuzz_targets/` (feature `libfuzzer`, nightly:
//! `cargo xtask fuzz`) call these; `tests/replay.rs` replays the checked-in
//! corpus (`corpus/<target>/`) and the crashes found (`regressions/<target>/`)
//! through them on stable.

use bytes::Bytes;
use ferray_codec::codec::{self, Checked};
use ferray_codec::{ComponentInfo, Inspection};
use ferray_core::ObjectId;
use wasm_wave::value::{Type, Value};
use wasm_wave::wasm::{WasmType, WasmTypeKind, WasmValue};

mod head;
mod types;

pub use types::{Input, gen_type};

/// A fuzz target: arbitrary bytes in, a panic only on a bug.
pub type Target = fn(&[u8]);

/// The targets, by the name of their binary and corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("codec", codec),
    ("wave", wave),
    ("pull_frames", pull_frames),
    ("component", component),
    ("head_state", head_state),
];

/// The head's state machine (`ferray_head::fuzzing`): one to four sessions
/// (workers with resources, a client), then up to 200 events decoded from
/// the bytes on a synthetic clock, each followed by a placement pass and the
/// outbox drained; `State::check_invariants` must hold after every step,
/// and nothing may panic.
pub fn head_state(data: &[u8]) {
    head::run(data);
}

type Wave = Checked<Value>;

/// The value codec: the first bytes choose one to three WIT types, the rest
/// are decoded against them. What decodes must re-encode to exactly the same
/// bytes (the encoding is canonical), print as WAVE and parse back to an
/// equal value; a value encoded against another type that accepts it must
/// decode against that type.
pub fn codec(data: &[u8]) {
    let mut input = Input::new(data);
    let count = 1 + usize::from(input.byte() % 3);
    let tys: Vec<Type> = (0..count).map(|_| gen_type(&mut input)).collect();
    let bytes = input.rest();
    for ty in &tys {
        let _ = codec::type_name(ty);
    }

    // One value from the front: what it took re-encodes to itself.
    let mut front = bytes;
    if let Ok(v) = codec::decode::<Wave>(&tys[0], &mut front) {
        let used = &bytes[..bytes.len() - front.len()];
        let mut out = Vec::new();
        codec::encode::<Wave>(&v, &tys[0], &mut out).expect("a decoded value encodes");
        same_bytes(std::slice::from_ref(&v), &tys[..1], used, &out);
    }
    // A tight nesting limit is an error, never a panic or another value.
    let mut front = bytes;
    let limit = usize::from(data.first().copied().unwrap_or(0) % 4);
    if let Ok(v) = codec::decode_with_limit::<Wave>(&tys[0], &mut front, limit) {
        let mut out = Vec::new();
        codec::encode::<Wave>(&v, &tys[0], &mut out).expect("a decoded value encodes");
        same_bytes(
            std::slice::from_ref(&v),
            &tys[..1],
            &bytes[..bytes.len() - front.len()],
            &out,
        );
    }

    let Ok(vals) = codec::decode_all::<Wave>(&tys, bytes) else {
        return;
    };
    assert_eq!(vals.len(), tys.len());
    let out = codec::encode_all::<Wave>(&vals, &tys).expect("decoded values encode");
    same_bytes(&vals, &tys, bytes, &out);
    let is_err = matches!(vals.as_slice(), [v] if v.kind() == WasmTypeKind::Result && v.unwrap_result().is_err());
    assert_eq!(codec::returns_err(&tys, bytes), is_err, "returns_err");

    for (val, ty) in vals.iter().zip(&tys) {
        wave_round_trip(val, ty);
        // Encoded against another type: if that type accepts the value,
        // its bytes decode against it to the same bytes again.
        for other in &tys {
            let mut out = Vec::new();
            if codec::encode::<Wave>(val, other, &mut out).is_ok() {
                let back = codec::decode_all::<Wave>(std::slice::from_ref(other), &out)
                    .expect("what encodes against a type decodes against it");
                let again = codec::encode_all::<Wave>(&back, std::slice::from_ref(other))
                    .expect("decoded values encode");
                same_bytes(&back, std::slice::from_ref(other), &out, &again);
            }
        }
    }
}

/// `decoded`, decoded from `bytes` against `tys` and encoded again as
/// `encoded`, gave back the same bytes: the encoding is canonical. The one
/// exception is a NaN: WAVE's values have one NaN (as the component model),
/// so a NaN's payload comes back canonical; then the encoded bytes decode to
/// the same values and encode to themselves.
fn same_bytes(decoded: &[Value], tys: &[Type], bytes: &[u8], encoded: &[u8]) {
    if encoded == bytes {
        return;
    }
    assert!(
        decoded.iter().any(has_nan),
        "decode then encode changed the bytes: {bytes:?} became {encoded:?}"
    );
    let again = codec::decode_all::<Wave>(tys, encoded).expect("encoded values decode");
    assert!(decoded.iter().zip(&again).all(|(a, b)| same(a, b)));
    let twice = codec::encode_all::<Wave>(&again, tys).expect("decoded values encode");
    assert_eq!(twice, encoded, "canonical NaNs encode to themselves");
}

/// Whether a float inside `v` is a NaN.
fn has_nan(v: &Value) -> bool {
    use WasmTypeKind as K;
    match v.kind() {
        K::F32 => v.unwrap_f32().is_nan(),
        K::F64 => v.unwrap_f64().is_nan(),
        K::List | K::FixedLengthList => v.unwrap_list().any(|v| has_nan(&v)),
        K::Tuple => v.unwrap_tuple().any(|v| has_nan(&v)),
        K::Record => v.unwrap_record().any(|(_, v)| has_nan(&v)),
        K::Variant => v.unwrap_variant().1.is_some_and(|v| has_nan(&v)),
        K::Option => v.unwrap_option().is_some_and(|v| has_nan(&v)),
        K::Result => match v.unwrap_result() {
            Ok(v) | Err(v) => v.is_some_and(|v| has_nan(&v)),
        },
        _ => false,
    }
}

/// WAVE text against a type: the first bytes choose the type, the rest
/// (as UTF-8, lossily) is the text. What parses encodes (unless the type is
/// one the codec refuses), decodes to an equal value, and prints as text
/// that parses back to an equal value.
pub fn wave(data: &[u8]) {
    let mut input = Input::new(data);
    let ty = gen_type(&mut input);
    let text = String::from_utf8_lossy(input.rest());
    let Ok(val) = codec::parse_wave::<Value>(&ty, &text) else {
        return;
    };
    let mut out = Vec::new();
    match codec::encode::<Wave>(&val, &ty, &mut out) {
        Ok(()) => {
            let back = codec::decode_all::<Wave>(std::slice::from_ref(&ty), &out)
                .expect("an encoded value decodes");
            assert!(
                same(&val, &back[0]),
                "{val:?} came back as {:?} from {out:?}",
                back[0]
            );
        }
        Err(e) => assert!(
            !encodable(&ty),
            "a parsed value of {} does not encode: {e}",
            codec::type_name(&ty)
        ),
    }
    wave_round_trip(&val, &ty);
}

/// How deep WAVE's parser nests values: component types are never deeper
/// (the codec allows [`codec::MAX_DEPTH`]).
const WAVE_MAX_DEPTH: usize = 100;

/// How deep values of `ty` can nest.
fn type_depth(ty: &Type) -> usize {
    let inner = match ty.kind() {
        WasmTypeKind::List | WasmTypeKind::FixedLengthList => {
            ty.list_element_type().map_or(0, |t| type_depth(&t))
        }
        WasmTypeKind::Option => ty.option_some_type().map_or(0, |t| type_depth(&t)),
        WasmTypeKind::Result => ty.result_types().map_or(0, |(ok, err)| {
            let ok = ok.map_or(0, |t| type_depth(&t));
            ok.max(err.map_or(0, |t| type_depth(&t)))
        }),
        WasmTypeKind::Record => ty
            .record_fields()
            .map(|(_, t)| type_depth(&t))
            .max()
            .unwrap_or(0),
        WasmTypeKind::Tuple => ty
            .tuple_element_types()
            .map(|t| type_depth(&t))
            .max()
            .unwrap_or(0),
        WasmTypeKind::Variant => ty
            .variant_cases()
            .map(|(_, t)| t.map_or(0, |t| type_depth(&t)))
            .max()
            .unwrap_or(0),
        _ => 0,
    };
    1 + inner
}

/// Printed as WAVE, `val` parses back against `ty` to an equal value (for
/// types no deeper than a component's can be).
fn wave_round_trip(val: &Value, ty: &Type) {
    let text = codec::to_wave(val).expect("a well-typed value prints as WAVE");
    if type_depth(ty) > WAVE_MAX_DEPTH {
        return;
    }
    let back = match codec::parse_wave::<Value>(ty, &text) {
        Ok(back) => back,
        Err(e) => panic!(
            "printed WAVE does not parse back as {}: {text:?}: {e}",
            codec::type_name(ty)
        ),
    };
    assert!(same(val, &back), "{text:?} parsed back as {back:?}");
}

/// Whether the codec takes every value of `ty`: no fixed-length lists (a
/// proposal ferray's engine leaves off), no flags past 32, and values can
/// nest no deeper than its limit.
fn encodable(ty: &Type) -> bool {
    encodable_at(ty, 1)
}

fn encodable_at(ty: &Type, depth: usize) -> bool {
    if depth > codec::MAX_DEPTH {
        return false;
    }
    let encodable = |t: &Type| encodable_at(t, depth + 1);
    match ty.kind() {
        WasmTypeKind::FixedLengthList | WasmTypeKind::Unsupported => false,
        WasmTypeKind::Flags => ty.flags_names().count() <= 32,
        WasmTypeKind::List => ty.list_element_type().is_none_or(|t| encodable(&t)),
        WasmTypeKind::Option => ty.option_some_type().is_none_or(|t| encodable(&t)),
        WasmTypeKind::Result => ty.result_types().is_none_or(|(ok, err)| {
            ok.is_none_or(|t| encodable(&t)) && err.is_none_or(|t| encodable(&t))
        }),
        WasmTypeKind::Record => ty.record_fields().all(|(_, t)| encodable(&t)),
        WasmTypeKind::Tuple => ty.tuple_element_types().all(|t| encodable(&t)),
        WasmTypeKind::Variant => ty
            .variant_cases()
            .all(|(_, t)| t.is_none_or(|t| encodable(&t))),
        _ => true,
    }
}

/// Equal values, with any NaN equal to any NaN (WAVE prints one `nan`).
pub fn same(a: &Value, b: &Value) -> bool {
    use WasmTypeKind as K;
    if a.kind() != b.kind() {
        return false;
    }
    fn all<'a>(
        mut x: impl Iterator<Item = std::borrow::Cow<'a, Value>>,
        mut y: impl Iterator<Item = std::borrow::Cow<'a, Value>>,
    ) -> bool {
        loop {
            match (x.next(), y.next()) {
                (None, None) => return true,
                (Some(a), Some(b)) if same(&a, &b) => {}
                _ => return false,
            }
        }
    }
    fn payload(
        a: Option<std::borrow::Cow<'_, Value>>,
        b: Option<std::borrow::Cow<'_, Value>>,
    ) -> bool {
        match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => same(&a, &b),
            _ => false,
        }
    }
    match a.kind() {
        K::F32 => {
            let (x, y) = (a.unwrap_f32(), b.unwrap_f32());
            (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits()
        }
        K::F64 => {
            let (x, y) = (a.unwrap_f64(), b.unwrap_f64());
            (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits()
        }
        K::List | K::FixedLengthList => all(a.unwrap_list(), b.unwrap_list()),
        K::Tuple => all(a.unwrap_tuple(), b.unwrap_tuple()),
        K::Record => {
            let (mut x, mut y) = (a.unwrap_record(), b.unwrap_record());
            loop {
                match (x.next(), y.next()) {
                    (None, None) => return true,
                    (Some((n, a)), Some((m, b))) if n == m && same(&a, &b) => {}
                    _ => return false,
                }
            }
        }
        K::Variant => {
            let ((n, x), (m, y)) = (a.unwrap_variant(), b.unwrap_variant());
            n == m && payload(x, y)
        }
        K::Option => payload(a.unwrap_option(), b.unwrap_option()),
        K::Result => match (a.unwrap_result(), b.unwrap_result()) {
            (Ok(x), Ok(y)) | (Err(x), Err(y)) => payload(x, y),
            _ => false,
        },
        _ => a == b,
    }
}

/// Objects the pull target may expect, so that whole transfers can check.
fn pull_objects() -> [Bytes; 4] {
    [
        Bytes::new(),
        Bytes::from_static(b"ferray"),
        Bytes::from(
            (0..300u32)
                .map(|i| (i * 7 + i / 13) as u8)
                .collect::<Vec<u8>>(),
        ),
        Bytes::from(vec![0xa5; 1000]),
    ]
}

/// The object behind the `n`-th expected id of [`pull_frames`]: `None` for
/// a pull that expects no particular id.
pub fn pull_object(n: u8) -> Option<Bytes> {
    pull_objects().into_iter().nth(usize::from(n % 5))
}

/// The pull path's parser of `Objects.Pull` frames (gRPC prefix, `Chunk`
/// header, `data`): the first byte chooses the id the pull expects
/// ([`pull_object`]), the next two how the rest is cut into body frames.
/// Whatever the cut, the outcome is the same as for one frame; bytes that
/// come back hash to their id, the expected one.
pub fn pull_frames(data: &[u8]) {
    let mut input = Input::new(data);
    let which = input.byte();
    let seed = u16::from_le_bytes([input.byte(), input.byte()]);
    let wire = input.rest();
    let expect = pull_object(which).map(|o| ObjectId::of(&o));

    let whole = ferray_proto::ObjectsClient::parse_frames(expect, [Bytes::copy_from_slice(wire)]);
    let cut = ferray_proto::ObjectsClient::parse_frames(expect, cuts(wire, seed));
    match (&whole, &cut) {
        (Ok((id, bytes)), Ok(other)) => {
            assert_eq!(
                (id, bytes),
                (&other.0, &other.1),
                "the cut changed the object"
            );
            assert_eq!(
                ObjectId::of(bytes),
                *id,
                "bytes that do not hash to their id"
            );
            if let Some(want) = expect {
                assert_eq!(*id, want, "another object than the one asked for");
            }
        }
        (Err(_), Err(_)) => {}
        _ => panic!(
            "in one frame {:?}, cut {:?}",
            whole.as_ref().map(|(id, b)| (id.short(), b.len())),
            cut.as_ref().map(|(id, b)| (id.short(), b.len()))
        ),
    }
}

/// `wire` cut into frames of pseudo-random sizes (0 to 63 bytes) drawn
/// from `seed`; seed 0 is one frame per byte.
fn cuts(wire: &[u8], seed: u16) -> Vec<Bytes> {
    let mut x = u32::from(seed) | 1;
    let mut out = Vec::new();
    let mut rest = wire;
    while !rest.is_empty() {
        // xorshift
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = if seed == 0 { 1 } else { (x % 64) as usize }.min(rest.len());
        out.push(Bytes::copy_from_slice(&rest[..n]));
        rest = &rest[n..];
    }
    out
}

/// Component loading: [`Inspection::of`] (the validator, WebAssembly text
/// too) on arbitrary bytes; what loads is shown as `ferray inspect` shows it
/// and its functions' results are read back from the rest of the bytes.
pub fn component(data: &[u8]) {
    let Ok(inspection) = Inspection::of(data) else {
        return;
    };
    assert_eq!(inspection.size, data.len());
    let info: &ComponentInfo = &inspection.info;
    let _ = info.export_lines();
    for f in info.functions.values() {
        let _ = f.signature();
        let _ = f.param_names().count();
        let _ = f.returns_err(data);
        // Result bytes: anything the codec accepts prints as WAVE.
        let _ = f.wave_result(&data[data.len().min(8)..]);
        let _ = f.encode_wave_args(&[]);
    }
    for class in info.classes.values() {
        let _ = class.constructor.signature();
        for f in class.methods.values() {
            let _ = f.func_type();
        }
    }
}
