//! The property checks of the routing tier's fuzz targets: one module per parser that reads
//! bytes from outside, each with a `check(data)` that panics when an invariant breaks.
//!
//! `fuzz/fuzz_targets/*.rs` hand these to libFuzzer (`scripts/fuzz-smoke`, nightly);
//! `tests/seed_replay.rs` runs them on stable over the committed seeds in `fuzz/seeds/` and
//! mutants of those ([`mutate`]), which is what CI runs on every change.

pub mod http_request_head;
pub mod jwt_token;
pub mod mutate;
pub mod nats_registration;
pub mod proxy_protocol;
pub mod reservable_ports;
pub mod route_emitter_config;
pub mod route_service_signature;
pub mod routing_api_json;
pub mod routing_api_query;
pub mod sse_frames;
pub mod tls_sni;

/// One fuzz target: its name (the file in `fuzz/fuzz_targets/` and the folder in
/// `fuzz/seeds/`), its check, and the largest input worth trying (libFuzzer's `-max_len` in
/// `scripts/fuzz-smoke` uses the same figures).
#[derive(Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub check: fn(&[u8]),
    pub max_len: usize,
}

/// Every target, in the order `cargo fuzz list` prints them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "http_request_head",
        check: http_request_head::check,
        max_len: 8192,
    },
    Target {
        name: "jwt_token",
        check: jwt_token::check,
        max_len: 4096,
    },
    Target {
        name: "nats_registration",
        check: nats_registration::check,
        max_len: 4096,
    },
    Target {
        name: "proxy_protocol",
        check: proxy_protocol::check,
        max_len: 1024,
    },
    Target {
        name: "reservable_ports",
        check: reservable_ports::check,
        max_len: 1024,
    },
    Target {
        name: "route_emitter_config",
        check: route_emitter_config::check,
        max_len: 8192,
    },
    Target {
        name: "route_service_signature",
        check: route_service_signature::check,
        max_len: 2048,
    },
    Target {
        name: "routing_api_json",
        check: routing_api_json::check,
        max_len: 4096,
    },
    Target {
        name: "routing_api_query",
        check: routing_api_query::check,
        max_len: 1024,
    },
    Target {
        name: "sse_frames",
        check: sse_frames::check,
        max_len: 8192,
    },
    // More than tcp_router::sni::MAX_RECORD (18437), so a full first record fits.
    Target {
        name: "tls_sni",
        check: tls_sni::check,
        max_len: 20000,
    },
];
