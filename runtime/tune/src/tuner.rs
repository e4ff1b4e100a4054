//! The tuner: trials of a component over a search space, on any
//! [`ferray::Runtime`] (embedded or connected to a cluster).
//!
//! A trainable is either an exported resource (an actor class, `trial` by
//! default) with a constructor taking the config, `step() -> metrics` and,
//! optionally, `save() -> list<u8>` and `restore(checkpoint: list<u8>)`; or
//! an exported function `func(config) -> metrics`, one call per trial. The
//! config is a WIT record (one parameter), or parameters by name. Metrics
//! are a record of numbers, or `list<tuple<string, f64>>`, optionally in a
//! `result<_, string>` (an `err` fails the trial).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferray::{ActorHandle, Component, FuncInfo, Runtime};
use ferray_core::{Arg, Error};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;

use crate::TuneError;
use crate::grid::{ResultGrid, TrialResult, TrialStatus};
use crate::sched::{Decision, Mode, Scheduler, SchedulerConfig};
use crate::space::{Config, Space};
use crate::trainable::{encode_config, metrics_of};

/// What a search runs and how (Ray's `TuneConfig`, `RunConfig` and
/// `FailureConfig` in one).
#[derive(Debug, Clone)]
pub struct TuneConfig {
    /// The metric the scheduler and the best trial go by.
    pub metric: String,
    pub mode: Mode,
    /// How many times the space (its whole grid) is sampled.
    pub num_samples: usize,
    /// At most this many trials at once (0: as many as the runtime's CPUs
    /// allow; 4 for a client of a cluster, which has none of its own).
    pub max_concurrent_trials: usize,
    pub scheduler: SchedulerConfig,
    /// With FIFO or the median rule, a trial stops after this many
    /// iterations (ASHA has its own `max_t`).
    pub max_t: u64,
    /// The seed of the search's sampling.
    pub seed: u64,
    /// A trial saves a checkpoint every this many iterations (0: never;
    /// only trainables that export `save` and `restore`).
    pub checkpoint_freq: u64,
    /// A trial whose actor dies (its node lost, killed) starts again from
    /// its last checkpoint at most this many times.
    pub max_failures: u32,
    /// Each trial's resources.
    pub num_cpus: f64,
    pub num_gpus: f64,
}

impl TuneConfig {
    pub fn new(metric: &str, mode: Mode) -> TuneConfig {
        TuneConfig {
            metric: metric.to_string(),
            mode,
            num_samples: 1,
            max_concurrent_trials: 0,
            scheduler: SchedulerConfig::Fifo,
            max_t: 100,
            seed: 0,
            checkpoint_freq: 1,
            max_failures: 3,
            num_cpus: 1.0,
            num_gpus: 0.0,
        }
    }

    fn max_t(&self) -> u64 {
        match &self.scheduler {
            SchedulerConfig::Asha { max_t, .. } => *max_t,
            _ => self.max_t,
        }
    }
}

/// How a trainable is called.
#[derive(Debug, Clone)]
enum Trainable {
    Class {
        name: String,
        ctor: FuncInfo,
        step: FuncInfo,
        checkpoints: bool,
    },
    Function {
        name: String,
        func: FuncInfo,
    },
}

/// A search over one component (Ray's `Tuner`).
pub struct Tuner {
    rt: Runtime,
    comp: Component,
    trainable: Trainable,
    space: Space,
    config: TuneConfig,
}

/// A search in progress, as [`Tuner::run`] shows it.
pub struct Progress<'a> {
    tuner: &'a Tuner,
    trials: &'a [Trial],
    started: Instant,
}

impl Progress<'_> {
    /// The grid as it stands: every trial's status, config and metrics.
    pub fn grid(&self) -> ResultGrid {
        self.tuner.grid(self.trials, self.started)
    }
}

/// A trial as the tuner tracks it.
struct Trial {
    config: Config,
    args: Vec<u8>,
    status: TrialStatus,
    iterations: u64,
    last: BTreeMap<String, f64>,
    best: Option<f64>,
    actor: Option<ActorHandle>,
    /// The last checkpoint (`save`'s result, canonically encoded: what
    /// `restore` takes), and the iteration it was taken at. The driver
    /// keeps it: an object would go with the node that made it, which is
    /// when a checkpoint is needed.
    checkpoint: Option<(Vec<u8>, u64)>,
    failures: u32,
    error: Option<String>,
    started: Option<Instant>,
    seconds: f64,
}

/// What came back for a trial.
enum Event {
    Started(Result<ActorHandle, Error>),
    Step(Result<BTreeMap<String, f64>, Error>, Option<Vec<u8>>),
}

impl Tuner {
    /// A search of `space` over `trainable` of `comp`: an actor class (a
    /// resource with `step`) or a function. `None` picks the class `trial`.
    pub fn new(
        rt: &Runtime,
        comp: &Component,
        trainable: Option<&str>,
        space: Space,
        config: TuneConfig,
    ) -> Result<Tuner, TuneError> {
        config.scheduler.check().map_err(TuneError::Config)?;
        if config.num_samples == 0 {
            return Err(TuneError::Config("num_samples must be at least 1".into()));
        }
        let info = comp.info();
        let name = trainable.unwrap_or("trial");
        let trainable = match info.class(name) {
            Ok(class) => {
                let step = class.methods.get("step").cloned().ok_or_else(|| {
                    TuneError::Config(format!("the trainable class `{name}` has no `step` method"))
                })?;
                let checkpoints =
                    class.methods.contains_key("save") && class.methods.contains_key("restore");
                Trainable::Class {
                    name: class.name.clone(),
                    ctor: class.constructor.clone(),
                    step,
                    checkpoints,
                }
            }
            Err(class_err) => match info.function(name) {
                Ok(f) => Trainable::Function {
                    name: f.name.clone(),
                    func: (**f).clone(),
                },
                Err(_) => return Err(TuneError::Config(class_err.to_string())),
            },
        };
        let tuner = Tuner {
            rt: rt.clone(),
            comp: comp.clone(),
            trainable,
            space,
            config,
        };
        // Every parameter of the space must be one the trainable takes,
        // with a value of its type: checked on a first config, before any
        // trial runs.
        if let Some(c) = tuner.space.generate(1, tuner.config.seed).first() {
            tuner.encode(c)?;
        }
        Ok(tuner)
    }

    /// What takes the config, for error messages.
    fn what(&self) -> String {
        match &self.trainable {
            Trainable::Class { name, .. } => format!("`{name}`'s constructor"),
            Trainable::Function { name, .. } => format!("`{name}`"),
        }
    }

    fn config_func(&self) -> &FuncInfo {
        match &self.trainable {
            Trainable::Class { ctor, .. } => ctor,
            Trainable::Function { func, .. } => func,
        }
    }

    /// A config as the trainable's arguments, canonically encoded.
    fn encode(&self, c: &Config) -> Result<Vec<u8>, TuneError> {
        encode_config(self.config_func(), c, "the space", &self.what())
    }

    fn default_concurrency(&self) -> usize {
        let cpus = self.rt.stats().resources_total.num_cpus();
        let per = self.config.num_cpus.max(0.01);
        match (cpus / per).floor() as usize {
            0 => 4,
            n => n,
        }
    }

    /// Run the search to its end; `progress` is told of each change (for a
    /// live table), and builds the grid of the moment only if it asks
    /// ([`Progress::grid`]: a copy of every trial, too much for each of a
    /// large search's events).
    pub async fn run(
        &self,
        mut progress: impl FnMut(&Progress<'_>),
    ) -> Result<ResultGrid, TuneError> {
        let cfg = &self.config;
        let configs = self.space.generate(cfg.num_samples, cfg.seed);
        let mut trials = Vec::with_capacity(configs.len());
        for c in configs {
            let args = self.encode(&c)?;
            trials.push(Trial {
                config: c,
                args,
                status: TrialStatus::Pending,
                iterations: 0,
                last: BTreeMap::new(),
                best: None,
                actor: None,
                checkpoint: None,
                failures: 0,
                error: None,
                started: None,
                seconds: 0.0,
            });
        }
        let limit = match cfg.max_concurrent_trials {
            0 => self.default_concurrency(),
            n => n,
        };
        let mut sched = Scheduler::new(&cfg.scheduler, cfg.mode, cfg.seed);
        let mut inflight: FuturesUnordered<BoxFuture<'static, (usize, Event)>> =
            FuturesUnordered::new();
        let mut next = 0usize;
        let mut running = 0usize;
        let started = Instant::now();
        loop {
            while running < limit && next < trials.len() {
                let i = next;
                next += 1;
                running += 1;
                sched.on_trial_add(i);
                trials[i].status = TrialStatus::Running;
                trials[i].started = Some(Instant::now());
                inflight.push(self.start(i, &trials[i]));
            }
            progress(&Progress {
                tuner: self,
                trials: &trials,
                started,
            });
            let Some((i, ev)) = inflight.next().await else {
                break;
            };
            let follow = self.handle(&mut trials[i], i, ev, &mut sched);
            match follow {
                Some(f) => inflight.push(f),
                None => {
                    running -= 1;
                    sched.on_trial_complete(i);
                    let t = &mut trials[i];
                    if let Some(a) = t.actor.take() {
                        let _ = a.kill();
                    }
                    t.checkpoint = None;
                    if let Some(s) = t.started {
                        t.seconds = s.elapsed().as_secs_f64();
                    }
                }
            }
        }
        progress(&Progress {
            tuner: self,
            trials: &trials,
            started,
        });
        Ok(self.grid(&trials, started))
    }

    fn grid(&self, trials: &[Trial], started: Instant) -> ResultGrid {
        ResultGrid {
            metric: self.config.metric.clone(),
            mode: self.config.mode,
            seconds: started.elapsed().as_secs_f64(),
            trials: trials
                .iter()
                .enumerate()
                .map(|(i, t)| TrialResult {
                    id: i,
                    status: t.status,
                    config: t.config.clone(),
                    iterations: t.iterations,
                    metrics: t.last.clone(),
                    best: t.best,
                    error: t.error.clone(),
                    failures: t.failures,
                    seconds: match (t.status, t.started) {
                        (TrialStatus::Running, Some(s)) => s.elapsed().as_secs_f64(),
                        _ => t.seconds,
                    },
                })
                .collect(),
        }
    }

    /// A trial begins: its actor is made (and restored from its checkpoint
    /// after a failure), or its function called.
    fn start(&self, i: usize, t: &Trial) -> BoxFuture<'static, (usize, Event)> {
        match &self.trainable {
            Trainable::Class { name, .. } => {
                let b = self
                    .comp
                    .actor_encoded(name, t.args.clone())
                    .num_cpus(self.config.num_cpus)
                    .and_then(|b| b.num_gpus(self.config.num_gpus));
                let ckpt = t.checkpoint.as_ref().map(|(c, _)| c.clone());
                let rt = self.rt.clone();
                Box::pin(async move {
                    let r = async {
                        let a = b?.spawn().await?;
                        a.ready().await?;
                        if let Some(c) = ckpt {
                            let r = a.call_with("restore", vec![Arg::Value(c)])?;
                            let _free = rt.free_on_drop(&r);
                            rt.get_encoded(&r).await?;
                        }
                        Ok(a)
                    }
                    .await;
                    (i, Event::Started(r))
                })
            }
            Trainable::Function { name, func } => {
                let task = self
                    .comp
                    .task(name)
                    .arg_encoded(t.args.clone())
                    .num_cpus(self.config.num_cpus)
                    .and_then(|b| b.num_gpus(self.config.num_gpus))
                    .and_then(|b| b.submit());
                let rt = self.rt.clone();
                let func = func.clone();
                Box::pin(async move {
                    let m = async {
                        let r = task?;
                        let _free = rt.free_on_drop(&r);
                        let bytes = rt.get_encoded(&r).await?;
                        metrics_of(&func, &bytes)
                    }
                    .await;
                    (i, Event::Step(m, None))
                })
            }
        }
    }

    /// One step of a trial's actor, then its checkpoint when one is due.
    fn step(&self, i: usize, a: &ActorHandle, save: bool) -> BoxFuture<'static, (usize, Event)> {
        let step = match &self.trainable {
            Trainable::Class { step, .. } => step.clone(),
            Trainable::Function { .. } => {
                let e = Error::Other("a function trainable has no steps".into());
                return Box::pin(async move { (i, Event::Step(Err(e), None)) });
            }
        };
        let a = a.clone();
        let rt = self.rt.clone();
        Box::pin(async move {
            let m = async {
                let r = a.call_with("step", Vec::new())?;
                let _free = rt.free_on_drop(&r);
                let bytes = rt.get_encoded(&r).await?;
                metrics_of(&step, &bytes)
            }
            .await;
            let ckpt = match (&m, save) {
                // A save that fails leaves the last checkpoint (the trial
                // goes on; its actor's death, if that is why, shows at
                // the next step).
                (Ok(_), true) => match a.call_with("save", Vec::new()) {
                    Ok(r) => {
                        let _free = rt.free_on_drop(&r);
                        rt.get_encoded(&r).await.ok().map(|b| b.to_vec())
                    }
                    Err(_) => None,
                },
                _ => None,
            };
            (i, Event::Step(m, ckpt))
        })
    }

    /// What follows an event of trial `i`: its next call, or `None` when
    /// it has ended.
    fn handle(
        &self,
        t: &mut Trial,
        i: usize,
        ev: Event,
        sched: &mut Scheduler,
    ) -> Option<BoxFuture<'static, (usize, Event)>> {
        let cfg = &self.config;
        let (metrics, ckpt) = match ev {
            Event::Started(Ok(a)) => {
                let f = self.step(i, &a, self.save_due(t.iterations + 1));
                t.actor = Some(a);
                return Some(f);
            }
            Event::Started(Err(e)) => return self.failed(t, i, e),
            Event::Step(m, ckpt) => (m, ckpt),
        };
        let m = match metrics {
            Ok(m) => m,
            Err(e) => return self.failed(t, i, e),
        };
        t.iterations += 1;
        let Some(value) = m.get(&cfg.metric).copied() else {
            let known: Vec<&str> = m.keys().map(String::as_str).collect();
            t.status = TrialStatus::Error;
            t.error = Some(format!(
                "the trial reported no metric `{}` (it reported: {})",
                cfg.metric,
                known.join(", ")
            ));
            t.last = m;
            return None;
        };
        t.last = m;
        if t.best.is_none_or(|b| cfg.mode.better(value, b)) {
            t.best = Some(value);
        }
        if let Some(c) = ckpt {
            t.checkpoint = Some((c, t.iterations));
        }
        let Some(a) = t.actor.clone() else {
            // A function trial: one call is all of it.
            t.status = TrialStatus::Terminated;
            return None;
        };
        let decision = sched.on_result(i, t.iterations, value);
        if t.iterations >= cfg.max_t() {
            t.status = TrialStatus::Terminated;
            return None;
        }
        if decision == Decision::Stop {
            t.status = TrialStatus::Stopped;
            return None;
        }
        Some(self.step(i, &a, self.save_due(t.iterations + 1)))
    }

    fn save_due(&self, iteration: u64) -> bool {
        matches!(
            self.trainable,
            Trainable::Class {
                checkpoints: true,
                ..
            }
        ) && self.config.checkpoint_freq > 0
            && iteration.is_multiple_of(self.config.checkpoint_freq)
    }

    /// A trial's call failed (its actor died with its node or was killed,
    /// the guest trapped or returned `err`): within `max_failures` it
    /// starts again on a new actor from its last checkpoint, as Ray's
    /// `FailureConfig` does. What cannot go otherwise the next time (a
    /// config or metrics that do not fit, resources no node has) ends it.
    fn failed(
        &self,
        t: &mut Trial,
        i: usize,
        e: Error,
    ) -> Option<BoxFuture<'static, (usize, Event)>> {
        let again = !matches!(
            e,
            Error::InvalidArgument(_) | Error::NotFound(_) | Error::Infeasible(_)
        );
        if again
            && t.failures < self.config.max_failures
            && matches!(self.trainable, Trainable::Class { .. })
        {
            t.failures += 1;
            if let Some(a) = t.actor.take() {
                let _ = a.kill();
            }
            t.iterations = t.checkpoint.as_ref().map_or(0, |(_, it)| *it);
            tracing::warn!(
                "trial {i} failed ({}); starting it again from iteration {}",
                e.to_string().lines().next().unwrap_or(""),
                t.iterations
            );
            return Some(self.start(i, t));
        }
        t.status = TrialStatus::Error;
        t.error = Some(e.to_string());
        None
    }
}

/// How long a live table waits between redraws.
pub const REDRAW: Duration = Duration::from_millis(500);
