//! gorouter failure paths that had no end-to-end test (issue 16), each named for the behaviour:
//!
//! - a backend slower than `endpoint_timeout`: 502 `endpoint_failure (context deadline
//!   exceeded)` and its access-log line;
//! - the deadline during a streamed body: the client's response is cut, not completed, and the
//!   access log records the bytes that did go;
//! - a backend that closes a fresh connection (FIN, not RST) without answering: a POST is not
//!   sent again (502, seen once), a GET is sent again to the next endpoint (200);
//! - `backends.max_attempts` with every endpoint dead: exactly that many dials, then 502;
//! - `X-Forwarded-Client-Cert` from a plain-HTTP client under `forward` and `sanitize_set` on a
//!   router without TLS, in any spelling and repeated;
//! - absolute-form request targets: routed by the target's host, sent in origin form;
//! - an emptied pool kept for `empty_pool_timeout` (503) and removed after it (404), and the
//!   lookup falling back from an empty context-path pool to its non-empty parent;
//! - the process exiting when its NATS connection is closed for good (the server, back after an
//!   outage, refuses the router's credentials).
//!
//! Two of these found product bugs, both fixed with them: an absolute-form target's host did
//! not win over the `Host` line, and the router did not exit when NATS refused its reconnects
//! for good (async-nats retries an authorization violation forever).
//!
//! Covered elsewhere (not repeated here): a dead endpoint's 502 text (`errors.rs`), retries past
//! refused dials and a reset connection (`lb.rs`, `gorouter_backend_hardening.rs`), a stale
//! keep-alive connection resent for free (`lb.rs`), XFCC over TLS (`gorouter_https.rs`), the
//! emptied pool's 503 body (`errors.rs`), NATS outages the router rides out (`nats.rs`).

use std::future::Future;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration::http::{build_request, find, HttpConn};
use integration::nats::nats_server_bin;
use integration::{
    closed_port, eventually, route, ChildProcess, EchoBackend, EchoedRequest, Gorouter, NatsServer,
    TempDir, TestEnv,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A raw-TCP backend: reads each request (head, and a `Content-Length` body), counts it, then
/// hands the connection to `answer`, which decides what the router gets back.
struct RawBackend {
    port: u16,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl RawBackend {
    async fn start<F, Fut>(answer: F) -> Self
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let answer = Arc::new(answer);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let counter = counter.clone();
                let answer = answer.clone();
                tokio::spawn(async move {
                    if read_request(&mut stream).await.is_some() {
                        counter.fetch_add(1, Ordering::SeqCst);
                        answer(stream).await;
                    }
                });
            }
        });
        Self {
            port,
            requests,
            task,
        }
    }

    /// Requests read in full so far.
    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request head and its `Content-Length` body; `None` if the peer goes first.
async fn read_request(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16 * 1024];
    let end = loop {
        if let Some(pos) = find(&buf, b"\r\n\r\n") {
            break pos + 4;
        }
        match stream.read(&mut tmp).await {
            Ok(n) if n > 0 => buf.extend_from_slice(&tmp[..n]),
            _ => return None,
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let body_len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < end + body_len {
        match stream.read(&mut tmp).await {
            Ok(n) if n > 0 => buf.extend_from_slice(&tmp[..n]),
            _ => return None,
        }
    }
    Some(buf)
}

/// A backend that closes each connection (FIN) as soon as it has read the request, without
/// answering.
async fn dropping_backend() -> RawBackend {
    RawBackend::start(|mut stream| async move {
        let _ = stream.shutdown().await;
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// 1. A backend slower than endpoint_timeout
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn backend_slower_than_endpoint_timeout_is_502_and_logged() {
    let host = "fp-slow.example.com";
    let env = TestEnv::start("endpoint_timeout: 1s").await;
    // Answers after 6 s: a router without the deadline relays this 200.
    let slow = RawBackend::start(|mut stream| async move {
        tokio::time::sleep(Duration::from_secs(6)).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
            .await;
    })
    .await;
    env.register(&route(host, slow.port)).await;
    env.sync().await;

    let resp = env.get(host, "/fp-slow").await;
    assert_eq!(resp.status, 502, "{}", resp.dump());
    assert_eq!(
        resp.header("X-Cf-Routererror"),
        Some("endpoint_failure (context deadline exceeded)"),
        "{}",
        resp.dump()
    );
    assert_eq!(
        resp.body_str(),
        "502 Bad Gateway: Registered endpoint failed to handle the request.\n"
    );
    assert_eq!(slow.requests(), 1, "the request reached the backend once");

    let line = env.access_log_line("/fp-slow").await;
    assert!(
        line.contains("\"GET /fp-slow HTTP/1.1\" 502 "),
        "access log line: {line}"
    );
    assert!(
        line.contains(&format!("\"127.0.0.1:{}\"", slow.port)),
        "the backend is logged: {line}"
    );
    assert!(
        line.ends_with(r#" x_cf_routererror:"endpoint_failure (context deadline exceeded)""#),
        "access log line: {line}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. The deadline during a streamed body
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn endpoint_timeout_cuts_a_stalled_streamed_body() {
    let host = "fp-stream.example.com";
    let env = TestEnv::start("endpoint_timeout: 2s").await;
    // Headers and 100 of 1000 body bytes at once, the rest after 12 s: a router without the
    // deadline over the body completes the response.
    let stalling = RawBackend::start(|mut stream| async move {
        let mut out = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec();
        out.extend_from_slice(&[b'a'; 100]);
        if stream.write_all(&out).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(12)).await;
        let _ = stream.write_all(&[b'b'; 900]).await;
    })
    .await;
    env.register(&route(host, stalling.port)).await;
    env.sync().await;

    let mut conn = HttpConn::connect(env.router.addr()).await;
    conn.send(&build_request("GET", "/fp-stream", &[("Host", host)], b""))
        .await;
    let head = conn.read_head().await.expect("a response head");
    assert_eq!(head.status, 200, "{}", head.dump());
    assert_eq!(head.header("Content-Length"), Some("1000"));
    let mut body = Vec::new();
    let end = conn
        .read_body_with(&head, false, |b| body.extend_from_slice(b))
        .await;
    let err = end.expect_err("the body must be cut, not completed");
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::UnexpectedEof,
        "the router closes the connection (not a client timeout): {err}"
    );
    assert_eq!(
        body,
        vec![b'a'; 100],
        "what the backend sent before stalling"
    );

    let line = env.access_log_line("/fp-stream").await;
    assert!(
        line.contains("\"GET /fp-stream HTTP/1.1\" 200 0 100 "),
        "status 200 (already sent) and the 100 body bytes that went: {line}"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. A request lost on a dropped connection
// ---------------------------------------------------------------------------------------------

/// A POST is never sent again once it was written, with a body or without one (the method
/// alone rules it out; a body-less GET is replayed, see the next test).
#[tokio::test(flavor = "multi_thread")]
async fn post_lost_on_a_dropped_connection_is_502_and_sent_once() {
    let env = TestEnv::start("backends: {max_attempts: 3}").await;
    for (host, body) in [
        ("fp-drop-post.example.com", &b"payload"[..]),
        ("fp-drop-post-empty.example.com", &b""[..]),
    ] {
        // Two endpoints, both dropping: a replay would reach the second one.
        let first = dropping_backend().await;
        let second = dropping_backend().await;
        env.register(&route(host, first.port)).await;
        env.register(&route(host, second.port)).await;
        env.sync().await;

        let resp = env
            .router
            .request(&build_request(
                "POST",
                "/fp-drop-post",
                &[("Host", host)],
                body,
            ))
            .await;
        assert_eq!(resp.status, 502, "{host}: {}", resp.dump());
        assert_eq!(
            resp.header("X-Cf-Routererror")
                .map(|v| v.starts_with("endpoint_failure")),
            Some(true),
            "{host}: {}",
            resp.dump()
        );
        assert_eq!(
            first.requests() + second.requests(),
            1,
            "{host}: the POST reached a backend exactly once (first {}, second {})",
            first.requests(),
            second.requests()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn get_lost_on_a_dropped_connection_is_sent_to_the_next_endpoint() {
    let host = "fp-drop-get.example.com";
    let env = TestEnv::start("backends: {max_attempts: 3}").await;
    let dropping = dropping_backend().await;
    let good = EchoBackend::start("good").await;
    env.register(&route(host, dropping.port)).await;
    env.register(&route(host, good.port())).await;
    env.sync().await;

    // Round robin starts anywhere: of two requests one is sent to the dropping endpoint first.
    for i in 0..2 {
        let resp = env.get(host, &format!("/fp-drop-get/{i}")).await;
        assert_eq!(resp.status, 200, "request {i}: {}", resp.dump());
        assert_eq!(resp.header("X-Backend-Name"), Some("good"), "request {i}");
    }
    assert_eq!(
        dropping.requests(),
        1,
        "the dropping endpoint got one request, then was skipped"
    );
    assert_eq!(good.request_count(), 2);
}

// ---------------------------------------------------------------------------------------------
// 4. max_attempts with every endpoint dead
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn max_attempts_bounds_dials_to_dead_endpoints_then_502() {
    let host = "fp-attempts.example.com";
    let env = TestEnv::start("backends: {max_attempts: 2}").await;
    let ports = [closed_port(), closed_port(), closed_port()];
    for port in ports {
        env.register(&route(host, port)).await;
    }
    env.sync().await;

    let resp = env.get(host, "/fp-attempts").await;
    assert_eq!(resp.status, 502, "{}", resp.dump());
    let error = resp.header("X-Cf-Routererror").unwrap_or_default();
    assert!(
        ports.iter().any(|p| error
            == format!("endpoint_failure (dial tcp 127.0.0.1:{p}: connect: connection refused)")),
        "the last dial's error: {error:?}"
    );
    let line = env.access_log_line("/fp-attempts").await;
    assert!(line.contains("\" 502 "), "{line}");

    // Every failed dial is logged (`backend-dial-failed`, naming the endpoint).
    let dials = |output: &str| -> usize {
        output
            .lines()
            .filter(|l| {
                l.contains("backend-dial-failed")
                    && ports.iter().any(|p| l.contains(&format!("127.0.0.1:{p}")))
            })
            .count()
    };
    let router = &env.router;
    eventually(
        "two backend-dial-failed log lines",
        Duration::from_secs(5),
        || async move { (dials(&router.output()) >= 2).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        dials(&env.router.output()),
        2,
        "exactly max_attempts dials; output:\n{}",
        env.router.output()
    );
}

// ---------------------------------------------------------------------------------------------
// 5. X-Forwarded-Client-Cert from a plain-HTTP client, router without TLS
// ---------------------------------------------------------------------------------------------

/// The `X-Forwarded-Client-Cert` values the app sees under `mode` when a plain-HTTP client
/// sends the header twice, in two spellings.
async fn xfcc_seen_by_app(mode: &str, host: &str) -> Vec<String> {
    let env = TestEnv::start(&format!("forwarded_client_cert: {mode}")).await;
    let app = EchoBackend::start("app").await;
    env.register_and_wait(&route(host, app.port())).await;
    let resp = env
        .router
        .request(&build_request(
            "GET",
            "/fp-xfcc",
            &[
                ("Host", host),
                ("X-Forwarded-Client-Cert", "spoofed-1"),
                ("x-forwarded-client-cert", "spoofed-2"),
            ],
            b"",
        ))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    EchoedRequest::parse(&resp.body)
        .header_all("X-Forwarded-Client-Cert")
        .iter()
        .map(|v| v.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn spoofed_xfcc_over_plain_http_never_reaches_the_app_in_forward_and_sanitize_set() {
    // The probe sees the header when the mode passes it on.
    let control = xfcc_seen_by_app("always_forward", "fp-xfcc-always.example.com").await;
    assert_eq!(control, ["spoofed-1", "spoofed-2"], "always_forward");
    for (mode, host) in [
        ("forward", "fp-xfcc-forward.example.com"),
        ("sanitize_set", "fp-xfcc-sanitize.example.com"),
    ] {
        let seen = xfcc_seen_by_app(mode, host).await;
        assert!(seen.is_empty(), "{mode}: the app saw {seen:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Absolute-form request targets
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn absolute_form_target_is_routed_and_sent_in_origin_form() {
    let host = "fp-abs.example.com";
    let env = TestEnv::start("").await;
    let app = EchoBackend::start("app").await;
    env.register_and_wait(&route(host, app.port())).await;

    let resp = env
        .router
        .request(&build_request(
            "GET",
            &format!("http://{host}/fp-abs/p?q=1"),
            &[("Host", host)],
            b"",
        ))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    let seen = EchoedRequest::parse(&resp.body);
    assert_eq!(seen.request_line, "GET /fp-abs/p?q=1 HTTP/1.1");
    assert_eq!(seen.header("Host"), Some(host));
}

/// Go's server (RFC 9112 §3.2.2): with an absolute-form target the `Host` line is ignored and
/// the target's host is the request's host, which the backend then gets as `Host`.
#[tokio::test(flavor = "multi_thread")]
async fn absolute_form_target_host_wins_over_the_host_header() {
    let host = "fp-abs-target.example.com";
    let decoy = "fp-abs-decoy.example.com";
    let env = TestEnv::start("").await;
    let app = EchoBackend::start("target").await;
    let other = EchoBackend::start("decoy").await;
    env.register(&route(host, app.port())).await;
    env.register_and_wait(&route(decoy, other.port())).await;
    env.router.wait_route(host).await;

    let resp = env
        .router
        .request(&build_request(
            "GET",
            &format!("http://{host}/fp-abs-target"),
            &[("Host", decoy)],
            b"",
        ))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    assert_eq!(
        resp.header("X-Backend-Name"),
        Some("target"),
        "routed by the target's host, not the Host line"
    );
    let seen = EchoedRequest::parse(&resp.body);
    assert_eq!(seen.request_line, "GET /fp-abs-target HTTP/1.1");
    assert_eq!(seen.header("Host"), Some(host));
}

// ---------------------------------------------------------------------------------------------
// 7. Empty pools: empty_pool_timeout and the context-path fallback
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn emptied_pool_is_503_until_empty_pool_timeout_then_removed() {
    let host = "fp-empty-timeout.example.com";
    let env = TestEnv::start(
        "empty_pool_timeout: 3s\nempty_pool_response_code_503: true\nprune_stale_droplets_interval: 1s",
    )
    .await;
    let app = EchoBackend::start("app").await;
    let msg = route(host, app.port());
    env.register_and_wait(&msg).await;

    let unregistered = Instant::now();
    env.unregister(&msg).await;
    let resp = env.router.wait_status(host, 503).await;
    assert_eq!(resp.header("X-Cf-Routererror"), Some("no_endpoints"));

    let router = &env.router;
    let gone = eventually(
        "the empty pool to be removed (404)",
        Duration::from_secs(30),
        || async move {
            let r = router.get(host, "/").await;
            (r.status == 404).then_some(r)
        },
    )
    .await;
    assert!(
        unregistered.elapsed() >= Duration::from_secs(3),
        "removed after {:?}, before empty_pool_timeout",
        unregistered.elapsed()
    );
    assert_eq!(gone.header("X-Cf-Routererror"), Some("unknown_route"));
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_context_path_pool_falls_back_to_its_parent_or_is_503() {
    let host = "fp-empty-ctx.example.com";
    let lone = "fp-empty-ctx-lone.example.com";
    let env = TestEnv::start("empty_pool_timeout: 300s\nempty_pool_response_code_503: true").await;
    let root = EchoBackend::start("root").await;
    let api = EchoBackend::start("api").await;
    env.register(&route(host, root.port())).await;
    let api_msg = route(&format!("{host}/api"), api.port());
    let lone_msg = route(&format!("{lone}/api"), api.port());
    env.register(&api_msg).await;
    env.register(&lone_msg).await;
    env.sync().await;
    let resp = env.get(host, "/api/x").await;
    assert_eq!(
        resp.header("X-Backend-Name"),
        Some("api"),
        "{}",
        resp.dump()
    );

    env.unregister(&api_msg).await;
    env.unregister(&lone_msg).await;
    env.sync().await;
    // Below an empty context-path pool, the deepest non-empty pool above it serves.
    let resp = env.get(host, "/api/x").await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    assert_eq!(resp.header("X-Backend-Name"), Some("root"));
    // With none above it, the empty pool itself answers: 503, not 404.
    let resp = env.get(lone, "/api/x").await;
    assert_eq!(resp.status, 503, "{}", resp.dump());
    assert_eq!(resp.header("X-Cf-Routererror"), Some("no_endpoints"));
}

// ---------------------------------------------------------------------------------------------
// 8. NATS closed for good
// ---------------------------------------------------------------------------------------------

/// nats.go (upstream's client, `MaxReconnect: -1`) reconnects forever to a server that is down,
/// but aborts reconnecting when a server returns the same authorization error twice
/// (`IgnoreAuthErrorAbort` opts out); the connection is then closed and gorouter's closed
/// handler exits the process. Here the test's nats-server comes back from an outage requiring
/// credentials the router does not have.
#[tokio::test(flavor = "multi_thread")]
async fn router_exits_when_nats_closes_the_connection_for_good() {
    let mut nats = NatsServer::start().await;
    let mut router = Gorouter::builder(&nats).start().await;
    let port = nats.port();
    nats.stop().await;

    let dir = TempDir::new("it-nats-auth");
    let mut cmd = Command::new(nats_server_bin());
    cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .args(["--user", "fp-user", "--pass", "fp-pass"]);
    let mut auth_server = None;
    for _ in 0..50 {
        match ChildProcess::try_spawn("nats-server", cmd_clone(&cmd), dir.path().join("n.log"), "")
        {
            Ok(mut child) => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if child.try_exit().is_none() {
                    auth_server = Some(child);
                    break;
                }
            }
            Err(e) => panic!("{e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _auth_server = auth_server.expect("nats-server with --user back on the router's port");

    let status = router.wait_exit(Duration::from_secs(30)).await;
    assert!(!status.success(), "a fatal exit: {status}");
    assert!(
        router.output().contains("nats-connection-closed"),
        "output:\n{}",
        router.output()
    );
}

/// A copy of `cmd` (program and arguments) for another spawn.
fn cmd_clone(cmd: &Command) -> Command {
    let mut c = Command::new(cmd.get_program());
    c.args(cmd.get_args());
    c
}
