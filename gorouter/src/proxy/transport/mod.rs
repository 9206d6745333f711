//! The backend transport: connections from the router to app instances. It dials
//! ([`dial`]), performs the HTTP handshake, and keeps idle keep-alive connections per backend
//! ([`pool`]) so the route table holds routes and nothing of the transport.
//!
//! Pools are keyed by the endpoint's address. A pool also records the TLS identity
//! (`server_cert_domain_san`) its connections were made for: a re-registration with another
//! identity starts a new pool, one with the same identity keeps the warm connections (A.3).

pub mod dial;
pub mod pool;

use std::sync::Arc;
use std::time::Duration;

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use super::body::RequestBody;
use crate::registry::Endpoint;

pub use dial::DialError;
pub use pool::IdleConnections;

/// The sending half of an HTTP/1.1 connection to a backend.
pub type Sender = http1::SendRequest<RequestBody>;

/// One backend's pool and the TLS identity its connections were made for.
struct BackendPool {
    server_cert_domain_san: Box<str>,
    idle: Arc<IdleConnections>,
}

/// Connections to every backend.
pub struct Transport {
    /// Idle connections each backend may keep; 0 turns keep-alive off.
    idle_capacity: usize,
    pools: papaya::HashMap<Box<str>, Arc<BackendPool>>,
}

impl Transport {
    /// `idle_capacity` is `max_idle_conns_per_host` (0 with `disable_keep_alives`).
    pub fn new(idle_capacity: usize) -> Self {
        Self {
            idle_capacity,
            pools: papaya::HashMap::new(),
        }
    }

    /// The idle pool for `endpoint`'s address and TLS identity, created on first use.
    pub fn pool(&self, endpoint: &Endpoint) -> Arc<IdleConnections> {
        let pools = self.pools.pin();
        if let Some(p) = pools.get(&*endpoint.addr) {
            if p.server_cert_domain_san == endpoint.server_cert_domain_san {
                return p.idle.clone();
            }
        }
        let fresh = Arc::new(BackendPool {
            server_cert_domain_san: endpoint.server_cert_domain_san.clone(),
            idle: Arc::new(IdleConnections::new(self.idle_capacity)),
        });
        let stored = pools.update_or_insert(
            endpoint.addr.clone(),
            |current| {
                if current.server_cert_domain_san == endpoint.server_cert_domain_san {
                    current.clone()
                } else {
                    fresh.clone()
                }
            },
            fresh.clone(),
        );
        stored.idle.clone()
    }

    /// Opens a new connection to `endpoint` and performs the HTTP/1.1 handshake. With
    /// `upgrades`, the connection can be taken over after a 101 (websockets).
    pub async fn connect(
        &self,
        endpoint: &Endpoint,
        timeout: Duration,
        upgrades: bool,
    ) -> Result<Sender, DialError> {
        let stream = dial::tcp(endpoint, timeout).await?;
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

    /// Drops the pools nothing used for the idle timeout, closing their connections, so
    /// backends that went away leave nothing behind.
    pub fn sweep(&self) {
        self.pools
            .pin()
            .retain(|_, p| !p.idle.unused_for_idle_timeout());
    }

    /// Backends with a pool.
    pub fn pools(&self) -> usize {
        self.pools.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{EndpointSpec, TableSettings};

    fn endpoint(san: &str) -> Endpoint {
        Endpoint::from_spec(
            &EndpointSpec {
                host: "127.0.0.1".into(),
                port: 1,
                server_cert_domain_san: san.into(),
                ..Default::default()
            },
            TableSettings::default().droplet_stale_threshold,
            0,
        )
    }

    #[test]
    fn same_identity_shares_a_pool_and_a_new_one_replaces_it() {
        let t = Transport::new(4);
        let a = t.pool(&endpoint("inst-1"));
        assert!(Arc::ptr_eq(&a, &t.pool(&endpoint("inst-1"))));
        let b = t.pool(&endpoint("inst-2"));
        assert!(!Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(&b, &t.pool(&endpoint("inst-2"))));
        assert_eq!(t.pools(), 1);
    }

    #[test]
    fn sweeping_keeps_pools_in_use() {
        let t = Transport::new(4);
        t.pool(&endpoint(""));
        t.sweep();
        assert_eq!(t.pools(), 1);
    }
}
