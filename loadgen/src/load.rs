//! The load of one target for one period: N connections (HTTP/1.1 or HTTP/2, plain or TLS),
//! each with one request in flight, for a warmup and then a measured period, in one of two
//! loops:
//!
//! - closed loop (`rate: None`): each connection sends its next request when the previous one
//!   is answered. Counts requests that started after the warmup and finished before the end.
//! - open loop (`rate: Some(r)`): requests are due on a fixed timeline ([`Schedule`]); each
//!   connection takes the next due slot, and latency runs from the slot's due time (or from
//!   when the request went out, if the timer woke it a little early). Counts every request
//!   due in the measured period, waiting (up to the request timeout) for the
//!   ones still in flight at the end, so a slow tail is measured, not cut off.
//!
//! With `new_connection_per_request` every request opens (and, for TLS, fully handshakes) a
//! connection of its own. Every connect and request has a deadline, so a run always ends on
//! time, even against a server that stops answering.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::time::{sleep, sleep_until, timeout_at, Instant};

use crate::client::{self, Connection};
use crate::schedule::Schedule;
use crate::stats::{Live, Outcome, Recorder, Timeline};
use crate::targets::Target;

/// How long a closed-loop request in flight at the end may still take before it is abandoned.
const END_GRACE: Duration = Duration::from_secs(2);
/// Open-loop requests are woken this much before they are due: tokio's timer ticks every
/// millisecond and wakes *after* the deadline, which would otherwise add up to a millisecond
/// of the client's own lateness to every latency. A request that goes out early has its
/// latency measured from when it went out.
const TIMER_SLACK: Duration = Duration::from_millis(1);
/// Pause after a failed connect in a closed loop, so a dead server does not turn the loop into
/// a busy spin. (An open loop is paced by its schedule.)
const RECONNECT_PAUSE: Duration = Duration::from_millis(20);

/// How hard and how long to load a target.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Connections, each with at most one request in flight.
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// A new connection for every request (`Connection: close`), to measure connection set-up
    /// (TLS handshakes) rather than requests.
    pub new_connection_per_request: bool,
    /// Open loop at this many requests per second; `None` is a closed loop.
    pub rate: Option<f64>,
    /// The request body; empty sends GET, anything else POST.
    pub request_body: Bytes,
    /// Deadline of one request, connect included.
    pub timeout: Duration,
}

impl LoadConfig {
    /// A closed loop with the defaults of the command line.
    pub fn closed(connections: usize, warmup: Duration, duration: Duration) -> Self {
        Self {
            connections,
            warmup,
            duration,
            new_connection_per_request: false,
            rate: None,
            request_body: Bytes::new(),
            timeout: Duration::from_secs(10),
        }
    }

    /// The same load as an open loop at `rate` requests per second.
    pub fn open(mut self, rate: f64) -> Self {
        self.rate = Some(rate);
        self
    }
}

/// Loads `target` as `config` says and returns the merged results. `live` counts requests as
/// they complete (for the progress line).
pub async fn run(target: &Target, config: &LoadConfig, live: &Arc<Live>) -> Result<Outcome> {
    let start = Instant::now();
    let measure_from = start + config.warmup;
    let end = measure_from + config.duration;
    let timeline = Timeline::new(measure_from, config.timeout.max(END_GRACE));
    let schedule = match config.rate {
        Some(rate) => Some(Arc::new(
            Schedule::new(start, end, rate).map_err(anyhow::Error::msg)?,
        )),
        None => None,
    };
    let period = Period { measure_from, end };
    let tasks: Vec<_> = (0..config.connections.max(1))
        .map(|_| {
            let worker = Worker::new(target.clone(), config);
            let recorder = Recorder::new(timeline.clone(), live.clone());
            match &schedule {
                Some(s) => tokio::spawn(open_loop(worker, recorder, s.clone(), period)),
                None => tokio::spawn(closed_loop(worker, recorder, period)),
            }
        })
        .collect();
    let mut total = Outcome::new();
    for task in tasks {
        total.merge_counts(task.await.context("load task panicked")?);
    }
    total.elapsed = config.duration;
    let seconds = config.duration.as_secs_f64().ceil() as u64;
    let (samples, dropped) = match timeline.lock() {
        Ok(mut t) => t.finish(seconds),
        Err(poisoned) => poisoned.into_inner().finish(seconds),
    };
    total.timeline = samples;
    total.timeline_dropped = dropped;
    Ok(total)
}

#[derive(Clone, Copy)]
struct Period {
    measure_from: Instant,
    end: Instant,
}

/// Why one request got no response.
enum Failure {
    Connect(String),
    Request(String),
    Timeout(Duration),
}

impl Failure {
    fn describe(self) -> String {
        match self {
            Failure::Connect(e) | Failure::Request(e) => e,
            Failure::Timeout(d) => format!("no response within {d:?}"),
        }
    }
}

/// One connection's state: the connection (if open) and the random source for route choice.
struct Worker {
    target: Target,
    body: Bytes,
    close: bool,
    timeout: Duration,
    conn: Option<Connection>,
    rng: SmallRng,
}

impl Worker {
    fn new(target: Target, config: &LoadConfig) -> Self {
        Self {
            target,
            body: config.request_body.clone(),
            close: config.new_connection_per_request,
            timeout: config.timeout,
            conn: None,
            rng: SmallRng::from_rng(&mut rand::rng()),
        }
    }

    /// One request (connecting first if needed), abandoned at `deadline`.
    async fn request(&mut self, deadline: Instant) -> Result<u16, Failure> {
        let started = Instant::now();
        let timed_out = || Failure::Timeout(deadline.saturating_duration_since(started));
        if self.conn.as_ref().is_none_or(Connection::is_closed) {
            match timeout_at(deadline, client::connect(&self.target)).await {
                Ok(Ok(c)) => self.conn = Some(c),
                Ok(Err(e)) => return Err(Failure::Connect(format!("{e:#}"))),
                Err(_) => return Err(timed_out()),
            }
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(Failure::Connect("no connection".into()));
        };
        let host = self.target.pick_host(&mut self.rng);
        let result = timeout_at(
            deadline,
            client::request(conn, &self.target, host, &self.body, self.close),
        )
        .await;
        if self.close {
            self.conn = None;
        }
        match result {
            Ok(Ok(status)) => Ok(status.as_u16()),
            Ok(Err(e)) => {
                self.conn = None;
                Err(Failure::Request(format!("{e:#}")))
            }
            Err(_) => {
                // The connection may still deliver the late response: start afresh.
                self.conn = None;
                Err(timed_out())
            }
        }
    }
}

/// One connection's closed loop until the end.
async fn closed_loop(mut worker: Worker, mut rec: Recorder, period: Period) -> Outcome {
    while Instant::now() < period.end {
        let started = Instant::now();
        let measured = started >= period.measure_from;
        let deadline = (started + worker.timeout).min(period.end + END_GRACE);
        let result = worker.request(deadline).await;
        let finished = Instant::now();
        match result {
            Err(Failure::Connect(e)) => {
                if measured {
                    rec.failure(finished, e);
                }
                sleep(RECONNECT_PAUSE).await;
            }
            Err(Failure::Timeout(_)) if finished >= period.end => {
                if measured {
                    rec.failure(
                        finished,
                        format!("no response within {END_GRACE:?} after the end"),
                    );
                }
                break;
            }
            // Warmup, or the tail past the end: neither counts.
            _ if !measured || finished > period.end => {}
            Ok(status) => rec.response(finished, status, finished - started),
            Err(f) => rec.failure(finished, f.describe()),
        }
    }
    rec.finish()
}

/// One connection's share of the open loop: the next due slot until the schedule runs out.
async fn open_loop(
    mut worker: Worker,
    mut rec: Recorder,
    schedule: Arc<Schedule>,
    period: Period,
) -> Outcome {
    while let Some(due) = schedule.next_slot() {
        sleep_until(due.checked_sub(TIMER_SLACK).unwrap_or(due)).await;
        let sent = Instant::now();
        let measured = due >= period.measure_from;
        let result = worker.request(sent + worker.timeout).await;
        if !measured {
            continue;
        }
        let finished = Instant::now();
        // From when it was due; from when it went out if that was earlier (timer slack).
        let latency = finished - sent.min(due);
        match result {
            Ok(status) => rec.response(due, status, latency),
            Err(f) => rec.failure(due, f.describe()),
        }
    }
    rec.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LoadConfig {
        LoadConfig::closed(4, Duration::from_millis(100), Duration::from_millis(300))
    }

    #[tokio::test]
    async fn loads_the_in_process_backend_without_errors() {
        let addr = crate::backend::start().await.unwrap();
        let target = Target::plain("t", addr, &addr.to_string(), "/");
        let live = Arc::new(Live::default());
        let out = run(&target, &config(), &live).await.unwrap();
        assert!(out.requests() > 0);
        assert_eq!(out.errors, 0, "{:?}", out.first_error);
        assert!(out.latency.value_at_quantile(0.99) > 0);
        assert_eq!(out.statuses.get(&200), Some(&out.requests()));
    }

    #[tokio::test]
    async fn a_dead_server_gives_errors_and_the_run_still_ends_on_time() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let target = Target::plain("t", port, "x", "/");
        let started = std::time::Instant::now();
        let live = Arc::new(Live::default());
        let out = run(&target, &config(), &live).await.unwrap();
        // Ends (warm-up + run: 400 ms) instead of hanging on the dead server: a generous bound.
        assert!(started.elapsed() < Duration::from_secs(20));
        assert_eq!(out.requests(), 0);
        assert!(out.errors > 0);
        assert!(out.first_error.unwrap().contains("connecting to"));
    }

    #[tokio::test]
    async fn an_open_loop_against_a_dead_server_fails_each_due_request() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let target = Target::plain("t", port, "x", "/");
        let live = Arc::new(Live::default());
        let config = LoadConfig::closed(2, Duration::ZERO, Duration::from_millis(500)).open(100.0);
        let out = run(&target, &config, &live).await.unwrap();
        assert_eq!(out.requests(), 0);
        assert_eq!(out.errors, 50);
    }
}
