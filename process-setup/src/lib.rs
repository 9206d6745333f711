//! What every binary of the tier does at start, in one place: accept upstream's Go-style flags
//! (`-config file`, [`go_flags`]), log upstream's JSON lines to stdout ([`logging`]), and start the
//! async runtime.

pub mod go_flags;
pub mod logging;

pub use go_flags::{FlagError, FlagKind, FlagSet, ParsedFlags};
pub use logging::{LogFormat, LogSettings, TimeFormat};

/// Starts lager-format logging from lager's flags (`-logLevel`, `-timeFormat`, already checked
/// by [`FlagSet::lager_flags`]) for `component`, then logs the given flags this program does not
/// act on.
pub fn init_lager_logging(component: &str, flags: &ParsedFlags) {
    logging::init_logging(LogSettings {
        format: LogFormat::Lager,
        source: component.to_owned(),
        level: logging::level_from_word(flags.string("logLevel")).unwrap_or(tracing::Level::INFO),
        time_format: TimeFormat::from_lager_flag(flags.string("timeFormat")).unwrap_or_default(),
    });
    flags.log_not_used();
}

/// Starts Tokio's multi-threaded runtime, or reports on stderr
/// (`<program>: cannot start the async runtime: <error>`) why it could not.
pub fn runtime(program: &str) -> Option<tokio::runtime::Runtime> {
    runtime_from(program, tokio::runtime::Builder::new_multi_thread())
}

/// [`runtime`] from a builder of the caller's choice (all drivers enabled).
pub fn runtime_from(
    program: &str,
    mut builder: tokio::runtime::Builder,
) -> Option<tokio::runtime::Runtime> {
    match builder.enable_all().build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("{program}: cannot start the async runtime: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_run_futures() {
        assert_eq!(runtime("test").expect("runtime").block_on(async { 2 }), 2);
        let current = tokio::runtime::Builder::new_current_thread();
        assert_eq!(
            runtime_from("test", current)
                .expect("runtime")
                .block_on(async { 3 }),
            3
        );
    }
}
