//! The Routing API (../shared/spec/routing-api.md): router groups, TCP routes and HTTP routes
//! over REST with UAA tokens, server-sent event streams, TTL expiry, state in MySQL or SQLite,
//! served only while holding a Locket-style lock.
//!
//! Dependencies point one way, from the process down to the leaves: [`run`] (the lifecycle)
//! uses [`lock`], [`seeds`], [`server`], [`tls`], [`admin`] and [`background`]; those use
//! [`api`], which uses [`events`], [`auth`], [`validation`] and [`store`]; at the bottom are
//! [`config`], [`database`], [`json`], [`secret`], [`metrics`] and [`prometheus`].
//!
//! - [`config`]: upstream's YAML keys (and ours), parsed and checked; [`secret`]: redacted
//!   secrets.
//! - [`seeds`]: the configured router groups, checked at load and written at start.
//! - [`database`]: the store's connection settings from `sqldb.*`.
//! - [`store`]: SQL storage (MySQL/MariaDB and SQLite), migrations, expiry.
//! - [`lock`]: the active/standby lock and when it counts as lost.
//! - [`server`]: the API's accept loops and connections; [`tls`]: the mutual TLS acceptor;
//!   [`admin`]: the localhost backup/restore port.
//! - [`api`]: the REST handlers; [`json`]: Go-compatible JSON; [`events`]: the SSE streams.
//! - [`auth`]: UAA JWT validation and scopes.
//! - [`validation`]: router group, route and TCP mapping rules with upstream's messages.
//! - [`background`]: the own route's registration and the expiry pruner.
//! - [`metrics`]: upstream's statsd gauges (`routing_api.*`), buffered over UDP.
//! - [`prometheus`]: the same counts, open streams and request latency by endpoint, served at
//!   `/metrics` on the `prometheus` port.

pub mod admin;
pub mod api;
pub mod auth;
pub mod background;
pub mod config;
pub mod database;
pub mod events;
pub mod json;
pub mod lock;
pub mod metrics;
pub mod prometheus;
pub mod run;
pub mod secret;
pub mod seeds;
pub mod server;
pub mod store;
pub mod tls;
pub mod validation;
