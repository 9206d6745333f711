//! Keeping the routing table in step with the Routing API (D):
//!
//! - a full list (`GET /routing/v1/tcp_routes`) at start, every `-syncInterval`, and after every
//!   (re)subscription to the event stream; it replaces the table;
//! - the TCP event stream (`GET /routing/v1/tcp_routes/events`), re-subscribed every
//!   `-subscriptionRetryInterval` after a failure; events that arrive while a list is in flight
//!   are kept and applied after it, in order, with modification tags compared;
//! - local expiry every `-staleRouteCheckInterval` of backends whose TTL ran out. Expiry is
//!   suspended while the Routing API cannot be reached (the event stream is down or the last
//!   list failed), so an outage never drops the routes already known; a failed list leaves the
//!   table as it was. The first list after such an outage keeps what it no longer holds for one
//!   TTL (their owners could not refresh them either, and the Routing API may have expired
//!   them meanwhile), so a route deleted during the outage lingers up to its TTL.
//!
//! One task owns the table; after each batch of changes the snapshots of the changed ports are
//! rebuilt and handed to [`Publish`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use routing_api_client::{ClientError, Event, EventAction, RoutingApiClient, TcpRouteMapping};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::{Applied, PortRoutes, RoutingTable, Unlisted};
use crate::metrics::Metrics;

/// Receives the new snapshot of every changed port (`None`: the port has no backend any more).
pub trait Publish: Send + 'static {
    fn publish(&mut self, changes: Vec<(u16, Option<Arc<PortRoutes>>)>);
}

impl<F> Publish for F
where
    F: FnMut(Vec<(u16, Option<Arc<PortRoutes>>)>) + Send + 'static,
{
    fn publish(&mut self, changes: Vec<(u16, Option<Arc<PortRoutes>>)>) {
        self(changes)
    }
}

/// Timing of the route source (upstream's flags).
#[derive(Debug, Clone)]
pub struct SourceSettings {
    pub sync_interval: Duration,
    pub subscription_retry_interval: Duration,
    pub stale_route_check_interval: Duration,
    /// Whether TLS to backends is enabled (decides how TLS-port routes are used).
    pub backend_tls: bool,
}

/// Events kept while a list is in flight beyond this many force another list instead.
const MAX_BUFFERED: usize = 100_000;

enum StreamMsg {
    Connected,
    Event(Box<Event<TcpRouteMapping>>),
    Disconnected,
}

/// The table owner.
pub struct RouteSource<P: Publish> {
    client: RoutingApiClient,
    settings: SourceSettings,
    table: RoutingTable,
    publish: P,
    metrics: Arc<Metrics>,
    /// The Routing API answered the last list and the event stream is up.
    reachable: bool,
    stream_up: bool,
}

impl<P: Publish> RouteSource<P> {
    pub fn new(
        client: RoutingApiClient,
        settings: SourceSettings,
        table: RoutingTable,
        publish: P,
        metrics: Arc<Metrics>,
    ) -> Self {
        RouteSource {
            client,
            settings,
            table,
            publish,
            metrics,
            reachable: false,
            stream_up: false,
        }
    }

    fn start_list(&self) -> JoinHandle<Result<Vec<TcpRouteMapping>, ClientError>> {
        let client = self.client.clone();
        tokio::spawn(async move { client.tcp_routes().await })
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let (tx, mut rx) = mpsc::channel(4096);
        let subscriber = tokio::spawn(subscribe_loop(
            self.client.clone(),
            self.settings.subscription_retry_interval,
            tx,
            self.metrics.clone(),
            shutdown.clone(),
        ));
        let mut listing = Some(self.start_list());
        let mut relist_after = false;
        let mut buffered: Vec<Event<TcpRouteMapping>> = Vec::new();
        let start = Instant::now();
        let mut sync_tick = tokio::time::interval_at(
            start + self.settings.sync_interval,
            self.settings.sync_interval,
        );
        sync_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut prune_tick = tokio::time::interval_at(
            start + self.settings.stale_route_check_interval,
            self.settings.stale_route_check_interval,
        );
        prune_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

        loop {
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                result = async { listing.as_mut().expect("guarded by is_some").await }, if listing.is_some() => {
                    listing = None;
                    let result = result.unwrap_or_else(|e| Err(ClientError::Decode(format!("list task failed: {e}"))));
                    self.finish_list(result, std::mem::take(&mut buffered));
                    if relist_after {
                        relist_after = false;
                        listing = Some(self.start_list());
                    }
                }
                msg = rx.recv() => match msg {
                    None => break,
                    Some(StreamMsg::Connected) => {
                        self.stream_up = true;
                        if listing.is_some() {
                            relist_after = true;
                        } else {
                            listing = Some(self.start_list());
                        }
                    }
                    Some(StreamMsg::Disconnected) => {
                        if self.stream_up || self.reachable {
                            tracing::info!("tcp-router.prune-stale-routes.suspended-event-stream-down");
                        }
                        self.stream_up = false;
                        self.reachable = false;
                    }
                    Some(StreamMsg::Event(first)) => {
                        // Take whatever else is already queued, as one batch.
                        let mut batch = vec![*first];
                        let mut trailing = None;
                        while batch.len() < 1024 {
                            match rx.try_recv() {
                                Ok(StreamMsg::Event(e)) => batch.push(*e),
                                Ok(other) => { trailing = Some(other); break; }
                                Err(_) => break,
                            }
                        }
                        self.metrics.events.inc_by(batch.len() as u64);
                        if listing.is_some() {
                            if buffered.len() + batch.len() > MAX_BUFFERED {
                                tracing::warn!(buffered = buffered.len(), "tcp-router.bulk-sync.too-many-events-during-sync");
                                buffered.clear();
                                relist_after = true;
                            } else {
                                buffered.extend(batch);
                            }
                        } else {
                            let mut dirty = BTreeSet::new();
                            self.apply_events(batch, &mut dirty);
                            self.publish_ports(dirty);
                        }
                        match trailing {
                            Some(StreamMsg::Connected) => {
                                self.stream_up = true;
                                if listing.is_some() { relist_after = true; } else { listing = Some(self.start_list()); }
                            }
                            Some(StreamMsg::Disconnected) => { self.stream_up = false; self.reachable = false; }
                            _ => {}
                        }
                    }
                },
                _ = sync_tick.tick() => {
                    if listing.is_none() {
                        listing = Some(self.start_list());
                    }
                }
                _ = prune_tick.tick() => self.prune(),
            }
        }
        subscriber.abort();
        if let Some(l) = listing {
            l.abort();
        }
    }

    fn finish_list(
        &mut self,
        result: Result<Vec<TcpRouteMapping>, ClientError>,
        buffered: Vec<Event<TcpRouteMapping>>,
    ) {
        let mut dirty = BTreeSet::new();
        match result {
            Ok(list) => {
                // The first list after the API was unreachable keeps, for one TTL, what it no
                // longer holds: their owners' refreshes failed too (see `Unlisted`).
                let unlisted = if self.reachable {
                    Unlisted::Remove
                } else {
                    Unlisted::KeepOneTtl
                };
                let (changed, invalid) = self.table.replace(&list, Instant::now(), unlisted);
                for (m, why) in invalid {
                    tracing::warn!(port = m.port, backend_ip = %m.backend_ip, backend_port = m.backend_port, error = %why, "tcp-router.bulk-sync.route-skipped");
                }
                dirty.extend(changed);
                self.metrics.syncs.inc();
                if !self.reachable && self.stream_up {
                    tracing::info!("tcp-router.prune-stale-routes.resumed");
                }
                self.reachable = self.stream_up;
                tracing::info!(
                    routes = list.len(),
                    changed_ports = dirty.len(),
                    "routing-api-sync-done"
                );
            }
            Err(e) => {
                self.metrics.sync_failures.inc();
                self.reachable = false;
                tracing::warn!(error = %e, "tcp-router.bulk-sync.error-fetching-routes");
            }
        }
        self.apply_events(buffered, &mut dirty);
        self.publish_ports(dirty);
    }

    fn apply_events(&mut self, events: Vec<Event<TcpRouteMapping>>, dirty: &mut BTreeSet<u16>) {
        let now = Instant::now();
        for e in events {
            let applied = match e.action {
                EventAction::Upsert => self.table.upsert(&e.route, now),
                EventAction::Delete => self.table.delete(&e.route),
            };
            match &applied {
                Applied::Changed(port) => {
                    dirty.insert(*port);
                }
                Applied::Invalid(why) => {
                    tracing::warn!(port = e.route.port, backend_ip = %e.route.backend_ip, error = %why, "tcp-router.watcher.route-event-skipped");
                }
                _ => {}
            }
            tracing::debug!(
                action = e.action.as_str(),
                port = e.route.port,
                backend = %format!("{}:{}", e.route.backend_ip, e.route.backend_port),
                tag_guid = %e.route.modification_tag.guid,
                tag_index = e.route.modification_tag.index,
                result = ?applied,
                "route-event"
            );
        }
    }

    fn prune(&mut self) {
        if !self.reachable {
            tracing::debug!("route expiry suspended while the routing API is unreachable");
            return;
        }
        let (changed, removed) = self.table.prune(Instant::now());
        for (rk, bk) in &removed {
            tracing::info!(port = rk.port, sni = ?rk.sni, backend_ip = %bk.ip, backend_port = bk.port, "tcp-router.prune-stale-routes.route-expired");
        }
        self.metrics.expired.inc_by(removed.len() as u64);
        self.publish_ports(changed);
    }

    fn publish_ports(&mut self, dirty: BTreeSet<u16>) {
        self.metrics.backends.set(self.table.len() as u64);
        if dirty.is_empty() {
            return;
        }
        let mut skipped = Vec::new();
        let changes: Vec<_> = dirty
            .into_iter()
            .map(|port| {
                (
                    port,
                    self.table
                        .port_routes(port, self.settings.backend_tls, &mut skipped),
                )
            })
            .collect();
        for (bk, why) in skipped {
            tracing::warn!(backend_ip = %bk.ip, backend_port = bk.port, backend_tls_port = ?bk.tls_port, instance_id = %bk.instance_id, reason = why, "tcp-router.routing-table.backend-skipped");
        }
        self.publish.publish(changes);
    }
}

async fn subscribe_loop(
    client: RoutingApiClient,
    retry: Duration,
    tx: mpsc::Sender<StreamMsg>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let subscribed = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            s = client.subscribe_tcp_events() => s,
        };
        match subscribed {
            Ok(mut stream) => {
                metrics.subscriptions.inc();
                tracing::info!(
                    "tcp-router.watcher.Successfully-subscribed-to-routing-api-event-stream"
                );
                if tx.send(StreamMsg::Connected).await.is_err() {
                    return;
                }
                loop {
                    let next = tokio::select! {
                        _ = shutdown.wait_for(|s| *s) => return,
                        n = stream.next() => n,
                    };
                    match next {
                        Some(Ok(e)) => {
                            if tx.send(StreamMsg::Event(Box::new(e))).await.is_err() {
                                return;
                            }
                        }
                        Some(Err(e)) if !e.is_fatal() => {
                            tracing::warn!(error = %e, "tcp-router.watcher.tcp-route-event-skipped");
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "tcp-router.watcher.failed-to-get-next-routing-api-event");
                            break;
                        }
                        None => {
                            tracing::warn!("tcp-router.watcher.event-stream-closed");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?retry, "tcp-router.watcher.failed-subscribing-to-routing-api-event-stream");
            }
        }
        if tx.send(StreamMsg::Disconnected).await.is_err() {
            return;
        }
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(retry) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use routing_api_client::ClientConfig;
    use std::sync::atomic::Ordering;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::Semaphore;

    /// A scripted Routing API: lists wait for a permit and answer the current list (or a 500),
    /// the event stream sends what the test pushes.
    struct FakeApi {
        url: String,
        list: Arc<Mutex<Result<String, ()>>>,
        gate: Arc<Semaphore>,
        events: mpsc::UnboundedSender<String>,
        lists_started: Arc<std::sync::atomic::AtomicUsize>,
    }

    async fn read_head(s: &mut tokio::net::TcpStream) -> Option<String> {
        let mut buf = Vec::new();
        let mut b = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            match s.read(&mut b).await {
                Ok(1) => buf.push(b[0]),
                _ => return None,
            }
        }
        Some(String::from_utf8_lossy(&buf).into_owned())
    }

    async fn fake_api() -> FakeApi {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let list: Arc<Mutex<Result<String, ()>>> = Arc::new(Mutex::new(Ok("[]".into())));
        let gate = Arc::new(Semaphore::new(0));
        let (tx, rx) = mpsc::unbounded_channel::<String>();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let lists_started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (l2, g2, c2) = (list.clone(), gate.clone(), lists_started.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    continue;
                };
                let (list, gate, rx, started) = (l2.clone(), g2.clone(), rx.clone(), c2.clone());
                tokio::spawn(async move {
                    while let Some(head) = read_head(&mut s).await {
                        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                        if path == "/routing/v1/tcp_routes/events" {
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
                                .await;
                            let mut rx = rx.lock().await;
                            let mut id = 0;
                            while let Some(ev) = rx.recv().await {
                                let msg = format!("id: {id}\n{ev}\n\n");
                                id += 1;
                                if s.write_all(msg.as_bytes()).await.is_err() {
                                    return;
                                }
                            }
                            return;
                        }
                        started.fetch_add(1, Ordering::SeqCst);
                        gate.acquire().await.unwrap().forget();
                        let current = list.lock().unwrap().clone();
                        let resp = match current {
                            Ok(body) => format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            ),
                            Err(()) => {
                                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
                                    .to_string()
                            }
                        };
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakeApi {
            url,
            list,
            gate,
            events: tx,
            lists_started,
        }
    }

    fn mapping_json(port: u16, backend_port: u16, guid: &str, index: u32) -> String {
        format!(
            r#"{{"router_group_guid":"rg","backend_port":{backend_port},"backend_ip":"10.0.0.1","port":{port},"modification_tag":{{"guid":"{guid}","index":{index}}},"ttl":120}}"#
        )
    }

    type Published = Arc<Mutex<BTreeMap<u16, Option<Vec<u16>>>>>;

    fn start(api: &FakeApi) -> (Published, watch::Sender<bool>, Arc<Metrics>) {
        let published: Published = Arc::default();
        let p = published.clone();
        let publish = move |changes: Vec<(u16, Option<Arc<PortRoutes>>)>| {
            let mut p = p.lock().unwrap();
            for (port, routes) in changes {
                let backends = routes.map(|r| {
                    r.default
                        .as_ref()
                        .map(|pool| pool.backends.iter().map(|b| b.addr.port()).collect())
                        .unwrap_or_default()
                });
                p.insert(port, backends);
            }
        };
        let client = RoutingApiClient::new(ClientConfig::new(&api.url), None).unwrap();
        let metrics = Arc::new(Metrics::default());
        let source = RouteSource::new(
            client,
            SourceSettings {
                sync_interval: Duration::from_secs(3600),
                subscription_retry_interval: Duration::from_millis(50),
                stale_route_check_interval: Duration::from_secs(3600),
                backend_tls: false,
            },
            RoutingTable::new(Duration::from_secs(120)),
            publish,
            metrics.clone(),
        );
        let (tx, rx) = watch::channel(false);
        tokio::spawn(source.run(rx));
        (published, tx, metrics)
    }

    async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    use std::collections::BTreeMap;

    #[tokio::test]
    async fn events_during_a_list_are_applied_after_it() {
        let api = fake_api().await;
        *api.list.lock().unwrap() = Ok(format!("[{}]", mapping_json(2001, 81, "y", 0)));
        let (published, _stop, _) = start(&api);
        // The first list is in flight (held); an event arrives meanwhile.
        eventually("a list request", || {
            api.lists_started.load(Ordering::SeqCst) >= 1
        })
        .await;
        api.events
            .send(format!(
                "event: Upsert\ndata: {}",
                mapping_json(2000, 80, "x", 1)
            ))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            published.lock().unwrap().is_empty(),
            "nothing is published while the list is in flight"
        );
        api.gate.add_permits(1);
        eventually("both ports published", || {
            let p = published.lock().unwrap();
            p.get(&2000) == Some(&Some(vec![80])) && p.get(&2001) == Some(&Some(vec![81]))
        })
        .await;

        // The relist after subscribing; then an event older than the table's state is ignored
        // and a delete of the current state is applied.
        *api.list.lock().unwrap() = Ok(format!(
            "[{},{}]",
            mapping_json(2001, 81, "y", 3),
            mapping_json(2000, 80, "x", 1)
        ));
        api.gate.add_permits(10);
        tokio::time::sleep(Duration::from_millis(100)).await;
        api.events
            .send(format!(
                "event: Delete\ndata: {}",
                mapping_json(2001, 81, "y", 2)
            ))
            .unwrap();
        api.events
            .send(format!(
                "event: Delete\ndata: {}",
                mapping_json(2000, 80, "x", 1)
            ))
            .unwrap();
        eventually("port 2000 removed", || {
            published.lock().unwrap().get(&2000) == Some(&None)
        })
        .await;
        assert_eq!(published.lock().unwrap().get(&2001), Some(&Some(vec![81])));
    }

    #[tokio::test]
    async fn a_failed_list_keeps_the_known_routes() {
        let api = fake_api().await;
        *api.list.lock().unwrap() = Ok(format!("[{}]", mapping_json(2002, 82, "z", 0)));
        api.gate.add_permits(2);
        let (published, _stop, metrics) = start(&api);
        eventually("port 2002 published", || {
            published.lock().unwrap().get(&2002) == Some(&Some(vec![82]))
        })
        .await;
        eventually("both lists done", || {
            api.lists_started.load(Ordering::SeqCst) >= 2
        })
        .await;
        // The API fails its lists from now on; a reconnect of the stream triggers one.
        *api.list.lock().unwrap() = Err(());
        api.gate.add_permits(10);
        drop(api.events);
        eventually("a failed list", || metrics.sync_failures.get() >= 1).await;
        assert_eq!(
            published.lock().unwrap().get(&2002),
            Some(&Some(vec![82])),
            "routes must survive failed lists"
        );
    }
}
