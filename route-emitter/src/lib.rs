//! `route-emitter`: registers routes with the routing tier the way route-registrar does.
//!
//! Reads route-registrar's config schema ([`config`]), merges its static routes with routes
//! from `dynamic_config_globs` files ([`sources`]), withholds routes whose health check fails
//! ([`health`]), and publishes the rest: HTTP routes over NATS to gorouter ([`nats`]); TCP, SNI
//! and `transport: routing_api` HTTP routes to the Routing API ([`routing_api`]). SIGTERM or
//! SIGINT unregisters everything and exits; so does a NATS publisher that no router answered
//! ([`nats::MAX_GREET_ATTEMPTS`]), but with an error (exit status 1). With a `prometheus`
//! block, what it sends is counted ([`metrics`]) and served at `/metrics`.
//!
//! ```text
//! sources (static + files) --watch--> health --watch(active)--> nats publisher
//!                                                           \--> routing api publisher
//! ```

pub mod config;
pub mod health;
pub mod metrics;
pub mod nats;
pub mod routing_api;
pub mod sources;

use std::sync::Arc;

use prometheus_endpoint::{MetricsServer, Registry};
use tokio::sync::watch;

use crate::config::{Config, RouteDefaults};
use crate::metrics::EmitterMetrics;
use crate::sources::{RouteSet, Sources};

/// Runs until SIGTERM/SIGINT, then unregisters every route.
pub async fn run(mut config: Config) -> Result<(), String> {
    let defaults = RouteDefaults {
        host: config.host.clone(),
        availability_zone: config.availability_zone.clone(),
        http_transport: crate::config::default_http_transport(
            !config.message_bus_servers.is_empty(),
            config.routing_api.is_some(),
        ),
    };
    let (configured_tx, configured_rx) = watch::channel::<RouteSet>(Arc::new(Vec::new()));
    let (active_tx, active_rx) = watch::channel::<RouteSet>(Arc::new(Vec::new()));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let metrics = EmitterMetrics::new();
    // Bound before anything is sent, so a port in use stops the emitter at once.
    let metrics_server = match &config.metrics_endpoint {
        None => None,
        Some(endpoint) => {
            let server = MetricsServer::bind(endpoint)
                .await
                .map_err(|e| e.to_string())?;
            if let Ok(addr) = server.local_addr() {
                tracing::info!(address = %addr, tls = endpoint.tls.is_some(), "Route Registrar.serving-metrics");
            }
            let mut registry = Registry::default();
            metrics.register(&mut registry);
            Some(tokio::spawn(
                server.serve(Arc::new(registry), std::future::pending()),
            ))
        }
    };

    // The static routes move into the sources (no second copy of a large table).
    let static_routes = std::mem::take(&mut config.routes);
    let static_count = static_routes.len();
    let sources = Sources::new(static_routes, config.dynamic_config_globs.clone(), defaults);
    // Keep the sender alive after a one-shot source run (no globs) by holding a clone.
    let _configured_keepalive = configured_tx.clone();
    tokio::spawn(sources.run(configured_tx));
    let _active_keepalive = active_tx.clone();
    tokio::spawn(health::run(configured_rx, active_tx, metrics.clone()));

    let mut tasks = Vec::new();
    // A publisher that gives up (no router answered the greeting) stops the process.
    let (failed_tx, mut failed_rx) = tokio::sync::mpsc::channel::<String>(1);
    if !config.message_bus_servers.is_empty() {
        let (client, connected) =
            nats::connect(&config.message_bus_servers, config.nats_tls.as_ref()).await?;
        let publisher = nats::run(
            client,
            connected,
            active_rx.clone(),
            shutdown_rx.clone(),
            config.unregistration_message_limit,
            nats::GreetSettings {
                retry_interval: config.router_greet_retry_interval,
                max_attempts: nats::MAX_GREET_ATTEMPTS,
            },
            metrics.clone(),
        );
        let failed_tx = failed_tx.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = publisher.await {
                let _ = failed_tx.send(e.to_string()).await;
            }
        }));
    }
    if let Some(api) = &config.routing_api {
        if !api.api_url.is_empty() {
            let client = routing_api::build_client(api)?;
            tasks.push(tokio::spawn(routing_api::run(
                client,
                api.max_ttl,
                active_rx.clone(),
                shutdown_rx.clone(),
                metrics.clone(),
            )));
        }
    }
    let has_nats = !config.message_bus_servers.is_empty();
    let has_api = config
        .routing_api
        .as_ref()
        .is_some_and(|a| !a.api_url.is_empty());
    tokio::spawn(report_unpublishable(active_rx.clone(), has_nats, has_api));
    tracing::info!(routes = static_count, "Route Registrar.Running");

    let failed = tokio::select! {
        signalled = wait_for_signal() => {
            signalled?;
            tracing::info!("Route Registrar.Received signal; shutting down");
            None
        }
        Some(e) = failed_rx.recv() => Some(e),
    };
    let _ = shutdown_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), t).await;
    }
    if let Some(server) = metrics_server {
        server.abort();
    }
    if let Some(e) = failed {
        return Err(e);
    }
    tracing::info!("Route Registrar.Exiting without error");
    Ok(())
}

/// Logs (once per route) routes from dynamic files that no configured publisher can carry:
/// HTTP routes without `message_bus_servers`, Routing API routes without `routing_api`.
async fn report_unpublishable(
    mut active: watch::Receiver<RouteSet>,
    has_nats: bool,
    has_api: bool,
) {
    let mut reported = std::collections::HashSet::new();
    loop {
        let routes = active.borrow_and_update().clone();
        for r in routes.iter() {
            let ok = if nats::is_nats_route(r) {
                has_nats
            } else {
                has_api
            };
            if !ok && reported.insert(r.key()) {
                tracing::error!(route = %r.name, "Route Registrar.route-not-publishable-no-message-bus-or-routing-api");
            }
        }
        if active.changed().await.is_err() {
            return;
        }
    }
}

async fn wait_for_signal() -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
