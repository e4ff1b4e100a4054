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
    // A whole workload (the smallest: a tree of 1,365 nested tasks) prints
    // its time in seconds, once its result is checked.
    let out = ferray_ok(&["microbenchmark", "--filter", "workload_tree"]);
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fields.len(), 3, "{out}");
    assert_eq!((fields[0], fields[2]), ("workload_tree_1365", "seconds"));
    assert!(fields[1].parse::<f64>().is_ok_and(|v| v > 0.0), "{out}");
}

/// The whole workloads the microbenchmark times (and `benches/ray/bench.py`
/// runs on Ray in the same shapes) give their known results, run here
/// smaller: a guest driver's independent tasks, a chain through object
/// arguments, and a tree of nested tasks that wait for their children.
#[test]
fn the_benchmark_guests_workloads_give_their_results() {
    for (args, want) in [
        (&["fan-in", "300"][..], "2100"),
        (&["chain", "60"][..], "60"),
        (&["chain", "1"][..], "1"),
        (&["tree", "3", "3"][..], "40"),
        (&["tree", "0", "4"][..], "1"),
    ] {
        let mut all = vec!["run", fx::BENCH];
        all.extend_from_slice(args);
        assert_eq!(ferray_ok(&all).trim(), want, "{args:?}");
    }
}

/// `ferray ARGS` under a pseudo-terminal (util-linux's `script`, as on CI's
/// Debian): its exit status and what the terminal got (stdout and stderr
/// together, escape codes and all).
fn ferray_on_a_terminal(args: &[&str]) -> (bool, String) {
    let quote = |a: &str| format!("'{}'", a.replace('\'', r"'\''"));
    let cmd: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_ferray"))
        .chain(args.iter().copied())
        .map(quote)
        .collect();
    let out = std::process::Command::new("script")
        .args(["-qefc", &cmd.join(" "), "/dev/null"])
        .env("FERRAY_CACHE_DIR", crate::cache_dir())
        .env_remove("FERRAY_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run ferray under `script` (util-linux)");
    (out.status.success(), crate::stdout(&out))
}

/// The lines an 80-column terminal shows after `raw` (80: what the bar
/// assumes when, as under `script` without a terminal of its own, the
/// pseudo-terminal has no size): a small emulator of what the bar writes
/// (carriage returns, line feeds, the wrap at the last column, erasing a
/// line, moving up).
fn visible_lines(raw: &str) -> Vec<String> {
    const WIDTH: usize = 80;
    let mut rows: Vec<Vec<char>> = vec![Vec::new()];
    let (mut row, mut col) = (0usize, 0usize);
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => col = 0,
            '\n' => {
                row += 1;
                col = 0;
            }
            '\x1b' => {
                if chars.next_if_eq(&'[').is_none() {
                    continue;
                }
                let mut param = String::new();
                let mut fin = ' ';
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        fin = c;
                        break;
                    }
                    param.push(c);
                }
                let n: usize = param.parse().unwrap_or(0);
                match fin {
                    'K' if n == 2 => rows[row].clear(),
                    'K' => rows[row].truncate(col),
                    'A' => row = row.saturating_sub(n.max(1)),
                    _ => {}
                }
            }
            c => {
                if col == WIDTH {
                    row += 1;
                    col = 0;
                }
                if rows.len() <= row {
                    rows.resize(row + 1, Vec::new());
                }
                let line = &mut rows[row];
                if line.len() <= col {
                    line.resize(col + 1, ' ');
                }
                line[col] = c;
                col += 1;
            }
        }
        if rows.len() <= row {
            rows.resize(row + 1, Vec::new());
        }
    }
    rows.iter()
        .map(|r| r.iter().collect::<String>().trim_end().to_string())
        .collect()
}

/// `(done, total)` of each `DONE/TOTAL tasks` the bar drew in `raw`.
fn bar_counts(raw: &str) -> Vec<(u64, u64)> {
    raw.match_indices(" tasks (")
        .filter_map(|(at, _)| {
            let head = &raw[..at];
            let start = head.rfind(' ').map_or(0, |i| i + 1);
            let (done, total) = head[start..].split_once('/')?;
            Some((done.parse().ok()?, total.parse().ok()?))
        })
        .collect()
}

/// On a terminal `ferray run` shows a bar of the job's tasks (done/total,
/// elapsed, rate) that advances, prints guests' output above it, and still
/// prints the result; off a terminal there is no bar and no escape code.
#[test]
fn run_shows_a_progress_bar_on_a_terminal_only() {
    // 8 tasks of 200 ms on 2 CPUs: at least 800 ms, ticks of 100 ms.
    let args = [
        "run",
        "--num-cpus",
        "2",
        fx::MISBEHAVE,
        "fan-out",
        "8",
        "200",
    ];
    let squares: Vec<String> = (0..8i64).map(|i| (i * i).to_string()).collect();
    let result = format!("[{}]", squares.join(", "));
    let (ok, raw) = ferray_on_a_terminal(&args);
    assert!(ok, "{raw}");
    let counts = bar_counts(&raw);
    // The driver's 8 tasks (the driver is not counted, as on a cluster).
    assert!(
        counts
            .iter()
            .any(|&(done, total)| total == 8 && done > 0 && done < 8),
        "no bar advancing through 8 tasks in: {raw:?}"
    );
    assert!(
        counts.windows(2).all(|w| w[0].0 <= w[1].0),
        "the count went back: {counts:?}"
    );
    assert!(raw.contains("[00:00:0"), "no elapsed time: {raw:?}");
    assert!(raw.contains("/s)"), "no rate: {raw:?}");
    assert!(
        visible_lines(&raw).contains(&result),
        "no result line in: {raw:?}"
    );

    // Guests' output prints on lines of its own, not into the bar's.
    let (ok, raw) = ferray_on_a_terminal(&["run", fx::MISBEHAVE, "shout", "\"hello\""]);
    assert!(ok, "{raw}");
    let lines = visible_lines(&raw);
    let said: Vec<_> = lines.iter().filter(|l| l.contains(") hello")).collect();
    assert_eq!(said.len(), 2, "{lines:?}");
    for l in said {
        assert!(
            l.starts_with("(task-") && l.ends_with(") hello"),
            "{lines:?}"
        );
    }
    assert!(lines.iter().any(|l| l == "\"HELLO\""), "{lines:?}");

    // Not a terminal: plain output, as before.
    let out = ferray().args(args).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(crate::stdout(&out), format!("{result}\n"));
    let err = stderr(&out);
    assert!(
        !err.contains('\x1b'),
        "escape codes off a terminal: {err:?}"
    );
    assert!(!err.contains("tasks"), "a bar off a terminal: {err:?}");
}
