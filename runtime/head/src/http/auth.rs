//! Who may use the dashboard port: a request that carries the cluster
//! token, as `Authorization: Bearer TOKEN`, or a browser's session cookie.
//! A browser gets the cookie by giving the token once to the login page
//! (`POST /login`, a form: the token is never in a URL); the cookie is a
//! random session id (not the token), `HttpOnly`, `SameSite=Strict` (so no
//! other site can make the browser act with it) and `Secure` over TLS, and
//! it lasts for the browser session, or until it has been idle for
//! [`SESSION_IDLE`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, Request, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use ferray_proto::Token;
use parking_lot::Mutex;
use serde::Deserialize;

use super::pages::login_page;

/// The session cookie's name.
pub const COOKIE: &str = "ferray_session";
/// Sessions kept at once; the one idle longest goes first.
const MAX_SESSIONS: usize = 1_024;
/// A session unused this long is forgotten.
pub const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);

pub(crate) struct Auth {
    token: Token,
    /// Cookies marked `Secure` (the port speaks TLS).
    secure: bool,
    /// Session id to its last use.
    sessions: Mutex<HashMap<String, Instant>>,
}

impl Auth {
    pub(crate) fn new(token: Token, secure: bool) -> Auth {
        Auth {
            token,
            secure,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `sent` is the token, compared in constant time.
    fn is_token(&self, sent: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        sent.ct_eq(self.token.as_str().as_bytes()).into()
    }

    fn bearer_ok(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .is_some_and(|h| self.token.admits(h.as_bytes()))
    }

    fn cookie_ok(&self, headers: &HeaderMap) -> bool {
        let Some(id) = session_cookie(headers) else {
            return false;
        };
        let now = Instant::now();
        let mut sessions = self.sessions.lock();
        match sessions.get_mut(&id) {
            Some(used) if now.duration_since(*used) < SESSION_IDLE => {
                *used = now;
                true
            }
            Some(_) => {
                sessions.remove(&id);
                false
            }
            None => false,
        }
    }

    /// A new session's id.
    fn open_session(&self) -> Option<String> {
        let id = Token::generate().ok()?.as_str().to_string();
        let now = Instant::now();
        let mut sessions = self.sessions.lock();
        sessions.retain(|_, used| now.duration_since(*used) < SESSION_IDLE);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, used)| **used)
                .map(|(id, _)| id.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(id.clone(), now);
        Some(id)
    }

    fn cookie(&self, id: &str) -> String {
        format!(
            "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{}",
            if self.secure { "; Secure" } else { "" }
        )
    }
}

/// The session id a request's cookies carry.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .map(str::to_string)
        .next()
}

/// Where a login may send the browser: a path of this site, else `/`.
fn safe_next(next: &str) -> &str {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && next.len() <= 2_048
        && !next.chars().any(|c| c.is_control());
    if ok { next } else { "/" }
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    #[serde(default)]
    next: String,
}

/// The body of a login form, at most.
const MAX_LOGIN_BODY: usize = 8 << 10;

async fn login(auth: &Auth, req: Request) -> Response {
    match *req.method() {
        Method::GET | Method::HEAD => {
            let q: LoginQuery = req
                .uri()
                .query()
                .and_then(|q| {
                    axum::extract::Query::<LoginQuery>::try_from_uri(
                        &format!("/login?{q}").parse().ok()?,
                    )
                    .ok()
                })
                .map(|q| q.0)
                .unwrap_or(LoginQuery { next: "/".into() });
            login_page(safe_next(&q.next), false).into_response()
        }
        Method::POST => {
            let (parts, body) = req.into_parts();
            let Ok(body) = axum::body::to_bytes(body, MAX_LOGIN_BODY).await else {
                return (StatusCode::PAYLOAD_TOO_LARGE, "a login is a token").into_response();
            };
            let req = Request::from_parts(parts, axum::body::Body::from(body));
            let form = match axum::Form::<LoginForm>::from_request(req, &()).await {
                Ok(f) => f.0,
                Err(e) => return (StatusCode::BAD_REQUEST, e.body_text()).into_response(),
            };
            let next = safe_next(&form.next);
            if !auth.is_token(form.token.trim().as_bytes()) {
                tracing::debug!("dashboard: a login with a wrong token");
                return (StatusCode::UNAUTHORIZED, login_page(next, true)).into_response();
            }
            let Some(id) = auth.open_session() else {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "no randomness for a session",
                )
                    .into_response();
            };
            let mut r = Redirect::to(next).into_response();
            if let Ok(v) = HeaderValue::from_str(&auth.cookie(&id)) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

/// The dashboard port's gate: the login page, or the token, or a session.
pub(crate) async fn check(AxState(auth): AxState<Arc<Auth>>, req: Request, next: Next) -> Response {
    let mut r = gate(&auth, req, next).await;
    // No other site may frame the dashboard (clickjacking).
    r.headers_mut()
        .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    r
}

async fn gate(auth: &Auth, req: Request, next: Next) -> Response {
    if req.uri().path() == "/login" {
        return login(auth, req).await;
    }
    if auth.bearer_ok(req.headers()) || auth.cookie_ok(req.headers()) {
        return next.run(req).await;
    }
    if req.method() == Method::GET && wants_html(req.headers()) {
        let here = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        return Redirect::to(&format!("/login?next={}", super::pages::urlencode(&here)))
            .into_response();
    }
    super::unauthorized()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_only_sends_the_browser_to_this_site() {
        assert_eq!(safe_next("/jobs/job-1?x=1"), "/jobs/job-1?x=1");
        for bad in [
            "//evil.example/",
            "/\\evil",
            "https://evil.example/",
            "",
            "jobs",
            "/a\nb",
        ] {
            assert_eq!(safe_next(bad), "/", "{bad:?}");
        }
    }

    #[test]
    fn sessions_are_random_bounded_and_idle_ones_expire() {
        let auth = Auth::new(Token::new("test-token").expect("a token"), true);
        let a = auth.open_session().expect("a session");
        let b = auth.open_session().expect("a session");
        assert_ne!(a, b);
        assert!(a.len() >= 32);
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; {COOKIE}={a}")).expect("a header"),
        );
        assert!(auth.cookie_ok(&h));
        assert!(auth.cookie(&a).contains("HttpOnly") && auth.cookie(&a).contains("Secure"));
        // An idle one is gone.
        if let Some(used) = auth.sessions.lock().get_mut(&a) {
            *used = Instant::now()
                .checked_sub(SESSION_IDLE + Duration::from_secs(1))
                .unwrap_or(*used);
        }
        assert!(!auth.cookie_ok(&h));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("ferray_session=forged"),
        );
        assert!(!auth.cookie_ok(&h));
        for _ in 0..MAX_SESSIONS + 10 {
            auth.open_session();
        }
        assert!(auth.sessions.lock().len() <= MAX_SESSIONS);
    }
}
