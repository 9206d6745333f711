//! TCP, SNI and `transport: routing_api` HTTP routes to the Routing API.
//!
//! Router group names are resolved to GUIDs and cached ([`GROUP_TTL`]; a missing group is
//! looked up again with a backoff, once for all its routes; a mapping the API rejects makes its
//! group be looked up again, so a group created again under a new GUID is followed). Every
//! route is upserted with `ttl = max_ttl` and refreshed every `max_ttl / 3`, so a missed
//! refresh or two does not let it expire; a route leaving the active set is deleted at once
//! (retried until it succeeds or the route's TTL has run out), and every route is deleted on shutdown. While the Routing API
//! fails, requests back off exponentially ([`Backoff`]) instead of being repeated per route. The OAuth token (client credentials) is cached
//! and refreshed by [`TokenFetcher`]; mutual TLS is used when the client certificate paths are
//! configured.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use routing_api_client::{
    ClientConfig, ClientError, HttpRoute, ModificationTag, RoutingApiClient, TcpRouteMapping,
    TlsOptions, TokenFetcher, UaaConfig,
};
use tokio::sync::watch;

use crate::config::{Route, RouteKind, RoutingApiConfig, Transport};
use crate::metrics::{Destination, EmitterMetrics};
use crate::sources::RouteSet;

/// Whether `route` goes to the Routing API.
pub fn is_api_route(route: &Route) -> bool {
    route.kind != RouteKind::Http || route.transport == Transport::RoutingApi
}

/// Builds the client from the `routing_api` section.
pub fn build_client(cfg: &RoutingApiConfig) -> Result<RoutingApiClient, String> {
    let tokens = if cfg.oauth_url.is_empty() {
        None
    } else {
        let mut uaa = UaaConfig::new(&cfg.oauth_url, &cfg.client_id, &cfg.client_secret);
        uaa.tls = TlsOptions {
            ca_file: (!cfg.ca_certs.is_empty()).then(|| cfg.ca_certs.clone().into()),
            skip_verification: cfg.skip_ssl_validation,
            ..TlsOptions::default()
        };
        Some(Arc::new(
            TokenFetcher::new(uaa).map_err(|e| format!("oauth client: {e}"))?,
        ))
    };
    let mut client = ClientConfig::new(&cfg.api_url);
    client.tls = TlsOptions {
        ca_file: (!cfg.server_ca_cert_path.is_empty())
            .then(|| cfg.server_ca_cert_path.clone().into()),
        client_cert_file: (!cfg.client_cert_path.is_empty())
            .then(|| cfg.client_cert_path.clone().into()),
        client_key_file: (!cfg.client_private_key_path.is_empty())
            .then(|| cfg.client_private_key_path.clone().into()),
        skip_verification: cfg.skip_ssl_validation,
        system_roots: false,
    };
    RoutingApiClient::new(client, tokens).map_err(|e| format!("routing api client: {e}"))
}

/// The TCP route mapping of a tcp or sni route.
pub fn tcp_mapping(route: &Route, group_guid: &str, ttl: Duration) -> TcpRouteMapping {
    let (backend_port, sni) = match route.kind {
        RouteKind::Sni => (
            route.sni_port.unwrap_or(0),
            Some(route.sni_routable_san.clone()),
        ),
        _ => (route.port.or(route.tls_port).unwrap_or(0), None),
    };
    TcpRouteMapping {
        router_group_guid: group_guid.to_string(),
        backend_port,
        backend_tls_port: route.tls_port.map(i32::from).unwrap_or(-1),
        backend_ip: route.host.clone(),
        backend_sni_hostname: sni,
        instance_id: route.private_instance_id.clone(),
        port: route.external_port.unwrap_or(0),
        modification_tag: ModificationTag::default(),
        ttl: Some(ttl.as_secs() as i64),
        isolation_segment: route.isolation_segment.clone(),
    }
}

/// The HTTP routes (one per URI) of a `transport: routing_api` route.
pub fn http_routes(route: &Route, ttl: Duration) -> Vec<HttpRoute> {
    route
        .uris
        .iter()
        .map(|uri| HttpRoute {
            route: uri.clone(),
            port: route.port.or(route.tls_port).unwrap_or(0),
            ip: route.host.clone(),
            ttl: Some(ttl.as_secs() as i64),
            log_guid: route.app.clone(),
            route_service_url: route.route_service_url.clone(),
            modification_tag: ModificationTag::default(),
        })
        .collect()
}

/// First wait after a failed request to the Routing API.
pub const RETRY_BASE: Duration = Duration::from_secs(1);
/// Longest wait between attempts while the Routing API keeps failing (never more than the
/// refresh interval, so that a recovered API gets every route back within one refresh).
pub const RETRY_CAP: Duration = Duration::from_secs(30);
/// How long a router group's GUID is used before it is looked up again (a group deleted and
/// created again under the same name gets a new GUID).
pub const GROUP_TTL: Duration = Duration::from_secs(300);
/// Longest wait between lookups of a router group that is missing or could not be looked up.
pub const GROUP_RETRY_CAP: Duration = Duration::from_secs(60);

/// Exponential backoff with a cap and jitter: the n-th consecutive failure waits a random time
/// in `[d/2, d]` where `d = min(cap, base * 2^(n-1))`, so that many emitters recovering from
/// the same outage do not retry in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap: cap.max(base),
            failures: 0,
        }
    }

    /// Counts one more failure; the wait before the next attempt.
    pub fn fail(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let d = Self::ceiling(self.base, self.cap, self.failures);
        d / 2 + (d / 2).mul_f64(rand::random::<f64>())
    }

    /// The longest wait after `failures` consecutive failures.
    pub fn ceiling(base: Duration, cap: Duration, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        base.saturating_mul(1u32 << exp).min(cap.max(base))
    }

    /// A success: the next failure waits `base` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// Whether a failed request may succeed unchanged later (the Routing API or its database is
/// down, a token could not be had, a timeout) rather than being a rejection of these routes.
pub fn is_transient(e: &ClientError) -> bool {
    match e {
        ClientError::Status { status, .. } => {
            status.is_server_error() || matches!(status.as_u16(), 401 | 403 | 408 | 429)
        }
        ClientError::Encode(_) => false,
        _ => true,
    }
}

/// What became of one route of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done,
    /// The request failed for a reason unrelated to the route; retried once the publisher's
    /// backoff allows.
    Transient,
    /// The Routing API rejected this route on its own; retried with the route's own backoff.
    Rejected,
    /// Its router group is not known (yet); retried when the group is looked up again.
    NoGroup(Instant),
}

/// A router group name's GUID, or when to look it up again.
struct GroupState {
    guid: Option<String>,
    next_lookup: Instant,
    backoff: Backoff,
}

/// Router group names resolved to GUIDs: a found GUID is used for [`GROUP_TTL`], then looked up
/// again (the old one is kept if that lookup fails); a missing name or a failed lookup is tried
/// again with a backoff up to [`GROUP_RETRY_CAP`], once for all the routes of that group.
#[derive(Default)]
struct Groups {
    names: HashMap<String, GroupState>,
}

impl Groups {
    async fn resolve(
        &mut self,
        client: &RoutingApiClient,
        name: &str,
        now: Instant,
    ) -> Result<String, Instant> {
        if let Some(s) = self.names.get(name) {
            if now < s.next_lookup {
                return s.guid.clone().ok_or(s.next_lookup);
            }
        }
        let state = self
            .names
            .entry(name.to_string())
            .or_insert_with(|| GroupState {
                guid: None,
                next_lookup: now,
                backoff: Backoff::new(RETRY_BASE, GROUP_RETRY_CAP),
            });
        match client.router_group_by_name(name).await {
            Ok(Some(g)) => {
                state.guid = Some(g.guid.clone());
                state.next_lookup = now + GROUP_TTL;
                state.backoff.reset();
                Ok(g.guid)
            }
            Ok(None) => {
                let wait = state.backoff.fail();
                state.guid = None;
                state.next_lookup = now + wait;
                tracing::error!(
                    router_group = name,
                    retry_in_ms = wait.as_millis() as u64,
                    "Route Registrar.router-group-not-found"
                );
                Err(state.next_lookup)
            }
            Err(e) => {
                let wait = state.backoff.fail();
                state.next_lookup = now + wait;
                tracing::error!(router_group = name, error = %e, retry_in_ms = wait.as_millis() as u64, "Route Registrar.router-group-lookup-failed");
                state.guid.clone().ok_or(state.next_lookup)
            }
        }
    }

    /// Looks `name` up again at its next use: the Routing API rejected a mapping under its
    /// cached GUID, and the group may have been deleted and created again under a new GUID
    /// (which [`GROUP_TTL`] would otherwise keep from the routes for minutes). Costs one
    /// lookup per rejection, which the route's own backoff already spaces out.
    fn look_up_again(&mut self, name: &str, now: Instant) {
        if let Some(s) = self.names.get_mut(name) {
            if s.guid.is_some() {
                s.next_lookup = s.next_lookup.min(now);
            }
        }
    }
}

struct Publisher {
    client: RoutingApiClient,
    metrics: EmitterMetrics,
    ttl: Duration,
    groups: Groups,
    /// Consecutive transient failures of the Routing API.
    backoff: Backoff,
    /// No request before this time (set by a transient failure).
    blocked_until: Option<Instant>,
}

impl Publisher {
    fn blocked(&self, now: Instant) -> bool {
        self.blocked_until.is_some_and(|t| now < t)
    }

    fn transient_failure(&mut self, routes: usize, delete: bool, e: &ClientError) {
        let wait = self.backoff.fail();
        self.blocked_until = Some(Instant::now() + wait);
        tracing::error!(routes, delete, error = %e, failures = self.backoff.failures(), retry_in_ms = wait.as_millis() as u64, "Route Registrar.routing-api-unavailable-retrying");
    }

    /// Upserts (`delete` = false) or deletes `routes` in one request per kind (HTTP routes,
    /// TCP mappings). A transient failure stops every request until the backoff allows; a
    /// request with several routes that the Routing API rejects is tried route by route, so
    /// that one bad route does not hold back the others.
    async fn apply(&mut self, routes: &[&Route], delete: bool) -> Vec<Outcome> {
        let mut out = vec![Outcome::Transient; routes.len()];
        let mut http = Vec::new();
        let mut http_idx = Vec::new();
        let mut tcp = Vec::new();
        let mut tcp_idx = Vec::new();
        let now = Instant::now();
        for (i, route) in routes.iter().enumerate() {
            if route.kind == RouteKind::Http {
                http.extend(http_routes(route, self.ttl));
                http_idx.push(i);
            } else {
                match self
                    .groups
                    .resolve(&self.client, &route.router_group, now)
                    .await
                {
                    Ok(guid) => {
                        tcp.push(tcp_mapping(route, &guid, self.ttl));
                        tcp_idx.push(i);
                    }
                    Err(retry_at) => out[i] = Outcome::NoGroup(retry_at),
                }
            }
        }
        if !http_idx.is_empty() {
            let result = if delete {
                self.client.delete_routes(&http).await
            } else {
                self.client.upsert_routes(&http).await
            };
            self.settle(routes, &http_idx, result, delete, &mut out)
                .await;
        }
        if !tcp_idx.is_empty() && !self.blocked(Instant::now()) {
            let result = if delete {
                self.client.delete_tcp_routes(&tcp).await
            } else {
                self.client.upsert_tcp_routes(&tcp).await
            };
            self.settle(routes, &tcp_idx, result, delete, &mut out)
                .await;
            let now = Instant::now();
            for &i in &tcp_idx {
                if out[i] == Outcome::Rejected {
                    self.groups.look_up_again(&routes[i].router_group, now);
                }
            }
        }
        out
    }

    /// Records the outcome of a request for `routes[idx]`.
    async fn settle(
        &mut self,
        routes: &[&Route],
        idx: &[usize],
        result: Result<(), ClientError>,
        delete: bool,
        out: &mut [Outcome],
    ) {
        match result {
            Ok(()) => {
                tracing::debug!(routes = idx.len(), delete, "routing api updated");
                self.backoff.reset();
                self.blocked_until = None;
                for &i in idx {
                    out[i] = Outcome::Done;
                }
            }
            Err(e) if is_transient(&e) => self.transient_failure(idx.len(), delete, &e),
            Err(e) if idx.len() == 1 => {
                tracing::error!(route = %routes[idx[0]].name, delete, error = %e, "Route Registrar.routing-api-call-failed");
                out[idx[0]] = Outcome::Rejected;
            }
            Err(e) => {
                tracing::error!(routes = idx.len(), delete, error = %e, "Route Registrar.routing-api-batch-failed-retrying-route-by-route");
                for &i in idx {
                    if self.blocked(Instant::now()) {
                        break;
                    }
                    out[i] = Box::pin(self.apply(&[routes[i]], delete)).await[0];
                }
            }
        }
    }
}

/// Routes per Routing API request (the API reads at most 1 MiB per body).
const BATCH: usize = 500;

struct Entry {
    route: Route,
    next_due: Instant,
    /// Consecutive rejections of this route on its own.
    rejections: u32,
    /// For a route being deleted: when it has expired in the Routing API anyway, so that its
    /// delete need not be retried any more.
    expires: Option<Instant>,
}

impl Entry {
    fn new(route: Route, now: Instant) -> Self {
        Entry {
            route,
            next_due: now,
            rejections: 0,
            expires: None,
        }
    }
}

/// Sends the due entries of `table` (upserts, or deletes when `delete`), [`BATCH`] routes a
/// request; sets each entry's next time. Returns the keys that are done (deletes).
async fn send_due(
    p: &mut Publisher,
    table: &mut HashMap<String, Entry>,
    delete: bool,
    refresh: Duration,
) -> Vec<String> {
    let now = Instant::now();
    let mut due: Vec<&String> = table
        .iter()
        .filter(|(_, e)| e.next_due <= now)
        .map(|(k, _)| k)
        .collect();
    due.sort();
    let due: Vec<String> = due.into_iter().cloned().collect();
    let mut done = Vec::new();
    for chunk in due.chunks(BATCH) {
        if p.blocked(Instant::now()) {
            break;
        }
        let routes: Vec<&Route> = chunk.iter().map(|k| &table[k].route).collect();
        let outcomes = p.apply(&routes, delete).await;
        let after = Instant::now();
        let retry_at = p.blocked_until.unwrap_or(after);
        let done_here = outcomes.iter().filter(|o| **o == Outcome::Done).count();
        if delete {
            p.metrics.unregistered(Destination::RoutingApi, done_here);
        } else {
            p.metrics.registered(Destination::RoutingApi, done_here);
        }
        p.metrics
            .failed(Destination::RoutingApi, outcomes.len() - done_here);
        for (k, outcome) in chunk.iter().zip(outcomes) {
            let Some(e) = table.get_mut(k) else { continue };
            match outcome {
                Outcome::Done => {
                    e.rejections = 0;
                    e.next_due = after + refresh;
                    if delete {
                        done.push(k.clone());
                    }
                }
                Outcome::Transient => e.next_due = retry_at,
                Outcome::Rejected => {
                    e.rejections = e.rejections.saturating_add(1);
                    e.next_due = after
                        + Backoff::new(RETRY_BASE, refresh.min(RETRY_CAP)).jittered(e.rejections);
                }
                Outcome::NoGroup(at) => e.next_due = at,
            }
        }
    }
    done
}

impl Backoff {
    /// The jittered wait after `failures` consecutive failures, without keeping count.
    fn jittered(mut self, failures: u32) -> Duration {
        self.failures = failures.saturating_sub(1);
        self.fail()
    }
}

/// Keeps the Routing API routes of the active set registered until `shutdown`, then deletes
/// them. Every route upserted, deleted or failed is counted in `metrics`, and so are the routes
/// kept.
///
/// A route is upserted when it joins the set and every `max_ttl / 3`; one that leaves is
/// deleted, and the delete is retried until it succeeds or the route's TTL has run out. When
/// the Routing API fails (unreachable, 5xx, no token) nothing is sent until a [`Backoff`]
/// (from [`RETRY_BASE`] up to [`RETRY_CAP`], jittered) has passed: an outage costs one request
/// per backoff step, not one per route.
pub async fn run(
    client: RoutingApiClient,
    max_ttl: Duration,
    mut routes: watch::Receiver<RouteSet>,
    mut shutdown: watch::Receiver<bool>,
    metrics: EmitterMetrics,
) {
    let refresh = (max_ttl / 3).max(Duration::from_secs(1));
    let mut p = Publisher {
        client,
        metrics,
        ttl: max_ttl,
        groups: Groups::default(),
        backoff: Backoff::new(RETRY_BASE, RETRY_CAP.min(refresh)),
        blocked_until: None,
    };
    let mut table: HashMap<String, Entry> = HashMap::new();
    // Routes that left the set and whose delete has not succeeded yet.
    let mut deleting: HashMap<String, Entry> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut changed = true;
    loop {
        if changed {
            changed = false;
            let current: Vec<Route> = routes
                .borrow_and_update()
                .iter()
                .filter(|r| is_api_route(r))
                .cloned()
                .collect();
            let keys: Vec<String> = current.iter().map(Route::key).collect();
            let wanted: HashSet<&String> = keys.iter().collect();
            let gone: Vec<String> = table
                .keys()
                .filter(|k| !wanted.contains(k))
                .cloned()
                .collect();
            let now = Instant::now();
            for k in gone {
                if let Some(e) = table.remove(&k) {
                    let mut d = Entry::new(e.route, now);
                    d.expires = Some(now + max_ttl);
                    deleting.insert(k, d);
                }
            }
            for (k, r) in keys.into_iter().zip(current) {
                // Back before its delete went through: registering it wins.
                deleting.remove(&k);
                table.entry(k).or_insert_with(|| Entry::new(r, now));
            }
            let http = table
                .values()
                .filter(|e| e.route.kind == RouteKind::Http)
                .count();
            p.metrics.routing_api_routes(http, table.len() - http);
        }
        let now = Instant::now();
        deleting.retain(|_, e| {
            let live = e.expires.is_none_or(|t| now < t);
            if !live {
                tracing::info!(route = %e.route.name, "Route Registrar.delete-abandoned-route-ttl-expired");
            }
            live
        });
        if !p.blocked(now) {
            for k in send_due(&mut p, &mut deleting, true, refresh).await {
                deleting.remove(&k);
            }
            send_due(&mut p, &mut table, false, refresh).await;
        }
        tokio::select! {
            _ = tick.tick() => {}
            r = routes.changed() => {
                if r.is_ok() { changed = true; }
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() { break; }
            }
        }
    }
    // One attempt for everything; what fails expires with its TTL.
    p.blocked_until = None;
    let now = Instant::now();
    let total = table.len() + deleting.len();
    for e in table.values_mut().chain(deleting.values_mut()) {
        e.next_due = now;
    }
    let mut all: HashMap<String, Entry> = table.into_iter().chain(deleting).collect();
    let done = send_due(&mut p, &mut all, true, refresh).await.len();
    p.metrics.routing_api_routes(0, 0);
    if done == total {
        tracing::info!(
            routes = total,
            "Route Registrar.Unregistered routes successfully"
        );
    } else {
        tracing::error!(
            routes = total,
            unregistered = done,
            "Route Registrar.some-routes-not-unregistered-they-expire-with-their-ttl"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{validate_route, RouteDefaults, RouteSchema};

    #[test]
    fn tcp_mapping_without_tls_port_has_minus_one() {
        let r = validate_route(
            RouteSchema {
                kind: "tcp".into(),
                name: "t".into(),
                port: Some(5000),
                router_group: "default-tcp".into(),
                external_port: Some(1024),
                registration_interval: "10s".into(),
                ..Default::default()
            },
            &RouteDefaults {
                host: "10.0.0.2".into(),
                availability_zone: String::new(),
                ..Default::default()
            },
        )
        .unwrap();
        let m = tcp_mapping(&r, "g", Duration::from_secs(120));
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["backend_tls_port"], -1);
        assert_eq!(v["backend_port"], 5000);
        assert_eq!(v["port"], 1024);
        assert_eq!(v["ttl"], 120);
        assert_eq!(v["backend_ip"], "10.0.0.2");
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter_and_resets() {
        let (base, cap) = (Duration::from_secs(1), Duration::from_secs(10));
        let mut b = Backoff::new(base, cap);
        for (n, ceiling) in [1u64, 2, 4, 8, 10, 10, 10].into_iter().enumerate() {
            let d = b.fail();
            let ceiling = Duration::from_secs(ceiling);
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "failure {}: {d:?} not in [{:?}, {ceiling:?}]",
                n + 1,
                ceiling / 2
            );
        }
        assert_eq!(Backoff::ceiling(base, cap, u32::MAX), cap);
        b.reset();
        assert!(b.fail() <= base);
    }

    #[test]
    fn outages_are_transient_and_rejections_are_not() {
        let status = |code: u16| ClientError::Status {
            status: http::StatusCode::from_u16(code).unwrap(),
            body: None,
            text: String::new(),
        };
        for code in [500, 502, 503, 504, 401, 429] {
            assert!(is_transient(&status(code)), "{code}");
        }
        for code in [400, 404, 422] {
            assert!(!is_transient(&status(code)), "{code}");
        }
        assert!(is_transient(&ClientError::Decode("eof".into())));
        assert!(!is_transient(&ClientError::Encode("bad".into())));
    }
}
