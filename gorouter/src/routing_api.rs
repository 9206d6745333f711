//! Routes from the Routing API: gorouter's second route source (A.3 "Route fetcher", B.2, B.6).
//!
//! When `routing_api.uri` and `routing_api.port` are set, the router
//! - at start, fetches a UAA token (unless `auth_disabled`) and lists the routes once, and exits
//!   (upstream's `initialize-uaa-client`, `routing-api-connection-failed`) if it cannot;
//! - lists the HTTP routes (`GET /routing/v1/routes`) at start, every
//!   `prune_stale_droplets_interval / 2`, and after every (re)subscription to the event stream;
//! - follows `GET /routing/v1/events`, re-subscribing every second after a failure (the stream
//!   carries no keep-alives and is not replayed, hence the re-list);
//! - applies `Upsert` as a registration and `Delete` as an unregistration, with the routes'
//!   modification tags deciding which of two changes to one endpoint is newer.
//!
//! Routes land in the same [`RouteTable`] as the NATS routes. A route is mapped onto an
//! [`EndpointSpec`] as upstream does: `app` and `server_cert_domain_san` = `log_guid`, `host` =
//! `ip`, `port`, `stale_threshold` = `ttl`, `route_service_url`, `modification_tag`, never TLS.
//! The re-list refreshes their timestamps, so the TTL pruner keeps them while the Routing API
//! still lists them.
//!
//! [`RouteSync`] remembers which endpoints came from the Routing API, so that a full list that
//! no longer contains one removes it, while NATS routes are never removed by a list.
//!
//! TLS: upstream's `routing_api.ca_certs`, `cert_chain` and `private_key` are PEM text in the
//! config. The client library reads files, so the PEM is written to a private temporary
//! directory (mode 0700, files 0600) only for as long as building the client takes.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use routing_api_client::{
    ClientConfig, Event, EventAction, HttpRoute, RoutingApiClient, TlsOptions, TokenFetcher,
    UaaConfig,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::{Config, RoutingApiConfig};
use crate::registry::{route_key, EndpointSpec, ModificationTag, PutOutcome, RouteTable};
use crate::task::AbortOnDrop;

/// Wait between attempts to subscribe to the event stream (upstream: 1 s).
pub const SUBSCRIPTION_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// The endpoint a Routing API route stands for (A.3).
pub fn endpoint_spec(route: &HttpRoute) -> EndpointSpec {
    EndpointSpec {
        host: route.ip.clone(),
        port: route.port,
        tls_port: 0,
        app: route.log_guid.clone(),
        server_cert_domain_san: route.log_guid.clone(),
        route_service_url: route.route_service_url.clone(),
        stale_threshold_in_seconds: route.ttl.map_or(0, |ttl| u64::try_from(ttl).unwrap_or(0)),
        modification_tag: ModificationTag {
            guid: route.modification_tag.guid.clone(),
            index: route.modification_tag.index,
        },
        ..EndpointSpec::default()
    }
}

/// Identity of an endpoint learnt from the Routing API: (route key, `host:port`).
type Key = (String, String);

fn key_of(route: &HttpRoute, spec: &EndpointSpec) -> Key {
    (route_key(&route.route), spec.addr())
}

/// Applies Routing API lists and events to the table and remembers what it registered.
pub struct RouteSync {
    table: Arc<RouteTable>,
    /// Endpoints this source has in the table, with the spec last applied.
    known: HashMap<Key, EndpointSpec>,
    /// Whether the last list failed: the known endpoints are being held.
    holding: bool,
}

/// What one full list did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListOutcome {
    pub listed: usize,
    /// Endpoints added or changed (not merely refreshed).
    pub changed: usize,
    /// Endpoints from the Routing API that the list no longer contains, removed.
    pub removed: usize,
    /// Endpoints the list no longer contains, left to the TTL pruner (first list after an
    /// outage).
    pub released: usize,
}

impl RouteSync {
    pub fn new(table: Arc<RouteTable>) -> Self {
        Self {
            table,
            known: HashMap::new(),
            holding: false,
        }
    }

    /// The Routing API could not be listed: refreshes every known endpoint's timestamp so the
    /// TTL pruner keeps it. Returns how many endpoints are held.
    pub fn hold_known(&mut self) -> usize {
        self.holding = true;
        for ((uri, _), spec) in &self.known {
            self.table.touch(uri, spec);
        }
        self.known.len()
    }

    /// How many endpoints from the Routing API are in the table.
    pub fn known_count(&self) -> usize {
        self.known.len()
    }

    fn upsert(&mut self, route: &HttpRoute) -> (Key, PutOutcome) {
        let spec = endpoint_spec(route);
        let key = key_of(route, &spec);
        let outcome = self.table.register(&route.route, &spec);
        debug!(route = %route.route, addr = %key.1, tag = ?spec.modification_tag, outcome = ?outcome, "routing-api-upsert");
        match outcome {
            PutOutcome::Added | PutOutcome::Updated | PutOutcome::Refreshed => {
                self.known.insert(key.clone(), spec);
            }
            PutOutcome::Ignored => {}
        }
        (key, outcome)
    }

    fn delete(&mut self, route: &HttpRoute) -> bool {
        let spec = endpoint_spec(route);
        let key = key_of(route, &spec);
        let removed = self.table.unregister(&route.route, &spec);
        if let Some(stored) = self.known.get(&key) {
            if spec
                .modification_tag
                .succeeds_or_equal(&stored.modification_tag)
            {
                self.known.remove(&key);
            }
        }
        debug!(route = %route.route, addr = %key.1, tag = ?spec.modification_tag, removed, "routing-api-delete");
        removed
    }

    /// Applies one event. Returns whether the table changed.
    pub fn apply_event(&mut self, action: EventAction, route: &HttpRoute) -> bool {
        match action {
            EventAction::Upsert => matches!(
                self.upsert(route).1,
                PutOutcome::Added | PutOutcome::Updated
            ),
            EventAction::Delete => self.delete(route),
        }
    }

    /// Applies a full list: every listed route is registered (or refreshed), and endpoints that
    /// came from the Routing API but are no longer listed are removed.
    pub fn apply_list(&mut self, routes: &[HttpRoute]) -> ListOutcome {
        let mut outcome = ListOutcome {
            listed: routes.len(),
            ..ListOutcome::default()
        };
        let mut listed: HashSet<Key> = HashSet::with_capacity(routes.len());
        for route in routes {
            let (key, put) = self.upsert(route);
            if matches!(put, PutOutcome::Added | PutOutcome::Updated) {
                outcome.changed += 1;
            }
            listed.insert(key);
        }
        let gone: Vec<Key> = self
            .known
            .keys()
            .filter(|k| !listed.contains(*k))
            .cloned()
            .collect();
        let after_outage = std::mem::take(&mut self.holding);
        for key in gone {
            if let Some(spec) = self.known.remove(&key) {
                if after_outage {
                    outcome.released += 1;
                } else if self.table.unregister(&key.0, &spec) {
                    outcome.removed += 1;
                }
                debug!(route = %key.0, addr = %key.1, after_outage, "routing-api-route-no-longer-listed");
            }
        }
        outcome
    }
}

/// A private temporary directory, removed on drop.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn create() -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let path = std::env::temp_dir().join(format!(
            "gorouter-routing-api-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Self(path))
    }

    fn write(&self, name: &str, contents: &str) -> std::io::Result<PathBuf> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.0.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(contents.as_bytes())?;
        Ok(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Builds the UAA token fetcher (`None` with `routing_api.auth_disabled`), logging upstream's
/// `using-noop-token-fetcher`. Fails with upstream's "UAA client requires TLS enabled" when
/// UAA would not be spoken to over https (`oauth.port` 0 or below, an `http://` endpoint).
fn build_token_fetcher(config: &Config) -> anyhow::Result<Option<Arc<TokenFetcher>>> {
    if config.routing_api.auth_disabled {
        info!("using-noop-token-fetcher");
        return Ok(None);
    }
    let o = &config.oauth;
    let url = o.tls_url().map_err(anyhow::Error::msg)?;
    let mut uaa = UaaConfig::new(url, &o.client_name, &o.client_secret);
    uaa.tls = TlsOptions {
        ca_file: Some(o.ca_certs.trim())
            .filter(|p| !p.is_empty())
            .map(PathBuf::from),
        skip_verification: o.skip_ssl_validation,
        ..TlsOptions::default()
    };
    uaa.max_retries = config.token_fetcher_max_retries;
    uaa.retry_interval = config.token_fetcher_retry_interval;
    uaa.expiration_buffer = config.token_fetcher_expiration_buffer;
    Ok(Some(Arc::new(TokenFetcher::new(uaa)?)))
}

/// Builds the Routing API client; inline PEM goes through short-lived private files.
fn build_client(
    config: &Config,
    tokens: Option<Arc<TokenFetcher>>,
) -> anyhow::Result<RoutingApiClient> {
    let api: &RoutingApiConfig = &config.routing_api;
    let has_pem = [&api.ca_certs, &api.cert_chain, &api.private_key]
        .iter()
        .any(|p| !p.trim().is_empty());
    let mut cc = ClientConfig::new(api.url());
    let _dir = if has_pem {
        let dir =
            PrivateDir::create().context("creating a private directory for routing_api PEM")?;
        let write = |name: &str, pem: &str| -> anyhow::Result<Option<PathBuf>> {
            if pem.trim().is_empty() {
                return Ok(None);
            }
            dir.write(name, pem)
                .map(Some)
                .with_context(|| format!("writing {name} to {}", dir.path().display()))
        };
        cc.tls = TlsOptions {
            ca_file: write("ca.pem", &api.ca_certs)?,
            client_cert_file: write("cert.pem", &api.cert_chain)?,
            client_key_file: write("key.pem", &api.private_key)?,
            ..TlsOptions::default()
        };
        Some(dir)
    } else {
        None
    };
    // The client reads the PEM files here; the directory is removed when `_dir` drops.
    RoutingApiClient::new(cc, tokens).map_err(|e| {
        anyhow::anyhow!("routing_api ({}): {e}", api.url()).context(
            "invalid routing_api TLS settings (ca_certs, cert_chain, private_key are PEM text)",
        )
    })
}

enum StreamMsg {
    Connected,
    Event(Box<Event<HttpRoute>>),
}

/// Subscribes to the HTTP route events forever, re-subscribing every
/// [`SUBSCRIPTION_RETRY_INTERVAL`] after a failure or the end of a stream.
async fn subscribe_loop(client: RoutingApiClient, tx: mpsc::Sender<StreamMsg>) {
    loop {
        match client.subscribe_http_events().await {
            Ok(mut stream) => {
                info!("routing-api-subscribed: following /routing/v1/events");
                if tx.send(StreamMsg::Connected).await.is_err() {
                    return;
                }
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(event) => {
                            if tx.send(StreamMsg::Event(Box::new(event))).await.is_err() {
                                return;
                            }
                        }
                        Err(e) if e.is_fatal() => {
                            warn!(error = %e, "routing-api-event-stream-failed");
                            break;
                        }
                        Err(e) => warn!(error = %e, "routing-api-event-skipped"),
                    }
                }
                warn!("routing-api-event-stream-closed: re-subscribing");
            }
            Err(e) => warn!(error = %e, "routing-api-subscribe-failed: retrying"),
        }
        tokio::time::sleep(SUBSCRIPTION_RETRY_INTERVAL).await;
    }
}

async fn list(client: &RoutingApiClient, sync: &mut RouteSync) {
    match client.routes().await {
        Ok(routes) => {
            let outcome = sync.apply_list(&routes);
            debug!(?outcome, "routing-api-routes-fetched");
            if outcome.changed > 0 || outcome.removed > 0 || outcome.released > 0 {
                info!(
                    listed = outcome.listed,
                    changed = outcome.changed,
                    removed = outcome.removed,
                    left_to_expire = outcome.released,
                    "routing-api-routes-synced"
                );
            }
        }
        Err(e) => {
            let held = sync.hold_known();
            warn!(error = %e, held, "routing-api-fetch-routes-failed: holding its routes");
        }
    }
}

async fn run(
    client: RoutingApiClient,
    mut sync: RouteSync,
    fetch_interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let (tx, mut rx) = mpsc::channel(4096);
    let _subscriber = AbortOnDrop(tokio::spawn(subscribe_loop(client.clone(), tx)));
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + fetch_interval, fetch_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            // Also ends when the sender is gone (the router is stopping).
            () = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
            msg = rx.recv() => match msg {
                // Events are not replayed: whatever changed while unsubscribed comes from a list.
                Some(StreamMsg::Connected) => list(&client, &mut sync).await,
                Some(StreamMsg::Event(event)) => {
                    sync.apply_event(event.action, &event.route);
                }
                None => break,
            },
            _ = tick.tick() => list(&client, &mut sync).await,
        }
    }
    info!("routing-api-route-fetcher-stopped");
}

/// Why the route fetcher could not start, under upstream's fatal log message.
#[derive(Debug, thiserror::Error)]
#[error("{message}: {error}")]
pub struct SetupError {
    /// `initialize-uaa-client` or `routing-api-connection-failed`.
    pub message: &'static str,
    pub error: String,
}

/// Sets up the route fetcher as upstream's `setupRoutingAPIClient` does (only call when
/// [`RoutingApiConfig::enabled`]): the UAA client (`initialize-uaa-client` if it cannot be
/// built), a first token (`unable-to-fetch-token`) and a first list of routes, which proves the
/// Routing API answers. Any failure is logged under upstream's message and returned: the router
/// then exits, as upstream does. On success the fetcher runs until `shutdown` turns true.
pub async fn start(
    config: &Config,
    table: Arc<RouteTable>,
    shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, SetupError> {
    info!("setting-up-routing-api");
    let fail = |message: &'static str, error: String| {
        tracing::error!(error = %error, "{message}");
        SetupError { message, error }
    };
    let tokens =
        build_token_fetcher(config).map_err(|e| fail("initialize-uaa-client", format!("{e:#}")))?;
    let client = build_client(config, tokens.clone())
        .map_err(|e| fail("routing-api-connection-failed", format!("{e:#}")))?;
    if let Some(tokens) = &tokens {
        debug!(force_update = true, "started-fetching-token");
        match tokens.refresh().await {
            Ok(_) => debug!("successfully-fetched-token"),
            Err(e) => {
                return Err(fail(
                    "routing-api-connection-failed",
                    format!("unable-to-fetch-token: {e}"),
                ))
            }
        }
    }
    let routes = client
        .routes()
        .await
        .map_err(|e| fail("routing-api-connection-failed", e.to_string()))?;
    let mut sync = RouteSync::new(table);
    sync.apply_list(&routes);
    let fetch_interval = (config.prune_stale_droplets_interval / 2).max(Duration::from_millis(1));
    info!(url = %config.routing_api.url(), ?fetch_interval, auth = !config.routing_api.auth_disabled, routes = routes.len(), "routing-api-route-fetcher-starting");
    Ok(tokio::spawn(run(client, sync, fetch_interval, shutdown)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::TableSettings;
    use routing_api_client::ModificationTag as ApiTag;

    fn route(uri: &str, ip: &str, port: u16, guid: &str, index: u32) -> HttpRoute {
        HttpRoute {
            route: uri.into(),
            port,
            ip: ip.into(),
            ttl: Some(60),
            log_guid: "log-guid-1".into(),
            route_service_url: String::new(),
            modification_tag: ApiTag {
                guid: guid.into(),
                index,
            },
        }
    }

    fn addrs(table: &RouteTable, host: &str) -> Vec<String> {
        let mut v: Vec<String> = table
            .lookup(host, "/")
            .map(|p| p.endpoints().iter().map(|e| e.addr().to_string()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn maps_http_route_onto_endpoint_spec() {
        let mut r = route("a.example.com/path", "10.0.0.7", 8080, "g-1", 3);
        r.route_service_url = "https://rs.example.com".into();
        let spec = endpoint_spec(&r);
        assert_eq!(
            spec,
            EndpointSpec {
                host: "10.0.0.7".into(),
                port: 8080,
                tls_port: 0,
                app: "log-guid-1".into(),
                server_cert_domain_san: "log-guid-1".into(),
                route_service_url: "https://rs.example.com".into(),
                stale_threshold_in_seconds: 60,
                modification_tag: ModificationTag {
                    guid: "g-1".into(),
                    index: 3
                },
                ..EndpointSpec::default()
            }
        );
        assert_eq!(spec.addr(), "10.0.0.7:8080");
        let mut r = route("a.com", "10.0.0.7", 1, "g", 0);
        r.ttl = None;
        assert_eq!(endpoint_spec(&r).stale_threshold_in_seconds, 0);
        r.ttl = Some(-5);
        assert_eq!(endpoint_spec(&r).stale_threshold_in_seconds, 0);
    }

    #[test]
    fn registered_endpoint_is_plain_http_with_log_guid_as_app() {
        let table = Arc::new(RouteTable::new(TableSettings::default()));
        let mut sync = RouteSync::new(table.clone());
        assert!(sync.apply_event(EventAction::Upsert, &route("a.com", "10.0.0.1", 80, "g", 0)));
        let pool = table.lookup("a.com", "/").unwrap();
        let ep = &pool.endpoints()[0];
        assert!(!ep.tls);
        assert_eq!(ep.app_id(), "log-guid-1");
        assert_eq!(ep.server_cert_domain_san(), "log-guid-1");
        assert_eq!(ep.stale_threshold(), Duration::from_secs(60));
    }

    #[test]
    fn older_modification_tags_do_not_win() {
        let table = Arc::new(RouteTable::new(TableSettings::default()));
        let mut sync = RouteSync::new(table.clone());
        let mut newer = route("a.com", "10.0.0.1", 80, "g", 2);
        newer.log_guid = "new".into();
        assert!(sync.apply_event(EventAction::Upsert, &newer));
        // An older upsert of the same route does not replace it.
        let mut older = route("a.com", "10.0.0.1", 80, "g", 1);
        older.log_guid = "old".into();
        assert!(!sync.apply_event(EventAction::Upsert, &older));
        assert_eq!(
            table.lookup("a.com", "/").unwrap().endpoints()[0].app_id(),
            "new"
        );
        // An older delete does not remove it either.
        assert!(!sync.apply_event(EventAction::Delete, &older));
        assert_eq!(addrs(&table, "a.com"), vec!["10.0.0.1:80"]);
        assert_eq!(sync.known_count(), 1);
        // A delete with the same tag does.
        assert!(sync.apply_event(EventAction::Delete, &newer));
        assert!(table.lookup("a.com", "/").is_none());
        assert_eq!(sync.known_count(), 0);
        // A newer upsert replaces; a different guid (re-created route) always succeeds.
        sync.apply_event(EventAction::Upsert, &route("b.com", "10.0.0.1", 80, "g", 5));
        assert!(sync.apply_event(EventAction::Upsert, &route("b.com", "10.0.0.1", 80, "g", 6)));
        assert!(sync.apply_event(
            EventAction::Upsert,
            &route("b.com", "10.0.0.1", 80, "other", 0)
        ));
    }

    #[test]
    fn list_removes_only_routing_api_routes_that_are_gone() {
        let table = Arc::new(RouteTable::new(TableSettings::default()));
        let mut sync = RouteSync::new(table.clone());
        // A NATS route on the same host, different backend.
        table.register(
            "a.com",
            &EndpointSpec {
                host: "10.0.9.9".into(),
                port: 9,
                ..EndpointSpec::default()
            },
        );
        let outcome = sync.apply_list(&[
            route("a.com", "10.0.0.1", 1, "g1", 0),
            route("a.com", "10.0.0.2", 2, "g2", 0),
            route("B.com/", "10.0.0.3", 3, "g3", 0),
        ]);
        assert_eq!(
            outcome,
            ListOutcome {
                listed: 3,
                changed: 3,
                removed: 0,
                released: 0,
            }
        );
        assert_eq!(
            addrs(&table, "a.com"),
            vec!["10.0.0.1:1", "10.0.0.2:2", "10.0.9.9:9"]
        );
        // Same list again: only refreshes.
        let again = sync.apply_list(&[
            route("a.com", "10.0.0.1", 1, "g1", 0),
            route("a.com", "10.0.0.2", 2, "g2", 0),
            route("b.com", "10.0.0.3", 3, "g3", 0),
        ]);
        assert_eq!(again.changed, 0);
        assert_eq!(again.removed, 0);
        // 10.0.0.2 and b.com are gone from the Routing API; the NATS route stays.
        let outcome = sync.apply_list(&[route("a.com", "10.0.0.1", 1, "g1", 0)]);
        assert_eq!(outcome.removed, 2);
        assert_eq!(addrs(&table, "a.com"), vec!["10.0.0.1:1", "10.0.9.9:9"]);
        assert!(table.lookup("b.com", "/").is_none());
        // An empty list removes the rest of the Routing API's routes, never NATS's.
        sync.apply_list(&[]);
        assert_eq!(addrs(&table, "a.com"), vec!["10.0.9.9:9"]);
        assert_eq!(sync.known_count(), 0);
    }

    fn short_lived(uri: &str, ip: &str) -> HttpRoute {
        let mut r = route(uri, ip, 80, "g", 0);
        r.ttl = Some(1);
        r
    }

    #[test]
    fn a_failed_list_holds_routing_api_routes_past_their_ttl() {
        let table = Arc::new(RouteTable::new(TableSettings::default()));
        let mut sync = RouteSync::new(table.clone());
        sync.apply_list(&[short_lived("a.com", "10.0.0.1")]);
        std::thread::sleep(Duration::from_millis(700));
        assert_eq!(sync.hold_known(), 1);
        // 1.4 s after the last list, past the 1 s TTL, but 0.7 s after the hold.
        std::thread::sleep(Duration::from_millis(700));
        assert_eq!(table.prune_stale(), 0);
        assert_eq!(addrs(&table, "a.com"), vec!["10.0.0.1:80"]);
    }

    #[test]
    fn the_first_list_after_an_outage_leaves_unlisted_routes_to_the_pruner() {
        let table = Arc::new(RouteTable::new(TableSettings::default()));
        let mut sync = RouteSync::new(table.clone());
        sync.apply_list(&[
            short_lived("a.com", "10.0.0.1"),
            short_lived("b.com", "10.0.0.2"),
        ]);
        sync.hold_known();
        let outcome = sync.apply_list(&[short_lived("a.com", "10.0.0.1")]);
        assert_eq!((outcome.removed, outcome.released), (0, 1));
        assert_eq!(addrs(&table, "b.com"), vec!["10.0.0.2:80"]);
        assert_eq!(sync.known_count(), 1);
        // Its owner never registers it again: the pruner removes it after its TTL.
        std::thread::sleep(Duration::from_millis(1100));
        table.prune_stale();
        assert!(table.lookup("b.com", "/").is_none());
    }

    #[test]
    fn a_list_after_a_successful_one_removes_unlisted_routes_at_once() {
        let table = Arc::new(RouteTable::new(TableSettings::default()));
        let mut sync = RouteSync::new(table.clone());
        sync.hold_known();
        sync.apply_list(&[short_lived("a.com", "10.0.0.1")]);
        let outcome = sync.apply_list(&[]);
        assert_eq!((outcome.removed, outcome.released), (1, 0));
        assert!(table.lookup("a.com", "/").is_none());
    }

    #[test]
    fn list_does_not_roll_back_a_newer_event() {
        let table = Arc::new(RouteTable::new(TableSettings::default()));
        let mut sync = RouteSync::new(table.clone());
        let mut newer = route("a.com", "10.0.0.1", 80, "g", 4);
        newer.log_guid = "new".into();
        sync.apply_event(EventAction::Upsert, &newer);
        let mut stale = route("a.com", "10.0.0.1", 80, "g", 3);
        stale.log_guid = "old".into();
        sync.apply_list(&[stale]);
        assert_eq!(
            table.lookup("a.com", "/").unwrap().endpoints()[0].app_id(),
            "new"
        );
    }

    #[test]
    fn inline_pem_builds_a_client_and_leaves_no_files() {
        let config = Config::from_yaml(
            "nats: {hosts: []}\nrouting_api: {uri: 'https://127.0.0.1', port: 3001, auth_disabled: true, ca_certs: 'not pem'}\n",
        )
        .unwrap();
        let err = build_client(&config, None).unwrap_err();
        assert!(format!("{err:#}").contains("routing_api"), "{err:#}");
        let config = Config::from_yaml(
            "nats: {hosts: []}\nrouting_api: {uri: 127.0.0.1, port: 3000, auth_disabled: true}\n",
        )
        .unwrap();
        build_client(&config, None).unwrap();

        let fixture = |name: &str| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../routing-api-client/tests/fixtures")
                .join(name);
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let yaml = serde_json::json!({
            "nats": {"hosts": []},
            "routing_api": {
                "uri": "https://127.0.0.1", "port": 3001, "auth_disabled": true,
                "ca_certs": fixture("ca.pem"),
                "cert_chain": fixture("client.pem"),
                "private_key": fixture("client.key"),
            }
        });
        let config = Config::from_yaml(&yaml.to_string()).unwrap();
        let before = pem_dirs();
        build_client(&config, None).unwrap();
        assert_eq!(pem_dirs(), before, "the PEM files are removed once read");
    }

    fn pem_dirs() -> Vec<PathBuf> {
        let prefix = format!("gorouter-routing-api-{}-", std::process::id());
        let mut v: Vec<PathBuf> = std::fs::read_dir(std::env::temp_dir())
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}
