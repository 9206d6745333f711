//! Connections to backends: dialing with a timeout, Go-style error texts, and the
//! per-endpoint keep-alive pool.
//!
//! Each endpoint owns its idle connections in a lock-free bounded queue, so checking one out
//! takes no lock and an endpoint's connections go away with it when it is unregistered.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::RequestBody;
use crate::registry::Endpoint;

/// The sending half of an HTTP/1.1 connection to a backend.
pub type Sender = http1::SendRequest<RequestBody>;

/// How long a connection may sit idle before it is closed instead of reused (Go's
/// `IdleConnTimeout`); backends often close earlier, which the retry of a request that never
/// reached them covers.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Idle keep-alive connections to one backend, with the time each was returned.
///
/// The queue is allocated when the first connection is returned: a slot is ~50 bytes, so
/// 100 slots for each of 100k endpoints that never see traffic would cost ~500 MiB.
pub struct IdleConnections {
    capacity: usize,
    queue: OnceLock<ArrayQueue<(Sender, Instant)>>,
}

impl IdleConnections {
    /// `capacity` 0 disables keep-alive to this backend.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            queue: OnceLock::new(),
        }
    }

    /// Returns a connection for reuse; dropped (closed) when the pool is full.
    pub fn put(&self, sender: Sender) {
        if self.capacity == 0 || sender.is_closed() {
            return;
        }
        let q = self.queue.get_or_init(|| ArrayQueue::new(self.capacity));
        let _ = q.push((sender, Instant::now()));
    }

    /// An idle connection that is still open and ready for a request, if any.
    pub async fn take(&self) -> Option<Sender> {
        let q = self.queue.get()?;
        while let Some((mut sender, since)) = q.pop() {
            if sender.is_closed() || since.elapsed() > IDLE_TIMEOUT {
                continue;
            }
            if sender.is_ready() {
                return Some(sender);
            }
            // Just returned: the connection task may not have re-armed yet.
            if let Ok(Ok(())) =
                tokio::time::timeout(Duration::from_millis(100), sender.ready()).await
            {
                return Some(sender);
            }
        }
        None
    }

    pub fn len(&self) -> usize {
        self.queue.get().map_or(0, |q| q.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A failed dial, worded the way Go's net package words it (it reaches clients in
/// `X-Cf-Routererror`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct DialError(pub String);

fn os_error_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    text.to_ascii_lowercase()
}

/// Opens a TCP connection to `endpoint` and performs the HTTP/1.1 handshake. With
/// `upgrades`, the connection can be taken over after a 101 (websockets).
pub async fn connect(
    endpoint: &Endpoint,
    timeout: Duration,
    upgrades: bool,
) -> Result<Sender, DialError> {
    let dial = async {
        match endpoint.socket_addr {
            Some(addr) => TcpStream::connect(addr).await,
            None => TcpStream::connect((&*endpoint.host, endpoint.port)).await,
        }
    };
    let stream = match tokio::time::timeout(timeout, dial).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(DialError(format!(
                "dial tcp {}: connect: {}",
                endpoint.addr,
                os_error_text(&e)
            )))
        }
        Err(_) => {
            return Err(DialError(format!(
                "dial tcp {}: i/o timeout",
                endpoint.addr
            )))
        }
    };
    let _ = stream.set_nodelay(true);
    let mut builder = http1::Builder::new();
    builder.title_case_headers(true);
    let (sender, conn) = builder
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| DialError(format!("dial tcp {}: {e}", endpoint.addr)))?;
    if upgrades {
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
    } else {
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{EndpointSpec, TableSettings};

    #[tokio::test]
    async fn refused_dial_reads_like_go() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let ep = Endpoint::from_spec(
            &EndpointSpec {
                host: "127.0.0.1".into(),
                port,
                ..Default::default()
            },
            TableSettings::default().droplet_stale_threshold,
            0,
            None,
            1,
        );
        let err = connect(&ep, Duration::from_secs(1), false)
            .await
            .unwrap_err();
        assert_eq!(
            err.0,
            format!("dial tcp 127.0.0.1:{port}: connect: connection refused")
        );
    }

    #[test]
    fn zero_capacity_pool_keeps_nothing() {
        let p = IdleConnections::new(0);
        assert!(p.is_empty());
    }
}
