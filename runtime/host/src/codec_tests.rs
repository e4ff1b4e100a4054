//! The codec on wasmtime's values (a node's hot path): byte-exact with
//! postcard, strict on malformed input.

use crate::codec::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
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
    let decoded = decode_all::<Vals>(std::slice::from_ref(ty), &bytes)
        .unwrap_or_else(|e| panic!("decoding {rust:?} as {}: {e}", type_name(ty)));
    assert_eq!(decoded, std::slice::from_ref(val), "decoding {rust:?}");
    let mut out = Vec::new();
    encode::<Vals>(val, ty, &mut out).unwrap_or_else(|e| panic!("encoding {val:?}: {e}"));
    assert_eq!(out, bytes, "encoding {val:?}");
    let back: T = postcard::from_bytes(&out).expect("postcard deserializes");
    assert_eq!(&back, rust);
    // Every strict prefix of a valid encoding is an error (encodings are
    // self-delimiting), never a panic.
    for cut in 0..bytes.len() {
        assert!(decode_all::<Vals>(std::slice::from_ref(ty), &bytes[..cut]).is_err());
    }
}

/// The error of decoding `bytes` as one value of type `ty` (without the
/// `value 0` step that `decode_all` adds to paths).
#[track_caller]
fn decode_err(ty: &Type, bytes: &[u8]) -> CodecError {
    let mut input = bytes;
    match decode::<Vals>(ty, &mut input) {
        Err(e) => e,
        Ok(_) if !input.is_empty() => {
            decode_all::<Vals>(std::slice::from_ref(ty), bytes).expect_err("trailing bytes")
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
    encode::<Vals>(
        &record(&[("name", s("x")), ("count", Val::U32(300))]),
        &ty("counter"),
        &mut out,
    )
    .expect("encodes");
    assert_eq!(out, [0x01, b'x', 0xac, 0x02]);
    let out = encode_all::<Vals>(&[Val::S64(-3)], &[Type::S64]).expect("encodes");
    assert_eq!(out, [0x05]);
    let mut out = Vec::new();
    encode::<Vals>(
        &Val::Variant("rect".into(), Some(Box::new(point(1, -1)))),
        &ty("shape"),
        &mut out,
    )
    .expect("encodes");
    assert_eq!(out, [0x01, 0x02, 0x01]);
    let mut out = Vec::new();
    let res = Val::Result(Err(Some(Box::new(s("no")))));
    encode::<Vals>(&res, &ty("res"), &mut out).expect("encodes");
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
    encode::<Vals>(&flags(&["exec", "read", "exec"]), &perms, &mut out).expect("encodes");
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
    assert_eq!(encode_all::<Vals>(&vals, &tys).expect("encodes"), bytes);
    assert_eq!(decode_all::<Vals>(&tys, &bytes).expect("decodes"), vals);

    assert_eq!(
        encode_all::<Vals>(&vals[..2], &tys),
        Err(CodecError::Arity {
            expected: 4,
            got: 2
        })
    );
    let err = encode_all::<Vals>(&[point(1, 2), s("x"), s("hi"), color(Color::Blue)], &tys)
        .expect_err("mismatch");
    assert_eq!(err.to_string(), "at value 1: expected u32, got string");
}

#[test]
fn codec_map_and_fixed_length_lists_are_refused() {
    // Their proposals are off in ferray's engine; a value of them is refused
    // with a clear error, never mis-encoded.
    let Some(extra) = &FIXTURE.extra else {
        panic!("the fixture's engine enables maps and fixed-length lists");
    };
    let map = Val::Map(vec![(s("a"), Val::U32(1))]);
    let err = encode::<Vals>(&map, &export_of(extra, "map"), &mut Vec::new()).expect_err("map");
    assert!(matches!(err, CodecError::Unsupported { .. }), "{err}");
    let fixed = Val::FixedLengthList(vec![Val::U8(1), Val::U8(2), Val::U8(3), Val::U8(4)]);
    let err =
        encode::<Vals>(&fixed, &export_of(extra, "fixed"), &mut Vec::new()).expect_err("fixed");
    assert!(matches!(err, CodecError::Unsupported { .. }), "{err}");
    let err =
        decode::<Vals>(&export_of(extra, "fixed"), &mut &[1u8, 2, 3, 4][..]).expect_err("fixed");
    assert!(matches!(err, CodecError::Unsupported { .. }), "{err}");
}

#[test]
fn codec_encode_checks_the_value_against_the_type() {
    let counter = ty("counter");
    let mut out = vec![0xaa];
    let err = encode::<Vals>(
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

    let err = encode::<Vals>(
        &record(&[("count", Val::U32(1)), ("name", s("x"))]),
        &counter,
        &mut out,
    )
    .expect_err("field order");
    assert_eq!(err.to_string(), "expected field `name`, got `count`");
    let err = encode::<Vals>(&record(&[("name", s("x"))]), &counter, &mut out)
        .expect_err("missing field");
    assert!(err.to_string().starts_with("expected 2 fields"), "{err}");

    let err = encode::<Vals>(&Val::Variant("square".into(), None), &ty("shape"), &mut out)
        .expect_err("case");
    assert!(
        err.to_string().starts_with("unknown case `square`"),
        "{err}"
    );
    let err = encode::<Vals>(&Val::Variant("circle".into(), None), &ty("shape"), &mut out)
        .expect_err("payload");
    assert_eq!(err.to_string(), "case `circle` needs a payload, got none");
    let err = encode::<Vals>(&Val::Enum("pink".into()), &ty("color"), &mut out).expect_err("enum");
    assert!(err.to_string().starts_with("unknown case `pink`"), "{err}");
    let err = encode::<Vals>(&flags(&["fly"]), &ty("perms"), &mut out).expect_err("flag");
    assert!(err.to_string().starts_with("unknown flag `fly`"), "{err}");
    let err = encode::<Vals>(&Val::Result(Ok(None)), &ty("res"), &mut out).expect_err("ok payload");
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
    let err = encode::<Vals>(&nested, &ty("nested"), &mut out).expect_err("deep mismatch");
    assert_eq!(
        err.to_string(),
        "at field `y` of case `rect` of `some` of element 1 of element 0: expected s32, got u32"
    );
    let err = encode::<Vals>(
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
    assert_eq!(type_name(&own), "<resource, future, stream or map>");
    let err = encode::<Vals>(&Val::U32(1), &own, &mut Vec::new()).expect_err("own");
    assert_eq!(
        err.to_string(),
        "type <resource, future, stream or map> cannot be passed as a value between tasks"
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
    decode::<Vals>(&counter, &mut input).expect("decode leaves the rest");
    assert_eq!(input, [0x00]);
    let mut input: &[u8] = &[0x01, b'x'];
    decode::<Vals>(&counter, &mut input).expect_err("truncated");
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
        decode_all::<Vals>(
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
        decode_all::<Vals>(&[Type::U16], &[0xff, 0xff, 0x03]).expect("max"),
        [Val::U16(u16::MAX)]
    );
    let u64_max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    assert_eq!(
        decode_all::<Vals>(&[Type::U64], &u64_max).expect("max"),
        [Val::U64(u64::MAX)]
    );
    let mut over = u64_max;
    over[9] = 0x02;
    assert!(matches!(
        decode_err(&Type::U64, &over),
        CodecError::Malformed { .. }
    ));
    assert_eq!(
        decode_all::<Vals>(&[Type::S64], &u64_max).expect("min"),
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
    assert!(decode_all::<Vals>(&[ty("flags32")], &[0xff, 0xff, 0xff, 0xff, 0x0f]).is_ok());
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
    encode::<Vals>(&val, &deep, &mut bytes).expect("encodes");
    assert_eq!(bytes.len(), 21);
    assert_eq!(
        decode_all::<Vals>(std::slice::from_ref(&deep), &bytes).expect("decodes"),
        [val.clone()]
    );
    // 21 levels with a limit of 10.
    let mut input = &bytes[..];
    assert_eq!(
        decode_with_limit::<Vals>(&deep, &mut input, 10),
        Err(CodecError::TooDeep { limit: 10 })
    );
    assert_eq!(
        encode_with_limit::<Vals>(&val, &deep, &mut Vec::new(), 10),
        Err(CodecError::TooDeep { limit: 10 })
    );
    let mut input = &bytes[..];
    assert!(decode_with_limit::<Vals>(&deep, &mut input, 21).is_ok());
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
        "point", "person", "counter", "shape", "color", "perms", "flags32", "bool", "u32", "char",
        "string", "ints", "floats", "text", "bytes", "s64s", "strings", "res", "res-unit",
        "res-ok", "res-err", "opt", "nested", "deep",
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
            if let Ok(vals) = decode_all::<Vals>(std::slice::from_ref(ty), &buf) {
                // Whatever decodes re-encodes to the same bytes.
                assert_eq!(
                    encode_all::<Vals>(&vals, std::slice::from_ref(ty)).expect("re-encodes"),
                    buf
                );
            }
            let mut input = &buf[..];
            let _ = decode::<Vals>(ty, &mut input);
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
    encode::<Vals>(&val, &bytes_ty, &mut out).expect("encodes");
    assert_eq!(out, postcard::to_allocvec(&data).expect("serializes"));
    let back = decode_all::<Vals>(&[bytes_ty], &out).expect("decodes");
    eprintln!("4 MiB list<u8> encode + decode: {:?}", start.elapsed());
    assert!(back == [val]);
}

#[test]
fn codec_wave_round_trip() {
    let counter = ty("counter");
    let val: Val = parse_wave(&counter, "{name: \"x\", count: 3}").expect("parses");
    assert_eq!(val, record(&[("name", s("x")), ("count", Val::U32(3))]));
    assert_eq!(to_wave(&val).expect("prints"), "{name: \"x\", count: 3}");

    let s64s = ty("s64s");
    let val: Val = parse_wave(&s64s, "[0, 1, 4]").expect("parses");
    assert_eq!(val, Val::List(vec![Val::S64(0), Val::S64(1), Val::S64(4)]));
    assert_eq!(to_wave(&val).expect("prints"), "[0, 1, 4]");
    assert_eq!(
        encode_all::<Vals>(&[val], &[s64s]).expect("encodes"),
        [3, 0, 2, 8]
    );

    assert!(matches!(
        parse_wave::<Val>(&counter, "{name: 3}"),
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
        assert_eq!(
            type_name(&export_of(extra, "map")),
            "<resource, future, stream or map>"
        );
    }
}
