//! ferray tune: searches over `guest-examples/tune-quadratic` (gradient
//! descent on (w - 3)^2, whose loss follows from the config alone), through
//! the embedding API (embedded and on a cluster), the command line, and a
//! cluster that loses a worker mid-search.

use ferray::Runtime;
use ferray_tune::{
    Mode, ResultGrid, SchedulerConfig, Space, TrialResult, TrialStatus, TuneConfig, Tuner, Val,
};

use crate::both::scenarios;
use crate::harness::{Cluster, block_on};
use crate::{ferray_err, ferray_ok, fx};

scenarios![
    asha_stops_the_bad_trials_and_keeps_the_best,
    a_failed_trial_starts_again_from_its_checkpoint,
    a_function_trainable_is_one_call_per_trial,
];

/// What the trainable computes: w after `n` steps of gradient descent with
/// momentum on (w - 3)^2 from 0, and the loss with the width's penalty.
fn expected(lr: f64, momentum: f64, width: i64, n: u64) -> (f64, f64) {
    let (mut w, mut v) = (0.0f64, 0.0f64);
    for _ in 0..n {
        v = momentum * v - lr * 2.0 * (w - 3.0);
        w += v;
    }
    let d = (width - 32) as f64;
    (w, (w - 3.0).powi(2) + d * d / 1000.0)
}

fn float(t: &TrialResult, k: &str) -> f64 {
    match t.config.get(k) {
        Some(Val::Float(x)) => *x,
        Some(Val::Int(i)) => *i as f64,
        other => panic!("trial {}: `{k}` is {other:?}", t.id),
    }
}

fn int(t: &TrialResult, k: &str) -> i64 {
    match t.config.get(k) {
        Some(Val::Int(i)) => *i,
        other => panic!("trial {}: `{k}` is {other:?}", t.id),
    }
}

/// Each trial's last metrics are what its config gives after its
/// iterations.
fn check_metrics(grid: &ResultGrid) {
    for t in &grid.trials {
        if t.status == TrialStatus::Error {
            continue;
        }
        let (w, loss) = expected(
            float(t, "lr"),
            float(t, "momentum"),
            int(t, "width"),
            t.iterations,
        );
        let got_w = t.metrics["w"];
        assert!(
            (got_w - w).abs() <= 1e-9 * w.abs().max(1.0),
            "trial {}: w {got_w}, expected {w}",
            t.id
        );
        let got = t.metrics["loss"];
        assert!(
            (got - loss).abs() <= 1e-9 * loss.abs().max(1.0),
            "trial {}: loss {got}, expected {loss}",
            t.id
        );
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

async fn tuner(rt: &Runtime, space: &str, config: TuneConfig, trainable: Option<&str>) -> Tuner {
    let comp = rt.load_file(fx::TUNE_QUADRATIC).await.expect("load");
    let space = Space::parse(space).expect("space");
    Tuner::new(rt, &comp, trainable, space, config).expect("tuner")
}

async fn asha_stops_the_bad_trials_and_keeps_the_best(rt: &Runtime) {
    // 12 trials: lr from good to diverging and far too small, two
    // widths; one at a time, so that ASHA's rungs fill in this order (with
    // trials in parallel, the first to reach an empty rung passes it).
    let space = r#"
        lr = { grid_search = [0.5, 0.03, 1.2, 0.01, 0.003, 0.001] }
        width = { grid_search = [16, 32] }
        momentum = 0.0
    "#;
    let mut cfg = TuneConfig::new("loss", Mode::Min);
    cfg.scheduler = SchedulerConfig::Asha {
        max_t: 16,
        grace_period: 1,
        reduction_factor: 2.0,
        brackets: 1,
    };
    cfg.max_concurrent_trials = 1;
    let t = tuner(rt, space, cfg, None).await;
    let mut updates = 0;
    let grid = t.run(|_| updates += 1).await.expect("run");
    assert!(updates > 12, "progress is reported as trials go: {updates}");
    assert_eq!(grid.trials.len(), 12);
    check_metrics(&grid);
    let best = grid.best().expect("a best trial");
    assert_eq!(
        (float(best, "lr"), int(best, "width")),
        (0.5, 32),
        "{best:?}"
    );
    assert_eq!(best.status, TrialStatus::Terminated);
    assert_eq!(best.iterations, 16, "the best trial runs to max_t");
    let stopped = grid.count(TrialStatus::Stopped);
    assert!(stopped >= 8, "ASHA stops the bad trials: {stopped}");
    for t in &grid.trials {
        if float(t, "lr") <= 0.003 || float(t, "lr") == 1.2 {
            assert_eq!(
                t.status,
                TrialStatus::Stopped,
                "a hopeless trial ran on: {t:?}"
            );
            assert_eq!(t.iterations, 1, "stopped at the first rung: {t:?}");
        }
    }
    assert!(
        grid.total_iterations() < 12 * 16 / 3,
        "ASHA used {} of {} iterations",
        grid.total_iterations(),
        12 * 16
    );
}

async fn a_failed_trial_starts_again_from_its_checkpoint(rt: &Runtime) {
    let space = r#"
        lr = { uniform = [0.05, 0.3] }
        momentum = { uniform = [0.0, 0.5] }
        width = 32
        crash_at = 5
    "#;
    let mut cfg = TuneConfig::new("loss", Mode::Min);
    cfg.num_samples = 3;
    cfg.max_t = 8;
    cfg.seed = 11;
    let grid = tuner(rt, space, cfg.clone(), None)
        .await
        .run(|_| {})
        .await
        .expect("run");
    for t in &grid.trials {
        assert_eq!(t.status, TrialStatus::Terminated, "{t:?}");
        assert_eq!(t.iterations, 8);
        assert_eq!(t.failures, 1, "each trial trapped once at step 5: {t:?}");
        assert_eq!(
            t.metrics["restores"], 1.0,
            "restored from a checkpoint: {t:?}"
        );
    }
    // The same numbers as a run that never failed.
    check_metrics(&grid);

    // Without checkpoints a trial starts from scratch and traps again,
    // until it has failed as often as it may.
    cfg.checkpoint_freq = 0;
    cfg.max_failures = 2;
    cfg.num_samples = 1;
    let grid = tuner(rt, space, cfg, None)
        .await
        .run(|_| {})
        .await
        .expect("run");
    let t = &grid.trials[0];
    assert_eq!(t.status, TrialStatus::Error, "{t:?}");
    assert_eq!(t.failures, 2);
    let e = t.error.as_deref().unwrap_or("");
    assert!(e.contains("crash-at 5"), "the guest's own message: {e}");
    assert!(grid.best().is_none());
}

async fn a_function_trainable_is_one_call_per_trial(rt: &Runtime) {
    let space = r#"
        lr = { loguniform = [0.01, 0.9] }
        momentum = { choice = [0.0, 0.3] }
        width = { randint = [8, 64] }
    "#;
    let mut cfg = TuneConfig::new("loss", Mode::Min);
    cfg.num_samples = 6;
    cfg.seed = 3;
    let grid = tuner(rt, space, cfg, Some("evaluate"))
        .await
        .run(|_| {})
        .await
        .expect("run");
    assert_eq!(grid.trials.len(), 6);
    for t in &grid.trials {
        assert_eq!(t.status, TrialStatus::Terminated, "{t:?}");
        assert_eq!(t.iterations, 1);
        let (w, loss) = expected(float(t, "lr"), float(t, "momentum"), int(t, "width"), 20);
        assert!((t.metrics["w"] - w).abs() < 1e-9 && (t.metrics["loss"] - loss).abs() < 1e-9);
    }
    let best = grid.best().expect("best");
    let min = grid
        .trials
        .iter()
        .map(|t| t.metrics["loss"])
        .fold(f64::INFINITY, f64::min);
    assert_eq!(best.metrics["loss"], min);
}

#[tokio::test]
async fn a_space_or_metric_that_does_not_fit_the_trainable_is_refused() {
    let rt = crate::runtime().await;
    let comp = rt.load_file(fx::TUNE_QUADRATIC).await.expect("load");
    let cases = [
        (
            "lr = 0.1\nmomentum = 0.0\nwidht = 32",
            "the space's `widht` is not a field of the config of `trainable.trial`'s constructor",
        ),
        (
            "lr = 0.1\nmomentum = 0.0",
            "`width` of `trainable.trial`'s constructor: the space gives it no value",
        ),
        (
            "lr = 0.1\nmomentum = 0.0\nwidth = -1",
            "-1 is out of range for u32",
        ),
        (
            "lr = \"fast\"\nmomentum = 0.0\nwidth = 1",
            "`lr` of `trainable.trial`'s constructor: expected a number",
        ),
    ];
    for (space, want) in cases {
        let space = Space::parse(space).expect("space");
        let e = Tuner::new(&rt, &comp, None, space, TuneConfig::new("loss", Mode::Min))
            .err()
            .unwrap_or_else(|| panic!("{want}: accepted"))
            .to_string();
        assert!(e.contains(want), "{e}\nwanted: {want}");
    }
    let space = Space::parse("lr = 0.1\nmomentum = 0.0\nwidth = 32").expect("space");
    let e = Tuner::new(
        &rt,
        &comp,
        Some("nope"),
        space,
        TuneConfig::new("loss", Mode::Min),
    )
    .err()
    .expect("no such trainable")
    .to_string();
    assert!(e.contains("no exported resource `nope`"), "{e}");
}

#[test]
fn the_command_line_writes_the_grid_and_prints_the_best_config() {
    let dir = tempfile::tempdir().expect("tmp");
    let space = dir.path().join("space.toml");
    std::fs::write(
        &space,
        "lr = { grid_search = [0.01, 0.5, 1.5] }\nmomentum = 0.0\nwidth = { grid_search = [16, 32] }\n",
    )
    .expect("write");
    let out_dir = dir.path().join("grid");
    let (space_s, out_s) = (space.to_string_lossy(), out_dir.to_string_lossy());
    // `ferray tune` on the example with this space, and more arguments.
    let tune = |metric: &str, more: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["tune", fx::TUNE_QUADRATIC, "--space", &space_s, "--metric"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.push(metric.to_string());
        a.extend(["--output", &out_s].iter().map(|s| s.to_string()));
        a.extend(more.iter().map(|s| s.to_string()));
        a
    };
    let out = ferray_ok(&strs(&tune(
        "loss",
        &[
            "--mode",
            "min",
            "--scheduler",
            "asha",
            "--max-t",
            "8",
            "--num-cpus",
            "2",
        ],
    )));
    assert!(
        out.starts_with(
            "best trial 3: loss = 0.0 (8 iterations) config: lr=0.5 momentum=0.0 width=32"
        ),
        "{out}"
    );
    let csv = std::fs::read_to_string(out_dir.join("results.csv")).expect("csv");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some(
            "trial_id,status,training_iteration,config/lr,config/momentum,config/width,loss,restores,w,error"
        )
    );
    assert_eq!(lines.count(), 6, "{csv}");
    assert!(
        csv.contains("\n3,TERMINATED,8,0.5,0.0,32,0.0,0.0,3.0,\n"),
        "{csv}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("results.json")).expect("json"))
            .expect("parses");
    assert_eq!(json["metric"], "loss");
    assert_eq!(json["trials"].as_array().map(Vec::len), Some(6));
    assert_eq!(json["trials"][3]["config"]["lr"], 0.5);

    // A bad space file: one line, naming the file and the field.
    std::fs::write(&space, "lr = { loguniform = [0, 1] }\n").expect("write");
    let err = ferray_err(&strs(&tune("loss", &["--mode", "min"])));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "{space_s}: `lr.loguniform`: the bounds must be above 0"
        )),
        "{err}"
    );
    // A metric the trainable does not report.
    std::fs::write(&space, "lr = 0.5\nmomentum = 0.0\nwidth = 32\n").expect("write");
    let err = ferray_err(&strs(&tune("accuracy", &["--mode", "max", "--max-t", "2"])));
    assert!(
        err.contains("the trial reported no metric `accuracy` (it reported: loss, restores, w)"),
        "{err}"
    );
}

/// A worker dies in the middle of a search: its trials' actors die with it
/// and start again on the other worker from their last checkpoints, and
/// every trial ends where a search without the failure ends.
#[test]
fn trials_on_a_killed_worker_restart_from_their_checkpoints() {
    let mut c = Cluster::start(2);
    let victim = c.workers[1].1;
    let grid = block_on(async {
        let rt = c.runtime().await;
        let space = r#"
            lr = { uniform = [0.05, 0.3] }
            momentum = 0.0
            width = 32
            step_ms = 40
        "#;
        let mut cfg = TuneConfig::new("loss", Mode::Min);
        cfg.num_samples = 4;
        cfg.max_t = 25;
        cfg.max_concurrent_trials = 4;
        let t = tuner(&rt, space, cfg, None).await;
        let mut killed = false;
        t.run(|p| {
            // Once every trial is a few steps in (and checkpointed).
            if !killed && p.grid().trials.iter().all(|t| t.iterations >= 4) {
                killed = true;
                c.kill_worker(victim);
            }
        })
        .await
        .expect("run")
    });
    check_metrics(&grid);
    for t in &grid.trials {
        assert_eq!(t.status, TrialStatus::Terminated, "{t:?}");
        assert_eq!(t.iterations, 25, "{t:?}");
    }
    let restarted: Vec<&TrialResult> = grid.trials.iter().filter(|t| t.failures > 0).collect();
    assert!(
        !restarted.is_empty(),
        "no trial was on the killed worker: {grid:?}"
    );
    for t in restarted {
        assert!(
            t.metrics["restores"] >= 1.0,
            "restarted from scratch: {t:?}"
        );
    }
}
