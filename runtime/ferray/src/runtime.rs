//! A node's core: the host, the object store, admission and output, and the
//! [`Services`] the host forwards guests' calls to. It runs the tasks and
//! actors it is given (`tasks.rs`, `actors.rs`) and hands everything new to
//! its [`Backend`]: this process, or a cluster's head. Shared by the
//! embedding API, the command line and a cluster's workers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use ferray_codec::ComponentInfo;
use ferray_core::{ActorId, ActorOptions, Arg, ComponentId, Error, JobId, ObjectId, TaskId};
use ferray_core::{Ceilings, GroupMember, JobCaps, Resources, TaskOptions};

use crate::collective::Collectives;
use ferray_host::{CallRequest, Host, Limits, Loaded, Outcome, Services};
use ferray_store::ObjectStore;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};

use crate::actors::ActorEntry;
use crate::backend::{Backend, Caller, Code, Local};
use crate::objects::{ObjectRef, SlotState};
use crate::output::{OutputSink, Stream};
use crate::sched::{Admission, Lease};

/// One of a counted set (tasks and actor calls in flight, live actors)
/// while it lives.
pub(crate) struct Counted(Arc<AtomicU64>);

impl Counted {
    pub(crate) fn new(count: &Arc<AtomicU64>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Counted(count.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where an actor's instance lives, held for its life.
pub(crate) enum ActorSlot {
    /// A slot of the pool.
    Pooled(#[allow(dead_code)] OwnedSemaphorePermit),
    /// Allocated on demand, past the pool.
    PastPool(#[allow(dead_code)] Counted),
}

impl ActorSlot {
    pub(crate) fn pooled(&self) -> bool {
        matches!(self, ActorSlot::Pooled(_))
    }
}

/// A task attempt starts only while this much of the node's guest memory is
/// free: about what the smallest Rust guest needs to instantiate.
const TASK_MEMORY_HEADROOM: u64 = 2 << 20;

/// Settings of a runtime that the builder fixes.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub local_mode: bool,
    pub default_timeout: Option<Duration>,
    pub default_fuel: Option<u64>,
    /// The operator's ceilings: more is refused at submit.
    pub ceilings: Ceilings,
    /// What the job may hold (an embedded runtime is one job).
    pub job_caps: JobCaps,
    /// The most bytes one call's arguments may take once resolved.
    pub max_argument_bytes: u64,
    /// Guest instances this node can hold at once (its instance pool).
    pub max_instances: usize,
    /// Fault injection: this many task attempts fail with a system error
    /// before they run (the `testing` feature only; never in a release
    /// build).
    #[cfg(feature = "testing")]
    pub failing_attempts: Arc<AtomicU64>,
}

/// The calling task of a host call.
#[derive(Clone)]
pub struct TaskCtx {
    pub(crate) label: Arc<str>,
    /// The task's resources (none for actors and in local mode): lent out
    /// while it blocks in `get` or `wait`.
    pub(crate) lease: Option<Arc<Lease>>,
    pub(crate) caller: Caller,
    /// An actor's place in its collective group, if it has one.
    pub(crate) group: Option<Arc<GroupMember>>,
}

impl TaskCtx {
    /// A task `task` of `job` (`None`: this runtime's own job).
    pub(crate) fn task(task: TaskId, job: Option<JobId>, lease: Option<Arc<Lease>>) -> Self {
        TaskCtx {
            label: Arc::from(task.to_string()),
            lease,
            caller: Caller::Task { job, task },
            group: None,
        }
    }

    /// An actor's instance; it holds its resources for life.
    pub(crate) fn actor(actor: ActorId, job: Option<JobId>, group: Option<GroupMember>) -> Self {
        TaskCtx {
            label: Arc::from(actor.to_string()),
            lease: None,
            caller: Caller::Actor { job, actor },
            group: group.map(Arc::new),
        }
    }
}

/// Counters for status and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct TaskCounts {
    pub submitted: u64,
    pub finished: u64,
    pub failed: u64,
    pub retried: u64,
    pub running: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub submitted: AtomicU64,
    pub finished: AtomicU64,
    pub failed: AtomicU64,
    pub retried: AtomicU64,
}

/// A component as this process loaded it.
pub(crate) struct LoadedHere {
    pub id: ComponentId,
    /// Its signatures, read from its bytes.
    pub info: Arc<ComponentInfo>,
    /// Compiled here; `None` on a connected client.
    pub loaded: Option<Arc<Loaded<RtInner>>>,
}

pub struct RtInner {
    pub(crate) me: Weak<RtInner>,
    /// The wasmtime host; a connected client has none (it runs no guest
    /// code, and reads signatures from a component's bytes).
    host: Option<Host<RtInner>>,
    /// The export signatures of components loaded here, read from their
    /// bytes once per id.
    infos: DashMap<ComponentId, Arc<ComponentInfo>>,
    pub(crate) store: Arc<ObjectStore>,
    pub(crate) admission: Arc<Admission>,
    pub(crate) settings: Settings,
    pub(crate) exec: tokio::runtime::Handle,
    output: OutputSink,
    next_id: AtomicU64,
    /// Tasks running here, with what cancels them.
    pub(crate) tasks: DashMap<TaskId, Arc<Notify>>,
    pub(crate) actors: DashMap<ActorId, ActorEntry>,
    /// Local mode: top-level tasks run one at a time, in submission order.
    pub(crate) lane: Option<mpsc::UnboundedSender<BoxFuture<'static, ()>>>,
    pub(crate) counters: Counters,
    /// One permit per live guest instance: a task attempt waits for one,
    /// an actor holds one for its life. Actors never take the last eighth
    /// of [`Settings::max_instances`] (at least 8): tasks always find room.
    pub(crate) slots: Arc<Semaphore>,
    /// Bytes this runtime's job has put (for [`JobCaps::put_bytes`]).
    pub(crate) put_bytes: AtomicU64,
    /// Actors whose mailbox loop runs (for [`JobCaps::actors`]).
    pub(crate) live_actors: Arc<AtomicU64>,
    /// Actors whose instance lives past the pool (allocated on demand).
    pub(crate) actors_past_pool: Arc<AtomicU64>,
    /// How many may (`Host::past_pool_capacity`, read once).
    past_pool: u64,
    /// Tasks and actor calls submitted here and not yet ended (for
    /// [`JobCaps::tasks`]).
    pub(crate) in_flight: Arc<AtomicU64>,
    /// Where new work goes: [`Local`] unless a cluster session attached.
    backend: OnceLock<Arc<dyn Backend>>,
    /// The serve application a guest's deployment calls go to, when one
    /// runs on this runtime.
    pub(crate) serve_router: parking_lot::RwLock<Option<Arc<dyn crate::ServeRouter>>>,
    /// The collective groups of the actors here.
    pub(crate) collectives: Arc<Collectives>,
}

impl RtInner {
    pub(crate) fn new(
        host: Option<Host<RtInner>>,
        store: Arc<ObjectStore>,
        admission: Arc<Admission>,
        settings: Settings,
        exec: tokio::runtime::Handle,
        output: OutputSink,
    ) -> Arc<Self> {
        let lane = settings.local_mode.then(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<BoxFuture<'static, ()>>();
            exec.spawn(async move {
                while let Some(job) = rx.recv().await {
                    job.await;
                }
            });
            tx
        });
        let slots = Arc::new(Semaphore::new(settings.max_instances));
        let past_pool = host.as_ref().map_or(0, |h| h.past_pool_capacity());
        Arc::new_cyclic(|me| RtInner {
            me: me.clone(),
            host,
            infos: DashMap::new(),
            store,
            admission,
            settings,
            exec,
            output,
            next_id: AtomicU64::new(1),
            tasks: DashMap::new(),
            actors: DashMap::new(),
            lane,
            counters: Counters::default(),
            slots,
            put_bytes: AtomicU64::new(0),
            actors_past_pool: Arc::new(AtomicU64::new(0)),
            past_pool,
            live_actors: Arc::default(),
            in_flight: Arc::default(),
            backend: OnceLock::new(),
            serve_router: Default::default(),
            collectives: Default::default(),
        })
    }

    /// Send new work elsewhere (once, before any is submitted): a cluster's
    /// worker (`buffer_output`: its tasks' output goes to the head) or
    /// connected client.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn attach(
        &self,
        backend: Arc<dyn Backend>,
        buffer_output: bool,
    ) -> Result<(), Error> {
        if self.settings.local_mode {
            return Err(Error::InvalidArgument(
                "local mode runs everything in this process; it cannot join a cluster".into(),
            ));
        }
        self.backend
            .set(backend)
            .map_err(|_| Error::InvalidArgument("this runtime is already in a cluster".into()))?;
        if buffer_output {
            self.output.set_buffered();
        }
        Ok(())
    }

    pub(crate) fn backend(&self) -> &dyn Backend {
        match self.backend.get() {
            Some(b) => b.as_ref(),
            None => &Local,
        }
    }

    /// Whole lines a running task wrote on stdout: on a cluster's worker
    /// they go to the head at once (its job's live log), else where the
    /// runtime's output goes.
    pub(crate) fn emit_live(&self, label: &str, stdout: &[u8]) {
        if self.output.is_buffered() && self.backend().live_output(label, stdout) {
            return;
        }
        self.output.emit(label, Stream::Stdout, stdout);
    }

    /// Output a task wrote elsewhere (a cluster's node), shown here.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn emit_output(&self, source: &str, stdout: &[u8], stderr: &[u8]) {
        self.output.emit(source, Stream::Stdout, stdout);
        self.output.emit(source, Stream::Stderr, stderr);
    }

    /// Output a task or actor wrote since it was last taken (a worker's).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn take_output_of(&self, label: &str) -> (Vec<u8>, Vec<u8>) {
        self.output.take_source(label)
    }

    pub(crate) fn take_output(&self) -> Vec<crate::OutputLine> {
        self.output.take()
    }

    /// An object's bytes: from this node's store, else from the backend.
    pub(crate) async fn object_bytes(&self, id: &ObjectId) -> Result<Bytes, Error> {
        match self.store.get(id) {
            Ok(b) => Ok(b),
            Err(e) => match self.backend().fetch(*id) {
                Some(fetch) => fetch.await,
                None => Err(e),
            },
        }
    }

    pub(crate) fn arc(&self) -> Option<Arc<RtInner>> {
        self.me.upgrade()
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn counts(&self) -> TaskCounts {
        let c = &self.counters;
        TaskCounts {
            submitted: c.submitted.load(Ordering::Relaxed),
            finished: c.finished.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            running: self.tasks.len() as u64,
        }
    }

    /// Where an actor's instance goes: a slot of the pool while the pool
    /// has room past the part kept for tasks (so actors never starve other
    /// work), else allocated on demand (an idle actor then costs only the
    /// memory it touched), up to `Host::past_pool_capacity`; or a clear
    /// refusal when the node holds as many actors as it may.
    pub(crate) fn actor_slot(&self) -> Result<ActorSlot, Error> {
        let max = self.settings.max_instances;
        let reserve = (max / 8).max(8).min(max);
        let past_pool = self.past_pool;
        let pool_full = self.slots.available_permits() <= reserve;
        let past = self.actors_past_pool.load(Ordering::Acquire);
        if pool_full && past >= past_pool {
            return Err(Error::System(format!(
                "this node holds as many actors as it can: its {max} instance slots but {} \
                 (kept for tasks, `max_instances`){}; kill actors, or add nodes",
                reserve,
                if past_pool > 0 {
                    format!(
                        ", and {past_pool} more past them (what the kernel's \
                         vm.max_map_count allows)"
                    )
                } else {
                    String::new()
                }
            )));
        }
        if let Some(budget) = self.host.as_ref().and_then(|h| h.memory_budget()) {
            // An eighth of the node's guest memory is kept for tasks too.
            let limit = budget.limit();
            if budget.used() > limit - limit / 8 {
                return Err(Error::System(format!(
                    "this node's guest memory is taken: its instances hold {} MiB of {} MiB, \
                     and the last eighth is kept for tasks; kill actors, give the node more \
                     memory (`--memory`), or add nodes",
                    budget.used() >> 20,
                    limit >> 20
                )));
            }
        }
        if !pool_full && let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(ActorSlot::Pooled(p));
        }
        if past_pool > 0 {
            return Ok(ActorSlot::PastPool(Counted::new(&self.actors_past_pool)));
        }
        Err(Error::System(
            "no instance slot: the pool filled meanwhile".into(),
        ))
    }

    /// An instance slot for a task attempt, waiting for one, and then for
    /// room in the node's guest memory.
    pub(crate) async fn task_slot(&self) -> Result<OwnedSemaphorePermit, Error> {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::System(format!("no instance slot: {e}")))?;
        if let Some(budget) = self.host.as_ref().and_then(|h| h.memory_budget()) {
            budget.wait_for_room(TASK_MEMORY_HEADROOM).await;
        }
        Ok(slot)
    }

    /// This node's wasmtime host.
    pub(crate) fn host(&self) -> Result<&Host<RtInner>, Error> {
        self.host.as_ref().ok_or_else(|| {
            Error::System("a connected client runs no guest code; its cluster does".into())
        })
    }

    /// A component this node has compiled.
    pub(crate) fn loaded(&self, id: &ComponentId) -> Option<Arc<Loaded<RtInner>>> {
        self.host.as_ref()?.get(id)
    }

    /// A component's export signatures, read from its bytes (once per id):
    /// what the embedding API shows and checks, and what converts WAVE text.
    fn read_info(&self, id: ComponentId, bytes: &[u8]) -> Result<Arc<ComponentInfo>, Error> {
        if let Some(info) = self.infos.get(&id) {
            return Ok(info.clone());
        }
        let info = Arc::new(ComponentInfo::read(bytes)?);
        Ok(self.infos.entry(id).or_insert(info).value().clone())
    }

    /// Read a component's signatures, and compile it when this process has
    /// a host (not on a connected client): the one path of every load.
    pub(crate) fn load_component(&self, bytes: &[u8]) -> Result<LoadedHere, Error> {
        let id = ComponentId::of(bytes);
        let info = self.read_info(id, bytes)?;
        let loaded = match &self.host {
            Some(host) => Some(host.load(bytes)?),
            None => None,
        };
        Ok(LoadedHere { id, info, loaded })
    }

    /// The signatures of a component read here earlier.
    pub(crate) fn info(&self, id: &ComponentId) -> Result<Arc<ComponentInfo>, Error> {
        self.infos
            .get(id)
            .map(|i| i.value().clone())
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "component {} is not loaded in this process",
                    id.short()
                ))
            })
    }

    pub(crate) fn component(&self, id: &ComponentId) -> Result<Arc<Loaded<RtInner>>, Error> {
        self.loaded(id).ok_or_else(|| {
            Error::NotFound(format!(
                "component {} is not loaded on this node",
                id.short()
            ))
        })
    }

    /// The limits of one attempt or actor instance: the options', else the
    /// runtime's defaults.
    pub(crate) fn limits(
        &self,
        resources: &Resources,
        timeout: Option<Duration>,
        fuel: Option<u64>,
    ) -> Limits {
        Limits {
            memory: (resources.memory() > 0).then(|| resources.memory()),
            timeout: timeout.or(self.settings.default_timeout),
            fuel: fuel.or(self.settings.default_fuel),
            num_gpus: resources.num_gpus(),
            live_stdout: None,
        }
    }

    /// A line of the runtime's own in a task's stderr (a failed attempt
    /// that is retried: its error would be seen nowhere else).
    pub(crate) fn emit_note(&self, label: &str, text: &str) {
        self.output
            .emit(label, Stream::Stderr, format!("{text}\n").as_bytes());
    }

    pub(crate) fn emit(&self, label: &str, out: &Outcome) {
        self.output.emit(label, Stream::Stdout, &out.stdout);
        self.output.emit(label, Stream::Stderr, &out.stderr);
        if out.dropped_output > 0 {
            tracing::warn!(
                "({label}) {} bytes of output were dropped past the limit",
                out.dropped_output
            );
        }
    }

    // ----- the driver's calls (embedding API, command line) -----

    pub(crate) fn put(&self, bytes: Bytes) -> ObjectRef {
        self.backend().put(self, Caller::Driver, bytes)
    }

    pub(crate) fn submit(
        self: &Arc<Self>,
        code: Code,
        function: &str,
        args: Vec<Arg<ObjectRef>>,
        options: TaskOptions,
    ) -> Result<ObjectRef, Error> {
        self.backend()
            .submit(self, Caller::Driver, code, function, args, options)
    }

    pub(crate) fn create_actor(
        self: &Arc<Self>,
        code: Code,
        class: &str,
        args: Vec<Arg<ObjectRef>>,
        options: ActorOptions,
    ) -> Result<ActorId, Error> {
        self.backend()
            .create_actor(self, Caller::Driver, code, class, args, options)
    }

    pub(crate) fn call_actor(
        &self,
        actor: ActorId,
        method: String,
        args: Vec<Arg<ObjectRef>>,
    ) -> Result<ObjectRef, Error> {
        self.backend()
            .call_actor(self, Caller::Driver, actor, method, args)
    }

    pub(crate) fn kill_actor(&self, actor: ActorId) -> BoxFuture<'static, Result<(), Error>> {
        self.backend().kill_actor(self, Caller::Driver, actor)
    }

    pub(crate) fn cancel(&self, r: &ObjectRef) -> Result<(), Error> {
        self.backend().cancel(self, Caller::Driver, r)
    }

    pub(crate) fn free(&self, refs: &[ObjectRef]) {
        self.backend().free(refs)
    }

    /// Wait for `refs`: the indexes of at most `num_returns` ready ones, in
    /// the order given (Ray's `ray.wait`).
    pub(crate) async fn wait(
        refs: &[ObjectRef],
        num_returns: usize,
        timeout: Option<Duration>,
    ) -> Vec<u32> {
        let num_returns = num_returns.min(refs.len());
        let mut ready: Vec<u32> = Vec::new();
        let mut pending = FuturesUnordered::new();
        for (i, r) in refs.iter().enumerate() {
            if r.is_ready() {
                ready.push(i as u32);
            } else {
                let r = r.clone();
                pending.push(async move {
                    r.settled().await;
                    i as u32
                });
            }
        }
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        while ready.len() < num_returns {
            let next = match deadline {
                Some(d) => match tokio::time::timeout_at(d, pending.next()).await {
                    Ok(n) => n,
                    Err(_) => break,
                },
                None => pending.next().await,
            };
            match next {
                Some(i) => ready.push(i),
                None => break,
            }
        }
        ready.sort_unstable();
        ready.truncate(num_returns);
        ready
    }

    pub(crate) async fn get_bytes(&self, r: &ObjectRef) -> Result<Bytes, Error> {
        let id = r.ready_id().await?;
        self.object_bytes(&id).await
    }
}

fn shut_down<T: Send + 'static>() -> BoxFuture<'static, Result<T, Error>> {
    Box::pin(async { Err(Error::Cancelled("the runtime is shut down".into())) })
}

// ----- what guests reach -----

impl Services for RtInner {
    type Ref = ObjectRef;
    type Ctx = TaskCtx;

    fn put(&self, ctx: &TaskCtx, bytes: Bytes) -> ObjectRef {
        self.backend().put(self, ctx.caller, bytes)
    }

    fn get(&self, ctx: &TaskCtx, r: &ObjectRef) -> BoxFuture<'static, Result<Bytes, Error>> {
        let (r, ctx) = (r.clone(), ctx.clone());
        let Some(rt) = self.arc() else {
            return shut_down();
        };
        Box::pin(async move {
            let id = match r.state() {
                SlotState::Ready(id) => return rt.store.get(&id),
                SlotState::Remote(id) => id,
                SlotState::Failed(e) => return Err(e),
                SlotState::Pending => blocking(&rt, &ctx, r.ready_id()).await?,
            };
            match rt.store.get(&id) {
                Ok(b) => Ok(b),
                Err(_) => blocking(&rt, &ctx, rt.object_bytes(&id)).await,
            }
        })
    }

    fn wait(
        &self,
        ctx: &TaskCtx,
        refs: Vec<ObjectRef>,
        num_returns: usize,
        timeout: Option<Duration>,
    ) -> BoxFuture<'static, Vec<u32>> {
        let ctx = ctx.clone();
        let rt = self.arc();
        Box::pin(async move {
            match rt {
                Some(rt)
                    if refs.iter().filter(|r| r.is_ready()).count()
                        < num_returns.min(refs.len()) =>
                {
                    blocking(&rt, &ctx, RtInner::wait(&refs, num_returns, timeout)).await
                }
                _ => RtInner::wait(&refs, num_returns, timeout).await,
            }
        })
    }

    fn submit(
        &self,
        ctx: &TaskCtx,
        call: CallRequest<ObjectRef>,
        options: TaskOptions,
    ) -> BoxFuture<'static, Result<ObjectRef, Error>> {
        let Some(rt) = self.arc() else {
            return shut_down();
        };
        let caller = ctx.caller;
        Box::pin(async move {
            if rt.settings.local_mode {
                // Inline: the task runs to completion before `submit`
                // returns (a local-mode runtime never joins a cluster).
                let comp = rt.component(&call.component)?;
                let (result, fut) = rt.prepare(comp, &call.function, call.args, options)?;
                fut.await;
                return Ok(result);
            }
            rt.backend().submit(
                &rt,
                caller,
                Code::Digest(call.component),
                &call.function,
                call.args,
                options,
            )
        })
    }

    fn cancel(&self, ctx: &TaskCtx, r: &ObjectRef) -> Result<(), Error> {
        self.backend().cancel(self, ctx.caller, r)
    }

    fn create_actor(
        &self,
        ctx: &TaskCtx,
        call: CallRequest<ObjectRef>,
        options: ActorOptions,
    ) -> BoxFuture<'static, Result<ActorId, Error>> {
        let Some(rt) = self.arc() else {
            return shut_down();
        };
        let caller = ctx.caller;
        Box::pin(async move {
            rt.backend().create_actor(
                &rt,
                caller,
                Code::Digest(call.component),
                &call.function,
                call.args,
                options,
            )
        })
    }

    fn call_actor(
        &self,
        ctx: &TaskCtx,
        actor: ActorId,
        method: String,
        args: Vec<Arg<ObjectRef>>,
    ) -> BoxFuture<'static, Result<ObjectRef, Error>> {
        let r = self
            .backend()
            .call_actor(self, ctx.caller, actor, method, args);
        Box::pin(async move { r })
    }

    fn kill_actor(&self, ctx: &TaskCtx, actor: ActorId) -> BoxFuture<'static, Result<(), Error>> {
        self.backend().kill_actor(self, ctx.caller, actor)
    }

    fn ref_id(&self, r: &ObjectRef) -> String {
        r.name().to_string()
    }

    fn serve_call(
        &self,
        ctx: &TaskCtx,
        deployment: String,
        request: crate::HttpRequest,
    ) -> BoxFuture<'static, Result<crate::HttpResponse, Error>> {
        let Some(rt) = self.arc() else {
            return shut_down();
        };
        let ctx = ctx.clone();
        // The caller's CPUs go back to the node while it waits, as in `get`:
        // callers waiting on a deployment that needs CPUs cannot starve it.
        Box::pin(async move {
            let call = rt.serve_call(deployment, request);
            blocking(&rt, &ctx, call).await
        })
    }

    fn content_id(&self, r: &ObjectRef) -> Option<ObjectId> {
        r.content_id()
    }

    fn group_rank(&self, ctx: &TaskCtx) -> (u32, u32) {
        ctx.group
            .as_ref()
            .map_or((0, 1), |g| (g.rank, g.world_size))
    }

    fn all_reduce(
        &self,
        ctx: &TaskCtx,
        data: Vec<f32>,
    ) -> BoxFuture<'static, Result<Vec<f32>, Error>> {
        let (Some(m), Caller::Actor { job, actor }) = (ctx.group.clone(), ctx.caller) else {
            return Box::pin(async move { Ok(data) });
        };
        let c = self.collectives.clone();
        Box::pin(async move { c.all_reduce(job, actor, &m, data).await })
    }

    fn report(
        &self,
        ctx: &TaskCtx,
        mut report: ferray_core::Report,
    ) -> BoxFuture<'static, Result<(), Error>> {
        // Only rank 0's checkpoints are kept: the others' are not carried
        // to the driver.
        if ctx.group.as_ref().is_some_and(|g| g.rank != 0) {
            report.checkpoint = None;
        }
        let run = match ctx.caller {
            Caller::Actor { actor, .. } => self.reports_of(actor),
            _ => None,
        };
        Box::pin(async move {
            match run {
                Some(r) => r.put(report).await,
                None => Err(Error::InvalidArgument(
                    "report: only an actor in a training run reports (ferray train opens one)"
                        .into(),
                )),
            }
        })
    }

    fn start_checkpoint(&self, ctx: &TaskCtx) -> Option<Vec<u8>> {
        match ctx.caller {
            Caller::Actor { actor, .. } => self.reports_of(actor)?.start(),
            _ => None,
        }
    }
}

/// Run a blocking wait of a task with its CPUs given back meanwhile, so that
/// tasks waiting on subtasks cannot starve the node (nested tasks on 2 CPUs).
async fn blocking<T>(rt: &RtInner, ctx: &TaskCtx, fut: impl std::future::Future<Output = T>) -> T {
    let Some(lease) = &ctx.lease else {
        return fut.await;
    };
    let Caller::Task { task, .. } = ctx.caller else {
        return fut.await;
    };
    lease.release_cpus();
    rt.backend().blocked(task, true);
    let out = fut.await;
    lease.reacquire_cpus().await;
    // After the node took them back, so that the head mirrors its order.
    rt.backend().blocked(task, false);
    out
}
