//! The proxy: from a client request to a backend response (A.4-A.8).
//!
//! [`Proxy::handle`] is the request path, one named stage after another, each in its own file
//! under [`stages`] (as upstream composes handlers and Pingora names phases):
//!
//! 1. [`health_check`](stages::health_check): a load balancer's health check is answered here.
//! 2. [`trace`](stages::trace): `X-Vcap-Request-Id`, B3, W3C.
//! 3. [`host`](stages::host), [`app_instance`](stages::app_instance): requests refused
//!    before the lookup.
//! 4. [`lookup`](stages::lookup): the route's pool; then
//!    [`max_request_size`](stages::max_request_size) (A.4's order: an unknown route is 404
//!    whatever the size of its headers).
//! 5. [`route_service`](stages::route_service): which pass of the route-service protocol the
//!    request is on (A.10): refused, back from the route service (validated), or on its way
//!    to it.
//! 6. [`sticky`](stages::sticky): the instance a session sticks to.
//! 7. [`forwarded`](stages::forwarded), [`client_cert`](stages::client_cert): the backend
//!    request's headers (hop-by-hop, `X-Forwarded-*`, `X-Forwarded-Client-Cert`).
//! 8. [`access_log`](stages::access_log): the record, written when the response ends.
//! 9. [`round_trip`](stages::round_trip): attempts over the pool's endpoints (or to the route
//!    service) through the [`transport`]; [`response`](stages::response) and sticky cookies on
//!    the way back; [`websocket`](stages::websocket) upgrades spliced.
//! 10. Every response, the router's errors included: [`error_page`] (`html_error_template_file`)
//!     and [`response_rewrite`](stages::response_rewrite) (`http_rewrite`).
//!
//! Bodies stream both ways ([`body`]); nothing is buffered whole. Router-made answers are
//! [`errors`]. The [`listener`] accepts client connections.

pub mod body;
mod context;
pub mod error_page;
pub mod errors;
pub mod headers;
pub mod listener;
pub mod proxy_protocol;
mod send_batch;
pub mod stages;
pub mod transport;
mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};

use crate::access_log::AccessLog;
use crate::config::{Config, ForwardedClientCert};
use crate::metrics::RouterMetrics;
use crate::registry::RouteTable;
use crate::status::Health;

use body::{ClientBody, ContinueGate, RequestBody, ResponseBody};
use context::{Received, RequestContext};
use error_page::ErrorPage;
use errors::ErrorPageMessage;
use headers::{has_header, is_websocket_upgrade, X_VCAP_TRACE};
use stages::response_rewrite::ResponseRewrite;
use stages::round_trip::BackendRequest;
pub use stages::route_service::{Hairpin, RouteServiceProxying};
use stages::*;
use transport::Transport;

/// What the proxy needs from the config, resolved once.
pub struct ProxySettings {
    pub max_attempts: usize,
    pub max_conns: Option<u64>,
    pub retry_after_failure: Duration,
    pub endpoint_timeout: Duration,
    pub endpoint_dial_timeout: Duration,
    pub websocket_dial_timeout: Duration,
    pub empty_pool_response_code_503: bool,
    pub sticky_cookie_names: Vec<String>,
    pub secure_cookies: bool,
    pub trace_key: Option<HeaderValue>,
    pub router_ip: HeaderValue,
    pub force_forwarded_proto_https: bool,
    pub sanitize_forwarded_proto: bool,
    pub forwarded_client_cert: ForwardedClientCert,
    pub hop_by_hop_keep: Vec<String>,
    pub max_header_bytes: usize,
    pub healthcheck_user_agent: HeaderValue,
    pub trace: trace::TraceSettings,
    pub extra_headers_to_log: Vec<String>,
    /// Reuse backend connections. Off with `disable_keep_alives`, which also sends
    /// `Connection: close` on every backend request (Go's `Transport.DisableKeepAlives`).
    pub keep_alive_to_backends: bool,
    /// `logging.disable_log_forwarded_for`: the access log's `x_forwarded_for` is `"-"`.
    pub log_forwarded_for: bool,
    /// `logging.disable_log_source_ip`: the access log's client address is `"-"`.
    pub log_source_ip: bool,
}

impl ProxySettings {
    pub fn from_config(c: &Config) -> Self {
        Self {
            max_attempts: c.max_attempts,
            max_conns: c.max_conns,
            retry_after_failure: c.droplet_stale_threshold / 4,
            endpoint_timeout: c.endpoint_timeout,
            endpoint_dial_timeout: c.endpoint_dial_timeout,
            websocket_dial_timeout: c.websocket_dial_timeout,
            empty_pool_response_code_503: c.empty_pool_response_code_503,
            sticky_cookie_names: c.sticky_session_cookie_names.clone(),
            secure_cookies: c.secure_cookies,
            trace_key: c
                .trace_key
                .as_deref()
                .and_then(|k| HeaderValue::from_str(k).ok()),
            router_ip: HeaderValue::from_str(&c.ip.to_string())
                .unwrap_or(HeaderValue::from_static("127.0.0.1")),
            force_forwarded_proto_https: c.force_forwarded_proto_https,
            sanitize_forwarded_proto: c.sanitize_forwarded_proto,
            forwarded_client_cert: c.forwarded_client_cert,
            hop_by_hop_keep: c.hop_by_hop_headers_to_filter.clone(),
            max_header_bytes: c.max_header_bytes,
            healthcheck_user_agent: HeaderValue::from_str(&c.healthcheck_user_agent)
                .unwrap_or(HeaderValue::from_static("HTTP-Monitor/1.1")),
            trace: trace::TraceSettings {
                zipkin: c.tracing.enable_zipkin,
                w3c: c.tracing.enable_w3c,
                w3c_tenant_id: c.tracing.w3c_tenant_id.clone(),
            },
            extra_headers_to_log: c.extra_headers_to_log.clone(),
            keep_alive_to_backends: !c.disable_keep_alives && c.max_idle_conns_per_host > 0,
            log_forwarded_for: !c.logging.disable_log_forwarded_for,
            log_source_ip: !c.logging.disable_log_source_ip,
        }
    }
}

/// Per-connection facts, computed once per client connection.
pub struct ClientConn {
    pub remote: SocketAddr,
    /// The client IP as a header value, for `X-Forwarded-For`.
    pub remote_ip: HeaderValue,
    pub tls: bool,
    /// The leaf certificate (DER) the client presented on a TLS connection.
    pub client_cert: Option<bytes::Bytes>,
    /// That certificate as `X-Forwarded-Client-Cert` sets it (base64 DER), encoded once per
    /// connection.
    pub client_cert_header: Option<HeaderValue>,
}

impl ClientConn {
    pub fn new(remote: SocketAddr, tls: bool) -> Self {
        // On an all-interfaces (dual-stack) listener IPv4 clients arrive as ::ffff:a.b.c.d;
        // Go reports them as a.b.c.d, and so do we.
        let remote = SocketAddr::new(remote.ip().to_canonical(), remote.port());
        let remote_ip = ip_header_value(remote.ip());
        Self {
            remote,
            remote_ip,
            tls,
            client_cert: None,
            client_cert_header: None,
        }
    }

    /// The same connection, with the client's verified leaf certificate (DER).
    pub fn with_client_cert(mut self, der: bytes::Bytes) -> Self {
        let leaf = rustls_pki_types::CertificateDer::from(der.as_ref());
        self.client_cert_header = Some(crate::tls::xfcc_value(&leaf));
        self.client_cert = Some(der);
        self
    }
}

/// An IP address as a header value. IPv4 is written digit by digit: every client connection
/// makes one, and `to_string` through the formatter cost more than the rest of
/// [`ClientConn::new`] together.
fn ip_header_value(ip: std::net::IpAddr) -> HeaderValue {
    let std::net::IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string()).unwrap_or(HeaderValue::from_static("-"));
    };
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            text[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            text[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        text[len] = b'0' + octet % 10;
        len += 1;
    }
    HeaderValue::from_bytes(&text[..len]).unwrap_or(HeaderValue::from_static("-"))
}

/// The proxy's shared state.
pub struct Proxy {
    pub table: Arc<RouteTable>,
    pub settings: ProxySettings,
    pub health: Arc<Health>,
    pub access_log: Option<AccessLog>,
    pub transport: Transport,
    /// Route services, when `route_services_secret` enables them.
    pub route_services: Option<RouteServiceProxying>,
    /// `html_error_template_file`, parsed at start.
    pub error_page: Option<ErrorPage>,
    /// `http_rewrite.responses`.
    pub response_rewrite: ResponseRewrite,
    /// What `/metrics` shows of requests; `None` without `prometheus.port`.
    pub metrics: Option<Arc<RouterMetrics>>,
}

fn proto_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    }
}

/// The request target as the client sent it (origin-form), for the backend and the log.
fn request_target<B>(req: &Request<B>) -> &str {
    req.uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
}

impl Proxy {
    /// Handles one request: the stages in order, then the response rules every response gets
    /// (the error page, `http_rewrite`). Never fails: every problem becomes a router response.
    // Not an `async fn`: an async block keeps the arguments in one slot of the future, where
    // an `async fn` holds each argument twice (rustc #62958), and the request's future is
    // copied whole into hyper's connection for every request.
    #[allow(clippy::manual_async_fn)]
    pub fn handle(
        &self,
        conn: Arc<ClientConn>,
        req: Request<ClientBody>,
    ) -> impl Future<Output = Result<Response<ResponseBody>, std::convert::Infallible>> + Send + '_
    {
        async move {
            let websocket = self.metrics.is_some() && is_websocket_upgrade(req.headers());
            let Ok(mut resp) = self.route(conn, req).await;
            if let Some(metrics) = &self.metrics {
                metrics.answered(&resp, websocket);
            }
            if let Some(page) = &self.error_page {
                if let Some(ErrorPageMessage(message)) = resp.extensions_mut().remove() {
                    resp = render_error_page(page, resp, &message);
                }
            }
            self.response_rewrite.apply(resp.headers_mut());
            Ok(resp)
        }
    }

    /// The request path proper.
    // An async block, not an `async fn`, for the reason `handle` gives.
    #[allow(clippy::manual_async_fn)]
    fn route(
        &self,
        conn: Arc<ClientConn>,
        mut req: Request<ClientBody>,
    ) -> impl Future<Output = Result<Response<ResponseBody>, std::convert::Infallible>> + Send + '_
    {
        async move {
            let received = Received::now();
            let started = received.at;
            let s = &self.settings;

            if health_check::is_health_check(req.headers(), &s.healthcheck_user_agent) {
                return Ok(health_check::respond(&self.health).await);
            }
            // Request id and trace headers come first, so even router errors are logged with them.
            let request_id = trace::apply(req.headers_mut(), &s.trace);

            let host = match host::check(&req, &conn) {
                Ok(host) => host,
                Err((err, host)) => return Ok(self.refuse(err, &req, &conn, host, received)),
            };
            let app_instance = match app_instance::requested(req.headers()) {
                Ok(a) => a,
                Err(err) => return Ok(self.refuse(err, &req, &conn, host, received)),
            };
            // The lookup before the size check (A.4): an unknown route is 404 however large.
            let timed = self.metrics.as_ref().filter(|m| m.per_request());
            let lookup_started = timed.map(|_| Instant::now());
            let found = lookup::find_pool(
                &self.table,
                &host,
                req.uri().path(),
                s.empty_pool_response_code_503,
            );
            if let (Some(metrics), Some(at)) = (timed, lookup_started) {
                metrics.route_lookup(at.elapsed());
            }
            let pool = match found {
                Ok(pool) => pool,
                Err(err) => return Ok(self.refuse(err, &req, &conn, host, received)),
            };
            if let Err(err) = max_request_size::check(&req, &host, s.max_header_bytes) {
                return Ok(self.refuse(err, &req, &conn, host, received));
            }
            let websocket = is_websocket_upgrade(req.headers());
            let facts = route_service::RequestFacts {
                host: &host,
                target: request_target(&req),
                websocket,
            };
            let pass = route_service::decide(
                self.route_services.as_ref(),
                &self.table,
                &pool,
                req.headers(),
                &facts,
            );
            let pass = match pass {
                Ok(pass) => pass,
                Err(err) => return Ok(self.refuse(err, &req, &conn, host, received)),
            };
            if let route_service::Pass::Returned { .. } = pass {
                route_service::remove_protocol_headers(req.headers_mut());
            }
            let sticky_id = sticky::requested_instance(req.headers(), &s.sticky_cookie_names);

            let expect_continue = has_header(req.headers(), &header::EXPECT)
                && req
                    .headers()
                    .get(header::EXPECT)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
            let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));

            // The backend request's headers, built once for every attempt.
            let signed = pass.is_signed_traffic();
            forwarded::prepare(req.headers_mut(), &conn, s, signed, received.wall);
            client_cert::apply(
                req.headers_mut(),
                s.forwarded_client_cert,
                &conn,
                client_cert::RouteServiceTraffic {
                    signed,
                    returned: matches!(pass, route_service::Pass::Returned { .. }),
                },
            );
            forwarded::set_connection(
                req.headers_mut(),
                websocket,
                expect_continue || !s.keep_alive_to_backends,
            );
            let trace_requested = s
                .trace_key
                .as_ref()
                .is_some_and(|k| req.headers().get(&X_VCAP_TRACE) == Some(k));

            let mut log =
                access_log::open(self.access_log.as_ref(), &req, &conn, s, &host, received);
            let destination = match pass {
                route_service::Pass::ToRouteService(first) => {
                    route_service::prepare_first_pass(req.headers_mut(), &first);
                    if let Ok(target) = &first.route_service.target {
                        *req.uri_mut() = target.target.clone();
                    }
                    round_trip::Destination::RouteService(first)
                }
                _ => round_trip::Destination::Pool(pool),
            };
            let backend = backend_request(req, log.as_deref_mut(), expect_continue, client_upgrade);
            let ctx = RequestContext {
                started,
                host,
                request_id,
                app_instance,
                sticky_id,
                websocket,
                expect_continue,
                trace_requested,
                log,
            };
            Ok(round_trip::run(self, ctx, destination, backend).await)
        }
    }

    /// A router error before any backend was involved.
    fn refuse(
        &self,
        err: errors::RouterError,
        req: &Request<ClientBody>,
        conn: &ClientConn,
        host: String,
        received: Received,
    ) -> Response<ResponseBody> {
        let log = access_log::open(
            self.access_log.as_ref(),
            req,
            conn,
            &self.settings,
            &host,
            received,
        );
        err.into_response(log)
    }
}

/// A router error through `html_error_template_file` (Go's `html/template` data: status, its
/// text, the message and the response headers so far).
fn render_error_page(
    page: &ErrorPage,
    resp: Response<ResponseBody>,
    message: &str,
) -> Response<ResponseBody> {
    let (mut parts, body) = resp.into_parts();
    let html = page.render(parts.status, message, &parts.headers);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Response::from_parts(parts, body.replaced(bytes::Bytes::from(html)))
}

/// The client's request turned into the backend's: HTTP/1.1, origin-form target byte for byte,
/// the body counted for the access log and, for `Expect: 100-continue`, held back until the
/// backend asks for it (its 100 Continue, which makes hyper send the client one) or a second
/// has passed: a backend that answers right away (e.g. 405) is relayed without the body.
fn backend_request(
    req: Request<ClientBody>,
    log: Option<&mut body::PendingLog>,
    expect_continue: bool,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> BackendRequest {
    let (mut parts, incoming) = req.into_parts();
    // The host routed on goes on as `Host` (Go's `outreq.Host = req.Host`): an HTTP/2 client
    // names it in `:authority` only, and an absolute-form target's host wins over the header.
    if let Some(a) = parts.uri.authority() {
        let differs = parts
            .headers
            .get(header::HOST)
            .is_none_or(|h| h.as_bytes() != a.as_str().as_bytes());
        if differs {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                parts.headers.insert(header::HOST, v);
            }
        }
    }
    parts.version = Version::HTTP_11;
    if parts.uri.scheme().is_some() {
        if let Some(pq) = parts.uri.path_and_query() {
            if let Ok(uri) = pq.as_str().parse() {
                parts.uri = uri;
            }
        }
    }
    // Counted only when there is a body: a body-less request's count is 0 without a counter.
    let counter = incoming
        .is_some()
        .then(|| log.map(|l| l.request_bytes.insert(Arc::default()).clone()))
        .flatten();
    let mut body = RequestBody::new(incoming, counter);
    let continue_gate = expect_continue.then(ContinueGate::new);
    if let Some(gate) = &continue_gate {
        body = body.gated(gate.clone());
    }
    let mut request = Request::from_parts(parts, body);
    if let Some(gate) = &continue_gate {
        let gate = gate.clone();
        hyper::ext::on_informational(&mut request, move |res| {
            if res.status() == StatusCode::CONTINUE {
                gate.open();
            }
        });
    }
    BackendRequest {
        request,
        client_upgrade,
        continue_gate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ips_read_as_their_display_form() {
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.5",
            "1.20.100.9",
            "192.168.10.199",
            "::1",
            "2001:db8::7",
        ] {
            let parsed: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(ip_header_value(parsed), ip);
        }
    }

    #[test]
    fn an_ipv4_client_on_a_dual_stack_listener_reads_as_ipv4() {
        let conn = ClientConn::new("[::ffff:10.1.2.3]:5000".parse().unwrap(), false);
        assert_eq!(conn.remote_ip, "10.1.2.3");
    }
}
