//! A node's TLS set-up for `ferray start`: the head's CA and node
//! certificate in `$FERRAY_HOME/tls`, a worker's certificate, or the
//! operator's own files (`--tls-cert`, `--tls-key`, `--tls-ca`).

use anyhow::{Result, bail};

use crate::cluster::{StartArgs, TlsArgs, private_dir, read_text, write_private};

/// This process speaks TLS on every cluster connection, trusting `ca`.
pub(crate) fn install_tls(
    ca: String,
    identity: Option<ferray::cluster::tls::CertKey>,
) -> Result<()> {
    ferray::cluster::tls::install(ferray::cluster::tls::Tls {
        ca,
        identity,
        everywhere: true,
    })?;
    Ok(())
}

/// The names a node's certificate is good for.
fn node_names(ip: std::net::IpAddr) -> Vec<String> {
    let mut names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    if !ip.is_unspecified() {
        names.push(ip.to_string());
    }
    names
}

/// The operator's certificate and key, if given.
fn given_identity(t: &TlsArgs) -> Result<Option<ferray::cluster::tls::CertKey>> {
    match (&t.tls_cert, &t.tls_key) {
        (Some(c), Some(k)) => Ok(Some(ferray::cluster::tls::CertKey {
            cert: read_text(c, "the certificate")?,
            key: read_text(k, "the key")?,
        })),
        _ => Ok(None),
    }
}

/// Whether a node's flags ask for TLS: `--tls`, TLS files, or an address
/// other than loopback without `--insecure`.
fn tls_asked(args: &StartArgs) -> bool {
    let t = &args.tls;
    t.tls
        || t.tls_cert.is_some()
        || t.tls_ca.is_some()
        || (!args.node_ip_address.is_loopback() && !t.insecure)
}

/// A head's TLS: off on loopback (unless --tls or TLS files), on elsewhere
/// (unless --insecure). Without the operator's files, the CA in
/// `$FERRAY_HOME/tls` (made once, kept) signs a fresh node certificate.
/// Returns whether TLS is on.
pub(crate) fn head_tls(args: &StartArgs) -> Result<bool> {
    let t = &args.tls;
    if !tls_asked(args) {
        return Ok(false);
    }
    let dir = ferray::cluster::tls_dir();
    private_dir(&dir)?;
    if let Some(id) = given_identity(t)? {
        let Some(ca) = &t.tls_ca else {
            bail!(
                "--tls-cert needs --tls-ca, the CA that signed it (this node's own worker checks the head against it)"
            );
        };
        let ca = read_text(ca, "the CA")?;
        // Clients and workers on this machine find the CA beside the token.
        write_private(&dir.join("ca.pem"), &ca)?;
        let _ = std::fs::remove_file(dir.join("ca.key"));
        install_tls(ca, Some(id))?;
        return Ok(true);
    }
    if t.tls_ca.is_some() {
        bail!("--tls-ca on a head goes with --tls-cert and --tls-key (its own certificate)");
    }
    let (ca_pem, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let ca = match (
        std::fs::read_to_string(&ca_pem),
        std::fs::read_to_string(&ca_key),
    ) {
        (Ok(cert), Ok(key)) => ferray::cluster::tls::CertKey { cert, key },
        _ => {
            let ca = ferray::cluster::tls::make_ca()?;
            write_private(&ca_key, &ca.key)?;
            write_private(&ca_pem, &ca.cert)?;
            ca
        }
    };
    let node = ferray::cluster::tls::sign_node(&ca.key, &node_names(args.node_ip_address))?;
    write_private(&dir.join("node.key"), &node.key)?;
    write_private(&dir.join("node.pem"), &node.cert)?;
    install_tls(ca.cert, Some(node))?;
    Ok(true)
}

/// A worker's TLS: on when the head's address is https://, when given TLS
/// files or --tls, or when it listens elsewhere than loopback (unless
/// --insecure). Its certificate is the operator's, else one signed by the
/// CA the head wrote on this machine. Returns whether TLS is on.
pub(crate) fn worker_tls(args: &StartArgs, head: &str) -> Result<bool> {
    let t = &args.tls;
    if !head.starts_with("https://") && !tls_asked(args) {
        return Ok(false);
    }
    let dir = ferray::cluster::tls_dir();
    let (ca, local_ca) = match &t.tls_ca {
        Some(f) => (read_text(f, "the CA")?, false),
        None => (
            std::fs::read_to_string(dir.join("ca.pem")).map_err(|_| {
                anyhow::anyhow!(
                    "this worker speaks TLS and has no CA to check the head against: pass --tls-ca FILE (the head writes it to tls/ca.pem in its FERRAY_HOME), or --insecure for plaintext on a trusted network"
                )
            })?,
            true,
        ),
    };
    let id = match given_identity(t)? {
        Some(id) => id,
        None => {
            let key = if local_ca {
                std::fs::read_to_string(dir.join("ca.key")).ok()
            } else {
                None
            };
            let Some(key) = key else {
                bail!(
                    "a TLS worker serves objects with its own certificate: pass --tls-cert FILE and --tls-key FILE (signed by the cluster's CA), or start it on the head's machine"
                );
            };
            ferray::cluster::tls::sign_node(&key, &node_names(args.node_ip_address))?
        }
    };
    install_tls(ca, Some(id))?;
    Ok(true)
}
