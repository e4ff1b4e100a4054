//! A worker node's proxy, for a cluster application deployed with
//! `proxy_location = "EveryNode"` (Ray's `EveryNode`): it follows the
//! head's status, listens at the application's host and port on its own
//! machine while the application asks for it, and hands each request,
//! whole, to the head's application ([`Upstream::call`]), which routes it to
//! a replica as its own proxy would: one place counts every request, so the
//! replicas' limits and the autoscaler see all of them.

use std::sync::Arc;
use std::time::Duration;

use ferray::{Error, HttpRequest, HttpResponse};
use ferray_core::view::ServeStatus;
use futures::future::BoxFuture;
use http::{StatusCode, header};
use tokio::sync::watch;

use crate::proxy::{self, Answer, Handler, text};

/// How often a node asks the head what its application is.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// The head's side, as a node's proxy reaches it.
pub trait Upstream: Send + Sync + 'static {
    /// The cluster's application (`ferray serve status`).
    fn status(&self) -> BoxFuture<'static, Result<ServeStatus, Error>>;
    /// A request to one of its deployments.
    fn call(
        &self,
        deployment: String,
        request: HttpRequest,
    ) -> BoxFuture<'static, Result<HttpResponse, Error>>;
}

/// A node proxy that listens.
struct Listening {
    /// Host, port, and whether it takes requests without the token.
    at: (String, u16, bool),
    table: watch::Sender<Arc<ServeStatus>>,
    stop: watch::Sender<bool>,
}

/// Follow the head's application until `stop` resolves: a proxy on this
/// node while it asks for one on every node, behind `guard` (the node's
/// TLS and the cluster token). `listening` is told each address the proxy
/// listens on.
pub async fn follow(
    upstream: Arc<dyn Upstream>,
    guard: crate::Guard,
    listening: impl Fn(&str) + Send + Sync + 'static,
    stop: impl std::future::Future<Output = ()> + Send,
) {
    tokio::pin!(stop);
    let mut running: Option<Listening> = None;
    let mut tick = tokio::time::interval(FOLLOW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => break,
        }
        let status = match upstream.status().await {
            Ok(s) => s,
            // The head away for a moment: keep what runs.
            Err(e) => {
                tracing::debug!("serve: cannot ask the head for its application: {e}");
                continue;
            }
        };
        let wanted = (status.every_node && !status.proxy.is_empty())
            .then(|| (status.http_host.clone(), status.http_port, status.public));
        match (&running, wanted) {
            (Some(l), Some(at)) if l.at == at => {
                let _ = l.table.send(Arc::new(status));
            }
            (_, Some(at)) => {
                if let Some(l) = running.take() {
                    let _ = l.stop.send(true);
                }
                let address = format!("{}:{}", at.0, at.1);
                match tokio::net::TcpListener::bind(&address).await {
                    Ok(listener) => {
                        let guard = guard.for_app(at.2);
                        let url = listener
                            .local_addr()
                            .map_or_else(|_| address.clone(), |a| guard.url(a));
                        let (table, tables) = watch::channel(Arc::new(status));
                        let (stop_tx, stopped) = watch::channel(false);
                        let handler = forwarder(upstream.clone(), tables);
                        tokio::spawn(proxy::accept(listener, handler, guard, stopped));
                        tracing::info!("serve: this node's proxy listens on {url}");
                        listening(&url);
                        running = Some(Listening {
                            at,
                            table,
                            stop: stop_tx,
                        });
                    }
                    Err(e) => {
                        tracing::warn!("serve: this node's proxy cannot listen on {address}: {e}")
                    }
                }
            }
            (Some(_), None) => {
                if let Some(l) = running.take() {
                    tracing::info!("serve: this node's proxy stops");
                    let _ = l.stop.send(true);
                }
            }
            (None, None) => {}
        }
    }
    if let Some(l) = running {
        let _ = l.stop.send(true);
    }
}

/// Whether `e` says the deployment had no room (the proxy's 503).
pub(crate) fn is_capacity(e: &Error) -> bool {
    matches!(e, Error::Other(m) if m.contains(crate::proxy::AT_CAPACITY))
}

fn forwarder(upstream: Arc<dyn Upstream>, tables: watch::Receiver<Arc<ServeStatus>>) -> Handler {
    Arc::new(move |req| {
        let (upstream, table) = (upstream.clone(), tables.borrow().clone());
        Box::pin(async move { forward(upstream, table, req).await })
    })
}

async fn forward(
    upstream: Arc<dyn Upstream>,
    table: Arc<ServeStatus>,
    req: http::Request<hyper::body::Incoming>,
) -> Answer {
    let path = req.uri().path().to_string();
    if path == "/-/healthz" {
        return text(StatusCode::OK, "success".into());
    }
    let Some(deployment) = table
        .deployments
        .iter()
        .filter(|d| proxy::under(&path, &d.route_prefix))
        .max_by_key(|d| d.route_prefix.len())
        .map(|d| d.name.clone())
    else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no deployment serves {path}\n"),
        );
    };
    // (Whole through the head: at most what one of its messages carries.)
    let limit = table
        .max_request_body
        .min(ferray_core::http::MAX_FORWARDED_BODY as u64);
    let req = match proxy::limit_body(req, limit).await {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    let request = match proxy::read_request(req).await {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    let call = upstream.call(deployment.clone(), request);
    let result = match table.request_timeout_ms {
        0 => call.await,
        ms => match tokio::time::timeout(Duration::from_millis(ms), call).await {
            Ok(r) => r,
            Err(_) => Err(Error::TimeLimit(format!(
                "the request took longer than {ms} ms (request_timeout_s)"
            ))),
        },
    };
    match result.and_then(proxy::to_answer) {
        Ok(answer) => answer,
        Err(e) if is_capacity(&e) => {
            let mut r = text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"));
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            r
        }
        Err(e) => {
            let status = match &e {
                Error::NotFound(_) => StatusCode::NOT_FOUND,
                Error::TimeLimit(_) => StatusCode::REQUEST_TIMEOUT,
                Error::InvalidArgument(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let full = e.to_string();
            tracing::warn!(deployment = %deployment, "a request failed: {full}");
            let first = full.lines().next().unwrap_or_default();
            text(
                status,
                format!("deployment {deployment:?} failed: {first}\n"),
            )
        }
    }
}
