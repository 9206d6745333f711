//! The routing API's lock (B.9): `lock_resource_key` held with owner `uuid`, TTL 15 s,
//! refreshed every second. Two backends behind locket's `LockBackend`: a Locket server over
//! mutual TLS when `locket.locket_address` is set, otherwise Locket's `locks` table in the
//! routing API's own database, so routing-api processes sharing a database are active/standby.
//!
//! Never two active instances: a peer may take the lock `ttl` after the holder's last refresh
//! reached the lock's store (the database, or the Locket server, which counts the TTL from the
//! last Lock it processed). So with either backend a refresh that fails (the store is
//! unreachable) or takes longer than its budget is tolerated only while the last successful
//! refresh started less than [`refresh_bound`] (a third of the TTL, 5 s) ago: past that the
//! lock counts as lost ([`HeldLock::lost`] resolves, even if the refresh call is still
//! pending) and the process stops serving, well before the TTL lets a peer in. A slow or
//! briefly unreachable store within that bound costs nothing (upstream's lock runner exits at
//! the first refresh slower than its 1 s retry interval, which a loaded host hits). A refresh
//! that finds another owner ends the lock at once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use locket::runner::{hold_lock, BackendFuture, LockBackend, LockHandle, LockRunnerConfig};
use locket::sql::{DbConnectOptions, LockTable, PoolSettings};
use locket::{LockError, Resource};

use crate::config::{Config, Database};

/// How long a held lock may go without a successful refresh before it counts as lost: a third
/// of the TTL, so that the holder has stopped serving (with seconds to spare for closing
/// connections) before a peer's TTL timer on the last refreshed version can fire.
pub fn refresh_bound(ttl: Duration) -> Duration {
    ttl / 3
}

/// When the last successful refresh of a held lock started (`None`: not held yet). A refresh
/// is dated by its start, not its end: the database may have committed it at any point in
/// between, and a peer's TTL counts from there.
#[derive(Clone, Default)]
struct Lease {
    renewed_at: Arc<Mutex<Option<Instant>>>,
}

impl Lease {
    fn renewed(&self, started: Instant) {
        let mut at = self.renewed_at.lock().unwrap_or_else(|e| e.into_inner());
        if at.is_none_or(|t| t < started) {
            *at = Some(started);
        }
    }

    fn renewed_at(&self) -> Option<Instant> {
        *self.renewed_at.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves once no refresh has succeeded for `bound`, with how long it has been.
    async fn expired(&self, bound: Duration) -> Duration {
        loop {
            let Some(at) = self.renewed_at() else {
                // Not held yet: nothing can expire (callers only wait once it is held).
                tokio::time::sleep(bound).await;
                continue;
            };
            let deadline = at + bound;
            if Instant::now() >= deadline {
                return at.elapsed();
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// A lock backend whose failed or slow refreshes are tolerated while the lease is fresh (see
/// the module doc).
struct LeasedLock<B> {
    store: B,
    /// How long one lock call may take: less than the runner's own timeout (its retry
    /// interval), so that a store refusing connections (a pool or channel retrying until its
    /// own timeout) ends as a tolerated [`LockError::Timeout`] here instead of the runner's,
    /// which would end the process.
    call_budget: Duration,
    lease: Lease,
    /// See [`refresh_bound`].
    bound: Duration,
}

impl<B: LockBackend> LockBackend for LeasedLock<B> {
    fn lock<'a>(&'a self, resource: &'a Resource, ttl_secs: i64) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            let started = Instant::now();
            let call = tokio::time::timeout(self.call_budget, self.store.lock(resource, ttl_secs));
            let result = call
                .await
                .unwrap_or(Err(LockError::Timeout(self.call_budget)));
            match result {
                Ok(()) => {
                    self.lease.renewed(started);
                    Ok(())
                }
                Err(e @ (LockError::Unavailable(_) | LockError::Timeout(_))) => {
                    match self.lease.renewed_at() {
                        Some(at) if started.duration_since(at) < self.bound => {
                            tracing::warn!(
                                error = %e,
                                unrefreshed_ms = at.elapsed().as_millis() as u64,
                                "lock-refresh-deferred-store-unavailable"
                            );
                            Ok(())
                        }
                        // Not held yet, or unrefreshed for too long: the runner ends (lost).
                        _ => Err(e),
                    }
                }
                Err(e) => Err(e),
            }
        })
    }

    fn release<'a>(&'a self, key: &'a str, owner: &'a str) -> BackendFuture<'a, ()> {
        self.store.release(key, owner)
    }

    fn owner<'a>(&'a self, key: &'a str) -> BackendFuture<'a, String> {
        self.store.owner(key)
    }
}

/// Locket's `locks` table in the routing API's database, expiring dead holders' locks itself
/// (no Locket server does it).
struct DatabaseLock {
    table: LockTable,
    /// This process's TTL timers (see [`locket::expiry`]).
    expirer: locket::expiry::Expirer,
}

impl LockBackend for DatabaseLock {
    fn lock<'a>(&'a self, resource: &'a Resource, ttl_secs: i64) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            match self.table.lock(resource, ttl_secs).await {
                Ok(_) => Ok(()),
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
            &crate::database::store_config(config),
        )),
        Database::Postgres { .. } => DbConnectOptions::Postgres(
            crate::store::postgres_connect_options(&crate::database::store_config(config)),
        ),
        Database::Sqlite { path } => {
            DbConnectOptions::for_driver("sqlite", &path.display().to_string())
                .map_err(|e| anyhow::anyhow!("{e}"))?
        }
    })
}

/// A lock this process holds.
pub struct HeldLock {
    handle: LockHandle,
    lease: Lease,
    /// See [`refresh_bound`].
    bound: Duration,
    _expiry: Option<locket::expiry::ExpiryTask>,
}

/// Joins the competition for the lock and returns once it is held. Standby processes wait
/// here, serving nothing.
pub async fn acquire(config: &Config) -> anyhow::Result<HeldLock> {
    let lease = Lease::default();
    let bound = refresh_bound(config.lock_ttl);
    let call_budget = config.lock_retry_interval.mul_f64(0.8);
    let (backend, expiry): (Arc<dyn LockBackend>, _) = if config.locket.locket_address.is_empty() {
        let table = LockTable::connect_with(database_options(config)?, PoolSettings::default())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("cannot open the lock table in the database")?;
        // No Locket server expires the locks of dead holders: every process does it.
        let expiry = locket::expiry::spawn(table.clone());
        let store = DatabaseLock {
            table,
            expirer: expiry.expirer().clone(),
        };
        (
            Arc::new(LeasedLock {
                store,
                call_budget,
                lease: lease.clone(),
                bound,
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
        (
            Arc::new(LeasedLock {
                store: client,
                call_budget,
                lease: lease.clone(),
                bound,
            }),
            None,
        )
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
        lease,
        bound,
        _expiry: expiry,
    })
}

impl HeldLock {
    /// Resolves when the lock is lost, with the reason: the runner ended (another owner, or
    /// a refresh failed past the bound), or no refresh succeeded for [`refresh_bound`] while
    /// one is still pending.
    pub async fn lost(&mut self) -> String {
        let (lease, bound) = (self.lease.clone(), self.bound);
        tokio::select! {
            finished = self.handle.finished() => match finished {
                Err(e) => e.to_string(),
                Ok(()) => "the lock runner stopped".into(),
            },
            since = lease.expired(bound) => format!(
                "the lock was not refreshed for {}ms (bound {}ms, a third of its TTL): a peer may take it when the TTL runs out",
                since.as_millis(),
                bound.as_millis()
            ),
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
    fn the_refresh_bound_is_a_third_of_the_ttl() {
        assert_eq!(
            refresh_bound(Duration::from_secs(15)),
            Duration::from_secs(5)
        );
    }

    #[tokio::test]
    async fn the_lease_expires_a_bound_after_the_last_refresh_started_unless_renewed() {
        let bound = Duration::from_millis(300);
        let lease = Lease::default();
        let start = Instant::now();
        lease.renewed(start);
        // Renewed halfway: the deadline moves to that refresh's start plus the bound.
        let l = lease.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            l.renewed(Instant::now());
            // An older refresh finishing late never moves the deadline back.
            l.renewed(start);
        });
        // Expires at all (a generous deadline), and not before the renewed deadline (450 ms):
        // a renewal or late refresh handled wrongly leaves it at 300 ms.
        let unrefreshed = tokio::time::timeout(Duration::from_secs(10), lease.expired(bound))
            .await
            .expect("the lease expires");
        let took = start.elapsed();
        assert!(unrefreshed >= bound, "{unrefreshed:?}");
        assert!(took >= Duration::from_millis(450), "{took:?}");
    }

    #[test]
    fn the_lock_table_reaches_mysql_like_the_store() {
        let plain = mysql_options(&mysql_config(""));
        assert_eq!(plain.get_host(), "db.example.com");
        assert_eq!(plain.get_port(), 3307);
        assert_eq!(plain.get_database(), Some("routing"));
        assert!(matches!(plain.get_ssl_mode(), MySqlSslMode::Disabled));
        // `sqldb.skip_ssl_validation` means TLS without verification, for the lock table too.
        let c = Config::from_yaml(
            "system_domain: example.com\nlog_guid: routing-api\nuuid: u1\n\
             sqldb: {type: mysql, host: db.example.com, schema: routing, skip_ssl_validation: true}\n",
            true,
        )
        .unwrap();
        assert!(matches!(
            mysql_options(&c).get_ssl_mode(),
            MySqlSslMode::Required
        ));
    }

    #[test]
    fn top_level_skip_ssl_validation_is_for_uaa_and_leaves_mysql_checks_alone() {
        // Upstream applied it to MySQL too: a UAA setting silently turned off database TLS
        // verification.
        let c = mysql_config("skip_ssl_validation: true\n");
        assert!(c.skip_ssl_validation);
        assert!(!crate::database::store_config(&c).skip_ssl_validation);
        let c = mysql_config("skip_ssl_validation: true\n");
        assert!(matches!(
            mysql_options(&c).get_ssl_mode(),
            MySqlSslMode::Disabled
        ));
    }
}
