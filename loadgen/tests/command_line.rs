//! The `loadgen` command line as a user meets it. (Also why this file exists for CI:
//! `cargo test --workspace` builds a package's binary only for its integration tests, and
//! `integration/tests/faults.rs` runs `loadgen --serve-backend` as a real app instance.)

use std::io::{Read, Write};
use std::process::{Command, Stdio};

#[test]
fn help_describes_the_tool_and_succeeds() {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("--help")
        .output()
        .expect("run loadgen");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--serve-backend"), "{text}");
}

#[test]
fn an_unknown_flag_is_a_usage_error_with_exit_code_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("--bogus")
        .output()
        .expect("run loadgen");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bogus"));
}

/// `--serve-backend ADDR` runs only the benchmark backend, which answers 200.
#[test]
fn serve_backend_answers_200() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--serve-backend", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn loadgen");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut stream = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(e) if std::time::Instant::now() > deadline => {
                let _ = child.kill();
                panic!("the backend never listened on {port}: {e}");
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    };
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut response = String::new();
    let read = stream.read_to_string(&mut response);
    let _ = child.kill();
    let _ = child.wait();
    read.expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}
