//! The binary's command line: a bad config lists every problem and exits non-zero.

use std::process::Command;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_route-emitter")
}

/// Runs the binary on a config file holding `text`; its exit status and stderr.
fn run_with_config(name: &str, text: &str) -> (std::process::ExitStatus, String) {
    let dir = std::env::temp_dir().join(format!("route-emitter-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(bin())
        .arg("-config")
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_config_lists_every_problem_and_fails() {
    let (status, stderr) = run_with_config(
        "bad",
        "message_bus_servers: [{host: '127.0.0.1:4222'}]\n\
         routes:\n\
         - {name: a, uris: [a.example.com], registration_interval: 10s}\n\
         - {name: b, port: 8080, registration_interval: 10s}\n",
    );
    assert!(!status.success(), "stderr: {stderr}");
    assert!(stderr.contains("host required"), "stderr: {stderr}");
    assert!(
        stderr.contains("route 0 (a): port or tls_port are required"),
        "stderr: {stderr}"
    );
    assert!(
        stderr.contains("route 1 (b): no uris specified"),
        "stderr: {stderr}"
    );
}

#[test]
fn missing_config_file_fails() {
    let out = Command::new(bin())
        .args(["-config", "/nonexistent/route-emitter.yml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}

#[test]
fn unreadable_nats_tls_files_stop_the_emitter_at_start() {
    // The NATS address is never dialled: the certificate files are read first.
    let (status, stderr) = run_with_config(
        "tls",
        "host: 127.0.0.1\nmessage_bus_servers: [{host: '127.0.0.1:1'}]\n\
         nats_mtls_config: {enabled: true, cert_path: /nonexistent/c.pem, key_path: /nonexistent/k.pem, ca_path: /nonexistent/ca.pem}\n\
         routes: []\n",
    );
    assert!(!status.success(), "stderr: {stderr}");
    assert!(
        stderr.contains("nats_mtls_config") && stderr.contains("/nonexistent/ca.pem"),
        "stderr: {stderr}"
    );
}

#[test]
fn an_unanswered_router_greeting_gives_up_after_30_attempts_and_fails() {
    // A port nobody listens on: NATS never answers, so neither does a router.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("route-emitter-cli-greet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yml");
    std::fs::write(
        &path,
        format!(
            "host: 127.0.0.1\nmessage_bus_servers: [{{host: '127.0.0.1:{port}'}}]\n\
             router_greet_retry_interval: 50ms\n\
             routes: [{{name: a, port: 8080, uris: [a.example.com], registration_interval: 10s}}]\n"
        ),
    )
    .unwrap();
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let started = std::time::Instant::now();
    let mut child = Command::new(bin())
        .arg("-config")
        .arg(&path)
        .args(["-logLevel", "debug"])
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    // 30 attempts 50 ms apart take under 2 s; a greeting that never gives up is killed.
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    let stdout = std::fs::read_to_string(&out_path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let status = status.unwrap_or_else(|| panic!("still running after 20 s; stdout: {stdout}"));
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("attempted to greet 'router' 30 times"),
        "stderr: {stderr}"
    );
    let attempts = stdout.matches("\"greeting-router\"").count();
    assert_eq!(attempts, 30, "stdout: {stdout}");
}
