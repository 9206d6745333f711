//! The HTTPS listener's config against real rustls clients on 127.0.0.1.

use std::net::SocketAddr;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;
use crate::tls::test_pki::{tls_server, trusting_client, Ca};
use crate::tls::TlsVersion;

fn frontend(
    certs: Vec<CertKeyPair>,
    validation: ClientCertValidation,
    client_ca: Option<&Ca>,
) -> FrontendTls {
    FrontendTls {
        certificates: certs,
        min_version: TlsVersion::Tls12,
        max_version: TlsVersion::Tls13,
        cipher_suites: ciphers::parse_cipher_suites(
            "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256",
        )
        .unwrap(),
        client_cert_validation: validation,
        client_ca_certs: client_ca.map(|ca| vec![ca.der()]).unwrap_or_default(),
        only_trust_client_ca_certs: true,
    }
}

/// Connects with `sni` (an IP sends no SNI) and returns the presented leaf and the ALPN.
async fn connect(
    addr: SocketAddr,
    sni: &str,
    client: Arc<rustls::ClientConfig>,
) -> std::io::Result<(CertificateDer<'static>, Option<Vec<u8>>)> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string()).expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(client)
        .connect(name, tcp)
        .await?;
    // TLS 1.3 reports a refused client certificate only when the client reads.
    tls.write_all(b"GET / HTTP/1.1\r\n\r\n").await?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await?;
    let (_, conn) = tls.get_ref();
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .expect("server cert");
    Ok((leaf, conn.alpn_protocol().map(<[u8]>::to_vec)))
}

#[tokio::test]
async fn certificate_is_chosen_by_sni_with_wildcards_and_a_default() {
    let ca = Ca::new("frontend-ca");
    let first = ca.server_pair(&["first.example"]);
    let wild = ca.server_pair(&["*.apps.example", "apps.example"]);
    let exact = ca.server_pair(&["exact.apps.example"]);
    let (cn_cert, cn_key) = ca.server_cn_only("legacy.example");
    let cn_only = CertKeyPair::from_pem("c", "k", &cn_cert, &cn_key).unwrap();
    let tls = frontend(
        vec![first.clone(), wild.clone(), exact.clone(), cn_only.clone()],
        ClientCertValidation::None,
        None,
    );
    let addr = tls_server(Arc::new(build_server_config(&tls, true).unwrap())).await;
    let client = trusting_client(None, &[]);
    let leaf = |sni: &'static str| {
        let client = client.clone();
        async move { connect(addr, sni, client).await.expect(sni).0 }
    };
    assert_eq!(&leaf("first.example").await, first.leaf());
    assert_eq!(&leaf("app1.apps.example").await, wild.leaf(), "wildcard");
    assert_eq!(
        &leaf("EXACT.apps.example").await,
        exact.leaf(),
        "exact beats wildcard"
    );
    assert_eq!(&leaf("apps.example").await, wild.leaf());
    assert_eq!(
        &leaf("a.b.apps.example").await,
        first.leaf(),
        "a wildcard covers one label"
    );
    assert_eq!(&leaf("legacy.example").await, cn_only.leaf(), "subject CN");
    assert_eq!(
        &leaf("unknown.example").await,
        first.leaf(),
        "no match: the first"
    );
    assert_eq!(&leaf("127.0.0.1").await, first.leaf(), "no SNI: the first");
}

#[tokio::test]
async fn alpn_is_offered_only_with_enable_http2() {
    let ca = Ca::new("frontend-ca");
    let tls = frontend(
        vec![ca.server_pair(&["a.example"])],
        ClientCertValidation::None,
        None,
    );
    let h2 = tls_server(Arc::new(build_server_config(&tls, true).unwrap())).await;
    let h1 = tls_server(Arc::new(build_server_config(&tls, false).unwrap())).await;
    let client = trusting_client(None, &[b"h2", b"http/1.1"]);
    assert_eq!(
        connect(h2, "a.example", client.clone())
            .await
            .unwrap()
            .1
            .as_deref(),
        Some(&b"h2"[..])
    );
    assert_eq!(
        connect(h1, "a.example", client).await.unwrap().1.as_deref(),
        None,
        "without enable_http2 nothing is negotiated: the client speaks HTTP/1.1"
    );
    let h2_only = trusting_client(None, &[b"h2"]);
    assert!(
        connect(h1, "a.example", h2_only).await.is_ok(),
        "an h2-only client completes the handshake, as with upstream"
    );
}

#[tokio::test]
async fn request_accepts_no_cert_or_a_trusted_one_and_refuses_an_untrusted_one() {
    let ca = Ca::new("frontend-ca");
    let client_ca = Ca::new("client-ca");
    let tls = frontend(
        vec![ca.server_pair(&["a.example"])],
        ClientCertValidation::Request,
        Some(&client_ca),
    );
    let addr = tls_server(Arc::new(build_server_config(&tls, false).unwrap())).await;
    connect(addr, "a.example", trusting_client(None, &[]))
        .await
        .expect("no certificate is fine");
    let trusted = client_ca.client_pair("app-client");
    connect(addr, "a.example", trusting_client(Some(&trusted), &[]))
        .await
        .expect("trusted certificate");
    let stranger = Ca::new("stranger").client_pair("app-client");
    let e = connect(addr, "a.example", trusting_client(Some(&stranger), &[]))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("UnknownCA") || e.to_string().contains("BadCertificate"),
        "{e}"
    );
}

#[tokio::test]
async fn require_refuses_a_client_without_a_certificate() {
    let ca = Ca::new("frontend-ca");
    let client_ca = Ca::new("client-ca");
    let tls = frontend(
        vec![ca.server_pair(&["a.example"])],
        ClientCertValidation::Require,
        Some(&client_ca),
    );
    let addr = tls_server(Arc::new(build_server_config(&tls, false).unwrap())).await;
    assert!(connect(addr, "a.example", trusting_client(None, &[]))
        .await
        .is_err());
    let trusted = client_ca.client_pair("app-client");
    connect(addr, "a.example", trusting_client(Some(&trusted), &[]))
        .await
        .expect("trusted certificate");
}

#[test]
fn only_trusting_no_client_ca_is_an_error() {
    let ca = Ca::new("frontend-ca");
    let tls = frontend(
        vec![ca.server_pair(&["a.example"])],
        ClientCertValidation::Require,
        None,
    );
    let e = build_server_config(&tls, false).unwrap_err().to_string();
    assert!(e.contains("client_ca_certs"), "{e}");
}

#[tokio::test]
async fn sessions_resume() {
    let ca = Ca::new("frontend-ca");
    let tls = frontend(
        vec![ca.server_pair(&["a.example"])],
        ClientCertValidation::None,
        None,
    );
    let addr = tls_server(Arc::new(build_server_config(&tls, false).unwrap())).await;
    let client = trusting_client(None, &[]);
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("a.example").unwrap();
        let mut s = tokio_rustls::TlsConnector::from(client.clone())
            .connect(name, tcp)
            .await
            .unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        kinds.push(s.get_ref().1.handshake_kind());
    }
    assert_eq!(kinds[0], Some(rustls::HandshakeKind::Full));
    assert_eq!(kinds[1], Some(rustls::HandshakeKind::Resumed));
}

/// A server on `holder`'s config at every accept, like the HTTPS listener.
async fn reloading_server(holder: Arc<ServerTlsConfig>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = holder.acceptor();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 64];
                    // Echo until the client closes: lets a test use a connection across a reload.
                    while let Ok(n) = tls.read(&mut buf).await {
                        if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn reload_changes_new_handshakes_only_and_keeps_the_old_config_on_error() {
    let ca = Ca::new("frontend-ca");
    let dir = std::env::temp_dir().join(format!("gorouter-tls-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gorouter.yml");
    let write = |cert: &str, key: &str| {
        let yaml = format!(
            "enable_ssl: true\ncipher_suites: ECDHE-ECDSA-AES128-GCM-SHA256\nclient_cert_validation: none\ntls_pem:\n- cert_chain: {:?}\n  private_key: {:?}\n",
            cert, key
        );
        std::fs::write(&path, yaml).unwrap();
    };
    let (c1, k1) = ca.server(&["a.example"]);
    write(&c1, &k1);
    let config = Config::load(&path).unwrap();
    let holder = Arc::new(ServerTlsConfig::new(&config).unwrap().expect("enable_ssl"));
    let addr = reloading_server(holder.clone()).await;
    let client = trusting_client(None, &[]);

    let open = |client: Arc<rustls::ClientConfig>| async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("a.example").unwrap();
        tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .unwrap()
    };
    let mut before = open(client.clone()).await;
    let old_leaf = before.get_ref().1.peer_certificates().unwrap()[0].clone();

    let (c2, k2) = ca.server(&["a.example"]);
    write(&c2, &k2);
    holder.reload_from_file(&path).expect("reload");
    // A fresh client (no session to resume) sees the new certificate.
    let after = open(trusting_client(None, &[])).await;
    let new_leaf = after.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_ne!(old_leaf, new_leaf);
    assert_eq!(new_leaf, crate::tls::pem::parse_certs("c", &c2).unwrap()[0]);
    // The connection opened before the reload still works.
    before.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    before.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");

    // A broken file is refused and the current certificate stays.
    std::fs::write(&path, "enable_ssl: true\ntls_pem: [{cert_chain: x, private_key: y}]\ncipher_suites: ECDHE-ECDSA-AES128-GCM-SHA256\n").unwrap();
    let e = holder.reload_from_file(&path).unwrap_err().to_string();
    assert!(e.contains("tls_pem[0].cert_chain"), "{e}");
    let still = open(trusting_client(None, &[])).await;
    assert_eq!(still.get_ref().1.peer_certificates().unwrap()[0], new_leaf);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn xfcc_is_the_pem_body_on_one_line() {
    let ca = Ca::new("client-ca");
    let (pem, _) = ca.client("app");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let leaf = crate::tls::pem::parse_certs("c", &pem).unwrap().remove(0);
    assert_eq!(xfcc_value(&leaf).to_str().unwrap(), body);
    assert!(!body.contains('\n'));
}

#[test]
fn names_are_cn_and_dns_sans() {
    let ca = Ca::new("names-ca");
    let pair = ca.server_pair(&["Foo.Example", "*.bar.example", "10.1.2.3"]);
    let names = certificate_names(pair.leaf());
    assert_eq!(names, vec!["foo.example", "foo.example", "*.bar.example"]);
}
