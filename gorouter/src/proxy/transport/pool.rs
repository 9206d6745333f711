//! Reusable connections to one backend: idle HTTP/1.1 connections in one stack per serving
//! thread (the most recently returned is handed out first; checking one out never waits), and
//! the one shared HTTP/2 connection; their closing once idle past their age
//! ([`IdleConnections::reap`], driven by the transport's reaper task); and the
//! [`IdleBudget`] that caps idle connections across every backend of a transport.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
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

/// One serving thread's stack, on cache lines of its own: each thread locks its own stack
/// twice a request, and two stacks sharing a line would bounce it between the cores. 128
/// bytes, because x86 cores fetch lines in adjacent pairs.
#[repr(align(128))]
struct Stack(Mutex<Vec<Idle>>);

impl std::ops::Deref for Stack {
    type Target = Mutex<Vec<Idle>>;

    fn deref(&self) -> &Mutex<Vec<Idle>> {
        &self.0
    }
}

/// Idle keep-alive connections to one backend, with the time each was returned.
///
/// One stack per serving thread ([`process_setup::runtime_threads`]): a connection goes back
/// to the stack of its home thread, whose runtime drives it, and a request takes from its own
/// thread's stack, so a request and its backend connection stay on one thread. A request
/// finding its own stack empty dials (the new connection's home is its thread) unless the
/// pool is full, when a new connection could not be kept: then it borrows another thread's
/// connection, which costs two cross-thread wake-ups but no dial and close. `held` keeps the
/// stacks together within `capacity`.
///
/// Last in, first out, as Go's transport and nginx's upstream keep-alive cache hand them out:
/// the connection used a moment ago (its socket and buffers still in the CPU's caches) serves
/// the next request, and connections a burst left over sink to the bottom and reach their idle
/// age instead of being cycled through. A stack is a `Mutex<Vec>` that only its own thread
/// takes on the request path (others only when borrowing from a full pool, and the reaper a
/// few times per idle timeout), so its lock is uncontended; a checkout that finds it held
/// dials rather than wait. An empty stack holds no allocation.
pub struct IdleConnections {
    capacity: usize,
    /// Shared with the transport's other pools; a stacked connection holds one slot.
    budget: Arc<IdleBudget>,
    stacks: Box<[Stack]>,
    /// Connections in all the stacks, at most `capacity`.
    held: AtomicUsize,
    /// The HTTP/2 connection every request to this backend shares while it is open.
    http2: ArcSwapOption<http2::SendRequest<RequestBody>>,
    /// Set by every checkout and return, cleared by the sweeper: a pool found unused by a
    /// sweep (one per [`IDLE_TIMEOUT`]) holds only expired connections. A flag, not a
    /// timestamp, so the request path reads no clock.
    used: AtomicBool,
    /// How long a connection may sit idle in the stack.
    idle_timeout: Duration,
    /// Reaper ticks since a request last took the shared HTTP/2 connection; the reaper
    /// closes it after [`REAP_TICKS_PER_IDLE_TIMEOUT`] (a counter, not a timestamp, so
    /// the request path reads no clock).
    http2_idle_ticks: AtomicU32,
}

/// A stack's guard; a stack whose lock was poisoned still holds valid connections (nothing
/// panics while holding it).
fn locked(stack: &Mutex<Vec<Idle>>) -> MutexGuard<'_, Vec<Idle>> {
    stack.lock().unwrap_or_else(|e| e.into_inner())
}

impl IdleConnections {
    /// `capacity` (`max_idle_conns_per_host`) 0 disables keep-alive to this backend.
    /// `idle_timeout` is how long a returned connection is kept unused.
    /// `threads` is how many threads serve requests (one stack each, at least one).
    pub fn new(
        capacity: usize,
        budget: Arc<IdleBudget>,
        idle_timeout: Duration,
        threads: usize,
    ) -> Self {
        Self {
            capacity,
            budget,
            stacks: (0..threads.max(1))
                .map(|_| Stack(Mutex::new(Vec::new())))
                .collect(),
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
        self.put_at(sender, Instant::now());
    }

    /// [`put`](Self::put) with the time it went idle, read by the caller for other uses too.
    pub fn put_at(&self, mut sender: Sender, idle_since: Instant) {
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
        locked(&self.stacks[home % self.stacks.len()]).push((sender, idle_since));
    }

    /// Gives back the slots of `n` connections that left the stacks.
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
    /// dials instead. `now` is the caller's clock reading, which it uses again for the
    /// backend request's start: one reading where there were two or more.
    pub fn take(&self, now: Instant) -> Option<Sender> {
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
        let own = process_setup::runtime_threads::current_index() % self.stacks.len();
        if let Some(sender) = self.take_from(&self.stacks[own], now) {
            return Some(sender);
        }
        if !self.is_full() {
            // Dialling is cheaper than borrowing: the new connection stays on this thread.
            return None;
        }
        (1..self.stacks.len())
            .map(|i| (own + i) % self.stacks.len())
            .find_map(|i| self.take_from(&self.stacks[i], now))
    }

    /// Whether a connection returned now would be closed for want of room: this backend's
    /// stacks hold `capacity`, or the transport's budget (`max_idle_conns`) is spent.
    fn is_full(&self) -> bool {
        self.held.load(Ordering::Acquire) >= self.capacity || self.budget.is_spent()
    }

    /// The most recently returned connection of `stack` that is open and ready. Closed and
    /// expired ones met on the way are dropped; ones not ready yet (a hyper task that has not
    /// re-armed since the connection was returned) stay for a later request.
    fn take_from(&self, stack: &Mutex<Vec<Idle>>, now: Instant) -> Option<Sender> {
        let mut stack = match stack.try_lock() {
            Ok(s) => s,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            // Another thread is borrowing or reaping: dial rather than wait.
            Err(TryLockError::WouldBlock) => return None,
        };
        if stack.is_empty() {
            return None;
        }
        self.touch();
        let mut i = stack.len();
        while i > 0 {
            i -= 1;
            let (sender, since) = &mut stack[i];
            if sender.is_closed() || now.saturating_duration_since(*since) > self.idle_timeout {
                stack.remove(i);
                self.released(1);
                continue;
            }
            if sender.is_ready() {
                let (sender, _) = stack.remove(i);
                self.released(1);
                return Some(sender);
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
        for stack in self.stacks.iter() {
            let mut stack = locked(stack);
            let before = stack.len();
            stack.retain_mut(|(sender, since)| {
                !sender.is_closed() && now.saturating_duration_since(*since) <= self.idle_timeout
            });
            let dropped = before - stack.len();
            self.released(dropped);
            closed += dropped;
        }
        closed
    }

    /// Called once per [`IDLE_TIMEOUT`] by the sweeper: whether nothing used this pool since
    /// the previous call, so every connection it could hold has expired. Clears the mark.
    pub fn unused_since_last_sweep(&self) -> bool {
        !self.used.swap(false, Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.stacks.iter().map(|s| locked(s).len()).sum()
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
    fn each_thread_s_stack_has_cache_lines_of_its_own() {
        let p = IdleConnections::new(4, IdleBudget::new(0), IDLE_TIMEOUT, 3);
        let at: Vec<usize> = p
            .stacks
            .iter()
            .map(|s| s as *const Stack as usize)
            .collect();
        for pair in at.windows(2) {
            assert!(
                pair[1] - pair[0] >= 128,
                "stacks {pair:?} share a line pair"
            );
        }
        assert!(
            at.iter().all(|a| a % 128 == 0),
            "{at:?} not on 128-byte boundaries"
        );
    }

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

    /// Two serving threads, and a pool of `capacity` with a stack for each.
    fn two_threads_and_a_pool(capacity: usize) -> (RuntimeThreads, Arc<IdleConnections>) {
        let threads = RuntimeThreads::start("test-pool", 2, None).unwrap();
        let pool = IdleConnections::new(capacity, IdleBudget::new(0), IDLE_TIMEOUT, 2);
        (threads, Arc::new(pool))
    }

    /// How many connections each thread's stack holds.
    fn stack_lengths(pool: &IdleConnections) -> Vec<usize> {
        pool.stacks.iter().map(|s| locked(s).len()).collect()
    }

    /// A connection whose task runs on thread `thread`'s runtime.
    async fn driven_on(
        threads: &RuntimeThreads,
        thread: usize,
    ) -> (Sender, tokio::io::DuplexStream) {
        threads.handles()[thread].spawn(idle_http1()).await.unwrap()
    }

    /// Returns a connection driven on thread `thread` to `pool`, from that thread; how many
    /// each stack holds after.
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
                (stack_lengths(&pool), peer)
            })
            .await
            .unwrap()
    }

    /// Takes a connection from `pool` on thread `thread`: whether there was one, and how many
    /// each stack holds after.
    async fn take_on(
        threads: &RuntimeThreads,
        thread: usize,
        pool: &Arc<IdleConnections>,
    ) -> (Option<Sender>, Vec<usize>) {
        let pool = pool.clone();
        threads.handles()[thread]
            .spawn(async move {
                let taken = pool.take(Instant::now());
                (taken, stack_lengths(&pool))
            })
            .await
            .unwrap()
    }

    use process_setup::runtime_threads::RuntimeThreads;

    /// Whether `taken` is the connection whose other end is `peer`: a byte written on it
    /// arrives there.
    async fn is_connection_to(taken: Sender, peer: &mut tokio::io::DuplexStream) -> bool {
        use tokio::io::AsyncReadExt;
        let Sender::Http1 { mut send, .. } = taken else {
            return false;
        };
        let req = http::Request::builder()
            .uri("/")
            .header("host", "x")
            .body(RequestBody::empty())
            .unwrap();
        let sent = tokio::spawn(async move {
            let _ = send.send_request(req).await;
        });
        let mut b = [0u8; 1];
        let got = tokio::time::timeout(Duration::from_millis(200), peer.read(&mut b)).await;
        sent.abort();
        matches!(got, Ok(Ok(1)))
    }

    #[tokio::test]
    async fn the_most_recently_returned_connection_is_handed_out_first() {
        let pool = IdleConnections::new(4, IdleBudget::new(0), IDLE_TIMEOUT, 1);
        let (older, mut older_peer) = idle_http1().await;
        let (newer, mut newer_peer) = idle_http1().await;
        pool.put(older);
        pool.put(newer);
        let first = pool.take(Instant::now()).expect("two idle connections");
        assert!(
            is_connection_to(first, &mut newer_peer).await,
            "last in, first out"
        );
        let second = pool.take(Instant::now()).expect("one left");
        assert!(is_connection_to(second, &mut older_peer).await);
    }

    #[tokio::test]
    async fn a_checkout_finding_the_stack_locked_dials_rather_than_wait() {
        let pool = IdleConnections::new(4, IdleBudget::new(0), IDLE_TIMEOUT, 1);
        let (sender, _peer) = idle_http1().await;
        pool.put(sender);
        {
            let _reaping = locked(&pool.stacks[0]);
            assert!(
                pool.take(Instant::now()).is_none(),
                "no wait for the lock: the caller dials"
            );
        }
        assert!(
            pool.take(Instant::now()).is_some(),
            "the connection is there once the lock is free"
        );
    }

    #[tokio::test]
    async fn connections_left_at_the_bottom_reach_their_idle_age() {
        let idle_age = Duration::from_millis(100);
        let pool = IdleConnections::new(4, IdleBudget::new(0), idle_age, 1);
        let (a, _pa) = idle_http1().await;
        let (b, _pb) = idle_http1().await;
        pool.put(a);
        pool.put(b);
        // One request at a time keeps taking and returning the top one.
        for _ in 0..3 {
            tokio::time::sleep(idle_age / 2).await;
            let top = pool.take(Instant::now()).expect("the top connection");
            top_ready(&pool, top).await;
        }
        assert_eq!(pool.reap(Instant::now()), 1, "the unused one is closed");
        assert_eq!(pool.len(), 1, "the one in use stays");
    }

    #[tokio::test]
    async fn a_connection_idle_past_its_age_at_the_callers_reading_is_closed_not_handed_out() {
        let idle_age = Duration::from_secs(30);
        let pool = IdleConnections::new(4, IdleBudget::new(0), idle_age, 1);
        let (sender, _peer) = idle_http1().await;
        let returned = Instant::now();
        pool.put_at(sender, returned);
        assert!(
            pool.take(returned + idle_age + Duration::from_millis(1))
                .is_none(),
            "past its idle age at the reading given"
        );
        assert_eq!(pool.len(), 0, "and closed on the way");

        let (sender, _peer) = idle_http1().await;
        pool.put_at(sender, returned);
        assert!(
            pool.take(returned + idle_age).is_some(),
            "at its idle age exactly it may still be used"
        );
    }

    /// Returns `sender` once its task is ready for another request.
    async fn top_ready(pool: &IdleConnections, mut sender: Sender) {
        sender.ready().await.unwrap();
        pool.put(sender);
    }

    #[tokio::test]
    async fn a_connection_goes_back_to_the_stack_of_the_thread_that_drives_it() {
        let (threads, pool) = two_threads_and_a_pool(4);
        let (held, _a) = put_from(&threads, 1, &pool).await;
        assert_eq!(held, [0, 1]);
        let (held, _b) = put_from(&threads, 0, &pool).await;
        assert_eq!(held, [1, 1]);
        // Driven on thread 1, returned from elsewhere: thread 1's stack.
        let (sender, _c) = driven_on(&threads, 1).await;
        pool.put(sender);
        assert_eq!(stack_lengths(&pool), [1, 2]);
    }

    #[tokio::test]
    async fn a_thread_takes_its_own_connection_and_dials_rather_than_borrow() {
        let (threads, pool) = two_threads_and_a_pool(4);
        let (_, _a) = put_from(&threads, 1, &pool).await;
        let (_, _b) = put_from(&threads, 0, &pool).await;
        let (first, held) = take_on(&threads, 0, &pool).await;
        assert!(first.is_some(), "its own stack's connection");
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
        assert_eq!(stack_lengths(&pool), [0, 1], "and it goes back home");
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
    async fn the_stacks_together_hold_at_most_the_capacity() {
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
