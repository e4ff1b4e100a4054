//! TLS on the cluster's connections (rustls through tonic): certificates
//! of a cluster's CA and its nodes (rcgen), the process's TLS settings, and
//! the checks behind the clear errors of a client that does not trust a
//! node or speaks plaintext to a TLS one.
//!
//! A process holds one setting ([`install`]): a node (`ferray start` with
//! TLS) speaks TLS on every connection it makes and serves with its
//! certificate; a client only trusts a CA. Without a setting, a connection
//! is TLS when its address says `https://`, checked against the CA of
//! `$FERRAY_TLS_CA`, else the one the head wrote on this machine.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use ferray_core::Error;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
pub use tokio_rustls::TlsAcceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// A certificate and its private key, PEM.
#[derive(Clone)]
pub struct CertKey {
    pub cert: String,
    pub key: String,
}

impl std::fmt::Debug for CertKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertKey(..)")
    }
}

/// A process's TLS setting.
#[derive(Clone, Debug)]
pub struct Tls {
    /// The CA (PEM) the peers' certificates are checked against.
    pub ca: String,
    /// This node's certificate: its servers speak TLS with it.
    pub identity: Option<CertKey>,
    /// Every connection is TLS, whatever its address says (a node of a TLS
    /// cluster); otherwise only `https://` addresses.
    pub everywhere: bool,
}

/// The setting, and for a process that speaks TLS everywhere without a
/// certificate of its own, one it made for its own servers (signed by a CA
/// of its own, trusted by itself only).
struct Setting {
    tls: Tls,
    own: Option<(String, CertKey)>,
}

static SETTING: OnceLock<Setting> = OnceLock::new();

/// Set this process's TLS (once; a second call is an error). A node's
/// identity is checked here, so that its servers can be built later. A
/// process that speaks TLS everywhere without a certificate (a client)
/// serves with one of its own, which only it trusts.
pub fn install(tls: Tls) -> Result<(), Error> {
    if let Some(id) = &tls.identity {
        tonic::transport::Server::builder()
            .tls_config(server_config(id))
            .map_err(|e| {
                Error::InvalidArgument(format!("the node's certificate or key is unusable: {e}"))
            })?;
    }
    if !tls.ca.contains("-----BEGIN CERTIFICATE-----") {
        return Err(Error::InvalidArgument(
            "the CA file holds no PEM certificate".into(),
        ));
    }
    let own = if tls.everywhere && tls.identity.is_none() {
        let ca = make_ca()?;
        let id = sign_node(&ca.key, &["127.0.0.1".into(), "localhost".into()])?;
        Some((ca.cert, id))
    } else {
        None
    };
    SETTING
        .set(Setting { tls, own })
        .map_err(|_| Error::System("this process's TLS is already set".into()))
}

/// This process's TLS setting, if any.
pub fn installed() -> Option<&'static Tls> {
    SETTING.get().map(|s| &s.tls)
}

/// A TLS acceptor for an HTTP/1.1 port (the dashboard, a node's metrics,
/// serve proxies) with a node's certificate and key (PEM).
pub fn https_acceptor(id: &CertKey) -> Result<TlsAcceptor, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let bad = |e: &dyn std::fmt::Display| {
        Error::InvalidArgument(format!(
            "this node's certificate or key is unusable for HTTPS: {e}"
        ))
    };
    let certs = CertificateDer::pem_slice_iter(id.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    let key = PrivateKeyDer::from_pem_slice(id.key.as_bytes()).map_err(|e| bad(&e))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(std::sync::Arc::new(config)))
}

fn server_config(id: &CertKey) -> ServerTlsConfig {
    ServerTlsConfig::new()
        .identity(Identity::from_pem(&id.cert, &id.key))
        .timeout(Duration::from_secs(10))
}

/// The server TLS of this process's servers, when it speaks TLS.
pub(crate) fn server_tls() -> Option<ServerTlsConfig> {
    let s = SETTING.get()?;
    let id = s
        .tls
        .identity
        .as_ref()
        .or(s.own.as_ref().map(|(_, id)| id))?;
    Some(server_config(id))
}

/// Where a client looks for the CA when none is set: `$FERRAY_TLS_CA`,
/// else `tls/ca.pem` in `$FERRAY_HOME` (default `~/.ferray`), which the
/// head writes.
pub fn default_ca_file() -> PathBuf {
    if let Some(f) = std::env::var_os("FERRAY_TLS_CA") {
        return PathBuf::from(f);
    }
    let home = match std::env::var_os("FERRAY_HOME") {
        Some(d) => PathBuf::from(d),
        None => match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(".ferray"),
            None => std::env::temp_dir().join("ferray"),
        },
    };
    home.join("tls").join("ca.pem")
}

/// The client TLS for a connection to `addr`, or `None` for plaintext.
pub(crate) fn client_tls(addr: &str, host: &str) -> Result<Option<ClientTlsConfig>, Error> {
    let https = addr.starts_with("https://");
    let mut cas = Vec::new();
    match SETTING.get() {
        Some(s) if s.tls.everywhere || https => {
            cas.push(Certificate::from_pem(&s.tls.ca));
            if let Some((own_ca, _)) = &s.own {
                cas.push(Certificate::from_pem(own_ca));
            }
        }
        _ if !https => return Ok(None),
        _ => {
            let f = default_ca_file();
            let ca = std::fs::read_to_string(&f).map_err(|e| {
                Error::InvalidArgument(format!(
                    "`{addr}` speaks TLS but there is no CA to check it against ({}: {e}): pass --tls-ca FILE (or set FERRAY_TLS_CA) with the cluster's CA",
                    f.display()
                ))
            })?;
            cas.push(Certificate::from_pem(ca));
        }
    }
    Ok(Some(
        ClientTlsConfig::new()
            .ca_certificates(cas)
            .domain_name(host.trim_start_matches('[').trim_end_matches(']'))
            .assume_http2(true)
            .timeout(Duration::from_secs(10)),
    ))
}

/// Why a TLS connection to `addr` failed, in one line, when it is a
/// certificate the client does not trust.
pub(crate) fn explain_handshake(addr: &str, chain: &str) -> Option<String> {
    if chain.contains("invalid peer certificate") || chain.contains("UnknownIssuer") {
        Some(format!(
            "cannot reach {addr}: its TLS certificate is not signed by the CA this client trusts ({}); pass --tls-ca FILE with the cluster's CA (the head writes it to tls/ca.pem in its FERRAY_HOME)",
            chain.rsplit(": ").next().unwrap_or("untrusted certificate")
        ))
    } else {
        None
    }
}

/// Whether the server at `addr` (`host:port`) answers plaintext HTTP/2 with
/// a TLS alert: it speaks TLS.
pub async fn speaks_tls(addr: &str) -> bool {
    let host = addr
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(host).await.ok()?;
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .ok()?;
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).await.ok()?;
        // A TLS record: alert (21) or handshake (22), version 3.x.
        Some((buf[0] == 21 || buf[0] == 22) && buf[1] == 3)
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(3), probe).await,
        Ok(Some(true))
    )
}

// ----- certificates -----

/// A CA's parameters; its name comes from its key, so that two clusters'
/// CAs never share one and a node's certificate can be signed again from
/// the key alone.
fn ca_params(key: &KeyPair) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    let tag = blake3::hash(key.der_bytes()).to_hex();
    dn.push(
        DnType::CommonName,
        format!("ferray cluster CA {}", &tag.as_str()[..16]),
    );
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

fn cert_error(e: rcgen::Error) -> Error {
    Error::System(format!("cannot make a certificate: {e}"))
}

/// A fresh CA for a cluster.
pub fn make_ca() -> Result<CertKey, Error> {
    let key = KeyPair::generate().map_err(cert_error)?;
    let cert = ca_params(&key).self_signed(&key).map_err(cert_error)?;
    Ok(CertKey {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A node certificate for `names` (IP addresses or DNS names), signed by a
/// CA that [`make_ca`] made (`ca_key` is its key).
pub fn sign_node(ca_key: &str, names: &[String]) -> Result<CertKey, Error> {
    let ca_key = KeyPair::from_pem(ca_key)
        .map_err(|e| Error::InvalidArgument(format!("the CA's key is unusable: {e}")))?;
    let issuer = Issuer::new(ca_params(&ca_key), ca_key);
    let mut names = names.to_vec();
    names.sort();
    names.dedup();
    let mut p = CertificateParams::new(names).map_err(cert_error)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "ferray node");
    p.distinguished_name = dn;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().map_err(cert_error)?;
    let cert = p.signed_by(&key, &issuer).map_err(cert_error)?;
    Ok(CertKey {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}
