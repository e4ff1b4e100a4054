//! The `ferray` command line, end to end: the examples, `inspect`, and every
//! error SPEC.md lists.

use crate::{ferray, ferray_err, ferray_ok, fx, stderr};

#[test]
fn squares_run_prints_the_list() {
    assert_eq!(
        ferray_ok(&["run", fx::SQUARES, "run", "10"]),
        "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]\n"
    );
}

#[test]
fn arguments_after_the_function_pass_through_even_with_dashes() {
    assert_eq!(
        ferray_ok(&["run", fx::SQUARES, "heavy-compute", "7"]),
        "49\n"
    );
    assert_eq!(
        ferray_ok(&["run", fx::SQUARES, "heavy-compute", "-9"]),
        "81\n"
    );
}

#[test]
fn local_mode_gives_the_same_results() {
    assert_eq!(
        ferray_ok(&["run", "--local-mode", fx::SQUARES, "run", "10"]),
        "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]\n"
    );
    assert_eq!(
        ferray_ok(&["run", "--local-mode", fx::COUNTER, "run", "10"]),
        "55\n"
    );
}

#[test]
fn counter_example_calls_one_actor_from_many_tasks() {
    assert_eq!(ferray_ok(&["run", fx::COUNTER, "run", "20"]), "210\n");
}

#[test]
fn wordcount_example_counts_words_with_map_and_reduce() {
    let text = "the cat and the dog and the bird";
    let out = ferray_ok(&["run", fx::WORDCOUNT, "run", &format!("{text:?}"), "3", "2"]);
    assert_eq!(out, "[(\"the\", 3), (\"and\", 2)]\n");
}

#[test]
fn wordcount_reads_a_granted_file_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("words.txt"), "b a b c b a").unwrap();
    let grant = format!("{}::/data", dir.path().display());
    let out = ferray_ok(&[
        "run",
        "--dir",
        &grant,
        fx::WORDCOUNT,
        "run-file",
        "\"/data/words.txt\"",
        "2",
        "0",
    ]);
    assert_eq!(out, "ok([(\"b\", 3), (\"a\", 2), (\"c\", 1)])\n");
    // Without the grant the guest sees no file system: an `err` result, exit 1.
    let out = ferray()
        .args([
            "run",
            fx::WORDCOUNT,
            "run-file",
            "\"/data/words.txt\"",
            "2",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        crate::stdout(&out).starts_with("err("),
        "{}",
        crate::stdout(&out)
    );
}

#[test]
fn pi_example_estimates_pi_with_nested_tasks() {
    let out = ferray_ok(&["run", fx::PI, "estimate", "200000", "4"]);
    let pi: f64 = out.trim().parse().expect("a number");
    assert!((pi - std::f64::consts::PI).abs() < 0.05, "{pi}");
}

#[test]
fn inspect_shows_digest_exports_and_imports() {
    let out = ferray_ok(&["inspect", fx::SQUARES]);
    let bytes = std::fs::read(fx::SQUARES).unwrap();
    assert!(
        out.contains(&format!("digest: {}", blake3_hex(&bytes))),
        "{out}"
    );
    assert!(out.contains("heavy-compute: func(x: s64) -> s64"), "{out}");
    assert!(out.contains("run: func(n: u32) -> list<s64>"), "{out}");
    assert!(out.contains("ferray:runtime/tasks"), "{out}");
    let out = ferray_ok(&["inspect", fx::COUNTER]);
    assert!(out.contains("resource api.counter"), "{out}");
    assert!(out.contains("incr: func(by: s64) -> s64"), "{out}");
}

fn blake3_hex(bytes: &[u8]) -> String {
    ferray::ComponentId::of(bytes).to_hex()
}

#[test]
fn missing_file_is_one_clear_error() {
    let err = ferray_err(&["run", "/nonexistent/x.wasm", "run"]);
    assert!(err.contains("cannot read /nonexistent/x.wasm"), "{err}");
}

#[test]
fn core_module_is_refused_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("core.wasm");
    std::fs::write(&path, b"\0asm\x01\0\0\0").unwrap();
    let err = ferray_err(&["run", path.to_str().unwrap(), "f"]);
    assert!(
        err.contains("core WebAssembly module, not a component"),
        "{err}"
    );
    assert!(err.contains("cargo component build"), "{err}");
    let err = ferray_err(&["inspect", path.to_str().unwrap()]);
    assert!(err.contains("not a component"), "{err}");
}

#[test]
fn garbage_and_truncated_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"this is not wasm at all").unwrap();
    let err = ferray_err(&["run", garbage.to_str().unwrap(), "run"]);
    assert!(err.contains("not a WebAssembly file"), "{err}");
    let bytes = std::fs::read(fx::SQUARES).unwrap();
    let truncated = dir.path().join("truncated.wasm");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = ferray_err(&["run", truncated.to_str().unwrap(), "run", "3"]);
    assert!(err.contains("not a valid WebAssembly component"), "{err}");
}

#[test]
fn unknown_export_lists_the_exports() {
    let err = ferray_err(&["run", fx::SQUARES, "cube", "3"]);
    assert!(err.contains("no exported function `cube`"), "{err}");
    assert!(
        err.contains("heavy-compute") && err.contains("run"),
        "{err}"
    );
}

#[test]
fn wrong_arguments_print_the_signature() {
    let err = ferray_err(&["run", fx::SQUARES, "heavy-compute"]);
    assert!(err.contains("takes 1 argument(s), got 0"), "{err}");
    assert!(err.contains("heavy-compute: func(x: s64) -> s64"), "{err}");
    let err = ferray_err(&["run", fx::SQUARES, "heavy-compute", "\"seven\""]);
    assert!(err.contains("argument `x`"), "{err}");
    assert!(err.contains("heavy-compute: func(x: s64) -> s64"), "{err}");
    let err = ferray_err(&["run", fx::SQUARES, "heavy-compute", "1", "2"]);
    assert!(err.contains("got 2"), "{err}");
}

#[test]
fn trap_shows_the_message_and_the_guest_backtrace() {
    let err = ferray_err(&["run", fx::MISBEHAVE, "trap", "\"boom\""]);
    assert!(err.contains("guest trapped"), "{err}");
    let error_line = err.lines().position(|l| l.starts_with("error: ")).unwrap();
    let error = err.lines().skip(error_line).collect::<Vec<_>>().join("\n");
    assert!(
        error.contains("boom"),
        "guest's panic message missing from the error: {err}"
    );
    assert!(err.contains("wasm backtrace"), "{err}");
    // Once, with the error: not also streamed as the task's output.
    assert_eq!(
        err.matches("boom").count(),
        1,
        "the panic message is printed more than once: {err}"
    );
}

/// `ferray inspect x.wasm | head` and the like: a reader that goes away
/// ends the command quietly, as it does `cat`, never with a panic.
#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    use std::process::Stdio;
    let mut child = ferray()
        .args(["inspect", fx::SQUARES])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the reading end before the command writes anything.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("Broken pipe"), "{err}");
    assert_eq!(out.status.code(), Some(141), "{err}");
}

#[test]
fn time_limit_stops_an_infinite_loop() {
    let err = ferray_err(&["run", "--timeout", "300ms", fx::MISBEHAVE, "spin"]);
    assert!(err.contains("time limit exceeded"), "{err}");
    assert!(err.contains("300ms"), "{err}");
}

#[test]
fn memory_limit_fails_cleanly() {
    let err = ferray_err(&[
        "run",
        "--memory-limit",
        "32MiB",
        fx::MISBEHAVE,
        "hog",
        "100",
    ]);
    assert!(err.contains("memory limit exceeded"), "{err}");
    assert!(err.contains("32 MiB"), "{err}");
}

#[test]
fn fuel_exhaustion_is_reported() {
    let err = ferray_err(&["run", "--fuel", "100000", fx::MISBEHAVE, "spin"]);
    assert!(err.contains("fuel exhausted"), "{err}");
}

#[test]
fn bad_option_values_are_refused() {
    let err = ferray_err(&["run", "--timeout", "soon", fx::SQUARES, "run", "1"]);
    assert!(err.contains("not a duration"), "{err}");
    let err = ferray_err(&["run", "--memory-limit", "lots", fx::SQUARES, "run", "1"]);
    assert!(err.contains("not a size"), "{err}");
    let err = ferray_err(&[
        "run",
        "--dir",
        "/nonexistent-dir::/d",
        fx::SQUARES,
        "run",
        "1",
    ]);
    assert!(err.contains("not a directory"), "{err}");
}

#[test]
fn guest_output_is_shown_with_the_task_id() {
    let out = ferray()
        .args(["run", fx::MISBEHAVE, "shout", "\"hello\""])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(crate::stdout(&out), "\"HELLO\"\n");
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.starts_with("(task-") && l.ends_with(") hello")),
        "{err}"
    );
}

#[test]
fn guest_returned_error_prints_and_exits_non_zero() {
    let out = ferray()
        .args(["run", fx::MISBEHAVE, "fail", "\"nope\""])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(crate::stdout(&out), "err(\"nope\")\n");
}

#[test]
fn a_second_run_does_not_compile_again() {
    let cache = tempfile::tempdir().unwrap();
    let run = || {
        ferray()
            .env("FERRAY_CACHE_DIR", cache.path())
            .env("FERRAY_LOG", "ferray_host=debug")
            .args(["run", fx::SQUARES, "heavy-compute", "3"])
            .output()
            .unwrap()
    };
    let first = run();
    assert!(first.status.success());
    assert!(stderr(&first).contains("compiled"), "{}", stderr(&first));
    let second = run();
    assert!(second.status.success());
    let err = stderr(&second);
    assert!(err.contains("loaded from the compiled-code cache"), "{err}");
    assert!(
        !err.lines().any(|l| l.trim_end().ends_with("compiled")),
        "compiled again: {err}"
    );
}

/// The examples as `cargo component build` makes them (CI builds them in
/// `cargo xtask test` and passes their folder); they run like the others.
#[test]
fn examples_built_by_cargo_component_run() {
    let Some(dir) = std::env::var_os("FERRAY_CARGO_COMPONENT_BUILDS") else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must build the examples with cargo component (cargo xtask test)"
        );
        eprintln!("skipped: FERRAY_CARGO_COMPONENT_BUILDS is not set (run `cargo xtask test`)");
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let squares = dir.join("squares.wasm");
    assert_eq!(
        ferray_ok(&["run", squares.to_str().unwrap(), "run", "10"]),
        "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]\n"
    );
    let counter = dir.join("counter.wasm");
    assert_eq!(
        ferray_ok(&["run", counter.to_str().unwrap(), "run", "4"]),
        "10\n"
    );
    let pi = dir.join("pi.wasm");
    assert!(ferray_ok(&["run", pi.to_str().unwrap(), "estimate", "10000", "2"]).starts_with('3'));
    let wc = dir.join("wordcount.wasm");
    assert_eq!(
        ferray_ok(&["run", wc.to_str().unwrap(), "run", "\"a b a\"", "2", "1"]),
        "[(\"a\", 2)]\n"
    );
}

/// `ferray microbenchmark` runs (briefly here: its figures are for
/// `cargo xtask bench`, not for tests) and prints one line per metric: the
/// Rust guest's under Ray's names, the text component's with `_wat`.
#[test]
fn the_microbenchmark_runs_and_prints_its_metrics() {
    let out = ferray_ok(&[
        "microbenchmark",
        "--scale",
        "0.01",
        "--filter",
        "1_1_actor_calls_sync",
    ]);
    for name in ["1_1_actor_calls_sync", "1_1_actor_calls_sync_wat"] {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} line in: {out}"));
        let value: f64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no figure in: {line}"));
        assert!(value > 0.0, "{line}");
    }
    assert_eq!(out.lines().count(), 2, "{out}");
}
