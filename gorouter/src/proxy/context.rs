//! What one request carries from stage to stage of [`Proxy::handle`](super::Proxy::handle).

use std::time::{Instant, SystemTime};

use http::HeaderValue;

use super::body::PendingLog;

/// When a request arrived, on the monotonic clock (for durations) and on the wall clock (for
/// `X-Request-Start` and the access log's time stamp), each read once.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub at: Instant,
    pub wall: SystemTime,
}

impl Received {
    pub fn now() -> Self {
        Self {
            at: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

pub struct RequestContext {
    pub started: Instant,
    /// The Host the request is routed on (with its port, as the client sent it).
    pub host: String,
    /// `X-Vcap-Request-Id` as sent to the backend.
    pub request_id: HeaderValue,
    /// `X-CF-App-Instance`: the one instance the request must go to.
    pub app_instance: Option<(String, String)>,
    /// `__VCAP_ID__` of a sticky session: the instance to try first.
    pub sticky_id: Option<String>,
    pub websocket: bool,
    pub expect_continue: bool,
    /// `X-Vcap-Trace` matched `trace_key`: add the debugging response headers.
    pub trace_requested: bool,
    pub log: Option<Box<PendingLog>>,
}
