//! tcp-router: the TCP routing tier, compatible with Cloud Foundry's cf-tcp-router
//! (../shared/spec/tcp-router.md, D). Upstream turns the Routing API's TCP routes into an HAProxy
//! config; this router forwards in-process, keeping upstream's observable behaviour: the same
//! config keys and flags, round-robin per (port, SNI hostname), SNI routing, TLS to backends
//! verified against the instance id, `/health` with drain.
//!
//! Where things live:
//! - [`config`]: upstream's YAML keys and flags, our own keys for HAProxy's base config.
//! - [`routes`]: the routing table and its per-port snapshots; [`routes::source`] keeps it in step
//!   with the Routing API (full lists, the event stream, local expiry).
//! - [`listeners`]: one listener per external port with routes.
//! - [`forward`]: one client connection: pick, connect (with retries), copy both ways.
//! - [`sni`]: the SNI hostname of a ClientHello, peeked without consuming it.
//! - [`splice`]: zero-copy forwarding of bulk transfers between plain TCP sockets (Linux).
//! - [`backend_tls`]: TLS to backends.
//! - [`health`]: `/health`, `/metrics`, the drain state; [`metrics`]: the counters.
//! - [`router`]: wiring, signals and drain; [`supervise`]: a background task that dies stops
//!   the process.

pub mod backend_tls;
pub mod config;
pub mod forward;
pub mod health;
pub mod listeners;
pub mod metrics;
pub mod router;
pub mod routes;
pub mod sni;
pub mod splice;
pub mod supervise;
