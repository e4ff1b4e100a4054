//! How the codec builds wasmtime's `Val`s: a decoded value is well typed by
//! construction, so it is built directly, without the checked `make_*`
//! constructors' walk over the whole value at every level.

use std::borrow::Cow;

use ferray_codec::codec::Build;
use wasm_wave::wasm::WasmValueError;
use wasmtime::component::{Type, Val};

/// The codec's builder of wasmtime values: `codec::decode::<Vals>(..)`.
#[derive(Debug)]
pub struct Vals;

impl Build for Vals {
    type Value = Val;

    fn items(value: &Val) -> Option<&[Val]> {
        match value {
            Val::List(items) | Val::Tuple(items) => Some(items),
            _ => None,
        }
    }
    fn fields(value: &Val) -> Option<&[(String, Val)]> {
        match value {
            Val::Record(fields) => Some(fields),
            _ => None,
        }
    }
    fn push_u8s(items: &[Val], out: &mut Vec<u8>) -> bool {
        out.reserve(items.len());
        for item in items {
            let Val::U8(b) = item else {
                return false;
            };
            out.push(*b);
        }
        true
    }

    fn list(_: &Type, items: Vec<Val>) -> Result<Val, WasmValueError> {
        Ok(Val::List(items))
    }
    fn bytes(_: &Type, bytes: &[u8]) -> Result<Val, WasmValueError> {
        Ok(Val::List(bytes.iter().map(|&b| Val::U8(b)).collect()))
    }
    fn record(_: &Type, fields: Vec<(Cow<'_, str>, Val)>) -> Result<Val, WasmValueError> {
        Ok(Val::Record(
            fields
                .into_iter()
                .map(|(n, v)| (n.into_owned(), v))
                .collect(),
        ))
    }
    fn tuple(_: &Type, items: Vec<Val>) -> Result<Val, WasmValueError> {
        Ok(Val::Tuple(items))
    }
    fn variant(_: &Type, case: &str, payload: Option<Val>) -> Result<Val, WasmValueError> {
        Ok(Val::Variant(case.to_string(), payload.map(Box::new)))
    }
    fn enum_case(_: &Type, case: &str) -> Result<Val, WasmValueError> {
        Ok(Val::Enum(case.to_string()))
    }
    fn option(_: &Type, value: Option<Val>) -> Result<Val, WasmValueError> {
        Ok(Val::Option(value.map(Box::new)))
    }
    fn result(_: &Type, value: Result<Option<Val>, Option<Val>>) -> Result<Val, WasmValueError> {
        Ok(Val::Result(match value {
            Ok(v) => Ok(v.map(Box::new)),
            Err(v) => Err(v.map(Box::new)),
        }))
    }
    fn flags(_: &Type, names: Vec<&str>) -> Result<Val, WasmValueError> {
        Ok(Val::Flags(names.into_iter().map(str::to_string).collect()))
    }
}
