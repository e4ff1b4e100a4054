//! ferray train: data-parallel training of a component, after Ray Train.
//!
//! A [`Trainer`] runs a group of `num_workers` worker actors of a
//! component's worker class on a [`ferray::Runtime`] (embedded or connected
//! to a cluster). Each worker is rank `r` of a collective group of
//! `num_workers` (its guest sees `collective.rank`, `world-size` and
//! `all-reduce`, through `ferray_sdk::collective`), and the trainer drives
//! them in lockstep:
//!
//! - the class's constructor takes the training config (Ray's
//!   `train_loop_config`, a WIT record or parameters by name);
//! - `step() -> metrics` runs one step (an epoch, or whatever the guest
//!   calls one) on every worker at once; the workers all-reduce their
//!   gradients inside it; rank 0's metrics are the step's report (as Ray
//!   reports rank 0's);
//! - `save() -> list<u8>` on rank 0 makes a checkpoint every
//!   `checkpoint_freq` steps: kept by the driver, put in the object store,
//!   and written to `storage_path` when one is set;
//! - `restore(checkpoint: list<u8>)` starts every worker of a new group from
//!   the last checkpoint after a failure (a worker's node killed, a trap, an
//!   `err`): the whole group is killed and made again, at most
//!   `max_failures` times (Ray's `FailureConfig`), on whichever nodes have
//!   room.
//!
//! A worker class is also a trainable of ferray tune (a group of one), so
//! one component serves both.
//!
//! A class may instead run the whole loop itself, as Ray's
//! `train_loop_per_worker`: its `train-loop: func() -> result<_, string>`
//! method reports each step's metrics, and checkpoints when it wants to,
//! through `ferray_sdk::train::report`, and starts from
//! `ferray_sdk::train::checkpoint()` (the last one reported, after a
//! failure). The trainer opens a training run on every worker
//! ([`ActorHandle::open_train_run`]), calls `train-loop`, and takes every
//! worker's reports as they come ([`ActorHandle::next_report`]); rank 0's
//! make the curve and its checkpoints are kept as `save`'s are. Such a
//! class is chosen when it has `train-loop` and no `step`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use ferray::{ActorHandle, Component, FuncInfo, ObjectRef, Runtime};
use ferray_core::{Arg, Error};
use ferray_tune::Config;
use ferray_tune::trainable::{encode_config, metrics_of};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

/// What can go wrong before a run starts, or around it (a worker's failure
/// is in the [`TrainResult`]).
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The component, the config or the run's settings do not fit.
    #[error("{0}")]
    Config(String),
    /// The checkpoint directory.
    #[error("{0}")]
    Storage(String),
    #[error(transparent)]
    Runtime(#[from] Error),
}

/// How a run goes (Ray's `ScalingConfig`, `RunConfig`, `CheckpointConfig`
/// and `FailureConfig` in one).
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Workers of the group (Ray's `num_workers`).
    pub num_workers: u32,
    /// Each worker's CPUs and GPUs, held for its life.
    pub num_cpus: f64,
    pub num_gpus: f64,
    /// Steps to run; a `train-loop` class runs until its loop returns, or
    /// until rank 0 has made this many reports when it is not 0.
    pub steps: u64,
    /// A checkpoint every this many steps, and after the last (0: never;
    /// only classes that export `save` and `restore`; a `train-loop` class
    /// checkpoints when it reports one).
    pub checkpoint_freq: u64,
    /// The group is made again from the last checkpoint at most this many
    /// times (default 0, as Ray's `FailureConfig`).
    pub max_failures: u32,
    /// Where checkpoints are written (`checkpoint_000005.bin`, the bytes
    /// `save` returned), and where a run resumes from.
    pub storage_path: Option<PathBuf>,
    /// Start from the last checkpoint in `storage_path`, if any.
    pub resume: bool,
    /// The run's name: its groups are named after it (and after each fit,
    /// so that fits of one config never share a group).
    pub name: String,
}

impl TrainConfig {
    pub fn new(num_workers: u32, steps: u64) -> TrainConfig {
        TrainConfig {
            num_workers,
            num_cpus: 1.0,
            num_gpus: 0.0,
            steps,
            checkpoint_freq: 1,
            max_failures: 0,
            storage_path: None,
            resume: false,
            name: format!("train-{:x}", std::process::id() as u64 ^ nanos()),
        }
    }
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A checkpoint: `save`'s bytes after `step` steps.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub step: u64,
    pub bytes: Bytes,
    /// Its file, when the run has a storage path.
    pub path: Option<PathBuf>,
    /// The same bytes in the object store (what `restore` is given), freed
    /// once a later checkpoint of the same group replaces it.
    pub object: Option<ObjectRef>,
}

/// What a run did (Ray's `Result`).
#[derive(Debug, Clone)]
pub struct TrainResult {
    /// Rank 0's metrics of each step, in order: the curve.
    pub history: Vec<BTreeMap<String, f64>>,
    /// The last checkpoint.
    pub checkpoint: Option<Checkpoint>,
    /// How many times the group failed (and was made again, within
    /// `max_failures`).
    pub failures: u32,
    /// Why the run stopped short: its last failure, past `max_failures`.
    pub error: Option<String>,
    pub seconds: f64,
}

impl TrainResult {
    /// Rank 0's metrics of the last step.
    pub fn metrics(&self) -> Option<&BTreeMap<String, f64>> {
        self.history.last()
    }
}

/// What a run's progress callback hears.
#[derive(Debug)]
pub enum Event<'a> {
    /// Step `step` (from 1) ended; rank 0's metrics.
    Step {
        step: u64,
        metrics: &'a BTreeMap<String, f64>,
    },
    /// A checkpoint was taken.
    Checkpoint(&'a Checkpoint),
    /// The group failed; it starts again from `from_step` unless
    /// `max_failures` is spent.
    Failed {
        error: &'a str,
        failures: u32,
        from_step: u64,
    },
}

/// A data-parallel run over one component (Ray's `DataParallelTrainer`).
pub struct Trainer {
    rt: Runtime,
    comp: Component,
    class: String,
    mode: Mode,
    checkpoints: bool,
    args: Vec<u8>,
    config: TrainConfig,
}

/// How the trainer drives a worker class.
enum Mode {
    /// `step()` on every worker, once per step.
    Steps(FuncInfo),
    /// `train-loop()` once; its reports are the steps.
    Loop(FuncInfo),
}

/// Why a group stopped short.
enum Stop {
    /// A worker failed: the group is made again, within `max_failures`.
    Group(String),
    /// A checkpoint could not be written: the run ends with this error.
    Storage(TrainError),
}

/// A group of workers, killed when dropped.
struct Group(Vec<ActorHandle>);

impl Drop for Group {
    fn drop(&mut self) {
        for a in &self.0 {
            let _ = a.kill();
        }
    }
}

impl Trainer {
    /// A run of `class` (`None`: `worker`) of `comp`, whose constructor
    /// takes `loop_config`.
    pub fn new(
        rt: &Runtime,
        comp: &Component,
        class: Option<&str>,
        loop_config: &Config,
        config: TrainConfig,
    ) -> Result<Trainer, TrainError> {
        if config.num_workers == 0 || config.num_workers > ferray_core::GroupMember::MAX_WORLD {
            return Err(TrainError::Config(format!(
                "num_workers must be 1 to {}",
                ferray_core::GroupMember::MAX_WORLD
            )));
        }
        let name = class.unwrap_or("worker");
        let info = comp.info();
        let cls = info
            .class(name)
            .map_err(|e| TrainError::Config(e.to_string()))?;
        let (mode, checkpoints) = match (cls.methods.get("step"), cls.methods.get(LOOP)) {
            (Some(step), _) => {
                if config.steps == 0 {
                    return Err(TrainError::Config("steps must be at least 1".into()));
                }
                let saves = cls.methods.contains_key("save") && cls.methods.contains_key("restore");
                (Mode::Steps(step.clone()), saves)
            }
            (None, Some(f)) if f.param_names().next().is_none() => (Mode::Loop(f.clone()), true),
            (None, Some(f)) => {
                return Err(TrainError::Config(format!(
                    "`{name}.{LOOP}` takes no parameters (its config is the constructor's), not `{}`",
                    f.signature()
                )));
            }
            (None, None) => {
                return Err(TrainError::Config(format!(
                    "the worker class `{name}` has no `step` or `{LOOP}` method"
                )));
            }
        };
        if config.resume && !checkpoints {
            return Err(TrainError::Config(format!(
                "cannot resume: `{name}` exports no `save` and `restore`"
            )));
        }
        let what = format!("`{}`'s constructor", cls.name);
        let args = encode_config(&cls.constructor, loop_config, "the config", &what)
            .map_err(|e| TrainError::Config(e.to_string()))?;
        let cpus = rt.stats().resources_total.num_cpus();
        let need = config.num_cpus * f64::from(config.num_workers);
        // A client of a cluster counts no CPUs of its own: the head's
        // scheduler places the workers.
        if cpus > 0.0 && need > cpus + 1e-9 {
            return Err(TrainError::Config(format!(
                "{} workers of {} CPUs need {need} CPUs; the runtime has {cpus}",
                config.num_workers, config.num_cpus
            )));
        }
        Ok(Trainer {
            rt: rt.clone(),
            comp: comp.clone(),
            class: cls.name.clone(),
            mode,
            checkpoints,
            args,
            config,
        })
    }

    /// Run to the end (or past `max_failures`); `progress` hears each step,
    /// checkpoint and failure.
    pub async fn fit(
        &self,
        mut progress: impl FnMut(Event<'_>),
    ) -> Result<TrainResult, TrainError> {
        let cfg = &self.config;
        let started = Instant::now();
        if let Some(dir) = &cfg.storage_path {
            std::fs::create_dir_all(dir)
                .map_err(|e| TrainError::Storage(format!("{}: {e}", dir.display())))?;
        }
        let mut ckpt = match (&cfg.storage_path, cfg.resume) {
            (Some(dir), true) => latest_checkpoint(dir)?,
            _ => None,
        };
        let mut history: Vec<BTreeMap<String, f64>> = Vec::new();
        // The step the history starts after (a resumed run's checkpoint).
        let base = ckpt.as_ref().map_or(0, |c| c.step);
        let mut failures = 0u32;
        let mut attempt = 0u32;
        let fit_id = nanos();
        loop {
            let from = ckpt.as_ref().map_or(0, |c| c.step);
            history.truncate(from.saturating_sub(base).try_into().unwrap_or(usize::MAX));
            let run = self
                .attempt(fit_id, attempt, ckpt.clone(), &mut history, &mut progress)
                .await;
            attempt += 1;
            let result = |history, checkpoint, failures, error| TrainResult {
                history,
                checkpoint,
                failures,
                error,
                seconds: started.elapsed().as_secs_f64(),
            };
            match run {
                Ok(last) => {
                    if last.is_some() {
                        ckpt = last;
                    }
                    return Ok(result(history, ckpt, failures, None));
                }
                Err((Stop::Storage(e), _)) => return Err(e),
                Err((Stop::Group(e), last)) => {
                    if last.is_some() {
                        ckpt = last;
                    }
                    failures += 1;
                    let from_step = if self.checkpoints {
                        ckpt.as_ref().map_or(0, |c| c.step)
                    } else {
                        0
                    };
                    tracing::warn!("{}: the group failed ({failures}): {e}", cfg.name);
                    progress(Event::Failed {
                        error: &e,
                        failures,
                        from_step,
                    });
                    if failures > cfg.max_failures {
                        return Ok(result(history, ckpt, failures, Some(e)));
                    }
                    if !self.checkpoints {
                        ckpt = None;
                    }
                }
            }
        }
    }

    /// One group, from `ckpt`: its last checkpoint when it ends, or why it
    /// failed (with the last checkpoint it took).
    async fn attempt(
        &self,
        fit_id: u64,
        attempt: u32,
        ckpt: Option<Checkpoint>,
        history: &mut Vec<BTreeMap<String, f64>>,
        progress: &mut impl FnMut(Event<'_>),
    ) -> Result<Option<Checkpoint>, (Stop, Option<Checkpoint>)> {
        let cfg = &self.config;
        let group_name = format!("{}-{:x}-{attempt}", cfg.name, fit_id);
        let group = self
            .start(&group_name, ckpt.as_ref())
            .await
            .map_err(|e| (Stop::Group(e), None))?;
        let mut step = ckpt.as_ref().map_or(0, |c| c.step);
        let mut last = None;
        let step_fn = match &self.mode {
            Mode::Steps(f) => f,
            Mode::Loop(f) => return self.run_loop(&group, f, step, history, progress).await,
        };
        while step < cfg.steps {
            let metrics = match self.step_all(&group, step_fn).await {
                Ok(m) => m,
                Err(e) => return Err((Stop::Group(e), last)),
            };
            step += 1;
            history.push(metrics);
            if let Some(m) = history.last() {
                progress(Event::Step { step, metrics: m });
            }
            let due = cfg.checkpoint_freq > 0
                && (step.is_multiple_of(cfg.checkpoint_freq) || step == cfg.steps);
            if self.checkpoints && due {
                match self.save(&group.0[0], step).await {
                    Ok(c) => {
                        progress(Event::Checkpoint(&c));
                        self.replace(&mut last, c);
                    }
                    Err(e) => return Err((e, last)),
                }
            }
        }
        Ok(last)
    }

    /// Make the group's workers, wait until every one is placed and built,
    /// and restore each from `ckpt`.
    async fn start(&self, group: &str, ckpt: Option<&Checkpoint>) -> Result<Group, String> {
        let cfg = &self.config;
        let mut workers = Group(Vec::with_capacity(cfg.num_workers as usize));
        for rank in 0..cfg.num_workers {
            let a = self
                .comp
                .actor_encoded(&self.class, self.args.clone())
                .num_cpus(cfg.num_cpus)
                .and_then(|b| b.num_gpus(cfg.num_gpus))
                .and_then(|b| b.group(group, rank, cfg.num_workers))
                .map_err(|e| e.to_string())?
                .spawn()
                .await
                .map_err(|e| format!("rank {rank} could not start: {e}"))?;
            workers.0.push(a);
        }
        on_each(&workers, |rank, a| async move {
            a.ready()
                .await
                .map_err(|e| format!("rank {rank} could not start: {e}"))
        })
        .await?;
        if let Mode::Loop(_) = self.mode {
            let object = ckpt.map(|c| match &c.object {
                Some(r) => r.clone(),
                None => self.rt.put_encoded(Bytes::from(encode_bytes(&c.bytes))),
            });
            let object = object.as_ref();
            on_each(&workers, |rank, a| async move {
                a.open_train_run(object)
                    .await
                    .map_err(|e| format!("rank {rank} could not start its run: {e}"))
            })
            .await?;
        } else if let Some(c) = ckpt {
            let arg = match &c.object {
                Some(r) => Arg::Ref(r.clone()),
                None => Arg::Value(encode_bytes(&c.bytes)),
            };
            let arg = &arg;
            on_each(&workers, |rank, a| async move {
                let r = a
                    .call_with("restore", vec![arg.clone()])
                    .map_err(|e| e.to_string())?;
                let _free = self.rt.free_on_drop(&r);
                self.rt
                    .get_encoded(&r)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("rank {rank} could not restore: {e}"))
            })
            .await?;
        }
        Ok(workers)
    }

    /// One step on every worker; rank 0's metrics. The first failure ends
    /// it (the others may wait in an all-reduce for the failed one: the
    /// group is killed).
    async fn step_all(
        &self,
        group: &Group,
        step_fn: &FuncInfo,
    ) -> Result<BTreeMap<String, f64>, String> {
        let mut calls: FuturesUnordered<_> = group
            .0
            .iter()
            .enumerate()
            .map(|(rank, a)| async move {
                let m = async {
                    let r = a.call_with("step", Vec::new())?;
                    let _free = self.rt.free_on_drop(&r);
                    let bytes = self.rt.get_encoded(&r).await?;
                    metrics_of(step_fn, &bytes)
                }
                .await;
                (rank, m)
            })
            .collect();
        let mut rank0 = None;
        while let Some((rank, m)) = calls.next().await {
            match m {
                Ok(m) if rank == 0 => rank0 = Some(m),
                Ok(_) => {}
                Err(e) => return Err(format!("rank {rank}: {e}")),
            }
        }
        rank0.ok_or_else(|| "rank 0 gave no metrics".to_string())
    }

    /// A `train-loop` group from step `step`: `train-loop` on every worker,
    /// whose reports are taken in rounds, as Ray's `train.report` is a
    /// barrier: a worker's report returns once the trainer asks for its
    /// next, which it does when every worker has made this one (so rank 0's
    /// checkpoint is kept before any worker goes past it). Rank 0's reports
    /// are the steps. Ends when every loop has returned, or after `steps`
    /// reports.
    async fn run_loop(
        &self,
        group: &Group,
        f: &FuncInfo,
        mut step: u64,
        history: &mut Vec<BTreeMap<String, f64>>,
        progress: &mut impl FnMut(Event<'_>),
    ) -> Result<Option<Checkpoint>, (Stop, Option<Checkpoint>)> {
        let cfg = &self.config;
        let mut last = None;
        let mut calls = Vec::with_capacity(group.0.len());
        for a in &group.0 {
            let r = a
                .call_with(LOOP, Vec::new())
                .map_err(|e| (Stop::Group(e.to_string()), None))?;
            calls.push(r);
        }
        let _free: Vec<_> = calls.iter().map(|r| self.rt.free_on_drop(r)).collect();
        // A worker's next report, or how its loop ended once it reports no
        // more.
        let next = |rank: usize| {
            let (a, call) = (&group.0[rank], &calls[rank]);
            async move {
                let report = match a.next_report().await {
                    Ok(Some(r)) => return Ok(Some(r)),
                    Ok(None) => match self.rt.get_encoded(call).await {
                        Ok(b) if f.returns_err(&b) => Err(format!(
                            "`{LOOP}` returned {}",
                            f.wave_result(&b).unwrap_or_else(|e| e.to_string())
                        )),
                        Ok(_) => Ok(None),
                        Err(e) => Err(e.to_string()),
                    },
                    Err(e) => Err(e.to_string()),
                };
                report.map_err(|e| format!("rank {rank}: {e}"))
            }
        };
        let mut reporting: Vec<usize> = (0..group.0.len()).collect();
        while !reporting.is_empty() {
            let mut round: FuturesUnordered<_> = reporting
                .iter()
                .map(|&rank| {
                    let n = next(rank);
                    async move { (rank, n.await) }
                })
                .collect();
            let mut rank0 = None;
            let mut ended = Vec::new();
            reporting.clear();
            while let Some((rank, r)) = round.next().await {
                match r {
                    Ok(Some(report)) => {
                        reporting.push(rank);
                        if rank == 0 {
                            rank0 = Some(report);
                        }
                    }
                    Ok(None) => ended.push(rank),
                    Err(e) => return Err((Stop::Group(e), last)),
                }
            }
            drop(round);
            reporting.sort_unstable();
            // A report is a barrier: a worker that ended its loop while
            // others still report would leave them waiting.
            if !ended.is_empty() && !reporting.is_empty() {
                ended.sort_unstable();
                return Err((
                    Stop::Group(format!(
                        "ranks {ended:?} returned from `{LOOP}` after {step} reports while ranks \
                         {reporting:?} reported again: every worker reports as many times"
                    )),
                    last,
                ));
            }
            let Some(report) = rank0 else { continue };
            step += 1;
            history.push(report.metrics.into_iter().collect());
            if let Some(m) = history.last() {
                progress(Event::Step { step, metrics: m });
            }
            if let Some(bytes) = report.checkpoint {
                let c = self
                    .keep(step, Bytes::from(encode_bytes(&bytes)), Bytes::from(bytes))
                    .map_err(|e| (e, last.clone()))?;
                progress(Event::Checkpoint(&c));
                self.replace(&mut last, c);
            }
            if cfg.steps > 0 && step >= cfg.steps {
                break;
            }
        }
        Ok(last)
    }

    /// Rank 0's checkpoint after `step` steps: kept, put in the object
    /// store, and written to the storage path.
    async fn save(&self, rank0: &ActorHandle, step: u64) -> Result<Checkpoint, Stop> {
        let r = rank0
            .call_with("save", Vec::new())
            .map_err(|e| Stop::Group(e.to_string()))?;
        let _free = self.rt.free_on_drop(&r);
        let encoded = self
            .rt
            .get_encoded(&r)
            .await
            .map_err(|e| Stop::Group(format!("rank 0 could not save: {e}")))?;
        let bytes = decode_bytes(&encoded)
            .ok_or_else(|| Stop::Group("`save` must return list<u8>".to_string()))?;
        self.keep(step, encoded, bytes)
    }

    /// `c` is this group's last checkpoint: the one it replaces is freed
    /// (a restart starts from `c`, or from the checkpoint the group started
    /// from, which is not this one).
    fn replace(&self, last: &mut Option<Checkpoint>, c: Checkpoint) {
        if let Some(old) = last.replace(c).and_then(|o| o.object) {
            self.rt.free(&[old]);
        }
    }

    /// A checkpoint of `step` steps (`bytes`, and `encoded` as a
    /// `list<u8>`): put in the object store, and written to the storage
    /// path.
    fn keep(&self, step: u64, encoded: Bytes, bytes: Bytes) -> Result<Checkpoint, Stop> {
        let object = Some(self.rt.put_encoded(encoded));
        // A checkpoint that cannot be written stops the run: the group is
        // not at fault, and making it again would not help.
        let path = match &self.config.storage_path {
            Some(dir) => Some(write_checkpoint(dir, step, &bytes).map_err(Stop::Storage)?),
            None => None,
        };
        Ok(Checkpoint {
            step,
            bytes,
            path,
            object,
        })
    }
}

/// `f` on every worker of `group` at once; the first error.
async fn on_each<'a, F, Fut>(group: &'a Group, f: F) -> Result<(), String>
where
    F: Fn(usize, &'a ActorHandle) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut all: FuturesUnordered<_> = group
        .0
        .iter()
        .enumerate()
        .map(|(rank, a)| f(rank, a))
        .collect();
    while let Some(r) = all.next().await {
        r?;
    }
    Ok(())
}

/// A `list<u8>` canonically encoded: its length (LEB128), then its bytes.
fn encode_bytes(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() + 10);
    let mut n = b.len() as u64;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(b);
    out
}

/// The bytes of a canonically encoded `list<u8>`, if `enc` is one.
fn decode_bytes(enc: &[u8]) -> Option<Bytes> {
    let mut n = 0u64;
    for (i, &byte) in enc.iter().enumerate().take(10) {
        n |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let rest = &enc[i + 1..];
            return (rest.len() as u64 == n).then(|| Bytes::copy_from_slice(rest));
        }
    }
    None
}

/// The method of a class that runs the whole loop.
const LOOP: &str = "train-loop";

/// Whether `class` of `comp` runs its own loop (it has `train-loop` and no
/// `step`), so that a run of it has no number of steps of its own.
pub fn runs_a_loop(comp: &Component, class: &str) -> bool {
    comp.info()
        .class(class)
        .is_ok_and(|c| c.methods.contains_key(LOOP) && !c.methods.contains_key("step"))
}

fn checkpoint_name(step: u64) -> String {
    format!("checkpoint_{step:06}.bin")
}

/// Written whole, then renamed: a file of that name is a whole checkpoint.
fn write_checkpoint(dir: &Path, step: u64, bytes: &[u8]) -> Result<PathBuf, TrainError> {
    let path = dir.join(checkpoint_name(step));
    let tmp = dir.join(format!(".{}.tmp", checkpoint_name(step)));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| TrainError::Storage(format!("{}: {e}", path.display())))?;
    Ok(path)
}

/// The checkpoint of the most steps in `dir`.
pub fn latest_checkpoint(dir: &Path) -> Result<Option<Checkpoint>, TrainError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(TrainError::Storage(format!("{}: {e}", dir.display()))),
    };
    let mut best: Option<(u64, PathBuf)> = None;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(step) = name
            .to_str()
            .and_then(|n| n.strip_prefix("checkpoint_"))
            .and_then(|n| n.strip_suffix(".bin"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if best.as_ref().is_none_or(|(s, _)| step > *s) {
            best = Some((step, e.path()));
        }
    }
    let Some((step, path)) = best else {
        return Ok(None);
    };
    let bytes = std::fs::read(&path)
        .map_err(|e| TrainError::Storage(format!("{}: {e}", path.display())))?;
    Ok(Some(Checkpoint {
        step,
        bytes: Bytes::from(bytes),
        path: Some(path),
        object: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_u8_encoding_round_trips() {
        for n in [0usize, 1, 127, 128, 300, 70_000] {
            let b: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let enc = encode_bytes(&b);
            assert_eq!(decode_bytes(&enc).as_deref(), Some(&b[..]), "{n}");
        }
        assert_eq!(decode_bytes(&[5, 1, 2]), None, "a short list is refused");
        assert_eq!(decode_bytes(&[]), None);
    }

    #[test]
    fn the_latest_checkpoint_is_the_one_of_most_steps() {
        let dir = tempfile::tempdir().unwrap();
        assert!(latest_checkpoint(dir.path()).unwrap().is_none());
        for (step, b) in [(2u64, b"two"), (10, b"ten"), (9, b"nin")] {
            write_checkpoint(dir.path(), step, b).unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        let c = latest_checkpoint(dir.path()).unwrap().unwrap();
        assert_eq!((c.step, &c.bytes[..]), (10, &b"ten"[..]));
        assert!(c.path.unwrap().ends_with("checkpoint_000010.bin"));
    }
}
