//! Background tasks tied to an owner's lifetime.

use tokio::task::JoinHandle;

/// Aborts its task when dropped, so a background loop never outlives what started it (also
/// when the owner is itself an aborted task).
pub struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
