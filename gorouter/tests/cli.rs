//! The `gorouter` binary's command line: config errors are reported and fatal.
//! (End-to-end behaviour is tested in the `integration` crate.)

use std::process::Command;

fn run_with_config(yaml: &str) -> std::process::Output {
    let dir = std::env::temp_dir().join(format!(
        "gorouter-cli-{}-{}",
        std::process::id(),
        yaml.len()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("config.yml");
    std::fs::write(&path, yaml).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_gorouter"))
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run gorouter");
    let _ = std::fs::remove_dir_all(&dir);
    out
}

#[test]
fn bad_value_exits_non_zero_naming_the_key() {
    let out = run_with_config("balancing_algorithm: random\n");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("balancing_algorithm"), "stderr: {stderr}");
}

#[test]
fn bad_bind_address_exits_1_naming_the_key() {
    let out = run_with_config("bind_address: 0.0.0.0:80\n");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bind_address"), "stderr: {stderr}");
}

#[test]
fn missing_config_file_exits_non_zero_naming_the_path() {
    let out = Command::new(env!("CARGO_BIN_EXE_gorouter"))
        .args(["-c", "/nonexistent/gorouter.yml"])
        .output()
        .expect("run gorouter");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/gorouter.yml"),
        "stderr: {stderr}"
    );
}

#[test]
fn malformed_yaml_exits_non_zero() {
    let out = run_with_config("port: [unclosed\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid"));
}
