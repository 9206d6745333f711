//! The buffer budget of connections to TLS backends, through the real data path (client socket
//! -> `forward::handle` -> TLS to a local backend): with room for two connections, a third
//! waits `connect_timeout` for buffer memory and is refused (counted as `tls_buffer_budget`)
//! while the first two keep working; once one closes, a new one gets its memory.

use std::sync::Arc;
use std::time::Duration;

use routing_api_client::TcpRouteMapping;
use tcp_router::forward::{
    self, Admitted, BufferBudget, ConnTracker, ForwardSettings, Global, PortCtx,
    TLS_CONNECTION_RESERVE,
};
use tcp_router::metrics::{ErrorKind, Metrics};
use tcp_router::routes::RoutingTable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const INSTANCE: &str = "instance-1";

/// A TLS echo server whose certificate is valid for [`INSTANCE`]; returns its port and the
/// PEM of its (self-signed) certificate.
async fn tls_echo_backend() -> (u16, String) {
    let generated = rcgen::generate_simple_self_signed(vec![INSTANCE.to_string()]).unwrap();
    let cert_pem = generated.cert.pem();
    let cert = generated.cert.der().clone();
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(generated.signing_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                loop {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if tls.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (port, cert_pem)
}

/// The router's side: a listener that hands each connection to `forward::handle`.
async fn router(budget_bytes: usize, connect_timeout: Duration) -> (u16, Arc<PortCtx>) {
    let (backend_port, ca_pem) = tls_echo_backend().await;
    let dir = std::env::temp_dir().join(format!("tcp-router-budget-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let tls = tcp_router::backend_tls::client_config(&ca_file, None).unwrap();
    let _ = std::fs::remove_dir_all(&dir);

    let metrics = Arc::new(Metrics::default());
    let global = Arc::new(Global {
        settings: ForwardSettings {
            connect_timeout,
            idle_timeout: None,
            backend_tls: Some(Arc::new(tls)),
        },
        tracker: ConnTracker::new(100),
        metrics: metrics.clone(),
        tls_buffers: Arc::new(BufferBudget::new(budget_bytes, metrics.clone())),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut table = RoutingTable::new(Duration::from_secs(120));
    let mapping = TcpRouteMapping {
        port,
        backend_ip: "127.0.0.1".into(),
        backend_port: 1,
        backend_tls_port: i32::from(backend_port),
        instance_id: INSTANCE.into(),
        ttl: Some(120),
        ..Default::default()
    };
    table.upsert(&mapping, tokio::time::Instant::now());
    let routes = table
        .port_routes(port, true, &mut Vec::new())
        .expect("a TLS route");
    let ctx = Arc::new(PortCtx {
        port,
        routes: arc_swap::ArcSwap::new(routes),
        metrics: metrics.port(port),
        global,
    });
    let accept_ctx = ctx.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            if let Some(admitted) = Admitted::new(&accept_ctx) {
                tokio::spawn(forward::handle(stream, admitted));
            }
        }
    });
    (port, ctx)
}

/// Whether `c` gets `ping` echoed back within `wait`.
async fn echoes(c: &mut TcpStream, wait: Duration) -> bool {
    if c.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 4];
    matches!(
        tokio::time::timeout(wait, c.read_exact(&mut buf)).await,
        Ok(Ok(_)) if &buf == b"ping"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connection_past_the_buffer_budget_is_refused_while_the_others_work() {
    let connect_timeout = Duration::from_millis(500);
    let (port, ctx) = router(2 * TLS_CONNECTION_RESERVE, connect_timeout).await;
    let metrics = &ctx.global.metrics;

    let mut first = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut second = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert!(echoes(&mut first, Duration::from_secs(5)).await);
    assert!(echoes(&mut second, Duration::from_secs(5)).await);
    assert_eq!(
        metrics.tls_buffer_bytes.get(),
        2 * TLS_CONNECTION_RESERVE as u64
    );

    // The third finds the budget spent: it waits connect_timeout, then is closed unserved.
    let mut third = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let started = std::time::Instant::now();
    assert!(!echoes(&mut third, Duration::from_secs(5)).await);
    assert!(
        started.elapsed() >= connect_timeout / 2,
        "{:?}",
        started.elapsed()
    );
    assert_eq!(ctx.metrics.errors(ErrorKind::TlsBufferBudget), 1);
    // The first two are unaffected.
    assert!(echoes(&mut first, Duration::from_secs(5)).await);
    assert!(echoes(&mut second, Duration::from_secs(5)).await);

    // One closes: its memory goes back, and a new connection gets it.
    drop(first);
    let mut fourth = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert!(echoes(&mut fourth, Duration::from_secs(5)).await);
    assert_eq!(ctx.metrics.errors(ErrorKind::TlsBufferBudget), 1);
    let text = prometheus_endpoint::encode(&metrics.registry(|| 2, || false));
    assert!(
        text.contains(&format!(
            "tcp_router_errors_total{{port=\"{port}\",kind=\"tls_buffer_budget\"}} 1"
        )),
        "{text}"
    );
}
