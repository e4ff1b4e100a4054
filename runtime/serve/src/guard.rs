//! Who may use a proxy's port: on a cluster, as its other ports (the
//! dashboard, a node's metrics), TLS with the node's certificate when the
//! cluster speaks TLS, and the cluster token as `Authorization: Bearer
//! TOKEN` unless the application is `http.public`. `/-/healthz` answers
//! without the token (a load balancer's probe), never over plaintext on a
//! TLS cluster. `ferray serve run` (one machine) has neither.

use ferray::cluster::Token;
use ferray::cluster::tls::{CertKey, TlsAcceptor};
use http::{HeaderValue, Request, StatusCode, header};

use crate::ServeError;
use crate::proxy::{Answer, text};

/// A proxy's TLS and token.
#[derive(Clone, Default)]
pub struct Guard {
    tls: Option<TlsAcceptor>,
    token: Option<Token>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("tls", &self.tls.is_some())
            .field("token", &self.token.is_some())
            .finish()
    }
}

impl Guard {
    /// No TLS, no token (one machine's `serve run`).
    pub fn open() -> Guard {
        Guard::default()
    }

    /// As a cluster node's ports: TLS with `tls` (the node's certificate)
    /// when given, and `token`.
    pub fn cluster(token: Token, tls: Option<&CertKey>) -> Result<Guard, ServeError> {
        let tls = tls
            .map(ferray::cluster::tls::https_acceptor)
            .transpose()
            .map_err(|e| ServeError::Http(e.to_string()))?;
        Ok(Guard {
            tls,
            token: Some(token),
        })
    }

    /// As this process's cluster setting: the certificate it installed
    /// (`ferray start` with TLS), and `token`.
    pub fn this_node(token: Token) -> Result<Guard, ServeError> {
        let id = ferray::cluster::tls::installed().and_then(|t| t.identity.as_ref());
        Guard::cluster(token, id)
    }

    /// For an application: without the token when it is public.
    pub(crate) fn for_app(&self, public: bool) -> Guard {
        Guard {
            tls: self.tls.clone(),
            token: if public { None } else { self.token.clone() },
        }
    }

    pub(crate) fn tls(&self) -> Option<&TlsAcceptor> {
        self.tls.as_ref()
    }

    /// The URL of a proxy listening at `addr` with this guard.
    pub(crate) fn url(&self, addr: std::net::SocketAddr) -> String {
        format!(
            "{}://{addr}",
            if self.tls.is_some() { "https" } else { "http" }
        )
    }

    /// The answer to a request this guard refuses (401), if it does. A
    /// request it lets by loses the token's header: the guest never sees
    /// the cluster's secret.
    pub(crate) fn refuses<B>(&self, req: &mut Request<B>) -> Option<Answer> {
        let token = self.token.as_ref()?;
        let sent = req
            .headers()
            .get(header::AUTHORIZATION)
            .is_some_and(|h| token.admits(h.as_bytes()));
        if sent {
            req.headers_mut().remove(header::AUTHORIZATION);
            return None;
        }
        if req.uri().path() == "/-/healthz" {
            return None;
        }
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            "no or wrong cluster token: send `Authorization: Bearer TOKEN` with the cluster's \
             token (or deploy the application with `http.public = true`)\n"
                .into(),
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Some(r)
    }
}
