//! What a loaded component exports, as the host calls it: each function's
//! export index and wasmtime types, grouped into functions and actor
//! classes by [`ferray_codec::Exports`] (the same grouping a client reads
//! from the bytes).

use std::fmt::Write as _;

use ferray_codec::codec::type_name;
use ferray_codec::{Class, Export, Exports, interface_short};
use ferray_core::Error;
use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, ComponentExportIndex, Type};

/// One exported function, ready to call.
#[derive(Clone)]
pub struct FuncInfo {
    /// The name users write: `heavy-compute`, or `api.incr` inside an interface.
    pub name: String,
    pub(crate) index: ComponentExportIndex,
    /// Parameter names, and their types (for a method, without the `self`
    /// handle).
    pub(crate) param_names: Vec<String>,
    pub(crate) params: Vec<Type>,
    pub(crate) results: Vec<Type>,
}

/// An exported resource: an actor class.
pub type ClassInfo = Class<FuncInfo>;

/// The host's view of a component's exports.
pub type ComponentInfo = Exports<FuncInfo>;

impl FuncInfo {
    /// The parameters' WIT types, for the codec.
    pub fn param_types(&self) -> &[Type] {
        &self.params
    }

    /// Whether `encoded` (this function's result) is an `err(..)`.
    pub fn returns_err(&self, encoded: &[u8]) -> bool {
        ferray_codec::codec::returns_err(&self.results, encoded)
    }

    /// `heavy-compute: func(x: s64) -> s64`, for error messages; handles
    /// as the client's reading writes them (`own<resource>`).
    pub fn signature(&self) -> String {
        let params: Vec<String> = self
            .param_names
            .iter()
            .zip(&self.params)
            .map(|(name, ty)| format!("{name}: {}", name_of(ty)))
            .collect();
        let mut s = format!("{}: func({})", self.name, params.join(", "));
        match self.results.as_slice() {
            [] => {}
            [one] => {
                let _ = write!(s, " -> {}", name_of(one));
            }
            many => {
                let names: Vec<String> = many.iter().map(name_of).collect();
                let _ = write!(s, " -> ({})", names.join(", "));
            }
        }
        s
    }
}

/// An export as wasmtime describes it: index, parameters, results.
type Found = (ComponentExportIndex, Vec<(String, Type)>, Vec<Type>);

/// Read a compiled component's exports and imports.
pub(crate) fn exports_of(engine: &Engine, component: &Component) -> Result<ComponentInfo, Error> {
    let ty = component.component_type();
    let imports = ty
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let mut found: Vec<Export<Found>> = Vec::new();
    for (name, ext) in ty.exports(engine) {
        match ext.ty {
            ComponentItem::ComponentFunc(f) => {
                let index = component
                    .get_export_index(None, name)
                    .ok_or_else(|| Error::Other(format!("export `{name}` has no index")))?;
                found.push(Export {
                    interface: None,
                    name: name.to_string(),
                    item: (
                        index,
                        f.params().map(|(n, t)| (n.to_string(), t)).collect(),
                        f.results().collect(),
                    ),
                });
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
                    let Some(index) = component.get_export_index(Some(&inst_index), fname) else {
                        continue;
                    };
                    found.push(Export {
                        interface: Some(iface.clone()),
                        name: fname.to_string(),
                        item: (
                            index,
                            f.params().map(|(n, t)| (n.to_string(), t)).collect(),
                            f.results().collect(),
                        ),
                    });
                }
            }
            _ => {}
        }
    }
    Exports::group(found, imports, |(index, params, results), role| {
        // A method's `self` handle is the runtime's to pass.
        let (param_names, params) = params.into_iter().skip(usize::from(role.method)).unzip();
        Ok(FuncInfo {
            name: role.full_name.to_string(),
            index,
            param_names,
            params,
            results,
        })
    })
}

/// A type as the codec writes it, but handles (which wasmtime's value
/// types cannot tell apart) as the client's reading of the bytes names them.
fn name_of(ty: &wasmtime::component::Type) -> String {
    use wasmtime::component::Type;
    match ty {
        Type::Own(_) => "own<resource>".into(),
        Type::Borrow(_) => "borrow<resource>".into(),
        Type::Future(_) => "future".into(),
        Type::Stream(_) => "stream".into(),
        other => type_name(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's reading of each guest's exports (wasmtime, after
    /// compiling) and a client's (wasmparser, from the bytes) agree: same
    /// functions, classes and methods, with the same signatures.
    #[test]
    fn host_and_client_read_the_same_signatures() {
        let engine = Engine::default();
        let (mut functions, mut methods) = (0, 0);
        for (name, path) in ferray_test_fixtures::all() {
            let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{name}: {e}"));
            let component = Component::new(&engine, &bytes).expect("compiles");
            let host = exports_of(&engine, &component).expect("host's reading");
            let client = ferray_codec::ComponentInfo::read(&bytes).expect("client's reading");
            let host_fns: Vec<String> = host.functions.values().map(|f| f.signature()).collect();
            let client_fns: Vec<String> =
                client.functions.values().map(|f| f.signature()).collect();
            assert_eq!(host_fns, client_fns, "{name}: functions");
            functions += host_fns.len();
            assert_eq!(
                host.classes.keys().collect::<Vec<_>>(),
                client.classes.keys().collect::<Vec<_>>(),
                "{name}: classes"
            );
            for (class, h) in &host.classes {
                let c = &client.classes[class];
                let hm: Vec<String> = h.methods.values().map(|f| f.signature()).collect();
                let cm: Vec<String> = c.methods.values().map(|f| f.signature()).collect();
                assert_eq!(hm, cm, "{name}: methods of {class}");
                methods += hm.len();
                assert_eq!(
                    h.constructor.param_names,
                    c.constructor.param_names().collect::<Vec<_>>(),
                    "{name}: constructor of {class}"
                );
            }
            assert_eq!(host.imports, client.imports, "{name}: imports");
        }
        assert!(
            functions >= 20 && methods >= 2,
            "{functions} functions, {methods} methods"
        );
    }
}
