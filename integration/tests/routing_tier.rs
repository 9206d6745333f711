//! `routing-tier up`: the whole tier from one command, on ports shifted by `--port-base` and in
//! the Routing API mode (`--no-nats`, since a NATS server may run on 127.0.0.1:4222): the demo
//! app answers through gorouter over HTTP and HTTPS, SIGTERM stops everything with exit 0, and
//! a component that dies stops the tier, named.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use integration::process::{binary, ChildProcess};
use integration::util::{claim_port, eventually, TempDir};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `routing-tier up` on the shifted ports uses `base..=base+17`.
const PORTS_USED: u16 = 18;
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
    let mut cmd = Command::new(binary("routing-tier"));
    cmd.args(["up", "--no-nats", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--port-base", &base.to_string()]);
    let mut tier = ChildProcess::spawn(
        "routing-tier",
        cmd,
        dir.path().join("routing-tier.out"),
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
    (tier, base)
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

    let ring = || rustls::crypto::ring::default_provider();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(ring()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(routing_api_client::tls::no_verification(
            Arc::new(ring()),
        ))
        .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", base + 1))
        .await
        .expect("gorouter HTTPS port");
    let name = ServerName::try_from("demo.localhost").expect("server name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with gorouter's HTTPS port");
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
