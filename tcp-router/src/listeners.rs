//! One listener per external port that has routes (HAProxy's `frontend frontend_<port>` with
//! `bind :<port>`; here on `bind_address`, all interfaces by default): opened when the port's
//! first route arrives, given each new snapshot of the port's routes (swapped in atomically,
//! read lock-free by connections), and closed when the port's last route goes. Closing stops accepting only: connections already open finish.
//!
//! A port that cannot be bound (in use) is reported and retried ([`Listeners::retry_failed`]).
//! Ports among `reserved_system_component_ports` are reported when they get routes. On drain,
//! [`Listeners::stop_accepting`] closes every listener and no new one opens.
//!
//! The data path runs on [`RuntimeThreads`] (the workers): one single-threaded runtime per CPU,
//! like HAProxy's threads. Each port has one listening socket per worker (`SO_REUSEPORT`; the
//! kernel spreads new connections over them), and a connection lives on the worker that
//! accepted it, with no work stealing or cross-thread wake-ups.
//!
//! The lock here is the control plane's (route updates, retries, drain); the accept path takes
//! none: each accept loop owns its listener and its port's [`PortCtx`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use process_setup::runtime_threads::RuntimeThreads;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::forward::{self, Admitted, Global, PortCtx};
use crate::routes::PortRoutes;

/// Listen backlog of each port.
const BACKLOG: u32 = 4096;

struct Open {
    ctx: Arc<PortCtx>,
    stop: watch::Sender<bool>,
}

struct Inner {
    open: BTreeMap<u16, Open>,
    /// Ports with routes whose listener could not be opened yet.
    failed: BTreeMap<u16, Arc<PortRoutes>>,
    accepting: bool,
}

/// The listeners of all external ports.
pub struct Listeners {
    inner: Mutex<Inner>,
    global: Arc<Global>,
    workers: RuntimeThreads,
    reserved: BTreeSet<u16>,
    /// Address to bind (`bind_address`; all interfaces by default, as HAProxy's `bind :<port>`).
    bind_ip: IpAddr,
}

impl Listeners {
    /// Listeners on `bind_ip`:<port> for each port that gets routes.
    pub fn new(
        global: Arc<Global>,
        workers: RuntimeThreads,
        reserved: &[u16],
        bind_ip: IpAddr,
    ) -> Self {
        Listeners {
            workers,
            inner: Mutex::new(Inner {
                open: BTreeMap::new(),
                failed: BTreeMap::new(),
                accepting: true,
            }),
            global,
            reserved: reserved.iter().copied().collect(),
            bind_ip,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ports listened on now.
    pub fn ports(&self) -> Vec<u16> {
        self.lock().open.keys().copied().collect()
    }

    /// Applies new snapshots: opens, updates or closes listeners. Must run inside the runtime.
    pub fn update(&self, changes: Vec<(u16, Option<Arc<PortRoutes>>)>) {
        let mut inner = self.lock();
        for (port, routes) in changes {
            match routes {
                Some(routes) => {
                    if let Some(open) = inner.open.get(&port) {
                        open.ctx.routes.store(routes);
                        continue;
                    }
                    if !inner.accepting {
                        continue;
                    }
                    if self.reserved.contains(&port) {
                        tracing::error!(
                            port,
                            "route port is a reserved system component port (reserved_system_component_ports)"
                        );
                    }
                    match self.open(port, routes.clone()) {
                        Ok(open) => {
                            inner.failed.remove(&port);
                            inner.open.insert(port, open);
                            tracing::info!(port, "tcp-router.listener-opened");
                        }
                        Err(e) => {
                            if inner.failed.insert(port, routes).is_none() {
                                tracing::error!(port, error = %e, "tcp-router.listener-open-failed-retrying");
                            }
                        }
                    }
                }
                None => {
                    inner.failed.remove(&port);
                    if let Some(open) = inner.open.remove(&port) {
                        open.stop.send_replace(true);
                        tracing::info!(port, "tcp-router.listener-closed");
                    }
                }
            }
        }
        self.global.metrics.listeners.set(inner.open.len() as u64);
    }

    /// Tries again to open the listeners that failed.
    pub fn retry_failed(&self) {
        let failed: Vec<(u16, Option<Arc<PortRoutes>>)> = {
            let inner = self.lock();
            inner
                .failed
                .iter()
                .map(|(p, r)| (*p, Some(r.clone())))
                .collect()
        };
        if !failed.is_empty() {
            self.update(failed);
        }
    }

    /// Closes every listener; none opens afterwards. Open connections are not touched.
    pub fn stop_accepting(&self) {
        let mut inner = self.lock();
        inner.accepting = false;
        inner.failed.clear();
        for (port, open) in std::mem::take(&mut inner.open) {
            open.stop.send_replace(true);
            tracing::info!(port, "tcp-router.listener-closed");
        }
        self.global.metrics.listeners.set(0);
    }

    /// Binds one listening socket per worker and starts their accept loops.
    fn open(&self, port: u16, routes: Arc<PortRoutes>) -> std::io::Result<Open> {
        let addr = SocketAddr::new(self.bind_ip, port);
        // Accepted sockets inherit TCP_NODELAY, saving a setsockopt per connection.
        let listeners = self.workers.listen(addr, BACKLOG, true)?;
        let ctx = Arc::new(PortCtx {
            port,
            routes: ArcSwap::new(routes),
            metrics: self.global.metrics.port(port),
            global: self.global.clone(),
        });
        let (stop, stopped) = watch::channel(false);
        self.workers.spawn_each(listeners, |listener| {
            accept_loop(listener, ctx.clone(), stopped.clone())
        });
        Ok(Open { ctx, stop })
    }
}

async fn accept_loop(listener: TcpListener, ctx: Arc<PortCtx>, mut stop: watch::Receiver<bool>) {
    // Created once: a fresh `wait_for` per accept would lock the channel's value and
    // register with (then leave) its notifier for every connection.
    let stopped = stop.wait_for(|s| *s);
    tokio::pin!(stopped);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut stopped => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _peer)) => match Admitted::new(&ctx) {
                Some(admitted) => {
                    tokio::spawn(forward::handle(stream, admitted));
                }
                None => {
                    tracing::debug!(
                        port = ctx.port,
                        "max-connections-reached; connection closed"
                    );
                    drop(stream);
                }
            },
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(port = ctx.port, error = %e, "tcp-router.accept-failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    // Dropping the listener closes the port; accepted connections live on in their tasks.
}
