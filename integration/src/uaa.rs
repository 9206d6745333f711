//! [`FakeUaa`]: a small but real UAA for tests, on `127.0.0.1:<ephemeral>`, plain HTTP or TLS.
//!
//! It serves what the routing tier asks of UAA:
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /.well-known/openid-configuration` | `{"issuer":"<base>/oauth/token", …}` |
//! | `GET /token_key` | the current verification key: `{"kty":"RSA","kid":…,"alg":"RS256","value":"<PEM public key>","n":…,"e":…}` |
//! | `GET /token_keys` | the same key as a JWKS: `{"keys":[…]}` |
//! | `POST /oauth/token` | client-credentials grant (client id/secret by HTTP basic auth or form fields): `{"access_token":"<RS256 JWT>","token_type":"bearer","expires_in":N,"scope":"a b","jti":…}` |
//! | `GET /healthz` | `ok` (text/plain), as UAA's health check |
//!
//! The signing key is a 2048-bit RSA key pair generated when the server starts (and again on
//! [`FakeUaa::rotate_key`]); nothing is read from disk. [`FakeUaa::start_with`] takes
//! [`UaaOptions`] instead of the test defaults: listen address, a given [`SigningKey`] (PEM),
//! its own [`UaaClient`]s, UAA's `issuer.uri`, TLS with a given certificate, token lifetime and a
//! log line per token; the `uaa-stand-in` binary (src/bin) is that server configured from a
//! UAA `uaa.yml`.
//!
//! Tokens carry UAA's claims (`jti`, `sub`, `scope`, `authorities`, `client_id`, `cid`, `azp`,
//! `grant_type`, `iat`, `exp`, `iss`, `zid`, `aud`), with `aud` set to the scope prefixes as UAA
//! does, so a validator that wrongly checks the audience fails.
//!
//! Tests mint tokens directly ([`FakeUaa::mint`], [`FakeUaa::mint_expired`],
//! [`FakeUaa::mint_not_yet_valid`], [`FakeUaa::mint_with_issuer`], [`FakeUaa::mint_hs256`],
//! [`FakeUaa::mint_unsigned`], [`FakeUaa::mint_claims`]), or fetch them over HTTP like a real
//! client with the [`DEFAULT_CLIENT_ID`] client (all four routing scopes) or one added with
//! [`FakeUaa::add_client`]. A client's token carries its authorities as `scope` (UAA's
//! client-credentials rule); a wrong secret is UAA's 401 `{"error":"unauthorized",…}`, a client
//! not allowed the grant UAA's 401 `{"error":"invalid_client",…}`. Every endpoint's hits are
//! counted ([`FakeUaa::hits`]), and any endpoint can be made to answer something else
//! ([`FakeUaa::respond_with`], e.g. a 500 or a bad PEM) until [`FakeUaa::reset`].
//!
//! ```no_run
//! # async fn demo() {
//! use integration::uaa::{Endpoint, FakeUaa};
//! use std::time::Duration;
//!
//! let uaa = FakeUaa::start().await;
//! // routing-api's oauth config: token_endpoint + port.
//! let (endpoint, port) = (uaa.token_endpoint(), uaa.port());
//! let token = uaa.mint(&["routing.routes.read"], Duration::from_secs(600));
//! // ... validate `bearer {token}` ...
//! uaa.rotate_key(); // old tokens no longer verify; the validator must refetch /token_key
//! assert_eq!(uaa.hits(Endpoint::TokenKey), 0);
//! # let _ = (endpoint, port, token);
//! # }
//! ```
//!
//! The server stops when the [`FakeUaa`] is dropped.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::pki::TestCa;

/// The client every [`FakeUaa`] knows from the start, with [`ALL_ROUTING_SCOPES`].
pub const DEFAULT_CLIENT_ID: &str = "routing-test-client";
/// The secret of [`DEFAULT_CLIENT_ID`].
pub const DEFAULT_CLIENT_SECRET: &str = "routing-test-secret";
/// The four scopes of the Routing API (B.1).
pub const ALL_ROUTING_SCOPES: [&str; 4] = [
    "routing.routes.read",
    "routing.routes.write",
    "routing.router_groups.read",
    "routing.router_groups.write",
];

/// The endpoints a [`FakeUaa`] serves, for [`FakeUaa::hits`] and [`FakeUaa::respond_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET /.well-known/openid-configuration`
    OpenIdConfiguration,
    /// `GET /token_key`
    TokenKey,
    /// `GET /token_keys`
    TokenKeys,
    /// `POST /oauth/token`
    Token,
    /// Anything else (answered 404).
    Other,
    /// `GET /healthz`
    Healthz,
}

impl Endpoint {
    const ALL: [Endpoint; 6] = [
        Endpoint::OpenIdConfiguration,
        Endpoint::TokenKey,
        Endpoint::TokenKeys,
        Endpoint::Token,
        Endpoint::Other,
        Endpoint::Healthz,
    ];

    fn index(self) -> usize {
        match self {
            Endpoint::OpenIdConfiguration => 0,
            Endpoint::TokenKey => 1,
            Endpoint::TokenKeys => 2,
            Endpoint::Token => 3,
            Endpoint::Other => 4,
            Endpoint::Healthz => 5,
        }
    }

    fn of(path: &str) -> Endpoint {
        match path {
            "/.well-known/openid-configuration" => Endpoint::OpenIdConfiguration,
            "/token_key" => Endpoint::TokenKey,
            "/token_keys" => Endpoint::TokenKeys,
            "/oauth/token" => Endpoint::Token,
            "/healthz" => Endpoint::Healthz,
            _ => Endpoint::Other,
        }
    }
}

/// One RSA signing key with everything the endpoints publish about it: generated
/// ([`SigningKey::generate`]) or read from PEM ([`SigningKey::from_pem`]), for
/// [`UaaOptions::signing_key`].
pub struct SigningKey {
    kid: String,
    alg: Algorithm,
    /// PKCS#1 private key, PEM.
    encoding: EncodingKey,
    /// SubjectPublicKeyInfo, PEM (`-----BEGIN PUBLIC KEY-----`), as UAA's `value`.
    public_pem: String,
    /// Modulus and exponent, base64url without padding.
    n: String,
    e: String,
}

impl SigningKey {
    /// A fresh 2048-bit RS256 key named `kid`. Panics if the key cannot be generated.
    pub fn generate(kid: String) -> Self {
        let mut rng = rsa::rand_core::OsRng;
        let private =
            rsa::RsaPrivateKey::new(&mut rng, 2048).expect("fake UAA: generate RSA key pair");
        Self::from_private(kid, &private, Algorithm::RS256).expect("fake UAA: encode key")
    }

    /// The RSA private key in `pem` (`-----BEGIN RSA PRIVATE KEY-----`, PKCS#1, or
    /// `-----BEGIN PRIVATE KEY-----`, PKCS#8; text around the block is ignored) named `kid`,
    /// signing with `alg` (RS256, RS384 or RS512). An error says what is wrong with it.
    pub fn from_pem(kid: &str, pem: &str, alg: Algorithm) -> Result<Self, String> {
        let block = |label: &str| -> Option<&str> {
            let begin = format!("-----BEGIN {label}-----");
            let end = format!("-----END {label}-----");
            let start = pem.find(&begin)?;
            let stop = pem[start..].find(&end)? + start + end.len();
            Some(&pem[start..stop])
        };
        let private = if let Some(b) = block("RSA PRIVATE KEY") {
            rsa::RsaPrivateKey::from_pkcs1_pem(b)
                .map_err(|e| format!("invalid PKCS#1 RSA private key: {e}"))?
        } else if let Some(b) = block("PRIVATE KEY") {
            rsa::RsaPrivateKey::from_pkcs8_pem(b)
                .map_err(|e| format!("invalid PKCS#8 private key (an RSA key is required): {e}"))?
        } else if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
            return Err("encrypted private keys are not supported".to_string());
        } else if pem.contains("-----BEGIN") {
            return Err(
                "no RSA private key in the PEM (expected -----BEGIN RSA PRIVATE KEY----- or \
                 -----BEGIN PRIVATE KEY-----)"
                    .to_string(),
            );
        } else {
            return Err(
                "not a PEM RSA private key (symmetric/HMAC signing keys are not supported)"
                    .to_string(),
            );
        };
        Self::from_private(kid.to_string(), &private, alg)
    }

    fn from_private(
        kid: String,
        private: &rsa::RsaPrivateKey,
        alg: Algorithm,
    ) -> Result<Self, String> {
        if !matches!(alg, Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512) {
            return Err(format!(
                "signing algorithm {alg:?} is not supported (RS256, RS384 or RS512)"
            ));
        }
        let private_pem = private
            .to_pkcs1_pem(LineEnding::LF)
            .map_err(|e| format!("encode private key: {e}"))?;
        let public = private.to_public_key();
        let public_pem = public
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| format!("encode public key: {e}"))?;
        let encoding = EncodingKey::from_rsa_pem(private_pem.as_bytes())
            .map_err(|e| format!("signing key: {e}"))?;
        Ok(Self {
            kid,
            alg,
            encoding,
            public_pem,
            n: URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            e: URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
        })
    }

    /// The key id (`kid`).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The PEM public key (SubjectPublicKeyInfo), as `/token_key` serves it in `value`.
    pub fn public_key_pem(&self) -> &str {
        &self.public_pem
    }

    fn jwk(&self) -> Value {
        json!({
            "kty": "RSA",
            "e": self.e,
            "use": "sig",
            "kid": self.kid,
            "alg": format!("{:?}", self.alg),
            "value": self.public_pem,
            "n": self.n,
        })
    }
}

/// A client of a [`FakeUaa`] started with [`UaaOptions::clients`], as UAA's `oauth.clients`
/// declares one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UaaClient {
    pub id: String,
    /// Accepted secrets (UAA allows two during a rotation).
    pub secrets: Vec<String>,
    /// The client's authorities: what its client-credentials tokens carry as `scope`.
    pub authorities: Vec<String>,
    /// Whether `authorized-grant-types` includes `client_credentials`; if not, the token
    /// endpoint answers UAA's 401 `invalid_client` "Unauthorized grant type".
    pub client_credentials: bool,
    /// The client's `access-token-validity`; `None`: the server's lifetime.
    pub token_ttl: Option<Duration>,
}

/// TLS for a [`FakeUaa`] started with [`FakeUaa::start_with`].
#[derive(Default, Clone)]
pub enum UaaTls {
    /// Plain HTTP.
    #[default]
    Off,
    /// HTTPS with a certificate for `127.0.0.1` and `localhost` from the server's own
    /// [`TestCa`] (what [`FakeUaa::start_tls`] does).
    TestCa,
    /// HTTPS with this server configuration (see [`server_tls_from_pem`]).
    Config(Arc<rustls::ServerConfig>),
}

/// How [`FakeUaa::start_with`] starts a server; [`Default`] is [`FakeUaa::start`]'s test setup.
#[derive(Default)]
pub struct UaaOptions {
    /// Where to listen; default `127.0.0.1:0`. On an unspecified address (`0.0.0.0`, `::`) the
    /// URLs in `/.well-known/openid-configuration` use the request's `Host`.
    pub listen: Option<SocketAddr>,
    /// The signing key; default a generated 2048-bit key `key-1`.
    pub signing_key: Option<SigningKey>,
    /// The clients; default [`DEFAULT_CLIENT_ID`] alone.
    pub clients: Option<Vec<UaaClient>>,
    /// UAA's `issuer.uri`: tokens' `iss` and the discovered issuer are `<issuer_uri>/oauth/token`
    /// (UAA's rule); default the server's base URL.
    pub issuer_uri: Option<String>,
    pub tls: UaaTls,
    /// Lifetime of tokens from `/oauth/token` for clients without their own; default one hour.
    pub token_ttl: Option<Duration>,
    /// Print one line on stdout per token request answered (client id, scopes or the refusal).
    pub log_tokens: bool,
}

/// A rustls server configuration (HTTP/1.1) from a PEM certificate chain and PEM private key;
/// an error names which part is unusable.
pub fn server_tls_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate: invalid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("certificate: no CERTIFICATE block in the PEM".to_string());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("private key: no usable PEM private key: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("certificate and private key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

struct Client {
    secrets: Vec<String>,
    scopes: Vec<String>,
    client_credentials: bool,
    ttl: Option<Duration>,
}

struct State {
    base_url: String,
    /// `http` or `https`.
    scheme: &'static str,
    /// Listening on an unspecified address: discovery URLs use the request's `Host`.
    base_from_host: bool,
    log_tokens: bool,
    issuer: String,
    key: Mutex<Arc<SigningKey>>,
    key_generation: AtomicU64,
    hits: [AtomicU64; 6],
    overrides: Mutex<HashMap<Endpoint, (StatusCode, String)>>,
    clients: Mutex<HashMap<String, Client>>,
    token_ttl: Mutex<Duration>,
}

impl State {
    fn key(&self) -> Arc<SigningKey> {
        self.key.lock().expect("fake UAA key lock").clone()
    }
}

/// A fake UAA server (see the module docs). Stops on drop.
pub struct FakeUaa {
    addr: SocketAddr,
    state: Arc<State>,
    ca: Option<TestCa>,
    tls: bool,
    task: JoinHandle<()>,
}

impl Drop for FakeUaa {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeUaa {
    /// Starts a plain-HTTP fake UAA on `127.0.0.1:0`.
    pub async fn start() -> Self {
        Self::start_inner(false).await
    }

    /// Starts a fake UAA serving HTTPS on `127.0.0.1:0`, with a certificate for `127.0.0.1` and
    /// `localhost` issued by its own [`TestCa`] (see [`FakeUaa::ca`], [`FakeUaa::write_ca`]).
    pub async fn start_tls() -> Self {
        Self::start_inner(true).await
    }

    async fn start_inner(tls: bool) -> Self {
        let options = UaaOptions {
            tls: if tls { UaaTls::TestCa } else { UaaTls::Off },
            ..UaaOptions::default()
        };
        match Self::start_with(options).await {
            Ok(uaa) => uaa,
            Err(e) => panic!("fake UAA: {e}"),
        }
    }

    /// Starts a server as `options` say (see [`UaaOptions`]); an error if the address cannot be
    /// bound or the issuer is not an http(s) URL.
    pub async fn start_with(options: UaaOptions) -> Result<Self, String> {
        let listen = options
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| format!("bind {listen}: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("local_addr of {listen}: {e}"))?;
        let ca = matches!(options.tls, UaaTls::TestCa).then(|| TestCa::new("fake-uaa-ca"));
        let server_config = match &options.tls {
            UaaTls::Off => None,
            UaaTls::TestCa => ca
                .as_ref()
                .map(|ca| ca.server_config(&["127.0.0.1", "localhost"])),
            UaaTls::Config(config) => Some(config.clone()),
        };
        let tls = server_config.is_some();
        let scheme = if tls { "https" } else { "http" };
        let base_url = format!("{scheme}://{addr}");
        let issuer = match &options.issuer_uri {
            Some(uri) => {
                let uri = uri.trim().trim_end_matches('/');
                let parsed: hyper::Uri = uri
                    .parse()
                    .map_err(|e| format!("issuer {uri:?} is not a URL: {e}"))?;
                if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none()
                {
                    return Err(format!("issuer {uri:?} is not an http(s) URL"));
                }
                format!("{uri}/oauth/token")
            }
            None => format!("{base_url}/oauth/token"),
        };
        let clients: HashMap<String, Client> = match options.clients {
            Some(list) => list
                .into_iter()
                .map(|c| {
                    (
                        c.id,
                        Client {
                            secrets: c.secrets,
                            scopes: c.authorities,
                            client_credentials: c.client_credentials,
                            ttl: c.token_ttl,
                        },
                    )
                })
                .collect(),
            None => HashMap::from([(
                DEFAULT_CLIENT_ID.to_string(),
                Client {
                    secrets: vec![DEFAULT_CLIENT_SECRET.to_string()],
                    scopes: ALL_ROUTING_SCOPES.iter().map(|s| s.to_string()).collect(),
                    client_credentials: true,
                    ttl: None,
                },
            )]),
        };
        let key = options
            .signing_key
            .unwrap_or_else(|| SigningKey::generate("key-1".to_string()));
        let state = Arc::new(State {
            issuer,
            base_url,
            scheme,
            base_from_host: addr.ip().is_unspecified(),
            log_tokens: options.log_tokens,
            key: Mutex::new(Arc::new(key)),
            key_generation: AtomicU64::new(1),
            hits: Default::default(),
            overrides: Mutex::new(HashMap::new()),
            clients: Mutex::new(clients),
            token_ttl: Mutex::new(options.token_ttl.unwrap_or(Duration::from_secs(3600))),
        });
        let acceptor = server_config.map(tokio_rustls::TlsAcceptor::from);
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of file descriptors and the like: do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let st = st.clone();
                let acceptor = acceptor.clone();
                conns.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(handle(&st, req).await) }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Ok(Self {
            addr,
            state,
            ca,
            tls,
            task,
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` or `https://127.0.0.1:<port>`.
    pub fn base_url(&self) -> &str {
        &self.state.base_url
    }

    /// The URL without the port, for routing-api's `oauth.token_endpoint` (with
    /// [`FakeUaa::port`] as `oauth.port`): `http://127.0.0.1` or `https://127.0.0.1`.
    pub fn token_endpoint(&self) -> String {
        format!("{}://{}", self.state.scheme, self.addr.ip())
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// gorouter's `oauth` section for the client-credentials grant of [`DEFAULT_CLIENT_ID`]
    /// against this UAA, trusting the CA file `ca`. The endpoint is a bare host name, as BOSH
    /// renders it.
    pub fn gorouter_oauth(&self, ca: &std::path::Path) -> Value {
        json!({
            "token_endpoint": "127.0.0.1",
            "port": self.port(),
            "client_name": DEFAULT_CLIENT_ID,
            "client_secret": DEFAULT_CLIENT_SECRET,
            "ca_certs": ca.display().to_string(),
        })
    }

    /// The issuer announced by `/.well-known/openid-configuration` and put in tokens:
    /// `<base>/oauth/token` (`<issuer_uri>/oauth/token` with [`UaaOptions::issuer_uri`]).
    pub fn issuer(&self) -> &str {
        &self.state.issuer
    }

    /// The CA that issued the HTTPS certificate ([`FakeUaa::start_tls`], [`UaaTls::TestCa`]).
    pub fn ca(&self) -> Option<&TestCa> {
        self.ca.as_ref()
    }

    /// Writes the CA certificate to `dir/ca.pem` (for `oauth.ca_certs`) and returns its path.
    /// Panics on a plain-HTTP server.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        self.ca
            .as_ref()
            .expect("fake UAA: write_ca needs a server started with start_tls")
            .write_ca(dir)
    }

    /// The current key's PEM public key (what `/token_key` serves as `value`).
    pub fn public_key_pem(&self) -> String {
        self.state.key().public_pem.clone()
    }

    /// The current key's id (`kid` in `/token_key` and in minted tokens' headers).
    pub fn key_id(&self) -> String {
        self.state.key().kid.clone()
    }

    /// Replaces the signing key with a freshly generated one (new `kid`). Tokens signed before
    /// no longer verify against what `/token_key` and `/token_keys` serve.
    pub fn rotate_key(&self) {
        let generation = self.state.key_generation.fetch_add(1, Ordering::SeqCst) + 1;
        let key = SigningKey::generate(format!("key-{generation}"));
        *self.state.key.lock().expect("fake UAA key lock") = Arc::new(key);
    }

    /// How many requests `endpoint` has received (including overridden answers).
    pub fn hits(&self, endpoint: Endpoint) -> u64 {
        self.state.hits[endpoint.index()].load(Ordering::SeqCst)
    }

    /// Hits of every endpoint, for failure messages.
    pub fn all_hits(&self) -> Vec<(Endpoint, u64)> {
        Endpoint::ALL.iter().map(|e| (*e, self.hits(*e))).collect()
    }

    /// Makes `endpoint` answer `status` with `body` (served as `application/json`) until
    /// [`FakeUaa::reset`].
    pub fn respond_with(&self, endpoint: Endpoint, status: u16, body: &str) {
        let status = StatusCode::from_u16(status).expect("fake UAA: valid status code");
        self.state
            .overrides
            .lock()
            .expect("fake UAA overrides lock")
            .insert(endpoint, (status, body.to_string()));
    }

    /// Makes `endpoint` fail with a 500 until [`FakeUaa::reset`].
    pub fn fail(&self, endpoint: Endpoint) {
        self.respond_with(endpoint, 500, r#"{"error":"server_error"}"#);
    }

    /// Restores `endpoint`'s normal answers.
    pub fn reset(&self, endpoint: Endpoint) {
        self.state
            .overrides
            .lock()
            .expect("fake UAA overrides lock")
            .remove(&endpoint);
    }

    /// Registers (or replaces) a client for the client-credentials grant.
    pub fn add_client(&self, id: &str, secret: &str, scopes: &[&str]) {
        self.state
            .clients
            .lock()
            .expect("fake UAA clients lock")
            .insert(
                id.to_string(),
                Client {
                    secrets: vec![secret.to_string()],
                    scopes: scopes.iter().map(|s| s.to_string()).collect(),
                    client_credentials: true,
                    ttl: None,
                },
            );
    }

    /// Sets the lifetime of tokens handed out by `/oauth/token` (default one hour).
    pub fn set_token_ttl(&self, ttl: Duration) {
        *self.state.token_ttl.lock().expect("fake UAA ttl lock") = ttl;
    }

    /// UAA-like claims for a client-credentials token with `scopes`, issued now, valid for
    /// `ttl`, from this server's issuer. Tests may edit them and sign with
    /// [`FakeUaa::mint_claims`].
    pub fn claims(&self, scopes: &[&str], ttl: Duration) -> Value {
        claims_for(&self.state, DEFAULT_CLIENT_ID, scopes, ttl)
    }

    /// A valid RS256 token with `scopes`, expiring in `ttl`, signed with the current key.
    pub fn mint(&self, scopes: &[&str], ttl: Duration) -> String {
        self.mint_claims(&self.claims(scopes, ttl))
    }

    /// A token like [`FakeUaa::mint`] but signed with `alg` (RS256, RS384 or RS512).
    pub fn mint_with_alg(&self, alg: Algorithm, scopes: &[&str], ttl: Duration) -> String {
        sign(&self.state.key(), alg, &self.claims(scopes, ttl))
    }

    /// A correctly signed token whose `exp` passed an hour ago (issued two hours ago).
    pub fn mint_expired(&self, scopes: &[&str]) -> String {
        let now = unix_now();
        let mut claims = self.claims(scopes, Duration::from_secs(3600));
        claims["iat"] = json!(now - 7200);
        claims["exp"] = json!(now - 3600);
        self.mint_claims(&claims)
    }

    /// A correctly signed token whose `nbf` is an hour in the future.
    pub fn mint_not_yet_valid(&self, scopes: &[&str]) -> String {
        let mut claims = self.claims(scopes, Duration::from_secs(7200));
        claims["nbf"] = json!(unix_now() + 3600);
        self.mint_claims(&claims)
    }

    /// A correctly signed, unexpired token from another issuer.
    pub fn mint_with_issuer(&self, issuer: &str, scopes: &[&str]) -> String {
        let mut claims = self.claims(scopes, Duration::from_secs(3600));
        claims["iss"] = json!(issuer);
        self.mint_claims(&claims)
    }

    /// An HS256 token keyed with the PEM public key as HMAC secret (the classic algorithm
    /// confusion attack): a validator must reject it.
    pub fn mint_hs256(&self, scopes: &[&str]) -> String {
        let key = self.state.key();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid.clone());
        let claims = self.claims(scopes, Duration::from_secs(3600));
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(key.public_pem.as_bytes()),
        )
        .expect("fake UAA: encode HS256 token")
    }

    /// An unsigned token (`"alg":"none"`, empty signature): a validator must reject it.
    pub fn mint_unsigned(&self, scopes: &[&str]) -> String {
        let header = json!({"alg": "none", "typ": "JWT"});
        let claims = self.claims(scopes, Duration::from_secs(3600));
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    /// Signs arbitrary `claims` with the current key (RS256 unless the key was given with
    /// another algorithm; the header carries its `kid`).
    pub fn mint_claims(&self, claims: &Value) -> String {
        let key = self.state.key();
        sign(&key, key.alg, claims)
    }

    /// Fetches a token from `/oauth/token` like a client would, with HTTP basic auth. Panics
    /// unless the answer is 200 with an `access_token`.
    pub async fn fetch_token(&self, client_id: &str, secret: &str) -> String {
        let basic = STANDARD.encode(format!("{client_id}:{secret}"));
        let (status, body) = self
            .post_token(Some(&basic), "grant_type=client_credentials")
            .await;
        assert_eq!(status, 200, "fake UAA token request: {body}");
        let v: Value = serde_json::from_str(&body).expect("fake UAA: token JSON");
        v["access_token"]
            .as_str()
            .expect("fake UAA: access_token")
            .to_string()
    }

    /// `POST /oauth/token` with `form` as body and, when given, `Authorization: Basic
    /// <basic>`; returns the status and body. Plain-HTTP servers only.
    pub async fn post_token(&self, basic: Option<&str>, form: &str) -> (u16, String) {
        assert!(
            !self.tls,
            "fake UAA: post_token supports plain-HTTP servers only"
        );
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("fake UAA: connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("fake UAA: handshake");
        tokio::spawn(conn);
        let mut req = Request::post("/oauth/token")
            .header(hyper::header::HOST, self.addr.to_string())
            .header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
        if let Some(basic) = basic {
            req = req.header(hyper::header::AUTHORIZATION, format!("Basic {basic}"));
        }
        let req = req
            .body(Full::new(Bytes::from(form.to_string())))
            .expect("fake UAA: request");
        let resp = sender.send_request(req).await.expect("fake UAA: send");
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("fake UAA: body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn claims_for(state: &State, client_id: &str, scopes: &[&str], ttl: Duration) -> Value {
    let now = unix_now();
    // UAA's audience: the client id plus each scope's resource (the part before the last dot).
    let mut aud: Vec<String> = vec![client_id.to_string()];
    for s in scopes {
        let resource = s.rsplit_once('.').map(|(r, _)| r).unwrap_or(s).to_string();
        if !aud.contains(&resource) {
            aud.push(resource);
        }
    }
    json!({
        "jti": uuid::Uuid::new_v4().simple().to_string(),
        "sub": client_id,
        "authorities": scopes,
        "scope": scopes,
        "client_id": client_id,
        "cid": client_id,
        "azp": client_id,
        "grant_type": "client_credentials",
        "rev_sig": "3b5a7b2f",
        "iat": now,
        "exp": now + ttl.as_secs(),
        "iss": state.issuer,
        "zid": "uaa",
        "aud": aud,
    })
}

fn sign(key: &SigningKey, alg: Algorithm, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).expect("fake UAA: sign token")
}

fn json_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    resp
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let endpoint = Endpoint::of(req.uri().path());
    state.hits[endpoint.index()].fetch_add(1, Ordering::SeqCst);
    let overridden = state
        .overrides
        .lock()
        .expect("fake UAA overrides lock")
        .get(&endpoint)
        .cloned();
    if let Some((status, body)) = overridden {
        return json_response(status, body);
    }
    match (endpoint, req.method()) {
        (Endpoint::OpenIdConfiguration, &Method::GET) => {
            let from_host = state
                .base_from_host
                .then(|| req.headers().get(hyper::header::HOST))
                .flatten()
                .and_then(|h| h.to_str().ok())
                .filter(|h| !h.is_empty() && h.parse::<http::uri::Authority>().is_ok())
                .map(|h| format!("{}://{h}", state.scheme));
            let base = from_host.as_ref().unwrap_or(&state.base_url);
            let body = json!({
                "issuer": state.issuer,
                "authorization_endpoint": format!("{base}/oauth/authorize"),
                "token_endpoint": format!("{base}/oauth/token"),
                "jwks_uri": format!("{base}/token_keys"),
                "response_types_supported": ["code", "token", "id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            });
            json_response(StatusCode::OK, body.to_string())
        }
        (Endpoint::TokenKey, &Method::GET) => {
            json_response(StatusCode::OK, state.key().jwk().to_string())
        }
        (Endpoint::TokenKeys, &Method::GET) => json_response(
            StatusCode::OK,
            json!({ "keys": [state.key().jwk()] }).to_string(),
        ),
        (Endpoint::Token, &Method::POST) => token_grant(state, req).await,
        (Endpoint::Healthz, &Method::GET) => {
            let mut resp = Response::new(Full::new(Bytes::from_static(b"ok\n")));
            resp.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain;charset=UTF-8"),
            );
            resp
        }
        (Endpoint::Other, _) => json_response(
            StatusCode::NOT_FOUND,
            r#"{"error":"not_found"}"#.to_string(),
        ),
        _ => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            r#"{"error":"method_not_allowed"}"#.to_string(),
        ),
    }
}

/// `POST /oauth/token` with `grant_type=client_credentials`.
async fn token_grant(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let basic = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, creds) = v.split_once(' ')?;
            if !scheme.eq_ignore_ascii_case("basic") {
                return None;
            }
            let decoded = STANDARD.decode(creds.trim()).ok()?;
            let decoded = String::from_utf8(decoded).ok()?;
            let (id, secret) = decoded.split_once(':')?;
            // Go's oauth2 package query-escapes both parts before encoding them.
            Some((percent_decode(id), percent_decode(secret)))
        });
    let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                r#"{"error":"invalid_request"}"#.to_string(),
            )
        }
    };
    let form: HashMap<String, String> = String::from_utf8_lossy(&body)
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        let grant = form.get("grant_type").map(String::as_str).unwrap_or("");
        token_log(
            state,
            &format!("token refused: grant_type={grant:?} (only client_credentials is supported)"),
        );
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": "unsupported_grant_type",
                   "error_description": "Only client_credentials is supported by the fake UAA"})
            .to_string(),
        );
    }
    let (id, secret) = match basic {
        Some(creds) => creds,
        None => (
            form.get("client_id").cloned().unwrap_or_default(),
            form.get("client_secret").cloned().unwrap_or_default(),
        ),
    };
    let looked_up = {
        let clients = state.clients.lock().expect("fake UAA clients lock");
        match clients.get(&id) {
            Some(c) if c.secrets.contains(&secret) => {
                Ok((c.scopes.clone(), c.client_credentials, c.ttl))
            }
            Some(_) => Err("bad secret"),
            None => Err("unknown client"),
        }
    };
    let (scopes, client_credentials, client_ttl) = match looked_up {
        Ok(found) => found,
        Err(why) => {
            token_log(state, &format!("token refused: client_id={id:?} ({why})"));
            let mut resp = json_response(
                StatusCode::UNAUTHORIZED,
                json!({"error": "unauthorized", "error_description": "Bad credentials"})
                    .to_string(),
            );
            resp.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static(
                    r#"Basic realm="UAA/client", error="unauthorized", error_description="Bad credentials""#,
                ),
            );
            return resp;
        }
    };
    if !client_credentials {
        token_log(
            state,
            &format!("token refused: client_id={id:?} (client_credentials is not among its authorized-grant-types)"),
        );
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_client",
                   "error_description": "Unauthorized grant type: client_credentials"})
            .to_string(),
        );
    }
    let ttl = client_ttl.unwrap_or_else(|| *state.token_ttl.lock().expect("fake UAA ttl lock"));
    let scope_refs: Vec<&str> = scopes.iter().map(String::as_str).collect();
    let claims = claims_for(state, &id, &scope_refs, ttl);
    let jti = claims["jti"].clone();
    let key = state.key();
    let token = sign(&key, key.alg, &claims);
    token_log(
        state,
        &format!(
            "token issued: client_id={id:?} scope={:?} expires_in={} kid={:?}",
            scopes.join(" "),
            ttl.as_secs(),
            key.kid
        ),
    );
    json_response(
        StatusCode::OK,
        json!({
            "access_token": token,
            "token_type": "bearer",
            "expires_in": ttl.as_secs().saturating_sub(1),
            "scope": scopes.join(" "),
            "jti": jti,
        })
        .to_string(),
    )
}

/// One line on stdout when the server logs tokens; a closed stdout is ignored.
fn token_log(state: &State, line: &str) {
    if state.log_tokens {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a+b%20c%3Ad"), "a b c:d");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%4"), "%4");
    }

    #[tokio::test]
    async fn serves_discovery_keys_and_tokens() {
        let uaa = FakeUaa::start().await;
        let token = uaa
            .fetch_token(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
            .await;
        assert_eq!(token.split('.').count(), 3);
        assert_eq!(uaa.hits(Endpoint::Token), 1);

        // The token verifies with the published PEM key and carries the client's scopes.
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(uaa.public_key_pem().as_bytes())
            .expect("decoding key");
        let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
        validation.validate_aud = false;
        validation.set_issuer(&[uaa.issuer()]);
        let data = jsonwebtoken::decode::<Value>(&token, &key, &validation).expect("valid token");
        assert_eq!(data.claims["scope"], json!(ALL_ROUTING_SCOPES));
        assert_eq!(data.header.kid.as_deref(), Some("key-1"));

        let old = uaa.mint(&["a"], Duration::from_secs(60));
        uaa.rotate_key();
        assert_eq!(uaa.key_id(), "key-2");
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(uaa.public_key_pem().as_bytes())
            .expect("decoding key");
        assert!(jsonwebtoken::decode::<Value>(&old, &key, &validation).is_err());
    }

    #[tokio::test]
    async fn start_with_options() {
        let key = SigningKey::generate("given".to_string());
        let public = key.public_key_pem().to_string();
        let uaa = FakeUaa::start_with(UaaOptions {
            signing_key: Some(key),
            clients: Some(vec![
                UaaClient {
                    id: "two".to_string(),
                    secrets: vec!["old".to_string(), "new".to_string()],
                    authorities: vec!["a.read".to_string()],
                    client_credentials: true,
                    token_ttl: Some(Duration::from_secs(60)),
                },
                UaaClient {
                    id: "user-only".to_string(),
                    secrets: vec!["s".to_string()],
                    authorities: vec!["uaa.none".to_string()],
                    client_credentials: false,
                    token_ttl: None,
                },
            ]),
            issuer_uri: Some("http://uaa.example:8080/".to_string()),
            ..UaaOptions::default()
        })
        .await
        .expect("start");
        assert_eq!(uaa.issuer(), "http://uaa.example:8080/oauth/token");
        assert_eq!(uaa.key_id(), "given");
        assert_eq!(uaa.public_key_pem(), public);
        for secret in ["old", "new"] {
            let (status, body) = uaa
                .post_token(
                    None,
                    &format!("grant_type=client_credentials&client_id=two&client_secret={secret}"),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            let v: Value = serde_json::from_str(&body).expect("json");
            assert_eq!(v["expires_in"], 59);
            assert_eq!(v["scope"], "a.read");
        }
        let basic = STANDARD.encode("user-only:s");
        let (status, body) = uaa
            .post_token(Some(&basic), "grant_type=client_credentials")
            .await;
        assert_eq!(status, 401);
        assert!(body.contains(r#""error":"invalid_client""#), "{body}");
        // The default client is not there when clients are given.
        let basic = STANDARD.encode(format!("{DEFAULT_CLIENT_ID}:{DEFAULT_CLIENT_SECRET}"));
        let (status, _) = uaa
            .post_token(Some(&basic), "grant_type=client_credentials")
            .await;
        assert_eq!(status, 401);
        assert!(FakeUaa::start_with(UaaOptions {
            issuer_uri: Some("uaa:8080".to_string()),
            ..UaaOptions::default()
        })
        .await
        .is_err());
    }

    #[test]
    fn signing_keys_from_pem() {
        let err = |pem: &str| match SigningKey::from_pem("k", pem, Algorithm::RS256) {
            Ok(_) => panic!("accepted {pem:?}"),
            Err(e) => e,
        };
        assert!(err("secret").contains("HMAC"));
        assert!(
            err("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----")
                .contains("no RSA private key")
        );
        assert!(
            err("-----BEGIN RSA PRIVATE KEY-----\nAA==\n-----END RSA PRIVATE KEY-----")
                .contains("PKCS#1")
        );
        let ec = rcgen::KeyPair::generate().expect("EC key").serialize_pem();
        assert!(err(&ec).contains("RSA key is required"), "{}", err(&ec));
        let key = SigningKey::generate("k".to_string());
        assert!(SigningKey::from_pem("k", key.public_key_pem(), Algorithm::RS256).is_err());
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("key");
        let pem = private.to_pkcs1_pem(LineEnding::LF).expect("pem");
        let key = SigningKey::from_pem(
            "k",
            &format!("junk\n{}\njunk", pem.as_str()),
            Algorithm::RS512,
        )
        .expect("PKCS#1 with text around it");
        assert_eq!(key.jwk()["alg"], "RS512");
        assert!(SigningKey::from_pem("k", &pem, Algorithm::HS256).is_err());
    }

    #[tokio::test]
    async fn healthz_is_ok() {
        let uaa = FakeUaa::start().await;
        let stream = tokio::net::TcpStream::connect(uaa.addr())
            .await
            .expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let req = Request::get("/healthz")
            .header(hyper::header::HOST, uaa.addr().to_string())
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = sender.send_request(req).await.expect("send");
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"ok\n");
        assert_eq!(uaa.hits(Endpoint::Healthz), 1);
    }

    #[tokio::test]
    async fn client_credentials_by_basic_auth_or_form() {
        let uaa = FakeUaa::start().await;
        uaa.add_client("c1", "s 1", &["x"]);
        // Basic auth with query-escaped parts, as Go's oauth2 sends them.
        let ok = uaa.fetch_token("c1", "s%201").await;
        assert!(!ok.is_empty());
        // Form fields.
        let (status, body) = uaa
            .post_token(
                None,
                "grant_type=client_credentials&client_id=c1&client_secret=s+1",
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["token_type"], "bearer");
        assert_eq!(v["scope"], "x");
        assert!(v["expires_in"].as_u64().expect("expires_in") > 3000);
        // Wrong secret, unknown grant.
        let basic = STANDARD.encode(format!("{DEFAULT_CLIENT_ID}:wrong"));
        let (status, _) = uaa
            .post_token(Some(&basic), "grant_type=client_credentials")
            .await;
        assert_eq!(status, 401);
        let (status, _) = uaa.post_token(Some(&basic), "grant_type=password").await;
        assert_eq!(status, 400);
        assert_eq!(uaa.hits(Endpoint::Token), 4);
    }
}
