//! Trial schedulers: when to stop a trial early, from the results trials
//! report. Sans-IO: they see `(trial, time, value)` and answer. The time is
//! the trial's `training_iteration` (Ray's default `time_attr`).

use std::collections::BTreeMap;

use crate::space::Rng;

/// Whether the better value is the lower or the higher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Min,
    Max,
}

impl Mode {
    /// The sign that makes a higher value better (Ray's `metric_op`).
    fn op(self) -> f64 {
        match self {
            Mode::Min => -1.0,
            Mode::Max => 1.0,
        }
    }

    /// Whether `a` is better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        a * self.op() > b * self.op()
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "min" => Ok(Mode::Min),
            "max" => Ok(Mode::Max),
            other => Err(format!("mode `{other}`: expected min or max")),
        }
    }
}

/// What a scheduler says after a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Continue,
    Stop,
}

/// Which scheduler, with its parameters (Ray's names and defaults).
#[derive(Debug, Clone, PartialEq)]
pub enum SchedulerConfig {
    /// Runs every trial to `max_t`.
    Fifo,
    /// Asynchronous successive halving (`ASHAScheduler`).
    Asha {
        /// At most this many iterations per trial (default 100).
        max_t: u64,
        /// No trial stops before this many (default 1).
        grace_period: u64,
        /// Keep the best `1 / reduction_factor` at each rung (default 4).
        reduction_factor: f64,
        /// Brackets of different rungs (default 1).
        brackets: u32,
    },
    /// Stop a trial whose best result is worse than the median of the
    /// other trials' running means at the same iteration
    /// (`MedianStoppingRule`).
    Median {
        grace_period: u64,
        /// Compare only once this many other trials reached the iteration
        /// (default 3).
        min_samples_required: usize,
    },
}

impl SchedulerConfig {
    pub fn asha() -> SchedulerConfig {
        SchedulerConfig::Asha {
            max_t: 100,
            grace_period: 1,
            reduction_factor: 4.0,
            brackets: 1,
        }
    }

    pub fn median() -> SchedulerConfig {
        SchedulerConfig::Median {
            grace_period: 1,
            min_samples_required: 3,
        }
    }

    /// A check of its parameters, in one line.
    pub fn check(&self) -> Result<(), String> {
        if let SchedulerConfig::Asha {
            max_t,
            grace_period,
            reduction_factor,
            brackets,
        } = self
        {
            if *max_t == 0 {
                return Err("max_t must be above 0".into());
            }
            if *grace_period == 0 || grace_period > max_t {
                return Err(format!(
                    "grace_period must be between 1 and max_t ({max_t}), got {grace_period}"
                ));
            }
            if reduction_factor.is_nan() || *reduction_factor <= 1.0 {
                return Err(format!(
                    "reduction_factor must be above 1, got {reduction_factor}"
                ));
            }
            if *brackets == 0 {
                return Err("brackets must be at least 1".into());
            }
        }
        Ok(())
    }
}

/// A scheduler's state over a search.
pub struct Scheduler {
    mode: Mode,
    kind: Kind,
}

enum Kind {
    Fifo,
    Asha {
        max_t: u64,
        brackets: Vec<Bracket>,
        of: BTreeMap<usize, usize>,
        rng: Rng,
    },
    Median {
        grace_period: u64,
        min_samples: usize,
        /// Each trial's results so far, as (iteration, value × op).
        results: BTreeMap<usize, Vec<(u64, f64)>>,
    },
}

/// One bracket of ASHA: its rungs, highest milestone first, with the
/// values recorded there.
struct Bracket {
    rf: f64,
    rungs: Vec<(f64, BTreeMap<usize, f64>)>,
}

impl Bracket {
    fn new(min_t: f64, max_t: f64, rf: f64, s: u32) -> Bracket {
        let n = ((max_t / min_t).ln() / rf.ln() - s as f64 + 1.0)
            .floor()
            .max(0.0) as u32;
        let rungs = (0..n)
            .rev()
            .map(|k| (min_t * rf.powi((k + s) as i32), BTreeMap::new()))
            .collect();
        Bracket { rf, rungs }
    }

    /// The value a trial must reach at a rung (`None` while it is empty).
    fn cutoff(&self, recorded: &BTreeMap<usize, f64>) -> Option<f64> {
        let vals: Vec<f64> = recorded.values().copied().filter(|v| !v.is_nan()).collect();
        percentile(vals, (1.0 - 1.0 / self.rf) * 100.0)
    }

    fn on_result(&mut self, trial: usize, t: u64, value: f64) -> Decision {
        let mut decision = Decision::Continue;
        for i in 0..self.rungs.len() {
            let (milestone, recorded) = &self.rungs[i];
            if (t as f64) < *milestone || recorded.contains_key(&trial) {
                continue;
            }
            if let Some(c) = self.cutoff(recorded)
                && value < c
            {
                decision = Decision::Stop;
            }
            if !value.is_nan() {
                self.rungs[i].1.insert(trial, value);
            }
            break;
        }
        decision
    }
}

/// numpy's percentile with linear interpolation.
fn percentile(mut v: Vec<f64>, p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let pos = p / 100.0 * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    Some(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64))
}

fn median(v: Vec<f64>) -> Option<f64> {
    percentile(v, 50.0)
}

impl Scheduler {
    pub fn new(cfg: &SchedulerConfig, mode: Mode, seed: u64) -> Scheduler {
        let kind = match cfg {
            SchedulerConfig::Fifo => Kind::Fifo,
            SchedulerConfig::Asha {
                max_t,
                grace_period,
                reduction_factor,
                brackets,
            } => Kind::Asha {
                max_t: *max_t,
                brackets: (0..*brackets)
                    .map(|s| {
                        Bracket::new(*grace_period as f64, *max_t as f64, *reduction_factor, s)
                    })
                    .collect(),
                of: BTreeMap::new(),
                rng: Rng::new(seed ^ 0xA5A5),
            },
            SchedulerConfig::Median {
                grace_period,
                min_samples_required,
            } => Kind::Median {
                grace_period: *grace_period,
                min_samples: *min_samples_required,
                results: BTreeMap::new(),
            },
        };
        Scheduler { mode, kind }
    }

    /// A trial starts: ASHA puts it in a bracket (at random, weighted to
    /// those with more rungs, as Ray does).
    pub fn on_trial_add(&mut self, trial: usize) {
        if let Kind::Asha {
            brackets, of, rng, ..
        } = &mut self.kind
        {
            let sizes: Vec<f64> = brackets.iter().map(|b| b.rungs.len() as f64).collect();
            let top = sizes.iter().copied().fold(f64::MIN, f64::max);
            let weights: Vec<f64> = sizes.iter().map(|s| (s - top).exp()).collect();
            let total: f64 = weights.iter().sum();
            let mut x = rng.unit() * total;
            let mut pick = weights.len() - 1;
            for (i, w) in weights.iter().enumerate() {
                if x < *w {
                    pick = i;
                    break;
                }
                x -= w;
            }
            of.insert(trial, pick);
        }
    }

    /// A trial reported `value` after `t` iterations: go on or stop it.
    pub fn on_result(&mut self, trial: usize, t: u64, value: f64) -> Decision {
        let v = value * self.mode.op();
        match &mut self.kind {
            Kind::Fifo => Decision::Continue,
            Kind::Asha {
                max_t,
                brackets,
                of,
                ..
            } => {
                if t >= *max_t {
                    return Decision::Stop;
                }
                let b = of.get(&trial).copied().unwrap_or(0);
                match brackets.get_mut(b) {
                    Some(b) => b.on_result(trial, t, v),
                    None => Decision::Continue,
                }
            }
            Kind::Median {
                grace_period,
                min_samples,
                results,
            } => {
                results.entry(trial).or_default().push((t, v));
                if t < *grace_period {
                    return Decision::Continue;
                }
                // The running means, up to `t`, of the other trials that
                // reached `t`.
                let others: Vec<f64> = results
                    .iter()
                    .filter(|(id, r)| **id != trial && r.last().is_some_and(|(rt, _)| *rt >= t))
                    .map(|(_, r)| {
                        let upto: Vec<f64> = r
                            .iter()
                            .filter(|(rt, _)| *rt <= t)
                            .map(|(_, v)| *v)
                            .collect();
                        upto.iter().sum::<f64>() / upto.len().max(1) as f64
                    })
                    .collect();
                if others.len() < *min_samples {
                    return Decision::Continue;
                }
                let best = results
                    .get(&trial)
                    .into_iter()
                    .flatten()
                    .map(|(_, v)| *v)
                    .fold(f64::NEG_INFINITY, f64::max);
                match median(others) {
                    Some(m) if best < m => Decision::Stop,
                    _ => Decision::Continue,
                }
            }
        }
    }

    /// A trial ended (its result counts at the rungs it reached).
    pub fn on_trial_complete(&mut self, trial: usize) {
        if let Kind::Asha { of, .. } = &mut self.kind {
            of.remove(&trial);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asha_rungs_and_cutoffs_follow_ray() {
        // Ray's docstring example: _Bracket(1, 10, 2, 0).
        let mut b = Bracket::new(1.0, 10.0, 2.0, 0);
        let milestones: Vec<f64> = b.rungs.iter().map(|r| r.0).collect();
        assert_eq!(milestones, vec![8.0, 4.0, 2.0, 1.0]);
        assert_eq!(b.on_result(1, 1, 2.0), Decision::Continue);
        assert_eq!(b.on_result(2, 1, 4.0), Decision::Continue);
        assert_eq!(b.cutoff(&b.rungs[3].1), Some(3.0));
        assert_eq!(b.on_result(3, 1, 1.0), Decision::Stop);
        assert_eq!(b.cutoff(&b.rungs[3].1), Some(2.0));
        // A trial is judged once per rung.
        assert_eq!(b.on_result(2, 1, 0.0), Decision::Continue);
    }

    #[test]
    fn asha_stops_the_worse_trials_and_lets_the_best_reach_max_t() {
        let cfg = SchedulerConfig::Asha {
            max_t: 16,
            grace_period: 1,
            reduction_factor: 2.0,
            brackets: 1,
        };
        let mut s = Scheduler::new(&cfg, Mode::Min, 1);
        // Trial i's loss is i / t: lower i is better at every iteration.
        let n = 16;
        for i in 0..n {
            s.on_trial_add(i);
        }
        let mut alive: Vec<usize> = (0..n).collect();
        let mut reached = vec![0u64; n];
        for t in 1..=16u64 {
            alive.retain(|&i| {
                reached[i] = t;
                s.on_result(i, t, (i as f64 + 1.0) / t as f64) == Decision::Continue
            });
        }
        assert!(alive.is_empty(), "everything stops at max_t");
        assert_eq!(reached[0], 16, "the best trial runs to max_t");
        assert!(reached[n - 1] < 16, "the worst stops early: {reached:?}");
        let total: u64 = reached.iter().sum();
        assert!(
            total < 16 * n as u64 / 2,
            "ASHA saves most of the work: {total}"
        );
    }

    #[test]
    fn max_mode_keeps_the_highest() {
        let mut s = Scheduler::new(&SchedulerConfig::asha(), Mode::Max, 0);
        s.on_trial_add(0);
        s.on_trial_add(1);
        s.on_trial_add(2);
        assert_eq!(s.on_result(0, 1, 10.0), Decision::Continue);
        assert_eq!(s.on_result(1, 1, 9.0), Decision::Stop);
        assert_eq!(s.on_result(2, 1, 11.0), Decision::Continue);
    }

    #[test]
    fn median_stopping_stops_a_trial_below_the_median() {
        let mut s = Scheduler::new(&SchedulerConfig::median(), Mode::Min, 0);
        for (i, loss) in [1.0, 2.0, 3.0].iter().enumerate() {
            for t in 1..=3 {
                assert_eq!(
                    s.on_result(i, t, *loss),
                    Decision::Continue,
                    "fewer than 3 others"
                );
            }
        }
        // Medians of the others' means: 2.0; a trial at 5.0 stops, at 1.5 goes on.
        assert_eq!(s.on_result(3, 1, 5.0), Decision::Stop);
        assert_eq!(s.on_result(4, 1, 1.5), Decision::Continue);
    }

    #[test]
    fn bad_parameters_are_refused() {
        let bad = SchedulerConfig::Asha {
            max_t: 10,
            grace_period: 20,
            reduction_factor: 4.0,
            brackets: 1,
        };
        assert!(bad.check().expect_err("bad").contains("grace_period"));
        let bad = SchedulerConfig::Asha {
            max_t: 10,
            grace_period: 1,
            reduction_factor: 1.0,
            brackets: 1,
        };
        assert!(bad.check().expect_err("bad").contains("reduction_factor"));
    }
}
