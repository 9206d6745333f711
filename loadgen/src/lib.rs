//! loadgen as a library: everything the `loadgen` command does, in one module per concern,
//! so that its behaviour can be tested against in-process backends.
//!
//! - [`targets`]: what is loaded (URL, Host, TLS, HTTP version, many routes) and [`zipf`]
//!   sampling of routes;
//! - [`client`]: connecting and sending one request (HTTP/1.1 or HTTP/2);
//! - [`schedule`]: the open loop's fixed timeline; [`load`]: closed and open loops over N
//!   connections; [`ramp`]: steps of load until a bound is crossed, and the knee;
//! - [`runner`]: several targets in rotated rounds, and the [`runner::RunResult`];
//! - [`stats`]: histograms, counts and the bounded per-second timeline; [`progress`]: the
//!   live line on stderr;
//! - [`report`]: the text table; [`json`]: the JSON document; [`html`] with [`svg`]: the
//!   HTML report with its plots;
//! - [`routes`]: registering many routes through NATS or the Routing API;
//! - [`setup`]: the nats-server and gorouter a default run starts; [`backend`]: the
//!   in-process test backend.

pub mod backend;
pub mod client;
pub mod html;
pub mod json;
pub mod load;
pub mod progress;
pub mod ramp;
pub mod report;
pub mod routes;
pub mod runner;
pub mod schedule;
pub mod setup;
pub mod stats;
pub mod svg;
pub mod targets;
pub mod zipf;
