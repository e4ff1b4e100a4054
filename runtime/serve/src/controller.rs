//! The serve controller a cluster's head process runs (`ferray serve
//! deploy|status|delete`): one application at a time, its proxy on the
//! head's machine, its replicas on the cluster. It is a client of the
//! cluster like any driver (`Runtime::connect`, connected on the first
//! deploy): a stateful replica is an actor placed by the head's scheduler
//! with the deployment's resources, a stateless deployment's request a task
//! on whichever node the scheduler picks; the autoscalers run here, beside
//! the proxy. Deploying again is a rolling update ([`Server::roll`]).

use std::path::Path;

use ferray::{Error, Runtime};
use ferray_core::view::{ServeApp, ServeStatus};

use crate::{App, ServeError, Server};

/// The head's serve controller.
pub struct Controller {
    address: String,
    token: String,
    /// Its proxy's TLS and token, as the cluster's.
    guard: crate::Guard,
    rt: tokio::sync::Mutex<Option<Runtime>>,
    /// The running application; held while one is deployed or deleted.
    app: tokio::sync::Mutex<Option<Server>>,
    /// Its deployments, for guests' calls (without waiting on a deploy).
    router: parking_lot::Mutex<Option<std::sync::Arc<dyn ferray::ServeRouter>>>,
}

fn to_error(e: ServeError) -> Error {
    match e {
        ServeError::Listen { .. } => Error::System(e.to_string()),
        other => Error::InvalidArgument(other.to_string()),
    }
}

impl Controller {
    /// A controller for the cluster whose head is at `address`; its
    /// proxies are behind `guard`.
    pub fn new(address: String, token: String, guard: crate::Guard) -> Controller {
        Controller {
            address,
            token,
            guard,
            rt: Default::default(),
            app: Default::default(),
            router: Default::default(),
        }
    }

    async fn runtime(&self) -> Result<Runtime, Error> {
        let mut rt = self.rt.lock().await;
        if let Some(rt) = rt.as_ref() {
            return Ok(rt.clone());
        }
        let connected = Runtime::builder()
            .token(&self.token)
            .connect(&self.address)
            .await?;
        *rt = Some(connected.clone());
        Ok(connected)
    }

    /// Deploy `app`: start it, or roll the running one over to it.
    pub async fn deploy(&self, app: ServeApp) -> Result<ServeStatus, Error> {
        self.deploy_if(app, true).await
    }

    /// Deploy `app` if no application runs (a restarted head's again);
    /// else the running one's status.
    pub async fn restore(&self, app: ServeApp) -> Result<ServeStatus, Error> {
        self.deploy_if(app, false).await
    }

    async fn deploy_if(&self, app: ServeApp, over_running: bool) -> Result<ServeStatus, Error> {
        let mut parsed = App::parse(&app.origin, &app.text, Path::new("."))
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        if !app.proxy_location.is_empty() {
            parsed.http.proxy_location =
                app.proxy_location.parse().map_err(Error::InvalidArgument)?;
        }
        let mut running = self.app.lock().await;
        if running.is_some() && !over_running {
            return Ok(status_of(running.as_ref()));
        }
        let rt = self.runtime().await?;
        let mut components = Vec::new();
        for d in &parsed.deployments {
            let bytes = app.components.get(&d.name).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "deployment {:?}: its component was not sent",
                    d.name
                ))
            })?;
            let c = rt.load_bytes(bytes).await.map_err(|e| {
                Error::InvalidArgument(format!(
                    "deployment {:?}: cannot load {}: {e}",
                    d.name,
                    d.component.display()
                ))
            })?;
            components.push(c);
        }
        match running.as_ref() {
            Some(server) => server
                .roll(&rt, parsed, components)
                .await
                .map_err(to_error)?,
            None => {
                let server = crate::start_loaded(&rt, parsed, components, &self.guard)
                    .await
                    .map_err(to_error)?;
                tracing::info!("serve: the application listens on {}", server.url());
                *self.router.lock() = Some(server.router());
                *running = Some(server);
            }
        }
        Ok(status_of(running.as_ref()))
    }

    /// A guest's request to a deployment of the running application (a
    /// cluster node's `deployments.call`, through the head).
    pub fn call(
        &self,
        deployment: String,
        request: ferray::HttpRequest,
    ) -> futures::future::BoxFuture<'static, Result<ferray::HttpResponse, Error>> {
        let router = self.router.lock().clone();
        match router {
            Some(r) => r.call(deployment, request),
            None => Box::pin(async move {
                Err(Error::NotFound(format!(
                    "no serve application runs on the cluster to take a call to deployment \
                     {deployment:?}"
                )))
            }),
        }
    }

    /// The running application's proxy and deployments (none: empty).
    pub async fn status(&self) -> ServeStatus {
        status_of(self.app.lock().await.as_ref())
    }

    /// Stop the application: its proxy, autoscalers and replicas. What it
    /// was, before it stopped.
    pub async fn delete(&self) -> ServeStatus {
        let mut running = self.app.lock().await;
        let before = status_of(running.as_ref());
        *self.router.lock() = None;
        if let Some(server) = running.take() {
            server.shutdown();
        }
        // The client leaves the cluster: its job ends, and the head forgets
        // the application's tasks and actors (the next deploy connects anew).
        if let Some(rt) = self.rt.lock().await.take() {
            tokio::task::spawn_blocking(move || drop(rt));
        }
        before
    }
}

impl Controller {
    /// The head process stops: the application stops and the client
    /// leaves the cluster now, while the head still answers (call it
    /// outside an async context: the client's runtime is dropped here).
    pub fn close(&self) {
        *self.router.lock() = None;
        if let Ok(mut app) = self.app.try_lock()
            && let Some(server) = app.take()
        {
            server.shutdown();
        }
        let rt = self.rt.try_lock().ok().and_then(|mut rt| rt.take());
        drop(rt);
    }
}

fn status_of(server: Option<&Server>) -> ServeStatus {
    match server {
        Some(s) => {
            let http = s.http();
            ServeStatus {
                proxy: s.url().to_string(),
                deployments: s.status(),
                every_node: http.proxy_location == crate::ProxyLocation::EveryNode,
                http_host: http.host.clone(),
                http_port: http.port,
                request_timeout_ms: http
                    .request_timeout
                    .map_or(0, |t| t.as_millis().max(1) as u64),
                max_request_body: http.max_request_body,
                public: http.public,
            }
        }
        None => ServeStatus::default(),
    }
}
