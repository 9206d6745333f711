//! The Locket gRPC server: `models.Locket` over mutual TLS on top of a [`LockTable`].
//!
//! Owns the RPC handlers (validation order and gRPC codes/messages of locket.md) and their wiring
//! to TTL expiry: after each successful Lock the handler arms a timer ([`Expirer::register`]) and
//! the server runs the burglar ([`crate::expiry`]) at startup and every
//! [`crate::expiry::BURGLAR_INTERVAL`]. Every answered RPC is counted in [`LocketMetrics`]
//! ([`serve_with_metrics`]).

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server};
use tonic::{Request, Response, Status};

use crate::error::LockError;
use crate::expiry::{self, Expirer};
use crate::metrics::{LocketMetrics, Operation};
use crate::proto::locket_server::{Locket, LocketServer};
use crate::proto::{
    FetchAllRequest, FetchAllResponse, FetchRequest, FetchResponse, LockRequest, LockResponse,
    ReleaseRequest, ReleaseResponse, TypeCode,
};
use crate::sql::LockTable;
use crate::tls::{self, TlsError};
use crate::types::{LockRecord, LockType, Resource};

/// The server's TLS files (upstream `ca_file`, `cert_file`, `key_file`). Client certificates are
/// required and verified against `ca_file`.
#[derive(Debug, Clone)]
pub struct ServerTlsConfig {
    /// CA bundle that client certificates must chain to.
    pub ca_file: PathBuf,
    /// Server certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Server private key (PEM).
    pub key_file: PathBuf,
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// TLS material unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The gRPC transport failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves `models.Locket` on `listener` with mutual TLS until `shutdown` completes, then stops
/// accepting, lets open calls finish and cancels the TTL timers.
pub async fn serve<F>(
    listener: TcpListener,
    table: LockTable,
    tls: ServerTlsConfig,
    shutdown: F,
) -> Result<(), ServerError>
where
    F: Future<Output = ()> + Send,
{
    serve_with_metrics(listener, table, tls, LocketMetrics::new(), shutdown).await
}

/// [`serve`], counting RPCs, expiries and held locks into `metrics`.
pub async fn serve_with_metrics<F>(
    listener: TcpListener,
    table: LockTable,
    tls: ServerTlsConfig,
    metrics: LocketMetrics,
    shutdown: F,
) -> Result<(), ServerError>
where
    F: Future<Output = ()> + Send,
{
    let tls_config = tonic_tls_config(&tls)?;
    let local = listener.local_addr().ok();
    let expiry =
        expiry::spawn_with_metrics(table.clone(), expiry::BURGLAR_INTERVAL, metrics.clone());
    let service =
        LocketService::with_expirer(table, expiry.expirer().clone()).with_metrics(metrics);
    let router = Server::builder()
        .tls_config(tls_config)
        .map_err(|e| TlsError::Config(format!("{e}: {}", error_chain(&e))))?
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(LocketServer::new(service));
    tracing::info!(address = ?local, "locket.started");
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let result = router
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    drop(expiry);
    tracing::info!("locket.stopped");
    result.map_err(ServerError::from)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut src = e.source();
    while let Some(s) = src {
        parts.push(s.to_string());
        src = s.source();
    }
    parts.join(": ")
}

fn tonic_tls_config(
    tls: &ServerTlsConfig,
) -> Result<tonic::transport::ServerTlsConfig, ServerError> {
    tls::install_default_crypto_provider();
    let ca = tls::read_ca_bundle(&tls.ca_file, "ca_file")?;
    let cert = tls::read_certificates(&tls.cert_file, "cert_file")?;
    let key = tls::read_private_key(&tls.key_file, "key_file")?;
    Ok(tonic::transport::ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .client_ca_root(Certificate::from_pem(ca))
        .client_auth_optional(false)
        .timeout(Duration::from_secs(10)))
}

/// The `models.Locket` service implementation (usable with any tonic server).
#[derive(Clone)]
pub struct LocketService {
    table: LockTable,
    pick: Expirer,
    metrics: LocketMetrics,
}

impl LocketService {
    /// A service over `table` arming TTL timers on `expirer` after each Lock. Run the
    /// expirer's burglar too (as [`serve`] does) so locks written before this process started
    /// expire as well.
    pub fn with_expirer(table: LockTable, expirer: Expirer) -> Self {
        LocketService {
            pick: expirer,
            table,
            metrics: LocketMetrics::new(),
        }
    }

    /// Counts every answered RPC into `metrics`.
    pub fn with_metrics(mut self, metrics: LocketMetrics) -> Self {
        self.metrics = metrics;
        self
    }
}

fn request_uuid<T>(req: &Request<T>) -> String {
    req.metadata()
        .get("uuid")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Resolves the deprecated type string and the type code the way upstream's
/// `models.GetResource` + `validateType` do.
fn resolve_type(type_str: &str, code: i32) -> Result<LockType, LockError> {
    let code = TypeCode::try_from(code).map_err(|_| LockError::InvalidType)?;
    let code = if code == TypeCode::Unknown {
        LockType::from_type_str(type_str)
            .map(LockType::type_code)
            .unwrap_or(TypeCode::Unknown)
    } else {
        code
    };
    let lock_type = LockType::from_type_code(code).ok_or(LockError::InvalidType)?;
    if !type_str.is_empty() && LockType::from_type_str(type_str) != Some(lock_type) {
        return Err(LockError::InvalidType);
    }
    Ok(lock_type)
}

/// The RPCs, each counted once with its outcome; the handlers themselves are below.
#[tonic::async_trait]
impl Locket for LocketService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let result = self.handle_lock(request).await;
        self.metrics.operation(Operation::Lock, &result);
        result.map(Response::new).map_err(|e| e.to_status())
    }

    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<FetchResponse>, Status> {
        let result = self.handle_fetch(request).await;
        self.metrics.operation(Operation::Fetch, &result);
        result.map(Response::new).map_err(|e| e.to_status())
    }

    async fn release(
        &self,
        request: Request<ReleaseRequest>,
    ) -> Result<Response<ReleaseResponse>, Status> {
        let result = self.handle_release(request).await;
        self.metrics.operation(Operation::Release, &result);
        result.map(Response::new).map_err(|e| e.to_status())
    }

    async fn fetch_all(
        &self,
        request: Request<FetchAllRequest>,
    ) -> Result<Response<FetchAllResponse>, Status> {
        let result = self.handle_fetch_all(request).await;
        self.metrics.operation(Operation::FetchAll, &result);
        result.map(Response::new).map_err(|e| e.to_status())
    }
}

impl LocketService {
    #[allow(deprecated)]
    async fn handle_lock(&self, request: Request<LockRequest>) -> Result<LockResponse, LockError> {
        let uuid = request_uuid(&request);
        let req = request.into_inner();
        let res = req.resource.unwrap_or_default();
        let validated = (|| {
            if req.ttl_in_seconds <= 0 {
                return Err(LockError::InvalidTtl);
            }
            if res.owner.is_empty() {
                return Err(LockError::InvalidOwner);
            }
            resolve_type(&res.r#type, res.type_code)
        })();
        let lock_type = match validated {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(request_uuid = %uuid, key = %res.key, owner = %res.owner, error = %e, "locket.lock.failed");
                return Err(e);
            }
        };
        let resource = Resource {
            key: res.key,
            owner: res.owner,
            value: res.value,
            lock_type,
        };
        match self.table.lock(&resource, req.ttl_in_seconds).await {
            Ok(record) => {
                if record.modified_index == 1 {
                    tracing::info!(request_uuid = %uuid, key = %record.key, owner = %record.owner, r#type = %record.lock_type, ttl = record.ttl, "locket.lock.acquired");
                } else {
                    tracing::debug!(request_uuid = %uuid, key = %record.key, owner = %record.owner, modified_index = record.modified_index, "locket.lock.refreshed");
                }
                self.pick.register(record);
                Ok(LockResponse {})
            }
            Err(e) => {
                if e == LockError::Collision {
                    tracing::debug!(request_uuid = %uuid, key = %resource.key, owner = %resource.owner, "locket.lock.collision");
                } else {
                    tracing::error!(request_uuid = %uuid, key = %resource.key, owner = %resource.owner, error = %e, "locket.lock.failed");
                }
                Err(e)
            }
        }
    }

    async fn handle_fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<FetchResponse, LockError> {
        let uuid = request_uuid(&request);
        let key = request.into_inner().key;
        match self.table.fetch(&key).await {
            Ok(record) => Ok(FetchResponse {
                resource: Some(record.to_proto()),
            }),
            Err(e) => {
                if e != LockError::NotFound {
                    tracing::error!(request_uuid = %uuid, key = %key, error = %e, "locket.fetch.failed");
                }
                Err(e)
            }
        }
    }

    async fn handle_release(
        &self,
        request: Request<ReleaseRequest>,
    ) -> Result<ReleaseResponse, LockError> {
        let uuid = request_uuid(&request);
        let res = request.into_inner().resource.unwrap_or_default();
        match self.table.release(&res.key, &res.owner).await {
            Ok(()) => {
                tracing::info!(request_uuid = %uuid, key = %res.key, owner = %res.owner, "locket.release.released");
                Ok(ReleaseResponse {})
            }
            Err(e) => {
                tracing::error!(request_uuid = %uuid, key = %res.key, owner = %res.owner, error = %e, "locket.release.failed");
                Err(e)
            }
        }
    }

    #[allow(deprecated)]
    async fn handle_fetch_all(
        &self,
        request: Request<FetchAllRequest>,
    ) -> Result<FetchAllResponse, LockError> {
        let uuid = request_uuid(&request);
        let req = request.into_inner();
        let lock_type = resolve_type(&req.r#type, req.type_code).map_err(|e| {
            tracing::error!(request_uuid = %uuid, error = %e, "locket.fetch-all.failed");
            e
        })?;
        match self.table.fetch_all(lock_type.as_str()).await {
            Ok(records) => Ok(FetchAllResponse {
                resources: records.iter().map(LockRecord::to_proto).collect(),
            }),
            Err(e) => {
                tracing::error!(request_uuid = %uuid, error = %e, "locket.fetch-all.failed");
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_resolution() {
        assert_eq!(resolve_type("", TypeCode::Lock as i32), Ok(LockType::Lock));
        assert_eq!(resolve_type("presence", 0), Ok(LockType::Presence));
        assert_eq!(
            resolve_type("lock", TypeCode::Lock as i32),
            Ok(LockType::Lock)
        );
        assert_eq!(resolve_type("", 0), Err(LockError::InvalidType));
        assert_eq!(resolve_type("bogus", 0), Err(LockError::InvalidType));
        assert_eq!(
            resolve_type("presence", TypeCode::Lock as i32),
            Err(LockError::InvalidType)
        );
        assert_eq!(resolve_type("", 42), Err(LockError::InvalidType));
    }
}
