//! Talking to UAA: where it is ([`UaaConfig`], upstream's `oauth.*` keys; plain `http://` only
//! with `oauth.allow_plain_http`), the HTTPS client with its trust roots and deadlines, and the
//! discovery and verification-key documents (`/.well-known/openid-configuration`,
//! `/token_key`, `/token_keys`) turned into keys for [`super::TokenValidator`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::header::ACCEPT;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use jsonwebtoken::DecodingKey;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPublicKey};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tracing::{debug, warn};

use super::{AuthError, KeySet, VerificationKey, MAX_BODY, UAA_HTTP_TIMEOUT};

/// Where UAA is and how to trust it: upstream's `oauth.token_endpoint`, `oauth.port`,
/// `oauth.ca_certs` (a file path) and `skip_ssl_validation`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UaaConfig {
    /// Host name (`uaa.service.cf.internal`, then `https://` is assumed) or URL with scheme
    /// (`https://uaa.example.com`; `http://` is accepted with a warning).
    pub token_endpoint: String,
    /// Appended as `:<port>` when > 0; 0 means the scheme's default; -1 is rejected (upstream:
    /// TLS is required to talk to UAA).
    pub port: i32,
    /// PEM file of CA certificates trusted for UAA's certificate, replacing the default roots.
    pub ca_certs_path: Option<PathBuf>,
    /// Accept any certificate from UAA.
    pub skip_ssl_validation: bool,
    /// Accept an `http://` endpoint (`oauth.allow_plain_http`): the token keys are then not
    /// protected by TLS.
    pub allow_plain_http: bool,
}

impl UaaConfig {
    /// The base URL of UAA: scheme, host and port, no trailing slash.
    pub fn base_url(&self) -> Result<String, AuthError> {
        let endpoint = self.token_endpoint.trim().trim_end_matches('/');
        if endpoint.is_empty() {
            return Err(AuthError::Config(
                "oauth.token_endpoint is required when authentication is enabled".to_string(),
            ));
        }
        if self.port == -1 {
            return Err(AuthError::Config(format!(
                "oauth.port -1 is not supported: routing-api requires TLS to get UAA's token \
                 keys (token endpoint {endpoint})"
            )));
        }
        if !(0..=65535).contains(&self.port) {
            return Err(AuthError::Config(format!(
                "oauth.port {} is not a valid port",
                self.port
            )));
        }
        let with_scheme = if endpoint.contains("://") {
            endpoint.to_string()
        } else {
            format!("https://{endpoint}")
        };
        let url = if self.port > 0 {
            format!("{with_scheme}:{}", self.port)
        } else {
            with_scheme
        };
        let uri: Uri = url
            .parse()
            .map_err(|e| AuthError::Config(format!("invalid UAA URL {url:?}: {e}")))?;
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if self.allow_plain_http => warn!(
                uaa = %url,
                "UAA is reached over plain http: token keys are not protected by TLS \
                 (acceptable for local development and tests only)"
            ),
            Some("http") => {
                return Err(AuthError::Config(format!(
                    "UAA URL {url:?} is plain http: token keys would not be protected by TLS \
                     (use https, or set oauth.allow_plain_http for local development)"
                )))
            }
            other => {
                return Err(AuthError::Config(format!(
                    "invalid UAA URL {url:?}: scheme {:?} is not http(s)",
                    other.unwrap_or("")
                )))
            }
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(AuthError::Config(format!(
                "invalid UAA URL {url:?}: no host"
            )));
        }
        Ok(url)
    }
}

#[derive(Deserialize)]
pub(super) struct OpenIdConfiguration {
    #[serde(default)]
    pub(super) issuer: Option<String>,
}

/// `GET /token_key`, and each entry of `GET /token_keys`.
#[derive(Deserialize)]
struct TokenKey {
    #[serde(default)]
    kty: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    usage: Option<String>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

#[derive(Deserialize)]
struct TokenKeys {
    #[serde(default)]
    keys: Vec<TokenKey>,
}

/// A key from `/token_key`: `value` must be a PEM RSA public key (upstream requires PEM).
fn key_from_pem(entry: &TokenKey) -> Result<VerificationKey, String> {
    let pem = entry.value.as_deref().unwrap_or_default().trim();
    if !pem.starts_with("-----BEGIN") {
        return Err("Public uaa token must be PEM encoded".to_string());
    }
    let public = RsaPublicKey::from_public_key_pem(pem)
        .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem))
        .map_err(|e| format!("UAA token key is not an RSA public key: {e}"))?;
    Ok(verification_key(entry.kid.clone(), &public))
}

/// A key from a JWKS entry: `n`/`e` when present, else the PEM `value`.
fn key_from_jwk(entry: &TokenKey) -> Result<VerificationKey, String> {
    if let Some(kty) = &entry.kty {
        if kty != "RSA" {
            return Err(format!("key type {kty} is not RSA"));
        }
    }
    if let Some(usage) = &entry.usage {
        if usage != "sig" {
            return Err(format!("key use {usage} is not sig"));
        }
    }
    match (&entry.n, &entry.e) {
        (Some(n), Some(e)) => {
            let n = URL_SAFE_NO_PAD
                .decode(n.trim_end_matches('='))
                .map_err(|err| format!("invalid modulus: {err}"))?;
            let e = URL_SAFE_NO_PAD
                .decode(e.trim_end_matches('='))
                .map_err(|err| format!("invalid exponent: {err}"))?;
            let public = RsaPublicKey::new(BigUint::from_bytes_be(&n), BigUint::from_bytes_be(&e))
                .map_err(|err| format!("invalid RSA public key: {err}"))?;
            Ok(verification_key(entry.kid.clone(), &public))
        }
        _ => key_from_pem(entry),
    }
}

fn verification_key(kid: Option<String>, public: &RsaPublicKey) -> VerificationKey {
    let n = public.n().to_bytes_be();
    let e = public.e().to_bytes_be();
    VerificationKey {
        kid,
        key: DecodingKey::from_rsa_raw_components(&n, &e),
        n,
        e,
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The HTTP(S) client for UAA.
pub(super) struct UaaHttp {
    pub(super) base: String,
    client: HttpsClient,
}

impl UaaHttp {
    pub(super) fn new(config: &UaaConfig) -> Result<Self, AuthError> {
        let base = config.base_url()?;
        let tls = tls_config(config)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(UAA_HTTP_TIMEOUT));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self { base, client })
    }

    /// `GET <base><path>`, expecting 200 and a JSON body, within [`UAA_HTTP_TIMEOUT`].
    pub(super) async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        let url = format!("{}{path}", self.base);
        let request = async {
            let uri: Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
            let req = Request::get(uri)
                .header(ACCEPT, "application/json")
                .body(Empty::<Bytes>::new())
                .map_err(|e| format!("building request: {e}"))?;
            let resp = self.client.request(req).await.map_err(|e| {
                // The legacy client's error hides its cause in the source chain.
                let mut msg = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    msg.push_str(": ");
                    msg.push_str(&s.to_string());
                    source = s.source();
                }
                msg
            })?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| format!("reading body: {e}"))?
                .to_bytes();
            if status != StatusCode::OK {
                let text = String::from_utf8_lossy(&body);
                let text: String = text.chars().take(200).collect();
                return Err(format!("status {status}: {text}"));
            }
            serde_json::from_slice(&body).map_err(|e| format!("invalid JSON: {e}"))
        };
        match tokio::time::timeout(UAA_HTTP_TIMEOUT, request).await {
            Ok(result) => result.map_err(|e| format!("GET {url}: {e}")),
            Err(_) => Err(format!(
                "GET {url}: no answer within {}s",
                UAA_HTTP_TIMEOUT.as_secs()
            )),
        }
    }

    async fn fetch_token_key(&self) -> Result<KeySet, String> {
        let entry: TokenKey = self.get_json("/token_key").await?;
        let key = key_from_pem(&entry).map_err(|e| format!("GET {}/token_key: {e}", self.base))?;
        Ok(KeySet { keys: vec![key] })
    }

    async fn fetch_token_keys(&self) -> Result<KeySet, String> {
        let set: TokenKeys = self.get_json("/token_keys").await?;
        let mut keys = Vec::new();
        let mut problems = Vec::new();
        for entry in &set.keys {
            match key_from_jwk(entry) {
                Ok(k) => keys.push(k),
                Err(e) => problems.push(format!(
                    "{}: {e}",
                    entry.kid.as_deref().unwrap_or("(no kid)")
                )),
            }
        }
        if keys.is_empty() {
            return Err(format!(
                "GET {}/token_keys: no usable RSA key ({})",
                self.base,
                if problems.is_empty() {
                    "empty key set".to_string()
                } else {
                    problems.join("; ")
                }
            ));
        }
        for p in problems {
            debug!(problem = %p, "skipped a UAA JWKS entry");
        }
        Ok(KeySet { keys })
    }

    /// `/token_key`, falling back to `/token_keys`; the other way round with `prefer_jwks`
    /// (a token named a key id `/token_key` did not give).
    pub(super) async fn fetch_keys(&self, prefer_jwks: bool) -> Result<KeySet, String> {
        let first = if prefer_jwks {
            self.fetch_token_keys().await
        } else {
            self.fetch_token_key().await
        };
        let e1 = match first {
            Ok(keys) => return Ok(keys),
            Err(e) => e,
        };
        debug!(error = %e1, "first UAA key endpoint failed, trying the other");
        let second = if prefer_jwks {
            self.fetch_token_key().await
        } else {
            self.fetch_token_keys().await
        };
        second.map_err(|e2| format!("{e1}; {e2}"))
    }
}

/// rustls client configuration (ring provider) for UAA.
fn tls_config(config: &UaaConfig) -> Result<rustls::ClientConfig, AuthError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| AuthError::Config(format!("TLS setup: {e}")))?;
    if config.skip_ssl_validation {
        warn!("skip_ssl_validation: UAA's certificate is not verified");
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(routing_api_client::tls::no_verification(provider))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    match &config.ca_certs_path {
        Some(path) => {
            use rustls::pki_types::pem::PemObject;
            use rustls::pki_types::CertificateDer;
            let pem = std::fs::read(path).map_err(|e| {
                AuthError::Config(format!(
                    "Failed to read ca cert file {}: {e}",
                    path.display()
                ))
            })?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    AuthError::Config(format!(
                        "Unable to load caCert from {}: {e}",
                        path.display()
                    ))
                })?;
                roots.add(cert).map_err(|e| {
                    AuthError::Config(format!(
                        "Unable to load caCert from {}: {e}",
                        path.display()
                    ))
                })?;
            }
            if roots.is_empty() {
                return Err(AuthError::Config(format!(
                    "Unable to load caCert: no certificate in {}",
                    path.display()
                )));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}
