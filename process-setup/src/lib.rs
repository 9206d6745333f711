//! What every binary of the tier does at start, in one place: accept upstream's Go-style flags
//! (`-config file`, [`go_flags`]), log upstream's JSON lines to stdout ([`logging`]), and start the
//! async runtime, and the data path's threads ([`runtime_threads`]).

pub mod go_flags;
pub mod logging;
pub mod runtime_threads;

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

/// [`runtime`] from a builder of the caller's choice (all drivers enabled). Raises the
/// open-files limit first ([`raise_open_files_limit`]).
pub fn runtime_from(
    program: &str,
    mut builder: tokio::runtime::Builder,
) -> Option<tokio::runtime::Runtime> {
    raise_open_files_limit();
    match builder.enable_all().build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("{program}: cannot start the async runtime: {e}");
            None
        }
    }
}

/// Raises the soft open-files limit (`RLIMIT_NOFILE`) to the hard one, as every Go program
/// does at start (Go 1.19+), so the upstream binaries we replace and ours run out of file
/// descriptors at the same point: a router under many connections otherwise fails `accept`
/// at the usual soft 1024. Returns the soft limit in force afterwards (None if it cannot be
/// read).
pub fn raise_open_files_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    Some(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit on a local struct.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
            if lim.rlim_max > 256 {
                let lowered = libc::rlimit {
                    rlim_cur: 256,
                    rlim_max: lim.rlim_max,
                };
                assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lowered), 0);
            }
        }
        assert_eq!(raise_open_files_limit(), Some(lim.rlim_max));
    }

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
