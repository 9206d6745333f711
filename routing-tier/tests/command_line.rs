//! The `routing-tier` command line as a user meets it. (Also why this file exists for CI:
//! `cargo test --workspace` builds a package's binary only for its integration tests, and
//! `integration/tests/routing_tier.rs` runs that binary.)

use std::process::Command;

fn routing_tier(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_routing-tier"))
        .args(args)
        .output()
        .expect("run routing-tier")
}

#[test]
fn help_prints_the_usage_and_succeeds() {
    let out = routing_tier(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("usage: routing-tier up"), "{text}");
}

#[test]
fn an_unknown_flag_is_a_usage_error_with_exit_code_2() {
    let out = routing_tier(&["up", "--colour", "red"]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("--colour") && text.contains("usage:"),
        "{text}"
    );
}

#[test]
fn nats_and_no_nats_exclude_each_other() {
    let out = routing_tier(&["up", "--nats", "nats://127.0.0.1:4222", "--no-nats"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn certs_needs_out_and_takes_no_up_flags() {
    let out = routing_tier(&["certs"]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("--out"), "{text}");
    let out = routing_tier(&["certs", "--out", "/nonexistent/x", "--no-nats"]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("--no-nats is an option of `up`"), "{text}");
    let out = routing_tier(&["certs", "--out", "/nonexistent/x", "--san", "a b"]);
    assert_eq!(out.status.code(), Some(2));
}

/// `demo-app --listen ADDR` (the compose stack's demo app) answers every request with the demo
/// text, prints where it listens, and exits 0 on SIGTERM.
/// Starts `demo-app --listen 127.0.0.1:0` and returns it with the line it printed first.
fn start_demo_app() -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_routing-tier"))
        .args(["demo-app", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn demo-app");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the listening line");
    (child, line)
}

#[test]
fn demo_app_serves_the_demo_text_until_sigterm() {
    use std::io::{Read, Write};
    let (mut child, line) = start_demo_app();
    let port: u16 = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: demo.localhost\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.ends_with("Hello from the routing tier demo app\n"),
        "{response}"
    );
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status}");
}

/// A SIGTERM sent as soon as the listening line is read (as a supervisor may) is handled: the
/// app exits 0, not killed by the signal's default action.
#[test]
fn demo_app_exits_cleanly_on_sigterm_right_after_its_listening_line() {
    for _ in 0..30 {
        let (mut child, line) = start_demo_app();
        assert!(line.contains("listening on"), "{line}");
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0);
        let status = child.wait().expect("wait");
        assert!(status.success(), "{status}");
    }
}
