//! The result grid (Ray's `ResultGrid`): every trial's config, status and
//! last metrics, the best trial, and the grid as CSV, JSON and a table.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

use crate::sched::Mode;
use crate::space::{Config, Val, short_float};

/// Where a trial is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TrialStatus {
    Pending,
    Running,
    /// Ran to its end (`max_t`, or its one call).
    Terminated,
    /// Stopped early by the scheduler.
    Stopped,
    Error,
}

impl TrialStatus {
    pub fn name(self) -> &'static str {
        match self {
            TrialStatus::Pending => "PENDING",
            TrialStatus::Running => "RUNNING",
            TrialStatus::Terminated => "TERMINATED",
            TrialStatus::Stopped => "STOPPED",
            TrialStatus::Error => "ERROR",
        }
    }
}

/// One trial of a search.
#[derive(Debug, Clone, Serialize)]
pub struct TrialResult {
    pub id: usize,
    pub status: TrialStatus,
    pub config: Config,
    /// Steps it ran (`training_iteration`).
    pub iterations: u64,
    /// What its last step reported.
    pub metrics: BTreeMap<String, f64>,
    /// The best value of the search's metric it reported.
    pub best: Option<f64>,
    pub error: Option<String>,
    /// Times it started again after its actor died.
    pub failures: u32,
    pub seconds: f64,
}

/// All the trials of a search.
#[derive(Debug, Clone, Serialize)]
pub struct ResultGrid {
    pub metric: String,
    #[serde(serialize_with = "mode_name")]
    pub mode: Mode,
    pub seconds: f64,
    pub trials: Vec<TrialResult>,
}

fn mode_name<S: serde::Serializer>(m: &Mode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match m {
        Mode::Min => "min",
        Mode::Max => "max",
    })
}

impl ResultGrid {
    /// The trial with the best value of the metric in its last result
    /// (Ray's `get_best_result(scope="last")`); errored trials are not
    /// counted.
    pub fn best(&self) -> Option<&TrialResult> {
        let mut best: Option<(&TrialResult, f64)> = None;
        for t in &self.trials {
            if t.status == TrialStatus::Error {
                continue;
            }
            let Some(v) = t.metrics.get(&self.metric).copied() else {
                continue;
            };
            if v.is_nan() {
                continue;
            }
            if best.is_none_or(|(_, b)| self.mode.better(v, b)) {
                best = Some((t, v));
            }
        }
        best.map(|(t, _)| t)
    }

    /// Trials by status.
    pub fn count(&self, status: TrialStatus) -> usize {
        self.trials.iter().filter(|t| t.status == status).count()
    }

    /// Total iterations run (what a search cost).
    pub fn total_iterations(&self) -> u64 {
        self.trials.iter().map(|t| t.iterations).sum()
    }

    fn param_names(&self) -> BTreeSet<&str> {
        self.trials
            .iter()
            .flat_map(|t| t.config.keys().map(String::as_str))
            .collect()
    }

    fn metric_names(&self) -> BTreeSet<&str> {
        self.trials
            .iter()
            .flat_map(|t| t.metrics.keys().map(String::as_str))
            .collect()
    }

    /// One row per trial: `trial_id,status,iterations,config/NAME...,NAME...,error`.
    pub fn to_csv(&self) -> String {
        let params = self.param_names();
        let metrics = self.metric_names();
        let mut out = String::from("trial_id,status,training_iteration");
        for p in &params {
            let _ = write!(out, ",config/{}", csv_field(p));
        }
        for m in &metrics {
            let _ = write!(out, ",{}", csv_field(m));
        }
        out.push_str(",error\n");
        for t in &self.trials {
            let _ = write!(out, "{},{},{}", t.id, t.status.name(), t.iterations);
            for p in &params {
                let v = t.config.get(*p).map(Val::full).unwrap_or_default();
                let _ = write!(out, ",{}", csv_field(&v));
            }
            for m in &metrics {
                let v = t
                    .metrics
                    .get(*m)
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_default();
                let _ = write!(out, ",{v}");
            }
            let _ = writeln!(out, ",{}", csv_field(&first_line(t.error.as_deref())));
        }
        out
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The trials as a table for a terminal: status, config, iterations and
    /// last metrics, at most `max_rows` trials (running ones first).
    pub fn table(&self, max_rows: usize) -> String {
        let params: Vec<&str> = self.param_names().into_iter().collect();
        let mut metrics: Vec<&str> = self.metric_names().into_iter().collect();
        // The search's metric first.
        metrics.sort_by_key(|m| *m != self.metric);
        let mut header = vec!["trial".to_string(), "status".to_string()];
        header.extend(params.iter().map(|p| p.to_string()));
        header.push("iter".into());
        header.extend(metrics.iter().map(|m| m.to_string()));
        let mut order: Vec<&TrialResult> = self.trials.iter().collect();
        order.sort_by_key(|t| (t.status != TrialStatus::Running, t.id));
        let mut rows: Vec<Vec<String>> = vec![header];
        for t in order.iter().take(max_rows) {
            let mut r = vec![t.id.to_string(), t.status.name().to_string()];
            r.extend(
                params
                    .iter()
                    .map(|p| t.config.get(*p).map(|v| v.to_string()).unwrap_or_default()),
            );
            r.push(t.iterations.to_string());
            r.extend(metrics.iter().map(|m| {
                t.metrics
                    .get(*m)
                    .map(|v| short_float(*v))
                    .unwrap_or_default()
            }));
            rows.push(r);
        }
        let cols = rows[0].len();
        let widths: Vec<usize> = (0..cols)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = format!(
            "trials: {} running, {} pending, {} terminated, {} stopped early, {} error; {:.1} s\n",
            self.count(TrialStatus::Running),
            self.count(TrialStatus::Pending),
            self.count(TrialStatus::Terminated),
            self.count(TrialStatus::Stopped),
            self.count(TrialStatus::Error),
            self.seconds
        );
        for r in &rows {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        }
        if self.trials.len() > max_rows {
            let _ = writeln!(out, "... and {} more", self.trials.len() - max_rows);
        }
        out
    }
}

/// An error's first line (the whole of it is in the JSON).
fn first_line(e: Option<&str>) -> String {
    e.and_then(|e| e.lines().next()).unwrap_or("").to_string()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(id: usize, status: TrialStatus, lr: f64, loss: Option<f64>) -> TrialResult {
        TrialResult {
            id,
            status,
            config: [("lr".to_string(), Val::Float(lr))].into(),
            iterations: 3,
            metrics: loss.map(|l| ("loss".to_string(), l)).into_iter().collect(),
            best: loss,
            error: (status == TrialStatus::Error).then(|| "boom, \"bad\"".to_string()),
            failures: 0,
            seconds: 1.0,
        }
    }

    #[test]
    fn the_best_trial_goes_by_mode_and_skips_errors() {
        let mut g = ResultGrid {
            metric: "loss".into(),
            mode: Mode::Min,
            seconds: 1.0,
            trials: vec![
                trial(0, TrialStatus::Terminated, 0.1, Some(0.5)),
                trial(1, TrialStatus::Stopped, 0.2, Some(0.9)),
                trial(2, TrialStatus::Error, 0.3, Some(0.1)),
                trial(3, TrialStatus::Terminated, 0.4, None),
            ],
        };
        assert_eq!(g.best().map(|t| t.id), Some(0));
        g.mode = Mode::Max;
        assert_eq!(g.best().map(|t| t.id), Some(1));
    }

    #[test]
    fn csv_has_a_row_per_trial_and_quotes_what_needs_it() {
        let g = ResultGrid {
            metric: "loss".into(),
            mode: Mode::Min,
            seconds: 1.0,
            trials: vec![
                trial(0, TrialStatus::Terminated, 0.1, Some(0.5)),
                trial(1, TrialStatus::Error, 0.2, None),
            ],
        };
        assert_eq!(
            g.to_csv(),
            "trial_id,status,training_iteration,config/lr,loss,error\n\
             0,TERMINATED,3,0.1,0.5,\n\
             1,ERROR,3,0.2,,\"boom, \"\"bad\"\"\"\n"
        );
        let json: serde_json::Value = serde_json::from_str(&g.to_json()).expect("json");
        assert_eq!(json["trials"][0]["config"]["lr"], 0.1);
        assert_eq!(json["trials"][1]["status"], "ERROR");
        assert_eq!(json["mode"], "min");
    }
}
