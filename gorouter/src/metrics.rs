//! The router's Prometheus metrics, with upstream gorouter's names, labels and units, served
//! on `prometheus.port` (see [`prometheus_endpoint`]).
//!
//! [`RouterMetrics`] holds what the request path counts: plain atomics and lock-free
//! histograms, so a request never takes a lock or allocates for them (the per-component and
//! per-app series are found in lock-free maps, created on a component's or app's first
//! request). [`RouterCollector`] writes them at scrape time together with what is read then
//! from the rest of the router: the route table (`total_routes`,
//! `ms_since_last_registry_update`, `routes_pruned`, registry messages), open client
//! connections, idle backend connections, dropped access-log lines.
//!
//! Counters keep upstream's sample names exactly (no `_total` suffix; see
//! [`prometheus_endpoint::metrics`]). Latency is measured to the backend's response headers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Response, StatusCode};
use prometheus_endpoint::metrics::{
    encode_histograms, encode_labelled_values, encode_value, AtomicHistogram, ValueKind,
};
use prometheus_endpoint::prometheus_client::collector::Collector;
use prometheus_endpoint::prometheus_client::encoding::DescriptorEncoder;

use crate::proxy::errors::X_CF_ROUTERERROR;
use crate::proxy::listener::Connections;
use crate::proxy::Proxy;
use crate::registry::stats::{
    DEFAULT_REGISTRATION_LATENCY_BUCKETS, MAX_COMPONENTS, OTHER_COMPONENT,
};
use crate::registry::{Endpoint, RouteTable};
use crate::tls::backend::BackendTlsErrorKind;
use crate::top_apps::TopApps;

/// Apps with their own `http_latency_seconds` series; requests to more share the
/// `source_id="other"` series, so the series count stays bounded.
pub const MAX_APPS: usize = 1000;

/// Histogram bounds (`prometheus.meters`), in upstream's units.
#[derive(Debug, Clone, PartialEq)]
pub struct Meters {
    /// `route_lookup_time`, nanoseconds.
    pub route_lookup_time: Vec<f64>,
    /// `latency`, milliseconds.
    pub routing_response_latency: Vec<f64>,
    /// `http_latency_seconds`, seconds.
    pub http_latency: Vec<f64>,
    /// `route_registration_latency`, milliseconds.
    pub route_registration_latency: Vec<f64>,
}

impl Default for Meters {
    fn default() -> Self {
        Self {
            route_lookup_time: (1..=10).map(|i| f64::from(i) * 10_000.0).collect(),
            routing_response_latency: vec![
                1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 50.0, 100.0, 500.0, 1000.0,
            ],
            http_latency: vec![0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6],
            route_registration_latency: DEFAULT_REGISTRATION_LATENCY_BUCKETS.to_vec(),
        }
    }
}

/// What to measure per request.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSettings {
    /// `per_request_metrics_reporting`: `latency` and `route_lookup_time` per request.
    pub per_request: bool,
    /// `per_app_prometheus_http_metrics_reporting`: `http_latency_seconds` by app.
    pub per_app: bool,
    pub meters: Meters,
}

/// A component's (`tags.component`) request count and latency.
#[derive(Debug)]
struct ComponentSeries {
    requests: AtomicU64,
    latency: AtomicHistogram,
}

/// `responses`' `status_group` label values, in index order.
const STATUS_GROUPS: [&str; 5] = ["2xx", "3xx", "4xx", "5xx", "xxx"];

/// Counters of the request path.
#[derive(Debug)]
pub struct RouterMetrics {
    settings: MetricsSettings,
    responses: [AtomicU64; 5],
    route_service_responses: [AtomicU64; 5],
    rejected_requests: AtomicU64,
    bad_gateways: AtomicU64,
    backend_exhausted_conns: AtomicU64,
    backend_tls_handshake_failed: AtomicU64,
    backend_invalid_id: AtomicU64,
    backend_invalid_tls_cert: AtomicU64,
    websocket_upgrades: AtomicU64,
    websocket_failures: AtomicU64,
    route_lookup_time: AtomicHistogram,
    components: crate::LockFreeMap<Box<str>, Arc<ComponentSeries>>,
    apps: crate::LockFreeMap<Box<str>, Arc<AtomicHistogram>>,
    /// Requests by app over the last minute, for the deprecated `/varz` only.
    top_apps: Option<TopApps>,
}

/// One label, as the encoder takes it.
type Label<'a> = [(&'static str, &'a str); 1];

/// A series found by name in a lock-free map, created on first use; past `cap` names, the
/// `other` series.
fn series<'g, V>(
    map: &'g crate::LockFreeMap<Box<str>, Arc<V>>,
    name: &str,
    cap: usize,
    new: impl Fn() -> V,
    guard: &'g papaya::LocalGuard<'g>,
) -> &'g Arc<V> {
    if let Some(found) = map.get(name, guard) {
        return found;
    }
    let name = if map.len() < cap {
        name
    } else {
        OTHER_COMPONENT
    };
    map.get_or_insert_with(name.into(), || Arc::new(new()), guard)
}

impl RouterMetrics {
    pub fn new(settings: MetricsSettings) -> Self {
        Self {
            route_lookup_time: AtomicHistogram::new(&settings.meters.route_lookup_time),
            settings,
            responses: Default::default(),
            route_service_responses: Default::default(),
            rejected_requests: AtomicU64::new(0),
            bad_gateways: AtomicU64::new(0),
            backend_exhausted_conns: AtomicU64::new(0),
            backend_tls_handshake_failed: AtomicU64::new(0),
            backend_invalid_id: AtomicU64::new(0),
            backend_invalid_tls_cert: AtomicU64::new(0),
            websocket_upgrades: AtomicU64::new(0),
            websocket_failures: AtomicU64::new(0),
            components: crate::LockFreeMap::default(),
            apps: crate::LockFreeMap::default(),
            top_apps: None,
        }
    }

    /// Also counts requests by app for `/varz`'s `top10_app_requests`.
    pub fn with_top_apps(mut self) -> Self {
        self.top_apps = Some(TopApps::new());
        self
    }

    /// Requests by app, when counted ([`RouterMetrics::with_top_apps`]).
    pub fn top_apps(&self) -> Option<&TopApps> {
        self.top_apps.as_ref()
    }

    /// Whether per-request timings are taken (`per_request_metrics_reporting`).
    pub fn per_request(&self) -> bool {
        self.settings.per_request
    }

    /// The route table lookup of one request took `took`.
    pub fn route_lookup(&self, took: Duration) {
        self.route_lookup_time.observe(took.as_nanos() as f64);
    }

    /// A route service answered the first pass of a request with `status`.
    pub fn route_service_answered(&self, status: StatusCode) {
        self.route_service_responses[status_group(status)].fetch_add(1, Ordering::Relaxed);
    }

    /// A backend answered (its response headers arrived `took` after the request did).
    pub fn routed(&self, endpoint: &Endpoint, took: Duration) {
        let guard = self.components.guard();
        let component = series(
            &self.components,
            endpoint.component(),
            MAX_COMPONENTS,
            || ComponentSeries {
                requests: AtomicU64::new(0),
                latency: AtomicHistogram::new(&self.settings.meters.routing_response_latency),
            },
            &guard,
        );
        component.requests.fetch_add(1, Ordering::Relaxed);
        if self.settings.per_request {
            component.latency.observe(took.as_secs_f64() * 1000.0);
        }
        if self.settings.per_app {
            let guard = self.apps.guard();
            let app = series(
                &self.apps,
                endpoint.app_id(),
                MAX_APPS,
                || AtomicHistogram::new(&self.settings.meters.http_latency),
                &guard,
            );
            app.observe(took.as_secs_f64());
        }
        if let Some(top_apps) = &self.top_apps {
            top_apps.mark(endpoint.app_id(), Instant::now());
        }
    }

    /// A TLS handshake with a backend failed.
    pub fn backend_tls_failed(&self, kind: BackendTlsErrorKind) {
        let counter = match kind {
            BackendTlsErrorKind::HostnameMismatch => &self.backend_invalid_id,
            BackendTlsErrorKind::Untrusted => &self.backend_invalid_tls_cert,
            _ => &self.backend_tls_handshake_failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The response a client gets (backend's or router's); `websocket` when the request asked
    /// for an upgrade.
    pub fn answered<B>(&self, response: &Response<B>, websocket: bool) {
        let status = response.status();
        self.responses[status_group(status)].fetch_add(1, Ordering::Relaxed);
        if websocket {
            let counter = if status == StatusCode::SWITCHING_PROTOCOLS {
                &self.websocket_upgrades
            } else {
                &self.websocket_failures
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        // The router's own answers name themselves in `X-Cf-Routererror`.
        let Some(error) = response.headers().get(&X_CF_ROUTERERROR) else {
            return;
        };
        let counter = if error.as_bytes() == b"Connection Limit Reached" {
            &self.backend_exhausted_conns
        } else if status == StatusCode::BAD_GATEWAY {
            &self.bad_gateways
        } else if status.is_client_error() {
            &self.rejected_requests
        } else {
            return;
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Responses to clients by status group: 2xx, 3xx, 4xx, 5xx, any other (read by `/varz`).
    pub fn responses_by_group(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.responses[i].load(Ordering::Relaxed))
    }

    /// The router's own 4xx answers (`rejected_requests`; `/varz`'s `bad_requests`).
    pub fn rejected_requests(&self) -> u64 {
        self.rejected_requests.load(Ordering::Relaxed)
    }

    /// The router's own 502 answers (`bad_gateways`).
    pub fn bad_gateways(&self) -> u64 {
        self.bad_gateways.load(Ordering::Relaxed)
    }

    /// Calls `f` with each component's name (`""` for endpoints without one), requests and
    /// latency histogram (ms), in name order (read by `/varz`).
    pub fn for_each_component(&self, mut f: impl FnMut(&str, u64, &AtomicHistogram)) {
        let guard = self.components.pin();
        let mut all: Vec<_> = guard.iter().collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        for (name, series) in all {
            let requests = series.requests.load(Ordering::Relaxed);
            f(name, requests, &series.latency);
        }
    }
}

/// The index in [`STATUS_GROUPS`] of `status`'s group.
fn status_group(status: StatusCode) -> usize {
    match status.as_u16() / 100 {
        g @ 2..=5 => usize::from(g - 2),
        _ => 4,
    }
}

/// Open file descriptors of this process (`/proc/self/fd`), or `None` where unreadable.
fn open_file_descriptors() -> Option<u64> {
    std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|dir| dir.count() as u64)
}

/// Everything `/metrics` shows, read at scrape time.
pub struct RouterCollector {
    pub metrics: Arc<RouterMetrics>,
    pub table: Arc<RouteTable>,
    pub proxy: Arc<Proxy>,
    pub connections: Arc<Connections>,
}

impl std::fmt::Debug for RouterCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterCollector").finish_non_exhaustive()
    }
}

impl Collector for RouterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = &self.metrics;
        let e = &mut encoder;
        let counter = |e: &mut DescriptorEncoder, name, help, value: &AtomicU64| {
            encode_value(
                e,
                name,
                help,
                ValueKind::Counter,
                value.load(Ordering::Relaxed),
            )
        };
        // Requests and responses.
        let components: Vec<(Box<str>, Arc<ComponentSeries>)> = {
            let guard = m.components.pin();
            let mut all: Vec<_> = guard.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            all.sort_by(|a, b| a.0.cmp(&b.0));
            all
        };
        let labels: Vec<Label> = components
            .iter()
            .map(|(name, _)| [("component", &**name)])
            .collect();
        let requests: Vec<u64> = components
            .iter()
            .map(|(_, s)| s.requests.load(Ordering::Relaxed))
            .collect();
        encode_labelled_values(
            e,
            "total_requests",
            "number of routing requests",
            ValueKind::Counter,
            labels.iter().zip(requests.iter().copied()),
        )?;
        let groups: Vec<Label> = STATUS_GROUPS
            .iter()
            .map(|g| [("status_group", *g)])
            .collect();
        encode_labelled_values(
            e,
            "responses",
            "number of responses",
            ValueKind::Counter,
            groups
                .iter()
                .zip(m.responses.iter().map(|c| c.load(Ordering::Relaxed))),
        )?;
        encode_labelled_values(
            e,
            "responses_route_services",
            "number of responses for route services",
            ValueKind::Counter,
            groups.iter().zip(
                m.route_service_responses
                    .iter()
                    .map(|c| c.load(Ordering::Relaxed)),
            ),
        )?;
        if m.settings.per_request {
            encode_histograms(
                e,
                "latency",
                "routing response latency in ms",
                labels
                    .iter()
                    .zip(components.iter().map(|(_, s)| &s.latency)),
            )?;
            encode_histograms(
                e,
                "route_lookup_time",
                "route lookup time per request in ns",
                [(&[] as &[(&str, &str); 0], &m.route_lookup_time)],
            )?;
        }
        if m.settings.per_app {
            let apps: Vec<(Box<str>, Arc<AtomicHistogram>)> = {
                let guard = m.apps.pin();
                let mut all: Vec<_> = guard.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                all.sort_by(|a, b| a.0.cmp(&b.0));
                all
            };
            let labels: Vec<Label> = apps.iter().map(|(id, _)| [("source_id", &**id)]).collect();
            encode_histograms(
                e,
                "http_latency_seconds",
                "the latency of http requests from gorouter and back in sec",
                labels.iter().zip(apps.iter().map(|(_, h)| h.as_ref())),
            )?;
        }
        counter(
            e,
            "rejected_requests",
            "number of rejected requests",
            &m.rejected_requests,
        )?;
        counter(
            e,
            "bad_gateways",
            "number of bad gateway errors received from backends",
            &m.bad_gateways,
        )?;
        counter(
            e,
            "backend_exhausted_conns",
            "number of errors related to backend connection limit reached",
            &m.backend_exhausted_conns,
        )?;
        counter(
            e,
            "backend_tls_handshake_failed",
            "number of backend handshake errors",
            &m.backend_tls_handshake_failed,
        )?;
        counter(
            e,
            "backend_invalid_id",
            "number of bad backend id errors received from backends",
            &m.backend_invalid_id,
        )?;
        counter(
            e,
            "backend_invalid_tls_cert",
            "number of tls certificate errors received from backends",
            &m.backend_invalid_tls_cert,
        )?;
        counter(
            e,
            "websocket_upgrades",
            "websocket upgrade to websocket",
            &m.websocket_upgrades,
        )?;
        counter(
            e,
            "websocket_failures",
            "websocket failure",
            &m.websocket_failures,
        )?;

        // The route table.
        let table = &self.table;
        let stats = table.stats();
        encode_value(
            e,
            "total_routes",
            "number of total routes",
            ValueKind::Gauge,
            table.route_count() as u64,
        )?;
        let since_update = stats
            .last_update_ms()
            .map_or(0, |at| table.now_ms().saturating_sub(at));
        encode_value(
            e,
            "ms_since_last_registry_update",
            "time since last registry update in ms",
            ValueKind::Gauge,
            since_update,
        )?;
        encode_value(
            e,
            "routes_pruned",
            "number of pruned routes",
            ValueKind::Counter,
            stats.routes_pruned(),
        )?;
        encode_histograms(
            e,
            "route_registration_latency",
            "route registration latency in ms",
            [(&[] as &[(&str, &str); 0], stats.registration_latency())],
        )?;
        let registered = stats.registered();
        let labels: Vec<[(&str, &str); 2]> = registered
            .iter()
            .map(|(component, action, _)| [("action", *action), ("component", component.as_str())])
            .collect();
        encode_labelled_values(
            e,
            "registry_message",
            "number of route registration messages",
            ValueKind::Counter,
            labels.iter().zip(registered.iter().map(|(_, _, n)| *n)),
        )?;
        let unregistered = stats.unregistered();
        let labels: Vec<Label> = unregistered
            .iter()
            .map(|(component, _)| [("component", component.as_str())])
            .collect();
        encode_labelled_values(
            e,
            "unregistry_message",
            "number of unregister messages",
            ValueKind::Counter,
            labels.iter().zip(unregistered.iter().map(|(_, n)| *n)),
        )?;

        if let Some(fds) = open_file_descriptors() {
            encode_value(
                e,
                "file_descriptors",
                "number of file descriptors found",
                ValueKind::Gauge,
                fds,
            )?;
        }

        // Ours.
        encode_value(
            e,
            "open_client_connections",
            "client connections open now",
            ValueKind::Gauge,
            self.connections.active() as u64,
        )?;
        encode_value(
            e,
            "backend_idle_connections",
            "idle keep-alive connections to backends held in the pools now",
            ValueKind::Gauge,
            self.proxy.transport.idle_connections() as u64,
        )?;
        encode_value(
            e,
            "backend_pools",
            "backends with a connection pool now",
            ValueKind::Gauge,
            self.proxy.transport.pools() as u64,
        )?;
        encode_value(
            e,
            "access_log_lines_dropped",
            "access log records dropped because the writer fell behind",
            ValueKind::Counter,
            self.proxy
                .access_log
                .as_ref()
                .map_or(0, |log| log.dropped()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn metrics() -> RouterMetrics {
        RouterMetrics::new(MetricsSettings {
            per_request: true,
            per_app: false,
            meters: Meters::default(),
        })
    }

    fn response(status: u16, router_error: Option<&'static str>) -> Response<()> {
        let mut r = Response::new(());
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        if let Some(v) = router_error {
            r.headers_mut()
                .insert(&X_CF_ROUTERERROR, HeaderValue::from_static(v));
        }
        r
    }

    fn load(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    #[test]
    fn responses_count_by_status_group() {
        let m = metrics();
        for status in [200, 204, 301, 404, 503, 101] {
            m.answered(&response(status, None), false);
        }
        let counts: Vec<u64> = m.responses.iter().map(load).collect();
        assert_eq!(counts, vec![2, 1, 1, 1, 1]);
    }

    #[test]
    fn the_routers_own_4xx_is_a_rejected_request_but_a_backends_is_not() {
        let m = metrics();
        m.answered(&response(404, Some("unknown_route")), false);
        m.answered(&response(404, None), false);
        assert_eq!(load(&m.rejected_requests), 1);
    }

    #[test]
    fn the_routers_own_502_is_a_bad_gateway_but_a_backends_is_not() {
        let m = metrics();
        m.answered(&response(502, Some("endpoint_failure (EOF)")), false);
        m.answered(&response(502, None), false);
        assert_eq!(load(&m.bad_gateways), 1);
    }

    #[test]
    fn the_connection_limit_is_backend_exhausted_conns() {
        let m = metrics();
        m.answered(&response(503, Some("Connection Limit Reached")), false);
        assert_eq!(load(&m.backend_exhausted_conns), 1);
        assert_eq!(load(&m.bad_gateways), 0);
    }

    #[test]
    fn a_websocket_request_is_an_upgrade_on_101_and_a_failure_otherwise() {
        let m = metrics();
        m.answered(&response(101, None), true);
        m.answered(&response(502, Some("endpoint_failure (EOF)")), true);
        m.answered(&response(101, None), false);
        assert_eq!(load(&m.websocket_upgrades), 1);
        assert_eq!(load(&m.websocket_failures), 1);
    }

    #[test]
    fn route_service_responses_count_apart_from_the_apps() {
        let m = metrics();
        m.route_service_answered(StatusCode::OK);
        m.route_service_answered(StatusCode::BAD_GATEWAY);
        let counts: Vec<u64> = m.route_service_responses.iter().map(load).collect();
        assert_eq!(counts, vec![1, 0, 0, 1, 0]);
        assert!(m.responses.iter().all(|c| load(c) == 0));
    }

    #[test]
    fn backend_tls_failures_count_by_class() {
        let m = metrics();
        m.backend_tls_failed(BackendTlsErrorKind::HostnameMismatch);
        m.backend_tls_failed(BackendTlsErrorKind::Untrusted);
        m.backend_tls_failed(BackendTlsErrorKind::HandshakeFailure);
        m.backend_tls_failed(BackendTlsErrorKind::NotTls);
        assert_eq!(load(&m.backend_invalid_id), 1);
        assert_eq!(load(&m.backend_invalid_tls_cert), 1);
        assert_eq!(load(&m.backend_tls_handshake_failed), 2);
    }

    #[test]
    fn series_beyond_the_cap_share_other() {
        let map: crate::LockFreeMap<Box<str>, Arc<AtomicU64>> = crate::LockFreeMap::default();
        let guard = map.guard();
        for i in 0..5 {
            series(&map, &format!("c{i}"), 3, || AtomicU64::new(0), &guard)
                .fetch_add(1, Ordering::Relaxed);
        }
        assert_eq!(map.len(), 4);
        let other = map.get(OTHER_COMPONENT, &guard).expect("an other series");
        assert_eq!(load(other), 2);
    }
}
