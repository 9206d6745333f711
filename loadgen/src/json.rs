//! The machine-readable report (`--json FILE`, `-` for stdout): one JSON document per run, its
//! shape fixed by `loadgen/schema/report.schema.json` (`"schema": "loadgen-report/1"`; fields
//! are only ever added within a version). Times are in milliseconds (`*_ms`) or seconds
//! (`*_s`), rates in requests per second; a percentile is a number of percent (99.9).

use serde_json::{json, Value};

use crate::ramp::RampResult;
use crate::runner::{Mode, RunResult, TargetResult};
use crate::stats::Outcome;
use crate::targets::Distribution;

/// The document's `schema` value.
pub const SCHEMA: &str = "loadgen-report/1";

/// Percentiles sampled for the distribution curve: 50% to 99.999%, evenly spaced on the
/// "nines" scale (-log10(1 - p)), 20 points per nine, plus the usual round ones.
pub fn percentile_grid() -> Vec<f64> {
    let mut grid: Vec<f64> = (6..=100)
        .map(|i| 100.0 * (1.0 - 10f64.powf(-(i as f64) / 20.0)))
        .collect();
    grid.extend([50.0, 75.0, 90.0, 99.0, 99.9, 99.99, 99.999]);
    grid.sort_by(f64::total_cmp);
    grid.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
    grid.retain(|&p| (50.0..=99.999 + 1e-9).contains(&p));
    grid
}

fn ms(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

/// The whole run as the documented JSON value.
pub fn document(run: &RunResult) -> Value {
    let c = &run.config;
    let routes = run.routes.as_ref().map(|r| {
        let (distribution, s) = match r.distribution {
            Distribution::Uniform => ("uniform", None),
            Distribution::Zipf { s } => ("zipf", Some(s)),
        };
        json!({
            "count": r.count,
            "distribution": distribution,
            "zipf_s": s,
            "registered_via": r.registered_via,
        })
    });
    let ramp = run.ramp_plan.as_ref().map(|p| {
        json!({
            "kind": p.kind.as_str(),
            "start": p.start,
            "step": p.step,
            "max": p.max,
            "step_duration_s": p.step_duration.as_secs_f64(),
            "step_warmup_s": p.step_warmup.as_secs_f64(),
            "max_error_rate": p.bound.max_error_rate,
            "max_p99_ms": p.bound.max_p99.map(|d| d.as_secs_f64() * 1e3),
        })
    });
    let rate = match run.mode {
        Mode::Open { rate } => Some(rate),
        _ => None,
    };
    json!({
        "schema": SCHEMA,
        "started_at_unix": run.started_at_unix,
        "mode": run.mode.as_str(),
        "config": {
            "connections": c.connections,
            "warmup_s": c.warmup.as_secs_f64(),
            "duration_s": c.duration.as_secs_f64(),
            "rounds": run.rounds,
            "rate": rate,
            "protocol": run.protocol.as_str(),
            "new_connection_per_request": c.new_connection_per_request,
            "request_body_bytes": c.request_body.len(),
            "timeout_s": c.timeout.as_secs_f64(),
            "routes": routes,
            "ramp": ramp,
        },
        "targets": run.targets.iter().map(target).collect::<Vec<_>>(),
    })
}

fn target(t: &TargetResult) -> Value {
    let o = &t.outcome;
    json!({
        "label": t.label,
        "url": t.url,
        "host": t.host,
        "requests": o.requests(),
        "errors": o.errors,
        "error_rate": o.error_rate(),
        "requests_per_sec": o.requests_per_sec(),
        "elapsed_s": o.elapsed.as_secs_f64(),
        "latency_ms": latency_summary(o),
        "percentiles": percentiles(o),
        "statuses": o.statuses.iter()
            .map(|(code, n)| (code.to_string(), json!(n)))
            .collect::<serde_json::Map<_, _>>(),
        "first_error": o.first_error,
        "timeline": o.timeline.iter().map(|s| json!({
            "second": s.second,
            "requests": s.requests,
            "errors": s.errors,
            "p50_ms": ms(s.p50_ns),
            "p99_ms": ms(s.p99_ns),
            "max_ms": ms(s.max_ns),
        })).collect::<Vec<_>>(),
        "timeline_dropped": o.timeline_dropped,
        "ramp": t.ramp.as_ref().map(ramp),
    })
}

fn latency_summary(o: &Outcome) -> Value {
    let q = |quantile| ms(o.quantile_ns(quantile));
    json!({
        "p50": q(0.5),
        "p90": q(0.9),
        "p99": q(0.99),
        "p99_9": q(0.999),
        "p99_99": q(0.9999),
        "max": ms(o.latency.max()),
        "mean": if o.latency.is_empty() { 0.0 } else { o.latency.mean() / 1e6 },
    })
}

/// The distribution curve; empty without successful requests.
pub fn percentiles(o: &Outcome) -> Vec<Value> {
    if o.latency.is_empty() {
        return Vec::new();
    }
    percentile_grid()
        .into_iter()
        .map(|p| json!({"percentile": p, "latency_ms": ms(o.quantile_ns(p / 100.0))}))
        .collect()
}

fn ramp(r: &RampResult) -> Value {
    json!({
        "kind": r.kind.as_str(),
        "crossed": r.crossed,
        "knee": r.knee.map(|k| json!({"step": k.step, "rate": k.rate})),
        "steps": r.steps.iter().map(|s| json!({
            "level": s.level,
            "connections": s.connections,
            "offered_rate": s.offered_rate,
            "achieved_rate": s.achieved_rate,
            "requests": s.requests,
            "errors": s.errors,
            "error_rate": s.error_rate,
            "p50_ms": ms(s.p50_ns),
            "p99_ms": ms(s.p99_ns),
            "held": s.held,
            "crossed": s.crossed,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_percentile_grid_runs_from_50_to_99_999_in_order() {
        let grid = percentile_grid();
        assert_eq!(grid.first(), Some(&50.0));
        assert!((grid.last().unwrap() - 99.999).abs() < 1e-9);
        assert!(grid.windows(2).all(|w| w[0] < w[1]));
        for p in [90.0, 99.0, 99.9, 99.99] {
            assert!(grid.iter().any(|&g| (g - p).abs() < 1e-9), "{p} missing");
        }
    }
}
