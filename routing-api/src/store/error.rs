//! [`StoreError`]: what went wrong, classified the way the API needs it.

use sqlx::error::ErrorKind;
use sqlx::mysql::MySqlDatabaseError;
use sqlx::postgres::PgDatabaseError;
use sqlx::sqlite::SqliteError;

/// Message upstream returns while the BBR admin endpoints hold router groups locked.
pub const BACKUP_LOCKED_MESSAGE: &str = "Database unavailable due to backup or restore";

/// Errors of [`super::Store`].
///
/// The API maps [`StoreError::Unavailable`] and [`StoreError::BackupLocked`] (and, in practice,
/// every other database failure) to `503 DBCommunicationError`; [`StoreError::NotFound`] and
/// [`StoreError::Duplicate`] exist so handlers can answer 404 / the router-group special cases.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is not serving: connection refused or reset, pool
    /// acquire timeout, server gone away or shutting down, read-only, SQLite file busy or
    /// unopenable. Transient: the pool reconnects by itself once the server is back.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A store call did not finish within its deadline ([`super::StoreConfig::query_timeout`]);
    /// its transaction was rolled back. Transient, like [`StoreError::Unavailable`].
    #[error(
        "database did not complete {operation} within {after:?} (the server is overloaded, \
         locked or unreachable; the write was rolled back, retry later)"
    )]
    Timeout {
        operation: &'static str,
        after: std::time::Duration,
    },
    /// A router-group write refused by the check run in its transaction (see
    /// [`super::Store::create_router_group_checked`]); the message says why.
    #[error("{0}")]
    Rejected(String),
    /// Router-group reads or writes are locked by the BBR admin endpoints.
    #[error("{}", BACKUP_LOCKED_MESSAGE)]
    BackupLocked,
    /// The addressed row does not exist (e.g. updating an unknown router group).
    #[error("{0} not found")]
    NotFound(String),
    /// A unique index rejected the write (e.g. `idx_rg_name`: a router group with that name
    /// already exists).
    #[error("duplicate: {0}")]
    Duplicate(String),
    /// Concurrent writers kept colliding (deadlocks) after all retries.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The store configuration or URL is invalid.
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// A schema migration failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// A stored value cannot be represented in the wire model (e.g. a port out of range).
    #[error("invalid stored data: {0}")]
    InvalidData(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl StoreError {
    /// Whether this is a "cannot talk to the database" error (503 DBCommunicationError).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_) | StoreError::BackupLocked | StoreError::Timeout { .. }
        )
    }

    /// Classifies a raw sqlx error.
    pub(crate) fn from_sqlx(err: sqlx::Error) -> StoreError {
        if is_unavailable(&err) {
            return StoreError::Unavailable(err);
        }
        match err {
            sqlx::Error::RowNotFound => StoreError::NotFound("row".to_owned()),
            sqlx::Error::Configuration(e) => StoreError::Config(e.to_string()),
            sqlx::Error::Database(db) if db.kind() == ErrorKind::UniqueViolation => {
                StoreError::Duplicate(db.message().to_owned())
            }
            sqlx::Error::Database(db) if mysql_number(db.as_ref()) == Some(MYSQL_DEADLOCK) => {
                StoreError::Conflict(db.message().to_owned())
            }
            sqlx::Error::Database(db)
                if matches!(pg_code(db.as_ref()), Some(PG_DEADLOCK | PG_SERIALIZATION)) =>
            {
                StoreError::Conflict(db.message().to_owned())
            }
            other => StoreError::Database(other),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        StoreError::from_sqlx(err)
    }
}

pub(crate) const MYSQL_DUP_ENTRY: u16 = 1062;
pub(crate) const MYSQL_DEADLOCK: u16 = 1213;
/// MariaDB 11.6+ with `innodb_snapshot_isolation`: "Record has changed since last read".
pub(crate) const MYSQL_RECORD_CHANGED: u16 = 1020;

/// MySQL/MariaDB server error numbers that mean "not serving right now".
const MYSQL_UNAVAILABLE: &[u16] = &[
    1040, // too many connections
    1045, // access denied (credentials rotated / not yet provisioned)
    1047, // WSREP has not yet prepared node for application use (Galera)
    1049, // unknown database
    1053, // server shutdown in progress
    1077, // normal shutdown
    1079, // shutdown complete
    1152, // aborted connection
    1153, // packet too large (connection dropped)
    1158, 1159, 1160, 1161, // network read/write errors and timeouts
    1203, // max user connections
    1205, // lock wait timeout exceeded
    1290, // --read-only
    1317, // query interrupted
    1792, // read-only transaction
    1836, // read-only mode
    1927, // connection was killed
    4031, // disconnected by server due to inactivity
];

pub(crate) fn mysql_number(db: &dyn sqlx::error::DatabaseError) -> Option<u16> {
    db.try_downcast_ref::<MySqlDatabaseError>()
        .map(MySqlDatabaseError::number)
}

/// PostgreSQL `deadlock_detected`.
pub(crate) const PG_DEADLOCK: &str = "40P01";
/// PostgreSQL `serialization_failure`.
pub(crate) const PG_SERIALIZATION: &str = "40001";
/// PostgreSQL `unique_violation`.
pub(crate) const PG_UNIQUE: &str = "23505";

/// PostgreSQL SQLSTATEs that mean "not serving right now" (besides class 08, connection
/// exceptions, and class 53, insufficient resources, which all do).
const PG_UNAVAILABLE: &[&str] = &[
    "28000", // invalid authorization (credentials rotated / not yet provisioned)
    "28P01", // invalid password
    "3D000", // unknown database
    "25006", // read-only transaction (standby, or default_transaction_read_only)
    "55P03", // lock not available (lock_timeout)
    "57014", // query canceled (statement_timeout)
    "57P01", // admin shutdown
    "57P02", // crash shutdown
    "57P03", // cannot connect now (starting up, recovery)
    "57P05", // idle session timeout
];

/// The SQLSTATE of a PostgreSQL error.
pub(crate) fn pg_code(db: &dyn sqlx::error::DatabaseError) -> Option<&str> {
    db.try_downcast_ref::<PgDatabaseError>()
        .map(PgDatabaseError::code)
}

fn sqlite_primary_code(db: &dyn sqlx::error::DatabaseError) -> Option<i64> {
    db.try_downcast_ref::<SqliteError>()?;
    db.code()
        .and_then(|c| c.parse::<i64>().ok())
        .map(|c| c & 0xff)
}

fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            if let Some(n) = mysql_number(db.as_ref()) {
                return MYSQL_UNAVAILABLE.contains(&n);
            }
            if let Some(code) = pg_code(db.as_ref()) {
                return code.starts_with("08")
                    || code.starts_with("53")
                    || PG_UNAVAILABLE.contains(&code);
            }
            // SQLITE_BUSY 5, SQLITE_LOCKED 6, SQLITE_READONLY 8, SQLITE_IOERR 10,
            // SQLITE_FULL 13, SQLITE_CANTOPEN 14
            matches!(
                sqlite_primary_code(db.as_ref()),
                Some(5 | 6 | 8 | 10 | 13 | 14)
            )
        }
        _ => false,
    }
}

/// Whether a MySQL transaction failed only because a concurrent writer won a race, so running
/// it again (in a new transaction) will succeed: deadlock victim, or a duplicate key raised by
/// the insert branch of an upsert whose row another transaction just inserted.
pub(crate) fn mysql_retryable(err: &sqlx::Error, duplicate_is_race: bool) -> bool {
    match err {
        sqlx::Error::Database(db) => match mysql_number(db.as_ref()) {
            Some(MYSQL_DEADLOCK | MYSQL_RECORD_CHANGED) => true,
            Some(MYSQL_DUP_ENTRY) => duplicate_is_race,
            _ => false,
        },
        _ => false,
    }
}

/// [`mysql_retryable`] for PostgreSQL: deadlock victim, serialization failure, or (with
/// `duplicate_is_race`) a unique violation raised by a racing insert.
pub(crate) fn pg_retryable(err: &sqlx::Error, duplicate_is_race: bool) -> bool {
    match err {
        sqlx::Error::Database(db) => match pg_code(db.as_ref()) {
            Some(PG_DEADLOCK | PG_SERIALIZATION) => true,
            Some(PG_UNIQUE) => duplicate_is_race,
            _ => false,
        },
        _ => false,
    }
}
