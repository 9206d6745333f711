//! Forwarding one client connection (D, HAProxy's `mode tcp` frontend → backend):
//!
//! 1. on a port with SNI routes, peek at the ClientHello ([`crate::sni`]) and pick the pool of
//!    its SNI hostname, else the port's default pool;
//! 2. connect round-robin within the pool: up to [`CONNECT_ATTEMPTS`] attempts, each to the next
//!    backend, each bounded by `connect_timeout` (TLS handshake included for TLS backends,
//!    [`crate::backend_tls`]);
//! 3. copy both ways until both sides have closed ([`Duplex`]): a side's EOF is passed on as a
//!    half-close (`shutdown(Write)`), the other direction keeps flowing; an error on either side
//!    closes both; no data either way for `request_timeout_in_seconds` closes both.
//!
//! A direction has no buffer of its own while its writes keep up: it reads into its worker
//! thread's scratch buffer ([`INITIAL_BUFFER`]) and writes what it read at once, so short
//! exchanges allocate nothing and an idle connection holds no buffer. When the writer takes only
//! part, the rest goes to a buffer of the direction's own, 16 KiB at first and never
//! initialised (reads write into spare capacity), used from then on. A direction whose reads
//! fill the buffer is a bulk transfer: between two plain TCP sockets on Linux it moves to a pipe
//! and `splice(2)` ([`crate::splice`], no copy through user space); otherwise (TLS backends) it
//! gets a 256 KiB buffer of its own. The last EOF is not passed on with a separate `shutdown`:
//! closing the sockets right after sends the FIN.
//!
//! [`ConnTracker`] counts open connections for `max_connections` (one atomic on the accept
//! path) and lets drain wait for the last one.
//!
//! Connections to TLS backends cannot splice, so their buffers are real memory: up to
//! 2 × [`LARGE_BUFFER`] each, which `max_connections` (64000) would let grow to tens of GiB.
//! [`BufferBudget`] bounds it (`backend_tls_buffer_budget_mb`): a TLS connection reserves
//! [`TLS_CONNECTION_RESERVE`] before it connects (waiting up to `connect_timeout` for it, then
//! refused: `tcp_router_errors_total{kind="tls_buffer_budget"}` and a warning), and a
//! direction grows to [`LARGE_BUFFER`] only while the budget has room (else it keeps copying
//! through its [`INITIAL_BUFFER`], more slowly).

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::backend_tls;
use crate::metrics::{ErrorKind, Metrics, PortMetrics};
use crate::routes::{Backend, PortRoutes};
use crate::sni;
use crate::splice::Pipe;

/// Connect attempts per client connection (HAProxy's default `retries 3`), each to the next
/// backend of the pool.
pub const CONNECT_ATTEMPTS: usize = 3;

/// First size of a direction's copy buffer.
pub const INITIAL_BUFFER: usize = 16 * 1024;
/// Size a direction's buffer grows to once a read fills it.
pub const LARGE_BUFFER: usize = 256 * 1024;

/// What a connection to a TLS backend reserves from the [`BufferBudget`] before it connects:
/// its two [`INITIAL_BUFFER`]s plus an allowance for the TLS session's own buffers (rustls
/// keeps up to about one record each way).
pub const TLS_CONNECTION_RESERVE: usize = 2 * INITIAL_BUFFER + 32 * 1024;
/// What growing one direction to [`LARGE_BUFFER`] takes from the budget.
pub const TLS_GROWTH: usize = LARGE_BUFFER - INITIAL_BUFFER;

/// The memory all connections to TLS backends may use for buffers, shared (a semaphore of
/// KiB).
#[derive(Debug)]
pub struct BufferBudget {
    kib: Arc<tokio::sync::Semaphore>,
    bytes: usize,
    metrics: Arc<Metrics>,
}

/// Bytes taken from a [`BufferBudget`]; given back when dropped.
#[derive(Debug)]
pub struct BudgetGrant {
    _permit: tokio::sync::OwnedSemaphorePermit,
    bytes: usize,
    metrics: Arc<Metrics>,
}

impl Drop for BudgetGrant {
    fn drop(&mut self) {
        self.metrics.tls_buffer_bytes.dec_by(self.bytes as u64);
    }
}

impl BufferBudget {
    /// A budget of `bytes` (rounded down to KiB, at least one connection's reserve).
    pub fn new(bytes: usize, metrics: Arc<Metrics>) -> Self {
        let bytes = bytes.max(TLS_CONNECTION_RESERVE);
        let kib = (bytes / 1024).min(tokio::sync::Semaphore::MAX_PERMITS);
        metrics.tls_buffer_budget_bytes.set((kib * 1024) as u64);
        BufferBudget {
            kib: Arc::new(tokio::sync::Semaphore::new(kib)),
            bytes: kib * 1024,
            metrics,
        }
    }

    /// The whole budget in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes not reserved now.
    pub fn available(&self) -> usize {
        self.kib.available_permits() * 1024
    }

    fn grant(&self, permit: tokio::sync::OwnedSemaphorePermit, bytes: usize) -> BudgetGrant {
        self.metrics.tls_buffer_bytes.inc_by(bytes as u64);
        BudgetGrant {
            _permit: permit,
            bytes,
            metrics: self.metrics.clone(),
        }
    }

    fn units(bytes: usize) -> u32 {
        u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
    }

    /// `bytes` if the budget has them now.
    pub fn try_take(&self, bytes: usize) -> Option<BudgetGrant> {
        let permit = self
            .kib
            .clone()
            .try_acquire_many_owned(Self::units(bytes))
            .ok()?;
        Some(self.grant(permit, bytes))
    }

    /// `bytes`, waiting up to `wait` for other connections to give them back.
    pub async fn take(&self, bytes: usize, wait: Duration) -> Option<BudgetGrant> {
        let acquire = self.kib.clone().acquire_many_owned(Self::units(bytes));
        match tokio::time::timeout(wait, acquire).await {
            Ok(Ok(permit)) => Some(self.grant(permit, bytes)),
            _ => None,
        }
    }
}

/// Settings of the data path.
#[derive(Clone)]
pub struct ForwardSettings {
    pub connect_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    /// TLS configuration for backends with a TLS port (`backend_tls.enabled`).
    pub backend_tls: Option<Arc<rustls::ClientConfig>>,
}

/// Open client connections, against `max_connections`.
#[derive(Debug)]
pub struct ConnTracker {
    open: AtomicUsize,
    max: usize,
    idle: Notify,
}

impl ConnTracker {
    pub fn new(max: usize) -> Self {
        ConnTracker {
            open: AtomicUsize::new(0),
            max,
            idle: Notify::new(),
        }
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Counts a new connection, unless `max` are open already.
    fn try_open(&self) -> bool {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.close();
            return false;
        }
        true
    }

    fn close(&self) {
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Waits until no connection is open.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Everything connections on one external port share.
pub struct PortCtx {
    pub port: u16,
    pub routes: ArcSwap<PortRoutes>,
    pub metrics: Arc<PortMetrics>,
    pub global: Arc<Global>,
}

/// Everything all connections share.
pub struct Global {
    pub settings: ForwardSettings,
    pub tracker: ConnTracker,
    pub metrics: Arc<Metrics>,
    /// Buffers of connections to TLS backends.
    pub tls_buffers: Arc<BufferBudget>,
}

/// An accepted, counted connection; dropping it uncounts it.
pub struct Admitted {
    ctx: Arc<PortCtx>,
}

impl Admitted {
    /// Counts a connection accepted on `ctx`'s port, or `None` past `max_connections`.
    pub fn new(ctx: &Arc<PortCtx>) -> Option<Self> {
        if !ctx.global.tracker.try_open() {
            ctx.global.metrics.rejected.inc();
            return None;
        }
        ctx.metrics.connections.inc();
        ctx.metrics.active.inc();
        Some(Admitted { ctx: ctx.clone() })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.ctx.metrics.active.dec();
        self.ctx.global.tracker.close();
    }
}

/// Why a connection to a backend could not be made.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("connect to {addr} timed out after {timeout:?}")]
    Timeout {
        addr: std::net::SocketAddr,
        timeout: Duration,
    },
    #[error("connect to {addr}: {source}")]
    Io {
        addr: std::net::SocketAddr,
        source: io::Error,
    },
    #[error("TLS to {addr}: {source}")]
    Tls {
        addr: std::net::SocketAddr,
        source: backend_tls::HandshakeError,
    },
    #[error("TLS to {0}: backend TLS is not configured")]
    NoTlsConfig(std::net::SocketAddr),
    #[error(
        "TLS to {addr}: no buffer memory within {waited:?} (backend_tls_buffer_budget_mb of \
         {budget} bytes in use by other TLS connections; raise it or lower max_connections)"
    )]
    BufferBudget {
        addr: std::net::SocketAddr,
        waited: Duration,
        budget: usize,
    },
}

enum Upstream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

async fn connect(backend: &Backend, settings: &ForwardSettings) -> Result<Upstream, ConnectError> {
    let addr = backend.addr;
    let started = Instant::now();
    let tcp = match tokio::time::timeout(settings.connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => return Err(ConnectError::Io { addr, source }),
        Err(_) => {
            return Err(ConnectError::Timeout {
                addr,
                timeout: settings.connect_timeout,
            })
        }
    };
    let _ = tcp.set_nodelay(true);
    let Some(name) = &backend.tls_name else {
        return Ok(Upstream::Plain(tcp));
    };
    let Some(config) = &settings.backend_tls else {
        return Err(ConnectError::NoTlsConfig(addr));
    };
    let left = settings
        .connect_timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(1));
    // Boxed: the handshake's state is large, and plain connections should not carry it.
    match Box::pin(backend_tls::handshake(config, name.clone(), tcp, left)).await {
        Ok(tls) => Ok(Upstream::Tls(Box::new(tls))),
        Err(source) => Err(ConnectError::Tls { addr, source }),
    }
}

/// Serves one accepted client connection to the end.
pub async fn handle(client: TcpStream, admitted: Admitted) {
    let ctx = &admitted.ctx;
    // TCP_NODELAY is inherited from the listening socket.
    let mut up = Half::new();
    let mut sni_name = None;
    if ctx.routes.load().has_sni() {
        sni_name = sni::peek_sni(&client, up.scratch(sni::MAX_RECORD), sni::INSPECT_DELAY).await;
    }
    // The backends to try, copied out of the port's snapshot (read after the inspect delay,
    // during which the routes may have changed) so that it is not held while connecting.
    let backends: [Backend; CONNECT_ATTEMPTS] = {
        let routes = ctx.routes.load();
        let Some(pool) = routes.pool_for(sni_name.as_deref()) else {
            ctx.metrics.error(ErrorKind::NoBackend);
            tracing::debug!(port = ctx.port, sni = ?sni_name, "no-backend");
            return;
        };
        let start = pool.start();
        std::array::from_fn(|attempt| pool.at(start, attempt).clone())
    };
    let mut upstream = None;
    let mut last_err = None;
    // Taken before the first connect to a TLS backend, kept for the connection's life.
    let mut reserve: Option<BudgetGrant> = None;
    for (attempt, backend) in backends.iter().enumerate() {
        if backend.tls_name.is_some()
            && reserve.is_none()
            && ctx.global.settings.backend_tls.is_some()
        {
            let budget = &ctx.global.tls_buffers;
            let wait = ctx.global.settings.connect_timeout;
            match budget.take(TLS_CONNECTION_RESERVE, wait).await {
                Some(grant) => reserve = Some(grant),
                None => {
                    last_err = Some(ConnectError::BufferBudget {
                        addr: backend.addr,
                        waited: wait,
                        budget: budget.bytes(),
                    });
                    break;
                }
            }
        }
        match connect(backend, &ctx.global.settings).await {
            Ok(u) => {
                upstream = Some(u);
                break;
            }
            Err(e) => {
                tracing::debug!(port = ctx.port, attempt = attempt + 1, error = %e, "backend-connect-failed");
                last_err = Some(e);
            }
        }
    }
    let Some(upstream) = upstream else {
        let kind = match last_err {
            Some(ConnectError::Tls { .. } | ConnectError::NoTlsConfig(_)) => ErrorKind::BackendTls,
            Some(ConnectError::BufferBudget { .. }) => ErrorKind::TlsBufferBudget,
            _ => ErrorKind::Connect,
        };
        ctx.metrics.error(kind);
        if let Some(e) = last_err {
            tracing::warn!(port = ctx.port, sni = ?sni_name, error = %e, attempts = CONNECT_ATTEMPTS, "tcp-router.backend-unavailable");
        }
        return;
    };
    drop(backends);
    let mut client = client;
    let idle = ctx.global.settings.idle_timeout;
    let m = &ctx.metrics;
    let result = match upstream {
        Upstream::Plain(mut backend) => Duplex::new(&mut client, &mut backend, up, idle, m).await,
        Upstream::Tls(mut backend) => {
            let budget = &ctx.global.tls_buffers;
            let up = up.with_budget(budget.clone());
            let down = Half::new().with_budget(budget.clone());
            Duplex::new(&mut client, &mut *backend, up, idle, m)
                .with_down(down)
                .await
        }
    };
    drop(reserve);
    match result {
        Ok(()) => {}
        Err(DuplexError::IdleTimeout) => {
            ctx.metrics.error(ErrorKind::IdleTimeout);
            tracing::debug!(port = ctx.port, "idle-timeout");
        }
        Err(DuplexError::Io(e)) => {
            ctx.metrics.error(ErrorKind::Io);
            tracing::debug!(port = ctx.port, error = %e, "connection-error");
        }
    }
}

/// How a [`Duplex`] ended badly.
#[derive(Debug)]
pub enum DuplexError {
    Io(io::Error),
    IdleTimeout,
}

/// A side of a forwarded connection: a byte stream, maybe a plain TCP socket (which allows
/// splicing).
pub trait Endpoint: AsyncRead + AsyncWrite + Unpin {
    /// The socket, if this is plain TCP.
    fn as_tcp(&self) -> Option<&TcpStream> {
        None
    }
}

impl Endpoint for TcpStream {
    fn as_tcp(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl Endpoint for tokio_rustls::client::TlsStream<TcpStream> {}

impl Endpoint for tokio::io::DuplexStream {}

thread_local! {
    /// The worker thread's read buffer for directions without one of their own
    /// ([`INITIAL_BUFFER`] bytes once used, zeroed once).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One direction of a copy: a buffer (or, for bulk transfers between plain TCP sockets, a
/// pipe) and where it stands.
pub struct Half {
    buf: Vec<u8>,
    /// Bytes of `buf` known to be initialised (written by a read).
    init: usize,
    pos: usize,
    cap: usize,
    read_done: bool,
    need_flush: bool,
    done: bool,
    grow: bool,
    pipe: Option<Pipe>,
    splice: bool,
    spliced: bool,
    /// Growing to [`LARGE_BUFFER`] needs room in this budget (TLS backends).
    budget: Option<Arc<BufferBudget>>,
    /// What the grown buffer took from `budget`.
    grown: Option<BudgetGrant>,
}

impl Default for Half {
    fn default() -> Self {
        Self::new()
    }
}

impl Half {
    pub fn new() -> Self {
        Half {
            buf: Vec::new(),
            init: 0,
            pos: 0,
            cap: 0,
            read_done: false,
            need_flush: false,
            done: false,
            grow: false,
            pipe: None,
            splice: cfg!(target_os = "linux"),
            spliced: false,
            budget: None,
            grown: None,
        }
    }

    /// Grows only with room in `budget` (a direction of a TLS-backend connection).
    pub fn with_budget(mut self, budget: Arc<BufferBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The buffer's size (0 when none is held).
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Never switches to splicing (for comparisons and tests).
    pub fn without_splice(mut self) -> Self {
        self.splice = false;
        self
    }

    /// Whether this direction moved to a pipe.
    pub fn was_spliced(&self) -> bool {
        self.spliced
    }

    fn reserve(&mut self) {
        let mut want = if self.grow {
            LARGE_BUFFER
        } else {
            INITIAL_BUFFER
        };
        if want == LARGE_BUFFER && self.grown.is_none() && self.buf.capacity() < LARGE_BUFFER {
            if let Some(budget) = &self.budget {
                match budget.try_take(TLS_GROWTH) {
                    Some(grant) => self.grown = Some(grant),
                    None => {
                        // No room: keep copying through the small buffer.
                        budget.metrics.tls_buffer_growth_denied.inc();
                        want = INITIAL_BUFFER;
                    }
                }
            }
        }
        if self.buf.capacity() < want {
            self.buf = Vec::with_capacity(want);
            self.init = 0;
        }
        self.grow = false;
    }

    /// Initialised scratch space of at least `len` bytes (for peeking).
    fn scratch(&mut self, len: usize) -> &mut [u8] {
        if self.buf.capacity() < len {
            self.buf = Vec::with_capacity(len);
        }
        self.buf.resize(len, 0);
        self.init = self.init.max(len);
        // The copy treats the vector's capacity as the buffer (its length is reset to 0 before
        // each read); these bytes stay initialised for it.
        &mut self.buf[..len]
    }

    /// Copies from `reader` to `writer` until `reader`'s EOF has been passed on (`Ready(Ok)`),
    /// an error, or nothing can move. `shutdown`: pass the EOF on with a half-close (not needed
    /// when the connection closes right after).
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
        shutdown: bool,
        counter: &AtomicU64,
        progressed: &mut bool,
    ) -> Poll<io::Result<()>>
    where
        R: Endpoint,
        W: Endpoint,
    {
        loop {
            if let Some(pipe) = &mut self.pipe {
                let (Some(from), Some(to)) = (reader.as_tcp(), writer.as_tcp()) else {
                    return Poll::Ready(Err(io::Error::other("splice needs two TCP sockets")));
                };
                ready!(pipe.poll_forward(cx, from, to, &mut self.read_done, counter, progressed))?;
                self.pipe = None;
                return self.poll_finish(cx, writer, shutdown);
            }
            if self.pos == self.cap && !self.read_done {
                self.pos = 0;
                self.cap = 0;
                if self.grow
                    && self.splice
                    && reader.as_tcp().is_some()
                    && writer.as_tcp().is_some()
                {
                    // A bulk transfer between plain sockets: move to a pipe.
                    if let Ok(pipe) = Pipe::new() {
                        self.pipe = Some(pipe);
                        self.spliced = true;
                        self.buf = Vec::new();
                        self.init = 0;
                        self.grow = false;
                        continue;
                    }
                }
                if self.buf.capacity() == 0 && !self.grow {
                    if let Some(done) =
                        self.poll_via_scratch(cx, reader, writer, counter, progressed)
                    {
                        match done {
                            Poll::Ready(Ok(())) => continue,
                            other => return other,
                        }
                    }
                }
                if self.buf.capacity() == 0 || self.grow {
                    self.reserve();
                }
                let spare = spare_capacity(&mut self.buf);
                let capacity = spare.len();
                let mut rb = ReadBuf::uninit(spare);
                // SAFETY: the first `init` bytes were written by earlier reads (or zeroed by
                // `scratch`) and `buf` has not been reallocated since (`reserve` resets `init`).
                unsafe { rb.assume_init(self.init) };
                match Pin::new(&mut *reader).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        self.init = self.init.max(rb.initialized().len());
                        if n == 0 {
                            self.read_done = true;
                        } else {
                            self.cap = n;
                            *progressed = true;
                            if n == capacity && capacity < LARGE_BUFFER {
                                self.grow = true;
                            }
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        if self.need_flush {
                            ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while self.pos < self.cap {
                let data = initialized(&self.buf, self.pos, self.cap);
                let n = ready!(Pin::new(&mut *writer).poll_write(cx, data))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "write zero bytes",
                    )));
                }
                self.pos += n;
                self.need_flush = true;
                *progressed = true;
                counter.fetch_add(n as u64, Ordering::Relaxed);
            }
            if self.pos == self.cap && self.read_done {
                return self.poll_finish(cx, writer, shutdown);
            }
        }
    }

    /// For a direction without a buffer of its own: one read into the worker thread's scratch
    /// buffer, written on at once. `Ready(Ok)`: all of it was written (or the reader is at
    /// EOF); `Pending`: the reader has nothing, or the writer took only part (the rest is kept
    /// in a buffer of this direction's own, which it uses from then on); `None`: the scratch
    /// buffer is in use (not expected: nothing here re-enters), use an own buffer.
    fn poll_via_scratch<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
        counter: &AtomicU64,
        progressed: &mut bool,
    ) -> Option<Poll<io::Result<()>>>
    where
        R: Endpoint,
        W: Endpoint,
    {
        SCRATCH.with(|cell| {
            let mut scratch = cell.try_borrow_mut().ok()?;
            if scratch.len() < INITIAL_BUFFER {
                scratch.resize(INITIAL_BUFFER, 0);
            }
            let mut rb = ReadBuf::new(&mut scratch[..INITIAL_BUFFER]);
            match Pin::new(&mut *reader).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Some(Poll::Ready(Err(e))),
                Poll::Pending => {
                    if self.need_flush {
                        match Pin::new(&mut *writer).poll_flush(cx) {
                            Poll::Ready(Ok(())) => self.need_flush = false,
                            Poll::Ready(Err(e)) => return Some(Poll::Ready(Err(e))),
                            Poll::Pending => {}
                        }
                    }
                    return Some(Poll::Pending);
                }
            }
            let n = rb.filled().len();
            if n == 0 {
                self.read_done = true;
                return Some(Poll::Ready(Ok(())));
            }
            *progressed = true;
            if n == INITIAL_BUFFER {
                self.grow = true;
            }
            let mut written = 0;
            while written < n {
                match Pin::new(&mut *writer).poll_write(cx, &scratch[written..n]) {
                    Poll::Ready(Ok(0)) => {
                        return Some(Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::WriteZero,
                            "write zero bytes",
                        ))))
                    }
                    Poll::Ready(Ok(k)) => {
                        written += k;
                        self.need_flush = true;
                        counter.fetch_add(k as u64, Ordering::Relaxed);
                    }
                    Poll::Ready(Err(e)) => return Some(Poll::Ready(Err(e))),
                    Poll::Pending => break,
                }
            }
            if written < n {
                // The writer is full (its waker is registered): keep the rest.
                let rest = &scratch[written..n];
                self.buf = Vec::with_capacity(INITIAL_BUFFER);
                self.buf.extend_from_slice(rest);
                self.init = rest.len();
                self.pos = 0;
                self.cap = rest.len();
                return Some(Poll::Pending);
            }
            Some(Poll::Ready(Ok(())))
        })
    }

    /// After the reader's EOF: flush, half-close the writer (if asked), free the buffer.
    fn poll_finish<W: Endpoint>(
        &mut self,
        cx: &mut Context<'_>,
        writer: &mut W,
        shutdown: bool,
    ) -> Poll<io::Result<()>> {
        ready!(Pin::new(&mut *writer).poll_flush(cx))?;
        self.need_flush = false;
        if shutdown {
            ready!(Pin::new(&mut *writer).poll_shutdown(cx))?;
        }
        self.done = true;
        self.buf = Vec::new();
        self.init = 0;
        self.grown = None;
        Poll::Ready(Ok(()))
    }
}

fn spare_capacity(buf: &mut Vec<u8>) -> &mut [MaybeUninit<u8>] {
    // The vector's length stays 0: its whole capacity is the buffer.
    // SAFETY: length 0 is always valid.
    unsafe { buf.set_len(0) };
    buf.spare_capacity_mut()
}

#[allow(clippy::ptr_arg)] // the bytes live beyond `len`, so a slice will not do
fn initialized(buf: &Vec<u8>, from: usize, to: usize) -> &[u8] {
    debug_assert!(to <= buf.capacity());
    // SAFETY: bytes `..to` were filled by the last read (`to` ≤ `init`), within capacity.
    unsafe { std::slice::from_raw_parts(buf.as_ptr().add(from), to - from) }
}

pin_project_lite::pin_project! {
    /// Copies both ways between a client and a backend until both directions are done.
    pub struct Duplex<'a, A, B> {
        client: &'a mut A,
        backend: &'a mut B,
        up: Half,
        down: Half,
        idle: Option<Duration>,
        // Inline, not boxed: no allocation for the idle timer.
        #[pin]
        sleep: tokio::time::Sleep,
        last_activity: Instant,
        metrics: &'a PortMetrics,
    }
}

impl<'a, A: Endpoint, B: Endpoint> Duplex<'a, A, B> {
    /// `up` is the client→backend half (it may already hold a buffer). Must be created inside
    /// the runtime (for the idle timer, which is only armed when `idle` is set).
    pub fn new(
        client: &'a mut A,
        backend: &'a mut B,
        up: Half,
        idle: Option<Duration>,
        metrics: &'a PortMetrics,
    ) -> Self {
        let now = Instant::now();
        Duplex {
            client,
            backend,
            up,
            down: Half::new(),
            idle,
            sleep: tokio::time::sleep_until(now + idle.unwrap_or(Duration::from_secs(86400))),
            last_activity: now,
            metrics,
        }
    }

    /// Replaces the backend→client half.
    pub fn with_down(mut self, down: Half) -> Self {
        self.down = down;
        self
    }

    /// The client→backend and backend→client halves.
    pub fn halves(&self) -> (&Half, &Half) {
        (&self.up, &self.down)
    }
}

impl<A: Endpoint, B: Endpoint> Future for Duplex<'_, A, B> {
    type Output = Result<(), DuplexError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut progressed = false;
        if !this.up.done {
            // The last EOF needs no half-close on plain TCP: closing sends the FIN. TLS needs
            // its close_notify.
            let shutdown = !this.down.done || this.backend.as_tcp().is_none();
            if let Poll::Ready(Err(e)) = this.up.poll_copy(
                cx,
                &mut **this.client,
                &mut **this.backend,
                shutdown,
                this.metrics.bytes_from_clients.inner(),
                &mut progressed,
            ) {
                return Poll::Ready(Err(DuplexError::Io(e)));
            }
        }
        if !this.down.done {
            let shutdown = !this.up.done;
            if let Poll::Ready(Err(e)) = this.down.poll_copy(
                cx,
                &mut **this.backend,
                &mut **this.client,
                shutdown,
                this.metrics.bytes_to_clients.inner(),
                &mut progressed,
            ) {
                return Poll::Ready(Err(DuplexError::Io(e)));
            }
        }
        if this.up.done && this.down.done {
            return Poll::Ready(Ok(()));
        }
        if let Some(timeout) = *this.idle {
            if progressed {
                *this.last_activity = Instant::now();
            }
            // The timer is only pushed back when it fires, not on every read.
            while this.sleep.as_mut().poll(cx).is_ready() {
                let deadline = *this.last_activity + timeout;
                if deadline <= Instant::now() {
                    return Poll::Ready(Err(DuplexError::IdleTimeout));
                }
                this.sleep.as_mut().reset(deadline);
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn copies_both_ways_with_half_close() {
        let (mut client, mut client_side) = tokio::io::duplex(1024);
        let (mut backend, mut backend_side) = tokio::io::duplex(1024);
        let task = tokio::spawn(async move {
            let m = PortMetrics::default();
            let r = Duplex::new(&mut client_side, &mut backend_side, Half::new(), None, &m).await;
            (
                r.is_ok(),
                m.bytes_from_clients.get(),
                m.bytes_to_clients.get(),
            )
        });
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let p2 = payload.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&p2).await.unwrap();
            client.shutdown().await.unwrap(); // client half-closes
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        backend.read_to_end(&mut got).await.unwrap(); // sees the client's EOF
        assert_eq!(got, payload);
        // The backend can still answer after the client's half-close.
        backend.write_all(b"reply").await.unwrap();
        backend.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"reply");
        let (ok, up, down) = task.await.unwrap();
        assert!(ok);
        assert_eq!((up, down), (100_000, 5));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_closes() {
        let (_client, mut client_side) = tokio::io::duplex(64);
        let (_backend, mut backend_side) = tokio::io::duplex(64);
        let m = PortMetrics::default();
        let started = Instant::now();
        let r = Duplex::new(
            &mut client_side,
            &mut backend_side,
            Half::new(),
            Some(Duration::from_secs(300)),
            &m,
        )
        .await;
        assert!(matches!(r, Err(DuplexError::IdleTimeout)));
        assert!(started.elapsed() >= Duration::from_secs(300));
    }

    /// Two connected loopback sockets.
    async fn socket_pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    async fn bulk_both_ways(splice: bool) -> (bool, bool) {
        let (client, mut client_side) = socket_pair().await;
        let (mut backend_side, backend) = socket_pair().await;
        let task = tokio::spawn(async move {
            let m = PortMetrics::default();
            let up = if splice {
                Half::new()
            } else {
                Half::new().without_splice()
            };
            let mut d = Duplex::new(&mut client_side, &mut backend_side, up, None, &m);
            if !splice {
                d = d.with_down(Half::new().without_splice());
            }
            let mut d = std::pin::pin!(d);
            d.as_mut().await.unwrap();
            let (up, down) = d.halves();
            assert_eq!(m.bytes_from_clients.get(), 8 << 20);
            assert_eq!(m.bytes_to_clients.get(), 4 << 20);
            (up.was_spliced(), down.was_spliced())
        });
        bulk_traffic(client, backend).await;
        task.await.unwrap()
    }

    /// [`bulk_both_ways`] with splicing allowed, but the backend end an in-memory stream
    /// rather than a TCP socket.
    async fn bulk_to_a_non_tcp_end() -> (bool, bool) {
        let (client, mut client_side) = socket_pair().await;
        let (mut backend_side, backend) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(async move {
            let m = PortMetrics::default();
            let mut d = std::pin::pin!(Duplex::new(
                &mut client_side,
                &mut backend_side,
                Half::new(),
                None,
                &m
            ));
            d.as_mut().await.unwrap();
            let (up, down) = d.halves();
            assert_eq!(m.bytes_from_clients.get(), 8 << 20);
            assert_eq!(m.bytes_to_clients.get(), 4 << 20);
            (up.was_spliced(), down.was_spliced())
        });
        bulk_traffic(client, backend).await;
        task.await.unwrap()
    }

    /// 8 MiB from the client and 4 MiB back from the backend through a [`Duplex`] between
    /// them, each checked byte for byte.
    async fn bulk_traffic<B>(mut client: TcpStream, mut backend: B)
    where
        B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let payload: Vec<u8> = (0..(8u32 << 20)).map(|i| (i % 253) as u8).collect();
        let p2 = payload.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&p2).await.unwrap();
            client.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        backend.read_to_end(&mut got).await.unwrap();
        assert!(got == payload, "client->backend bytes differ");
        let reply: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 241) as u8).collect();
        backend.write_all(&reply).await.unwrap();
        drop(backend);
        assert!(
            writer.await.unwrap() == reply,
            "backend->client bytes differ"
        );
    }

    #[tokio::test]
    async fn bulk_transfers_between_tcp_sockets_are_spliced() {
        let (up, down) = bulk_both_ways(true).await;
        if cfg!(target_os = "linux") {
            assert!(up && down, "spliced: up {up}, down {down}");
        }
        // Only between two TCP sockets: with one end in memory, the same bulk transfer (with
        // splicing allowed) is copied in user space, intact.
        let (up, down) = bulk_to_a_non_tcp_end().await;
        assert!(
            !up && !down,
            "spliced with a non-TCP end: up {up}, down {down}"
        );
        // The user-space copy between TCP sockets carries the same transfer intact (checked
        // inside).
        bulk_both_ways(false).await;
    }

    #[tokio::test]
    async fn small_exchanges_stay_in_user_space() {
        let (mut client, mut client_side) = socket_pair().await;
        let (mut backend_side, mut backend) = socket_pair().await;
        let task = tokio::spawn(async move {
            let m = PortMetrics::default();
            let mut d = std::pin::pin!(Duplex::new(
                &mut client_side,
                &mut backend_side,
                Half::new(),
                None,
                &m
            ));
            d.as_mut().await.unwrap();
            let (up, down) = d.halves();
            (up.was_spliced(), down.was_spliced())
        });
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        backend.read_exact(&mut buf).await.unwrap();
        backend.write_all(b"pong").await.unwrap();
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        drop(client);
        let mut rest = Vec::new();
        backend.read_to_end(&mut rest).await.unwrap();
        drop(backend);
        assert_eq!(task.await.unwrap(), (false, false));
    }

    #[tokio::test]
    async fn short_exchanges_hold_no_buffer() {
        let (mut client, mut client_side) = socket_pair().await;
        let (mut backend_side, mut backend) = socket_pair().await;
        let m = PortMetrics::default();
        let mut d = std::pin::pin!(Duplex::new(
            &mut client_side,
            &mut backend_side,
            Half::new(),
            None,
            &m
        ));
        let mut buf = [0u8; 4];
        client.write_all(b"ping").await.unwrap();
        tokio::select! {
            _ = d.as_mut() => panic!("the copy ended early"),
            r = backend.read_exact(&mut buf) => { r.unwrap(); }
        }
        assert_eq!(&buf, b"ping");
        backend.write_all(b"pong").await.unwrap();
        tokio::select! {
            _ = d.as_mut() => panic!("the copy ended early"),
            r = client.read_exact(&mut buf) => { r.unwrap(); }
        }
        assert_eq!(&buf, b"pong");
        let (up, down) = d.halves();
        assert_eq!((up.buffer_capacity(), down.buffer_capacity()), (0, 0));
        assert_eq!(m.bytes_from_clients.get(), 4);
        assert_eq!(m.bytes_to_clients.get(), 4);
    }

    #[tokio::test]
    async fn what_a_full_writer_did_not_take_is_kept_and_delivered() {
        // The backend side takes 100 bytes at a time; the client sends 5000 at once.
        let (mut client, mut client_side) = socket_pair().await;
        let (mut backend, mut backend_side) = tokio::io::duplex(100);
        let payload: Vec<u8> = (0..5000u32).map(|i| (i % 249) as u8).collect();
        client.write_all(&payload).await.unwrap(); // and no EOF: the buffer stays
        let m = PortMetrics::default();
        let mut d = std::pin::pin!(Duplex::new(
            &mut client_side,
            &mut backend_side,
            Half::new(),
            None,
            &m
        ));
        let mut got = vec![0u8; payload.len()];
        tokio::select! {
            _ = d.as_mut() => panic!("the copy ended before the backend read"),
            r = backend.read_exact(&mut got) => { r.unwrap(); }
        }
        assert!(got == payload, "bytes differ");
        assert!(
            d.halves().0.buffer_capacity() > 0,
            "the rest went to an own buffer"
        );
    }

    #[test]
    fn tracker_limits_open_connections() {
        let t = ConnTracker::new(2);
        assert!(t.try_open());
        assert!(t.try_open());
        assert!(!t.try_open());
        assert_eq!(t.open(), 2);
        t.close();
        assert!(t.try_open());
    }

    #[tokio::test]
    async fn a_tls_direction_grows_only_with_room_in_the_budget() {
        for (room_for_growth, budget_bytes) in [
            (false, TLS_CONNECTION_RESERVE),
            (true, TLS_CONNECTION_RESERVE + 2 * TLS_GROWTH),
        ] {
            let metrics = Arc::new(Metrics::default());
            let budget = Arc::new(BufferBudget::new(budget_bytes, metrics.clone()));
            let reserve = budget.try_take(TLS_CONNECTION_RESERVE).expect("reserve");
            let (mut client, mut client_side) = tokio::io::duplex(1 << 20);
            let (mut backend, mut backend_side) = tokio::io::duplex(1 << 20);
            let writer = tokio::spawn(async move {
                client.write_all(&vec![7u8; 4 << 20]).await.unwrap();
                client.shutdown().await.unwrap();
                let mut rest = Vec::new();
                client.read_to_end(&mut rest).await.unwrap();
            });
            let reader = tokio::spawn(async move {
                let mut got = Vec::new();
                backend.read_to_end(&mut got).await.unwrap();
                drop(backend);
                got.len()
            });
            let m = PortMetrics::default();
            Duplex::new(
                &mut client_side,
                &mut backend_side,
                Half::new().with_budget(budget.clone()),
                None,
                &m,
            )
            .with_down(Half::new().with_budget(budget.clone()))
            .await
            .unwrap();
            // The last EOF is passed on by closing, as a socket's FIN would be.
            drop((client_side, backend_side));
            assert_eq!(reader.await.unwrap(), 4 << 20, "every byte arrives");
            writer.await.unwrap();
            let denied = metrics.tls_buffer_growth_denied.get();
            assert_eq!(denied == 0, room_for_growth, "denied {denied}");
            // Grown buffers gave their memory back when the copy ended.
            drop(reserve);
            assert_eq!(budget.available(), budget.bytes());
            assert_eq!(metrics.tls_buffer_bytes.get(), 0);
        }
    }
}
