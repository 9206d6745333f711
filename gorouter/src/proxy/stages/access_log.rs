//! The access-log record of a request (A.14), opened when the request is accepted or refused
//! and written when its response ends (see [`PendingLog`]).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header;
use http::Request;

use crate::access_log::{AccessLog, AccessLogRecord};
use crate::proxy::body::PendingLog;
use crate::proxy::headers::{X_FORWARDED_FOR, X_FORWARDED_PROTO, X_VCAP_REQUEST_ID};
use crate::proxy::{proto_str, request_target, ClientConn, ProxySettings};

/// Opens the record with what the request says; `None` when there is no access log.
pub fn open<B>(
    sink: Option<&AccessLog>,
    req: &Request<B>,
    conn: &ClientConn,
    s: &ProxySettings,
    host: String,
    started: Instant,
) -> Option<Box<PendingLog>> {
    let sink = sink?.clone();
    let h = req.headers();
    let record = AccessLogRecord {
        host,
        received_at: Some(SystemTime::now() - started.elapsed()),
        method: req.method().as_str().to_string(),
        request_uri: request_target(req).to_string(),
        proto: proto_str(req.version()),
        referer: h.get(header::REFERER).cloned(),
        user_agent: h.get(header::USER_AGENT).cloned(),
        remote_addr: s.log_source_ip.then_some(conn.remote),
        x_forwarded_for: if s.log_forwarded_for {
            h.get(&X_FORWARDED_FOR).cloned()
        } else {
            None
        },
        x_forwarded_proto: h.get(&X_FORWARDED_PROTO).cloned(),
        vcap_request_id: h.get(&X_VCAP_REQUEST_ID).cloned(),
        extra_headers: s
            .extra_headers_to_log
            .iter()
            .map(|n| (n.clone(), h.get(n.as_str()).cloned()))
            .collect(),
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
