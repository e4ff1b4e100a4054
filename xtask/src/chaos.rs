//! `cargo xtask chaos [--minutes N] [--seed S] [--failure P]`: a mixed
//! workload on a local cluster (a head with its own worker, and three more
//! workers) while nodes and the head are killed and started again at
//! random and calls fail at random, every job's result checked against
//! the embedded runtime's.
//!
//! - Workload: jobs drawn at random from a set (a driver's actor calls,
//!   independent tasks, a DAG through object arguments, nested tasks, a
//!   Monte Carlo estimate), two submitters at a time, each a
//!   `ferray submit` that follows its job through head restarts.
//! - Chaos, every 8 to 25 s: kill -9 a worker and start it again; SIGSTOP
//!   a worker past the node timeout, then SIGCONT; or kill -9 the head and
//!   start it again on its port and database.
//! - Faults: every node and submitter runs with
//!   `FERRAY_TESTING_RPC_FAILURE=*=P/3:P/3:P/3` (the `testing` build).
//!
//! It prints, per case, jobs done right, jobs failed with an error (and the
//! errors), wrong results and hung jobs (no end within 5 minutes), and
//! exits 1 on a wrong result or a hung job.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{cargo, root, run};

/// A job's longest run before it counts as hung.
const JOB_LIMIT: Duration = Duration::from_secs(300);

struct Options {
    minutes: f64,
    seed: u64,
    failure: f64,
}

fn options(args: &[String]) -> Result<Options> {
    let mut o = Options {
        minutes: 5.0,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1),
        failure: 0.01,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .with_context(|| format!("{name} needs a value"))
                .cloned()
        };
        match a.as_str() {
            "--minutes" => o.minutes = value("--minutes")?.parse()?,
            "--seed" => o.seed = value("--seed")?.parse()?,
            "--failure" => o.failure = value("--failure")?.parse()?,
            other => bail!("unknown argument {other} (--minutes N, --seed S, --failure P)"),
        }
    }
    if !(0.0..=0.5).contains(&o.failure) {
        bail!("--failure is a probability of at most 0.5");
    }
    Ok(o)
}

/// A small random generator (xorshift64*), seeded.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One kind of job: a component, its driver and arguments, and the result
/// the embedded runtime gives.
struct Case {
    name: &'static str,
    wasm: PathBuf,
    args: Vec<String>,
    want: String,
}

#[derive(Default)]
struct Tally {
    done: u64,
    failed: u64,
    wrong: u64,
    hung: u64,
    errors: BTreeMap<String, u64>,
}

pub(crate) struct Cluster {
    exe: PathBuf,
    home: PathBuf,
    port: u16,
    env: Vec<(String, String)>,
    head: Child,
    workers: Vec<Child>,
    heads_started: u32,
    workers_started: u32,
}

impl Cluster {
    /// A cluster of `exe` in `home`, not started; `env` for every process.
    pub(crate) fn new(exe: PathBuf, home: PathBuf, env: Vec<(String, String)>) -> Result<Cluster> {
        Ok(Cluster {
            exe,
            home,
            port: 0,
            env,
            head: Command::new("true").spawn()?,
            workers: Vec::new(),
            heads_started: 0,
            workers_started: 0,
        })
    }

    /// Start the head, then `workers` workers.
    pub(crate) fn start(&mut self, workers: usize) -> Result<()> {
        self.head = self.start_head()?;
        for _ in 0..workers {
            let w = self.start_worker()?;
            self.workers.push(w);
        }
        Ok(())
    }

    /// Kill every process of the cluster.
    pub(crate) fn stop(&mut self) {
        for w in self.workers.iter_mut() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = self.head.kill();
        let _ = self.head.wait();
    }

    pub(crate) fn cmd(&self) -> Command {
        let mut c = Command::new(&self.exe);
        c.env("FERRAY_HOME", &self.home)
            .env_remove("FERRAY_TOKEN")
            .env("FERRAY_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    fn log(&self, name: &str) -> Result<std::fs::File> {
        std::fs::File::create(self.home.join(name)).context("a log file")
    }

    fn start_head(&mut self) -> Result<Child> {
        let _ = std::fs::remove_file(self.home.join("head-address"));
        let n = self.heads_started;
        self.heads_started += 1;
        let log = self.log(&format!("head-{n}.log"))?;
        let child = self
            .cmd()
            .args(["start", "--head", "--block", "--num-cpus", "2"])
            .args(["--node-timeout", "3s", "--dashboard-port", "0"])
            .args(["--reconnect-timeout", "120s"])
            .args(["--port", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the head")?;
        let file = self.home.join("head-address");
        let until = Instant::now() + Duration::from_secs(60);
        while !file.exists() {
            if Instant::now() > until {
                bail!("the head did not start; see {}", self.home.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.port == 0 {
            let addr = std::fs::read_to_string(&file)?;
            self.port = addr
                .trim()
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .context("the head's address")?;
        }
        Ok(child)
    }

    fn start_worker(&mut self) -> Result<Child> {
        let n = self.workers_started;
        self.workers_started += 1;
        let log = self.log(&format!("worker-{n}.log"))?;
        self.cmd()
            .args(["start", "--block", "--num-cpus", "2"])
            .args(["--reconnect-timeout", "120s"])
            .args(["--address", &format!("127.0.0.1:{}", self.port)])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting a worker")
    }

    pub(crate) fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status();
}

pub(crate) fn chaos(args: &[String]) -> Result<()> {
    let o = options(args)?;
    eprintln!(
        "chaos: {} minutes, seed {}, {}% of calls and session messages failing",
        o.minutes,
        o.seed,
        o.failure * 100.0
    );
    // The `testing` build of the binary (as the tests build it): fault
    // injection from the environment.
    run(cargo().current_dir(root()).args([
        "build",
        "--bin",
        "ferray",
        "--features",
        "ferray/testing",
    ]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let exe = target.join("debug/ferray");
    let cases = build_cases(&exe)?;

    let home = std::env::temp_dir().join(format!("ferray-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&home)?;
    let p = o.failure / 3.0;
    let env = vec![
        (
            "FERRAY_TESTING_RPC_FAILURE".to_string(),
            format!("*={p}:{p}:{p}"),
        ),
        ("FERRAY_TESTING_RPC_DELAY_MS".to_string(), "2".to_string()),
    ];
    let mut c = Cluster::new(exe, home.clone(), env)?;
    c.start(3)?;
    std::thread::sleep(Duration::from_secs(2));
    eprintln!(
        "chaos: cluster at {} (logs in {})",
        c.address(),
        home.display()
    );

    let cluster = Arc::new(Mutex::new(c));
    let tally: Arc<Mutex<BTreeMap<&'static str, Tally>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let cases = Arc::new(cases);
    let deadline = Instant::now() + Duration::from_secs_f64(o.minutes * 60.0);
    let mut submitters = Vec::new();
    for k in 0..2u64 {
        let (cluster, tally, stop, cases) =
            (cluster.clone(), tally.clone(), stop.clone(), cases.clone());
        let mut rng = Rng(o.seed.wrapping_add(k + 1) | 1);
        submitters.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                let case = &cases[rng.below(cases.len() as u64) as usize];
                let (mut cmd, address, home) = {
                    let c = cluster.lock().unwrap_or_else(|e| e.into_inner());
                    (c.cmd(), c.address(), c.home.clone())
                };
                let outcome = submit(&mut cmd, &address, case, &home);
                let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
                let t = t.entry(case.name).or_default();
                match outcome {
                    Outcome::Done => t.done += 1,
                    Outcome::Failed(e) => {
                        t.failed += 1;
                        *t.errors.entry(e).or_default() += 1;
                    }
                    Outcome::Wrong(got) => {
                        eprintln!("chaos: WRONG result of {}: {got}", case.name);
                        t.wrong += 1;
                    }
                    Outcome::Hung => t.hung += 1,
                }
            }
        }));
    }

    let mut rng = Rng(o.seed | 1);
    let mut actions: BTreeMap<&str, u64> = BTreeMap::new();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(8 + rng.below(18)));
        if Instant::now() >= deadline {
            break;
        }
        let mut c = cluster.lock().unwrap_or_else(|e| e.into_inner());
        match rng.below(10) {
            0..=4 => {
                let i = rng.below(c.workers.len() as u64) as usize;
                let _ = c.workers[i].kill();
                let _ = c.workers[i].wait();
                drop(c);
                std::thread::sleep(Duration::from_millis(500 + rng.below(2500)));
                let mut c = cluster.lock().unwrap_or_else(|e| e.into_inner());
                c.workers[i] = c.start_worker()?;
                *actions
                    .entry("worker killed and started again")
                    .or_default() += 1;
            }
            5 | 6 => {
                let i = rng.below(c.workers.len() as u64) as usize;
                signal(&c.workers[i], "-STOP");
                std::thread::sleep(Duration::from_secs(5));
                signal(&c.workers[i], "-CONT");
                *actions
                    .entry("worker stopped past the node timeout")
                    .or_default() += 1;
            }
            _ => {
                let _ = c.head.kill();
                let _ = c.head.wait();
                std::thread::sleep(Duration::from_millis(500 + rng.below(2500)));
                c.head = c.start_head()?;
                *actions.entry("head killed and started again").or_default() += 1;
            }
        }
        eprintln!("chaos: {actions:?}");
    }
    stop.store(true, Ordering::Release);
    eprintln!("chaos: time is up; waiting for the jobs in flight");
    for s in submitters {
        let _ = s.join();
    }
    {
        let mut c = cluster.lock().unwrap_or_else(|e| e.into_inner());
        c.stop();
    }

    let tally = tally.lock().unwrap_or_else(|e| e.into_inner());
    println!("\nchaos run: {} minutes, seed {}", o.minutes, o.seed);
    for (a, n) in &actions {
        println!("  {a}: {n}");
    }
    println!(
        "\n{:<12} {:>6} {:>7} {:>6} {:>5}",
        "case", "done", "failed", "wrong", "hung"
    );
    let mut all = Tally::default();
    for (name, t) in tally.iter() {
        println!(
            "{name:<12} {:>6} {:>7} {:>6} {:>5}",
            t.done, t.failed, t.wrong, t.hung
        );
        all.done += t.done;
        all.failed += t.failed;
        all.wrong += t.wrong;
        all.hung += t.hung;
        for (e, n) in &t.errors {
            *all.errors.entry(e.clone()).or_default() += n;
        }
    }
    println!(
        "{:<12} {:>6} {:>7} {:>6} {:>5}",
        "all", all.done, all.failed, all.wrong, all.hung
    );
    if !all.errors.is_empty() {
        println!("\nerrors of the failed jobs:");
        for (e, n) in &all.errors {
            println!("  {n} × {e}");
        }
    }
    println!("\nlogs: {}", home.display());
    if all.wrong > 0 || all.hung > 0 {
        bail!("{} wrong results, {} hung jobs", all.wrong, all.hung);
    }
    Ok(())
}

enum Outcome {
    Done,
    Failed(String),
    Wrong(String),
    Hung,
}

fn submit(cmd: &mut Command, address: &str, case: &Case, home: &Path) -> Outcome {
    cmd.args([
        "submit",
        "--address",
        address,
        "--reconnect-timeout",
        "120s",
    ])
    .arg(&case.wasm)
    .args(&case.args)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let Ok(mut child) = cmd.spawn() else {
        return Outcome::Failed("cannot start ferray submit".into());
    };
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() > JOB_LIMIT => {
                let _ = child.kill();
                let _ = child.wait();
                return Outcome::Hung;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Outcome::Failed(format!("waiting for ferray submit: {e}")),
        }
    }
    let Ok(out) = child.wait_with_output() else {
        return Outcome::Failed("ferray submit's output".into());
    };
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        // Kept whole for a look afterwards.
        let n = std::fs::read_dir(home).map(|d| d.count()).unwrap_or(0);
        let _ = std::fs::write(home.join(format!("failed-{n}.log")), err.as_bytes());
        let line = err
            .lines()
            .rev()
            .find(|l| l.starts_with("error"))
            .unwrap_or("(no error line)");
        return Outcome::Failed(cut(line));
    }
    if stdout == case.want {
        Outcome::Done
    } else {
        Outcome::Wrong(cut(&stdout))
    }
}

/// An error line without the parts that differ between jobs (ids).
fn cut(line: &str) -> String {
    let words: Vec<String> = line
        .split_whitespace()
        .map(|w| {
            if w.chars().any(|c| c.is_ascii_digit()) && w.contains('-') {
                "#".to_string()
            } else {
                w.to_string()
            }
        })
        .collect();
    let mut s = words.join(" ");
    s.truncate(200);
    s
}

fn build_cases(exe: &Path) -> Result<Vec<Case>> {
    let examples = root().join("guest-examples");
    let guests = root().join("tests/guests");
    for dir in [&examples, &guests] {
        // In the guests' own target directories.
        run(cargo()
            .current_dir(dir)
            .env_remove("CARGO_TARGET_DIR")
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--workspace",
            ]))?;
    }
    let wasm =
        |dir: &Path, name: &str| dir.join(format!("target/wasm32-wasip2/release/{name}.wasm"));
    let text = "\"the quick brown fox jumps over the lazy dog the fox the dog\"";
    let specs: Vec<(&'static str, PathBuf, Vec<&str>)> = vec![
        // Actor calls from the driver: exactly once, whatever fails (a
        // call run twice or lost shows in the sum). (The `counter` example
        // calls its actor from tasks, and a task retried after its node
        // died calls it again: at least once, as in Ray, so its sum is no
        // check here.)
        (
            "actor-sum",
            wasm(&guests, "misbehave"),
            vec!["actor-sum", "300", "8"],
        ),
        ("squares", wasm(&examples, "squares"), vec!["run", "60"]),
        (
            "wordcount",
            wasm(&examples, "wordcount"),
            vec!["run", text, "12", "4"],
        ),
        (
            "pi",
            wasm(&examples, "pi"),
            vec!["estimate", "200000", "16"],
        ),
        (
            "fan-out",
            wasm(&guests, "misbehave"),
            vec!["fan-out", "300", "5"],
        ),
        ("nest", wasm(&guests, "misbehave"), vec!["nest", "12"]),
    ];
    let mut cases = Vec::new();
    for (name, path, args) in specs {
        // The embedded runtime's answer.
        let out = Command::new(exe)
            .arg("run")
            .arg(&path)
            .args(&args)
            .output()
            .with_context(|| format!("running {name} on the embedded runtime"))?;
        if !out.status.success() {
            bail!(
                "{name} fails on the embedded runtime: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        cases.push(Case {
            name,
            wasm: path,
            args: args.iter().map(|s| s.to_string()).collect(),
            want: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        });
    }
    Ok(cases)
}
