//! [`LockTable`]: Locket's `locks` table (and `locket_health_check`) on MySQL/MariaDB,
//! PostgreSQL or SQLite, with Locket's lock / refresh / release / fetch / expire semantics.
//!
//! Every mutation runs in a transaction that first reads the row with a locking read
//! (`SELECT … FOR UPDATE` on MySQL and PostgreSQL, `BEGIN IMMEDIATE` on SQLite), so two processes
//! racing for the same key never both get it: the loser sees the winner's row (collision) or hits
//! a duplicate key / deadlock / serialization failure, in which case the whole transaction is
//! retried and then sees the row.
//!
//! The table is also the routing API's built-in lock backend when no Locket server is configured:
//! two processes sharing one database get active/standby semantics through it (each process
//! should then also run [`crate::expiry::spawn`] so a dead holder's lock expires).
//!
//! Connection strings: `mysql://…` / `mariadb://…` URLs, `sqlite://…` / `sqlite:…` URLs, the
//! Go MySQL driver's DSN form `user:password@tcp(host:port)/dbname?params` ([`GoDsn`]), and
//! PostgreSQL in Go lib/pq's forms, `postgres://…` / `postgresql://…` URLs and
//! `host=… port=… user=… password=… dbname=… sslmode=…` lists ([`PqDsn`]).

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPool, MySqlSslMode};
use sqlx::pool::{Pool, PoolOptions};
use sqlx::postgres::{PgConnectOptions, PgDatabaseError, PgPool};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteError, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ColumnIndex, Connection, Database, Decode, Encode, Executor, IntoArguments, Row, Type};

mod pq;

pub use pq::PqDsn;

use crate::error::LockError;
use crate::types::{LockRecord, Resource};

/// How many times a transaction that lost a race (duplicate key, deadlock, busy) is retried.
const MAX_TX_ATTEMPTS: u32 = 5;

/// Pool settings for [`LockTable::connect_with`].
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Maximum open connections (`max_open_database_connections`).
    pub max_connections: u32,
    /// How long an operation waits for a connection before failing with
    /// [`LockError::Unavailable`].
    pub acquire_timeout: Duration,
    /// Maximum lifetime of one connection (`None` = unlimited).
    pub max_lifetime: Option<Duration>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            max_lifetime: Some(Duration::from_secs(3600)),
        }
    }
}

/// A parsed database location, before connecting.
#[derive(Debug, Clone)]
pub enum DbConnectOptions {
    /// MySQL or MariaDB.
    MySql(MySqlConnectOptions),
    /// PostgreSQL.
    Postgres(PgConnectOptions),
    /// SQLite (a file, or `:memory:`).
    Sqlite(SqliteConnectOptions),
}

impl DbConnectOptions {
    /// Parses a `mysql://`, `mariadb://`, `postgres://`, `postgresql://` or `sqlite:` URL, a Go
    /// MySQL DSN or a lib/pq `key=value` PostgreSQL connection string.
    pub fn parse(conn: &str) -> Result<Self, LockError> {
        let conn = conn.trim();
        let lower = conn.to_ascii_lowercase();
        if lower.starts_with("mysql://") {
            return parse_mysql_url(conn).map(DbConnectOptions::MySql);
        }
        if lower.starts_with("mariadb://") {
            return parse_mysql_url(&format!("mysql://{}", &conn["mariadb://".len()..]))
                .map(DbConnectOptions::MySql);
        }
        if lower.starts_with("sqlite:") {
            return parse_sqlite(conn).map(DbConnectOptions::Sqlite);
        }
        if pq::is_postgres_url(conn) {
            return PqDsn::parse_url(conn)?
                .to_connect_options()
                .map(DbConnectOptions::Postgres);
        }
        if pq::looks_like_key_value(conn) {
            return PqDsn::parse(conn)?
                .to_connect_options()
                .map(DbConnectOptions::Postgres);
        }
        if conn.contains('/') {
            return GoDsn::parse(conn)?
                .to_connect_options()
                .map(DbConnectOptions::MySql);
        }
        Err(LockError::Config(format!(
            "unrecognised database connection string {:?}: expected mysql://…, postgres://…, sqlite:…, user:password@tcp(host:port)/dbname or host=… dbname=…",
            redact(conn)
        )))
    }

    /// Parses a connection string for an upstream `database_driver` (`mysql`, `sqlite`,
    /// `postgres`). For `sqlite` a bare path is accepted as well as a `sqlite:` URL; for
    /// `postgres` a `postgres://` / `postgresql://` URL or a lib/pq `key=value` list.
    pub fn for_driver(driver: &str, conn: &str) -> Result<Self, LockError> {
        match driver {
            "mysql" => {
                let conn = conn.trim();
                if conn.to_ascii_lowercase().starts_with("mysql://")
                    || conn.to_ascii_lowercase().starts_with("mariadb://")
                {
                    Self::parse(conn)
                } else {
                    GoDsn::parse(conn)?
                        .to_connect_options()
                        .map(DbConnectOptions::MySql)
                }
            }
            "sqlite" | "sqlite3" => parse_sqlite(conn.trim()).map(DbConnectOptions::Sqlite),
            "postgres" => PqDsn::parse_any(conn)?
                .to_connect_options()
                .map(DbConnectOptions::Postgres),
            other => Err(LockError::Config(format!(
                "unknown database_driver {other:?}: expected \"mysql\", \"postgres\" or \"sqlite\""
            ))),
        }
    }
}

fn parse_mysql_url(url: &str) -> Result<MySqlConnectOptions, LockError> {
    MySqlConnectOptions::from_str(url)
        .map_err(|e| LockError::Config(format!("invalid MySQL URL {:?}: {e}", redact(url))))
}

fn parse_sqlite(conn: &str) -> Result<SqliteConnectOptions, LockError> {
    let opts = if conn.to_ascii_lowercase().starts_with("sqlite:") {
        SqliteConnectOptions::from_str(conn)
            .map_err(|e| LockError::Config(format!("invalid SQLite URL {conn:?}: {e}")))?
    } else if conn == ":memory:" {
        SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(|e| LockError::Config(format!("invalid SQLite URL {conn:?}: {e}")))?
    } else if conn.is_empty() {
        return Err(LockError::Config("empty SQLite database path".into()));
    } else {
        SqliteConnectOptions::new().filename(conn)
    };
    Ok(opts
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10)))
}

/// Hides a password in `scheme://user:password@host`, `user:password@tcp(…)` or
/// `… password=… …` strings.
fn redact(conn: &str) -> String {
    if !pq::is_postgres_url(conn) && pq::looks_like_key_value(conn) {
        return pq::redact_key_value(conn);
    }
    let Some(at) = conn.rfind('@') else {
        return conn.to_string();
    };
    let start = conn.find("://").map(|i| i + 3).unwrap_or(0);
    match conn[start..at].find(':') {
        Some(colon) => format!("{}:****{}", &conn[..start + colon], &conn[at..]),
        None => conn.to_string(),
    }
}

/// The Go MySQL driver's DSN: `[user[:password]@][net[(addr)]]/dbname[?param=value&…]`,
/// parsed exactly like `github.com/go-sql-driver/mysql.ParseDSN` (last `/` splits, last `@`
/// before it ends the credentials, first `:` splits user and password).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GoDsn {
    /// User name.
    pub user: String,
    /// Password (may contain `@`, `:` and `/`).
    pub password: String,
    /// `tcp` (default) or `unix`.
    pub net: String,
    /// `host:port` for tcp (default `127.0.0.1:3306`), a socket path for unix.
    pub addr: String,
    /// Database (schema) name.
    pub dbname: String,
    /// Query parameters in order, values percent-decoded.
    pub params: Vec<(String, String)>,
}

impl GoDsn {
    /// Parses a Go MySQL DSN.
    pub fn parse(dsn: &str) -> Result<Self, LockError> {
        let bad =
            |why: &str| LockError::Config(format!("invalid MySQL DSN {:?}: {why}", redact(dsn)));
        let b = dsn.as_bytes();
        let Some(slash) = dsn.rfind('/') else {
            return Err(bad("missing the slash before the database name"));
        };
        let mut out = GoDsn::default();
        if slash > 0 {
            let left = &dsn[..slash];
            let (creds_end, proto_start) = match left.rfind('@') {
                Some(at) => (Some(at), at + 1),
                None => (None, 0),
            };
            if let Some(at) = creds_end {
                let creds = &dsn[..at];
                match creds.find(':') {
                    Some(c) => {
                        out.user = creds[..c].to_string();
                        out.password = creds[c + 1..].to_string();
                    }
                    None => out.user = creds.to_string(),
                }
            }
            let proto = &dsn[proto_start..slash];
            match proto.find('(') {
                Some(p) => {
                    if b[slash - 1] != b')' {
                        return Err(bad("the address must be closed by ')'"));
                    }
                    out.net = proto[..p].to_string();
                    out.addr = proto[p + 1..proto.len() - 1].to_string();
                }
                None => out.net = proto.to_string(),
            }
        }
        let rest = &dsn[slash + 1..];
        match rest.find('?') {
            Some(q) => {
                out.dbname = rest[..q].to_string();
                for pair in rest[q + 1..].split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair
                        .split_once('=')
                        .ok_or_else(|| bad(&format!("parameter {pair:?} is not key=value")))?;
                    out.params.push((k.to_string(), percent_decode(v)));
                }
            }
            None => out.dbname = rest.to_string(),
        }
        if out.net.is_empty() {
            out.net = "tcp".into();
        }
        match out.net.as_str() {
            "tcp" | "tcp4" | "tcp6" => {
                if out.addr.is_empty() {
                    out.addr = "127.0.0.1:3306".into();
                } else if split_host_port(&out.addr).1.is_none() {
                    out.addr = format!("{}:3306", out.addr);
                }
            }
            "unix" => {
                if out.addr.is_empty() {
                    out.addr = "/tmp/mysql.sock".into();
                }
            }
            other => return Err(bad(&format!("unsupported network {other:?}"))),
        }
        Ok(out)
    }

    /// The value of a query parameter.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// MySQL connect options for this DSN. `charset`, `collation` and `tls`
    /// (`true`/`skip-verify`/`preferred`/`false`) are honoured; Go-only tuning parameters
    /// (`parseTime`, `timeout`, `readTimeout`, …) are ignored.
    pub fn to_connect_options(&self) -> Result<MySqlConnectOptions, LockError> {
        let mut o = MySqlConnectOptions::new().username(&self.user);
        if !self.password.is_empty() {
            o = o.password(&self.password);
        }
        if !self.dbname.is_empty() {
            o = o.database(&self.dbname);
        }
        if self.net == "unix" {
            o = o.socket(&self.addr);
        } else {
            let (host, port) = split_host_port(&self.addr);
            o = o.host(host);
            if let Some(port) = port {
                let port: u16 = port.parse().map_err(|_| {
                    LockError::Config(format!("invalid MySQL port {port:?} in DSN"))
                })?;
                o = o.port(port);
            }
        }
        // sqlx's default ssl mode is "preferred"; the Go driver's default is no TLS.
        o = o.ssl_mode(MySqlSslMode::Disabled);
        for (k, v) in &self.params {
            match k.as_str() {
                "charset" => {
                    if let Some(cs) = v.split(',').next().filter(|s| !s.is_empty()) {
                        o = o.charset(cs);
                    }
                }
                "collation" => o = o.collation(v),
                "tls" => {
                    o = o.ssl_mode(match v.as_str() {
                        "true" => MySqlSslMode::VerifyIdentity,
                        "skip-verify" => MySqlSslMode::Required,
                        "preferred" => MySqlSslMode::Preferred,
                        "false" => MySqlSslMode::Disabled,
                        other => {
                            return Err(LockError::Config(format!(
                        "unsupported DSN tls={other:?} (custom TLS configs need sql_ca_cert_file)"
                    )))
                        }
                    })
                }
                _ => tracing::debug!(param = %k, "mysql DSN parameter ignored"),
            }
        }
        Ok(o)
    }
}

fn split_host_port(addr: &str) -> (&str, Option<&str>) {
    if let Some(rest) = addr.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            let host = &rest[..end];
            let port = rest[end + 1..].strip_prefix(':');
            return (host, port);
        }
    }
    match addr.rfind(':') {
        Some(i) if addr[..i].find(':').is_none() => (&addr[..i], Some(&addr[i + 1..])),
        _ => (addr, None),
    }
}

fn percent_decode(s: &str) -> String {
    percent_decode_with(s, true)
}

/// Decodes `%XX` escapes, and `+` as a space if `plus_as_space` (query strings).
fn percent_decode_with(s: &str, plus_as_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' if plus_as_space => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Clone)]
enum DbPool {
    MySql(MySqlPool),
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Locket's `locks` table. Cheap to clone (shares the pool).
#[derive(Clone)]
pub struct LockTable {
    pool: DbPool,
    sql: &'static Statements,
}

impl std::fmt::Debug for LockTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockTable")
            .field("backend", &self.backend_name())
            .finish()
    }
}

/// The statements of one backend (placeholder style and locking read differ).
#[derive(Debug)]
struct Statements {
    /// Reads `owner, value, type, modified_index, modified_id, ttl` of a path.
    select: &'static str,
    /// `select` with a row lock where the backend has one (the lock-taking read of a
    /// transaction).
    select_for_update: &'static str,
    /// `path, owner, …, ttl` of every row, ordered by path.
    fetch_all: &'static str,
    /// `fetch_all` filtered by type.
    fetch_all_by_type: &'static str,
    /// Refresh: value, type, modified_index, ttl of a path.
    refresh: &'static str,
    /// Take over a row with an empty owner: owner, value, type, modified_id, ttl of a path.
    take_over: &'static str,
    /// Insert a new lock: path, owner, value, type, modified_id, ttl.
    insert: &'static str,
    /// Delete a path.
    delete: &'static str,
    /// Insert a health-check row (time).
    health_insert: &'static str,
    /// Delete health-check rows up to a time.
    health_delete: &'static str,
}

/// MySQL / MariaDB (`?` placeholders, `SELECT … FOR UPDATE`).
const MYSQL_SQL: Statements = Statements {
    select: "SELECT owner, value, type, modified_index, modified_id, ttl FROM locks WHERE path = ?",
    select_for_update: "SELECT owner, value, type, modified_index, modified_id, ttl FROM locks WHERE path = ? FOR UPDATE",
    fetch_all: "SELECT path, owner, value, type, modified_index, modified_id, ttl FROM locks ORDER BY path",
    fetch_all_by_type: "SELECT path, owner, value, type, modified_index, modified_id, ttl FROM locks WHERE type = ? ORDER BY path",
    refresh: "UPDATE locks SET value = ?, type = ?, modified_index = ?, ttl = ? WHERE path = ?",
    take_over: "UPDATE locks SET owner = ?, value = ?, type = ?, modified_index = 1, modified_id = ?, ttl = ? WHERE path = ?",
    insert: "INSERT INTO locks (path, owner, value, type, modified_index, modified_id, ttl) VALUES (?, ?, ?, ?, 1, ?, ?)",
    delete: "DELETE FROM locks WHERE path = ?",
    health_insert: "INSERT INTO locket_health_check (time) VALUES (?)",
    health_delete: "DELETE FROM locket_health_check WHERE time <= ?",
};

/// SQLite: as MySQL, but it has no row locks (`BEGIN IMMEDIATE` takes the database write lock
/// instead), so the locking read is the plain one.
const SQLITE_SQL: Statements = Statements {
    select_for_update: MYSQL_SQL.select,
    ..MYSQL_SQL
};

/// PostgreSQL (`$n` placeholders, `SELECT … FOR UPDATE`).
const POSTGRES_SQL: Statements = Statements {
    select: "SELECT owner, value, type, modified_index, modified_id, ttl FROM locks WHERE path = $1",
    select_for_update: "SELECT owner, value, type, modified_index, modified_id, ttl FROM locks WHERE path = $1 FOR UPDATE",
    fetch_all: "SELECT path, owner, value, type, modified_index, modified_id, ttl FROM locks ORDER BY path",
    fetch_all_by_type: "SELECT path, owner, value, type, modified_index, modified_id, ttl FROM locks WHERE type = $1 ORDER BY path",
    refresh: "UPDATE locks SET value = $1, type = $2, modified_index = $3, ttl = $4 WHERE path = $5",
    take_over: "UPDATE locks SET owner = $1, value = $2, type = $3, modified_index = 1, modified_id = $4, ttl = $5 WHERE path = $6",
    insert: "INSERT INTO locks (path, owner, value, type, modified_index, modified_id, ttl) VALUES ($1, $2, $3, $4, 1, $5, $6)",
    delete: "DELETE FROM locks WHERE path = $1",
    health_insert: "INSERT INTO locket_health_check (time) VALUES ($1)",
    health_delete: "DELETE FROM locket_health_check WHERE time <= $1",
};

/// The `locks` table, the same on every backend.
const LOCKS_TABLE: &str = "CREATE TABLE IF NOT EXISTS locks (
        path VARCHAR(255) PRIMARY KEY,
        owner VARCHAR(255),
        value VARCHAR(4096),
        type VARCHAR(255) DEFAULT '',
        modified_index BIGINT DEFAULT 0,
        modified_id VARCHAR(255) DEFAULT '',
        ttl BIGINT DEFAULT 0
    )";

const MYSQL_SCHEMA: [&str; 2] = [
    LOCKS_TABLE,
    "CREATE TABLE IF NOT EXISTS locket_health_check (
        id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
        time BIGINT NOT NULL
    )",
];

const POSTGRES_SCHEMA: [&str; 2] = [
    LOCKS_TABLE,
    "CREATE TABLE IF NOT EXISTS locket_health_check (
        id SERIAL PRIMARY KEY,
        time BIGINT NOT NULL
    )",
];

/// Key of the transaction-scoped advisory lock that serialises table creation on PostgreSQL
/// (concurrent `CREATE TABLE IF NOT EXISTS` can otherwise fail with a duplicate key in the
/// catalog when two Locket processes start at once). ASCII "locket".
const POSTGRES_DDL_LOCK_KEY: i64 = 0x6c6f_636b_6574;

const SQLITE_SCHEMA: [&str; 2] = [
    LOCKS_TABLE,
    "CREATE TABLE IF NOT EXISTS locket_health_check (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time BIGINT NOT NULL
    )",
];

/// Runs `$body` (which uses `$tx` as a `&mut Transaction`) in a transaction on whichever pool the
/// table has, committing on `Ok`, rolling back on `Err`, and retrying races.
macro_rules! transact {
    ($self:expr, |$tx:ident| $body:expr) => {{
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result: Result<_, TxError> = match &$self.pool {
                DbPool::MySql(pool) => transact!(@once pool.begin(), |$tx| $body),
                // READ COMMITTED (the default): a `SELECT … FOR UPDATE` that waited for another
                // transaction sees that transaction's committed row (or no row if deleted).
                DbPool::Postgres(pool) => transact!(@once pool.begin(), |$tx| $body),
                DbPool::Sqlite(pool) => {
                    transact!(@once pool.begin_with("BEGIN IMMEDIATE"), |$tx| $body)
                }
            };
            match result {
                Ok(v) => break v,
                Err(TxError::Retry(why)) if attempt < MAX_TX_ATTEMPTS => {
                    tracing::debug!(attempt, reason = %why, "lock transaction lost a race; retrying");
                    tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
                }
                Err(e) => return Err(e.into_lock_error()),
            }
        }
    }};
    // One attempt: `$body` in the transaction `$begin` opens, committed if it succeeds.
    (@once $begin:expr, |$tx:ident| $body:expr) => {
        async {
            let mut $tx = $begin.await?;
            let v = $body;
            $tx.commit().await?;
            Ok::<_, TxError>(v)
        }
        .await
    };
}

/// Runs `$body` with `$pool` bound to the concrete pool (no transaction).
macro_rules! with_pool {
    ($self:expr, |$pool:ident| $body:expr) => {{
        match &$self.pool {
            DbPool::MySql($pool) => $body,
            DbPool::Postgres($pool) => $body,
            DbPool::Sqlite($pool) => $body,
        }
    }};
}

/// Internal error of one transaction attempt.
enum TxError {
    /// A lock-semantics result to return as is.
    Lock(LockError),
    /// Lost a race (duplicate key, deadlock, serialization failure, busy): retry the
    /// transaction.
    Retry(String),
}

impl TxError {
    fn into_lock_error(self) -> LockError {
        match self {
            TxError::Lock(e) => e,
            TxError::Retry(why) => LockError::Unavailable(format!("database busy: {why}")),
        }
    }
}

impl From<LockError> for TxError {
    fn from(e: LockError) -> Self {
        TxError::Lock(e)
    }
}

impl From<sqlx::Error> for TxError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(d) = &e {
            if d.is_unique_violation() {
                return TxError::Retry(d.to_string());
            }
            if let Some(m) = d.try_downcast_ref::<MySqlDatabaseError>() {
                // 1213 deadlock, 1205 lock wait timeout.
                if matches!(m.number(), 1213 | 1205) {
                    return TxError::Retry(d.to_string());
                }
            } else if let Some(p) = d.try_downcast_ref::<PgDatabaseError>() {
                // serialization_failure, deadlock_detected, lock_not_available.
                if matches!(p.code(), "40001" | "40P01" | "55P03") {
                    return TxError::Retry(d.to_string());
                }
            } else if d.try_downcast_ref::<SqliteError>().is_some() {
                // SQLITE_BUSY (5) / SQLITE_LOCKED (6) and their extended codes.
                if let Some(code) = d.code().and_then(|c| c.parse::<i32>().ok()) {
                    if matches!(code & 0xff, 5 | 6) {
                        return TxError::Retry(d.to_string());
                    }
                }
            }
        }
        TxError::Lock(db_error(e))
    }
}

/// Maps a database error: connectivity problems become [`LockError::Unavailable`].
fn db_error(e: sqlx::Error) -> LockError {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => LockError::Unavailable(e.to_string()),
        sqlx::Error::Configuration(_) => LockError::Config(e.to_string()),
        sqlx::Error::Database(d) => {
            // Access denied / unknown database on connect: the store is unusable.
            if let Some(m) = d.try_downcast_ref::<MySqlDatabaseError>() {
                if matches!(
                    m.number(),
                    1044 | 1045 | 1049 | 1040 | 1053 | 2002 | 2003 | 2006 | 2013
                ) {
                    return LockError::Unavailable(d.to_string());
                }
            }
            if let Some(p) = d.try_downcast_ref::<PgDatabaseError>() {
                // Connection exceptions (08…), authorization failures (28…), unknown database,
                // too many connections, server shutting down / starting up.
                let code = p.code();
                if code.starts_with("08")
                    || code.starts_with("28")
                    || code.starts_with("57P")
                    || matches!(code, "3D000" | "53300")
                {
                    return LockError::Unavailable(d.to_string());
                }
            }
            LockError::Internal(d.to_string())
        }
        other => LockError::Internal(other.to_string()),
    }
}

struct RowState {
    owner: String,
    modified_index: i64,
    modified_id: String,
}

/// Column accessors of every backend's rows: `NULL` reads as `""` / `0`.
trait LockRow {
    fn text(&self, i: usize) -> Result<String, sqlx::Error>;
    fn int(&self, i: usize) -> Result<i64, sqlx::Error>;
}

impl<R: Row> LockRow for R
where
    usize: ColumnIndex<R>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, i: usize) -> Result<String, sqlx::Error> {
        Ok(self.try_get::<Option<String>, _>(i)?.unwrap_or_default())
    }
    fn int(&self, i: usize) -> Result<i64, sqlx::Error> {
        Ok(self.try_get::<Option<i64>, _>(i)?.unwrap_or_default())
    }
}

fn row_state(row: &impl LockRow) -> Result<RowState, sqlx::Error> {
    Ok(RowState {
        owner: row.text(0)?,
        modified_index: row.int(3)?,
        modified_id: row.text(4)?,
    })
}

/// Decodes `owner, value, type, modified_index, modified_id, ttl` (+ `path` given).
fn row_record(key: String, row: &impl LockRow, offset: usize) -> Result<LockRecord, sqlx::Error> {
    Ok(LockRecord {
        key,
        owner: row.text(offset)?,
        value: row.text(offset + 1)?,
        lock_type: row.text(offset + 2)?,
        modified_index: row.int(offset + 3)?,
        modified_id: row.text(offset + 4)?,
        ttl: row.int(offset + 5)?,
    })
}

/// A transaction's locking read of `key` (`select_for_update`): the row's owner and version,
/// if there is a row.
///
/// Not an `async fn`: the future is declared `Send` here; rustc cannot prove an `async fn`'s
/// future `Send` through these higher-ranked bounds where `lock` & co. are spawned.
fn locked_state<'e, E>(
    tx: E,
    select_for_update: &'static str,
    key: &'e str,
) -> impl Future<Output = Result<Option<RowState>, sqlx::Error>> + Send + 'e
where
    E: Executor<'e> + 'e,
    for<'q> <E::Database as Database>::Arguments<'q>: IntoArguments<'q, E::Database>,
    for<'q> &'q str: Encode<'q, E::Database> + Type<E::Database>,
    <E::Database as Database>::Row: LockRow,
{
    let row = sqlx::query(select_for_update).bind(key).fetch_optional(tx);
    async move { row.await?.as_ref().map(row_state).transpose() }
}

/// A MySQL or PostgreSQL pool (`what`) for `options`; any failure to connect is
/// [`LockError::Unavailable`] unless the configuration is invalid.
async fn server_pool<DB: Database>(
    options: <DB::Connection as Connection>::Options,
    settings: &PoolSettings,
    what: &str,
) -> Result<Pool<DB>, LockError> {
    crate::tls::install_default_crypto_provider();
    PoolOptions::<DB>::new()
        .max_connections(settings.max_connections.max(1))
        .acquire_timeout(settings.acquire_timeout)
        .max_lifetime(settings.max_lifetime)
        .connect_with(options)
        .await
        .map_err(|e| match db_error(e) {
            LockError::Internal(m) | LockError::Unavailable(m) => {
                LockError::Unavailable(format!("cannot connect to {what}: {m}"))
            }
            other => other,
        })
}

impl LockTable {
    /// Connects to a `mysql://…` / `mariadb://…` / `postgres://…` / `sqlite:…` URL, a Go MySQL
    /// DSN (`user:password@tcp(host:port)/dbname`) or a lib/pq `key=value` string with default
    /// pool settings, and creates the tables if missing.
    pub async fn connect_url(url: &str) -> Result<Self, LockError> {
        Self::connect_with(DbConnectOptions::parse(url)?, PoolSettings::default()).await
    }

    /// Connects with explicit options and pool settings, and creates the tables if missing.
    pub async fn connect_with(
        options: DbConnectOptions,
        settings: PoolSettings,
    ) -> Result<Self, LockError> {
        let pool = match options {
            DbConnectOptions::MySql(o) => DbPool::MySql(server_pool(o, &settings, "MySQL").await?),
            DbConnectOptions::Postgres(o) => {
                DbPool::Postgres(server_pool(o, &settings, "PostgreSQL").await?)
            }
            DbConnectOptions::Sqlite(o) => {
                // An in-memory database exists per connection: keep exactly one.
                let in_memory = o.get_filename().to_string_lossy().contains(":memory:")
                    || o.get_filename()
                        .to_string_lossy()
                        .starts_with("file:sqlx-in-memory");
                let max = settings.max_connections.max(1);
                let pool = SqlitePoolOptions::new()
                    .max_connections(if in_memory { 1 } else { max })
                    .acquire_timeout(settings.acquire_timeout.max(Duration::from_secs(10)))
                    .max_lifetime(if in_memory {
                        None
                    } else {
                        settings.max_lifetime
                    })
                    .idle_timeout(if in_memory {
                        None
                    } else {
                        Some(Duration::from_secs(600))
                    })
                    .connect_with(o)
                    .await
                    .map_err(|e| {
                        LockError::Unavailable(format!("cannot open SQLite database: {e}"))
                    })?;
                DbPool::Sqlite(pool)
            }
        };
        Self::from_db_pool(pool).await
    }

    /// Uses an existing MySQL pool (e.g. one shared with the routing API's own tables).
    pub async fn from_mysql_pool(pool: MySqlPool) -> Result<Self, LockError> {
        Self::from_db_pool(DbPool::MySql(pool)).await
    }

    /// Uses an existing PostgreSQL pool.
    pub async fn from_postgres_pool(pool: PgPool) -> Result<Self, LockError> {
        Self::from_db_pool(DbPool::Postgres(pool)).await
    }

    /// Uses an existing SQLite pool.
    pub async fn from_sqlite_pool(pool: SqlitePool) -> Result<Self, LockError> {
        Self::from_db_pool(DbPool::Sqlite(pool)).await
    }

    /// The table on `pool`, with the backend's statements; creates the tables if missing.
    async fn from_db_pool(pool: DbPool) -> Result<Self, LockError> {
        let sql = match pool {
            DbPool::MySql(_) => &MYSQL_SQL,
            DbPool::Postgres(_) => &POSTGRES_SQL,
            DbPool::Sqlite(_) => &SQLITE_SQL,
        };
        let table = LockTable { pool, sql };
        table.create_tables().await?;
        Ok(table)
    }

    /// `"mysql"`, `"postgres"` or `"sqlite"`.
    pub fn backend_name(&self) -> &'static str {
        match self.pool {
            DbPool::MySql(_) => "mysql",
            DbPool::Postgres(_) => "postgres",
            DbPool::Sqlite(_) => "sqlite",
        }
    }

    async fn create_tables(&self) -> Result<(), LockError> {
        match &self.pool {
            DbPool::MySql(pool) => {
                for stmt in MYSQL_SCHEMA {
                    sqlx::query(stmt).execute(pool).await.map_err(db_error)?;
                }
            }
            DbPool::Postgres(pool) => {
                // One transaction holding an advisory lock, so that concurrent starters create
                // the tables one after the other.
                let mut tx = pool.begin().await.map_err(db_error)?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(POSTGRES_DDL_LOCK_KEY)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                for stmt in POSTGRES_SCHEMA {
                    sqlx::query(stmt)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                }
                tx.commit().await.map_err(db_error)?;
            }
            DbPool::Sqlite(pool) => {
                for stmt in SQLITE_SCHEMA {
                    sqlx::query(stmt).execute(pool).await.map_err(db_error)?;
                }
            }
        }
        Ok(())
    }

    /// Locket's Lock: inserts the row if absent (modified_index 1, new modified_id); if the
    /// same owner holds it, refreshes it (modified_index + 1, same modified_id, ttl / value /
    /// type overwritten); if another non-empty owner holds it, [`LockError::Collision`].
    /// A row left with an empty owner counts as absent and is taken over as a new lock.
    pub async fn lock(&self, resource: &Resource, ttl_secs: i64) -> Result<LockRecord, LockError> {
        if ttl_secs <= 0 {
            return Err(LockError::InvalidTtl);
        }
        if resource.owner.is_empty() {
            return Err(LockError::InvalidOwner);
        }
        let lock_type = resource.lock_type.as_str();
        let sql = self.sql;
        let record = transact!(self, |tx| {
            match locked_state(&mut *tx, sql.select_for_update, &resource.key).await? {
                Some(s) if !s.owner.is_empty() && s.owner != resource.owner => {
                    return Err(TxError::Lock(LockError::Collision));
                }
                Some(s) if !s.owner.is_empty() => {
                    let index = s.modified_index + 1;
                    sqlx::query(sql.refresh)
                        .bind(&resource.value)
                        .bind(lock_type)
                        .bind(index)
                        .bind(ttl_secs)
                        .bind(&resource.key)
                        .execute(&mut *tx)
                        .await?;
                    record(resource, lock_type, index, s.modified_id, ttl_secs)
                }
                Some(_) => {
                    let id = uuid::Uuid::new_v4().to_string();
                    sqlx::query(sql.take_over)
                        .bind(&resource.owner)
                        .bind(&resource.value)
                        .bind(lock_type)
                        .bind(&id)
                        .bind(ttl_secs)
                        .bind(&resource.key)
                        .execute(&mut *tx)
                        .await?;
                    record(resource, lock_type, 1, id, ttl_secs)
                }
                None => {
                    let id = uuid::Uuid::new_v4().to_string();
                    sqlx::query(sql.insert)
                        .bind(&resource.key)
                        .bind(&resource.owner)
                        .bind(&resource.value)
                        .bind(lock_type)
                        .bind(&id)
                        .bind(ttl_secs)
                        .execute(&mut *tx)
                        .await?;
                    record(resource, lock_type, 1, id, ttl_secs)
                }
            }
        });
        Ok(record)
    }

    /// Locket's Release: a missing key (or one with an empty owner) is a success; a key held by
    /// another owner is [`LockError::Collision`]; otherwise the row is deleted.
    pub async fn release(&self, key: &str, owner: &str) -> Result<(), LockError> {
        let sql = self.sql;
        transact!(self, |tx| {
            match locked_state(&mut *tx, sql.select_for_update, key).await? {
                None => {}
                Some(s) if s.owner.is_empty() => {}
                Some(s) if s.owner != owner => return Err(TxError::Lock(LockError::Collision)),
                Some(_) => {
                    sqlx::query(sql.delete).bind(key).execute(&mut *tx).await?;
                }
            }
        });
        Ok(())
    }

    /// Locket's Fetch: the row, or [`LockError::NotFound`] if missing or its owner is empty.
    pub async fn fetch(&self, key: &str) -> Result<LockRecord, LockError> {
        let row = with_pool!(self, |pool| {
            match sqlx::query(self.sql.select)
                .bind(key)
                .fetch_optional(pool)
                .await
                .map_err(db_error)?
            {
                Some(row) => Some(row_record(key.to_string(), &row, 0).map_err(db_error)?),
                None => None,
            }
        });
        match row {
            Some(r) if !r.owner.is_empty() => Ok(r),
            _ => Err(LockError::NotFound),
        }
    }

    /// Locket's FetchAll: every row with a non-empty owner, filtered by type string
    /// (`""` = all types), ordered by key.
    pub async fn fetch_all(&self, lock_type: &str) -> Result<Vec<LockRecord>, LockError> {
        let sql = self.sql;
        let records = with_pool!(self, |pool| {
            let rows = if lock_type.is_empty() {
                sqlx::query(sql.fetch_all).fetch_all(pool).await
            } else {
                sqlx::query(sql.fetch_all_by_type)
                    .bind(lock_type)
                    .fetch_all(pool)
                    .await
            }
            .map_err(db_error)?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let key: String = row.try_get(0).map_err(db_error)?;
                out.push(row_record(key, row, 1).map_err(db_error)?);
            }
            out
        });
        Ok(records
            .into_iter()
            .filter(|r| !r.owner.is_empty())
            .collect())
    }

    /// TTL expiry: deletes the row only if owner, modified_id and modified_index are still the
    /// given ones (i.e. nobody refreshed or replaced it). Returns whether it deleted.
    pub async fn expire_if_unchanged(
        &self,
        key: &str,
        owner: &str,
        modified_id: &str,
        modified_index: i64,
    ) -> Result<bool, LockError> {
        let sql = self.sql;
        let deleted = transact!(self, |tx| {
            match locked_state(&mut *tx, sql.select_for_update, key).await? {
                Some(s)
                    if !s.owner.is_empty()
                        && s.owner == owner
                        && s.modified_id == modified_id
                        && s.modified_index == modified_index =>
                {
                    sqlx::query(sql.delete).bind(key).execute(&mut *tx).await?;
                    true
                }
                _ => false,
            }
        });
        Ok(deleted)
    }

    /// Writes and removes a row of `locket_health_check` in a transaction: proves the database
    /// accepts writes.
    pub async fn health_check(&self) -> Result<(), LockError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or_default();
        let sql = self.sql;
        transact!(self, |tx| {
            sqlx::query(sql.health_insert)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query(sql.health_delete)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        });
        Ok(())
    }

    /// Closes the pool (waits for connections to be returned).
    pub async fn close(&self) {
        with_pool!(self, |pool| pool.close().await)
    }
}

/// The record `lock` hands back for the row it wrote.
fn record(
    resource: &Resource,
    lock_type: &str,
    modified_index: i64,
    modified_id: String,
    ttl: i64,
) -> LockRecord {
    LockRecord {
        key: resource.key.clone(),
        owner: resource.owner.clone(),
        value: resource.value.clone(),
        lock_type: lock_type.to_string(),
        modified_index,
        modified_id,
        ttl,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_dsn_full() {
        let d = GoDsn::parse("locket:p@ss:w/rd@tcp(sql-db.service.cf.internal:3306)/locket?parseTime=true&charset=utf8mb4,utf8").unwrap();
        assert_eq!(d.user, "locket");
        assert_eq!(d.password, "p@ss:w/rd");
        assert_eq!(d.net, "tcp");
        assert_eq!(d.addr, "sql-db.service.cf.internal:3306");
        assert_eq!(d.dbname, "locket");
        assert_eq!(d.param("parseTime"), Some("true"));
        assert_eq!(d.param("charset"), Some("utf8mb4,utf8"));
        let o = d.to_connect_options().expect("connect options");
        assert_eq!(o.get_username(), "locket");
        assert_eq!(o.get_host(), "sql-db.service.cf.internal");
        assert_eq!(o.get_port(), 3306);
        assert_eq!(o.get_database(), Some("locket"));
        assert_eq!(o.get_charset(), "utf8mb4");
        assert!(matches!(o.get_ssl_mode(), MySqlSslMode::Disabled));
        // The password arrives whole, its `@`, `:` and `/` included (sqlx's URL form
        // percent-encodes it; the options have no getter for it).
        assert_eq!(password_of(&o), Some("p@ss:w/rd".to_string()));
    }

    /// The password in `o`, decoded from sqlx's URL form of the options.
    fn password_of(o: &MySqlConnectOptions) -> Option<String> {
        use sqlx::ConnectOptions;
        let url = o.to_url_lossy();
        url.password().map(|p| percent_decode_with(p, false))
    }

    #[test]
    fn go_dsn_defaults_and_forms() {
        let d = GoDsn::parse("/dbname").unwrap();
        assert_eq!(
            (d.user.as_str(), d.net.as_str(), d.addr.as_str()),
            ("", "tcp", "127.0.0.1:3306")
        );
        assert_eq!(d.dbname, "dbname");
        let d = GoDsn::parse("root@tcp(localhost)/db").unwrap();
        assert_eq!(
            (d.user.as_str(), d.password.as_str(), d.addr.as_str()),
            ("root", "", "localhost:3306")
        );
        let d = GoDsn::parse("u:p@unix(/var/run/mysqld.sock)/db").unwrap();
        assert_eq!(
            (d.net.as_str(), d.addr.as_str()),
            ("unix", "/var/run/mysqld.sock")
        );
        let d = GoDsn::parse("u:p@tcp([::1]:3307)/db?tls=false&x=a%20b").unwrap();
        assert_eq!(d.addr, "[::1]:3307");
        assert_eq!(d.param("x"), Some("a b"));
        let o = d.to_connect_options().expect("connect options");
        assert_eq!(o.get_host(), "::1");
        assert_eq!(o.get_port(), 3307);
        assert_eq!(o.get_username(), "u");
        assert!(matches!(o.get_ssl_mode(), MySqlSslMode::Disabled));
        let d = GoDsn::parse("u:p@/db").unwrap();
        assert_eq!(d.addr, "127.0.0.1:3306");
    }

    #[test]
    fn go_dsn_errors() {
        for dsn in ["no-slash", "u:p@tcp(host:3306/db", "u:p@udp(host)/db"] {
            assert!(
                matches!(GoDsn::parse(dsn), Err(LockError::Config(_))),
                "{dsn}"
            );
        }
        assert!(matches!(
            GoDsn::parse("u:p@tcp(host:99999)/db")
                .unwrap()
                .to_connect_options(),
            Err(LockError::Config(_))
        ));
        let e = GoDsn::parse("u:secret@tcp(h:1/db").unwrap_err().to_string();
        assert!(!e.contains("secret"), "{e}");
    }

    /// The backend a connection string selects, or `"config error"`.
    fn kind(parsed: Result<DbConnectOptions, LockError>) -> &'static str {
        match parsed {
            Ok(DbConnectOptions::MySql(_)) => "mysql",
            Ok(DbConnectOptions::Postgres(_)) => "postgres",
            Ok(DbConnectOptions::Sqlite(_)) => "sqlite",
            Err(LockError::Config(_)) => "config error",
            Err(e) => panic!("not a configuration error: {e}"),
        }
    }

    #[test]
    fn connection_string_kinds() {
        for (conn, want) in [
            ("mysql://root@127.0.0.1:3306/x", "mysql"),
            ("mariadb://root@127.0.0.1/x", "mysql"),
            ("sqlite:///tmp/x.db", "sqlite"),
            ("root:pw@tcp(127.0.0.1:3306)/x", "mysql"),
            (
                "postgres://u:p@127.0.0.1:5432/x?sslmode=disable",
                "postgres",
            ),
            ("postgresql://127.0.0.1/x", "postgres"),
            (
                "host=127.0.0.1 port=5432 user=u password=p dbname=x sslmode=disable",
                "postgres",
            ),
        ] {
            assert_eq!(kind(DbConnectOptions::parse(conn)), want, "{conn}");
        }
        for (driver, conn, want) in [
            ("sqlite", "/tmp/x.db", "sqlite"),
            ("mysql", "u:p@tcp(h:1)/d", "mysql"),
            ("oracle", "x", "config error"),
        ] {
            let got = kind(DbConnectOptions::for_driver(driver, conn));
            assert_eq!(got, want, "{driver} {conn}");
        }
        for conn in [
            "postgres://u:p@h:5432/d?sslmode=disable",
            "postgresql://h/d",
            "host=h port=5432 user=u password=p dbname=d sslmode=disable",
            "dbname=d",
        ] {
            match DbConnectOptions::for_driver("postgres", conn) {
                Ok(DbConnectOptions::Postgres(o)) => assert_eq!(o.get_database(), Some("d")),
                other => panic!("{conn}: {other:?}"),
            }
        }
        assert!(
            matches!(DbConnectOptions::for_driver("postgres", "host=h password=secret x"), Err(LockError::Config(m)) if !m.contains("secret"))
        );
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("mysql://u:pw@h/db"), "mysql://u:****@h/db");
        assert_eq!(redact("u:pw@tcp(h)/db"), "u:****@tcp(h)/db");
        assert_eq!(redact("u@tcp(h)/db"), "u@tcp(h)/db");
        assert_eq!(
            redact("postgres://u:pw@h/db?sslmode=disable"),
            "postgres://u:****@h/db?sslmode=disable"
        );
        assert_eq!(
            redact("host=h password=pw dbname=db"),
            "host=h password=**** dbname=db"
        );
    }

    /// The PostgreSQL statements are the MySQL ones with `$n` placeholders.
    #[test]
    fn postgres_statements_match() {
        fn numbered(q: &str) -> String {
            let mut n = 0;
            q.chars()
                .map(|c| {
                    if c == '?' {
                        n += 1;
                        format!("${n}")
                    } else {
                        c.to_string()
                    }
                })
                .collect()
        }
        let pairs = |s: &Statements| {
            [
                s.select,
                s.select_for_update,
                s.fetch_all,
                s.fetch_all_by_type,
                s.refresh,
                s.take_over,
                s.insert,
                s.delete,
                s.health_insert,
                s.health_delete,
            ]
        };
        for (my, pg) in pairs(&MYSQL_SQL).into_iter().zip(pairs(&POSTGRES_SQL)) {
            assert_eq!(numbered(my), pg);
        }
        assert_eq!(SQLITE_SQL.select_for_update, MYSQL_SQL.select);
        assert!(MYSQL_SQL.select_for_update.ends_with("FOR UPDATE"));
    }
}
