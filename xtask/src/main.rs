//! ferray's development tasks, in Rust instead of shell scripts:
//!
//! - `cargo xtask demo`: build the `squares` example and run it on the
//!   embedded runtime (`ferray run squares.wasm run 10`).
//! - `cargo xtask test`: what CI runs — build every guest example with
//!   `cargo component build` (installing the pinned cargo-component when it
//!   is missing), check formatting and lints, and run every test.
//! - `cargo xtask examples`: build every guest example with cargo-component.
//! - `cargo xtask bench`: `ferray microbenchmark` in release mode.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const CARGO_COMPONENT_VERSION: &str = "0.21.1";
const EXAMPLES: &[&str] = &[
    "squares",
    "counter",
    "wordcount",
    "pi",
    "gpu-saxpy",
    "gpu-matmul",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn cargo() -> Command {
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
    run(cargo().args([
        "install",
        "--locked",
        "cargo-component",
        "--version",
        CARGO_COMPONENT_VERSION,
    ]))
}

/// Build the guest examples with cargo-component; returns the folder of the
/// components (`guest-examples/target/wasm32-wasip1/release`).
fn build_examples_with_cargo_component() -> Result<PathBuf> {
    ensure_cargo_component()?;
    let dir = root().join("guest-examples");
    run(cargo()
        .current_dir(&dir)
        .args(["component", "build", "--release", "--workspace"]))?;
    let out = dir.join("target/wasm32-wasip1/release");
    for name in EXAMPLES {
        let path = out.join(format!("{}.wasm", name.replace('-', "_")));
        if !path.is_file() {
            bail!("cargo component build did not write {}", path.display());
        }
    }
    Ok(out)
}

fn demo() -> Result<()> {
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

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "demo" => demo(),
        "test" => test(),
        "examples" => build_examples_with_cargo_component()
            .map(|p| eprintln!("components in {}", p.display())),
        "bench" => bench(),
        _ => bail!("usage: cargo xtask demo | test | examples | bench"),
    }
}
