//! MySQL/MariaDB backend: upstream's gorm schema (version 7) and the queries on it.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use routing_api_client::models::{HttpRoute, ModificationTag, RouterGroup, TcpRouteMapping};
use sqlx::mysql::{
    MySql, MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions, MySqlQueryResult,
    MySqlRow, MySqlSslMode,
};
use sqlx::{Connection, Row};
use time::{OffsetDateTime, PrimitiveDateTime};

use super::error::mysql_retryable;
use super::shared::{Dialect, HTTP_IDENTITY_WHERE, Q, RG_COLUMNS};
use super::{
    first_http_route, first_tcp_route, http_routes_of, http_row, migration_err, non_empty,
    placeholders, router_group_row, tcp_routes_of, tcp_row, GroupCheck, HttpRow, StoreConfig,
    StoreError, TcpKey, TcpRow, Write, IDLE_TIMEOUT, IN_CHUNK, MIGRATION_KEY, SCHEMA_VERSION,
};

const HTTP_COLUMNS: &str = "guid, route, CAST(port AS SIGNED), ip, CAST(ttl AS SIGNED), log_guid, \
     route_service_url, modification_guid, CAST(modification_index AS SIGNED)";
const TCP_COLUMNS: &str = "guid, router_group_guid, CAST(host_port AS SIGNED), \
     CAST(host_tls_port AS SIGNED), host_ip, sni_hostname, instance_id, \
     CAST(external_port AS SIGNED), modification_guid, CAST(modification_index AS SIGNED), \
     CAST(ttl AS SIGNED), isolation_segment";

/// Upstream's tables as gorm v1 creates them for the v7 models (string → varchar(255),
/// uint16/uint32 → int unsigned, `type:int` → int, time.Time → datetime NULL).
const CREATE_MIGRATION_DATA: &str = "CREATE TABLE IF NOT EXISTS `migration_data` (\
    `migration_key` varchar(255) NOT NULL, \
    `current_version` int, \
    `target_version` int, \
    PRIMARY KEY (`migration_key`))";
const CREATE_ROUTER_GROUPS: &str = "CREATE TABLE IF NOT EXISTS `router_groups` (\
    `guid` varchar(255) NOT NULL, \
    `created_at` datetime NULL, \
    `updated_at` datetime NULL, \
    `name` varchar(255), \
    `type` varchar(255), \
    `reservable_ports` varchar(255), \
    PRIMARY KEY (`guid`), \
    UNIQUE INDEX `idx_rg_name` (`name`))";
const CREATE_ROUTES: &str = "CREATE TABLE IF NOT EXISTS `routes` (\
    `guid` varchar(255) NOT NULL, \
    `created_at` datetime NULL, \
    `updated_at` datetime NULL, \
    `expires_at` datetime NULL, \
    `route` varchar(255) NOT NULL, \
    `port` int unsigned NOT NULL, \
    `ip` varchar(255) NOT NULL, \
    `ttl` int, \
    `log_guid` varchar(255), \
    `route_service_url` varchar(255) NOT NULL, \
    `modification_guid` varchar(255), \
    `modification_index` int unsigned, \
    PRIMARY KEY (`guid`), \
    UNIQUE INDEX `idx_route` (`route`, `port`, `ip`, `route_service_url`))";
const CREATE_TCP_ROUTES: &str = "CREATE TABLE IF NOT EXISTS `tcp_routes` (\
    `guid` varchar(255) NOT NULL, \
    `created_at` datetime NULL, \
    `updated_at` datetime NULL, \
    `expires_at` datetime NULL, \
    `router_group_guid` varchar(255) NOT NULL, \
    `host_port` int NOT NULL, \
    `host_tls_port` int DEFAULT NULL, \
    `host_ip` varchar(255) NOT NULL, \
    `sni_hostname` varchar(255) DEFAULT NULL, \
    `instance_id` varchar(255) DEFAULT NULL, \
    `external_port` int NOT NULL, \
    `modification_guid` varchar(255), \
    `modification_index` int unsigned, \
    `ttl` int, \
    `isolation_segment` varchar(255), \
    PRIMARY KEY (`guid`), \
    UNIQUE INDEX `idx_tcp_route` (`router_group_guid`, `host_port`, `host_ip`, `external_port`, \
    `sni_hostname`, `host_tls_port`))";
const TCP_INDEX_COLUMNS: &[&str] = &[
    "router_group_guid",
    "host_port",
    "host_ip",
    "external_port",
    "sni_hostname",
    "host_tls_port",
];

/// The MySQL dialect: `DATETIME` timestamps, integer columns cast to `SIGNED`.
pub(super) struct Mysql;

impl Dialect for Mysql {
    type Db = MySql;
    type Time = PrimitiveDateTime;
    const HTTP_COLUMNS: &'static str = HTTP_COLUMNS;
    const TCP_COLUMNS: &'static str = TCP_COLUMNS;
    const SEGMENT_OR_EMPTY: &'static str = "COALESCE(isolation_segment, '')";

    fn time(t: OffsetDateTime) -> PrimitiveDateTime {
        dt(t)
    }

    fn rows_affected(done: &MySqlQueryResult) -> u64 {
        done.rows_affected()
    }
}

fn dt(t: OffsetDateTime) -> PrimitiveDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    PrimitiveDateTime::new(t.date(), t.time())
}

// ----- connecting -----

pub(super) async fn connect(cfg: &StoreConfig) -> Result<MySqlPool, StoreError> {
    pool(connect_options(cfg), cfg).await
}

/// The server, credentials and TLS settings of `cfg` (`sqldb.*`, as upstream's driver reads
/// them).
pub(super) fn connect_options(cfg: &StoreConfig) -> MySqlConnectOptions {
    let mut opts = MySqlConnectOptions::new()
        .host(&cfg.host)
        .port(cfg.port)
        .username(&cfg.username)
        .database(&cfg.schema);
    if !cfg.password.is_empty() {
        opts = opts.password(&cfg.password);
    }
    if cfg.skip_ssl_validation {
        opts.ssl_mode(MySqlSslMode::Required)
    } else if let Some(ca) = cfg.ca_cert.as_ref().filter(|c| !c.trim().is_empty()) {
        let mode = if cfg.skip_hostname_validation {
            MySqlSslMode::VerifyCa
        } else {
            MySqlSslMode::VerifyIdentity
        };
        opts.ssl_mode(mode).ssl_ca_from_pem(ca.as_bytes().to_vec())
    } else {
        // upstream's driver uses no TLS unless a CA or skip_ssl_validation is configured
        opts.ssl_mode(MySqlSslMode::Disabled)
    }
}

pub(super) async fn connect_url(url: &str, cfg: &StoreConfig) -> Result<MySqlPool, StoreError> {
    let opts = MySqlConnectOptions::from_str(url).map_err(StoreError::from)?;
    pool(opts, cfg).await
}

async fn pool(opts: MySqlConnectOptions, cfg: &StoreConfig) -> Result<MySqlPool, StoreError> {
    MySqlPoolOptions::new()
        .max_connections(cfg.max_open_connections.max(1))
        .min_connections(0)
        .acquire_timeout(cfg.acquire_timeout)
        .max_lifetime(cfg.max_lifetime())
        .idle_timeout(IDLE_TIMEOUT)
        .test_before_acquire(true)
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                // The duplicate-free TCP upsert relies on InnoDB gap locks (see module docs).
                sqlx::query("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    .execute(conn)
                    .await?;
                Ok(())
            })
        })
        .connect_with(opts)
        .await
        .map_err(StoreError::from)
}

// ----- retries -----

const MAX_ATTEMPTS: u32 = 25;

fn backoff(attempt: u32) -> Duration {
    // 2..~12 ms growing with the attempt, jittered so racing retries spread out
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0] % 8);
    Duration::from_millis(2 + u64::from(attempt.min(10)) * 2 + jitter)
}

/// Runs `op` (one transaction) again while it fails only because of a concurrent writer.
async fn retrying<T, F, Fut>(duplicate_is_race: bool, mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt + 1 < MAX_ATTEMPTS && mysql_retryable(&e, duplicate_is_race) => {
                attempt += 1;
                tracing::debug!(attempt, error = %e, "retrying store transaction after a write race");
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(e) => return Err(StoreError::from(e)),
        }
    }
}

// ----- migrations -----

pub(super) async fn migrate(pool: &MySqlPool) -> Result<(), StoreError> {
    // A dedicated connection, closed afterwards, so the named lock cannot outlive the call.
    let mut conn = pool.acquire().await?.detach();
    sqlx::query(CREATE_MIGRATION_DATA)
        .execute(&mut conn)
        .await
        .map_err(migration_err("create migration_data"))?;
    // Serialise concurrent migrators (only the Locket lock holder migrates, but be safe).
    // Galera/PXC may refuse named locks; migrations are idempotent, so carry on without.
    let locked = sqlx::query_scalar::<_, Option<i64>>(
        "SELECT CAST(GET_LOCK('routing-api-migration', 60) AS SIGNED)",
    )
    .fetch_one(&mut conn)
    .await
    .ok()
    .flatten()
        == Some(1);
    let mut result = run_migrations(&mut conn).await;
    if result.is_ok() {
        result = ensure_expiry_indexes(&mut conn).await;
    }
    if locked {
        let _ = sqlx::query("SELECT RELEASE_LOCK('routing-api-migration')")
            .execute(&mut conn)
            .await;
    }
    let _ = conn.close().await;
    result
}

async fn run_migrations(conn: &mut MySqlConnection) -> Result<(), StoreError> {
    let existing = sqlx::query_as::<_, (Option<i64>, Option<i64>)>(
        "SELECT CAST(current_version AS SIGNED), CAST(target_version AS SIGNED) \
         FROM migration_data WHERE migration_key = ?",
    )
    .bind(MIGRATION_KEY)
    .fetch_optional(&mut *conn)
    .await
    .map_err(migration_err("read migration_data"))?;
    let current = match existing {
        None => {
            sqlx::query(
                "INSERT IGNORE INTO migration_data (migration_key, current_version, target_version) \
                 VALUES (?, -1, ?)",
            )
            .bind(MIGRATION_KEY)
            .bind(SCHEMA_VERSION)
            .execute(&mut *conn)
            .await
            .map_err(migration_err("insert migration_data"))?;
            -1
        }
        Some((current, target)) => {
            let current = current.unwrap_or(-1);
            if current >= SCHEMA_VERSION {
                // ours or upstream's, at v7 or later: leave it alone
                return Ok(());
            }
            if target.unwrap_or(-1) < SCHEMA_VERSION {
                sqlx::query("UPDATE migration_data SET target_version = ? WHERE migration_key = ?")
                    .bind(SCHEMA_VERSION)
                    .bind(MIGRATION_KEY)
                    .execute(&mut *conn)
                    .await
                    .map_err(migration_err("update migration_data"))?;
            }
            current
        }
    };
    for version in 0..=SCHEMA_VERSION {
        if version <= current {
            continue;
        }
        migration_step(conn, version).await?;
        sqlx::query("UPDATE migration_data SET current_version = ? WHERE migration_key = ?")
            .bind(version)
            .bind(MIGRATION_KEY)
            .execute(&mut *conn)
            .await
            .map_err(migration_err("update migration_data"))?;
        tracing::info!(version, "routing-api schema migration applied");
    }
    Ok(())
}

/// Upstream's migration `version`, written so it also completes a schema left by any older
/// upstream version (every step checks `information_schema` first, so re-running is a no-op).
async fn migration_step(conn: &mut MySqlConnection, version: i64) -> Result<(), StoreError> {
    match version {
        // V0: the tables (created directly in their final, v7 form)
        0 => {
            for (what, ddl) in [
                ("create router_groups", CREATE_ROUTER_GROUPS),
                ("create tcp_routes", CREATE_TCP_ROUTES),
                ("create routes", CREATE_ROUTES),
            ] {
                sqlx::query(ddl)
                    .execute(&mut *conn)
                    .await
                    .map_err(migration_err(what))?;
            }
        }
        // V1 copied data out of etcd: nothing to do
        1 => {}
        // V2: unique router group names
        2 => ensure_rg_name_index(conn).await?,
        // V3: isolation segments
        3 => {
            ensure_column(
                conn,
                "isolation_segment",
                "ALTER TABLE `tcp_routes` ADD `isolation_segment` varchar(255)",
            )
            .await?
        }
        // V4: idx_tcp_route gains router_group_guid (its final form is built by V7)
        4 => {}
        // V5: SNI hostname
        5 => {
            ensure_column(
                conn,
                "sni_hostname",
                "ALTER TABLE `tcp_routes` ADD `sni_hostname` varchar(255) DEFAULT NULL",
            )
            .await?
        }
        // V6: backend TLS port
        6 => {
            ensure_column(
                conn,
                "host_tls_port",
                "ALTER TABLE `tcp_routes` ADD `host_tls_port` int DEFAULT NULL",
            )
            .await?
        }
        // V7: nullable instance_id, and the final idx_tcp_route
        7 => {
            if column_exists(conn, "tcp_routes", "instance_id").await? {
                exec(
                    conn,
                    "ALTER TABLE `tcp_routes` MODIFY COLUMN `instance_id` varchar(255) DEFAULT NULL",
                )
                .await?;
            } else {
                exec(
                    conn,
                    "ALTER TABLE `tcp_routes` ADD `instance_id` varchar(255) DEFAULT NULL",
                )
                .await?;
            }
            let cols = index_columns(conn, "tcp_routes", "idx_tcp_route").await?;
            if cols != TCP_INDEX_COLUMNS {
                if !cols.is_empty() {
                    exec(conn, "DROP INDEX `idx_tcp_route` ON `tcp_routes`").await?;
                }
                exec(
                    conn,
                    "CREATE UNIQUE INDEX `idx_tcp_route` ON `tcp_routes` (`router_group_guid`, \
                     `host_port`, `host_ip`, `external_port`, `sni_hostname`, `host_tls_port`)",
                )
                .await?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Our indexes beyond upstream's schema: `expires_at` on both route tables, for the pruner
/// (`expires_at < ?`) and the lists (`expires_at > ?`). Checked on every [`migrate`] (not a
/// numbered migration: upstream's version 7 stays the version), so a database made by upstream
/// or by an older version of ours gains them; upstream ignores extra indexes.
const EXPIRY_INDEXES: &[(&str, &str, &str)] = &[
    (
        "routes",
        "idx_routes_expires_at",
        "CREATE INDEX `idx_routes_expires_at` ON `routes` (`expires_at`)",
    ),
    (
        "tcp_routes",
        "idx_tcp_routes_expires_at",
        "CREATE INDEX `idx_tcp_routes_expires_at` ON `tcp_routes` (`expires_at`)",
    ),
];

async fn ensure_expiry_indexes(conn: &mut MySqlConnection) -> Result<(), StoreError> {
    for (table, index, ddl) in EXPIRY_INDEXES {
        if !index_columns(conn, table, index).await?.is_empty() {
            continue;
        }
        if let Err(e) = exec(conn, ddl).await {
            // a concurrent migrator (without the named lock, e.g. on Galera) may have won
            if index_columns(conn, table, index).await?.is_empty() {
                return Err(e);
            }
        }
    }
    Ok(())
}

async fn ensure_rg_name_index(conn: &mut MySqlConnection) -> Result<(), StoreError> {
    if index_columns(conn, "router_groups", "idx_rg_name")
        .await?
        .is_empty()
    {
        exec(
            conn,
            "CREATE UNIQUE INDEX `idx_rg_name` ON `router_groups` (`name`)",
        )
        .await?;
    }
    Ok(())
}

/// Adds a `tcp_routes` column with `ddl` unless it exists.
async fn ensure_column(
    conn: &mut MySqlConnection,
    column: &str,
    ddl: &'static str,
) -> Result<(), StoreError> {
    if column_exists(conn, "tcp_routes", column).await? {
        return Ok(());
    }
    exec(conn, ddl).await
}

async fn exec(conn: &mut MySqlConnection, sql: &'static str) -> Result<(), StoreError> {
    sqlx::query(sql)
        .execute(conn)
        .await
        .map_err(migration_err(sql))?;
    Ok(())
}

async fn column_exists(
    conn: &mut MySqlConnection,
    table: &str,
    column: &str,
) -> Result<bool, StoreError> {
    let n = sqlx::query_scalar::<_, i64>(
        "SELECT CAST(COUNT(*) AS SIGNED) FROM information_schema.columns \
         WHERE table_schema = DATABASE() AND table_name = ? AND column_name = ?",
    )
    .bind(table)
    .bind(column)
    .fetch_one(conn)
    .await
    .map_err(migration_err("read information_schema.columns"))?;
    Ok(n > 0)
}

async fn index_columns(
    conn: &mut MySqlConnection,
    table: &str,
    index: &str,
) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query(
        "SELECT CAST(column_name AS CHAR) FROM information_schema.statistics \
         WHERE table_schema = DATABASE() AND table_name = ? AND index_name = ? \
         ORDER BY seq_in_index",
    )
    .bind(table)
    .bind(index)
    .fetch_all(conn)
    .await
    .map_err(migration_err("read information_schema.statistics"))?;
    rows.iter()
        .map(|r| r.try_get::<String, _>(0).map(|c| c.to_ascii_lowercase()))
        .collect::<Result<_, _>>()
        .map_err(StoreError::from)
}

// ----- router groups -----

pub(super) async fn insert_router_groups(
    pool: &MySqlPool,
    groups: &[RouterGroup],
    now: OffsetDateTime,
    only_if_empty: bool,
) -> Result<usize, StoreError> {
    let result = retrying(false, || {
        insert_router_groups_once(pool, groups, now, only_if_empty)
    })
    .await;
    result.map_err(|e| super::router_group_duplicate(e, groups))
}

async fn insert_router_groups_once(
    pool: &MySqlPool,
    groups: &[RouterGroup],
    now: OffsetDateTime,
    only_if_empty: bool,
) -> Result<usize, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // the locking read locks the (empty) table's gap: a concurrent seeder waits or deadlocks
    // and retries
    let first_guid = "SELECT guid FROM router_groups LIMIT 1 FOR UPDATE";
    let n = Mysql::insert_router_groups_in(&mut tx, groups, now, only_if_empty, first_guid).await?;
    tx.commit().await?;
    Ok(n)
}

/// Takes the router-group write lock of this transaction (the `migration_data` row, present
/// in every migrated database, ours or upstream's) and reads every group, latest committed
/// state. Router-group creates and updates hold this lock until they commit, so the groups a
/// write is checked against are the groups it commits beside.
async fn locked_router_groups(tx: &mut MySqlConnection) -> Result<Vec<RouterGroup>, sqlx::Error> {
    sqlx::query("SELECT migration_key FROM migration_data WHERE migration_key = ? FOR UPDATE")
        .bind(MIGRATION_KEY)
        .fetch_optional(&mut *tx)
        .await?;
    let sql =
        format!("SELECT {RG_COLUMNS} FROM router_groups ORDER BY created_at, guid FOR UPDATE");
    let rows = sqlx::query(&sql).fetch_all(&mut *tx).await?;
    rows.iter()
        .map(|r| router_group_row(r).map_err(decode_err))
        .collect()
}

pub(super) async fn create_router_group(
    pool: &MySqlPool,
    group: &RouterGroup,
    now: OffsetDateTime,
    check: GroupCheck<'_>,
) -> Result<(), StoreError> {
    let outcome = retrying(false, || create_router_group_once(pool, group, now, check))
        .await
        .map_err(|e| super::router_group_duplicate(e, std::slice::from_ref(group)))?;
    outcome.map_err(StoreError::Rejected)
}

/// `Ok(Err(message))`: `check` refused; the transaction is dropped, i.e. rolled back.
async fn create_router_group_once(
    pool: &MySqlPool,
    group: &RouterGroup,
    now: OffsetDateTime,
    check: GroupCheck<'_>,
) -> Result<Result<(), String>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut all = locked_router_groups(&mut tx).await?;
    all.push(group.clone());
    if let Err(message) = check(&all) {
        return Ok(Err(message));
    }
    Mysql::insert_router_groups_in(&mut tx, std::slice::from_ref(group), now, false, "").await?;
    tx.commit().await?;
    Ok(Ok(()))
}

pub(super) async fn update_router_group_ports(
    pool: &MySqlPool,
    guid: &str,
    ports: &str,
    now: OffsetDateTime,
    check: GroupCheck<'_>,
) -> Result<Option<RouterGroup>, StoreError> {
    retrying(false, || update_ports_once(pool, guid, ports, now, check))
        .await?
        .map_err(StoreError::Rejected)
}

async fn update_ports_once(
    pool: &MySqlPool,
    guid: &str,
    ports: &str,
    now: OffsetDateTime,
    check: GroupCheck<'_>,
) -> Result<Result<Option<RouterGroup>, String>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut all = locked_router_groups(&mut tx).await?;
    // MySQL compares the guid column case-insensitively; so does this lookup
    let Some(group) = all.iter_mut().find(|g| g.guid.eq_ignore_ascii_case(guid)) else {
        return Ok(Ok(None));
    };
    group.reservable_ports = ports.to_owned();
    let updated = group.clone();
    if let Err(message) = check(&all) {
        return Ok(Err(message));
    }
    sqlx::query("UPDATE router_groups SET reservable_ports = ?, updated_at = ? WHERE guid = ?")
        .bind(ports)
        .bind(dt(now))
        .bind(&updated.guid)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Ok(Some(updated)))
}

// ----- HTTP routes -----

/// Upserts every route in one transaction (retried whole after a write race). HTTP routes
/// keep one `INSERT … ON DUPLICATE KEY UPDATE` per route: `idx_route`'s columns are all NOT
/// NULL, so the unique index alone decides insert vs update.
pub(super) async fn upsert_http_routes(
    pool: &MySqlPool,
    writes: &[(&HttpRoute, Write)],
) -> Result<Vec<(HttpRoute, bool)>, StoreError> {
    let rows = retrying(true, || upsert_http_batch_once(pool, writes)).await?;
    rows.iter()
        .zip(writes)
        .map(|(row, (_, w))| {
            let HttpRow { guid, route } = http_row(row)?;
            Ok((route, guid == w.new_guid))
        })
        .collect()
}

async fn upsert_http_batch_once(
    pool: &MySqlPool,
    writes: &[(&HttpRoute, Write)],
) -> Result<Vec<MySqlRow>, sqlx::Error> {
    let upsert = "INSERT INTO routes (guid, created_at, updated_at, expires_at, route, port, ip, \
         ttl, log_guid, route_service_url, modification_guid, modification_index) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0) \
         ON DUPLICATE KEY UPDATE \
         modification_index = COALESCE(modification_index, 0) + 1, \
         ttl = VALUES(ttl), \
         log_guid = IF(VALUES(log_guid) = '', log_guid, VALUES(log_guid)), \
         expires_at = VALUES(expires_at), \
         updated_at = VALUES(updated_at)";
    let select = format!("SELECT {HTTP_COLUMNS} FROM routes WHERE {HTTP_IDENTITY_WHERE}");
    let mut tx = pool.begin().await?;
    let mut rows = Vec::with_capacity(writes.len());
    for (route, w) in writes {
        Mysql::bind_http_insert(sqlx::query(upsert), route, w)
            .execute(&mut *tx)
            .await?;
        let row = Mysql::bind_http_identity(sqlx::query(&select), route)
            .fetch_one(&mut *tx)
            .await?;
        rows.push(row);
    }
    tx.commit().await?;
    Ok(rows)
}

pub(super) async fn delete_http_routes(
    pool: &MySqlPool,
    routes: &[HttpRoute],
) -> Result<Vec<Option<HttpRoute>>, StoreError> {
    let sql = format!("SELECT {HTTP_COLUMNS} FROM routes WHERE {HTTP_IDENTITY_WHERE} FOR UPDATE");
    let selects = || {
        routes
            .iter()
            .map(|r| Mysql::bind_http_identity(sqlx::query(&sql), r))
            .collect::<Vec<_>>()
    };
    let deleted = retrying(false, || delete_locked(pool, "routes", selects())).await?;
    deleted.iter().map(|rows| first_http_route(rows)).collect()
}

// ----- TCP routes -----

/// The NULL-aware identity filter: "no TLS port" matches NULL and any value <= 0 (upstream
/// stores -1 as -1), "no SNI" matches NULL and ''.
fn tcp_identity_where(key: &TcpKey<'_>) -> String {
    let mut s = String::from(
        "router_group_guid = ? AND host_ip = ? AND host_port = ? AND external_port = ? AND ",
    );
    s.push_str(match key.tls_port {
        Some(_) => "host_tls_port = ?",
        None => "(host_tls_port IS NULL OR host_tls_port <= 0)",
    });
    s.push_str(" AND ");
    s.push_str(match key.sni {
        Some(_) => "sni_hostname = ?",
        None => "(sni_hostname IS NULL OR sni_hostname = '')",
    });
    s
}

fn bind_tcp_identity<'q>(
    q: Q<'q, MySql>,
    m: &'q TcpRouteMapping,
    key: &TcpKey<'q>,
) -> Q<'q, MySql> {
    let mut q = q
        .bind(&m.router_group_guid)
        .bind(&m.backend_ip)
        .bind(i64::from(m.backend_port))
        .bind(i64::from(m.port));
    if let Some(p) = key.tls_port {
        q = q.bind(p);
    }
    if let Some(s) = key.sni {
        q = q.bind(s);
    }
    q
}

/// The locking read of a mapping's rows (every copy upstream may have left), oldest first.
fn select_tcp_for_update(key: &TcpKey<'_>) -> String {
    format!(
        "SELECT {TCP_COLUMNS} FROM tcp_routes WHERE {} ORDER BY created_at, guid FOR UPDATE",
        tcp_identity_where(key)
    )
}

/// A mapping's identity as `idx_tcp_route` and MySQL's default collations see it: strings
/// compared case-insensitively and without trailing spaces, "no TLS port" and "no SNI" each
/// one value.
#[derive(Hash, PartialEq, Eq)]
struct TcpIdentity {
    router_group_guid: String,
    host_ip: String,
    host_port: u16,
    external_port: u16,
    tls_port: Option<i32>,
    sni: Option<String>,
}

fn fold(s: &str) -> String {
    s.trim_end_matches(' ').to_lowercase()
}

impl TcpIdentity {
    fn of(m: &TcpRouteMapping) -> TcpIdentity {
        let key = TcpKey::of(m);
        TcpIdentity {
            router_group_guid: fold(&m.router_group_guid),
            host_ip: fold(&m.backend_ip),
            host_port: m.backend_port,
            external_port: m.port,
            tls_port: key.tls_port,
            sni: key.sni.map(fold),
        }
    }
}

/// Mappings per multi-row insert: 14 parameters a row stays far below MySQL's 65,535.
const TCP_BATCH_CHUNK: usize = 500;
/// Identities per locking read. MariaDB turns an `IN` list of 1,000 values or more
/// (`in_predicate_conversion_threshold`) into a join that scans (and locks) the whole index;
/// 200 four-column tuples stay a range read of exactly the rows and gaps asked for.
const TCP_LOCK_CHUNK: usize = 200;

/// Upserts every mapping in one transaction (retried whole after a write race or deadlock).
/// Per chunk of [`TCP_BATCH_CHUNK`]: locking reads of the rows with the chunk's identities
/// (they also lock the index gaps where a missing one would go, which keeps concurrent
/// upserts from inserting a duplicate, as the module docs explain), then one multi-row
/// `INSERT … ON DUPLICATE KEY UPDATE` in which an existing mapping is written under its own
/// guid (the primary key makes it an update) and a new one under a fresh guid. The update
/// clause is the per-row upsert's: modification index + 1; ttl, expires_at, updated_at,
/// isolation_segment, instance_id replaced; upstream's `-1`/`''` normalised to NULL. The
/// stored state handed back is computed from the locked rows and the writes (the rows are
/// locked, so it is what the table holds), in input order, each entry as of its own write.
pub(super) async fn upsert_tcp_routes(
    pool: &MySqlPool,
    writes: &[(&TcpRouteMapping, Write)],
) -> Result<Vec<(TcpRouteMapping, bool)>, StoreError> {
    retrying(true, || upsert_tcp_batch_once(pool, writes)).await
}

async fn upsert_tcp_batch_once(
    pool: &MySqlPool,
    writes: &[(&TcpRouteMapping, Write)],
) -> Result<Vec<(TcpRouteMapping, bool)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut out = Vec::with_capacity(writes.len());
    // identities written earlier in this batch: their guid and current state
    let mut state: HashMap<TcpIdentity, (String, TcpRouteMapping)> = HashMap::new();
    for chunk in writes.chunks(TCP_BATCH_CHUNK) {
        upsert_tcp_chunk(&mut tx, chunk, &mut state, &mut out).await?;
    }
    tx.commit().await?;
    Ok(out)
}

/// The locking read of the rows whose identity shares its leading columns with one of
/// `mappings` (duplicates upstream left included), oldest first.
async fn lock_tcp_rows(
    tx: &mut MySqlConnection,
    mappings: &[&TcpRouteMapping],
) -> Result<Vec<MySqlRow>, sqlx::Error> {
    let mut rows = Vec::new();
    for chunk in mappings.chunks(TCP_LOCK_CHUNK) {
        let mut sql = format!(
            "SELECT {TCP_COLUMNS}, created_at FROM tcp_routes \
             WHERE (router_group_guid, host_port, host_ip, external_port) IN ("
        );
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 {
                "(?, ?, ?, ?)"
            } else {
                ", (?, ?, ?, ?)"
            });
        }
        sql.push_str(") FOR UPDATE");
        let mut q = sqlx::query(&sql);
        for m in chunk {
            q = q
                .bind(m.router_group_guid.as_str())
                .bind(i64::from(m.backend_port))
                .bind(m.backend_ip.as_str())
                .bind(i64::from(m.port));
        }
        rows.extend(q.fetch_all(&mut *tx).await?);
    }
    Ok(rows)
}

/// One chunk of [`upsert_tcp_routes`]: appends each mapping's stored state and whether its
/// write created it to `out`.
async fn upsert_tcp_chunk(
    tx: &mut MySqlConnection,
    chunk: &[(&TcpRouteMapping, Write)],
    state: &mut HashMap<TcpIdentity, (String, TcpRouteMapping)>,
    out: &mut Vec<(TcpRouteMapping, bool)>,
) -> Result<(), sqlx::Error> {
    // lock what this chunk may touch and is not already known from an earlier chunk
    let mut seen = HashSet::with_capacity(chunk.len());
    let to_lock: Vec<&TcpRouteMapping> = chunk
        .iter()
        .map(|(m, _)| *m)
        .filter(|m| !state.contains_key(&TcpIdentity::of(m)))
        .filter(|m| {
            seen.insert((
                fold(&m.router_group_guid),
                m.backend_port,
                fold(&m.backend_ip),
                m.port,
            ))
        })
        .collect();
    let mut rows: Vec<(String, String, TcpRouteMapping)> = Vec::new();
    let locked = lock_tcp_rows(tx, &to_lock).await?;
    for row in &locked {
        let created_at: Option<PrimitiveDateTime> = row.try_get("created_at").unwrap_or(None);
        let TcpRow { guid, mapping } = tcp_row(row).map_err(decode_err)?;
        rows.push((
            created_at.map(|t| t.to_string()).unwrap_or_default(),
            guid,
            mapping,
        ));
    }
    // The oldest row of an identity is kept; copies upstream may have left are merged away.
    rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let mut extra = Vec::new();
    for (_, guid, mapping) in rows {
        match state.entry(TcpIdentity::of(&mapping)) {
            Entry::Occupied(_) => extra.push(guid),
            Entry::Vacant(v) => {
                v.insert((guid, mapping));
            }
        }
    }
    delete_guids(tx, "tcp_routes", &extra).await?;

    let mut guids = Vec::with_capacity(chunk.len());
    for (m, w) in chunk {
        let (guid, stored, created) = match state.entry(TcpIdentity::of(m)) {
            Entry::Occupied(mut e) => {
                let (guid, stored) = e.get_mut();
                stored.modification_tag.index = stored.modification_tag.index.saturating_add(1);
                stored.ttl = Some(w.ttl_secs);
                stored.isolation_segment = m.isolation_segment.clone();
                stored.instance_id = m.instance_id.clone();
                (guid.clone(), stored.clone(), false)
            }
            Entry::Vacant(v) => {
                let key = TcpKey::of(m);
                let stored = TcpRouteMapping {
                    router_group_guid: m.router_group_guid.clone(),
                    backend_port: m.backend_port,
                    backend_ip: m.backend_ip.clone(),
                    backend_tls_port: key.tls_port.unwrap_or(0),
                    backend_sni_hostname: key.sni.map(str::to_owned),
                    instance_id: m.instance_id.clone(),
                    port: m.port,
                    modification_tag: ModificationTag {
                        guid: w.new_modification_guid.clone(),
                        index: 0,
                    },
                    ttl: Some(w.ttl_secs),
                    isolation_segment: m.isolation_segment.clone(),
                };
                v.insert((w.new_guid.clone(), stored.clone()));
                (w.new_guid.clone(), stored, true)
            }
        };
        guids.push(guid);
        out.push((stored, created));
    }

    let mut sql = String::from(
        "INSERT INTO tcp_routes (guid, created_at, updated_at, expires_at, router_group_guid, \
         host_port, host_tls_port, host_ip, sni_hostname, instance_id, external_port, \
         modification_guid, modification_index, ttl, isolation_segment) VALUES ",
    );
    for i in 0..chunk.len() {
        sql.push_str(if i == 0 { "" } else { ", " });
        sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)");
    }
    sql.push_str(
        " ON DUPLICATE KEY UPDATE \
         modification_index = COALESCE(modification_index, 0) + 1, \
         ttl = VALUES(ttl), expires_at = VALUES(expires_at), updated_at = VALUES(updated_at), \
         isolation_segment = VALUES(isolation_segment), instance_id = VALUES(instance_id), \
         host_tls_port = CASE WHEN host_tls_port > 0 THEN host_tls_port ELSE NULL END, \
         sni_hostname = NULLIF(sni_hostname, '')",
    );
    let mut q = sqlx::query(&sql);
    for ((m, w), guid) in chunk.iter().zip(&guids) {
        let key = TcpKey::of(m);
        q = q
            .bind(guid.as_str())
            .bind(dt(w.now))
            .bind(dt(w.now))
            .bind(dt(w.expires_at))
            .bind(m.router_group_guid.as_str())
            .bind(i64::from(m.backend_port))
            .bind(key.tls_port)
            .bind(m.backend_ip.as_str())
            .bind(key.sni)
            .bind(non_empty(&m.instance_id))
            .bind(i64::from(m.port))
            .bind(w.new_modification_guid.as_str())
            .bind(w.ttl_secs)
            .bind(m.isolation_segment.as_str());
    }
    q.execute(&mut *tx).await?;
    Ok(())
}

pub(super) async fn delete_tcp_routes(
    pool: &MySqlPool,
    mappings: &[TcpRouteMapping],
) -> Result<Vec<Option<TcpRouteMapping>>, StoreError> {
    let keyed: Vec<(&TcpRouteMapping, TcpKey<'_>, String)> = mappings
        .iter()
        .map(|m| {
            let key = TcpKey::of(m);
            let sql = select_tcp_for_update(&key);
            (m, key, sql)
        })
        .collect();
    let selects = || {
        keyed
            .iter()
            .map(|(m, key, sql)| bind_tcp_identity(sqlx::query(sql), m, key))
            .collect::<Vec<_>>()
    };
    let deleted = retrying(false, || delete_locked(pool, "tcp_routes", selects())).await?;
    deleted.iter().map(|rows| first_tcp_route(rows)).collect()
}

// ----- expiry -----

pub(super) async fn prune_expired(
    pool: &MySqlPool,
    cutoff: OffsetDateTime,
) -> Result<(Vec<HttpRoute>, Vec<TcpRouteMapping>), StoreError> {
    let http = retrying(false, || prune_table(pool, "routes", HTTP_COLUMNS, cutoff)).await?;
    let tcp = retrying(false, || {
        prune_table(pool, "tcp_routes", TCP_COLUMNS, cutoff)
    })
    .await?;
    Ok((http_routes_of(&http)?, tcp_routes_of(&tcp)?))
}

/// Finds expired rows without locking, then locks them by primary key, re-checking expiry (a
/// concurrent refresh wins), and deletes exactly the rows it locked.
async fn prune_table(
    pool: &MySqlPool,
    table: &'static str,
    columns: &'static str,
    cutoff: OffsetDateTime,
) -> Result<Vec<MySqlRow>, sqlx::Error> {
    let candidates =
        sqlx::query_scalar::<_, String>(&format!("SELECT guid FROM {table} WHERE expires_at < ?"))
            .bind(dt(cutoff))
            .fetch_all(pool)
            .await?;
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = pool.begin().await?;
    let mut pruned = Vec::new();
    for chunk in candidates.chunks(IN_CHUNK) {
        let sql = format!(
            "SELECT {columns} FROM {table} WHERE guid IN ({}) AND expires_at < ? FOR UPDATE",
            placeholders(chunk.len())
        );
        let rows = Mysql::bind_all(sqlx::query(&sql), chunk)
            .bind(dt(cutoff))
            .fetch_all(&mut *tx)
            .await?;
        delete_guids(&mut tx, table, &guids_of(&rows)?).await?;
        pruned.extend(rows);
    }
    tx.commit().await?;
    Ok(pruned)
}

// ----- small helpers -----

/// Runs each locking read of `selects` (of rows whose first column is the guid) in one
/// transaction, deletes exactly the rows each locked and hands them back, per select.
async fn delete_locked(
    pool: &MySqlPool,
    table: &'static str,
    selects: Vec<Q<'_, MySql>>,
) -> Result<Vec<Vec<MySqlRow>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut deleted = Vec::with_capacity(selects.len());
    for select in selects {
        let rows = select.fetch_all(&mut *tx).await?;
        delete_guids(&mut tx, table, &guids_of(&rows)?).await?;
        deleted.push(rows);
    }
    tx.commit().await?;
    Ok(deleted)
}

/// A [`StoreError`] met while decoding inside a retried transaction, carried as sqlx's decode
/// error (never retried).
fn decode_err(e: StoreError) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(e))
}

fn guids_of(rows: &[MySqlRow]) -> Result<Vec<String>, sqlx::Error> {
    rows.iter().map(|r| r.try_get::<String, _>(0)).collect()
}

async fn delete_guids(
    conn: &mut MySqlConnection,
    table: &'static str,
    guids: &[String],
) -> Result<(), sqlx::Error> {
    for chunk in guids.chunks(IN_CHUNK) {
        let sql = format!(
            "DELETE FROM {table} WHERE guid IN ({})",
            placeholders(chunk.len())
        );
        Mysql::bind_all(sqlx::query(&sql), chunk)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
