//! `cargo xtask fuzz [TARGET] [--runs N]`: each fuzz target of `fuzz/` (or
//! the one named) under libFuzzer on the nightly toolchain, `N` executions
//! (1,000,000 by default), one target after the other.
//!
//! The run starts from the checked-in corpus (`fuzz/corpus/<target>/`, read
//! only) and keeps what it finds in `target/fuzz-corpus/<target>/`; a crash
//! is written to `fuzz/artifacts/<target>/` and stops the run. To grow the
//! checked-in corpus, minimize the new inputs into it (`cargo +nightly fuzz
//! cmin`), and copy a crash, once fixed, to `fuzz/regressions/<target>/`.

use std::process::Command;

use anyhow::{Result, bail};

use crate::{root, run};

const DEFAULT_RUNS: u64 = 1_000_000;

/// The fuzz targets: the binaries in `fuzz/fuzz_targets/`.
fn targets() -> Result<Vec<String>> {
    let dir = root().join("fuzz/fuzz_targets");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
        .filter_map(|e| {
            let path = e.ok()?.path();
            (path.extension()? == "rs").then(|| path.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    names.sort();
    Ok(names)
}

pub fn fuzz(args: &[String]) -> Result<()> {
    let (target, runs) = parse(args)?;
    let all = targets()?;
    let chosen: Vec<String> = match target {
        Some(t) if all.contains(&t) => vec![t],
        Some(t) => bail!("no fuzz target `{t}`; there are {}", all.join(", ")),
        None => all,
    };
    for target in &chosen {
        let scratch = root().join("target/fuzz-corpus").join(target);
        std::fs::create_dir_all(&scratch)?;
        let seeds = root().join("fuzz/corpus").join(target);
        // `cargo +nightly` through rustup, whatever toolchain runs xtask.
        run(Command::new("cargo")
            .current_dir(root())
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO")
            .args(["+nightly", "fuzz", "run", "--features", "libfuzzer", target])
            .arg(&scratch)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-runs={runs}")))?;
    }
    eprintln!(
        "fuzz: {} target(s), {runs} runs each, no crash",
        chosen.len()
    );
    Ok(())
}

fn parse(args: &[String]) -> Result<(Option<String>, u64)> {
    let mut target = None;
    let mut runs = DEFAULT_RUNS;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => {
                let Some(n) = args.next().and_then(|n| n.replace('_', "").parse().ok()) else {
                    bail!("--runs takes a number of executions");
                };
                runs = n;
            }
            t if !t.starts_with('-') && target.is_none() => target = Some(t.to_string()),
            other => bail!("usage: cargo xtask fuzz [TARGET] [--runs N]; got `{other}`"),
        }
    }
    Ok((target, runs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments() {
        let args = |a: &[&str]| parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(args(&[]).ok(), Some((None, DEFAULT_RUNS)));
        assert_eq!(
            args(&["codec", "--runs", "1_000"]).ok(),
            Some((Some("codec".into()), 1000))
        );
        assert!(args(&["--runs"]).is_err());
        assert!(args(&["a", "b"]).is_err());
    }

    #[test]
    fn every_target_has_a_corpus() {
        let targets = targets().expect("targets");
        assert!(targets.len() >= 5, "{targets:?}");
        for t in targets {
            assert!(root().join("fuzz/corpus").join(&t).is_dir(), "{t}");
        }
    }
}
