//! The `routing-api` binary under test, and what its tests need around it.
//!
//! - [`RoutingApiBuilder`] renders a config (upstream's YAML keys: free ports on 127.0.0.1 and
//!   `bind_address: 127.0.0.1` (ours) so the API listeners bind loopback only, a
//!   `default-tcp` seed, `max_ttl: 120s`, `retry_interval: 1s`, the test's database, YAML
//!   overrides deep-merged on top) and starts `routing-api -config <yml> -ip 127.0.0.1
//!   [-devMode]`. Without [`RoutingApiBuilder::uaa`] it runs with `-devMode` (no token checks).
//! - [`RoutingApi`] is the running process (a [`ChildProcess`]): its output goes to a file that
//!   is printed when the test fails; requests go over a raw HTTP/1.1 client ([`crate::http`]) so
//!   status lines, header names and bodies can be checked byte for byte; [`Sse`] reads the event
//!   streams.
//!   Readiness is "the HTTP port answers" (routing-api binds nothing before it holds its lock)
//!   and the process's own log says `routing-api.started` (so another test's process that
//!   happens to hold the same free port is never taken for ours).
//! - [`DbGate`]: a TCP forwarder in front of MariaDB that can cut every connection, so a test can
//!   take the database away from one routing-api without touching the shared server.
//! - [`Locket`]: the built `locket` binary with a JSON config (mTLS certificates from a
//!   [`TestCa`]).
//! - [`rtr`] / [`RtrEvents`]: the built `rtr` command-line client.
//! - [`tls_request`]: one request over (mutual) TLS, for the `api.mtls_listen_port` listener.
//!
//! Binaries are found next to the test executable's directory (`<target>/debug/`) by
//! [`binary`]; `cargo test --workspace` builds them. `$ROUTING_API_BIN`, `$LOCKET_BIN` and
//! `$RTR_BIN` override.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use serde_yaml_ng::Value as Yaml;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::{build_request, find, parse_response_head, try_request, HttpConn, RawResponse};
use crate::mariadb::TestDatabase;
use crate::pki::{parse_certs, parse_key, TestCa};
pub use crate::process::binary;
use crate::process::{ChildProcess, PanicDump};
use crate::uaa::{FakeUaa, ALL_ROUTING_SCOPES};
use crate::util::{
    claim_port, free_port, merge_yaml, poll, yaml_override, yaml_port, Forwarder, TempDir,
};

/// How long [`RoutingApiBuilder::start`] waits for the HTTP port to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The `system_domain` of the test config: the API registers `api.example.com/routing`.
pub const SYSTEM_DOMAIN: &str = "example.com";
/// The `log_guid` of the test config.
pub const LOG_GUID: &str = "routing-api-logs";
/// The seeded router group of the test config.
pub const DEFAULT_GROUP: &str = "default-tcp";

/// A port for a listener that may be bound only much later (a standby binds when it takes
/// over): chosen at random below the kernel's ephemeral range, so no outgoing connection can
/// take it meanwhile (as one may with [`free_port`]), and free on 127.0.0.1 (where the tests'
/// routing-api binds, `bind_address`) right now, and never handed out twice in one test process.
pub fn listener_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    if low <= 12_000 {
        return free_port();
    }
    for _ in 0..100 {
        let r = u32::from_le_bytes(
            uuid::Uuid::new_v4().as_bytes()[..4]
                .try_into()
                .unwrap_or_default(),
        );
        let port = (10_000 + r % (low - 10_000)) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() && claim_port(port) {
            return port;
        }
    }
    free_port()
}

fn sh_quote_yaml(s: &str) -> String {
    serde_json::to_string(s).expect("string to JSON")
}

// ----- the database -----

/// The database a routing-api uses (`sqldb.*`).
#[derive(Debug, Clone)]
pub enum Database {
    Mysql {
        host: String,
        port: u16,
        schema: String,
        user: String,
        password: String,
    },
    Sqlite {
        path: PathBuf,
    },
    /// `sqldb.type: postgres` (`database` goes to `sqldb.schema`, as upstream).
    Postgres {
        host: String,
        port: u16,
        database: String,
        user: String,
        password: String,
    },
}

impl Database {
    /// A PostgreSQL database (created and dropped by the caller).
    pub fn postgres(host: &str, port: u16, database: &str, user: &str, password: &str) -> Self {
        Database::Postgres {
            host: host.to_string(),
            port,
            database: database.to_string(),
            user: user.to_string(),
            password: password.to_string(),
        }
    }

    /// The test database on the shared MariaDB server.
    pub fn mysql(db: &TestDatabase) -> Self {
        let s = db.server();
        Database::Mysql {
            host: s.host.clone(),
            port: s.port,
            schema: db.name().to_string(),
            user: s.user.clone(),
            password: s.password.clone(),
        }
    }

    /// The test database reached through `gate` (which must forward to the MariaDB server).
    pub fn mysql_via(db: &TestDatabase, gate: &DbGate) -> Self {
        let s = db.server();
        Database::Mysql {
            host: "127.0.0.1".to_string(),
            port: gate.port(),
            schema: db.name().to_string(),
            user: s.user.clone(),
            password: s.password.clone(),
        }
    }

    /// A SQLite file (created by routing-api).
    pub fn sqlite(path: impl Into<PathBuf>) -> Self {
        Database::Sqlite { path: path.into() }
    }

    fn yaml(&self) -> String {
        match self {
            Database::Mysql {
                host,
                port,
                schema,
                user,
                password,
            } => format!(
                "sqldb:\n  type: mysql\n  host: {}\n  port: {port}\n  schema: {}\n  username: {}\n  password: {}\n",
                sh_quote_yaml(host),
                sh_quote_yaml(schema),
                sh_quote_yaml(user),
                sh_quote_yaml(password)
            ),
            Database::Postgres {
                host,
                port,
                database,
                user,
                password,
            } => format!(
                "sqldb:\n  type: postgres\n  host: {}\n  port: {port}\n  schema: {}\n  username: {}\n  password: {}\n",
                sh_quote_yaml(host),
                sh_quote_yaml(database),
                sh_quote_yaml(user),
                sh_quote_yaml(password)
            ),
            Database::Sqlite { path } => format!(
                "sqldb:\n  type: sqlite\n  schema: {}\n",
                sh_quote_yaml(&path.display().to_string())
            ),
        }
    }
}

/// A TCP forwarder on 127.0.0.1 in front of a server (MariaDB) that can cut the server off:
/// [`DbGate::cut`] closes every forwarded connection and makes new ones close at once (the
/// client sees its connections die and new ones fail right after connecting), until
/// [`DbGate::restore`].
pub struct DbGate {
    forwarder: Forwarder,
}

impl DbGate {
    /// Starts an open gate forwarding to `host:port`.
    pub async fn start(host: &str, port: u16) -> Self {
        Self {
            forwarder: Forwarder::start("db gate", format!("{host}:{port}")).await,
        }
    }

    pub fn port(&self) -> u16 {
        self.forwarder.port()
    }

    /// Cuts every forwarded connection and refuses new ones (accepted, then closed).
    pub fn cut(&self) {
        self.forwarder.set_open(false);
        self.forwarder.cut_connections();
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.forwarder.set_open(true);
    }
}

// ----- TLS material -----

/// The mutual TLS listener's files (`api.mtls_*`): a server certificate for 127.0.0.1 and the
/// CA its clients' certificates must chain to.
#[derive(Debug, Clone)]
pub struct MtlsFiles {
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_ca: PathBuf,
}

impl MtlsFiles {
    /// Issues a server certificate for `127.0.0.1`/`localhost` from `ca` and writes it, its key
    /// and `ca` (as client CA) into `dir`.
    pub fn write(ca: &TestCa, dir: &Path) -> Self {
        let files = ca.write_server(dir, &["127.0.0.1", "localhost"]);
        Self {
            server_cert: files.cert,
            server_key: files.key,
            client_ca: files.ca,
        }
    }
}

/// What [`RoutingApiBuilder::locket`] needs: the Locket server address and the client's files.
#[derive(Debug, Clone)]
pub struct LocketClientFiles {
    pub address: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

// ----- the routing-api process -----

/// Builds a routing-api config and starts the binary.
pub struct RoutingApiBuilder {
    dir: Arc<TempDir>,
    db: Database,
    uaa: Option<(String, u16)>,
    token: Option<String>,
    mtls: Option<MtlsFiles>,
    locket: Option<LocketClientFiles>,
    overrides: Vec<Yaml>,
    uuid: String,
    command_line: Option<Vec<String>>,
}

impl RoutingApiBuilder {
    /// Test defaults on `db`, `-devMode` (no token checks).
    pub fn new(db: Database) -> Self {
        Self {
            dir: Arc::new(TempDir::new("it-routing-api")),
            db,
            uaa: None,
            token: None,
            mtls: None,
            locket: None,
            overrides: Vec::new(),
            uuid: format!("routing-api-{}", uuid::Uuid::new_v4()),
            command_line: None,
        }
    }

    /// Runs the binary with exactly `args` (an upstream job template's argument list) instead
    /// of the harness's own; `{config}` in an argument stands for the config file's path.
    pub fn command_line(mut self, args: &[&str]) -> Self {
        self.command_line = Some(crate::util::owned_args(args));
        self
    }

    /// The directory holding the config and the log (kept when the test fails).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Turns token checks on against `uaa` (`oauth.token_endpoint`/`oauth.port`); requests of
    /// the convenience methods carry a token with the four routing scopes.
    pub fn uaa(mut self, uaa: &FakeUaa) -> Self {
        self.uaa = Some((uaa.token_endpoint(), uaa.port()));
        self.token = Some(uaa.mint(&ALL_ROUTING_SCOPES, Duration::from_secs(3600)));
        self
    }

    /// Enables the mutual TLS listener with `files`.
    pub fn mtls(mut self, files: MtlsFiles) -> Self {
        self.mtls = Some(files);
        self
    }

    /// Uses a Locket server for the lock (`locket.*`).
    pub fn locket(mut self, files: LocketClientFiles) -> Self {
        self.locket = Some(files);
        self
    }

    /// Sets the instance `uuid` (the lock owner).
    pub fn uuid(mut self, uuid: &str) -> Self {
        self.uuid = uuid.to_string();
        self
    }

    /// Deep-merges `yaml` over the config.
    pub fn yaml(mut self, yaml: &str) -> Self {
        self.overrides.push(yaml_override(yaml));
        self
    }

    fn render(&self, http: u16, mtls: u16, admin: u16) -> String {
        let mut text = format!(
            "api:\n  listen_port: {http}\n  http_enabled: true\n  mtls_listen_port: {mtls}\n\
             bind_address: 127.0.0.1\nadmin_port: {admin}\nlog_guid: {LOG_GUID}\nsystem_domain: {SYSTEM_DOMAIN}\n\
             uuid: {uuid}\nmax_ttl: 120s\nretry_interval: 1s\n\
             router_groups:\n- name: {DEFAULT_GROUP}\n  type: tcp\n  reservable_ports: 1024-1033\n",
            uuid = sh_quote_yaml(&self.uuid),
        );
        text.push_str(&self.db.yaml());
        if let Some((endpoint, port)) = &self.uaa {
            text.push_str(&format!(
                "oauth:\n  token_endpoint: {}\n  port: {port}\n  client_name: routing-api\n  client_secret: secret\n",
                sh_quote_yaml(endpoint)
            ));
            // routing-api refuses an http:// UAA without this key (the fake UAA without TLS).
            if endpoint.starts_with("http://") {
                text.push_str("  allow_plain_http: true\n");
            }
        }
        let mut doc: Yaml = serde_yaml_ng::from_str(&text).expect("default config is YAML");
        if let Some(m) = &self.mtls {
            let over = format!(
                "api:\n  mtls_server_cert_file: {}\n  mtls_server_key_file: {}\n  mtls_client_ca_file: {}\n",
                sh_quote_yaml(&m.server_cert.display().to_string()),
                sh_quote_yaml(&m.server_key.display().to_string()),
                sh_quote_yaml(&m.client_ca.display().to_string()),
            );
            merge_yaml(&mut doc, serde_yaml_ng::from_str(&over).expect("mtls YAML"));
        }
        if let Some(l) = &self.locket {
            let over = format!(
                "locket:\n  locket_address: {}\n  locket_ca_cert_file: {}\n  locket_client_cert_file: {}\n  locket_client_key_file: {}\n",
                sh_quote_yaml(&l.address),
                sh_quote_yaml(&l.ca.display().to_string()),
                sh_quote_yaml(&l.cert.display().to_string()),
                sh_quote_yaml(&l.key.display().to_string()),
            );
            merge_yaml(
                &mut doc,
                serde_yaml_ng::from_str(&over).expect("locket YAML"),
            );
        }
        for o in &self.overrides {
            merge_yaml(&mut doc, o.clone());
        }
        serde_yaml_ng::to_string(&doc).expect("config to YAML")
    }

    /// Starts the process without waiting for it to serve (a standby never does).
    pub fn spawn(self) -> RoutingApi {
        self.spawn_attempt(0)
    }

    fn spawn_attempt(&self, attempt: u32) -> RoutingApi {
        let (http, mtls, admin) = (listener_port(), listener_port(), listener_port());
        let text = self.render(http, mtls, admin);
        let doc: Yaml = serde_yaml_ng::from_str(&text).expect("rendered config");
        let http_port = yaml_port(&doc, &["api", "listen_port"]);
        let mtls_port = yaml_port(&doc, &["api", "mtls_listen_port"]);
        let admin_port = yaml_port(&doc, &["admin_port"]);
        let suffix = if attempt == 0 {
            String::new()
        } else {
            format!("-{attempt}")
        };
        let config_path = self.dir.path().join(format!("routing-api{suffix}.yml"));
        std::fs::write(&config_path, &text).expect("write routing-api config");
        let mut cmd = Command::new(binary("routing-api"));
        if let Some(args) = &self.command_line {
            cmd.args(crate::util::command_line_args(args, &config_path));
        } else {
            cmd.arg("-config")
                .arg(&config_path)
                .args(["-ip", "127.0.0.1"]);
            if self.uaa.is_none() {
                cmd.arg("-devMode");
            }
        }
        cmd.env(
            "RUST_LOG",
            std::env::var("ROUTING_API_LOG").unwrap_or("info".into()),
        );
        let log_path = self.dir.path().join(format!("routing-api{suffix}.log"));
        let title = format!(
            "routing-api {} (http {http_port}, mtls {mtls_port})",
            self.uuid
        );
        let process = ChildProcess::spawn("routing-api", cmd, log_path, text)
            .with_panic_dump(PanicDump::Log { title });
        RoutingApi {
            process,
            dir: self.dir.clone(),
            config_path,
            http_port,
            mtls_port,
            admin_port,
            uuid: self.uuid.clone(),
            token: self.token.clone(),
        }
    }

    /// Starts the process and waits until its HTTP port answers and its own route
    /// (`api.<system_domain>/routing`) is listed. A start that fails because a chosen port was
    /// taken meanwhile (parallel tests) is retried with other ports.
    pub async fn start(self) -> RoutingApi {
        let mut attempt = 0;
        loop {
            let mut api = self.spawn_attempt(attempt);
            match api.serving_within(START_TIMEOUT).await {
                Ok(()) => {
                    api.wait_own_route().await;
                    return api;
                }
                Err(log) if attempt < 3 && log.contains("cannot listen") => {
                    eprintln!("routing-api start attempt {attempt}: a port was taken; retrying");
                    attempt += 1;
                }
                Err(log) => panic!("{log}"),
            }
        }
    }
}

/// A running routing-api (killed on drop; its log printed if the test fails).
pub struct RoutingApi {
    /// Dropped first: the process is killed before its directory goes.
    process: ChildProcess,
    dir: Arc<TempDir>,
    config_path: PathBuf,
    pub http_port: u16,
    pub mtls_port: u16,
    pub admin_port: u16,
    pub uuid: String,
    token: Option<String>,
}

impl RoutingApi {
    /// Test defaults on `db` (dev mode), started and serving.
    pub async fn start(db: Database) -> Self {
        RoutingApiBuilder::new(db).start().await
    }

    pub fn builder(db: Database) -> RoutingApiBuilder {
        RoutingApiBuilder::new(db)
    }

    /// The plain HTTP API address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http_port))
    }

    /// The mutual TLS API address.
    pub fn mtls_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.mtls_port))
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The token the convenience methods send (auth-enabled instances only).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        self.process.output()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The exit status, if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.process.try_exit()
    }

    /// Waits for the HTTP port to answer a request; panics (with the log) if the process exits
    /// or `timeout` passes first.
    pub async fn wait_serving(&mut self, timeout: Duration) {
        if let Err(e) = self.serving_within(timeout).await {
            panic!("{e}");
        }
    }

    async fn serving_within(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Err(format!(
                    "routing-api exited with {status} before serving; its log:\n{}",
                    self.log()
                ));
            }
            // Our own log must say it started too: with free ports picked by parallel tests,
            // another process could be answering on the port we were given.
            if self.log().contains("\"routing-api.started\"") && self.answers().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "routing-api did not answer on {} within {timeout:?}; its log:\n{}",
                    self.addr(),
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (up to 10 s) until `GET /routing/v1/routes` lists the API's own route, which is
    /// registered right after the listeners are up.
    pub async fn wait_own_route(&self) {
        let own = format!("\"api.{SYSTEM_DOMAIN}/routing\"");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.get("/routing/v1/routes").await;
            if r.status == 200 && r.body_str().contains(&own) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "routing-api never listed its own route; last answer:\n{}\nits log:\n{}",
                r.dump(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the HTTP port answers a `GET /routing/v1/router_groups` with any HTTP response.
    pub async fn answers(&self) -> bool {
        let raw = build_request(
            "GET",
            "/routing/v1/router_groups",
            &[("Host", &self.addr().to_string())],
            b"",
        );
        matches!(
            tokio::time::timeout(Duration::from_secs(5), try_request(self.addr(), &raw)).await,
            Ok(Ok(_))
        )
    }

    /// Whether anything accepts TCP connections on `port` (127.0.0.1).
    pub async fn port_bound(port: u16) -> bool {
        matches!(
            tokio::time::timeout(
                Duration::from_secs(2),
                TcpStream::connect(("127.0.0.1", port))
            )
            .await,
            Ok(Ok(_))
        )
    }

    /// Sends exactly `headers` (plus `Host`) and `body` (with `Content-Length` when not empty).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> RawResponse {
        let host = self.addr().to_string();
        let mut all: Vec<(&str, &str)> = vec![("Host", &host)];
        all.extend_from_slice(headers);
        let raw = build_request(method, path, &all, body);
        match try_request(self.addr(), &raw).await {
            Ok(r) => r,
            Err(e) => panic!(
                "{method} {path} to routing-api failed: {e}; its log:\n{}",
                self.log()
            ),
        }
    }

    /// A request with the instance's token (if any) and `body`.
    pub async fn call(&self, method: &str, path: &str, body: &str) -> RawResponse {
        let auth = self.token.as_ref().map(|t| format!("bearer {t}"));
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        if !body.is_empty() {
            headers.push(("Content-Type", "application/json"));
        }
        self.request(method, path, &headers, body.as_bytes()).await
    }

    pub async fn get(&self, path: &str) -> RawResponse {
        self.call("GET", path, "").await
    }

    pub async fn post(&self, path: &str, body: &str) -> RawResponse {
        self.call("POST", path, body).await
    }

    pub async fn put(&self, path: &str, body: &str) -> RawResponse {
        self.call("PUT", path, body).await
    }

    pub async fn delete(&self, path: &str, body: &str) -> RawResponse {
        self.call("DELETE", path, body).await
    }

    /// `GET path`, asserting 200, parsed as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status, 200, "GET {path}:\n{}", r.dump());
        serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("GET {path}: body is not JSON ({e}):\n{}", r.dump()))
    }

    /// The HTTP routes (`GET /routing/v1/routes`) without the API's own route.
    pub async fn http_routes(&self) -> Vec<Value> {
        let own = format!("api.{SYSTEM_DOMAIN}/routing");
        let v = self.get_json("/routing/v1/routes").await;
        v.as_array()
            .expect("routes is an array")
            .iter()
            .filter(|r| r["route"] != own.as_str())
            .cloned()
            .collect()
    }

    /// The TCP routes (`GET /routing/v1/tcp_routes`).
    pub async fn tcp_routes(&self) -> Vec<Value> {
        let v = self.get_json("/routing/v1/tcp_routes").await;
        v.as_array().expect("tcp_routes is an array").clone()
    }

    /// The guid of the seeded `default-tcp` router group.
    pub async fn default_group_guid(&self) -> String {
        let v = self
            .get_json(&format!("/routing/v1/router_groups?name={DEFAULT_GROUP}"))
            .await;
        v[0]["guid"]
            .as_str()
            .expect("router group guid")
            .to_string()
    }

    /// Opens an event stream (`/routing/v1/events` or `/routing/v1/tcp_routes/events`) with the
    /// instance's token and reads the response head.
    pub async fn events(&self, path: &str) -> Sse {
        let auth = self.token.as_ref().map(|t| format!("bearer {t}"));
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        self.events_with(path, &headers).await
    }

    /// Opens an event stream sending exactly `headers` (plus `Host`).
    pub async fn events_with(&self, path: &str, headers: &[(&str, &str)]) -> Sse {
        let host = self.addr().to_string();
        let mut all: Vec<(&str, &str)> = vec![("Host", &host)];
        all.extend_from_slice(headers);
        let mut conn = HttpConn::connect(self.addr()).await;
        conn.send(&build_request("GET", path, &all, b"")).await;
        let head = conn
            .read_head()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: no response head: {e}"));
        let (stream, buf) = conn.into_parts();
        Sse {
            head,
            stream,
            raw: buf,
            data: Vec::new(),
            consumed: 0,
            ended: false,
        }
    }

    /// Sends `signal` to the process (unless it has exited).
    pub fn signal(&self, signal: i32) {
        self.process.signal(signal);
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill9(&mut self) {
        self.process.kill();
    }

    /// SIGTERM (does not wait).
    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Waits up to `timeout` for the process to exit; panics with the log if it does not.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.process.wait_exit(timeout).await
    }
}

// ----- server-sent events -----

/// One event of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `id:` field.
    pub id: String,
    /// The `event:` field (`Upsert` / `Delete`).
    pub event: String,
    /// The `data:` field.
    pub data: String,
    /// The event exactly as sent, without the blank line ending it.
    pub raw: String,
}

impl SseEvent {
    /// `data` parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {}", self.data))
    }
}

/// An event-stream response being read (chunked transfer encoding decoded as it arrives).
pub struct Sse {
    /// The response head.
    pub head: RawResponse,
    stream: TcpStream,
    /// Received, not yet de-chunked bytes.
    raw: Vec<u8>,
    /// De-chunked body bytes.
    data: Vec<u8>,
    /// How much of `data` was returned as events.
    consumed: usize,
    ended: bool,
}

impl Sse {
    /// Moves complete chunks from `raw` to `data`; notes the last chunk.
    fn dechunk(&mut self) -> Result<(), String> {
        let chunked = self
            .head
            .header("Transfer-Encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if !chunked {
            self.data.append(&mut self.raw);
            // an error answer with a length: complete once that much has arrived
            let length = self
                .head
                .header("Content-Length")
                .and_then(|v| v.parse().ok());
            if length.is_some_and(|n: usize| self.data.len() >= n) {
                self.ended = true;
            }
            return Ok(());
        }
        loop {
            let Some(eol) = find(&self.raw, b"\r\n") else {
                return Ok(());
            };
            let line = String::from_utf8_lossy(&self.raw[..eol]).into_owned();
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size line {line:?}"))?;
            if size == 0 {
                self.ended = true;
                self.raw.clear();
                return Ok(());
            }
            if self.raw.len() < eol + 2 + size + 2 {
                return Ok(());
            }
            let start = eol + 2;
            self.data.extend_from_slice(&self.raw[start..start + size]);
            self.raw.drain(..start + size + 2);
        }
    }

    /// The next complete event (`:` comment blocks skipped) from what was received.
    fn take_event(&mut self) -> Option<SseEvent> {
        loop {
            let rest = &self.data[self.consumed..];
            let end = find(rest, b"\n\n")?;
            let block = String::from_utf8_lossy(&rest[..end]).into_owned();
            self.consumed += end + 2;
            if block.lines().all(|l| l.starts_with(':')) {
                continue;
            }
            let mut ev = SseEvent {
                id: String::new(),
                event: String::new(),
                data: String::new(),
                raw: block.clone(),
            };
            for line in block.lines() {
                let (k, v) = line.split_once(':').unwrap_or((line, ""));
                let v = v.strip_prefix(' ').unwrap_or(v);
                match k {
                    "id" => ev.id = v.to_string(),
                    "event" => ev.event = v.to_string(),
                    "data" => {
                        if !ev.data.is_empty() {
                            ev.data.push('\n');
                        }
                        ev.data.push_str(v);
                    }
                    _ => {}
                }
            }
            return Some(ev);
        }
    }

    /// Reads more bytes; false at EOF, error or timeout.
    async fn fill(&mut self, deadline: tokio::time::Instant) -> bool {
        let mut tmp = [0u8; 16 * 1024];
        match tokio::time::timeout_at(deadline, self.stream.read(&mut tmp)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                self.ended = true;
                false
            }
            Ok(Ok(n)) => {
                self.raw.extend_from_slice(&tmp[..n]);
                true
            }
            Err(_) => false,
        }
    }

    /// The next event within `timeout`, or `None` (timeout or end of stream).
    pub async fn next_event(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Err(e) = self.dechunk() {
                panic!("event stream framing: {e}");
            }
            if let Some(ev) = self.take_event() {
                return Some(ev);
            }
            if self.ended || !self.fill(deadline).await {
                return None;
            }
        }
    }

    /// The next event; panics if none arrives within `timeout`.
    pub async fn expect_event(&mut self, timeout: Duration) -> SseEvent {
        let got = String::from_utf8_lossy(&self.data).into_owned();
        match self.next_event(timeout).await {
            Some(ev) => ev,
            None => panic!(
                "no event within {timeout:?} (stream ended: {}); received so far:\n{got}",
                self.ended
            ),
        }
    }

    /// Whether the server ends the stream within `timeout` (events still unread count as "not
    /// ended").
    pub async fn ends_within(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Err(e) = self.dechunk() {
                panic!("event stream framing: {e}");
            }
            if self.ended {
                return true;
            }
            if !self.fill(deadline).await {
                return self.ended;
            }
        }
    }

    /// The de-chunked body received so far.
    pub fn body_so_far(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

// ----- (mutual) TLS requests -----

/// A response read over TLS (header names lowercase, as `http` keeps them).
#[derive(Debug)]
pub struct TlsResponse {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// One `GET path` over TLS to `addr`, trusting `server_ca`, presenting `client` (cert PEM,
/// key PEM) if given, with `Authorization: bearer <token>` if given. Any handshake, transport
/// or protocol failure is an `Err` with its description.
pub async fn tls_request(
    addr: SocketAddr,
    server_ca: &TestCa,
    client: Option<(&str, &str)>,
    path: &str,
    token: Option<&str>,
) -> Result<TlsResponse, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(server_ca.root_store());
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(parse_certs(cert), parse_key(key))
            .map_err(|e| e.to_string())?,
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1".to_string())
        .map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(conn);
    let mut req = hyper::Request::get(path).header(hyper::header::HOST, addr.to_string());
    if let Some(t) = token {
        req = req.header(hyper::header::AUTHORIZATION, format!("bearer {t}"));
    }
    let req = req
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .map_err(|_| "request timed out".to_string())?
        .map_err(|e| format!("request: {e:?}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(TlsResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

// ----- locket -----

/// The built `locket` binary with a JSON config on a free 127.0.0.1 port, mutual TLS with
/// certificates from a [`TestCa`]. Killed on drop; log printed if the test fails.
pub struct Locket {
    /// Dropped first: the process is killed before its directory goes.
    process: ChildProcess,
    dir: TempDir,
    port: u16,
}

impl Locket {
    /// Starts locket on `database_driver` (`mysql`/`sqlite`) with `connection_string`, its
    /// server certificate from `ca`, and waits until it accepts connections.
    pub async fn start(ca: &TestCa, driver: &str, connection_string: &str) -> Self {
        Self::start_in(TempDir::new("it-locket"), ca, driver, connection_string).await
    }

    /// Starts locket on a SQLite file of its own, kept in its directory.
    pub async fn start_sqlite(ca: &TestCa) -> Self {
        let dir = TempDir::new("it-locket");
        let db = dir.path().join("locket.db").display().to_string();
        Self::start_in(dir, ca, "sqlite", &db).await
    }

    async fn start_in(dir: TempDir, ca: &TestCa, driver: &str, connection_string: &str) -> Self {
        let files = ca.write_server(dir.path(), &["127.0.0.1", "localhost"]);
        let port = listener_port();
        let config = serde_json::json!({
            "listen_address": format!("127.0.0.1:{port}"),
            "ca_file": files.ca,
            "cert_file": files.cert,
            "key_file": files.key,
            "database_driver": driver,
            "database_connection_string": connection_string,
            "max_open_database_connections": 10,
            "log_level": "info",
        });
        let config_path = dir.path().join("locket.json");
        let text = config.to_string();
        std::fs::write(&config_path, &text).expect("write locket config");
        let mut cmd = Command::new(binary("locket"));
        cmd.arg("-config").arg(&config_path);
        let process = ChildProcess::spawn("locket", cmd, dir.path().join("locket.log"), text)
            .with_panic_dump(PanicDump::Log {
                title: "locket".into(),
            });
        let mut l = Self { process, dir, port };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(s) = l.process.try_exit() {
                panic!("locket exited with {s} at startup; its log:\n{}", l.log());
            }
            if RoutingApi::port_bound(port).await {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "locket did not listen on {port} within {START_TIMEOUT:?}; its log:\n{}",
                l.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `127.0.0.1:<port>`
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn log(&self) -> String {
        self.process.output()
    }

    /// Client files for a routing-api: a client certificate from `ca` written to a directory
    /// of this locket's.
    pub fn client_files(&self, ca: &TestCa) -> LocketClientFiles {
        let dir = self.dir.path().join("client");
        std::fs::create_dir_all(&dir).expect("locket client dir");
        let files = ca.write_client(&dir, "routing-api");
        LocketClientFiles {
            address: self.address(),
            ca: files.ca,
            cert: files.cert,
            key: files.key,
        }
    }
}

// ----- rtr -----

/// What a finished `rtr` run printed.
#[derive(Debug, Clone)]
pub struct RtrOutput {
    /// The exit code (`None` if killed by a signal or the time limit).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Starts `rtr args…` (without `$RTR_TRACE`) with stdout and stderr piped.
fn spawn_rtr<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Child {
    let bin = binary("rtr");
    Command::new(&bin)
        .args(args)
        .env_remove("RTR_TRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
}

/// Runs `rtr args…` to completion (killed after 20 s) without blocking the test's runtime.
pub async fn rtr(args: &[&str]) -> RtrOutput {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut child = spawn_rtr(&args);
        let mut out = child.stdout.take().expect("stdout");
        let mut err = child.stderr.take().expect("stderr");
        let t_out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut out, &mut s);
            s
        });
        let t_err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut s);
            s
        });
        let started = Instant::now();
        let status = loop {
            if let Ok(Some(s)) = child.try_wait() {
                break Some(s);
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        RtrOutput {
            code: status.and_then(|s| s.code()),
            stdout: t_out.join().unwrap_or_default(),
            stderr: t_err.join().unwrap_or_default(),
        }
    })
    .await
    .expect("rtr runner thread")
}

/// A running `rtr events …`, its stdout lines delivered as they come. Killed on drop.
pub struct RtrEvents {
    child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl RtrEvents {
    pub fn start(args: &[&str]) -> Self {
        let mut child = spawn_rtr(args);
        let out = child.stdout.take().expect("stdout");
        let mut err = child.stderr.take().expect("stderr");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr: Arc<Mutex<String>> = Arc::default();
        let e = stderr.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut s);
            if let Ok(mut e) = e.lock() {
                e.push_str(&s);
            }
        });
        Self {
            child,
            lines,
            stderr,
        }
    }

    /// The next non-empty stdout line within `timeout`, or `None`.
    pub async fn try_next_line(&mut self, timeout: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(l)) if l.trim().is_empty() => continue,
                Ok(Some(l)) => return Some(l),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The next non-empty stdout line within `timeout`; panics otherwise.
    pub async fn next_line(&mut self, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(l)) if l.trim().is_empty() => continue,
                Ok(Some(l)) => return l,
                Ok(None) => panic!("rtr events ended its output; stderr: {}", self.stderr()),
                Err(_) => panic!(
                    "rtr events printed nothing within {timeout:?}; stderr: {}",
                    self.stderr()
                ),
            }
        }
    }

    /// What the process wrote to stderr so far (complete once it exited).
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RtrEvents {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----- raw bodies -----

/// Sends a request with a body of `len` bytes of `fill` (after `prefix`) while reading the
/// response concurrently, so a server that answers before reading everything is observed
/// rather than hitting a broken pipe.
pub async fn send_large_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    prefix: &[u8],
    len: usize,
    fill: u8,
) -> std::io::Result<RawResponse> {
    let mut body = prefix.to_vec();
    body.resize(len.max(prefix.len()), fill);
    let host = addr.to_string();
    let mut all: Vec<(&str, &str)> = vec![("Host", &host)];
    all.extend_from_slice(headers);
    let raw = build_request(method, path, &all, &body);
    let stream = TcpStream::connect(addr).await?;
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&raw).await;
        wr
    });
    let mut buf = Vec::new();
    let mut tmp = vec![0u8; 64 * 1024];
    // Read until the head and a Content-Length body (error bodies are small) have arrived.
    let resp = loop {
        let n = tokio::time::timeout(Duration::from_secs(20), rd.read(&mut tmp))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no response"))??;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("connection closed; got {:?}", String::from_utf8_lossy(&buf)),
            ));
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let mut resp = parse_response_head(&String::from_utf8_lossy(&buf[..end]))?;
            let cl = resp
                .header("Content-Length")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + cl {
                resp.body = buf[end + 4..end + 4 + cl].to_vec();
                break resp;
            }
        }
    };
    writer.abort();
    Ok(resp)
}

/// Polls `probe` until it returns true or `timeout` passes; returns how long it took.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    let every = Duration::from_millis(50);
    let probe = || {
        let answer = probe();
        async move { answer.await.then_some(()) }
    };
    if poll(timeout, every, probe).await.is_none() {
        panic!("timed out after {timeout:?} waiting for {what}");
    }
    started.elapsed()
}

// ----- wire assertions -----

/// Asserts the header set of a routing-api response: `expected` exactly (names compared
/// case-sensitively, values exactly, order ignored), plus a `Date` and an `X-Vcap-Request-Id`
/// holding a UUID, which upstream sends on every response.
pub fn assert_headers(resp: &RawResponse, expected: &[(&str, &str)]) {
    let ids = resp.header_all("X-Vcap-Request-Id");
    assert!(
        ids.len() == 1 && crate::util::is_uuid_like(ids[0]),
        "expected one `X-Vcap-Request-Id: <uuid>` header:\n{}",
        resp.dump()
    );
    assert!(
        resp.headers.iter().any(|(n, _)| n == "X-Vcap-Request-Id"),
        "the request id header must be spelled `X-Vcap-Request-Id`:\n{}",
        resp.dump()
    );
    let mut rest = resp.clone();
    rest.headers.retain(|(n, _)| n != "X-Vcap-Request-Id");
    rest.assert_headers_exactly(expected);
}

/// JSON string escaping as Go's encoder does it (`<`, `>`, `&` as `\u00XX`).
pub fn go_escape(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// The error body upstream writes: `{"name":…,"message":…}`.
pub fn error_json(name: &str, message: &str) -> String {
    let s = |v: &str| serde_json::to_string(v).expect("JSON string");
    go_escape(&format!(
        r#"{{"name":{},"message":{}}}"#,
        s(name),
        s(message)
    ))
}

/// Asserts an error response byte for byte: status, `Content-Type: text/plain; charset=utf-8`
/// (Go's sniffing of a body written without a type), `Content-Length`, and the JSON body.
pub fn assert_error(resp: &RawResponse, status: u16, name: &str, message: &str) {
    let body = error_json(name, message);
    assert_eq!(
        (resp.status, resp.body_str()),
        (status, body.clone()),
        "unexpected error response:\n{}",
        resp.dump()
    );
    assert_headers(
        resp,
        &[
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", &body.len().to_string()),
        ],
    );
}

/// `s` with every UUID replaced by `<guid>`, for comparing bodies that carry generated ids.
pub fn mask_guids(s: &str) -> String {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
            .expect("uuid regex")
    })
    .replace_all(s, "<guid>")
    .into_owned()
}
