//! The head's HTTP edge on the dashboard port (8265 by default, as Ray's):
//! the dashboard's pages (`pages.rs`, charts from `history.rs`), `/metrics`
//! in Prometheus text format (`metrics.rs`) and a jobs API shaped like
//! Ray's (`jobs.rs`, described by `docs/jobs-api.yaml`). Every request
//! carries the cluster token: as `Authorization: Bearer TOKEN` (compared in
//! constant time), or as the session cookie a browser got by giving the
//! token once to the login page (`auth.rs`). Without it an API call is a
//! 401 and a page goes to the login page. Bodies are capped, and the
//! server speaks TLS with the head's certificate when the cluster does.
//!
//! It reads and changes the head's state the way the gRPC edge does: under
//! the head's one lock, through the state machine's methods, with the
//! effects flushed after a change.

mod auth;
pub(crate) mod history;
mod jobs;
pub(crate) mod metrics;
mod pages;

pub use metrics::NodeMetrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State as AxState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ferray_core::Error;
use ferray_proto::Token;
use ferray_proto::tls::CertKey;
use ferray_proto::tls::TlsAcceptor;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;

use crate::Head;

/// The dashboard port's default (Ray's).
pub const DEFAULT_DASHBOARD_PORT: u16 = 8265;
/// The largest request body: a job with its component inline (base64).
pub const MAX_BODY_BYTES: usize = 48 << 20;
/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 256;
/// A client has this long to send a request's headers (and to finish a TLS
/// handshake).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Every route of the router, as `METHOD PATH` (axum's `{param}` syntax,
/// as OpenAPI writes it). `docs/jobs-api.yaml` lists the same (a test
/// compares them, and asks the router for each).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/jobs"),
    ("GET", "/jobs/{job}"),
    ("POST", "/jobs/{job}/stop"),
    ("GET", "/jobs/{job}/timeline.json"),
    ("GET", "/tasks"),
    ("GET", "/tasks/{task}"),
    ("GET", "/actors"),
    ("GET", "/actors/{actor}"),
    ("GET", "/nodes"),
    ("GET", "/objects"),
    ("GET", "/logs"),
    ("GET", "/static/app.js"),
    ("GET", "/static/app.css"),
    ("GET", "/metrics"),
    ("POST", "/api/jobs/"),
    ("GET", "/api/jobs/"),
    ("GET", "/api/jobs/{submission_id}"),
    ("GET", "/api/jobs/{submission_id}/logs"),
    ("POST", "/api/jobs/{submission_id}/stop"),
];

/// Why a request failed, as its status and a JSON body `{"error": ...}`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Internal(String),
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound(m) => ApiError::NotFound(m),
            Error::InvalidArgument(m) => ApiError::BadRequest(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (
            status,
            axum::Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

/// The router of the dashboard port, every route behind the token check
/// (session cookies marked `Secure` when it speaks TLS).
pub fn router(head: Head, tls: bool) -> Router {
    let auth = Arc::new(auth::Auth::new(head.config.token.clone(), tls));
    Router::new()
        .route("/", get(pages::overview))
        .route("/jobs", get(pages::jobs))
        .route("/jobs/{job}", get(pages::job))
        .route("/jobs/{job}/stop", post(pages::stop_job))
        .route("/jobs/{job}/timeline.json", get(pages::timeline))
        .route("/tasks", get(pages::tasks))
        .route("/tasks/{task}", get(pages::task))
        .route("/actors", get(pages::actors))
        .route("/actors/{actor}", get(pages::actor))
        .route("/nodes", get(pages::nodes))
        .route("/objects", get(pages::objects))
        .route("/logs", get(pages::logs))
        .route("/static/app.js", get(pages::app_js))
        .route("/static/app.css", get(pages::app_css))
        .route("/metrics", get(metrics::scrape))
        .route("/api/jobs/", post(jobs::submit).get(jobs::list))
        .route("/api/jobs/{submission_id}", get(jobs::info))
        .route("/api/jobs/{submission_id}/logs", get(jobs::logs))
        .route("/api/jobs/{submission_id}/stop", post(jobs::stop))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(head)
        // Outermost: nothing runs, not even a 404, before the token check
        // (the login page is the one thing it lets by).
        .layer(axum::middleware::from_fn_with_state(auth, auth::check))
}

async fn check_token(AxState(token): AxState<Arc<Token>>, req: Request, next: Next) -> Response {
    if req
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|h| token.admits(h.as_bytes()))
    {
        return next.run(req).await;
    }
    unauthorized()
}

/// The answer to a request without the token.
fn unauthorized() -> Response {
    let mut r = (
        StatusCode::UNAUTHORIZED,
        axum::Json(serde_json::json!({
            "error": "no or wrong cluster token: send `Authorization: Bearer TOKEN` with the head's token"
        })),
    )
        .into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

impl Head {
    /// Serve the dashboard port on `listener` until `shutdown` resolves:
    /// HTTP/1.1, over TLS with `tls` (the head's certificate) when given.
    pub async fn serve_http(
        self,
        listener: tokio::net::TcpListener,
        tls: Option<&CertKey>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        // The charts' samples are taken while the dashboard is served.
        let _sampling = history::start_sampling(self.clone());
        serve_router(router(self, tls.is_some()), listener, tls, shutdown).await
    }
}

/// A worker's own `/metrics` (the node's view, [`NodeMetrics`], read by
/// `stats` at each scrape) on `listener` until `shutdown` resolves, behind
/// the cluster token like the head's, over TLS with `tls` when given.
pub async fn serve_node_metrics(
    listener: tokio::net::TcpListener,
    token: Token,
    tls: Option<&CertKey>,
    stats: impl Fn() -> NodeMetrics + Send + Sync + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let stats = Arc::new(stats);
    let router = Router::new()
        .route(
            "/metrics",
            get(move || {
                let stats = stats.clone();
                async move { metrics::text_response(metrics::render_node(&stats())) }
            }),
        )
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(token),
            check_token,
        ));
    serve_router(router, listener, tls, shutdown).await
}

/// Serve `router` over HTTP/1.1 (TLS with `tls`) on `listener`.
async fn serve_router(
    router: Router,
    listener: tokio::net::TcpListener,
    tls: Option<&CertKey>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let acceptor = tls.map(ferray_proto::tls::https_acceptor).transpose()?;
    let service = TowerToHyperService::new(router);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            p = slots.clone().acquire_owned() => p
                .map_err(|_| Error::System("the HTTP server's slots closed".into()))?,
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait, go on.
                    tracing::warn!("an HTTP port could not accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = service.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve_connection(stream, peer, acceptor, service).await;
        });
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    service: TowerToHyperService<Router>,
) {
    let _ = stream.set_nodelay(true);
    let http = {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT);
        b
    };
    let served = match acceptor {
        Some(acceptor) => {
            match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => http.serve_connection(TokioIo::new(tls), service).await,
                Ok(Err(e)) => {
                    tracing::debug!("dashboard port: TLS handshake with {peer} failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!("dashboard port: TLS handshake with {peer} timed out");
                    return;
                }
            }
        }
        None => http.serve_connection(TokioIo::new(stream), service).await,
    };
    if let Err(e) = served {
        tracing::debug!("dashboard port: connection with {peer}: {e}");
    }
}

#[cfg(test)]
mod tests;
