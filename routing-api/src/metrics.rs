//! Statsd metrics (B.9), as upstream's routing-api sends them: every gauge under the prefix
//! `routing_api.`, sent over UDP to `statsd_endpoint`.
//!
//! This module owns the metric names, the statsd line format, the buffered UDP sender and the
//! periodic reporter:
//!
//! - `total_http_routes`, `total_tcp_routes`: the number of stored (non-expired) routes as an
//!   absolute gauge every `metrics_reporting_interval`; between reports a delta of `+1` for
//!   each route created, `-1` for each route deleted or expired, and `+0` for each update of an
//!   existing route (upstream sends a zero delta for its update events).
//! - `total_http_subscriptions`, `total_tcp_subscriptions`: `0` when reporting starts, `+1`
//!   when an event stream request arrives and `-1` when it ends (an unauthorised request
//!   counts as both, as upstream counts before checking the token), and a `+0` delta every
//!   interval.
//! - `total_token_errors`, `key_refresh_events`: the token validator's counters, absolute,
//!   every interval.
//!
//! Lines are buffered and sent as upstream's buffered statsd client does: each line followed
//! by `\n`, several lines per datagram, a datagram sent when the next line would make it larger
//! than [`MAX_DATAGRAM_BYTES`] and otherwise every `statsd_client_flush_interval` (300 ms when
//! unset or zero, the client's own default).
//!
//! Nothing here can slow the request path: callers hand a formatted line to a bounded channel
//! ([`QUEUE_LINES`]) read by one sender task, and a line that does not fit is dropped and
//! counted (logged by the reporter). Send errors are logged, never fatal.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::auth::TokenValidator;
use crate::store::Store;

/// Prefix of every metric name (upstream's `routing_api`).
pub const PREFIX: &str = "routing_api";
pub const TOTAL_HTTP_ROUTES: &str = "total_http_routes";
pub const TOTAL_TCP_ROUTES: &str = "total_tcp_routes";
pub const TOTAL_HTTP_SUBSCRIPTIONS: &str = "total_http_subscriptions";
pub const TOTAL_TCP_SUBSCRIPTIONS: &str = "total_tcp_subscriptions";
pub const TOTAL_TOKEN_ERRORS: &str = "total_token_errors";
pub const KEY_REFRESH_EVENTS: &str = "key_refresh_events";

/// Largest datagram built from several lines (upstream creates its client with 512).
pub const MAX_DATAGRAM_BYTES: usize = 512;
/// Lines waiting for the sender task; beyond this they are dropped and counted.
pub const QUEUE_LINES: usize = 4096;
/// Flush interval when `statsd_client_flush_interval` is unset or zero.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(300);
/// How long [`Metrics::close`] waits for the last datagram to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// At most one send-error log line per this interval.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// `routing_api.<name>:<value>|g`: an absolute gauge.
pub fn gauge_line(name: &str, value: i64) -> String {
    format!("{PREFIX}.{name}:{value}|g")
}

/// `routing_api.<name>:+<n>|g` or `…:-<n>|g`: a gauge delta; zero is `+0`.
pub fn gauge_delta_line(name: &str, delta: i64) -> String {
    let sign = if delta >= 0 { "+" } else { "" };
    format!("{PREFIX}.{name}:{sign}{delta}|g")
}

/// Which routes a change or an event stream is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Http,
    Tcp,
}

impl Kind {
    fn routes(self) -> &'static str {
        match self {
            Kind::Http => TOTAL_HTTP_ROUTES,
            Kind::Tcp => TOTAL_TCP_ROUTES,
        }
    }

    fn subscriptions(self) -> &'static str {
        match self {
            Kind::Http => TOTAL_HTTP_SUBSCRIPTIONS,
            Kind::Tcp => TOTAL_TCP_SUBSCRIPTIONS,
        }
    }
}

/// Packs lines into datagrams the way upstream's buffered sender does.
#[derive(Debug)]
pub struct Batcher {
    buf: Vec<u8>,
    max: usize,
}

impl Batcher {
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::with_capacity(max),
            max,
        }
    }

    /// Adds one line; returns the datagrams that are due now (the pending ones if this line
    /// would not fit beside them, then this one if it fills the buffer on its own).
    pub fn push(&mut self, line: &str) -> Vec<Vec<u8>> {
        let mut due = Vec::new();
        if !self.buf.is_empty() && self.buf.len() + line.len() + 1 > self.max {
            due.extend(self.take());
        }
        self.buf.extend_from_slice(line.as_bytes());
        self.buf.push(b'\n');
        if self.buf.len() >= self.max {
            due.extend(self.take());
        }
        due
    }

    /// The pending datagram, if any (on each flush tick).
    pub fn take(&mut self) -> Option<Vec<u8>> {
        if self.buf.is_empty() {
            return None;
        }
        let out = self.buf.clone();
        self.buf.clear();
        Some(out)
    }
}

enum Msg {
    Line(String),
    Close(oneshot::Sender<()>),
}

struct Inner {
    tx: mpsc::Sender<Msg>,
    dropped: AtomicU64,
}

/// Where and how often to send.
#[derive(Debug, Clone)]
pub struct StatsdConfig {
    /// `host:port`; empty means no metrics.
    pub endpoint: String,
    pub flush_interval: Duration,
}

/// A handle to the statsd sender; cheap to clone. [`Metrics::disabled`] sends nothing.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.inner.is_some() {
            "Metrics(statsd)"
        } else {
            "Metrics(disabled)"
        })
    }
}

impl Metrics {
    /// Sends nothing.
    pub fn disabled() -> Self {
        Self::default()
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Resolves the endpoint, opens a UDP socket and starts the sender task. An empty endpoint
    /// gives [`Metrics::disabled`]; an endpoint that does not resolve is an error (upstream
    /// exits at start then).
    pub async fn start(config: &StatsdConfig) -> Result<Self, String> {
        if config.endpoint.is_empty() {
            return Ok(Self::disabled());
        }
        let target = resolve(&config.endpoint).await?;
        let local: SocketAddr = if target.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local)
            .await
            .map_err(|e| format!("cannot open a UDP socket for statsd: {e}"))?;
        let flush = if config.flush_interval.is_zero() {
            DEFAULT_FLUSH_INTERVAL
        } else {
            config.flush_interval
        };
        let (tx, rx) = mpsc::channel(QUEUE_LINES);
        tokio::spawn(send_loop(socket, target, rx, flush));
        Ok(Self {
            inner: Some(Arc::new(Inner {
                tx,
                dropped: AtomicU64::new(0),
            })),
        })
    }

    fn send(&self, line: String) {
        let Some(inner) = &self.inner else { return };
        if let Err(mpsc::error::TrySendError::Full(_)) = inner.tx.try_send(Msg::Line(line)) {
            inner.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends an absolute gauge.
    pub fn gauge(&self, name: &str, value: i64) {
        if self.inner.is_some() {
            self.send(gauge_line(name, value));
        }
    }

    /// Sends a gauge delta.
    pub fn gauge_delta(&self, name: &str, delta: i64) {
        if self.inner.is_some() {
            self.send(gauge_delta_line(name, delta));
        }
    }

    /// A route was stored: `+1` if it was created, `+0` if an existing one was updated.
    pub fn route_upserted(&self, kind: Kind, created: bool) {
        self.gauge_delta(kind.routes(), i64::from(created));
    }

    /// A route was deleted or expired.
    pub fn route_removed(&self, kind: Kind) {
        self.gauge_delta(kind.routes(), -1);
    }

    /// An event stream request arrived: `+1` now, `-1` when the guard is dropped.
    pub fn subscription(&self, kind: Kind) -> Subscription {
        self.gauge_delta(kind.subscriptions(), 1);
        Subscription {
            metrics: self.clone(),
            kind,
        }
    }

    /// Lines dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.inner
            .as_deref()
            .map_or(0, |i| i.dropped.load(Ordering::Relaxed))
    }

    /// Sends what is buffered and stops the sender task (waits at most a second).
    pub async fn close(&self) {
        let Some(inner) = &self.inner else { return };
        let (ack_tx, ack_rx) = oneshot::channel();
        let sent = tokio::time::timeout(CLOSE_TIMEOUT, inner.tx.send(Msg::Close(ack_tx))).await;
        if matches!(sent, Ok(Ok(()))) {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, ack_rx).await;
        }
    }
}

/// One open event stream; dropping it sends the `-1`.
#[derive(Debug)]
pub struct Subscription {
    metrics: Metrics,
    kind: Kind,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.metrics.gauge_delta(self.kind.subscriptions(), -1);
    }
}

/// `host:port` to one address, IPv4 first (as Go's resolver picks for UDP).
async fn resolve(endpoint: &str) -> Result<SocketAddr, String> {
    let lookup = tokio::time::timeout(Duration::from_secs(10), tokio::net::lookup_host(endpoint))
        .await
        .map_err(|_| format!("resolving statsd endpoint {endpoint:?} timed out"))?
        .map_err(|e| format!("invalid statsd endpoint {endpoint:?}: {e}"))?;
    let addrs: Vec<SocketAddr> = lookup.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("statsd endpoint {endpoint:?} resolves to no address"))
}

async fn send_loop(
    socket: UdpSocket,
    target: SocketAddr,
    mut rx: mpsc::Receiver<Msg>,
    flush_interval: Duration,
) {
    let mut batch = Batcher::new(MAX_DATAGRAM_BYTES);
    let mut tick = tokio::time::interval_at(Instant::now() + flush_interval, flush_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut errors = SendErrors::default();
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Msg::Line(line)) => {
                    for datagram in batch.push(&line) {
                        errors.note(socket.send_to(&datagram, target).await);
                    }
                }
                Some(Msg::Close(ack)) => {
                    if let Some(datagram) = batch.take() {
                        errors.note(socket.send_to(&datagram, target).await);
                    }
                    let _ = ack.send(());
                    return;
                }
                None => return,
            },
            _ = tick.tick() => {
                if let Some(datagram) = batch.take() {
                    errors.note(socket.send_to(&datagram, target).await);
                }
            }
        }
    }
}

/// Logs send errors, at most one line per [`ERROR_LOG_INTERVAL`].
#[derive(Default)]
struct SendErrors {
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl SendErrors {
    fn note(&mut self, result: std::io::Result<usize>) {
        let Err(e) = result else { return };
        self.unlogged += 1;
        if self
            .last_logged
            .is_some_and(|at| at.elapsed() < ERROR_LOG_INTERVAL)
        {
            return;
        }
        tracing::info!(error = %e, failures = self.unlogged, "routing-api.metrics.error-sending-statsd");
        self.last_logged = Some(Instant::now());
        self.unlogged = 0;
    }
}

/// Sends the subscription gauges (`0`) now and every `interval` the route totals, the
/// subscription `+0` deltas and the token counters, in upstream's order, until `closing`.
pub fn spawn_reporter(
    metrics: Metrics,
    store: Store,
    auth: TokenValidator,
    interval: Duration,
    closing: watch::Receiver<bool>,
) {
    if !metrics.is_enabled() {
        return;
    }
    tokio::spawn(report(metrics, store, auth, interval, closing));
}

async fn report(
    metrics: Metrics,
    store: Store,
    auth: TokenValidator,
    interval: Duration,
    mut closing: watch::Receiver<bool>,
) {
    metrics.gauge(TOTAL_HTTP_SUBSCRIPTIONS, 0);
    metrics.gauge(TOTAL_TCP_SUBSCRIPTIONS, 0);
    let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut dropped_logged = 0;
    loop {
        tokio::select! {
            _ = closing.wait_for(|c| *c) => return,
            _ = tick.tick() => {}
        }
        match store.http_routes().await {
            Ok(routes) => metrics.gauge(TOTAL_HTTP_ROUTES, count(routes.len())),
            Err(e) => tracing::info!(error = %e, "routing-api.metrics.error-counting-http-routes"),
        }
        metrics.gauge_delta(TOTAL_HTTP_SUBSCRIPTIONS, 0);
        match store.tcp_routes(&[]).await {
            Ok(routes) => metrics.gauge(TOTAL_TCP_ROUTES, count(routes.len())),
            Err(e) => tracing::info!(error = %e, "routing-api.metrics.error-counting-tcp-routes"),
        }
        metrics.gauge_delta(TOTAL_TCP_SUBSCRIPTIONS, 0);
        metrics.gauge(TOTAL_TOKEN_ERRORS, count(auth.token_errors()));
        metrics.gauge(KEY_REFRESH_EVENTS, count(auth.key_refresh_events()));
        let dropped = metrics.dropped();
        if dropped != dropped_logged {
            tracing::info!(
                dropped = dropped - dropped_logged,
                total = dropped,
                "routing-api.metrics.statsd-queue-full-lines-dropped"
            );
            dropped_logged = dropped;
        }
    }
}

fn count<T: TryInto<i64>>(n: T) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_gauges_have_no_sign() {
        assert_eq!(
            gauge_line(TOTAL_HTTP_ROUTES, 3),
            "routing_api.total_http_routes:3|g"
        );
        assert_eq!(
            gauge_line(TOTAL_TCP_SUBSCRIPTIONS, 0),
            "routing_api.total_tcp_subscriptions:0|g"
        );
    }

    #[test]
    fn deltas_are_signed_and_zero_is_plus_zero() {
        assert_eq!(
            gauge_delta_line(TOTAL_HTTP_ROUTES, 1),
            "routing_api.total_http_routes:+1|g"
        );
        assert_eq!(
            gauge_delta_line(TOTAL_TCP_ROUTES, -1),
            "routing_api.total_tcp_routes:-1|g"
        );
        assert_eq!(
            gauge_delta_line(TOTAL_HTTP_SUBSCRIPTIONS, 0),
            "routing_api.total_http_subscriptions:+0|g"
        );
    }

    #[test]
    fn batcher_joins_lines_each_ending_in_newline() {
        let mut b = Batcher::new(MAX_DATAGRAM_BYTES);
        assert!(b.push("a:1|g").is_empty());
        assert!(b.push("b:+1|g").is_empty());
        assert_eq!(b.take().as_deref(), Some(&b"a:1|g\nb:+1|g\n"[..]));
        assert_eq!(b.take(), None, "nothing pending after a flush");
    }

    #[test]
    fn batcher_sends_pending_lines_before_one_that_would_not_fit() {
        let mut b = Batcher::new(16);
        assert!(b.push("0123456789").is_empty()); // 11 bytes buffered
        let due = b.push("abcdef"); // 11 + 6 + 1 = 18 > 16
        assert_eq!(due, vec![b"0123456789\n".to_vec()]);
        assert_eq!(b.take().as_deref(), Some(&b"abcdef\n"[..]));
        // Exactly reaching the limit fits, and the full buffer goes out at once.
        assert!(b.push("0123456789").is_empty());
        let due = b.push("abcd"); // 11 + 4 + 1 = 16
        assert_eq!(due, vec![b"0123456789\nabcd\n".to_vec()]);
        assert_eq!(b.take(), None);
    }

    #[test]
    fn batcher_flushes_at_once_when_a_push_fills_the_buffer() {
        let mut b = Batcher::new(8);
        let due = b.push("1234567"); // 8 bytes with the newline: full
        assert_eq!(due, vec![b"1234567\n".to_vec()]);
        assert_eq!(b.take(), None);
        // A line longer than the limit goes out alone, after what was pending.
        assert!(b.push("ab").is_empty());
        let due = b.push("0123456789");
        assert_eq!(due, vec![b"ab\n".to_vec(), b"0123456789\n".to_vec()]);
    }

    #[test]
    fn datagrams_never_exceed_the_limit_for_metric_lines() {
        let mut b = Batcher::new(MAX_DATAGRAM_BYTES);
        let line = gauge_line(TOTAL_HTTP_SUBSCRIPTIONS, 1_000_000);
        let mut sent = Vec::new();
        for _ in 0..100 {
            sent.extend(b.push(&line));
        }
        sent.extend(b.take());
        assert!(sent.len() > 1);
        for d in &sent {
            assert!(d.len() <= MAX_DATAGRAM_BYTES, "{}", d.len());
        }
        let lines: usize = sent
            .iter()
            .map(|d| d.iter().filter(|&&c| c == b'\n').count())
            .sum();
        assert_eq!(lines, 100);
    }

    async fn receiver() -> (UdpSocket, String) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let endpoint = sock.local_addr().unwrap().to_string();
        (sock, endpoint)
    }

    async fn recv_text(sock: &UdpSocket) -> String {
        let mut buf = [0u8; 2048];
        let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
            .await
            .expect("a datagram within 5 s")
            .unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[tokio::test]
    async fn lines_sent_together_arrive_in_one_datagram_after_the_flush_interval() {
        let (sock, endpoint) = receiver().await;
        let m = Metrics::start(&StatsdConfig {
            endpoint,
            flush_interval: Duration::from_millis(50),
        })
        .await
        .unwrap();
        m.route_upserted(Kind::Http, true);
        m.route_upserted(Kind::Tcp, false);
        m.route_removed(Kind::Http);
        assert_eq!(
            recv_text(&sock).await,
            "routing_api.total_http_routes:+1|g\nrouting_api.total_tcp_routes:+0|g\nrouting_api.total_http_routes:-1|g\n"
        );
    }

    #[tokio::test]
    async fn subscription_guard_sends_plus_then_minus_one() {
        let (sock, endpoint) = receiver().await;
        let m = Metrics::start(&StatsdConfig {
            endpoint,
            flush_interval: Duration::from_secs(60),
        })
        .await
        .unwrap();
        let guard = m.subscription(Kind::Tcp);
        drop(guard);
        // Sent by close, long before the 60 s flush interval.
        m.close().await;
        assert_eq!(
            recv_text(&sock).await,
            "routing_api.total_tcp_subscriptions:+1|g\nrouting_api.total_tcp_subscriptions:-1|g\n"
        );
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        // A sender whose task never runs: the queue fills and further lines are dropped.
        let (tx, _rx) = mpsc::channel(2);
        let m = Metrics {
            inner: Some(Arc::new(Inner {
                tx,
                dropped: AtomicU64::new(0),
            })),
        };
        for _ in 0..5 {
            m.gauge(TOTAL_TOKEN_ERRORS, 1);
        }
        assert_eq!(m.dropped(), 3);
    }

    #[tokio::test]
    async fn empty_endpoint_disables_and_bad_endpoint_is_an_error() {
        let m = Metrics::start(&StatsdConfig {
            endpoint: String::new(),
            flush_interval: Duration::ZERO,
        })
        .await
        .unwrap();
        assert!(!m.is_enabled());
        m.gauge(TOTAL_HTTP_ROUTES, 1); // a no-op
        let e = Metrics::start(&StatsdConfig {
            endpoint: "no-port-here".into(),
            flush_interval: Duration::ZERO,
        })
        .await
        .unwrap_err();
        assert!(e.contains("no-port-here"), "{e}");
    }
}
