//! The `conduit` server binary: configuration, logging, then [`conduit::run`];
//! `conduit openapi` prints the OpenAPI document instead.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    // `conduit openapi` prints the OpenAPI document and exits: no configuration needed.
    if std::env::args().nth(1).as_deref() == Some("openapi") {
        return match serde_json::to_string_pretty(&conduit::app::openapi()) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("conduit: {err}");
                ExitCode::FAILURE
            }
        };
    }
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
