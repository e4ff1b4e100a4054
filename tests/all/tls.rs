//! TLS on the cluster's connections, with real processes: a head and a
//! worker with `--tls` on 127.0.0.1 run a job, a client that trusts another
//! CA and a plaintext client are refused with one clear line, and a head on
//! an address other than loopback speaks TLS without being asked.
//!
//! Every client here is a `ferray` process: a TLS setting is per process,
//! and this test process talks to plaintext clusters too.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use super::harness::{Cluster, block_on, wait_for};
use super::{fx, stderr, stdout};

/// Start a worker of `c` (2 CPUs) as `ferray start --address ADDR --block`
/// with its FERRAY_HOME (the CA beside the token); returns once the head
/// lists `alive` live nodes. It is stopped with the cluster.
fn add_tls_worker(c: &mut Cluster, alive: usize) {
    let log = c
        .home
        .path()
        .join(format!("tls-worker-{}.log", c.workers.len()));
    let out = std::fs::File::create(&log).expect("log file");
    let child = c
        .cmd()
        .args([
            "start",
            "--address",
            &c.address,
            "--num-cpus",
            "2",
            "--block",
        ])
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log file"))
        .stderr(out)
        .spawn()
        .expect("start a worker");
    c.workers.push((child, 0, log.clone()));
    wait_alive(c, alive);
}

/// Returns once the head lists `n` live nodes (asked with `ferray list`).
fn wait_alive(c: &Cluster, n: usize) {
    wait_for("the nodes to join", 60, || {
        let out = c.cmd().args(["list", "nodes"]).output().ok()?;
        (stdout(&out).matches("ALIVE").count() >= n).then_some(())
    });
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn a_tls_head_and_worker_on_loopback_run_a_job() {
    let mut c = Cluster::start_with(0, &["--tls"]);
    assert!(
        c.address.starts_with("https://127.0.0.1:"),
        "a TLS head announces https://: {}",
        c.address
    );
    // The CA and the node's certificate, owner-only.
    let tls = c.home.path().join("tls");
    assert_eq!(mode(&tls), 0o700);
    for f in ["ca.pem", "ca.key", "node.pem", "node.key"] {
        assert_eq!(mode(&tls.join(f)), 0o600, "{f}");
    }
    add_tls_worker(&mut c, 2);
    // Every node's object server speaks TLS (a plaintext probe gets an alert).
    let nodes = c.ok(&["list", "nodes"]);
    let addrs: Vec<String> = nodes
        .lines()
        .filter(|l| l.contains("ALIVE"))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("127.0.0.1:")))
        .map(str::to_string)
        .collect();
    assert_eq!(addrs.len(), 2, "{nodes}");
    for a in &addrs {
        assert!(
            block_on(ferray::cluster::tls::speaks_tls(a)),
            "{a} serves plaintext"
        );
    }
    let out = c.ok(&["submit", "--address", &c.address, fx::SQUARES, "run", "3"]);
    assert!(out.contains("[0, 1, 4]"), "{out}");
    // An object larger than inline travels by Objects.Pull, over TLS too.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let file = c.home.path().join("big.bin");
    std::fs::write(&file, &big).expect("write");
    let id = c.ok(&["put", file.to_str().expect("utf-8")]);
    let back = c.home.path().join("back.bin");
    c.ok(&["get", id.trim(), "--output", back.to_str().expect("utf-8")]);
    assert_eq!(std::fs::read(&back).expect("read"), big);
    // A client of a TLS cluster that serves objects itself (the
    // microbenchmark's loopback transfer) speaks TLS to its own server too.
    let out = c.ok(&[
        "microbenchmark",
        "--address",
        &c.address,
        "--scale",
        "0.01",
        "--filter",
        "object_transfer",
    ]);
    assert!(out.contains("object_transfer_gigabytes "), "{out}");
}

#[test]
fn untrusted_and_plaintext_clients_of_a_tls_head_get_one_clear_line() {
    let c = Cluster::start_with(0, &["--tls", "--no-worker"]);
    // Another cluster's CA.
    let other = ferray::cluster::tls::make_ca().expect("a CA");
    let ca = c.home.path().join("other-ca.pem");
    std::fs::write(&ca, &other.cert).expect("write");
    let out = c
        .cmd()
        .args(["status", "--tls-ca", ca.to_str().expect("utf-8")])
        .output()
        .expect("run ferray");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("its TLS certificate is not signed by the CA this client trusts"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    // Plaintext against the TLS head.
    let plain = c.address.trim_start_matches("https://");
    let out = c
        .cmd()
        .args(["status", "--address", plain])
        .output()
        .expect("run ferray");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("speaks TLS and this client spoke plaintext"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

/// The first address of this machine other than loopback, if any.
fn non_loopback_ip() -> Option<std::net::IpAddr> {
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .ok()?;
    stdout(&out)
        .split_whitespace()
        .filter_map(|s| s.parse::<std::net::IpAddr>().ok())
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
}

#[test]
fn a_head_on_a_non_loopback_address_speaks_tls_unasked() {
    let Some(ip) = non_loopback_ip() else {
        // In CI a machine without one is a failure, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "no address other than loopback on this machine (`hostname -I`)"
        );
        eprintln!("no address other than loopback on this machine; skipped");
        return;
    };
    let ip = ip.to_string();
    let c = Cluster::start_with(0, &["--node-ip-address", &ip]);
    assert_eq!(
        c.address.split(':').take(2).collect::<Vec<_>>().join(":"),
        format!("https://{ip}"),
        "{}",
        c.address
    );
    wait_alive(&c, 1);
    let out = c.ok(&["submit", fx::SQUARES, "run", "3"]);
    assert!(out.contains("[0, 1, 4]"), "{out}");
}

#[test]
fn a_tls_cluster_s_serve_proxies_speak_https_and_ask_for_the_token() {
    let mut c = Cluster::start_with(0, &["--tls", "--no-worker"]);
    add_tls_worker(&mut c, 1);
    let (_dir, app) = super::serve::app_dir(
        r#"
proxy_location = "EveryNode"

[http]
port = 0

[[deployment]]
name = "hello"
component = "hello.wasm"
route_prefix = "/"
"#,
    );
    let app_s = app.to_str().expect("a UTF-8 path");
    let head = super::serve::deployed_at(&c.ok(&["serve", "deploy", app_s]));
    assert!(head.starts_with("https://127.0.0.1:"), "{head}");
    let node = super::serve::node_proxy(&c.workers[0].2);
    assert!(node.starts_with("https://127.0.0.1:"), "{node}");
    let http = super::serve::cluster_client(&c);
    let ca = std::fs::read(c.home.path().join("tls").join("ca.pem")).expect("the CA");
    let no_token = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("a PEM CA"))
        .build()
        .expect("a client");
    let untrusted = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .build()
        .expect("a client");
    for base in [&head, &node] {
        let r = http.get(format!("{base}/?name=Ada")).send().expect("GET");
        assert_eq!(r.status().as_u16(), 200, "{base}");
        assert_eq!(
            r.text().unwrap_or_default(),
            "Hello, Ada! (path /?name=Ada)\n"
        );
        let r = no_token
            .get(format!("{base}/?name=Ada"))
            .send()
            .expect("GET");
        assert_eq!(r.status().as_u16(), 401, "{base}");
        let r = no_token
            .get(format!("{base}/-/healthz"))
            .send()
            .expect("GET");
        assert_eq!(r.status().as_u16(), 200, "{base}");
        // A certificate not signed by a CA the client trusts, and plaintext,
        // get nothing.
        assert!(untrusted.get(format!("{base}/-/healthz")).send().is_err());
        let plain = base.replacen("https://", "http://", 1);
        let r = reqwest::blocking::Client::new()
            .get(format!("{plain}/?name=Ada"))
            .bearer_auth(&c.token)
            .send();
        assert!(r.is_err() || r.is_ok_and(|r| r.status() != 200), "{plain}");
    }
    // A public application takes requests without the token, over TLS still.
    c.ok(&["serve", "delete"]);
    std::fs::write(
        &app,
        "[http]\nport = 0\npublic = true\n\n[[deployment]]\nname = \"hello\"\n\
         component = \"hello.wasm\"\nroute_prefix = \"/\"\n",
    )
    .expect("write the application file");
    let head = super::serve::deployed_at(&c.ok(&["serve", "deploy", app_s]));
    assert!(head.starts_with("https://"), "{head}");
    let r = no_token
        .get(format!("{head}/?name=Bo"))
        .send()
        .expect("GET");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.text().unwrap_or_default(),
        "Hello, Bo! (path /?name=Bo)\n"
    );
}
