//! The seam between a node's core and where new work goes.
//!
//! [`RtInner`] runs what it is given (tasks, actors, host calls) with its
//! host, store and admission. Where a *new* task, actor, call or object goes
//! is its backend's decision: [`Local`] keeps everything in this process (the
//! embedded runtime); a cluster session (`cluster::Session`, behind the
//! `cluster` feature) sends it to the head, and fetches objects this node
//! lacks from their holders. Nothing in the task, actor and object paths
//! asks which backend it has.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use ferray_core::{
    ActorId, ActorOptions, Arg, ComponentId, Error, HistogramSnapshot, JobId, ObjectId, TaskId,
    TaskOptions,
};
use ferray_host::Loaded;
use futures::future::BoxFuture;

use crate::objects::{ObjectRef, RefName};
use crate::runtime::RtInner;

/// Who makes a call: this runtime's own driver (the embedding API, the
/// command line), or a task or actor running on this node for a job
/// (`job: None`: this runtime's own job).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    Driver,
    Task { job: Option<JobId>, task: TaskId },
    Actor { job: Option<JobId>, actor: ActorId },
}

/// The code of a new task or actor: loaded in this process (a driver's
/// `Component`), or named by digest (a guest's call).
pub(crate) enum Code {
    Loaded(Arc<Loaded<RtInner>>),
    Digest(ComponentId),
}

// `id` and `here` serve the cluster backend.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
impl Code {
    pub(crate) fn id(&self) -> ComponentId {
        match self {
            Code::Loaded(c) => c.id,
            Code::Digest(id) => *id,
        }
    }

    /// The component as this node has it, if it does.
    pub(crate) fn here(&self, rt: &RtInner) -> Option<Arc<Loaded<RtInner>>> {
        match self {
            Code::Loaded(c) => Some(c.clone()),
            Code::Digest(id) => rt.loaded(id),
        }
    }

    /// The component, which must be loaded on this node.
    fn load(self, rt: &RtInner) -> Result<Arc<Loaded<RtInner>>, Error> {
        match self {
            Code::Loaded(c) => Ok(c),
            Code::Digest(id) => rt.component(&id),
        }
    }
}

/// Where a runtime's new tasks, actors, calls and objects go.
pub(crate) trait Backend: Send + Sync + 'static {
    /// The runtime goes away: a cluster's session ends now (waiting at most
    /// `within` for the head to close it) rather than when the head
    /// notices that the connection is gone.
    fn leave(&self, _within: std::time::Duration) {}

    /// Store bytes; the reference is ready at once.
    fn put(&self, rt: &RtInner, caller: Caller, bytes: Bytes) -> ObjectRef;

    /// Submit a task of a loaded component; the reference comes back at once.
    fn submit(
        &self,
        rt: &Arc<RtInner>,
        caller: Caller,
        code: Code,
        function: &str,
        args: Vec<Arg<ObjectRef>>,
        options: TaskOptions,
    ) -> Result<ObjectRef, Error>;

    fn create_actor(
        &self,
        rt: &Arc<RtInner>,
        caller: Caller,
        code: Code,
        class: &str,
        args: Vec<Arg<ObjectRef>>,
        options: ActorOptions,
    ) -> Result<ActorId, Error>;

    fn call_actor(
        &self,
        rt: &RtInner,
        caller: Caller,
        actor: ActorId,
        method: String,
        args: Vec<Arg<ObjectRef>>,
    ) -> Result<ObjectRef, Error>;

    /// Kill an actor of the caller's job; the request leaves at once, the
    /// future gives the answer (another job's actor is not found).
    fn kill_actor(
        &self,
        rt: &RtInner,
        caller: Caller,
        actor: ActorId,
    ) -> BoxFuture<'static, Result<(), Error>>;

    fn cancel(&self, rt: &RtInner, caller: Caller, r: &ObjectRef) -> Result<(), Error>;

    /// The caller will not use these task results again
    /// ([`crate::Runtime::free`]). Here, an object goes with its last
    /// reference: nothing to do.
    fn free(&self, _refs: &[ObjectRef]) {}

    /// The bytes of an object this node's store does not hold; `None` when
    /// there is nowhere else to look.
    fn fetch(&self, id: ObjectId) -> Option<BoxFuture<'static, Result<Bytes, Error>>>;

    /// A running task of this node lent its CPUs out while it waits
    /// (`blocked`), or took them back.
    fn blocked(&self, task: TaskId, blocked: bool);

    /// Make a component that this process loaded runnable where the
    /// backend runs tasks (a cluster's nodes fetch it from the head).
    fn publish(&self, id: ComponentId, bytes: Bytes) -> BoxFuture<'static, Result<(), Error>>;

    /// Whether work leaves this process (a cluster).
    fn is_remote(&self) -> bool;

    /// A guest's call to a serve deployment when no application runs on
    /// this runtime: none here; a cluster's node asks the head.
    fn serve_call(
        &self,
        deployment: String,
        _request: crate::HttpRequest,
    ) -> BoxFuture<'static, Result<crate::HttpResponse, Error>> {
        Box::pin(async move {
            Err(Error::NotFound(format!(
                "no serve application runs here to take a call to deployment {deployment:?}"
            )))
        })
    }

    /// Pass on what the running task `source` (`task-N`) wrote on stdout
    /// now; `false`: not taken (it stays for the task's end).
    fn live_output(&self, _source: &str, _stdout: &[u8]) -> bool {
        false
    }

    /// Objects pulled from other nodes: their bytes and the seconds each
    /// took (`None`: nothing is pulled, the embedded runtime).
    fn transfers(&self) -> Option<(HistogramSnapshot, HistogramSnapshot)> {
        None
    }

    /// Results of this runtime's tasks that came straight from the node that
    /// ran them, ahead of the head's answer (0: the embedded runtime).
    fn direct_results(&self) -> u64 {
        0
    }
}

/// The embedded runtime: everything runs in this process.
pub(crate) struct Local;

impl Backend for Local {
    fn put(&self, rt: &RtInner, _: Caller, bytes: Bytes) -> ObjectRef {
        let len = bytes.len() as u64;
        let caps = &rt.settings.job_caps;
        let taken = rt
            .put_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |so_far| {
                caps.check_put(so_far, len).ok().map(|()| so_far + len)
            });
        if let Err(so_far) = taken {
            let r = ObjectRef::pending(TaskId(rt.next_id()), rt.store.clone());
            if let Err(e) = caps.check_put(so_far, len) {
                r.fail(e);
            }
            return r;
        }
        let id = rt.store.put(bytes);
        ObjectRef::ready(id, rt.store.clone())
    }

    fn submit(
        &self,
        rt: &Arc<RtInner>,
        _: Caller,
        code: Code,
        function: &str,
        args: Vec<Arg<ObjectRef>>,
        options: TaskOptions,
    ) -> Result<ObjectRef, Error> {
        rt.settings
            .job_caps
            .check_task(rt.in_flight.load(Ordering::Acquire))?;
        rt.submit_here(code.load(rt)?, function, args, options)
    }

    fn create_actor(
        &self,
        rt: &Arc<RtInner>,
        _: Caller,
        code: Code,
        class: &str,
        args: Vec<Arg<ObjectRef>>,
        options: ActorOptions,
    ) -> Result<ActorId, Error> {
        rt.settings
            .job_caps
            .check_actor(rt.live_actors.load(Ordering::Acquire))?;
        let comp = code.load(rt)?;
        let id = ActorId(rt.next_id());
        rt.start_actor(id, comp, class, args, options, None, None)?;
        Ok(id)
    }

    fn call_actor(
        &self,
        rt: &RtInner,
        _: Caller,
        actor: ActorId,
        method: String,
        args: Vec<Arg<ObjectRef>>,
    ) -> Result<ObjectRef, Error> {
        rt.settings
            .job_caps
            .check_task(rt.in_flight.load(Ordering::Acquire))?;
        rt.call_actor_here(actor, method, args)
    }

    fn kill_actor(
        &self,
        rt: &RtInner,
        _: Caller,
        actor: ActorId,
    ) -> BoxFuture<'static, Result<(), Error>> {
        Box::pin(std::future::ready(rt.kill_actor_here(actor)))
    }

    fn cancel(&self, rt: &RtInner, _: Caller, r: &ObjectRef) -> Result<(), Error> {
        match r.name() {
            RefName::Task(id) => {
                rt.cancel_here(id);
                Ok(())
            }
            RefName::Put(_) => Err(Error::InvalidArgument(
                "only the result of a task can be cancelled".into(),
            )),
        }
    }

    fn fetch(&self, _: ObjectId) -> Option<BoxFuture<'static, Result<Bytes, Error>>> {
        None
    }

    fn blocked(&self, _: TaskId, _: bool) {}

    fn publish(&self, _: ComponentId, _: Bytes) -> BoxFuture<'static, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }

    fn is_remote(&self) -> bool {
        false
    }
}
