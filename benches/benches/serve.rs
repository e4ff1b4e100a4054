//! ferray serve under load: requests per second and latency of
//! `guest-examples/serve-hello` through the proxy, from a load generator on
//! loopback (HTTP/1.1 keep-alive connections, written here: no tool to
//! install). Not criterion: a plain `main`.
//!
//! ```sh
//! cargo bench -p ferray-benches --bench serve
//! # the same load against another server (Ray Serve, `wasmtime serve`):
//! FERRAY_SERVE_BENCH_URL=http://127.0.0.1:8000/hello cargo bench -p ferray-benches --bench serve
//! ```
//!
//! (A cluster's application, `ferray serve deploy`, takes the load without
//! the cluster token when its file says `http.public = true`.)
//!
//! It prints, per server: the peak (closed loop, `CONNECTIONS` connections
//! each sending its next request when the last is answered) in requests per
//! second with its p50 and p99, then the latency at half of that peak (open
//! loop: requests sent on a fixed schedule, latency measured from when each
//! was due, so a stall is not hidden).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECTIONS: usize = 32;
const SECONDS: f64 = 10.0;

/// One keep-alive connection sending `GET path`.
struct Conn {
    stream: TcpStream,
    request: Vec<u8>,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr, path: &str) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            request: format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n\r\n").into_bytes(),
            buf: Vec::with_capacity(4096),
        })
    }

    /// Send the request and read the whole response (framed by
    /// `content-length` or chunked); its status.
    async fn get(&mut self) -> std::io::Result<u16> {
        self.stream.write_all(&self.request).await?;
        // Bytes past the last response (none: one request at a time).
        self.buf.clear();
        let end = loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                break end;
            }
            self.read().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_ascii_lowercase())
            })
        };
        let mut at = end + 4;
        if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let line_end = loop {
                    if let Some(i) = find(&self.buf[at..], b"\r\n") {
                        break at + i;
                    }
                    self.read().await?;
                };
                let size_text = String::from_utf8_lossy(&self.buf[at..line_end]).into_owned();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| {
                            std::io::Error::other(format!("bad chunk size {size_text:?}"))
                        })?;
                at = line_end + 2;
                if size == 0 {
                    // The trailers' end.
                    while find(&self.buf[at..], b"\r\n").is_none() {
                        self.read().await?;
                    }
                    return Ok(status);
                }
                while self.buf.len() < at + size + 2 {
                    self.read().await?;
                }
                at += size + 2;
            }
        }
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while self.buf.len() < at + length {
            self.read().await?;
        }
        Ok(status)
    }

    async fn read(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

struct Run {
    ok: u64,
    errors: u64,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Run {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile(&mut self, p: f64) -> f64 {
        self.latencies.sort_unstable();
        let Some(last) = self.latencies.len().checked_sub(1) else {
            return f64::NAN;
        };
        let i = ((last as f64) * p).round() as usize;
        self.latencies[i].as_secs_f64() * 1e3
    }
}

/// `connections` connections for `secs`; with `rate`, each sends on a fixed
/// schedule (rate / connections per second), else as fast as answered.
async fn load(
    addr: SocketAddr,
    path: &str,
    connections: usize,
    secs: f64,
    rate: Option<f64>,
) -> Run {
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            let path = path.to_string();
            tokio::spawn(async move {
                let (mut ok, mut errors, mut latencies) = (0u64, 0u64, Vec::new());
                let Ok(mut conn) = Conn::open(addr, &path).await else {
                    return (0, 1, latencies);
                };
                let gap = rate.map(|r| Duration::from_secs_f64(connections as f64 / r));
                // Spread the connections' schedules over one gap.
                let mut due =
                    start + gap.map_or(Duration::ZERO, |g| g * i as u32 / connections as u32);
                while Instant::now() < end {
                    if gap.is_some() {
                        tokio::time::sleep_until(due.into()).await;
                    } else {
                        due = Instant::now();
                    }
                    match conn.get().await {
                        Ok(200) => {
                            ok += 1;
                            latencies.push(due.elapsed());
                        }
                        Ok(status) => {
                            errors += 1;
                            if errors <= 3 {
                                eprintln!("status {status}");
                            }
                        }
                        Err(e) => {
                            errors += 1;
                            if errors <= 3 {
                                eprintln!("connection: {e}");
                            }
                            match Conn::open(addr, &path).await {
                                Ok(c) => conn = c,
                                Err(_) => break,
                            }
                        }
                    }
                    if let Some(g) = gap {
                        due += g;
                    }
                }
                (ok, errors, latencies)
            })
        })
        .collect();
    let mut run = Run {
        ok: 0,
        errors: 0,
        latencies: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        if let Ok((ok, errors, lat)) = t.await {
            run.ok += ok;
            run.errors += errors;
            run.latencies.extend(lat);
        }
    }
    run.elapsed = start.elapsed();
    run
}

async fn measure(name: &str, url: &str) {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let addr: SocketAddr = tokio::net::lookup_host(host)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("cannot resolve {host}"));
    // Warm up (compiled code, connections, a first instance).
    let _ = load(addr, &path, CONNECTIONS, 1.0, None).await;
    let mut peak = load(addr, &path, CONNECTIONS, SECONDS, None).await;
    let rate = peak.rate();
    println!("{name}_requests_per_second {rate:.0} per_second");
    println!("{name}_peak_p50 {:.3} ms", peak.percentile(0.50));
    println!("{name}_peak_p99 {:.3} ms", peak.percentile(0.99));
    println!("{name}_peak_errors {} requests", peak.errors);
    let mut half = load(addr, &path, CONNECTIONS, SECONDS, Some(rate / 2.0)).await;
    println!("{name}_half_load {:.0} per_second", half.rate());
    println!("{name}_half_load_p50 {:.3} ms", half.percentile(0.50));
    println!("{name}_half_load_p99 {:.3} ms", half.percentile(0.99));
}

fn main() {
    let exec = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    exec.block_on(async {
        if let Ok(url) = std::env::var("FERRAY_SERVE_BENCH_URL") {
            measure("external", &url).await;
            return;
        }
        // ferray serve in this process: one replica per CPU.
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let rt = ferray::Runtime::builder()
            .build()
            .await
            .expect("an embedded runtime");
        let dir = std::env::temp_dir().join(format!("ferray-serve-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        std::fs::copy(ferray_test_fixtures::SERVE_HELLO, dir.join("hello.wasm")).expect("copy");
        let text = format!(
            "[http]\nport = 0\n[[deployment]]\nname = \"hello\"\ncomponent = \"hello.wasm\"\n\
             num_replicas = {cpus}\nmax_ongoing_requests = 64\nnum_cpus = 1\n"
        );
        let app = ferray_serve::App::parse("bench.toml", &text, &dir).expect("the application");
        let server = ferray_serve::start(&rt, app).await.expect("ferray serve");
        let url = format!("{}/hello", server.url());
        println!("# ferray serve, {cpus} replicas, {CONNECTIONS} connections, {SECONDS} s per run");
        measure("ferray_serve_hello", &url).await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}
