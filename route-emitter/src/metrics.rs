//! The route emitter's Prometheus metrics: what it sent, where, and what failed. Served at
//! `/metrics` when the config has a `prometheus` block ([`crate::config`]).
//!
//! | sample | type | what |
//! |---|---|---|
//! | `route_emitter_registrations_total{destination="nats"}` | counter | `router.register` messages published |
//! | `route_emitter_registrations_total{destination="routing_api"}` | counter | routes upserted in the Routing API (an HTTP route with several URIs counts once, as its NATS message does) |
//! | `route_emitter_unregistrations_total{destination}` | counter | `router.unregister` messages published; routes deleted from the Routing API |
//! | `route_emitter_failures_total{destination}` | counter | messages NATS refused to take; routes whose upsert or delete failed (Routing API unreachable or refusing, router group unknown) |
//! | `route_emitter_health_checks_total{result="pass"\|"fail"}` | counter | health checks run, by result |
//! | `route_emitter_routes{destination="nats",type="http"}` | gauge | routes being kept registered over NATS |
//! | `route_emitter_routes{destination="routing_api",type="http"\|"tcp"}` | gauge | routes being kept registered in the Routing API (`tcp` includes SNI routes: both are TCP route mappings) |
//!
//! Every label combination is created up front, so a send only increments an atomic and every
//! series exists, at 0, from the first scrape.

use prometheus_endpoint::prometheus_client::metrics::counter::Counter;
use prometheus_endpoint::prometheus_client::metrics::family::Family;
use prometheus_endpoint::prometheus_client::metrics::gauge::Gauge;
use prometheus_endpoint::prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

/// Where a route goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Nats,
    RoutingApi,
}

impl Destination {
    const ALL: [Destination; 2] = [Destination::Nats, Destination::RoutingApi];

    /// The `destination` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Destination::Nats => "nats",
            Destination::RoutingApi => "routing_api",
        }
    }
}

/// One counter per destination, all in one family.
#[derive(Debug, Clone)]
struct PerDestination {
    family: Family<Labels, Counter>,
    handles: [Counter; 2],
}

impl PerDestination {
    fn new() -> Self {
        let family = Family::<Labels, Counter>::default();
        let handles = Destination::ALL
            .map(|d| family.get_or_create_owned(&vec![("destination", d.as_str())]));
        PerDestination { family, handles }
    }

    fn add(&self, destination: Destination, n: usize) {
        if n > 0 {
            self.handles[destination as usize].inc_by(n as u64);
        }
    }
}

/// The emitter's metrics. Cheap to clone: clones share the same atomics.
#[derive(Debug, Clone)]
pub struct EmitterMetrics {
    registrations: PerDestination,
    unregistrations: PerDestination,
    failures: PerDestination,
    health_checks: Family<Labels, Counter>,
    health_pass: Counter,
    health_fail: Counter,
    routes: Family<Labels, Gauge>,
    nats_http_routes: Gauge,
    api_http_routes: Gauge,
    api_tcp_routes: Gauge,
}

impl Default for EmitterMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl EmitterMetrics {
    /// Metrics not (yet) in any registry: they count, nobody scrapes them unless
    /// [`register`](Self::register)ed.
    pub fn new() -> Self {
        let health_checks = Family::<Labels, Counter>::default();
        let health_pass = health_checks.get_or_create_owned(&vec![("result", "pass")]);
        let health_fail = health_checks.get_or_create_owned(&vec![("result", "fail")]);
        let routes = Family::<Labels, Gauge>::default();
        let gauge = |destination: Destination, kind: &'static str| {
            routes.get_or_create_owned(&vec![("destination", destination.as_str()), ("type", kind)])
        };
        let nats_http_routes = gauge(Destination::Nats, "http");
        let api_http_routes = gauge(Destination::RoutingApi, "http");
        let api_tcp_routes = gauge(Destination::RoutingApi, "tcp");
        EmitterMetrics {
            registrations: PerDestination::new(),
            unregistrations: PerDestination::new(),
            failures: PerDestination::new(),
            health_checks,
            health_pass,
            health_fail,
            routes,
            nats_http_routes,
            api_http_routes,
            api_tcp_routes,
        }
    }

    /// Adds every metric to `registry` (names in the [module docs](self)).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "route_emitter_registrations",
            "Route registrations sent: router.register messages (nats), route upserts (routing_api)",
            self.registrations.family.clone(),
        );
        registry.register(
            "route_emitter_unregistrations",
            "Route unregistrations sent: router.unregister messages (nats), route deletes (routing_api)",
            self.unregistrations.family.clone(),
        );
        registry.register(
            "route_emitter_failures",
            "Registrations and unregistrations that failed, by destination",
            self.failures.family.clone(),
        );
        registry.register(
            "route_emitter_health_checks",
            "Route health checks run, by result",
            self.health_checks.clone(),
        );
        registry.register(
            "route_emitter_routes",
            "Routes being kept registered, by destination and type",
            self.routes.clone(),
        );
    }

    /// Counts `n` registrations sent to `destination`.
    pub fn registered(&self, destination: Destination, n: usize) {
        self.registrations.add(destination, n);
    }

    /// Counts `n` unregistrations sent to `destination`.
    pub fn unregistered(&self, destination: Destination, n: usize) {
        self.unregistrations.add(destination, n);
    }

    /// Counts `n` failed sends to `destination`.
    pub fn failed(&self, destination: Destination, n: usize) {
        self.failures.add(destination, n);
    }

    /// Counts one health check.
    pub fn health_check(&self, passed: bool) {
        if passed {
            self.health_pass.inc();
        } else {
            self.health_fail.inc();
        }
    }

    /// Sets the number of routes kept registered over NATS.
    pub fn nats_routes(&self, http: usize) {
        self.nats_http_routes.set(gauge_value(http));
    }

    /// Sets the number of routes kept registered in the Routing API.
    pub fn routing_api_routes(&self, http: usize, tcp: usize) {
        self.api_http_routes.set(gauge_value(http));
        self.api_tcp_routes.set(gauge_value(tcp));
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_exists_from_the_start_and_counts_by_its_labels() {
        let metrics = EmitterMetrics::new();
        metrics.registered(Destination::RoutingApi, 3);
        metrics.failed(Destination::Nats, 1);
        metrics.health_check(false);
        metrics.routing_api_routes(1, 2);
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let text = prometheus_endpoint::encode(&registry);
        for line in [
            "route_emitter_registrations_total{destination=\"nats\"} 0",
            "route_emitter_registrations_total{destination=\"routing_api\"} 3",
            "route_emitter_unregistrations_total{destination=\"nats\"} 0",
            "route_emitter_failures_total{destination=\"nats\"} 1",
            "route_emitter_failures_total{destination=\"routing_api\"} 0",
            "route_emitter_health_checks_total{result=\"pass\"} 0",
            "route_emitter_health_checks_total{result=\"fail\"} 1",
            "route_emitter_routes{destination=\"nats\",type=\"http\"} 0",
            "route_emitter_routes{destination=\"routing_api\",type=\"http\"} 1",
            "route_emitter_routes{destination=\"routing_api\",type=\"tcp\"} 2",
        ] {
            assert!(text.contains(&format!("{line}\n")), "no {line:?} in {text}");
        }
    }
}
