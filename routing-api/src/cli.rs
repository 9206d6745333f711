//! Process plumbing for the binary: Go-style flags and JSON logging.

/// Rewrites Go-style single-dash long flags (`-config x`, `-devMode`, `-ip=1.2.3.4`) to the
/// double-dash form clap parses. Arguments that are not flags pass through unchanged.
pub fn go_style_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            let is_go_long_flag = i > 0
                && a.starts_with('-')
                && !a.starts_with("--")
                && a.len() > 2
                && a.as_bytes()[1].is_ascii_alphabetic();
            if is_go_long_flag {
                format!("-{a}")
            } else {
                a
            }
        })
        .collect()
}

/// JSON lines on stdout; `RUST_LOG` overrides the level.
pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_flags_become_long_flags() {
        let args = ["routing-api", "-config", "c.yml", "-ip=1.2.3.4", "-devMode", "--x", "-v"]
            .map(String::from);
        assert_eq!(
            go_style_args(args),
            vec!["routing-api", "--config", "c.yml", "--ip=1.2.3.4", "--devMode", "--x", "-v"]
        );
    }
}
