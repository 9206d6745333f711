//! Responses the router writes itself (A.5): exact status, `X-Cf-Routererror`, cache headers
//! and the plaintext body `"<code> <StatusText>: <message>\n"`.

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Response, StatusCode};

use super::body::{Exchange, PendingLog, ResponseBody};
use crate::tls::backend::BackendTlsError;

pub static X_CF_ROUTERERROR: HeaderName = HeaderName::from_static("x-cf-routererror");
const NO_CACHE: &str = "no-cache, no-store";
const MAX_AGE_2: &str = "public,max-age=2";

/// The message of an error upstream writes through its error writer (and so through
/// `html_error_template_file`), carried on the response for the page to be rendered with.
#[derive(Debug, Clone)]
pub struct ErrorPageMessage(pub String);

/// What Go's HTTP server finds wrong with a request's `Host` header before any handler runs
/// (in this order): its answer is a bare 400 with the reason in the status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostProblem {
    /// An HTTP/1.1 request without one.
    Missing,
    /// More than one `Host` header.
    TooMany,
    /// A byte outside Go's `validHostByte` set.
    Malformed,
}

impl HostProblem {
    /// Go's text for it, after `400 Bad Request: `.
    pub fn text(self) -> &'static str {
        match self {
            HostProblem::Missing => "missing required Host header",
            HostProblem::TooMany => "too many Host headers",
            HostProblem::Malformed => "malformed Host header",
        }
    }

    /// The status line's reason phrase.
    fn reason(self) -> &'static [u8] {
        match self {
            HostProblem::Missing => b"Bad Request: missing required Host header",
            HostProblem::TooMany => b"Bad Request: too many Host headers",
            HostProblem::Malformed => b"Bad Request: malformed Host header",
        }
    }
}

/// Why the router answered instead of a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterError {
    EmptyHost,
    BadHost(HostProblem),
    InvalidAppInstanceHeader,
    UnknownRoute {
        host: String,
    },
    UnknownInstance {
        host: String,
        guid: String,
        index: String,
    },
    NoEndpoints {
        host: String,
    },
    ConnectionLimitReached {
        host: String,
    },
    HeadersTooLarge,
    /// All attempts failed; the text is the last error, Go-style (`dial tcp …: connect: …`).
    EndpointFailure {
        cause: String,
    },
    /// The last attempt failed in the TLS handshake with a backend: 525, 526, 496 or 503 by
    /// its class, with upstream's body (A.5).
    EndpointTlsFailure(BackendTlsError),
    /// The route is bound to a route service and route services are disabled (no
    /// `route_services_secret`): refused, never proxied to the app.
    RouteServiceUnsupported,
    /// A websocket upgrade on a route bound to a route service.
    RouteServiceWebsocket,
    /// A request back from a route service whose signature is older than
    /// `route_services_timeout`. `strict` marks the check of a signature on a route without a
    /// route service (`route_services.strict_signature_validation`), which names itself in
    /// `X-Cf-Routererror`.
    RouteServiceSignatureExpired {
        strict: bool,
    },
    /// A request back from a route service whose signature did not validate; the reason is
    /// upstream's error text.
    RouteServiceSignatureInvalid {
        reason: String,
    },
    /// Strict validation: a signature on a route without a route service that did not validate.
    InvalidRouteServiceSignature,
    /// The first-pass request could not be built (the route service URL does not parse).
    RouteServiceRequestFailed,
}

impl RouterError {
    /// The router's response, with the access-log record (if any) completed by it.
    pub fn into_response(self, mut log: Option<Box<PendingLog>>) -> Response<ResponseBody> {
        if let Some(l) = log.as_mut() {
            l.record.status = self.status().as_u16();
            l.record.router_error = self.router_error_value();
        }
        let (parts, body) = self.response().into_parts();
        let mut exchange = Exchange::default();
        exchange.log = log;
        Response::from_parts(parts, body.with_exchange(exchange))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            RouterError::EmptyHost
            | RouterError::BadHost(_)
            | RouterError::InvalidAppInstanceHeader
            | RouterError::UnknownInstance { .. } => StatusCode::BAD_REQUEST,
            RouterError::UnknownRoute { .. } => StatusCode::NOT_FOUND,
            RouterError::NoEndpoints { .. } | RouterError::ConnectionLimitReached { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RouterError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            RouterError::EndpointFailure { .. } => StatusCode::BAD_GATEWAY,
            RouterError::EndpointTlsFailure(e) => e.status(),
            RouterError::RouteServiceUnsupported
            | RouterError::RouteServiceSignatureInvalid { .. } => StatusCode::BAD_GATEWAY,
            RouterError::RouteServiceWebsocket => StatusCode::SERVICE_UNAVAILABLE,
            RouterError::RouteServiceSignatureExpired { .. } => StatusCode::GATEWAY_TIMEOUT,
            RouterError::InvalidRouteServiceSignature => StatusCode::BAD_REQUEST,
            RouterError::RouteServiceRequestFailed => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `X-Cf-Routererror` value, if the spec sets one.
    pub fn router_error_value(&self) -> Option<HeaderValue> {
        let v: &str = match self {
            RouterError::EmptyHost => "empty_host",
            RouterError::BadHost(_) => return None,
            RouterError::InvalidAppInstanceHeader => "invalid_cf_app_instance_header",
            RouterError::UnknownRoute { .. } | RouterError::UnknownInstance { .. } => {
                "unknown_route"
            }
            RouterError::NoEndpoints { .. } => "no_endpoints",
            RouterError::ConnectionLimitReached { .. } => "Connection Limit Reached",
            RouterError::HeadersTooLarge => "max-request-size-exceeded",
            RouterError::EndpointFailure { cause } => return endpoint_failure(cause),
            RouterError::EndpointTlsFailure(e) => return endpoint_failure(e.message()),
            RouterError::RouteServiceUnsupported | RouterError::RouteServiceWebsocket => {
                "route_service_unsupported"
            }
            RouterError::RouteServiceSignatureExpired { strict: true } => {
                "expired_route_service_signature"
            }
            RouterError::InvalidRouteServiceSignature => "invalid_route_service_signature",
            RouterError::RouteServiceSignatureExpired { strict: false }
            | RouterError::RouteServiceSignatureInvalid { .. }
            | RouterError::RouteServiceRequestFailed => return None,
        };
        Some(HeaderValue::from_static(v))
    }

    fn cache_control(&self) -> Option<&'static str> {
        match self {
            RouterError::EmptyHost | RouterError::NoEndpoints { .. } => Some(MAX_AGE_2),
            RouterError::InvalidAppInstanceHeader
            | RouterError::UnknownRoute { .. }
            | RouterError::UnknownInstance { .. } => Some(NO_CACHE),
            _ => None,
        }
    }

    fn message(&self) -> Option<String> {
        Some(match self {
            RouterError::EmptyHost => "Request had empty Host header".into(),
            RouterError::BadHost(p) => p.text().into(),
            RouterError::InvalidAppInstanceHeader => "Invalid X-CF-App-Instance Header".into(),
            RouterError::UnknownRoute { host } => {
                format!("Requested route ('{host}') does not exist.")
            }
            RouterError::UnknownInstance { host, guid, index } => format!(
                "Requested instance ('{index}') with guid ('{guid}') does not exist for route ('{host}')"
            ),
            RouterError::NoEndpoints { host } => {
                format!("Requested route ('{host}') has no available endpoints.")
            }
            RouterError::ConnectionLimitReached { host } => {
                format!("Requested route ('{host}') has reached the connection limit.")
            }
            RouterError::HeadersTooLarge => return None,
            RouterError::EndpointFailure { .. } => {
                "Registered endpoint failed to handle the request.".into()
            }
            RouterError::EndpointTlsFailure(_) => return None,
            RouterError::RouteServiceUnsupported => "Support for route services is disabled.".into(),
            RouterError::RouteServiceWebsocket => {
                "Websocket requests are not supported for routes bound to Route Services.".into()
            }
            RouterError::RouteServiceSignatureExpired { .. } => {
                "Failed to validate Route Service Signature: route service request expired".into()
            }
            RouterError::RouteServiceSignatureInvalid { reason } => {
                format!("Failed to validate Route Service Signature: {reason}")
            }
            RouterError::InvalidRouteServiceSignature => {
                "invalid route service signature detected".into()
            }
            RouterError::RouteServiceRequestFailed => "Route service request failed.".into(),
        })
    }

    /// Whether upstream writes this error through its error writer, which renders
    /// `html_error_template_file` (backend failures use Go's `http.Error`, and a missing Host or
    /// an oversized header never reach a handler that templates).
    pub fn uses_error_page(&self) -> bool {
        !matches!(
            self,
            RouterError::BadHost(_)
                | RouterError::HeadersTooLarge
                | RouterError::EndpointFailure { .. }
                | RouterError::EndpointTlsFailure(_)
        )
    }

    /// Whether the connection must be closed after this response.
    pub fn closes_connection(&self) -> bool {
        matches!(self, RouterError::HeadersTooLarge | RouterError::BadHost(_))
    }

    /// The full response. Headers are inserted in Go's sorted order.
    pub fn response(&self) -> Response<ResponseBody> {
        if let RouterError::BadHost(problem) = self {
            return bad_host_response(*problem);
        }
        let status = self.status();
        let body = match (self, self.message()) {
            // Go's http.Error(w, "525 SSL Handshake Failed", 525): the text and a newline.
            (RouterError::EndpointTlsFailure(e), _) => {
                Bytes::from(format!("{}\n", e.body_message()))
            }
            (_, Some(m)) => Bytes::from(format!(
                "{} {}: {m}\n",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )),
            (_, None) => Bytes::new(),
        };
        let mut resp = Response::new(ResponseBody::full(body));
        *resp.status_mut() = status;
        if self.uses_error_page() {
            if let Some(m) = self.message() {
                resp.extensions_mut().insert(ErrorPageMessage(m));
            }
        }
        let h = resp.headers_mut();
        if let Some(cc) = self.cache_control() {
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cc));
        }
        if !matches!(self, RouterError::HeadersTooLarge) {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
        }
        if let Some(v) = self.router_error_value() {
            h.insert(X_CF_ROUTERERROR.clone(), v);
        }
        if !matches!(self, RouterError::HeadersTooLarge) {
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
        }
        if self.closes_connection() {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// `endpoint_failure (<Go's error text>)`.
fn endpoint_failure(cause: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("endpoint_failure ({cause})"))
        .ok()
        .or(Some(HeaderValue::from_static("endpoint_failure")))
}

/// Go's HTTP server answers a bad Host itself, before any handler: the message is in the
/// status line and the body (`400 Bad Request: <text>`) has no trailing newline.
fn bad_host_response(problem: HostProblem) -> Response<ResponseBody> {
    let body = format!("400 Bad Request: {}", problem.text());
    let mut resp = Response::new(ResponseBody::full(Bytes::from(body)));
    *resp.status_mut() = StatusCode::BAD_REQUEST;
    resp.extensions_mut()
        .insert(hyper::ext::ReasonPhrase::from_static(problem.reason()));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_text(r: Response<ResponseBody>) -> String {
        let b = r.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn unknown_route_matches_spec() {
        let r = RouterError::UnknownRoute {
            host: "nope.example.com".into(),
        }
        .response();
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()["cache-control"], "no-cache, no-store");
        assert_eq!(r.headers()["x-cf-routererror"], "unknown_route");
        assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert_eq!(
            body_text(r).await,
            "404 Not Found: Requested route ('nope.example.com') does not exist.\n"
        );
    }

    #[tokio::test]
    async fn endpoint_failure_carries_cause() {
        let r = RouterError::EndpointFailure {
            cause: "dial tcp 127.0.0.1:9009: connect: connection refused".into(),
        }
        .response();
        assert_eq!(r.status(), 502);
        assert_eq!(
            r.headers()["x-cf-routererror"],
            "endpoint_failure (dial tcp 127.0.0.1:9009: connect: connection refused)"
        );
        assert!(r.headers().get("cache-control").is_none());
        assert_eq!(
            body_text(r).await,
            "502 Bad Gateway: Registered endpoint failed to handle the request.\n"
        );
    }

    #[tokio::test]
    async fn header_too_large_has_empty_body() {
        let r = RouterError::HeadersTooLarge.response();
        assert_eq!(r.status(), 431);
        assert_eq!(r.headers()["x-cf-routererror"], "max-request-size-exceeded");
        assert_eq!(body_text(r).await, "");
    }

    #[tokio::test]
    async fn empty_host_and_no_endpoints_cache_two_seconds() {
        let r = RouterError::EmptyHost.response();
        assert_eq!(r.headers()["cache-control"], "public,max-age=2");
        assert_eq!(
            body_text(r).await,
            "400 Bad Request: Request had empty Host header\n"
        );
        let r = RouterError::NoEndpoints {
            host: "a.com".into(),
        }
        .response();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["x-cf-routererror"], "no_endpoints");
        assert_eq!(
            body_text(r).await,
            "503 Service Unavailable: Requested route ('a.com') has no available endpoints.\n"
        );
    }
}
