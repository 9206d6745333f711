//! The `route-emitter` binary under test.
//!
//! [`RouteEmitterBuilder`] writes a route-registrar style config (JSON; `host: 127.0.0.1`, the
//! test's nats-server as the only `message_bus_servers` entry, plus whatever the test merges in)
//! and [`RouteEmitter`] runs `route-emitter -config <file>` with its output captured to a file.
//! The output is printed when a test panics; the process is killed on drop.
//! [`http_route`] and [`tcp_route`] build `routes[]` entries.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::nats::NatsServer;
use crate::routing_api::binary;
use crate::util::TempDir;

/// Where the `route-emitter` binary is (`$ROUTE_EMITTER_BIN` overrides); see
/// [`crate::routing_api::binary`].
pub fn route_emitter_bin() -> PathBuf {
    binary("route-emitter")
}

/// A `routes[]` entry: HTTP route `uri` → 127.0.0.1:`port`, registered every second.
pub fn http_route(name: &str, uri: &str, port: u16) -> Value {
    json!({
        "name": name,
        "port": port,
        "uris": [uri],
        "registration_interval": "1s",
    })
}

/// A `routes[]` entry: TCP route on `router_group`'s `external_port` → 127.0.0.1:`port`.
pub fn tcp_route(name: &str, router_group: &str, external_port: u16, port: u16) -> Value {
    json!({
        "type": "tcp",
        "name": name,
        "port": port,
        "router_group": router_group,
        "external_port": external_port,
        "registration_interval": "1s",
    })
}

/// Builds a config and starts the binary.
pub struct RouteEmitterBuilder {
    dir: TempDir,
    config: Value,
}

impl RouteEmitterBuilder {
    /// `host: 127.0.0.1`, no routes, and `nats` (if given) as the message bus.
    pub fn new(nats: Option<&NatsServer>) -> Self {
        let mut config = json!({"host": "127.0.0.1", "routes": []});
        if let Some(n) = nats {
            config["message_bus_servers"] = json!([{"host": format!("127.0.0.1:{}", n.port())}]);
        }
        Self {
            dir: TempDir::new("it-route-emitter"),
            config,
        }
    }

    /// The temporary directory (for dynamic config files or scripts).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Appends a `routes[]` entry.
    pub fn route(mut self, route: Value) -> Self {
        self.config["routes"]
            .as_array_mut()
            .expect("routes is an array")
            .push(route);
        self
    }

    /// Sets a top-level key (e.g. `routing_api`, `dynamic_config_globs`).
    pub fn set(mut self, key: &str, value: Value) -> Self {
        self.config[key] = value;
        self
    }

    /// Writes the config and starts the process.
    pub fn start(self) -> RouteEmitter {
        let text = serde_json::to_string_pretty(&self.config).expect("config to JSON");
        let config_path = self.dir.path().join("route_emitter.json");
        std::fs::write(&config_path, &text).expect("write route-emitter config");
        let log_path = self.dir.path().join("route_emitter.log");
        let log = std::fs::File::create(&log_path).expect("create route-emitter log");
        let log2 = log.try_clone().expect("clone log handle");
        let bin = route_emitter_bin();
        let child = Command::new(&bin)
            .arg("-config")
            .arg(&config_path)
            .args(["-logLevel", "debug"])
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        RouteEmitter {
            pid: child.id(),
            child: Some(child),
            exit: None,
            config_text: text,
            log_path,
            _dir: self.dir,
        }
    }
}

/// A running `route-emitter`.
pub struct RouteEmitter {
    child: Option<Child>,
    pid: u32,
    exit: Option<ExitStatus>,
    config_text: String,
    log_path: PathBuf,
    _dir: TempDir,
}

impl RouteEmitter {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Everything the process wrote so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The exit status, if it has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(s)) = c.try_wait() {
                    self.exit = Some(s);
                }
            }
        }
        self.exit
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        if self.exit.is_none() {
            // SAFETY: signalling our own child process by pid.
            unsafe {
                libc::kill(self.pid as libc::pid_t, signal);
            }
        }
    }

    /// Waits up to `timeout` for the process to exit; panics with its output otherwise.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return s;
            }
            if Instant::now() >= deadline {
                panic!(
                    "route-emitter did not exit within {timeout:?}; output:\n{}",
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RouteEmitter {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.exit.is_none() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- route-emitter (pid {}) config ----\n{}\n---- route-emitter output ----\n{}\n---- end of route-emitter output ----",
                self.pid,
                self.config_text,
                self.output()
            );
        }
    }
}
