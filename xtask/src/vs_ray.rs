//! `cargo xtask bench-ray`: ferray's microbenchmark, embedded and on a local
//! cluster (a head with its own worker and one more worker, 2 CPUs each, on
//! 127.0.0.1), and Ray 2.60 on the same metrics and workloads
//! (`benches/ray/bench.py`), all in one sitting, printed as one table with
//! the ratio of each ferray figure to Ray's.
//!
//! Needs Ray (`pip install "ray[default]==2.60.0" numpy`); `--no-ray` skips
//! it and prints ferray's columns alone.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::chaos::Cluster;
use crate::{cargo, root, run};

/// `NAME VALUE UNIT` lines of a command's stdout, by name (other lines are
/// ignored).
type Figures = BTreeMap<String, (f64, String)>;

fn figures(cmd: &mut Command) -> Result<Figures> {
    eprintln!("+ {cmd:?}");
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("{cmd:?} failed with {}:\n{text}", out.status);
    }
    let mut f = Figures::new();
    for line in text.lines() {
        if let [name, value, unit] = line.split_whitespace().collect::<Vec<_>>()[..]
            && let Ok(v) = value.parse::<f64>()
        {
            f.insert(name.to_string(), (v, unit.to_string()));
        }
    }
    Ok(f)
}

pub(crate) fn vs_ray(args: &[String]) -> Result<()> {
    let with_ray = !args.iter().any(|a| a == "--no-ray");
    if let Some(a) = args.iter().find(|a| *a != "--no-ray") {
        bail!("unknown argument {a}; usage: cargo xtask bench-ray [--no-ray]");
    }
    run(cargo()
        .current_dir(root())
        .args(["build", "--release", "--bin", "ferray"]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let exe = target.join("release/ferray");

    let embedded = figures(Command::new(&exe).arg("microbenchmark"))?;

    let home = std::env::temp_dir().join(format!("ferray-bench-ray-{}", std::process::id()));
    std::fs::create_dir_all(&home)?;
    let mut c = Cluster::new(exe, home.clone(), Vec::new())?;
    c.start(1)?;
    // The second worker joins within a heartbeat.
    std::thread::sleep(Duration::from_secs(3));
    let cluster = figures(c.cmd().args(["microbenchmark", "--address", &c.address()]));
    c.stop();
    let cluster = cluster?;
    let _ = std::fs::remove_dir_all(&home);

    let ray = if with_ray {
        figures(Command::new("python3").arg(root().join("benches/ray/bench.py")))?
    } else {
        Figures::new()
    };

    println!(
        "\n{:<36} {:>12} {:>12} {:>12}  {:>9} {:>9}  unit",
        "metric", "embedded", "cluster", "ray", "emb/ray", "clu/ray"
    );
    let show = |v: Option<&(f64, String)>| match v {
        Some((v, _)) if *v >= 100.0 => format!("{v:.0}"),
        Some((v, _)) => format!("{v:.3}"),
        None => "-".into(),
    };
    for (name, (_, unit)) in &embedded {
        let r = ray.get(name);
        // A rate is better higher, a time lower: the ratio is ferray's
        // advantage either way.
        let ratio = |f: Option<&(f64, String)>| match (f, r) {
            (Some((f, _)), Some((r, _))) if *f > 0.0 && *r > 0.0 => {
                let x = if unit == "seconds" { r / f } else { f / r };
                format!("{x:.1}x")
            }
            _ => "-".into(),
        };
        println!(
            "{:<36} {:>12} {:>12} {:>12}  {:>9} {:>9}  {unit}",
            name,
            show(embedded.get(name)),
            show(cluster.get(name)),
            show(r),
            ratio(embedded.get(name)),
            ratio(cluster.get(name)),
        );
    }
    Ok(())
}

/// `cargo xtask bench-tune [--no-ray] [--trials N]`: tune's throughput for
/// tiny trials (trials per second) on the embedded runtime, next to Ray
/// Tune 2.60 (`benches/ray/tune_tiny.py`) in the same sitting. Each trial
/// is one call of `guest-examples/tune-quadratic`'s `evaluate` (a function
/// trainable), or an actor of its `trial` class stepped once (made, stepped,
/// checkpointed, killed); Ray's is a function trainable doing the same
/// arithmetic. The time is the search's own, start-up not counted on
/// either side.
pub(crate) fn bench_tune(args: &[String]) -> Result<()> {
    let mut with_ray = true;
    let mut trials = 500usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--no-ray" => with_ray = false,
            "--trials" => {
                trials = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .context("--trials takes a number")?;
            }
            other => bail!(
                "unknown argument {other}; usage: cargo xtask bench-tune [--no-ray] [--trials N]"
            ),
        }
    }
    run(cargo()
        .current_dir(root())
        .args(["build", "--release", "--bin", "ferray"]))?;
    run(cargo().current_dir(root().join("guest-examples")).args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "-p",
        "tune-quadratic",
    ]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let exe = target.join("release/ferray");
    let wasm = root().join("guest-examples/target/wasm32-wasip2/release/tune_quadratic.wasm");
    let dir = std::env::temp_dir().join(format!("ferray-bench-tune-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let space = dir.join("space.toml");
    std::fs::write(
        &space,
        "lr = { loguniform = [0.001, 1.5] }\nmomentum = { choice = [0.0, 0.5] }\nwidth = { randint = [8, 64] }\n",
    )?;
    let n = trials.to_string();
    let ferray_rate = |extra: &[&str]| -> Result<f64> {
        let mut cmd = Command::new(&exe);
        cmd.arg("tune")
            .arg(&wasm)
            .arg("--space")
            .arg(&space)
            .args(["--metric", "loss", "--mode", "min", "--num-samples", &n])
            .arg("--output")
            .arg(dir.join("grid"))
            .args(extra);
        eprintln!("+ {cmd:?}");
        let out = cmd.output().context("running ferray tune")?;
        if !out.status.success() {
            bail!(
                "ferray tune failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // The search's own time, from the result grid.
        let json = std::fs::read_to_string(dir.join("grid/results.json"))
            .context("the result grid of ferray tune")?;
        let grid: serde_json::Value = serde_json::from_str(&json)?;
        let secs = grid["seconds"]
            .as_f64()
            .context("no `seconds` in the result grid")?;
        Ok(trials as f64 / secs)
    };
    let function = ferray_rate(&["--trainable", "evaluate"])?;
    let actors = ferray_rate(&["--max-t", "1"])?;
    let _ = std::fs::remove_dir_all(&dir);
    let ray = if with_ray {
        figures(
            Command::new("python3")
                .arg(root().join("benches/ray/tune_tiny.py"))
                .arg(&n),
        )?
        .get("tune_tiny_trials_per_second")
        .map(|(v, _)| *v)
    } else {
        None
    };
    let vs = |f: f64| ray.map_or("-".to_string(), |r| format!("{:.1}x", f / r));
    println!("\n{trials} tiny trials each (2 CPUs):");
    println!("{:<44} {:>10}  {:>8}", "metric", "per_second", "vs ray");
    println!(
        "{:<44} {:>10.1}  {:>8}",
        "tune_tiny_trials_per_second (function)",
        function,
        vs(function)
    );
    println!(
        "{:<44} {:>10.1}  {:>8}",
        "tune_tiny_actor_trials_per_second (class)",
        actors,
        vs(actors)
    );
    if let Some(r) = ray {
        println!("{:<44} {:>10.1}", "ray_tune_tiny_trials_per_second", r);
    }
    Ok(())
}
