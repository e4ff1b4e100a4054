//! Network partitions: a worker in a network namespace of its own, joined
//! to the head's by a veth pair, is cut off without being killed, then
//! healed. This needs root (`ip netns`, `ip link`): in CI (`CI=true`, as
//! root) a missing capability is a failure; elsewhere the test says so and
//! passes without running.

use std::process::Command;

use ferray::cluster::JobState;

use crate::fx;
use crate::harness::{Cluster, wait_for};

/// A network namespace and the veth pair that joins it to the test's.
struct Netns {
    name: String,
    host_if: String,
    host_ip: String,
    ns_ip: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// A fresh namespace, or why there cannot be one here.
    fn new() -> Result<Netns, String> {
        let id = std::process::id() % 100_000;
        let subnet = std::process::id() % 250 + 1;
        let n = Netns {
            name: format!("ferray-t{id}"),
            host_if: format!("fvh{id}"),
            host_ip: format!("10.213.{subnet}.1"),
            ns_ip: format!("10.213.{subnet}.2"),
        };
        let ns_if = format!("fvn{id}");
        ip(&["netns", "add", &n.name])?;
        ip(&[
            "link", "add", &n.host_if, "type", "veth", "peer", "name", &ns_if,
        ])?;
        ip(&["link", "set", &ns_if, "netns", &n.name])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", n.host_ip),
            "dev",
            &n.host_if,
        ])?;
        ip(&["link", "set", &n.host_if, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &n.name, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&["addr", "add", &format!("{}/30", n.ns_ip), "dev", &ns_if])?;
        inside(&["link", "set", &ns_if, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(n)
    }

    fn cut(&self) {
        ip(&["link", "set", &self.host_if, "down"]).expect("cut the link");
    }

    fn heal(&self) {
        ip(&["link", "set", &self.host_if, "up"]).expect("heal the link");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the pair.
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host_if]);
    }
}

/// A namespace, or `None` outside CI when this machine cannot make one
/// (after saying so); in CI, a failure.
fn netns() -> Option<Netns> {
    match Netns::new() {
        Ok(n) => Some(n),
        Err(e) if std::env::var("CI").is_err() => {
            eprintln!("skipped: the partition test needs root and `ip netns` ({e})");
            None
        }
        Err(e) => panic!("the partition test needs root and `ip netns` in CI: {e}"),
    }
}

/// A worker cut off the network is declared dead within the node timeout
/// and its tasks run elsewhere; what it sends once healed is fenced (each
/// task counts once); it joins again as a new node, and runs work.
#[test]
fn a_cut_off_worker_is_replaced_fenced_and_rejoins_as_a_new_node() {
    let Some(net) = netns() else {
        return;
    };
    let mut c = Cluster::start_with(
        0,
        &[
            "--no-worker",
            "--node-ip-address",
            &net.host_ip,
            "--insecure",
        ],
    );
    let here = c.add_worker_with(&[], &["--node-ip-address", &net.host_ip, "--insecure"]);
    let wrap = ["ip", "netns", "exec", net.name.as_str()];
    let there = c.add_worker_in(&wrap, &[], &["--node-ip-address", &net.ns_ip, "--insecure"]);
    assert_ne!(here, there);
    let out = c.ok(&["submit", "--no-wait", fx::MISBEHAVE, "fan-out", "60", "150"]);
    let job = out.trim().to_string();
    wait_for("tasks running on the cut-off node", 60, || {
        c.state("tasks")
            .tasks
            .iter()
            .any(|t| t.node.is_some_and(|n| n.0 == there) && t.state == "RUNNING")
            .then_some(())
    });
    net.cut();
    wait_for("the head to declare the cut node dead", 30, || {
        c.state("nodes")
            .nodes
            .iter()
            .any(|n| n.id.0 == there && !n.alive)
            .then_some(())
    });
    let info = wait_for("the job to end on the other node", 120, || {
        c.job(&job).filter(|j| j.state.finished())
    });
    assert_eq!(info.state, JobState::Succeeded, "{info:?}");
    let want: Vec<String> = (0..60i64).map(|i| (i * i).to_string()).collect();
    let shown = c.ok(&["job", "status", &job]);
    assert!(
        shown.contains(&format!("  result: [{}]\n", want.join(", "))),
        "{shown}"
    );
    net.heal();
    c.rejoined(1, there);
    let info = c.job(&job).expect("the job");
    assert_eq!((info.tasks_done, info.tasks_total), (60, 60), "{info:?}");
    // Work still reaches both nodes.
    let out = c.ok(&["submit", fx::MISBEHAVE, "fan-out", "8", "1"]);
    assert!(out.contains("49"), "{out}");
}
