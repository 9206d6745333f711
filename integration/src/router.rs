//! The binary under test: `gorouter -c <config.yml>`.
//!
//! [`GorouterBuilder`] renders a config from test defaults (free ports, the test's own
//! nats-server, no start delay, short drain, `ip: 127.0.0.1`, every listener on 127.0.0.1
//! (`bind_address` and `status.host`), an access log in the temp dir, and the BOSH job's values
//! for the keys whose upstream code default differs: pruning suspended without NATS, 3 attempts,
//! 500 connections per backend, 503 for an empty pool, keep-alives to backends) with
//! YAML overrides deep-merged on top, and [`Gorouter`] runs it as a [`ChildProcess`] with stdout
//! and stderr captured to a file. When a test panics the router's config and output are printed,
//! and the process is killed on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use serde_yaml_ng::{Mapping, Value as Yaml};

use crate::http::{self, get_request, RawResponse};
use crate::nats::NatsServer;
use crate::process::{binary, ChildProcess};
use crate::util::{free_ports, merge_yaml, yaml_at, yaml_override, yaml_port, TempDir};

/// User and password the test defaults give `/routes`.
pub const STATUS_USER: &str = "router-status";
pub const STATUS_PASS: &str = "it-status-pass";

/// How long [`GorouterBuilder::start`] waits for `/health` to say `ok`.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the `gorouter` binary is: `$GOROUTER_BIN`, else next to the test executable's directory
/// (tests run from `<target>/debug/deps/`, the binary is `<target>/debug/gorouter`), else under
/// `$CARGO_TARGET_DIR/debug`, else `<workspace>/target/debug` (see [`binary`]).
pub fn gorouter_bin() -> PathBuf {
    binary("gorouter")
}

fn default_config(nats_port: u16, dir: &Path) -> Yaml {
    let [port, status, routes] = free_ports();
    let text = format!(
        r#"
port: {port}
bind_address: 127.0.0.1
index: 0
ip: 127.0.0.1
status:
  host: 127.0.0.1
  port: {status}
  user: {STATUS_USER}
  pass: {STATUS_PASS}
  routes:
    port: {routes}
nats:
  hosts:
  - hostname: 127.0.0.1
    port: {nats_port}
logging:
  level: debug
access_log:
  file: {log}
start_response_delay_interval: 0s
drain_wait: 0s
drain_timeout: 10s
endpoint_timeout: 30s
endpoint_dial_timeout: 2s
droplet_stale_threshold: 120s
prune_stale_droplets_interval: 30s
# What BOSH renders and the tests rely on (absent keys are upstream's code defaults).
suspend_pruning_if_nats_unavailable: true
backends:
  max_attempts: 3
  max_conns: 500
route_services:
  max_attempts: 3
empty_pool_response_code_503: true
disable_keep_alives: false
max_idle_conns: 100
max_idle_conns_per_host: 100
max_header_bytes: 1048576
trace_key: "22"
"#,
        log = dir.join("access.log").display(),
    );
    serde_yaml_ng::from_str(&text).expect("default config is valid YAML")
}

/// Builds a router config and starts the binary.
pub struct GorouterBuilder {
    dir: TempDir,
    config: Yaml,
    raw_config: Option<String>,
    args: Option<Vec<String>>,
    env: Vec<(String, String)>,
}

impl GorouterBuilder {
    /// Test defaults for a router using the NATS server on 127.0.0.1:`nats_port`.
    pub fn new(nats_port: u16) -> Self {
        let dir = TempDir::new("it-gorouter");
        let config = default_config(nats_port, dir.path());
        Self {
            dir,
            config,
            raw_config: None,
            args: None,
            env: Vec::new(),
        }
    }

    /// Deep-merges a YAML document (mapping) over the config, e.g.
    /// `.yaml("backends: {max_conns: 1}\nempty_pool_timeout: 10s")`.
    pub fn yaml(mut self, yaml: &str) -> Self {
        merge_yaml(&mut self.config, yaml_override(yaml));
        self
    }

    /// Points the router at another NATS port (e.g. a [`TcpGate`](crate::TcpGate)).
    pub fn nats_port(mut self, port: u16) -> Self {
        let mut host = Mapping::new();
        host.insert("hostname".into(), "127.0.0.1".into());
        host.insert("port".into(), Yaml::Number(port.into()));
        let mut nats = Mapping::new();
        nats.insert("hosts".into(), Yaml::Sequence(vec![Yaml::Mapping(host)]));
        merge_yaml(
            &mut self.config,
            Yaml::Mapping(Mapping::from_iter([("nats".into(), Yaml::Mapping(nats))])),
        );
        self
    }

    /// Uses `text` verbatim as the config file instead of the rendered one.
    pub fn raw_config(mut self, text: &str) -> Self {
        self.raw_config = Some(text.to_string());
        self
    }

    /// Replaces the command-line arguments (default: `-c <config file>`); `{config}` in an
    /// argument stands for the config file's path.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args = Some(crate::util::owned_args(args));
        self
    }

    /// Sets an environment variable of the process (e.g. `GOMAXPROCS`).
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// The config as it will be written.
    pub fn config_text(&self) -> String {
        match &self.raw_config {
            Some(t) => t.clone(),
            None => serde_yaml_ng::to_string(&self.config).expect("serialise config"),
        }
    }

    /// Writes the config and starts the process without waiting for it to be ready.
    pub fn spawn(self) -> Gorouter {
        let bin = gorouter_bin();
        let config_path = self.dir.path().join("gorouter.yml");
        let text = self.config_text();
        std::fs::write(&config_path, &text).expect("write config");
        let args = match &self.args {
            Some(args) => crate::util::command_line_args(args, &config_path),
            None => vec!["-c".into(), config_path.display().to_string()],
        };
        let mut cmd = Command::new(&bin);
        cmd.args(&args).env("RUST_BACKTRACE", "1");
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let process =
            ChildProcess::spawn("gorouter", cmd, self.dir.path().join("gorouter.out"), text);
        let access_log = yaml_at(&self.config, &["access_log", "file"])
            .and_then(Yaml::as_str)
            .map(PathBuf::from);
        Gorouter {
            process,
            port: yaml_port(&self.config, &["port"]),
            status_port: yaml_port(&self.config, &["status", "port"]),
            routes_port: yaml_port(&self.config, &["status", "routes", "port"]),
            access_log,
            _dir: self.dir,
        }
    }

    /// Starts the router and waits until `/health` answers 200 `ok` and the proxy port accepts.
    pub async fn start(self) -> Gorouter {
        let mut r = self.spawn();
        r.wait_healthy(START_TIMEOUT).await;
        r
    }

    /// Runs the router until it exits by itself (e.g. a bad config), returning its exit status
    /// and output. Panics if it is still running after `timeout`.
    pub async fn run_to_exit(self, timeout: Duration) -> (ExitStatus, String) {
        let mut r = self.spawn();
        r.process.run_to_exit(timeout).await
    }
}

/// A running `gorouter` process (killed on drop; its config and output printed if the test
/// fails).
pub struct Gorouter {
    /// Dropped first: the process is killed before its directory goes.
    process: ChildProcess,
    port: u16,
    status_port: u16,
    routes_port: u16,
    access_log: Option<PathBuf>,
    _dir: TempDir,
}

impl Gorouter {
    /// A builder with test defaults using `nats`.
    pub fn builder(nats: &NatsServer) -> GorouterBuilder {
        GorouterBuilder::new(nats.port())
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The proxy port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// 127.0.0.1:`port`
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// 127.0.0.1:`status.port` (`/health`).
    pub fn status_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.status_port))
    }

    /// 127.0.0.1:`status.routes.port` (`/routes`).
    pub fn routes_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.routes_port))
    }

    /// The config file text the router was started with.
    pub fn config_text(&self) -> &str {
        self.process.config_text()
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        self.process.output()
    }

    /// The access log file's contents so far (empty if none yet).
    pub fn access_log(&self) -> String {
        self.access_log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// Sends a signal (e.g. `libc::SIGUSR1`) to the process; panics if that fails (e.g. it has
    /// exited and was reaped).
    pub fn signal(&self, sig: i32) {
        if let Err(e) = self.process.try_signal(sig) {
            panic!("kill({}, {sig}) failed: {e}", self.pid());
        }
    }

    /// The exit status if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.process.try_exit()
    }

    /// Waits for the process to exit, panicking (with its output) after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.process.wait_exit(timeout).await
    }

    /// `GET /health` on the status port; `None` if the connection fails.
    pub async fn health(&self) -> Option<RawResponse> {
        http::try_request(
            self.status_addr(),
            b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        )
        .await
        .ok()
    }

    /// Waits until `/health` answers 200 `ok\n` and the proxy port accepts connections.
    pub async fn wait_healthy(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer");
        loop {
            if let Some(st) = self.try_exit() {
                panic!(
                    "gorouter exited with {st} before becoming healthy; config:\n{}\noutput:\n{}",
                    self.config_text(),
                    self.output()
                );
            }
            if let Some(resp) = self.health().await {
                if resp.status == 200 && resp.body == b"ok\n" {
                    if tokio::net::TcpStream::connect(self.addr()).await.is_ok() {
                        return;
                    }
                    last = format!("/health ok but proxy port {} refuses", self.port);
                } else {
                    last = format!("/health answered {}", resp.status_line);
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "gorouter did not become healthy within {timeout:?} ({last}); config:\n{}\noutput:\n{}",
                    self.config_text(),
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends raw request bytes to the proxy port on a fresh connection; one final response.
    pub async fn request(&self, raw: &[u8]) -> RawResponse {
        http::request(self.addr(), raw).await
    }

    /// `GET path` with `Host: host` through the proxy.
    pub async fn get(&self, host: &str, path: &str) -> RawResponse {
        self.request(&get_request(host, path)).await
    }

    /// Polls `GET /` for `host` until the status is not 404 (the route is live); returns the
    /// first such response. Panics after 10 s.
    pub async fn wait_route(&self, host: &str) -> RawResponse {
        self.wait_route_path(host, "/").await
    }

    /// Polls `GET path` for `host` until the status is not 404; returns that response.
    pub async fn wait_route_path(&self, host: &str, path: &str) -> RawResponse {
        self.wait_until(host, path, "route to be live (not 404)", |s| s != 404)
            .await
    }

    /// Polls `GET /` for `host` until the status is 404 (the route is gone).
    pub async fn wait_route_gone(&self, host: &str) -> RawResponse {
        self.wait_until(host, "/", "route to be gone (404)", |s| s == 404)
            .await
    }

    /// Polls `GET /` for `host` until the status is `status`.
    pub async fn wait_status(&self, host: &str, status: u16) -> RawResponse {
        self.wait_until(host, "/", &format!("status {status}"), |s| s == status)
            .await
    }

    async fn wait_until(
        &self,
        host: &str,
        path: &str,
        what: &str,
        ok: impl Fn(u16) -> bool,
    ) -> RawResponse {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last: String;
        loop {
            match http::try_request(self.addr(), &get_request(host, path)).await {
                Ok(resp) if ok(resp.status) => return resp,
                Ok(resp) => last = resp.status_line,
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                panic!("timed out after 10s waiting for {host}{path}: {what}; last: {last}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether `host` is routed (any status but 404).
    pub async fn is_routed(&self, host: &str) -> bool {
        matches!(
            http::try_request(self.addr(), &get_request(host, "/")).await,
            Ok(r) if r.status != 404
        )
    }

    /// `GET /routes` with the configured credentials; the response.
    pub async fn routes(&self) -> RawResponse {
        let auth = basic_auth(STATUS_USER, STATUS_PASS);
        http::request(
            self.routes_addr(),
            format!(
                "GET /routes HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
    }

    /// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self, field: &str) -> u64 {
        self.process.memory_kib(field)
    }
}

/// `base64(user:pass)` for a Basic `Authorization` header.
pub fn basic_auth(user: &str, pass: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_encodes() {
        assert_eq!(
            basic_auth("Aladdin", "open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(basic_auth("a", "b"), "YTpi");
    }

    #[test]
    fn overrides_merge_deeply() {
        let mut b = GorouterBuilder::new(4222).yaml("status: {pass: x}\nbackends: {max_conns: 1}");
        b = b.nats_port(1234);
        assert_eq!(
            yaml_at(&b.config, &["status", "pass"]).and_then(Yaml::as_str),
            Some("x")
        );
        assert_eq!(
            yaml_at(&b.config, &["status", "user"]).and_then(Yaml::as_str),
            Some(STATUS_USER)
        );
        let text = b.config_text();
        assert!(text.contains("max_conns: 1"), "{text}");
        assert!(text.contains("port: 1234"), "{text}");
    }
}
