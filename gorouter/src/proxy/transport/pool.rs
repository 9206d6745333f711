//! Idle keep-alive connections to one backend: a lock-free bounded queue, so checking a
//! connection out takes no lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use super::Sender;

/// How long a connection may sit idle before it is closed instead of reused (Go's
/// `IdleConnTimeout`); backends often close earlier, which the retry of a request that never
/// reached them covers.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Idle keep-alive connections to one backend, with the time each was returned.
///
/// The queue is allocated when the first connection is returned: a slot is ~50 bytes, so
/// 100 slots for each of 100k endpoints that never see traffic would cost ~500 MiB.
pub struct IdleConnections {
    capacity: usize,
    queue: OnceLock<ArrayQueue<(Sender, Instant)>>,
    /// Milliseconds since `epoch` of the last checkout or return, for the sweeper.
    last_used_ms: AtomicU64,
    epoch: Instant,
}

impl IdleConnections {
    /// `capacity` 0 disables keep-alive to this backend.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            queue: OnceLock::new(),
            last_used_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_used_ms.store(ms, Ordering::Relaxed);
    }

    /// Returns a connection for reuse; dropped (closed) when the pool is full.
    pub fn put(&self, sender: Sender) {
        if self.capacity == 0 || sender.is_closed() {
            return;
        }
        self.touch();
        let q = self.queue.get_or_init(|| ArrayQueue::new(self.capacity));
        let _ = q.push((sender, Instant::now()));
    }

    /// An idle connection that is still open and ready for a request, if any.
    pub async fn take(&self) -> Option<Sender> {
        let q = self.queue.get()?;
        self.touch();
        while let Some((mut sender, since)) = q.pop() {
            if sender.is_closed() || since.elapsed() > IDLE_TIMEOUT {
                continue;
            }
            if sender.is_ready() {
                return Some(sender);
            }
            // Just returned: the connection task may not have re-armed yet.
            if let Ok(Ok(())) =
                tokio::time::timeout(Duration::from_millis(100), sender.ready()).await
            {
                return Some(sender);
            }
        }
        None
    }

    /// Whether nothing used this pool for [`IDLE_TIMEOUT`]: every connection it could hold
    /// has expired, so the sweeper may drop it.
    pub fn unused_for_idle_timeout(&self) -> bool {
        let idle_ms = self
            .epoch
            .elapsed()
            .as_millis()
            .saturating_sub(self.last_used_ms.load(Ordering::Relaxed) as u128);
        idle_ms > IDLE_TIMEOUT.as_millis()
    }

    pub fn len(&self) -> usize {
        self.queue.get().map_or(0, |q| q.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_capacity_pool_keeps_nothing() {
        let p = IdleConnections::new(0);
        assert!(p.is_empty());
    }

    #[test]
    fn a_fresh_pool_is_in_use() {
        assert!(!IdleConnections::new(4).unused_for_idle_timeout());
    }
}
