//! `locket -config <locket.json>`: the Locket server binary, with upstream's command line,
//! exit codes and log lines; `/metrics` on `prometheus.port` when the config sets one.

use std::process::ExitCode;

use std::sync::Arc;

use locket::config::LocketConfig;
use locket::metrics::LocketMetrics;
use locket::sql::LockTable;
use process_setup::{FlagSet, LogFormat, LogSettings};
use prometheus_endpoint::{MetricsServer, Registry};
use tokio::signal::unix::{signal, SignalKind};

fn main() -> ExitCode {
    let flags =
        FlagSet::new("locket").string("config", "", "Path to Locket JSON Configuration file");
    let flags = match flags.parse(std::env::args()) {
        Ok(f) => f,
        Err(e) => return e.report(),
    };
    let config = match LocketConfig::load(std::path::Path::new(flags.string("config"))) {
        Ok(c) => c,
        Err(e) => {
            // Upstream panics with `invalid-config-file: <error>` (exit 2) before it has a
            // logger; say the same without the stack trace.
            eprintln!("invalid-config-file: {e}");
            return ExitCode::from(2);
        }
    };
    process_setup::logging::init_logging(LogSettings {
        format: LogFormat::Lager,
        source: "locket".into(),
        level: process_setup::logging::level_from_word(&config.log_level)
            .unwrap_or(tracing::Level::INFO),
        time_format: config.time_format,
    });
    flags.log_not_used();
    for key in &config.ignored_keys {
        tracing::info!(key = %key, "locket.config-key-not-used");
    }
    for key in &config.unknown_keys {
        tracing::info!(key = %key, "locket.config-key-not-supported");
    }
    let Some(runtime) = process_setup::runtime("locket") else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err((message, e)) => {
            tracing::error!(error = %e, "{message}");
            ExitCode::FAILURE
        }
    }
}

/// Serves until SIGTERM/SIGINT; a failure carries upstream's log message for it.
async fn run(config: LocketConfig) -> Result<(), (&'static str, String)> {
    let mut sigterm = signal(SignalKind::terminate())
        .map_err(|e| ("locket.installing-signal-handler-failed", e.to_string()))?;
    let mut sigint = signal(SignalKind::interrupt())
        .map_err(|e| ("locket.installing-signal-handler-failed", e.to_string()))?;
    let options = config
        .db_connect_options()
        .map_err(|e| ("locket.failed-to-open-sql", e.to_string()))?;
    let table = LockTable::connect_with(options, config.pool_settings())
        .await
        .map_err(|e| ("locket.sql-failed-to-connect", e.to_string()))?;
    tracing::info!(driver = table.backend_name(), "locket.database-connected");
    let shutdown = async move {
        tokio::select! {
            _ = sigterm.recv() => tracing::info!(signal = "terminated", "locket.signalled"),
            _ = sigint.recv() => tracing::info!(signal = "interrupt", "locket.signalled"),
        }
    };
    let listener = tokio::net::TcpListener::bind(&config.listen_address)
        .await
        .map_err(|e| {
            let e = format!("cannot listen on {}: {e}", config.listen_address);
            ("locket.failed-to-listen", e)
        })?;
    let metrics = LocketMetrics::new();
    let metrics_task = match &config.metrics_endpoint {
        None => None,
        Some(endpoint) => {
            let server = MetricsServer::bind(endpoint)
                .await
                .map_err(|e| ("locket.failed-to-serve-metrics", e.to_string()))?;
            let mut registry = Registry::default();
            metrics.register(&mut registry);
            if let Ok(addr) = server.local_addr() {
                tracing::info!(address = %addr, tls = endpoint.tls.is_some(), "locket.serving-metrics");
            }
            Some(tokio::spawn(
                server.serve(Arc::new(registry), std::future::pending()),
            ))
        }
    };
    tracing::info!(address = %config.listen_address, "locket.started");
    let result = locket::server::serve_with_metrics(
        listener,
        table.clone(),
        config.server_tls(),
        metrics,
        shutdown,
    )
    .await;
    if let Some(task) = metrics_task {
        task.abort();
    }
    table.close().await;
    match result {
        Ok(()) => {
            tracing::info!("locket.exited");
            Ok(())
        }
        Err(e) => Err(("locket.exited-with-failure", e.to_string())),
    }
}
