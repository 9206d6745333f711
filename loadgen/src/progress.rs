//! The live progress line on stderr: what is being loaded, how far along, and the last
//! second's successful requests/s and errors, redrawn in place four times a second. Only drawn
//! when asked to (stderr is a terminal, or `--progress`); the counters behind it
//! ([`Live`]) are kept either way, since they cost one relaxed atomic add per request.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::stats::Live;

const REDRAW: Duration = Duration::from_millis(250);

/// What is running now.
struct Phase {
    what: String,
    started: Instant,
    length: Duration,
}

/// The progress line (drawn or not) and its counters.
pub struct Progress {
    live: Arc<Live>,
    phase: Arc<Mutex<Phase>>,
    printer: Mutex<Option<JoinHandle<()>>>,
}

impl Progress {
    /// Draws the line on stderr when `draw`; call from within the runtime.
    pub fn new(draw: bool) -> Self {
        let live = Arc::new(Live::default());
        let phase = Arc::new(Mutex::new(Phase {
            what: String::new(),
            started: Instant::now(),
            length: Duration::ZERO,
        }));
        let printer = draw.then(|| tokio::spawn(print_loop(live.clone(), phase.clone())));
        Self {
            live,
            phase,
            printer: Mutex::new(printer),
        }
    }

    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// A new phase (`what` for about `length`): the counters start again from zero.
    pub fn begin(&self, what: String, length: Duration) {
        self.live.reset();
        let mut phase = match self.phase.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        *phase = Phase {
            what,
            started: Instant::now(),
            length,
        };
    }

    /// Prints a line above the progress line (which is redrawn after it).
    pub fn note(&self, line: &str) {
        if self.drawing() {
            eprint!("\r\x1b[2K");
        }
        eprintln!("{line}");
    }

    /// Stops drawing and clears the line (before the results are printed).
    pub fn stop(&self) {
        let printer = match self.printer.lock() {
            Ok(mut p) => p.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(p) = printer {
            p.abort();
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
        }
    }

    fn drawing(&self) -> bool {
        match self.printer.lock() {
            Ok(p) => p.is_some(),
            Err(poisoned) => poisoned.into_inner().is_some(),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn print_loop(live: Arc<Live>, phase: Arc<Mutex<Phase>>) {
    let mut ticker = tokio::time::interval(REDRAW);
    // Samples of (when, requests, errors) over the last second, for the rates.
    let mut window: std::collections::VecDeque<(Instant, u64, u64)> = Default::default();
    loop {
        ticker.tick().await;
        let now = Instant::now();
        let requests = live.requests.load(Ordering::Relaxed);
        let errors = live.errors.load(Ordering::Relaxed);
        let (what, elapsed, length) = {
            let p = match phase.lock() {
                Ok(p) => p,
                Err(poisoned) => poisoned.into_inner(),
            };
            (p.what.clone(), now - p.started, p.length)
        };
        // A reset (new phase) makes the counters go back: start the window again.
        if window
            .back()
            .is_some_and(|&(_, r, e)| r > requests || e > errors)
        {
            window.clear();
        }
        window.push_back((now, requests, errors));
        while window.len() > 5 {
            window.pop_front();
        }
        let (t0, r0, e0) = window.front().copied().unwrap_or((now, 0, 0));
        let span = (now - t0).as_secs_f64().max(1e-3);
        let line = format!(
            "{what}  {:>5.1}/{:.0}s  {:>9.0} req/s  {:>6.0} err/s  {requests} ok  {errors} failed",
            elapsed.as_secs_f64(),
            length.as_secs_f64(),
            (requests - r0) as f64 / span,
            (errors - e0) as f64 / span,
        );
        eprint!("\r\x1b[2K{line}");
        let _ = std::io::stderr().flush();
    }
}
