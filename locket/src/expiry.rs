//! TTL expiry of locks: upstream's "lock pick" and "burglar".
//!
//! [`Expirer::register`] arms an in-memory timer of `ttl` seconds for one version of a lock
//! (key, modified_id, modified_index); when it fires the row is deleted only if it is still that
//! version ([`LockTable::expire_if_unchanged`]), i.e. nobody refreshed or replaced it. The
//! burglar ([`Expirer::sweep`], looped by [`spawn`]) lists every lock at startup and every
//! [`BURGLAR_INTERVAL`] and arms a timer for each version it has not armed yet, so locks written
//! by another process (or before a restart) expire too, at most `ttl` + interval after their
//! last refresh.
//!
//! Each expiry is counted in [`LocketMetrics`] (`locket_expired_total`), and each burglar pass
//! sets the held gauges (`locket_locks_held`, `locket_presences_held`) from the rows it listed.
//!
//! The Locket server runs one. A process that uses a [`LockTable`] directly as its lock backend
//! (the routing API without a Locket server) must run one too ([`spawn`]); otherwise a lock
//! abandoned by a dead holder would never expire.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::task::AbortHandle;

use crate::error::LockError;
use crate::metrics::LocketMetrics;
use crate::sql::LockTable;
use crate::types::{LockRecord, LockType};

/// How often the burglar lists all locks to arm missing TTL timers.
pub const BURGLAR_INTERVAL: Duration = Duration::from_secs(5);

/// Longest TTL timer armed (larger TTLs are clamped; effectively "never").
const MAX_TIMER: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The TTL timers, one per key, for the lock version last seen. Cheap to clone; the timers are
/// cancelled when the last clone is dropped.
#[derive(Clone)]
pub struct Expirer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Expirer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expirer")
            .field("armed", &self.armed_count())
            .finish()
    }
}

struct Inner {
    table: LockTable,
    metrics: LocketMetrics,
    timers: Mutex<HashMap<String, Armed>>,
}

struct Armed {
    modified_id: String,
    modified_index: i64,
    task: AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let timers = self.timers.get_mut().unwrap_or_else(|e| e.into_inner());
        for (_, armed) in timers.drain() {
            armed.task.abort();
        }
    }
}

impl Expirer {
    /// An expirer with no timers armed.
    pub fn new(table: LockTable) -> Self {
        Self::with_metrics(table, LocketMetrics::new())
    }

    /// An expirer with no timers armed that counts into `metrics`.
    pub fn with_metrics(table: LockTable, metrics: LocketMetrics) -> Self {
        Expirer {
            inner: Arc::new(Inner {
                table,
                metrics,
                timers: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Arms a timer for `record` unless one is armed already for the same or a newer version of
    /// the same lock (a different modified_id replaces the timer). Must be called within a tokio
    /// runtime.
    pub fn register(&self, record: LockRecord) {
        let mut timers = self.inner.timers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(armed) = timers.get(&record.key) {
            if armed.modified_id == record.modified_id
                && armed.modified_index >= record.modified_index
            {
                return;
            }
            armed.task.abort();
        }
        let ttl = Duration::from_secs(record.ttl.max(0).unsigned_abs()).min(MAX_TIMER);
        let key = record.key.clone();
        let armed = Armed {
            modified_id: record.modified_id.clone(),
            modified_index: record.modified_index,
            task: tokio::spawn(expire_after(
                Arc::downgrade(&self.inner),
                self.inner.table.clone(),
                self.inner.metrics.clone(),
                record,
                ttl,
            ))
            .abort_handle(),
        };
        timers.insert(key, armed);
    }

    /// One burglar pass: lists every lock, sets the held gauges and arms missing timers.
    /// Returns how many locks it saw.
    pub async fn sweep(&self) -> Result<usize, LockError> {
        let records = self.inner.table.fetch_all("").await?;
        let n = records.len();
        let of_type = |t: LockType| records.iter().filter(|r| r.lock_type == t.as_str()).count();
        self.inner
            .metrics
            .held(of_type(LockType::Lock), of_type(LockType::Presence));
        for record in records {
            self.register(record);
        }
        Ok(n)
    }

    /// Runs the burglar forever: a sweep now and then every `interval`.
    pub async fn run_burglar(&self, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.sweep().await {
                tracing::error!(error = %e, "locket.burglar.failed-to-fetch-locks");
            }
        }
    }

    /// How many timers are armed.
    pub fn armed_count(&self) -> usize {
        self.inner
            .timers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

async fn expire_after(
    pick: Weak<Inner>,
    table: LockTable,
    metrics: LocketMetrics,
    record: LockRecord,
    ttl: Duration,
) {
    tokio::time::sleep(ttl).await;
    match table
        .expire_if_unchanged(
            &record.key,
            &record.owner,
            &record.modified_id,
            record.modified_index,
        )
        .await
    {
        Ok(true) => {
            if let Some(lock_type) = LockType::from_type_str(&record.lock_type) {
                metrics.expired(lock_type);
            }
            tracing::info!(
                key = %record.key,
                owner = %record.owner,
                modified_index = record.modified_index,
                "locket.lock-pick.expired"
            )
        }
        Ok(false) => tracing::debug!(key = %record.key, "locket.lock-pick.lock-changed"),
        Err(e) => {
            tracing::error!(key = %record.key, error = %e, "locket.lock-pick.failed-to-expire")
        }
    }
    if let Some(pick) = pick.upgrade() {
        let mut timers = pick.timers.lock().unwrap_or_else(|e| e.into_inner());
        let same = timers.get(&record.key).is_some_and(|a| {
            a.modified_id == record.modified_id && a.modified_index == record.modified_index
        });
        if same {
            timers.remove(&record.key);
        }
    }
}

/// A running burglar with its timers; dropping it stops both.
#[derive(Debug)]
pub struct ExpiryTask {
    expirer: Expirer,
    burglar: AbortHandle,
}

impl ExpiryTask {
    /// The expirer (e.g. to [`Expirer::register`] a lock just taken, without waiting for the
    /// next sweep).
    pub fn expirer(&self) -> &Expirer {
        &self.expirer
    }
}

impl Drop for ExpiryTask {
    fn drop(&mut self) {
        self.burglar.abort();
    }
}

/// Spawns an [`Expirer`] over `table` with its burglar every [`BURGLAR_INTERVAL`].
pub fn spawn(table: LockTable) -> ExpiryTask {
    spawn_with_interval(table, BURGLAR_INTERVAL)
}

/// [`spawn`] with another burglar interval.
pub fn spawn_with_interval(table: LockTable, interval: Duration) -> ExpiryTask {
    spawn_with_metrics(table, interval, LocketMetrics::new())
}

/// [`spawn_with_interval`], counting expiries and held locks into `metrics`.
pub fn spawn_with_metrics(
    table: LockTable,
    interval: Duration,
    metrics: LocketMetrics,
) -> ExpiryTask {
    let expirer = Expirer::with_metrics(table, metrics);
    let runner = expirer.clone();
    let burglar = tokio::spawn(async move { runner.run_burglar(interval).await }).abort_handle();
    ExpiryTask { expirer, burglar }
}
