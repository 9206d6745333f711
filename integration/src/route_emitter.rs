//! The `route-emitter` binary under test.
//!
//! [`RouteEmitterBuilder`] writes a route-registrar style config (JSON; `host: 127.0.0.1`, the
//! test's nats-server as the only `message_bus_servers` entry, plus whatever the test merges in)
//! and [`RouteEmitter`] runs `route-emitter -config <file>` as a [`ChildProcess`], its output
//! captured to a file. The config and output are printed when a test panics; the process is
//! killed on drop.
//! [`http_route`] and [`tcp_route`] build `routes[]` entries.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use serde_json::{json, Value};

use crate::nats::NatsServer;
use crate::process::{binary, ChildProcess};
use crate::util::TempDir;

/// Where the `route-emitter` binary is (`$ROUTE_EMITTER_BIN` overrides); see [`binary`].
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
    command_line: Option<Vec<String>>,
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
            command_line: None,
        }
    }

    /// Runs the binary with exactly `args` (an upstream job template's argument list) instead
    /// of the harness's own; `{config}` in an argument stands for the config file's path.
    pub fn command_line(mut self, args: &[&str]) -> Self {
        self.command_line = Some(crate::util::owned_args(args));
        self
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
        let mut cmd = Command::new(route_emitter_bin());
        if let Some(args) = &self.command_line {
            cmd.args(crate::util::command_line_args(args, &config_path));
        } else {
            cmd.arg("-config")
                .arg(&config_path)
                .args(["-logLevel", "debug"]);
        }
        cmd.env("RUST_BACKTRACE", "1");
        let log_path = self.dir.path().join("route_emitter.log");
        RouteEmitter {
            process: ChildProcess::spawn("route-emitter", cmd, log_path, text),
            _dir: self.dir,
        }
    }
}

/// A running `route-emitter` (killed on drop; its config and output printed if the test
/// fails).
pub struct RouteEmitter {
    /// Dropped first: the process is killed before its directory goes.
    process: ChildProcess,
    _dir: TempDir,
}

impl RouteEmitter {
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Everything the process wrote so far.
    pub fn output(&self) -> String {
        self.process.output()
    }

    /// The exit status, if it has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.process.try_exit()
    }

    /// Sends `signal` to the process (unless it has exited).
    pub fn signal(&self, signal: i32) {
        self.process.signal(signal);
    }

    /// Waits up to `timeout` for the process to exit; panics with its output otherwise.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.process.wait_exit(timeout).await
    }
}
