//! Connections to backends: dialing with a timeout and the per-endpoint keep-alive pool.

/// Idle keep-alive connections to one backend.
pub struct IdleConnections {
    capacity: usize,
}

impl IdleConnections {
    pub fn new(capacity: usize) -> Self {
        Self { capacity }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}
