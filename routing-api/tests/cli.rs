//! The `routing-api` binary's command line: a bad config value is fatal and named. (The API
//! itself is tested end to end in the `integration` crate.)

use std::process::Command;

#[test]
fn bad_bind_address_exits_1_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("routing-api-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("routing-api.yml");
    std::fs::write(
        &path,
        "system_domain: example.com\nlog_guid: l\nuuid: u\nbind_address: '[::1]:3000'\n",
    )
    .expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_routing-api"))
        .arg("-config")
        .arg(&path)
        .args(["-ip", "127.0.0.1", "-devMode"])
        .output()
        .expect("run routing-api");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1));
    // Logged as upstream does: a lager line on stdout.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("\"routing-api.failed-load-config\""))
        .unwrap_or_else(|| panic!("no failed-load-config line: {stdout}"));
    assert!(line.contains("bind_address"), "{line}");
}
