//! Actors on this node: each has a mailbox whose calls run one at a time, in
//! order, on its own instance; a failed call rebuilds the instance within
//! `max_restarts`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use ferray_core::{ActorId, ActorOptions, Arg, Error, GroupMember, JobId, TaskId};
use ferray_host::{ClassInfo, Limits, Loaded};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::collective::Collectives;
use crate::objects::ObjectRef;
use crate::runtime::{ActorSlot, Counted, RtInner, TaskCtx};

/// Hears why an actor died for good (a cluster's worker tells the head).
pub(crate) type OnDeath = Box<dyn FnOnce(String) + Send>;

pub(crate) struct ActorEntry {
    tx: mpsc::UnboundedSender<ActorCall>,
    status: Arc<ActorStatus>,
    abort: Mutex<Option<tokio::task::AbortHandle>>,
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
        self.actors.insert(
            id,
            ActorEntry {
                tx,
                status: status.clone(),
                abort: Mutex::new(None),
            },
        );
        let actor = ActorLoop {
            id,
            rx,
            current: None,
            status,
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
        let call = ActorCall {
            method,
            args,
            result: result.clone(),
            _in_flight: Counted::new(&self.in_flight),
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
