//! Prometheus metrics for every component of the tier, served the same way everywhere.
//!
//! Each component keeps its own metrics in a [`prometheus_client`] [`Registry`] and takes
//! upstream gorouter's `prometheus` config block ([`PrometheusConfig`]: `port`, `cert_path`,
//! `key_path`, `ca_path`). With the three files set, `/metrics` is served over mutual TLS on
//! 127.0.0.1 as upstream's metrics registry serves it; with none of them, over plain HTTP (our
//! extension, for a laptop or a compose network; `listen_address` opens either to others). Modules: [`config`] the block and its
//! validation, [`tls`] the mutual TLS acceptor, [`server`] the `/metrics` listener, [`mod@scrape`]
//! the plain-HTTP client that scrapes it (for tests and tools).

pub mod config;
pub mod metrics;
pub mod scrape;
pub mod server;
pub mod tls;

pub use config::{ConfigError, Endpoint, PrometheusConfig};
pub use metrics::{AtomicHistogram, ValueKind};
pub use prometheus_client;
pub use prometheus_client::registry::Registry;
pub use scrape::{request, sample, scrape, Scrape, ScrapeError};
pub use server::{encode, MetricsServer, ServeError, CONTENT_TYPE};
