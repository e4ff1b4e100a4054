//! Builds guest workspaces to WebAssembly components from a build script:
//! `cargo build --release --target wasm32-wasip2` (which makes components
//! directly) with a clean environment, in a target directory of the
//! caller's. Used by `ferray-test-fixtures` (the tests' guests) and by the
//! `ferray` binary's build script (the microbenchmark's guest).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The guests' target.
pub const TARGET: &str = "wasm32-wasip2";

/// Variables of the outer build that must not reach the inner one (as wasmtime's
/// test-programs build does): flags and targets meant for the host crates, the outer target
/// directory and jobserver, wrappers.
const LEAKY_VARS: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
    "CARGO_PRIMARY_PACKAGE",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "CARGO_LLVM_COV",
    "LLVM_PROFILE_FILE",
];

/// Where `cargo build` put the component of crate `krate`, after checking
/// that it is one.
pub fn component_path(target_dir: &Path, krate: &str) -> PathBuf {
    let path = target_dir
        .join(TARGET)
        .join("release")
        .join(format!("{}.wasm", krate.replace('-', "_")));
    check_component(&path);
    path
}

/// The crate names of a guest workspace's members, from `cargo metadata`.
pub fn members(ws_dir: &Path) -> Vec<String> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(ws_dir.join("Cargo.toml"))
        .output()
        .unwrap_or_else(|e| panic!("running cargo metadata in {}: {e}", ws_dir.display()));
    assert!(
        out.status.success(),
        "cargo metadata in {} failed: {}",
        ws_dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let names: Vec<String> = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    assert!(!names.is_empty(), "{} has no members", ws_dir.display());
    names
}

pub fn rerun_if_changed(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}

/// Watches a guest workspace's manifest and lock file, and each member's manifest, `src/` and
/// `wit/`.
pub fn watch_workspace(ws_dir: &Path) {
    rerun_if_changed(&ws_dir.join("Cargo.toml"));
    rerun_if_changed(&ws_dir.join("Cargo.lock"));
    let entries =
        fs::read_dir(ws_dir).unwrap_or_else(|e| panic!("reading {}: {e}", ws_dir.display()));
    for entry in entries.flatten() {
        let dir = entry.path();
        if dir.join("Cargo.toml").is_file() {
            for p in ["Cargo.toml", "src", "wit"] {
                if dir.join(p).exists() {
                    rerun_if_changed(&dir.join(p));
                }
            }
        }
    }
}

/// Builds the workspace at `ws_dir` (only `packages`, when given) into
/// `target_dir`; panics with cargo's output when it fails.
pub fn build_workspace(ws_dir: &Path, target_dir: &Path, packages: &[&str]) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--target")
        .arg(TARGET)
        .arg("--manifest-path")
        .arg(ws_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .args(packages.iter().flat_map(|p| ["--package", p]))
        .arg("--quiet")
        .arg("--color")
        .arg("never")
        .current_dir(ws_dir);
    for var in LEAKY_VARS {
        cmd.env_remove(var);
    }
    // Per-target settings of the outer build (e.g. CARGO_TARGET_X86_64_..._RUSTFLAGS / _LINKER /
    // _RUNNER) do not concern wasm, but profile overrides of the outer build would.
    for (key, _) in env::vars_os() {
        if let Some(key) = key.to_str()
            && key.starts_with("CARGO_PROFILE_")
        {
            cmd.env_remove(key);
        }
    }
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("running cargo for {}: {e}", ws_dir.display()));
    if !output.status.success() {
        panic!(
            "building the guests in {} failed ({}): {cmd:?}\n--- stdout\n{}\n--- stderr\n{}",
            ws_dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
}

/// A component starts with `\0asm` and the component layer/version `0d 00 01 00`; a core
/// module has version `01 00 00 00` there.
pub fn check_component(path: &Path) {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let header = bytes.get(..8).unwrap_or(&bytes);
    assert!(
        header == b"\0asm\x0d\x00\x01\x00",
        "{} is not a WebAssembly component (header {header:02x?})",
        path.display()
    );
}
