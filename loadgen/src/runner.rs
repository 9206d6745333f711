//! Running a whole plan: several targets loaded in rotated rounds (round r starts with target
//! r mod n, so none always goes first or last on a shared machine, where background load and
//! thermal state drift), or a ramp per target; and the [`RunResult`] that the table, the JSON
//! and the HTML report are made from.

use std::time::Duration;

use anyhow::{bail, Result};

use crate::load::{self, LoadConfig};
use crate::progress::Progress;
use crate::ramp::{self, RampPlan, RampResult};
use crate::stats::Outcome;
use crate::targets::{Distribution, Protocol, Target};

/// The kind of load of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Closed,
    Open { rate: f64 },
    Ramp,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Closed => "closed",
            Mode::Open { .. } => "open",
            Mode::Ramp => "ramp",
        }
    }
}

/// How the many-routes targets' routes were set up (for the report).
#[derive(Debug, Clone)]
pub struct RoutesInfo {
    pub count: usize,
    pub distribution: Distribution,
    /// `nats` or `routing-api`.
    pub registered_via: String,
}

/// Everything about a run that its outputs describe.
pub struct RunResult {
    pub mode: Mode,
    pub config: LoadConfig,
    pub rounds: usize,
    pub protocol: Protocol,
    pub routes: Option<RoutesInfo>,
    pub ramp_plan: Option<RampPlan>,
    pub targets: Vec<TargetResult>,
    /// When the run started (seconds since the Unix epoch).
    pub started_at_unix: f64,
}

/// One target's results.
pub struct TargetResult {
    pub label: String,
    pub url: String,
    /// The Host header, or a description of the route choice.
    pub host: String,
    pub outcome: Outcome,
    pub ramp: Option<RampResult>,
}

impl TargetResult {
    fn new(target: &Target, outcome: Outcome, ramp: Option<RampResult>) -> Self {
        let host = match &target.routes {
            Some(r) => format!("{} routes ({})", r.hosts.len(), describe(r.distribution)),
            None => target.host.clone(),
        };
        Self {
            label: target.label.clone(),
            url: target.url.clone(),
            host,
            outcome,
            ramp,
        }
    }
}

pub fn describe(d: Distribution) -> String {
    match d {
        Distribution::Uniform => "uniform".into(),
        Distribution::Zipf { s } => format!("zipf s={s}"),
    }
}

/// Loads every target `rounds` times in rotated order, `config.duration / rounds` measured per
/// round (after `config.warmup` each time), and merges each target's rounds.
pub async fn run_rounds(
    targets: &[Target],
    config: &LoadConfig,
    rounds: usize,
    progress: &Progress,
) -> Result<Vec<TargetResult>> {
    if targets.is_empty() {
        bail!("no targets");
    }
    let rounds = rounds.max(1);
    let mut round_config = config.clone();
    round_config.duration = config.duration / rounds as u32;
    if round_config.duration.is_zero() {
        bail!(
            "{:?} split into {rounds} rounds leaves nothing to measure",
            config.duration
        );
    }
    let mut outcomes: Vec<Outcome> = targets.iter().map(|_| Outcome::new()).collect();
    for round in 0..rounds {
        for k in 0..targets.len() {
            let i = (round + k) % targets.len();
            let target = &targets[i];
            let what = if rounds > 1 {
                format!("{} (round {}/{rounds})", target.label, round + 1)
            } else {
                target.label.clone()
            };
            progress.begin(what, round_config.warmup + round_config.duration);
            let out = load::run(target, &round_config, progress.live()).await?;
            outcomes[i].append(out);
        }
    }
    Ok(targets
        .iter()
        .zip(outcomes)
        .map(|(t, o)| TargetResult::new(t, o, None))
        .collect())
}

/// Ramps each target in turn.
pub async fn run_ramps(
    targets: &[Target],
    config: &LoadConfig,
    plan: &RampPlan,
    progress: &Progress,
) -> Result<Vec<TargetResult>> {
    let mut results = Vec::new();
    let step_length = plan.step_warmup + plan.step_duration;
    for target in targets {
        progress.begin(format!("{} ramp", target.label), step_length);
        let label = target.label.clone();
        let (ramp, outcome) = ramp::run(target, config, plan, progress.live(), |step| {
            progress.note(&format!(
                "{label}: {} {:.0}: {:.0} req/s, p99 {}, errors {:.2}%{}",
                plan.kind.as_str(),
                step.level,
                step.achieved_rate,
                crate::report::latency(step.p99_ns),
                step.error_rate * 100.0,
                step.crossed
                    .as_ref()
                    .map_or(String::new(), |c| format!(": crossed the bound ({c})")),
            ));
            progress.begin(format!("{label} ramp"), step_length);
        })
        .await?;
        results.push(TargetResult::new(target, outcome, Some(ramp)));
    }
    Ok(results)
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}
