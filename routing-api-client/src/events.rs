//! Typed Routing API event streams (B.6): `GET /routing/v1/events` (HTTP routes) and
//! `GET /routing/v1/tcp_routes/events` (TCP route mappings).
//!
//! An [`EventStream`] yields `Result<Event<T>, EventError>` both as a [`futures_core::Stream`]
//! and through the inherent async [`EventStream::next`]. Errors about one message (an unknown
//! event name, data that is not a route) are reported and the stream goes on; errors of the
//! connection or the framing are reported once and end the stream ([`EventError::is_fatal`]).
//! A clean end of the response body ends the stream (`None`); a message left incomplete at the
//! end is dropped, as the SSE rules say. No reconnection happens here: callers re-subscribe
//! (and re-list, since events are not replayed).

use std::collections::VecDeque;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use http_body::Body;
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use tokio::time::{Instant, Sleep};

use crate::models::EventAction;
use crate::sse::{SseError, SseMessage, SseParser};
use crate::transport::error_chain;

/// One route change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<T> {
    /// The SSE `id` (a per-connection counter on upstream's server).
    pub id: String,
    pub action: EventAction,
    /// The route (`HttpRoute` or `TcpRouteMapping`).
    pub route: T,
}

/// A problem with one message, or the end of the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// An event name other than `Upsert` / `Delete`; the stream goes on.
    #[error("unknown event '{name}' (id '{id}')")]
    UnknownEvent {
        id: String,
        name: String,
        data: String,
    },
    /// The data of an event is not the expected JSON; the stream goes on.
    #[error("invalid data in event '{name}' (id '{id}'): {error}")]
    InvalidData {
        id: String,
        name: String,
        error: String,
    },
    /// The stream broke the parser's size limits; fatal.
    #[error(transparent)]
    Framing(#[from] SseError),
    /// Reading the response failed; fatal.
    #[error("{0}")]
    Transport(String),
    /// Nothing (not even a keep-alive comment) arrived for this long; fatal.
    #[error("no data on the event stream for {0:?}")]
    IdleTimeout(Duration),
}

impl EventError {
    /// Whether the stream ended with this error.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            EventError::UnknownEvent { .. } | EventError::InvalidData { .. }
        )
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A stream of typed events read from an SSE response body.
pub struct EventStream<T> {
    body: BoxBody<Bytes, BoxError>,
    parser: SseParser,
    scratch: Vec<SseMessage>,
    pending: VecDeque<Result<Event<T>, EventError>>,
    finished: bool,
    idle_timeout: Option<Duration>,
    idle: Option<Pin<Box<Sleep>>>,
    _route: PhantomData<fn() -> T>,
}

// Nothing is pinned structurally: the body and the timer are boxed.
impl<T> Unpin for EventStream<T> {}

impl<T> std::fmt::Debug for EventStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("finished", &self.finished)
            .field("pending", &self.pending.len())
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

/// Turns one SSE message into an event of `T`.
pub fn decode_message<T: DeserializeOwned>(msg: SseMessage) -> Result<Event<T>, EventError> {
    let action = match msg.event.as_str() {
        "Upsert" => EventAction::Upsert,
        "Delete" => EventAction::Delete,
        _ => {
            return Err(EventError::UnknownEvent {
                id: msg.id,
                name: msg.event,
                data: msg.data,
            })
        }
    };
    match serde_json::from_str::<T>(&msg.data) {
        Ok(route) => Ok(Event {
            id: msg.id,
            action,
            route,
        }),
        Err(e) => Err(EventError::InvalidData {
            id: msg.id,
            name: msg.event,
            error: e.to_string(),
        }),
    }
}

impl<T: DeserializeOwned> EventStream<T> {
    /// Reads events from any body (a hyper response body, or a test body).
    pub fn from_body<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        EventStream {
            body: body.map_err(Into::into).boxed(),
            parser: SseParser::new(),
            scratch: Vec::new(),
            pending: VecDeque::new(),
            finished: false,
            idle_timeout: None,
            idle: None,
            _route: PhantomData,
        }
    }

    /// Ends the stream with [`EventError::IdleTimeout`] when nothing arrives for `timeout`.
    /// Only useful against servers that send keep-alives (upstream's does not).
    pub fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self.idle = timeout.map(|t| Box::pin(tokio::time::sleep(t)));
        self
    }

    /// The next event or error; `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<Result<Event<T>, EventError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    fn fail(&mut self, e: EventError) {
        self.finished = true;
        self.idle = None;
        self.pending.push_back(Err(e));
    }

    fn feed(&mut self, data: &[u8]) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let res = self.parser.feed(data, &mut scratch);
        for msg in scratch.drain(..) {
            self.pending.push_back(decode_message(msg));
        }
        self.scratch = scratch;
        if let Err(e) = res {
            self.fail(e.into());
        }
    }
}

impl<T: DeserializeOwned> Stream for EventStream<T> {
    type Item = Result<Event<T>, EventError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(item) = this.pending.pop_front() {
                return Poll::Ready(Some(item));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let (Some(timeout), Some(idle)) = (this.idle_timeout, this.idle.as_mut()) {
                        idle.as_mut().reset(Instant::now() + timeout);
                    }
                    if let Ok(data) = frame.into_data() {
                        this.feed(&data);
                    }
                }
                Poll::Ready(Some(Err(e))) => this.fail(EventError::Transport(error_chain(&*e))),
                Poll::Ready(None) => {
                    this.finished = true;
                    this.idle = None;
                }
                Poll::Pending => {
                    if let (Some(timeout), Some(idle)) = (this.idle_timeout, this.idle.as_mut()) {
                        if idle.as_mut().poll(cx).is_ready() {
                            this.fail(EventError::IdleTimeout(timeout));
                            continue;
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{HttpRoute, TcpRouteMapping};
    use http_body::Frame;
    use http_body_util::StreamBody;
    use std::convert::Infallible;

    const HTTP_CAPTURE: &str = include_str!("../tests/fixtures/routing-api-sse-http.txt");
    const TCP_CAPTURE: &str = include_str!("../tests/fixtures/routing-api-sse-tcp.txt");

    fn stream_of(capture: &str) -> &str {
        let start = capture.find("\r\n\r\n").expect("response head") + 4;
        &capture[start..]
    }

    fn body_of(
        chunks: Vec<Result<Bytes, std::io::Error>>,
    ) -> impl Body<Data = Bytes, Error = std::io::Error> + Send + Sync + 'static {
        StreamBody::new(futures::stream::iter(
            chunks.into_iter().map(|c| c.map(Frame::data)),
        ))
    }

    async fn collect<T: DeserializeOwned>(
        mut s: EventStream<T>,
    ) -> Vec<Result<Event<T>, EventError>> {
        let mut out = Vec::new();
        while let Some(item) = s.next().await {
            out.push(item);
        }
        out
    }

    fn chunks_of(s: &str, n: usize) -> Vec<Result<Bytes, std::io::Error>> {
        s.as_bytes()
            .chunks(n)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect()
    }

    #[tokio::test]
    async fn http_capture_in_awkward_chunks() {
        for n in [1, 2, 5, 13, 100, 10_000] {
            let s =
                EventStream::<HttpRoute>::from_body(body_of(chunks_of(stream_of(HTTP_CAPTURE), n)));
            let events: Vec<_> = collect(s).await.into_iter().map(|e| e.unwrap()).collect();
            assert_eq!(events.len(), 2, "chunk size {n}");
            assert_eq!(events[0].id, "0");
            assert_eq!(events[0].action, EventAction::Upsert);
            assert_eq!(events[0].route.route, "myapp.example.com");
            assert_eq!(events[0].route.port, 9001);
            assert_eq!(events[0].route.ttl, Some(60));
            assert_eq!(
                events[0].route.modification_tag.guid,
                "dab23546-0269-49d7-4d4b-9c8795e011ac"
            );
            assert_eq!(events[1].action, EventAction::Delete);
            assert_eq!(events[1].route, events[0].route);
        }
    }

    #[tokio::test]
    async fn tcp_capture_in_awkward_chunks() {
        for n in [1, 3, 64] {
            let s = EventStream::<TcpRouteMapping>::from_body(body_of(chunks_of(
                stream_of(TCP_CAPTURE),
                n,
            )));
            let events: Vec<_> = collect(s).await.into_iter().map(|e| e.unwrap()).collect();
            assert_eq!(events.len(), 4);
            assert_eq!(events[2].route.sni_hostname(), Some("sni.example.com"));
            assert_eq!(events[2].route.tls_port(), Some(60001));
            assert_eq!(events[1].route.backend_sni_hostname, None);
            assert_eq!(events[0].route.backend_sni_hostname.as_deref(), Some(""));
            // Re-serialising gives back the captured JSON, field for field.
            let data: Vec<&str> = stream_of(TCP_CAPTURE)
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect();
            for (e, d) in events.iter().zip(data) {
                assert_eq!(serde_json::to_string(&e.route).unwrap(), d);
            }
        }
    }

    #[tokio::test]
    async fn unknown_events_and_bad_data_do_not_end_the_stream() {
        let input = ": hello\n\nid: 0\nevent: Refresh\ndata: {}\n\nid: 1\nevent: Upsert\ndata: not json\n\nid: 2\nevent: Delete\ndata: {\"route\":\"a.b\",\"port\":1,\"ip\":\"1.2.3.4\"}\n\n";
        let out = collect(EventStream::<HttpRoute>::from_body(body_of(chunks_of(
            input, 7,
        ))))
        .await;
        assert_eq!(out.len(), 3);
        let e0 = out[0].as_ref().unwrap_err();
        assert!(matches!(e0, EventError::UnknownEvent { name, .. } if name == "Refresh"));
        assert!(!e0.is_fatal());
        let e1 = out[1].as_ref().unwrap_err();
        assert!(matches!(e1, EventError::InvalidData { id, .. } if id == "1"));
        assert!(!e1.is_fatal());
        let ev = out[2].as_ref().unwrap();
        assert_eq!(ev.action, EventAction::Delete);
        assert_eq!(ev.route.route, "a.b");
    }

    #[tokio::test]
    async fn transport_error_is_fatal_and_ends_the_stream() {
        let mut chunks = chunks_of("id: 0\nevent: Upsert\ndata: {}\n\nid: 1\nevent: Ups", 10);
        chunks.push(Err(std::io::Error::other("connection reset")));
        chunks.push(Ok(Bytes::from_static(b"ert\ndata: {}\n\n")));
        let out = collect(EventStream::<HttpRoute>::from_body(body_of(chunks))).await;
        assert_eq!(out.len(), 2);
        assert!(out[0].is_ok());
        let err = out[1].as_ref().unwrap_err();
        assert!(err.is_fatal());
        assert!(err.to_string().contains("connection reset"), "{err}");
    }

    #[tokio::test]
    async fn incomplete_last_message_is_dropped() {
        let out = collect(EventStream::<HttpRoute>::from_body(body_of(chunks_of(
            "id: 0\nevent: Upsert\ndata: {}\n\nid: 1\nevent: Upsert\ndata: {}\n",
            4,
        ))))
        .await;
        assert_eq!(out.len(), 1);
    }

    // Paused time: the keep-alives and the timeout are ordered by the test's clock, not by how
    // busy the machine is.
    #[tokio::test(start_paused = true)]
    async fn idle_timeout_ends_a_silent_stream() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        let body = StreamBody::new(ReceiverStream(rx));
        let mut s = EventStream::<HttpRoute>::from_body(body)
            .with_idle_timeout(Some(Duration::from_millis(300)));
        let sender = tokio::spawn(async move {
            // Keep-alive comments keep the stream open well past the timeout...
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from_static(b": keep-alive\n\n"))))
                    .await;
            }
            let _ = tx
                .send(Ok(Frame::data(Bytes::from_static(
                    b"event: Upsert\ndata: {}\n\n",
                ))))
                .await;
            // ...then silence, with the connection still open.
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(tx);
        });
        let started = tokio::time::Instant::now();
        assert!(s.next().await.unwrap().is_ok());
        assert!(started.elapsed() >= Duration::from_millis(550));
        let err = s.next().await.unwrap().unwrap_err();
        assert_eq!(err, EventError::IdleTimeout(Duration::from_millis(300)));
        // The error itself shows the idle timeout fired (the server's silence ends in a close
        // only after 5 s, which is not an IdleTimeout).
        assert!(err.is_fatal());
        assert!(s.next().await.is_none());
        sender.abort();
    }

    struct ReceiverStream<T>(tokio::sync::mpsc::Receiver<T>);
    impl<T> Stream for ReceiverStream<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }
}
