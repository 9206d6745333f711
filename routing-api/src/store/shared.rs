//! What the MySQL, PostgreSQL and SQLite backends do with the same SQL, written once over
//! sqlx's [`Database`]. A backend implements [`Dialect`] with what differs: its sqlx database,
//! how it stores a timestamp, its select lists, its parameter placeholders and the few SQL
//! fragments spelled differently. Upserts, locking reads and everything else whose SQL differs
//! stay in `mysql.rs` / `postgres.rs` / `sqlite.rs`; they use the bind helpers here so that each
//! column list is bound in one place.

use std::borrow::Cow;

use routing_api_client::models::{HttpRoute, RouterGroup, TcpRouteMapping};
use sqlx::query::Query;
use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Type};
use time::OffsetDateTime;

use super::{
    http_routes_of, non_empty, placeholders, router_group_row, tcp_routes_of, RowGet, StoreError,
    TcpKey, Write,
};

/// A query on `DB` with `DB`'s own arguments (what `sqlx::query` returns).
pub(crate) type Q<'q, DB> = Query<'q, DB, <DB as Database>::Arguments<'q>>;

/// `router_groups` columns, in [`router_group_row`]'s order (the same on both backends).
pub(crate) const RG_COLUMNS: &str = "guid, name, type, reservable_ports";

/// An HTTP route's identity, bound by [`Dialect::bind_http_identity`].
pub(crate) const HTTP_IDENTITY_WHERE: &str =
    "route = ? AND port = ? AND ip = ? AND route_service_url = ?";

/// One backend's SQL dialect, and the queries both backends share (the provided methods).
/// The `where` clauses are what sqlx needs to run them; `MySql` and `Sqlite` meet them all.
pub(crate) trait Dialect
where
    for<'c> &'c mut <Self::Db as Database>::Connection: Executor<'c, Database = Self::Db>,
    for<'q> <Self::Db as Database>::Arguments<'q>: IntoArguments<'q, Self::Db>,
    for<'q> &'q str: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> Option<&'q str>: Encode<'q, Self::Db> + Type<Self::Db>,
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
    /// isolation_segment) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)`.
    fn bind_tcp_insert<'q>(
        q: Q<'q, Self::Db>,
        m: &'q TcpRouteMapping,
        key: &TcpKey<'q>,
        w: &'q Write,
    ) -> Q<'q, Self::Db> {
        Self::bind_write_times(q.bind(w.new_guid.as_str()), w)
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
