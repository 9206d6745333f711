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

/// A `loadgen --serve-backend` child on a free port; killed on drop.
struct ServedBackend {
    child: std::process::Child,
    port: u16,
}

impl ServedBackend {
    fn start(extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(["--serve-backend", &format!("127.0.0.1:{port}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn loadgen");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the backend never listened on {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

impl Drop for ServedBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("loadgen-cli-{}-{name}", std::process::id()))
}

/// Two named targets in rotated rounds, open loop: the table keeps the columns the bench
/// scripts read with awk (`label requests req/s p50 p90 p99 max errors`), and the JSON and
/// HTML files are written.
#[test]
fn two_targets_open_loop_write_the_table_json_and_report() {
    let a = ServedBackend::start(&[]);
    let b = ServedBackend::start(&[]);
    let (json_path, html_path) = (temp_path("run.json"), temp_path("run.html"));
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--target", &format!("first={}", a.url())])
        .args(["--target", &format!("second={}", b.url())])
        .args(["--rate", "200", "--connections", "4", "--rounds", "2"])
        .args(["--duration", "2s", "--warmup", "200ms"])
        .arg("--json")
        .arg(&json_path)
        .arg("--report")
        .arg(&html_path)
        .output()
        .expect("run loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for label in ["first", "second"] {
        let row: Vec<&str> = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(label))
            .unwrap_or_else(|| panic!("no row for {label} in\n{stdout}"))
            .split_whitespace()
            .collect();
        assert_eq!(row.len(), 10, "{row:?}");
        let requests: u64 = row[1].parse().expect("requests");
        let rate: f64 = row[2].parse().expect("req/s");
        assert_eq!(row[7], "0", "errors in {row:?}");
        assert!((380..=420).contains(&requests), "{row:?}");
        assert!((190.0..=210.0).contains(&rate), "{row:?}");
    }
    let json = std::fs::read_to_string(&json_path).expect("the JSON file");
    let html = std::fs::read_to_string(&html_path).expect("the HTML file");
    let _ = std::fs::remove_file(&json_path);
    let _ = std::fs::remove_file(&html_path);
    let doc: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(doc["mode"], "open");
    assert_eq!(doc["config"]["rate"], 200.0);
    assert_eq!(doc["config"]["rounds"], 2);
    assert_eq!(doc["targets"][1]["label"], "second");
    assert_eq!(html.matches("<svg").count(), 3);
}

/// `--json -` puts the JSON alone on stdout (the table goes to stderr), so it can be piped.
#[test]
fn json_to_stdout_is_the_only_thing_on_stdout() {
    let a = ServedBackend::start(&[]);
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--target", &a.url(), "--connections", "2"])
        .args(["--duration", "500ms", "--warmup", "0", "--json", "-"])
        .output()
        .expect("run loadgen");
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(doc["targets"][0]["label"], "target");
    assert!(String::from_utf8_lossy(&out.stderr).contains("req/s"));
}

/// A ramp against `--serve-backend --backend-rate-limit` stops at the step that crosses the
/// error bound and reports the knee below the limit.
#[test]
fn a_ramp_reports_its_knee() {
    let a = ServedBackend::start(&["--backend-rate-limit", "300"]);
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--target", &a.url(), "--ramp-rate", "200:100:600"])
        .args([
            "--step-duration",
            "1s",
            "--step-warmup",
            "200ms",
            "--connections",
            "4",
        ])
        .output()
        .expect("run loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("target: knee at 200 req/s")
            || stdout.contains("target: knee at 300 req/s"),
        "{stdout}"
    );
}
