//! The `locket` binary's `/metrics` (the `prometheus` config block), scraped over HTTP as
//! Prometheus scrapes it: every RPC counted by operation and result, TTL expiries, and the locks
//! and presences in the table; a `prometheus` block with only some of its TLS files stops the
//! binary at start with a message naming the missing key.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, pki, MariaDb, Pki};
use locket::proto::TypeCode;
use locket::LockError;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config_json(pki: &Pki, port: u16, dsn: &str, prometheus: serde_json::Value) -> String {
    serde_json::json!({
        "listen_address": format!("127.0.0.1:{port}"),
        "ca_file": pki.ca,
        "cert_file": pki.server_cert,
        "key_file": pki.server_key,
        "database_driver": "mysql",
        "database_connection_string": dsn,
        "max_open_database_connections": 5,
        "prometheus": prometheus,
    })
    .to_string()
}

/// The binary on `config`, killed on drop.
struct Locket(Child);

impl Locket {
    fn spawn(config: &Path) -> Locket {
        let child = Command::new(env!("CARGO_BIN_EXE_locket"))
            .arg("-config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn locket");
        Locket(child)
    }
}

impl Drop for Locket {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The body of a successful scrape that contains every line of `want`, waiting up to `within`.
async fn scrape_until(port: u16, want: &[&str], within: Duration) -> String {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + within;
    loop {
        let last = prometheus_endpoint::scrape(addr, Duration::from_secs(5)).await;
        if let Ok(scrape) = &last {
            if scrape.status == 200
                && want
                    .iter()
                    .all(|l| scrape.body.contains(&format!("\n{l}\n")))
            {
                return scrape.body.clone();
            }
        }
        if Instant::now() > deadline {
            let last = match last {
                Ok(scrape) => scrape.to_string(),
                Err(e) => e.to_string(),
            };
            panic!("within {within:?} /metrics did not show {want:?}; last scrape:\n{last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_operations_expiries_and_held_locks() {
    let mariadb = MariaDb::create().await;
    let pki = pki();
    let (port, metrics_port) = (free_port(), free_port());
    let config = pki.dir.path().join("locket.json");
    std::fs::write(
        &config,
        config_json(
            &pki,
            port,
            &mariadb.go_dsn(),
            serde_json::json!({"port": metrics_port}),
        ),
    )
    .unwrap();
    let _locket = Locket::spawn(&config);
    let client = pki
        .client(format!("127.0.0.1:{port}").parse().unwrap())
        .await;
    // Serving: the first Fetch that reaches the server answers not-found (and is counted).
    let up = eventually(Duration::from_secs(20), || async {
        client.fetch("probe").await == Err(LockError::NotFound)
    })
    .await;
    assert!(up, "locket did not start serving");

    client
        .lock("held", "a", "", TypeCode::Lock, 60)
        .await
        .unwrap();
    assert_eq!(
        client.lock("held", "b", "", TypeCode::Lock, 60).await,
        Err(LockError::Collision)
    );
    assert_eq!(
        client.lock("held", "a", "", TypeCode::Lock, 0).await,
        Err(LockError::InvalidTtl)
    );
    client
        .lock("cell-1", "cell-1", "{}", TypeCode::Presence, 60)
        .await
        .unwrap();
    client
        .lock("short", "c", "", TypeCode::Lock, 1)
        .await
        .unwrap();
    assert_eq!(client.fetch("held").await.unwrap().owner, "a");
    assert_eq!(client.fetch_all(TypeCode::Lock).await.unwrap().len(), 2);
    assert_eq!(client.release("held", "b").await, Err(LockError::Collision));
    client.release("never-taken", "a").await.unwrap();

    // "short" expires after a second; the burglar's next pass (every 5 s) counts what is left:
    // the lock "held" and the presence "cell-1".
    let body = scrape_until(
        metrics_port,
        &[
            "locket_expired_total{type=\"lock\"} 1",
            "locket_locks_held 1",
            "locket_presences_held 1",
        ],
        Duration::from_secs(15),
    )
    .await;
    for line in [
        "# TYPE locket_operations counter",
        "locket_operations_total{operation=\"lock\",result=\"ok\"} 3",
        "locket_operations_total{operation=\"lock\",result=\"collision\"} 1",
        "locket_operations_total{operation=\"lock\",result=\"invalid\"} 1",
        "locket_operations_total{operation=\"lock\",result=\"error\"} 0",
        "locket_operations_total{operation=\"fetch\",result=\"ok\"} 1",
        "locket_operations_total{operation=\"fetch\",result=\"not_found\"} 1",
        "locket_operations_total{operation=\"fetch_all\",result=\"ok\"} 1",
        "locket_operations_total{operation=\"release\",result=\"ok\"} 1",
        "locket_operations_total{operation=\"release\",result=\"collision\"} 1",
        "locket_expired_total{type=\"presence\"} 0",
        "# TYPE locket_locks_held gauge",
        "# TYPE locket_presences_held gauge",
    ] {
        assert!(
            body.contains(&format!("{line}\n")),
            "no line {line:?} in:\n{body}"
        );
    }
}

#[test]
fn a_prometheus_block_with_only_some_tls_files_stops_locket_naming_the_missing_key() {
    let pki = pki();
    let config = pki.dir.path().join("locket.json");
    let prometheus = serde_json::json!({
        "port": free_port(),
        "cert_path": pki.server_cert,
        "ca_path": pki.ca,
    });
    std::fs::write(
        &config,
        config_json(
            &pki,
            free_port(),
            "root@tcp(127.0.0.1:3306)/unused",
            prometheus,
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_locket"))
        .arg("-config")
        .arg(&config)
        .output()
        .expect("run locket");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("invalid-config-file")
            && stderr.contains("\"prometheus\"")
            && stderr.contains("key_path must be set when cert_path is"),
        "stderr: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_port_in_use_stops_locket_with_the_address() {
    let mariadb = MariaDb::create().await;
    let pki = pki();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_port = taken.local_addr().unwrap().port();
    let config = pki.dir.path().join("locket.json");
    std::fs::write(
        &config,
        config_json(
            &pki,
            free_port(),
            &mariadb.go_dsn(),
            serde_json::json!({"port": metrics_port}),
        ),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_locket"))
            .arg("-config")
            .arg(&config)
            .output()
            .expect("run locket")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "stdout: {stdout}");
    assert!(
        stdout.contains("locket.failed-to-serve-metrics")
            && stdout.contains(&format!("127.0.0.1:{metrics_port}")),
        "stdout: {stdout}"
    );
    drop(taken);
}
