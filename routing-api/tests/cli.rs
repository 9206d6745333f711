//! The `routing-api` binary's command line: a bad config value (a seeded router group and a
//! plain-HTTP UAA included) is fatal and named, and never printed with a secret. (The API
//! itself is tested end to end in the `integration` crate.)

use std::process::{Command, Output};

const MINIMAL: &str = "system_domain: example.com\nlog_guid: l\nuuid: u\n";

/// Runs the binary on `config` (YAML) with `extra` flags.
fn run_with(name: &str, config: &str, extra: &[&str]) -> Output {
    let dir = std::env::temp_dir().join(format!("routing-api-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("routing-api.yml");
    std::fs::write(&path, config).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_routing-api"))
        .arg("-config")
        .arg(&path)
        .args(["-ip", "127.0.0.1"])
        .args(extra)
        .output()
        .expect("run routing-api");
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// Asserts exit 1 with a `failed-load-config` lager line (on stdout, as upstream) and returns it.
fn failed_load_config(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find(|l| l.contains("\"routing-api.failed-load-config\""))
        .unwrap_or_else(|| panic!("no failed-load-config line: {stdout}"))
        .to_string()
}

#[test]
fn bad_bind_address_exits_1_naming_the_key() {
    let out = run_with(
        "bind",
        &format!("{MINIMAL}bind_address: '[::1]:3000'\n"),
        &["-devMode"],
    );
    let line = failed_load_config(&out);
    assert!(line.contains("bind_address"), "{line}");
}

#[test]
fn a_bad_seeded_router_group_exits_1_naming_the_key() {
    let out = run_with(
        "seed",
        &format!("{MINIMAL}router_groups:\n- {{name: a, type: tcp, reservable_ports: '10-20'}}\n"),
        &["-devMode"],
    );
    let line = failed_load_config(&out);
    assert!(line.contains("router_groups"), "{line}");
}

#[test]
fn a_plain_http_uaa_exits_1_naming_the_key_that_allows_it() {
    let out = run_with(
        "uaa",
        &format!("{MINIMAL}oauth: {{token_endpoint: 'http://uaa.example.com', port: 8080}}\nsqldb: {{type: mysql, host: db, schema: s, password: hunter2}}\n"),
        &[],
    );
    let line = failed_load_config(&out);
    assert!(line.contains("oauth.allow_plain_http"), "{line}");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("hunter2"), "a secret was printed: {all}");
}

#[test]
fn a_prometheus_block_with_some_tls_files_exits_1_naming_the_missing_key() {
    let out = run_with(
        "prometheus",
        &format!("{MINIMAL}prometheus: {{port: 9101, cert_path: /c.pem, key_path: /k.pem}}\n"),
        &["-devMode"],
    );
    let line = failed_load_config(&out);
    assert!(
        line.contains("ca_path must be set when cert_path is"),
        "{line}"
    );
}
