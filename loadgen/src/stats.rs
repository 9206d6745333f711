//! Stats: what a measured run of one target records and how the pieces are merged.
//!
//! Each load worker owns a [`Recorder`] (no lock per request): a latency histogram of the
//! successful requests, error and status counts, and the histogram of the second it is in.
//! When a worker moves to a new second it hands the finished one to the shared [`Timeline`]
//! (one lock per worker per second), which merges the workers' seconds and, once a second can no
//! longer receive samples, keeps only its summary ([`SecondSample`]). So memory stays bounded
//! however long the run: at most [`MAX_TIMELINE_SECONDS`] summaries and a few open histograms.
//! [`Live`] holds the atomic counters the progress line reads.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

/// Highest latency the histograms hold (longer ones are recorded as this).
pub const MAX_LATENCY: Duration = Duration::from_secs(60);
/// Per-second summaries kept per run; later seconds are counted in `timeline_dropped` only.
pub const MAX_TIMELINE_SECONDS: usize = 3600;
/// Distinct HTTP status codes counted; others are counted as errors only.
const MAX_STATUS_CODES: usize = 64;

/// The summary of one second of a run, from the start of the measurement: of the requests
/// that completed in it (closed loop) or were due in it (open loop).
#[derive(Debug, Clone, PartialEq)]
pub struct SecondSample {
    /// Seconds since the start of the measurement (of the target, across rounds and steps).
    pub second: u64,
    /// Successful requests completed in this second.
    pub requests: u64,
    /// Failed requests completed in this second.
    pub errors: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

/// The results for one target (one run, or several merged).
pub struct Outcome {
    /// Latencies of successful (2xx/3xx) requests, in nanoseconds.
    pub latency: Histogram<u64>,
    /// Failed requests: transport errors, failed connects, timeouts and 4xx/5xx responses.
    pub errors: u64,
    /// Responses by status code (successful and not).
    pub statuses: BTreeMap<u16, u64>,
    /// One example of what went wrong, if anything did.
    pub first_error: Option<String>,
    /// The measured period.
    pub elapsed: Duration,
    /// Per-second samples, in order.
    pub timeline: Vec<SecondSample>,
    /// Seconds beyond [`MAX_TIMELINE_SECONDS`] that were not kept.
    pub timeline_dropped: u64,
}

impl Default for Outcome {
    fn default() -> Self {
        Self::new()
    }
}

impl Outcome {
    pub fn new() -> Self {
        Self {
            latency: new_histogram(),
            errors: 0,
            statuses: BTreeMap::new(),
            first_error: None,
            elapsed: Duration::ZERO,
            timeline: Vec::new(),
            timeline_dropped: 0,
        }
    }

    /// Successful requests.
    pub fn requests(&self) -> u64 {
        self.latency.len()
    }

    pub fn requests_per_sec(&self) -> f64 {
        self.requests() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// Failed requests as a share of all requests (0 when there were none).
    pub fn error_rate(&self) -> f64 {
        let total = self.requests() + self.errors;
        if total == 0 {
            0.0
        } else {
            self.errors as f64 / total as f64
        }
    }

    /// Latency at `quantile` (0..=1) in nanoseconds; 0 without successful requests.
    pub fn quantile_ns(&self, quantile: f64) -> u64 {
        if self.latency.is_empty() {
            0
        } else {
            self.latency.value_at_quantile(quantile)
        }
    }

    /// Adds a later run of the same target: counts add up, the timeline continues after
    /// this one's last second, the measured periods add up.
    pub fn append(&mut self, mut later: Outcome) {
        let timeline = std::mem::take(&mut later.timeline);
        let dropped = later.timeline_dropped;
        let elapsed = later.elapsed;
        self.merge_counts(later);
        // After this run's measured period, or after its last sample if some completed
        // later (an open loop waits for the requests due before its end).
        let offset = (self.elapsed.as_secs_f64().ceil() as u64)
            .max(self.timeline.last().map_or(0, |s| s.second + 1));
        for mut s in timeline {
            if self.timeline.len() >= MAX_TIMELINE_SECONDS {
                self.timeline_dropped += 1;
                continue;
            }
            s.second += offset;
            self.timeline.push(s);
        }
        self.timeline_dropped += dropped;
        self.elapsed += elapsed;
    }

    /// Adds another worker's counts of the same period (latencies, errors, statuses).
    pub fn merge_counts(&mut self, other: Outcome) {
        // Same bounds on both sides, so `add` cannot fail; saturate just in case.
        if self.latency.add(&other.latency).is_err() {
            for v in other.latency.iter_recorded() {
                self.latency
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
        self.errors += other.errors;
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY.as_nanos() as u64, 3)
        .expect("static histogram bounds are valid")
}

/// A low-resolution (2 significant digits), auto-resizing histogram for one second.
fn new_second_histogram() -> Histogram<u64> {
    Histogram::new(2).expect("2 significant digits are valid")
}

/// Counters shared with the progress line.
#[derive(Default)]
pub struct Live {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
}

impl Live {
    pub fn reset(&self) {
        self.requests.store(0, Ordering::Relaxed);
        self.errors.store(0, Ordering::Relaxed);
    }
}

/// One second being filled by one worker, or merged from several.
struct SecondAcc {
    requests: u64,
    errors: u64,
    latency: Histogram<u64>,
}

impl SecondAcc {
    fn new() -> Self {
        Self {
            requests: 0,
            errors: 0,
            latency: new_second_histogram(),
        }
    }

    fn merge(&mut self, other: &SecondAcc) {
        self.requests += other.requests;
        self.errors += other.errors;
        // Auto-resizing histograms of the same precision: `add` only fails on overflow.
        let _ = self.latency.add(&other.latency);
    }

    fn summary(&self, second: u64) -> SecondSample {
        let q = |quantile| {
            if self.latency.is_empty() {
                0
            } else {
                self.latency.value_at_quantile(quantile)
            }
        };
        SecondSample {
            second,
            requests: self.requests,
            errors: self.errors,
            p50_ns: q(0.5),
            p99_ns: q(0.99),
            max_ns: self.latency.max(),
        }
    }
}

/// The per-second samples of one run, merged from all workers.
pub struct Timeline {
    origin: Instant,
    /// Seconds that may still receive samples from workers.
    open: BTreeMap<u64, SecondAcc>,
    /// Summaries of seconds that are done, in order.
    closed: Vec<SecondSample>,
    dropped: u64,
    /// Seconds this far behind the newest one handed in are summarised: no request can still
    /// be in flight from then (every request has a timeout shorter than this).
    close_lag: u64,
}

impl Timeline {
    /// A timeline whose second 0 starts at `origin`; `request_timeout` bounds how late a sample
    /// for a second can arrive.
    pub fn new(origin: Instant, request_timeout: Duration) -> Arc<Mutex<Timeline>> {
        Arc::new(Mutex::new(Timeline {
            origin,
            open: BTreeMap::new(),
            closed: Vec::new(),
            dropped: 0,
            close_lag: request_timeout.as_secs() + 3,
        }))
    }

    fn hand_in(&mut self, second: u64, acc: &SecondAcc) {
        match self.closed.last_mut() {
            // Very late: only the counts can still be corrected.
            Some(last) if second <= last.second => {
                if let Some(s) = self.closed.iter_mut().find(|s| s.second == second) {
                    s.requests += acc.requests;
                    s.errors += acc.errors;
                }
            }
            _ => self
                .open
                .entry(second)
                .or_insert_with(SecondAcc::new)
                .merge(acc),
        }
        let newest = self.open.keys().next_back().copied().unwrap_or(0);
        while let Some(entry) = self.open.first_entry() {
            if *entry.key() + self.close_lag > newest {
                break;
            }
            let (s, acc) = entry.remove_entry();
            self.close(s, &acc);
        }
    }

    fn close(&mut self, second: u64, acc: &SecondAcc) {
        if self.closed.len() >= MAX_TIMELINE_SECONDS {
            self.dropped += 1;
            return;
        }
        // Seconds without any completion are kept as zero rows, so plots show the gap.
        let mut next = self.closed.last().map_or(0, |s| s.second + 1);
        while next < second && self.closed.len() < MAX_TIMELINE_SECONDS - 1 {
            self.closed.push(SecondAcc::new().summary(next));
            next += 1;
        }
        self.closed.push(acc.summary(second));
    }

    /// All seconds summarised, up to (not including) second `until` (the run's length).
    pub fn finish(&mut self, until: u64) -> (Vec<SecondSample>, u64) {
        let open = std::mem::take(&mut self.open);
        for (s, acc) in open {
            self.close(s, &acc);
        }
        if until > 0 && self.closed.last().is_none_or(|s| s.second + 1 < until) {
            self.close(until - 1, &SecondAcc::new());
        }
        (std::mem::take(&mut self.closed), self.dropped)
    }
}

/// What one worker records; merged into an [`Outcome`] when the worker ends.
pub struct Recorder {
    out: Outcome,
    /// The timeline's second 0 (copied, so recording a request takes no lock).
    origin: Instant,
    second: u64,
    current: SecondAcc,
    timeline: Arc<Mutex<Timeline>>,
    live: Arc<Live>,
}

impl Recorder {
    pub fn new(timeline: Arc<Mutex<Timeline>>, live: Arc<Live>) -> Self {
        let origin = match timeline.lock() {
            Ok(t) => t.origin,
            Err(poisoned) => poisoned.into_inner().origin,
        };
        Self {
            out: Outcome::new(),
            origin,
            second: 0,
            current: SecondAcc::new(),
            timeline,
            live,
        }
    }

    /// A request answered with `status`, `latency` after it was started (or, in an open loop,
    /// after it was due), counted in the timeline's second of `when` (its completion in a
    /// closed loop, its due time in an open loop).
    pub fn response(&mut self, when: Instant, status: u16, latency: Duration) {
        self.at(when);
        if self.out.statuses.len() < MAX_STATUS_CODES || self.out.statuses.contains_key(&status) {
            *self.out.statuses.entry(status).or_default() += 1;
        }
        if status >= 400 {
            self.error_counted(format!("HTTP status {status}"));
            return;
        }
        let nanos = latency.as_nanos().min(u64::MAX as u128) as u64;
        self.out.latency.saturating_record(nanos);
        self.current.requests += 1;
        let _ = self.current.latency.record(nanos.max(1));
        self.live.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A request that failed without a response, counted in the second of `when`.
    pub fn failure(&mut self, when: Instant, what: String) {
        self.at(when);
        self.error_counted(what);
    }

    fn error_counted(&mut self, what: String) {
        self.out.errors += 1;
        self.out.first_error.get_or_insert(what);
        self.current.errors += 1;
        self.live.errors.fetch_add(1, Ordering::Relaxed);
    }

    fn at(&mut self, when: Instant) {
        let second = when.saturating_duration_since(self.origin).as_secs();
        if second != self.second {
            self.hand_in();
            self.second = second;
        }
    }

    fn hand_in(&mut self) {
        if self.current.requests == 0 && self.current.errors == 0 {
            return;
        }
        let acc = std::mem::replace(&mut self.current, SecondAcc::new());
        let mut t = match self.timeline.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        t.hand_in(self.second, &acc);
    }

    /// Hands in the last second and returns the worker's counts (without a timeline).
    pub fn finish(mut self) -> Outcome {
        self.hand_in();
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder(origin: Instant) -> (Recorder, Arc<Mutex<Timeline>>) {
        let timeline = Timeline::new(origin, Duration::from_secs(1));
        (
            Recorder::new(timeline.clone(), Arc::new(Live::default())),
            timeline,
        )
    }

    #[test]
    fn responses_of_4xx_and_5xx_are_errors_and_all_statuses_are_counted() {
        let origin = Instant::now();
        let (mut r, _) = recorder(origin);
        r.response(origin, 200, Duration::from_millis(1));
        r.response(origin, 503, Duration::from_millis(1));
        r.failure(origin, "connection refused".into());
        let out = r.finish();
        assert_eq!(out.requests(), 1);
        assert_eq!(out.errors, 2);
        assert_eq!(out.statuses.get(&200), Some(&1));
        assert_eq!(out.statuses.get(&503), Some(&1));
        assert_eq!(out.first_error.as_deref(), Some("HTTP status 503"));
    }

    #[test]
    fn the_timeline_has_one_sample_per_second_including_empty_ones() {
        let origin = Instant::now();
        let (mut r, timeline) = recorder(origin);
        r.response(origin, 200, Duration::from_millis(2));
        r.response(
            origin + Duration::from_millis(500),
            200,
            Duration::from_millis(4),
        );
        r.response(
            origin + Duration::from_millis(2500),
            200,
            Duration::from_millis(8),
        );
        r.finish();
        let (samples, dropped) = timeline.lock().unwrap().finish(4);
        assert_eq!(dropped, 0);
        let seconds: Vec<_> = samples.iter().map(|s| (s.second, s.requests)).collect();
        assert_eq!(seconds, vec![(0, 2), (1, 0), (2, 1), (3, 0)]);
        assert!(samples[2].p99_ns >= 7_900_000, "{:?}", samples[2]);
    }

    #[test]
    fn two_workers_seconds_are_merged() {
        let origin = Instant::now();
        let timeline = Timeline::new(origin, Duration::from_secs(1));
        let live = Arc::new(Live::default());
        let mut a = Recorder::new(timeline.clone(), live.clone());
        let mut b = Recorder::new(timeline.clone(), live.clone());
        a.response(origin, 200, Duration::from_millis(1));
        b.response(origin, 200, Duration::from_millis(1));
        b.failure(origin, "x".into());
        a.finish();
        b.finish();
        let (samples, _) = timeline.lock().unwrap().finish(1);
        assert_eq!(samples.len(), 1);
        assert_eq!((samples[0].requests, samples[0].errors), (2, 1));
        assert_eq!(live.requests.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn appended_runs_continue_the_timeline_and_add_up() {
        let mut first = Outcome::new();
        first.elapsed = Duration::from_secs(2);
        first.latency.record(1000).unwrap();
        first.timeline = vec![SecondAcc::new().summary(0), SecondAcc::new().summary(1)];
        let mut second = Outcome::new();
        second.elapsed = Duration::from_secs(1);
        second.latency.record(2000).unwrap();
        second.errors = 1;
        second.timeline = vec![SecondAcc::new().summary(0)];
        first.append(second);
        assert_eq!(first.requests(), 2);
        assert_eq!(first.errors, 1);
        assert_eq!(first.elapsed, Duration::from_secs(3));
        let seconds: Vec<_> = first.timeline.iter().map(|s| s.second).collect();
        assert_eq!(seconds, vec![0, 1, 2]);
    }
}
