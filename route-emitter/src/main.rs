//! `route-emitter --configPath <file> [-timeFormat …] [-logLevel …] [-pidfile …]`:
//! route_registrar's command line (routing-release's `bpm.yml`); `-config <file>` works too.

use std::process::ExitCode;

use process_setup::FlagSet;

fn flags() -> FlagSet {
    FlagSet::new("route-emitter")
        .string(
            "configPath",
            "registrar_settings.yml",
            "path to configuration file with json encoded content",
        )
        .string(
            "config",
            "",
            "path to the config file (JSON or YAML); overrides -configPath",
        )
        .string("pidfile", "", "Path to pid file")
        .lager_flags()
}

fn main() -> ExitCode {
    let flags = match flags().parse(std::env::args()) {
        Ok(f) => f,
        Err(e) => return e.report(),
    };
    process_setup::init_lager_logging("Route Registrar", &flags);
    tracing::info!("Route Registrar.Initializing");
    let path = match flags.string("config") {
        "" => flags.string("configPath"),
        explicit => explicit,
    };
    let path = std::path::Path::new(path);
    let (config, unknown) = match route_emitter::config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(file = %path.display(), error = e.0.join("; "), "Route Registrar.error parsing file");
            // The list, one problem a line, for a person at a terminal.
            eprintln!("route-emitter: invalid config {}:", path.display());
            for line in &e.0 {
                eprintln!("  {line}");
            }
            return ExitCode::FAILURE;
        }
    };
    for key in unknown {
        tracing::info!(key = %key, "Route Registrar.config-key-not-supported");
    }
    let pidfile = flags.string("pidfile");
    if !pidfile.is_empty() {
        let pid = std::process::id().to_string();
        tracing::info!(pid, file = pidfile, "Route Registrar.Writing pid");
        if let Err(e) = std::fs::write(pidfile, &pid) {
            tracing::error!(error = %e, pid, pidfile, "Route Registrar.error writing pid to pidfile");
            return ExitCode::FAILURE;
        }
    }
    let Some(runtime) = process_setup::runtime("route-emitter") else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(route_emitter::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "Route Registrar.Exiting with error");
            eprintln!("route-emitter: {e}");
            ExitCode::FAILURE
        }
    }
}
