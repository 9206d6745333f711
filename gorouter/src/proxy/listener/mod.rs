//! The proxy listeners: accepting client connections, the optional PROXY protocol header, the
//! TLS handshake, serving HTTP/1.0 and 1.1 (body-less HTTP/1.1 requests in `http1`, the rest
//! by hyper's server, which takes the connection over) and HTTP/2 on TLS connections that
//! negotiated `h2` by ALPN (no h2c), and closing connections gracefully when the router drains
//! or stops.
//!
//! Per connection: accept → PROXY header (`enable_proxy`) → TLS handshake (HTTPS listener,
//! bounded by `tls_handshake_timeout`) → HTTP. Everything after `accept` runs in the
//! connection's own task, so a slow client never holds up the accept loop.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1 as hyper_http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};

use super::body::{BoxError, ClientBody, ResponseBody};
use super::proxy_protocol;
use super::{ClientConn, Proxy};

mod http1;

/// Where the HTTPS listener gets its server configuration. Called once per handshake, so a
/// reloaded certificate applies to new handshakes only.
pub type TlsConfigSource = Arc<dyn Fn() -> Arc<rustls::ServerConfig> + Send + Sync>;

/// Go's http2 server default (`defaultMaxStreams`).
const H2_MAX_CONCURRENT_STREAMS: u32 = 250;

/// Counts open client connections (websocket tunnels included, until the tunnel ends) and
/// tells them to finish.
pub struct Connections {
    active: AtomicUsize,
    /// `close_all` was called: read per response, where the watch's lock would cost more.
    closing: AtomicBool,
    all_closed: Notify,
    close: watch::Sender<bool>,
}

impl Default for Connections {
    fn default() -> Self {
        Self::new()
    }
}

impl Connections {
    pub fn new() -> Self {
        Self {
            active: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            all_closed: Notify::new(),
            close: watch::channel(false).0,
        }
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Asks every connection to finish its in-flight requests and close (HTTP/2: GOAWAY);
    /// idle ones, and ones still in their PROXY header or TLS handshake, close now. Websocket
    /// tunnels stay open until they end or the router exits (at `drain_timeout`).
    pub fn close_all(&self) {
        self.closing.store(true, Ordering::Relaxed);
        self.close.send_replace(true);
    }

    /// Waits until no connection is open, or `limit` passes. Returns whether all closed.
    pub async fn wait_closed(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.all_closed.notified();
                if self.active() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }

    fn opened(&self) {
        self.active.fetch_add(1, Ordering::SeqCst);
    }

    fn closed(&self) {
        if self.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.all_closed.notify_waiters();
        }
    }
}

/// Counts a connection as open, and holds its `max_client_connections` slot, until the last
/// holder drops it: the connection's task, and the connection's I/O, which outlives the task
/// when the connection becomes a websocket tunnel.
struct Open {
    connections: Arc<Connections>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.connections.closed();
    }
}

/// Front-end connection settings.
#[derive(Clone, Debug)]
pub struct ListenerSettings {
    /// `frontend_idle_timeout`: how long an HTTP/1 connection waits between keep-alive
    /// requests for the first byte of the next one; an HTTP/2 connection that starts no
    /// stream for this long is sent GOAWAY.
    pub idle_timeout: Duration,
    /// `read_header_timeout`: an HTTP/1 request head must arrive within this from its first
    /// byte (the first head of a connection: from the connection's start). Zero: only
    /// `idle_timeout` bounds it.
    pub read_header_timeout: Duration,
    pub max_header_bytes: usize,
    /// `enable_proxy`: connections may start with a PROXY protocol header (v1 or v2).
    pub enable_proxy: bool,
    /// `tls_handshake_timeout`.
    pub tls_handshake_timeout: Duration,
    /// A write to the client that makes no progress for this long ends the connection, and
    /// with it the exchange and its backend connection (`endpoint_timeout`).
    pub write_stall_timeout: Duration,
    /// `websocket_idle_timeout` (ours): a websocket tunnel with no byte either way for this
    /// long is closed.
    pub tunnel_idle_timeout: Duration,
    /// `max_client_connections` (ours): connections served at once, shared by the listeners
    /// given the same semaphore; at the cap a new connection waits (one per listener accepted
    /// and unserved, the rest in the kernel's backlog).
    /// `None`: no cap.
    pub connection_limit: Option<Arc<Semaphore>>,
}

impl Default for ListenerSettings {
    /// Upstream's code defaults, and ours for our keys.
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(900),
            read_header_timeout: crate::config::DEFAULT_READ_HEADER_TIMEOUT,
            max_header_bytes: 1024 * 1024,
            enable_proxy: false,
            tls_handshake_timeout: Duration::from_secs(10),
            write_stall_timeout: Duration::from_secs(60),
            tunnel_idle_timeout: Duration::from_secs(900),
            connection_limit: None,
        }
    }
}

/// Header lines hyper accepts in a request head (its default is 100, answered with 431 above
/// it; Go has no count limit, only `max_header_bytes`). hyper sizes its parse arrays to this
/// cap on every head it parses (two heap arrays of 32 bytes per line), so the cap is a
/// compromise: far above any real client's header count, and small enough that each parse
/// costs two 64 KiB allocations rather than 16 MiB (a cap of 1 MiB / 4 bytes per line).
pub const MAX_REQUEST_HEADERS: usize = 2048;

/// What answers the requests of a connection: the [`Proxy`], or a stand-in in tests.
pub trait Handler: Send + Sync + 'static {
    type Body: hyper::body::Body<Data = Bytes, Error = BoxError> + Send + 'static;

    /// Borrows the handler: an `Arc` clone per request would be an atomic update on a cache
    /// line every serving thread writes.
    fn call(
        &self,
        conn: Arc<ClientConn>,
        req: Request<ClientBody>,
    ) -> impl Future<Output = Result<Response<Self::Body>, Infallible>> + Send + '_;

    /// When the exchange behind a response must end (`endpoint_timeout`), if it has a deadline:
    /// a write of it to a client that reads nothing is given up then.
    fn deadline(_body: &Self::Body) -> Option<Instant> {
        None
    }

    /// Makes the deadline of an HTTP/2 response hold even while its stream has no
    /// flow-control window (hyper does not poll the body then).
    fn watch(_body: &mut Self::Body) {}
}

impl Handler for Proxy {
    type Body = ResponseBody;

    fn call(
        &self,
        conn: Arc<ClientConn>,
        req: Request<ClientBody>,
    ) -> impl Future<Output = Result<Response<ResponseBody>, Infallible>> + Send + '_ {
        self.handle(conn, req)
    }

    fn deadline(body: &ResponseBody) -> Option<Instant> {
        body.deadline()
    }

    fn watch(body: &mut ResponseBody) {
        body.watch();
    }
}

/// Serves plain HTTP/1 on `listener` until `stop_accepting` turns true, then drops it.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    settings: ListenerSettings,
    connections: Arc<Connections>,
    stop_accepting: watch::Receiver<bool>,
) {
    accept_loop(
        listener,
        handler,
        settings,
        None,
        connections,
        stop_accepting,
    )
    .await
}

/// Serves HTTPS on `listener` (HTTP/2 when the handshake negotiated `h2`, which `tls`'s
/// `alpn_protocols` decide) until `stop_accepting` turns true, then drops it.
pub async fn serve_tls<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    settings: ListenerSettings,
    tls: TlsConfigSource,
    connections: Arc<Connections>,
    stop_accepting: watch::Receiver<bool>,
) {
    accept_loop(
        listener,
        handler,
        settings,
        Some(tls),
        connections,
        stop_accepting,
    )
    .await
}

/// What every connection of one listener shares: one `Arc` clone per connection.
struct Shared<H> {
    handler: Arc<H>,
    http1: hyper_http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    settings: ListenerSettings,
    tls: Option<TlsConfigSource>,
    connections: Arc<Connections>,
}

/// Sets `TCP_NODELAY` on a listening socket, which Linux copies to every socket it accepts.
fn set_nodelay_on_listener(listener: &TcpListener) -> std::io::Result<()> {
    set_tcp_option(listener, libc::TCP_NODELAY, 1)
}

/// How long the kernel holds a new HTTPS connection whose client has not spoken yet before
/// handing it over anyway (`TCP_DEFER_ACCEPT`, in seconds).
const DEFER_ACCEPT_SECS: libc::c_int = 1;

/// Has the kernel hand over a new connection only once its client has sent something (or
/// after [`DEFER_ACCEPT_SECS`], rounded up to its SYN-ACK retransmission), as nginx's
/// `deferred` and HAProxy's `defer-accept` do. Set on the HTTPS listener: a TLS client's
/// ClientHello follows the TCP handshake after a scheduling delay, and a connection accepted
/// before it came cost a read that found nothing, a sleep and a wake-up. New TLS handshakes/s
/// rose 8-13 % with it in two runs (BENCHMARKS.md). New plain-HTTP connections/s did not
/// move, so the plain listener accepts at once as before. A silent TLS client reaches
/// `tls_handshake_timeout` a second or so later than without it.
fn defer_accept_on_listener(listener: &TcpListener) -> std::io::Result<()> {
    set_tcp_option(listener, libc::TCP_DEFER_ACCEPT, DEFER_ACCEPT_SECS)
}

/// `setsockopt(IPPROTO_TCP, option, value)` on the listener.
fn set_tcp_option(
    listener: &TcpListener,
    option: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is the listener's own, open for the call's duration; setsockopt
    // reads `size_of::<c_int>()` bytes from `value`.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

async fn accept_loop<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    settings: ListenerSettings,
    tls: Option<TlsConfigSource>,
    connections: Arc<Connections>,
    mut stop_accepting: watch::Receiver<bool>,
) {
    // Room past max_header_bytes so the router answers 431 itself, as upstream does.
    let max_buf = (settings.max_header_bytes + 64 * 1024).max(8192 * 2);
    let mut h1 = hyper_http1::Builder::new();
    // The header-read timer is per connection (see `HeadTimer`); this one is replaced.
    h1.timer(TokioTimer::new())
        .title_case_headers(true)
        .keep_alive(true)
        .header_read_timeout(settings.idle_timeout)
        .max_headers(MAX_REQUEST_HEADERS)
        .max_buf_size(max_buf);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(u32::try_from(max_buf).unwrap_or(u32::MAX));
    // Accepted sockets inherit it: no setsockopt per connection.
    if let Err(e) = set_nodelay_on_listener(&listener) {
        tracing::warn!(error = %e, "tcp-nodelay-not-set-on-listener");
    }
    if tls.is_some() {
        if let Err(e) = defer_accept_on_listener(&listener) {
            tracing::warn!(error = %e, "tcp-defer-accept-not-set-on-listener");
        }
    }
    let shared = Arc::new(Shared {
        handler,
        http1: h1,
        http2: h2,
        settings,
        tls,
        connections,
    });
    if *stop_accepting.borrow_and_update() {
        return;
    }
    loop {
        // Accepting first: a connection waiting in the backlog is taken without polling the
        // stop signal, whose wait takes the channel's locks (about 400 instructions a
        // connection). A stop is still seen between any two accepts: a version number read
        // atomically says whether the channel changed.
        if stop_accepting.has_changed().unwrap_or(true) && stop_now(&mut stop_accepting) {
            return;
        }
        let accepted = tokio::select! {
            biased;
            accepted = listener.accept() => accepted,
            // `changed` marks the value seen, so it is read here, not at the loop's top.
            _ = stop_accepting.changed() => {
                if stop_now(&mut stop_accepting) {
                    return;
                }
                continue;
            }
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "proxy-accept-failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // At `max_client_connections` a connection just accepted waits for one to end, and
        // this loop with it: the ones after it wait in the kernel's backlog while the open
        // ones are served as usual. Taken after `accept`, not before: with a listener per
        // thread, a slot held by one thread's idle `accept` would let a later connection in
        // on it while an earlier one waits on another thread. The semaphore is fair, so slots
        // go to waiting connections in the order they were accepted.
        let slot = match &shared.settings.connection_limit {
            Some(limit) => {
                let acquire = limit.clone().acquire_owned();
                tokio::pin!(acquire);
                loop {
                    tokio::select! {
                        biased;
                        slot = &mut acquire => break slot.ok(),
                        _ = stop_accepting.changed() => {
                            if stop_now(&mut stop_accepting) {
                                return;
                            }
                        }
                    }
                }
            }
            None => None,
        };
        shared.connections.opened();
        let open = Arc::new(Open {
            connections: shared.connections.clone(),
            _slot: slot,
        });
        // Boxed: the connection's future is several KiB (its TLS and HTTP/2 states), and a
        // task moves its future several times on the way in and out of the scheduler; a box
        // is moved as a pointer.
        tokio::spawn(Box::pin(connection(shared.clone(), stream, peer, open)));
    }
}

/// Whether the accept loop's stop signal says stop: `true` sent, or its sender gone.
fn stop_now(stop_accepting: &mut watch::Receiver<bool>) -> bool {
    stop_accepting.has_changed().is_err() || *stop_accepting.borrow_and_update()
}

async fn connection<H: Handler>(
    shared: Arc<Shared<H>>,
    mut stream: TcpStream,
    peer: SocketAddr,
    open: Arc<Open>,
) {
    let mut close = shared.connections.close.subscribe();

    let remote = if shared.settings.enable_proxy {
        let header = tokio::select! {
            header = proxy_protocol::read_header(&mut stream, proxy_protocol::HEADER_TIMEOUT) => header,
            _ = close.wait_for(|c| *c) => return,
        };
        match header {
            Ok(header) => header.client_addr(peer),
            Err(e) => {
                // go-proxyproto closes a connection whose header does not parse.
                tracing::debug!(error = %e, remote = %peer, "proxy-protocol-header-invalid");
                return;
            }
        }
    } else {
        peer
    };

    let state = Arc::new(ConnState::new());
    let Some(tls) = &shared.tls else {
        let client = ClientConn::new(remote, false);
        let io = ClientIo::new(stream, &shared.settings, state.clone(), open);
        return serve_http1(&shared, io, client, state, close).await;
    };
    // The certificates in force as the handshake starts.
    let config = tls();
    // Boxed: the TLS handshake and its HTTP/1.1 and HTTP/2 states are several KiB, and kept
    // inline they would make every connection's future that big, plain ones too, which is
    // copied whole when the connection's task is spawned.
    Box::pin(tls_connection(
        shared, config, stream, remote, state, open, close,
    ))
    .await
}

/// The HTTPS listener's part of [`connection`]: the TLS handshake with `config` (bounded by
/// `tls_handshake_timeout`), then HTTP/1.1 or HTTP/2 as ALPN decided.
async fn tls_connection<H: Handler>(
    shared: Arc<Shared<H>>,
    config: Arc<rustls::ServerConfig>,
    stream: TcpStream,
    remote: SocketAddr,
    state: Arc<ConnState>,
    open: Arc<Open>,
    mut close: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let handshake = tokio::time::timeout(
        shared.settings.tls_handshake_timeout,
        acceptor.accept(stream),
    );
    let stream = tokio::select! {
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, remote = %remote, "tls-handshake-failed");
                return;
            }
            Err(_) => {
                tracing::debug!(remote = %remote, "tls-handshake-timed-out");
                return;
            }
        },
        _ = close.wait_for(|c| *c) => return,
    };
    let (_, session) = stream.get_ref();
    let h2 = session.alpn_protocol() == Some(b"h2");
    let mut client = ClientConn::new(remote, true);
    if let Some(leaf) = crate::tls::server::peer_leaf(session) {
        client = client.with_client_cert(Bytes::copy_from_slice(leaf.as_ref()));
    }
    let io = ClientIo::new(stream, &shared.settings, state.clone(), open);
    if h2 {
        serve_http2(&shared, TokioIo::new(io), client, close).await
    } else {
        serve_http1(&shared, io, client, state, close).await
    }
}

/// HTTP/1: served by [`http1`] until a request needs hyper's server, which then takes the
/// connection.
async fn serve_http1<H, I>(
    shared: &Shared<H>,
    io: ClientIo<I>,
    client: ClientConn,
    state: Arc<ConnState>,
    mut close: watch::Receiver<bool>,
) where
    H: Handler,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let client = Arc::new(client);
    let session = http1::Session {
        handler: &shared.handler,
        client: &client,
        state: &state,
        settings: &shared.settings,
        connections: &shared.connections,
    };
    let (io, read) = match http1::serve(session, io, &mut close).await {
        http1::Ended::Closed => return,
        http1::Ended::HandOff { io, read } => (io, read),
    };
    let io = TokioIo::new(http1::Replay::new(read, io));
    let handler = shared.handler.clone();
    let conn_state = state.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let handler = handler.clone();
        let client = client.clone();
        let state = conn_state.clone();
        // The handler's future is made inside the block, not captured by it: a captured
        // future is held twice (captured, then awaited), and hyper copies this whole future
        // once for every request.
        async move {
            let Ok(resp) = handler.call(client, req.map(Some)).await;
            // One exchange at a time on HTTP/1: its deadline bounds a stalled write.
            state.set_exchange_deadline(H::deadline(resp.body()));
            if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                state.upgraded.store(true, Ordering::Relaxed);
            }
            Ok::<_, Infallible>(resp)
        }
    });
    let mut builder = shared.http1.clone();
    builder.timer(HeadTimer {
        state,
        read_header_timeout: shared.settings.read_header_timeout,
    });
    let conn = builder.serve_connection(io, svc).with_upgrades();
    drive(conn, close, None, |c| c.graceful_shutdown()).await
}

async fn serve_http2<H, I>(
    shared: &Shared<H>,
    io: TokioIo<I>,
    client: ClientConn,
    close: watch::Receiver<bool>,
) where
    H: Handler,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handler = shared.handler.clone();
    let client = Arc::new(client);
    // Streams started, for the idle timeout: one relaxed add per request.
    let started = Arc::new(AtomicU64::new(0));
    let counter = started.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        counter.fetch_add(1, Ordering::Relaxed);
        let handler = handler.clone();
        let client = client.clone();
        // Made inside the block, as for HTTP/1.1.
        async move {
            let Ok(mut resp) = handler.call(client, req.map(Some)).await;
            // One stalled stream does not stall the connection, so the write-stall bound of
            // HTTP/1 cannot end its exchange: a watchdog per response does.
            H::watch(resp.body_mut());
            Ok::<_, Infallible>(resp)
        }
    });
    let conn = shared.http2.serve_connection(io, svc);
    let idle = Some((started, shared.settings.idle_timeout));
    drive(conn, close, idle, |c| c.graceful_shutdown()).await
}

/// What a connection's I/O, its header-read timer and its request handling share.
struct ConnState {
    epoch: Instant,
    /// When the first byte of the request head being read arrived (nanoseconds after `epoch`,
    /// plus one); 0 while none has.
    head_started: AtomicU64,
    /// The deadline of the HTTP/1 exchange in progress (`endpoint_timeout`), same encoding;
    /// 0 for none.
    exchange_deadline: AtomicU64,
    /// The connection became a websocket tunnel (the response was 101).
    upgraded: AtomicBool,
    /// A request head has been served (`http1`) or waited for (hyper) on the connection:
    /// the next head is not its first.
    served_before: AtomicBool,
}

impl ConnState {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            head_started: AtomicU64::new(0),
            exchange_deadline: AtomicU64::new(0),
            upgraded: AtomicBool::new(false),
            served_before: AtomicBool::new(false),
        }
    }

    fn encode(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1)
            + 1
    }

    fn decode(&self, v: u64) -> Option<Instant> {
        (v != 0).then(|| self.epoch + Duration::from_nanos(v - 1))
    }

    fn set_exchange_deadline(&self, deadline: Option<Instant>) {
        let v = deadline.map_or(0, |d| self.encode(d));
        self.exchange_deadline.store(v, Ordering::Relaxed);
    }

    fn exchange_deadline(&self) -> Option<Instant> {
        self.decode(self.exchange_deadline.load(Ordering::Relaxed))
    }

    fn note_head_byte(&self) {
        if self.head_started.load(Ordering::Relaxed) == 0 {
            let now = self.encode(Instant::now());
            let _ =
                self.head_started
                    .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

/// hyper's HTTP/1 header-read timer, per connection. hyper starts it whenever it waits for a
/// request head, idle keep-alive time included, with `frontend_idle_timeout`; once the head's
/// first byte has arrived, `read_header_timeout` from that byte applies instead. The first
/// head of a connection gets `read_header_timeout` from the start. (A head whose first bytes
/// came in with the previous request, pipelined, is bounded by the idle timeout.)
struct HeadTimer {
    state: Arc<ConnState>,
    read_header_timeout: Duration,
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        // The first head's clock starts at the connection's start, as Go's does (a client that
        // connects and sends nothing is cut after read_header_timeout too). A later head
        // wait is keep-alive idle time until a byte arrives; bytes read before now belonged
        // to the previous request.
        let first = !self.state.served_before.swap(true, Ordering::Relaxed);
        let started = if first { 1 } else { 0 };
        self.state.head_started.store(started, Ordering::Relaxed);
        Box::pin(HeadSleep {
            idle_deadline: deadline,
            state: self.state.clone(),
            read_header_timeout: self.read_header_timeout,
            timer: tokio::time::sleep_until(deadline.into()),
        })
    }
}

pin_project_lite::pin_project! {
    /// The timer held inline: hyper boxes the whole sleep already (one allocation per head
    /// wait, not two).
    struct HeadSleep {
        idle_deadline: Instant,
        state: Arc<ConnState>,
        read_header_timeout: Duration,
        #[pin]
        timer: tokio::time::Sleep,
    }
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let started = this
            .state
            .decode(this.state.head_started.load(Ordering::Relaxed));
        let deadline = match started {
            Some(at) if !this.read_header_timeout.is_zero() => at + *this.read_header_timeout,
            _ => *this.idle_deadline,
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        let mut timer = this.timer;
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.poll(cx)
    }
}

impl hyper::rt::Sleep for HeadSleep {}

/// A client connection's I/O: notes when a request head's first byte arrives (for
/// `HeadTimer`), ends the connection when a write to the client makes no progress for
/// `write_stall_timeout` or past the exchange's deadline, and, once the connection is a
/// websocket tunnel, when no byte has crossed it either way for `tunnel_idle_timeout`.
/// Holds the connection's `Open` count, so a tunnel counts until it ends.
struct ClientIo<I> {
    inner: I,
    state: Arc<ConnState>,
    write_stall_timeout: Duration,
    tunnel_idle_timeout: Duration,
    /// Armed when a write first makes no progress; cleared by progress.
    write_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Tunnels only: armed while a read waits, re-armed from `last_activity`.
    idle_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    last_activity: Instant,
    _open: Arc<Open>,
}

impl<I> ClientIo<I> {
    fn new(inner: I, settings: &ListenerSettings, state: Arc<ConnState>, open: Arc<Open>) -> Self {
        Self {
            inner,
            state,
            write_stall_timeout: settings.write_stall_timeout,
            tunnel_idle_timeout: settings.tunnel_idle_timeout,
            write_timer: None,
            idle_timer: None,
            last_activity: Instant::now(),
            _open: open,
        }
    }

    fn upgraded(&self) -> bool {
        self.state.upgraded.load(Ordering::Relaxed)
    }

    /// A write returned `Pending`: keeps waiting, or gives up once the bound has passed.
    fn write_stalled(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        if self.write_timer.is_none() {
            let (bound, what) = if self.upgraded() {
                (self.tunnel_idle_timeout, "websocket_idle_timeout")
            } else {
                (self.write_stall_timeout, "endpoint_timeout")
            };
            let mut deadline = Instant::now() + bound;
            if !self.upgraded() {
                if let Some(exchange) = self.state.exchange_deadline() {
                    deadline = deadline.min(exchange);
                }
            }
            tracing::trace!(bound = what, "client-write-stalled");
            self.write_timer = Some(Box::pin(tokio::time::sleep_until(deadline.into())));
        }
        match self.write_timer.as_mut().map(|t| t.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client read nothing of the response for too long (endpoint_timeout, or websocket_idle_timeout for a tunnel)",
            )),
            _ => Poll::Pending,
        }
    }

    fn wrote(&mut self, n: usize) {
        if n > 0 {
            self.write_timer = None;
            self.note_activity();
        }
    }

    /// Only a tunnel's idle time is measured: a clock read per read and write of every
    /// request would cost more than it tells.
    fn note_activity(&mut self) {
        if self.upgraded() {
            self.last_activity = Instant::now();
        }
    }

    /// A tunnel read returned `Pending`: keeps waiting, or ends an idle tunnel.
    fn read_idle(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        if !self.upgraded() || self.tunnel_idle_timeout.is_zero() {
            return Poll::Pending;
        }
        if self.idle_timer.is_none() {
            // The tunnel's first wait: activity before it was not measured.
            self.last_activity = Instant::now();
        }
        loop {
            let due = tokio::time::Instant::from_std(self.last_activity + self.tunnel_idle_timeout);
            let timer = self
                .idle_timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            if timer.deadline() != due {
                timer.as_mut().reset(due);
            }
            match timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(())
                    if Instant::now() >= self.last_activity + self.tunnel_idle_timeout =>
                {
                    return Poll::Ready(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "websocket tunnel idle for websocket_idle_timeout",
                    ))
                }
                Poll::Ready(()) => continue,
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for ClientIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.state.note_head_byte();
                    self.note_activity();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => self.read_idle(cx).map(Err),
            other => other,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for ClientIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                self.wrote(n);
                Poll::Ready(Ok(n))
            }
            Poll::Pending => self.write_stalled(cx).map(Err),
            other => other,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => {
                self.wrote(n);
                Poll::Ready(Ok(n))
            }
            Poll::Pending => self.write_stalled(cx).map(Err),
            other => other,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.write_stalled(cx).map(Err),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Pending => self.write_stalled(cx).map(Err),
            other => other,
        }
    }
}

/// Runs a connection to its end; on `close` (or, with `idle`, after an idle period without a
/// new request) shuts it down gracefully: in-flight requests finish, then it closes.
async fn drive<C, E>(
    conn: C,
    mut close: watch::Receiver<bool>,
    idle: Option<(Arc<AtomicU64>, Duration)>,
    shutdown: impl Fn(Pin<&mut C>),
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(conn);
    let mut closing = *close.borrow();
    if closing {
        shutdown(conn.as_mut());
    }
    // HTTP/2 has no idle timeout of its own in hyper; this ticks once per idle period and
    // shuts down when no stream started since the last tick (Go closes idle h2 connections
    // after IdleTimeout; a GOAWAY lets in-flight streams finish).
    let (requests, period) = match idle {
        Some((requests, period)) if !period.is_zero() => (Some(requests), period),
        _ => (None, Duration::from_secs(3600)),
    };
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut seen = 0u64;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "client-connection-error");
                }
                break;
            }
            _ = close.wait_for(|c| *c), if !closing => {
                closing = true;
                shutdown(conn.as_mut());
            }
            _ = ticks.tick(), if requests.is_some() && !closing => {
                let now = requests.as_ref().map_or(0, |r| r.load(Ordering::Relaxed));
                if now == seen {
                    closing = true;
                    shutdown(conn.as_mut());
                }
                seen = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::combinators::BoxBody;
    use http_body_util::{BodyExt, Empty, Full};
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers with what the listener told it: `<remote> <tls> <version> <client cert bytes>`;
    /// `/slow` waits 300 ms first.
    struct Echo;

    impl Handler for Echo {
        type Body = BoxBody<Bytes, BoxError>;

        async fn call(
            &self,
            conn: Arc<ClientConn>,
            req: Request<ClientBody>,
        ) -> Result<Response<Self::Body>, Infallible> {
            if req.uri().path() == "/slow" {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let text = format!(
                "{} {} {:?} {}",
                conn.remote,
                conn.tls,
                req.version(),
                conn.client_cert.as_ref().map_or(0, |c| c.len())
            );
            let body = Full::new(Bytes::from(text)).map_err(|e| match e {}).boxed();
            Ok(Response::new(body))
        }
    }

    struct Pki {
        ca: CertifiedIssuer<'static, KeyPair>,
    }

    impl Pki {
        fn new() -> Self {
            let mut params = CertificateParams::default();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
            Self { ca }
        }

        fn leaf(&self, names: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
            let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &self.ca)
                .unwrap();
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
            (cert.der().clone(), key)
        }

        fn roots(&self) -> Arc<rustls::RootCertStore> {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.ca.der().clone()).unwrap();
            Arc::new(roots)
        }

        /// A server config for 127.0.0.1 asking for (not requiring) client certificates.
        fn server(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                self.roots(),
                provider.clone(),
            )
            .allow_unauthenticated()
            .build()
            .unwrap();
            let (cert, key) = self.leaf(&["127.0.0.1"]);
            let mut config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_client_cert_verifier(verifier)
                .with_single_cert(vec![cert], key)
                .unwrap();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Arc::new(config)
        }

        fn client(
            &self,
            alpn: &[&[u8]],
            cert: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
        ) -> tokio_rustls::TlsConnector {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(self.roots());
            let mut config = match cert {
                Some((cert, key)) => builder.with_client_auth_cert(vec![cert], key).unwrap(),
                None => builder.with_no_client_auth(),
            };
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            tokio_rustls::TlsConnector::from(Arc::new(config))
        }
    }

    struct Server {
        addr: SocketAddr,
        connections: Arc<Connections>,
        /// Dropping it stops the accept loop, as sending `true` does.
        _stop: watch::Sender<bool>,
    }

    async fn start(settings: ListenerSettings, tls: Option<TlsConfigSource>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(Connections::new());
        let (stop, stop_rx) = watch::channel(false);
        let handler = Arc::new(Echo);
        let c = connections.clone();
        tokio::spawn(async move {
            match tls {
                Some(tls) => serve_tls(listener, handler, settings, tls, c, stop_rx).await,
                None => serve(listener, handler, settings, c, stop_rx).await,
            }
        });
        Server {
            addr,
            connections,
            _stop: stop,
        }
    }

    fn fixed(config: Arc<rustls::ServerConfig>) -> TlsConfigSource {
        Arc::new(move || config.clone())
    }

    fn proxy_enabled() -> ListenerSettings {
        ListenerSettings {
            enable_proxy: true,
            ..ListenerSettings::default()
        }
    }

    /// One HTTP/1.1 request written raw; returns the whole response (the server closes).
    async fn raw_request<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, path: &str) -> String {
        let req = format!("GET {path} HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    fn body_of(response: &str) -> &str {
        response.split("\r\n\r\n").nth(1).unwrap_or("")
    }

    async fn tls_connect(
        addr: SocketAddr,
        connector: &tokio_rustls::TlsConnector,
        prefix: &[u8],
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(prefix).await.unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        connector.connect(name, tcp).await.unwrap()
    }

    /// Whether connecting to `addr` is refused (the listener is gone) within 5 s.
    async fn refused_soon(addr: SocketAddr) -> bool {
        for _ in 0..100 {
            if TcpStream::connect(addr).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[tokio::test]
    async fn the_listener_closes_once_told_to_stop_accepting() {
        let server = start(ListenerSettings::default(), None).await;
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        assert!(raw_request(&mut s, "/").await.starts_with("HTTP/1.1 200"));
        server._stop.send(true).unwrap();
        assert!(
            refused_soon(server.addr).await,
            "still accepting after the stop"
        );
    }

    #[tokio::test]
    async fn the_listener_closes_when_its_stop_signal_is_gone() {
        let server = start(ListenerSettings::default(), None).await;
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        assert!(raw_request(&mut s, "/").await.starts_with("HTTP/1.1 200"));
        let addr = server.addr;
        drop(server);
        assert!(
            refused_soon(addr).await,
            "still accepting without a stop signal"
        );
    }

    #[tokio::test]
    async fn a_stop_while_waiting_for_a_connection_slot_closes_the_listener() {
        let settings = ListenerSettings {
            connection_limit: Some(Arc::new(tokio::sync::Semaphore::new(1))),
            ..ListenerSettings::default()
        };
        let server = start(settings, None).await;
        // The only slot, held by an idle keep-alive connection.
        let mut held = TcpStream::connect(server.addr).await.unwrap();
        held.write_all(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 12];
        held.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
        // Accepted, and waiting for the slot.
        let _waiting = TcpStream::connect(server.addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        server._stop.send(true).unwrap();
        assert!(
            refused_soon(server.addr).await,
            "still accepting after the stop"
        );
    }

    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        set_nodelay_on_listener(&listener).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(accepted.nodelay().unwrap());
    }

    #[tokio::test]
    async fn an_https_connection_is_accepted_once_its_client_speaks() {
        let pki = Pki::new();
        let server = start(ListenerSettings::default(), Some(fixed(pki.server(&[])))).await;
        // A first connection that speaks at once: once it is accepted, the accept loop has
        // set up its listener.
        let mut first = TcpStream::connect(server.addr).await.unwrap();
        first.write_all(b"\x16").await.unwrap();
        assert!(active_within(&server, 1, Duration::from_secs(2)).await);
        let mut silent = TcpStream::connect(server.addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            server.connections.active(),
            1,
            "accepted before the client spoke"
        );
        silent.write_all(b"\x16").await.unwrap();
        assert!(active_within(&server, 2, Duration::from_secs(2)).await);
    }

    /// Whether `n` connections are open within `limit`.
    async fn active_within(server: &Server, n: usize, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while server.connections.active() != n && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server.connections.active() == n
    }

    #[tokio::test]
    async fn a_plain_http_connection_is_accepted_before_its_client_speaks() {
        let server = start(ListenerSettings::default(), None).await;
        let _silent = TcpStream::connect(server.addr).await.unwrap();
        assert!(active_within(&server, 1, Duration::from_secs(2)).await);
    }

    #[tokio::test]
    async fn plain_http1_client_is_the_socket_peer() {
        let server = start(ListenerSettings::default(), None).await;
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        let local = tcp.local_addr().unwrap();
        let response = raw_request(&mut tcp, "/").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert_eq!(body_of(&response), format!("{local} false HTTP/1.1 0"));
    }

    #[tokio::test]
    async fn proxy_header_source_becomes_the_client_address() {
        let server = start(proxy_enabled(), None).await;
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(b"PROXY TCP4 203.0.113.7 10.0.0.1 5000 80\r\n")
            .await
            .unwrap();
        let response = raw_request(&mut tcp, "/").await;
        assert_eq!(body_of(&response), "203.0.113.7:5000 false HTTP/1.1 0");

        // The header is optional per connection: without one, the peer is the client.
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        let local = tcp.local_addr().unwrap();
        let response = raw_request(&mut tcp, "/").await;
        assert_eq!(body_of(&response), format!("{local} false HTTP/1.1 0"));
    }

    #[tokio::test]
    async fn a_malformed_proxy_header_closes_the_connection() {
        let server = start(proxy_enabled(), None).await;
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(b"PROXY TCP4 nonsense\r\nGET / HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out))
            .await
            .unwrap();
        // Closed without an HTTP response: a FIN, or a reset because the request went unread.
        match read {
            Ok(_) => assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out)),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        }
        assert!(server.connections.wait_closed(Duration::from_secs(2)).await);
    }

    #[tokio::test]
    async fn without_enable_proxy_a_header_is_not_consumed() {
        let server = start(ListenerSettings::default(), None).await;
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(b"PROXY TCP4 203.0.113.7 10.0.0.1 5000 80\r\n")
            .await
            .unwrap();
        let response = raw_request(&mut tcp, "/").await;
        assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    }

    #[tokio::test]
    async fn tls_http1_with_a_client_certificate() {
        let pki = Pki::new();
        let server = start(
            ListenerSettings::default(),
            Some(fixed(pki.server(&[b"h2", b"http/1.1"]))),
        )
        .await;
        let (cert, key) = pki.leaf(&["client.example"]);
        let cert_len = cert.len();
        let connector = pki.client(&[b"http/1.1"], Some((cert, key)));
        let mut tls = tls_connect(server.addr, &connector, b"").await;
        let local = tls.get_ref().0.local_addr().unwrap();
        let response = raw_request(&mut tls, "/").await;
        assert_eq!(
            body_of(&response),
            format!("{local} true HTTP/1.1 {cert_len}")
        );

        // No client certificate, no ALPN at all: HTTP/1.1, no certificate recorded.
        let connector = pki.client(&[], None);
        let mut tls = tls_connect(server.addr, &connector, b"").await;
        let local = tls.get_ref().0.local_addr().unwrap();
        let response = raw_request(&mut tls, "/").await;
        assert_eq!(body_of(&response), format!("{local} true HTTP/1.1 0"));
    }

    #[tokio::test]
    async fn proxy_header_before_the_tls_handshake() {
        let pki = Pki::new();
        let server = start(proxy_enabled(), Some(fixed(pki.server(&[b"http/1.1"])))).await;
        // v2, IPv6 source.
        let src: std::net::Ipv6Addr = "2001:db8::9".parse().unwrap();
        let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x24".to_vec();
        header.extend_from_slice(&src.octets());
        header.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        header.extend_from_slice(&7000u16.to_be_bytes());
        header.extend_from_slice(&443u16.to_be_bytes());
        let mut tls = tls_connect(server.addr, &pki.client(&[], None), &header).await;
        let response = raw_request(&mut tls, "/").await;
        assert_eq!(body_of(&response), "[2001:db8::9]:7000 true HTTP/1.1 0");
    }

    async fn h2_client(
        tls: tokio_rustls::client::TlsStream<TcpStream>,
    ) -> (
        hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
        tokio::task::JoinHandle<Result<(), hyper::Error>>,
    ) {
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(tls))
            .await
            .unwrap();
        (sender, tokio::spawn(conn))
    }

    fn h2_get(path: &str) -> Request<Empty<Bytes>> {
        Request::get(format!("https://a.example{path}"))
            .body(Empty::new())
            .unwrap()
    }

    async fn text(response: Response<Incoming>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn http2_when_alpn_negotiates_h2() {
        let pki = Pki::new();
        let server = start(
            ListenerSettings::default(),
            Some(fixed(pki.server(&[b"h2", b"http/1.1"]))),
        )
        .await;
        let tls = tls_connect(server.addr, &pki.client(&[b"h2", b"http/1.1"], None), b"").await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let local = tls.get_ref().0.local_addr().unwrap();
        let (mut sender, _conn) = h2_client(tls).await;
        // Two concurrent streams on the one connection.
        let (a, b) = tokio::join!(sender.send_request(h2_get("/")), {
            let mut s = sender.clone();
            async move { s.send_request(h2_get("/")).await }
        });
        for r in [a.unwrap(), b.unwrap()] {
            assert_eq!(r.status(), 200);
            assert_eq!(text(r).await, format!("{local} true HTTP/2.0 0"));
        }
    }

    #[tokio::test]
    async fn no_h2c_on_the_plain_listener() {
        let server = start(ListenerSettings::default(), None).await;
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        // hyper's HTTP/1 server refuses the preface (a 505 or a plain close), never h2 frames.
        let out = String::from_utf8_lossy(&out);
        assert!(out.is_empty() || out.starts_with("HTTP/1.1 "), "{out}");
    }

    #[tokio::test]
    async fn close_all_lets_an_in_flight_h2_stream_finish() {
        let pki = Pki::new();
        let server = start(
            ListenerSettings::default(),
            Some(fixed(pki.server(&[b"h2"]))),
        )
        .await;
        let tls = tls_connect(server.addr, &pki.client(&[b"h2"], None), b"").await;
        let (mut sender, conn) = h2_client(tls).await;
        let slow = tokio::spawn(sender.send_request(h2_get("/slow")));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(server.connections.active(), 1);
        server.connections.close_all();
        let response = slow.await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
        assert!(text(response).await.ends_with("true HTTP/2.0 0"));
        // GOAWAY then close: the client's connection ends and the count drops to zero.
        assert!(server.connections.wait_closed(Duration::from_secs(5)).await);
        tokio::time::timeout(Duration::from_secs(5), conn)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn idle_h2_connections_are_sent_goaway() {
        let pki = Pki::new();
        let settings = ListenerSettings {
            idle_timeout: Duration::from_millis(200),
            ..ListenerSettings::default()
        };
        let server = start(settings, Some(fixed(pki.server(&[b"h2"])))).await;
        let tls = tls_connect(server.addr, &pki.client(&[b"h2"], None), b"").await;
        let (mut sender, conn) = h2_client(tls).await;
        // Busy for longer than the idle timeout: requests keep it open.
        for _ in 0..4 {
            let r = sender.send_request(h2_get("/")).await.unwrap();
            assert_eq!(r.status(), 200);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(server.connections.active(), 1);
        // Then idle: closed within two periods.
        tokio::time::timeout(Duration::from_secs(2), conn)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(server.connections.wait_closed(Duration::from_secs(1)).await);
    }

    #[tokio::test]
    async fn a_stalled_tls_handshake_times_out() {
        let pki = Pki::new();
        let settings = ListenerSettings {
            tls_handshake_timeout: Duration::from_millis(200),
            ..ListenerSettings::default()
        };
        let server = start(settings, Some(fixed(pki.server(&[])))).await;
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        let began = std::time::Instant::now();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert!(began.elapsed() >= Duration::from_millis(200));
        assert!(server.connections.wait_closed(Duration::from_secs(1)).await);
    }

    #[tokio::test]
    async fn close_all_ends_connections_still_handshaking() {
        let pki = Pki::new();
        let server = start(proxy_enabled(), Some(fixed(pki.server(&[])))).await;
        // One in the PROXY header wait would end on its own after 100 ms; a TLS handshake
        // waits 10 s by default, so this one proves close_all reaches it.
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(b"\x16").await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(server.connections.active(), 1);
        server.connections.close_all();
        assert!(server.connections.wait_closed(Duration::from_secs(2)).await);
    }

    #[tokio::test]
    async fn a_reloaded_certificate_applies_to_new_handshakes() {
        let first = Pki::new();
        let second = Pki::new();
        let current = Arc::new(Mutex::new(first.server(&[])));
        let source: TlsConfigSource = {
            let current = current.clone();
            Arc::new(move || current.lock().unwrap().clone())
        };
        let server = start(ListenerSettings::default(), Some(source)).await;
        let mut old = tls_connect(server.addr, &first.client(&[], None), b"").await;
        *current.lock().unwrap() = second.server(&[]);
        // The open connection keeps its session; a new one gets the new certificate.
        let response = raw_request(&mut old, "/").await;
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        let mut new = tls_connect(server.addr, &second.client(&[], None), b"").await;
        assert!(raw_request(&mut new, "/")
            .await
            .starts_with("HTTP/1.1 200 OK"));
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let refused = first.client(&[], None).connect(name, tcp).await;
        assert!(refused.is_err(), "the old CA no longer verifies");
    }
}
