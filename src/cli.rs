//! The command line: `conduit [serve]`, `conduit migrate`, `conduit healthcheck`,
//! `conduit seed`, `conduit openapi`, `conduit hash-rate`, each with its own
//! `--help`.
//!
//! Arguments only choose what to run. Settings stay in environment variables
//! (and `.env`), read once by [`crate::config`]: one source of truth, with one
//! validation that names the variable, and the way containers and service managers
//! pass configuration. Mirroring each variable as a flag would give every setting
//! two spellings and a precedence rule to learn, for no gain on a server that is
//! started by a supervisor rather than typed.
//!
//! Anything unknown is refused with a usage line and exit code 2 (clap's), so that
//! `conduit --hlep` never starts a server.

use std::{ffi::OsString, process::ExitCode};

use clap::{
    CommandFactory as _, Parser, Subcommand,
    error::{ContextKind, ContextValue},
};

use crate::{config, seed, telemetry};

/// A RealWorld ("Conduit") API server on Axum and PostgreSQL.
///
/// Without a command it serves: see `conduit help serve` for its configuration.
#[derive(Debug, Parser)]
#[command(name = "conduit", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (the default)
    ///
    /// Listens on BIND_ADDR (127.0.0.1:8080) until SIGINT or SIGTERM. With
    /// DATABASE_URL unset, it initialises and runs its own PostgreSQL in
    /// CONDUIT_DATA_DIR (./.conduit) and stops it on the way out.
    #[command(after_help = SERVE_SETTINGS)]
    Serve,
    /// Apply the database migrations this version has, and exit
    ///
    /// Applies what the database of DATABASE_URL (else the embedded cluster in
    /// CONDUIT_DATA_DIR) lacks, under PostgreSQL's advisory lock, then fills in the
    /// data the migrations added columns for, and prints what it applied. Run it
    /// once per release (a Kubernetes Job) before starting servers with
    /// MIGRATE_ON_START=false. Exit code 0, 1 on failure, 2 for a bad setting.
    Migrate,
    /// Exit 0 when this machine's server is ready, 1 otherwise (for container health checks)
    ///
    /// Sends GET /health/ready to the port of BIND_ADDR (127.0.0.1:8080), on
    /// loopback when BIND_ADDR is an unspecified address (0.0.0.0 or ::), and exits
    /// 0 on a 200 within 2 seconds; 1 on anything else, a bad BIND_ADDR included.
    Healthcheck,
    /// Fill an empty database with a deterministic data set, for load benchmarks
    ///
    /// Opens the database the server would (DATABASE_URL, else the embedded
    /// cluster in CONDUIT_DATA_DIR), applies the migrations, and refuses a database
    /// that already has users or tags. Every user's password is `password123`.
    Seed(seed::Options),
    /// Print the OpenAPI document of the API, as served at /api/openapi.json
    Openapi,
    /// Measure how many Argon2id password verifications per second this machine allows
    ///
    /// One verification per core at once, as the server runs them, for 3 seconds.
    HashRate,
}

const SERVE_SETTINGS: &str = "\
Configuration: environment variables, also read from ./.env; a bad value stops
start-up naming the variable (exit code 2). Among them: DATABASE_URL, JWT_SECRET,
BIND_ADDR, CONDUIT_DATA_DIR, MIGRATE_ON_START, DATABASE_MAX_CONNECTIONS,
REQUEST_TIMEOUT_SECONDS, CORS_ORIGINS, RUST_LOG, LOG_FORMAT,
OTEL_EXPORTER_OTLP_ENDPOINT.
The full list, with defaults: README.md and docs/operations.md.";

impl Cli {
    /// The process's command line, or the process ends: with code 0 after
    /// printing the help or the version, with code 2 after a usage error.
    pub fn parse_or_exit() -> Self {
        Self::try_parse().unwrap_or_else(|err| with_usage(err, std::env::args_os()).exit())
    }

    /// Runs the chosen command; the exit code: 0, 1 for a failure, 2 for a bad
    /// setting.
    pub async fn run(self) -> ExitCode {
        match self.command.unwrap_or(Command::Serve) {
            Command::Serve => serve().await,
            Command::Migrate => migrate().await,
            Command::Healthcheck => healthcheck().await,
            Command::Seed(options) => seed(options).await,
            Command::Openapi => openapi(),
            Command::HashRate => hash_rate().await,
        }
    }
}

/// clap leaves the usage line out of some errors (a bad value, a missing one):
/// every refusal shows the usage of the command it was meant for.
fn with_usage(mut err: clap::Error, args: impl IntoIterator<Item = OsString>) -> clap::Error {
    if !err.use_stderr() || err.get(ContextKind::Usage).is_some() {
        return err;
    }
    let mut command = Cli::command();
    command.build();
    let named = args.into_iter().nth(1).filter(|name| command.find_subcommand(name).is_some());
    let usage = match named.and_then(|name| command.find_subcommand_mut(name)) {
        Some(subcommand) => subcommand.render_usage(),
        None => command.render_usage(),
    };
    err.insert(ContextKind::Usage, ContextValue::StyledStr(usage));
    err
}

async fn serve() -> ExitCode {
    let config = match config::Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("conduit: {err}");
            return ExitCode::from(2);
        }
    };
    let telemetry = match telemetry::init(&config) {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("conduit: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let served = crate::run(config).await;
    // After the server: the spans of the last requests are exported before exit.
    telemetry.shutdown().await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("conduit: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Reads the database settings only, as `conduit seed` does: a migration Job
/// needs no JWT_SECRET. Exit code 2 for bad settings, as the server's.
async fn migrate() -> ExitCode {
    let config = match config::DatabaseConfig::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("conduit migrate: {err}");
            return ExitCode::from(2);
        }
    };
    match crate::migrate(&config).await {
        Ok(migrated) => {
            for (version, description) in &migrated.applied {
                println!("applied {version} {description}");
            }
            println!(
                "{} of {} migrations applied now; the database has them all",
                migrated.applied.len(),
                migrated.known
            );
            if migrated.backfilled > 0 {
                println!("filled in {} rows' new columns", migrated.backfilled);
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("conduit migrate: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// How long `conduit healthcheck` waits for the whole answer.
const HEALTHCHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Exit code 1, not 2, for a bad BIND_ADDR: container engines read any code but
/// 0 and 1 as undefined (Docker reserves 2).
async fn healthcheck() -> ExitCode {
    let bind = match config::bind_addr_from_env() {
        Ok(bind) => bind,
        Err(err) => {
            eprintln!("conduit healthcheck: {err}");
            return ExitCode::FAILURE;
        }
    };
    let addr = probe_addr(bind);
    match tokio::time::timeout(HEALTHCHECK_TIMEOUT, readiness_status(addr)).await {
        Ok(Ok(200)) => {
            println!("ready: GET http://{addr}/health/ready answered 200");
            ExitCode::SUCCESS
        }
        Ok(Ok(status)) => {
            eprintln!("conduit healthcheck: GET http://{addr}/health/ready answered {status}");
            ExitCode::FAILURE
        }
        Ok(Err(err)) => {
            eprintln!("conduit healthcheck: GET http://{addr}/health/ready: {err}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("conduit healthcheck: GET http://{addr}/health/ready: no answer within {HEALTHCHECK_TIMEOUT:?}");
            ExitCode::FAILURE
        }
    }
}

/// Where the server listening on `bind` is reached from this machine: an
/// unspecified address (0.0.0.0, ::) listens on every interface, loopback among them.
fn probe_addr(bind: std::net::SocketAddr) -> std::net::SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, bind.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, bind.port()).into(),
        _ => bind,
    }
}

/// The status code of `GET /health/ready` at `addr`: one HTTP/1.1 request on a
/// connection of its own, and the status line of the answer (nothing more is read).
async fn readiness_status(addr: std::net::SocketAddr) -> std::io::Result<u16> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET /health/ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    // The status line is far shorter than this; a longer one is not HTTP.
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 64];
    while !head.contains(&b'\n') && head.len() < 256 {
        let read = stream.read(&mut buf).await?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buf[..read]);
    }
    status_code(&head).ok_or_else(|| {
        let line = String::from_utf8_lossy(&head);
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not an HTTP answer: {:?}", line.trim_end()))
    })
}

/// The code of an HTTP/1.x status line (`HTTP/1.1 200 OK`).
fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut parts = line.split(' ');
    let version = parts.next()?;
    let code = parts.next()?;
    (version.starts_with("HTTP/1.") && code.len() == 3).then(|| code.parse().ok()).flatten()
}

/// Exit code 2 for bad settings, as the server's.
async fn seed(options: seed::Options) -> ExitCode {
    let config = match config::DatabaseConfig::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("conduit seed: {err}");
            return ExitCode::from(2);
        }
    };
    match seed::run(&config, options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("conduit seed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Needs no configuration and starts nothing.
fn openapi() -> ExitCode {
    match serde_json::to_string_pretty(&crate::app::openapi()) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("conduit openapi: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn hash_rate() -> ExitCode {
    let cores = crate::auth::password::per_core();
    match crate::auth::password::verification_rate(cores, std::time::Duration::from_secs(3)).await {
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

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;
    use crate::seed::Scale;

    fn parse(line: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(line.split_whitespace())
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_command_means_serve() {
        assert!(parse("conduit").expect("valid").command.is_none());
        assert!(matches!(parse("conduit serve").expect("valid").command, Some(Command::Serve)));
    }

    #[test]
    fn migrate_and_healthcheck_take_no_arguments() {
        assert!(matches!(parse("conduit migrate").expect("valid").command, Some(Command::Migrate)));
        assert!(matches!(parse("conduit healthcheck").expect("valid").command, Some(Command::Healthcheck)));
        for line in ["conduit migrate --to 3", "conduit healthcheck http://x", "conduit healthcheck --port 1"] {
            assert_eq!(parse(line).expect_err(line).exit_code(), 2, "{line}");
        }
    }

    #[test]
    fn the_healthcheck_probes_loopback_when_the_server_listens_on_every_interface() {
        for (bind, probed) in [
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("[::]:9000", "[::1]:9000"),
            ("127.0.0.1:8081", "127.0.0.1:8081"),
            ("10.1.2.3:80", "10.1.2.3:80"),
            ("[::1]:8080", "[::1]:8080"),
        ] {
            assert_eq!(probe_addr(bind.parse().expect(bind)).to_string(), probed, "{bind}");
        }
    }

    #[test]
    fn the_healthcheck_reads_the_status_code_of_an_http_status_line_only() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\ncontent-length: 2"), Some(200));
        assert_eq!(status_code(b"HTTP/1.0 503 Service Unavailable\r\n"), Some(503));
        assert_eq!(status_code(b"HTTP/1.1 204\r\n"), Some(204));
        for not_http in [&b""[..], b"SSH-2.0-OpenSSH_9.2\r\n", b"HTTP/1.1 20", b"HTTP/2 200\r\n", b"HTTP/1.1 abc OK"] {
            assert_eq!(status_code(not_http), None, "{}", String::from_utf8_lossy(not_http));
        }
    }

    #[test]
    fn seed_takes_a_scale_in_either_case_and_an_optional_seed() {
        let options = |line| match parse(line).expect(line).command {
            Some(Command::Seed(options)) => options,
            other => panic!("{line}: {other:?}"),
        };
        assert_eq!(options("conduit seed --scale s"), seed::Options { scale: Scale::S, seed: 42 });
        assert_eq!(options("conduit seed --seed 7 --scale L"), seed::Options { scale: Scale::L, seed: 7 });
        assert_eq!(options("conduit seed --scale=l"), seed::Options { scale: Scale::L, seed: 42 });
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        for (line, kind) in [
            ("conduit bogus", ErrorKind::InvalidSubcommand),
            ("conduit --bogus", ErrorKind::UnknownArgument),
            ("conduit serve --port 80", ErrorKind::UnknownArgument),
            ("conduit openapi extra", ErrorKind::UnknownArgument),
            ("conduit seed", ErrorKind::MissingRequiredArgument),
            ("conduit seed --scale", ErrorKind::InvalidValue),
            ("conduit seed --scale m", ErrorKind::InvalidValue),
            ("conduit seed --scale s --seed x", ErrorKind::ValueValidation),
            ("conduit seed --scale s --scale l", ErrorKind::ArgumentConflict),
        ] {
            let err = parse(line).expect_err(line);
            assert_eq!(err.kind(), kind, "{line}: {err}");
            assert_eq!(err.exit_code(), 2, "{line}");
        }
    }

    #[test]
    fn every_usage_error_shows_the_usage_of_its_command() {
        for (line, usage) in [
            ("conduit bogus", "Usage: conduit [COMMAND]"),
            ("conduit seed --scale m", "Usage: conduit seed [OPTIONS] --scale <SCALE>"),
            ("conduit seed --scale", "Usage: conduit seed [OPTIONS] --scale <SCALE>"),
            ("conduit seed --scale s --seed x", "Usage: conduit seed [OPTIONS] --scale <SCALE>"),
            ("conduit openapi extra", "Usage: conduit openapi"),
        ] {
            let err = with_usage(parse(line).expect_err(line), line.split_whitespace().map(OsString::from));
            let shown = err.render().to_string();
            assert!(shown.lines().any(|l| l == usage), "{line}: {shown}");
        }
    }

    #[test]
    fn help_and_version_are_not_errors_of_usage() {
        for line in ["conduit --help", "conduit -h", "conduit help", "conduit help seed", "conduit seed --help"] {
            let err = parse(line).expect_err(line);
            assert_eq!(err.kind(), ErrorKind::DisplayHelp, "{line}");
            assert_eq!(err.exit_code(), 0, "{line}");
        }
        let version = parse("conduit --version").expect_err("--version");
        assert_eq!(version.kind(), ErrorKind::DisplayVersion);
        assert_eq!(version.exit_code(), 0);
    }
}
