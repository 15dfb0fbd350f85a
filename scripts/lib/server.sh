# shellcheck shell=bash
# Starts and stops a Conduit server on a fresh, empty database, for the scripts
# that test a running server: scripts/conformance, scripts/fuzz and
# scripts/docs-browser. Sourced, never run; the sourcing script runs with
# `set -euo pipefail` and sets, before sourcing:
#
#   server_tool   short name for log lines, file and database names
#                 (conformance, fuzz, docs-browser)
#
# Then, in this order:
#
#   server_bin_from_env        validates CONDUIT_BIN, when set, into conduit_bin
#   server_build_bin PROFILE   when conduit_bin is still empty, builds it with
#                              `cargo build --profile PROFILE --locked --bin conduit`
#   server_install_traps       on exit: stop the server and any leftover embedded
#                              PostgreSQL, drop the fresh database, remove the
#                              temporary directory (a script may define
#                              server_on_cleanup to run first, and set
#                              server_final_message to be logged last)
#   server_start TIMEOUT       fresh database (see below), free port, random
#                              JWT_SECRET, rate limits too high to be reached
#                              (see below); waits up to TIMEOUT seconds for
#                              GET /health/ready; sets port (unless already
#                              set) and base_url
#
# The database: with DATABASE_URL set, a fresh database is created on that
# server and dropped afterwards; with it unset, the server runs its own embedded
# PostgreSQL in a fresh temporary data directory removed afterwards. The
# server's output goes to target/<server_tool>-server.log (server_log).

: "${server_tool:?set server_tool before sourcing scripts/lib/server.sh}"

caller_dir=$PWD
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Resolve a path given relative to the caller's directory.
abspath() {
  case $1 in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s\n' "$caller_dir/$1" ;;
  esac
}

log() { printf '%s: %s\n' "$server_tool" "$*"; }
die() {
  printf '%s: ERROR: %s\n' "$server_tool" "$*" >&2
  exit 1
}

# --- state (also read by the sourcing script) ---------------------------------
conduit_bin=""
server_pid=""
run_dir=""
admin_url=""
fresh_db=""
port=""
base_url=""
server_final_message=""
server_log="$root/target/$server_tool-server.log"

# --- server binary ------------------------------------------------------------
server_bin_from_env() {
  [[ -n ${CONDUIT_BIN:-} ]] || return 0
  conduit_bin=$(abspath "$CONDUIT_BIN")
  [[ -f $conduit_bin && -x $conduit_bin ]] || die "CONDUIT_BIN=$CONDUIT_BIN is not an executable file"
}

server_build_bin() {
  [[ -z $conduit_bin ]] || return 0
  local profile=$1 profile_dir target_dir
  log "building the server (cargo build --profile $profile --locked --bin conduit)"
  # Like scripts/test: checked queries use the committed .sqlx metadata.
  (cd "$root" && SQLX_OFFLINE=${SQLX_OFFLINE:-true} cargo build --profile "$profile" --locked --bin conduit)
  case $profile in
    dev | test) profile_dir=debug ;;
    release | bench) profile_dir=release ;;
    *) profile_dir=$profile ;;
  esac
  target_dir=${CARGO_TARGET_DIR:-target}
  [[ $target_dir == /* ]] || target_dir="$root/$target_dir" # cargo ran in $root
  conduit_bin="$target_dir/$profile_dir/conduit"
  [[ -x $conduit_bin ]] || die "$conduit_bin was not produced by the build"
}

# --- cleanup ------------------------------------------------------------------
server_stop() {
  [[ -n $server_pid ]] || return 0
  if kill -0 "$server_pid" 2>/dev/null; then
    log "stopping the server (SIGTERM to pid $server_pid)"
    kill -TERM "$server_pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 300; i++)); do # up to 30 s
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$server_pid" 2>/dev/null; then
      log "the server did not stop within 30 s; sending SIGKILL"
      kill -KILL "$server_pid" 2>/dev/null || true
    fi
  fi
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

# If the server could not stop its embedded PostgreSQL, stop it ourselves (only
# postmasters whose data directory lies inside our own temporary directory).
server_stop_leftover_postgres() {
  [[ -n $run_dir && -d $run_dir ]] || return 0
  local pidfile pg_pid i
  while IFS= read -r pidfile; do
    pg_pid=$(head -n 1 "$pidfile" 2>/dev/null || true)
    [[ $pg_pid =~ ^[0-9]+$ ]] || continue
    kill -0 "$pg_pid" 2>/dev/null || continue
    log "stopping leftover embedded PostgreSQL (pid $pg_pid)"
    kill -INT "$pg_pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do # up to 10 s
      kill -0 "$pg_pid" 2>/dev/null || break
      sleep 0.1
    done
  done < <(find "$run_dir" -name postmaster.pid -type f 2>/dev/null)
}

server_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if declare -F server_on_cleanup >/dev/null; then
    server_on_cleanup || true
  fi
  server_stop
  server_stop_leftover_postgres
  if [[ -n $fresh_db ]]; then
    log "dropping database $fresh_db"
    psql "$admin_url" -X -q -v ON_ERROR_STOP=1 \
      -c "DROP DATABASE IF EXISTS \"$fresh_db\" WITH (FORCE)" >/dev/null ||
      log "WARNING: could not drop database $fresh_db"
  fi
  if [[ -n $run_dir && -d $run_dir ]]; then
    rm -rf -- "$run_dir" || log "WARNING: could not remove $run_dir"
  fi
  [[ -z $server_final_message ]] || log "$server_final_message"
  exit "$rc"
}

server_install_traps() {
  trap server_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# --- helpers ------------------------------------------------------------------
# A free TCP port on 127.0.0.1.
server_free_port() {
  if command -v node >/dev/null; then
    node -e '
      const srv = require("net").createServer();
      srv.listen(0, "127.0.0.1", () => { console.log(srv.address().port); srv.close(); });
    '
  elif command -v python3 >/dev/null; then
    python3 -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
  else
    die "node or python3 is needed to find a free port"
  fi
}

# 48 random hex digits.
server_random_hex() {
  if command -v openssl >/dev/null; then
    openssl rand -hex 24
  elif command -v node >/dev/null; then
    node -e 'console.log(require("crypto").randomBytes(24).toString("hex"))'
  else
    python3 -c 'import secrets; print(secrets.token_hex(24))'
  fi
}

# True once GET /health/ready answers 200.
server_is_ready() {
  if command -v curl >/dev/null; then
    curl -fsS -o /dev/null --max-time 2 "$base_url/health/ready" 2>/dev/null
  else
    node -e '
      const req = require("http").get(process.argv[1], { timeout: 2000 }, (res) => {
        res.resume();
        process.exit(res.statusCode === 200 ? 0 : 1);
      });
      req.on("timeout", () => req.destroy());
      req.on("error", () => process.exit(1));
    ' "$base_url/health/ready"
  fi
}

# --- fresh database and server ------------------------------------------------
server_start() {
  local ready_timeout=$1
  [[ $ready_timeout =~ ^[0-9]+$ ]] || die "the readiness timeout must be a number of seconds (got '$ready_timeout')"

  # The server runs in its own temporary directory, so that a developer's .env
  # in the project (which the server would load) cannot point it at another
  # database.
  run_dir=$(mktemp -d "${TMPDIR:-/tmp}/conduit-$server_tool.XXXXXXXX")
  # The server may run its embedded PostgreSQL as the `postgres` user when
  # started as root; that user must be able to reach the data directory.
  chmod 755 "$run_dir"

  local server_env=()
  if [[ -n ${DATABASE_URL:-} ]]; then
    command -v psql >/dev/null || die "psql is needed to create a fresh database on DATABASE_URL's server"
    # Split DATABASE_URL into scheme://authority, /database and ?query.
    local url=$DATABASE_URL query="" scheme authority db_name
    if [[ $url == *\?* ]]; then
      query="?${url#*\?}"
      url=${url%%\?*}
    fi
    [[ $url == *://* ]] || die "DATABASE_URL is not a URL like postgres://user@host:5432/db"
    scheme=${url%%://*}
    authority=${url#*://}
    authority=${authority%%/*}
    # Connect to the server's maintenance database to create and drop ours.
    admin_url="$scheme://$authority/postgres$query"
    db_name="conduit_${server_tool//-/_}_$(date +%Y%m%d%H%M%S)_$$"
    log "creating fresh database $db_name on $scheme://${authority##*@}"
    PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-10} psql "$admin_url" -X -q -v ON_ERROR_STOP=1 \
      -c "CREATE DATABASE \"$db_name\"" >/dev/null ||
      die "could not create database $db_name (is the server at DATABASE_URL running?)"
    fresh_db=$db_name
    server_env+=("DATABASE_URL=$scheme://$authority/$db_name$query")
  else
    log "DATABASE_URL is unset: the server starts its own embedded PostgreSQL in $run_dir"
    server_env+=("CONDUIT_DATA_DIR=$run_dir")
  fi

  # A sourcing script that must know the port before the server starts (to
  # put it in the server's settings) sets `port` itself.
  [[ -n $port ]] || port=$(server_free_port)
  [[ $port =~ ^[0-9]+$ ]] || die "could not find a free port"
  local jwt_secret
  jwt_secret=$(server_random_hex)
  base_url="http://127.0.0.1:$port"

  mkdir -p "$root/target"
  : >"$server_log"

  # Every request of the suites comes from 127.0.0.1, the fuzzer's thousands of
  # registrations and logins among them: the limits stay on, so the limiter
  # sees every odd input the fuzzer sends, but are set far beyond any suite's
  # pace (tests/api/rate_limit.rs tests the limits themselves).
  # COMMON_PASSWORDS=allow: the official RealWorld suites register with
  # `password123`, which the common-password check refuses by default
  # (docs/api-decisions.md; tests/api/policy.rs tests the check itself).
  # LOGIN_THROTTLE=off: the fuzzer's failed logins from 127.0.0.1 would slow
  # every later login down (tests/api/rate_limit.rs tests the throttle).
  log "starting $conduit_bin on $base_url (log: ${server_log#"$root"/})"
  (
    cd "$run_dir" || exit 1
    # A database URL must come only from this script (DATABASE_URL is set above
    # or deliberately left unset); the rate limits stay in this server (no REDIS_URL).
    unset DATABASE_URL CONDUIT_DATA_DIR REDIS_URL
    exec env "${server_env[@]}" \
      BIND_ADDR="127.0.0.1:$port" \
      JWT_SECRET="$jwt_secret" \
      COMMON_PASSWORDS=allow \
      LOGIN_THROTTLE=off \
      RATE_LIMIT_ANONYMOUS=1000000/1m \
      RATE_LIMIT_USER=1000000/1m \
      RATE_LIMIT_LOGIN=1000000/1m \
      RATE_LIMIT_LOGIN_ACCOUNT=1000000/1m \
      RATE_LIMIT_REGISTER=1000000/1m \
      RUST_LOG="${RUST_LOG:-info}" \
      NO_COLOR=1 \
      "$conduit_bin"
  ) >>"$server_log" 2>&1 &
  server_pid=$!

  local deadline=$((SECONDS + ready_timeout)) status
  until server_is_ready; do
    if ! kill -0 "$server_pid" 2>/dev/null; then
      status=0
      wait "$server_pid" 2>/dev/null || status=$?
      server_pid=""
      printf '%s: ERROR: the server exited (status %s) before it was ready; last lines of %s:\n' \
        "$server_tool" "$status" "$server_log" >&2
      tail -n 40 "$server_log" >&2
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      printf '%s: ERROR: %s/health/ready did not answer 200 within %s s; last lines of %s:\n' \
        "$server_tool" "$base_url" "$ready_timeout" "$server_log" >&2
      tail -n 40 "$server_log" >&2
      exit 1
    fi
    sleep 0.5
  done
  log "server is ready"
}
