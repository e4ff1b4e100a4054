//! Running guest code: one fresh `Store` per task attempt, one long-lived
//! `Store` per actor instance, each with its own limits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferray_core::{ComponentId, Error};
use wasmtime::component::{Instance, ResourceAny, ResourceTable, Type, Val};
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

use crate::budget::{MemoryBudget, Share};
use crate::codec;
use crate::output::Capture;
use crate::{ClassInfo, FuncInfo, Host, Limits, Loaded, Services};

/// How long past its time limit a call blocked in a host call may take to
/// stop (the store's deadline stops running wasm; the wall clock the rest).
pub const WALL_CLOCK_GRACE: Duration = Duration::from_millis(50);

/// Handles a guest may hold however small its memory cap (wasmtime's default).
const MIN_HANDLES: usize = 100_000;

/// Bytes of host memory one guest-to-host transfer may cost (wasmtime's
/// default is 128 MiB).
const HOSTCALL_FUEL: usize = 256 << 20;

/// Memory, table and instance caps of one store. Remembers whether a memory
/// grow was refused, so that the trap that follows reads as a memory limit.
/// The node's memory budget is the other bound: a growth past what is left
/// of it is refused too, and read as the node's fault (`node_full`).
struct StoreLimiter {
    memory: usize,
    hit: bool,
    share: Share,
    node_full: bool,
}

impl ResourceLimiter for StoreLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            self.hit = true;
            return Ok(false);
        }
        if !self.share.grow(current, desired) {
            self.node_full = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.share.failed();
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        64
    }
    fn tables(&self) -> usize {
        64
    }
    fn memories(&self) -> usize {
        16
    }
}

/// The data of a guest's `Store`: WASI, the resource table, limits, and
/// the runtime's services for the `ferray:runtime` imports.
pub struct TaskState<S: Services> {
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    /// `wasi:http`'s state (used by HTTP handlers; empty otherwise).
    pub(crate) http: wasmtime_wasi_http::WasiHttpCtx,
    pub(crate) http_hooks: crate::http::DenyOutgoing,
    limiter: StoreLimiter,
    pub(crate) services: Arc<S>,
    pub(crate) ctx: S::Ctx,
    /// The component this store runs (for `self-digest` and own-component calls).
    pub(crate) component: ComponentId,
    pub(crate) deadline: Option<Instant>,
    timed_out: bool,
    /// The node's GPU, when this task asked for one (`num_gpus > 0`).
    pub(crate) gpu: Option<ferray_gpu::Gpu>,
    /// Whether the task asked for a GPU.
    pub(crate) gpu_asked: bool,
    /// The task's buffers and pipelines, made on its first GPU call; freed
    /// when the store (and so this state) is dropped, whatever way the task ended.
    pub(crate) gpu_session: Option<ferray_gpu::GpuSession>,
}

impl<S: Services> WasiView for TaskState<S> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// What one call produced: its encoded result or error, and the guest's output.
#[derive(Debug)]
pub struct Outcome {
    pub result: Result<Vec<u8>, Error>,
    pub stdout: Bytes,
    pub stderr: Bytes,
    /// Output bytes dropped past the bound.
    pub dropped_output: u64,
}

pub(crate) struct Output {
    stdout: Capture,
    stderr: Capture,
}

impl Output {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            stdout: Capture::new(capacity),
            stderr: Capture::new(capacity),
        }
    }
    pub(crate) fn finish(&self, result: Result<Vec<u8>, Error>) -> Outcome {
        let (stdout, d1) = self.stdout.take();
        let (mut stderr, d2) = self.stderr.take();
        // A trap's own message is terse (`unreachable executed`); what the
        // guest printed last (a Rust panic's message) says why. Those lines
        // move into the error, so that they are shown once, with it.
        let result = match result {
            Err(Error::Trap(msg)) if !stderr.is_empty() => {
                let (kept, last) = split_tail(&stderr, 4096);
                let e = Error::Trap(format!("{msg}\nguest stderr:\n{last}"));
                stderr.truncate(kept);
                Err(e)
            }
            other => other,
        };
        Outcome {
            result,
            stdout,
            stderr,
            dropped_output: d1 + d2,
        }
    }
}

/// The last lines of `bytes`, at most `max` bytes of them (whole lines),
/// as text, and where they start.
fn split_tail(bytes: &[u8], max: usize) -> (usize, String) {
    let end = bytes.len()
        - bytes
            .iter()
            .rev()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
    let mut start = end.saturating_sub(max);
    if start > 0 {
        // Start after a line break, so that no line is cut.
        start = match bytes[start..end].iter().position(|&b| b == b'\n') {
            Some(i) => start + i + 1,
            // One long line: cut it where a character starts.
            None => (start..end)
                .find(|&i| std::str::from_utf8(&bytes[i..end]).is_ok())
                .unwrap_or(end),
        };
    }
    (
        start,
        String::from_utf8_lossy(&bytes[start..end]).into_owned(),
    )
}

fn describe(d: Duration) -> String {
    if d.as_secs() >= 1 && d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

impl<S: Services> Host<S> {
    pub(crate) fn new_store(
        &self,
        engine: &wasmtime::Engine,
        component: ComponentId,
        limits: &Limits,
        services: Arc<S>,
        ctx: S::Ctx,
        output: &Output,
    ) -> Result<Store<TaskState<S>>, Error> {
        let config = self.config();
        let mut wasi = WasiCtx::builder();
        wasi.stdout(output.stdout.clone())
            .stderr(output.stderr.clone())
            // No network: wasmtime-wasi's default address check denies every
            // address already; say so explicitly.
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for (k, v) in &config.env {
            wasi.env(k, v);
        }
        for (host, guest) in &config.dirs {
            wasi.preopened_dir(host, guest, FsPerms::ReadWrite)
                .map_err(|e| {
                    Error::InvalidArgument(format!(
                        "cannot grant directory {}: {e:#}",
                        host.display()
                    ))
                })?;
        }
        let memory = limits
            .memory
            .unwrap_or(config.default_memory_limit)
            .min(4 << 30);
        // Handles (object refs, GPU buffers) a guest may hold at once: two
        // per KiB of its memory cap (2,097,152 for the default 1 GiB), so a
        // guest can hold a million refs and lend them all to one `wait`,
        // while what the host keeps for them (about 100 bytes each) stays a
        // tenth of that cap.
        let handles = usize::try_from(memory >> 9)
            .unwrap_or(usize::MAX)
            .max(MIN_HANDLES);
        let mut table = ResourceTable::new();
        table.set_max_capacity(handles);
        let state = TaskState {
            wasi: wasi.build(),
            table,
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            http_hooks: crate::http::DenyOutgoing,
            limiter: StoreLimiter {
                memory: memory as usize,
                hit: false,
                share: Share::new(self.memory_budget()),
                node_full: false,
            },
            services,
            ctx,
            component,
            deadline: None,
            timed_out: false,
            gpu: config.gpu.clone(),
            gpu_asked: limits.num_gpus > 0.0,
            gpu_session: None,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limiter);
        // Lifting a dynamic value costs about 32 host bytes per element: this
        // bounds what one call's arguments or results can make the host hold.
        store.set_hostcall_fuel(HOSTCALL_FUEL);
        store.set_max_component_handles(handles);
        if config.fuel {
            store
                .set_fuel(limits.fuel.unwrap_or(u64::MAX))
                .map_err(|e| Error::System(format!("cannot set fuel: {e}")))?;
        } else if limits.fuel.is_some() {
            return Err(Error::InvalidArgument(
                "a fuel limit needs a runtime started with fuel metering on (`--fuel`)".into(),
            ));
        }
        store.epoch_deadline_callback(|mut cx| {
            let data = cx.data_mut();
            if data.deadline.is_some_and(|d| Instant::now() >= d) {
                data.timed_out = true;
                return Ok(UpdateDeadline::Interrupt);
            }
            // Yield to the executor every tick so that long guests share threads.
            Ok(UpdateDeadline::Yield(1))
        });
        store.set_epoch_deadline(1);
        Ok(store)
    }

    /// Run one call of `func` of `comp` with canonically encoded `args`, in a
    /// fresh store. Never panics on anything the guest does.
    pub async fn run(
        &self,
        comp: &Loaded<S>,
        func: &FuncInfo,
        args: &[u8],
        limits: &Limits,
        services: Arc<S>,
        ctx: S::Ctx,
    ) -> Outcome {
        let output = Output {
            stdout: Capture::live(self.config().max_output_bytes, limits.live_stdout.clone()),
            stderr: Capture::new(self.config().max_output_bytes),
        };
        let result = self
            .run_inner(comp, func, args, limits, services, ctx, &output)
            .await;
        output.finish(result)
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_inner(
        &self,
        comp: &Loaded<S>,
        func: &FuncInfo,
        args: &[u8],
        limits: &Limits,
        services: Arc<S>,
        ctx: S::Ctx,
        output: &Output,
    ) -> Result<Vec<u8>, Error> {
        let bytes = BytesFn::of(func, false).and_then(|s| Some((s, lists_u8(args, s.params)?)));
        if let Some((shape, bytes)) = bytes {
            let mut store =
                self.new_store(self.engine(), comp.id, limits, services, ctx, output)?;
            store.data_mut().deadline = limits.timeout.map(|t| Instant::now() + t);
            let instance = instantiate(&mut store, &comp.pre, limits).await?;
            return call_bytes(&mut store, &instance, func, None, shape, &bytes, limits).await;
        }
        let (params, _held) = decode_args(func, args, self.memory_budget())?;
        let mut store = self.new_store(self.engine(), comp.id, limits, services, ctx, output)?;
        store.data_mut().deadline = limits.timeout.map(|t| Instant::now() + t);
        let instance = instantiate(&mut store, &comp.pre, limits).await?;
        call(&mut store, &instance, func, None, params, limits).await
    }

    /// Create an actor: a store of its own, the component instantiated in it,
    /// and the constructor of `class` run with `args`. `pooled`: in one of
    /// the pool's slots (the caller holds one), else allocated on demand
    /// ([`Host::past_pool_capacity`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn create_actor(
        &self,
        comp: Arc<Loaded<S>>,
        class: &ClassInfo,
        args: &[u8],
        limits: &Limits,
        services: Arc<S>,
        ctx: S::Ctx,
        pooled: bool,
    ) -> (Result<ActorInstance<S>, Error>, Outcome) {
        let output = Output::new(self.config().max_output_bytes);
        let made = async {
            // The class as the engine that runs it knows it (its exports'
            // indices are that engine's component's).
            let (engine, pre, class) = if pooled {
                (self.engine(), &comp.pre, class)
            } else {
                let (engine, pre, info) = self.overflow_pre(&comp)?;
                let class = info
                    .classes
                    .values()
                    .find(|c| c.name == class.name)
                    .ok_or_else(|| Error::NotFound(format!("class `{}`", class.name)))?;
                (engine, pre, class)
            };
            let (params, _held) = decode_args(&class.constructor, args, self.memory_budget())?;
            let mut store = self.new_store(engine, comp.id, limits, services, ctx, &output)?;
            store.data_mut().deadline = limits.timeout.map(|t| Instant::now() + t);
            let instance = instantiate(&mut store, pre, limits).await?;
            let f = instance
                .get_func(&mut store, class.constructor.index)
                .ok_or_else(|| Error::NotFound(format!("constructor of `{}`", class.name)))?;
            let mut results = vec![Val::Bool(false); 1];
            f.call_async(&mut store, &params, &mut results)
                .await
                .map_err(|e| classify(&store, e, limits))?;
            let handle = match results.pop() {
                Some(Val::Resource(r)) => r,
                _ => {
                    return Err(Error::Other(format!(
                        "the constructor of `{}` did not return a resource",
                        class.name
                    )));
                }
            };
            Ok(ActorInstance {
                store,
                instance,
                handle,
                class: class.clone(),
                limits: limits.clone(),
                output: Output::new(self.config().max_output_bytes),
            })
        }
        .await;
        let made = made.map(|mut a| {
            // The constructor's output was captured in `output`; later calls
            // use the actor's own capture.
            a.output = Output {
                stdout: output.stdout.clone(),
                stderr: output.stderr.clone(),
            };
            a
        });
        let outcome = output.finish(Ok(Vec::new()));
        (made, outcome)
    }
}

/// Arguments of at least this many bytes count their decoded values against
/// the node's memory budget.
const COUNTED_ARGS: usize = 64 << 10;

/// The call's arguments as wasmtime values, and the share of the node's
/// memory they hold until the call has them in the guest. A dynamic call
/// needs one `Val` per list element (wasmtime's only untyped call API takes
/// values, not bytes): about 32 host bytes per byte of a `list<u8>`, counted
/// before anything is allocated, so large arguments cannot take the host's
/// memory beyond what the node has.
fn decode_args(
    func: &FuncInfo,
    args: &[u8],
    budget: Option<Arc<MemoryBudget>>,
) -> Result<(Vec<Val>, Share), Error> {
    let mut share = Share::new(None);
    if args.len() >= COUNTED_ARGS
        && let Some(budget) = budget
    {
        // At most one value per byte (every element takes one on the wire).
        let need = args.len().saturating_mul(std::mem::size_of::<Val>());
        let (used, limit) = (budget.used(), budget.limit());
        if need as u64 > limit {
            return Err(Error::InvalidArgument(format!(
                "arguments of {} bytes would take up to {} MiB of host memory as values, more \
                 than this node's {} MiB; pass large data as an object the guest gets (`get`)",
                args.len(),
                need >> 20,
                limit >> 20
            )));
        }
        share = Share::new(Some(budget));
        if !share.grow(0, need) {
            return Err(Error::System(format!(
                "arguments of {} bytes would take up to {} MiB of host memory as values; this \
                 node has {} MiB of its {} MiB free now",
                args.len(),
                need >> 20,
                limit.saturating_sub(used) >> 20,
                limit >> 20
            )));
        }
    }
    let vals = decode_vals(func, args)?;
    Ok((vals, share))
}

fn decode_vals(func: &FuncInfo, args: &[u8]) -> Result<Vec<Val>, Error> {
    codec::decode_all::<codec::Vals>(func.param_types(), args).map_err(|e| {
        Error::InvalidArgument(format!(
            "arguments do not match `{}`: {e}",
            func.signature()
        ))
    })
}

async fn instantiate<S: Services>(
    store: &mut Store<TaskState<S>>,
    pre: &wasmtime::component::InstancePre<TaskState<S>>,
    limits: &Limits,
) -> Result<Instance, Error> {
    pre.instantiate_async(&mut *store).await.map_err(|e| {
        if store.data().limiter.hit || store.data().limiter.node_full {
            return classify(store, e, limits);
        }
        let msg = format!("{e:#}");
        if msg.contains("pooling") || msg.contains("maximum concurrent") {
            // Out of instance slots: a fault of this node, not of the guest.
            Error::System(format!("cannot instantiate: {msg}"))
        } else {
            classify(store, e, limits)
        }
    })
}

async fn call<S: Services>(
    store: &mut Store<TaskState<S>>,
    instance: &Instance,
    func: &FuncInfo,
    this: Option<ResourceAny>,
    params: Vec<Val>,
    limits: &Limits,
) -> Result<Vec<u8>, Error> {
    let f = instance
        .get_func(&mut *store, func.index)
        .ok_or_else(|| Error::NotFound(format!("export `{}`", func.name)))?;
    let params = match this {
        Some(handle) => {
            let mut all = Vec::with_capacity(params.len() + 1);
            all.push(Val::Resource(handle));
            all.extend(params);
            all
        }
        None => params,
    };
    let mut results = vec![Val::Bool(false); func.results.len()];
    f.call_async(&mut *store, &params, &mut results)
        .await
        .map_err(|e| classify(store, e, limits))?;
    let out = match (results.as_slice(), func.results.as_slice()) {
        ([], _) => Vec::new(),
        ([val], [ty]) => {
            let mut out = Vec::new();
            codec::encode::<codec::Vals>(val, ty, &mut out).map_err(|e| {
                Error::Other(format!("cannot encode the result of `{}`: {e}", func.name))
            })?;
            out
        }
        (vals, tys) => codec::encode_all::<codec::Vals>(vals, tys).map_err(|e| {
            Error::Other(format!("cannot encode the results of `{}`: {e}", func.name))
        })?,
    };
    Ok(out)
}

/// A function from bytes to bytes: `func(x: list<u8>, ...) -> list<u8>` or
/// `-> result<list<u8>, string>`, with one to [`MAX_BYTES_PARAMS`]
/// parameters (one for a method): a ferray data `map_batches` function, a
/// method of an actor pool's class, ferray data's built-in shuffle
/// operators. Called through wasmtime's typed API, which copies the bytes
/// in and out in one go: the dynamic call needs a `Val` per byte (about 32
/// host bytes and tens of nanoseconds each).
#[derive(Clone, Copy)]
struct BytesFn {
    params: usize,
    result: bool,
}

/// The most `list<u8>` parameters of a [`BytesFn`].
const MAX_BYTES_PARAMS: usize = 9;

impl BytesFn {
    fn of(func: &FuncInfo, method: bool) -> Option<BytesFn> {
        let bytes = |t: &Type| matches!(t, Type::List(l) if l.ty() == Type::U8);
        let most = if method { 1 } else { MAX_BYTES_PARAMS };
        let params = func.params.len();
        if params == 0 || params > most || !func.params.iter().all(bytes) {
            return None;
        }
        let result = match func.results.as_slice() {
            [r] if bytes(r) => false,
            [Type::Result(res)]
                if res.ok().as_ref().is_some_and(bytes) && res.err() == Some(Type::String) =>
            {
                true
            }
            _ => return None,
        };
        Some(BytesFn { params, result })
    }
}

/// The bytes of `n` canonically encoded `list<u8>` arguments (each a
/// LEB128 length, then that many bytes) that are all of `args`; `None` for
/// anything else (the dynamic path then says what is wrong with it).
fn lists_u8(mut args: &[u8], n: usize) -> Option<Vec<&[u8]>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut len = 0u64;
        let mut header = None;
        for (i, b) in args.iter().take(10).enumerate() {
            len |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                header = Some(i + 1);
                break;
            }
        }
        let rest = &args[header?..];
        let len = usize::try_from(len).ok().filter(|l| *l <= rest.len())?;
        out.push(&rest[..len]);
        args = &rest[len..];
    }
    args.is_empty().then_some(out)
}

fn put_list_u8(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut v = bytes.len() as u64;
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(bytes);
}

/// One typed call of `f` with `params`.
async fn typed_call<S, P, R>(
    store: &mut Store<TaskState<S>>,
    f: wasmtime::component::Func,
    func: &FuncInfo,
    params: P,
    limits: &Limits,
) -> Result<R, Error>
where
    S: Services,
    P: wasmtime::component::ComponentNamedList + wasmtime::component::Lower + Send + Sync,
    R: wasmtime::component::ComponentNamedList + wasmtime::component::Lift + Send + Sync + 'static,
{
    let t = f
        .typed::<P, R>(&*store)
        .map_err(|e| Error::Other(format!("`{}`: {e}", func.name)))?;
    t.call_async(&mut *store, params)
        .await
        .map_err(|e| classify(store, e, limits))
}

/// [`call`] for a [`BytesFn`]: the result in the canonical encoding.
async fn call_bytes<S: Services>(
    store: &mut Store<TaskState<S>>,
    instance: &Instance,
    func: &FuncInfo,
    this: Option<ResourceAny>,
    shape: BytesFn,
    b: &[&[u8]],
    limits: &Limits,
) -> Result<Vec<u8>, Error> {
    let f = instance
        .get_func(&mut *store, func.index)
        .ok_or_else(|| Error::NotFound(format!("export `{}`", func.name)))?;
    /// The call with `b[0]`, ..., `b[n - 1]` as `(&[u8], ...)`, of results `R`.
    macro_rules! with_arity {
        ($R:ty, $($i:tt)+) => {
            typed_call::<S, ($(with_arity!(@bytes $i),)+), $R>(store, f, func, ($(b[$i],)+), limits)
                .await
        };
        (@bytes $i:tt) => { &[u8] };
    }
    macro_rules! by_arity {
        ($R:ty) => {
            match (this, b.len()) {
                (Some(h), 1) => {
                    typed_call::<S, (ResourceAny, &[u8]), $R>(store, f, func, (h, b[0]), limits)
                        .await
                }
                (None, 1) => with_arity!($R, 0),
                (None, 2) => with_arity!($R, 0 1),
                (None, 3) => with_arity!($R, 0 1 2),
                (None, 4) => with_arity!($R, 0 1 2 3),
                (None, 5) => with_arity!($R, 0 1 2 3 4),
                (None, 6) => with_arity!($R, 0 1 2 3 4 5),
                (None, 7) => with_arity!($R, 0 1 2 3 4 5 6),
                (None, 8) => with_arity!($R, 0 1 2 3 4 5 6 7),
                (None, 9) => with_arity!($R, 0 1 2 3 4 5 6 7 8),
                (_, n) => Err(Error::Other(format!(
                    "`{}`: no typed call for {n} byte parameters",
                    func.name
                ))),
            }
        };
    }
    let got: Result<Vec<u8>, String> = if shape.result {
        by_arity!((Result<Vec<u8>, String>,))?.0
    } else {
        Ok(by_arity!((Vec<u8>,))?.0)
    };
    let mut out = Vec::new();
    match (shape.result, got) {
        (false, Ok(v)) => put_list_u8(&mut out, &v),
        (true, Ok(v)) => {
            out.push(0);
            put_list_u8(&mut out, &v);
        }
        (_, Err(e)) => {
            out.push(1);
            put_list_u8(&mut out, e.as_bytes());
        }
    }
    Ok(out)
}

pub(crate) fn classify<S: Services>(
    store: &Store<TaskState<S>>,
    e: wasmtime::Error,
    limits: &Limits,
) -> Error {
    let data = store.data();
    if data.timed_out {
        let limit = limits
            .timeout
            .map_or_else(|| "its limit".to_string(), describe);
        return Error::TimeLimit(format!("the call ran longer than {limit} and was stopped"));
    }
    if let Some(Trap::OutOfFuel) = e.downcast_ref::<Trap>() {
        let fuel = limits
            .fuel
            .map_or_else(|| "its".to_string(), |f| f.to_string());
        return Error::OutOfFuel(format!("the guest used all {fuel} units of fuel"));
    }
    if data.limiter.node_full {
        // Other instances hold the node's memory: a fault of this node, so
        // the attempt may run again (here later, or elsewhere).
        let limit = data.limiter.share.limit().unwrap_or_default();
        return Error::System(format!(
            "this node's guest memory is all in use ({} MiB held by its instances together); \
             the instance could not grow ({e})",
            limit >> 20
        ));
    }
    if data.limiter.hit {
        return Error::MemoryLimit(format!(
            "the guest tried to grow its memory past {} MiB ({e})",
            data.limiter.memory >> 20
        ));
    }
    // The trap (or the host call's error), then the guest's backtrace.
    let mut what = match e.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => e.root_cause().to_string(),
    };
    if what.contains("resource table has no free keys") || what.contains("handle limit exceeded") {
        what = format!(
            "the guest holds as many handles (object refs, actors' calls, GPU buffers) as its \
             memory cap allows: {} (two per KiB of the cap, at least {MIN_HANDLES}); drop some, \
             or ask for more memory ({what})",
            data.table.max_capacity()
        );
    }
    match e.downcast_ref::<wasmtime::WasmBacktrace>() {
        Some(bt) => Error::Trap(format!("{what}\n{bt}")),
        None => Error::Trap(what),
    }
}

/// A live actor: its own store and instance, and the resource its
/// constructor returned. Calls run one at a time (`&mut self`).
pub struct ActorInstance<S: Services> {
    store: Store<TaskState<S>>,
    instance: Instance,
    handle: ResourceAny,
    class: ClassInfo,
    limits: Limits,
    output: Output,
}

impl<S: Services> ActorInstance<S> {
    pub fn class(&self) -> &ClassInfo {
        &self.class
    }

    /// Call a method. After an `Err` that is a trap or an exhausted limit the
    /// instance must not be used again: create a new one (a restart).
    pub async fn call(&mut self, method: &str, args: &[u8]) -> Outcome {
        let result = async {
            let func = self.class.methods.get(method).ok_or_else(|| {
                let names: Vec<&str> = self.class.methods.keys().map(String::as_str).collect();
                Error::NotFound(format!(
                    "actor class `{}` has no method `{method}`; its methods: {}",
                    self.class.name,
                    names.join(", ")
                ))
            })?;
            let data = self.store.data_mut();
            data.deadline = self.limits.timeout.map(|t| Instant::now() + t);
            data.timed_out = false;
            let bytes = BytesFn::of(func, true).and_then(|s| Some((s, lists_u8(args, s.params)?)));
            if let Some((shape, bytes)) = bytes {
                return call_bytes(
                    &mut self.store,
                    &self.instance,
                    func,
                    Some(self.handle),
                    shape,
                    &bytes,
                    &self.limits,
                )
                .await;
            }
            let budget = self.store.data().limiter.share.budget();
            let (params, _held) = decode_args(func, args, budget)?;
            call(
                &mut self.store,
                &self.instance,
                func,
                Some(self.handle),
                params,
                &self.limits,
            )
            .await
        }
        .await;
        self.output.finish(result)
    }
}

#[cfg(test)]
mod tests {
    use super::{lists_u8, put_list_u8, split_tail};

    #[test]
    fn byte_arguments_are_split_exactly() {
        let big = vec![7u8; 300];
        let mut args = Vec::new();
        for part in [&b"spec"[..], &big, b""] {
            put_list_u8(&mut args, part);
        }
        assert_eq!(
            lists_u8(&args, 3),
            Some(vec![&b"spec"[..], &big[..], &b""[..]])
        );
        // Too few lists, bytes left over, a length past the end: none.
        assert_eq!(lists_u8(&args, 4), None);
        assert_eq!(lists_u8(&args, 2), None);
        assert_eq!(lists_u8(&args[..args.len() - 2], 3), None);
        assert_eq!(lists_u8(&[0x80; 12], 1), None);
    }

    #[test]
    fn the_tail_is_whole_lines() {
        let text = b"first line\nsecond line\npanicked at x\n\n";
        let (at, tail) = split_tail(text, 4096);
        assert_eq!(
            (at, tail.as_str()),
            (0, "first line\nsecond line\npanicked at x")
        );
        let (at, tail) = split_tail(text, 20);
        assert_eq!(tail, "panicked at x");
        assert_eq!(&text[..at], b"first line\nsecond line\n");
        let (at, tail) = split_tail(b"no line break at all", 5);
        assert_eq!((at, tail.as_str()), (15, "t all"));
    }
}
