//! What the MySQL, PostgreSQL and SQLite backends do with the same SQL, written once over
//! sqlx's [`Database`]. A backend implements [`Dialect`] with what differs: its sqlx database,
//! how it stores a timestamp, its select lists, its parameter placeholders and the few SQL
//! fragments spelled differently. MySQL and PostgreSQL (client/server databases with many
//! writers) also implement [`Server`]: which errors mean a lost write race, how they lock and
//! delete, and their migration steps; the transactions both run the same way (router-group
//! writes, HTTP upserts, deletes, expiry, the numbered migrations) are [`Dialect`]'s methods
//! that ask for [`Server`]. Upserts of TCP mappings, locking strategies and everything else
//! whose SQL differs stay in `mysql.rs` / `postgres.rs` / `sqlite.rs`; they use the helpers
//! here so that each column list is bound, and each piece of batch bookkeeping written, in one
//! place.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use routing_api_client::models::{HttpRoute, ModificationTag, RouterGroup, TcpRouteMapping};
use sqlx::pool::PoolOptions;
use sqlx::query::Query;
use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Type};
use time::OffsetDateTime;

use super::{
    first_http_route, http_routes_of, http_row, migration_err, non_empty, placeholders,
    router_group_duplicate, router_group_row, tcp_routes_of, GroupCheck, HttpRow, RowGet,
    StoreConfig, StoreError, TcpKey, Write, IDLE_TIMEOUT, MIGRATION_KEY, SCHEMA_VERSION,
};

/// A query on `DB` with `DB`'s own arguments (what `sqlx::query` returns).
pub(crate) type Q<'q, DB> = Query<'q, DB, <DB as Database>::Arguments<'q>>;

/// `router_groups` columns, in [`router_group_row`]'s order (the same on both backends).
pub(crate) const RG_COLUMNS: &str = "guid, name, type, reservable_ports";

/// An HTTP route's identity, bound by [`Dialect::bind_http_identity`].
pub(crate) const HTTP_IDENTITY_WHERE: &str =
    "route = ? AND port = ? AND ip = ? AND route_service_url = ?";

/// `idx_tcp_route`'s columns in upstream's version-7 schema (MySQL and PostgreSQL).
pub(crate) const TCP_INDEX_COLUMNS: &[&str] = &[
    "router_group_guid",
    "host_port",
    "host_ip",
    "external_port",
    "sni_hostname",
    "host_tls_port",
];

/// One backend's SQL dialect, and the queries the backends share (the provided methods; those
/// that ask for `Self: Server<Self::Db>` are MySQL's and PostgreSQL's only).
/// The `where` clauses are what sqlx needs to run them; `MySql`, `Postgres` and `Sqlite` meet
/// them all.
pub(crate) trait Dialect
where
    for<'c> &'c mut <Self::Db as Database>::Connection: Executor<'c, Database = Self::Db>,
    for<'q> <Self::Db as Database>::Arguments<'q>: IntoArguments<'q, Self::Db>,
    for<'q> &'q str: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> Option<&'q str>: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> i32: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> i64: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> Option<i32>: Encode<'q, Self::Db> + Type<Self::Db>,
    <Self::Db as Database>::Row: RowGet,
{
    type Db: Database;
    /// A timestamp as the backend stores it.
    type Time: for<'q> Encode<'q, Self::Db> + Type<Self::Db> + Send + 'static;

    /// `routes` columns in `http_row`'s order, as the backend selects them.
    const HTTP_COLUMNS: &'static str;
    /// `tcp_routes` columns in `tcp_row`'s order, as the backend selects them.
    const TCP_COLUMNS: &'static str;
    /// A mapping's isolation segment with `NULL` as `''`, for the segment filter.
    const SEGMENT_OR_EMPTY: &'static str;

    /// `t` as the backend stores it (UTC).
    fn time(t: OffsetDateTime) -> Self::Time;

    /// How many rows a statement changed (sqlx has no trait for it).
    fn rows_affected(done: &<Self::Db as Database>::QueryResult) -> u64;

    /// Whether parameters are numbered (`$1, $2, …`, PostgreSQL) rather than `?`.
    const NUMBERED_PARAMETERS: bool = false;

    /// `sql` (written with `?` placeholders) in the backend's placeholder style.
    fn sql(sql: &str) -> Cow<'_, str> {
        if Self::NUMBERED_PARAMETERS {
            Cow::Owned(numbered(sql))
        } else {
            Cow::Borrowed(sql)
        }
    }

    // ----- binding -----

    /// Binds [`HTTP_IDENTITY_WHERE`]'s parameters.
    fn bind_http_identity<'q>(q: Q<'q, Self::Db>, route: &'q HttpRoute) -> Q<'q, Self::Db> {
        q.bind(route.route.as_str())
            .bind(i64::from(route.port))
            .bind(route.ip.as_str())
            .bind(route.route_service_url.as_str())
    }

    /// Binds [`tcp_identity_where`]'s parameters: the ports as 32-bit and the TLS port as
    /// 64-bit integers, as PostgreSQL types those columns (`integer`, `bigint`; MySQL compares
    /// any integer alike).
    fn bind_tcp_identity<'q>(
        q: Q<'q, Self::Db>,
        m: &'q TcpRouteMapping,
        key: &TcpKey<'q>,
    ) -> Q<'q, Self::Db> {
        let mut q = q
            .bind(m.router_group_guid.as_str())
            .bind(m.backend_ip.as_str())
            .bind(i32::from(m.backend_port))
            .bind(i32::from(m.port));
        if let Some(p) = key.tls_port {
            q = q.bind(i64::from(p));
        }
        if let Some(s) = key.sni {
            q = q.bind(s);
        }
        q
    }

    /// Binds the values of an HTTP route upsert's `INSERT INTO routes (guid, created_at,
    /// updated_at, expires_at, route, port, ip, ttl, log_guid, route_service_url,
    /// modification_guid, modification_index) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)`.
    fn bind_http_insert<'q>(
        q: Q<'q, Self::Db>,
        route: &'q HttpRoute,
        w: &'q Write,
    ) -> Q<'q, Self::Db> {
        Self::bind_write_times(q.bind(w.new_guid.as_str()), w)
            .bind(route.route.as_str())
            .bind(i64::from(route.port))
            .bind(route.ip.as_str())
            .bind(w.ttl_secs)
            .bind(route.log_guid.as_str())
            .bind(route.route_service_url.as_str())
            .bind(w.new_modification_guid.as_str())
    }

    /// Binds the values of a TCP mapping insert's `INSERT INTO tcp_routes (guid, created_at,
    /// updated_at, expires_at, router_group_guid, host_port, host_tls_port, host_ip,
    /// sni_hostname, instance_id, external_port, modification_guid, modification_index, ttl,
    /// isolation_segment) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)`, the row written
    /// under `guid` (the write's new guid, or the existing row's).
    fn bind_tcp_insert<'q>(
        q: Q<'q, Self::Db>,
        guid: &'q str,
        m: &'q TcpRouteMapping,
        key: &TcpKey<'q>,
        w: &'q Write,
    ) -> Q<'q, Self::Db> {
        Self::bind_write_times(q.bind(guid), w)
            .bind(m.router_group_guid.as_str())
            .bind(i64::from(m.backend_port))
            .bind(key.tls_port)
            .bind(m.backend_ip.as_str())
            .bind(key.sni)
            .bind(non_empty(&m.instance_id))
            .bind(i64::from(m.port))
            .bind(w.new_modification_guid.as_str())
            .bind(w.ttl_secs)
            .bind(m.isolation_segment.as_str())
    }

    /// Binds each of `values` (an `IN (?, …)` list).
    fn bind_all<'q>(mut q: Q<'q, Self::Db>, values: &'q [String]) -> Q<'q, Self::Db> {
        for v in values {
            q = q.bind(v.as_str());
        }
        q
    }

    /// Binds `created_at, updated_at, expires_at` of a new row.
    fn bind_write_times<'q>(q: Q<'q, Self::Db>, w: &Write) -> Q<'q, Self::Db> {
        q.bind(Self::time(w.now))
            .bind(Self::time(w.now))
            .bind(Self::time(w.expires_at))
    }

    // ----- migrations -----

    /// Runs a migration statement; a failure names it.
    async fn exec(
        conn: &mut <Self::Db as Database>::Connection,
        sql: &'static str,
    ) -> Result<(), StoreError> {
        sqlx::query(sql)
            .execute(conn)
            .await
            .map_err(migration_err(sql))?;
        Ok(())
    }

    /// Brings a MySQL or PostgreSQL schema to [`SCHEMA_VERSION`] as upstream's migrations do:
    /// `migration_data` says which version it is at (a missing row is a fresh database, at
    /// -1), each later step runs ([`Server::migration_step`]) and is recorded. A schema at
    /// [`SCHEMA_VERSION`] or later (ours or upstream's) is left alone.
    async fn run_migrations(conn: &mut <Self::Db as Database>::Connection) -> Result<(), StoreError>
    where
        Self: Server<Self::Db>,
    {
        let existing = sqlx::query(&Self::sql(Self::READ_VERSIONS))
            .bind(MIGRATION_KEY)
            .fetch_optional(&mut *conn)
            .await
            .map_err(migration_err("read migration_data"))?;
        let current = match existing {
            None => {
                sqlx::query(&Self::sql(Self::INSERT_VERSIONS))
                    .bind(MIGRATION_KEY)
                    .bind(SCHEMA_VERSION)
                    .execute(&mut *conn)
                    .await
                    .map_err(migration_err("insert migration_data"))?;
                -1
            }
            Some(row) => {
                let versions = row.int(0).and_then(|c| Ok((c, row.int(1)?)));
                let (current, target) = versions.map_err(migration_err("read migration_data"))?;
                let current = current.unwrap_or(-1);
                if current >= SCHEMA_VERSION {
                    // ours or upstream's, at v7 or later: leave it alone
                    return Ok(());
                }
                if target.unwrap_or(-1) < SCHEMA_VERSION {
                    sqlx::query(&Self::sql(
                        "UPDATE migration_data SET target_version = ? WHERE migration_key = ?",
                    ))
                    .bind(SCHEMA_VERSION)
                    .bind(MIGRATION_KEY)
                    .execute(&mut *conn)
                    .await
                    .map_err(migration_err("update migration_data"))?;
                }
                current
            }
        };
        let record =
            Self::sql("UPDATE migration_data SET current_version = ? WHERE migration_key = ?");
        for version in (current + 1).max(0)..=SCHEMA_VERSION {
            Self::migration_step(conn, version).await?;
            sqlx::query(&record)
                .bind(version)
                .bind(MIGRATION_KEY)
                .execute(&mut *conn)
                .await
                .map_err(migration_err("update migration_data"))?;
            tracing::info!(version, "routing-api schema migration applied");
        }
        Ok(())
    }

    // ----- router groups -----

    /// All router groups, or those whose `column` is `value`, oldest first.
    async fn router_groups(
        pool: &Pool<Self::Db>,
        filter: Option<(&'static str, &str)>,
    ) -> Result<Vec<RouterGroup>, StoreError> {
        let rows = match filter {
            Some((column, value)) => {
                let sql = format!("SELECT {RG_COLUMNS} FROM router_groups WHERE {column} = ? ORDER BY created_at, guid");
                sqlx::query(&Self::sql(&sql))
                    .bind(value)
                    .fetch_all(pool)
                    .await?
            }
            None => {
                let sql =
                    format!("SELECT {RG_COLUMNS} FROM router_groups ORDER BY created_at, guid");
                sqlx::query(&sql).fetch_all(pool).await?
            }
        };
        rows.iter().map(router_group_row).collect()
    }

    /// Inserts `groups` in the caller's transaction, unless `only_if_empty` and `first_guid`
    /// (the backend's read of any one `router_groups` guid) finds a row; returns how many it
    /// inserted.
    async fn insert_router_groups_in(
        tx: &mut <Self::Db as Database>::Connection,
        groups: &[RouterGroup],
        now: OffsetDateTime,
        only_if_empty: bool,
        first_guid: &'static str,
    ) -> Result<usize, sqlx::Error> {
        if only_if_empty {
            let any = sqlx::query(&Self::sql(first_guid))
                .fetch_optional(&mut *tx)
                .await?;
            if any.is_some() {
                return Ok(0);
            }
        }
        let insert = Self::sql(
            "INSERT INTO router_groups (guid, created_at, updated_at, name, type, reservable_ports) \
             VALUES (?, ?, ?, ?, ?, ?)",
        );
        for g in groups {
            sqlx::query(&insert)
                .bind(g.guid.as_str())
                .bind(Self::time(now))
                .bind(Self::time(now))
                .bind(g.name.as_str())
                .bind(g.kind.as_str())
                .bind(g.reservable_ports.as_str())
                .execute(&mut *tx)
                .await?;
        }
        Ok(groups.len())
    }

    /// Deletes a router group; returns whether it existed.
    async fn delete_router_group(pool: &Pool<Self::Db>, guid: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(&Self::sql("DELETE FROM router_groups WHERE guid = ?"))
            .bind(guid)
            .execute(pool)
            .await?;
        Ok(Self::rows_affected(&done) > 0)
    }

    /// Takes the router-group write lock of this transaction: a locking read of the
    /// `migration_data` row, present in every migrated database, ours or upstream's.
    /// Router-group creates and updates (and PostgreSQL's seeds) hold it until they commit.
    async fn lock_router_group_writes(
        tx: &mut <Self::Db as Database>::Connection,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(&Self::sql(
            "SELECT migration_key FROM migration_data WHERE migration_key = ? FOR UPDATE",
        ))
        .bind(MIGRATION_KEY)
        .fetch_optional(&mut *tx)
        .await?;
        Ok(())
    }

    /// Takes the router-group write lock and reads every group, latest committed state (MySQL
    /// reads it with a locking read; PostgreSQL, in READ COMMITTED, sees in every statement
    /// after the lock what the previous holder committed). The groups a write is checked
    /// against are therefore the groups it commits beside.
    async fn locked_router_groups(
        tx: &mut <Self::Db as Database>::Connection,
    ) -> Result<Vec<RouterGroup>, sqlx::Error>
    where
        Self: Server<Self::Db>,
    {
        Self::lock_router_group_writes(&mut *tx).await?;
        let sql = format!(
            "SELECT {RG_COLUMNS} FROM router_groups ORDER BY created_at, guid{}",
            Self::ROUTER_GROUPS_LOCKING
        );
        let rows = sqlx::query(&sql).fetch_all(&mut *tx).await?;
        rows.iter()
            .map(|r| router_group_row(r).map_err(decode_err))
            .collect()
    }

    /// Inserts `groups` in one transaction (retried after a write race), unless
    /// `only_if_empty` and a router group exists; returns how many it inserted.
    async fn insert_router_groups(
        pool: &Pool<Self::Db>,
        groups: &[RouterGroup],
        now: OffsetDateTime,
        only_if_empty: bool,
    ) -> Result<usize, StoreError>
    where
        Self: Server<Self::Db>,
    {
        let result = retrying(Self::retryable, false, || {
            Self::insert_router_groups_once(pool, groups, now, only_if_empty)
        })
        .await;
        result.map_err(|e| router_group_duplicate(e, groups))
    }

    /// One attempt of [`Dialect::insert_router_groups`].
    async fn insert_router_groups_once(
        pool: &Pool<Self::Db>,
        groups: &[RouterGroup],
        now: OffsetDateTime,
        only_if_empty: bool,
    ) -> Result<usize, sqlx::Error>
    where
        Self: Server<Self::Db>,
    {
        let mut tx = pool.begin().await?;
        if Self::SEED_TAKES_WRITE_LOCK {
            Self::lock_router_group_writes(&mut tx).await?;
        }
        let first = Self::FIRST_ROUTER_GROUP;
        let n = Self::insert_router_groups_in(&mut tx, groups, now, only_if_empty, first).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Inserts `group` if `check` accepts all groups with it, in one transaction holding the
    /// router-group write lock (retried after a write race). A refused check writes nothing
    /// ([`StoreError::Rejected`]).
    async fn create_router_group(
        pool: &Pool<Self::Db>,
        group: &RouterGroup,
        now: OffsetDateTime,
        check: GroupCheck<'_>,
    ) -> Result<(), StoreError>
    where
        Self: Server<Self::Db>,
    {
        let outcome = retrying(Self::retryable, false, || {
            Self::create_router_group_once(pool, group, now, check)
        })
        .await
        .map_err(|e| router_group_duplicate(e, std::slice::from_ref(group)))?;
        outcome.map_err(StoreError::Rejected)
    }

    /// One attempt of [`Dialect::create_router_group`]. `Ok(Err(message))`: `check` refused;
    /// the transaction is dropped, i.e. rolled back.
    async fn create_router_group_once(
        pool: &Pool<Self::Db>,
        group: &RouterGroup,
        now: OffsetDateTime,
        check: GroupCheck<'_>,
    ) -> Result<Result<(), String>, sqlx::Error>
    where
        Self: Server<Self::Db>,
    {
        let mut tx = pool.begin().await?;
        let mut all = Self::locked_router_groups(&mut tx).await?;
        all.push(group.clone());
        if let Err(message) = check(&all) {
            return Ok(Err(message));
        }
        Self::insert_router_groups_in(&mut tx, std::slice::from_ref(group), now, false, "").await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Sets the `reservable_ports` of the group with `guid` (as [`Server::same_guid`] compares
    /// it) if `check` accepts all groups so changed, in one transaction holding the
    /// router-group write lock (retried after a write race); `None` if there is no such group.
    async fn update_router_group_ports(
        pool: &Pool<Self::Db>,
        guid: &str,
        ports: &str,
        now: OffsetDateTime,
        check: GroupCheck<'_>,
    ) -> Result<Option<RouterGroup>, StoreError>
    where
        Self: Server<Self::Db>,
    {
        retrying(Self::retryable, false, || {
            Self::update_router_group_ports_once(pool, guid, ports, now, check)
        })
        .await?
        .map_err(StoreError::Rejected)
    }

    /// One attempt of [`Dialect::update_router_group_ports`]; `Ok(Err(message))` as in
    /// [`Dialect::create_router_group_once`].
    async fn update_router_group_ports_once(
        pool: &Pool<Self::Db>,
        guid: &str,
        ports: &str,
        now: OffsetDateTime,
        check: GroupCheck<'_>,
    ) -> Result<Result<Option<RouterGroup>, String>, sqlx::Error>
    where
        Self: Server<Self::Db>,
    {
        let mut tx = pool.begin().await?;
        let mut all = Self::locked_router_groups(&mut tx).await?;
        let Some(group) = all.iter_mut().find(|g| Self::same_guid(&g.guid, guid)) else {
            return Ok(Ok(None));
        };
        group.reservable_ports = ports.to_owned();
        let updated = group.clone();
        if let Err(message) = check(&all) {
            return Ok(Err(message));
        }
        let sql = Self::sql(
            "UPDATE router_groups SET reservable_ports = ?, updated_at = ? WHERE guid = ?",
        );
        sqlx::query(&sql)
            .bind(ports)
            .bind(Self::time(now))
            .bind(updated.guid.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Ok(Some(updated)))
    }

    // ----- HTTP routes -----

    /// Upserts every route in one transaction (retried whole after a write race): per route
    /// the backend's `upsert` (bound by [`Dialect::bind_http_insert`]), which returns the
    /// stored row, or, with `read_back` (for an upsert that cannot return it), is followed by
    /// that read of the route's row by its identity. Each route is handed back with whether
    /// its write created it.
    async fn upsert_http_routes(
        pool: &Pool<Self::Db>,
        writes: &[(&HttpRoute, Write)],
        upsert: &str,
        read_back: Option<&str>,
    ) -> Result<Vec<(HttpRoute, bool)>, StoreError>
    where
        Self: Server<Self::Db>,
    {
        let rows = retrying(Self::retryable, true, || {
            Self::upsert_http_routes_once(pool, writes, upsert, read_back)
        })
        .await?;
        rows.iter()
            .zip(writes)
            .map(|(row, (_, w))| {
                let HttpRow { guid, route } = http_row(row)?;
                Ok((route, guid == w.new_guid))
            })
            .collect()
    }

    /// One attempt of [`Dialect::upsert_http_routes`]: the stored rows, in input order.
    async fn upsert_http_routes_once(
        pool: &Pool<Self::Db>,
        writes: &[(&HttpRoute, Write)],
        upsert: &str,
        read_back: Option<&str>,
    ) -> Result<Vec<<Self::Db as Database>::Row>, sqlx::Error> {
        let mut tx = pool.begin().await?;
        let mut rows = Vec::with_capacity(writes.len());
        for (route, w) in writes {
            let insert = Self::bind_http_insert(sqlx::query(upsert), route, w);
            let row = match read_back {
                Some(select) => {
                    insert.execute(&mut *tx).await?;
                    Self::bind_http_identity(sqlx::query(select), route)
                        .fetch_one(&mut *tx)
                        .await?
                }
                None => insert.fetch_one(&mut *tx).await?,
            };
            rows.push(row);
        }
        tx.commit().await?;
        Ok(rows)
    }

    /// Deletes each of `routes` in one transaction (retried whole after a deadlock) with
    /// `sql`, the backend's statement for the rows of one route's identity (bound by
    /// [`Dialect::bind_http_identity`], see [`Dialect::delete_each`]); hands back, in input
    /// order, each deleted route or `None`.
    async fn delete_http_routes(
        pool: &Pool<Self::Db>,
        routes: &[HttpRoute],
        sql: &str,
    ) -> Result<Vec<Option<HttpRoute>>, StoreError>
    where
        Self: Server<Self::Db>,
    {
        let statements = || {
            routes
                .iter()
                .map(|r| Self::bind_http_identity(sqlx::query(sql), r))
                .collect::<Vec<_>>()
        };
        let deleted = retrying(Self::retryable, false, || {
            Self::delete_each(pool, "routes", statements())
        })
        .await?;
        deleted.iter().map(|rows| first_http_route(rows)).collect()
    }

    // ----- TCP routes -----

    /// Upserts every mapping in one transaction ([`Server::upsert_tcp_batch`], retried whole
    /// after a write race or deadlock); hands back each mapping's stored state and whether
    /// its write created it, in input order.
    async fn upsert_tcp_routes(
        pool: &Pool<Self::Db>,
        writes: &[(&TcpRouteMapping, Write)],
    ) -> Result<Vec<(TcpRouteMapping, bool)>, StoreError>
    where
        Self: Server<Self::Db>,
    {
        retrying(Self::retryable, true, || {
            Self::upsert_tcp_batch(pool, writes)
        })
        .await
    }

    // ----- deletes and expiry -----

    /// Runs each of `statements` (rows whose first column is the guid) in one transaction and
    /// hands back the rows of each. On a backend whose statements only lock the rows
    /// ([`Server::DELETES_RETURN_ROWS`] false), the rows each one locked are then deleted by
    /// guid.
    async fn delete_each(
        pool: &Pool<Self::Db>,
        table: &'static str,
        statements: Vec<Q<'_, Self::Db>>,
    ) -> Result<Vec<Vec<<Self::Db as Database>::Row>>, sqlx::Error>
    where
        Self: Server<Self::Db>,
    {
        let mut tx = pool.begin().await?;
        let mut deleted = Vec::with_capacity(statements.len());
        for statement in statements {
            let rows = statement.fetch_all(&mut *tx).await?;
            if !Self::DELETES_RETURN_ROWS {
                Self::delete_guids(&mut tx, table, &guids_of(&rows)?).await?;
            }
            deleted.push(rows);
        }
        tx.commit().await?;
        Ok(deleted)
    }

    /// Deletes the routes and mappings that expired before `cutoff` ([`Server::prune_table`],
    /// each table retried after a write race) and hands them back.
    async fn prune_expired(
        pool: &Pool<Self::Db>,
        cutoff: OffsetDateTime,
    ) -> Result<(Vec<HttpRoute>, Vec<TcpRouteMapping>), StoreError>
    where
        Self: Server<Self::Db>,
    {
        let http = retrying(Self::retryable, false, || {
            Self::prune_table(pool, "routes", Self::HTTP_COLUMNS, cutoff)
        })
        .await?;
        let tcp = retrying(Self::retryable, false, || {
            Self::prune_table(pool, "tcp_routes", Self::TCP_COLUMNS, cutoff)
        })
        .await?;
        Ok((http_routes_of(&http)?, tcp_routes_of(&tcp)?))
    }

    // ----- lists -----

    /// HTTP routes with `expires_at > now`.
    async fn http_routes(
        pool: &Pool<Self::Db>,
        now: OffsetDateTime,
    ) -> Result<Vec<HttpRoute>, StoreError> {
        let sql = format!(
            "SELECT {} FROM routes WHERE expires_at > ?",
            Self::HTTP_COLUMNS
        );
        let rows = sqlx::query(&Self::sql(&sql))
            .bind(Self::time(now))
            .fetch_all(pool)
            .await?;
        http_routes_of(&rows)
    }

    /// TCP mappings with `expires_at > now`, in one of `segments` if any are given.
    async fn tcp_routes(
        pool: &Pool<Self::Db>,
        now: OffsetDateTime,
        segments: &[String],
    ) -> Result<Vec<TcpRouteMapping>, StoreError> {
        let mut sql = format!(
            "SELECT {} FROM tcp_routes WHERE expires_at > ?",
            Self::TCP_COLUMNS
        );
        if !segments.is_empty() {
            sql.push_str(&format!(
                " AND {} IN ({})",
                Self::SEGMENT_OR_EMPTY,
                placeholders(segments.len())
            ));
        }
        let sql = Self::sql(&sql);
        let q = sqlx::query(&sql).bind(Self::time(now));
        let rows = Self::bind_all(q, segments).fetch_all(pool).await?;
        tcp_routes_of(&rows)
    }
}

/// What a client/server backend (MySQL, PostgreSQL: many writers, each transaction may lose
/// a race) gives the shared transactions of [`Dialect`] beyond its dialect: which errors mean
/// a lost race, the few statements and locks that differ, and its migration steps. `DB` is
/// the backend's [`Dialect::Db`]. (A trait of its own, without [`Dialect`]'s `where` clauses,
/// which Rust would otherwise make every subtrait repeat.)
pub(crate) trait Server<DB: Database> {
    /// Whether `err` means only that a concurrent writer won a race, so running the
    /// transaction again will succeed (with `duplicate_is_race`, a unique violation raised by
    /// an insert whose row another transaction just inserted counts).
    fn retryable(err: &sqlx::Error, duplicate_is_race: bool) -> bool;

    /// Whether the stored router-group `guid` is the one asked for, as the backend's
    /// collation compares the column.
    fn same_guid(stored: &str, wanted: &str) -> bool {
        stored == wanted
    }

    /// What follows the read of every router group under the write lock
    /// ([`Dialect::locked_router_groups`]): `" FOR UPDATE"` or nothing.
    const ROUTER_GROUPS_LOCKING: &'static str;
    /// A seed's read of any one router group guid (written with `?` placeholders).
    const FIRST_ROUTER_GROUP: &'static str;
    /// Whether a seed takes the router-group write lock before that read.
    const SEED_TAKES_WRITE_LOCK: bool;

    /// Reads `current_version, target_version` (as signed 64-bit integers) of the
    /// `migration_data` row with key `?`.
    const READ_VERSIONS: &'static str;
    /// Inserts the `migration_data` row (key `?`, current version -1, target version `?`)
    /// unless a concurrent migrator did.
    const INSERT_VERSIONS: &'static str;

    /// Upstream's migration `version`, written so that it also completes a schema left by
    /// any older upstream version (re-running is a no-op).
    async fn migration_step(conn: &mut DB::Connection, version: i64) -> Result<(), StoreError>;

    /// One attempt of [`Dialect::upsert_tcp_routes`]: every mapping of `writes` upserted in
    /// one transaction, as the backend keeps concurrent upserts of one mapping from writing
    /// two rows.
    async fn upsert_tcp_batch(
        pool: &Pool<DB>,
        writes: &[(&TcpRouteMapping, Write)],
    ) -> Result<Vec<(TcpRouteMapping, bool)>, sqlx::Error>;

    /// Whether the statements of [`Dialect::delete_each`] delete the rows they return
    /// (`DELETE … RETURNING`) rather than only lock them.
    const DELETES_RETURN_ROWS: bool;

    /// Deletes the rows of `table` with one of `guids`.
    async fn delete_guids(
        conn: &mut DB::Connection,
        table: &'static str,
        guids: &[String],
    ) -> Result<(), sqlx::Error>;

    /// Deletes the rows of `table` with `expires_at < cutoff` (not one a concurrent refresh
    /// has just renewed) and returns them as `columns`, in one attempt.
    async fn prune_table(
        pool: &Pool<DB>,
        table: &'static str,
        columns: &'static str,
        cutoff: OffsetDateTime,
    ) -> Result<Vec<DB::Row>, sqlx::Error>;
}

/// Attempts of one transaction in [`retrying`].
const MAX_ATTEMPTS: u32 = 25;

/// Runs `op` (one transaction) again while it fails only because of a concurrent writer
/// (`retryable`, a backend's [`Server::retryable`]), a bounded number of times, with a short
/// jittered backoff. (A free function: as a trait method, its future would stop the store's
/// futures from being provably `Send`.)
pub(crate) async fn retrying<T, F, Fut>(
    retryable: fn(&sqlx::Error, bool) -> bool,
    duplicate_is_race: bool,
    mut op: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt + 1 < MAX_ATTEMPTS && retryable(&e, duplicate_is_race) => {
                attempt += 1;
                tracing::debug!(attempt, error = %e, "retrying store transaction after a write race");
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(e) => return Err(StoreError::from(e)),
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    // 2..~12 ms growing with the attempt, jittered so racing retries spread out
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0] % 8);
    Duration::from_millis(2 + u64::from(attempt.min(10)) * 2 + jitter)
}

/// A [`StoreError`] met while decoding inside a retried transaction, carried as sqlx's decode
/// error (never retried).
pub(crate) fn decode_err(e: StoreError) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(e))
}

/// The guids (first column) of `rows`.
pub(crate) fn guids_of(rows: &[impl RowGet]) -> Result<Vec<String>, sqlx::Error> {
    rows.iter()
        .map(|r| {
            r.text(0)?
                .ok_or_else(|| decode_err(StoreError::InvalidData("NULL guid".to_owned())))
        })
        .collect()
}

// ----- connecting (MySQL, PostgreSQL) -----

/// The TLS `sqldb.*` asks for, as upstream's drivers read it.
pub(crate) enum Tls<'a> {
    /// Neither `ca_cert` nor `skip_ssl_validation`: no TLS.
    Off,
    /// `skip_ssl_validation`: TLS without any certificate verification.
    Unverified,
    /// `ca_cert`: TLS verified against it, the host name too unless
    /// `skip_hostname_validation`.
    Verified { ca: &'a str, check_hostname: bool },
}

impl<'a> Tls<'a> {
    pub(crate) fn of(cfg: &'a StoreConfig) -> Tls<'a> {
        if cfg.skip_ssl_validation {
            Tls::Unverified
        } else if let Some(ca) = cfg.ca_cert.as_ref().filter(|c| !c.trim().is_empty()) {
            Tls::Verified {
                ca,
                check_hostname: !cfg.skip_hostname_validation,
            }
        } else {
            Tls::Off
        }
    }
}

/// The pool settings `sqldb.*` gives a MySQL or PostgreSQL pool; connections are tested
/// before use, so one the server dropped is replaced rather than handed out.
pub(crate) fn server_pool_options<DB: Database>(cfg: &StoreConfig) -> PoolOptions<DB> {
    PoolOptions::new()
        .max_connections(cfg.max_open_connections.max(1))
        .min_connections(0)
        .acquire_timeout(cfg.acquire_timeout)
        .max_lifetime(cfg.max_lifetime())
        .idle_timeout(IDLE_TIMEOUT)
        .test_before_acquire(true)
}

// ----- TCP mappings (MySQL, PostgreSQL) -----

/// The NULL-aware identity filter: "no TLS port" matches NULL and any value <= 0 (upstream
/// may store -1 or 0), "no SNI" matches NULL and ''. Bound by
/// [`Dialect::bind_tcp_identity`].
pub(crate) fn tcp_identity_where(key: &TcpKey<'_>) -> String {
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

/// A mapping's identity as the backend's unique index compares it: its strings as `fold`
/// makes them (MySQL's collations ignore case and trailing spaces), "no TLS port" and "no
/// SNI" each one value.
#[derive(Hash, PartialEq, Eq, Clone)]
pub(crate) struct TcpIdentity {
    pub(super) router_group_guid: String,
    pub(super) host_ip: String,
    pub(super) host_port: u16,
    pub(super) external_port: u16,
    pub(super) tls_port: Option<i32>,
    pub(super) sni: Option<String>,
}

impl TcpIdentity {
    pub(crate) fn of(m: &TcpRouteMapping, fold: fn(&str) -> String) -> TcpIdentity {
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

/// A TCP batch's view of the rows it touches: per identity, the guid of the row kept for it
/// and the mapping as stored (as the batch's earlier writes left it).
pub(crate) type TcpState = HashMap<TcpIdentity, (String, TcpRouteMapping)>;

/// Applies the upsert of `m` (identity `id`) to `state`, as the backend's write will leave
/// the row: an existing mapping gets modification index + 1 and the write's ttl, isolation
/// segment and instance id; a new one its canonical TLS port and SNI, modification tag
/// `{new guid, 0}` and the write's new row guid. Returns the row's guid, its stored state and
/// whether this write creates it.
pub(crate) fn apply_tcp_write(
    state: &mut TcpState,
    id: TcpIdentity,
    m: &TcpRouteMapping,
    w: &Write,
) -> (String, TcpRouteMapping, bool) {
    match state.entry(id) {
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
    }
}

/// `sql` with each `?` placeholder replaced by `$1`, `$2`, … in order. The store's SQL has no
/// `?` anywhere else (no string literal or operator contains one).
pub(crate) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0u32;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}
