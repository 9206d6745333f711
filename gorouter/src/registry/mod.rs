//! The route table: route keys -> pools of endpoints, TTL pruning and the `/routes` dump (A.3).
//!
//! # Why a lookup never waits for a writer
//! Hosts live in a `papaya::HashMap`, a lock-free map: `get` is a few atomic loads under an
//! epoch guard and never blocks, even while another thread inserts or removes. A host's routes
//! ([`HostRoutes`]: the root pool and the context-path pools) are an immutable value in the
//! map's entry; a writer that adds or removes a context path builds a new value and swaps it
//! in. A pool's endpoint list is an immutable [`EndpointList`] behind `arc_swap::ArcSwap`, also
//! replaced whole by writers; `ArcSwap::load` is wait-free for readers. Refreshing an endpoint
//! that is already registered (the common NATS message) only stores an atomic timestamp.
//! Writers (NATS messages, the pruner) serialise among themselves on `writer`, a mutex that
//! readers never touch, so copy-on-write never loses a concurrent update.
//!
//! # Memory
//! Most routes are one host with one endpoint, and at scale the table is most of the router's
//! memory (issue 14), so the common case is kept to few, small allocations: an endpoint is
//! one struct plus one string buffer ([`Endpoint`]); a one-endpoint list holds it inline
//! ([`EndpointList::One`]); a host's routes are the map entry's value itself, with the
//! context-path map boxed only for hosts that have context paths; and the host name is one
//! `Arc<str>` shared by the map key and the host's pools.

mod endpoint;
mod key;
mod route_service_url;
pub mod stats;

pub use endpoint::{Endpoint, EndpointSpec, ModificationTag, Protocol, Tags};
pub use key::{lowercase_into, route_key, split_route_key};
pub use route_service_url::{RouteServiceTarget, RouteServiceUrl};

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::config::{BalancingAlgorithm, Config, ShardingMode};

/// Table-wide settings, taken from the config.
#[derive(Debug, Clone)]
pub struct TableSettings {
    pub default_lb_algo: BalancingAlgorithm,
    pub droplet_stale_threshold: Duration,
    pub empty_pool_response_code_503: bool,
    pub empty_pool_timeout: Duration,
    pub sharding: ShardingMode,
    /// `route_registration_latency`'s bucket bounds (ms).
    pub registration_latency_buckets: Vec<f64>,
}

impl TableSettings {
    pub fn from_config(c: &Config) -> Self {
        Self {
            default_lb_algo: c.balancing_algorithm,
            droplet_stale_threshold: c.droplet_stale_threshold,
            empty_pool_response_code_503: c.empty_pool_response_code_503,
            empty_pool_timeout: c.empty_pool_timeout,
            sharding: c.sharding.clone(),
            registration_latency_buckets: c.metrics.meters.route_registration_latency.clone(),
        }
    }
}

impl Default for TableSettings {
    fn default() -> Self {
        Self {
            default_lb_algo: BalancingAlgorithm::RoundRobin,
            droplet_stale_threshold: Duration::from_secs(120),
            empty_pool_response_code_503: true,
            empty_pool_timeout: Duration::ZERO,
            sharding: ShardingMode::All,
            registration_latency_buckets: stats::DEFAULT_REGISTRATION_LATENCY_BUCKETS.to_vec(),
        }
    }
}

/// What a registration did to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Added,
    Updated,
    Refreshed,
    /// Older modification tag, or an isolation segment this router does not serve.
    Ignored,
}

/// A pool's endpoints: an immutable list, replaced whole. Derefs to a slice.
pub enum EndpointList {
    /// The common case, without a separate allocation for the list.
    One(Arc<Endpoint>),
    Many(Box<[Arc<Endpoint>]>),
}

impl EndpointList {
    fn from_vec(list: Vec<Arc<Endpoint>>) -> Self {
        match <[Arc<Endpoint>; 1]>::try_from(list) {
            Ok([only]) => EndpointList::One(only),
            Err(list) => EndpointList::Many(list.into_boxed_slice()),
        }
    }
}

impl Deref for EndpointList {
    type Target = [Arc<Endpoint>];

    fn deref(&self) -> &[Arc<Endpoint>] {
        match self {
            EndpointList::One(e) => std::slice::from_ref(e),
            EndpointList::Many(list) => list,
        }
    }
}

/// The endpoints registered under one route key (host and context path).
pub struct Pool {
    /// Shared with the table's key for the host.
    host: Arc<str>,
    context_path: Box<str>,
    endpoints: ArcSwap<EndpointList>,
    /// Round-robin cursor shared by all requests to this pool.
    pub(crate) next_idx: AtomicUsize,
    lb_algo: AtomicU8,
    /// The route service of the last registration put into the pool (upstream's rule: the
    /// latest registration wins, and removing endpoints keeps it).
    route_service: ArcSwapOption<RouteServiceUrl>,
    /// Milliseconds since the table's epoch of the last change; for `empty_pool_timeout`.
    updated_at: AtomicU64,
}

impl Pool {
    fn new(host: Arc<str>, context_path: &str, algo: BalancingAlgorithm, now: u64) -> Self {
        Self {
            host,
            context_path: context_path.into(),
            endpoints: ArcSwap::from_pointee(EndpointList::Many(Box::new([]))),
            next_idx: AtomicUsize::new(rand::random::<u32>() as usize),
            lb_algo: AtomicU8::new(algo_to_u8(algo)),
            route_service: ArcSwapOption::empty(),
            updated_at: AtomicU64::new(now),
        }
    }

    /// The route service requests to this route go through first, if it is bound to one.
    pub fn route_service(&self) -> Option<Arc<RouteServiceUrl>> {
        self.route_service.load_full()
    }

    /// Records the route service of a registration just put into the pool; parses the URL only
    /// when it changed.
    fn set_route_service(&self, url: &str) {
        let current = self.route_service.load();
        let unchanged = match current.as_deref() {
            Some(c) => *c.raw == *url,
            None => url.is_empty(),
        };
        if !unchanged {
            self.route_service
                .store((!url.is_empty()).then(|| Arc::new(RouteServiceUrl::parse(url))));
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The route key as `/routes` shows it: the host, then the context path if any.
    pub fn route(&self) -> String {
        [&*self.host, &*self.context_path].concat()
    }

    /// The bytes of [`route`](Self::route), without building it: routes sort by these.
    fn route_bytes(&self) -> impl Iterator<Item = u8> + '_ {
        self.host.bytes().chain(self.context_path.bytes())
    }

    /// `/` for a host route, else `/path`.
    pub fn context_path(&self) -> &str {
        if self.context_path.is_empty() {
            "/"
        } else {
            &self.context_path
        }
    }

    /// A consistent snapshot of the endpoints; never blocks.
    pub fn endpoints(&self) -> arc_swap::Guard<Arc<EndpointList>> {
        self.endpoints.load()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.load().is_empty()
    }

    pub fn lb_algo(&self) -> BalancingAlgorithm {
        if self.lb_algo.load(Ordering::Relaxed) == 1 {
            BalancingAlgorithm::LeastConnection
        } else {
            BalancingAlgorithm::RoundRobin
        }
    }

    pub fn find_by_instance_id(&self, instance_id: &str) -> Option<Arc<Endpoint>> {
        self.endpoints
            .load()
            .iter()
            .find(|e| e.private_instance_id() == instance_id)
            .cloned()
    }

    fn store(&self, list: Vec<Arc<Endpoint>>, now: u64) {
        self.endpoints.store(Arc::new(EndpointList::from_vec(list)));
        self.updated_at.store(now, Ordering::Relaxed);
    }
}

fn algo_to_u8(a: BalancingAlgorithm) -> u8 {
    match a {
        BalancingAlgorithm::RoundRobin => 0,
        BalancingAlgorithm::LeastConnection => 1,
    }
}

/// All pools of one host: its root route and its context-path routes. Immutable once shared.
#[derive(Default, Clone)]
struct HostRoutes {
    root: Option<Arc<Pool>>,
    /// Keyed by context path (`/a/b`, lowercase, no trailing slash); `None`, not an empty map,
    /// when the host has none. Boxed: 8 bytes in every host's entry instead of 48.
    #[allow(clippy::box_collection)]
    paths: Option<Box<HashMap<Box<str>, Arc<Pool>>>>,
}

impl HostRoutes {
    fn get(&self, path: &str) -> Option<&Arc<Pool>> {
        if path.is_empty() {
            self.root.as_ref()
        } else {
            self.paths.as_ref()?.get(path)
        }
    }

    fn is_empty(&self) -> bool {
        self.root.is_none() && self.paths.is_none()
    }

    fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.root
            .iter()
            .chain(self.paths.iter().flat_map(|p| p.values()))
    }

    fn insert_path(&mut self, path: &str, pool: Arc<Pool>) {
        self.paths
            .get_or_insert_with(Default::default)
            .insert(path.into(), pool);
    }

    /// Removes the pool at context path `path`; whether there was one.
    fn remove_path(&mut self, path: &str) -> bool {
        let Some(paths) = self.paths.as_mut() else {
            return false;
        };
        let removed = paths.remove(path).is_some();
        if paths.is_empty() {
            self.paths = None;
        }
        removed
    }

    /// Longest whole-segment prefix match of `path` (lowercase, no query, no trailing slash).
    /// The deepest non-empty pool wins; failing that, the deepest empty one (A.3).
    fn longest_match(&self, path: &str) -> Option<Arc<Pool>> {
        if self.paths.is_none() {
            return self.root.clone();
        }
        let mut deepest_empty: Option<&Arc<Pool>> = None;
        let mut candidate = path;
        loop {
            if let Some(pool) = self.get(candidate) {
                if !pool.is_empty() {
                    return Some(pool.clone());
                }
                deepest_empty.get_or_insert(pool);
            }
            if candidate.is_empty() {
                break;
            }
            candidate = match candidate.rfind('/') {
                Some(i) => &candidate[..i],
                None => "",
            };
        }
        deepest_empty.cloned()
    }
}

/// The route table. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct RouteTable {
    /// Host -> its routes; the key's `Arc` is shared with the host's pools.
    hosts: crate::LockFreeMap<Arc<str>, HostRoutes>,
    writer: Mutex<()>,
    epoch: Instant,
    settings: TableSettings,
    route_count: AtomicUsize,
    stats: stats::RegistryStats,
}

impl RouteTable {
    pub fn new(settings: TableSettings) -> Self {
        let stats = stats::RegistryStats::new(&settings.registration_latency_buckets);
        Self {
            hosts: crate::LockFreeMap::default(),
            writer: Mutex::new(()),
            epoch: Instant::now(),
            settings,
            route_count: AtomicUsize::new(0),
            stats,
        }
    }

    /// Counts for the router's metrics.
    pub fn stats(&self) -> &stats::RegistryStats {
        &self.stats
    }

    pub fn settings(&self) -> &TableSettings {
        &self.settings
    }

    /// Milliseconds since the table was created; the clock endpoint timestamps use.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Number of route keys (host + context path) in the table.
    pub fn route_count(&self) -> usize {
        self.route_count.load(Ordering::Relaxed)
    }

    fn lock_writer(&self) -> MutexGuard<'_, ()> {
        // A writer that panicked left no partial state behind (every change is one store), so a
        // poisoned lock is safe to take.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Finds the pool for a request. `host` may carry a port (stripped); `path` is the escaped
    /// request path, possibly with a query. Never blocks and allocates only for uppercase input
    /// or a wildcard fallback.
    pub fn lookup(&self, host: &str, path: &str) -> Option<Arc<Pool>> {
        let host = host.split(':').next().unwrap_or(host);
        let mut host_buf = String::new();
        let host = lowercase_into(host, &mut host_buf);
        let path = path.split('?').next().unwrap_or(path);
        let path = path.trim_end_matches('/');
        let mut path_buf = String::new();
        let guard = self.hosts.guard();
        if let Some(found) = self.lookup_host(host, path, &mut path_buf, &guard) {
            return Some(found);
        }
        // Wildcards: a.b.c -> *.b.c -> *.c
        let mut rest = host;
        let mut wildcard = String::new();
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            if rest.is_empty() {
                break;
            }
            wildcard.clear();
            wildcard.push_str("*.");
            wildcard.push_str(rest);
            if let Some(found) = self.lookup_host(&wildcard, path, &mut path_buf, &guard) {
                return Some(found);
            }
        }
        None
    }

    fn lookup_host(
        &self,
        host: &str,
        path: &str,
        path_buf: &mut String,
        guard: &impl papaya::Guard,
    ) -> Option<Arc<Pool>> {
        let routes = self.hosts.get(host, guard)?;
        if routes.paths.is_none() {
            return routes.root.clone();
        }
        let path = lowercase_into(path, path_buf);
        routes.longest_match(path)
    }

    /// Adds or refreshes `spec` under the route `uri` (A.3 Put).
    pub fn register(&self, uri: &str, spec: &EndpointSpec) -> PutOutcome {
        if !self.settings.sharding.accepts(&spec.isolation_segment) {
            return PutOutcome::Ignored;
        }
        let key = route_key(uri);
        let (host, path) = split_route_key(&key);
        let now = self.now_ms();
        self.stats.updated(now);
        let _w = self.lock_writer();
        let guard = self.hosts.guard();
        let pool = match self.pool_at(host, path, &guard) {
            Some(pool) => pool,
            None => {
                let (key, mut routes) = match self.hosts.get_key_value(host, &guard) {
                    Some((key, routes)) => (key.clone(), routes.clone()),
                    None => (Arc::from(host), HostRoutes::default()),
                };
                let pool = Arc::new(Pool::new(
                    key.clone(),
                    path,
                    self.settings.default_lb_algo,
                    now,
                ));
                if let Some(algo) = spec.lb_algo {
                    pool.lb_algo.store(algo_to_u8(algo), Ordering::Relaxed);
                }
                // The route is published with its first endpoint already in it: readers never
                // wait for the writer, so one looking up in between would see an empty pool
                // and answer 503 no_endpoints.
                let first = Endpoint::from_spec(spec, self.settings.droplet_stale_threshold, now);
                pool.set_route_service(&spec.route_service_url);
                pool.store(vec![Arc::new(first)], now);
                if path.is_empty() {
                    routes.root = Some(pool.clone());
                } else {
                    routes.insert_path(path, pool.clone());
                }
                self.hosts.insert(key, routes, &guard);
                self.route_count.fetch_add(1, Ordering::Relaxed);
                return PutOutcome::Added;
            }
        };
        if let Some(algo) = spec.lb_algo {
            pool.lb_algo.store(algo_to_u8(algo), Ordering::Relaxed);
        }
        let current = pool.endpoints();
        let addr = spec.addr();
        match current.iter().position(|e| e.addr() == addr) {
            Some(i) => {
                let existing = &current[i];
                // An identical registration refreshes before the modification tag is looked
                // at: the Routing API lists an unchanged route with the tag it was stored with,
                // which does not succeed itself, and the route must not expire for that.
                if existing.same_registration(spec) {
                    existing.touch(now);
                    pool.set_route_service(&spec.route_service_url);
                    return PutOutcome::Refreshed;
                }
                if !spec.modification_tag.succeeds_endpoint(existing) {
                    return PutOutcome::Ignored;
                }
                let replacement = Arc::new(Endpoint::from_spec(
                    spec,
                    self.settings.droplet_stale_threshold,
                    now,
                ));
                let mut list = current.to_vec();
                list[i] = replacement;
                pool.set_route_service(&spec.route_service_url);
                pool.store(list, now);
                PutOutcome::Updated
            }
            None => {
                let ep = Arc::new(Endpoint::from_spec(
                    spec,
                    self.settings.droplet_stale_threshold,
                    now,
                ));
                let mut list = current.to_vec();
                list.push(ep);
                pool.set_route_service(&spec.route_service_url);
                pool.store(list, now);
                PutOutcome::Added
            }
        }
    }

    /// Removes the endpoint at `spec`'s address from route `uri` (A.3 Remove). Returns whether
    /// an endpoint was removed.
    pub fn unregister(&self, uri: &str, spec: &EndpointSpec) -> bool {
        if !self.settings.sharding.accepts(&spec.isolation_segment) {
            return false;
        }
        let key = route_key(uri);
        let (host, path) = split_route_key(&key);
        let addr = spec.addr();
        let now = self.now_ms();
        self.stats.updated(now);
        let _w = self.lock_writer();
        let guard = self.hosts.guard();
        let Some(pool) = self.pool_at(host, path, &guard) else {
            return false;
        };
        let current = pool.endpoints();
        let Some(i) = current.iter().position(|e| e.addr() == addr) else {
            return false;
        };
        if !spec
            .modification_tag
            .succeeds_or_equal_endpoint(&current[i])
        {
            return false;
        }
        let mut list = current.to_vec();
        list.remove(i);
        let empty = list.is_empty();
        pool.store(list, now);
        if empty && !self.keeps_empty_pools() {
            self.remove_pool(host, path, &guard);
        }
        true
    }

    /// Refreshes the timestamp of the endpoint at `spec`'s address on route `uri`, whatever its
    /// modification tag, so the pruner keeps it: a route source holding its routes while it
    /// cannot reach their owner. Returns whether the endpoint was there.
    pub fn touch(&self, uri: &str, spec: &EndpointSpec) -> bool {
        let key = route_key(uri);
        let (host, path) = split_route_key(&key);
        let addr = spec.addr();
        let guard = self.hosts.guard();
        let Some(pool) = self.pool_at(host, path, &guard) else {
            return false;
        };
        let endpoints = pool.endpoints();
        match endpoints.iter().find(|e| e.addr() == addr) {
            Some(e) => {
                e.touch(self.now_ms());
                true
            }
            None => false,
        }
    }

    /// Removes `endpoint` from `pool` after a failure that prunes it (A.6: a TLS endpoint
    /// that fails to dial or to handshake). An emptied pool stays until the next prune, as
    /// upstream's does. Returns whether it was still there.
    pub fn remove_failed_endpoint(&self, pool: &Pool, endpoint: &Arc<Endpoint>) -> bool {
        let now = self.now_ms();
        let _w = self.lock_writer();
        let current = pool.endpoints();
        let Some(i) = current.iter().position(|e| Arc::ptr_eq(e, endpoint)) else {
            return false;
        };
        let mut list = current.to_vec();
        list.remove(i);
        pool.store(list, now);
        true
    }

    fn keeps_empty_pools(&self) -> bool {
        self.settings.empty_pool_response_code_503 && !self.settings.empty_pool_timeout.is_zero()
    }

    /// Drops the route key `host`+`path`. Caller holds the writer lock.
    /// The pool of route `host` + `path`, if there is one.
    fn pool_at(&self, host: &str, path: &str, guard: &impl papaya::Guard) -> Option<Arc<Pool>> {
        self.hosts
            .get(host, guard)
            .and_then(|r| r.get(path).cloned())
    }

    fn remove_pool(&self, host: &str, path: &str, guard: &impl papaya::Guard) {
        let Some((key, routes)) = self.hosts.get_key_value(host, guard) else {
            return;
        };
        let (key, mut routes) = (key.clone(), routes.clone());
        let removed = if path.is_empty() {
            routes.root.take().is_some()
        } else {
            routes.remove_path(path)
        };
        if !removed {
            return;
        }
        self.route_count.fetch_sub(1, Ordering::Relaxed);
        if routes.is_empty() {
            self.hosts.remove(host, guard);
        } else {
            self.hosts.insert(key, routes, guard);
        }
    }

    /// Removes non-TLS endpoints not refreshed within their stale threshold, then empty pools
    /// (subject to `empty_pool_timeout`). Returns the number of endpoints removed.
    pub fn prune_stale(&self) -> usize {
        let now = self.now_ms();
        let empty_timeout = self.settings.empty_pool_timeout.as_millis() as u64;
        let _w = self.lock_writer();
        let guard = self.hosts.guard();
        let mut removed = 0;
        let mut snip = Vec::new();
        for (host, routes) in self.hosts.iter(&guard) {
            for pool in routes.pools() {
                let current = pool.endpoints();
                let keep: Vec<Arc<Endpoint>> = current
                    .iter()
                    .filter(|e| !e.is_stale(now))
                    .cloned()
                    .collect();
                if keep.len() != current.len() {
                    removed += current.len() - keep.len();
                    pool.store(keep, now);
                }
                if pool.is_empty() {
                    let since = now.saturating_sub(pool.updated_at.load(Ordering::Relaxed));
                    if !self.keeps_empty_pools() || since >= empty_timeout {
                        snip.push((host.clone(), pool.context_path.clone()));
                    }
                }
            }
        }
        for (host, path) in snip {
            self.remove_pool(&host, &path, &guard);
        }
        self.stats.pruned(removed);
        removed
    }

    /// Marks every endpoint as seen now (after NATS comes back, so nothing is pruned for
    /// messages the outage swallowed).
    pub fn refresh_all(&self) {
        let now = self.now_ms();
        let guard = self.hosts.guard();
        for (_, routes) in self.hosts.iter(&guard) {
            for pool in routes.pools() {
                for e in pool.endpoints().iter() {
                    e.touch(now);
                }
            }
        }
    }

    /// Every pool, sorted by route (`host` or `host/path`, as [`Pool::route`] spells it):
    /// what `/routes` lists. One allocation for the whole list, none per route, so listing a
    /// large table leaves little freed memory behind in the allocator.
    pub fn pools_by_route(&self) -> Vec<Arc<Pool>> {
        let guard = self.hosts.guard();
        let mut out = Vec::with_capacity(self.route_count() + 16);
        for (_, routes) in self.hosts.iter(&guard) {
            out.extend(routes.pools().cloned());
        }
        out.sort_unstable_by(|a, b| a.route_bytes().cmp(b.route_bytes()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A reader racing the registration of new routes never finds one without its endpoint.
    #[test]
    fn a_new_route_is_never_seen_without_its_endpoint() {
        use std::sync::atomic::AtomicUsize;
        const ROUTES: usize = 20_000;
        let table = Arc::new(RouteTable::new(TableSettings::default()));
        let current = Arc::new(AtomicUsize::new(0));
        let reader = {
            let (table, current) = (table.clone(), current.clone());
            std::thread::spawn(move || {
                let mut empty_seen = 0;
                loop {
                    let i = current.load(Ordering::Acquire);
                    if i >= ROUTES {
                        return empty_seen;
                    }
                    if let Some(pool) = table.lookup(&format!("race-{i}.example"), "/") {
                        if pool.is_empty() {
                            empty_seen += 1;
                        }
                    }
                }
            })
        };
        for i in 0..ROUTES {
            current.store(i, Ordering::Release);
            let spec = EndpointSpec {
                host: "10.0.0.1".into(),
                port: 8080,
                ..Default::default()
            };
            table.register(&format!("race-{i}.example"), &spec);
        }
        current.store(ROUTES, Ordering::Release);
        assert_eq!(
            reader.join().unwrap(),
            0,
            "lookups that found an empty new pool"
        );
    }

    fn spec(host: &str, port: u16) -> EndpointSpec {
        EndpointSpec {
            host: host.into(),
            port,
            ..EndpointSpec::default()
        }
    }

    fn addrs(pool: &Pool) -> Vec<String> {
        pool.endpoints()
            .iter()
            .map(|e| e.addr().to_string())
            .collect()
    }

    #[test]
    fn lookup_is_case_insensitive_and_ignores_port_query_and_trailing_slash() {
        let t = RouteTable::new(TableSettings::default());
        assert_eq!(
            t.register("Foo.Example.com/", &spec("10.0.0.1", 80)),
            PutOutcome::Added
        );
        let p = t.lookup("FOO.example.COM:8080", "/?x=1").expect("pool");
        assert_eq!(addrs(&p), vec!["10.0.0.1:80"]);
        assert!(t.lookup("bar.example.com", "/").is_none());
    }

    #[test]
    fn context_paths_match_longest_whole_segment_prefix() {
        let t = RouteTable::new(TableSettings::default());
        t.register("a.com", &spec("10.0.0.1", 1));
        t.register("a.com/foo", &spec("10.0.0.2", 2));
        t.register("a.com/foo/bar", &spec("10.0.0.3", 3));
        let at = |p: &str| addrs(&t.lookup("a.com", p).unwrap());
        assert_eq!(at("/foo"), vec!["10.0.0.2:2"]);
        assert_eq!(at("/FOO/baz"), vec!["10.0.0.2:2"]);
        assert_eq!(at("/foo/bar/baz?q"), vec!["10.0.0.3:3"]);
        assert_eq!(at("/foobar"), vec!["10.0.0.1:1"]);
        assert_eq!(at("/"), vec!["10.0.0.1:1"]);
    }

    #[test]
    fn context_path_without_root_route_does_not_match_other_paths() {
        let t = RouteTable::new(TableSettings::default());
        t.register("a.com/foo", &spec("10.0.0.2", 2));
        assert!(t.lookup("a.com", "/bar").is_none());
        assert!(t.lookup("a.com", "/foo/x").is_some());
    }

    #[test]
    fn wildcard_routes_match_subdomains_most_specific_first() {
        let t = RouteTable::new(TableSettings::default());
        t.register("*.example.com", &spec("10.0.0.1", 1));
        t.register("*.b.example.com", &spec("10.0.0.2", 2));
        assert_eq!(
            addrs(&t.lookup("a.example.com", "/").unwrap()),
            vec!["10.0.0.1:1"]
        );
        assert_eq!(
            addrs(&t.lookup("a.b.example.com", "/").unwrap()),
            vec!["10.0.0.2:2"]
        );
        assert!(t.lookup("example.com", "/").is_none());
    }

    #[test]
    fn register_same_address_refreshes_and_changed_fields_update() {
        let t = RouteTable::new(TableSettings::default());
        let mut s = spec("10.0.0.1", 80);
        assert_eq!(t.register("a.com", &s), PutOutcome::Added);
        assert_eq!(t.register("a.com", &s), PutOutcome::Refreshed);
        s.app = "app-2".into();
        assert_eq!(t.register("a.com", &s), PutOutcome::Updated);
        let p = t.lookup("a.com", "/").unwrap();
        assert_eq!(p.endpoints().len(), 1);
        assert_eq!(p.endpoints()[0].app_id(), "app-2");
    }

    #[test]
    fn an_unchanged_routing_api_registration_refreshes_with_its_stored_tag() {
        let t = RouteTable::new(TableSettings::default());
        let mut s = spec("10.0.0.1", 80);
        s.modification_tag = ModificationTag {
            guid: "route-guid".into(),
            index: 3,
        };
        assert_eq!(t.register("a.com", &s), PutOutcome::Added);
        assert_eq!(
            t.register("a.com", &s),
            PutOutcome::Refreshed,
            "the same route listed again, same guid and index, keeps it alive"
        );
        s.app = "app-2".into();
        assert_eq!(
            t.register("a.com", &s),
            PutOutcome::Ignored,
            "a change under a tag that does not succeed the stored one is not applied"
        );
        s.modification_tag.index = 4;
        assert_eq!(t.register("a.com", &s), PutOutcome::Updated);
    }

    #[test]
    fn the_same_tags_refresh_and_changed_tags_update() {
        let t = RouteTable::new(TableSettings::default());
        let mut s = spec("10.0.0.1", 80);
        s.tags = Some([("component".to_string(), "route-emitter".to_string())].into());
        assert_eq!(t.register("a.com", &s), PutOutcome::Added);
        assert_eq!(t.register("a.com", &s), PutOutcome::Refreshed);
        s.tags
            .as_mut()
            .unwrap()
            .insert("space_name".into(), "dev".into());
        assert_eq!(t.register("a.com", &s), PutOutcome::Updated);
        s.tags
            .as_mut()
            .unwrap()
            .insert("space_name".into(), "prod".into());
        assert_eq!(t.register("a.com", &s), PutOutcome::Updated);
        s.tags = None;
        assert_eq!(t.register("a.com", &s), PutOutcome::Updated);
        assert_eq!(t.register("a.com", &s), PutOutcome::Refreshed);
        s.tags = Some(Default::default());
        assert_eq!(t.register("a.com", &s), PutOutcome::Updated);
        let p = t.lookup("a.com", "/").unwrap();
        assert_eq!(p.endpoints()[0].tags().map(|t| t.iter().count()), Some(0));
    }

    #[test]
    fn tags_serialise_as_the_object_they_were_registered_as() {
        let map: BTreeMap<String, String> = [
            ("component".to_string(), "route-emitter".to_string()),
            ("app_name".to_string(), "a \"quoted\" name".to_string()),
        ]
        .into();
        let mut s = spec("10.0.0.1", 80);
        s.tags = Some(map.clone());
        let e = Endpoint::from_spec(&s, Duration::from_secs(1), 0);
        let tags: Option<Tags<'_>> = e.tags();
        assert_eq!(
            serde_json::to_string(&tags).unwrap(),
            serde_json::to_string(&map).unwrap()
        );
    }

    #[test]
    fn tls_port_wins_over_port_in_the_pool_key() {
        let t = RouteTable::new(TableSettings::default());
        let mut s = spec("10.0.0.1", 80);
        s.tls_port = 443;
        t.register("a.com", &s);
        let p = t.lookup("a.com", "/").unwrap();
        assert_eq!(addrs(&p), vec!["10.0.0.1:443"]);
        assert!(p.endpoints()[0].tls);
    }

    #[test]
    fn unregister_removes_endpoint_and_empty_route() {
        let t = RouteTable::new(TableSettings::default());
        t.register("a.com", &spec("10.0.0.1", 1));
        t.register("a.com", &spec("10.0.0.2", 2));
        assert!(t.unregister("a.com", &spec("10.0.0.1", 1)));
        assert_eq!(addrs(&t.lookup("a.com", "/").unwrap()), vec!["10.0.0.2:2"]);
        assert!(t.unregister("a.com", &spec("10.0.0.2", 2)));
        assert!(t.lookup("a.com", "/").is_none());
        assert_eq!(t.route_count(), 0);
        assert!(!t.unregister("a.com", &spec("10.0.0.2", 2)));
    }

    #[test]
    fn empty_pool_is_kept_while_empty_pool_timeout_runs() {
        let t = RouteTable::new(TableSettings {
            empty_pool_timeout: Duration::from_secs(60),
            ..TableSettings::default()
        });
        t.register("a.com", &spec("10.0.0.1", 1));
        t.unregister("a.com", &spec("10.0.0.1", 1));
        let p = t.lookup("a.com", "/").expect("empty pool kept");
        assert!(p.is_empty());
    }

    #[test]
    fn prune_removes_stale_non_tls_endpoints_only() {
        let t = RouteTable::new(TableSettings::default());
        let mut short = spec("10.0.0.1", 1);
        short.stale_threshold_in_seconds = 1;
        let mut tls = spec("10.0.0.2", 2);
        tls.tls_port = 3;
        tls.stale_threshold_in_seconds = 1;
        t.register("a.com", &short);
        t.register("a.com", &tls);
        t.register("a.com", &spec("10.0.0.4", 4));
        assert_eq!(t.prune_stale(), 0);
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(t.prune_stale(), 1);
        let mut left = addrs(&t.lookup("a.com", "/").unwrap());
        left.sort();
        assert_eq!(left, vec!["10.0.0.2:3", "10.0.0.4:4"]);
    }

    #[test]
    fn stale_threshold_zero_or_above_global_is_clamped() {
        let t = RouteTable::new(TableSettings {
            droplet_stale_threshold: Duration::from_secs(5),
            ..TableSettings::default()
        });
        let mut s = spec("10.0.0.1", 1);
        s.stale_threshold_in_seconds = 500;
        t.register("a.com", &s);
        let p = t.lookup("a.com", "/").unwrap();
        assert_eq!(p.endpoints()[0].stale_threshold(), Duration::from_secs(5));
    }

    #[test]
    fn segments_sharding_ignores_other_segments() {
        let t = RouteTable::new(TableSettings {
            sharding: ShardingMode::Segments(["is1".to_string()].into()),
            ..TableSettings::default()
        });
        let mut s = spec("10.0.0.1", 1);
        assert_eq!(t.register("a.com", &s), PutOutcome::Ignored);
        s.isolation_segment = "is1".into();
        assert_eq!(t.register("a.com", &s), PutOutcome::Added);
    }

    #[test]
    fn lb_algo_option_overrides_pool_algorithm() {
        let t = RouteTable::new(TableSettings::default());
        let mut s = spec("10.0.0.1", 1);
        s.lb_algo = Some(BalancingAlgorithm::LeastConnection);
        t.register("a.com", &s);
        assert_eq!(
            t.lookup("a.com", "/").unwrap().lb_algo(),
            BalancingAlgorithm::LeastConnection
        );
    }

    #[test]
    fn route_service_is_the_latest_registrations_and_outlives_its_endpoint() {
        let t = RouteTable::new(TableSettings::default());
        let mut a = spec("127.0.0.1", 1);
        a.route_service_url = "https://rs-a.example.com".into();
        t.register("rs.com", &a);
        let pool = t.lookup("rs.com", "/").unwrap();
        assert_eq!(
            pool.route_service().map(|u| u.raw.to_string()),
            Some("https://rs-a.example.com".into())
        );
        let mut b = spec("127.0.0.1", 2);
        b.route_service_url = "https://rs-b.example.com".into();
        t.register("rs.com", &b);
        assert_eq!(
            &*pool.route_service().unwrap().raw,
            "https://rs-b.example.com"
        );
        t.unregister("rs.com", &b);
        assert_eq!(
            &*pool.route_service().unwrap().raw,
            "https://rs-b.example.com",
            "removing an endpoint keeps the pool's route service (upstream)"
        );
        t.register("rs.com", &spec("127.0.0.1", 1));
        assert!(
            pool.route_service().is_none(),
            "a registration without one unbinds the route"
        );
    }

    /// Routes sort as their spelled-out keys do (`a.com/x` after `a.com.b`: `/` > `.`), not
    /// by host and then path.
    #[test]
    fn pools_by_route_sort_as_route_strings() {
        let t = RouteTable::new(TableSettings::default());
        for uri in ["a.com/x", "a.com.b", "a.com", "b.com", "a.com/x/y", "a.co"] {
            t.register(uri, &spec("10.0.0.1", 1));
        }
        let routes: Vec<String> = t.pools_by_route().iter().map(|p| p.route()).collect();
        let mut sorted = routes.clone();
        sorted.sort();
        assert_eq!(routes, sorted);
        assert_eq!(
            routes,
            ["a.co", "a.com", "a.com.b", "a.com/x", "a.com/x/y", "b.com"]
        );
    }

    #[test]
    fn pools_by_route_list_routes_with_context_paths() {
        let t = RouteTable::new(TableSettings::default());
        t.register("b.com/x", &spec("10.0.0.1", 1));
        t.register("a.com", &spec("10.0.0.2", 2));
        let routes: Vec<String> = t.pools_by_route().iter().map(|p| p.route()).collect();
        assert_eq!(routes, ["a.com", "b.com/x"]);
    }

    #[test]
    fn lookups_proceed_while_a_writer_churns() {
        let t = Arc::new(RouteTable::new(TableSettings::default()));
        t.register("stable.com", &spec("10.0.0.1", 1));
        // The writer side held (as a writer holds it for each change): lookups on another
        // thread must still complete. A lookup that waited for the writer lock would block
        // until the guard is dropped, which happens only after `recv_timeout` gave up.
        let held = t.lock_writer();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        {
            let t = t.clone();
            std::thread::spawn(move || {
                let found = (0..1_000).all(|_| {
                    t.lookup("stable.com", "/").is_some()
                        && t.lookup("www.stable.com", "/x").is_none()
                });
                let _ = done_tx.send(found);
            });
        }
        let found = done_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("lookups completed while the writer lock was held");
        assert!(
            found,
            "lookups answered wrongly while the writer lock was held"
        );
        drop(held);
        // And with a writer churning for real, every lookup of an untouched route finds it.
        let w = {
            let t = t.clone();
            std::thread::spawn(move || {
                for i in 0..20_000u32 {
                    let uri = format!("h{}.com", i % 500);
                    t.register(&uri, &spec("10.0.0.9", (i % 7) as u16 + 1));
                    if i % 3 == 0 {
                        t.unregister(&uri, &spec("10.0.0.9", (i % 7) as u16 + 1));
                    }
                }
            })
        };
        for _ in 0..20_000 {
            assert!(t.lookup("stable.com", "/").is_some());
        }
        w.join().unwrap();
    }
}
