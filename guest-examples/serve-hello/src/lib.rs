//! An HTTP handler: the standard `wasi:http/incoming-handler` export, so the
//! same component runs under `ferray serve`, `wasmtime serve` and Spin.
//!
//! `GET /...?name=Ada` answers `Hello, Ada!`; a `POST` body is the name;
//! without one it greets the world. Every answer says which path it got.

use std::io::{Read as _, Write as _};

use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Hello);

struct Hello;

/// The longest name read from a body.
const MAX_NAME: usize = 1024;

fn query_name(path_with_query: &str) -> Option<String> {
    let (_, query) = path_with_query.split_once('?')?;
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "name")
        .map(|(_, v)| v.replace('+', " "))
}

fn body_name(request: &IncomingRequest) -> Option<String> {
    let body = request.consume().ok()?;
    let mut bytes = Vec::new();
    {
        let stream = body.stream().ok()?;
        let mut limited = stream.take(MAX_NAME as u64);
        limited.read_to_end(&mut bytes).ok()?;
    }
    let name = String::from_utf8_lossy(&bytes).trim().to_string();
    (!name.is_empty()).then_some(name)
}

fn respond(out: ResponseOutparam, status: u16, text: &str) {
    let headers = Fields::from_list(&[(
        "content-type".to_string(),
        b"text/plain; charset=utf-8".to_vec(),
    )])
    .expect("a valid header");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("a valid status");
    let body = response.body().expect("the body, once");
    ResponseOutparam::set(out, Ok(response));
    {
        let mut stream = body.write().expect("the body's stream, once");
        // A client that went away is not this handler's failure.
        let _ = stream.write_all(text.as_bytes());
        let _ = stream.flush();
    }
    let _ = OutgoingBody::finish(body, None);
}

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_else(|| "/".into());
        let name = match request.method() {
            Method::Get | Method::Head => query_name(&path),
            Method::Post | Method::Put => body_name(&request),
            _ => {
                respond(out, 405, "use GET or POST\n");
                return;
            }
        };
        let name = name.unwrap_or_else(|| "world".into());
        respond(out, 200, &format!("Hello, {name}! (path {path})\n"));
    }
}
