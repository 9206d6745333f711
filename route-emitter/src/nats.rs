//! HTTP routes over NATS to gorouter (../shared/spec/gorouter.md A.1-A.2).
//!
//! - Greeting: `router.greet` is requested with a reply inbox every second until a router
//!   answers; `router.start` is subscribed. Both carry `minimumRegisterIntervalInSeconds`.
//! - Every route is re-published on `router.register` at the greater of its
//!   `registration_interval` and the router's minimum interval.
//! - A `router.start` (a router started or reconnected) re-registers everything at once after
//!   a small random jitter; so does our own reconnect to NATS.
//! - A route that leaves the active set (config file changed, health check failed) is
//!   unregistered at once; on shutdown every route is unregistered
//!   `unregistration_message_limit` times.
//!
//! While NATS is unreachable the client keeps reconnecting forever; the route table is kept.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::config::{MessageBusServer, Route, RouteKind, Transport};
use crate::sources::RouteSet;

/// Lower bound of the random delay before re-registering after `router.start`: gorouter
/// announces `router.start` just before it subscribes to `router.*`.
pub const MIN_START_JITTER: Duration = Duration::from_millis(100);
/// Upper bound of the random delay before re-registering after `router.start`.
pub const MAX_START_JITTER: Duration = Duration::from_millis(500);
/// Time between `router.greet` attempts.
pub const GREET_RETRY: Duration = Duration::from_secs(1);

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
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
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
            endpoint_updated_at_ns: now,
        }
    }
}

/// The part of `router.start` / the greet reply we use.
#[derive(Debug, Deserialize)]
struct RouterStart {
    #[serde(default, rename = "minimumRegisterIntervalInSeconds")]
    minimum_register_interval_in_seconds: u64,
}

/// Whether `route` goes to gorouter over NATS.
pub fn is_nats_route(route: &Route) -> bool {
    route.kind == RouteKind::Http && route.transport == Transport::Nats
}

/// `nats://user:password@host` for each server.
pub fn server_urls(servers: &[MessageBusServer]) -> Vec<String> {
    servers
        .iter()
        .map(|s| {
            if s.user.is_empty() {
                format!("nats://{}", s.host)
            } else {
                format!("nats://{}:{}@{}", s.user, s.password, s.host)
            }
        })
        .collect()
}

/// Connects (retrying in the background forever) and returns the client plus a channel that
/// receives `()` after every (re)connect.
pub async fn connect(
    servers: &[MessageBusServer],
) -> Result<(async_nats::Client, mpsc::UnboundedReceiver<()>), async_nats::ConnectError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .name("route-emitter")
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!("nats connected");
                        let _ = tx.send(());
                    }
                    async_nats::Event::Disconnected => tracing::error!("nats disconnected"),
                    other => tracing::info!(event = %other, "nats event"),
                }
            }
        })
        .connect(server_urls(servers))
        .await?;
    Ok((client, rx))
}

struct Entry {
    route: Route,
    /// When the route was last published on `router.register`.
    last_sent: Option<Instant>,
    /// A re-registration requested for this time (router.start, reconnect).
    forced: Option<Instant>,
}

impl Entry {
    fn due(&self, now: Instant, min_interval: Duration) -> bool {
        match self.last_sent {
            None => true,
            Some(last) => {
                self.forced.is_some_and(|f| f <= now)
                    || last + self.route.registration_interval.max(min_interval) <= now
            }
        }
    }
}

/// Publishes the NATS routes of the active set until `shutdown` turns true, then unregisters
/// them `unregistration_message_limit` times.
pub async fn run(
    client: async_nats::Client,
    mut connected: mpsc::UnboundedReceiver<()>,
    mut routes: watch::Receiver<RouteSet>,
    mut shutdown: watch::Receiver<bool>,
    unregistration_message_limit: u32,
) {
    let mut starts = loop {
        match client.subscribe("router.start").await {
            Ok(s) => break s,
            Err(e) => {
                tracing::error!(error = %e, "subscribing to router.start failed; retrying");
                tokio::time::sleep(GREET_RETRY).await;
            }
        }
    };
    let (greet_tx, mut greeted) = mpsc::unbounded_channel::<u64>();
    let greeter = tokio::spawn(greet(client.clone(), greet_tx));
    let mut min_interval = Duration::ZERO;
    let mut table: HashMap<String, Entry> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut changed = true;
    loop {
        if changed {
            changed = false;
            let current: Vec<Route> = routes
                .borrow_and_update()
                .iter()
                .filter(|r| is_nats_route(r))
                .cloned()
                .collect();
            let keys: Vec<String> = current.iter().map(Route::key).collect();
            let removed: Vec<String> = table
                .keys()
                .filter(|k| !keys.contains(k))
                .cloned()
                .collect();
            for k in removed {
                if let Some(e) = table.remove(&k) {
                    publish(&client, "router.unregister", &e.route).await;
                    tracing::info!(route = %e.route.name, "route unregistered");
                }
            }
            for (k, r) in keys.into_iter().zip(current) {
                table.entry(k).or_insert(Entry {
                    route: r,
                    last_sent: None,
                    forced: None,
                });
            }
        }
        let now = Instant::now();
        for e in table.values_mut() {
            if e.due(now, min_interval) {
                publish(&client, "router.register", &e.route).await;
                e.last_sent = Some(now);
                e.forced = None;
            }
        }
        tokio::select! {
            _ = tick.tick() => {}
            r = routes.changed() => {
                if r.is_ok() { changed = true; }
            }
            Some(secs) = greeted.recv() => {
                min_interval = Duration::from_secs(secs);
                tracing::info!(minimum_register_interval_seconds = secs, "router greeted");
            }
            Some(msg) = starts.next() => {
                if let Ok(start) = serde_json::from_slice::<RouterStart>(&msg.payload) {
                    min_interval = Duration::from_secs(start.minimum_register_interval_in_seconds);
                }
                let jitter = MIN_START_JITTER + (MAX_START_JITTER - MIN_START_JITTER).mul_f64(rand::random::<f64>());
                tracing::info!(jitter_ms = jitter.as_millis() as u64, "router.start received; re-registering all routes");
                let due = Instant::now() + jitter;
                for e in table.values_mut() {
                    e.forced = Some(due);
                }
            }
            Some(()) = connected.recv() => {
                let now = Instant::now();
                for e in table.values_mut() {
                    e.forced = Some(now);
                }
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() { break; }
            }
        }
    }
    greeter.abort();
    for _ in 0..unregistration_message_limit.max(1) {
        for e in table.values() {
            publish(&client, "router.unregister", &e.route).await;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
    tracing::info!(routes = table.len(), "unregistered all nats routes");
}

async fn publish(client: &async_nats::Client, subject: &'static str, route: &Route) {
    let msg = RegistryMessage::for_route(route);
    let payload = match serde_json::to_vec(&msg) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "encoding registration message");
            return;
        }
    };
    if let Err(e) = client.publish(subject, payload.into()).await {
        tracing::error!(subject, error = %e, "publish failed");
    } else {
        tracing::debug!(subject, route = %route.name, "published");
    }
}

/// Requests `router.greet` every [`GREET_RETRY`] until a router answers; sends the answer's
/// minimum register interval.
async fn greet(client: async_nats::Client, tx: mpsc::UnboundedSender<u64>) {
    let mut every = tokio::time::interval(GREET_RETRY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let reply = tokio::time::timeout(
            GREET_RETRY,
            client.request("router.greet", Default::default()),
        )
        .await;
        match reply {
            Ok(Ok(msg)) => match serde_json::from_slice::<RouterStart>(&msg.payload) {
                Ok(start) => {
                    let _ = tx.send(start.minimum_register_interval_in_seconds);
                    return;
                }
                Err(e) => tracing::error!(error = %e, "invalid router.greet reply; retrying"),
            },
            Ok(Err(e)) => tracing::debug!(error = %e, "router.greet: no answer yet; retrying"),
            Err(_) => tracing::debug!("router.greet timed out; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_fields_and_omissions() {
        let mut route = crate::config::validate_route(
            crate::config::RouteSchema {
                name: "a".into(),
                port: Some(8080),
                uris: vec!["a.example.com".into()],
                registration_interval: "20s".into(),
                ..Default::default()
            },
            &crate::config::RouteDefaults {
                host: "10.0.0.1".into(),
                availability_zone: String::new(),
            },
        )
        .unwrap();
        let mut msg = RegistryMessage::for_route(&route);
        msg.endpoint_updated_at_ns = 0;
        assert_eq!(
            serde_json::to_string(&msg).unwrap(),
            r#"{"host":"10.0.0.1","port":8080,"uris":["a.example.com"]}"#
        );
        route.tls_port = Some(8443);
        route.lb_algo = "least-connection".into();
        route.private_instance_index = "0".into();
        let v = serde_json::to_value(RegistryMessage::for_route(&route)).unwrap();
        assert_eq!(v["tls_port"], 8443);
        assert_eq!(v["options"]["lb_algo"], "least-connection");
        assert_eq!(v["private_instance_index"], "0");
        assert!(v["endpoint_updated_at_ns"].as_i64().unwrap() > 0);
    }
}
