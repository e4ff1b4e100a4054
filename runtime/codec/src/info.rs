//! A component's export signatures, read from its bytes with `wasmparser`'s
//! validator: no engine, no compilation. This is what the embedding API and the command
//! line show and check, on the embedded runtime and on a connected client
//! alike.

use std::fmt::Write as _;

use ferray_core::{ComponentId, Error};
use wasm_wave::value::{Type as WaveType, Value as WaveValue};
use wasmparser::component_types::{ComponentDefinedType, ComponentEntityType, ComponentValType};
use wasmparser::types::TypesRef;
use wasmparser::{Parser, Payload, PrimitiveValType, ValidPayload, Validator, WasmFeatures};

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

    /// The parameters' WIT types as the component writes them (`list<u8>`).
    pub fn param_type_texts(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|(_, t)| t.text())
    }

    /// The results' WIT types as the component writes them.
    pub fn result_type_texts(&self) -> impl Iterator<Item = &str> {
        self.results.iter().map(|t| t.text())
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
        let results = self.decode_result(encoded)?;
        let texts = results
            .iter()
            .map(|v| {
                codec::to_wave(v).map_err(|e| Error::Other(format!("cannot print the result: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(texts.join(" "))
    }

    /// The parameters' names and value types (an error names one that
    /// cannot pass between tasks).
    pub fn param_types(&self) -> Result<Vec<(&str, &WaveType)>, Error> {
        self.params
            .iter()
            .map(|(n, t)| Ok((n.as_str(), t.value_type(&format!("argument `{n}`"))?)))
            .collect()
    }

    /// This function's canonically encoded result as WAVE values.
    pub fn decode_result(&self, encoded: &[u8]) -> Result<Vec<WaveValue>, Error> {
        let tys = self
            .results
            .iter()
            .map(|t| t.value_type("the result").cloned())
            .collect::<Result<Vec<_>, _>>()?;
        codec::decode_all::<Checked<WaveValue>>(&tys, encoded)
            .map_err(|e| Error::Other(format!("cannot decode the result: {e}")))
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
    /// WebAssembly text): validated, never compiled.
    pub fn read(bytes: &[u8]) -> Result<Self, Error> {
        check_header(bytes)?;
        let invalid = |e: &dyn std::fmt::Display| {
            Error::InvalidArgument(format!("not a valid WebAssembly component: {e}"))
        };
        let binary = wat::parse_bytes(bytes).map_err(|e| invalid(&e))?;
        let mut validator = Validator::new_with_features(WasmFeatures::all());
        let (mut imports, mut exports) = (Vec::new(), Vec::new());
        let mut depth = 1;
        let mut types = None;
        for payload in Parser::new(0).parse_all(&binary) {
            let payload = payload.map_err(|e| invalid(&e))?;
            match validator.payload(&payload).map_err(|e| invalid(&e))? {
                ValidPayload::Parser(_) => depth += 1,
                ValidPayload::End(t) => {
                    depth -= 1;
                    if depth == 0 {
                        types = Some(t);
                    }
                }
                ValidPayload::Ok | ValidPayload::Func(..) => {}
            }
            match payload {
                Payload::ComponentImportSection(section) if depth == 1 => {
                    for import in section {
                        imports.push(import.map_err(|e| invalid(&e))?.name.name.to_string());
                    }
                }
                Payload::ComponentExportSection(section) if depth == 1 => {
                    for export in section {
                        exports.push(export.map_err(|e| invalid(&e))?.name.name.to_string());
                    }
                }
                _ => {}
            }
        }
        let types = types.ok_or_else(|| invalid(&"the component ends early"))?;
        let t = types.as_ref();
        // Interfaces and functions (imported types are not imports a host
        // provides).
        imports.retain(|name| {
            t.component_item_for_import(name).is_some_and(|item| {
                matches!(
                    item.ty,
                    ComponentEntityType::Instance(_) | ComponentEntityType::Func(_)
                )
            })
        });
        let mut found = Vec::new();
        for name in exports {
            let Some(item) = t.component_item_for_export(&name) else {
                continue;
            };
            match &item.ty {
                ComponentEntityType::Func(id) => found.push(Export {
                    interface: None,
                    name,
                    item: &t[*id],
                }),
                ComponentEntityType::Instance(id) => {
                    let iface = interface_short(&name).to_string();
                    for (fname, fitem) in &t[*id].exports {
                        if let ComponentEntityType::Func(fid) = &fitem.ty {
                            found.push(Export {
                                interface: Some(iface.clone()),
                                name: fname.clone(),
                                item: &t[*fid],
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        Exports::group(found, imports, |f, role| {
            Ok(FuncInfo {
                name: role.full_name.to_string(),
                params: f
                    .params
                    .iter()
                    .skip(usize::from(role.method))
                    .map(|(n, ty)| (n.to_string(), wit_type(t, ty, 0)))
                    .collect(),
                results: f.result.iter().map(|ty| wit_type(t, ty, 0)).collect(),
            })
        })
    }

    /// Whether the component exports an HTTP handler, by the signature of
    /// `wasi:http/incoming-handler`'s `handle` (the host checks the rest
    /// where it compiles the component).
    pub fn is_http_handler(&self) -> bool {
        let handle = self
            .functions
            .get("incoming-handler.handle")
            .is_some_and(|f| {
                f.params.len() == 2
                    && f.params.iter().all(|(_, t)| t.text.starts_with("own<"))
                    && f.results.is_empty()
            });
        handle
            && self
                .imports
                .iter()
                .any(|i| i.starts_with("wasi:http/types@0.2."))
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

/// A WIT type, with the value type the codec needs when it has one.
fn wit_type(t: TypesRef<'_>, ty: &ComponentValType, depth: usize) -> WitType {
    let wave = value_type(t, ty, depth);
    let text = match &wave {
        Some(w) => type_name(w),
        None => opaque_name(t, ty),
    };
    WitType { text, ty: wave }
}

/// The value type of `ty`; `None` when its values cannot pass between
/// tasks (handles, futures, streams, maps, fixed-length lists).
fn value_type(t: TypesRef<'_>, ty: &ComponentValType, depth: usize) -> Option<WaveType> {
    // Validated types are far shallower; this only bounds the recursion.
    if depth >= crate::codec::MAX_DEPTH {
        return None;
    }
    let inner = |ty: &ComponentValType| value_type(t, ty, depth + 1);
    let id = match ty {
        ComponentValType::Primitive(p) => return primitive(*p),
        ComponentValType::Type(id) => *id,
    };
    match &t[id] {
        ComponentDefinedType::Primitive(p) => primitive(*p),
        ComponentDefinedType::Record(r) => WaveType::record(
            r.fields
                .iter()
                .map(|(n, ty)| Some((n.as_str(), inner(ty)?)))
                .collect::<Option<Vec<_>>>()?,
        ),
        ComponentDefinedType::Variant(v) => WaveType::variant(
            v.cases
                .iter()
                .map(|(n, c)| match &c.ty {
                    Some(ty) => Some((n.as_str(), Some(inner(ty)?))),
                    None => Some((n.as_str(), None)),
                })
                .collect::<Option<Vec<_>>>()?,
        ),
        ComponentDefinedType::List { element, .. } => Some(WaveType::list(inner(element)?)),
        ComponentDefinedType::Tuple(tuple) => {
            WaveType::tuple(tuple.types.iter().map(inner).collect::<Option<Vec<_>>>()?)
        }
        ComponentDefinedType::Flags(names) => WaveType::flags(names.iter().map(|n| n.as_str())),
        ComponentDefinedType::Enum(names) => WaveType::enum_ty(names.iter().map(|n| n.as_str())),
        ComponentDefinedType::Option { ty, .. } => Some(WaveType::option(inner(ty)?)),
        ComponentDefinedType::Result { ok, err, .. } => {
            let ok = match ok {
                Some(ty) => Some(inner(ty)?),
                None => None,
            };
            let err = match err {
                Some(ty) => Some(inner(ty)?),
                None => None,
            };
            Some(WaveType::result(ok, err))
        }
        _ => None,
    }
}

fn primitive(p: PrimitiveValType) -> Option<WaveType> {
    Some(match p {
        PrimitiveValType::Bool => WaveType::BOOL,
        PrimitiveValType::S8 => WaveType::S8,
        PrimitiveValType::U8 => WaveType::U8,
        PrimitiveValType::S16 => WaveType::S16,
        PrimitiveValType::U16 => WaveType::U16,
        PrimitiveValType::S32 => WaveType::S32,
        PrimitiveValType::U32 => WaveType::U32,
        PrimitiveValType::S64 => WaveType::S64,
        PrimitiveValType::U64 => WaveType::U64,
        PrimitiveValType::F32 => WaveType::F32,
        PrimitiveValType::F64 => WaveType::F64,
        PrimitiveValType::Char => WaveType::CHAR,
        PrimitiveValType::String => WaveType::STRING,
        _ => return None,
    })
}

/// How a type that holds no plain value is written.
fn opaque_name(t: TypesRef<'_>, ty: &ComponentValType) -> String {
    let ComponentValType::Type(id) = ty else {
        return "error-context".into();
    };
    match &t[*id] {
        ComponentDefinedType::Own(_) => "own<resource>".into(),
        ComponentDefinedType::Borrow(_) => "borrow<resource>".into(),
        ComponentDefinedType::Future { .. } => "future".into(),
        ComponentDefinedType::Stream { .. } => "stream".into(),
        ComponentDefinedType::Map { .. } => "map".into(),
        ComponentDefinedType::FixedLengthList { length, .. } => format!("list<_, {length}>"),
        _ => "a type with a handle inside".into(),
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
