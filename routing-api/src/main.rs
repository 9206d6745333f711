//! `routing-api -config <file> -ip <ip> [-devMode] [-logLevel …] [-timeFormat …]`: upstream's
//! command line (routing-release's `bpm.yml`), exit codes and log lines.

use std::process::ExitCode;

use process_setup::FlagSet;

fn flags() -> FlagSet {
    FlagSet::new("routing-api")
        .string("config", "", "Configuration for routing-api")
        .bool(
            "devMode",
            false,
            "Disable authentication for easier development iteration",
        )
        .string("ip", "", "The public ip of the routing api")
        .lager_flags()
}

fn main() -> ExitCode {
    let flags = match flags().parse(std::env::args()) {
        Ok(f) => f,
        Err(e) => return e.report(),
    };
    process_setup::init_lager_logging("routing-api", &flags);
    // Upstream checks the flags after logging starts and logs what is missing (its words, as
    // routing-release v0.317 writes them).
    let missing = if flags.string("config").is_empty() {
        Some("No configuration file provided")
    } else if flags.string("ip").is_empty() {
        Some("No ip address provided")
    } else {
        None
    };
    if let Some(error) = missing {
        tracing::error!(error, "routing-api.failed-check-flags");
        return ExitCode::FAILURE;
    }
    let config_path = std::path::Path::new(flags.string("config"));
    let loaded = routing_api::config::Config::load(config_path, flags.bool("devMode"))
        .and_then(|c| routing_api::seeds::check(&c).map(|()| c));
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "routing-api.failed-load-config");
            return ExitCode::FAILURE;
        }
    };
    for key in &config.unknown_keys {
        tracing::info!(key = %key, "routing-api.config-key-not-supported");
    }
    let Some(runtime) = process_setup::runtime("routing-api") else {
        return ExitCode::FAILURE;
    };
    let ip = flags.string("ip").to_owned();
    match runtime.block_on(routing_api::run::run(config, ip)) {
        Ok(()) => ExitCode::SUCCESS,
        // `run` logged the failure under upstream's name for the step that failed.
        Err(_) => ExitCode::FAILURE,
    }
}
