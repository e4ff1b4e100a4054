//! The node's runtime: task execution (dependencies, admission, attempts),
//! actors, and the [`Services`] the host forwards guests' calls to. Shared by
//! the embedding API and the command line.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use ferray_core::{ActorId, ActorOptions, Arg, ComponentId, Error, ObjectId, TaskId, TaskOptions};
use ferray_host::{CallRequest, ClassInfo, FuncInfo, Host, Limits, Loaded, Outcome, Services};
use ferray_store::ObjectStore;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

use crate::cluster::session::Session;
use crate::objects::{ObjectRef, SlotState};
use crate::output::{OutputSink, Stream};
use crate::sched::{Admission, Lease};

/// Settings of a runtime that the builder fixes.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub local_mode: bool,
    pub default_timeout: Option<Duration>,
    pub default_fuel: Option<u64>,
}

/// The calling task of a host call.
#[derive(Clone)]
pub struct TaskCtx {
    label: Arc<str>,
    lease: Option<Arc<Lease>>,
    /// On a cluster: the job and the task (as the head knows them), else 0.
    job: u64,
    task: u64,
}

type OnDeath = Box<dyn FnOnce(String) + Send>;

struct ActorEntry {
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
struct Counters {
    submitted: AtomicU64,
    finished: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
}

pub struct RtInner {
    me: Weak<RtInner>,
    pub(crate) host: Host<RtInner>,
    pub(crate) store: Arc<ObjectStore>,
    pub(crate) admission: Arc<Admission>,
    pub(crate) settings: Settings,
    pub(crate) exec: tokio::runtime::Handle,
    output: OutputSink,
    next_id: AtomicU64,
    tasks: DashMap<TaskId, Arc<Notify>>,
    actors: DashMap<ActorId, ActorEntry>,
    /// Local mode: top-level tasks run one at a time, in submission order.
    lane: Option<mpsc::UnboundedSender<BoxFuture<'static, ()>>>,
    counters: Counters,
    /// A worker or a connected client: tasks, actors and puts go through
    /// the cluster's head.
    cluster: OnceLock<Arc<Session>>,
}

/// Fails a result that was never resolved (the task was dropped).
struct FailOnDrop(ObjectRef, &'static str);

impl Drop for FailOnDrop {
    fn drop(&mut self) {
        self.0.fail(Error::Cancelled(self.1.to_string()));
    }
}

impl RtInner {
    pub(crate) fn new(
        host: Host<RtInner>,
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
        Arc::new_cyclic(|me| RtInner {
            me: me.clone(),
            host,
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
            cluster: OnceLock::new(),
        })
    }

    /// Join a cluster session (once).
    pub(crate) fn attach(&self, session: Arc<Session>) -> Result<(), Error> {
        if session.node.is_some() {
            self.output.set_buffered();
        }
        self.cluster
            .set(session)
            .map_err(|_| Error::InvalidArgument("this runtime is already in a cluster".into()))
    }

    pub(crate) fn session(&self) -> Option<&Arc<Session>> {
        self.cluster.get()
    }

    /// Output a task wrote elsewhere (a cluster's node), shown here.
    pub(crate) fn emit_output(&self, source: &str, stdout: &[u8], stderr: &[u8]) {
        self.output.emit(source, Stream::Stdout, stdout);
        self.output.emit(source, Stream::Stderr, stderr);
    }

    /// Output a task or actor wrote since it was last taken (a worker's).
    pub(crate) fn take_output_of(&self, label: &str) -> (Vec<u8>, Vec<u8>) {
        self.output.take_source(label)
    }

    /// An object's bytes: from this node's store, else from a holder.
    pub(crate) async fn object_bytes(&self, id: &ObjectId) -> Result<Bytes, Error> {
        match self.store.get(id) {
            Ok(b) => Ok(b),
            Err(e) => match self.cluster.get() {
                Some(s) => s.fetch(*id).await,
                None => Err(e),
            },
        }
    }

    fn arc(&self) -> Option<Arc<RtInner>> {
        self.me.upgrade()
    }

    fn next_id(&self) -> u64 {
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

    pub(crate) fn component(&self, id: &ComponentId) -> Result<Arc<Loaded<RtInner>>, Error> {
        self.host.get(id).ok_or_else(|| {
            Error::NotFound(format!(
                "component {} is not loaded on this node",
                id.short()
            ))
        })
    }

    pub(crate) fn put(&self, bytes: Bytes) -> ObjectRef {
        if let Some(s) = self.cluster.get() {
            return s.put(s.job, bytes);
        }
        let id = self.store.put(bytes);
        ObjectRef::ready(id, self.store.clone())
    }

    /// Submit a task; the reference comes back at once (in local mode, from
    /// the driver, the task joins the sequential lane).
    pub(crate) fn submit(
        self: &Arc<Self>,
        comp: Arc<Loaded<RtInner>>,
        function: &str,
        args: Vec<Arg<ObjectRef>>,
        options: TaskOptions,
    ) -> Result<ObjectRef, Error> {
        if let Some(s) = self.cluster.get() {
            comp.info.function(function)?;
            return s.submit(s.job, comp.id, function, args, &options);
        }
        let (result, fut) = self.prepare(comp, function, args, options)?;
        match &self.lane {
            Some(lane) => {
                if lane.send(fut).is_err() {
                    result.fail(Error::Cancelled("the runtime is shut down".into()));
                }
            }
            None => {
                self.exec.spawn(fut);
            }
        }
        Ok(result)
    }

    fn prepare(
        self: &Arc<Self>,
        comp: Arc<Loaded<RtInner>>,
        function: &str,
        args: Vec<Arg<ObjectRef>>,
        options: TaskOptions,
    ) -> Result<(ObjectRef, BoxFuture<'static, ()>), Error> {
        let func = comp.info.function(function)?.clone();
        if !self.settings.local_mode {
            self.admission.check_feasible(&options.resources)?;
        }
        let id = TaskId(self.next_id());
        self.counters.submitted.fetch_add(1, Ordering::Relaxed);
        let result = ObjectRef::pending(id, self.store.clone());
        let cancel = Arc::new(Notify::new());
        self.tasks.insert(id, cancel.clone());
        let rt = self.clone();
        let guard = FailOnDrop(
            result.clone(),
            "the task was dropped: the runtime shut down",
        );
        let fut = async move {
            let guard = guard;
            tokio::select! {
                biased;
                _ = cancel.notified() => {
                    guard.0.fail(Error::Cancelled(format!("{id} was cancelled")));
                }
                _ = rt.clone().run_task(id, comp, func, args, options, guard.0.clone()) => {}
            }
            rt.tasks.remove(&id);
        };
        Ok((result, Box::pin(fut)))
    }

    async fn run_task(
        self: Arc<Self>,
        id: TaskId,
        comp: Arc<Loaded<RtInner>>,
        func: Arc<FuncInfo>,
        args: Vec<Arg<ObjectRef>>,
        options: TaskOptions,
        result: ObjectRef,
    ) {
        // The lease goes before the result is resolved: whoever waits on
        // the result finds the task's resources free again.
        let (out, lease) = self
            .execute_leased(id, &comp, &func, args, &options, 0, None)
            .await;
        drop(lease);
        match out {
            Ok(bytes) => {
                self.counters.finished.fetch_add(1, Ordering::Relaxed);
                result.resolve(self.store.put(Bytes::from(bytes)));
            }
            Err(e) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(task = %id, "failed: {e}");
                result.fail(e);
            }
        }
    }

    /// Run a task: its arguments fetched, its resources admitted, attempts
    /// within `max_retries`. `job` names a cluster's job (else 0);
    /// `on_start` hears when the task got its resources. The task's lease
    /// comes back with the result: a cluster's worker keeps it until the
    /// head has heard that the task ended, so that the head never hears of
    /// the next start first.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn execute_leased(
        self: &Arc<Self>,
        id: TaskId,
        comp: &Arc<Loaded<RtInner>>,
        func: &FuncInfo,
        args: Vec<Arg<ObjectRef>>,
        options: &TaskOptions,
        job: u64,
        on_start: Option<Box<dyn FnOnce() + Send>>,
    ) -> (Result<Vec<u8>, Error>, Option<Arc<Lease>>) {
        let args = match self.resolve_args(args).await {
            Ok(a) => a,
            Err(e) => return (Err(e), None),
        };
        let lease = if self.settings.local_mode {
            None
        } else {
            Some(Arc::new(
                self.admission.lease(options.resources.clone()).await,
            ))
        };
        if let Some(f) = on_start {
            f();
        }
        let label: Arc<str> = Arc::from(id.to_string());
        let task = if self.cluster.get().is_some() {
            id.0
        } else {
            0
        };
        let ctx = TaskCtx {
            label,
            lease: lease.clone(),
            job,
            task,
        };
        let limits = Limits {
            memory: (options.resources.memory() > 0).then(|| options.resources.memory()),
            timeout: options.timeout.or(self.settings.default_timeout),
            fuel: options.fuel.or(self.settings.default_fuel),
            num_gpus: options.resources.num_gpus(),
        };
        let mut attempt = 0u32;
        loop {
            let out = self
                .host
                .run(comp, func, &args, &limits, self.clone(), ctx.clone())
                .await;
            self.emit(&ctx.label, &out);
            let retry = attempt < options.max_retries
                && match &out.result {
                    Ok(bytes) => options.retry_exceptions && is_err_result(func, bytes),
                    Err(e) => e.is_system() || (options.retry_exceptions && e.is_application()),
                };
            if !retry {
                return (out.result, lease);
            }
            attempt += 1;
            self.counters.retried.fetch_add(1, Ordering::Relaxed);
            // Back off a little (10 ms, doubling to 640 ms) so that a
            // passing fault of the node can clear before the next attempt.
            tokio::time::sleep(Duration::from_millis(10 << (attempt - 1).min(6))).await;
            match &out.result {
                Err(e) => tracing::info!(task = %id, "attempt {attempt} failed, retrying: {e}"),
                Ok(_) => {
                    tracing::info!(task = %id, "attempt {attempt} returned an error, retrying")
                }
            }
        }
    }

    /// The concatenated argument bytes, once every dependency is ready.
    pub(crate) async fn resolve_args(
        &self,
        mut args: Vec<Arg<ObjectRef>>,
    ) -> Result<Vec<u8>, Error> {
        // One value piece (the common case): its bytes as they are, no copy.
        if let [Arg::Value(_)] = args.as_slice()
            && let Some(Arg::Value(v)) = args.pop()
        {
            return Ok(v);
        }
        let mut out = Vec::new();
        for a in args {
            match a {
                Arg::Value(v) => out.extend_from_slice(&v),
                Arg::Ref(r) => {
                    let id = r.ready_id().await.map_err(|e| {
                        Error::TaskFailed(format!("its argument {} failed: {e}", r.name()))
                    })?;
                    out.extend_from_slice(&self.object_bytes(&id).await?);
                }
            }
        }
        Ok(out)
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

    pub(crate) fn cancel(&self, r: &ObjectRef) -> Result<(), Error> {
        if let Some(s) = self.cluster.get() {
            return s.cancel(r);
        }
        match r.name() {
            crate::RefName::Task(id) => {
                if let Some(n) = self.tasks.get(&id) {
                    n.notify_one();
                }
                Ok(())
            }
            crate::RefName::Put(_) => Err(Error::InvalidArgument(
                "only the result of a task can be cancelled".into(),
            )),
        }
    }

    /// Wait for `refs`; the indexes of the first `num_returns` ready, in order.
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

    // ----- actors -----

    pub(crate) fn create_actor(
        self: &Arc<Self>,
        comp: Arc<Loaded<RtInner>>,
        class: &str,
        args: Vec<Arg<ObjectRef>>,
        options: ActorOptions,
    ) -> Result<ActorId, Error> {
        if let Some(s) = self.cluster.get() {
            comp.info.class(class)?;
            return s.create_actor(s.job, comp.id, class, args, &options);
        }
        let id = ActorId(self.next_id());
        self.create_actor_with_id(id, comp, class, args, options, 0, None)?;
        Ok(id)
    }

    /// Start an actor on this node under a given id (a cluster's worker
    /// uses the head's id); `on_death` hears why it died for good.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn create_actor_with_id(
        self: &Arc<Self>,
        id: ActorId,
        comp: Arc<Loaded<RtInner>>,
        class: &str,
        args: Vec<Arg<ObjectRef>>,
        options: ActorOptions,
        job: u64,
        on_death: Option<OnDeath>,
    ) -> Result<(), Error> {
        let class = comp.info.class(class)?.clone();
        self.admission.check_feasible(&options.resources)?;
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
            job,
            on_death,
        };
        let handle = self
            .exec
            .spawn(actor.run(self.clone(), comp, class, args, options));
        if let Some(entry) = self.actors.get(&id) {
            *entry.abort.lock() = Some(handle.abort_handle());
        }
        Ok(())
    }

    pub(crate) fn call_actor(
        &self,
        actor: ActorId,
        method: String,
        args: Vec<Arg<ObjectRef>>,
    ) -> Result<ObjectRef, Error> {
        if let Some(s) = self.cluster.get() {
            return s.call_actor(s.job, actor, method, args);
        }
        self.call_actor_local(actor, method, args)
    }

    /// Queue a call in the mailbox of an actor of this node.
    pub(crate) fn call_actor_local(
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
        };
        if entry.tx.send(call).is_err() {
            result.fail(Error::ActorDied(entry.status.reason(actor)));
        }
        Ok(result)
    }

    pub(crate) fn kill_actor(&self, actor: ActorId) -> Result<(), Error> {
        if let Some(s) = self.cluster.get()
            && s.node.is_none()
        {
            return s.kill_actor(actor);
        }
        self.kill_local_actor(actor)
    }

    fn kill_local_actor(&self, actor: ActorId) -> Result<(), Error> {
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

/// `result<_, _>` results encode `err` as a leading 1.
pub(crate) fn is_err_result(func: &FuncInfo, bytes: &[u8]) -> bool {
    matches!(func.results.as_slice(), [ferray_host::Type::Result(_)]) && bytes.first() == Some(&1)
}

/// One actor's mailbox loop. Dropping it (the actor died, was killed, or the
/// runtime shut down) fails the call in flight and every queued call.
struct ActorLoop {
    id: ActorId,
    rx: mpsc::UnboundedReceiver<ActorCall>,
    current: Option<ObjectRef>,
    status: Arc<ActorStatus>,
    job: u64,
    on_death: Option<OnDeath>,
}

impl Drop for ActorLoop {
    fn drop(&mut self) {
        let reason = self.status.reason(self.id);
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
    ) {
        let ctor_args = match rt.resolve_args(args).await {
            Ok(a) => a,
            Err(e) => return self.die(format!("could not start: {e}")),
        };
        let _lease = rt.admission.lease(options.resources.clone()).await;
        let label: Arc<str> = Arc::from(self.id.to_string());
        let ctx = TaskCtx {
            label: label.clone(),
            lease: None,
            job: self.job,
            task: 0,
        };

        let limits = Limits {
            memory: (options.resources.memory() > 0).then(|| options.resources.memory()),
            timeout: options.timeout.or(rt.settings.default_timeout),
            fuel: options.fuel.or(rt.settings.default_fuel),
            num_gpus: options.resources.num_gpus(),
        };
        let mut instance = match start_instance(&rt, &comp, &class, &ctor_args, &limits, &ctx).await
        {
            Ok(i) => i,
            Err(e) => return self.die(format!("died in its constructor: {e}")),
        };
        let mut restarts = 0u32;
        while let Some(call) = self.rx.recv().await {
            if self.status.killed.load(Ordering::Relaxed) {
                self.current = Some(call.result);
                return;
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
            rt.emit(&label, &out);
            self.current = None;
            match out.result {
                Ok(bytes) => call.result.resolve(rt.store.put(Bytes::from(bytes))),
                Err(e @ (Error::NotFound(_) | Error::InvalidArgument(_))) => call.result.fail(e),
                Err(e) => {
                    call.result.fail(e.clone());
                    if restarts >= options.max_restarts {
                        return self.die(format!(
                            "died: {e} (no restarts left, max_restarts = {})",
                            options.max_restarts
                        ));
                    }
                    restarts += 1;
                    tracing::info!(actor = %self.id, "restarting ({restarts}/{}) after: {e}", options.max_restarts);
                    instance = match start_instance(&rt, &comp, &class, &ctor_args, &limits, &ctx)
                        .await
                    {
                        Ok(i) => i,
                        Err(e) => {
                            return self.die(format!("died in its constructor on restart: {e}"));
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
) -> Result<ferray_host::ActorInstance<RtInner>, Error> {
    let (made, out) = rt
        .host
        .create_actor(
            comp.clone(),
            class,
            ctor_args,
            limits,
            rt.clone(),
            ctx.clone(),
        )
        .await;
    rt.emit(&ctx.label, &out);
    made
}

// ----- what guests reach -----

impl Services for RtInner {
    type Ref = ObjectRef;
    type Ctx = TaskCtx;

    fn put(&self, ctx: &TaskCtx, bytes: Bytes) -> ObjectRef {
        if let Some(s) = self.cluster.get() {
            return s.put(ctx.job, bytes);
        }
        RtInner::put(self, bytes)
    }

    fn get(&self, ctx: &TaskCtx, r: &ObjectRef) -> BoxFuture<'static, Result<Bytes, Error>> {
        let (r, ctx) = (r.clone(), ctx.clone());
        let Some(rt) = self.arc() else {
            return Box::pin(async { Err(Error::Cancelled("the runtime is shut down".into())) });
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
            return Box::pin(async { Err(Error::Cancelled("the runtime is shut down".into())) });
        };
        let job = ctx.job;
        Box::pin(async move {
            if let Some(s) = rt.cluster.get() {
                return s.submit(job, call.component, &call.function, call.args, &options);
            }
            let comp = rt.component(&call.component)?;
            if rt.settings.local_mode {
                // Inline: the task runs to completion before `submit` returns.
                let (result, fut) = rt.prepare(comp, &call.function, call.args, options)?;
                fut.await;
                return Ok(result);
            }
            rt.submit(comp, &call.function, call.args, options)
        })
    }

    fn cancel(&self, _ctx: &TaskCtx, r: &ObjectRef) -> Result<(), Error> {
        RtInner::cancel(self, r)
    }

    fn create_actor(
        &self,
        ctx: &TaskCtx,
        call: CallRequest<ObjectRef>,
        options: ActorOptions,
    ) -> BoxFuture<'static, Result<ActorId, Error>> {
        let Some(rt) = self.arc() else {
            return Box::pin(async { Err(Error::Cancelled("the runtime is shut down".into())) });
        };
        let job = ctx.job;
        Box::pin(async move {
            if let Some(s) = rt.cluster.get() {
                return s.create_actor(job, call.component, &call.function, call.args, &options);
            }
            let comp = rt.component(&call.component)?;
            rt.create_actor(comp, &call.function, call.args, options)
        })
    }

    fn call_actor(
        &self,
        ctx: &TaskCtx,
        actor: ActorId,
        method: String,
        args: Vec<Arg<ObjectRef>>,
    ) -> BoxFuture<'static, Result<ObjectRef, Error>> {
        let r = match self.cluster.get() {
            Some(s) => s.call_actor(ctx.job, actor, method, args),
            None => RtInner::call_actor(self, actor, method, args),
        };
        Box::pin(async move { r })
    }

    fn kill_actor(&self, _ctx: &TaskCtx, actor: ActorId) -> Result<(), Error> {
        match self.cluster.get() {
            Some(s) => s.kill_actor(actor),
            None => RtInner::kill_local_actor(self, actor),
        }
    }

    fn ref_id(&self, r: &ObjectRef) -> String {
        r.name().to_string()
    }

    fn content_id(&self, r: &ObjectRef) -> Option<ObjectId> {
        r.content_id()
    }
}

/// Run a blocking wait of a task with its CPUs given back meanwhile, so that
/// tasks waiting on subtasks cannot starve the node (nested tasks on 2 CPUs).
async fn blocking<T>(rt: &RtInner, ctx: &TaskCtx, fut: impl std::future::Future<Output = T>) -> T {
    let Some(lease) = &ctx.lease else {
        return fut.await;
    };
    let session = rt.cluster.get().filter(|_| ctx.task != 0);
    lease.release_cpus();
    if let Some(s) = session {
        s.blocked(ctx.task, true);
    }
    let out = fut.await;
    lease.reacquire_cpus().await;
    // After the node took them back, so that the head mirrors its order.
    if let Some(s) = session {
        s.blocked(ctx.task, false);
    }
    out
}

impl RtInner {
    pub(crate) fn take_output(&self) -> Vec<crate::OutputLine> {
        self.output.take()
    }
}
