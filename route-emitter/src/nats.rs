//! HTTP routes over NATS to gorouter (../shared/spec/gorouter.md A.1-A.2).
//!
//! - Greeting: `router.greet` is requested with a reply inbox every second until a router
//!   answers; `router.start` is subscribed. Both carry `minimumRegisterIntervalInSeconds`.
//!   After [`MAX_GREET_ATTEMPTS`] attempts without an answer (NATS unreachable, no gorouter)
//!   the publisher gives up and the process exits non-zero, as Diego's route-emitter does, so
//!   that a supervisor restarts it and the failure is visible.
//! - Every route is re-published on `router.register` at the greater of its
//!   `registration_interval` and the router's minimum interval.
//! - A `router.start` (a router started or reconnected) re-registers everything at once after
//!   a small random jitter; so does our own reconnect to NATS.
//! - A route that leaves the active set (config file changed, health check failed) is
//!   unregistered at once and again every interval, `unregistration_message_limit` messages
//!   in all (as route-registrar does), unless it comes back first; on shutdown every route is
//!   unregistered `unregistration_message_limit` times.
//!
//! While NATS is unreachable the client keeps reconnecting forever; the route table is kept.
//! `nats_mtls_config` turns on mutual TLS to NATS.
//!
//! Scale (100k routes and more): a route-set change is a hash diff, linear in the set; each
//! route's message is serialised once, and a send only appends `endpoint_updated_at_ns`; the
//! schedule is a min-heap of due times, so a 100 ms tick costs only the routes that are due.
//! Everything due is sent in one burst, as upstream does.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::Subject;
use futures::StreamExt;
use routing_api_client::TlsOptions;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::config::{MessageBusServer, NatsTls, Route, RouteKind, Transport};
use crate::metrics::{Destination, EmitterMetrics};
use crate::sources::RouteSet;

/// Lower bound of the random delay before re-registering after `router.start`: gorouter
/// announces `router.start` just before it subscribes to `router.*`.
pub const MIN_START_JITTER: Duration = Duration::from_millis(100);
/// Upper bound of the random delay before re-registering after `router.start`.
pub const MAX_START_JITTER: Duration = Duration::from_millis(500);
/// Time between `router.greet` attempts (Diego's route-emitter: 1 s); our
/// `router_greet_retry_interval` key changes it.
pub const GREET_RETRY: Duration = Duration::from_secs(1);
/// `router.greet` attempts before giving up (Diego's route-emitter: `MaxGreetAttempts` 30).
pub const MAX_GREET_ATTEMPTS: u32 = 30;

/// How the publisher gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NatsError {
    #[error(
        "attempted to greet 'router' {attempts} times ({interval:?} apart) without success: no \
         gorouter answered router.greet; check that NATS (message_bus_servers) is reachable and \
         that gorouter runs and is connected to the same NATS"
    )]
    GreetGaveUp { attempts: u32, interval: Duration },
}

/// The greeting's schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GreetSettings {
    /// Time between attempts (and each attempt's wait for a reply).
    pub retry_interval: Duration,
    /// Attempts before [`NatsError::GreetGaveUp`].
    pub max_attempts: u32,
}

impl Default for GreetSettings {
    fn default() -> Self {
        GreetSettings {
            retry_interval: GREET_RETRY,
            max_attempts: MAX_GREET_ATTEMPTS,
        }
    }
}

/// `options` of a registration message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryOptions {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub lb_algo: String,
}

impl RegistryOptions {
    fn is_empty(&self) -> bool {
        self.lb_algo.is_empty()
    }
}

/// A `router.register` / `router.unregister` payload (A.2): every field but `host`, `port`
/// and `uris` is omitted when empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryMessage {
    pub host: String,
    pub port: u16,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tls_port: u16,
    pub uris: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub app: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_instance_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_instance_index: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server_cert_domain_san: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub route_service_url: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub isolation_segment: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub availability_zone: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "RegistryOptions::is_empty")]
    pub options: RegistryOptions,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub endpoint_updated_at_ns: i64,
}

fn is_zero(v: &u16) -> bool {
    *v == 0
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

impl RegistryMessage {
    /// The message for `route`, stamped with the current time.
    pub fn for_route(route: &Route) -> Self {
        RegistryMessage {
            endpoint_updated_at_ns: now_ns(),
            ..Self::unstamped(route)
        }
    }

    /// The message for `route` without `endpoint_updated_at_ns`.
    pub fn unstamped(route: &Route) -> Self {
        RegistryMessage {
            host: route.host.clone(),
            port: route.port.unwrap_or(0),
            tls_port: route.tls_port.unwrap_or(0),
            uris: route.uris.clone(),
            app: route.app.clone(),
            private_instance_id: route.private_instance_id.clone(),
            private_instance_index: route.private_instance_index.clone(),
            server_cert_domain_san: route.server_cert_domain_san.clone(),
            route_service_url: route.route_service_url.clone(),
            tags: route.tags.clone(),
            isolation_segment: route.isolation_segment.clone(),
            availability_zone: route.availability_zone.clone(),
            protocol: route.protocol.clone(),
            options: RegistryOptions {
                lb_algo: route.lb_algo.clone(),
            },
            endpoint_updated_at_ns: 0,
        }
    }
}

/// The part of `router.start` / the greet reply we use.
#[derive(Debug, Deserialize)]
struct RouterStart {
    #[serde(default, rename = "minimumRegisterIntervalInSeconds")]
    minimum_register_interval_in_seconds: u64,
}

/// The longest minimum register interval a router may ask for. gorouter asks for its
/// `start_response_delay_interval` (20 s by default); anything from NATS beyond an hour is
/// taken as an hour, so a hostile `router.start` cannot push the schedule past the clock.
pub const MAX_ROUTER_MIN_INTERVAL: Duration = Duration::from_secs(3600);

/// A router's `minimumRegisterIntervalInSeconds`, capped at [`MAX_ROUTER_MIN_INTERVAL`].
fn router_min_interval(secs: u64) -> Duration {
    Duration::from_secs(secs).min(MAX_ROUTER_MIN_INTERVAL)
}

/// Whether `route` goes to gorouter over NATS.
pub fn is_nats_route(route: &Route) -> bool {
    route.kind == RouteKind::Http && route.transport == Transport::Nats
}

/// The user and password sent in NATS's `CONNECT`: the first server's that has a user.
/// async-nats ignores credentials in a server URL, and route-registrar's BOSH job renders the
/// same credentials for every server.
pub fn credentials(servers: &[MessageBusServer]) -> Option<(String, String)> {
    servers
        .iter()
        .find(|s| !s.user.is_empty())
        .map(|s| (s.user.clone(), s.password.clone()))
}

/// `nats://host` for each server; the credentials go into `CONNECT` through [`credentials`]
/// (a URL's would only leak into logs).
pub fn server_urls(servers: &[MessageBusServer]) -> Vec<String> {
    servers
        .iter()
        .map(|s| format!("nats://{}", s.host))
        .collect()
}

/// Connects (retrying in the background forever) and returns the client plus a channel that
/// receives `()` after every (re)connect.
///
/// With `tls` the connection requires TLS, verifies the server against `ca_path` and presents
/// the client certificate; the files are read here, so a missing or bad one is an error at
/// start rather than a reconnect loop.
pub async fn connect(
    servers: &[MessageBusServer],
    tls: Option<&NatsTls>,
) -> Result<(async_nats::Client, mpsc::UnboundedReceiver<()>), String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut options = async_nats::ConnectOptions::new();
    if let Some(tls) = tls {
        let config = routing_api_client::tls::client_config(&TlsOptions::mutual(
            &tls.ca_path,
            &tls.cert_path,
            &tls.key_path,
        ))
        .map_err(|e| format!("nats_mtls_config: {e}"))?;
        options = options.require_tls(true).tls_client_config(config);
    }
    if let Some((user, password)) = credentials(servers) {
        options = options.user_and_password(user, password);
    }
    let client = options
        .retry_on_initial_connect()
        .max_reconnects(None)
        .name("route-emitter")
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!("Route Registrar.nats-connected");
                        let _ = tx.send(());
                    }
                    async_nats::Event::Disconnected => {
                        tracing::error!("Route Registrar.nats-disconnected")
                    }
                    other => tracing::info!(event = %other, "Route Registrar.nats-event"),
                }
            }
        })
        .connect(server_urls(servers))
        .await
        .map_err(|e| format!("nats: {e}"))?;
    Ok((client, rx))
}

/// `router.register`, as a constant (no allocation per message).
const REGISTER: Subject = Subject::from_static("router.register");
/// `router.unregister`.
const UNREGISTER: Subject = Subject::from_static("router.unregister");

/// Unix time in nanoseconds (0 if the clock is before 1970).
fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// A route's registration message, serialised once: the JSON of
/// [`RegistryMessage::unstamped`] without its closing brace. [`stamped`](Self::stamped)
/// appends `endpoint_updated_at_ns` (the struct's last field) and the brace, which gives exactly
/// the bytes `serde_json` writes for the stamped [`RegistryMessage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedMessage(Box<[u8]>);

impl EncodedMessage {
    /// Serialises `route`'s message.
    pub fn new(route: &Route) -> Result<Self, String> {
        let mut json =
            serde_json::to_vec(&RegistryMessage::unstamped(route)).map_err(|e| e.to_string())?;
        // `host`, `port` and `uris` are always present, so the object is never empty and the
        // stamp is appended after a comma.
        match json.pop() {
            Some(b'}') => Ok(EncodedMessage(json.into_boxed_slice())),
            _ => Err("registration message is not a JSON object".into()),
        }
    }

    /// The message stamped with `endpoint_updated_at_ns` (0 = omitted, as serde does).
    pub fn stamped(&self, endpoint_updated_at_ns: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() + 48);
        out.extend_from_slice(&self.0);
        if endpoint_updated_at_ns != 0 {
            // Writing into a Vec cannot fail.
            let _ = write!(out, ",\"endpoint_updated_at_ns\":{endpoint_updated_at_ns}");
        }
        out.push(b'}');
        out
    }
}

/// One registered route.
struct Entry {
    message: EncodedMessage,
    registration_interval: Duration,
    /// When the route was last published on `router.register`.
    last_sent: Option<Instant>,
    /// A re-registration requested for this time (router.start, reconnect).
    forced: Option<Instant>,
    /// When it is next published: the earlier of `forced` and the regular time
    /// (`last_sent` + the greater of its interval and the router's minimum); for a route never
    /// sent, the time it was added. The queue item with this time is the entry's live one.
    due: Instant,
}

impl Entry {
    fn next_due(&self, min_interval: Duration) -> Instant {
        let regular = match self.last_sent {
            None => self.due,
            Some(last) => last + self.registration_interval.max(min_interval),
        };
        match self.forced {
            Some(f) => regular.min(f),
            None => regular,
        }
    }
}

/// The NATS routes being published and their schedule.
///
/// Routes are identified by value (`ids`, hashed); each has a numeric id, never reused. The
/// schedule is a min-heap of `(due, id)`: a tick pops only what is due. Each live entry has
/// exactly one item whose time equals its `due`; items of removed entries are skipped when they
/// come up, and the heap is rebuilt if they ever outnumber the live ones. Events that move
/// every route (the router's minimum interval, router.start, a reconnect) reschedule all
/// entries and rebuild the heap in O(n).
struct Table {
    ids: HashMap<Route, u64>,
    entries: HashMap<u64, Entry>,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    next_id: u64,
    min_interval: Duration,
    /// Routes that left the set and are still being unregistered (route-registrar sends
    /// `router.unregister` once per interval, up to `unregistration_message_limit` times, so a
    /// message lost while NATS was away does not leave the route behind).
    retiring: HashMap<Route, Retiring>,
    unregistration_message_limit: u32,
}

/// A removed route's remaining unregistrations.
struct Retiring {
    message: EncodedMessage,
    interval: Duration,
    remaining: u32,
    due: Instant,
}

impl Table {
    fn new(unregistration_message_limit: u32) -> Self {
        Table {
            ids: HashMap::new(),
            entries: HashMap::new(),
            queue: BinaryHeap::new(),
            next_id: 0,
            min_interval: Duration::ZERO,
            retiring: HashMap::new(),
            unregistration_message_limit: unregistration_message_limit.max(1),
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Makes the table hold the NATS routes of `set`: new routes are due at `now`; returns the
    /// name and message of every route that left (to be unregistered now). Those are
    /// unregistered again every interval until `unregistration_message_limit` messages have
    /// been sent ([`due_unregisters`](Self::due_unregisters)), unless they come back.
    fn sync(&mut self, set: &[Route], now: Instant) -> Vec<(String, EncodedMessage)> {
        let current: HashSet<&Route> = set.iter().filter(|r| is_nats_route(r)).collect();
        let mut removed = Vec::new();
        let entries = &mut self.entries;
        let retiring = &mut self.retiring;
        let (limit, min_interval) = (self.unregistration_message_limit, self.min_interval);
        self.ids.retain(|route, id| {
            if current.contains(route) {
                return true;
            }
            if let Some(e) = entries.remove(id) {
                if limit > 1 {
                    let interval = e.registration_interval.max(min_interval);
                    retiring.insert(
                        route.clone(),
                        Retiring {
                            message: e.message.clone(),
                            interval,
                            remaining: limit - 1,
                            due: now + interval,
                        },
                    );
                }
                removed.push((route.name.clone(), e.message));
            }
            false
        });
        for route in set.iter().filter(|r| is_nats_route(r)) {
            if self.ids.contains_key(route) {
                continue;
            }
            // Back before its unregistrations ran out: registering it wins.
            self.retiring.remove(route);
            let message = match EncodedMessage::new(route) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(route = %route.name, error = %e, "Route Registrar.encoding-registration-message-failed");
                    continue;
                }
            };
            let id = self.next_id;
            self.next_id += 1;
            self.ids.insert(route.clone(), id);
            self.entries.insert(
                id,
                Entry {
                    message,
                    registration_interval: route.registration_interval,
                    last_sent: None,
                    forced: None,
                    due: now,
                },
            );
            self.queue.push(Reverse((now, id)));
        }
        if self.queue.len() > 2 * self.entries.len() + 1024 {
            self.rebuild_queue();
        }
        removed
    }

    /// Applies a new minimum register interval and/or a re-registration of every route at
    /// `force`, then reschedules everything.
    fn reschedule(&mut self, min_interval: Option<Duration>, force: Option<Instant>) {
        if let Some(min) = min_interval {
            self.min_interval = min;
        }
        for e in self.entries.values_mut() {
            if force.is_some() {
                e.forced = force;
            }
            e.due = e.next_due(self.min_interval);
        }
        self.rebuild_queue();
    }

    fn rebuild_queue(&mut self) {
        self.queue = self
            .entries
            .iter()
            .map(|(id, e)| Reverse((e.due, *id)))
            .collect();
    }

    /// The repeated unregistrations due at `now`, stamped with the current time (one pass over
    /// the retiring routes, however many are due).
    fn due_unregisters(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let mut due = Vec::new();
        self.retiring.retain(|_, r| {
            if r.due > now {
                return true;
            }
            due.push(r.message.stamped(now_ns()));
            r.remaining -= 1;
            r.due = now + r.interval;
            r.remaining > 0
        });
        due
    }

    /// The next route due at `now`, marked sent at `now`: its message stamped with the current
    /// time. `None` when nothing more is due.
    fn next_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        loop {
            let Reverse((due, id)) = *self.queue.peek()?;
            if due > now {
                return None;
            }
            self.queue.pop();
            let Some(e) = self.entries.get_mut(&id) else {
                continue;
            };
            if e.due != due {
                continue;
            }
            e.last_sent = Some(now);
            e.forced = None;
            e.due = e.next_due(self.min_interval);
            self.queue.push(Reverse((e.due, id)));
            return Some(e.message.stamped(now_ns()));
        }
    }

    fn messages(&self) -> impl Iterator<Item = &EncodedMessage> {
        self.entries.values().map(|e| &e.message)
    }
}

/// Publishes the NATS routes of the active set until `shutdown` turns true (`Ok`) or no
/// router answered the greeting (`Err`), then unregisters them `unregistration_message_limit`
/// times. Every message sent or refused is counted in `metrics`, and so are the routes kept.
pub async fn run(
    client: async_nats::Client,
    mut connected: mpsc::UnboundedReceiver<()>,
    mut routes: watch::Receiver<RouteSet>,
    mut shutdown: watch::Receiver<bool>,
    unregistration_message_limit: u32,
    greeting: GreetSettings,
    metrics: EmitterMetrics,
) -> Result<(), NatsError> {
    let mut starts = loop {
        match client.subscribe("router.start").await {
            Ok(s) => break s,
            Err(e) => {
                tracing::error!(error = %e, "Route Registrar.subscribing-to-router-start-failed-retrying");
                tokio::time::sleep(greeting.retry_interval).await;
            }
        }
    };
    let (greet_tx, mut greeted) = mpsc::unbounded_channel::<Result<u64, NatsError>>();
    let greeter = tokio::spawn(greet(client.clone(), greet_tx, greeting));
    let mut result = Ok(());
    let mut table = Table::new(unregistration_message_limit);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut changed = true;
    loop {
        if changed {
            changed = false;
            let set = routes.borrow_and_update().clone();
            let removed = table.sync(&set, Instant::now());
            metrics.nats_routes(table.len());
            let mut burst = Burst::new(UNREGISTER);
            for (name, message) in removed {
                burst.publish(&client, message.stamped(now_ns())).await;
                tracing::info!(route = %name, "Route Registrar.Unregistering route");
            }
            burst.report(&metrics);
        }
        let now = Instant::now();
        let mut burst = Burst::new(REGISTER);
        while let Some(payload) = table.next_due(now) {
            burst.publish(&client, payload).await;
        }
        burst.report(&metrics);
        if !table.retiring.is_empty() {
            let mut burst = Burst::new(UNREGISTER);
            for payload in table.due_unregisters(now) {
                burst.publish(&client, payload).await;
            }
            burst.report(&metrics);
        }
        tokio::select! {
            _ = tick.tick() => {}
            r = routes.changed() => {
                if r.is_ok() { changed = true; }
            }
            Some(greet) = greeted.recv() => match greet {
                Ok(secs) => {
                    table.reschedule(Some(router_min_interval(secs)), None);
                    tracing::info!(minimum_register_interval_seconds = secs, "Route Registrar.router-greeted");
                }
                Err(e) => {
                    tracing::error!(error = %e, "Route Registrar.greeting-router.giving-up");
                    result = Err(e);
                    break;
                }
            },
            Some(msg) = starts.next() => {
                let min = serde_json::from_slice::<RouterStart>(&msg.payload)
                    .ok()
                    .map(|start| router_min_interval(start.minimum_register_interval_in_seconds));
                let jitter = MIN_START_JITTER + (MAX_START_JITTER - MIN_START_JITTER).mul_f64(rand::random::<f64>());
                tracing::info!(jitter_ms = jitter.as_millis() as u64, "Route Registrar.router-start-received-re-registering-all-routes");
                table.reschedule(min, Some(Instant::now() + jitter));
            }
            Some(()) = connected.recv() => {
                table.reschedule(None, Some(Instant::now()));
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() { break; }
            }
        }
    }
    greeter.abort();
    let mut burst = Burst::new(UNREGISTER);
    for _ in 0..unregistration_message_limit.max(1) {
        for message in table.messages() {
            burst.publish(&client, message.stamped(now_ns())).await;
        }
    }
    burst.report(&metrics);
    metrics.nats_routes(0);
    let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
    tracing::info!(
        routes = table.len(),
        "Route Registrar.Unregistered routes successfully"
    );
    result
}

/// Publishes a run of messages on one subject and logs and counts once for the run (a
/// 100k-route round must not log 100k lines, nor 100k errors while NATS is down).
struct Burst {
    subject: Subject,
    sent: usize,
    failed: usize,
    first_error: Option<String>,
}

impl Burst {
    fn new(subject: Subject) -> Self {
        Burst {
            subject,
            sent: 0,
            failed: 0,
            first_error: None,
        }
    }

    async fn publish(&mut self, client: &async_nats::Client, payload: Vec<u8>) {
        match client.publish(self.subject.clone(), payload.into()).await {
            Ok(()) => self.sent += 1,
            Err(e) => {
                self.failed += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(e.to_string());
                }
            }
        }
    }

    fn report(&self, metrics: &EmitterMetrics) {
        if self.subject == REGISTER {
            metrics.registered(Destination::Nats, self.sent);
        } else {
            metrics.unregistered(Destination::Nats, self.sent);
        }
        metrics.failed(Destination::Nats, self.failed);
        if let Some(e) = &self.first_error {
            tracing::error!(subject = %self.subject, failed = self.failed, sent = self.sent, error = %e, "Route Registrar.publish-failed");
        }
        if self.sent > 0 {
            tracing::debug!(subject = %self.subject, messages = self.sent, "published");
        }
    }
}

/// Requests `router.greet` every `retry_interval` until a router answers (sends the answer's
/// minimum register interval) or `max_attempts` have gone unanswered (sends the error).
async fn greet(
    client: async_nats::Client,
    tx: mpsc::UnboundedSender<Result<u64, NatsError>>,
    settings: GreetSettings,
) {
    let interval = settings.retry_interval;
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for attempt in 1..=settings.max_attempts.max(1) {
        every.tick().await;
        tracing::debug!(attempt, "greeting-router");
        let reply =
            tokio::time::timeout(interval, client.request("router.greet", Default::default()))
                .await;
        match reply {
            Ok(Ok(msg)) => match serde_json::from_slice::<RouterStart>(&msg.payload) {
                Ok(start) => {
                    let _ = tx.send(Ok(start.minimum_register_interval_in_seconds));
                    return;
                }
                Err(e) => {
                    tracing::error!(attempt, error = %e, "Route Registrar.invalid-router-greet-reply-retrying")
                }
            },
            Ok(Err(e)) => {
                tracing::info!(attempt, error = %e, "Route Registrar.router-greet-failed-retrying")
            }
            Err(_) => tracing::info!(attempt, "Route Registrar.router-greet-unanswered-retrying"),
        }
    }
    let _ = tx.send(Err(NatsError::GreetGaveUp {
        attempts: settings.max_attempts.max(1),
        interval,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_routers_huge_minimum_interval_is_capped_and_schedules_without_overflow() {
        let start: RouterStart =
            serde_json::from_str(r#"{"minimumRegisterIntervalInSeconds":18446744073709551615}"#)
                .expect("a u64 parses");
        let min = router_min_interval(start.minimum_register_interval_in_seconds);
        assert_eq!(min, MAX_ROUTER_MIN_INTERVAL);
        let entry = Entry {
            message: EncodedMessage(Box::default()),
            registration_interval: Duration::from_secs(20),
            last_sent: Some(Instant::now()),
            forced: None,
            due: Instant::now(),
        };
        assert!(entry.next_due(min) > Instant::now());
        assert_eq!(router_min_interval(20), Duration::from_secs(20));
    }

    fn server(host: &str, user: &str, password: &str) -> MessageBusServer {
        MessageBusServer {
            host: host.into(),
            user: user.into(),
            password: password.into(),
        }
    }

    #[test]
    fn credentials_are_the_first_servers_with_a_user_and_stay_out_of_urls() {
        let servers = [
            server("10.0.0.1:4222", "", ""),
            server("10.0.0.2:4222", "nats", "s3cret"),
        ];
        assert_eq!(
            credentials(&servers),
            Some(("nats".to_string(), "s3cret".to_string()))
        );
        assert_eq!(
            server_urls(&servers),
            ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]
        );
        assert_eq!(credentials(&servers[..1]), None);
    }

    fn http_route(name: &str, interval: &str) -> Route {
        crate::config::validate_route(
            crate::config::RouteSchema {
                name: name.into(),
                port: Some(8080),
                uris: vec![format!("{name}.example.com")],
                registration_interval: interval.into(),
                ..Default::default()
            },
            &crate::config::RouteDefaults {
                host: "10.0.0.1".into(),
                availability_zone: String::new(),
                ..Default::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn message_fields_and_omissions() {
        let mut route = http_route("a", "20s");
        let mut msg = RegistryMessage::for_route(&route);
        msg.endpoint_updated_at_ns = 0;
        assert_eq!(
            serde_json::to_string(&msg).unwrap(),
            r#"{"host":"10.0.0.1","port":8080,"uris":["a.example.com"]}"#
        );
        assert_eq!(msg, RegistryMessage::unstamped(&route));
        let encoded = EncodedMessage::new(&route).unwrap();
        assert_eq!(
            encoded.stamped(0),
            br#"{"host":"10.0.0.1","port":8080,"uris":["a.example.com"]}"#
        );
        assert_eq!(
            encoded.stamped(1_700_000_000_123_456_789),
            br#"{"host":"10.0.0.1","port":8080,"uris":["a.example.com"],"endpoint_updated_at_ns":1700000000123456789}"#
        );
        route.tls_port = Some(8443);
        route.lb_algo = "least-connection".into();
        route.private_instance_index = "0".into();
        let v = serde_json::to_value(RegistryMessage::for_route(&route)).unwrap();
        assert_eq!(v["tls_port"], 8443);
        assert_eq!(v["options"]["lb_algo"], "least-connection");
        assert_eq!(v["private_instance_index"], "0");
        assert!(v["endpoint_updated_at_ns"].as_i64().unwrap() > 0);
        let stamped: serde_json::Value =
            serde_json::from_slice(&EncodedMessage::new(&route).unwrap().stamped(now_ns()))
                .unwrap();
        assert!(stamped["endpoint_updated_at_ns"].as_i64().unwrap() > 0);
    }

    /// The pre-serialised message plus its stamp is byte for byte what serde writes for the
    /// stamped message, with every field set, with none, and with escapes.
    #[test]
    fn encoded_message_is_byte_compatible() {
        let plain = http_route("p", "1s");
        let mut full = http_route("f", "1s");
        full.uris = vec!["f.example.com".into(), "f.example.com/p\"q\\".into()];
        full.tls_port = Some(8443);
        full.app = "app-guid".into();
        full.private_instance_id = "iid".into();
        full.private_instance_index = "3".into();
        full.server_cert_domain_san = "san".into();
        full.route_service_url = "https://rs.example.com".into();
        full.tags = [("component".to_string(), "x".to_string())].into();
        full.isolation_segment = "seg".into();
        full.availability_zone = "z1".into();
        full.protocol = "http2".into();
        full.lb_algo = "round-robin".into();
        for route in [&plain, &full] {
            let encoded = EncodedMessage::new(route).unwrap();
            for ns in [0, 1, -5, i64::MAX, now_ns()] {
                let expected = serde_json::to_vec(&RegistryMessage {
                    endpoint_updated_at_ns: ns,
                    ..RegistryMessage::unstamped(route)
                })
                .unwrap();
                assert_eq!(
                    String::from_utf8(encoded.stamped(ns)).unwrap(),
                    String::from_utf8(expected).unwrap()
                );
            }
        }
    }

    fn drain(table: &mut Table, now: Instant) -> usize {
        let mut n = 0;
        while table.next_due(now).is_some() {
            n += 1;
        }
        n
    }

    #[test]
    fn table_diff_and_schedule() {
        let t0 = Instant::now();
        let a = http_route("a", "10s");
        let b = http_route("b", "30s");
        let mut table = Table::new(1);
        assert!(table.sync(&[a.clone(), b.clone()], t0).is_empty());
        assert_eq!(drain(&mut table, t0), 2, "new routes are due at once");
        assert_eq!(drain(&mut table, t0 + Duration::from_secs(9)), 0);
        assert_eq!(drain(&mut table, t0 + Duration::from_secs(10)), 1);
        // The router's minimum interval wins over a shorter registration interval.
        table.reschedule(Some(Duration::from_secs(20)), None);
        assert_eq!(drain(&mut table, t0 + Duration::from_secs(29)), 0);
        assert_eq!(drain(&mut table, t0 + Duration::from_secs(30)), 2);
        // router.start: everything at the forced time, then back to the regular schedule.
        let t1 = t0 + Duration::from_secs(31);
        table.reschedule(Some(Duration::from_secs(1)), Some(t1));
        assert_eq!(drain(&mut table, t1 - Duration::from_millis(1)), 0);
        assert_eq!(drain(&mut table, t1), 2);
        assert_eq!(drain(&mut table, t1 + Duration::from_secs(9)), 0);
        assert_eq!(drain(&mut table, t1 + Duration::from_secs(10)), 1);
        // A forced time survives a later change of the minimum interval.
        let t2 = t1 + Duration::from_secs(12);
        table.reschedule(None, Some(t2));
        table.reschedule(Some(Duration::from_secs(5)), None);
        assert_eq!(drain(&mut table, t2), 2);
        // A removed route is returned for unregistering and never published again.
        let c = http_route("c", "10s");
        let removed = table.sync(&[b.clone(), c.clone()], t2);
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].0, "a");
        assert_eq!(removed[0].1, EncodedMessage::new(&a).unwrap());
        assert_eq!(table.len(), 2);
        assert_eq!(drain(&mut table, t2), 1, "only the new route");
        assert_eq!(drain(&mut table, t2 + Duration::from_secs(60)), 2);
        // Routes other than NATS HTTP routes are not kept.
        let mut tcp = http_route("t", "1s");
        tcp.kind = crate::config::RouteKind::Tcp;
        table.sync(&[b, c, tcp], t2);
        assert_eq!(table.len(), 2);
    }

    fn drain_unregisters(table: &mut Table, now: Instant) -> usize {
        table.due_unregisters(now).len()
    }

    #[test]
    fn a_removed_route_is_unregistered_once_per_interval_up_to_the_limit() {
        let t0 = Instant::now();
        let secs = |n: u64| t0 + Duration::from_secs(n);
        let (a, b) = (http_route("a", "10s"), http_route("b", "10s"));
        let mut table = Table::new(3);
        table.sync(&[a.clone(), b.clone()], t0);
        drain(&mut table, t0);
        // Removed: one unregistration now, two more, 10 s apart.
        assert_eq!(table.sync(std::slice::from_ref(&b), secs(1)).len(), 1);
        assert_eq!(drain_unregisters(&mut table, secs(10)), 0);
        let again = table.due_unregisters(secs(11));
        assert_eq!(again.len(), 1, "second unregistration");
        assert!(again[0].starts_with(br#"{"host":"10.0.0.1","port":8080,"uris":["a.example.com"]"#));
        assert_eq!(drain_unregisters(&mut table, secs(11)), 0);
        assert_eq!(drain_unregisters(&mut table, secs(21)), 1);
        assert_eq!(drain_unregisters(&mut table, secs(100)), 0, "limit reached");
        // Removed and back before the limit: the registrations win.
        table.sync(&[], secs(30));
        table.sync(std::slice::from_ref(&b), secs(31));
        assert_eq!(drain_unregisters(&mut table, secs(100)), 0);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn table_scales_and_stays_bounded() {
        let t0 = Instant::now();
        let routes: Vec<Route> = (0..20_000)
            .map(|i| http_route(&format!("r{i}"), "1s"))
            .collect();
        let mut table = Table::new(1);
        table.sync(&routes, t0);
        assert_eq!(drain(&mut table, t0), routes.len());
        // Removing and re-adding many times leaves stale heap items behind; they stay bounded.
        for round in 0..10 {
            let half = if round % 2 == 0 {
                &routes[..10_000]
            } else {
                &routes[..]
            };
            table.sync(half, t0);
            assert!(table.queue.len() <= 2 * table.len() + 1024);
        }
        assert_eq!(table.len(), routes.len());
        let due = t0 + Duration::from_secs(1);
        assert_eq!(drain(&mut table, due), routes.len());
        assert_eq!(drain(&mut table, due), 0);
    }
}
