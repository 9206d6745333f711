use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// HTTP router compatible with Cloud Foundry's Gorouter.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Path to the YAML config file (upstream's keys).
    #[arg(short = 'c', long = "config")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse_from(process_setup::go_style_args(std::env::args()));
    let config = match gorouter::config::Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gorouter: {e}");
            return ExitCode::FAILURE;
        }
    };
    process_setup::init_json_logging(&config.logging.level);
    for key in &config.unknown_keys {
        tracing::warn!(key = %key, "config key not supported; ignored");
    }
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let Some(runtime) = process_setup::runtime("gorouter") else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(gorouter::router::run(config)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "gorouter.failed");
            eprintln!("gorouter: {e:#}");
            ExitCode::FAILURE
        }
    }
}
