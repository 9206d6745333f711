//! The process lifecycle (B.9): UAA's issuer and token key (fatal if unavailable, before the
//! lock is ever taken), then the lock, then migrations, seeding, listeners, self-registration
//! and the expiry pruner; a failure in any step after the lock releases it before exiting; on
//! SIGTERM the streams close, the own route is removed and the lock released; on a lost lock
//! the process stops serving and exits non-zero.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use routing_api_client::{EventAction, HttpRoute, RouterGroup};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::api::Api;
use crate::auth::{TokenValidator, UaaConfig};
use crate::config::{Config, Database};
use crate::events::Hubs;
use crate::lock;
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
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

/// The routing API's own route, `api.<system_domain>/routing`.
fn own_route(config: &Config, ip: IpAddr) -> HttpRoute {
    HttpRoute {
        route: format!("api.{}/routing", config.system_domain),
        port: if config.api.http_enabled {
            config.api.listen_port
        } else {
            config.api.mtls_listen_port
        },
        ip: ip.to_string(),
        ttl: Some(config.max_ttl.as_secs() as i64),
        log_guid: config.log_guid.clone(),
        ..HttpRoute::default()
    }
}

/// Runs until SIGTERM/SIGINT (Ok) or until the lock is lost (Err).
pub async fn run(config: Config, ip: IpAddr) -> anyhow::Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;

    let store = Store::connect(&store_config(&config))
        .await
        .context("cannot connect to the database")?;

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
        .context("cannot get UAA's token key")?
    };

    // Nothing is served, not even bound, until the lock is held.
    tracing::info!(key = %config.lock_resource_key, owner = %config.uuid, "routing-api.acquiring-lock");
    let mut held = tokio::select! {
        held = lock::acquire(&config) => held.context("cannot take part in the lock")?,
        _ = sigterm.recv() => return Ok(()),
        _ = sigint.recv() => return Ok(()),
    };
    tracing::info!(key = %config.lock_resource_key, "routing-api.lock-acquired");

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
    });

    // If anything fails from here to serving, release the lock before exiting: a standby (or
    // this instance restarted) must not wait for the TTL of a lock nobody holds any more.
    let startup: anyhow::Result<()> = async {
        store.migrate().await.context("database migration failed")?;
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
            .context("cannot seed router groups")?;

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
            .context("mutual TLS listener")?;
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
            tracing::warn!("api.mtls_* files not set: the mutual TLS listener is off");
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
        return Err(e);
    }

    let own = own_route(&config, ip);
    tokio::spawn(register_own_route(
        api.clone(),
        own.clone(),
        config.max_ttl,
        closing_rx.clone(),
    ));
    tokio::spawn(prune_expired(
        store.clone(),
        hubs.clone(),
        closing_rx.clone(),
    ));
    tracing::info!(
        http = config.api.http_enabled.then_some(config.api.listen_port),
        mtls = config.mtls_enabled().then_some(config.api.mtls_listen_port),
        "routing-api.started"
    );

    let outcome = tokio::select! {
        _ = sigterm.recv() => Ok(()),
        _ = sigint.recv() => Ok(()),
        reason = held.lost() => Err(reason),
    };
    closing_tx.send_replace(true);
    match outcome {
        Ok(()) => {
            if let Ok(Some(deleted)) = store.delete_http_route(&own).await {
                hubs.http.publish(EventAction::Delete, &deleted);
            }
            held.release().await;
            tracing::info!("routing-api.exited");
            Ok(())
        }
        Err(reason) => {
            tracing::error!(reason = %reason, "routing-api.lock-lost");
            tokio::time::sleep(config.retry_interval).await;
            anyhow::bail!("lost the lock {}: {reason}", config.lock_resource_key)
        }
    }
}

/// Registers the API's own route and refreshes it every `max_ttl / 2`.
async fn register_own_route(
    api: Arc<Api>,
    route: HttpRoute,
    ttl: Duration,
    mut closing: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval((ttl / 2).max(Duration::from_secs(1)));
    loop {
        tokio::select! {
            _ = closing.wait_for(|c| *c) => return,
            _ = tick.tick() => {}
        }
        match api.store.upsert_http_route(&route, ttl).await {
            Ok((stored, _)) => api.hubs.http.publish(EventAction::Upsert, &stored),
            Err(e) => tracing::warn!(error = %e, "own-route-registration-failed"),
        }
    }
}

/// Deletes expired routes every 10 s, with a `Delete` event for each.
async fn prune_expired(store: Store, hubs: Hubs, mut closing: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PRUNE_INTERVAL);
    loop {
        tokio::select! {
            _ = closing.wait_for(|c| *c) => return,
            _ = tick.tick() => {}
        }
        match store.prune_expired().await {
            Ok((http, tcp)) => {
                for r in &http {
                    hubs.http.publish(EventAction::Delete, r);
                }
                for m in &tcp {
                    hubs.tcp.publish(EventAction::Delete, m);
                }
                if !http.is_empty() || !tcp.is_empty() {
                    tracing::info!(http = http.len(), tcp = tcp.len(), "pruned-expired-routes");
                }
            }
            Err(e) => tracing::warn!(error = %e, "prune-failed"),
        }
    }
}
