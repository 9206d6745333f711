//! Reporting: the results table (requests, req/s, latency percentiles, errors per target) and
//! a line comparing gorouter with the direct path.

use std::time::Duration;

use crate::load::{LoadConfig, Outcome};

/// Prints the run parameters and one row per target.
pub fn print(config: &LoadConfig, rows: &[(&str, &Outcome)]) {
    println!(
        "{} connections, {:?} warmup, {:?} measured; latency of successful requests",
        config.connections, config.warmup, config.duration
    );
    println!(
        "{:<10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "target", "requests", "req/s", "p50", "p90", "p99", "max", "errors"
    );
    for (name, o) in rows {
        let q = |quantile| latency(o.latency.value_at_quantile(quantile));
        println!(
            "{:<10} {:>10} {:>10.0} {:>9} {:>9} {:>9} {:>9} {:>8}",
            name,
            o.requests(),
            o.requests_per_sec(),
            q(0.50),
            q(0.90),
            q(0.99),
            latency(o.latency.max()),
            o.errors
        );
    }
    for (name, o) in rows {
        if let Some(e) = &o.first_error {
            println!("{name}: first error: {e}");
        }
    }
}

/// One line: gorouter's throughput as a share of direct, and the added median latency.
pub fn print_comparison(direct: &Outcome, via: &Outcome) {
    if direct.requests() == 0 || via.requests() == 0 {
        return;
    }
    let share = 100.0 * via.requests_per_sec() / direct.requests_per_sec();
    let added =
        via.latency.value_at_quantile(0.5) as i64 - direct.latency.value_at_quantile(0.5) as i64;
    let sign = if added < 0 { "-" } else { "+" };
    println!(
        "gorouter: {share:.0}% of direct req/s, p50 {sign}{}",
        latency(added.unsigned_abs())
    );
}

/// Nanoseconds as a short human figure (`85µs`, `1.24ms`, `2.5s`).
fn latency(nanos: u64) -> String {
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
