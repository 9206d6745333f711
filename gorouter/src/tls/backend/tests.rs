//! Each failure class against a real server on 127.0.0.1.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::tls::test_pki::{server_config, tls_server, Ca};

const TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
const BOTH: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn trusting(ca: &Ca) -> BackendTls {
    BackendTls {
        ca_certs: vec![ca.der()],
        client_cert: None,
        cipher_suites: None,
    }
}

async fn dial(
    tls: &BackendTls,
    addr: SocketAddr,
    name: &str,
    http2: bool,
) -> Result<TlsStream<TcpStream>, BackendTlsError> {
    let configs = BackendTlsConfigs::from_settings(tls).expect("client configs");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = server_name(name, "127.0.0.1")?;
    handshake(
        configs.for_protocol(http2),
        name,
        tcp,
        Duration::from_secs(5),
    )
    .await
}

/// Handshake, then one request: TLS 1.3 reports a refused client certificate on the read.
async fn exchange(
    tls: &BackendTls,
    addr: SocketAddr,
    name: &str,
) -> Result<Vec<u8>, BackendTlsError> {
    let mut stream = dial(tls, addr, name, false).await?;
    let io = |e: std::io::Error| BackendTlsError::classify(&e);
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .map_err(io)?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.map_err(io)?;
    Ok(out)
}

#[tokio::test]
async fn trusted_backend_with_client_cert_and_h2_alpn() {
    let ca = Ca::new("backend-ca");
    let server = server_config(
        &ca.server_pair(&["app-1.instance"]),
        Some(&ca),
        BOTH,
        None,
        &[b"h2", b"http/1.1"],
    );
    let addr = tls_server(server).await;
    let mut tls = trusting(&ca);
    tls.client_cert = Some(ca.client_pair("gorouter"));
    let reply = exchange(&tls, addr, "app-1.instance")
        .await
        .expect("exchange");
    assert!(
        reply.ends_with(b"ok"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert!(negotiated_h2(
        &dial(&tls, addr, "app-1.instance", true).await.unwrap()
    ));
    assert!(!negotiated_h2(
        &dial(&tls, addr, "app-1.instance", false).await.unwrap()
    ));
}

#[tokio::test]
async fn plain_http_server_on_the_tls_port_is_not_tls() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
        }
    });
    let e = dial(&trusting(&Ca::new("x")), addr, "a.example", false)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), BackendTlsErrorKind::NotTls, "{e}");
    assert_eq!(
        e.to_string(),
        "tls: first record does not look like a TLS handshake"
    );
    assert_eq!(e.status().as_u16(), 525);
    assert_eq!(e.body_message(), "525 SSL Handshake Failed");
    assert!(e.is_retriable() && e.prunes_endpoint());
}

#[tokio::test]
async fn wrong_name_is_a_hostname_mismatch() {
    let ca = Ca::new("backend-ca");
    let addr = tls_server(server_config(
        &ca.server_pair(&["a.example", "c.example"]),
        None,
        BOTH,
        None,
        &[],
    ))
    .await;
    let e = dial(&trusting(&ca), addr, "b.example", false)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), BackendTlsErrorKind::HostnameMismatch, "{e}");
    assert_eq!(
        e.to_string(),
        "tls: failed to verify certificate: x509: certificate is valid for a.example, c.example, not b.example"
    );
    assert_eq!(e.status().as_u16(), 503);
    assert!(e.prunes_endpoint());
}

#[tokio::test]
async fn unknown_issuer_and_expired_are_untrusted() {
    let ca = Ca::new("backend-ca");
    let other = Ca::new("other-ca");
    let addr = tls_server(server_config(
        &other.server_pair(&["a.example"]),
        None,
        BOTH,
        None,
        &[],
    ))
    .await;
    let e = dial(&trusting(&ca), addr, "a.example", false)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), BackendTlsErrorKind::Untrusted, "{e}");
    assert_eq!(
        e.to_string(),
        "tls: failed to verify certificate: x509: certificate signed by unknown authority"
    );
    assert_eq!(e.status().as_u16(), 526);

    let (cert, key) = ca.expired_server(&["a.example"]);
    let expired = crate::tls::CertKeyPair::from_pem("c", "k", &cert, &key).unwrap();
    let addr = tls_server(server_config(&expired, None, BOTH, None, &[])).await;
    let e = dial(&trusting(&ca), addr, "a.example", false)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), BackendTlsErrorKind::Untrusted, "{e}");
    assert!(
        e.to_string()
            .contains("x509: certificate has expired or is not yet valid"),
        "{e}"
    );
}

#[tokio::test]
async fn backend_refusing_our_client_cert_is_496() {
    let ca = Ca::new("backend-ca");
    let client_ca = Ca::new("client-ca");
    for versions in [TLS12, BOTH] {
        let addr = tls_server(server_config(
            &ca.server_pair(&["a.example"]),
            Some(&client_ca),
            versions,
            None,
            &[],
        ))
        .await;
        // No certificate at all.
        let e = exchange(&trusting(&ca), addr, "a.example")
            .await
            .unwrap_err();
        assert_eq!(
            e.kind(),
            BackendTlsErrorKind::ClientCertRejected,
            "{versions:?}: {e}"
        );
        assert!(e.to_string().starts_with("remote error: tls: "), "{e}");
        assert_eq!(e.status().as_u16(), 496);
        assert_eq!(e.body_message(), "496 SSL Certificate Required");
        // A certificate from a CA the backend does not trust.
        let mut tls = trusting(&ca);
        tls.client_cert = Some(Ca::new("stranger").client_pair("gorouter"));
        let e = exchange(&tls, addr, "a.example").await.unwrap_err();
        assert_eq!(
            e.kind(),
            BackendTlsErrorKind::ClientCertRejected,
            "{versions:?}: {e}"
        );
    }
}

#[tokio::test]
async fn no_common_cipher_suite_is_a_handshake_failure() {
    use rustls::crypto::ring::cipher_suite as cs;
    let ca = Ca::new("backend-ca");
    let addr = tls_server(server_config(
        &ca.server_pair(&["a.example"]),
        None,
        TLS12,
        Some(&[cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]),
        &[],
    ))
    .await;
    let mut tls = trusting(&ca);
    tls.cipher_suites = Some(vec![cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256]);
    let e = dial(&tls, addr, "a.example", false).await.unwrap_err();
    assert_eq!(e.kind(), BackendTlsErrorKind::HandshakeFailure, "{e}");
    assert_eq!(e.to_string(), "remote error: tls: handshake failure");
    assert_eq!(e.status().as_u16(), 525);
}

#[tokio::test]
async fn silent_backend_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let configs = BackendTlsConfigs::from_settings(&trusting(&Ca::new("x"))).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = server_name("a.example", "127.0.0.1").unwrap();
    let e = handshake(configs.http1(), name, tcp, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), BackendTlsErrorKind::Timeout);
    assert_eq!(e.to_string(), "net/http: TLS handshake timeout");
    assert_eq!(e.status().as_u16(), 502);
    assert!(e.is_retriable() && e.prunes_endpoint());
    hold.abort();
}

#[tokio::test]
async fn closed_connection_is_other() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            drop(s);
        }
    });
    let e = dial(&trusting(&Ca::new("x")), addr, "a.example", false)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), BackendTlsErrorKind::Other, "{e}");
    assert_eq!(e.status().as_u16(), 502);
    assert!(!e.prunes_endpoint());
}

#[test]
fn server_name_falls_back_to_the_host() {
    assert_eq!(
        server_name("", "10.0.0.1").unwrap(),
        ServerName::try_from("10.0.0.1").unwrap()
    );
    assert_eq!(
        server_name("abc-guid", "10.0.0.1").unwrap(),
        ServerName::try_from("abc-guid").unwrap()
    );
    assert!(server_name("bad name!", "h").is_err());
}

#[test]
fn ip_name_mismatch_reads_like_go() {
    assert_eq!(
        hostname_error_text("10.0.0.2", &["DnsName(\"a\")".into()]),
        "x509: cannot validate certificate for 10.0.0.2 because it doesn't contain any IP SANs"
    );
    assert_eq!(
        hostname_error_text("10.0.0.2", &["IpAddress(10.0.0.1)".into()]),
        "x509: certificate is valid for 10.0.0.1, not 10.0.0.2"
    );
}
