//! TLS material of the router (A.9, A.11, A.12): certificates and keys read from the config's
//! inline PEM, the HTTPS listener's `rustls::ServerConfig` (certificate by SNI, client
//! certificates, reloadable on SIGHUP), the client configs for TLS backends, the `/health`
//! listener's TLS config, and what a failed backend handshake means for the response
//! (status, `X-Cf-Routererror` text, retry and pruning).
//!
//! Everything uses rustls with the `ring` provider. rustls speaks TLS 1.2 and 1.3 only, so
//! upstream's `TLSv1.0`/`TLSv1.1` minimums are read as TLS 1.2 (with a config warning).
//!
//! - [`pem`]: PEM parsing with errors naming the config key, [`pem::CertKeyPair`].
//! - [`ciphers`]: `cipher_suites` names (OpenSSL and Go) and TLS versions -> rustls.
//! - [`server`]: the frontend [`server::ServerTlsConfig`] (SNI resolver, client-cert
//!   verification, ALPN, session resumption, reload) and [`server::xfcc_value`].
//! - [`backend`]: [`backend::BackendTlsConfigs`] (HTTP/1.1 and h2 client configs), the
//!   handshake helper and the classification of handshake failures
//!   ([`backend::BackendTlsError`]).
//! - [`status`]: the `status.tls` listener's server config.
//! - [`nats`]: the NATS client's mutual TLS config.
//! - [`roots`]: trust stores (system roots plus configured CAs).

pub mod backend;
pub mod ciphers;
pub mod nats;
pub mod pem;
pub mod roots;
pub mod server;
pub mod status;
#[cfg(test)]
pub(crate) mod test_pki;

use std::sync::Arc;

pub use backend::{BackendTlsConfigs, BackendTlsError, BackendTlsErrorKind};
pub use ciphers::TlsVersion;
pub use pem::CertKeyPair;
pub use server::{xfcc_value, ServerTlsConfig};

/// Why TLS material could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM value in the config is unusable; `key` is the config key (`tls_pem[0].cert_chain`).
    #[error("config key `{key}`: {message}")]
    Pem { key: String, message: String },
    /// rustls refused the material (e.g. no protocol version usable with the cipher suites).
    #[error("{context}: {source}")]
    Rustls {
        context: &'static str,
        #[source]
        source: rustls::Error,
    },
    /// The client-certificate verifier could not be built (e.g. no CA to trust).
    #[error("{0}")]
    Verifier(String),
    /// Reloading: the config file could not be read or is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Reloading: the new config turned the listener off, which needs a restart.
    #[error("{0}")]
    Reload(String),
}

/// The crypto provider every TLS config of the router uses: `ring`, with the TLS 1.2 cipher
/// suites narrowed to `tls12_suites` when given (TLS 1.3 suites are always on, as in Go).
pub fn provider(
    tls12_suites: Option<&[rustls::SupportedCipherSuite]>,
) -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(chosen) = tls12_suites {
        provider.cipher_suites = ciphers::with_tls13(chosen);
    }
    Arc::new(provider)
}
