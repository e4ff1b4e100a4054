//! A component's export signatures, read from its bytes with `wit-parser`:
//! no engine, no compilation. This is what the embedding API and the command
//! line show and check, on the embedded runtime and on a connected client
//! alike.

use std::fmt::Write as _;

use ferray_core::{ComponentId, Error};
use wasm_wave::value::{Type as WaveType, Value as WaveValue};
use wit_parser::decoding::DecodedWasm;
use wit_parser::{Handle, Resolve, Type, TypeDefKind, WorldItem, WorldKey};

use crate::codec::{self, Checked, type_name};
use crate::exports::{Class, Export, Exports, interface_short};

/// A WIT type as a component declares it.
#[derive(Debug, Clone)]
pub struct WitType {
    /// How `ferray inspect` and error messages write it.
    text: String,
    /// The type of its values; `None` for what cannot pass between tasks
    /// (resource handles, futures, streams, maps).
    ty: Option<WaveType>,
}

impl WitType {
    pub fn text(&self) -> &str {
        &self.text
    }

    fn value_type(&self, what: &str) -> Result<&WaveType, Error> {
        self.ty.as_ref().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{what} has type {}, which cannot be passed as a value between tasks",
                self.text
            ))
        })
    }
}

/// One exported function.
#[derive(Debug, Clone)]
pub struct FuncInfo {
    /// The name users write: `heavy-compute`, or `api.incr` inside an interface.
    pub name: String,
    /// Parameters (for a method, without the `self` handle).
    params: Vec<(String, WitType)>,
    results: Vec<WitType>,
}

/// An exported resource: an actor class.
pub type ClassInfo = Class<FuncInfo>;

/// The exports and imports of a component.
pub type ComponentInfo = Exports<FuncInfo>;

/// The result of inspecting a component.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub id: ComponentId,
    pub size: usize,
    pub info: ComponentInfo,
}

impl FuncInfo {
    /// The parameters' names, in order.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|(n, _)| n.as_str())
    }

    /// How many values it returns.
    pub fn result_count(&self) -> usize {
        self.results.len()
    }

    /// `heavy-compute: func(x: s64) -> s64`
    pub fn signature(&self) -> String {
        format!("{}: {}", self.name, self.func_type())
    }

    /// `func(x: s64) -> s64`
    pub fn func_type(&self) -> String {
        let mut s = format!("func({})", self.params_text());
        match self.results.as_slice() {
            [] => {}
            [one] => {
                let _ = write!(s, " -> {}", one.text);
            }
            many => {
                let names: Vec<&str> = many.iter().map(|t| t.text.as_str()).collect();
                let _ = write!(s, " -> ({})", names.join(", "));
            }
        }
        s
    }

    /// Whether `encoded` (this function's result, canonically encoded) is
    /// an `err(..)` ([`codec::returns_err`]).
    pub fn returns_err(&self, encoded: &[u8]) -> bool {
        match self.results.as_slice() {
            [WitType { ty: Some(t), .. }] => codec::returns_err(std::slice::from_ref(t), encoded),
            _ => false,
        }
    }

    /// Arguments in WAVE text, typed by this function's signature, in the
    /// canonical encoding (the command line's and a job driver's path).
    pub fn encode_wave_args(&self, args: &[String]) -> Result<Vec<u8>, Error> {
        if args.len() != self.params.len() {
            return Err(Error::InvalidArgument(format!(
                "`{}` takes {} argument(s), got {}: expected `{}`",
                self.name,
                self.params.len(),
                args.len(),
                self.signature()
            )));
        }
        let mut vals: Vec<WaveValue> = Vec::with_capacity(args.len());
        let mut tys = Vec::with_capacity(args.len());
        for ((name, ty), text) in self.params.iter().zip(args) {
            let wave_ty = ty.value_type(&format!("argument `{name}`"))?;
            vals.push(codec::parse_wave(wave_ty, text).map_err(|e| {
                Error::InvalidArgument(format!(
                    "argument `{name}`: `{text}` is not a {}: {e}; expected `{}`",
                    ty.text,
                    self.signature()
                ))
            })?);
            tys.push(wave_ty.clone());
        }
        codec::encode_all::<Checked<WaveValue>>(&vals, &tys)
            .map_err(|e| Error::InvalidArgument(format!("cannot encode the arguments: {e}")))
    }

    /// This function's canonically encoded result as WAVE text (several
    /// results separated by spaces).
    pub fn wave_result(&self, encoded: &[u8]) -> Result<String, Error> {
        let tys = self
            .results
            .iter()
            .map(|t| t.value_type("the result").cloned())
            .collect::<Result<Vec<_>, _>>()?;
        let results = codec::decode_all::<Checked<WaveValue>>(&tys, encoded)
            .map_err(|e| Error::Other(format!("cannot decode the result: {e}")))?;
        let texts = results
            .iter()
            .map(|v| {
                codec::to_wave(v).map_err(|e| Error::Other(format!("cannot print the result: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(texts.join(" "))
    }

    fn params_text(&self) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(name, ty)| format!("{name}: {}", ty.text))
            .collect();
        params.join(", ")
    }
}

impl Exports<FuncInfo> {
    /// Read a component's exports and imports from its bytes (binary, or
    /// WebAssembly text): checked, never compiled.
    pub fn read(bytes: &[u8]) -> Result<Self, Error> {
        check_header(bytes)?;
        let binary = wat::parse_bytes(bytes).map_err(|e| {
            Error::InvalidArgument(format!("not a valid WebAssembly component: {e}"))
        })?;
        let decoded = wit_parser::decoding::decode(&binary).map_err(|e| {
            Error::InvalidArgument(format!("not a valid WebAssembly component: {e:#}"))
        })?;
        let DecodedWasm::Component(resolve, world) = decoded else {
            return Err(Error::InvalidArgument(
                "this is a WIT package, not a component: build the crate with \
                 `cargo component build`"
                    .into(),
            ));
        };
        let world = &resolve.worlds[world];
        let imports = world
            .imports
            .iter()
            .filter(|(_, item)| !matches!(item, WorldItem::Type { .. }))
            .map(|(key, _)| key_name(&resolve, key))
            .collect();
        let mut found = Vec::new();
        for (key, item) in &world.exports {
            match item {
                WorldItem::Function(f) => found.push(Export {
                    interface: None,
                    name: f.name.clone(),
                    item: f,
                }),
                WorldItem::Interface { id, .. } => {
                    let iface = interface_short(&key_name(&resolve, key)).to_string();
                    for (name, f) in &resolve.interfaces[*id].functions {
                        found.push(Export {
                            interface: Some(iface.clone()),
                            name: name.clone(),
                            item: f,
                        });
                    }
                }
                WorldItem::Type { .. } => {}
            }
        }
        Exports::group(found, imports, |f, role| {
            let skip = usize::from(role.method);
            Ok(FuncInfo {
                name: role.full_name.to_string(),
                params: f
                    .params
                    .iter()
                    .skip(skip)
                    .map(|p| (p.name.clone(), wit_type(&resolve, &p.ty)))
                    .collect(),
                results: f.result.iter().map(|t| wit_type(&resolve, t)).collect(),
            })
        })
    }

    /// The exports, one per line, with their WIT signatures.
    pub fn export_lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self.functions.values().map(|f| f.signature()).collect();
        for class in self.classes.values() {
            // As WIT writes it: `resource c { constructor(x: s64); incr: func(..) -> s64; }`
            let mut line = format!(
                "resource {} {{ constructor({});",
                class.name,
                class.constructor.params_text()
            );
            for (method, f) in &class.methods {
                let _ = write!(line, " {method}: {};", f.func_type());
            }
            line.push_str(" }");
            out.push(line);
        }
        out
    }
}

impl Inspection {
    /// A component's digest, size, exports and imports, from its bytes.
    pub fn of(bytes: &[u8]) -> Result<Self, Error> {
        Ok(Inspection {
            id: ComponentId::of(bytes),
            size: bytes.len(),
            info: ComponentInfo::read(bytes)?,
        })
    }
}

fn key_name(resolve: &Resolve, key: &WorldKey) -> String {
    match key {
        WorldKey::Name(name) => name.clone(),
        WorldKey::Interface(id) => resolve.id_of(*id).unwrap_or_default(),
    }
}

/// A WIT type, with the value type the codec needs when it has one.
fn wit_type(resolve: &Resolve, ty: &Type) -> WitType {
    let wave = match ty {
        Type::Bool => Some(WaveType::BOOL),
        Type::U8 => Some(WaveType::U8),
        Type::U16 => Some(WaveType::U16),
        Type::U32 => Some(WaveType::U32),
        Type::U64 => Some(WaveType::U64),
        Type::S8 => Some(WaveType::S8),
        Type::S16 => Some(WaveType::S16),
        Type::S32 => Some(WaveType::S32),
        Type::S64 => Some(WaveType::S64),
        Type::F32 => Some(WaveType::F32),
        Type::F64 => Some(WaveType::F64),
        Type::Char => Some(WaveType::CHAR),
        Type::String => Some(WaveType::STRING),
        Type::ErrorContext => None,
        Type::Id(id) => wasm_wave::value::resolve_wit_type(resolve, *id).ok(),
    };
    let text = match &wave {
        Some(t) => type_name(t),
        None => opaque_name(resolve, ty, 0),
    };
    WitType { text, ty: wave }
}

/// How a type that holds no plain value is written: `own<counter>`,
/// `borrow<counter>`, `future<u32>`, ...
fn opaque_name(resolve: &Resolve, ty: &Type, depth: usize) -> String {
    let Type::Id(id) = ty else {
        return "error-context".into();
    };
    let Some(def) = resolve.types.get(*id) else {
        return "unknown".into();
    };
    let resource = |rid: &wit_parser::TypeId| {
        resolve
            .types
            .get(*rid)
            .and_then(|t| t.name.clone())
            .unwrap_or_else(|| "resource".into())
    };
    let inner = |t: &Option<Type>| {
        t.as_ref()
            .map(|t| format!("<{}>", wit_type(resolve, t).text))
            .unwrap_or_default()
    };
    match &def.kind {
        TypeDefKind::Handle(Handle::Own(rid)) => format!("own<{}>", resource(rid)),
        TypeDefKind::Handle(Handle::Borrow(rid)) => format!("borrow<{}>", resource(rid)),
        TypeDefKind::Resource => resource(id),
        TypeDefKind::Future(t) => format!("future{}", inner(t)),
        TypeDefKind::Stream(t) => format!("stream{}", inner(t)),
        TypeDefKind::Type(t) if depth < 8 => opaque_name(resolve, t, depth + 1),
        _ => def.name.clone().unwrap_or_else(|| "unsupported".into()),
    }
}

/// What the first bytes of a file say it is.
pub fn check_header(bytes: &[u8]) -> Result<(), Error> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        let text = bytes.trim_ascii_start();
        if text.starts_with(b"(component") || text.starts_with(b"(module") {
            return Ok(()); // WebAssembly text
        }
        return Err(Error::InvalidArgument(
            "not a WebAssembly file (no `\\0asm` header): give the .wasm that `cargo component build` \
             or `cargo build --target wasm32-wasip2` writes"
                .into(),
        ));
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(Error::InvalidArgument(
            "this is a core WebAssembly module, not a component: build the crate with \
             `cargo component build` or `cargo build --target wasm32-wasip2`, or wrap the module with \
             `wasm-tools component new`"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    fn read(path: &str) -> ComponentInfo {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        ComponentInfo::read(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn reads_functions_classes_and_imports_from_the_bytes() {
        let info = read(ferray_test_fixtures::COUNTER);
        assert_eq!(
            info.function("bump").expect("bump").signature(),
            "bump: func(actor: u64, by: s64) -> s64"
        );
        let class = info.class("counter").expect("short class name");
        assert_eq!(class.name, "api.counter");
        assert_eq!(
            class.constructor.param_names().collect::<Vec<_>>(),
            ["start"]
        );
        assert!(
            info.export_lines().contains(
                &"resource api.counter { constructor(start: s64); \
                  incr: func(by: s64) -> s64; value: func() -> s64; }"
                    .to_string()
            ),
            "{:?}",
            info.export_lines()
        );
        assert!(
            info.imports
                .iter()
                .any(|i| i.starts_with("ferray:runtime/")),
            "{:?}",
            info.imports
        );
        let err = info.function("nope").expect_err("no such export");
        assert!(err.to_string().contains("bump"), "{err}");
    }

    #[derive(Serialize)]
    enum Shape {
        #[allow(dead_code)]
        Circle(f32),
        Square(u64),
        #[allow(dead_code)]
        None,
    }

    #[derive(Serialize)]
    #[allow(dead_code)]
    enum Color {
        Red,
        Green,
        Blue,
    }

    #[derive(Serialize)]
    struct Rec {
        name: String,
        count: u32,
        tags: Vec<String>,
        shape: Shape,
        color: Color,
        perms: u8,
        maybe: Option<i32>,
        outcome: Result<u8, String>,
        pair: (char, f64),
        bytes: Vec<u8>,
    }

    /// WAVE text goes to the canonical (postcard) bytes and back, typed by
    /// the WIT read from the bytes: every kind of value.
    #[test]
    fn wave_arguments_and_results_match_postcard() {
        let info = read(ferray_test_fixtures::MISBEHAVE);
        let f = info.function("echo-types").expect("echo-types");
        let text = r#"{name: "x", count: 3, tags: ["a", "bc"], shape: square(7), color: blue, perms: {read, exec}, maybe: some(-4), outcome: err("no"), pair: ('z', 1.5), bytes: [1, 2]}"#;
        let bytes = f.encode_wave_args(&[text.to_string()]).expect("encodes");
        let mirror = Rec {
            name: "x".into(),
            count: 3,
            tags: vec!["a".into(), "bc".into()],
            shape: Shape::Square(7),
            color: Color::Blue,
            perms: 0b101,
            maybe: Some(-4),
            outcome: Err("no".into()),
            pair: ('z', 1.5),
            bytes: vec![1, 2],
        };
        assert_eq!(bytes, postcard::to_allocvec(&mirror).expect("postcard"));
        let back = f.wave_result(&bytes).expect("decodes");
        assert_eq!(
            f.encode_wave_args(std::slice::from_ref(&back))
                .expect("re-encodes"),
            bytes,
            "{back}"
        );
        assert!(
            back.contains(r#"name: "x""#) && back.contains("square(7)"),
            "{back}"
        );
        assert!(f.wave_result(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn err_results_and_bad_arguments() {
        let info = read(ferray_test_fixtures::MISBEHAVE);
        let fail = info.function("fail").expect("fail");
        assert!(fail.returns_err(&[1, 2, b'n', b'o']));
        assert!(!fail.returns_err(&[0, 5]));
        assert_eq!(
            fail.wave_result(&[1, 2, b'n', b'o']).expect("wave"),
            r#"err("no")"#
        );
        let echo = info.function("echo-types").expect("echo-types");
        assert!(!echo.returns_err(&[1]));

        let err = fail.encode_wave_args(&[]).expect_err("arity");
        assert!(
            err.to_string()
                .contains("takes 1 argument(s), got 0: expected `fail: func(msg: string) -> result<u32, string>`"),
            "{err}"
        );
        let err = fail.encode_wave_args(&["3".into()]).expect_err("type");
        assert!(
            err.to_string()
                .contains("argument `msg`: `3` is not a string"),
            "{err}"
        );
    }

    #[test]
    fn malformed_bytes_are_a_clear_error() {
        for (bytes, needle) in [
            (&b"hello"[..], "not a WebAssembly file"),
            (&b"\0asm\x01\0\0\0"[..], "core WebAssembly module"),
            (
                &b"\0asm\x0d\0\x01\0\xff\xff"[..],
                "not a valid WebAssembly component",
            ),
            (
                &b"(component (func"[..],
                "not a valid WebAssembly component",
            ),
        ] {
            let err = ComponentInfo::read(bytes).expect_err("refused");
            assert!(err.to_string().contains(needle), "{err}");
        }
        // WebAssembly text is read as the host reads it.
        let info = ComponentInfo::read(b"(component)").expect("an empty component");
        assert!(info.functions.is_empty() && info.classes.is_empty());
    }
}
