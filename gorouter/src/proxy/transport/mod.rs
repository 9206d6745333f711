//! The backend transport: connections from the router to app instances. It dials
//! ([`dial`]), performs the TLS handshake for endpoints registered with a `tls_port` (A.11:
//! server name = `server_cert_domain_san`, trust = system roots + `ca_certs`, client
//! certificate `backends.*`), the HTTP handshake (HTTP/2 when a `protocol: http2` TLS endpoint
//! agrees to `h2`, else HTTP/1.1), and keeps reusable connections per backend ([`pool`]) so
//! the route table holds routes and nothing of the transport.
//!
//! Pools are keyed by the endpoint's address, one map per backend protocol. A pool also
//! records the TLS identity (`server_cert_domain_san`) its connections were made for: a
//! re-registration with another identity starts a new pool, one with the same identity keeps
//! the warm connections (A.3).

pub mod dial;
pub mod pool;
pub mod sender;

use std::sync::Arc;
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use hyper::rt::{Read, Write};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::registry::{Endpoint, Protocol};
use crate::tls::backend::{self as backend_tls, BackendTlsConfigs, BackendTlsError};

pub use dial::DialError;
pub use pool::{IdleBudget, IdleConnections};
pub use sender::Sender;

/// Why no connection to a backend could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Dial(#[from] DialError),
    /// The TLS handshake failed; its class decides the response (A.5) and the endpoint's
    /// fate (A.6).
    #[error("{}", .0.message())]
    Tls(BackendTlsError),
    /// The HTTP handshake on an established connection failed.
    #[error("{0}")]
    Http(String),
}

/// How TLS endpoints are dialled.
pub struct BackendTls {
    pub configs: BackendTlsConfigs,
    pub handshake_timeout: Duration,
}

/// One backend's pool and the TLS identity its connections were made for.
struct BackendPool {
    server_cert_domain_san: Box<str>,
    idle: Arc<IdleConnections>,
}

/// How many idle keep-alive connections a [`Transport`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleLimits {
    /// Per backend address (`max_idle_conns_per_host`); 0 turns keep-alive off.
    pub per_backend: usize,
    /// Across all backends (`max_idle_conns`); 0 is no limit.
    pub total: usize,
}

/// Connections to every backend.
pub struct Transport {
    /// Idle connections each backend may keep; 0 turns keep-alive off.
    idle_capacity: usize,
    /// Idle connections all backends may keep together (`max_idle_conns`).
    idle_budget: Arc<IdleBudget>,
    pools: papaya::HashMap<Box<str>, Arc<BackendPool>>,
    /// Pools of `protocol: http2` endpoints: the same address may also be registered as
    /// HTTP/1.1, whose connections must not be mixed with these.
    http2_pools: papaya::HashMap<Box<str>, Arc<BackendPool>>,
    tls: BackendTls,
}

impl Transport {
    /// `idle.per_backend` is `max_idle_conns_per_host` (0 with `disable_keep_alives`),
    /// `idle.total` is `max_idle_conns` (0: no limit).
    pub fn new(idle: IdleLimits, tls: BackendTls) -> Self {
        Self {
            idle_capacity: idle.per_backend,
            idle_budget: IdleBudget::new(idle.total),
            pools: papaya::HashMap::new(),
            http2_pools: papaya::HashMap::new(),
            tls,
        }
    }

    /// The idle pool for `endpoint`'s address and TLS identity, created on first use.
    pub fn pool(&self, endpoint: &Endpoint) -> Arc<IdleConnections> {
        let pools = match endpoint.protocol {
            Protocol::Http1 => self.pools.pin(),
            Protocol::Http2 => self.http2_pools.pin(),
        };
        if let Some(p) = pools.get(&*endpoint.addr) {
            if p.server_cert_domain_san == endpoint.server_cert_domain_san {
                return p.idle.clone();
            }
        }
        let fresh = Arc::new(BackendPool {
            server_cert_domain_san: endpoint.server_cert_domain_san.clone(),
            idle: Arc::new(IdleConnections::new(
                self.idle_capacity,
                self.idle_budget.clone(),
            )),
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

    /// Opens a new connection to `endpoint`: TCP, TLS for a TLS endpoint, then the HTTP
    /// handshake. With `upgrades`, an HTTP/1.1 connection can be taken over after a 101
    /// (websockets). A new HTTP/2 connection is shared through `idle` when given.
    pub async fn connect(
        &self,
        endpoint: &Endpoint,
        timeout: Duration,
        upgrades: bool,
        idle: Option<&IdleConnections>,
    ) -> Result<Sender, ConnectError> {
        let stream = dial::tcp(endpoint, timeout).await?;
        if !endpoint.tls {
            return http1_handshake(TokioIo::new(stream), endpoint, upgrades).await;
        }
        let wants_h2 = endpoint.protocol == Protocol::Http2 && !upgrades;
        let name = backend_tls::server_name(&endpoint.server_cert_domain_san, &endpoint.host)
            .map_err(ConnectError::Tls)?;
        let stream = backend_tls::handshake(
            self.tls.configs.for_protocol(wants_h2),
            name,
            stream,
            self.tls.handshake_timeout,
        )
        .await
        .map_err(ConnectError::Tls)?;
        if backend_tls::negotiated_h2(&stream) {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(hyper_util::rt::TokioTimer::new())
                .handshake(TokioIo::new(stream))
                .await
                .map_err(|e| ConnectError::Http(format!("http2: {e}")))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            if let Some(idle) = idle {
                idle.share_http2(&sender);
            }
            return Ok(Sender::Http2(sender));
        }
        http1_handshake(TokioIo::new(stream), endpoint, upgrades).await
    }

    /// Drops the pools nothing used for the idle timeout, closing their connections, so
    /// backends that went away leave nothing behind.
    pub fn sweep(&self) {
        for pools in [&self.pools, &self.http2_pools] {
            pools.pin().retain(|_, p| !p.idle.unused_since_last_sweep());
        }
    }

    /// Backends with a pool.
    pub fn pools(&self) -> usize {
        self.pools.len() + self.http2_pools.len()
    }
}

/// The HTTP/1.1 handshake on an established (plain or TLS) connection.
async fn http1_handshake<T>(
    io: T,
    endpoint: &Endpoint,
    upgrades: bool,
) -> Result<Sender, ConnectError>
where
    T: Read + Write + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder.title_case_headers(true);
    let (sender, conn) = builder
        .handshake(io)
        .await
        .map_err(|e| ConnectError::Http(format!("dial tcp {}: {e}", endpoint.addr)))?;
    if upgrades {
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
    } else {
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    Ok(Sender::Http1(sender))
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

    fn transport() -> Transport {
        let tls = BackendTls {
            configs: BackendTlsConfigs::from_settings(&Default::default()).unwrap(),
            handshake_timeout: Duration::from_secs(1),
        };
        Transport::new(
            IdleLimits {
                per_backend: 4,
                total: 0,
            },
            tls,
        )
    }

    #[test]
    fn same_identity_shares_a_pool_and_a_new_one_replaces_it() {
        let t = transport();
        let a = t.pool(&endpoint("inst-1"));
        assert!(Arc::ptr_eq(&a, &t.pool(&endpoint("inst-1"))));
        let b = t.pool(&endpoint("inst-2"));
        assert!(!Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(&b, &t.pool(&endpoint("inst-2"))));
        assert_eq!(t.pools(), 1);
    }

    #[test]
    fn sweeping_keeps_pools_in_use() {
        let t = transport();
        t.pool(&endpoint(""));
        t.sweep();
        assert_eq!(t.pools(), 1);
    }
}
