//! Shared test fixtures: a throw-away PKI (rcgen), an in-process Locket server on 127.0.0.1:0,
//! SQLite tables in temp dirs and per-test MariaDB and PostgreSQL databases.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use locket::client::LocketClient;
use locket::server::{ServerError, ServerTlsConfig};
use locket::sql::LockTable;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A CA with a server certificate (localhost, 127.0.0.1) and a client certificate, plus a client
/// certificate from an unrelated CA, all written as PEM files in a temp dir.
pub struct Pki {
    pub dir: TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca: PathBuf,
    pub other_client_cert: PathBuf,
    pub other_client_key: PathBuf,
}

fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("ca key");
    let cert = params.self_signed(&key).expect("ca cert");
    (params, key, cert.pem())
}

fn leaf(
    issuer: &Issuer<'_, &KeyPair>,
    cn: &str,
    sans: &[&str],
    eku: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![eku];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, issuer).expect("leaf cert");
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).expect("write pem");
    p
}

pub fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca_params, ca_key, ca_pem) = ca("locket test CA");
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let (server_pem, server_key) = leaf(
        &issuer,
        "locket.service.cf.internal",
        &["localhost", "127.0.0.1", "locket.service.cf.internal"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_pem, client_key) = leaf(
        &issuer,
        "routing-api",
        &["routing-api"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let (other_params, other_key, other_pem) = ca("some other CA");
    let other_issuer = Issuer::from_params(&other_params, &other_key);
    let (other_client_pem, other_client_key) = leaf(
        &other_issuer,
        "intruder",
        &["intruder"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let d = dir.path().to_path_buf();
    Pki {
        ca: write(&d, "ca.crt", &ca_pem),
        server_cert: write(&d, "server.crt", &server_pem),
        server_key: write(&d, "server.key", &server_key),
        client_cert: write(&d, "client.crt", &client_pem),
        client_key: write(&d, "client.key", &client_key),
        other_ca: write(&d, "other-ca.crt", &other_pem),
        other_client_cert: write(&d, "other-client.crt", &other_client_pem),
        other_client_key: write(&d, "other-client.key", &other_client_key),
        dir,
    }
}

impl Pki {
    pub fn server_tls(&self) -> ServerTlsConfig {
        ServerTlsConfig {
            ca_file: self.ca.clone(),
            cert_file: self.server_cert.clone(),
            key_file: self.server_key.clone(),
        }
    }

    pub async fn client(&self, addr: SocketAddr) -> LocketClient {
        LocketClient::connect(
            &addr.to_string(),
            &self.ca,
            &self.client_cert,
            &self.client_key,
        )
        .await
        .expect("client")
        .with_timeout(Duration::from_secs(5))
    }
}

/// An in-process Locket server; stopped (gracefully) on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
}

impl TestServer {
    pub async fn start(table: LockTable, pki: &Pki) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let tls = pki.server_tls();
        let task = tokio::spawn(locket::server::serve(listener, table, tls, async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) -> Result<(), ServerError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.task.take() {
            Some(t) => tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("server stops within 10s")
                .expect("server task"),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// A SQLite lock table in its own temp dir (kept alive with the returned guard).
pub async fn sqlite_table() -> (LockTable, TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite_url(&dir);
    let table = LockTable::connect_url(&url).await.expect("sqlite table");
    (table, dir)
}

pub fn sqlite_url(dir: &TempDir) -> String {
    format!("sqlite://{}", dir.path().join("locket.db").display())
}

/// A MariaDB database created for one test (random name) and dropped with the guard.
pub struct MariaDb {
    pub base_url: String,
    pub name: String,
    pub url: String,
}

pub fn mariadb_base_url() -> String {
    let url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
    // Strip any database path: each test creates its own database.
    match url.find("://") {
        Some(i) => match url[i + 3..].find('/') {
            Some(j) => url[..i + 3 + j].to_string(),
            None => url,
        },
        None => url,
    }
}

async fn admin_exec(base_url: &str, sql: &str) -> Result<(), String> {
    use sqlx::{ConnectOptions, Executor};
    use std::str::FromStr;
    let opts = sqlx::mysql::MySqlConnectOptions::from_str(base_url).map_err(|e| e.to_string())?;
    let mut conn = tokio::time::timeout(Duration::from_secs(10), opts.connect())
        .await
        .map_err(|_| "timed out connecting".to_string())?
        .map_err(|e| e.to_string())?;
    conn.execute(sql).await.map_err(|e| e.to_string())?;
    Ok(())
}

impl MariaDb {
    pub async fn create() -> MariaDb {
        let base_url = mariadb_base_url();
        let name = format!(
            "locket_test_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        if let Err(e) = admin_exec(&base_url, &format!("CREATE DATABASE `{name}`")).await {
            panic!(
                "MariaDB/MySQL is not reachable at {base_url} (set DATABASE_URL to a MariaDB \
                 server URL such as mysql://root@127.0.0.1:3306): {e}"
            );
        }
        let url = format!("{base_url}/{name}");
        MariaDb {
            base_url,
            name,
            url,
        }
    }

    /// The same database as a Go MySQL DSN (`user[:password]@tcp(host:port)/name`).
    pub fn go_dsn(&self) -> String {
        let rest = self.base_url.split_once("://").map(|x| x.1).unwrap_or("");
        let (creds, hostport) = match rest.rsplit_once('@') {
            Some((c, h)) => (c.to_string(), h.to_string()),
            None => (String::new(), rest.to_string()),
        };
        let hostport = if hostport.contains(':') {
            hostport
        } else {
            format!("{hostport}:3306")
        };
        if creds.is_empty() {
            format!("tcp({hostport})/{}", self.name)
        } else {
            format!("{creds}@tcp({hostport})/{}", self.name)
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let base = self.base_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS `{}`", self.name);
        // Drop runs inside the test's runtime: use a separate thread and runtime.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                if let Err(e) = rt.block_on(admin_exec(&base, &sql)) {
                    eprintln!("could not drop test database: {e}");
                }
            }
        })
        .join();
    }
}

/// Default `POSTGRES_URL`: the local server with trust auth.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A PostgreSQL database created for one test (random name) on the server of `POSTGRES_URL`
/// (default [`DEFAULT_POSTGRES_URL`]) and dropped with the guard.
pub struct Postgres {
    /// `POSTGRES_URL` as given (the admin connection).
    pub admin_url: String,
    /// The test database's name.
    pub name: String,
    /// `postgres://…/<name>?…`, with `sslmode=disable` unless `POSTGRES_URL` sets one.
    pub url: String,
}

pub fn postgres_admin_url() -> String {
    std::env::var("POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into())
}

async fn pg_admin_exec(admin_url: &str, sql: &str) -> Result<(), String> {
    use sqlx::{ConnectOptions, Executor};
    use std::str::FromStr;
    let opts = sqlx::postgres::PgConnectOptions::from_str(admin_url).map_err(|e| e.to_string())?;
    let mut conn = tokio::time::timeout(Duration::from_secs(10), opts.connect())
        .await
        .map_err(|_| "timed out connecting".to_string())?
        .map_err(|e| e.to_string())?;
    conn.execute(sql).await.map_err(|e| e.to_string())?;
    Ok(())
}

impl Postgres {
    pub async fn create() -> Postgres {
        let admin_url = postgres_admin_url();
        let name = format!(
            "locket_test_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        if let Err(e) = pg_admin_exec(&admin_url, &format!("CREATE DATABASE \"{name}\"")).await {
            panic!(
                "PostgreSQL is not reachable at {admin_url} (set POSTGRES_URL to a PostgreSQL \
                 server URL such as {DEFAULT_POSTGRES_URL}; start the local one with \
                 `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`): {e}"
            );
        }
        let (base, query) = admin_url.split_once('?').unwrap_or((&admin_url, ""));
        let authority_end = base
            .find("://")
            .map(|i| i + 3)
            .and_then(|start| base[start..].find('/').map(|j| start + j))
            .unwrap_or(base.len());
        let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
        if !params.iter().any(|p| p.starts_with("sslmode=")) {
            params.push("sslmode=disable");
        }
        let url = format!("{}/{name}?{}", &base[..authority_end], params.join("&"));
        Postgres {
            admin_url,
            name,
            url,
        }
    }

    /// The same database as a lib/pq `key=value` string (from the parsed URL).
    pub fn key_value(&self) -> String {
        let dsn = locket::sql::PqDsn::parse_url(&self.url).expect("test URL parses");
        dsn.params
            .iter()
            .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        // FORCE: a failed test may leave pool connections open.
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                if let Err(e) = rt.block_on(pg_admin_exec(&admin, &sql)) {
                    eprintln!("could not drop test database: {e}");
                }
            }
        })
        .join();
    }
}

/// Polls `f` every 50 ms until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
