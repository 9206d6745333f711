//! Backends the router forwards to, all on 127.0.0.1 ephemeral ports, stopped on drop.
//!
//! - [`EchoBackend`]: raw TCP. Reads the whole request head (and the body per Content-Length or
//!   chunked encoding, answering `Expect: 100-continue` with a 100 first) and answers 200 with a
//!   body that is the raw request head bytes followed by `[body N bytes]\n`, so a test sees the
//!   request target and headers exactly as the backend got them ([`EchoedRequest`] parses it).
//!   A websocket upgrade (`Upgrade: websocket`) is answered with 101 and then every byte is
//!   echoed back.
//! - [`HttpBackend`]: hyper HTTP/1.1 server with a programmable async handler.
//! - [`HeldBackend`]: an [`HttpBackend`] that reports each arriving request and holds it until
//!   released (or for a fixed delay).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::http::{find, header_value, header_values, parse_header_lines};

/// The response header an [`EchoBackend`] adds with its name.
pub const BACKEND_NAME_HEADER: &str = "X-Backend-Name";

/// One request as an [`EchoBackend`] received it.
#[derive(Debug, Clone)]
pub struct EchoRecord {
    /// The raw head bytes, request line to the blank line (CRLFs included).
    pub head: Vec<u8>,
    /// The decoded body.
    pub body: Vec<u8>,
}

#[derive(Default)]
struct EchoState {
    requests: Mutex<Vec<EchoRecord>>,
    connections: std::sync::atomic::AtomicUsize,
}

/// A raw-TCP backend that echoes the request head it received (see the module docs).
pub struct EchoBackend {
    addr: SocketAddr,
    name: String,
    state: Arc<EchoState>,
    task: JoinHandle<()>,
}

impl EchoBackend {
    /// Starts a backend whose responses carry `X-Backend-Name: <name>`.
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("echo backend: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let state = Arc::new(EchoState::default());
        let st = state.clone();
        let nm = name.to_string();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                st.connections
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let st = st.clone();
                let nm = nm.clone();
                conns.spawn(async move {
                    let _ = echo_connection(stream, &nm, &st).await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Self {
            addr,
            name: name.to_string(),
            state,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Requests received so far, in arrival order.
    pub fn requests(&self) -> Vec<EchoRecord> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Number of requests received so far.
    pub fn request_count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    /// Number of TCP connections accepted so far.
    pub fn connection_count(&self) -> usize {
        self.state
            .connections
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut tmp = [0u8; 16 * 1024];
    let n = stream.read(&mut tmp).await?;
    buf.extend_from_slice(&tmp[..n]);
    Ok(n)
}

async fn read_line(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<String> {
    loop {
        if let Some(pos) = find(buf, b"\r\n") {
            let line: Vec<u8> = buf.drain(..pos + 2).collect();
            return Ok(String::from_utf8_lossy(&line[..pos]).into_owned());
        }
        if read_more(stream, buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

async fn echo_connection(
    mut stream: TcpStream,
    name: &str,
    state: &EchoState,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(pos) = find(&buf, b"\r\n\r\n") {
                break pos;
            }
            if read_more(&mut stream, &mut buf).await? == 0 {
                return Ok(());
            }
        };
        let head: Vec<u8> = buf.drain(..end + 4).collect();
        let parsed = EchoedRequest::parse_head(&head);
        let has_token = |name: &str, token: &str| {
            parsed
                .header_all(name)
                .iter()
                .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        };
        if has_token("Upgrade", "websocket") {
            state.requests.lock().unwrap().push(EchoRecord {
                head: head.clone(),
                body: Vec::new(),
            });
            stream
                .write_all(
                    format!(
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n{BACKEND_NAME_HEADER}: {name}\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .await?;
            if !buf.is_empty() {
                stream.write_all(&buf).await?;
            }
            let mut tmp = [0u8; 16 * 1024];
            loop {
                let n = stream.read(&mut tmp).await?;
                if n == 0 {
                    return Ok(());
                }
                stream.write_all(&tmp[..n]).await?;
            }
        }
        if has_token("Expect", "100-continue") {
            stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        let mut body = Vec::new();
        if has_token("Transfer-Encoding", "chunked") {
            loop {
                let line = read_line(&mut stream, &mut buf).await?;
                let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
                if size == 0 {
                    while !read_line(&mut stream, &mut buf).await?.is_empty() {}
                    break;
                }
                while buf.len() < size + 2 {
                    if read_more(&mut stream, &mut buf).await? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
                body.extend_from_slice(&buf[..size]);
                buf.drain(..size + 2);
            }
        } else if let Some(cl) = parsed.header("Content-Length") {
            let n: usize = cl
                .trim()
                .parse()
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
            while buf.len() < n {
                if read_more(&mut stream, &mut buf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
            body.extend(buf.drain(..n));
        }
        let close = has_token("Connection", "close")
            || (parsed.request_line.ends_with("HTTP/1.0")
                && !has_token("Connection", "keep-alive"));
        let mut resp_body = head.clone();
        resp_body.extend_from_slice(format!("[body {} bytes]\n", body.len()).as_bytes());
        state
            .requests
            .lock()
            .unwrap()
            .push(EchoRecord { head, body });
        let mut resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{BACKEND_NAME_HEADER}: {name}\r\n",
            resp_body.len()
        );
        if close {
            resp.push_str("Connection: close\r\n");
        }
        resp.push_str("\r\n");
        let mut out = resp.into_bytes();
        out.extend_from_slice(&resp_body);
        stream.write_all(&out).await?;
        if close {
            let _ = stream.shutdown().await;
            return Ok(());
        }
    }
}

/// What an [`EchoBackend`] says it received, parsed from a response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoedRequest {
    /// e.g. `GET /a%2Fb//c?q=%20x HTTP/1.1`
    pub request_line: String,
    /// Header fields in the order received, with the received spelling.
    pub headers: Vec<(String, String)>,
    /// Body length from the `[body N bytes]` line (`None` when parsing a bare head).
    pub body_len: Option<usize>,
}

impl EchoedRequest {
    /// Parses an [`EchoBackend`] response body, panicking with the body if it is not one.
    pub fn parse(body: &[u8]) -> Self {
        let Some(end) = find(body, b"\r\n\r\n") else {
            panic!(
                "not an echo-backend body (no request head): {:?}",
                String::from_utf8_lossy(body)
            );
        };
        let mut req = Self::parse_head(&body[..end + 4]);
        let tail = String::from_utf8_lossy(&body[end + 4..]).into_owned();
        req.body_len = tail
            .strip_prefix("[body ")
            .and_then(|t| t.strip_suffix(" bytes]\n"))
            .and_then(|n| n.parse().ok());
        assert!(
            req.body_len.is_some(),
            "echo-backend body lacks the `[body N bytes]` line: {tail:?}"
        );
        req
    }

    /// Parses a raw request head.
    pub fn parse_head(head: &[u8]) -> Self {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
        let request_line = lines.next().unwrap_or_default().to_string();
        Self {
            request_line,
            headers: parse_header_lines(lines),
            body_len: None,
        }
    }

    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    /// All values of a header (name case-insensitive).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        header_values(&self.headers, name)
    }

    /// Header names, lowercased and sorted (duplicates kept).
    pub fn header_names_lower(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .headers
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect();
        names.sort();
        names
    }
}

/// The body type [`HttpBackend`] handlers answer with.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A whole body from bytes.
pub fn full_body(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// A response with `status` and a `text/plain` body.
pub fn text_response(status: u16, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("Content-Type", "text/plain")
        .body(full_body(body))
        .expect("valid response")
}

type Handler = Arc<
    dyn Fn(Request<Incoming>) -> futures::future::BoxFuture<'static, Response<Body>> + Send + Sync,
>;

/// A hyper HTTP/1.1 backend calling a programmable async handler for every request.
pub struct HttpBackend {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl HttpBackend {
    /// Starts serving `handler` on 127.0.0.1.
    pub async fn start<F, Fut>(handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |req| Box::pin(handler(req)));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("http backend: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let fut = handler(req);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Self { addr, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A backend that reports each request as it arrives and answers 200 `released` only once
/// released ([`HeldBackend::until_released`]) or after a fixed delay
/// ([`HeldBackend::with_delay`]).
pub struct HeldBackend {
    backend: HttpBackend,
    arrived: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
    gate: Arc<Semaphore>,
}

impl HeldBackend {
    /// Requests wait until [`release`](Self::release) (or 20 s as a safety net).
    pub async fn until_released() -> Self {
        Self::start(None).await
    }

    /// Requests are answered `delay` after they arrive.
    pub async fn with_delay(delay: Duration) -> Self {
        Self::start(Some(delay)).await
    }

    async fn start(delay: Option<Duration>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let gate = Arc::new(Semaphore::new(0));
        let g = gate.clone();
        let backend = HttpBackend::start(move |req: Request<Incoming>| {
            let tx = tx.clone();
            let g = g.clone();
            async move {
                let _ = tx.send(req.uri().to_string());
                match delay {
                    Some(d) => tokio::time::sleep(d).await,
                    None => {
                        let _ = tokio::time::timeout(Duration::from_secs(20), g.acquire()).await;
                    }
                }
                text_response(200, "released\n")
            }
        })
        .await;
        Self {
            backend,
            arrived: tokio::sync::Mutex::new(rx),
            gate,
        }
    }

    pub fn port(&self) -> u16 {
        self.backend.port()
    }

    /// Waits (up to 10 s) until a request reaches the backend; returns its target.
    pub async fn arrived(&self) -> String {
        let mut rx = self.arrived.lock().await;
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(uri)) => uri,
            _ => panic!("no request reached the held backend within 10 s"),
        }
    }

    /// Like [`arrived`](Self::arrived) but gives up after `timeout`.
    pub async fn arrived_within(&self, timeout: Duration) -> Option<String> {
        let mut rx = self.arrived.lock().await;
        tokio::time::timeout(timeout, rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Lets every held (and future) request complete.
    pub fn release(&self) {
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }
}
