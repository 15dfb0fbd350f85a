//! The `conduit` binary: the command line ([`conduit::cli`]) chooses what runs:
//! the server by default, `seed`, `openapi` or `hash-rate`.

use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: a request allocates many small, short-lived
/// values, which glibc's allocator serves at a higher cost in CPU under load
/// (docs/performance-notes.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Before any runtime or configuration: `--help`, `--version` and usage errors
    // (exit code 2) end here, having started nothing.
    let cli = conduit::cli::Cli::parse_or_exit();
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(cli.run()),
        Err(err) => {
            eprintln!("conduit: cannot start the async runtime: {err}");
            ExitCode::FAILURE
        }
    }
}
