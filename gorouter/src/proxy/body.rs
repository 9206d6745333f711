//! Bodies crossing the proxy, streamed frame by frame (never buffered whole), and the
//! bookkeeping that ends with a response: in-flight counts, returning the backend connection to
//! its keep-alive pool, and the access-log record.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::task::AbortHandle;
use tokio::time::Sleep;

use crate::access_log::{AccessLogRecord, ThreadLines};
use crate::balancer::InFlight;

use super::transport::inline::InlineBody;
use super::transport::{IdleConnections, Sender};

/// Error type of proxied bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body that ran past `endpoint_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("endpoint timeout exceeded while streaming the body")]
pub struct BodyTimeout;

/// How long a request with `Expect: 100-continue` waits for the backend's `100 Continue` (or
/// final answer) before its body is sent anyway: upstream's `ExpectContinueTimeout`.
pub const EXPECT_CONTINUE_TIMEOUT: Duration = Duration::from_secs(1);

const GATE_WAITING: u8 = 0;
const GATE_OPEN: u8 = 1;
const GATE_ABANDONED: u8 = 2;

/// Holds back the body of an `Expect: 100-continue` request, as Go's transport does: nothing is
/// read from the client (so hyper sends the client no `100 Continue`) until the backend answers
/// `100 Continue` ([`open`](Self::open)) or [`EXPECT_CONTINUE_TIMEOUT`] passes. When the
/// backend's final answer comes first, the body is never sent; once that exchange is over the
/// gate is [`abandon`](Self::abandon)ed and the backend connection given up.
#[derive(Debug, Default)]
pub struct ContinueGate {
    state: AtomicU8,
    waker: AtomicWaker,
}

impl ContinueGate {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The backend asked for the body.
    pub fn open(&self) {
        if self
            .state
            .compare_exchange(GATE_WAITING, GATE_OPEN, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.waker.wake();
        }
    }

    /// The exchange ended without the body being asked for: stop waiting.
    pub fn abandon(&self) {
        if self
            .state
            .compare_exchange(
                GATE_WAITING,
                GATE_ABANDONED,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
        {
            self.waker.wake();
        }
    }

    pub fn is_open(&self) -> bool {
        self.state.load(Ordering::SeqCst) == GATE_OPEN
    }
}

/// A client's request body as the handler gets it: hyper's stream, or `None` for a request
/// without one that the listener read itself (`listener::http1`).
pub type ClientBody = Option<Incoming>;

/// The body of an `Expect: 100-continue` request the backend never asked for.
#[derive(Debug, thiserror::Error)]
#[error("request body not sent: the backend answered without 100 Continue")]
pub struct BodyNotRequested;

pin_project! {
    /// The client's request body on its way to a backend, counting bytes for the access log.
    /// `inner` is `None` for a replayed body-less request.
    pub struct RequestBody {
        #[pin]
        inner: Option<Incoming>,
        counter: Option<Arc<AtomicU64>>,
        gate: Option<Arc<ContinueGate>>,
        // Boxed so the body is `Unpin`, as hyper's HTTP/2 client needs; only 100-continue
        // requests allocate it.
        gate_timer: Option<Pin<Box<Sleep>>>,
    }
}

impl RequestBody {
    pub fn new(inner: ClientBody, counter: Option<Arc<AtomicU64>>) -> Self {
        Self {
            inner,
            counter,
            gate: None,
            gate_timer: None,
        }
    }

    /// An empty body, for re-sending a request that had none.
    pub fn empty() -> Self {
        Self {
            inner: None,
            counter: None,
            gate: None,
            gate_timer: None,
        }
    }

    /// Holds the body back behind `gate` (see [`ContinueGate`]).
    pub fn gated(mut self, gate: Arc<ContinueGate>) -> Self {
        self.gate = Some(gate);
        self
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Some(gate) = this.gate.as_ref() {
            gate.waker.register(cx.waker());
            match gate.state.load(Ordering::SeqCst) {
                GATE_OPEN => {}
                GATE_ABANDONED => return Poll::Ready(Some(Err(Box::new(BodyNotRequested)))),
                _ => {
                    // Go's timer starts once the request head is written, which is when the
                    // connection first asks for the body.
                    let timer = this.gate_timer.get_or_insert_with(|| {
                        Box::pin(tokio::time::sleep(EXPECT_CONTINUE_TIMEOUT))
                    });
                    let expired = timer.as_mut().poll(cx).is_ready();
                    if !expired {
                        return Poll::Pending;
                    }
                    gate.open();
                }
            }
        }
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(None);
        };
        let frame = ready!(inner.poll_frame(cx));
        if let (Some(Ok(f)), Some(counter)) = (&frame, this.counter.as_ref()) {
            if let Some(data) = f.data_ref() {
                counter.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        Poll::Ready(frame.map(|f| f.map_err(|e| Box::new(e) as BoxError)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|i| i.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(i) => i.size_hint(),
            None => SizeHint::with_exact(0),
        }
    }
}

/// An access-log record waiting for the response to finish. Written when dropped, so a
/// request the client abandons is still logged (status 499 if no response was chosen).
pub struct PendingLog {
    pub sink: Arc<ThreadLines>,
    pub record: AccessLogRecord,
    pub started: Instant,
    /// When the response ended, set by its exchange; a record dropped without one (a refused
    /// or abandoned request) ends when it is dropped.
    pub finished: Option<Instant>,
    /// Bytes of the request's body, counted as they pass; `None` for a request without one.
    pub request_bytes: Option<Arc<AtomicU64>>,
    /// When the backend's response headers arrived, for gorouter_time.
    pub backend_started: Option<Instant>,
    pub backend_finished: Option<Instant>,
}

impl Drop for PendingLog {
    fn drop(&mut self) {
        let record = &mut self.record;
        if record.status == 0 {
            record.status = 499;
        }
        record.request_bytes = self
            .request_bytes
            .as_ref()
            .map_or(0, |n| n.load(Ordering::Relaxed));
        let end = self.finished.unwrap_or_else(Instant::now);
        record.response_time = Some(end.saturating_duration_since(self.started));
        if let Some(start) = self.backend_started {
            let backend_end = self.backend_finished.unwrap_or(end);
            record.app_time = Some(backend_end.saturating_duration_since(start));
        }
        self.sink.log(record);
    }
}

/// Everything that ends when the response body ends.
#[derive(Default)]
pub struct Exchange {
    pub in_flight: Option<InFlight>,
    /// The backend connection, returned to its pool if the body ends cleanly.
    pub connection: Option<(Sender, Arc<IdleConnections>)>,
    pub log: Option<Box<PendingLog>>,
    pub response_bytes: u64,
    pub completed: bool,
    /// The `Expect: 100-continue` gate of the request, abandoned when the exchange ends.
    pub continue_gate: Option<Arc<ContinueGate>>,
    /// When the body's last frame came, if the deadline check read the clock then: the
    /// exchange's end, so dropping it needs no reading of its own.
    pub ended_at: Option<Instant>,
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if let Some(gate) = self.continue_gate.take() {
            gate.abandon();
        }
        // A connection goes back only after a complete exchange; otherwise it closes here.
        let returned = self.connection.take().filter(|_| self.completed);
        if returned.is_none() && self.log.is_none() {
            return;
        }
        // One clock reading for the pool's idle-since and the record's ends.
        let now = self.ended_at.unwrap_or_else(Instant::now);
        if let Some((sender, pool)) = returned {
            pool.put_at(sender, now);
        }
        if let Some(log) = self.log.as_mut() {
            log.record.response_bytes = self.response_bytes;
            log.backend_finished.get_or_insert(now);
            log.finished = Some(now);
        }
    }
}

/// A backend's response body: read by hyper's client, or read inline from the connection
/// (see [`super::transport::inline`]), which then goes back to its pool from here.
pub enum BackendBody {
    Hyper(Incoming),
    Inline(InlineBody),
}

impl BackendBody {
    /// The connection to return to its pool, once an inline body ended cleanly on one that
    /// may be kept (hyper's connections are returned by the exchange that holds them).
    fn take_connection(&mut self) -> Option<(Sender, Arc<IdleConnections>)> {
        match self {
            BackendBody::Hyper(_) => None,
            BackendBody::Inline(body) => body.take_connection(),
        }
    }
}

impl Body for BackendBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Both variants are `Unpin`.
        match self.get_mut() {
            BackendBody::Hyper(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(|e| Box::new(e) as BoxError))),
            BackendBody::Inline(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(|e| Box::new(e) as BoxError))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            BackendBody::Hyper(b) => b.is_end_stream(),
            BackendBody::Inline(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            BackendBody::Hyper(b) => b.size_hint(),
            BackendBody::Inline(b) => b.size_hint(),
        }
    }
}

/// Marks the exchange complete and takes the body's connection for its pool.
fn complete(exchange: &mut Exchange, body: &mut BackendBody) {
    exchange.completed = true;
    if let Some(connection) = body.take_connection() {
        exchange.connection = Some(connection);
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind {
        Full { data: Option<Bytes> },
        Backend {
            inner: BackendBody,
            #[pin]
            deadline: Option<Sleep>,
        },
        // A backend body under a watchdog (see `ResponseBody::watch`).
        Watched {
            shared: Arc<Watched>,
            _watchdog: Watchdog,
        },
    }
}

/// The backend side of a watched response: taken by the watchdog at the exchange's deadline,
/// which lets go of the backend connection and its `max_conns` slot even when the body is no
/// longer polled.
struct Watched {
    backend: Mutex<Watch>,
    /// The task polling the body, woken when the watchdog ends the exchange under it.
    waker: AtomicWaker,
}

impl Watched {
    fn backend(&self) -> std::sync::MutexGuard<'_, Watch> {
        // Nothing panics while holding the lock; a poisoned one still holds a valid state.
        self.backend.lock().unwrap_or_else(|e| e.into_inner())
    }
}

// Lives once, inside the watched response's `Arc`: boxing the large variant would only add a
// second allocation.
#[allow(clippy::large_enum_variant)]
enum Watch {
    Streaming(BackendBody, Exchange),
    /// The body ended and the exchange with it.
    Ended,
    /// The watchdog ended the exchange at its deadline.
    TimedOut,
}

/// Stops the watchdog task when the body goes.
struct Watchdog(AbortHandle);

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pin_project! {
    /// A response to the client: router-generated bytes or a backend's streamed body.
    pub struct ResponseBody {
        #[pin]
        kind: Kind,
        exchange: Exchange,
    }
}

impl ResponseBody {
    pub fn full(data: Bytes) -> Self {
        Self {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
            exchange: Exchange::default(),
        }
    }

    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }

    /// Streams a backend body; `deadline` bounds the whole exchange (`endpoint_timeout`).
    pub fn backend(
        mut inner: BackendBody,
        deadline: Option<Sleep>,
        mut exchange: Exchange,
    ) -> Self {
        if inner.is_end_stream() {
            complete(&mut exchange, &mut inner);
        }
        Self {
            kind: Kind::Backend { inner, deadline },
            exchange,
        }
    }

    /// Attaches bookkeeping to a router-generated body.
    pub fn with_exchange(mut self, exchange: Exchange) -> Self {
        self.exchange = exchange;
        if let Kind::Full { data } = &self.kind {
            self.exchange.response_bytes = data.as_ref().map_or(0, |d| d.len() as u64);
            self.exchange.completed = true;
        }
        self
    }

    /// When the backend exchange must end (`endpoint_timeout`), for a streamed backend body
    /// with a deadline. The listener gives up a write to a client that reads nothing then:
    /// the body is only polled while the client takes bytes, so its own timer cannot fire.
    pub fn deadline(&self) -> Option<std::time::Instant> {
        match &self.kind {
            Kind::Backend {
                deadline: Some(d), ..
            } => Some(d.deadline().into_std()),
            _ => None,
        }
    }

    /// Puts a streamed backend body with a deadline under a watchdog task that ends the exchange
    /// at the deadline whether or not the body is polled. An HTTP/2 stream whose client stops
    /// reading gets no flow-control window, and hyper stops polling its body, so the body's own
    /// timer never fires and the backend connection would be held forever. Costs one small
    /// allocation and one timer task, so only for bodies that have not already ended.
    pub fn watch(&mut self) {
        let Kind::Backend {
            inner,
            deadline: Some(deadline),
        } = &self.kind
        else {
            return;
        };
        if inner.is_end_stream() || self.exchange.completed {
            return;
        }
        let at = deadline.deadline();
        let Kind::Backend { inner, .. } =
            std::mem::replace(&mut self.kind, Kind::Full { data: None })
        else {
            return;
        };
        let exchange = std::mem::take(&mut self.exchange);
        let shared = Arc::new(Watched {
            backend: Mutex::new(Watch::Streaming(inner, exchange)),
            waker: AtomicWaker::new(),
        });
        let watched = Arc::downgrade(&shared);
        let task = tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            if let Some(watched) = watched.upgrade() {
                let ended = {
                    let mut backend = watched.backend();
                    match &*backend {
                        Watch::Streaming(..) => std::mem::replace(&mut *backend, Watch::TimedOut),
                        _ => Watch::Ended,
                    }
                };
                if let Watch::Streaming(..) = ended {
                    tracing::debug!("response-body-past-endpoint-timeout");
                }
                // Dropped outside the lock: the exchange's bookkeeping (access log) runs here.
                drop(ended);
                watched.waker.wake();
            }
        });
        self.kind = Kind::Watched {
            shared,
            _watchdog: Watchdog(task.abort_handle()),
        };
    }

    pub fn exchange_mut(&mut self) -> &mut Exchange {
        &mut self.exchange
    }

    /// The same response with other router-generated bytes (an error page rendered through
    /// `html_error_template_file`), keeping its bookkeeping.
    pub fn replaced(mut self, data: Bytes) -> Self {
        let exchange = std::mem::take(&mut self.exchange);
        Self::full(data).with_exchange(exchange)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Backend { inner, deadline } => {
                // The body first: one that is already there (most small responses) needs no
                // timer, which would cost a registration with the runtime's timer wheel (a
                // lock) and its removal. The timer is armed only while waiting; a frame that
                // arrives past the deadline is refused by a clock read.
                let polled = Pin::new(&mut *inner).poll_frame(cx);
                if let Some(d) = deadline.as_pin_mut() {
                    let late = match &polled {
                        Poll::Pending => d.poll(cx).is_ready(),
                        Poll::Ready(Some(Ok(_))) => {
                            let now = tokio::time::Instant::now();
                            if inner.is_end_stream() {
                                this.exchange.ended_at = Some(now.into_std());
                            }
                            d.deadline() <= now
                        }
                        Poll::Ready(_) => false,
                    };
                    if late {
                        return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
                    }
                }
                match ready!(polled) {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            this.exchange.response_bytes += data.len() as u64;
                        }
                        // hyper stops polling once the body reports its end.
                        if inner.is_end_stream() {
                            complete(this.exchange, inner);
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Some(Err(e)) => Poll::Ready(Some(Err(e))),
                    None => {
                        complete(this.exchange, inner);
                        Poll::Ready(None)
                    }
                }
            }
            KindProj::Watched { shared, .. } => {
                shared.waker.register(cx.waker());
                let mut backend = shared.backend();
                let (inner, exchange) = match &mut *backend {
                    Watch::Streaming(inner, exchange) => (inner, exchange),
                    Watch::Ended => return Poll::Ready(None),
                    Watch::TimedOut => return Poll::Ready(Some(Err(Box::new(BodyTimeout)))),
                };
                let frame = match ready!(Pin::new(&mut *inner).poll_frame(cx)) {
                    Some(Ok(frame)) => frame,
                    Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                    None => {
                        complete(exchange, inner);
                        // The exchange ends now: connection back to its pool, record logged.
                        *backend = Watch::Ended;
                        return Poll::Ready(None);
                    }
                };
                if let Some(data) = frame.data_ref() {
                    exchange.response_bytes += data.len() as u64;
                }
                if inner.is_end_stream() {
                    complete(exchange, inner);
                    *backend = Watch::Ended;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data } => data.is_none(),
            Kind::Backend { inner, .. } => inner.is_end_stream(),
            Kind::Watched { shared, .. } => match &*shared.backend() {
                Watch::Streaming(inner, _) => inner.is_end_stream(),
                Watch::Ended => true,
                // Not a clean end: the next poll reports the timeout.
                Watch::TimedOut => false,
            },
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Backend { inner, .. } => inner.size_hint(),
            Kind::Watched { shared, .. } => match &*shared.backend() {
                Watch::Streaming(inner, _) => inner.size_hint(),
                Watch::Ended => SizeHint::with_exact(0),
                Watch::TimedOut => SizeHint::default(),
            },
        }
    }
}
