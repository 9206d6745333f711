//! Routing API request bodies (B.2-B.4): `POST/DELETE /routing/v1/routes` (HTTP routes),
//! `POST /routing/v1/tcp_routes/create|delete` (TCP route mappings) and
//! `POST/PUT /routing/v1/router_groups`, decoded into the API's models and validated with the
//! API's validators (`routing_api::validation`).
//!
//! The decoding mirrors `routing_api::api::read_json` (Go's `json.Decoder.Decode`: the first
//! JSON value is scanned whole, trailing bytes ignored), which is private to the handler and
//! reads from a hyper body; the models and validators are the API's own.
//!
//! Input: byte 0 picks the endpoint, the rest is the body.
//!
//! Invariants:
//! - no panic;
//! - what passes validation serialises and decodes back to the same value, and still passes
//!   (the API stores and re-serves exactly what it accepted);
//! - a route valid for create is valid for delete.
use std::time::Duration;

use routing_api::validation::{
    validate_http_route, validate_router_groups, validate_tcp_mapping, DEFAULT_RESERVED_PORTS,
};
use routing_api_client::{HttpRoute, RouterGroup, TcpRouteMapping};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Serialize;

const MAX_TTL: Duration = Duration::from_secs(120);

/// `read_json`'s decoding, from bytes.
fn decode<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    let mut scan = serde_json::Deserializer::from_slice(body).into_iter::<IgnoredAny>();
    match scan.next() {
        Some(Ok(_)) => {}
        _ => return None,
    }
    serde_json::Deserializer::from_slice(body)
        .into_iter::<T>()
        .next()?
        .ok()
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(v: &T) {
    let json = serde_json::to_vec(v).expect("a decoded model serialises");
    let back: T = serde_json::from_slice(&json).expect("our own JSON decodes");
    assert_eq!(
        &back,
        v,
        "round trip through {:?}",
        String::from_utf8_lossy(&json)
    );
}

/// Runs this target's checks on one input; panics on a violated invariant.
pub fn check(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            let Some(routes) = decode::<Vec<HttpRoute>>(body) else {
                return;
            };
            for r in &routes {
                if validate_http_route(r, Some(MAX_TTL)).is_ok() {
                    round_trip(r);
                    assert!(
                        validate_http_route(r, None).is_ok(),
                        "valid for create, not delete: {r:?}"
                    );
                }
                let _ = validate_http_route(r, None);
            }
        }
        1 => {
            let Some(mappings) = decode::<Vec<TcpRouteMapping>>(body) else {
                return;
            };
            for m in &mappings {
                if validate_tcp_mapping(m, Some(MAX_TTL)).is_ok() {
                    round_trip(m);
                    assert!(
                        validate_tcp_mapping(m, None).is_ok(),
                        "valid for create, not delete: {m:?}"
                    );
                }
                let _ = validate_tcp_mapping(m, None);
                let _ = (m.tls_port(), m.sni_hostname());
            }
        }
        _ => {
            let Some(group) = decode::<RouterGroup>(body) else {
                return;
            };
            let seeded = RouterGroup {
                guid: "seed".into(),
                name: "default-tcp".into(),
                kind: "tcp".into(),
                reservable_ports: "1024-1033".into(),
            };
            for fail in [false, true] {
                if validate_router_groups(
                    &[seeded.clone(), group.clone()],
                    DEFAULT_RESERVED_PORTS,
                    fail,
                )
                .is_ok()
                {
                    round_trip(&group);
                }
            }
        }
    }
}
