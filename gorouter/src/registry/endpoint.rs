//! One backend instance as the table holds it, and the plain registration data it is built from.
//!
//! # Memory
//! A route table holds one [`Endpoint`] per registered backend instance, so its size is most of
//! the router's memory at scale (issue 14). All of an endpoint's strings (address, app and
//! instance ids, route service URL, tags, ...) live in one buffer, a [`Bytes`], with the ends of
//! the fields beside it: one allocation where there were a dozen, each with the allocator's own
//! overhead. The `X-CF-*` header values the proxy adds are slices of that same buffer, made
//! when a request needs them: cloning a slice of a `Bytes` copies nothing and allocates nothing
//! (the first one turns the buffer into a shared one, once).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
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
        self.succeeds_parts(&stored.guid, stored.index, false)
    }

    /// Whether `self` may remove an endpoint stored with `stored`.
    pub fn succeeds_or_equal(&self, stored: &ModificationTag) -> bool {
        self.succeeds_parts(&stored.guid, stored.index, true)
    }

    /// [`succeeds`](Self::succeeds) against the tag `endpoint` was stored with.
    pub fn succeeds_endpoint(&self, endpoint: &Endpoint) -> bool {
        self.succeeds_parts(
            endpoint.modification_guid(),
            endpoint.modification_index,
            false,
        )
    }

    /// [`succeeds_or_equal`](Self::succeeds_or_equal) against the tag `endpoint` was stored
    /// with.
    pub fn succeeds_or_equal_endpoint(&self, endpoint: &Endpoint) -> bool {
        self.succeeds_parts(
            endpoint.modification_guid(),
            endpoint.modification_index,
            true,
        )
    }

    fn succeeds_parts(&self, stored_guid: &str, stored_index: u32, or_equal: bool) -> bool {
        stored_guid.is_empty()
            || self.guid.is_empty()
            || stored_guid != self.guid
            || stored_index < self.index
            || (or_equal && stored_index == self.index)
    }
}

/// An endpoint's tags, the name/value pairs in name order, as a view of the endpoint's string
/// buffer (each string preceded by its length, LEB128). Serialised as the JSON object they
/// were registered as (`/routes`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Tags<'a>(&'a [u8]);

impl<'a> Tags<'a> {
    /// Appends the encoding of `map` to `buf`.
    fn encode(map: &BTreeMap<String, String>, buf: &mut Vec<u8>) {
        for (k, v) in map {
            push_len(buf, k.len());
            buf.extend_from_slice(k.as_bytes());
            push_len(buf, v.len());
            buf.extend_from_slice(v.as_bytes());
        }
    }

    /// The encoded length of `map`.
    fn encoded_len(map: &BTreeMap<String, String>) -> usize {
        map.iter()
            .map(|(k, v)| len_of_len(k.len()) + k.len() + len_of_len(v.len()) + v.len())
            .sum()
    }

    /// Whether these are exactly the tags of `map`.
    pub fn matches(&self, map: &BTreeMap<String, String>) -> bool {
        let mut mine = self.iter();
        map.iter()
            .all(|(mk, mv)| mine.next() == Some((mk.as_str(), mv.as_str())))
            && mine.next().is_none()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let mut rest = self.0;
        std::iter::from_fn(move || {
            let k = take_str(&mut rest)?;
            let v = take_str(&mut rest)?;
            Some((k, v))
        })
    }
}

impl std::fmt::Debug for Tags<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl serde::Serialize for Tags<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

fn push_len(buf: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        buf.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

fn len_of_len(n: usize) -> usize {
    (usize::BITS - n.leading_zeros()).div_ceil(7).max(1) as usize
}

/// Takes one length-prefixed string off the front of `rest`; `None` at the end (or, never for
/// a buffer [`Tags::encode`] wrote, on a malformed one).
fn take_str<'a>(rest: &mut &'a [u8]) -> Option<&'a str> {
    let mut len = 0usize;
    let mut shift = 0;
    loop {
        let (&b, tail) = rest.split_first()?;
        *rest = tail;
        len |= usize::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    if len > rest.len() {
        return None;
    }
    let (s, tail) = rest.split_at(len);
    *rest = tail;
    std::str::from_utf8(s).ok()
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
        let mut addr = String::with_capacity(self.host.len() + 8);
        push_addr(&mut addr, &self.host, self.effective_port());
        addr
    }

    /// `tags.component` (the registering component, e.g. `route-emitter`), or "" without.
    pub fn component(&self) -> &str {
        self.tags
            .as_ref()
            .and_then(|tags| tags.get("component"))
            .map_or("", String::as_str)
    }

    fn effective_port(&self) -> u16 {
        if self.tls_port != 0 {
            self.tls_port
        } else {
            self.port
        }
    }
}

/// Whether an address puts `host` in brackets: an IPv6 literal registered without them.
fn needs_brackets(host: &str) -> bool {
    host.contains(':') && !host.starts_with('[')
}

fn push_addr(out: &mut String, host: &str, port: u16) {
    use std::fmt::Write;
    if needs_brackets(host) {
        let _ = write!(out, "[{host}]:{port}");
    } else {
        let _ = write!(out, "{host}:{port}");
    }
}

/// The string fields in an endpoint's buffer, in buffer order; its tags follow the last one.
#[derive(Clone, Copy)]
enum Field {
    Addr,
    AppId,
    InstanceId,
    InstanceIndex,
    ServerCertDomainSan,
    RouteServiceUrl,
    IsolationSegment,
    AvailabilityZone,
    ModificationGuid,
}

const FIELDS: usize = Field::ModificationGuid as usize + 1;

/// [`Endpoint::logged_strings`].
pub struct LoggedStrings<'a> {
    pub addr: &'a [u8],
    pub app_id: &'a [u8],
    pub instance_index: &'a [u8],
    pub instance_id: &'a [u8],
}

/// A registered backend. Immutable registration data plus atomics the data path updates.
pub struct Endpoint {
    /// Every string field, then the tags (see the module doc).
    strings: Bytes,
    /// Where each [`Field`] ends in `strings`; each starts where the one before ends.
    ends: [u32; FIELDS],
    /// The port dialed: `tls_port` when registered, else `port`.
    pub port: u16,
    pub tls: bool,
    pub protocol: Protocol,
    /// Whether `addr` brackets the host (an IPv6 literal registered without brackets).
    bracketed: bool,
    /// Whether the registration carried tags (`None` and `{}` differ on `/routes`).
    has_tags: bool,
    /// The modification tag's index; its guid is a string field.
    pub modification_index: u32,
    /// The TTL in force, in milliseconds: the requested one clamped to
    /// `droplet_stale_threshold`.
    stale_threshold_ms: u64,
    /// `stale_threshold_in_seconds` as registered, for equality.
    requested_stale_secs: u64,
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
            .field("addr", &self.addr())
            .field("app_id", &self.app_id())
            .field("private_instance_id", &self.private_instance_id())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Builds an endpoint registered at `now_ms` (table clock).
    pub fn from_spec(spec: &EndpointSpec, global_stale_threshold: Duration, now_ms: u64) -> Self {
        let port = spec.effective_port();
        let stale = Duration::from_secs(spec.stale_threshold_in_seconds);
        let stale_threshold = if stale.is_zero() || stale > global_stale_threshold {
            global_stale_threshold
        } else {
            stale
        };
        let mut addr = String::with_capacity(spec.host.len() + 8);
        push_addr(&mut addr, &spec.host, port);
        let fields: [&str; FIELDS] = [
            &addr,
            &spec.app,
            &spec.private_instance_id,
            &spec.private_instance_index,
            &spec.server_cert_domain_san,
            &spec.route_service_url,
            &spec.isolation_segment,
            &spec.availability_zone,
            &spec.modification_tag.guid,
        ];
        let tags_len = spec.tags.as_ref().map_or(0, Tags::encoded_len);
        let mut buf = Vec::with_capacity(fields.iter().map(|f| f.len()).sum::<usize>() + tags_len);
        let mut ends = [0u32; FIELDS];
        for (end, field) in ends.iter_mut().zip(fields) {
            buf.extend_from_slice(field.as_bytes());
            // A registration arrives in one NATS message or Routing API event, far below
            // 4 GiB; saturating keeps a (never seen) larger one from wrapping.
            *end = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        }
        if let Some(tags) = &spec.tags {
            Tags::encode(tags, &mut buf);
        }
        Endpoint {
            // A `Vec` whose length is its capacity becomes a `Bytes` without reallocating.
            strings: Bytes::from(buf),
            ends,
            port,
            tls: spec.tls_port != 0,
            protocol: spec.protocol,
            bracketed: needs_brackets(&spec.host),
            has_tags: spec.tags.is_some(),
            modification_index: spec.modification_tag.index,
            stale_threshold_ms: u64::try_from(stale_threshold.as_millis()).unwrap_or(u64::MAX),
            requested_stale_secs: spec.stale_threshold_in_seconds,
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

    fn range(&self, field: Field) -> Range<usize> {
        let i = field as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        start..self.ends[i] as usize
    }

    fn field(&self, field: Field) -> &str {
        let bytes = self.field_bytes(field);
        debug_assert!(std::str::from_utf8(bytes).is_ok());
        // SAFETY: `strings` is private, written once by `from_spec` from `&str` fields, and
        // `ends` holds their boundaries (an end that saturated makes `field_bytes` empty), so
        // every field's bytes are UTF-8. The check this skips ran three times a request
        // (the backend pool's lookup by address), about 200 instructions.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    fn field_bytes(&self, field: Field) -> &[u8] {
        self.strings.get(self.range(field)).unwrap_or_default()
    }

    /// The strings an access-log line shows, as bytes: the line copies them, so reading
    /// them skips the UTF-8 check of the `&str` accessors.
    pub fn logged_strings(&self) -> LoggedStrings<'_> {
        LoggedStrings {
            addr: self.field_bytes(Field::Addr),
            app_id: self.field_bytes(Field::AppId),
            instance_index: self.field_bytes(Field::InstanceIndex),
            instance_id: self.field_bytes(Field::InstanceId),
        }
    }

    /// The field as a header value sharing the buffer; `None` when empty or not a valid header
    /// value (as `HeaderValue::from_str` judges).
    fn header(&self, field: Field) -> Option<HeaderValue> {
        let range = self.range(field);
        if range.is_empty() || range.end > self.strings.len() {
            return None;
        }
        HeaderValue::from_maybe_shared(self.strings.slice(range)).ok()
    }

    /// `host:port`, the key within a pool and what the access log and `/routes` show.
    pub fn addr(&self) -> &str {
        self.field(Field::Addr)
    }

    /// The host as registered (an IP literal or a name).
    pub fn host(&self) -> &str {
        let addr = self.addr();
        let colon = addr.rfind(':').unwrap_or(addr.len());
        let b = usize::from(self.bracketed);
        addr.get(b..colon.saturating_sub(b)).unwrap_or("")
    }

    /// The address to dial when the host is an IP literal, so dialing needs no resolver.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }

    pub fn app_id(&self) -> &str {
        self.field(Field::AppId)
    }

    pub fn private_instance_id(&self) -> &str {
        self.field(Field::InstanceId)
    }

    pub fn private_instance_index(&self) -> &str {
        self.field(Field::InstanceIndex)
    }

    pub fn server_cert_domain_san(&self) -> &str {
        self.field(Field::ServerCertDomainSan)
    }

    pub fn route_service_url(&self) -> &str {
        self.field(Field::RouteServiceUrl)
    }

    pub fn isolation_segment(&self) -> &str {
        self.field(Field::IsolationSegment)
    }

    pub fn availability_zone(&self) -> &str {
        self.field(Field::AvailabilityZone)
    }

    /// The modification tag's guid (empty for NATS registrations).
    pub fn modification_guid(&self) -> &str {
        self.field(Field::ModificationGuid)
    }

    /// The tags, if the registration carried any (possibly none: `{}`).
    pub fn tags(&self) -> Option<Tags<'_>> {
        let start = self.ends[FIELDS - 1] as usize;
        self.has_tags
            .then(|| Tags(self.strings.get(start..).unwrap_or_default()))
    }

    /// `tags.component`, or "" without (the `component` label of upstream's request metrics).
    pub fn component(&self) -> &str {
        self.tags()
            .and_then(|tags| tags.iter().find(|(k, _)| *k == "component"))
            .map_or("", |(_, v)| v)
    }

    /// `X-CF-ApplicationID`.
    pub(crate) fn app_id_header(&self) -> Option<HeaderValue> {
        self.header(Field::AppId)
    }

    /// `X-CF-InstanceIndex`.
    pub(crate) fn instance_index_header(&self) -> Option<HeaderValue> {
        self.header(Field::InstanceIndex)
    }

    /// `X-CF-InstanceID`: the private instance id, else the address.
    pub(crate) fn instance_id_header(&self) -> Option<HeaderValue> {
        if self.range(Field::InstanceId).is_empty() {
            self.addr_header()
        } else {
            self.header(Field::InstanceId)
        }
    }

    /// `X-Vcap-Backend` and `X-Cf-RouteEndpoint`: the address.
    pub(crate) fn addr_header(&self) -> Option<HeaderValue> {
        self.header(Field::Addr)
    }

    /// Whether `spec` describes this endpoint exactly (A.3 equality), so a registration only
    /// refreshes the timestamp.
    pub fn same_registration(&self, spec: &EndpointSpec) -> bool {
        self.app_id() == spec.app
            && self.tls == (spec.tls_port != 0)
            && self.protocol == spec.protocol
            && match (self.tags(), &spec.tags) {
                (Some(t), Some(m)) => t.matches(m),
                (None, None) => true,
                _ => false,
            }
            && self.server_cert_domain_san() == spec.server_cert_domain_san
            && self.private_instance_id() == spec.private_instance_id
            && self.private_instance_index() == spec.private_instance_index
            && self.route_service_url() == spec.route_service_url
            && self.isolation_segment() == spec.isolation_segment
            && self.availability_zone() == spec.availability_zone
            && self.modification_guid() == spec.modification_tag.guid
            && self.modification_index == spec.modification_tag.index
            && self.requested_stale_secs == spec.stale_threshold_in_seconds
    }

    pub(crate) fn touch(&self, now_ms: u64) {
        self.last_seen.store(now_ms, Ordering::Relaxed);
    }

    /// The TTL in force: the requested one clamped to `droplet_stale_threshold`.
    pub fn stale_threshold(&self) -> Duration {
        Duration::from_millis(self.stale_threshold_ms)
    }

    /// Seconds of TTL, as `/routes` reports it.
    pub fn ttl_secs(&self) -> u64 {
        self.stale_threshold_ms / 1000
    }

    /// TLS endpoints are never pruned by TTL (A.3).
    pub(crate) fn is_stale(&self, now_ms: u64) -> bool {
        !self.tls
            && now_ms.saturating_sub(self.last_seen.load(Ordering::Relaxed))
                > self.stale_threshold_ms
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_spec() -> EndpointSpec {
        EndpointSpec {
            host: "10.0.16.5".into(),
            port: 61012,
            tls_port: 61014,
            app: "6e6b2f1e-app".into(),
            private_instance_id: "a1b2c3d4-inst".into(),
            private_instance_index: "3".into(),
            server_cert_domain_san: "a1b2c3d4-san".into(),
            route_service_url: "https://rs.example.com/x".into(),
            tags: Some(
                [
                    ("component".to_string(), "route-emitter".to_string()),
                    ("long".to_string(), "é".repeat(200)),
                    (String::new(), String::new()),
                ]
                .into(),
            ),
            stale_threshold_in_seconds: 30,
            isolation_segment: "is1".into(),
            availability_zone: "z1".into(),
            protocol: Protocol::Http2,
            lb_algo: None,
            modification_tag: ModificationTag {
                guid: "guid-1".into(),
                index: 7,
            },
            endpoint_updated_at_ns: 0,
        }
    }

    /// Every string field comes back from the shared buffer as registered.
    #[test]
    fn the_string_buffer_round_trips_every_field() {
        let spec = full_spec();
        let e = Endpoint::from_spec(&spec, Duration::from_secs(120), 5);
        assert_eq!(e.addr(), "10.0.16.5:61014");
        assert_eq!(e.host(), "10.0.16.5");
        assert_eq!(e.port, 61014);
        assert!(e.tls);
        assert_eq!(e.protocol, Protocol::Http2);
        assert_eq!(e.socket_addr(), Some("10.0.16.5:61014".parse().unwrap()));
        assert_eq!(e.app_id(), "6e6b2f1e-app");
        assert_eq!(e.private_instance_id(), "a1b2c3d4-inst");
        assert_eq!(e.private_instance_index(), "3");
        assert_eq!(e.server_cert_domain_san(), "a1b2c3d4-san");
        assert_eq!(e.route_service_url(), "https://rs.example.com/x");
        assert_eq!(e.isolation_segment(), "is1");
        assert_eq!(e.availability_zone(), "z1");
        assert_eq!(e.modification_guid(), "guid-1");
        assert_eq!(e.modification_index, 7);
        assert_eq!(e.stale_threshold(), Duration::from_secs(30));
        let tags: BTreeMap<String, String> = e
            .tags()
            .expect("tags")
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(Some(tags), spec.tags);
        assert!(e.tags().unwrap().matches(spec.tags.as_ref().unwrap()));
        assert!(e.same_registration(&spec));

        let empty = Endpoint::from_spec(&EndpointSpec::default(), Duration::from_secs(1), 0);
        assert_eq!(empty.addr(), ":0");
        assert_eq!(empty.host(), "");
        assert_eq!(empty.app_id(), "");
        assert!(empty.tags().is_none());
        assert!(empty.same_registration(&EndpointSpec::default()));
    }

    #[test]
    fn hosts_with_and_without_brackets() {
        let at = |host: &str| {
            let spec = EndpointSpec {
                host: host.into(),
                port: 8080,
                ..Default::default()
            };
            Endpoint::from_spec(&spec, Duration::from_secs(1), 0)
        };
        let e = at("::1");
        assert_eq!((e.addr(), e.host()), ("[::1]:8080", "::1"));
        assert_eq!(e.socket_addr(), Some("[::1]:8080".parse().unwrap()));
        let e = at("[::1]");
        assert_eq!((e.addr(), e.host()), ("[::1]:8080", "[::1]"));
        assert_eq!(e.socket_addr(), Some("[::1]:8080".parse().unwrap()));
        let e = at("backend.internal");
        assert_eq!(
            (e.addr(), e.host()),
            ("backend.internal:8080", "backend.internal")
        );
        assert_eq!(e.socket_addr(), None);
    }

    /// Multi-byte text in every field comes back whole: each field's bytes are read as the
    /// `&str` they were written from.
    #[test]
    fn every_string_field_reads_back_as_registered_in_any_script() {
        let spec = EndpointSpec {
            host: "h\u{e9}te.internal".into(),
            port: 8080,
            app: "\u{1f600}app".into(),
            private_instance_id: "\u{4e2d}\u{6587}".into(),
            private_instance_index: "\u{e9}".into(),
            server_cert_domain_san: "s\u{e4}n".into(),
            route_service_url: "https://r\u{fc}s.example.com".into(),
            isolation_segment: "\u{3b1}".into(),
            availability_zone: "z\u{f8}ne".into(),
            modification_tag: ModificationTag {
                guid: "g\u{fc}id".into(),
                index: 1,
            },
            ..Default::default()
        };
        let e = Endpoint::from_spec(&spec, Duration::from_secs(120), 0);
        assert_eq!(e.addr(), "h\u{e9}te.internal:8080");
        assert_eq!(e.host(), "h\u{e9}te.internal");
        assert_eq!(e.app_id(), spec.app);
        assert_eq!(e.private_instance_id(), spec.private_instance_id);
        assert_eq!(e.private_instance_index(), spec.private_instance_index);
        assert_eq!(e.server_cert_domain_san(), spec.server_cert_domain_san);
        assert_eq!(e.route_service_url(), spec.route_service_url);
        assert_eq!(e.isolation_segment(), spec.isolation_segment);
        assert_eq!(e.availability_zone(), spec.availability_zone);
        assert_eq!(e.modification_guid(), spec.modification_tag.guid);
    }

    /// The header values are the strings they stand for, as `HeaderValue::from_str` makes
    /// them, including which ones are left out.
    #[test]
    fn header_values_equal_their_strings() {
        let e = Endpoint::from_spec(&full_spec(), Duration::from_secs(120), 0);
        let hv = |s: &str| HeaderValue::from_str(s).ok();
        assert_eq!(e.app_id_header(), hv("6e6b2f1e-app"));
        assert_eq!(e.instance_index_header(), hv("3"));
        assert_eq!(e.instance_id_header(), hv("a1b2c3d4-inst"));
        assert_eq!(e.addr_header(), hv("10.0.16.5:61014"));

        let spec = EndpointSpec {
            host: "10.0.0.1".into(),
            port: 80,
            app: "bad\nvalue".into(),
            private_instance_index: "caf\u{e9}".into(),
            ..Default::default()
        };
        let e = Endpoint::from_spec(&spec, Duration::from_secs(120), 0);
        assert_eq!(e.app_id_header(), None, "invalid, as from_str finds it");
        assert_eq!(e.instance_index_header(), hv("caf\u{e9}"));
        assert_eq!(
            e.instance_id_header(),
            hv("10.0.0.1:80"),
            "no instance id: the address"
        );
        let empty = Endpoint::from_spec(&EndpointSpec::default(), Duration::from_secs(1), 0);
        assert_eq!(empty.app_id_header(), None);
        assert_eq!(empty.instance_index_header(), None);
    }

    #[test]
    fn modification_tags_compare_against_the_stored_endpoint() {
        let e = Endpoint::from_spec(&full_spec(), Duration::from_secs(120), 0);
        let tag = |guid: &str, index| ModificationTag {
            guid: guid.into(),
            index,
        };
        for (t, succeeds, or_equal) in [
            (tag("guid-1", 6), false, false),
            (tag("guid-1", 7), false, true),
            (tag("guid-1", 8), true, true),
            (tag("guid-2", 0), true, true),
            (tag("", 0), true, true),
        ] {
            let stored = tag("guid-1", 7);
            assert_eq!(t.succeeds_endpoint(&e), succeeds, "{t:?}");
            assert_eq!(t.succeeds(&stored), succeeds, "{t:?}");
            assert_eq!(t.succeeds_or_equal_endpoint(&e), or_equal, "{t:?}");
            assert_eq!(t.succeeds_or_equal(&stored), or_equal, "{t:?}");
        }
    }

    #[test]
    fn length_prefixes_round_trip() {
        for n in [0usize, 1, 127, 128, 300, 16_383, 16_384, 1 << 30] {
            let mut buf = Vec::new();
            push_len(&mut buf, n);
            assert_eq!(buf.len(), len_of_len(n), "{n}");
        }
        let mut buf = Vec::new();
        push_len(&mut buf, 300);
        buf.extend(std::iter::repeat_n(b'x', 300));
        let mut rest = &buf[..];
        assert_eq!(take_str(&mut rest).map(str::len), Some(300));
        assert!(rest.is_empty());
        let mut truncated = &buf[..100];
        assert_eq!(take_str(&mut truncated), None);
    }

    /// What one endpoint costs the table, so a change that grows it is a choice.
    #[test]
    fn an_endpoint_stays_small() {
        assert!(
            std::mem::size_of::<Endpoint>() <= 120,
            "{}",
            std::mem::size_of::<Endpoint>()
        );
    }
}
