//! The TLS ClientHello SNI peek of tcp-router (`tcp_router::sni::parse`), fed the first bytes
//! of a connection exactly as a client sends them.
//!
//! gorouter has no ClientHello parser of its own (rustls reads its handshakes), so this is the
//! only one in the tier.
//!
//! Invariants:
//! - no panic;
//! - `Incomplete` only while the first record is still short: never for a buffer of
//!   `MAX_RECORD` bytes or more (`peek_sni` would otherwise wait for bytes it has no room for);
//! - the answer depends on the first record only: once it is `Sni` or `NoSni`, more bytes do
//!   not change it, and a prefix of an `Sni` input is `Incomplete` or the same `Sni`;
//! - a host name found is at most 255 bytes... as far as the record says (bounded by the input).
use tcp_router::sni::{parse, Hello, MAX_RECORD};

/// Runs this target's checks on one input; panics on a violated invariant.
pub fn check(data: &[u8]) {
    let hello = parse(data);
    if data.len() >= MAX_RECORD {
        assert_ne!(hello, Hello::Incomplete, "a full buffer must be decided");
    }
    match &hello {
        Hello::Incomplete => {}
        Hello::Sni(name) => {
            assert!(name.len() <= data.len(), "SNI longer than the input");
            // More bytes after a decided hello do not change the answer.
            let mut longer = data.to_vec();
            longer.extend_from_slice(b"\x16\x03\x01\x00\x05hello");
            assert_eq!(parse(&longer), hello);
            // Every prefix is either still incomplete or already the same answer.
            for cut in [data.len() / 2, data.len().saturating_sub(1)] {
                let p = parse(&data[..cut]);
                assert!(
                    p == Hello::Incomplete || p == hello,
                    "prefix {cut}: {p:?} vs {hello:?}"
                );
            }
        }
        Hello::NoSni => {
            let mut longer = data.to_vec();
            longer.push(0);
            assert_eq!(parse(&longer), Hello::NoSni);
        }
    }
}
