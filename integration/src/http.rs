//! A raw HTTP/1.x client over TCP. It sends exactly the bytes a test writes and parses responses
//! without normalising them (header names keep their case, order is kept), so tests can check
//! status lines and headers byte for byte.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one read or write may stall before the client gives up.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A parsed response (or interim 1xx response).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    /// The status line without CRLF, e.g. `HTTP/1.1 404 Not Found`.
    pub status_line: String,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// Header fields in wire order with the wire's spelling.
    pub headers: Vec<(String, String)>,
    /// The decoded body (chunked encoding removed); empty when read with a body callback.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of a header, name compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    /// All values of a header, name compared case-insensitively.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        header_values(&self.headers, name)
    }

    /// The body as (lossy) UTF-8.
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Status line, headers and body, for assertion messages.
    pub fn dump(&self) -> String {
        let mut s = format!("{}\n", self.status_line);
        for (n, v) in &self.headers {
            s.push_str(&format!("{n}: {v}\n"));
        }
        s.push('\n');
        let body = self.body_str();
        if body.len() > 2000 {
            s.push_str(&format!("{}... ({} bytes)", &body[..2000], body.len()));
        } else {
            s.push_str(&body);
        }
        s
    }

    /// Asserts the exact header set (names compared case-sensitively, values exactly, order
    /// ignored) except `Date`, which must be present but whose value is ignored.
    pub fn assert_headers_exactly(&self, expected: &[(&str, &str)]) {
        let mut got: Vec<(String, String)> = self
            .headers
            .iter()
            .filter(|(n, _)| n != "Date")
            .cloned()
            .collect();
        got.sort();
        let mut want: Vec<(String, String)> = expected
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        want.sort();
        assert_eq!(
            got,
            want,
            "response headers differ (Date ignored); full response:\n{}",
            self.dump()
        );
        assert!(
            self.headers.iter().any(|(n, _)| n == "Date"),
            "response has no `Date` header:\n{}",
            self.dump()
        );
    }
}

/// The first value of header `name` (compared case-insensitively) among `headers`.
pub fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// All values of header `name` (compared case-insensitively) among `headers`, in order.
pub fn header_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Header lines `Name: value` as `(name, value)` pairs: the name as sent, the value trimmed; a
/// line without a colon becomes `(line, "")`.
pub fn parse_header_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<(String, String)> {
    lines
        .map(|l| match l.split_once(':') {
            Some((n, v)) => (n.to_string(), v.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

/// Parses a response head: the status line and header lines, CRLF-separated, without the blank
/// line ending it. The body is left empty. An error if the status line has no status code.
pub fn parse_response_head(text: &str) -> std::io::Result<RawResponse> {
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_string();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default().to_string();
    let status = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad status line {status_line:?}"),
        )
    })?;
    let reason = parts.next().unwrap_or_default().to_string();
    Ok(RawResponse {
        headers: parse_header_lines(lines),
        status_line,
        version,
        status,
        reason,
        body: Vec::new(),
    })
}

/// Builds a request: `<method> <target> HTTP/1.1`, then `headers` in order (include `Host`
/// yourself), then `Content-Length` if `body` is not empty, then the body.
pub fn build_request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\n");
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A `GET` for `path` with `Host: host` and a fixed `User-Agent`.
pub fn get_request(host: &str, path: &str) -> Vec<u8> {
    build_request(
        "GET",
        path,
        &[("Host", host), ("User-Agent", "it-client/1.0")],
        b"",
    )
}

/// One client connection with its read buffer.
#[derive(Debug)]
pub struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl HttpConn {
    /// Connects, panicking with the address if it fails within 5 s.
    pub async fn connect(addr: SocketAddr) -> Self {
        match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => Self::from_stream(stream),
            Ok(Err(e)) => panic!("cannot connect to {addr}: {e}"),
            Err(_) => panic!("connect to {addr} timed out"),
        }
    }

    /// Connects, returning the error instead of panicking.
    pub async fn try_connect(addr: SocketAddr) -> std::io::Result<Self> {
        match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await {
            Ok(r) => r.map(Self::from_stream),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out",
            )),
        }
    }

    pub fn from_stream(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes all of `data`, returning the error if the peer is gone.
    pub async fn try_send(&mut self, data: &[u8]) -> std::io::Result<()> {
        match tokio::time::timeout(IO_TIMEOUT, self.stream.write_all(data)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "write stalled",
            )),
        }
    }

    /// Writes all of `data`, panicking on failure.
    pub async fn send(&mut self, data: &[u8]) {
        if let Err(e) = self.try_send(data).await {
            panic!("writing {} bytes to the router failed: {e}", data.len());
        }
    }

    /// Reads more bytes into the buffer; `Ok(0)` at EOF.
    async fn fill(&mut self) -> std::io::Result<usize> {
        let mut tmp = vec![0u8; 64 * 1024];
        let n = match tokio::time::timeout(IO_TIMEOUT, self.stream.read(&mut tmp)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no data for {IO_TIMEOUT:?}"),
                ))
            }
        };
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    /// Reads a response head (status line and headers) and returns it with an empty body.
    pub async fn read_head(&mut self) -> std::io::Result<RawResponse> {
        let end = loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                break pos;
            }
            if self.fill().await? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed before a complete response head; got {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
        };
        let head: Vec<u8> = self.buf.drain(..end + 4).collect();
        parse_response_head(&String::from_utf8_lossy(&head[..end]))
    }

    /// Reads the body of a response whose head was read by [`read_head`](Self::read_head),
    /// passing each piece to `sink` (Content-Length, chunked, or until EOF; none for 1xx, 204,
    /// 304 or when `head_request`).
    pub async fn read_body_with(
        &mut self,
        head: &RawResponse,
        head_request: bool,
        mut sink: impl FnMut(&[u8]),
    ) -> std::io::Result<()> {
        if head_request || head.status < 200 || head.status == 204 || head.status == 304 {
            return Ok(());
        }
        let chunked = head
            .header("Transfer-Encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            loop {
                let line = self.read_line().await?;
                let size_hex = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_hex, 16).map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("bad chunk size line {line:?}"),
                    )
                })?;
                if size == 0 {
                    // Trailers until an empty line.
                    while !self.read_line().await?.is_empty() {}
                    return Ok(());
                }
                self.read_exact_with(size, &mut sink).await?;
                let crlf = self.read_line().await?;
                if !crlf.is_empty() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "chunk not followed by CRLF",
                    ));
                }
            }
        } else if let Some(cl) = head.header("Content-Length") {
            let n: usize = cl.parse().map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad Content-Length {cl:?}"),
                )
            })?;
            self.read_exact_with(n, &mut sink).await
        } else {
            loop {
                if !self.buf.is_empty() {
                    sink(&self.buf);
                    self.buf.clear();
                }
                if self.fill().await? == 0 {
                    return Ok(());
                }
            }
        }
    }

    async fn read_exact_with(
        &mut self,
        mut n: usize,
        sink: &mut impl FnMut(&[u8]),
    ) -> std::io::Result<()> {
        while n > 0 {
            if self.buf.is_empty() && self.fill().await? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("connection closed with {n} body bytes still expected"),
                ));
            }
            let take = n.min(self.buf.len());
            sink(&self.buf[..take]);
            self.buf.drain(..take);
            n -= take;
        }
        Ok(())
    }

    async fn read_line(&mut self) -> std::io::Result<String> {
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..pos + 2).collect();
                return Ok(String::from_utf8_lossy(&line[..pos]).into_owned());
            }
            if self.fill().await? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed mid-line",
                ));
            }
        }
    }

    /// Reads one response (possibly an interim 1xx) with its body, returning errors.
    pub async fn try_read_response(&mut self) -> std::io::Result<RawResponse> {
        let mut resp = self.read_head().await?;
        let mut body = Vec::new();
        let head = resp.clone();
        self.read_body_with(&head, false, |b| body.extend_from_slice(b))
            .await?;
        resp.body = body;
        Ok(resp)
    }

    /// Reads one response (possibly an interim 1xx) with its body, panicking on failure.
    pub async fn read_response(&mut self) -> RawResponse {
        match self.try_read_response().await {
            Ok(r) => r,
            Err(e) => panic!("reading a response from the router failed: {e}"),
        }
    }

    /// Whether the peer closes the connection (EOF or reset) within `timeout`, with nothing
    /// more to read. Bytes that do arrive make it return false.
    pub async fn is_closed_within(&mut self, timeout: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut tmp = [0u8; 1024];
        match tokio::time::timeout(timeout, self.stream.read(&mut tmp)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&tmp[..n]);
                false
            }
            Err(_) => false,
        }
    }

    /// Reads exactly `n` raw bytes (e.g. after a 101 upgrade).
    pub async fn read_raw(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        if let Err(e) = self
            .read_exact_with(n, &mut |b: &[u8]| out.extend_from_slice(b))
            .await
        {
            panic!(
                "reading {n} raw bytes failed after {} bytes: {e}",
                out.len()
            );
        }
        out
    }

    /// The underlying stream and any bytes already read past the last parsed response.
    pub fn into_parts(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.buf)
    }
}

/// Sends `raw` on a fresh connection and reads one final response (interim 1xx are skipped).
pub async fn request(addr: SocketAddr, raw: &[u8]) -> RawResponse {
    let mut conn = HttpConn::connect(addr).await;
    conn.send(raw).await;
    loop {
        let resp = conn.read_response().await;
        if resp.status >= 200 || resp.status == 101 {
            return resp;
        }
    }
}

/// Like [`request`] but returns connection and parse errors instead of panicking.
pub async fn try_request(addr: SocketAddr, raw: &[u8]) -> std::io::Result<RawResponse> {
    let mut conn = HttpConn::try_connect(addr).await?;
    conn.try_send(raw).await?;
    loop {
        let resp = conn.try_read_response().await?;
        if resp.status >= 200 || resp.status == 101 {
            return Ok(resp);
        }
    }
}

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
