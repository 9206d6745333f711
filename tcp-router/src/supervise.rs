//! Supervision of the background tasks the router cannot serve correctly without: the route
//! source (list, event stream, expiry), the health and metrics port, the listener retries.
//! Each runs until shutdown; one that ends earlier (returned or panicked) would leave the
//! router serving a frozen routing table or no health check, so [`Supervisor::died`] reports
//! it and the router exits non-zero with the reason (a process supervisor restarts it).

use std::future::Future;

use tokio::sync::mpsc;
use tokio::task::AbortHandle;

/// A background task that stopped before shutdown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("background task `{task}` stopped: {reason}")]
pub struct TaskDied {
    pub task: &'static str,
    pub reason: String,
}

/// Watches spawned tasks; the first to end is reported by [`died`](Self::died).
pub struct Supervisor {
    tx: mpsc::UnboundedSender<TaskDied>,
    rx: mpsc::UnboundedReceiver<TaskDied>,
    tasks: Vec<AbortHandle>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl Supervisor {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Supervisor {
            tx,
            rx,
            tasks: Vec::new(),
        }
    }

    /// Spawns `task` on the current runtime under `name`. It must run until shutdown.
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = tokio::spawn(task);
        self.tasks.push(handle.abort_handle());
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let reason = match handle.await {
                Ok(()) => "it ended unexpectedly".to_string(),
                Err(e) if e.is_panic() => {
                    let payload = e.into_panic();
                    let message = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a non-text payload".into());
                    format!("it panicked: {message}")
                }
                Err(e) => format!("it was cancelled: {e}"),
            };
            let _ = tx.send(TaskDied { task: name, reason });
        });
    }

    /// The first task that stopped. Pending until one does.
    pub async fn died(&mut self) -> TaskDied {
        match self.rx.recv().await {
            Some(d) => d,
            // `self.tx` is held, so the channel never closes.
            None => std::future::pending().await,
        }
    }

    /// At shutdown: waits up to `timeout` for every task to end (they end on purpose now).
    pub async fn wait_stopped(&mut self, timeout: std::time::Duration) {
        let all = self.tasks.len();
        let _ = tokio::time::timeout(timeout, async {
            let mut ended = 0;
            while ended < all && self.rx.recv().await.is_some() {
                ended += 1;
            }
        })
        .await;
    }

    /// Aborts every task (for a task that does not watch the shutdown signal).
    pub fn abort_all(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_panicking_task_is_reported_with_its_message() {
        let mut s = Supervisor::new();
        s.spawn("forever", std::future::pending());
        s.spawn("route-source", async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            panic!("event stream state corrupt");
        });
        let died = tokio::time::timeout(Duration::from_secs(5), s.died())
            .await
            .expect("reported");
        assert_eq!(died.task, "route-source");
        assert!(
            died.reason.contains("panicked: event stream state corrupt"),
            "{died}"
        );
        s.abort_all();
    }

    #[tokio::test]
    async fn a_task_that_returns_before_shutdown_is_reported() {
        let mut s = Supervisor::new();
        s.spawn("health-server", async {});
        let died = tokio::time::timeout(Duration::from_secs(5), s.died())
            .await
            .expect("reported");
        assert_eq!(
            died.to_string(),
            "background task `health-server` stopped: it ended unexpectedly"
        );
    }

    #[tokio::test]
    async fn tasks_that_keep_running_are_not_reported() {
        let mut s = Supervisor::new();
        s.spawn("a", std::future::pending());
        s.spawn("b", std::future::pending());
        assert!(tokio::time::timeout(Duration::from_millis(100), s.died())
            .await
            .is_err());
        s.abort_all();
    }
}
