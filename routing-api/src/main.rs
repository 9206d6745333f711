use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The Routing API: router groups, TCP and HTTP routes, event streams.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Path to the YAML config file (upstream's keys).
    #[arg(long = "config")]
    config: PathBuf,
    /// This instance's IP, used for its own route registration.
    #[arg(long = "ip")]
    ip: std::net::IpAddr,
    /// Disable token checks (development only).
    #[arg(long = "devMode", default_value_t = false)]
    dev_mode: bool,
}

fn main() -> ExitCode {
    // Upstream's flags are Go-style (`-config file`); accept those and `--config`.
    let args = Args::parse_from(process_setup::go_style_args(std::env::args()));
    let config = match routing_api::config::Config::load(&args.config, args.dev_mode) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("routing-api: {e}");
            return ExitCode::FAILURE;
        }
    };
    process_setup::init_json_logging("info");
    for key in &config.unknown_keys {
        tracing::warn!(key = %key, "config key not supported; ignored");
    }
    let Some(runtime) = process_setup::runtime("routing-api") else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(routing_api::run::run(config, args.ip)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "routing-api.failed");
            eprintln!("routing-api: {e:#}");
            ExitCode::FAILURE
        }
    }
}
