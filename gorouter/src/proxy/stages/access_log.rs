//! The access-log record of a request (A.14), opened when the request is accepted or refused
//! and written when its response ends (see [`PendingLog`]).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::{self, HeaderName};
use http::Request;

use crate::access_log::{AccessLog, AccessLogRecord, RequestStrings};
use crate::proxy::body::PendingLog;
use crate::proxy::headers::{X_FORWARDED_FOR, X_FORWARDED_PROTO, X_VCAP_REQUEST_ID};
use crate::proxy::{proto_str, request_target, ClientConn, ProxySettings};

/// Opens the record with what the request says; `None` when there is no access log.
pub fn open<B>(
    sink: Option<&AccessLog>,
    req: &Request<B>,
    conn: &ClientConn,
    s: &ProxySettings,
    host: &str,
    started: Instant,
) -> Option<Box<PendingLog>> {
    let sink = sink?.clone();
    let h = req.headers();
    let value = |name: &HeaderName| h.get(name).map_or(&[][..], |v| v.as_bytes());
    let request = RequestStrings::new(
        [
            host.as_bytes(),
            req.method().as_str().as_bytes(),
            request_target(req).as_bytes(),
            value(&header::REFERER),
            value(&header::USER_AGENT),
            if s.log_forwarded_for {
                value(&X_FORWARDED_FOR)
            } else {
                &[]
            },
            value(&X_FORWARDED_PROTO),
            value(&X_VCAP_REQUEST_ID),
        ],
        s.extra_headers_to_log
            .iter()
            .map(|n| h.get(n.as_str()).map_or(&[][..], |v| v.as_bytes())),
    );
    let record = AccessLogRecord {
        request,
        received_at: Some(SystemTime::now() - started.elapsed()),
        proto: proto_str(req.version()),
        remote_addr: s.log_source_ip.then_some(conn.remote),
        ..Default::default()
    };
    // Boxed: the record is large, and the request's future and response move it around.
    Some(Box::new(PendingLog {
        sink,
        record,
        started,
        request_bytes: Arc::new(AtomicU64::new(0)),
        backend_started: None,
        backend_finished: None,
    }))
}
