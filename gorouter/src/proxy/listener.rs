//! The proxy listener: accepting client connections, serving HTTP/1.0 and 1.1 on them, and
//! closing them gracefully when the router drains or stops.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

use super::{ClientConn, Proxy};

/// Counts open client connections and tells them to finish.
pub struct Connections {
    active: AtomicUsize,
    all_closed: Notify,
    close: watch::Sender<bool>,
}

impl Default for Connections {
    fn default() -> Self {
        Self::new()
    }
}

impl Connections {
    pub fn new() -> Self {
        Self {
            active: AtomicUsize::new(0),
            all_closed: Notify::new(),
            close: watch::channel(false).0,
        }
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Asks every connection to finish its in-flight request and close; idle ones close now.
    pub fn close_all(&self) {
        self.close.send_replace(true);
    }

    /// Waits until no connection is open, or `limit` passes. Returns whether all closed.
    pub async fn wait_closed(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.all_closed.notified();
                if self.active() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }

    fn opened(&self) {
        self.active.fetch_add(1, Ordering::SeqCst);
    }

    fn closed(&self) {
        if self.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.all_closed.notify_waiters();
        }
    }
}

/// Front-end connection settings.
#[derive(Clone)]
pub struct ListenerSettings {
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
}

/// Accepts connections until `stop_accepting` turns true, then drops the listener.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    settings: ListenerSettings,
    connections: Arc<Connections>,
    mut stop_accepting: watch::Receiver<bool>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .title_case_headers(true)
        .keep_alive(true)
        .header_read_timeout(settings.idle_timeout)
        // Room past max_header_bytes so the router answers 431 itself, as upstream does.
        .max_buf_size((settings.max_header_bytes + 64 * 1024).max(8192 * 2));
    let builder = Arc::new(builder);
    loop {
        let accepted = tokio::select! {
            _ = stop_accepting.wait_for(|stop| *stop) => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "proxy-accept-failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let builder = builder.clone();
        let connections = connections.clone();
        let mut close = connections.close.subscribe();
        connections.opened();
        tokio::spawn(async move {
            let client = Arc::new(ClientConn::new(remote, false));
            let svc =
                hyper::service::service_fn(move |req| proxy.clone().handle(client.clone(), req));
            let conn = builder
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            tokio::pin!(conn);
            let mut closing = *close.borrow();
            if closing {
                conn.as_mut().graceful_shutdown();
            }
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "client-connection-error");
                        }
                        break;
                    }
                    _ = close.wait_for(|c| *c), if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            connections.closed();
        });
    }
}
