//! The NATS client's TLS (`nats.tls_enabled`): as upstream's mbus client builds it with
//! `tlsconfig.WithInternalServiceDefaults()`, trusting only `nats.ca_certs` and presenting
//! `nats.cert_chain` / `nats.private_key`; TLS 1.2 and 1.3.

use std::sync::Arc;

use rustls::ClientConfig;

use super::{roots, TlsError};
use crate::config::NatsTls;

/// The rustls config the NATS connection upgrades to TLS with (the server names in
/// `nats.hosts` must be in the servers' certificates).
pub fn nats_client_config(tls: &NatsTls) -> Result<ClientConfig, TlsError> {
    let store = roots::root_store(
        false,
        &[("nats.ca_certs".to_string(), tls.ca_certs.clone())],
    )?;
    ClientConfig::builder_with_provider(super::provider(None))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|source| TlsError::Rustls {
            context: "NATS TLS versions",
            source,
        })?
        .with_root_certificates(Arc::new(store))
        .with_client_auth_cert(
            tls.client_cert.chain().to_vec(),
            tls.client_cert.private_key(),
        )
        .map_err(|source| TlsError::Rustls {
            context: "nats.cert_chain / nats.private_key",
            source,
        })
}
