//! loadgen: requests/s and latency percentiles for a small response, straight to a backend
//! and through gorouter in the same run, printed as a small table.
//!
//! By default it starts everything itself on 127.0.0.1: an in-process backend, its own
//! nats-server and a gorouter (see [`setup`]). With `--target URL` it only loads an existing
//! server, over HTTP or HTTPS (`--ca`), optionally with a new connection (a full TLS
//! handshake) per request; `--serve-backend ADDR` only runs the backend (for
//! `tools/bench-https`). Modules: [`load`] the closed-loop load and its results, [`setup`] the child
//! processes and readiness checks, [`backend`] the in-process backend, [`report`] the output.

mod backend;
mod load;
mod report;
mod setup;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;

use load::{LoadConfig, Target, TlsTarget};

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
    /// Only load this existing server (`http://` or `https://HOST:PORT/PATH`); starts nothing.
    #[arg(long)]
    target: Option<String>,
    /// The Host header sent with --target [default: the URL's host:port]. For HTTPS its name
    /// (without a port) is also the TLS server name.
    #[arg(long, requires = "target")]
    host: Option<String>,
    /// PEM file of the CA(s) that HTTPS targets' certificates are verified against.
    #[arg(long, requires = "target")]
    ca: Option<PathBuf>,
    /// Open a new connection for every request (`Connection: close`; for HTTPS a full
    /// handshake each time, never resumed).
    #[arg(long, requires = "target")]
    new_connection_per_request: bool,
    /// The row's name in the table printed for --target.
    #[arg(long, default_value = "target", requires = "target")]
    label: String,
    /// Only run the in-process backend on this address until interrupted; loads nothing.
    #[arg(long, conflicts_with_all = ["target", "gorouter"])]
    serve_backend: Option<SocketAddr>,
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
    if let Some(addr) = args.serve_backend {
        let addr = backend::start_on(addr).await?;
        eprintln!("backend listening on {addr}");
        // Runs until main's Ctrl-C select, or SIGTERM ends the process.
        return std::future::pending().await;
    }
    let config = LoadConfig {
        connections: args.connections,
        warmup: args.warmup,
        duration: args.duration,
        new_connection_per_request: args.new_connection_per_request,
    };
    match &args.target {
        Some(url) => {
            let target = parse_target(url, args.host.as_deref(), args.ca.as_deref()).await?;
            run_target(target, &args.label, config).await
        }
        None => run_full(&args, config).await,
    }
}

/// Loads one existing server.
async fn run_target(target: Target, label: &str, config: LoadConfig) -> Result<()> {
    let scheme = if target.tls.is_some() {
        "https"
    } else {
        "http"
    };
    eprintln!(
        "loading {scheme}://{} (Host: {}) ...",
        target.addr, target.host
    );
    let outcome = load::run(&target, config).await?;
    report::print(&config, &[(label, &outcome)]);
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
        tls: None,
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
        tls: None,
    };
    let via = load::run(&via_target, config).await;
    drop(stack);
    let via = via?;
    report::print(&config, &[("direct", &direct), ("gorouter", &via)]);
    report::print_comparison(&direct, &via);
    Ok(())
}

/// `http(s)://host[:port][/path]` -> address, Host header, path and, for HTTPS, the TLS
/// client (trusting `ca`).
async fn parse_target(url: &str, host: Option<&str>, ca: Option<&Path>) -> Result<Target> {
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("invalid URL {url:?}"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => bail!("--target must be an http:// or https:// URL, got {url:?}"),
    };
    let authority = uri
        .authority()
        .with_context(|| format!("no host in {url:?}"))?;
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let host = host.unwrap_or(authority.as_str()).to_string();
    let tls = if https {
        let ca = ca.context("an https:// target needs --ca FILE")?;
        // The server name: the Host header's name, without a port (or an IP address).
        let name = http::uri::Authority::try_from(host.as_str())
            .map(|a| a.host().trim_matches(['[', ']']).to_string())
            .unwrap_or_else(|_| host.clone());
        Some(tls_target(ca, &name)?)
    } else {
        None
    };
    let addr = tokio::net::lookup_host((authority.host(), port))
        .await
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("{authority} resolved to no address"))?;
    Ok(Target {
        addr,
        host,
        path: uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string()),
        tls,
    })
}

/// A TLS client trusting the CAs in `ca`, offering HTTP/1.1 by ALPN, with session resumption
/// off: every connection is a full handshake, which is what the handshake row measures.
fn tls_target(ca: &Path, server_name: &str) -> Result<TlsTarget> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    let mut roots = rustls::RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?
    {
        let cert = cert.with_context(|| format!("parsing {}", ca.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("adding a CA from {}", ca.display()))?;
    }
    if roots.is_empty() {
        bail!("no CERTIFICATE in {}", ca.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    let server_name = ServerName::try_from(server_name.to_string())
        .with_context(|| format!("invalid TLS server name {server_name:?}"))?;
    Ok(TlsTarget {
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        server_name,
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
        let t = parse_target("http://127.0.0.1:8081/a?b=1", None, None)
            .await
            .unwrap();
        assert_eq!(t.addr, "127.0.0.1:8081".parse().unwrap());
        assert_eq!(t.host, "127.0.0.1:8081");
        assert_eq!(t.path, "/a?b=1");
        let t = parse_target("http://127.0.0.1", Some("x.example.com"), None)
            .await
            .unwrap();
        assert_eq!(t.addr.port(), 80);
        assert_eq!((t.host.as_str(), t.path.as_str()), ("x.example.com", "/"));
        assert!(t.tls.is_none());
        // HTTPS needs a CA file; with one, the server name is the Host's name.
        assert!(parse_target("https://127.0.0.1", None, None).await.is_err());
        assert!(parse_target("ftp://127.0.0.1", None, None).await.is_err());
    }

    #[tokio::test]
    async fn https_target_uses_the_ca_and_the_host_name() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["x.example.com".into()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let path = std::env::temp_dir().join(format!("loadgen-ca-{}.pem", std::process::id()));
        std::fs::write(&path, ca.pem()).unwrap();
        let t = parse_target(
            "https://127.0.0.1:8443/",
            Some("x.example.com:8443"),
            Some(&path),
        )
        .await;
        let _ = std::fs::remove_file(&path);
        let t = t.unwrap();
        assert_eq!(t.addr.port(), 8443);
        let tls = t.tls.unwrap();
        assert_eq!(
            tls.server_name,
            rustls::pki_types::ServerName::try_from("x.example.com").unwrap()
        );
    }
}
