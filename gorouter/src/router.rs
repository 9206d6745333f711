//! Wiring: the route table, the route sources (NATS, the Routing API), the status listeners and
//! the proxy listener; health; signals and drain (A.12, A.13).
//!
//! Start-up follows upstream's main.go, with its log messages: `starting`,
//! `retrieved-isolation-segments`, `setting-up-nats-connection` (then the NATS client's
//! `Successfully-connected-to-nats` or the fatal `nats-connection-error`),
//! `setting-up-routing-api` when the Routing API is on (fatal `initialize-uaa-client` or
//! `routing-api-connection-failed`), the status listeners, and after
//! `start_response_delay_interval` the proxy listener (`tcp-listener-started`) and
//! `gorouter.started`. Stopping logs `gorouter-draining` (SIGUSR1 only), `gorouter.stopping`,
//! `gorouter.stopped` and `gorouter.exited`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::access_log::AccessLog;
use crate::component;
use crate::config::{Config, RouteServicesSettings};
use crate::metrics::{RouterCollector, RouterMetrics};
use crate::nats;
use crate::proxy::error_page::ErrorPage;
use crate::proxy::listener::{self, Connections, ListenerSettings};
use crate::proxy::stages::response_rewrite::ResponseRewrite;
use crate::proxy::transport::{BackendTls, IdleLimits, Transport};
use crate::proxy::{Hairpin, Proxy, ProxySettings, RouteServiceProxying};
use crate::registry::{Endpoint, RouteTable, TableSettings};
use crate::route_service::internal::InternalTls;
use crate::route_service::RouteServices;
use crate::routing_api;
use crate::status::{self, Health};
use crate::task::AbortOnDrop;
use crate::tls::backend::BackendTlsConfigs;
use crate::tls::{self, server::ServerTlsConfig};
use crate::varz::{Identity as VarzIdentity, Varz};
use process_setup::runtime_threads::{self, RuntimeThreads};
use prometheus_endpoint::{MetricsServer, Registry};

/// How the router stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    Drained,
    Terminated,
}

/// A start-up failure that [`run`] has already logged under upstream's message name
/// (`nats-connection-error`, `initialize-uaa-client`, `routing-api-connection-failed`): the
/// process only has to exit 1. Find it with `err.downcast_ref::<FatalLogged>()`.
#[derive(Debug, thiserror::Error)]
#[error("{message}: {error}")]
pub struct FatalLogged {
    pub message: &'static str,
    pub error: String,
}

/// Where a listener binds, as Go's `net.Listen` reads `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenHost {
    /// Empty host: every interface, IPv6 and IPv4.
    All,
    Ip(IpAddr),
    /// A host name, resolved at start (its first address is used).
    Name(String),
}

impl ListenHost {
    /// `""` (or white space) is all interfaces, an IP address is itself, anything else a name.
    pub fn parse(host: &str) -> Self {
        let host = host.trim();
        if host.is_empty() {
            return ListenHost::All;
        }
        let unbracketed = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        match unbracketed.parse() {
            Ok(ip) => ListenHost::Ip(ip),
            Err(_) => ListenHost::Name(host.to_string()),
        }
    }
}

/// Binds `host:port` for `what`. All interfaces is the IPv6 wildcard, which on Linux also
/// accepts IPv4 (as Go does), or the IPv4 wildcard where IPv6 is unavailable.
pub async fn listen(host: &ListenHost, port: u16, what: &str) -> anyhow::Result<TcpListener> {
    let mut last = None;
    for addr in listen_addrs(host, port, what).await? {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some((addr, e)),
        }
    }
    Err(bind_failed(last, what))
}

/// [`listen`] for a proxy listener: one socket per serving thread on one port.
pub async fn listen_group(
    host: &ListenHost,
    port: u16,
    what: &str,
    threads: &RuntimeThreads,
) -> anyhow::Result<Vec<TcpListener>> {
    let mut last = None;
    for addr in listen_addrs(host, port, what).await? {
        match threads.listen(addr, LISTEN_BACKLOG, false) {
            Ok(group) => return Ok(group),
            Err(e) => last = Some((addr, e)),
        }
    }
    Err(bind_failed(last, what))
}

/// The proxy listeners' backlog (mio's, which `TcpListener::bind` uses).
const LISTEN_BACKLOG: u32 = 1024;

/// The period of the proxy threads' ticking timer ([`runtime_threads::tick_for`] the shortest
/// timeout a connection or request arms there; none of them set: 1 s). With it, a new
/// connection's or request's timer is rarely the runtime's earliest, which would cost a
/// wake-up of the runtime's own driver (an `eventfd` write, and an `epoll_wait` that returns at
/// once): about 0.2 per connection under new TLS handshakes without it.
fn runtime_tick(config: &Config) -> std::time::Duration {
    let shortest = [
        config.endpoint_timeout,
        config.endpoint_dial_timeout,
        config.websocket_dial_timeout,
        config.frontend_idle_timeout,
        config.read_header_timeout,
        config.tls_handshake_timeout,
    ]
    .into_iter()
    .filter(|t| !t.is_zero())
    .min()
    .unwrap_or(std::time::Duration::MAX);
    runtime_threads::tick_for(shortest)
}

/// The address a listener group is bound to, for the log.
fn listening_on(sockets: &[TcpListener]) -> String {
    sockets
        .first()
        .and_then(|s| s.local_addr().ok())
        .map(|a| a.to_string())
        .unwrap_or_default()
}

fn bind_failed(last: Option<(SocketAddr, std::io::Error)>, what: &str) -> anyhow::Error {
    match last {
        Some((addr, e)) => {
            anyhow::Error::new(e).context(format!("cannot listen for {what} on {addr}"))
        }
        None => anyhow::anyhow!("cannot listen for {what}: no address"),
    }
}

/// Where [`listen`] tries to bind, in order: all interfaces is the IPv6 wildcard, then the
/// IPv4 one (where IPv6 is unavailable); a name its first address, IPv4 first as Go's resolver.
async fn listen_addrs(host: &ListenHost, port: u16, what: &str) -> anyhow::Result<Vec<SocketAddr>> {
    Ok(match host {
        ListenHost::All => vec![
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        ],
        ListenHost::Ip(ip) => vec![SocketAddr::new(*ip, port)],
        ListenHost::Name(name) => {
            let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), port))
                .await
                .with_context(|| format!("cannot listen for {what}: cannot resolve {name:?}"))?
                .collect();
            addrs.sort_by_key(|a| !a.is_ipv4());
            vec![*addrs
                .first()
                .with_context(|| format!("cannot listen for {what}: {name:?} has no address"))?]
        }
    })
}

/// Why the HTTPS certificates are being reloaded.
#[derive(Debug, Clone, Copy)]
enum ReloadTrigger {
    Sighup,
    FileChanged,
}

/// The HTTPS listener takes the certificates (and TLS settings) of the config file as it is
/// now; open connections keep theirs. Anything wrong keeps the current certificates (and says
/// why).
/// `html_error_template_file` (read and parsed now, so a missing or bad template stops the
/// router at start) and `http_rewrite.responses`.
fn response_rules(config: &Config) -> anyhow::Result<(Option<ErrorPage>, ResponseRewrite)> {
    let error_page = match &config.html_error_template_file {
        Some(path) => Some(ErrorPage::load(path)?),
        None => None,
    };
    let responses = &config.http_rewrite.responses;
    let remove: Vec<String> = responses
        .remove_headers
        .iter()
        .map(|h| h.name.clone())
        .collect();
    let add: Vec<(String, String)> = responses
        .add_headers_if_not_present
        .iter()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    Ok((error_page, ResponseRewrite::new(&remove, &add)?))
}

/// The internal route-service server's listener and TLS config, when hairpinning is on.
type InternalServer = (TcpListener, Arc<rustls::ServerConfig>);

/// Route services' keys and transports (A.10): derives the signature keys, builds the
/// route-service TLS client and, with hairpinning, the internal server's listener on
/// 127.0.0.1:`route_services_internal_server_port` and its mutual TLS.
async fn route_service_proxying(
    config: &Config,
    rs: &RouteServicesSettings,
    idle: IdleLimits,
) -> anyhow::Result<(RouteServiceProxying, Option<InternalServer>)> {
    let client = tls::backend::route_service_client_config(rs, &config.backend_tls)
        .context("building the TLS client config for route services")?;
    let transport = Transport::new(
        idle,
        BackendTls {
            configs: BackendTlsConfigs::single(Arc::new(client)),
            handshake_timeout: config.tls_handshake_timeout,
        },
    )
    .with_idle_timeout(config.backend_idle_timeout);
    let (hairpin, internal) = if rs.hairpinning {
        let internal = InternalTls::generate()?;
        let l = listen(
            &ListenHost::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            rs.internal_server_port,
            "the internal route-service server (route_services_internal_server_port)",
        )
        .await?;
        let port = l
            .local_addr()
            .context("internal route-service server")?
            .port();
        let hairpin = Hairpin {
            transport: Transport::new(
                idle,
                BackendTls {
                    configs: BackendTlsConfigs::single(internal.client),
                    handshake_timeout: config.tls_handshake_timeout,
                },
            )
            .with_idle_timeout(config.backend_idle_timeout),
            endpoint: Arc::new(Endpoint::outside_table("127.0.0.1", port, true)),
        };
        (Some(hairpin), Some((l, internal.server)))
    } else {
        (None, None)
    };
    Ok((
        RouteServiceProxying {
            services: RouteServices::new(rs),
            transport,
            hairpin,
        },
        internal,
    ))
}

fn reload_certificates(
    server_tls: Option<&ServerTlsConfig>,
    config_file: Option<&std::path::Path>,
    trigger: ReloadTrigger,
) {
    let (Some(tls), Some(path)) = (server_tls, config_file) else {
        tracing::info!(
            ?trigger,
            "tls-reload-skipped: no HTTPS listener or no config file"
        );
        return;
    };
    match tls.reload_from_file(path) {
        Ok(_) => tracing::info!(file = %path.display(), ?trigger, "tls-certificates-reloaded"),
        Err(e) => {
            tracing::error!(file = %path.display(), ?trigger, error = %e, "tls-certificates-reload-failed")
        }
    }
}

/// How often the config file is looked at for changes (one `stat` each time).
const CONFIG_FILE_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// What identifies a version of the config file: its modification time and length.
fn file_version(path: &std::path::Path) -> Option<(std::time::SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Reloads the HTTPS certificates whenever the config file changes, as SIGHUP does, so a
/// renewed certificate is picked up without a signal.
async fn watch_config_file(server_tls: Arc<ServerTlsConfig>, path: PathBuf) {
    let mut seen = file_version(&path);
    let mut tick = tokio::time::interval(CONFIG_FILE_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = file_version(&path);
        if now.is_some() && now != seen {
            seen = now;
            reload_certificates(Some(&server_tls), Some(&path), ReloadTrigger::FileChanged);
        }
    }
}

/// Runs the router until a signal stops it or NATS is lost for good.
/// `config_file` is where `config` came from; SIGHUP reads it again for new certificates.
pub async fn run(config: Config, config_file: Option<PathBuf>) -> anyhow::Result<Stopped> {
    let config = Arc::new(config);
    tracing::info!("starting");
    tracing::debug!(AvailabilityZone = %config.zone, "local-az-set");
    tracing::info!(
        isolation_segments = ?config.isolation_segments,
        routing_table_sharding_mode = %config.routing_table_sharding_mode,
        "retrieved-isolation-segments"
    );
    let table = Arc::new(RouteTable::new(TableSettings::from_config(&config)));
    let health = Arc::new(Health::new());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (stop_accepting_tx, stop_accepting_rx) = watch::channel(false);

    // Install signal handlers first so an early signal is not fatal by default.
    let mut sigusr1 = signal(SignalKind::user_defined1()).context("installing SIGUSR1 handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;

    let router_id = format!("{}-{}", config.index, uuid::Uuid::new_v4());
    // With `nats.hosts: []` (allowed only with a Routing API) no NATS connection is made and
    // the pruner runs on its own, never suspended.
    let (mut nats_task, nats_client, _pruner) = if config.nats.hosts.is_empty() {
        tracing::info!("nats-disabled: no nats.hosts; routes come from the Routing API only");
        let pruner =
            nats::spawn_pruner_without_nats(table.clone(), config.prune_stale_droplets_interval);
        (None, None, Some(AbortOnDrop(pruner)))
    } else {
        tracing::info!("setting-up-nats-connection");
        let connection = nats::start(
            config.clone(),
            table.clone(),
            router_id.clone(),
            shutdown_rx.clone(),
        )
        .await
        .map_err(|e| FatalLogged {
            message: "nats-connection-error",
            error: format!("{e:#}"),
        })?;
        (Some(connection.task), Some(connection.client), None)
    };
    let _route_fetcher = if config.routing_api.enabled() {
        let task = routing_api::start(&config, table.clone(), shutdown_rx.clone())
            .await
            .map_err(|e| FatalLogged {
                message: e.message,
                error: e.error,
            })?;
        Some(AbortOnDrop(task))
    } else {
        None
    };

    let access_log = if config.access_log.file.is_empty() {
        None
    } else {
        let path = std::path::Path::new(&config.access_log.file);
        let (log, _writer) = AccessLog::open(path, &config.extra_headers_to_log)
            .with_context(|| format!("cannot open access_log.file {}", path.display()))?;
        Some(log)
    };

    let status_host = ListenHost::parse(&config.status.host);
    // `status.enable_nontls_health_checks: false` leaves `/health` to the TLS listener.
    let health_listener = if config.status.enable_nontls_health_checks {
        Some(listen(&status_host, config.status.port, "/health").await?)
    } else {
        None
    };
    let routes_listener = listen(
        &ListenHost::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        config.status.routes.port,
        "/routes",
    )
    .await?;
    let proxy_host = config.bind_address.map_or(ListenHost::All, ListenHost::Ip);
    // The threads that serve client connections, each with its own socket of every proxy
    // listener; the rest (NATS, the Routing API, status) stays on this runtime.
    let proxy_threads = Arc::new(
        RuntimeThreads::start(
            "proxy",
            runtime_threads::per_core_count(),
            Some(runtime_tick(&config)),
        )
        .context("starting the proxy's threads")?,
    );
    let proxy_listener = if config.disable_http {
        tracing::info!("tcp-listener-disabled");
        None
    } else {
        Some(listen_group(&proxy_host, config.port, "HTTP", &proxy_threads).await?)
    };
    let server_tls = ServerTlsConfig::new(&config)
        .context("building the HTTPS listener's TLS config")?
        .map(Arc::new);
    let tls_listener = match &server_tls {
        Some(_) => Some(listen_group(&proxy_host, config.ssl_port, "HTTPS", &proxy_threads).await?),
        None => {
            tracing::info!("tls-listener-not-enabled");
            None
        }
    };
    let (error_page, response_rewrite) = response_rules(&config)?;
    let idle = IdleLimits {
        per_backend: if config.disable_keep_alives {
            0
        } else {
            config.max_idle_conns_per_host
        },
        total: config.max_idle_conns,
    };
    let (route_services, internal_server) = match &config.route_services {
        Some(rs) => {
            let (proxying, internal) = route_service_proxying(&config, rs, idle).await?;
            (Some(proxying), internal)
        }
        None => (None, None),
    };
    if let Some(status_tls) = &config.status_tls {
        let tls = tls::status::status_server_config(&config, status_tls)
            .context("building the status.tls listener's TLS config")?;
        let l = listen(&status_host, status_tls.port, "/health over TLS").await?;
        tokio::spawn(status::serve_health_tls(
            l,
            tls,
            health.clone(),
            shutdown_rx.clone(),
        ));
    }

    // Counted for `/metrics` and for the deprecated `/varz`.
    let deprecated_status = config.status.enable_nontls_health_checks
        && config.status.enable_deprecated_varz_healthz_endpoints;
    let metrics = (config.prometheus.is_some() || deprecated_status).then(|| {
        let metrics = RouterMetrics::new(config.metrics.clone());
        Arc::new(if deprecated_status {
            metrics.with_top_apps()
        } else {
            metrics
        })
    });
    let _varz_ticker = match (health_listener, &metrics) {
        (Some(l), Some(metrics)) if deprecated_status => {
            let port = l.local_addr().context("status listener")?.port();
            let varz = Arc::new(Varz::new(
                VarzIdentity {
                    index: config.index,
                    host: format!("{}:{port}", config.status.host),
                    user: config.status.user.clone(),
                    pass: config.status.pass.clone(),
                    uuid: router_id.clone(),
                },
                metrics.clone(),
                table.clone(),
            ));
            let ticker = AbortOnDrop(tokio::spawn(varz.clone().run_ticker()));
            if let Some(client) = &nats_client {
                component::register(client.clone(), varz.clone(), shutdown_rx.clone()).await;
            }
            tokio::spawn(status::serve_deprecated(
                l,
                health.clone(),
                varz,
                table.clone(),
                config.status.user.clone(),
                config.status.pass.clone(),
                shutdown_rx.clone(),
            ));
            Some(ticker)
        }
        (Some(l), _) => {
            tokio::spawn(status::serve_health(l, health.clone(), shutdown_rx.clone()));
            None
        }
        (None, _) => None,
    };
    tokio::spawn(status::serve_routes(
        routes_listener,
        table.clone(),
        config.status.user.clone(),
        config.status.pass.clone(),
        shutdown_rx.clone(),
    ));

    // Kept to flush the file on the way out.
    let access_log_at_exit = access_log.clone();
    let proxy = Arc::new(Proxy {
        table: table.clone(),
        settings: ProxySettings::from_config(&config),
        health: health.clone(),
        access_log,
        transport: Transport::new(
            idle,
            BackendTls {
                configs: BackendTlsConfigs::new(&config)
                    .context("building the TLS client config for backends")?,
                handshake_timeout: config.tls_handshake_timeout,
            },
        )
        .with_idle_timeout(config.backend_idle_timeout),
        route_services,
        error_page,
        response_rewrite,
        metrics,
    });
    let _transport_sweeper = {
        let proxy = proxy.clone();
        let sweep_every = config.backend_idle_timeout;
        AbortOnDrop(tokio::spawn(async move {
            let mut tick = tokio::time::interval(sweep_every);
            loop {
                tick.tick().await;
                proxy.transport.sweep();
                if let Some(rs) = &proxy.route_services {
                    rs.transport.sweep();
                    if let Some(h) = &rs.hairpin {
                        h.transport.sweep();
                    }
                }
            }
        }))
    };
    let connections = Arc::new(Connections::new());
    let max_client_connections = config.max_client_connections.or_else(|| {
        // Half the descriptors for clients leaves the rest for their backend connections.
        process_setup::raise_open_files_limit()
            .map(|n| usize::try_from(n / 2).unwrap_or(usize::MAX))
    });
    tracing::info!(
        max_client_connections = ?max_client_connections,
        "client-connection-limit"
    );
    let _metrics_server = match (&config.prometheus, &proxy.metrics) {
        (Some(endpoint), Some(metrics)) => {
            let server = MetricsServer::bind(endpoint)
                .await
                .context("starting the prometheus metrics server")?;
            let addr = server.local_addr().context("prometheus listener address")?;
            tracing::info!(address = %addr, tls = endpoint.tls.is_some(), "metrics-listening");
            let mut registry = Registry::default();
            registry.register_collector(Box::new(RouterCollector {
                metrics: metrics.clone(),
                table: table.clone(),
                proxy: proxy.clone(),
                connections: connections.clone(),
            }));
            let mut stop = shutdown_rx.clone();
            Some(AbortOnDrop(tokio::spawn(server.serve(
                Arc::new(registry),
                async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                },
            ))))
        }
        _ => None,
    };
    let listener_settings = ListenerSettings {
        idle_timeout: config.frontend_idle_timeout,
        read_header_timeout: config.read_header_timeout,
        max_header_bytes: config.max_header_bytes,
        enable_proxy: config.enable_proxy,
        tls_handshake_timeout: config.tls_handshake_timeout,
        write_stall_timeout: config.endpoint_timeout,
        tunnel_idle_timeout: config.websocket_idle_timeout,
        // The internal route-service server's settings drop the limit (below): its
        // connections carry requests already holding a client connection.
        connection_limit: max_client_connections.filter(|n| *n > 0).map(|n| {
            Arc::new(tokio::sync::Semaphore::new(
                n.min(tokio::sync::Semaphore::MAX_PERMITS),
            ))
        }),
    };
    // The internal route-service server serves at once: only this router sends to it.
    let _internal_server = internal_server.map(|(l, tls)| {
        let address = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(address = %address, "route-services-internal-server-started");
        let source: listener::TlsConfigSource = Arc::new(move || tls.clone());
        AbortOnDrop(tokio::spawn(listener::serve_tls(
            l,
            proxy.clone(),
            ListenerSettings {
                connection_limit: None,
                ..listener_settings.clone()
            },
            source,
            connections.clone(),
            stop_accepting_rx.clone(),
        )))
    });
    let start_delay = config.start_response_delay_interval;
    {
        let proxy_threads = proxy_threads.clone();
        let health = health.clone();
        let connections = connections.clone();
        let server_tls = server_tls.clone();
        tokio::spawn(async move {
            // Give route emitters time to register before serving (A.12).
            tracing::debug!(
                sleep_time_seconds = start_delay.as_secs_f64(),
                "Sleeping before returning success on /health endpoint to preload routing table"
            );
            tokio::time::sleep(start_delay).await;
            let mut serving = Vec::new();
            if let (Some(sockets), Some(tls)) = (tls_listener, server_tls) {
                let address = listening_on(&sockets);
                tracing::info!(address = %address, "tls-listener-started");
                // Each handshake takes the certificates in force when it starts.
                let source: listener::TlsConfigSource = Arc::new(move || tls.load());
                serving.extend(proxy_threads.spawn_each(sockets, |l| {
                    listener::serve_tls(
                        l,
                        proxy.clone(),
                        listener_settings.clone(),
                        source.clone(),
                        connections.clone(),
                        stop_accepting_rx.clone(),
                    )
                }));
            }
            if let Some(sockets) = proxy_listener {
                let address = listening_on(&sockets);
                tracing::info!(address = %address, "tcp-listener-started");
                serving.extend(proxy_threads.spawn_each(sockets, |l| {
                    listener::serve(
                        l,
                        proxy.clone(),
                        listener_settings.clone(),
                        connections.clone(),
                        stop_accepting_rx.clone(),
                    )
                }));
            }
            tracing::info!("gorouter.started");
            health.set_healthy();
            for task in serving {
                let _ = task.await;
            }
        });
    }
    tracing::debug!(id = %router_id, "router-id");
    let _config_watcher = match (&server_tls, &config_file) {
        (Some(tls), Some(path)) => Some(AbortOnDrop(tokio::spawn(watch_config_file(
            tls.clone(),
            path.clone(),
        )))),
        _ => None,
    };

    let stopped = loop {
        tokio::select! {
            _ = sighup.recv() => {
                reload_certificates(server_tls.as_deref(), config_file.as_deref(), ReloadTrigger::Sighup);
            }
            _ = sigusr1.recv() => {
                tracing::info!(
                    wait_seconds = config.drain_wait.as_secs_f64(),
                    timeout_seconds = config.drain_timeout.as_secs_f64(),
                    "gorouter-draining"
                );
                health.degrade();
                tokio::time::sleep(config.drain_wait).await;
                tracing::info!("gorouter.stopping");
                stop_accepting_tx.send_replace(true);
                connections.close_all();
                if !connections.wait_closed(config.drain_timeout).await {
                    tracing::info!(open = connections.active(), "router.drain.timed-out");
                }
                break Stopped::Drained;
            }
            _ = sigterm.recv() => break Stopped::Terminated,
            _ = sigint.recv() => break Stopped::Terminated,
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
        }
    };
    let stopping_at = std::time::Instant::now();
    if stopped == Stopped::Terminated {
        tracing::info!("gorouter.stopping");
        health.degrade();
        stop_accepting_tx.send_replace(true);
        connections.close_all();
        connections
            .wait_closed(std::time::Duration::from_millis(500))
            .await;
    }
    if let Some(log) = &access_log_at_exit {
        // Lines of the requests that just ended reach the file before the process exits.
        if !log.flush(std::time::Duration::from_secs(5)).await {
            tracing::error!("access-log-flush-timed-out");
        }
        if log.dropped() > 0 {
            tracing::error!(dropped = log.dropped(), "access-log-records-dropped");
        }
    }
    shutdown_tx.send_replace(true);
    if let Some(task) = nats_task {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), task).await;
    }
    tracing::info!(took = ?stopping_at.elapsed(), "gorouter.stopped");
    tracing::info!(?stopped, "gorouter.exited");
    Ok(stopped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_threads_tick_at_half_the_shortest_timeout_within_5ms_and_1s() {
        let tick = |yaml: &str| runtime_tick(&Config::from_yaml(yaml).unwrap());
        assert_eq!(tick(""), std::time::Duration::from_secs(1), "defaults");
        assert_eq!(
            tick("endpoint_dial_timeout: 100ms"),
            std::time::Duration::from_millis(50)
        );
        assert_eq!(
            tick("tls_handshake_timeout: 1ms"),
            std::time::Duration::from_millis(5)
        );
    }

    /// `status.host` as Go's `net.Listen("tcp", host:port)` reads it (absent = `0.0.0.0`).
    #[test]
    fn listen_host_reads_like_go() {
        assert_eq!(ListenHost::parse(""), ListenHost::All);
        assert_eq!(ListenHost::parse("  "), ListenHost::All);
        assert_eq!(
            ListenHost::parse("0.0.0.0"),
            ListenHost::Ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        );
        assert_eq!(
            ListenHost::parse("[::1]"),
            ListenHost::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST))
        );
        assert_eq!(
            ListenHost::parse("localhost"),
            ListenHost::Name("localhost".into())
        );
        let c = Config::from_yaml("status: {host: ''}").unwrap();
        assert_eq!(ListenHost::parse(&c.status.host), ListenHost::All);
        let c = Config::from_yaml("").unwrap();
        assert_eq!(
            ListenHost::parse(&c.status.host),
            ListenHost::Ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        );
    }

    #[tokio::test]
    async fn listens_on_an_address_or_a_host_name() {
        let l = listen(&ListenHost::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)), 0, "test")
            .await
            .unwrap();
        assert!(l.local_addr().unwrap().ip().is_loopback());
        let l = listen(&ListenHost::Name("localhost".into()), 0, "test")
            .await
            .unwrap();
        assert!(l.local_addr().unwrap().ip().is_loopback());
        let e = listen(&ListenHost::Name("no-such-host.invalid".into()), 0, "test")
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("no-such-host.invalid"), "{e:#}");
    }
}
