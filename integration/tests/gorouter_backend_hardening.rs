//! gorouter's backend side under hostile or broken backends (issue 13, A.5, A.6):
//!
//! - a backend that accepts a connection, reads the request and resets the connection is
//!   retried on another endpoint for an idempotent request, and is skipped afterwards (marked
//!   failed); a POST already sent is not repeated;
//! - the instance `X-CF-App-Instance` names gets exactly one attempt;
//! - a backend response with 150 `Set-Cookie` headers reaches the client whole (hyper's
//!   default cap of 100 header lines made it a 502).
//!
//! - an idle keep-alive connection to a backend is closed by the router after
//!   `backend_idle_timeout` (ours; upstream's fixed 90 s), with no request asking for it.
//!
//! Pooled connections that are not ready are covered by unit tests in
//! `gorouter/src/proxy/transport/mod.rs`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration::backends::full_body;
use integration::http::{build_request, RawResponse};
use integration::{route, EchoBackend, HttpBackend, TestEnv};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A backend that accepts connections, reads a request head and resets the connection
/// (RST, not FIN) without answering; counts the connections it accepted.
struct ResettingBackend {
    port: u16,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ResettingBackend {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                            .await
                        {
                            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
                            _ => return,
                        }
                    }
                    // Linger 0: closing sends a reset. (Deprecated because a non-zero linger
                    // blocks on drop; zero never does.)
                    #[allow(deprecated)]
                    let _ = stream.set_linger(Some(Duration::ZERO));
                    drop(stream);
                });
            }
        });
        Self {
            port,
            accepted,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for ResettingBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A route `host` with one resetting and one good endpoint.
async fn reset_and_good(host: &str) -> (TestEnv, ResettingBackend, EchoBackend) {
    let env = TestEnv::start("backends: {max_attempts: 3}").await;
    let bad = ResettingBackend::start().await;
    let good = EchoBackend::start("good").await;
    env.register(&route(host, bad.port)).await;
    env.register(&route(host, good.port())).await;
    env.sync().await;
    (env, bad, good)
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotent_get_is_retried_past_a_backend_that_resets_the_connection() {
    let host = "rst-get.backend-hardening.example.com";
    let (env, bad, _good) = reset_and_good(host).await;
    for i in 0..10 {
        let resp = env.get(host, &format!("/{i}")).await;
        assert_eq!(resp.status, 200, "request {i}: {}", resp.dump());
        assert_eq!(resp.header("X-Backend-Name"), Some("good"), "request {i}");
    }
    assert!(bad.accepted() >= 1, "the resetting endpoint was tried");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_that_resets_the_connection_is_marked_failed_and_skipped() {
    let host = "rst-mark.backend-hardening.example.com";
    let (env, bad, good) = reset_and_good(host).await;
    for i in 0..10 {
        env.get(host, &format!("/{i}")).await;
    }
    assert_eq!(
        bad.accepted(),
        1,
        "after its reset the endpoint is skipped for retry-after-failure (30 s)"
    );
    assert_eq!(good.request_count(), 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn post_is_not_sent_again_after_a_reset_once_it_was_written() {
    let host = "rst-post.backend-hardening.example.com";
    let (env, bad, good) = reset_and_good(host).await;
    // Round robin starts anywhere: within two requests one goes to the resetting endpoint.
    for i in 0..2 {
        let (bad_before, good_before) = (bad.accepted(), good.request_count());
        let resp = env
            .router
            .request(&build_request(
                "POST",
                &format!("/{i}"),
                &[("Host", host), ("Content-Length", "5")],
                b"hello",
            ))
            .await;
        if bad.accepted() > bad_before {
            assert_eq!(resp.status, 502, "{}", resp.dump());
            assert_eq!(
                good.request_count(),
                good_before,
                "the POST was not repeated on the other endpoint"
            );
            assert_eq!(
                resp.header("X-Cf-Routererror")
                    .map(|v| v.starts_with("endpoint_failure")),
                Some(true),
                "{}",
                resp.dump()
            );
            return;
        }
        assert_eq!(resp.status, 200, "{}", resp.dump());
    }
    panic!("no POST reached the resetting endpoint");
}

/// A registration of `host` at `port` as instance `index` of app `guid`.
fn app_instance_route(host: &str, port: u16, guid: &str, index: &str) -> serde_json::Value {
    let mut msg = route(host, port);
    msg["app"] = json!(guid);
    msg["private_instance_index"] = json!(index);
    msg
}

/// Registers `routes`, waits until the router has them, and sends `GET /` for `host` naming
/// the app instance `instance` (`<guid>:<index>`) in `X-CF-App-Instance`.
async fn get_app_instance(
    env: &TestEnv,
    routes: &[serde_json::Value],
    host: &str,
    instance: &str,
) -> RawResponse {
    for msg in routes {
        env.register(msg).await;
    }
    env.sync().await;
    env.router
        .request(&build_request(
            "GET",
            "/",
            &[("Host", host), ("X-CF-App-Instance", instance)],
            b"",
        ))
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_instance_named_by_x_cf_app_instance_gets_exactly_one_attempt() {
    let env = TestEnv::start("backends: {max_attempts: 3}").await;
    let guid = "0123abcd-0000-4000-8000-0000000000aa";
    let host = "one-attempt.backend-hardening.example.com";
    let bad = ResettingBackend::start().await;
    let good = EchoBackend::start("good").await;
    let routes = [
        app_instance_route(host, bad.port, guid, "0"),
        app_instance_route(host, good.port(), guid, "1"),
    ];
    let resp = get_app_instance(&env, &routes, host, &format!("{guid}:0")).await;
    assert_eq!(resp.status, 502, "{}", resp.dump());
    assert_eq!(bad.accepted(), 1, "one attempt on the named instance");
    assert_eq!(good.request_count(), 0, "no fallback to another instance");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_instance_named_by_x_cf_app_instance_is_400_even_with_other_instances() {
    let env = TestEnv::start("").await;
    let guid = "0123abcd-0000-4000-8000-0000000000bb";
    let host = "missing-inst.backend-hardening.example.com";
    let good = EchoBackend::start("good").await;
    let routes = ["0", "1"].map(|idx| {
        let mut msg = app_instance_route(host, good.port(), guid, idx);
        msg["private_instance_id"] = json!(format!("inst-{idx}"));
        msg
    });
    let resp = get_app_instance(&env, &routes, host, &format!("{guid}:7")).await;
    let body = format!(
        "400 Bad Request: Requested instance ('7') with guid ('{guid}') does not exist for route ('{host}')\n"
    );
    assert_eq!(resp.status_line, "HTTP/1.1 400 Bad Request");
    assert_eq!(resp.body_str(), body);
    assert_eq!(resp.header("X-Cf-Routererror"), Some("unknown_route"));
    assert_eq!(resp.header("Cache-Control"), Some("no-cache, no-store"));
    assert_eq!(good.request_count(), 0, "no instance is tried");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_response_with_150_set_cookie_headers_reaches_the_client_whole() {
    let env = TestEnv::start("").await;
    let host = "cookies.backend-hardening.example.com";
    let backend = HttpBackend::start(|_req| async move {
        let mut b = http::Response::builder().status(200);
        for i in 0..150 {
            b = b.header("Set-Cookie", format!("c{i}=v{i}; Path=/"));
        }
        b.body(full_body("ok")).expect("a valid response")
    })
    .await;
    env.register(&route(host, backend.port())).await;
    env.sync().await;
    let resp = env.get(host, "/").await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    let cookies = resp.header_all("Set-Cookie");
    assert_eq!(cookies.len(), 150);
    assert_eq!(cookies[0], "c0=v0; Path=/");
    assert_eq!(cookies[149], "c149=v149; Path=/");
}

/// A backend that answers one keep-alive request on its first connection, then reports how
/// long after the answer the router closed that connection (`None`: not within 30 s).
async fn keep_alive_backend() -> (u16, tokio::sync::oneshot::Receiver<Option<Duration>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local_addr").port();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
                _ => return,
            }
        }
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        if stream.write_all(answer).await.is_err() {
            return;
        }
        let answered = Instant::now();
        let closed = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        let _ = tx.send(closed.ok().map(|_| answered.elapsed()));
    });
    (port, rx)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_backend_connection_is_closed_after_backend_idle_timeout() {
    let env = TestEnv::start("disable_keep_alives: false\nbackend_idle_timeout: 2s").await;
    let (port, closed) = keep_alive_backend().await;
    let host = "idle-age.backend-hardening.example";
    let answer = env.register_and_wait(&route(host, port)).await;
    assert_eq!(answer.status, 200, "{}", answer.dump());

    // Closed by the reaper (which looks four times per idle age): a connection nothing closes
    // fails here after 30 s, a generous deadline for a 2 s idle age on a loaded machine.
    let after = tokio::time::timeout(Duration::from_secs(40), closed)
        .await
        .expect("the backend reports within 40 s")
        .expect("the backend answered one request")
        .expect("the router closes the idle connection within 30 s");
    // Kept for its idle age (not closed right after the answer).
    assert!(
        after >= Duration::from_millis(1800),
        "closed {after:?} after the answer: before backend_idle_timeout (2s)"
    );
}
