//! The stages of the request path, in the order [`Proxy::handle`](super::Proxy::handle) runs
//! them; each file owns one concern.

pub mod access_log;
pub mod app_instance;
pub mod client_cert;
pub mod forwarded;
pub mod health_check;
pub mod host;
pub mod lookup;
pub mod max_request_size;
pub mod response;
pub mod response_rewrite;
pub mod round_trip;
pub mod route_service;
pub mod sticky;
pub mod trace;
pub mod websocket;
