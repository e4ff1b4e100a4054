//! ferray serve: components as HTTP services, after Ray Serve.
//!
//! An application file ([`App`]) names deployments; each serves a route
//! prefix with replicas. A stateless deployment's component exports
//! `wasi:http/incoming-handler` (as `wasmtime serve` and Spin run it) and
//! answers every request in a fresh instance; its replicas are how many
//! requests it takes at once (`max_ongoing_requests` each). The proxy
//! ([`proxy`]) routes a request by the longest matching prefix to the
//! replica with fewer ongoing requests of two picked at random, answers 503
//! with `Retry-After` when every replica is full, 408 past the request
//! timeout, 413 past the body limit. An autoscaling deployment's replicas
//! follow Ray's policy ([`scale`]), down to zero and back on the next request.
//!
//! This crate is a client of the embedding API (`ferray::Runtime`); it
//! knows neither wasmtime nor the cluster's protocol.

pub mod app;
mod controller;
mod guard;
mod node;
mod proxy;
mod replica;
pub mod scale;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use ferray::{Component, Runtime};
use parking_lot::Mutex;

pub use app::{App, AppError, Deployment, HttpOptions, Kind, ProxyLocation, Scaling};
pub use controller::Controller;
pub use ferray_core::view::{ServeDeployment as DeploymentStatus, ServeStatus};
pub use guard::Guard;
pub use node::{Upstream, follow};
pub use proxy::Server;

/// Why an application did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    App(#[from] AppError),
    #[error("deployment {name:?}: {message}")]
    Deployment { name: String, message: String },
    #[error("cannot listen on {address}: {message}")]
    Listen { address: String, message: String },
    #[error("{0}")]
    Http(String),
}

/// A replica: a share of the requests a deployment takes at once; for a
/// stateful deployment, also the actor that answers them.
pub(crate) struct Replica {
    pub(crate) id: u64,
    pub(crate) ongoing: AtomicU32,
    pub(crate) actor: Option<replica::Stateful>,
}

/// A deployment as it runs: its component, its replicas, its counters.
pub(crate) struct Running {
    pub(crate) rt: Runtime,
    pub(crate) spec: Deployment,
    pub(crate) component: Component,
    pub(crate) replicas: Mutex<Vec<Arc<Replica>>>,
    /// Held while replicas are added or removed (one change at a time).
    scaling: tokio::sync::Mutex<()>,
    next_replica: AtomicU64,
    pub(crate) scaler: Mutex<Option<scale::Scaler>>,
    /// Requests answered (any status), refused for overload, failed (5xx).
    pub(crate) requests: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) failed: AtomicU64,
    /// Replicas started and stopped since the application started.
    pub(crate) started: AtomicU64,
    pub(crate) stopped: AtomicU64,
    /// Replaced by a newer version (a rolling update) or stopped: it takes
    /// no new request, its autoscaler stops, its replicas drain.
    pub(crate) retired: AtomicBool,
}

impl Running {
    async fn new(
        rt: Runtime,
        spec: Deployment,
        component: Component,
    ) -> Result<Arc<Running>, ferray::Error> {
        let scaler = match &spec.scaling {
            Scaling::Auto(a) => Some(scale::Scaler::new(a.clone())),
            Scaling::Fixed(_) => None,
        };
        let running = Arc::new(Running {
            rt,
            component,
            replicas: Mutex::new(Vec::new()),
            scaling: tokio::sync::Mutex::new(()),
            next_replica: AtomicU64::new(0),
            scaler: Mutex::new(scaler),
            requests: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            started: AtomicU64::new(0),
            stopped: AtomicU64::new(0),
            retired: AtomicBool::new(false),
            spec,
        });
        running.scale_to(running.spec.scaling.initial()).await?;
        Ok(running)
    }

    /// Add or remove replicas to have `n`. A removed replica takes no new
    /// request and ends its ongoing ones (they hold it): a graceful drain;
    /// a stateful one's actor is stopped once they are done.
    pub(crate) async fn scale_to(&self, n: u32) -> Result<(), ferray::Error> {
        self.resize(n, true).await
    }

    /// Add replicas to have at least `n` (a cold start: never removes one
    /// that another request or the autoscaler added meanwhile).
    pub(crate) async fn grow_to(&self, n: u32) -> Result<(), ferray::Error> {
        self.resize(n, false).await
    }

    /// Take no new request and drain every replica: those with requests
    /// ongoing end them first (a rolling update's old version).
    pub(crate) async fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        if let Err(e) = self.scale_to(0).await {
            tracing::warn!(deployment = %self.spec.name, "cannot drain: {e}");
        }
    }

    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Stop every replica's actor now (the application stops).
    pub(crate) fn stop_replicas(&self) {
        self.retired.store(true, Ordering::Release);
        for r in self.replicas.lock().drain(..) {
            if let Some(actor) = &r.actor {
                actor.stop();
            }
        }
    }

    async fn resize(&self, n: u32, shrink: bool) -> Result<(), ferray::Error> {
        let _one = self.scaling.lock().await;
        let n = if self.is_retired() { 0 } else { n as usize };
        loop {
            let have = self.replicas.lock().len();
            if have >= n {
                break;
            }
            let id = self.next_replica.fetch_add(1, Ordering::Relaxed);
            let actor = match self.spec.kind {
                Kind::Http => None,
                Kind::Replica => Some(replica::Stateful::start(self).await?),
            };
            // Stopped while the actor was made (the application was
            // deleted): it goes at once.
            if self.is_retired() {
                if let Some(a) = &actor {
                    a.stop();
                }
                break;
            }
            self.replicas.lock().push(Arc::new(Replica {
                id,
                ongoing: AtomicU32::new(0),
                actor,
            }));
            self.started.fetch_add(1, Ordering::Relaxed);
            tracing::info!(deployment = %self.spec.name, replica = id, "replica started");
        }
        let mut gone = Vec::new();
        {
            let mut replicas = self.replicas.lock();
            while shrink && replicas.len() > n {
                // The least busy goes.
                let Some((i, _)) = replicas
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, r)| r.ongoing.load(Ordering::Relaxed))
                else {
                    break;
                };
                gone.push(replicas.swap_remove(i));
            }
        }
        for replica in gone {
            self.stopped.fetch_add(1, Ordering::Relaxed);
            tracing::info!(deployment = %self.spec.name, replica = replica.id, "replica stopped");
            if replica.actor.is_some() {
                tokio::spawn(replica::drain(replica));
            }
        }
        Ok(())
    }

    /// Requests ongoing on its replicas (the live ones).
    pub(crate) fn ongoing(&self) -> u32 {
        self.replicas
            .lock()
            .iter()
            .map(|r| r.ongoing.load(Ordering::Relaxed))
            .sum()
    }

    /// One step of the autoscaler: record the ongoing requests (and those
    /// refused since the last step, which wanted a replica), scale.
    pub(crate) async fn autoscale(&self, now: Instant, refused: u64) {
        let next = {
            let mut scaler = self.scaler.lock();
            let Some(s) = scaler.as_mut() else { return };
            s.record(now, f64::from(self.ongoing()) + refused as f64);
            let current = self.replicas.lock().len() as u32;
            let next = s.decide(now, current);
            if next == current {
                return;
            }
            tracing::info!(
                deployment = %self.spec.name,
                "autoscaling from {current} to {next} replicas"
            );
            next
        };
        if let Err(e) = self.scale_to(next).await {
            tracing::warn!(deployment = %self.spec.name, "cannot scale: {e}");
        }
    }
}

/// Start an application on `rt`: load each deployment's component, check
/// that it is what its kind needs, start its replicas and the proxy on
/// `app.http`'s address (port 0: any free port). Stops when the returned
/// [`Server`] is dropped or [`Server::shutdown`] is called.
pub async fn start(rt: &Runtime, app: App) -> Result<Server, ServeError> {
    start_guarded(rt, app, &Guard::open()).await
}

/// [`start`] behind `guard` (a cluster's TLS and token).
pub async fn start_guarded(rt: &Runtime, app: App, guard: &Guard) -> Result<Server, ServeError> {
    let mut components = Vec::new();
    for d in &app.deployments {
        let c = rt
            .load_file(&d.component)
            .await
            .map_err(|e| ServeError::Deployment {
                name: d.name.clone(),
                message: format!("cannot load {}: {e}", d.component.display()),
            })?;
        components.push(c);
    }
    start_loaded(rt, app, components, guard).await
}

/// [`start_guarded`] with the deployments' components loaded (in order).
pub async fn start_loaded(
    rt: &Runtime,
    app: App,
    components: Vec<Component>,
    guard: &Guard,
) -> Result<Server, ServeError> {
    let listener = proxy::Server::bind(&app.http).await?;
    let running = prepare_all(rt, app.deployments, components, &[]).await?;
    let server = proxy::Server::start(app.http, listener, guard, running)?;
    // Its guests' calls to deployments (handles) come here.
    rt.set_serve_router(Some(server.router()));
    Ok(server)
}

/// The deployments as they will run: those equal to one of `reuse` (same
/// spec, same component) are that one; the others are checked and their
/// replicas started. When one fails, the ones started here are retired.
pub(crate) async fn prepare_all(
    rt: &Runtime,
    deployments: Vec<Deployment>,
    components: Vec<Component>,
    reuse: &[Arc<Running>],
) -> Result<Vec<Arc<Running>>, ServeError> {
    let mut out = Vec::new();
    let mut fresh: Vec<Arc<Running>> = Vec::new();
    for (d, component) in deployments.into_iter().zip(components) {
        if let Some(same) = reuse
            .iter()
            .find(|r| r.spec == d && r.component.id() == component.id())
        {
            out.push(same.clone());
            continue;
        }
        match prepare(rt, d, component).await {
            Ok(r) => {
                fresh.push(r.clone());
                out.push(r);
            }
            Err(e) => {
                for r in fresh {
                    r.retire().await;
                }
                return Err(e);
            }
        }
    }
    Ok(out)
}

/// Check a deployment's component against its kind, start its replicas.
async fn prepare(
    rt: &Runtime,
    d: Deployment,
    component: Component,
) -> Result<Arc<Running>, ServeError> {
    let name = d.name.clone();
    let bad = |message: String| ServeError::Deployment {
        name: name.clone(),
        message,
    };
    match d.kind {
        Kind::Http if !component.is_http_handler() => {
            return Err(bad(format!(
                "{} does not export `{}`; kind = \"http\" needs an HTTP handler",
                d.component.display(),
                ferray::INCOMING_HANDLER
            )));
        }
        Kind::Http => {}
        Kind::Replica => replica::check(&component, &d).map_err(&bad)?,
    }
    Running::new(rt.clone(), d, component)
        .await
        .map_err(|e| bad(format!("cannot start its replicas: {e}")))
}

impl Running {
    pub(crate) fn status(&self) -> DeploymentStatus {
        let replicas = self.replicas.lock().len() as u32;
        DeploymentStatus {
            name: self.spec.name.clone(),
            route_prefix: self.spec.route_prefix.clone(),
            kind: match self.spec.kind {
                Kind::Http => "http",
                Kind::Replica => "replica",
            }
            .to_string(),
            replicas,
            ongoing_requests: self.ongoing(),
            requests: self.requests.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            replicas_started: self.started.load(Ordering::Relaxed),
            replicas_stopped: self.stopped.load(Ordering::Relaxed),
        }
    }
}
