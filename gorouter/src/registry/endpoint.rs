//! One backend instance as the table holds it, and the plain registration data it is built from.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderValue;

use crate::config::BalancingAlgorithm;

/// The backend protocol an endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Http1,
    Http2,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
        }
    }
}

/// Orders updates from the Routing API; NATS registrations carry the zero tag.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModificationTag {
    pub guid: String,
    pub index: u32,
}

impl ModificationTag {
    /// Whether `self` may replace an endpoint stored with `stored`.
    pub fn succeeds(&self, stored: &ModificationTag) -> bool {
        stored.guid.is_empty()
            || self.guid.is_empty()
            || stored.guid != self.guid
            || stored.index < self.index
    }

    /// Whether `self` may remove an endpoint stored with `stored`.
    pub fn succeeds_or_equal(&self, stored: &ModificationTag) -> bool {
        stored.guid.is_empty()
            || self.guid.is_empty()
            || stored.guid != self.guid
            || stored.index <= self.index
    }
}

/// An endpoint's tags as the table keeps them: the name/value pairs in name order, one
/// allocation for the list and one per string. A `BTreeMap` holding one tag costs a 540-byte
/// node; with 100,000 routes that was a fifth of the router's memory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tags(Box<[(Box<str>, Box<str>)]>);

impl Tags {
    pub fn from_map(map: &BTreeMap<String, String>) -> Self {
        Tags(
            map.iter()
                .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                .collect(),
        )
    }

    /// Whether these are exactly the tags of `map`.
    pub fn matches(&self, map: &BTreeMap<String, String>) -> bool {
        self.0.len() == map.len()
            && self
                .0
                .iter()
                .zip(map)
                .all(|((k, v), (mk, mv))| **k == **mk && **v == **mv)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }
}

/// Serialised as the JSON object it was registered as (`/routes`).
impl serde::Serialize for Tags {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

/// Registration data for one endpoint, independent of where it came from (NATS or the
/// Routing API).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointSpec {
    pub host: String,
    pub port: u16,
    pub tls_port: u16,
    pub app: String,
    pub private_instance_id: String,
    pub private_instance_index: String,
    pub server_cert_domain_san: String,
    pub route_service_url: String,
    pub tags: Option<BTreeMap<String, String>>,
    pub stale_threshold_in_seconds: u64,
    pub isolation_segment: String,
    pub availability_zone: String,
    pub protocol: Protocol,
    pub lb_algo: Option<BalancingAlgorithm>,
    pub modification_tag: ModificationTag,
    pub endpoint_updated_at_ns: i64,
}

impl EndpointSpec {
    /// The pool key: `host:port`, with `tls_port` winning over `port`.
    pub fn addr(&self) -> String {
        let port = if self.tls_port != 0 {
            self.tls_port
        } else {
            self.port
        };
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{port}", self.host)
        } else {
            format!("{}:{port}", self.host)
        }
    }
}

/// A registered backend. Immutable registration data plus atomics the data path updates.
pub struct Endpoint {
    /// `host:port`, the key within a pool and what the access log and `/routes` show.
    pub addr: Box<str>,
    pub host: Box<str>,
    pub port: u16,
    /// Parsed address when `host` is an IP literal, so dialing needs no resolver.
    pub socket_addr: Option<SocketAddr>,
    pub tls: bool,
    pub app_id: Box<str>,
    pub private_instance_id: Box<str>,
    pub private_instance_index: Box<str>,
    pub server_cert_domain_san: Box<str>,
    pub route_service_url: Box<str>,
    pub tags: Option<Tags>,
    /// The TTL in force: the requested one clamped to `droplet_stale_threshold`.
    pub stale_threshold: Duration,
    /// `stale_threshold_in_seconds` as registered, for equality.
    requested_stale_secs: u64,
    pub isolation_segment: Box<str>,
    pub availability_zone: Box<str>,
    pub protocol: Protocol,
    pub modification_tag: ModificationTag,
    pub endpoint_updated_at_ns: i64,
    /// Header values precomputed once so the proxy adds them without allocating.
    pub(crate) app_id_header: Option<HeaderValue>,
    pub(crate) instance_index_header: Option<HeaderValue>,
    pub(crate) instance_id_header: Option<HeaderValue>,
    pub(crate) addr_header: Option<HeaderValue>,
    /// Milliseconds since the table epoch of the last registration.
    last_seen: AtomicU64,
    /// Requests in flight to this endpoint (least-connection, `max_conns`).
    pub(crate) in_flight: AtomicU64,
    /// Milliseconds since the table epoch + 1 of the last failure; 0 when healthy.
    pub(crate) failed_at: AtomicU64,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("app_id", &self.app_id)
            .field("private_instance_id", &self.private_instance_id)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Builds an endpoint registered at `now_ms` (table clock).
    pub fn from_spec(spec: &EndpointSpec, global_stale_threshold: Duration, now_ms: u64) -> Self {
        let addr = spec.addr();
        let port = if spec.tls_port != 0 {
            spec.tls_port
        } else {
            spec.port
        };
        let stale = Duration::from_secs(spec.stale_threshold_in_seconds);
        let stale_threshold = if stale.is_zero() || stale > global_stale_threshold {
            global_stale_threshold
        } else {
            stale
        };
        let header = |s: &str| {
            if s.is_empty() {
                None
            } else {
                HeaderValue::from_str(s).ok()
            }
        };
        let instance_id = if spec.private_instance_id.is_empty() {
            addr.as_str()
        } else {
            spec.private_instance_id.as_str()
        };
        let host_ip = spec
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .ok();
        Endpoint {
            socket_addr: host_ip.map(|ip| SocketAddr::new(ip, port)),
            app_id_header: header(&spec.app),
            instance_index_header: header(&spec.private_instance_index),
            instance_id_header: header(instance_id),
            addr_header: header(&addr),
            addr: addr.into(),
            host: spec.host.as_str().into(),
            port,
            tls: spec.tls_port != 0,
            app_id: spec.app.as_str().into(),
            private_instance_id: spec.private_instance_id.as_str().into(),
            private_instance_index: spec.private_instance_index.as_str().into(),
            server_cert_domain_san: spec.server_cert_domain_san.as_str().into(),
            route_service_url: spec.route_service_url.as_str().into(),
            tags: spec.tags.as_ref().map(Tags::from_map),
            stale_threshold,
            requested_stale_secs: spec.stale_threshold_in_seconds,
            isolation_segment: spec.isolation_segment.as_str().into(),
            availability_zone: spec.availability_zone.as_str().into(),
            protocol: spec.protocol,
            modification_tag: spec.modification_tag.clone(),
            endpoint_updated_at_ns: spec.endpoint_updated_at_ns,
            last_seen: AtomicU64::new(now_ms),
            in_flight: AtomicU64::new(0),
            failed_at: AtomicU64::new(0),
        }
    }

    /// An endpoint no pool holds (a route service, the internal route-service server): where
    /// the transport dials, over TLS with `host` as the server name when `tls`. TTL and clock
    /// are the table's business, so they are left out.
    pub fn outside_table(host: &str, port: u16, tls: bool) -> Self {
        let spec = EndpointSpec {
            host: host.to_string(),
            port: if tls { 0 } else { port },
            tls_port: if tls { port } else { 0 },
            server_cert_domain_san: host.to_string(),
            ..Default::default()
        };
        Self::from_spec(&spec, Duration::MAX, 0)
    }

    /// Whether `spec` describes this endpoint exactly (A.3 equality), so a registration only
    /// refreshes the timestamp.
    pub fn same_registration(&self, spec: &EndpointSpec) -> bool {
        *self.app_id == *spec.app
            && self.tls == (spec.tls_port != 0)
            && self.protocol == spec.protocol
            && match (&self.tags, &spec.tags) {
                (Some(t), Some(m)) => t.matches(m),
                (None, None) => true,
                _ => false,
            }
            && *self.server_cert_domain_san == *spec.server_cert_domain_san
            && *self.private_instance_id == *spec.private_instance_id
            && *self.private_instance_index == *spec.private_instance_index
            && *self.route_service_url == *spec.route_service_url
            && *self.isolation_segment == *spec.isolation_segment
            && *self.availability_zone == *spec.availability_zone
            && self.modification_tag == spec.modification_tag
            && self.requested_stale_secs == spec.stale_threshold_in_seconds
    }

    pub(crate) fn touch(&self, now_ms: u64) {
        self.last_seen.store(now_ms, Ordering::Relaxed);
    }

    /// Seconds of TTL, as `/routes` reports it.
    pub fn ttl_secs(&self) -> u64 {
        self.stale_threshold.as_secs()
    }

    /// TLS endpoints are never pruned by TTL (A.3).
    pub(crate) fn is_stale(&self, now_ms: u64) -> bool {
        !self.tls
            && now_ms.saturating_sub(self.last_seen.load(Ordering::Relaxed))
                > self.stale_threshold.as_millis() as u64
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}
