//! The routing table (D): (external port, SNI hostname) → backends keyed by (ip, port, TLS port,
//! instance id), each with its modification tag, TTL and last refresh; and the per-port
//! snapshots ([`PortRoutes`]) the data path reads.
//!
//! The table is owned by one task ([`source`]): the full list from the Routing API replaces it,
//! events are applied on top with modification tags compared (an event never undoes a newer
//! state: upserts need a newer tag, deletes are ignored when the table holds a newer one, and a
//! deleted backend's tag is remembered until the next full list so a late upsert cannot revive
//! it), and backends whose TTL ran out are pruned. Every change yields the ports whose backend
//! sets changed; their snapshots are rebuilt and handed to the listeners, which swap them in
//! atomically ([`arc_swap`]) so connections read them without locks.

pub mod source;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use routing_api_client::{ModificationTag, TcpRouteMapping};
use rustls::pki_types::ServerName;
use tokio::time::Instant;

use crate::backend_tls;

/// A route's place in the table: external port and SNI hostname (lowercased; `None` = the
/// port's default backends).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteKey {
    pub port: u16,
    pub sni: Option<String>,
}

/// A backend's identity within a route.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendKey {
    pub ip: IpAddr,
    pub port: u16,
    pub tls_port: Option<u16>,
    pub instance_id: String,
}

/// What is known about a backend besides its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendDetails {
    pub tag: ModificationTag,
    pub ttl: Duration,
    pub updated: Instant,
}

/// Why a mapping from the Routing API is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMapping {
    #[error("external port is 0")]
    NoPort,
    #[error("backend_ip {0:?} is not an IP address")]
    BadIp(String),
    #[error("neither backend_port nor backend_tls_port is set")]
    NoBackendPort,
}

/// The table key and backend key of a mapping (validated).
pub fn keys_of(m: &TcpRouteMapping) -> Result<(RouteKey, BackendKey), InvalidMapping> {
    if m.port == 0 {
        return Err(InvalidMapping::NoPort);
    }
    let ip: IpAddr = m
        .backend_ip
        .trim()
        .parse()
        .map_err(|_| InvalidMapping::BadIp(m.backend_ip.clone()))?;
    let tls_port = m.tls_port();
    if m.backend_port == 0 && tls_port.is_none() {
        return Err(InvalidMapping::NoBackendPort);
    }
    Ok((
        RouteKey {
            port: m.port,
            sni: m.sni_hostname().map(|s| s.to_ascii_lowercase()),
        },
        BackendKey {
            ip,
            port: m.backend_port,
            tls_port,
            instance_id: m.instance_id.clone(),
        },
    ))
}

/// What applying one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The port's backend set changed.
    Changed(u16),
    /// Only the tag / TTL / refresh time changed.
    Refreshed,
    /// The table already holds a newer (or the same) state; nothing changed.
    Stale,
    /// Nothing to delete.
    Absent,
    Invalid(InvalidMapping),
}

type Backends = BTreeMap<BackendKey, BackendDetails>;

/// The routing table.
#[derive(Debug)]
pub struct RoutingTable {
    entries: BTreeMap<RouteKey, Backends>,
    /// Tags of deleted backends, until the next full list.
    tombstones: HashMap<(RouteKey, BackendKey), ModificationTag>,
    default_ttl: Duration,
    /// Round-robin positions, kept across snapshot rebuilds.
    counters: HashMap<RouteKey, Arc<AtomicUsize>>,
}

/// What a full list does with backends it no longer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unlisted {
    /// Remove them (the usual list).
    Remove,
    /// Keep them for one TTL from the list (the first list after an outage).
    KeepOneTtl,
}

impl RoutingTable {
    /// An empty table; routes without a TTL live `default_ttl` (`-defaultRouteExpiry`).
    pub fn new(default_ttl: Duration) -> Self {
        RoutingTable {
            entries: BTreeMap::new(),
            tombstones: HashMap::new(),
            default_ttl,
            counters: HashMap::new(),
        }
    }

    fn details(&self, m: &TcpRouteMapping, now: Instant) -> BackendDetails {
        let ttl = match m.ttl {
            Some(t) if t > 0 => Duration::from_secs(t as u64),
            _ => self.default_ttl,
        };
        BackendDetails {
            tag: m.modification_tag.clone(),
            ttl,
            updated: now,
        }
    }

    /// Number of backends.
    pub fn len(&self) -> usize {
        self.entries.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Ports that have at least one backend.
    pub fn ports(&self) -> BTreeSet<u16> {
        self.entries.keys().map(|k| k.port).collect()
    }

    /// An upsert (create or refresh) of `m`.
    pub fn upsert(&mut self, m: &TcpRouteMapping, now: Instant) -> Applied {
        let (rk, bk) = match keys_of(m) {
            Ok(k) => k,
            Err(e) => return Applied::Invalid(e),
        };
        let details = self.details(m, now);
        let port = rk.port;
        if let Some(existing) = self.entries.get_mut(&rk).and_then(|b| b.get_mut(&bk)) {
            if existing.tag.succeeded_by(&details.tag) {
                *existing = details;
                return Applied::Refreshed;
            }
            return Applied::Stale;
        }
        let tomb_key = (rk, bk);
        if let Some(dead) = self.tombstones.get(&tomb_key) {
            if !dead.guid.is_empty()
                && dead.guid == details.tag.guid
                && dead.index >= details.tag.index
            {
                return Applied::Stale;
            }
            self.tombstones.remove(&tomb_key);
        }
        let (rk, bk) = tomb_key;
        self.entries.entry(rk).or_default().insert(bk, details);
        Applied::Changed(port)
    }

    /// A delete of `m`: applied unless the table holds a newer state of that backend (upstream's
    /// rule: same modification guid and an index not older).
    pub fn delete(&mut self, m: &TcpRouteMapping) -> Applied {
        let (rk, bk) = match keys_of(m) {
            Ok(k) => k,
            Err(e) => return Applied::Invalid(e),
        };
        let Some(backends) = self.entries.get_mut(&rk) else {
            return Applied::Absent;
        };
        let Some(existing) = backends.get(&bk) else {
            return Applied::Absent;
        };
        let event = &m.modification_tag;
        if event.succeeded_by(&existing.tag) {
            // The table's state is newer than the event (or of another incarnation).
            return Applied::Stale;
        }
        let port = rk.port;
        backends.remove(&bk);
        if backends.is_empty() {
            self.entries.remove(&rk);
        }
        self.tombstones.insert((rk, bk), event.clone());
        Applied::Changed(port)
    }

    /// Replaces the table with a full list; returns the ports whose backend sets changed and the
    /// mappings that were not usable. With [`Unlisted::KeepOneTtl`] (the first list after an
    /// outage), backends the list no longer holds are kept and expire one TTL from `now` unless
    /// refreshed: their owners could not reach the Routing API either, which may have expired
    /// them meanwhile.
    pub fn replace(
        &mut self,
        list: &[TcpRouteMapping],
        now: Instant,
        unlisted: Unlisted,
    ) -> (BTreeSet<u16>, Vec<(TcpRouteMapping, InvalidMapping)>) {
        let mut fresh: BTreeMap<RouteKey, Backends> = BTreeMap::new();
        let mut invalid = Vec::new();
        for m in list {
            match keys_of(m) {
                Ok((rk, bk)) => {
                    let d = self.details(m, now);
                    let slot = fresh.entry(rk).or_default();
                    // Duplicates in one list: keep the newest tag.
                    match slot.get(&bk) {
                        Some(existing) if !existing.tag.succeeded_by(&d.tag) => {}
                        _ => {
                            slot.insert(bk, d);
                        }
                    }
                }
                Err(e) => invalid.push((m.clone(), e)),
            }
        }
        if unlisted == Unlisted::KeepOneTtl {
            for (rk, backends) in &self.entries {
                let slot = fresh.entry(rk.clone()).or_default();
                for (bk, d) in backends {
                    slot.entry(bk.clone()).or_insert_with(|| BackendDetails {
                        updated: now,
                        ..d.clone()
                    });
                }
            }
        }
        let mut changed = BTreeSet::new();
        for (rk, backends) in &self.entries {
            let same = fresh.get(rk).is_some_and(|f| f.keys().eq(backends.keys()));
            if !same {
                changed.insert(rk.port);
            }
        }
        for rk in fresh.keys() {
            if !self.entries.contains_key(rk) {
                changed.insert(rk.port);
            }
        }
        self.entries = fresh;
        self.tombstones.clear();
        (changed, invalid)
    }

    /// Removes backends not refreshed within their TTL; returns the ports changed and what was
    /// removed.
    pub fn prune(&mut self, now: Instant) -> (BTreeSet<u16>, Vec<(RouteKey, BackendKey)>) {
        let mut changed = BTreeSet::new();
        let mut removed = Vec::new();
        self.entries.retain(|rk, backends| {
            backends.retain(|bk, d| {
                // A TTL too large for the clock (the Routing API sends what it was given, up
                // to i64::MAX seconds) never expires instead of overflowing.
                let alive = d.updated.checked_add(d.ttl).is_none_or(|end| end >= now);
                if !alive {
                    removed.push((rk.clone(), bk.clone()));
                }
                alive
            });
            if removed.last().is_some_and(|(k, _)| k == rk) {
                changed.insert(rk.port);
            }
            !backends.is_empty()
        });
        (changed, removed)
    }

    /// The snapshot of `port` for the data path, or `None` when the port has no backend.
    /// `backend_tls` says whether TLS to backends is enabled: without it, a backend reachable
    /// only on its TLS port is skipped (and reported in `skipped`).
    pub fn port_routes(
        &mut self,
        port: u16,
        backend_tls: bool,
        skipped: &mut Vec<(BackendKey, &'static str)>,
    ) -> Option<Arc<PortRoutes>> {
        let from = RouteKey { port, sni: None };
        let keys: Vec<RouteKey> = self
            .entries
            .range(from..)
            .take_while(|(k, _)| k.port == port)
            .map(|(k, _)| k.clone())
            .collect();
        self.counters
            .retain(|k, _| k.port != port || keys.contains(k));
        if keys.is_empty() {
            return None;
        }
        let mut default = None;
        let mut sni = HashMap::new();
        for rk in keys {
            let mut targets = Vec::new();
            for bk in self.entries[&rk].keys() {
                match Backend::for_key(bk, backend_tls) {
                    Ok(b) => targets.push(b),
                    Err(why) => skipped.push((bk.clone(), why)),
                }
            }
            if targets.is_empty() {
                continue;
            }
            let counter = self.counters.entry(rk.clone()).or_default().clone();
            let pool = Pool {
                backends: targets.into_boxed_slice(),
                next: counter,
            };
            match rk.sni {
                None => default = Some(pool),
                Some(name) => {
                    sni.insert(name, pool);
                }
            }
        }
        if default.is_none() && sni.is_empty() {
            return None;
        }
        Some(Arc::new(PortRoutes { port, default, sni }))
    }

    /// Every route, for logs and tests: (key, backend, details).
    pub fn iter(&self) -> impl Iterator<Item = (&RouteKey, &BackendKey, &BackendDetails)> {
        self.entries
            .iter()
            .flat_map(|(rk, b)| b.iter().map(move |(bk, d)| (rk, bk, d)))
    }
}

/// Where and how to connect for one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub addr: SocketAddr,
    /// `Some`: TLS to `addr`, the certificate verified for this name (the instance id).
    pub tls_name: Option<ServerName<'static>>,
}

impl Backend {
    fn for_key(k: &BackendKey, backend_tls: bool) -> Result<Backend, &'static str> {
        if let (Some(tls_port), true) = (k.tls_port, backend_tls) {
            let name = backend_tls::server_name(&k.instance_id)
                .ok_or("instance_id is not a valid name to verify the backend certificate")?;
            return Ok(Backend {
                addr: SocketAddr::new(k.ip, tls_port),
                tls_name: Some(name),
            });
        }
        if k.port > 0 {
            return Ok(Backend {
                addr: SocketAddr::new(k.ip, k.port),
                tls_name: None,
            });
        }
        Err("only a TLS port is set and backend_tls is disabled")
    }
}

/// Backends of one (port, SNI hostname), picked round-robin.
#[derive(Debug)]
pub struct Pool {
    pub backends: Box<[Backend]>,
    next: Arc<AtomicUsize>,
}

impl Pool {
    /// The index of the backend to try first; later attempts take the following ones.
    pub fn start(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.backends.len().max(1)
    }

    /// The backend `attempt` places after `start`.
    pub fn at(&self, start: usize, attempt: usize) -> &Backend {
        &self.backends[(start + attempt) % self.backends.len()]
    }
}

/// What one external port routes to: the default pool (routes without SNI hostname) and one
/// pool per SNI hostname.
#[derive(Debug)]
pub struct PortRoutes {
    pub port: u16,
    pub default: Option<Pool>,
    /// Keyed by lowercased hostname.
    pub sni: HashMap<String, Pool>,
}

impl PortRoutes {
    /// Whether connections must be inspected for a ClientHello.
    pub fn has_sni(&self) -> bool {
        !self.sni.is_empty()
    }

    /// The pool for a connection that sent `sni` (none: the default pool).
    pub fn pool_for(&self, sni: Option<&str>) -> Option<&Pool> {
        if let Some(name) = sni {
            if let Some(p) = self.sni.get(name) {
                return Some(p);
            }
            if name.bytes().any(|b| b.is_ascii_uppercase()) {
                if let Some(p) = self.sni.get(&name.to_ascii_lowercase()) {
                    return Some(p);
                }
            }
        }
        self.default.as_ref()
    }

    /// Backend addresses, for comparing snapshots and for tests.
    pub fn describe(&self) -> BTreeMap<Option<String>, Vec<Backend>> {
        let mut out = BTreeMap::new();
        if let Some(p) = &self.default {
            out.insert(None, p.backends.to_vec());
        }
        for (name, p) in &self.sni {
            out.insert(Some(name.clone()), p.backends.to_vec());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn mapping(
        port: u16,
        ip: &str,
        backend_port: u16,
        guid: &str,
        index: u32,
    ) -> TcpRouteMapping {
        TcpRouteMapping {
            router_group_guid: "rg".into(),
            backend_port,
            backend_tls_port: -1,
            backend_ip: ip.into(),
            backend_sni_hostname: None,
            instance_id: String::new(),
            port,
            modification_tag: ModificationTag {
                guid: guid.into(),
                index,
            },
            ttl: Some(120),
            isolation_segment: String::new(),
        }
    }

    fn addrs(t: &mut RoutingTable, port: u16) -> Vec<String> {
        let mut skipped = Vec::new();
        match t.port_routes(port, false, &mut skipped) {
            Some(r) => r
                .default
                .as_ref()
                .map(|p| p.backends.iter().map(|b| b.addr.to_string()).collect())
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }

    #[test]
    fn upsert_and_delete_follow_modification_tags() {
        let now = Instant::now();
        let mut t = RoutingTable::new(Duration::from_secs(120));
        assert_eq!(
            t.upsert(&mapping(1024, "10.0.0.1", 80, "g", 1), now),
            Applied::Changed(1024)
        );
        // Same or older tag: ignored.
        assert_eq!(
            t.upsert(&mapping(1024, "10.0.0.1", 80, "g", 1), now),
            Applied::Stale
        );
        assert_eq!(
            t.upsert(&mapping(1024, "10.0.0.1", 80, "g", 0), now),
            Applied::Stale
        );
        assert_eq!(
            t.upsert(&mapping(1024, "10.0.0.1", 80, "g", 2), now),
            Applied::Refreshed
        );
        // An old delete does not undo the newer state.
        assert_eq!(
            t.delete(&mapping(1024, "10.0.0.1", 80, "g", 1)),
            Applied::Stale
        );
        // Another incarnation's delete neither.
        assert_eq!(
            t.delete(&mapping(1024, "10.0.0.1", 80, "h", 5)),
            Applied::Stale
        );
        assert_eq!(addrs(&mut t, 1024), vec!["10.0.0.1:80"]);
        assert_eq!(
            t.delete(&mapping(1024, "10.0.0.1", 80, "g", 2)),
            Applied::Changed(1024)
        );
        assert!(t.is_empty());
        assert_eq!(addrs(&mut t, 1024), Vec::<String>::new());
        // A late upsert of the deleted incarnation does not revive it; a new one does.
        assert_eq!(
            t.upsert(&mapping(1024, "10.0.0.1", 80, "g", 2), now),
            Applied::Stale
        );
        assert_eq!(
            t.upsert(&mapping(1024, "10.0.0.1", 80, "g2", 0), now),
            Applied::Changed(1024)
        );
        assert_eq!(
            t.delete(&mapping(1025, "10.0.0.1", 80, "g", 2)),
            Applied::Absent
        );
    }

    #[test]
    fn invalid_mappings_are_refused() {
        let now = Instant::now();
        let mut t = RoutingTable::new(Duration::from_secs(120));
        assert!(matches!(
            t.upsert(&mapping(0, "10.0.0.1", 80, "g", 0), now),
            Applied::Invalid(InvalidMapping::NoPort)
        ));
        assert!(matches!(
            t.upsert(&mapping(1024, "host.example.com", 80, "g", 0), now),
            Applied::Invalid(InvalidMapping::BadIp(_))
        ));
        assert!(matches!(
            t.upsert(&mapping(1024, "10.0.0.1", 0, "g", 0), now),
            Applied::Invalid(InvalidMapping::NoBackendPort)
        ));
    }

    #[test]
    fn the_first_list_after_an_outage_keeps_unlisted_backends_for_one_ttl() {
        let start = Instant::now();
        let mut t = RoutingTable::new(Duration::from_secs(120));
        let mut gone = mapping(1025, "10.0.0.2", 80, "b", 0);
        gone.ttl = Some(20);
        t.upsert(&mapping(1024, "10.0.0.1", 80, "a", 0), start);
        t.upsert(&gone, start);
        // The list comes 60 s later, after an outage: 1025's owner could not refresh it.
        let later = start + Duration::from_secs(60);
        let list = vec![mapping(1024, "10.0.0.1", 80, "a", 0)];
        let (changed, _) = t.replace(&list, later, Unlisted::KeepOneTtl);
        assert!(changed.is_empty(), "{changed:?}");
        assert_eq!(t.ports().into_iter().collect::<Vec<_>>(), vec![1024, 1025]);
        // Kept one TTL (20 s) from the list, then expired if nobody refreshed it.
        assert!(t.prune(later + Duration::from_secs(19)).1.is_empty());
        let (changed, removed) = t.prune(later + Duration::from_secs(21));
        assert_eq!(changed.into_iter().collect::<Vec<_>>(), vec![1025]);
        assert_eq!(removed.len(), 1);
        // A usual list removes what it no longer holds at once.
        t.upsert(&gone, later);
        let (changed, _) = t.replace(&list, later, Unlisted::Remove);
        assert_eq!(changed.into_iter().collect::<Vec<_>>(), vec![1025]);
        assert_eq!(t.ports().into_iter().collect::<Vec<_>>(), vec![1024]);
    }

    #[test]
    fn replace_reports_changed_ports() {
        let now = Instant::now();
        let mut t = RoutingTable::new(Duration::from_secs(120));
        t.upsert(&mapping(1024, "10.0.0.1", 80, "a", 0), now);
        t.upsert(&mapping(1025, "10.0.0.2", 80, "b", 0), now);
        let list = vec![
            mapping(1024, "10.0.0.1", 80, "a", 3),
            mapping(1026, "10.0.0.3", 80, "c", 0),
            mapping(0, "10.0.0.3", 80, "c", 0),
        ];
        let (changed, invalid) = t.replace(&list, now, Unlisted::Remove);
        assert_eq!(changed.into_iter().collect::<Vec<_>>(), vec![1025, 1026]);
        assert_eq!(invalid.len(), 1);
        assert_eq!(t.ports().into_iter().collect::<Vec<_>>(), vec![1024, 1026]);
        // An event older than the list's state is ignored after it.
        assert_eq!(
            t.upsert(&mapping(1024, "10.0.0.1", 80, "a", 2), now),
            Applied::Stale
        );
    }

    #[test]
    fn prune_removes_expired_backends() {
        let t0 = Instant::now();
        let mut t = RoutingTable::new(Duration::from_secs(120));
        let mut short = mapping(1024, "10.0.0.1", 80, "a", 0);
        short.ttl = Some(10);
        t.upsert(&short, t0);
        let mut no_ttl = mapping(1024, "10.0.0.2", 80, "b", 0);
        no_ttl.ttl = None;
        t.upsert(&no_ttl, t0);
        let (changed, removed) = t.prune(t0 + Duration::from_secs(5));
        assert!(changed.is_empty() && removed.is_empty());
        let (changed, removed) = t.prune(t0 + Duration::from_secs(11));
        assert_eq!(changed.into_iter().collect::<Vec<_>>(), vec![1024]);
        assert_eq!(removed.len(), 1);
        assert_eq!(addrs(&mut t, 1024), vec!["10.0.0.2:80"]);
        let (changed, _) = t.prune(t0 + Duration::from_secs(121));
        assert_eq!(changed.into_iter().collect::<Vec<_>>(), vec![1024]);
        assert!(t.is_empty());
    }

    #[test]
    fn a_ttl_too_large_for_the_clock_never_expires_and_does_not_panic() {
        let t0 = Instant::now();
        let mut t = RoutingTable::new(Duration::from_secs(120));
        let mut forever = mapping(1024, "10.0.0.1", 80, "a", 0);
        forever.ttl = Some(i64::MAX);
        t.upsert(&forever, t0);
        let (changed, removed) = t.prune(t0 + Duration::from_secs(86_400 * 365));
        assert!(changed.is_empty() && removed.is_empty());
        assert_eq!(addrs(&mut t, 1024), vec!["10.0.0.1:80"]);
    }

    #[test]
    fn snapshots_split_by_sni_and_pick_round_robin() {
        let now = Instant::now();
        let mut t = RoutingTable::new(Duration::from_secs(120));
        t.upsert(&mapping(1024, "10.0.0.1", 80, "a", 0), now);
        t.upsert(&mapping(1024, "10.0.0.2", 80, "b", 0), now);
        let mut s = mapping(1024, "10.0.0.3", 80, "c", 0);
        s.backend_sni_hostname = Some("App.Example.com".into());
        t.upsert(&s, now);
        let mut skipped = Vec::new();
        let r = t.port_routes(1024, false, &mut skipped).unwrap();
        assert!(r.has_sni());
        let p = r.pool_for(Some("app.example.com")).unwrap();
        assert_eq!(p.backends[0].addr.to_string(), "10.0.0.3:80");
        assert!(std::ptr::eq(
            r.pool_for(Some("APP.example.COM")).unwrap(),
            p
        ));
        let d = r.pool_for(Some("other.example.com")).unwrap();
        assert_eq!(d.backends.len(), 2);
        let firsts: Vec<_> = (0..4).map(|_| d.at(d.start(), 0).addr.port()).collect();
        assert_eq!(firsts.len(), 4);
        let picks: Vec<_> = (0..4)
            .map(|_| d.at(d.start(), 0).addr.ip().to_string())
            .collect();
        assert_eq!(picks[0], picks[2]);
        assert_ne!(picks[0], picks[1]);
        // The round-robin position survives a rebuild.
        let before = d.start();
        let r2 = t.port_routes(1024, false, &mut skipped).unwrap();
        assert_eq!(r2.default.as_ref().unwrap().start(), before + 1);
    }

    #[test]
    fn tls_backends_need_backend_tls() {
        let now = Instant::now();
        let mut t = RoutingTable::new(Duration::from_secs(120));
        let mut m = mapping(1024, "10.0.0.1", 0, "a", 0);
        m.backend_tls_port = 61001;
        m.instance_id = "instance-1".into();
        t.upsert(&m, now);
        let mut both = mapping(1024, "10.0.0.2", 8080, "b", 0);
        both.backend_tls_port = 61002;
        both.instance_id = "instance-2".into();
        t.upsert(&both, now);
        let mut skipped = Vec::new();
        let r = t.port_routes(1024, false, &mut skipped).unwrap();
        let d = r.describe();
        assert_eq!(
            d[&None],
            vec![Backend {
                addr: "10.0.0.2:8080".parse().unwrap(),
                tls_name: None
            }]
        );
        assert_eq!(skipped.len(), 1);
        skipped.clear();
        let r = t.port_routes(1024, true, &mut skipped).unwrap();
        let d = r.describe();
        assert_eq!(d[&None].len(), 2);
        assert!(d[&None].iter().all(|b| b.tls_name.is_some()));
        assert_eq!(d[&None][0].addr.to_string(), "10.0.0.1:61001");
        assert!(skipped.is_empty());
    }
}
