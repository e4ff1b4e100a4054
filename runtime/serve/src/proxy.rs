//! The HTTP proxy: HTTP/1.1 with keep-alive (hyper), routing by the
//! longest matching route prefix, replica choice by the power of two
//! choices, and the answers a client can act on: 404 (no route), 413 (body
//! too large), 503 with `Retry-After` (every replica full), 408 (past the
//! request timeout), 500 (the handler failed, with why).
//!
//! Its own endpoints, as Ray's proxy has: `/-/healthz`, `/-/routes` (prefix
//! to deployment, JSON) and `/-/status` (each deployment's replicas and
//! counters, JSON).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferray::HttpBody;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::HttpOptions;
use crate::guard::Guard;
use crate::{Replica, Running, ServeError};

/// A running proxy and its deployments.
pub struct Server {
    addr: SocketAddr,
    url: String,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

struct Shared {
    http: HttpOptions,
    /// Longest route prefix first; replaced whole by a rolling update.
    routes: parking_lot::RwLock<Arc<Vec<Arc<Running>>>>,
    /// A rolling update at a time.
    rolling: tokio::sync::Mutex<()>,
    stopped: watch::Receiver<bool>,
}

impl Shared {
    fn routes(&self) -> Arc<Vec<Arc<Running>>> {
        self.routes.read().clone()
    }

    /// Serve `routes` from now on; their autoscalers start.
    fn set_routes(&self, mut routes: Vec<Arc<Running>>) -> Arc<Vec<Arc<Running>>> {
        routes.sort_by_key(|r| std::cmp::Reverse(r.spec.route_prefix.len()));
        let old = self.routes();
        for r in &routes {
            let known = old.iter().any(|o| Arc::ptr_eq(o, r));
            if !known && r.scaler.lock().is_some() {
                tokio::spawn(autoscale(r.clone(), self.stopped.clone()));
            }
        }
        std::mem::replace(&mut *self.routes.write(), Arc::new(routes))
    }
}

pub(crate) type Answer = Response<HttpBody>;

impl Server {
    /// Listen on the proxy's address (before any replica starts, so that
    /// an address in use costs nothing).
    pub(crate) async fn bind(http: &HttpOptions) -> Result<TcpListener, ServeError> {
        let address = format!("{}:{}", http.host, http.port);
        TcpListener::bind(&address)
            .await
            .map_err(|e| ServeError::Listen {
                address: address.clone(),
                message: e.to_string(),
            })
    }

    pub(crate) fn start(
        http: HttpOptions,
        listener: TcpListener,
        guard: &Guard,
        routes: Vec<Arc<Running>>,
    ) -> Result<Server, ServeError> {
        let address = format!("{}:{}", http.host, http.port);
        let addr = listener.local_addr().map_err(|e| ServeError::Listen {
            address,
            message: e.to_string(),
        })?;
        let (stop, stopped) = watch::channel(false);
        let guard = guard.for_app(http.public);
        let url = guard.url(addr);
        let shared = Arc::new(Shared {
            http,
            routes: Default::default(),
            rolling: Default::default(),
            stopped: stopped.clone(),
        });
        shared.set_routes(routes);
        let answering = shared.clone();
        let handler: Handler = Arc::new(move |req| {
            let shared = answering.clone();
            Box::pin(async move { shared.answer(req).await })
        });
        tokio::spawn(accept(listener, handler, guard, stopped));
        Ok(Server {
            addr,
            url,
            shared,
            stop,
        })
    }

    /// Where guests' calls to this application's deployments go.
    pub fn router(&self) -> Arc<dyn ferray::ServeRouter> {
        Arc::new(Router(Arc::downgrade(&self.shared)))
    }

    /// The proxy's options, as the application file gave them.
    pub fn http(&self) -> &HttpOptions {
        &self.shared.http
    }

    /// A rolling update to `app`'s deployments (components in order): a
    /// deployment whose spec and component are unchanged keeps its
    /// replicas; the others' new replicas start first, then the proxy
    /// sends new requests to them, then the old ones drain (their ongoing
    /// requests end) and stop. No request fails for the update. The
    /// proxy's own options (`[http]`) cannot change this way.
    pub async fn roll(
        &self,
        rt: &ferray::Runtime,
        app: crate::App,
        components: Vec<ferray::Component>,
    ) -> Result<(), ServeError> {
        if app.http != self.shared.http {
            return Err(ServeError::Http(
                "the application's [http] options differ from the running one's; \
                 delete the application first to change them"
                    .into(),
            ));
        }
        let _one = self.shared.rolling.lock().await;
        let old = self.shared.routes();
        let next = crate::prepare_all(rt, app.deployments, components, &old).await?;
        let old = self.shared.set_routes(next);
        let now = self.shared.routes();
        for o in old.iter() {
            if !now.iter().any(|n| Arc::ptr_eq(n, o)) {
                tracing::info!(deployment = %o.spec.name, "the old version drains");
                let o = o.clone();
                tokio::spawn(async move { o.retire().await });
            }
        }
        Ok(())
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's URL: `https://` when it speaks TLS.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Each deployment's replicas and counters.
    pub fn status(&self) -> Vec<crate::DeploymentStatus> {
        self.shared.routes().iter().map(|r| r.status()).collect()
    }

    /// Stop accepting connections and the autoscalers, and stop the
    /// stateful replicas' actors.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
        for r in self.shared.routes().iter() {
            r.stop_replicas();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What answers each request of a proxy's connections.
pub(crate) type Handler =
    Arc<dyn Fn(Request<Incoming>) -> futures::future::BoxFuture<'static, Answer> + Send + Sync>;

/// How long a client may take to send a request's head (and, over TLS,
/// to finish its handshake).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Serve HTTP/1.1 connections from `listener` with `handler` until
/// `stopped`, behind `guard` (TLS, the token).
pub(crate) async fn accept(
    listener: TcpListener,
    handler: Handler,
    guard: Guard,
    mut stopped: watch::Receiver<bool>,
) {
    let guard = Arc::new(guard);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let (handler, guard, stop) = (handler.clone(), guard.clone(), stopped.clone());
        tokio::spawn(async move {
            let Some(tls) = guard.tls() else {
                return serve_connection(stream, handler, guard, stop).await;
            };
            match tokio::time::timeout(HEADER_TIMEOUT, tls.accept(stream)).await {
                Ok(Ok(stream)) => serve_connection(stream, handler, guard, stop).await,
                Ok(Err(e)) => tracing::debug!("serve: TLS handshake with {peer} failed: {e}"),
                Err(_) => tracing::debug!("serve: TLS handshake with {peer} timed out"),
            }
        });
    }
}

/// One connection's requests, until it ends or the proxy stops.
async fn serve_connection<S>(
    stream: S,
    handler: Handler,
    guard: Arc<Guard>,
    mut stop: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req| {
        let answer = match guard.refuses(&mut req) {
            Some(refused) => futures::future::Either::Left(std::future::ready(refused)),
            None => futures::future::Either::Right(handler(req)),
        };
        async move { Ok::<_, Infallible>(answer.await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .timer(hyper_util::rt::TokioTimer::new())
        // A client that sends no header for this long is dropped.
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    // Once the proxy stops, a connection ends after its request in flight
    // (none waits on a kept-alive one).
    let ended = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!("connection ended: {e}");
    }
}

/// The autoscaler of one deployment: every metrics interval.
async fn autoscale(running: Arc<Running>, mut stopped: watch::Receiver<bool>) {
    let interval = match &running.spec.scaling {
        crate::Scaling::Auto(a) => a.metrics_interval,
        crate::Scaling::Fixed(_) => return,
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rejected = running.rejected.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.changed() => return,
        }
        if running.is_retired() {
            return;
        }
        let now_rejected = running.rejected.load(Ordering::Relaxed);
        running
            .autoscale(Instant::now(), now_rejected.saturating_sub(rejected))
            .await;
        rejected = now_rejected;
    }
}

pub(crate) fn text(status: StatusCode, body: String) -> Answer {
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(value: &impl serde::Serialize) -> Answer {
    let mut r = text(
        StatusCode::OK,
        serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")),
    );
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// Whether `path` is under `prefix`: equal, or past it at a `/`.
pub(crate) fn under(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path == prefix
        || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// Counts a request as ongoing on its replica until its answer's body has
/// been sent (or dropped).
struct Ongoing(Arc<Replica>);

impl Drop for Ongoing {
    fn drop(&mut self) {
        self.0.ongoing.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request as a stateful replica gets it: its body read whole (up to the
/// limit), its header values as text. An answer instead when it cannot be.
pub(crate) async fn read_request(
    req: Request<Limited<Incoming>>,
) -> Result<ferray::HttpRequest, Answer> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than the limit ({e})\n"),
            ));
        }
        Err(e) => {
            return Err(text(
                StatusCode::BAD_REQUEST,
                format!("the request body could not be read: {e}\n"),
            ));
        }
    };
    Ok(ferray::HttpRequest {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.to_string()),
        headers: ferray::header_pairs(&parts.headers),
        body: body.to_vec(),
    })
}

/// `req` with its body limited to `limit` bytes; the 413 answer when it
/// declares more (what the client sends is read and dropped first, up to a
/// bound, so that it sees the answer rather than a reset connection).
pub(crate) async fn limit_body(
    req: Request<Incoming>,
    limit: u64,
) -> Result<Request<Limited<Incoming>>, Answer> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        drain(req.into_body()).await;
        return Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the limit of {limit} bytes\n"),
        ));
    }
    Ok(req.map(|b| Limited::new(b, usize::try_from(limit).unwrap_or(usize::MAX))))
}

/// Headers of the connection and the body's framing, which the proxy sets.
const FRAMING_HEADERS: [header::HeaderName; 6] = [
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
    header::UPGRADE,
    header::HeaderName::from_static("keep-alive"),
    header::HeaderName::from_static("proxy-connection"),
];

/// A stateful replica's response, checked: a valid status, valid header
/// names and values; else the replica failed.
pub(crate) fn to_answer(r: ferray::HttpResponse) -> Result<Answer, ferray::Error> {
    let (status, headers, body) = checked(r)?;
    let mut answer = Response::new(Full::new(body).map_err(|e| match e {}).boxed_unsync());
    *answer.status_mut() = status;
    *answer.headers_mut() = headers;
    Ok(answer)
}

/// A replica's response, checked: a final status (200-599), valid header
/// names and values (the framing and connection headers dropped: the
/// proxy sets them); else the replica failed.
pub(crate) fn checked(
    r: ferray::HttpResponse,
) -> Result<(StatusCode, header::HeaderMap, Bytes), ferray::Error> {
    let bad = |what: String| ferray::Error::Other(format!("the replica answered {what}"));
    // A final status; informational ones (1xx) are not an answer.
    let status = StatusCode::from_u16(r.status)
        .ok()
        .filter(|s| (200..600).contains(&s.as_u16()))
        .ok_or_else(|| bad(format!("status {}", r.status)))?;
    let mut headers = header::HeaderMap::new();
    for (name, value) in r.headers {
        let n = header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad(format!("the header name {name:?}")))?;
        // The proxy frames the body and owns the connection: what a guest
        // says of either is dropped.
        if FRAMING_HEADERS.contains(&n) {
            tracing::debug!("a replica's `{n}` header is dropped");
            continue;
        }
        let v = header::HeaderValue::from_str(&value)
            .map_err(|_| bad(format!("a bad value for the header {name:?}")))?;
        headers.append(n, v);
    }
    Ok((status, headers, Bytes::from(r.body)))
}

/// Bytes of a refused request's body read and dropped before answering.
const DRAIN_BYTES: usize = 64 << 20;

/// Read and drop a body, up to [`DRAIN_BYTES`] and 10 s.
async fn drain(mut body: Incoming) {
    let read = async {
        let mut n = 0;
        while let Some(Ok(frame)) = body.frame().await {
            n += frame.data_ref().map_or(0, |d| d.len());
            if n > DRAIN_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
}

/// Guests' calls to the deployments of a running proxy's application.
pub(crate) struct Router(std::sync::Weak<Shared>);

impl ferray::ServeRouter for Router {
    fn call(
        &self,
        deployment: String,
        request: ferray::HttpRequest,
    ) -> futures::future::BoxFuture<'static, Result<ferray::HttpResponse, ferray::Error>> {
        let shared = self.0.upgrade();
        Box::pin(async move {
            match shared {
                Some(s) => s.call(&deployment, request).await,
                None => Err(ferray::Error::NotFound(
                    "the serve application has stopped".into(),
                )),
            }
        })
    }
}

/// What a deployment that took no request for want of room says.
pub(crate) const AT_CAPACITY: &str = "is at capacity";

/// Why a deployment took no request.
enum Refused {
    /// Every replica is full (or none could start): 503.
    Full(String),
    /// A rolling update replaced it: the request goes to the new version.
    Retired,
}

/// A small pseudo-random number (the power of two choices needs no more).
fn pick(n: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    (h.finish() % n.max(1) as u64) as usize
}

impl Running {
    /// A replica with room for one more request, counted as ongoing on it:
    /// the less busy of two picked at random (power of two choices), else
    /// any with room. A deployment scaled to zero starts one (a cold start).
    async fn reserve(&self) -> Result<Ongoing, Refused> {
        let max = self.spec.max_ongoing_requests;
        if self.is_retired() {
            return Err(Refused::Retired);
        }
        let full = || {
            Refused::Full(format!(
                "deployment {:?} {AT_CAPACITY}: every replica has {max} ongoing requests \
                 (max_ongoing_requests); retry later",
                self.spec.name
            ))
        };
        if self.replicas.lock().is_empty() {
            // A cold start; another request may have made one already.
            if let Err(e) = self.grow_to(1).await {
                tracing::warn!(deployment = %self.spec.name, "cannot start a replica: {e}");
                return Err(Refused::Full(format!(
                    "deployment {:?} {AT_CAPACITY}: it has no replica and could not start one: {e}",
                    self.spec.name
                )));
            }
        }
        // Chosen and counted under the lock, so that a replica being
        // removed is never chosen after its drain has begun.
        let replicas = self.replicas.lock();
        let take = |r: &Arc<Replica>| {
            r.ongoing
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                })
                .ok()
                .map(|_| Ongoing(r.clone()))
        };
        let n = replicas.len();
        if n == 0 {
            // Retired meanwhile (its replicas went), or scaled down.
            return Err(if self.is_retired() {
                Refused::Retired
            } else {
                full()
            });
        }
        let a = pick(n);
        let b = (a + 1 + pick(n.saturating_sub(1).max(1))) % n;
        let (first, second) = {
            let (ra, rb) = (&replicas[a], &replicas[b]);
            if rb.ongoing.load(Ordering::Relaxed) < ra.ongoing.load(Ordering::Relaxed) {
                (rb, ra)
            } else {
                (ra, rb)
            }
        };
        take(first)
            .or_else(|| take(second))
            .or_else(|| replicas.iter().find_map(take))
            .ok_or_else(full)
    }
}

impl Shared {
    /// A replica of `running` for one request: of its newest version when
    /// a rolling update replaced it meanwhile.
    async fn reserve(&self, running: Arc<Running>) -> (Arc<Running>, Result<Ongoing, Refused>) {
        let mut running = running;
        let mut reserved = running.reserve().await;
        for _ in 0..3 {
            if !matches!(reserved, Err(Refused::Retired)) {
                break;
            }
            let Some(next) = self
                .routes()
                .iter()
                .find(|r| r.spec.name == running.spec.name)
                .cloned()
            else {
                break;
            };
            running = next;
            reserved = running.reserve().await;
        }
        (running, reserved)
    }

    /// A guest's request to deployment `name` (a handle's call): as the
    /// proxy would send it, whole both ways.
    async fn call(
        &self,
        name: &str,
        request: ferray::HttpRequest,
    ) -> Result<ferray::HttpResponse, ferray::Error> {
        let running = self
            .routes()
            .iter()
            .find(|r| r.spec.name == name)
            .cloned()
            .ok_or_else(|| {
                ferray::Error::NotFound(format!("the application has no deployment {name:?}"))
            })?;
        let limit = self.http.max_request_body;
        if request.body.len() as u64 > limit {
            return Err(ferray::Error::InvalidArgument(format!(
                "the request body is larger than the limit of {limit} bytes (max_request_body)"
            )));
        }
        running.requests.fetch_add(1, Ordering::Relaxed);
        let (running, reserved) = self.reserve(running).await;
        let ongoing = match reserved {
            Ok(o) => o,
            Err(Refused::Full(why)) => {
                running.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(ferray::Error::Other(why));
            }
            Err(Refused::Retired) => {
                return Err(ferray::Error::Other(format!(
                    "deployment {name:?} was removed by an update"
                )));
            }
        };
        let call = async {
            match &ongoing.0.actor {
                // Checked as the proxy checks what it sends on.
                Some(actor) => {
                    let (status, headers, body) = checked(actor.call(&running.rt, request).await?)?;
                    Ok(ferray::HttpResponse {
                        status: status.as_u16(),
                        headers: ferray::header_pairs(&headers),
                        body: body.to_vec(),
                    })
                }
                None if running.component.handles_http_here() => {
                    let response = running
                        .component
                        .handle_http(ferray::http_request(&request)?, &running.spec.options)
                        .await?;
                    ferray::read_response(response).await
                }
                None => {
                    let mut options = running.spec.options.clone();
                    options.max_retries = 0;
                    running.component.call_http(&request, options).await
                }
            }
        };
        let result = match self.http.request_timeout {
            Some(t) => tokio::time::timeout(t, call).await.unwrap_or_else(|_| {
                Err(ferray::Error::TimeLimit(format!(
                    "deployment {name:?} took longer than {t:?} (request_timeout_s)"
                )))
            }),
            None => call.await,
        };
        if result.is_err() {
            running.failed.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn answer(&self, req: Request<Incoming>) -> Answer {
        let path = req.uri().path().to_string();
        match path.as_str() {
            "/-/healthz" => return text(StatusCode::OK, "success".into()),
            "/-/routes" => {
                let routes: std::collections::BTreeMap<_, _> = self
                    .routes()
                    .iter()
                    .map(|r| (r.spec.route_prefix.clone(), r.spec.name.clone()))
                    .collect();
                return json(&routes);
            }
            "/-/status" => {
                let status: Vec<_> = self.routes().iter().map(|r| r.status()).collect();
                return json(&status);
            }
            _ => {}
        }
        let routes = self.routes();
        let Some(running) = routes
            .iter()
            .find(|r| under(&path, &r.spec.route_prefix))
            .cloned()
        else {
            let prefixes: Vec<_> = routes
                .iter()
                .map(|r| r.spec.route_prefix.as_str())
                .collect();
            return text(
                StatusCode::NOT_FOUND,
                format!(
                    "no deployment serves {path}; the routes are {}\n",
                    prefixes.join(", ")
                ),
            );
        };
        running.requests.fetch_add(1, Ordering::Relaxed);
        let req = match limit_body(req, self.http.max_request_body).await {
            Ok(r) => r,
            Err(answer) => return answer,
        };
        let (running, reserved) = self.reserve(running).await;
        let ongoing = match reserved {
            Ok(o) => o,
            Err(refused) => {
                let why = match refused {
                    Refused::Full(why) => why,
                    Refused::Retired => format!(
                        "deployment {:?} was removed by an update",
                        running.spec.name
                    ),
                };
                running.rejected.fetch_add(1, Ordering::Relaxed);
                let mut r = text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"));
                r.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
                return r;
            }
        };
        let replica = ongoing.0.clone();
        let call = async {
            match &replica.actor {
                // Compiled here: a fresh instance on this node, bodies streamed.
                None if running.component.handles_http_here() => {
                    running
                        .component
                        .handle_http(req, &running.spec.options)
                        .await
                }
                // A connected runtime: the request, whole, as a task on a
                // node the cluster's scheduler picks. Never retried (a
                // request need not be idempotent).
                None => {
                    let request = match read_request(req).await {
                        Ok(r) => r,
                        Err(answer) => return Ok(answer),
                    };
                    let mut options = running.spec.options.clone();
                    options.max_retries = 0;
                    let response = running.component.call_http(&request, options).await?;
                    to_answer(response)
                }
                Some(actor) => {
                    let request = match read_request(req).await {
                        Ok(r) => r,
                        Err(answer) => return Ok(answer),
                    };
                    let response = actor.call(&running.rt, request).await?;
                    to_answer(response)
                }
            }
        };
        let result = match self.http.request_timeout {
            Some(t) => match tokio::time::timeout(t, call).await {
                Ok(r) => r,
                Err(_) => {
                    running.failed.fetch_add(1, Ordering::Relaxed);
                    return text(
                        StatusCode::REQUEST_TIMEOUT,
                        format!("the request took longer than {t:?} (request_timeout_s)\n"),
                    );
                }
            },
            None => call.await,
        };
        match result {
            // The request stays counted on its replica until its answer's
            // body has been sent or dropped.
            Ok(response) => response.map(|body| {
                body.map_frame(move |frame| {
                    let _counted = &ongoing;
                    frame
                })
                .boxed_unsync()
            }),
            Err(e) => {
                running.failed.fetch_add(1, Ordering::Relaxed);
                // The guest stopped at its time limit, which is the
                // request's: the same answer as the proxy's own timeout.
                if let (ferray::Error::TimeLimit(_), Some(t)) = (&e, self.http.request_timeout) {
                    return text(
                        StatusCode::REQUEST_TIMEOUT,
                        format!("the request took longer than {t:?} (request_timeout_s)\n"),
                    );
                }
                let status = match &e {
                    ferray::Error::TimeLimit(_) => StatusCode::REQUEST_TIMEOUT,
                    // A request the handler's runtime could not take (no
                    // authority, a bad URI).
                    ferray::Error::InvalidArgument(_) => StatusCode::BAD_REQUEST,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                // The client gets what failed; the guest's backtrace and
                // output go to the log, not to whoever sent the request.
                let full = e.to_string();
                tracing::warn!(deployment = %running.spec.name, "a request failed: {full}");
                let first = full.lines().next().unwrap_or_default();
                text(
                    status,
                    format!("deployment {:?} failed: {first}\n", running.spec.name),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::under;

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(under("/a", "/a"));
        assert!(under("/a/b", "/a"));
        assert!(!under("/ab", "/a"));
        assert!(under("/anything", "/"));
    }
}
