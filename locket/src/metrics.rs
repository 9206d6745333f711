//! Locket's Prometheus metrics: what the lock table holds and what the gRPC handlers and the
//! TTL expiry did. Served at `/metrics` by the `locket` binary when its config has a
//! `prometheus` block (see [`crate::config`]).
//!
//! | sample | type | what |
//! |---|---|---|
//! | `locket_locks_held` | gauge | rows of type `lock` in the table, as of the last burglar pass |
//! | `locket_presences_held` | gauge | rows of type `presence`, likewise |
//! | `locket_operations_total{operation,result}` | counter | RPCs answered: `operation` is `lock`, `release`, `fetch` or `fetch_all`; `result` is `ok`, `collision`, `not_found`, `invalid` (a request Locket refuses: bad TTL, owner or type) or `error` (the database failed) |
//! | `locket_expired_total{type}` | counter | locks (`type="lock"`) and presences (`type="presence"`) deleted by TTL expiry |
//!
//! The held gauges come from the burglar's pass over the whole table
//! ([`crate::expiry::BURGLAR_INTERVAL`], 5 s), which it makes anyway: they count the rows every
//! Locket server sharing the database wrote, not only this one's, at no extra query.
//!
//! Every label combination is created up front, so an RPC only increments an atomic (no lock,
//! no allocation) and every series exists, at 0, from the first scrape.

use prometheus_endpoint::prometheus_client::metrics::counter::Counter;
use prometheus_endpoint::prometheus_client::metrics::family::Family;
use prometheus_endpoint::prometheus_client::metrics::gauge::Gauge;
use prometheus_endpoint::prometheus_client::registry::Registry;

use crate::error::LockError;
use crate::types::LockType;

/// An RPC of `models.Locket`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Lock,
    Release,
    Fetch,
    FetchAll,
}

impl Operation {
    const ALL: [Operation; 4] = [
        Operation::Lock,
        Operation::Release,
        Operation::Fetch,
        Operation::FetchAll,
    ];

    /// The `operation` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Lock => "lock",
            Operation::Release => "release",
            Operation::Fetch => "fetch",
            Operation::FetchAll => "fetch_all",
        }
    }
}

/// How an RPC ended: the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Held by another owner (the normal answer to a standby's Lock).
    Collision,
    NotFound,
    /// Refused as malformed: TTL, owner or type.
    Invalid,
    /// The store failed (database unreachable, timeout, unexpected error).
    Error,
}

impl Outcome {
    const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::Collision,
        Outcome::NotFound,
        Outcome::Invalid,
        Outcome::Error,
    ];

    /// The `result` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Collision => "collision",
            Outcome::NotFound => "not_found",
            Outcome::Invalid => "invalid",
            Outcome::Error => "error",
        }
    }

    /// The outcome of a call that returned `result`.
    pub fn of<T>(result: &Result<T, LockError>) -> Self {
        match result {
            Ok(_) => Outcome::Ok,
            Err(LockError::Collision) => Outcome::Collision,
            Err(LockError::NotFound) => Outcome::NotFound,
            Err(LockError::InvalidTtl | LockError::InvalidOwner | LockError::InvalidType) => {
                Outcome::Invalid
            }
            Err(
                LockError::Unavailable(_)
                | LockError::Timeout(_)
                | LockError::Config(_)
                | LockError::Internal(_),
            ) => Outcome::Error,
        }
    }
}

type Labels = Vec<(&'static str, &'static str)>;

/// Locket's metrics. Cheap to clone: clones share the same atomics.
#[derive(Debug, Clone)]
pub struct LocketMetrics {
    locks_held: Gauge,
    presences_held: Gauge,
    operations: Family<Labels, Counter>,
    /// `operations`' counters, indexed `[operation][outcome]`.
    operation_handles: [[Counter; 5]; 4],
    expired_locks: Counter,
    expired_presences: Counter,
    expired: Family<Labels, Counter>,
}

impl Default for LocketMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl LocketMetrics {
    /// Metrics not (yet) in any registry: they count, nobody scrapes them unless
    /// [`register`](Self::register)ed.
    pub fn new() -> Self {
        let operations = Family::<Labels, Counter>::default();
        let operation_handles = Operation::ALL.map(|op| {
            Outcome::ALL.map(|outcome| {
                operations.get_or_create_owned(&vec![
                    ("operation", op.as_str()),
                    ("result", outcome.as_str()),
                ])
            })
        });
        let expired = Family::<Labels, Counter>::default();
        let expired_locks = expired.get_or_create_owned(&vec![("type", LockType::Lock.as_str())]);
        let expired_presences =
            expired.get_or_create_owned(&vec![("type", LockType::Presence.as_str())]);
        LocketMetrics {
            locks_held: Gauge::default(),
            presences_held: Gauge::default(),
            operations,
            operation_handles,
            expired_locks,
            expired_presences,
            expired,
        }
    }

    /// Adds every metric to `registry` (names in the [module docs](self)).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "locket_locks_held",
            "Locks in the lock table, as of the last burglar pass",
            self.locks_held.clone(),
        );
        registry.register(
            "locket_presences_held",
            "Presences in the lock table, as of the last burglar pass",
            self.presences_held.clone(),
        );
        registry.register(
            "locket_operations",
            "Locket RPCs answered, by operation and result",
            self.operations.clone(),
        );
        registry.register(
            "locket_expired",
            "Locks and presences deleted by TTL expiry, by type",
            self.expired.clone(),
        );
    }

    /// Counts one answered RPC.
    pub fn operation<T>(&self, operation: Operation, result: &Result<T, LockError>) {
        let outcome = Outcome::of(result) as usize;
        self.operation_handles[operation as usize][outcome].inc();
    }

    /// Counts a row deleted by TTL expiry.
    pub fn expired(&self, lock_type: LockType) {
        match lock_type {
            LockType::Lock => self.expired_locks.inc(),
            LockType::Presence => self.expired_presences.inc(),
        };
    }

    /// Sets the held gauges from a pass over every row of the table.
    pub fn held(&self, locks: usize, presences: usize) {
        self.locks_held
            .set(i64::try_from(locks).unwrap_or(i64::MAX));
        self.presences_held
            .set(i64::try_from(presences).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(metrics: &LocketMetrics) -> String {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        prometheus_endpoint::encode(&registry)
    }

    #[test]
    fn every_operation_and_result_is_a_series_from_the_start() {
        let text = rendered(&LocketMetrics::new());
        for op in Operation::ALL {
            for outcome in Outcome::ALL {
                let line = format!(
                    "locket_operations_total{{operation=\"{}\",result=\"{}\"}} 0\n",
                    op.as_str(),
                    outcome.as_str()
                );
                assert!(text.contains(&line), "no {line:?} in {text}");
            }
        }
        assert!(
            text.contains("locket_expired_total{type=\"lock\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("locket_expired_total{type=\"presence\"} 0\n"),
            "{text}"
        );
    }

    #[test]
    fn errors_map_to_bounded_results() {
        let metrics = LocketMetrics::new();
        metrics.operation::<()>(Operation::Lock, &Err(LockError::InvalidTtl));
        metrics.operation::<()>(
            Operation::Lock,
            &Err(LockError::Timeout(Default::default())),
        );
        metrics.operation(Operation::Release, &Ok(()));
        let text = rendered(&metrics);
        assert!(
            text.contains("locket_operations_total{operation=\"lock\",result=\"invalid\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("locket_operations_total{operation=\"lock\",result=\"error\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("locket_operations_total{operation=\"release\",result=\"ok\"} 1\n"),
            "{text}"
        );
    }
}
