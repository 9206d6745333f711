//! Header names the router reads or writes, and the header rules shared by requests and
//! responses: hop-by-hop removal, comma-separated tokens, websocket upgrades, cookies (A.7, A.8).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
pub static X_REQUEST_START: HeaderName = HeaderName::from_static("x-request-start");
pub static X_VCAP_REQUEST_ID: HeaderName = HeaderName::from_static("x-vcap-request-id");
pub static X_CF_APPLICATION_ID: HeaderName = HeaderName::from_static("x-cf-applicationid");
pub static X_CF_INSTANCE_INDEX: HeaderName = HeaderName::from_static("x-cf-instanceindex");
pub static X_CF_INSTANCE_ID: HeaderName = HeaderName::from_static("x-cf-instanceid");
pub static X_CF_APP_INSTANCE: HeaderName = HeaderName::from_static("x-cf-app-instance");
pub static X_VCAP_TRACE: HeaderName = HeaderName::from_static("x-vcap-trace");
pub static X_VCAP_ROUTER: HeaderName = HeaderName::from_static("x-vcap-router");
pub static X_VCAP_BACKEND: HeaderName = HeaderName::from_static("x-vcap-backend");
pub static X_CF_ROUTE_ENDPOINT: HeaderName = HeaderName::from_static("x-cf-routeendpoint");
pub static X_CF_PROXY_SIGNATURE: HeaderName = HeaderName::from_static("x-cf-proxy-signature");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Headers that never cross the proxy (Go's ReverseProxy list); [`remove_hop_by_hop`] reads
/// the bits of `Connection` ([`CONNECTION_BIT`]) and `TE` ([`TE_BIT`]) by their places.
fn standard_hop_by_hop() -> [&'static HeaderName; 9] {
    [
        &header::CONNECTION,
        &PROXY_CONNECTION,
        &KEEP_ALIVE,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ]
}

/// Up to this many names [`has_header`] compares instead of looking the name up.
const SCAN_LIMIT: usize = 16;

/// `headers.contains_key(name)`, for a name most messages lack (`X-Request-Start`,
/// `X-CF-App-Instance`, `X-CF-Proxy-Signature`, `Connection`, `Cookie`, `Expect`). The
/// lookup hashes the name (a custom one a byte at a time, about 100 instructions) and probes
/// the table; comparing it with a message's dozen names costs less, as most differ in kind
/// (standard or not) or in length.
pub fn has_header(headers: &HeaderMap, name: &HeaderName) -> bool {
    if headers.keys_len() > SCAN_LIMIT {
        return headers.contains_key(name);
    }
    headers.keys().any(|k| k == name)
}

/// Whether any value of `name` contains `token` as a comma-separated, case-insensitive item.
pub fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    has_header(headers, name)
        && headers
            .get_all(name)
            .iter()
            .any(|v| value_has_token(v, token))
}

/// Whether one header value contains `token` as a comma-separated, case-insensitive item (a
/// value that is not visible ASCII holds none, as in hyper).
pub fn value_has_token(value: &HeaderValue, token: &str) -> bool {
    list_has_token(value.as_bytes(), token)
}

/// [`value_has_token`] for a value's bytes, before a `HeaderValue` is made of them. Visible
/// ASCII is what `HeaderValue::to_str` (and so hyper) accepts: tab and `' '..='~'`.
pub fn list_has_token(value: &[u8], token: &str) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        && value
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// A websocket upgrade: `Connection` has the `upgrade` token and `Upgrade: websocket`.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    has_token(headers, &header::CONNECTION, "upgrade")
        && has_token(headers, &header::UPGRADE, "websocket")
}

/// `Connection`'s bit in [`remove_hop_by_hop`]'s set of the names present.
const CONNECTION_BIT: u16 = 1 << 0;
/// `TE`'s bit in that set.
const TE_BIT: u16 = 1 << 5;

/// The bit of `name` in [`standard_hop_by_hop`]'s order, 0 for a name not in the list. A
/// match on the text tests the length first, which rules out nearly every name of a message
/// at once instead of comparing it with each of the nine.
fn hop_by_hop_bit(name: &HeaderName) -> u16 {
    match name.as_str() {
        "connection" => CONNECTION_BIT,
        "proxy-connection" => 1 << 1,
        "keep-alive" => 1 << 2,
        "proxy-authenticate" => 1 << 3,
        "proxy-authorization" => 1 << 4,
        "te" => TE_BIT,
        "trailer" => 1 << 6,
        "transfer-encoding" => 1 << 7,
        "upgrade" => 1 << 8,
        _ => 0,
    }
}

/// Removes hop-by-hop headers and those named in `Connection`, except names in `keep`
/// (`hop_by_hop_headers_to_filter`, lowercase). `Te: trailers` survives, as in Go.
///
/// One pass over the message's few header names finds which of the nine are present, so a
/// message without them costs no hash lookup and one with `Connection: keep-alive` or `close`
/// only the removals it needs.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep: &[String]) {
    let hop_by_hop = standard_hop_by_hop();
    let mut present = 0u16;
    for name in headers.keys() {
        present |= hop_by_hop_bit(name);
    }
    if present == 0 {
        return;
    }
    if present & CONNECTION_BIT != 0 {
        // Named by `Connection`: the names the nine do not cover, when present.
        let mut named: Vec<HeaderName> = Vec::new();
        for v in headers.get_all(header::CONNECTION) {
            named_by_connection(headers, v, &hop_by_hop, keep, &mut named);
        }
        for name in named {
            headers.remove(&name);
        }
    }
    // Without a `TE` there is nothing to look up.
    let te_trailers = present & TE_BIT != 0 && has_token(headers, &header::TE, "trailers");
    for (i, name) in hop_by_hop.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(*name);
        }
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The headers of `headers` that one `Connection` value names, other than the nine and
/// those in `keep`, pushed onto `named`.
fn named_by_connection(
    headers: &HeaderMap,
    value: &HeaderValue,
    hop_by_hop: &[&HeaderName],
    keep: &[String],
    named: &mut Vec<HeaderName>,
) {
    let Ok(s) = value.to_str() else { return };
    for t in s.split(',') {
        let t = t.trim();
        if t.is_empty()
            || hop_by_hop
                .iter()
                .any(|h| h.as_str().eq_ignore_ascii_case(t))
            || keep.iter().any(|k| k.eq_ignore_ascii_case(t))
        {
            continue;
        }
        // A scan of the few names, not `contains_key(t)`, which validates, lowercases and
        // hashes the text first (about 400 instructions for `close`); the name found is the
        // one to remove.
        if let Some(name) = headers.keys().find(|k| k.as_str().eq_ignore_ascii_case(t)) {
            named.push(name.clone());
        }
    }
}

/// The value of the first cookie called `name` in the `Cookie` headers.
pub fn request_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    if !has_header(headers, &header::COOKIE) {
        return None;
    }
    headers.get_all(header::COOKIE).iter().find_map(|v| {
        v.to_str().ok()?.split(';').find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.trim_matches('"'))
        })
    })
}

/// A header map of static pairs, for tests.
#[cfg(test)]
pub fn header_map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        h.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    h
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn each_hop_by_hop_name_has_its_place_in_the_list_as_its_bit_and_no_other_name_has_one() {
        for (i, name) in standard_hop_by_hop().into_iter().enumerate() {
            assert_eq!(hop_by_hop_bit(name), 1 << i, "{name}");
        }
        for name in [
            "host",
            "content-length",
            "x-forwarded-for",
            "tes",
            "upgrades",
        ] {
            assert_eq!(hop_by_hop_bit(&HeaderName::from_static(name)), 0, "{name}");
        }
    }

    #[test]
    fn the_connection_and_te_bits_are_their_places_in_the_list() {
        let list = standard_hop_by_hop();
        assert_eq!(
            *list[CONNECTION_BIT.trailing_zeros() as usize],
            header::CONNECTION
        );
        assert_eq!(*list[TE_BIT.trailing_zeros() as usize], header::TE);
    }

    /// A header map of `pairs`, in order (repeated names append), for tests.
    pub(crate) fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn a_list_holds_tokens_only_if_it_is_visible_ascii_as_in_hyper() {
        assert!(list_has_token(b"keep-alive, Close\t", "close"));
        assert!(!list_has_token(b"keep-alive, closed", "close"));
        assert!(!list_has_token(b"close, caf\xc3\xa9", "close"));
        assert!(!list_has_token(b"close\x7f", "close"));
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Custom-Hop, X-Forwarded-For"),
            ("x-custom-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("upgrade-insecure-requests", "1"),
            ("x-forwarded-for", "1.2.3.4"),
        ]);
        remove_hop_by_hop(&mut h, &["x-forwarded-for".into()]);
        assert!(h.get("connection").is_none());
        assert!(h.get("x-custom-hop").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get("proxy-connection").is_none());
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["upgrade-insecure-requests"], "1");
        assert_eq!(h["x-forwarded-for"], "1.2.3.4", "kept by the filter list");
    }

    #[test]
    fn names_in_every_connection_value_are_removed_whatever_their_case() {
        let mut h = map(&[
            ("connection", "close, X-ONE"),
            ("x-one", "1"),
            ("x-one", "2"),
            ("connection", " x-Two ,, absent"),
            ("x-two", "2"),
            ("close", "a header called close"),
            ("x-three", "3"),
        ]);
        remove_hop_by_hop(&mut h, &[]);
        assert!(h.get("x-one").is_none(), "every value of a named header");
        assert!(
            h.get("x-two").is_none(),
            "named in a second Connection value"
        );
        assert!(
            h.get("close").is_none(),
            "Go removes a header the token names"
        );
        assert!(h.get("connection").is_none());
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-three"], "3");
    }

    #[test]
    fn each_hop_by_hop_header_alone_is_removed() {
        for name in [
            "connection",
            "proxy-connection",
            "keep-alive",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ] {
            let mut h = map(&[(name, "x"), ("x-app", "1")]);
            remove_hop_by_hop(&mut h, &[]);
            assert!(h.get(name).is_none(), "{name} removed");
            assert_eq!(h["x-app"], "1", "{name}: other headers stay");
        }
    }

    #[test]
    fn a_message_without_hop_by_hop_headers_is_left_as_it_is() {
        let mut h = map(&[("host", "a.example.com"), ("x-app", "1"), ("x-app", "2")]);
        let before = h.clone();
        remove_hop_by_hop(&mut h, &[]);
        assert_eq!(h, before);
    }

    #[test]
    fn has_header_agrees_with_contains_key_on_small_and_large_maps() {
        let names = [
            "x-request-start",
            "x-cf-app-instance",
            "host",
            "x-b3-spanid",
        ];
        for extra in [0usize, 3, SCAN_LIMIT + 4] {
            let mut h = map(&[("host", "a"), ("x-request-start", "1")]);
            for i in 0..extra {
                h.append(
                    HeaderName::from_bytes(format!("x-extra-{i}").as_bytes()).unwrap(),
                    HeaderValue::from_static("v"),
                );
            }
            for name in names {
                let name = HeaderName::from_static(name);
                assert_eq!(
                    has_header(&h, &name),
                    h.contains_key(&name),
                    "{name}, {extra} more"
                );
            }
        }
    }

    #[test]
    fn websocket_upgrade_needs_both_tokens() {
        assert!(is_websocket_upgrade(&map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket")
        ])));
        assert!(!is_websocket_upgrade(&map(&[("upgrade", "websocket")])));
    }

    #[test]
    fn finds_request_cookie() {
        let h = map(&[("cookie", "a=1; JSESSIONID=abc; __VCAP_ID__=inst-1")]);
        assert_eq!(request_cookie(&h, "JSESSIONID"), Some("abc"));
        assert_eq!(request_cookie(&h, "__VCAP_ID__"), Some("inst-1"));
        assert_eq!(request_cookie(&h, "missing"), None);
    }
}
