//! Locket: Cloud Foundry's distributed lock and presence service, compatible on the wire with
//! `code.cloudfoundry.org/locket` (gRPC service `models.Locket` over mutual TLS).
//!
//! The crate owns:
//! - [`proto`]: the generated protobuf messages, client and server stubs of `models.Locket`;
//! - [`sql`]: [`sql::LockTable`], the `locks` table on MySQL/MariaDB, PostgreSQL or SQLite with
//!   Locket's lock/refresh/release/expire semantics (also usable directly as an embedded lock
//!   backend);
//! - [`expiry`]: TTL timers and the periodic "burglar" that expire unrefreshed locks;
//! - [`server`]: the gRPC server (mTLS) over a lock table, with expiry;
//! - [`client`]: [`client::LocketClient`], a gRPC client with per-call timeouts;
//! - [`runner`]: the [`runner::LockBackend`] trait (implemented by both the client and the
//!   table) and the lock runner that acquires, refreshes and releases a lock;
//! - [`config`]: the `locket` binary's JSON config;
//! - [`metrics`]: [`metrics::LocketMetrics`], the Prometheus metrics the binary serves;
//! - [`tls`]: PEM file loading shared by the server and the client.

pub mod client;
pub mod config;
pub mod error;
pub mod expiry;
pub mod metrics;
pub mod runner;
pub mod server;
pub mod sql;
pub mod tls;

mod types;

pub use error::LockError;
pub use types::{LockRecord, LockType, Resource};

/// Generated code for protobuf package `models` (messages, `locket_client`, `locket_server`).
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("models");
}

/// Lock key used by the routing API (`lock_resource_key` default).
pub const ROUTING_API_LOCK_KEY: &str = "routing_api_lock";
