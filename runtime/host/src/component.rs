//! What a loaded component exports: functions (tasks) and resources (actor
//! classes), with their WIT types, indexed for lookup by name.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use ferray_core::Error;
use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, ComponentExportIndex, Type};

use crate::codec::type_name;

/// One exported function.
#[derive(Clone)]
pub struct FuncInfo {
    /// The name users write: `heavy-compute`, or `api.incr` inside an interface.
    pub name: String,
    pub(crate) index: ComponentExportIndex,
    /// Parameters (for a method, without the `self` handle).
    pub(crate) params: Vec<(String, Type)>,
    pub(crate) results: Vec<Type>,
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

    pub(crate) fn param_types(&self) -> Vec<Type> {
        self.params.iter().map(|(_, t)| t.clone()).collect()
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
                let _ = write!(s, " -> {}", type_name(one));
            }
            many => {
                let names: Vec<String> = many.iter().map(type_name).collect();
                let _ = write!(s, " -> ({})", names.join(", "));
            }
        }
        s
    }

    /// Whether `encoded` (this function's result, canonically encoded) is
    /// an `err(..)`: the one check, for retries and for exit codes. A
    /// `result<_, _>` encodes `err` as a leading 1.
    pub fn returns_err(&self, encoded: &[u8]) -> bool {
        matches!(self.results.as_slice(), [Type::Result(_)]) && encoded.first() == Some(&1)
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
        let mut vals = Vec::with_capacity(args.len());
        for ((name, ty), text) in self.params.iter().zip(args) {
            vals.push(crate::codec::parse_wave(ty, text).map_err(|e| {
                Error::InvalidArgument(format!(
                    "argument `{name}`: `{text}` is not a {}: {e}; expected `{}`",
                    type_name(ty),
                    self.signature()
                ))
            })?);
        }
        crate::codec::encode_all(&vals, &self.param_types())
            .map_err(|e| Error::InvalidArgument(format!("cannot encode the arguments: {e}")))
    }

    /// This function's canonically encoded result as WAVE text (several
    /// results separated by spaces).
    pub fn wave_result(&self, encoded: &[u8]) -> Result<String, Error> {
        let results = crate::codec::decode_all(&self.results, encoded)
            .map_err(|e| Error::Other(format!("cannot decode the result: {e}")))?;
        let texts = results
            .iter()
            .map(|v| {
                crate::codec::to_wave(v)
                    .map_err(|e| Error::Other(format!("cannot print the result: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(texts.join(" "))
    }

    fn params_text(&self) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(name, ty)| format!("{name}: {}", type_name(ty)))
            .collect();
        params.join(", ")
    }
}

/// An exported resource: an actor class.
#[derive(Clone)]
pub struct ClassInfo {
    /// `counter`, or `api.counter` when inside an interface.
    pub name: String,
    pub constructor: FuncInfo,
    pub methods: BTreeMap<String, FuncInfo>,
}

/// The exports and imports of a component.
#[derive(Clone, Default)]
pub struct ComponentInfo {
    /// Every function under its full name (`name` or `interface.name`).
    pub functions: BTreeMap<String, Arc<FuncInfo>>,
    /// Every actor class under its full name.
    pub classes: BTreeMap<String, ClassInfo>,
    /// Short names (without the interface) that are unique, to full names.
    short: HashMap<String, Vec<String>>,
    short_classes: HashMap<String, Vec<String>>,
    /// Imported interfaces, e.g. `ferray:runtime/objects@0.1.0`.
    pub imports: Vec<String>,
}

/// An exported function as found: interface (`None`: top level), name,
/// index, parameters, results.
type Found = (
    Option<String>,
    String,
    ComponentExportIndex,
    Vec<(String, Type)>,
    Vec<Type>,
);

/// `ferray-examples:counter/api@0.1.0` -> `api`
fn interface_short(name: &str) -> &str {
    let after_slash = name.rsplit_once('/').map_or(name, |(_, r)| r);
    after_slash.split_once('@').map_or(after_slash, |(l, _)| l)
}

impl ComponentInfo {
    pub(crate) fn of(engine: &Engine, component: &Component) -> Result<Self, Error> {
        let mut info = ComponentInfo::default();
        let ty = component.component_type();
        for (name, ext) in ty.imports(engine) {
            info.imports.push(name.to_string());
            let _ = ext;
        }
        // Functions and resource members found, by interface (`None`: top level).
        let mut found: Vec<Found> = Vec::new();
        for (name, ext) in ty.exports(engine) {
            match ext.ty {
                ComponentItem::ComponentFunc(f) => {
                    let index = component
                        .get_export_index(None, name)
                        .ok_or_else(|| Error::Other(format!("export `{name}` has no index")))?;
                    found.push((
                        None,
                        name.to_string(),
                        index,
                        f.params().map(|(n, t)| (n.to_string(), t)).collect(),
                        f.results().collect(),
                    ));
                }
                ComponentItem::ComponentInstance(inst) => {
                    let Some(inst_index) = component.get_export_index(None, name) else {
                        continue;
                    };
                    let iface = interface_short(name).to_string();
                    for (fname, fext) in inst.exports(engine) {
                        let ComponentItem::ComponentFunc(f) = fext.ty else {
                            continue;
                        };
                        let Some(index) = component.get_export_index(Some(&inst_index), fname)
                        else {
                            continue;
                        };
                        found.push((
                            Some(iface.clone()),
                            fname.to_string(),
                            index,
                            f.params().map(|(n, t)| (n.to_string(), t)).collect(),
                            f.results().collect(),
                        ));
                    }
                }
                _ => {}
            }
        }
        let qualify = |iface: &Option<String>, name: &str| match iface {
            Some(i) => format!("{i}.{name}"),
            None => name.to_string(),
        };
        let mut ctors: BTreeMap<String, FuncInfo> = BTreeMap::new();
        let mut methods: BTreeMap<String, BTreeMap<String, FuncInfo>> = BTreeMap::new();
        for (iface, fname, index, params, results) in found {
            if let Some(class) = fname.strip_prefix("[constructor]") {
                let full = qualify(&iface, class);
                ctors.insert(
                    full.clone(),
                    FuncInfo {
                        name: full,
                        index,
                        params,
                        results,
                    },
                );
            } else if let Some(rest) = fname.strip_prefix("[method]") {
                let Some((class, method)) = rest.split_once('.') else {
                    continue;
                };
                let class_full = qualify(&iface, class);
                // Drop the `self` handle: the runtime passes the actor's own.
                let params = params.into_iter().skip(1).collect();
                let name = format!("{class_full}.{method}");
                methods.entry(class_full).or_default().insert(
                    method.to_string(),
                    FuncInfo {
                        name,
                        index,
                        params,
                        results,
                    },
                );
            } else {
                // Plain functions, and static functions of resources.
                let short = fname.strip_prefix("[static]").unwrap_or(&fname);
                let full = qualify(&iface, short);
                info.functions.insert(
                    full.clone(),
                    Arc::new(FuncInfo {
                        name: full,
                        index,
                        params,
                        results,
                    }),
                );
            }
        }
        for (full, ctor) in ctors {
            let methods = methods.remove(&full).unwrap_or_default();
            info.classes.insert(
                full.clone(),
                ClassInfo {
                    name: full,
                    constructor: ctor,
                    methods,
                },
            );
        }
        for full in info.functions.keys() {
            if let Some((_, short)) = full.rsplit_once('.') {
                info.short
                    .entry(short.to_string())
                    .or_default()
                    .push(full.clone());
            }
        }
        for full in info.classes.keys() {
            if let Some((_, short)) = full.rsplit_once('.') {
                info.short_classes
                    .entry(short.to_string())
                    .or_default()
                    .push(full.clone());
            }
        }
        Ok(info)
    }

    /// Look a function up by its full name, or by its short name when that
    /// is unique. The error lists the exports.
    pub fn function(&self, name: &str) -> Result<&Arc<FuncInfo>, Error> {
        if let Some(f) = self.functions.get(name) {
            return Ok(f);
        }
        match self.short.get(name).map(Vec::as_slice) {
            Some([one]) => Ok(&self.functions[one]),
            Some(many) => Err(Error::NotFound(format!(
                "`{name}` is ambiguous: write one of {}",
                many.join(", ")
            ))),
            None => Err(Error::NotFound(format!(
                "no exported function `{name}`; the component exports: {}",
                self.export_list()
            ))),
        }
    }

    /// Look an actor class up by full or unique short name.
    pub fn class(&self, name: &str) -> Result<&ClassInfo, Error> {
        if let Some(c) = self.classes.get(name) {
            return Ok(c);
        }
        match self.short_classes.get(name).map(Vec::as_slice) {
            Some([one]) => Ok(&self.classes[one]),
            Some(many) => Err(Error::NotFound(format!(
                "actor class `{name}` is ambiguous: write one of {}",
                many.join(", ")
            ))),
            None => Err(Error::NotFound(format!(
                "no exported resource `{name}` to make an actor of; the component exports: {}",
                self.export_list()
            ))),
        }
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

    fn export_list(&self) -> String {
        let mut names: Vec<&str> = self.functions.keys().map(String::as_str).collect();
        names.extend(self.classes.keys().map(String::as_str));
        if names.is_empty() {
            "(nothing)".to_string()
        } else {
            names.join(", ")
        }
    }
}
