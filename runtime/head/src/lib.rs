//! ferray's head: the control plane of a cluster. It keeps the node,
//! component, object, task, actor and job tables, runs the central scheduler
//! ([`sched`]), and serves the `Head` gRPC service plus an `Objects` service
//! for its own store (clients' large puts). It never runs guest code: this
//! crate does not depend on wasmtime.

pub mod sched;
mod state;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferray_core::{ActorId, ComponentId, Error, JobId, TaskId};
use ferray_proto::v1::{self, up};
use ferray_proto::{MAX_OBJECT_BYTES, PROTOCOL_VERSION, Token, chunks, id_bytes, to_status};
use ferray_store::ObjectStore;
use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

pub use sched::{Placement, Scheduler};
use state::State;

/// Messages of a batch handled under one hold of the lock.
const HANDLE_SLICE: usize = 64;

/// How the head runs.
#[derive(Debug, Clone)]
pub struct HeadConfig {
    pub token: Token,
    /// A worker silent for this long is declared dead (default 5 s).
    pub node_timeout: Duration,
    /// The head's own store (clients' large puts).
    pub store: ferray_store::StoreConfig,
}

/// The head's shared state and services.
#[derive(Clone)]
pub struct Head {
    state: Arc<Mutex<State>>,
    store: Arc<ObjectStore>,
    config: Arc<HeadConfig>,
}

impl Head {
    /// A head whose object server is reachable at `address`.
    pub fn new(config: HeadConfig, address: String) -> Result<Head, Error> {
        let store = Arc::new(ObjectStore::new(config.store.clone())?);
        let mut state = State::new(address);
        state.head_store = Some(store.clone());
        Ok(Head {
            state: Arc::new(Mutex::new(state)),
            store,
            config: Arc::new(config),
        })
    }

    /// Serve the head's services on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let monitor = {
            let head = self.clone();
            tokio::spawn(async move {
                let every = (head.config.node_timeout / 5).max(Duration::from_millis(50));
                loop {
                    tokio::time::sleep(every).await;
                    head.state.lock().check_heartbeats(head.config.node_timeout);
                }
            })
        };
        let token = self.config.token.clone();
        let objects = HeadObjects(self.clone());
        let incoming = ferray_proto::incoming(listener);
        let out = ferray_proto::server()
            .http2_keepalive_interval(Some(Duration::from_secs(2)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            .add_service(ferray_proto::head_server(self, &token))
            .add_service(ferray_proto::objects_server(objects.clone(), &token))
            .add_service(ferray_proto::uploads_server(objects, &token))
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .map_err(|e| Error::System(format!("the head's server failed: {e}")));
        monitor.abort();
        out
    }

    fn handle(&self, session: u64, msgs: Vec<v1::Up>) {
        let mut st = self.state.lock();
        st.touch(session);
        for m in msgs {
            if let Some(m) = m.msg {
                Self::handle_one(&mut st, session, m);
            }
        }
        // Once per batch: what the messages freed or added is placed now.
        st.pump();
    }

    fn handle_one(st: &mut State, session: u64, msg: up::Msg) {
        match msg {
            up::Msg::Hello(_) => {}
            up::Msg::Heartbeat(_) => {}
            up::Msg::Submit(s) => st.submit(session, s),
            up::Msg::CreateActor(c) => st.create_actor(session, c),
            up::Msg::CallActor(c) => st.call_actor(session, c),
            up::Msg::KillActor(k) => {
                let _ = st.kill_actor(ActorId(k.actor), "by its owner");
            }
            up::Msg::Cancel(c) => st.cancel(TaskId(c.task)),
            up::Msg::Put(p) => {
                if let Err(e) = st.put(session, p) {
                    tracing::warn!("session {session}: a put was refused: {e}");
                }
            }
            up::Msg::Blocked(b) => st.blocked(session, b),
            up::Msg::Started(s) => st.started(session, s),
            up::Msg::Done(d) => st.done(session, d),
            up::Msg::Located(l) => {
                if let Ok(id) = ferray_proto::object_id(&l.id) {
                    st.located(session, id);
                }
            }
            up::Msg::ActorDied(d) => st.actor_died_on_node(session, d),
        }
    }

    /// The scheduler's view, for tests and `ferray status`.
    pub fn cluster_state(&self, what: &str) -> v1::ClusterState {
        self.state.lock().cluster_state(what)
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn job_key(k: &v1::JobKey) -> JobId {
    JobId(k.job)
}

#[tonic::async_trait]
impl v1::head_server::Head for Head {
    type SessionStream = BoxStream<v1::DownBatch>;

    async fn session(
        &self,
        req: Request<Streaming<v1::UpBatch>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello within 10s"))??;
        let mut first = first.map(|b| b.msgs).unwrap_or_default();
        let hello = match first.first_mut().and_then(|m| m.msg.take()) {
            Some(up::Msg::Hello(h)) => h,
            _ => return Err(Status::invalid_argument("a session starts with a hello")),
        };
        first.remove(0);
        if hello.protocol != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "protocol version {} does not match the head's {PROTOCOL_VERSION}: run the same ferray release on every node",
                hello.protocol
            )));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let welcome = self
            .state
            .lock()
            .open_session(tx.clone(), &hello)
            .map_err(|e| to_status(&e))?;
        let session = welcome.session;
        let _ = tx.send(v1::Down {
            msg: Some(v1::down::Msg::Welcome(v1::Welcome {
                session,
                node: welcome.node.map_or(0, |n| n.0),
                id_base: session << 32,
                job: welcome.job.map_or(0, |j| j.0),
            })),
        });
        drop(tx);
        // Queued work may go to the new node now that it is welcomed.
        self.state.lock().pump();
        let head = self.clone();
        if !first.is_empty() {
            head.handle(session, first);
        }
        tokio::spawn(async move {
            let why = loop {
                match inbound.message().await {
                    Ok(Some(batch)) => {
                        // In slices, so that other sessions (and this
                        // runtime's other tasks) get the lock in between.
                        let mut msgs = batch.msgs;
                        while msgs.len() > HANDLE_SLICE {
                            let rest = msgs.split_off(HANDLE_SLICE);
                            head.handle(session, msgs);
                            msgs = rest;
                            tokio::task::yield_now().await;
                        }
                        head.handle(session, msgs);
                    }
                    Ok(None) => break "its session ended".to_string(),
                    Err(e) => break format!("its connection broke: {}", e.message()),
                }
            };
            head.state.lock().close_session(session, &why);
        });
        Ok(Response::new(Box::pin(
            ferray_proto::batched(rx).map(|msgs| Ok(v1::DownBatch { msgs })),
        )))
    }

    async fn upload_component(
        &self,
        req: Request<Streaming<v1::Chunk>>,
    ) -> Result<Response<v1::ObjectKey>, Status> {
        let (id, bytes) = ferray_proto::assemble(req.into_inner(), None, MAX_OBJECT_BYTES)
            .await
            .map_err(|e| to_status(&e))?;
        let cid = ComponentId::from_bytes(*id.as_bytes());
        self.state.lock().components.insert(cid, bytes);
        tracing::info!("component {} uploaded", cid.short());
        Ok(Response::new(v1::ObjectKey { id: id_bytes(&id) }))
    }

    type FetchComponentStream = BoxStream<v1::Chunk>;

    async fn fetch_component(
        &self,
        req: Request<v1::ObjectKey>,
    ) -> Result<Response<Self::FetchComponentStream>, Status> {
        let id = ferray_proto::object_id(&req.get_ref().id).map_err(|e| to_status(&e))?;
        let cid = ComponentId::from_bytes(*id.as_bytes());
        let bytes: Bytes = self
            .state
            .lock()
            .components
            .get(&cid)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("component {} is not here", cid.short())))?;
        Ok(Response::new(Box::pin(chunks(id, bytes).map(Ok))))
    }

    async fn locate(&self, req: Request<v1::ObjectKey>) -> Result<Response<v1::ObjectLoc>, Status> {
        let id = ferray_proto::object_id(&req.get_ref().id).map_err(|e| to_status(&e))?;
        // Wait while it is being made, pushed or rebuilt.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match self.state.lock().locate(id) {
                Ok(Some(loc)) => return Ok(Response::new(loc)),
                Ok(None) => {}
                Err(e) => return Err(to_status(&e)),
            }
            if Instant::now() > deadline {
                return Err(Status::deadline_exceeded(format!(
                    "object {} was not rebuilt within 120s",
                    id.short()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn submit_job(
        &self,
        req: Request<v1::JobRequest>,
    ) -> Result<Response<v1::JobInfo>, Status> {
        let mut st = self.state.lock();
        let job = st.submit_job(req.into_inner()).map_err(|e| to_status(&e))?;
        let info = st
            .job_info(job)
            .ok_or_else(|| Status::internal("the job vanished"))?;
        Ok(Response::new(info))
    }

    type WatchJobStream = BoxStream<v1::JobEvent>;

    async fn watch_job(
        &self,
        req: Request<v1::JobKey>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let job = job_key(req.get_ref());
        let follow = req.get_ref().follow;
        if self.state.lock().job_info(job).is_none() {
            return Err(Status::not_found(format!("no {job}")));
        }
        let (tx, rx) = mpsc::channel(64);
        let head = self.clone();
        tokio::spawn(async move {
            use v1::job_event::Event;
            let mut cursor = 0u64;
            let mut last = (u64::MAX, u64::MAX);
            loop {
                let (lines, next, info) = {
                    let st = head.state.lock();
                    let (lines, next) = st.job_logs(job, cursor);
                    (lines, next, st.job_info(job))
                };
                cursor = next;
                for l in lines {
                    if tx
                        .send(Ok(v1::JobEvent {
                            event: Some(Event::Log(l)),
                        }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                let Some(info) = info else { return };
                if (info.tasks_done, info.tasks_total) != last {
                    last = (info.tasks_done, info.tasks_total);
                    let p = v1::Progress {
                        done: last.0,
                        total: last.1,
                    };
                    if tx
                        .send(Ok(v1::JobEvent {
                            event: Some(Event::Progress(p)),
                        }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                if !follow || matches!(info.state.as_str(), "SUCCEEDED" | "FAILED" | "STOPPED") {
                    let _ = tx
                        .send(Ok(v1::JobEvent {
                            event: Some(Event::Finished(info)),
                        }))
                        .await;
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn stop_job(&self, req: Request<v1::JobKey>) -> Result<Response<v1::JobInfo>, Status> {
        let job = job_key(req.get_ref());
        let mut st = self.state.lock();
        st.stop_job(job).map_err(|e| to_status(&e))?;
        let info = st
            .job_info(job)
            .ok_or_else(|| Status::not_found(format!("no {job}")))?;
        Ok(Response::new(info))
    }

    async fn cluster(
        &self,
        req: Request<v1::ClusterRequest>,
    ) -> Result<Response<v1::ClusterState>, Status> {
        Ok(Response::new(self.cluster_state(&req.get_ref().what)))
    }
}

/// The head's own store, served to pullers; clients' large puts arrive in
/// it through `Uploads`.
#[derive(Clone)]
struct HeadObjects(Head);

impl ferray_proto::ObjectSource for HeadObjects {
    fn object(&self, id: &ferray_core::ObjectId) -> Result<Bytes, Error> {
        self.0.store.get(id)
    }
}

#[tonic::async_trait]
impl v1::uploads_server::Uploads for HeadObjects {
    async fn push(
        &self,
        req: Request<Streaming<v1::Chunk>>,
    ) -> Result<Response<v1::ObjectKey>, Status> {
        let (id, bytes) = ferray_proto::assemble(req.into_inner(), None, MAX_OBJECT_BYTES)
            .await
            .map_err(|e| to_status(&e))?;
        let size = bytes.len() as u64;
        let held = self.0.store.contains(&id);
        if !held {
            self.0
                .store
                .put_with_id(id, bytes)
                .map_err(|e| to_status(&e))?;
        }
        self.0.state.lock().pushed(id, size, false);
        Ok(Response::new(v1::ObjectKey { id: id_bytes(&id) }))
    }
}

/// The address to print for a listener bound to `addr` (a wildcard becomes
/// loopback).
pub fn advertised(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    }
}
