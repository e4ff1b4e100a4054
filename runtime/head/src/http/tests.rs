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
    let router = router(head());
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
        if path.contains("job-1") {
            assert_eq!(s, StatusCode::NOT_FOUND, "{method} {path}: no job-1 yet");
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
    let router = router(head());
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
    };
    let text = metrics::render_node(&m).expect("metrics");
    for line in [
        "ferray_object_store_memory{Location=\"IN_MEMORY\"} 10",
        "ferray_object_store_memory{Location=\"SPILLED\"} 5",
        "ferray_object_store_num_local_objects 2",
        "ferray_node_instance_slots{State=\"AVAILABLE\"} 997",
        "ferray_node_resources{Name=\"CPU\",State=\"USED\"} 2.5",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
    assert!(!text.contains("guest_mem"), "unknown, not shown: {text}");
}
