//! The work the active instance does in the background while it serves: registering its own
//! route (`api.<system_domain>/routing`) and refreshing it, and pruning expired routes
//! (B.5). Both stop when the process starts closing.

use std::sync::Arc;
use std::time::Duration;

use routing_api_client::{EventAction, HttpRoute};
use tokio::sync::watch;

use crate::api::Api;
use crate::config::Config;
use crate::events::Hubs;
use crate::metrics::{Kind, Metrics};
use crate::prometheus::ApiMetrics;
use crate::store::Store;

/// How often expired routes are deleted (B.5).
const PRUNE_INTERVAL: Duration = Duration::from_secs(10);

/// The routing API's own route, `api.<system_domain>/routing`. `ip` is the `-ip` flag as given
/// (upstream takes it as text too).
pub fn own_route(config: &Config, ip: &str) -> HttpRoute {
    HttpRoute {
        route: format!("api.{}/routing", config.system_domain),
        port: if config.api.http_enabled {
            config.api.listen_port
        } else {
            config.api.mtls_listen_port
        },
        ip: ip.to_owned(),
        ttl: Some(config.max_ttl.as_secs() as i64),
        log_guid: config.log_guid.clone(),
        ..HttpRoute::default()
    }
}

/// Registers the API's own route and refreshes it every `max_ttl / 2`. The first registration
/// is not counted in the route gauge's deltas (upstream registers before its metrics reporter
/// subscribes to changes; the periodic total includes the route); refreshes are (`+0`, or `+1`
/// if the route had been pruned meanwhile). Prometheus's total counts every creation, the
/// first included (it is counted in the store before this starts).
pub async fn register_own_route(
    api: Arc<Api>,
    route: HttpRoute,
    ttl: Duration,
    mut closing: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval((ttl / 2).max(Duration::from_secs(1)));
    let mut registered = false;
    loop {
        tokio::select! {
            _ = closing.wait_for(|c| *c) => return,
            _ = tick.tick() => {}
        }
        match api.store.upsert_http_route(&route, ttl).await {
            Ok((stored, created)) => {
                if registered {
                    api.metrics.route_upserted(Kind::Http, created);
                }
                api.prometheus.route_upserted(Kind::Http, created);
                registered = true;
                api.hubs.http.publish(EventAction::Upsert, &stored)
            }
            Err(e) => tracing::error!(error = %e, "routing-api.route-register.registration-error"),
        }
    }
}

/// Deletes expired routes every 10 s, with a `Delete` event and a `-1` route gauge delta
/// (statsd and Prometheus) for each.
pub async fn prune_expired(
    store: Store,
    hubs: Hubs,
    metrics: Metrics,
    prometheus: Arc<ApiMetrics>,
    mut closing: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(PRUNE_INTERVAL);
    loop {
        tokio::select! {
            _ = closing.wait_for(|c| *c) => return,
            _ = tick.tick() => {}
        }
        match store.prune_expired().await {
            Ok((http, tcp)) => {
                for r in &http {
                    metrics.route_removed(Kind::Http);
                    prometheus.route_removed(Kind::Http);
                    hubs.http.publish(EventAction::Delete, r);
                }
                for m in &tcp {
                    metrics.route_removed(Kind::Tcp);
                    prometheus.route_removed(Kind::Tcp);
                    hubs.tcp.publish(EventAction::Delete, m);
                }
                if !http.is_empty() || !tcp.is_empty() {
                    tracing::info!(
                        http = http.len(),
                        tcp = tcp.len(),
                        "routing-api.prune-routes.pruned-expired-routes"
                    );
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "routing-api.prune-routes.failed-to-prune-routes")
            }
        }
    }
}
