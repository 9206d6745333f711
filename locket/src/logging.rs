//! Process logging for the `locket` binary: JSON lines on stdout, level from the config's
//! `log_level` (`RUST_LOG` overrides), like the workspace's other binaries.

/// Installs the global subscriber. Upstream lager's `fatal` maps to `error`.
pub fn init(level: &str) {
    let level = match level {
        "fatal" => "error",
        "" => "info",
        other => other,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .try_init();
}
