//! loadgen: requests/s and latency percentiles for a small response, straight to a backend
//! and through gorouter in the same run, printed as a small table.
//!
//! By default it starts everything itself on 127.0.0.1: an in-process backend, its own
//! nats-server and a gorouter (see [`setup`]). With `--target URL` it only loads an existing
//! server. Modules: [`load`] the closed-loop load and its results, [`setup`] the child
//! processes and readiness checks, [`backend`] the in-process backend, [`report`] the output.

mod backend;
mod load;
mod report;
mod setup;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;

use load::{LoadConfig, Target};

/// Measure requests/s and p50/p90/p99 latency, direct to a backend and through gorouter.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Concurrent keep-alive connections, each with one request in flight.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Measured time per target (e.g. 10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured time per target before the measurement.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// The gorouter binary [default: `gorouter` next to the loadgen binary].
    #[arg(long, conflicts_with = "target")]
    gorouter: Option<PathBuf>,
    /// The nats-server binary started for gorouter.
    #[arg(
        long,
        default_value = "/usr/sbin/nats-server",
        conflicts_with = "target"
    )]
    nats_server: PathBuf,
    /// Only load this existing server (`http://HOST:PORT/PATH`); starts nothing.
    #[arg(long)]
    target: Option<String>,
    /// The Host header sent with --target [default: the URL's host:port].
    #[arg(long, requires = "target")]
    host: Option<String>,
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
            eprintln!("loadgen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let config = LoadConfig {
        connections: args.connections,
        warmup: args.warmup,
        duration: args.duration,
    };
    match &args.target {
        Some(url) => run_target(url, args.host.as_deref(), config).await,
        None => run_full(&args, config).await,
    }
}

/// Loads one existing server.
async fn run_target(url: &str, host: Option<&str>, config: LoadConfig) -> Result<()> {
    let target = parse_target(url, host).await?;
    eprintln!("loading {} (Host: {}) ...", target.addr, target.host);
    let outcome = load::run(&target, config).await?;
    report::print(&config, &[("target", &outcome)]);
    Ok(())
}

/// Backend direct, then the same backend through a gorouter started for the run.
async fn run_full(args: &Args, config: LoadConfig) -> Result<()> {
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

    let backend = backend::start().await?;
    eprintln!("loading the backend directly on {backend} ...");
    let direct_target = Target {
        addr: backend,
        host: backend.to_string(),
        path: "/".into(),
    };
    let direct = load::run(&direct_target, config).await?;

    eprintln!("starting nats-server and {} ...", gorouter.display());
    let stack = match setup::start(&gorouter, &args.nats_server, backend).await {
        Ok(stack) => stack,
        Err(e) => {
            report::print(&config, &[("direct", &direct)]);
            return Err(e.context("setting up gorouter (the direct figures above are valid)"));
        }
    };
    eprintln!(
        "loading gorouter on {} (Host: {}) ...",
        stack.proxy_addr,
        setup::ROUTE_HOST
    );
    let via_target = Target {
        addr: stack.proxy_addr,
        host: setup::ROUTE_HOST.into(),
        path: "/".into(),
    };
    let via = load::run(&via_target, config).await;
    drop(stack);
    let via = via?;
    report::print(&config, &[("direct", &direct), ("gorouter", &via)]);
    report::print_comparison(&direct, &via);
    Ok(())
}

/// `http://host[:port][/path]` -> address, Host header and path.
async fn parse_target(url: &str, host: Option<&str>) -> Result<Target> {
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("invalid URL {url:?}"))?;
    if uri.scheme_str() != Some("http") {
        bail!("--target must be an http:// URL, got {url:?}");
    }
    let authority = uri
        .authority()
        .with_context(|| format!("no host in {url:?}"))?;
    let port = authority.port_u16().unwrap_or(80);
    let addr = tokio::net::lookup_host((authority.host(), port))
        .await
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("{authority} resolved to no address"))?;
    Ok(Target {
        addr,
        host: host.unwrap_or(authority.as_str()).to_string(),
        path: uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string()),
    })
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

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[tokio::test]
    async fn target_urls_parse() {
        let t = parse_target("http://127.0.0.1:8081/a?b=1", None)
            .await
            .unwrap();
        assert_eq!(t.addr, "127.0.0.1:8081".parse().unwrap());
        assert_eq!(t.host, "127.0.0.1:8081");
        assert_eq!(t.path, "/a?b=1");
        let t = parse_target("http://127.0.0.1", Some("x.example.com"))
            .await
            .unwrap();
        assert_eq!(t.addr.port(), 80);
        assert_eq!((t.host.as_str(), t.path.as_str()), ("x.example.com", "/"));
        assert!(parse_target("https://127.0.0.1", None).await.is_err());
    }
}
