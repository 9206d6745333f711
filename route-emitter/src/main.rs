//! `route-emitter -config <file>`: see the library documentation.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Registers routes with gorouter (NATS) and the Routing API.
#[derive(Debug, Parser)]
#[command(name = "route-emitter", version)]
struct Flags {
    /// Path to the route-registrar style config file (JSON or YAML).
    #[arg(long)]
    config: PathBuf,
    /// Log level (debug, info, error); RUST_LOG overrides.
    #[arg(long = "logLevel", default_value = "info")]
    log_level: String,
}

fn main() -> ExitCode {
    let flags = match Flags::try_parse_from(process_setup::go_style_args(std::env::args())) {
        Ok(f) => f,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let (config, unknown) = match route_emitter::config::load(&flags.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("route-emitter: invalid config {}:", flags.config.display());
            for line in &e.0 {
                eprintln!("  {line}");
            }
            return ExitCode::FAILURE;
        }
    };
    process_setup::init_json_logging(&flags.log_level);
    for key in unknown {
        tracing::warn!(key = %key, "config key not supported; ignored");
    }
    let Some(runtime) = process_setup::runtime("route-emitter") else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(route_emitter::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("route-emitter: {e}");
            ExitCode::FAILURE
        }
    }
}
