//! The process lifecycle (B.9): UAA's issuer and token key (fatal if unavailable, before the
//! lock is ever taken), then the lock, then migrations, seeding, listeners, self-registration
//! and the expiry pruner; a failure in any step after the lock releases it before exiting; on
//! SIGTERM the streams close, the own route is removed and the lock released; on a lost lock
//! the process stops serving and exits non-zero.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use routing_api_client::{EventAction, HttpRoute, RouterGroup};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::api::Api;
use crate::auth::{TokenValidator, UaaConfig};
use crate::config::{Config, Database};
use crate::events::Hubs;
use crate::lock;
use crate::metrics::{self, Kind, Metrics, StatsdConfig};
use crate::server;
use crate::store::{DbKind, Store, StoreConfig};

/// How often expired routes are deleted (B.5).
const PRUNE_INTERVAL: Duration = Duration::from_secs(10);

/// The store settings for the configured database.
pub fn store_config(config: &Config) -> StoreConfig {
    let mut sc = StoreConfig::default();
    match &config.database {
        Database::Mysql {
            host,
            port,
            schema,
            username,
            password,
        } => {
            sc.kind = DbKind::Mysql;
            sc.host = host.clone();
            sc.port = *port;
            sc.schema = schema.clone();
            sc.username = username.clone();
            sc.password = password.clone();
        }
        Database::Sqlite { path } => {
            sc.kind = DbKind::Sqlite;
            sc.sqlite_path = path.clone();
        }
    }
    sc.ca_cert = (!config.sqldb.ca_cert.is_empty()).then(|| config.sqldb.ca_cert.clone());
    sc.skip_ssl_validation = config.skip_ssl_validation;
    sc.skip_hostname_validation = config.sqldb.skip_hostname_validation;
    sc.max_open_connections = config.sqldb.max_open_connections;
    sc.max_idle_connections = config.sqldb.max_idle_connections;
    sc.connections_max_lifetime =
        Duration::from_secs(config.sqldb.connections_max_lifetime_seconds);
    sc
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        failed(
            "routing-api.failed-to-listen",
            format!("cannot listen for {what} on {addr}: {e}"),
        )
    })
}

/// Logs a failure under upstream's message name (what operators' alerts and upstream's suites
/// wait for) and returns it, so that `main` only has to choose the exit code.
fn failed(message: &str, error: impl std::fmt::Display) -> anyhow::Error {
    tracing::error!(error = %error, "{message}");
    anyhow::anyhow!("{message}: {error}")
}

/// The routing API's own route, `api.<system_domain>/routing`. `ip` is the `-ip` flag as given
/// (upstream takes it as text too).
fn own_route(config: &Config, ip: &str) -> HttpRoute {
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

/// Runs until SIGTERM/SIGINT (Ok) or until the lock is lost (Err). Every failure is logged
/// here, under upstream's name for the step that failed.
pub async fn run(config: Config, ip: String) -> anyhow::Result<()> {
    let mut sigterm = signal(SignalKind::terminate())
        .map_err(|e| failed("routing-api.installing-signal-handler-failed", e))?;
    let mut sigint = signal(SignalKind::interrupt())
        .map_err(|e| failed("routing-api.installing-signal-handler-failed", e))?;

    let store_config = store_config(&config);
    match store_config.kind {
        DbKind::Mysql => tracing::info!(
            r#type = store_config.kind.name(),
            host = %store_config.host,
            port = store_config.port,
            schema = %store_config.schema,
            "routing-api.database"
        ),
        DbKind::Sqlite => tracing::info!(
            r#type = store_config.kind.name(),
            path = %store_config.sqlite_path.display(),
            "routing-api.database"
        ),
    }
    let store = Store::connect(&store_config)
        .await
        .map_err(|e| failed("routing-api.failed-initialize-sql-connection", e))?;

    // The statsd client comes next, as upstream's: an endpoint that does not resolve stops
    // the process here.
    let metrics = Metrics::start(&StatsdConfig {
        endpoint: config.statsd_endpoint.clone(),
        flush_interval: config.statsd_client_flush_interval,
    })
    .await
    .map_err(|e| failed("routing-api.failed-to-create-statsd-client", e))?;
    if !metrics.is_enabled() {
        tracing::info!("routing-api.metrics.no-statsd-endpoint-metrics-off");
    }

    // UAA's issuer and key first, as upstream does: an instance that cannot check tokens
    // exits before it ever takes the lock.
    let auth = if config.auth_disabled {
        tracing::warn!(
            "token checks are disabled (-devMode / auth_disabled): every request is allowed"
        );
        TokenValidator::disabled()
    } else {
        TokenValidator::discover(&UaaConfig {
            token_endpoint: config.oauth.token_endpoint.clone(),
            port: config.oauth.port,
            ca_certs_path: (!config.oauth.ca_certs.is_empty())
                .then(|| config.oauth.ca_certs.clone().into()),
            skip_ssl_validation: config.skip_ssl_validation,
        })
        .await
        .map_err(|e| failed("routing-api.creating-uaa-client", e))?
    };

    // Nothing is served, not even bound, until the lock is held.
    tracing::info!(
        lock = %config.lock_resource_key,
        owner = %config.uuid,
        ttl_in_seconds = locket::runner::DEFAULT_TTL.as_secs(),
        "routing-api.locket-lock.started"
    );
    let mut held = tokio::select! {
        held = lock::acquire(&config) => held.map_err(|e| failed("routing-api.locket-lock.failed-to-acquire-lock", format!("{e:#}")))?,
        _ = sigterm.recv() => return Ok(()),
        _ = sigint.recv() => return Ok(()),
    };
    tracing::info!(lock = %config.lock_resource_key, "routing-api.locket-lock.acquired-lock");

    let (closing_tx, closing_rx) = watch::channel(false);
    let hubs = Hubs::default();
    let api = Arc::new(Api {
        store: store.clone(),
        auth,
        hubs: hubs.clone(),
        max_ttl: config.max_ttl,
        reserved_ports: config.reserved_system_component_ports.clone(),
        fail_on_router_port_conflicts: config.fail_on_router_port_conflicts,
        closing: closing_rx.clone(),
        metrics: metrics.clone(),
    });

    // If anything fails from here to serving, release the lock before exiting: a standby (or
    // this instance restarted) must not wait for the TTL of a lock nobody holds any more.
    let startup: anyhow::Result<()> = async {
        tracing::info!("routing-api.migration.starting-migration");
        store
            .migrate()
            .await
            .map_err(|e| failed("routing-api.migration.migrations-failed", e))?;
        tracing::info!("routing-api.migration.finished-migration");
        let seeds: Vec<RouterGroup> = config
            .router_groups
            .iter()
            .map(|g| RouterGroup {
                guid: uuid::Uuid::new_v4().to_string(),
                name: g.name.clone(),
                kind: g.kind.clone(),
                reservable_ports: g.reservable_ports.clone(),
            })
            .collect();
        store
            .seed_router_groups(&seeds)
            .await
            .map_err(|e| failed("routing-api.seeding.failed-to-save-router-group", e))?;

        let bind_ip = config.bind_address;
        if config.api.http_enabled {
            let l = bind(
                SocketAddr::new(bind_ip, config.api.listen_port),
                "the HTTP API",
            )
            .await?;
            tokio::spawn(server::serve_http(l, api.clone(), closing_rx.clone()));
        }
        if config.mtls_enabled() {
            let acceptor = server::mtls_acceptor(
                config.api.mtls_server_cert_file.as_ref(),
                config.api.mtls_server_key_file.as_ref(),
                config.api.mtls_client_ca_file.as_ref(),
            )
            .map_err(|e| failed("routing-api.mtls-mis-configured", format!("{e:#}")))?;
            let l = bind(
                SocketAddr::new(bind_ip, config.api.mtls_listen_port),
                "the mTLS API",
            )
            .await?;
            tokio::spawn(server::serve_mtls(
                l,
                acceptor,
                api.clone(),
                closing_rx.clone(),
            ));
        } else {
            tracing::info!("routing-api.mtls-listener-off-no-api-mtls-files");
        }
        let admin = bind(
            SocketAddr::from(([127, 0, 0, 1], config.admin_port)),
            "admin",
        )
        .await?;
        tokio::spawn(server::serve_admin(
            admin,
            store.clone(),
            closing_rx.clone(),
        ));
        Ok(())
    }
    .await;
    if let Err(e) = startup {
        closing_tx.send_replace(true);
        held.release().await;
        metrics.close().await;
        return Err(e);
    }

    let own = own_route(&config, &ip);
    tokio::spawn(register_own_route(
        api.clone(),
        own.clone(),
        config.max_ttl,
        closing_rx.clone(),
    ));
    metrics::spawn_reporter(
        metrics.clone(),
        store.clone(),
        api.auth.clone(),
        config.metrics_reporting_interval,
        closing_rx.clone(),
    );
    tokio::spawn(prune_expired(
        store.clone(),
        hubs.clone(),
        metrics.clone(),
        closing_rx.clone(),
    ));
    tracing::info!(
        port = config.api.listen_port,
        http = config.api.http_enabled,
        mtls_port = config.mtls_enabled().then_some(config.api.mtls_listen_port),
        "routing-api.started"
    );

    let outcome = tokio::select! {
        _ = sigterm.recv() => Ok("terminated"),
        _ = sigint.recv() => Ok("interrupt"),
        reason = held.lost() => Err(reason),
    };
    closing_tx.send_replace(true);
    match outcome {
        Ok(signal) => {
            tracing::info!(signal, "routing-api.received-signal");
            if let Ok(Some(deleted)) = store.delete_http_route(&own).await {
                hubs.http.publish(EventAction::Delete, &deleted);
            }
            held.release().await;
            metrics.close().await;
            tracing::info!("routing-api.exited");
            Ok(())
        }
        Err(reason) => {
            let error = failed("routing-api.locket-lock.lost-lock", &reason);
            metrics.close().await;
            tokio::time::sleep(config.retry_interval).await;
            Err(error)
        }
    }
}

/// Registers the API's own route and refreshes it every `max_ttl / 2`. The first registration
/// is not counted in the route gauge's deltas (upstream registers before its metrics reporter
/// subscribes to changes; the periodic total includes the route); refreshes are (`+0`, or `+1`
/// if the route had been pruned meanwhile).
async fn register_own_route(
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
                registered = true;
                api.hubs.http.publish(EventAction::Upsert, &stored)
            }
            Err(e) => tracing::error!(error = %e, "routing-api.route-register.registration-error"),
        }
    }
}

/// Deletes expired routes every 10 s, with a `Delete` event and a `-1` route gauge delta for
/// each.
async fn prune_expired(
    store: Store,
    hubs: Hubs,
    metrics: Metrics,
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
                    hubs.http.publish(EventAction::Delete, r);
                }
                for m in &tcp {
                    metrics.route_removed(Kind::Tcp);
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
