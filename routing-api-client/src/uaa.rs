//! OAuth2 client-credentials tokens from UAA, cached until shortly before they expire.
//!
//! `POST <url>/oauth/token` with the form `grant_type=client_credentials&client_id=<id>`,
//! HTTP basic auth `client_id:client_secret` (each form-urlencoded first, as RFC 6749 §2.3.1
//! and Go's `x/oauth2` do) and `Accept: application/json`; the answer
//! `{"access_token":…,"token_type":…,"expires_in":…}` is cached.
//!
//! A cached token is reused until `expires_in - expiration_buffer` (30 s by default) after it
//! was requested; tokens living no longer than twice the buffer are reused for half their
//! lifetime instead, so short-lived tokens are still cached but never used near expiry.
//! Concurrent callers share one fetch. Transport failures and 5xx answers are retried
//! `max_retries` times, `retry_interval` apart (tcp-router's defaults: 3 and 5 s); every HTTP
//! call has a deadline.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::Full;
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::tls::{TlsError, TlsOptions};
use crate::transport::{self, HttpClient, TraceFn, Tracer, TransportError, HIDDEN};

/// Where and how to fetch tokens.
#[derive(Debug, Clone)]
pub struct UaaConfig {
    /// UAA base URL, e.g. `https://uaa.service.cf.internal:8443`; `/oauth/token` is appended.
    pub url: String,
    pub client_id: String,
    pub client_secret: String,
    pub tls: TlsOptions,
    /// Deadline of one token request (connect + response).
    pub timeout: Duration,
    /// How long before expiry a token stops being handed out.
    pub expiration_buffer: Duration,
    /// Extra attempts after a transport error or a 5xx answer.
    pub max_retries: u32,
    pub retry_interval: Duration,
}

impl UaaConfig {
    /// Defaults: 10 s timeout, 30 s expiration buffer, 3 retries 5 s apart, system CAs.
    pub fn new(
        url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        UaaConfig {
            url: url.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            tls: TlsOptions::default(),
            timeout: Duration::from_secs(10),
            expiration_buffer: Duration::from_secs(30),
            max_retries: 3,
            retry_interval: Duration::from_secs(5),
        }
    }
}

/// An access token as UAA returned it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct Token {
    pub access_token: String,
    #[serde(default)]
    pub token_type: String,
    /// Lifetime in seconds (0 if UAA did not say; such tokens are not cached).
    #[serde(default)]
    pub expires_in: u64,
}

impl Token {
    /// The `Authorization` header value the Routing API expects: `bearer <token>`.
    pub fn authorization(&self) -> String {
        format!("bearer {}", self.access_token)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &HIDDEN)
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum UaaError {
    #[error("invalid UAA URL '{0}'")]
    InvalidUrl(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("UAA request failed: {0}")]
    Transport(#[from] TransportError),
    #[error("UAA answered {status}: {body}")]
    Status { status: StatusCode, body: String },
    #[error("invalid UAA token response: {0}")]
    Decode(String),
}

impl UaaError {
    fn retryable(&self) -> bool {
        match self {
            UaaError::Transport(_) => true,
            UaaError::Status { status, .. } => status.is_server_error(),
            _ => false,
        }
    }
}

/// Lifetimes beyond this (a year) are treated as this.
const MAX_LIFETIME: u64 = 365 * 24 * 3600;

/// When a token fetched at `fetched_at` and living `expires_in` seconds stops being used.
pub fn fresh_until(fetched_at: Instant, expires_in: u64, buffer: Duration) -> Instant {
    let lifetime = Duration::from_secs(expires_in.min(MAX_LIFETIME));
    let usable = if lifetime > buffer * 2 {
        lifetime - buffer
    } else {
        lifetime / 2
    };
    fetched_at.checked_add(usable).unwrap_or(fetched_at)
}

#[derive(Debug, Clone)]
struct Cached {
    token: Token,
    fresh_until: Instant,
}

impl Cached {
    fn is_fresh(&self, now: Instant) -> bool {
        now < self.fresh_until
    }
}

/// Fetches and caches client-credentials tokens; share it behind an `Arc`.
pub struct TokenFetcher {
    config: UaaConfig,
    token_url: http::Uri,
    http: HttpClient,
    cache: Mutex<Option<Cached>>,
    tracer: Tracer,
}

impl fmt::Debug for TokenFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenFetcher")
            .field("token_url", &self.token_url)
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

fn form_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Hides `access_token` (and `refresh_token`) in a traced UAA answer.
fn redact_token(body: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut map)) => {
            for key in ["access_token", "refresh_token"] {
                if let Some(v) = map.get_mut(key) {
                    *v = serde_json::Value::String(HIDDEN.into());
                }
            }
            serde_json::Value::Object(map).to_string()
        }
        _ => transport::plain(body),
    }
}

impl TokenFetcher {
    pub fn new(config: UaaConfig) -> Result<Self, UaaError> {
        let url = format!("{}/oauth/token", config.url.trim_end_matches('/'));
        let token_url: http::Uri = url
            .parse()
            .map_err(|_| UaaError::InvalidUrl(config.url.clone()))?;
        if !matches!(token_url.scheme_str(), Some("http" | "https"))
            || token_url.authority().is_none()
        {
            return Err(UaaError::InvalidUrl(config.url.clone()));
        }
        let http = transport::build_client(&config.tls, config.timeout)?;
        Ok(TokenFetcher {
            config,
            token_url,
            http,
            cache: Mutex::new(None),
            tracer: Tracer::default(),
        })
    }

    /// Sends a dump of every token request and response (secrets hidden) to `trace`.
    pub fn with_trace(mut self, trace: TraceFn) -> Self {
        self.tracer = Tracer(Some(trace));
        self
    }

    /// A token valid for a while yet: the cached one, or a freshly fetched one.
    pub async fn token(&self) -> Result<Token, UaaError> {
        let mut cache = self.cache.lock().await;
        if let Some(cached) = cache.as_ref().filter(|c| c.is_fresh(Instant::now())) {
            return Ok(cached.token.clone());
        }
        self.fetch_into(&mut cache).await
    }

    /// Fetches a new token whatever the cache holds.
    pub async fn refresh(&self) -> Result<Token, UaaError> {
        let mut cache = self.cache.lock().await;
        self.fetch_into(&mut cache).await
    }

    /// After the server rejected `rejected`: fetches a new token, unless another caller already
    /// replaced it (so a burst of 401s costs one fetch).
    pub async fn refresh_rejected(&self, rejected: &Token) -> Result<Token, UaaError> {
        let mut cache = self.cache.lock().await;
        if let Some(cached) = cache
            .as_ref()
            .filter(|c| c.token.access_token != rejected.access_token && c.is_fresh(Instant::now()))
        {
            return Ok(cached.token.clone());
        }
        self.fetch_into(&mut cache).await
    }

    async fn fetch_into(&self, cache: &mut Option<Cached>) -> Result<Token, UaaError> {
        *cache = None;
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            match self.fetch_once().await {
                Ok(token) => {
                    let until =
                        fresh_until(started, token.expires_in, self.config.expiration_buffer);
                    *cache = Some(Cached {
                        token: token.clone(),
                        fresh_until: until,
                    });
                    return Ok(token);
                }
                Err(e) if e.retryable() && attempt < self.config.max_retries => {
                    attempt += 1;
                    tokio::time::sleep(self.config.retry_interval).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn fetch_once(&self) -> Result<Token, UaaError> {
        let body = format!(
            "grant_type=client_credentials&client_id={}",
            form_encode(&self.config.client_id)
        );
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            form_encode(&self.config.client_id),
            form_encode(&self.config.client_secret)
        ));
        let req = Request::builder()
            .method(Method::POST)
            .uri(self.token_url.clone())
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::AUTHORIZATION, format!("Basic {basic}"))
            .body(Full::new(Bytes::from(body.clone())))
            .map_err(|e| UaaError::InvalidUrl(e.to_string()))?;
        let resp = transport::send(
            &self.http,
            req,
            body.as_bytes(),
            self.config.timeout,
            &self.tracer,
            redact_token,
        )
        .await?;
        if resp.status != StatusCode::OK {
            return Err(UaaError::Status {
                status: resp.status,
                body: String::from_utf8_lossy(&resp.body).trim().to_string(),
            });
        }
        let token: Token =
            serde_json::from_slice(&resp.body).map_err(|e| UaaError::Decode(e.to_string()))?;
        if token.access_token.is_empty() {
            return Err(UaaError::Decode("empty access_token".into()));
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_tokens_are_used_until_the_buffer() {
        let t0 = Instant::now();
        let buffer = Duration::from_secs(30);
        let until = fresh_until(t0, 3600, buffer);
        assert_eq!(until, t0 + Duration::from_secs(3570));
        let cached = Cached {
            token: Token {
                access_token: "a".into(),
                token_type: "bearer".into(),
                expires_in: 3600,
            },
            fresh_until: until,
        };
        assert!(cached.is_fresh(t0));
        assert!(cached.is_fresh(t0 + Duration::from_secs(3569)));
        assert!(!cached.is_fresh(t0 + Duration::from_secs(3570)));
        assert!(!cached.is_fresh(t0 + Duration::from_secs(4000)));
    }

    #[test]
    fn short_tokens_are_used_for_half_their_life() {
        let t0 = Instant::now();
        let buffer = Duration::from_secs(30);
        assert_eq!(fresh_until(t0, 60, buffer), t0 + Duration::from_secs(30));
        assert_eq!(fresh_until(t0, 10, buffer), t0 + Duration::from_secs(5));
        assert_eq!(fresh_until(t0, 1, buffer), t0 + Duration::from_millis(500));
        // 61 s > 2 × 30 s: the buffer applies.
        assert_eq!(fresh_until(t0, 61, buffer), t0 + Duration::from_secs(31));
        // Absurd lifetimes are capped rather than overflowing.
        assert_eq!(
            fresh_until(t0, u64::MAX, buffer),
            t0 + Duration::from_secs(MAX_LIFETIME - 30)
        );
        // No lifetime given: never reused.
        let c = Cached {
            token: Token {
                access_token: "a".into(),
                token_type: String::new(),
                expires_in: 0,
            },
            fresh_until: fresh_until(t0, 0, buffer),
        };
        assert!(!c.is_fresh(t0));
    }

    #[test]
    fn token_parsing_and_redaction() {
        let t: Token = serde_json::from_str(
            r#"{"access_token":"abc","token_type":"bearer","expires_in":43199,"scope":"x","jti":"j"}"#,
        )
        .unwrap();
        assert_eq!(t.authorization(), "bearer abc");
        assert_eq!(t.expires_in, 43199);
        assert!(!format!("{t:?}").contains("abc"));
        let t: Token = serde_json::from_str(r#"{"access_token":"abc"}"#).unwrap();
        assert_eq!(t.expires_in, 0);
        let red = redact_token(br#"{"access_token":"abc","expires_in":10}"#);
        assert!(!red.contains("abc") && red.contains(HIDDEN), "{red}");
        assert_eq!(redact_token(b"not json"), "not json");
    }

    #[test]
    fn rejects_bad_urls() {
        for url in ["", "uaa.example.com", "ftp://uaa", "http://"] {
            let err = TokenFetcher::new(UaaConfig::new(url, "id", "secret")).unwrap_err();
            assert!(matches!(err, UaaError::InvalidUrl(_)), "{url}: {err}");
        }
        TokenFetcher::new(UaaConfig::new("https://uaa.example.com:8443/", "id", "s")).unwrap();
    }

    #[test]
    fn form_encoding() {
        assert_eq!(form_encode("routing_api-client.1"), "routing_api-client.1");
        assert_eq!(form_encode("a b&c:d"), "a+b%26c%3Ad");
    }
}
