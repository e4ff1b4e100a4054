//! Stateful replicas: each is an actor made of the component's exported
//! `serve.replica` resource (`ferray:runtime/serve` in `wit/`), created with
//! the deployment's `user_config`, holding its resources for life, restarted
//! (constructor re-run) after a crash. Requests go to its `handle`, or are
//! gathered into batches for its `handle-batch` (Ray's `@serve.batch`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ferray::{ActorHandle, ActorOptions, Component, Error, HttpRequest, HttpResponse};
use tokio::sync::{mpsc, oneshot};

use crate::app::{Batching, Deployment};
use crate::{Replica, Running};

/// How long a new replica's constructor may take.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The exported resource a stateful deployment's component must have.
pub(crate) const CLASS: &str = "serve.replica";

type Reply = oneshot::Sender<Result<HttpResponse, Error>>;

/// A stateful replica's actor, and its batcher when it batches.
pub(crate) struct Stateful {
    handle: ActorHandle,
    batch: Option<mpsc::Sender<(HttpRequest, Reply)>>,
}

/// Check that `component` can be a stateful deployment: it exports the
/// replica resource with a `handle`, and `handle-batch` when it batches.
pub(crate) fn check(component: &Component, d: &Deployment) -> Result<(), String> {
    let class = component.info().class(CLASS).map_err(|e| {
        format!(
            "{}: kind = \"replica\" needs the resource `replica` of the interface `serve` \
             (ferray:runtime/serve in wit/): {e}",
            d.component.display()
        )
    })?;
    let mut needed = vec!["handle"];
    if d.batching.is_some() {
        needed.push("handle-batch");
    }
    for method in needed {
        if !class.methods.contains_key(method) {
            return Err(format!(
                "{}: the replica resource has no method `{method}`",
                d.component.display()
            ));
        }
    }
    Ok(())
}

impl Stateful {
    /// Create the actor (its constructor gets the `user_config`), and its batcher.
    pub(crate) async fn start(running: &Running) -> Result<Stateful, Error> {
        let spec = &running.spec;
        let options = ActorOptions {
            resources: spec.options.resources.clone(),
            // A replica is replaced however often it crashes, as Ray
            // Serve's controller replaces unhealthy replicas.
            max_restarts: u32::MAX,
            timeout: spec.options.timeout,
            fuel: spec.options.fuel,
            strategy: spec.options.strategy,
            group: None,
        };
        let handle = running
            .component
            .actor(CLASS, (spec.config.clone(),))
            .options(options)
            .spawn()
            .await?;
        // A replica takes requests once its constructor has run: one that
        // cannot start fails its deploy (or scale-up) here, not requests.
        let ready = match tokio::time::timeout(READY_TIMEOUT, handle.ready()).await {
            Ok(r) => r,
            Err(_) => Err(Error::TimeLimit(format!(
                "its constructor did not end within {READY_TIMEOUT:?}"
            ))),
        };
        if let Err(e) = ready {
            let _ = handle.kill();
            return Err(Error::Other(format!("a replica could not start: {e}")));
        }
        let batch = spec.batching.clone().map(|b| {
            let (tx, rx) = mpsc::channel(spec.max_ongoing_requests.max(1) as usize);
            tokio::spawn(batcher(running.rt.clone(), handle.clone(), b, rx));
            tx
        });
        Ok(Stateful { handle, batch })
    }

    /// Answer one request: alone, or in the next batch.
    pub(crate) async fn call(
        &self,
        rt: &ferray::Runtime,
        request: HttpRequest,
    ) -> Result<HttpResponse, Error> {
        match &self.batch {
            Some(tx) => {
                let (reply, answer) = oneshot::channel();
                tx.send((request, reply))
                    .await
                    .map_err(|_| Error::System("the replica's batcher has stopped".into()))?;
                answer
                    .await
                    .map_err(|_| Error::System("the replica's batcher has stopped".into()))?
            }
            None => {
                let r = self.handle.call("handle", (request,))?;
                // Read, or given up: the cluster need not keep the call or
                // its answer.
                let _free = rt.free_on_drop(&r);
                rt.get::<HttpResponse>(&r).await
            }
        }
    }
}

/// Gather requests into batches: up to `max_batch_size`, waiting at most
/// `batch_wait_timeout` after the first; one `handle-batch` call each, in
/// turn (an actor answers one call at a time).
async fn batcher(
    rt: ferray::Runtime,
    handle: ActorHandle,
    b: Batching,
    mut rx: mpsc::Receiver<(HttpRequest, Reply)>,
) {
    let max = b.max_batch_size as usize;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let until = tokio::time::Instant::now() + b.batch_wait_timeout;
        while batch.len() < max {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(next)) => batch.push(next),
                _ => break,
            }
        }
        let (requests, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let n = requests.len();
        let answered = async {
            let r = handle.call("handle-batch", (requests,))?;
            let _free = rt.free_on_drop(&r);
            rt.get::<Vec<HttpResponse>>(&r).await
        }
        .await;
        match answered {
            Ok(responses) if responses.len() == n => {
                for (reply, response) in replies.into_iter().zip(responses) {
                    let _ = reply.send(Ok(response));
                }
            }
            Ok(responses) => {
                let e = Error::Other(format!(
                    "handle-batch answered {} responses to {n} requests",
                    responses.len()
                ));
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// A removed replica: once its ongoing requests are done (they hold it),
/// its actor is stopped.
pub(crate) async fn drain(replica: Arc<Replica>) {
    while replica.ongoing.load(Ordering::Acquire) > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(actor) = &replica.actor {
        actor.stop();
    }
}

impl Stateful {
    /// Kill the actor (calls in flight fail with `ActorDied`).
    pub(crate) fn stop(&self) {
        if let Err(e) = self.handle.kill() {
            tracing::debug!("stopping a replica's actor: {e}");
        }
    }
}
