//! The `ferray` command line: `run` and `inspect` components on the embedded
//! runtime, start and use a cluster (`start`, `stop`, `submit`, `job`,
//! `status`, `list`, `put`, `get`), and `microbenchmark` either. Errors are
//! one clear line on stderr and a non-zero exit status.

/// `println!` that ends the process quietly when stdout was closed
/// (`ferray inspect x.wasm | head`) instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::stdout_line(format_args!($($arg)*), true)
    };
}

/// `print!`, quiet on a closed stdout as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::stdout_line(format_args!($($arg)*), false)
    };
}

mod args;
mod cluster;
mod data;
mod progress;
mod serve;
mod timeline;
mod tls;
mod train;
mod tune;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use ferray::OutputMode;

#[derive(Parser, Debug)]
#[command(
    name = "ferray",
    version,
    about = "Ray's model with WebAssembly components: tasks, actors, objects"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run an exported function of a component on the embedded runtime and
    /// print its result as WAVE text.
    Run(RunArgs),
    /// Show a component's digest, exports with their WIT signatures, and imports.
    Inspect {
        /// The component (.wasm).
        component: PathBuf,
    },
    /// Measure the embedded runtime (or a cluster with --address), printing
    /// `NAME VALUE UNIT` lines with Ray's metric names.
    Microbenchmark(BenchArgs),
    /// Start a head (--head) or a worker that joins one (--address), in the
    /// background unless --block.
    Start(cluster::StartArgs),
    /// Stop the ferray nodes started on this machine.
    Stop,
    /// Run an exported function of a component as a job's driver on a
    /// cluster, streaming its logs; prints the result as WAVE text.
    Submit(cluster::SubmitArgs),
    /// List, follow, inspect and stop jobs.
    #[command(subcommand)]
    Job(cluster::JobCommand),
    /// The cluster's nodes, resources used/total, and tasks by state.
    Status(cluster::ConnectArgs),
    /// List the cluster's nodes, tasks, actors, objects or jobs.
    List(cluster::ListArgs),
    /// Store a file's bytes as an object in the cluster; prints its id.
    Put(cluster::PutArgs),
    /// Fetch an object's bytes from the cluster.
    Get(cluster::GetArgs),
    /// Write a job's attempts as a Chrome trace (Perfetto, chrome://tracing):
    /// a row per node and slot, a span per attempt, failures marked.
    Timeline(timeline::TimelineArgs),
    /// Components as HTTP services: deployments with replicas behind a proxy.
    #[command(subcommand)]
    Serve(serve::ServeCommand),
    /// A hyper-parameter search over a component's trainable (trials as
    /// actors; FIFO, ASHA or the median stopping rule): a live table, the
    /// result grid as CSV and JSON, the best config.
    Tune(Box<tune::TuneArgs>),
    /// Data-parallel training of a component's worker class: a group of
    /// workers that all-reduce, each step's metrics, checkpoints on disk,
    /// the group made again from the last one after a failure.
    Train(Box<train::TrainArgs>),
    /// Datasets of Arrow blocks: read files, transform them with components
    /// on task or actor pools, write files (a pipeline file).
    #[command(subcommand)]
    Data(data::DataCommand),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    node: args::NodeArgs,
    #[command(flatten)]
    entrypoint: args::EntrypointArgs,
    /// Run tasks inline and in order, deterministically (Ray's local_mode).
    #[arg(long)]
    local_mode: bool,
    /// Wall-clock limit of each task attempt, like 500ms, 30s, 2m.
    #[arg(long, value_name = "DURATION", value_parser = args::duration)]
    timeout: Option<std::time::Duration>,
    /// Memory cap of each guest instance, like 64MiB, 2GiB (default 1GiB).
    #[arg(long, value_name = "SIZE", value_parser = args::size)]
    memory_limit: Option<u64>,
    /// Fuel of each task attempt (turns fuel metering on).
    #[arg(long, value_name = "N")]
    fuel: Option<u64>,
    /// Grant an environment variable to guests.
    #[arg(long = "env", value_name = "K=V", value_parser = args::key_value)]
    env: Vec<(String, String)>,
    /// Grant a host directory to guests at a guest path.
    #[arg(long = "dir", value_name = "HOST::GUEST", value_parser = args::dir_grant)]
    dirs: Vec<(PathBuf, String)>,
    /// The component (.wasm).
    component: PathBuf,
    /// The exported function: its name, or `interface.name`.
    function: String,
    /// Arguments in WAVE text, typed by the function's signature.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct BenchArgs {
    /// A cluster's head; without it the embedded runtime is measured.
    #[arg(long, value_name = "HOST:PORT")]
    address: Option<String>,
    /// The cluster token (default: FERRAY_TOKEN, else the head's token file).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Scale every measurement's length (0.1 for a quick look).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Only the metrics whose name contains this.
    #[arg(long)]
    filter: Option<String>,
}

/// Parse the command line, run it, and turn any error into one line on
/// stderr and exit status 1.
pub fn main() -> ExitCode {
    quiet_gpu_drivers();
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(progress::LogWriter)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let mut text = format!("{e:#}");
            if text.is_empty() {
                text = "failed".into();
            }
            eprintln!("error: {text}");
            ExitCode::FAILURE
        }
    }
}

/// Write to stdout; a reader that went away (a closed pipe) ends the
/// process at once and quietly, with the status a shell gives a process
/// killed by SIGPIPE (141), as `cat` and `ls` do.
pub(crate) fn stdout_line(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let end: &[u8] = if newline { b"\n" } else { b"" };
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(end))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(141),
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            std::process::exit(1);
        }
    }
}

/// GPU drivers (Mesa's Vulkan WSI, through wayland-client) print
/// `error: XDG_RUNTIME_DIR is invalid or not set` when that variable is
/// missing, as on servers and in CI; a user would read it as ferray's own
/// error. Point it at a private directory of this user when it is unset.
#[allow(unsafe_code)]
fn quiet_gpu_drivers() {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
            return;
        }
        let Ok(me) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
            return;
        };
        let dir = std::env::temp_dir().join(format!("ferray-runtime-{me}"));
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        let ok = std::fs::metadata(&dir)
            .is_ok_and(|m| m.is_dir() && m.uid() == me && m.permissions().mode() & 0o777 == 0o700);
        if ok {
            // SAFETY: this runs first thing in `main`, before any thread is
            // spawned, so nothing reads or writes the environment meanwhile.
            unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run_component(args),
        Command::Inspect { component } => inspect(component),
        Command::Microbenchmark(args) => microbenchmark(args),
        Command::Start(args) => cluster::start(args),
        Command::Stop => cluster::stop(),
        Command::Submit(args) => cluster::submit(args),
        Command::Job(cmd) => cluster::job(cmd),
        Command::Status(args) => cluster::status(args),
        Command::List(args) => cluster::list(args),
        Command::Put(args) => cluster::put(args),
        Command::Get(args) => cluster::get(args),
        Command::Timeline(args) => timeline::timeline(args),
        Command::Serve(cmd) => serve::serve(cmd),
        Command::Tune(args) => tune::tune(*args),
        Command::Train(args) => train::train(*args),
        Command::Data(cmd) => data::data(cmd),
    }
}

/// The head's scheduler placing 1-CPU tasks on 100 simulated 16-CPU nodes
/// (each placement released again, so the cluster stays half full).
fn scheduler_placements(scale: f64) -> f64 {
    use ferray_head::{Placement, Scheduler};
    let mut s = Scheduler::new();
    for i in 1..=100 {
        s.add_node(ferray::NodeId(i), ferray::Resources::cpus(16.0));
    }
    let demand = ferray::Resources::cpus(1.0);
    // Fill half of every node, so that placement has real choices.
    for _ in 0..800 {
        let _ = s.place(&demand, ferray::Strategy::Default, &[]);
    }
    let secs = 2.0 * scale.max(0.001);
    let start = std::time::Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        for _ in 0..1000 {
            if let Placement::Node(id) = s.place(&demand, ferray::Strategy::Default, &[]) {
                s.release(id, &demand);
            }
        }
        n += 1000;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn read_component(path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn run_component(args: RunArgs) -> Result<ExitCode> {
    let bytes = read_component(&args.component)?;
    // On a terminal guests' output is collected and printed above the bar.
    let bar = progress::stderr_is_terminal();
    let output = if bar {
        OutputMode::Collect
    } else {
        OutputMode::Stderr
    };
    let mut b = args.node.builder(output).local_mode(args.local_mode);
    if let Some(t) = args.timeout {
        b = b.timeout(t);
    }
    if let Some(m) = args.memory_limit {
        b = b.memory_limit(m);
    }
    if let Some(f) = args.fuel {
        b = b.fuel(f);
    }
    for (k, v) in &args.env {
        b = b.env(k, v);
    }
    for (h, g) in &args.dirs {
        b = b.dir(h, g);
    }
    let rt = b.build_sync()?;
    let comp = rt
        .load_bytes_sync(&bytes)
        .with_context(|| format!("cannot load {}", args.component.display()))?;
    let driver = ferray::TaskOptions {
        resources: args.entrypoint.resources()?,
        ..ferray::TaskOptions::default()
    };
    let call = comp.call_wave(&args.function, &args.args, driver);
    let out = if bar {
        with_bar(&rt, call)?
    } else {
        rt.block_on(call)?
    };
    if !out.text.is_empty() {
        outln!("{}", out.text);
    }
    if out.is_err {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// How often the bar of `ferray run` reads the runtime's task counters.
const BAR_TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// Run `call`, the driver, on `rt` under a progress bar of the tasks it
/// submits (the runtime's counters, less the driver itself as on a cluster,
/// read every [`BAR_TICK`] by a thread of its own: the task path only
/// counts). Guests' output, collected, is printed above the bar as it
/// comes; the bar is gone when this returns.
fn with_bar<F: std::future::Future>(rt: &ferray::Runtime, call: F) -> F::Output {
    let bar = progress::Bar::new("");
    let show = |bar: &progress::Bar| {
        for l in rt.take_output() {
            bar.println(&format!("({}) {}", l.source, l.line));
        }
        let c = rt.task_counts();
        let total = c.submitted.saturating_sub(1);
        bar.set((c.finished + c.failed).min(total), total);
    };
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let out = std::thread::scope(|s| {
        let (bar, show) = (&bar, &show);
        s.spawn(move || {
            loop {
                show(bar);
                match stopped.recv_timeout(BAR_TICK) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            }
        });
        let out = rt.block_on(call);
        drop(stop);
        out
    });
    // The last output and counts, then the bar goes.
    show(&bar);
    out
}

fn inspect(path: PathBuf) -> Result<ExitCode> {
    let bytes = read_component(&path)?;
    // Read from the bytes: nothing is compiled.
    let info = ferray::Inspection::of(&bytes)
        .with_context(|| format!("cannot inspect {}", path.display()))?;
    outln!("component: {}", path.display());
    outln!("digest: {}", info.id);
    outln!("size: {} bytes", info.size);
    outln!("exports:");
    for line in info.info.export_lines() {
        outln!("  {line}");
    }
    outln!("imports:");
    for name in &info.info.imports {
        outln!("  {name}");
    }
    if info
        .info
        .imports
        .iter()
        .any(|n| n.starts_with("ferray:runtime/gpu"))
    {
        outln!("gpu: yes (imports ferray:runtime/gpu; submit its GPU functions with num_gpus > 0)");
    }
    Ok(ExitCode::SUCCESS)
}

/// The guest `ferray microbenchmark` measures: `guest-examples/bench`, built
/// by the build script (a Rust guest made with the SDK, as users write).
const BENCH_GUEST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bench.wasm"));

fn microbenchmark(args: BenchArgs) -> Result<ExitCode> {
    let target = match &args.address {
        Some(a) => ferray::bench::Target::Cluster {
            address: a.clone(),
            token: args.token.clone(),
        },
        None => ferray::bench::Target::Embedded,
    };
    let wanted = |name: &str| args.filter.as_deref().is_none_or(|f| name.contains(f));
    let mut lines = ferray::bench::run_all(
        &target,
        args.scale,
        args.filter.as_deref(),
        BENCH_GUEST,
        |line| outln!("{line}"),
    )?;
    if wanted("scheduler_placements_100_nodes") {
        let rate = scheduler_placements(args.scale);
        outln!(
            "{}",
            ferray::bench::line("scheduler_placements_100_nodes", rate, "per_second")
        );
        lines += 1;
    }
    if lines == 0 {
        bail!("no metric matches the filter");
    }
    Ok(ExitCode::SUCCESS)
}
