//! The `/health` listener over TLS (`status.tls`, A.12): upstream serves it with the status
//! certificate and the HTTPS listener's `cipher_suites` and TLS versions, no client
//! certificates. ALPN offers `http/1.1` only because the status server speaks HTTP/1.1
//! (upstream's Go server also offers `h2` with `enable_http2`).

use std::sync::Arc;

use rustls::ServerConfig;

use super::{ciphers, TlsError, TlsVersion};
use crate::config::{Config, StatusTls};

/// The status listener's rustls config; the versions and cipher suites are the HTTPS
/// listener's when `enable_ssl` configured them, else TLS 1.2-1.3 with rustls's suites.
pub fn status_server_config(
    config: &Config,
    tls: &StatusTls,
) -> Result<Arc<ServerConfig>, TlsError> {
    let (min, max, suites) = match &config.frontend_tls {
        Some(f) => (
            f.min_version,
            f.max_version,
            Some(f.cipher_suites.as_slice()),
        ),
        None => (TlsVersion::Tls12, TlsVersion::Tls13, None),
    };
    let versions = ciphers::protocol_versions(min, max);
    let mut server = ServerConfig::builder_with_provider(super::provider(suites))
        .with_protocol_versions(&versions)
        .map_err(|source| TlsError::Rustls {
            context: "status.tls: TLS versions and cipher_suites leave nothing to negotiate",
            source,
        })?
        .with_no_client_auth()
        .with_single_cert(
            tls.certificate.chain().to_vec(),
            tls.certificate.private_key(),
        )
        .map_err(|source| TlsError::Rustls {
            context: "status.tls certificate/key",
            source,
        })?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}
