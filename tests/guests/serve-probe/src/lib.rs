//! A stateful ferray serve replica (`ferray:runtime/serve`) for the tests.
//! The last segment of the path picks what it does:
//!
//! - `count`: the requests this instance has answered (its state);
//! - `config`: the `user_config` it was made with;
//! - `echo`: the method and body back, with an `x-probe` header;
//! - `sleep?ms=N`: sleeps, then answers `slept N`;
//! - `crash`: panics (the replica restarts);
//! - `status?code=N`: answers with status N, even an invalid one;
//! - `badheader`: answers a header name the proxy must refuse;
//! - `call?to=NAME&path=P`: sends the request's method and body to deployment
//!   NAME at path P through a handle (`ferray_sdk::serve`), answers what it said.
//!
//! A batch answers each request as alone, with `x-batch-size` set. A
//! `user_config` with `crash_on_start = true` panics in the constructor.

use std::cell::{Cell, RefCell};

use exports::ferray::runtime::serve::{Guest, GuestReplica, HttpRequest, HttpResponse};

wit_bindgen::generate!({ path: "../../../wit", world: "ferray:runtime/serve-replica" });

struct Component;

struct Replica {
    config: String,
    count: Cell<u64>,
    batches: RefCell<Vec<usize>>,
}

fn param(path: &str, key: &str) -> Option<u64> {
    query(path, key)?.parse().ok()
}

fn query(path: &str, key: &str) -> Option<String> {
    let (_, query) = path.split_once('?')?;
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
}

fn text(status: u16, body: String) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: body.into_bytes(),
    }
}

impl GuestReplica for Replica {
    fn new(config: String) -> Self {
        if config.contains("\"crash_on_start\":true") {
            panic!("the replica was asked to crash in its constructor");
        }
        Replica {
            config,
            count: Cell::new(0),
            batches: RefCell::new(Vec::new()),
        }
    }

    fn handle(&self, request: HttpRequest) -> HttpResponse {
        self.count.set(self.count.get() + 1);
        let path = request.path.clone();
        let what = path
            .split('?')
            .next()
            .unwrap_or_default()
            .rsplit('/')
            .next()
            .unwrap_or_default();
        match what {
            "count" => text(200, self.count.get().to_string()),
            "config" => text(200, self.config.clone()),
            "echo" => {
                let mut body = format!("{}\n", request.method).into_bytes();
                body.extend_from_slice(&request.body);
                HttpResponse {
                    status: 200,
                    headers: vec![("x-probe".into(), "yes".into())],
                    body,
                }
            }
            "sleep" => {
                let ms = param(&path, "ms").unwrap_or(0);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                text(200, format!("slept {ms}"))
            }
            "call" => {
                // A handle to another deployment (`to`), with this request's
                // method, body and the path in `path` (no `&` in it).
                let to = query(&path, "to").unwrap_or_default();
                let target = query(&path, "path").unwrap_or_else(|| "/".into());
                let sent = ferray_sdk::serve::HttpRequest {
                    method: request.method.clone(),
                    path: target,
                    headers: Vec::new(),
                    body: request.body.clone(),
                };
                match ferray_sdk::serve::handle(&to).call(&sent) {
                    Ok(r) => text(
                        200,
                        format!(
                            "{to} said {}: {}",
                            r.status,
                            String::from_utf8_lossy(&r.body)
                        ),
                    ),
                    Err(e) => text(502, format!("calling {to} failed: {e}")),
                }
            }
            "crash" => panic!("the replica was asked to crash"),
            "status" => {
                let code = param(&path, "code").unwrap_or(200);
                text(u16::try_from(code).unwrap_or(u16::MAX), "as asked".into())
            }
            "badheader" => HttpResponse {
                status: 200,
                headers: vec![("bad header\n".into(), "x".into())],
                body: Vec::new(),
            },
            "batches" => text(200, format!("{:?}", self.batches.borrow())),
            // The names of the headers it got, one per line.
            "headers" => text(
                200,
                request
                    .headers
                    .iter()
                    .map(|(name, _)| name.to_ascii_lowercase())
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            other => text(404, format!("no probe named {other:?}")),
        }
    }

    fn handle_batch(&self, requests: Vec<HttpRequest>) -> Vec<HttpResponse> {
        let n = requests.len();
        self.batches.borrow_mut().push(n);
        requests
            .into_iter()
            .map(|r| {
                let mut response = self.handle(r);
                response
                    .headers
                    .push(("x-batch-size".into(), n.to_string()));
                response
            })
            .collect()
    }
}

impl Guest for Component {
    type Replica = Replica;
}

export!(Component);
