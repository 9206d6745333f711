//! The HTML report (`--report FILE.html`): one self-contained page (inline CSS and SVG, no
//! scripts, nothing fetched) with the run's parameters, the results table, the ramp steps, and
//! the plots of [`plots`]: latency by percentile on the nines scale, throughput and p99 over
//! time, and, for ramps, p99 and error rate against the offered load with the knee marked.

use std::fmt::Write;

use crate::json::percentile_grid;
use crate::ramp::RampKind;
use crate::report::latency;
use crate::runner::{self, Mode, RunResult};
use crate::svg::{esc, Axis, Marker, Plot, Series, PALETTE};

fn color(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// A target's series: its index (for the colour), label and points.
type Curve<'a> = (usize, &'a str, Vec<(f64, f64)>);

fn ms(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

/// The plots of a run, in page order: one `<svg>` each.
pub fn plots(run: &RunResult) -> Vec<Plot> {
    let mut plots = Vec::new();
    let measured: Vec<_> = run
        .targets
        .iter()
        .enumerate()
        .filter(|(_, t)| !t.outcome.latency.is_empty())
        .collect();

    // Latency by percentile.
    let grid = percentile_grid();
    let curves: Vec<Curve> = measured
        .iter()
        .map(|(i, t)| {
            let points = grid
                .iter()
                .map(|&p| (p, ms(t.outcome.quantile_ns(p / 100.0))))
                .collect();
            (*i, t.label.as_str(), points)
        })
        .collect();
    let all_latencies = curves.iter().flat_map(|c| c.2.iter().map(|p| p.1));
    let mut plot = Plot::new(
        "Latency by percentile",
        Axis::nines("percentile (log scale of nines)", 99.999),
        Axis::latency("latency (ms)", all_latencies),
    );
    for (i, label, points) in curves {
        plot.series.push(Series::new(label, color(i), points));
    }
    plots.push(plot);

    // Throughput and p99 over time.
    let seconds = run
        .targets
        .iter()
        .flat_map(|t| t.outcome.timeline.last().map(|s| s.second + 1))
        .max()
        .unwrap_or(1);
    let max_rate = run
        .targets
        .iter()
        .flat_map(|t| &t.outcome.timeline)
        .map(|s| s.requests as f64)
        .fold(0.0, f64::max);
    let mut plot = Plot::new(
        "Throughput over time (successful requests per second)",
        Axis::linear("seconds of measurement", 0.0, seconds as f64),
        // Headroom, so a steady rate is not drawn on the frame.
        Axis::linear("requests/s", 0.0, max_rate * 1.1),
    );
    for (i, t) in run.targets.iter().enumerate() {
        let points = t
            .outcome
            .timeline
            .iter()
            .map(|s| (s.second as f64 + 0.5, s.requests as f64))
            .collect();
        plot.series.push(Series::new(&t.label, color(i), points));
    }
    plots.push(plot);

    let p99s = run
        .targets
        .iter()
        .flat_map(|t| &t.outcome.timeline)
        .filter(|s| s.requests > 0)
        .map(|s| ms(s.p99_ns));
    let mut plot = Plot::new(
        "p99 latency over time (per second)",
        Axis::linear("seconds of measurement", 0.0, seconds as f64),
        Axis::latency("p99 latency (ms)", p99s),
    );
    for (i, t) in run.targets.iter().enumerate() {
        let points = t
            .outcome
            .timeline
            .iter()
            .filter(|s| s.requests > 0)
            .map(|s| (s.second as f64 + 0.5, ms(s.p99_ns)))
            .collect();
        plot.series.push(Series::new(&t.label, color(i), points));
    }
    plots.push(plot);

    // The ramp curve.
    if let Some(plan) = &run.ramp_plan {
        let ramps: Vec<_> = run
            .targets
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.ramp.as_ref().map(|r| (i, t, r)))
            .collect();
        let levels = ramps.iter().flat_map(|r| r.2.steps.iter().map(|s| s.level));
        let max_level = levels.clone().fold(plan.start, f64::max);
        let min_level = levels.fold(plan.start, f64::min);
        let p99s = ramps
            .iter()
            .flat_map(|r| r.2.steps.iter().map(|s| ms(s.p99_ns)))
            .chain(plan.bound.max_p99.map(|d| d.as_secs_f64() * 1e3 * 1.15));
        let max_errors = ramps
            .iter()
            .flat_map(|r| r.2.steps.iter().map(|s| s.error_rate * 100.0))
            .fold(plan.bound.max_error_rate * 100.0, f64::max);
        let x_label = match plan.kind {
            RampKind::Rate => "offered load (requests/s)",
            RampKind::Connections => "connections",
        };
        let mut plot = Plot::new(
            "Ramp: p99 latency (solid) and error rate (dashed) against load",
            Axis::linear(x_label, min_level.min(0.0), max_level),
            Axis::latency("p99 latency (ms)", p99s),
        );
        plot.y2 = Some(Axis::linear("errors (%)", 0.0, max_errors.max(1.0)));
        for (i, t, r) in &ramps {
            let mut p99 = Series::new(
                &format!("{} p99", t.label),
                color(*i),
                r.steps.iter().map(|s| (s.level, ms(s.p99_ns))).collect(),
            );
            p99.dots = true;
            plot.series.push(p99);
            let mut errors = Series::new(
                &format!("{} errors %", t.label),
                color(*i),
                r.steps
                    .iter()
                    .map(|s| (s.level, s.error_rate * 100.0))
                    .collect(),
            );
            errors.dashed = true;
            errors.dots = true;
            plot.series2.push(errors);
            if let Some(k) = r.knee {
                let level = r.steps[k.step].level;
                plot.markers.push(Marker {
                    x: level,
                    label: format!("{} knee: {:.0} req/s", t.label, k.rate),
                    color: color(*i).into(),
                });
            }
        }
        if let Some(bound) = plan.bound.max_p99 {
            let mut line = Series::new(
                "p99 bound",
                "#888888",
                vec![
                    (min_level.min(0.0), bound.as_secs_f64() * 1e3),
                    (plot.x.max, bound.as_secs_f64() * 1e3),
                ],
            );
            line.dashed = true;
            plot.series.push(line);
        }
        plots.push(plot);
    }
    plots
}

/// The whole page.
pub fn render(run: &RunResult) -> String {
    let mut h = String::new();
    let title = format!(
        "loadgen report: {}",
        run.targets
            .iter()
            .map(|t| t.label.as_str())
            .collect::<Vec<_>>()
            .join(" vs ")
    );
    let _ = write!(
        h,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1000px; color: #222; }}
h1 {{ font-size: 22px; margin-bottom: 4px; }} h2 {{ font-size: 17px; margin-top: 28px; }}
p.meta {{ color: #555; margin-top: 0; }}
table {{ border-collapse: collapse; font-variant-numeric: tabular-nums; margin: 8px 0; font-size: 14px; }}
th, td {{ padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
figure {{ margin: 18px 0; }} svg {{ max-width: 100%; height: auto; border: 1px solid #eee; }}
.bad {{ color: #b00; }}
</style></head><body>
<h1>{}</h1>
"#,
        esc(&title),
        esc(&title)
    );
    let c = &run.config;
    let mode = match run.mode {
        Mode::Closed => format!("closed loop, {} connections", c.connections),
        Mode::Open { rate } => format!(
            "open loop at {rate} requests/s (latency from each request's due time), up to {} in flight",
            c.connections
        ),
        Mode::Ramp => match &run.ramp_plan {
            Some(p) => format!(
                "ramp of {} {}:{}:{} ({} connections), {:?} warmup + {:?} measured per step",
                p.kind.as_str(),
                p.start,
                p.step,
                p.max,
                c.connections,
                p.step_warmup,
                p.step_duration
            ),
            None => "ramp".into(),
        },
    };
    let routes = run.routes.as_ref().map_or(String::new(), |r| {
        format!(
            "; {} routes registered via {}, chosen {}",
            r.count,
            r.registered_via,
            runner::describe(r.distribution)
        )
    });
    let body = if c.request_body.is_empty() {
        "GET".to_string()
    } else {
        format!("POST of {} bytes", c.request_body.len())
    };
    let _ = writeln!(
        h,
        "<p class=\"meta\">{} UTC &middot; {}{}; {}; {}{}{}</p>",
        utc(run.started_at_unix),
        esc(&mode),
        match run.mode {
            Mode::Ramp => String::new(),
            _ => format!(
                "; {:?} warmup, {:?} measured{}",
                c.warmup,
                c.duration,
                if run.rounds > 1 {
                    format!(" in {} rotated rounds", run.rounds)
                } else {
                    String::new()
                }
            ),
        },
        run.protocol.as_str(),
        body,
        if c.new_connection_per_request {
            "; a new connection per request"
        } else {
            ""
        },
        esc(&routes)
    );

    h.push_str("<h2>Results</h2>\n<table><tr><th>target</th><th>URL (Host)</th><th>requests</th><th>req/s</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>p99.99</th><th>max</th><th>errors</th></tr>\n");
    for t in &run.targets {
        let o = &t.outcome;
        let q = |p| latency(o.quantile_ns(p));
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{} ({})</td><td>{}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td{}>{} ({:.2}%)</td></tr>",
            esc(&t.label),
            esc(&t.url),
            esc(&t.host),
            o.requests(),
            o.requests_per_sec(),
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            q(0.9999),
            latency(o.latency.max()),
            if o.errors > 0 { " class=\"bad\"" } else { "" },
            o.errors,
            o.error_rate() * 100.0
        );
    }
    h.push_str("</table>\n");
    for t in &run.targets {
        if let Some(e) = &t.outcome.first_error {
            let _ = writeln!(
                h,
                "<p class=\"bad\">{}: first error: {}</p>",
                esc(&t.label),
                esc(e)
            );
        }
    }

    for t in &run.targets {
        let Some(r) = &t.ramp else { continue };
        let knee = match (r.knee, r.crossed) {
            (Some(k), true) => format!("knee at <b>{:.0} req/s</b>", k.rate),
            (Some(k), false) => format!(
                "no step crossed the bound: the knee is at least <b>{:.0} req/s</b>",
                k.rate
            ),
            (None, _) => "no knee: the first step already crossed the bound".into(),
        };
        let _ = write!(
            h,
            "<h2>Ramp: {}</h2>\n<p>{knee}</p>\n<table><tr><th>{}</th><th>req/s</th><th>p50</th><th>p99</th><th>errors</th><th>held</th></tr>\n",
            esc(&t.label),
            r.kind.as_str()
        );
        for s in &r.steps {
            let _ = writeln!(
                h,
                "<tr><td>{:.0}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{:.2}%</td><td{}>{}</td></tr>",
                s.level,
                s.achieved_rate,
                latency(s.p50_ns),
                latency(s.p99_ns),
                s.error_rate * 100.0,
                if s.held { "" } else { " class=\"bad\"" },
                esc(s.crossed.as_deref().map_or("yes", |c| c))
            );
        }
        h.push_str("</table>\n");
    }

    h.push_str("<h2>Plots</h2>\n");
    for plot in plots(run) {
        h.push_str("<figure>");
        h.push_str(&plot.render());
        h.push_str("</figure>\n");
    }
    h.push_str("<p class=\"meta\">Made by loadgen. Latency is that of successful requests; in an open loop it runs from each request's due time, so queueing behind a slow request counts.</p>\n</body></html>\n");
    h
}

/// `YYYY-MM-DD HH:MM:SS` for seconds since the Unix epoch (UTC).
fn utc(unix: f64) -> String {
    let secs = unix.max(0.0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_dates_are_civil() {
        assert_eq!(utc(0.0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400.0), "2000-02-29 00:00:00");
        assert_eq!(utc(1_700_000_000.0), "2023-11-14 22:13:20");
    }
}
