//! `locket -config <locket.json>`: the Locket server binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use locket::config::LocketConfig;
use locket::sql::LockTable;
use tokio::signal::unix::{signal, SignalKind};

/// Locket-compatible lock service (gRPC over mutual TLS).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Path to the JSON config file (upstream's keys). Also accepted as `-config`.
    #[arg(short = 'c', long = "config")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse_from(process_setup::go_style_args(std::env::args()));
    let config = match LocketConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("locket: {e}");
            return ExitCode::FAILURE;
        }
    };
    process_setup::init_json_logging(&config.log_level);
    for key in &config.ignored_keys {
        tracing::warn!(key = %key, "config key accepted but ignored");
    }
    for key in &config.unknown_keys {
        tracing::warn!(key = %key, "config key not supported; ignored");
    }
    let Some(runtime) = process_setup::runtime("locket") else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "locket.failed");
            eprintln!("locket: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: LocketConfig) -> Result<(), String> {
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| format!("installing SIGTERM handler: {e}"))?;
    let mut sigint =
        signal(SignalKind::interrupt()).map_err(|e| format!("installing SIGINT handler: {e}"))?;
    let options = config.db_connect_options().map_err(|e| e.to_string())?;
    let table = LockTable::connect_with(options, config.pool_settings())
        .await
        .map_err(|e| format!("database: {e}"))?;
    tracing::info!(driver = table.backend_name(), "locket.database-connected");
    let shutdown = async move {
        tokio::select! {
            _ = sigterm.recv() => tracing::info!(signal = "SIGTERM", "locket.signalled"),
            _ = sigint.recv() => tracing::info!(signal = "SIGINT", "locket.signalled"),
        }
    };
    let result = locket::server::serve_addr(
        config.listen_address,
        table.clone(),
        config.server_tls(),
        shutdown,
    )
    .await;
    table.close().await;
    result.map_err(|e| e.to_string())
}
