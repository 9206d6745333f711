//! Listeners: the plain HTTP API port, the mutual-TLS API port (client certificate required and
//! verified) and the localhost admin port for backup/restore locks.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::api::Api;

/// Sent as `X-Vcap-Request-Id` (hyper writes header names title-cased).
const X_VCAP_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-vcap-request-id");
use crate::store::Store;

/// Problems setting up TLS from the configured files.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{what} {path} holds no usable PEM {expected}")]
    Empty {
        what: &'static str,
        path: String,
        expected: &'static str,
    },
    #[error("TLS configuration rejected: {0}")]
    Rustls(String),
}

fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, TlsSetupError> {
    use rustls_pki_types::pem::PemObject;
    let bytes = std::fs::read(path).map_err(|source| TlsSetupError::Read {
        what,
        path: path.display().to_string(),
        source,
    })?;
    let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(&bytes)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsSetupError::Empty {
            what,
            path: path.display().to_string(),
            expected: "certificate",
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<rustls_pki_types::PrivateKeyDer<'static>, TlsSetupError> {
    use rustls_pki_types::pem::PemObject;
    let bytes = std::fs::read(path).map_err(|source| TlsSetupError::Read {
        what: "private key",
        path: path.display().to_string(),
        source,
    })?;
    rustls_pki_types::PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| TlsSetupError::Empty {
        what: "private key",
        path: path.display().to_string(),
        expected: "private key",
    })
}

/// A TLS acceptor that requires client certificates signed by `client_ca`.
pub fn mtls_acceptor(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
) -> Result<TlsAcceptor, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs("client CA file", client_ca)? {
        roots
            .add(c)
            .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(read_certs("server certificate", cert)?, read_key(key)?)
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn serve_connection<I>(io: I, api: Arc<Api>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let api = api.clone();
        async move {
            let mut resp = api.handle(req).await;
            // Upstream answers every API request (errors, 404 page and event streams
            // included) with a fresh request id (see the captures).
            if let Ok(id) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
                resp.headers_mut().insert(X_VCAP_REQUEST_ID, id);
            }
            Ok::<_, Infallible>(resp)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .title_case_headers(true)
        .header_read_timeout(Duration::from_secs(60))
        .serve_connection(TokioIo::new(io), svc);
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "api-connection-error");
    }
}

/// Serves the API over plain HTTP until `closing` turns true.
pub async fn serve_http(listener: TcpListener, api: Arc<Api>, mut closing: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            _ = closing.wait_for(|c| *c) => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(stream, api.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "api-accept-failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Serves the API over mutual TLS until `closing` turns true. A client without a valid
/// certificate fails the handshake and is never served.
pub async fn serve_mtls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    api: Arc<Api>,
    mut closing: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = closing.wait_for(|c| *c) => return,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "mtls-accept-failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let api = api.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve_connection(tls, api).await,
                Ok(Err(e)) => tracing::info!(error = %e, "mtls-handshake-failed"),
                Err(_) => tracing::info!("mtls-handshake-timeout"),
            }
        });
    }
}

/// Serves the backup/restore (BBR) admin endpoints on localhost until `closing` turns true:
/// while a lock is set, router-group reads or writes fail with 503.
pub async fn serve_admin(listener: TcpListener, store: Store, mut closing: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            _ = closing.wait_for(|c| *c) => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else { continue };
        let store = store.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let store = store.clone();
                async move {
                    let mut resp = Response::new(Full::new(Bytes::new()));
                    match (req.method(), req.uri().path()) {
                        (&Method::PUT, "/lock_router_group_reads") => {
                            store.set_router_group_reads_locked(true)
                        }
                        (&Method::PUT, "/unlock_router_group_reads") => {
                            store.set_router_group_reads_locked(false)
                        }
                        (&Method::PUT, "/lock_router_group_writes") => {
                            store.set_router_group_writes_locked(true)
                        }
                        (&Method::PUT, "/unlock_router_group_writes") => {
                            store.set_router_group_writes_locked(false)
                        }
                        _ => *resp.status_mut() = StatusCode::NOT_FOUND,
                    }
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
