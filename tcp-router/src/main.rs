use std::process::ExitCode;

use tcp_router::config::{Config, Flags};

fn main() -> ExitCode {
    let flags = match Flags::parse_go_style(std::env::args()) {
        Ok(f) => f,
        Err(e) => {
            // Help and version go to stdout with success; usage errors to stderr.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Err(e) = flags.validate() {
        eprintln!("tcp-router: {e}");
        return ExitCode::FAILURE;
    }
    let config = match Config::load(&flags.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tcp-router: {e}");
            return ExitCode::FAILURE;
        }
    };
    process_setup::init_json_logging(flags.log_level.as_deref().unwrap_or(&config.log_level));
    for key in &config.unknown_keys {
        tracing::warn!(key = %key, "config key not supported; ignored");
    }
    for w in &config.warnings {
        tracing::warn!("{w}");
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
            tracing::error!(error = %e, "tcp-router.failed");
            eprintln!("tcp-router: {e}");
            ExitCode::FAILURE
        }
    }
}
