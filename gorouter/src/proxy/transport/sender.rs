//! The sending half of a backend connection: HTTP/1.1 through hyper's client (one request at
//! a time, pooled while idle), HTTP/1.1 spoken inline by the request's task ([`inline`],
//! requests without a body), or HTTP/2 (multiplexed, shared by every
//! request to that backend).
//!
//! [`inline`]: super::inline

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2, TrySendError};

use super::inline::InlineHttp1;
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
    /// Boxed: a request's futures, its response and its body move the connection they hold,
    /// and a box moves as a pointer (the connection's state is about 100 bytes).
    Inline(Box<InlineHttp1>),
}

/// A connection hyper's client drives, borrowed from a [`Sender`] to send one request.
pub enum HyperSender<'a> {
    Http1(&'a mut http1::SendRequest<RequestBody>),
    Http2(&'a mut http2::SendRequest<RequestBody>),
}

impl HyperSender<'_> {
    /// Sends `req`; a request that never left comes back in the error.
    pub async fn try_send_request(
        self,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<RequestBody>>> {
        match self {
            HyperSender::Http1(send) => send.try_send_request(req).await,
            HyperSender::Http2(send) => send.try_send_request(req).await,
        }
    }
}

impl Sender {
    /// An HTTP/1.1 connection whose task was spawned on the calling thread's runtime.
    pub fn http1_driven_here(send: http1::SendRequest<RequestBody>) -> Self {
        Sender::Http1 {
            send,
            home: process_setup::runtime_threads::current_index(),
        }
    }

    /// The serving thread an HTTP/1.1 connection belongs to (see [`Sender::Http1`]).
    pub fn home(&self) -> Option<usize> {
        match self {
            Sender::Http1 { home, .. } => Some(*home),
            Sender::Inline(conn) => Some(conn.home()),
            Sender::Http2(_) => None,
        }
    }

    /// Whether the connection can carry no more requests. `&mut`: an idle TLS connection is
    /// looked at by reading what the backend sent on it.
    pub fn is_closed(&mut self) -> bool {
        match self {
            Sender::Http1 { send, .. } => send.is_closed(),
            Sender::Http2(s) => s.is_closed(),
            Sender::Inline(conn) => conn.is_closed(),
        }
    }

    /// Whether a request can be sent now; an idle inline connection always can.
    pub fn is_ready(&self) -> bool {
        match self {
            Sender::Http1 { send, .. } => send.is_ready(),
            Sender::Http2(s) => s.is_ready(),
            Sender::Inline(_) => true,
        }
    }

    pub async fn ready(&mut self) -> Result<(), hyper::Error> {
        match self {
            Sender::Http1 { send, .. } => send.ready().await,
            Sender::Http2(s) => s.ready().await,
            Sender::Inline(_) => Ok(()),
        }
    }

    pub fn is_http2(&self) -> bool {
        matches!(self, Sender::Http2(_))
    }

    /// The hyper-driven connection, if this is one.
    pub fn hyper(&mut self) -> Option<HyperSender<'_>> {
        match self {
            Sender::Http1 { send, .. } => Some(HyperSender::Http1(send)),
            Sender::Http2(send) => Some(HyperSender::Http2(send)),
            Sender::Inline(_) => None,
        }
    }
}
