//! What every binary of the tier does at start, in one place: accept upstream's Go-style flags
//! (`-config file`), log JSON lines to stdout, and start the async runtime.

/// Rewrites Go-style single-dash long flags (`-config x`, `-devMode`, `-ip=1.2.3.4`) to the
/// double-dash form clap parses. Single-letter flags (`-c`, `-k`) and everything else pass
/// through unchanged.
pub fn go_style_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            let b = a.as_bytes();
            let is_go_long_flag =
                i > 0 && b.len() > 2 && b[0] == b'-' && b[1].is_ascii_alphabetic() && b[2] != b'=';
            if is_go_long_flag {
                format!("-{a}")
            } else {
                a
            }
        })
        .collect()
}

/// Installs JSON logging on stdout at `level` (`RUST_LOG` overrides). Upstream's `fatal` maps
/// to `error`; an empty level means `info`.
pub fn init_json_logging(level: &str) {
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

    #[test]
    fn go_flags_become_long_flags() {
        let args = [
            "routing-api",
            "-config",
            "c.yml",
            "-ip=1.2.3.4",
            "-devMode",
            "--x",
            "-v",
            "-c",
            "-",
        ]
        .map(String::from);
        assert_eq!(
            go_style_args(args),
            vec![
                "routing-api",
                "--config",
                "c.yml",
                "--ip=1.2.3.4",
                "--devMode",
                "--x",
                "-v",
                "-c",
                "-"
            ]
        );
    }
}
