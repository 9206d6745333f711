//! The `uaa-stand-in` binary (src/bin/uaa-stand-in.rs) run as the compose stack runs it, on the
//! committed `compose/uaa/uaa.yml`: every declared client gets a token carrying its authorities,
//! bad credentials get UAA's 401, `/healthz` answers, the signing key is the config's or
//! `--signing-key`'s, HTTPS with a given certificate, clean exits on SIGTERM/SIGINT, exit 1
//! naming the problem on a bad config, and routing-api (and `rtr`) accept its tokens.
//!
//! Needs the binaries built (`cargo test -p integration` builds `uaa-stand-in`; routing-api and
//! `rtr` come from `cargo build --workspace`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use integration::pki::TestCa;
use integration::process::{binary, ChildProcess};
use integration::routing_api::{rtr, Database, RoutingApi, START_TIMEOUT};
use integration::TempDir;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The clients `compose/uaa/uaa.yml` declares: id, secret, authorities in their order there.
const CLIENTS: [(&str, &str, &[&str]); 4] = [
    ("gorouter", "gorouter-dev-secret", &["routing.routes.read"]),
    (
        "tcp_router",
        "tcp-router-dev-secret",
        &["routing.routes.read", "routing.router_groups.read"],
    ),
    (
        "route_emitter",
        "route-emitter-dev-secret",
        &[
            "routing.routes.write",
            "routing.routes.read",
            "routing.router_groups.read",
        ],
    ),
    (
        "admin",
        "admin-dev-secret",
        &[
            "routing.routes.read",
            "routing.routes.write",
            "routing.router_groups.read",
            "routing.router_groups.write",
        ],
    ),
];

/// `issuer.uri` of the committed file, plus UAA's `/oauth/token`.
const ISSUER: &str = "http://uaa:8080/oauth/token";
/// `jwt.token.policy.activeKeyId` of the committed file.
const COMPOSE_KID: &str = "compose-dev-key";

fn committed_uaa_yml() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose/uaa/uaa.yml")
}

fn committed_text() -> String {
    std::fs::read_to_string(committed_uaa_yml()).expect("read compose/uaa/uaa.yml")
}

// ----- the process -----

struct StandIn {
    process: ChildProcess,
    addr: SocketAddr,
}

/// Runs `uaa-stand-in <args> --listen 127.0.0.1:0` (log in `dir/<name>.log`) and waits for
/// its `listening on ADDR` line.
async fn start(dir: &TempDir, name: &str, args: &[&str]) -> StandIn {
    let mut process = spawn(dir, name, args);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = process.output();
        if let Some(rest) = out.split("listening on ").nth(1) {
            let addr = rest
                .split_whitespace()
                .next()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no address after `listening on`:\n{out}"));
            return StandIn { process, addr };
        }
        if let Some(status) = process.try_exit() {
            panic!("uaa-stand-in exited with {status} before listening:\n{out}");
        }
        assert!(
            Instant::now() < deadline,
            "uaa-stand-in did not listen within 20 s:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn spawn(dir: &TempDir, name: &str, args: &[&str]) -> ChildProcess {
    let mut cmd = Command::new(binary("uaa-stand-in"));
    cmd.args(args).args(["--listen", "127.0.0.1:0"]);
    ChildProcess::spawn(
        "uaa-stand-in",
        cmd,
        dir.path().join(format!("{name}.log")),
        format!("uaa-stand-in {}", args.join(" ")),
    )
}

/// Runs the binary with `args` and expects it to fail at once: its output.
async fn fails(dir: &TempDir, name: &str, args: &[&str]) -> String {
    let mut process = spawn(dir, name, args);
    let (status, out) = process.run_to_exit(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(1), "{args:?}:\n{out}");
    assert!(!out.contains("listening on"), "{args:?}:\n{out}");
    out
}

// ----- HTTP -----

struct Resp {
    status: u16,
    content_type: String,
    www_authenticate: String,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One request on a fresh connection (HTTPS trusting `ca` when given).
async fn send(
    addr: SocketAddr,
    ca: Option<&TestCa>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Resp {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string());
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let work = async {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        match ca {
            None => exchange(tcp, req).await,
            Some(ca) => {
                let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_root_certificates(ca.root_store())
                .with_no_client_auth();
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
                let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(name, tcp)
                    .await
                    .expect("TLS handshake with the stand-in");
                exchange(tls, req).await
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), work)
        .await
        .unwrap_or_else(|_| panic!("{method} {path} to {addr} timed out"))
}

async fn exchange<IO>(io: IO, req: hyper::Request<Full<Bytes>>) -> Resp
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("HTTP handshake");
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.expect("response");
    let header = |name: hyper::header::HeaderName| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let content_type = header(hyper::header::CONTENT_TYPE);
    let www_authenticate = header(hyper::header::WWW_AUTHENTICATE);
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Resp {
        status,
        content_type,
        www_authenticate,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn get(s: &StandIn, path: &str) -> Resp {
    send(s.addr, None, "GET", path, &[], "").await
}

/// `POST /oauth/token`, client-credentials grant, credentials by HTTP basic auth.
async fn token_request(addr: SocketAddr, ca: Option<&TestCa>, id: &str, secret: &str) -> Resp {
    let basic = format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")));
    send(
        addr,
        ca,
        "POST",
        "/oauth/token",
        &[
            ("Authorization", &basic),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        "grant_type=client_credentials",
    )
    .await
}

/// The access token of a successful grant.
async fn token(addr: SocketAddr, ca: Option<&TestCa>, id: &str, secret: &str) -> String {
    let r = token_request(addr, ca, id, secret).await;
    assert_eq!(r.status, 200, "token for {id}: {}", r.body);
    r.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

fn payload(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).expect("JWT payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url payload"))
        .expect("JSON payload")
}

/// Verifies `jwt` (RS256, issuer [`ISSUER`]) with `public_pem`.
fn verify(jwt: &str, public_pem: &str) -> Result<Value, String> {
    let key = DecodingKey::from_rsa_pem(public_pem.as_bytes()).map_err(|e| e.to_string())?;
    let mut v = Validation::new(Algorithm::RS256);
    v.validate_aud = false;
    v.set_issuer(&[ISSUER]);
    jsonwebtoken::decode::<Value>(jwt, &key, &v)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}

fn public_pem(key: &rsa::RsaPrivateKey) -> String {
    key.to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("public PEM")
}

// ----- tests -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_of_the_committed_uaa_yml_gets_a_token_with_its_authorities() {
    let dir = TempDir::new("it-uaa-stand-in");
    let yml = committed_uaa_yml();
    let s = start(&dir, "clients", &["--config", yml.to_str().expect("path")]).await;
    let key = get(&s, "/token_key").await.json();
    let pem = key["value"].as_str().expect("value").to_string();
    for (id, secret, authorities) in CLIENTS {
        let r = token_request(s.addr, None, id, secret).await;
        assert_eq!(r.status, 200, "{id}: {}", r.body);
        let v = r.json();
        assert_eq!(v["token_type"], "bearer", "{id}");
        assert_eq!(v["scope"], authorities.join(" "), "{id}");
        // UAA's default lifetime (12 h), less the second UAA takes off.
        assert_eq!(v["expires_in"], 43199, "{id}");
        let jwt = v["access_token"].as_str().expect("access_token");
        let claims = payload(jwt);
        assert_eq!(claims["scope"], serde_json::json!(authorities), "{id}");
        assert_eq!(
            claims["authorities"],
            serde_json::json!(authorities),
            "{id}"
        );
        assert_eq!(claims["client_id"], id);
        assert_eq!(claims["cid"], id);
        assert_eq!(claims["sub"], id);
        assert_eq!(claims["grant_type"], "client_credentials");
        assert_eq!(claims["iss"], ISSUER);
        verify(jwt, &pem).unwrap_or_else(|e| panic!("{id}'s token does not verify: {e}"));
    }
    // One log line per token, with the client and its scopes.
    let log = s.process.output();
    for (id, _, authorities) in CLIENTS {
        let line = format!(
            "token issued: client_id=\"{id}\" scope=\"{}\"",
            authorities.join(" ")
        );
        assert_eq!(log.matches(&line).count(), 1, "{line}\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_unknown_credentials_get_uaas_401() {
    let dir = TempDir::new("it-uaa-stand-in");
    let yml = committed_uaa_yml();
    let s = start(&dir, "creds", &["--config", yml.to_str().expect("path")]).await;
    for (id, secret) in [
        ("gorouter", "wrong"),
        ("gorouter", "admin-dev-secret"),
        ("nobody", "x"),
    ] {
        let r = token_request(s.addr, None, id, secret).await;
        assert_eq!(r.status, 401, "{id}/{secret}: {}", r.body);
        assert_eq!(
            r.json(),
            serde_json::json!({"error": "unauthorized", "error_description": "Bad credentials"})
        );
        assert!(
            r.content_type.starts_with("application/json"),
            "{}",
            r.content_type
        );
        assert!(
            r.www_authenticate.starts_with("Basic realm=\"UAA/client\""),
            "{}",
            r.www_authenticate
        );
    }
    // Form-field credentials work, and are checked the same way.
    let form = |secret: &str| {
        format!("grant_type=client_credentials&client_id=admin&client_secret={secret}")
    };
    let ct = [("Content-Type", "application/x-www-form-urlencoded")];
    let ok = send(
        s.addr,
        None,
        "POST",
        "/oauth/token",
        &ct,
        &form("admin-dev-secret"),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let bad = send(s.addr, None, "POST", "/oauth/token", &ct, &form("nope")).await;
    assert_eq!(bad.status, 401, "{}", bad.body);
    assert_eq!(bad.json()["error"], "unauthorized");
    let log = s.process.output();
    assert_eq!(log.matches("token refused: ").count(), 4, "{log}");
    assert_eq!(log.matches("token issued: ").count(), 1, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_discovery() {
    let dir = TempDir::new("it-uaa-stand-in");
    let yml = committed_uaa_yml();
    let s = start(&dir, "healthz", &["--config", yml.to_str().expect("path")]).await;
    let r = get(&s, "/healthz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.trim(), "ok");
    assert!(
        r.content_type.starts_with("text/plain"),
        "{}",
        r.content_type
    );
    let d = get(&s, "/.well-known/openid-configuration").await.json();
    assert_eq!(d["issuer"], ISSUER);
    assert_eq!(
        d["token_endpoint"],
        format!("http://{}/oauth/token", s.addr)
    );
    let keys = get(&s, "/token_keys").await.json();
    assert_eq!(keys["keys"][0]["kid"], COMPOSE_KID);
    assert_eq!(
        get(&s, "/uaa/oauth/token").await.status,
        404,
        "no context path"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_signing_key_flag_the_key_of_uaa_yml_signs() {
    let dir = TempDir::new("it-uaa-stand-in");
    let yml = committed_uaa_yml();
    let s = start(&dir, "yaml-key", &["--config", yml.to_str().expect("path")]).await;
    // The public half of the committed dev key.
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&committed_text()).expect("YAML");
    let pem = doc["jwt"]["token"]["policy"]["keys"][COMPOSE_KID]["signingKey"]
        .as_str()
        .expect("signingKey");
    let private = rsa::RsaPrivateKey::from_pkcs1_pem(pem.trim()).expect("PKCS#1 key");
    let key = get(&s, "/token_key").await.json();
    assert_eq!(key["kid"], COMPOSE_KID);
    assert_eq!(key["alg"], "RS256");
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["value"], public_pem(&private));
    let jwt = token(s.addr, None, "gorouter", "gorouter-dev-secret").await;
    verify(&jwt, &public_pem(&private)).expect("verifies with the committed key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_key_flag_replaces_the_key_in_pkcs1_or_pkcs8() {
    let dir = TempDir::new("it-uaa-stand-in");
    let yml = committed_uaa_yml();
    let private =
        rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("generate RSA key");
    let ours = public_pem(&private);
    let pkcs1 = dir.path().join("pkcs1.pem");
    let pkcs8 = dir.path().join("pkcs8.pem");
    std::fs::write(
        &pkcs1,
        private
            .to_pkcs1_pem(LineEnding::LF)
            .expect("pkcs1")
            .as_bytes(),
    )
    .expect("write");
    std::fs::write(
        &pkcs8,
        private
            .to_pkcs8_pem(LineEnding::LF)
            .expect("pkcs8")
            .as_bytes(),
    )
    .expect("write");
    for file in [&pkcs1, &pkcs8] {
        let s = start(
            &dir,
            "flag-key",
            &[
                "--config",
                yml.to_str().expect("path"),
                "--signing-key",
                file.to_str().expect("path"),
            ],
        )
        .await;
        let key = get(&s, "/token_key").await.json();
        assert_eq!(key["value"], ours, "{}", file.display());
        assert_eq!(key["kid"], "key-1");
        let jwk = get(&s, "/token_keys").await.json();
        assert_eq!(jwk["keys"][0]["value"], ours);
        let jwt = token(s.addr, None, "admin", "admin-dev-secret").await;
        verify(&jwt, &ours).expect("verifies with the --signing-key key");
        assert!(
            s.process.output().contains("replaces"),
            "the override is reported:\n{}",
            s.process.output()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_with_the_given_certificate() {
    let dir = TempDir::new("it-uaa-stand-in");
    let yml = committed_uaa_yml();
    let ca = TestCa::new("uaa-stand-in-ca");
    let files = ca.write_server(dir.path(), &["127.0.0.1", "localhost"]);
    let s = start(
        &dir,
        "https",
        &[
            "--config",
            yml.to_str().expect("path"),
            "--tls-cert",
            files.cert.to_str().expect("path"),
            "--tls-key",
            files.key.to_str().expect("path"),
        ],
    )
    .await;
    assert!(s.process.output().contains("(https)"));
    let r = send(s.addr, Some(&ca), "GET", "/healthz", &[], "").await;
    assert_eq!((r.status, r.body.trim()), (200, "ok"));
    let jwt = token(
        s.addr,
        Some(&ca),
        "route_emitter",
        "route-emitter-dev-secret",
    )
    .await;
    assert_eq!(
        payload(&jwt)["scope"],
        serde_json::json!([
            "routing.routes.write",
            "routing.routes.read",
            "routing.router_groups.read"
        ])
    );
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = tokio::time::timeout(
        Duration::from_secs(5),
        integration::http::try_request(
            s.addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        ),
    )
    .await;
    assert!(
        !matches!(plain, Ok(Ok(ref r)) if r.status == 200),
        "{plain:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_exit_0() {
    let dir = TempDir::new("it-uaa-stand-in");
    let yml = committed_uaa_yml();
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let mut s = start(&dir, name, &["--config", yml.to_str().expect("path")]).await;
        s.process.signal(sig);
        let status = s.process.wait_exit(Duration::from_secs(10)).await;
        assert_eq!(status.code(), Some(0), "{name}:\n{}", s.process.output());
        assert!(
            s.process.output().contains(&format!("{name} received")),
            "{}",
            s.process.output()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configs_exit_1_naming_the_file_and_the_problem() {
    let dir = TempDir::new("it-uaa-stand-in");
    let committed = committed_text();
    let write = |name: &str, text: &str| -> String {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write config");
        p.to_str().expect("path").to_string()
    };

    // A client without its secret.
    let no_secret = committed.replace("      secret: gorouter-dev-secret\n", "");
    assert_ne!(no_secret, committed);
    let f = write("no-secret.yml", &no_secret);
    let out = fails(&dir, "no-secret", &["--config", &f]).await;
    assert!(
        out.contains(&format!("{f}: oauth.clients.gorouter.secret: is missing")),
        "{out}"
    );

    // Authorities as a YAML list (UAA reads a comma-separated string and would not start).
    let list = committed.replace(
        "      authorities: routing.routes.write,routing.routes.read,routing.router_groups.read\n",
        "      authorities: [routing.routes.write, routing.routes.read, routing.router_groups.read]\n",
    );
    assert_ne!(list, committed);
    let f = write("list.yml", &list);
    let out = fails(&dir, "list", &["--config", &f]).await;
    assert!(
        out.contains(&format!(
            "{f}: oauth.clients.route_emitter.authorities: must be a string, not a list"
        )),
        "{out}"
    );

    // Not YAML.
    let f = write("bad.yml", "oauth:\n  clients: {gorouter: [\n");
    let out = fails(&dir, "bad-yaml", &["--config", &f]).await;
    assert!(
        out.contains(&format!("{f}: (YAML): not valid YAML")),
        "{out}"
    );

    // An activeKeyId naming no key.
    let f = write(
        "kid.yml",
        &committed.replace("activeKeyId: compose-dev-key", "activeKeyId: other-key"),
    );
    let out = fails(&dir, "kid", &["--config", &f]).await;
    assert!(
        out.contains(&format!(
            "{f}: jwt.token.policy.activeKeyId: \"other-key\" is not a key of jwt.token.policy.keys"
        )),
        "{out}"
    );

    // A --signing-key that is not a key, and one that is not there.
    let yml = committed_uaa_yml();
    let yml = yml.to_str().expect("path");
    let garbage = write(
        "garbage.pem",
        "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
    );
    let out = fails(
        &dir,
        "garbage-key",
        &["--config", yml, "--signing-key", &garbage],
    )
    .await;
    assert!(
        out.contains(&format!(
            "--signing-key {garbage}: invalid PKCS#1 RSA private key"
        )),
        "{out}"
    );
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().expect("path");
    let out = fails(
        &dir,
        "missing-key",
        &["--config", yml, "--signing-key", missing],
    )
    .await;
    assert!(
        out.contains(&format!("--signing-key {missing}: cannot read")),
        "{out}"
    );

    // A certificate that is not one.
    let out = fails(
        &dir,
        "bad-cert",
        &[
            "--config",
            yml,
            "--tls-cert",
            &garbage,
            "--tls-key",
            &garbage,
        ],
    )
    .await;
    assert!(out.contains(&format!("--tls-cert {garbage}")), "{out}");

    // No config file.
    let out = fails(&dir, "no-config", &["--config", missing]).await;
    assert!(
        out.contains(&format!("--config {missing}: cannot read")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_api_and_rtr_accept_the_stand_ins_tokens() {
    let dir = TempDir::new("it-uaa-stand-in");
    let yml = committed_uaa_yml();
    let s = start(
        &dir,
        "routing-api",
        &["--config", yml.to_str().expect("path")],
    )
    .await;
    let base = format!("http://{}", s.addr);
    // Token checks on (no -devMode), UAA = the stand-in on plain HTTP (routing-api's
    // oauth.token_endpoint + oauth.port; plain HTTP needs oauth.allow_plain_http).
    let mut api = RoutingApi::builder(Database::sqlite(dir.path().join("routing-api.db")))
        .command_line(&["-config", "{config}", "-ip", "127.0.0.1"])
        .yaml(&format!(
            "oauth:\n  token_endpoint: http://127.0.0.1\n  port: {}\n  allow_plain_http: true\n",
            s.addr.port()
        ))
        .spawn();
    api.wait_serving(START_TIMEOUT).await;

    let admin = token(s.addr, None, "admin", "admin-dev-secret").await;
    let auth = format!("bearer {admin}");
    let r = api
        .request(
            "GET",
            "/routing/v1/router_groups",
            &[("Authorization", &auth)],
            b"",
        )
        .await;
    assert_eq!(r.status, 200, "{}\n{}", r.dump(), api.log());
    assert!(r.body_str().contains("\"default-tcp\""), "{}", r.dump());

    // gorouter's token reads routes but not router groups.
    let gorouter = token(s.addr, None, "gorouter", "gorouter-dev-secret").await;
    let auth = format!("bearer {gorouter}");
    let r = api
        .request(
            "GET",
            "/routing/v1/routes",
            &[("Authorization", &auth)],
            b"",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.dump());
    let r = api
        .request(
            "GET",
            "/routing/v1/router_groups",
            &[("Authorization", &auth)],
            b"",
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.dump());
    assert!(r.body_str().contains("not authorized"), "{}", r.dump());

    // rtr fetches its own token from the stand-in with the admin client.
    let api_url = api.url();
    let rtr_list = |secret: &'static str| {
        let args = [
            "list",
            "--api",
            &api_url,
            "--client-id",
            "admin",
            "--client-secret",
            secret,
            "--oauth-url",
            &base,
        ]
        .map(String::from);
        async move { rtr(&args.each_ref().map(String::as_str)).await }
    };
    let out = rtr_list("admin-dev-secret").await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("api.example.com/routing"), "{out:?}");
    let out = rtr_list("wrong").await;
    assert_ne!(out.code, Some(0), "{out:?}");
}
