//! `wasi:http`: a component exporting `wasi:http/incoming-handler` answers
//! HTTP requests, each in a fresh store of its own, as `wasmtime serve` and
//! Spin run it (ferray serve's stateless deployments). The store has the
//! limits of a task (memory, time, fuel) and no ambient capability.
//!
//! The `wasi:http` imports are in every store's linker, so that components
//! built for the proxy world load; guests may not send requests: the
//! outgoing handler refuses every one ([`DenyOutgoing`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ferray_core::Error;
use http_body_util::BodyExt;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use wasmtime::Store;
use wasmtime::component::Resource;
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};

use crate::task::{Output, TaskState, WALL_CLOCK_GRACE, classify};
use crate::{Host, Limits, Loaded, Services};

/// The body of a response a guest makes: streamed from the guest's store
/// while it writes it.
pub type HttpBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Error>;

/// The export a stateless HTTP component has.
pub const INCOMING_HANDLER: &str = "wasi:http/incoming-handler";

/// The hooks of a guest's `wasi:http`: no outgoing request leaves the node.
#[derive(Debug, Default)]
pub struct DenyOutgoing;

impl WasiHttpHooks for DenyOutgoing {
    fn send_request(
        &mut self,
        _request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

impl<S: Services> WasiHttpView for TaskState<S> {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

/// Why a request body stopped, as the guest reads it.
fn body_error(e: Box<dyn std::error::Error + Send + Sync>) -> wasmtime_wasi_http::Error {
    if e.is::<http_body_util::LengthLimitError>() {
        wasmtime_wasi_http::Error::HttpRequestBodySize(None)
    } else {
        wasmtime_wasi_http::Error::InternalError(Some(e.to_string()))
    }
}

impl<S: Services> Host<S> {
    /// The component's `wasi:http/incoming-handler`, checked once.
    fn proxy_pre(&self, comp: &Loaded<S>) -> Result<ProxyPre<TaskState<S>>, Error> {
        comp.proxy
            .get_or_init(|| ProxyPre::new(comp.pre.clone()).map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(|e| {
                Error::InvalidArgument(format!(
                    "the component does not export `{INCOMING_HANDLER}` (an HTTP handler): {e}"
                ))
            })
    }

    /// Whether the component is an HTTP handler.
    pub fn is_http_handler(&self, comp: &Loaded<S>) -> bool {
        self.proxy_pre(comp).is_ok()
    }

    /// Answer one HTTP request with the component's incoming handler, in a
    /// fresh store with `limits`. The response comes back once the guest
    /// has set it; its body streams while the guest writes it. `hold` (an
    /// instance slot, a replica's count) is kept until the guest's call has
    /// ended, body written or not.
    ///
    /// A guest that traps, runs out of time or never answers gives an error,
    /// with its trap and last stderr lines; a trap after the answer ends
    /// the body with an error.
    #[allow(clippy::too_many_arguments)]
    pub async fn handle_http<B>(
        &self,
        comp: &Loaded<S>,
        request: http::Request<B>,
        limits: &Limits,
        services: Arc<S>,
        ctx: S::Ctx,
        hold: impl Send + 'static,
    ) -> Result<http::Response<HttpBody>, Error>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let pre = self.proxy_pre(comp)?;
        let output = Output::new(self.config().max_output_bytes);
        let mut store = self.new_store(self.engine(), comp.id, limits, services, ctx, &output)?;
        store.data_mut().deadline = limits.timeout.map(|t| Instant::now() + t);
        let request = request.map(|b| b.map_err(|e| body_error(e.into())));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (req, out) = {
            let mut view = store.data_mut().http();
            let req = view
                .new_incoming_request(Scheme::Http, request)
                .map_err(|e| Error::InvalidArgument(format!("a bad request: {e:#}")))?;
            let out = view
                .new_response_outparam(tx)
                .map_err(|e| Error::System(format!("cannot make the response: {e:#}")))?;
            (req, out)
        };
        let limits = limits.clone();
        let guest = tokio::spawn(async move {
            let _hold = hold;
            let run = handle(&mut store, &pre, req, out);
            // The store's deadline stops running wasm; this stops a guest
            // blocked in a host call (a poll, a body read) past it.
            let result = match limits.timeout {
                Some(t) => match tokio::time::timeout(t + WALL_CLOCK_GRACE, run).await {
                    Ok(r) => r.map_err(|e| classify(&store, e, &limits)),
                    Err(_) => Err(Error::TimeLimit(format!(
                        "the request ran longer than {t:?} (time blocked in host calls \
                         included) and was stopped"
                    ))),
                },
                None => run.await.map_err(|e| classify(&store, e, &limits)),
            };
            output.finish(result.map(|()| Vec::new())).result
        });
        // The guest's call is stopped when nobody waits for it any more: the
        // caller gave up before the answer (a timeout, a client gone), or
        // the answer's body was sent or dropped.
        let stop = StopOnDrop(guest.abort_handle());
        match rx.await {
            // The body holds the stop: the guest ends with its answer.
            Ok(Ok(response)) => Ok(response.map(|b| {
                b.map_err(|code| Error::Trap(format!("the response body failed: {code:?}")))
                    .map_frame(move |frame| {
                        let _stop = &stop;
                        frame
                    })
                    .boxed_unsync()
            })),
            Ok(Err(code)) => Err(error_code(code)),
            // The guest dropped the response without setting it: it ended
            // (trapped, timed out, or returned without answering).
            Err(_) => match guest.await {
                Ok(Err(e)) => Err(e),
                Ok(Ok(_)) => Err(Error::Trap(
                    "the HTTP handler returned without setting a response".into(),
                )),
                Err(e) => Err(Error::System(format!(
                    "the HTTP handler's task failed: {e}"
                ))),
            },
        }
    }
}

/// Aborts the task of a guest's call when dropped (its store yields at every
/// epoch tick, so the abort takes effect at once, and dropping the store
/// frees its instance).
struct StopOnDrop(tokio::task::AbortHandle);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Instantiate the handler in `store` and call it.
async fn handle<S: Services>(
    store: &mut Store<TaskState<S>>,
    pre: &ProxyPre<TaskState<S>>,
    req: Resource<HostIncomingRequest>,
    out: Resource<HostResponseOutparam>,
) -> wasmtime::Result<()> {
    let proxy = pre.instantiate_async(&mut *store).await?;
    proxy
        .wasi_http_incoming_handler()
        .call_handle(&mut *store, req, out)
        .await
}

/// A `wasi:http` error code the guest answered with, as ferray's error.
fn error_code(code: ErrorCode) -> Error {
    Error::Trap(format!("the HTTP handler answered with an error: {code:?}"))
}
