//! The health port (upstream's `listen health_check_http_url` on `health_check_port`):
//! `GET /health` answers 200 while serving and 503 while draining, with HAProxy's
//! `monitor-uri` bodies; `GET /metrics` gives the OpenMetrics text of [`crate::metrics`]'
//! registry (as the `prometheus` port does, when configured).
//! Also the drain state itself ([`Health`]).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Healthy until draining starts; draining is final.
#[derive(Debug, Default)]
pub struct Health {
    draining: AtomicBool,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

const OK_BODY: &str = "<html><body><h1>200 OK</h1>\nService ready.\n</body></html>\n";
const UNAVAILABLE_BODY: &str = "<html><body><h1>503 Service Unavailable</h1>\nNo server is available to handle this request.\n</body></html>\n";

fn response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// The answer to one request on the health port.
pub fn answer(
    method: &Method,
    path: &str,
    health: &Health,
    metrics: &Registry,
) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return response(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"405 method not allowed\n"),
        );
    }
    match path {
        "/health" if health.is_draining() => response(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/html",
            Bytes::from_static(UNAVAILABLE_BODY.as_bytes()),
        ),
        "/health" => response(
            StatusCode::OK,
            "text/html",
            Bytes::from_static(OK_BODY.as_bytes()),
        ),
        "/metrics" => response(
            StatusCode::OK,
            prometheus_endpoint::CONTENT_TYPE,
            Bytes::from(prometheus_endpoint::encode(metrics)),
        ),
        _ => response(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"404 page not found\n"),
        ),
    }
}

/// Serves the health port until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    metrics: Arc<Registry>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "tcp-router.health-accept-failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let health = health.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let resp = answer(req.method(), req.uri().path(), &health, &metrics);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            if tokio::time::timeout(Duration::from_secs(30), conn)
                .await
                .is_err()
            {
                tracing::debug!("health-connection-timeout");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn health_and_metrics() {
        let registry = Metrics::default().registry(|| 0, || false);
        let h = Health::new();
        let r = answer(&Method::GET, "/health", &h, &registry);
        assert_eq!(r.status(), StatusCode::OK);
        let r = answer(&Method::GET, "/metrics", &h, &registry);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            prometheus_endpoint::CONTENT_TYPE
        );
        assert_eq!(
            answer(&Method::GET, "/nope", &h, &registry).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            answer(&Method::POST, "/health", &h, &registry).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        h.start_draining();
        let r = answer(&Method::GET, "/health", &h, &registry);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
