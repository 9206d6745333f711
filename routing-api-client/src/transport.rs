//! The HTTP(S) plumbing under [`crate::uaa`] and [`crate::client`]: a pooled hyper client over
//! rustls, one request with a deadline, and the optional `RTR_TRACE`-style request/response dump.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::tls::{client_config, TlsError, TlsOptions};

/// Receives human-readable dumps of every request and response (see [`crate::client`]).
pub type TraceFn = Arc<dyn Fn(&str) + Send + Sync>;

/// Text substituted for credentials in traces.
pub const HIDDEN: &str = "[PRIVATE DATA HIDDEN]";

pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Builds a pooled HTTP/1.1 client that speaks `http` and `https` (per `tls`).
pub(crate) fn build_client(
    tls: &TlsOptions,
    connect_timeout: Duration,
) -> Result<HttpClient, TlsError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    // Detects dead peers on long-lived event streams.
    http.set_keepalive(Some(Duration::from_secs(30)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_config(tls)?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    // Idle pooled connections are dropped before typical server idle timeouts close them.
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(https))
}

/// Failure below the HTTP status level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(String),
}

/// A response read to the end.
#[derive(Debug)]
pub(crate) struct Collected {
    pub status: StatusCode,
    pub body: Bytes,
}

/// `e` and all its sources, joined with `: ` (hyper's own messages are terse).
pub(crate) fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            let _ = write!(out, ": {text}");
        }
        source = s.source();
    }
    out
}

/// `GET http://host/path`, to give transport errors context.
fn describe<B>(req: &Request<B>) -> String {
    format!("{} {}", req.method(), req.uri())
}

/// Optional trace sink plus the formatting of dumps.
#[derive(Clone, Default)]
pub(crate) struct Tracer(pub Option<TraceFn>);

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Tracer(on)"
        } else {
            "Tracer(off)"
        })
    }
}

fn now() -> String {
    httpdate::fmt_http_date(SystemTime::now())
}

fn dump_headers(out: &mut String, headers: &HeaderMap) {
    for (name, value) in headers {
        let value = if name == http::header::AUTHORIZATION {
            HIDDEN.to_string()
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        let _ = writeln!(out, "{}: {}", canonical(name.as_str()), value);
    }
}

/// `content-type` -> `Content-Type`, as Go prints header names.
fn canonical(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper { c.to_ascii_uppercase() } else { c });
        upper = c == '-';
    }
    out
}

impl Tracer {
    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    fn emit(&self, text: &str) {
        if let Some(f) = &self.0 {
            f(text);
        }
    }

    pub fn request(&self, req: &Request<Full<Bytes>>, body: &[u8]) {
        if !self.enabled() {
            return;
        }
        let mut out = format!("REQUEST: [{}]\n", now());
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let _ = writeln!(out, "{} {} HTTP/1.1", req.method(), path);
        if let Some(host) = req.uri().authority() {
            let _ = writeln!(out, "Host: {host}");
        }
        dump_headers(&mut out, req.headers());
        let _ = writeln!(out);
        out.push_str(&String::from_utf8_lossy(body));
        out.push('\n');
        self.emit(&out);
    }

    pub fn response(&self, status: StatusCode, headers: &HeaderMap, body: Option<&str>) {
        if !self.enabled() {
            return;
        }
        let mut out = format!("RESPONSE: [{}]\n", now());
        let _ = writeln!(out, "HTTP/1.1 {status}");
        dump_headers(&mut out, headers);
        let _ = writeln!(out);
        match body {
            Some(body) => out.push_str(body),
            None => out.push_str("<streaming body>"),
        }
        out.push('\n');
        self.emit(&out);
    }
}

/// Sends `req` and reads the whole response, all within `timeout`. `redact` rewrites the
/// response body for the trace (to hide tokens).
pub(crate) async fn send(
    client: &HttpClient,
    req: Request<Full<Bytes>>,
    body: &[u8],
    timeout: Duration,
    tracer: &Tracer,
    redact: fn(&[u8]) -> String,
) -> Result<Collected, TransportError> {
    tracer.request(&req, body);
    let what = describe(&req);
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| TransportError::Io(format!("{what}: {}", error_chain(&e))))?;
        let (parts, incoming) = resp.into_parts();
        let body = incoming
            .collect()
            .await
            .map_err(|e| TransportError::Io(format!("{what}: {}", error_chain(&e))))?
            .to_bytes();
        Ok::<_, TransportError>((parts, body))
    };
    let (parts, body) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| TransportError::Timeout(timeout))??;
    if tracer.enabled() {
        tracer.response(parts.status, &parts.headers, Some(&redact(&body)));
    }
    Ok(Collected {
        status: parts.status,
        body,
    })
}

/// Sends `req` and returns once the response head has arrived (within `timeout`); the body is
/// left to the caller to stream.
pub(crate) async fn send_streaming(
    client: &HttpClient,
    req: Request<Full<Bytes>>,
    timeout: Duration,
    tracer: &Tracer,
) -> Result<Response<Incoming>, TransportError> {
    tracer.request(&req, b"");
    let what = describe(&req);
    let resp = tokio::time::timeout(timeout, client.request(req))
        .await
        .map_err(|_| TransportError::Timeout(timeout))?
        .map_err(|e| TransportError::Io(format!("{what}: {}", error_chain(&e))))?;
    if tracer.enabled() && resp.status() == StatusCode::OK {
        tracer.response(resp.status(), resp.headers(), None);
    }
    Ok(resp)
}

/// Reads an error response body (bounded by `timeout`), for streaming requests that failed.
pub(crate) async fn read_body(
    resp: Response<Incoming>,
    timeout: Duration,
    tracer: &Tracer,
) -> Result<Collected, TransportError> {
    let (parts, incoming) = resp.into_parts();
    let body = tokio::time::timeout(timeout, incoming.collect())
        .await
        .map_err(|_| TransportError::Timeout(timeout))?
        .map_err(|e| TransportError::Io(error_chain(&e)))?
        .to_bytes();
    if tracer.enabled() {
        tracer.response(
            parts.status,
            &parts.headers,
            Some(&String::from_utf8_lossy(&body)),
        );
    }
    Ok(Collected {
        status: parts.status,
        body,
    })
}

/// Trace redactor that shows the body as it is.
pub(crate) fn plain(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_header_names() {
        assert_eq!(canonical("content-type"), "Content-Type");
        assert_eq!(canonical("x-vcap-request-id"), "X-Vcap-Request-Id");
        assert_eq!(canonical("authorization"), "Authorization");
    }

    #[test]
    fn trace_hides_authorization() {
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        let tracer = Tracer(Some(Arc::new(move |s: &str| {
            sink.lock().unwrap().push(s.to_string())
        })));
        let req = Request::post("http://127.0.0.1:3000/routing/v1/routes")
            .header("authorization", "bearer secret-token")
            .body(Full::new(Bytes::from_static(b"[]")))
            .unwrap();
        tracer.request(&req, b"[]");
        let out = lines.lock().unwrap().join("");
        assert!(out.starts_with("REQUEST: ["), "{out}");
        assert!(out.contains("POST /routing/v1/routes HTTP/1.1\n"), "{out}");
        assert!(out.contains("Host: 127.0.0.1:3000\n"), "{out}");
        assert!(
            out.contains("Authorization: [PRIVATE DATA HIDDEN]\n"),
            "{out}"
        );
        assert!(!out.contains("secret-token"), "{out}");
        assert!(out.ends_with("\n[]\n"), "{out}");
    }
}
