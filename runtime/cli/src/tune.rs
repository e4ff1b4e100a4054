//! `ferray tune`: a hyper-parameter search over a component's trainable,
//! on the embedded runtime or a cluster (`--address`): a live table of the
//! trials on a terminal, the result grid written as CSV and JSON, the best
//! config printed.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use ferray_tune::{Mode, SchedulerConfig, Space, TuneConfig, Tuner};

use crate::{args, progress};

#[derive(clap::Args, Debug)]
pub(crate) struct TuneArgs {
    #[command(flatten)]
    node: args::NodeArgs,
    /// The component (.wasm).
    component: PathBuf,
    /// The search space (TOML: grid_search, choice, uniform, quniform,
    /// loguniform, randint, or a constant per parameter).
    #[arg(long, value_name = "SPACE.toml")]
    space: PathBuf,
    /// The metric to optimize (a field of what the trainable returns).
    #[arg(long)]
    metric: String,
    /// Whether lower (min) or higher (max) is better.
    #[arg(long, value_parser = ["min", "max"])]
    mode: String,
    /// How many times the space (its whole grid) is sampled.
    #[arg(long, default_value_t = 1)]
    num_samples: usize,
    /// fifo, asha or median.
    #[arg(long, default_value = "fifo", value_parser = ["fifo", "asha", "median"])]
    scheduler: String,
    /// The most iterations of a trial.
    #[arg(long, default_value_t = 100)]
    max_t: u64,
    /// ASHA and the median rule stop no trial before this many iterations.
    #[arg(long, default_value_t = 1)]
    grace_period: u64,
    /// ASHA keeps the best 1/reduction_factor at each rung.
    #[arg(long, default_value_t = 4.0)]
    reduction_factor: f64,
    /// ASHA's brackets.
    #[arg(long, default_value_t = 1)]
    brackets: u32,
    /// The median rule compares once this many other trials got as far.
    #[arg(long, default_value_t = 3)]
    min_samples_required: usize,
    /// The trainable: an exported resource with `step`, or a function
    /// (default: the resource `trial`).
    #[arg(long, value_name = "NAME")]
    trainable: Option<String>,
    /// At most this many trials at once (default: as many as the embedded
    /// runtime's CPUs allow; 4 on a cluster).
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_concurrent_trials: usize,
    /// The seed of the search's sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A trial saves a checkpoint every this many iterations (0: never).
    #[arg(long, default_value_t = 1)]
    checkpoint_freq: u64,
    /// A failed trial starts again from its last checkpoint at most this
    /// many times.
    #[arg(long, default_value_t = 3)]
    max_failures: u32,
    /// CPUs of each trial.
    #[arg(long, default_value_t = 1.0)]
    trial_cpus: f64,
    /// GPUs of each trial.
    #[arg(long, default_value_t = 0.0)]
    trial_gpus: f64,
    /// Where the result grid goes (results.csv, results.json).
    #[arg(long, value_name = "DIR", default_value = "tune-results")]
    output: PathBuf,
    /// A cluster's head; without it the search runs on the embedded runtime.
    #[arg(long, value_name = "HOST:PORT")]
    address: Option<String>,
    /// The cluster token (default: FERRAY_TOKEN, else the head's token file).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
}

pub(crate) fn tune(args: TuneArgs) -> Result<ExitCode> {
    let space = Space::from_file(&args.space)?;
    let mode: Mode = args.mode.parse().map_err(anyhow::Error::msg)?;
    let scheduler = match args.scheduler.as_str() {
        "asha" => SchedulerConfig::Asha {
            max_t: args.max_t,
            grace_period: args.grace_period,
            reduction_factor: args.reduction_factor,
            brackets: args.brackets,
        },
        "median" => SchedulerConfig::Median {
            grace_period: args.grace_period,
            min_samples_required: args.min_samples_required,
        },
        _ => SchedulerConfig::Fifo,
    };
    let mut config = TuneConfig::new(&args.metric, mode);
    config.num_samples = args.num_samples;
    config.scheduler = scheduler;
    config.max_t = args.max_t;
    config.seed = args.seed;
    config.max_concurrent_trials = args.max_concurrent_trials;
    config.checkpoint_freq = args.checkpoint_freq;
    config.max_failures = args.max_failures;
    config.num_cpus = args.trial_cpus;
    config.num_gpus = args.trial_gpus;
    if args.max_t == 0 {
        bail!("--max-t must be at least 1");
    }
    let (rt, comp) = args.node.driver_with(
        &args.component,
        args.address.as_deref(),
        args.token.as_deref(),
    )?;
    let tuner = Tuner::new(&rt, &comp, args.trainable.as_deref(), space, config)?;
    let live = progress::stderr_is_terminal();
    let mut drawn_lines = 0usize;
    let mut last_draw: Option<std::time::Instant> = None;
    let grid = rt.block_on(tuner.run(|p| {
        if !live || last_draw.is_some_and(|t| t.elapsed() < ferray_tune::REDRAW) {
            return;
        }
        last_draw = Some(std::time::Instant::now());
        let table = p.grid().table(20);
        let mut err = std::io::stderr().lock();
        // Move up over the last table and clear to the end of the screen.
        if drawn_lines > 0 {
            let _ = write!(err, "\x1b[{drawn_lines}A\x1b[J");
        }
        let _ = write!(err, "{table}");
        drawn_lines = table.lines().count();
    }))?;
    if live && drawn_lines > 0 {
        let _ = write!(std::io::stderr(), "\x1b[{drawn_lines}A\x1b[J");
    }
    eprint!("{}", grid.table(usize::MAX));
    for t in &grid.trials {
        if let Some(e) = &t.error {
            eprintln!("trial {}: {}", t.id, e.lines().next().unwrap_or(""));
        }
    }
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let csv = args.output.join("results.csv");
    let json = args.output.join("results.json");
    std::fs::write(&csv, grid.to_csv())
        .with_context(|| format!("cannot write {}", csv.display()))?;
    std::fs::write(&json, grid.to_json())
        .with_context(|| format!("cannot write {}", json.display()))?;
    eprintln!(
        "{} trials, {} iterations in {:.2} s; the result grid: {} and {}",
        grid.trials.len(),
        grid.total_iterations(),
        grid.seconds,
        csv.display(),
        json.display()
    );
    match grid.best() {
        Some(best) => {
            let cfg: Vec<String> = best
                .config
                .iter()
                .map(|(k, v)| format!("{k}={}", v.full()))
                .collect();
            let value = best.metrics.get(&args.metric).copied().unwrap_or(f64::NAN);
            outln!(
                "best trial {}: {} = {value:?} ({} iterations) config: {}",
                best.id,
                args.metric,
                best.iterations,
                cfg.join(" ")
            );
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let why = grid
                .trials
                .iter()
                .find_map(|t| t.error.clone())
                .unwrap_or_else(|| format!("no trial reported `{}`", args.metric));
            bail!("no trial finished: {why}")
        }
    }
}
