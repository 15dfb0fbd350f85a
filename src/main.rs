//! The `conduit` server binary: configuration, logging, then [`conduit::run`];
//! `conduit openapi` prints the OpenAPI document instead; `conduit seed` fills the
//! database for load benchmarks (see [`conduit::seed`]); `conduit hash-rate`
//! measures how many Argon2id verifications per second this machine allows.

use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: a request allocates many small, short-lived
/// values, which glibc's allocator serves at a higher cost in CPU under load
/// (docs/performance-notes.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    if std::env::args().nth(1).as_deref() == Some("seed") {
        return seed().await;
    }
    if std::env::args().nth(1).as_deref() == Some("hash-rate") {
        return hash_rate().await;
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

/// `conduit seed --scale s|l [--seed N]`: exit code 2 for bad arguments or settings.
async fn seed() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let options = match conduit::seed::Options::parse(&args) {
        Ok(options) => options,
        Err(err) => {
            eprintln!("conduit seed: {err}\n{}", conduit::seed::USAGE);
            return ExitCode::from(2);
        }
    };
    let config = match conduit::config::DatabaseConfig::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("conduit seed: {err}");
            return ExitCode::from(2);
        }
    };
    match conduit::seed::run(&config, options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("conduit seed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `conduit hash-rate`: Argon2id verifications per second with one per core at
/// once, as the server runs them, over 3 seconds.
async fn hash_rate() -> ExitCode {
    let cores = conduit::auth::password::per_core();
    match conduit::auth::password::verification_rate(cores, std::time::Duration::from_secs(3)).await {
        Ok(rate) => {
            println!("{rate:.1} verifications/s, {cores} at once");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("conduit hash-rate: {err:#}");
            ExitCode::FAILURE
        }
    }
}
