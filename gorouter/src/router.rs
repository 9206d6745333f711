//! Wiring: the route table, the route sources (NATS, the Routing API), the status listeners and
//! the proxy listener; health; signals and drain (A.12, A.13).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::access_log::AccessLog;
use crate::config::Config;
use crate::nats;
use crate::proxy::listener::{self, Connections, ListenerSettings};
use crate::proxy::{Proxy, ProxySettings};
use crate::registry::{RouteTable, TableSettings};
use crate::routing_api;
use crate::status::{self, Health};

/// How the router stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    Drained,
    Terminated,
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the router until a signal stops it or NATS is lost for good.
pub async fn run(config: Config) -> anyhow::Result<Stopped> {
    let config = Arc::new(config);
    let table = Arc::new(RouteTable::new(TableSettings::from_config(&config)));
    let health = Arc::new(Health::new());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (stop_accepting_tx, stop_accepting_rx) = watch::channel(false);

    // Install signal handlers first so an early signal is not fatal by default.
    let mut sigusr1 = signal(SignalKind::user_defined1()).context("installing SIGUSR1 handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;

    let access_log = if config.access_log.file.is_empty() {
        None
    } else {
        let path = std::path::Path::new(&config.access_log.file);
        let (log, _writer) = AccessLog::open(path)
            .with_context(|| format!("cannot open access_log.file {}", path.display()))?;
        Some(log)
    };

    let status_ip =
        config.status.host.parse().with_context(|| {
            format!("status.host {:?} is not an IP address", config.status.host)
        })?;
    let health_listener = bind(SocketAddr::new(status_ip, config.status.port), "/health").await?;
    let routes_listener = bind(
        SocketAddr::from(([127, 0, 0, 1], config.status.routes.port)),
        "/routes",
    )
    .await?;
    let proxy_listener = bind(SocketAddr::new(config.bind_address, config.port), "HTTP").await?;

    let router_id = format!("{}-{}", config.index, uuid::Uuid::new_v4());
    // With `nats.hosts: []` (allowed only with a Routing API) no NATS connection is made and
    // the pruner runs on its own, never suspended.
    let (mut nats_task, _pruner) = if config.nats.hosts.is_empty() {
        tracing::info!("nats-disabled: no nats.hosts; routes come from the Routing API only");
        let pruner =
            nats::spawn_pruner_without_nats(table.clone(), config.prune_stale_droplets_interval);
        (None, Some(AbortOnDrop(pruner)))
    } else {
        let task = nats::start(
            config.clone(),
            table.clone(),
            router_id.clone(),
            shutdown_rx.clone(),
        )
        .await
        .context("cannot connect to NATS")?;
        (Some(task), None)
    };
    let _route_fetcher = if config.routing_api.enabled() {
        let task = routing_api::start(&config, table.clone(), shutdown_rx.clone())
            .context("cannot set up the Routing API client")?;
        Some(AbortOnDrop(task))
    } else {
        None
    };

    tokio::spawn(status::serve_health(
        health_listener,
        health.clone(),
        shutdown_rx.clone(),
    ));
    tokio::spawn(status::serve_routes(
        routes_listener,
        table.clone(),
        config.status.user.clone(),
        config.status.pass.clone(),
        shutdown_rx.clone(),
    ));

    let proxy = Arc::new(Proxy {
        table: table.clone(),
        settings: ProxySettings::from_config(&config),
        health: health.clone(),
        access_log,
    });
    let connections = Arc::new(Connections::new());
    let listener_settings = ListenerSettings {
        idle_timeout: config.frontend_idle_timeout,
        max_header_bytes: config.max_header_bytes,
    };
    let start_delay = config.start_response_delay_interval;
    let proxy_port = config.port;
    {
        let health = health.clone();
        let connections = connections.clone();
        tokio::spawn(async move {
            // Give route emitters time to register before serving (A.12).
            tokio::time::sleep(start_delay).await;
            health.set_healthy();
            tracing::info!(port = proxy_port, "gorouter.started");
            listener::serve(
                proxy_listener,
                proxy,
                listener_settings,
                connections,
                stop_accepting_rx,
            )
            .await;
        });
    }
    tracing::info!(id = %router_id, "gorouter.starting");

    let stopped = tokio::select! {
        _ = sigusr1.recv() => {
            tracing::info!(drain_wait = ?config.drain_wait, "gorouter.draining");
            health.degrade();
            tokio::time::sleep(config.drain_wait).await;
            stop_accepting_tx.send_replace(true);
            connections.close_all();
            if !connections.wait_closed(config.drain_timeout).await {
                tracing::error!(open = connections.active(), "gorouter.drain-timeout");
            }
            Stopped::Drained
        }
        _ = sigterm.recv() => Stopped::Terminated,
        _ = sigint.recv() => Stopped::Terminated,
        result = async {
            match nats_task.as_mut() {
                Some(task) => task.await,
                None => std::future::pending().await,
            }
        } => {
            let err = match result {
                Ok(Ok(())) => anyhow::anyhow!("NATS subscriber stopped unexpectedly"),
                Ok(Err(e)) => e,
                Err(e) => anyhow::anyhow!("NATS subscriber task failed: {e}"),
            };
            return Err(err.context("NATS connection closed"));
        }
    };
    if stopped == Stopped::Terminated {
        health.degrade();
        stop_accepting_tx.send_replace(true);
        connections.close_all();
        connections
            .wait_closed(std::time::Duration::from_millis(500))
            .await;
    }
    shutdown_tx.send_replace(true);
    if let Some(task) = nats_task {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), task).await;
    }
    tracing::info!(?stopped, "gorouter.exited");
    Ok(stopped)
}
