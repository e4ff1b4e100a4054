//! ferray train: `guest-examples/train-wine` (a small network on the
//! wine-quality data, full-batch gradient descent whose gradient the
//! workers all-reduce) through the embedding API (embedded and on a
//! cluster), the command line, and a cluster that loses a worker mid-run.

use ferray::Runtime;
use ferray_train::{Event, TrainConfig, TrainResult, Trainer};
use ferray_tune::{Config, Val};

use crate::both::scenarios;
use crate::harness::{Cluster, block_on};
use crate::{ferray_err, ferray_ok, fx};

scenarios![
    a_group_learns_what_one_worker_learns,
    a_failed_worker_restarts_the_group_from_its_checkpoint,
    a_group_without_failures_left_reports_why,
    a_killed_member_fails_the_all_reduce_its_group_waits_in,
    a_loop_worker_reports_the_curve_of_the_step_worker,
    a_failed_loop_starts_again_from_its_last_reported_checkpoint,
];

fn config(pairs: &[(&str, Val)]) -> Config {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn wine(hidden: i64, extra: &[(&str, Val)]) -> Config {
    let mut c = config(&[("lr", Val::Float(0.5)), ("hidden", Val::Int(hidden))]);
    c.extend(config(extra));
    c
}

async fn fit(rt: &Runtime, loop_config: &Config, tc: TrainConfig) -> TrainResult {
    fit_class(rt, None, loop_config, tc).await
}

async fn fit_class(
    rt: &Runtime,
    class: Option<&str>,
    loop_config: &Config,
    tc: TrainConfig,
) -> TrainResult {
    let comp = rt.load_file(fx::TRAIN_WINE).await.expect("load");
    let trainer = Trainer::new(rt, &comp, class, loop_config, tc).expect("trainer");
    trainer.fit(|_| {}).await.expect("fit")
}

/// The same training as `worker`'s steps, in a loop of the worker's own
/// that reports each step (`ferray_sdk::train`).
const LOOP: Option<&str> = Some("loop-worker");

/// The names of the files in a storage path, sorted.
fn checkpoint_files(dir: &std::path::Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .expect("storage")
        .map(|e| e.expect("entry").file_name().into_string().expect("name"))
        .collect();
    files.sort();
    files
}

fn curve(r: &TrainResult, k: &str) -> Vec<f64> {
    r.history.iter().map(|m| m[k]).collect()
}

/// Two runs' curves agree to `tol` (the sums of a group are the one
/// worker's, in another order).
fn same_curve(a: &TrainResult, b: &TrainResult, k: &str, tol: f64) {
    let (x, y) = (curve(a, k), curve(b, k));
    assert_eq!(x.len(), y.len(), "{k}: {x:?} vs {y:?}");
    for (i, (p, q)) in x.iter().zip(&y).enumerate() {
        assert!((p - q).abs() <= tol, "{k} at step {}: {p} vs {q}", i + 1);
    }
}

async fn a_group_learns_what_one_worker_learns(rt: &Runtime) {
    let steps = 40;
    let one = fit(rt, &wine(8, &[]), TrainConfig::new(1, steps)).await;
    let two = fit(rt, &wine(8, &[]), TrainConfig::new(2, steps)).await;
    // Half a CPU each: four fit on the embedded runtime's two.
    let mut tc = TrainConfig::new(4, steps);
    tc.num_cpus = 0.5;
    let four = fit(rt, &wine(8, &[]), tc).await;
    for r in [&one, &two, &four] {
        assert_eq!(r.error, None);
        assert_eq!(r.history.len() as u64, steps);
        let loss = curve(r, "loss");
        assert!(
            loss[loss.len() - 1] < 0.8 * loss[0],
            "the loss falls: {loss:?}"
        );
        let acc = r.metrics().expect("metrics")["accuracy"];
        // The majority class is about 53% of the held-out rows.
        assert!(acc > 0.68, "it learns: accuracy {acc}");
        assert_eq!(r.checkpoint.as_ref().map(|c| c.step), Some(steps));
    }
    // 1,279 training rows: rank 0 of two trains on half, of four on a
    // quarter (rounded up).
    assert_eq!(one.metrics().expect("metrics")["rows"], 1279.0);
    assert_eq!(two.metrics().expect("metrics")["rows"], 640.0);
    assert_eq!(four.metrics().expect("metrics")["rows"], 320.0);
    for r in [&two, &four] {
        same_curve(&one, r, "loss", 1e-4);
        same_curve(&one, r, "accuracy", 0.01);
    }
}

async fn a_failed_worker_restarts_the_group_from_its_checkpoint(rt: &Runtime) {
    let steps = 12;
    let clean = fit(rt, &wine(4, &[]), TrainConfig::new(2, steps)).await;
    // Both workers trap at step 7 unless restored; checkpoints every 3.
    let mut tc = TrainConfig::new(2, steps);
    tc.checkpoint_freq = 3;
    tc.max_failures = 1;
    let comp = rt.load_file(fx::TRAIN_WINE).await.expect("load");
    let crashing = wine(4, &[("crash_at", Val::Int(7))]);
    let trainer = Trainer::new(rt, &comp, None, &crashing, tc).expect("trainer");
    let mut failed = Vec::new();
    let r = trainer
        .fit(|ev| {
            if let Event::Failed { from_step, .. } = ev {
                failed.push(from_step);
            }
        })
        .await
        .expect("fit");
    assert_eq!(r.error, None, "{r:?}");
    assert_eq!(r.failures, 1);
    assert_eq!(
        failed,
        [6],
        "the group starts again from step 6's checkpoint"
    );
    assert_eq!(r.history.len() as u64, steps);
    assert_eq!(r.metrics().expect("metrics")["restores"], 1.0);
    // Restored, it ends where a run without failure ends.
    same_curve(&clean, &r, "loss", 1e-6);
    same_curve(&clean, &r, "accuracy", 1e-9);
}

async fn a_group_without_failures_left_reports_why(rt: &Runtime) {
    let mut tc = TrainConfig::new(2, 10);
    tc.max_failures = 0;
    let r = fit(rt, &wine(0, &[("crash_at", Val::Int(3))]), tc).await;
    let e = r.error.as_deref().expect("an error");
    assert!(e.contains("crash-at: worker"), "the guest's message: {e}");
    assert_eq!(r.failures, 1);
    assert_eq!(r.history.len(), 2, "two steps ran");
    assert_eq!(r.checkpoint.as_ref().map(|c| c.step), Some(2));
}

/// Without the trainer: a group of two actors made through the embedding
/// API (spread over two nodes on a cluster). Rank 0 steps alone and waits in
/// its all-reduce; killing rank 1 ends that wait with an error, not a hang.
async fn a_killed_member_fails_the_all_reduce_its_group_waits_in(rt: &Runtime) {
    let comp = rt.load_file(fx::TRAIN_WINE).await.expect("load");
    let args = ferray_tune::trainable::encode_config(
        &comp.info().class("worker").expect("class").constructor,
        &wine(4, &[]),
        "the config",
        "worker",
    )
    .expect("config");
    let mut members = Vec::new();
    for rank in 0..2 {
        let a = comp
            .actor_encoded("worker", args.clone())
            .strategy(ferray_core::Strategy::Spread)
            .num_cpus(1.0)
            .and_then(|b| b.group("kill-one", rank, 2))
            .expect("options")
            .spawn()
            .await
            .expect("spawn");
        a.ready().await.expect("ready");
        members.push(a);
    }
    let waiting = members[0].call_with("step", Vec::new()).expect("call");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    members[1].kill().expect("kill");
    let bytes = tokio::time::timeout(std::time::Duration::from_secs(60), rt.get_encoded(&waiting))
        .await
        .expect("the waiting member is told, not left waiting")
        .expect("its step answers");
    let step = comp.info().class("worker").expect("class").methods["step"].clone();
    let e = ferray_tune::trainable::metrics_of(&step, &bytes).expect_err("an err(..)");
    assert!(e.to_string().contains("group `kill-one`"), "{e}");
}

/// A `train-loop` worker reports every step and a checkpoint every 5: the
/// run's curve is rank 0's reports, the same numbers `step` gives, and its
/// checkpoints are the reported ones; `steps` ends a loop early.
async fn a_loop_worker_reports_the_curve_of_the_step_worker(rt: &Runtime) {
    let stepped = fit(rt, &wine(8, &[]), TrainConfig::new(2, 20)).await;
    let comp = rt.load_file(fx::TRAIN_WINE).await.expect("load");
    let looped_config = wine(
        8,
        &[("epochs", Val::Int(20)), ("checkpoint_every", Val::Int(5))],
    );
    let trainer =
        Trainer::new(rt, &comp, LOOP, &looped_config, TrainConfig::new(2, 0)).expect("trainer");
    let mut checkpoints = Vec::new();
    let looped = trainer
        .fit(|ev| {
            if let Event::Checkpoint(c) = ev {
                checkpoints.push(c.step);
            }
        })
        .await
        .expect("fit");
    assert_eq!(looped.error, None, "{looped:?}");
    assert_eq!(looped.history.len(), 20);
    assert_eq!(curve(&looped, "epoch"), curve(&stepped, "epoch"));
    same_curve(&stepped, &looped, "loss", 1e-9);
    same_curve(&stepped, &looped, "accuracy", 1e-9);
    assert_eq!(checkpoints, [5, 10, 15, 20]);
    let last = looped.checkpoint.expect("a checkpoint");
    assert_eq!(last.step, 20);
    // The loop's checkpoint is the state `save` gives after as many steps.
    let saved = stepped.checkpoint.expect("a checkpoint");
    assert_eq!(last.bytes, saved.bytes);

    // Seven reports of a loop of 20: the run ends there.
    let short = fit_class(rt, LOOP, &looped_config, TrainConfig::new(2, 7)).await;
    assert_eq!(short.error, None);
    assert_eq!(curve(&short, "epoch"), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    assert_eq!(short.checkpoint.map(|c| c.step), Some(5));
}

/// Both workers trap at step 7 of their loop unless restored: the group is
/// made again, each loop starts from `train::checkpoint()` (step 6's), and
/// the run ends where a loop without failure ends.
async fn a_failed_loop_starts_again_from_its_last_reported_checkpoint(rt: &Runtime) {
    let loop_config = |extra: &[(&str, Val)]| {
        let mut c = wine(
            4,
            &[("epochs", Val::Int(12)), ("checkpoint_every", Val::Int(3))],
        );
        c.extend(config(extra));
        c
    };
    let clean = fit_class(rt, LOOP, &loop_config(&[]), TrainConfig::new(2, 0)).await;
    assert_eq!(clean.error, None);
    let mut tc = TrainConfig::new(2, 0);
    tc.max_failures = 1;
    let comp = rt.load_file(fx::TRAIN_WINE).await.expect("load");
    let crashing = loop_config(&[("crash_at", Val::Int(7))]);
    let trainer = Trainer::new(rt, &comp, LOOP, &crashing, tc.clone()).expect("trainer");
    let mut failed = Vec::new();
    let r = trainer
        .fit(|ev| {
            if let Event::Failed {
                from_step, error, ..
            } = ev
            {
                failed.push((from_step, error.to_string()));
            }
        })
        .await
        .expect("fit");
    assert_eq!(r.error, None, "{r:?}");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, 6, "from step 6's checkpoint: {failed:?}");
    assert!(failed[0].1.contains("crash-at: worker"), "{failed:?}");
    assert_eq!(curve(&r, "epoch"), curve(&clean, "epoch"));
    assert_eq!(r.metrics().expect("metrics")["restores"], 1.0);
    same_curve(&clean, &r, "loss", 1e-6);
    same_curve(&clean, &r, "accuracy", 1e-9);

    // Without failures left: the run ends with the guest's message.
    tc.max_failures = 0;
    let r = fit_class(rt, LOOP, &crashing, tc).await;
    let e = r.error.as_deref().expect("an error");
    assert!(e.contains("crash-at: worker"), "{e}");
    assert_eq!(r.history.len(), 6);
}

/// Every worker reports as many times: a run where rank 0 reports once more
/// after its loop, while rank 1's loop has returned, fails and says why.
#[tokio::test]
async fn workers_that_report_unequally_fail_the_run() {
    let rt = crate::runtime().await;
    let c = wine(
        0,
        &[("epochs", Val::Int(3)), ("extra_report_rank", Val::Int(0))],
    );
    let r = fit_class(&rt, LOOP, &c, TrainConfig::new(2, 0)).await;
    let e = r.error.as_deref().expect("an error");
    assert!(
        e.contains("ranks [1] returned from `train-loop` after 3 reports")
            && e.contains("every worker reports as many times"),
        "{e}"
    );
    assert_eq!(r.history.len(), 3, "the three steps, not the extra report");
}

/// `report` belongs to a training run: a `train-loop` called as a plain
/// method fails with a clear error, and an actor with no run has no
/// reports to take.
#[tokio::test]
async fn report_outside_a_training_run_is_refused() {
    let rt = crate::runtime().await;
    let comp = rt.load_file(fx::TRAIN_WINE).await.expect("load");
    let cls = comp.info().class("loop-worker").expect("class").clone();
    let args = ferray_tune::trainable::encode_config(
        &cls.constructor,
        &wine(0, &[("epochs", Val::Int(2))]),
        "the config",
        "loop-worker",
    )
    .expect("config");
    let a = comp
        .actor_encoded("loop-worker", args)
        .spawn()
        .await
        .expect("spawn");
    assert_eq!(a.next_report().await.expect("no run"), None);
    let r = a.call_with("train-loop", Vec::new()).expect("call");
    let bytes = rt.get_encoded(&r).await.expect("an answer");
    let text = cls.methods["train-loop"].wave_result(&bytes).expect("wave");
    assert!(text.contains("not in a training run"), "{text}");
    assert_eq!(a.next_report().await.expect("no run"), None);
}

#[tokio::test]
async fn checkpoints_go_to_disk_and_a_run_resumes_from_them() {
    let rt = crate::runtime().await;
    let dir = tempfile::tempdir().unwrap();
    let mut tc = TrainConfig::new(2, 6);
    tc.checkpoint_freq = 2;
    tc.storage_path = Some(dir.path().to_path_buf());
    let first = fit(&rt, &wine(4, &[]), tc.clone()).await;
    assert_eq!(first.error, None);
    assert_eq!(
        checkpoint_files(dir.path()),
        [
            "checkpoint_000002.bin",
            "checkpoint_000004.bin",
            "checkpoint_000006.bin"
        ]
    );
    let last = first.checkpoint.clone().unwrap();
    assert_eq!(std::fs::read(last.path.unwrap()).unwrap(), &last.bytes[..]);

    // Resumed with 4 more steps: it goes on from step 6, and ends where 10
    // steps in one run end.
    tc.steps = 10;
    tc.resume = true;
    let resumed = fit(&rt, &wine(4, &[]), tc).await;
    assert_eq!(resumed.error, None);
    let steps: Vec<f64> = curve(&resumed, "epoch");
    assert_eq!(steps, [7.0, 8.0, 9.0, 10.0], "only the new steps run");
    let whole = fit(&rt, &wine(4, &[]), TrainConfig::new(2, 10)).await;
    let tail = TrainResult {
        history: whole.history[6..].to_vec(),
        ..whole.clone()
    };
    same_curve(&tail, &resumed, "loss", 1e-6);
}

#[tokio::test]
async fn bad_configs_are_refused_before_any_worker_starts() {
    let rt = crate::runtime().await;
    let comp = rt.load_file(fx::TRAIN_WINE).await.expect("load");
    let err = |c: &Config, tc: TrainConfig, class: Option<&str>| {
        Trainer::new(&rt, &comp, class, c, tc)
            .err()
            .expect("refused")
            .to_string()
    };
    let e = err(
        &wine(4, &[("hiden", Val::Int(3))]),
        TrainConfig::new(1, 1),
        None,
    );
    assert!(e.contains("`hiden` is not a field"), "{e}");
    let e = err(
        &config(&[("lr", Val::Float(0.1))]),
        TrainConfig::new(1, 1),
        None,
    );
    assert!(e.contains("`hidden`"), "{e}");
    let e = err(&wine(-1, &[]), TrainConfig::new(1, 1), None);
    assert!(e.contains("`hidden`") && e.contains("out of range"), "{e}");
    let e = err(&wine(4, &[]), TrainConfig::new(0, 1), None);
    assert!(e.contains("num_workers"), "{e}");
    let e = err(&wine(4, &[]), TrainConfig::new(64, 1), None);
    assert!(e.contains("need 64 CPUs"), "{e}");
    let e = err(&wine(4, &[]), TrainConfig::new(1, 1), Some("trainer"));
    assert!(e.contains("trainer"), "{e}");
    let e = err(&wine(4, &[]), TrainConfig::new(1, 0), None);
    assert!(e.contains("steps must be at least 1"), "{e}");
}

/// kill -9 of a node that holds a worker, mid-run: the group is made again
/// on the nodes left, from the last checkpoint, and ends with the numbers
/// of a run without failure. Each worker takes a whole node (2 CPUs), so
/// the group spans two nodes and all-reduces between them. Both kinds of
/// worker class: `step`, and a `train-loop` that reports each step.
#[test]
fn after_kill_9_of_a_workers_node_the_group_resumes_from_its_checkpoint() {
    for class in [None, LOOP] {
        kill_9_mid_run(class);
    }
}

fn kill_9_mid_run(class: Option<&str>) {
    let steps = 24;
    let loop_config = wine(
        8,
        &[
            ("step_ms", Val::Int(60)),
            ("epochs", Val::Int(24)),
            ("checkpoint_every", Val::Int(3)),
        ],
    );
    let mut tc = TrainConfig::new(2, steps);
    tc.num_cpus = 2.0;
    tc.checkpoint_freq = 3;
    tc.max_failures = 2;
    let clean = block_on(async {
        let rt = crate::builder()
            .num_cpus(4.0)
            .build()
            .await
            .expect("runtime");
        fit_class(&rt, class, &loop_config, tc.clone()).await
    });
    assert_eq!(clean.error, None, "{class:?}");

    let mut c = Cluster::start(3);
    let (r, from) = block_on(async {
        let rt = c.runtime().await;
        let comp = rt.load_file(fx::TRAIN_WINE).await.expect("load");
        let trainer = Trainer::new(&rt, &comp, class, &loop_config, tc).expect("trainer");
        let mut killed = false;
        let mut from = Vec::new();
        let r = trainer
            .fit(|ev| match ev {
                Event::Step { step: 7, .. } if !killed => {
                    killed = true;
                    let nodes: Vec<u64> = c
                        .state("actors")
                        .actors
                        .iter()
                        .filter(|a| a.state == "ALIVE")
                        .filter_map(|a| a.node.map(|n| n.0))
                        .collect();
                    let mut distinct = nodes.clone();
                    distinct.sort_unstable();
                    distinct.dedup();
                    assert_eq!(distinct.len(), 2, "the workers are on two nodes: {nodes:?}");
                    c.kill_worker(distinct[0]);
                }
                Event::Failed { from_step, .. } => from.push(from_step),
                _ => {}
            })
            .await
            .expect("fit");
        (r, from)
    });
    assert_eq!(r.error, None, "{class:?}: {r:?}");
    assert_eq!(r.failures, 1);
    assert_eq!(from, [6], "{class:?}: again from step 6's checkpoint");
    assert_eq!(r.history.len() as u64, steps);
    assert!(r.metrics().expect("metrics")["restores"] >= 1.0);
    same_curve(&clean, &r, "loss", 1e-6);
    same_curve(&clean, &r, "accuracy", 1e-9);
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn the_command_line_prints_each_step_and_writes_checkpoints() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "lr = 0.5\nhidden = 4\n").expect("config");
    let store = dir.path().join("ckpt");
    let (cfg_s, store_s) = (cfg.to_str().expect("utf-8"), store.to_str().expect("utf-8"));
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = [fx::TRAIN_WINE, "--config", cfg_s, "--storage-path", store_s]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.insert(0, "train".into());
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let out = ferray_ok(&strs(&args(&[
        "--num-workers",
        "2",
        "--steps",
        "5",
        "--checkpoint-freq",
        "2",
    ])));
    let steps: Vec<&str> = out.lines().filter(|l| l.starts_with("step ")).collect();
    assert_eq!(steps.len(), 5, "{out}");
    assert!(
        steps[4].starts_with("step 5: accuracy=") && steps[4].contains(" epoch=5 "),
        "{out}"
    );
    assert!(out.contains("checkpoint_000005.bin"), "{out}");
    assert_eq!(
        checkpoint_files(&store),
        [
            "checkpoint_000002.bin",
            "checkpoint_000004.bin",
            "checkpoint_000005.bin"
        ]
    );
    // Resumed with 2 more steps: steps 6 and 7 only.
    let out = ferray_ok(&strs(&args(&[
        "--num-workers",
        "2",
        "--steps",
        "7",
        "--resume",
    ])));
    let steps: Vec<&str> = out.lines().filter(|l| l.starts_with("step ")).collect();
    assert_eq!(steps.len(), 2, "{out}");
    assert!(steps[0].starts_with("step 6:"), "{out}");

    // A loop class: as many steps as its config's epochs.
    std::fs::write(&cfg, "lr = 0.5\nhidden = 4\nepochs = 3\n").expect("config");
    let out = ferray_ok(&strs(&args(&[
        "--num-workers",
        "2",
        "--class",
        "loop-worker",
    ])));
    let steps: Vec<&str> = out.lines().filter(|l| l.starts_with("step ")).collect();
    assert_eq!(steps.len(), 3, "{out}");
    assert!(steps[2].contains(" epoch=3 "), "{out}");

    // A bad config: one line naming the field.
    std::fs::write(&cfg, "lr = 0.5\nhidden = \"wide\"\n").expect("config");
    let err = ferray_err(&strs(&args(&[])));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("`hidden`"), "{err}");
    std::fs::write(&cfg, "lr = { grid_search = [0.1, 0.5] }\nhidden = 4\n").expect("config");
    let err = ferray_err(&strs(&args(&[])));
    assert!(err.contains("`lr` is a search domain"), "{err}");
    std::fs::write(&cfg, "lr = 0.5\nhidden = 4\nwidth = 3\n").expect("config");
    let err = ferray_err(&strs(&args(&[])));
    assert!(err.contains("`width` is not a field"), "{err}");
}

/// Tune over training: the worker class is a trainable of ferray tune (a
/// group of one). ASHA over learning rate and hidden width ends within 2%
/// of the loss of the best config of the full grid, for at most half of
/// the grid's steps.
#[tokio::test]
async fn asha_over_training_finds_the_grids_best_for_a_fraction_of_its_steps() {
    use ferray_tune::{Mode, SchedulerConfig, Space, TuneConfig, Tuner};
    let rt = crate::runtime().await;
    let comp = rt.load_file(fx::TRAIN_WINE).await.expect("load");
    let space = Space::parse(
        r#"
        lr = { grid_search = [1.0, 0.3, 0.1, 0.02] }
        hidden = { grid_search = [16, 4, 0] }
        "#,
    )
    .expect("space");
    let max_t = 60;
    let search = |scheduler: SchedulerConfig| {
        let mut cfg = TuneConfig::new("loss", Mode::Min);
        cfg.scheduler = scheduler;
        cfg.max_t = max_t;
        // One at a time, so that ASHA's rungs fill in the grid's order on
        // every run; the grid lists the likelier configs first (with the
        // worst first, each would pass the empty rungs it reaches).
        cfg.max_concurrent_trials = 1;
        Tuner::new(&rt, &comp, Some("worker"), space.clone(), cfg).expect("tuner")
    };
    let grid = search(SchedulerConfig::Fifo)
        .run(|_| {})
        .await
        .expect("grid");
    let asha = search(SchedulerConfig::Asha {
        max_t,
        grace_period: 5,
        reduction_factor: 3.0,
        brackets: 1,
    })
    .run(|_| {})
    .await
    .expect("asha");
    assert_eq!(grid.total_iterations(), 12 * max_t);
    let best = |g: &ferray_tune::ResultGrid| g.best().expect("a best trial").metrics["loss"];
    let (full, found) = (best(&grid), best(&asha));
    assert!(
        found <= full * 1.02,
        "ASHA's best loss {found} is within 2% of the grid's {full}"
    );
    let share = asha.total_iterations() as f64 / grid.total_iterations() as f64;
    assert!(
        share <= 0.5,
        "ASHA used {:.0}% of the grid's steps",
        share * 100.0
    );
    eprintln!(
        "tune over train: grid best loss {full:.4}, ASHA {found:.4} with {:.0}% of the steps",
        share * 100.0
    );
}

/// The same training with the hidden layer's products in WGSL on the GPU
/// (the software driver here): the curve of the CPU's, up to the order of
/// the GPU's sums.
#[tokio::test]
async fn workers_on_the_gpu_learn_what_workers_on_the_cpu_learn() {
    if !crate::gpu::have_adapter() {
        return;
    }
    let rt = crate::gpu::gpu_runtime(1.0).await;
    let steps = 15;
    let cpu = fit(&rt, &wine(8, &[]), TrainConfig::new(2, steps)).await;
    let mut tc = TrainConfig::new(2, steps);
    tc.num_gpus = 0.5;
    let gpu = fit(&rt, &wine(8, &[("gpu", Val::Bool(true))]), tc).await;
    assert_eq!(gpu.error, None, "{gpu:?}");
    same_curve(&cpu, &gpu, "loss", 1e-4);
    same_curve(&cpu, &gpu, "accuracy", 0.01);

    // Without a GPU of its own, a worker's kernel is refused: the run
    // fails with the GPU's message.
    let r = fit(
        &rt,
        &wine(8, &[("gpu", Val::Bool(true))]),
        TrainConfig::new(2, 2),
    )
    .await;
    let e = r.error.as_deref().expect("an error");
    assert!(e.contains("GPU:"), "{e}");
}
