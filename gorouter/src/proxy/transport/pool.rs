//! Reusable connections to one backend: idle HTTP/1.1 connections in a lock-free bounded
//! queue (checking one out takes no lock), and the one shared HTTP/2 connection; and the
//! [`IdleBudget`] that caps idle connections across every backend of a transport.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use crossbeam_queue::ArrayQueue;
use hyper::client::conn::http2;

use crate::proxy::body::RequestBody;

use super::Sender;

/// How long a connection may sit idle before it is closed instead of reused (Go's
/// `IdleConnTimeout`); backends often close earlier, which the retry of a request that never
/// reached them covers.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How many idle connections every backend of one transport may hold together
/// (`max_idle_conns`, Go's `Transport.MaxIdleConns`; 0 is no limit): a count the pools share,
/// one atomic update per connection returned or taken.
#[derive(Debug)]
pub struct IdleBudget {
    max: usize,
    held: AtomicUsize,
}

impl IdleBudget {
    /// `max` 0 is no limit.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            held: AtomicUsize::new(0),
        })
    }

    /// Takes one slot; false when every slot is held.
    fn try_hold(&self) -> bool {
        if self.max == 0 {
            return true;
        }
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives `n` slots back.
    fn release(&self, n: usize) {
        if self.max != 0 && n > 0 {
            self.held.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// Idle connections held now (0 when unlimited: nothing is counted).
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

/// Idle keep-alive connections to one backend, with the time each was returned.
///
/// The queue is allocated when the first connection is returned: a slot is ~50 bytes, so
/// 100 slots for each of 100k endpoints that never see traffic would cost ~500 MiB.
pub struct IdleConnections {
    capacity: usize,
    /// Shared with the transport's other pools; a queued connection holds one slot.
    budget: Arc<IdleBudget>,
    queue: OnceLock<ArrayQueue<(Sender, Instant)>>,
    /// The HTTP/2 connection every request to this backend shares while it is open.
    http2: ArcSwapOption<http2::SendRequest<RequestBody>>,
    /// Set by every checkout and return, cleared by the sweeper: a pool found unused by a
    /// sweep (one per [`IDLE_TIMEOUT`]) holds only expired connections. A flag, not a
    /// timestamp, so the request path reads no clock.
    used: AtomicBool,
}

impl IdleConnections {
    /// `capacity` (`max_idle_conns_per_host`) 0 disables keep-alive to this backend.
    pub fn new(capacity: usize, budget: Arc<IdleBudget>) -> Self {
        Self {
            capacity,
            budget,
            queue: OnceLock::new(),
            http2: ArcSwapOption::empty(),
            used: AtomicBool::new(true),
        }
    }

    fn touch(&self) {
        // Read first: no cache-line write when it is already set (the common case).
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
    }

    /// Returns a connection for reuse; dropped (closed) when the pool is full. HTTP/2
    /// connections stay shared ([`share_http2`](Self::share_http2)) and need no return.
    pub fn put(&self, sender: Sender) {
        if self.capacity == 0 || sender.is_closed() || sender.is_http2() {
            return;
        }
        self.touch();
        if !self.budget.try_hold() {
            return;
        }
        let q = self.queue.get_or_init(|| ArrayQueue::new(self.capacity));
        if q.push((sender, Instant::now())).is_err() {
            self.budget.release(1);
        }
    }

    /// Offers a new HTTP/2 connection to the requests that follow.
    pub fn share_http2(&self, sender: &http2::SendRequest<RequestBody>) {
        if self.capacity == 0 {
            return;
        }
        self.touch();
        self.http2.store(Some(std::sync::Arc::new(sender.clone())));
    }

    /// An idle connection that is still open and ready for a request, if any: the shared
    /// HTTP/2 one first.
    pub async fn take(&self) -> Option<Sender> {
        if let Some(h2) = self.http2.load().as_ref() {
            if !h2.is_closed() {
                self.touch();
                return Some(Sender::Http2((**h2).clone()));
            }
        }
        let q = self.queue.get()?;
        self.touch();
        while let Some((mut sender, since)) = q.pop() {
            self.budget.release(1);
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

    /// Called once per [`IDLE_TIMEOUT`] by the sweeper: whether nothing used this pool since
    /// the previous call, so every connection it could hold has expired. Clears the mark.
    pub fn unused_since_last_sweep(&self) -> bool {
        !self.used.swap(false, Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.queue.get().map_or(0, |q| q.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for IdleConnections {
    /// A pool dropped by the sweeper gives its connections' slots back.
    fn drop(&mut self) {
        self.budget.release(self.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_capacity_pool_keeps_nothing() {
        let p = IdleConnections::new(0, IdleBudget::new(0));
        assert!(p.is_empty());
    }

    #[test]
    fn a_budget_holds_at_most_its_max_until_released() {
        let b = IdleBudget::new(2);
        assert!(b.try_hold() && b.try_hold());
        assert!(
            !b.try_hold(),
            "a third idle connection is over max_idle_conns"
        );
        b.release(1);
        assert!(b.try_hold(), "a released slot can be held again");
        assert_eq!(b.held(), 2);
    }

    #[test]
    fn a_zero_budget_is_unlimited() {
        let b = IdleBudget::new(0);
        assert!((0..10_000).all(|_| b.try_hold()));
        b.release(5);
        assert_eq!(b.held(), 0, "nothing is counted without a limit");
    }

    #[test]
    fn a_pool_is_unused_after_a_sweep_without_traffic() {
        let p = IdleConnections::new(4, IdleBudget::new(0));
        assert!(
            !p.unused_since_last_sweep(),
            "new pools survive their first sweep"
        );
        assert!(p.unused_since_last_sweep(), "nothing used it since");
    }
}
