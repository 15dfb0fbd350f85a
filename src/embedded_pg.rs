//! The zero-configuration database: a private PostgreSQL cluster run from the
//! machine's installed server binaries.
//!
//! When `DATABASE_URL` is unset the server keeps a cluster in `<data dir>/pgdata`,
//! listening only on a Unix socket in `<data dir>/run`, starts it with `pg_ctl`,
//! and stops it on shutdown. A cluster left running or a stale lock file from a
//! crash is detected on the next start. PostgreSQL refuses to run as root, so as
//! root the cluster is owned and run by the `postgres` system user.

use std::{
    ffi::OsStr,
    os::unix::{
        fs::{OpenOptionsExt as _, PermissionsExt as _},
        process::CommandExt as _,
    },
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context as _, bail};
use sqlx::postgres::PgConnectOptions;
use tokio::process::Command;

/// The port number only names the socket file; nothing listens on TCP.
const PORT: u16 = 5432;
const SUPERUSER: &str = "postgres";
pub const DATABASE: &str = "conduit";
const REQUIRED: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// What the cluster logs of a statement's error: its one-line message only. The
/// DETAIL of a unique violation holds the value (`Key (lower(email))=(...)
/// already exists`), and the STATEMENT line the query: neither is written, so
/// `postgres.log` holds no email, username or text of a user.
const LOG_SETTINGS: &str = "log_error_verbosity = terse\nlog_min_error_statement = panic\n";

/// Why the embedded database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no PostgreSQL server binaries found (looked on PATH, in `pg_config --bindir` and in \
         /usr/lib/postgresql/*/bin): install PostgreSQL (e.g. `apt-get install postgresql`) \
         or set DATABASE_URL to an existing server"
    )]
    NoBinaries,
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// A running private cluster. Call [`EmbeddedPostgres::stop`] to shut it down.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    bin_dir: PathBuf,
    pgdata: PathBuf,
    socket_dir: PathBuf,
    run_as: Option<(u32, u32)>,
    /// Held for the life of the process: one server per data directory.
    _lock: std::fs::File,
}

impl EmbeddedPostgres {
    /// Initialises the cluster in `root` if needed, starts it and makes sure the
    /// `conduit` database exists.
    pub async fn start(root: &Path) -> Result<Self, EmbeddedError> {
        let bin_dir = find_bin_dir().ok_or(EmbeddedError::NoBinaries)?;
        let run_as = cluster_owner()?;
        std::fs::create_dir_all(root).with_context(|| format!("creating data directory {}", root.display()))?;
        let root = root.canonicalize().with_context(|| format!("resolving {}", root.display()))?;
        let lock = lock_data_dir(&root)?;
        if let Some(owner) = run_as {
            check_reachable(&root, owner)?;
        }
        let this = Self { bin_dir, pgdata: root.join("pgdata"), socket_dir: root.join("run"), run_as, _lock: lock };
        this.prepare_dirs()?;
        if !this.pgdata.join("PG_VERSION").exists() {
            this.initdb().await?;
        }
        this.write_settings()?;
        this.clear_leftovers().await?;
        this.pg_ctl(&["start", "-w", "-t", "60", "-l"], Some(&root.join("postgres.log"))).await?;
        if let Err(err) = this.ensure_database().await {
            // Leave nothing running behind a failed start.
            let _ = this.pg_ctl(&["stop", "-w", "-t", "60", "-m", "fast"], None).await;
            return Err(err.into());
        }
        tracing::info!(pgdata = %this.pgdata.display(), bin_dir = %this.bin_dir.display(), "embedded PostgreSQL started");
        Ok(this)
    }

    /// Connection options for the `conduit` database over the private socket.
    pub fn connect_options(&self) -> PgConnectOptions {
        self.connect_options_for(DATABASE)
    }

    /// Connection options for any database of the cluster.
    pub fn connect_options_for(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new().socket(&self.socket_dir).port(PORT).username(SUPERUSER).database(database)
    }

    /// The cluster's data directory (`<data dir>/pgdata`).
    pub fn data_dir(&self) -> &Path {
        &self.pgdata
    }

    /// Runs `pg_ctl` on the cluster with `args` (`stop -m fast -w`, `start -w`,
    /// `restart -w`, ...), as the cluster's owner; a start logs to the same
    /// `postgres.log`. For tools and tests that stop and start the cluster
    /// under a running server.
    pub async fn control(&self, args: &[&str]) -> anyhow::Result<()> {
        let log = self.pgdata.parent().map(|root| root.join("postgres.log"));
        match args.first() {
            Some(&("start" | "restart")) => {
                let mut all = args.to_vec();
                all.push("-l");
                self.pg_ctl(&all, log.as_deref()).await
            }
            _ => self.pg_ctl(args, None).await,
        }
    }

    /// Stops the cluster, letting open transactions roll back ("fast" mode).
    pub async fn stop(self) -> anyhow::Result<()> {
        self.pg_ctl(&["stop", "-w", "-t", "60", "-m", "fast"], None).await?;
        tracing::info!("embedded PostgreSQL stopped");
        Ok(())
    }

    fn prepare_dirs(&self) -> anyhow::Result<()> {
        for dir in [&self.pgdata, &self.socket_dir] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("restricting {}", dir.display()))?;
            self.chown(dir)?;
        }
        Ok(())
    }

    fn chown(&self, path: &Path) -> anyhow::Result<()> {
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("handing {} to the postgres user", path.display()))?;
        }
        Ok(())
    }

    async fn initdb(&self) -> anyhow::Result<()> {
        // A directory without PG_VERSION is the remains of an interrupted initdb.
        if std::fs::read_dir(&self.pgdata)?.next().is_some() {
            std::fs::remove_dir_all(&self.pgdata)?;
            self.prepare_dirs()?;
        }
        // A UTF-8 locale, so that `lower()` (case-insensitive usernames and emails)
        // folds every script, not only ASCII; `C.UTF-8` keeps byte-order sorting.
        let pgdata = self.pgdata.as_os_str();
        let args = |locale: &'static str| -> [&OsStr; 7] {
            [
                "-D".as_ref(),
                pgdata,
                "-U".as_ref(),
                SUPERUSER.as_ref(),
                "--auth=trust".as_ref(),
                "--encoding=UTF8".as_ref(),
                locale.as_ref(),
            ]
        };
        if let Err(err) = self.run("initdb", &args("--locale=C.UTF-8")).await {
            if !err.to_string().contains("locale") {
                return Err(err.context("initdb"));
            }
            tracing::warn!(error = %err, "no C.UTF-8 locale: case-insensitive matching will fold ASCII only");
            std::fs::remove_dir_all(&self.pgdata)?;
            self.prepare_dirs()?;
            self.run("initdb", &args("--no-locale")).await.context("initdb")?;
        }
        Ok(())
    }

    /// The cluster listens only on its own socket, and logs no personal data
    /// ([`LOG_SETTINGS`]); rewritten at every start so the data directory can be
    /// moved.
    fn write_settings(&self) -> anyhow::Result<()> {
        let conf = self.pgdata.join("conduit.conf");
        let socket = self.socket_dir.to_str().context("socket directory path is not UTF-8")?;
        std::fs::write(
            &conf,
            format!(
                "# Written by Conduit at every start.\nlisten_addresses = ''\nport = {PORT}\nunix_socket_directories = '{}'\nunix_socket_permissions = 0700\n{LOG_SETTINGS}",
                socket.replace('\'', "''")
            ),
        )?;
        self.chown(&conf)?;
        let main = self.pgdata.join("postgresql.conf");
        let text = std::fs::read_to_string(&main).context("reading postgresql.conf")?;
        if !text.contains("include_if_exists = 'conduit.conf'") {
            std::fs::write(&main, format!("{text}\ninclude_if_exists = 'conduit.conf'\n"))?;
        }
        Ok(())
    }

    /// Handles what a crash leaves behind: a cluster still running from a previous
    /// server process is stopped; a lock file whose process is gone is removed.
    async fn clear_leftovers(&self) -> anyhow::Result<()> {
        let pid_file = self.pgdata.join("postmaster.pid");
        let Ok(contents) = std::fs::read_to_string(&pid_file) else { return Ok(()) };
        let pid = contents.lines().next().and_then(|l| l.trim().parse::<i32>().ok());
        let alive = pid.is_some_and(|pid| {
            // EPERM still means the process exists.
            !matches!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None), Err(nix::errno::Errno::ESRCH))
        });
        if alive {
            // A live postmaster of this cluster has the data directory as its cwd;
            // any other live process merely reuses the pid of a dead one.
            let cwd = std::fs::read_link(format!("/proc/{}/cwd", pid.unwrap_or_default()));
            match cwd {
                Ok(cwd) if cwd == self.pgdata => {
                    tracing::warn!(?pid, "embedded PostgreSQL left running by an earlier process: restarting it");
                    return self.pg_ctl(&["stop", "-w", "-t", "60", "-m", "fast"], None).await;
                }
                Ok(_) => {}
                Err(err) => bail!(
                    "{} names the live process {pid:?}, which cannot be checked ({err}); if no PostgreSQL \
                     runs on {}, delete that file",
                    pid_file.display(),
                    self.pgdata.display()
                ),
            }
        }
        tracing::warn!(?pid, "removing stale PostgreSQL lock file");
        std::fs::remove_file(&pid_file).context("removing stale postmaster.pid")?;
        for entry in std::fs::read_dir(&self.socket_dir)?.flatten() {
            if entry.file_name().to_string_lossy().ends_with(".lock") {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    async fn pg_ctl(&self, args: &[&str], log: Option<&Path>) -> anyhow::Result<()> {
        let mut all: Vec<&OsStr> = vec!["-D".as_ref(), self.pgdata.as_os_str()];
        all.extend(args.iter().map(AsRef::<OsStr>::as_ref));
        if let Some(log) = log {
            // Readable by its owner only, whatever mode an older version left it with.
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(log)
                .with_context(|| format!("creating {}", log.display()))?;
            std::fs::set_permissions(log, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("restricting {}", log.display()))?;
            self.chown(log)?;
            all.push(log.as_os_str());
        }
        self.run("pg_ctl", &all).await.with_context(|| format!("pg_ctl {}", args.first().unwrap_or(&"")))
    }

    async fn run(&self, program: &str, args: &[&OsStr]) -> anyhow::Result<()> {
        let mut cmd = std::process::Command::new(self.bin_dir.join(program));
        cmd.args(args).stdin(Stdio::null()).env("LC_ALL", "C");
        if let Some((uid, gid)) = self.run_as {
            // std drops supplementary groups itself when root changes uid.
            cmd.uid(uid).gid(gid);
        }
        let output = Command::from(cmd).output().await.with_context(|| format!("running {program}"))?;
        if !output.status.success() {
            bail!(
                "{program} failed ({}): {} | {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                String::from_utf8_lossy(&output.stdout).trim()
            );
        }
        Ok(())
    }

    async fn ensure_database(&self) -> anyhow::Result<()> {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect_with(&self.connect_options_for("postgres"))
            .await
            .context("connecting to the embedded cluster")?;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(DATABASE)
            .fetch_one(&mut conn)
            .await?;
        if !exists {
            sqlx::query("CREATE DATABASE conduit").execute(&mut conn).await.context("creating database")?;
        }
        conn.close().await?;
        Ok(())
    }
}

/// Takes `<root>/conduit.lock`, so that a second server cannot take over (and
/// then stop) the cluster of one that is running.
fn lock_data_dir(root: &Path) -> anyhow::Result<std::fs::File> {
    let path = root.join("conduit.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            bail!("another Conduit server is using {}: stop it, or set CONDUIT_DATA_DIR", root.display())
        }
        Err(std::fs::TryLockError::Error(err)) => Err(err).with_context(|| format!("locking {}", path.display())),
    }
}

/// The cluster's user must be able to reach the data directory through every
/// parent (a data directory under root's 0700 home is not).
fn check_reachable(root: &Path, (uid, gid): (u32, u32)) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    for dir in root.ancestors() {
        let meta = std::fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
        let mode = meta.mode();
        let searchable = if meta.uid() == uid {
            mode & 0o100 != 0
        } else if meta.gid() == gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !searchable {
            bail!(
                "the `postgres` user cannot reach {} because {} is not searchable by it: run \
                 `chmod o+x {}` or set CONDUIT_DATA_DIR to a directory it can reach (e.g. /var/lib/conduit)",
                root.display(),
                dir.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

/// As root, the uid and gid of the `postgres` user; otherwise the cluster runs as us.
fn cluster_owner() -> anyhow::Result<Option<(u32, u32)>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name(SUPERUSER)?.context(
        "PostgreSQL will not run as root and there is no `postgres` system user to run it as: \
         create one, run Conduit as another user, or set DATABASE_URL",
    )?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

/// The first directory holding all of initdb, pg_ctl and postgres: on PATH, then
/// `pg_config --bindir`, then the newest /usr/lib/postgresql/*/bin.
pub fn find_bin_dir() -> Option<PathBuf> {
    let complete = |dir: &Path| REQUIRED.iter().all(|bin| dir.join(bin).is_file());
    let on_path =
        std::env::var_os("PATH").map(|path| std::env::split_paths(&path).collect::<Vec<_>>()).unwrap_or_default();
    if let Some(dir) = on_path.into_iter().find(|dir| complete(dir)) {
        return Some(dir);
    }
    let from_pg_config = std::process::Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    if let Some(dir) = from_pg_config.filter(|dir| complete(dir)) {
        return Some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| complete(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir)
}
