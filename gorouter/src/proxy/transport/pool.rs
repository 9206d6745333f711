//! Reusable connections to one backend: idle HTTP/1.1 connections in a lock-free bounded
//! queue (checking one out takes no lock and never waits), and the one shared HTTP/2
//! connection; their closing once idle past their age ([`IdleConnections::reap`], driven by
//! the transport's reaper task); and the [`IdleBudget`] that caps idle connections across
//! every backend of a transport.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use crossbeam_queue::ArrayQueue;
use hyper::client::conn::http2;

use crate::proxy::body::RequestBody;

use super::Sender;

/// How long a connection may sit idle before it is closed (Go's `IdleConnTimeout`, which
/// upstream sets to 90 s); backends often close earlier, which the retry of a request that
/// never reached them covers.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How many reaper ticks make up one idle timeout: an idle connection is closed between one
/// idle timeout and one idle timeout plus a tick after it was returned.
pub const REAP_TICKS_PER_IDLE_TIMEOUT: u32 = 4;

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

    /// Whether every slot is held (never without a limit).
    fn is_spent(&self) -> bool {
        self.max != 0 && self.held() >= self.max
    }

    /// Idle connections held now (0 when unlimited: nothing is counted).
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

/// One idle connection and when it was returned.
type Idle = (Sender, Instant);

/// Idle keep-alive connections to one backend, with the time each was returned.
///
/// One queue per serving thread ([`process_setup::runtime_threads`]): a connection goes back to
/// the queue of its home thread, whose runtime drives it, and a request takes from its own
/// thread's queue, so a request and its backend connection stay on one thread. A request
/// finding its own queue empty dials (the new connection's home is its thread) unless the
/// pool is full, when a new connection could not be kept: then it borrows another thread's
/// connection, which costs two cross-thread wake-ups but no dial and close. `held` keeps the
/// queues together within `capacity`.
///
/// Each queue is allocated when its first connection is returned: a slot is ~50 bytes, so
/// 100 slots for each of 100k endpoints that never see traffic would cost ~500 MiB.
pub struct IdleConnections {
    capacity: usize,
    /// Shared with the transport's other pools; a queued connection holds one slot.
    budget: Arc<IdleBudget>,
    queues: Box<[OnceLock<ArrayQueue<Idle>>]>,
    /// Connections in all the queues, at most `capacity`.
    held: AtomicUsize,
    /// The HTTP/2 connection every request to this backend shares while it is open.
    http2: ArcSwapOption<http2::SendRequest<RequestBody>>,
    /// Set by every checkout and return, cleared by the sweeper: a pool found unused by a
    /// sweep (one per [`IDLE_TIMEOUT`]) holds only expired connections. A flag, not a
    /// timestamp, so the request path reads no clock.
    used: AtomicBool,
    /// How long a connection may sit idle in the queue.
    idle_timeout: Duration,
    /// Reaper ticks since a request last took the shared HTTP/2 connection; the reaper
    /// closes it after [`REAP_TICKS_PER_IDLE_TIMEOUT`] (a counter, not a timestamp, so
    /// the request path reads no clock).
    http2_idle_ticks: AtomicU32,
}

impl IdleConnections {
    /// `capacity` (`max_idle_conns_per_host`) 0 disables keep-alive to this backend.
    /// `idle_timeout` is how long a returned connection is kept unused.
    /// `queues` is how many threads serve requests (one queue each, at least one).
    pub fn new(
        capacity: usize,
        budget: Arc<IdleBudget>,
        idle_timeout: Duration,
        queues: usize,
    ) -> Self {
        Self {
            capacity,
            budget,
            queues: (0..queues.max(1)).map(|_| OnceLock::new()).collect(),
            held: AtomicUsize::new(0),
            http2: ArcSwapOption::empty(),
            used: AtomicBool::new(true),
            idle_timeout,
            http2_idle_ticks: AtomicU32::new(0),
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
        let home = match sender.home() {
            Some(home) if self.capacity != 0 && !sender.is_closed() => home,
            _ => return,
        };
        self.touch();
        let held = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            });
        if held.is_err() {
            return;
        }
        if !self.budget.try_hold() {
            self.held.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let q =
            self.queues[home % self.queues.len()].get_or_init(|| ArrayQueue::new(self.capacity));
        if q.push((sender, Instant::now())).is_err() {
            self.released(1);
        }
    }

    /// Gives back the slots of `n` connections that left the queues.
    fn released(&self, n: usize) {
        if n > 0 {
            self.held.fetch_sub(n, Ordering::AcqRel);
            self.budget.release(n);
        }
    }

    /// Offers a new HTTP/2 connection to the requests that follow.
    pub fn share_http2(&self, sender: &http2::SendRequest<RequestBody>) {
        if self.capacity == 0 {
            return;
        }
        self.touch();
        self.http2_idle_ticks.store(0, Ordering::Relaxed);
        self.http2.store(Some(std::sync::Arc::new(sender.clone())));
    }

    /// An idle connection that is still open and ready for a request, if any: the shared
    /// HTTP/2 one first. Never waits: a connection that is open but not ready yet (its task
    /// has not re-armed since it was returned) goes back for a later request, and the caller
    /// dials instead.
    pub fn take(&self) -> Option<Sender> {
        if let Some(h2) = self.http2.load().as_ref() {
            if !h2.is_closed() {
                self.touch();
                // Read first: no cache-line write while the connection is busy.
                if self.http2_idle_ticks.load(Ordering::Relaxed) != 0 {
                    self.http2_idle_ticks.store(0, Ordering::Relaxed);
                }
                return Some(Sender::Http2((**h2).clone()));
            }
        }
        let own = process_setup::runtime_threads::current_index() % self.queues.len();
        if let Some(sender) = self.queues[own].get().and_then(|q| self.take_from(q)) {
            return Some(sender);
        }
        if !self.is_full() {
            // Dialling is cheaper than borrowing: the new connection stays on this thread.
            return None;
        }
        (1..self.queues.len())
            .map(|i| (own + i) % self.queues.len())
            .find_map(|i| self.queues[i].get().and_then(|q| self.take_from(q)))
    }

    /// Whether a connection returned now would be closed for want of room: this backend's
    /// queues hold `capacity`, or the transport's budget (`max_idle_conns`) is spent.
    fn is_full(&self) -> bool {
        self.held.load(Ordering::Acquire) >= self.capacity || self.budget.is_spent()
    }

    fn take_from(&self, q: &ArrayQueue<Idle>) -> Option<Sender> {
        if q.is_empty() {
            return None;
        }
        self.touch();
        // Bounded by the queue's length: connections put back are not looked at again.
        for _ in 0..q.len() {
            let (sender, since) = q.pop()?;
            if sender.is_closed() {
                self.released(1);
                continue;
            }
            if sender.is_ready() {
                self.released(1);
                if since.elapsed() > self.idle_timeout {
                    continue;
                }
                return Some(sender);
            }
            // Keeps its slots while queued again; dropped if the queue filled up.
            if q.push((sender, since)).is_err() {
                self.released(1);
            }
        }
        None
    }

    /// Closes the connections idle for longer than the idle timeout (and those the backend
    /// closed), and the shared HTTP/2 connection when no request took it for that long.
    /// Called by the transport's reaper, [`REAP_TICKS_PER_IDLE_TIMEOUT`] times per idle
    /// timeout, so connections nobody asks for do not stay open. Returns how many were closed.
    pub fn reap(&self, now: Instant) -> usize {
        let mut closed = 0;
        let current = self.http2.load_full();
        if let Some(h2) = &current {
            let ticks = self.http2_idle_ticks.fetch_add(1, Ordering::Relaxed) + 1;
            if h2.is_closed() || ticks > REAP_TICKS_PER_IDLE_TIMEOUT {
                // In-flight requests hold their own handles; the connection closes when the
                // last one is done. A connection shared meanwhile stays.
                self.http2.compare_and_swap(&current, None);
                closed += 1;
            }
        }
        for q in self.queues.iter().filter_map(OnceLock::get) {
            // Every queued connection is looked at: one put back by `take` is out of age order.
            for _ in 0..q.len() {
                let Some((sender, since)) = q.pop() else {
                    break;
                };
                let expired =
                    sender.is_closed() || now.saturating_duration_since(since) > self.idle_timeout;
                // Dropped when expired, or when the queue filled up meanwhile.
                if expired || q.push((sender, since)).is_err() {
                    self.released(1);
                    closed += 1;
                }
            }
        }
        closed
    }

    /// Called once per [`IDLE_TIMEOUT`] by the sweeper: whether nothing used this pool since
    /// the previous call, so every connection it could hold has expired. Clears the mark.
    pub fn unused_since_last_sweep(&self) -> bool {
        !self.used.swap(false, Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.queues
            .iter()
            .filter_map(OnceLock::get)
            .map(ArrayQueue::len)
            .sum()
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
        let p = IdleConnections::new(0, IdleBudget::new(0), IDLE_TIMEOUT, 1);
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

    /// An HTTP/1.1 connection to nothing (the other end of an in-memory pipe), ready to send.
    async fn idle_http1() -> (Sender, tokio::io::DuplexStream) {
        let (client, server) = tokio::io::duplex(1024);
        let (mut send, conn) = hyper::client::conn::http1::handshake::<_, RequestBody>(
            hyper_util::rt::TokioIo::new(client),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        send.ready().await.unwrap();
        (Sender::http1_driven_here(send), server)
    }

    /// Two serving threads, and a pool of `capacity` with a queue for each.
    fn two_threads_and_a_pool(capacity: usize) -> (RuntimeThreads, Arc<IdleConnections>) {
        let threads = RuntimeThreads::start("test-pool", 2, None).unwrap();
        let pool = IdleConnections::new(capacity, IdleBudget::new(0), IDLE_TIMEOUT, 2);
        (threads, Arc::new(pool))
    }

    /// How many connections each thread's queue holds.
    fn queue_lengths(pool: &IdleConnections) -> Vec<usize> {
        pool.queues
            .iter()
            .map(|q| q.get().map_or(0, ArrayQueue::len))
            .collect()
    }

    /// A connection whose task runs on thread `thread`'s runtime.
    async fn driven_on(
        threads: &RuntimeThreads,
        thread: usize,
    ) -> (Sender, tokio::io::DuplexStream) {
        threads.handles()[thread].spawn(idle_http1()).await.unwrap()
    }

    /// Returns a connection driven on thread `thread` to `pool`, from that thread; how many
    /// each queue holds after.
    async fn put_from(
        threads: &RuntimeThreads,
        thread: usize,
        pool: &Arc<IdleConnections>,
    ) -> (Vec<usize>, tokio::io::DuplexStream) {
        let (sender, peer) = driven_on(threads, thread).await;
        let pool = pool.clone();
        threads.handles()[thread]
            .spawn(async move {
                pool.put(sender);
                (queue_lengths(&pool), peer)
            })
            .await
            .unwrap()
    }

    /// Takes a connection from `pool` on thread `thread`: whether there was one, and how many
    /// each queue holds after.
    async fn take_on(
        threads: &RuntimeThreads,
        thread: usize,
        pool: &Arc<IdleConnections>,
    ) -> (Option<Sender>, Vec<usize>) {
        let pool = pool.clone();
        threads.handles()[thread]
            .spawn(async move {
                let taken = pool.take();
                (taken, queue_lengths(&pool))
            })
            .await
            .unwrap()
    }

    use process_setup::runtime_threads::RuntimeThreads;

    #[tokio::test]
    async fn a_connection_goes_back_to_the_queue_of_the_thread_that_drives_it() {
        let (threads, pool) = two_threads_and_a_pool(4);
        let (held, _a) = put_from(&threads, 1, &pool).await;
        assert_eq!(held, [0, 1]);
        let (held, _b) = put_from(&threads, 0, &pool).await;
        assert_eq!(held, [1, 1]);
        // Driven on thread 1, returned from elsewhere: thread 1's queue.
        let (sender, _c) = driven_on(&threads, 1).await;
        pool.put(sender);
        assert_eq!(queue_lengths(&pool), [1, 2]);
    }

    #[tokio::test]
    async fn a_thread_takes_its_own_connection_and_dials_rather_than_borrow() {
        let (threads, pool) = two_threads_and_a_pool(4);
        let (_, _a) = put_from(&threads, 1, &pool).await;
        let (_, _b) = put_from(&threads, 0, &pool).await;
        let (first, held) = take_on(&threads, 0, &pool).await;
        assert!(first.is_some(), "its own queue's connection");
        assert_eq!(held, [0, 1]);
        let (second, held) = take_on(&threads, 0, &pool).await;
        assert!(
            second.is_none(),
            "with room in the pool, thread 1's connection stays there"
        );
        assert_eq!(held, [0, 1]);
    }

    #[tokio::test]
    async fn a_thread_borrows_another_threads_connection_when_the_pool_is_full() {
        let (threads, pool) = two_threads_and_a_pool(1);
        let (_, _a) = put_from(&threads, 1, &pool).await;
        let (borrowed, held) = take_on(&threads, 0, &pool).await;
        let borrowed = borrowed.expect("a full pool lends thread 1's connection");
        assert_eq!(held, [0, 0]);
        pool.put(borrowed);
        assert_eq!(queue_lengths(&pool), [0, 1], "and it goes back home");
    }

    #[tokio::test]
    async fn a_thread_borrows_when_the_transports_budget_is_spent() {
        let threads = RuntimeThreads::start("test-pool", 2, None).unwrap();
        let pool = Arc::new(IdleConnections::new(4, IdleBudget::new(1), IDLE_TIMEOUT, 2));
        let (_, _a) = put_from(&threads, 1, &pool).await;
        let (borrowed, _) = take_on(&threads, 0, &pool).await;
        assert!(
            borrowed.is_some(),
            "max_idle_conns 1 is held: a new connection could not be kept"
        );
    }

    #[tokio::test]
    async fn the_queues_together_hold_at_most_the_capacity() {
        let (threads, pool) = two_threads_and_a_pool(1);
        let (_, _a) = put_from(&threads, 0, &pool).await;
        let (held, _b) = put_from(&threads, 1, &pool).await;
        assert_eq!(
            held,
            [1, 0],
            "max_idle_conns_per_host 1 across both threads"
        );
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn a_pool_is_unused_after_a_sweep_without_traffic() {
        let p = IdleConnections::new(4, IdleBudget::new(0), IDLE_TIMEOUT, 1);
        assert!(
            !p.unused_since_last_sweep(),
            "new pools survive their first sweep"
        );
        assert!(p.unused_since_last_sweep(), "nothing used it since");
    }
}
