//! The ramp: load in steps of rising request rate (open loop) or of rising connections
//! (closed loop), each step held for a while, until a step crosses the bound (error rate above
//! a maximum, or p99 above a maximum). The knee is the highest rate that held the bound: the
//! offered rate of the last step that held (rate steps), or the highest throughput achieved by
//! a step that held (connection steps).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::load::{self, LoadConfig};
use crate::stats::{Live, Outcome};
use crate::targets::Target;

/// The most steps one ramp takes.
pub const MAX_STEPS: usize = 200;

/// What rises from step to step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RampKind {
    /// Requests per second of an open loop.
    Rate,
    /// Connections of a closed loop.
    Connections,
}

impl RampKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RampKind::Rate => "rate",
            RampKind::Connections => "connections",
        }
    }
}

/// What a step must stay within to "hold".
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// Failed requests as a share of all (0.01 = 1%).
    pub max_error_rate: f64,
    pub max_p99: Option<Duration>,
}

/// The steps: `start`, `start + step`, ... up to `max` (inclusive).
#[derive(Debug, Clone)]
pub struct RampPlan {
    pub kind: RampKind,
    pub start: f64,
    pub step: f64,
    pub max: f64,
    /// Measured time per step.
    pub step_duration: Duration,
    /// Unmeasured time before each step.
    pub step_warmup: Duration,
    pub bound: Bound,
}

impl RampPlan {
    /// The level of each step.
    pub fn levels(&self) -> Result<Vec<f64>> {
        let ok = |x: f64| x.is_finite() && x > 0.0;
        if !ok(self.start) || !ok(self.step) || !self.max.is_finite() || self.max < self.start {
            bail!(
                "ramp {}:{}:{}: need START > 0, STEP > 0 and MAX >= START",
                self.start,
                self.step,
                self.max
            );
        }
        let count = ((self.max - self.start) / self.step + 1e-9).floor() as usize + 1;
        if count > MAX_STEPS {
            bail!("ramp of {count} steps: at most {MAX_STEPS}, use a larger STEP");
        }
        Ok((0..count)
            .map(|i| self.start + i as f64 * self.step)
            .collect())
    }
}

/// One step's figures.
#[derive(Debug, Clone)]
pub struct RampStep {
    /// The step's level: requests per second (rate steps) or connections.
    pub level: f64,
    pub connections: usize,
    /// The open loop's rate (rate steps).
    pub offered_rate: Option<f64>,
    /// Successful requests per second.
    pub achieved_rate: f64,
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    /// Within the bound.
    pub held: bool,
    /// Why not, when it did not hold.
    pub crossed: Option<String>,
}

impl RampStep {
    fn measure(level: f64, config: &LoadConfig, out: &Outcome, bound: &Bound) -> Self {
        let error_rate = out.error_rate();
        let p99_ns = out.quantile_ns(0.99);
        let crossed = if error_rate > bound.max_error_rate {
            Some(format!(
                "error rate {:.2}% > {:.2}%",
                error_rate * 100.0,
                bound.max_error_rate * 100.0
            ))
        } else if out.requests() == 0 {
            Some("no successful requests".into())
        } else {
            bound
                .max_p99
                .filter(|max| p99_ns > max.as_nanos() as u64)
                .map(|max| {
                    format!(
                        "p99 {:.2}ms > {:.2}ms",
                        p99_ns as f64 / 1e6,
                        max.as_secs_f64() * 1e3
                    )
                })
        };
        RampStep {
            level,
            connections: config.connections,
            offered_rate: config.rate,
            achieved_rate: out.requests_per_sec(),
            requests: out.requests(),
            errors: out.errors,
            error_rate,
            p50_ns: out.quantile_ns(0.5),
            p99_ns,
            held: crossed.is_none(),
            crossed,
        }
    }
}

/// The knee: which step, and its rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Knee {
    /// Index into the steps.
    pub step: usize,
    /// Requests per second.
    pub rate: f64,
}

/// A finished ramp.
#[derive(Debug, Clone)]
pub struct RampResult {
    pub kind: RampKind,
    pub bound: Bound,
    pub steps: Vec<RampStep>,
    /// `None` when not even the first step held.
    pub knee: Option<Knee>,
    /// Whether a step crossed the bound (else the ramp ran out of steps first, and the knee is
    /// only a lower bound).
    pub crossed: bool,
}

/// The knee of a ramp's steps: among the steps before the first one that crossed the bound,
/// the highest offered rate (rate steps) or achieved rate (connection steps).
pub fn knee(kind: RampKind, steps: &[RampStep]) -> Option<Knee> {
    let held = steps.iter().take_while(|s| s.held).enumerate();
    let rate = |s: &RampStep| match kind {
        RampKind::Rate => s.offered_rate.unwrap_or(s.level),
        RampKind::Connections => s.achieved_rate,
    };
    held.map(|(i, s)| Knee {
        step: i,
        rate: rate(s),
    })
    .max_by(|a, b| a.rate.total_cmp(&b.rate))
}

/// Runs the ramp against `target`. `base` gives everything but the level, duration and
/// warmup; `on_step` sees each step as it finishes. Returns the ramp and all steps' results
/// appended (one timeline across the steps).
pub async fn run(
    target: &Target,
    base: &LoadConfig,
    plan: &RampPlan,
    live: &Arc<Live>,
    mut on_step: impl FnMut(&RampStep),
) -> Result<(RampResult, Outcome)> {
    let mut steps = Vec::new();
    let mut all = Outcome::new();
    let mut crossed = false;
    for level in plan.levels()? {
        let mut config = base.clone();
        config.duration = plan.step_duration;
        config.warmup = plan.step_warmup;
        match plan.kind {
            RampKind::Rate => config.rate = Some(level),
            RampKind::Connections => {
                config.rate = None;
                config.connections = level.round().max(1.0) as usize;
            }
        }
        live.reset();
        let out = load::run(target, &config, live).await?;
        let step = RampStep::measure(level, &config, &out, &plan.bound);
        on_step(&step);
        all.append(out);
        let held = step.held;
        steps.push(step);
        if !held {
            crossed = true;
            break;
        }
    }
    Ok((
        RampResult {
            kind: plan.kind,
            bound: plan.bound,
            knee: knee(plan.kind, &steps),
            steps,
            crossed,
        },
        all,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(level: f64, achieved: f64, held: bool) -> RampStep {
        RampStep {
            level,
            connections: 8,
            offered_rate: Some(level),
            achieved_rate: achieved,
            requests: 1,
            errors: 0,
            error_rate: 0.0,
            p50_ns: 1,
            p99_ns: 1,
            held,
            crossed: None,
        }
    }

    fn plan(start: f64, step: f64, max: f64) -> RampPlan {
        RampPlan {
            kind: RampKind::Rate,
            start,
            step,
            max,
            step_duration: Duration::from_secs(1),
            step_warmup: Duration::ZERO,
            bound: Bound {
                max_error_rate: 0.01,
                max_p99: None,
            },
        }
    }

    #[test]
    fn the_knee_is_the_last_rate_before_the_bound_was_crossed() {
        let steps = [
            step(100.0, 100.0, true),
            step(200.0, 199.0, true),
            step(300.0, 250.0, false),
            step(400.0, 390.0, true),
        ];
        let k = knee(RampKind::Rate, &steps).unwrap();
        assert_eq!(
            k,
            Knee {
                step: 1,
                rate: 200.0
            }
        );
    }

    #[test]
    fn a_connection_ramp_knee_is_the_best_achieved_rate_that_held() {
        let steps = [
            step(1.0, 900.0, true),
            step(2.0, 1500.0, true),
            step(3.0, 1400.0, true),
            step(4.0, 2000.0, false),
        ];
        let k = knee(RampKind::Connections, &steps).unwrap();
        assert_eq!(k.rate, 1500.0);
    }

    #[test]
    fn no_step_held_means_no_knee() {
        assert_eq!(knee(RampKind::Rate, &[step(100.0, 10.0, false)]), None);
    }

    #[test]
    fn levels_run_from_start_to_max_inclusive_and_are_bounded() {
        assert_eq!(
            plan(100.0, 50.0, 250.0).levels().unwrap(),
            vec![100.0, 150.0, 200.0, 250.0]
        );
        assert!(plan(0.0, 1.0, 10.0).levels().is_err());
        assert!(plan(10.0, 1.0, 5.0).levels().is_err());
        assert!(plan(1.0, 1.0, 1e6).levels().is_err());
    }
}
