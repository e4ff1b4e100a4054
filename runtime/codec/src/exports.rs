//! A component's exports grouped as ferray calls them: functions (tasks)
//! and resources (actor classes), under full and unique short names.
//!
//! One grouping serves both readers of a component: the host (`F` carries
//! wasmtime's types and export indices) and a client (`F` is a
//! [`FuncInfo`](crate::FuncInfo) read from the bytes without compiling).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ferray_core::Error;

/// An exported resource: an actor class.
#[derive(Debug, Clone)]
pub struct Class<F> {
    /// `counter`, or `api.counter` when inside an interface.
    pub name: String,
    pub constructor: F,
    pub methods: BTreeMap<String, F>,
}

/// A component's exported functions and classes, and what it imports.
#[derive(Debug, Clone)]
pub struct Exports<F> {
    /// Every function under its full name (`name` or `interface.name`).
    pub functions: BTreeMap<String, Arc<F>>,
    /// Every actor class under its full name.
    pub classes: BTreeMap<String, Class<F>>,
    /// Short names (without the interface) that are unique, to full names.
    short: HashMap<String, Vec<String>>,
    short_classes: HashMap<String, Vec<String>>,
    /// Imported interfaces, e.g. `ferray:runtime/objects@0.1.0`.
    pub imports: Vec<String>,
}

impl<F> Default for Exports<F> {
    fn default() -> Self {
        Exports {
            functions: BTreeMap::new(),
            classes: BTreeMap::new(),
            short: HashMap::new(),
            short_classes: HashMap::new(),
            imports: Vec::new(),
        }
    }
}

/// One exported function as the component names it: its interface
/// (`None`: the top level), its name (`heavy-compute`, `[constructor]counter`,
/// `[method]counter.incr`, `[static]counter.make`) and what the reader
/// knows of it.
pub struct Export<R> {
    pub interface: Option<String>,
    pub name: String,
    pub item: R,
}

/// What a function becomes: its full name, and whether it is a method (its
/// first parameter, the `self` handle, is the runtime's to pass).
pub struct Role<'a> {
    pub full_name: &'a str,
    pub method: bool,
}

/// Where an export goes: a class's constructor, a class's method (class,
/// method), or the functions.
enum Place {
    Constructor,
    Method(String, String),
    Function,
}

/// `ferray-examples:counter/api@0.1.0` -> `api`
pub fn interface_short(name: &str) -> &str {
    let after_slash = name.rsplit_once('/').map_or(name, |(_, r)| r);
    after_slash.split_once('@').map_or(after_slash, |(l, _)| l)
}

impl<F> Exports<F> {
    /// Group `found` into functions and classes; `make` builds each entry.
    pub fn group<R>(
        found: Vec<Export<R>>,
        imports: Vec<String>,
        mut make: impl FnMut(R, Role<'_>) -> Result<F, Error>,
    ) -> Result<Self, Error> {
        let mut out = Exports {
            imports,
            ..Exports::default()
        };
        let qualify = |iface: &Option<String>, name: &str| match iface {
            Some(i) => format!("{i}.{name}"),
            None => name.to_string(),
        };
        let mut ctors: BTreeMap<String, F> = BTreeMap::new();
        let mut methods: BTreeMap<String, BTreeMap<String, F>> = BTreeMap::new();
        for Export {
            interface,
            name,
            item,
        } in found
        {
            let (full, place) = if let Some(class) = name.strip_prefix("[constructor]") {
                (qualify(&interface, class), Place::Constructor)
            } else if let Some(rest) = name.strip_prefix("[method]") {
                let Some((class, method)) = rest.split_once('.') else {
                    continue;
                };
                let class_full = qualify(&interface, class);
                (
                    format!("{class_full}.{method}"),
                    Place::Method(class_full, method.to_string()),
                )
            } else {
                // Plain functions, and static functions of resources.
                let short = name.strip_prefix("[static]").unwrap_or(&name);
                (qualify(&interface, short), Place::Function)
            };
            let role = Role {
                full_name: &full,
                method: matches!(place, Place::Method(..)),
            };
            let f = make(item, role)?;
            match place {
                Place::Constructor => {
                    ctors.insert(full, f);
                }
                Place::Method(class, method) => {
                    methods.entry(class).or_default().insert(method, f);
                }
                Place::Function => {
                    out.functions.insert(full, Arc::new(f));
                }
            }
        }
        for (full, constructor) in ctors {
            let methods = methods.remove(&full).unwrap_or_default();
            out.classes.insert(
                full.clone(),
                Class {
                    name: full,
                    constructor,
                    methods,
                },
            );
        }
        for full in out.functions.keys() {
            if let Some((_, short)) = full.rsplit_once('.') {
                out.short
                    .entry(short.to_string())
                    .or_default()
                    .push(full.clone());
            }
        }
        for full in out.classes.keys() {
            if let Some((_, short)) = full.rsplit_once('.') {
                out.short_classes
                    .entry(short.to_string())
                    .or_default()
                    .push(full.clone());
            }
        }
        Ok(out)
    }

    /// Look a function up by its full name, or by its short name when that
    /// is unique. The error lists the exports.
    pub fn function(&self, name: &str) -> Result<&Arc<F>, Error> {
        lookup(&self.functions, &self.short, name).map_err(|ambiguous| match ambiguous {
            Some(many) => Error::NotFound(format!("`{name}` is ambiguous: write one of {many}")),
            None => Error::NotFound(format!(
                "no exported function `{name}`; the component exports: {}",
                self.export_list()
            )),
        })
    }

    /// Look an actor class up by full or unique short name.
    pub fn class(&self, name: &str) -> Result<&Class<F>, Error> {
        lookup(&self.classes, &self.short_classes, name).map_err(|ambiguous| match ambiguous {
            Some(many) => Error::NotFound(format!(
                "actor class `{name}` is ambiguous: write one of {many}"
            )),
            None => Error::NotFound(format!(
                "no exported resource `{name}` to make an actor of; the component exports: {}",
                self.export_list()
            )),
        })
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

/// An entry by full name, or by a short name that names one entry; the
/// error is the full names a short one is ambiguous between, if it is.
fn lookup<'a, T>(
    full: &'a BTreeMap<String, T>,
    short: &HashMap<String, Vec<String>>,
    name: &str,
) -> Result<&'a T, Option<String>> {
    if let Some(entry) = full.get(name) {
        return Ok(entry);
    }
    match short.get(name).map(Vec::as_slice) {
        Some([one]) => full.get(one).ok_or(None),
        Some(many) => Err(Some(many.join(", "))),
        None => Err(None),
    }
}
