//! The cluster harness: a head and worker processes of the `ferray` binary
//! (`ferray start --block`) on 127.0.0.1, killed when the `Cluster` is
//! dropped. Used by `cluster.rs` and by the scenarios of `both.rs`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferray::Runtime;
use ferray::cluster::{Client, Token};
use rustix::process::Signal;

use super::{cache_dir, ferray, stderr, stdout};

/// A head and its workers, each a `ferray start --block` process; all are
/// killed on drop.
pub(crate) struct Cluster {
    pub(crate) home: tempfile::TempDir,
    pub(crate) address: String,
    pub(crate) token: String,
    pub(crate) head: Child,
    /// The head's own arguments (after `--port`), to start it again.
    head_args: Vec<String>,
    /// Each worker's process, node id and log file.
    pub(crate) workers: Vec<(Child, u64, PathBuf)>,
}

fn node_cmd(home: &std::path::Path, log: &std::path::Path) -> Command {
    let mut cmd = ferray();
    let out = std::fs::File::create(log).expect("log file");
    cmd.env("FERRAY_HOME", home)
        .env_remove("FERRAY_TOKEN")
        .env("FERRAY_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log file"))
        .stderr(out);
    cmd
}

pub(crate) fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Run a future to completion on a fresh thread with its own async runtime
/// (so that it may be called from inside another one).
pub(crate) fn block_on<F>(f: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio")
                .block_on(f)
        })
        .join()
        .expect("the test's async part panicked")
    })
}

/// A head process (`ferray start --head --block`) on `port`; returns once
/// it wrote its address.
fn start_head(home: &std::path::Path, port: &str, args: &[String], log: &str) -> (Child, String) {
    let head = node_cmd(home, &home.join(log))
        .args([
            "start",
            "--head",
            "--port",
            port,
            "--block",
            "--num-cpus",
            "2",
            "--node-timeout",
            "3s",
        ])
        .args(args)
        .spawn()
        .expect("start the head");
    let addr_file = home.join("head-address");
    let address = wait_for("the head", 60, || {
        std::fs::read_to_string(&addr_file)
            .ok()
            .filter(|s| !s.trim().is_empty())
    });
    (head, address.trim().to_string())
}

impl Cluster {
    /// A head without a worker of its own, plus `workers` workers of 2 CPUs.
    pub(crate) fn start(workers: usize) -> Cluster {
        Self::start_with(workers, &["--no-worker"])
    }

    pub(crate) fn start_with(workers: usize, head_args: &[&str]) -> Cluster {
        let home = tempfile::tempdir().expect("temp dir");
        let head_args: Vec<String> = head_args.iter().map(|s| s.to_string()).collect();
        let (head, address) = start_head(home.path(), "0", &head_args, "head.log");
        let token = std::fs::read_to_string(home.path().join("token")).expect("token file");
        let mut c = Cluster {
            home,
            address,
            token: token.trim().to_string(),
            head,
            head_args,
            workers: Vec::new(),
        };
        for _ in 0..workers {
            c.add_worker(&[]);
        }
        c
    }

    /// kill -9 the head, then start it again at once on the same port,
    /// home and database (its log goes to `head-N.log`).
    pub(crate) fn restart_head(&mut self, n: usize) {
        self.head.kill().expect("kill -9 the head");
        let _ = self.head.wait();
        let _ = std::fs::remove_file(self.home.path().join("head-address"));
        let port = self.address.rsplit(':').next().expect("a port").to_string();
        let (head, address) = start_head(
            self.home.path(),
            &port,
            &self.head_args,
            &format!("head-{n}.log"),
        );
        assert_eq!(address, self.address, "the head came back at its address");
        self.head = head;
    }

    pub(crate) fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.home.path().join(name)).unwrap_or_default()
    }

    /// Start a worker (2 CPUs); its node id once the head lists it.
    pub(crate) fn add_worker(&mut self, env: &[(&str, &str)]) -> u64 {
        self.add_worker_with(env, &[])
    }

    pub(crate) fn add_worker_with(&mut self, env: &[(&str, &str)], args: &[&str]) -> u64 {
        self.add_worker_in(&[], env, args)
    }

    /// A worker started through `wrap` (a command that runs the rest, like
    /// `ip netns exec NS`; empty: none).
    pub(crate) fn add_worker_in(
        &mut self,
        wrap: &[&str],
        env: &[(&str, &str)],
        args: &[&str],
    ) -> u64 {
        let log = self
            .home
            .path()
            .join(format!("worker-{}.log", self.workers.len()));
        let mut cmd = node_cmd(self.home.path(), &log);
        if let Some((program, rest)) = wrap.split_first() {
            let ferray = cmd.get_program().to_owned();
            let mut wrapped = Command::new(program);
            wrapped.args(rest).arg(ferray);
            for (k, v) in cmd.get_envs() {
                match v {
                    Some(v) => wrapped.env(k, v),
                    None => wrapped.env_remove(k),
                };
            }
            let out = std::fs::File::create(&log).expect("log file");
            wrapped
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("log file"))
                .stderr(out);
            cmd = wrapped;
        }
        cmd.args([
            "start",
            "--address",
            &self.address,
            "--num-cpus",
            "2",
            "--block",
        ])
        .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start a worker");
        let name = format!("worker pid {}", child.id());
        let node = wait_for("the worker to join", 60, || {
            self.state("nodes")
                .nodes
                .iter()
                .find(|n| n.name == name && n.alive)
                .map(|n| n.id.0)
        });
        self.workers.push((child, node, log));
        node
    }

    /// kill -9 a worker; returns once the head declared its node dead.
    pub(crate) fn kill_worker(&mut self, node: u64) {
        let (child, _, _) = self
            .workers
            .iter_mut()
            .find(|(_, n, _)| *n == node)
            .expect("a worker of this cluster");
        child.kill().expect("kill -9");
        let _ = child.wait();
        wait_for("the head to declare the node dead", 30, || {
            self.state("nodes")
                .nodes
                .iter()
                .any(|n| n.id.0 == node && !n.alive)
                .then_some(())
        });
    }

    /// Waits until worker `index` (its process still running) is alive
    /// again as a node other than `before`; returns the new node's id.
    pub(crate) fn rejoined(&self, index: usize, before: u64) -> u64 {
        let name = format!("worker pid {}", self.workers[index].0.id());
        let again = wait_for("the worker to join again", 120, || {
            self.state("nodes")
                .nodes
                .iter()
                .find(|n| n.name == name && n.alive && n.id.0 != before)
                .map(|n| n.id.0)
        });
        assert!(again > before, "a new node: {again} after {before}");
        again
    }

    /// A job as `ferray list jobs` shows it (`job-N`), if it is listed.
    pub(crate) fn job(&self, job: &str) -> Option<ferray::cluster::JobInfo> {
        self.state("jobs")
            .jobs
            .into_iter()
            .find(|j| j.job.to_string() == job)
    }

    pub(crate) fn state(&self, what: &str) -> ferray::cluster::ClusterView {
        block_on(async {
            let token = Token::new(&self.token).expect("token");
            let mut c = Client::connect(&self.address, token).await?;
            c.state(what).await
        })
        .expect("cluster state")
    }

    /// The node a task ran on (0: none yet).
    pub(crate) fn node_of(&self, task: u64) -> u64 {
        self.state("tasks")
            .tasks
            .iter()
            .find(|t| t.id.0 == task)
            .and_then(|t| t.node)
            .map_or(0, |n| n.0)
    }

    pub(crate) async fn runtime(&self) -> Runtime {
        Runtime::builder()
            .output(ferray::OutputMode::Collect)
            .token(&self.token)
            .cache_dir(Some(cache_dir()))
            .connect(&self.address)
            .await
            .expect("connect to the cluster")
    }

    pub(crate) fn cmd(&self) -> Command {
        let mut cmd = ferray();
        cmd.env("FERRAY_HOME", self.home.path())
            .env_remove("FERRAY_TOKEN");
        cmd
    }

    #[track_caller]
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("run ferray");
        assert!(
            out.status.success(),
            "ferray {args:?} failed: {}{}\nhead log:\n{}",
            stdout(&out),
            stderr(&out),
            self.log("head.log")
        );
        stdout(&out)
    }
}

impl Drop for Cluster {
    /// Stops the nodes as `ferray stop` does (SIGTERM, so each removes its spill
    /// directory), then kills what is still running after a few seconds.
    fn drop(&mut self) {
        let mut all: Vec<&mut Child> = self.workers.iter_mut().map(|(c, _, _)| c).collect();
        all.push(&mut self.head);
        for c in &all {
            let _ = signal(c, Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for c in &mut all {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Send `sig` to a node process.
pub(crate) fn signal(child: &Child, sig: Signal) -> Result<(), String> {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).ok_or("no pid")?;
    rustix::process::kill_process(pid, sig).map_err(|e| e.to_string())
}
