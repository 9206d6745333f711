//! `gorouter -c <file.yml>`: upstream Gorouter's command line, exit codes and log lines.

use std::process::ExitCode;

use process_setup::{FlagSet, LogFormat, LogSettings, TimeFormat};

#[global_allocator]
static ALLOCATOR: gorouter::allocator::CarvedAlignment = gorouter::allocator::CarvedAlignment;

/// gorouter's log `source` when `logging.syslog` is empty (upstream's default prefix).
const SOURCE: &str = "gorouter.stdout";

fn start_logging(source: &str, level: tracing::Level, rfc3339: bool) {
    process_setup::logging::init_logging(LogSettings {
        format: LogFormat::Zap,
        source: source.into(),
        level,
        time_format: if rfc3339 {
            TimeFormat::Rfc3339
        } else {
            TimeFormat::UnixEpoch
        },
    });
}

fn main() -> ExitCode {
    let flags = FlagSet::new("gorouter").string("c", "", "Configuration File");
    let flags = match flags.parse(std::env::args()) {
        Ok(f) => f,
        Err(e) => return e.report(),
    };
    // Without `-c`, upstream runs on its code defaults; so do we. Upstream's message for a
    // bad file ends in a colon; the one for its defaults does not.
    let (loaded, error_message) = match flags.string("c") {
        "" => (
            gorouter::config::Config::from_yaml(""),
            "Error loading config",
        ),
        path => (
            gorouter::config::Config::load(std::path::Path::new(path)),
            "Error loading config:",
        ),
    };
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            start_logging(SOURCE, tracing::Level::INFO, false);
            tracing::error!(error = %e, "{error_message}");
            eprintln!("gorouter: {e}");
            return ExitCode::FAILURE;
        }
    };
    let level = process_setup::logging::level_from_word(&config.logging.level)
        .unwrap_or(tracing::Level::INFO);
    let source = match config.logging.syslog.as_str() {
        "" => SOURCE,
        tag => tag,
    };
    start_logging(source, level, config.logging.timestamp_rfc3339);
    flags.log_not_used();
    for key in &config.unknown_keys {
        tracing::info!(key = %key, "config-key-not-supported");
    }
    for w in &config.warnings {
        tracing::warn!(warning = %w, "config-warning");
    }
    let Some(runtime) = process_setup::runtime("gorouter") else {
        return ExitCode::FAILURE;
    };
    let config_file = match flags.string("c") {
        "" => None,
        path => Some(std::path::PathBuf::from(path)),
    };
    match runtime.block_on(gorouter::router::run(config, config_file)) {
        Ok(_) => ExitCode::SUCCESS,
        // `run` logged it under upstream's name for the step that failed.
        Err(e) if e.downcast_ref::<gorouter::router::FatalLogged>().is_some() => ExitCode::FAILURE,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "gorouter.exited-with-failure");
            ExitCode::FAILURE
        }
    }
}
