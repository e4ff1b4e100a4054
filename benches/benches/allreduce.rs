//! All-reduce of a 100 MB gradient (25 M f32) across 2 and 4 workers on
//! loopback (issue 16), next to the same ring all-reduce over raw TCP in
//! the same run.
//!
//! ferray: one process holds a head and one worker node per member, each
//! node of 1 CPU (gRPC on 127.0.0.1, ports picked by the system), and a
//! connected client that makes a collective group of `reducer` actors of
//! `guest-examples/bench` (1 CPU each, so one per node: every part of the
//! sum crosses loopback) and calls their `all-reduce(n, reps)` at once. The
//! time of one all-reduce is that of `REPS` in a row, after a first one
//! (the group's forming, connections) that is not counted; the guests'
//! lists cross the host boundary each time, as a training step's would.
//!
//! Raw TCP: the same ring (reduce-scatter, then all-gather, each of
//! `k - 1` steps sending one k-th of the list to the next member) between
//! `k` threads over `std::net::TcpStream`s on 127.0.0.1, with the same f32
//! additions, each member sending on a thread of its own while it receives.
//!
//! Both report seconds per all-reduce and the bus bandwidth
//! (`2 (k - 1) / k * bytes / seconds`, what NCCL's tests report), and the
//! ratio of ferray's to raw TCP's (the goal: at least 50%). A measurement,
//! not a test: `cargo bench -p ferray-benches --bench allreduce`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

#[path = "common/worker.rs"]
mod worker;

use ferray::cluster::Token;
use ferray::{OutputMode, Runtime};

/// Numbers in the list: 100 MB of f32.
const N: usize = 25_000_000;
/// The lists of the comparison with the object store: 25 MB.
const SMALL: usize = N / 4;
/// All-reduces timed in a row.
const REPS: u32 = 3;

fn main() {
    let mut rows = Vec::new();
    for k in [2usize, 4] {
        let raw = raw_tcp(k);
        let ferray = on_ferray(k);
        let one_node = on_one_node(k);
        rows.push((k, ferray, raw, one_node));
    }
    let bytes = (N * 4) as f64;
    println!(
        "{:<8} {:>10} {:>10} {:>12} {:>12} {:>7} {:>11} | 25 MB: {:>8} {:>10}",
        "workers",
        "ferray s",
        "raw TCP s",
        "ferray GB/s",
        "raw GB/s",
        "ratio",
        "one node s",
        "ring s",
        "objects s"
    );
    for (k, (f, objects, ring_small), r, (one, _, _)) in rows {
        let bus = 2.0 * (k - 1) as f64 / k as f64 * bytes / 1e9;
        println!(
            "{k:<8} {f:>10.3} {r:>10.3} {:>12.3} {:>12.3} {:>6.0}% {one:>11.3} |        {ring_small:>8.3} {objects:>10.3}",
            bus / f,
            bus / r,
            100.0 * r / f
        );
    }
}

/// Seconds per all-reduce of `k` reducer actors on one embedded runtime:
/// no network, what the guests' lists crossing the host boundary and the
/// host's sum cost.
fn on_one_node(k: usize) -> (f64, f64, f64) {
    let rt = Runtime::builder()
        .num_cpus(k as f64)
        .output(OutputMode::Discard)
        .build_sync()
        .expect("a runtime");
    reduce(&rt, k, "one-node")
}

/// `k` reducer actors of a group on `rt`: seconds per all-reduce, after a
/// first one that is not counted.
fn reduce(rt: &Runtime, k: usize, name: &str) -> (f64, f64, f64) {
    let comp = rt
        .block_on(rt.load_file(ferray_test_fixtures::BENCH))
        .expect("load the bench guest");
    let group = format!("{name}-{k}");
    let actors: Vec<_> = (0..k)
        .map(|rank| {
            let a = comp
                .actor("api.reducer", ())
                .num_cpus(1.0)
                .and_then(|b| b.group(&group, rank as u32, k as u32))
                .expect("options");
            rt.block_on(a.spawn()).expect("a reducer")
        })
        .collect();
    let all = |n: usize, reps: u32| {
        let refs: Vec<_> = actors
            .iter()
            .map(|a| a.call("all-reduce", (n as u32, reps)).expect("call"))
            .collect();
        for r in refs {
            let v: Result<f64, String> = rt.block_on(rt.get(&r)).expect("get");
            let want = (k * (k + 1) / 2) as f64 * (k as f64).powi(reps as i32 - 1);
            assert_eq!(v, Ok(want), "the sum of ranks + 1");
        }
    };
    all(N, 1);
    let t = Instant::now();
    all(N, REPS);
    let secs = t.elapsed().as_secs_f64() / f64::from(REPS);
    // Through the object store: each member's list is the result of a
    // call (an object on its node); each member is then given all of them
    // as arguments, which its node pulls from the others.
    let through_objects = |n: usize| {
        let parts: Vec<_> = actors
            .iter()
            .map(|a| a.call("part", (n as u32,)).expect("call"))
            .collect();
        let sum = format!("sum{k}");
        let refs: Vec<_> = actors
            .iter()
            .map(|a| {
                let args = parts
                    .iter()
                    .map(|p| ferray_core::Arg::Ref(p.clone()))
                    .collect();
                a.call_with(&sum, args).expect("call")
            })
            .collect();
        for r in refs {
            let v: f64 = rt.block_on(rt.get(&r)).expect("get");
            assert_eq!(v, (k * (k + 1) / 2) as f64, "the sum of ranks + 1");
        }
        rt.free(&parts);
    };
    // Every member takes in all k lists, more than a guest's store lets
    // one call copy in (256 MiB) at 100 MB each: both ways again at 25 MB.
    through_objects(SMALL);
    let t = Instant::now();
    for _ in 0..REPS {
        through_objects(SMALL);
    }
    let objects = t.elapsed().as_secs_f64() / f64::from(REPS);
    let t = Instant::now();
    all(SMALL, REPS);
    let ring_small = t.elapsed().as_secs_f64() / f64::from(REPS);
    for a in &actors {
        let _ = a.kill();
    }
    (secs, objects, ring_small)
}

/// Seconds per all-reduce of `k` reducer actors, one per node.
fn on_ferray(k: usize) -> (f64, f64, f64) {
    let token = Token::generate().expect("a token");
    let exec = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the head's async runtime");
    let grpc = exec
        .block_on(tokio::net::TcpListener::bind(SocketAddr::from((
            [127, 0, 0, 1],
            0,
        ))))
        .expect("bind gRPC");
    let address = ferray_head::advertised(grpc.local_addr().expect("gRPC address"));
    let head = ferray_head::Head::new(
        ferray_head::HeadConfig {
            token: token.clone(),
            node_timeout: Duration::from_secs(30),
            store: ferray_store::StoreConfig::default(),
            job_caps: ferray_core::JobCaps::default(),
            state_db: None,
        },
        address.clone(),
    )
    .expect("a head");
    exec.spawn(head.serve(grpc, std::future::pending()));
    for i in 0..k {
        worker::start(&address, &token, 1.0, format!("allreduce bench {i}"));
    }
    let client = exec
        .block_on(
            Runtime::builder()
                .token(token.as_str())
                .output(OutputMode::Discard)
                .connect(&address),
        )
        .expect("connect to the head");
    let secs = reduce(&client, k, "bench");
    drop(client);
    exec.shutdown_background();
    secs
}

/// Seconds per all-reduce of `k` threads in a ring over raw TCP.
fn raw_tcp(k: usize) -> f64 {
    let listeners: Vec<TcpListener> = (0..k)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr().expect("address"))
        .collect();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(k));
    let threads: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, listener)| {
            let next = addrs[(i + 1) % k];
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let out = TcpStream::connect(next).expect("connect");
                out.set_nodelay(true).expect("nodelay");
                let (inp, _) = listener.accept().expect("accept");
                let mut data = vec![(i + 1) as f32; N];
                let mut ring = Ring { i, k, out, inp };
                ring.all_reduce(&mut data);
                barrier.wait();
                let t = Instant::now();
                for _ in 0..REPS {
                    ring.all_reduce(&mut data);
                }
                let secs = t.elapsed().as_secs_f64() / f64::from(REPS);
                let want = (k * (k + 1) / 2) as f32 * (k as f32).powi(REPS as i32);
                assert_eq!(data[0], want);
                secs
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("a ring member"))
        .fold(0.0, f64::max)
}

struct Ring {
    i: usize,
    k: usize,
    out: TcpStream,
    inp: TcpStream,
}

impl Ring {
    fn all_reduce(&mut self, data: &mut [f32]) {
        let (i, k, len) = (self.i, self.k, data.len());
        let bounds = |c: usize| (c * len / k, (c + 1) * len / k);
        for step in 0..2 * (k - 1) {
            let s = step % (k - 1);
            let gather = step >= k - 1;
            let (send_c, recv_c) = if gather {
                ((i + 1 + k - s) % k, (i + k - s) % k)
            } else {
                ((i + k - s) % k, (i + 2 * k - s - 1) % k)
            };
            let (a, b) = bounds(send_c);
            let mut bytes = vec![0u8; (b - a) * 4];
            for (o, x) in bytes.as_chunks_mut::<4>().0.iter_mut().zip(&data[a..b]) {
                *o = x.to_le_bytes();
            }
            let (a, b) = bounds(recv_c);
            let mut got = vec![0u8; (b - a) * 4];
            let mut out = self.out.try_clone().expect("clone");
            std::thread::scope(|scope| {
                scope.spawn(move || out.write_all(&bytes).expect("send"));
                self.inp.read_exact(&mut got).expect("receive");
            });
            let words = got.as_chunks::<4>().0;
            if gather {
                for (d, w) in data[a..b].iter_mut().zip(words) {
                    *d = f32::from_le_bytes(*w);
                }
            } else {
                for (d, w) in data[a..b].iter_mut().zip(words) {
                    *d += f32::from_le_bytes(*w);
                }
            }
        }
    }
}
