//! Bodies and connections that are not a plain request/response (A.7, A.11): websocket
//! upgrades, `Expect: 100-continue`, chunked uploads, and 100 MiB uploads and downloads that must
//! stream through the router with flat memory.

use std::time::Duration;

use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use integration::backends::text_response;
use integration::http::HttpConn;
use integration::util::{pattern_checksum, pattern_chunk, Checksum, PATTERN_CHUNK};
use integration::{route, EchoBackend, EchoedRequest, HttpBackend, TestEnv};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HUNDRED_MIB: u64 = 100 * 1024 * 1024;
/// Allowed growth of the router's peak RSS while streaming 100 MiB.
const MAX_GROWTH_KIB: u64 = 40 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn websocket_upgrade_is_proxied_and_echoes_both_ways() {
    let env = TestEnv::start("").await;
    let backend = EchoBackend::start("ws").await;
    env.register_and_wait(&route("ws.example.com", backend.port()))
        .await;

    let mut conn = HttpConn::connect(env.router.addr()).await;
    conn.send(
        b"GET /ws HTTP/1.1\r\nHost: ws.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    let head = conn.read_head().await.expect("upgrade response");
    assert_eq!(head.status, 101, "{}", head.dump());
    assert!(
        head.header("Upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "{}",
        head.dump()
    );

    let (mut stream, leftover) = conn.into_parts();
    assert!(
        leftover.is_empty(),
        "unexpected bytes after 101: {leftover:?}"
    );
    for msg in [b"hello through the router".to_vec(), vec![0xA5; 100_000]] {
        stream.write_all(&msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut back))
            .await
            .expect("echo within 10 s")
            .expect("read echo");
        assert!(back == msg, "echoed bytes differ ({} bytes)", msg.len());
    }

    let seen = EchoedRequest::parse_head(&backend.requests().last().unwrap().head);
    assert_eq!(seen.request_line, "GET /ws HTTP/1.1");
    assert_eq!(seen.header("Upgrade"), Some("websocket"));
    assert!(seen
        .header("Connection")
        .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade")));
    assert_eq!(
        seen.header("Sec-WebSocket-Key"),
        Some("dGhlIHNhbXBsZSBub25jZQ==")
    );
}

async fn expect_continue(env: &TestEnv) -> (integration::RawResponse, integration::RawResponse) {
    let mut conn = HttpConn::connect(env.router.addr()).await;
    conn.send(
        b"POST /expect HTTP/1.1\r\nHost: expect.example.com\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
    )
    .await;
    let interim = tokio::time::timeout(Duration::from_secs(3), conn.read_response())
        .await
        .expect("100 Continue within 3 s, before the body is sent");
    conn.send(b"hello=world").await;
    let fin = conn.read_response().await;
    (interim, fin)
}

#[tokio::test(flavor = "multi_thread")]
async fn expect_100_continue_gets_interim_then_final_response() {
    let env = TestEnv::start("").await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&route("expect.example.com", backend.port()))
        .await;

    let (interim, fin) = expect_continue(&env).await;
    assert_eq!(
        interim.status_line,
        "HTTP/1.1 100 Continue",
        "{}",
        interim.dump()
    );
    assert_eq!(fin.status, 200, "{}", fin.dump());
    let seen = EchoedRequest::parse(&fin.body);
    assert_eq!(seen.request_line, "POST /expect HTTP/1.1");
    assert_eq!(seen.body_len, Some(11));
    assert_eq!(backend.requests().last().unwrap().body, b"hello=world");
}

#[tokio::test(flavor = "multi_thread")]
async fn expect_100_continue_is_sent_to_backend_with_connection_close() {
    let env = TestEnv::start("").await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&route("expect.example.com", backend.port()))
        .await;

    let (_, fin) = expect_continue(&env).await;
    let seen = EchoedRequest::parse(&fin.body);
    assert_eq!(seen.header("Expect"), Some("100-continue"));
    assert_eq!(seen.header("Connection"), Some("close"));
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_request_body_reaches_the_backend() {
    let env = TestEnv::start("").await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&route("chunked.example.com", backend.port()))
        .await;

    let resp = env
        .router
        .request(b"POST /chunked HTTP/1.1\r\nHost: chunked.example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        .await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    assert_eq!(EchoedRequest::parse(&resp.body).body_len, Some(11));
    assert_eq!(backend.requests().last().unwrap().body, b"hello world");
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_of_100_mib_streams_with_flat_memory() {
    let env = TestEnv::start("").await;
    // The backend waits before reading: a router that buffers instead of applying back-pressure
    // would swallow the upload meanwhile.
    let backend = HttpBackend::start(|req: hyper::Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/" {
            return text_response(200, "probe");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut body = req.into_body();
        let mut sum = Checksum::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(d) = f.data_ref() {
                        sum.update(d);
                    }
                }
                Err(e) => return text_response(500, format!("body error: {e}")),
            }
        }
        text_response(200, sum.digest())
    })
    .await;
    env.register_and_wait(&route("up.example.com", backend.port()))
        .await;
    let before = env.router.memory_kib("VmRSS");

    let mut conn = HttpConn::connect(env.router.addr()).await;
    conn.send(
        format!(
            "PUT /upload HTTP/1.1\r\nHost: up.example.com\r\nContent-Length: {HUNDRED_MIB}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    let chunks = HUNDRED_MIB / PATTERN_CHUNK as u64;
    for i in 0..chunks {
        if let Err(e) = conn.try_send(&pattern_chunk(i)).await {
            let resp = conn.try_read_response().await;
            panic!("upload failed after {i} chunks: {e}; response: {resp:?}");
        }
    }
    let resp = conn.read_response().await;
    let peak = env.router.memory_kib("VmHWM");
    let after = env.router.memory_kib("VmRSS");

    eprintln!("upload: router VmRSS before {before} KiB, peak {peak} KiB, after {after} KiB");
    assert_eq!(resp.status, 200, "{}", resp.dump());
    assert_eq!(
        resp.body_str(),
        pattern_checksum(HUNDRED_MIB),
        "the backend got different bytes"
    );
    assert!(
        peak.saturating_sub(before) < MAX_GROWTH_KIB,
        "router memory grew from {before} KiB to a peak of {peak} KiB (now {after} KiB) for a 100 MiB upload"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn download_of_100_mib_streams_with_flat_memory() {
    let env = TestEnv::start("").await;
    let backend = HttpBackend::start(|_req| async move {
        let chunks = HUNDRED_MIB / PATTERN_CHUNK as u64;
        let stream = futures::stream::iter(0..chunks)
            .map(|i| Ok::<_, std::io::Error>(Frame::data(pattern_chunk(i))));
        http::Response::builder()
            .status(200)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", HUNDRED_MIB.to_string())
            .body(BodyExt::boxed(StreamBody::new(stream)))
            .unwrap()
    })
    .await;
    env.register(&route("down.example.com", backend.port()))
        .await;
    env.sync().await;
    let before = env.router.memory_kib("VmRSS");

    let mut conn = HttpConn::connect(env.router.addr()).await;
    conn.send(b"GET /download HTTP/1.1\r\nHost: down.example.com\r\n\r\n")
        .await;
    let head = conn.read_head().await.expect("response head");
    assert_eq!(head.status, 200, "{}", head.dump());
    // A slow reader: a router without back-pressure would buffer what the backend pushes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut sum = Checksum::new();
    conn.read_body_with(&head, false, |b: &[u8]| sum.update(b))
        .await
        .unwrap_or_else(|e| panic!("download broke after {} bytes: {e}", sum.len()));
    let peak = env.router.memory_kib("VmHWM");
    let after = env.router.memory_kib("VmRSS");

    eprintln!("download: router VmRSS before {before} KiB, peak {peak} KiB, after {after} KiB");
    assert_eq!(sum.len(), HUNDRED_MIB);
    assert_eq!(sum.digest(), pattern_checksum(HUNDRED_MIB), "bytes differ");
    assert!(
        peak.saturating_sub(before) < MAX_GROWTH_KIB,
        "router memory grew from {before} KiB to a peak of {peak} KiB (now {after} KiB) for a 100 MiB download"
    );
}

/// Upstream's "100-continue resets response" spec: a backend that refuses the request at once
/// (405, no `100 Continue`, body never read) gives the client that 405, not a `100 Continue`
/// the router made up, again and again, and ordinary requests keep working in between.
#[tokio::test(flavor = "multi_thread")]
async fn expect_100_continue_refused_by_the_backend_is_relayed_without_100() {
    let env = TestEnv::start("").await;
    let refusing =
        HttpBackend::start(|_req| async { text_response(405, "no OPTIONS here\n") }).await;
    let ok = EchoBackend::start("ok").await;
    env.register_and_wait(&route("refuse.example.com", refusing.port()))
        .await;
    env.register_and_wait(&route("ok.example.com", ok.port()))
        .await;

    for i in 0..10 {
        let mut conn = HttpConn::connect(env.router.addr()).await;
        conn.send(
            b"OPTIONS / HTTP/1.1\r\nHost: refuse.example.com\r\nExpect: 100-Continue\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
        )
        .await;
        let resp = tokio::time::timeout(Duration::from_secs(5), conn.read_response())
            .await
            .unwrap_or_else(|_| panic!("request {i}: no response within 5 s"));
        assert_eq!(resp.status, 405, "request {i}: {}", resp.dump());
        assert_eq!(resp.body_str(), "no OPTIONS here\n");
        let good = env.get("ok.example.com", "/").await;
        assert_eq!(good.status, 200, "request {i}: {}", good.dump());
    }

    // A client that waits for 100 Continue before sending its body gets the 405 instead.
    let mut conn = HttpConn::connect(env.router.addr()).await;
    conn.send(
        b"PUT / HTTP/1.1\r\nHost: refuse.example.com\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .await;
    let resp = tokio::time::timeout(Duration::from_secs(5), conn.read_response())
        .await
        .expect("a response within 5 s");
    assert_eq!(resp.status, 405, "{}", resp.dump());
}

/// The router does not answer `100 Continue` itself: the client's body is only asked for once
/// the backend has sent its own `100 Continue`, which reaches the client.
#[tokio::test(flavor = "multi_thread")]
async fn expect_100_continue_waits_for_the_backend() {
    const BACKEND_DELAY: Duration = Duration::from_millis(500);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local_addr").port();
    // One raw HTTP/1.1 exchange: read the head, wait, 100 Continue, read 5 bytes, answer.
    let backend = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).await.expect("read head");
            head.push(byte[0]);
        }
        tokio::time::sleep(BACKEND_DELAY).await;
        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .expect("write 100");
        let mut body = [0u8; 5];
        s.read_exact(&mut body).await.expect("read body");
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\ngot:{}",
            String::from_utf8_lossy(&body)
        );
        s.write_all(reply.as_bytes()).await.expect("write reply");
        String::from_utf8_lossy(&head).into_owned()
    });
    let env = TestEnv::start("").await;
    env.client.register(&route("waits.example.com", port)).await;
    // Registration is asynchronous: poll /routes rather than sending a request the one-shot
    // backend would take.
    integration::eventually("route registered", Duration::from_secs(10), || async {
        let routes = env.router.routes().await;
        routes
            .body_str()
            .contains("waits.example.com")
            .then_some(())
    })
    .await;

    let mut conn = HttpConn::connect(env.router.addr()).await;
    let sent = std::time::Instant::now();
    conn.send(
        b"POST /upload HTTP/1.1\r\nHost: waits.example.com\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .await;
    let interim = tokio::time::timeout(Duration::from_secs(5), conn.read_response())
        .await
        .expect("100 Continue within 5 s");
    let waited = sent.elapsed();
    assert_eq!(interim.status, 100, "{}", interim.dump());
    assert!(
        waited >= BACKEND_DELAY - Duration::from_millis(50),
        "100 Continue after {waited:?}: the router answered before the backend did"
    );
    conn.send(b"hello").await;
    let fin = conn.read_response().await;
    assert_eq!(fin.status, 200, "{}", fin.dump());
    assert_eq!(fin.body_str(), "got:hello");
    let head = backend.await.expect("backend task");
    assert!(
        head.to_ascii_lowercase().contains("expect: 100-continue"),
        "Expect forwarded: {head}"
    );
}

/// A backend that never sends `100 Continue` but waits for the body gets it after upstream's
/// one-second `ExpectContinueTimeout`; only then is the client told to go on.
#[tokio::test(flavor = "multi_thread")]
async fn expect_100_continue_body_goes_after_one_second_without_a_backend_100() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local_addr").port();
    tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read_exact(&mut byte).await.is_err() {
                return;
            }
            head.push(byte[0]);
        }
        let mut body = [0u8; 5];
        if s.read_exact(&mut body).await.is_ok() {
            let reply = format!(
                "HTTP/1.1 201 Created\r\nContent-Length: 9\r\nConnection: close\r\n\r\ngot:{}",
                String::from_utf8_lossy(&body)
            );
            let _ = s.write_all(reply.as_bytes()).await;
        }
    });
    let env = TestEnv::start("").await;
    env.client.register(&route("late.example.com", port)).await;
    integration::eventually("route registered", Duration::from_secs(10), || async {
        let routes = env.router.routes().await;
        routes.body_str().contains("late.example.com").then_some(())
    })
    .await;

    let mut conn = HttpConn::connect(env.router.addr()).await;
    let sent = std::time::Instant::now();
    conn.send(
        b"POST / HTTP/1.1\r\nHost: late.example.com\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .await;
    let interim = tokio::time::timeout(Duration::from_secs(5), conn.read_response())
        .await
        .expect("100 Continue within 5 s");
    assert_eq!(interim.status, 100, "{}", interim.dump());
    assert!(
        sent.elapsed() >= Duration::from_millis(900),
        "100 Continue after {:?}, before the expect-continue timeout",
        sent.elapsed()
    );
    conn.send(b"hello").await;
    let fin = conn.read_response().await;
    assert_eq!(fin.status, 201, "{}", fin.dump());
    assert_eq!(fin.body_str(), "got:hello");
}
