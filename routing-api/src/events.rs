//! Route change events and the server-sent event streams (B.6).
//!
//! Each change is serialised to JSON once and appended to the hub's log, shared by every
//! subscriber: publishing never waits, whatever the subscribers do. Each subscriber reads the
//! log from its own position; an event is freed once every subscriber has read it. Memory is
//! bounded in bytes, not events: unread events may take up to [`SUBSCRIBER_BUFFER_BYTES`]
//! (about 100,000 route events), so a burst such as a prune that expires thousands of routes at
//! once reaches every subscriber, each event in order. Only a subscriber that falls further
//! behind than that is disconnected (its stream ends, and it must re-list, as upstream's slow
//! consumers), so one stuck reader can neither block writers nor hold more memory than that.
//! Every 30 s of silence a `:` comment line is sent so idle proxies keep the stream open
//! (upstream sends none; SSE clients ignore comments).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use routing_api_client::EventAction;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::{Interval, MissedTickBehavior};

use crate::json::go_json;
use crate::metrics::Subscription;
use crate::prometheus::OpenStream;

/// Bytes of unread events a hub keeps for its slowest subscriber before cutting it off.
pub const SUBSCRIBER_BUFFER_BYTES: usize = 32 * 1024 * 1024;
/// What one event costs beyond its JSON in the budget (the `Event` and its queue slot).
const EVENT_OVERHEAD: usize = 64;
/// Largest body frame a stream sends at once when it is behind (several events per frame).
const MAX_FRAME_BYTES: usize = 64 * 1024;
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// One change, already serialised.
#[derive(Debug, Clone)]
pub struct Event {
    pub action: EventAction,
    pub json: Bytes,
}

impl Event {
    fn cost(&self) -> usize {
        self.json.len() + EVENT_OVERHEAD
    }
}

/// The events not yet read by every subscriber, and where each subscriber is.
struct Log {
    /// Sequence number of `events[0]`.
    first: u64,
    events: VecDeque<Event>,
    /// Sum of [`Event::cost`] over `events`.
    bytes: usize,
    budget: usize,
    /// Subscriber id -> sequence number of the next event it reads.
    positions: HashMap<u64, u64>,
    next_subscriber: u64,
}

impl Log {
    fn end(&self) -> u64 {
        self.first + self.events.len() as u64
    }

    /// Frees the events every subscriber has read, then the oldest ones beyond the budget
    /// (their readers find themselves behind `first` and are cut off).
    fn trim(&mut self) {
        let read_by_all = self.positions.values().copied().min().unwrap_or(self.end());
        while self.first < read_by_all || self.bytes > self.budget {
            let Some(e) = self.events.pop_front() else {
                break;
            };
            self.bytes -= e.cost();
            self.first += 1;
        }
    }
}

struct Shared {
    log: Mutex<Log>,
    /// The log's end, to wake subscribers.
    end: watch::Sender<u64>,
}

impl Shared {
    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A stream of changes of one kind (HTTP routes or TCP routes).
pub struct EventHub {
    shared: Arc<Shared>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new()
    }
}

impl EventHub {
    pub fn new() -> Self {
        Self::with_budget(SUBSCRIBER_BUFFER_BYTES)
    }

    /// A hub keeping at most `budget` bytes of unread events (see [`SUBSCRIBER_BUFFER_BYTES`]).
    pub fn with_budget(budget: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                log: Mutex::new(Log {
                    first: 0,
                    events: VecDeque::new(),
                    bytes: 0,
                    budget,
                    positions: HashMap::new(),
                    next_subscriber: 0,
                }),
                end: watch::channel(0).0,
            }),
        }
    }

    /// Publishes a change to every current subscriber. Never blocks.
    pub fn publish<T: Serialize>(&self, action: EventAction, value: &T) {
        let json = match go_json(value) {
            Ok(json) => Bytes::from(json),
            Err(e) => {
                tracing::error!(error = %e, "event-serialise-failed");
                return;
            }
        };
        let end = {
            let mut log = self.shared.log();
            if log.positions.is_empty() {
                // Nobody listens: nothing to keep.
                return;
            }
            let event = Event { action, json };
            log.bytes += event.cost();
            log.events.push_back(event);
            log.trim();
            log.end()
        };
        self.shared.end.send_replace(end);
    }

    pub fn subscriber_count(&self) -> usize {
        self.shared.log().positions.len()
    }

    /// A response body streaming events from now on, ending when `closing` turns true.
    pub fn subscribe(&self, closing: watch::Receiver<bool>) -> SseBody {
        let (id, position) = {
            let mut log = self.shared.log();
            let id = log.next_subscriber;
            log.next_subscriber += 1;
            let position = log.end();
            log.positions.insert(id, position);
            (id, position)
        };
        let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
        keep_alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        SseBody {
            shared: self.shared.clone(),
            id,
            position,
            wake: tokio_stream::wrappers::WatchStream::new(self.shared.end.subscribe()),
            next_id: 0,
            keep_alive,
            first_tick_done: false,
            closing: tokio_stream::wrappers::WatchStream::new(closing),
            done: false,
            _subscription: None,
            _open_stream: None,
        }
    }
}

/// Formats one SSE frame: `id`, `event`, `data` and a blank line.
pub fn sse_frame(id: u64, action: EventAction, json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 40);
    write_frame(&mut out, id, action, json);
    Bytes::from(out)
}

fn write_frame(out: &mut Vec<u8>, id: u64, action: EventAction, json: &[u8]) {
    out.extend_from_slice(format!("id: {id}\nevent: {}\ndata: ", action.as_str()).as_bytes());
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
}

/// What a subscriber found in the log.
enum Read {
    /// Frames for the events from its position on (at most [`MAX_FRAME_BYTES`] or one event).
    Frames(Bytes),
    Nothing,
    /// It fell behind the budget: the events it had not read are gone.
    Lagged {
        missed: u64,
    },
}

/// The body of an event-stream response.
pub struct SseBody {
    shared: Arc<Shared>,
    id: u64,
    /// Sequence number of the next event to send.
    position: u64,
    wake: tokio_stream::wrappers::WatchStream<u64>,
    next_id: u64,
    keep_alive: Interval,
    first_tick_done: bool,
    closing: tokio_stream::wrappers::WatchStream<bool>,
    done: bool,
    /// Counts this stream in the statsd subscription gauge until the body is dropped.
    _subscription: Option<Subscription>,
    /// Counts this stream in the Prometheus subscription gauge until the body is dropped.
    _open_stream: Option<OpenStream>,
}

impl SseBody {
    /// Ties `subscription` (its `-1`) to the life of this body.
    pub fn counted(mut self, subscription: Subscription) -> Self {
        self._subscription = Some(subscription);
        self
    }

    /// Ties `open_stream` (the Prometheus gauge's `-1`) to the life of this body.
    pub fn gauged(mut self, open_stream: OpenStream) -> Self {
        self._open_stream = Some(open_stream);
        self
    }

    fn read(&mut self) -> Read {
        let mut log = self.shared.log();
        if self.position < log.first {
            return Read::Lagged {
                missed: log.first - self.position,
            };
        }
        let start = (self.position - log.first) as usize;
        let mut out = Vec::new();
        for e in log.events.range(start..) {
            if !out.is_empty() && out.len() + e.json.len() + 40 > MAX_FRAME_BYTES {
                break;
            }
            write_frame(&mut out, self.next_id, e.action, &e.json);
            self.next_id += 1;
            self.position += 1;
        }
        if out.is_empty() {
            return Read::Nothing;
        }
        log.positions.insert(self.id, self.position);
        log.trim();
        Read::Frames(Bytes::from(out))
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        let mut log = self.shared.log();
        log.positions.remove(&self.id);
        log.trim();
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
        // Register for the next wake-up before reading, so no publish is missed in between.
        while let Poll::Ready(Some(_)) = Pin::new(&mut this.wake).poll_next(cx) {}
        match this.read() {
            Read::Frames(frames) => {
                this.keep_alive.reset();
                return Poll::Ready(Some(Ok(Frame::data(frames))));
            }
            Read::Lagged { missed } => {
                tracing::warn!(missed, "event-subscriber-too-slow-disconnected");
                this.done = true;
                return Poll::Ready(None);
            }
            Read::Nothing => {}
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

    #[tokio::test]
    async fn event_json_escapes_html_characters_like_go() {
        let hub = EventHub::new();
        let (_close_tx, close_rx) = watch::channel(false);
        let mut body = hub.subscribe(close_rx);
        hub.publish(
            EventAction::Upsert,
            &serde_json::json!({"route": "a.com/x&y<z>"}),
        );
        let f = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(
            &f[..],
            b"id: 0\nevent: Upsert\ndata: {\"route\":\"a.com/x\\u0026y\\u003cz\\u003e\"}\n\n"
        );
    }

    #[tokio::test]
    async fn subscriber_gets_numbered_events_and_stream_ends_on_close() {
        let hub = EventHub::new();
        let (close_tx, close_rx) = watch::channel(false);
        let mut body = hub.subscribe(close_rx);
        hub.publish(EventAction::Upsert, &serde_json::json!({"n": 1}));
        hub.publish(EventAction::Delete, &serde_json::json!({"n": 2}));
        let text = read_events(&mut body, 2).await;
        assert_eq!(
            text,
            "id: 0\nevent: Upsert\ndata: {\"n\":1}\n\nid: 1\nevent: Delete\ndata: {\"n\":2}\n\n"
        );
        close_tx.send_replace(true);
        assert!(body.frame().await.is_none());
    }

    /// Reads frames until `n` events arrived; the stream must not end first.
    async fn read_events(body: &mut SseBody, n: usize) -> String {
        let mut text = String::new();
        while text.matches("\n\n").count() < n {
            let f = body.frame().await.expect("stream ended").unwrap();
            text.push_str(std::str::from_utf8(&f.into_data().unwrap()).unwrap());
        }
        text
    }

    #[tokio::test]
    async fn a_burst_of_thousands_of_events_reaches_a_subscriber_that_has_not_read_yet() {
        let hub = EventHub::new();
        let (_close_tx, close_rx) = watch::channel(false);
        let mut body = hub.subscribe(close_rx);
        for i in 0..5000 {
            hub.publish(
                EventAction::Delete,
                &serde_json::json!({"route": format!("r{i}.example.com")}),
            );
        }
        let text = read_events(&mut body, 5000).await;
        assert!(text.starts_with("id: 0\nevent: Delete\ndata: {\"route\":\"r0.example.com\"}\n\n"));
        assert!(
            text.ends_with("id: 4999\nevent: Delete\ndata: {\"route\":\"r4999.example.com\"}\n\n")
        );
        // Read by its only subscriber: nothing is kept.
        assert_eq!(hub.shared.log().bytes, 0);
    }

    #[tokio::test]
    async fn a_subscriber_further_behind_than_the_byte_budget_is_cut_off_without_blocking_the_publisher(
    ) {
        let hub = EventHub::with_budget(10_000);
        let (_close_tx, close_rx) = watch::channel(false);
        let mut slow = hub.subscribe(close_rx.clone());
        let mut fast = hub.subscribe(close_rx);
        for i in 0..1000 {
            hub.publish(EventAction::Upsert, &i);
            if i % 10 == 9 {
                read_events(&mut fast, 10).await;
            }
        }
        // Memory stays within the budget whatever the slow one does.
        assert!(hub.shared.log().bytes <= 10_000);
        // It lagged: its stream ends instead of delivering a gap.
        assert!(slow.frame().await.is_none());
        drop(slow);
        assert_eq!(hub.subscriber_count(), 1);
        hub.publish(EventAction::Upsert, &1000);
        let f = fast.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&f[..], b"id: 1000\nevent: Upsert\ndata: 1000\n\n");
    }

    #[test]
    fn events_nobody_listens_to_are_not_kept() {
        let hub = EventHub::new();
        hub.publish(EventAction::Upsert, &1);
        assert_eq!(hub.shared.log().events.len(), 0);
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
