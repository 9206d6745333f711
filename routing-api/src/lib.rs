//! The Routing API (../shared/spec/routing-api.md): router groups, TCP routes and HTTP routes
//! over REST with UAA tokens, server-sent event streams, TTL expiry, state in MySQL or SQLite,
//! served only while holding a Locket-style lock.
//!
//! - [`config`]: upstream's YAML keys.
//! - [`store`]: SQL storage (MySQL/MariaDB and SQLite), migrations, expiry.
//! - [`auth`]: UAA JWT validation and scopes.
//! - [`validation`]: router group, route and TCP mapping rules with upstream's messages.
//! - [`metrics`]: upstream's statsd gauges (`routing_api.*`), buffered over UDP.

pub mod api;
pub mod auth;
pub mod config;
pub mod events;
pub mod lock;
pub mod metrics;
pub mod run;
pub mod server;
pub mod store;
pub mod validation;
