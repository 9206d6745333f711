//! Health state and the status endpoints (A.12): `/health` and the liveness probe on
//! `status.port` (and over TLS on `status.tls.port`), `/routes` with basic auth on
//! 127.0.0.1:`status.routes.port`; in upstream's deprecated mode
//! (`status.enable_deprecated_varz_healthz_endpoints`) one server on `status.port` for
//! `/health`, `/healthz` and the liveness probe without auth and `/varz` and `/routes` with it.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::registry::{Endpoint, RouteTable};

/// Initializing -> Healthy -> Degraded; Degraded is final (drain or a fatal listener error).
#[derive(Debug, Default)]
pub struct Health(AtomicU8);

const INITIALIZING: u8 = 0;
const HEALTHY: u8 = 1;
const DEGRADED: u8 = 2;

impl Health {
    pub fn new() -> Self {
        Self(AtomicU8::new(INITIALIZING))
    }

    /// Initializing -> Healthy; a degraded router stays degraded.
    pub fn set_healthy(&self) {
        let _ = self
            .0
            .compare_exchange(INITIALIZING, HEALTHY, Ordering::SeqCst, Ordering::SeqCst);
    }

    pub fn degrade(&self) {
        self.0.store(DEGRADED, Ordering::SeqCst);
    }

    pub fn is_healthy(&self) -> bool {
        self.0.load(Ordering::SeqCst) == HEALTHY
    }
}

/// The `/health` answer, also given on the proxy port to the load balancer's user agent.
pub fn health_response(health: &Health) -> Response<Full<Bytes>> {
    let (status, body) = if health.is_healthy() {
        (StatusCode::OK, Bytes::from_static(b"ok\n"))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Bytes::new())
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=0"),
    );
    h.insert(header::EXPIRES, HeaderValue::from_static("0"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// The health routes' handler: `/health` and `/is-process-alive-do-not-use-for-loadbalancing`.
fn health_handler(
    health: Arc<Health>,
) -> impl Fn(Request<Incoming>) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>
       + Clone
       + Send
       + Sync
       + 'static {
    move |req: Request<Incoming>| {
        let mut resp = match req.uri().path() {
            "/health" => health_response(&health),
            "/is-process-alive-do-not-use-for-loadbalancing" => plain(StatusCode::OK, "ok\n"),
            _ => plain(StatusCode::NOT_FOUND, "404 page not found\n"),
        };
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        std::future::ready(Ok::<_, Infallible>(resp))
    }
}

/// Serves `/health` and `/is-process-alive-do-not-use-for-loadbalancing` until `shutdown` fires.
pub async fn serve_health(
    listener: TcpListener,
    health: Arc<Health>,
    shutdown: watch::Receiver<bool>,
) {
    serve(listener, None, shutdown, health_handler(health)).await
}

/// The same routes over TLS (`status.tls`, upstream's TLS health listener) with `tls`
/// (from [`crate::tls::status::status_server_config`]), until `shutdown` fires. A client
/// that does not finish its handshake within 10 s is dropped.
pub async fn serve_health_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    health: Arc<Health>,
    shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    serve(listener, Some(acceptor), shutdown, health_handler(health)).await
}

/// One endpoint as `/routes` shows it; field order is upstream's.
#[derive(Serialize)]
struct EndpointView<'a> {
    address: &'a str,
    availability_zone: &'a str,
    protocol: &'static str,
    tls: bool,
    ttl: u64,
    #[serde(skip_serializing_if = "str::is_empty")]
    route_service_url: &'a str,
    tags: Option<crate::registry::Tags<'a>>,
    #[serde(skip_serializing_if = "str::is_empty")]
    isolation_segment: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    private_instance_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    server_cert_domain_san: &'a str,
}

impl<'a> From<&'a Arc<Endpoint>> for EndpointView<'a> {
    fn from(e: &'a Arc<Endpoint>) -> Self {
        EndpointView {
            address: e.addr(),
            availability_zone: e.availability_zone(),
            protocol: e.protocol.as_str(),
            tls: e.tls,
            ttl: e.ttl_secs(),
            route_service_url: e.route_service_url(),
            tags: e.tags(),
            isolation_segment: e.isolation_segment(),
            private_instance_id: e.private_instance_id(),
            server_cert_domain_san: e.server_cert_domain_san(),
        }
    }
}

/// The `/routes` JSON document: route -> endpoints, sorted by route. Written straight from the
/// table's pools, with no copy of the table in between: with 100,000 routes such a copy was
/// 35 MiB the allocator kept after the response.
pub fn routes_json(table: &RouteTable) -> Vec<u8> {
    struct Routes(Vec<Arc<crate::registry::Pool>>);
    impl Serialize for Routes {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut map = serializer.serialize_map(Some(self.0.len()))?;
            for pool in &self.0 {
                map.serialize_entry(&pool.route(), &Endpoints(&pool.endpoints()))?;
            }
            map.end()
        }
    }
    struct Endpoints<'a>(&'a [Arc<Endpoint>]);
    impl Serialize for Endpoints<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_seq(self.0.iter().map(EndpointView::from))
        }
    }
    serde_json::to_vec(&Routes(table.pools_by_route())).unwrap_or_else(|_| b"{}".to_vec())
}

/// Whether the request carries `Authorization: Basic` for `user`:`pass`.
fn authorized(req: &Request<Incoming>, user: &str, pass: &str) -> bool {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let Some(encoded) = value.strip_prefix("Basic ") else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let expected = format!("{user}:{pass}");
    constant_time_eq(&decoded, expected.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves `/routes` (basic auth) until `shutdown` fires.
pub async fn serve_routes(
    listener: TcpListener,
    table: Arc<RouteTable>,
    user: String,
    pass: String,
    shutdown: watch::Receiver<bool>,
) {
    let creds = Arc::new((user, pass));
    serve(listener, None, shutdown, move |req: Request<Incoming>| {
        let table = table.clone();
        let creds = creds.clone();
        async move {
            let mut resp = if !authorized(&req, &creds.0, &creds.1) {
                unauthorized()
            } else if req.method() == Method::GET && req.uri().path() == "/routes" {
                json_response(routes_json(&table))
            } else {
                plain(StatusCode::NOT_FOUND, "404 page not found\n")
            };
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            Ok::<_, Infallible>(resp)
        }
    })
    .await
}

/// The answer to a request without the right basic-auth credentials.
fn unauthorized() -> Response<Full<Bytes>> {
    let mut r = plain(StatusCode::UNAUTHORIZED, "401 Unauthorized\n");
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
    r
}

fn json_response(body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Upstream's deprecated status server (`status.enable_deprecated_varz_healthz_endpoints`),
/// on `status.port` until `shutdown` fires: `/health`, `/healthz` (the same answer, as
/// upstream's) and `/is-process-alive-do-not-use-for-loadbalancing` without auth; every other
/// path, `/varz` and `/routes` among them, needs `user`:`pass` (upstream's `BasicAuth` only
/// lets the two health paths through).
pub async fn serve_deprecated(
    listener: TcpListener,
    health: Arc<Health>,
    varz: Arc<crate::varz::Varz>,
    table: Arc<RouteTable>,
    user: String,
    pass: String,
    shutdown: watch::Receiver<bool>,
) {
    let creds = Arc::new((user, pass));
    serve(listener, None, shutdown, move |req: Request<Incoming>| {
        let path = req.uri().path();
        let mut resp = match path {
            "/health" | "/healthz" => health_response(&health),
            "/is-process-alive-do-not-use-for-loadbalancing" => plain(StatusCode::OK, "ok\n"),
            _ if !authorized(&req, &creds.0, &creds.1) => unauthorized(),
            "/varz" => json_response(varz.json()),
            "/routes" => json_response(routes_json(&table)),
            _ => plain(StatusCode::NOT_FOUND, "404 page not found\n"),
        };
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        std::future::ready(Ok::<_, Infallible>(resp))
    })
    .await
}

/// How long a status client gets for its TLS handshake.
const STATUS_TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A small HTTP/1 server loop for the status ports, over TLS when `tls` is given.
async fn serve<F, Fut>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
    handler: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    loop {
        let stream = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "status-accept-failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let handler = handler.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, handler).await,
                Some(acceptor) => {
                    match tokio::time::timeout(
                        STATUS_TLS_HANDSHAKE_TIMEOUT,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(stream)) => serve_connection(stream, handler).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "status-tls-handshake-failed"),
                        Err(_) => tracing::debug!("status-tls-handshake-timed-out"),
                    }
                }
            }
        });
    }
}

/// One status connection: a single HTTP/1.1 request (no keep-alive), bounded in time.
async fn serve_connection<IO, F, Fut>(stream: IO, handler: F)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(stream);
    let svc = hyper::service::service_fn(handler);
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .title_case_headers(true)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(10))
        .serve_connection(io, svc);
    if let Err(e) = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await {
        tracing::debug!(error = %e, "status-connection-timeout");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{EndpointSpec, TableSettings};

    #[test]
    fn health_is_unavailable_until_healthy_and_after_degrade() {
        let h = Health::new();
        assert_eq!(
            health_response(&h).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        h.set_healthy();
        assert_eq!(health_response(&h).status(), StatusCode::OK);
        h.degrade();
        h.set_healthy();
        assert_eq!(
            health_response(&h).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn routes_json_matches_upstream_shape() {
        let t = RouteTable::new(TableSettings::default());
        t.register(
            "echo.example.com",
            &EndpointSpec {
                host: "127.0.0.1".into(),
                port: 9001,
                private_instance_id: "abc".into(),
                tags: Some([("component".to_string(), "echo".to_string())].into()),
                ..Default::default()
            },
        );
        t.register(
            "app.example.com",
            &EndpointSpec {
                host: "127.0.0.1".into(),
                port: 9002,
                ..Default::default()
            },
        );
        let json = String::from_utf8(routes_json(&t)).unwrap();
        assert_eq!(
            json,
            r#"{"app.example.com":[{"address":"127.0.0.1:9002","availability_zone":"","protocol":"http1","tls":false,"ttl":120,"tags":null}],"echo.example.com":[{"address":"127.0.0.1:9001","availability_zone":"","protocol":"http1","tls":false,"ttl":120,"tags":{"component":"echo"},"private_instance_id":"abc"}]}"#
        );
    }
}
