//! SQLite backend (the embedded default): upstream's tables with SQLite types, WAL mode, and
//! single-statement upserts on unique indexes.

use std::str::FromStr;

use routing_api_client::models::{HttpRoute, RouterGroup, TcpRouteMapping};
use sqlx::sqlite::{
    Sqlite as SqliteDb, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteQueryResult, SqliteSynchronous,
};
use time::{OffsetDateTime, UtcOffset};

use super::shared::{Dialect, HTTP_IDENTITY_WHERE, RG_COLUMNS};
use super::{
    first_http_route, first_tcp_route, http_routes_of, http_row, migration_err, router_group_row,
    tcp_routes_of, tcp_row, GroupCheck, HttpRow, StoreConfig, StoreError, TcpKey, Write,
    IDLE_TIMEOUT, MIGRATION_KEY, SCHEMA_VERSION,
};

const HTTP_COLUMNS: &str = "guid, route, port, ip, ttl, log_guid, route_service_url, \
     modification_guid, modification_index";
const TCP_COLUMNS: &str = "guid, router_group_guid, host_port, host_tls_port, host_ip, \
     sni_hostname, instance_id, external_port, modification_guid, modification_index, ttl, \
     isolation_segment";

/// SQLite gets at most this many connections (one writer at a time anyway).
const MAX_SQLITE_CONNECTIONS: u32 = 16;

/// The schema, statement by statement. Timestamps are UTC text `YYYY-MM-DD HH:MM:SS.ffffff`.
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS router_groups (\
        guid TEXT NOT NULL PRIMARY KEY, \
        created_at TEXT, \
        updated_at TEXT, \
        name TEXT, \
        type TEXT, \
        reservable_ports TEXT)",
    "CREATE UNIQUE INDEX IF NOT EXISTS idx_rg_name ON router_groups (name)",
    "CREATE TABLE IF NOT EXISTS tcp_routes (\
        guid TEXT NOT NULL PRIMARY KEY, \
        created_at TEXT, \
        updated_at TEXT, \
        expires_at TEXT, \
        router_group_guid TEXT NOT NULL, \
        host_port INTEGER NOT NULL, \
        host_tls_port INTEGER DEFAULT NULL, \
        host_ip TEXT NOT NULL, \
        sni_hostname TEXT DEFAULT NULL, \
        instance_id TEXT DEFAULT NULL, \
        external_port INTEGER NOT NULL, \
        modification_guid TEXT, \
        modification_index INTEGER, \
        ttl INTEGER, \
        isolation_segment TEXT)",
    // upstream's idx_tcp_route, with NULL mapped to a sentinel inside the index only, so
    // "no TLS port" / "no SNI" rows conflict with each other (see the module docs)
    "CREATE UNIQUE INDEX IF NOT EXISTS idx_tcp_route ON tcp_routes (router_group_guid, \
        host_port, host_ip, external_port, IFNULL(sni_hostname, ''), IFNULL(host_tls_port, 0))",
    "CREATE TABLE IF NOT EXISTS routes (\
        guid TEXT NOT NULL PRIMARY KEY, \
        created_at TEXT, \
        updated_at TEXT, \
        expires_at TEXT, \
        route TEXT NOT NULL, \
        port INTEGER NOT NULL, \
        ip TEXT NOT NULL, \
        ttl INTEGER, \
        log_guid TEXT, \
        route_service_url TEXT NOT NULL, \
        modification_guid TEXT, \
        modification_index INTEGER)",
    "CREATE UNIQUE INDEX IF NOT EXISTS idx_route ON routes (route, port, ip, route_service_url)",
];

/// Our indexes beyond upstream's schema, for the pruner (`expires_at < ?`) and the lists
/// (`expires_at > ?`). Created by every [`migrate`], so a database made by an older version
/// (at schema version 7 already) gains them too.
pub(super) const EXPIRY_INDEXES: &[&str] = &[
    "CREATE INDEX IF NOT EXISTS idx_routes_expires_at ON routes (expires_at)",
    "CREATE INDEX IF NOT EXISTS idx_tcp_routes_expires_at ON tcp_routes (expires_at)",
];

/// The conflict target matching `idx_tcp_route`.
const TCP_CONFLICT_TARGET: &str = "(router_group_guid, host_port, host_ip, external_port, \
     IFNULL(sni_hostname, ''), IFNULL(host_tls_port, 0))";
/// The identity filter, written with the index's expressions so it uses the index and agrees
/// with the upsert's notion of "same mapping".
const TCP_IDENTITY_WHERE: &str = "router_group_guid = ? AND host_port = ? AND host_ip = ? AND \
     external_port = ? AND IFNULL(sni_hostname, '') = ? AND IFNULL(host_tls_port, 0) = ?";

/// The SQLite dialect: timestamps as UTC text, `IFNULL`.
pub(super) struct Sqlite;

impl Dialect for Sqlite {
    type Db = SqliteDb;
    type Time = String;
    const HTTP_COLUMNS: &'static str = HTTP_COLUMNS;
    const TCP_COLUMNS: &'static str = TCP_COLUMNS;
    const SEGMENT_OR_EMPTY: &'static str = "IFNULL(isolation_segment, '')";

    fn time(t: OffsetDateTime) -> String {
        ts(t)
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }
}

/// UTC, fixed width, so text comparison is time comparison.
fn ts(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

// ----- connecting -----

pub(super) async fn connect(cfg: &StoreConfig) -> Result<SqlitePool, StoreError> {
    if let Some(dir) = cfg
        .sqlite_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| StoreError::Config(format!("cannot create {}: {e}", dir.display())))?;
    }
    let opts = SqliteConnectOptions::new().filename(&cfg.sqlite_path);
    pool(opts, cfg, false).await
}

pub(super) async fn connect_url(url: &str, cfg: &StoreConfig) -> Result<SqlitePool, StoreError> {
    let opts = SqliteConnectOptions::from_str(url).map_err(StoreError::from)?;
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    pool(opts, cfg, in_memory).await
}

async fn pool(
    opts: SqliteConnectOptions,
    cfg: &StoreConfig,
    in_memory: bool,
) -> Result<SqlitePool, StoreError> {
    let mut opts = opts
        .create_if_missing(true)
        .busy_timeout(cfg.acquire_timeout)
        // FULL: a commit is fsynced to the WAL before it is acknowledged, so it survives a power
        // cut (NORMAL in WAL mode may lose the last commits).
        .synchronous(SqliteSynchronous::Full);
    let mut pool = SqlitePoolOptions::new().acquire_timeout(cfg.acquire_timeout);
    if in_memory {
        // every connection would get its own empty database: keep exactly one, forever
        pool = pool
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
    } else {
        opts = opts.journal_mode(SqliteJournalMode::Wal);
        pool = pool
            .max_connections(cfg.max_open_connections.clamp(1, MAX_SQLITE_CONNECTIONS))
            .max_lifetime(cfg.max_lifetime())
            .idle_timeout(IDLE_TIMEOUT);
    }
    pool.connect_with(opts).await.map_err(StoreError::from)
}

/// `PRAGMA synchronous` and `PRAGMA journal_mode` of one pooled connection.
pub(super) async fn durability(pool: &SqlitePool) -> Result<(i64, String), StoreError> {
    let mut conn = pool.acquire().await?;
    let sync = sqlx::query_scalar::<_, i64>("PRAGMA synchronous")
        .fetch_one(&mut *conn)
        .await?;
    let journal = sqlx::query_scalar::<_, String>("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await?;
    Ok((sync, journal))
}

// ----- migrations -----

pub(super) async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    // IMMEDIATE: take the write lock up front, so concurrent migrators queue on busy_timeout
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS migration_data (migration_key TEXT NOT NULL PRIMARY KEY, \
         current_version INTEGER, target_version INTEGER)",
    )
    .execute(&mut *tx)
    .await
    .map_err(migration_err("create migration_data"))?;
    let current = sqlx::query_scalar::<_, Option<i64>>(
        "SELECT current_version FROM migration_data WHERE migration_key = ?",
    )
    .bind(MIGRATION_KEY)
    .fetch_optional(&mut *tx)
    .await
    .map_err(migration_err("read migration_data"))?
    .flatten();
    if current.is_some_and(|v| v >= SCHEMA_VERSION) {
        create_expiry_indexes(&mut tx).await?;
        tx.commit().await?;
        return Ok(());
    }
    for ddl in SCHEMA {
        sqlx::query(ddl)
            .execute(&mut *tx)
            .await
            .map_err(migration_err("create schema"))?;
    }
    create_expiry_indexes(&mut tx).await?;
    sqlx::query(
        "INSERT INTO migration_data (migration_key, current_version, target_version) \
         VALUES (?, ?, ?) ON CONFLICT (migration_key) DO UPDATE SET \
         current_version = excluded.current_version, \
         target_version = MAX(IFNULL(target_version, 0), excluded.target_version)",
    )
    .bind(MIGRATION_KEY)
    .bind(SCHEMA_VERSION)
    .bind(SCHEMA_VERSION)
    .execute(&mut *tx)
    .await
    .map_err(migration_err("update migration_data"))?;
    tx.commit().await?;
    tracing::info!(
        version = SCHEMA_VERSION,
        "routing-api sqlite schema created"
    );
    Ok(())
}

async fn create_expiry_indexes(tx: &mut SqliteConnection) -> Result<(), StoreError> {
    for ddl in EXPIRY_INDEXES {
        sqlx::query(ddl)
            .execute(&mut *tx)
            .await
            .map_err(migration_err("create expires_at indexes"))?;
    }
    Ok(())
}

// ----- router groups -----

pub(super) async fn insert_router_groups(
    pool: &SqlitePool,
    groups: &[RouterGroup],
    now: OffsetDateTime,
    only_if_empty: bool,
) -> Result<usize, StoreError> {
    insert_router_groups_tx(pool, groups, now, only_if_empty)
        .await
        .map_err(|e| super::router_group_duplicate(StoreError::from(e), groups))
}

async fn insert_router_groups_tx(
    pool: &SqlitePool,
    groups: &[RouterGroup],
    now: OffsetDateTime,
    only_if_empty: bool,
) -> Result<usize, sqlx::Error> {
    // IMMEDIATE: the write lock up front, so a concurrent seeder waits and then sees our rows
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let first_guid = "SELECT guid FROM router_groups LIMIT 1";
    let n =
        Sqlite::insert_router_groups_in(&mut tx, groups, now, only_if_empty, first_guid).await?;
    tx.commit().await?;
    Ok(n)
}

/// Reads every group inside a `BEGIN IMMEDIATE` transaction: it holds SQLite's write lock,
/// so no other write commits between this read and the caller's write.
async fn all_router_groups(tx: &mut SqliteConnection) -> Result<Vec<RouterGroup>, StoreError> {
    let sql = format!("SELECT {RG_COLUMNS} FROM router_groups ORDER BY created_at, guid");
    let rows = sqlx::query(&sql).fetch_all(&mut *tx).await?;
    rows.iter().map(router_group_row).collect()
}

pub(super) async fn create_router_group(
    pool: &SqlitePool,
    group: &RouterGroup,
    now: OffsetDateTime,
    check: GroupCheck<'_>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut all = all_router_groups(&mut tx).await?;
    all.push(group.clone());
    check(&all).map_err(StoreError::Rejected)?;
    Sqlite::insert_router_groups_in(&mut tx, std::slice::from_ref(group), now, false, "")
        .await
        .map_err(|e| super::router_group_duplicate(e.into(), std::slice::from_ref(group)))?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn update_router_group_ports(
    pool: &SqlitePool,
    guid: &str,
    ports: &str,
    now: OffsetDateTime,
    check: GroupCheck<'_>,
) -> Result<Option<RouterGroup>, StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut all = all_router_groups(&mut tx).await?;
    let Some(group) = all.iter_mut().find(|g| g.guid == guid) else {
        return Ok(None);
    };
    group.reservable_ports = ports.to_owned();
    let updated = group.clone();
    check(&all).map_err(StoreError::Rejected)?;
    sqlx::query("UPDATE router_groups SET reservable_ports = ?, updated_at = ? WHERE guid = ?")
        .bind(ports)
        .bind(ts(now))
        .bind(guid)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(updated))
}

// ----- HTTP routes -----

/// Upserts every route in one `BEGIN IMMEDIATE` transaction, one `INSERT … ON CONFLICT`
/// statement each (SQLite statements are in-process calls: batching them buys little).
pub(super) async fn upsert_http_routes(
    pool: &SqlitePool,
    writes: &[(&HttpRoute, Write)],
) -> Result<Vec<(HttpRoute, bool)>, StoreError> {
    let sql = format!(
        "INSERT INTO routes (guid, created_at, updated_at, expires_at, route, port, ip, ttl, \
         log_guid, route_service_url, modification_guid, modification_index) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0) \
         ON CONFLICT (route, port, ip, route_service_url) DO UPDATE SET \
         modification_index = IFNULL(routes.modification_index, 0) + 1, \
         ttl = excluded.ttl, \
         log_guid = CASE WHEN excluded.log_guid = '' THEN routes.log_guid ELSE excluded.log_guid END, \
         expires_at = excluded.expires_at, \
         updated_at = excluded.updated_at \
         RETURNING {HTTP_COLUMNS}"
    );
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut out = Vec::with_capacity(writes.len());
    for (route, w) in writes {
        let row = Sqlite::bind_http_insert(sqlx::query(&sql), route, w)
            .fetch_one(&mut *tx)
            .await?;
        let HttpRow { guid, route } = http_row(&row)?;
        out.push((route, guid == w.new_guid));
    }
    tx.commit().await?;
    Ok(out)
}

pub(super) async fn delete_http_routes(
    pool: &SqlitePool,
    routes: &[HttpRoute],
) -> Result<Vec<Option<HttpRoute>>, StoreError> {
    let sql = format!("DELETE FROM routes WHERE {HTTP_IDENTITY_WHERE} RETURNING {HTTP_COLUMNS}");
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut out = Vec::with_capacity(routes.len());
    for route in routes {
        let rows = Sqlite::bind_http_identity(sqlx::query(&sql), route)
            .fetch_all(&mut *tx)
            .await?;
        out.push(first_http_route(&rows)?);
    }
    tx.commit().await?;
    Ok(out)
}

// ----- TCP routes -----

/// Upserts every mapping in one `BEGIN IMMEDIATE` transaction, one `INSERT … ON CONFLICT`
/// statement each.
pub(super) async fn upsert_tcp_routes(
    pool: &SqlitePool,
    writes: &[(&TcpRouteMapping, Write)],
) -> Result<Vec<(TcpRouteMapping, bool)>, StoreError> {
    let sql = format!(
        "INSERT INTO tcp_routes (guid, created_at, updated_at, expires_at, router_group_guid, \
         host_port, host_tls_port, host_ip, sni_hostname, instance_id, external_port, \
         modification_guid, modification_index, ttl, isolation_segment) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?) \
         ON CONFLICT {TCP_CONFLICT_TARGET} DO UPDATE SET \
         modification_index = IFNULL(tcp_routes.modification_index, 0) + 1, \
         ttl = excluded.ttl, \
         expires_at = excluded.expires_at, \
         updated_at = excluded.updated_at, \
         isolation_segment = excluded.isolation_segment, \
         instance_id = excluded.instance_id \
         RETURNING {TCP_COLUMNS}"
    );
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut out = Vec::with_capacity(writes.len());
    for (m, w) in writes {
        let key = TcpKey::of(m);
        let row = Sqlite::bind_tcp_insert(sqlx::query(&sql), &w.new_guid, m, &key, w)
            .fetch_one(&mut *tx)
            .await?;
        let row = tcp_row(&row)?;
        let created = row.guid == w.new_guid;
        out.push((row.mapping, created));
    }
    tx.commit().await?;
    Ok(out)
}

pub(super) async fn delete_tcp_routes(
    pool: &SqlitePool,
    mappings: &[TcpRouteMapping],
) -> Result<Vec<Option<TcpRouteMapping>>, StoreError> {
    let sql = format!("DELETE FROM tcp_routes WHERE {TCP_IDENTITY_WHERE} RETURNING {TCP_COLUMNS}");
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut out = Vec::with_capacity(mappings.len());
    for m in mappings {
        let key = TcpKey::of(m);
        let rows = sqlx::query(&sql)
            .bind(&m.router_group_guid)
            .bind(i64::from(m.backend_port))
            .bind(&m.backend_ip)
            .bind(i64::from(m.port))
            .bind(key.sni.unwrap_or(""))
            .bind(key.tls_port.unwrap_or(0))
            .fetch_all(&mut *tx)
            .await?;
        out.push(first_tcp_route(&rows)?);
    }
    tx.commit().await?;
    Ok(out)
}

// ----- expiry -----

pub(super) async fn prune_expired(
    pool: &SqlitePool,
    cutoff: OffsetDateTime,
) -> Result<(Vec<HttpRoute>, Vec<TcpRouteMapping>), StoreError> {
    // one statement per table: the rows returned are exactly the rows deleted
    let sql = format!("DELETE FROM routes WHERE expires_at < ? RETURNING {HTTP_COLUMNS}");
    let http = sqlx::query(&sql).bind(ts(cutoff)).fetch_all(pool).await?;
    let sql = format!("DELETE FROM tcp_routes WHERE expires_at < ? RETURNING {TCP_COLUMNS}");
    let tcp = sqlx::query(&sql).bind(ts(cutoff)).fetch_all(pool).await?;
    Ok((http_routes_of(&http)?, tcp_routes_of(&tcp)?))
}
