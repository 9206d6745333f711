//! TLS to backends (A.11): the client configs the proxy dials TLS endpoints with, the
//! handshake, and what a failed handshake means (A.5, A.6).
//!
//! Trust is the system roots plus `ca_certs`; `backends.cert_chain`/`private_key` is
//! presented when a backend asks; `cipher_suites` applies when `enable_ssl` parsed it (as
//! upstream's transport gets `c.CipherSuites`, which exists only then). No version pinning:
//! Go's defaults, TLS 1.2 and 1.3. The TLS server name is the endpoint's
//! `server_cert_domain_san` ([`server_name`]).
//!
//! Two configs differ only in ALPN, as Go's transports do: HTTP/1.1 endpoints send no ALPN
//! (Go's HTTP/1 transport sends none, so a backend offering only `h2` still talks HTTP/1.1
//! to us), `protocol: http2` endpoints offer `h2, http/1.1` (Go's `ForceAttemptHTTP2`); use
//! HTTP/2 only when [`negotiated_h2`] says the backend picked it.
//!
//! A handshake failure becomes a [`BackendTlsError`] whose text is what Go's crypto/tls and
//! crypto/x509 print for the same failure (it goes into `X-Cf-Routererror: endpoint_failure
//! (<text>)`), with upstream's status, retry and pruning rules.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use rustls::pki_types::ServerName;
use rustls::{AlertDescription, CertificateError, ClientConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;

use super::ciphers::TlsVersion;
use super::{roots, TlsError};
use crate::config::{BackendTls, Config, RouteServicesSettings};

/// The two backend client configs (see the module docs).
#[derive(Debug, Clone)]
pub struct BackendTlsConfigs {
    http1: Arc<ClientConfig>,
    h2: Arc<ClientConfig>,
}

impl BackendTlsConfigs {
    pub fn new(config: &Config) -> Result<Self, TlsError> {
        Self::from_settings(&config.backend_tls)
    }

    pub fn from_settings(tls: &BackendTls) -> Result<Self, TlsError> {
        Ok(Self {
            http1: Arc::new(build_client_config(tls, Vec::new())?),
            h2: Arc::new(build_client_config(
                tls,
                vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            )?),
        })
    }

    /// For HTTP/1.1 endpoints: no ALPN.
    pub fn http1(&self) -> Arc<ClientConfig> {
        self.http1.clone()
    }

    /// For `protocol: http2` endpoints: ALPN `h2, http/1.1`.
    pub fn h2(&self) -> Arc<ClientConfig> {
        self.h2.clone()
    }

    /// One config for every connection (route services: HTTP/1.1 only, as upstream's
    /// route-service transport).
    pub fn single(config: Arc<ClientConfig>) -> Self {
        Self {
            http1: config.clone(),
            h2: config,
        }
    }

    pub fn for_protocol(&self, http2: bool) -> Arc<ClientConfig> {
        if http2 {
            self.h2()
        } else {
            self.http1()
        }
    }
}

/// One backend client config with ALPN `alpn`.
pub fn build_client_config(tls: &BackendTls, alpn: Vec<Vec<u8>>) -> Result<ClientConfig, TlsError> {
    let provider = super::provider(tls.cipher_suites.as_deref());
    let store = roots::root_store(true, &[("ca_certs".to_string(), tls.ca_certs.clone())])?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            context: "cipher_suites leave nothing to negotiate with backends",
            source,
        })?
        .with_root_certificates(store);
    let mut config = match &tls.client_cert {
        Some(pair) => builder
            .with_client_auth_cert(pair.chain().to_vec(), pair.private_key())
            .map_err(|source| TlsError::Rustls {
                context: "backends.cert_chain / backends.private_key",
                source,
            })?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn;
    Ok(config)
}

/// The client config for route services (A.10): trust as for backends (system roots and
/// `ca_certs`) unless `skip_ssl_validation`, `route_services.cert_chain`/`private_key` presented
/// when asked, `cipher_suites` as for backends, and upstream's `min_tls_version` /
/// `max_tls_version` (TLS 1.2 only by default). No ALPN: HTTP/1.1.
pub fn route_service_client_config(
    rs: &RouteServicesSettings,
    backend: &BackendTls,
) -> Result<ClientConfig, TlsError> {
    let provider = super::provider(backend.cipher_suites.as_deref());
    let versions: &[&'static rustls::SupportedProtocolVersion] =
        match (rs.min_tls_version, rs.max_tls_version) {
            (_, TlsVersion::Tls12) => &[&rustls::version::TLS12],
            (TlsVersion::Tls13, _) => &[&rustls::version::TLS13],
            _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
        };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|source| TlsError::Rustls {
            context: "cipher_suites leave nothing to negotiate with route services",
            source,
        })?;
    let builder = if rs.skip_ssl_validation {
        builder
            .dangerous()
            .with_custom_certificate_verifier(routing_api_client::tls::no_verification(provider))
    } else {
        let store = roots::root_store(true, &[("ca_certs".to_string(), backend.ca_certs.clone())])?;
        builder.with_root_certificates(store)
    };
    match &rs.client_cert {
        Some(pair) => builder
            .with_client_auth_cert(pair.chain().to_vec(), pair.private_key())
            .map_err(|source| TlsError::Rustls {
                context: "route_services.cert_chain / route_services.private_key",
                source,
            }),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The name a TLS endpoint's certificate must hold: its `server_cert_domain_san`, or (as Go's
/// transport does when `ServerName` is empty) the host it is dialed at.
pub fn server_name(
    server_cert_domain_san: &str,
    host: &str,
) -> Result<ServerName<'static>, BackendTlsError> {
    let name = if server_cert_domain_san.is_empty() {
        host
    } else {
        server_cert_domain_san
    };
    ServerName::try_from(name.to_string()).map_err(|_| BackendTlsError {
        kind: BackendTlsErrorKind::HostnameMismatch,
        message: format!("x509: {name:?} is not a valid host name to verify a certificate for"),
    })
}

/// Whether the backend agreed to HTTP/2 (ALPN `h2`).
pub fn negotiated_h2<IO>(stream: &TlsStream<IO>) -> bool {
    stream.get_ref().1.alpn_protocol() == Some(b"h2")
}

/// TLS handshake over an established connection, bounded by `timeout`
/// (`tls_handshake_timeout`); failures are classified.
pub async fn handshake<IO>(
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    io: IO,
    timeout: Duration,
) -> Result<TlsStream<IO>, BackendTlsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let connector = tokio_rustls::TlsConnector::from(config);
    match tokio::time::timeout(timeout, connector.connect(server_name, io)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(err)) => Err(BackendTlsError::classify(&err)),
        Err(_) => Err(BackendTlsError::timeout()),
    }
}

/// The failure classes upstream's error handler and retry logic tell apart (A.5, A.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendTlsErrorKind {
    /// The backend answered with something that is not TLS (a plain HTTP server on the TLS
    /// port): Go's `tls.RecordHeaderError`. 525.
    NotTls,
    /// The certificate does not hold the expected name (Diego's instance-identity check):
    /// `x509.HostnameError`. 503.
    HostnameMismatch,
    /// The certificate does not verify: unknown issuer, expired, bad signature... 526.
    Untrusted,
    /// The backend refused our client certificate: alerts bad_certificate, unknown_ca,
    /// certificate_required. 496.
    ClientCertRejected,
    /// The backend sent a handshake_failure alert (e.g. no cipher suite in common). 525.
    HandshakeFailure,
    /// No handshake within `tls_handshake_timeout`. 502.
    Timeout,
    /// Anything else (connection reset, EOF, other alerts). 502.
    Other,
}

/// A classified backend TLS failure; its `Display` is Go's text for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BackendTlsError {
    kind: BackendTlsErrorKind,
    message: String,
}

/// Go's `alert.String()` texts (crypto/tls/alert.go).
fn go_alert_text(alert: AlertDescription) -> String {
    use AlertDescription as A;
    let text = match alert {
        A::CloseNotify => "close notify",
        A::UnexpectedMessage => "unexpected message",
        A::BadRecordMac => "bad record MAC",
        A::DecryptionFailed => "decryption failed",
        A::RecordOverflow => "record overflow",
        A::DecompressionFailure => "decompression failure",
        A::HandshakeFailure => "handshake failure",
        A::BadCertificate => "bad certificate",
        A::UnsupportedCertificate => "unsupported certificate",
        A::CertificateRevoked => "revoked certificate",
        A::CertificateExpired => "expired certificate",
        A::CertificateUnknown => "unknown certificate",
        A::IllegalParameter => "illegal parameter",
        A::UnknownCA => "unknown certificate authority",
        A::AccessDenied => "access denied",
        A::DecodeError => "error decoding message",
        A::DecryptError => "error decrypting message",
        A::ProtocolVersion => "protocol version not supported",
        A::InsufficientSecurity => "insufficient security level",
        A::InternalError => "internal error",
        A::InappropriateFallback => "inappropriate fallback",
        A::UserCanceled => "user canceled",
        A::NoRenegotiation => "no renegotiation",
        A::MissingExtension => "missing extension",
        A::UnsupportedExtension => "unsupported extension",
        A::UnrecognisedName => "unrecognized name",
        A::BadCertificateStatusResponse => "bad certificate status response",
        A::UnknownPSKIdentity => "unknown PSK identity",
        A::CertificateRequired => "certificate required",
        A::NoApplicationProtocol => "no application protocol",
        A::EncryptedClientHelloRequired => "encrypted client hello required",
        other => return format!("alert({})", u8::from(other)),
    };
    text.to_string()
}

/// Go's `x509.HostnameError` text from what rustls reports.
fn hostname_error_text(expected: &str, presented: &[String]) -> String {
    // rustls-webpki formats names as `DnsName("a.example")` and `IpAddress(10.0.0.1)`.
    let is_ip = expected.parse::<std::net::IpAddr>().is_ok();
    let names: Vec<&str> = presented
        .iter()
        .filter_map(|p| {
            if let Some(dns) = p
                .strip_prefix("DnsName(\"")
                .and_then(|r| r.strip_suffix("\")"))
            {
                (!is_ip).then_some(dns)
            } else if let Some(ip) = p
                .strip_prefix("IpAddress(")
                .and_then(|r| r.strip_suffix(')'))
            {
                is_ip.then_some(ip)
            } else {
                None
            }
        })
        .collect();
    if names.is_empty() {
        if is_ip {
            return format!("x509: cannot validate certificate for {expected} because it doesn't contain any IP SANs");
        }
        return format!(
            "x509: certificate is not valid for any names, but wanted to match {expected}"
        );
    }
    format!(
        "x509: certificate is valid for {}, not {expected}",
        names.join(", ")
    )
}

fn server_name_text(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

const VERIFY: &str = "tls: failed to verify certificate: ";

impl BackendTlsError {
    /// Classifies an error from a TLS connection to a backend: the handshake
    /// (`TlsConnector::connect`), or a later read, where TLS 1.3 reports a rejected client
    /// certificate (the server checks it after the client's handshake has finished).
    pub fn classify(err: &io::Error) -> Self {
        if let Some(tls) = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            return Self::from_rustls(tls);
        }
        let (kind, message) = match err.kind() {
            io::ErrorKind::UnexpectedEof => (BackendTlsErrorKind::Other, "EOF".to_string()),
            io::ErrorKind::TimedOut => (
                BackendTlsErrorKind::Timeout,
                "net/http: TLS handshake timeout".to_string(),
            ),
            io::ErrorKind::ConnectionReset => (
                BackendTlsErrorKind::Other,
                "read: connection reset by peer".to_string(),
            ),
            _ => (BackendTlsErrorKind::Other, err.to_string()),
        };
        Self { kind, message }
    }

    /// Classifies a rustls error.
    pub fn from_rustls(err: &rustls::Error) -> Self {
        use rustls::Error as E;
        use rustls::InvalidMessage as M;
        use BackendTlsErrorKind as K;
        let (kind, message) = match err {
            E::InvalidMessage(
                M::InvalidContentType | M::UnknownProtocolVersion | M::MessageTooLarge,
            ) => (
                K::NotTls,
                "tls: first record does not look like a TLS handshake".to_string(),
            ),
            E::InvalidCertificate(CertificateError::NotValidForName) => (
                K::HostnameMismatch,
                format!("{VERIFY}x509: certificate is not valid for the requested name"),
            ),
            E::InvalidCertificate(CertificateError::NotValidForNameContext {
                expected,
                presented,
            }) => (
                K::HostnameMismatch,
                format!(
                    "{VERIFY}{}",
                    hostname_error_text(&server_name_text(expected), presented)
                ),
            ),
            E::InvalidCertificate(cert) => (K::Untrusted, format!("{VERIFY}{}", x509_text(cert))),
            E::AlertReceived(alert) => {
                let kind = match alert {
                    AlertDescription::BadCertificate
                    | AlertDescription::UnknownCA
                    | AlertDescription::CertificateRequired => K::ClientCertRejected,
                    AlertDescription::HandshakeFailure => K::HandshakeFailure,
                    _ => K::Other,
                };
                (
                    kind,
                    format!("remote error: tls: {}", go_alert_text(*alert)),
                )
            }
            other => (K::Other, format!("tls: {other}")),
        };
        Self { kind, message }
    }

    /// No handshake within `tls_handshake_timeout` (Go's "net/http: TLS handshake timeout").
    pub fn timeout() -> Self {
        Self {
            kind: BackendTlsErrorKind::Timeout,
            message: "net/http: TLS handshake timeout".into(),
        }
    }

    pub fn kind(&self) -> BackendTlsErrorKind {
        self.kind
    }

    /// Go's error text, for `X-Cf-Routererror: endpoint_failure (<text>)` and the logs.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The response status when this is the request's final error (A.5).
    pub fn status(&self) -> StatusCode {
        let code = match self.kind {
            BackendTlsErrorKind::NotTls | BackendTlsErrorKind::HandshakeFailure => 525,
            BackendTlsErrorKind::HostnameMismatch => 503,
            BackendTlsErrorKind::Untrusted => 526,
            BackendTlsErrorKind::ClientCertRejected => 496,
            BackendTlsErrorKind::Timeout | BackendTlsErrorKind::Other => 502,
        };
        StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY)
    }

    /// The response body's message (upstream's constants; `http.Error` adds the newline).
    pub fn body_message(&self) -> &'static str {
        match self.kind {
            BackendTlsErrorKind::NotTls | BackendTlsErrorKind::HandshakeFailure => {
                "525 SSL Handshake Failed"
            }
            BackendTlsErrorKind::HostnameMismatch => "503 Service Unavailable",
            BackendTlsErrorKind::Untrusted => "526 Invalid SSL Certificate",
            BackendTlsErrorKind::ClientCertRejected => "496 SSL Certificate Required",
            BackendTlsErrorKind::Timeout | BackendTlsErrorKind::Other => {
                "502 Bad Gateway: Registered endpoint failed to handle the request."
            }
        }
    }

    /// Whether the next endpoint may be tried: every TLS class and the timeout are in
    /// upstream's retriable classifiers. `Other` is retriable only when the request had not
    /// been written yet (upstream's "incomplete request"), which the caller knows.
    pub fn is_retriable(&self) -> bool {
        self.kind != BackendTlsErrorKind::Other
    }

    /// Whether the endpoint is marked failed (skipped for a while): the same classes.
    pub fn marks_endpoint_failed(&self) -> bool {
        self.kind != BackendTlsErrorKind::Other
    }

    /// Whether a TLS endpoint is removed from its pool at once: the same classes (upstream's
    /// prunable classifiers, applied to TLS endpoints only).
    pub fn prunes_endpoint(&self) -> bool {
        self.kind != BackendTlsErrorKind::Other
    }
}

/// Go's x509 text for a verification failure other than a name mismatch.
fn x509_text(err: &CertificateError) -> String {
    match err {
        CertificateError::UnknownIssuer => "x509: certificate signed by unknown authority".into(),
        CertificateError::Expired
        | CertificateError::ExpiredContext { .. }
        | CertificateError::NotValidYet
        | CertificateError::NotValidYetContext { .. } => {
            "x509: certificate has expired or is not yet valid".into()
        }
        CertificateError::BadSignature => {
            "x509: certificate signed by unknown authority (possibly because of \"crypto/rsa: verification error\" while trying to verify candidate authority certificate)".into()
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "x509: certificate specifies an incompatible key usage".into()
        }
        other => format!("x509: {other:?}"),
    }
}

#[cfg(test)]
mod tests;
