//! Route services (A.10): the router's side of the protocol, independent of the request path.
//!
//! - [`signature`]: upstream's crypto for `X-CF-Proxy-Signature` / `X-CF-Proxy-Metadata`.
//! - [`RouteServices`]: the keys (derived once at start from `route_services_secret` and
//!   `route_services_secret_decrypt_only`), signing a first-pass request, validating one that
//!   comes back (current key, then the previous one; age within `route_services_timeout`), and
//!   the hairpinning allow-list.
//! - [`internal`]: the internal mutual-TLS server hairpinned route-service requests go to, with
//!   its certificates made at start.
//!
//! The proxy stage that applies all this to a request is `proxy::stages::route_service`.

pub mod internal;
pub mod signature;

use std::time::{Duration, SystemTime};

use http::HeaderName;

use crate::config::RouteServicesSettings;
use signature::{SignatureContents, SignatureError, SignatureKey, SignedHeaders};

pub static X_CF_FORWARDED_URL: HeaderName = HeaderName::from_static("x-cf-forwarded-url");
pub static X_CF_PROXY_SIGNATURE: HeaderName = HeaderName::from_static("x-cf-proxy-signature");
pub static X_CF_PROXY_METADATA: HeaderName = HeaderName::from_static("x-cf-proxy-metadata");

/// Why a request back from a route service was not let through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// Older than `route_services_timeout` (504).
    #[error("route service request expired")]
    Expired,
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

/// Route services as configured (present only when they are enabled).
#[derive(Debug)]
pub struct RouteServices {
    key: SignatureKey,
    previous_key: Option<SignatureKey>,
    timeout: Duration,
    recommend_https: bool,
    hairpinning: bool,
    /// Exact host names and, for `*.domain` entries, `.domain` suffixes.
    allowlist: Vec<String>,
    pub strict_signature_validation: bool,
    pub max_attempts: usize,
}

impl RouteServices {
    /// Derives the keys (PBKDF2: tens of milliseconds each, once at start).
    pub fn new(settings: &RouteServicesSettings) -> Self {
        Self {
            key: SignatureKey::derive(&settings.secret),
            previous_key: settings
                .secret_decrypt_only
                .as_deref()
                .map(SignatureKey::derive),
            timeout: settings.timeout,
            recommend_https: settings.recommend_https,
            hairpinning: settings.hairpinning,
            allowlist: settings
                .hairpinning_allowlist
                .iter()
                .map(|e| match e.strip_prefix('*') {
                    Some(suffix) => suffix.to_string(),
                    None => e.clone(),
                })
                .collect(),
            strict_signature_validation: settings.strict_signature_validation,
            max_attempts: settings.max_attempts.max(1),
        }
    }

    /// The URL a route service is told the client asked for: the recommended scheme, the
    /// request's host without its port, and the request target as sent.
    pub fn forwarded_url(&self, host: &str, request_target: &str) -> String {
        let scheme = if self.recommend_https {
            "https"
        } else {
            "http"
        };
        let host = host_without_port(host);
        let mut url = String::with_capacity(scheme.len() + 3 + host.len() + request_target.len());
        url.push_str(scheme);
        url.push_str("://");
        url.push_str(host);
        url.push_str(request_target);
        url
    }

    /// Signs a first-pass request's forwarded URL.
    pub fn sign(&self, forwarded_url: &str) -> SignedHeaders {
        self.key.sign(forwarded_url, SystemTime::now())
    }

    /// Opens and ages a signature: the current key first, then the decrypt-only one.
    pub fn validate(
        &self,
        signature: &str,
        metadata: &str,
        now: SystemTime,
    ) -> Result<SignatureContents, ValidationError> {
        let contents = match self.key.open(signature, metadata) {
            Ok(c) => c,
            Err(e) => match &self.previous_key {
                Some(previous) => {
                    tracing::debug!(
                        message =
                            "Decrypt-only secret used to validate route service signature header",
                        "proxy-route-service-current-key"
                    );
                    previous.open(signature, metadata).inspect_err(|e| {
                        tracing::error!(error = %e, "proxy-route-service-previous-key");
                    })?
                }
                None => {
                    tracing::error!(error = %e, "proxy-route-service-current-key");
                    return Err(e.into());
                }
            },
        };
        let age = now
            .duration_since(contents.requested_time)
            .unwrap_or(Duration::ZERO);
        if age > self.timeout {
            tracing::error!(
                error = "route service request expired",
                forwarded_url = %contents.forwarded_url,
                "proxy-route-service-timeout"
            );
            return Err(ValidationError::Expired);
        }
        Ok(contents)
    }

    /// Whether a route service that is the route `pool_host` in this router's table may be
    /// reached through the internal server: hairpinning on, and the allow-list empty or
    /// naming the host (exactly, or by a `*.domain` wildcard one label up).
    pub fn may_hairpin(&self, pool_host: &str) -> bool {
        if !self.hairpinning {
            return false;
        }
        if self.allowlist.is_empty() {
            return true;
        }
        let host = pool_host.to_ascii_lowercase();
        let stripped = match host.find('.') {
            Some(i) => &host[i..],
            None => host.as_str(),
        };
        self.allowlist
            .iter()
            .any(|e| *e == host || e.as_str() == stripped)
    }
}

/// `host` without a `:port` suffix (IPv6 literals keep their brackets).
pub fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rfind(':') {
        Some(i) => &host[..i],
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ciphers::TlsVersion;

    fn settings() -> RouteServicesSettings {
        RouteServicesSettings {
            secret: "current".into(),
            secret_decrypt_only: None,
            timeout: Duration::from_secs(60),
            recommend_https: true,
            hairpinning: true,
            hairpinning_allowlist: Vec::new(),
            internal_server_port: 0,
            max_attempts: 3,
            client_cert: None,
            strict_signature_validation: false,
            skip_ssl_validation: false,
            min_tls_version: TlsVersion::Tls12,
            max_tls_version: TlsVersion::Tls12,
        }
    }

    #[test]
    fn forwarded_url_takes_the_recommended_scheme_and_drops_the_port() {
        let mut s = settings();
        let rs = RouteServices::new(&s);
        assert_eq!(
            rs.forwarded_url("app.test:8080", "/a?b=1"),
            "https://app.test/a?b=1"
        );
        s.recommend_https = false;
        let rs = RouteServices::new(&s);
        assert_eq!(rs.forwarded_url("app.test", "/"), "http://app.test/");
    }

    #[test]
    fn a_signature_validates_within_the_timeout_only() {
        let rs = RouteServices::new(&settings());
        let h = rs.sign("https://app.test/");
        let now = SystemTime::now();
        assert_eq!(
            rs.validate(&h.signature, &h.metadata, now)
                .unwrap()
                .forwarded_url,
            "https://app.test/"
        );
        let later = now + Duration::from_secs(61);
        assert_eq!(
            rs.validate(&h.signature, &h.metadata, later),
            Err(ValidationError::Expired)
        );
    }

    #[test]
    fn the_decrypt_only_secret_still_validates_after_rotation() {
        let old = RouteServices::new(&settings());
        let h = old.sign("https://app.test/x");
        let mut rotated = settings();
        rotated.secret = "next".into();
        rotated.secret_decrypt_only = Some("current".into());
        let rs = RouteServices::new(&rotated);
        assert!(rs
            .validate(&h.signature, &h.metadata, SystemTime::now())
            .is_ok());
        rotated.secret_decrypt_only = None;
        let rs = RouteServices::new(&rotated);
        assert_eq!(
            rs.validate(&h.signature, &h.metadata, SystemTime::now()),
            Err(ValidationError::Signature(SignatureError::Authentication))
        );
    }

    #[test]
    fn hairpinning_follows_the_allowlist() {
        let mut s = settings();
        s.hairpinning_allowlist = vec!["*.apps.test".into(), "rs.other.test".into()];
        let rs = RouteServices::new(&s);
        assert!(rs.may_hairpin("rs.apps.test"));
        assert!(rs.may_hairpin("RS.Other.Test"));
        assert!(!rs.may_hairpin("deep.rs.apps.test"), "one label only");
        assert!(!rs.may_hairpin("rs.elsewhere.test"));
        s.hairpinning_allowlist.clear();
        assert!(RouteServices::new(&s).may_hairpin("anything.test"));
        s.hairpinning = false;
        assert!(!RouteServices::new(&s).may_hairpin("anything.test"));
    }

    #[test]
    fn host_without_port_keeps_ipv6_brackets() {
        assert_eq!(host_without_port("a.test:80"), "a.test");
        assert_eq!(host_without_port("a.test"), "a.test");
        assert_eq!(host_without_port("[::1]:8080"), "[::1]");
    }
}
