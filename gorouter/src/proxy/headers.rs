//! Header rules for requests to backends and responses to clients (A.7, A.8, A.11).

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

/// Headers that never cross the proxy (Go's ReverseProxy list).
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

/// Whether any value of `name` contains `token` as a comma-separated, case-insensitive item.
pub fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// A websocket upgrade: `Connection` has the `upgrade` token and `Upgrade: websocket`.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    has_token(headers, &header::CONNECTION, "upgrade")
        && has_token(headers, &header::UPGRADE, "websocket")
}

/// Removes hop-by-hop headers and those named in `Connection`, except names in `keep`
/// (`hop_by_hop_headers_to_filter`, lowercase). `Te: trailers` survives, as in Go.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep: &[String]) {
    if headers.contains_key(header::CONNECTION) {
        let mut named: Vec<HeaderName> = Vec::new();
        for v in headers.get_all(header::CONNECTION) {
            let Ok(s) = v.to_str() else { continue };
            for t in s.split(',') {
                let t = t.trim();
                if t.is_empty() || keep.iter().any(|k| k.eq_ignore_ascii_case(t)) {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(t.as_bytes()) {
                    named.push(name);
                }
            }
        }
        for name in named {
            headers.remove(&name);
        }
    }
    let te_trailers = has_token(headers, &header::TE, "trailers");
    for name in standard_hop_by_hop() {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Appends the client IP to `X-Forwarded-For`, joining several incoming headers as Go does.
pub fn append_forwarded_for(headers: &mut HeaderMap, client_ip: &HeaderValue) {
    let mut values = headers.get_all(&X_FORWARDED_FOR).iter();
    let Some(first) = values.next() else {
        headers.insert(X_FORWARDED_FOR.clone(), client_ip.clone());
        return;
    };
    let mut joined = Vec::with_capacity(first.len() + client_ip.len() + 16);
    joined.extend_from_slice(first.as_bytes());
    for v in values {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(v.as_bytes());
    }
    joined.extend_from_slice(b", ");
    joined.extend_from_slice(client_ip.as_bytes());
    match HeaderValue::from_bytes(&joined) {
        Ok(v) => {
            headers.insert(X_FORWARDED_FOR.clone(), v);
        }
        Err(_) => {
            headers.insert(X_FORWARDED_FOR.clone(), client_ip.clone());
        }
    }
}

/// `X-Forwarded-Proto` rules: forced https, else sanitised, missing or empty -> the
/// connection's scheme, else passed through. "Empty" is Go's `Header.Get(..) == ""`: the first
/// value is empty (later values do not count), and the scheme then replaces every value.
pub fn set_forwarded_proto(headers: &mut HeaderMap, force_https: bool, sanitize: bool, tls: bool) {
    let scheme = if tls { "https" } else { "http" };
    let missing = headers
        .get(&X_FORWARDED_PROTO)
        .is_none_or(|v| v.as_bytes().is_empty());
    if force_https {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("https"));
    } else if sanitize || missing {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(scheme));
    }
}

/// Go's computed request header size (A.11), compared against `max_header_bytes`.
pub fn request_header_size(
    method: &str,
    request_uri: &str,
    proto: &str,
    headers: &HeaderMap,
    host: &str,
) -> usize {
    let mut size = method.len() + request_uri.len() + proto.len() + 5;
    for name in headers.keys() {
        if name == header::HOST {
            continue;
        }
        let mut n: usize = 0;
        let mut values_len = 0;
        for v in headers.get_all(name) {
            n += 1;
            values_len += v.len();
        }
        size += name.as_str().len() + values_len + 4 + n.saturating_sub(1);
    }
    size + host.len() + 8
}

/// Parses `X-CF-App-Instance: <app-guid>:<index>` (A.5's pattern). `None` when malformed.
pub fn parse_app_instance(value: &HeaderValue) -> Option<(&str, &str)> {
    let s = value.to_str().ok()?;
    let (guid, index) = s.split_once(':')?;
    let groups: Vec<&str> = guid.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    let guid_ok = groups.len() == 5
        && groups.iter().zip(lens).all(|(g, l)| {
            g.len() == l
                && g.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
    let index_ok = !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit());
    (guid_ok && index_ok).then_some((guid, index))
}

/// The value of the first cookie called `name` in the `Cookie` headers.
pub fn request_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get_all(header::COOKIE).iter().find_map(|v| {
        v.to_str().ok()?.split(';').find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.trim_matches('"'))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
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
    fn forwarded_for_appends_to_all_incoming_values() {
        let mut h = map(&[
            ("x-forwarded-for", "10.1.1.1"),
            ("x-forwarded-for", "10.2.2.2"),
        ]);
        append_forwarded_for(&mut h, &HeaderValue::from_static("127.0.0.1"));
        assert_eq!(h["x-forwarded-for"], "10.1.1.1, 10.2.2.2, 127.0.0.1");
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, &HeaderValue::from_static("127.0.0.1"));
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    }

    #[test]
    fn forwarded_proto_rules() {
        let mut h = map(&[("x-forwarded-proto", "https")]);
        set_forwarded_proto(&mut h, false, false, false);
        assert_eq!(h["x-forwarded-proto"], "https", "passed through");
        set_forwarded_proto(&mut h, false, true, false);
        assert_eq!(h["x-forwarded-proto"], "http", "sanitised");
        set_forwarded_proto(&mut h, true, true, false);
        assert_eq!(h["x-forwarded-proto"], "https", "forced");
        let mut h = HeaderMap::new();
        set_forwarded_proto(&mut h, false, false, false);
        assert_eq!(h["x-forwarded-proto"], "http");
        let mut h = map(&[("x-forwarded-proto", "")]);
        set_forwarded_proto(&mut h, false, false, false);
        assert_eq!(h["x-forwarded-proto"], "http", "empty is missing");
        let mut h = map(&[("x-forwarded-proto", "")]);
        set_forwarded_proto(&mut h, false, false, true);
        assert_eq!(h["x-forwarded-proto"], "https", "empty on TLS");
        let mut h = HeaderMap::new();
        h.append("x-forwarded-proto", HeaderValue::from_static(""));
        h.append("x-forwarded-proto", HeaderValue::from_static("https"));
        set_forwarded_proto(&mut h, false, false, false);
        let all: Vec<_> = h.get_all("x-forwarded-proto").iter().collect();
        assert_eq!(all, ["http"], "an empty first value replaces them all");
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
    fn app_instance_header_pattern() {
        let ok = HeaderValue::from_static("6e6b2f1e-0000-4000-8000-0123456789ab:12");
        assert_eq!(
            parse_app_instance(&ok),
            Some(("6e6b2f1e-0000-4000-8000-0123456789ab", "12"))
        );
        for bad in [
            "6E6B2F1E-0000-4000-8000-0123456789ab:1",
            "6e6b2f1e-0000-4000-8000-0123456789ab",
            "6e6b2f1e-0000-4000-8000-0123456789ab:x",
            "nope:1",
        ] {
            assert_eq!(
                parse_app_instance(&HeaderValue::from_static(bad)),
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn header_size_follows_go_formula() {
        let h = map(&[
            ("host", "a.com"),
            ("accept", "*/*"),
            ("x", "1"),
            ("x", "22"),
        ]);
        // GET / HTTP/1.1 -> 3+1+8+5 = 17; accept: 6+3+4 = 13; x: 1+3+4+1 = 9; host 5+8 = 13
        assert_eq!(request_header_size("GET", "/", "HTTP/1.1", &h, "a.com"), 52);
    }

    #[test]
    fn finds_request_cookie() {
        let h = map(&[("cookie", "a=1; JSESSIONID=abc; __VCAP_ID__=inst-1")]);
        assert_eq!(request_cookie(&h, "JSESSIONID"), Some("abc"));
        assert_eq!(request_cookie(&h, "__VCAP_ID__"), Some("inst-1"));
        assert_eq!(request_cookie(&h, "missing"), None);
    }
}
