//! Learning routes over NATS (A.1, A.2): `router.register` / `router.unregister`, answering
//! `router.greet`, announcing `router.start`, and the TTL prune loop (which must know whether
//! NATS is connected).

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Config;
use crate::registry::{EndpointSpec, RouteTable};

/// A parsed `router.register` / `router.unregister` payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub uris: Vec<String>,
    pub spec: EndpointSpec,
}

/// Why a payload was dropped.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("invalid registry message JSON: {0}")]
    Json(String),
    #[error("route_service_url must be https")]
    RouteServiceUrlNotHttps,
}

/// Parses a registry message (A.2).
pub fn parse_registration(_payload: &[u8]) -> Result<Registration, RegistrationError> {
    Err(RegistrationError::Json("not implemented yet".into()))
}

/// Connects to NATS (3 tries, 100 ms apart), publishes `router.start`, subscribes `router.*`
/// and starts the message and prune loops. The returned task ends with an error if the
/// connection is closed for good (the router then exits), and with Ok on shutdown.
pub async fn start(
    _config: Arc<Config>,
    _table: Arc<RouteTable>,
    _router_id: String,
    _shutdown: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    anyhow::bail!("not implemented yet")
}
