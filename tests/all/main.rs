//! ferray's integration tests: one binary, run by `cargo test`. The guest
//! components come from `ferray-test-fixtures`, whose build script compiles
//! `guest-examples/` and `tests/guests/`.

mod actors;
mod both;
mod cli;
mod cluster;
mod dashboard;
mod data;
mod embed;
mod faults;
mod files;
mod gpu;
mod harness;
mod http;
mod limits;
mod objects;
mod partition;
mod proposals;
mod restart;
mod sandbox;
mod serve;
mod tls;
mod train;
mod tune;
mod values;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

use ferray::{OutputMode, Runtime, RuntimeBuilder};

/// A compiled-code cache shared by the tests of this run (compiling each
/// guest once keeps the suite fast).
fn cache_dir() -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
        .to_path_buf()
}

/// What `attempt` gives once it succeeds, trying again every 10 ms for up
/// to 30 s (for what frees itself asynchronously: a killed actor's slot, a
/// cancelled task's place). Fails the test with the last error.
async fn eventually<T, E: std::fmt::Display, F: std::future::Future<Output = Result<T, E>>>(
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match attempt().await {
            Ok(v) => return v,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "{what} never happened: {e}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The `ferray` binary, with its cache in this run's temp dir.
fn ferray() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferray"));
    cmd.env("FERRAY_CACHE_DIR", cache_dir())
        .env_remove("FERRAY_LOG");
    cmd
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Run `ferray ARGS`; the output, after checking the exit status.
#[track_caller]
fn ferray_ok(args: &[&str]) -> String {
    let out = ferray().args(args).output().expect("run ferray");
    assert!(
        out.status.success(),
        "ferray {args:?} failed ({}): {}{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Run `ferray ARGS` expecting failure; its stderr.
#[track_caller]
fn ferray_err(args: &[&str]) -> String {
    let out = ferray().args(args).output().expect("run ferray");
    assert!(
        !out.status.success(),
        "ferray {args:?} should fail, printed: {}",
        stdout(&out)
    );
    let err = stderr(&out);
    assert!(err.contains("error: "), "no error line in: {err}");
    // Guest output lines start with `(task-N)`; a host panic would not.
    assert!(
        !err.contains("thread 'main'") && !err.contains("thread 'ferray"),
        "ferray panicked: {err}"
    );
    err
}

/// A runtime for tests: 2 CPUs, guest output collected, shared code cache.
fn builder() -> RuntimeBuilder {
    Runtime::builder()
        .num_cpus(2.0)
        .output(OutputMode::Collect)
        .cache_dir(Some(cache_dir()))
}

async fn runtime() -> Runtime {
    builder().build().await.expect("runtime")
}

async fn load(rt: &Runtime, path: &str) -> ferray::Component {
    rt.load_file(path).await.expect("load component")
}

use ferray_test_fixtures as fx;
