//! The in-process backend: an HTTP server on 127.0.0.1 (random port) answering every request
//! `200 OK` with `Hello, World!`, keeping connections alive. It speaks HTTP/1.1 and, to clients
//! that open with the HTTP/2 preface, HTTP/2 (h2c prior knowledge).
//!
//! A request's body is read and thrown away; `?size=N` in the query asks for a body of N bytes
//! instead (up to [`MAX_RESPONSE_SIZE`]). [`BackendOptions`] make it misbehave on purpose, for
//! loadgen's own tests and demos: stall once for a while, or answer `503` above a request rate.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

const BODY: &[u8] = b"Hello, World!";
/// The largest body `?size=N` gets.
pub const MAX_RESPONSE_SIZE: usize = 64 << 20;
/// How long a connection may take to show whether it speaks HTTP/2.
const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Ways to make the backend misbehave.
#[derive(Debug, Clone, Default)]
pub struct BackendOptions {
    /// Request number `after` (1-based, counted over all connections) is answered only after
    /// `duration`; every other request at once.
    pub stall_once: Option<StallOnce>,
    /// Requests beyond this many per second are answered `503 Service Unavailable`.
    pub rate_limit: Option<RateLimit>,
}

#[derive(Debug, Clone, Copy)]
pub struct StallOnce {
    pub after: u64,
    pub duration: Duration,
}

/// At most `per_second` requests per second, counted over a sliding window of
/// [`RATE_WINDOW`]: a request is refused when the window already holds
/// `per_second * RATE_WINDOW` admitted ones. Counting over a window (rather than a small token
/// bucket) makes the limit about the rate, not about how evenly requests arrive: a client or
/// a machine that hiccups and then catches up stays within it.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub per_second: f64,
}

/// The rate limit's window.
pub const RATE_WINDOW: Duration = Duration::from_secs(2);
/// The most admissions one window remembers (bounds the limiter's memory).
const MAX_WINDOW_ENTRIES: usize = 1 << 22;

struct State {
    options: BackendOptions,
    requests: AtomicU64,
    /// When the requests admitted within the last window were admitted, oldest first.
    admitted: Mutex<VecDeque<Instant>>,
}

impl State {
    fn new(options: BackendOptions) -> Self {
        Self {
            options,
            requests: AtomicU64::new(0),
            admitted: Mutex::new(VecDeque::new()),
        }
    }

    /// Admits a request under the rate limit (records it); false when the window is full.
    fn admit(&self) -> bool {
        let Some(limit) = self.options.rate_limit else {
            return true;
        };
        let capacity =
            ((limit.per_second * RATE_WINDOW.as_secs_f64()) as usize).clamp(1, MAX_WINDOW_ENTRIES);
        let mut admitted = match self.admitted.lock() {
            Ok(a) => a,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = Instant::now();
        while admitted
            .front()
            .is_some_and(|&t| now.duration_since(t) >= RATE_WINDOW)
        {
            admitted.pop_front();
        }
        if admitted.len() < capacity {
            admitted.push_back(now);
            true
        } else {
            false
        }
    }
}

/// Starts the backend on its own task and returns its address. It runs until the process
/// exits.
pub async fn start() -> Result<SocketAddr> {
    start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// Starts the backend on `addr` (port 0: any free one) and returns the bound address.
pub async fn start_on(addr: SocketAddr) -> Result<SocketAddr> {
    start_with(addr, BackendOptions::default()).await
}

/// Starts a backend that misbehaves as `options` say.
pub async fn start_with(addr: SocketAddr, options: BackendOptions) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the backend on {addr}"))?;
    let addr = listener.local_addr().context("backend local address")?;
    let state = Arc::new(State::new(options));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of file descriptors or similar: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve(stream, state.clone()));
        }
    });
    Ok(addr)
}

async fn serve(stream: TcpStream, state: Arc<State>) {
    let service = service_fn(move |req| handle(req, state.clone()));
    let h2 = matches!(
        tokio::time::timeout(PREFACE_TIMEOUT, starts_with_h2_preface(&stream)).await,
        Ok(true)
    );
    let io = TokioIo::new(stream);
    if h2 {
        let _ = http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, service)
            .await;
    } else {
        let _ = http1::Builder::new().serve_connection(io, service).await;
    }
}

/// Whether the client's first bytes are the HTTP/2 connection preface (without consuming
/// them).
async fn starts_with_h2_preface(stream: &TcpStream) -> bool {
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = match stream.peek(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        if buf[..n] != H2_PREFACE[..n] {
            return false;
        }
        if n == H2_PREFACE.len() {
            return true;
        }
        // A prefix of the preface so far: peek returns at once while no more has arrived.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let n = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let size = requested_size(req.uri().query());
    // Read the request body to its end, keeping none of it.
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            break;
        }
    }
    if let Some(stall) = state.options.stall_once {
        if n == stall.after {
            tokio::time::sleep(stall.duration).await;
        }
    }
    if !state.admit() {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"rate limited\n")));
        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return Ok(resp);
    }
    let body = match size {
        Some(n) => Bytes::from(vec![b'x'; n]),
        None => Bytes::from_static(BODY),
    };
    let mut resp = Response::new(Full::new(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    Ok(resp)
}

/// `size=N` from a query string, capped at [`MAX_RESPONSE_SIZE`].
fn requested_size(query: Option<&str>) -> Option<usize> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("size="))
        .and_then(|v| v.parse::<usize>().ok())
        .map(|n| n.min(MAX_RESPONSE_SIZE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_parameter_is_read_and_capped() {
        assert_eq!(requested_size(None), None);
        assert_eq!(requested_size(Some("a=1&size=4096")), Some(4096));
        assert_eq!(requested_size(Some("size=x")), None);
        assert_eq!(
            requested_size(Some("size=999999999999")),
            Some(MAX_RESPONSE_SIZE)
        );
    }

    #[test]
    fn the_rate_limit_admits_a_windows_worth_then_refuses() {
        let state = State::new(BackendOptions {
            stall_once: None,
            rate_limit: Some(RateLimit { per_second: 2.0 }),
        });
        // 2/s over a 2 s window: 4 at once, however bunched, then no more.
        let admitted = (0..10).filter(|_| state.admit()).count();
        assert_eq!(admitted, 4);
    }
}
