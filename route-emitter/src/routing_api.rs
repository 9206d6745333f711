//! TCP, SNI and `transport: routing_api` HTTP routes to the Routing API.
//!
//! Router group names are resolved to GUIDs (cached; retried on the next round when the lookup
//! fails). Every route is upserted with `ttl = max_ttl` and refreshed every `max_ttl / 3`, so a
//! missed refresh or two does not let it expire; a route leaving the active set is deleted at
//! once, and every route is deleted on shutdown. The OAuth token (client credentials) is cached
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

struct Publisher {
    client: RoutingApiClient,
    ttl: Duration,
    groups: HashMap<String, String>,
}

impl Publisher {
    async fn group_guid(&mut self, name: &str) -> Option<String> {
        if let Some(g) = self.groups.get(name) {
            return Some(g.clone());
        }
        match self.client.router_group_by_name(name).await {
            Ok(Some(g)) => {
                self.groups.insert(name.to_string(), g.guid.clone());
                Some(g.guid)
            }
            Ok(None) => {
                tracing::error!(
                    router_group = name,
                    "Route Registrar.router-group-not-found"
                );
                None
            }
            Err(e) => {
                tracing::error!(router_group = name, error = %e, "Route Registrar.router-group-lookup-failed");
                None
            }
        }
    }

    /// Upserts (`delete` = false) or deletes `routes` in one request per kind (HTTP routes,
    /// TCP mappings); whether each succeeded. When a request with several routes fails, each is
    /// tried on its own so that one bad route does not hold back the others.
    async fn apply(&mut self, routes: &[&Route], delete: bool) -> Vec<bool> {
        let mut ok = vec![false; routes.len()];
        let mut http = Vec::new();
        let mut http_idx = Vec::new();
        let mut tcp = Vec::new();
        let mut tcp_idx = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            if route.kind == RouteKind::Http {
                http.extend(http_routes(route, self.ttl));
                http_idx.push(i);
            } else if let Some(guid) = self.group_guid(&route.router_group).await {
                tcp.push(tcp_mapping(route, &guid, self.ttl));
                tcp_idx.push(i);
            }
        }
        if !http_idx.is_empty() {
            let result = if delete {
                self.client.delete_routes(&http).await
            } else {
                self.client.upsert_routes(&http).await
            };
            self.settle(routes, &http_idx, result, delete, &mut ok)
                .await;
        }
        if !tcp_idx.is_empty() {
            let result = if delete {
                self.client.delete_tcp_routes(&tcp).await
            } else {
                self.client.upsert_tcp_routes(&tcp).await
            };
            self.settle(routes, &tcp_idx, result, delete, &mut ok).await;
        }
        ok
    }

    /// Records the outcome of a request for `routes[idx]`, retrying a failed batch route by route.
    async fn settle(
        &mut self,
        routes: &[&Route],
        idx: &[usize],
        result: Result<(), ClientError>,
        delete: bool,
        ok: &mut [bool],
    ) {
        match result {
            Ok(()) => {
                tracing::debug!(routes = idx.len(), delete, "routing api updated");
                for &i in idx {
                    ok[i] = true;
                }
            }
            Err(e) if idx.len() == 1 => {
                tracing::error!(route = %routes[idx[0]].name, delete, error = %e, "Route Registrar.routing-api-call-failed");
            }
            Err(e) => {
                tracing::error!(routes = idx.len(), delete, error = %e, "Route Registrar.routing-api-batch-failed-retrying-route-by-route");
                for &i in idx {
                    ok[i] = Box::pin(self.apply(&[routes[i]], delete)).await[0];
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
}

/// Keeps the Routing API routes of the active set registered until `shutdown`, then deletes
/// them.
pub async fn run(
    client: RoutingApiClient,
    max_ttl: Duration,
    mut routes: watch::Receiver<RouteSet>,
    mut shutdown: watch::Receiver<bool>,
) {
    let refresh = (max_ttl / 3).max(Duration::from_secs(1));
    let retry = Duration::from_secs(1).min(refresh);
    let mut p = Publisher {
        client,
        ttl: max_ttl,
        groups: HashMap::new(),
    };
    let mut table: HashMap<String, Entry> = HashMap::new();
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
            let removed: Vec<Entry> = gone.iter().filter_map(|k| table.remove(k)).collect();
            for chunk in removed.chunks(BATCH) {
                let batch: Vec<&Route> = chunk.iter().map(|e| &e.route).collect();
                p.apply(&batch, true).await;
            }
            let now = Instant::now();
            for (k, r) in keys.into_iter().zip(current) {
                table.entry(k).or_insert(Entry {
                    route: r,
                    next_due: now,
                });
            }
        }
        let now = Instant::now();
        let mut due: Vec<&mut Entry> = table.values_mut().filter(|e| e.next_due <= now).collect();
        for chunk in due.chunks_mut(BATCH) {
            let batch: Vec<&Route> = chunk.iter().map(|e| &e.route).collect();
            let results = p.apply(&batch, false).await;
            let after = Instant::now();
            for (e, ok) in chunk.iter_mut().zip(results) {
                e.next_due = after + if ok { refresh } else { retry };
            }
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
    let all: Vec<&Route> = table.values().map(|e| &e.route).collect();
    for chunk in all.chunks(BATCH) {
        p.apply(chunk, true).await;
    }
    tracing::info!(
        routes = table.len(),
        "Route Registrar.Unregistered routes successfully"
    );
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
}
