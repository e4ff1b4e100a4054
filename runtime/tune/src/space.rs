//! Search spaces (Ray Tune's `tune.grid_search`, `choice`, `uniform`,
//! `quniform`, `loguniform`, `randint`) read from TOML, and the configs
//! they generate: grid parameters crossed, the others sampled, the whole
//! repeated `num_samples` times, reproducibly from a seed.
//!
//! ```toml
//! lr = { loguniform = [1e-4, 1e-1] }
//! width = { choice = [16, 32, 64] }
//! layers = { grid_search = [1, 2] }
//! momentum = { uniform = [0.1, 0.9] }
//! dropout = { quniform = [0.0, 0.5, 0.1] }
//! seed = { randint = [0, 1000] }   # 0 <= seed < 1000, as Ray
//! epochs = 10                      # a constant
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::TuneError;

/// One value of a config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Val {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl std::fmt::Display for Val {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Val::Bool(b) => write!(f, "{b}"),
            Val::Int(i) => write!(f, "{i}"),
            Val::Float(x) => write!(f, "{}", short_float(*x)),
            Val::Str(s) => write!(f, "{s}"),
        }
    }
}

impl Val {
    /// The value in full (a float with every digit it needs to read back).
    pub fn full(&self) -> String {
        match self {
            Val::Float(x) => format!("{x:?}"),
            other => other.to_string(),
        }
    }
}

/// A float as people read it: at most 6 significant digits.
pub(crate) fn short_float(x: f64) -> String {
    if x != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e6) {
        format!("{x:.4e}")
    } else {
        let s = format!("{x:.6}");
        let s = s.trim_end_matches('0');
        s.strip_suffix('.')
            .map_or_else(|| s.to_string(), |t| format!("{t}.0"))
    }
}

/// A trial's config: parameter names (as the space file writes them) to values.
pub type Config = BTreeMap<String, Val>;

/// How one parameter is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Domain {
    Const(Val),
    Grid(Vec<Val>),
    Choice(Vec<Val>),
    Uniform(f64, f64),
    QUniform(f64, f64, f64),
    LogUniform(f64, f64),
    /// `lo <= x < hi`.
    RandInt(i64, i64),
}

/// A search space: each parameter's domain, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Space {
    pub params: BTreeMap<String, Domain>,
}

const KINDS: &str = "grid_search, choice, uniform, quniform, loguniform or randint";

impl Space {
    /// Read a space file; an error is one line naming the file and field.
    pub fn from_file(path: &Path) -> Result<Space, TuneError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TuneError::Space(format!("{}: {e}", path.display())))?;
        Space::parse(&text).map_err(|e| match e {
            TuneError::Space(m) => TuneError::Space(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Read a space from TOML text.
    pub fn parse(text: &str) -> Result<Space, TuneError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let msg = e.message().to_string();
            match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].lines().count().max(1);
                    TuneError::Space(format!("line {line}: {msg}"))
                }
                None => TuneError::Space(msg),
            }
        })?;
        let mut params = BTreeMap::new();
        for (name, v) in table {
            let d = domain(&name, v)?;
            params.insert(name, d);
        }
        if params.is_empty() {
            return Err(TuneError::Space("the space has no parameters".into()));
        }
        Ok(Space { params })
    }

    /// How many configs one sample of the grid gives.
    pub fn grid_size(&self) -> usize {
        self.params
            .values()
            .map(|d| match d {
                Domain::Grid(v) => v.len(),
                _ => 1,
            })
            .product()
    }

    /// The configs of a search: every point of the grid (the product of
    /// the `grid_search` parameters, the last one varying fastest), the
    /// whole grid `num_samples` times, each config's other parameters
    /// sampled from `seed` (the same seed gives the same configs).
    pub fn generate(&self, num_samples: usize, seed: u64) -> Vec<Config> {
        let mut rng = Rng::new(seed);
        let grid: Vec<(&String, &Vec<Val>)> = self
            .params
            .iter()
            .filter_map(|(n, d)| match d {
                Domain::Grid(v) => Some((n, v)),
                _ => None,
            })
            .collect();
        let points = self.grid_size();
        let mut out = Vec::with_capacity(points * num_samples);
        for _ in 0..num_samples {
            for p in 0..points {
                let mut c = Config::new();
                // Mixed radix, the last grid parameter fastest.
                let mut rest = p;
                for (name, vals) in grid.iter().rev() {
                    c.insert((*name).clone(), vals[rest % vals.len()].clone());
                    rest /= vals.len();
                }
                for (name, d) in &self.params {
                    let v = match d {
                        Domain::Grid(_) => continue,
                        Domain::Const(v) => v.clone(),
                        Domain::Choice(vs) => vs[rng.below(vs.len() as u64) as usize].clone(),
                        Domain::Uniform(lo, hi) => Val::Float(lo + (hi - lo) * rng.unit()),
                        Domain::QUniform(lo, hi, q) => {
                            let x = lo + (hi - lo) * rng.unit();
                            Val::Float(((x / q).round() * q).clamp(*lo, *hi))
                        }
                        Domain::LogUniform(lo, hi) => {
                            let (a, b) = (lo.ln(), hi.ln());
                            Val::Float((a + (b - a) * rng.unit()).exp())
                        }
                        Domain::RandInt(lo, hi) => {
                            let span = hi.abs_diff(*lo);
                            Val::Int(lo.wrapping_add(rng.below(span) as i64))
                        }
                    };
                    c.insert(name.clone(), v);
                }
                out.push(c);
            }
        }
        out
    }
}

fn val(name: &str, v: &toml::Value) -> Result<Val, TuneError> {
    Ok(match v {
        toml::Value::Boolean(b) => Val::Bool(*b),
        toml::Value::Integer(i) => Val::Int(*i),
        toml::Value::Float(f) => Val::Float(*f),
        toml::Value::String(s) => Val::Str(s.clone()),
        other => {
            return Err(TuneError::Space(format!(
                "`{name}`: expected a number, string or boolean, got {}",
                other.type_str()
            )));
        }
    })
}

fn num(name: &str, kind: &str, v: &toml::Value) -> Result<f64, TuneError> {
    match v {
        toml::Value::Integer(i) => Ok(*i as f64),
        toml::Value::Float(f) if f.is_finite() => Ok(*f),
        other => Err(TuneError::Space(format!(
            "`{name}.{kind}`: expected finite numbers, got {}",
            show(other)
        ))),
    }
}

/// A TOML value in an error message.
fn show(v: &toml::Value) -> String {
    match v {
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::String(s) => format!("{s:?}"),
        other => format!("a {}", other.type_str()),
    }
}

fn domain(name: &str, v: toml::Value) -> Result<Domain, TuneError> {
    let toml::Value::Table(t) = v else {
        return Ok(Domain::Const(val(name, &v)?));
    };
    let mut it = t.into_iter();
    let (Some((kind, arg)), None) = (it.next(), it.next()) else {
        return Err(TuneError::Space(format!(
            "`{name}`: expected one key, one of {KINDS}"
        )));
    };
    let list = |n: Option<usize>| -> Result<Vec<toml::Value>, TuneError> {
        let toml::Value::Array(a) = &arg else {
            return Err(TuneError::Space(format!(
                "`{name}.{kind}`: expected an array, got {}",
                arg.type_str()
            )));
        };
        if let Some(n) = n
            && a.len() != n
        {
            return Err(TuneError::Space(format!(
                "`{name}.{kind}`: expected {n} numbers, got {}",
                a.len()
            )));
        }
        if a.is_empty() {
            return Err(TuneError::Space(format!(
                "`{name}.{kind}`: expected at least one value"
            )));
        }
        Ok(a.clone())
    };
    let bounds = |lo: f64, hi: f64| -> Result<(), TuneError> {
        if lo < hi {
            Ok(())
        } else {
            Err(TuneError::Space(format!(
                "`{name}.{kind}`: the lower bound {lo} must be below the upper bound {hi}"
            )))
        }
    };
    Ok(match kind.as_str() {
        "grid_search" | "choice" => {
            let vals = list(None)?
                .iter()
                .map(|v| val(&format!("{name}.{kind}"), v))
                .collect::<Result<Vec<_>, _>>()?;
            if kind == "grid_search" {
                Domain::Grid(vals)
            } else {
                Domain::Choice(vals)
            }
        }
        "uniform" | "loguniform" => {
            let a = list(Some(2))?;
            let (lo, hi) = (num(name, &kind, &a[0])?, num(name, &kind, &a[1])?);
            bounds(lo, hi)?;
            if kind == "loguniform" {
                if lo <= 0.0 {
                    return Err(TuneError::Space(format!(
                        "`{name}.loguniform`: the bounds must be above 0, got {lo}"
                    )));
                }
                Domain::LogUniform(lo, hi)
            } else {
                Domain::Uniform(lo, hi)
            }
        }
        "quniform" => {
            let a = list(Some(3))?;
            let (lo, hi, q) = (
                num(name, &kind, &a[0])?,
                num(name, &kind, &a[1])?,
                num(name, &kind, &a[2])?,
            );
            bounds(lo, hi)?;
            if q <= 0.0 {
                return Err(TuneError::Space(format!(
                    "`{name}.quniform`: the step must be above 0, got {q}"
                )));
            }
            Domain::QUniform(lo, hi, q)
        }
        "randint" => {
            let a = list(Some(2))?;
            let int = |v: &toml::Value| match v {
                toml::Value::Integer(i) => Ok(*i),
                other => Err(TuneError::Space(format!(
                    "`{name}.randint`: expected integers, got {}",
                    show(other)
                ))),
            };
            let (lo, hi) = (int(&a[0])?, int(&a[1])?);
            bounds(lo as f64, hi as f64)?;
            Domain::RandInt(lo, hi)
        }
        other => {
            return Err(TuneError::Space(format!(
                "`{name}`: unknown domain `{other}`; expected one of {KINDS}"
            )));
        }
    })
}

/// SplitMix64: small, seeded and the same on every platform and version
/// (a search's configs are reproducible from its seed).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n) (0 when n is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Lemire's multiply-shift; the bias is below 2^-64 * n.
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_domain_parses_and_samples_within_its_bounds() {
        let s = Space::parse(
            r#"
            lr = { loguniform = [1e-4, 1e-1] }
            width = { choice = [16, 32, 64] }
            layers = { grid_search = [1, 2, 3] }
            act = { grid_search = ["relu", "tanh"] }
            momentum = { uniform = [0.1, 0.9] }
            dropout = { quniform = [0.0, 0.5, 0.1] }
            seed = { randint = [5, 8] }
            epochs = 10
            "#,
        )
        .expect("parses");
        assert_eq!(s.grid_size(), 6);
        let configs = s.generate(4, 7);
        assert_eq!(configs.len(), 24);
        // Each sample covers the grid once, the last grid parameter fastest.
        let first: Vec<(Val, Val)> = configs[..6]
            .iter()
            .map(|c| (c["act"].clone(), c["layers"].clone()))
            .collect();
        assert_eq!(
            first,
            vec![
                (Val::Str("relu".into()), Val::Int(1)),
                (Val::Str("relu".into()), Val::Int(2)),
                (Val::Str("relu".into()), Val::Int(3)),
                (Val::Str("tanh".into()), Val::Int(1)),
                (Val::Str("tanh".into()), Val::Int(2)),
                (Val::Str("tanh".into()), Val::Int(3)),
            ]
        );
        for c in &configs {
            let Val::Float(lr) = c["lr"] else { panic!() };
            assert!((1e-4..=1e-1).contains(&lr), "{lr}");
            assert!([16, 32, 64].map(Val::Int).contains(&c["width"]));
            let Val::Float(m) = c["momentum"] else {
                panic!()
            };
            assert!((0.1..0.9).contains(&m));
            let Val::Float(d) = c["dropout"] else {
                panic!()
            };
            assert!((0.0..=0.5).contains(&d));
            assert!(
                ((d / 0.1).round() * 0.1 - d).abs() < 1e-9,
                "{d} is on the 0.1 grid"
            );
            let Val::Int(seed) = c["seed"] else { panic!() };
            assert!((5..8).contains(&seed));
            assert_eq!(c["epochs"], Val::Int(10));
        }
        // Seeded: the same seed gives the same configs, another seed others.
        assert_eq!(configs, s.generate(4, 7));
        assert_ne!(configs, s.generate(4, 8));
    }

    #[test]
    fn samples_spread_over_the_whole_range() {
        let s = Space::parse("x = { uniform = [0, 1] }\nk = { randint = [0, 4] }").expect("ok");
        let configs = s.generate(4000, 1);
        let mean: f64 = configs
            .iter()
            .map(|c| match c["x"] {
                Val::Float(x) => x,
                _ => f64::NAN,
            })
            .sum::<f64>()
            / 4000.0;
        assert!((mean - 0.5).abs() < 0.03, "{mean}");
        for k in 0..4 {
            let n = configs.iter().filter(|c| c["k"] == Val::Int(k)).count();
            assert!((800..1200).contains(&n), "{k}: {n}");
        }
    }

    #[test]
    fn a_bad_space_gets_one_line_naming_the_field() {
        let cases = [
            (
                "lr = { loguniform = [0, 1] }",
                "`lr.loguniform`: the bounds must be above 0",
            ),
            (
                "lr = { uniform = [1] }",
                "`lr.uniform`: expected 2 numbers, got 1",
            ),
            (
                "lr = { uniform = [2, 1] }",
                "`lr.uniform`: the lower bound 2 must be below",
            ),
            ("lr = { normal = [0, 1] }", "`lr`: unknown domain `normal`"),
            (
                "lr = { choice = [] }",
                "`lr.choice`: expected at least one value",
            ),
            (
                "lr = { choice = 3 }",
                "`lr.choice`: expected an array, got integer",
            ),
            (
                "n = { randint = [0, 1.5] }",
                "`n.randint`: expected integers",
            ),
            (
                "lr = { uniform = [0, 1], choice = [1] }",
                "`lr`: expected one key",
            ),
            (
                "lr = [1, 2]",
                "`lr`: expected a number, string or boolean, got array",
            ),
            ("lr = { uniform = [0, 1] ", "line 1:"),
            ("", "the space has no parameters"),
        ];
        for (text, want) in cases {
            let e = Space::parse(text).expect_err(text).to_string();
            assert!(e.contains(want), "{text}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }
}
