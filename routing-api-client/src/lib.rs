//! The Routing API as its clients and the server see it on the wire
//! (../shared/spec/routing-api.md B.1-B.7): models with upstream's JSON field names and order,
//! the error body and event names ([`models`]), and the client side used by `rtr`, tcp-router,
//! route-emitter and gorouter:
//!
//! - [`uaa::TokenFetcher`]: OAuth2 client-credentials tokens from UAA, cached until shortly
//!   before expiry;
//! - [`client::RoutingApiClient`]: the REST endpoints, with the bearer token, one retry with a
//!   fresh token after a 401, and deadlines on every call;
//! - [`events::EventStream`]: the typed SSE event streams, parsed by [`sse::SseParser`];
//! - [`tls::TlsOptions`]: CA file, mutual TLS, or no verification, on rustls with *ring*.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use routing_api_client::{ClientConfig, RoutingApiClient, TokenFetcher, UaaConfig};
//!
//! let tokens = TokenFetcher::new(UaaConfig::new("https://uaa.example.com:8443", "id", "secret"))?;
//! let client = RoutingApiClient::new(ClientConfig::new("http://127.0.0.1:3000"), Some(Arc::new(tokens)))?;
//! for route in client.tcp_routes().await? {
//!     println!("{}:{}", route.backend_ip, route.backend_port);
//! }
//! let mut events = client.subscribe_tcp_events().await?;
//! while let Some(event) = events.next().await {
//!     match event {
//!         Ok(e) => println!("{} {:?}", e.action.as_str(), e.route),
//!         Err(e) if e.is_fatal() => break,
//!         Err(e) => eprintln!("skipped: {e}"),
//!     }
//! }
//! # Ok(()) }
//! ```

pub mod client;
pub mod events;
pub mod models;
pub mod ports;
pub mod sse;
pub mod tls;
mod transport;
pub mod uaa;

pub use client::{ClientConfig, ClientError, RoutingApiClient};
pub use events::{Event, EventError, EventStream};
pub use models::{
    ErrorBody, EventAction, HttpRoute, ModificationTag, RouterGroup, RouterGroupType,
    TcpRouteMapping,
};
pub use tls::{TlsError, TlsOptions};
pub use transport::{TraceFn, TransportError, HIDDEN};
pub use uaa::{Token, TokenFetcher, UaaConfig, UaaError};
