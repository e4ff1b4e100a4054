//! ferray's development tasks, in Rust instead of shell scripts:
//!
//! - `cargo xtask demo`: build the `squares` example and run it on the
//!   embedded runtime (`ferray run squares.wasm run 10`).
//! - `cargo xtask test`: what CI runs — build every guest example with
//!   `cargo component build` (installing the pinned cargo-component when it
//!   is missing), check formatting, lints and `tidy`, and run every test.
//! - `cargo xtask tidy`: the dependency rules and code map of ARCHITECTURE.md.
//! - `cargo xtask examples`: build every guest example with cargo-component.
//! - `cargo xtask bench`: `ferray microbenchmark` in release mode.
//! - `cargo xtask bench-dashboard`: the head's dashboard pages and API timed
//!   on an empty cluster and with 100,000 tasks and 10,000 actors in its
//!   tables (`cargo bench -p ferray-benches --bench dashboard`).
//! - `cargo xtask bench-ray [--no-ray]`: ferray's microbenchmark embedded
//!   and on a local cluster next to Ray 2.60's figures, in one sitting, as
//!   one table (`vs_ray.rs`, `benches/ray/bench.py`).
//! - `cargo xtask bench-tune [--no-ray] [--trials N]`: tune's throughput
//!   for tiny trials next to Ray Tune 2.60's, in one sitting.
//! - `cargo xtask fuzz [TARGET] [--runs N]`: the fuzz targets of `fuzz/`
//!   under libFuzzer (nightly, cargo-fuzz), `N` executions each.
//! - `cargo xtask chaos [--minutes N] [--seed S] [--failure P]`: a mixed
//!   workload on a local cluster while workers and the head are killed and
//!   calls fail at random, every result checked (`chaos.rs`).
//!
//! An expected failure (a command that failed, a missing tool) prints one
//! line, `error: ...`, and exits 1.

mod chaos;
mod fuzz;
mod tidy;
mod vs_ray;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

const CARGO_COMPONENT_VERSION: &str = "0.21.1";
/// The wasm targets guests are built for (as in rust-toolchain.toml).
const WASM_TARGETS: &[&str] = &["wasm32-wasip1", "wasm32-wasip2"];

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Add the wasm targets when the toolchain lacks them (rustup adds those of
/// rust-toolchain.toml by itself only for toolchains it installed).
fn ensure_wasm_targets() -> Result<()> {
    let installed = Command::new("rustup")
        .current_dir(root())
        .args(["target", "list", "--installed"])
        .output();
    let installed = match installed {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => bail!(
            "cannot list the toolchain's targets with rustup; install the wasm targets with `rustup target add {}`",
            WASM_TARGETS.join(" ")
        ),
    };
    let missing = missing_targets(&installed);
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("adding the wasm targets {}", missing.join(", "));
    run(Command::new("rustup")
        .current_dir(root())
        .args(["target", "add"])
        .args(&missing))
    .with_context(|| {
        format!(
            "adding the targets failed; run `rustup target add {}`",
            missing.join(" ")
        )
    })
}

/// The wasm targets absent from `rustup target list --installed`'s output.
fn missing_targets(installed: &str) -> Vec<&'static str> {
    WASM_TARGETS
        .iter()
        .copied()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect()
}

fn has_cargo_component() -> bool {
    cargo()
        .args(["component", "--version"])
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains(CARGO_COMPONENT_VERSION)
        })
}

fn ensure_cargo_component() -> Result<()> {
    if has_cargo_component() {
        return Ok(());
    }
    eprintln!(
        "cargo-component {CARGO_COMPONENT_VERSION} is missing: installing it (a few minutes)"
    );
    // `--debug`: unoptimized, it builds in about 2.5 minutes instead of 7 on
    // CI's two cores, and componentizing the examples is as quick.
    run(cargo().args([
        "install",
        "--locked",
        "--debug",
        "cargo-component",
        "--version",
        CARGO_COMPONENT_VERSION,
    ]))
}

/// The guest examples: the members of `guest-examples/Cargo.toml`, the one
/// list (the tests' build script reads it too).
fn examples() -> Result<Vec<String>> {
    let meta = metadata(&root().join("guest-examples/Cargo.toml"))?;
    Ok(meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect())
}

/// `cargo metadata --no-deps` of the workspace of `manifest`.
pub(crate) fn metadata(manifest: &Path) -> Result<serde_json::Value> {
    let out = cargo()
        .current_dir(root())
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(manifest)
        .output()
        .context("cannot run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata of {} failed: {}",
            manifest.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("cargo metadata printed no JSON")
}

/// Build the guest examples with cargo-component; returns the folder of the
/// components (`guest-examples/target/wasm32-wasip1/release`).
fn build_examples_with_cargo_component() -> Result<PathBuf> {
    ensure_wasm_targets()?;
    ensure_cargo_component()?;
    let dir = root().join("guest-examples");
    run(cargo()
        .current_dir(&dir)
        .args(["component", "build", "--release", "--workspace"]))?;
    let out = dir.join("target/wasm32-wasip1/release");
    for name in examples()? {
        let path = out.join(format!("{}.wasm", name.replace('-', "_")));
        if !path.is_file() {
            bail!("cargo component build did not write {}", path.display());
        }
    }
    Ok(out)
}

fn demo() -> Result<()> {
    ensure_wasm_targets()?;
    let dir = root().join("guest-examples");
    let wasm = if has_cargo_component() {
        run(cargo()
            .current_dir(&dir)
            .args(["component", "build", "--release", "-p", "squares"]))?;
        dir.join("target/wasm32-wasip1/release/squares.wasm")
    } else {
        run(cargo().current_dir(&dir).args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            "squares",
        ]))?;
        dir.join("target/wasm32-wasip2/release/squares.wasm")
    };
    // The dev profile shares its build with the tests (dependencies are
    // optimized there too, see the root Cargo.toml).
    run(cargo()
        .current_dir(root())
        .args(["run", "--quiet", "--bin", "ferray", "--", "run"])
        .arg(&wasm)
        .args(["run", "10"]))
}

fn test() -> Result<()> {
    let components = build_examples_with_cargo_component()?;
    run(cargo()
        .current_dir(root())
        .args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().current_dir(root()).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    tidy::tidy()?;
    run(cargo()
        .current_dir(root())
        .env("FERRAY_CARGO_COMPONENT_BUILDS", &components)
        .args(["test", "--workspace"]))
}

fn bench() -> Result<()> {
    run(cargo().current_dir(root()).args([
        "run",
        "--quiet",
        "--release",
        "--bin",
        "ferray",
        "--",
        "microbenchmark",
    ]))
}

/// The dashboard benchmark (`benches/benches/dashboard.rs`), in the bench
/// profile.
fn bench_dashboard() -> Result<()> {
    run(cargo()
        .current_dir(root())
        .args(["bench", "-p", "ferray-benches", "--bench", "dashboard"]))
}

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let out = match task.as_str() {
        "demo" => demo(),
        "test" => test(),
        "tidy" => tidy::tidy(),
        "examples" => build_examples_with_cargo_component()
            .map(|p| eprintln!("components in {}", p.display())),
        "bench" => bench(),
        "bench-dashboard" => bench_dashboard(),
        "bench-ray" => vs_ray::vs_ray(&std::env::args().skip(2).collect::<Vec<_>>()),
        "bench-tune" => vs_ray::bench_tune(&std::env::args().skip(2).collect::<Vec<_>>()),
        "fuzz" => fuzz::fuzz(&std::env::args().skip(2).collect::<Vec<_>>()),
        "chaos" => chaos::chaos(&std::env::args().skip(2).collect::<Vec<_>>()),
        _ => Err(anyhow::anyhow!(
            "usage: cargo xtask demo | test | tidy | examples | bench | bench-dashboard | bench-ray [--no-ray] | bench-tune [--no-ray] [--trials N] | fuzz [TARGET] [--runs N] | chaos [--minutes N] [--seed S] [--failure P]"
        )),
    };
    match out {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::missing_targets;

    #[test]
    fn missing_wasm_targets_are_found() {
        assert_eq!(
            missing_targets("x86_64-unknown-linux-gnu\n"),
            ["wasm32-wasip1", "wasm32-wasip2"]
        );
        assert_eq!(
            missing_targets("wasm32-wasip2\nx86_64-unknown-linux-gnu\n"),
            ["wasm32-wasip1"]
        );
        assert!(missing_targets("wasm32-wasip1\nwasm32-wasip2\n").is_empty());
    }
}
