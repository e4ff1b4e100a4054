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

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferray::{ActorHandle, Component, FuncInfo, Runtime};
use ferray_core::{Arg, Error};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use wasm_wave::value::{Type as WaveType, Value as WaveValue};
use wasm_wave::wasm::{WasmType, WasmTypeKind, WasmValue};

use crate::TuneError;
use crate::grid::{ResultGrid, TrialResult, TrialStatus};
use crate::sched::{Decision, Mode, Scheduler, SchedulerConfig};
use crate::space::{Config, Space, Val};

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
        let f = self.config_func();
        let params = f
            .param_types()
            .map_err(|e| TuneError::Config(e.to_string()))?;
        let mut vals = Vec::with_capacity(params.len());
        let mut tys = Vec::with_capacity(params.len());
        if let [(_, ty)] = params.as_slice()
            && ty.kind() == WasmTypeKind::Record
        {
            vals.push(record_of(ty, c, &self.what())?);
            tys.push((*ty).clone());
        } else {
            let names: Vec<String> = params.iter().map(|(n, _)| wit_name(n)).collect();
            for k in c.keys() {
                if !names.contains(&wit_name(k)) {
                    return Err(TuneError::Config(format!(
                        "the space's `{k}` is not a parameter of {}",
                        self.what()
                    )));
                }
            }
            for (n, ty) in &params {
                let v = c
                    .iter()
                    .find(|(k, _)| wit_name(k) == wit_name(n))
                    .map(|(_, v)| v);
                vals.push(field_value(ty, v, n, &self.what())?);
                tys.push((*ty).clone());
            }
        }
        ferray_codec::codec::encode_all::<ferray_codec::codec::Checked<WaveValue>>(&vals, &tys)
            .map_err(|e| TuneError::Config(format!("cannot encode a config: {e}")))
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

/// A name as WIT writes it (`learning_rate` is `learning-rate`).
fn wit_name(n: &str) -> String {
    n.replace('_', "-")
}

/// The config as a value of the record type `ty`.
fn record_of(ty: &WaveType, c: &Config, sig: &str) -> Result<WaveValue, TuneError> {
    let fields: Vec<(String, WaveType)> = ty
        .record_fields()
        .map(|(n, t)| (n.into_owned(), t))
        .collect();
    for k in c.keys() {
        if !fields.iter().any(|(n, _)| *n == wit_name(k)) {
            let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
            return Err(TuneError::Config(format!(
                "the space's `{k}` is not a field of the config of {sig} (its fields: {})",
                names.join(", ")
            )));
        }
    }
    let mut vals = Vec::with_capacity(fields.len());
    for (n, fty) in &fields {
        let v = c.iter().find(|(k, _)| wit_name(k) == *n).map(|(_, v)| v);
        vals.push((n.clone(), field_value(fty, v, n, sig)?));
    }
    WaveValue::make_record(ty, vals.iter().map(|(n, v)| (n.as_str(), v.clone())))
        .map_err(|e| TuneError::Config(format!("cannot make the config of `{sig}`: {e}")))
}

/// One config value as a value of the WIT type `ty` (an `option` is
/// `none` when the space leaves it out).
fn field_value(
    ty: &WaveType,
    v: Option<&Val>,
    name: &str,
    sig: &str,
) -> Result<WaveValue, TuneError> {
    let bad = |what: &str| TuneError::Config(format!("`{name}` of {sig}: {what}"));
    if ty.kind() == WasmTypeKind::Option {
        let inner = ty
            .option_some_type()
            .ok_or_else(|| bad("a bad option type"))?;
        let some = match v {
            Some(v) => Some(field_value(&inner, Some(v), name, sig)?),
            None => None,
        };
        return WaveValue::make_option(ty, some).map_err(|e| bad(&e.to_string()));
    }
    let Some(v) = v else {
        return Err(bad("the space gives it no value"));
    };
    let int = |v: &Val| -> Result<i128, TuneError> {
        match v {
            Val::Int(i) => Ok(*i as i128),
            Val::Float(f) if f.fract() == 0.0 && f.abs() < 9e15 => Ok(*f as i128),
            other => Err(bad(&format!(
                "expected an integer, the space gives {other}"
            ))),
        }
    };
    let range = |x: i128, lo: i128, hi: i128| -> Result<i128, TuneError> {
        if (lo..=hi).contains(&x) {
            Ok(x)
        } else {
            Err(bad(&format!("{x} is out of range for {}", ty.kind())))
        }
    };
    let float = |v: &Val| -> Result<f64, TuneError> {
        match v {
            Val::Int(i) => Ok(*i as f64),
            Val::Float(f) => Ok(*f),
            other => Err(bad(&format!("expected a number, the space gives {other}"))),
        }
    };
    Ok(match ty.kind() {
        WasmTypeKind::F64 => WaveValue::make_f64(float(v)?),
        WasmTypeKind::F32 => WaveValue::make_f32(float(v)? as f32),
        WasmTypeKind::S8 => {
            WaveValue::make_s8(range(int(v)?, i8::MIN.into(), i8::MAX.into())? as i8)
        }
        WasmTypeKind::S16 => {
            WaveValue::make_s16(range(int(v)?, i16::MIN.into(), i16::MAX.into())? as i16)
        }
        WasmTypeKind::S32 => {
            WaveValue::make_s32(range(int(v)?, i32::MIN.into(), i32::MAX.into())? as i32)
        }
        WasmTypeKind::S64 => {
            WaveValue::make_s64(range(int(v)?, i64::MIN.into(), i64::MAX.into())? as i64)
        }
        WasmTypeKind::U8 => WaveValue::make_u8(range(int(v)?, 0, u8::MAX.into())? as u8),
        WasmTypeKind::U16 => WaveValue::make_u16(range(int(v)?, 0, u16::MAX.into())? as u16),
        WasmTypeKind::U32 => WaveValue::make_u32(range(int(v)?, 0, u32::MAX.into())? as u32),
        WasmTypeKind::U64 => WaveValue::make_u64(range(int(v)?, 0, u64::MAX.into())? as u64),
        WasmTypeKind::Bool => match v {
            Val::Bool(b) => WaveValue::make_bool(*b),
            other => return Err(bad(&format!("expected a boolean, the space gives {other}"))),
        },
        WasmTypeKind::String => match v {
            Val::Str(s) => WaveValue::make_string(Cow::Borrowed(s.as_str())),
            other => WaveValue::make_string(Cow::Owned(other.to_string())),
        },
        WasmTypeKind::Enum => {
            let Val::Str(s) = v else {
                return Err(bad(&format!("expected a case name, the space gives {v}")));
            };
            WaveValue::make_enum(ty, s).map_err(|e| bad(&e.to_string()))?
        }
        other => return Err(bad(&format!("a config value cannot be a {other}"))),
    })
}

/// The metrics a trainable returned.
fn metrics_of(f: &FuncInfo, bytes: &[u8]) -> Result<BTreeMap<String, f64>, Error> {
    let vals = f.decode_result(bytes)?;
    let Some(v) = vals.into_iter().next() else {
        return Err(Error::InvalidArgument(format!(
            "`{}` returns nothing; a trainable returns its metrics",
            f.signature()
        )));
    };
    let v = match v.kind() {
        WasmTypeKind::Result => match v.unwrap_result() {
            Ok(Some(ok)) => ok.into_owned(),
            Ok(None) => {
                return Err(Error::InvalidArgument(format!(
                    "`{}` returns no metrics",
                    f.signature()
                )));
            }
            Err(e) => {
                let text = e
                    .map(|e| ferray_codec::codec::to_wave(e.as_ref()).unwrap_or_default())
                    .unwrap_or_default();
                return Err(Error::TaskFailed(format!("the trial returned err({text})")));
            }
        },
        _ => v,
    };
    let mut out = BTreeMap::new();
    match v.kind() {
        WasmTypeKind::Record => {
            for (n, fv) in v.unwrap_record() {
                if let Some(x) = number(&fv) {
                    out.insert(n.into_owned(), x);
                }
            }
        }
        WasmTypeKind::List => {
            for item in v.unwrap_list() {
                if item.kind() != WasmTypeKind::Tuple {
                    break;
                }
                let parts: Vec<_> = item.unwrap_tuple().collect();
                if let [k, x] = parts.as_slice()
                    && k.kind() == WasmTypeKind::String
                    && let Some(x) = number(x)
                {
                    out.insert(k.unwrap_string().into_owned(), x);
                }
            }
        }
        _ => {}
    }
    if out.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "`{}`: metrics are a record of numbers or a list<tuple<string, f64>>",
            f.signature()
        )));
    }
    Ok(out)
}

fn number(v: &WaveValue) -> Option<f64> {
    Some(match v.kind() {
        WasmTypeKind::F64 => v.unwrap_f64(),
        WasmTypeKind::F32 => v.unwrap_f32().into(),
        WasmTypeKind::S8 => v.unwrap_s8().into(),
        WasmTypeKind::S16 => v.unwrap_s16().into(),
        WasmTypeKind::S32 => v.unwrap_s32().into(),
        WasmTypeKind::S64 => v.unwrap_s64() as f64,
        WasmTypeKind::U8 => v.unwrap_u8().into(),
        WasmTypeKind::U16 => v.unwrap_u16().into(),
        WasmTypeKind::U32 => v.unwrap_u32().into(),
        WasmTypeKind::U64 => v.unwrap_u64() as f64,
        _ => return None,
    })
}

/// How long a live table waits between redraws.
pub const REDRAW: Duration = Duration::from_millis(500);
