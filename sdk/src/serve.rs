//! Calls from one serve deployment to another, as Ray Serve's
//! `DeploymentHandle`: `ferray_sdk::serve::handle("name").call(&request)`.
//!
//! The request goes to the named deployment of the application this guest
//! runs beside (`ferray serve run` on the embedded runtime, `ferray serve
//! deploy` on a cluster), as the proxy would send it: to one of its
//! replicas with room, within the application's request timeout.

use crate::bindings::ferray::runtime::deployments;
pub use crate::bindings::ferray::runtime::types::{HttpRequest, HttpResponse};
use crate::{Error, Result};

/// A deployment of the running application, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handle {
    name: String,
}

/// The deployment named `name` (checked when it is called).
pub fn handle(name: &str) -> Handle {
    Handle {
        name: name.to_string(),
    }
}

impl Handle {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Send `request`; its answer, whatever its status. [`Error::NotFound`]
    /// when no such deployment runs.
    pub fn call(&self, request: &HttpRequest) -> Result<HttpResponse> {
        deployments::call(&self.name, request).map_err(Error::from)
    }

    /// A `GET` of `path` (path and query), without headers.
    pub fn get(&self, path: &str) -> Result<HttpResponse> {
        self.call(&HttpRequest {
            method: "GET".into(),
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
        })
    }

    /// A `POST` of `body` to `path`.
    pub fn post(&self, path: &str, body: Vec<u8>) -> Result<HttpResponse> {
        self.call(&HttpRequest {
            method: "POST".into(),
            path: path.into(),
            headers: Vec::new(),
            body,
        })
    }
}
