//! Many routes registered through NATS, checked on the wire: the NATS server on
//! 127.0.0.1:4222 (see the helper rules: tests talk to the real service) receives
//! gorouter's `router.register` messages for every host, and `router.unregister` for the same
//! hosts at the end.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use loadgen::routes::{self, Registrar};

const NATS: &str = "nats://127.0.0.1:4222";

/// Reads messages from `sub` until every host in `want` has been seen in their `uris`.
async fn collect_uris(
    sub: &mut async_nats::Subscriber,
    want: &BTreeSet<String>,
    backend: SocketAddr,
) {
    let mut seen = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !want.is_subset(&seen) {
        let msg = tokio::time::timeout_at(deadline, sub.next())
            .await
            .unwrap_or_else(|_| panic!("saw only {} of {} hosts", seen.len(), want.len()))
            .expect("subscription open");
        let v: serde_json::Value = serde_json::from_slice(&msg.payload).expect("JSON payload");
        if v["port"] != backend.port() {
            continue; // someone else's registration on the shared server
        }
        assert_eq!(v["host"], "127.0.0.1");
        for uri in v["uris"].as_array().expect("uris") {
            seen.insert(uri.as_str().expect("a string uri").to_string());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_are_registered_in_chunks_and_unregistered_through_nats() {
    let nats = async_nats::connect(NATS)
        .await
        .expect("NATS on 127.0.0.1:4222");
    let mut registers = nats.subscribe("router.register").await.unwrap();
    let mut unregisters = nats.subscribe("router.unregister").await.unwrap();
    nats.flush().await.unwrap();

    // More hosts than fit in one message, so the chunking is exercised.
    let domain = format!("lg-test-{}.invalid", std::process::id());
    let hosts = Arc::new(routes::route_hosts(1200, &domain).unwrap());
    let want: BTreeSet<String> = hosts.iter().cloned().collect();
    // A port nobody listens on: nothing should route there for real.
    let backend: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();

    let registrar = Registrar::Nats { url: NATS.into() };
    let registration = routes::register(&registrar, hosts.clone(), backend)
        .await
        .unwrap();
    collect_uris(&mut registers, &want, backend).await;
    registration.unregister().await.unwrap();
    collect_uris(&mut unregisters, &want, backend).await;
}

#[tokio::test]
async fn an_unreachable_nats_server_fails_in_time() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let registrar = Registrar::Nats {
        url: format!("nats://127.0.0.1:{port}"),
    };
    let hosts = Arc::new(routes::route_hosts(1, "x.invalid").unwrap());
    let started = std::time::Instant::now();
    let result = routes::register(&registrar, hosts, "127.0.0.1:1".parse().unwrap()).await;
    assert!(result.is_err());
    assert!(started.elapsed() < Duration::from_secs(30));
}
