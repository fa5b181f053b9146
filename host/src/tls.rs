//! TLS for the admin API: the server's certificate and key from PEM files,
//! and the CLI's trust (the usual public roots, plus a CA of the operator's).
//! rustls on ring, as everything else in the host.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server speaking TLS 1.2 and 1.3 with the chain in `cert` and the key in
/// `key` (PEM); errors name the flag and the file.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("--admin-tls-cert: cannot read {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("--admin-tls-cert: {} is not PEM", cert.display()))?;
    if chain.is_empty() {
        bail!("--admin-tls-cert: {} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("--admin-tls-key: no private key in {}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("--admin-tls-cert and --admin-tls-key do not make a usable pair")?;
    Ok(Arc::new(config))
}

/// A client trusting the public roots and, with `ca`, the certificates in
/// that PEM file.
pub fn client_config(ca: Option<&Path>) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = ca {
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("--admin-ca-file: cannot read {}", ca.display()))?
        {
            let cert =
                cert.with_context(|| format!("--admin-ca-file: {} is not PEM", ca.display()))?;
            roots.add(cert).with_context(|| {
                format!(
                    "--admin-ca-file: a certificate in {} is unusable",
                    ca.display()
                )
            })?;
            added += 1;
        }
        if added == 0 {
            bail!("--admin-ca-file: {} holds no certificate", ca.display());
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
