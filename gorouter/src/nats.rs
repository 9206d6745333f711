//! Learning routes over NATS (A.1, A.2): `router.register` / `router.unregister`, answering
//! `router.greet`, announcing `router.start`, and the TTL prune loop (which must know whether
//! NATS is connected).
//!
//! This module owns the NATS client of the router: connecting (3 tries of every server, then
//! fatal, as upstream's mbus client), staying connected (reconnecting forever, through every
//! listed server, logging upstream's `nats-connection-*` messages), the one `router.*` subscription, turning registry messages
//! into [`EndpointSpec`]s for the [`RouteTable`], and the prune ticker. It does not own the
//! table's rules (keys, equality, TTL clamping, sharding): those live in [`crate::registry`].
//!
//! # Connection state and the pruner
//! The client's event callback is the only place that learns about disconnects and reconnects.
//! It records them in `ConnectionStatus` (read by the pruner, which suspends pruning while
//! NATS is down and refreshes every endpoint on its first run after a reconnect, so routes whose
//! heartbeats the outage swallowed are not dropped) and tells the message loop about reconnects,
//! which then re-publishes `router.start` so emitters re-register at once.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, Message, ServerAddr, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use serde::de::{self, Deserializer, IgnoredAny, Visitor};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::config::{BalancingAlgorithm, Config};
use crate::registry::{EndpointSpec, Protocol, RouteTable};
use crate::task::AbortOnDrop;

/// Initial connection attempts before the router gives up (upstream: 3, 100 ms apart).
const INITIAL_CONNECT_ATTEMPTS: u32 = 3;
const INITIAL_CONNECT_RETRY_DELAY: Duration = Duration::from_millis(100);
/// Per-attempt budget for TCP connect plus the NATS handshake; the Go client's default.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Upstream's `nats_client_message_buffer_size`: a registration burst (every emitter
/// re-registering after `router.start`) must not be dropped as a slow consumer.
const SUBSCRIPTION_CAPACITY: usize = 131_072;
/// Bound for the startup round trip that confirms the subscription; a server without
/// "no responders" support (older than 2.2) just costs this much once.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(2);
/// How long shutdown waits for the server to acknowledge the unsubscribe and the final flush;
/// bounded because the connection may be down at that moment.
const SHUTDOWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

const SUBJECT_WILDCARD: &str = "router.*";
const SUBJECT_REGISTER: &str = "router.register";
const SUBJECT_UNREGISTER: &str = "router.unregister";
const SUBJECT_GREET: &str = "router.greet";
const SUBJECT_START: &str = "router.start";

/// A parsed `router.register` / `router.unregister` payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub uris: Vec<String>,
    pub spec: EndpointSpec,
}

/// Why a payload was dropped.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("invalid registry message JSON: {0}")]
    Json(String),
    #[error("route_service_url must be https")]
    RouteServiceUrlNotHttps,
}

/// A JSON string field, borrowed from the payload when it has no escapes (the usual case, so
/// fields that are only inspected cost no allocation). `null` reads as empty, because Go's
/// decoder leaves the field at its zero value.
#[derive(Default)]
struct JsonStr<'a>(Cow<'a, str>);

impl JsonStr<'_> {
    fn into_string(self) -> String {
        self.0.into_owned()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for JsonStr<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct JsonStrVisitor<'a>(std::marker::PhantomData<&'a ()>);

        impl<'de: 'a, 'a> Visitor<'de> for JsonStrVisitor<'a> {
            type Value = JsonStr<'a>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or null")
            }

            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(JsonStr::default())
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(JsonStr::default())
            }

            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_str(self)
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v)))
            }
        }

        deserializer.deserialize_option(JsonStrVisitor(std::marker::PhantomData))
    }
}

/// The registry message as emitters send it (A.2). Numbers are `Option` so that `null` reads as
/// zero, like Go; unknown fields are ignored.
#[derive(Deserialize)]
struct RegistryMessage<'a> {
    #[serde(default, borrow)]
    host: JsonStr<'a>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    tls_port: Option<u16>,
    #[serde(default, borrow)]
    uris: Option<Vec<JsonStr<'a>>>,
    #[serde(default, borrow)]
    app: JsonStr<'a>,
    #[serde(default, borrow)]
    private_instance_id: JsonStr<'a>,
    /// A string on the wire (not a number): upstream rejects the message otherwise.
    #[serde(default, borrow)]
    private_instance_index: JsonStr<'a>,
    #[serde(default, borrow)]
    server_cert_domain_san: JsonStr<'a>,
    #[serde(default, borrow)]
    route_service_url: JsonStr<'a>,
    #[serde(default)]
    tags: Option<BTreeMap<String, String>>,
    /// Go `int`: negative is accepted there and means "use the default", like 0.
    #[serde(default)]
    stale_threshold_in_seconds: Option<i64>,
    #[serde(default, borrow)]
    isolation_segment: JsonStr<'a>,
    #[serde(default)]
    endpoint_updated_at_ns: Option<i64>,
    #[serde(default, borrow)]
    protocol: JsonStr<'a>,
    #[serde(default, borrow)]
    availability_zone: JsonStr<'a>,
    #[serde(default, borrow)]
    options: Option<RegistryOptions<'a>>,
}

#[derive(Deserialize)]
struct RegistryOptions<'a> {
    #[serde(default, borrow)]
    lb_algo: JsonStr<'a>,
}

impl RegistryMessage<'_> {
    fn into_registration(self) -> Result<Registration, RegistrationError> {
        // Case-sensitive prefix check, as upstream does: "http://" and "HTTPS://" are refused.
        if !self.route_service_url.0.is_empty() && !self.route_service_url.0.starts_with("https") {
            return Err(RegistrationError::RouteServiceUrlNotHttps);
        }
        // Anything but "http2" behaves as HTTP/1.1 upstream (an unknown value is never dialed
        // as HTTP/2), so it maps onto Http1.
        let protocol = if self.protocol.0 == "http2" {
            Protocol::Http2
        } else {
            Protocol::Http1
        };
        let lb_algo = match self.options.as_ref().map(|o| &*o.lb_algo.0) {
            None | Some("") => None,
            Some(name) => {
                let algo = BalancingAlgorithm::from_name(name);
                if algo.is_none() {
                    warn!(
                        lb_algo = name,
                        "invalid-lb-algorithm: ignoring options.lb_algo (expected round-robin or least-connection)"
                    );
                }
                algo
            }
        };
        let uris = self
            .uris
            .unwrap_or_default()
            .into_iter()
            .map(JsonStr::into_string)
            .collect();
        let spec = EndpointSpec {
            host: self.host.into_string(),
            port: self.port.unwrap_or(0),
            tls_port: self.tls_port.unwrap_or(0),
            app: self.app.into_string(),
            private_instance_id: self.private_instance_id.into_string(),
            private_instance_index: self.private_instance_index.into_string(),
            server_cert_domain_san: self.server_cert_domain_san.into_string(),
            route_service_url: self.route_service_url.into_string(),
            tags: self.tags,
            stale_threshold_in_seconds: self
                .stale_threshold_in_seconds
                .map_or(0, |secs| u64::try_from(secs).unwrap_or(0)),
            isolation_segment: self.isolation_segment.into_string(),
            availability_zone: self.availability_zone.into_string(),
            protocol,
            lb_algo,
            // NATS messages carry no modification tag; the zero tag always succeeds.
            modification_tag: Default::default(),
            endpoint_updated_at_ns: self.endpoint_updated_at_ns.unwrap_or(0),
        };
        Ok(Registration { uris, spec })
    }
}

/// Parses a registry message (A.2).
pub fn parse_registration(payload: &[u8]) -> Result<Registration, RegistrationError> {
    serde_json::from_slice::<RegistryMessage>(payload)
        .map_err(|e| RegistrationError::Json(e.to_string()))?
        .into_registration()
}

/// The `router.start` message, which is also the reply to `router.greet` (A.1). Field order is
/// part of the wire format.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RouterStart<'a> {
    id: &'a str,
    hosts: [String; 1],
    minimum_register_interval_in_seconds: u64,
    prune_threshold_in_seconds: u64,
}

/// The JSON this router announces on `router.start` and answers `router.greet` with:
/// `{"id":..,"hosts":[ip],"minimumRegisterIntervalInSeconds":..,"pruneThresholdInSeconds":..}`.
pub fn router_start_json(config: &Config, router_id: &str) -> String {
    let message = RouterStart {
        id: router_id,
        hosts: [config.ip.to_string()],
        minimum_register_interval_in_seconds: config.start_response_delay_interval.as_secs(),
        prune_threshold_in_seconds: config.droplet_stale_threshold.as_secs(),
    };
    // Serializing a struct of strings and integers cannot fail.
    serde_json::to_string(&message).unwrap_or_default()
}

/// What the NATS connection looks like to the pruner, as the client's event callback reports
/// it.
#[derive(Debug)]
struct ConnectionStatus {
    connected: AtomicBool,
    /// Set on every disconnect; the first prune after the reconnect takes it and refreshes all
    /// endpoints first.
    outage_since_last_prune: AtomicBool,
    /// Set when we close the client ourselves, so its `Closed` event is not reported as fatal.
    closing: AtomicBool,
}

impl ConnectionStatus {
    /// Only ever built once a connection exists: the client delivers no events for a failed
    /// initial connect, so "connected" is the right starting point.
    fn new_connected() -> Self {
        Self {
            connected: AtomicBool::new(true),
            outage_since_last_prune: AtomicBool::new(false),
            closing: AtomicBool::new(false),
        }
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }
}

/// What the event callback tells the message loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnectionNotice {
    /// Connected again after a disconnect: announce `router.start` again.
    Reconnected,
    /// The client gave up for good.
    Closed,
}

/// nats.go's `ReconnectWait` (2 s) and `ReconnectJitter` (up to 100 ms): the pause after every
/// round through the server list while reconnecting.
const RECONNECT_WAIT: Duration = Duration::from_secs(2);
const RECONNECT_JITTER_MS: u64 = 100;

/// `host:port` as a URL authority (IPv6 in brackets), upstream's `host` log field.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The server the connection uses, as upstream logs it: `host` is the configured URL's
/// `host:port`, `addr` the address dialed (`ip:port`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ServerIdentity {
    host: String,
    addr: String,
}

/// Resolves the address behind `server` for the `addr` log field (bounded: it only labels a log
/// line). An IP address is its own answer.
async fn identify(server: &ServerAddr) -> ServerIdentity {
    let host = authority(server.host(), server.port());
    let addr = match server.host().parse::<std::net::IpAddr>() {
        Ok(ip) => std::net::SocketAddr::new(ip, server.port()).to_string(),
        Err(_) => {
            let lookup = tokio::net::lookup_host((server.host(), server.port()));
            match tokio::time::timeout(Duration::from_secs(1), lookup).await {
                Ok(Ok(mut addrs)) => addrs.next().map(|a| a.to_string()).unwrap_or_default(),
                _ => String::new(),
            }
        }
    };
    ServerIdentity { host, addr }
}

/// Picks the server for every connection attempt the way nats.go's reconnect loop does: the
/// servers in pool order starting after the last one tried, a pause of [`RECONNECT_WAIT`]
/// (plus jitter) before every attempt that completes a round. It also remembers which server
/// the attempt went to, so that the `Connected` event can name it.
#[derive(Debug, Default)]
struct ServerSelector {
    /// The server of the latest attempt.
    last: Option<ServerAddr>,
    /// Attempts since the connection was last up.
    attempts: usize,
    /// Set once the first connection is up; the initial connect never pauses.
    started: bool,
}

impl ServerSelector {
    fn select(&mut self, pool: &[async_nats::Server]) -> Option<async_nats::ReconnectToServer> {
        if pool.is_empty() {
            return None;
        }
        let next = match &self.last {
            Some(last) => pool
                .iter()
                .position(|s| &s.addr == last)
                .map_or(0, |i| (i + 1) % pool.len()),
            None => 0,
        };
        self.attempts += 1;
        let delay = if self.started && self.attempts % pool.len() == 0 {
            let jitter = rand::random::<u64>() % RECONNECT_JITTER_MS;
            RECONNECT_WAIT + Duration::from_millis(jitter)
        } else {
            Duration::ZERO
        };
        let addr = pool[next].addr.clone();
        self.last = Some(addr.clone());
        Some(async_nats::ReconnectToServer {
            addr,
            delay: Some(delay),
        })
    }

    /// The connection is up (on `last`): the next outage starts a fresh round.
    fn connected(&mut self) -> Option<ServerAddr> {
        self.attempts = 0;
        self.started = true;
        self.last.clone()
    }
}

/// Everything the client's callbacks share.
struct Callbacks {
    status: Arc<ConnectionStatus>,
    /// Bounded: notices are rare, and a reconnect already queued covers a second one.
    notices: mpsc::Sender<ConnectionNotice>,
    selector: std::sync::Mutex<ServerSelector>,
    /// The server of the current (or last) connection.
    current: std::sync::Mutex<ServerIdentity>,
    /// Logs `nats-connection-still-disconnected` while the connection is down.
    outage_ticker: std::sync::Mutex<Option<JoinHandle<()>>>,
    ping_interval: Duration,
    /// Reconnect attempts refused with an authorization violation since the connection was
    /// last up, and how many may be before the connection counts as closed for good.
    auth_refusals: AtomicUsize,
    auth_refusals_allowed: usize,
}

/// Connection notices waiting for the message loop.
const NOTICE_QUEUE: usize = 8;

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Callbacks {
    fn current(&self) -> ServerIdentity {
        lock(&self.current).clone()
    }

    fn stop_outage_ticker(&self) {
        if let Some(ticker) = lock(&self.outage_ticker).take() {
            ticker.abort();
        }
    }

    /// Records a client event. Runs on the client's event task.
    async fn on_event(&self, event: Event) {
        match event {
            Event::Connected => {
                let server = lock(&self.selector).connected();
                if let Some(server) = server {
                    let identity = identify(&server).await;
                    *lock(&self.current) = identity;
                }
                // The initial connection also reports Connected; only a change from
                // disconnected is a reconnect.
                self.auth_refusals.store(0, Ordering::SeqCst);
                if !self.status.connected.swap(true, Ordering::SeqCst) {
                    self.stop_outage_ticker();
                    let ServerIdentity { host, addr } = self.current();
                    info!(host = %host, addr = %addr, "nats-connection-reconnected");
                    // Full means a reconnect is already queued; gone means the message loop
                    // has ended. Either way there is nothing more to say.
                    let _ = self.notices.try_send(ConnectionNotice::Reconnected);
                }
            }
            Event::Disconnected => {
                self.status.connected.store(false, Ordering::SeqCst);
                self.status
                    .outage_since_last_prune
                    .store(true, Ordering::SeqCst);
                if self.status.closing.load(Ordering::SeqCst) {
                    return;
                }
                let ServerIdentity { host, addr } = self.current();
                info!(host = %host, addr = %addr, "nats-connection-disconnected");
                let interval = self.ping_interval;
                let ticker = tokio::spawn(async move {
                    let mut tick =
                        tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
                    loop {
                        tick.tick().await;
                        info!("nats-connection-still-disconnected");
                    }
                });
                if let Some(old) = lock(&self.outage_ticker).replace(ticker) {
                    old.abort();
                }
            }
            Event::Closed => {
                self.status.connected.store(false, Ordering::SeqCst);
                self.stop_outage_ticker();
                if self.status.closing.load(Ordering::SeqCst) {
                    debug!("nats-connection-closed");
                } else {
                    error!(error = "unexpected close", "nats-connection-closed");
                    let _ = self.notices.send(ConnectionNotice::Closed).await;
                }
            }
            Event::SlowConsumer(sid) => {
                warn!(
                    sid,
                    "nats-slow-consumer: subscription buffer full, messages dropped"
                );
            }
            Event::LameDuckMode => info!("nats-server-lame-duck-mode"),
            Event::Draining => debug!("nats-draining"),
            Event::ServerError(err) => warn!(error = %err, "nats-server-error"),
            Event::ClientError(err) => {
                debug!(error = %err, "nats-client-error");
                if is_authorization_violation(&err) {
                    self.on_authorization_violation(&err).await;
                }
            }
        }
    }

    /// A reconnect the server refused for our credentials. nats.go stops reconnecting (and
    /// closes the connection, which upstream's router exits on) when a server refuses the
    /// same way twice in a row; async-nats retries forever. Here the connection counts as
    /// closed once refusals outnumber the servers: every server has been tried and one
    /// refused again.
    async fn on_authorization_violation(&self, err: &async_nats::ClientError) {
        let refusals = self.auth_refusals.fetch_add(1, Ordering::SeqCst) + 1;
        if refusals <= self.auth_refusals_allowed || self.status.closing.load(Ordering::SeqCst) {
            return;
        }
        self.status.connected.store(false, Ordering::SeqCst);
        self.stop_outage_ticker();
        error!(error = %err, refusals, "nats-connection-closed");
        let _ = self.notices.send(ConnectionNotice::Closed).await;
    }
}

/// Whether a client error is a connect attempt refused with `Authorization Violation`.
fn is_authorization_violation(err: &async_nats::ClientError) -> bool {
    match err {
        async_nats::ClientError::Other(text) => {
            *text == async_nats::ConnectErrorKind::AuthorizationViolation.to_string()
        }
        _ => false,
    }
}

impl Drop for Callbacks {
    fn drop(&mut self) {
        self.stop_outage_ticker();
    }
}

/// The client's options. With `nats.tls_enabled` the connection must be TLS (the `nats://`
/// URLs stay, as upstream's: the client upgrades after the server's `INFO`) with
/// [`crate::tls::nats::nats_client_config`]; a config that cannot be built is upstream's
/// fatal `nats-tls-config-invalid`.
fn connect_options(config: &Config, callbacks: Arc<Callbacks>) -> anyhow::Result<ConnectOptions> {
    let events = callbacks.clone();
    let mut options = ConnectOptions::new()
        .name("gorouter")
        // nats.go's default: dial plus INFO/CONNECT/PONG within 2 s, per server.
        .connection_timeout(CONNECT_TIMEOUT)
        .ping_interval(config.nats_client_ping_interval)
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        // Upstream MaxReconnect = -1: once connected, never give up.
        .max_reconnects(None)
        .reconnect_to_server_callback(move |pool, _info| {
            let choice = lock(&callbacks.selector).select(&pool);
            std::future::ready(choice)
        })
        .event_callback(move |event| {
            let events = events.clone();
            async move { events.on_event(event).await }
        });
    if !config.nats.user.is_empty() {
        options = options.user_and_password(config.nats.user.clone(), config.nats.pass.clone());
    }
    if let Some(tls) = &config.nats_tls {
        let client = crate::tls::nats::nats_client_config(tls).map_err(|err| {
            error!(error = %err, "nats-tls-config-invalid");
            anyhow::anyhow!("NATS TLS config: {err}")
        })?;
        options = options.require_tls(true).tls_client_config(client);
    }
    Ok(options)
}

/// Upstream's mbus `Connect`: up to 3 attempts 100 ms apart, each trying every server (in a
/// random order, as nats.go shuffles its pool) with the 2 s connect timeout. On success the
/// client gets the whole list for its reconnects and `Successfully-connected-to-nats` is
/// logged; on failure `nats-connection-error` is, and the router exits.
async fn connect_initially(
    options: ConnectOptions,
    servers: &[String],
    callbacks: &Callbacks,
) -> anyhow::Result<Client> {
    let mut pool = Vec::with_capacity(servers.len());
    for url in servers {
        match url.parse::<ServerAddr>() {
            Ok(addr) => pool.push(addr),
            Err(err) => {
                error!(error = %format!("{url}: {err}"), "nats-connection-error");
                anyhow::bail!("invalid NATS server {url}: {err}");
            }
        }
    }
    {
        use rand::seq::SliceRandom;
        pool.shuffle(&mut rand::rng());
    }
    let mut last_error = String::from("no NATS servers configured");
    for attempt in 1..=INITIAL_CONNECT_ATTEMPTS {
        for server in &pool {
            match options.clone().connect(server.clone()).await {
                Ok(client) => {
                    if pool.len() > 1 {
                        if let Err(err) = client.set_server_pool(pool.clone()).await {
                            warn!(error = %err, "nats-server-pool-not-set");
                        }
                    }
                    let identity = identify(server).await;
                    *lock(&callbacks.current) = identity.clone();
                    info!(host = %identity.host, addr = %identity.addr, "Successfully-connected-to-nats");
                    return Ok(client);
                }
                Err(err) => {
                    debug!(server = %authority(server.host(), server.port()), attempt, error = %err, "nats-connection-attempt-failed");
                    last_error = format!("{}: {err}", authority(server.host(), server.port()));
                }
            }
        }
        tokio::time::sleep(INITIAL_CONNECT_RETRY_DELAY).await;
    }
    error!(error = %last_error, "nats-connection-error");
    anyhow::bail!(
        "could not connect to NATS at {} after {INITIAL_CONNECT_ATTEMPTS} attempts: {last_error}",
        servers.join(", ")
    )
}

/// The router's NATS connection once [`start`] has set it up.
pub struct NatsConnection {
    /// The message and prune loops: ends with an error if the connection is closed for good
    /// (the router then exits), and with Ok on shutdown.
    pub task: JoinHandle<anyhow::Result<()>>,
    /// The client, for other subjects the router answers on ([`crate::component`]).
    pub client: Client,
}

/// Connects to NATS (as upstream's mbus client), publishes `router.start`, subscribes
/// `router.*` and starts the message and prune loops.
///
/// When this returns Ok the server has the subscription: registrations published from then on
/// reach the table. `shutdown` turning true (or its sender being dropped) drains the
/// subscription, flushes and ends the task; the prune loop stops with it.
pub async fn start(
    config: Arc<Config>,
    table: Arc<RouteTable>,
    router_id: String,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<NatsConnection> {
    let servers = config.nats_servers();
    let status = Arc::new(ConnectionStatus::new_connected());
    let (notices_tx, notices_rx) = mpsc::channel(NOTICE_QUEUE);
    let callbacks = Arc::new(Callbacks {
        status: status.clone(),
        notices: notices_tx,
        selector: std::sync::Mutex::new(ServerSelector::default()),
        current: std::sync::Mutex::new(ServerIdentity::default()),
        outage_ticker: std::sync::Mutex::new(None),
        ping_interval: config.nats_client_ping_interval,
        auth_refusals: AtomicUsize::new(0),
        auth_refusals_allowed: servers.len().max(1),
    });
    let options = connect_options(&config, callbacks.clone())?;
    let client = connect_initially(options, &servers, &callbacks).await?;
    let router_start = Bytes::from(router_start_json(&config, &router_id));
    // Announce before subscribing, as upstream does.
    publish_router_start(&client, &router_start).await;
    let subscriber = match client.subscribe(SUBJECT_WILDCARD).await {
        Ok(subscriber) => subscriber,
        Err(err) => {
            // Dropping the client closes it; that is our doing, not a fatal event to report.
            status.closing.store(true, Ordering::SeqCst);
            anyhow::bail!("cannot subscribe to NATS subject {SUBJECT_WILDCARD}: {err}");
        }
    };
    // Once this round trip is back the server has the subscription, so anything published
    // after start() returns reaches us.
    if let Err(err) = server_round_trip(&client).await {
        warn!(error = %err, "nats-subscription-not-confirmed");
    }
    info!(subject = SUBJECT_WILDCARD, router_id = %router_id, "nats-subscribed");

    let pruner = AbortOnDrop(tokio::spawn(prune_loop(
        table.clone(),
        status.clone(),
        config.prune_stale_droplets_interval,
        config.suspend_pruning_if_nats_unavailable,
    )));
    let subscription = RouterSubscription {
        client: client.clone(),
        subscriber,
        table,
        router_start,
        status,
    };
    let task = tokio::spawn(async move {
        let result = subscription.run(notices_rx, shutdown).await;
        drop(pruner);
        result
    });
    Ok(NatsConnection { task, client })
}

/// Waits until the server has processed everything this client sent so far. `Client::flush`
/// only empties the socket buffer; a request nobody listens to comes back as "no responders",
/// and the server answers it only after handling the commands sent before it.
async fn server_round_trip(client: &Client) -> Result<(), String> {
    let request = client.request(client.new_inbox(), Bytes::new());
    match tokio::time::timeout(ROUND_TRIP_TIMEOUT, request).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) if err.kind() == async_nats::RequestErrorKind::NoResponders => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {ROUND_TRIP_TIMEOUT:?}")),
    }
}

async fn publish_router_start(client: &Client, router_start: &Bytes) {
    match client.publish(SUBJECT_START, router_start.clone()).await {
        Ok(()) => info!(subject = SUBJECT_START, "router-start-published"),
        Err(err) => warn!(subject = SUBJECT_START, error = %err, "nats-publish-failed"),
    }
}

/// What one `router.*` message did.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MessageOutcome {
    Registered,
    Unregistered,
    /// A greet to answer on this reply subject.
    GreetReply(async_nats::Subject),
    /// A greet without a reply subject, or another valid `router.*` message.
    Ignored,
    /// Malformed or rejected; logged.
    Dropped,
}

/// Applies one `router.*` message to the table. Never panics on bad input.
fn handle_message(table: &RouteTable, message: &Message) -> MessageOutcome {
    let subject = message.subject.as_str();
    match subject {
        SUBJECT_REGISTER | SUBJECT_UNREGISTER => {
            let registration = match parse_registration(&message.payload) {
                Ok(registration) => registration,
                Err(err) => {
                    warn!(subject, error = %err, "unable-to-parse-registry-message: dropped");
                    return MessageOutcome::Dropped;
                }
            };
            let spec = &registration.spec;
            if subject == SUBJECT_REGISTER {
                let component = spec.component();
                table
                    .stats()
                    .registration_arrived(spec.endpoint_updated_at_ns);
                for uri in &registration.uris {
                    let outcome = table.register(uri, spec);
                    table.stats().count_register(component, outcome);
                    debug!(uri = %uri, host = %spec.host, port = spec.port, tls_port = spec.tls_port, outcome = ?outcome, "endpoint-registered");
                }
                MessageOutcome::Registered
            } else {
                table.stats().count_unregister(spec.component());
                for uri in &registration.uris {
                    let removed = table.unregister(uri, spec);
                    debug!(uri = %uri, host = %spec.host, port = spec.port, tls_port = spec.tls_port, removed, "endpoint-unregistered");
                }
                MessageOutcome::Unregistered
            }
        }
        SUBJECT_GREET => match &message.reply {
            Some(reply) => MessageOutcome::GreetReply(reply.clone()),
            None => {
                debug!(subject, "greet without a reply subject: ignored");
                MessageOutcome::Ignored
            }
        },
        _ => {
            // Other router.* traffic (our own router.start, other routers' announcements) is
            // not acted on, but upstream still insists it be JSON.
            if let Err(err) = serde_json::from_slice::<IgnoredAny>(&message.payload) {
                warn!(subject, error = %err, "validation-error");
                return MessageOutcome::Dropped;
            }
            MessageOutcome::Ignored
        }
    }
}

/// The message loop's state: the client and its one subscription.
struct RouterSubscription {
    client: Client,
    subscriber: Subscriber,
    table: Arc<RouteTable>,
    router_start: Bytes,
    status: Arc<ConnectionStatus>,
}

impl RouterSubscription {
    async fn run(
        mut self,
        mut notices: mpsc::Receiver<ConnectionNotice>,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                // Shutdown and connection notices first: a flood of registrations must not
                // delay them.
                biased;
                () = shutdown_requested(&mut shutdown) => {
                    self.shut_down().await;
                    return Ok(());
                }
                notice = notices.recv() => match notice {
                    Some(ConnectionNotice::Reconnected) => {
                        publish_router_start(&self.client, &self.router_start).await;
                    }
                    // No sender left means the client's event task has ended: closed too.
                    Some(ConnectionNotice::Closed) | None => {
                        anyhow::bail!("NATS connection closed for good");
                    }
                },
                message = self.subscriber.next() => match message {
                    Some(message) => self.handle(&message).await,
                    None => anyhow::bail!("NATS subscription to {SUBJECT_WILDCARD} ended: connection closed"),
                },
            }
        }
    }

    async fn handle(&self, message: &Message) {
        if let MessageOutcome::GreetReply(reply) = handle_message(&self.table, message) {
            if let Err(err) = self.client.publish(reply, self.router_start.clone()).await {
                warn!(subject = SUBJECT_GREET, error = %err, "greet-reply-failed");
            }
        }
    }

    /// Unsubscribes, handles what was already delivered, and flushes outgoing messages; each
    /// step bounded in time because NATS may be down.
    async fn shut_down(&mut self) {
        info!("nats-subscriber-stopping");
        self.status.closing.store(true, Ordering::SeqCst);
        if let Err(err) = self.subscriber.drain().await {
            warn!(error = %err, "nats-drain-failed");
        }
        let drained = tokio::time::timeout(SHUTDOWN_DRAIN_TIMEOUT, async {
            while let Some(message) = self.subscriber.next().await {
                self.handle(&message).await;
            }
        })
        .await;
        if drained.is_err() {
            warn!("nats-drain-timed-out");
        }
        match tokio::time::timeout(SHUTDOWN_DRAIN_TIMEOUT, self.client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => warn!(error = %err, "nats-flush-failed"),
            Err(_) => warn!("nats-flush-timed-out"),
        }
    }
}

/// Resolves once `shutdown` is true, or when its sender is gone (nobody can ask any more, and
/// the router that owned it is stopping).
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// What one prune tick did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PruneOutcome {
    /// NATS is down and `suspend_pruning_if_nats_unavailable` is set.
    Suspended,
    Pruned {
        /// All endpoints were marked fresh first (first prune after a reconnect).
        refreshed: bool,
        removed: usize,
    },
}

/// One prune tick (A.3 "TTL / pruning", "NATS down").
fn prune_once(
    table: &RouteTable,
    status: &ConnectionStatus,
    suspend_if_disconnected: bool,
) -> PruneOutcome {
    let connected = status.is_connected();
    if suspend_if_disconnected && !connected {
        info!("prune-suspended: NATS is not connected");
        return PruneOutcome::Suspended;
    }
    // Only once connected again: a refresh during the outage would be undone by the outage.
    let refreshed = connected && status.outage_since_last_prune.swap(false, Ordering::SeqCst);
    if refreshed {
        info!("refreshing all endpoints: first prune since NATS reconnected");
        table.refresh_all();
    }
    let removed = table.prune_stale();
    if removed > 0 {
        info!(removed, "pruned-stale-endpoints");
    }
    PruneOutcome::Pruned { refreshed, removed }
}

/// The prune loop of a router without NATS (routes only from the Routing API): TTL pruning
/// every `interval`, never suspended (there is no NATS connection to wait for). The task runs
/// until aborted.
pub fn spawn_pruner_without_nats(table: Arc<RouteTable>, interval: Duration) -> JoinHandle<()> {
    tokio::spawn(prune_loop(
        table,
        Arc::new(ConnectionStatus::new_connected()),
        interval,
        false,
    ))
}

async fn prune_loop(
    table: Arc<RouteTable>,
    status: Arc<ConnectionStatus>,
    interval: Duration,
    suspend_if_disconnected: bool,
) {
    // Like Go's ticker: the first prune is one interval after start.
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let table = table.clone();
        let status = status.clone();
        // Pruning walks the whole table under the writer lock: keep it off the async workers.
        let tick = tokio::task::spawn_blocking(move || {
            prune_once(&table, &status, suspend_if_disconnected)
        });
        if let Err(err) = tick.await {
            error!(error = %err, "prune-failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::TableSettings;

    const ROUTE_EMITTER_REGISTER: &str = r#"{"host":"10.0.16.5","port":61012,"tls_port":61014,"uris":["myapp.apps.example.com","myapp.apps.example.com/path"],"app":"6e6b2f1e-app","private_instance_id":"a1b2c3d4-inst","private_instance_index":"0","server_cert_domain_san":"a1b2c3d4-inst","tags":{"component":"route-emitter"},"endpoint_updated_at_ns":1729260000000000000,"availability_zone":"z1"}"#;

    fn parse(json: &str) -> Registration {
        parse_registration(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    fn parse_err(json: &str) -> RegistrationError {
        match parse_registration(json.as_bytes()) {
            Ok(r) => panic!("{json} parsed: {r:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn parses_route_emitter_message_with_tls_port() {
        let r = parse(ROUTE_EMITTER_REGISTER);
        assert_eq!(
            r.uris,
            vec!["myapp.apps.example.com", "myapp.apps.example.com/path"]
        );
        let s = &r.spec;
        assert_eq!(s.host, "10.0.16.5");
        assert_eq!(s.port, 61012);
        assert_eq!(s.tls_port, 61014);
        assert_eq!(s.addr(), "10.0.16.5:61014");
        assert_eq!(s.app, "6e6b2f1e-app");
        assert_eq!(s.private_instance_id, "a1b2c3d4-inst");
        assert_eq!(s.private_instance_index, "0");
        assert_eq!(s.server_cert_domain_san, "a1b2c3d4-inst");
        assert_eq!(
            s.tags,
            Some([("component".to_string(), "route-emitter".to_string())].into())
        );
        assert_eq!(s.endpoint_updated_at_ns, 1_729_260_000_000_000_000);
        assert_eq!(s.availability_zone, "z1");
        assert_eq!(s.protocol, Protocol::Http1);
        assert_eq!(s.lb_algo, None);
        assert_eq!(s.modification_tag, Default::default());
    }

    #[test]
    fn parses_every_field() {
        let r = parse(
            r#"{"host":"backend.internal","port":8080,"uris":["a.com"],"app":"app-guid",
                "private_instance_id":"inst-guid","private_instance_index":"3",
                "server_cert_domain_san":"san","route_service_url":"https://rs.example.com/x",
                "tags":{"component":"c","k":"v"},"stale_threshold_in_seconds":45,
                "isolation_segment":"is1","endpoint_updated_at_ns":-5,"protocol":"http2",
                "availability_zone":"z2","options":{"lb_algo":"least-connection"}}"#,
        );
        let expected = EndpointSpec {
            host: "backend.internal".into(),
            port: 8080,
            tls_port: 0,
            app: "app-guid".into(),
            private_instance_id: "inst-guid".into(),
            private_instance_index: "3".into(),
            server_cert_domain_san: "san".into(),
            route_service_url: "https://rs.example.com/x".into(),
            tags: Some(
                [
                    ("component".to_string(), "c".to_string()),
                    ("k".to_string(), "v".to_string()),
                ]
                .into(),
            ),
            stale_threshold_in_seconds: 45,
            isolation_segment: "is1".into(),
            availability_zone: "z2".into(),
            protocol: Protocol::Http2,
            lb_algo: Some(BalancingAlgorithm::LeastConnection),
            modification_tag: Default::default(),
            endpoint_updated_at_ns: -5,
        };
        assert_eq!(r.spec, expected);
        assert_eq!(r.uris, vec!["a.com"]);
        assert_eq!(r.spec.addr(), "backend.internal:8080");
    }

    #[test]
    fn missing_and_null_optional_fields_take_zero_values() {
        let r = parse(r#"{"host":"10.0.0.1","port":80,"uris":["a.com"]}"#);
        assert_eq!(
            r.spec,
            EndpointSpec {
                host: "10.0.0.1".into(),
                port: 80,
                ..EndpointSpec::default()
            }
        );
        let r = parse(
            r#"{"host":"10.0.0.1","port":80,"uris":["a.com"],"tags":null,"app":null,
                "tls_port":null,"options":null,"protocol":null,"stale_threshold_in_seconds":null}"#,
        );
        assert_eq!(r.spec.tags, None);
        assert_eq!(r.spec.app, "");
        assert_eq!(r.spec.tls_port, 0);
        assert_eq!(r.spec.protocol, Protocol::Http1);
        let r = parse(r#"{}"#);
        assert!(r.uris.is_empty());
        assert_eq!(r.spec, EndpointSpec::default());
    }

    #[test]
    fn unknown_fields_are_ignored_and_escaped_strings_decoded() {
        let r = parse(
            r#"{"host":"10.0.0.1","port":80,"uris":["caf\u00e9.com","a\/b.com"],"future":{"x":[1]},"app":"a\"b"}"#,
        );
        assert_eq!(r.uris, vec!["café.com", "a/b.com"]);
        assert_eq!(r.spec.app, "a\"b");
    }

    #[test]
    fn protocol_defaults_to_http1_and_keeps_http2() {
        let p = |proto: &str| {
            parse(&format!(r#"{{"host":"h","port":1,"protocol":"{proto}"}}"#))
                .spec
                .protocol
        };
        assert_eq!(p(""), Protocol::Http1);
        assert_eq!(p("http1"), Protocol::Http1);
        assert_eq!(p("http2"), Protocol::Http2);
        assert_eq!(p("spdy"), Protocol::Http1);
    }

    #[test]
    fn lb_algo_valid_values_apply_and_invalid_is_ignored() {
        let algo = |name: &str| {
            parse(&format!(
                r#"{{"host":"h","port":1,"options":{{"lb_algo":"{name}"}}}}"#
            ))
            .spec
            .lb_algo
        };
        assert_eq!(algo("round-robin"), Some(BalancingAlgorithm::RoundRobin));
        assert_eq!(
            algo("least-connection"),
            Some(BalancingAlgorithm::LeastConnection)
        );
        assert_eq!(algo("random"), None);
        assert_eq!(algo(""), None);
        // The rest of the message is still accepted.
        let r = parse(r#"{"host":"h","port":1,"uris":["a.com"],"options":{"lb_algo":"nope"}}"#);
        assert_eq!(r.uris, vec!["a.com"]);
    }

    #[test]
    fn private_instance_index_must_be_a_string() {
        assert_eq!(
            parse(r#"{"host":"h","port":1,"private_instance_index":"7"}"#)
                .spec
                .private_instance_index,
            "7"
        );
        assert!(matches!(
            parse_err(r#"{"host":"h","port":1,"private_instance_index":7}"#),
            RegistrationError::Json(_)
        ));
    }

    #[test]
    fn route_service_url_must_be_https() {
        for url in [
            "http://rs.example.com",
            "HTTPS://rs.example.com",
            "rs.example.com",
        ] {
            let e = parse_err(&format!(
                r#"{{"host":"h","port":1,"uris":["a.com"],"route_service_url":"{url}"}}"#
            ));
            assert!(
                matches!(e, RegistrationError::RouteServiceUrlNotHttps),
                "{url}: {e}"
            );
            assert_eq!(e.to_string(), "route_service_url must be https");
        }
        let r = parse(r#"{"host":"h","port":1,"route_service_url":""}"#);
        assert_eq!(r.spec.route_service_url, "");
    }

    #[test]
    fn out_of_range_ports_and_wrong_types_are_json_errors() {
        for json in [
            r#"{"host":"h","port":70000}"#,
            r#"{"host":"h","port":-1}"#,
            r#"{"host":"h","port":80,"tls_port":65536}"#,
            r#"{"host":"h","port":"80"}"#,
            r#"{"host":"h","port":80.5}"#,
            r#"{"host":1,"port":80}"#,
            r#"{"host":"h","port":80,"uris":"a.com"}"#,
            r#"{"host":"h","port":80,"tags":{"k":1}}"#,
            r#"{"host":"h","port":80,"options":"least-connection"}"#,
            r#"{"host":"h","port":80,"stale_threshold_in_seconds":"30"}"#,
        ] {
            let e = parse_err(json);
            assert!(matches!(e, RegistrationError::Json(_)), "{json}: {e}");
        }
    }

    #[test]
    fn malformed_json_is_an_error() {
        for json in [
            "",
            "{",
            "not json",
            r#"{"host":"h","port":80"#,
            "[1,2]",
            "null",
        ] {
            let e = parse_err(json);
            assert!(matches!(e, RegistrationError::Json(_)), "{json:?}: {e}");
            assert!(e.to_string().starts_with("invalid registry message JSON"));
        }
    }

    #[test]
    fn negative_stale_threshold_means_default() {
        let r = parse(r#"{"host":"h","port":1,"stale_threshold_in_seconds":-10}"#);
        assert_eq!(r.spec.stale_threshold_in_seconds, 0);
    }

    fn test_config(yaml: &str) -> Config {
        Config::from_yaml(yaml).unwrap_or_else(|e| panic!("config: {e}"))
    }

    #[test]
    fn router_start_json_matches_upstream_field_order() {
        let config = test_config(
            "ip: 192.0.2.2\nstart_response_delay_interval: 1s\ndroplet_stale_threshold: 120s\n",
        );
        assert_eq!(
            router_start_json(&config, "0-1e44e38f-b63b-4956-45f0-15cacfd4e1d4"),
            r#"{"id":"0-1e44e38f-b63b-4956-45f0-15cacfd4e1d4","hosts":["192.0.2.2"],"minimumRegisterIntervalInSeconds":1,"pruneThresholdInSeconds":120}"#
        );
        // Upstream's code defaults: 5s register interval, 120s prune threshold.
        let config = test_config("ip: 10.0.1.10\n");
        assert_eq!(
            router_start_json(&config, "3-x"),
            r#"{"id":"3-x","hosts":["10.0.1.10"],"minimumRegisterIntervalInSeconds":5,"pruneThresholdInSeconds":120}"#
        );
    }

    fn message(subject: &str, reply: Option<&str>, payload: &str) -> Message {
        Message {
            subject: subject.into(),
            reply: reply.map(Into::into),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            headers: None,
            status: None,
            description: None,
            length: payload.len(),
        }
    }

    #[test]
    fn handle_message_registers_unregisters_and_answers_greet() {
        let table = RouteTable::new(TableSettings::default());
        assert_eq!(
            handle_message(
                &table,
                &message(SUBJECT_REGISTER, None, ROUTE_EMITTER_REGISTER)
            ),
            MessageOutcome::Registered
        );
        let pool = table
            .lookup("myapp.apps.example.com", "/")
            .expect("registered");
        assert_eq!(pool.endpoints()[0].addr(), "10.0.16.5:61014");
        assert!(table.lookup("myapp.apps.example.com", "/path/x").is_some());

        assert_eq!(
            handle_message(
                &table,
                &message(SUBJECT_UNREGISTER, None, ROUTE_EMITTER_REGISTER)
            ),
            MessageOutcome::Unregistered
        );
        assert!(table.lookup("myapp.apps.example.com", "/").is_none());
        assert_eq!(table.route_count(), 0);

        assert_eq!(
            handle_message(&table, &message(SUBJECT_GREET, Some("_INBOX.greet"), "")),
            MessageOutcome::GreetReply("_INBOX.greet".into())
        );
        assert_eq!(
            handle_message(&table, &message(SUBJECT_GREET, None, "")),
            MessageOutcome::Ignored
        );
    }

    #[test]
    fn handle_message_drops_bad_payloads_without_touching_the_table() {
        let table = RouteTable::new(TableSettings::default());
        for (subject, payload) in [
            (SUBJECT_REGISTER, "{not json"),
            (
                SUBJECT_REGISTER,
                r#"{"host":"h","port":70000,"uris":["a.com"]}"#,
            ),
            (
                SUBJECT_REGISTER,
                r#"{"host":"h","port":1,"uris":["a.com"],"route_service_url":"http://rs"}"#,
            ),
            (SUBJECT_UNREGISTER, ""),
            ("router.whatever", "nope"),
        ] {
            assert_eq!(
                handle_message(&table, &message(subject, None, payload)),
                MessageOutcome::Dropped,
                "{subject} {payload}"
            );
        }
        assert_eq!(table.route_count(), 0);
        assert_eq!(
            handle_message(&table, &message("router.start", None, r#"{"id":"x"}"#)),
            MessageOutcome::Ignored
        );
    }

    fn spec_with_ttl(port: u16, ttl_secs: u64) -> EndpointSpec {
        EndpointSpec {
            host: "10.0.0.1".into(),
            port,
            stale_threshold_in_seconds: ttl_secs,
            ..EndpointSpec::default()
        }
    }

    fn callbacks(status: &Arc<ConnectionStatus>) -> (Callbacks, mpsc::Receiver<ConnectionNotice>) {
        let (notices, notices_rx) = mpsc::channel(NOTICE_QUEUE);
        let callbacks = Callbacks {
            status: status.clone(),
            notices,
            selector: std::sync::Mutex::new(ServerSelector::default()),
            current: std::sync::Mutex::new(ServerIdentity::default()),
            outage_ticker: std::sync::Mutex::new(None),
            ping_interval: Duration::from_secs(20),
            auth_refusals: AtomicUsize::new(0),
            auth_refusals_allowed: 1,
        };
        (callbacks, notices_rx)
    }

    #[tokio::test]
    async fn prune_is_suspended_while_disconnected_and_refreshes_after_reconnect() {
        let table = RouteTable::new(TableSettings::default());
        table.register("a.com", &spec_with_ttl(1, 1));
        let status = Arc::new(ConnectionStatus::new_connected());
        let (cb, mut notices_rx) = callbacks(&status);

        // The initial connection's Connected event is not a reconnect.
        cb.on_event(Event::Connected).await;
        assert!(notices_rx.try_recv().is_err());

        cb.on_event(Event::Disconnected).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(prune_once(&table, &status, true), PruneOutcome::Suspended);
        assert!(
            table.lookup("a.com", "/").is_some(),
            "kept while NATS is down"
        );

        cb.on_event(Event::Connected).await;
        assert_eq!(
            notices_rx.try_recv().ok(),
            Some(ConnectionNotice::Reconnected)
        );
        // The endpoint is stale by now, but the outage swallowed its heartbeats.
        assert_eq!(
            prune_once(&table, &status, true),
            PruneOutcome::Pruned {
                refreshed: true,
                removed: 0
            }
        );
        assert!(table.lookup("a.com", "/").is_some());

        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            prune_once(&table, &status, true),
            PruneOutcome::Pruned {
                refreshed: false,
                removed: 1
            }
        );
        assert!(table.lookup("a.com", "/").is_none());
    }

    #[tokio::test]
    async fn prune_continues_while_disconnected_when_not_suspending() {
        let table = RouteTable::new(TableSettings::default());
        table.register("a.com", &spec_with_ttl(1, 1));
        let status = Arc::new(ConnectionStatus::new_connected());
        let (cb, _notices_rx) = callbacks(&status);
        cb.on_event(Event::Disconnected).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            prune_once(&table, &status, false),
            PruneOutcome::Pruned {
                refreshed: false,
                removed: 1
            }
        );
        // The refresh is still owed to the first prune after the reconnect.
        table.register("a.com", &spec_with_ttl(1, 1));
        cb.on_event(Event::Connected).await;
        assert_eq!(
            prune_once(&table, &status, false),
            PruneOutcome::Pruned {
                refreshed: true,
                removed: 0
            }
        );
    }

    #[tokio::test]
    async fn a_repeated_authorization_violation_closes_the_connection_for_good() {
        let refused = || {
            Event::ClientError(async_nats::ClientError::Other(
                async_nats::ConnectErrorKind::AuthorizationViolation.to_string(),
            ))
        };
        let status = Arc::new(ConnectionStatus::new_connected());
        let (cb, mut notices_rx) = callbacks(&status);
        cb.on_event(Event::Disconnected).await;
        cb.on_event(refused()).await;
        assert!(
            notices_rx.try_recv().is_err(),
            "one refusal per server is retried"
        );
        // Other errors are outages, not refusals.
        cb.on_event(Event::ClientError(async_nats::ClientError::Other(
            "timed out".into(),
        )))
        .await;
        assert!(notices_rx.try_recv().is_err());
        // Up again: the count starts over.
        cb.on_event(Event::Connected).await;
        let _ = notices_rx.try_recv();
        cb.on_event(Event::Disconnected).await;
        cb.on_event(refused()).await;
        assert!(notices_rx.try_recv().is_err(), "the count started over");
        cb.on_event(refused()).await;
        assert_eq!(notices_rx.try_recv().ok(), Some(ConnectionNotice::Closed));
        assert!(!status.is_connected());
    }

    #[tokio::test]
    async fn closed_is_fatal_unless_we_are_closing() {
        let status = Arc::new(ConnectionStatus::new_connected());
        let (cb, mut notices_rx) = callbacks(&status);
        cb.on_event(Event::Closed).await;
        assert_eq!(notices_rx.try_recv().ok(), Some(ConnectionNotice::Closed));
        assert!(!status.is_connected());

        let status = Arc::new(ConnectionStatus::new_connected());
        let (cb, mut notices_rx) = callbacks(&status);
        status.closing.store(true, Ordering::SeqCst);
        cb.on_event(Event::Closed).await;
        assert!(notices_rx.try_recv().is_err());
    }

    fn pool(urls: &[&str]) -> Vec<async_nats::Server> {
        urls.iter()
            .map(|u| async_nats::Server {
                addr: u.parse().unwrap(),
                failed_attempts: 0,
                did_connect: false,
                is_discovered: false,
                last_error: None,
            })
            .collect()
    }

    /// nats.go's reconnect loop: every server in turn, after the one that failed, and
    /// ReconnectWait before each attempt that completes a round; the initial connect never
    /// waits.
    #[test]
    fn reconnects_go_round_the_servers_pausing_after_each_round() {
        let servers = pool(&["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]);
        let mut sel = ServerSelector::default();
        let first = sel.select(&servers[1..]).unwrap();
        assert_eq!(first.delay, Some(Duration::ZERO), "initial connect");
        assert_eq!(first.addr, servers[1].addr);
        assert_eq!(sel.connected(), Some(servers[1].addr.clone()));

        let mut picks = Vec::new();
        for _ in 0..4 {
            let choice = sel.select(&servers).unwrap();
            let delay = choice.delay.unwrap_or_default();
            picks.push((choice.addr.host().to_string(), delay >= RECONNECT_WAIT));
            assert!(delay < RECONNECT_WAIT + Duration::from_millis(RECONNECT_JITTER_MS));
        }
        assert_eq!(
            picks,
            [
                ("10.0.0.1".to_string(), false),
                ("10.0.0.2".to_string(), true),
                ("10.0.0.1".to_string(), false),
                ("10.0.0.2".to_string(), true),
            ]
        );

        let single = pool(&["nats://10.0.0.1:4222"]);
        let mut sel = ServerSelector::default();
        sel.select(&single);
        sel.connected();
        let again = sel.select(&single).unwrap();
        assert!(
            again.delay.unwrap_or_default() >= RECONNECT_WAIT,
            "one server: every reconnect attempt waits"
        );
    }

    #[test]
    fn authority_brackets_ipv6() {
        assert_eq!(authority("localhost", 4222), "localhost:4222");
        assert_eq!(authority("::1", 4222), "[::1]:4222");
    }
}
