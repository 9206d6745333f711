//! `routing-tier up`: the whole routing tier (routing-api, gorouter, tcp-router and
//! route-emitter) on one machine with one command and embedded defaults, plus a built-in demo
//! app routed at `demo.localhost`. `routing-tier certs --out DIR [--san NAME]... [--force]`
//! writes the PKI a docker-compose stack of the tier needs ([`pki`]).
//!
//! `routing-tier up [--data-dir DIR] [--nats URL | --no-nats] [--port-base N]`:
//!
//! - finds the four binaries next to its own executable (or at `$GOROUTER_BIN`,
//!   `$ROUTING_API_BIN`, `$TCP_ROUTER_BIN`, `$ROUTE_EMITTER_BIN`), see [`binaries`];
//! - writes each component's YAML config into the data dir (default `.routing-tier`), generated
//!   from the values of the repository's `config/*.yml` with paths into the data dir, see
//!   [`configs`]; the [`pki`] set is generated once into `<data dir>/tls/` and reused
//!   ([`tls`]): gorouter's HTTPS listener presents `gorouter.pem`, routing-api's mutual-TLS
//!   port `routing-api-server.pem`, accepting client certificates signed by `ca.pem`
//!   (`routing-api-client.pem`);
//! - routes HTTP routes over NATS when `--nats URL` is given or a NATS server answers on
//!   127.0.0.1:4222, otherwise through the Routing API alone ([`bus`]); `--no-nats` forces the
//!   Routing API mode;
//! - serves the demo app ([`demo`]) and registers it through `<data dir>/routes.d/demo.yml`;
//! - starts and supervises the children, logs in `<data dir>/logs/<name>.log`
//!   ([`supervisor`]), waits until the demo app answers through gorouter ([`probe`]) and runs
//!   until SIGINT/SIGTERM or until a child exits ([`up`]).
//!
//! Ports: by default the tier listens where `scripts/run-tier` does (gorouter 8081, HTTPS 8443,
//! `/health` 8080, `/routes` 8082, route services 7070; routing-api 3000, mutual TLS 3001,
//! admin 15897; tcp-router health 8090, TCP routes 1024-1033). `--port-base N` (for tests;
//! not in the usage text) moves every one of them to `N + offset`, see
//! [`ports::Ports::from_base`].

pub mod args;
pub mod binaries;
pub mod bus;
pub mod configs;
pub mod demo;
pub mod pki;
pub mod ports;
pub mod probe;
pub mod supervisor;
pub mod tls;
pub mod up;

/// Everything `routing-tier up` and `routing-tier certs` can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{name} not found next to routing-tier ({dir}); build the tier with `cargo build --release -p routing-tier -p routing-api -p gorouter -p tcp-router -p route-emitter`")]
    BinaryNotFound { name: String, dir: String },
    #[error("cannot find routing-tier's own executable: {0}")]
    CurrentExe(std::io::Error),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("cannot generate a TLS certificate or key: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("cannot generate the UAA token signing key (RSA 2048): {0}")]
    RsaKey(String),
    #[error("{0}")]
    San(String),
    #[error("{dir} holds only part of the certificate set (has {present}; lacks {missing}); pass --force to replace every file with a new set (a new CA too), or give --out an empty or new directory")]
    PkiPartial {
        dir: String,
        present: String,
        missing: String,
    },
    #[error("internal error: {0}")]
    Internal(String),
    #[error("cannot write a config as YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("the demo app cannot start (is its port in use?): {0}")]
    DemoApp(std::io::Error),
    #[error("cannot start {name} ({path}): {source}")]
    Spawn {
        name: String,
        path: String,
        source: std::io::Error,
    },
    #[error("{name} did not listen on 127.0.0.1:{port} within {secs} s; see {log}")]
    PortTimeout {
        name: String,
        port: u16,
        secs: u64,
        log: String,
    },
    #[error("{0} exited")]
    ChildExited(String),
    #[error("the demo app did not answer 200 through gorouter within {0} s")]
    DemoTimeout(u64),
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("--nats {0:?} is not a NATS URL (nats://host:port)")]
    NatsUrl(String),
    #[error(
        "--port-base {0} leaves no room for the tier's ports (the highest is N+{1}, at most 65535)"
    )]
    PortBase(u32, u16),
}

impl Error {
    /// An I/O error about `path`.
    pub fn io(what: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.display().to_string(),
            source,
        }
    }
}
