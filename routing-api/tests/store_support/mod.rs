//! Shared helpers for the `store_*` tests: a throw-away MariaDB or PostgreSQL database or
//! SQLite file per test, raw SQL access to it, and sample models; [`server`] holds the test
//! bodies the MySQL and PostgreSQL test files share.
//!
//! MariaDB/MySQL comes from `DATABASE_URL` (default `mysql://root@127.0.0.1:3306`), PostgreSQL
//! from `POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`); each test
//! creates `ra_store_<random>` and drops it when its [`TestDb`] is dropped (also when the test
//! panics), from a separate thread with its own runtime.
#![allow(dead_code)]

pub mod server;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use routing_api::store::{DbKind, Store, StoreConfig};
use routing_api_client::models::{HttpRoute, RouterGroup, TcpRouteMapping};
use sqlx::mysql::MySqlPool;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use sqlx::{ColumnIndex, Connection, Decode, MySqlConnection, PgConnection, Row, Type};

pub const DEFAULT_DATABASE_URL: &str = "mysql://root@127.0.0.1:3306";
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The PostgreSQL server URL, with the administrative database to connect to.
pub fn postgres_server_url() -> String {
    std::env::var("POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// The MariaDB/MySQL server URL (without a database).
pub fn server_url() -> String {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
    let url = url.replacen("mariadb://", "mysql://", 1);
    UrlParts::parse(&url).with_database("").to_string()
}

/// The pieces of `mysql://user:pass@host:port/db?query`.
#[derive(Clone, Debug)]
pub struct UrlParts {
    pub scheme: String,
    pub user: String,
    pub password: String,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub query: String,
}

impl UrlParts {
    pub fn parse(url: &str) -> UrlParts {
        let (scheme, rest) = url.split_once("://").expect("URL with scheme://");
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, q.to_owned()),
            None => (rest, String::new()),
        };
        let (authority, database) = match rest.split_once('/') {
            Some((a, d)) => (a, d.to_owned()),
            None => (rest, String::new()),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (u, h),
            None => ("", authority),
        };
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (u.to_owned(), p.to_owned()),
            None => (userinfo.to_owned(), String::new()),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().expect("numeric port")),
            None => (hostport.to_owned(), 3306),
        };
        UrlParts {
            scheme: scheme.to_owned(),
            user,
            password,
            host,
            port,
            database,
            query,
        }
    }

    pub fn with_database(mut self, db: &str) -> UrlParts {
        self.database = db.to_owned();
        self
    }

    pub fn with_port(mut self, port: u16) -> UrlParts {
        self.port = port;
        self
    }
}

impl std::fmt::Display for UrlParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://", self.scheme)?;
        if !self.user.is_empty() {
            write!(f, "{}", self.user)?;
            if !self.password.is_empty() {
                write!(f, ":{}", self.password)?;
            }
            write!(f, "@")?;
        }
        write!(f, "{}:{}/{}", self.host, self.port, self.database)?;
        if !self.query.is_empty() {
            write!(f, "?{}", self.query)?;
        }
        Ok(())
    }
}

/// Raw access to the test database, bypassing the store.
#[derive(Clone)]
pub enum Raw {
    Mysql(MySqlPool),
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// MySQL's `CAST(… AS SIGNED)` in PostgreSQL's words, so shared scenarios can use one query.
fn pg_sql(sql: &str) -> String {
    sql.replace("AS SIGNED)", "AS BIGINT)")
}

impl Raw {
    pub async fn exec(&self, sql: &str) {
        match self {
            Raw::Mysql(p) => sqlx::query(sql).execute(p).await.map(drop),
            Raw::Sqlite(p) => sqlx::query(sql).execute(p).await.map(drop),
            Raw::Postgres(p) => sqlx::raw_sql(sql).execute(p).await.map(drop),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// A single integer (write `CAST(… AS SIGNED)` on MySQL where needed).
    pub async fn int(&self, sql: &str) -> i64 {
        match self {
            Raw::Mysql(p) => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await,
            Raw::Sqlite(p) => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await,
            Raw::Postgres(p) => {
                sqlx::query_scalar::<_, i64>(&pg_sql(sql))
                    .fetch_one(p)
                    .await
            }
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub async fn count(&self, table: &str) -> i64 {
        self.int(&format!("SELECT COUNT(*) FROM {table}")).await
    }

    /// Rows of string columns (NULL as `None`).
    pub async fn strings(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        match self {
            Raw::Mysql(p) => sqlx::query(sql).fetch_all(p).await.map(|r| string_rows(&r)),
            Raw::Sqlite(p) => sqlx::query(sql).fetch_all(p).await.map(|r| string_rows(&r)),
            Raw::Postgres(p) => sqlx::query(sql).fetch_all(p).await.map(|r| string_rows(&r)),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

/// Each of `rows` as its columns' strings.
fn string_rows<R: Row>(rows: &[R]) -> Vec<Vec<Option<String>>>
where
    usize: ColumnIndex<R>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
{
    rows.iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.try_get::<Option<String>, _>(i).expect("string column"))
                .collect()
        })
        .collect()
}

/// An administrative connection to the MariaDB/MySQL or PostgreSQL server.
enum Admin {
    Mysql(MySqlConnection),
    Postgres(PgConnection),
}

impl Admin {
    async fn connect(kind: DbKind, server: &str) -> Result<Admin, sqlx::Error> {
        Ok(match kind {
            DbKind::Mysql => Admin::Mysql(MySqlConnection::connect(server).await?),
            DbKind::Postgres => Admin::Postgres(PgConnection::connect(server).await?),
            DbKind::Sqlite => unreachable!("SQLite has no server"),
        })
    }

    async fn exec(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        match self {
            Admin::Mysql(c) => sqlx::query(sql).execute(c).await.map(drop),
            Admin::Postgres(c) => sqlx::query(sql).execute(c).await.map(drop),
        }
    }

    /// Ends every other session on database `name`: a session the test left with an open
    /// transaction (e.g. a failed write whose rollback is queued on the test's runtime, which
    /// is blocked dropping the database) holds locks `DROP DATABASE` would wait for forever.
    /// (PostgreSQL's `DROP DATABASE … WITH (FORCE)` does this itself.)
    async fn end_sessions_on(&mut self, name: &str) {
        if let Admin::Mysql(c) = self {
            let ids: Vec<i64> = sqlx::query_scalar(
                "SELECT CAST(id AS SIGNED) FROM information_schema.processlist WHERE db = ?",
            )
            .bind(name)
            .fetch_all(&mut *c)
            .await
            .unwrap_or_default();
            for id in ids {
                let _ = sqlx::query(&format!("KILL CONNECTION {id}"))
                    .execute(&mut *c)
                    .await;
            }
        }
    }

    async fn close(self) -> Result<(), sqlx::Error> {
        match self {
            Admin::Mysql(c) => c.close().await,
            Admin::Postgres(c) => c.close().await,
        }
    }
}

/// `kind`'s spelling of a database name in SQL.
fn quoted(kind: DbKind, name: &str) -> String {
    match kind {
        DbKind::Mysql => format!("`{name}`"),
        _ => format!("\"{name}\""),
    }
}

enum Cleanup {
    Server {
        kind: DbKind,
        server: String,
        name: String,
    },
    Sqlite {
        dir: PathBuf,
    },
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        match self {
            Cleanup::Server { kind, server, name } => {
                let (kind, server, name) = (*kind, server.clone(), name.clone());
                on_own_runtime(async move {
                    if let Ok(mut c) = Admin::connect(kind, &server).await {
                        c.end_sessions_on(&name).await;
                        // FORCE (PostgreSQL): connections a timed-out test left behind do not
                        // block it
                        let force = if kind == DbKind::Postgres {
                            " WITH (FORCE)"
                        } else {
                            ""
                        };
                        let db = quoted(kind, &name);
                        let _ = c
                            .exec(&format!("DROP DATABASE IF EXISTS {db}{force}"))
                            .await;
                        let _ = c.close().await;
                    }
                });
            }
            Cleanup::Sqlite { dir } => {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// Runs `job` on a thread and runtime of its own: a drop may run while the test's runtime is
/// panicking.
fn on_own_runtime(job: impl Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(job);
    })
    .join();
}

/// A migrated store on a fresh database, plus raw access; dropping it deletes the database.
pub struct TestDb {
    pub store: Store,
    pub raw: Raw,
    pub kind: DbKind,
    /// `mysql://…/ra_store_x` or `sqlite://…/store.db`
    pub url: String,
    /// MySQL: the database name; SQLite: the file path.
    pub name: String,
    _cleanup: Cleanup,
}

pub fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// A migrated store on a fresh MariaDB database.
pub async fn mysql() -> TestDb {
    migrated(mysql_unmigrated().await).await
}

/// An empty MariaDB database (no tables) with a connected but unmigrated store.
pub async fn mysql_unmigrated() -> TestDb {
    unmigrated(DbKind::Mysql).await
}

/// A migrated store on a fresh PostgreSQL database.
pub async fn postgres() -> TestDb {
    migrated(postgres_unmigrated().await).await
}

/// An empty PostgreSQL database (no tables) with a connected but unmigrated store.
pub async fn postgres_unmigrated() -> TestDb {
    unmigrated(DbKind::Postgres).await
}

async fn migrated(db: TestDb) -> TestDb {
    db.store.migrate().await.expect("migrate");
    db
}

/// A fresh database on the `kind` server (MariaDB/MySQL or PostgreSQL) with a connected but
/// unmigrated store.
async fn unmigrated(kind: DbKind) -> TestDb {
    let (server, what, env) = match kind {
        DbKind::Mysql => (server_url(), "MariaDB/MySQL", "DATABASE_URL"),
        _ => (postgres_server_url(), "PostgreSQL", "POSTGRES_URL"),
    };
    let name = format!("ra_store_{}", unique_suffix());
    let mut admin = tokio::time::timeout(Duration::from_secs(10), Admin::connect(kind, &server))
        .await
        .unwrap_or_else(|_| panic!("{what} at {server} did not answer within 10s (set {env})"))
        .unwrap_or_else(|e| {
            panic!("{what} is not reachable at {server} (set {env} to a server where this user may create databases): {e}")
        });
    admin
        .exec(&format!("CREATE DATABASE {}", quoted(kind, &name)))
        .await
        .unwrap_or_else(|e| panic!("cannot create database {name} on {what} at {server}: {e}"));
    let _ = admin.close().await;
    let cleanup = Cleanup::Server {
        kind,
        server: server.clone(),
        name: name.clone(),
    };
    let url = UrlParts::parse(&server).with_database(&name).to_string();
    let raw = match kind {
        DbKind::Mysql => Raw::Mysql(MySqlPool::connect(&url).await.expect("raw pool")),
        _ => Raw::Postgres(PgPool::connect(&url).await.expect("raw pool")),
    };
    let store = Store::connect_url(&url).await.expect("connect store");
    TestDb {
        store,
        raw,
        kind,
        url,
        name,
        _cleanup: cleanup,
    }
}

/// A fresh temporary directory for SQLite files (removed by the returned guard's owner).
pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ra_store_{}", unique_suffix()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A migrated store on a fresh SQLite file in a temporary directory.
pub async fn sqlite() -> TestDb {
    let dir = temp_dir();
    let path = dir.join("store.db");
    let cfg = StoreConfig {
        kind: DbKind::Sqlite,
        sqlite_path: path.clone(),
        ..StoreConfig::default()
    };
    let store = Store::connect(&cfg).await.expect("connect sqlite store");
    store.migrate().await.expect("migrate");
    let url = format!("sqlite://{}", path.display());
    let raw = Raw::Sqlite(SqlitePool::connect(&url).await.expect("raw sqlite pool"));
    TestDb {
        store,
        raw,
        kind: DbKind::Sqlite,
        url,
        name: path.display().to_string(),
        _cleanup: Cleanup::Sqlite { dir },
    }
}

// ----- sample models -----

pub fn http_route(route: &str, port: u16) -> HttpRoute {
    HttpRoute {
        route: route.to_owned(),
        port,
        ip: "10.0.0.1".to_owned(),
        ttl: Some(60),
        log_guid: "log-guid".to_owned(),
        route_service_url: String::new(),
        modification_tag: Default::default(),
    }
}

pub fn tcp_mapping(rg: &str, port: u16, backend_port: u16) -> TcpRouteMapping {
    TcpRouteMapping {
        router_group_guid: rg.to_owned(),
        backend_port,
        backend_tls_port: 0,
        backend_ip: "10.0.0.2".to_owned(),
        backend_sni_hostname: None,
        instance_id: "inst-1".to_owned(),
        port,
        modification_tag: Default::default(),
        ttl: Some(60),
        isolation_segment: String::new(),
    }
}

pub fn router_group(name: &str, kind: &str, ports: &str) -> RouterGroup {
    RouterGroup {
        guid: String::new(),
        name: name.to_owned(),
        kind: kind.to_owned(),
        reservable_ports: ports.to_owned(),
    }
}

pub const TTL: Duration = Duration::from_secs(60);
