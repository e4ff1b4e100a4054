//! Actors on this node: each has a mailbox whose calls run one at a time, in
//! order, on its own instance; a failed call rebuilds the instance within
//! `max_restarts`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use ferray_core::{ActorId, ActorOptions, Arg, Error, GroupMember, JobId, Report, TaskId};
use ferray_host::{ClassInfo, Limits, Loaded};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use crate::collective::Collectives;
use crate::objects::ObjectRef;
use crate::runtime::{ActorSlot, Counted, RtInner, TaskCtx};

/// Hears why an actor died for good (a cluster's worker tells the head).
pub(crate) type OnDeath = Box<dyn FnOnce(String) + Send>;

pub(crate) struct ActorEntry {
    tx: mpsc::UnboundedSender<ActorCall>,
    status: Arc<ActorStatus>,
    abort: Mutex<Option<tokio::task::AbortHandle>>,
    reports: Arc<Reports>,
}

#[derive(Default)]
struct ActorStatus {
    killed: AtomicBool,
    dead: Mutex<Option<String>>,
}

impl ActorStatus {
    fn reason(&self, id: ActorId) -> String {
        match &*self.dead.lock() {
            Some(r) => format!("{id} {r}"),
            None if self.killed.load(Ordering::Relaxed) => format!("{id} was killed"),
            None => format!("{id} is gone"),
        }
    }
}

struct ActorCall {
    method: String,
    args: Vec<Arg<ObjectRef>>,
    result: ObjectRef,
    /// Its place among the calls in flight, until it is answered.
    _in_flight: Counted,
    /// Its place among the actor's calls queued or running.
    _busy: Busy,
}

/// The host method that opens a training run on an actor (`ferray
/// train`), in order with its calls: its argument is the checkpoint the run
/// starts from (a `list<u8>`), or none. Its guest may then `report`.
pub(crate) const TRAIN_RUN_METHOD: &str = "[train-run]";

/// The host method that takes an actor's next report (an `option<report>`,
/// [`Report`]), answered beside its mailbox, as its guest is busy in the
/// call that reports: none once no call of the actor is queued or running
/// and no report waits (Ray Train's `get_next`).
pub(crate) const NEXT_REPORT_METHOD: &str = "[next-report]";

/// An actor's training run: its guest's reports wait here, one at a time,
/// until the run's driver takes them.
#[derive(Default)]
pub(crate) struct Reports(watch::Sender<RunState>);

#[derive(Default)]
struct RunState {
    /// A run is open: the guest may report.
    open: bool,
    /// The checkpoint the run started from.
    start: Option<Arc<[u8]>>,
    /// The report not yet taken.
    pending: Option<Report>,
    /// Reports made, and asked for by the driver (a report returns once
    /// the driver asks for the next).
    made: u64,
    asked: u64,
    /// Calls of the actor queued or running.
    busy: usize,
    /// Why the actor died.
    dead: Option<String>,
}

impl Reports {
    fn open(&self, start: Option<Arc<[u8]>>) {
        self.0.send_modify(|s| {
            s.open = true;
            s.start = start;
        });
    }

    pub(crate) fn start(&self) -> Option<Vec<u8>> {
        self.0.borrow().start.as_deref().map(<[u8]>::to_vec)
    }

    /// The guest's report: in once the one before it is taken, and back
    /// once the driver asks for the next (Ray Train's `report`, whose
    /// driver takes a round of every worker's reports before it lets any
    /// go on).
    pub(crate) async fn put(&self, report: Report) -> Result<(), Error> {
        let mut rx = self.0.subscribe();
        let mut report = Some(report);
        let mut mine = None;
        while mine.is_none() {
            if !self.0.borrow().open {
                return Err(Error::InvalidArgument(
                    "report: this worker is not in a training run (ferray train opens one)".into(),
                ));
            }
            let _ = rx
                .wait_for(|s| s.pending.is_none() || s.dead.is_some())
                .await;
            self.0.send_if_modified(|s| {
                if s.dead.is_some() || s.pending.is_some() {
                    return false;
                }
                s.pending = report.take();
                s.made += 1;
                mine = Some(s.made);
                true
            });
            if let Some(d) = &self.0.borrow().dead {
                return Err(Error::ActorDied(d.clone()));
            }
        }
        let n = mine.unwrap_or(0);
        let s = rx
            .wait_for(|s| s.asked > n || s.dead.is_some())
            .await
            .map_err(|_| Error::ActorDied("the actor is gone".into()))?;
        match &s.dead {
            Some(d) if s.asked <= n => Err(Error::ActorDied(d.clone())),
            _ => Ok(()),
        }
    }

    /// The driver's take: the next report, or none once the actor has no
    /// call queued or running.
    async fn next(&self) -> Result<Option<Report>, Error> {
        self.0.send_modify(|s| s.asked += 1);
        let mut rx = self.0.subscribe();
        loop {
            let _ = rx
                .wait_for(|s| s.pending.is_some() || s.busy == 0 || s.dead.is_some())
                .await;
            let mut out = None;
            self.0.send_if_modified(|s| {
                if let Some(p) = s.pending.take() {
                    out = Some(Ok(Some(p)));
                    return true;
                }
                if let Some(d) = &s.dead {
                    out = Some(Err(Error::ActorDied(d.clone())));
                } else if s.busy == 0 {
                    out = Some(Ok(None));
                }
                false
            });
            if let Some(o) = out {
                return o;
            }
        }
    }

    fn died(&self, reason: &str) {
        self.0.send_modify(|s| s.dead = Some(reason.to_string()));
    }
}

/// A call's place among its actor's calls queued or running.
struct Busy(Arc<Reports>);

impl Busy {
    fn new(r: &Arc<Reports>) -> Busy {
        r.0.send_modify(|s| s.busy += 1);
        Busy(r.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.0.send_modify(|s| s.busy -= 1);
    }
}

impl RtInner {
    /// Start actor `id` on this node; `job` is the cluster job it belongs
    /// to (`None`: this runtime's own), `on_death` hears why it died for good.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start_actor(
        self: &Arc<Self>,
        id: ActorId,
        comp: Arc<Loaded<RtInner>>,
        class: &str,
        args: Vec<Arg<ObjectRef>>,
        options: ActorOptions,
        job: Option<JobId>,
        on_death: Option<OnDeath>,
    ) -> Result<(), Error> {
        let class = comp.info.class(class)?.clone();
        self.settings
            .ceilings
            .check(&options.resources, options.timeout, options.fuel)?;
        self.admission.check_feasible(&options.resources)?;
        let slot = (self.actor_slot()?, Counted::new(&self.live_actors));
        let (tx, rx) = mpsc::unbounded_channel();
        let status = Arc::new(ActorStatus::default());
        let reports = Arc::new(Reports::default());
        self.actors.insert(
            id,
            ActorEntry {
                tx,
                status: status.clone(),
                abort: Mutex::new(None),
                reports: reports.clone(),
            },
        );
        let actor = ActorLoop {
            id,
            rx,
            current: None,
            status,
            reports,
            on_death,
            slot,
            group: options
                .group
                .clone()
                .map(|m| (self.collectives.clone(), job, m)),
        };
        let ctx = TaskCtx::actor(id, job, options.group.clone());
        let handle = self
            .exec
            .spawn(actor.run(self.clone(), comp, class, args, options, ctx));
        if let Some(entry) = self.actors.get(&id) {
            *entry.abort.lock() = Some(handle.abort_handle());
        }
        Ok(())
    }

    /// Queue a call in the mailbox of an actor of this node.
    pub(crate) fn call_actor_here(
        &self,
        actor: ActorId,
        method: String,
        args: Vec<Arg<ObjectRef>>,
    ) -> Result<ObjectRef, Error> {
        let entry = self
            .actors
            .get(&actor)
            .ok_or_else(|| Error::NotFound(format!("no actor {actor} in this runtime")))?;
        let result = ObjectRef::pending(TaskId(self.next_id()), self.store.clone());
        let in_flight = Counted::new(&self.in_flight);
        if method == NEXT_REPORT_METHOD {
            let (reports, store, r) = (entry.reports.clone(), self.store.clone(), result.clone());
            self.exec.spawn(async move {
                let _in_flight = in_flight;
                match reports.next().await {
                    Ok(next) => match postcard::to_allocvec(&next) {
                        Ok(b) => r.resolve(store.put(Bytes::from(b))),
                        Err(e) => r.fail(Error::System(format!("cannot encode a report: {e}"))),
                    },
                    Err(e) => r.fail(e),
                }
            });
            return Ok(result);
        }
        let call = ActorCall {
            method,
            args,
            result: result.clone(),
            _in_flight: in_flight,
            _busy: Busy::new(&entry.reports),
        };
        if entry.tx.send(call).is_err() {
            result.fail(Error::ActorDied(entry.status.reason(actor)));
        }
        Ok(result)
    }

    /// Kill an actor of this node: its call in flight and queued calls fail.
    pub(crate) fn kill_actor_here(&self, actor: ActorId) -> Result<(), Error> {
        let entry = self
            .actors
            .get(&actor)
            .ok_or_else(|| Error::NotFound(format!("no actor {actor} in this runtime")))?;
        entry.status.killed.store(true, Ordering::Relaxed);
        if let Some(h) = entry.abort.lock().take() {
            h.abort();
        }
        Ok(())
    }

    /// The training run of an actor of this node.
    pub(crate) fn reports_of(&self, actor: ActorId) -> Option<Arc<Reports>> {
        self.actors.get(&actor).map(|e| e.reports.clone())
    }
}

/// One actor's mailbox loop. Dropping it (the actor died, was killed, or the
/// runtime shut down) fails the call in flight and every queued call.
/// The method every actor answers once its constructor has run, without
/// calling its guest ([`crate::ActorHandle::ready`]).
pub(crate) const READY_METHOD: &str = "[ready]";

struct ActorLoop {
    id: ActorId,
    rx: mpsc::UnboundedReceiver<ActorCall>,
    current: Option<ObjectRef>,
    status: Arc<ActorStatus>,
    reports: Arc<Reports>,
    on_death: Option<OnDeath>,
    /// Its instance slot and its place among the live actors, given back
    /// when the actor ends.
    slot: (ActorSlot, Counted),
    /// Its collective group, which breaks when it dies or a call fails.
    group: Option<(Arc<Collectives>, Option<JobId>, GroupMember)>,
}

impl Drop for ActorLoop {
    fn drop(&mut self) {
        let reason = self.status.reason(self.id);
        self.group_broke(&reason);
        self.reports.died(&reason);
        if !self.status.killed.load(Ordering::Relaxed)
            && let Some(f) = self.on_death.take()
        {
            f(reason.clone());
        }
        if let Some(r) = self.current.take() {
            r.fail(Error::ActorDied(reason.clone()));
        }
        self.rx.close();
        while let Ok(call) = self.rx.try_recv() {
            call.result.fail(Error::ActorDied(reason.clone()));
        }
    }
}

impl ActorLoop {
    /// Its group can go on no more (the member died, or lost its state).
    fn group_broke(&self, why: &str) {
        if let Some((c, job, m)) = &self.group {
            c.member_died(*job, m, why);
        }
    }

    fn die(&self, reason: String) {
        tracing::warn!(actor = %self.id, "{reason}");
        *self.status.dead.lock() = Some(reason);
    }

    async fn run(
        mut self,
        rt: Arc<RtInner>,
        comp: Arc<Loaded<RtInner>>,
        class: ClassInfo,
        args: Vec<Arg<ObjectRef>>,
        options: ActorOptions,
        ctx: TaskCtx,
    ) {
        let ctor_args = match rt.resolve_args(args).await {
            Ok(a) => a,
            Err(e) => return self.die(format!("could not start: {e}")),
        };
        let _lease = rt.admission.lease(options.resources.clone()).await;
        let limits = rt.limits(&options.resources, options.timeout, options.fuel);
        let pooled = self.slot.0.pooled();
        let mut instance =
            match start_instance(&rt, &comp, &class, &ctor_args, &limits, &ctx, pooled).await {
                Ok(i) => i,
                Err(e) => return self.die(format!("died in its constructor: {e}")),
            };
        let mut restarts = 0u32;
        while let Some(call) = self.rx.recv().await {
            if self.status.killed.load(Ordering::Relaxed) {
                self.current = Some(call.result);
                return;
            }
            // The built-in readiness call (Ray's `__ray_ready__`): the
            // constructor has run, nothing of the guest's is called.
            if call.method == READY_METHOD {
                call.result.resolve(rt.store.put(Bytes::new()));
                continue;
            }
            if call.method == TRAIN_RUN_METHOD {
                match open_run(&rt, &self.reports, call.args).await {
                    Ok(()) => call.result.resolve(rt.store.put(Bytes::new())),
                    Err(e) => call.result.fail(e),
                }
                continue;
            }
            self.current = Some(call.result.clone());
            let args = match rt.resolve_args(call.args).await {
                Ok(a) => a,
                Err(e) => {
                    call.result.fail(e);
                    self.current = None;
                    continue;
                }
            };
            let out = instance.call(&call.method, &args).await;
            rt.emit(&ctx.label, &out);
            self.current = None;
            match out.result {
                Ok(bytes) => {
                    // A member whose call returned `err(..)` may have left
                    // an all-reduce out: its rounds would no longer match.
                    if self.group.is_some()
                        && class
                            .methods
                            .get(&call.method)
                            .is_some_and(|f| f.returns_err(&bytes))
                    {
                        self.group_broke("a call returned err(..)");
                    }
                    call.result.resolve(rt.store.put(Bytes::from(bytes)))
                }
                Err(e @ (Error::NotFound(_) | Error::InvalidArgument(_))) => call.result.fail(e),
                Err(e) => {
                    call.result.fail(e.clone());
                    self.group_broke(&e.to_string());
                    if restarts >= options.max_restarts {
                        return self.die(format!(
                            "died: {e} (no restarts left, max_restarts = {})",
                            options.max_restarts
                        ));
                    }
                    restarts += 1;
                    tracing::info!(actor = %self.id, "restarting ({restarts}/{}) after: {e}", options.max_restarts);
                    instance =
                        match start_instance(&rt, &comp, &class, &ctor_args, &limits, &ctx, pooled)
                            .await
                        {
                            Ok(i) => i,
                            Err(e) => {
                                return self
                                    .die(format!("died in its constructor on restart: {e}"));
                            }
                        };
                }
            }
        }
    }
}

/// Open an actor's training run from its `[train-run]` arguments: none, or
/// the checkpoint (a `list<u8>`).
async fn open_run(
    rt: &Arc<RtInner>,
    reports: &Reports,
    args: Vec<Arg<ObjectRef>>,
) -> Result<(), Error> {
    let bytes = rt.resolve_args(args).await?;
    let start = if bytes.is_empty() {
        None
    } else {
        match postcard::take_from_bytes::<&[u8]>(&bytes) {
            Ok((c, [])) => Some(Arc::from(c)),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "{TRAIN_RUN_METHOD} takes a checkpoint (list<u8>) or nothing"
                )));
            }
        }
    };
    reports.open(start);
    Ok(())
}

async fn start_instance(
    rt: &Arc<RtInner>,
    comp: &Arc<Loaded<RtInner>>,
    class: &ClassInfo,
    ctor_args: &[u8],
    limits: &Limits,
    ctx: &TaskCtx,
    pooled: bool,
) -> Result<ferray_host::ActorInstance<RtInner>, Error> {
    let host = rt.host()?;
    if !pooled {
        // Its code for the on-demand engine is compiled once, off the
        // runtime's threads.
        let (h, c) = (host.clone(), comp.clone());
        tokio::task::spawn_blocking(move || h.prepare_past_pool(&c))
            .await
            .map_err(|e| Error::System(format!("the compilation stopped: {e}")))??;
    }
    let (made, out) = host
        .create_actor(
            comp.clone(),
            class,
            ctor_args,
            limits,
            rt.clone(),
            ctx.clone(),
            pooled,
        )
        .await;
    rt.emit(&ctx.label, &out);
    made
}
