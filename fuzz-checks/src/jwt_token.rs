//! UAA bearer tokens as the Routing API checks them (`routing_api::auth::TokenValidator`):
//! the `Authorization` header's scheme, the JOSE header, the algorithm, the signature and the
//! claims (`iss`, `exp`, `nbf`, `scope`).
//!
//! The validator is real: it discovers its issuer and key from a minimal UAA stub served by
//! this process on loopback (`/.well-known/openid-configuration`, `/token_key`), as it does
//! from UAA. Byte 0 picks the mode:
//! - raw: the rest is the `Authorization` header value, byte for byte;
//! - signed: the rest is `<JOSE header JSON>\n<claims JSON>`; the target base64url-encodes
//!   both and signs them with the stub's private key, so the fuzzer reaches the claim checks
//!   behind the signature (arbitrary bytes never get past it).
//!
//! Invariants:
//! - no panic;
//! - a token is accepted only if its claims say so: `scope` is an array holding the required
//!   scope, `iss` is the discovered issuer, `exp` is a number in the future, `nbf` (if a
//!   number) is not in the future, and the header's `alg` is RS256/RS384/RS512;
//! - raw bytes that were not signed by the stub's key are never accepted.
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::HeaderValue;
use jsonwebtoken::{Algorithm, EncodingKey};
use routing_api::auth::{TokenValidator, UaaConfig};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::Value;

const SCOPE: &str = "routing.routes.write";
/// RSA under the sanitizer costs milliseconds per signature: a 1024-bit key keeps the signed
/// mode fast enough to fuzz (the validator does not look at the key size).
const KEY_BITS: usize = 1024;
/// A fixed issuer (not the stub's URL, whose port changes) so that seeds can carry it.
const ISSUER: &str = "https://uaa.fuzz.example/oauth/token";

struct Fixture {
    rt: tokio::runtime::Runtime,
    validator: TokenValidator,
    issuer: String,
    key: EncodingKey,
}

/// A UAA that only knows discovery and its one key, on a thread of its own (plain HTTP/1.1,
/// one request per connection).
fn uaa_stub(public_pem: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the UAA stub");
    let base = format!("http://{}", listener.local_addr().expect("stub address"));
    let discovery = serde_json::json!({ "issuer": ISSUER }).to_string();
    let token_key = serde_json::json!({
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": "fuzz-key", "value": public_pem,
    })
    .to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let line = String::from_utf8_lossy(&req);
            let (status, body) = if line.starts_with("GET /.well-known/openid-configuration ") {
                ("200 OK", discovery.as_str())
            } else if line.starts_with("GET /token_key ") {
                ("200 OK", token_key.as_str())
            } else {
                ("404 Not Found", "{}")
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    base
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let private =
            rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, KEY_BITS).expect("RSA key");
        let public_pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("public PEM");
        let private_pem = private.to_pkcs1_pem(LineEnding::LF).expect("private PEM");
        let key = EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("signing key");
        let base = uaa_stub(public_pem);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let config = UaaConfig {
            token_endpoint: base.clone(),
            // The stub speaks plain http; routing-api refuses that unless allowed.
            allow_plain_http: true,
            ..Default::default()
        };
        let validator = rt
            .block_on(TokenValidator::discover(&config))
            .expect("discovery against the UAA stub")
            // A forged token may trigger one key refetch; never more (no network per input).
            .with_min_refetch_interval(Duration::from_secs(24 * 3600));
        let f = Fixture {
            rt,
            validator,
            issuer: ISSUER.to_string(),
            key,
        };
        // The signed mode must be able to pass: a well-formed token is accepted.
        let claims = serde_json::json!({
            "iss": ISSUER, "scope": [SCOPE], "exp": now() as u64 + 3600, "client_id": "fuzz",
        });
        let token = signed_token(
            &f,
            br#"{"alg":"RS256","kid":"fuzz-key"}"#,
            claims.to_string().as_bytes(),
            Algorithm::RS256,
        );
        f.rt.block_on(f.validator.check(Some(&token), SCOPE))
            .expect("the harness's own valid token is accepted");
        f
    })
}

/// `bearer <header>.<claims>.<signature>`, signed with the stub's key.
fn signed_token(f: &Fixture, header: &[u8], claims: &[u8], alg: Algorithm) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &f.key, alg).expect("sign");
    format!("bearer {message}.{signature}")
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// What an accepted token's parts must say.
fn assert_acceptable(header: &[u8], claims: &[u8], issuer: &str) {
    // Invalid UTF-8 inside ignored strings is tolerated (as Go's decoder replaces it).
    let header: Value = serde_json::from_str(&String::from_utf8_lossy(header))
        .expect("accepted token: header is JSON");
    assert!(
        matches!(header["alg"].as_str(), Some("RS256" | "RS384" | "RS512")),
        "accepted alg {:?}",
        header["alg"]
    );
    let claims: Value = serde_json::from_str(&String::from_utf8_lossy(claims))
        .expect("accepted token: claims are JSON");
    let scopes = claims["scope"]
        .as_array()
        .expect("accepted token: scope is an array");
    assert!(
        scopes.iter().any(|s| s == SCOPE),
        "accepted without the scope: {claims}"
    );
    assert_eq!(
        claims["iss"].as_str(),
        Some(issuer),
        "accepted with iss {:?}",
        claims["iss"]
    );
    let exp = claims["exp"]
        .as_f64()
        .expect("accepted token: exp is a number");
    assert!(exp > now() - 1.0, "accepted an expired token: exp {exp}");
    if let Some(nbf) = claims["nbf"].as_f64() {
        assert!(
            nbf <= now() + 1.0,
            "accepted a token not yet valid: nbf {nbf}"
        );
    }
}

/// Runs this target's checks on one input; panics on a violated invariant.
pub fn check(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    if mode % 2 == 0 {
        // Raw header value, as a client sends it.
        let Ok(value) = HeaderValue::from_bytes(rest) else {
            return;
        };
        let result =
            f.rt.block_on(f.validator.check_header_value(Some(&value), SCOPE));
        assert!(result.is_err(), "an unsigned token was accepted: {value:?}");
        return;
    }
    // Header and claims signed with the stub's key.
    let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let (header, claims) = (&rest[..split], rest.get(split + 1..).unwrap_or(&[]));
    let alg = match mode % 6 {
        1 => Algorithm::RS256,
        3 => Algorithm::RS384,
        _ => Algorithm::RS512,
    };
    let token = signed_token(f, header, claims, alg);
    let result = f.rt.block_on(f.validator.check(Some(&token), SCOPE));
    if result.is_ok() {
        assert_acceptable(header, claims, &f.issuer);
    }
}
