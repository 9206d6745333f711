//! The scraper's side of `/metrics` over plain HTTP: one `GET /metrics` on a fresh TCP
//! connection (hyper's HTTP/1.1 client connection, no pool), read back into a [`Scrape`]
//! (status, content type, headers, body), and [`sample`] to read one sample's value out of the
//! exposition text.
//!
//! It is what tests and tools use to look at a component's metrics the way Prometheus does.
//! It owns its bounds: one `timeout` covers connect, write and read together, a body larger
//! than [`MAX_RESPONSE_BYTES`] is an error, and anything the peer sends that is not an
//! HTTP/1.x response is a [`ScrapeError`], never a panic. Mutual TLS endpoints need a TLS
//! client and are not covered here.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

/// The largest body a scrape reads before giving up.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// A response to a scrape (or to another [`request`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scrape {
    /// The status code, e.g. 200.
    pub status: u16,
    /// The `Content-Type` header, if the response had one.
    pub content_type: Option<String>,
    /// Every header field, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body, with any chunked encoding removed.
    pub body: String,
}

impl Scrape {
    /// The first value of header `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value text of `series` in the body; see [`sample`].
    pub fn sample(&self, series: &str) -> Option<&str> {
        sample(&self.body, series)
    }
}

/// The status, the headers, a blank line and the body: the response as a person reads it
/// (for assertion messages).
impl fmt::Display for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "status {}", self.status)?;
        for (name, value) in &self.headers {
            writeln!(f, "{name}: {value}")?;
        }
        write!(f, "\n{}", self.body)
    }
}

/// The step of a scrape that was under way when something went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Opening the TCP connection.
    Connect,
    /// Writing the request.
    Write,
    /// Reading the response until it is complete.
    Read,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Connect => "connecting",
            Phase::Write => "sending the request",
            Phase::Read => "reading the response",
        })
    }
}

/// A scrape that did not produce a response. (A response with any status is a [`Scrape`];
/// the caller decides what a 404 means.)
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// The request target is not one this client writes (checked before connecting).
    #[error("scrape of {addr}: invalid request target {target:?} (an absolute path without spaces or control characters)")]
    InvalidTarget { addr: SocketAddr, target: String },
    /// Connecting, writing or reading failed (refused, reset, ...).
    #[error("scrape of {addr}: {phase} failed: {source}")]
    Io {
        addr: SocketAddr,
        phase: Phase,
        source: std::io::Error,
    },
    /// The timeout ran out during `phase`.
    #[error("scrape of {addr}: no response within {timeout:?} (timed out {phase})")]
    Timeout {
        addr: SocketAddr,
        phase: Phase,
        timeout: Duration,
    },
    /// The body exceeds [`MAX_RESPONSE_BYTES`].
    #[error("scrape of {addr}: the response is larger than {limit} bytes")]
    TooLarge { addr: SocketAddr, limit: usize },
    /// The peer answered with something other than a complete HTTP/1.x response.
    #[error("scrape of {addr}: not an HTTP/1.x response: {reason}")]
    Malformed { addr: SocketAddr, reason: String },
}

/// `GET /metrics` on `addr` over plain HTTP: the response, whatever its status, within
/// `timeout` (which bounds connecting, writing and reading together).
pub async fn scrape(addr: SocketAddr, timeout: Duration) -> Result<Scrape, ScrapeError> {
    request(addr, &Method::GET, "/metrics", timeout).await
}

/// `method target` on `addr` over plain HTTP/1.1 with `Connection: close`, for looking at the
/// endpoint's other answers (404 for another path, 405 for another method); bounded as
/// [`scrape`] is. A `HEAD` response has no body.
pub async fn request(
    addr: SocketAddr,
    method: &Method,
    target: &str,
    timeout: Duration,
) -> Result<Scrape, ScrapeError> {
    let invalid_target = || ScrapeError::InvalidTarget {
        addr,
        target: target.to_owned(),
    };
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid_target());
    }
    let request = Request::builder()
        .method(method.clone())
        .uri(target)
        .header(header::HOST, addr.to_string())
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|_| invalid_target())?;
    let deadline = Instant::now() + timeout;
    let timed_out = |phase| ScrapeError::Timeout {
        addr,
        phase,
        timeout,
    };

    let stream = timeout_at(deadline, TcpStream::connect(addr))
        .await
        .map_err(|_| timed_out(Phase::Connect))?
        .map_err(|source| ScrapeError::Io {
            addr,
            phase: Phase::Connect,
            source,
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(addr, Phase::Write, e))?;
    // The connection ends with the response (`Connection: close`) or when this call gives up
    // and drops `sender`.
    tokio::spawn(connection);
    let response = timeout_at(deadline, sender.send_request(request))
        .await
        .map_err(|_| timed_out(Phase::Read))?
        .map_err(|e| failed(addr, Phase::Read, e))?;
    let (parts, body) = response.into_parts();
    let body = timeout_at(deadline, Limited::new(body, MAX_RESPONSE_BYTES).collect())
        .await
        .map_err(|_| timed_out(Phase::Read))?
        .map_err(|e| match e.downcast::<hyper::Error>() {
            Ok(e) => failed(addr, Phase::Read, *e),
            Err(e) if e.is::<LengthLimitError>() => ScrapeError::TooLarge {
                addr,
                limit: MAX_RESPONSE_BYTES,
            },
            Err(e) => ScrapeError::Malformed {
                addr,
                reason: e.to_string(),
            },
        })?
        .to_bytes();
    let body = String::from_utf8(body.into()).map_err(|_| ScrapeError::Malformed {
        addr,
        reason: "the body is not UTF-8".to_owned(),
    })?;
    let text = |v: &http::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
    Ok(Scrape {
        status: parts.status.as_u16(),
        content_type: parts.headers.get(header::CONTENT_TYPE).map(text),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), text(value)))
            .collect(),
        body,
    })
}

/// A failure of hyper's connection: what the peer sent was not HTTP/1.x (or ended early), or
/// the socket failed.
fn failed(addr: SocketAddr, phase: Phase, e: hyper::Error) -> ScrapeError {
    if e.is_parse() || e.is_incomplete_message() || e.is_parse_status() {
        return ScrapeError::Malformed {
            addr,
            reason: e.to_string(),
        };
    }
    let source = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .map(|io| std::io::Error::new(io.kind(), io.to_string()))
        .unwrap_or_else(|| std::io::Error::other(e.to_string()));
    ScrapeError::Io {
        addr,
        phase,
        source,
    }
}

/// The value of the sample `series` in exposition `text`: the first token after
/// `series` and a space on a line that is not a comment, e.g.
/// `sample(text, "requests_total{code=\"200\"}")` gives `"3"` for the line
/// `requests_total{code="200"} 3`. `series` is the name with its labels exactly as
/// exposed (label order included); a name alone matches only the unlabelled sample.
pub fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|rest| rest.split_ascii_whitespace().next())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_found_by_its_exact_series() {
        let text = "# HELP up_total x\n# TYPE up_total counter\nup_total 3\n\
                    up_total{code=\"200\"} 7 1700000000\nup_total_created 1.5\n# EOF\n";
        assert_eq!(sample(text, "up_total"), Some("3"));
        assert_eq!(sample(text, "up_total{code=\"200\"}"), Some("7"));
        assert_eq!(sample(text, "up_total{code=\"500\"}"), None);
        assert_eq!(sample(text, "up"), None);
        assert_eq!(sample(text, "# TYPE"), None);
    }

    #[test]
    fn a_target_with_spaces_or_without_a_slash_is_refused_before_connecting() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for target in ["metrics", "/a b", "/a\r\nX: y"] {
            let err = rt
                .block_on(request(addr, &Method::GET, target, Duration::from_secs(1)))
                .unwrap_err();
            assert!(matches!(err, ScrapeError::InvalidTarget { .. }), "{err}");
        }
    }
}
