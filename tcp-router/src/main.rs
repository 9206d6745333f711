//! `tcp-router -config <file> [upstream's flags]`: cf-tcp-router's command line (routing-release's
//! `tcp_router_ctl`), exit codes and log lines.

use std::process::ExitCode;

use tcp_router::config::{Config, Flags};

fn main() -> ExitCode {
    let flags = match Flags::parse_go_style(std::env::args()) {
        Ok(f) => f,
        Err(e) => return e.report(),
    };
    // Our `log_level` key stands in for `-logLevel` when the flag is absent.
    let loaded = Config::load(&flags.config);
    let mut log_flags = flags.parsed.clone();
    if let Ok(c) = &loaded {
        log_flags.default_string("logLevel", &c.log_level);
    }
    process_setup::init_lager_logging("tcp-router", &log_flags);
    tracing::info!("tcp-router.starting");
    if let Err(e) = flags.validate() {
        tracing::error!(error = %e, "tcp-router.invalid-flags");
        return ExitCode::FAILURE;
    }
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "tcp-router.failed-to-unmarshal-config-file");
            return ExitCode::FAILURE;
        }
    };
    for key in &config.unknown_keys {
        tracing::info!(key = %key, "tcp-router.config-key-not-supported");
    }
    for w in &config.warnings {
        tracing::info!(warning = %w, "tcp-router.config-warning");
    }
    let builder = if std::env::var("TCP_ROUTER_RT").as_deref() == Ok("current") {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let Some(runtime) = process_setup::runtime_from("tcp-router", builder) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(tcp_router::router::run(config, flags)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "tcp-router.exited-with-failure");
            ExitCode::FAILURE
        }
    }
}
