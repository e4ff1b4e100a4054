//! An HTTP request and response, whole: what a stateful serve replica
//! takes and answers (`ferray:runtime/types`' `http-request` and
//! `http-response`, fields in WIT order), what an HTTP task carries, and
//! what a guest sends to another deployment through a handle.

use serde::{Deserialize, Serialize};

use crate::Error;

/// The largest body a request or an answer carries through the head (a
/// worker node's proxy, a guest's handle call on a cluster): whole, in one
/// message of the cluster's protocol (8 MiB), with room for its headers.
pub const MAX_FORWARDED_BODY: usize = 7 << 20;

/// Whether a body of `len` bytes fits through the head; `what` names it.
pub fn check_forwarded(what: &str, len: usize) -> Result<(), Error> {
    if len > MAX_FORWARDED_BODY {
        return Err(Error::InvalidArgument(format!(
            "{what} has a body of {len} bytes; through the head (a node's proxy, a handle's \
             call on a cluster) a body carries at most {MAX_FORWARDED_BODY} bytes: send it \
             to the head's proxy"
        )));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequest {
    pub method: String,
    /// The path and query (`/a/b?c=d`).
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}
