//! Query strings the Routing API reads: `GET /routing/v1/tcp_routes?isolation_segment=...`
//! and `GET /routing/v1/router_groups?name=...` (`routing_api::api::query_values`, with its
//! percent-decoding), as they arrive in the request target.
//!
//! Invariants:
//! - no panic (escapes cut short, `%` at the end, invalid UTF-8 after decoding);
//! - every value found is the decoding of a `key=value` pair of the input: there are at most as
//!   many values as `&`-separated pairs;
//! - a query built from values escaped the way clients escape them (`form_urlencoded`) gives
//!   those values back in order.
use routing_api::api::query_values;

/// Runs this target's checks on one input; panics on a violated invariant.
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for key in ["isolation_segment", "name"] {
        let values = query_values(Some(&text), key);
        assert!(values.len() <= text.split('&').count());
    }
    assert!(query_values(None, "name").is_empty());

    // The input's `&`-separated parts as values, escaped as a client would escape them.
    let values: Vec<&str> = text.split('&').take(8).collect();
    let query: String = values
        .iter()
        .map(|v| {
            let escaped: String = form_urlencoded::byte_serialize(v.as_bytes()).collect();
            format!("name={escaped}")
        })
        .collect::<Vec<_>>()
        .join("&");
    let decoded = query_values(Some(&query), "name");
    assert_eq!(decoded, values, "query {query:?}");
}
