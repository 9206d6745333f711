//! The open-loop schedule: request `i` is due at `start + i / rate`, whatever happened to the
//! earlier ones. Workers take the next due slot from a shared counter, wait for its time (or
//! not, when they are already late) and measure latency from the slot's time, not from when
//! they got round to sending. A server that stalls therefore shows the stall in every request
//! that was due during it, as a user's would, instead of hiding it by sending less (the
//! "coordinated omission" of closed-loop tools; wrk2's fix).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Evenly spaced due times from `start` until `end` (exclusive).
pub struct Schedule {
    start: Instant,
    end: Instant,
    rate: f64,
    next: AtomicU64,
}

impl Schedule {
    /// `rate` requests per second, finite and > 0.
    pub fn new(start: Instant, end: Instant, rate: f64) -> Result<Self, String> {
        if !rate.is_finite() || rate <= 0.0 {
            return Err(format!("request rate {rate}: need a number > 0"));
        }
        Ok(Self {
            start,
            end,
            rate,
            next: AtomicU64::new(0),
        })
    }

    /// The next slot's due time, or `None` once the schedule has run out. Each slot is handed
    /// out once, to whichever worker asks first.
    pub fn next_slot(&self) -> Option<Instant> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let due = self.start + Duration::from_secs_f64(i as f64 / self.rate);
        (due < self.end).then_some(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_evenly_spaced_and_end_before_the_end() {
        let start = Instant::now();
        let schedule = Schedule::new(start, start + Duration::from_secs(1), 4.0).unwrap();
        let slots: Vec<_> = std::iter::from_fn(|| schedule.next_slot())
            .map(|t| t - start)
            .collect();
        assert_eq!(
            slots,
            [0, 250, 500, 750].map(Duration::from_millis).to_vec()
        );
        assert!(schedule.next_slot().is_none());
    }

    #[test]
    fn a_rate_must_be_positive() {
        let now = Instant::now();
        assert!(Schedule::new(now, now, 0.0).is_err());
        assert!(Schedule::new(now, now, f64::INFINITY).is_err());
    }
}
