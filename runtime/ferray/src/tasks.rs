//! Running tasks on this node: dependencies, admission, attempts within the
//! retry policy, cancellation. The embedded runtime submits here
//! ([`RtInner::submit_here`]); a cluster's worker runs the head's
//! assignments with [`RtInner::admit`] and [`RtInner::run_attempts`].

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use ferray_core::{Arg, AttemptEnd, Error, Resources, TaskId, TaskOptions, retry_backoff};
use ferray_host::{FuncInfo, Loaded, Outcome};
use futures::future::BoxFuture;
use tokio::sync::Notify;

use crate::backend::Caller;
use crate::objects::ObjectRef;
use crate::runtime::{Counted, RtInner, TaskCtx};
use crate::sched::Lease;

/// Fails a result that was never resolved (the task was dropped).
struct FailOnDrop(ObjectRef, &'static str);

impl Drop for FailOnDrop {
    fn drop(&mut self) {
        self.0.fail(Error::Cancelled(self.1.to_string()));
    }
}

impl RtInner {
    /// Submit a task to run on this node; the reference comes back at once
    /// (in local mode the task joins the sequential lane).
    pub(crate) fn submit_here(
        self: &Arc<Self>,
        comp: Arc<Loaded<RtInner>>,
        function: &str,
        args: Vec<Arg<ObjectRef>>,
        options: TaskOptions,
    ) -> Result<ObjectRef, Error> {
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

    /// A task's result and the future that runs it.
    pub(crate) fn prepare(
        self: &Arc<Self>,
        comp: Arc<Loaded<RtInner>>,
        function: &str,
        args: Vec<Arg<ObjectRef>>,
        options: TaskOptions,
    ) -> Result<(ObjectRef, BoxFuture<'static, ()>), Error> {
        let func = comp.info.function(function)?.clone();
        self.settings
            .ceilings
            .check(&options.resources, options.timeout, options.fuel)?;
        if !self.settings.local_mode {
            self.admission.check_feasible(&options.resources)?;
        }
        let id = TaskId(self.next_id());
        self.counters.submitted.fetch_add(1, Ordering::Relaxed);
        let result = ObjectRef::pending(id, self.store.clone());
        let cancel = Arc::new(Notify::new());
        self.tasks.insert(id, cancel.clone());
        let rt = self.clone();
        let counted = Counted::new(&self.in_flight);
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
            drop(counted);
        };
        Ok((result, Box::pin(fut)))
    }

    /// Cancel a task running on this node (its result fails with `Cancelled`).
    pub(crate) fn cancel_here(&self, id: TaskId) {
        if let Some(n) = self.tasks.get(&id) {
            n.notify_one();
        }
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
        let out = match self.admit(args, &options.resources).await {
            Ok((args, lease)) => {
                let ctx = TaskCtx::task(id, None, lease);
                // Boxed: a queued task's future stays small (the attempt's,
                // wasmtime's call included, is made only when it runs), so a
                // node can hold a million of them.
                let out = Box::pin(self.run_attempts(&ctx, &comp, &func, &args, &options)).await;
                // The lease goes before the result is resolved: whoever
                // waits on the result finds the task's resources free again.
                drop(ctx);
                out
            }
            Err(e) => Err(e),
        };
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

    /// A task's argument bytes once every dependency is ready, and its
    /// resources once this node's admission grants them (none in local
    /// mode). The lease is the task's until it is dropped.
    pub(crate) async fn admit(
        &self,
        args: Vec<Arg<ObjectRef>>,
        demand: &Resources,
    ) -> Result<(Vec<u8>, Option<Arc<Lease>>), Error> {
        let args = self.resolve_args(args).await?;
        let lease = if self.settings.local_mode {
            None
        } else {
            Some(Arc::new(self.admission.lease(demand.clone()).await))
        };
        Ok((args, lease))
    }

    /// Answer an HTTP request with `comp`'s incoming handler, in an
    /// instance slot of this node held until the guest's call ends.
    pub(crate) async fn handle_http<B>(
        self: &Arc<Self>,
        comp: &Arc<Loaded<RtInner>>,
        request: http::Request<B>,
        options: &TaskOptions,
    ) -> Result<http::Response<ferray_host::HttpBody>, Error>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let limits = self.limits(&options.resources, options.timeout, options.fuel);
        let slot = self.task_slot().await?;
        let ctx = TaskCtx {
            label: Arc::from("http"),
            lease: None,
            caller: Caller::Driver,
            group: None,
        };
        self.host()?
            .handle_http(comp, request, &limits, self.clone(), ctx, slot)
            .await
    }

    /// Run an admitted task: attempts within the retry policy
    /// ([`TaskOptions::should_retry`]), backing off between them.
    pub(crate) async fn run_attempts(
        self: &Arc<Self>,
        ctx: &TaskCtx,
        comp: &Arc<Loaded<RtInner>>,
        func: &FuncInfo,
        args: &[u8],
        options: &TaskOptions,
    ) -> Result<Vec<u8>, Error> {
        let mut limits = self.limits(&options.resources, options.timeout, options.fuel);
        // Its stdout as it runs: a long task's lines are seen at once (on a
        // cluster, in its job's log), not when it ends.
        limits.live_stdout = Some({
            let (rt, label) = (Arc::downgrade(self), ctx.label.clone());
            Arc::new(move |bytes: &[u8]| {
                if let Some(rt) = rt.upgrade() {
                    rt.emit_live(&label, bytes);
                }
            })
        });
        let mut attempts = 0u32;
        loop {
            // An instance slot for the attempt (waiting while the node's
            // pool is full), held until it ends.
            let _slot = self.task_slot().await?;
            let out = if self.inject_failure() {
                failed(Error::System("an injected system failure".into()))
            } else {
                let host = self.host()?;
                // An HTTP request as a task: the incoming handler answers it.
                let run = if func.name == crate::http::HTTP_HANDLE && host.is_http_handler(comp) {
                    futures::future::Either::Left(self.http_attempt(
                        comp,
                        args,
                        &limits,
                        ctx.clone(),
                    ))
                } else {
                    futures::future::Either::Right(host.run(
                        comp,
                        func,
                        args,
                        &limits,
                        self.clone(),
                        ctx.clone(),
                    ))
                };
                // The wall-clock limit covers the whole attempt: the host stops
                // running wasm at the deadline; this stops an attempt blocked in
                // a host call (`get`, `wait`, a GPU wait) past it.
                match limits.timeout {
                    Some(t) => tokio::time::timeout(t + ferray_host::WALL_CLOCK_GRACE, run)
                        .await
                        .unwrap_or_else(|_| {
                            failed(Error::TimeLimit(format!(
                                "the call ran longer than {t:?} (time blocked in host calls \
                                 included) and was stopped"
                            )))
                        }),
                    None => run.await,
                }
            };
            self.emit(&ctx.label, &out);
            attempts += 1;
            let end = match &out.result {
                Ok(bytes) if func.returns_err(bytes) => AttemptEnd::ErrValue,
                Ok(_) => AttemptEnd::Value,
                Err(e) => AttemptEnd::Failed(e),
            };
            if !options.should_retry(attempts, end) {
                return out.result;
            }
            self.counters.retried.fetch_add(1, Ordering::Relaxed);
            match &out.result {
                Err(e) => {
                    tracing::info!(task = %ctx.label, "attempt {attempts} failed, retrying: {e}");
                    self.emit_note(
                        &ctx.label,
                        &format!("ferray: attempt {attempts} failed, retrying: {e}"),
                    );
                }
                Ok(_) => {
                    tracing::info!(task = %ctx.label, "attempt {attempts} returned an error, retrying")
                }
            }
            tokio::time::sleep(retry_backoff(attempts)).await;
        }
    }

    /// The concatenated argument bytes, once every dependency is ready.
    pub(crate) async fn resolve_args(
        &self,
        mut args: Vec<Arg<ObjectRef>>,
    ) -> Result<Vec<u8>, Error> {
        // One value piece (the common case): its bytes as they are, no copy.
        let max = self.settings.max_argument_bytes;
        if let [Arg::Value(_)] = args.as_slice()
            && let Some(Arg::Value(v)) = args.pop()
        {
            return check_argument_bytes(v.len() as u64, max).map(|()| v);
        }
        // The pieces first (objects are shared, not copied), then one
        // buffer, once their total is known to be within the limit: an
        // object passed many times cannot make the node allocate without end.
        let mut pieces: Vec<Bytes> = Vec::with_capacity(args.len());
        let mut total: u64 = 0;
        for a in args {
            let piece = match a {
                Arg::Value(v) => Bytes::from(v),
                Arg::Ref(r) => {
                    let id = r.ready_id().await.map_err(|e| {
                        Error::TaskFailed(format!("its argument {} failed: {e}", r.name()))
                    })?;
                    self.object_bytes(&id).await?
                }
            };
            total = total.saturating_add(piece.len() as u64);
            check_argument_bytes(total, max)?;
            pieces.push(piece);
        }
        let mut out = Vec::with_capacity(total as usize);
        for p in &pieces {
            out.extend_from_slice(p);
        }
        Ok(out)
    }
}

impl RtInner {
    /// Whether this attempt fails by injection (`RuntimeBuilder::fail_attempts`,
    /// the `testing` feature only; always `false` otherwise).
    fn inject_failure(&self) -> bool {
        #[cfg(feature = "testing")]
        return self
            .settings
            .failing_attempts
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        #[cfg(not(feature = "testing"))]
        false
    }
}

/// An attempt that ended before or outside the guest, with no output.
fn failed(e: Error) -> Outcome {
    Outcome {
        result: Err(e),
        stdout: Bytes::new(),
        stderr: Bytes::new(),
        dropped_output: 0,
    }
}

/// Arguments of `total` bytes (so far) within this node's limit.
fn check_argument_bytes(total: u64, max: u64) -> Result<(), Error> {
    if total > max {
        return Err(Error::InvalidArgument(format!(
            "the call's arguments take more than {max} bytes, this node's limit \
             (`max_argument_bytes`)"
        )));
    }
    Ok(())
}
