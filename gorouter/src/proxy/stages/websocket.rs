//! Websocket upgrades (A.11): after the backend answers 101, the client and backend
//! connections are spliced and bytes copied both ways until either side closes. No endpoint
//! timeout applies.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// Splices the two upgraded connections in a background task.
pub fn splice(client: OnUpgrade, backend: OnUpgrade) {
    tokio::spawn(async move {
        let (client, backend) = match tokio::try_join!(client, backend) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "websocket-upgrade-failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut backend = TokioIo::new(backend);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
            tracing::debug!(error = %e, "websocket-closed");
        }
    });
}
