//! The runtime's side of a cluster: a worker node ([`run_worker`]), a
//! connected client ([`crate::Runtime::connect`]), and [`Client`], the
//! command line's view of a head (jobs, state, objects). The head itself is
//! `ferray-head`.

mod backend;
mod collective;
mod node;
pub(crate) mod session;
mod transfer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
pub use ferray_core::view::{
    ActorInfo, ClusterView, JobEvent, JobInfo, JobState, ListFilter, NodeInfo, ObjectInfo, Span,
    TaskInfo, chrome_trace,
};
use ferray_core::{ComponentId, Error, ObjectId};
use ferray_proto::v1;
use ferray_proto::{HeadClient, id_bytes};
pub use ferray_proto::{PROTOCOL_VERSION, Token, host_port, tls};
use futures::StreamExt;
pub use node::{Joined, WorkerConfig, run_worker};

/// How long a worker or connected client tries to reach a head that went
/// away (Ray's `gcs_rpc_server_reconnect_timeout_s`): a head started again
/// on its database within it takes the session back.
pub const RECONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
pub use transfer::{tcp_loopback_gbps, transfer_gbps};

/// Where this machine keeps a cluster's token, logs and process files:
/// `$FERRAY_HOME`, else `~/.ferray`.
pub fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FERRAY_HOME") {
        return PathBuf::from(d);
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".ferray"),
        None => std::env::temp_dir().join("ferray"),
    }
}

/// The file the head writes its token to (readable only by its owner).
pub fn token_file() -> PathBuf {
    state_dir().join("token")
}

/// Where the head keeps its TLS material (its CA and its node's certificate;
/// the directory 0700, the files 0600): `tls` in [`state_dir`].
pub fn tls_dir() -> PathBuf {
    state_dir().join("tls")
}

/// A client of the head at `address`: when the address is `https://` and
/// this process has no TLS setting yet, it speaks TLS with every node of the
/// cluster (the head, and the holders it pulls objects from), trusting the
/// CA of `$FERRAY_TLS_CA`, else the one the head wrote on this machine. A
/// process talks to one TLS cluster.
pub fn client_tls_for(address: &str) -> Result<(), Error> {
    if !address.starts_with("https://") || ferray_proto::tls::installed().is_some() {
        return Ok(());
    }
    let f = ferray_proto::tls::default_ca_file();
    let ca = std::fs::read_to_string(&f).map_err(|e| {
        Error::InvalidArgument(format!(
            "the head at {address} speaks TLS but there is no CA to check it against ({}: {e}): pass --tls-ca FILE (or set FERRAY_TLS_CA) with the cluster's CA",
            f.display()
        ))
    })?;
    // A concurrent caller may have set the same; either one serves.
    let _ = ferray_proto::tls::install(ferray_proto::tls::Tls {
        ca,
        identity: None,
        everywhere: true,
    });
    Ok(())
}

/// `e`, or, when this process spoke plaintext to a head that speaks TLS,
/// one line that says so.
pub async fn explain_plaintext(address: &str, e: Error) -> Error {
    let tls = address.starts_with("https://")
        || ferray_proto::tls::installed().is_some_and(|t| t.everywhere);
    if tls || matches!(e, Error::InvalidArgument(_)) {
        return e;
    }
    if ferray_proto::tls::speaks_tls(address).await {
        let hp = ferray_proto::host_port(address);
        return Error::InvalidArgument(format!(
            "the head at {hp} speaks TLS and this client spoke plaintext: use --address https://{hp} (and --tls-ca FILE with the cluster's CA off the head's machine)"
        ));
    }
    e
}

/// The cluster token: given, else `$FERRAY_TOKEN`, else the head's token
/// file on this machine.
pub fn find_token(given: Option<&str>) -> Result<Token, Error> {
    if let Some(t) = given {
        return Token::new(t);
    }
    if let Ok(t) = std::env::var("FERRAY_TOKEN") {
        return Token::new(&t);
    }
    let path = token_file();
    match std::fs::read_to_string(&path) {
        Ok(t) => Token::new(&t),
        Err(_) => Err(Error::InvalidArgument(format!(
            "no cluster token: pass --token, set FERRAY_TOKEN, or run on the head's machine (it writes {})",
            path.display()
        ))),
    }
}

/// Join the head at `address` as a client: `rt`'s driver becomes a job of
/// the cluster, its new work and objects go there, and what its tasks print
/// comes back to its output.
pub(crate) async fn connect_client(
    rt: Arc<crate::runtime::RtInner>,
    address: &str,
    token: Token,
    reconnect: Duration,
) -> Result<(), Error> {
    client_tls_for(address)?;
    let hello = v1::Hello {
        protocol: PROTOCOL_VERSION,
        worker: false,
        resources: None,
        object_address: String::new(),
        name: format!("pid {}", std::process::id()),
        resume: 0,
        down_seen: 0,
        in_head: false,
        ..Default::default()
    };
    let (session, mut down) =
        match session::Session::open(address, token, hello, rt.store.clone(), reconnect).await {
            Ok(s) => s,
            Err(e) => return Err(explain_plaintext(address, e).await),
        };
    rt.attach(Arc::new(backend::Remote(session.clone())), false)?;
    tokio::spawn(async move {
        let why = loop {
            match session.recv(&mut down).await {
                Ok(v1::Down {
                    msg: Some(v1::down::Msg::Resolved(r)),
                    ..
                }) => session.resolved(r),
                Ok(v1::Down {
                    msg: Some(v1::down::Msg::Output(o)),
                    ..
                }) => rt.emit_output(&o.source, &o.stdout, &o.stderr),
                Ok(v1::Down {
                    msg: Some(v1::down::Msg::ActorAt(a)),
                    ..
                }) => session.actor_at(a),
                Ok(_) => {}
                Err(why) => break why,
            }
        };
        // Pending results fail with the reason; a process that is exiting
        // (its runtime dropped) needs no warning.
        tracing::debug!("{why}");
        session.lose(why);
    });
    Ok(())
}

/// A connection to a head for the command line: jobs, the cluster's state,
/// objects.
#[derive(Clone, Debug)]
pub struct Client {
    address: String,
    token: Token,
    head: HeadClient,
}

/// Calls that fail as the system's fault (a peer unreachable, a call or
/// its answer lost) are tried this many times in all (over about 3 s).
const CALL_TRIES: u32 = 8;

/// `call`, tried again with backoff (20 ms, doubling, at most 1 s) while it
/// fails as the system's fault, up to [`CALL_TRIES`] times; other errors
/// (refused, not found, invalid, corrupt) are answers and come back at
/// once. Every call it wraps is idempotent: a read, an upload or push by
/// content id, or a job submission with its own key.
pub(crate) async fn retry<T, F, Fut>(what: &str, mut call: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let mut backoff = Duration::from_millis(20);
    let mut tries = 1;
    loop {
        match call().await {
            Err(Error::System(e)) if tries < CALL_TRIES => {
                tracing::debug!("{what}: {e}; trying again in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                tries += 1;
            }
            other => return other,
        }
    }
}

/// How following a job stopped without its end.
enum Watch {
    /// The head went away (it may come back).
    Lost(Error),
    /// The head answered with an error.
    Failed(Error),
}

impl Watch {
    fn into_error(self) -> Error {
        match self {
            Watch::Lost(e) | Watch::Failed(e) => e,
        }
    }
}

fn status(what: &str) -> impl FnOnce(tonic::Status) -> Error + '_ {
    move |s| ferray_proto::from_status(what, s)
}

impl Client {
    /// Connect to the head at `address` (an unreachable one is an error
    /// within seconds).
    pub async fn connect(address: &str, token: Token) -> Result<Client, Error> {
        client_tls_for(address)?;
        match Self::connect_now(address, token).await {
            Ok(c) => Ok(c),
            Err(e) => Err(explain_plaintext(address, e).await),
        }
    }

    async fn connect_now(address: &str, token: Token) -> Result<Client, Error> {
        let ch = ferray_proto::connect(address).await?;
        let head = ferray_proto::head_client(ch, &token);
        let mut c = Client {
            address: address.to_string(),
            token,
            head,
        };
        // One call now, so that refused credentials show at once.
        c.state("").await?;
        Ok(c)
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Upload a component (content addressed: once per head).
    pub async fn upload(&mut self, bytes: Bytes) -> Result<ComponentId, Error> {
        let id = ObjectId::of(&bytes);
        retry("uploading the component", || {
            let mut head = self.head.clone();
            let bytes = bytes.clone();
            async move {
                head.upload_component(ferray_proto::chunks(id, bytes))
                    .await
                    .map_err(status("uploading the component"))
            }
        })
        .await?;
        Ok(ComponentId::from_bytes(*id.as_bytes()))
    }

    /// Deploy a serve application on the cluster (`ferray serve deploy`):
    /// each deployment's component is uploaded, then the head's serve
    /// controller starts the application, or rolls the running one over
    /// to it. `components` are the deployments' bytes by name.
    /// `proxy_location`, when given, stands over the file's.
    pub async fn serve_deploy(
        &mut self,
        text: String,
        origin: String,
        components: Vec<(String, Bytes)>,
        proxy_location: Option<String>,
    ) -> Result<ferray_core::view::ServeStatus, Error> {
        let mut ids = std::collections::HashMap::new();
        for (name, bytes) in components {
            let id = self.upload(bytes).await?;
            ids.insert(name, Bytes::copy_from_slice(id.as_bytes()));
        }
        let s = self
            .head
            .clone()
            .serve_deploy(v1::ServeApp {
                text,
                origin,
                components: ids,
                proxy_location: proxy_location.unwrap_or_default(),
            })
            .await
            .map_err(status("deploying the application"))?;
        Ok(ferray_proto::serve_status_from(s.into_inner()))
    }

    /// The cluster's serve application (`ferray serve status`).
    pub async fn serve_status(&mut self) -> Result<ferray_core::view::ServeStatus, Error> {
        let s = self
            .head
            .clone()
            .serve_status(v1::ServeKey {})
            .await
            .map_err(status("asking for the application's status"))?;
        Ok(ferray_proto::serve_status_from(s.into_inner()))
    }

    /// A request to a deployment of the cluster's serve application, as a
    /// node's proxy hands it over.
    pub async fn serve_call(
        &mut self,
        deployment: String,
        request: crate::HttpRequest,
    ) -> Result<crate::HttpResponse, Error> {
        ferray_core::http::check_forwarded("the request", request.body.len())?;
        let a = self
            .head
            .clone()
            .serve_call(ferray_proto::serve_call_to(deployment, request))
            .await
            .map_err(status("calling the deployment"))?;
        ferray_proto::serve_answer_from(a.into_inner())
    }

    /// Stop the cluster's serve application (`ferray serve delete`): what it
    /// was, before it stopped.
    pub async fn serve_delete(&mut self) -> Result<ferray_core::view::ServeStatus, Error> {
        let s = self
            .head
            .clone()
            .serve_delete(v1::ServeKey {})
            .await
            .map_err(status("deleting the application"))?;
        Ok(ferray_proto::serve_status_from(s.into_inner()))
    }

    /// Run `function` of an uploaded component as a job's driver.
    /// `entrypoint` is what the driver holds while it runs.
    pub async fn submit_job(
        &mut self,
        component: ComponentId,
        function: &str,
        args: Vec<String>,
        entrypoint: &ferray_core::Resources,
    ) -> Result<JobInfo, Error> {
        // Sent again after a lost answer, the same key gets the same job.
        let key = ferray_proto::random_key();
        let req = v1::JobRequest {
            component: Bytes::copy_from_slice(component.as_bytes()),
            function: function.to_string(),
            args,
            name: String::new(),
            entrypoint: Some(ferray_proto::resources_to(entrypoint)),
            key,
        };
        let info = retry("submitting the job", || {
            let mut head = self.head.clone();
            let req = req.clone();
            async move {
                head.submit_job(req)
                    .await
                    .map_err(status("submitting the job"))
            }
        })
        .await?
        .into_inner();
        ferray_proto::job_info_from(info)
    }

    /// Follow a job: `on_event` sees its log lines, progress and end.
    /// With `follow`, until the job ends; else what there is now.
    pub async fn watch_job(
        &mut self,
        job: u64,
        follow: bool,
        mut on_event: impl FnMut(JobEvent),
    ) -> Result<JobInfo, Error> {
        self.watch_from(job, follow, 0, &mut on_event)
            .await
            .map_err(Watch::into_error)
    }

    /// Follow a job to its end, as [`Client::watch_job`], through losses of
    /// the head: for up to `reconnect` after a loss, connect again with
    /// backoff (a head started again on its database still has the job)
    /// and go on from the log line where it was. A head that crashed may
    /// have lost the last lines it had (it saves them once a second): the
    /// lines shown last are asked for again and compared, and where the
    /// head's differ, its lines from there on are shown, so no line is
    /// shown twice and none of the new ones is skipped. `on_lost` hears each
    /// loss.
    pub async fn follow_job(
        &mut self,
        job: u64,
        reconnect: Duration,
        mut on_lost: impl FnMut(&Error),
        mut on_event: impl FnMut(JobEvent),
    ) -> Result<JobInfo, Error> {
        let mut shown = ShownLines::default();
        loop {
            let from = shown.resume_from();
            let mut count = |e: JobEvent| match &e {
                JobEvent::Log(line) if !shown.is_new(line) => {}
                _ => on_event(e),
            };
            let lost = match self.watch_from(job, true, from, &mut count).await {
                Ok(info) => return Ok(info),
                Err(Watch::Failed(e)) => return Err(e),
                Err(Watch::Lost(e)) => e,
            };
            if reconnect.is_zero() {
                return Err(lost);
            }
            on_lost(&lost);
            let since = std::time::Instant::now();
            let mut backoff = Duration::from_millis(250);
            loop {
                if since.elapsed() >= reconnect {
                    return Err(Error::System(format!(
                        "{lost}; gave up connecting again after {reconnect:?}"
                    )));
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                if let Ok(c) = Self::connect_now(&self.address, self.token.clone()).await {
                    *self = c;
                    break;
                }
            }
        }
    }

    async fn watch_from(
        &mut self,
        job: u64,
        follow: bool,
        from_line: u64,
        on_event: &mut impl FnMut(JobEvent),
    ) -> Result<JobInfo, Watch> {
        let lost = |why: String| {
            Watch::Lost(Error::System(format!(
                "lost the head at {} while following job-{job}{why}",
                self.address
            )))
        };
        let mut stream = match self
            .head
            .watch_job(v1::JobKey {
                job,
                follow,
                from_line,
            })
            .await
        {
            Ok(s) => s.into_inner(),
            Err(s) if s.code() == tonic::Code::Unavailable => {
                return Err(lost(format!(": {}", s.message())));
            }
            Err(s) => return Err(Watch::Failed(status("watching the job")(s))),
        };
        loop {
            match stream.next().await {
                Some(Ok(e)) => match ferray_proto::job_event_from(e).map_err(Watch::Failed)? {
                    Some(JobEvent::Finished(info)) => return Ok(info),
                    Some(e) => on_event(e),
                    None => {}
                },
                Some(Err(s)) => return Err(lost(format!(": {}", s.message()))),
                None => return Err(lost(String::new())),
            }
        }
    }

    pub async fn stop_job(&mut self, job: u64) -> Result<JobInfo, Error> {
        let info = retry("stopping the job", || {
            let mut head = self.head.clone();
            async move {
                head.stop_job(v1::JobKey {
                    job,
                    follow: false,
                    from_line: 0,
                })
                .await
                .map_err(status("stopping the job"))
            }
        })
        .await?
        .into_inner();
        ferray_proto::job_info_from(info)
    }

    /// The cluster's state: `what` is nodes, tasks, actors, objects, jobs,
    /// or empty for a summary (with the jobs). Every page joined: see
    /// [`Client::state_pages`].
    pub async fn state(&mut self, what: &str) -> Result<ClusterView, Error> {
        let mut all = ClusterView::default();
        self.state_pages(what, |page| {
            if all.head_version.is_empty() {
                all.head_version = page.head_version;
                all.task_states = page.task_states;
            }
            all.nodes.extend(page.nodes);
            all.tasks.extend(page.tasks);
            all.actors.extend(page.actors);
            all.objects.extend(page.objects);
            all.jobs.extend(page.jobs);
        })
        .await?;
        Ok(all)
    }

    /// The cluster's state a page at a time, in id order, as the head
    /// sends it (up to 1,000 entries a page): `each` sees every page,
    /// the first with the summary (the live nodes unless listing nodes,
    /// the tasks by state). Long text in lists (a job's result) is cut;
    /// [`Client::watch_job`] gives a job's whole result.
    pub async fn state_pages(
        &mut self,
        what: &str,
        each: impl FnMut(ClusterView),
    ) -> Result<(), Error> {
        self.state_pages_where(what, &ListFilter::default(), each)
            .await
    }

    /// [`Client::state_pages`] of what `filter` keeps: a job's tasks,
    /// actors or spans (`spans`: its attempts, for its timeline), tasks in
    /// a state or of a function.
    pub async fn state_pages_where(
        &mut self,
        what: &str,
        filter: &ListFilter,
        mut each: impl FnMut(ClusterView),
    ) -> Result<(), Error> {
        // Tests make pages small with FERRAY_TESTING_PAGE_SIZE=N (the
        // `testing` feature only); else the head's cap.
        #[cfg(feature = "testing")]
        let limit = std::env::var("FERRAY_TESTING_PAGE_SIZE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        #[cfg(not(feature = "testing"))]
        let limit = 0;
        let mut after = String::new();
        loop {
            let req = v1::ClusterRequest {
                what: what.to_string(),
                limit,
                after: std::mem::take(&mut after),
                job: filter.job.map_or(0, |j| j.0),
                state: filter.state.clone().unwrap_or_default(),
                function: filter.function.clone().unwrap_or_default(),
            };
            let page = retry("reading the cluster's state", || {
                let mut head = self.head.clone();
                let req = req.clone();
                let address = &self.address;
                async move {
                    match tokio::time::timeout(Duration::from_secs(10), head.cluster(req)).await {
                        Ok(r) => Ok(r.map_err(status("the head"))?.into_inner()),
                        Err(_) => Err(Error::System(format!(
                            "the head at {address} did not answer within 10s"
                        ))),
                    }
                }
            })
            .await?;
            let (view, next) = ferray_proto::cluster_view_from(page)?;
            each(view);
            match next {
                Some(n) => after = n,
                None => return Ok(()),
            }
        }
    }

    /// Store bytes in the cluster (kept until the head stops).
    pub async fn put(&mut self, bytes: Bytes) -> Result<ObjectId, Error> {
        let id = ObjectId::of(&bytes);
        session::push(&self.address, &self.token, id, bytes, true).await?;
        Ok(id)
    }

    /// An object's bytes, pulled from a holder and checked against the id.
    pub async fn get(&mut self, id: ObjectId) -> Result<Bytes, Error> {
        let loc = retry("locating the object", || {
            let mut head = self.head.clone();
            async move {
                head.locate(v1::ObjectKey { id: id_bytes(&id) })
                    .await
                    .map_err(status("locating the object"))
            }
        })
        .await?
        .into_inner();
        if let Some(b) = loc.inline {
            if !id.matches(&b) {
                return Err(Error::Corrupt { id: id.to_hex() });
            }
            return Ok(b);
        }
        let mut last = Error::ObjectLost(format!("object {} has no holder", id.short()));
        for addr in loc.holders {
            let pulled = retry("pulling the object", || async {
                let ch = ferray_proto::connect(&addr).await?;
                let mut c = ferray_proto::objects_client(ch, &self.token);
                ferray_proto::pull(&mut c, &addr, id).await
            });
            match pulled.await {
                Ok(b) => return Ok(b),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// The log lines a follower showed: how many in all, the last of them, and
/// where the head's stream stands against them after a resume.
#[derive(Default)]
struct ShownLines {
    /// Lines shown: the head's index of the next one.
    count: u64,
    /// The last lines shown (at most [`ShownLines::KEEP`]).
    last: std::collections::VecDeque<String>,
    /// The head's index of the next line its stream sends.
    at: u64,
}

impl ShownLines {
    const KEEP: usize = 1024;

    /// Where a resumed stream starts: at the last lines shown, to compare.
    fn resume_from(&mut self) -> u64 {
        self.at = self.count - self.last.len() as u64;
        self.at
    }

    /// Whether the stream's next line is new (to show), recording it.
    fn is_new(&mut self, line: &str) -> bool {
        let index = self.at;
        self.at += 1;
        if index < self.count {
            let k = (index - (self.count - self.last.len() as u64)) as usize;
            if self.last.get(k).is_some_and(|l| l == line) {
                return false;
            }
            // The head lost the lines from here on: its own follow.
            self.last.truncate(k);
            self.count = index;
        }
        self.count += 1;
        self.last.push_back(line.to_string());
        if self.last.len() > Self::KEEP {
            self.last.pop_front();
        }
        true
    }
}

#[cfg(test)]
mod follow_tests {
    use super::ShownLines;

    fn shown(stream: &[&str], lines: &mut ShownLines) -> Vec<String> {
        stream
            .iter()
            .filter(|l| lines.is_new(l))
            .map(|l| l.to_string())
            .collect()
    }

    /// A resumed stream's lines that were shown already are not shown
    /// again; where a restarted head lost lines, its new ones are shown and
    /// its numbering is followed from there.
    #[test]
    fn a_resumed_follow_shows_each_new_line_once() {
        let mut lines = ShownLines::default();
        assert_eq!(lines.resume_from(), 0);
        assert_eq!(
            shown(&["a", "b", "c", "d"], &mut lines),
            ["a", "b", "c", "d"]
        );
        // The same head again: from the kept lines, only the new one shows.
        assert_eq!(lines.resume_from(), 0);
        assert_eq!(shown(&["a", "b", "c", "d", "e"], &mut lines), ["e"]);
        // A head that lost `d` and `e`: its `x` is new, and so is what follows.
        assert_eq!(lines.resume_from(), 0);
        assert_eq!(shown(&["a", "b", "c", "x", "y"], &mut lines), ["x", "y"]);
        assert_eq!(lines.count, 5);
        // Past what is kept, a resume starts at the oldest line kept.
        let mut lines = ShownLines::default();
        let many: Vec<String> = (0..ShownLines::KEEP + 10).map(|i| i.to_string()).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(shown(&refs, &mut lines).len(), many.len());
        assert_eq!(lines.resume_from(), 10);
        assert_eq!(shown(&refs[10..], &mut lines), Vec::<String>::new());
    }
}
