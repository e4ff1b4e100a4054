//! `cargo xtask tidy`: the rules ARCHITECTURE.md states, checked.
//!
//! - Dependency rules, from `cargo metadata` (direct dependencies) and
//!   `cargo tree` (what a crate pulls in, with its own features only).
//! - The code map: every crate it names is a workspace member at the path it
//!   gives, and every file and item it names exists in that crate.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{cargo, metadata, root};

/// (crate, its features for `cargo tree`, crates it must never pull in, why).
const NEVER: &[(&str, &[&str], &[&str], &str)] = &[
    (
        "ferray-head",
        &[],
        &["wasmtime", "wgpu", "ferray", "ferray-host", "ferray-gpu"],
        "the head never runs guest code",
    ),
    (
        "ferray-core",
        &[],
        &["tokio", "tonic", "prost", "wasmtime", "wgpu"],
        "the core types do no I/O",
    ),
    (
        "ferray-store",
        &[],
        &["tonic", "prost", "wasmtime", "wgpu"],
        "the store knows no protocol and no guest",
    ),
    (
        "ferray-gpu",
        &[],
        &["wasmtime", "tonic", "prost"],
        "the GPU crate knows nothing of wasmtime",
    ),
    (
        "ferray-host",
        &[],
        &["tonic", "prost", "ferray-proto", "ferray-head"],
        "the host knows no cluster",
    ),
    (
        "ferray-proto",
        &[],
        &["wasmtime", "wgpu", "ferray-host"],
        "the protocol knows no guest",
    ),
    (
        "ferray-codec",
        &[],
        &["wasmtime", "tokio", "tonic", "prost"],
        "a client reads signatures and values without wasmtime",
    ),
    (
        "ferray",
        &["--no-default-features"],
        &["tonic", "prost", "ferray-proto", "ferray-head"],
        "an embedder without the `cluster` feature compiles no gRPC",
    ),
];

/// Direct dependencies only these workspace crates may have.
const ONLY: &[(&str, &[&str], &str)] = &[
    (
        "wasmtime",
        &["ferray-host", "ferray-benches"],
        "one crate knows wasmtime (the codec benchmark measures its values)",
    ),
    (
        "wasmtime-wasi",
        &["ferray-host"],
        "one crate knows wasmtime",
    ),
    (
        "wgpu",
        &["ferray-gpu", "ferray-cli"],
        "one crate knows wgpu (the CLI's tests compare with it)",
    ),
    ("prost", &["ferray-proto"], "one crate knows protobuf"),
    ("tonic-prost", &["ferray-proto"], "one crate knows protobuf"),
    (
        "tonic-prost-build",
        &["ferray-proto"],
        "one crate compiles protobuf",
    ),
    ("protox", &["ferray-proto"], "one crate compiles protobuf"),
    (
        "anyhow",
        &["ferray-cli", "xtask"],
        "libraries return thiserror enums",
    ),
];

pub fn tidy() -> Result<()> {
    let mut problems = Vec::new();
    let meta = metadata(&root().join("Cargo.toml"))?;
    let members = members(&meta);
    check_direct(&meta, &mut problems);
    for (krate, flags, never, why) in NEVER {
        let pulled = tree(krate, flags)?;
        for bad in *never {
            if pulled.contains(*bad) {
                problems.push(format!("{krate} {} pulls in {bad}: {why}", flags.join(" ")));
            }
        }
    }
    check_code_map(&members, &mut problems)?;
    if problems.is_empty() {
        eprintln!("tidy: the dependency rules and the code map hold");
        return Ok(());
    }
    for p in &problems {
        eprintln!("tidy: {p}");
    }
    bail!("{} tidy check(s) failed", problems.len())
}

/// Workspace members: name and folder.
fn members(meta: &Value) -> Vec<(String, PathBuf)> {
    packages(meta)
        .filter_map(|p| {
            let name = p["name"].as_str()?;
            let manifest = Path::new(p["manifest_path"].as_str()?);
            Some((name.to_string(), manifest.parent()?.to_path_buf()))
        })
        .collect()
}

fn packages(meta: &Value) -> impl Iterator<Item = &Value> {
    meta["packages"].as_array().into_iter().flatten()
}

/// Normal and build dependencies (not dev: tests may use anything).
fn check_direct(meta: &Value, problems: &mut Vec<String>) {
    for p in packages(meta) {
        let name = p["name"].as_str().unwrap_or_default();
        for d in p["dependencies"].as_array().into_iter().flatten() {
            if d["kind"].as_str() == Some("dev") {
                continue;
            }
            let dep = d["name"].as_str().unwrap_or_default();
            for (only, allowed, why) in ONLY {
                if dep == *only && !allowed.contains(&name) {
                    problems.push(format!("{name} depends on {dep}: {why}"));
                }
            }
        }
    }
}

/// Every crate `krate` pulls in (normal dependencies, its own features).
fn tree(krate: &str, flags: &[&str]) -> Result<BTreeSet<String>> {
    let out = cargo()
        .current_dir(root())
        .args(["tree", "-p", krate, "-e", "normal", "--prefix", "none"])
        .args(["--format", "{p}"])
        .args(flags)
        .output()
        .context("cannot run cargo tree")?;
    if !out.status.success() {
        bail!(
            "cargo tree -p {krate} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// The code map's rows: `| `crate` | `path` | owns |`.
fn check_code_map(members: &[(String, PathBuf)], problems: &mut Vec<String>) -> Result<()> {
    let arch = std::fs::read_to_string(root().join("ARCHITECTURE.md"))
        .context("cannot read ARCHITECTURE.md")?;
    let mut rows = 0;
    for line in arch.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "", crate, path, owns, ""
        if cells.len() < 5 || !cells[1].starts_with('`') {
            continue;
        }
        let krate = cells[1].trim_matches('`');
        let Some((_, dir)) = members.iter().find(|(n, _)| n == krate) else {
            problems.push(format!(
                "ARCHITECTURE.md names crate `{krate}`, not in the workspace"
            ));
            continue;
        };
        rows += 1;
        let paths: Vec<&str> = ticked(cells[2]).collect();
        let at_root = cells[2].contains("root package") && *dir == root();
        if !at_root && !paths.iter().any(|p| root().join(p) == *dir) {
            problems.push(format!(
                "ARCHITECTURE.md puts `{krate}` at {}, but it is at {}",
                cells[2],
                dir.strip_prefix(root()).unwrap_or(dir).display()
            ));
        }
        let sources = rust_files(dir);
        let text: String = sources
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .collect();
        for name in ticked(cells[3]) {
            if let Some(problem) = check_named(krate, dir, &sources, &text, name) {
                problems.push(problem);
            }
        }
    }
    if rows == 0 {
        problems.push("ARCHITECTURE.md has no code map table".into());
    }
    for (krate, _) in members {
        let row = format!("| `{krate}` |");
        if !arch.lines().any(|l| l.starts_with(&row)) {
            problems.push(format!(
                "ARCHITECTURE.md's code map has no row for `{krate}`"
            ));
        }
    }
    Ok(())
}

/// What a code map row names: a file (`x.rs`), a folder (`x/`), a
/// repository path (`wit/`), or an item (`Runtime`, `Error`).
fn check_named(
    krate: &str,
    dir: &Path,
    sources: &[PathBuf],
    text: &str,
    name: &str,
) -> Option<String> {
    if name.ends_with(".rs") || name.ends_with('/') || name.contains('/') {
        let bare = name.trim_end_matches('/');
        let found = root().join(bare).exists()
            || dir.join(bare).exists()
            || dir.join("src").join(bare).exists()
            || sources
                .iter()
                .any(|f| f.ends_with(bare) || f.parent().is_some_and(|p| p.ends_with(bare)));
        return (!found).then(|| format!("ARCHITECTURE.md: `{name}` ({krate}) does not exist"));
    }
    let item = name.split(['(', '<', ':']).next().unwrap_or(name);
    let is_item = item.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && item.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !is_item {
        return None;
    }
    let defined = ["struct", "enum", "trait", "type", "fn", "mod", "use"]
        .iter()
        .any(|kw| {
            text.contains(&format!("{kw} {item}"))
                || text.contains(&format!("{kw} {item}<"))
                || text.contains(&format!("{item},"))
                || text.contains(&format!("{item}}}"))
        });
    (!defined).then(|| format!("ARCHITECTURE.md: item `{item}` is not in {krate}"))
}

/// The `code` spans of a table cell.
fn ticked(cell: &str) -> impl Iterator<Item = &str> {
    cell.split('`').skip(1).step_by(2)
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name();
            if p.is_dir() {
                // Another crate's folder, or build output, is not this crate's.
                if name != "target" && (p == dir.join("src") || !p.join("Cargo.toml").exists()) {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out
}
