//! ferray's cluster protocol: the gRPC services generated from
//! `proto/ferray.proto` (tonic, prost, compiled by protox), the cluster token
//! check every server runs before any handler, message size limits, chunked
//! transfer of objects and components, and conversions between the protocol's
//! messages and `ferray_core` types. The only crate that knows protobuf.

use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use ferray_core::{ActorOptions, Error, ObjectId, Resources, Strategy, TaskOptions};
use futures::{Stream, StreamExt};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod v1 {
    tonic::include_proto!("ferray.v1");
}

pub use tonic;

/// Metadata of an `Uploads.Push` that keeps the object until the head stops
/// (`ferray put`); without it the object belongs to its client's job.
pub const PIN_HEADER: &str = "x-ferray-pin";

mod buffers;
#[cfg(feature = "testing")]
pub mod faults;
mod pull;
pub mod tls;
mod view;
pub use pull::{ObjectSource, ObjectsClient, ObjectsService, PULL_PATH, pull};
pub use view::{
    cluster_view_from, cluster_view_to, job_event_from, job_event_to, job_info_from, job_info_to,
    serve_answer_from, serve_answer_to, serve_call_from, serve_call_to, serve_status_from,
    serve_status_to,
};

/// The protocol a worker and a client announce; the head refuses others.
pub const PROTOCOL_VERSION: u32 = 8;
/// The largest message any server or client of the cluster accepts.
pub const MAX_MESSAGE_BYTES: usize = 8 << 20;
/// Objects and components travel in chunks of this size.
pub const CHUNK_BYTES: usize = 1 << 20;
/// Objects up to this size travel inline in protocol messages.
pub const INLINE_MAX: usize = 64 << 10;
/// The largest object or component a transfer accepts.
pub const MAX_OBJECT_BYTES: u64 = 64 << 30;
/// HTTP/2 frames up to this size (fewer frames for chunk streams).
pub const MAX_FRAME_BYTES: u32 = 1 << 20;
/// How long a connection attempt may take before "unreachable".
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The cluster's shared secret.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// A token from text (surrounding whitespace is ignored).
    pub fn new(text: &str) -> Result<Token, Error> {
        let t = text.trim();
        if t.is_empty() || !t.chars().all(|c| c.is_ascii_graphic()) {
            return Err(Error::InvalidArgument(
                "a cluster token is printable ASCII without spaces".into(),
            ));
        }
        Ok(Token(t.to_string()))
    }

    /// A fresh random token (256 bits, hex).
    pub fn generate() -> Result<Token, Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| Error::System(format!("no randomness for a cluster token: {e}")))?;
        Ok(Token(hex_encode(&seed)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn header(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether an `Authorization` header's value is `Bearer TOKEN` with
    /// this token, compared in constant time.
    pub fn admits(&self, sent: &[u8]) -> bool {
        let want = self.header();
        let want = want.as_bytes();
        if sent.len() != want.len() {
            return false;
        }
        sent.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The server side: refuses a call without the cluster token before any
/// handler runs.
#[derive(Clone, Debug)]
pub struct CheckToken(pub Token);

impl Interceptor for CheckToken {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        match req.metadata().get("authorization") {
            Some(v) if self.0.admits(v.as_bytes()) => Ok(req),
            Some(_) => Err(Status::unauthenticated(
                "wrong cluster token (use --token or FERRAY_TOKEN with the head's token)",
            )),
            None => Err(Status::unauthenticated(
                "no cluster token (use --token or FERRAY_TOKEN with the head's token)",
            )),
        }
    }
}

/// The client side: adds the cluster token to every call.
#[derive(Clone, Debug)]
pub struct AddToken(pub Token);

impl Interceptor for AddToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let v = self
            .0
            .header()
            .parse()
            .map_err(|_| Status::internal("the cluster token is not a valid header"))?;
        req.metadata_mut().insert("authorization", v);
        Ok(req)
    }
}

/// 128 random bits as hex (a request's own key), or, without randomness,
/// this process and the time.
pub fn random_key() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = (t ^ (u128::from(std::process::id()) << 96)).to_le_bytes();
    }
    hex_encode(&b)
}

pub type Authed = InterceptedService<Faulty, AddToken>;

/// Every client's channel. With the `testing` feature and
/// `FERRAY_TESTING_RPC_FAILURE` or `FERRAY_TESTING_RPC_DELAY_MS` set, calls
/// fail before or after their server handled them, and wait, at random
/// ([`faults`]); otherwise (and always in a release build) it is the
/// channel itself.
#[derive(Clone)]
pub struct Faulty {
    inner: Channel,
    #[cfg(feature = "testing")]
    faults: Option<std::sync::Arc<faults::Faults>>,
}

impl std::fmt::Debug for Faulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl Faulty {
    fn new(inner: Channel) -> Faulty {
        Faulty {
            inner,
            #[cfg(feature = "testing")]
            faults: faults::Faults::from_env().map(std::sync::Arc::new),
        }
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Faulty {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        #[cfg(feature = "testing")]
        if let Some(f) = self.faults.clone() {
            // `/ferray.v1.Head/Locate` is `Head.Locate`. Opening a session
            // is spared: a session is resumed by opening one.
            let path = req.uri().path().trim_start_matches('/');
            let (service, method) = path.split_once('/').unwrap_or((path, ""));
            let service = service.rsplit('.').next().unwrap_or(service).to_string();
            if !(service == "Head" && method == "Session") {
                let fault = f.on_call(&service, method);
                let delay = f.delay();
                let what = format!("{service}.{method}");
                if let Some(fault) = fault {
                    tracing::info!("testing: injecting a {fault:?} failure into {what}");
                }
                let lost = move |when: &str| {
                    Status::unavailable(format!("testing: {what} failed {when}")).into_http()
                };
                return match fault {
                    Some(faults::Fault::Request) => Box::pin(async move {
                        tokio::time::sleep(delay).await;
                        Ok(lost("before it was sent"))
                    }),
                    Some(faults::Fault::Response) => {
                        let call = tower::Service::call(&mut self.inner, req);
                        Box::pin(async move {
                            tokio::time::sleep(delay).await;
                            // Handled (or streaming), then the answer is lost.
                            let _ = call.await;
                            Ok(lost("after its server had it"))
                        })
                    }
                    None => {
                        let call = tower::Service::call(&mut self.inner, req);
                        Box::pin(async move {
                            tokio::time::sleep(delay).await;
                            call.await
                        })
                    }
                };
            }
        }
        Box::pin(tower::Service::call(&mut self.inner, req))
    }
}
pub type HeadClient = v1::head_client::HeadClient<Authed>;
pub type UploadsClient = v1::uploads_client::UploadsClient<Authed>;
pub type ActorsClient = v1::actors_client::ActorsClient<Authed>;

/// The `http://` URI of `host:port` (a bare address gets the scheme).
pub fn uri(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// `host:port` of an address, without its scheme.
pub fn host_port(addr: &str) -> &str {
    addr.trim_start_matches("http://")
        .trim_start_matches("https://")
}

/// A channel to `addr`, connected now: an unreachable address is an error
/// within [`CONNECT_TIMEOUT`]. The connection is TLS when this process's
/// setting says so ([`tls::install`]) or `addr` is `https://`, and the
/// peer's certificate is checked against the cluster's CA.
///
/// Boxed, so that its future is `Send` wherever it is awaited (tonic's
/// connect future borrows its endpoint, which spawned callers cannot
/// always prove `Send` for).
pub fn connect(
    addr: &str,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Channel, Error>> + Send + 'static>> {
    let addr = addr.to_string();
    Box::pin(async move { connect_to(&addr).await })
}

async fn connect_to(addr: &str) -> Result<Channel, Error> {
    let hp = host_port(addr);
    let host = hp.rsplit_once(':').map_or(hp, |(h, _)| h);
    let tls = tls::client_tls(addr, host)?;
    let target = match tls {
        Some(_) => format!("https://{hp}"),
        None => uri(addr),
    };
    let mut ep = Endpoint::from_shared(target)
        .map_err(|e| Error::InvalidArgument(format!("`{addr}` is not an address: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(2))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(32 << 20))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    if let Some(t) = tls {
        ep = ep
            .tls_config(t)
            .map_err(|e| Error::InvalidArgument(format!("TLS for {addr}: {e}")))?;
    }
    match tokio::time::timeout(CONNECT_TIMEOUT + Duration::from_secs(1), ep.connect()).await {
        Ok(Ok(ch)) => Ok(ch),
        Ok(Err(e)) => {
            let chain = source_chain(&e);
            Err(match tls::explain_handshake(addr, &chain) {
                Some(line) => Error::InvalidArgument(line),
                None => Error::System(format!("cannot reach {addr}: {chain}")),
            })
        }
        Err(_) => Err(Error::System(format!(
            "cannot reach {addr}: no answer within {}s",
            CONNECT_TIMEOUT.as_secs() + 1
        ))),
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

pub fn head_client(ch: Channel, token: &Token) -> HeadClient {
    v1::head_client::HeadClient::with_interceptor(Faulty::new(ch), AddToken(token.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

pub fn objects_client(ch: Channel, token: &Token) -> ObjectsClient {
    ObjectsClient(InterceptedService::new(
        Faulty::new(ch),
        AddToken(token.clone()),
    ))
}

pub type CollectiveClient = v1::collective_client::CollectiveClient<Authed>;

pub fn collective_client(ch: Channel, token: &Token) -> CollectiveClient {
    v1::collective_client::CollectiveClient::with_interceptor(
        Faulty::new(ch),
        AddToken(token.clone()),
    )
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// A server of `Collective` (all-reduce parts) behind the token check.
pub fn collective_server<T: v1::collective_server::Collective>(
    svc: T,
    token: &Token,
) -> InterceptedService<v1::collective_server::CollectiveServer<T>, CheckToken> {
    InterceptedService::new(
        v1::collective_server::CollectiveServer::new(svc)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        CheckToken(token.clone()),
    )
}

pub fn actors_client(ch: Channel, token: &Token) -> ActorsClient {
    v1::actors_client::ActorsClient::with_interceptor(Faulty::new(ch), AddToken(token.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

pub fn uploads_client(ch: Channel, token: &Token) -> UploadsClient {
    v1::uploads_client::UploadsClient::with_interceptor(Faulty::new(ch), AddToken(token.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// A gRPC server with ferray's transport settings (no Nagle delay, large
/// flow-control windows and frames for chunk streams), speaking TLS with
/// this process's certificate when it has one ([`tls::install`]).
pub fn server() -> tonic::transport::Server {
    let b = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(32 << 20))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    match tls::server_tls() {
        // `tls::install` built this configuration once already.
        Some(cfg) => b
            .tls_config(cfg)
            .expect("a TLS configuration checked by tls::install"),
        None => b,
    }
}

/// Connections accepted on `listener`, with Nagle's algorithm off (the
/// server's own setting does not reach sockets of a given listener).
pub fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// A server of `Head` behind the token check, with the message limits.
pub fn head_server<T: v1::head_server::Head>(
    svc: T,
    token: &Token,
) -> InterceptedService<v1::head_server::HeadServer<T>, CheckToken> {
    InterceptedService::new(
        v1::head_server::HeadServer::new(svc)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        CheckToken(token.clone()),
    )
}

/// The `Objects` service over `source`, behind the token check (its
/// requests and messages are bounded in `pull.rs`).
pub fn objects_server(
    source: impl ObjectSource,
    token: &Token,
) -> InterceptedService<ObjectsService, CheckToken> {
    InterceptedService::new(ObjectsService::new(source), CheckToken(token.clone()))
}

/// A server of `Actors` (direct calls) behind the token check, with the
/// message limits.
pub fn actors_server<T: v1::actors_server::Actors>(
    svc: T,
    token: &Token,
) -> InterceptedService<v1::actors_server::ActorsServer<T>, CheckToken> {
    InterceptedService::new(
        v1::actors_server::ActorsServer::new(svc)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        CheckToken(token.clone()),
    )
}

/// A server of `Uploads` behind the token check, with the message limits.
pub fn uploads_server<T: v1::uploads_server::Uploads>(
    svc: T,
    token: &Token,
) -> InterceptedService<v1::uploads_server::UploadsServer<T>, CheckToken> {
    InterceptedService::new(
        v1::uploads_server::UploadsServer::new(svc)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        CheckToken(token.clone()),
    )
}

// ----- batching -----

/// A batch stays below this many encoded bytes (a single message may be
/// larger, up to [`MAX_MESSAGE_BYTES`]: about 2 MiB of inline arguments, or
/// 2 MiB of captured output).
pub const BATCH_BYTES: usize = 2 << 20;

/// An upward message as it may be sent: one whose encoded size is past
/// [`MAX_MESSAGE_BYTES`] (less room for its batch) would end the session,
/// so a task's oversized `Done` becomes that task's error instead. Every
/// other message is bounded where it is made (names, inline arguments and
/// error messages are capped): `None` for one that still is not, after
/// saying so in the log.
pub fn fit_up(msg: v1::up::Msg) -> Option<v1::up::Msg> {
    const MAX: usize = MAX_MESSAGE_BYTES - (64 << 10);
    // The oneof's own size; the `Up` around it adds a tag and a length.
    let len = msg.encoded_len() + 16;
    if len <= MAX {
        return Some(msg);
    }
    match msg {
        v1::up::Msg::Done(d) => {
            let e = Error::Other(format!(
                "the task's result, output and result text take {len} bytes, more than the \
                 {MAX} bytes one message may carry"
            ));
            Some(v1::up::Msg::Done(v1::Done {
                task: d.task,
                attempt: d.attempt,
                result: Some(v1::done::Result::Err(error_to(&e))),
                ..Default::default()
            }))
        }
        _ => {
            tracing::error!("an upward message of {len} bytes was not sent: it is too large");
            None
        }
    }
}

/// A message's encoded size in bytes (what it weighs in a session's queue;
/// the head bounds its sessions' queues by it without knowing protobuf).
pub fn encoded_len(msg: &impl prost::Message) -> usize {
    msg.encoded_len()
}

/// What is queued on `rx`, in batches: waits for one message, then takes
/// whatever else is already there, up to [`BATCH_BYTES`].
pub fn batched<T: prost::Message + Send + 'static>(
    rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl Stream<Item = Vec<T>> + Send + 'static {
    batched_lingering(rx, |_| false, Duration::ZERO)
}

/// [`batched`], except that a batch of only `lazy` messages (reports that
/// nobody waits for) waits up to `linger` for more before it goes: a
/// stream of small reports costs a frame and a wake-up per `linger`, not
/// per report. A message that is not lazy ends the wait.
pub fn batched_lingering<T, F>(
    rx: tokio::sync::mpsc::UnboundedReceiver<T>,
    lazy: F,
    linger: Duration,
) -> impl Stream<Item = Vec<T>> + Send + 'static
where
    T: prost::Message + Send + 'static,
    F: Fn(&T) -> bool + Send + Sync + 'static,
{
    let lazy = std::sync::Arc::new(lazy);
    // The state keeps a message that did not fit for the next batch.
    futures::stream::unfold((rx, None::<T>), move |(mut rx, held)| {
        let lazy = lazy.clone();
        async move {
            let first = match held {
                Some(m) => m,
                None => rx.recv().await?,
            };
            let mut bytes = first.encoded_len();
            let mut waiting = lazy(&first);
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + linger;
            loop {
                let m = match rx.try_recv() {
                    Ok(m) => m,
                    Err(_) if waiting && !linger.is_zero() => {
                        match tokio::time::timeout_at(deadline, rx.recv()).await {
                            Ok(Some(m)) => m,
                            _ => break,
                        }
                    }
                    Err(_) => break,
                };
                let len = m.encoded_len();
                if bytes + len > BATCH_BYTES {
                    return Some((batch, (rx, Some(m))));
                }
                waiting &= lazy(&m);
                bytes += len;
                batch.push(m);
            }
            Some((batch, (rx, None)))
        }
    })
}

/// A session's downward stream, one message at a time.
pub type DownStream = Pin<Box<dyn Stream<Item = Result<v1::Down, Status>> + Send + 'static>>;

/// Flatten a stream of batches.
pub fn unbatch_down(s: tonic::Streaming<v1::DownBatch>) -> DownStream {
    Box::pin(s.flat_map(|b| {
        let items: Vec<Result<v1::Down, Status>> = match b {
            Ok(b) => b.msgs.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(items)
    }))
}

// ----- errors -----

/// A gRPC status as ferray's error: refused credentials and unreachable
/// peers keep their meaning; everything else is a fault of the system.
pub fn from_status(what: &str, s: Status) -> Error {
    use tonic::Code;
    match s.code() {
        Code::Unauthenticated => Error::InvalidArgument(format!(
            "{what}: the cluster refused the credentials: {}",
            s.message()
        )),
        Code::NotFound => Error::NotFound(format!("{what}: {}", s.message())),
        Code::InvalidArgument => Error::InvalidArgument(format!("{what}: {}", s.message())),
        Code::FailedPrecondition => Error::InvalidArgument(format!("{what}: {}", s.message())),
        Code::DataLoss => Error::Corrupt {
            id: s.message().to_string(),
        },
        // With the transport's own reason ("http2 error" alone says little).
        Code::Unavailable => Error::System(format!("{what}: unreachable: {}", source_chain(&s))),
        _ => Error::System(format!("{what}: {}", s.message())),
    }
}

/// Ferray's error as a gRPC status (for unary replies).
pub fn to_status(e: &Error) -> Status {
    use tonic::Code;
    let code = match e {
        Error::NotFound(_) => Code::NotFound,
        Error::InvalidArgument(_) => Code::InvalidArgument,
        Error::Corrupt { .. } => Code::DataLoss,
        Error::Infeasible(_) => Code::ResourceExhausted,
        _ => Code::Internal,
    };
    Status::new(code, e.to_string())
}

/// Bytes of an error's message that travel; the rest is cut (a guest's
/// trap message or backtrace cannot make a message too large to send).
pub const MAX_ERROR_MESSAGE: usize = 64 << 10;

pub fn error_to(e: &Error) -> v1::Error {
    let mut message = e.message();
    ferray_core::cut_text(&mut message, MAX_ERROR_MESSAGE);
    v1::Error {
        kind: e.kind().to_string(),
        message,
    }
}

pub fn error_from(e: Option<v1::Error>) -> Error {
    match e {
        Some(e) => Error::from_kind(&e.kind, e.message),
        None => Error::System("a peer sent an error without a kind".into()),
    }
}

// ----- ids -----

pub fn object_id(bytes: &[u8]) -> Result<ObjectId, Error> {
    let arr: [u8; 32] = bytes.try_into().map_err(|_| {
        Error::InvalidArgument(format!("an object id is 32 bytes, got {}", bytes.len()))
    })?;
    Ok(ObjectId::from_bytes(arr))
}

pub fn id_bytes(id: &ObjectId) -> Bytes {
    Bytes::copy_from_slice(id.as_bytes())
}

/// An object id from hex text.
pub fn parse_object_id(s: &str) -> Result<ObjectId, Error> {
    ObjectId::from_str(s.trim_start_matches("obj-"))
        .map_err(|_| Error::InvalidArgument(format!("`{s}` is not an object id (64 hex digits)")))
}

// ----- resources and options -----

pub fn resources_to(r: &Resources) -> v1::Resources {
    v1::Resources {
        cpus: r.num_cpus(),
        gpus: r.num_gpus(),
        memory: r.memory(),
        custom: r.custom().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}

pub fn resources_from(r: Option<v1::Resources>) -> Result<Resources, Error> {
    let r = r.unwrap_or_default();
    let mut out = Resources::default()
        .with_cpus(r.cpus)?
        .with_gpus(r.gpus)?
        .with_memory(r.memory);
    for (k, v) in &r.custom {
        out = out.with_custom(k, *v)?;
    }
    Ok(out)
}

fn strategy_to(s: Strategy) -> Option<v1::Strategy> {
    use v1::strategy::Kind;
    let kind = match s {
        Strategy::Default => return None,
        Strategy::Spread => Kind::Spread(true),
        Strategy::Node { node, soft } => Kind::Node(v1::NodeAffinity { node, soft }),
    };
    Some(v1::Strategy { kind: Some(kind) })
}

fn strategy_from(s: Option<v1::Strategy>) -> Strategy {
    use v1::strategy::Kind;
    match s.and_then(|s| s.kind) {
        None | Some(Kind::Spread(false)) => Strategy::Default,
        Some(Kind::Spread(true)) => Strategy::Spread,
        Some(Kind::Node(n)) => Strategy::Node {
            node: n.node,
            soft: n.soft,
        },
    }
}

fn ms(d: Option<Duration>) -> Option<u64> {
    d.map(|d| d.as_millis().min(u64::MAX as u128) as u64)
}

pub fn task_options_to(o: &TaskOptions) -> v1::TaskOptions {
    v1::TaskOptions {
        resources: Some(resources_to(&o.resources)),
        max_retries: o.max_retries,
        retry_exceptions: o.retry_exceptions,
        timeout_ms: ms(o.timeout),
        fuel: o.fuel,
        strategy: strategy_to(o.strategy),
    }
}

pub fn task_options_from(o: Option<v1::TaskOptions>) -> Result<TaskOptions, Error> {
    let o = o.unwrap_or_default();
    Ok(TaskOptions {
        resources: resources_from(o.resources)?,
        max_retries: o.max_retries,
        retry_exceptions: o.retry_exceptions,
        timeout: o.timeout_ms.map(Duration::from_millis),
        fuel: o.fuel,
        strategy: strategy_from(o.strategy),
    })
}

pub fn actor_options_to(o: &ActorOptions) -> v1::ActorOptions {
    v1::ActorOptions {
        resources: Some(resources_to(&o.resources)),
        max_restarts: o.max_restarts,
        timeout_ms: ms(o.timeout),
        fuel: o.fuel,
        strategy: strategy_to(o.strategy),
        group: o.group.as_ref().map(|g| v1::GroupMember {
            group: g.group.clone(),
            rank: g.rank,
            world_size: g.world_size,
        }),
    }
}

pub fn actor_options_from(o: Option<v1::ActorOptions>) -> Result<ActorOptions, Error> {
    let o = o.unwrap_or_default();
    Ok(ActorOptions {
        resources: resources_from(o.resources)?,
        max_restarts: o.max_restarts,
        timeout: o.timeout_ms.map(Duration::from_millis),
        fuel: o.fuel,
        strategy: strategy_from(o.strategy),
        group: o
            .group
            .map(|g| ferray_core::GroupMember::new(g.group, g.rank, g.world_size))
            .transpose()?,
    })
}

// ----- chunked transfers -----

pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<v1::Chunk, Status>> + Send + 'static>>;

/// `bytes` as chunks of [`CHUNK_BYTES`] (no copy: each chunk is a slice).
pub fn chunks(id: ObjectId, bytes: Bytes) -> impl Stream<Item = v1::Chunk> + Send + 'static {
    futures::stream::iter(chunk_iter(id, bytes))
}

/// The chunks of `bytes`, in order (at least one, empty for an empty object).
fn chunk_iter(id: ObjectId, bytes: Bytes) -> impl Iterator<Item = v1::Chunk> + Send + 'static {
    let total = bytes.len() as u64;
    let idb = id_bytes(&id);
    let n = bytes.len().div_ceil(CHUNK_BYTES).max(1);
    (0..n).map(move |i| {
        let start = i * CHUNK_BYTES;
        let end = (start + CHUNK_BYTES).min(bytes.len());
        v1::Chunk {
            id: idb.clone(),
            total,
            offset: start as u64,
            data: bytes.slice(start..end),
        }
    })
}

/// Reassemble a chunked transfer and check it against its id (`expect`, or
/// the id the chunks name). Out-of-order or overlong chunks, a size past
/// `max`, and bytes that do not hash to the id are errors; the bytes are
/// never returned then.
pub async fn assemble<S>(
    mut stream: S,
    expect: Option<ObjectId>,
    max: u64,
) -> Result<(ObjectId, Bytes), Error>
where
    S: Stream<Item = Result<v1::Chunk, Status>> + Unpin,
{
    let mut asm = pull::Assembler::new(expect, max);
    while let Some(chunk) = stream.next().await {
        let c = chunk.map_err(|s| from_status("transfer", s))?;
        asm.begin(Some(&c.id), c.total, c.offset, c.data.len())?;
        asm.data(&c.data);
    }
    asm.finish()
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn an_oversized_done_becomes_the_tasks_error() {
        let done = v1::Done {
            task: 7,
            attempt: 2,
            stdout: Bytes::from(vec![b'x'; MAX_MESSAGE_BYTES]),
            ..Default::default()
        };
        let Some(v1::up::Msg::Done(d)) = fit_up(v1::up::Msg::Done(done)) else {
            panic!("a Done stays a Done");
        };
        assert_eq!((d.task, d.attempt), (7, 2));
        assert!(d.stdout.is_empty());
        let Some(v1::done::Result::Err(e)) = d.result else {
            panic!("the task fails");
        };
        assert!(e.message.contains("more than"), "{}", e.message);
        // A small one is sent as it is.
        let small = v1::up::Msg::Done(v1::Done {
            task: 1,
            stdout: Bytes::from_static(b"hi"),
            ..Default::default()
        });
        assert_eq!(fit_up(small.clone()), Some(small));
    }

    #[test]
    fn error_messages_are_cut_to_what_may_travel() {
        let e = error_to(&Error::Trap("é".repeat(MAX_ERROR_MESSAGE)));
        assert!(e.message.len() <= MAX_ERROR_MESSAGE + 8);
        assert!(e.message.ends_with("[cut]"));
        assert_eq!(e.kind, "trap");
    }
}
