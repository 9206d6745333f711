//! The real Locket server in-process on 127.0.0.1:0 over mutual TLS (rcgen PKI), on SQLite:
//! every RPC and error code/message, TTL expiry, refresh, the burglar, certificate checks and
//! competing lock runners.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, pki, sqlite_table, TestServer};
use locket::client::LocketClient;
use locket::proto::{
    FetchAllRequest, FetchRequest, LockRequest, ReleaseRequest, Resource as ProtoResource, TypeCode,
};
use locket::runner::{
    hold_lock, BackendFuture, LockBackend, LockRunnerConfig, LockState, RunnerError,
};
use locket::{LockError, Resource};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

#[allow(deprecated)]
fn resource(key: &str, owner: &str, type_str: &str, code: i32) -> Option<ProtoResource> {
    Some(ProtoResource {
        key: key.into(),
        owner: owner.into(),
        value: String::new(),
        r#type: type_str.into(),
        type_code: code,
    })
}

fn lock_req(key: &str, owner: &str, type_str: &str, code: i32, ttl: i64) -> LockRequest {
    LockRequest {
        resource: resource(key, owner, type_str, code),
        ttl_in_seconds: ttl,
    }
}

fn code_msg<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    let s = r.expect_err("expected an error status");
    (s.code(), s.message().to_string())
}

const LOCK: i32 = TypeCode::Lock as i32;
const PRESENCE: i32 = TypeCode::Presence as i32;

#[allow(deprecated)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_and_error_code() {
    let pki = pki();
    let (table, _dir) = sqlite_table().await;
    let server = TestServer::start(table, &pki).await;
    let client = pki.client(server.addr).await;
    let mut raw = client.grpc();

    // Lock + Fetch.
    client
        .lock("routing_api_lock", "uuid-a", "v", TypeCode::Lock, 15)
        .await
        .unwrap();
    let r = client.fetch("routing_api_lock").await.unwrap();
    assert_eq!(
        (
            r.key.as_str(),
            r.owner.as_str(),
            r.value.as_str(),
            r.r#type.as_str(),
            r.type_code
        ),
        ("routing_api_lock", "uuid-a", "v", "lock", LOCK)
    );
    // Refresh by the owner.
    client
        .lock("routing_api_lock", "uuid-a", "v2", TypeCode::Lock, 15)
        .await
        .unwrap();
    assert_eq!(client.fetch("routing_api_lock").await.unwrap().value, "v2");

    // Collision.
    let collide = raw
        .lock(lock_req("routing_api_lock", "uuid-b", "", LOCK, 15))
        .await;
    assert_eq!(
        code_msg(collide),
        (Code::AlreadyExists, "lock-collision".into())
    );
    assert_eq!(
        client
            .lock("routing_api_lock", "uuid-b", "", TypeCode::Lock, 15)
            .await,
        Err(LockError::Collision)
    );

    // TTL, owner, type validation (in upstream's order).
    for ttl in [0, -5] {
        assert_eq!(
            code_msg(raw.lock(lock_req("k", "o", "", LOCK, ttl)).await),
            (Code::InvalidArgument, "invalid-ttl".into())
        );
    }
    assert_eq!(
        code_msg(raw.lock(lock_req("k", "", "", 0, 0)).await),
        (Code::InvalidArgument, "invalid-ttl".into())
    );
    assert_eq!(
        code_msg(raw.lock(lock_req("k", "", "", LOCK, 15)).await),
        (Code::InvalidArgument, "invalid-owner".into())
    );
    assert_eq!(
        code_msg(
            raw.lock(LockRequest {
                resource: None,
                ttl_in_seconds: 15
            })
            .await
        ),
        (Code::InvalidArgument, "invalid-owner".into())
    );
    for (type_str, code) in [("", 0), ("bogus", 0), ("", 7), ("presence", LOCK)] {
        assert_eq!(
            code_msg(raw.lock(lock_req("k", "o", type_str, code, 15)).await),
            (Code::NotFound, "invalid-type".into()),
            "type {type_str:?} code {code}"
        );
    }
    assert_eq!(
        client.lock("k", "o", "", TypeCode::Unknown, 15).await,
        Err(LockError::InvalidType)
    );
    assert_eq!(
        client.lock("k", "o", "", TypeCode::Lock, 0).await,
        Err(LockError::InvalidTtl)
    );
    assert_eq!(
        client.lock("k", "", "", TypeCode::Lock, 15).await,
        Err(LockError::InvalidOwner)
    );
    // The deprecated type string alone is enough.
    raw.lock(lock_req("by-string", "o", "presence", 0, 15))
        .await
        .unwrap();
    assert_eq!(client.fetch("by-string").await.unwrap().type_code, PRESENCE);

    // Fetch of a missing key.
    assert_eq!(
        code_msg(raw.fetch(FetchRequest { key: "nope".into() }).await),
        (Code::NotFound, "resource-not-found".into())
    );
    assert_eq!(client.fetch("nope").await, Err(LockError::NotFound));

    // FetchAll by type code and by deprecated type string; UNKNOWN is invalid-type.
    client
        .lock("cell-1", "cell-1", "{}", TypeCode::Presence, 15)
        .await
        .unwrap();
    let locks = client.fetch_all(TypeCode::Lock).await.unwrap();
    assert_eq!(
        locks.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
        vec!["routing_api_lock"]
    );
    let presences = client.fetch_all(TypeCode::Presence).await.unwrap();
    assert_eq!(
        presences.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
        vec!["by-string", "cell-1"]
    );
    assert!(presences
        .iter()
        .all(|r| r.type_code == PRESENCE && r.r#type == "presence"));
    let by_string = raw
        .fetch_all(FetchAllRequest {
            r#type: "lock".into(),
            type_code: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_string.resources.len(), 1);
    assert_eq!(
        code_msg(raw.fetch_all(FetchAllRequest::default()).await),
        (Code::NotFound, "invalid-type".into())
    );
    assert_eq!(
        client.fetch_all(TypeCode::Unknown).await,
        Err(LockError::InvalidType)
    );

    // Release: non-owner collides, missing is fine, owner deletes.
    assert_eq!(
        code_msg(
            raw.release(ReleaseRequest {
                resource: resource("routing_api_lock", "uuid-b", "", LOCK)
            })
            .await
        ),
        (Code::AlreadyExists, "lock-collision".into())
    );
    assert_eq!(
        client.release("routing_api_lock", "uuid-b").await,
        Err(LockError::Collision)
    );
    client.release("missing", "anyone").await.unwrap();
    client.release("routing_api_lock", "uuid-a").await.unwrap();
    assert_eq!(
        client.fetch("routing_api_lock").await,
        Err(LockError::NotFound)
    );
    // Someone else can take it now.
    client
        .lock("routing_api_lock", "uuid-b", "", TypeCode::Lock, 15)
        .await
        .unwrap();

    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrefreshed_lock_expires_after_ttl() {
    let pki = pki();
    let (table, _dir) = sqlite_table().await;
    let server = TestServer::start(table, &pki).await;
    let client = pki.client(server.addr).await;

    let start = Instant::now();
    client
        .lock("short", "me", "", TypeCode::Lock, 1)
        .await
        .unwrap();
    assert!(client.fetch("short").await.is_ok());
    let gone = eventually(Duration::from_secs(4), || async {
        client.fetch("short").await == Err(LockError::NotFound)
    })
    .await;
    assert!(gone, "lock with ttl 1s still there after 4s");
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900),
        "expired too early: {elapsed:?}"
    );
    // Another owner can take it once expired.
    client
        .lock("short", "other", "", TypeCode::Lock, 15)
        .await
        .unwrap();
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshed_lock_is_kept() {
    let pki = pki();
    let (table, _dir) = sqlite_table().await;
    let server = TestServer::start(table, &pki).await;
    let client = pki.client(server.addr).await;

    client
        .lock("kept", "me", "", TypeCode::Lock, 1)
        .await
        .unwrap();
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        client
            .lock("kept", "me", "", TypeCode::Lock, 1)
            .await
            .expect("refresh keeps working");
    }
    // 3 s after the first Lock, with ttl 1 s: still held thanks to the refreshes.
    assert_eq!(client.fetch("kept").await.unwrap().owner, "me");
    // Stop refreshing: it expires.
    let gone = eventually(Duration::from_secs(4), || async {
        client.fetch("kept").await == Err(LockError::NotFound)
    })
    .await;
    assert!(gone);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burglar_expires_locks_written_before_start() {
    let pki = pki();
    let (table, _dir) = sqlite_table().await;
    // A lock left behind by a previous Locket process (no timer armed in this one).
    table
        .lock(&Resource::lock("orphan", "dead-owner"), 1)
        .await
        .unwrap();
    table
        .lock(&Resource::lock("long", "live-owner"), 3600)
        .await
        .unwrap();
    let server = TestServer::start(table.clone(), &pki).await;
    let client = pki.client(server.addr).await;
    let gone = eventually(Duration::from_secs(5), || async {
        client.fetch("orphan").await == Err(LockError::NotFound)
    })
    .await;
    assert!(gone, "burglar armed no timer for the orphaned lock");
    assert_eq!(client.fetch("long").await.unwrap().owner, "live-owner");
    server.stop().await.unwrap();
}

async fn raw_call(endpoint_tls: ClientTlsConfig, addr: std::net::SocketAddr) -> Result<(), String> {
    let endpoint = Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| e.to_string())?
        .tls_config(endpoint_tls)
        .map_err(|e| e.to_string())?
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
    let mut client = locket::proto::locket_client::LocketClient::new(channel);
    match client.fetch(FetchRequest { key: "x".into() }).await {
        // NotFound means the call reached the handler: the TLS handshake was accepted.
        Err(s) if s.code() == Code::NotFound => Ok(()),
        Err(s) => Err(format!("{s:?}")),
        Ok(_) => Ok(()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_and_verified() {
    let pki = pki();
    let (table, _dir) = sqlite_table().await;
    let server = TestServer::start(table, &pki).await;
    let ca = || Certificate::from_pem(std::fs::read(&pki.ca).unwrap());
    let identity = |cert: &std::path::Path, key: &std::path::Path| {
        Identity::from_pem(std::fs::read(cert).unwrap(), std::fs::read(key).unwrap())
    };

    // No client certificate.
    let no_cert = ClientTlsConfig::new()
        .ca_certificate(ca())
        .domain_name("localhost");
    // Refused during or right after the handshake (alert CertificateRequired or a closed
    // connection, depending on timing); never reaches the handler.
    let res = raw_call(no_cert, server.addr).await;
    assert!(res.is_err(), "a client without a certificate was served");

    // A client certificate from another CA.
    let other = ClientTlsConfig::new()
        .ca_certificate(ca())
        .identity(identity(&pki.other_client_cert, &pki.other_client_key))
        .domain_name("localhost");
    let res = raw_call(other, server.addr).await;
    assert!(
        res.is_err(),
        "a client certificate from another CA was served"
    );

    // Our client rejects a server not signed by the CA it trusts.
    let distrustful = LocketClient::connect(
        &server.addr.to_string(),
        &pki.other_ca,
        &pki.client_cert,
        &pki.client_key,
    )
    .await
    .unwrap();
    assert!(matches!(
        distrustful.fetch("x").await,
        Err(LockError::Unavailable(_))
    ));

    // The server still serves a proper client afterwards (and by host name).
    let good = ClientTlsConfig::new()
        .ca_certificate(ca())
        .identity(identity(&pki.client_cert, &pki.client_key))
        .domain_name("localhost");
    raw_call(good, server.addr)
        .await
        .expect("a client with a proper certificate is served");
    let by_ip = pki.client(server.addr).await;
    assert_eq!(by_ip.fetch("x").await, Err(LockError::NotFound));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn unusable_tls_files_are_named() {
    let pki = pki();
    let (table, _dir) = sqlite_table().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut tls = pki.server_tls();
    tls.ca_file = pki.dir.path().join("missing-ca.crt");
    let err = locket::server::serve(listener, table.clone(), tls, async {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ca_file") && err.contains("missing-ca.crt"),
        "{err}"
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut tls = pki.server_tls();
    tls.key_file = pki.server_cert.clone();
    let err = locket::server::serve(listener, table, tls, async {})
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("key_file"), "{err}");

    let err = LocketClient::connect(
        "127.0.0.1:8891",
        &pki.ca,
        pki.dir.path().join("nope.crt"),
        &pki.client_key,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("nope.crt"), "{err}");
}

/// A real client whose "network" can be cut: its calls then fail as unreachable.
struct Partitionable {
    client: LocketClient,
    cut: Arc<AtomicBool>,
}

impl LockBackend for Partitionable {
    fn lock<'a>(&'a self, resource: &'a Resource, ttl_secs: i64) -> BackendFuture<'a, ()> {
        if self.cut.load(Ordering::SeqCst) {
            return Box::pin(async { Err(LockError::Unavailable("partitioned".into())) });
        }
        LockBackend::lock(&self.client, resource, ttl_secs)
    }
    fn release<'a>(&'a self, key: &'a str, owner: &'a str) -> BackendFuture<'a, ()> {
        if self.cut.load(Ordering::SeqCst) {
            return Box::pin(async { Err(LockError::Unavailable("partitioned".into())) });
        }
        LockBackend::release(&self.client, key, owner)
    }
    fn owner<'a>(&'a self, key: &'a str) -> BackendFuture<'a, String> {
        LockBackend::owner(&self.client, key)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_compete_for_one_key() {
    let pki = pki();
    let (table, _dir) = sqlite_table().await;
    let server = TestServer::start(table, &pki).await;
    let cut = Arc::new(AtomicBool::new(false));
    let backend_a = Partitionable {
        client: pki.client(server.addr).await,
        cut: cut.clone(),
    };
    let client_b = pki.client(server.addr).await;
    let observer = pki.client(server.addr).await;
    let cfg = |owner: &str| {
        LockRunnerConfig::lock("routing_api_lock", owner)
            .with_ttl(Duration::from_secs(2))
            .with_retry_interval(Duration::from_millis(250))
    };

    let mut a = hold_lock(backend_a, cfg("instance-a"));
    tokio::time::timeout(Duration::from_secs(5), a.acquired())
        .await
        .expect("a acquires")
        .unwrap();
    let mut b = hold_lock(Arc::new(client_b), cfg("instance-b"));
    // Only one holds it while a keeps refreshing (longer than the ttl).
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(a.state(), LockState::Held);
        assert_eq!(b.state(), LockState::Acquiring);
        assert_eq!(
            observer.fetch("routing_api_lock").await.unwrap().owner,
            "instance-a"
        );
    }

    // a stops refreshing (partitioned): it reports the loss, b takes over after the ttl.
    let cut_at = Instant::now();
    cut.store(true, Ordering::SeqCst);
    let lost = tokio::time::timeout(Duration::from_secs(5), a.finished())
        .await
        .expect("a notices");
    assert!(matches!(lost, Err(RunnerError::LostLock(_))), "{lost:?}");
    assert_eq!(a.state(), LockState::Lost);
    tokio::time::timeout(Duration::from_secs(6), b.acquired())
        .await
        .expect("b takes over within a few seconds")
        .unwrap();
    let took = cut_at.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "took over too early: {took:?}"
    );
    assert_eq!(
        observer.fetch("routing_api_lock").await.unwrap().owner,
        "instance-b"
    );

    // Releasing on shutdown frees the key immediately.
    b.release().await.unwrap();
    assert_eq!(
        observer.fetch("routing_api_lock").await,
        Err(LockError::NotFound)
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_waits_for_the_server_and_presence_survives_loss() {
    let pki = pki();
    // Reserve a port, start the runner before the server exists.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = pki.client(addr).await;
    let mut presence = hold_lock(
        client.clone(),
        LockRunnerConfig::presence("cell-z", "cell-z", "{\"zone\":\"z1\"}")
            .with_ttl(Duration::from_secs(2))
            .with_retry_interval(Duration::from_millis(200)),
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(presence.state(), LockState::Acquiring);

    let (table, _dir) = sqlite_table().await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(locket::server::serve(
        listener,
        table.clone(),
        pki.server_tls(),
        async move {
            let _ = stopped.await;
        },
    ));
    tokio::time::timeout(Duration::from_secs(10), presence.acquired())
        .await
        .expect("acquires once the server is up")
        .unwrap();
    let p = client.fetch_all(TypeCode::Presence).await.unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].value, "{\"zone\":\"z1\"}");

    // Someone deletes the presence out from under it and takes the key: a presence runner
    // does not exit, it goes back to acquiring and gets it again once free.
    table.release("cell-z", "cell-z").await.unwrap();
    table
        .lock(&Resource::presence("cell-z", "usurper", ""), 1)
        .await
        .unwrap();
    let mut states = presence.subscribe();
    tokio::time::timeout(
        Duration::from_secs(3),
        states.wait_for(|s| *s == LockState::Acquiring),
    )
    .await
    .expect("notices the loss")
    .unwrap();
    tokio::time::timeout(
        Duration::from_secs(8),
        states.wait_for(|s| *s == LockState::Held),
    )
    .await
    .expect("re-acquires after the usurper's ttl")
    .unwrap();
    drop(states);
    presence.release().await.unwrap();
    assert_eq!(client.fetch("cell-z").await, Err(LockError::NotFound));
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
