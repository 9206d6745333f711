//! Wiring: the health port, the Routing API client (UAA tokens or none, mutual TLS), the
//! router-group port check, the route source, the listeners on one worker thread per CPU;
//! signals and drain. The control plane (route source, health port, signals) runs on the
//! caller's runtime, the data path on the workers ([`RuntimeThreads`]).
//!
//! - SIGUSR1 drains: `/health` turns 503, after `drain_wait` the listeners close, and the
//!   process exits once the open connections have finished (SIGTERM cuts that short).
//! - SIGTERM / SIGINT stop at once.
//! - A background task that stops early (route source, health port, listener retries) stops
//!   the router with [`RunError::TaskDied`] ([`crate::supervise`]).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use routing_api_client::{ClientConfig, RoutingApiClient, TokenFetcher, UaaConfig, UaaError};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::config::{Config, Flags};
use crate::forward::{BufferBudget, ConnTracker, ForwardSettings, Global};
use crate::health::{self, Health};
use crate::listeners::Listeners;
use crate::metrics::Metrics;
use crate::routes::source::{RouteSource, SourceSettings};
use crate::routes::RoutingTable;
use crate::supervise::{Supervisor, TaskDied};
use process_setup::runtime_threads::{self, RuntimeThreads};
use prometheus_endpoint::MetricsServer;
use routing_api_client::ports::parse_port_list;

/// How the router stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    Drained,
    Terminated,
}

/// Why the router could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen for /health on {addr}: {source}")]
    HealthListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("routing API client: {0}")]
    Client(#[from] routing_api_client::ClientError),
    #[error("UAA client: {0}")]
    Uaa(#[from] UaaError),
    #[error("router group ports conflict with reserved_system_component_ports: {0}")]
    PortConflict(String),
    #[error("cannot install the {0} handler: {1}")]
    Signal(&'static str, std::io::Error),
    #[error("cannot start the worker threads: {0}")]
    Workers(std::io::Error),
    #[error("{0}; exiting rather than serving a routing table nobody updates")]
    TaskDied(#[from] TaskDied),
    #[error(transparent)]
    Metrics(#[from] prometheus_endpoint::ServeError),
}

/// How often listeners that could not be opened are tried again.
const LISTENER_RETRY: Duration = Duration::from_millis(500);

/// Builds the Routing API client from the config and flags.
pub fn routing_api_client(config: &Config, flags: &Flags) -> Result<RoutingApiClient, RunError> {
    let api = &config.routing_api;
    let tokens = match &api.oauth {
        Some(o) => {
            let mut uaa = UaaConfig::new(&o.url, &o.client_name, &o.client_secret);
            uaa.tls = o.tls.clone();
            uaa.max_retries = flags.token_fetch_max_retries;
            uaa.retry_interval = flags.token_fetch_retry_interval;
            uaa.expiration_buffer = flags.token_fetch_expiration_buffer;
            Some(Arc::new(TokenFetcher::new(uaa)?))
        }
        None => None,
    };
    let mut cc = ClientConfig::new(&api.url);
    cc.tls = api.tls.clone();
    Ok(RoutingApiClient::new(cc, tokens)?)
}

/// Compares the TCP router groups' reservable ports with the reserved system component ports;
/// conflicts are logged, and fatal when `fail` is set.
async fn check_router_group_ports(
    client: &RoutingApiClient,
    reserved: &[u16],
    fail: bool,
) -> Result<(), RunError> {
    let reserved: BTreeSet<u16> = reserved.iter().copied().collect();
    let mut groups = None;
    for attempt in 1..=3 {
        match client.router_groups().await {
            Ok(g) => {
                groups = Some(g);
                break;
            }
            Err(e) => {
                tracing::warn!(attempt, error = %e, "tcp-router.router-group-port-checker-error");
                if attempt < 3 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
    let Some(groups) = groups else {
        tracing::warn!("tcp-router.router-group-port-checker-error");
        return Ok(());
    };
    let mut conflicts = Vec::new();
    for g in groups.iter().filter(|g| g.kind == "tcp") {
        match parse_port_list(&g.reservable_ports) {
            Ok(ports) => {
                let clash: Vec<u16> = ports
                    .into_iter()
                    .filter(|p| reserved.contains(p))
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                if !clash.is_empty() {
                    tracing::error!(router_group = %g.name, ports = ?clash, "tcp-router.router-group-port-checker-failure");
                    conflicts.push(format!("{}: {:?}", g.name, clash));
                }
            }
            Err(e) => {
                tracing::warn!(router_group = %g.name, reservable_ports = %g.reservable_ports, error = %e, "tcp-router.router-group-port-checker-error")
            }
        }
    }
    if !conflicts.is_empty() && fail {
        return Err(RunError::PortConflict(conflicts.join("; ")));
    }
    Ok(())
}

/// Raises the open-files limit so `max_connections` (two sockets each) fit, as HAProxy does
/// from `maxconn`.
fn raise_fd_limit(max_connections: usize) {
    let want = (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(1024);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur >= want {
            return;
        }
        let target = want.min(lim.rlim_max);
        if target > lim.rlim_cur {
            let new = libc::rlimit {
                rlim_cur: target,
                rlim_max: lim.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &new);
        }
        if target < want {
            tracing::warn!(
                limit = target,
                wanted = want,
                "open files limit is below what max_connections needs"
            );
        }
    }
}

/// Runs the router until a signal stops it.
pub async fn run(config: Config, flags: Flags) -> Result<Stopped, RunError> {
    let mut sigusr1 =
        signal(SignalKind::user_defined1()).map_err(|e| RunError::Signal("SIGUSR1", e))?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| RunError::Signal("SIGTERM", e))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| RunError::Signal("SIGINT", e))?;

    raise_fd_limit(config.max_connections);
    let health_addr = SocketAddr::new(config.bind_address, config.health_check_port);
    let health_listener =
        TcpListener::bind(health_addr)
            .await
            .map_err(|source| RunError::HealthListen {
                addr: health_addr,
                source,
            })?;
    let metrics_server = match &config.prometheus {
        Some(endpoint) => Some(MetricsServer::bind(endpoint).await?),
        None => None,
    };

    let client = routing_api_client(&config, &flags)?;
    if !config.isolation_segments.is_empty() {
        tracing::info!(isolation_segments = ?config.isolation_segments, "tcp-router.retrieved-isolation-segments");
    }
    let fail_on_conflicts = config.fail_on_router_port_conflicts || flags.routing_group_check_exit;
    if fail_on_conflicts {
        // Fatal conflicts must stop the router before it serves anything.
        check_router_group_ports(&client, &config.reserved_system_component_ports, true).await?;
    } else {
        // Only reported: do not hold up the start for it.
        let client = client.clone();
        let reserved = config.reserved_system_component_ports.clone();
        tokio::spawn(async move {
            let _ = check_router_group_ports(&client, &reserved, false).await;
        });
    }

    let metrics = Arc::new(Metrics::default());
    let global = Arc::new(Global {
        settings: ForwardSettings {
            connect_timeout: config.connect_timeout,
            idle_timeout: config.idle_timeout,
            backend_tls: config.backend_tls.as_ref().map(|b| b.client_config.clone()),
        },
        tracker: ConnTracker::new(config.max_connections),
        metrics: metrics.clone(),
        tls_buffers: Arc::new(BufferBudget::new(
            config.backend_tls_buffer_budget,
            metrics.clone(),
        )),
    });
    let health = Arc::new(Health::new());
    let registry = {
        let (global, health) = (global.clone(), health.clone());
        Arc::new(metrics.registry(
            move || global.tracker.open() as u64,
            move || health.is_draining(),
        ))
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let mut supervisor = Supervisor::new();
    supervisor.spawn(
        "health-server",
        health::serve(
            health_listener,
            health.clone(),
            registry.clone(),
            shutdown_rx.clone(),
        ),
    );
    if let Some(server) = metrics_server {
        match server.local_addr() {
            Ok(addr) => tracing::info!(%addr, "tcp-router.prometheus.serving"),
            Err(e) => tracing::warn!(error = %e, "tcp-router.prometheus.no-local-address"),
        }
        let mut shutdown = shutdown_rx.clone();
        supervisor.spawn(
            "metrics-server",
            server.serve(registry.clone(), async move {
                let _ = shutdown.wait_for(|s| *s).await;
            }),
        );
    }

    let workers = runtime_threads::per_core_count();
    let shortest_timeout = config
        .idle_timeout
        .map_or(config.connect_timeout, |i| i.min(config.connect_timeout));
    let tick = runtime_threads::tick_for(shortest_timeout);
    let workers =
        RuntimeThreads::start("tcp-worker", workers, Some(tick)).map_err(RunError::Workers)?;
    let listeners = Arc::new(Listeners::new(
        global.clone(),
        workers,
        &config.reserved_system_component_ports,
        config.bind_address,
    ));
    let publish = {
        let listeners = listeners.clone();
        move |changes| listeners.update(changes)
    };
    let source = RouteSource::new(
        client,
        SourceSettings {
            sync_interval: flags.sync_interval,
            subscription_retry_interval: flags.subscription_retry_interval,
            stale_route_check_interval: flags.stale_route_check_interval,
            backend_tls: config.backend_tls.is_some(),
        },
        RoutingTable::new(flags.default_route_expiry),
        publish,
        metrics.clone(),
    );
    supervisor.spawn("route-source", source.run(shutdown_rx.clone()));
    {
        let listeners = listeners.clone();
        let mut shutdown = shutdown_rx.clone();
        supervisor.spawn("listener-retry", async move {
            let mut tick = tokio::time::interval(LISTENER_RETRY);
            loop {
                tokio::select! {
                    _ = shutdown.wait_for(|s| *s) => return,
                    _ = tick.tick() => listeners.retry_failed(),
                }
            }
        });
    }
    tracing::info!(
        health_port = config.health_check_port,
        routing_api = %config.routing_api.url,
        "tcp-router.started"
    );

    let stopped = tokio::select! {
        died = supervisor.died() => Err(died),
        _ = sigusr1.recv() => {
            tracing::info!(drain_wait = ?config.drain_wait, "tcp-router.draining");
            health.start_draining();
            let drained = async {
                tokio::time::sleep(config.drain_wait).await;
                listeners.stop_accepting();
                tracing::info!(open = global.tracker.open(), "tcp-router.drain-waiting-for-connections");
                global.tracker.wait_idle().await;
            };
            tokio::select! {
                _ = drained => Ok(Stopped::Drained),
                died = supervisor.died() => Err(died),
                _ = sigterm.recv() => Ok(Stopped::Terminated),
                _ = sigint.recv() => Ok(Stopped::Terminated),
            }
        }
        _ = sigterm.recv() => Ok(Stopped::Terminated),
        _ = sigint.recv() => Ok(Stopped::Terminated),
    };
    health.start_draining();
    listeners.stop_accepting();
    shutdown_tx.send_replace(true);
    let stopped = match stopped {
        Ok(s) => s,
        Err(died) => {
            // Serving on with a frozen table (or no health port) would hide the failure.
            tracing::error!(task = died.task, reason = %died.reason, "tcp-router.background-task-died");
            supervisor.abort_all();
            return Err(RunError::TaskDied(died));
        }
    };
    supervisor.wait_stopped(Duration::from_secs(2)).await;
    tracing::info!(?stopped, open = global.tracker.open(), "tcp-router.exited");
    Ok(stopped)
}
