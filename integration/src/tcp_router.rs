//! The `tcp-router` binary under test, TCP backends for it, and TCP route helpers.
//!
//! - [`TcpRouterBuilder`] renders a config (upstream's keys: the test's routing-api on
//!   127.0.0.1 with auth disabled, `bind_address: 127.0.0.1` (ours: external ports and the
//!   health port on loopback only), a free `health_check_port`, `drain_wait: 0s`, a 2 s
//!   `connect_timeout`; YAML overrides deep-merged on top) and starts
//!   `tcp-router -config <yml>` with short intervals (`-subscriptionRetryInterval 100ms`,
//!   `-staleRouteCheckInterval 200ms`; more flags with [`TcpRouterBuilder::flags`]).
//!   [`TcpRouterBuilder::start`] waits until `/health` is 200 and the router has both listed the
//!   routes and subscribed to the event stream (from `/metrics`).
//! - [`TcpRouter`] is the running process (a [`ChildProcess`]): output captured to a file,
//!   printed with the config when the test fails; `/health`, `/metrics`, signals, memory
//!   readings; waits for a port to accept or to refuse.
//! - [`TcpBackend`]: backends on 127.0.0.1 — an echo server that first greets with its name,
//!   a TLS one (certificate and client-certificate check of the caller's choosing), a source
//!   that streams a given number of stamped bytes, a half-close checker; each counts its
//!   connections and can kill them all ([`TcpBackend::kill_connections`]).
//! - [`tcp_route`], [`TcpRoutes`]: TCP route mappings created and deleted through the
//!   routing-api's REST API.
//! - [`greeting`], [`Client`]: the client side.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use serde_yaml_ng::Value as Yaml;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

use crate::http::{self, RawResponse};
use crate::process::{binary, ChildProcess};
use crate::routing_api::RoutingApi;
use crate::util::{free_port, merge_yaml, poll, yaml_override, TempDir};

/// How long [`TcpRouterBuilder::start`] waits for the router to be ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Builds a tcp-router config and starts the binary.
pub struct TcpRouterBuilder {
    dir: TempDir,
    config: Yaml,
    raw_config: Option<String>,
    flags: Vec<String>,
    command_line: Option<Vec<String>>,
    health_port: u16,
}

impl TcpRouterBuilder {
    /// Test defaults using the routing-api's plain HTTP port (auth disabled).
    pub fn new(api: &RoutingApi) -> Self {
        Self::for_api_port(api.http_port)
    }

    /// Test defaults using a routing API on 127.0.0.1:`port` (plain HTTP, auth disabled).
    pub fn for_api_port(port: u16) -> Self {
        let health_port = free_port();
        let text = format!(
            "routing_api:\n  uri: http://127.0.0.1\n  port: {port}\n  auth_disabled: true\n\
             bind_address: 127.0.0.1\nhealth_check_port: {health_port}\ndrain_wait: 0s\nconnect_timeout: 2s\n\
             request_timeout_in_seconds: 300\nlog_level: debug\n"
        );
        Self {
            dir: TempDir::new("it-tcp-router"),
            config: serde_yaml_ng::from_str(&text).expect("default config is YAML"),
            raw_config: None,
            flags: vec![
                "-subscriptionRetryInterval".into(),
                "100ms".into(),
                "-staleRouteCheckInterval".into(),
                "200ms".into(),
            ],
            command_line: None,
            health_port,
        }
    }

    /// The directory holding the config and the output (kept when the test fails).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Deep-merges `yaml` (a mapping) over the config.
    pub fn yaml(mut self, yaml: &str) -> Self {
        merge_yaml(&mut self.config, yaml_override(yaml));
        self
    }

    /// Uses `text` verbatim as the config file.
    pub fn raw_config(mut self, text: &str) -> Self {
        self.raw_config = Some(text.to_string());
        self
    }

    /// Adds command-line flags after the defaults (a later flag overrides an earlier one).
    pub fn flags(mut self, flags: &[&str]) -> Self {
        self.flags.extend(flags.iter().map(|f| f.to_string()));
        self
    }

    /// Runs the binary with exactly `args` (an upstream job template's argument list) instead
    /// of the harness's own; `{config}` in an argument stands for the config file's path.
    pub fn command_line(mut self, args: &[&str]) -> Self {
        self.command_line = Some(crate::util::owned_args(args));
        self
    }

    /// The config as it will be written.
    pub fn config_text(&self) -> String {
        match &self.raw_config {
            Some(t) => t.clone(),
            None => serde_yaml_ng::to_string(&self.config).expect("config to YAML"),
        }
    }

    /// Writes the config and starts the process without waiting.
    pub fn spawn(self) -> TcpRouter {
        let text = self.config_text();
        let config_path = self.dir.path().join("tcp_router.yml");
        std::fs::write(&config_path, &text).expect("write tcp-router config");
        let mut cmd = Command::new(binary("tcp-router"));
        if let Some(args) = &self.command_line {
            cmd.args(crate::util::command_line_args(args, &config_path));
        } else {
            cmd.arg("-config").arg(&config_path).args(&self.flags);
        }
        cmd.env("RUST_BACKTRACE", "1");
        let log_path = self.dir.path().join("tcp_router.log");
        TcpRouter {
            process: ChildProcess::spawn("tcp-router", cmd, log_path, text),
            health_port: self.health_port,
            _dir: self.dir,
        }
    }

    /// Starts the router and waits until it is healthy, has listed the routes and subscribed.
    pub async fn start(self) -> TcpRouter {
        let mut r = self.spawn();
        r.wait_ready(START_TIMEOUT).await;
        r
    }

    /// Runs the router until it exits by itself (e.g. a bad config); its status and output.
    pub async fn run_to_exit(self, timeout: Duration) -> (ExitStatus, String) {
        let mut r = self.spawn();
        r.process.run_to_exit(timeout).await
    }
}

/// A running `tcp-router` (killed on drop; its config and output printed if the test fails).
pub struct TcpRouter {
    /// Dropped first: the process is killed before its directory goes.
    process: ChildProcess,
    health_port: u16,
    _dir: TempDir,
}

impl TcpRouter {
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// 127.0.0.1:`health_check_port`
    pub fn health_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.health_port))
    }

    /// Everything the process wrote so far.
    pub fn output(&self) -> String {
        self.process.output()
    }

    /// The exit status, if it has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.process.try_exit()
    }

    /// Waits up to `timeout` for the process to exit; panics with its output otherwise.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.process.wait_exit(timeout).await
    }

    /// Sends `signal` to the process (unless it has exited).
    pub fn signal(&self, signal: i32) {
        self.process.signal(signal);
    }

    /// `GET path` on the health port, or `None` if it does not answer.
    pub async fn health_get(&self, path: &str) -> Option<RawResponse> {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        match tokio::time::timeout(
            Duration::from_secs(5),
            http::try_request(self.health_addr(), raw.as_bytes()),
        )
        .await
        {
            Ok(Ok(r)) => Some(r),
            _ => None,
        }
    }

    /// The `/health` status code (0 when it does not answer).
    pub async fn health_status(&self) -> u16 {
        self.health_get("/health")
            .await
            .map(|r| r.status)
            .unwrap_or(0)
    }

    /// The `/metrics` text (empty when it does not answer).
    pub async fn metrics(&self) -> String {
        self.health_get("/metrics")
            .await
            .map(|r| r.body_str())
            .unwrap_or_default()
    }

    /// The value of the sample `series` (e.g. `tcp_router_connections_total{port="1024"}`).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.metrics().await;
        text.lines().find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
    }

    /// Waits until `/health` is 200 and the routes were listed after subscribing.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_exit() {
                panic!(
                    "tcp-router exited with {st} before becoming ready; config:\n{}\noutput:\n{}",
                    self.process.config_text(),
                    self.output()
                );
            }
            if self.health_status().await == 200 && self.is_synced().await {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "tcp-router was not ready within {timeout:?}; config:\n{}\noutput:\n{}",
                    self.process.config_text(),
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the router subscribed to the event stream and listed the routes after that.
    pub async fn is_synced(&self) -> bool {
        let text = self.metrics().await;
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        value("tcp_router_routing_api_subscriptions_total ") >= 1.0
            && value("tcp_router_routing_api_syncs_total ") >= 2.0
    }

    /// Waits until `port` accepts connections that reach a backend (the backend's greeting
    /// arrives); returns how long that took.
    pub async fn wait_routed(&self, port: u16, timeout: Duration) -> Duration {
        let started = Instant::now();
        let every = Duration::from_millis(5);
        if poll(timeout, every, || async { greeting(port).await.ok() })
            .await
            .is_none()
        {
            panic!(
                "port {port} did not route to a backend within {timeout:?}; output:\n{}",
                self.output()
            );
        }
        started.elapsed()
    }

    /// Waits until connections to `port` are refused; returns how long that took.
    pub async fn wait_refused(&self, port: u16, timeout: Duration) -> Duration {
        let started = Instant::now();
        let every = Duration::from_millis(10);
        if poll(timeout, every, || async {
            is_refused(port).await.then_some(())
        })
        .await
        .is_none()
        {
            panic!(
                "port {port} still accepts connections after {timeout:?}; output:\n{}",
                self.output()
            );
        }
        started.elapsed()
    }

    /// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self, field: &str) -> u64 {
        self.process.memory_kib(field)
    }
}

// ----- routes -----

/// A TCP route mapping for the routing-api: external `port` → 127.0.0.1:`backend_port`.
pub fn tcp_route(group: &str, port: u16, backend_port: u16) -> Value {
    json!({
        "router_group_guid": group,
        "port": port,
        "backend_ip": "127.0.0.1",
        "backend_port": backend_port,
        "ttl": 120,
    })
}

/// TCP routes through a routing-api.
pub struct TcpRoutes<'a> {
    pub api: &'a RoutingApi,
    /// The `default-tcp` router group's guid.
    pub group: String,
}

impl<'a> TcpRoutes<'a> {
    pub async fn new(api: &'a RoutingApi) -> Self {
        let group = api.default_group_guid().await;
        Self { api, group }
    }

    /// A mapping `port` → 127.0.0.1:`backend_port` in the default group.
    pub fn route(&self, port: u16, backend_port: u16) -> Value {
        tcp_route(&self.group, port, backend_port)
    }

    /// `POST /routing/v1/tcp_routes/create`, asserting 201.
    pub async fn create(&self, routes: &[Value]) {
        let body = Value::Array(routes.to_vec()).to_string();
        let r = self.api.post("/routing/v1/tcp_routes/create", &body).await;
        assert_eq!(r.status, 201, "creating TCP routes {body}:\n{}", r.dump());
    }

    /// `POST /routing/v1/tcp_routes/delete`, asserting 204.
    pub async fn delete(&self, routes: &[Value]) {
        let body = Value::Array(routes.to_vec()).to_string();
        let r = self.api.post("/routing/v1/tcp_routes/delete", &body).await;
        assert_eq!(r.status, 204, "deleting TCP routes {body}:\n{}", r.dump());
    }
}

// ----- clients -----

/// Connects to 127.0.0.1:`port` and reads the backend's greeting line (its name).
pub async fn greeting(port: u16) -> std::io::Result<String> {
    let mut c = Client::connect(port).await?;
    c.read_line().await
}

/// Whether a connection to 127.0.0.1:`port` is refused.
pub async fn is_refused(port: u16) -> bool {
    matches!(
        TcpStream::connect(("127.0.0.1", port)).await,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// A client connection through the router.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// Time limit of each client read.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

impl Client {
    pub async fn connect(port: u16) -> std::io::Result<Self> {
        let stream = tokio::time::timeout(CLIENT_TIMEOUT, TcpStream::connect(("127.0.0.1", port)))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        let _ = stream.set_nodelay(true);
        Ok(Self {
            stream,
            buf: Vec::new(),
        })
    }

    /// Reads one `\n`-terminated line (without the newline).
    pub async fn read_line(&mut self) -> std::io::Result<String> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Ok(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            let mut tmp = [0u8; 4096];
            let n = tokio::time::timeout(CLIENT_TIMEOUT, self.stream.read(&mut tmp))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no line"))??;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "closed before a full line; got {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    /// Reads exactly `n` bytes (after anything already buffered).
    pub async fn read_exact(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        while self.buf.len() < n {
            let mut tmp = vec![0u8; (n - self.buf.len()).min(64 * 1024)];
            let got = tokio::time::timeout(CLIENT_TIMEOUT, self.stream.read(&mut tmp))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "read stalled"))??;
            if got == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("EOF after {} of {n} bytes", self.buf.len()),
                ));
            }
            self.buf.extend_from_slice(&tmp[..got]);
        }
        Ok(self.buf.drain(..n).collect())
    }

    pub async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        tokio::time::timeout(CLIENT_TIMEOUT, self.stream.write_all(data))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write stalled"))?
    }

    /// Writes `data` and expects it echoed back.
    pub async fn echo(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.write(data).await?;
        let back = self.read_exact(data.len()).await?;
        if back != data {
            return Err(std::io::Error::other(format!(
                "echo differs: sent {:?}, got {:?}",
                String::from_utf8_lossy(data),
                String::from_utf8_lossy(&back)
            )));
        }
        Ok(())
    }

    /// Whether the connection ends (EOF or reset) within `timeout`, with no more data.
    pub async fn closes_within(&mut self, timeout: Duration) -> bool {
        let mut tmp = [0u8; 1024];
        match tokio::time::timeout(timeout, self.stream.read(&mut tmp)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) | Err(_) => false,
        }
    }
}

// ----- backends -----

/// Size of the stamped chunks a [`TcpBackend::source`] sends.
pub const STAMP_CHUNK: usize = 64 * 1024;

/// A TCP backend on 127.0.0.1 (see the module docs). Stops on drop.
pub struct TcpBackend {
    addr: SocketAddr,
    name: String,
    accepted: Arc<AtomicUsize>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    task: JoinHandle<()>,
}

type Handler = Arc<
    dyn Fn(Box<dyn Io>, String) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// A backend connection: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl TcpBackend {
    async fn start(name: &str, tls: Option<Arc<rustls::ServerConfig>>, handler: Handler) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("backend: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("backend addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (a, c, n) = (accepted.clone(), conns.clone(), name.to_string());
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (handler, name, acceptor, a) =
                    (handler.clone(), n.clone(), acceptor.clone(), a.clone());
                let h = tokio::spawn(async move {
                    match acceptor {
                        Some(acc) => {
                            if let Ok(Ok(tls)) =
                                tokio::time::timeout(Duration::from_secs(5), acc.accept(stream))
                                    .await
                            {
                                a.fetch_add(1, Ordering::SeqCst);
                                handler(Box::new(tls), name).await;
                            }
                        }
                        None => {
                            a.fetch_add(1, Ordering::SeqCst);
                            handler(Box::new(stream), name).await;
                        }
                    }
                });
                let mut conns = c.lock().expect("backend conns lock");
                conns.retain(|h| !h.is_finished());
                conns.push(h.abort_handle());
            }
        });
        Self {
            addr,
            name: name.to_string(),
            accepted,
            conns,
            task,
        }
    }

    fn echo_handler() -> Handler {
        Arc::new(|mut io: Box<dyn Io>, name: String| {
            Box::pin(async move {
                if io.write_all(format!("{name}\n").as_bytes()).await.is_err() {
                    return;
                }
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if io.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = io.shutdown().await;
            })
        })
    }

    /// Greets each connection with `"<name>\n"`, then echoes everything; half-closes after the
    /// client's EOF.
    pub async fn echo(name: &str) -> Self {
        Self::start(name, None, Self::echo_handler()).await
    }

    /// The same over TLS with `config` (the handshake must succeed for a connection to count).
    pub async fn tls_echo(name: &str, config: Arc<rustls::ServerConfig>) -> Self {
        Self::start(name, Some(config), Self::echo_handler()).await
    }

    /// Sends `total` bytes in [`STAMP_CHUNK`] chunks whose first 8 bytes are the chunk index
    /// (little endian) and the rest `0xA5`, then closes.
    pub async fn source(name: &str, total: u64) -> Self {
        let handler: Handler = Arc::new(move |mut io: Box<dyn Io>, _name: String| {
            Box::pin(async move {
                let mut chunk = vec![0xA5u8; STAMP_CHUNK];
                let mut sent = 0u64;
                let mut index = 0u64;
                while sent < total {
                    chunk[..8].copy_from_slice(&index.to_le_bytes());
                    let n = (total - sent).min(STAMP_CHUNK as u64) as usize;
                    if io.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    sent += n as u64;
                    index += 1;
                }
                let _ = io.shutdown().await;
            })
        });
        Self::start(name, None, handler).await
    }

    /// Reads until the client's EOF, then answers `"got <n>\n"` and closes: checks that a
    /// client's half-close arrives while the way back stays open.
    pub async fn count_then_reply(name: &str) -> Self {
        let handler: Handler = Arc::new(|mut io: Box<dyn Io>, _name: String| {
            Box::pin(async move {
                let Some(total) = count_until_eof(&mut io).await else {
                    return;
                };
                let _ = io.write_all(format!("got {total}\n").as_bytes()).await;
                let _ = io.shutdown().await;
            })
        });
        Self::start(name, None, handler).await
    }

    /// Says `"bye\n"` and half-closes at once, then reads until the client's EOF and reports
    /// the count on `reports`: checks that a backend's half-close arrives while the client can
    /// still send.
    pub async fn speak_then_listen(
        name: &str,
        reports: tokio::sync::mpsc::UnboundedSender<usize>,
    ) -> Self {
        let handler: Handler = Arc::new(move |mut io: Box<dyn Io>, _name: String| {
            let reports = reports.clone();
            Box::pin(async move {
                if io.write_all(b"bye\n").await.is_err() {
                    return;
                }
                let _ = io.shutdown().await;
                if let Some(total) = count_until_eof(&mut io).await {
                    let _ = reports.send(total);
                }
            })
        });
        Self::start(name, None, handler).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connections accepted (TLS: handshakes completed).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Drops every open connection at once (as if the process died).
    pub fn kill_connections(&self) {
        for h in self.conns.lock().expect("backend conns lock").drain(..) {
            h.abort();
        }
    }
}

impl Drop for TcpBackend {
    fn drop(&mut self) {
        self.task.abort();
        self.kill_connections();
    }
}

/// Reads (and discards) until EOF: how many bytes came, or `None` on a read error.
async fn count_until_eof(io: &mut Box<dyn Io>) -> Option<usize> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0usize;
    loop {
        match io.read(&mut buf).await {
            Ok(0) => return Some(total),
            Ok(n) => total += n,
            Err(_) => return None,
        }
    }
}

/// A rustls server configuration presenting `cert_pem`/`key_pem` and, when `client_ca` is
/// given, requiring a client certificate issued by it.
pub fn tls_server_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca: Option<rustls::RootCertStore>,
) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("rustls protocol versions");
    let builder = match client_ca {
        Some(roots) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier"),
        ),
        None => builder.with_no_client_auth(),
    };
    Arc::new(
        builder
            .with_single_cert(
                crate::pki::parse_certs(cert_pem),
                crate::pki::parse_key(key_pem),
            )
            .expect("server certificate and key"),
    )
}

/// A real TLS ClientHello (rustls) asking for `sni`: the first bytes a TLS client sends.
pub fn client_hello(sni: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("rustls protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).expect("SNI is a DNS name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client hello");
    let mut out = Vec::new();
    conn.write_tls(&mut out).expect("write ClientHello");
    out
}
