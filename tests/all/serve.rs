//! `ferray serve run`: real processes, over HTTP. The examples' HTTP
//! handler and the probe (`tests/guests/http-probe`) behind the proxy:
//! routing, bodies both ways, the answers to a guest that traps, loops or
//! never answers, the sandbox, 503 on overload, 413 past the body limit,
//! autoscaling up under load and back to zero, and bad application files.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

use ferray_serve::DeploymentStatus;

use super::harness::wait_for;
use super::{ferray, fx, stderr};

/// The components an application file may name, beside it.
const COMPONENTS: &[(&str, &str)] = &[
    ("hello.wasm", fx::SERVE_HELLO),
    ("probe.wasm", fx::HTTP_PROBE),
    ("replica.wasm", fx::SERVE_PROBE),
    ("classifier.wasm", fx::SERVE_CLASSIFIER),
    ("squares.wasm", fx::SQUARES),
];

/// `app` written to `app.toml` in a new directory, beside the components
/// it may name.
pub(crate) fn app_dir(app: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (name, path) in COMPONENTS {
        std::fs::copy(path, dir.path().join(name)).expect("copy a component");
    }
    let file = dir.path().join("app.toml");
    std::fs::write(&file, app).expect("write the application file");
    (dir, file)
}

/// The proxy's URL that `ferray serve deploy` printed.
pub(crate) fn deployed_at(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("ferray serve: deployed; listening on "))
        .unwrap_or_else(|| panic!("no address in {out}"))
        .to_string()
}

/// The URL of a worker's serve proxy, once its log (`log`) says it listens.
pub(crate) fn node_proxy(log: &std::path::Path) -> String {
    wait_for("the worker's proxy", 60, || {
        std::fs::read_to_string(log).ok().and_then(|l| {
            l.lines()
                .find_map(|l| l.strip_prefix("ferray serve: this node's proxy listens on "))
                .map(str::to_string)
        })
    })
}

/// A client of a cluster's proxies: the cluster token on every request
/// (as `Authorization: Bearer`), and its CA when it speaks TLS.
pub(crate) fn cluster_client(c: &super::harness::Cluster) -> reqwest::blocking::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", c.token)
            .parse()
            .expect("a header value"),
    );
    let mut b = reqwest::blocking::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(60));
    if let Ok(ca) = std::fs::read(c.home.path().join("tls").join("ca.pem")) {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("a PEM CA"));
    }
    b.build().expect("an HTTP client")
}

/// A `ferray serve run` process and the address it listens on.
struct Serve {
    child: Child,
    base: String,
    http: reqwest::blocking::Client,
    _dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// Write `app` (the components are copied beside it) and run it on a free port.
    fn start(app: &str) -> Serve {
        let (dir, file) = app_dir(app);
        let mut child = ferray()
            .args(["serve", "run", "--num-cpus", "2", "--port", "0"])
            .arg(&file)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ferray serve");
        let out = child.stdout.take().expect("its stdout");
        // Its stdout is read on a thread of its own (to the end, so that it
        // never blocks on a full pipe); the address comes back from there.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("ferray serve: listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("ferray serve listening within 120 s");
        Serve {
            child,
            base,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("an HTTP client"),
            _dir: dir,
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        (r.status().as_u16(), r.text().unwrap_or_default())
    }

    fn post(&self, path: &str, body: impl Into<reqwest::blocking::Body>) -> (u16, String) {
        let r = self.post_full(path, body);
        (r.status().as_u16(), r.text().unwrap_or_default())
    }

    fn post_full(
        &self,
        path: &str,
        body: impl Into<reqwest::blocking::Body>,
    ) -> reqwest::blocking::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .body(body)
            .send()
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    fn status(&self, name: &str) -> DeploymentStatus {
        let (code, body) = self.get("/-/status");
        assert_eq!(code, 200, "{body}");
        let all: Vec<DeploymentStatus> = serde_json::from_str(&body).expect("status JSON");
        all.into_iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("no deployment {name} in {body}"))
    }
}

const TWO: &str = r#"
[http]
request_timeout_s = 3
max_request_body = "1MiB"

[[deployment]]
name = "hello"
component = "hello.wasm"
route_prefix = "/"

[[deployment]]
name = "probe"
component = "probe.wasm"
num_replicas = 2
max_ongoing_requests = 4
memory = "64MiB"
"#;

#[test]
fn serve_run_routes_requests_to_http_components_and_survives_bad_ones() {
    let s = Serve::start(TWO);
    // The example, at the root prefix: a query, a body, a path of its own.
    assert_eq!(
        s.get("/?name=Ada"),
        (200, "Hello, Ada! (path /?name=Ada)\n".into())
    );
    assert_eq!(
        s.post("/greet", "Grace"),
        (200, "Hello, Grace! (path /greet)\n".into())
    );
    // The longest prefix wins; the path reaches the guest whole.
    assert_eq!(
        s.post("/probe/echo", "abc"),
        (200, "Method::Post\nabc".into())
    );
    // A body streamed both ways: 512 KiB in, 3 MiB out.
    let big = vec![b'y'; 512 << 10];
    let (code, echoed) = s.post("/probe/echo", big.clone());
    assert_eq!(code, 200);
    assert_eq!(echoed.len(), "Method::Post\n".len() + big.len());
    let (code, body) = s.get("/probe/big?kib=3072");
    assert_eq!((code, body.len()), (200, 3072 << 10));
    // A fresh instance per request: its memory starts anew every time.
    assert_eq!(s.get("/probe/count"), (200, "1".into()));
    assert_eq!(s.get("/probe/count"), (200, "1".into()));

    // Bad guests get a clean error, and the next request is answered.
    let (code, body) = s.get("/probe/trap");
    assert_eq!(code, 500, "{body}");
    assert!(
        body.starts_with("deployment \"probe\" failed: ") && body.contains("trap"),
        "{body}"
    );
    let (code, body) = s.get("/probe/noanswer");
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("without setting a response"), "{body}");
    let (code, body) = s.get("/probe/spin");
    assert_eq!(code, 408, "{body}");
    assert!(body.contains("request_timeout_s"), "{body}");
    assert_eq!(s.get("/probe/sleep?ms=10"), (200, "slept 10".into()));

    // The sandbox: no request leaves, no variable, no file.
    let (code, body) = s.get("/probe/outgoing");
    assert_eq!(code, 200);
    assert_eq!(body, "refused: ErrorCode::HttpRequestDenied");
    assert_eq!(s.get("/probe/sandbox"), (200, "vars=0 files=None".into()));

    // Past the body limit: 413 from the proxy when the length is declared,
    // and a body error in the guest when it is streamed without one.
    let (code, body) = s.post("/probe/echo", vec![b'z'; 2 << 20]);
    assert_eq!(code, 413, "{body}");
    let reader = ChunkReader(vec![b'z'; 2 << 20], 0);
    let sent = s
        .http
        .post(format!("{}/probe/echo", s.base))
        .body(reqwest::blocking::Body::new(reader))
        .send();
    match sent {
        Ok(r) => assert_eq!(r.status().as_u16(), 413),
        // The rest of the body is not read: the client may see the
        // connection reset as it still sends, never another answer.
        Err(e) => assert!(!e.is_status() && !e.is_timeout(), "{e}"),
    }

    // The proxy's own routes.
    let (code, routes) = s.get("/-/routes");
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&routes).expect("JSON"),
        serde_json::json!({"/": "hello", "/probe": "probe"})
    );
    // A request whose client went away (the oversized body) ends on the
    // replica a moment after its client saw the reset.
    let probe = wait_for("the probe's requests to end", 30, || {
        let p = s.status("probe");
        (p.ongoing_requests == 0).then_some(p)
    });
    assert_eq!(probe.replicas, 2);
    assert!(probe.failed >= 3, "{probe:?}");
    assert_eq!(s.get("/-/healthz"), (200, "success".into()));
}

/// A body of unknown length (sent chunked).
struct ChunkReader(Vec<u8>, usize);

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.0.len() - self.1).min(16 << 10);
        buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
        self.1 += n;
        Ok(n)
    }
}

#[test]
fn a_full_deployment_answers_503_with_retry_after() {
    let s = Serve::start(
        r#"
[[deployment]]
name = "probe"
component = "probe.wasm"
num_replicas = 1
max_ongoing_requests = 2
"#,
    );
    let base = s.base.clone();
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let url = format!("{base}/probe/sleep?ms=3000");
            std::thread::spawn(move || {
                reqwest::blocking::Client::new()
                    .get(url)
                    .send()
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    wait_for("two ongoing requests", 30, || {
        (s.status("probe").ongoing_requests == 2).then_some(())
    });
    let r = s
        .http
        .get(format!("{base}/probe/echo"))
        .send()
        .expect("GET");
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(
        r.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    assert!(
        r.text()
            .unwrap_or_default()
            .contains("max_ongoing_requests")
    );
    for t in slow {
        assert_eq!(t.join().expect("a request thread").expect("answered"), 200);
    }
    // Room again.
    assert_eq!(s.get("/probe/sleep?ms=1"), (200, "slept 1".into()));
    assert_eq!(s.status("probe").rejected, 1);
}

#[test]
fn an_autoscaling_deployment_scales_up_under_load_and_back_to_zero() {
    let s = Serve::start(
        r#"
[[deployment]]
name = "probe"
component = "probe.wasm"
max_ongoing_requests = 2
[deployment.autoscaling_config]
min_replicas = 0
max_replicas = 3
target_ongoing_requests = 1
upscale_delay_s = 0
downscale_delay_s = 1
look_back_period_s = 0.5
metrics_interval_s = 0.1
"#,
    );
    assert_eq!(s.status("probe").replicas, 0, "it starts at min_replicas");
    // A cold start: the first request starts a replica.
    assert_eq!(s.get("/probe/sleep?ms=1"), (200, "slept 1".into()));
    // Load: six requests of 4 s; one replica takes two at most, so the
    // rest are refused until the autoscaler adds replicas. The clients
    // retry on 503, as its Retry-After asks.
    let base = s.base.clone();
    let load: Vec<_> = (0..6)
        .map(|_| {
            let url = format!("{base}/probe/sleep?ms=4000");
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                for _ in 0..200 {
                    let code = client.get(&url).send().map(|r| r.status().as_u16());
                    match code {
                        Ok(503) => std::thread::sleep(Duration::from_millis(50)),
                        other => return other.ok(),
                    }
                }
                None
            })
        })
        .collect();
    wait_for("three replicas", 30, || {
        (s.status("probe").replicas == 3).then_some(())
    });
    for t in load {
        assert_eq!(t.join().expect("a load thread"), Some(200));
    }
    // Idle: back to zero after the downscale delay.
    wait_for("zero replicas", 30, || {
        (s.status("probe").replicas == 0).then_some(())
    });
    let st = s.status("probe");
    assert!(
        st.replicas_started >= 3 && st.replicas_stopped >= 3,
        "{st:?}"
    );
    // And a cold start again.
    assert_eq!(s.get("/probe/count"), (200, "1".into()));
}

/// `ferray serve run` on `app`, expected to fail: its stderr, and the app file's path.
fn serve_err(app: &str) -> (String, String) {
    let (_dir, file) = app_dir(app);
    let out = ferray()
        .args(["serve", "run", "--port", "0"])
        .arg(&file)
        .output()
        .expect("run ferray serve");
    assert!(!out.status.success(), "{app}: it ran");
    (stderr(&out), file.display().to_string())
}

#[test]
fn a_bad_application_file_gets_one_line_naming_the_field() {
    for (app, field) in [
        (
            "[[deployment]]\nname = \"a\"\ncomponent = \"a.wasm\"\nmax_ongoing_requests = \"x\"\n",
            "deployment[0].max_ongoing_requests",
        ),
        (
            "[[deployment]]\nname = \"a\"\ncomponent = \"a.wasm\"\n\
             [deployment.autoscaling_config]\nmin_replicas = 2\nmax_replicas = 1\n",
            "deployment[0].autoscaling_config.max_replicas",
        ),
        (
            "[[deployment]]\nname = \"a\"\ncomponent = \"a.wasm\"\nreplicas = 2\n",
            "deployment[0].replicas",
        ),
    ] {
        let (err, file) = serve_err(app);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("{file}: {field}: ")),
            "{field}: {err}"
        );
    }
    // A component that is not an HTTP handler, and one that is missing.
    let (err, _) = serve_err("[[deployment]]\nname = \"sq\"\ncomponent = \"squares.wasm\"\n");
    assert!(
        err.contains("deployment \"sq\"") && err.contains("wasi:http/incoming-handler"),
        "{err}"
    );
    let (err, _) =
        serve_err("[[deployment]]\nname = \"h\"\ncomponent = \"hello.wasm\"\nkind = \"replica\"\n");
    assert!(
        err.contains("deployment \"h\"") && err.contains("resource `replica`"),
        "{err}"
    );
    // A replica whose constructor fails stops the start, with why.
    let (err, _) = serve_err(
        "[[deployment]]\nname = \"r\"\ncomponent = \"replica.wasm\"\nkind = \"replica\"\n\
         [deployment.user_config]\ncrash_on_start = true\n",
    );
    assert!(
        err.contains("could not start") && err.contains("constructor"),
        "{err}"
    );
    let (err, _) = serve_err("[[deployment]]\nname = \"gone\"\ncomponent = \"gone.wasm\"\n");
    assert!(
        err.contains("deployment \"gone\"") && err.contains("gone.wasm"),
        "{err}"
    );
}

#[test]
fn stateful_replicas_keep_their_state_batch_and_restart_after_a_crash() {
    let s = Serve::start(
        r#"
[[deployment]]
name = "replica"
component = "replica.wasm"
kind = "replica"
max_ongoing_requests = 16
num_cpus = 0.5
[deployment.user_config]
greeting = "hi"

[[deployment]]
name = "batched"
component = "replica.wasm"
kind = "replica"
max_ongoing_requests = 8
max_batch_size = 4
batch_wait_timeout_s = 0.5
num_cpus = 0.5

[[deployment]]
name = "iris"
component = "classifier.wasm"
kind = "replica"
max_batch_size = 8
num_cpus = 0.5

[[deployment]]
name = "hello"
component = "hello.wasm"
route_prefix = "/hello"
"#,
    );
    // State lives in the replica across requests; its config came to its constructor.
    for n in 1..=3 {
        assert_eq!(s.get("/replica/count"), (200, n.to_string()));
    }
    assert_eq!(
        s.get("/replica/config"),
        (200, r#"{"greeting":"hi"}"#.into())
    );
    let r = s.post_full("/replica/echo", "abc");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers().get("x-probe").map(|v| v.as_bytes()),
        Some(&b"yes"[..])
    );
    assert_eq!(r.text().unwrap_or_default(), "POST\nabc");
    // What a replica answers is checked before it is sent.
    let (code, body) = s.get("/replica/status?code=1000");
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("status 1000"), "{body}");
    let (code, body) = s.get("/replica/badheader");
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("header name"), "{body}");
    // A crash fails its request with a message; the replica is restarted
    // (its constructor again, its state anew) and answers the next one.
    let (code, body) = s.get("/replica/crash");
    assert_eq!(code, 500, "{body}");
    assert!(
        body.starts_with("deployment \"replica\" failed: "),
        "{body}"
    );
    assert_eq!(s.get("/replica/count"), (200, "1".into()));

    // Concurrent requests to a batching replica arrive in batches.
    let base = s.base.clone();
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let url = format!("{base}/batched/echo");
            std::thread::spawn(move || {
                let r = reqwest::blocking::Client::new()
                    .post(url)
                    .body(format!("r{i}"))
                    .send()
                    .expect("POST");
                assert_eq!(r.status().as_u16(), 200);
                let size: usize = r
                    .headers()
                    .get("x-batch-size")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .expect("x-batch-size");
                assert_eq!(r.text().unwrap_or_default(), format!("POST\nr{i}"));
                size
            })
        })
        .collect();
    let sizes: Vec<usize> = threads
        .into_iter()
        .map(|t| t.join().expect("a request thread"))
        .collect();
    assert!(sizes.iter().any(|&n| n > 1), "no batch: {sizes:?}");
    assert!(sizes.iter().all(|&n| (1..=4).contains(&n)), "{sizes:?}");

    // The example: a model built at construction, answering batches.
    let (code, body) = s.post(
        "/iris",
        "5.1,3.5,1.4,0.2\n6.9,3.1,5.4,2.1\n5.9,3.0,4.2,1.5\n",
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body, "setosa\nvirginica\nversicolor\n");
    let (code, body) = s.post("/iris", "5.1,3.5\n");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("expected 4 numbers"), "{body}");

    // A replica calls another deployment through a handle (the SDK's
    // `serve::handle`), as Ray's DeploymentHandle.
    assert_eq!(
        s.post("/replica/call?to=iris&path=/iris", "6.9,3.1,5.4,2.1\n"),
        (200, "iris said 200: virginica\n".into())
    );
    assert_eq!(
        s.post("/replica/call?to=hello&path=/greet", "Ada"),
        (200, "hello said 200: Hello, Ada! (path /greet)\n".into())
    );
    // What a replica answers a handle is checked as the proxy checks it.
    let (code, body) = s.get("/replica/call?to=batched&path=/batched/status?code=99");
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("status 99"), "{body}");
    let (code, body) = s.get("/replica/call?to=nope");
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("no deployment \"nope\""), "{body}");
}

#[test]
fn a_guest_whose_client_gave_up_is_stopped() {
    // No request timeout: only the client's going away stops the loop.
    let s = Serve::start(
        r#"
[[deployment]]
name = "probe"
component = "probe.wasm"
max_ongoing_requests = 1
"#,
    );
    let impatient = reqwest::blocking::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .expect("an HTTP client");
    let r = impatient.get(format!("{}/probe/spin", s.base)).send();
    assert!(r.is_err(), "an endless loop answered: {r:?}");
    // Its instance and its place on the replica are given back, and the
    // loop no longer runs: the process stops using a CPU.
    wait_for("the looping request to end", 30, || {
        (s.status("probe").ongoing_requests == 0).then_some(())
    });
    wait_for("the loop to stop", 30, || {
        let before = cpu_ticks(s.child.id());
        std::thread::sleep(Duration::from_secs(1));
        // Clock ticks are 1/100 s: a guest still looping uses about 100.
        (cpu_ticks(s.child.id()) - before < 30).then_some(())
    });
    assert_eq!(s.get("/probe/sleep?ms=1"), (200, "slept 1".into()));
}

/// CPU time a process has used, in clock ticks (user and system).
fn cpu_ticks(pid: u32) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // The fields after the command's closing parenthesis; utime and stime
    // are the 14th and 15th of the whole line.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<i64>().expect("utime") + fields[12].parse::<i64>().expect("stime")
}

/// An application for `ferray serve deploy`: a stateless handler at the
/// root, the probe, a stateful replica whose config says `version`, and the
/// classifier.
fn cluster_app(version: u32) -> String {
    format!(
        r#"
[http]
port = 0
request_timeout_s = 30

[[deployment]]
name = "hello"
component = "hello.wasm"
route_prefix = "/"
num_replicas = 2
num_cpus = 0.5

[[deployment]]
name = "probe"
component = "probe.wasm"
num_cpus = 0.5

[[deployment]]
name = "replica"
component = "replica.wasm"
kind = "replica"
num_replicas = 2
max_ongoing_requests = 16
num_cpus = 0.5
[deployment.user_config]
version = {version}

[[deployment]]
name = "iris"
component = "classifier.wasm"
kind = "replica"
max_batch_size = 8
num_cpus = 0.5
"#
    )
}

/// The replicas' actors alive on the cluster.
fn live_replicas(c: &super::harness::Cluster) -> usize {
    c.state("actors")
        .actors
        .iter()
        .filter(|a| a.class.ends_with("replica") && a.state.eq_ignore_ascii_case("alive"))
        .count()
}

#[test]
fn serve_deploy_runs_an_application_on_a_cluster_and_updates_it_without_failing_a_request() {
    let c = super::harness::Cluster::start(2);
    let (_dir, app) = app_dir(&cluster_app(1));
    let app_s = app.to_str().expect("a UTF-8 path");
    let base = deployed_at(&c.ok(&["serve", "deploy", app_s]));
    let http = cluster_client(&c);
    // The proxy asks for the cluster token, as the cluster's other ports do
    // (not for a load balancer's health probe).
    let anyone = reqwest::blocking::Client::new();
    let r = anyone.get(format!("{base}/?name=x")).send().expect("GET");
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(
        r.headers().get("www-authenticate").map(|v| v.as_bytes()),
        Some(&b"Bearer"[..])
    );
    let r = anyone
        .get(format!("{base}/?name=x"))
        .bearer_auth("not-the-token")
        .send()
        .expect("GET");
    assert_eq!(r.status().as_u16(), 401);
    let r = anyone.get(format!("{base}/-/healthz")).send().expect("GET");
    assert_eq!(r.status().as_u16(), 200);
    // The token stops at the proxy: a guest never sees the cluster's secret.
    let r = http
        .get(format!("{base}/replica/headers"))
        .header("x-mine", "1")
        .send()
        .expect("GET");
    let names = r.text().unwrap_or_default();
    assert!(names.lines().any(|l| l == "x-mine"), "{names}");
    assert!(!names.contains("authorization"), "{names}");
    let get = |path: &str| -> (u16, String) {
        match http.get(format!("{base}{path}")).send() {
            Ok(r) => (r.status().as_u16(), r.text().unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    };

    // Stateless: each request a task on a worker, a fresh instance each time.
    assert_eq!(
        get("/?name=Ada"),
        (200, "Hello, Ada! (path /?name=Ada)\n".into())
    );
    assert_eq!(get("/probe/count"), (200, "1".into()));
    assert_eq!(get("/probe/count"), (200, "1".into()));
    let big = vec![b'y'; 512 << 10];
    let r = http
        .post(format!("{base}/probe/echo"))
        .body(big.clone())
        .send()
        .expect("POST");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.text().unwrap_or_default().len(),
        "Method::Post\n".len() + big.len()
    );
    let (code, body) = get("/probe/trap");
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("trap"), "{body}");
    let tasks = c.state("tasks").tasks;
    assert!(
        tasks
            .iter()
            .any(|t| t.function == ferray::HTTP_HANDLE && t.node.is_some()),
        "no HTTP task ran on a node: {tasks:?}"
    );
    // Stateful: the replicas are the cluster's actors, keeping their state.
    assert_eq!(get("/replica/config"), (200, r#"{"version":1}"#.into()));
    let r = http
        .post(format!("{base}/iris"))
        .body("5.1,3.5,1.4,0.2\n6.9,3.1,5.4,2.1\n")
        .send()
        .expect("POST");
    assert_eq!(r.text().unwrap_or_default(), "setosa\nvirginica\n");
    wait_for("three live replicas", 60, || {
        (live_replicas(&c) == 3).then_some(())
    });
    // A replica on a worker calls a deployment through a handle: the head
    // hands the call to the application.
    let r = http
        .post(format!("{base}/replica/call?to=hello&path=/greet"))
        .body("Grace")
        .send()
        .expect("POST");
    assert_eq!(
        r.text().unwrap_or_default(),
        "hello said 200: Hello, Grace! (path /greet)\n"
    );
    let r = http
        .get(format!("{base}/replica/call?to=nope"))
        .send()
        .expect("GET");
    assert_eq!(r.status().as_u16(), 502);
    let body = r.text().unwrap_or_default();
    assert!(
        body.contains("not found") && body.contains("no deployment \"nope\""),
        "{body}"
    );

    let status: ferray_serve::ServeStatus =
        serde_json::from_str(&c.ok(&["serve", "status", "--json"])).expect("status JSON");
    assert_eq!(status.proxy, base);
    let names: Vec<_> = status.deployments.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names.len(), 4, "{names:?}");
    let replica = status.deployments.iter().find(|d| d.name == "replica");
    assert_eq!(
        replica.map(|d| (d.replicas, d.kind.as_str())),
        Some((2, "replica"))
    );

    // A rolling update under load: the new version's replicas start, new
    // requests go to them, the old ones drain. No request fails.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = ["/replica/config", "/?name=x"]
        .into_iter()
        .map(|path| {
            let (stop, url, http) = (stop.clone(), format!("{base}{path}"), http.clone());
            std::thread::spawn(move || {
                let (mut bad, mut seen) = (Vec::new(), Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match http.get(&url).send() {
                        Ok(r) if r.status().as_u16() == 200 => {
                            let body = r.text().unwrap_or_default();
                            if seen.last() != Some(&body) {
                                seen.push(body);
                            }
                        }
                        Ok(r) => {
                            bad.push(format!("{}: {}", r.status(), r.text().unwrap_or_default()))
                        }
                        Err(e) => bad.push(e.to_string()),
                    }
                }
                (bad, seen)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(&app, cluster_app(2)).expect("write the new version");
    c.ok(&["serve", "deploy", app_s]);
    wait_for("the new version", 60, || {
        (get("/replica/config").1 == r#"{"version":2}"#).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in load {
        let (bad, seen) = t.join().expect("a load thread");
        assert!(bad.is_empty(), "requests failed during the update: {bad:?}");
        assert!(!seen.is_empty());
    }
    // The old version's actors are gone; the unchanged deployments kept theirs.
    wait_for("the old replicas to stop", 60, || {
        (live_replicas(&c) == 3).then_some(())
    });
    let status: ferray_serve::ServeStatus =
        serde_json::from_str(&c.ok(&["serve", "status", "--json"])).expect("status JSON");
    let started = |name: &str| {
        status
            .deployments
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.replicas_started)
    };
    assert_eq!(started("hello"), Some(2), "{status:?}");
    assert_eq!(started("replica"), Some(2), "{status:?}");

    // A bad version is refused whole; the running one goes on.
    for (bad, says) in [
        (
            "[http]\nport = 0\nrequest_timeout_s = 30\n\n\
             [[deployment]]\nname = \"sq\"\ncomponent = \"squares.wasm\"\n",
            "incoming-handler",
        ),
        (
            "[http]\nport = 0\n\n[[deployment]]\nname = \"hello\"\ncomponent = \"hello.wasm\"\n",
            "[http] options differ",
        ),
        (
            &*cluster_app(9).replace("version = 9", "crash_on_start = true"),
            "could not start",
        ),
    ] {
        std::fs::write(&app, bad).expect("write a bad version");
        let out = c
            .cmd()
            .args(["serve", "deploy", app_s])
            .output()
            .expect("run ferray");
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(err.contains(says), "{err}");
        assert_eq!(get("/replica/config"), (200, r#"{"version":2}"#.into()));
    }

    // A long-lived application does not fill the head: the task of each
    // answered request (stateless) and each call of a replica (stateful) is
    // forgotten, and its result freed on its node.
    wait_for("the head to forget the answered requests", 30, || {
        let v = c.state("tasks");
        let ended: u64 = ["FINISHED", "FAILED"]
            .iter()
            .filter_map(|s| v.task_states.get(*s))
            .sum();
        (ended == 0).then_some(())
    });
    let objects = c.state("objects").objects;
    assert!(
        objects.len() <= 4,
        "{} objects kept: {objects:?}",
        objects.len()
    );

    // Deleted: the proxy stops, the replicas go (the file may be named, as
    // with deploy).
    let out = c.ok(&["serve", "delete", app_s]);
    assert!(out.contains("deleted"), "{out}");
    let fresh = reqwest::blocking::Client::new()
        .get(format!("{base}/"))
        .send();
    assert!(fresh.is_err(), "the proxy still answers: {fresh:?}");
    wait_for("the replicas to stop", 60, || {
        (live_replicas(&c) == 0).then_some(())
    });
    let out = c.ok(&["serve", "status"]);
    assert!(out.contains("no application is running"), "{out}");

    // Deployed again after a delete: a new start.
    std::fs::write(&app, cluster_app(3)).expect("write the application file");
    let base = deployed_at(&c.ok(&["serve", "deploy", app_s]));
    let r = http
        .get(format!("{base}/replica/config"))
        .send()
        .expect("GET");
    assert_eq!(r.text().unwrap_or_default(), r#"{"version":3}"#);
}

#[test]
fn a_proxy_on_every_node_takes_requests_for_the_clusters_application() {
    let c = super::harness::Cluster::start(1);
    // (Where the file says nothing, the command line's flag; the file's
    // `proxy_location = "EveryNode"` is in the TLS test.)
    let (_dir, app) = app_dir(
        r#"
[http]
port = 0
max_request_body = "1KiB"

[[deployment]]
name = "hello"
component = "hello.wasm"
route_prefix = "/"

[[deployment]]
name = "replica"
component = "replica.wasm"
kind = "replica"
"#,
    );
    let app_s = app.to_str().expect("a UTF-8 path");
    let out = c
        .cmd()
        .args(["serve", "deploy", "--proxy-location", "everywhere", app_s])
        .output()
        .expect("run ferray");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("expected head-only or every-node"),
        "{}",
        stderr(&out)
    );
    c.ok(&["serve", "deploy", "--proxy-location", "every-node", app_s]);
    // The worker's proxy, on its own port of this machine.
    let node = node_proxy(&c.workers[0].2);
    let http = cluster_client(&c);
    let get = |path: &str| {
        let r = http.get(format!("{node}{path}")).send().expect("GET");
        (r.status().as_u16(), r.text().unwrap_or_default())
    };
    assert_eq!(
        get("/?name=Ada"),
        (200, "Hello, Ada! (path /?name=Ada)\n".into())
    );
    assert_eq!(get("/replica/count"), (200, "1".into()));
    assert_eq!(get("/replica/count"), (200, "2".into()));
    assert_eq!(get("/-/healthz"), (200, "success".into()));
    // The node's proxy asks for the token too.
    let r = reqwest::blocking::Client::new()
        .get(format!("{node}/?name=Ada"))
        .send()
        .expect("GET");
    assert_eq!(r.status().as_u16(), 401);
    let r = http
        .post(format!("{node}/replica/echo"))
        .body(vec![b'x'; 4096])
        .send()
        .expect("POST");
    assert_eq!(r.status().as_u16(), 413);
    // The head's application counted them: one place routes every request.
    let status: ferray_serve::ServeStatus =
        serde_json::from_str(&c.ok(&["serve", "status", "--json"])).expect("status JSON");
    assert!(status.every_node, "{status:?}");
    let replica = status.deployments.iter().find(|d| d.name == "replica");
    assert_eq!(replica.map(|d| d.requests), Some(2), "{status:?}");
    // Deleted: the node's proxy stops too.
    c.ok(&["serve", "delete"]);
    wait_for("the worker's proxy to stop", 30, || {
        reqwest::blocking::Client::new()
            .get(format!("{node}/-/healthz"))
            .send()
            .is_err()
            .then_some(())
    });
}
