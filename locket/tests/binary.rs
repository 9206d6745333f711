//! The built `locket` binary with upstream-style JSON configs: serving over mTLS on SQLite, on
//! MariaDB through a Go DSN and on PostgreSQL through a lib/pq DSN, JSON logs, SIGTERM, and config
//! errors naming the key.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, pki, MariaDb, Pki, Postgres};
use locket::proto::TypeCode;
use locket::LockError;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config_json(pki: &Pki, port: u16, driver: &str, conn: &str) -> serde_json::Value {
    serde_json::json!({
        "listen_address": format!("127.0.0.1:{port}"),
        "ca_file": pki.ca,
        "cert_file": pki.server_cert,
        "key_file": pki.server_key,
        "database_driver": driver,
        "database_connection_string": conn,
        "max_open_database_connections": 5,
        "max_database_connection_lifetime": "1h",
        "log_level": "info",
        "debug_address": "127.0.0.1:17018",
        "loggregator": {"loggregator_use_v2_api": false},
        "report_interval": "1m",
        "enable_consul_service_registration": false
    })
}

fn spawn(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_locket"))
        .arg("-config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn locket")
}

fn sigterm(child: &Child) {
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: sending a signal to our own child process.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(rc, 0);
}

fn wait_exit(mut child: Child, within: Duration) -> std::process::Output {
    let deadline = Instant::now() + within;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "locket did not exit within {within:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn wait_serving(client: &locket::client::LocketClient) {
    let up = eventually(Duration::from_secs(20), || async {
        client.fetch("probe").await == Err(LockError::NotFound)
    })
    .await;
    assert!(up, "locket binary did not start serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_sqlite_and_stops_on_sigterm() {
    let pki = pki();
    let port = free_port();
    let db = pki.dir.path().join("locket.db");
    let config = pki.dir.path().join("locket.json");
    std::fs::write(
        &config,
        config_json(&pki, port, "sqlite", &db.to_string_lossy()).to_string(),
    )
    .unwrap();
    let child = spawn(&config);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = pki.client(addr).await;
    wait_serving(&client).await;

    client
        .lock("routing_api_lock", "uuid-1", "", TypeCode::Lock, 15)
        .await
        .unwrap();
    assert_eq!(
        client
            .lock("routing_api_lock", "uuid-2", "", TypeCode::Lock, 15)
            .await,
        Err(LockError::Collision)
    );
    assert_eq!(
        client.fetch("routing_api_lock").await.unwrap().owner,
        "uuid-1"
    );
    assert_eq!(client.fetch_all(TypeCode::Lock).await.unwrap().len(), 1);
    client.release("routing_api_lock", "uuid-1").await.unwrap();
    // TTL expiry in the binary.
    client
        .lock("short", "me", "", TypeCode::Lock, 1)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(4), || async {
            client.fetch("short").await == Err(LockError::NotFound)
        })
        .await
    );

    sigterm(&child);
    let out = wait_exit(child, Duration::from_secs(10));
    assert!(
        out.status.success(),
        "exit {:?}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    // lager's default (unix-epoch) layout: source, message, numeric log_level, data.
    assert!(
        lines.iter().all(|l| l["source"] == "locket"
            && l["timestamp"].as_str().is_some_and(|t| t.contains('.'))
            && l["log_level"].is_u64()
            && l["data"].is_object()),
        "not lager lines: {stdout}"
    );
    for m in [
        "locket.started",
        "locket.lock.acquired",
        "locket.lock-pick.expired",
        "locket.signalled",
        "locket.exited",
    ] {
        assert!(messages.contains(&m), "no {m:?} log line in {messages:?}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l["data"]["key"] == "loggregator"
                && l["message"] == "locket.config-key-not-used"),
        "ignored key not reported: {stdout}"
    );
    assert!(db.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_mariadb_through_go_dsn() {
    let mariadb = MariaDb::create().await;
    let pki = pki();
    let port = free_port();
    let config = pki.dir.path().join("locket.json");
    std::fs::write(
        &config,
        config_json(&pki, port, "mysql", &mariadb.go_dsn()).to_string(),
    )
    .unwrap();
    let child = spawn(&config);
    let client = pki
        .client(format!("127.0.0.1:{port}").parse().unwrap())
        .await;
    wait_serving(&client).await;
    client
        .lock("bbs", "bbs-0", "", TypeCode::Lock, 15)
        .await
        .unwrap();
    let direct = locket::sql::LockTable::connect_url(&mariadb.url)
        .await
        .unwrap();
    assert_eq!(direct.fetch("bbs").await.unwrap().owner, "bbs-0");
    direct.close().await;
    sigterm(&child);
    let out = wait_exit(child, Duration::from_secs(10));
    assert!(out.status.success(), "exit {:?}", out.status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_postgres_through_lib_pq_dsn() {
    let postgres = Postgres::create().await;
    let pki = pki();
    let port = free_port();
    let config = pki.dir.path().join("locket.json");
    // Upstream's form: database_driver "postgres" with a lib/pq key=value connection string.
    std::fs::write(
        &config,
        config_json(&pki, port, "postgres", &postgres.key_value()).to_string(),
    )
    .unwrap();
    let child = spawn(&config);
    let client = pki
        .client(format!("127.0.0.1:{port}").parse().unwrap())
        .await;
    wait_serving(&client).await;
    client
        .lock("bbs", "bbs-0", "", TypeCode::Lock, 15)
        .await
        .unwrap();
    assert_eq!(
        client.lock("bbs", "bbs-1", "", TypeCode::Lock, 15).await,
        Err(LockError::Collision)
    );
    client
        .lock("cell-1", "cell-1", "{}", TypeCode::Presence, 15)
        .await
        .unwrap();
    assert_eq!(client.fetch_all(TypeCode::Presence).await.unwrap().len(), 1);
    // The row is in PostgreSQL, as another process (URL form) sees it.
    let direct = locket::sql::LockTable::connect_url(&postgres.url)
        .await
        .unwrap();
    assert_eq!(direct.backend_name(), "postgres");
    assert_eq!(direct.fetch("bbs").await.unwrap().owner, "bbs-0");
    // TTL expiry in the binary.
    client
        .lock("short", "me", "", TypeCode::Lock, 1)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(4), || async {
            direct.fetch("short").await == Err(LockError::NotFound)
        })
        .await
    );
    client.release("bbs", "bbs-0").await.unwrap();
    assert_eq!(direct.fetch("bbs").await, Err(LockError::NotFound));
    direct.close().await;
    sigterm(&child);
    let out = wait_exit(child, Duration::from_secs(10));
    assert!(
        out.status.success(),
        "exit {:?}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("locket.database-connected")
                && l.contains("\"driver\":\"postgres\"")),
        "no database-connected log line naming postgres: {stdout}"
    );
}

fn run_with_config(pki: &Pki, name: &str, config: &serde_json::Value) -> (bool, String) {
    let path = pki.dir.path().join(name);
    std::fs::write(&path, config.to_string()).unwrap();
    let out = wait_exit(spawn(&path), Duration::from_secs(20));
    // Config errors go to stderr before logging starts; later ones are lager lines on stdout.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    (out.status.success(), text)
}

#[test]
fn binary_rejects_bad_config_naming_the_key() {
    let pki = pki();
    let port = free_port();
    let db = pki.dir.path().join("x.db").to_string_lossy().into_owned();

    let mut missing = config_json(&pki, port, "sqlite", &db);
    missing.as_object_mut().unwrap().remove("ca_file");
    let (ok, err) = run_with_config(&pki, "missing.json", &missing);
    assert!(!ok && err.contains("\"ca_file\""), "{err}");

    let mut bad_addr = config_json(&pki, port, "sqlite", &db);
    bad_addr["listen_address"] = "not-an-address".into();
    let (ok, err) = run_with_config(&pki, "addr.json", &bad_addr);
    assert!(!ok && err.contains("\"listen_address\""), "{err}");

    let mut bad_driver = config_json(&pki, port, "sqlite", &db);
    bad_driver["database_driver"] = "oracle".into();
    let (ok, err) = run_with_config(&pki, "driver.json", &bad_driver);
    assert!(!ok && err.contains("\"database_driver\""), "{err}");

    let bad_pg = config_json(
        &pki,
        port,
        "postgres",
        "host=127.0.0.1 password=secret sslmode=sometimes",
    );
    let (ok, err) = run_with_config(&pki, "pg.json", &bad_pg);
    assert!(
        !ok && err.contains("\"database_connection_string\"") && err.contains("sslmode"),
        "{err}"
    );
    assert!(!err.contains("secret"), "{err}");

    let bad_dsn = config_json(&pki, port, "mysql", "no slash here");
    let (ok, err) = run_with_config(&pki, "dsn.json", &bad_dsn);
    assert!(
        !ok && err.contains("\"database_connection_string\""),
        "{err}"
    );

    let mut bad_cert = config_json(&pki, port, "sqlite", &db);
    bad_cert["cert_file"] = pki.dir.path().join("absent.crt").to_string_lossy().into();
    let (ok, err) = run_with_config(&pki, "cert.json", &bad_cert);
    assert!(
        !ok && err.contains("cert_file") && err.contains("absent.crt"),
        "{err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_locket"))
        .arg("-config=/nonexistent/locket.json")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/locket.json"));

    let out = Command::new(env!("CARGO_BIN_EXE_locket"))
        .arg("-config")
        .arg(pki.dir.path().join("missing.json"))
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// diego-release's locket job starts `locket -config=/var/vcap/jobs/locket/config/locket.json`;
/// its rendered config names the listen address by host name and asks for RFC 3339 log times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_starts_under_diego_release_command_line_with_a_host_name_address() {
    let pki = pki();
    let port = free_port();
    let db = pki.dir.path().join("locket.db");
    let mut rendered = config_json(&pki, port, "sqlite", &db.to_string_lossy());
    rendered["listen_address"] = format!("localhost:{port}").into();
    rendered["time_format"] = "rfc3339".into();
    rendered["sql_enable_identity_verification"] = false.into();
    let config = pki.dir.path().join("locket.json");
    std::fs::write(&config, serde_json::to_string_pretty(&rendered).unwrap()).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_locket"))
        .arg(format!("-config={}", config.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn locket");
    let client = pki
        .client(format!("127.0.0.1:{port}").parse().unwrap())
        .await;
    wait_serving(&client).await;
    client
        .lock("routing_api_lock", "uuid-1", "", TypeCode::Lock, 15)
        .await
        .unwrap();
    sigterm(&child);
    let out = wait_exit(child, Duration::from_secs(10));
    assert!(out.status.success(), "exit {:?}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let started: serde_json::Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "locket.started")
        .unwrap_or_else(|| panic!("no locket.started line: {stdout}"));
    // lager's rfc3339 layout: a level word and a UTC timestamp with nanoseconds.
    assert_eq!(started["level"], "info", "{started}");
    assert_eq!(started["source"], "locket", "{started}");
    let ts = started["timestamp"].as_str().unwrap_or_default();
    assert!(ts.ends_with('Z') && ts.len() == 30, "{ts}");
}

#[test]
fn an_unknown_flag_exits_2_with_gos_usage_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_locket"))
        .args(["-config", "/nonexistent.json", "-nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("flag provided but not defined: -nope\nUsage of locket:\n"),
        "{stderr}"
    );
}
