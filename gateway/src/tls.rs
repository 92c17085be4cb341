//! The rustls set-up every TLS connection shares. Outgoing (MQTT broker,
//! webhooks, InfluxDB): system roots, an optional extra CA, an optional
//! client certificate. Incoming (the HTTPS API): a server configuration
//! (TLS 1.2 and 1.3, HTTP/1.1 by ALPN) from the PEM files named in `[api]`.
//! One crypto provider (ring), installed at start.

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use std::io::BufReader;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use serde::Deserialize;
use std::path::PathBuf;

/// Client TLS settings (`[sources.mqtt.tls]`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file of extra CA certificates (in addition to the system roots).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain (mutual TLS).
    pub client_cert: Option<PathBuf>,
    /// PEM client private key.
    pub client_key: Option<PathBuf>,
    /// Server name to verify (default: host).
    pub server_name: Option<String>,
}

/// TLS set-up failures.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The PEM file.
        path: String,
        /// The read that failed.
        source: std::io::Error,
    },
    /// A PEM file held nothing usable.
    #[error("{path}: {what}")]
    Pem {
        /// file
        path: String,
        /// what was wrong
        what: String,
    },
    /// rustls refused the configuration.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file = std::fs::File::open(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Read {
            path: path.display().to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.display().to_string(),
            what: "no certificate found".into(),
        });
    }
    Ok(certs)
}

pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let file = std::fs::File::open(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(|source| TlsError::Read {
            path: path.display().to_string(),
            source,
        })?
        .ok_or_else(|| TlsError::Pem {
            path: path.display().to_string(),
            what: "no private key found".into(),
        })
}

/// Installs the ring crypto provider once per process (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The system's trusted roots, read once per process and shared: every
/// outbound client (webhooks, InfluxDB, the hub, the EHR, a TLS broker)
/// starts from them, and each reading parses every certificate of the
/// system's store (about 150, some 200 KB held).
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            Arc::new(roots)
        })
        .clone()
}

/// Builds a client configuration from settings.
pub fn client_tls_config(s: &TlsSettings) -> Result<Arc<ClientConfig>, TlsError> {
    install_crypto_provider();
    let roots = match &s.ca_file {
        None => system_roots(),
        Some(ca) => {
            let mut roots = RootCertStore::clone(&system_roots());
            for cert in read_certs(ca)? {
                roots.add(cert)?;
            }
            Arc::new(roots)
        }
    };
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let config = match (&s.client_cert, &s.client_key) {
        (Some(cert), Some(key)) => {
            builder.with_client_auth_cert(read_certs(cert)?, read_key(key)?)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The HTTPS API's acceptor, from a certificate chain and its key.
pub fn acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(read_certs(cert)?, read_key(key)?)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
