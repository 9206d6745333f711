//! The [`LockBackend`] trait (one small interface over a Locket server via [`LocketClient`]
//! and over a [`LockTable`] used directly) and the lock runner ([`hold_lock`]), the equivalent of
//! upstream's `locket/lock.NewLockRunner`.
//!
//! The runner tries to lock at once and then every retry interval (each attempt bounded by the
//! retry interval). The first success publishes [`LockState::Held`]; while held, every attempt is
//! a refresh. A failed refresh means the lock is lost: for locks (`exit_on_lost_lock`) the
//! runner publishes [`LockState::Lost`] and ends with [`RunnerError::LostLock`] (the process is
//! expected to exit); for presences it goes back to acquiring. Stopping the runner
//! ([`LockHandle::release`], or dropping the handle) releases the lock.
//!
//! With a [`LockTable`] backend there is no Locket server to expire locks whose holder died:
//! every process sharing the database must also run [`crate::expiry::spawn`] on its table.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::client::LocketClient;
use crate::error::LockError;
use crate::sql::LockTable;
use crate::types::Resource;

/// Boxed future returned by [`LockBackend`] methods.
pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, LockError>> + Send + 'a>>;

/// Where locks live: a Locket server ([`LocketClient`]) or a database ([`LockTable`]).
/// Object safe: `Arc<dyn LockBackend>` works.
pub trait LockBackend: Send + Sync {
    /// Acquire or refresh `resource` for `ttl_secs` seconds.
    fn lock<'a>(&'a self, resource: &'a Resource, ttl_secs: i64) -> BackendFuture<'a, ()>;
    /// Release `key` if held by `owner` (a missing key is a success).
    fn release<'a>(&'a self, key: &'a str, owner: &'a str) -> BackendFuture<'a, ()>;
    /// The current owner of `key` ([`LockError::NotFound`] if none).
    fn owner<'a>(&'a self, key: &'a str) -> BackendFuture<'a, String>;
}

impl LockBackend for LockTable {
    fn lock<'a>(&'a self, resource: &'a Resource, ttl_secs: i64) -> BackendFuture<'a, ()> {
        Box::pin(async move { LockTable::lock(self, resource, ttl_secs).await.map(|_| ()) })
    }
    fn release<'a>(&'a self, key: &'a str, owner: &'a str) -> BackendFuture<'a, ()> {
        Box::pin(LockTable::release(self, key, owner))
    }
    fn owner<'a>(&'a self, key: &'a str) -> BackendFuture<'a, String> {
        Box::pin(async move { self.fetch(key).await.map(|r| r.owner) })
    }
}

impl LockBackend for LocketClient {
    fn lock<'a>(&'a self, resource: &'a Resource, ttl_secs: i64) -> BackendFuture<'a, ()> {
        Box::pin(LocketClient::lock(
            self,
            &resource.key,
            &resource.owner,
            &resource.value,
            resource.lock_type.type_code(),
            ttl_secs,
        ))
    }
    fn release<'a>(&'a self, key: &'a str, owner: &'a str) -> BackendFuture<'a, ()> {
        Box::pin(LocketClient::release(self, key, owner))
    }
    fn owner<'a>(&'a self, key: &'a str) -> BackendFuture<'a, String> {
        Box::pin(async move { self.fetch(key).await.map(|r| r.owner) })
    }
}

impl<T: LockBackend + ?Sized> LockBackend for Arc<T> {
    fn lock<'a>(&'a self, resource: &'a Resource, ttl_secs: i64) -> BackendFuture<'a, ()> {
        (**self).lock(resource, ttl_secs)
    }
    fn release<'a>(&'a self, key: &'a str, owner: &'a str) -> BackendFuture<'a, ()> {
        (**self).release(key, owner)
    }
    fn owner<'a>(&'a self, key: &'a str) -> BackendFuture<'a, String> {
        (**self).owner(key)
    }
}

impl<T: LockBackend + ?Sized> LockBackend for Box<T> {
    fn lock<'a>(&'a self, resource: &'a Resource, ttl_secs: i64) -> BackendFuture<'a, ()> {
        (**self).lock(resource, ttl_secs)
    }
    fn release<'a>(&'a self, key: &'a str, owner: &'a str) -> BackendFuture<'a, ()> {
        (**self).release(key, owner)
    }
    fn owner<'a>(&'a self, key: &'a str) -> BackendFuture<'a, String> {
        (**self).owner(key)
    }
}

/// Locket's standard lock TTL.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15);
/// The routing API's refresh/retry interval (`SQLRetryInterval`).
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// What the runner holds and how often it refreshes.
#[derive(Debug, Clone)]
pub struct LockRunnerConfig {
    /// The resource to lock (key, owner, value, type).
    pub resource: Resource,
    /// TTL sent with every Lock (whole seconds, at least 1).
    pub ttl: Duration,
    /// Delay between attempts, and the timeout of each attempt.
    pub retry_interval: Duration,
    /// End the runner with [`RunnerError::LostLock`] when a held lock cannot be refreshed
    /// (locks); when false, go back to acquiring (presences).
    pub exit_on_lost_lock: bool,
}

impl LockRunnerConfig {
    /// A `lock` with ttl 15 s, retry 1 s, exiting on loss.
    pub fn lock(key: impl Into<String>, owner: impl Into<String>) -> Self {
        LockRunnerConfig {
            resource: Resource::lock(key, owner),
            ttl: DEFAULT_TTL,
            retry_interval: DEFAULT_RETRY_INTERVAL,
            exit_on_lost_lock: true,
        }
    }

    /// A `presence` with ttl 15 s, retry 1 s, not exiting on loss.
    pub fn presence(
        key: impl Into<String>,
        owner: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        LockRunnerConfig {
            resource: Resource::presence(key, owner, value),
            ttl: DEFAULT_TTL,
            retry_interval: DEFAULT_RETRY_INTERVAL,
            exit_on_lost_lock: false,
        }
    }

    /// Sets the TTL.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the retry interval.
    pub fn with_retry_interval(mut self, retry: Duration) -> Self {
        self.retry_interval = retry;
        self
    }

    fn ttl_secs(&self) -> i64 {
        let secs = self.ttl.as_secs() + u64::from(self.ttl.subsec_nanos() > 0);
        i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
    }
}

/// The runner's view of the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockState {
    /// Not held yet (or, for presences, lost and being re-acquired).
    Acquiring,
    /// Held and being refreshed.
    Held,
    /// Was held, a refresh failed; the runner has stopped (locks only).
    Lost,
    /// The runner was stopped and released the lock.
    Released,
}

/// How a runner ended badly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunnerError {
    /// A held lock could not be refreshed.
    #[error("lost lock: {0}")]
    LostLock(LockError),
    /// The runner stopped before acquiring the lock.
    #[error("lock runner stopped before acquiring the lock")]
    Stopped,
    /// The runner task panicked or was cancelled.
    #[error("lock runner task failed: {0}")]
    Task(String),
}

/// Controls a running lock runner (see [`hold_lock`]). Dropping it stops the runner, which then
/// releases the lock in the background.
#[derive(Debug)]
pub struct LockHandle {
    state: watch::Receiver<LockState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), RunnerError>>>,
    outcome: Option<Result<(), RunnerError>>,
}

/// Starts a lock runner for `config` on `backend` (spawned on the current tokio runtime).
pub fn hold_lock<B>(backend: B, config: LockRunnerConfig) -> LockHandle
where
    B: LockBackend + 'static,
{
    let (state_tx, state_rx) = watch::channel(LockState::Acquiring);
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = tokio::spawn(run(backend, config, state_tx, stop_rx));
    LockHandle {
        state: state_rx,
        stop: Some(stop_tx),
        task: Some(task),
        outcome: None,
    }
}

impl LockHandle {
    /// The current state.
    pub fn state(&self) -> LockState {
        self.state.borrow().clone()
    }

    /// True while the lock is held.
    pub fn is_held(&self) -> bool {
        *self.state.borrow() == LockState::Held
    }

    /// A receiver of state changes.
    pub fn subscribe(&self) -> watch::Receiver<LockState> {
        self.state.clone()
    }

    /// Waits until the lock is held. Fails if the runner ended first.
    pub async fn acquired(&mut self) -> Result<(), RunnerError> {
        let mut rx = self.state.clone();
        let held = rx
            .wait_for(|s| *s != LockState::Acquiring)
            .await
            .map(|s| s.clone());
        match held {
            Ok(LockState::Held) => Ok(()),
            _ => match self.finished().await {
                Ok(()) => Err(RunnerError::Stopped),
                Err(e) => Err(e),
            },
        }
    }

    /// Waits until the runner ends on its own: `Err(LostLock)` when a held lock was lost.
    /// Cancel-safe; may be called again after it returned (returns the same outcome).
    pub async fn finished(&mut self) -> Result<(), RunnerError> {
        if let Some(outcome) = &self.outcome {
            return outcome.clone();
        }
        let outcome = match self.task.as_mut() {
            Some(task) => match task.await {
                Ok(r) => r,
                Err(e) => Err(RunnerError::Task(e.to_string())),
            },
            None => Ok(()),
        };
        self.task = None;
        self.outcome = Some(outcome.clone());
        outcome
    }

    /// Stops the runner, releases the lock (one Release call bounded by the retry interval)
    /// and waits for it to finish. Returns the runner's outcome (`Err(LostLock)` if it had
    /// already lost the lock).
    pub async fn release(mut self) -> Result<(), RunnerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.finished().await
    }
}

impl Drop for LockHandle {
    fn drop(&mut self) {
        // Dropping `stop` tells the runner to release and end; it keeps running detached.
        self.stop.take();
    }
}

async fn run<B: LockBackend>(
    backend: B,
    config: LockRunnerConfig,
    state: watch::Sender<LockState>,
    mut stop: oneshot::Receiver<()>,
) -> Result<(), RunnerError> {
    let key = config.resource.key.clone();
    let owner = config.resource.owner.clone();
    let ttl = config.ttl_secs();
    let retry = config.retry_interval.max(Duration::from_millis(10));
    tracing::info!(key = %key, owner = %owner, ttl_in_seconds = ttl, "locket-lock.started");
    let mut held = false;
    let mut first = true;
    loop {
        let attempt = tokio::select! {
            r = tokio::time::timeout(retry, backend.lock(&config.resource, ttl)) => {
                r.unwrap_or(Err(LockError::Timeout(retry)))
            }
            _ = &mut stop => break,
        };
        match attempt {
            Ok(()) => {
                if !held {
                    tracing::info!(key = %key, owner = %owner, "locket-lock.acquired-lock");
                    held = true;
                    state.send_replace(LockState::Held);
                }
            }
            Err(e) if held => {
                tracing::error!(key = %key, owner = %owner, error = %e, "locket-lock.lost-lock");
                held = false;
                if config.exit_on_lost_lock {
                    state.send_replace(LockState::Lost);
                    return Err(RunnerError::LostLock(e));
                }
                state.send_replace(LockState::Acquiring);
            }
            Err(e) if first => match tokio::time::timeout(retry, backend.owner(&key)).await {
                Ok(Ok(current)) => {
                    tracing::info!(key = %key, owner = %owner, lock_owner = %current, error = %e, "locket-lock.failed-to-acquire-lock")
                }
                Ok(Err(fe)) => {
                    tracing::error!(key = %key, owner = %owner, error = %e, fetch_error = %fe, "locket-lock.failed-to-acquire-lock")
                }
                Err(_) => {
                    tracing::error!(key = %key, owner = %owner, error = %e, "locket-lock.failed-to-acquire-lock")
                }
            },
            Err(LockError::Collision) => {}
            Err(e) => {
                tracing::error!(key = %key, owner = %owner, error = %e, "locket-lock.failed-to-acquire-lock")
            }
        }
        first = false;
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = &mut stop => break,
        }
    }
    // Stopped (explicitly or because the handle was dropped): release.
    match tokio::time::timeout(
        retry.max(Duration::from_secs(1)),
        backend.release(&key, &owner),
    )
    .await
    .unwrap_or(Err(LockError::Timeout(retry)))
    {
        Ok(()) => tracing::info!(key = %key, owner = %owner, "locket-lock.released-lock"),
        Err(LockError::Collision) => {
            tracing::info!(key = %key, owner = %owner, "locket-lock.release-skipped-not-owner")
        }
        Err(e) => {
            tracing::error!(key = %key, owner = %owner, error = %e, "locket-lock.failed-to-release-lock")
        }
    }
    state.send_replace(LockState::Released);
    tracing::info!(key = %key, owner = %owner, "locket-lock.completed");
    Ok(())
}
