//! The HTTPS listener's TLS (A.12): a `rustls::ServerConfig` built from `tls_pem`, the TLS
//! versions, `cipher_suites` and `client_cert_validation`, held in a [`ServerTlsConfig`] that
//! a SIGHUP can swap (new handshakes get the new certificates, open connections keep theirs).
//!
//! Certificates are chosen by SNI as Go's `tls.Config` does after `BuildNameToCertificate`:
//! an exact name (subject CN or a DNS SAN) first, then the name with its first label replaced
//! by `*`, else the first `tls_pem` entry. Names come from x509-parser because rustls-webpki
//! only checks a name against a certificate and cannot list the names a certificate holds.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::Engine;
use http::HeaderValue;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use super::{ciphers, roots, CertKeyPair, TlsError};
use crate::config::{ClientCertValidation, Config, FrontendTls};

/// The names Go's `BuildNameToCertificate` files a certificate under: its subject common name
/// and its DNS subject alternative names, lowercased. Empty for a certificate that does not
/// parse (the config loader has already refused those).
pub fn certificate_names(der: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    if let Some(cn) = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
    {
        if !cn.is_empty() {
            names.push(cn.to_ascii_lowercase());
        }
    }
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    names
}

/// Picks the certificate for a handshake by SNI (see the module docs).
#[derive(Debug)]
pub struct SniResolver {
    certs: Vec<Arc<CertifiedKey>>,
    /// Name (exact or `*.rest`) -> index into `certs`; a later certificate wins a name, as in
    /// Go's map.
    by_name: HashMap<String, usize>,
}

impl SniResolver {
    /// `certs` must not be empty (the config requires at least one `tls_pem` entry).
    pub fn new(certs: &[CertKeyPair]) -> Self {
        let mut by_name = HashMap::new();
        for (i, pair) in certs.iter().enumerate() {
            for name in certificate_names(pair.leaf()) {
                by_name.insert(name, i);
            }
        }
        Self {
            certs: certs.iter().map(CertKeyPair::certified_key).collect(),
            by_name,
        }
    }

    /// The index of the certificate for `server_name` (SNI), if any name matches.
    fn lookup(&self, server_name: &str) -> Option<usize> {
        let name = server_name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(&i) = self.by_name.get(&name) {
            return Some(i);
        }
        let (_, rest) = name.split_once('.')?;
        self.by_name.get(&format!("*.{rest}")).copied()
    }

    /// The certificate `server_name` gets; `None` asks for the default.
    pub fn select(&self, server_name: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        if self.certs.len() == 1 {
            return self.certs.first();
        }
        server_name
            .and_then(|n| self.lookup(n))
            .and_then(|i| self.certs.get(i))
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(cert) = self.select(hello.server_name()) {
            return Some(cert.clone());
        }
        // No name matched: without SNI Go takes the first certificate the client can verify
        // (its key type among the client's signature schemes); with an unmatched SNI the first.
        if hello.server_name().is_none() {
            let schemes = hello.signature_schemes();
            if let Some(cert) = self
                .certs
                .iter()
                .find(|c| c.key.choose_scheme(schemes).is_some())
            {
                return Some(cert.clone());
            }
        }
        self.certs.first().cloned()
    }
}

/// ALPN for a TLS listener: `h2` then `http/1.1` with `enable_http2`; without it no ALPN at
/// all, as upstream (Go sets `NextProtos` only for HTTP/2), so a client offering only `h2`
/// still completes the handshake and is then refused in HTTP terms, not with a TLS alert.
pub fn alpn_protocols(enable_http2: bool) -> Vec<Vec<u8>> {
    if enable_http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        Vec::new()
    }
}

/// The HTTPS listener's rustls config for `tls` (see the module docs). Session resumption is
/// on: rustls's in-memory session cache plus a ticketer whose keys rotate (ring's default).
pub fn build_server_config(
    tls: &FrontendTls,
    enable_http2: bool,
) -> Result<ServerConfig, TlsError> {
    let provider = super::provider(Some(&tls.cipher_suites));
    let versions = ciphers::protocol_versions(tls.min_version, tls.max_version);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|source| TlsError::Rustls {
            context:
                "min_tls_version, max_tls_version and cipher_suites leave nothing to negotiate",
            source,
        })?;
    let builder = match tls.client_cert_validation {
        ClientCertValidation::None => builder.with_no_client_auth(),
        validation => {
            let store = roots::root_store(
                !tls.only_trust_client_ca_certs,
                &[("client_ca_certs".to_string(), tls.client_ca_certs.clone())],
            )?;
            if store.is_empty() {
                return Err(TlsError::Verifier(
                    "no CA to verify client certificates against: set client_ca_certs (the system has no trusted roots)".into(),
                ));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider);
            // Go's VerifyClientCertIfGiven: no certificate is fine, an unverifiable one is not.
            let verifier = if validation == ClientCertValidation::Request {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Verifier(format!("client certificate verifier: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SniResolver::new(&tls.certificates)));
    config.alpn_protocols = alpn_protocols(enable_http2);
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|source| TlsError::Rustls {
        context: "session ticket keys",
        source,
    })?;
    Ok(config)
}

/// The HTTPS listener's current rustls config. Handshakes take [`load`](Self::load) when they
/// start, so [`reload_from`](Self::reload_from) affects only connections accepted afterwards.
#[derive(Debug)]
pub struct ServerTlsConfig {
    current: ArcSwap<ServerConfig>,
}

impl ServerTlsConfig {
    /// The listener's config, `None` when `enable_ssl` is off.
    pub fn new(config: &Config) -> Result<Option<Self>, TlsError> {
        match &config.frontend_tls {
            None => Ok(None),
            Some(tls) => Ok(Some(Self::from_settings(tls, config.enable_http2)?)),
        }
    }

    pub fn from_settings(tls: &FrontendTls, enable_http2: bool) -> Result<Self, TlsError> {
        Ok(Self {
            current: ArcSwap::from_pointee(build_server_config(tls, enable_http2)?),
        })
    }

    /// The config for a handshake starting now.
    pub fn load(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// A tokio-rustls acceptor with the current config.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.load())
    }

    /// Rebuilds from `config` and swaps it in; on error the current config stays.
    pub fn reload_from(&self, config: &Config) -> Result<(), TlsError> {
        let tls = config.frontend_tls.as_ref().ok_or_else(|| {
            TlsError::Reload(
                "enable_ssl is off in the new config: the HTTPS listener keeps its certificates until the router restarts".into(),
            )
        })?;
        let next = build_server_config(tls, config.enable_http2)?;
        self.current.store(Arc::new(next));
        Ok(())
    }

    /// What SIGHUP does: reads the config file again, rebuilds and swaps. Returns the new
    /// config; on any error (unreadable file, invalid config, unusable certificates) the
    /// listener keeps its current certificates and the error says why.
    pub fn reload_from_file(&self, path: &Path) -> Result<Config, TlsError> {
        let config = Config::load(path)?;
        self.reload_from(&config)?;
        Ok(config)
    }
}

/// `X-Forwarded-Client-Cert` for `sanitize_set` (A.9): the leaf certificate's DER in standard
/// base64, i.e. its PEM body without the BEGIN/END lines and newlines.
pub fn xfcc_value(leaf: &CertificateDer<'_>) -> HeaderValue {
    let encoded = base64::engine::general_purpose::STANDARD.encode(leaf.as_ref());
    // Base64 is always a valid header value.
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The client's leaf certificate on a server connection, if it presented one.
pub fn peer_leaf(conn: &rustls::ServerConnection) -> Option<&CertificateDer<'static>> {
    conn.peer_certificates().and_then(|c| c.first())
}

#[cfg(test)]
mod tests;
