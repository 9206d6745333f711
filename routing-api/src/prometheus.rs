//! Prometheus metrics (issue 15), served at `/metrics` on the `prometheus` port (see
//! [`prometheus_endpoint`]) when `prometheus.port` is set. This module owns the metric names,
//! the handles the request path updates, and the task that keeps the route totals exact;
//! statsd, with upstream's keys, stays [`crate::metrics`]'s.
//!
//! Every metric is a gauge unless said otherwise; sample names are exactly these:
//!
//! - `total_http_routes`, `total_tcp_routes`: the stored, non-expired routes. Counted in the
//!   store when this instance takes the lock and every `metrics_reporting_interval`; in
//!   between, `+1` for each route created and `-1` for each route deleted or expired, as the
//!   statsd deltas. (A count racing a change may be off by that change until the next count.)
//!   `0` on a standby, which stores nothing.
//! - `http_subscriptions`, `tcp_subscriptions`: event streams open now (authorised ones: a
//!   request refused for its token never opens a stream).
//! - `total_token_errors`, `key_refresh_events`: the token validator's counts, read at each
//!   scrape. Gauges rather than counters so that the sample names are these names (the
//!   statsd keys): prometheus-client appends `_total` to a counter's sample.
//! - `request_latency_seconds` (histogram, label `endpoint`): from the request head to the
//!   response head (for an event stream: until it is subscribed), by API endpoint
//!   ([`Endpoint`]: a dozen values, never a raw path). Requests for unknown paths or methods
//!   are not timed.
//!
//! Nothing here costs a lock or an allocation per request: the handles are created with the
//! registry, and a request only touches atomics. The histogram is ours ([`LatencyHistogram`],
//! atomic buckets encoded by prometheus-client) because prometheus-client's takes a mutex on
//! every observation.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::auth::TokenValidator;
use crate::metrics::Kind;
use crate::store::{Store, StoreError};

/// Upper bounds of the latency buckets, in seconds: a cached list answers in a millisecond,
/// a write waits for the database, a slow database takes seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How long one count of the routes may take before it is given up (until the next one).
const COUNT_TIMEOUT: Duration = Duration::from_secs(30);

/// An API endpoint, the `endpoint` label of `request_latency_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ListRoutes,
    UpsertRoutes,
    DeleteRoutes,
    RouteEvents,
    ListTcpRoutes,
    UpsertTcpRoutes,
    DeleteTcpRoutes,
    TcpRouteEvents,
    ListRouterGroups,
    CreateRouterGroup,
    UpdateRouterGroup,
    DeleteRouterGroup,
}

impl Endpoint {
    pub const ALL: [Endpoint; 12] = [
        Endpoint::ListRoutes,
        Endpoint::UpsertRoutes,
        Endpoint::DeleteRoutes,
        Endpoint::RouteEvents,
        Endpoint::ListTcpRoutes,
        Endpoint::UpsertTcpRoutes,
        Endpoint::DeleteTcpRoutes,
        Endpoint::TcpRouteEvents,
        Endpoint::ListRouterGroups,
        Endpoint::CreateRouterGroup,
        Endpoint::UpdateRouterGroup,
        Endpoint::DeleteRouterGroup,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ListRoutes => "list_routes",
            Endpoint::UpsertRoutes => "upsert_routes",
            Endpoint::DeleteRoutes => "delete_routes",
            Endpoint::RouteEvents => "route_events",
            Endpoint::ListTcpRoutes => "list_tcp_routes",
            Endpoint::UpsertTcpRoutes => "upsert_tcp_routes",
            Endpoint::DeleteTcpRoutes => "delete_tcp_routes",
            Endpoint::TcpRouteEvents => "tcp_route_events",
            Endpoint::ListRouterGroups => "list_router_groups",
            Endpoint::CreateRouterGroup => "create_router_group",
            Endpoint::UpdateRouterGroup => "update_router_group",
            Endpoint::DeleteRouterGroup => "delete_router_group",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: &'static str,
}

/// A histogram of durations whose observations are atomic adds: one bucket counter, the sum
/// in nanoseconds. The count is the sum of the buckets, so a scrape always sees `+Inf` equal
/// to `_count` (the sum may lag an observation in flight).
#[derive(Clone)]
pub struct LatencyHistogram {
    inner: Arc<HistogramCells>,
}

struct HistogramCells {
    /// Observations per bucket (not cumulative); the last one is `+Inf`'s.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            inner: Arc::new(HistogramCells {
                buckets: std::array::from_fn(|_| AtomicU64::new(0)),
                sum_nanos: AtomicU64::new(0),
            }),
        }
    }
}

impl fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count())
            .finish_non_exhaustive()
    }
}

impl LatencyHistogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        // The first bucket whose bound is at least the value (`le` is inclusive).
        let bucket = LATENCY_BUCKETS.partition_point(|bound| *bound < seconds);
        self.inner.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.inner
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum()
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let mut buckets = [(0.0, 0); LATENCY_BUCKETS.len() + 1];
        for (i, slot) in buckets.iter_mut().enumerate() {
            let bound = LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            *slot = (bound, self.inner.buckets[i].load(Ordering::Relaxed));
        }
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// One of the token validator's counts, read when scraped (a gauge, see the module doc).
struct TokenCount {
    auth: TokenValidator,
    read: fn(&TokenValidator) -> u64,
}

impl fmt::Debug for TokenCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenCount")
    }
}

impl EncodeMetric for TokenCount {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        encoder.encode_gauge(&(self.read)(&self.auth))
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// The metrics the API updates, and the registry they are exposed through.
#[derive(Debug)]
pub struct ApiMetrics {
    http_routes: Gauge,
    tcp_routes: Gauge,
    http_subscriptions: Gauge,
    tcp_subscriptions: Gauge,
    latency_family: Family<EndpointLabel, LatencyHistogram>,
    /// One handle per [`Endpoint`], in [`Endpoint::ALL`]'s order.
    latency: [LatencyHistogram; Endpoint::ALL.len()],
}

impl Default for ApiMetrics {
    fn default() -> Self {
        let latency_family = Family::<EndpointLabel, LatencyHistogram>::default();
        let latency = Endpoint::ALL.map(|e| {
            latency_family
                .get_or_create(&EndpointLabel {
                    endpoint: e.as_str(),
                })
                .clone()
        });
        Self {
            http_routes: Gauge::default(),
            tcp_routes: Gauge::default(),
            http_subscriptions: Gauge::default(),
            tcp_subscriptions: Gauge::default(),
            latency_family,
            latency,
        }
    }
}

impl ApiMetrics {
    /// A registry exposing these metrics and `auth`'s counts.
    pub fn registry(&self, auth: &TokenValidator) -> Registry {
        let mut r = Registry::default();
        r.register(
            "total_http_routes",
            "HTTP routes stored (not expired)",
            self.http_routes.clone(),
        );
        r.register(
            "total_tcp_routes",
            "TCP routes stored (not expired)",
            self.tcp_routes.clone(),
        );
        r.register(
            "http_subscriptions",
            "HTTP route event streams open now",
            self.http_subscriptions.clone(),
        );
        r.register(
            "tcp_subscriptions",
            "TCP route event streams open now",
            self.tcp_subscriptions.clone(),
        );
        r.register(
            "total_token_errors",
            "Requests refused for their token since start",
            TokenCount {
                auth: auth.clone(),
                read: TokenValidator::token_errors,
            },
        );
        r.register(
            "key_refresh_events",
            "Times UAA's token keys were fetched again since start",
            TokenCount {
                auth: auth.clone(),
                read: TokenValidator::key_refresh_events,
            },
        );
        r.register_with_unit(
            "request_latency",
            "Time from request head to response head, by API endpoint",
            Unit::Seconds,
            self.latency_family.clone(),
        );
        r
    }

    fn routes(&self, kind: Kind) -> &Gauge {
        match kind {
            Kind::Http => &self.http_routes,
            Kind::Tcp => &self.tcp_routes,
        }
    }

    /// A route was stored: `+1` if it was created (an update changes nothing).
    pub fn route_upserted(&self, kind: Kind, created: bool) {
        if created {
            self.routes(kind).inc();
        }
    }

    /// A route was deleted or expired.
    pub fn route_removed(&self, kind: Kind) {
        self.routes(kind).dec();
    }

    /// Sets the route totals from the store; a failed or timed-out count is logged and leaves
    /// its gauge as it was.
    pub async fn count_routes(&self, store: &Store) {
        let http = tokio::time::timeout(COUNT_TIMEOUT, store.http_routes()).await;
        set_count(&self.http_routes, http.map(|r| r.map(|v| v.len())), "http");
        let tcp = tokio::time::timeout(COUNT_TIMEOUT, store.tcp_routes(&[])).await;
        set_count(&self.tcp_routes, tcp.map(|r| r.map(|v| v.len())), "tcp");
    }

    /// An event stream opened: counted until the guard is dropped (with the stream's body).
    pub fn stream_opened(&self, kind: Kind) -> OpenStream {
        let gauge = match kind {
            Kind::Http => &self.http_subscriptions,
            Kind::Tcp => &self.tcp_subscriptions,
        };
        gauge.inc();
        OpenStream(gauge.clone())
    }

    /// The latency histogram of `endpoint`.
    pub fn latency(&self, endpoint: Endpoint) -> &LatencyHistogram {
        // `ALL` lists the variants in declaration order, so the discriminant is the index.
        &self.latency[endpoint as usize]
    }
}

fn as_gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn set_count(
    gauge: &Gauge,
    counted: Result<Result<usize, StoreError>, tokio::time::error::Elapsed>,
    kind: &'static str,
) {
    match counted {
        Ok(Ok(n)) => {
            gauge.set(as_gauge(n));
        }
        Ok(Err(e)) => {
            tracing::info!(kind, error = %e, "routing-api.prometheus.error-counting-routes")
        }
        Err(_) => tracing::info!(kind, "routing-api.prometheus.counting-routes-timed-out"),
    }
}

/// One open event stream in the subscription gauge; dropping it takes it out.
#[derive(Debug)]
pub struct OpenStream(Gauge);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counts the routes every `interval` (the first count a full interval from now: the caller
/// counts at start) until `closing`.
pub fn spawn_route_counter(
    metrics: Arc<ApiMetrics>,
    store: Store,
    interval: Duration,
    mut closing: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = closing.wait_for(|c| *c) => return,
                _ = tick.tick() => {}
            }
            metrics.count_routes(&store).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(m: &ApiMetrics) -> String {
        prometheus_endpoint::encode(&m.registry(&TokenValidator::disabled()))
    }

    #[test]
    fn endpoints_index_their_own_histogram() {
        for (i, e) in Endpoint::ALL.into_iter().enumerate() {
            assert_eq!(e as usize, i, "{e:?}");
        }
    }

    #[test]
    fn a_latency_lands_in_the_first_bucket_whose_bound_holds_it_and_in_every_later_one() {
        let m = ApiMetrics::default();
        m.latency(Endpoint::ListRoutes)
            .observe(Duration::from_millis(3));
        m.latency(Endpoint::ListRoutes)
            .observe(Duration::from_millis(10));
        let text = exposition(&m);
        for line in [
            "# TYPE request_latency_seconds histogram",
            "# UNIT request_latency_seconds seconds",
            "request_latency_seconds_count{endpoint=\"list_routes\"} 2",
            "request_latency_seconds_sum{endpoint=\"list_routes\"} 0.013",
            "request_latency_seconds_bucket{le=\"0.0025\",endpoint=\"list_routes\"} 0",
            "request_latency_seconds_bucket{le=\"0.005\",endpoint=\"list_routes\"} 1",
            "request_latency_seconds_bucket{le=\"0.01\",endpoint=\"list_routes\"} 2",
            "request_latency_seconds_bucket{le=\"+Inf\",endpoint=\"list_routes\"} 2",
            "request_latency_seconds_count{endpoint=\"upsert_routes\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn every_endpoint_has_its_series_before_any_request() {
        let text = exposition(&ApiMetrics::default());
        for e in Endpoint::ALL {
            let line = format!(
                "request_latency_seconds_count{{endpoint=\"{}\"}} 0",
                e.as_str()
            );
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn an_open_stream_counts_until_dropped() {
        let m = ApiMetrics::default();
        let stream = m.stream_opened(Kind::Tcp);
        assert!(exposition(&m).contains("\ntcp_subscriptions 1\n"));
        drop(stream);
        assert!(exposition(&m).contains("\ntcp_subscriptions 0\n"));
    }

    #[test]
    fn an_update_does_not_move_the_route_total_and_a_creation_does() {
        let m = ApiMetrics::default();
        m.route_upserted(Kind::Http, true);
        m.route_upserted(Kind::Http, false);
        assert!(exposition(&m).contains("\ntotal_http_routes 1\n"));
        m.route_removed(Kind::Http);
        assert!(exposition(&m).contains("\ntotal_http_routes 0\n"));
    }
}
