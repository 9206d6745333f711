//! `routing-tier up`: the whole tier from one command, on ports shifted by `--port-base` and in
//! the Routing API mode (`--no-nats`, since a NATS server may run on 127.0.0.1:4222): the demo
//! app answers through gorouter over HTTP and HTTPS, routing-api's mutual-TLS port answers with
//! the generated client certificate and refuses a handshake without one, routes registered
//! through the API survive a restart on the same data dir, SIGTERM stops everything with exit 0
//! and frees every port, and a component that dies stops the tier, named.
//!
//! `routing-tier certs`: the PKI for a docker-compose stack, every certificate verified with
//! rustls' WebPKI verifiers against `ca.pem` and its names; kept on a second run, replaced with
//! `--force`, and a directory holding part of the set is an error.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use integration::http::{build_request, parse_response_head, request, RawResponse};
use integration::pki::TestCa;
use integration::process::{binary, ChildProcess};
use integration::util::{claim_port, eventually, TempDir};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `routing-tier up` on the shifted ports uses `base..=base+18` (`base+18`: routing-api's
/// mutual-TLS port).
const PORTS_USED: u16 = 19;
/// routing-api's plain HTTP port and its mutual-TLS port, as offsets from the port base.
const ROUTING_API_OFFSET: u16 = 5;
const MTLS_OFFSET: u16 = 18;
/// Debug binaries on a loaded 2-core CI machine: generous.
const UP_DEADLINE: Duration = Duration::from_secs(90);
const DEMO_BODY: &str = "Hello from the routing tier demo app\n";

/// A base port below the ephemeral range with `PORTS_USED` consecutive free ports, none handed
/// out to another test of this process.
fn free_port_base() -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0);
    for attempt in 0..200u64 {
        let base = 20000 + ((seed + attempt * 7919) % 600) as u16 * 20;
        let held: Vec<_> = (base..base + PORTS_USED)
            .map_while(|p| std::net::TcpListener::bind(("127.0.0.1", p)).ok())
            .collect();
        if held.len() == usize::from(PORTS_USED) && (base..base + PORTS_USED).all(claim_port) {
            return base;
        }
    }
    panic!("no {PORTS_USED} consecutive free ports found in 20000-32000");
}

/// Starts `routing-tier up --no-nats` in a temp data dir on a free port base and waits for its
/// last line (the curl command).
async fn tier_up(dir: &TempDir) -> (ChildProcess, u16) {
    let base = free_port_base();
    (tier_up_at(dir, base, "routing-tier.out").await, base)
}

/// [`tier_up`] on port base `base`, its output in `<dir>/<out>`.
async fn tier_up_at(dir: &TempDir, base: u16, out: &str) -> ChildProcess {
    let mut cmd = Command::new(binary("routing-tier"));
    cmd.args(["up", "--no-nats", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--port-base", &base.to_string()]);
    let mut tier = ChildProcess::spawn(
        "routing-tier",
        cmd,
        dir.path().join(out),
        format!("routing-tier up --no-nats --port-base {base}"),
    );
    let curl = format!("curl -H 'Host: demo.localhost' http://127.0.0.1:{base}/");
    eventually(
        "routing-tier up to print the curl line",
        UP_DEADLINE,
        || {
            let out = tier.output();
            if let Some(status) = tier.try_exit() {
                panic!("routing-tier exited ({status}) while starting:\n{out}");
            }
            std::future::ready(out.lines().any(|l| l == curl).then_some(()))
        },
    )
    .await;
    tier
}

/// The response to `GET /` with `Host: demo.localhost` over `stream` (Connection: close).
async fn get_demo<S: AsyncReadExt + AsyncWriteExt + Unpin>(mut stream: S) -> String {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: demo.localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("send the request");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
        .await
        .expect("the response within 10 s");
    String::from_utf8_lossy(&buf).into_owned()
}

fn assert_demo_response(response: &str, what: &str) {
    assert!(response.starts_with("HTTP/1.1 200"), "{what}: {response}");
    assert!(response.ends_with(DEMO_BODY), "{what}: {response}");
}

#[tokio::test]
async fn routing_tier_up_serves_the_demo_app_through_gorouter() {
    let dir = TempDir::new("routing-tier-up");
    let (mut tier, base) = tier_up(&dir).await;
    let out = tier.output();
    assert!(
        out.contains("routes: through the Routing API (no NATS found on 127.0.0.1:4222)"),
        "{out}"
    );
    assert!(out.contains("UNAUTHENTICATED"), "{out}");

    let http = TcpStream::connect(("127.0.0.1", base))
        .await
        .expect("gorouter HTTP port");
    assert_demo_response(&get_demo(http).await, "over HTTP");

    // gorouter presents `<data dir>/tls/gorouter.pem`, verified against the generated CA.
    let config = rustls::ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots(&dir.path().join("data").join("tls").join("ca.pem")))
        .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", base + 1))
        .await
        .expect("gorouter HTTPS port");
    let name = ServerName::try_from("demo.localhost").expect("server name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with gorouter's HTTPS port, its certificate verified");
    assert_demo_response(&get_demo(tls).await, "over HTTPS");

    tier.signal(libc::SIGTERM);
    let status = tier.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}:\n{}", tier.output());
    assert!(
        TcpStream::connect(("127.0.0.1", base)).await.is_err(),
        "gorouter's HTTP port still accepts connections after routing-tier exited"
    );
}

#[tokio::test]
async fn a_child_that_dies_stops_the_tier_naming_it() {
    let dir = TempDir::new("routing-tier-child-dies");
    let (mut tier, base) = tier_up(&dir).await;
    let out = tier.output();
    let gorouter_pid: i32 = out
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("gorouter (pid "))
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no gorouter pid in the output:\n{out}"));
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is routing-tier's live child
    // (routing-tier reaps it, so it cannot be reused while routing-tier runs).
    assert_eq!(unsafe { libc::kill(gorouter_pid, libc::SIGKILL) }, 0);

    let status = tier.wait_exit(Duration::from_secs(10)).await;
    let out = tier.output();
    assert!(!status.success(), "{status}:\n{out}");
    assert!(
        out.contains("routing-tier: gorouter exited (signal 9)"),
        "{out}"
    );
    // The others were stopped: routing-api's port is closed.
    assert!(
        TcpStream::connect(("127.0.0.1", base + 5)).await.is_err(),
        "routing-api still listens after routing-tier exited:\n{out}"
    );
}

// ----- routing-tier certs -----

/// What `routing-tier certs` writes (the docker-compose stack mounts exactly these names).
const PKI_FILES: [&str; 20] = [
    "ca.pem",
    "ca.key",
    "routing-api-server.pem",
    "routing-api-server.key",
    "routing-api-client.pem",
    "routing-api-client.key",
    "locket-server.pem",
    "locket-server.key",
    "locket-client.pem",
    "locket-client.key",
    "gorouter.pem",
    "gorouter.key",
    "nats-server.pem",
    "nats-server.key",
    "nats-client.pem",
    "nats-client.key",
    "uaa-server.pem",
    "uaa-server.key",
    "uaa-signing.key",
    "uaa-signing.pub.pem",
];

/// The server certificates: file stem, compose service, names beyond the common ones.
const PKI_SERVERS: [(&str, &str, &[&str]); 5] = [
    ("routing-api-server", "routing-api", &[]),
    ("locket-server", "locket", &[]),
    // `*.localhost` too, which webpki (like OpenSSL and browsers) does not match: it refuses
    // a wildcard directly above a single label.
    ("gorouter", "gorouter", &["demo.localhost"]),
    ("nats-server", "nats", &[]),
    ("uaa-server", "uaa", &[]),
];
const PKI_CLIENTS: [&str; 3] = ["routing-api-client", "locket-client", "nats-client"];

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Runs `routing-tier certs <args>` to completion.
fn run_certs(args: &[&str]) -> std::process::Output {
    Command::new(binary("routing-tier"))
        .arg("certs")
        .args(args)
        .output()
        .expect("run routing-tier certs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every file of the set in `dir`, in [`PKI_FILES`] order.
fn read_pki(dir: &Path) -> Vec<Vec<u8>> {
    PKI_FILES
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("read {}: {e}", f)))
        .collect()
}

fn certs_in(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("PEM certificates in {}: {e}", path.display()))
}

fn key_in(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path)
        .unwrap_or_else(|e| panic!("PEM private key in {}: {e}", path.display()))
}

fn roots(ca: &Path) -> Arc<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs_in(ca) {
        roots.add(c).expect("ca.pem is a usable trust anchor");
    }
    Arc::new(roots)
}

#[test]
fn certs_writes_a_pki_every_certificate_of_which_chains_to_the_ca_with_its_names() {
    let tmp = TempDir::new("routing-tier-certs");
    let dir = tmp.path().join("pki");
    let out = run_certs(&[
        "--out",
        dir.to_str().expect("UTF-8 temp path"),
        "--san",
        "tier.example.com",
        "--san=10.1.2.3",
    ]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}{}",
        out.status,
        text(&out.stderr)
    );
    // One line per file written, and nothing else in the directory.
    let wrote: Vec<&str> = stdout.lines().collect();
    let expected: Vec<String> = PKI_FILES
        .iter()
        .map(|f| format!("wrote {}", dir.join(f).display()))
        .collect();
    assert_eq!(wrote, expected, "{stdout}");
    let mut listed: Vec<String> = std::fs::read_dir(&dir)
        .expect("list the out dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    listed.sort();
    let mut want: Vec<String> = PKI_FILES.iter().map(|f| f.to_string()).collect();
    want.sort();
    assert_eq!(listed, want);
    for f in PKI_FILES {
        let mode = std::fs::metadata(dir.join(f))
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777;
        let expected = if f.ends_with(".key") { 0o600 } else { 0o644 };
        assert_eq!(mode, expected, "{f}: {mode:o}");
    }

    let ca = dir.join("ca.pem");
    let server_verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots(&ca), ring())
            .build()
            .expect("a server verifier trusting ca.pem");
    let client_verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(&ca), ring())
            .build()
            .expect("a client verifier trusting ca.pem");
    let now = UnixTime::now();
    for (stem, service, extra) in PKI_SERVERS {
        let cert_path = dir.join(format!("{stem}.pem"));
        let chain = certs_in(&cert_path);
        assert_eq!(chain.len(), 1, "{stem}.pem holds the leaf only");
        let names = [
            service,
            "localhost",
            "127.0.0.1",
            "::1",
            "tier.example.com",
            "10.1.2.3",
        ];
        for name in names.iter().chain(extra) {
            let server_name = ServerName::try_from(name.to_string()).expect("a server name");
            server_verifier
                .verify_server_cert(&chain[0], &[], &server_name, &[], now)
                .unwrap_or_else(|e| panic!("{stem}.pem for {name}: {e}"));
        }
        for other in ["example.org", "10.1.2.4", "routing-api-x"] {
            let server_name = ServerName::try_from(other).expect("a server name");
            assert!(
                server_verifier
                    .verify_server_cert(&chain[0], &[], &server_name, &[], now)
                    .is_err(),
                "{stem}.pem is valid for {other}"
            );
        }
        assert!(
            client_verifier
                .verify_client_cert(&chain[0], &[], now)
                .is_err(),
            "{stem}.pem (server auth) is accepted as a client certificate"
        );
        // The key loads (as routing-api, Locket and gorouter load theirs) and matches.
        rustls::ServerConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key_in(&dir.join(format!("{stem}.key"))))
            .unwrap_or_else(|e| panic!("{stem}.pem with {stem}.key: {e}"));
    }
    for stem in PKI_CLIENTS {
        let chain = certs_in(&dir.join(format!("{stem}.pem")));
        assert_eq!(chain.len(), 1, "{stem}.pem holds the leaf only");
        client_verifier
            .verify_client_cert(&chain[0], &[], now)
            .unwrap_or_else(|e| panic!("{stem}.pem as a client certificate: {e}"));
        rustls::ClientConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots(&ca))
            .with_client_auth_cert(chain, key_in(&dir.join(format!("{stem}.key"))))
            .unwrap_or_else(|e| panic!("{stem}.pem with {stem}.key: {e}"));
    }

    // UAA's token signing key: RSA 2048 (PKCS#1 PEM), its public key as SubjectPublicKeyInfo;
    // an RS256 token signed with one verifies with the other.
    {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        use rsa::pkcs8::DecodePublicKey;
        use rsa::traits::PublicKeyParts;
        let private_pem =
            std::fs::read_to_string(dir.join("uaa-signing.key")).expect("uaa-signing.key");
        let public_pem =
            std::fs::read_to_string(dir.join("uaa-signing.pub.pem")).expect("uaa-signing.pub.pem");
        assert!(private_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        assert!(public_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        let private = rsa::RsaPrivateKey::from_pkcs1_pem(&private_pem).expect("PKCS#1 RSA key");
        let public = rsa::RsaPublicKey::from_public_key_pem(&public_pem).expect("SPKI public key");
        assert_eq!(private.size() * 8, 2048);
        assert_eq!(rsa::RsaPublicKey::from(&private), public);
        let claims = json!({"sub": "routing-tier", "exp": 4_000_000_000u64});
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("signing key"),
        )
        .expect("sign an RS256 token");
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.validate_aud = false;
        let decoded = jsonwebtoken::decode::<Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_rsa_pem(public_pem.as_bytes()).expect("public key"),
            &validation,
        )
        .expect("the token verifies with uaa-signing.pub.pem");
        assert_eq!(decoded.claims["sub"], "routing-tier");
    }
}

#[test]
fn certs_keeps_a_complete_set_replaces_it_with_force_and_refuses_a_partial_one() {
    let tmp = TempDir::new("routing-tier-certs-idem");
    let dir = tmp.path().join("pki");
    let dir_arg = dir.to_str().expect("UTF-8 temp path");
    let first = run_certs(&["--out", dir_arg]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let files = read_pki(&dir);

    // Again: every file kept, byte for byte.
    let again = run_certs(&["--out", dir_arg, "--san", "ignored.example.com"]);
    let stdout = text(&again.stdout);
    assert!(again.status.success(), "{}{}", stdout, text(&again.stderr));
    for f in PKI_FILES {
        let line = format!("kept {}", dir.join(f).display());
        assert!(
            stdout.lines().any(|l| l == line),
            "no {line:?} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains("wrote "), "{stdout}");
    assert!(stdout.contains("--force"), "{stdout}");
    assert_eq!(read_pki(&dir), files, "a second run changed files");

    // --force: a new set, every file different.
    let forced = run_certs(&["--out", dir_arg, "--force"]);
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    assert_eq!(
        text(&forced.stdout)
            .lines()
            .filter(|l| l.starts_with("wrote "))
            .count(),
        20
    );
    let replaced = read_pki(&dir);
    for ((f, old), new) in PKI_FILES.iter().zip(&files).zip(&replaced) {
        assert_ne!(old, new, "--force left {f} as it was");
    }

    // Part of the set: an error naming what is missing and the way out; nothing written.
    std::fs::remove_file(dir.join("nats-client.key")).expect("remove a file");
    let partial = run_certs(&["--out", dir_arg]);
    let stderr = text(&partial.stderr);
    assert!(!partial.status.success());
    assert_ne!(partial.status.code(), Some(0));
    assert!(
        stderr.contains("nats-client.key") && stderr.contains("--force"),
        "{stderr}"
    );
    assert!(!dir.join("nats-client.key").exists());
    let mut left = replaced.clone();
    left.remove(
        PKI_FILES
            .iter()
            .position(|f| *f == "nats-client.key")
            .expect("listed"),
    );
    let now: Vec<Vec<u8>> = PKI_FILES
        .iter()
        .filter(|f| **f != "nats-client.key")
        .map(|f| std::fs::read(dir.join(f)).expect("read"))
        .collect();
    assert_eq!(now, left, "a refused run changed files");

    // A usage error (no --out) exits 2.
    let usage = run_certs(&[]);
    assert_eq!(usage.status.code(), Some(2), "{}", text(&usage.stderr));
}

// ----- routing-api's mutual-TLS port and restarts -----

/// A rustls client trusting `<tls>/ca.pem`, presenting `identity` if given.
fn mtls_client(
    tls: &Path,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> tokio_rustls::TlsConnector {
    let builder = rustls::ClientConfig::builder_with_provider(ring())
        .with_protocol_versions(versions)
        .expect("TLS versions")
        .with_root_certificates(roots(&tls.join("ca.pem")));
    let config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .expect("client certificate and key"),
        None => builder.with_no_client_auth(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// `GET path` over TLS to 127.0.0.1:`port` (server name 127.0.0.1): the response, or the
/// error of the handshake, the write or the read.
async fn mtls_get(
    connector: &tokio_rustls::TlsConnector,
    port: u16,
    path: &str,
) -> Result<RawResponse, String> {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from("127.0.0.1").expect("server name");
    let mut tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| format!("handshake: {e}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut buf))
        .await
        .map_err(|_| "read timed out".to_string())?;
    // A peer closing without close_notify after a whole response is fine; no response is not.
    if let Err(e) = read {
        if buf.is_empty() {
            return Err(format!("read: {e}"));
        }
    }
    let raw = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no response head in {raw:?}"))?;
    let mut resp = parse_response_head(head).map_err(|e| e.to_string())?;
    resp.body = body.as_bytes().to_vec();
    Ok(resp)
}

#[tokio::test]
async fn routing_api_mtls_port_answers_with_the_generated_client_certificate_only() {
    let dir = TempDir::new("routing-tier-mtls");
    let (mut tier, base) = tier_up(&dir).await;
    let tls = std::fs::canonicalize(dir.path().join("data"))
        .expect("data dir")
        .join("tls");
    let out = tier.output();
    let mtls_port = base + MTLS_OFFSET;
    let client_cert = tls.join("routing-api-client.pem");
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("routing-api mTLS")
                && l.contains(&format!(
                    "https://127.0.0.1:{mtls_port}  (client cert {}",
                    client_cert.display()
                ))),
        "no routing-api mTLS line in:\n{out}"
    );
    let identity = (
        certs_in(&client_cert),
        key_in(&tls.join("routing-api-client.key")),
    );
    let resp = mtls_get(
        &mtls_client(&tls, Some(identity), rustls::DEFAULT_VERSIONS),
        mtls_port,
        "/routing/v1/router_groups",
    )
    .await
    .unwrap_or_else(|e| panic!("GET over mutual TLS with routing-api-client.pem: {e}"));
    assert_eq!(resp.status, 200, "{}", resp.dump());
    let groups: Value = serde_json::from_slice(&resp.body).expect("router groups JSON");
    assert!(
        groups
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g["name"] == "default-tcp")),
        "{groups}"
    );

    // Without a client certificate: no response. The server (rustls, TLS 1.2 and 1.3, client
    // certificates required) answers an empty client Certificate message with the
    // `certificate_required` alert in either version; only where the client sees it depends
    // on the version, so each is forced here. In TLS 1.3 (what the two negotiate by default)
    // the client's side of the handshake completes before the server has seen its (empty)
    // certificate, so the alert arrives on the first read; in TLS 1.2 the server's Finished
    // never comes and the alert ends the handshake.
    for (versions, expected) in [
        (
            &[&rustls::version::TLS13][..],
            "read: received fatal alert: CertificateRequired",
        ),
        (
            &[&rustls::version::TLS12][..],
            "handshake: received fatal alert: CertificateRequired",
        ),
    ] {
        let refused = mtls_get(
            &mtls_client(&tls, None, versions),
            mtls_port,
            "/routing/v1/router_groups",
        )
        .await;
        let err = refused.expect_err("routing-api answered a client without a certificate");
        assert_eq!(err, expected, "{versions:?}");
    }
    // A client certificate from another CA: refused too (`unknown_ca`).
    let other = TestCa::new("not-the-tier-ca");
    let (cert, key) = other.issue_client("intruder");
    let other_identity = (
        integration::pki::parse_certs(&cert),
        integration::pki::parse_key(&key),
    );
    let refused = mtls_get(
        &mtls_client(&tls, Some(other_identity), rustls::DEFAULT_VERSIONS),
        mtls_port,
        "/routing/v1/router_groups",
    )
    .await;
    let err = refused.expect_err("routing-api answered a client certificate of another CA");
    assert!(err.contains("alert"), "{err}");

    tier.signal(libc::SIGTERM);
    let status = tier.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}:\n{}", tier.output());
    assert!(
        TcpStream::connect(("127.0.0.1", mtls_port)).await.is_err(),
        "routing-api's mTLS port still accepts connections after routing-tier exited"
    );
}

/// A request to routing-api's plain port (auth disabled): the response.
async fn routing_api(base: u16, method: &str, path: &str, body: Option<&Value>) -> RawResponse {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut headers = vec![("Host", "127.0.0.1"), ("Connection", "close")];
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], base + ROUTING_API_OFFSET));
    request(
        addr,
        &build_request(method, path, &headers, body.as_bytes()),
    )
    .await
}

async fn routing_api_json(base: u16, path: &str) -> Value {
    let resp = routing_api(base, "GET", path, None).await;
    assert_eq!(resp.status, 200, "GET {path}: {}", resp.dump());
    serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("GET {path}: {e}: {}", resp.dump()))
}

/// Whether `tcp_routes` lists the route to `10.9.8.7:61000` on `port`.
fn has_tcp_route(routes: &Value, port: u16) -> bool {
    routes.as_array().is_some_and(|rs| {
        rs.iter().any(|r| {
            r["backend_ip"] == "10.9.8.7" && r["backend_port"] == 61000 && r["port"] == port
        })
    })
}

fn has_http_route(routes: &Value) -> bool {
    routes.as_array().is_some_and(|rs| {
        rs.iter().any(|r| {
            r["route"] == "persist.localhost" && r["ip"] == "10.9.8.7" && r["port"] == 61001
        })
    })
}

/// SIGTERM: exit 0 within 10 s, then none of the tier's ports accepts a connection.
async fn stop_and_check_ports_freed(tier: &mut ChildProcess, base: u16) {
    tier.signal(libc::SIGTERM);
    let status = tier.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}:\n{}", tier.output());
    for port in base..base + PORTS_USED {
        assert!(
            TcpStream::connect(("127.0.0.1", port)).await.is_err(),
            "port {port} (base + {}) still accepts connections after routing-tier exited",
            port - base
        );
    }
}

#[tokio::test]
async fn routes_registered_through_the_api_survive_a_restart_on_the_same_data_dir() {
    let dir = TempDir::new("routing-tier-restart");
    let (mut tier, base) = tier_up(&dir).await;
    let tls_before = read_pki(&dir.path().join("data").join("tls"));

    let groups = routing_api_json(base, "/routing/v1/router_groups").await;
    let guid = groups
        .as_array()
        .and_then(|g| g.iter().find(|g| g["name"] == "default-tcp"))
        .and_then(|g| g["guid"].as_str())
        .unwrap_or_else(|| panic!("no default-tcp router group in {groups}"))
        .to_string();
    let tcp_port = base + 8;
    let tcp = json!([{
        "router_group_guid": guid,
        "port": tcp_port,
        "backend_ip": "10.9.8.7",
        "backend_port": 61000,
        "ttl": 120,
    }]);
    let resp = routing_api(base, "POST", "/routing/v1/tcp_routes/create", Some(&tcp)).await;
    assert_eq!(resp.status, 201, "{}", resp.dump());
    let http = json!([{
        "route": "persist.localhost",
        "port": 61001,
        "ip": "10.9.8.7",
        "ttl": 120,
        "log_guid": "persist",
    }]);
    let resp = routing_api(base, "POST", "/routing/v1/routes", Some(&http)).await;
    assert_eq!(resp.status, 201, "{}", resp.dump());
    assert!(has_tcp_route(
        &routing_api_json(base, "/routing/v1/tcp_routes").await,
        tcp_port
    ));
    assert!(has_http_route(
        &routing_api_json(base, "/routing/v1/routes").await
    ));

    stop_and_check_ports_freed(&mut tier, base).await;
    drop(tier);

    // Again on the same data dir and ports: the routes are still there (their TTL is 120 s),
    // and the certificates were reused.
    let mut tier = tier_up_at(&dir, base, "routing-tier-2.out").await;
    let out = tier.output();
    assert!(
        out.contains("routing-tier: reusing the certificates in"),
        "{out}"
    );
    let tcp_routes = routing_api_json(base, "/routing/v1/tcp_routes").await;
    assert!(has_tcp_route(&tcp_routes, tcp_port), "{tcp_routes}");
    let http_routes = routing_api_json(base, "/routing/v1/routes").await;
    assert!(has_http_route(&http_routes), "{http_routes}");
    assert_eq!(read_pki(&dir.path().join("data").join("tls")), tls_before);

    stop_and_check_ports_freed(&mut tier, base).await;
}
