//! The head's serve edge: `Head.ServeDeploy`, `ServeStatus` and
//! `ServeDelete` go to the serve controller the head process runs
//! ([`ServeControl`], set with [`Head::set_serve`]). The controller runs
//! guest code's replicas as the cluster's tasks and actors, through a
//! client of this head; this crate only hands it the application and each
//! deployment's component bytes from the component table.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ferray_core::http::{HttpRequest, HttpResponse};
use ferray_core::view::{ServeApp, ServeStatus};
use ferray_core::{ComponentId, Error};
use ferray_proto::{to_status, v1};
use tonic::{Response, Status};

use crate::Head;

/// What the serve controller answers, later.
pub type ServeFuture = Pin<Box<dyn Future<Output = Result<ServeStatus, Error>> + Send>>;

/// A serve controller: one application at a time, deployed again as a
/// rolling update.
pub trait ServeControl: Send + Sync + 'static {
    fn deploy(&self, app: ServeApp) -> ServeFuture;
    fn status(&self) -> ServeFuture;
    fn delete(&self) -> ServeFuture;
    /// A guest's request to one of the application's deployments.
    fn call(
        &self,
        deployment: String,
        request: HttpRequest,
    ) -> Pin<Box<dyn Future<Output = Result<HttpResponse, Error>> + Send>>;
}

impl Head {
    /// The serve controller of this head (once; later ones are ignored).
    pub fn set_serve(&self, control: Arc<dyn ServeControl>) {
        let _ = self.serve.set(control);
    }

    fn serve_control(&self) -> Result<Arc<dyn ServeControl>, Status> {
        self.serve.get().cloned().ok_or_else(|| {
            Status::unavailable("this head runs no serve controller (it was embedded without one)")
        })
    }

    pub(crate) async fn deploy_app(
        &self,
        app: v1::ServeApp,
    ) -> Result<Response<v1::ServeStatus>, Status> {
        let control = self.serve_control()?;
        let mut components = BTreeMap::new();
        for (name, id) in app.components {
            let id = <[u8; 32]>::try_from(&id[..])
                .map(ComponentId::from_bytes)
                .map_err(|_| Status::invalid_argument("a component id is not 32 bytes"))?;
            let bytes = self.core.lock().state.components.get(&id).cloned();
            let bytes = bytes.ok_or_else(|| {
                Status::not_found(format!(
                    "deployment {name:?}: its component {id} was not uploaded to the head"
                ))
            })?;
            components.insert(name, bytes);
        }
        let status = control
            .deploy(ServeApp {
                text: app.text,
                origin: app.origin,
                components,
                proxy_location: app.proxy_location,
            })
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(ferray_proto::serve_status_to(status)))
    }

    pub(crate) async fn app_status(&self) -> Result<Response<v1::ServeStatus>, Status> {
        let status = self
            .serve_control()?
            .status()
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(ferray_proto::serve_status_to(status)))
    }

    pub(crate) async fn delete_app(&self) -> Result<Response<v1::ServeStatus>, Status> {
        let status = self
            .serve_control()?
            .delete()
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(ferray_proto::serve_status_to(status)))
    }

    pub(crate) async fn call_deployment(
        &self,
        call: v1::ServeCall,
    ) -> Result<Response<v1::ServeAnswer>, Status> {
        let control = self.serve_control()?;
        let (deployment, request) = ferray_proto::serve_call_from(call);
        let answer = control.call(deployment, request).await;
        Ok(Response::new(ferray_proto::serve_answer_to(answer)))
    }
}
