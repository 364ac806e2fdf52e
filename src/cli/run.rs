//! `consent-gateway run`: load, validate, serve until told to stop.

use std::path::Path;
use std::process::ExitCode;

use crate::config;
use crate::server::{build_server, RunOptions};

/// Serves with the configuration at `path`. An invalid configuration prints
/// its errors and exits 1.
pub fn run(path: &Path, options: &RunOptions) -> ExitCode {
    let config = match config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: configuration is invalid; not starting", path.display());
            return ExitCode::from(1);
        }
    };
    for warning in config::warnings(&config) {
        log::warn!("{warning}");
    }
    match build_server(path, config, options) {
        Ok(built) => {
            crate::services::reload::spawn(&built.gateway);
            log::info!("consent-gateway serving with {}", path.display());
            crate::server::exit_when_drained(
                &built.server,
                built.connections.clone(),
                built.grpc_connections.clone(),
                std::time::Duration::from_secs(options.grace_period_seconds),
            );
            built.server.run(pingora_core::server::RunArgs::default());
            crate::server::flush_before_exit();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot start: {e}");
            ExitCode::from(1)
        }
    }
}
