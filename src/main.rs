//! The `conduit` server binary: configuration, logging, then [`conduit::run`].

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match conduit::config::Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("conduit: {err}");
            return ExitCode::from(2);
        }
    };
    conduit::telemetry::init(config.log_format, &config.log_filter);
    match conduit::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("conduit: {err:#}");
            ExitCode::FAILURE
        }
    }
}
