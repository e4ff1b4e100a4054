//! A session with the head: how a worker or a connected client submits
//! tasks, creates and calls actors, registers puts, and learns results. One
//! `Head.Session` stream each way; submissions carry ids from the session's
//! own range, so they need no reply. Objects held elsewhere are pulled in
//! chunks from a holder and checked against their id.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use ferray_core::{
    ActorId, ActorOptions, Arg, ComponentId, Error, NodeId, ObjectId, TaskId, TaskOptions,
};
use ferray_proto::v1::{self, up};
use ferray_proto::{DownStream, HeadClient, INLINE_MAX, ObjectsClient, Token, id_bytes};
use ferray_store::ObjectStore;
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::objects::{ObjectRef, RefName};
#[cfg(feature = "testing")]
use ferray_proto::faults;

/// Argument values beyond this many bytes per call travel as objects, not
/// inside a message (the head refuses more than 2 MiB inline).
const MAX_INLINE_ARG: usize = 1 << 20;

type Pull = Shared<BoxFuture<'static, Result<Bytes, Error>>>;

/// A worker's report of what it runs, for a restarted head.
pub(crate) type Reporter = Box<
    dyn Fn(&std::collections::HashSet<u64>) -> (Vec<v1::Attempt>, Vec<v1::StartActor>)
        + Send
        + Sync,
>;

/// A message sent again to a restarted head, with the references among
/// its arguments that were pending results (resolved since, they go as
/// their objects).
struct Spec {
    msg: up::Msg,
    refs: Vec<ObjectRef>,
}

pub(crate) struct Session {
    pub head_address: String,
    pub token: Token,
    pub head: HeadClient,
    /// The session's id at the head.
    id: u64,
    /// Its hello (sent again, with `resume`, on a new stream).
    hello: v1::Hello,
    /// How long the head keeps the session when its stream breaks.
    resume_window: Duration,
    /// How long it tries to reach a head that went away, which may come
    /// back on its database and take the session back (Ray's
    /// `gcs_rpc_server_reconnect_timeout_s`).
    reconnect: Duration,
    link: Arc<Mutex<UpLink>>,
    /// What it sent that has no answer yet (submissions, calls, kills), by
    /// the id the answer comes on, and the actors it created: sent again,
    /// in the order they were made, to a restarted head that takes the
    /// session back.
    specs: Mutex<std::collections::BTreeMap<u64, Spec>>,
    /// A worker's part of what it tells a restarted head: the attempts it
    /// runs (and those whose `Done` is among the given unacknowledged
    /// tasks), and its actors.
    reporter: Mutex<Option<Reporter>>,
    #[cfg(feature = "testing")]
    faults: Option<Arc<faults::Faults>>,
    next_id: AtomicU64,
    pub node: Option<NodeId>,
    worker: bool,
    store: Arc<ObjectStore>,
    pending: DashMap<u64, ObjectRef>,
    locations: DashMap<ObjectId, Vec<String>>,
    /// Objects this node keeps for the cluster (one store count each),
    /// until the head frees them, with how many results and puts of each
    /// this node made.
    held: DashMap<ObjectId, u32>,
    pulls: DashMap<ObjectId, Pull>,
    peers: Mutex<HashMap<String, ObjectsClient>>,
    uploaded: DashMap<ComponentId, ()>,
    lost: Mutex<Option<String>>,
    exec: tokio::runtime::Handle,
    /// Transfers that failed their check (corrupt) and were fetched again.
    pub corrupt_transfers: AtomicU64,
    /// Results of its tasks that came straight from their nodes, first.
    pub direct_results: AtomicU64,
    /// Objects pulled from other nodes: their bytes, and the seconds each
    /// pull took (`ferray_object_transfer_*` on the node's metrics).
    pub transfer_bytes: ferray_core::Histogram,
    pub transfer_seconds: ferray_core::Histogram,
    /// A client's job (0 for a worker, whose callers name theirs).
    job: u64,
    /// Where actors live, by (job, actor), as the head last said: their
    /// calls go straight there ([`Session::call_actor`]).
    actor_locs: DashMap<(u64, u64), v1::ActorAt>,
    /// Calls that went through the head without an answer yet, by task,
    /// and how many per (job, actor): while one is, the actor's next calls
    /// go the same way (so they run in the order they were made).
    head_calls: DashMap<u64, (u64, u64)>,
    head_pending: DashMap<(u64, u64), usize>,
    /// Streams of direct calls, by the address of the actors' node.
    direct_links: Mutex<HashMap<String, Arc<DirectLink>>>,
    /// Direct calls without an answer per (job, actor), and the calls
    /// through the head that wait for them to be answered (a call that
    /// must go through the head does not overtake direct ones before it).
    order: Mutex<CallOrder>,
    /// What running tasks printed and the head has not been sent yet: sent
    /// in one message per task every [`LIVE_FLUSH`] and before its `Done`
    /// (a guest printing line by line costs the head a message a tick, not
    /// a message a line). Each task's share is bounded by the host's cap on
    /// its output. A task that printed keeps its entry until it ends (its
    /// result then goes through the head, after its output).
    live_out: Mutex<HashMap<u64, bytes::BytesMut>>,
    /// Its key for results straight from the nodes that run its tasks
    /// (`Hello.results_key`; none without system randomness), the nodes it
    /// listens to, and when it last asked the head for the nodes.
    results_key: Option<[u8; 16]>,
    result_links: Mutex<std::collections::HashSet<String>>,
    nodes_listed: Mutex<Option<std::time::Instant>>,
}

/// How often at most a session asks the head for the nodes to listen to for
/// results (when a small result came through the head first).
const NODES_LISTED_EVERY: Duration = Duration::from_secs(2);

/// The upward side of a session across its streams: the messages sent and
/// not yet acknowledged by the head (sent again on a new stream), the
/// stream it has now, and how many downward messages came in order.
struct UpLink {
    tx: Option<mpsc::UnboundedSender<v1::Up>>,
    next_seq: u64,
    unacked: std::collections::VecDeque<v1::Up>,
    down_seen: u64,
    down_acked: u64,
}

impl UpLink {
    /// Number a message and keep it until the head acknowledges it.
    fn keep(&mut self, msg: up::Msg) -> v1::Up {
        self.next_seq += 1;
        let m = v1::Up {
            seq: self.next_seq,
            msg: Some(msg),
        };
        self.unacked.push_back(m.clone());
        m
    }

    /// Send a message now (numbered and kept), on the stream there is.
    fn push(&mut self, msg: up::Msg) {
        let m = self.keep(msg);
        if let Some(tx) = &self.tx {
            let _ = tx.send(m);
        }
    }

    fn acked(&mut self, seen: u64) {
        while self.unacked.front().is_some_and(|m| m.seq <= seen) {
            self.unacked.pop_front();
        }
    }

    /// Acknowledge what came down, if something new did.
    fn ack(&mut self) {
        if self.down_seen > self.down_acked
            && let Some(tx) = &self.tx
        {
            self.down_acked = self.down_seen;
            let _ = tx.send(v1::Up {
                seq: 0,
                msg: Some(up::Msg::Ack(v1::Ack {
                    seen: self.down_seen,
                })),
            });
        }
    }
}

/// A stream of direct calls to one node (`Actors.Calls`) and the calls on
/// it without an answer, by task, with their (job, actor).
struct DirectLink {
    tx: mpsc::UnboundedSender<v1::DirectCall>,
    state: Mutex<LinkState>,
}

#[derive(Default)]
struct LinkState {
    /// Each call without an answer: its (job, actor), and the call as the
    /// head would route it (sent to the head if it does not run there).
    calls: HashMap<u64, ((u64, u64), v1::CallActor)>,
    /// It broke: its calls without an answer were handed to the head.
    closed: bool,
}

#[derive(Default)]
struct CallOrder {
    direct: HashMap<(u64, u64), usize>,
    held: HashMap<(u64, u64), std::collections::VecDeque<up::Msg>>,
}

/// How long reports that nobody waits for (direct calls made and answered,
/// acknowledgements) wait to go up with more.
const REPORT_LINGER: Duration = Duration::from_millis(2);

/// A message that only reports to the head what happened elsewhere.
fn is_report(m: &v1::Up) -> bool {
    match &m.msg {
        Some(up::Msg::CallActor(c)) => c.direct.is_some(),
        Some(up::Msg::Done(d)) => d.direct,
        Some(up::Msg::Ack(_)) => true,
        // Nothing waits on a release: it goes with the next batch.
        Some(up::Msg::Release(_)) => true,
        _ => false,
    }
}

/// How often a session acknowledges what came down (at most).
const ACK_INTERVAL: Duration = Duration::from_millis(100);

/// A stream of a session: its sender, its downward messages, the head's
/// welcome, and the client that opened it.
struct Stream {
    head: HeadClient,
    tx: mpsc::UnboundedSender<v1::Up>,
    down: DownStream,
    welcome: v1::Welcome,
}

/// Open a session stream at `address` with `hello` (the first message).
async fn open_stream(address: String, token: Token, hello: v1::Hello) -> Result<Stream, Error> {
    {
        let address = address.as_str();
        let ch = ferray_proto::connect(address).await?;
        let head = ferray_proto::head_client(ch, &token);
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(v1::Up {
            seq: 0,
            msg: Some(up::Msg::Hello(hello)),
        });
        let ups = ferray_proto::batched_lingering(rx, is_report, REPORT_LINGER)
            .map(|msgs| v1::UpBatch { msgs });
        #[cfg(feature = "testing")]
        let ups = faults::delayed(Box::pin(ups));
        let resp = head
            .clone()
            .session(ups)
            .await
            .map_err(|s| ferray_proto::from_status(&format!("the head at {address}"), s))?;
        let mut down = ferray_proto::unbatch_down(resp.into_inner());
        let first = tokio::time::timeout(Duration::from_secs(10), down.next())
            .await
            .map_err(|_| Error::System(format!("the head at {address} did not answer")))?
            .transpose()
            .map_err(|s| ferray_proto::from_status(&format!("the head at {address}"), s))?;
        let Some(v1::Down {
            msg: Some(v1::down::Msg::Welcome(welcome)),
            ..
        }) = first
        else {
            return Err(Error::System(format!(
                "the head at {address} did not welcome this session"
            )));
        };
        Ok(Stream {
            head,
            tx,
            down,
            welcome,
        })
    }
}

/// [`open_stream`] from a task that must be `Send`: tonic's future of a
/// bidirectional call is not provably `Send` there (a higher-ranked
/// lifetime limitation of the compiler), so it runs on a blocking thread of
/// this runtime, which waits for it (a resume is rare).
async fn open_stream_from_task(
    address: String,
    token: Token,
    hello: v1::Hello,
) -> Result<Stream, Error> {
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || rt.block_on(open_stream(address, token, hello)))
        .await
        .map_err(|e| Error::System(format!("opening a session stream failed: {e}")))?
}

/// How often a worker sends running tasks' output to the head.
pub const LIVE_FLUSH: std::time::Duration = std::time::Duration::from_millis(100);

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Session({})", self.head_address)
    }
}

impl Session {
    /// Open a session with the head at `address`.
    pub async fn open(
        address: &str,
        token: Token,
        hello: v1::Hello,
        store: Arc<ObjectStore>,
        reconnect: Duration,
    ) -> Result<(Arc<Session>, DownStream), Error> {
        let worker = hello.worker;
        // Unguessable, so that no other session can listen for its results.
        let mut key = [0u8; 16];
        let results_key = getrandom::fill(&mut key).ok().map(|()| key);
        let mut hello = hello;
        hello.results_key = results_key
            .map(|k| Bytes::copy_from_slice(&k))
            .unwrap_or_default();
        let Stream {
            head,
            tx,
            down,
            welcome: w,
        } = open_stream_from_task(address.to_string(), token.clone(), hello.clone()).await?;
        let link = Arc::new(Mutex::new(UpLink {
            tx: Some(tx),
            next_seq: 0,
            unacked: Default::default(),
            down_seen: 0,
            down_acked: 0,
        }));
        // Acknowledge what came down, now and then, while the session lives.
        {
            let link = Arc::downgrade(&link);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(ACK_INTERVAL);
                loop {
                    every.tick().await;
                    let Some(link) = link.upgrade() else { return };
                    link.lock().ack();
                }
            });
        }
        let session = Arc::new(Session {
            head_address: address.to_string(),
            token,
            head,
            id: w.session,
            hello,
            resume_window: Duration::from_millis(w.resume_window_ms),
            reconnect,
            link,
            specs: Mutex::new(Default::default()),
            reporter: Mutex::new(None),
            #[cfg(feature = "testing")]
            faults: faults::Faults::from_env().map(Arc::new),
            next_id: AtomicU64::new(w.id_base + 1),
            node: (w.node != 0).then_some(NodeId(w.node)),
            worker,
            store,
            pending: DashMap::new(),
            locations: DashMap::new(),
            held: DashMap::new(),
            pulls: DashMap::new(),
            peers: Mutex::new(HashMap::new()),
            uploaded: DashMap::new(),
            lost: Mutex::new(None),
            exec: tokio::runtime::Handle::current(),
            corrupt_transfers: AtomicU64::new(0),
            direct_results: AtomicU64::new(0),
            // 1 KiB to 4 GiB.
            transfer_bytes: ferray_core::Histogram::exponential(1024.0, 4.0, 12),
            // 100 µs to about 7 minutes.
            transfer_seconds: ferray_core::Histogram::exponential(1e-4, 4.0, 12),
            live_out: Mutex::new(HashMap::new()),
            job: w.job,
            actor_locs: DashMap::new(),
            head_calls: DashMap::new(),
            head_pending: DashMap::new(),
            direct_links: Mutex::new(HashMap::new()),
            order: Mutex::new(CallOrder::default()),
            results_key,
            result_links: Mutex::new(Default::default()),
            nodes_listed: Mutex::new(None),
        });
        session.listen_to_nodes();
        Ok((session, down))
    }

    pub fn send(&self, msg: up::Msg) {
        self.send_after(msg, || {});
    }

    /// Send a message, running `before` first under the same hold of the
    /// session's lock: a restarted head's report ([`Session::rejoin`], which
    /// holds that lock) sees the world either before both or after both
    /// (an attempt that ends moves to the ended ones as its `Done` is sent).
    pub fn send_after(&self, msg: up::Msg, before: impl FnOnce()) {
        if let Some(msg) = ferray_proto::fit_up(msg) {
            #[cfg(feature = "testing")]
            let fault = self.faults.as_ref().and_then(|f| f.on_up(&msg));
            let mut link = self.link.lock();
            before();
            #[cfg(feature = "testing")]
            if let Some(f) = fault {
                // Lost with the stream, or sent and then the stream breaks:
                // either way it stays kept, and goes again on the next one.
                if f == faults::Fault::Request {
                    link.keep(msg);
                } else {
                    link.push(msg);
                }
                link.tx = None;
                return;
            }
            link.push(msg);
        }
    }

    /// The session ends on purpose: the head closes it at once (a stream
    /// that breaks without this leaves it open for the node timeout).
    pub fn bye(&self) {
        self.link.lock().push(up::Msg::Bye(v1::Bye {}));
    }

    /// The session's next message from the head, through breaks of its
    /// stream: a stream that breaks is replaced by a new one that resumes
    /// the session (within the head's window), and what the head sends
    /// again is not seen twice. `Err` with the reason when the session is
    /// over (the head closed it, or it could not be resumed).
    pub async fn recv(&self, down: &mut DownStream) -> Result<v1::Down, String> {
        loop {
            let broke = match down.next().await {
                Some(Ok(m)) => {
                    if let Some(v1::down::Msg::Ack(a)) = &m.msg {
                        self.link.lock().acked(a.seen);
                        continue;
                    }
                    if m.seq != 0 {
                        let mut link = self.link.lock();
                        if m.seq <= link.down_seen {
                            continue;
                        }
                        if m.seq != link.down_seen + 1 {
                            return Err(format!(
                                "the head at {} sent message {} after {}",
                                self.head_address, m.seq, link.down_seen
                            ));
                        }
                        #[cfg(feature = "testing")]
                        if let Some(f) = self.faults.as_ref().and_then(|f| f.on_down(&m)) {
                            if f != faults::Fault::Request {
                                link.down_seen = m.seq;
                            }
                            link.tx = None;
                            drop(link);
                            *down = Box::pin(futures::stream::empty());
                            if f == faults::Fault::Request {
                                continue;
                            }
                            return Ok(m);
                        }
                        link.down_seen = m.seq;
                    }
                    return Ok(m);
                }
                None if self.link.lock().tx.is_none() => {
                    "its stream was broken on purpose (a test's fault)".to_string()
                }
                None => {
                    return Err(format!(
                        "the head at {} closed this session",
                        self.head_address
                    ));
                }
                Some(Err(s)) => ferray_proto::from_status("the session", s).to_string(),
            };
            *down = self.resume(broke).await?;
        }
    }

    /// Open a new stream that resumes this session: what the head did not
    /// get goes again, in order, before anything new.
    async fn resume(&self, why: String) -> Result<DownStream, String> {
        self.link.lock().tx = None;
        let lost = format!("lost the head at {}: {why}", self.head_address);
        if self.resume_window.is_zero() {
            return Err(lost);
        }
        tracing::info!("{}; resuming the session", lost);
        let since = std::time::Instant::now();
        let mut backoff = Duration::from_millis(20);
        loop {
            let mut hello = self.hello.clone();
            hello.resume = self.id;
            hello.down_seen = self.link.lock().down_seen;
            match open_stream_from_task(self.head_address.clone(), self.token.clone(), hello).await
            {
                Ok(s) if s.welcome.rejoin => {
                    self.rejoin(s.tx);
                    drop(s.head);
                    tracing::info!(
                        "a restarted head at {} took the session back",
                        self.head_address
                    );
                    return Ok(s.down);
                }
                Ok(s) if s.welcome.resumed => {
                    let mut link = self.link.lock();
                    link.acked(s.welcome.up_seen);
                    for m in &link.unacked {
                        let _ = s.tx.send(m.clone());
                    }
                    link.tx = Some(s.tx);
                    link.down_acked = 0;
                    drop(link);
                    drop(s.head);
                    return Ok(s.down);
                }
                Ok(_) => return Err(format!("{}; the head did not resume the session", lost)),
                Err(e @ Error::InvalidArgument(_)) => {
                    return Err(format!("{}; {e}", lost));
                }
                Err(e) => {
                    // A head that comes back on its database takes the
                    // session back: it is tried for the reconnect window.
                    let window = self.resume_window.max(self.reconnect);
                    if since.elapsed() >= window {
                        return Err(format!(
                            "{}; could not resume the session within {:?}: {e}",
                            lost, window
                        ));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
            }
        }
    }

    /// A restarted head took the session back on the stream `tx`: the
    /// numbering starts again, and the head gets what this session had
    /// (`Rejoin`), then what the earlier head may not have got, then what
    /// it sent that has no answer yet, in the order it was made.
    fn rejoin(&self, tx: mpsc::UnboundedSender<v1::Up>) {
        let mut link = self.link.lock();
        let old: Vec<v1::Up> = link.unacked.drain(..).collect();
        let dones: std::collections::HashSet<u64> = old
            .iter()
            .filter_map(|m| match &m.msg {
                Some(up::Msg::Done(d)) => Some(d.task),
                _ => None,
            })
            .collect();
        let (running, actors) = match &*self.reporter.lock() {
            Some(r) => r(&dones),
            None => Default::default(),
        };
        let objects = self
            .held
            .iter()
            .filter_map(|e| {
                let id = *e.key();
                self.store.size(&id).map(|size| v1::HeldObject {
                    id: id_bytes(&id),
                    size,
                })
            })
            .collect();
        link.next_seq = 0;
        link.down_seen = 0;
        link.down_acked = 0;
        link.tx = Some(tx);
        for part in rejoin_parts(running, actors, objects) {
            link.push(up::Msg::Rejoin(part));
        }
        let mut cancels = Vec::new();
        for m in old {
            match m.msg {
                // Sent again from `specs` (those still without an answer).
                Some(
                    up::Msg::Submit(_)
                    | up::Msg::CallActor(_)
                    | up::Msg::CreateActor(_)
                    | up::Msg::KillActor(_)
                    | up::Msg::Hello(_)
                    | up::Msg::Ack(_)
                    | up::Msg::Rejoin(_),
                )
                | None => {}
                // After the submissions they cancel.
                Some(m @ up::Msg::Cancel(_)) => cancels.push(m),
                // Puts first: a submission may name their objects.
                Some(m) => link.push(m),
            }
        }
        for spec in self.specs.lock().values() {
            link.push(spec.again());
        }
        for m in cancels {
            link.push(m);
        }
    }

    /// The worker's part of what a restarted head is told.
    pub fn set_reporter(&self, r: Reporter) {
        *self.reporter.lock() = Some(r);
    }

    /// Remember a message until its answer comes (or for good: an actor's
    /// creation, until it is killed).
    fn remember(&self, id: u64, msg: &up::Msg, refs: Vec<ObjectRef>) {
        self.specs.lock().insert(
            id,
            Spec {
                msg: msg.clone(),
                refs,
            },
        );
    }

    /// A running task printed `stdout`: kept for the next flush.
    pub fn live_output(&self, task: u64, stdout: &[u8]) {
        self.live_out
            .lock()
            .entry(task)
            .or_default()
            .extend_from_slice(stdout);
    }

    /// Whether the running task printed on stdout (asked before its end's
    /// [`Session::flush_live`]).
    pub fn printed(&self, task: u64) -> bool {
        self.live_out.lock().contains_key(&task)
    }

    /// Send what running tasks printed (all of it, or one task's as it
    /// ends, which forgets it), in order before anything sent after (the
    /// lock is held while sending, so a task's `Done` never overtakes its
    /// output).
    pub fn flush_live(&self, task: Option<u64>) {
        let mut pending = self.live_out.lock();
        let send = |t: u64, out: bytes::BytesMut| {
            if !out.is_empty() {
                self.send(up::Msg::Output(v1::TaskOutput {
                    task: t,
                    stdout: out.freeze(),
                }));
            }
        };
        match task {
            Some(t) => {
                if let Some(out) = pending.remove(&t) {
                    send(t, out);
                }
            }
            None => {
                for (&t, out) in pending.iter_mut() {
                    send(t, out.split());
                }
            }
        }
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn check_alive(&self) -> Result<(), Error> {
        match &*self.lost.lock() {
            Some(why) => Err(Error::System(why.clone())),
            None => Ok(()),
        }
    }

    /// The session is over (the head closed it or is gone).
    pub fn is_lost(&self) -> bool {
        self.lost.lock().is_some()
    }

    /// The head is gone: every pending result fails with the reason.
    pub fn lose(&self, why: String) {
        *self.lost.lock() = Some(why.clone());
        self.actor_locs.clear();
        self.specs.lock().clear();
        let keys: Vec<u64> = self.pending.iter().map(|e| *e.key()).collect();
        for k in keys {
            if let Some((_, r)) = self.pending.remove(&k) {
                r.fail(Error::System(why.clone()));
            }
        }
    }

    // ----- results -----

    pub fn resolved(self: &Arc<Self>, r: v1::Resolved) {
        if let Some((_, key)) = self.head_calls.remove(&r.task) {
            self.head_pending.remove_if_mut(&key, |_, n| {
                *n -= 1;
                *n == 0
            });
        }
        {
            let mut specs = self.specs.lock();
            // A call's answer says its actor was made (its node reports it
            // to a restarted head) or is dead: it is not made again.
            if let Some(Spec {
                msg: up::Msg::CallActor(c),
                ..
            }) = specs.remove(&r.task)
            {
                specs.remove(&c.actor);
            }
        }
        let Some((_, slot)) = self.pending.remove(&r.task) else {
            return;
        };
        match r.result {
            Some(v1::resolved::Result::Ok(loc)) => {
                if loc.inline.is_some() {
                    // It could have come straight from its node: listen to
                    // the nodes not listened to yet.
                    self.listen_to_nodes();
                }
                self.resolve_at(&slot, loc)
            }
            Some(v1::resolved::Result::Err(e)) => slot.fail(ferray_proto::error_from(Some(e))),
            None => slot.fail(Error::System("the head sent an empty result".into())),
        }
    }

    /// This session's key for results straight from nodes.
    pub fn results_key(&self) -> Option<[u8; 16]> {
        self.results_key
    }

    /// A task's result straight from the node that ran it (the head's
    /// answer, which comes after, then finds it resolved).
    pub fn direct_result(&self, r: v1::DirectReply) {
        let Some(v1::direct_reply::Result::Ok(loc)) = r.result else {
            return;
        };
        if let Some((_, slot)) = self.pending.remove(&r.task) {
            self.direct_results.fetch_add(1, Ordering::Relaxed);
            self.resolve_at(&slot, loc);
        }
    }

    /// Listen for results on every live node the head lists that it does
    /// not listen to yet; at most every [`NODES_LISTED_EVERY`].
    fn listen_to_nodes(self: &Arc<Self>) {
        if self.results_key.is_none() || self.is_lost() {
            return;
        }
        {
            let mut last = self.nodes_listed.lock();
            if last.is_some_and(|t| t.elapsed() < NODES_LISTED_EVERY) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        let me = Arc::downgrade(self);
        let mut head = self.head.clone();
        self.exec.spawn(async move {
            let asked = head
                .cluster(v1::ClusterRequest {
                    what: "nodes".into(),
                    ..Default::default()
                })
                .await;
            let (Ok(state), Some(me)) = (asked, me.upgrade()) else {
                return;
            };
            for n in state.into_inner().nodes {
                if n.state == "ALIVE" {
                    me.listen_to(n.address);
                }
            }
        });
    }

    /// Listen for this session's results on the node at `addr` (its own
    /// node's come without a stream), until the stream ends.
    fn listen_to(self: &Arc<Self>, addr: String) {
        let Some(key) = self.results_key else {
            return;
        };
        if addr.is_empty()
            || addr == self.hello.object_address
            || !self.result_links.lock().insert(addr.clone())
        {
            return;
        }
        let me = Arc::downgrade(self);
        let token = self.token.clone();
        self.exec.spawn(async move {
            let listen = async {
                let mut results = actors_at(&addr, &token)
                    .await?
                    .results(v1::ResultsRequest {
                        key: Bytes::copy_from_slice(&key),
                    })
                    .await
                    .map_err(|s| s.message().to_string())?
                    .into_inner();
                while let Some(r) = results
                    .message()
                    .await
                    .map_err(|s| s.message().to_string())?
                {
                    let Some(me) = me.upgrade() else {
                        return Ok(());
                    };
                    me.direct_result(r);
                }
                Ok::<_, String>(())
            };
            if let Err(e) = listen.await {
                tracing::debug!("results from {addr} come through the head: {e}");
            }
            if let Some(me) = me.upgrade() {
                me.result_links.lock().remove(&addr);
            }
        });
    }

    /// A pending result is the object at `loc`.
    fn resolve_at(&self, slot: &ObjectRef, loc: v1::ObjectLoc) {
        match self.accept_loc(loc) {
            Ok((id, true)) => slot.resolve(id),
            Ok((id, false)) => slot.resolve_remote(id),
            Err(e) => slot.fail(e),
        }
    }

    /// Take in where an object is; `true` when its bytes came inline and are
    /// now in the store with one count for the caller.
    fn accept_loc(&self, loc: v1::ObjectLoc) -> Result<(ObjectId, bool), Error> {
        let id = ferray_proto::object_id(&loc.id)?;
        if let Some(b) = loc.inline {
            self.store.put_with_id(id, b)?;
            return Ok((id, true));
        }
        if !loc.holders.is_empty() {
            self.locations.insert(id, loc.holders);
        }
        Ok((id, false))
    }

    /// A task argument as the head resolved it.
    pub fn arg_from(&self, a: v1::ResolvedArg) -> Result<Arg<ObjectRef>, Error> {
        match a.kind {
            Some(v1::resolved_arg::Kind::Value(b)) => Ok(Arg::Value(b.to_vec())),
            Some(v1::resolved_arg::Kind::Object(loc)) => {
                let id = ferray_proto::object_id(&loc.id)?;
                if let Some(b) = loc.inline {
                    if !id.matches(&b) {
                        return Err(Error::Corrupt { id: id.to_hex() });
                    }
                    return Ok(Arg::Value(b.to_vec()));
                }
                if !loc.holders.is_empty() {
                    self.locations.insert(id, loc.holders);
                }
                Ok(Arg::Ref(ObjectRef::remote(id, self.store.clone())))
            }
            None => Err(Error::InvalidArgument("an argument without a kind".into())),
        }
    }

    // ----- objects -----

    /// Keep one count of `id` for the cluster (once per node), for a
    /// result or a put made here (counted: see [`Session::free`]).
    pub fn hold(&self, id: ObjectId) {
        let mut made = self.held.entry(id).or_insert_with(|| {
            let _ = self.store.incref(&id);
            0
        });
        *made += 1;
    }

    /// The head no longer needs these. With `seen` (one per id), it
    /// releases that many of the results and puts of each it has heard of
    /// from here: a copy made again since (its report on the way) is kept
    /// for it.
    pub fn free(&self, ids: &[Bytes], seen: &[u32]) {
        for (i, b) in ids.iter().enumerate() {
            let Ok(id) = ferray_proto::object_id(b) else {
                continue;
            };
            if let Some(&k) = seen.get(i)
                && let Some(mut made) = self.held.get_mut(&id)
                && *made > k
            {
                *made -= k;
                continue;
            }
            self.locations.remove(&id);
            if self.held.remove(&id).is_some() {
                self.store.decref(&id);
            }
        }
    }

    /// A put: kept here (a worker serves it) or sent to the head (a client).
    pub fn put(&self, acting: Option<v1::Acting>, bytes: Bytes) -> ObjectRef {
        let id = self.store.put(bytes.clone());
        let r = ObjectRef::ready(id, self.store.clone());
        let size = bytes.len() as u64;
        let inline = (bytes.len() <= INLINE_MAX).then(|| bytes.clone());
        if self.worker {
            self.hold(id);
            self.send(up::Msg::Put(v1::PutObject {
                id: id_bytes(&id),
                size,
                acting,
                inline,
                uploading: false,
            }));
            return r;
        }
        let uploading = inline.is_none();
        self.send(up::Msg::Put(v1::PutObject {
            id: id_bytes(&id),
            size,
            acting: None,
            inline,
            uploading,
        }));
        if uploading {
            let (addr, token) = (self.head_address.clone(), self.token.clone());
            let link = self.link.clone();
            self.exec.spawn(async move {
                if let Err(e) = push(&addr, &token, id, bytes, false).await {
                    tracing::warn!("the upload of object {} failed: {e}", id.short());
                    // The head fails what waits for it instead of waiting on.
                    link.lock().push(up::Msg::Put(v1::PutObject {
                        id: id_bytes(&id),
                        size,
                        acting: None,
                        inline: None,
                        uploading: false,
                    }));
                }
            });
        }
        r
    }

    async fn peer(&self, addr: &str) -> Result<ObjectsClient, Error> {
        if let Some(c) = self.peers.lock().get(addr) {
            return Ok(c.clone());
        }
        let ch = ferray_proto::connect(addr).await?;
        let c = ferray_proto::objects_client(ch, &self.token);
        self.peers.lock().insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// The bytes of an object held elsewhere: pulled once per node (a
    /// second request waits for the first), checked against the id, kept.
    pub fn fetch(self: &Arc<Self>, id: ObjectId) -> BoxFuture<'static, Result<Bytes, Error>> {
        if let Ok(b) = self.store.get(&id) {
            return Box::pin(async move { Ok(b) });
        }
        let fut = match self.pulls.entry(id) {
            dashmap::Entry::Occupied(e) => e.get().clone(),
            dashmap::Entry::Vacant(e) => {
                let me = self.clone();
                let f: BoxFuture<'static, Result<Bytes, Error>> = Box::pin(async move {
                    let out = me.pull_any(id).await;
                    me.pulls.remove(&id);
                    out
                });
                e.insert(f.shared()).clone()
            }
        };
        Box::pin(fut)
    }

    async fn pull_any(self: &Arc<Self>, id: ObjectId) -> Result<Bytes, Error> {
        let mut last = Error::ObjectLost(format!("object {} has no holder", id.short()));
        for round in 0..4 {
            let holders = match self.locations.get(&id).map(|h| h.clone()) {
                Some(h) if round == 0 => h,
                _ => match self.locate(id).await? {
                    Located::Inline(bytes) => {
                        self.keep(id, bytes.clone())?;
                        if self.worker {
                            self.send(up::Msg::Located(v1::Located { id: id_bytes(&id) }));
                        }
                        return Ok(bytes);
                    }
                    Located::Holders(h) => h,
                },
            };
            for addr in holders {
                match self.pull_from(&addr, id).await {
                    Ok(bytes) => {
                        self.keep(id, bytes.clone())?;
                        self.locations.remove(&id);
                        if self.worker {
                            self.send(up::Msg::Located(v1::Located { id: id_bytes(&id) }));
                        }
                        return Ok(bytes);
                    }
                    Err(e @ Error::Corrupt { .. }) => {
                        self.corrupt_transfers.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            "object {} from {addr} failed its check (corrupt in transfer); fetching it again",
                            id.short()
                        );
                        last = e;
                    }
                    Err(e) => {
                        tracing::info!("cannot pull object {} from {addr}: {e}", id.short());
                        last = e;
                    }
                }
            }
            self.locations.remove(&id);
        }
        Err(match last {
            Error::Corrupt { id } => Error::Corrupt { id },
            e => Error::ObjectLost(format!("object {}: {e}", id.short())),
        })
    }

    /// A worker keeps what it fetched (one count, for the cluster); a
    /// client only passes it on. The bytes were checked against `id` on
    /// arrival.
    fn keep(&self, id: ObjectId, bytes: Bytes) -> Result<(), Error> {
        if !self.worker {
            return Ok(());
        }
        self.store.put_checked(id, bytes);
        match self.held.entry(id) {
            dashmap::mapref::entry::Entry::Occupied(_) => {
                self.store.decref(&id);
            }
            // A copy it did not make.
            dashmap::mapref::entry::Entry::Vacant(v) => {
                v.insert(0);
            }
        }
        Ok(())
    }

    /// Ask the head where an object is (it waits while the object is being
    /// made, pushed or rebuilt).
    async fn locate(&self, id: ObjectId) -> Result<Located, Error> {
        let loc = super::retry("locating an object", || {
            let mut head = self.head.clone();
            async move {
                head.locate(v1::ObjectKey { id: id_bytes(&id) })
                    .await
                    .map_err(|s| ferray_proto::from_status("locating an object", s))
            }
        })
        .await?
        .into_inner();
        if let Some(b) = loc.inline {
            if !id.matches(&b) {
                return Err(Error::Corrupt { id: id.to_hex() });
            }
            return Ok(Located::Inline(b));
        }
        Ok(Located::Holders(loc.holders))
    }

    async fn pull_from(&self, addr: &str, id: ObjectId) -> Result<Bytes, Error> {
        if let Ok(b) = self.store.get(&id) {
            return Ok(b);
        }
        let started = std::time::Instant::now();
        let bytes = super::retry("pulling an object", || async {
            let mut c = self.peer(addr).await?;
            ferray_proto::pull(&mut c, addr, id).await
        })
        .await?;
        self.transfer_bytes.observe(bytes.len() as f64);
        self.transfer_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(bytes)
    }

    // ----- submissions -----

    /// A pending result, registered before the liveness check so that a
    /// concurrent [`Session::lose`] cannot miss it.
    fn pending_ref(&self, t: u64) -> Result<ObjectRef, Error> {
        let r = ObjectRef::pending(TaskId(t), self.store.clone());
        self.pending.insert(t, r.clone());
        if let Err(e) = self.check_alive() {
            self.pending.remove(&t);
            return Err(e);
        }
        Ok(r)
    }

    /// References to small objects this process holds go as their values
    /// (as Ray inlines small arguments): the call needs nothing from the
    /// head, so it may go straight to an actor, and it does not depend on
    /// what the head knows of them. A direct call's answer is the caller's
    /// at once, while the head hears of it a moment later from the node;
    /// a node that dies in between leaves the head believing the call
    /// failed, though its answer is here.
    fn inline_held(&self, args: Vec<Arg<ObjectRef>>) -> Vec<Arg<ObjectRef>> {
        args.into_iter()
            .map(|a| match a {
                Arg::Ref(r) => match r.state() {
                    crate::objects::SlotState::Ready(id) => match self.store.get(&id) {
                        Ok(b) if b.len() <= INLINE_MAX => Arg::Value(b.to_vec()),
                        _ => Arg::Ref(r),
                    },
                    _ => Arg::Ref(r),
                },
                v => v,
            })
            .collect()
    }

    /// Arguments for a message: values inline up to [`MAX_INLINE_ARG`] bytes
    /// in all, the rest as put objects.
    fn args_to(&self, acting: Option<v1::Acting>, args: Vec<Arg<ObjectRef>>) -> Vec<v1::Arg> {
        let mut budget = MAX_INLINE_ARG;
        args.into_iter()
            .map(|a| match a {
                Arg::Value(v) if v.len() <= budget => {
                    budget -= v.len();
                    self.arg_to(acting, Arg::Value(v))
                }
                Arg::Value(v) => {
                    let r = self.put(acting, Bytes::from(v));
                    self.arg_to(acting, Arg::Ref(r))
                }
                r => self.arg_to(acting, r),
            })
            .collect()
    }

    fn arg_to(&self, acting: Option<v1::Acting>, a: Arg<ObjectRef>) -> v1::Arg {
        use v1::arg::Kind;
        let kind = match a {
            Arg::Value(v) if v.len() > MAX_INLINE_ARG => {
                let r = self.put(acting, Bytes::from(v));
                match r.content_id() {
                    Some(id) => Kind::Object(id_bytes(&id)),
                    None => Kind::Value(Bytes::new()),
                }
            }
            Arg::Value(v) => Kind::Value(Bytes::from(v)),
            Arg::Ref(r) => match r.name() {
                RefName::Task(t) => Kind::Task(t.0),
                RefName::Put(id) => Kind::Object(id_bytes(&id)),
            },
        };
        v1::Arg { kind: Some(kind) }
    }

    /// Make sure the head has the component (clients upload it once).
    pub async fn upload(&self, id: ComponentId, bytes: Bytes) -> Result<(), Error> {
        if self.uploaded.contains_key(&id) {
            return Ok(());
        }
        let oid = ObjectId::from_bytes(*id.as_bytes());
        super::retry("uploading the component", || {
            let mut head = self.head.clone();
            let bytes = bytes.clone();
            async move {
                head.upload_component(ferray_proto::chunks(oid, bytes))
                    .await
                    .map_err(|s| ferray_proto::from_status("uploading the component", s))
            }
        })
        .await?;
        self.uploaded.insert(id, ());
        Ok(())
    }

    pub fn submit(
        &self,
        acting: Option<v1::Acting>,
        component: ComponentId,
        function: &str,
        args: Vec<Arg<ObjectRef>>,
        options: &TaskOptions,
    ) -> Result<ObjectRef, Error> {
        let t = self.next_id();
        let r = self.pending_ref(t)?;
        let args = self.inline_held(args);
        let refs = task_refs(&args);
        let wire = self.args_to(acting, args);
        let msg = up::Msg::Submit(v1::Submit {
            task: t,
            acting,
            component: Bytes::copy_from_slice(component.as_bytes()),
            function: function.to_string(),
            args: wire,
            options: Some(ferray_proto::task_options_to(options)),
        });
        self.remember(t, &msg, refs);
        self.send(msg);
        Ok(r)
    }

    pub fn create_actor(
        &self,
        acting: Option<v1::Acting>,
        component: ComponentId,
        class: &str,
        args: Vec<Arg<ObjectRef>>,
        options: &ActorOptions,
    ) -> Result<ActorId, Error> {
        self.check_alive()?;
        let a = self.next_id();
        let args = self.inline_held(args);
        let refs = task_refs(&args);
        let wire = self.args_to(acting, args);
        let msg = up::Msg::CreateActor(v1::CreateActor {
            actor: a,
            acting,
            component: Bytes::copy_from_slice(component.as_bytes()),
            class: class.to_string(),
            args: wire,
            options: Some(ferray_proto::actor_options_to(options)),
        });
        self.remember(a, &msg, refs);
        self.send(msg);
        Ok(ActorId(a))
    }

    /// Call an actor of `job`: straight to its node when the head told
    /// where it lives, no call of this session to it waits for the head,
    /// and its arguments are values; else through the head.
    pub fn call_actor(
        self: &Arc<Self>,
        acting: Option<v1::Acting>,
        job: u64,
        actor: ActorId,
        method: String,
        args: Vec<Arg<ObjectRef>>,
    ) -> Result<ObjectRef, Error> {
        let job = if job == 0 { self.job } else { job };
        let t = self.next_id();
        let r = self.pending_ref(t)?;
        let key = (job, actor.0);
        let args = self.inline_held(args);
        if let Some(at) = self.direct_route(key, &args) {
            let values: Vec<Bytes> = args
                .into_iter()
                .filter_map(|a| match a {
                    Arg::Value(v) => Some(Bytes::from(v)),
                    Arg::Ref(_) => None,
                })
                .collect();
            // The head records it (its arguments are the node's to know).
            let msg = up::Msg::CallActor(v1::CallActor {
                task: t,
                acting,
                actor: actor.0,
                method: method.clone(),
                args: Vec::new(),
                direct: Some(at.clone()),
            });
            self.remember(t, &msg, Vec::new());
            self.send(msg);
            *self.order.lock().direct.entry(key).or_default() += 1;
            let whole = v1::CallActor {
                task: t,
                acting,
                actor: actor.0,
                method,
                args: values
                    .into_iter()
                    .map(|b| v1::Arg {
                        kind: Some(v1::arg::Kind::Value(b)),
                    })
                    .collect(),
                direct: None,
            };
            if let Some(whole) = self.send_direct(&at, key, whole) {
                self.direct_refused(key, whole);
            }
            return Ok(r);
        }
        let refs = task_refs(&args);
        let wire = self.args_to(acting, args);
        let msg = up::Msg::CallActor(v1::CallActor {
            task: t,
            acting,
            actor: actor.0,
            method,
            args: wire,
            direct: None,
        });
        self.head_calls.insert(t, key);
        *self.head_pending.entry(key).or_default() += 1;
        self.remember(t, &msg, refs);
        let mut order = self.order.lock();
        if order.direct.contains_key(&key) || order.held.contains_key(&key) {
            // Sent once the direct calls before it are answered.
            order.held.entry(key).or_default().push_back(msg);
        } else {
            self.send(msg);
        }
        Ok(r)
    }

    /// A direct call to `key` was answered (or handed to the head): once
    /// none is left, the calls held behind them go to the head, in order.
    fn direct_answered(&self, key: (u64, u64)) {
        let mut order = self.order.lock();
        let left = order.direct.get_mut(&key).map(|n| {
            *n -= 1;
            *n
        });
        if left == Some(0) {
            order.direct.remove(&key);
            for m in order.held.remove(&key).into_iter().flatten() {
                self.send(m);
            }
        }
    }

    /// Where a call to the actor `key` may go straight to, if it may.
    fn direct_route(&self, key: (u64, u64), args: &[Arg<ObjectRef>]) -> Option<v1::ActorAt> {
        if self.head_pending.contains_key(&key) {
            return None;
        }
        let at = self.actor_locs.get(&key)?.clone();
        let mut total = 0usize;
        for a in args {
            match a {
                Arg::Value(v) => total += v.len(),
                Arg::Ref(_) => return None,
            }
        }
        (total <= MAX_INLINE_ARG).then_some(at)
    }

    /// The head says where an actor lives now.
    pub fn actor_at(&self, a: v1::ActorAt) {
        if !self.is_lost() {
            self.actor_locs.insert((a.job, a.actor), a);
        }
    }

    /// The address this node serves objects and actor calls on (empty for
    /// a client).
    pub fn object_address(&self) -> &str {
        &self.hello.object_address
    }

    /// Send a direct call on the stream to the actor's node (opened when
    /// there is none); the call back when it could not be handed to one.
    fn send_direct(
        self: &Arc<Self>,
        at: &v1::ActorAt,
        key: (u64, u64),
        whole: v1::CallActor,
    ) -> Option<v1::CallActor> {
        let addr = at.address.as_str();
        let call = v1::DirectCall {
            task: whole.task,
            actor: whole.actor,
            incarnation: at.incarnation,
            job: key.0,
            method: whole.method.clone(),
            args: whole
                .args
                .iter()
                .filter_map(|a| match &a.kind {
                    Some(v1::arg::Kind::Value(b)) => Some(b.clone()),
                    _ => None,
                })
                .collect(),
        };
        for _ in 0..2 {
            let link = {
                let mut links = self.direct_links.lock();
                match links.get(addr) {
                    Some(l) if !l.state.lock().closed => l.clone(),
                    _ => {
                        let l = self.open_link(addr.to_string());
                        links.insert(addr.to_string(), l.clone());
                        l
                    }
                }
            };
            let mut st = link.state.lock();
            if st.closed {
                continue;
            }
            st.calls.insert(call.task, (key, whole));
            // A stream that has ended keeps the call among its own: the
            // head answers it when the stream's end is handled.
            let _ = link.tx.send(call);
            return None;
        }
        Some(whole)
    }

    /// A stream of direct calls to the node at `addr`: answers go to their
    /// callers; when it breaks, the calls without an answer go to the head.
    fn open_link(self: &Arc<Self>, addr: String) -> Arc<DirectLink> {
        let (tx, rx) = mpsc::unbounded_channel();
        let link = Arc::new(DirectLink {
            tx,
            state: Mutex::new(LinkState::default()),
        });
        let me = Arc::downgrade(self);
        let token = self.token.clone();
        let l = link.clone();
        self.exec.spawn(async move {
            // Whether the node got the stream: before, no call ran there.
            let mut reached = false;
            let run = async {
                let mut replies = actors_at(&addr, &token)
                    .await?
                    .calls(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
                    .await
                    .map_err(|s| s.message().to_string())?
                    .into_inner();
                reached = true;
                while let Some(r) = replies
                    .message()
                    .await
                    .map_err(|s| s.message().to_string())?
                {
                    let call = l.state.lock().calls.remove(&r.task);
                    if let (Some((key, whole)), Some(s)) = (call, me.upgrade()) {
                        if r.refused {
                            s.direct_refused(key, whole);
                        } else {
                            s.direct_reply(key, r);
                        }
                    }
                }
                Ok::<_, String>(())
            };
            let why = match run.await {
                Ok(()) => "the node ended the stream".to_string(),
                Err(e) => e,
            };
            let lost: Vec<((u64, u64), v1::CallActor)> = {
                let mut st = l.state.lock();
                st.closed = true;
                let mut calls: Vec<_> = st.calls.drain().collect();
                calls.sort_by_key(|(t, _)| *t);
                calls.into_iter().map(|(_, c)| c).collect()
            };
            if let Some(s) = me.upgrade() {
                s.direct_broke(&addr, &l, lost, reached, &why);
            }
        });
        link
    }

    /// A direct call did not run (its node refused it: the actor does not
    /// live there as the caller believed, or could not be reached): sent
    /// again to the head, which routes it to where the actor lives now.
    fn direct_refused(&self, key: (u64, u64), whole: v1::CallActor) {
        self.actor_locs.remove(&key);
        let t = whole.task;
        // A restarted head gets it whole, as a call it routes.
        self.remember(t, &up::Msg::CallActor(whole.clone()), Vec::new());
        // Later calls go through the head until it answers this one.
        self.head_calls.insert(t, key);
        *self.head_pending.entry(key).or_default() += 1;
        self.send(up::Msg::DirectLost(v1::DirectLost {
            tasks: Vec::new(),
            unsent: vec![whole],
        }));
        self.direct_answered(key);
    }

    /// A direct call's answer from the actor's node.
    fn direct_reply(&self, key: (u64, u64), r: v1::DirectReply) {
        self.specs.lock().remove(&r.task);
        self.direct_answered(key);
        let Some((_, slot)) = self.pending.remove(&r.task) else {
            return;
        };
        match r.result {
            Some(v1::direct_reply::Result::Ok(loc)) => self.resolve_at(&slot, loc),
            Some(v1::direct_reply::Result::Err(e)) => {
                let e = ferray_proto::error_from(Some(e));
                if matches!(e, Error::ActorDied(_)) {
                    // The head knows where it lives now, if it does.
                    self.actor_locs.remove(&key);
                }
                slot.fail(e);
            }
            None => slot.fail(Error::System("a node sent an empty answer".into())),
        }
    }

    /// The stream to `addr` broke: the actors there are reached through
    /// the head again, which answers the calls that had no answer.
    fn direct_broke(
        &self,
        addr: &str,
        link: &Arc<DirectLink>,
        lost: Vec<((u64, u64), v1::CallActor)>,
        reached: bool,
        why: &str,
    ) {
        self.actor_locs.retain(|_, a| a.address != addr);
        {
            let mut links = self.direct_links.lock();
            if links.get(addr).is_some_and(|l| Arc::ptr_eq(l, link)) {
                links.remove(addr);
            }
        }
        if lost.is_empty() || self.is_lost() {
            return;
        }
        if !reached {
            // None of them ran: the head routes them.
            tracing::info!("actor calls to {addr} go through the head: {why}");
            for (key, whole) in lost {
                self.direct_refused(key, whole);
            }
            return;
        }
        tracing::warn!(
            "the stream of actor calls to {addr} broke ({why}); the head answers its {} calls",
            lost.len()
        );
        self.send(up::Msg::DirectLost(v1::DirectLost {
            tasks: lost.iter().map(|(_, c)| c.task).collect(),
            unsent: Vec::new(),
        }));
        for (key, _) in lost {
            self.direct_answered(key);
        }
    }

    /// Kill an actor of the caller's job: sent at once; the head answers on a reply id
    /// (done, or not-found for a missing actor or another job's).
    pub fn kill_actor(
        &self,
        acting: Option<v1::Acting>,
        actor: ActorId,
    ) -> BoxFuture<'static, Result<(), Error>> {
        let t = self.next_id();
        let reply = match self.pending_ref(t) {
            Ok(r) => r,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        // Killed: a restarted head is not asked to create it again.
        self.specs.lock().remove(&actor.0);
        self.actor_locs.retain(|k, _| k.1 != actor.0);
        let msg = up::Msg::KillActor(v1::KillActor {
            actor: actor.0,
            acting,
            task: t,
        });
        self.remember(t, &msg, Vec::new());
        self.send(msg);
        Box::pin(async move { reply.ready_id().await.map(|_| ()) })
    }

    pub fn cancel(&self, acting: Option<v1::Acting>, r: &ObjectRef) -> Result<(), Error> {
        match r.name() {
            RefName::Task(t) => {
                self.send(up::Msg::Cancel(v1::Cancel { task: t.0, acting }));
                Ok(())
            }
            RefName::Put(_) => Err(Error::InvalidArgument(
                "only the result of a task can be cancelled".into(),
            )),
        }
    }

    /// The head may forget these tasks once they end, and free their
    /// results (`Runtime::free`).
    pub fn release(&self, refs: &[ObjectRef]) {
        let tasks: Vec<u64> = refs
            .iter()
            .filter_map(|r| match r.name() {
                RefName::Task(t) => Some(t.0),
                RefName::Put(_) => None,
            })
            .collect();
        if !tasks.is_empty() {
            self.send(up::Msg::Release(v1::Release { tasks }));
        }
    }

    pub fn blocked(&self, task: u64, blocked: bool) {
        if task != 0 {
            self.send(up::Msg::Blocked(v1::Blocked { task, blocked }));
        }
    }
}

/// The most bytes of one part of a rejoin report.
const REJOIN_PART: usize = 2 << 20;

/// A report for a restarted head in parts of at most about
/// [`REJOIN_PART`] bytes (one item may make a part larger), the last with
/// `more` unset.
fn rejoin_parts(
    running: Vec<v1::Attempt>,
    actors: Vec<v1::StartActor>,
    objects: Vec<v1::HeldObject>,
) -> Vec<v1::Rejoin> {
    let mut parts = vec![v1::Rejoin::default()];
    let mut size = 0usize;
    let mut room = |len: usize, parts: &mut Vec<v1::Rejoin>| {
        if size > 0 && size + len > REJOIN_PART {
            parts.push(v1::Rejoin::default());
            size = 0;
        }
        size += len;
    };
    for a in running {
        room(ferray_proto::encoded_len(&a), &mut parts);
        if let Some(p) = parts.last_mut() {
            p.running.push(a);
        }
    }
    for a in actors {
        room(ferray_proto::encoded_len(&a), &mut parts);
        if let Some(p) = parts.last_mut() {
            p.actors.push(a);
        }
    }
    for o in objects {
        room(ferray_proto::encoded_len(&o), &mut parts);
        if let Some(p) = parts.last_mut() {
            p.objects.push(o);
        }
    }
    let n = parts.len();
    for (i, p) in parts.iter_mut().enumerate() {
        p.more = i + 1 < n;
    }
    parts
}

/// The arguments that are pending results (see [`Spec`]).
/// The `Actors` service of the node at `addr` (direct calls, results).
async fn actors_at(addr: &str, token: &Token) -> Result<ferray_proto::ActorsClient, String> {
    let ch = ferray_proto::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ferray_proto::actors_client(ch, token))
}

fn task_refs(args: &[Arg<ObjectRef>]) -> Vec<ObjectRef> {
    args.iter()
        .filter_map(|a| match a {
            Arg::Ref(r) if matches!(r.name(), RefName::Task(_)) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

impl Spec {
    /// The message as it goes again: an argument that was a pending result
    /// and is resolved now goes as its object (a restarted head does not
    /// know the task that made it).
    fn again(&self) -> up::Msg {
        let mut msg = self.msg.clone();
        let args = match &mut msg {
            up::Msg::Submit(s) => &mut s.args,
            up::Msg::CallActor(c) => &mut c.args,
            up::Msg::CreateActor(c) => &mut c.args,
            _ => return msg,
        };
        for a in args.iter_mut() {
            if let Some(v1::arg::Kind::Task(t)) = a.kind
                && let Some(id) = self
                    .refs
                    .iter()
                    .find(|r| r.name() == RefName::Task(TaskId(t)))
                    .and_then(ObjectRef::content_id)
            {
                a.kind = Some(v1::arg::Kind::Object(id_bytes(&id)));
            }
        }
        msg
    }
}

enum Located {
    Inline(Bytes),
    Holders(Vec<String>),
}

/// Push an object to the head's store (a client's large put, `ferray put`).
/// `pin`: kept until the head stops (`ferray put`), not by a job.
pub(crate) async fn push(
    addr: &str,
    token: &Token,
    id: ObjectId,
    bytes: Bytes,
    pin: bool,
) -> Result<(), Error> {
    // By content id: a push sent again lands on the same object.
    super::retry("uploading an object", || {
        let bytes = bytes.clone();
        async move {
            let ch = ferray_proto::connect(addr).await?;
            let mut c = ferray_proto::uploads_client(ch, token);
            let mut req = tonic::Request::new(ferray_proto::chunks(id, bytes));
            if pin {
                req.metadata_mut().insert(
                    ferray_proto::PIN_HEADER,
                    tonic::metadata::MetadataValue::from_static("1"),
                );
            }
            c.push(req)
                .await
                .map_err(|s| ferray_proto::from_status("uploading an object", s))?;
            Ok(())
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A large report goes in parts of about two MiB, every item once, in
    /// order, and only the last part says that none follows.
    #[test]
    fn a_rejoin_report_goes_in_bounded_parts() {
        let attempt = |t: u64| v1::Attempt {
            assign: Some(v1::Assign {
                task: t,
                args: vec![v1::ResolvedArg {
                    kind: Some(v1::resolved_arg::Kind::Value(Bytes::from(vec![
                        7u8;
                        300 << 10
                    ]))),
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let running: Vec<_> = (1..=20).map(attempt).collect();
        let objects: Vec<_> = (0..5000u64)
            .map(|i| v1::HeldObject {
                id: Bytes::from(i.to_le_bytes().repeat(4)),
                size: i,
            })
            .collect();
        let parts = rejoin_parts(running, Vec::new(), objects);
        assert!(parts.len() >= 3, "{} parts", parts.len());
        for (i, p) in parts.iter().enumerate() {
            assert!(ferray_proto::encoded_len(p) <= REJOIN_PART + (400 << 10));
            assert_eq!(p.more, i + 1 < parts.len());
        }
        let tasks: Vec<u64> = parts
            .iter()
            .flat_map(|p| p.running.iter())
            .filter_map(|a| a.assign.as_ref().map(|a| a.task))
            .collect();
        assert_eq!(tasks, (1..=20).collect::<Vec<_>>());
        let sizes: Vec<u64> = parts
            .iter()
            .flat_map(|p| p.objects.iter().map(|o| o.size))
            .collect();
        assert_eq!(sizes, (0..5000).collect::<Vec<_>>());
        // Nothing to say: one empty part, the last.
        let empty = rejoin_parts(Vec::new(), Vec::new(), Vec::new());
        assert_eq!(empty.len(), 1);
        assert!(!empty[0].more);
    }
}
