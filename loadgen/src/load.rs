//! The load loop: N keep-alive HTTP/1.1 connections (plain or TLS), each sending one request at
//! a time in a closed loop for a warmup and then a measured period, and the per-target results
//! (latency histogram, counts) merged from all connections. With `new_connection_per_request`
//! every request opens (and, for TLS, fully handshakes) a connection of its own.
//!
//! Every request waits at most until the end of the run (plus a short grace), so a run always
//! ends on time, even against a server that stops answering.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

/// Highest latency the histograms hold (longer ones are recorded as this).
const MAX_LATENCY: Duration = Duration::from_secs(60);
/// How long a request in flight at the end of the run may still take before it is abandoned.
const END_GRACE: Duration = Duration::from_secs(2);
/// Pause after a failed connect, so a dead server does not turn the loop into a busy spin.
const RECONNECT_PAUSE: Duration = Duration::from_millis(20);

/// Where to send requests: a TCP address, and the `Host` header and path to ask for.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
    /// HTTPS: how to handshake. `None` is plain HTTP.
    pub tls: Option<TlsTarget>,
}

/// The TLS side of an HTTPS target.
#[derive(Clone)]
pub struct TlsTarget {
    /// Session resumption is off in its config, so every new connection is a full handshake.
    pub connector: tokio_rustls::TlsConnector,
    pub server_name: ServerName<'static>,
}

/// How hard and how long to load a target.
#[derive(Debug, Clone, Copy)]
pub struct LoadConfig {
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// A new connection for every request (`Connection: close`), to measure connection set-up
    /// (TLS handshakes) rather than requests.
    pub new_connection_per_request: bool,
}

/// The results for one target. Only requests that started after the warmup and finished
/// before the end are counted.
pub struct Outcome {
    /// Latencies of successful (200) requests, in nanoseconds.
    pub latency: Histogram<u64>,
    /// Failed requests: transport errors, failed connects and non-200 responses.
    pub errors: u64,
    /// One example of what went wrong, if anything did.
    pub first_error: Option<String>,
    /// The measured period.
    pub elapsed: Duration,
}

impl Outcome {
    fn new() -> Self {
        Self {
            latency: new_histogram(),
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
        }
    }

    fn error(&mut self, what: String) {
        self.errors += 1;
        self.first_error.get_or_insert(what);
    }

    fn merge(&mut self, other: Outcome) -> Result<()> {
        self.latency
            .add(&other.latency)
            .context("merging latency histograms")?;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        Ok(())
    }

    /// Successful requests.
    pub fn requests(&self) -> u64 {
        self.latency.len()
    }

    pub fn requests_per_sec(&self) -> f64 {
        self.requests() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY.as_nanos() as u64, 3)
        .expect("static histogram bounds are valid")
}

/// Loads `target` with `config.connections` concurrent connections and returns the merged
/// results.
pub async fn run(target: &Target, config: LoadConfig) -> Result<Outcome> {
    let start = Instant::now();
    let measure_from = start + config.warmup;
    let end = measure_from + config.duration;
    let tasks: Vec<_> = (0..config.connections.max(1))
        .map(|_| {
            tokio::spawn(connection_loop(
                target.clone(),
                config.new_connection_per_request,
                measure_from,
                end,
            ))
        })
        .collect();
    let mut total = Outcome::new();
    for task in tasks {
        total.merge(task.await.context("load task panicked")?)?;
    }
    total.elapsed = config.duration;
    Ok(total)
}

/// One connection's closed loop until `end`; reconnects when the server closes or fails.
async fn connection_loop(
    target: Target,
    new_connection_per_request: bool,
    measure_from: Instant,
    end: Instant,
) -> Outcome {
    let mut out = Outcome::new();
    let mut sender: Option<SendRequest<Empty<Bytes>>> = None;
    while Instant::now() < end {
        let started = Instant::now();
        let measured = started >= measure_from;
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            match timeout_at(end, connect(&target)).await {
                Ok(Ok(s)) => sender = Some(s),
                Ok(Err(e)) => {
                    if measured {
                        out.error(format!("{e:#}"));
                    }
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
                Err(_) => break,
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let result = timeout_at(
            end + END_GRACE,
            request(s, &target, new_connection_per_request),
        )
        .await;
        if new_connection_per_request {
            sender = None;
        }
        let finished = Instant::now();
        let result = match result {
            Ok(r) => r,
            Err(_) => {
                out.error(format!("no response within {END_GRACE:?} after the end"));
                break;
            }
        };
        if !measured || finished > end {
            // Warmup, or the tail past the end: neither counts.
            if result.is_err() {
                sender = None;
            }
            continue;
        }
        match result {
            Ok(StatusCode::OK) => out
                .latency
                .saturating_record((finished - started).as_nanos() as u64),
            Ok(status) => out.error(format!("HTTP status {status}")),
            Err(e) => {
                out.error(format!("{e:#}"));
                sender = None;
            }
        }
    }
    out
}

/// Opens a keep-alive HTTP/1.1 connection (after a TLS handshake for HTTPS targets); its
/// driver runs on its own task.
pub async fn connect(target: &Target) -> Result<SendRequest<Empty<Bytes>>> {
    let addr = target.addr;
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true).context("setting TCP_NODELAY")?;
    let Some(tls) = &target.tls else {
        return http1_over(stream, addr).await;
    };
    let stream = tls
        .connector
        .connect(tls.server_name.clone(), stream)
        .await
        .with_context(|| format!("TLS handshake with {addr}"))?;
    http1_over(stream, addr).await
}

async fn http1_over<S>(stream: S, addr: SocketAddr) -> Result<SendRequest<Empty<Bytes>>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("HTTP handshake with {addr}"))?;
    tokio::spawn(async move {
        // The connection ends when either side closes it; the loop notices via the sender.
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends one GET and reads the whole response body; returns the status.
/// With `close`, asks the server to close the connection after the response (so the server,
/// not this client, holds the TIME_WAIT and the client's ports stay free).
pub async fn request(
    sender: &mut SendRequest<Empty<Bytes>>,
    target: &Target,
    close: bool,
) -> Result<StatusCode> {
    sender.ready().await.context("connection closed")?;
    let mut req = Request::get(target.path.as_str()).header(header::HOST, target.host.as_str());
    if close {
        req = req.header(header::CONNECTION, "close");
    }
    let req = req.body(Empty::new()).context("building request")?;
    let resp = sender.send_request(req).await.context("sending request")?;
    let status = resp.status();
    resp.into_body()
        .collect()
        .await
        .context("reading response body")?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LoadConfig {
        LoadConfig {
            connections: 4,
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(300),
            new_connection_per_request: false,
        }
    }

    #[tokio::test]
    async fn loads_the_in_process_backend_without_errors() {
        let addr = crate::backend::start().await.unwrap();
        let target = Target {
            addr,
            host: addr.to_string(),
            path: "/".into(),
            tls: None,
        };
        let out = run(&target, config()).await.unwrap();
        assert!(out.requests() > 0);
        assert_eq!(out.errors, 0, "{:?}", out.first_error);
        assert!(out.latency.value_at_quantile(0.99) > 0);
    }

    #[tokio::test]
    async fn a_dead_server_gives_errors_and_the_run_still_ends_on_time() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let target = Target {
            addr: port,
            host: "x".into(),
            path: "/".into(),
            tls: None,
        };
        let started = std::time::Instant::now();
        let out = run(&target, config()).await.unwrap();
        // Ends (warm-up + run: 400 ms) instead of hanging on the dead server: a generous bound.
        assert!(started.elapsed() < Duration::from_secs(20));
        assert_eq!(out.requests(), 0);
        assert!(out.errors > 0);
        assert!(out.first_error.unwrap().contains("connecting to"));
    }
}
