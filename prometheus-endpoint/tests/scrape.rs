//! [`prometheus_endpoint::scrape`] against a real [`MetricsServer`] and against peers that do
//! not answer as one: a closed port, a non-HTTP service, silence, an endless response, and a
//! peer that hangs up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_endpoint::scrape::{Phase, MAX_RESPONSE_BYTES};
use prometheus_endpoint::{
    request, scrape, Endpoint, MetricsServer, Registry, ScrapeError, CONTENT_TYPE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TIMEOUT: Duration = Duration::from_secs(5);

async fn metrics_server() -> SocketAddr {
    let mut registry = Registry::default();
    let plain = Counter::<u64>::default();
    plain.inc_by(7);
    registry.register("scrapes_seen", "A counter the test sets", plain);
    let by_code = Family::<Vec<(String, String)>, Counter>::default();
    by_code
        .get_or_create(&vec![("code".to_owned(), "200".to_owned())])
        .inc_by(3);
    registry.register("answers", "A labelled counter the test sets", by_code);
    let server = MetricsServer::bind(&Endpoint {
        addr: "127.0.0.1:0".parse().unwrap(),
        tls: None,
    })
    .await
    .expect("bind");
    let addr = server.local_addr().expect("addr");
    tokio::spawn(server.serve(Arc::new(registry), std::future::pending()));
    addr
}

/// A listener whose every connection is handed to `answer`.
async fn peer<F, Fut>(answer: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(stream));
        }
    });
    addr
}

#[tokio::test]
async fn a_metrics_server_is_scraped_with_status_content_type_and_samples() {
    let addr = metrics_server().await;
    let s = scrape(addr, TIMEOUT).await.expect("scrape");
    assert_eq!(s.status, 200, "{s}");
    assert_eq!(s.content_type.as_deref(), Some(CONTENT_TYPE), "{s}");
    assert!(s.body.starts_with("# HELP "), "{s}");
    assert!(s.body.ends_with("# EOF\n"), "{s}");
    assert_eq!(s.sample("scrapes_seen_total"), Some("7"), "{s}");
    assert_eq!(s.sample("answers_total{code=\"200\"}"), Some("3"), "{s}");
    assert_eq!(
        s.sample("answers_total"),
        None,
        "only the labelled series exists"
    );
}

#[tokio::test]
async fn other_answers_of_the_server_are_responses_not_errors() {
    let addr = metrics_server().await;
    let s = request(addr, &Method::GET, "/varz", TIMEOUT)
        .await
        .expect("404");
    assert_eq!(s.status, 404, "{s}");
    let s = request(addr, &Method::POST, "/metrics", TIMEOUT)
        .await
        .expect("405");
    assert_eq!(
        (s.status, s.header("Allow")),
        (405, Some("GET, HEAD")),
        "{s}"
    );
    let s = request(addr, &Method::HEAD, "/metrics", TIMEOUT)
        .await
        .expect("HEAD");
    assert_eq!((s.status, s.body.as_str()), (200, ""), "{s}");
    assert!(
        s.header("content-length")
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n > 0),
        "{s}"
    );
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = scrape(addr, TIMEOUT).await.expect_err("nothing listens");
    assert!(
        matches!(
            err,
            ScrapeError::Io {
                phase: Phase::Connect,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[tokio::test]
async fn a_non_http_answer_is_malformed_without_waiting_for_the_timeout() {
    // An SSH server greets first and then waits for the client.
    let addr = peer(|mut stream| async move {
        let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").await;
        tokio::time::sleep(Duration::from_secs(60)).await;
    })
    .await;
    let started = Instant::now();
    let err = scrape(addr, TIMEOUT).await.expect_err("not HTTP");
    assert!(matches!(err, ScrapeError::Malformed { .. }), "{err:?}");
    assert!(started.elapsed() < TIMEOUT, "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_peer_that_hangs_up_without_answering_is_malformed() {
    let addr = peer(|stream| async move { drop(stream) }).await;
    let err = scrape(addr, TIMEOUT).await.expect_err("no answer");
    // Closed before or after the request was written: either way no response.
    assert!(
        matches!(
            err,
            ScrapeError::Malformed { .. }
                | ScrapeError::Io {
                    phase: Phase::Write | Phase::Read,
                    ..
                }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_silent_peer_is_a_read_timeout() {
    let addr = peer(|stream| async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(stream);
    })
    .await;
    let timeout = Duration::from_millis(300);
    let err = scrape(addr, timeout).await.expect_err("silence");
    assert!(
        matches!(err, ScrapeError::Timeout { phase: Phase::Read, timeout: t, .. } if t == timeout),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_response_over_the_limit_is_too_large() {
    // No length: the body would end when the peer closes, which it never does while the
    // client reads. (It reads the request first: closing with it unread would reset the
    // connection.)
    let addr = peer(|mut stream| async move {
        let mut request = Vec::new();
        while !request.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            match stream.read(&mut byte).await {
                Ok(1) => request.push(byte[0]),
                _ => return,
            }
        }
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
        let block = vec![b'x'; 64 * 1024];
        while stream.write_all(&block).await.is_ok() {}
    })
    .await;
    let err = scrape(addr, Duration::from_secs(30))
        .await
        .expect_err("too large");
    assert!(
        matches!(err, ScrapeError::TooLarge { limit, .. } if limit == MAX_RESPONSE_BYTES),
        "{err:?}"
    );
}
