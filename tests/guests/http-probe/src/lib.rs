//! A `wasi:http/incoming-handler` for ferray serve's tests. The last segment
//! of the path (whatever the route prefix) picks what it does:
//!
//! - `echo`: the method, then the request body, back;
//! - `sleep?ms=N`: waits N ms (a WASI clock poll), answers `slept N`;
//! - `big?kib=N`: streams N KiB of `x`;
//! - `trap`: panics before answering; `spin`: loops forever;
//! - `noanswer`: returns without setting a response;
//! - `outgoing`: tries to send a request, answers what happened;
//! - `sandbox`: reports the environment variables and the files it sees;
//! - `count`: a counter in the instance's memory (1 in a fresh instance).

use std::io::{Read as _, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingRequest, OutgoingResponse, ResponseOutparam,
    Scheme,
};

wasip2::http::proxy::export!(Probe);

struct Probe;

static COUNT: AtomicU64 = AtomicU64::new(0);

fn param(path: &str, key: &str) -> Option<u64> {
    let (_, query) = path.split_once('?')?;
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

fn respond(out: ResponseOutparam, status: u16, chunks: impl Iterator<Item = Vec<u8>>) {
    let response = OutgoingResponse::new(Fields::new());
    response.set_status_code(status).expect("a valid status");
    let body = response.body().expect("the body, once");
    ResponseOutparam::set(out, Ok(response));
    {
        let mut stream = body.write().expect("the body's stream, once");
        for chunk in chunks {
            if stream.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = stream.flush();
    }
    let _ = OutgoingBody::finish(body, None);
}

fn text(out: ResponseOutparam, status: u16, text: String) {
    respond(out, status, std::iter::once(text.into_bytes()));
}

fn read_body(request: &IncomingRequest) -> Result<Vec<u8>, String> {
    let body = request.consume().map_err(|()| "no body".to_string())?;
    let mut bytes = Vec::new();
    {
        let mut stream = body.stream().map_err(|()| "no stream".to_string())?;
        stream
            .read_to_end(&mut bytes)
            .map_err(|e| format!("reading the body failed: {e}"))?;
    }
    Ok(bytes)
}

impl wasip2::exports::http::incoming_handler::Guest for Probe {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let what = path
            .split('?')
            .next()
            .unwrap_or_default()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        match what.as_str() {
            "echo" => match read_body(&request) {
                Ok(body) => {
                    let method = format!("{:?}\n", request.method()).into_bytes();
                    respond(out, 200, [method, body].into_iter());
                }
                Err(e) => text(out, 413, e),
            },
            "sleep" => {
                let ms = param(&path, "ms").unwrap_or(0);
                wasip2::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                text(out, 200, format!("slept {ms}"));
            }
            "big" => {
                let kib = param(&path, "kib").unwrap_or(1);
                respond(out, 200, (0..kib).map(|_| vec![b'x'; 1024]));
            }
            "trap" => panic!("the probe was asked to trap"),
            "spin" => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "noanswer" => {}
            "outgoing" => {
                let req = OutgoingRequest::new(Fields::new());
                let _ = req.set_scheme(Some(&Scheme::Http));
                let _ = req.set_authority(Some("127.0.0.1:9"));
                let _ = req.set_path_with_query(Some("/"));
                let answer = match wasip2::http::outgoing_handler::handle(req, None) {
                    Err(e) => format!("refused: {e:?}"),
                    Ok(future) => {
                        future.subscribe().block();
                        match future.get() {
                            Some(Ok(Err(e))) => format!("refused: {e:?}"),
                            Some(Ok(Ok(_))) => "sent".to_string(),
                            other => format!("other: {other:?}"),
                        }
                    }
                };
                text(out, 200, answer);
            }
            "sandbox" => {
                let vars = std::env::vars().count();
                let files = std::fs::read_dir("/").map(|d| d.count()).ok();
                text(out, 200, format!("vars={vars} files={files:?}"));
            }
            "count" => {
                let n = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
                text(out, 200, n.to_string());
            }
            _ => text(out, 404, format!("no probe named {what:?}")),
        }
    }
}
