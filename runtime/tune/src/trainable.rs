//! What tune and train call: a config encoded as a trainable's arguments
//! (against its WIT types), and the metrics it returns read back.

use std::borrow::Cow;
use std::collections::BTreeMap;

use ferray::FuncInfo;
use ferray_core::Error;
use wasm_wave::value::{Type as WaveType, Value as WaveValue};
use wasm_wave::wasm::{WasmType, WasmTypeKind, WasmValue};

use crate::TuneError;
use crate::space::{Config, Val};

/// A config as the arguments of `f` (a constructor or function),
/// canonically encoded: one record parameter gets the config's values by
/// field, else each parameter by name (`learning_rate` is
/// `learning-rate`). A value the trainable does not take, a missing one,
/// one of the wrong type or out of range is refused, naming it; `from`
/// names where the config comes from (`the space`), `what` names `f`.
pub fn encode_config(
    f: &FuncInfo,
    c: &Config,
    from: &str,
    what: &str,
) -> Result<Vec<u8>, TuneError> {
    let params = f
        .param_types()
        .map_err(|e| TuneError::Config(e.to_string()))?;
    let mut vals = Vec::with_capacity(params.len());
    let mut tys = Vec::with_capacity(params.len());
    if let [(_, ty)] = params.as_slice()
        && ty.kind() == WasmTypeKind::Record
    {
        vals.push(record_of(ty, c, from, what)?);
        tys.push((*ty).clone());
    } else {
        let names: Vec<String> = params.iter().map(|(n, _)| wit_name(n)).collect();
        for k in c.keys() {
            if !names.contains(&wit_name(k)) {
                return Err(TuneError::Config(format!(
                    "{from}'s `{k}` is not a parameter of {what}"
                )));
            }
        }
        for (n, ty) in &params {
            let v = c
                .iter()
                .find(|(k, _)| wit_name(k) == wit_name(n))
                .map(|(_, v)| v);
            vals.push(field_value(ty, v, n, from, what)?);
            tys.push((*ty).clone());
        }
    }
    ferray_codec::codec::encode_all::<ferray_codec::codec::Checked<WaveValue>>(&vals, &tys)
        .map_err(|e| TuneError::Config(format!("cannot encode a config: {e}")))
}

/// A name as WIT writes it (`learning_rate` is `learning-rate`).
fn wit_name(n: &str) -> String {
    n.replace('_', "-")
}

/// The config as a value of the record type `ty`.
fn record_of(ty: &WaveType, c: &Config, from: &str, sig: &str) -> Result<WaveValue, TuneError> {
    let fields: Vec<(String, WaveType)> = ty
        .record_fields()
        .map(|(n, t)| (n.into_owned(), t))
        .collect();
    for k in c.keys() {
        if !fields.iter().any(|(n, _)| *n == wit_name(k)) {
            let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
            return Err(TuneError::Config(format!(
                "{from}'s `{k}` is not a field of the config of {sig} (its fields: {})",
                names.join(", ")
            )));
        }
    }
    let mut vals = Vec::with_capacity(fields.len());
    for (n, fty) in &fields {
        let v = c.iter().find(|(k, _)| wit_name(k) == *n).map(|(_, v)| v);
        vals.push((n.clone(), field_value(fty, v, n, from, sig)?));
    }
    WaveValue::make_record(ty, vals.iter().map(|(n, v)| (n.as_str(), v.clone())))
        .map_err(|e| TuneError::Config(format!("cannot make the config of `{sig}`: {e}")))
}

/// One config value as a value of the WIT type `ty` (an `option` is
/// `none` when the config leaves it out).
fn field_value(
    ty: &WaveType,
    v: Option<&Val>,
    name: &str,
    from: &str,
    sig: &str,
) -> Result<WaveValue, TuneError> {
    let bad = |what: &str| TuneError::Config(format!("`{name}` of {sig}: {what}"));
    if ty.kind() == WasmTypeKind::Option {
        let inner = ty
            .option_some_type()
            .ok_or_else(|| bad("a bad option type"))?;
        let some = match v {
            Some(v) => Some(field_value(&inner, Some(v), name, from, sig)?),
            None => None,
        };
        return WaveValue::make_option(ty, some).map_err(|e| bad(&e.to_string()));
    }
    let Some(v) = v else {
        return Err(bad(&format!("{from} gives it no value")));
    };
    let int = |v: &Val| -> Result<i128, TuneError> {
        match v {
            Val::Int(i) => Ok(*i as i128),
            Val::Float(f) if f.fract() == 0.0 && f.abs() < 9e15 => Ok(*f as i128),
            other => Err(bad(&format!("expected an integer, {from} gives {other}"))),
        }
    };
    let range = |x: i128, lo: i128, hi: i128| -> Result<i128, TuneError> {
        if (lo..=hi).contains(&x) {
            Ok(x)
        } else {
            Err(bad(&format!("{x} is out of range for {}", ty.kind())))
        }
    };
    let float = |v: &Val| -> Result<f64, TuneError> {
        match v {
            Val::Int(i) => Ok(*i as f64),
            Val::Float(f) => Ok(*f),
            other => Err(bad(&format!("expected a number, {from} gives {other}"))),
        }
    };
    Ok(match ty.kind() {
        WasmTypeKind::F64 => WaveValue::make_f64(float(v)?),
        WasmTypeKind::F32 => WaveValue::make_f32(float(v)? as f32),
        WasmTypeKind::S8 => {
            WaveValue::make_s8(range(int(v)?, i8::MIN.into(), i8::MAX.into())? as i8)
        }
        WasmTypeKind::S16 => {
            WaveValue::make_s16(range(int(v)?, i16::MIN.into(), i16::MAX.into())? as i16)
        }
        WasmTypeKind::S32 => {
            WaveValue::make_s32(range(int(v)?, i32::MIN.into(), i32::MAX.into())? as i32)
        }
        WasmTypeKind::S64 => {
            WaveValue::make_s64(range(int(v)?, i64::MIN.into(), i64::MAX.into())? as i64)
        }
        WasmTypeKind::U8 => WaveValue::make_u8(range(int(v)?, 0, u8::MAX.into())? as u8),
        WasmTypeKind::U16 => WaveValue::make_u16(range(int(v)?, 0, u16::MAX.into())? as u16),
        WasmTypeKind::U32 => WaveValue::make_u32(range(int(v)?, 0, u32::MAX.into())? as u32),
        WasmTypeKind::U64 => WaveValue::make_u64(range(int(v)?, 0, u64::MAX.into())? as u64),
        WasmTypeKind::Bool => match v {
            Val::Bool(b) => WaveValue::make_bool(*b),
            other => return Err(bad(&format!("expected a boolean, {from} gives {other}"))),
        },
        WasmTypeKind::String => match v {
            Val::Str(s) => WaveValue::make_string(Cow::Borrowed(s.as_str())),
            other => WaveValue::make_string(Cow::Owned(other.to_string())),
        },
        WasmTypeKind::Enum => {
            let Val::Str(s) = v else {
                return Err(bad(&format!("expected a case name, {from} gives {v}")));
            };
            WaveValue::make_enum(ty, s).map_err(|e| bad(&e.to_string()))?
        }
        other => return Err(bad(&format!("a config value cannot be a {other}"))),
    })
}

/// The metrics a trainable returned.
pub fn metrics_of(f: &FuncInfo, bytes: &[u8]) -> Result<BTreeMap<String, f64>, Error> {
    let vals = f.decode_result(bytes)?;
    let Some(v) = vals.into_iter().next() else {
        return Err(Error::InvalidArgument(format!(
            "`{}` returns nothing; a trainable returns its metrics",
            f.signature()
        )));
    };
    let v = match v.kind() {
        WasmTypeKind::Result => match v.unwrap_result() {
            Ok(Some(ok)) => ok.into_owned(),
            Ok(None) => {
                return Err(Error::InvalidArgument(format!(
                    "`{}` returns no metrics",
                    f.signature()
                )));
            }
            Err(e) => {
                let text = e
                    .map(|e| ferray_codec::codec::to_wave(e.as_ref()).unwrap_or_default())
                    .unwrap_or_default();
                return Err(Error::TaskFailed(format!("the trial returned err({text})")));
            }
        },
        _ => v,
    };
    let mut out = BTreeMap::new();
    match v.kind() {
        WasmTypeKind::Record => {
            for (n, fv) in v.unwrap_record() {
                if let Some(x) = number(&fv) {
                    out.insert(n.into_owned(), x);
                }
            }
        }
        WasmTypeKind::List => {
            for item in v.unwrap_list() {
                if item.kind() != WasmTypeKind::Tuple {
                    break;
                }
                let parts: Vec<_> = item.unwrap_tuple().collect();
                if let [k, x] = parts.as_slice()
                    && k.kind() == WasmTypeKind::String
                    && let Some(x) = number(x)
                {
                    out.insert(k.unwrap_string().into_owned(), x);
                }
            }
        }
        _ => {}
    }
    if out.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "`{}`: metrics are a record of numbers or a list<tuple<string, f64>>",
            f.signature()
        )));
    }
    Ok(out)
}

fn number(v: &WaveValue) -> Option<f64> {
    Some(match v.kind() {
        WasmTypeKind::F64 => v.unwrap_f64(),
        WasmTypeKind::F32 => v.unwrap_f32().into(),
        WasmTypeKind::S8 => v.unwrap_s8().into(),
        WasmTypeKind::S16 => v.unwrap_s16().into(),
        WasmTypeKind::S32 => v.unwrap_s32().into(),
        WasmTypeKind::S64 => v.unwrap_s64() as f64,
        WasmTypeKind::U8 => v.unwrap_u8().into(),
        WasmTypeKind::U16 => v.unwrap_u16().into(),
        WasmTypeKind::U32 => v.unwrap_u32().into(),
        WasmTypeKind::U64 => v.unwrap_u64() as f64,
        _ => return None,
    })
}
