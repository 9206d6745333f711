//! The routing API's lock (B.9): `lock_resource_key` held with owner `uuid`, TTL 15 s,
//! refreshed every second. Two backends behind locket's `LockBackend`: a Locket server over
//! mutual TLS when `locket.locket_address` is set, otherwise Locket's `locks` table in the
//! routing API's own database, so routing-api processes sharing a database are active/standby.
//!
//! With the database backend a database outage is not a lost lock: nobody else can take the
//! lock while the database is down either, and requests already answer 503 meanwhile. So a
//! refresh that fails only because the database is unreachable is tolerated once the lock was
//! held; a refresh that finds another owner ends the runner and the process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use locket::runner::{hold_lock, BackendFuture, LockBackend, LockHandle, LockRunnerConfig};
use locket::sql::{DbConnectOptions, LockTable, PoolSettings};
use locket::{LockError, Resource};

use crate::config::{Config, Database};

/// The database backend, tolerant of outages while the lock is held.
struct DatabaseLock {
    table: LockTable,
    /// How long one lock call may take: less than the runner's own timeout (its retry
    /// interval), so that a database refusing connections (the pool retries until its acquire
    /// timeout) ends as a tolerated [`LockError::Timeout`] here instead of the runner's, which
    /// would end the process.
    call_budget: Duration,
    held: AtomicBool,
    /// This process's TTL timers (see [`locket::expiry`]).
    expirer: locket::expiry::Expirer,
}

impl LockBackend for DatabaseLock {
    fn lock<'a>(&'a self, resource: &'a Resource, ttl_secs: i64) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            let call = tokio::time::timeout(self.call_budget, self.table.lock(resource, ttl_secs));
            let result = call
                .await
                .unwrap_or(Err(LockError::Timeout(self.call_budget)));
            match result {
                Ok(_) => {
                    self.held.store(true, Ordering::SeqCst);
                    Ok(())
                }
                Err(e @ (LockError::Unavailable(_) | LockError::Timeout(_)))
                    if self.held.load(Ordering::SeqCst) =>
                {
                    tracing::warn!(error = %e, "lock-refresh-deferred-database-unavailable");
                    Ok(())
                }
                Err(LockError::Collision) => {
                    // Someone else holds it: arm the TTL timer on the version just seen, so a
                    // holder that died expires `ttl` after its last refresh, as a Locket server
                    // would do it (the burglar alone sees versions only every 5 s, which let
                    // a take-over after `kill -9` take up to ~21 s instead of ~16 s).
                    if let Ok(record) = self.table.fetch(&resource.key).await {
                        self.expirer.register(record);
                    }
                    Err(LockError::Collision)
                }
                Err(e) => Err(e),
            }
        })
    }

    fn release<'a>(&'a self, key: &'a str, owner: &'a str) -> BackendFuture<'a, ()> {
        Box::pin(self.table.release(key, owner))
    }

    fn owner<'a>(&'a self, key: &'a str) -> BackendFuture<'a, String> {
        Box::pin(async move { self.table.fetch(key).await.map(|r| r.owner) })
    }
}

/// The lock table lives in the routing API's own database and is reached the same way as the
/// store (same server, credentials and TLS settings).
fn database_options(config: &Config) -> anyhow::Result<DbConnectOptions> {
    Ok(match &config.database {
        Database::Mysql { .. } => DbConnectOptions::MySql(crate::store::mysql_connect_options(
            &crate::run::store_config(config),
        )),
        Database::Sqlite { path } => {
            DbConnectOptions::for_driver("sqlite", &path.display().to_string())
                .map_err(|e| anyhow::anyhow!("{e}"))?
        }
    })
}

/// A lock this process holds.
pub struct HeldLock {
    handle: LockHandle,
    _expiry: Option<locket::expiry::ExpiryTask>,
}

/// Joins the competition for the lock and returns once it is held. Standby processes wait
/// here, serving nothing.
pub async fn acquire(config: &Config) -> anyhow::Result<HeldLock> {
    let (backend, expiry): (Arc<dyn LockBackend>, _) = if config.locket.locket_address.is_empty() {
        let table = LockTable::connect_with(database_options(config)?, PoolSettings::default())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("cannot open the lock table in the database")?;
        // No Locket server expires the locks of dead holders: every process does it.
        let expiry = locket::expiry::spawn(table.clone());
        (
            Arc::new(DatabaseLock {
                table,
                call_budget: config.lock_retry_interval.mul_f64(0.8),
                held: AtomicBool::new(false),
                expirer: expiry.expirer().clone(),
            }),
            Some(expiry),
        )
    } else {
        let l = &config.locket;
        let client = locket::client::LocketClient::connect(
            &l.locket_address,
            &l.locket_ca_cert_file,
            &l.locket_client_cert_file,
            &l.locket_client_key_file,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("cannot set up the Locket client")?;
        (Arc::new(client), None)
    };
    let runner = LockRunnerConfig::lock(&config.lock_resource_key, &config.uuid)
        .with_ttl(config.lock_ttl)
        .with_retry_interval(config.lock_retry_interval);
    let mut handle = hold_lock(backend, runner);
    handle
        .acquired()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(HeldLock {
        handle,
        _expiry: expiry,
    })
}

impl HeldLock {
    /// Resolves when the lock is lost, with the reason.
    pub async fn lost(&mut self) -> String {
        match self.handle.finished().await {
            Err(e) => e.to_string(),
            Ok(()) => "the lock runner stopped".into(),
        }
    }

    /// Releases the lock (on shutdown).
    pub async fn release(self) {
        if let Err(e) = self.handle.release().await {
            tracing::warn!(error = %e, "lock-release-failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::mysql::MySqlSslMode;

    fn mysql_config(extra: &str) -> Config {
        Config::from_yaml(
            &format!(
                "system_domain: example.com\nlog_guid: routing-api\nuuid: u1\n\
                 sqldb: {{type: mysql, host: db.example.com, port: 3307, schema: routing, username: u, password: p}}\n{extra}"
            ),
            true,
        )
        .unwrap()
    }

    fn mysql_options(config: &Config) -> sqlx::mysql::MySqlConnectOptions {
        match database_options(config).unwrap() {
            DbConnectOptions::MySql(o) => o,
            _ => panic!("expected MySQL options"),
        }
    }

    #[test]
    fn the_lock_table_reaches_mysql_like_the_store() {
        let plain = mysql_options(&mysql_config(""));
        assert_eq!(plain.get_host(), "db.example.com");
        assert_eq!(plain.get_port(), 3307);
        assert_eq!(plain.get_database(), Some("routing"));
        assert!(matches!(plain.get_ssl_mode(), MySqlSslMode::Disabled));
        // `skip_ssl_validation` means TLS without verification, for the lock table too.
        let tls = mysql_options(&mysql_config("skip_ssl_validation: true\n"));
        assert!(matches!(tls.get_ssl_mode(), MySqlSslMode::Required));
    }
}
