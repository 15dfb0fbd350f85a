//! The command line as a new user meets it: help, version, and arguments it does
//! not know, none of which may start a server.

use crate::support::free_addr;
use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::Duration,
};

const BIN: &str = env!("CARGO_BIN_EXE_conduit");

/// Runs `conduit args` in `dir` with nothing configured (a server would start
/// there, with its own PostgreSQL in `dir/.conduit`), and waits at most 20 s for
/// it to exit: one that is still running has started serving, and fails the test.
fn run_in(dir: &Path, args: &[&str]) -> Output {
    let bind = format!("127.0.0.1:{}", free_addr().port());
    let child = Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BIND_ADDR", &bind)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run conduit");
    // The pipes are read while the command runs (`wait_with_output`): the OpenAPI
    // document is larger than a pipe's buffer, and a child blocked on a full pipe
    // never exits. A watchdog kills it after 20 s.
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("a pid"));
    let watchdog = std::thread::spawn(move || {
        let timed_out = finished.recv_timeout(Duration::from_secs(20)).is_err();
        if timed_out {
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).ok();
        }
        timed_out
    });
    let output = child.wait_with_output().expect("output");
    done.send(()).ok();
    let timed_out = watchdog.join().expect("watchdog");
    assert!(!timed_out, "`conduit {}` was still running after 20 s: {output:?}", args.join(" "));
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_nothing_created(dir: &Path, args: &[&str]) {
    let left: Vec<_> = std::fs::read_dir(dir).expect("read dir").map(|entry| entry.expect("entry").path()).collect();
    assert!(left.is_empty(), "`conduit {}` created {left:?}", args.join(" "));
}

#[test]
fn help_prints_the_commands_and_exits_0_without_starting_anything() {
    for args in [&["--help"][..], &["-h"], &["help"]] {
        let dir = tempfile::tempdir().expect("temp dir");
        let output = run_in(dir.path(), args);
        let stdout = text(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {output:?}");
        assert!(stdout.contains("Usage: conduit [COMMAND]"), "{args:?}: {stdout}");
        for command in ["serve", "migrate", "healthcheck", "seed", "openapi", "hash-rate"] {
            assert!(stdout.contains(&format!("  {command} ")), "{args:?} lists {command}: {stdout}");
        }
        assert!(output.stderr.is_empty(), "{args:?}: {}", text(&output.stderr));
        assert_nothing_created(dir.path(), args);
    }
}

#[test]
fn each_command_has_its_own_help() {
    for (args, expected) in [
        (&["seed", "--help"][..], "Usage: conduit seed [OPTIONS] --scale <SCALE>"),
        (&["help", "seed"], "[possible values: s, l]"),
        (&["serve", "--help"], "Usage: conduit serve"),
        (&["help", "serve"], "DATABASE_URL"),
        (&["openapi", "--help"], "Usage: conduit openapi"),
        (&["hash-rate", "-h"], "Usage: conduit hash-rate"),
        (&["migrate", "--help"], "MIGRATE_ON_START=false"),
        (&["healthcheck", "--help"], "/health/ready"),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let output = run_in(dir.path(), args);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {output:?}");
        assert!(text(&output.stdout).contains(expected), "{args:?}: {}", text(&output.stdout));
        assert_nothing_created(dir.path(), args);
    }
}

#[test]
fn version_prints_the_name_and_version() {
    let dir = tempfile::tempdir().expect("temp dir");
    for args in [&["--version"][..], &["-V"]] {
        let output = run_in(dir.path(), args);
        assert_eq!(output.status.code(), Some(0));
        assert_eq!(text(&output.stdout).trim(), format!("conduit {}", env!("CARGO_PKG_VERSION")));
    }
    assert_nothing_created(dir.path(), &["--version"]);
}

#[test]
fn an_unknown_command_or_argument_is_refused_with_a_usage_line_and_exit_code_2() {
    for args in [
        &["bogus"][..],
        &["--bogus"],
        &["--port", "80"],
        &["serve", "--bogus"],
        &["serve", "extra"],
        &["openapi", "--bogus"],
        &["migrate", "--bogus"],
        &["healthcheck", "extra"],
        &["seed"],
        &["seed", "--scale", "m"],
        &["seed", "--scale", "s", "--seed", "x"],
        &["seed", "--scale", "s", "--bogus", "1"],
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let output = run_in(dir.path(), args);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(stderr.lines().any(|line| line.starts_with("Usage: conduit")), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}: {}", text(&output.stdout));
        assert_nothing_created(dir.path(), args);
    }
}

#[test]
fn openapi_prints_the_document_and_starts_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = run_in(dir.path(), &["openapi"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).expect("a JSON document");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_nothing_created(dir.path(), &["openapi"]);
}
