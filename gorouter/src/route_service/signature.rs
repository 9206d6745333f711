//! The route-service signature (A.10), byte for byte as upstream makes it so routers and
//! route services built on upstream's code interoperate with ours:
//!
//! - key = PBKDF2-HMAC-SHA256(secret, empty salt, 100001 iterations, 16 bytes), derived once per
//!   secret ([`SignatureKey::derive`]) and never on the request path;
//! - AES-128-GCM with a random 12-byte nonce and no additional data;
//! - plaintext = Go's JSON of `{"forwarded_url":…,"requested_time":<RFC 3339, nanoseconds>}`
//!   (Go escapes `<`, `>` and `&` in strings, and so do we);
//! - `X-CF-Proxy-Signature` = URL-safe base64 with padding of ciphertext‖tag;
//! - `X-CF-Proxy-Metadata` = URL-safe base64 with padding of `{"nonce":"<standard base64>"}`.
//!
//! Errors read as Go's do, because they reach clients in the 502 body.

use std::fmt::Write as _;
use std::num::NonZeroU32;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const PBKDF2_ITERATIONS: u32 = 100_001;

/// An AES-128-GCM key derived from a route-services secret.
pub struct SignatureKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for SignatureKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignatureKey(..)")
    }
}

/// What a signature says: the URL the client asked for and when the router signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureContents {
    pub forwarded_url: String,
    pub requested_time: SystemTime,
}

/// The two headers of a first-pass request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub signature: String,
    pub metadata: String,
}

/// Why a signature did not open, in Go's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("No metadata found")]
    NoMetadata,
    #[error("illegal base64 data at input byte {0}")]
    Base64(usize),
    #[error("{0}")]
    Json(String),
    #[error("incorrect nonce length")]
    NonceLength,
    #[error("cipher: message authentication failed")]
    Authentication,
    #[error("parsing time {0:?} as RFC 3339: {1}")]
    Time(String, String),
}

impl SignatureKey {
    /// Derives the key of `secret` (tens of milliseconds: call once per secret, at start).
    pub fn derive(secret: &str) -> Self {
        let mut key = [0u8; 16];
        let iterations = NonZeroU32::new(PBKDF2_ITERATIONS).unwrap_or(NonZeroU32::MIN);
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            b"",
            secret.as_bytes(),
            &mut key,
        );
        Self::from_key_bytes(&key)
    }

    fn from_key_bytes(key: &[u8; 16]) -> Self {
        // A 16-byte key is always valid for AES-128.
        let unbound = match UnboundKey::new(&AES_128_GCM, key) {
            Ok(k) => k,
            Err(_) => unreachable!("AES-128 takes a 16-byte key"),
        };
        Self {
            key: LessSafeKey::new(unbound),
        }
    }

    /// Signs `forwarded_url` at `now` with a fresh random nonce.
    pub fn sign(&self, forwarded_url: &str, now: SystemTime) -> SignedHeaders {
        let mut nonce = [0u8; NONCE_LEN];
        // The system RNG does not fail on Linux once booted; an all-zero nonce would only
        // weaken secrecy of this one signature, never its integrity.
        let _ = SystemRandom::new().fill(&mut nonce);
        self.sign_with_nonce(forwarded_url, now, nonce)
    }

    fn sign_with_nonce(
        &self,
        forwarded_url: &str,
        now: SystemTime,
        nonce: [u8; NONCE_LEN],
    ) -> SignedHeaders {
        let mut plain = String::with_capacity(forwarded_url.len() + 64);
        plain.push_str("{\"forwarded_url\":");
        go_json_string(&mut plain, forwarded_url);
        plain.push_str(",\"requested_time\":\"");
        rfc3339_nano(&mut plain, now);
        plain.push_str("\"}");
        let mut sealed = plain.into_bytes();
        if self
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut sealed,
            )
            .is_err()
        {
            unreachable!("AES-GCM seals any message shorter than 64 GiB");
        }
        let metadata = format!("{{\"nonce\":\"{}\"}}", STANDARD.encode(nonce));
        SignedHeaders {
            signature: URL_SAFE.encode(&sealed),
            metadata: URL_SAFE.encode(metadata),
        }
    }

    /// Opens the signature of a request back from a route service.
    pub fn open(
        &self,
        signature: &str,
        metadata: &str,
    ) -> Result<SignatureContents, SignatureError> {
        if metadata.is_empty() {
            return Err(SignatureError::NoMetadata);
        }
        let metadata = decode_url_safe(metadata)?;
        let metadata: Metadata =
            serde_json::from_slice(&metadata).map_err(|e| SignatureError::Json(e.to_string()))?;
        let nonce = match metadata.nonce {
            Some(n) => STANDARD
                .decode(n.as_bytes())
                .map_err(|e| SignatureError::Base64(base64_offset(&e)))?,
            None => Vec::new(),
        };
        let mut sealed = decode_url_safe(signature)?;
        let nonce: [u8; NONCE_LEN] = nonce
            .as_slice()
            .try_into()
            .map_err(|_| SignatureError::NonceLength)?;
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut sealed,
            )
            .map_err(|_| SignatureError::Authentication)?;
        let contents: RawContents =
            serde_json::from_slice(plain).map_err(|e| SignatureError::Json(e.to_string()))?;
        let requested_time = match contents.requested_time.as_deref() {
            // Go's zero time: long expired.
            None => SystemTime::UNIX_EPOCH,
            Some(t) => parse_rfc3339(t)?,
        };
        Ok(SignatureContents {
            forwarded_url: contents.forwarded_url.unwrap_or_default(),
            requested_time,
        })
    }
}

#[derive(serde::Deserialize)]
struct Metadata {
    nonce: Option<String>,
}

#[derive(serde::Deserialize)]
struct RawContents {
    forwarded_url: Option<String>,
    requested_time: Option<String>,
}

fn decode_url_safe(text: &str) -> Result<Vec<u8>, SignatureError> {
    URL_SAFE
        .decode(text.as_bytes())
        .map_err(|e| SignatureError::Base64(base64_offset(&e)))
}

fn base64_offset(e: &base64::DecodeError) -> usize {
    match e {
        base64::DecodeError::InvalidByte(at, _) | base64::DecodeError::InvalidLastSymbol(at, _) => {
            *at
        }
        base64::DecodeError::InvalidLength(len) => *len,
        base64::DecodeError::InvalidPadding => 0,
    }
}

/// Appends `s` as a JSON string the way Go's `encoding/json` writes it (HTML-safe).
fn go_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends `t` in Go's `time.RFC3339Nano` layout, in UTC: fractional seconds without trailing
/// zeros, none at all on a whole second.
fn rfc3339_nano(out: &mut String, t: SystemTime) {
    let since = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let dt = OffsetDateTime::UNIX_EPOCH + since;
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    );
    let nanos = dt.nanosecond();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
}

fn parse_rfc3339(text: &str) -> Result<SystemTime, SignatureError> {
    let dt = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| SignatureError::Time(text.to_string(), e.to_string()))?;
    Ok(SystemTime::from(dt))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors made with an independent implementation of upstream's algorithm (Python's
    // hashlib.pbkdf2_hmac and cryptography's AESGCM), fixed secret, nonce and time.
    const SECRET: &str = "super-secret-route-services-key";
    const KEY_HEX: &str = "50b9744ba103e84499d82bb22535f71b";
    const URL: &str = "https://app.rs.test/some/path?x=1&y=2";
    const SIG: &str = "hckjMXn-fMdTC6jTwDDTLXUDZ4ZZ3-L3VflG-B7CeNypDj4jMrDPPE5NnziqaB4bFhKjwN16fSWUGnKS7ZKi3FRBhTlAqPxYO3mZXa4uoZa92PFLSthDgGL-AJqPsiO8OKBh9D7CJJjMQkjB9nS0tHlCZxQQA_9Pzr12mxz6s8o=";
    const META: &str = "eyJub25jZSI6IkFBRUNBd1FGQmdjSUNRb0wifQ==";
    const OLD_SIG: &str = "niNvaD_iyTZcJEJPPloJutDjwWeG1BD4GwZsMLtqss_4U1NfhxltAcjlExuBnascq-0ONDxZEreIlslFzsE84cvw3_SOgWQE6k84xENwCU5fR7FFcsycgqgsTGMRsq0=";
    const OLD_META: &str = "eyJub25jZSI6Ii8vLy8vLy8vLy8vLy8vLy8ifQ==";

    /// 2026-12-05T10:00:00.123456789Z
    fn vector_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::new(1_796_464_800, 123_456_789)
    }

    fn key_bytes() -> [u8; 16] {
        let mut k = [0u8; 16];
        for (i, b) in k.iter_mut().enumerate() {
            *b = u8::from_str_radix(&KEY_HEX[i * 2..i * 2 + 2], 16).unwrap();
        }
        k
    }

    #[test]
    fn key_derivation_matches_upstreams_pbkdf2() {
        let derived = SignatureKey::derive(SECRET);
        let expected = SignatureKey::from_key_bytes(&key_bytes());
        // Same key <=> same ciphertext for the same nonce and plaintext.
        let nonce = [7u8; NONCE_LEN];
        assert_eq!(
            derived.sign_with_nonce(URL, vector_time(), nonce),
            expected.sign_with_nonce(URL, vector_time(), nonce)
        );
    }

    #[test]
    fn signing_with_upstreams_nonce_and_time_gives_upstreams_headers() {
        let key = SignatureKey::from_key_bytes(&key_bytes());
        let nonce: [u8; 12] = core::array::from_fn(|i| i as u8);
        let headers = key.sign_with_nonce(URL, vector_time(), nonce);
        assert_eq!(headers.signature, SIG);
        assert_eq!(headers.metadata, META);
    }

    #[test]
    fn a_signature_made_by_upstreams_algorithm_opens_to_its_contents() {
        let key = SignatureKey::derive(SECRET);
        let contents = key.open(SIG, META).unwrap();
        assert_eq!(contents.forwarded_url, URL);
        assert_eq!(contents.requested_time, vector_time());
    }

    #[test]
    fn a_signature_opens_only_with_its_own_secret() {
        let old = SignatureKey::derive("old-secret");
        let contents = old.open(OLD_SIG, OLD_META).unwrap();
        assert_eq!(contents.forwarded_url, "http://app.rs.test/");
        assert_eq!(
            contents.requested_time,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_464_800)
        );
        let current = SignatureKey::from_key_bytes(&key_bytes());
        assert_eq!(
            current.open(OLD_SIG, OLD_META),
            Err(SignatureError::Authentication)
        );
    }

    #[test]
    fn a_round_trip_through_sign_and_open_keeps_url_and_time() {
        let key = SignatureKey::from_key_bytes(&key_bytes());
        let now = SystemTime::now();
        let h = key.sign("https://a.test/<x>?q=\"1\"", now);
        let c = key.open(&h.signature, &h.metadata).unwrap();
        assert_eq!(c.forwarded_url, "https://a.test/<x>?q=\"1\"");
        let drift = now
            .duration_since(c.requested_time)
            .unwrap_or_else(|e| e.duration());
        assert!(drift < Duration::from_micros(1), "{drift:?}");
    }

    #[test]
    fn two_signatures_of_one_url_differ_by_nonce() {
        let key = SignatureKey::from_key_bytes(&key_bytes());
        let now = SystemTime::now();
        assert_ne!(key.sign(URL, now), key.sign(URL, now));
    }

    #[test]
    fn a_tampered_signature_fails_authentication() {
        let key = SignatureKey::from_key_bytes(&key_bytes());
        let mut tampered = SIG.to_string();
        tampered.replace_range(0..1, if SIG.starts_with('A') { "B" } else { "A" });
        assert_eq!(
            key.open(&tampered, META),
            Err(SignatureError::Authentication)
        );
    }

    #[test]
    fn malformed_headers_fail_with_gos_messages() {
        let key = SignatureKey::from_key_bytes(&key_bytes());
        assert_eq!(
            key.open(SIG, "").unwrap_err().to_string(),
            "No metadata found"
        );
        assert_eq!(
            key.open("!!!!", META).unwrap_err().to_string(),
            "illegal base64 data at input byte 0"
        );
        let short_nonce = URL_SAFE.encode(r#"{"nonce":"AAEC"}"#);
        assert_eq!(
            key.open(SIG, &short_nonce).unwrap_err(),
            SignatureError::NonceLength
        );
        let not_json = URL_SAFE.encode("nonce");
        assert!(matches!(
            key.open(SIG, &not_json),
            Err(SignatureError::Json(_))
        ));
    }

    #[test]
    fn go_json_escapes_html_and_controls() {
        let mut s = String::new();
        go_json_string(&mut s, "a&b<c>\"\\\n\u{1}");
        assert_eq!(s, r#""a\u0026b\u003cc\u003e\"\\\n\u0001""#);
    }

    #[test]
    fn rfc3339_nano_trims_trailing_zeros() {
        let mut s = String::new();
        rfc3339_nano(
            &mut s,
            SystemTime::UNIX_EPOCH + Duration::new(1_796_464_800, 120_000_000),
        );
        assert_eq!(s, "2026-12-05T10:00:00.12Z");
        s.clear();
        rfc3339_nano(
            &mut s,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_464_800),
        );
        assert_eq!(s, "2026-12-05T10:00:00Z");
    }

    #[test]
    fn times_with_offsets_parse() {
        assert_eq!(
            parse_rfc3339("2026-12-05T11:00:00.5+01:00").unwrap(),
            SystemTime::UNIX_EPOCH + Duration::new(1_796_464_800, 500_000_000)
        );
    }
}
