//! The cluster commands: `start`, `stop`, `submit`, `job`, `status`,
//! `list`, `put`, `get`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferray::OutputMode;
use ferray::cluster::{
    Client, ClusterView, JobEvent, JobInfo, JobState, Token, WorkerConfig, find_token, state_dir,
    token_file,
};
use ferray::{NodeId, Resources};

use crate::args::{self, EntrypointArgs, NodeArgs};
use crate::progress;

/// `ferray start`.
#[derive(clap::Args, Debug)]
pub struct StartArgs {
    /// Start a head: the control plane, and a worker unless --no-worker.
    #[arg(long, conflicts_with = "address")]
    head: bool,
    /// Join the cluster whose head is at HOST:PORT as a worker.
    #[arg(long, value_name = "HOST:PORT")]
    address: Option<String>,
    /// The head's port (0: any free port).
    #[arg(long, default_value_t = 6380)]
    port: u16,
    /// The address this node listens on and announces.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub(crate) node_ip_address: std::net::IpAddr,
    #[command(flatten)]
    node: NodeArgs,
    /// The cluster token (default: FERRAY_TOKEN, else the head's token file;
    /// a head without one makes one).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// A head: declare a worker dead after this long without a heartbeat.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = args::duration)]
    node_timeout: Duration,
    /// A head: do not run a worker in the head's process.
    #[arg(long)]
    no_worker: bool,
    /// A head: the database that keeps jobs, components, `ferray put`
    /// objects and id counters, so that a head started again on it (after
    /// a crash) takes them back (default: $FERRAY_HOME/head.redb).
    #[arg(long, value_name = "FILE", conflicts_with = "address")]
    state_db: Option<PathBuf>,
    /// A worker that loses the head (it died, the network was cut, or it
    /// declared this node dead) joins it again as a new node, trying for
    /// this long before it gives up (0s: exit at once).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = args::duration)]
    reconnect_timeout: Duration,
    /// A head: the port of its HTTP edge, `/metrics` and the jobs API
    /// (0: any free port). Without it, 8265 (Ray's), and when that is
    /// taken the head starts without one and says so.
    #[arg(long, value_name = "PORT", conflicts_with = "address")]
    dashboard_port: Option<u16>,
    /// A head: the address the dashboard port listens on.
    #[arg(
        long,
        value_name = "IP",
        default_value = "127.0.0.1",
        conflicts_with = "address"
    )]
    dashboard_host: std::net::IpAddr,
    /// Serve this node's own `/metrics` (the node's view) on this port of
    /// --node-ip-address (0: any free port), behind the cluster token.
    #[arg(long, value_name = "PORT")]
    metrics_export_port: Option<u16>,
    /// Stay in the foreground until interrupted.
    #[arg(long)]
    block: bool,
    #[command(flatten)]
    pub(crate) tls: TlsArgs,
}

/// TLS of a node: on whenever it listens on an address other than
/// loopback (plaintext there only with --insecure), or with --tls.
#[derive(clap::Args, Debug)]
pub struct TlsArgs {
    /// Speak TLS even on a loopback address (a head makes a CA and a
    /// certificate in $FERRAY_HOME/tls unless given --tls-cert).
    #[arg(long)]
    pub(crate) tls: bool,
    /// Plaintext on an address other than loopback (a trusted network only).
    #[arg(long, conflicts_with_all = ["tls", "tls_cert", "tls_ca"])]
    pub(crate) insecure: bool,
    /// This node's certificate (PEM, signed by the cluster's CA; with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// The cluster's CA (PEM) that peers' certificates are checked against
    /// (default: $FERRAY_HOME/tls/ca.pem, which the head writes).
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_ca: Option<PathBuf>,
}

/// Address and credentials of cluster commands.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
    /// The head, HOST:PORT (default: the head started on this machine).
    #[arg(long, value_name = "HOST:PORT")]
    address: Option<String>,
    /// The cluster token (default: FERRAY_TOKEN, else the head's token file).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// The cluster's CA (PEM): speak TLS and check the nodes against it
    /// (default for an https:// address: $FERRAY_HOME/tls/ca.pem).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
}

impl ConnectArgs {
    fn address(&self) -> Result<String> {
        if let Some(a) = &self.address {
            return Ok(a.clone());
        }
        if let Ok(a) = std::env::var("FERRAY_ADDRESS") {
            return Ok(a);
        }
        let f = state_dir().join("head-address");
        std::fs::read_to_string(&f)
            .map(|s| s.trim().to_string())
            .map_err(|_| {
                anyhow::anyhow!(
                    "no --address given and no head started on this machine (no {})",
                    f.display()
                )
            })
    }

    fn token(&self) -> Result<Token> {
        Ok(find_token(self.token.as_deref())?)
    }

    pub(crate) async fn client(&self) -> Result<Client> {
        let addr = self.address()?;
        let token = self.token()?;
        if let Some(f) = &self.tls_ca {
            crate::tls::install_tls(read_text(f, "the CA")?, None)?;
        }
        Client::connect(&addr, token)
            .await
            .with_context(|| format!("cannot use the cluster at {addr}"))
    }
}

#[derive(clap::Args, Debug)]
pub struct SubmitArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Print the job id and return at once.
    #[arg(long)]
    no_wait: bool,
    #[command(flatten)]
    follow: FollowArgs,
    #[command(flatten)]
    entrypoint: EntrypointArgs,
    /// The component (.wasm).
    component: PathBuf,
    /// The exported function to run as the job's driver.
    function: String,
    /// Arguments in WAVE text, typed by the function's signature.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// How a command that follows a job rides out a lost head.
#[derive(clap::Args, Debug)]
pub struct FollowArgs {
    /// While following the job, a lost head is connected to again for this
    /// long (a head started again keeps its jobs); 0s: fail at once.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = args::duration)]
    reconnect_timeout: Duration,
}

impl FollowArgs {
    /// Follow `job` on `c` to its end through losses of the head, each one
    /// said on stderr.
    async fn follow(
        &self,
        c: &mut Client,
        job: u64,
        on_event: impl FnMut(JobEvent),
    ) -> Result<JobInfo> {
        let reconnect = self.reconnect_timeout;
        Ok(c.follow_job(
            job,
            reconnect,
            |lost| eprintln!("ferray: {lost}; connecting again for up to {reconnect:?}"),
            on_event,
        )
        .await?)
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum JobCommand {
    /// Every job: id, state, progress, entrypoint.
    List(ConnectArgs),
    /// One job's state, progress and result.
    Status(JobArgs),
    /// One job's log lines.
    Logs(JobLogsArgs),
    /// Stop a job: its tasks are cancelled, its actors killed.
    Stop(JobArgs),
}

#[derive(clap::Args, Debug)]
pub struct JobArgs {
    /// The job's id (`job-3` or `3`).
    job: String,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(clap::Args, Debug)]
pub struct JobLogsArgs {
    /// The job's id (`job-3` or `3`).
    job: String,
    /// Keep following until the job ends.
    #[arg(long, short)]
    follow: bool,
    #[command(flatten)]
    reconnect: FollowArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// nodes, tasks, actors, objects or jobs.
    #[arg(value_parser = ["nodes", "tasks", "actors", "objects", "jobs"])]
    what: String,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(clap::Args, Debug)]
pub struct PutArgs {
    /// The file whose bytes become the object.
    file: PathBuf,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// The object's id (64 hex digits).
    object: String,
    /// Write the bytes here (default: standard output).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    connect: ConnectArgs,
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub(crate) fn job_id(s: &str) -> Result<u64> {
    s.trim_start_matches("job-")
        .parse()
        .map_err(|_| anyhow::anyhow!("`{s}` is not a job id (like job-3)"))
}

// ----- start and stop -----

fn nodes_dir() -> PathBuf {
    state_dir().join("nodes")
}

pub(crate) fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    Ok(())
}

/// Write a file only its owner can read.
pub(crate) fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(d) = path.parent() {
        private_dir(d)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub(crate) fn read_text(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} from {}", path.display()))
}

/// A worker's own `/metrics` (`--metrics-export-port`): the node's view,
/// read from its runtime at each scrape, behind the cluster token, TLS when
/// the node speaks it. Its URL, and the server (aborted when dropped).
fn node_metrics_server(
    args: &StartArgs,
    rt: &ferray::Runtime,
    token: &Token,
) -> Result<Option<(String, AbortOnDrop)>> {
    let Some(port) = args.metrics_export_port else {
        return Ok(None);
    };
    let bind = SocketAddr::new(args.node_ip_address, port);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(bind))
        .with_context(|| format!("cannot listen on {bind} (--metrics-export-port)"))?;
    let id = ferray::cluster::tls::installed().and_then(|t| t.identity.clone());
    let url = format!(
        "{}://{}",
        if id.is_some() { "https" } else { "http" },
        ferray_head::advertised(listener.local_addr()?)
    );
    let (stats, token) = (rt.clone(), token.clone());
    // On the node's runtime, beside its work.
    let exec = rt.block_on(async { tokio::runtime::Handle::current() });
    let task = exec.spawn(async move {
        let served = ferray_head::serve_node_metrics(
            listener,
            token,
            id.as_ref(),
            move || node_metrics(&stats.stats()),
            std::future::pending(),
        )
        .await;
        if let Err(e) = served {
            tracing::warn!("the node's metrics port stopped: {e}");
        }
    });
    Ok(Some((url, AbortOnDrop(task))))
}

/// A task aborted when this goes.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a node's `/metrics` shows, from its runtime's figures.
fn node_metrics(s: &ferray::RuntimeStats) -> ferray_head::NodeMetrics {
    ferray_head::NodeMetrics {
        object_store_bytes_in_memory: s.store.bytes_in_memory,
        object_store_bytes_spilled: s.store.bytes_spilled,
        objects: s.store.objects,
        // (Not tasks: the runtime's counters count what is submitted here,
        // not what the head assigns.)
        instance_slots: Some(s.instance_slots),
        guest_memory: s.guest_memory,
        resources_total: s.resources_total.clone(),
        resources_free: s.resources_free.clone(),
        gpu_memory_used: s.gpu.as_ref().map(|g| g.live_bytes),
        transfer_bytes: s.transfers.as_ref().map(|t| t.0.clone()),
        transfer_seconds: s.transfers.as_ref().map(|t| t.1.clone()),
    }
}

pub fn start(args: StartArgs) -> Result<ExitCode> {
    if !args.head && args.address.is_none() {
        bail!("say --head to start a head, or --address HOST:PORT to join one");
    }
    if !args.block {
        return start_in_background();
    }
    let pid_file = nodes_dir().join(std::process::id().to_string());
    let result = if args.head {
        run_head(&args, &pid_file)
    } else {
        run_worker_node(&args, &pid_file)
    };
    let _ = std::fs::remove_file(&pid_file);
    result
}

/// Re-run this command with `--block` as a background process, wait until
/// it is up, and print what it printed.
fn start_in_background() -> Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let logs = state_dir().join("logs");
    private_dir(&logs)?;
    let exe = std::env::current_exe().context("cannot find the ferray binary")?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let log_path = logs.join(format!("node-{stamp}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .arg("--block")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    let mut child = cmd.spawn().context("cannot start the node process")?;
    let pid_file = nodes_dir().join(child.id().to_string());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "the node exited ({status}) before it was up:\n{}",
                tail.join("\n")
            );
        }
        if pid_file.exists() {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            out!("{text}");
            outln!("  log: {}", log_path.display());
            outln!("  stop it with: ferray stop");
            return Ok(ExitCode::SUCCESS);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!(
                "the node did not come up within 60s; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn run_head(args: &StartArgs, pid_file: &Path) -> Result<ExitCode> {
    let state_db = args
        .state_db
        .clone()
        .unwrap_or_else(|| state_dir().join("head.redb"));
    let token = match args
        .token
        .as_deref()
        .map(str::to_string)
        .or_else(|| std::env::var("FERRAY_TOKEN").ok())
    {
        Some(t) => Token::new(&t)?,
        // A head started again on its database keeps the cluster's token,
        // so that its workers and clients can come back.
        None if state_db.exists() && token_file().exists() => {
            let t = std::fs::read_to_string(token_file()).context("cannot read the token file")?;
            Token::new(t.trim())?
        }
        None => Token::generate()?,
    };
    let tfile = token_file();
    write_private(&tfile, token.as_str())?;
    let tls = crate::tls::head_tls(args)?;
    let exec = runtime()?;
    let bind = SocketAddr::new(args.node_ip_address, args.port);
    let listener = exec
        .block_on(tokio::net::TcpListener::bind(bind))
        .with_context(|| format!("cannot listen on {bind}"))?;
    let local = listener.local_addr()?;
    let address = ferray_head::advertised(local);
    let head = ferray_head::Head::new(
        ferray_head::HeadConfig {
            token: token.clone(),
            node_timeout: args.node_timeout,
            store: ferray_store::StoreConfig {
                memory_capacity: args.node.object_store_memory.unwrap_or(2 << 30),
                spill_dir: None,
                spill_base: args.node.spill_dir.clone(),
            },
            job_caps: args.node.job_caps(),
            state_db: Some(state_db),
        },
        address.clone(),
    )?;
    // The dashboard port (HTTP: /metrics, the jobs API), TLS when the
    // cluster speaks it.
    let dash_bind = SocketAddr::new(
        args.dashboard_host,
        args.dashboard_port
            .unwrap_or(ferray_head::DEFAULT_DASHBOARD_PORT),
    );
    let dashboard = match exec.block_on(tokio::net::TcpListener::bind(dash_bind)) {
        Ok(l) => Ok(l),
        Err(e) if args.dashboard_port.is_none() => Err(format!(
            "none (cannot listen on {dash_bind}: {e}; pick one with --dashboard-port)"
        )),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot listen on {dash_bind} (--dashboard-port)"));
        }
    };
    let dashboard = match dashboard {
        Ok(l) => {
            let at = ferray_head::advertised(l.local_addr()?);
            let url = format!("{}://{at}", if tls { "https" } else { "http" });
            let id = if tls {
                ferray::cluster::tls::installed().and_then(|t| t.identity.clone())
            } else {
                None
            };
            let serving = head.clone();
            let task = exec.spawn(async move {
                if let Err(e) = serving
                    .serve_http(l, id.as_ref(), std::future::pending())
                    .await
                {
                    tracing::error!("the dashboard port stopped: {e}");
                }
            });
            write_private(&state_dir().join("dashboard-address"), &url)?;
            Ok((url, task))
        }
        Err(why) => {
            // Not an earlier head's address.
            let _ = std::fs::remove_file(state_dir().join("dashboard-address"));
            Err(why)
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = exec.spawn(head.clone().serve(listener, async {
        let _ = stop_rx.await;
    }));
    // What clients are told: https:// when the head speaks TLS (nodes of
    // the cluster speak it on every connection, whatever an address says).
    let public = if tls {
        format!("https://{address}")
    } else {
        address.clone()
    };
    write_private(&state_dir().join("head-address"), &public)?;
    // `ferray serve deploy`'s applications run in this process, as a client
    // of this head (connected on the first deploy).
    // Its proxy as the cluster's other ports: TLS with this node's
    // certificate when the cluster speaks TLS, and the token.
    let serve = std::sync::Arc::new(ferray_serve::Controller::new(
        public.clone(),
        token.as_str().to_string(),
        ferray_serve::Guard::this_node(token.clone())?,
    ));
    head.set_serve(std::sync::Arc::new(crate::serve::HeadServe(serve.clone())));
    // The application the earlier head ran (kept in its database), again.
    exec.spawn(head.clone().restore_serve_app());
    let worker = if args.no_worker {
        None
    } else {
        let rt = args.node.builder(OutputMode::Discard).build_sync()?;
        let mut cfg = WorkerConfig::new(
            address.clone(),
            token.clone(),
            SocketAddr::new(args.node_ip_address, 0),
            format!("head pid {}", std::process::id()),
        );
        cfg.in_head = true;
        let metrics = node_metrics_server(args, &rt, &token)?;
        Some((rt, cfg, metrics))
    };
    outln!("ferray head started at {public}");
    outln!("  join it:      ferray start --address {public}");
    outln!("  submit a job: ferray submit --address {public} COMPONENT.wasm FUNCTION [ARG...]");
    outln!(
        "  token:        {} (owner-only; others pass --token or FERRAY_TOKEN)",
        tfile.display()
    );
    if tls {
        outln!(
            "  TLS CA:       {} (others pass --tls-ca with a copy)",
            ferray::cluster::tls_dir().join("ca.pem").display()
        );
    }
    match &dashboard {
        Ok((url, _)) => {
            outln!(
                "  dashboard:    {url} (sign in with the token; APIs take it as a bearer header)"
            )
        }
        Err(why) => outln!("  dashboard:    {why}"),
    }
    let out = match worker {
        Some((rt, cfg, metrics)) => {
            let pid_file = pid_file.to_path_buf();
            let addr = address.clone();
            let metrics_url = metrics.as_ref().map(|(u, _)| u.clone());
            rt.block_on(ferray::cluster::run_worker(
                &rt,
                cfg,
                move |j| {
                    outln!(
                        "  this process is also {} (objects at {})",
                        NodeId(j.node),
                        j.object_address
                    );
                    if let Some(m) = &metrics_url {
                        outln!("  node metrics: {m}/metrics");
                    }
                    let _ = std::io::stdout().flush();
                    let _ = write_private(&pid_file, &format!("head {addr}\n"));
                },
                shutdown_signal(),
            ))
        }
        None => {
            let _ = std::io::stdout().flush();
            write_private(pid_file, &format!("head {address}\n"))?;
            exec.block_on(shutdown_signal());
            Ok(())
        }
    };
    serve.close();
    head.close();
    let _ = stop_tx.send(());
    let _ = exec.block_on(async { tokio::time::timeout(Duration::from_secs(2), server).await });
    let _ = std::fs::remove_file(state_dir().join("head-address"));
    if let Ok((_, task)) = dashboard {
        task.abort();
        let _ = std::fs::remove_file(state_dir().join("dashboard-address"));
    }
    out?;
    Ok(ExitCode::SUCCESS)
}

/// A table cell naming a node, `-` for none.
fn node_cell(id: Option<NodeId>) -> String {
    id.map_or_else(|| "-".to_string(), |n| n.to_string())
}

fn print_jobs_header() {
    outln!("{:<8} {:<10} {:>13}  ENTRYPOINT", "JOB", "STATE", "TASKS");
}

fn print_jobs(jobs: &[JobInfo]) {
    for j in jobs {
        outln!(
            "{:<8} {:<10} {:>13}  {}",
            j.job.to_string(),
            j.state.name(),
            format!("{}/{}", j.tasks_done, j.tasks_total),
            j.entrypoint
        );
    }
}

/// A worker node: joins the head; when it loses the head after it joined,
/// everything it ran is dropped (the head has given that work to other
/// nodes, and fences what this node would still send) and it joins again
/// as a new node, trying with backoff for `--reconnect-timeout`.
fn run_worker_node(args: &StartArgs, pid_file: &Path) -> Result<ExitCode> {
    let Some(address) = &args.address else {
        bail!("--address is required");
    };
    let token = find_token(args.token.as_deref())?;
    let tls = crate::tls::worker_tls(args, address)?;
    let mut lost: Option<(Instant, anyhow::Error)> = None;
    let mut backoff = Duration::from_millis(250);
    loop {
        let joined = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let out = run_worker_once(args, pid_file, address, &token, tls, joined.clone());
        let e = match out {
            Ok(()) => return Ok(ExitCode::SUCCESS),
            Err(e) => e,
        };
        let joined = joined.load(std::sync::atomic::Ordering::Acquire);
        let since = match (&lost, joined) {
            // It had joined: the loss starts now.
            (_, true) => Instant::now(),
            (Some((since, _)), false) => *since,
            // It never joined: a first connection that fails is an error.
            (None, false) => return Err(e),
        };
        if since.elapsed() >= args.reconnect_timeout {
            let e = match lost {
                Some((_, first)) if !joined => first.context(format!(
                    "gave up joining the head again after {:?} ({e:#})",
                    args.reconnect_timeout
                )),
                _ => e,
            };
            return Err(e);
        }
        if joined {
            tracing::warn!("{e:#}; joining the head again as a new node");
            eprintln!("ferray worker: {e:#}; joining the head again as a new node");
            backoff = Duration::from_millis(250);
            lost = Some((since, e));
        }
        let rt = runtime()?;
        let stop = rt.block_on(async {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => false,
                _ = shutdown_signal() => true,
            }
        });
        if stop {
            return Ok(ExitCode::SUCCESS);
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One membership of a worker: a fresh runtime that joins the head and
/// serves until the session ends (`Err`) or the process is told to stop.
fn run_worker_once(
    args: &StartArgs,
    pid_file: &Path,
    address: &str,
    token: &Token,
    tls: bool,
    joined: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<()> {
    let token = token.clone();
    let rt = args.node.builder(OutputMode::Discard).build_sync()?;
    let metrics = node_metrics_server(args, &rt, &token)?;
    let metrics_url = metrics.as_ref().map(|(u, _)| u.clone());
    let mut cfg = WorkerConfig::new(
        ferray::cluster::host_port(address).to_string(),
        token,
        SocketAddr::new(args.node_ip_address, 0),
        format!("worker pid {}", std::process::id()),
    );
    cfg.reconnect = args.reconnect_timeout;
    let pid_file = pid_file.to_path_buf();
    let addr = address.to_string();
    let total = rt.stats().resources_total;
    // This node's serve proxy, when the cluster's application wants one
    // on every node; it stops with this membership.
    let serve_exec = runtime()?;
    serve_exec.spawn(crate::serve::follow_head(addr.clone(), cfg.token.clone()));
    let out = rt.block_on(ferray::cluster::run_worker(
        &rt,
        cfg,
        move |j| {
            joined.store(true, std::sync::atomic::Ordering::Release);
            outln!(
                "ferray worker {} joined the head at {addr} ({} CPUs, {} GPUs; objects at {})",
                NodeId(j.node),
                total.num_cpus(),
                total.num_gpus(),
                j.object_address
            );
            if let Some(m) = &metrics_url {
                outln!("  node metrics: {m}/metrics");
            }
            let _ = std::io::stdout().flush();
            let _ = write_private(&pid_file, &format!("worker {addr}\n"));
        },
        shutdown_signal(),
    ));
    let out = match out {
        Err(e) if !tls => Err(rt.block_on(ferray::cluster::explain_plaintext(address, e))),
        other => other,
    };
    out.with_context(|| format!("the worker stopped (head {address})"))?;
    Ok(())
}

pub fn stop() -> Result<ExitCode> {
    let dir = nodes_dir();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(_) => {
            outln!("no ferray nodes were started on this machine");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let mut pids = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        match rustix::process::Pid::from_raw(pid) {
            Some(p) if rustix::process::test_kill_process(p).is_ok() => {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
                pids.push((p, e.path()));
            }
            _ => {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && pids
            .iter()
            .any(|(p, _)| rustix::process::test_kill_process(*p).is_ok())
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    for (p, path) in &pids {
        if rustix::process::test_kill_process(*p).is_ok() {
            let _ = rustix::process::kill_process(*p, rustix::process::Signal::KILL);
        }
        let _ = std::fs::remove_file(path);
    }
    outln!("stopped {} ferray node process(es)", pids.len());
    Ok(ExitCode::SUCCESS)
}

// ----- jobs -----

pub fn submit(args: SubmitArgs) -> Result<ExitCode> {
    let bytes = std::fs::read(&args.component)
        .with_context(|| format!("cannot read {}", args.component.display()))?;
    if !bytes.starts_with(b"\0asm") {
        bail!("{} is not a WebAssembly file", args.component.display());
    }
    // The function and its arguments are checked here, from the bytes,
    // before anything is uploaded (the driver's node converts them again).
    ferray::ComponentInfo::read(&bytes)
        .and_then(|info| info.function(&args.function)?.encode_wave_args(&args.args))
        .with_context(|| format!("cannot submit {}", args.component.display()))?;
    let exec = runtime()?;
    exec.block_on(async {
        let mut c = args.connect.client().await?;
        let comp = c.upload(bytes.into()).await?;
        let info = c
            .submit_job(
                comp,
                &args.function,
                args.args.clone(),
                &args.entrypoint.resources()?,
            )
            .await?;
        let job = info.job.0;
        if args.no_wait {
            outln!("job-{job}");
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!("submitted job-{job} to {}", c.address());
        // On a terminal a bar (log lines print above it); else a line of
        // progress at most every second.
        let bar =
            progress::stderr_is_terminal().then(|| progress::Bar::new(&format!("job-{job} ")));
        let mut last_print = Instant::now() - Duration::from_secs(10);
        let info = args
            .follow
            .follow(&mut c, job, |e| match e {
                JobEvent::Log(l) => match &bar {
                    Some(bar) => bar.println(&l),
                    None => eprintln!("{l}"),
                },
                JobEvent::Progress { done, total } => match &bar {
                    Some(bar) => bar.set(done, total),
                    None => {
                        if last_print.elapsed() > Duration::from_secs(1) {
                            eprintln!("job-{job}: {done}/{total} tasks done");
                            last_print = Instant::now();
                        }
                    }
                },
                JobEvent::Finished(_) => {}
            })
            .await?;
        // The bar goes before the job's last line.
        drop(bar);
        eprintln!(
            "job-{job} {}: {}/{} tasks done",
            info.state.name().to_lowercase(),
            info.tasks_done,
            info.tasks_total
        );
        finish(&info)
    })
}

/// Print a finished job's result (or error) and its exit status.
fn finish(info: &JobInfo) -> Result<ExitCode> {
    match info.state {
        JobState::Succeeded => {
            if !info.result.is_empty() {
                outln!("{}", info.result);
            }
            Ok(ExitCode::SUCCESS)
        }
        JobState::Failed if info.err_value => {
            outln!("{}", info.result);
            Ok(ExitCode::FAILURE)
        }
        JobState::Failed => bail!("{} failed: {}", info.job, info.error),
        JobState::Stopped => bail!("{} was stopped", info.job),
        other => bail!("{} is {other}", info.job),
    }
}

pub fn job(cmd: JobCommand) -> Result<ExitCode> {
    let exec = runtime()?;
    exec.block_on(async {
        match cmd {
            JobCommand::List(c) => {
                let mut c = c.client().await?;
                // Page by page, printed as they come.
                print_jobs_header();
                c.state_pages("jobs", |page| print_jobs(&page.jobs)).await?;
                Ok(ExitCode::SUCCESS)
            }
            JobCommand::Status(a) => {
                let id = job_id(&a.job)?;
                let mut c = a.connect.client().await?;
                let info = c.watch_job(id, false, |_| {}).await?;
                outln!("{}: {}", info.job, info.state);
                outln!("  entrypoint: {}", info.entrypoint);
                outln!("  tasks: {}/{} done", info.tasks_done, info.tasks_total);
                if !info.result.is_empty() {
                    outln!("  result: {}", info.result);
                }
                if !info.error.is_empty() {
                    outln!("  error: {}", info.error);
                }
                Ok(ExitCode::SUCCESS)
            }
            JobCommand::Logs(a) => {
                let id = job_id(&a.job)?;
                let mut c = a.connect.client().await?;
                let print = |e: JobEvent| {
                    if let JobEvent::Log(l) = e {
                        outln!("{l}");
                    }
                };
                if a.follow {
                    a.reconnect.follow(&mut c, id, print).await?;
                } else {
                    c.watch_job(id, false, print).await?;
                }
                Ok(ExitCode::SUCCESS)
            }
            JobCommand::Stop(a) => {
                let id = job_id(&a.job)?;
                let mut c = a.connect.client().await?;
                let info = c.stop_job(id).await?;
                outln!("{}: {}", info.job, info.state);
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

/// CPUs, GPUs and custom resources (`name=amount,...`).
fn res(r: &Resources) -> (f64, f64, String) {
    let mut custom: Vec<String> = r.custom().map(|(k, v)| format!("{k}={v}")).collect();
    custom.sort();
    (r.num_cpus(), r.num_gpus(), custom.join(","))
}

fn alive(alive: bool) -> &'static str {
    if alive { "ALIVE" } else { "DEAD" }
}

pub fn status(c: ConnectArgs) -> Result<ExitCode> {
    let exec = runtime()?;
    exec.block_on(async {
        let mut client = c.client().await?;
        let st = client.state("nodes").await?;
        outln!("cluster at {} (head {})", client.address(), st.head_version);
        outln!("nodes:");
        let (mut used_cpu, mut total_cpu, mut used_gpu, mut total_gpu) = (0.0, 0.0, 0.0, 0.0);
        for n in &st.nodes {
            let (tc, tg, custom) = res(&n.total);
            let (fc, fg, _) = res(n.available.as_ref().unwrap_or(&Resources::default()));
            if n.alive {
                used_cpu += tc - fc;
                total_cpu += tc;
                used_gpu += tg - fg;
                total_gpu += tg;
            }
            outln!(
                "  node-{:<4} {:<6} {:<22} CPU {}/{}  GPU {}/{}  running {}{}",
                n.id.0,
                alive(n.alive),
                n.address,
                tc - fc,
                tc,
                tg - fg,
                tg,
                n.running,
                if custom.is_empty() {
                    String::new()
                } else {
                    format!("  {custom}")
                }
            );
        }
        outln!("resources used: {used_cpu}/{total_cpu} CPU, {used_gpu}/{total_gpu} GPU");
        outln!("tasks by state:");
        let mut states: Vec<_> = st.task_states.iter().collect();
        states.sort();
        if states.is_empty() {
            outln!("  (none)");
        }
        for (s, n) in states {
            outln!("  {s}: {n}");
        }
        let (mut jobs, mut running) = (0, 0);
        client
            .state_pages("jobs", |page| {
                jobs += page.jobs.len();
                running += page.jobs.iter().filter(|j| !j.state.finished()).count();
            })
            .await?;
        outln!("jobs: {jobs} ({running} running)");
        Ok(ExitCode::SUCCESS)
    })
}

pub fn list(a: ListArgs) -> Result<ExitCode> {
    let exec = runtime()?;
    exec.block_on(async {
        let mut c = a.connect.client().await?;
        // Page by page (in id order), printed as they come.
        list_header(&a.what);
        c.state_pages(&a.what, |page| list_rows(&a.what, page))
            .await?;
        Ok(ExitCode::SUCCESS)
    })
}

fn list_header(what: &str) {
    match what {
        "nodes" => outln!(
            "{:<10} {:<6} {:<22} {:>6} {:>6} {:>8}  NAME",
            "NODE",
            "STATE",
            "ADDRESS",
            "CPUS",
            "GPUS",
            "RUNNING"
        ),
        "tasks" => outln!(
            "{:<16} {:<8} {:<26} {:<10} {:>8}  FUNCTION",
            "TASK",
            "JOB",
            "STATE",
            "NODE",
            "ATTEMPTS"
        ),
        "actors" => outln!(
            "{:<16} {:<8} {:<8} {:<10} {:>8}  CLASS",
            "ACTOR",
            "JOB",
            "STATE",
            "NODE",
            "RESTARTS"
        ),
        "objects" => outln!(
            "{:<64} {:>12} {:<7} {:<16} NODES",
            "OBJECT",
            "SIZE",
            "INLINE",
            "MADE BY"
        ),
        _ => print_jobs_header(),
    }
}

fn list_rows(what: &str, st: ClusterView) {
    match what {
        "nodes" => {
            for n in st.nodes {
                let (tc, tg, _) = res(&n.total);
                outln!(
                    "{:<10} {:<6} {:<22} {:>6} {:>6} {:>8}  {}",
                    n.id.to_string(),
                    alive(n.alive),
                    n.address,
                    tc,
                    tg,
                    n.running,
                    n.name
                );
            }
        }
        "tasks" => {
            for t in st.tasks {
                let node = node_cell(t.node);
                outln!(
                    "{:<16} {:<8} {:<26} {:<10} {:>8}  {}",
                    t.id.to_string(),
                    t.job.to_string(),
                    t.state,
                    node,
                    t.attempts,
                    t.function
                );
            }
        }
        "actors" => {
            for x in st.actors {
                let node = node_cell(x.node);
                outln!(
                    "{:<16} {:<8} {:<8} {:<10} {:>8}  {}",
                    x.id.to_string(),
                    x.job.to_string(),
                    x.state,
                    node,
                    x.restarts,
                    x.class
                );
            }
        }
        "objects" => {
            for o in st.objects {
                let nodes: Vec<String> = o
                    .nodes
                    .iter()
                    .map(|n| {
                        if n.0 == 0 {
                            "head".into()
                        } else {
                            n.to_string()
                        }
                    })
                    .collect();
                outln!(
                    "{:<64} {:>12} {:<7} {:<16} {}",
                    o.id,
                    o.size,
                    if o.inline { "yes" } else { "no" },
                    o.made_by
                        .map_or_else(|| "put".to_string(), |t| t.to_string()),
                    nodes.join(",")
                );
            }
        }
        _ => print_jobs(&st.jobs),
    }
}

pub fn put(a: PutArgs) -> Result<ExitCode> {
    let bytes =
        std::fs::read(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    let exec = runtime()?;
    exec.block_on(async {
        let mut c = a.connect.client().await?;
        let id = c.put(bytes.into()).await?;
        outln!("{}", id.to_hex());
        Ok(ExitCode::SUCCESS)
    })
}

pub fn get(a: GetArgs) -> Result<ExitCode> {
    let id: ferray::ObjectId = a
        .object
        .trim_start_matches("obj-")
        .parse()
        .map_err(|_| anyhow::anyhow!("`{}` is not an object id (64 hex digits)", a.object))?;
    let exec = runtime()?;
    exec.block_on(async {
        let mut c = a.connect.client().await?;
        let bytes = c.get(id).await?;
        match &a.output {
            Some(path) => std::fs::write(path, &bytes)
                .with_context(|| format!("cannot write {}", path.display()))?,
            None => std::io::stdout().write_all(&bytes)?,
        }
        Ok(ExitCode::SUCCESS)
    })
}
