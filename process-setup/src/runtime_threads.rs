//! The data-path threads of gorouter and tcp-router: one single-threaded Tokio runtime per
//! thread (one thread per core by default, as HAProxy's threads and nginx's workers), each with
//! its own listening socket on every port (`SO_REUSEPORT`, so the kernel spreads new
//! connections over them). A connection, and whatever it starts, stays on the thread that
//! accepted it: no work stealing, and no wake-up of another thread when one task wakes another,
//! which on a busy machine costs more than a request's own work.

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

thread_local! {
    /// The index of the runtime thread this is; 0 on any other thread.
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The index of the runtime thread the caller runs on (0 on any other thread): what
/// per-thread state, such as a connection pool's queue, is picked by.
pub fn current_index() -> usize {
    INDEX.with(Cell::get)
}

/// How many threads to start: `GOMAXPROCS` when set to a positive number (the knob of the Go
/// programs these replace), else one per core (`available_parallelism`), Go's default too.
pub fn per_core_count() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    count_from_gomaxprocs(std::env::var("GOMAXPROCS").ok().as_deref(), cores)
}

/// `GOMAXPROCS` as Go reads it: a positive number is the count; anything else (unset, empty,
/// zero, not a number) leaves the default.
fn count_from_gomaxprocs(value: Option<&str>, cores: usize) -> usize {
    value
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(cores)
}

/// The period of the threads' ticking timer (see [`RuntimeThreads::start`]) for tasks whose
/// shortest timeout is `shortest`: half of it, between 5 ms and 1 s.
pub fn tick_for(shortest: Duration) -> Duration {
    (shortest / 2).clamp(Duration::from_millis(5), Duration::from_secs(1))
}

/// The threads; dropping this ends them, and every task still on them.
pub struct RuntimeThreads {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
}

impl RuntimeThreads {
    /// Starts `count` threads (at least one) named `{name}-{index}`. With `tick` (see
    /// [`tick_for`]), each runtime keeps a timer of that period: tokio wakes its driver through
    /// an eventfd (a system call) whenever a new timer is the earliest one, which the tick
    /// keeps rare for timeouts longer than it; a shorter one still works and costs the
    /// wake-up.
    pub fn start(name: &str, count: usize, tick: Option<Duration>) -> std::io::Result<Self> {
        let mut handles = Vec::with_capacity(count.max(1));
        let mut stops = Vec::with_capacity(count.max(1));
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || {
                    INDEX.with(|i| i.set(index));
                    // A current-thread runtime runs its tasks only inside `block_on`: the thread
                    // stays in it until the threads are dropped.
                    runtime.block_on(async move {
                        let ticker = tick.map(|tick| {
                            tokio::spawn(async move {
                                let mut tick = tokio::time::interval(tick);
                                tick.set_missed_tick_behavior(
                                    tokio::time::MissedTickBehavior::Delay,
                                );
                                loop {
                                    tick.tick().await;
                                }
                            })
                        });
                        let _ = stopped.await;
                        if let Some(t) = ticker {
                            t.abort();
                        }
                    });
                })?;
        }
        Ok(Self { handles, stops })
    }

    /// The runtimes, in index order.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// Runs `f(item)` on thread `i` for the `i`th item (e.g. the accept loop of each listener
    /// [`listen`](Self::listen) made), one item per thread.
    pub fn spawn_each<T, F, Fut>(&self, items: Vec<T>, mut f: F) -> Vec<JoinHandle<Fut::Output>>
    where
        F: FnMut(T) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        items
            .into_iter()
            .zip(&self.handles)
            .map(|(item, handle)| handle.spawn(f(item)))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// One listening socket on `addr` per thread (port 0: the port the first one got), in
    /// index order, each registered with its thread's runtime; with `SO_REUSEPORT` when there
    /// is more than one. Only sockets that all set `SO_REUSEPORT`, of the same user, share a
    /// port: a port another program holds is still refused. With `nodelay`, accepted sockets
    /// inherit `TCP_NODELAY` (no `setsockopt` per connection).
    pub fn listen(
        &self,
        addr: SocketAddr,
        backlog: u32,
        nodelay: bool,
    ) -> std::io::Result<Vec<TcpListener>> {
        let reuse_port = self.handles.len() > 1;
        let mut addr = addr;
        let mut sockets = Vec::with_capacity(self.handles.len());
        for _ in &self.handles {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            // As std's and Go's listeners: a restarted router binds despite TIME_WAIT.
            socket.set_reuseaddr(true)?;
            if reuse_port {
                socket.set_reuseport(true)?;
            }
            if nodelay {
                socket.set_nodelay(true)?;
            }
            socket.bind(addr)?;
            addr = socket.local_addr()?;
            sockets.push(socket);
        }
        sockets
            .into_iter()
            .zip(&self.handles)
            .map(|(socket, handle)| {
                // Registered with that thread's own reactor.
                let _enter = handle.enter();
                socket.listen(backlog)
            })
            .collect()
    }
}

impl Drop for RuntimeThreads {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    #[test]
    fn gomaxprocs_sets_the_count_when_positive() {
        assert_eq!(count_from_gomaxprocs(Some("3"), 8), 3);
        assert_eq!(count_from_gomaxprocs(Some(" 1 "), 8), 1);
    }

    #[test]
    fn gomaxprocs_unset_zero_or_garbage_means_one_per_core() {
        for v in [None, Some(""), Some("0"), Some("-2"), Some("many")] {
            assert_eq!(count_from_gomaxprocs(v, 8), 8, "GOMAXPROCS={v:?}");
        }
    }

    #[test]
    fn the_tick_is_half_the_shortest_timeout_within_5ms_and_1s() {
        assert_eq!(
            tick_for(Duration::from_millis(100)),
            Duration::from_millis(50)
        );
        assert_eq!(tick_for(Duration::from_millis(1)), Duration::from_millis(5));
        assert_eq!(tick_for(Duration::from_secs(60)), Duration::from_secs(1));
    }

    #[test]
    fn each_thread_knows_its_index() {
        let threads = RuntimeThreads::start("test-index", 3, None).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for (i, handle) in threads.handles().iter().enumerate() {
            assert_eq!(
                rt.block_on(handle.spawn(async { current_index() }))
                    .unwrap(),
                i
            );
        }
    }

    /// Listening sockets on 127.0.0.1 and an ephemeral port, one per thread.
    fn listen_local(threads: &RuntimeThreads, nodelay: bool) -> Vec<TcpListener> {
        threads
            .listen("127.0.0.1:0".parse().unwrap(), 128, nodelay)
            .unwrap()
    }

    #[test]
    fn every_socket_listens_on_the_port_the_first_got() {
        let threads = RuntimeThreads::start("test-port", 3, None).unwrap();
        let listeners = listen_local(&threads, true);
        let ports: HashSet<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        assert_eq!(listeners.len(), 3);
        assert_eq!(ports.len(), 1, "one port for all: {ports:?}");
        assert_ne!(ports.into_iter().next(), Some(0));
    }

    #[test]
    fn accepted_sockets_inherit_nodelay_when_asked() {
        let threads = RuntimeThreads::start("test-nodelay", 1, None).unwrap();
        for nodelay in [true, false] {
            let listener = listen_local(&threads, nodelay).remove(0);
            let addr = listener.local_addr().unwrap();
            let accepted = threads.handles()[0].spawn(async move {
                let (s, _) = listener.accept().await.unwrap();
                s.nodelay().unwrap()
            });
            let _client = std::net::TcpStream::connect(addr).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            assert_eq!(rt.block_on(accepted).unwrap(), nodelay);
        }
    }

    #[test]
    fn a_port_another_listener_holds_is_refused() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        for count in [1, 2] {
            let threads = RuntimeThreads::start("test-held", count, None).unwrap();
            assert!(threads.listen(addr, 16, false).is_err(), "{addr} is taken");
        }
    }

    #[test]
    fn connections_are_spread_over_the_threads() {
        let threads = RuntimeThreads::start("test-spread", 2, None).unwrap();
        let listeners = listen_local(&threads, false);
        let addr = listeners[0].local_addr().unwrap();
        let served_by = Arc::new(Mutex::new(Vec::new()));
        threads.spawn_each(listeners, |listener| {
            let seen = served_by.clone();
            async move {
                while let Ok((_stream, _)) = listener.accept().await {
                    seen.lock().unwrap().push(current_index());
                }
            }
        });
        let _clients: Vec<_> = (0..64)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while served_by.lock().unwrap().len() < 64 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let served = served_by.lock().unwrap().clone();
        assert_eq!(served.len(), 64, "every connection accepted");
        let per_thread: Vec<usize> = (0..2)
            .map(|i| served.iter().filter(|s| **s == i).count())
            .collect();
        assert!(
            per_thread.iter().all(|n| *n > 0),
            "both threads accept: {per_thread:?}"
        );
    }

    #[test]
    fn dropping_the_threads_cancels_their_tasks() {
        let threads =
            RuntimeThreads::start("test-drop", 1, Some(Duration::from_millis(5))).unwrap();
        let task = threads.handles()[0].spawn(std::future::pending::<()>());
        drop(threads);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ended =
            rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), task).await });
        assert!(
            matches!(ended, Ok(Err(e)) if e.is_cancelled()),
            "the task was cancelled with its thread"
        );
    }
}
