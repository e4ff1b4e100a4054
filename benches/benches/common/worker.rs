//! A worker node in the benchmark's own process, as `ferray start` runs
//! one: its runtime on threads of its own, joined to the head at `address`.

use std::net::SocketAddr;
use std::time::Duration;

use ferray::cluster::{Token, WorkerConfig, run_worker};
use ferray::{OutputMode, Runtime};

/// Start a worker of `cpus` CPUs named `name`; returns once it has joined.
pub fn start(address: &str, token: &Token, cpus: f64, name: String) {
    let (joined_tx, joined_rx) = std::sync::mpsc::channel();
    let cfg = WorkerConfig::new(
        address.to_string(),
        token.clone(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        name,
    );
    std::thread::spawn(move || {
        let rt = Runtime::builder()
            .num_cpus(cpus)
            .num_gpus(0.0)
            .output(OutputMode::Discard)
            .build_sync()
            .expect("a worker's runtime");
        let out = rt.block_on(run_worker(
            &rt,
            cfg,
            move |_| {
                let _ = joined_tx.send(());
            },
            std::future::pending(),
        ));
        eprintln!("a worker stopped: {out:?}");
    });
    joined_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the worker joins the head");
}
