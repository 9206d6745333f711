//! Test support for the end-to-end suite: everything a test needs to run the real `gorouter`
//! binary against a real `nats-server` and real backends, all on 127.0.0.1 ephemeral ports.
//!
//! - [`util`]: free ports, temporary directories, polling with deadlines, checksums of streamed
//!   data, memory readings from `/proc`.
//! - [`nats`]: [`NatsServer`], a private `nats-server` per test (never the shared one on 4222:
//!   `router.*` subjects are global and tests run in parallel), a [`NatsClient`] to publish
//!   registrations, and a [`TcpGate`] that can cut a client off a server.
//! - [`router`]: [`Gorouter`], the binary under test, started from a temporary config built by
//!   [`GorouterBuilder`] (test defaults + YAML overrides), with its output captured to a file that
//!   is printed when a test fails.
//! - [`http`]: a raw HTTP/1.x client over TCP, for byte-exact checks of what the router sends.
//! - [`backends`]: an echo backend that answers with the request head it received, a programmable
//!   hyper backend, and a backend that holds requests until released.
//! - [`route_service`]: the `route-service` process (src/bin), a real route service.
//! - [`routing_api`], [`tcp_router`], [`route_emitter`]: the other binaries under test (and
//!   Locket, `rtr`), with their own config builders; [`mariadb`], [`uaa`] and [`pki`]: the
//!   database, token issuer and certificates they need.
//! - [`private_mariadb`]: [`PrivateMariaDb`](private_mariadb::PrivateMariaDb), a `mariadbd` of
//!   one test's own that the test may stop, crash and restart (never the shared server).
//! - [`process`]: [`ChildProcess`], what every wrapper of a binary (and [`NatsServer`]) holds:
//!   the child with its output in a log file, exit status, signals, `/proc` memory readings,
//!   kill on drop and the config and output printed when a test fails.
//!
//! Helpers panic with a message naming what failed (which service, what was awaited and for how
//! long) instead of returning errors: the tests read as the behaviour they check. Every wait has a
//! timeout.

pub mod backends;
pub mod http;
pub mod mariadb;
pub mod nats;
pub mod pki;
pub mod private_mariadb;
pub mod process;
pub mod route_emitter;
pub mod route_service;
pub mod router;
pub mod routing_api;
pub mod tcp_router;
pub mod uaa;
pub mod util;

pub use backends::{EchoBackend, EchoedRequest, HeldBackend, HttpBackend};
pub use http::{HttpConn, RawResponse};
pub use nats::{route, NatsClient, NatsServer, TcpGate};
pub use process::ChildProcess;
pub use router::{Gorouter, GorouterBuilder};
pub use util::{closed_port, eventually, free_port, Checksum, TempDir};

/// The usual setup: a private nats-server, a router using it, and a client publishing to it.
/// Fields drop in order: router first, then the client, then the server.
pub struct TestEnv {
    pub router: Gorouter,
    pub client: NatsClient,
    pub nats: NatsServer,
}

impl TestEnv {
    /// Starts nats-server and a router with the test defaults plus `yaml` overrides (may be
    /// empty), and waits until the router is healthy.
    pub async fn start(yaml: &str) -> Self {
        Self::start_with_threads(yaml, None).await
    }

    /// [`start`](Self::start) with a router serving client connections on one thread
    /// (`GOMAXPROCS=1`). Each serving thread keeps idle backend connections of its own, so a
    /// test counting how sequential requests reuse backend connections asks for one.
    pub async fn start_on_one_thread(yaml: &str) -> Self {
        Self::start_with_threads(yaml, Some(1)).await
    }

    async fn start_with_threads(yaml: &str, threads: Option<usize>) -> Self {
        let nats = NatsServer::start().await;
        let mut builder = Gorouter::builder(&nats);
        if !yaml.trim().is_empty() {
            builder = builder.yaml(yaml);
        }
        if let Some(n) = threads {
            builder = builder.env("GOMAXPROCS", &n.to_string());
        }
        let router = builder.start().await;
        let client = NatsClient::connect(&nats).await;
        Self {
            router,
            client,
            nats,
        }
    }

    /// Publishes a `router.register` message (does not wait).
    pub async fn register(&self, msg: &serde_json::Value) {
        self.client.register(msg).await;
    }

    /// Publishes a `router.unregister` message (does not wait).
    pub async fn unregister(&self, msg: &serde_json::Value) {
        self.client.unregister(msg).await;
    }

    /// Registers `msg` and waits until its first URI is routed (a request to it is not 404);
    /// returns that first response. A wildcard host `*.x` is probed as `probe.x`.
    pub async fn register_and_wait(&self, msg: &serde_json::Value) -> RawResponse {
        self.register(msg).await;
        let uri = msg["uris"][0]
            .as_str()
            .expect("registration has a uris[0] string");
        let (host, path) = match uri.split_once('/') {
            Some((h, p)) => (h.to_string(), format!("/{p}")),
            None => (uri.to_string(), "/".to_string()),
        };
        let host = match host.strip_prefix("*.") {
            Some(rest) => format!("probe.{rest}"),
            None => host,
        };
        self.router.wait_route_path(&host, &path).await
    }

    /// Waits until the router has processed every message published so far (see
    /// [`NatsClient::sync_with`]); sends no request to the test's own routes.
    pub async fn sync(&self) {
        let router = &self.router;
        self.client
            .sync_with(|host| async move { router.is_routed(&host).await })
            .await;
    }

    /// `GET path` with `Host: host` through the router.
    pub async fn get(&self, host: &str, path: &str) -> RawResponse {
        self.router.get(host, path).await
    }

    /// The first access-log line containing `needle`, waiting up to 5 s for it to be written.
    pub async fn access_log_line(&self, needle: &str) -> String {
        let router = &self.router;
        eventually(
            &format!("an access log line containing {needle:?}"),
            std::time::Duration::from_secs(5),
            || async move {
                router
                    .access_log()
                    .lines()
                    .find(|l| l.contains(needle))
                    .map(str::to_string)
            },
        )
        .await
    }
}
