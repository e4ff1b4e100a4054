//! The HTTP edge against a head in this process: the token check on every
//! route, and the routes of `docs/jobs-api.yaml` against the router's.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt as _;

use super::*;

use crate::tests::head;

/// A concrete path for a route (`{submission_id}` filled in).
fn concrete(path: &str) -> String {
    path.replace("{submission_id}", "job-1")
        .replace("{job}", "job-1")
        .replace("{task}", "task-1")
        .replace("{actor}", "actor-1")
}

async fn status(router: &Router, method: &str, path: &str, auth: Option<&str>) -> StatusCode {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let body = if method == "POST" && path == "/api/jobs/" {
        Body::from("{}")
    } else {
        Body::empty()
    };
    router
        .clone()
        .oneshot(req.body(body).expect("a request"))
        .await
        .expect("an answer")
        .status()
}

/// The paths and methods of an OpenAPI file: a strict reading of the
/// `paths:` block (two-space indented paths, four-space methods).
fn openapi_routes(yaml: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut in_paths = false;
    let mut path = None;
    for line in yaml.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() {
            in_paths = line.trim_end() == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  ")
            && p.starts_with('/')
        {
            path = Some(
                p.trim_end()
                    .trim_end_matches(':')
                    .trim_matches('\'')
                    .to_string(),
            );
        } else if let Some(m) = line.strip_prefix("    ")
            && !m.starts_with(' ')
        {
            let m = m.trim_end().trim_end_matches(':');
            if ["get", "post", "put", "delete", "patch"].contains(&m) {
                let p = path.clone().expect("a method under a path");
                out.insert((m.to_uppercase(), p));
            }
        }
    }
    out
}

#[test]
fn the_openapi_file_lists_the_routers_routes() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/jobs-api.yaml");
    let yaml = std::fs::read_to_string(file).expect("docs/jobs-api.yaml");
    let documented = openapi_routes(&yaml);
    let ours: BTreeSet<(String, String)> = ROUTES
        .iter()
        .filter(|(_, p)| p.starts_with("/api/"))
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, ours, "docs/jobs-api.yaml and ROUTES differ");
}

#[tokio::test]
async fn every_route_needs_the_token_and_the_router_has_them_all() {
    let router = router(head(), false);
    for (method, path) in ROUTES {
        let path = concrete(path);
        for auth in [
            None,
            Some("Bearer wrong-token"),
            Some("test-token"),
            Some("Bearer test-token "),
        ] {
            assert_eq!(
                status(&router, method, &path, auth).await,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {auth:?}"
            );
        }
        let s = status(&router, method, &path, Some("Bearer test-token")).await;
        // The router has the route: not a 404 of no route, nor a 405.
        assert!(
            s != StatusCode::METHOD_NOT_ALLOWED && s != StatusCode::UNAUTHORIZED,
            "{method} {path}: {s}"
        );
        if path.contains("-1") {
            assert_eq!(
                s,
                StatusCode::NOT_FOUND,
                "{method} {path}: no such thing yet"
            );
        } else if method == &"POST" {
            assert_eq!(
                s,
                StatusCode::BAD_REQUEST,
                "{method} {path}: an empty request"
            );
        } else {
            assert_eq!(s, StatusCode::OK, "{method} {path}");
        }
    }
    // What is not a route is refused before it is looked up, then a 404.
    assert_eq!(
        status(&router, "GET", "/nothing", None).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(&router, "GET", "/nothing", Some("Bearer test-token")).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(&router, "DELETE", "/api/jobs/", Some("Bearer test-token")).await,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn a_bad_submission_is_a_400_with_the_reason() {
    let router = router(head(), false);
    for body in [
        "not json",
        r#"{"function": "f"}"#,
        r#"{"function": "f", "component": "zz"}"#,
        r#"{"function": "f", "component_base64": "!!"}"#,
        r#"{"function": "f", "component_base64": "AGFzbQ=="}"#,
        r#"{"function": "", "component": "00"}"#,
        r#"{"function": "f", "component": "00", "extra": 1}"#,
        r#"{"function": "f", "component_base64": "AGFzbQ==", "entrypoint_num_cpus": -1}"#,
    ] {
        let req = Request::builder()
            .method("POST")
            .uri("/api/jobs/")
            .header("authorization", "Bearer test-token")
            .body(Body::from(body))
            .expect("a request");
        let resp = router.clone().oneshot(req).await.expect("an answer");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("a body");
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    // A body past the cap is refused as too large.
    let big = vec![b' '; MAX_BODY_BYTES + 1];
    let req = Request::builder()
        .method("POST")
        .uri("/api/jobs/")
        .header("authorization", "Bearer test-token")
        .body(Body::from(big))
        .expect("a request");
    let resp = router.clone().oneshot(req).await.expect("an answer");
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn metrics_of_an_empty_head() {
    let text = metrics::render(&head()).expect("metrics");
    assert!(
        text.contains("# TYPE ferray_cluster_active_nodes gauge"),
        "{text}"
    );
    assert!(text.contains("ferray_cluster_active_nodes 0"), "{text}");
    assert!(
        text.contains("# TYPE ferray_scheduling_latency_seconds histogram"),
        "{text}"
    );
    assert!(
        !text.contains("# EOF"),
        "Prometheus text, not OpenMetrics: {text}"
    );
}

#[test]
fn a_nodes_metrics_show_what_it_knows() {
    let m = NodeMetrics {
        object_store_bytes_in_memory: 10,
        object_store_bytes_spilled: 5,
        objects: 2,
        instance_slots: Some((3, 1000)),
        guest_memory: None,
        resources_total: ferray_core::Resources::cpus(4.0),
        resources_free: ferray_core::Resources::cpus(1.5),
        gpu_memory_used: None,
        transfer_bytes: Some({
            let h = ferray_core::Histogram::exponential(1024.0, 4.0, 2);
            for v in [100.0, 2000.0, 3000.0, 1e9] {
                h.observe(v);
            }
            h.snapshot()
        }),
        transfer_seconds: None,
    };
    let text = metrics::render_node(&m).expect("metrics");
    for line in [
        "ferray_object_store_memory{Location=\"IN_MEMORY\"} 10",
        "ferray_object_store_memory{Location=\"SPILLED\"} 5",
        "ferray_object_store_num_local_objects 2",
        "ferray_node_instance_slots{State=\"AVAILABLE\"} 997",
        "ferray_node_resources{Name=\"CPU\",State=\"USED\"} 2.5",
        // Cumulative buckets: 100 B; then 2000 and 3000 under 4 KiB; 1 GB past.
        "ferray_object_transfer_bytes_bucket{le=\"1024.0\"} 1",
        "ferray_object_transfer_bytes_bucket{le=\"4096.0\"} 3",
        "ferray_object_transfer_bytes_bucket{le=\"+Inf\"} 4",
        "ferray_object_transfer_bytes_count 4",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
    assert!(!text.contains("guest_mem"), "unknown, not shown: {text}");
}

/// The metrics a metrics text declares: each `# TYPE NAME KIND` line's name
/// and kind.
fn declared(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.trim().to_string()))
        .collect()
}

/// The `ferray_` metric names in a PromQL expression, a histogram's series
/// (`_bucket`, `_sum`, `_count`) under the histogram's own name.
fn metric_names(
    expr: &str,
    metrics: &std::collections::BTreeMap<String, String>,
) -> BTreeSet<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = BTreeSet::new();
    for (at, _) in expr.match_indices("ferray_") {
        if expr[..at].chars().next_back().is_some_and(ident) {
            continue;
        }
        let rest = &expr[at..];
        let name = &rest[..rest.find(|c| !ident(c)).unwrap_or(rest.len())];
        let histogram = ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = name.strip_suffix(suffix)?;
            (metrics.get(base).map(String::as_str) == Some("histogram")).then_some(base)
        });
        out.insert(histogram.unwrap_or(name).to_string());
    }
    out
}

/// Every string under `key` anywhere in a JSON value.
fn strings_under<'a>(v: &'a serde_json::Value, key: &str, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match v.as_str() {
                    Some(s) if k == key => out.push(s),
                    _ => strings_under(v, key, out),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                strings_under(v, key, out);
            }
        }
        _ => {}
    }
}

/// `docs/grafana-dashboard.json` asks only for metrics that the head's or a
/// worker's `/metrics` declares (rendered here from the code, with a
/// worker, a job with a task and an actor, and every optional figure of a
/// node), shows every one of them, and imports with its data source as an
/// input.
#[tokio::test]
async fn the_grafana_dashboard_asks_for_the_metrics_we_serve() {
    use ferray_proto::v1::{self, down, up};
    let head = head();
    let mut sessions = Vec::new();
    for worker in [true, false] {
        let hello = crate::tests::hello(worker);
        sessions.push(head.open(&hello).expect("a session"));
    }
    // The client (a job) submits a task and creates an actor.
    let (client, rx) = &mut sessions[1];
    let base = match rx.try_recv().ok().and_then(|d| d.msg) {
        Some(down::Msg::Welcome(w)) => w.id_base,
        other => panic!("{other:?}"),
    };
    let comp = ferray_core::ComponentId::of(b"component");
    head.core
        .lock()
        .state
        .components
        .insert(comp, bytes::Bytes::from_static(b"component"));
    let component = bytes::Bytes::copy_from_slice(comp.as_bytes());
    let msgs = [
        up::Msg::Submit(v1::Submit {
            task: base + 1,
            component: component.clone(),
            function: "f".into(),
            ..Default::default()
        }),
        up::Msg::CreateActor(v1::CreateActor {
            actor: base + 2,
            component,
            class: "c".into(),
            ..Default::default()
        }),
    ];
    head.handle(
        *client,
        msgs.into_iter()
            .map(|m| v1::Up {
                seq: 0,
                msg: Some(m),
            })
            .collect(),
    );
    let node = NodeMetrics {
        object_store_bytes_in_memory: 10,
        object_store_bytes_spilled: 5,
        objects: 2,
        instance_slots: Some((3, 1000)),
        guest_memory: Some((1 << 20, 1 << 30)),
        resources_total: ferray_core::Resources::cpus(4.0),
        resources_free: ferray_core::Resources::cpus(1.5),
        gpu_memory_used: Some(4096),
        transfer_bytes: Some(ferray_core::HistogramSnapshot::default()),
        transfer_seconds: Some(ferray_core::HistogramSnapshot::default()),
    };
    let mut served = declared(&metrics::render(&head).expect("the head's metrics"));
    let of_node = declared(&metrics::render_node(&node).expect("a node's metrics"));
    for (name, kind) in of_node {
        if let Some(other) = served.get(&name) {
            assert_eq!(*other, kind, "{name} is of two kinds");
        }
        served.insert(name, kind);
    }
    for name in [
        "ferray_tasks",
        "ferray_actors",
        "ferray_jobs",
        "ferray_node_resources",
    ] {
        assert!(served.contains_key(name), "no {name}: {served:?}");
    }

    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/grafana-dashboard.json"
    );
    let text = std::fs::read_to_string(file).expect("docs/grafana-dashboard.json");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    strings_under(&dash["panels"], "expr", &mut exprs);
    strings_under(&dash["templating"], "definition", &mut exprs);
    assert!(exprs.len() >= 10, "{} queries", exprs.len());
    let mut shown = BTreeSet::new();
    for expr in exprs {
        let names = metric_names(expr, &served);
        assert!(!names.is_empty(), "no ferray_ metric in `{expr}`");
        for name in names {
            assert!(
                served.contains_key(&name),
                "`{expr}` asks for {name}, which no /metrics serves (served: {:?})",
                served.keys().collect::<Vec<_>>()
            );
            shown.insert(name);
        }
    }
    let unshown: Vec<_> = served.keys().filter(|n| !shown.contains(*n)).collect();
    assert!(
        unshown.is_empty(),
        "no panel of docs/grafana-dashboard.json shows {unshown:?}"
    );
    for histogram in served.iter().filter(|(_, k)| *k == "histogram") {
        let quantile = format!("{}_bucket", histogram.0);
        assert!(
            text.contains(&quantile) && text.contains("histogram_quantile("),
            "no quantiles of {}",
            histogram.0
        );
    }

    // It imports: Grafana asks for the data source its panels name.
    assert_eq!(dash["__inputs"][0]["name"], "DS_PROMETHEUS");
    assert_eq!(dash["__inputs"][0]["pluginId"], "prometheus");
    let mut sources = Vec::new();
    strings_under(&dash["panels"], "uid", &mut sources);
    assert!(!sources.is_empty());
    assert!(
        sources.iter().all(|uid| *uid == "${DS_PROMETHEUS}"),
        "{sources:?}"
    );
    assert!(dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
}

#[test]
fn metric_names_are_read_from_an_expression() {
    let served = declared(
        "# TYPE ferray_a histogram\nferray_a_bucket{le=\"1\"} 0\n# TYPE ferray_b_count gauge\n",
    );
    let names = metric_names(
        "histogram_quantile(0.9, sum by (le) (rate(ferray_a_bucket[5m]))) + ferray_b_count \
         + ferray_c_sum + x_ferray_d",
        &served,
    );
    let want: BTreeSet<String> = ["ferray_a", "ferray_b_count", "ferray_c_sum"]
        .map(String::from)
        .into();
    assert_eq!(names, want);
}

/// A request with the given headers to the router, its status, headers
/// and body as text.
async fn send(
    router: &Router,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = router
        .clone()
        .oneshot(req.body(Body::from(body.to_string())).expect("a request"))
        .await
        .expect("an answer");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .expect("a body");
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

#[tokio::test]
async fn a_browser_signs_in_once_with_the_token_and_keeps_a_session() {
    let router = router(head(), true);
    let html = [("accept", "text/html,application/xhtml+xml")];
    // A page without the token goes to the login page, which shows nothing
    // of the cluster.
    let (s, h, _) = send(&router, "GET", "/jobs?after=3", &html, "").await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h["location"], "/login?next=%2Fjobs%3Fafter%3D3");
    assert_eq!(h["x-frame-options"], "DENY");
    let (s, _, page) = send(&router, "GET", "/login?next=%2Fjobs", &[], "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        page.contains(r#"name="token""#) && page.contains(r#"value="/jobs""#),
        "{page}"
    );
    assert!(!page.contains("Recent jobs"));
    // An API call without it is a 401 even from a browser's fetch.
    let (s, _, _) = send(&router, "GET", "/api/jobs/", &[], "").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // A wrong token: refused, no cookie.
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let (s, h, page) = send(&router, "POST", "/login", &form, "token=nope&next=%2Fjobs").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(h.get("set-cookie").is_none());
    assert!(page.contains("not the cluster"), "{page}");
    // The token: a session cookie (not the token), and back where it was
    // going; never to another site.
    let (s, h, _) = send(
        &router,
        "POST",
        "/login",
        &form,
        "token=test-token&next=%2F%2Fevil.example",
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h["location"], "/");
    let cookie = h["set-cookie"].to_str().expect("text").to_string();
    assert!(!cookie.contains("test-token"), "{cookie}");
    for part in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    let pair = cookie.split(';').next().expect("a pair").to_string();
    let with = [("cookie", pair.as_str()), ("accept", "text/html")];
    for path in [
        "/",
        "/jobs",
        "/tasks",
        "/actors",
        "/nodes",
        "/objects",
        "/logs",
        "/api/jobs/",
        "/metrics",
    ] {
        let (s, _, body) = send(&router, "GET", path, &with, "").await;
        assert_eq!(s, StatusCode::OK, "{path}: {body}");
    }
    let (_, _, page) = send(&router, "GET", "/", &with, "").await;
    assert!(
        page.contains("Recent jobs") && page.contains("<svg"),
        "{page}"
    );
    // A forged session is nobody's.
    let (s, _, _) = send(
        &router,
        "GET",
        "/api/jobs/",
        &[("cookie", "ferray_session=00")],
        "",
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn pages_refuse_bad_ids_and_filters_with_a_reason() {
    let router = router(head(), false);
    let auth = [("authorization", "Bearer test-token")];
    for (path, want) in [
        ("/jobs/job-x", StatusCode::BAD_REQUEST),
        ("/jobs/0", StatusCode::BAD_REQUEST),
        ("/jobs/job-7", StatusCode::NOT_FOUND),
        ("/tasks/task-3", StatusCode::NOT_FOUND),
        ("/tasks?job=banana", StatusCode::BAD_REQUEST),
        ("/tasks?after=zz", StatusCode::BAD_REQUEST),
        ("/actors/actor-2", StatusCode::NOT_FOUND),
        ("/logs?job=job-9", StatusCode::NOT_FOUND),
        ("/objects?after=nothex", StatusCode::BAD_REQUEST),
        ("/jobs/job-4/timeline.json", StatusCode::NOT_FOUND),
    ] {
        let (s, _, body) = send(&router, "GET", path, &auth, "").await;
        assert_eq!(s, want, "{path}: {body}");
        assert!(body.contains("class=\"error\""), "{path}: {body}");
    }
    // Text from the cluster is escaped, never markup.
    let (_, _, body) = send(
        &router,
        "GET",
        "/tasks?function=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        &auth,
        "",
    )
    .await;
    assert!(!body.contains("<script>alert"), "{body}");
    assert!(body.contains("&lt;script&gt;"), "{body}");
}

#[test]
fn charts_come_from_the_heads_samples() {
    use crate::state::SampleNumbers;
    use history::{Point, series, svg_chart};
    let p = |s: u64, ended: u64, bytes: u64| Point {
        unix_ms: s * 1000,
        n: SampleNumbers {
            attempts_ended: ended,
            object_bytes: bytes,
            cpus_used: 1.0,
            cpus_total: 4.0,
        },
    };
    let (rate, obj, cpus, total) = series(&[p(1, 0, 10), p(2, 50, 20), p(4, 250, 30)]);
    assert_eq!(rate, vec![(2000, 50.0), (4000, 100.0)]);
    assert_eq!(obj.last(), Some(&(4000, 30.0)));
    assert_eq!((cpus.len(), total[0].1), (3, 4.0));
    let svg = svg_chart("tasks/s", &rate, None, |v| format!("{v:.0}/s"));
    assert!(
        svg.starts_with("<svg") && svg.contains("100/s") && svg.contains("M0.0,"),
        "{svg}"
    );
    let mut h = history::History::default();
    for i in 0..history::KEEP as u64 + 5 {
        h.push(p(i, i, i));
    }
    assert_eq!(h.points().len(), history::KEEP);
}
