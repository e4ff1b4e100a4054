//! ferray's head: the control plane of a cluster. It keeps the node,
//! component, object, task, actor and job tables, runs the central scheduler
//! ([`sched`]), and serves the `Head` gRPC service plus an `Objects` service
//! for its own store (clients' large puts). It never runs guest code: this
//! crate does not depend on wasmtime.
//!
//! The tables and everything that changes them are a pure state machine
//! (`state`: plain events in, effects out, no I/O, no wire types). This
//! module is its edge: it turns `v1` messages into the state's events and
//! its effects back into messages (`wire`), under one lock, and sends them
//! down the sessions' channels after each handled batch. `Locate` and
//! `WatchJob` wait on notifications the state raises when an object or a job
//! changes.

mod db;
mod groups;
mod http;
pub mod sched;
mod serve;
mod state;
#[cfg(test)]
mod tests;
mod wire;

/// The head's state machine, for the `head_state` fuzz target
/// (`fuzz/`) only: not part of the crate's API, and may change at any time.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::state::{
        Acting, ActorAt, ActorCall, ActorDied, Arg, Assign, CallActor, CreateActor, Done, Effect,
        HEAD_HOLDER, Hello, Input, JobRequest, KillActor, Kind, LiveActor, Made, ObjectLoc, Outbox,
        Outcome, Put, Rejoined, ResolvedArg, RunningAttempt, Save, Saved, StartActor, State,
        Submit, Welcome, WorkerHello,
    };
}

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferray_core::view::JobEvent;
use ferray_core::{ComponentId, Error, JobId, ObjectId};
use ferray_proto::v1;
use ferray_proto::{MAX_OBJECT_BYTES, PROTOCOL_VERSION, Token, chunks, id_bytes, to_status};
use ferray_store::ObjectStore;
use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};
use tonic::{Request, Response, Status, Streaming};

pub use http::{DEFAULT_DASHBOARD_PORT, MAX_BODY_BYTES, NodeMetrics, ROUTES, serve_node_metrics};
pub use sched::{Placement, Scheduler};
pub use serve::{ServeControl, ServeFuture};
use state::{Effect, State};

/// Messages of a batch handled under one hold of the lock.
const HANDLE_SLICE: usize = 64;
/// How often the timings of tasks that left their phase another way
/// (cancelled, their job or node gone) are dropped.
const SWEEP_TIMINGS: Duration = Duration::from_secs(10);
/// How long `Locate` waits for an object being made, pushed or rebuilt.
const LOCATE_WAIT: Duration = Duration::from_secs(120);

/// How the head runs.
#[derive(Debug, Clone)]
pub struct HeadConfig {
    pub token: Token,
    /// A worker silent for this long is declared dead (default 5 s).
    pub node_timeout: Duration,
    /// The head's own store (clients' large puts).
    pub store: ferray_store::StoreConfig,
    /// What one job may hold: tasks and actor calls in flight, live actors,
    /// bytes put, bytes of log kept.
    pub job_caps: ferray_core::JobCaps,
    /// The database that keeps jobs, components, `ferray put` objects and
    /// id counters across a restart of the head (`None`: nothing is kept,
    /// a restarted head is a new cluster).
    pub state_db: Option<std::path::PathBuf>,
}

/// The bytes of messages a session's downward stream may have queued and
/// not yet sent. A session past it cannot keep up and is disconnected (its
/// node declared dead, a client's job ended), rather than buffered without
/// end. A healthy worker never comes near it: what is sent to it in one go
/// is its backlog of assignments (at most 8 per CPU, each with at most
/// 1 MiB of inline arguments and usually far less), so even a 64-CPU node
/// whose every argument travels inline at the cap stays under it; results
/// (at most 64 KiB inline), frees and cancellations are small and follow
/// the pace of the work, and the stream drains in 2 MiB batches.
const DOWN_QUEUE_BYTES: usize = 512 << 20;

/// A session's downward stream: unbounded in messages, bounded in bytes
/// (`cap`, [`DOWN_QUEUE_BYTES`] unless a test says otherwise). Sending
/// never waits, so the head sends under its lock.
struct DownTx {
    tx: mpsc::UnboundedSender<v1::Down>,
    queued: Arc<AtomicUsize>,
    cap: usize,
}

/// The session could not keep up: its queue is full.
struct Full;

impl DownTx {
    /// Queue a message, or say that the queue is full. A message to a
    /// stream that is gone is dropped: its session is closing already.
    fn try_send(&self, msg: v1::Down) -> Result<(), Full> {
        let len = ferray_proto::encoded_len(&msg);
        let before = self.queued.fetch_add(len, Ordering::AcqRel);
        // One message always fits an empty queue, however large.
        if before > 0 && before + len > self.cap {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return Err(Full);
        }
        let _ = self.tx.send(msg);
        Ok(())
    }
}

/// A session's welcome, its first message down on each of its streams:
/// `resumed` with the upward messages the head got, for a resumed one.
fn welcome_down(w: &state::Welcome, resumed: Option<u64>, window: Duration) -> v1::Down {
    v1::Down {
        seq: 0,
        msg: Some(v1::down::Msg::Welcome(v1::Welcome {
            session: w.session,
            node: w.node.map_or(0, |n| n.0),
            id_base: w.session << 32,
            job: w.job.map_or(0, |j| j.0),
            resumed: resumed.is_some(),
            up_seen: resumed.unwrap_or(0),
            resume_window_ms: window.as_millis() as u64,
            rejoin: false,
        })),
    }
}

/// Acknowledge a session's upward messages after this many, at the latest
/// (and at every heartbeat check).
const ACK_EVERY: u64 = 64;

/// A session's downward side across its streams: the messages it was sent
/// and has not acknowledged (sent again when it resumes on a new stream),
/// the stream it has now, and how many of its upward messages were
/// handled.
struct Link {
    /// The stream it has now (`None` while it has none).
    tx: Option<DownTx>,
    /// Which of its streams is the current one: an older stream's reader
    /// that ends does not detach a newer one.
    generation: u64,
    next_seq: u64,
    unacked: std::collections::VecDeque<v1::Down>,
    unacked_bytes: usize,
    /// Upward messages handled, in order, and the count last acknowledged.
    up_seen: u64,
    up_acked: u64,
    /// When its stream broke (while it has none).
    detached: Option<Instant>,
}

impl Link {
    fn new(tx: DownTx) -> Link {
        Link {
            tx: Some(tx),
            generation: 0,
            next_seq: 0,
            unacked: Default::default(),
            unacked_bytes: 0,
            up_seen: 0,
            up_acked: 0,
            detached: None,
        }
    }

    /// Send a message, numbered and kept until acknowledged; `Full` when
    /// what is kept would pass `cap` (one message always fits).
    fn send(&mut self, mut msg: v1::Down, cap: usize) -> Result<(), Full> {
        msg.seq = self.next_seq + 1;
        let len = ferray_proto::encoded_len(&msg);
        if !self.unacked.is_empty() && self.unacked_bytes + len > cap {
            return Err(Full);
        }
        self.next_seq += 1;
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(msg.clone());
        }
        self.unacked_bytes += len;
        self.unacked.push_back(msg);
        Ok(())
    }

    /// The session got its messages up to `seen`.
    fn acked(&mut self, seen: u64) {
        while self.unacked.front().is_some_and(|m| m.seq <= seen) {
            if let Some(m) = self.unacked.pop_front() {
                self.unacked_bytes -= ferray_proto::encoded_len(&m);
            }
        }
    }

    /// Acknowledge the upward messages handled, if there are new ones.
    fn ack(&mut self) {
        if self.up_seen > self.up_acked
            && let Some(tx) = &self.tx
        {
            self.up_acked = self.up_seen;
            let _ = tx.try_send(v1::Down {
                seq: 0,
                msg: Some(v1::down::Msg::Ack(v1::Ack { seen: self.up_seen })),
            });
        }
    }
}

/// The receiving end of a session's channel (tests read it as a plain
/// receiver; the session's stream takes it in batches, [`DownRx::batches`]).
struct DownRx {
    rx: mpsc::UnboundedReceiver<v1::Down>,
    queued: Arc<AtomicUsize>,
}

impl std::ops::Deref for DownRx {
    type Target = mpsc::UnboundedReceiver<v1::Down>;
    fn deref(&self) -> &Self::Target {
        &self.rx
    }
}

impl std::ops::DerefMut for DownRx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.rx
    }
}

fn down_channel(cap: usize) -> (DownTx, DownRx) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        DownTx {
            tx,
            queued: queued.clone(),
            cap,
        },
        DownRx { rx, queued },
    )
}

impl DownRx {
    /// The messages in batches of up to [`ferray_proto::BATCH_BYTES`]:
    /// one waited for, then whatever else is already there.
    fn batches(self) -> impl Stream<Item = Vec<v1::Down>> + Send + 'static {
        let DownRx { rx, queued } = self;
        // The state keeps a message that did not fit for the next batch.
        futures::stream::unfold((rx, None::<v1::Down>), move |(mut rx, held)| {
            let queued = queued.clone();
            async move {
                let first = match held {
                    Some(m) => m,
                    None => rx.recv().await?,
                };
                let mut bytes = ferray_proto::encoded_len(&first);
                let mut batch = vec![first];
                let mut next = None;
                while let Ok(m) = rx.try_recv() {
                    let len = ferray_proto::encoded_len(&m);
                    if bytes + len > ferray_proto::BATCH_BYTES {
                        next = Some(m);
                        break;
                    }
                    bytes += len;
                    batch.push(m);
                }
                // What leaves no longer counts (a held message still does,
                // until it leaves with the next batch).
                queued.fetch_sub(bytes, Ordering::AcqRel);
                Some((batch, (rx, next)))
            }
        })
    }
}

/// What the head's lock guards: the state machine, and what carries out
/// its effects (the sessions' channels, the head's store, the waiters on
/// objects and jobs).
struct Core {
    state: State,
    /// Each open session's downward side.
    sessions: HashMap<u64, Link>,
    store: Arc<ObjectStore>,
    /// `Locate` calls waiting for an object.
    object_waits: HashMap<ObjectId, Arc<Notify>>,
    /// `WatchJob` streams following a job.
    job_waits: HashMap<JobId, Arc<Notify>>,
    /// The bytes a session's channel may queue ([`DOWN_QUEUE_BYTES`]).
    down_queue_bytes: usize,
    /// Scheduling and run times for `/metrics`, taken as messages pass.
    timings: http::metrics::Timings,
    /// The dashboard's charts: a sample of the cluster a second.
    history: http::history::History,
    /// Where what survives a restart is written.
    db: Option<Arc<db::Db>>,
}

impl Core {
    /// Carry out what the state asked for since the last time, in order:
    /// messages go to their sessions (a closed one's channel is dropped, which
    /// ends its stream), the head's store lets go of freed objects, and
    /// waiters on changed objects and jobs wake up.
    ///
    /// A session whose channel is full cannot keep up: its channel is
    /// dropped (its stream ends) and the state closes it as a broken
    /// connection, whose effects are carried out in turn. Nothing here waits.
    fn flush(&mut self) {
        let now = Instant::now();
        loop {
            let sent = std::mem::take(&mut self.state.outbox().sent);
            let mut lagging = Vec::new();
            for (session, e) in sent {
                if let Effect::Assign(a) = &e {
                    self.timings.assigned(a.task, now);
                }
                if let Effect::Close = e {
                    self.sessions.remove(&session);
                } else if let Some(link) = self.sessions.get_mut(&session)
                    && let Some(msg) = wire::down(e)
                    && link.send(msg, self.down_queue_bytes).is_err()
                {
                    self.sessions.remove(&session);
                    lagging.push(session);
                }
            }
            if lagging.is_empty() {
                break;
            }
            for session in lagging {
                tracing::warn!(
                    "session {session} could not keep up with its messages \
                     (over {} bytes queued): disconnected",
                    self.down_queue_bytes
                );
                self.state
                    .close_session(session, "it could not keep up with its messages");
            }
        }
        let out = self.state.outbox();
        if !out.saves.is_empty() {
            let saves = std::mem::take(&mut out.saves);
            if let Some(db) = &self.db {
                db.save(saves);
            }
        }
        for id in out.head_frees.drain(..) {
            self.store.decref(&id);
        }
        if self.object_waits.is_empty() {
            out.objects.clear();
        }
        for id in out.objects.drain(..) {
            if let Some(n) = self.object_waits.get(&id) {
                n.notify_waiters();
            }
        }
        if self.job_waits.is_empty() {
            out.jobs.clear();
        }
        for id in out.jobs.drain(..) {
            if let Some(n) = self.job_waits.get(&id) {
                n.notify_waiters();
            }
        }
    }
}

/// A registration in one of [`Core`]'s waiter tables, removed when its last
/// waiter goes (also when the RPC is dropped mid-wait).
struct Waiting<'a, K: std::hash::Hash + Eq + Copy> {
    core: &'a Mutex<Core>,
    key: K,
    table: fn(&mut Core) -> &mut HashMap<K, Arc<Notify>>,
}

impl<K: std::hash::Hash + Eq + Copy> Waiting<'_, K> {
    /// A wake-up for the next change of the key, registered now: call it
    /// under the lock, before the state is read, so no change is missed.
    fn next_change(&self, core: &mut Core) -> tokio::sync::futures::OwnedNotified {
        (self.table)(core)
            .entry(self.key)
            .or_default()
            .clone()
            .notified_owned()
    }
}

impl<K: std::hash::Hash + Eq + Copy> Drop for Waiting<'_, K> {
    fn drop(&mut self) {
        let mut core = self.core.lock();
        let table = (self.table)(&mut core);
        if table
            .get(&self.key)
            .is_some_and(|n| Arc::strong_count(n) == 1)
        {
            table.remove(&self.key);
        }
    }
}

/// The head's shared state and services.
#[derive(Clone)]
pub struct Head {
    core: Arc<Mutex<Core>>,
    store: Arc<ObjectStore>,
    config: Arc<HeadConfig>,
    /// The head process's serve controller, when it runs one.
    serve: Arc<std::sync::OnceLock<Arc<dyn ServeControl>>>,
    /// Its application, as the database has it, and the application the
    /// earlier head ran (to deploy again, [`Head::restore_serve_app`]).
    serve_app: Arc<serve::SavedApp>,
    /// Collective groups still forming.
    groups: Arc<groups::Groups>,
}

impl Head {
    /// A head whose object server is reachable at `address`.
    pub fn new(config: HeadConfig, address: String) -> Result<Head, Error> {
        let store = Arc::new(ObjectStore::new(config.store.clone())?);
        let mut state = State::new(address);
        state.job_caps = config.job_caps;
        let mut serve_app = None;
        let db = match &config.state_db {
            Some(path) => {
                let (db, mut saved) = db::Db::open(path)?;
                let pinned = std::mem::take(&mut saved.pinned);
                serve_app = saved.serve_app.take();
                if !saved.jobs.is_empty() || !saved.components.is_empty() || !pinned.is_empty() {
                    tracing::info!(
                        "the head takes back {} jobs, {} components and {} put objects from {}",
                        saved.jobs.len(),
                        saved.components.len(),
                        pinned.len(),
                        path.display()
                    );
                }
                state.restore(saved, Instant::now());
                if state.rejoining() {
                    tracing::info!(
                        "the head waits up to {:?} for the earlier head's workers and clients",
                        state::REJOIN_WINDOW
                    );
                }
                for (id, bytes) in pinned {
                    let size = bytes.len() as u64;
                    store.put_with_id(id, bytes)?;
                    state.pushed(id, size, true);
                }
                Some(Arc::new(db))
            }
            None => None,
        };
        let core = Core {
            state,
            sessions: HashMap::new(),
            store: store.clone(),
            object_waits: HashMap::new(),
            job_waits: HashMap::new(),
            down_queue_bytes: DOWN_QUEUE_BYTES,
            timings: Default::default(),
            history: Default::default(),
            db,
        };
        // What the restore changed (jobs ended, drivers queued) is saved.
        let mut core = core;
        core.flush();
        let serve_app =
            serve::SavedApp::restored(serve_app, |id| core.state.components.get(id).cloned());
        Ok(Head {
            core: Arc::new(Mutex::new(core)),
            store,
            config: Arc::new(config),
            serve: Default::default(),
            serve_app: Arc::new(serve_app),
            groups: Default::default(),
        })
    }

    /// The head stops: jobs that have not ended are stopped (a head
    /// started again on the same database does not run them again), and
    /// what the database was sent is committed before this returns.
    pub fn close(&self) {
        self.with(|st| st.stop_all_jobs("the head was stopped"));
        let db = self.core.lock().db.clone();
        if let Some(db) = db {
            db.sync();
        }
    }

    /// Change the state under the lock, then carry out its effects.
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut core = self.core.lock();
        let r = f(&mut core.state);
        core.flush();
        r
    }

    /// Serve the head's services on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let monitor = {
            let head = self.clone();
            tokio::spawn(async move {
                let timeout = head.config.node_timeout;
                let every = (timeout / 5).max(Duration::from_millis(50));
                let mut swept = Instant::now();
                let mut checked = Instant::now();
                loop {
                    tokio::time::sleep(every).await;
                    head.with(|st| {
                        // A check long after the last one means the head
                        // itself stood still (its lock held, its threads
                        // starved): the heartbeats that came meanwhile
                        // wait behind this lock, so no node is judged by
                        // them until the next check.
                        let now = Instant::now();
                        if now.saturating_duration_since(checked) <= timeout / 2 {
                            st.check_heartbeats(now, timeout);
                        } else {
                            tracing::warn!(
                                "the head stood still for {:?}: heartbeats are checked again at the next tick",
                                now.saturating_duration_since(checked)
                            );
                        }
                        checked = now;
                        st.save_changed_jobs();
                    });
                    head.tick_links(timeout);
                    // The timings of tasks that left their phase another way.
                    if swept.elapsed() >= SWEEP_TIMINGS {
                        swept = Instant::now();
                        let mut core = head.core.lock();
                        let Core { state, timings, .. } = &mut *core;
                        timings.sweep(state);
                    }
                }
            })
        };
        let token = self.config.token.clone();
        let objects = HeadObjects(self.clone());
        let incoming = ferray_proto::incoming(listener);
        let out = ferray_proto::server()
            .http2_keepalive_interval(Some(Duration::from_secs(2)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            .add_service(ferray_proto::head_server(self, &token))
            .add_service(ferray_proto::objects_server(objects.clone(), &token))
            .add_service(ferray_proto::uploads_server(objects, &token))
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .map_err(|e| Error::System(format!("the head's server failed: {e}")));
        monitor.abort();
        out
    }

    /// A batch of a session's messages, under one hold of the lock.
    fn handle(&self, session: u64, msgs: Vec<v1::Up>) {
        use v1::up;
        let mut core = self.core.lock();
        let Core {
            state: st,
            timings,
            sessions,
            ..
        } = &mut *core;
        let now = Instant::now();
        st.touch(session, now);
        for m in msgs {
            let Some(link) = sessions.get_mut(&session) else {
                // Closed (by the head, or by its own `Bye`).
                break;
            };
            if m.seq != 0 {
                if m.seq <= link.up_seen {
                    // Got before the stream broke, sent again.
                    continue;
                }
                if m.seq != link.up_seen + 1 {
                    tracing::warn!(
                        "session {session}: message {} after {}: closed",
                        m.seq,
                        link.up_seen
                    );
                    st.close_session(session, "its messages arrived out of order");
                    break;
                }
                link.up_seen = m.seq;
            }
            let Some(m) = m.msg else { continue };
            match m {
                up::Msg::Ack(a) => {
                    link.acked(a.seen);
                    continue;
                }
                up::Msg::Bye(_) => {
                    st.close_session(session, "it left");
                    break;
                }
                up::Msg::Rejoin(r) => {
                    st.rejoined(session, wire::rejoined(r));
                    continue;
                }
                _ => {}
            }
            match wire::input(m) {
                Ok(Some(input)) => {
                    match &input {
                        state::Input::Submit(s) => timings.submitted(s.task, now),
                        state::Input::Started(t) => timings.started(*t, now),
                        state::Input::Done(d) => timings.done(d.task, now),
                        _ => {}
                    }
                    st.handle(session, input)
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("session {session}: a put was refused: {e}"),
            }
        }
        if let Some(link) = sessions.get_mut(&session)
            && link.up_seen >= link.up_acked + ACK_EVERY
        {
            link.ack();
        }
        // Once per batch: what the messages freed or added is placed now.
        st.pump();
        core.flush();
    }

    /// The session's stream `generation` broke (or ended without `Bye`):
    /// the session waits, with what it was sent kept, to be resumed on a
    /// new stream within the node timeout.
    fn detach(&self, session: u64, generation: u64) {
        let mut core = self.core.lock();
        if let Some(link) = core.sessions.get_mut(&session)
            && link.generation == generation
        {
            link.tx = None;
            link.detached = Some(Instant::now());
        }
    }

    /// Every heartbeat check: sessions acknowledge what they got, and one
    /// whose stream broke longer than `timeout` ago is over.
    fn tick_links(&self, timeout: Duration) {
        let mut core = self.core.lock();
        let now = Instant::now();
        let mut gone = Vec::new();
        for (id, link) in core.sessions.iter_mut() {
            link.ack();
            if link
                .detached
                .is_some_and(|t| now.saturating_duration_since(t) > timeout)
            {
                gone.push(*id);
            }
        }
        for id in gone {
            core.state.close_session(
                id,
                "its connection broke and it did not come back within the node timeout",
            );
        }
        core.flush();
    }

    /// A session resumes on a new stream: its welcome says how many of its
    /// messages the head got, then what it was sent and did not get
    /// follows, in order. Refused when the session is over.
    fn resume(&self, hello: &v1::Hello) -> Result<(u64, u64, DownRx), Status> {
        let mut core = self.core.lock();
        let session = hello.resume;
        let timeout = self.config.node_timeout;
        let over = || {
            Status::failed_precondition(format!(
                "session {session} is over (the head closed it or does not know it): join as new"
            ))
        };
        if !core.sessions.contains_key(&session) && core.state.rejoining() {
            return self.rejoin(&mut core, hello);
        }
        let welcome = core.state.session_welcome(session).ok_or_else(over)?;
        let Core {
            sessions, state, ..
        } = &mut *core;
        let link = sessions.get_mut(&session).ok_or_else(over)?;
        let (tx, rx) = down_channel(usize::MAX);
        let _ = tx.try_send(welcome_down(&welcome, Some(link.up_seen), timeout));
        link.up_acked = link.up_seen;
        link.acked(hello.down_seen);
        for m in &link.unacked {
            let _ = tx.try_send(m.clone());
        }
        link.tx = Some(tx);
        link.generation += 1;
        link.detached = None;
        let generation = link.generation;
        state.touch(session, Instant::now());
        tracing::info!("session {session} resumed on a new stream");
        Ok((session, generation, rx))
    }

    /// A session of the earlier head comes back to this restarted one: its
    /// welcome says so (`rejoin`), and its numbering starts again; its
    /// report of what it had comes first.
    fn rejoin(&self, core: &mut Core, hello: &v1::Hello) -> Result<(u64, u64, DownRx), Status> {
        let session = hello.resume;
        let h = wire::hello(hello).map_err(|e| to_status(&e))?;
        let welcome = core
            .state
            .rejoin_session(session, &h, Instant::now())
            .map_err(|e| match e {
                Error::NotFound(_) => Status::failed_precondition(format!(
                    "session {session} is over (the head closed it or does not know it): join as new"
                )),
                e => to_status(&e),
            })?;
        let (tx, rx) = down_channel(usize::MAX);
        let mut down = welcome_down(&welcome, None, self.config.node_timeout);
        if let Some(v1::down::Msg::Welcome(w)) = &mut down.msg {
            w.rejoin = true;
        }
        let _ = tx.try_send(down);
        core.sessions.insert(session, Link::new(tx));
        core.flush();
        tracing::info!("session {session} of the earlier head came back");
        Ok((session, 0, rx))
    }

    /// A session opens: the state's welcome is its first message down.
    fn open(&self, hello: &v1::Hello) -> Result<(u64, DownRx), Status> {
        let hello = wire::hello(hello).map_err(|e| to_status(&e))?;
        let mut core = self.core.lock();
        // The link bounds what is queued and not acknowledged.
        let (tx, rx) = down_channel(usize::MAX);
        let welcome = core
            .state
            .open_session(&hello, Instant::now())
            .map_err(|e| to_status(&e))?;
        let session = welcome.session;
        let _ = tx.try_send(welcome_down(&welcome, None, self.config.node_timeout));
        core.sessions.insert(session, Link::new(tx));
        // Queued work may go to the new node now that it is welcomed.
        core.state.pump();
        core.flush();
        Ok((session, rx))
    }

    /// A page of the cluster's state (`ferray status`, `ferray list`):
    /// `what` to list, at most `limit` entries (capped by the head) after
    /// the cursor `after` (the previous page's `next`).
    pub fn cluster_state(
        &self,
        what: &str,
        after: &str,
        limit: usize,
        filter: &ferray_core::view::ListFilter,
    ) -> Result<v1::ClusterState, Error> {
        let page = self
            .core
            .lock()
            .state
            .cluster_page_where(what, after, limit, filter)?;
        Ok(ferray_proto::cluster_view_to(page.view, page.next))
    }

    /// Submit a job (`Head.SubmitJob`, `POST /api/jobs/`), with its
    /// component's bytes when they came with it and the submitter's key
    /// (empty: none; a key seen before gets its job again); its driver's
    /// wait for a node is timed from now.
    fn submit(
        &self,
        req: state::JobRequest,
        key: &str,
        bytes: Option<Bytes>,
    ) -> Result<JobId, Error> {
        let mut core = self.core.lock();
        let now = Instant::now();
        if let Some(bytes) = bytes {
            core.state.upload_component(req.component, bytes, now);
        }
        let job = core.state.submit_job_keyed(req, key);
        if let Ok(job) = job
            && let Some(driver) = core.state.job_driver(job)
        {
            core.timings.submitted(driver, now);
        }
        core.flush();
        job
    }

    fn job_info_of(&self, job: JobId) -> Option<ferray_core::view::JobInfo> {
        self.core.lock().state.job_info(job)
    }

    fn job_info(&self, job: JobId) -> Option<v1::JobInfo> {
        self.core
            .lock()
            .state
            .job_info(job)
            .map(ferray_proto::job_info_to)
    }
}

/// The longest key of a job submission (`JobRequest.key`).
const MAX_SUBMISSION_KEY: usize = 256;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn job_key(k: &v1::JobKey) -> JobId {
    JobId(k.job)
}

#[tonic::async_trait]
impl v1::head_server::Head for Head {
    type SessionStream = BoxStream<v1::DownBatch>;

    async fn session(
        &self,
        req: Request<Streaming<v1::UpBatch>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        use v1::up;
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello within 10s"))??;
        let mut first = first.map(|b| b.msgs).unwrap_or_default();
        let hello = match first.first_mut().and_then(|m| m.msg.take()) {
            Some(up::Msg::Hello(h)) => h,
            _ => return Err(Status::invalid_argument("a session starts with a hello")),
        };
        first.remove(0);
        if hello.protocol != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "protocol version {} does not match the head's {PROTOCOL_VERSION}: run the same ferray release on every node",
                hello.protocol
            )));
        }
        let (session, generation, rx) = if hello.resume != 0 {
            self.resume(&hello)?
        } else {
            let (session, rx) = self.open(&hello)?;
            (session, 0, rx)
        };
        let head = self.clone();
        if !first.is_empty() {
            head.handle(session, first);
        }
        tokio::spawn(async move {
            let why = loop {
                match inbound.message().await {
                    Ok(Some(batch)) => {
                        // In slices, so that other sessions (and this
                        // runtime's other tasks) get the lock in between.
                        let mut msgs = batch.msgs;
                        while msgs.len() > HANDLE_SLICE {
                            let rest = msgs.split_off(HANDLE_SLICE);
                            head.handle(session, msgs);
                            msgs = rest;
                            tokio::task::yield_now().await;
                        }
                        head.handle(session, msgs);
                    }
                    // Without a `Bye` first (which closes the session
                    // at once): the stream broke.
                    Ok(None) => break "its stream ended".to_string(),
                    Err(e) => break format!("its connection broke: {}", e.message()),
                }
            };
            tracing::debug!("session {session}: {why}");
            head.detach(session, generation);
        });
        Ok(Response::new(Box::pin(
            rx.batches().map(|msgs| Ok(v1::DownBatch { msgs })),
        )))
    }

    async fn upload_component(
        &self,
        req: Request<Streaming<v1::Chunk>>,
    ) -> Result<Response<v1::ObjectKey>, Status> {
        let (id, bytes) = ferray_proto::assemble(req.into_inner(), None, MAX_OBJECT_BYTES)
            .await
            .map_err(|e| to_status(&e))?;
        let cid = ComponentId::from_bytes(*id.as_bytes());
        self.core
            .lock()
            .state
            .upload_component(cid, bytes, Instant::now());
        tracing::info!("component {} uploaded", cid.short());
        Ok(Response::new(v1::ObjectKey { id: id_bytes(&id) }))
    }

    type FetchComponentStream = BoxStream<v1::Chunk>;

    async fn fetch_component(
        &self,
        req: Request<v1::ObjectKey>,
    ) -> Result<Response<Self::FetchComponentStream>, Status> {
        let id = ferray_proto::object_id(&req.get_ref().id).map_err(|e| to_status(&e))?;
        let cid = ComponentId::from_bytes(*id.as_bytes());
        let bytes: Bytes = self
            .core
            .lock()
            .state
            .components
            .get(&cid)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("component {} is not here", cid.short())))?;
        Ok(Response::new(Box::pin(chunks(id, bytes).map(Ok))))
    }

    async fn locate(&self, req: Request<v1::ObjectKey>) -> Result<Response<v1::ObjectLoc>, Status> {
        let id = ferray_proto::object_id(&req.get_ref().id).map_err(|e| to_status(&e))?;
        // Wait while it is being made, pushed or rebuilt: the state tells
        // when it gets a holder, fails or goes.
        let deadline = tokio::time::Instant::now() + LOCATE_WAIT;
        let waiting = Waiting {
            core: &self.core,
            key: id,
            table: |c| &mut c.object_waits,
        };
        loop {
            let changed = {
                let mut core = self.core.lock();
                let changed = waiting.next_change(&mut core);
                let now = core.state.locate(id);
                core.flush();
                match now {
                    Ok(Some(loc)) => return Ok(Response::new(wire::loc(loc))),
                    Ok(None) => changed,
                    Err(e) => return Err(to_status(&e)),
                }
            };
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(Status::deadline_exceeded(format!(
                    "object {} was not rebuilt within {}s",
                    id.short(),
                    LOCATE_WAIT.as_secs()
                )));
            }
        }
    }

    async fn submit_job(
        &self,
        req: Request<v1::JobRequest>,
    ) -> Result<Response<v1::JobInfo>, Status> {
        let req = req.into_inner();
        let key = req.key.clone();
        // A key is kept with its job for the job's life in the head's
        // tables and database: a few dozen bytes of randomness, not data.
        if key.len() > MAX_SUBMISSION_KEY {
            return Err(Status::invalid_argument(format!(
                "a job submission's key has at most {MAX_SUBMISSION_KEY} bytes, not {}",
                key.len()
            )));
        }
        let req = wire::job_request(req).map_err(|e| to_status(&e))?;
        let job = self.submit(req, &key, None);
        let info = job.and_then(|job| {
            self.job_info_of(job)
                .ok_or_else(|| Error::System("the job vanished".into()))
        });
        Ok(Response::new(ferray_proto::job_info_to(
            info.map_err(|e| to_status(&e))?,
        )))
    }

    type WatchJobStream = BoxStream<v1::JobEvent>;

    async fn watch_job(
        &self,
        req: Request<v1::JobKey>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let job = job_key(req.get_ref());
        let follow = req.get_ref().follow;
        let from = req.get_ref().from_line;
        if self.job_info(job).is_none() {
            return Err(Status::not_found(format!("no {job}")));
        }
        let (tx, rx) = mpsc::channel(64);
        let head = self.clone();
        tokio::spawn(async move { head.follow_job(job, follow, from, tx).await });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn stop_job(&self, req: Request<v1::JobKey>) -> Result<Response<v1::JobInfo>, Status> {
        let job = job_key(req.get_ref());
        let info = self.with(|st| {
            st.stop_job(job)?;
            st.job_info(job)
                .ok_or_else(|| Error::NotFound(format!("no {job}")))
        });
        Ok(Response::new(ferray_proto::job_info_to(
            info.map_err(|e| to_status(&e))?,
        )))
    }

    async fn cluster(
        &self,
        req: Request<v1::ClusterRequest>,
    ) -> Result<Response<v1::ClusterState>, Status> {
        let r = req.get_ref();
        let filter = ferray_core::view::ListFilter {
            job: (r.job != 0).then_some(JobId(r.job)),
            state: (!r.state.is_empty()).then(|| r.state.clone()),
            function: (!r.function.is_empty()).then(|| r.function.clone()),
        };
        let page = self
            .cluster_state(&r.what, &r.after, r.limit as usize, &filter)
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(page))
    }

    async fn serve_deploy(
        &self,
        req: Request<v1::ServeApp>,
    ) -> Result<Response<v1::ServeStatus>, Status> {
        self.deploy_app(req.into_inner()).await
    }

    async fn serve_status(
        &self,
        _req: Request<v1::ServeKey>,
    ) -> Result<Response<v1::ServeStatus>, Status> {
        self.app_status().await
    }

    async fn serve_delete(
        &self,
        _req: Request<v1::ServeKey>,
    ) -> Result<Response<v1::ServeStatus>, Status> {
        self.delete_app().await
    }

    async fn serve_call(
        &self,
        req: Request<v1::ServeCall>,
    ) -> Result<Response<v1::ServeAnswer>, Status> {
        self.call_deployment(req.into_inner()).await
    }

    async fn join_group(
        &self,
        req: Request<v1::GroupJoin>,
    ) -> Result<Response<v1::GroupPlan>, Status> {
        let plan = self.groups.join(req.into_inner()).await?;
        Ok(Response::new(v1::GroupPlan {
            addresses: plan.as_ref().clone(),
        }))
    }
}

impl Head {
    /// A job's log lines and progress as they come, then its end (or, not
    /// following, what there is now). Waits for the state to say that the
    /// job changed; stops when the watcher goes.
    async fn follow_job(
        &self,
        job: JobId,
        follow: bool,
        from: u64,
        tx: mpsc::Sender<Result<v1::JobEvent, Status>>,
    ) {
        let waiting = Waiting {
            core: &self.core,
            key: job,
            table: |c| &mut c.job_waits,
        };
        let mut cursor = from;
        let mut last = (u64::MAX, u64::MAX);
        loop {
            let (lines, info, changed) = {
                let mut core = self.core.lock();
                let changed = waiting.next_change(&mut core);
                let (lines, next) = core.state.job_logs(job, cursor);
                cursor = next;
                (lines, core.state.job_info(job), changed)
            };
            let mut events: Vec<JobEvent> = lines.into_iter().map(JobEvent::Log).collect();
            let Some(info) = info else { return };
            if (info.tasks_done, info.tasks_total) != last {
                last = (info.tasks_done, info.tasks_total);
                events.push(JobEvent::Progress {
                    done: last.0,
                    total: last.1,
                });
            }
            let finished = !follow || info.state.finished();
            if finished {
                events.push(JobEvent::Finished(info));
            }
            for e in events {
                if tx.send(Ok(ferray_proto::job_event_to(e))).await.is_err() {
                    return;
                }
            }
            if finished {
                return;
            }
            tokio::select! {
                _ = changed => {}
                _ = tx.closed() => return,
            }
        }
    }
}

/// The head's own store, served to pullers; clients' large puts arrive in
/// it through `Uploads`.
#[derive(Clone)]
struct HeadObjects(Head);

impl ferray_proto::ObjectSource for HeadObjects {
    fn object(&self, id: &ferray_core::ObjectId) -> Result<Bytes, Error> {
        self.0.store.get(id)
    }
}

#[tonic::async_trait]
impl v1::uploads_server::Uploads for HeadObjects {
    async fn push(
        &self,
        req: Request<Streaming<v1::Chunk>>,
    ) -> Result<Response<v1::ObjectKey>, Status> {
        // `ferray put` keeps its object until the head stops; a client's
        // put belongs to its job.
        let pin = req.metadata().contains_key(ferray_proto::PIN_HEADER);
        let (id, bytes) = ferray_proto::assemble(req.into_inner(), None, MAX_OBJECT_BYTES)
            .await
            .map_err(|e| to_status(&e))?;
        let size = bytes.len() as u64;
        let held = self.0.store.contains(&id);
        if !held {
            self.0
                .store
                .put_with_id(id, bytes.clone())
                .map_err(|e| to_status(&e))?;
        }
        let db = self.0.core.lock().db.clone();
        if pin && let Some(db) = db {
            db.save_pinned(id, bytes);
        }
        self.0.with(|st| st.pushed(id, size, pin));
        Ok(Response::new(v1::ObjectKey { id: id_bytes(&id) }))
    }
}

/// The address to print for a listener bound to `addr` (a wildcard becomes
/// loopback).
pub fn advertised(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    }
}

#[cfg(test)]
mod down_tests {
    use super::*;

    /// A session that does not read its messages is disconnected once its
    /// channel is full, as a broken connection: its stream ends and its
    /// client's job is over (a worker's node would be declared dead).
    #[tokio::test]
    async fn a_session_that_cannot_keep_up_is_disconnected() {
        let config = HeadConfig {
            token: Token::new("test-token").expect("a token"),
            node_timeout: Duration::from_secs(5),
            store: ferray_store::StoreConfig::default(),
            job_caps: Default::default(),
            state_db: None,
        };
        let head = Head::new(config, "head:1".into()).expect("a head");
        head.core.lock().down_queue_bytes = 4 << 10;
        let hello = v1::Hello {
            protocol: PROTOCOL_VERSION,
            worker: false,
            resources: None,
            object_address: String::new(),
            name: "slow".into(),
            resume: 0,
            down_seen: 0,
            in_head: false,
            results_key: Bytes::new(),
        };
        let (client, mut rx) = head.open(&hello).expect("a client");
        let welcome = match rx.try_recv() {
            Ok(v1::Down {
                msg: Some(v1::down::Msg::Welcome(w)),
                ..
            }) => w,
            other => panic!("{other:?}"),
        };
        // Each submission of a component the head lacks is answered with
        // an error down the session, which nobody reads.
        let sent = 200;
        for i in 1..=sent {
            let submit = v1::Submit {
                task: welcome.id_base | i,
                acting: None,
                component: Bytes::from(vec![7; 32]),
                function: "f".into(),
                args: vec![],
                options: None,
            };
            head.handle(
                client,
                vec![v1::Up {
                    seq: 0,
                    msg: Some(v1::up::Msg::Submit(submit)),
                }],
            );
        }
        assert!(!head.core.lock().sessions.contains_key(&client));
        let info = head.job_info(JobId(welcome.job)).expect("the job");
        assert_ne!(info.state, "RUNNING", "the client's job ended");
        let mut got = 0;
        while rx.recv().await.is_some() {
            got += 1;
        }
        assert!(got > 0 && got < sent, "{got} messages queued");
    }
}
