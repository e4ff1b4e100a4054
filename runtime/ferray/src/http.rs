//! An HTTP request as a task: the whole request in, the whole response
//! out, answered by a component's `wasi:http/incoming-handler` in a fresh
//! instance on whichever node the task runs (the scheduler's choice on a
//! cluster). `Component::handle_http` streams instead, on this node only.

use std::sync::Arc;

use bytes::Bytes;
use ferray_core::Error;
use ferray_host::{Limits, Loaded, Outcome};
use http_body_util::{BodyExt, Full, Limited};
use serde::{Deserialize, Serialize};

use crate::runtime::{RtInner, TaskCtx};

/// The export an HTTP request as a task names: the incoming handler's
/// `handle`, as ferray names an interface's function.
pub const HTTP_HANDLE: &str = "incoming-handler.handle";

/// The largest response body an HTTP task keeps (a larger one fails it).
pub const MAX_HTTP_RESPONSE_BYTES: usize = 64 << 20;

/// An HTTP request, whole (`ferray:runtime/serve`'s `http-request`, fields
/// in WIT order, so that it is also what a stateful replica's `handle` takes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequest {
    pub method: String,
    /// The path and query (`/a/b?c=d`).
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// An HTTP response, whole (`ferray:runtime/serve`'s `http-response`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// As the host's handler takes it; a bad method, path or header is
    /// `invalid-argument`.
    pub fn to_http(&self) -> Result<http::Request<Full<Bytes>>, Error> {
        let bad = |e: &dyn std::fmt::Display| {
            Error::InvalidArgument(format!("not a valid HTTP request: {e}"))
        };
        let mut b = http::Request::builder()
            .method(self.method.as_str())
            .uri(self.path.as_str());
        for (k, v) in &self.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        b.body(Full::new(Bytes::from(self.body.clone())))
            .map_err(|e| bad(&e))
    }
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
                .handle_http(comp, request.to_http()?, limits, self.clone(), ctx, ())
                .await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_HTTP_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    Error::Other(format!(
                        "the handler's response body failed (at most {MAX_HTTP_RESPONSE_BYTES} \
                         bytes): {e}"
                    ))
                })?
                .to_bytes();
            let response = HttpResponse {
                status: parts.status.as_u16(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
                body: body.to_vec(),
            };
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
