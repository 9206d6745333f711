//! Route-service signatures coming back to gorouter in `X-CF-Proxy-Signature` and
//! `X-CF-Proxy-Metadata` (A.10): base64 decoding, the metadata JSON and its nonce, AES-GCM, the
//! signed JSON and its RFC 3339 time (`gorouter::route_service::signature::SignatureKey::open`).
//!
//! Byte 0 picks the mode:
//! - raw: the rest is `<signature>\n<metadata>`, header values as a client may send them;
//! - sealed: the rest is the plaintext, sealed with the router's key (derived as
//!   `SignatureKey::derive` does, checked at start), so the fuzzer reaches the JSON and the
//!   time parsing behind the cipher;
//! - round trip: the rest is a forwarded URL, signed with `sign` and opened again.
//!
//! Invariants: no panic; a raw pair never opens (it is not sealed with the key); a sealed
//! plaintext opens only if it is JSON (invalid UTF-8 in strings aside); `open(sign(url, t))` gives back `url` and `t` to the
//! second.
use std::num::NonZeroU32;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use gorouter::route_service::signature::SignatureKey;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};

const SECRET: &str = "fuzz-route-services-secret";
const NONCE: [u8; 12] = *b"fuzz-nonce-1";

struct Fixture {
    key: SignatureKey,
    sealer: LessSafeKey,
}

fn seal(sealer: &LessSafeKey, plain: &[u8]) -> (String, String) {
    let mut sealed = plain.to_vec();
    sealer
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(NONCE),
            Aad::empty(),
            &mut sealed,
        )
        .expect("seal");
    let metadata = format!("{{\"nonce\":\"{}\"}}", STANDARD.encode(NONCE));
    (URL_SAFE.encode(sealed), URL_SAFE.encode(metadata))
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        // The router's derivation (PBKDF2-HMAC-SHA256, empty salt, 100001 rounds, 16 bytes).
        let mut raw = [0u8; 16];
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(100_001).expect("non-zero"),
            b"",
            SECRET.as_bytes(),
            &mut raw,
        );
        let sealer = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &raw).expect("AES-128 key"));
        let key = SignatureKey::derive(SECRET);
        let (sig, meta) = seal(
            &sealer,
            br#"{"forwarded_url":"https://a.example.com/x","requested_time":"2026-01-02T03:04:05Z"}"#,
        );
        let opened = key.open(&sig, &meta).expect("the harness seals as the router does");
        assert_eq!(opened.forwarded_url, "https://a.example.com/x");
        Fixture { key, sealer }
    })
}

/// Runs this target's checks on one input; panics on a violated invariant.
pub fn check(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    match mode % 3 {
        0 => {
            let text = String::from_utf8_lossy(rest);
            let (sig, meta) = text.split_once('\n').unwrap_or((&text, ""));
            assert!(
                f.key.open(sig, meta).is_err(),
                "an unsealed signature opened"
            );
        }
        1 => {
            let (sig, meta) = seal(&f.sealer, rest);
            if f.key.open(&sig, &meta).is_ok() {
                // Invalid UTF-8 inside strings is tolerated (serde_json skips ignored fields' bytes,
                // Go replaces them), so the check is on the lossy text. It checks the syntax only:
                // an ignored field may hold a number no float can (1e400), which JSON allows and
                // Go's decoder skips too.
                serde_json::from_str::<serde::de::IgnoredAny>(&String::from_utf8_lossy(rest))
                    .expect("opened: plaintext is JSON");
            }
        }
        _ => {
            let url = String::from_utf8_lossy(rest);
            let now = SystemTime::now();
            let signed = f.key.sign(&url, now);
            let opened = f
                .key
                .open(&signed.signature, &signed.metadata)
                .expect("our own signature opens");
            assert_eq!(opened.forwarded_url, url);
            let secs = |t: SystemTime| {
                t.duration_since(UNIX_EPOCH)
                    .unwrap_or(Duration::ZERO)
                    .as_secs()
            };
            assert_eq!(secs(opened.requested_time), secs(now));
        }
    }
}
