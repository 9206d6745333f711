//! Serving the API: the accept loops of the plain HTTP port and the mutual TLS port (handshake
//! with [`crate::tls`]'s acceptor), one HTTP/1.1 connection per client with a request id on
//! every answer, and how connections end when the process stops ([`Stop`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::api::Api;

/// Sent as `X-Vcap-Request-Id` (hyper writes header names title-cased).
const X_VCAP_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-vcap-request-id");

/// When a served connection ends early: `closing` (SIGTERM) lets the request in flight finish
/// and then closes the connection (no further keep-alive requests); `cut` (the lock is lost)
/// drops it at once, cancelling any request in flight, so that nothing is answered once a peer
/// may hold the lock.
#[derive(Clone)]
pub struct Stop {
    pub closing: watch::Receiver<bool>,
    pub cut: watch::Receiver<bool>,
}

async fn serve_connection<I>(io: I, api: Arc<Api>, mut stop: Stop)
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
    tokio::pin!(conn);
    let mut draining = false;
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            _ = stop.cut.wait_for(|c| *c) => return,
            _ = stop.closing.wait_for(|c| *c), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "api-connection-error");
    }
}

/// Serves the API over plain HTTP until `stop.closing` turns true (the listener is closed
/// then; connections end as [`Stop`] says).
pub async fn serve_http(listener: TcpListener, api: Arc<Api>, stop: Stop) {
    let mut closing = stop.closing.clone();
    loop {
        let accepted = tokio::select! {
            _ = closing.wait_for(|c| *c) => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(stream, api.clone(), stop.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "api-accept-failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Serves the API over mutual TLS until `stop.closing` turns true (as [`serve_http`]). A
/// client without a valid certificate fails the handshake and is never served.
pub async fn serve_mtls(listener: TcpListener, acceptor: TlsAcceptor, api: Arc<Api>, stop: Stop) {
    let mut closing = stop.closing.clone();
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
        let stop = stop.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve_connection(tls, api, stop).await,
                Ok(Err(e)) => tracing::info!(error = %e, "mtls-handshake-failed"),
                Err(_) => tracing::info!("mtls-handshake-timeout"),
            }
        });
    }
}
