//! The proxy: the request pipeline from a client request to a backend response (A.4-A.8).
//!
//! Order of the pipeline: load-balancer health check, Host checks, `X-CF-App-Instance`
//! syntax, header size, route lookup, backend request headers, then up to `max_attempts`
//! tries (dial errors and requests never sent move on to the next endpoint), response headers
//! and sticky cookies. Bodies stream both ways; nothing is buffered whole.

pub mod backend;
pub mod body;
pub mod errors;
pub mod headers;
pub mod listener;
mod sticky;
pub mod trace;
mod upgrade;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use crate::access_log::{AccessLog, AccessLogRecord};
use crate::balancer::{self, Choice, InFlight, NoEndpoint, Preferred};
use crate::config::{Config, ForwardedClientCert};
use crate::registry::{Endpoint, RouteTable};
use crate::status::{health_response, Health};

use body::{ContinueGate, Exchange, PendingLog, RequestBody, ResponseBody};
use errors::RouterError;
use headers::*;

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
}

impl ClientConn {
    pub fn new(remote: SocketAddr, tls: bool) -> Self {
        // On an all-interfaces (dual-stack) listener IPv4 clients arrive as ::ffff:a.b.c.d;
        // Go reports them as a.b.c.d, and so do we.
        let remote = SocketAddr::new(remote.ip().to_canonical(), remote.port());
        let remote_ip = HeaderValue::from_str(&remote.ip().to_string())
            .unwrap_or(HeaderValue::from_static("-"));
        Self {
            remote,
            remote_ip,
            tls,
        }
    }
}

/// The proxy's shared state.
pub struct Proxy {
    pub table: Arc<RouteTable>,
    pub settings: ProxySettings,
    pub health: Arc<Health>,
    pub access_log: Option<AccessLog>,
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
fn request_target(req: &Request<Incoming>) -> &str {
    req.uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
}

impl Proxy {
    /// Handles one request. Never fails: every problem becomes a router response.
    pub async fn handle(
        self: Arc<Self>,
        conn: Arc<ClientConn>,
        mut req: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, std::convert::Infallible> {
        let started = Instant::now();
        let s = &self.settings;

        // Go's `Header.Get("User-Agent") == healthcheck_user_agent`: with an empty setting, a
        // request without a user agent is a health check too (upstream's documented behaviour).
        let user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .map_or(&b""[..], HeaderValue::as_bytes);
        if user_agent == s.healthcheck_user_agent.as_bytes() {
            let (parts, body) = health_response(&self.health).into_parts();
            let bytes = http_body_util::BodyExt::collect(body)
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            return Ok(Response::from_parts(parts, ResponseBody::full(bytes)));
        }

        // Request id and trace headers come first, so even router errors are logged with them.
        let request_id = trace::apply(req.headers_mut(), &s.trace);

        // Host: the header, or the authority of an absolute-form target.
        let host: String = match req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
        {
            Some(h) => h,
            None if req.version() == Version::HTTP_11
                && !req.headers().contains_key(header::HOST) =>
            {
                return Ok(self.reject(
                    RouterError::MissingHost,
                    &req,
                    &conn,
                    String::new(),
                    started,
                ));
            }
            None => String::new(),
        };
        let host_no_port = host.split(':').next().unwrap_or("");
        if host_no_port.is_empty() || host_no_port.as_bytes() == conn.remote_ip.as_bytes() {
            return Ok(self.reject(RouterError::EmptyHost, &req, &conn, host, started));
        }

        let app_instance = match req.headers().get(&X_CF_APP_INSTANCE) {
            Some(v) => match parse_app_instance(v) {
                Some((g, i)) => Some((g.to_string(), i.to_string())),
                None => {
                    return Ok(self.reject(
                        RouterError::InvalidAppInstanceHeader,
                        &req,
                        &conn,
                        host,
                        started,
                    ))
                }
            },
            None => None,
        };

        let size = request_header_size(
            req.method().as_str(),
            request_target(&req),
            proto_str(req.version()),
            req.headers(),
            &host,
        );
        if size >= s.max_header_bytes {
            return Ok(self.reject(RouterError::HeadersTooLarge, &req, &conn, host, started));
        }

        let Some(pool) = self.table.lookup(&host, req.uri().path()) else {
            let err = RouterError::UnknownRoute { host: host.clone() };
            return Ok(self.reject(err, &req, &conn, host, started));
        };
        if pool.is_empty() {
            let err = if s.empty_pool_response_code_503 {
                RouterError::NoEndpoints { host: host.clone() }
            } else {
                RouterError::UnknownRoute { host: host.clone() }
            };
            return Ok(self.reject(err, &req, &conn, host, started));
        }

        // Sticky session: a sticky cookie plus __VCAP_ID__ names the instance to try first.
        let sticky_id = if s
            .sticky_cookie_names
            .iter()
            .any(|n| request_cookie(req.headers(), n).is_some())
        {
            request_cookie(req.headers(), sticky::VCAP_ID).map(str::to_string)
        } else {
            None
        };

        let websocket = is_websocket_upgrade(req.headers());
        let expect_continue = req
            .headers()
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));

        // Backend request headers, built once for every attempt.
        let request_start = req.headers().contains_key(&X_REQUEST_START);
        {
            let h = req.headers_mut();
            remove_hop_by_hop(h, &s.hop_by_hop_keep);
            append_forwarded_for(h, &conn.remote_ip);
            set_forwarded_proto(
                h,
                s.force_forwarded_proto_https,
                s.sanitize_forwarded_proto,
                conn.tls,
            );
            if !request_start {
                let ms = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                h.insert(X_REQUEST_START.clone(), HeaderValue::from(ms));
            }
            h.remove(&X_CF_APP_INSTANCE);
            if s.forwarded_client_cert != ForwardedClientCert::AlwaysForward && !conn.tls {
                h.remove(&X_FORWARDED_CLIENT_CERT);
            }
            if websocket {
                h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
                h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            } else if expect_continue || !s.keep_alive_to_backends {
                // Upstream closes 100-continue exchanges; Go's transport says `close` on
                // every request when keep-alives are disabled.
                h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
        }
        let trace_requested = s
            .trace_key
            .as_ref()
            .is_some_and(|k| req.headers().get(&X_VCAP_TRACE) == Some(k));

        let mut log = self.pending_log(&req, &conn, host.clone(), started);
        let request_bytes = log.as_ref().map(|l| l.request_bytes.clone());

        let (mut parts, incoming) = req.into_parts();
        parts.version = Version::HTTP_11;
        // Only the request target goes to the backend, byte for byte.
        if parts.uri.scheme().is_some() {
            if let Some(pq) = parts.uri.path_and_query() {
                if let Ok(uri) = pq.as_str().parse() {
                    parts.uri = uri;
                }
            }
        }
        let mut body = RequestBody::new(incoming, request_bytes);
        // Expect: 100-continue goes to the backend, and the body only once it asks for it
        // (its 100 Continue, which makes hyper send the client one) or a second has passed:
        // a backend that answers right away (e.g. 405) is relayed without the body.
        let continue_gate = expect_continue.then(ContinueGate::new);
        if let Some(gate) = &continue_gate {
            body = body.gated(gate.clone());
        }
        let mut backend_req = Request::from_parts(parts, body);
        if let Some(gate) = &continue_gate {
            let gate = gate.clone();
            hyper::ext::on_informational(&mut backend_req, move |res| {
                if res.status() == StatusCode::CONTINUE {
                    gate.open();
                }
            });
        }
        let mut backend_req = Some(backend_req);

        let attempts = s.max_attempts.min(pool.endpoints().len()).max(1);
        let mut last_error = String::from("no endpoint tried");
        let mut tried = 0;
        while tried < attempts {
            tried += 1;
            let choice = Choice {
                max_conns: s.max_conns,
                retry_after_failure_ms: s.retry_after_failure.as_millis() as u64,
                now_ms: self.table.now_ms(),
                preferred: match (&app_instance, &sticky_id) {
                    (Some((app, index)), _) => Some(Preferred::AppInstance { app, index }),
                    (None, Some(id)) if tried == 1 => Some(Preferred::Sticky(id)),
                    _ => None,
                },
            };
            let endpoint = match balancer::choose(&pool, &choice) {
                Ok(e) => e,
                Err(NoEndpoint::AllOverloaded) => {
                    return Ok(self.finish_error(RouterError::ConnectionLimitReached { host }, log));
                }
                Err(NoEndpoint::InstanceGone) => {
                    let (guid, index) = app_instance.unwrap_or_default();
                    let err = RouterError::UnknownInstance { host, guid, index };
                    return Ok(self.finish_error(err, log));
                }
                Err(NoEndpoint::Empty) => {
                    return Ok(self.finish_error(RouterError::NoEndpoints { host }, log));
                }
            };
            let Some(mut req) = backend_req.take() else {
                break;
            };
            set_endpoint_headers(req.headers_mut(), &endpoint);
            if let Some(l) = log.as_mut() {
                l.record.backend_addr = Some(endpoint.addr.clone());
                l.record.app_id = Some(endpoint.app_id.clone());
                l.record.app_index = Some(endpoint.private_instance_index.clone());
                l.record.instance_id = Some(endpoint.private_instance_id.clone());
            }
            let in_flight = InFlight::new(endpoint.clone());

            let fresh_connection_only = websocket || expect_continue;
            let pooled = if fresh_connection_only || !s.keep_alive_to_backends {
                None
            } else {
                endpoint.idle.take().await
            };
            let reused = pooled.is_some();
            let mut sender = match pooled {
                Some(sndr) => sndr,
                None => {
                    let timeout = if websocket {
                        s.websocket_dial_timeout
                    } else {
                        s.endpoint_dial_timeout
                    };
                    match backend::connect(&endpoint, timeout, websocket).await {
                        Ok(sndr) => sndr,
                        Err(e) => {
                            balancer::mark_failed(&endpoint, self.table.now_ms());
                            tracing::warn!(endpoint = %endpoint.addr, error = %e.0, "backend-dial-failed");
                            last_error = e.0;
                            backend_req = Some(req);
                            continue;
                        }
                    }
                }
            };

            if let Some(l) = log.as_mut() {
                l.backend_started = Some(Instant::now());
            }
            // A keep-alive connection the backend closed just as we sent on it loses the
            // request; one without a body and safe to repeat is sent again (as Go does).
            let replay = (reused && replayable(&req)).then(|| {
                (
                    req.method().clone(),
                    req.uri().clone(),
                    req.headers().clone(),
                )
            });
            let send = sender.try_send_request(req);
            let result = if websocket {
                Ok(send.await)
            } else {
                tokio::time::timeout(s.endpoint_timeout, send).await
            };
            let mut resp = match result {
                Ok(Ok(resp)) => resp,
                Ok(Err(mut e)) => {
                    let text = e.error().to_string();
                    match e.take_message() {
                        // Never sent: safe to try again, on a fresh connection if this
                        // one was a stale keep-alive connection.
                        Some(r) => {
                            backend_req = Some(r);
                            last_error = text;
                            if reused {
                                tried -= 1;
                            } else {
                                balancer::mark_failed(&endpoint, self.table.now_ms());
                            }
                            continue;
                        }
                        None if replay.is_some() => {
                            if let Some((method, uri, headers)) = replay {
                                let mut r = Request::new(RequestBody::empty());
                                *r.method_mut() = method;
                                *r.uri_mut() = uri;
                                *r.headers_mut() = headers;
                                backend_req = Some(r);
                            }
                            tracing::debug!(endpoint = %endpoint.addr, error = %text, "stale-keep-alive-retry");
                            last_error = text;
                            tried -= 1;
                            continue;
                        }
                        None => {
                            tracing::warn!(endpoint = %endpoint.addr, error = %text, "backend-request-failed");
                            return Ok(self
                                .finish_error(RouterError::EndpointFailure { cause: text }, log));
                        }
                    }
                }
                Err(_) => {
                    tracing::warn!(endpoint = %endpoint.addr, "backend-timeout");
                    return Ok(self.finish_error(
                        RouterError::EndpointFailure {
                            cause: "context deadline exceeded".into(),
                        },
                        log,
                    ));
                }
            };

            // Response from the backend.
            let status = resp.status();
            if status == StatusCode::SWITCHING_PROTOCOLS {
                if let Some(client_upgrade) = client_upgrade {
                    upgrade::splice(client_upgrade, hyper::upgrade::on(&mut resp));
                }
            } else {
                remove_hop_by_hop(resp.headers_mut(), &[]);
            }
            let rh = resp.headers_mut();
            if !rh.contains_key(&X_VCAP_REQUEST_ID) {
                rh.insert(X_VCAP_REQUEST_ID.clone(), request_id.clone());
            }
            rh.remove(&X_CF_PROXY_SIGNATURE);
            if trace_requested {
                rh.insert(X_VCAP_ROUTER.clone(), s.router_ip.clone());
                if let Some(a) = &endpoint.addr_header {
                    rh.insert(X_VCAP_BACKEND.clone(), a.clone());
                    rh.insert(X_CF_ROUTE_ENDPOINT.clone(), a.clone());
                }
            }
            sticky::set_vcap_cookie(
                rh,
                &endpoint,
                &pool,
                sticky_id.as_deref(),
                &s.sticky_cookie_names,
                s.secure_cookies,
            );
            if let Some(l) = log.as_mut() {
                l.record.status = status.as_u16();
            }
            let keep = s.keep_alive_to_backends && !fresh_connection_only;
            let exchange = Exchange {
                in_flight: Some(in_flight),
                connection: keep.then(|| (sender, endpoint.idle.clone())),
                log,
                response_bytes: 0,
                completed: false,
                continue_gate: continue_gate.clone(),
            };
            let (mut parts, incoming) = resp.into_parts();
            // Answer in the client's protocol (hyper downgrades for HTTP/1.0 clients).
            parts.version = Version::HTTP_11;
            let deadline = (!websocket)
                .then(|| tokio::time::sleep(s.endpoint_timeout.saturating_sub(started.elapsed())));
            return Ok(Response::from_parts(
                parts,
                ResponseBody::backend(incoming, deadline, exchange),
            ));
        }
        Ok(self.finish_error(RouterError::EndpointFailure { cause: last_error }, log))
    }

    fn pending_log(
        &self,
        req: &Request<Incoming>,
        conn: &ClientConn,
        host: String,
        started: Instant,
    ) -> Option<PendingLog> {
        let sink = self.access_log.clone()?;
        let h = req.headers();
        let record = AccessLogRecord {
            host,
            received_at: Some(SystemTime::now() - started.elapsed()),
            method: req.method().as_str().to_string(),
            request_uri: request_target(req).to_string(),
            proto: proto_str(req.version()),
            referer: h.get(header::REFERER).cloned(),
            user_agent: h.get(header::USER_AGENT).cloned(),
            remote_addr: self.settings.log_source_ip.then_some(conn.remote),
            x_forwarded_for: if self.settings.log_forwarded_for {
                h.get(&X_FORWARDED_FOR).cloned()
            } else {
                None
            },
            x_forwarded_proto: h.get(&X_FORWARDED_PROTO).cloned(),
            vcap_request_id: h.get(&X_VCAP_REQUEST_ID).cloned(),
            extra_headers: self
                .settings
                .extra_headers_to_log
                .iter()
                .map(|n| (n.clone(), h.get(n.as_str()).cloned()))
                .collect(),
            ..Default::default()
        };
        Some(PendingLog {
            sink,
            record,
            started,
            request_bytes: Arc::new(AtomicU64::new(0)),
            backend_started: None,
            backend_finished: None,
        })
    }

    /// A router error before any backend was involved.
    fn reject(
        &self,
        err: RouterError,
        req: &Request<Incoming>,
        conn: &ClientConn,
        host: String,
        started: Instant,
    ) -> Response<ResponseBody> {
        let log = self.pending_log(req, conn, host, started);
        self.finish_error(err, log)
    }

    fn finish_error(
        &self,
        err: RouterError,
        mut log: Option<PendingLog>,
    ) -> Response<ResponseBody> {
        if let Some(l) = log.as_mut() {
            l.record.status = err.status().as_u16();
            l.record.router_error = err.router_error_value();
        }
        let (parts, body) = err.response().into_parts();
        let mut exchange = Exchange::default();
        exchange.log = log;
        Response::from_parts(parts, body.with_exchange(exchange))
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

/// `X-CF-ApplicationID`, `X-CF-InstanceIndex`, `X-CF-InstanceID` for the chosen endpoint;
/// values a client sent are never passed on.
fn set_endpoint_headers(h: &mut http::HeaderMap, e: &Endpoint) {
    for (name, value) in [
        (&X_CF_APPLICATION_ID, &e.app_id_header),
        (&X_CF_INSTANCE_INDEX, &e.instance_index_header),
        (&X_CF_INSTANCE_ID, &e.instance_id_header),
    ] {
        match value {
            Some(v) => {
                h.insert(name.clone(), v.clone());
            }
            None => {
                h.remove(name);
            }
        }
    }
}
