//! `ferray train`: data-parallel training of a component's worker class
//! (a group of workers that all-reduce), on the embedded runtime or a
//! cluster (`--address`): each step's metrics (rank 0's) printed as they
//! come, checkpoints written to the storage path, the group made again from
//! the last one after a failure.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use ferray_train::{Event, TrainConfig, Trainer};
use ferray_tune::{Domain, Space};

use crate::args;

#[derive(clap::Args, Debug)]
pub(crate) struct TrainArgs {
    #[command(flatten)]
    node: args::NodeArgs,
    /// The component (.wasm).
    component: PathBuf,
    /// The training config (TOML, one value per field of the worker's
    /// config), given to every worker's constructor.
    #[arg(long, value_name = "CONFIG.toml")]
    config: PathBuf,
    /// The worker class: an exported resource with `step` (and `save` and
    /// `restore` for checkpoints), or with `train-loop`, which runs the
    /// whole loop and reports each step (ferray_sdk::train).
    #[arg(long, value_name = "NAME", default_value = "worker")]
    class: String,
    /// Workers of the group.
    #[arg(long, default_value_t = 1)]
    num_workers: u32,
    /// Steps to run (left out: 10); a `train-loop` class runs until its
    /// loop returns, or until it has reported this many steps.
    #[arg(long)]
    steps: Option<u64>,
    /// CPUs of each worker.
    #[arg(long, default_value_t = 1.0)]
    worker_cpus: f64,
    /// GPUs of each worker.
    #[arg(long, default_value_t = 0.0)]
    worker_gpus: f64,
    /// A checkpoint every this many steps, and after the last (0: never; a
    /// `train-loop` class checkpoints when it reports one).
    #[arg(long, default_value_t = 1)]
    checkpoint_freq: u64,
    /// The group is made again from the last checkpoint at most this many
    /// times.
    #[arg(long, default_value_t = 0)]
    max_failures: u32,
    /// Where checkpoints go (checkpoint_000005.bin: what `save` returned).
    #[arg(long, value_name = "DIR", default_value = "train-results")]
    storage_path: PathBuf,
    /// Start from the last checkpoint in the storage path.
    #[arg(long)]
    resume: bool,
    /// A cluster's head; without it training runs on the embedded runtime.
    #[arg(long, value_name = "HOST:PORT")]
    address: Option<String>,
    /// The cluster token (default: FERRAY_TOKEN, else the head's token file).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
}

pub(crate) fn train(args: TrainArgs) -> Result<ExitCode> {
    let space = Space::from_file(&args.config)?;
    let mut config = ferray_tune::Config::new();
    for (k, d) in space.params {
        match d {
            Domain::Const(v) => {
                config.insert(k, v);
            }
            _ => bail!(
                "{}: `{k}` is a search domain; ferray train takes plain values (search with \
                 ferray tune)",
                args.config.display()
            ),
        }
    }
    let (rt, comp) = args.node.driver_with(
        &args.component,
        args.address.as_deref(),
        args.token.as_deref(),
    )?;
    let steps = match args.steps {
        Some(n) => n,
        None if ferray_train::runs_a_loop(&comp, &args.class) => 0,
        None => 10,
    };
    let mut tc = TrainConfig::new(args.num_workers, steps);
    tc.num_cpus = args.worker_cpus;
    tc.num_gpus = args.worker_gpus;
    tc.checkpoint_freq = args.checkpoint_freq;
    tc.max_failures = args.max_failures;
    tc.storage_path = Some(args.storage_path.clone());
    tc.resume = args.resume;
    let trainer = Trainer::new(&rt, &comp, Some(&args.class), &config, tc)?;
    let result = rt.block_on(trainer.fit(|ev| match ev {
        Event::Step { step, metrics } => {
            let m: Vec<String> = metrics
                .iter()
                .map(|(k, v)| match v.fract() == 0.0 && v.abs() < 1e15 {
                    true => format!("{k}={}", *v as i64),
                    false => format!("{k}={v:.6}"),
                })
                .collect();
            outln!("step {step}: {}", m.join(" "));
        }
        Event::Checkpoint(c) => {
            if let Some(p) = &c.path {
                eprintln!("checkpoint after step {}: {}", c.step, p.display());
            }
        }
        Event::Failed {
            error,
            failures,
            from_step,
        } => eprintln!(
            "the group failed ({failures}/{}): {}; {}",
            args.max_failures,
            error.lines().next().unwrap_or(""),
            if failures > args.max_failures {
                "no failures left".to_string()
            } else {
                format!("starting again from step {from_step}")
            }
        ),
    }))?;
    eprintln!(
        "{} steps of {} workers in {:.2} s, {} failures",
        result.history.len(),
        args.num_workers,
        result.seconds,
        result.failures
    );
    if let Some(e) = &result.error {
        bail!("training failed: {}", e.lines().next().unwrap_or(""));
    }
    if let Some(c) = result.checkpoint.as_ref().and_then(|c| c.path.as_ref()) {
        outln!("checkpoint: {}", c.display());
    }
    Ok(ExitCode::SUCCESS)
}
