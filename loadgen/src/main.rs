//! loadgen: a load-testing tool for routing tiers. Closed loop (N connections), open loop at a
//! fixed rate with latency from each request's due time, or a ramp that finds the knee; one
//! target, several in rotated rounds, or many routes registered by the tool itself; a table,
//! `--json` and a self-contained HTML report with plots.
//!
//! By default it starts everything itself on 127.0.0.1: an in-process backend, its own
//! nats-server and a gorouter (see [`loadgen::setup`]), and loads the backend directly and
//! through gorouter. With `--target URL` it only loads existing servers; `--serve-backend ADDR`
//! only runs the backend. The library (`loadgen::*`) holds everything; this file is the command
//! line.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::Parser;

use loadgen::backend::{self, BackendOptions, RateLimit};
use loadgen::load::LoadConfig;
use loadgen::progress::Progress;
use loadgen::ramp::{Bound, RampKind, RampPlan};
use loadgen::routes::{self, Registrar, Registration};
use loadgen::runner::{self, Mode, RoutesInfo, RunResult, TargetResult};
use loadgen::targets::{self, Distribution, Protocol, RouteChoice, Target};
use loadgen::{html, json, report, setup};

/// The largest request body `--request-body-size` sends.
const MAX_REQUEST_BODY: usize = 64 << 20;
/// Bounds on --connections (tasks and sockets) and --rounds.
const MAX_CONNECTIONS: usize = 65_536;
const MAX_ROUNDS: usize = 1_000;
/// How long registered routes may take to become routable.
const ROUTES_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Load-test HTTP routing: closed loop, open loop (fixed rate, latency from each request's due
/// time) or a ramp to the knee; a table, --json and an HTML --report. Without --target it
/// starts a backend, nats-server and gorouter and loads the backend directly and through
/// gorouter.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Concurrent connections, each with one request in flight (in an open loop: the most
    /// requests in flight).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Measured time per target (e.g. 10s, 500ms, 1m), split over --rounds.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured time per target (and round) before the measurement.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Open loop: this many requests per second on a fixed timeline; latency runs from each
    /// request's due time, so a stalled server cannot hide (no coordinated omission).
    #[arg(long, conflicts_with_all = ["ramp_rate", "ramp_connections"])]
    rate: Option<f64>,
    /// Ramp of open-loop rates START:STEP:MAX (req/s) until the bound is crossed; reports the
    /// knee, the highest rate that held it.
    #[arg(
        long,
        value_name = "START:STEP:MAX",
        conflicts_with = "ramp_connections"
    )]
    ramp_rate: Option<String>,
    /// Ramp of closed-loop connections START:STEP:MAX until the bound is crossed.
    #[arg(long, value_name = "START:STEP:MAX")]
    ramp_connections: Option<String>,
    /// Measured time of each ramp step.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    step_duration: Duration,
    /// Unmeasured time before each ramp step.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    step_warmup: Duration,
    /// Ramp bound: the most failed requests, in percent of all.
    #[arg(long, default_value_t = 1.0)]
    max_error_percent: f64,
    /// Ramp bound: the highest p99 latency (e.g. 20ms).
    #[arg(long, value_parser = parse_duration)]
    max_p99: Option<Duration>,
    /// Rounds: each target is loaded this many times, in rotated order, for an equal share of
    /// --duration (fair comparisons on a shared machine).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Deadline of one request (connect included); a request past it is an error.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// HTTP/2: prior knowledge (h2c) for http:// targets, ALPN h2 for https:// ones.
    #[arg(long)]
    http2: bool,
    /// Send POST requests with a body of this many bytes (default: GET without a body).
    #[arg(long, default_value_t = 0)]
    request_body_size: usize,
    /// Ask for responses of this many bytes (`size=N` added to the query; loadgen's own
    /// backend honours it).
    #[arg(long)]
    response_size: Option<usize>,
    /// Open a new connection for every request (`Connection: close`; for HTTPS a full
    /// handshake each time, never resumed).
    #[arg(long)]
    new_connection_per_request: bool,
    /// The gorouter binary [default: `gorouter` next to the loadgen binary].
    #[arg(long, conflicts_with = "targets")]
    gorouter: Option<PathBuf>,
    /// The nats-server binary started for gorouter.
    #[arg(
        long,
        default_value = "/usr/sbin/nats-server",
        conflicts_with = "targets"
    )]
    nats_server: PathBuf,
    /// Load this existing server (`[NAME=]http(s)://HOST:PORT/PATH`); starts nothing. Repeat
    /// to compare several in one run (in rotated rounds with --rounds).
    #[arg(long = "target", value_name = "[NAME=]URL")]
    targets: Vec<String>,
    /// The Host header sent to --target [default: the URL's host:port]: once for all targets
    /// or once per target. For HTTPS its name (without a port) is also the TLS server name.
    #[arg(long = "host", requires = "targets")]
    hosts: Vec<String>,
    /// PEM file of the CA(s) that HTTPS targets' certificates are verified against.
    #[arg(long, requires = "targets")]
    ca: Option<PathBuf>,
    /// The name of a --target given without NAME= (its row in the table).
    #[arg(long, default_value = "target", requires = "targets")]
    label: String,
    /// Many routes: register this many hosts (r0.DOMAIN, r1.DOMAIN, ...) for one backend and
    /// spread requests over them (through NATS or the Routing API; without --target, through
    /// the started gorouter's NATS).
    #[arg(long)]
    routes: Option<usize>,
    /// The domain of the --routes hosts.
    #[arg(long, default_value = "loadgen.example.com")]
    route_domain: String,
    /// Pick routes Zipf-distributed with this exponent (1.0 is classic Zipf) instead of
    /// uniformly.
    #[arg(long, requires = "routes")]
    zipf: Option<f64>,
    /// Register --routes for this backend [default: an in-process backend on 127.0.0.1].
    #[arg(long, requires = "routes")]
    route_backend: Option<SocketAddr>,
    /// Register --routes through this NATS server (e.g. nats://127.0.0.1:4222).
    #[arg(long, requires_all = ["routes", "targets"], conflicts_with = "routing_api")]
    nats: Option<String>,
    /// Register --routes through this Routing API (e.g. http://127.0.0.1:3000).
    #[arg(long, requires_all = ["routes", "targets"])]
    routing_api: Option<String>,
    /// CA file for an https:// Routing API and UAA.
    #[arg(long, requires = "routing_api")]
    routing_api_ca: Option<PathBuf>,
    /// UAA URL for Routing API tokens (client credentials); without it no token is sent.
    #[arg(long, requires_all = ["routing_api", "uaa_client_id", "uaa_client_secret"])]
    uaa: Option<String>,
    #[arg(long, requires = "uaa")]
    uaa_client_id: Option<String>,
    #[arg(long, requires = "uaa")]
    uaa_client_secret: Option<String>,
    /// Write the results as JSON to FILE (`-`: stdout, the table then goes to stderr). Shape:
    /// loadgen/schema/report.schema.json.
    #[arg(long, value_name = "FILE")]
    json: Option<String>,
    /// Write a self-contained HTML report with plots to FILE.
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
    /// Draw the progress line on stderr even when it is not a terminal.
    #[arg(long)]
    progress: bool,
    /// Only run the in-process backend on this address until interrupted; loads nothing.
    #[arg(long, conflicts_with_all = ["targets", "gorouter"])]
    serve_backend: Option<SocketAddr>,
    /// With --serve-backend: answer 503 to requests beyond this many per second.
    #[arg(long, requires = "serve_backend")]
    backend_rate_limit: Option<f64>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let result = tokio::select! {
        r = run(args) => r,
        // Dropping `run` drops the child-process guards, so Ctrl-C cleans up too.
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    if let Some(addr) = args.serve_backend {
        let options = BackendOptions {
            rate_limit: args
                .backend_rate_limit
                .map(|per_second| RateLimit { per_second }),
            ..BackendOptions::default()
        };
        let addr = backend::start_with(addr, options).await?;
        eprintln!("backend listening on {addr}");
        // Runs until main's Ctrl-C select, or SIGTERM ends the process.
        return std::future::pending().await;
    }
    let plan = Plan::from_args(&args)?;
    let progress = Progress::new(args.progress || std::io::stderr().is_terminal());
    if args.targets.is_empty() {
        run_full(&args, &plan, &progress).await
    } else {
        run_targets(&args, &plan, &progress).await
    }
}

/// What to run, from the flags.
struct Plan {
    mode: Mode,
    config: LoadConfig,
    ramp: Option<RampPlan>,
    protocol: Protocol,
    distribution: Distribution,
}

impl Plan {
    fn from_args(args: &Args) -> Result<Self> {
        if args.request_body_size > MAX_REQUEST_BODY {
            bail!("--request-body-size: at most {MAX_REQUEST_BODY} bytes");
        }
        if !(1..=MAX_CONNECTIONS).contains(&args.connections) {
            bail!("--connections: 1 to {MAX_CONNECTIONS}");
        }
        if !(1..=MAX_ROUNDS).contains(&args.rounds) {
            bail!("--rounds: 1 to {MAX_ROUNDS}");
        }
        let bound = Bound {
            max_error_rate: args.max_error_percent / 100.0,
            max_p99: args.max_p99,
        };
        let ramp = |kind, spec: &str| -> Result<RampPlan> {
            let [start, step, max] = parse_ramp(spec)?;
            Ok(RampPlan {
                kind,
                start,
                step,
                max,
                step_duration: args.step_duration,
                step_warmup: args.step_warmup,
                bound,
            })
        };
        let ramp = match (&args.ramp_rate, &args.ramp_connections) {
            (Some(spec), _) => Some(ramp(RampKind::Rate, spec)?),
            (None, Some(spec)) => Some(ramp(RampKind::Connections, spec)?),
            (None, None) => None,
        };
        if let Some(r) = &ramp {
            r.levels()?;
            if r.kind == RampKind::Connections && r.max > MAX_CONNECTIONS as f64 {
                bail!("--ramp-connections: at most {MAX_CONNECTIONS} connections");
            }
        }
        let mode = match (ramp.is_some(), args.rate) {
            (true, _) => Mode::Ramp,
            (false, Some(rate)) if rate.is_finite() && rate > 0.0 => Mode::Open { rate },
            (false, Some(rate)) => bail!("--rate {rate}: need a number > 0"),
            (false, None) => Mode::Closed,
        };
        let mut config = LoadConfig::closed(args.connections, args.warmup, args.duration);
        config.rate = args.rate;
        config.new_connection_per_request = args.new_connection_per_request;
        config.request_body = Bytes::from(vec![b'x'; args.request_body_size]);
        config.timeout = args.timeout;
        let distribution = match args.zipf {
            Some(s) => Distribution::Zipf { s },
            None => Distribution::Uniform,
        };
        Ok(Plan {
            mode,
            config,
            ramp,
            protocol: if args.http2 {
                Protocol::Http2
            } else {
                Protocol::Http1
            },
            distribution,
        })
    }

    async fn execute(
        &self,
        targets: &[Target],
        rounds: usize,
        progress: &Progress,
    ) -> Result<Vec<TargetResult>> {
        match &self.ramp {
            Some(ramp) => runner::run_ramps(targets, &self.config, ramp, progress).await,
            None => runner::run_rounds(targets, &self.config, rounds, progress).await,
        }
    }

    fn result(
        &self,
        args: &Args,
        targets: Vec<TargetResult>,
        routes: Option<RoutesInfo>,
        started: f64,
    ) -> RunResult {
        RunResult {
            mode: self.mode,
            config: self.config.clone(),
            rounds: args.rounds.max(1),
            protocol: self.protocol,
            routes,
            ramp_plan: self.ramp.clone(),
            targets,
            started_at_unix: started,
        }
    }
}

/// Loads existing servers (--target).
async fn run_targets(args: &Args, plan: &Plan, progress: &Progress) -> Result<()> {
    if args.hosts.len() > 1 && args.hosts.len() != args.targets.len() {
        bail!(
            "--host given {} times for {} targets: give it once, or once per target",
            args.hosts.len(),
            args.targets.len()
        );
    }
    let mut targets = Vec::new();
    for (i, spec) in args.targets.iter().enumerate() {
        let (name, url) = targets::split_label(spec);
        let label = match name {
            Some(n) => n.to_string(),
            None if args.targets.len() == 1 || i == 0 => args.label.clone(),
            None => format!("{}{}", args.label, i + 1),
        };
        let host = args.hosts.get(i).or(args.hosts.first()).map(String::as_str);
        let url = with_response_size(url, args.response_size);
        targets.push(
            targets::parse_target(&label, &url, host, args.ca.as_deref(), plan.protocol).await?,
        );
    }
    let mut labels: Vec<&str> = targets.iter().map(|t| t.label.as_str()).collect();
    labels.sort_unstable();
    if labels.windows(2).any(|w| w[0] == w[1]) {
        bail!("two targets have the same name: give each one NAME=URL");
    }

    let mut registration = None;
    let mut routes_info = None;
    if let Some(count) = args.routes {
        let registrar = registrar(args)?;
        let backend = match args.route_backend {
            Some(addr) => addr,
            None => backend::start().await?,
        };
        let hosts = Arc::new(routes::route_hosts(count, &args.route_domain)?);
        progress.note(&format!(
            "registering {count} routes for {backend} through {} ...",
            registrar.name()
        ));
        registration = Some(routes::register(&registrar, hosts.clone(), backend).await?);
        let choice = Arc::new(RouteChoice::new(hosts.to_vec(), plan.distribution)?);
        for t in &mut targets {
            t.routes = Some(choice.clone());
            routes::wait_routable(t, &hosts, ROUTES_READY_TIMEOUT).await?;
        }
        routes_info = Some(RoutesInfo {
            count,
            distribution: plan.distribution,
            registered_via: registrar.name().into(),
        });
    }

    let started = runner::unix_now();
    for t in &targets {
        progress.note(&format!(
            "loading {} (Host: {}, {}) ...",
            t.url,
            t.routes
                .as_ref()
                .map_or(t.host.clone(), |r| format!("{} routes", r.hosts.len())),
            t.protocol.as_str()
        ));
    }
    let results = plan.execute(&targets, args.rounds, progress).await;
    unregister(registration, progress).await;
    let run = plan.result(args, results?, routes_info, started);
    emit(args, &run, progress, false)
}

/// Removes routes registered for the run; a failure is only worth a warning.
async fn unregister(registration: Option<Registration>, progress: &Progress) {
    if let Some(r) = registration {
        if let Err(e) = r.unregister().await {
            progress.note(&format!("warning: unregistering the routes: {e:#}"));
        }
    }
}

fn registrar(args: &Args) -> Result<Registrar> {
    if let Some(url) = &args.nats {
        return Ok(Registrar::Nats { url: url.clone() });
    }
    let Some(api) = &args.routing_api else {
        bail!("--routes with --target needs --nats URL or --routing-api URL to register them");
    };
    use routing_api_client::{ClientConfig, RoutingApiClient, TlsOptions, TokenFetcher, UaaConfig};
    let tls = match &args.routing_api_ca {
        Some(ca) => TlsOptions::with_ca_file(ca.clone()),
        None => TlsOptions::default(),
    };
    let tokens = match (&args.uaa, &args.uaa_client_id, &args.uaa_client_secret) {
        (Some(url), Some(id), Some(secret)) => {
            let mut uaa = UaaConfig::new(url.clone(), id.clone(), secret.clone());
            uaa.tls = tls.clone();
            Some(Arc::new(TokenFetcher::new(uaa).context("UAA client")?))
        }
        _ => None,
    };
    let mut config = ClientConfig::new(api.clone());
    config.tls = tls;
    let client = RoutingApiClient::new(config, tokens).context("Routing API client")?;
    Ok(Registrar::RoutingApi {
        client: Box::new(client),
    })
}

/// Backend direct, then the same backend through a gorouter started for the run.
async fn run_full(args: &Args, plan: &Plan, progress: &Progress) -> Result<()> {
    let gorouter = match &args.gorouter {
        Some(path) => path.clone(),
        None => setup::default_gorouter_path()?,
    };
    setup::check_binary(
        &gorouter,
        "gorouter binary",
        "build it with `cargo build --release -p gorouter` or pass --gorouter PATH",
    )?;
    setup::check_binary(
        &args.nats_server,
        "nats-server binary",
        "install nats-server or pass --nats-server PATH",
    )?;
    if args.routing_api.is_some() || args.nats.is_some() {
        bail!("--nats and --routing-api need --target (the started gorouter uses its own NATS)");
    }

    let backend = backend::start().await?;
    let path = with_response_size("/", args.response_size);
    let mut direct = Target::plain("direct", backend, &backend.to_string(), &path);
    direct.protocol = plan.protocol;

    progress.note(&format!(
        "starting nats-server and {} ...",
        gorouter.display()
    ));
    let started = runner::unix_now();
    let stack = match setup::start(&gorouter, &args.nats_server, backend).await {
        Ok(stack) => stack,
        Err(e) => {
            progress.note(&format!("loading the backend directly on {backend} ..."));
            let results = plan
                .execute(std::slice::from_ref(&direct), args.rounds, progress)
                .await?;
            let run = plan.result(args, results, None, started);
            emit(args, &run, progress, false)?;
            return Err(e.context("setting up gorouter (the direct figures above are valid)"));
        }
    };
    let mut via = Target::plain("gorouter", stack.proxy_addr, setup::ROUTE_HOST, &path);
    via.protocol = plan.protocol;
    if plan.protocol == Protocol::Http2 {
        progress.note("note: gorouter serves HTTP/2 on its TLS listener only; h2c to it will fail");
    }

    let mut registration = None;
    let mut routes_info = None;
    if let Some(count) = args.routes {
        let registrar = Registrar::Nats {
            url: stack.nats_url.clone(),
        };
        let route_backend = args.route_backend.unwrap_or(backend);
        let hosts = Arc::new(routes::route_hosts(count, &args.route_domain)?);
        progress.note(&format!("registering {count} routes over NATS ..."));
        registration = Some(routes::register(&registrar, hosts.clone(), route_backend).await?);
        via.routes = Some(Arc::new(RouteChoice::new(
            hosts.to_vec(),
            plan.distribution,
        )?));
        routes::wait_routable(&via, &hosts, ROUTES_READY_TIMEOUT).await?;
        routes_info = Some(RoutesInfo {
            count,
            distribution: plan.distribution,
            registered_via: registrar.name().into(),
        });
    }
    progress.note(&format!(
        "loading the backend directly on {backend} and through gorouter on {} ...",
        stack.proxy_addr
    ));
    let results = plan.execute(&[direct, via], args.rounds, progress).await;
    unregister(registration, progress).await;
    drop(stack);
    let run = plan.result(args, results?, routes_info, started);
    // The comparison line is about one load level: not for ramps (whose totals mix steps).
    emit(args, &run, progress, plan.ramp.is_none())
}

/// The table (stdout, or stderr when the JSON goes to stdout), the JSON and the HTML report.
fn emit(args: &Args, run: &RunResult, progress: &Progress, compare: bool) -> Result<()> {
    let json_to_stdout = args.json.as_deref() == Some("-");
    progress.stop();
    let mut table: Box<dyn Write> = if json_to_stdout {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    report::print(&mut table, run).context("writing the table")?;
    if compare {
        if let [direct, via] = run.targets.as_slice() {
            report::print_comparison(&mut table, &direct.outcome, &via.outcome)
                .context("writing the table")?;
        }
    }
    table.flush().context("writing the table")?;
    if let Some(dest) = &args.json {
        let doc = serde_json::to_string_pretty(&json::document(run)).context("encoding JSON")?;
        if json_to_stdout {
            println!("{doc}");
        } else {
            std::fs::write(dest, doc + "\n").with_context(|| format!("writing {dest}"))?;
        }
    }
    if let Some(path) = &args.report {
        std::fs::write(path, html::render(run))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("report: {}", path.display());
    }
    Ok(())
}

/// `e` and its causes joined with `: `, as `{e:#}` prints them, but without a cause whose text
/// is already in the line: a library error that shows its source in its own message (the
/// Routing API client's `fetching token: UAA answered 401 …`) would be printed twice otherwise.
fn error_chain(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// `url` with `size=N` added to its query.
fn with_response_size(url: &str, size: Option<usize>) -> String {
    match size {
        None => url.to_string(),
        Some(n) if url.contains('?') => format!("{url}&size={n}"),
        Some(n) => format!("{url}?size={n}"),
    }
}

/// `START:STEP:MAX` as three numbers.
fn parse_ramp(spec: &str) -> Result<[f64; 3]> {
    let parts: Vec<f64> = spec
        .split(':')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow!("ramp {spec:?}: need START:STEP:MAX, e.g. 1000:500:20000"))?;
    match parts.as_slice() {
        [a, b, c] => Ok([*a, *b, *c]),
        _ => bail!("ramp {spec:?}: need START:STEP:MAX, e.g. 1000:500:20000"),
    }
}

/// `10s`, `500ms`, `1m`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (e.g. 10s, 500ms, 1m)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "m" => n * 60.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?} (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that shows its source in its own message, as thiserror's `#[error("…: {0}")]`
    /// with `#[from]` does.
    #[derive(Debug)]
    struct ShowsItsSource(std::io::Error);

    impl std::fmt::Display for ShowsItsSource {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "fetching token: {}", self.0)
        }
    }

    impl std::error::Error for ShowsItsSource {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn error_lines_name_each_cause_once() {
        let uaa = std::io::Error::other("UAA answered 401 Unauthorized");
        let e = anyhow::Error::new(ShowsItsSource(uaa)).context("POST /routing/v1/routes");
        assert_eq!(
            error_chain(&e),
            "POST /routing/v1/routes: fetching token: UAA answered 401 Unauthorized"
        );
        let e = anyhow!("connection refused").context("connecting to NATS at nats://x");
        assert_eq!(error_chain(&e), format!("{e:#}"));
        assert_eq!(
            error_chain(&e),
            "connecting to NATS at nats://x: connection refused"
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn ramps_parse_as_start_step_max() {
        assert_eq!(parse_ramp("100:50:1000").unwrap(), [100.0, 50.0, 1000.0]);
        assert!(parse_ramp("100:50").is_err());
        assert!(parse_ramp("a:b:c").is_err());
    }

    #[test]
    fn the_response_size_goes_into_the_query() {
        assert_eq!(with_response_size("http://x/", Some(5)), "http://x/?size=5");
        assert_eq!(
            with_response_size("http://x/?a=1", Some(5)),
            "http://x/?a=1&size=5"
        );
        assert_eq!(with_response_size("http://x/", None), "http://x/");
    }
}
