//! The `tcp-router` binary's command line: config errors are reported and fatal. (Routing and
//! forwarding are tested end to end in the `integration` crate, which also needs this test file
//! so that `cargo test --workspace` builds the binary.)

use std::process::Command;

#[test]
fn missing_config_file_exits_non_zero_naming_the_path() {
    let out = Command::new(env!("CARGO_BIN_EXE_tcp-router"))
        .args(["-config", "/nonexistent/tcp_router.yml"])
        .output()
        .expect("run tcp-router");
    assert_eq!(out.status.code(), Some(1));
    let line = config_error_line(&out.stdout);
    assert!(line.contains("/nonexistent/tcp_router.yml"), "{line}");
}

#[test]
fn bad_bind_address_exits_1_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("tcp-router-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("tcp_router.yml");
    std::fs::write(
        &path,
        "routing_api: {uri: http://127.0.0.1, port: 3000, auth_disabled: true}\n\
         bind_address: all-interfaces\n",
    )
    .expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_tcp-router"))
        .arg("-config")
        .arg(&path)
        .output()
        .expect("run tcp-router");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(config_error_line(&out.stdout).contains("bind_address"));
}

/// The lager line upstream logs for a config it cannot load.
fn config_error_line(stdout: &[u8]) -> String {
    let stdout = String::from_utf8_lossy(stdout);
    stdout
        .lines()
        .find(|l| l.contains("\"tcp-router.failed-to-unmarshal-config-file\""))
        .unwrap_or_else(|| panic!("no failed-to-unmarshal-config-file line: {stdout}"))
        .to_string()
}

#[test]
fn a_prometheus_block_with_some_tls_files_exits_1_naming_the_missing_key() {
    let dir = std::env::temp_dir().join(format!("tcp-router-cli-prom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("tcp_router.yml");
    std::fs::write(
        &path,
        "routing_api: {uri: http://127.0.0.1, port: 3000, auth_disabled: true}\n\
         prometheus: {port: 9102, cert_path: /c.pem}\n",
    )
    .expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_tcp-router"))
        .arg("-config")
        .arg(&path)
        .output()
        .expect("run tcp-router");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1));
    let line = config_error_line(&out.stdout);
    assert!(
        line.contains("key_path must be set when cert_path is"),
        "{line}"
    );
}
