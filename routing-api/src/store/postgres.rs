//! PostgreSQL backend (`sqldb.type: postgres`): upstream's tables as gorm creates them on
//! PostgreSQL (strings `text`, `uint16` ports `bigint`, `type:int` ports `integer`, Go `int`
//! `bigint`, times `timestamptz`), migrated to version 7 like MySQL, and the queries on them.
//!
//! PostgreSQL DDL is transactional, so [`migrate`] runs every step in one transaction,
//! serialised between migrators by a transaction-scoped advisory lock. HTTP upserts are
//! `INSERT … ON CONFLICT (idx_route's columns) DO UPDATE … RETURNING` (all `NOT NULL`, so the
//! index decides). `idx_tcp_route` holds `NULL`s, which a unique index does not compare, so a
//! TCP write first takes a transaction-scoped advisory lock per mapping identity (in a fixed
//! order); concurrent writers of one mapping queue there, and the second one finds and updates
//! the first one's row.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use routing_api_client::models::{HttpRoute, TcpRouteMapping};
use sqlx::postgres::{
    PgConnectOptions, PgConnection, PgPool, PgQueryResult, PgRow, PgSslMode, Postgres as PgDb,
};
use sqlx::Connection;
use time::OffsetDateTime;

use super::error::pg_retryable;
use super::shared::{
    apply_tcp_write, decode_err, numbered, retrying, server_pool_options, tcp_identity_where,
    Dialect, Server, TcpIdentity, TcpState, Tls, HTTP_IDENTITY_WHERE, TCP_INDEX_COLUMNS,
};
use super::{
    first_tcp_route, migration_err, tcp_row, StoreConfig, StoreError, TcpKey, TcpRow, Write,
};

/// Integer columns are selected as `bigint` (sqlx decodes `i64` only from `int8`).
const HTTP_COLUMNS: &str = "guid, route, port::bigint, ip, ttl::bigint, log_guid, \
     route_service_url, modification_guid, modification_index::bigint";
const TCP_COLUMNS: &str = "guid, router_group_guid, host_port::bigint, host_tls_port::bigint, \
     host_ip, sni_hostname, instance_id, external_port::bigint, modification_guid, \
     modification_index::bigint, ttl::bigint, isolation_segment";

/// Upstream's tables as gorm's PostgreSQL dialect creates them for the models (string → text,
/// uint16/uint32 → bigint, `type:int` with `size:32` → integer, int → bigint, time.Time →
/// timestamptz), in their version-7 form.
const CREATE_MIGRATION_DATA: &str = "CREATE TABLE IF NOT EXISTS migration_data (\
    migration_key text NOT NULL, \
    current_version bigint, \
    target_version bigint, \
    PRIMARY KEY (migration_key))";
const CREATE_ROUTER_GROUPS: &str = "CREATE TABLE IF NOT EXISTS router_groups (\
    guid text NOT NULL, \
    created_at timestamptz, \
    updated_at timestamptz, \
    name text, \
    type text, \
    reservable_ports text, \
    PRIMARY KEY (guid))";
const CREATE_ROUTES: &str = "CREATE TABLE IF NOT EXISTS routes (\
    guid text NOT NULL, \
    created_at timestamptz, \
    updated_at timestamptz, \
    expires_at timestamptz, \
    route text NOT NULL, \
    port bigint NOT NULL, \
    ip text NOT NULL, \
    ttl bigint, \
    log_guid text, \
    route_service_url text NOT NULL, \
    modification_guid text, \
    modification_index bigint, \
    PRIMARY KEY (guid))";
const CREATE_ROUTE_INDEX: &str = "CREATE UNIQUE INDEX IF NOT EXISTS idx_route ON routes \
    (route, port, ip, route_service_url)";
const CREATE_TCP_ROUTES: &str = "CREATE TABLE IF NOT EXISTS tcp_routes (\
    guid text NOT NULL, \
    created_at timestamptz, \
    updated_at timestamptz, \
    expires_at timestamptz, \
    router_group_guid text NOT NULL, \
    host_port integer NOT NULL, \
    host_tls_port bigint DEFAULT NULL, \
    host_ip text NOT NULL, \
    sni_hostname text DEFAULT NULL, \
    instance_id text DEFAULT NULL, \
    external_port integer NOT NULL, \
    modification_guid text, \
    modification_index bigint, \
    ttl bigint, \
    isolation_segment text, \
    PRIMARY KEY (guid))";

/// Our indexes beyond upstream's schema (pruner and lists), ensured by every [`migrate`].
pub(super) const EXPIRY_INDEXES: &[&str] = &[
    "CREATE INDEX IF NOT EXISTS idx_routes_expires_at ON routes (expires_at)",
    "CREATE INDEX IF NOT EXISTS idx_tcp_routes_expires_at ON tcp_routes (expires_at)",
];

/// First key of our advisory locks (`pg_advisory_xact_lock(class, key)`), so they cannot meet
/// another user's single-key locks in the same database. ("RAPI" in ASCII.)
const LOCK_CLASS: i32 = 0x5241_5049;
/// Second key of the migration lock.
const MIGRATION_LOCK: i32 = 0;

/// The PostgreSQL dialect: `timestamptz`, integers cast to `bigint`, `$n` placeholders.
pub(super) struct Postgres;

impl Dialect for Postgres {
    type Db = PgDb;
    type Time = OffsetDateTime;
    const HTTP_COLUMNS: &'static str = HTTP_COLUMNS;
    const TCP_COLUMNS: &'static str = TCP_COLUMNS;
    const SEGMENT_OR_EMPTY: &'static str = "COALESCE(isolation_segment, '')";
    const NUMBERED_PARAMETERS: bool = true;

    fn time(t: OffsetDateTime) -> OffsetDateTime {
        t
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }
}

/// PostgreSQL's transactions: READ COMMITTED, row locks and advisory locks; deadlock victims,
/// serialization failures and unique-violation races retried.
impl Server<PgDb> for Postgres {
    fn retryable(err: &sqlx::Error, duplicate_is_race: bool) -> bool {
        pg_retryable(err, duplicate_is_race)
    }

    const ROUTER_GROUPS_LOCKING: &'static str = "";
    /// A plain read: the router-group write lock, taken first, serialises seeders (a locking
    /// read of an empty table would lock nothing).
    const FIRST_ROUTER_GROUP: &'static str = "SELECT guid FROM router_groups LIMIT 1";
    const SEED_TAKES_WRITE_LOCK: bool = true;

    const READ_VERSIONS: &'static str =
        "SELECT current_version::bigint, target_version::bigint FROM migration_data \
         WHERE migration_key = ?";
    const INSERT_VERSIONS: &'static str =
        "INSERT INTO migration_data (migration_key, current_version, target_version) \
         VALUES (?, -1, ?) ON CONFLICT (migration_key) DO NOTHING";

    async fn migration_step(conn: &mut PgConnection, version: i64) -> Result<(), StoreError> {
        migration_step(conn, version).await
    }

    async fn upsert_tcp_batch(
        pool: &PgPool,
        writes: &[(&TcpRouteMapping, Write)],
    ) -> Result<Vec<(TcpRouteMapping, bool)>, sqlx::Error> {
        upsert_tcp_batch(pool, writes).await
    }

    /// Deletes are `WITH d AS (DELETE … RETURNING *) SELECT …`.
    const DELETES_RETURN_ROWS: bool = true;

    async fn delete_guids(
        conn: &mut PgConnection,
        table: &'static str,
        guids: &[String],
    ) -> Result<(), sqlx::Error> {
        if guids.is_empty() {
            return Ok(());
        }
        sqlx::query(&format!("DELETE FROM {table} WHERE guid = ANY($1)"))
            .bind(guids)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// One `DELETE … WHERE expires_at < cutoff RETURNING`: the rows handed back are exactly
    /// the rows deleted, and PostgreSQL re-checks the condition on a row a concurrent refresh
    /// has locked, so a refreshed row is not deleted.
    async fn prune_table(
        pool: &PgPool,
        table: &'static str,
        columns: &'static str,
        cutoff: OffsetDateTime,
    ) -> Result<Vec<PgRow>, sqlx::Error> {
        let sql = format!("DELETE FROM {table} WHERE expires_at < $1 RETURNING {columns}");
        sqlx::query(&sql).bind(cutoff).fetch_all(pool).await
    }
}

// ----- connecting -----

pub(super) async fn connect(cfg: &StoreConfig) -> Result<PgPool, StoreError> {
    pool(connect_options(cfg), cfg).await
}

/// The server, credentials and TLS settings of `cfg` (`sqldb.*`; `schema` is the database
/// name, as upstream). TLS as for MySQL: `ca_cert` gives verified TLS (`verify-full`, or
/// `verify-ca` with `skip_hostname_validation`), `skip_ssl_validation` TLS without checks,
/// neither no TLS (upstream's `sslmode=disable`).
pub(super) fn connect_options(cfg: &StoreConfig) -> PgConnectOptions {
    let mut opts = PgConnectOptions::new_without_pgpass()
        .host(&cfg.host)
        .port(cfg.port)
        .username(&cfg.username)
        .database(&cfg.schema)
        .application_name("routing-api");
    if !cfg.password.is_empty() {
        opts = opts.password(&cfg.password);
    }
    match Tls::of(cfg) {
        Tls::Unverified => opts.ssl_mode(PgSslMode::Require),
        Tls::Verified { ca, check_hostname } => {
            let mode = if check_hostname {
                PgSslMode::VerifyFull
            } else {
                PgSslMode::VerifyCa
            };
            opts.ssl_mode(mode)
                .ssl_root_cert_from_pem(ca.as_bytes().to_vec())
        }
        Tls::Off => opts.ssl_mode(PgSslMode::Disable),
    }
}

pub(super) async fn connect_url(url: &str, cfg: &StoreConfig) -> Result<PgPool, StoreError> {
    let opts = PgConnectOptions::from_str(url).map_err(StoreError::from)?;
    pool(opts, cfg).await
}

async fn pool(opts: PgConnectOptions, cfg: &StoreConfig) -> Result<PgPool, StoreError> {
    // The server gives up on a statement (e.g. one waiting for a lock, which PostgreSQL would
    // otherwise wait for forever) shortly after the store's own deadline has answered the
    // caller, so an abandoned call cannot keep its connection busy.
    let backstop = cfg.query_timeout + Duration::from_secs(5);
    let opts = opts.options([(
        "statement_timeout",
        format!("{}ms", backstop.as_millis().min(i32::MAX as u128)),
    )]);
    server_pool_options::<PgDb>(cfg)
        .connect_with(opts)
        .await
        .map_err(StoreError::from)
}

// ----- migrations -----

pub(super) async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await?.detach();
    let result = migrate_on(&mut conn).await;
    let _ = conn.close().await;
    result
}

async fn migrate_on(conn: &mut PgConnection) -> Result<(), StoreError> {
    let mut tx = conn.begin().await?;
    // DDL on a large table may outlast the per-statement backstop; the caller bounds the call.
    sqlx::query("SET LOCAL statement_timeout = 0")
        .execute(&mut *tx)
        .await
        .map_err(migration_err("set statement_timeout"))?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(LOCK_CLASS)
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(migration_err("take the migration lock"))?;
    sqlx::query(CREATE_MIGRATION_DATA)
        .execute(&mut *tx)
        .await
        .map_err(migration_err("create migration_data"))?;
    Postgres::run_migrations(&mut tx).await?;
    for ddl in EXPIRY_INDEXES {
        Postgres::exec(&mut tx, ddl).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Upstream's migration `version`, written so that it also completes a schema left by any
/// older upstream version (`IF NOT EXISTS` everywhere; re-running is a no-op).
async fn migration_step(conn: &mut PgConnection, version: i64) -> Result<(), StoreError> {
    match version {
        // V0: the tables (created directly in their final, v7 form)
        0 => {
            for ddl in [
                CREATE_ROUTER_GROUPS,
                CREATE_TCP_ROUTES,
                CREATE_ROUTES,
                CREATE_ROUTE_INDEX,
            ] {
                Postgres::exec(conn, ddl).await?;
            }
        }
        // V1 copied data out of etcd: nothing to do
        1 => {}
        // V2: unique router group names
        2 => {
            Postgres::exec(
                conn,
                "CREATE UNIQUE INDEX IF NOT EXISTS idx_rg_name ON router_groups (name)",
            )
            .await?
        }
        // V3: isolation segments
        3 => {
            Postgres::exec(
                conn,
                "ALTER TABLE tcp_routes ADD COLUMN IF NOT EXISTS isolation_segment text",
            )
            .await?
        }
        // V4: idx_tcp_route gains router_group_guid (its final form is built by V7)
        4 => {}
        // V5: SNI hostname
        5 => {
            Postgres::exec(
                conn,
                "ALTER TABLE tcp_routes ADD COLUMN IF NOT EXISTS sni_hostname text DEFAULT NULL",
            )
            .await?
        }
        // V6: backend TLS port
        6 => {
            Postgres::exec(
                conn,
                "ALTER TABLE tcp_routes ADD COLUMN IF NOT EXISTS host_tls_port bigint DEFAULT NULL",
            )
            .await?
        }
        // V7: nullable instance_id, and the final idx_tcp_route
        7 => {
            Postgres::exec(
                conn,
                "ALTER TABLE tcp_routes ADD COLUMN IF NOT EXISTS instance_id text DEFAULT NULL",
            )
            .await?;
            Postgres::exec(
                conn,
                "ALTER TABLE tcp_routes ALTER COLUMN instance_id DROP NOT NULL, \
                 ALTER COLUMN instance_id SET DEFAULT NULL",
            )
            .await?;
            let cols = index_columns(conn, "tcp_routes", "idx_tcp_route").await?;
            if cols != TCP_INDEX_COLUMNS {
                Postgres::exec(conn, "DROP INDEX IF EXISTS idx_tcp_route").await?;
                Postgres::exec(
                    conn,
                    "CREATE UNIQUE INDEX idx_tcp_route ON tcp_routes (router_group_guid, \
                     host_port, host_ip, external_port, sni_hostname, host_tls_port)",
                )
                .await?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The columns of `index` on `table` (in the current schema), in index order; empty if there
/// is no such index.
async fn index_columns(
    conn: &mut PgConnection,
    table: &str,
    index: &str,
) -> Result<Vec<String>, StoreError> {
    sqlx::query_scalar::<_, String>(
        "SELECT a.attname::text FROM pg_index i \
         JOIN pg_class ic ON ic.oid = i.indexrelid \
         JOIN pg_class t ON t.oid = i.indrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum \
         WHERE n.nspname = current_schema() AND t.relname = $1 AND ic.relname = $2 \
         ORDER BY k.ord",
    )
    .bind(table)
    .bind(index)
    .fetch_all(conn)
    .await
    .map_err(migration_err("read pg_index"))
}

// ----- HTTP routes -----

/// Upserts every route in one transaction, one `INSERT … ON CONFLICT … RETURNING` each:
/// `idx_route`'s columns are all `NOT NULL`, so PostgreSQL's conflict handling alone makes
/// concurrent upserts of one route update a single row.
pub(super) async fn upsert_http_routes(
    pool: &PgPool,
    writes: &[(&HttpRoute, Write)],
) -> Result<Vec<(HttpRoute, bool)>, StoreError> {
    let sql = numbered(&format!(
        "INSERT INTO routes (guid, created_at, updated_at, expires_at, route, port, ip, ttl, \
         log_guid, route_service_url, modification_guid, modification_index) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0) \
         ON CONFLICT (route, port, ip, route_service_url) DO UPDATE SET \
         modification_index = COALESCE(routes.modification_index, 0) + 1, \
         ttl = excluded.ttl, \
         log_guid = CASE WHEN excluded.log_guid = '' THEN routes.log_guid ELSE excluded.log_guid END, \
         expires_at = excluded.expires_at, \
         updated_at = excluded.updated_at \
         RETURNING {HTTP_COLUMNS}"
    ));
    Postgres::upsert_http_routes(pool, writes, &sql, None).await
}

pub(super) async fn delete_http_routes(
    pool: &PgPool,
    routes: &[HttpRoute],
) -> Result<Vec<Option<HttpRoute>>, StoreError> {
    let sql = numbered(&format!(
        "WITH d AS (DELETE FROM routes WHERE {HTTP_IDENTITY_WHERE} RETURNING *) \
         SELECT {HTTP_COLUMNS} FROM d ORDER BY created_at, guid"
    ));
    Postgres::delete_http_routes(pool, routes, &sql).await
}

// ----- TCP routes -----

/// A mapping's identity as PostgreSQL compares it (exact text), "no TLS port" and "no SNI"
/// each one value.
fn identity(m: &TcpRouteMapping) -> TcpIdentity {
    TcpIdentity::of(m, str::to_owned)
}

impl TcpIdentity {
    /// The advisory-lock key text (fields joined by U+0001, which no field holds in practice;
    /// a collision would only make two mappings queue for each other).
    fn lock_key(&self) -> String {
        format!(
            "{}\u{1}{}\u{1}{}\u{1}{}\u{1}{}\u{1}{}",
            self.router_group_guid,
            self.host_ip,
            self.host_port,
            self.external_port,
            self.tls_port.unwrap_or(0),
            self.sni.as_deref().unwrap_or("")
        )
    }
}

/// Takes the advisory lock of each identity for this transaction, in one fixed (sorted) order
/// so that two batches cannot deadlock on each other.
async fn lock_identities(
    tx: &mut PgConnection,
    ids: impl Iterator<Item = TcpIdentity>,
) -> Result<(), sqlx::Error> {
    let mut keys: Vec<String> = ids.map(|id| id.lock_key()).collect();
    keys.sort_unstable();
    keys.dedup();
    for chunk in keys.chunks(1000) {
        sqlx::query(
            "SELECT pg_advisory_xact_lock($1, hashtext(k)) \
             FROM (SELECT k FROM unnest($2::text[]) AS u(k) ORDER BY k) AS s",
        )
        .bind(LOCK_CLASS)
        .bind(chunk)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Mappings per multi-row write.
const TCP_BATCH_CHUNK: usize = 500;

/// Upserts every mapping in one transaction ([`Server::upsert_tcp_batch`]; the caller
/// retries it whole after a deadlock). It takes the
/// advisory lock of every identity in the batch, reads (and row-locks) the rows sharing their
/// leading index columns, merges duplicates upstream may have left into the oldest row, and
/// writes each touched row once per chunk with one `INSERT … SELECT unnest(…) ON CONFLICT
/// (guid) DO UPDATE`: an existing mapping under its own guid (an update), a new one under a
/// fresh guid. The states handed back are computed from the locked rows and the writes, in
/// input order, each entry as of its own write.
async fn upsert_tcp_batch(
    pool: &PgPool,
    writes: &[(&TcpRouteMapping, Write)],
) -> Result<Vec<(TcpRouteMapping, bool)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    lock_identities(&mut tx, writes.iter().map(|(m, _)| identity(m))).await?;
    // existing rows of every identity in the batch, oldest first
    let mut state = TcpState::new();
    let mut extra = Vec::new();
    for chunk in writes.chunks(TCP_BATCH_CHUNK) {
        let rows = select_tcp_rows(&mut tx, chunk.iter().map(|(m, _)| *m)).await?;
        for row in &rows {
            let TcpRow { guid, mapping } = tcp_row(row).map_err(decode_err)?;
            match state.entry(identity(&mapping)) {
                Entry::Occupied(e) if e.get().0 != guid => extra.push(guid),
                Entry::Occupied(_) => {}
                Entry::Vacant(v) => {
                    v.insert((guid, mapping));
                }
            }
        }
    }
    Postgres::delete_guids(&mut tx, "tcp_routes", &extra).await?;

    let mut out = Vec::with_capacity(writes.len());
    for chunk in writes.chunks(TCP_BATCH_CHUNK) {
        // per guid: the row as this chunk leaves it (written once), its write times
        let mut touched: Vec<String> = Vec::new();
        let mut rows: HashMap<String, (TcpRouteMapping, &Write, bool)> = HashMap::new();
        for (m, w) in chunk {
            let (guid, stored, created) = apply_tcp_write(&mut state, identity(m), m, w);
            match rows.entry(guid.clone()) {
                Entry::Occupied(mut e) => {
                    let created_before = e.get().2;
                    e.insert((stored.clone(), w, created_before));
                }
                Entry::Vacant(v) => {
                    touched.push(guid);
                    v.insert((stored.clone(), w, created));
                }
            }
            out.push((stored, created));
        }
        write_tcp_rows(&mut tx, &touched, &rows).await?;
    }
    tx.commit().await?;
    Ok(out)
}

/// Row-locks and reads the rows sharing the leading `idx_tcp_route` columns with one of
/// `mappings` (duplicates upstream left included), oldest first.
async fn select_tcp_rows<'a>(
    tx: &mut PgConnection,
    mappings: impl Iterator<Item = &'a TcpRouteMapping>,
) -> Result<Vec<PgRow>, sqlx::Error> {
    let (mut rg, mut ip, mut hp, mut ep) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for m in mappings {
        rg.push(m.router_group_guid.as_str());
        ip.push(m.backend_ip.as_str());
        hp.push(i32::from(m.backend_port));
        ep.push(i32::from(m.port));
    }
    let sql = format!(
        "SELECT {TCP_COLUMNS} FROM tcp_routes \
         WHERE (router_group_guid, host_ip, host_port, external_port) IN \
         (SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::int4[])) \
         ORDER BY created_at, guid FOR UPDATE"
    );
    sqlx::query(&sql)
        .bind(rg)
        .bind(ip)
        .bind(hp)
        .bind(ep)
        .fetch_all(&mut *tx)
        .await
}

/// Writes each of `guids` with its state in `rows`: inserted if new, otherwise updated in
/// place (upstream's `-1`/`''` normalised to `NULL`, `created_at` kept).
async fn write_tcp_rows(
    tx: &mut PgConnection,
    guids: &[String],
    rows: &HashMap<String, (TcpRouteMapping, &Write, bool)>,
) -> Result<(), sqlx::Error> {
    let n = guids.len();
    let mut now = Vec::with_capacity(n);
    let mut expires = Vec::with_capacity(n);
    let mut rg = Vec::with_capacity(n);
    let mut host_port = Vec::with_capacity(n);
    let mut tls = Vec::with_capacity(n);
    let mut ip = Vec::with_capacity(n);
    let mut sni = Vec::with_capacity(n);
    let mut instance = Vec::with_capacity(n);
    let mut ext = Vec::with_capacity(n);
    let mut mod_guid = Vec::with_capacity(n);
    let mut mod_index = Vec::with_capacity(n);
    let mut ttl = Vec::with_capacity(n);
    let mut segment = Vec::with_capacity(n);
    for guid in guids {
        let Some((m, w, _)) = rows.get(guid) else {
            continue;
        };
        now.push(w.now);
        expires.push(w.expires_at);
        rg.push(m.router_group_guid.clone());
        host_port.push(i32::from(m.backend_port));
        tls.push((m.backend_tls_port > 0).then_some(i64::from(m.backend_tls_port)));
        ip.push(m.backend_ip.clone());
        sni.push(m.backend_sni_hostname.clone().filter(|s| !s.is_empty()));
        instance.push((!m.instance_id.is_empty()).then(|| m.instance_id.clone()));
        ext.push(i32::from(m.port));
        mod_guid.push(m.modification_tag.guid.clone());
        mod_index.push(i64::from(m.modification_tag.index));
        ttl.push(m.ttl.unwrap_or(0));
        segment.push(m.isolation_segment.clone());
    }
    sqlx::query(
        "INSERT INTO tcp_routes (guid, created_at, updated_at, expires_at, router_group_guid, \
         host_port, host_tls_port, host_ip, sni_hostname, instance_id, external_port, \
         modification_guid, modification_index, ttl, isolation_segment) \
         SELECT g, t, t, e, rg, hp, tls, ip, sni, inst, ep, mg, mi, ttl, seg FROM unnest(\
         $1::text[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::int4[], \
         $6::int8[], $7::text[], $8::text[], $9::text[], $10::int4[], $11::text[], $12::int8[], \
         $13::int8[], $14::text[]) AS u(g, t, e, rg, hp, tls, ip, sni, inst, ep, mg, mi, ttl, seg) \
         ON CONFLICT (guid) DO UPDATE SET \
         modification_index = excluded.modification_index, ttl = excluded.ttl, \
         expires_at = excluded.expires_at, updated_at = excluded.updated_at, \
         isolation_segment = excluded.isolation_segment, instance_id = excluded.instance_id, \
         host_tls_port = excluded.host_tls_port, sni_hostname = excluded.sni_hostname",
    )
    .bind(guids)
    .bind(now)
    .bind(expires)
    .bind(rg)
    .bind(host_port)
    .bind(tls)
    .bind(ip)
    .bind(sni)
    .bind(instance)
    .bind(ext)
    .bind(mod_guid)
    .bind(mod_index)
    .bind(ttl)
    .bind(segment)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub(super) async fn delete_tcp_routes(
    pool: &PgPool,
    mappings: &[TcpRouteMapping],
) -> Result<Vec<Option<TcpRouteMapping>>, StoreError> {
    let deleted = retrying(Postgres::retryable, false, || async {
        let mut tx = pool.begin().await?;
        // queue behind a concurrent upsert of the same mapping (see the module docs)
        lock_identities(&mut tx, mappings.iter().map(identity)).await?;
        let mut out = Vec::with_capacity(mappings.len());
        for m in mappings {
            let key = TcpKey::of(m);
            let sql = numbered(&format!(
                "WITH d AS (DELETE FROM tcp_routes WHERE {} RETURNING *) \
                 SELECT {TCP_COLUMNS} FROM d ORDER BY created_at, guid",
                tcp_identity_where(&key)
            ));
            let query = Postgres::bind_tcp_identity(sqlx::query(&sql), m, &key);
            out.push(query.fetch_all(&mut *tx).await?);
        }
        tx.commit().await?;
        Ok(out)
    })
    .await?;
    deleted.iter().map(|rows| first_tcp_route(rows)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order() {
        assert_eq!(
            numbered("a = ? AND b IN (?, ?)"),
            "a = $1 AND b IN ($2, $3)"
        );
    }

    #[test]
    fn connect_options_follow_the_sqldb_keys() {
        let cfg = StoreConfig {
            host: "db.example.com".into(),
            port: 5433,
            schema: "routing_api".into(),
            username: "u".into(),
            ..StoreConfig::default()
        };
        let o = connect_options(&cfg);
        assert_eq!(o.get_host(), "db.example.com");
        assert_eq!(o.get_port(), 5433);
        assert_eq!(o.get_database(), Some("routing_api"));
        assert_eq!(o.get_username(), "u");
        assert!(matches!(o.get_ssl_mode(), PgSslMode::Disable));
        let skip = StoreConfig {
            skip_ssl_validation: true,
            ..cfg.clone()
        };
        assert!(matches!(
            connect_options(&skip).get_ssl_mode(),
            PgSslMode::Require
        ));
        let ca = StoreConfig {
            ca_cert: Some("-----BEGIN CERTIFICATE-----\n".into()),
            ..cfg.clone()
        };
        assert!(matches!(
            connect_options(&ca).get_ssl_mode(),
            PgSslMode::VerifyFull
        ));
        let ca_no_host = StoreConfig {
            skip_hostname_validation: true,
            ..ca
        };
        assert!(matches!(
            connect_options(&ca_no_host).get_ssl_mode(),
            PgSslMode::VerifyCa
        ));
    }
}
