//! TLS for TCP: rustls with the certificate and key the user gave.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::listen::TlsFiles;

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// the certificate file could not be read as PEM certificates
    #[error("cannot read certificates from {0:?}")]
    Cert(std::path::PathBuf, #[source] rustls::pki_types::pem::Error),
    /// the certificate file holds no certificate
    #[error("{0:?} holds no PEM certificate")]
    NoCert(std::path::PathBuf),
    /// the key file could not be read as a PEM private key
    #[error("cannot read a private key from {0:?}")]
    Key(std::path::PathBuf, #[source] rustls::pki_types::pem::Error),
    /// rustls refused the pair (e.g. the key does not match the certificate)
    #[error("cannot use this certificate and key")]
    Config(#[source] rustls::Error),
}

/// A TLS acceptor for `files`: TLS 1.2 and 1.3 (rustls's safe defaults), HTTP/1.1.
pub(crate) fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert(files.cert.clone(), e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCert(files.cert.clone()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| TlsError::Key(files.key.clone(), e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
