//! The process lifecycle (B.9): UAA's issuer and token key (fatal if unavailable, before the
//! lock is ever taken), then the lock, then migrations, seeding, listeners, self-registration
//! and the expiry pruner; a failure in any step after the lock releases it before exiting; on
//! SIGTERM the streams close, the own route is removed and the lock released; on a lost lock
//! every connection is cut at once and the process exits non-zero. `/metrics` (the
//! `prometheus` port) is served from before the lock is taken until the process exits, so a
//! standby is scraped too. This module only orders those steps: the pieces live in
//! [`crate::lock`], [`crate::seeds`], [`crate::server`], [`crate::tls`], [`crate::admin`],
//! [`crate::background`] and [`crate::prometheus`].

use std::net::SocketAddr;
use std::sync::Arc;

use routing_api_client::EventAction;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::api::Api;
use crate::auth::{TokenValidator, UaaConfig};
use crate::background::{own_route, prune_expired, register_own_route};
use crate::config::{Config, Database};
use crate::database::store_config;
use crate::events::Hubs;
use crate::lock;
use crate::metrics::{self, Metrics, StatsdConfig};
use crate::prometheus::{spawn_route_counter, ApiMetrics};
use crate::server;
use crate::store::{DbKind, Store};

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

/// Runs until SIGTERM/SIGINT (Ok) or until the lock is lost (Err). Every failure is logged
/// here, under upstream's name for the step that failed.
pub async fn run(config: Config, ip: String) -> anyhow::Result<()> {
    let mut sigterm = signal(SignalKind::terminate())
        .map_err(|e| failed("routing-api.installing-signal-handler-failed", e))?;
    let mut sigint = signal(SignalKind::interrupt())
        .map_err(|e| failed("routing-api.installing-signal-handler-failed", e))?;

    let store_config = store_config(&config);
    match store_config.kind {
        DbKind::Mysql | DbKind::Postgres => tracing::info!(
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
    if config.skip_ssl_validation
        && matches!(
            config.database,
            Database::Mysql { .. } | Database::Postgres { .. }
        )
        && !config.sqldb.skip_ssl_validation
    {
        // Upstream's top-level key also turned off the database's certificate checks; ours
        // does not.
        tracing::warn!(
            "routing-api.skip-ssl-validation-applies-to-uaa-only: MySQL/PostgreSQL certificates \
             are still checked; set sqldb.skip_ssl_validation to skip them"
        );
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
            allow_plain_http: config.oauth.allow_plain_http,
        })
        .await
        .map_err(|e| failed("routing-api.creating-uaa-client", e))?
    };

    // `/metrics` is the exception to the rule below: a standby's metrics (its token checks,
    // its zero subscriptions) are worth scraping, and a scrape target that is down whenever
    // the instance is a standby would only raise false alarms. It stops when `run` returns.
    let prometheus = Arc::new(ApiMetrics::default());
    let (_metrics_server_stop, metrics_server_stopped) = watch::channel(());
    if let Some(endpoint) = &config.prometheus {
        let server = prometheus_endpoint::MetricsServer::bind(endpoint)
            .await
            .map_err(|e| failed("routing-api.prometheus.failed-to-listen", e))?;
        let addr = server
            .local_addr()
            .map_err(|e| failed("routing-api.prometheus.failed-to-listen", e))?;
        tracing::info!(%addr, mutual_tls = endpoint.tls.is_some(), "routing-api.prometheus.serving");
        let registry = Arc::new(prometheus.registry(&auth));
        let mut stopped = metrics_server_stopped.clone();
        tokio::spawn(server.serve(registry, async move {
            // Ends when the sender (held by `run`) is dropped.
            while stopped.changed().await.is_ok() {}
        }));
    }

    // Nothing else is served, not even bound, until the lock is held.
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
    let (cut_tx, cut_rx) = watch::channel(false);
    let stop = server::Stop {
        closing: closing_rx.clone(),
        cut: cut_rx,
    };
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
        prometheus: prometheus.clone(),
    });

    // If anything fails from here to serving, release the lock before exiting: a standby (or
    // this instance restarted) must not wait for the TTL of a lock nobody holds any more.
    let startup = async {
        tracing::info!("routing-api.migration.starting-migration");
        store
            .migrate()
            .await
            .map_err(|e| failed("routing-api.migration.migrations-failed", e))?;
        tracing::info!("routing-api.migration.finished-migration");
        let seeds = crate::seeds::router_groups(&config);
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
            tokio::spawn(server::serve_http(l, api.clone(), stop.clone()));
        }
        if config.mtls_enabled() {
            let acceptor = crate::tls::mtls_acceptor(
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
            tokio::spawn(server::serve_mtls(l, acceptor, api.clone(), stop.clone()));
        } else {
            tracing::info!("routing-api.mtls-listener-off-no-api-mtls-files");
        }
        let admin = bind(
            SocketAddr::from(([127, 0, 0, 1], config.admin_port)),
            "admin",
        )
        .await?;
        tokio::spawn(crate::admin::serve_admin(
            admin,
            store.clone(),
            closing_rx.clone(),
        ));
        anyhow::Ok(())
    };
    // A lock lost during startup (a slow migration while refreshes fail) stops it before
    // anything is served.
    let startup = tokio::select! {
        r = startup => r,
        reason = held.lost() => Err(failed("routing-api.locket-lock.lost-lock", &reason)),
    };
    if let Err(e) = startup {
        cut_tx.send_replace(true);
        closing_tx.send_replace(true);
        held.release().await;
        metrics.close().await;
        return Err(e);
    }

    if config.prometheus.is_some() {
        // Counted before the own route is registered: its creation is then a `+1`.
        prometheus.count_routes(&store).await;
        spawn_route_counter(
            prometheus.clone(),
            store.clone(),
            config.metrics_reporting_interval,
            closing_rx.clone(),
        );
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
        prometheus.clone(),
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
    if outcome.is_err() {
        // A peer may take the lock soon: cut every connection now, requests in flight
        // included, rather than answer anything more.
        cut_tx.send_replace(true);
    }
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
