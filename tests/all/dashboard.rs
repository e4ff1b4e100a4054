//! The dashboard in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`), driven through chromedriver (WebDriver) with
//! fantoccini, against a cluster of real processes: a head and two workers
//! running a job that creates an actor, runs tasks and prints lines. The
//! browser must sign in with the token (a wrong one is refused), then sees
//! the job's progress advance and its log lines arrive, and clicks through
//! to a task and the actor. `ferray timeline` and the job page's download
//! give the job's attempts as a Chrome trace. Screenshots of the main pages
//! go under `target/dashboard/` (two of them are in `docs/`).
//!
//! In CI (`CI=true`) a missing chromium or chromedriver is a failure; on
//! another machine the test says so and passes without running.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::Value;

use crate::fx;
use crate::harness::{Cluster, block_on, wait_for};
use crate::http::dashboard;

/// chromedriver, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| names.iter().map(move |n| d.join(n)))
        .find(|p| p.is_file())
}

/// chromedriver on a free port with Chromium beside it, or `None` outside
/// CI when they are not installed (after saying so); in CI, a failure.
fn driver() -> Option<Driver> {
    let (Some(driver), Some(_)) = (
        find(&["chromedriver"]),
        find(&["chromium", "chromium-browser", "google-chrome"]),
    ) else {
        let why = "chromium and chromedriver are not installed (apt-get install chromium chromium-driver; .ci/run does)";
        assert!(!in_ci(), "{why}");
        eprintln!("skipping the browser test: {why}");
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let d = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    wait_for("chromedriver", 30, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    Some(d)
}

async fn browser(d: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    let mut args = vec![
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ];
    if let Some(bin) = find(&["chromium"]) {
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "args": args, "binary": bin }),
        );
    } else {
        args.push("--disable-extensions");
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "args": args }),
        );
    }
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&d.url)
        .await
        .expect("a browser session")
}

/// Where the screenshots go: `target/dashboard/`.
fn shots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("dashboard");
    std::fs::create_dir_all(&dir).expect("the screenshot folder");
    dir
}

async fn shot(b: &Client, name: &str) {
    let png = b.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    std::fs::write(shots().join(format!("{name}.png")), png).expect("write a screenshot");
}

/// The text of the element `css` selects. A live section may be replaced
/// between finding an element and reading it: then it is found again.
async fn text(b: &Client, css: &str) -> String {
    let mut last = String::new();
    for _ in 0..50 {
        match b.find(Locator::Css(css)).await {
            Ok(e) => match e.text().await {
                Ok(t) => return t,
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no `{css}` on {:?}: {last}", b.current_url().await)
}

/// Click the element `css` selects (found again if a live section replaced
/// it); its text.
async fn click(b: &Client, css: &str) -> String {
    let mut last = String::new();
    for _ in 0..50 {
        if let Ok(e) = b.find(Locator::Css(css)).await
            && let Ok(t) = e.text().await
        {
            match e.click().await {
                Ok(_) => return t,
                Err(err) => last = err.to_string(),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "cannot click `{css}` on {:?}: {last}\n{}",
        b.current_url().await,
        b.source().await.unwrap_or_default()
    )
}

/// Wait until `f` gives something (up to `secs`), polling the browser.
async fn until<T, F>(what: &str, secs: u64, mut f: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Give the login page `token`.
async fn sign_in(b: &Client, token: &str) {
    b.find(Locator::Id("token"))
        .await
        .expect("the token field")
        .send_keys(token)
        .await
        .expect("type");
    b.find(Locator::Id("sign-in"))
        .await
        .expect("the button")
        .click()
        .await
        .expect("click");
}

/// `done/total` as the progress shows it.
fn counts(progress: &str) -> Option<(u64, u64)> {
    let (d, t) = progress.trim().rsplit_once('/')?;
    Some((
        d.trim().rsplit(' ').next()?.parse().ok()?,
        t.trim().parse().ok()?,
    ))
}

#[test]
fn the_dashboard_shows_a_running_job_behind_the_token() {
    let Some(d) = driver() else { return };
    let c = Cluster::start_with(2, &["--no-worker", "--dashboard-port", "0"]);
    let base = dashboard(&c);
    let tasks = 90;
    let job = c
        .ok(&[
            "submit",
            "--no-wait",
            fx::MISBEHAVE,
            "watched",
            &tasks.to_string(),
            "500",
        ])
        .trim()
        .to_string();
    assert!(job.starts_with("job-"), "{job}");

    block_on(async {
        let b = browser(&d).await;
        // Without the token: the login page, and nothing of the job.
        b.goto(&format!("{base}/jobs/{job}")).await.expect("goto");
        assert_eq!(b.current_url().await.expect("url").path(), "/login");
        let source = b.source().await.expect("the page");
        assert!(!source.contains("watched"), "{source}");
        shot(&b, "login").await;
        // A wrong token is refused.
        sign_in(&b, "not-the-token").await;
        assert!(text(&b, "#login-error").await.contains("not the cluster"));
        // The token: back to the job's page.
        sign_in(&b, &c.token).await;
        until("the job's page", 30, || async {
            (b.current_url().await.ok()?.path() == format!("/jobs/{job}")).then_some(())
        })
        .await;
        assert!(text(&b, "h1").await.contains(&job));

        // Click through to the job's actor while the job runs (an ended
        // job's actors are gone).
        let actor_id = click(&b, "#actors a.actor").await;
        until("the actor's page", 30, || async {
            (b.current_url().await.ok()?.path() == format!("/actors/{actor_id}")).then_some(())
        })
        .await;
        assert!(text(&b, "#actor-class").await.contains("tally"));
        assert!(text(&b, "#actor-state").await.contains("ALIVE"));
        b.goto(&format!("{base}/actors")).await.expect("goto");
        assert!(text(&b, "#actors").await.contains("tally"));
        shot(&b, "actors").await;

        b.goto(&format!("{base}/jobs/{job}")).await.expect("goto");

        // Its progress advances, live, and its log lines arrive.
        let first = until("some progress", 60, || async {
            counts(&text(&b, "#job-progress").await).filter(|(d, t)| *t > 0 && *d < tasks)
        })
        .await;
        let later = until("the progress to advance", 60, || async {
            counts(&text(&b, "#job-progress").await).filter(|(d, _)| *d > first.0)
        })
        .await;
        assert!(later.0 > first.0, "{first:?} then {later:?}");
        until("log lines", 60, || async {
            text(&b, "#log").await.contains("squared to").then_some(())
        })
        .await;
        // The driver's own lines came while it runs (a 23 s job), not
        // with its end.
        assert!(text(&b, "#job-state").await.contains("RUNNING"));
        shot(&b, "job").await;

        // Then to one of its tasks.
        click(&b, "#job-tasks").await;
        let task_id = click(&b, "#tasks a.task").await;
        until("the task's page", 30, || async {
            (b.current_url().await.ok()?.path() == format!("/tasks/{task_id}")).then_some(())
        })
        .await;
        assert!(!text(&b, "#task-function").await.is_empty());
        let attempts = text(&b, "#attempts").await;
        assert!(
            attempts.contains("RUNNING") || attempts.contains("FINISHED"),
            "{attempts}"
        );
        // It ends, and the page says so without a reload.
        b.goto(&format!("{base}/jobs/{job}")).await.expect("goto");
        until("the job's end", 120, || async {
            text(&b, "#job-state")
                .await
                .contains("SUCCEEDED")
                .then_some(())
        })
        .await;
        let (done, total) = counts(&text(&b, "#job-progress").await).expect("the progress");
        assert!(done == total && total >= tasks, "{done}/{total}");
        assert!(
            text(&b, "#log")
                .await
                .contains(&format!("{tasks} of {tasks} done"))
        );
        shot(&b, "job-done").await;

        // The main pages render, with the cluster in them.
        for (path, name, has) in [
            ("/", "overview", "Recent jobs"),
            ("/nodes", "nodes", "ALIVE"),
            ("/tasks", "tasks", "slow-square"),
            ("/objects", "objects", "Objects"),
            (&*format!("/logs?job={job}"), "logs", "squared to"),
        ] {
            b.goto(&format!("{base}{path}")).await.expect("goto");
            until(&format!("{path} to show {has}"), 30, || async {
                b.source().await.ok()?.contains(has).then_some(())
            })
            .await;
            shot(&b, name).await;
        }
        b.close().await.expect("close the browser");

        // A new browser has no session: the login page again.
        let fresh = browser(&d).await;
        fresh.goto(&format!("{base}/")).await.expect("goto");
        assert_eq!(fresh.current_url().await.expect("url").path(), "/login");
        fresh.close().await.expect("close the browser");
    });

    // The job's timeline, from the command line and from the page.
    let file = c.home.path().join("trace.json");
    c.ok(&["timeline", &job, "-o", file.to_str().expect("a path")]);
    let trace: Value =
        serde_json::from_slice(&std::fs::read(&file).expect("the trace")).expect("JSON");
    check_trace(&c, &trace, tasks);
    // A job the head does not have is an error, not an empty trace.
    let out = c
        .cmd()
        .args(["timeline", "job-999"])
        .output()
        .expect("run ferray");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("job-999"),
        "{out:?}"
    );
    let http = reqwest::blocking::Client::new();
    let r = http
        .get(format!("{base}/jobs/{job}/timeline.json"))
        .bearer_auth(&c.token)
        .send()
        .expect("GET the timeline");
    assert_eq!(r.status(), 200);
    let page: Value = r.json().expect("JSON");
    let events = |v: &Value| {
        v["traceEvents"]
            .as_array()
            .map_or(0, |e| e.iter().filter(|e| e["ph"] == "X").count())
    };
    assert_eq!(events(&page), events(&trace));
    // Without the token, nothing.
    let r = http
        .get(format!("{base}/jobs/{job}/timeline.json"))
        .send()
        .expect("GET");
    assert_eq!(r.status(), 401);
}

/// A job's trace: a span per attempt (the driver, each task, each actor
/// call) on the workers' rows, and no two spans of one row overlapping.
fn check_trace(c: &Cluster, trace: &Value, tasks: u64) {
    let events = trace["traceEvents"].as_array().expect("events");
    let spans: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    let named = |n: &str| {
        spans
            .iter()
            .filter(|e| e["name"].as_str().is_some_and(|s| s.ends_with(n)))
            .count() as u64
    };
    assert_eq!(named("slow-square"), tasks, "{trace}");
    assert_eq!(named(".incr"), tasks, "{trace}");
    assert_eq!(named("watched"), 1, "{trace}");
    let workers: BTreeSet<u64> = c.workers.iter().map(|w| w.1).collect();
    let mut rows: BTreeMap<(u64, u64), Vec<(u64, u64)>> = BTreeMap::new();
    for e in &spans {
        let pid = e["pid"].as_u64().expect("pid");
        assert!(workers.contains(&pid), "a span on node {pid}: {e}");
        assert_eq!(e["args"]["outcome"], "FINISHED", "{e}");
        let ts = e["ts"].as_u64().expect("ts");
        rows.entry((pid, e["tid"].as_u64().expect("tid")))
            .or_default()
            .push((ts, ts + e["dur"].as_u64().expect("dur")));
    }
    for (row, mut v) in rows {
        v.sort();
        for w in v.windows(2) {
            assert!(w[0].1 <= w[1].0, "spans overlap on {row:?}: {w:?}");
        }
    }
    let names = events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .count();
    assert!(names >= 2, "a row per node and slot: {trace}");
}

#[test]
fn a_workers_spilled_copies_show_on_the_objects_page() {
    // A worker whose store holds 1 MiB in memory: four 512 KiB results
    // cannot all stay there.
    let mut c = Cluster::start_with(0, &["--no-worker", "--dashboard-port", "0"]);
    c.add_worker_with(&[], &["--object-store-memory", "1MiB"]);
    let base = dashboard(&c);
    let http = reqwest::blocking::Client::new();
    let objects = || {
        http.get(format!("{base}/objects"))
            .bearer_auth(&c.token)
            .send()
            .expect("GET /objects")
            .text()
            .expect("the page")
    };
    block_on(async {
        let rt = c.runtime().await;
        let m = rt.load_file(fx::MISBEHAVE).await.expect("load");
        let refs: Vec<_> = (0..4u8)
            .map(|i| {
                m.task("make-bytes")
                    .args(&(512u32 << 10, i))
                    .expect("args")
                    .submit()
                    .expect("submit")
            })
            .collect();
        for r in &refs {
            let _: Vec<u8> = rt.get(r).await.expect("make-bytes");
        }
        // The worker's next heartbeats tell the head which copies are on
        // disk; the page shows them, while the job still holds them.
        let page = tokio::task::block_in_place(|| {
            wait_for("a spilled copy on the objects page", 30, || {
                let p = objects();
                p.contains(">spilled<").then_some(p)
            })
        });
        assert!(page.contains("node-"), "{page}");
        drop(refs);
    });
}
