//! Learning routes over NATS (A.1, A.2): `router.register` / `router.unregister`, answering
//! `router.greet`, announcing `router.start`, and the TTL prune loop (which must know whether
//! NATS is connected).

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Config;
use crate::registry::RouteTable;

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
