//! The `ferray:runtime` imports, as the host implements them: each call
//! checks what the guest gave and forwards to the runtime's [`Services`].

use std::any::Any;
use std::time::Duration;

use bytes::Bytes;
use ferray_core::{
    ActorId, ActorOptions, Arg as CoreArg, ComponentId, Error as CoreError, Resources, TaskOptions,
};
use wasmtime::component::{HasSelf, Linker, Resource};

use crate::services::CallRequest;
use crate::{Services, TaskState};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "ferray:runtime/guest",
        imports: { default: async | trappable },
        with: {
            "ferray:runtime/types.object-ref": super::GuestRef,
        },
    });
}

use bindings::ferray::runtime::{
    actors, collective, deployments, gpu, objects, tasks, train, types,
};

/// The host side of a guest's `object-ref`: the runtime's reference, typed
/// away so that the bindings need not be generic.
pub struct GuestRef(Box<dyn Any + Send + Sync>);

pub(crate) fn add_to_linker<S: Services>(
    linker: &mut Linker<TaskState<S>>,
) -> wasmtime::Result<()> {
    bindings::Guest::add_to_linker::<TaskState<S>, HasSelf<TaskState<S>>>(linker, |s| s)
}

/// Limits on what one host call accepts from a guest.
const MAX_NAME: usize = 1024;
const MAX_ARGS: usize = 100_000;
/// A guest's request to a deployment: its path, and each header.
const MAX_HTTP_PATH: usize = 8 * 1024;
const MAX_HTTP_HEADERS: usize = 100;

fn to_wit(e: CoreError) -> types::Error {
    match e {
        CoreError::NotFound(m) => types::Error::NotFound(m),
        CoreError::InvalidArgument(m) => types::Error::InvalidArgument(m),
        e @ (CoreError::Trap(_)
        | CoreError::TimeLimit(_)
        | CoreError::MemoryLimit(_)
        | CoreError::OutOfFuel(_)
        | CoreError::TaskFailed(_)) => types::Error::TaskFailed(e.to_string()),
        CoreError::ActorDied(m) => types::Error::ActorDied(m),
        CoreError::Cancelled(m) => types::Error::Cancelled(m),
        CoreError::ObjectLost(m) => types::Error::ObjectLost(m),
        e @ CoreError::Corrupt { .. } => types::Error::ObjectLost(e.to_string()),
        CoreError::Infeasible(m) => types::Error::Infeasible(m),
        CoreError::Timeout => types::Error::Timeout,
        e @ (CoreError::System(_) | CoreError::Other(_)) => types::Error::Other(e.to_string()),
    }
}

fn check_name(what: &str, name: &str) -> Result<(), types::Error> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(types::Error::InvalidArgument(format!(
            "{what} must be 1 to {MAX_NAME} bytes long"
        )));
    }
    Ok(())
}

fn resources_of(o: &types::Options, default_cpus: f64) -> Result<Resources, CoreError> {
    let mut r = Resources::default()
        .with_cpus(o.num_cpus.unwrap_or(default_cpus))?
        .with_gpus(o.num_gpus.unwrap_or(0.0))?
        .with_memory(o.memory.unwrap_or(0));
    if o.resources.len() > 64 {
        return Err(CoreError::InvalidArgument(
            "at most 64 custom resources".into(),
        ));
    }
    for d in &o.resources {
        if d.name.is_empty() || d.name.len() > 256 {
            return Err(CoreError::InvalidArgument(
                "a resource name must be 1 to 256 bytes".into(),
            ));
        }
        r = r.with_custom(&d.name, d.amount)?;
    }
    Ok(r)
}

fn task_options(o: &types::Options) -> Result<TaskOptions, CoreError> {
    let d = TaskOptions::default();
    Ok(TaskOptions {
        resources: resources_of(o, 1.0)?,
        max_retries: o.max_retries.unwrap_or(d.max_retries),
        retry_exceptions: o.retry_exceptions.unwrap_or(d.retry_exceptions),
        timeout: o.timeout_ms.map(Duration::from_millis),
        fuel: None,
        strategy: d.strategy,
    })
}

fn actor_options(o: &types::Options) -> Result<ActorOptions, CoreError> {
    Ok(ActorOptions {
        resources: resources_of(o, 0.0)?,
        max_restarts: o.max_retries.unwrap_or(0),
        timeout: o.timeout_ms.map(Duration::from_millis),
        fuel: None,
        strategy: Default::default(),
        group: None,
    })
}

impl<S: Services> TaskState<S> {
    fn guest_ref(&self, r: &Resource<GuestRef>) -> wasmtime::Result<S::Ref> {
        let held = self.table.get(r)?;
        held.0
            .downcast_ref::<S::Ref>()
            .cloned()
            .ok_or_else(|| wasmtime::format_err!("object-ref of another runtime"))
    }

    fn push_ref(&mut self, r: S::Ref) -> wasmtime::Result<Resource<GuestRef>> {
        Ok(self.table.push(GuestRef(Box::new(r)))?)
    }

    fn args(
        &self,
        args: Vec<types::Arg>,
    ) -> wasmtime::Result<Result<Vec<CoreArg<S::Ref>>, types::Error>> {
        if args.len() > MAX_ARGS {
            return Ok(Err(types::Error::InvalidArgument(format!(
                "at most {MAX_ARGS} argument pieces"
            ))));
        }
        let mut out = Vec::with_capacity(args.len());
        for a in args {
            out.push(match a {
                types::Arg::Value(bytes) => CoreArg::Value(bytes),
                types::Arg::Object(r) => CoreArg::Ref(self.guest_ref(&r)?),
            });
        }
        Ok(Ok(out))
    }

    /// A call (task or constructor) as the guest asked for it, checked: the
    /// name, the component digest, the argument pieces.
    fn request(
        &self,
        what: &str,
        component: Option<String>,
        function: String,
        args: Vec<types::Arg>,
    ) -> wasmtime::Result<Result<CallRequest<S::Ref>, types::Error>> {
        if let Err(e) = check_name(what, &function) {
            return Ok(Err(e));
        }
        let component = match self.component_of(component) {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self.args(args)?.map(|args| CallRequest {
            component,
            function,
            args,
        }))
    }

    fn component_of(&self, digest: Option<String>) -> Result<ComponentId, types::Error> {
        match digest {
            None => Ok(self.component),
            Some(d) => d.parse::<ComponentId>().map_err(to_wit),
        }
    }
}

impl<S: Services> types::Host for TaskState<S> {}

impl<S: Services> types::HostObjectRef for TaskState<S> {
    async fn id(&mut self, this: Resource<GuestRef>) -> wasmtime::Result<String> {
        let r = self.guest_ref(&this)?;
        Ok(self.services.ref_id(&r))
    }

    async fn content_id(&mut self, this: Resource<GuestRef>) -> wasmtime::Result<Option<String>> {
        let r = self.guest_ref(&this)?;
        Ok(self.services.content_id(&r).map(|id| id.to_hex()))
    }

    async fn drop(&mut self, rep: Resource<GuestRef>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl<S: Services> objects::Host for TaskState<S> {
    async fn put(&mut self, value: Vec<u8>) -> wasmtime::Result<Resource<GuestRef>> {
        let r = self.services.put(&self.ctx, Bytes::from(value));
        self.push_ref(r)
    }

    async fn get(
        &mut self,
        r: Resource<GuestRef>,
    ) -> wasmtime::Result<Result<Vec<u8>, types::Error>> {
        let r = self.guest_ref(&r)?;
        let fut = self.services.get(&self.ctx, &r);
        Ok(fut.await.map(|b| b.to_vec()).map_err(to_wit))
    }

    async fn wait(
        &mut self,
        refs: Vec<Resource<GuestRef>>,
        num_returns: u32,
        timeout_ms: Option<u64>,
    ) -> wasmtime::Result<Vec<u32>> {
        let refs = refs
            .iter()
            .map(|r| self.guest_ref(r))
            .collect::<wasmtime::Result<Vec<_>>>()?;
        let n = (num_returns as usize).min(refs.len());
        let fut = self
            .services
            .wait(&self.ctx, refs, n, timeout_ms.map(Duration::from_millis));
        Ok(fut.await)
    }
}

impl<S: Services> tasks::Host for TaskState<S> {
    async fn submit(
        &mut self,
        component: Option<String>,
        function: String,
        args: Vec<types::Arg>,
        opts: types::Options,
    ) -> wasmtime::Result<Result<Resource<GuestRef>, types::Error>> {
        let call = match self.request("a function name", component, function, args)? {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let options = match task_options(&opts) {
            Ok(o) => o,
            Err(e) => return Ok(Err(to_wit(e))),
        };
        let fut = self.services.submit(&self.ctx, call, options);
        match fut.await {
            Ok(r) => Ok(Ok(self.push_ref(r)?)),
            Err(e) => Ok(Err(to_wit(e))),
        }
    }

    async fn cancel(
        &mut self,
        r: Resource<GuestRef>,
    ) -> wasmtime::Result<Result<(), types::Error>> {
        let r = self.guest_ref(&r)?;
        Ok(self.services.cancel(&self.ctx, &r).map_err(to_wit))
    }

    async fn self_digest(&mut self) -> wasmtime::Result<String> {
        Ok(self.component.to_hex())
    }
}

impl<S: Services> actors::Host for TaskState<S> {
    async fn create(
        &mut self,
        component: Option<String>,
        class: String,
        args: Vec<types::Arg>,
        opts: types::Options,
    ) -> wasmtime::Result<Result<u64, types::Error>> {
        let call = match self.request("an actor class", component, class, args)? {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let options = match actor_options(&opts) {
            Ok(o) => o,
            Err(e) => return Ok(Err(to_wit(e))),
        };
        let fut = self.services.create_actor(&self.ctx, call, options);
        Ok(fut.await.map(|id| id.0).map_err(to_wit))
    }

    async fn call(
        &mut self,
        actor: u64,
        method: String,
        args: Vec<types::Arg>,
    ) -> wasmtime::Result<Result<Resource<GuestRef>, types::Error>> {
        if let Err(e) = check_name("a method name", &method) {
            return Ok(Err(e));
        }
        let args = match self.args(args)? {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        let fut = self
            .services
            .call_actor(&self.ctx, ActorId(actor), method, args);
        match fut.await {
            Ok(r) => Ok(Ok(self.push_ref(r)?)),
            Err(e) => Ok(Err(to_wit(e))),
        }
    }

    async fn kill(&mut self, actor: u64) -> wasmtime::Result<Result<(), types::Error>> {
        let fut = self.services.kill_actor(&self.ctx, ActorId(actor));
        Ok(fut.await.map_err(to_wit))
    }
}

// ----- gpu -----

fn gpu_err(e: ferray_gpu::GpuError) -> gpu::GpuError {
    use ferray_gpu::GpuError as E;
    match e {
        E::NoGpu(m) => gpu::GpuError::NoGpu(m),
        E::InvalidShader(m) => gpu::GpuError::InvalidShader(m),
        E::Limit(m) => gpu::GpuError::Limit(m),
        E::InvalidArgument(m) => gpu::GpuError::InvalidArgument(m),
        E::NotFound(m) => gpu::GpuError::NotFound(m),
        E::Device(m) => gpu::GpuError::Device(m),
    }
}

fn usage(u: gpu::BufferUsage) -> ferray_gpu::Usage {
    ferray_gpu::Usage {
        storage: u.contains(gpu::BufferUsage::STORAGE),
        uniform: u.contains(gpu::BufferUsage::UNIFORM),
    }
}

/// Bindings one dispatch may give.
const MAX_BINDINGS: usize = 64;

/// The result type of a `gpu` import: a trap only for host faults, the
/// guest's mistakes as values.
type GpuResult<T> = wasmtime::Result<Result<T, gpu::GpuError>>;

impl<S: Services> TaskState<S> {
    /// The task's GPU session, made on first use; an error value when the
    /// task did not ask for a GPU or the node has none.
    async fn gpu_session(&mut self) -> Result<&mut ferray_gpu::GpuSession, gpu::GpuError> {
        if !self.gpu_asked {
            return Err(gpu::GpuError::NoGpu(
                "this task did not ask for a GPU: submit it with num_gpus > 0".into(),
            ));
        }
        if self.gpu_session.is_none() {
            let Some(node) = &self.gpu else {
                return Err(gpu::GpuError::NoGpu(
                    "this node has no GPU (start it with --num-gpus and a GPU adapter, or \
                     --allow-software-gpu for a software one)"
                        .into(),
                ));
            };
            let session = node.session().await.map_err(gpu_err)?;
            self.gpu_session = Some(session);
        }
        match self.gpu_session.as_mut() {
            Some(s) => Ok(s),
            None => Err(gpu::GpuError::Device("no GPU session".into())),
        }
    }
}

impl<S: Services> deployments::Host for TaskState<S> {
    async fn call(
        &mut self,
        name: String,
        request: types::HttpRequest,
    ) -> wasmtime::Result<Result<types::HttpResponse, types::Error>> {
        if let Err(e) = check_name("a deployment's name", &name) {
            return Ok(Err(e));
        }
        let too_big = request.path.len() > MAX_HTTP_PATH
            || request.method.len() > MAX_NAME
            || request.headers.len() > MAX_HTTP_HEADERS
            || request
                .headers
                .iter()
                .any(|(k, v)| k.len() + v.len() > MAX_HTTP_PATH);
        if too_big {
            return Ok(Err(types::Error::InvalidArgument(format!(
                "a request to a deployment has at most {MAX_HTTP_HEADERS} headers, and its \
                 path and each header at most {MAX_HTTP_PATH} bytes"
            ))));
        }
        let request = ferray_core::http::HttpRequest {
            method: request.method,
            path: request.path,
            headers: request.headers,
            body: request.body,
        };
        let fut = self.services.serve_call(&self.ctx, name, request);
        Ok(fut
            .await
            .map(|r| types::HttpResponse {
                status: r.status,
                headers: r.headers,
                body: r.body,
            })
            .map_err(to_wit))
    }
}

/// The most numbers one `all-reduce` takes (128 MiB): each member's list is
/// held by the host until the group's sum is made, and a guest's list
/// within this passes its store's hostcall fuel (256 MiB per transfer).
pub const MAX_ALL_REDUCE: usize = 1 << 25;

impl<S: Services> collective::Host for TaskState<S> {
    async fn rank(&mut self) -> wasmtime::Result<u32> {
        Ok(self.services.group_rank(&self.ctx).0)
    }

    async fn world_size(&mut self) -> wasmtime::Result<u32> {
        Ok(self.services.group_rank(&self.ctx).1)
    }

    async fn all_reduce(
        &mut self,
        data: Vec<f32>,
    ) -> wasmtime::Result<Result<Vec<f32>, types::Error>> {
        if data.len() > MAX_ALL_REDUCE {
            return Ok(Err(types::Error::InvalidArgument(format!(
                "all-reduce takes at most {MAX_ALL_REDUCE} numbers, not {}",
                data.len()
            ))));
        }
        let fut = self.services.all_reduce(&self.ctx, data);
        Ok(fut.await.map_err(to_wit))
    }
}

impl<S: Services> train::Host for TaskState<S> {
    async fn report(
        &mut self,
        metrics: Vec<(String, f64)>,
        checkpoint: Option<Vec<u8>>,
    ) -> wasmtime::Result<Result<(), types::Error>> {
        let report = ferray_core::Report {
            metrics,
            checkpoint,
        };
        if let Err(e) = report.check() {
            return Ok(Err(to_wit(e)));
        }
        let fut = self.services.report(&self.ctx, report);
        Ok(fut.await.map_err(to_wit))
    }

    async fn checkpoint(&mut self) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.services.start_checkpoint(&self.ctx))
    }
}

impl<S: Services> gpu::Host for TaskState<S> {
    async fn adapter(&mut self) -> GpuResult<String> {
        Ok(self.gpu_session().await.map(|s| s.adapter().to_string()))
    }

    async fn create_buffer(&mut self, data: Vec<u8>, u: gpu::BufferUsage) -> GpuResult<u64> {
        Ok(match self.gpu_session().await {
            Ok(s) => s.create_with(&data, usage(u)).map_err(gpu_err),
            Err(e) => Err(e),
        })
    }

    async fn create_buffer_zeroed(&mut self, size: u64, u: gpu::BufferUsage) -> GpuResult<u64> {
        Ok(match self.gpu_session().await {
            Ok(s) => s.create_zeroed(size, usage(u)).map_err(gpu_err),
            Err(e) => Err(e),
        })
    }

    async fn write_buffer(&mut self, buf: u64, offset: u64, data: Vec<u8>) -> GpuResult<()> {
        Ok(match self.gpu_session().await {
            Ok(s) => s.write(buf, offset, &data).map_err(gpu_err),
            Err(e) => Err(e),
        })
    }

    async fn read_buffer(&mut self, buf: u64) -> GpuResult<Vec<u8>> {
        Ok(match self.gpu_session().await {
            Ok(s) => s.read(buf).await.map_err(gpu_err),
            Err(e) => Err(e),
        })
    }

    async fn destroy_buffer(&mut self, buf: u64) -> GpuResult<()> {
        Ok(match self.gpu_session().await {
            Ok(s) => s.destroy_buffer(buf).map_err(gpu_err),
            Err(e) => Err(e),
        })
    }

    async fn create_pipeline(&mut self, wgsl: String, entry_point: String) -> GpuResult<u64> {
        Ok(match self.gpu_session().await {
            Ok(s) => s.create_pipeline(wgsl, entry_point).await.map_err(gpu_err),
            Err(e) => Err(e),
        })
    }

    async fn destroy_pipeline(&mut self, p: u64) -> GpuResult<()> {
        Ok(match self.gpu_session().await {
            Ok(s) => s.destroy_pipeline(p).map_err(gpu_err),
            Err(e) => Err(e),
        })
    }

    async fn dispatch(
        &mut self,
        p: u64,
        bindings: Vec<gpu::Binding>,
        x: u32,
        y: u32,
        z: u32,
    ) -> GpuResult<()> {
        if bindings.len() > MAX_BINDINGS {
            return Ok(Err(gpu::GpuError::InvalidArgument(format!(
                "at most {MAX_BINDINGS} bindings per dispatch"
            ))));
        }
        let bindings: Vec<(u32, u64)> = bindings.iter().map(|b| (b.index, b.buffer)).collect();
        Ok(match self.gpu_session().await {
            Ok(s) => s.dispatch(p, &bindings, [x, y, z]).await.map_err(gpu_err),
            Err(e) => Err(e),
        })
    }

    async fn finish(&mut self) -> GpuResult<()> {
        Ok(match self.gpu_session().await {
            Ok(s) => s.finish().await.map_err(gpu_err),
            Err(e) => Err(e),
        })
    }
}
