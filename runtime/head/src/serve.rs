//! The head's serve edge: `Head.ServeDeploy`, `ServeStatus` and
//! `ServeDelete` go to the serve controller the head process runs
//! ([`ServeControl`], set with [`Head::set_serve`]). The controller runs
//! guest code's replicas as the cluster's tasks and actors, through a
//! client of this head; this crate only hands it the application and each
//! deployment's component bytes from the component table. The application
//! is kept in the head's database at each deploy (and forgotten at a
//! delete): a restarted head deploys it again ([`Head::restore_serve_app`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use ferray_core::http::{HttpRequest, HttpResponse};
use ferray_core::view::{ServeApp, ServeStatus};
use ferray_core::{ComponentId, Error};
use ferray_proto::{to_status, v1};
use tonic::{Response, Status};

use crate::Head;
use crate::state::ServeRecord;

/// How often, and how long, a restarted head tries to deploy the earlier
/// head's application again (its replicas need the workers back).
const RESTORE_EVERY: Duration = Duration::from_secs(5);
const RESTORE_FOR: Duration = Duration::from_secs(600);

/// The serve application across restarts of the head.
#[derive(Default)]
pub(crate) struct SavedApp {
    /// Moved by each deploy and delete: a restore that sees it move stops.
    generation: AtomicU64,
    /// The earlier head's application, with its components' bytes (taken
    /// at the start: the component table may forget them before the
    /// workers are back).
    restored: parking_lot::Mutex<Option<ServeApp>>,
}

impl SavedApp {
    /// The application of `record`, its components found by `component`.
    pub(crate) fn restored(
        record: Option<ServeRecord>,
        component: impl Fn(&ComponentId) -> Option<Bytes>,
    ) -> SavedApp {
        let app = record.and_then(|r| {
            let mut components = BTreeMap::new();
            for (name, id) in r.components {
                let Some(bytes) = component(&id) else {
                    tracing::warn!(
                        "serve: the earlier head's application is not deployed again: \
                         deployment {name:?}'s component {id} is gone from the head's database"
                    );
                    return None;
                };
                components.insert(name, bytes);
            }
            Some(ServeApp {
                text: r.text,
                origin: r.origin,
                components,
                proxy_location: r.proxy_location,
            })
        });
        SavedApp {
            generation: AtomicU64::new(0),
            restored: parking_lot::Mutex::new(app),
        }
    }
}

/// What the serve controller answers, later.
pub type ServeFuture = Pin<Box<dyn Future<Output = Result<ServeStatus, Error>> + Send>>;

/// A serve controller: one application at a time, deployed again as a
/// rolling update.
pub trait ServeControl: Send + Sync + 'static {
    fn deploy(&self, app: ServeApp) -> ServeFuture;
    /// Deploy `app` if no application runs (a restarted head's, again).
    fn restore(&self, app: ServeApp) -> ServeFuture;
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

    /// A deploy or a delete begins: a restore in progress stops. Its
    /// generation.
    fn replacing_serve_app(&self) -> u64 {
        self.serve_app.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Keep `app` in the head's database (none: deleted).
    fn save_serve_app(&self, app: Option<ServeRecord>) {
        let db = self.core.lock().db.clone();
        if let Some(db) = db {
            db.save_serve_app(app);
        }
    }

    /// Deploy again the application the earlier head ran, if it ran one:
    /// tried every few seconds (its replicas wait for the workers to come
    /// back) until it runs, for ten minutes at most, or until a deploy or a
    /// delete replaces it.
    pub async fn restore_serve_app(self) {
        let Some(app) = self.serve_app.restored.lock().take() else {
            return;
        };
        let Ok(control) = self.serve_control() else {
            return;
        };
        let generation = self.serve_app.generation.load(Ordering::SeqCst);
        let until = Instant::now() + RESTORE_FOR;
        loop {
            if self.serve_app.generation.load(Ordering::SeqCst) != generation {
                return;
            }
            match control.restore(app.clone()).await {
                Ok(s) => {
                    tracing::info!(
                        "serve: the earlier head's application runs again, at {}",
                        s.proxy
                    );
                    return;
                }
                Err(e) if Instant::now() < until => {
                    tracing::info!(
                        "serve: the earlier head's application cannot run yet ({e}); \
                         trying again in {RESTORE_EVERY:?}"
                    );
                    tokio::time::sleep(RESTORE_EVERY).await;
                }
                Err(e) => {
                    tracing::error!(
                        "serve: the earlier head's application did not come back ({e}); \
                         deploy it again"
                    );
                    return;
                }
            }
        }
    }

    pub(crate) async fn deploy_app(
        &self,
        app: v1::ServeApp,
    ) -> Result<Response<v1::ServeStatus>, Status> {
        let control = self.serve_control()?;
        let generation = self.replacing_serve_app();
        let mut components = BTreeMap::new();
        let mut ids = BTreeMap::new();
        for (name, id) in app.components {
            let id = <[u8; 32]>::try_from(&id[..])
                .map(ComponentId::from_bytes)
                .map_err(|_| Status::invalid_argument("a component id is not 32 bytes"))?;
            ids.insert(name.clone(), id);
            let bytes = self.core.lock().state.components.get(&id).cloned();
            let bytes = bytes.ok_or_else(|| {
                Status::not_found(format!(
                    "deployment {name:?}: its component {id} was not uploaded to the head"
                ))
            })?;
            components.insert(name, bytes);
        }
        let record = ServeRecord {
            text: app.text.clone(),
            origin: app.origin.clone(),
            components: ids,
            proxy_location: app.proxy_location.clone(),
        };
        let status = control
            .deploy(ServeApp {
                text: app.text,
                origin: app.origin,
                components,
                proxy_location: app.proxy_location,
            })
            .await
            .map_err(|e| to_status(&e))?;
        // Unless a delete or another deploy came meanwhile (that one is
        // what the database keeps).
        if self.serve_app.generation.load(Ordering::SeqCst) == generation {
            self.save_serve_app(Some(record));
        }
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
        self.replacing_serve_app();
        self.save_serve_app(None);
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
        let answer = control.call(deployment, request).await.and_then(|a| {
            // (Not the caller's fault: a failure of the deployment's.)
            ferray_core::http::check_forwarded("the deployment's answer", a.body.len())
                .map_err(|e| Error::System(e.to_string()))?;
            Ok(a)
        });
        Ok(Response::new(ferray_proto::serve_answer_to(answer)))
    }
}
