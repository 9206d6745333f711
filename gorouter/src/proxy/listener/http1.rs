//! HTTP/1.1 served by the connection's own task, for requests without a body: the request head
//! read and parsed here, the handler awaited here, the response written here. Any other
//! request (a body, an upgrade, `Expect`, HTTP/1.0, CONNECT, a head that does not parse or is
//! larger than [`MAX_HEAD`]) hands the connection, with the bytes read so far, to hyper's
//! server for the rest of its life.
//!
//! After the backend side went inline, hyper's server was the largest part of gorouter's
//! user-space work per keep-alive request: its parse, its dispatcher polling the service and
//! the body, a boxed header-read timer per request, and its head writer (BENCHMARKS.md). The
//! wire rules here are hyper's server's, so a client sees the same response from either path:
//! header names in Go's case, `Date` added when missing, `Content-Length: 0` for an empty body,
//! chunked coding for a body of unknown length, `Connection: close` when the connection ends
//! after the response, trailers only to a client that sent `TE: trailers`. The timeouts are
//! hyper's with our `HeadTimer`: a head must arrive within `read_header_timeout` of its first
//! byte (the first head: of the connection's start), an idle connection closes after
//! `frontend_idle_timeout`, and a client that closes while its request is in flight cancels
//! the request.

use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use smallvec::SmallVec;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

use super::{ConnState, Connections, Handler, ListenerSettings};
use crate::proxy::body::{BoxError, ClientBody};
use crate::proxy::headers::{list_has_token, value_has_token};
use crate::proxy::send_batch::{let_others_read_first, Serving};
use crate::proxy::wire::{
    content_length, header_name, last_token_is, range_in, rewind, write_title_case,
};
use crate::proxy::ClientConn;

/// Bytes of a request head served here. A longer one goes to hyper, which applies
/// `max_header_bytes` and answers 431 past it.
const MAX_HEAD: usize = 16 * 1024;

/// Header lines of a request head served here, parsed into an array on the stack.
const MAX_HEADERS: usize = 64;

/// Bytes the read buffer is grown to when it has less than [`MIN_ROOM`] left.
const READ_SIZE: usize = 8 * 1024;

/// Room the read buffer must have before a read between requests. Below it the buffer is
/// grown, which then reuses the same allocation: the requests read from it are gone. Not while
/// a request is in flight: its head still shares the allocation, and growing it then would
/// allocate a new one for every request.
const MIN_ROOM: usize = 1024;

/// Bytes read ahead of the request in flight (a pipelining client's next requests) before
/// reading stops until they are served.
const MAX_READ_AHEAD: usize = 64 * 1024;

/// The response buffer's first size: a typical head and small body in one allocation, where
/// growing from empty reallocated it five or six times on every new connection.
const OUT_START: usize = 1024;

/// Response body chunks up to this size are copied behind the head and go out in the same
/// write; larger ones are written from where they are.
const COPY_LIMIT: usize = 16 * 1024;

/// Headers a new request map has room for beyond the client's: the stages add about a dozen.
const HEADROOM: usize = 16;

/// How serving a connection here ended.
pub(super) enum Ended<S> {
    /// The connection is done: either side closed it, it timed out, or the router shut it.
    Closed,
    /// A request this module does not serve: hyper's server takes `io`, reading `read` (the
    /// bytes read and not yet served) first.
    HandOff { io: S, read: Bytes },
}

/// What the connection's requests share.
pub(super) struct Session<'a, H> {
    pub handler: &'a Arc<H>,
    pub client: &'a Arc<ClientConn>,
    pub state: &'a ConnState,
    pub settings: &'a ListenerSettings,
    pub connections: &'a Connections,
}

impl<H> Session<'_, H> {
    /// The router is closing connections: the response in flight is the connection's last.
    fn closing(&self) -> bool {
        self.connections.closing.load(Ordering::Relaxed)
    }
}

/// Serves the connection's requests until it ends or a request needs hyper.
pub(super) async fn serve<H, S>(
    session: Session<'_, H>,
    mut io: S,
    close: &mut watch::Receiver<bool>,
) -> Ended<S>
where
    H: Handler,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut closing = *close.borrow();
    let mut shutdown = ShutdownPeek {
        rx: close.clone(),
        polled: false,
    };
    // One shutdown wait and one timer for the connection's life, not one per request.
    let mut closed = pin!(close.wait_for(|c| *c));
    let mut timer = pin!(tokio::time::sleep(Duration::ZERO));
    let mut buffers = ConnBuffers::take();
    let ConnBuffers {
        read: buf,
        out,
        headers: spare,
    } = &mut *buffers;
    // The first head is timed from the connection's start, as Go's server and `HeadTimer` do.
    let mut first_byte = Some(session.state.epoch);
    loop {
        let parsed = loop {
            if !buf.is_empty() {
                match parse_request(buf, spare) {
                    Head::Partial if buf.len() < MAX_HEAD => {
                        // Timed from here rather than from its first byte's read: a clock read
                        // only for heads that span reads.
                        first_byte.get_or_insert_with(Instant::now);
                    }
                    Head::Partial | Head::Hyper => return hand_off(io, std::mem::take(buf), None),
                    Head::HyperFrom(head) => return hand_off(io, std::mem::take(buf), Some(head)),
                    Head::Inline(parsed) => break parsed,
                }
            } else if closing {
                return Ended::Closed;
            }
            let bound = HeadBound {
                first_byte,
                settings: session.settings,
            };
            match wait_for_bytes(
                &mut io,
                buf,
                &mut closed,
                &mut shutdown,
                &mut closing,
                timer.as_mut(),
                bound,
            )
            .await
            {
                Waited::Read(Ok(0)) | Waited::Read(Err(_)) | Waited::TimedOut => {
                    return Ended::Closed
                }
                Waited::Read(Ok(_)) | Waited::Closing => {}
            }
        };
        first_byte = None;
        session.state.served_before.store(true, Ordering::Relaxed);

        let Parsed { request, mut rules } = parsed;
        // Counted until its response is written (see `send_batch`).
        let serving = Serving::start();
        // In a block of its own, so the finished handler's future and the response writer do
        // not both take room in the connection's future (which is copied once per connection).
        let (mut parts, body) = {
            // Pinned where it is made: the handler's future is large, and a move is a copy.
            let call = pin!(session.handler.call(session.client.clone(), request));
            match await_response(call, &mut io, buf).await {
                Some(response) => response.into_parts(),
                // The client left: dropping the handler's future cancels the exchange.
                None => return Ended::Closed,
            }
        };
        session.state.set_exchange_deadline(H::deadline(&body));
        rules.keep_alive &= !closing && !session.closing();
        let written = write_response(&mut io, buf, out, &mut parts, body, rules).await;
        drop(serving);
        parts.headers.clear();
        *spare = Some(parts.headers);
        match written {
            Ok(true) => {}
            Ok(false) => {
                let _ = io.shutdown().await;
                return Ended::Closed;
            }
            Err(e) => {
                tracing::debug!(error = %e, "client-connection-error");
                return Ended::Closed;
            }
        }
    }
}

/// Connections' buffers a thread keeps for its next connections, at most.
const KEPT_BUFFERS: usize = 64;

/// A read buffer, response buffer or header map larger than these (a pipelining client, a
/// large body chunk, a long head) is freed with its connection rather than kept.
const KEPT_READ: usize = 2 * READ_SIZE;
const KEPT_OUT: usize = 2 * COPY_LIMIT;
const KEPT_HEADERS: usize = 4 * MAX_HEADERS;

thread_local! {
    static KEPT: std::cell::RefCell<Vec<ConnBuffers>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A connection's read and response buffers and its header map. When the connection ends
/// they go back to its thread for the next connection: allocating them anew (8 KiB past
/// malloc's per-thread cache, and a header map's two blocks) cost about 2,000 instructions
/// per connection (BENCHMARKS.md). Only buffers nothing else still points into are kept.
#[derive(Default)]
struct ConnBuffers {
    read: BytesMut,
    out: Vec<u8>,
    headers: Option<HeaderMap>,
}

impl ConnBuffers {
    /// A kept set, or an empty one (its buffers are allocated on first use).
    fn take() -> KeptOnDrop {
        let kept = KEPT
            .try_with(|kept| kept.try_borrow_mut().ok().and_then(|mut k| k.pop()))
            .ok()
            .flatten();
        KeptOnDrop(kept.unwrap_or_default())
    }

    /// Empties the buffers for another connection; `false` when one is too large or still
    /// shared, and the set is better freed.
    fn reset(&mut self) -> bool {
        self.read.clear();
        self.out.clear();
        if let Some(headers) = &mut self.headers {
            headers.clear();
        }
        // Reclaims the whole allocation once the heads split off it are gone.
        self.read.try_reclaim(READ_SIZE)
            && self.read.capacity() <= KEPT_READ
            && self.out.capacity() <= KEPT_OUT
            && self
                .headers
                .as_ref()
                .is_none_or(|h| h.capacity() <= KEPT_HEADERS)
    }
}

/// Gives the set back to the thread when the connection's task ends, however it ends.
struct KeptOnDrop(ConnBuffers);

impl std::ops::Deref for KeptOnDrop {
    type Target = ConnBuffers;
    fn deref(&self) -> &ConnBuffers {
        &self.0
    }
}

impl std::ops::DerefMut for KeptOnDrop {
    fn deref_mut(&mut self) -> &mut ConnBuffers {
        &mut self.0
    }
}

impl Drop for KeptOnDrop {
    fn drop(&mut self) {
        let mut buffers = std::mem::take(&mut self.0);
        if !buffers.reset() {
            return;
        }
        // Not while the thread's locals are being torn down, and a full pool frees the set
        // outside the borrow.
        let _ = KEPT.try_with(|kept| {
            if let Ok(mut kept) = kept.try_borrow_mut() {
                if kept.len() < KEPT_BUFFERS {
                    kept.push(buffers);
                }
            }
        });
    }
}

/// The request's head with the bytes behind it, for hyper.
fn hand_off<S>(io: S, buf: BytesMut, head: Option<Bytes>) -> Ended<S> {
    let read = match head {
        None => buf.freeze(),
        Some(head) => {
            let mut all = BytesMut::with_capacity(head.len() + buf.len());
            all.extend_from_slice(&head);
            all.extend_from_slice(&buf);
            all.freeze()
        }
    };
    Ended::HandOff { io, read }
}

/// When the head being waited for must have arrived.
#[derive(Clone, Copy)]
struct HeadBound<'a> {
    /// When its first byte arrived (the first head of a connection: the connection's start).
    first_byte: Option<Instant>,
    settings: &'a ListenerSettings,
}

impl HeadBound<'_> {
    /// Computed when a wait first blocks, which is when the idle time starts.
    fn deadline(&self) -> Instant {
        let read_header = self.settings.read_header_timeout;
        match self.first_byte {
            Some(at) if !read_header.is_zero() => at + read_header,
            _ => Instant::now() + self.settings.idle_timeout,
        }
    }
}

enum Waited {
    Read(io::Result<usize>),
    Closing,
    TimedOut,
}

/// Whether a connection's shutdown wait needs polling. Polling it takes the channel's locks;
/// once it has been polled (and so holds this task's waker), only a change of the channel,
/// seen in an atomic version number, can make it ready.
struct ShutdownPeek {
    rx: watch::Receiver<bool>,
    polled: bool,
}

impl ShutdownPeek {
    fn worth_polling(&mut self) -> bool {
        let worth = !self.polled || self.rx.has_changed().unwrap_or(true);
        self.polled = true;
        worth
    }
}

/// Waits for the client's next bytes, the router's shutdown (once) or the head's deadline.
/// The timer is set only if the read blocks.
async fn wait_for_bytes<S, F>(
    io: &mut S,
    buf: &mut BytesMut,
    closed: &mut Pin<&mut F>,
    shutdown: &mut ShutdownPeek,
    closing: &mut bool,
    mut timer: Pin<&mut tokio::time::Sleep>,
    bound: HeadBound<'_>,
) -> Waited
where
    S: AsyncRead + Unpin,
    F: Future,
{
    rewind(buf, READ_SIZE);
    if buf.capacity() - buf.len() < MIN_ROOM {
        buf.reserve(READ_SIZE);
    }
    let mut armed = false;
    poll_fn(|cx| {
        if let Poll::Ready(r) = tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf) {
            return Poll::Ready(Waited::Read(r));
        }
        if !*closing && shutdown.worth_polling() && closed.as_mut().poll(cx).is_ready() {
            *closing = true;
            return Poll::Ready(Waited::Closing);
        }
        if !armed {
            armed = true;
            timer
                .as_mut()
                .reset(tokio::time::Instant::from_std(bound.deadline()));
        }
        timer.as_mut().poll(cx).map(|()| Waited::TimedOut)
    })
    .await
}

/// Awaits the handler's response while watching the client: bytes it sends meanwhile (its
/// next requests) are kept, up to [`MAX_READ_AHEAD`]; `None` when it closed the connection or
/// it failed, as hyper's server (without half-close) ends the exchange then.
async fn await_response<F, B, S>(
    mut call: Pin<&mut F>,
    io: &mut S,
    buf: &mut BytesMut,
) -> Option<Response<B>>
where
    F: Future<Output = Result<Response<B>, std::convert::Infallible>>,
    S: AsyncRead + Unpin,
{
    poll_fn(|cx| {
        if let Poll::Ready(Ok(response)) = call.as_mut().poll(cx) {
            return Poll::Ready(Some(response));
        }
        watch_client(io, buf, cx).map(|()| None)
    })
    .await
}

/// Reads what the client sends while its request is served, into the room the read buffer
/// has (see [`MIN_ROOM`]) and up to [`MAX_READ_AHEAD`]: ready when it closed the connection or
/// reading failed.
fn watch_client<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<()> {
    if buf.capacity() == buf.len() && buf.len() < MAX_READ_AHEAD {
        // Rare (a head that filled the room to the byte): without room a close goes unseen.
        buf.reserve(MIN_ROOM);
    }
    while buf.len() < MAX_READ_AHEAD && buf.capacity() > buf.len() {
        match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(()),
            Poll::Ready(Ok(_)) => {}
            Poll::Pending => break,
        }
    }
    Poll::Pending
}

/// A request head parsed from the read buffer. (Not boxed though one variant is large: it is
/// made once per request and taken apart at once, where a box would be an allocation.)
#[allow(clippy::large_enum_variant)]
enum Head {
    Inline(Parsed),
    Partial,
    /// Not served here; the buffer is untouched.
    Hyper,
    /// Not served here, found after the head was split off the buffer: these bytes come
    /// first.
    HyperFrom(Bytes),
}

struct Parsed {
    request: Request<ClientBody>,
    rules: ResponseRules,
}

/// What a request decides about how its response is written.
#[derive(Clone, Copy, Debug)]
struct ResponseRules {
    /// A HEAD request: the response has no body, whatever its headers say.
    head_request: bool,
    /// The connection may serve another request after this one.
    keep_alive: bool,
    /// The client sent `TE: trailers`.
    trailers_allowed: bool,
}

/// Where each header's name and value lie in the head: `[name start, name end, value start,
/// value end]`.
type HeaderIndices = [usize; 4];

/// What a request's headers say about serving it here.
#[derive(Default)]
struct HeadFacts {
    not_here: bool,
    close: bool,
    trailers: bool,
}

impl HeadFacts {
    fn note(&mut self, name: &[u8], value: &[u8]) {
        // hyper reads a body for Content-Length or Transfer-Encoding, switches protocols for
        // Upgrade and answers Expect: those requests are its own.
        if name.eq_ignore_ascii_case(b"content-length") {
            self.not_here |= value != b"0";
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
        {
            self.not_here = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            self.close |= list_has_token(value, "close");
        } else if name.eq_ignore_ascii_case(b"te") {
            self.trailers |= list_has_token(value, "trailers");
        }
    }
}

fn parse_request(buf: &mut BytesMut, spare: &mut Option<HeaderMap>) -> Head {
    let mut indices: SmallVec<[HeaderIndices; MAX_HEADERS]> = SmallVec::new();
    let mut facts = HeadFacts::default();
    let (len, method, target) = {
        // Uninitialised: zeroing the array for every request costs more than parsing it.
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut req,
            buf,
            &mut headers,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Head::Partial,
            Err(_) => return Head::Hyper,
        };
        if req.version != Some(1) {
            return Head::Hyper;
        }
        let Some(method) = req
            .method
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        else {
            return Head::Hyper;
        };
        if method == Method::CONNECT {
            return Head::Hyper;
        }
        let Some(target) = req.path.and_then(|p| range_in(buf, p.as_bytes())) else {
            return Head::Hyper;
        };
        for h in req.headers.iter() {
            facts.note(h.name.as_bytes(), h.value);
            let (Some(name), Some(value)) =
                (range_in(buf, h.name.as_bytes()), range_in(buf, h.value))
            else {
                return Head::Hyper;
            };
            indices.push([name.0, name.1, value.0, value.1]);
        }
        (len, method, target)
    };
    if facts.not_here {
        return Head::Hyper;
    }
    let head = buf.split_to(len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(target.0..target.1)) else {
        return Head::HyperFrom(head);
    };
    let mut headers = match spare.take() {
        Some(mut headers) => {
            headers.reserve(indices.len());
            headers
        }
        None => HeaderMap::with_capacity(indices.len() + HEADROOM),
    };
    for i in &indices {
        let (Ok(name), Ok(value)) = (
            header_name(&head[i[0]..i[1]]),
            HeaderValue::from_maybe_shared(head.slice(i[2]..i[3])),
        ) else {
            return Head::HyperFrom(head);
        };
        headers.append(name, value);
    }
    let rules = ResponseRules {
        head_request: method == Method::HEAD,
        keep_alive: !facts.close,
        trailers_allowed: facts.trailers,
    };
    let mut request = Request::new(None);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Head::Inline(Parsed { request, rules })
}

/// How the response body is framed on the wire.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    /// Exactly this many bytes (0: none; the body is not polled).
    Length(u64),
    /// Chunked, with the trailer fields the `Trailer` header announced, if the client takes
    /// trailers.
    Chunked(Option<Vec<HeaderName>>),
}

/// A response head hyper's server would refuse to write (it closes the connection instead).
#[derive(Debug)]
struct BadHead;

/// The body's length as hyper's server sees it: `None` for a body already at its end.
fn body_length<B: Body>(body: &B) -> Option<Option<u64>> {
    if body.is_end_stream() {
        return None;
    }
    let hint: SizeHint = body.size_hint();
    Some(hint.exact())
}

fn can_chunk(head_request: bool, status: StatusCode) -> bool {
    !head_request && !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
}

fn can_have_content_length(status: StatusCode) -> bool {
    !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
}

/// Writes the status line and headers as hyper's server does (title-case names), and says how
/// the body goes and whether the connection ends after it; a `Connection: close` is added
/// when the rules say it ends.
fn encode_head(
    parts: &mut http::response::Parts,
    length: Option<Option<u64>>,
    rules: ResponseRules,
    dst: &mut Vec<u8>,
) -> Result<(Framing, bool), BadHead> {
    let head_request = rules.head_request;
    let mut last = !rules.keep_alive;
    let mut length = length;
    if parts.status.is_informational() {
        // hyper's server cannot send a 1xx as the response: it sends an empty 500, without
        // a `Connection` header, and closes.
        parts.status = StatusCode::INTERNAL_SERVER_ERROR;
        parts.headers.clear();
        parts.extensions.clear();
        length = None;
        last = true;
    } else if last {
        match parts.headers.entry(header::CONNECTION) {
            header::Entry::Occupied(mut e) => {
                if !e.iter().any(|v| value_has_token(v, "close")) {
                    e.append(HeaderValue::from_static("close"));
                }
            }
            header::Entry::Vacant(e) => {
                e.insert(HeaderValue::from_static("close"));
            }
        }
    }
    let status = parts.status;
    let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>();
    if status == StatusCode::OK && reason.is_none() {
        dst.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        dst.extend_from_slice(b"HTTP/1.1 ");
        dst.extend_from_slice(status.as_str().as_bytes());
        dst.push(b' ');
        match reason {
            Some(reason) => dst.extend_from_slice(reason.as_bytes()),
            None => dst.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
        }
        dst.extend_from_slice(b"\r\n");
    }

    let chunkable = can_chunk(head_request, status);
    let mut framing = Framing::Length(0);
    let mut wrote_len = false;
    let mut wrote_date = false;
    let mut announced: Option<Vec<HeaderName>> = None;
    let mut prev_len: Option<u64> = None;
    // The header whose line is open (its values joined with ", "), and whether a value of the
    // transfer coding left `chunked` off the end.
    let mut open_line = false;
    let mut add_chunked = false;
    let mut name: Option<HeaderName> = None;
    for (new_name, value) in parts.headers.drain() {
        if let Some(n) = new_name {
            if open_line {
                close_line(dst, add_chunked);
            }
            open_line = false;
            name = Some(n);
        }
        let Some(name) = name.as_ref() else {
            continue;
        };
        if *name == header::CONTENT_LENGTH {
            if wrote_len && !open_line {
                return Err(BadHead);
            }
            match length {
                Some(Some(known)) => {
                    if !open_line {
                        framing = Framing::Length(known);
                        write_title_case(dst, name.as_str().as_bytes());
                        dst.extend_from_slice(b": ");
                        dst.extend_from_slice(value.as_bytes());
                        wrote_len = true;
                        open_line = true;
                    }
                    continue;
                }
                Some(None) => {
                    let Some(n) = content_length(value.as_bytes()) else {
                        return Err(BadHead);
                    };
                    match prev_len {
                        Some(prev) if prev != n => return Err(BadHead),
                        Some(_) => {}
                        None => {
                            framing = Framing::Length(n);
                            write_title_case(dst, name.as_str().as_bytes());
                            dst.extend_from_slice(b": ");
                            dst.extend_from_slice(value.as_bytes());
                            wrote_len = true;
                            open_line = true;
                            prev_len = Some(n);
                        }
                    }
                    continue;
                }
                None if head_request => wrote_len = true,
                None => continue,
            }
        } else if *name == header::TRANSFER_ENCODING {
            if wrote_len && !open_line {
                return Err(BadHead);
            }
            if !chunkable {
                continue;
            }
            wrote_len = true;
            add_chunked = !last_token_is(value.as_bytes(), b"chunked");
            if !open_line {
                framing = Framing::Chunked(None);
            }
            join_value(dst, &mut open_line, name, &value);
            continue;
        } else if *name == header::CONNECTION {
            last |= value_has_token(&value, "close");
            join_value(dst, &mut open_line, name, &value);
            continue;
        } else if *name == header::DATE {
            wrote_date = true;
        } else if *name == header::TRAILER {
            if !chunkable {
                continue;
            }
            join_value(dst, &mut open_line, name, &value);
            if let Ok(text) = value.to_str() {
                announced.get_or_insert_with(Vec::new).extend(
                    text.split(',')
                        .filter_map(|s| HeaderName::from_bytes(s.trim().as_bytes()).ok()),
                );
            }
            continue;
        }
        write_title_case(dst, name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    if open_line {
        close_line(dst, add_chunked);
    }
    if !wrote_len {
        framing = match length {
            Some(None) => {
                if chunkable {
                    dst.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
                    Framing::Chunked(None)
                } else {
                    // Only HEAD, 204 and 304 cannot be chunked, and they have no body.
                    Framing::Length(0)
                }
            }
            None | Some(Some(0)) => {
                if can_have_content_length(status) && !head_request {
                    dst.extend_from_slice(b"Content-Length: 0\r\n");
                }
                Framing::Length(0)
            }
            Some(Some(n)) => {
                if can_have_content_length(status) {
                    dst.extend_from_slice(b"Content-Length: ");
                    dst.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                    dst.extend_from_slice(b"\r\n");
                    Framing::Length(n)
                } else {
                    Framing::Length(0)
                }
            }
        };
    }
    if !chunkable {
        framing = Framing::Length(0);
    }
    if !wrote_date {
        dst.extend_from_slice(b"Date: ");
        date::extend(dst);
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
    if let Framing::Chunked(fields) = &mut framing {
        if rules.trailers_allowed {
            *fields = announced;
        }
    }
    Ok((framing, last))
}

/// Writes one value of a header whose values share one line (hyper joins `Transfer-Encoding`,
/// `Connection` and `Trailer` with ", "): the name first if the line is not open yet.
fn join_value(dst: &mut Vec<u8>, open_line: &mut bool, name: &HeaderName, value: &HeaderValue) {
    if *open_line {
        dst.extend_from_slice(b", ");
    } else {
        *open_line = true;
        write_title_case(dst, name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
    }
    dst.extend_from_slice(value.as_bytes());
}

fn close_line(dst: &mut Vec<u8>, add_chunked: bool) {
    if add_chunked {
        dst.extend_from_slice(b", chunked\r\n");
    } else {
        dst.extend_from_slice(b"\r\n");
    }
}

/// Header fields a trailer section may not carry (hyper's list).
fn allowed_in_trailers(name: &HeaderName) -> bool {
    !matches!(
        *name,
        header::AUTHORIZATION
            | header::CACHE_CONTROL
            | header::CONTENT_ENCODING
            | header::CONTENT_LENGTH
            | header::CONTENT_RANGE
            | header::CONTENT_TYPE
            | header::HOST
            | header::MAX_FORWARDS
            | header::SET_COOKIE
            | header::TRAILER
            | header::TRANSFER_ENCODING
            | header::TE
    )
}

/// Why a response could not be written whole.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("writing to the client failed")]
    Io,
    /// The handler's head or body broke the framing (hyper closes the connection then).
    #[error("the response's length does not match its headers")]
    Framing,
    #[error("the response body failed")]
    Body,
    #[error("the client closed the connection during the response")]
    ClientGone,
}

/// Writes the response; `Ok(true)` when the connection may serve another request.
async fn write_response<S, B>(
    io: &mut S,
    read: &mut BytesMut,
    out: &mut Vec<u8>,
    parts: &mut http::response::Parts,
    body: B,
    rules: ResponseRules,
) -> Result<bool, WriteError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    B: Body<Data = Bytes, Error = BoxError>,
{
    out.clear();
    if out.capacity() == 0 {
        out.reserve(OUT_START);
    }
    let length = body_length(&body);
    let (framing, last) =
        encode_head(parts, length, rules, out).map_err(|BadHead| WriteError::Framing)?;
    // The body is dropped as soon as it has given all it will, before the response's last bytes
    // go out, as hyper's server does: dropping it ends the exchange and returns the backend
    // connection to its pool, which must happen before the client can send its next request.
    let mut body = pin!(Some(body));
    match framing {
        Framing::Length(0) => body.set(None),
        Framing::Length(mut remaining) => {
            while remaining > 0 {
                let Some(frame) = next_frame(io, read, out, body.as_mut()).await? else {
                    break;
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let n = data.len() as u64;
                if n > remaining {
                    return Err(WriteError::Framing);
                }
                remaining -= n;
                put(io, out, data).await?;
            }
            body.set(None);
            if remaining > 0 {
                let _ = io.write_all(out).await;
                return Err(WriteError::Framing);
            }
        }
        Framing::Chunked(fields) => {
            let mut trailers = None;
            while let Some(frame) = next_frame(io, read, out, body.as_mut()).await? {
                match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) => {
                        write_hex(out, data.len());
                        out.extend_from_slice(b"\r\n");
                        put(io, out, data).await?;
                        out.extend_from_slice(b"\r\n");
                    }
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            trailers = Some(t);
                        }
                    }
                }
            }
            body.set(None);
            out.extend_from_slice(b"0\r\n");
            if let (Some(fields), Some(trailers)) = (&fields, trailers) {
                for (name, value) in &trailers {
                    if fields.contains(name) && allowed_in_trailers(name) {
                        write_title_case(out, name.as_str().as_bytes());
                        out.extend_from_slice(b": ");
                        out.extend_from_slice(value.as_bytes());
                        out.extend_from_slice(b"\r\n");
                    }
                }
            }
            out.extend_from_slice(b"\r\n");
        }
    }
    // The response's last bytes, with the thread's other ready responses (see `send_batch`).
    let_others_read_first().await;
    io.write_all(out).await.map_err(|_| WriteError::Io)?;
    io.flush().await.map_err(|_| WriteError::Io)?;
    Ok(!last)
}

/// A chunk-size line's number: upper-case hex, as hyper writes it.
fn write_hex(dst: &mut Vec<u8>, n: usize) {
    let digits = (usize::BITS - n.leading_zeros()).div_ceil(4).max(1);
    for shift in (0..digits).rev() {
        dst.push(b"0123456789ABCDEF"[(n >> (shift * 4)) & 0xF]);
    }
}

/// The body's next frame (none once it is dropped). What is buffered goes out first if the
/// body has none ready.
async fn next_frame<S, B>(
    io: &mut S,
    read: &mut BytesMut,
    out: &mut Vec<u8>,
    mut body: Pin<&mut Option<B>>,
) -> Result<Option<Frame<Bytes>>, WriteError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    B: Body<Data = Bytes, Error = BoxError>,
{
    let Some(mut body) = body.as_mut().as_pin_mut() else {
        return Ok(None);
    };
    let ready = poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await;
    let polled = match ready {
        Poll::Ready(polled) => polled,
        Poll::Pending => {
            if !out.is_empty() {
                io.write_all(out).await.map_err(|_| WriteError::Io)?;
                out.clear();
            }
            io.flush().await.map_err(|_| WriteError::Io)?;
            poll_fn(|cx| {
                if let Poll::Ready(polled) = body.as_mut().poll_frame(cx) {
                    return Poll::Ready(Ok(polled));
                }
                watch_client(io, read, cx).map(|()| Err(WriteError::ClientGone))
            })
            .await?
        }
    };
    match polled {
        None => Ok(None),
        Some(Ok(frame)) => Ok(Some(frame)),
        Some(Err(_)) => Err(WriteError::Body),
    }
}

/// Queues `data` behind what is buffered, or writes both when it is large.
async fn put<S: AsyncWrite + Unpin>(
    io: &mut S,
    out: &mut Vec<u8>,
    mut data: Bytes,
) -> Result<(), WriteError> {
    if data.len() <= COPY_LIMIT {
        out.extend_from_slice(&data);
        return Ok(());
    }
    let mut head = &out[..];
    while !head.is_empty() || data.has_remaining() {
        let slices = [io::IoSlice::new(head), io::IoSlice::new(&data)];
        let n = io
            .write_vectored(&slices)
            .await
            .map_err(|_| WriteError::Io)?;
        if n == 0 {
            return Err(WriteError::Io);
        }
        let from_head = n.min(head.len());
        head = &head[from_head..];
        data.advance(n - from_head);
    }
    out.clear();
    Ok(())
}

/// The `Date` header's value, formatted once a second per thread (hyper keeps one the same
/// way).
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    /// `Sun, 06 Nov 1994 08:49:37 GMT`
    const LEN: usize = 29;

    struct Cached {
        second: u64,
        text: [u8; LEN],
    }

    thread_local! {
        static CACHED: RefCell<Cached> = const { RefCell::new(Cached { second: u64::MAX, text: [0; LEN] }) };
    }

    pub fn extend(dst: &mut Vec<u8>) {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        CACHED.with(|c| {
            let mut c = c.borrow_mut();
            if c.second != second {
                let text = httpdate::fmt_http_date(now);
                if text.len() == LEN {
                    c.text.copy_from_slice(text.as_bytes());
                    c.second = second;
                } else {
                    dst.extend_from_slice(text.as_bytes());
                    return;
                }
            }
            dst.extend_from_slice(&c.text);
        });
    }
}

/// The connection's I/O for hyper after a hand-off: the bytes already read come first.
pub(super) struct Replay<S> {
    read: Bytes,
    io: S,
}

impl<S> Replay<S> {
    pub fn new(read: Bytes, io: S) -> Self {
        Self { read, io }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    use http_body_util::combinators::BoxBody;
    use http_body_util::{BodyExt, Empty, Full, StreamBody};
    use hyper::body::Incoming;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, DuplexStream};

    /// A connection's read buffer after serving one request: its head split off and gone.
    fn used(buffers: &mut ConnBuffers) -> *const u8 {
        buffers.read.reserve(READ_SIZE);
        buffers
            .read
            .extend_from_slice(b"GET / HTTP/1.1\r\n\r\nGET /next");
        let at = buffers.read.as_ptr();
        drop(buffers.read.split_to(18).freeze());
        buffers.out.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
        buffers.headers = Some(HeaderMap::with_capacity(8));
        at
    }

    #[test]
    fn a_connection_s_buffers_serve_the_thread_s_next_connection_emptied() {
        let mut first = ConnBuffers::take();
        let allocation = used(&mut first);
        drop(first);
        let next = ConnBuffers::take();
        assert_eq!(
            next.read.as_ptr(),
            allocation,
            "the same read allocation, from its start"
        );
        assert!(next.read.is_empty() && next.read.capacity() >= READ_SIZE);
        assert!(next.out.is_empty() && next.out.capacity() > 0);
        assert!(next.headers.as_ref().is_some_and(|h| h.is_empty()));
    }

    #[test]
    fn a_read_buffer_something_still_points_into_is_not_kept() {
        let mut first = ConnBuffers::take();
        used(&mut first);
        let still_held = first.read.split_to(4).freeze();
        drop(first);
        let next = ConnBuffers::take();
        assert_eq!(next.read.capacity(), 0, "a new buffer, not the shared one");
        assert_eq!(&still_held[..], b"GET ");
    }

    #[test]
    fn an_oversized_read_buffer_is_freed_with_its_connection() {
        let mut first = ConnBuffers::take();
        first.read.reserve(MAX_READ_AHEAD);
        drop(first);
        assert_eq!(ConnBuffers::take().read.capacity(), 0);
    }

    /// Answers by path; records what it saw and whether an exchange was dropped unfinished.
    #[derive(Default)]
    struct Answers {
        calls: AtomicUsize,
        saw_stream_body: AtomicBool,
        cancelled: AtomicBool,
        /// Bytes the server had written to the client (see `CountingIo`) ...
        written: Arc<AtomicUsize>,
        /// ... when the `/probe` response's body was dropped.
        written_at_drop: Arc<AtomicUsize>,
    }

    /// A body that notes how much of the response the client had been sent when it is dropped
    /// (dropping it is what returns a backend connection to its pool).
    struct DropProbe {
        inner: BoxBody<Bytes, BoxError>,
        written: Arc<AtomicUsize>,
        written_at_drop: Arc<AtomicUsize>,
    }

    impl Drop for DropProbe {
        fn drop(&mut self) {
            let now = self.written.load(Ordering::SeqCst);
            self.written_at_drop.store(now, Ordering::SeqCst);
        }
    }

    impl Body for DropProbe {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Pin::new(&mut self.inner).poll_frame(cx)
        }

        fn size_hint(&self) -> SizeHint {
            self.inner.size_hint()
        }
    }

    /// The server's side of a duplex stream, counting the bytes written to the client.
    struct CountingIo {
        inner: DuplexStream,
        written: Arc<AtomicUsize>,
    }

    impl AsyncRead for CountingIo {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for CountingIo {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
            if let Poll::Ready(Ok(n)) = polled {
                self.written.fetch_add(n, Ordering::SeqCst);
            }
            polled
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    struct Unfinished<'a>(&'a AtomicBool, bool);

    impl Drop for Unfinished<'_> {
        fn drop(&mut self) {
            if !self.1 {
                self.0.store(true, Ordering::SeqCst);
            }
        }
    }

    fn full(text: &'static str) -> BoxBody<Bytes, BoxError> {
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|e| match e {})
            .boxed()
    }

    fn frames(parts: Vec<Frame<Bytes>>) -> BoxBody<Bytes, BoxError> {
        let items = parts.into_iter().map(Ok::<_, BoxError>);
        StreamBody::new(futures::stream::iter(items)).boxed()
    }

    /// The responses both servers are compared on, by path.
    fn response_for(path: &str) -> Response<BoxBody<Bytes, BoxError>> {
        let mut b = Response::builder();
        let body = match path {
            "/len" => full("hello"),
            "/stream" => frames(vec![
                Frame::data(Bytes::from_static(b"ab")),
                Frame::data(Bytes::from_static(b"cde")),
            ]),
            "/empty" => Empty::new().map_err(|e| match e {}).boxed(),
            "/no-content" => {
                b = b.status(204).header("x-a", "1");
                Empty::new().map_err(|e| match e {}).boxed()
            }
            "/not-modified" => {
                b = b
                    .status(304)
                    .header("content-length", "5")
                    .header("etag", "\"x\"");
                Empty::new().map_err(|e| match e {}).boxed()
            }
            "/reason" => {
                b = b.status(404);
                full("gone")
            }
            "/own-length" => {
                b = b
                    .header("Content-Length", "5")
                    .header("content-type", "text/plain");
                full("hello")
            }
            "/stream-with-length" => {
                b = b.header("content-length", "5");
                frames(vec![
                    Frame::data(Bytes::from_static(b"he")),
                    Frame::data(Bytes::from_static(b"llo")),
                ])
            }
            "/gzip" => {
                b = b.header("transfer-encoding", "gzip");
                frames(vec![Frame::data(Bytes::from_static(b"zz"))])
            }
            "/own-date-and-connection" => {
                b = b
                    .header("date", "Sun, 06 Nov 1994 08:49:37 GMT")
                    .header("connection", "keep-alive")
                    .header("x-multi", "1")
                    .header("x-multi", "2");
                full("x")
            }
            "/cookies" => {
                b = b
                    .header("set-cookie", "a=1")
                    .header("x-b", "2")
                    .header("set-cookie", "c=3")
                    .header("www-authenticate", "Basic");
                full("")
            }
            "/trailers" => {
                b = b.header("trailer", "x-checksum, content-type");
                let mut trailers = HeaderMap::new();
                trailers.insert("x-checksum", HeaderValue::from_static("abc"));
                trailers.insert("content-type", HeaderValue::from_static("nope"));
                trailers.insert("x-unannounced", HeaderValue::from_static("no"));
                frames(vec![
                    Frame::data(Bytes::from_static(b"body")),
                    Frame::trailers(trailers),
                ])
            }
            "/large" => {
                let big = Bytes::from(vec![b'x'; COPY_LIMIT * 3]);
                Full::new(big).map_err(|e| match e {}).boxed()
            }
            "/informational" => {
                b = b.status(103).header("link", "</a>");
                full("")
            }
            _ => {
                b = b.status(500);
                full("unknown path")
            }
        };
        let mut response = b.body(body).unwrap();
        if path == "/reason" {
            response
                .extensions_mut()
                .insert(hyper::ext::ReasonPhrase::from_static(b"Really Gone"));
        }
        response
    }

    impl Handler for Answers {
        type Body = BoxBody<Bytes, BoxError>;

        async fn call(
            &self,
            _conn: Arc<ClientConn>,
            req: Request<ClientBody>,
        ) -> Result<Response<Self::Body>, Infallible> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if req.body().is_some() {
                self.saw_stream_body.store(true, Ordering::SeqCst);
            }
            if let Some(framing) = req.uri().path().strip_prefix("/probe") {
                let inner = if framing == "-chunked" {
                    response_for("/stream").into_body()
                } else {
                    response_for("/len").into_body()
                };
                let body = DropProbe {
                    inner,
                    written: self.written.clone(),
                    written_at_drop: self.written_at_drop.clone(),
                };
                return Ok(Response::new(body.boxed()));
            }
            if req.uri().path() == "/slow" {
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Ok(response_for("/len"));
            }
            if req.uri().path() == "/hang" {
                let mut guard = Unfinished(&self.cancelled, false);
                tokio::time::sleep(Duration::from_secs(30)).await;
                guard.1 = true;
            }
            Ok(response_for(req.uri().path()))
        }
    }

    struct Setup {
        answers: Arc<Answers>,
        client: Arc<ClientConn>,
        state: ConnState,
        settings: ListenerSettings,
        connections: Connections,
    }

    impl Setup {
        fn new() -> Self {
            Self {
                answers: Arc::new(Answers::default()),
                client: Arc::new(ClientConn::new("127.0.0.1:5000".parse().unwrap(), false)),
                state: ConnState::new(),
                settings: ListenerSettings::default(),
                connections: Connections::new(),
            }
        }

        async fn serve<S: AsyncRead + AsyncWrite + Unpin>(&self, io: S) -> Ended<S> {
            let (_tx, mut close) = watch::channel(false);
            self.serve_until(io, &mut close).await
        }

        /// [`Self::serve`] until the router's shutdown says `true` on `close`.
        async fn serve_until<S: AsyncRead + AsyncWrite + Unpin>(
            &self,
            io: S,
            close: &mut watch::Receiver<bool>,
        ) -> Ended<S> {
            let session = Session {
                handler: &self.answers,
                client: &self.client,
                state: &self.state,
                settings: &self.settings,
                connections: &self.connections,
            };
            serve(session, io, close).await
        }
    }

    /// Sends `request` to this module's server and returns all it wrote until it closed.
    async fn ours(request: &[u8]) -> String {
        let setup = Setup::new();
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client.write_all(request).await.unwrap();
        let served = setup.serve(server);
        let mut out = Vec::new();
        let (ended, _) = tokio::join!(served, client.read_to_end(&mut out));
        assert!(matches!(ended, Ended::Closed));
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The same through hyper's server, configured as the listener configures it.
    async fn hyper_s(request: &[u8]) -> String {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client.write_all(request).await.unwrap();
        let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
            Ok::<_, Infallible>(response_for(req.uri().path()))
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .title_case_headers(true)
            .serve_connection(TokioIo::new(server), svc);
        let mut out = Vec::new();
        let (_, _) = tokio::join!(conn, client.read_to_end(&mut out));
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Each `Date` value replaced, as the two are made at different moments.
    fn without_dates(response: &str) -> String {
        let mut out = String::new();
        let mut rest = response;
        while let Some(at) = rest.find("Date: ") {
            out.push_str(&rest[..at + 6]);
            let end = rest[at..].find("\r\n").map_or(rest.len(), |e| at + e);
            let value = &rest[at + 6..end];
            if value != "Sun, 06 Nov 1994 08:49:37 GMT" {
                assert!(httpdate::parse_http_date(value).is_ok(), "{value:?}");
                out.push_str("<now>");
            } else {
                out.push_str(value);
            }
            rest = &rest[end..];
        }
        out.push_str(rest);
        out
    }

    #[tokio::test]
    async fn responses_are_written_byte_for_byte_as_hyper_s_server_writes_them() {
        let paths = [
            "/len",
            "/stream",
            "/empty",
            "/no-content",
            "/not-modified",
            "/reason",
            "/own-length",
            "/stream-with-length",
            "/gzip",
            "/own-date-and-connection",
            "/cookies",
            "/trailers",
            "/large",
            "/informational",
        ];
        for method in ["GET", "HEAD"] {
            for te in ["", "TE: trailers\r\n"] {
                for path in paths {
                    let request = format!(
                        "{method} {path} HTTP/1.1\r\nHost: a\r\n{te}Connection: close\r\n\r\n"
                    );
                    let ours = without_dates(&ours(request.as_bytes()).await);
                    let theirs = without_dates(&hyper_s(request.as_bytes()).await);
                    assert_eq!(ours, theirs, "{request:?}");
                    assert!(!ours.is_empty(), "{request:?}");
                }
            }
        }
    }

    #[tokio::test]
    async fn keep_alive_responses_match_hyper_s_too() {
        let request = b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\nGET /len HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        let ours = without_dates(&ours(request).await);
        let theirs = without_dates(&hyper_s(request).await);
        assert_eq!(ours, theirs);
        assert_eq!(ours.matches("HTTP/1.1 200 OK").count(), 2, "{ours}");
    }

    #[tokio::test]
    async fn a_body_less_request_reaches_the_handler_without_a_body_stream() {
        let setup = Setup::new();
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client
            .write_all(
                b"GET /len HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = tokio::join!(setup.serve(server), client.read_to_end(&mut out));
        assert_eq!(setup.answers.calls.load(Ordering::SeqCst), 1);
        assert!(!setup.answers.saw_stream_body.load(Ordering::SeqCst));
        assert!(out.ends_with(b"\r\n\r\nhello"));
    }

    #[tokio::test]
    async fn requests_hyper_must_serve_are_handed_over_with_every_byte_read() {
        let heads: [&[u8]; 7] = [
            b"POST /len HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
            b"POST /len HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"PUT /len HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            b"GET /len HTTP/1.0\r\nHost: a\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /len HTTP/1.1\r\nBad Header: x\r\n\r\n",
        ];
        for head in heads {
            let setup = Setup::new();
            let (mut client, server) = tokio::io::duplex(1 << 16);
            client.write_all(head).await.unwrap();
            let ended = setup.serve(server).await;
            let Ended::HandOff { read, .. } = ended else {
                panic!("served here: {:?}", String::from_utf8_lossy(head));
            };
            assert_eq!(&read[..], head);
            assert_eq!(setup.answers.calls.load(Ordering::SeqCst), 0);
        }
    }

    #[tokio::test]
    async fn a_hand_over_after_served_requests_keeps_the_bytes_behind_them() {
        let setup = Setup::new();
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let post = b"POST /len HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi";
        let mut both = b"GET /len HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
        both.extend_from_slice(post);
        client.write_all(&both).await.unwrap();
        let Ended::HandOff { read, .. } = setup.serve(server).await else {
            panic!("not handed over");
        };
        assert_eq!(&read[..], post);
        assert_eq!(setup.answers.calls.load(Ordering::SeqCst), 1);
        assert!(setup.state.served_before.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_head_larger_than_the_inline_limit_goes_to_hyper_unparsed() {
        let setup = Setup::new();
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut head = b"GET /len HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
        head.extend(std::iter::repeat_n(b'x', MAX_HEAD));
        client.write_all(&head).await.unwrap();
        let Ended::HandOff { read, .. } = setup.serve(server).await else {
            panic!("not handed over");
        };
        // What was read so far: the rest is still on the connection, for hyper to read.
        assert!(read.len() >= MAX_HEAD, "{}", read.len());
        assert!(
            head.starts_with(&read),
            "the bytes read are the head's first"
        );
    }

    #[tokio::test]
    async fn a_head_split_across_writes_is_served_here() {
        let setup = Setup::new();
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let writer = async {
            client.write_all(b"GET /len HT").await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            client
                .write_all(b"TP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut out = Vec::new();
            client.read_to_end(&mut out).await.unwrap();
            out
        };
        let (ended, out) = tokio::join!(setup.serve(server), writer);
        assert!(matches!(ended, Ended::Closed));
        assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
    }

    #[tokio::test]
    async fn a_request_sent_while_another_is_in_flight_is_answered_after_it() {
        let setup = Setup::new();
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let talk = async {
            client
                .write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
            client
                .write_all(b"GET /stream HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut out = Vec::new();
            client.read_to_end(&mut out).await.unwrap();
            String::from_utf8_lossy(&out).into_owned()
        };
        let (ended, out) = tokio::join!(setup.serve(server), talk);
        assert!(matches!(ended, Ended::Closed));
        assert_eq!(setup.answers.calls.load(Ordering::SeqCst), 2);
        let first = out.find("\r\n\r\nhello").expect("the first response");
        let second = out
            .find("Transfer-Encoding: chunked")
            .expect("the second response");
        assert!(first < second, "{out}");
    }

    #[tokio::test]
    async fn the_body_is_dropped_before_the_response_s_last_bytes_are_sent() {
        for path in ["/probe", "/probe-chunked"] {
            let setup = Setup::new();
            let (mut client, server) = tokio::io::duplex(1 << 16);
            let io = CountingIo {
                inner: server,
                written: setup.answers.written.clone(),
            };
            let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
            client.write_all(request.as_bytes()).await.unwrap();
            let mut out = Vec::new();
            let _ = tokio::join!(setup.serve(io), client.read_to_end(&mut out));
            let at_drop = setup.answers.written_at_drop.load(Ordering::SeqCst);
            assert!(!out.is_empty(), "{path}");
            assert!(
                at_drop < out.len(),
                "{path}: dropped after all {at_drop} bytes went out"
            );
        }
    }

    #[tokio::test]
    async fn a_client_that_closes_mid_request_cancels_it() {
        let setup = Setup::new();
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client
            .write_all(b"GET /hang HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let closer = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(client);
        };
        let (ended, ()) = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::join!(setup.serve(server), closer)
        })
        .await
        .expect("the connection ends when the client leaves");
        assert!(matches!(ended, Ended::Closed));
        assert!(setup.answers.cancelled.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn an_idle_connection_closes_after_the_idle_timeout() {
        let mut setup = Setup::new();
        setup.settings.idle_timeout = Duration::from_millis(200);
        setup.settings.read_header_timeout = Duration::ZERO;
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client
            .write_all(b"GET /len HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let started = Instant::now();
        let mut out = Vec::new();
        let (ended, _) = tokio::join!(setup.serve(server), client.read_to_end(&mut out));
        assert!(matches!(ended, Ended::Closed));
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(out.ends_with(b"hello"));
    }

    #[tokio::test]
    async fn an_idle_connection_ends_at_shutdown_after_serving_requests() {
        let setup = Setup::new();
        let (shutdown, mut close) = watch::channel(false);
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let requests = async {
            for _ in 0..2 {
                client
                    .write_all(b"GET /len HTTP/1.1\r\nHost: a\r\n\r\n")
                    .await
                    .unwrap();
                let mut response = Vec::new();
                while !response.ends_with(b"hello") {
                    let mut chunk = [0u8; 1024];
                    let n = client.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "closed before the response");
                    response.extend_from_slice(&chunk[..n]);
                }
            }
            // Idle now, its shutdown wait polled once before each request.
            shutdown.send(true).unwrap();
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).await.unwrap();
            rest
        };
        let (ended, rest) = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::join!(setup.serve_until(server, &mut close), requests)
        })
        .await
        .expect("the connection ends at shutdown");
        assert!(matches!(ended, Ended::Closed));
        assert!(rest.is_empty(), "nothing after the responses");
    }

    #[tokio::test]
    async fn a_head_not_finished_within_read_header_timeout_closes_the_connection() {
        let mut setup = Setup::new();
        setup.settings.read_header_timeout = Duration::from_millis(200);
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(b"GET /len HTTP/1.1\r\n").await.unwrap();
        let mut out = Vec::new();
        let (ended, _) = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::join!(setup.serve(server), client.read_to_end(&mut out))
        })
        .await
        .expect("timed out by read_header_timeout");
        assert!(matches!(ended, Ended::Closed));
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn when_the_router_closes_connections_the_response_in_flight_says_close() {
        let setup = Setup::new();
        setup.connections.close_all();
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client
            .write_all(b"GET /len HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let (ended, _) = tokio::join!(setup.serve(server), client.read_to_end(&mut out));
        assert!(matches!(ended, Ended::Closed));
        let out = String::from_utf8_lossy(&out);
        assert!(out.contains("\r\nConnection: close\r\n"), "{out}");
    }

    #[test]
    fn chunk_sizes_are_upper_case_hex() {
        for (n, text) in [(0, "0"), (9, "9"), (10, "A"), (255, "FF"), (4096, "1000")] {
            let mut dst = Vec::new();
            write_hex(&mut dst, n);
            assert_eq!(dst, text.as_bytes());
        }
    }

    #[tokio::test]
    async fn replayed_bytes_come_before_the_connection_s() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b" world").await.unwrap();
        drop(client);
        let mut replay = Replay::new(Bytes::from_static(b"hello"), server);
        let mut all = String::new();
        replay.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }
}
