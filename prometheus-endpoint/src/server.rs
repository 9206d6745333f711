//! The `/metrics` listener: renders a component's [`Registry`] in the OpenMetrics text format
//! for each scrape, over plain HTTP or mutual TLS. Scrapes are rare and small, so each one
//! renders the registry afresh; nothing here is on a data path.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::config::Endpoint;
use crate::tls::{self, TlsError};

/// The exposition format's media type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Scrapes served at once; more wait for a slot (a scraper retries on its own schedule).
const MAX_CONNECTIONS: usize = 16;
/// How long a client may take to send a request head or finish a TLS handshake.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A metrics endpoint that could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("prometheus: cannot listen on {addr}: {source} (is prometheus.port in use?)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The registry in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail; an error would only come from a metric's own
    // encoder, and then the partial text is still the best answer.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, registry) {
        tracing::warn!(error = %e, "metrics-encode-failed");
    }
    text
}

/// A bound metrics listener, ready to [`serve`](Self::serve).
pub struct MetricsServer {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
}

impl MetricsServer {
    /// Loads the TLS files (when set) and binds the port.
    pub async fn bind(endpoint: &Endpoint) -> Result<Self, ServeError> {
        let tls = endpoint.tls.as_ref().map(tls::acceptor).transpose()?;
        let listener =
            TcpListener::bind(endpoint.addr)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: endpoint.addr,
                    source,
                })?;
        Ok(Self { listener, tls })
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves scrapes of `registry` until `shutdown` completes.
    pub async fn serve(self, registry: Arc<Registry>, shutdown: impl Future<Output = ()>) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        tokio::pin!(shutdown);
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let accepted = tokio::select! {
                _ = &mut shutdown => return,
                accepted = self.listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "metrics-accept-failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let registry = registry.clone();
            let tls = self.tls.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tls {
                    None => serve_connection(TokioIo::new(stream), registry).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(CLIENT_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => {
                                serve_connection(TokioIo::new(stream), registry).await
                            }
                            Ok(Err(e)) => {
                                tracing::info!(error = %e, "metrics-tls-handshake-failed")
                            }
                            Err(_) => tracing::info!("metrics-tls-handshake-timed-out"),
                        }
                    }
                }
            });
        }
    }
}

async fn serve_connection<I>(io: I, registry: Arc<Registry>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        std::future::ready(Ok::<_, Infallible>(answer(&req, &registry)))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(CLIENT_TIMEOUT)
        .serve_connection(io, service);
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "metrics-connection-ended");
    }
}

fn answer(req: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    let (status, content_type, body) = if req.uri().path() != "/metrics" {
        (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "404 page not found\n".to_owned(),
        )
    } else if req.method() != Method::GET && req.method() != Method::HEAD {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "405 method not allowed: use GET\n".to_owned(),
        )
    } else {
        (StatusCode::OK, CONTENT_TYPE, encode(registry))
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    if status == StatusCode::METHOD_NOT_ALLOWED {
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
    }
    response
}
