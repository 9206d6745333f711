//! Process setup for a full run: a private nats-server on a free 127.0.0.1 port, a gorouter
//! child process started with a generated config, the readiness checks (`/health`, then the
//! route answering through the proxy), and the `router.register` messages that keep the
//! backend's route alive.
//!
//! Everything started here is owned by [`Stack`]: dropping it (at the end of the run, on an
//! error or while unwinding from a panic) stops the registration task, kills the child
//! processes and removes the temporary directory with their config and logs.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use http::StatusCode;
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};

use crate::client;
use crate::targets::Target;

/// The host the backend is registered under.
pub const ROUTE_HOST: &str = "bench.example.com";
/// How often the registration is re-sent (gorouter prunes it after 120 s without one).
const REGISTER_INTERVAL: Duration = Duration::from_secs(5);
const NATS_READY_TIMEOUT: Duration = Duration::from_secs(10);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
const ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(100);

/// The running nats-server and gorouter. Fields drop in order: registration first, then
/// gorouter, then NATS, then the directory.
pub struct Stack {
    /// Gorouter's proxy listener.
    pub proxy_addr: SocketAddr,
    /// The nats-server gorouter listens to (`nats://127.0.0.1:PORT`), for more routes.
    pub nats_url: String,
    _registrar: AbortOnDrop,
    _gorouter: ChildGuard,
    _nats: ChildGuard,
    _dir: TempDir,
}

/// `target/release/gorouter` when loadgen runs from `target/release`: the `gorouter` binary
/// next to this one.
pub fn default_gorouter_path() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the loadgen binary")?;
    Ok(exe.with_file_name("gorouter"))
}

/// Fails with a message naming `what` and how to fix it if `path` is not a file.
pub fn check_binary(path: &Path, what: &str, hint: &str) -> Result<()> {
    if path.is_file() {
        Ok(())
    } else {
        bail!("{what} not found at {}: {hint}", path.display())
    }
}

/// Starts nats-server and gorouter, registers `backend` under [`ROUTE_HOST`] and returns
/// once a request through gorouter gets a 200.
pub async fn start(gorouter: &Path, nats_server: &Path, backend: SocketAddr) -> Result<Stack> {
    let dir = TempDir::new()?;

    let [nats_port, proxy_port, status_port, routes_port] = free_ports()?;
    let nats_addr = SocketAddr::from(([127, 0, 0, 1], nats_port));
    let mut nats = ChildGuard::spawn(
        "nats-server",
        Command::new(nats_server).args(["-a", "127.0.0.1", "-p", &nats_port.to_string()]),
        &dir.path.join("nats-server.log"),
    )?;
    wait_for_tcp(nats_addr, &mut nats).await?;

    let config = dir.path.join("gorouter.yml");
    std::fs::write(
        &config,
        gorouter_config(proxy_port, status_port, routes_port, nats_port),
    )
    .with_context(|| format!("writing {}", config.display()))?;
    let mut gorouter = ChildGuard::spawn(
        "gorouter",
        Command::new(gorouter).arg("-c").arg(&config),
        &dir.path.join("gorouter.log"),
    )?;
    wait_for_health(
        SocketAddr::from(([127, 0, 0, 1], status_port)),
        &mut gorouter,
    )
    .await?;

    let client = tokio::time::timeout(
        NATS_READY_TIMEOUT,
        async_nats::connect(nats_addr.to_string()),
    )
    .await
    .with_context(|| format!("connecting to our nats-server at {nats_addr}: timed out"))?
    .with_context(|| format!("connecting to our nats-server at {nats_addr}"))?;
    let payload = registration(backend).to_string();
    publish_registration(&client, &payload).await?;
    let registrar = tokio::spawn(async move {
        loop {
            sleep(REGISTER_INTERVAL).await;
            if let Err(e) = publish_registration(&client, &payload).await {
                eprintln!("warning: re-publishing router.register failed: {e:#}");
            }
        }
    });
    let registrar = AbortOnDrop(registrar);

    let proxy_addr = SocketAddr::from(([127, 0, 0, 1], proxy_port));
    wait_for_route(proxy_addr, &mut gorouter).await?;
    Ok(Stack {
        proxy_addr,
        nats_url: format!("nats://{nats_addr}"),
        _registrar: registrar,
        _gorouter: gorouter,
        _nats: nats,
        _dir: dir,
    })
}

fn gorouter_config(proxy: u16, status: u16, routes: u16, nats: u16) -> String {
    format!(
        "\
port: {proxy}
bind_address: 127.0.0.1
ip: 127.0.0.1
status:
  host: 127.0.0.1
  port: {status}
  user: u
  pass: p
  routes:
    port: {routes}
nats:
  hosts:
    - hostname: 127.0.0.1
      port: {nats}
start_response_delay_interval: 0s
logging:
  level: info
# BOSH's values (an absent key is upstream's code default: no keep-alive to backends).
endpoint_timeout: 900s
backends:
  max_attempts: 3
  max_conns: 500
disable_keep_alives: false
max_idle_conns: 100
max_idle_conns_per_host: 100
"
    )
}

/// A `router.register` payload like route-emitter's for the backend.
fn registration(backend: SocketAddr) -> serde_json::Value {
    serde_json::json!({
        "host": backend.ip().to_string(),
        "port": backend.port(),
        "uris": [ROUTE_HOST],
        "app": "10adf3b5-0000-4000-8000-000000000001",
        "private_instance_id": "10adf3b5-0000-4000-8000-000000000002",
        "private_instance_index": "0",
        "tags": {"component": "loadgen"},
    })
}

async fn publish_registration(client: &async_nats::Client, payload: &str) -> Result<()> {
    let publish = async {
        client
            .publish("router.register", payload.to_owned().into())
            .await
            .context("publishing router.register")?;
        client.flush().await.context("flushing router.register")
    };
    tokio::time::timeout(NATS_READY_TIMEOUT, publish)
        .await
        .context("publishing router.register: timed out")?
}

/// Four distinct free ports on 127.0.0.1 (the listeners are held until all four are taken).
fn free_ports() -> Result<[u16; 4]> {
    let listeners = (0..4)
        .map(|_| TcpListener::bind("127.0.0.1:0").context("finding a free port on 127.0.0.1"))
        .collect::<Result<Vec<_>>>()?;
    let mut ports = [0; 4];
    for (port, l) in ports.iter_mut().zip(&listeners) {
        *port = l.local_addr().context("reading a free port")?.port();
    }
    Ok(ports)
}

async fn wait_for_tcp(addr: SocketAddr, child: &mut ChildGuard) -> Result<()> {
    let deadline = Instant::now() + NATS_READY_TIMEOUT;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        child.check_running()?;
        if Instant::now() > deadline {
            bail!(
                "{} did not listen on {addr} within {NATS_READY_TIMEOUT:?}{}",
                child.name,
                child.log_tail()
            );
        }
        sleep(POLL).await;
    }
}

async fn wait_for_health(status: SocketAddr, child: &mut ChildGuard) -> Result<()> {
    let target = Target::plain("health", status, &status.to_string(), "/health");
    let deadline = Instant::now() + HEALTH_TIMEOUT;
    loop {
        let last = get(&target).await;
        if matches!(last, Ok(StatusCode::OK)) {
            return Ok(());
        }
        child.check_running()?;
        if Instant::now() > deadline {
            bail!(
                "gorouter never became healthy: GET http://{status}/health did not return 200 \
                 within {HEALTH_TIMEOUT:?} (last: {}){}",
                describe(&last),
                child.log_tail()
            );
        }
        sleep(POLL).await;
    }
}

async fn wait_for_route(proxy: SocketAddr, child: &mut ChildGuard) -> Result<()> {
    let target = Target::plain("gorouter", proxy, ROUTE_HOST, "/");
    let deadline = Instant::now() + ROUTE_TIMEOUT;
    loop {
        let last = get(&target).await;
        if matches!(last, Ok(StatusCode::OK)) {
            return Ok(());
        }
        child.check_running()?;
        if Instant::now() > deadline {
            bail!(
                "gorouter is healthy but GET http://{proxy}/ with Host: {ROUTE_HOST} did not \
                 return 200 within {ROUTE_TIMEOUT:?} of registering the route over NATS \
                 (last: {}){}",
                describe(&last),
                child.log_tail()
            );
        }
        sleep(POLL).await;
    }
}

/// One GET on a fresh connection.
async fn get(target: &Target) -> Result<StatusCode> {
    client::get_once(target, &target.host, Duration::from_secs(5)).await
}

fn describe(r: &Result<StatusCode>) -> String {
    match r {
        Ok(status) => format!("HTTP {status}"),
        Err(e) => format!("{e:#}"),
    }
}

/// A child process killed (and reaped) on drop, with its output going to a log file.
struct ChildGuard {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Result<Self> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("duplicating the log file handle")?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        Ok(Self {
            name,
            child,
            log: log.to_owned(),
        })
    }

    /// Fails if the process has exited, with its status and the end of its log.
    fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!("{} exited early ({status}){}", self.name, self.log_tail()),
            Err(e) => bail!("checking on {}: {e}", self.name),
        }
    }

    /// The last lines of the process's log, formatted to follow an error message.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(15)..];
        if tail.is_empty() {
            format!("; {} wrote no output", self.name)
        } else {
            format!(
                "; last lines of the {} log:\n  {}",
                self.name,
                tail.join("\n  ")
            )
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Aborts a task on drop.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A directory under the system temp dir, removed on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new() -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!("loadgen-{}-{nanos:x}", std::process::id()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("creating temp dir {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
