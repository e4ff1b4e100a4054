//! The cluster backend: a node's or a client's new work goes to the head
//! over its session; objects this node lacks are pulled from their holders.

use std::sync::Arc;

use bytes::Bytes;
use ferray_core::{ActorId, ActorOptions, Arg, ComponentId, Error, ObjectId, TaskId, TaskOptions};
use futures::future::BoxFuture;

use ferray_proto::v1;

use super::session::Session;
use crate::backend::{Backend, Caller, Code};
use crate::objects::ObjectRef;
use crate::runtime::RtInner;

/// A session with the head as a runtime's backend.
pub(crate) struct Remote(pub Arc<Session>);

/// For whom a call is made, as the head hears it: the task or actor of a
/// job whose guest made it (the head takes the job from that assignment), or
/// nobody for this process's own driver (a client's job is its session's).
fn acting(caller: Caller) -> Option<v1::Acting> {
    use v1::acting::Who;
    let who = match caller {
        Caller::Driver => return None,
        Caller::Task { task, .. } => Who::Task(task.0),
        Caller::Actor { actor, .. } => Who::Actor(actor.0),
    };
    Some(v1::Acting { who: Some(who) })
}

impl Backend for Remote {
    fn leave(&self, within: std::time::Duration) {
        self.0.bye();
        let until = std::time::Instant::now() + within;
        while !self.0.is_lost() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    fn put(&self, _: &RtInner, caller: Caller, bytes: Bytes) -> ObjectRef {
        self.0.put(acting(caller), bytes)
    }

    fn submit(
        &self,
        rt: &Arc<RtInner>,
        caller: Caller,
        code: Code,
        function: &str,
        args: Vec<Arg<ObjectRef>>,
        options: TaskOptions,
    ) -> Result<ObjectRef, Error> {
        // Refused here, at once, when this process knows the component (a
        // guest may name one only the head has).
        if let Some(c) = code.here(rt) {
            c.info.function(function)?;
        }
        self.0
            .submit(acting(caller), code.id(), function, args, &options)
    }

    fn create_actor(
        &self,
        rt: &Arc<RtInner>,
        caller: Caller,
        code: Code,
        class: &str,
        args: Vec<Arg<ObjectRef>>,
        options: ActorOptions,
    ) -> Result<ActorId, Error> {
        if let Some(c) = code.here(rt) {
            c.info.class(class)?;
        }
        self.0
            .create_actor(acting(caller), code.id(), class, args, &options)
    }

    fn call_actor(
        &self,
        _: &RtInner,
        caller: Caller,
        actor: ActorId,
        method: String,
        args: Vec<Arg<ObjectRef>>,
    ) -> Result<ObjectRef, Error> {
        let job = match caller {
            Caller::Driver => None,
            Caller::Task { job, .. } | Caller::Actor { job, .. } => job.map(|j| j.0),
        };
        self.0
            .call_actor(acting(caller), job.unwrap_or(0), actor, method, args)
    }

    fn kill_actor(
        &self,
        _: &RtInner,
        caller: Caller,
        actor: ActorId,
    ) -> BoxFuture<'static, Result<(), Error>> {
        self.0.kill_actor(acting(caller), actor)
    }

    fn cancel(&self, _: &RtInner, caller: Caller, r: &ObjectRef) -> Result<(), Error> {
        self.0.cancel(acting(caller), r)
    }

    fn fetch(&self, id: ObjectId) -> Option<BoxFuture<'static, Result<Bytes, Error>>> {
        Some(self.0.fetch(id))
    }

    fn free(&self, refs: &[ObjectRef]) {
        // (The head hears a client's release only: a worker's guests'
        // references stay with their jobs.)
        self.0.release(refs);
    }

    fn blocked(&self, task: TaskId, blocked: bool) {
        self.0.blocked(task.0, blocked);
    }

    fn publish(&self, id: ComponentId, bytes: Bytes) -> BoxFuture<'static, Result<(), Error>> {
        let s = self.0.clone();
        Box::pin(async move { s.upload(id, bytes).await })
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn serve_call(
        &self,
        deployment: String,
        request: crate::HttpRequest,
    ) -> BoxFuture<'static, Result<crate::HttpResponse, Error>> {
        let mut head = self.0.head.clone();
        Box::pin(async move {
            ferray_core::http::check_forwarded("the request", request.body.len())?;
            let answer = head
                .serve_call(ferray_proto::serve_call_to(deployment, request))
                .await
                .map_err(|s| ferray_proto::from_status("calling the deployment", s))?;
            ferray_proto::serve_answer_from(answer.into_inner())
        })
    }

    fn live_output(&self, source: &str, stdout: &[u8]) -> bool {
        let Some(task) = source
            .strip_prefix("task-")
            .and_then(|n| n.parse::<u64>().ok())
        else {
            return false;
        };
        self.0.live_output(task, stdout);
        true
    }

    fn transfers(
        &self,
    ) -> Option<(
        ferray_core::HistogramSnapshot,
        ferray_core::HistogramSnapshot,
    )> {
        Some((
            self.0.transfer_bytes.snapshot(),
            self.0.transfer_seconds.snapshot(),
        ))
    }

    fn direct_results(&self) -> u64 {
        self.0
            .direct_results
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}
