//! The HTTP client side of one load connection: connecting (TCP, then TLS for HTTPS targets,
//! then HTTP/1.1 or HTTP/2) and sending one request whose response body is read and thrown
//! away frame by frame (never buffered whole, whatever its size).
//!
//! Callers put their own deadline around both calls (see `load`): nothing here waits forever
//! only because the callers never do.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::targets::{Protocol, Target};

/// Request bodies: empty for GET, a fixed buffer for POST.
pub type RequestBody = Full<Bytes>;

/// An open connection, ready for requests.
pub enum Connection {
    Http1(http1::SendRequest<RequestBody>),
    Http2(http2::SendRequest<RequestBody>),
}

impl Connection {
    /// The server (or an error) closed it: the next request needs a new one.
    pub fn is_closed(&self) -> bool {
        match self {
            Connection::Http1(s) => s.is_closed(),
            Connection::Http2(s) => s.is_closed(),
        }
    }
}

/// Opens a connection to `target` (after a TLS handshake for HTTPS targets); its driver runs on
/// a task of its own, which ends when either side closes the connection.
pub async fn connect(target: &Target) -> Result<Connection> {
    let addr = target.addr;
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true).context("setting TCP_NODELAY")?;
    let Some(tls) = &target.tls else {
        return handshake(stream, addr, target.protocol).await;
    };
    let stream = tls
        .connector
        .connect(tls.server_name.clone(), stream)
        .await
        .with_context(|| format!("TLS handshake with {addr}"))?;
    if target.protocol == Protocol::Http2 && stream.get_ref().1.alpn_protocol() != Some(b"h2") {
        bail!("{addr} did not agree to HTTP/2 (ALPN h2) in the TLS handshake");
    }
    handshake(stream, addr, target.protocol).await
}

async fn handshake<S>(stream: S, addr: SocketAddr, protocol: Protocol) -> Result<Connection>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match protocol {
        Protocol::Http1 => {
            let (sender, conn) = http1::handshake(TokioIo::new(stream))
                .await
                .with_context(|| format!("HTTP/1.1 handshake with {addr}"))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(Connection::Http1(sender))
        }
        Protocol::Http2 => {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .with_context(|| format!("HTTP/2 handshake with {addr}"))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(Connection::Http2(sender))
        }
    }
}

/// Sends one request for `host` (GET, or POST when `body` is not empty), reads the response
/// body to its end and returns the status. With `close` (HTTP/1.1 only), asks the server to
/// close the connection after the response, so the server, not this client, holds the
/// TIME_WAIT and the client's ports stay free.
pub async fn request(
    conn: &mut Connection,
    target: &Target,
    host: &str,
    body: &Bytes,
    close: bool,
) -> Result<StatusCode> {
    let method = if body.is_empty() {
        Method::GET
    } else {
        Method::POST
    };
    let response = match conn {
        Connection::Http1(sender) => {
            sender.ready().await.context("connection closed")?;
            let mut req = Request::builder()
                .method(method)
                .uri(target.path.as_str())
                .header(header::HOST, host);
            if close {
                req = req.header(header::CONNECTION, "close");
            }
            let req = req
                .body(Full::new(body.clone()))
                .context("building request")?;
            sender.send_request(req).await.context("sending request")?
        }
        Connection::Http2(sender) => {
            sender.ready().await.context("connection closed")?;
            // HTTP/2 carries the host as the URI's authority (`:authority`).
            let uri = format!("{}://{host}{}", target.scheme(), target.path);
            let req = Request::builder()
                .method(method)
                .uri(uri)
                .body(Full::new(body.clone()))
                .context("building request")?;
            sender.send_request(req).await.context("sending request")?
        }
    };
    let status = response.status();
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        frame.context("reading response body")?;
    }
    Ok(status)
}

/// One request on a fresh connection, within `timeout` (for readiness checks).
pub async fn get_once(
    target: &Target,
    host: &str,
    timeout: std::time::Duration,
) -> Result<StatusCode> {
    let once = async {
        let mut conn = connect(target).await?;
        request(&mut conn, target, host, &Bytes::new(), true).await
    };
    tokio::time::timeout(timeout, once)
        .await
        .with_context(|| format!("no response within {timeout:?}"))?
}
