//! SQL storage for the Routing API (spec B.2–B.5, B.8): router groups, HTTP routes and TCP
//! route mappings in MySQL/MariaDB (`sqldb.type: mysql`), PostgreSQL (`sqldb.type: postgres`)
//! or SQLite (`sqldb.type: sqlite`, the embedded default), with versioned migrations and TTL
//! expiry.
//!
//! # What this module owns
//!
//! - The schema. On MySQL it is upstream's gorm schema at migration version 7, column for column
//!   (`routes`, `tcp_routes`, `router_groups`, `migration_data` with key
//!   `routing-api-migration`), so a database written by upstream routing-api can be served by
//!   ours and vice versa; [`Store::migrate`] leaves an upstream-migrated schema alone. SQLite has
//!   the same tables and columns with SQLite types: strings `TEXT`, integers `INTEGER`, and
//!   timestamps `TEXT` in UTC as `YYYY-MM-DD HH:MM:SS.ffffff` (fixed width, so text order is
//!   time order, and SQLite's date functions understand it). MySQL timestamps are `DATETIME`
//!   in UTC, as gorm writes them. PostgreSQL has the tables gorm's PostgreSQL dialect gives
//!   upstream's models (`text`, `integer`/`bigint`, `timestamptz`), migrated through the same
//!   versions, with the same `migration_data` row.
//! - Identity and upsert semantics: an HTTP route is identified by (route, ip, port,
//!   route_service_url); a TCP mapping by (router_group_guid, backend_ip, backend_port, port,
//!   backend_tls_port, sni_hostname). A TLS port of 0, -1 or absent is "no TLS port" and is
//!   stored as `NULL` (as upstream does); an empty or absent SNI hostname is stored as `NULL`.
//!   Lookups treat `NULL`, `0`, `-1` (and `''` for SNI, which upstream writes) as that one
//!   value, so re-creating a mapping updates it in place and deleting it really deletes it
//!   (upstream looks such rows up with `= 0` and duplicates them). Rows duplicated by
//!   upstream are merged on the next upsert and all removed on delete.
//! - Expiry: lists show only rows with `expires_at > now`; [`Store::prune_expired`] deletes
//!   rows with `expires_at < now - 1s` and hands them back for `Delete` events.
//!
//! - Batches: [`Store::upsert_tcp_routes`], [`Store::upsert_http_routes`] and the batch
//!   deletes run a whole request in ONE transaction (all or nothing). On MySQL a TCP batch is a
//!   few locking reads and one multi-row `INSERT … ON DUPLICATE KEY UPDATE` per 500 mappings.
//! - Router-group writes: [`Store::create_router_group_checked`] and
//!   [`Store::update_router_group_ports_checked`] run the caller's check against all groups and
//!   write in one transaction, serialised by a locking read of the `migration_data` row
//!   (MySQL, PostgreSQL) or `BEGIN IMMEDIATE` (SQLite).
//! - Durability: SQLite runs in WAL mode with `synchronous = FULL`, so an acknowledged write
//!   survives a power cut.
//! - Deadlines: the pool's acquire timeout bounds waiting for a connection, and every store
//!   call (statements, retries, commit) is bounded by [`StoreConfig::query_timeout`]
//!   ([`StoreError::Timeout`], answered like any database failure); [`Store::migrate`] by
//!   [`MIGRATION_TIMEOUT`].
//! - Indexes beyond upstream's: `expires_at` on `routes` and `tcp_routes` (pruner and lists),
//!   ensured by every [`Store::migrate`], so existing databases gain them.
//!
//! Events, validation and HTTP status mapping are the API's job, not this module's.
//!
//! # Why an upsert cannot create a duplicate
//!
//! SQL unique indexes do not treat `NULL`s as equal, so `idx_tcp_route` alone does not stop two
//! concurrent inserts of a mapping without TLS port or SNI. Therefore:
//!
//! - **SQLite**: `idx_tcp_route` is an expression index over
//!   `IFNULL(sni_hostname, '')` and `IFNULL(host_tls_port, 0)` — a non-NULL sentinel that lives
//!   only in the index — and each upsert is a single
//!   `INSERT … ON CONFLICT(<those expressions>) DO UPDATE … RETURNING` statement; SQLite
//!   serialises writers, and the index makes the second writer update the first one's row.
//!   HTTP routes use `ON CONFLICT` on `idx_route` (all columns `NOT NULL`) the same way.
//! - **MySQL**: the index must stay exactly upstream's, so a TCP upsert runs in a
//!   `REPEATABLE READ` transaction that first does a NULL-aware locking read
//!   (`SELECT … FOR UPDATE`) of the identity. InnoDB locks the matching rows *and the index gap
//!   where a match would go*; a second transaction doing the same for a not-yet-existing
//!   mapping cannot insert into that gap, so one of two racing inserters is aborted as a
//!   deadlock victim and retried, and its retry finds and updates the winner's row. HTTP
//!   routes use `INSERT … ON DUPLICATE KEY UPDATE` on `idx_route`. Deadlocks and duplicate-key
//!   races are retried (bounded) in a fresh transaction.
//!
//! - **PostgreSQL**: the index is upstream's too; a TCP write takes a transaction-scoped
//!   advisory lock per mapping identity (sorted, so batches cannot deadlock), then reads and
//!   row-locks the mapping's rows: a second writer of the same mapping waits for the first to
//!   commit and then updates its row. HTTP routes use `INSERT … ON CONFLICT … DO UPDATE`.
//!
//! The tests prove it with 20 concurrent upserts of one mapping on every backend.

mod error;
mod mysql;
mod postgres;
mod shared;
mod sqlite;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use routing_api_client::models::{HttpRoute, ModificationTag, RouterGroup, TcpRouteMapping};
use sqlx::mysql::MySqlPool;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use sqlx::{ColumnIndex, Decode, Row, Type};
use time::OffsetDateTime;

// `Mysql::…` / `Postgres::…` / `Sqlite::…` are the queries and transactions the backends share
// (provided by [`Dialect`]); `mysql::…` / `postgres::…` / `sqlite::…` are the ones each backend
// writes its own way.
use mysql::Mysql;
use postgres::Postgres;
use shared::Dialect;
use sqlite::Sqlite;

pub use error::{StoreError, BACKUP_LOCKED_MESSAGE};

/// `migration_data.migration_key` of upstream's migrations.
pub const MIGRATION_KEY: &str = "routing-api-migration";
/// The schema version this store creates and expects (upstream's latest migration, V7).
pub const SCHEMA_VERSION: i64 = 7;

/// Which SQL backend to use (`sqldb.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Mysql,
    Sqlite,
    Postgres,
}

impl DbKind {
    /// Upstream's `sqldb.type` word for it.
    pub fn name(self) -> &'static str {
        match self {
            DbKind::Mysql => "mysql",
            DbKind::Sqlite => "sqlite",
            DbKind::Postgres => "postgres",
        }
    }
}

/// Connection settings; the config module maps upstream's `sqldb.*` keys onto this.
#[derive(Clone)]
pub struct StoreConfig {
    pub kind: DbKind,
    /// MySQL/PostgreSQL host (`sqldb.host`).
    pub host: String,
    /// MySQL/PostgreSQL port (`sqldb.port`).
    pub port: u16,
    /// MySQL/PostgreSQL database name (`sqldb.schema`).
    pub schema: String,
    pub username: String,
    pub password: String,
    /// SQLite database file, created if missing.
    pub sqlite_path: PathBuf,
    /// PEM CA certificate(s) for TLS to MySQL/PostgreSQL (`sqldb.ca_cert`); enables verified
    /// TLS.
    pub ca_cert: Option<String>,
    /// TLS to MySQL/PostgreSQL without any certificate verification
    /// (`sqldb.skip_ssl_validation`).
    pub skip_ssl_validation: bool,
    /// With `ca_cert`: verify the chain but not the host name.
    pub skip_hostname_validation: bool,
    /// Pool size (`sqldb.max_open_connections`, default 200; SQLite is capped at 16).
    pub max_open_connections: u32,
    /// `sqldb.max_idle_connections` (default 10). sqlx cannot cap idle connections; connections
    /// above this number are closed after [`IDLE_TIMEOUT`] of idleness instead.
    pub max_idle_connections: u32,
    /// `sqldb.connections_max_lifetime_seconds` (default 3600 s).
    pub connections_max_lifetime: Duration,
    /// How long a query waits for a connection (or for the server) before failing with
    /// [`StoreError::Unavailable`] (default 5 s).
    pub acquire_timeout: Duration,
    /// Deadline of one store call, all its statements and retries included (default 15 s):
    /// past it the call's transaction is rolled back and it fails with
    /// [`StoreError::Timeout`], which the API answers like any database failure (503
    /// `DBCommunicationError`).
    pub query_timeout: Duration,
}

/// Default [`StoreConfig::query_timeout`].
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(15);
/// Deadline of [`Store::migrate`] (DDL on a large table may take minutes).
pub const MIGRATION_TIMEOUT: Duration = Duration::from_secs(600);

/// Idle connections beyond `max_idle_connections` are closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl StoreConfig {
    /// `connections_max_lifetime` for the pool: 0 means unlimited.
    fn max_lifetime(&self) -> Option<Duration> {
        (!self.connections_max_lifetime.is_zero()).then_some(self.connections_max_lifetime)
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: DbKind::Sqlite,
            host: "127.0.0.1".to_owned(),
            port: 3306,
            schema: "routing_api".to_owned(),
            username: String::new(),
            password: String::new(),
            sqlite_path: PathBuf::from("routing-api.sqlite3"),
            ca_cert: None,
            skip_ssl_validation: false,
            skip_hostname_validation: false,
            max_open_connections: 200,
            max_idle_connections: 10,
            connections_max_lifetime: Duration::from_secs(3600),
            acquire_timeout: Duration::from_secs(5),
            query_timeout: DEFAULT_QUERY_TIMEOUT,
        }
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("kind", &self.kind)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("schema", &self.schema)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("sqlite_path", &self.sqlite_path)
            .field("ca_cert", &self.ca_cert.as_ref().map(|_| "<pem>"))
            .field("skip_ssl_validation", &self.skip_ssl_validation)
            .field("skip_hostname_validation", &self.skip_hostname_validation)
            .field("max_open_connections", &self.max_open_connections)
            .field("max_idle_connections", &self.max_idle_connections)
            .field("connections_max_lifetime", &self.connections_max_lifetime)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("query_timeout", &self.query_timeout)
            .finish()
    }
}

#[derive(Clone)]
enum Backend {
    Mysql(MySqlPool),
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

#[derive(Default)]
struct BackupLocks {
    reads: AtomicBool,
    writes: AtomicBool,
}

/// The Routing API's SQL store. Cheap to clone (clones share the pool and the backup locks).
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    locks: Arc<BackupLocks>,
    /// Deadline of one store call (all its statements and retries).
    query_timeout: Duration,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("kind", &self.kind()).finish()
    }
}

/// The MySQL connection settings of `cfg` (server, credentials, TLS), for other users of the
/// same database (the lock table).
pub fn mysql_connect_options(cfg: &StoreConfig) -> sqlx::mysql::MySqlConnectOptions {
    mysql::connect_options(cfg)
}

/// The PostgreSQL connection settings of `cfg` (server, credentials, TLS), for other users of
/// the same database (the lock table).
pub fn postgres_connect_options(cfg: &StoreConfig) -> sqlx::postgres::PgConnectOptions {
    postgres::connect_options(cfg)
}

/// A TCP mapping to upsert and its TTL.
pub type TcpUpsert = (TcpRouteMapping, Duration);
/// An HTTP route to upsert and its TTL.
pub type HttpUpsert = (HttpRoute, Duration);

/// What a router-group write is checked with, inside the write's transaction: every group as
/// it will be committed (the existing ones with the write applied). `Err(message)` aborts the
/// write with [`StoreError::Rejected`].
pub type GroupCheck<'a> = &'a (dyn Fn(&[RouterGroup]) -> Result<(), String> + Send + Sync);

impl Store {
    /// Opens a pool for `cfg` and checks that one connection can be made (fails with
    /// [`StoreError::Unavailable`] within `acquire_timeout` if the server is down).
    pub async fn connect(cfg: &StoreConfig) -> Result<Store, StoreError> {
        let backend = match cfg.kind {
            DbKind::Mysql => Backend::Mysql(mysql::connect(cfg).await?),
            DbKind::Sqlite => Backend::Sqlite(sqlite::connect(cfg).await?),
            DbKind::Postgres => Backend::Postgres(postgres::connect(cfg).await?),
        };
        Ok(Store::from_backend(backend, cfg))
    }

    /// Opens a store from a URL: `mysql://user:pass@host:port/db`,
    /// `postgres://user:pass@host:port/db` or `sqlite://path` (the file is created if missing). Pool settings are [`StoreConfig::default`]'s.
    pub async fn connect_url(url: &str) -> Result<Store, StoreError> {
        let defaults = StoreConfig::default();
        let backend = if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            let url = url.replacen("mariadb:", "mysql:", 1);
            Backend::Mysql(mysql::connect_url(&url, &defaults).await?)
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite(sqlite::connect_url(url, &defaults).await?)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres(postgres::connect_url(url, &defaults).await?)
        } else {
            return Err(StoreError::Config(format!(
                "unsupported database URL scheme (want mysql://, postgres:// or sqlite://): {}",
                redact_url(url)
            )));
        };
        Ok(Store::from_backend(backend, &defaults))
    }

    fn from_backend(backend: Backend, cfg: &StoreConfig) -> Store {
        Store {
            backend,
            locks: Arc::new(BackupLocks::default()),
            query_timeout: cfg.query_timeout.max(Duration::from_millis(1)),
        }
    }

    /// The same store with another per-call deadline (see [`StoreConfig::query_timeout`]).
    pub fn with_query_timeout(mut self, timeout: Duration) -> Store {
        self.query_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Runs one store call under the per-call deadline. On expiry the call's future is dropped:
    /// its transaction is never committed (sqlx rolls it back) and the caller gets
    /// [`StoreError::Timeout`].
    async fn bounded<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.query_timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout {
                operation,
                after: self.query_timeout,
            }),
        }
    }

    /// The backend in use.
    pub fn kind(&self) -> DbKind {
        match self.backend {
            Backend::Mysql(_) => DbKind::Mysql,
            Backend::Sqlite(_) => DbKind::Sqlite,
            Backend::Postgres(_) => DbKind::Postgres,
        }
    }

    /// Round-trips a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.bounded("ping", async {
            match &self.backend {
                Backend::Mysql(p) => sqlx::query("SELECT 1").execute(p).await.map(drop)?,
                Backend::Sqlite(p) => sqlx::query("SELECT 1").execute(p).await.map(drop)?,
                Backend::Postgres(p) => sqlx::query("SELECT 1").execute(p).await.map(drop)?,
            };
            Ok(())
        })
        .await
    }

    /// SQLite's `synchronous` level on a pooled connection (0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA)
    /// and its journal mode; `None` on other backends. The store runs WAL with FULL, so an
    /// acknowledged write survives a power cut.
    pub async fn sqlite_durability(&self) -> Result<Option<(i64, String)>, StoreError> {
        self.bounded("read sqlite pragmas", async {
            match &self.backend {
                Backend::Sqlite(p) => Ok(Some(sqlite::durability(p).await?)),
                Backend::Postgres(_) => Ok(None),
                Backend::Mysql(_) => Ok(None),
            }
        })
        .await
    }

    /// Closes the pool (waits, at most the per-call deadline, for checked-out connections to
    /// come back).
    pub async fn close(&self) {
        let close = async {
            match &self.backend {
                Backend::Mysql(p) => p.close().await,
                Backend::Sqlite(p) => p.close().await,
                Backend::Postgres(p) => p.close().await,
            }
        };
        if tokio::time::timeout(self.query_timeout, close)
            .await
            .is_err()
        {
            tracing::warn!(after = ?self.query_timeout, "store-close-timed-out");
        }
    }

    /// Runs the schema migrations up to [`SCHEMA_VERSION`] and makes sure our extra indexes
    /// exist. Idempotent; a schema already at version 7 or later (ours or upstream's, per
    /// `migration_data`) keeps its tables and only gains the missing indexes. Bounded by
    /// [`MIGRATION_TIMEOUT`] (DDL on a large table takes longer than a query).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let run = async {
            match &self.backend {
                Backend::Mysql(p) => mysql::migrate(p).await,
                Backend::Sqlite(p) => sqlite::migrate(p).await,
                Backend::Postgres(p) => postgres::migrate(p).await,
            }
        };
        match tokio::time::timeout(MIGRATION_TIMEOUT.max(self.query_timeout), run).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout {
                operation: "migrate",
                after: MIGRATION_TIMEOUT.max(self.query_timeout),
            }),
        }
    }

    // ----- BBR locks (admin endpoints) -----

    /// While set, router-group reads fail with [`StoreError::BackupLocked`].
    pub fn set_router_group_reads_locked(&self, locked: bool) {
        self.locks.reads.store(locked, Ordering::SeqCst);
    }

    /// While set, router-group writes (create, update, delete, seed) fail with
    /// [`StoreError::BackupLocked`].
    pub fn set_router_group_writes_locked(&self, locked: bool) {
        self.locks.writes.store(locked, Ordering::SeqCst);
    }

    fn check_rg_reads(&self) -> Result<(), StoreError> {
        if self.locks.reads.load(Ordering::SeqCst) {
            return Err(StoreError::BackupLocked);
        }
        Ok(())
    }

    fn check_rg_writes(&self) -> Result<(), StoreError> {
        if self.locks.writes.load(Ordering::SeqCst) {
            return Err(StoreError::BackupLocked);
        }
        Ok(())
    }

    // ----- router groups -----

    /// All router groups.
    pub async fn router_groups(&self) -> Result<Vec<RouterGroup>, StoreError> {
        self.check_rg_reads()?;
        self.bounded("list router groups", async {
            match &self.backend {
                Backend::Mysql(p) => Mysql::router_groups(p, None).await,
                Backend::Sqlite(p) => Sqlite::router_groups(p, None).await,
                Backend::Postgres(p) => Postgres::router_groups(p, None).await,
            }
        })
        .await
    }

    /// The router group called `name`, if any.
    pub async fn router_group_by_name(
        &self,
        name: &str,
    ) -> Result<Option<RouterGroup>, StoreError> {
        self.check_rg_reads()?;
        let groups = self
            .bounded("read router group", async {
                match &self.backend {
                    Backend::Mysql(p) => Mysql::router_groups(p, Some(("name", name))).await,
                    Backend::Sqlite(p) => Sqlite::router_groups(p, Some(("name", name))).await,
                    Backend::Postgres(p) => Postgres::router_groups(p, Some(("name", name))).await,
                }
            })
            .await?;
        Ok(groups.into_iter().next())
    }

    /// The router group with `guid`, if any.
    pub async fn router_group_by_guid(
        &self,
        guid: &str,
    ) -> Result<Option<RouterGroup>, StoreError> {
        self.check_rg_reads()?;
        let groups = self
            .bounded("read router group", async {
                match &self.backend {
                    Backend::Mysql(p) => Mysql::router_groups(p, Some(("guid", guid))).await,
                    Backend::Sqlite(p) => Sqlite::router_groups(p, Some(("guid", guid))).await,
                    Backend::Postgres(p) => Postgres::router_groups(p, Some(("guid", guid))).await,
                }
            })
            .await?;
        Ok(groups.into_iter().next())
    }

    /// Inserts a router group (a new v4 guid if `group.guid` is empty) and returns it.
    /// A name (`idx_rg_name`) or guid that already exists gives [`StoreError::Duplicate`].
    pub async fn create_router_group(
        &self,
        group: &RouterGroup,
    ) -> Result<RouterGroup, StoreError> {
        self.create_router_group_checked(group, &|_| Ok(())).await
    }

    /// [`Store::create_router_group`], checking `check` against all groups (the committed ones
    /// plus the new one) in the same transaction as the insert, with router-group writes
    /// serialised (MySQL, PostgreSQL: a locking read of the `migration_data` row; SQLite: `BEGIN
    /// IMMEDIATE`), so two concurrent writes cannot both pass a check that only one of them
    /// would pass after the other. `Err(message)` from `check` gives
    /// [`StoreError::Rejected`] and writes nothing.
    pub async fn create_router_group_checked(
        &self,
        group: &RouterGroup,
        check: GroupCheck<'_>,
    ) -> Result<RouterGroup, StoreError> {
        self.check_rg_writes()?;
        let group = with_guid(group);
        let now = OffsetDateTime::now_utc();
        self.bounded("create router group", async {
            match &self.backend {
                Backend::Mysql(p) => Mysql::create_router_group(p, &group, now, check).await,
                Backend::Sqlite(p) => sqlite::create_router_group(p, &group, now, check).await,
                Backend::Postgres(p) => Postgres::create_router_group(p, &group, now, check).await,
            }
        })
        .await?;
        Ok(group)
    }

    /// Sets a router group's `reservable_ports` (the only field the PUT endpoint applies) and
    /// returns the updated group; [`StoreError::NotFound`] if there is no such group.
    pub async fn update_router_group_ports(
        &self,
        guid: &str,
        reservable_ports: &str,
    ) -> Result<RouterGroup, StoreError> {
        self.update_router_group_ports_checked(guid, reservable_ports, &|_| Ok(()))
            .await
    }

    /// [`Store::update_router_group_ports`], checking `check` against all groups as they will
    /// be (this one with its new ports) in the update's transaction; see
    /// [`Store::create_router_group_checked`].
    pub async fn update_router_group_ports_checked(
        &self,
        guid: &str,
        reservable_ports: &str,
        check: GroupCheck<'_>,
    ) -> Result<RouterGroup, StoreError> {
        self.check_rg_writes()?;
        let now = OffsetDateTime::now_utc();
        let updated = self
            .bounded("update router group", async {
                match &self.backend {
                    Backend::Mysql(p) => {
                        Mysql::update_router_group_ports(p, guid, reservable_ports, now, check)
                            .await
                    }
                    Backend::Sqlite(p) => {
                        sqlite::update_router_group_ports(p, guid, reservable_ports, now, check)
                            .await
                    }
                    Backend::Postgres(p) => {
                        Postgres::update_router_group_ports(p, guid, reservable_ports, now, check)
                            .await
                    }
                }
            })
            .await?;
        updated.ok_or_else(|| StoreError::NotFound(format!("router group '{guid}'")))
    }

    /// Deletes a router group; returns whether it existed.
    pub async fn delete_router_group(&self, guid: &str) -> Result<bool, StoreError> {
        self.check_rg_writes()?;
        self.bounded("delete router group", async {
            match &self.backend {
                Backend::Mysql(p) => Mysql::delete_router_group(p, guid).await,
                Backend::Sqlite(p) => Sqlite::delete_router_group(p, guid).await,
                Backend::Postgres(p) => Postgres::delete_router_group(p, guid).await,
            }
        })
        .await
    }

    /// Inserts `groups` (v4 guids where empty) only if `router_groups` is empty, atomically;
    /// returns how many were inserted (0 if the table already had rows).
    pub async fn seed_router_groups(&self, groups: &[RouterGroup]) -> Result<usize, StoreError> {
        self.check_rg_writes()?;
        if groups.is_empty() {
            return Ok(0);
        }
        let groups: Vec<RouterGroup> = groups.iter().map(with_guid).collect();
        let now = OffsetDateTime::now_utc();
        self.bounded("seed router groups", async {
            match &self.backend {
                Backend::Mysql(p) => Mysql::insert_router_groups(p, &groups, now, true).await,
                Backend::Sqlite(p) => sqlite::insert_router_groups(p, &groups, now, true).await,
                Backend::Postgres(p) => Postgres::insert_router_groups(p, &groups, now, true).await,
            }
        })
        .await
    }

    // ----- HTTP routes -----

    /// Creates or refreshes an HTTP route, identified by (route, ip, port, route_service_url).
    /// New: fresh guid and modification tag `{v4 uuid, 0}`. Existing: modification index + 1,
    /// ttl replaced, log_guid replaced if non-empty. Either way `expires_at = now + ttl`.
    /// Returns the stored route (with `ttl` and `modification_tag`) and whether it was created.
    pub async fn upsert_http_route(
        &self,
        route: &HttpRoute,
        ttl: Duration,
    ) -> Result<(HttpRoute, bool), StoreError> {
        let mut done = self.upsert_http_routes(&[(route.clone(), ttl)]).await?;
        done.pop()
            .ok_or_else(|| StoreError::InvalidData("upsert returned no row".to_owned()))
    }

    /// Upserts a batch of HTTP routes, each as [`Store::upsert_http_route`] does, in ONE
    /// transaction: all of them or, on any error, none. Returns each route's stored state and
    /// whether it was created, in input order (a route given twice is updated twice and both
    /// entries show its final state).
    pub async fn upsert_http_routes(
        &self,
        batch: &[HttpUpsert],
    ) -> Result<Vec<(HttpRoute, bool)>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let writes: Vec<(&HttpRoute, Write)> =
            batch.iter().map(|(r, ttl)| (r, Write::new(*ttl))).collect();
        self.bounded("upsert http routes", async {
            match &self.backend {
                Backend::Mysql(p) => mysql::upsert_http_routes(p, &writes).await,
                Backend::Sqlite(p) => sqlite::upsert_http_routes(p, &writes).await,
                Backend::Postgres(p) => postgres::upsert_http_routes(p, &writes).await,
            }
        })
        .await
    }

    /// Deletes the HTTP route with `route`'s identity; returns the deleted row (for the
    /// `Delete` event) or `None` if there was none.
    pub async fn delete_http_route(
        &self,
        route: &HttpRoute,
    ) -> Result<Option<HttpRoute>, StoreError> {
        let mut done = self.delete_http_routes(std::slice::from_ref(route)).await?;
        Ok(done.pop().flatten())
    }

    /// Deletes a batch of HTTP routes in ONE transaction (all or nothing); returns, in input
    /// order, each deleted row or `None`.
    pub async fn delete_http_routes(
        &self,
        routes: &[HttpRoute],
    ) -> Result<Vec<Option<HttpRoute>>, StoreError> {
        if routes.is_empty() {
            return Ok(Vec::new());
        }
        self.bounded("delete http routes", async {
            match &self.backend {
                Backend::Mysql(p) => mysql::delete_http_routes(p, routes).await,
                Backend::Sqlite(p) => sqlite::delete_http_routes(p, routes).await,
                Backend::Postgres(p) => postgres::delete_http_routes(p, routes).await,
            }
        })
        .await
    }

    /// All non-expired HTTP routes (`expires_at > now`).
    pub async fn http_routes(&self) -> Result<Vec<HttpRoute>, StoreError> {
        let now = OffsetDateTime::now_utc();
        self.bounded("list http routes", async {
            match &self.backend {
                Backend::Mysql(p) => Mysql::http_routes(p, now).await,
                Backend::Sqlite(p) => Sqlite::http_routes(p, now).await,
                Backend::Postgres(p) => Postgres::http_routes(p, now).await,
            }
        })
        .await
    }

    // ----- TCP routes -----

    /// Creates or refreshes a TCP mapping, identified by (router_group_guid, backend_ip,
    /// backend_port, port, backend_tls_port, backend_sni_hostname) with "no TLS port"
    /// (0/-1/absent) and "no SNI" (empty/absent) each one value. New: fresh guid and
    /// modification tag `{v4 uuid, 0}`. Existing: modification index incremented; ttl,
    /// expires_at, isolation_segment and instance_id replaced.
    /// Returns the stored mapping and whether it was created.
    pub async fn upsert_tcp_route(
        &self,
        mapping: &TcpRouteMapping,
        ttl: Duration,
    ) -> Result<(TcpRouteMapping, bool), StoreError> {
        let mut done = self.upsert_tcp_routes(&[(mapping.clone(), ttl)]).await?;
        done.pop()
            .ok_or_else(|| StoreError::InvalidData("upsert returned no row".to_owned()))
    }

    /// Upserts a batch of TCP mappings, each as [`Store::upsert_tcp_route`] does, in ONE
    /// transaction: all of them or, on any error, none. Returns each mapping's stored state and
    /// whether it was created, in input order (a mapping given twice is updated twice and both
    /// entries show its final state). On MySQL a batch is one locking read and one multi-row
    /// `INSERT … ON DUPLICATE KEY UPDATE` per 500 mappings.
    pub async fn upsert_tcp_routes(
        &self,
        batch: &[TcpUpsert],
    ) -> Result<Vec<(TcpRouteMapping, bool)>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let writes: Vec<(&TcpRouteMapping, Write)> =
            batch.iter().map(|(m, ttl)| (m, Write::new(*ttl))).collect();
        self.bounded("upsert tcp routes", async {
            match &self.backend {
                Backend::Mysql(p) => Mysql::upsert_tcp_routes(p, &writes).await,
                Backend::Sqlite(p) => sqlite::upsert_tcp_routes(p, &writes).await,
                Backend::Postgres(p) => Postgres::upsert_tcp_routes(p, &writes).await,
            }
        })
        .await
    }

    /// Deletes the TCP mapping with `mapping`'s identity (all copies, if upstream left
    /// duplicates); returns the deleted mapping or `None`.
    pub async fn delete_tcp_route(
        &self,
        mapping: &TcpRouteMapping,
    ) -> Result<Option<TcpRouteMapping>, StoreError> {
        let mut done = self
            .delete_tcp_routes(std::slice::from_ref(mapping))
            .await?;
        Ok(done.pop().flatten())
    }

    /// Deletes a batch of TCP mappings in ONE transaction (all or nothing); returns, in input
    /// order, each deleted mapping or `None`.
    pub async fn delete_tcp_routes(
        &self,
        mappings: &[TcpRouteMapping],
    ) -> Result<Vec<Option<TcpRouteMapping>>, StoreError> {
        if mappings.is_empty() {
            return Ok(Vec::new());
        }
        self.bounded("delete tcp routes", async {
            match &self.backend {
                Backend::Mysql(p) => mysql::delete_tcp_routes(p, mappings).await,
                Backend::Sqlite(p) => sqlite::delete_tcp_routes(p, mappings).await,
                Backend::Postgres(p) => postgres::delete_tcp_routes(p, mappings).await,
            }
        })
        .await
    }

    /// Non-expired TCP mappings; when `isolation_segments` is non-empty only those whose
    /// isolation segment is in the list (`""` matches mappings without a segment).
    pub async fn tcp_routes(
        &self,
        isolation_segments: &[String],
    ) -> Result<Vec<TcpRouteMapping>, StoreError> {
        let now = OffsetDateTime::now_utc();
        self.bounded("list tcp routes", async {
            match &self.backend {
                Backend::Mysql(p) => Mysql::tcp_routes(p, now, isolation_segments).await,
                Backend::Sqlite(p) => Sqlite::tcp_routes(p, now, isolation_segments).await,
                Backend::Postgres(p) => Postgres::tcp_routes(p, now, isolation_segments).await,
            }
        })
        .await
    }

    // ----- expiry -----

    /// Deletes routes and mappings with `expires_at < now - 1s` and returns them, so the caller
    /// can emit one `Delete` event each. A row refreshed concurrently is not deleted.
    pub async fn prune_expired(
        &self,
    ) -> Result<(Vec<HttpRoute>, Vec<TcpRouteMapping>), StoreError> {
        let cutoff = OffsetDateTime::now_utc() - Duration::from_secs(1);
        self.bounded("prune expired routes", async {
            match &self.backend {
                Backend::Mysql(p) => Mysql::prune_expired(p, cutoff).await,
                Backend::Sqlite(p) => sqlite::prune_expired(p, cutoff).await,
                Backend::Postgres(p) => Postgres::prune_expired(p, cutoff).await,
            }
        })
        .await
    }
}

// ----- helpers shared by the backends -----

/// Timestamps and generated ids of one write.
pub(crate) struct Write {
    now: OffsetDateTime,
    expires_at: OffsetDateTime,
    ttl_secs: i64,
    new_guid: String,
    new_modification_guid: String,
}

impl Write {
    fn new(ttl: Duration) -> Write {
        let now = OffsetDateTime::now_utc();
        Write {
            now,
            expires_at: now + ttl,
            ttl_secs: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
            new_guid: uuid::Uuid::new_v4().to_string(),
            new_modification_guid: uuid::Uuid::new_v4().to_string(),
        }
    }
}

fn with_guid(group: &RouterGroup) -> RouterGroup {
    let mut group = group.clone();
    if group.guid.is_empty() {
        group.guid = uuid::Uuid::new_v4().to_string();
    }
    group
}

/// The canonical stored form of a TCP mapping's optional identity parts.
pub(crate) struct TcpKey<'a> {
    /// `Some(port)` only for a real TLS port (> 0).
    tls_port: Option<i32>,
    /// `Some(name)` only for a non-empty SNI hostname.
    sni: Option<&'a str>,
}

impl<'a> TcpKey<'a> {
    fn of(m: &'a TcpRouteMapping) -> TcpKey<'a> {
        TcpKey {
            tls_port: m.tls_port().map(i32::from),
            sni: m.sni_hostname(),
        }
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// An HTTP route row as selected (`HTTP_COLUMNS` order), plus its guid.
pub(crate) struct HttpRow {
    pub guid: String,
    pub route: HttpRoute,
}

/// A TCP mapping row as selected (`TCP_COLUMNS` order), plus its guid.
pub(crate) struct TcpRow {
    pub guid: String,
    pub mapping: TcpRouteMapping,
}

/// Column accessors of every backend' rows, so row mapping is written once. Integer columns
/// are selected as signed 64-bit values.
pub(crate) trait RowGet {
    fn text(&self, i: usize) -> Result<Option<String>, sqlx::Error>;
    fn int(&self, i: usize) -> Result<Option<i64>, sqlx::Error>;
}

impl<R: Row> RowGet for R
where
    usize: ColumnIndex<R>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, i: usize) -> Result<Option<String>, sqlx::Error> {
        self.try_get::<Option<String>, _>(i)
    }
    fn int(&self, i: usize) -> Result<Option<i64>, sqlx::Error> {
        self.try_get::<Option<i64>, _>(i)
    }
}

fn port_from(v: Option<i64>, what: &str) -> Result<u16, StoreError> {
    let v = v.unwrap_or(0);
    u16::try_from(v).map_err(|_| StoreError::InvalidData(format!("{what} {v} out of range")))
}

fn index_from(v: Option<i64>) -> u32 {
    u32::try_from(v.unwrap_or(0).max(0)).unwrap_or(u32::MAX)
}

/// `guid, route, port, ip, ttl, log_guid, route_service_url, modification_guid,
/// modification_index`
pub(crate) fn http_row(r: &impl RowGet) -> Result<HttpRow, StoreError> {
    Ok(HttpRow {
        guid: r.text(0)?.unwrap_or_default(),
        route: HttpRoute {
            route: r.text(1)?.unwrap_or_default(),
            port: port_from(r.int(2)?, "port")?,
            ip: r.text(3)?.unwrap_or_default(),
            ttl: r.int(4)?,
            log_guid: r.text(5)?.unwrap_or_default(),
            route_service_url: r.text(6)?.unwrap_or_default(),
            modification_tag: ModificationTag {
                guid: r.text(7)?.unwrap_or_default(),
                index: index_from(r.int(8)?),
            },
        },
    })
}

/// `guid, router_group_guid, host_port, host_tls_port, host_ip, sni_hostname, instance_id,
/// external_port, modification_guid, modification_index, ttl, isolation_segment`
pub(crate) fn tcp_row(r: &impl RowGet) -> Result<TcpRow, StoreError> {
    let tls = r.int(3)?.unwrap_or(0);
    Ok(TcpRow {
        guid: r.text(0)?.unwrap_or_default(),
        mapping: TcpRouteMapping {
            router_group_guid: r.text(1)?.unwrap_or_default(),
            backend_port: port_from(r.int(2)?, "host_port")?,
            backend_tls_port: if tls > 0 {
                i32::try_from(tls)
                    .map_err(|_| StoreError::InvalidData(format!("host_tls_port {tls}")))?
            } else {
                0
            },
            backend_ip: r.text(4)?.unwrap_or_default(),
            backend_sni_hostname: r.text(5)?.filter(|s| !s.is_empty()),
            instance_id: r.text(6)?.unwrap_or_default(),
            port: port_from(r.int(7)?, "external_port")?,
            modification_tag: ModificationTag {
                guid: r.text(8)?.unwrap_or_default(),
                index: index_from(r.int(9)?),
            },
            ttl: r.int(10)?,
            isolation_segment: r.text(11)?.unwrap_or_default(),
        },
    })
}

/// The routes of `HTTP_COLUMNS` rows.
pub(crate) fn http_routes_of(rows: &[impl RowGet]) -> Result<Vec<HttpRoute>, StoreError> {
    rows.iter().map(|r| http_row(r).map(|h| h.route)).collect()
}

/// The mappings of `TCP_COLUMNS` rows.
pub(crate) fn tcp_routes_of(rows: &[impl RowGet]) -> Result<Vec<TcpRouteMapping>, StoreError> {
    rows.iter().map(|r| tcp_row(r).map(|t| t.mapping)).collect()
}

/// The route of the first of `HTTP_COLUMNS` rows (what a delete hands back).
pub(crate) fn first_http_route(rows: &[impl RowGet]) -> Result<Option<HttpRoute>, StoreError> {
    rows.first()
        .map(|r| http_row(r).map(|h| h.route))
        .transpose()
}

/// The mapping of the first of `TCP_COLUMNS` rows (what a delete hands back).
pub(crate) fn first_tcp_route(rows: &[impl RowGet]) -> Result<Option<TcpRouteMapping>, StoreError> {
    rows.first()
        .map(|r| tcp_row(r).map(|t| t.mapping))
        .transpose()
}

/// `guid, name, type, reservable_ports`
pub(crate) fn router_group_row(r: &impl RowGet) -> Result<RouterGroup, StoreError> {
    Ok(RouterGroup {
        guid: r.text(0)?.unwrap_or_default(),
        name: r.text(1)?.unwrap_or_default(),
        kind: r.text(2)?.unwrap_or_default(),
        reservable_ports: r.text(3)?.unwrap_or_default(),
    })
}

/// Rewrites a unique violation from inserting `groups` into a readable [`StoreError::Duplicate`].
pub(crate) fn router_group_duplicate(err: StoreError, groups: &[RouterGroup]) -> StoreError {
    match err {
        StoreError::Duplicate(msg) => {
            let by_name = msg.contains("idx_rg_name") || msg.contains("router_groups.name");
            match (groups, by_name) {
                ([g], true) => {
                    StoreError::Duplicate(format!("router group name '{}' already exists", g.name))
                }
                ([g], false) => {
                    StoreError::Duplicate(format!("router group guid '{}' already exists", g.guid))
                }
                _ => StoreError::Duplicate(format!("router group already exists: {msg}")),
            }
        }
        other => other,
    }
}

/// Maps a failed migration `step`: a plain database error becomes [`StoreError::Migration`]
/// naming the step; outages and the like keep their class.
pub(crate) fn migration_err(step: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| match StoreError::from(e) {
        StoreError::Database(e) => StoreError::Migration(format!("{step}: {e}")),
        other => other,
    }
}

/// Placeholders `?, ?, …` for an `IN` list.
fn placeholders(n: usize) -> String {
    let mut s = String::with_capacity(n * 3);
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('?');
    }
    s
}

/// `IN` lists are chunked to keep statements small.
const IN_CHUNK: usize = 500;

fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://<credentials>{}", &url[..s], &url[at..]),
        _ => url.to_owned(),
    }
}
