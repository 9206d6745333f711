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
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/tcp_router.yml"),
        "stderr: {stderr}"
    );
}
