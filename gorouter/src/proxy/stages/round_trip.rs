//! The proxy round trip (A.6): up to `max_attempts` tries, each choosing an endpoint,
//! getting a connection from the transport and sending the request. Dial errors, TLS
//! handshake failures and requests that never left move on to the next endpoint (a TLS
//! endpoint that fails to dial or handshake is removed from its pool); a request lost on the
//! wire (a stale keep-alive connection, or a fresh one the backend reset or closed without
//! answering) is sent again when it is safe to repeat, and a backend that resets is skipped
//! for a while. The instance `X-CF-App-Instance` names gets one attempt. The first response
//! wins; when none comes, the last failure decides the answer (A.5).

use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderName};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::upgrade::OnUpgrade;

use super::route_service::FirstPass;
use super::{forwarded, response, sticky, websocket};
use crate::access_log::LoggedBackend;
use crate::balancer::{self, Choice, InFlight, NoEndpoint, Preferred};
use crate::proxy::body::{
    BackendBody, ContinueGate, Exchange, PendingLog, RequestBody, ResponseBody,
};
use crate::proxy::context::RequestContext;
use crate::proxy::errors::RouterError;
use crate::proxy::transport::inline::{self, InlineBody};
use crate::proxy::transport::{self, ConnectError, Sender, Transport};
use crate::proxy::Proxy;
use crate::registry::{Endpoint, Pool};
use crate::tls::backend::{BackendTlsError, BackendTlsErrorKind};

/// The failure the request is answered with if no attempt succeeds.
enum LastFailure {
    Plain(String),
    Tls(BackendTlsError),
}

impl LastFailure {
    fn into_error(self) -> RouterError {
        match self {
            LastFailure::Plain(cause) => RouterError::EndpointFailure { cause },
            LastFailure::Tls(e) => RouterError::EndpointTlsFailure(e),
        }
    }
}

/// Records a failed dial or handshake against the endpoint (A.6): marked failed, and a TLS
/// endpoint removed from its pool at once.
fn endpoint_failed(proxy: &Proxy, pool: &Pool, endpoint: &Arc<Endpoint>, err: &ConnectError) {
    let (marks, prunes) = match err {
        ConnectError::Dial(_) => (true, endpoint.tls),
        ConnectError::Tls(e) => (e.marks_endpoint_failed(), e.prunes_endpoint()),
        ConnectError::Http(_) => (true, false),
    };
    if let (Some(metrics), ConnectError::Tls(e)) = (&proxy.metrics, err) {
        metrics.backend_tls_failed(e.kind());
    }
    if marks {
        balancer::mark_failed(endpoint, proxy.table.now_ms());
    }
    if prunes && proxy.table.remove_failed_endpoint(pool, endpoint) {
        tracing::info!(endpoint = %endpoint.addr(), error = %err, "prune-failed-endpoint");
    }
}

/// Records a TLS failure that surfaced after the handshake (A.5, A.6), as a failed handshake
/// is recorded.
fn tls_failed_after_handshake(
    proxy: &Proxy,
    pool: Option<&Arc<Pool>>,
    endpoint: &Arc<Endpoint>,
    tls: &BackendTlsError,
) {
    let err = ConnectError::Tls(tls.clone());
    tracing::warn!(endpoint = %endpoint.addr(), error = %err, "backend-tls-failed");
    if let Some(pool) = pool {
        endpoint_failed(proxy, pool, endpoint, &err);
    }
}

/// The answer to a request that failed on the wire and is not sent again. `reset`: the backend
/// reset a connection that had not sat idle in the pool, which is its doing (A.6).
fn request_failed(
    proxy: &Proxy,
    endpoint: &Arc<Endpoint>,
    cause: String,
    reset: bool,
    log: Option<Box<PendingLog>>,
) -> Response<ResponseBody> {
    tracing::warn!(endpoint = %endpoint.addr(), error = %cause, "backend-request-failed");
    if reset {
        balancer::mark_failed(endpoint, proxy.table.now_ms());
    }
    RouterError::EndpointFailure { cause }.into_response(log)
}

/// The answer when no response head came within `endpoint_timeout`.
fn timed_out(endpoint: &Endpoint, log: Option<Box<PendingLog>>) -> Response<ResponseBody> {
    tracing::warn!(endpoint = %endpoint.addr(), "backend-timeout");
    RouterError::EndpointFailure {
        cause: "context deadline exceeded".into(),
    }
    .into_response(log)
}

/// A TLS failure surfacing after the handshake: under TLS 1.3 a backend rejects our client
/// certificate with an alert the first read sees.
fn tls_failure_in(err: &hyper::Error) -> Option<BackendTlsError> {
    tls_failure_of(io_error_in(err)?)
}

/// The TLS failure an I/O error on a TLS connection is, if it is one.
fn tls_failure_of(io: &std::io::Error) -> Option<BackendTlsError> {
    let classified = BackendTlsError::classify(io);
    (classified.kind() != BackendTlsErrorKind::Other).then_some(classified)
}

/// Readies the request for the connection's protocol: HTTP/2 wants an absolute URI (its
/// `:authority` from Host) and no connection-specific headers; HTTP/1.1 the origin form.
fn fit_to_protocol(req: &mut Request<RequestBody>, http2: bool, origin: &Uri) {
    if http2 {
        let authority = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let pq = origin.path_and_query().map_or("/", |p| p.as_str());
        if let Ok(uri) = Uri::builder()
            .scheme("https")
            .authority(authority)
            .path_and_query(pq)
            .build()
        {
            *req.uri_mut() = uri;
        }
        *req.version_mut() = Version::HTTP_2;
        let h = req.headers_mut();
        for name in [
            header::CONNECTION,
            header::TRANSFER_ENCODING,
            header::UPGRADE,
        ] {
            h.remove(name);
        }
        for name in ["keep-alive", "proxy-connection"] {
            h.remove(HeaderName::from_static(name));
        }
    } else if req.version() == Version::HTTP_2 {
        *req.uri_mut() = origin.clone();
        *req.version_mut() = Version::HTTP_11;
    }
}

/// Where the request goes: the route's endpoints, or (first pass) its route service.
pub enum Destination {
    Pool(Arc<Pool>),
    RouteService(FirstPass),
}

/// What the attempt loop sends to: the pool's endpoints through the backend transport, or a
/// route service, one endpoint tried up to `route_services.max_attempts` times through its
/// own transport.
enum Upstream<'a> {
    Pool(Arc<Pool>),
    RouteService {
        endpoint: Arc<Endpoint>,
        transport: &'a Transport,
    },
}

impl Upstream<'_> {
    /// The route's pool; `None` for a route service, whose endpoint no pool holds.
    fn pool(&self) -> Option<&Arc<Pool>> {
        match self {
            Upstream::Pool(pool) => Some(pool),
            Upstream::RouteService { .. } => None,
        }
    }
}

/// The request as it goes to backends, with what the exchange needs besides it.
pub struct BackendRequest {
    pub request: Request<RequestBody>,
    /// The client's side of a websocket upgrade.
    pub client_upgrade: Option<OnUpgrade>,
    pub continue_gate: Option<Arc<ContinueGate>>,
}

/// Sends the request to the pool's endpoints (or its route service) until one answers or the
/// attempts run out.
// Not an `async fn`: an async block keeps the arguments in one slot of the future (an
// `async fn` holds each twice, rustc #62958), and this future is part of every request's.
#[allow(clippy::manual_async_fn)]
pub fn run<'a>(
    proxy: &'a Proxy,
    mut ctx: RequestContext,
    destination: Destination,
    backend: BackendRequest,
) -> impl std::future::Future<Output = Response<ResponseBody>> + Send + 'a {
    async move {
        let s = &proxy.settings;
        let (upstream, attempts) = match destination {
            Destination::Pool(pool) => {
                // The instance `X-CF-App-Instance` names is the only candidate: one attempt, as
                // upstream's one-endpoint pool for it gets.
                let attempts = if ctx.app_instance.is_some() {
                    1
                } else {
                    s.max_attempts.min(pool.endpoints().len()).max(1)
                };
                (Upstream::Pool(pool), attempts)
            }
            Destination::RouteService(first) => {
                let Some(rs) = proxy.route_services.as_ref() else {
                    return RouterError::RouteServiceUnsupported.into_response(ctx.log);
                };
                let upstream = match (&rs.hairpin, first.hairpin, &first.route_service.target) {
                    (Some(h), true, _) => Upstream::RouteService {
                        endpoint: h.endpoint.clone(),
                        transport: &h.transport,
                    },
                    (_, _, Ok(target)) => Upstream::RouteService {
                        endpoint: target.endpoint.clone(),
                        transport: &rs.transport,
                    },
                    (_, _, Err(_)) => {
                        return RouterError::RouteServiceRequestFailed.into_response(ctx.log)
                    }
                };
                (upstream, rs.services.max_attempts)
            }
        };
        let transport = match &upstream {
            Upstream::Pool(_) => &proxy.transport,
            Upstream::RouteService { transport, .. } => *transport,
        };
        let BackendRequest {
            request,
            client_upgrade,
            continue_gate,
        } = backend;
        let websocket = ctx.websocket;
        let fresh_connection_only = websocket || ctx.expect_continue;
        let origin = request.uri().clone();
        let mut backend_req = Some(request);
        let mut last_error = LastFailure::Plain("no endpoint tried".into());
        let mut tried = 0;
        while tried < attempts {
            tried += 1;
            let chosen = match &upstream {
                Upstream::Pool(pool) => {
                    let choice = Choice {
                        max_conns: s.max_conns,
                        retry_after_failure_ms: s.retry_after_failure.as_millis() as u64,
                        now_ms: proxy.table.now_ms(),
                        preferred: match (&ctx.app_instance, &ctx.sticky_id) {
                            (Some((app, index)), _) => Some(Preferred::AppInstance { app, index }),
                            (None, Some(id)) if tried == 1 => Some(Preferred::Sticky(id)),
                            _ => None,
                        },
                    };
                    balancer::choose(pool, &choice)
                }
                Upstream::RouteService { endpoint, .. } => Ok(endpoint.clone()),
            };
            let endpoint = match chosen {
                Ok(e) => e,
                Err(NoEndpoint::AllOverloaded) => {
                    let host = std::mem::take(&mut ctx.host);
                    return RouterError::ConnectionLimitReached { host }.into_response(ctx.log);
                }
                Err(NoEndpoint::InstanceGone) => {
                    let (guid, index) = ctx.app_instance.take().unwrap_or_default();
                    let host = std::mem::take(&mut ctx.host);
                    let err = RouterError::UnknownInstance { host, guid, index };
                    return err.into_response(ctx.log);
                }
                Err(NoEndpoint::Empty) => {
                    let host = std::mem::take(&mut ctx.host);
                    return RouterError::NoEndpoints { host }.into_response(ctx.log);
                }
            };
            let Some(mut req) = backend_req.take() else {
                break;
            };
            let pool = upstream.pool();
            if pool.is_some() {
                forwarded::set_endpoint_headers(req.headers_mut(), &endpoint);
            }
            if let Some(l) = ctx.log.as_mut() {
                l.record.backend = Some(LoggedBackend {
                    endpoint: endpoint.clone(),
                    app: pool.is_some(),
                });
            }
            let in_flight = pool.and_then(|p| InFlight::when_counted(p, &endpoint, s.max_conns));

            let keep = s.keep_alive_to_backends && !fresh_connection_only;
            // A body-less request goes inline, without hyper's client, on an HTTP/1.1 connection.
            let inline = !fresh_connection_only && inline::can_send(&req);
            let idle = keep.then(|| transport.pool(&endpoint));
            // One reading for the pool's idle check and, on a pooled connection, the backend
            // request's start (`reused_at`).
            let (pooled, reused_at) = match &idle {
                Some(idle) => {
                    let now = Instant::now();
                    let taken = idle.take(now);
                    let reused_at = taken.is_some().then_some(now);
                    (taken, reused_at)
                }
                None => (None, None),
            };
            let reused = reused_at.is_some();
            let sender = match pooled {
                Some(Sender::Inline(conn)) if !inline => {
                    match transport::inline_to_hyper(*conn, &endpoint).await {
                        Ok(sndr) => sndr,
                        Err(e) => {
                            // The connection was idle and sound a moment ago: no fault of the
                            // endpoint's; dial instead.
                            tracing::debug!(endpoint = %endpoint.addr(), error = %e, "inline-connection-handover-failed");
                            backend_req = Some(req);
                            tried -= 1;
                            continue;
                        }
                    }
                }
                Some(sndr) => sndr,
                None => {
                    let timeout = if websocket {
                        s.websocket_dial_timeout
                    } else {
                        s.endpoint_dial_timeout
                    };
                    // Boxed: the dial future holds a whole TLS handshake (kilobytes); kept inline
                    // it would make every request's future that big, and moving it costs on the
                    // keep-alive path, where nothing is dialled.
                    let dial = Box::pin(transport.connect(
                        &endpoint,
                        timeout,
                        websocket,
                        idle.as_deref(),
                        inline,
                    ));
                    match dial.await {
                        Ok(sndr) => sndr,
                        Err(e) => {
                            tracing::warn!(endpoint = %endpoint.addr(), error = %e, "backend-dial-failed");
                            if let Some(pool) = pool {
                                endpoint_failed(proxy, pool, &endpoint, &e);
                            }
                            last_error = match e {
                                ConnectError::Tls(tls) => LastFailure::Tls(tls),
                                other => LastFailure::Plain(other.to_string()),
                            };
                            backend_req = Some(req);
                            continue;
                        }
                    }
                }
            };

            fit_to_protocol(&mut req, sender.is_http2(), &origin);
            // Only a pooled HTTP/1.1 connection the backend may have closed while it sat idle
            // gets a retry free of charge (each is taken out of the pool, so this is bounded);
            // the shared HTTP/2 connection would be handed out again, so its failures count.
            let free_retry = reused && !sender.is_http2();
            if let Some(l) = ctx.log.as_mut() {
                // After a dial, the request starts now.
                l.backend_started = Some(reused_at.unwrap_or_else(Instant::now));
            }
            let may_retry = free_retry || tried < attempts;
            let (mut resp, connection) = match sender {
                Sender::Inline(mut conn) => {
                    let result =
                        tokio::time::timeout(s.endpoint_timeout, conn.send(&mut req)).await;
                    match result {
                        Ok(Ok(head)) => {
                            let body = InlineBody::new(conn, &head, idle);
                            let (parts, ()) = head.response.into_parts();
                            (Response::from_parts(parts, BackendBody::Inline(body)), None)
                        }
                        Ok(Err(e)) => {
                            let tls_failure = endpoint
                                .tls
                                .then(|| e.io().and_then(tls_failure_of))
                                .flatten();
                            if let Some(tls) = tls_failure {
                                tls_failed_after_handshake(proxy, pool, &endpoint, &tls);
                                let again = e.sent_nothing() || (may_retry && replayable(&req));
                                if again && tls.is_retriable() {
                                    backend_req = Some(req);
                                    last_error = LastFailure::Tls(tls);
                                    continue;
                                }
                                return RouterError::EndpointTlsFailure(tls).into_response(ctx.log);
                            }
                            let text = e.to_string();
                            last_error = LastFailure::Plain(text.clone());
                            // Never sent, or lost on the wire and safe to repeat (A.6): the
                            // request is still here to send again.
                            let again = e.sent_nothing()
                                || (may_retry
                                    && replayable(&req)
                                    && (free_retry || e.lost_on_the_wire()));
                            if again {
                                if free_retry {
                                    // A stale keep-alive connection: free, and it is gone now.
                                    tracing::debug!(endpoint = %endpoint.addr(), error = %text, "stale-keep-alive-retry");
                                    tried -= 1;
                                } else {
                                    tracing::warn!(endpoint = %endpoint.addr(), error = %text, "backend-request-failed-retrying");
                                    balancer::mark_failed(&endpoint, proxy.table.now_ms());
                                }
                                backend_req = Some(req);
                                continue;
                            }
                            let reset = !free_retry && e.is_reset();
                            return request_failed(proxy, &endpoint, text, reset, ctx.log);
                        }
                        Err(_) => return timed_out(&endpoint, ctx.log),
                    }
                }
                mut sender => {
                    // Inline connections took the arm above.
                    let Some(hyper_sender) = sender.hyper() else {
                        return RouterError::EndpointFailure {
                            cause: "no connection".into(),
                        }
                        .into_response(ctx.log);
                    };
                    // A request lost on the wire (a keep-alive connection the backend closed just
                    // as we sent on it, a backend that reset or closed a fresh connection without
                    // answering, a TLS client certificate rejected at the first read) is sent
                    // again when it has no body and is safe to repeat (A.6). The copy costs an
                    // allocation, so only when another attempt can follow.
                    let replay = (may_retry && replayable(&req)).then(|| Replay::of(&req));
                    let send = hyper_sender.try_send_request(req);
                    let result = if websocket {
                        Ok(send.await)
                    } else {
                        tokio::time::timeout(s.endpoint_timeout, send).await
                    };
                    let resp = match result {
                        Ok(Ok(resp)) => resp,
                        Ok(Err(mut e)) => {
                            let text = e.error().to_string();
                            let tls_failure =
                                endpoint.tls.then(|| tls_failure_in(e.error())).flatten();
                            if let Some(tls) = tls_failure {
                                tls_failed_after_handshake(proxy, pool, &endpoint, &tls);
                                let again = e
                                    .take_message()
                                    .or_else(|| replay.map(Replay::into_request));
                                match again {
                                    Some(r) if tls.is_retriable() => {
                                        backend_req = Some(r);
                                        last_error = LastFailure::Tls(tls);
                                        continue;
                                    }
                                    _ => {
                                        return RouterError::EndpointTlsFailure(tls)
                                            .into_response(ctx.log)
                                    }
                                }
                            }
                            match e.take_message() {
                                // Never sent: safe to try again, on a fresh connection if this
                                // one was a stale keep-alive connection.
                                Some(r) => {
                                    backend_req = Some(r);
                                    last_error = LastFailure::Plain(text);
                                    if free_retry {
                                        tried -= 1;
                                    } else {
                                        balancer::mark_failed(&endpoint, proxy.table.now_ms());
                                    }
                                    continue;
                                }
                                None if replay.is_some()
                                    && (free_retry || lost_on_the_wire(e.error())) =>
                                {
                                    backend_req = replay.map(Replay::into_request);
                                    if free_retry {
                                        // A stale keep-alive connection: free, and it is gone now.
                                        tracing::debug!(endpoint = %endpoint.addr(), "stale-keep-alive-retry");
                                        tried -= 1;
                                    } else {
                                        // A fresh connection reset or closed unanswered: an
                                        // attempt spent, the next endpoint tried, this one
                                        // skipped for a while (A.6).
                                        tracing::warn!(endpoint = %endpoint.addr(), error = %text, "backend-request-failed-retrying");
                                        balancer::mark_failed(&endpoint, proxy.table.now_ms());
                                    }
                                    last_error = LastFailure::Plain(text);
                                    continue;
                                }
                                None => {
                                    let reset = !free_retry && connection_reset(e.error());
                                    return request_failed(proxy, &endpoint, text, reset, ctx.log);
                                }
                            }
                        }
                        Err(_) => return timed_out(&endpoint, ctx.log),
                    };
                    let connection = idle.map(|idle| (sender, idle));
                    (resp.map(BackendBody::Hyper), connection)
                }
            };

            // The response from the backend.
            let status = resp.status();
            if let Some(metrics) = &proxy.metrics {
                match pool {
                    Some(_) => metrics.routed(&endpoint, ctx.started.elapsed()),
                    None => metrics.route_service_answered(status),
                }
            }
            let upgraded = status == StatusCode::SWITCHING_PROTOCOLS;
            if upgraded {
                if let Some(client_upgrade) = client_upgrade {
                    websocket::splice(client_upgrade, hyper::upgrade::on(&mut resp));
                }
            }
            let rules = response::ResponseRules {
                request_id: &ctx.request_id,
                trace_requested: ctx.trace_requested,
                upgraded,
            };
            response::apply(resp.headers_mut(), &rules, &endpoint, s);
            // Never on a route service's response (A.8).
            if let Some(pool) = pool {
                sticky::set_vcap_cookie(
                    resp.headers_mut(),
                    &endpoint,
                    pool,
                    ctx.sticky_id.as_deref(),
                    &s.sticky_cookie_names,
                    s.secure_cookies,
                );
            }
            if let Some(l) = ctx.log.as_mut() {
                l.record.status = status.as_u16();
            }
            let exchange = Exchange {
                in_flight,
                connection,
                log: ctx.log,
                response_bytes: 0,
                completed: false,
                continue_gate: continue_gate.clone(),
                ended_at: None,
            };
            let (mut parts, backend_body) = resp.into_parts();
            // Answer in the client's protocol (hyper downgrades for HTTP/1.0 clients).
            parts.version = Version::HTTP_11;
            // From the request's start, without reading the clock (`sleep` would, twice).
            let deadline =
                (!websocket).then(|| match ctx.started.checked_add(s.endpoint_timeout) {
                    Some(at) => tokio::time::sleep_until(at.into()),
                    None => tokio::time::sleep(s.endpoint_timeout),
                });
            return Response::from_parts(
                parts,
                ResponseBody::backend(backend_body, deadline, exchange),
            );
        }
        last_error.into_error().into_response(ctx.log)
    }
}

/// The I/O error under a hyper error, if any.
fn io_error_in(err: &hyper::Error) -> Option<&std::io::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        source = e.source();
    }
    None
}

/// Whether the backend reset the connection ("connection reset by peer", A.6).
fn connection_reset(err: &hyper::Error) -> bool {
    io_error_in(err).is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionReset)
}

/// Whether the connection broke before any response came: reset, aborted, or closed (Go's
/// `io.EOF`). A response that arrived malformed or too slowly is not lost on the wire.
fn lost_on_the_wire(err: &hyper::Error) -> bool {
    use std::io::ErrorKind;
    err.is_incomplete_message()
        || io_error_in(err).is_some_and(|io| {
            matches!(
                io.kind(),
                ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
                    | ErrorKind::UnexpectedEof
            )
        })
}

/// What it takes to send a body-less request again after it was lost on the wire.
struct Replay {
    method: http::Method,
    uri: Uri,
    headers: http::HeaderMap,
}

impl Replay {
    fn of(req: &Request<RequestBody>) -> Self {
        Self {
            method: req.method().clone(),
            uri: req.uri().clone(),
            headers: req.headers().clone(),
        }
    }

    fn into_request(self) -> Request<RequestBody> {
        let mut r = Request::new(RequestBody::empty());
        *r.method_mut() = self.method;
        *r.uri_mut() = self.uri;
        *r.headers_mut() = self.headers;
        r
    }
}

/// Whether a request may be sent again after it was lost on the wire: no body, and a method
/// that is safe to repeat or an idempotency key (A.6).
fn replayable(req: &Request<RequestBody>) -> bool {
    use http::Method;
    let idempotent = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) || req.headers().contains_key("idempotency-key")
        || req.headers().contains_key("x-idempotency-key");
    idempotent && http_body::Body::is_end_stream(req.body())
}
