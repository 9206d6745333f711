//! Route change events and the server-sent event streams (B.6).
//!
//! Each change is serialised to JSON once and fanned out through a `tokio::sync::broadcast`
//! channel: publishing never waits, whatever the subscribers do. A subscriber that falls more
//! than [`SUBSCRIBER_BUFFER`] events behind is disconnected (its stream ends) and must re-list,
//! so one slow reader can neither block writers nor hold memory for everyone else. Every 30 s of
//! silence a `:` comment line is sent so idle proxies keep the stream open (upstream sends none;
//! SSE clients ignore comments).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use routing_api_client::EventAction;
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tokio::time::{Interval, MissedTickBehavior};

use crate::api::go_json;
use crate::metrics::Subscription;

/// Events a subscriber may lag behind before it is cut off.
pub const SUBSCRIBER_BUFFER: usize = 1024;
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// One change, already serialised.
#[derive(Debug, Clone)]
pub struct Event {
    pub action: EventAction,
    pub json: Bytes,
}

/// A stream of changes of one kind (HTTP routes or TCP routes).
pub struct EventHub {
    tx: broadcast::Sender<Event>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new()
    }
}

impl EventHub {
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(SUBSCRIBER_BUFFER).0,
        }
    }

    /// Publishes a change to every current subscriber. Never blocks.
    pub fn publish<T: Serialize>(&self, action: EventAction, value: &T) {
        match go_json(value) {
            Ok(json) => {
                let _ = self.tx.send(Event {
                    action,
                    json: Bytes::from(json),
                });
            }
            Err(e) => tracing::error!(error = %e, "event-serialise-failed"),
        }
    }

    pub fn subscriber_count(&self) -> usize {
        self.tx.receiver_count()
    }

    /// A response body streaming events from now on, ending when `closing` turns true.
    pub fn subscribe(&self, closing: watch::Receiver<bool>) -> SseBody {
        let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
        keep_alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        SseBody {
            rx: tokio_stream::wrappers::BroadcastStream::new(self.tx.subscribe()),
            next_id: 0,
            keep_alive,
            first_tick_done: false,
            closing: tokio_stream::wrappers::WatchStream::new(closing),
            done: false,
            _subscription: None,
        }
    }
}

/// Formats one SSE frame: `id`, `event`, `data` and a blank line.
pub fn sse_frame(id: u64, action: EventAction, json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 40);
    out.extend_from_slice(format!("id: {id}\nevent: {}\ndata: ", action.as_str()).as_bytes());
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// The body of an event-stream response.
pub struct SseBody {
    rx: tokio_stream::wrappers::BroadcastStream<Event>,
    next_id: u64,
    keep_alive: Interval,
    first_tick_done: bool,
    closing: tokio_stream::wrappers::WatchStream<bool>,
    done: bool,
    /// Counts this stream in the subscription gauge until the body is dropped.
    _subscription: Option<Subscription>,
}

impl SseBody {
    /// Ties `subscription` (its `-1`) to the life of this body.
    pub fn counted(mut self, subscription: Subscription) -> Self {
        self._subscription = Some(subscription);
        self
    }
}

impl http_body::Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        use futures::Stream;
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        while let Poll::Ready(v) = Pin::new(&mut this.closing).poll_next(cx) {
            if v.is_none() || v == Some(true) {
                this.done = true;
                return Poll::Ready(None);
            }
        }
        match Pin::new(&mut this.rx).poll_next(cx) {
            Poll::Ready(Some(Ok(ev))) => {
                let id = this.next_id;
                this.next_id += 1;
                this.keep_alive.reset();
                return Poll::Ready(Some(Ok(Frame::data(sse_frame(id, ev.action, &ev.json)))));
            }
            Poll::Ready(Some(Err(lagged))) => {
                tracing::warn!(error = %lagged, "event-subscriber-too-slow-disconnected");
                this.done = true;
                return Poll::Ready(None);
            }
            Poll::Ready(None) => {
                this.done = true;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        while this.keep_alive.poll_tick(cx).is_ready() {
            // The first tick of an interval fires at once; it is not silence.
            if !this.first_tick_done {
                this.first_tick_done = true;
                continue;
            }
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                b": keep-alive\n\n",
            )))));
        }
        Poll::Pending
    }
}

/// The two hubs the API publishes to.
#[derive(Default, Clone)]
pub struct Hubs {
    pub http: Arc<EventHub>,
    pub tcp: Arc<EventHub>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn frame_format_matches_capture() {
        let f = sse_frame(0, EventAction::Upsert, br#"{"route":"a"}"#);
        assert_eq!(&f[..], b"id: 0\nevent: Upsert\ndata: {\"route\":\"a\"}\n\n");
    }

    #[test]
    fn event_json_escapes_html_characters_like_go() {
        let hub = EventHub::new();
        let mut sub = hub.tx.subscribe();
        hub.publish(
            EventAction::Upsert,
            &serde_json::json!({"route": "a.com/x&y<z>"}),
        );
        let ev = sub.try_recv().unwrap();
        assert_eq!(&ev.json[..], br#"{"route":"a.com/x\u0026y\u003cz\u003e"}"#);
    }

    #[tokio::test]
    async fn subscriber_gets_numbered_events_and_stream_ends_on_close() {
        let hub = EventHub::new();
        let (close_tx, close_rx) = watch::channel(false);
        let mut body = hub.subscribe(close_rx);
        hub.publish(EventAction::Upsert, &serde_json::json!({"n": 1}));
        hub.publish(EventAction::Delete, &serde_json::json!({"n": 2}));
        let a = body.frame().await.unwrap().unwrap().into_data().unwrap();
        let b = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&a[..], b"id: 0\nevent: Upsert\ndata: {\"n\":1}\n\n");
        assert_eq!(&b[..], b"id: 1\nevent: Delete\ndata: {\"n\":2}\n\n");
        close_tx.send_replace(true);
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn slow_subscriber_is_cut_off_without_blocking_publisher() {
        let hub = EventHub::new();
        let (_close_tx, close_rx) = watch::channel(false);
        let mut slow = hub.subscribe(close_rx);
        for i in 0..(SUBSCRIBER_BUFFER + 10) {
            hub.publish(EventAction::Upsert, &i);
        }
        // It lagged: its stream ends instead of delivering a gap.
        assert!(slow.frame().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_stream_sends_keep_alive_comment() {
        let hub = EventHub::new();
        let (_close_tx, close_rx) = watch::channel(false);
        let mut body = hub.subscribe(close_rx);
        let f = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&f[..], b": keep-alive\n\n");
    }
}
