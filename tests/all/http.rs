//! The head's HTTP edge on a cluster of real processes: the token on every
//! route, the jobs API (submit by content id and inline, poll, logs, list,
//! stop), `/metrics` parsed as Prometheus text and checked against the
//! cluster's state, and HTTPS on a TLS cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use ferray::cluster::{Client, Token};
use serde_json::{Value, json};

use super::fx;
use super::harness::{Cluster, block_on, wait_for};

/// The dashboard address the head wrote beside `head-address`.
pub(crate) fn dashboard(c: &Cluster) -> String {
    let f = c.home.path().join("dashboard-address");
    wait_for("the dashboard address", 30, || {
        std::fs::read_to_string(&f)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    })
}

struct Api {
    base: String,
    token: String,
    http: reqwest::blocking::Client,
}

impl Api {
    fn new(c: &Cluster) -> Api {
        Api::with(c, reqwest::blocking::Client::builder())
    }

    fn with(c: &Cluster, b: reqwest::blocking::ClientBuilder) -> Api {
        Api {
            base: dashboard(c),
            token: c.token.clone(),
            http: b
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
        }
    }

    fn get(&self, path: &str) -> reqwest::blocking::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .expect("GET")
    }

    #[track_caller]
    fn get_json(&self, path: &str) -> Value {
        let r = self.get(path);
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().expect("JSON")
    }

    #[track_caller]
    fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .expect("POST");
        let status = r.status().as_u16();
        (status, r.json().expect("JSON"))
    }

    /// Poll a job until it is no longer PENDING or RUNNING.
    fn wait_job(&self, id: &str) -> Value {
        wait_for(&format!("{id} to end"), 120, || {
            let j = self.get_json(&format!("/api/jobs/{id}"));
            (!matches!(j["status"].as_str(), Some("PENDING" | "RUNNING"))).then_some(j)
        })
    }
}

/// Upload a component to the head as `ferray submit` does; its content id.
fn upload(c: &Cluster, path: &str) -> String {
    let bytes = std::fs::read(path).expect("the component");
    block_on(async {
        let token = Token::new(&c.token).expect("token");
        let mut client = Client::connect(&c.address, token).await?;
        client.upload(bytes.into()).await
    })
    .expect("upload")
    .to_hex()
}

/// A strict reading of one line of Prometheus' text format: a comment, or
/// `name{label="value",...} number`.
fn check_line(line: &str) -> Result<(), String> {
    if line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
        return Ok(());
    }
    let (series, value) = line.rsplit_once(' ').ok_or("no value")?;
    if !matches!(value, "+Inf" | "-Inf" | "NaN") {
        value.parse::<f64>().map_err(|e| format!("value: {e}"))?;
    }
    let (name, labels) = match series.split_once('{') {
        Some((n, rest)) => (n, Some(rest.strip_suffix('}').ok_or("unclosed labels")?)),
        None => (series, None),
    };
    let name_ok = name.chars().enumerate().all(|(i, ch)| {
        ch.is_ascii_alphabetic() || ch == '_' || ch == ':' || (i > 0 && ch.is_ascii_digit())
    });
    if name.is_empty() || !name_ok {
        return Err(format!("bad name `{name}`"));
    }
    if let Some(labels) = labels {
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once("=\"").ok_or("a label without =\"")?;
            if k.is_empty() || !k.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
                return Err(format!("bad label `{k}`"));
            }
            let _ = v;
        }
    }
    Ok(())
}

/// `/metrics`, checked line by line and parsed.
fn scrape(api: &Api) -> prometheus_parse::Scrape {
    let r = api.get("/metrics");
    assert_eq!(r.status(), 200);
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = r.text().expect("text");
    for line in text.lines() {
        if let Err(e) = check_line(line) {
            panic!("not Prometheus text: {e}: `{line}`\n{text}");
        }
    }
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parse")
}

/// The values of a metric by one label.
fn by_label(s: &prometheus_parse::Scrape, metric: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for sample in s.samples.iter().filter(|x| x.metric == metric) {
        let v = match sample.value {
            prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{metric} is {other:?}"),
        };
        let key = sample.labels.get(label).unwrap_or("").to_string();
        *out.entry(key).or_default() += v;
    }
    out
}

fn single(s: &prometheus_parse::Scrape, metric: &str) -> f64 {
    by_label(s, metric, "-").values().sum()
}

fn histogram_count(s: &prometheus_parse::Scrape, metric: &str) -> u64 {
    s.samples
        .iter()
        .find(|x| x.metric == metric)
        .map(|x| match &x.value {
            prometheus_parse::Value::Histogram(h) => {
                h.iter().map(|b| b.count).fold(0.0, f64::max) as u64
            }
            other => panic!("{metric} is {other:?}"),
        })
        .unwrap_or_else(|| panic!("no {metric}"))
}

#[test]
fn every_route_needs_the_token() {
    let c = Cluster::start_with(1, &["--no-worker", "--dashboard-port", "0"]);
    let base = dashboard(&c);
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let printed = c.log("head.log");
    assert!(
        printed.contains(&format!("dashboard:    {base}")),
        "{printed}"
    );
    let http = reqwest::blocking::Client::new();
    let routes = [
        ("GET", "/metrics"),
        ("GET", "/api/jobs/"),
        ("POST", "/api/jobs/"),
        ("GET", "/api/jobs/job-1"),
        ("GET", "/api/jobs/job-1/logs"),
        ("POST", "/api/jobs/job-1/stop"),
        ("GET", "/nothing-here"),
    ];
    for (method, path) in routes {
        let url = format!("{base}{path}");
        let req = |auth: Option<&str>| {
            let mut r = match method {
                "GET" => http.get(&url),
                _ => http.post(&url).body("{}"),
            };
            if let Some(a) = auth {
                r = r.header("authorization", a);
            }
            r.send().expect("a request").status().as_u16()
        };
        assert_eq!(req(None), 401, "{method} {path} without a token");
        assert_eq!(req(Some("Bearer nope")), 401, "{method} {path}");
        assert_eq!(req(Some(&c.token)), 401, "{method} {path}: not a bearer");
        let with = req(Some(&format!("Bearer {}", c.token)));
        assert_ne!(with, 401, "{method} {path} with the token");
    }
    // With the token: the lists answer 200.
    let api = Api::new(&c);
    assert_eq!(api.get("/metrics").status(), 200);
    assert_eq!(api.get("/api/jobs/").status(), 200);
}

#[test]
fn jobs_over_http_run_log_list_stop_and_show_in_metrics() {
    let c = Cluster::start_with(2, &["--no-worker", "--dashboard-port", "0"]);
    let api = Api::new(&c);

    // By content id, uploaded first as `ferray submit` does.
    let id = upload(&c, fx::MISBEHAVE);
    let (status, r) = api.post_json(
        "/api/jobs/",
        &json!({"component": id, "function": "fan-out", "args": ["12", "20"]}),
    );
    assert_eq!(status, 200, "{r}");
    let job = r["submission_id"].as_str().expect("an id").to_string();
    assert_eq!(r["job_id"], r["submission_id"]);
    assert_eq!(r["component"], json!(id));
    let j = api.wait_job(&job);
    assert_eq!(j["status"], "SUCCEEDED", "{j}");
    let want: Vec<String> = (0..12i64).map(|i| (i * i).to_string()).collect();
    assert_eq!(j["result"], json!(format!("[{}]", want.join(", "))));
    assert_eq!(
        (j["tasks_done"].as_u64(), j["tasks_total"].as_u64()),
        (Some(12), Some(12))
    );
    assert!(j["end_time"].as_u64() >= j["start_time"].as_u64(), "{j}");

    // Inline, base64, with a log line.
    let bytes = std::fs::read(fx::MISBEHAVE).expect("the component");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let (status, r) = api.post_json(
        "/api/jobs/",
        &json!({"component_base64": b64, "function": "shout", "args": ["\"over http\""],
                "entrypoint_num_cpus": 1}),
    );
    assert_eq!(status, 200, "{r}");
    let shout = r["submission_id"].as_str().expect("an id").to_string();
    let j = api.wait_job(&shout);
    assert_eq!(j["status"], "SUCCEEDED", "{j}");
    assert_eq!(j["result"], "\"OVER HTTP\"");
    let logs = api.get_json(&format!("/api/jobs/{shout}/logs"));
    assert!(
        logs["logs"]
            .as_str()
            .is_some_and(|l| l.contains("over http")),
        "{logs}"
    );
    let next = logs["next"].as_u64().expect("a cursor");
    let more = api.get_json(&format!("/api/jobs/{shout}/logs?from={next}"));
    assert_eq!(more["logs"], "", "nothing past the cursor: {more}");

    // A wrong function or argument is a 400 with the reason, and no job.
    let (status, r) = api.post_json(
        "/api/jobs/",
        &json!({"component": id, "function": "no-such-export"}),
    );
    assert_eq!(status, 400, "{r}");
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.contains("no-such-export")),
        "{r}"
    );
    let (status, r) = api.post_json(
        "/api/jobs/",
        &json!({"component": id, "function": "fan-out", "args": ["\"x\"", "1"]}),
    );
    assert_eq!(status, 400, "{r}");
    assert_eq!(api.get("/api/jobs/job-999").status(), 404);

    // The list, a page at a time.
    let page = api.get_json("/api/jobs/?limit=1");
    assert_eq!(page["jobs"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(page["jobs"][0]["submission_id"], json!(job));
    let after = page["next"].as_str().expect("a next page").to_string();
    let rest = api.get_json(&format!("/api/jobs/?limit=1000&after={after}"));
    assert_eq!(rest["next"], Value::Null, "{rest}");
    let listed: Vec<&str> = rest["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["submission_id"].as_str())
        .collect();
    assert_eq!(listed, [shout.as_str()], "{rest}");
    assert_eq!(api.get("/api/jobs/?limit=many").status(), 400);

    // /metrics: Prometheus text whose task counts are the cluster's.
    let m = scrape(&api);
    let st = c.state("tasks");
    let mut want = BTreeMap::<String, f64>::new();
    for t in &st.tasks {
        *want.entry(t.state.to_string()).or_default() += 1.0;
    }
    assert_eq!(by_label(&m, "ferray_tasks", "State"), want);
    // 12 squares and two drivers finished.
    assert_eq!(want.get("FINISHED"), Some(&14.0), "{want:?}");
    assert_eq!(single(&m, "ferray_cluster_active_nodes"), 2.0);
    let jobs = by_label(&m, "ferray_jobs", "State");
    assert_eq!(jobs.get("SUCCEEDED"), Some(&2.0), "{jobs:?}");
    let cpus: f64 = m
        .samples
        .iter()
        .filter(|x| {
            x.metric == "ferray_resources"
                && x.labels.get("Name") == Some("CPU")
                && x.labels.get("State") == Some("AVAILABLE")
        })
        .map(|x| match x.value {
            prometheus_parse::Value::Gauge(v) => v,
            _ => 0.0,
        })
        .sum();
    assert_eq!(cpus, 4.0, "every CPU free again");
    // The 12 squares and the two drivers waited for a node, and every
    // attempt ran.
    assert!(histogram_count(&m, "ferray_scheduling_latency_seconds") >= 14);
    assert!(histogram_count(&m, "ferray_task_run_seconds") >= 14);

    // A long job, stopped.
    let (status, r) = api.post_json(
        "/api/jobs/",
        &json!({"component": id, "function": "fan-out", "args": ["2000", "200"]}),
    );
    assert_eq!(status, 200, "{r}");
    let long = r["submission_id"].as_str().expect("an id").to_string();
    wait_for("the long job to run", 60, || {
        let j = api.get_json(&format!("/api/jobs/{long}"));
        (j["status"] == "RUNNING" && j["tasks_total"].as_u64() > Some(0)).then_some(())
    });
    let m = scrape(&api);
    let running = by_label(&m, "ferray_tasks", "State");
    assert!(
        running.get("RUNNING").is_some_and(|n| *n >= 1.0),
        "{running:?}"
    );
    let (status, r) = api.post_json(&format!("/api/jobs/{long}/stop"), &json!({}));
    assert_eq!((status, &r), (200, &json!({"stopped": true})));
    let j = api.wait_job(&long);
    assert_eq!(j["status"], "STOPPED", "{j}");
    let (status, r) = api.post_json(&format!("/api/jobs/{long}/stop"), &json!({}));
    assert_eq!((status, &r), (200, &json!({"stopped": false})));
    // Its tasks are gone from the live tables; the CPUs are free again.
    wait_for("the CPUs to be given back", 30, || {
        let m = scrape(&api);
        let free: f64 = m
            .samples
            .iter()
            .filter(|x| {
                x.metric == "ferray_resources"
                    && x.labels.get("Name") == Some("CPU")
                    && x.labels.get("State") == Some("USED")
            })
            .map(|x| match x.value {
                prometheus_parse::Value::Gauge(v) => v,
                _ => 0.0,
            })
            .sum();
        (free == 0.0).then_some(())
    });
}

#[test]
fn a_tls_cluster_serves_https_checked_against_its_ca() {
    let c = Cluster::start_with(0, &["--no-worker", "--tls", "--dashboard-port", "0"]);
    let base = dashboard(&c);
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let ca = std::fs::read(c.home.path().join("tls").join("ca.pem")).expect("the CA");
    let ca = reqwest::Certificate::from_pem(&ca).expect("a PEM CA");
    let api = Api::with(
        &c,
        reqwest::blocking::Client::builder().add_root_certificate(ca),
    );
    assert_eq!(api.get("/api/jobs/").status(), 200);
    let m = scrape(&api);
    assert_eq!(single(&m, "ferray_cluster_active_nodes"), 0.0);
    // Without the CA the certificate is not trusted; plaintext is refused.
    let untrusted = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .build()
        .expect("a client");
    assert!(untrusted.get(format!("{base}/metrics")).send().is_err());
    let plain = base.replacen("https://", "http://", 1);
    let r = reqwest::blocking::Client::new()
        .get(format!("{plain}/metrics"))
        .bearer_auth(&c.token)
        .send();
    assert!(r.is_err() || r.is_ok_and(|r| r.status() != 200));
}

#[test]
fn a_worker_serves_its_own_metrics() {
    let mut c = Cluster::start_with(0, &["--no-worker", "--dashboard-port", "0"]);
    c.add_worker_with(&[], &["--metrics-export-port", "0"]);
    let log = c.workers[0].2.clone();
    let url = wait_for("the worker's metrics address", 30, || {
        let text = std::fs::read_to_string(&log).ok()?;
        let line = text.lines().find(|l| l.contains("node metrics: "))?;
        line.split("node metrics: ")
            .nth(1)
            .map(|u| u.trim().to_string())
    });
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/metrics"),
        "{url}"
    );
    let http = reqwest::blocking::Client::new();
    assert_eq!(http.get(&url).send().expect("GET").status(), 401);
    let api = Api::new(&c);
    let (status, r) = api.post_json(
        "/api/jobs/",
        &json!({"component_base64": base64::engine::general_purpose::STANDARD
                    .encode(std::fs::read(fx::MISBEHAVE).expect("the component")),
                "function": "fan-out", "args": ["6", "10"]}),
    );
    assert_eq!(status, 200, "{r}");
    let job = r["submission_id"].as_str().expect("an id").to_string();
    assert_eq!(api.wait_job(&job)["status"], "SUCCEEDED");
    // The node's view: the same reading as the head's /metrics.
    let node = Api {
        base: url.trim_end_matches("/metrics").to_string(),
        token: c.token.clone(),
        http,
    };
    let m = scrape(&node);
    let store = by_label(&m, "ferray_object_store_memory", "Location");
    assert!(
        store.contains_key("IN_MEMORY") && store.contains_key("SPILLED"),
        "{store:?}"
    );
    let cpus = m
        .samples
        .iter()
        .find(|x| {
            x.metric == "ferray_node_resources"
                && x.labels.get("Name") == Some("CPU")
                && x.labels.get("State") == Some("AVAILABLE")
        })
        .map(|x| match x.value {
            prometheus_parse::Value::Gauge(v) => v,
            _ => -1.0,
        });
    assert_eq!(cpus, Some(2.0));
    // Its instance slots and guest memory: none held after the job, the
    // pool and the limit known.
    let gauge = |name: &str, label: Option<(&str, &str)>| {
        m.samples
            .iter()
            .find(|x| x.metric == name && label.is_none_or(|(k, v)| x.labels.get(k) == Some(v)))
            .map(|x| match x.value {
                prometheus_parse::Value::Gauge(v) => v,
                _ => -1.0,
            })
    };
    assert_eq!(
        gauge("ferray_node_instance_slots", Some(("State", "USED"))),
        Some(0.0)
    );
    assert!(gauge("ferray_node_instance_slots", Some(("State", "AVAILABLE"))) >= Some(1000.0));
    assert_eq!(gauge("ferray_node_guest_mem_used", None), Some(0.0));
    assert!(gauge("ferray_node_guest_mem_limit", None) > Some(0.0));
}
