//! HTTP/1.1 spoken by the request's own task on a backend connection (plain TCP, or TLS that
//! did not negotiate HTTP/2), for requests without a body. The request head is written and
//! the response head parsed where the request runs; the response body is read by whoever
//! polls it (the client connection's task). No connection task, channel or wake-up sits
//! between them.
//!
//! hyper's client runs a task per connection and hands every request and response over
//! channels. That hand-over, its dispatcher and its second parse were about a third of
//! gorouter's user-space work per keep-alive request (BENCHMARKS.md). Requests with a body,
//! upgrades and `Expect: 100-continue` keep hyper's client, which streams a body while it
//! reads the response.
//!
//! The wire rules are hyper's client's, so both paths answer alike: header names in Go's case,
//! no `Transfer-Encoding` on a body-less request, 1xx heads skipped, RFC 9112's framing rules
//! for the response body, the same limits on the head, chunk lines and trailers.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use smallvec::SmallVec;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::pool::IdleConnections;
use super::Sender;
use crate::proxy::body::RequestBody;
use crate::proxy::headers::value_has_token;
use crate::proxy::wire::{self, last_token_is, range_in, write_title_case};

/// Bytes of response head (1xx heads included) buffered before the response is refused:
/// hyper's read-buffer limit, which its client path has too.
pub const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;

/// Header lines a response head may have in the array kept on the stack; past it, one parse
/// with [`super::RESPONSE_MAX_HEADERS`] entries on the heap.
const STACK_HEADERS: usize = 100;

/// Headers a response map made new has room for beyond the backend's (see `build_head`).
const HEADROOM_FOR_NEXT_REQUEST: usize = 16;

/// Bytes of one chunk-size line with its extensions (hyper's limit).
const MAX_CHUNK_LINE: usize = 16 * 1024;

/// Bytes of a chunked body's trailer section (hyper's limit).
const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// First read size; doubled while reads fill the buffer, up to [`MAX_READ`].
const FIRST_READ: usize = 8 * 1024;
const MAX_READ: usize = 128 * 1024;

/// A request head buffer larger than this is not kept while the connection is idle.
const MAX_KEPT_WRITE_BUFFER: usize = 64 * 1024;

/// Why an exchange on an inline connection failed.
#[derive(Debug, thiserror::Error)]
pub enum InlineError {
    /// Writing the request head failed before its first byte left: the backend saw nothing.
    #[error("write: {0}")]
    NotSent(io::Error),
    #[error("write: {0}")]
    Write(io::Error),
    #[error("read: {0}")]
    Read(io::Error),
    /// The backend closed the connection before a byte of the response (Go's `io.EOF`).
    #[error("EOF")]
    Closed,
    /// The backend closed the connection inside the response head.
    #[error("unexpected EOF")]
    ClosedInHead,
    #[error("malformed HTTP response: {0}")]
    Malformed(httparse::Error),
    #[error("malformed HTTP response: {0}")]
    BadFraming(&'static str),
    /// Past [`MAX_HEAD_BYTES`], or past [`super::RESPONSE_MAX_HEADERS`] lines.
    #[error("server response headers exceeded {MAX_HEAD_BYTES} bytes; aborted")]
    HeadTooLarge,
    #[error("unexpected 101 Switching Protocols to a request that asked for no upgrade")]
    UnaskedUpgrade,
}

impl InlineError {
    /// Whether the request certainly never reached the backend.
    pub fn sent_nothing(&self) -> bool {
        matches!(self, InlineError::NotSent(_))
    }

    /// The I/O error under it, if any (a TLS alert from the backend surfaces as one).
    pub fn io(&self) -> Option<&io::Error> {
        match self {
            InlineError::NotSent(e) | InlineError::Write(e) | InlineError::Read(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the backend reset the connection ("connection reset by peer", A.6).
    pub fn is_reset(&self) -> bool {
        self.io()
            .is_some_and(|e| e.kind() == io::ErrorKind::ConnectionReset)
    }

    /// Whether the connection broke before any response came: reset, aborted, or closed. A
    /// response that arrived malformed is not lost on the wire.
    pub fn lost_on_the_wire(&self) -> bool {
        use io::ErrorKind;
        matches!(self, InlineError::Closed | InlineError::ClosedInHead)
            || self.io().is_some_and(|e| {
                matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::BrokenPipe
                        | ErrorKind::UnexpectedEof
                )
            })
    }
}

/// Whether `req` can go over an inline connection: no body to stream, no upgrade, no
/// `CONNECT`, and HTTP/1.1 on the wire (the proxy hands every request to the round trip as
/// HTTP/1.1, an HTTP/1.0 or HTTP/2 client's too).
pub fn can_send(req: &Request<RequestBody>) -> bool {
    matches!(req.version(), Version::HTTP_11 | Version::HTTP_2)
        && *req.method() != Method::CONNECT
        && http_body::Body::is_end_stream(req.body())
        && !req.headers().contains_key(header::UPGRADE)
}

/// A backend connection's byte stream: plain TCP, or TLS over it (boxed: a TLS session is
/// kilobytes, and a plain connection should not carry its size).
pub enum BackendStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl BackendStream {
    fn tcp(&self) -> &TcpStream {
        match self {
            BackendStream::Plain(s) => s,
            BackendStream::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for BackendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            BackendStream::Plain(s) => s.is_write_vectored(),
            BackendStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_flush(cx),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A backend connection spoken to directly (see the module doc).
pub struct InlineHttp1 {
    stream: BackendStream,
    /// Bytes read and not yet handed on. Empty between exchanges: a connection with bytes
    /// nobody asked for is not reused.
    read_buf: BytesMut,
    /// The request head being written, kept between requests.
    write_buf: Vec<u8>,
    next_read: usize,
    /// The serving thread ([`process_setup::runtime_threads`]) whose I/O driver the socket is
    /// registered with.
    home: usize,
}

impl InlineHttp1 {
    /// A connection dialled on the calling thread.
    pub fn new(stream: BackendStream) -> Self {
        Self {
            stream,
            read_buf: BytesMut::new(),
            write_buf: Vec::new(),
            next_read: FIRST_READ,
            home: process_setup::runtime_threads::current_index(),
        }
    }

    pub fn home(&self) -> usize {
        self.home
    }

    /// Whether an idle connection is unusable: the backend closed it, reset it, or sent
    /// bytes nobody asked for. Reads the readiness the runtime's I/O driver already recorded,
    /// so an idle connection with no event costs no system call. On TLS, records that carry
    /// no data (a TLS 1.3 server's session tickets) are taken in and the connection stays.
    pub fn is_closed(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.tcp().poll_read_ready(&mut cx) {
            Poll::Pending => return false,
            Poll::Ready(Err(_)) => return true,
            // Readable: an end of file, an error, bytes, or a stale readiness that a read
            // finds empty.
            Poll::Ready(Ok(())) => {}
        }
        match &mut self.stream {
            BackendStream::Plain(s) => {
                let mut probe = [0u8; 1];
                !matches!(s.try_read(&mut probe),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            BackendStream::Tls(s) => {
                let mut probe = [0u8; 1];
                let mut probe = ReadBuf::new(&mut probe);
                // Pending: nothing but records rustls keeps to itself.
                Pin::new(s.as_mut())
                    .poll_read(&mut cx, &mut probe)
                    .is_ready()
            }
        }
    }

    /// The stream, for hyper's client to take over (a request this path does not send).
    pub fn into_stream(self) -> BackendStream {
        self.stream
    }

    /// Writes `req`'s head and reads the response head (skipping 1xx heads). The request
    /// stays the caller's, to be sent again if it was lost on the wire. Once a response head
    /// has come, the request's header map is taken for the response's (see `build_head`):
    /// it is not needed any more, and its allocation then serves the connection's next
    /// request as well.
    pub async fn send(
        &mut self,
        req: &mut Request<RequestBody>,
    ) -> Result<ResponseHead, InlineError> {
        if self.write_buf.capacity() > MAX_KEPT_WRITE_BUFFER {
            self.write_buf = Vec::new();
        }
        self.write_buf.clear();
        encode_request_head(req, &mut self.write_buf);
        // With the thread's other ready requests' writes, not one at a time (see `send_batch`).
        crate::proxy::send_batch::let_others_read_first().await;
        let mut written = 0;
        while written < self.write_buf.len() {
            let wrote = match self.stream.write(&self.write_buf[written..]).await {
                Ok(0) => Err(io::Error::from(io::ErrorKind::WriteZero)),
                other => other,
            };
            match wrote {
                Ok(n) => written += n,
                Err(e) if written == 0 => return Err(InlineError::NotSent(e)),
                Err(e) => return Err(InlineError::Write(e)),
            }
        }
        // TLS holds records back until flushed; plain TCP has nothing to flush.
        self.stream.flush().await.map_err(InlineError::Write)?;
        let head_request = *req.method() == Method::HEAD;
        let mut spare = Some(std::mem::take(req.headers_mut()));
        let head = self.read_head(head_request, &mut spare).await;
        // Still there: no response head was built, and the request may be sent again.
        if let Some(headers) = spare {
            *req.headers_mut() = headers;
        }
        head
    }

    /// Reads the response head; `spare` is the map its headers go into, taken only once the
    /// whole head has been read.
    async fn read_head(
        &mut self,
        head_request: bool,
        spare: &mut Option<HeaderMap>,
    ) -> Result<ResponseHead, InlineError> {
        loop {
            if !self.read_buf.is_empty() {
                match parse_head(&mut self.read_buf, head_request, spare)? {
                    Parsed::Head(head) => return Ok(head),
                    Parsed::Informational => continue,
                    Parsed::Partial => {}
                }
            }
            if self.read_buf.len() >= MAX_HEAD_BYTES {
                return Err(InlineError::HeadTooLarge);
            }
            let n = std::future::poll_fn(|cx| self.poll_fill(cx))
                .await
                .map_err(InlineError::Read)?;
            if n == 0 {
                return Err(match self.read_buf.is_empty() {
                    true => InlineError::Closed,
                    false => InlineError::ClosedInHead,
                });
            }
        }
    }

    /// Reads what the socket has into the buffer; `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        wire::rewind(&mut self.read_buf, self.next_read);
        let spare = self.read_buf.capacity() - self.read_buf.len();
        if spare < self.next_read / 2 {
            self.read_buf.reserve(self.next_read);
        }
        let room = self.read_buf.capacity() - self.read_buf.len();
        let polled =
            tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.read_buf);
        if let Poll::Ready(Ok(n)) = polled {
            if n == room && self.next_read < MAX_READ {
                self.next_read *= 2;
            }
        }
        polled
    }
}

/// Writes the request line and headers as hyper's client does with title-case headers.
fn encode_request_head(req: &Request<RequestBody>, dst: &mut Vec<u8>) {
    dst.extend_from_slice(req.method().as_str().as_bytes());
    dst.push(b' ');
    let uri = req.uri();
    match uri.path_and_query() {
        Some(pq) if uri.scheme().is_none() => dst.extend_from_slice(pq.as_str().as_bytes()),
        _ => {
            use std::io::Write;
            let _ = write!(dst, "{uri}");
        }
    }
    dst.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        // A body-less request has no transfer coding (hyper drops the header as well).
        if name == header::TRANSFER_ENCODING {
            continue;
        }
        write_title_case(dst, name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
}

/// How the response body is delimited (RFC 9112 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the backend closes the connection, which is then not reused.
    CloseDelimited,
}

/// A parsed response head and what it says about the body and the connection.
pub struct ResponseHead {
    pub response: Response<()>,
    pub framing: Framing,
    pub keep_alive: bool,
}

enum Parsed {
    Head(ResponseHead),
    /// A 1xx head, consumed and skipped.
    Informational,
    Partial,
}

/// Where each header's name and value lie in the head: `[name start, name end, value start,
/// value end]`.
type HeaderIndices = [usize; 4];

/// The header positions of one head; on the stack (uninitialised until pushed) for up to
/// [`STACK_HEADERS`] lines.
type Indices = SmallVec<[HeaderIndices; STACK_HEADERS]>;

/// What httparse found, as offsets into the buffer so it can be split off afterwards.
struct RawHead {
    len: usize,
    code: u16,
    reason: (usize, usize),
    http11: bool,
}

fn parse_raw<'b>(
    buf: &'b [u8],
    headers: &mut [MaybeUninit<httparse::Header<'b>>],
    indices: &mut Indices,
) -> Result<Option<RawHead>, httparse::Error> {
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, headers)?
    {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    indices.clear();
    for h in res.headers.iter() {
        let name = range_in(buf, h.name.as_bytes()).ok_or(httparse::Error::HeaderName)?;
        let value = range_in(buf, h.value).ok_or(httparse::Error::HeaderValue)?;
        indices.push([name.0, name.1, value.0, value.1]);
    }
    let reason =
        range_in(buf, res.reason.unwrap_or_default().as_bytes()).ok_or(httparse::Error::Status)?;
    Ok(Some(RawHead {
        len,
        code: res.code.unwrap_or_default(),
        reason,
        http11: res.version == Some(1),
    }))
}

fn parse_head(
    buf: &mut BytesMut,
    head_request: bool,
    spare: &mut Option<HeaderMap>,
) -> Result<Parsed, InlineError> {
    let mut indices = Indices::new();
    // Uninitialised: zeroing the array for every response cost more than parsing it.
    let mut headers = [const { MaybeUninit::uninit() }; STACK_HEADERS];
    let raw = match parse_raw(buf, &mut headers, &mut indices) {
        Err(httparse::Error::TooManyHeaders) => {
            let mut many = Vec::new();
            many.resize_with(super::RESPONSE_MAX_HEADERS, MaybeUninit::uninit);
            parse_raw(buf, &mut many, &mut indices).map_err(|e| match e {
                // hyper's client answers the same.
                httparse::Error::TooManyHeaders => InlineError::HeadTooLarge,
                e => InlineError::Malformed(e),
            })?
        }
        other => other.map_err(InlineError::Malformed)?,
    };
    match raw {
        Some(raw) => build_head(buf, raw, &indices, head_request, spare),
        None => Ok(Parsed::Partial),
    }
}

/// Builds the response head from what httparse found. Its headers go into `spare` (the sent
/// request's map, cleared) when there is one: hyper's server clears the response's map once
/// the response is written and parses the connection's next request into it, so one
/// allocation carries every request and response of a connection, and the stages' dozen added
/// headers do not grow it again.
fn build_head(
    buf: &mut BytesMut,
    raw: RawHead,
    indices: &[HeaderIndices],
    head_request: bool,
    spare: &mut Option<HeaderMap>,
) -> Result<Parsed, InlineError> {
    let head = buf.split_to(raw.len).freeze();
    let status = StatusCode::from_u16(raw.code)
        .map_err(|_| InlineError::Malformed(httparse::Error::Status))?;
    match raw.code {
        101 => return Err(InlineError::UnaskedUpgrade),
        100..=199 => return Ok(Parsed::Informational),
        _ => {}
    }
    let mut headers = match spare.take() {
        Some(mut headers) => {
            headers.clear();
            headers.reserve(indices.len());
            headers
        }
        None => HeaderMap::with_capacity(indices.len() + HEADROOM_FOR_NEXT_REQUEST),
    };
    let mut keep_alive = raw.http11;
    let mut saw_close = false;
    let mut transfer_encoding: Option<bool> = None;
    let mut content_length: Option<Result<u64, ()>> = None;
    for i in indices {
        let name = wire::header_name(&head[i[0]..i[1]])
            .map_err(|_| InlineError::Malformed(httparse::Error::HeaderName))?;
        let value = HeaderValue::from_maybe_shared(head.slice(i[2]..i[3]))
            .map_err(|_| InlineError::Malformed(httparse::Error::HeaderValue))?;
        if name == header::CONNECTION {
            // Once any `Connection` line asks to close, a later `keep-alive` does not undo it.
            if saw_close || value_has_token(&value, "close") {
                saw_close = true;
                keep_alive = false;
            } else if !keep_alive {
                keep_alive = value_has_token(&value, "keep-alive");
            }
            // Read, and not kept: the response stage removes `Connection` (A.8), and the only
            // header this one names is hop-by-hop itself. Most backends that send one say just
            // this, and adding it to the map to remove it again cost 1,000 instructions.
            if value.as_bytes().eq_ignore_ascii_case(b"keep-alive") {
                continue;
            }
        } else if name == header::TRANSFER_ENCODING {
            // The last coding of the last line decides.
            transfer_encoding = Some(last_token_is(value.as_bytes(), b"chunked"));
        } else if name == header::CONTENT_LENGTH {
            content_length = Some(
                match (content_length, wire::content_length(value.as_bytes())) {
                    (None, Some(n)) => Ok(n),
                    (Some(Ok(a)), Some(b)) if a == b => Ok(a),
                    _ => Err(()),
                },
            );
        }
        headers.append(name, value);
    }
    let framing = if matches!(raw.code, 204 | 304) || head_request {
        Framing::Empty
    } else if let Some(chunked) = transfer_encoding {
        if !raw.http11 {
            return Err(InlineError::BadFraming(
                "Transfer-Encoding in an HTTP/1.0 response",
            ));
        }
        match chunked {
            true => Framing::Chunked,
            false => Framing::CloseDelimited,
        }
    } else {
        match content_length {
            Some(Ok(0)) => Framing::Empty,
            Some(Ok(n)) => Framing::Length(n),
            Some(Err(())) => return Err(InlineError::BadFraming("invalid Content-Length")),
            None => Framing::CloseDelimited,
        }
    };
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = match raw.http11 {
        true => Version::HTTP_11,
        false => Version::HTTP_10,
    };
    *response.headers_mut() = headers;
    let reason = &head[raw.reason.0..raw.reason.1];
    if Some(reason) != status.canonical_reason().map(str::as_bytes) {
        if let Ok(reason) =
            hyper::ext::ReasonPhrase::try_from(head.slice(raw.reason.0..raw.reason.1))
        {
            response.extensions_mut().insert(reason);
        }
    }
    Ok(Parsed::Head(ResponseHead {
        response,
        framing,
        keep_alive: keep_alive && framing != Framing::CloseDelimited,
    }))
}

/// Where a chunked body's decoding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    Length(u64),
    Chunked(Chunked),
    Close,
    Done,
}

/// What polling an [`InlineBody`] gives.
type PolledFrame = Poll<Option<Result<Frame<Bytes>, InlineBodyError>>>;

/// A response body read from an inline connection. When it ends cleanly on a connection that
/// may be kept, the connection goes back to its pool through
/// [`take_connection`](Self::take_connection).
pub struct InlineBody {
    conn: Option<Box<InlineHttp1>>,
    state: BodyState,
    keep_alive: bool,
    pool: Option<Arc<IdleConnections>>,
}

/// An error in a response body on an inline connection.
#[derive(Debug, thiserror::Error)]
pub enum InlineBodyError {
    #[error("unexpected EOF")]
    UnexpectedEof,
    #[error("read: {0}")]
    Read(io::Error),
    #[error("invalid chunked body: {0}")]
    Chunked(&'static str),
}

impl InlineBody {
    /// The body `head` announced, read from `conn`; `pool` takes the connection back when the
    /// body ends cleanly (none: it is closed).
    pub fn new(
        conn: Box<InlineHttp1>,
        head: &ResponseHead,
        pool: Option<Arc<IdleConnections>>,
    ) -> Self {
        let state = match head.framing {
            Framing::Empty => BodyState::Done,
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::Chunked(Chunked::Size),
            Framing::CloseDelimited => BodyState::Close,
        };
        let mut body = Self {
            conn: Some(conn),
            state,
            keep_alive: head.keep_alive,
            pool,
        };
        if body.state == BodyState::Done {
            body.finish();
        }
        body
    }

    /// The connection, ready for another request, once the body ended cleanly and the
    /// connection may be kept.
    pub fn take_connection(&mut self) -> Option<(Sender, Arc<IdleConnections>)> {
        if self.state != BodyState::Done {
            return None;
        }
        let conn = self.conn.take()?;
        let pool = self.pool.take()?;
        Some((Sender::Inline(conn), pool))
    }

    /// The body ended: a connection that may not be kept, or holds bytes past the response,
    /// is closed now.
    fn finish(&mut self) {
        self.state = BodyState::Done;
        let reusable = self.keep_alive
            && self.pool.is_some()
            && self.conn.as_ref().is_some_and(|c| c.read_buf.is_empty());
        if !reusable {
            self.conn = None;
        }
    }

    fn fail(&mut self, e: InlineBodyError) -> PolledFrame {
        self.state = BodyState::Done;
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }
}

impl Body for InlineBody {
    type Data = Bytes;
    type Error = InlineBodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> PolledFrame {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let buffered = conn.read_buf.len();
            // Decode what is buffered; `None` asks for a read.
            let step: Option<PolledFrame> = match this.state {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Length(left) | BodyState::Chunked(Chunked::Data(left))
                    if buffered > 0 =>
                {
                    let take = left.min(buffered as u64) as usize;
                    let data = conn.read_buf.split_to(take).freeze();
                    let left = left - take as u64;
                    match this.state {
                        BodyState::Length(_) if left == 0 => this.finish(),
                        BodyState::Length(_) => this.state = BodyState::Length(left),
                        _ if left == 0 => this.state = BodyState::Chunked(Chunked::DataEnd),
                        _ => this.state = BodyState::Chunked(Chunked::Data(left)),
                    }
                    Some(Poll::Ready(Some(Ok(Frame::data(data)))))
                }
                BodyState::Close if buffered > 0 => {
                    let data = conn.read_buf.split().freeze();
                    Some(Poll::Ready(Some(Ok(Frame::data(data)))))
                }
                BodyState::Chunked(Chunked::Size) => match find_crlf(&conn.read_buf) {
                    Some(end) => {
                        let size = chunk_size(&conn.read_buf[..end]);
                        conn.read_buf.advance(end + 2);
                        match size {
                            Some(0) => this.state = BodyState::Chunked(Chunked::Trailers),
                            Some(n) => this.state = BodyState::Chunked(Chunked::Data(n)),
                            None => return this.fail(InlineBodyError::Chunked("bad chunk size")),
                        }
                        continue;
                    }
                    None if buffered > MAX_CHUNK_LINE => {
                        return this.fail(InlineBodyError::Chunked("chunk size line too long"))
                    }
                    None => None,
                },
                BodyState::Chunked(Chunked::DataEnd) if buffered >= 2 => {
                    if &conn.read_buf[..2] != b"\r\n" {
                        return this.fail(InlineBodyError::Chunked("no CRLF after chunk data"));
                    }
                    conn.read_buf.advance(2);
                    this.state = BodyState::Chunked(Chunked::Size);
                    continue;
                }
                BodyState::Chunked(Chunked::Trailers) if buffered >= 2 => {
                    if conn.read_buf.starts_with(b"\r\n") {
                        conn.read_buf.advance(2);
                        this.finish();
                        return Poll::Ready(None);
                    }
                    match parse_trailers(&mut conn.read_buf) {
                        Ok(Some(trailers)) => {
                            this.finish();
                            Some(Poll::Ready(Some(Ok(Frame::trailers(trailers)))))
                        }
                        Ok(None) if buffered > MAX_TRAILER_BYTES => {
                            return this.fail(InlineBodyError::Chunked("trailers too large"))
                        }
                        Ok(None) => None,
                        Err(e) => return this.fail(e),
                    }
                }
                _ => None,
            };
            if let Some(ready) = step {
                return ready;
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match conn.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return this.fail(InlineBodyError::Read(e)),
                Poll::Ready(Ok(0)) if this.state == BodyState::Close => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => return this.fail(InlineBodyError::UnexpectedEof),
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == BodyState::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            BodyState::Done => SizeHint::with_exact(0),
            BodyState::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// The size of a chunk-size line, extensions ignored.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let end = line
        .iter()
        .position(|&b| b == b';' || b == b' ' || b == b'\t')
        .unwrap_or(line.len());
    let hex = &line[..end];
    if hex.is_empty() || hex.len() > 16 {
        return None;
    }
    hex.iter().try_fold(0u64, |n, &d| {
        let v = (d as char).to_digit(16)?;
        n.checked_mul(16)?.checked_add(u64::from(v))
    })
}

/// The trailer section, if buffered whole (with its closing empty line).
fn parse_trailers(buf: &mut BytesMut) -> Result<Option<HeaderMap>, InlineBodyError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let (len, parsed) = match httparse::parse_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete((len, parsed))) => (len, parsed),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(InlineBodyError::Chunked("malformed trailers")),
    };
    let mut trailers = HeaderMap::with_capacity(parsed.len());
    for h in parsed.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| InlineBodyError::Chunked("malformed trailer name"))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| InlineBodyError::Chunked("malformed trailer value"))?;
        trailers.append(name, value);
    }
    buf.advance(len);
    Ok(Some(trailers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A backend that reads one request head per answer and writes the answers in order,
    /// each in the pieces given; the request heads it saw come back when it is done.
    async fn scripted(
        answers: Vec<Vec<&'static [u8]>>,
    ) -> (TcpStream, tokio::task::JoinHandle<Vec<Vec<u8>>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let backend = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut seen = Vec::new();
            for pieces in answers {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut b).await.unwrap() == 0 {
                        return seen;
                    }
                    head.push(b[0]);
                }
                seen.push(head);
                for p in pieces {
                    s.write_all(p).await.unwrap();
                    s.flush().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            seen
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        (stream, backend)
    }

    fn get(path: &str) -> Request<RequestBody> {
        Request::builder()
            .uri(path)
            .header("host", "app.example")
            .header("x-forwarded-for", "10.0.0.1")
            .body(RequestBody::empty())
            .unwrap()
    }

    fn pool() -> Arc<IdleConnections> {
        Arc::new(IdleConnections::new(
            4,
            super::super::IdleBudget::new(0),
            Duration::from_secs(90),
            1,
        ))
    }

    /// Sends `req`, reads the whole body; the body's bytes, trailers and connection.
    async fn round_trip(
        conn: InlineHttp1,
        mut req: Request<RequestBody>,
    ) -> Result<
        (
            Response<()>,
            Vec<u8>,
            Option<HeaderMap>,
            Option<InlineHttp1>,
        ),
        InlineError,
    > {
        let mut conn = conn;
        let head = conn.send(&mut req).await?;
        let mut body = InlineBody::new(Box::new(conn), &head, Some(pool()));
        let mut data = Vec::new();
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("a sound body");
            match frame.into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(f) => trailers = f.into_trailers().ok(),
            }
        }
        let conn = match body.take_connection() {
            Some((Sender::Inline(c), _)) => Some(*c),
            _ => None,
        };
        Ok((head.response, data, trailers, conn))
    }

    #[tokio::test]
    async fn the_request_head_is_written_in_go_case_without_a_transfer_coding() {
        let (stream, backend) = scripted(vec![vec![b"HTTP/1.1 204 No Content\r\n\r\n"]]).await;
        let mut req = get("/a/b?c=d");
        req.headers_mut()
            .insert("transfer-encoding", HeaderValue::from_static("chunked"));
        round_trip(InlineHttp1::new(BackendStream::Plain(stream)), req)
            .await
            .unwrap();
        let seen = backend.await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&seen[0]),
            "GET /a/b?c=d HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn a_sized_body_is_read_and_the_connection_serves_the_next_request() {
        let (stream, backend) = scripted(vec![
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", b"lo"],
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbye"],
        ])
        .await;
        let (resp, data, _, conn) =
            round_trip(InlineHttp1::new(BackendStream::Plain(stream)), get("/1"))
                .await
                .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(data, b"hello");
        let conn = conn.expect("kept for reuse");
        let (_, data, _, conn) = round_trip(conn, get("/2")).await.unwrap();
        assert_eq!(data, b"bye");
        assert!(conn.is_some());
        assert_eq!(backend.await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_chunked_body_and_its_trailers_are_decoded() {
        let (stream, _backend) = scripted(vec![vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhel",
            b"lo\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n",
        ]])
        .await;
        let (_, data, trailers, conn) =
            round_trip(InlineHttp1::new(BackendStream::Plain(stream)), get("/"))
                .await
                .unwrap();
        assert_eq!(data, b"hello world");
        assert_eq!(trailers.unwrap()["x-checksum"], "abc");
        assert!(
            conn.is_some(),
            "a chunked body ends cleanly: the connection is kept"
        );
    }

    #[tokio::test]
    async fn a_body_without_length_runs_to_the_close_and_the_connection_is_not_kept() {
        let (stream, _backend) =
            scripted(vec![vec![b"HTTP/1.1 200 OK\r\n\r\nuntil the end"]]).await;
        let (_, data, _, conn) =
            round_trip(InlineHttp1::new(BackendStream::Plain(stream)), get("/"))
                .await
                .unwrap();
        assert_eq!(data, b"until the end");
        assert!(conn.is_none());
    }

    #[tokio::test]
    async fn a_head_response_has_no_body_whatever_its_length_says() {
        let (stream, _backend) = scripted(vec![vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",
        ]])
        .await;
        let mut req = get("/");
        *req.method_mut() = Method::HEAD;
        let (resp, data, _, conn) = round_trip(InlineHttp1::new(BackendStream::Plain(stream)), req)
            .await
            .unwrap();
        assert_eq!(resp.headers()["content-length"], "1234");
        assert!(data.is_empty());
        assert!(conn.is_some());
    }

    #[tokio::test]
    async fn the_response_head_takes_the_request_header_map() {
        let (stream, _backend) = scripted(vec![vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nServer: x\r\n\r\n",
        ]])
        .await;
        let mut req = get("/");
        req.headers_mut().reserve(100);
        let room = req.headers().capacity();
        let mut conn = InlineHttp1::new(BackendStream::Plain(stream));
        let head = conn.send(&mut req).await.unwrap();
        assert_eq!(head.response.headers()["server"], "x");
        assert_eq!(
            head.response.headers().len(),
            2,
            "only the response's headers"
        );
        assert!(
            head.response.headers().capacity() >= room,
            "the request's allocation"
        );
        assert!(req.headers().is_empty());
    }

    #[tokio::test]
    async fn a_request_lost_on_the_wire_keeps_its_headers_for_the_retry() {
        let (stream, backend) = scripted(vec![vec![]]).await;
        let mut conn = InlineHttp1::new(BackendStream::Plain(stream));
        let mut req = get("/");
        let (result, _) = tokio::join!(conn.send(&mut req), backend);
        assert!(result.err().is_some_and(|e| e.lost_on_the_wire()));
        assert_eq!(req.headers()["host"], "app.example");
        assert_eq!(req.headers()["x-forwarded-for"], "10.0.0.1");
    }

    #[tokio::test]
    async fn informational_heads_are_skipped() {
        let (stream, _backend) = scripted(vec![vec![
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ]])
        .await;
        let (resp, data, _, _) =
            round_trip(InlineHttp1::new(BackendStream::Plain(stream)), get("/"))
                .await
                .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().get("link").is_none());
        assert_eq!(data, b"ok");
    }

    #[tokio::test]
    async fn a_connection_keep_alive_is_read_and_left_out_of_the_head_and_others_are_kept() {
        let (stream, _backend) = scripted(vec![
            vec![b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok"],
            vec![b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Gone\r\nX-Gone: 1\r\nContent-Length: 0\r\n\r\n"],
        ])
        .await;
        let (resp, _, _, conn) =
            round_trip(InlineHttp1::new(BackendStream::Plain(stream)), get("/"))
                .await
                .unwrap();
        assert!(resp.headers().get(header::CONNECTION).is_none());
        let conn = conn.expect("an HTTP/1.0 keep-alive connection is kept");
        let (resp, _, _, _) = round_trip(conn, get("/")).await.unwrap();
        assert_eq!(
            resp.headers()[header::CONNECTION],
            "keep-alive, X-Gone",
            "a value naming other headers stays for the response stage to act on"
        );
    }

    #[tokio::test]
    async fn connection_close_and_http_1_0_responses_are_not_kept() {
        for answer in [
            &b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"[..],
            &b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"[..],
        ] {
            let (stream, _backend) = scripted(vec![vec![answer]]).await;
            let (_, data, _, conn) =
                round_trip(InlineHttp1::new(BackendStream::Plain(stream)), get("/"))
                    .await
                    .unwrap();
            assert_eq!(data, b"ok");
            assert!(conn.is_none(), "{}", String::from_utf8_lossy(answer));
        }
    }

    #[tokio::test]
    async fn a_head_arriving_byte_by_byte_is_parsed_once_whole() {
        const HEAD: &[u8] = b"HTTP/1.1 200 Fine Thanks\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n";
        let pieces: Vec<&'static [u8]> = (0..HEAD.len()).map(|i| &HEAD[i..i + 1]).collect();
        let (stream, _backend) = scripted(vec![pieces]).await;
        let (resp, _, _, conn) =
            round_trip(InlineHttp1::new(BackendStream::Plain(stream)), get("/"))
                .await
                .unwrap();
        assert_eq!(resp.headers().get_all("set-cookie").iter().count(), 2);
        let reason = resp.extensions().get::<hyper::ext::ReasonPhrase>().unwrap();
        assert_eq!(
            reason.as_bytes(),
            b"Fine Thanks",
            "a non-standard reason is kept"
        );
        assert!(conn.is_some());
    }

    #[tokio::test]
    async fn a_status_line_without_a_usable_reason_and_an_empty_header_value_are_read() {
        for answer in [
            &b"HTTP/1.1 200\r\nX-Empty:\r\nContent-Length: 2\r\n\r\nok"[..],
            &b"HTTP/1.1 200 \xc3\x96K\r\nX-Empty: \r\nContent-Length: 2\r\n\r\nok"[..],
        ] {
            let (stream, _backend) = scripted(vec![vec![answer]]).await;
            let (resp, data, _, conn) =
                round_trip(InlineHttp1::new(BackendStream::Plain(stream)), get("/"))
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(answer)));
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.headers()["x-empty"], "");
            // As hyper: the reason it cannot use is passed on empty.
            let reason = resp.extensions().get::<hyper::ext::ReasonPhrase>();
            assert_eq!(reason.map(|r| r.as_bytes()), Some(&b""[..]));
            assert_eq!(data, b"ok");
            assert!(conn.is_some());
        }
    }

    #[tokio::test]
    async fn a_head_with_more_lines_than_the_stack_array_is_read() {
        let mut head = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n".to_vec();
        for i in 0..150 {
            head.extend_from_slice(format!("Set-Cookie: c{i}=v\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        let head: &'static [u8] = Box::leak(head.into_boxed_slice());
        let (stream, _backend) = scripted(vec![vec![head]]).await;
        let (resp, _, _, _) = round_trip(InlineHttp1::new(BackendStream::Plain(stream)), get("/"))
            .await
            .unwrap();
        assert_eq!(resp.headers().get_all("set-cookie").iter().count(), 150);
    }

    #[tokio::test]
    async fn a_backend_closing_before_answering_is_lost_on_the_wire() {
        let (stream, backend) = scripted(vec![vec![]]).await;
        let mut conn = InlineHttp1::new(BackendStream::Plain(stream));
        let mut req = get("/");
        let send = conn.send(&mut req);
        let (result, _) = tokio::join!(send, backend);
        let err = result.err().expect("no response");
        assert!(matches!(err, InlineError::Closed), "{err:?}");
        assert_eq!(err.to_string(), "EOF");
        assert!(err.lost_on_the_wire());
    }

    #[tokio::test]
    async fn malformed_heads_and_lengths_are_refused_and_not_lost_on_the_wire() {
        for answer in [
            &b"HTTP/1.1 2x0 OK\r\n\r\n"[..],
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok"[..],
            &b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"[..],
            &b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        ] {
            let (stream, _backend) = scripted(vec![vec![answer]]).await;
            let err = InlineHttp1::new(BackendStream::Plain(stream))
                .send(&mut get("/"))
                .await
                .err();
            let err = err.unwrap_or_else(|| panic!("{} accepted", String::from_utf8_lossy(answer)));
            assert!(
                err.to_string().starts_with("malformed HTTP response"),
                "{err}"
            );
            assert!(!err.lost_on_the_wire());
        }
    }

    #[tokio::test]
    async fn a_head_past_the_limit_is_refused() {
        let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
        while head.len() <= MAX_HEAD_BYTES {
            head.extend_from_slice(format!("X-Filler: {}\r\n", "0".repeat(1000)).as_bytes());
        }
        let head: &'static [u8] = Box::leak(head.into_boxed_slice());
        let (stream, _backend) = scripted(vec![vec![head]]).await;
        let err = InlineHttp1::new(BackendStream::Plain(stream))
            .send(&mut get("/"))
            .await
            .err();
        assert!(matches!(err, Some(InlineError::HeadTooLarge)), "{err:?}");
    }

    #[tokio::test]
    async fn a_bad_chunk_ends_the_body_with_an_error() {
        let (stream, _backend) = scripted(vec![vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ]])
        .await;
        let mut conn = InlineHttp1::new(BackendStream::Plain(stream));
        let head = conn.send(&mut get("/")).await.unwrap();
        let mut body = InlineBody::new(Box::new(conn), &head, Some(pool()));
        let frame = body.frame().await.expect("a frame");
        assert!(frame.is_err());
        assert!(body.take_connection().is_none());
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error_and_the_connection_is_dropped() {
        let (stream, backend) = scripted(vec![vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        ]])
        .await;
        let mut conn = InlineHttp1::new(BackendStream::Plain(stream));
        let head = conn.send(&mut get("/")).await.unwrap();
        let mut body = InlineBody::new(Box::new(conn), &head, Some(pool()));
        backend.await.unwrap(); // the backend closes its side
        let mut error = None;
        while let Some(frame) = body.frame().await {
            if let Err(e) = frame {
                error = Some(e);
                break;
            }
        }
        assert!(
            matches!(error, Some(InlineBodyError::UnexpectedEof)),
            "{error:?}"
        );
        assert!(body.take_connection().is_none());
    }

    #[tokio::test]
    async fn an_idle_connection_the_backend_closed_reads_as_closed() {
        let (stream, backend) =
            scripted(vec![vec![b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]]).await;
        let (_, _, _, conn) = round_trip(InlineHttp1::new(BackendStream::Plain(stream)), get("/"))
            .await
            .unwrap();
        let mut conn = conn.unwrap();
        assert!(!conn.is_closed(), "open and idle");
        backend.await.unwrap(); // drops the backend's socket
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while !conn.is_closed() {
            assert!(std::time::Instant::now() < deadline, "closure never seen");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A TLS 1.3 backend answering every request on a connection with `ok`, until `close`
    /// fires: then it sends close_notify.
    async fn tls_backend(close: tokio::sync::oneshot::Receiver<()>) -> std::net::SocketAddr {
        use crate::tls::test_pki::{server_config, Ca};
        let ca = Ca::new("inline-test-ca");
        let config = server_config(
            &ca.server_pair(&["localhost"]),
            None,
            &[&rustls::version::TLS13],
            None,
            &[],
        );
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = l.accept().await.unwrap();
            let mut tls = tokio_rustls::TlsAcceptor::from(config)
                .accept(tcp)
                .await
                .unwrap();
            let mut close = close;
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            loop {
                tokio::select! {
                    _ = &mut close => {
                        let _ = tls.shutdown().await;
                        return;
                    }
                    n = tls.read(&mut b) => {
                        if !matches!(n, Ok(1)) {
                            return;
                        }
                        head.push(b[0]);
                        if head.ends_with(b"\r\n\r\n") {
                            head.clear();
                            tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                                .await
                                .unwrap();
                            tls.flush().await.unwrap();
                        }
                    }
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_tls_connection_is_reused_and_its_close_notify_reads_as_closed() {
        let (close_tx, close_rx) = tokio::sync::oneshot::channel();
        let addr = tls_backend(close_rx).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let connector =
            tokio_rustls::TlsConnector::from(crate::tls::test_pki::trusting_client(None, &[]));
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        let conn = InlineHttp1::new(BackendStream::Tls(Box::new(tls)));
        let (_, data, _, conn) = round_trip(conn, get("/1")).await.unwrap();
        assert_eq!(data, b"ok");
        let mut conn = conn.expect("kept");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !conn.is_closed(),
            "idle after its session tickets, still open"
        );
        let (_, data, _, conn) = round_trip(conn, get("/2")).await.unwrap();
        assert_eq!(data, b"ok", "a second request on the same TLS connection");
        let mut conn = conn.expect("kept again");
        close_tx.send(()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while !conn.is_closed() {
            assert!(
                std::time::Instant::now() < deadline,
                "close_notify never seen"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn which_requests_go_inline() {
        assert!(can_send(&get("/")));
        let mut upgrade = get("/");
        upgrade
            .headers_mut()
            .insert("upgrade", HeaderValue::from_static("h2c"));
        assert!(!can_send(&upgrade));
        let mut old = get("/");
        *old.version_mut() = Version::HTTP_10;
        assert!(!can_send(&old));
        let mut connect = get("/");
        *connect.method_mut() = Method::CONNECT;
        assert!(!can_send(&connect));
    }
}
