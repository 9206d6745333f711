//! Gorouter: the HTTP router of the routing tier, compatible on the wire with Cloud Foundry's
//! Gorouter (../shared/spec/gorouter.md).
//!
//! Where things live:
//! - [`config`]: upstream's YAML keys -> typed config (BOSH defaults).
//! - [`registry`]: the route table (route keys, pools, endpoints, pruning).
//! - [`nats`]: `router.*` subjects: registrations, greet, `router.start`, the prune loop.
//! - [`routing_api`]: routes from the Routing API (list + event stream), the second route source.
//! - [`balancer`]: picking an endpoint (round-robin, least-connection, sticky sessions).
//! - [`proxy`]: listener, request pipeline, headers, router errors, backend connections.
//! - [`route_service`]: route services' signatures, keys and hairpinning (A.10).
//! - [`status`]: health state, `/health` and `/routes`; upstream's deprecated status server.
//! - [`varz`]: upstream's deprecated `/varz` document (rates, process figures).
//! - [`top_apps`]: requests by app over the last minute, for `/varz`'s `top10_app_requests`.
//! - [`component`]: upstream's deprecated VCAP component announce/discover over NATS.
//! - [`tls`]: certificates, the HTTPS listener's and backends' rustls configs, TLS failures.
//! - [`access_log`]: the access log line format and its off-path writer.
//! - [`go_quote`]: Go's `strconv.Quote` for the access log's values.
//! - [`router`]: wiring everything together, signals and drain.
//! - [`task`]: background tasks tied to their owner ([`task::AbortOnDrop`]).

pub mod access_log;
pub mod allocator;
pub mod balancer;
pub mod component;
pub mod config;
pub mod go_quote;
pub mod metrics;
pub mod nats;
pub mod proxy;
pub mod registry;
pub mod route_service;
pub mod router;
pub mod routing_api;
pub mod status;
pub mod task;
pub mod tls;
pub mod top_apps;
pub mod varz;

/// The lock-free maps a request reads (hosts, backend pools, metric series): papaya with
/// foldhash, seeded at random per map. With the standard library's SipHash, hashing a host or
/// a backend address was 200-240 instructions per lookup, two lookups per request.
pub type LockFreeMap<K, V> = papaya::HashMap<K, V, foldhash::fast::RandomState>;
