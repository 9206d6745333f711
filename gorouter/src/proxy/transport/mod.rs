//! The backend transport: connections from the router to app instances. It dials
//! ([`dial`]), performs the TLS handshake for endpoints registered with a `tls_port` (A.11:
//! server name = `server_cert_domain_san`, trust = system roots + `ca_certs`, client
//! certificate `backends.*`), the HTTP handshake (HTTP/2 when a `protocol: http2` TLS endpoint
//! agrees to `h2`, else HTTP/1.1: through hyper's client, or [`inline`] for a request without
//! a body), and keeps reusable connections per backend ([`pool`]) so
//! the route table holds routes and nothing of the transport. One background task per
//! transport closes connections idle past their age, so none stays open until a request
//! happens to look at it.
//!
//! Pools are keyed by the endpoint's address, one map per backend protocol. A pool also
//! records the TLS identity (`server_cert_domain_san`) its connections were made for: a
//! re-registration with another identity starts a new pool, one with the same identity keeps
//! the warm connections (A.3).

pub mod dial;
pub mod inline;
pub mod pool;
pub mod sender;

use std::sync::Arc;
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use hyper::rt::{Read, Write};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::registry::{Endpoint, Protocol};
use crate::tls::backend::{self as backend_tls, BackendTlsConfigs, BackendTlsError};

pub use dial::DialError;
pub use pool::{IdleBudget, IdleConnections};
pub use sender::Sender;

/// Why no connection to a backend could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Dial(#[from] DialError),
    /// The TLS handshake failed; its class decides the response (A.5) and the endpoint's
    /// fate (A.6).
    #[error("{}", .0.message())]
    Tls(BackendTlsError),
    /// The HTTP handshake on an established connection failed.
    #[error("{0}")]
    Http(String),
}

/// How TLS endpoints are dialled.
pub struct BackendTls {
    pub configs: BackendTlsConfigs,
    pub handshake_timeout: Duration,
}

/// One backend's pool and the TLS identity its connections were made for.
struct BackendPool {
    server_cert_domain_san: Box<str>,
    idle: Arc<IdleConnections>,
}

/// How many idle keep-alive connections a [`Transport`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleLimits {
    /// Per backend address (`max_idle_conns_per_host`); 0 turns keep-alive off.
    pub per_backend: usize,
    /// Across all backends (`max_idle_conns`); 0 is no limit.
    pub total: usize,
}

/// Every backend's pool, shared with the reaper task.
#[derive(Default)]
struct Pools {
    http1: crate::LockFreeMap<Box<str>, Arc<BackendPool>>,
    /// Pools of `protocol: http2` endpoints: the same address may also be registered as
    /// HTTP/1.1, whose connections must not be mixed with these.
    http2: crate::LockFreeMap<Box<str>, Arc<BackendPool>>,
}

impl Pools {
    fn both(&self) -> [&crate::LockFreeMap<Box<str>, Arc<BackendPool>>; 2] {
        [&self.http1, &self.http2]
    }

    /// Closes every pool's connections idle past their age; how many were closed.
    fn reap(&self) -> usize {
        let now = std::time::Instant::now();
        let mut closed = 0;
        for pools in self.both() {
            for (_, p) in pools.pin().iter() {
                closed += p.idle.reap(now);
            }
        }
        closed
    }
}

/// Aborts the reaper task with its transport.
struct Reaper(tokio::task::JoinHandle<()>);

impl Drop for Reaper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Connections to every backend.
pub struct Transport {
    /// Idle connections each backend may keep; 0 turns keep-alive off.
    idle_capacity: usize,
    /// Idle connections all backends may keep together (`max_idle_conns`).
    idle_budget: Arc<IdleBudget>,
    /// How long a connection may sit idle before the reaper closes it.
    idle_timeout: Duration,
    pools: Arc<Pools>,
    /// One background task per transport that closes idle connections past their age,
    /// started with the first pool (inside the runtime) so that nothing on the request path
    /// reads a clock or sets a timer for it.
    reaper: std::sync::OnceLock<Reaper>,
    tls: BackendTls,
}

impl Transport {
    /// `idle.per_backend` is `max_idle_conns_per_host` (0 with `disable_keep_alives`),
    /// `idle.total` is `max_idle_conns` (0: no limit).
    pub fn new(idle: IdleLimits, tls: BackendTls) -> Self {
        Self {
            idle_capacity: idle.per_backend,
            idle_budget: IdleBudget::new(idle.total),
            idle_timeout: pool::IDLE_TIMEOUT,
            pools: Arc::new(Pools::default()),
            reaper: std::sync::OnceLock::new(),
            tls,
        }
    }

    /// Sets how long a connection may sit idle (`backend_idle_timeout`, default
    /// [`pool::IDLE_TIMEOUT`]); for pools created after the call.
    pub fn with_idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.idle_timeout = idle_timeout.max(Duration::from_millis(1));
        self
    }

    /// Starts the reaper unless it runs. Without a Tokio runtime (unit tests) there is none;
    /// checkouts still refuse expired connections.
    fn start_reaper(&self) {
        if self.idle_capacity == 0 || self.reaper.get().is_some() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let every = self.idle_timeout / pool::REAP_TICKS_PER_IDLE_TIMEOUT;
        let pools = Arc::downgrade(&self.pools);
        self.reaper.get_or_init(|| {
            Reaper(rt.spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(pools) = pools.upgrade() else {
                        return;
                    };
                    let closed = pools.reap();
                    if closed > 0 {
                        tracing::debug!(closed, "idle-backend-connections-reaped");
                    }
                }
            }))
        });
    }

    /// The idle pool for `endpoint`'s address and TLS identity, created on first use.
    pub fn pool(&self, endpoint: &Endpoint) -> Arc<IdleConnections> {
        let pools = match endpoint.protocol {
            Protocol::Http1 => self.pools.http1.pin(),
            Protocol::Http2 => self.pools.http2.pin(),
        };
        if let Some(p) = pools.get(endpoint.addr()) {
            if *p.server_cert_domain_san == *endpoint.server_cert_domain_san() {
                return p.idle.clone();
            }
        }
        let fresh = Arc::new(BackendPool {
            server_cert_domain_san: endpoint.server_cert_domain_san().into(),
            idle: Arc::new(IdleConnections::new(
                self.idle_capacity,
                self.idle_budget.clone(),
                self.idle_timeout,
                process_setup::runtime_threads::per_core_count(),
            )),
        });
        // Only here, off the path of requests to known backends.
        self.start_reaper();
        let stored = pools.update_or_insert(
            endpoint.addr().into(),
            |current| {
                if *current.server_cert_domain_san == *endpoint.server_cert_domain_san() {
                    current.clone()
                } else {
                    fresh.clone()
                }
            },
            fresh.clone(),
        );
        stored.idle.clone()
    }

    /// Opens a new connection to `endpoint`: TCP, TLS for a TLS endpoint, then the HTTP
    /// handshake. With `upgrades`, an HTTP/1.1 connection can be taken over after a 101
    /// (websockets). A new HTTP/2 connection is shared through `idle` when given. With
    /// `inline`, an HTTP/1.1 connection (plain, or TLS without `h2`) is spoken to by the
    /// request's task ([`Sender::Inline`]) rather than through hyper's client.
    pub async fn connect(
        &self,
        endpoint: &Endpoint,
        timeout: Duration,
        upgrades: bool,
        idle: Option<&IdleConnections>,
        inline: bool,
    ) -> Result<Sender, ConnectError> {
        let stream = dial::tcp(endpoint, timeout).await?;
        if !endpoint.tls {
            if inline && !upgrades {
                return Ok(Sender::Inline(Box::new(inline::InlineHttp1::new(
                    inline::BackendStream::Plain(stream),
                ))));
            }
            return http1_handshake(TokioIo::new(stream), endpoint, upgrades).await;
        }
        let wants_h2 = endpoint.protocol == Protocol::Http2 && !upgrades;
        let name = backend_tls::server_name(endpoint.server_cert_domain_san(), endpoint.host())
            .map_err(ConnectError::Tls)?;
        let stream = backend_tls::handshake(
            self.tls.configs.for_protocol(wants_h2),
            name,
            stream,
            self.tls.handshake_timeout,
        )
        .await
        .map_err(ConnectError::Tls)?;
        if backend_tls::negotiated_h2(&stream) {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(hyper_util::rt::TokioTimer::new())
                .handshake(TokioIo::new(stream))
                .await
                .map_err(|e| ConnectError::Http(format!("http2: {e}")))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            if let Some(idle) = idle {
                idle.share_http2(&sender);
            }
            return Ok(Sender::Http2(sender));
        }
        if inline && !upgrades {
            return Ok(Sender::Inline(Box::new(inline::InlineHttp1::new(
                inline::BackendStream::Tls(Box::new(stream)),
            ))));
        }
        http1_handshake(TokioIo::new(stream), endpoint, upgrades).await
    }

    /// Drops the pools nothing used for the idle timeout, closing their connections, so
    /// backends that went away leave nothing behind.
    pub fn sweep(&self) {
        for pools in self.pools.both() {
            pools.pin().retain(|_, p| !p.idle.unused_since_last_sweep());
        }
    }

    /// Backends with a pool.
    pub fn pools(&self) -> usize {
        self.pools.http1.len() + self.pools.http2.len()
    }

    /// Idle keep-alive connections held in every pool now (a scrape's reading; it walks them).
    pub fn idle_connections(&self) -> usize {
        self.pools
            .both()
            .iter()
            .map(|pools| pools.pin().values().map(|p| p.idle.len()).sum::<usize>())
            .sum()
    }
}

/// Hands an idle inline connection to hyper's client, for a request the inline path does not
/// send (one with a body, say). hyper's task for it runs on this thread.
pub async fn inline_to_hyper(
    conn: inline::InlineHttp1,
    endpoint: &Endpoint,
) -> Result<Sender, ConnectError> {
    http1_handshake(TokioIo::new(conn.into_stream()), endpoint, false).await
}

/// How many header lines a backend response may have. Go counts none and lets the byte limit
/// (here hyper's read buffer, about 400 KiB) decide; hyper's default of 100 turned a response
/// with 150 `Set-Cookie`s into a 502. Past 100, hyper allocates two arrays of this many
/// 32-byte entries per response head it parses, so the figure keeps each at 64 KiB, under
/// the allocator's mmap threshold (no syscall); 2048 lines of 200 bytes on average already
/// fill the byte limit.
pub const RESPONSE_MAX_HEADERS: usize = 2048;

/// The HTTP/1.1 handshake on an established (plain or TLS) connection.
async fn http1_handshake<T>(
    io: T,
    endpoint: &Endpoint,
    upgrades: bool,
) -> Result<Sender, ConnectError>
where
    T: Read + Write + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .title_case_headers(true)
        .max_headers(RESPONSE_MAX_HEADERS);
    let (sender, conn) = builder
        .handshake(io)
        .await
        .map_err(|e| ConnectError::Http(format!("dial tcp {}: {e}", endpoint.addr())))?;
    if upgrades {
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
    } else {
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    // The connection's task runs on this thread's runtime (`tokio::spawn` above).
    Ok(Sender::http1_driven_here(sender))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{EndpointSpec, TableSettings};

    /// A backend endpoint at `127.0.0.1:<port>` with TLS identity `san` (`""` for none), as
    /// the transport's tests (here and in [`dial`](super::dial)) dial it.
    pub(super) fn endpoint(port: u16, san: &str) -> Endpoint {
        Endpoint::from_spec(
            &EndpointSpec {
                host: "127.0.0.1".into(),
                port,
                server_cert_domain_san: san.into(),
                ..Default::default()
            },
            TableSettings::default().droplet_stale_threshold,
            0,
        )
    }

    fn transport() -> Transport {
        let tls = BackendTls {
            configs: BackendTlsConfigs::from_settings(&Default::default()).unwrap(),
            handshake_timeout: Duration::from_secs(1),
        };
        Transport::new(
            IdleLimits {
                per_backend: 4,
                total: 0,
            },
            tls,
        )
    }

    #[test]
    fn same_identity_shares_a_pool_and_a_new_one_replaces_it() {
        let t = transport();
        let a = t.pool(&endpoint(1, "inst-1"));
        assert!(Arc::ptr_eq(&a, &t.pool(&endpoint(1, "inst-1"))));
        let b = t.pool(&endpoint(1, "inst-2"));
        assert!(!Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(&b, &t.pool(&endpoint(1, "inst-2"))));
        assert_eq!(t.pools(), 1);
    }

    /// A backend on 127.0.0.1 that answers one keep-alive request per connection with 200
    /// and reports when the router's side of the connection closes.
    async fn one_answer_backend() -> (Endpoint, tokio::sync::oneshot::Receiver<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "router closed before sending a request");
                head.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            // Nothing more is sent: the next read ends when the router closes.
            if let Ok(0) = s.read(&mut buf).await {
                let _ = closed_tx.send(());
            }
        });
        let ep = endpoint(port, "");
        (ep, closed_rx)
    }

    async fn one_request(sender: &mut Sender) {
        use http_body_util::BodyExt;
        let req = http::Request::builder()
            .uri("/")
            .header("host", "backend")
            .body(crate::proxy::body::RequestBody::empty())
            .unwrap();
        let resp = sender
            .hyper()
            .expect("dialled through hyper")
            .try_send_request(req)
            .await
            .map_err(|e| e.into_error())
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
    }

    #[tokio::test]
    async fn an_idle_connection_nobody_asks_for_is_closed_after_its_idle_age() {
        let idle_age = Duration::from_millis(200);
        let t = transport().with_idle_timeout(idle_age);
        let (ep, closed) = one_answer_backend().await;
        let pool = t.pool(&ep);
        let mut sender = t
            .connect(&ep, Duration::from_secs(1), false, Some(&pool), false)
            .await
            .unwrap();
        one_request(&mut sender).await;
        // Let the connection task re-arm so the pool keeps it.
        sender.ready().await.unwrap();
        let returned = std::time::Instant::now();
        pool.put(sender);
        assert_eq!(pool.len(), 1, "the pool keeps the connection");
        let slack = idle_age / pool::REAP_TICKS_PER_IDLE_TIMEOUT + Duration::from_millis(300);
        tokio::time::timeout(idle_age + slack, closed)
            .await
            .expect("the backend saw its idle connection closed within idle age + slack")
            .unwrap();
        assert!(
            returned.elapsed() >= idle_age,
            "not closed before its idle age"
        );
        assert!(pool.is_empty());
    }

    #[tokio::test]
    async fn a_pooled_connection_that_is_not_ready_is_left_for_later_not_waited_on() {
        use tokio::io::AsyncReadExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        // Reads the request and never answers, so the connection stays busy.
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        });
        let ep = endpoint(port, "");
        let t = transport();
        let pool = t.pool(&ep);
        let Sender::Http1 { send: mut busy, .. } = t
            .connect(&ep, Duration::from_secs(1), false, None, false)
            .await
            .unwrap()
        else {
            panic!("a plain endpoint speaks HTTP/1.1");
        };
        let req = http::Request::builder()
            .uri("/")
            .header("host", "backend")
            .body(crate::proxy::body::RequestBody::empty())
            .unwrap();
        let in_flight = tokio::spawn(busy.send_request(req));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!busy.is_ready(), "a request is in flight on it");
        pool.put(Sender::http1_driven_here(busy));
        assert!(
            pool.take(std::time::Instant::now()).is_none(),
            "no ready connection to hand out"
        );
        assert_eq!(pool.len(), 1, "the busy connection stays pooled for later");
        in_flight.abort();
    }

    #[tokio::test]
    async fn an_idle_inline_connection_carries_a_request_with_a_body_through_hyper() {
        use http_body_util::BodyExt;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        // Answers two requests on its first connection; a second connection is never accepted.
        let backend = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = Vec::new();
            for _ in 0..2 {
                let mut b = [0u8; 1];
                while !buf.ends_with(b"\r\n\r\n") {
                    assert_eq!(s.read(&mut b).await.unwrap(), 1, "router closed early");
                    buf.push(b[0]);
                }
                let head = String::from_utf8(std::mem::take(&mut buf)).unwrap();
                if head.starts_with("POST") {
                    let mut body = [0u8; 4];
                    s.read_exact(&mut body).await.unwrap();
                    assert_eq!(&body, b"data");
                }
                seen.push(head.lines().next().unwrap().to_string());
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await
                    .unwrap();
            }
            seen
        });
        let ep = endpoint(port, "");
        let t = transport();
        let pool = t.pool(&ep);
        let Sender::Inline(mut conn) = t
            .connect(&ep, Duration::from_secs(1), false, Some(&pool), true)
            .await
            .unwrap()
        else {
            panic!("a plain endpoint asked for inline gets an inline connection");
        };
        let mut get = http::Request::builder()
            .uri("/first")
            .header("host", "backend")
            .body(crate::proxy::body::RequestBody::empty())
            .unwrap();
        let head = conn.send(&mut get).await.unwrap();
        let mut body = inline::InlineBody::new(conn, &head, Some(pool.clone()));
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "ok"
        );
        let (sender, idle) = body.take_connection().expect("kept");
        idle.put(sender);

        let Some(Sender::Inline(conn)) = pool.take(std::time::Instant::now()) else {
            panic!("the idle inline connection is handed out");
        };
        let mut sender = inline_to_hyper(*conn, &ep).await.unwrap();
        // A body hyper's client streams: from a real client connection, as the proxy has it.
        let (client_body_tx, client_body) = client_request_body(b"data").await;
        let post = http::Request::builder()
            .method("POST")
            .uri("/second")
            .header("host", "backend")
            .header("content-length", "4")
            .body(crate::proxy::body::RequestBody::new(
                Some(client_body),
                None,
            ))
            .unwrap();
        let resp = sender
            .hyper()
            .expect("hyper drives it now")
            .try_send_request(post)
            .await
            .map_err(|e| e.into_error())
            .unwrap();
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
        drop(client_body_tx);
        assert_eq!(
            backend.await.unwrap(),
            ["GET /first HTTP/1.1", "POST /second HTTP/1.1"],
            "both requests on the one connection"
        );
    }

    /// A request body as hyper's server hands it to the proxy: `data` sent by a client over
    /// a real connection. The sender half keeps that client alive.
    async fn client_request_body(
        data: &'static [u8],
    ) -> (tokio::task::JoinHandle<()>, hyper::body::Incoming) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let client = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\n")
                .await
                .unwrap();
            s.write_all(data).await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let (s, _) = l.accept().await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = std::sync::Mutex::new(Some(tx));
        let service =
            hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                if let Some(tx) = tx.lock().unwrap().take() {
                    let _ = tx.send(req.into_body());
                }
                async {
                    // Never answers: the body is read by the test meanwhile.
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<
                        bytes::Bytes,
                    >::new(
                    )))
                }
            });
        tokio::spawn(
            hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), service),
        );
        (client, rx.await.unwrap())
    }

    #[test]
    fn sweeping_keeps_pools_in_use() {
        let t = transport();
        t.pool(&endpoint(1, ""));
        t.sweep();
        assert_eq!(t.pools(), 1);
    }
}
