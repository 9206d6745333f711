//! The text report on stdout: the run's parameters, one row per target (requests, req/s,
//! latency percentiles, errors), the ramp's steps and knee, and a line comparing gorouter with
//! the direct path.
//!
//! The row's first eight columns (`target requests req/s p50 p90 p99 max errors`) are a
//! stable interface: `tools/bench-https/run` and `tools/bench-route-service/run` read them
//! with awk. New columns go after them.

use std::io::{self, Write};
use std::time::Duration;

use crate::runner::{Mode, RunResult};
use crate::stats::Outcome;

/// Prints the run parameters and one row per target, then any ramps.
pub fn print(out: &mut dyn Write, run: &RunResult) -> io::Result<()> {
    let c = &run.config;
    let loop_kind = match run.mode {
        Mode::Open { rate } => {
            format!("open loop at {rate} req/s (latency from each request's due time)")
        }
        Mode::Closed => "closed loop".into(),
        Mode::Ramp => match &run.ramp_plan {
            Some(p) => format!(
                "ramp of {} {}:{}:{}",
                p.kind.as_str(),
                p.start,
                p.step,
                p.max
            ),
            None => "ramp".into(),
        },
    };
    let rounds = if run.rounds > 1 {
        format!(" in {} rotated rounds", run.rounds)
    } else {
        String::new()
    };
    let timing = match (&run.ramp_plan, run.mode) {
        (Some(p), Mode::Ramp) => format!(
            "{:?} warmup + {:?} measured per step",
            p.step_warmup, p.step_duration
        ),
        _ => format!("{:?} warmup, {:?} measured{rounds}", c.warmup, c.duration),
    };
    writeln!(
        out,
        "{} connections, {timing}; {loop_kind}; {}; latency of successful requests",
        c.connections,
        run.protocol.as_str(),
    )?;
    writeln!(
        out,
        "{:<10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9}",
        "target", "requests", "req/s", "p50", "p90", "p99", "max", "errors", "p99.9", "p99.99"
    )?;
    for t in &run.targets {
        print_row(out, &t.label, &t.outcome)?;
    }
    for t in &run.targets {
        if let Some(e) = &t.outcome.first_error {
            writeln!(out, "{}: first error: {e}", t.label)?;
        }
    }
    for t in &run.targets {
        let Some(ramp) = &t.ramp else { continue };
        writeln!(out)?;
        let bound = match ramp.bound.max_p99 {
            Some(p99) => format!(
                "errors <= {:.2}% and p99 <= {}",
                ramp.bound.max_error_rate * 100.0,
                latency(p99.as_nanos() as u64)
            ),
            None => format!("errors <= {:.2}%", ramp.bound.max_error_rate * 100.0),
        };
        writeln!(
            out,
            "{}: ramp of {}, bound: {bound}",
            t.label,
            ramp.kind.as_str()
        )?;
        writeln!(
            out,
            "{:>12} {:>10} {:>9} {:>9} {:>8}  held",
            ramp.kind.as_str(),
            "req/s",
            "p50",
            "p99",
            "errors%"
        )?;
        for s in &ramp.steps {
            writeln!(
                out,
                "{:>12.0} {:>10.0} {:>9} {:>9} {:>8.2}  {}",
                s.level,
                s.achieved_rate,
                latency(s.p50_ns),
                latency(s.p99_ns),
                s.error_rate * 100.0,
                match &s.crossed {
                    None => "yes".to_string(),
                    Some(why) => format!("no: {why}"),
                }
            )?;
        }
        match ramp.knee {
            Some(k) => writeln!(
                out,
                "{}: knee at {:.0} req/s{}",
                t.label,
                k.rate,
                if ramp.crossed {
                    ""
                } else {
                    " (no step crossed the bound: the knee is at least this)"
                }
            )?,
            None => writeln!(
                out,
                "{}: no knee: the first step already crossed the bound",
                t.label
            )?,
        }
    }
    Ok(())
}

fn print_row(out: &mut dyn Write, name: &str, o: &Outcome) -> io::Result<()> {
    let q = |quantile| latency(o.quantile_ns(quantile));
    writeln!(
        out,
        "{:<10} {:>10} {:>10.0} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9}",
        name,
        o.requests(),
        o.requests_per_sec(),
        q(0.50),
        q(0.90),
        q(0.99),
        latency(o.latency.max()),
        o.errors,
        q(0.999),
        q(0.9999),
    )
}

/// One line: gorouter's throughput as a share of direct, and the added median latency.
pub fn print_comparison(out: &mut dyn Write, direct: &Outcome, via: &Outcome) -> io::Result<()> {
    if direct.requests() == 0 || via.requests() == 0 {
        return Ok(());
    }
    let share = 100.0 * via.requests_per_sec() / direct.requests_per_sec();
    let added = via.quantile_ns(0.5) as i64 - direct.quantile_ns(0.5) as i64;
    let sign = if added < 0 { "-" } else { "+" };
    writeln!(
        out,
        "gorouter: {share:.0}% of direct req/s, p50 {sign}{}",
        latency(added.unsigned_abs())
    )
}

/// Nanoseconds as a short human figure (`85µs`, `1.24ms`, `2.5s`).
pub fn latency(nanos: u64) -> String {
    let d = Duration::from_nanos(nanos);
    if nanos == 0 {
        "-".into()
    } else if d < Duration::from_millis(1) {
        format!("{}µs", d.as_micros())
    } else if d < Duration::from_secs(1) {
        format!("{:.2}ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::latency;

    #[test]
    fn latency_formats_by_magnitude() {
        assert_eq!(latency(0), "-");
        assert_eq!(latency(85_400), "85µs");
        assert_eq!(latency(1_240_000), "1.24ms");
        assert_eq!(latency(2_500_000_000), "2.50s");
    }
}
