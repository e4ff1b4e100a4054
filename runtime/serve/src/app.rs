//! The application file (TOML): the proxy's options and the deployments,
//! with Ray Serve's option names. Reading it does no I/O but the file's own
//! (components are read when the application starts); a bad file gets one
//! line naming the file, the field and what was expected.
//!
//! ```toml
//! [http]
//! port = 8000
//! request_timeout_s = 30
//!
//! [[deployment]]
//! name = "hello"
//! component = "serve_hello.wasm"   # relative to this file
//! route_prefix = "/hello"
//! max_ongoing_requests = 5
//! [deployment.autoscaling_config]
//! min_replicas = 0
//! max_replicas = 4
//! target_ongoing_requests = 2
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferray_core::TaskOptions;
use serde::Deserialize;

/// A bad application file: one line, naming the file and the field.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {field}: {message}")]
pub struct AppError {
    pub file: String,
    /// The field's path (`deployment[0].max_replicas`), or `-` for the file as a whole.
    pub field: String,
    pub message: String,
}

/// The whole file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppFile {
    /// Ray's `proxy_location`: `HeadOnly` (the default) or `EveryNode`.
    proxy_location: Option<ProxyLocation>,
    #[serde(default)]
    http: HttpFile,
    #[serde(default)]
    deployment: Vec<DeploymentFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    host: Option<String>,
    port: Option<u16>,
    /// Ray's `http_options.request_timeout_s`: a request is answered 408
    /// past it (and its guest stopped).
    request_timeout_s: Option<f64>,
    /// The largest request body, as a size (`10MiB`).
    max_request_body: Option<String>,
    /// On a cluster: take requests without the cluster token (TLS stays
    /// as the cluster's).
    public: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploymentFile {
    name: String,
    component: PathBuf,
    #[serde(default)]
    kind: Kind,
    route_prefix: Option<String>,
    num_replicas: Option<u32>,
    autoscaling_config: Option<AutoscalingFile>,
    max_ongoing_requests: Option<u32>,
    max_batch_size: Option<u32>,
    batch_wait_timeout_s: Option<f64>,
    num_cpus: Option<f64>,
    num_gpus: Option<f64>,
    /// A replica's memory limit, as a size (`256MiB`).
    memory: Option<String>,
    #[serde(default)]
    resources: BTreeMap<String, f64>,
    /// A stateful replica's configuration (Ray's `user_config`), given to
    /// its constructor as JSON text.
    user_config: Option<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AutoscalingFile {
    min_replicas: Option<u32>,
    max_replicas: Option<u32>,
    initial_replicas: Option<u32>,
    target_ongoing_requests: Option<f64>,
    upscale_delay_s: Option<f64>,
    downscale_delay_s: Option<f64>,
    look_back_period_s: Option<f64>,
    metrics_interval_s: Option<f64>,
}

/// What a deployment's component is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A `wasi:http/incoming-handler`: a fresh instance per request.
    #[default]
    Http,
    /// A stateful replica (an exported resource implementing ferray's
    /// `serve` interface), an actor per replica.
    Replica,
}

/// The proxy's options.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpOptions {
    pub host: String,
    pub port: u16,
    pub request_timeout: Option<Duration>,
    pub max_request_body: u64,
    pub proxy_location: ProxyLocation,
    /// On a cluster, the proxies take requests without the cluster token.
    /// (On one machine, `serve run`, there is no token to ask for.)
    pub public: bool,
}

/// Where a cluster's application takes requests (Ray's `proxy_location`;
/// also spelled as the command line does, `head-only`, `every-node`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ProxyLocation {
    /// The proxy in the head process only.
    #[default]
    #[serde(alias = "head-only")]
    HeadOnly,
    /// Also a proxy on every worker node, at the same host and port on its
    /// machine, which hands each request to the head's application.
    #[serde(alias = "every-node")]
    EveryNode,
}

impl std::str::FromStr for ProxyLocation {
    type Err = String;

    /// `HeadOnly` or `EveryNode`, or as a command line spells them,
    /// `head-only` or `every-node`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "HeadOnly" | "head-only" => Ok(ProxyLocation::HeadOnly),
            "EveryNode" | "every-node" => Ok(ProxyLocation::EveryNode),
            _ => Err(format!(
                "--proxy-location: expected head-only or every-node, got {s:?}"
            )),
        }
    }
}

/// Ray Serve's default `max_ongoing_requests`.
pub const DEFAULT_MAX_ONGOING: u32 = 5;
/// The default largest request body.
pub const DEFAULT_MAX_BODY: u64 = 10 << 20;

/// Ray Serve's autoscaling policy's parameters (`autoscaling_config`).
#[derive(Debug, Clone, PartialEq)]
pub struct Autoscaling {
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub initial_replicas: u32,
    pub target_ongoing_requests: f64,
    pub upscale_delay: Duration,
    pub downscale_delay: Duration,
    pub look_back_period: Duration,
    pub metrics_interval: Duration,
}

/// How many replicas a deployment has.
#[derive(Debug, Clone, PartialEq)]
pub enum Scaling {
    Fixed(u32),
    Auto(Autoscaling),
}

impl Scaling {
    /// The replicas it starts with.
    pub fn initial(&self) -> u32 {
        match self {
            Scaling::Fixed(n) => *n,
            Scaling::Auto(a) => a.initial_replicas,
        }
    }
}

/// One deployment, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub name: String,
    /// The component's path (made absolute against the file's directory).
    pub component: PathBuf,
    pub kind: Kind,
    /// Starts with `/`; no trailing `/` but for the root.
    pub route_prefix: String,
    pub scaling: Scaling,
    pub max_ongoing_requests: u32,
    /// Each request's limits (memory, time, resources); a stateful
    /// replica's actor holds the resources for its life.
    pub options: TaskOptions,
    /// A stateful replica's batching (`max_batch_size` set).
    pub batching: Option<Batching>,
    /// A stateful replica's `user_config`, as JSON text (`{}` without one).
    pub config: String,
}

/// Ray's `@serve.batch`: requests to one replica are gathered up to
/// `max_batch_size`, waiting at most `batch_wait_timeout_s` after the first.
#[derive(Debug, Clone, PartialEq)]
pub struct Batching {
    pub max_batch_size: u32,
    pub batch_wait_timeout: Duration,
}

/// Ray Serve's default `batch_wait_timeout_s`.
pub const DEFAULT_BATCH_WAIT: Duration = Duration::from_millis(10);

/// An application: the proxy's options and its deployments.
#[derive(Debug, Clone)]
pub struct App {
    pub http: HttpOptions,
    pub deployments: Vec<Deployment>,
}

impl App {
    /// Read and check the file at `path`.
    pub fn load(path: &Path) -> Result<App, AppError> {
        let text = std::fs::read_to_string(path).map_err(|e| AppError {
            file: path.display().to_string(),
            field: "-".into(),
            message: format!("cannot read it: {e}"),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        App::parse(&path.display().to_string(), &text, base)
    }

    /// Check `text`, an application file named `file`; components' paths
    /// are relative to `base`.
    pub fn parse(file: &str, text: &str, base: &Path) -> Result<App, AppError> {
        let err = |field: String, message: String| AppError {
            file: file.to_string(),
            field,
            message,
        };
        let de = toml::Deserializer::parse(text)
            .map_err(|e| err("-".into(), one_line(e.message(), e.span(), text)))?;
        let raw: AppFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = match e.path().to_string() {
                p if p == "." => "-".to_string(),
                p => p,
            };
            let inner = e.inner();
            err(field, one_line(inner.message(), inner.span(), text))
        })?;
        check(raw, base).map_err(|(field, message)| err(field, message))
    }
}

/// A TOML error's message on one line, with the line it points at.
fn one_line(message: &str, span: Option<std::ops::Range<usize>>, text: &str) -> String {
    let message = message.trim().replace('\n', "; ");
    match span {
        Some(s) => {
            let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
            format!("{message} (line {line})")
        }
        None => message,
    }
}

type Bad = (String, String);

fn positive_secs(field: &str, v: f64) -> Result<Duration, Bad> {
    if !(v.is_finite() && v >= 0.0) {
        return Err((
            field.into(),
            format!("expected seconds, at least 0, got {v}"),
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

fn size(field: &str, v: &str) -> Result<u64, Bad> {
    ferray_core::parse_size(v).map_err(|e| {
        (
            field.into(),
            format!("expected a size like `256MiB`, got {v:?} ({e})"),
        )
    })
}

fn check(raw: AppFile, base: &Path) -> Result<App, Bad> {
    let h = raw.http;
    let http = HttpOptions {
        host: h.host.unwrap_or_else(|| "127.0.0.1".into()),
        port: h.port.unwrap_or(8000),
        request_timeout: match h.request_timeout_s {
            Some(t) if t <= 0.0 => {
                return Err((
                    "http.request_timeout_s".into(),
                    format!("expected seconds, more than 0, got {t}"),
                ));
            }
            Some(t) => Some(positive_secs("http.request_timeout_s", t)?),
            None => None,
        },
        max_request_body: match &h.max_request_body {
            Some(s) => size("http.max_request_body", s)?,
            None => DEFAULT_MAX_BODY,
        },
        proxy_location: raw.proxy_location.unwrap_or_default(),
        public: h.public.unwrap_or(false),
    };
    if raw.deployment.is_empty() {
        return Err((
            "deployment".into(),
            "expected at least one [[deployment]]".into(),
        ));
    }
    let mut names = HashSet::new();
    let mut prefixes = HashSet::new();
    let mut deployments = Vec::new();
    for (i, d) in raw.deployment.into_iter().enumerate() {
        let at = |f: &str| format!("deployment[{i}].{f}");
        if d.name.is_empty()
            || !d
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err((
                at("name"),
                format!("expected letters, digits, `-` or `_`, got {:?}", d.name),
            ));
        }
        if !names.insert(d.name.clone()) {
            return Err((
                at("name"),
                format!("another deployment is named {:?}", d.name),
            ));
        }
        let batching = match (d.max_batch_size, d.batch_wait_timeout_s) {
            (None, None) => None,
            _ if d.kind == Kind::Http => {
                let f = if d.max_batch_size.is_some() {
                    "max_batch_size"
                } else {
                    "batch_wait_timeout_s"
                };
                return Err((
                    at(f),
                    "batching needs a stateful replica (kind = \"replica\") with \
                     `handle-batch`; an HTTP handler answers one request per instance"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err((
                    at("batch_wait_timeout_s"),
                    "expected max_batch_size with it".into(),
                ));
            }
            (Some(0), _) => {
                return Err((at("max_batch_size"), "expected at least 1".into()));
            }
            (Some(n), wait) => Some(Batching {
                max_batch_size: n,
                batch_wait_timeout: match wait {
                    Some(w) => positive_secs(&at("batch_wait_timeout_s"), w)?,
                    None => DEFAULT_BATCH_WAIT,
                },
            }),
        };
        let config = match (&d.user_config, d.kind) {
            (Some(_), Kind::Http) => {
                return Err((
                    at("user_config"),
                    "a configuration goes to a stateful replica's constructor \
                     (kind = \"replica\"); an HTTP handler has none"
                        .into(),
                ));
            }
            (Some(t), Kind::Replica) => {
                serde_json::to_string(t).map_err(|e| (at("user_config"), e.to_string()))?
            }
            (None, _) => "{}".to_string(),
        };
        let route_prefix = match d.route_prefix {
            None => format!("/{}", d.name),
            Some(p) if !p.starts_with('/') || p.contains(['?', '#', ' ']) => {
                return Err((
                    at("route_prefix"),
                    format!("expected a path starting with `/`, got {p:?}"),
                ));
            }
            Some(p) if p.len() > 1 => p.trim_end_matches('/').to_string(),
            Some(p) => p,
        };
        if !prefixes.insert(route_prefix.clone()) {
            return Err((
                at("route_prefix"),
                format!("another deployment serves {route_prefix:?}"),
            ));
        }
        let scaling = match (d.num_replicas, d.autoscaling_config) {
            (Some(_), Some(_)) => {
                return Err((
                    at("num_replicas"),
                    "expected either num_replicas or autoscaling_config, not both".into(),
                ));
            }
            (Some(0), None) => {
                return Err((
                    at("num_replicas"),
                    "expected at least 1 (scale to zero with autoscaling_config.min_replicas = 0)"
                        .into(),
                ));
            }
            (Some(n), None) => Scaling::Fixed(n),
            (None, None) => Scaling::Fixed(1),
            (None, Some(a)) => {
                let at = |f: &str| format!("deployment[{i}].autoscaling_config.{f}");
                let min = a.min_replicas.unwrap_or(1);
                let max = a.max_replicas.unwrap_or(1.max(min));
                if max < min || max == 0 {
                    return Err((
                        at("max_replicas"),
                        format!("expected at least min_replicas ({min}) and 1, got {max}"),
                    ));
                }
                let initial = a.initial_replicas.unwrap_or(min);
                if initial < min || initial > max {
                    return Err((
                        at("initial_replicas"),
                        format!("expected between {min} and {max}, got {initial}"),
                    ));
                }
                let target = a.target_ongoing_requests.unwrap_or(2.0);
                if !(target.is_finite() && target > 0.0) {
                    return Err((
                        at("target_ongoing_requests"),
                        format!("expected more than 0, got {target}"),
                    ));
                }
                let metrics_interval = positive_secs(
                    &at("metrics_interval_s"),
                    a.metrics_interval_s.unwrap_or(1.0),
                )?;
                if metrics_interval < Duration::from_millis(10) {
                    return Err((at("metrics_interval_s"), "expected at least 0.01".into()));
                }
                Scaling::Auto(Autoscaling {
                    min_replicas: min,
                    max_replicas: max,
                    initial_replicas: initial,
                    target_ongoing_requests: target,
                    upscale_delay: positive_secs(
                        &at("upscale_delay_s"),
                        a.upscale_delay_s.unwrap_or(30.0),
                    )?,
                    downscale_delay: positive_secs(
                        &at("downscale_delay_s"),
                        a.downscale_delay_s.unwrap_or(600.0),
                    )?,
                    look_back_period: positive_secs(
                        &at("look_back_period_s"),
                        a.look_back_period_s.unwrap_or(30.0),
                    )?,
                    metrics_interval,
                })
            }
        };
        let max_ongoing_requests = match d.max_ongoing_requests {
            Some(0) => {
                return Err((at("max_ongoing_requests"), "expected at least 1".into()));
            }
            Some(n) => n,
            None => DEFAULT_MAX_ONGOING,
        };
        let mut resources = TaskOptions::default().resources;
        if let Some(n) = d.num_cpus {
            resources = resources
                .with_cpus(n)
                .map_err(|e| (at("num_cpus"), e.to_string()))?;
        }
        if let Some(n) = d.num_gpus {
            resources = resources
                .with_gpus(n)
                .map_err(|e| (at("num_gpus"), e.to_string()))?;
        }
        if let Some(m) = &d.memory {
            resources = resources.with_memory(size(&at("memory"), m)?);
        }
        for (name, amount) in &d.resources {
            resources = resources
                .with_custom(name, *amount)
                .map_err(|e| (at(&format!("resources.{name}")), e.to_string()))?;
        }
        let options = TaskOptions {
            resources,
            timeout: http.request_timeout,
            ..TaskOptions::default()
        };
        deployments.push(Deployment {
            name: d.name,
            component: base.join(d.component),
            kind: d.kind,
            route_prefix,
            scaling,
            max_ongoing_requests,
            options,
            batching,
            config,
        });
    }
    Ok(App { http, deployments })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<App, String> {
        App::parse("app.toml", text, Path::new("/apps")).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_ray_serves() {
        let app = parse("[[deployment]]\nname = \"hello\"\ncomponent = \"h.wasm\"\n").unwrap();
        let d = &app.deployments[0];
        assert_eq!(d.route_prefix, "/hello");
        assert_eq!(d.component, Path::new("/apps/h.wasm"));
        assert_eq!(d.scaling, Scaling::Fixed(1));
        assert_eq!(d.max_ongoing_requests, 5);
        assert_eq!(app.http.port, 8000);
        let auto = parse(
            "[[deployment]]\nname = \"a\"\ncomponent = \"a.wasm\"\n\
             [deployment.autoscaling_config]\nmax_replicas = 3\n",
        )
        .unwrap();
        let Scaling::Auto(a) = &auto.deployments[0].scaling else {
            panic!("autoscaling expected")
        };
        assert_eq!(
            (a.min_replicas, a.max_replicas, a.initial_replicas),
            (1, 3, 1)
        );
        assert_eq!(a.target_ongoing_requests, 2.0);
        assert_eq!(a.upscale_delay, Duration::from_secs(30));
        assert_eq!(a.downscale_delay, Duration::from_secs(600));
    }

    #[test]
    fn a_stateful_replica_takes_batching_and_its_config() {
        let app = parse(
            "[[deployment]]\nname = \"m\"\ncomponent = \"m.wasm\"\nkind = \"replica\"\n\
             max_batch_size = 8\n[deployment.user_config]\nmetric = \"manhattan\"\nk = 3\n",
        )
        .unwrap();
        let d = &app.deployments[0];
        assert_eq!(d.kind, Kind::Replica);
        assert_eq!(
            d.batching,
            Some(Batching {
                max_batch_size: 8,
                batch_wait_timeout: DEFAULT_BATCH_WAIT
            })
        );
        assert_eq!(d.config, r#"{"k":3,"metric":"manhattan"}"#);
        for (text, expected) in [
            (
                "[[deployment]]\nname = \"a\"\ncomponent = \"a.wasm\"\nmax_batch_size = 4\n",
                "app.toml: deployment[0].max_batch_size: batching needs a stateful replica",
            ),
            (
                "[[deployment]]\nname = \"a\"\ncomponent = \"a.wasm\"\nkind = \"replica\"\n\
                 batch_wait_timeout_s = 0.1\n",
                "app.toml: deployment[0].batch_wait_timeout_s: expected max_batch_size",
            ),
            (
                "[[deployment]]\nname = \"a\"\ncomponent = \"a.wasm\"\n\
                 [deployment.user_config]\nx = 1\n",
                "app.toml: deployment[0].user_config: a configuration goes",
            ),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.starts_with(expected), "{text:?}: got {e:?}");
        }
    }

    #[test]
    fn a_bad_file_gets_one_line_naming_the_field() {
        let cases = [
            (
                "[[deployment]]\nname = \"a\"\ncomponent = \"a.wasm\"\nnum_replicas = \"two\"\n",
                "app.toml: deployment[0].num_replicas: ",
            ),
            (
                "[[deployment]]\nname = \"a\"\ncomponent = \"a.wasm\"\nnum_replica = 2\n",
                "app.toml: deployment[0].num_replica: unknown field",
            ),
            (
                "[[deployment]]\nname = \"a\"\ncomponent = \"a.wasm\"\n\
                 [deployment.autoscaling_config]\nmin_replicas = 3\nmax_replicas = 2\n",
                "app.toml: deployment[0].autoscaling_config.max_replicas: expected at least \
                 min_replicas (3)",
            ),
            (
                "[[deployment]]\nname = \"a\"\ncomponent = \"a.wasm\"\nroute_prefix = \"x\"\n",
                "app.toml: deployment[0].route_prefix: expected a path",
            ),
            (
                "[[deployment]]\nname = \"a\"\ncomponent = \"a.wasm\"\n\
                 [[deployment]]\nname = \"a\"\ncomponent = \"b.wasm\"\n",
                "app.toml: deployment[1].name: another deployment",
            ),
            (
                "[[deployment]]\nname = \"a\"\n",
                "app.toml: deployment[0]: missing field `component`",
            ),
            ("[http]\nport = 99999\n", "app.toml: http.port: "),
            ("", "app.toml: deployment: expected at least one"),
            ("[[deployment]\n", "app.toml: -: "),
            (
                "[[deployment]]\nname = \"a\"\ncomponent = \"a.wasm\"\nmemory = \"lots\"\n",
                "app.toml: deployment[0].memory: expected a size",
            ),
            (
                "[[deployment]]\nname = \"a\"\ncomponent = \"a.wasm\"\nnum_cpus = -1\n",
                "app.toml: deployment[0].num_cpus: ",
            ),
            (
                "[[deployment]]\nname = \"a\"\ncomponent = \"a.wasm\"\nkind = \"lambda\"\n",
                "app.toml: deployment[0].kind: unknown variant",
            ),
        ];
        for (text, expected) in cases {
            let e = parse(text).expect_err(text);
            assert!(
                e.starts_with(expected),
                "{text:?}: got {e:?}, expected {expected:?}..."
            );
            assert!(!e.contains('\n'), "{text:?}: not one line: {e:?}");
        }
    }
}
