//! The access-log record of a request (A.14), opened when the request is accepted or refused
//! and written when its response ends (see [`PendingLog`]).

use http::header::{self, HeaderMap, HeaderName};
use http::Request;

use crate::access_log::{AccessLog, AccessLogRecord, RequestStrings};
use crate::proxy::body::PendingLog;
use crate::proxy::context::Received;
use crate::proxy::headers::{X_FORWARDED_FOR, X_FORWARDED_PROTO, X_VCAP_REQUEST_ID};
use crate::proxy::{proto_str, request_target, ClientConn, ProxySettings};

/// The headers every line shows, in [`open`]'s order.
const LOGGED: [&HeaderName; 5] = [
    &header::REFERER,
    &header::USER_AGENT,
    &X_FORWARDED_FOR,
    &X_FORWARDED_PROTO,
    &X_VCAP_REQUEST_ID,
];

/// The first value of each [`LOGGED`] header (empty when absent), as `HeaderMap::get` gives
/// it, found in one pass over the request's few headers instead of a hashed lookup each.
fn logged_values(h: &HeaderMap) -> [&[u8]; 5] {
    let mut found: [Option<&[u8]>; 5] = [None; 5];
    for (name, value) in h {
        if let Some(i) = LOGGED.iter().position(|l| *l == name) {
            found[i].get_or_insert(value.as_bytes());
        }
    }
    found.map(|v| v.unwrap_or_default())
}

/// Opens the record with what the request says; `None` when there is no access log.
pub fn open<B>(
    sink: Option<&AccessLog>,
    req: &Request<B>,
    conn: &ClientConn,
    s: &ProxySettings,
    host: &str,
    received: Received,
) -> Option<Box<PendingLog>> {
    let sink = sink?.thread_lines();
    let h = req.headers();
    let [referer, user_agent, forwarded_for, forwarded_proto, request_id] = logged_values(h);
    let request = RequestStrings::new(
        [
            host.as_bytes(),
            req.method().as_str().as_bytes(),
            request_target(req).as_bytes(),
            referer,
            user_agent,
            if s.log_forwarded_for {
                forwarded_for
            } else {
                &[]
            },
            forwarded_proto,
            request_id,
        ],
        s.extra_headers_to_log
            .iter()
            .map(|n| h.get(n.as_str()).map_or(&[][..], |v| v.as_bytes())),
    );
    let record = AccessLogRecord {
        request,
        received_at: Some(received.wall),
        proto: proto_str(req.version()),
        remote_addr: s.log_source_ip.then_some(conn.remote),
        ..Default::default()
    };
    // Boxed: the record is large, and the request's future and response move it around.
    Some(Box::new(PendingLog {
        sink,
        record,
        started: received.at,
        finished: None,
        request_bytes: None,
        backend_started: None,
        backend_finished: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::headers::tests::map;

    #[test]
    fn logged_values_are_each_headers_first_value_as_get_gives_it() {
        let h = map(&[
            ("user-agent", "curl/8"),
            ("x-forwarded-for", "10.0.0.1"),
            ("accept", "*/*"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-vcap-request-id", "abc"),
        ]);
        let found = logged_values(&h);
        for (i, name) in LOGGED.iter().enumerate() {
            let want = h.get(*name).map_or(&[][..], |v| v.as_bytes());
            assert_eq!(found[i], want, "{name}");
        }
        assert_eq!(found[2], b"10.0.0.1");
        assert_eq!(found[0], b"");
    }
}
