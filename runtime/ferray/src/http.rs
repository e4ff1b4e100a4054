//! An HTTP request as a task: the whole request in, the whole response
//! out, answered by a component's `wasi:http/incoming-handler` in a fresh
//! instance on whichever node the task runs (the scheduler's choice on a
//! cluster). `Component::handle_http` streams instead, on this node only.

use std::sync::Arc;

use bytes::Bytes;
use ferray_core::Error;
use ferray_host::{Limits, Loaded, Outcome};
use http_body_util::{BodyExt, Full, Limited};

use crate::runtime::{RtInner, TaskCtx};

/// The export an HTTP request as a task names: the incoming handler's
/// `handle`, as ferray names an interface's function.
pub const HTTP_HANDLE: &str = "incoming-handler.handle";

/// The largest response body an HTTP task keeps (a larger one fails it).
pub const MAX_HTTP_RESPONSE_BYTES: usize = 64 << 20;

pub use ferray_core::http::{HttpRequest, HttpResponse};

/// `request` as the host's handler takes it; a bad method, path or header
/// is `invalid-argument`.
pub fn http_request(request: &HttpRequest) -> Result<http::Request<Full<Bytes>>, Error> {
    let bad = |e: &dyn std::fmt::Display| {
        Error::InvalidArgument(format!("not a valid HTTP request: {e}"))
    };
    let mut b = http::Request::builder()
        .method(request.method.as_str())
        .uri(request.path.as_str());
    for (k, v) in &request.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    // A handler needs an authority: a request a guest made may have none.
    let has_host = request
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("host"));
    if !has_host && !request.path.contains("://") {
        b = b.header(http::header::HOST, "localhost");
    }
    b.body(Full::new(Bytes::from(request.body.clone())))
        .map_err(|e| bad(&e))
}

/// A handler's response read whole: its body up to
/// [`MAX_HTTP_RESPONSE_BYTES`], its header values as text.
pub async fn read_response(
    response: http::Response<ferray_host::HttpBody>,
) -> Result<HttpResponse, Error> {
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_HTTP_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| {
            Error::Other(format!(
                "the handler's response body failed (at most {MAX_HTTP_RESPONSE_BYTES} bytes): {e}"
            ))
        })?
        .to_bytes();
    Ok(HttpResponse {
        status: parts.status.as_u16(),
        headers: header_pairs(&parts.headers),
        body: body.to_vec(),
    })
}

/// Headers as name and value text (a value that is not UTF-8, lossily).
pub fn header_pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

impl RtInner {
    /// Run an HTTP task's attempt: `args` is an encoded [`HttpRequest`],
    /// the result an encoded [`HttpResponse`] (its body read whole, up to
    /// [`MAX_HTTP_RESPONSE_BYTES`]).
    pub(crate) async fn http_attempt(
        self: &Arc<Self>,
        comp: &Arc<Loaded<RtInner>>,
        args: &[u8],
        limits: &Limits,
        ctx: TaskCtx,
    ) -> Outcome {
        let result = async {
            let request: HttpRequest = postcard::from_bytes(args).map_err(|e| {
                Error::InvalidArgument(format!("an HTTP task's argument is not a request: {e}"))
            })?;
            let response = self
                .host()?
                .handle_http(comp, http_request(&request)?, limits, self.clone(), ctx, ())
                .await?;
            let response = read_response(response).await?;
            postcard::to_allocvec(&response)
                .map_err(|e| Error::System(format!("cannot encode the response: {e}")))
        }
        .await;
        Outcome {
            result,
            stdout: Bytes::new(),
            stderr: Bytes::new(),
            dropped_output: 0,
        }
    }
}

/// Where a guest's calls to a serve deployment go (`ferray:runtime/
/// deployments`, Ray's `DeploymentHandle`): the serve application running
/// on this runtime ([`crate::Runtime::set_serve_router`]). Without one, an
/// embedded runtime has no deployment and a cluster's node asks the head,
/// whose process runs the cluster's application.
pub trait ServeRouter: Send + Sync + 'static {
    fn call(
        &self,
        deployment: String,
        request: HttpRequest,
    ) -> futures::future::BoxFuture<'static, Result<HttpResponse, Error>>;
}

impl RtInner {
    /// A guest's call to deployment `deployment`.
    pub(crate) fn serve_call(
        self: &Arc<Self>,
        deployment: String,
        request: HttpRequest,
    ) -> futures::future::BoxFuture<'static, Result<HttpResponse, Error>> {
        let router = self.serve_router.read().clone();
        match router {
            Some(r) => r.call(deployment, request),
            None => self.backend().serve_call(deployment, request),
        }
    }
}
