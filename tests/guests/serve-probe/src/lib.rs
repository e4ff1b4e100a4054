//! A stateful ferray serve replica (`ferray:runtime/serve`) for the tests.
//! The last segment of the path picks what it does:
//!
//! - `count`: the requests this instance has answered (its state);
//! - `config`: the `user_config` it was made with;
//! - `echo`: the method and body back, with an `x-probe` header;
//! - `sleep?ms=N`: sleeps, then answers `slept N`;
//! - `crash`: panics (the replica restarts);
//! - `status?code=N`: answers with status N, even an invalid one;
//! - `badheader`: answers a header name the proxy must refuse.
//!
//! A batch answers each request as alone, with `x-batch-size` set.

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
    let (_, query) = path.split_once('?')?;
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
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
