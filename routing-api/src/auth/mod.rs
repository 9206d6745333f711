//! UAA token validation (spec B.7): the bearer token of each request checked against UAA's
//! keys and issuer. Reaching UAA (its URL, the HTTPS client, the key documents) is [`uaa`]'s.
//!
//! At startup [`TokenValidator::discover`] asks UAA for its issuer
//! (`GET /.well-known/openid-configuration`) and its verification key (`GET /token_key`, a PEM
//! RSA public key in `value`; the JWKS at `GET /token_keys` is used when `/token_key` fails or
//! when a token names a `kid` the validator does not know). Any failure there is fatal for the
//! caller, with a message saying what went wrong.
//!
//! Per request, [`TokenValidator::check`] takes the `Authorization` header and a required scope:
//!
//! 1. The header must be `bearer <jwt>`: exactly two parts separated by one space, scheme
//!    case-insensitive (`Invalid token format` / `Invalid token type: <t>`; a missing header is
//!    `Invalid token format`, as upstream's empty string is).
//! 2. Only RS256, RS384 and RS512 are accepted (HS256 and `none` are `invalid signing method`).
//! 3. The signature is verified with the cached keys (lock-free: [`arc_swap`]). On a signature
//!    failure the keys are fetched again **once** and the token retried; refetches are
//!    serialised by an async mutex that is only taken on that slow path, and rate-limited to
//!    one per [`DEFAULT_MIN_REFETCH_INTERVAL`] (the first one after startup is never delayed),
//!    so a stream of forged tokens cannot hammer UAA.
//! 4. `iss` must equal the discovered issuer; `exp` is required and enforced, `nbf` enforced
//!    when present, both with no leeway (as upstream's `golang-jwt`); `iat` is ignored; there is
//!    **no audience check**.
//! 5. Some entry of the `scope` array claim must equal the required scope, else
//!    [`AuthError::MissingScope`], whose [`AuthError::to_error_body`] message is rewritten to
//!    `You are not authorized to perform the requested action`.
//!
//! Every failure is a 401 `UnauthorizedError` on the wire ([`AuthError::to_error_body`]).
//! [`TokenValidator::disabled`] (for `-devMode` / `auth_disabled`) accepts everything.
//!
//! UAA is reached over HTTPS (rustls with the ring provider; roots from `oauth.ca_certs` when
//! set, else the Mozilla roots of `webpki-roots`; `skip_ssl_validation` disables certificate
//! checks). Plain `http://` endpoints are refused unless [`UaaConfig::allow_plain_http`]
//! (`oauth.allow_plain_http`, for local platforms and tests; then with a warning).
//! Every UAA call has a [`UAA_HTTP_TIMEOUT`] deadline and bodies are capped at 1 MiB.
//!
//! Two deliberate differences from upstream: a token without `exp` is rejected (upstream accepts
//! it), and a failed key refetch answers the request with the signature error rather than the
//! fetch error (both are 401s).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue, StatusCode};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use routing_api_client::ErrorBody;
use serde::Deserialize;
use tracing::{debug, info, warn};

mod uaa;

pub use uaa::UaaConfig;
use uaa::{OpenIdConfiguration, UaaHttp};

/// Deadline of every HTTP call to UAA (connect, request and body).
pub const UAA_HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// Minimum time between two key refetches triggered by signature failures.
pub const DEFAULT_MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(3);

/// Largest UAA response body read.
const MAX_BODY: usize = 1024 * 1024;

/// The `name` of every authentication error body.
pub const UNAUTHORIZED_ERROR: &str = "UnauthorizedError";

/// The message that replaces a scope failure's text on the wire.
pub const NOT_AUTHORIZED_MESSAGE: &str = "You are not authorized to perform the requested action";

/// Why a request was refused, or why the validator could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The `Authorization` header is missing, not ASCII, or not two space-separated parts.
    #[error("Invalid token format")]
    InvalidFormat,
    /// The scheme is not `bearer` (case-insensitive).
    #[error("Invalid token type: {0}")]
    InvalidType(String),
    /// Not a JWT (segments, base64, JSON) or a claim of the wrong type.
    #[error("{0}")]
    Malformed(String),
    /// An algorithm other than RS256/RS384/RS512 (including HS256 and `none`).
    #[error("invalid signing method")]
    InvalidSigningMethod,
    /// No known key verifies the signature, even after refetching the keys.
    #[error("crypto/rsa: verification error")]
    InvalidSignature,
    /// `exp` has passed.
    #[error("Token is expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("Token is not valid yet")]
    NotYetValid,
    /// `iss` is missing or differs from the discovered issuer.
    #[error("invalid issuer")]
    InvalidIssuer,
    /// A required registered claim (`exp`) is missing.
    #[error("Token is missing the '{0}' claim")]
    MissingClaim(String),
    /// The token is valid but has none of the required scopes (the text lists them).
    #[error("Token does not have '{0}' scope")]
    MissingScope(String),
    /// Invalid UAA settings.
    #[error("invalid UAA configuration: {0}")]
    Config(String),
    /// UAA could not be asked for its issuer or keys, or answered something unusable.
    #[error("{0}")]
    Uaa(String),
}

impl AuthError {
    /// The HTTP status of this error: always 401.
    pub fn status(&self) -> StatusCode {
        StatusCode::UNAUTHORIZED
    }

    /// The wire body: `{"name":"UnauthorizedError","message":…}`, where a scope failure's
    /// message is [`NOT_AUTHORIZED_MESSAGE`] and every other carries its own text.
    pub fn to_error_body(&self) -> ErrorBody {
        let message = match self {
            AuthError::MissingScope(_) => NOT_AUTHORIZED_MESSAGE.to_string(),
            other => other.to_string(),
        };
        ErrorBody {
            name: UNAUTHORIZED_ERROR.to_string(),
            message,
        }
    }
}

/// Validates UAA bearer tokens (see the module docs). Cheap to clone: clones share the keys,
/// the HTTP client and the counters.
#[derive(Clone)]
pub struct TokenValidator {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for TokenValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            None => f.write_str("TokenValidator(disabled)"),
            Some(inner) => f
                .debug_struct("TokenValidator")
                .field("uaa", &inner.uaa.base)
                .field("issuer", &inner.issuer)
                .field("keys", &inner.keys.load().keys.len())
                .finish(),
        }
    }
}

struct Inner {
    uaa: UaaHttp,
    issuer: String,
    keys: ArcSwap<KeySet>,
    /// Held while refetching; holds the time of the last refetch (tokio's clock, which tests
    /// can pause).
    refetch: tokio::sync::Mutex<Option<tokio::time::Instant>>,
    min_refetch_interval: Duration,
    /// Validation rules for RS256, RS384 and RS512, in that order.
    validations: [Validation; 3],
    key_refresh_events: AtomicU64,
    token_errors: AtomicU64,
}

/// One verification key.
struct VerificationKey {
    kid: Option<String>,
    key: DecodingKey,
    /// Big-endian modulus and exponent, to tell whether a refetch brought anything new.
    n: Vec<u8>,
    e: Vec<u8>,
}

/// The keys currently trusted, replaced whole on refetch.
struct KeySet {
    keys: Vec<VerificationKey>,
}

impl KeySet {
    fn same_keys(&self, other: &KeySet) -> bool {
        let ids = |s: &KeySet| -> HashSet<(Vec<u8>, Vec<u8>)> {
            s.keys.iter().map(|k| (k.n.clone(), k.e.clone())).collect()
        };
        ids(self) == ids(other)
    }

    fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

/// The parts of the JOSE header looked at before verification.
#[derive(Deserialize)]
struct JoseHeader {
    #[serde(default)]
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// The claims read after verification (the registered ones are checked by `jsonwebtoken`).
#[derive(Deserialize)]
struct ScopeClaims {
    #[serde(default)]
    scope: serde_json::Value,
    /// `jsonwebtoken` also accepts an array holding the issuer; upstream (Go's jwt library)
    /// requires a string, and so do we.
    #[serde(default)]
    iss: serde_json::Value,
}

/// Why verifying against one key set failed.
enum VerifyFailure {
    /// No key verified the signature (retry after refetching).
    Signature,
    /// Anything else: final.
    Final(AuthError),
}

impl TokenValidator {
    /// A validator that accepts every request (`-devMode`, `auth_disabled`).
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// Whether this is [`TokenValidator::disabled`].
    pub fn is_disabled(&self) -> bool {
        self.inner.is_none()
    }

    /// Asks UAA for its issuer and verification key. Fails when the configuration is invalid,
    /// UAA is unreachable or slow, the issuer is missing, or no usable RSA public key is served.
    pub async fn discover(config: &UaaConfig) -> Result<Self, AuthError> {
        let uaa = UaaHttp::new(config)?;

        let openid: OpenIdConfiguration = uaa
            .get_json("/.well-known/openid-configuration")
            .await
            .map_err(|e| {
            AuthError::Uaa(format!("Failed to get issuer configuration from UAA: {e}"))
        })?;
        let issuer = openid.issuer.unwrap_or_default();
        if issuer.is_empty() {
            return Err(AuthError::Uaa(format!(
                "Failed to get issuer configuration from UAA: {}/.well-known/openid-configuration \
                 has no issuer",
                uaa.base
            )));
        }
        info!(%issuer, uaa = %uaa.base, "routing-api.received-issuer");

        let keys = uaa
            .fetch_keys(false)
            .await
            .map_err(|e| AuthError::Uaa(format!("Failed to get verification key from UAA: {e}")))?;
        info!(
            keys = keys.keys.len(),
            "routing-api.fetched-verification-key"
        );

        Ok(Self {
            inner: Some(Arc::new(Inner {
                uaa,
                issuer: issuer.clone(),
                keys: ArcSwap::from_pointee(keys),
                refetch: tokio::sync::Mutex::new(None),
                min_refetch_interval: DEFAULT_MIN_REFETCH_INTERVAL,
                validations: [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512]
                    .map(|alg| validation(alg, &issuer)),
                key_refresh_events: AtomicU64::new(0),
                token_errors: AtomicU64::new(0),
            })),
        })
    }

    /// Sets the minimum time between two refetches of the keys after signature failures
    /// (default [`DEFAULT_MIN_REFETCH_INTERVAL`]). Call before cloning the validator.
    pub fn with_min_refetch_interval(mut self, interval: Duration) -> Self {
        if let Some(inner) = self.inner.as_mut().and_then(Arc::get_mut) {
            inner.min_refetch_interval = interval;
        }
        self
    }

    /// The issuer tokens must carry (`None` when disabled).
    pub fn issuer(&self) -> Option<&str> {
        self.inner.as_deref().map(|i| i.issuer.as_str())
    }

    /// How many times the keys were fetched again after startup (the `key_refresh_events`
    /// metric).
    pub fn key_refresh_events(&self) -> u64 {
        self.inner
            .as_deref()
            .map_or(0, |i| i.key_refresh_events.load(Ordering::Relaxed))
    }

    /// How many checks failed (the `total_token_errors` metric).
    pub fn token_errors(&self) -> u64 {
        self.inner
            .as_deref()
            .map_or(0, |i| i.token_errors.load(Ordering::Relaxed))
    }

    /// Checks an `Authorization` header value (`None` when absent) for `required_scope`.
    pub async fn check(
        &self,
        authorization: Option<&str>,
        required_scope: &str,
    ) -> Result<(), AuthError> {
        self.check_any(authorization, &[required_scope]).await
    }

    /// [`TokenValidator::check`] on the `Authorization` header of `headers`.
    pub async fn check_headers(
        &self,
        headers: &HeaderMap,
        required_scope: &str,
    ) -> Result<(), AuthError> {
        self.check_header_value(headers.get(AUTHORIZATION), required_scope)
            .await
    }

    /// [`TokenValidator::check`] on a raw header value (a value that is not visible ASCII is
    /// `Invalid token format`).
    pub async fn check_header_value(
        &self,
        authorization: Option<&HeaderValue>,
        required_scope: &str,
    ) -> Result<(), AuthError> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        match authorization.map(|v| v.to_str()) {
            Some(Err(_)) => {
                inner.token_errors.fetch_add(1, Ordering::Relaxed);
                Err(AuthError::InvalidFormat)
            }
            Some(Ok(v)) => self.check(Some(v), required_scope).await,
            None => self.check(None, required_scope).await,
        }
    }

    /// Like [`TokenValidator::check`], passing when the token has any of `scopes`.
    pub async fn check_any(
        &self,
        authorization: Option<&str>,
        scopes: &[&str],
    ) -> Result<(), AuthError> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        let result = inner.check(authorization.unwrap_or(""), scopes).await;
        if let Err(e) = &result {
            inner.token_errors.fetch_add(1, Ordering::Relaxed);
            debug!(error = %e, "token rejected");
        }
        result
    }
}

impl Inner {
    async fn check(&self, authorization: &str, scopes: &[&str]) -> Result<(), AuthError> {
        let token = bearer_token(authorization)?;
        let header = jose_header(token)?;
        let validation = match header.alg.as_str() {
            "RS256" => &self.validations[0],
            "RS384" => &self.validations[1],
            "RS512" => &self.validations[2],
            _ => return Err(AuthError::InvalidSigningMethod),
        };

        let keys = self.keys.load_full();
        let claims = match verify(token, header.kid.as_deref(), &keys, validation) {
            Ok(claims) => claims,
            Err(VerifyFailure::Final(e)) => return Err(e),
            Err(VerifyFailure::Signature) => {
                let unknown_kid = header.kid.as_deref().is_some_and(|k| !keys.has_kid(k));
                match self.refetch_keys(&keys, unknown_kid).await {
                    None => return Err(AuthError::InvalidSignature),
                    Some(fresh) => match verify(token, header.kid.as_deref(), &fresh, validation) {
                        Ok(claims) => claims,
                        Err(VerifyFailure::Final(e)) => return Err(e),
                        Err(VerifyFailure::Signature) => return Err(AuthError::InvalidSignature),
                    },
                }
            }
        };

        let has_scope = claims
            .scope
            .as_array()
            .is_some_and(|granted| granted.iter().any(|g| scopes.iter().any(|s| g == s)));
        if has_scope {
            Ok(())
        } else {
            Err(AuthError::MissingScope(scopes.join("', '")))
        }
    }

    /// Fetches the keys again after a signature failure against `seen`. Returns the key set to
    /// retry with, or `None` when there is nothing new to try (rate-limited, fetch failed, or
    /// UAA still serves the same keys).
    async fn refetch_keys(&self, seen: &Arc<KeySet>, prefer_jwks: bool) -> Option<Arc<KeySet>> {
        // Waiters queue here only while another request is refetching, which takes at most
        // two UAA calls; never wait longer than that.
        let mut last = tokio::time::timeout(
            2 * UAA_HTTP_TIMEOUT + Duration::from_secs(1),
            self.refetch.lock(),
        )
        .await
        .ok()?;
        let current = self.keys.load_full();
        if !Arc::ptr_eq(&current, seen) {
            // Someone refreshed the keys since this request loaded them.
            return Some(current);
        }
        if let Some(at) = *last {
            if at.elapsed() < self.min_refetch_interval {
                debug!("signature failure: UAA keys were refetched recently, not again");
                return None;
            }
        }
        *last = Some(tokio::time::Instant::now());
        self.key_refresh_events.fetch_add(1, Ordering::Relaxed);
        match self.uaa.fetch_keys(prefer_jwks).await {
            Ok(fresh) => {
                if fresh.same_keys(&current) {
                    info!("refetched UAA verification keys: unchanged");
                    return None;
                }
                info!(
                    keys = fresh.keys.len(),
                    "refetched UAA verification keys: new keys"
                );
                let fresh = Arc::new(fresh);
                self.keys.store(fresh.clone());
                Some(fresh)
            }
            Err(e) => {
                warn!(error = %e, "failed to refetch UAA verification keys");
                None
            }
        }
    }
}

/// The registered-claim rules for `alg`: `exp` required and enforced, `nbf` enforced, no
/// leeway, `iss` required and equal to `issuer`, no audience check.
fn validation(alg: Algorithm, issuer: &str) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = 0;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.validate_aud = false;
    v.set_required_spec_claims(&["exp", "iss"]);
    v.set_issuer(&[issuer]);
    v
}

/// Splits `bearer <jwt>` (upstream's `checkTokenFormat`).
fn bearer_token(authorization: &str) -> Result<&str, AuthError> {
    let mut parts = authorization.split(' ');
    let (Some(scheme), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(AuthError::InvalidFormat);
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::InvalidType(scheme.to_string()));
    }
    Ok(token)
}

/// Decodes the JOSE header without trusting it.
fn jose_header(token: &str) -> Result<JoseHeader, AuthError> {
    if token.split('.').count() != 3 {
        return Err(AuthError::Malformed(
            "token contains an invalid number of segments".to_string(),
        ));
    }
    let encoded = token.split('.').next().unwrap_or_default();
    let raw = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|e| AuthError::Malformed(format!("invalid token header: {e}")))?;
    serde_json::from_slice(&raw)
        .map_err(|e| AuthError::Malformed(format!("invalid token header: {e}")))
}

/// Verifies `token` with the keys of `keys` that may have signed it: the one named by `kid`
/// when known, else all of them.
fn verify(
    token: &str,
    kid: Option<&str>,
    keys: &KeySet,
    validation: &Validation,
) -> Result<ScopeClaims, VerifyFailure> {
    let named: Vec<&VerificationKey> = match kid {
        Some(kid) => keys
            .keys
            .iter()
            .filter(|k| k.kid.as_deref() == Some(kid))
            .collect(),
        None => Vec::new(),
    };
    let candidates: Vec<&VerificationKey> = if named.is_empty() {
        keys.keys.iter().collect()
    } else {
        named
    };
    for key in candidates {
        match jsonwebtoken::decode::<ScopeClaims>(token, &key.key, validation) {
            Ok(data) if data.claims.iss.is_string() => return Ok(data.claims),
            Ok(_) => return Err(VerifyFailure::Final(AuthError::InvalidIssuer)),
            Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => continue,
            Err(e) => return Err(VerifyFailure::Final(map_jwt_error(&e))),
        }
    }
    Err(VerifyFailure::Signature)
}

fn map_jwt_error(e: &jsonwebtoken::errors::Error) -> AuthError {
    match e.kind() {
        ErrorKind::InvalidSignature => AuthError::InvalidSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::InvalidIssuer,
        ErrorKind::MissingRequiredClaim(c) if c == "iss" => AuthError::InvalidIssuer,
        ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(c.clone()),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthError::InvalidSigningMethod
        }
        ErrorKind::InvalidClaimFormat(c) => {
            AuthError::Malformed(format!("invalid '{c}' claim in token"))
        }
        _ => AuthError::Malformed(format!("invalid token: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use integration::uaa::{Endpoint, FakeUaa, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET};
    use integration::TempDir;
    use serde_json::json;

    const READ: &str = "routing.routes.read";
    const WRITE: &str = "routing.routes.write";
    const HOUR: Duration = Duration::from_secs(3600);

    fn config_for(uaa: &FakeUaa) -> UaaConfig {
        UaaConfig {
            token_endpoint: uaa.token_endpoint(),
            port: i32::from(uaa.port()),
            ca_certs_path: None,
            skip_ssl_validation: false,
            // The fake UAA speaks plain http unless started with TLS.
            allow_plain_http: true,
        }
    }

    async fn setup() -> (FakeUaa, TokenValidator) {
        let uaa = FakeUaa::start().await;
        let validator = TokenValidator::discover(&config_for(&uaa))
            .await
            .expect("discovery against the fake UAA");
        (uaa, validator)
    }

    fn bearer(token: &str) -> String {
        format!("bearer {token}")
    }

    async fn check(v: &TokenValidator, header: &str, scope: &str) -> Result<(), AuthError> {
        v.check(Some(header), scope).await
    }

    #[tokio::test]
    async fn good_token_with_the_right_scope_passes() {
        let (uaa, v) = setup().await;
        assert_eq!(v.issuer(), Some(uaa.issuer()));
        let token = uaa.mint(&[READ, WRITE], HOUR);
        check(&v, &bearer(&token), READ).await.expect("read");
        check(&v, &bearer(&token), WRITE).await.expect("write");
        // Scheme is case-insensitive.
        check(&v, &format!("BEARER {token}"), READ)
            .await
            .expect("BEARER");
        check(&v, &format!("Bearer {token}"), READ)
            .await
            .expect("Bearer");
        // RS384 and RS512 too.
        for alg in [Algorithm::RS384, Algorithm::RS512] {
            let t = uaa.mint_with_alg(alg, &[READ], HOUR);
            check(&v, &bearer(&t), READ)
                .await
                .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        }
        // Through a HeaderMap.
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&bearer(&token)).expect("header"),
        );
        v.check_headers(&headers, READ).await.expect("headers");
        // Tokens carry an audience (client id, scope resources): it is not checked.
        assert_eq!(v.token_errors(), 0);
        assert_eq!(v.key_refresh_events(), 0);
        assert_eq!(uaa.hits(Endpoint::TokenKey), 1);
        assert_eq!(uaa.hits(Endpoint::OpenIdConfiguration), 1);
    }

    #[tokio::test]
    async fn token_from_the_client_credentials_grant_passes() {
        let (uaa, v) = setup().await;
        let token = uaa
            .fetch_token(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
            .await;
        check(&v, &bearer(&token), "routing.router_groups.write")
            .await
            .expect("token from /oauth/token");
    }

    #[tokio::test]
    async fn wrong_scope_is_rejected_with_the_rewritten_message() {
        let (uaa, v) = setup().await;
        let token = uaa.mint(&[READ, "routing.router_groups.read"], HOUR);
        let err = check(&v, &bearer(&token), WRITE).await.unwrap_err();
        assert_eq!(err, AuthError::MissingScope(WRITE.to_string()));
        assert_eq!(
            err.to_string(),
            "Token does not have 'routing.routes.write' scope"
        );
        let body = err.to_error_body();
        assert_eq!(body.name, "UnauthorizedError");
        assert_eq!(
            body.message,
            "You are not authorized to perform the requested action"
        );
        assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(v.token_errors(), 1);

        // No scope claim at all, or a scope that is a string rather than an array.
        let mut claims = uaa.claims(&[READ], HOUR);
        claims.as_object_mut().expect("object").remove("scope");
        let err = check(&v, &bearer(&uaa.mint_claims(&claims)), READ)
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::MissingScope(_)), "{err:?}");
        claims["scope"] = json!(READ);
        let err = check(&v, &bearer(&uaa.mint_claims(&claims)), READ)
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::MissingScope(_)), "{err:?}");

        // Any of several scopes.
        let token = uaa.mint(&[READ], HOUR);
        v.check_any(Some(&bearer(&token)), &[WRITE, READ])
            .await
            .expect("any of");
        let err = v
            .check_any(Some(&bearer(&token)), &[WRITE, "x"])
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Token does not have 'routing.routes.write', 'x' scope"
        );
    }

    #[tokio::test]
    async fn expired_token_is_rejected() {
        let (uaa, v) = setup().await;
        let err = check(&v, &bearer(&uaa.mint_expired(&[READ])), READ)
            .await
            .unwrap_err();
        assert_eq!(err, AuthError::Expired);
        assert_eq!(err.to_error_body().message, "Token is expired");
        assert_eq!(uaa.hits(Endpoint::TokenKey), 1, "no refetch for expiry");

        // A token without exp is refused too.
        let mut claims = uaa.claims(&[READ], HOUR);
        claims.as_object_mut().expect("object").remove("exp");
        let err = check(&v, &bearer(&uaa.mint_claims(&claims)), READ)
            .await
            .unwrap_err();
        assert_eq!(err, AuthError::MissingClaim("exp".to_string()));
    }

    #[tokio::test]
    async fn token_not_yet_valid_is_rejected() {
        let (uaa, v) = setup().await;
        let err = check(&v, &bearer(&uaa.mint_not_yet_valid(&[READ])), READ)
            .await
            .unwrap_err();
        assert_eq!(err, AuthError::NotYetValid);

        // iat in the future is ignored (upstream ignores iat errors).
        let mut claims = uaa.claims(&[READ], HOUR);
        claims["iat"] = json!(jsonwebtoken::get_current_timestamp() + 600);
        check(&v, &bearer(&uaa.mint_claims(&claims)), READ)
            .await
            .expect("future iat is ignored");
    }

    #[tokio::test]
    async fn wrong_or_missing_issuer_is_rejected() {
        let (uaa, v) = setup().await;
        let token = uaa.mint_with_issuer("https://uaa.evil.example/oauth/token", &[READ]);
        let err = check(&v, &bearer(&token), READ).await.unwrap_err();
        assert_eq!(err, AuthError::InvalidIssuer);
        assert_eq!(err.to_error_body().message, "invalid issuer");

        let mut claims = uaa.claims(&[READ], HOUR);
        claims.as_object_mut().expect("object").remove("iss");
        let err = check(&v, &bearer(&uaa.mint_claims(&claims)), READ)
            .await
            .unwrap_err();
        assert_eq!(err, AuthError::InvalidIssuer);
    }

    #[tokio::test]
    async fn an_issuer_in_an_array_is_rejected_as_upstream_does() {
        let (uaa, v) = setup().await;
        let mut claims = uaa.claims(&[READ], HOUR);
        let issuer = claims["iss"].clone();
        claims["iss"] = json!([issuer]);
        let err = check(&v, &bearer(&uaa.mint_claims(&claims)), READ)
            .await
            .unwrap_err();
        assert_eq!(err, AuthError::InvalidIssuer);
    }

    #[tokio::test]
    async fn hs256_token_is_rejected() {
        let (uaa, v) = setup().await;
        let err = check(&v, &bearer(&uaa.mint_hs256(&[READ])), READ)
            .await
            .unwrap_err();
        assert_eq!(err, AuthError::InvalidSigningMethod);
        assert_eq!(uaa.hits(Endpoint::TokenKey), 1, "no refetch");
    }

    #[tokio::test]
    async fn unsigned_token_is_rejected() {
        let (uaa, v) = setup().await;
        let unsigned = uaa.mint_unsigned(&[READ]);
        let err = check(&v, &bearer(&unsigned), READ).await.unwrap_err();
        assert_eq!(err, AuthError::InvalidSigningMethod);

        // An RS256 header over an empty or foreign signature fails verification.
        let good = uaa.mint(&[READ], HOUR);
        let (signed_part, _) = good.rsplit_once('.').expect("three parts");
        for forged in [format!("{signed_part}."), format!("{signed_part}.AAAA")] {
            let err = check(&v, &bearer(&forged), READ).await.unwrap_err();
            assert_eq!(err, AuthError::InvalidSignature, "{forged}");
        }
    }

    #[tokio::test]
    async fn garbage_tokens_are_rejected() {
        let (uaa, v) = setup().await;
        for token in ["garbage", "a.b", "a.b.c.d", "!!!.e30.x", "e30.e30.x", ""] {
            let err = check(&v, &bearer(token), READ).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    AuthError::Malformed(_) | AuthError::InvalidSigningMethod
                ),
                "{token:?}: {err:?}"
            );
        }
        // Non-ASCII header value.
        let value = HeaderValue::from_bytes(b"bearer \xff\xfe").expect("opaque header");
        let err = v.check_header_value(Some(&value), READ).await.unwrap_err();
        assert_eq!(err, AuthError::InvalidFormat);
        assert_eq!(uaa.hits(Endpoint::TokenKey), 1, "no refetch for garbage");
        assert_eq!(v.token_errors(), 7);
        // A real header and signature over a payload that is not JSON: the signature no
        // longer matches (one refetch, then refused).
        let good = uaa.mint(&[READ], HOUR);
        let parts: Vec<&str> = good.split('.').collect();
        let bad = format!("{}.{}.{}", parts[0], "bm90IGpzb24", parts[2]);
        let err = check(&v, &bearer(&bad), READ).await.unwrap_err();
        assert_eq!(err, AuthError::InvalidSignature);
    }

    #[tokio::test]
    async fn missing_header_is_rejected() {
        let (_uaa, v) = setup().await;
        let err = v.check(None, READ).await.unwrap_err();
        assert_eq!(err, AuthError::InvalidFormat);
        assert_eq!(err.to_error_body().message, "Invalid token format");
        let err = v.check_headers(&HeaderMap::new(), READ).await.unwrap_err();
        assert_eq!(err, AuthError::InvalidFormat);
        let err = check(&v, "", READ).await.unwrap_err();
        assert_eq!(err, AuthError::InvalidFormat);
    }

    #[tokio::test]
    async fn wrong_scheme_is_rejected() {
        let (uaa, v) = setup().await;
        let err = check(&v, "basic x", READ).await.unwrap_err();
        assert_eq!(err, AuthError::InvalidType("basic".to_string()));
        assert_eq!(err.to_error_body().message, "Invalid token type: basic");
        let token = uaa.mint(&[READ], HOUR);
        let err = check(&v, &format!("token {token}"), READ)
            .await
            .unwrap_err();
        assert_eq!(err, AuthError::InvalidType("token".to_string()));
    }

    #[tokio::test]
    async fn header_with_three_parts_is_rejected() {
        let (uaa, v) = setup().await;
        let token = uaa.mint(&[READ], HOUR);
        for header in [
            format!("bearer {token} extra"),
            format!("bearer  {token}"),
            token.clone(),
            "bearer a b".to_string(),
        ] {
            let err = check(&v, &header, READ).await.unwrap_err();
            assert_eq!(err, AuthError::InvalidFormat, "{header:?}");
        }
    }

    #[tokio::test]
    async fn key_rotation_refetches_once_and_old_tokens_then_fail() {
        let (uaa, v) = setup().await;
        let old = uaa.mint(&[READ], HOUR);
        check(&v, &bearer(&old), READ).await.expect("old key works");
        assert_eq!(uaa.hits(Endpoint::TokenKey), 1);

        uaa.rotate_key();
        let new = uaa.mint(&[READ], HOUR);
        // The cached key fails, the validator refetches once and accepts the new key. The
        // token names a kid the validator has not seen, so the JWKS is asked first.
        check(&v, &bearer(&new), READ)
            .await
            .expect("new key after refetch");
        assert_eq!(v.key_refresh_events(), 1);
        assert_eq!(
            uaa.hits(Endpoint::TokenKey) + uaa.hits(Endpoint::TokenKeys),
            2,
            "{:?}",
            uaa.all_hits()
        );
        check(&v, &bearer(&new), READ)
            .await
            .expect("new key is cached");

        // An old-key token now fails, without another fetch (rate limited).
        let err = check(&v, &bearer(&old), READ).await.unwrap_err();
        assert_eq!(err, AuthError::InvalidSignature);
        assert_eq!(v.key_refresh_events(), 1);
        assert_eq!(
            uaa.hits(Endpoint::TokenKey) + uaa.hits(Endpoint::TokenKeys),
            2
        );
    }

    #[tokio::test]
    async fn rotation_without_kid_uses_token_key() {
        let (uaa, v) = setup().await;
        uaa.rotate_key();
        // A token without a kid whose signature fails (the header was re-encoded without its
        // kid): the refetch asks /token_key, not the JWKS, and nothing verifies.
        let token = uaa.mint(&[READ], HOUR);
        let (_, rest) = token.split_once('.').expect("parts");
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let no_kid = format!("{header}.{rest}");
        let err = check(&v, &bearer(&no_kid), READ).await.unwrap_err();
        assert_eq!(err, AuthError::InvalidSignature);
        assert_eq!(uaa.hits(Endpoint::TokenKey), 2, "{:?}", uaa.all_hits());
        assert_eq!(uaa.hits(Endpoint::TokenKeys), 0);
        // The refetched key is the rotated one: properly signed tokens pass.
        check(&v, &bearer(&token), READ).await.expect("rotated key");
        assert_eq!(v.key_refresh_events(), 1);
    }

    #[tokio::test]
    async fn refetches_are_rate_limited_and_serialised() {
        // Longer than any test run: however slow the machine, the checks below that must fall
        // inside the interval do; tokio's clock (which the validator reads) is then advanced
        // past it.
        const INTERVAL: Duration = Duration::from_secs(3600);
        let uaa = FakeUaa::start().await;
        let v = TokenValidator::discover(&config_for(&uaa))
            .await
            .expect("discovery")
            .with_min_refetch_interval(INTERVAL);
        uaa.rotate_key();
        let new = uaa.mint(&[READ], HOUR);
        // Many requests with the new key at once: one refetch, all pass.
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let v = v.clone();
            let h = bearer(&new);
            tasks.push(tokio::spawn(async move { v.check(Some(&h), READ).await }));
        }
        for t in tasks {
            t.await.expect("join").expect("new token passes");
        }
        assert_eq!(v.key_refresh_events(), 1, "{:?}", uaa.all_hits());

        // Another rotation within the interval: the new kid is unknown, but the last refetch
        // was too recent, so the token is refused without asking UAA.
        uaa.rotate_key();
        let rotated = uaa.mint(&[READ], HOUR);
        let keys_served = || uaa.hits(Endpoint::TokenKey) + uaa.hits(Endpoint::TokenKeys);
        let before = keys_served();
        let err = check(&v, &bearer(&rotated), READ).await.unwrap_err();
        assert_eq!(err, AuthError::InvalidSignature);
        assert_eq!(keys_served(), before, "asked UAA within the interval");
        assert_eq!(v.key_refresh_events(), 1);

        // Half the interval later (on tokio's clock, stopped here): still refused, still
        // without asking UAA.
        tokio::time::pause();
        tokio::time::advance(INTERVAL / 2).await;
        let err = check(&v, &bearer(&rotated), READ).await.unwrap_err();
        assert_eq!(err, AuthError::InvalidSignature);
        assert_eq!(keys_served(), before, "asked UAA within the interval");
        assert_eq!(v.key_refresh_events(), 1);

        // Past the interval, the refetch happens and picks up the rotated key. The clock runs
        // again (from the advanced time) for the calls to UAA and their timeouts.
        tokio::time::advance(INTERVAL / 2).await;
        tokio::time::resume();
        check(&v, &bearer(&rotated), READ)
            .await
            .expect("rotated key after the interval");
        assert_eq!(v.key_refresh_events(), 2);
        assert!(keys_served() > before, "the refetch asked UAA");
    }

    #[tokio::test]
    async fn token_key_down_but_token_keys_up_works() {
        let uaa = FakeUaa::start().await;
        uaa.fail(Endpoint::TokenKey);
        let v = TokenValidator::discover(&config_for(&uaa))
            .await
            .expect("discovery falls back to /token_keys");
        assert_eq!(uaa.hits(Endpoint::TokenKey), 1);
        assert_eq!(uaa.hits(Endpoint::TokenKeys), 1);
        let token = uaa.mint(&[READ], HOUR);
        check(&v, &bearer(&token), READ).await.expect("JWKS key");

        // Rotation with /token_key still down: the refetch uses the JWKS.
        uaa.rotate_key();
        let token = uaa.mint(&[READ], HOUR);
        check(&v, &bearer(&token), READ)
            .await
            .expect("rotated JWKS key");

        // A bad PEM at /token_key also falls back.
        uaa.respond_with(
            Endpoint::TokenKey,
            200,
            r#"{"kty":"RSA","value":"not a pem"}"#,
        );
        TokenValidator::discover(&config_for(&uaa))
            .await
            .expect("bad PEM falls back to /token_keys");
    }

    #[tokio::test]
    async fn discovery_failures_are_errors() {
        // Unreachable.
        let port = integration::closed_port();
        let config = UaaConfig {
            token_endpoint: "http://127.0.0.1".to_string(),
            allow_plain_http: true,
            port: i32::from(port),
            ..Default::default()
        };
        let err = TokenValidator::discover(&config).await.unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("Failed to get issuer configuration from UAA")
                && msg.contains(&format!(
                    "127.0.0.1:{port}/.well-known/openid-configuration"
                )),
            "{msg}"
        );

        // Issuer endpoint failing or without issuer.
        let uaa = FakeUaa::start().await;
        uaa.fail(Endpoint::OpenIdConfiguration);
        let err = TokenValidator::discover(&config_for(&uaa))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("500"), "{err}");
        uaa.respond_with(Endpoint::OpenIdConfiguration, 200, r#"{"jwks_uri":"x"}"#);
        let err = TokenValidator::discover(&config_for(&uaa))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("has no issuer"), "{err}");
        uaa.respond_with(Endpoint::OpenIdConfiguration, 200, "not json");
        let err = TokenValidator::discover(&config_for(&uaa))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("invalid JSON"), "{err}");
        uaa.reset(Endpoint::OpenIdConfiguration);

        // Keys unusable on both endpoints.
        uaa.respond_with(
            Endpoint::TokenKey,
            200,
            r#"{"kty":"RSA","value":"not a pem"}"#,
        );
        uaa.fail(Endpoint::TokenKeys);
        let err = TokenValidator::discover(&config_for(&uaa))
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("Failed to get verification key from UAA")
                && msg.contains("Public uaa token must be PEM encoded"),
            "{msg}"
        );
        uaa.respond_with(
            Endpoint::TokenKey,
            200,
            r#"{"value":"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}"#,
        );
        let err = TokenValidator::discover(&config_for(&uaa))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not an RSA public key"), "{err}");

        // Port -1.
        let config = UaaConfig {
            port: -1,
            ..config_for(&uaa)
        };
        let err = TokenValidator::discover(&config).await.unwrap_err();
        assert!(matches!(err, AuthError::Config(_)), "{err:?}");
    }

    #[tokio::test]
    async fn slow_uaa_times_out() {
        // A listener that accepts and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let config = UaaConfig {
            token_endpoint: "http://127.0.0.1".to_string(),
            allow_plain_http: true,
            port: i32::from(port),
            ..Default::default()
        };
        // The error names the timeout that fired; a discovery that never gives up fails the
        // generous outer deadline.
        let err = tokio::time::timeout(
            UAA_HTTP_TIMEOUT + Duration::from_secs(30),
            TokenValidator::discover(&config),
        )
        .await
        .expect("discovery gives up")
        .unwrap_err();
        assert!(err.to_string().contains("no answer within 5s"), "{err}");
        hold.abort();
    }

    #[tokio::test]
    async fn https_uaa_with_ca_file_or_skip_validation() {
        let uaa = FakeUaa::start_tls().await;
        let dir = TempDir::new("uaa-ca");
        let ca = uaa.write_ca(dir.path());
        let config = UaaConfig {
            ca_certs_path: Some(ca),
            ..config_for(&uaa)
        };
        assert!(config.token_endpoint.starts_with("https://"));
        let v = TokenValidator::discover(&config).await.expect("trusted CA");
        let token = uaa.mint(&[READ], HOUR);
        check(&v, &bearer(&token), READ).await.expect("valid");

        // Without the CA (default roots) the certificate is refused.
        let err = TokenValidator::discover(&config_for(&uaa))
            .await
            .unwrap_err();
        assert!(
            err.to_string().to_lowercase().contains("certificate"),
            "{err}"
        );

        // skip_ssl_validation accepts it.
        let config = UaaConfig {
            skip_ssl_validation: true,
            ..config_for(&uaa)
        };
        TokenValidator::discover(&config)
            .await
            .expect("skip_ssl_validation");

        // A CA file that does not exist or holds no certificate.
        let config = UaaConfig {
            ca_certs_path: Some(dir.path().join("missing.pem")),
            ..config_for(&uaa)
        };
        let err = TokenValidator::discover(&config).await.unwrap_err();
        assert!(
            err.to_string().contains("Failed to read ca cert file"),
            "{err}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here").expect("write");
        let config = UaaConfig {
            ca_certs_path: Some(empty),
            ..config_for(&uaa)
        };
        let err = TokenValidator::discover(&config).await.unwrap_err();
        assert!(err.to_string().contains("Unable to load caCert"), "{err}");
    }

    #[tokio::test]
    async fn disabled_validator_accepts_everything() {
        let v = TokenValidator::disabled();
        assert!(v.is_disabled());
        v.check(None, READ).await.expect("no header");
        v.check(Some("basic x"), READ).await.expect("any header");
        assert_eq!(v.token_errors(), 0);
        assert_eq!(v.issuer(), None);
    }

    #[test]
    fn uaa_base_url() {
        let cfg = |endpoint: &str, port: i32| UaaConfig {
            token_endpoint: endpoint.to_string(),
            port,
            ..Default::default()
        };
        assert_eq!(
            cfg("uaa.service.cf.internal", 8443).base_url().unwrap(),
            "https://uaa.service.cf.internal:8443"
        );
        assert_eq!(
            cfg("https://uaa.example.com/", 0).base_url().unwrap(),
            "https://uaa.example.com"
        );
        let plain = UaaConfig {
            allow_plain_http: true,
            ..cfg("http://127.0.0.1", 8080)
        };
        assert_eq!(plain.base_url().unwrap(), "http://127.0.0.1:8080");
        for (endpoint, port) in [
            ("uaa", -1),
            ("uaa", -2),
            ("uaa", 70000),
            ("", 443),
            ("ftp://uaa", 21),
            ("https://", 443),
            ("http://127.0.0.1", 8080),
            ("HTTP://uaa.example.com", 0),
        ] {
            assert!(
                matches!(cfg(endpoint, port).base_url(), Err(AuthError::Config(_))),
                "{endpoint:?} {port}"
            );
        }
    }
}
