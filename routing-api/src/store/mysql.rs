//! MySQL/MariaDB backend: upstream's gorm schema (version 7) and the queries on it.

use std::collections::hash_map::Entry;
use std::collections::HashSet;
use std::str::FromStr;

use routing_api_client::models::{HttpRoute, TcpRouteMapping};
use sqlx::mysql::{
    MySql, MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlQueryResult, MySqlRow,
    MySqlSslMode,
};
use sqlx::{Connection, Row};
use time::{OffsetDateTime, PrimitiveDateTime};

use super::error::mysql_retryable;
use super::shared::{
    apply_tcp_write, decode_err, guids_of, retrying, server_pool_options, tcp_identity_where,
    Dialect, Server, TcpIdentity, TcpState, Tls, HTTP_IDENTITY_WHERE, TCP_INDEX_COLUMNS,
};
use super::{
    first_tcp_route, migration_err, placeholders, tcp_row, StoreConfig, StoreError, TcpKey, TcpRow,
    Write, IN_CHUNK,
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

/// MySQL's transactions: InnoDB locks (locking reads lock the index gaps too), deadlock
/// victims and duplicate-key races retried.
impl Server<MySql> for Mysql {
    fn retryable(err: &sqlx::Error, duplicate_is_race: bool) -> bool {
        mysql_retryable(err, duplicate_is_race)
    }

    /// MySQL compares the guid column case-insensitively; so does this lookup.
    fn same_guid(stored: &str, wanted: &str) -> bool {
        stored.eq_ignore_ascii_case(wanted)
    }

    const ROUTER_GROUPS_LOCKING: &'static str = " FOR UPDATE";
    /// The locking read locks the (empty) table's gap: a concurrent seeder waits or deadlocks
    /// and retries.
    const FIRST_ROUTER_GROUP: &'static str = "SELECT guid FROM router_groups LIMIT 1 FOR UPDATE";
    const SEED_TAKES_WRITE_LOCK: bool = false;

    const READ_VERSIONS: &'static str =
        "SELECT CAST(current_version AS SIGNED), CAST(target_version AS SIGNED) \
         FROM migration_data WHERE migration_key = ?";
    const INSERT_VERSIONS: &'static str =
        "INSERT IGNORE INTO migration_data (migration_key, current_version, target_version) \
         VALUES (?, -1, ?)";

    async fn migration_step(conn: &mut MySqlConnection, version: i64) -> Result<(), StoreError> {
        migration_step(conn, version).await
    }

    async fn upsert_tcp_batch(
        pool: &MySqlPool,
        writes: &[(&TcpRouteMapping, Write)],
    ) -> Result<Vec<(TcpRouteMapping, bool)>, sqlx::Error> {
        upsert_tcp_batch(pool, writes).await
    }

    /// MySQL has no `DELETE … RETURNING`: deletes lock the rows, then delete them by guid.
    const DELETES_RETURN_ROWS: bool = false;

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

    /// Finds expired rows without locking, then locks them by primary key, re-checking
    /// expiry (a concurrent refresh wins), and deletes exactly the rows it locked.
    async fn prune_table(
        pool: &MySqlPool,
        table: &'static str,
        columns: &'static str,
        cutoff: OffsetDateTime,
    ) -> Result<Vec<MySqlRow>, sqlx::Error> {
        let candidates = sqlx::query_scalar::<_, String>(&format!(
            "SELECT guid FROM {table} WHERE expires_at < ?"
        ))
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
            Mysql::delete_guids(&mut tx, table, &guids_of(&rows)?).await?;
            pruned.extend(rows);
        }
        tx.commit().await?;
        Ok(pruned)
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
    match Tls::of(cfg) {
        Tls::Unverified => opts.ssl_mode(MySqlSslMode::Required),
        Tls::Verified { ca, check_hostname } => {
            let mode = if check_hostname {
                MySqlSslMode::VerifyIdentity
            } else {
                MySqlSslMode::VerifyCa
            };
            opts.ssl_mode(mode).ssl_ca_from_pem(ca.as_bytes().to_vec())
        }
        // upstream's driver uses no TLS unless a CA or skip_ssl_validation is configured
        Tls::Off => opts.ssl_mode(MySqlSslMode::Disabled),
    }
}

pub(super) async fn connect_url(url: &str, cfg: &StoreConfig) -> Result<MySqlPool, StoreError> {
    let opts = MySqlConnectOptions::from_str(url).map_err(StoreError::from)?;
    pool(opts, cfg).await
}

async fn pool(opts: MySqlConnectOptions, cfg: &StoreConfig) -> Result<MySqlPool, StoreError> {
    server_pool_options::<MySql>(cfg)
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
    let mut result = Mysql::run_migrations(&mut conn).await;
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
                Mysql::exec(
                    conn,
                    "ALTER TABLE `tcp_routes` MODIFY COLUMN `instance_id` varchar(255) DEFAULT NULL",
                )
                .await?;
            } else {
                Mysql::exec(
                    conn,
                    "ALTER TABLE `tcp_routes` ADD `instance_id` varchar(255) DEFAULT NULL",
                )
                .await?;
            }
            let cols = index_columns(conn, "tcp_routes", "idx_tcp_route").await?;
            if cols != TCP_INDEX_COLUMNS {
                if !cols.is_empty() {
                    Mysql::exec(conn, "DROP INDEX `idx_tcp_route` ON `tcp_routes`").await?;
                }
                Mysql::exec(
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
        if let Err(e) = Mysql::exec(conn, ddl).await {
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
        Mysql::exec(
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
    Mysql::exec(conn, ddl).await
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

// ----- HTTP routes -----

/// Upserts every route in one transaction (retried whole after a write race). HTTP routes
/// keep one `INSERT … ON DUPLICATE KEY UPDATE` per route, read back by identity:
/// `idx_route`'s columns are all NOT NULL, so the unique index alone decides insert vs update.
pub(super) async fn upsert_http_routes(
    pool: &MySqlPool,
    writes: &[(&HttpRoute, Write)],
) -> Result<Vec<(HttpRoute, bool)>, StoreError> {
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
    Mysql::upsert_http_routes(pool, writes, upsert, Some(&select)).await
}

pub(super) async fn delete_http_routes(
    pool: &MySqlPool,
    routes: &[HttpRoute],
) -> Result<Vec<Option<HttpRoute>>, StoreError> {
    let sql = format!("SELECT {HTTP_COLUMNS} FROM routes WHERE {HTTP_IDENTITY_WHERE} FOR UPDATE");
    Mysql::delete_http_routes(pool, routes, &sql).await
}

// ----- TCP routes -----

/// A string as MySQL's default collations compare it: case-insensitively and without
/// trailing spaces.
fn fold(s: &str) -> String {
    s.trim_end_matches(' ').to_lowercase()
}

/// A mapping's identity as `idx_tcp_route` and MySQL's default collations see it.
fn identity(m: &TcpRouteMapping) -> TcpIdentity {
    TcpIdentity::of(m, fold)
}

/// Mappings per multi-row insert: 14 parameters a row stays far below MySQL's 65,535.
const TCP_BATCH_CHUNK: usize = 500;
/// Identities per locking read. MariaDB turns an `IN` list of 1,000 values or more
/// (`in_predicate_conversion_threshold`) into a join that scans (and locks) the whole index;
/// 200 four-column tuples stay a range read of exactly the rows and gaps asked for.
const TCP_LOCK_CHUNK: usize = 200;

/// Upserts every mapping in one transaction ([`Server::upsert_tcp_batch`]; the caller
/// retries it whole after a write race or deadlock). Per chunk of [`TCP_BATCH_CHUNK`]: locking reads of the rows with the chunk's identities
/// (they also lock the index gaps where a missing one would go, which keeps concurrent
/// upserts from inserting a duplicate, as the module docs explain), then one multi-row
/// `INSERT … ON DUPLICATE KEY UPDATE` in which an existing mapping is written under its own
/// guid (the primary key makes it an update) and a new one under a fresh guid. The update
/// clause is the per-row upsert's: modification index + 1; ttl, expires_at, updated_at,
/// isolation_segment, instance_id replaced; upstream's `-1`/`''` normalised to NULL. The
/// stored state handed back is computed from the locked rows and the writes (the rows are
/// locked, so it is what the table holds), in input order, each entry as of its own write.
async fn upsert_tcp_batch(
    pool: &MySqlPool,
    writes: &[(&TcpRouteMapping, Write)],
) -> Result<Vec<(TcpRouteMapping, bool)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut out = Vec::with_capacity(writes.len());
    // identities written earlier in this batch: their guid and current state
    let mut state = TcpState::new();
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

/// One chunk of [`upsert_tcp_batch`]: appends each mapping's stored state and whether its
/// write created it to `out`.
async fn upsert_tcp_chunk(
    tx: &mut MySqlConnection,
    chunk: &[(&TcpRouteMapping, Write)],
    state: &mut TcpState,
    out: &mut Vec<(TcpRouteMapping, bool)>,
) -> Result<(), sqlx::Error> {
    // lock what this chunk may touch and is not already known from an earlier chunk
    let mut seen = HashSet::with_capacity(chunk.len());
    let to_lock: Vec<&TcpRouteMapping> = chunk
        .iter()
        .map(|(m, _)| *m)
        .filter(|m| !state.contains_key(&identity(m)))
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
        match state.entry(identity(&mapping)) {
            // A second row of an identity is a copy to merge away; the row an earlier chunk
            // of this batch wrote (same guid, found again through the coarser lock key) is
            // not.
            Entry::Occupied(e) if e.get().0 != guid => extra.push(guid),
            Entry::Occupied(_) => {}
            Entry::Vacant(v) => {
                v.insert((guid, mapping));
            }
        }
    }
    Mysql::delete_guids(tx, "tcp_routes", &extra).await?;

    let mut guids = Vec::with_capacity(chunk.len());
    for (m, w) in chunk {
        let (guid, stored, created) = apply_tcp_write(state, identity(m), m, w);
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
        q = Mysql::bind_tcp_insert(q, guid, m, &key, w);
    }
    q.execute(&mut *tx).await?;
    Ok(())
}

pub(super) async fn delete_tcp_routes(
    pool: &MySqlPool,
    mappings: &[TcpRouteMapping],
) -> Result<Vec<Option<TcpRouteMapping>>, StoreError> {
    // the locking read of each mapping's rows (every copy upstream may have left), oldest first
    let keyed: Vec<(&TcpRouteMapping, TcpKey<'_>, String)> = mappings
        .iter()
        .map(|m| {
            let key = TcpKey::of(m);
            let sql = format!(
                "SELECT {TCP_COLUMNS} FROM tcp_routes WHERE {} ORDER BY created_at, guid FOR UPDATE",
                tcp_identity_where(&key)
            );
            (m, key, sql)
        })
        .collect();
    let selects = || {
        keyed
            .iter()
            .map(|(m, key, sql)| Mysql::bind_tcp_identity(sqlx::query(sql), m, key))
            .collect::<Vec<_>>()
    };
    let deleted = retrying(Mysql::retryable, false, || {
        Mysql::delete_each(pool, "tcp_routes", selects())
    })
    .await?;
    deleted.iter().map(|rows| first_tcp_route(rows)).collect()
}
