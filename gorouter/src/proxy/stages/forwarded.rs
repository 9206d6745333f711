//! Request headers for the backend (A.7): hop-by-hop removal, `X-Forwarded-For`,
//! `X-Forwarded-Proto`, `X-Request-Start`, the consumed `X-CF-App-Instance`, the `Connection`
//! header of the backend request, and the chosen endpoint's `X-CF-*` identity headers.

use std::time::SystemTime;

use http::header::{self, Entry, HeaderMap, HeaderValue};

use crate::proxy::headers::*;
use crate::proxy::{ClientConn, ProxySettings};
use crate::registry::Endpoint;

/// Rewrites the client's headers into the backend request's, before the client certificate
/// stage (which must see `X-Forwarded-Client-Cert` as the client sent it). Route-service
/// traffic (`signed`) keeps the `X-Forwarded-Proto` the route service sent (A.7).
/// `received` is when the request arrived (`X-Request-Start`).
pub fn prepare(
    h: &mut HeaderMap,
    conn: &ClientConn,
    s: &ProxySettings,
    signed: bool,
    received: SystemTime,
) {
    let request_start = has_header(h, &X_REQUEST_START);
    remove_hop_by_hop(h, &s.hop_by_hop_keep);
    append_forwarded_for(h, &conn.remote_ip);
    if !signed {
        set_forwarded_proto(
            h,
            s.force_forwarded_proto_https,
            s.sanitize_forwarded_proto,
            conn.tls,
        );
    }
    if !request_start {
        let ms = received
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        // Digits copied once (`HeaderValue::from(u64)` allocates twice).
        if let Ok(v) = HeaderValue::from_str(itoa::Buffer::new().format(ms)) {
            h.insert(X_REQUEST_START.clone(), v);
        }
    }
    if has_header(h, &X_CF_APP_INSTANCE) {
        h.remove(&X_CF_APP_INSTANCE);
    }
}

/// The backend request's `Connection`: `Upgrade` for websockets; `close` for 100-continue
/// exchanges (upstream closes them) and when keep-alives are disabled (Go's transport says
/// `close` on every request then).
pub fn set_connection(h: &mut HeaderMap, websocket: bool, close: bool) {
    if websocket {
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    } else if close {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// `X-CF-ApplicationID`, `X-CF-InstanceIndex`, `X-CF-InstanceID` for the chosen endpoint;
/// values a client sent are never passed on.
pub fn set_endpoint_headers(h: &mut HeaderMap, e: &Endpoint) {
    for (name, value) in [
        (&X_CF_APPLICATION_ID, e.app_id_header()),
        (&X_CF_INSTANCE_INDEX, e.instance_index_header()),
        (&X_CF_INSTANCE_ID, e.instance_id_header()),
    ] {
        match value {
            Some(v) => {
                h.insert(name.clone(), v);
            }
            None => {
                h.remove(name);
            }
        }
    }
}

/// Appends the client IP to `X-Forwarded-For`, joining several incoming headers as Go does.
pub fn append_forwarded_for(headers: &mut HeaderMap, client_ip: &HeaderValue) {
    // One lookup for reading and writing (an entry), not a `get_all` and an `insert`.
    let mut entry = match headers.entry(&X_FORWARDED_FOR) {
        Entry::Vacant(v) => {
            v.insert(client_ip.clone());
            return;
        }
        Entry::Occupied(o) => o,
    };
    let mut joined = Vec::with_capacity(entry.get().len() + client_ip.len() + 16);
    for (i, v) in entry.iter().enumerate() {
        if i > 0 {
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    joined.extend_from_slice(b", ");
    joined.extend_from_slice(client_ip.as_bytes());
    entry.insert(HeaderValue::from_bytes(&joined).unwrap_or_else(|_| client_ip.clone()));
}

/// `X-Forwarded-Proto` rules: forced https, else sanitised, missing or empty -> the
/// connection's scheme, else passed through. "Empty" is Go's `Header.Get(..) == ""`: the first
/// value is empty (later values do not count), and the scheme then replaces every value.
pub fn set_forwarded_proto(headers: &mut HeaderMap, force_https: bool, sanitize: bool, tls: bool) {
    let proto = HeaderValue::from_static(if force_https || tls { "https" } else { "http" });
    match headers.entry(&X_FORWARDED_PROTO) {
        Entry::Vacant(v) => {
            v.insert(proto);
        }
        Entry::Occupied(mut o) => {
            if force_https || sanitize || o.get().as_bytes().is_empty() {
                o.insert(proto);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::headers::tests::map;

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
}
