//! [`LocketClient`]: a `models.Locket` gRPC client over mutual TLS, every call bounded by a
//! timeout and tagged with a `uuid` metadata entry (which the server logs).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Request;

use crate::error::LockError;
use crate::proto::locket_client::LocketClient as GrpcClient;
use crate::proto::{
    FetchAllRequest, FetchRequest, LockRequest, ReleaseRequest, Resource as ProtoResource, TypeCode,
};
use crate::tls::{self, TlsError};
use crate::types::LockType;

/// Default per-call timeout.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything needed to reach a Locket server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` (or `https://host:port`), e.g. `locket.service.cf.internal:8891`.
    pub address: String,
    /// CA bundle the server certificate must chain to.
    pub ca_file: PathBuf,
    /// Client certificate (PEM).
    pub cert_file: PathBuf,
    /// Client private key (PEM).
    pub key_file: PathBuf,
    /// Name checked against the server certificate (default: the address' host).
    pub server_name: Option<String>,
    /// Timeout of each call.
    pub call_timeout: Duration,
    /// Timeout of establishing the connection.
    pub connect_timeout: Duration,
}

impl ClientConfig {
    /// A config with default timeouts.
    pub fn new(
        address: impl Into<String>,
        ca_file: impl AsRef<Path>,
        cert_file: impl AsRef<Path>,
        key_file: impl AsRef<Path>,
    ) -> Self {
        ClientConfig {
            address: address.into(),
            ca_file: ca_file.as_ref().to_path_buf(),
            cert_file: cert_file.as_ref().to_path_buf(),
            key_file: key_file.as_ref().to_path_buf(),
            server_name: None,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// The client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// TLS material unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The address is not `host:port`.
    #[error("invalid locket address {address:?}: {reason}")]
    Address {
        /// The address given.
        address: String,
        /// Why it is invalid.
        reason: String,
    },
}

impl From<ClientError> for LockError {
    fn from(e: ClientError) -> Self {
        LockError::Config(e.to_string())
    }
}

/// A Locket gRPC client. Cheap to clone (shares one HTTP/2 connection).
#[derive(Debug, Clone)]
pub struct LocketClient {
    grpc: GrpcClient<Channel>,
    call_timeout: Duration,
}

/// Splits `https://host:port` / `host:port` into the authority and the bare host.
fn parse_address(address: &str) -> Result<(String, String), ClientError> {
    let bad = |reason: &str| ClientError::Address {
        address: address.to_string(),
        reason: reason.to_string(),
    };
    let authority = address
        .trim()
        .strip_prefix("https://")
        .unwrap_or(address.trim())
        .trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(bad("expected host:port"));
    }
    let host = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']').ok_or_else(|| bad("unclosed '['"))?;
        if !rest[end + 1..].starts_with(':') {
            return Err(bad("missing port"));
        }
        &rest[..end]
    } else {
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| bad("missing port"))?;
        if port.parse::<u16>().is_err() {
            return Err(bad("invalid port"));
        }
        host
    };
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    Ok((authority.to_string(), host.to_string()))
}

impl LocketClient {
    /// Builds a client for `address` (`host:port`) with mutual TLS from PEM files and default
    /// timeouts. The connection is made on the first call (and remade after failures), so this
    /// succeeds while the server is down; it fails only on bad files or addresses.
    pub async fn connect(
        address: &str,
        ca_file: impl AsRef<Path>,
        cert_file: impl AsRef<Path>,
        key_file: impl AsRef<Path>,
    ) -> Result<Self, ClientError> {
        Self::connect_with(ClientConfig::new(address, ca_file, cert_file, key_file)).await
    }

    /// Builds a client from a full [`ClientConfig`] (see [`LocketClient::connect`]).
    pub async fn connect_with(config: ClientConfig) -> Result<Self, ClientError> {
        tls::install_default_crypto_provider();
        let (authority, host) = parse_address(&config.address)?;
        let ca = tls::read_ca_bundle(&config.ca_file, "CA certificate")?;
        let cert = tls::read_certificates(&config.cert_file, "client certificate")?;
        let key = tls::read_private_key(&config.key_file, "client key")?;
        let tls_config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(cert, key))
            .domain_name(config.server_name.clone().unwrap_or(host))
            .timeout(config.connect_timeout);
        let endpoint = Endpoint::from_shared(format!("https://{authority}"))
            .map_err(|e| ClientError::Address {
                address: config.address.clone(),
                reason: e.to_string(),
            })?
            .tls_config(tls_config)
            .map_err(|e| TlsError::Config(e.to_string()))?
            .connect_timeout(config.connect_timeout)
            .timeout(config.call_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        Ok(LocketClient {
            grpc: GrpcClient::new(endpoint.connect_lazy()),
            call_timeout: config.call_timeout,
        })
    }

    /// The same client with another per-call timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.call_timeout
    }

    /// The generated gRPC client, for raw requests.
    pub fn grpc(&self) -> GrpcClient<Channel> {
        self.grpc.clone()
    }

    fn request<T>(&self, msg: T, timeout: Duration) -> Request<T> {
        let mut req = Request::new(msg);
        if let Ok(v) = uuid::Uuid::new_v4().to_string().parse() {
            req.metadata_mut().insert("uuid", v);
        }
        req.set_timeout(timeout);
        req
    }

    async fn call<T, F, Fut>(&self, timeout: Duration, f: F) -> Result<T, LockError>
    where
        F: FnOnce(GrpcClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match tokio::time::timeout(timeout, f(self.grpc.clone())).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(match LockError::from_status(&status) {
                LockError::Timeout(_) => LockError::Timeout(timeout),
                e => e,
            }),
            Err(_) => Err(LockError::Timeout(timeout)),
        }
    }

    /// Lock (or refresh) `key` for `owner` with a TTL in seconds.
    #[allow(deprecated)]
    pub async fn lock(
        &self,
        key: &str,
        owner: &str,
        value: &str,
        type_code: TypeCode,
        ttl_in_seconds: i64,
    ) -> Result<(), LockError> {
        let type_str = LockType::from_type_code(type_code)
            .map(LockType::as_str)
            .unwrap_or_default();
        let req = self.request(
            LockRequest {
                resource: Some(ProtoResource {
                    key: key.to_string(),
                    owner: owner.to_string(),
                    value: value.to_string(),
                    r#type: type_str.to_string(),
                    type_code: type_code as i32,
                }),
                ttl_in_seconds,
            },
            self.call_timeout,
        );
        self.call(self.call_timeout, |mut c| async move { c.lock(req).await })
            .await
            .map(|_| ())
    }

    /// Release `key` held by `owner` (missing key = success).
    pub async fn release(&self, key: &str, owner: &str) -> Result<(), LockError> {
        let req = self.request(
            ReleaseRequest {
                resource: Some(ProtoResource {
                    key: key.to_string(),
                    owner: owner.to_string(),
                    ..Default::default()
                }),
            },
            self.call_timeout,
        );
        self.call(
            self.call_timeout,
            |mut c| async move { c.release(req).await },
        )
        .await
        .map(|_| ())
    }

    /// Fetch `key`; [`LockError::NotFound`] if nobody holds it.
    pub async fn fetch(&self, key: &str) -> Result<ProtoResource, LockError> {
        let req = self.request(
            FetchRequest {
                key: key.to_string(),
            },
            self.call_timeout,
        );
        let resp = self
            .call(self.call_timeout, |mut c| async move { c.fetch(req).await })
            .await?;
        resp.resource
            .ok_or_else(|| LockError::Internal("Fetch answered without a resource".into()))
    }

    /// Every held resource of the given type (`LOCK` or `PRESENCE`; `UNKNOWN` is rejected by
    /// the server with `invalid-type`).
    #[allow(deprecated)]
    pub async fn fetch_all(&self, type_code: TypeCode) -> Result<Vec<ProtoResource>, LockError> {
        let req = self.request(
            FetchAllRequest {
                r#type: String::new(),
                type_code: type_code as i32,
            },
            self.call_timeout,
        );
        let resp = self
            .call(
                self.call_timeout,
                |mut c| async move { c.fetch_all(req).await },
            )
            .await?;
        Ok(resp.resources)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let ok = |a: &str| parse_address(a).unwrap();
        assert_eq!(
            ok("127.0.0.1:8891"),
            ("127.0.0.1:8891".into(), "127.0.0.1".into())
        );
        assert_eq!(
            ok("https://locket.service.cf.internal:8891"),
            (
                "locket.service.cf.internal:8891".into(),
                "locket.service.cf.internal".into()
            )
        );
        assert_eq!(ok("[::1]:8891"), ("[::1]:8891".into(), "::1".into()));
        for bad in ["", "host", "host:x", ":8891", "[::1]", "h:1/x"] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
    }
}
