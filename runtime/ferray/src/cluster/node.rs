//! A worker node: joins a head, announces its resources, runs the tasks and
//! actors the head assigns with this process's runtime (the same host,
//! store and admission as the embedded runtime), and serves its objects to
//! other nodes in chunks.

use std::net::SocketAddr;
use std::sync::Arc;
#[cfg(feature = "testing")]
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use ferray_core::{ActorId, Arg, ComponentId, Error, JobId, ObjectId, TaskId};
use ferray_host::Loaded;
use ferray_proto::v1::{self, down, up};
use ferray_proto::{INLINE_MAX, MAX_OBJECT_BYTES, PROTOCOL_VERSION, Token, id_bytes};
use tokio::sync::{Notify, mpsc};

use super::backend::Remote;
use super::session::Session;
use crate::Runtime;
use crate::objects::ObjectRef;
use crate::runtime::{RtInner, TaskCtx};

/// How a worker joins.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The head's `host:port`.
    pub head: String,
    pub token: Token,
    /// The address its object server binds (port 0: any free port).
    pub bind: SocketAddr,
    /// A name shown in `ferray list nodes`.
    pub name: String,
    /// It runs in the head's own process (it never outlives the head).
    pub in_head: bool,
    /// How long it tries to reach a head that went away (a head that
    /// comes back on its database within it takes the node back).
    pub reconnect: Duration,
    /// Fault injection for tests: corrupt this many outgoing transfers
    /// (only with the `testing` feature; never in a release build).
    #[cfg(feature = "testing")]
    pub corrupt_transfers: u32,
}

impl WorkerConfig {
    /// A worker of the head at `head` whose object server binds `bind`.
    pub fn new(head: String, token: Token, bind: SocketAddr, name: String) -> Self {
        WorkerConfig {
            head,
            token,
            bind,
            name,
            in_head: false,
            reconnect: super::RECONNECT_TIMEOUT,
            // Tests make a node corrupt its first transfers with
            // FERRAY_TESTING_CORRUPT_TRANSFERS=N (the `testing` feature only).
            #[cfg(feature = "testing")]
            corrupt_transfers: std::env::var("FERRAY_TESTING_CORRUPT_TRANSFERS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        }
    }
}

/// A worker that joined: its node id and object server address.
#[derive(Debug, Clone)]
pub struct Joined {
    pub node: u64,
    pub object_address: String,
}

/// Where a direct call's answer goes: the caller's `Actors.Calls` stream.
type Reply = mpsc::UnboundedSender<Result<v1::DirectReply, tonic::Status>>;

/// A call in an actor's mailbox on this node: routed by the head, or
/// straight from its caller (`reply`).
struct Queued {
    call: v1::ActorCall,
    reply: Option<Reply>,
}

struct Node {
    rt: Arc<RtInner>,
    session: Arc<Session>,
    running: DashMap<u64, Running>,
    actors: DashMap<u64, mpsc::UnboundedSender<Queued>>,
    /// How its actors were started, and the calls they run (for a
    /// restarted head).
    actor_starts: DashMap<u64, v1::StartActor>,
    calls: DashMap<u64, v1::Attempt>,
    /// The last attempts that ended here (a restarted head is told of
    /// those whose `Done` the earlier one may not have got).
    finished: parking_lot::Mutex<std::collections::VecDeque<(u64, v1::Attempt)>>,
    /// Why actors that were here are not (they could not start, died or
    /// were killed): a call for one gets that reason; at most
    /// [`MAX_DEAD_KEPT`].
    gone: DashMap<u64, String>,
    load: tokio::sync::Mutex<()>,
    /// Calls among `calls` that came straight from their callers (the head
    /// records those from the callers' own reports, not from this node's).
    direct: DashMap<u64, ()>,
    /// Direct calls the head asked about that never came: refused if they
    /// come after all (their callers were told they failed).
    disowned: parking_lot::Mutex<std::collections::HashSet<u64>>,
    /// Sessions that listen for their tasks' results here
    /// (`Actors.Results`), by their results key.
    results: DashMap<[u8; 16], mpsc::Sender<Result<v1::DirectReply, tonic::Status>>>,
}

/// A task attempt that runs here.
struct Running {
    cancel: Arc<Notify>,
    assign: v1::Assign,
    started: Arc<std::sync::atomic::AtomicBool>,
}

/// How many sessions may listen for results on one node, and how many
/// results wait for one listener that does not read (more are dropped: the
/// head answers those tasks too).
const MAX_RESULT_LISTENERS: usize = 4_096;
const RESULTS_QUEUED: usize = 1_024;

/// How many ended attempts a node remembers for a restarted head.
const FINISHED_KEPT: usize = 4_096;

/// How many reasons of actors that could not start a node keeps.
const MAX_DEAD_KEPT: usize = 10_000;

/// Join the cluster at `config.head` and work until the head goes away
/// (`Err` with the reason) or `shutdown` resolves. `joined` is called once
/// the head has welcomed the node.
/// The most objects one heartbeat reports as spilled, and as read back
/// (the rest go with the next ones): a heartbeat stays small.
const MAX_SPILL_REPORT: usize = 4_096;
/// Every this many heartbeats, a worker reports all its spilled objects again.
const SPILL_REPORT_AGAIN: u64 = 30;

pub async fn run_worker(
    rt: &Runtime,
    config: WorkerConfig,
    joined: impl FnOnce(Joined) + Send,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    let inner = rt.inner().clone();
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|e| Error::System(format!("cannot listen on {}: {e}", config.bind)))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::System(format!("no local address: {e}")))?;
    let object_address = local.to_string();
    let total = inner.admission.total();
    let hello = v1::Hello {
        protocol: PROTOCOL_VERSION,
        worker: true,
        resources: Some(ferray_proto::resources_to(&total)),
        object_address: object_address.clone(),
        name: config.name.clone(),
        resume: 0,
        down_seen: 0,
        in_head: config.in_head,
        ..Default::default()
    };
    let (session, mut down) = Session::open(
        &config.head,
        config.token.clone(),
        hello,
        inner.store.clone(),
        config.reconnect,
    )
    .await?;
    inner.attach(Arc::new(Remote(session.clone())), true)?;
    inner
        .collectives
        .set_transport(Arc::new(super::collective::NodeTransport::new(
            object_address.clone(),
            config.head.clone(),
            config.token.clone(),
        )));
    let node_id = session.node.map_or(0, |n| n.0);
    let objects = NodeObjects {
        store: inner.store.clone(),
        #[cfg(feature = "testing")]
        corrupt: Arc::new(AtomicU32::new(config.corrupt_transfers)),
    };
    let node = Arc::new(Node {
        rt: inner.clone(),
        session: session.clone(),
        running: DashMap::new(),
        actors: DashMap::new(),
        actor_starts: DashMap::new(),
        calls: DashMap::new(),
        finished: Default::default(),
        gone: DashMap::new(),
        load: tokio::sync::Mutex::new(()),
        direct: DashMap::new(),
        disowned: Default::default(),
        results: DashMap::new(),
    });
    let server = tokio::spawn(
        ferray_proto::server()
            .add_service(ferray_proto::objects_server(objects, &config.token))
            .add_service(ferray_proto::actors_server(
                NodeActors(node.clone()),
                &config.token,
            ))
            .add_service(ferray_proto::collective_server(
                super::collective::NodeCollective(inner.collectives.clone()),
                &config.token,
            ))
            .serve_with_incoming(ferray_proto::incoming(listener)),
    );
    let beat = {
        let s = session.clone();
        let store = inner.store.clone();
        tokio::spawn(async move {
            // The objects the head has heard are on disk here; each beat
            // says what changed (at most MAX_SPILL_REPORT each way).
            let mut reported: std::collections::HashSet<ferray_core::ObjectId> = Default::default();
            let mut beats = 0u64;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                beats += 1;
                // Now and then all again: a report the head could not
                // place yet (a result it has not heard of) is not lost.
                if beats.is_multiple_of(SPILL_REPORT_AGAIN) {
                    reported.clear();
                }
                let now: std::collections::HashSet<_> = store.spilled_ids().into_iter().collect();
                let spilled: Vec<_> = now
                    .difference(&reported)
                    .take(MAX_SPILL_REPORT)
                    .copied()
                    .collect();
                let restored: Vec<_> = reported
                    .difference(&now)
                    .take(MAX_SPILL_REPORT)
                    .copied()
                    .collect();
                for id in &spilled {
                    reported.insert(*id);
                }
                for id in &restored {
                    reported.remove(id);
                }
                s.send(up::Msg::Heartbeat(v1::Heartbeat {
                    spilled: spilled.iter().map(ferray_proto::id_bytes).collect(),
                    restored: restored.iter().map(ferray_proto::id_bytes).collect(),
                }));
            }
        })
    };
    let flusher = {
        let s = session.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(super::session::LIVE_FLUSH);
            loop {
                every.tick().await;
                s.flush_live(None);
            }
        })
    };
    joined(Joined {
        node: node_id,
        object_address,
    });
    {
        let weak = Arc::downgrade(&node);
        session.set_reporter(Box::new(move |dones| match weak.upgrade() {
            Some(n) => n.report(dones),
            None => Default::default(),
        }));
    }
    // On the runtime's threads, next to the tasks it starts.
    let mut work = tokio::spawn(async move {
        loop {
            match node.session.recv(&mut down).await {
                Ok(v1::Down { msg: Some(m), .. }) => node.handle(m),
                Ok(_) => {}
                Err(why) => break why,
            }
        }
    });
    let out = tokio::select! {
        why = &mut work => Err(Error::System(why.unwrap_or_else(|e| format!("the node's session task failed: {e}")))),
        _ = shutdown => Ok(()),
    };
    if out.is_ok() {
        // Leaving on purpose: the head closes the session at once (and
        // the stream ends) instead of waiting for it to come back.
        session.bye();
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut work).await;
    }
    work.abort();
    beat.abort();
    flusher.abort();
    server.abort();
    if let Err(e) = &out {
        session.lose(e.to_string());
    }
    out
}

impl Node {
    fn handle(self: &Arc<Self>, m: down::Msg) {
        match m {
            down::Msg::Welcome(_) | down::Msg::Ack(_) => {}
            down::Msg::Resolved(r) => self.session.resolved(r),
            down::Msg::Assign(a) => {
                // Registered before the task runs, so that a cancel right
                // behind the assignment finds it.
                let cancel = Arc::new(Notify::new());
                let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let mut kept = a.clone();
                // A driver's arguments are its WAVE text.
                if kept.driver {
                    kept.args.clear();
                }
                self.running.insert(
                    a.task,
                    Running {
                        cancel: cancel.clone(),
                        assign: kept,
                        started: started.clone(),
                    },
                );
                let me = self.clone();
                tokio::spawn(async move { me.run_assign(a, cancel, started).await });
            }
            down::Msg::StartActor(s) => self.start_actor(s),
            down::Msg::ActorCall(c) => match self.actors.get(&c.actor) {
                Some(tx) => {
                    let job = self.actor_starts.get(&c.actor).map_or(0, |s| s.job);
                    self.calls.insert(c.task, call_attempt(&c, job));
                    let _ = tx.send(Queued {
                        call: c,
                        reply: None,
                    });
                }
                None => {
                    let why = self.not_here(c.actor);
                    self.done_err(c.task, 1, Error::ActorDied(why))
                }
            },
            down::Msg::ActorAt(a) => self.session.actor_at(a),
            down::Msg::CheckCalls(c) => {
                let mut disowned = self.disowned.lock();
                for t in c.tasks {
                    let known = self.calls.contains_key(&t)
                        || self.finished.lock().iter().any(|(x, _)| *x == t);
                    if !known && disowned.insert(t) {
                        self.done_err(
                            t,
                            1,
                            Error::ActorDied(format!(
                                "task-{t}: the call never reached the actor's node"
                            )),
                        );
                    }
                }
            }
            down::Msg::StopActor(s) => {
                self.remember_gone(s.actor, format!("actor-{} was killed", s.actor));
                self.actors.remove(&s.actor);
                self.actor_starts.remove(&s.actor);
                let _ = self.rt.kill_actor_here(ActorId(s.actor));
            }
            down::Msg::Cancel(c) => {
                if let Some(n) = self.running.get(&c.task) {
                    n.cancel.notify_one();
                }
            }
            down::Msg::Free(f) => self.session.free(&f.ids, &f.seen),
            down::Msg::Output(_) => {}
        }
    }

    /// What it runs and its actors, for a restarted head; `dones`: tasks
    /// whose `Done` the earlier head may not have got.
    fn report(
        &self,
        dones: &std::collections::HashSet<u64>,
    ) -> (Vec<v1::Attempt>, Vec<v1::StartActor>) {
        let mut running: Vec<v1::Attempt> = self
            .running
            .iter()
            .map(|r| v1::Attempt {
                assign: Some(r.assign.clone()),
                actor: 0,
                started: r.started.load(std::sync::atomic::Ordering::Acquire),
                ended: false,
            })
            .collect();
        // Direct calls are the callers' to report (they send their
        // unanswered ones to a restarted head again).
        running.extend(
            self.calls
                .iter()
                .filter(|c| !self.direct.contains_key(c.key()))
                .map(|c| c.value().clone()),
        );
        // An ended attempt of a task that runs here again (a retry) is not
        // reported: the running one stands for the task.
        running.extend(
            self.finished
                .lock()
                .iter()
                .filter(|(t, _)| {
                    dones.contains(t)
                        && !self.running.contains_key(t)
                        && !self.calls.contains_key(t)
                })
                .map(|(_, a)| v1::Attempt {
                    ended: true,
                    ..a.clone()
                }),
        );
        let actors = self
            .actor_starts
            .iter()
            .filter(|s| self.actors.contains_key(s.key()))
            .map(|s| s.value().clone())
            .collect();
        (running, actors)
    }

    /// An attempt ended: remembered a while for a restarted head (without
    /// its arguments, which only a retry would need).
    fn ended(&self, task: u64, mut attempt: v1::Attempt) {
        if let Some(a) = &mut attempt.assign {
            a.args = Vec::new();
        }
        let mut f = self.finished.lock();
        if f.len() >= FINISHED_KEPT {
            f.pop_front();
        }
        f.push_back((task, attempt));
    }

    fn done_err(&self, task: u64, attempt: u32, e: Error) {
        self.session.flush_live(Some(task));
        self.session.send(up::Msg::Done(v1::Done {
            task,
            attempt,
            result: Some(v1::done::Result::Err(ferray_proto::error_to(&e))),
            direct: self.direct.contains_key(&task),
            ..Default::default()
        }));
    }

    /// A task's small result, straight to its caller when the caller
    /// listens here (or is this node): before the head, which answers it
    /// too. Only a value that is final goes this way; a failure, or an
    /// `err` the head may retry, goes through the head alone, and so does
    /// the result of a task that printed (its caller sees the output first).
    fn answer_caller(&self, a: &v1::Assign, done: &v1::Done) {
        let printed = self.session.printed(a.task);
        if printed || !done.stdout.is_empty() || !done.stderr.is_empty() {
            return;
        }
        let Ok(key) = <[u8; 16]>::try_from(a.caller_key.as_ref()) else {
            return;
        };
        let Some(v1::done::Result::Ok(loc)) = &done.result else {
            return;
        };
        if loc.inline.is_none() || done.err_value || a.driver {
            return;
        }
        let reply = v1::DirectReply {
            task: a.task,
            result: Some(v1::direct_reply::Result::Ok(loc.clone())),
            refused: false,
        };
        if self.session.results_key() == Some(key) {
            self.session.direct_result(reply);
        } else if let Some(tx) = self.results.get(&key) {
            let _ = tx.try_send(Ok(reply));
        }
    }

    /// Why an actor is not here any more (a call for it gets that reason).
    fn remember_gone(&self, actor: u64, why: String) {
        if self.gone.len() >= MAX_DEAD_KEPT {
            self.gone.clear();
        }
        self.gone.insert(actor, why);
    }

    /// Why a call to an actor that is not here fails.
    fn not_here(&self, actor: u64) -> String {
        self.gone
            .get(&actor)
            .map(|w| w.clone())
            .unwrap_or_else(|| format!("actor-{actor} is not on this node"))
    }

    /// A call straight from its caller: into the actor's mailbox when the
    /// actor lives here as the incarnation and job the caller names;
    /// refused otherwise. Either way the head hears of it (`Done`).
    fn direct_call(self: &Arc<Self>, c: v1::DirectCall, reply: &Reply) {
        let t = c.task;
        // Not run: its caller has the head route it (the head hears of
        // it from the caller).
        let refuse = |why: String| {
            let e = Error::ActorDied(why);
            let _ = reply.send(Ok(v1::DirectReply {
                task: t,
                result: Some(v1::direct_reply::Result::Err(ferray_proto::error_to(&e))),
                refused: true,
            }));
        };
        let disowned = self.disowned.lock();
        if disowned.contains(&t) {
            // Its caller was told it failed: it must not run.
            return;
        }
        let start = self
            .actor_starts
            .get(&c.actor)
            .map(|s| (s.job, s.incarnation));
        let (Some((job, incarnation)), true) = (start, self.actors.contains_key(&c.actor)) else {
            drop(disowned);
            return refuse(self.not_here(c.actor));
        };
        if job != c.job || incarnation != c.incarnation {
            drop(disowned);
            return refuse(if job != c.job {
                format!("actor-{} is not on this node", c.actor)
            } else {
                format!(
                    "actor-{} was restarted (incarnation {incarnation}, the call was for {})",
                    c.actor, c.incarnation
                )
            });
        }
        let call = v1::ActorCall {
            task: t,
            actor: c.actor,
            incarnation,
            seq: 0,
            method: c.method,
            args: c
                .args
                .into_iter()
                .map(|b| v1::ResolvedArg {
                    kind: Some(v1::resolved_arg::Kind::Value(b)),
                })
                .collect(),
        };
        self.calls.insert(t, call_attempt(&call, job));
        self.direct.insert(t, ());
        drop(disowned);
        // Straight into the actor's mailbox: its caller has no call routed
        // by the head before it still on the way (it waits for their
        // answers before it calls directly).
        self.enter(call, Some(reply.clone()));
    }

    /// A result: kept here for the cluster, inline in the reply when small.
    fn result_loc(&self, bytes: Vec<u8>) -> v1::ObjectLoc {
        let size = bytes.len() as u64;
        let bytes = Bytes::from(bytes);
        let id = self.rt.store.put(bytes.clone());
        self.session.hold(id);
        self.rt.store.decref(&id);
        v1::ObjectLoc {
            id: id_bytes(&id),
            size,
            inline: (bytes.len() <= INLINE_MAX).then_some(bytes),
            holders: vec![],
        }
    }

    async fn component(&self, id: &[u8]) -> Result<Arc<Loaded<RtInner>>, Error> {
        let oid = ferray_proto::object_id(id)?;
        let cid = ComponentId::from_bytes(*oid.as_bytes());
        if let Some(c) = self.rt.loaded(&cid) {
            return Ok(c);
        }
        let _guard = self.load.lock().await;
        if let Some(c) = self.rt.loaded(&cid) {
            return Ok(c);
        }
        let (_, bytes) = super::retry("fetching the component", || {
            let mut head = self.session.head.clone();
            async move {
                let stream = head
                    .fetch_component(v1::ObjectKey { id: id_bytes(&oid) })
                    .await
                    .map_err(|s| ferray_proto::from_status("fetching the component", s))?
                    .into_inner();
                ferray_proto::assemble(stream, Some(oid), MAX_OBJECT_BYTES).await
            }
        })
        .await?;
        let rt = self.rt.clone();
        tracing::info!("compiling component {}", cid.short());
        // The signatures too: a job's driver gets WAVE arguments and gives
        // back a WAVE result.
        let here = tokio::task::spawn_blocking(move || rt.load_component(&bytes))
            .await
            .map_err(|e| Error::System(format!("compiling failed: {e}")))??;
        here.loaded
            .ok_or_else(|| Error::System("a worker has a host to compile with".into()))
    }

    async fn run_assign(
        self: Arc<Self>,
        a: v1::Assign,
        cancel: Arc<Notify>,
        started: Arc<std::sync::atomic::AtomicBool>,
    ) {
        let t = a.task;
        let work = async {
            let comp = self.component(&a.component).await?;
            let func = comp.info.function(&a.function)?.clone();
            let sig = if a.driver {
                Some(self.rt.info(&comp.id)?.function(&a.function)?.clone())
            } else {
                None
            };
            let mut options = ferray_proto::task_options_from(a.options.clone())?;
            // This node's ceilings: a task asking for more fails here.
            self.rt
                .settings
                .ceilings
                .check(&options.resources, options.timeout, options.fuel)?;
            // The head retries (elsewhere when this node is lost).
            options.max_retries = 0;
            options.retry_exceptions = false;
            let args: Vec<Arg<ObjectRef>> = if let Some(sig) = &sig {
                vec![Arg::Value(sig.encode_wave_args(&a.wave_args)?)]
            } else {
                a.args
                    .iter()
                    .cloned()
                    .map(|x| self.session.arg_from(x))
                    .collect::<Result<_, _>>()?
            };
            // The head decided to retry (`TaskOptions::should_retry`); the
            // retry waits the same backoff as on the embedded runtime.
            if a.attempt > 1 {
                tokio::time::sleep(ferray_core::retry_backoff(a.attempt - 1)).await;
            }
            let (args, lease) = self.rt.admit(args, &options.resources).await?;
            // The head takes the resources in its view now.
            started.store(true, std::sync::atomic::Ordering::Release);
            self.session.send(up::Msg::Started(v1::Started { task: t }));
            let ctx = TaskCtx::task(TaskId(t), Some(JobId(a.job)), lease.clone());
            let out = self
                .rt
                .run_attempts(&ctx, &comp, &func, &args, &options)
                .await;
            Ok::<_, Error>((func, sig, out, lease))
        };
        let result = tokio::select! {
            biased;
            _ = cancel.notified() => Err(Error::Cancelled(format!("task-{t} was cancelled"))),
            r = work => r,
        };
        let (stdout, stderr) = self.rt.take_output_of(&TaskId(t).to_string());
        let mut done = v1::Done {
            task: t,
            attempt: a.attempt,
            stdout: stdout.into(),
            stderr: stderr.into(),
            ..Default::default()
        };
        // The lease is held until `Done` is queued, so that the head (which
        // mirrors this node's admission) never hears of the next start first.
        let mut _lease = None;
        match result {
            Ok((func, sig, Ok(bytes), lease)) => {
                _lease = lease;
                done.err_value = func.returns_err(&bytes);
                let text = sig.map(|sig| job_result_text(&sig, &bytes));
                match text {
                    Some(Err(e)) => {
                        done.err_value = false;
                        done.result = Some(v1::done::Result::Err(ferray_proto::error_to(&e)));
                    }
                    text => {
                        done.wave = text.and_then(Result::ok).unwrap_or_default();
                        done.result = Some(v1::done::Result::Ok(self.result_loc(bytes)));
                    }
                }
            }
            Ok((_, _, Err(e), lease)) => {
                _lease = lease;
                done.result = Some(v1::done::Result::Err(ferray_proto::error_to(&e)));
            }
            Err(e) => done.result = Some(v1::done::Result::Err(ferray_proto::error_to(&e))),
        }
        self.answer_caller(&a, &done);
        // What it printed as it ran goes first.
        self.session.flush_live(Some(t));
        // It ends here as its `Done` goes (see `Session::send_after`).
        self.session.send_after(up::Msg::Done(done), || {
            if let Some((_, r)) = self.running.remove(&t) {
                self.ended(
                    t,
                    v1::Attempt {
                        assign: Some(r.assign),
                        actor: 0,
                        started: r.started.load(std::sync::atomic::Ordering::Acquire),
                        ended: true,
                    },
                );
            }
        });
        drop(_lease);
    }

    fn start_actor(self: &Arc<Self>, s: v1::StartActor) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Queued>();
        self.actors.insert(s.actor, tx);
        self.actor_starts.insert(s.actor, s.clone());
        let me = self.clone();
        tokio::spawn(async move {
            let a = ActorId(s.actor);
            let made = async {
                let comp = me.component(&s.component).await?;
                let options = ferray_proto::actor_options_from(s.options.clone())?;
                let args = s
                    .args
                    .iter()
                    .cloned()
                    .map(|x| me.session.arg_from(x))
                    .collect::<Result<Vec<_>, _>>()?;
                let session = me.session.clone();
                let incarnation = s.incarnation;
                let node = Arc::downgrade(&me);
                let on_death = Box::new(move |reason: String| {
                    if let Some(n) = node.upgrade() {
                        n.actor_starts.remove(&a.0);
                        n.remember_gone(a.0, reason.clone());
                    }
                    session.send(up::Msg::ActorDied(v1::ActorDied {
                        actor: a.0,
                        incarnation,
                        error: Some(ferray_proto::error_to(&Error::ActorDied(reason))),
                    }));
                });
                me.rt.start_actor(
                    a,
                    comp,
                    &s.class,
                    args,
                    options,
                    Some(JobId(s.job)),
                    Some(on_death),
                )?;
                if !me.actors.contains_key(&s.actor) {
                    // Stopped while it was starting.
                    let _ = me.rt.kill_actor_here(a);
                }
                Ok::<_, Error>(())
            };
            if let Err(e) = made.await {
                tracing::warn!("{a} could not start: {e}");
                me.remember_gone(s.actor, format!("{a} could not start: {e}"));
                me.actors.remove(&s.actor);
                me.actor_starts.remove(&s.actor);
                me.session.send(up::Msg::ActorDied(v1::ActorDied {
                    actor: a.0,
                    incarnation: s.incarnation,
                    error: Some(ferray_proto::error_to(&Error::ActorDied(format!(
                        "{a} could not start: {e}"
                    )))),
                }));
                while let Some(Queued { call: c, reply }) = rx.recv().await {
                    me.calls.remove(&c.task);
                    let e = Error::ActorDied(format!("{a} could not start: {e}"));
                    if let Some(r) = reply {
                        let _ = r.send(Ok(v1::DirectReply {
                            task: c.task,
                            result: Some(v1::direct_reply::Result::Err(ferray_proto::error_to(&e))),
                            refused: false,
                        }));
                    }
                    me.done_err(c.task, 1, e);
                    me.direct.remove(&c.task);
                }
                return;
            }
            // Calls enter the actor's mailbox in the order they arrived.
            while let Some(Queued { call: c, reply }) = rx.recv().await {
                me.enter(c, reply);
            }
        });
    }

    /// Put a call in its actor's mailbox; its answer goes to the head
    /// (`Done`) and, for a direct call, first to its caller.
    fn enter(self: &Arc<Self>, c: v1::ActorCall, reply: Option<Reply>) {
        let a = ActorId(c.actor);
        let args = c
            .args
            .into_iter()
            .map(|x| self.session.arg_from(x))
            .collect::<Result<Vec<_>, _>>();
        let r = args.and_then(|args| self.rt.call_actor_here(a, c.method, args));
        let me = self.clone();
        let task = c.task;
        tokio::spawn(async move {
            let out = match r {
                Ok(r) => match r.ready_id().await {
                    Ok(_) => me.rt.get_bytes(&r).await.map(|b| b.to_vec()),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            let (stdout, stderr) = me.rt.take_output_of(&a.to_string());
            let result = match out {
                Ok(bytes) => v1::done::Result::Ok(me.result_loc(bytes)),
                Err(e) => v1::done::Result::Err(ferray_proto::error_to(&e)),
            };
            // A direct call's caller first; a large result is pulled from
            // this node.
            let direct = reply.is_some();
            if let Some(r) = reply {
                let answer = match &result {
                    v1::done::Result::Ok(loc) => {
                        let mut loc = loc.clone();
                        if loc.inline.is_none() {
                            loc.holders = vec![me.session.object_address().to_string()];
                        }
                        v1::direct_reply::Result::Ok(loc)
                    }
                    v1::done::Result::Err(e) => v1::direct_reply::Result::Err(e.clone()),
                };
                let _ = r.send(Ok(v1::DirectReply {
                    task,
                    result: Some(answer),
                    refused: false,
                }));
            }
            let done = up::Msg::Done(v1::Done {
                task,
                attempt: 1,
                result: Some(result),
                stdout: stdout.into(),
                stderr: stderr.into(),
                direct,
                ..Default::default()
            });
            me.session.send_after(done, || {
                if let Some((_, call)) = me.calls.remove(&task) {
                    me.ended(task, call);
                }
                me.direct.remove(&task);
            });
        });
    }
}

/// An actor call as a restarted head is told of it.
fn call_attempt(c: &v1::ActorCall, job: u64) -> v1::Attempt {
    v1::Attempt {
        assign: Some(v1::Assign {
            task: c.task,
            job,
            attempt: 1,
            function: c.method.clone(),
            args: c.args.clone(),
            ..Default::default()
        }),
        actor: c.actor,
        started: true,
        ended: false,
    }
}

/// This node's `Actors` service: calls straight from their callers.
struct NodeActors(Arc<Node>);

#[tonic::async_trait]
impl v1::actors_server::Actors for NodeActors {
    type CallsStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<v1::DirectReply, tonic::Status>> + Send + 'static>,
    >;

    async fn calls(
        &self,
        req: tonic::Request<tonic::Streaming<v1::DirectCall>>,
    ) -> Result<tonic::Response<Self::CallsStream>, tonic::Status> {
        let mut calls = req.into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        let node = self.0.clone();
        tokio::spawn(async move {
            while let Ok(Some(c)) = calls.message().await {
                node.direct_call(c, &tx);
            }
        });
        Ok(tonic::Response::new(Box::pin(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        )))
    }

    type ResultsStream = Self::CallsStream;

    async fn results(
        &self,
        req: tonic::Request<v1::ResultsRequest>,
    ) -> Result<tonic::Response<Self::ResultsStream>, tonic::Status> {
        let key = <[u8; 16]>::try_from(req.into_inner().key.as_ref())
            .map_err(|_| tonic::Status::invalid_argument("a results key is 16 bytes"))?;
        let results = &self.0.results;
        if results.len() >= MAX_RESULT_LISTENERS && !results.contains_key(&key) {
            return Err(tonic::Status::resource_exhausted(format!(
                "{MAX_RESULT_LISTENERS} sessions listen for results here already"
            )));
        }
        let (tx, rx) = mpsc::channel(RESULTS_QUEUED);
        results.insert(key, tx.clone());
        // Forgotten once its listener goes (unless it listens again).
        let node = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            tx.closed().await;
            if let Some(n) = node.upgrade() {
                n.results.remove_if(&key, |_, t| t.same_channel(&tx));
            }
        });
        Ok(tonic::Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// What this node's `Objects` service serves: other nodes pull its objects.
#[derive(Clone)]
pub(crate) struct NodeObjects {
    pub store: Arc<ferray_store::ObjectStore>,
    /// Fault injection for tests: corrupt this many outgoing transfers.
    #[cfg(feature = "testing")]
    pub corrupt: Arc<AtomicU32>,
}

impl ferray_proto::ObjectSource for NodeObjects {
    fn object(&self, id: &ObjectId) -> Result<Bytes, Error> {
        self.store.get(id)
    }

    #[cfg(feature = "testing")]
    fn corrupt_next(&self) -> bool {
        self.corrupt
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// The most bytes of WAVE text a job's result may be: it travels in one
/// message, is kept with the job and shown by `ferray job status`.
pub(crate) const MAX_JOB_RESULT_TEXT: usize = 1 << 20;

/// A job's result as WAVE text, or that job's error when it is too large
/// (never a message too large for the session).
fn job_result_text(sig: &ferray_codec::FuncInfo, bytes: &[u8]) -> Result<String, Error> {
    let too_large = |what: String| {
        Error::InvalidArgument(format!(
            "the job's result is {what}, over the {MAX_JOB_RESULT_TEXT} bytes of WAVE text a \
             job may return; return a reference to an object instead"
        ))
    };
    // No value's text is shorter than an eighth of its encoding (an `f64`
    // of 8 bytes prints as one digit at least): far larger is refused
    // before it is printed.
    if bytes.len() > 8 * MAX_JOB_RESULT_TEXT {
        return Err(too_large(format!("{} bytes encoded", bytes.len())));
    }
    let text = sig.wave_result(bytes).unwrap_or_else(|e| format!("<{e}>"));
    if text.len() > MAX_JOB_RESULT_TEXT {
        return Err(too_large(format!("{} bytes as WAVE text", text.len())));
    }
    Ok(text)
}
