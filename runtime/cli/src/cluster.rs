//! The cluster commands: `start`, `stop`, `submit`, `job`, `status`,
//! `list`, `put`, `get`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferray::cluster::{Client, Token, WorkerConfig, find_token, state_dir, token_file, v1};
use ferray::{OutputMode, Runtime, RuntimeBuilder, parse_size};

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
    node_ip_address: std::net::IpAddr,
    /// CPUs this node offers (default: its cores).
    #[arg(long, value_name = "N")]
    num_cpus: Option<f64>,
    /// GPUs this node offers (default: the adapters found).
    #[arg(long, value_name = "N")]
    num_gpus: Option<f64>,
    /// Count a software GPU adapter (Mesa's llvmpipe) as a GPU.
    #[arg(long)]
    allow_software_gpu: bool,
    /// Custom resources, as JSON: '{"tpu": 2}'.
    #[arg(long, value_name = "JSON")]
    resources: Option<String>,
    /// Memory this node offers to tasks that ask for it, like 8GiB.
    #[arg(long, value_name = "SIZE", value_parser = size)]
    memory: Option<u64>,
    /// Bytes of objects kept in memory before spilling to disk.
    #[arg(long, value_name = "SIZE", value_parser = size)]
    object_store_memory: Option<u64>,
    /// The cluster token (default: FERRAY_TOKEN, else the head's token file;
    /// a head without one makes one).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// A head: declare a worker dead after this long without a heartbeat.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = duration)]
    node_timeout: Duration,
    /// A head: do not run a worker in the head's process.
    #[arg(long)]
    no_worker: bool,
    /// Dashboard port (accepted for Ray compatibility; ferray serves none).
    #[arg(long, value_name = "PORT", hide = true)]
    dashboard_port: Option<u16>,
    /// Stay in the foreground until interrupted.
    #[arg(long)]
    block: bool,
}

fn size(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

fn duration(s: &str) -> Result<Duration, String> {
    ferray::parse_duration(s).map_err(|e| e.to_string())
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

    async fn client(&self) -> Result<Client> {
        let addr = self.address()?;
        let token = self.token()?;
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
    /// The component (.wasm).
    component: PathBuf,
    /// The exported function to run as the job's driver.
    function: String,
    /// Arguments in WAVE text, typed by the function's signature.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
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

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn job_id(s: &str) -> Result<u64> {
    s.trim_start_matches("job-")
        .parse()
        .map_err(|_| anyhow::anyhow!("`{s}` is not a job id (like job-3)"))
}

// ----- start and stop -----

fn nodes_dir() -> PathBuf {
    state_dir().join("nodes")
}

fn private_dir(dir: &Path) -> Result<()> {
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
fn write_private(path: &Path, text: &str) -> Result<()> {
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

pub fn start(args: StartArgs) -> Result<ExitCode> {
    if !args.head && args.address.is_none() {
        bail!("say --head to start a head, or --address HOST:PORT to join one");
    }
    if !args.block {
        return start_in_background();
    }
    let custom: Vec<(String, f64)> = match &args.resources {
        None => Vec::new(),
        Some(json) => parse_resources(json)?,
    };
    let pid_file = nodes_dir().join(std::process::id().to_string());
    let result = if args.head {
        run_head(&args, &custom, &pid_file)
    } else {
        run_worker_node(&args, &custom, &pid_file)
    };
    let _ = std::fs::remove_file(&pid_file);
    result
}

/// `{"tpu": 2, "fpga": 0.5}` as pairs.
fn parse_resources(json: &str) -> Result<Vec<(String, f64)>> {
    let map: std::collections::BTreeMap<String, f64> = serde_json::from_str(json).map_err(|e| {
        anyhow::anyhow!("--resources takes a JSON object of amounts like '{{\"tpu\": 2}}': {e}")
    })?;
    Ok(map.into_iter().collect())
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
            print!("{text}");
            println!("  log: {}", log_path.display());
            println!("  stop it with: ferray stop");
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

fn builder(args: &StartArgs, custom: &[(String, f64)]) -> RuntimeBuilder {
    let mut b = Runtime::builder()
        .output(OutputMode::Discard)
        .allow_software_gpu(args.allow_software_gpu);
    if let Some(n) = args.num_cpus {
        b = b.num_cpus(n);
    }
    if let Some(n) = args.num_gpus {
        b = b.num_gpus(n);
    }
    if let Some(m) = args.memory {
        b = b.memory(m);
    }
    if let Some(m) = args.object_store_memory {
        b = b.object_store_memory(m);
    }
    for (k, v) in custom {
        b = b.resource(k, *v);
    }
    b
}

fn corrupt_for_testing() -> u32 {
    std::env::var("FERRAY_TESTING_CORRUPT_TRANSFERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
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

fn run_head(args: &StartArgs, custom: &[(String, f64)], pid_file: &Path) -> Result<ExitCode> {
    let token = match args
        .token
        .as_deref()
        .map(str::to_string)
        .or_else(|| std::env::var("FERRAY_TOKEN").ok())
    {
        Some(t) => Token::new(&t)?,
        None => Token::generate()?,
    };
    let tfile = token_file();
    write_private(&tfile, token.as_str())?;
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
                memory_capacity: args.object_store_memory.unwrap_or(2 << 30),
                spill_dir: None,
            },
        },
        address.clone(),
    )?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = exec.spawn(head.serve(listener, async {
        let _ = stop_rx.await;
    }));
    write_private(&state_dir().join("head-address"), &address)?;
    let worker = if args.no_worker {
        None
    } else {
        let rt = builder(args, custom).build_sync()?;
        let cfg = WorkerConfig {
            head: address.clone(),
            token: token.clone(),
            bind: SocketAddr::new(args.node_ip_address, 0),
            name: format!("head pid {}", std::process::id()),
            corrupt_transfers: corrupt_for_testing(),
        };
        Some((rt, cfg))
    };
    println!("ferray head started at {address}");
    println!("  join it:      ferray start --address {address}");
    println!("  submit a job: ferray submit --address {address} COMPONENT.wasm FUNCTION [ARG...]");
    println!(
        "  token:        {} (owner-only; others pass --token or FERRAY_TOKEN)",
        tfile.display()
    );
    println!("  dashboard:    none (use `ferray status --address {address}`)");
    let out = match worker {
        Some((rt, cfg)) => {
            let pid_file = pid_file.to_path_buf();
            let addr = address.clone();
            rt.block_on(ferray::cluster::run_worker(
                &rt,
                cfg,
                move |j| {
                    println!(
                        "  this process is also {} (objects at {})",
                        node_name(j.node),
                        j.object_address
                    );
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
    let _ = stop_tx.send(());
    let _ = exec.block_on(async { tokio::time::timeout(Duration::from_secs(2), server).await });
    let _ = std::fs::remove_file(state_dir().join("head-address"));
    out?;
    Ok(ExitCode::SUCCESS)
}

fn node_name(id: u64) -> String {
    format!("node-{id}")
}

/// A table cell naming a node, `-` for none.
fn node_cell(id: u64) -> String {
    if id == 0 {
        "-".to_string()
    } else {
        node_name(id)
    }
}

fn print_jobs(jobs: &[v1::JobInfo]) {
    println!("{:<8} {:<10} {:>13}  ENTRYPOINT", "JOB", "STATE", "TASKS");
    for j in jobs {
        println!(
            "{:<8} {:<10} {:>13}  {}",
            format!("job-{}", j.job),
            j.state,
            format!("{}/{}", j.tasks_done, j.tasks_total),
            j.entrypoint
        );
    }
}

fn run_worker_node(
    args: &StartArgs,
    custom: &[(String, f64)],
    pid_file: &Path,
) -> Result<ExitCode> {
    let Some(address) = &args.address else {
        bail!("--address is required");
    };
    let token = find_token(args.token.as_deref())?;
    let rt = builder(args, custom).build_sync()?;
    let cfg = WorkerConfig {
        head: address.clone(),
        token,
        bind: SocketAddr::new(args.node_ip_address, 0),
        name: format!("worker pid {}", std::process::id()),
        corrupt_transfers: corrupt_for_testing(),
    };
    let pid_file = pid_file.to_path_buf();
    let addr = address.clone();
    let total = rt.stats().resources_total;
    rt.block_on(ferray::cluster::run_worker(
        &rt,
        cfg,
        move |j| {
            println!(
                "ferray worker {} joined the head at {addr} ({} CPUs, {} GPUs; objects at {})",
                node_name(j.node),
                total.num_cpus(),
                total.num_gpus(),
                j.object_address
            );
            let _ = std::io::stdout().flush();
            let _ = write_private(&pid_file, &format!("worker {addr}\n"));
        },
        shutdown_signal(),
    ))
    .with_context(|| format!("the worker stopped (head {address})"))?;
    Ok(ExitCode::SUCCESS)
}

pub fn stop() -> Result<ExitCode> {
    let dir = nodes_dir();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(_) => {
            println!("no ferray nodes were started on this machine");
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
    println!("stopped {} ferray node process(es)", pids.len());
    Ok(ExitCode::SUCCESS)
}

// ----- jobs -----

pub fn submit(args: SubmitArgs) -> Result<ExitCode> {
    let bytes = std::fs::read(&args.component)
        .with_context(|| format!("cannot read {}", args.component.display()))?;
    if !bytes.starts_with(b"\0asm") {
        bail!("{} is not a WebAssembly file", args.component.display());
    }
    let exec = runtime()?;
    exec.block_on(async {
        let mut c = args.connect.client().await?;
        let comp = c.upload(bytes.into()).await?;
        let info = c
            .submit_job(comp, &args.function, args.args.clone())
            .await?;
        let job = info.job;
        if args.no_wait {
            println!("job-{job}");
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!("submitted job-{job} to {}", c.address());
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let mut last_print = Instant::now() - Duration::from_secs(10);
        let mut pending_progress: Option<(u64, u64)> = None;
        let info = c
            .watch_job(job, true, |e| match e {
                v1::job_event::Event::Log(l) => {
                    if tty && pending_progress.is_some() {
                        eprint!("\r\x1b[K");
                    }
                    eprintln!("{l}");
                }
                v1::job_event::Event::Progress(p) => {
                    pending_progress = Some((p.done, p.total));
                    if tty {
                        eprint!("\r\x1b[Kjob-{job}: {}/{} tasks done", p.done, p.total);
                    } else if last_print.elapsed() > Duration::from_secs(1) {
                        eprintln!("job-{job}: {}/{} tasks done", p.done, p.total);
                        last_print = Instant::now();
                    }
                }
                v1::job_event::Event::Finished(_) => {}
            })
            .await?;
        if tty {
            eprint!("\r\x1b[K");
        }
        eprintln!(
            "job-{job} {}: {}/{} tasks done",
            info.state.to_lowercase(),
            info.tasks_done,
            info.tasks_total
        );
        finish(&info)
    })
}

/// Print a finished job's result (or error) and its exit status.
fn finish(info: &v1::JobInfo) -> Result<ExitCode> {
    match info.state.as_str() {
        "SUCCEEDED" => {
            if !info.result.is_empty() {
                println!("{}", info.result);
            }
            Ok(ExitCode::SUCCESS)
        }
        "FAILED" if info.err_value => {
            println!("{}", info.result);
            Ok(ExitCode::FAILURE)
        }
        "FAILED" => bail!("job-{} failed: {}", info.job, info.error),
        "STOPPED" => bail!("job-{} was stopped", info.job),
        other => bail!("job-{} is {other}", info.job),
    }
}

pub fn job(cmd: JobCommand) -> Result<ExitCode> {
    let exec = runtime()?;
    exec.block_on(async {
        match cmd {
            JobCommand::List(c) => {
                let mut c = c.client().await?;
                print_jobs(&c.state("jobs").await?.jobs);
                Ok(ExitCode::SUCCESS)
            }
            JobCommand::Status(a) => {
                let id = job_id(&a.job)?;
                let mut c = a.connect.client().await?;
                let info = c.watch_job(id, false, |_| {}).await?;
                println!("job-{}: {}", info.job, info.state);
                println!("  entrypoint: {}", info.entrypoint);
                println!("  tasks: {}/{} done", info.tasks_done, info.tasks_total);
                if !info.result.is_empty() {
                    println!("  result: {}", info.result);
                }
                if !info.error.is_empty() {
                    println!("  error: {}", info.error);
                }
                Ok(ExitCode::SUCCESS)
            }
            JobCommand::Logs(a) => {
                let id = job_id(&a.job)?;
                let mut c = a.connect.client().await?;
                c.watch_job(id, a.follow, |e| {
                    if let v1::job_event::Event::Log(l) = e {
                        println!("{l}");
                    }
                })
                .await?;
                Ok(ExitCode::SUCCESS)
            }
            JobCommand::Stop(a) => {
                let id = job_id(&a.job)?;
                let mut c = a.connect.client().await?;
                let info = c.stop_job(id).await?;
                println!("job-{}: {}", info.job, info.state);
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

fn res(r: &Option<v1::Resources>) -> (f64, f64, u64, String) {
    let r = r.clone().unwrap_or_default();
    let mut custom: Vec<String> = r.custom.iter().map(|(k, v)| format!("{k}={v}")).collect();
    custom.sort();
    (r.cpus, r.gpus, r.memory, custom.join(","))
}

pub fn status(c: ConnectArgs) -> Result<ExitCode> {
    let exec = runtime()?;
    exec.block_on(async {
        let mut client = c.client().await?;
        let st = client.state("nodes").await?;
        println!("cluster at {} (head {})", client.address(), st.head_version);
        println!("nodes:");
        let (mut used_cpu, mut total_cpu, mut used_gpu, mut total_gpu) = (0.0, 0.0, 0.0, 0.0);
        for n in &st.nodes {
            let (tc, tg, _, custom) = res(&n.total);
            let (fc, fg, _, _) = res(&n.available);
            if n.state == "ALIVE" {
                used_cpu += tc - fc;
                total_cpu += tc;
                used_gpu += tg - fg;
                total_gpu += tg;
            }
            println!(
                "  node-{:<4} {:<6} {:<22} CPU {}/{}  GPU {}/{}  running {}{}",
                n.id,
                n.state,
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
        println!("resources used: {used_cpu}/{total_cpu} CPU, {used_gpu}/{total_gpu} GPU");
        println!("tasks by state:");
        let mut states: Vec<_> = st.task_states.iter().collect();
        states.sort();
        if states.is_empty() {
            println!("  (none)");
        }
        for (s, n) in states {
            println!("  {s}: {n}");
        }
        let jobs = client.state("jobs").await?.jobs;
        let running = jobs
            .iter()
            .filter(|j| j.state == "RUNNING" || j.state == "PENDING")
            .count();
        println!("jobs: {} ({} running)", jobs.len(), running);
        Ok(ExitCode::SUCCESS)
    })
}

pub fn list(a: ListArgs) -> Result<ExitCode> {
    let exec = runtime()?;
    exec.block_on(async {
        let mut c = a.connect.client().await?;
        let st = c.state(&a.what).await?;
        match a.what.as_str() {
            "nodes" => {
                println!(
                    "{:<10} {:<6} {:<22} {:>6} {:>6} {:>8}  NAME",
                    "NODE", "STATE", "ADDRESS", "CPUS", "GPUS", "RUNNING"
                );
                for n in st.nodes {
                    let (tc, tg, _, _) = res(&n.total);
                    println!(
                        "{:<10} {:<6} {:<22} {:>6} {:>6} {:>8}  {}",
                        node_name(n.id),
                        n.state,
                        n.address,
                        tc,
                        tg,
                        n.running,
                        n.name
                    );
                }
            }
            "tasks" => {
                println!(
                    "{:<16} {:<8} {:<26} {:<10} {:>8}  FUNCTION",
                    "TASK", "JOB", "STATE", "NODE", "ATTEMPTS"
                );
                for t in st.tasks {
                    let node = node_cell(t.node);
                    println!(
                        "{:<16} {:<8} {:<26} {:<10} {:>8}  {}",
                        format!("task-{}", t.id),
                        format!("job-{}", t.job),
                        t.state,
                        node,
                        t.attempts,
                        t.function
                    );
                }
            }
            "actors" => {
                println!(
                    "{:<16} {:<8} {:<8} {:<10} {:>8}  CLASS",
                    "ACTOR", "JOB", "STATE", "NODE", "RESTARTS"
                );
                for x in st.actors {
                    let node = node_cell(x.node);
                    println!(
                        "{:<16} {:<8} {:<8} {:<10} {:>8}  {}",
                        format!("actor-{}", x.id),
                        format!("job-{}", x.job),
                        x.state,
                        node,
                        x.restarts,
                        x.class
                    );
                }
            }
            "objects" => {
                println!(
                    "{:<64} {:>12} {:<7} {:<16} NODES",
                    "OBJECT", "SIZE", "INLINE", "MADE BY"
                );
                for o in st.objects {
                    let nodes: Vec<String> = o
                        .nodes
                        .iter()
                        .map(|n| {
                            if *n == 0 {
                                "head".into()
                            } else {
                                node_name(*n)
                            }
                        })
                        .collect();
                    println!(
                        "{:<64} {:>12} {:<7} {:<16} {}",
                        o.id,
                        o.size,
                        if o.inline { "yes" } else { "no" },
                        o.made_by,
                        nodes.join(",")
                    );
                }
            }
            _ => print_jobs(&st.jobs),
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn put(a: PutArgs) -> Result<ExitCode> {
    let bytes =
        std::fs::read(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    let exec = runtime()?;
    exec.block_on(async {
        let mut c = a.connect.client().await?;
        let id = c.put(bytes.into()).await?;
        println!("{}", id.to_hex());
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
