//! An HTTP request and response, whole: what a stateful serve replica
//! takes and answers (`ferray:runtime/types`' `http-request` and
//! `http-response`, fields in WIT order), what an HTTP task carries, and
//! what a guest sends to another deployment through a handle.

use serde::{Deserialize, Serialize};

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
