//! What a guest's host calls reach: the runtime's objects, tasks and actors.
//! The host crate only forwards; the runtime (embedded or a cluster worker)
//! implements this trait. The host never schedules anything itself.

use std::time::Duration;

use bytes::Bytes;
use ferray_core::{ActorId, ActorOptions, Arg, ComponentId, Error, ObjectId, TaskOptions};
use futures::future::BoxFuture;

/// A call a guest asks for: a task, or an actor's constructor.
#[derive(Debug, Clone)]
pub struct CallRequest<R> {
    /// The component (`None`: the caller's own).
    pub component: ComponentId,
    /// The function, or the actor class for `create_actor`.
    pub function: String,
    pub args: Vec<Arg<R>>,
}

/// The runtime's side of the guest host interface. `Ctx` names the calling
/// task (its id, and what it holds of the node's resources, so that a task
/// blocked in `get` can give its CPU back).
pub trait Services: Send + Sync + 'static {
    /// An object reference, as the runtime represents it.
    type Ref: Clone + Send + Sync + 'static;
    /// The calling task's context.
    type Ctx: Clone + Send + Sync + 'static;

    fn put(&self, ctx: &Self::Ctx, bytes: Bytes) -> Self::Ref;
    fn get(&self, ctx: &Self::Ctx, r: &Self::Ref) -> BoxFuture<'static, Result<Bytes, Error>>;
    /// Indexes of the ready refs, once `num_returns` are ready or the timeout passes.
    fn wait(
        &self,
        ctx: &Self::Ctx,
        refs: Vec<Self::Ref>,
        num_returns: usize,
        timeout: Option<Duration>,
    ) -> BoxFuture<'static, Vec<u32>>;
    fn submit(
        &self,
        ctx: &Self::Ctx,
        call: CallRequest<Self::Ref>,
        options: TaskOptions,
    ) -> BoxFuture<'static, Result<Self::Ref, Error>>;
    fn cancel(&self, ctx: &Self::Ctx, r: &Self::Ref) -> Result<(), Error>;
    fn create_actor(
        &self,
        ctx: &Self::Ctx,
        call: CallRequest<Self::Ref>,
        options: ActorOptions,
    ) -> BoxFuture<'static, Result<ActorId, Error>>;
    fn call_actor(
        &self,
        ctx: &Self::Ctx,
        actor: ActorId,
        method: String,
        args: Vec<Arg<Self::Ref>>,
    ) -> BoxFuture<'static, Result<Self::Ref, Error>>;
    /// Kill an actor of the caller's job (another job's is not found).
    fn kill_actor(&self, ctx: &Self::Ctx, actor: ActorId) -> BoxFuture<'static, Result<(), Error>>;
    /// The reference's id as text (`task-3`, `obj-<hex>`).
    fn ref_id(&self, r: &Self::Ref) -> String;
    /// A guest's request to a serve deployment (`deployments.call`).
    fn serve_call(
        &self,
        ctx: &Self::Ctx,
        deployment: String,
        request: ferray_core::http::HttpRequest,
    ) -> BoxFuture<'static, Result<ferray_core::http::HttpResponse, Error>>;
    /// The content id of the reference's value, once ready.
    fn content_id(&self, r: &Self::Ref) -> Option<ObjectId>;
    /// The caller's rank in its collective group and the group's size
    /// (`(0, 1)` outside one).
    fn group_rank(&self, ctx: &Self::Ctx) -> (u32, u32);
    /// The element-wise sum of `data` over the caller's collective group
    /// (`data` itself outside one). The host has checked its length.
    fn all_reduce(
        &self,
        ctx: &Self::Ctx,
        data: Vec<f32>,
    ) -> BoxFuture<'static, Result<Vec<f32>, Error>>;
    /// Hand the caller's training run a report (checked by the host);
    /// resolves once the run's driver has taken it. `invalid-argument`
    /// outside a run.
    fn report(
        &self,
        ctx: &Self::Ctx,
        report: ferray_core::Report,
    ) -> BoxFuture<'static, Result<(), Error>>;
    /// The checkpoint the caller's training run started it from, if any.
    fn start_checkpoint(&self, ctx: &Self::Ctx) -> Option<Vec<u8>>;
}
