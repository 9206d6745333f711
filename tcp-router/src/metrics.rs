//! Counters of the data path and the route source, and their Prometheus text rendering
//! (served at `/metrics` on the health port by [`crate::health`]).
//!
//! Per external port: connections accepted, open connections, bytes in each direction, and
//! errors by kind. A port's counters are created when its listener first opens and kept after it
//! closes, so counters never go backwards. Connections only touch their port's atomics: the
//! registry's lock is taken when a listener opens and when `/metrics` is rendered.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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

/// One external port's counters.
#[derive(Debug, Default)]
pub struct PortMetrics {
    pub connections: AtomicU64,
    pub active: AtomicUsize,
    pub bytes_from_clients: AtomicU64,
    pub bytes_to_clients: AtomicU64,
    errors: [AtomicU64; 6],
}

impl PortMetrics {
    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn errors(&self, kind: ErrorKind) -> u64 {
        self.errors[kind as usize].load(Ordering::Relaxed)
    }
}

/// Process-wide counters and the per-port ones.
#[derive(Debug, Default)]
pub struct Metrics {
    ports: Mutex<BTreeMap<u16, Arc<PortMetrics>>>,
    /// Connections closed at once because `max_connections` were open.
    pub rejected: AtomicU64,
    /// Successful and failed full syncs with the Routing API.
    pub syncs: AtomicU64,
    pub sync_failures: AtomicU64,
    /// Route events applied (or ignored as stale) from the event stream.
    pub events: AtomicU64,
    /// (Re)subscriptions to the event stream.
    pub subscriptions: AtomicU64,
    /// Backends removed by local expiry.
    pub expired: AtomicU64,
    /// Backends in the table, and ports listened on (gauges).
    pub backends: AtomicUsize,
    pub listeners: AtomicUsize,
    /// Buffer memory of TLS-backend connections: the budget, what is reserved now (gauges),
    /// and how often a direction could not grow for want of budget.
    pub tls_buffer_budget_bytes: AtomicUsize,
    pub tls_buffer_bytes: AtomicUsize,
    pub tls_buffer_growth_denied: AtomicU64,
}

impl Metrics {
    /// The counters of `port`, created on first use.
    pub fn port(&self, port: u16) -> Arc<PortMetrics> {
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        ports.entry(port).or_default().clone()
    }

    /// Prometheus text exposition format (version 0.0.4).
    pub fn render(&self, active_total: usize, draining: bool) -> String {
        let ports: Vec<(u16, Arc<PortMetrics>)> = self
            .ports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(p, m)| (*p, m.clone()))
            .collect();
        let mut out = String::with_capacity(1024 + ports.len() * 512);
        // Per-port families.
        header(
            &mut out,
            "tcp_router_connections_total",
            "counter",
            "Client connections accepted, by external port.",
        );
        for (p, m) in &ports {
            let v = m.connections.load(Ordering::Relaxed);
            let _ = writeln!(out, "tcp_router_connections_total{{port=\"{p}\"}} {v}");
        }
        header(
            &mut out,
            "tcp_router_active_connections",
            "gauge",
            "Client connections open now, by external port.",
        );
        for (p, m) in &ports {
            let v = m.active.load(Ordering::Relaxed);
            let _ = writeln!(out, "tcp_router_active_connections{{port=\"{p}\"}} {v}");
        }
        header(
            &mut out,
            "tcp_router_bytes_total",
            "counter",
            "Bytes forwarded, by external port and direction.",
        );
        for (p, m) in &ports {
            let up = m.bytes_from_clients.load(Ordering::Relaxed);
            let down = m.bytes_to_clients.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "tcp_router_bytes_total{{port=\"{p}\",direction=\"client_to_backend\"}} {up}"
            );
            let _ = writeln!(
                out,
                "tcp_router_bytes_total{{port=\"{p}\",direction=\"backend_to_client\"}} {down}"
            );
        }
        header(
            &mut out,
            "tcp_router_errors_total",
            "counter",
            "Failed client connections, by external port and kind.",
        );
        for (p, m) in &ports {
            for kind in ErrorKind::ALL {
                let v = m.errors(kind);
                let _ = writeln!(
                    out,
                    "tcp_router_errors_total{{port=\"{p}\",kind=\"{}\"}} {v}",
                    kind.as_str()
                );
            }
        }
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for (name, kind, help, value) in [
            (
                "tcp_router_open_connections",
                "gauge",
                "Client connections open now, all ports.",
                active_total as u64,
            ),
            (
                "tcp_router_rejected_connections_total",
                "counter",
                "Connections closed at once because max_connections were open.",
                load(&self.rejected),
            ),
            (
                "tcp_router_routing_api_syncs_total",
                "counter",
                "Successful full syncs with the Routing API.",
                load(&self.syncs),
            ),
            (
                "tcp_router_routing_api_sync_failures_total",
                "counter",
                "Failed full syncs with the Routing API.",
                load(&self.sync_failures),
            ),
            (
                "tcp_router_routing_api_events_total",
                "counter",
                "TCP route events received from the Routing API.",
                load(&self.events),
            ),
            (
                "tcp_router_routing_api_subscriptions_total",
                "counter",
                "Subscriptions to the Routing API's TCP route event stream.",
                load(&self.subscriptions),
            ),
            (
                "tcp_router_expired_backends_total",
                "counter",
                "Backends removed because their TTL ran out.",
                load(&self.expired),
            ),
            (
                "tcp_router_backends",
                "gauge",
                "Backends in the routing table.",
                self.backends.load(Ordering::Relaxed) as u64,
            ),
            (
                "tcp_router_listeners",
                "gauge",
                "External ports listened on.",
                self.listeners.load(Ordering::Relaxed) as u64,
            ),
            (
                "tcp_router_tls_buffer_budget_bytes",
                "gauge",
                "Buffer memory TLS-backend connections may use (backend_tls_buffer_budget_mb).",
                self.tls_buffer_budget_bytes.load(Ordering::Relaxed) as u64,
            ),
            (
                "tcp_router_tls_buffer_bytes",
                "gauge",
                "Buffer memory reserved by TLS-backend connections now.",
                self.tls_buffer_bytes.load(Ordering::Relaxed) as u64,
            ),
            (
                "tcp_router_tls_buffer_growth_denied_total",
                "counter",
                "Times a TLS-backend connection kept its small buffer for want of budget.",
                load(&self.tls_buffer_growth_denied),
            ),
            (
                "tcp_router_draining",
                "gauge",
                "1 while draining (/health answers 503).",
                u64::from(draining),
            ),
        ] {
            header(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        let p = m.port(1024);
        p.connections.fetch_add(3, Ordering::Relaxed);
        p.bytes_from_clients.fetch_add(10, Ordering::Relaxed);
        p.bytes_to_clients.fetch_add(20, Ordering::Relaxed);
        p.error(ErrorKind::Connect);
        m.rejected.fetch_add(1, Ordering::Relaxed);
        let text = m.render(2, false);
        for line in [
            "# TYPE tcp_router_connections_total counter",
            "tcp_router_connections_total{port=\"1024\"} 3",
            "tcp_router_bytes_total{port=\"1024\",direction=\"client_to_backend\"} 10",
            "tcp_router_bytes_total{port=\"1024\",direction=\"backend_to_client\"} 20",
            "tcp_router_errors_total{port=\"1024\",kind=\"connect\"} 1",
            "tcp_router_errors_total{port=\"1024\",kind=\"io\"} 0",
            "tcp_router_open_connections 2",
            "tcp_router_rejected_connections_total 1",
            "tcp_router_draining 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(Arc::ptr_eq(&m.port(1024), &p));
    }
}
