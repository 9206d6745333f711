//! Counters of the data path and the route source, kept in prometheus-client metrics and
//! exposed through [`Metrics::registry`] (served at `/metrics` on the health port by
//! [`crate::health`], and on the `prometheus` port when configured).
//!
//! Per external port: connections accepted, open connections, bytes in each direction, and
//! errors by kind. A port's series are created when its listener first opens and kept after it
//! closes, so counters never go backwards. Connections only touch their port's atomics (the
//! family handles [`PortMetrics`] holds): the families' locks are taken when a listener opens
//! and when `/metrics` is rendered.
//!
//! Sample names are those of the hand-written exposition this replaced (`tcp_router_*`, every
//! counter's ending in `_total`); being OpenMetrics, a counter's `# TYPE` line names it
//! without the `_total`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// A gauge of a count (connections, bytes, backends).
pub type Gauge = gauge::Gauge<u64, AtomicU64>;

/// Why a client connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No backend for the connection (no route, or no route for its SNI and no default).
    NoBackend,
    /// Every connect attempt failed (refused, unreachable, timed out).
    Connect,
    /// The TLS handshake with a backend failed.
    BackendTls,
    /// A read or write failed mid-stream (reset, broken pipe).
    Io,
    /// No data either way for the idle timeout.
    IdleTimeout,
    /// A TLS backend's connection got no buffer memory within `connect_timeout`
    /// (`backend_tls_buffer_budget_mb`).
    TlsBufferBudget,
}

impl ErrorKind {
    const ALL: [ErrorKind; 6] = [
        ErrorKind::NoBackend,
        ErrorKind::Connect,
        ErrorKind::BackendTls,
        ErrorKind::Io,
        ErrorKind::IdleTimeout,
        ErrorKind::TlsBufferBudget,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NoBackend => "no_backend",
            ErrorKind::Connect => "connect",
            ErrorKind::BackendTls => "backend_tls",
            ErrorKind::Io => "io",
            ErrorKind::IdleTimeout => "idle_timeout",
            ErrorKind::TlsBufferBudget => "tls_buffer_budget",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PortLabels {
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DirectionLabels {
    port: u16,
    direction: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    port: u16,
    kind: &'static str,
}

/// One external port's counters: handles on the port's series of [`Metrics`]' families (or
/// on series of their own, for a [`PortMetrics::default`] outside any registry).
#[derive(Debug, Default)]
pub struct PortMetrics {
    pub connections: Counter,
    pub active: Gauge,
    pub bytes_from_clients: Counter,
    pub bytes_to_clients: Counter,
    errors: [Counter; ErrorKind::ALL.len()],
}

impl PortMetrics {
    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].inc();
    }

    pub fn errors(&self, kind: ErrorKind) -> u64 {
        self.errors[kind as usize].get()
    }
}

/// A gauge whose value is read when scraped (what another part of the router owns).
pub struct Sampled(Box<dyn Fn() -> u64 + Send + Sync>);

impl Sampled {
    pub fn new(read: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Self(Box::new(read))
    }
}

impl fmt::Debug for Sampled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sampled")
    }
}

impl EncodeMetric for Sampled {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        encoder.encode_gauge(&(self.0)())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// Process-wide counters and the per-port ones.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Each port's handles, so a listener that opens again gets the same ones.
    ports: Mutex<BTreeMap<u16, Arc<PortMetrics>>>,
    connections: Family<PortLabels, Counter>,
    active: Family<PortLabels, Gauge>,
    bytes: Family<DirectionLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    /// Connections closed at once because `max_connections` were open.
    pub rejected: Counter,
    /// Successful and failed full syncs with the Routing API.
    pub syncs: Counter,
    pub sync_failures: Counter,
    /// Route events applied (or ignored as stale) from the event stream.
    pub events: Counter,
    /// (Re)subscriptions to the event stream.
    pub subscriptions: Counter,
    /// Backends removed by local expiry.
    pub expired: Counter,
    /// Backends in the table, and ports listened on.
    pub backends: Gauge,
    pub listeners: Gauge,
    /// Buffer memory of TLS-backend connections: the budget, what is reserved now, and how
    /// often a direction could not grow for want of budget.
    pub tls_buffer_budget_bytes: Gauge,
    pub tls_buffer_bytes: Gauge,
    pub tls_buffer_growth_denied: Counter,
}

impl Metrics {
    /// The counters of `port`, created (every series at zero) on first use.
    pub fn port(&self, port: u16) -> Arc<PortMetrics> {
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        ports
            .entry(port)
            .or_insert_with(|| {
                let labels = PortLabels { port };
                let bytes = |direction| {
                    self.bytes
                        .get_or_create(&DirectionLabels { port, direction })
                        .clone()
                };
                Arc::new(PortMetrics {
                    connections: self.connections.get_or_create(&labels).clone(),
                    active: self.active.get_or_create(&labels).clone(),
                    bytes_from_clients: bytes("client_to_backend"),
                    bytes_to_clients: bytes("backend_to_client"),
                    errors: ErrorKind::ALL.map(|kind| {
                        self.errors
                            .get_or_create(&ErrorLabels {
                                port,
                                kind: kind.as_str(),
                            })
                            .clone()
                    }),
                })
            })
            .clone()
    }

    /// A registry exposing every metric, with the two that other parts of the router own:
    /// `open_connections` (all ports) and `draining` (1 or 0), read at each scrape.
    pub fn registry(
        &self,
        open_connections: impl Fn() -> u64 + Send + Sync + 'static,
        draining: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Registry {
        let mut root = Registry::default();
        let r = root.sub_registry_with_prefix("tcp_router");
        r.register(
            "connections",
            "Client connections accepted, by external port.",
            self.connections.clone(),
        );
        r.register(
            "active_connections",
            "Client connections open now, by external port.",
            self.active.clone(),
        );
        r.register(
            "bytes",
            "Bytes forwarded, by external port and direction.",
            self.bytes.clone(),
        );
        r.register(
            "errors",
            "Failed client connections, by external port and kind.",
            self.errors.clone(),
        );
        r.register(
            "open_connections",
            "Client connections open now, all ports.",
            Sampled::new(open_connections),
        );
        r.register(
            "rejected_connections",
            "Connections closed at once because max_connections were open.",
            self.rejected.clone(),
        );
        r.register(
            "routing_api_syncs",
            "Successful full syncs with the Routing API.",
            self.syncs.clone(),
        );
        r.register(
            "routing_api_sync_failures",
            "Failed full syncs with the Routing API.",
            self.sync_failures.clone(),
        );
        r.register(
            "routing_api_events",
            "TCP route events received from the Routing API.",
            self.events.clone(),
        );
        r.register(
            "routing_api_subscriptions",
            "Subscriptions to the Routing API's TCP route event stream.",
            self.subscriptions.clone(),
        );
        r.register(
            "expired_backends",
            "Backends removed because their TTL ran out.",
            self.expired.clone(),
        );
        r.register(
            "backends",
            "Backends in the routing table.",
            self.backends.clone(),
        );
        r.register(
            "listeners",
            "External ports listened on.",
            self.listeners.clone(),
        );
        r.register(
            "tls_buffer_budget_bytes",
            "Buffer memory TLS-backend connections may use (backend_tls_buffer_budget_mb).",
            self.tls_buffer_budget_bytes.clone(),
        );
        r.register(
            "tls_buffer_bytes",
            "Buffer memory reserved by TLS-backend connections now.",
            self.tls_buffer_bytes.clone(),
        );
        r.register(
            "tls_buffer_growth_denied",
            "Times a TLS-backend connection kept its small buffer for want of budget.",
            self.tls_buffer_growth_denied.clone(),
        );
        r.register(
            "draining",
            "1 while draining (/health answers 503).",
            Sampled::new(move || u64::from(draining())),
        );
        root
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(m: &Metrics, open: u64, draining: bool) -> String {
        prometheus_endpoint::encode(&m.registry(move || open, move || draining))
    }

    #[test]
    fn renders_the_hand_written_expositions_sample_lines() {
        let m = Metrics::default();
        let p = m.port(1024);
        p.connections.inc_by(3);
        p.bytes_from_clients.inc_by(10);
        p.bytes_to_clients.inc_by(20);
        p.error(ErrorKind::Connect);
        m.rejected.inc();
        let text = exposition(&m, 2, false);
        for line in [
            "# TYPE tcp_router_connections counter",
            "tcp_router_connections_total{port=\"1024\"} 3",
            "tcp_router_active_connections{port=\"1024\"} 0",
            "tcp_router_bytes_total{port=\"1024\",direction=\"client_to_backend\"} 10",
            "tcp_router_bytes_total{port=\"1024\",direction=\"backend_to_client\"} 20",
            "tcp_router_errors_total{port=\"1024\",kind=\"connect\"} 1",
            "tcp_router_errors_total{port=\"1024\",kind=\"io\"} 0",
            "tcp_router_open_connections 2",
            "tcp_router_rejected_connections_total 1",
            "tcp_router_routing_api_syncs_total 0",
            "tcp_router_routing_api_sync_failures_total 0",
            "tcp_router_routing_api_events_total 0",
            "tcp_router_routing_api_subscriptions_total 0",
            "tcp_router_expired_backends_total 0",
            "tcp_router_backends 0",
            "tcp_router_listeners 0",
            "tcp_router_tls_buffer_budget_bytes 0",
            "tcp_router_tls_buffer_bytes 0",
            "tcp_router_tls_buffer_growth_denied_total 0",
            "tcp_router_draining 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn a_port_has_every_error_kind_at_zero_before_any_error() {
        let m = Metrics::default();
        m.port(2000);
        let text = exposition(&m, 0, false);
        for kind in ErrorKind::ALL {
            let line = format!(
                "tcp_router_errors_total{{port=\"2000\",kind=\"{}\"}} 0",
                kind.as_str()
            );
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn a_port_opened_again_keeps_its_counters() {
        let m = Metrics::default();
        let p = m.port(1024);
        p.connections.inc();
        assert!(Arc::ptr_eq(&m.port(1024), &p));
        assert_eq!(m.port(1024).connections.get(), 1);
    }

    #[test]
    fn draining_reads_one_while_draining() {
        let text = exposition(&Metrics::default(), 0, true);
        assert!(text.lines().any(|l| l == "tcp_router_draining 1"), "{text}");
    }
}
