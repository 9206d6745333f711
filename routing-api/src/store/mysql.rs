//! MySQL/MariaDB backend: upstream's gorm schema (version 7) and the queries on it.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use routing_api_client::models::{HttpRoute, RouterGroup, TcpRouteMapping};
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
    placeholders, router_group_row, tcp_routes_of, tcp_row, HttpRow, StoreConfig, StoreError,
    TcpKey, Write, IDLE_TIMEOUT, IN_CHUNK, MIGRATION_KEY, SCHEMA_VERSION,
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
    let result = run_migrations(&mut conn).await;
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

pub(super) async fn update_router_group_ports(
    pool: &MySqlPool,
    guid: &str,
    ports: &str,
    now: OffsetDateTime,
) -> Result<Option<RouterGroup>, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE router_groups SET reservable_ports = ?, updated_at = ? WHERE guid = ?")
        .bind(ports)
        .bind(dt(now))
        .bind(guid)
        .execute(&mut *tx)
        .await?;
    let sql = format!("SELECT {RG_COLUMNS} FROM router_groups WHERE guid = ?");
    let row = sqlx::query(&sql)
        .bind(guid)
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    row.as_ref().map(router_group_row).transpose()
}

// ----- HTTP routes -----

pub(super) async fn upsert_http_route(
    pool: &MySqlPool,
    route: &HttpRoute,
    w: &Write,
) -> Result<(HttpRoute, bool), StoreError> {
    let row = retrying(true, || upsert_http_once(pool, route, w)).await?;
    let HttpRow { guid, route } = http_row(&row)?;
    Ok((route, guid == w.new_guid))
}

async fn upsert_http_once(
    pool: &MySqlPool,
    route: &HttpRoute,
    w: &Write,
) -> Result<MySqlRow, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // idx_route's columns are all NOT NULL, so the unique index alone decides insert vs update
    let upsert = sqlx::query(
        "INSERT INTO routes (guid, created_at, updated_at, expires_at, route, port, ip, ttl, \
         log_guid, route_service_url, modification_guid, modification_index) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0) \
         ON DUPLICATE KEY UPDATE \
         modification_index = COALESCE(modification_index, 0) + 1, \
         ttl = VALUES(ttl), \
         log_guid = IF(VALUES(log_guid) = '', log_guid, VALUES(log_guid)), \
         expires_at = VALUES(expires_at), \
         updated_at = VALUES(updated_at)",
    );
    Mysql::bind_http_insert(upsert, route, w)
        .execute(&mut *tx)
        .await?;
    let sql = format!("SELECT {HTTP_COLUMNS} FROM routes WHERE {HTTP_IDENTITY_WHERE}");
    let row = Mysql::bind_http_identity(sqlx::query(&sql), route)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(row)
}

pub(super) async fn delete_http_route(
    pool: &MySqlPool,
    route: &HttpRoute,
) -> Result<Option<HttpRoute>, StoreError> {
    let sql = format!("SELECT {HTTP_COLUMNS} FROM routes WHERE {HTTP_IDENTITY_WHERE} FOR UPDATE");
    let select = || Mysql::bind_http_identity(sqlx::query(&sql), route);
    let rows = retrying(false, || delete_locked(pool, "routes", select())).await?;
    first_http_route(&rows)
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

pub(super) async fn upsert_tcp_route(
    pool: &MySqlPool,
    m: &TcpRouteMapping,
    w: &Write,
) -> Result<(TcpRouteMapping, bool), StoreError> {
    let (row, created) = retrying(true, || upsert_tcp_once(pool, m, w)).await?;
    Ok((tcp_row(&row)?.mapping, created))
}

async fn upsert_tcp_once(
    pool: &MySqlPool,
    m: &TcpRouteMapping,
    w: &Write,
) -> Result<(MySqlRow, bool), sqlx::Error> {
    let key = TcpKey::of(m);
    let mut tx = pool.begin().await?;
    // Locking read: locks matching rows and the index gap where a match would be inserted,
    // so a concurrent upsert of the same identity waits (or deadlocks and is retried).
    let sql = select_tcp_for_update(&key);
    let rows = bind_tcp_identity(sqlx::query(&sql), m, &key)
        .fetch_all(&mut *tx)
        .await?;
    let guids = guids_of(&rows)?;
    let (guid, created) = match guids.split_first() {
        Some((keep, extra)) => {
            // merge duplicates upstream may have left behind
            delete_guids(&mut tx, "tcp_routes", extra).await?;
            sqlx::query(
                "UPDATE tcp_routes SET \
                 modification_index = COALESCE(modification_index, 0) + 1, \
                 ttl = ?, expires_at = ?, updated_at = ?, isolation_segment = ?, instance_id = ?, \
                 host_tls_port = CASE WHEN host_tls_port > 0 THEN host_tls_port ELSE NULL END, \
                 sni_hostname = NULLIF(sni_hostname, '') \
                 WHERE guid = ?",
            )
            .bind(w.ttl_secs)
            .bind(dt(w.expires_at))
            .bind(dt(w.now))
            .bind(&m.isolation_segment)
            .bind(non_empty(&m.instance_id))
            .bind(keep)
            .execute(&mut *tx)
            .await?;
            (keep.clone(), false)
        }
        None => {
            let insert = sqlx::query(
                "INSERT INTO tcp_routes (guid, created_at, updated_at, expires_at, \
                 router_group_guid, host_port, host_tls_port, host_ip, sni_hostname, instance_id, \
                 external_port, modification_guid, modification_index, ttl, isolation_segment) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
            );
            Mysql::bind_tcp_insert(insert, m, &key, w)
                .execute(&mut *tx)
                .await?;
            (w.new_guid.clone(), true)
        }
    };
    let sql = format!("SELECT {TCP_COLUMNS} FROM tcp_routes WHERE guid = ?");
    let row = sqlx::query(&sql).bind(&guid).fetch_one(&mut *tx).await?;
    tx.commit().await?;
    Ok((row, created))
}

pub(super) async fn delete_tcp_route(
    pool: &MySqlPool,
    m: &TcpRouteMapping,
) -> Result<Option<TcpRouteMapping>, StoreError> {
    let key = TcpKey::of(m);
    let sql = select_tcp_for_update(&key);
    let select = || bind_tcp_identity(sqlx::query(&sql), m, &key);
    let rows = retrying(false, || delete_locked(pool, "tcp_routes", select())).await?;
    first_tcp_route(&rows)
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

/// Runs the locking read `select` (of rows whose first column is the guid) in a transaction,
/// deletes exactly the rows it locked and hands them back.
async fn delete_locked(
    pool: &MySqlPool,
    table: &'static str,
    select: Q<'_, MySql>,
) -> Result<Vec<MySqlRow>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let rows = select.fetch_all(&mut *tx).await?;
    delete_guids(&mut tx, table, &guids_of(&rows)?).await?;
    tx.commit().await?;
    Ok(rows)
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
