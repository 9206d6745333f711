//! Upstream's deprecated VCAP component registration over NATS (A.1), on only with
//! `status.enable_deprecated_varz_healthz_endpoints`: the router subscribes to
//! `vcap.component.discover` and answers each request on its reply subject with the `/varz`
//! document, and announces itself once on `vcap.component.announce` with the same document
//! (subscribing first, as upstream does, so a discover sent in answer to the announcement is
//! heard).

use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, Subscriber};
use futures::StreamExt;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::varz::Varz;

pub const SUBJECT_DISCOVER: &str = "vcap.component.discover";
pub const SUBJECT_ANNOUNCE: &str = "vcap.component.announce";
/// Bound of each publish: the client's outgoing queue may be full while NATS is down.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Subscribes to `vcap.component.discover`, announces the router and answers discovers until
/// `shutdown` turns true. Failures are logged: the router routes without them.
pub async fn register(client: Client, varz: Arc<Varz>, shutdown: watch::Receiver<bool>) {
    let discovers = match client.subscribe(SUBJECT_DISCOVER).await {
        Ok(subscriber) => subscriber,
        Err(err) => {
            warn!(subject = SUBJECT_DISCOVER, error = %err, "component-subscribe-failed");
            return;
        }
    };
    publish(&client, SUBJECT_ANNOUNCE.to_string(), &varz).await;
    info!("Component Router registered successfully");
    tokio::spawn(answer_discovers(client, discovers, varz, shutdown));
}

async fn answer_discovers(
    client: Client,
    mut discovers: Subscriber,
    varz: Arc<Varz>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let message = tokio::select! {
            _ = shutdown.wait_for(|stopped| *stopped) => break,
            message = discovers.next() => match message {
                Some(message) => message,
                None => break,
            },
        };
        match message.reply {
            Some(reply) => publish(&client, reply.to_string(), &varz).await,
            None => {
                info!(
                    nats_msg_subject = SUBJECT_DISCOVER,
                    "Received message with empty reply"
                )
            }
        }
    }
    let _ = discovers.unsubscribe().await;
}

/// Publishes the `/varz` document (upstream marshals it without a trailing newline).
async fn publish(client: &Client, subject: String, varz: &Varz) {
    let body = serde_json::to_vec(&varz.document()).unwrap_or_else(|_| b"{}".to_vec());
    match tokio::time::timeout(
        PUBLISH_TIMEOUT,
        client.publish(subject.clone(), body.into()),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(err)) => warn!(subject = %subject, error = %err, "component-publish-failed"),
        Err(_) => warn!(subject = %subject, "component-publish-timed-out"),
    }
}
