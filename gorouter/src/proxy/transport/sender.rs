//! The sending half of a backend connection: HTTP/1.1 (one request at a time, pooled while
//! idle) or HTTP/2 (multiplexed, shared by every request to that backend).

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2, TrySendError};

use crate::proxy::body::RequestBody;

pub enum Sender {
    Http1 {
        send: http1::SendRequest<RequestBody>,
        /// The serving thread ([`process_setup::runtime_threads`]) whose runtime drives the
        /// connection's task: requests sent from any other thread wake that runtime and are
        /// woken back, two cross-thread wake-ups (an `eventfd` write each) per request.
        home: usize,
    },
    Http2(http2::SendRequest<RequestBody>),
}

impl Sender {
    /// An HTTP/1.1 connection whose task was spawned on the calling thread's runtime.
    pub fn http1_driven_here(send: http1::SendRequest<RequestBody>) -> Self {
        Sender::Http1 {
            send,
            home: process_setup::runtime_threads::current_index(),
        }
    }

    pub fn is_closed(&self) -> bool {
        match self {
            Sender::Http1 { send, .. } => send.is_closed(),
            Sender::Http2(s) => s.is_closed(),
        }
    }

    pub fn is_ready(&self) -> bool {
        match self {
            Sender::Http1 { send, .. } => send.is_ready(),
            Sender::Http2(s) => s.is_ready(),
        }
    }

    pub async fn ready(&mut self) -> Result<(), hyper::Error> {
        match self {
            Sender::Http1 { send, .. } => send.ready().await,
            Sender::Http2(s) => s.ready().await,
        }
    }

    pub fn is_http2(&self) -> bool {
        matches!(self, Sender::Http2(_))
    }

    /// Sends `req`; a request that never left comes back in the error.
    pub async fn try_send_request(
        &mut self,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<RequestBody>>> {
        match self {
            Sender::Http1 { send, .. } => send.try_send_request(req).await,
            Sender::Http2(s) => s.try_send_request(req).await,
        }
    }
}
