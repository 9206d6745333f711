//! Many routes registered by loadgen itself: N hosts (`r0.DOMAIN`, `r1.DOMAIN`, ...) all
//! pointing at one backend, registered through NATS (`router.register`, as route-emitter does)
//! or through the Routing API (`POST /routing/v1/routes`), refreshed while the run lasts (both
//! expire otherwise) and removed at the end. Also the wait until the router routes them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use http::StatusCode;
use routing_api_client::{HttpRoute, RoutingApiClient};
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};

use crate::client;
use crate::targets::Target;

/// The most routes one run registers.
pub const MAX_ROUTES: usize = crate::zipf::MAX_RANKS;
/// URIs per `router.register` message (NATS's default payload limit is 1 MiB).
const URIS_PER_MESSAGE: usize = 500;
/// Routes per Routing API request.
const ROUTES_PER_POST: usize = 500;
/// Deadline of each NATS connect, publish and flush.
const NATS_TIMEOUT: Duration = Duration::from_secs(10);
/// TTL of Routing API routes; they are re-posted at a third of it.
const ROUTING_API_TTL: Duration = Duration::from_secs(120);
/// NATS registrations are re-sent this often (gorouter prunes after 120 s by default).
const NATS_REFRESH: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);

/// Where registrations go.
#[derive(Clone)]
pub enum Registrar {
    /// A NATS server gorouter listens to, e.g. `nats://127.0.0.1:4222`.
    Nats {
        url: String,
    },
    RoutingApi {
        client: Box<RoutingApiClient>,
    },
}

impl Registrar {
    pub fn name(&self) -> &'static str {
        match self {
            Registrar::Nats { .. } => "nats",
            Registrar::RoutingApi { .. } => "routing-api",
        }
    }
}

/// `count` host names under `domain`.
pub fn route_hosts(count: usize, domain: &str) -> Result<Vec<String>> {
    if count == 0 || count > MAX_ROUTES {
        bail!("--routes {count}: need 1..={MAX_ROUTES}");
    }
    Ok((0..count).map(|i| format!("r{i}.{domain}")).collect())
}

/// Registered routes; refreshed until [`Registration::unregister`] or drop (which stops the
/// refresh and leaves them to expire).
pub struct Registration {
    refresher: JoinHandle<()>,
    sink: Sink,
    hosts: Arc<Vec<String>>,
    backend: SocketAddr,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

/// A connected registrar.
#[derive(Clone)]
enum Sink {
    Nats(async_nats::Client),
    RoutingApi(Box<RoutingApiClient>),
}

/// Registers every host in `hosts` for `backend` and keeps the registrations fresh.
pub async fn register(
    registrar: &Registrar,
    hosts: Arc<Vec<String>>,
    backend: SocketAddr,
) -> Result<Registration> {
    let (sink, refresh) = match registrar {
        Registrar::Nats { url } => {
            let client = async_nats::ConnectOptions::new()
                .connection_timeout(NATS_TIMEOUT)
                .connect(url.as_str());
            let client = tokio::time::timeout(NATS_TIMEOUT, client)
                .await
                .with_context(|| format!("connecting to NATS at {url}: timed out"))?
                .with_context(|| format!("connecting to NATS at {url}"))?;
            (Sink::Nats(client), NATS_REFRESH)
        }
        Registrar::RoutingApi { client } => (Sink::RoutingApi(client.clone()), ROUTING_API_TTL / 3),
    };
    send(&sink, "router.register", &hosts, backend).await?;
    let refresher = {
        let (sink, hosts) = (sink.clone(), hosts.clone());
        tokio::spawn(async move {
            loop {
                sleep(refresh).await;
                if let Err(e) = send(&sink, "router.register", &hosts, backend).await {
                    eprintln!("warning: refreshing {} routes failed: {e:#}", hosts.len());
                }
            }
        })
    };
    Ok(Registration {
        refresher,
        sink,
        hosts,
        backend,
    })
}

impl Registration {
    /// Stops refreshing and removes the routes.
    pub async fn unregister(self) -> Result<()> {
        self.refresher.abort();
        send(&self.sink, "router.unregister", &self.hosts, self.backend).await
    }
}

async fn send(sink: &Sink, subject: &str, hosts: &[String], backend: SocketAddr) -> Result<()> {
    match sink {
        Sink::Nats(client) => {
            for chunk in hosts.chunks(URIS_PER_MESSAGE) {
                let payload = nats_message(chunk, backend).to_string();
                tokio::time::timeout(
                    NATS_TIMEOUT,
                    client.publish(subject.to_string(), payload.into()),
                )
                .await
                .with_context(|| format!("publishing {subject}: timed out"))?
                .with_context(|| format!("publishing {subject}"))?;
            }
            tokio::time::timeout(NATS_TIMEOUT, client.flush())
                .await
                .with_context(|| format!("flushing {subject}: timed out"))?
                .with_context(|| format!("flushing {subject}"))
        }
        Sink::RoutingApi(client) => {
            // Each call has the client's own deadline (ClientConfig::timeout).
            for chunk in hosts.chunks(ROUTES_PER_POST) {
                let routes: Vec<HttpRoute> = chunk.iter().map(|h| api_route(h, backend)).collect();
                if subject == "router.unregister" {
                    client
                        .delete_routes(&routes)
                        .await
                        .context("DELETE /routing/v1/routes")?;
                } else {
                    client
                        .upsert_routes(&routes)
                        .await
                        .context("POST /routing/v1/routes")?;
                }
            }
            Ok(())
        }
    }
}

/// A `router.register` payload like route-emitter's: one endpoint under many URIs.
pub fn nats_message(uris: &[String], backend: SocketAddr) -> serde_json::Value {
    serde_json::json!({
        "host": backend.ip().to_string(),
        "port": backend.port(),
        "uris": uris,
        "app": "10adf3b5-0000-4000-8000-00000000000a",
        "private_instance_id": format!("loadgen-{}", backend.port()),
        "private_instance_index": "0",
        "tags": {"component": "loadgen"},
    })
}

fn api_route(host: &str, backend: SocketAddr) -> HttpRoute {
    HttpRoute {
        route: host.to_string(),
        port: backend.port(),
        ip: backend.ip().to_string(),
        ttl: Some(ROUTING_API_TTL.as_secs() as i64),
        log_guid: "loadgen".into(),
        ..HttpRoute::default()
    }
}

/// Waits until the first, middle and last host answer 200 through `target`.
pub async fn wait_routable(target: &Target, hosts: &[String], within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    let samples: Vec<&String> = [0, hosts.len() / 2, hosts.len().saturating_sub(1)]
        .into_iter()
        .filter_map(|i| hosts.get(i))
        .collect();
    for host in samples {
        loop {
            let last = client::get_once(target, host, Duration::from_secs(5)).await;
            if matches!(last, Ok(StatusCode::OK)) {
                break;
            }
            if Instant::now() > deadline {
                let last = match last {
                    Ok(status) => format!("HTTP {status}"),
                    Err(e) => format!("{e:#}"),
                };
                bail!(
                    "{} with Host: {host} did not answer 200 within {within:?} of registering \
                     (last: {last})",
                    target.url
                );
            }
            sleep(POLL).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_numbered_under_the_domain_and_bounded() {
        assert_eq!(
            route_hosts(2, "lg.example.com").unwrap(),
            ["r0.lg.example.com", "r1.lg.example.com"]
        );
        assert!(route_hosts(0, "x").is_err());
        assert!(route_hosts(MAX_ROUTES + 1, "x").is_err());
    }

    #[test]
    fn a_nats_message_is_one_endpoint_under_many_uris() {
        let backend: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let m = nats_message(&["a.x".into(), "b.x".into()], backend);
        assert_eq!(m["host"], "127.0.0.1");
        assert_eq!(m["port"], 8080);
        assert_eq!(m["uris"], serde_json::json!(["a.x", "b.x"]));
        assert_eq!(m["private_instance_index"], "0");
    }
}
