//! gorouter over mutual TLS to NATS (`nats.tls_enabled`, upstream's mbus client with
//! `tlsconfig`): a private nats-server that requires client certificates, the real binary
//! connecting with `nats.ca_certs`, `nats.cert_chain` and `nats.private_key`, routes learnt
//! over that connection, and the refusals: an untrusted client certificate ends in
//! `nats-connection-error` and exit 1, a missing one is a config error.

use std::time::Duration;

use integration::pki::{yaml_quoted, TestCa};
use integration::{route, EchoBackend, Gorouter, NatsClient, NatsServer, TempDir};

/// The `nats:` keys for TLS with the client certificate `(cert, key)` and `ca` trusted.
fn nats_tls_yaml(ca: &TestCa, cert: &str, key: &str) -> String {
    format!(
        "nats:\n  tls_enabled: true\n  ca_certs: {}\n  cert_chain: {}\n  private_key: {}\n",
        yaml_quoted(&ca.cert_pem()),
        yaml_quoted(cert),
        yaml_quoted(key)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_registered_over_mutual_tls_are_served() {
    let ca = TestCa::new("nats-tls-ca");
    let dir = TempDir::new("nats-tls");
    let server_files = ca.write_server(dir.path(), &["127.0.0.1"]);
    let nats = NatsServer::start_mtls(&server_files).await;
    let (cert, key) = ca.issue_client("gorouter");
    let router = Gorouter::builder(&nats)
        .yaml(&nats_tls_yaml(&ca, &cert, &key))
        .start()
        .await;
    assert!(
        router.output().contains("Successfully-connected-to-nats"),
        "{}",
        router.output()
    );

    let publisher = NatsClient::connect_mtls(&nats, &ca.write_client(dir.path(), "emitter")).await;
    let backend = EchoBackend::start("tls-nats-app").await;
    let host = format!("nats-tls-{}.mtls.example", std::process::id());
    publisher.register(&route(&host, backend.port())).await;
    let resp = router.wait_route(&host).await;
    assert_eq!(resp.status, 200, "{}", resp.status_line);
    assert_eq!(backend.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_client_certificate_is_refused_and_the_router_exits_1() {
    let ca = TestCa::new("nats-tls-ca");
    let dir = TempDir::new("nats-tls");
    let nats = NatsServer::start_mtls(&ca.write_server(dir.path(), &["127.0.0.1"])).await;
    // Signed by a CA the server does not know.
    let (cert, key) = TestCa::new("stranger-ca").issue_client("gorouter");
    let (status, output) = Gorouter::builder(&nats)
        .yaml(&nats_tls_yaml(&ca, &cert, &key))
        .run_to_exit(Duration::from_secs(20))
        .await;
    assert_eq!(status.code(), Some(1), "{status}; output:\n{output}");
    assert!(output.contains("nats-connection-error"), "{output}");
    assert!(
        !output.contains("Successfully-connected-to-nats"),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_we_do_not_trust_is_refused() {
    let ca = TestCa::new("nats-tls-ca");
    let dir = TempDir::new("nats-tls");
    let nats = NatsServer::start_mtls(&ca.write_server(dir.path(), &["127.0.0.1"])).await;
    let (cert, key) = ca.issue_client("gorouter");
    // The router trusts another CA for the server's certificate.
    let yaml = nats_tls_yaml(&TestCa::new("other-ca"), &cert, &key);
    let (status, output) = Gorouter::builder(&nats)
        .yaml(&yaml)
        .run_to_exit(Duration::from_secs(20))
        .await;
    assert_eq!(status.code(), Some(1), "{status}; output:\n{output}");
    assert!(output.contains("nats-connection-error"), "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_without_a_client_certificate_is_a_config_error() {
    let ca = TestCa::new("nats-tls-ca");
    let dir = TempDir::new("nats-tls");
    let nats = NatsServer::start_mtls(&ca.write_server(dir.path(), &["127.0.0.1"])).await;
    let yaml = format!(
        "nats:\n  tls_enabled: true\n  ca_certs: {}\n",
        yaml_quoted(&ca.cert_pem())
    );
    let (status, output) = Gorouter::builder(&nats)
        .yaml(&yaml)
        .run_to_exit(Duration::from_secs(20))
        .await;
    assert_eq!(status.code(), Some(1), "{status}; output:\n{output}");
    assert!(output.contains("Error loading NATS key pair"), "{output}");
    assert!(output.contains("nats.cert_chain"), "{output}");
}
