//! When a serving thread's writes go out: together, after every connection the thread can read
//! from has been read, rather than one connection's read and write at a time.
//!
//! On loopback a write runs the receiver's side of TCP in the writer's system call, including
//! waking the receiver (the backend, or the client) if it sleeps. Written one connection at a
//! time, each request tends to find its peer asleep and wake it, often on the other core, which
//! then needs an inter-processor interrupt to preempt whatever runs there. Written together,
//! one wake-up serves a batch, as HAProxy's event loop does by running every connection's
//! receive before any send. At 256 keep-alive connections this took the rescheduling
//! interrupts from 0.087 to 0.025 per request, gorouter's system time per request from
//! 9.6-10.4 µs to 8.3-8.7 µs and its rate up 10 % (BENCHMARKS.md).
//!
//! The waits sit right before the writes: the backend write, once the request is routed, and
//! the response's last write, once the body is read and the backend connection is back in its
//! pool. Waiting earlier (before the handler, before the response writer) left twice the
//! interrupts and 8 % less of the rate; the request then holds its backend connection across
//! the response's wait.
//!
//! The wait is only for a thread serving many requests at once ([`BATCH_FROM`]): a few
//! connections, or one alone, pay nothing (no extra poll of the runtime's driver).

use std::cell::Cell;

thread_local! {
    /// Requests this thread is serving: parsed, their response not yet written.
    static SERVING: Cell<u32> = const { Cell::new(0) };
}

/// One request being served on this thread, counted while it lives.
pub(crate) struct Serving(());

impl Serving {
    pub(crate) fn start() -> Self {
        let _ = SERVING.try_with(|n| n.set(n.get().saturating_add(1)));
        Serving(())
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = SERVING.try_with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// Lets the thread's other ready connections run up to their own writes before the caller
/// writes, when the thread serves many requests besides the caller's ([`BATCH_FROM`], counted
/// by [`Serving`]; requests hyper's server serves are not counted): Tokio runs a yielded task
/// again only after the tasks already woken and a poll of its I/O driver, which wakes those
/// whose reads are ready.
pub(crate) async fn let_others_read_first() {
    if others_serving() {
        tokio::task::yield_now().await;
    }
}

/// Requests besides the caller's that its thread must be serving before the caller waits for
/// them. A wait costs a poll of the runtime's driver (a system call) when the run queue
/// empties, which a few requests' writes do not repay: with 32 keep-alive connections over two
/// threads, waiting for any other request cost 3-5 % of the rate (BENCHMARKS.md).
const BATCH_FROM: u32 = 16;

/// Whether the thread serves at least [`BATCH_FROM`] requests besides the caller's.
fn others_serving() -> bool {
    SERVING.try_with(|n| n.get() > BATCH_FROM).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Waker};

    fn serving_now() -> u32 {
        SERVING.with(Cell::get)
    }

    #[test]
    fn a_request_is_counted_while_it_is_served() {
        let before = serving_now();
        let a = Serving::start();
        let b = Serving::start();
        assert_eq!(serving_now(), before + 2);
        drop(a);
        assert_eq!(serving_now(), before + 1);
        drop(b);
        assert_eq!(serving_now(), before);
    }

    #[test]
    fn a_request_beside_few_others_writes_without_waiting() {
        let _few: Vec<Serving> = (0..BATCH_FROM).map(|_| Serving::start()).collect();
        let mut wait = pin!(let_others_read_first());
        let polled = wait.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        assert!(polled.is_ready());
    }

    #[test]
    fn a_request_beside_many_others_waits_once() {
        let _many: Vec<Serving> = (0..=BATCH_FROM).map(|_| Serving::start()).collect();
        let mut wait = pin!(let_others_read_first());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        assert!(wait.as_mut().poll(&mut cx).is_ready());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_request_beside_many_others_lets_a_ready_task_run_before_it_writes() {
        let order = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let local = tokio::task::LocalSet::new();
        let first = order.clone();
        let second = order.clone();
        local
            .run_until(async move {
                let a = tokio::task::spawn_local(async move {
                    let _serving: Vec<Serving> =
                        (0..=BATCH_FROM).map(|_| Serving::start()).collect();
                    first.borrow_mut().push("read a");
                    let_others_read_first().await;
                    first.borrow_mut().push("write a");
                });
                let b = tokio::task::spawn_local(async move {
                    second.borrow_mut().push("read b");
                });
                a.await.unwrap();
                b.await.unwrap();
            })
            .await;
        assert_eq!(*order.borrow(), ["read a", "read b", "write a"]);
    }
}
