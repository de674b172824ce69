//! A throwaway PostgreSQL server per test: `initdb` into a temp dir with trust auth, started on a free port
//! on 127.0.0.1 with its socket in the temp dir, stopped (and the dir removed) on drop. Tests never touch a
//! PostgreSQL the machine already runs.
//!
//! The binaries are Debian's (`/usr/lib/postgresql/<version>/bin`, package `postgresql`), or whatever
//! `initdb` is on the PATH, or those in `$SWITCHYARD_PG_BIN`. Without them the test fails and says what to install; with
//! `SWITCHYARD_SKIP_POSTGRES=1` it is skipped with a note instead. PostgreSQL refuses to run as root, so as
//! root (CI containers) the server runs as the `postgres` user (or `nobody`) through `setpriv`.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use tempfile::TempDir;

pub struct PgServer {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// `(uid, gid)` to run the binaries as when we are root.
    run_as: Option<(u32, u32)>,
    // Last, so the directory goes after the server has stopped.
    dir: TempDir,
}

/// The server for a Postgres test, or `None` when `SWITCHYARD_SKIP_POSTGRES=1` says to skip it (after
/// printing why). Panics, saying what to install, when the binaries are missing.
pub async fn server() -> Option<PgServer> {
    if std::env::var("SWITCHYARD_SKIP_POSTGRES").as_deref() == Ok("1") {
        eprintln!("note: SWITCHYARD_SKIP_POSTGRES=1: skipping this PostgreSQL test");
        return None;
    }
    let Some(bin) = find_bin() else {
        panic!(
            "the PostgreSQL tests need PostgreSQL's server binaries (initdb, pg_ctl, postgres), looked for in \
             $SWITCHYARD_PG_BIN, else /usr/lib/postgresql/*/bin and the PATH. Install them (Debian/Ubuntu: `apt-get install \
             postgresql`; .ci/run does this), or set SWITCHYARD_SKIP_POSTGRES=1 to skip these tests"
        );
    };
    Some(PgServer::start(bin).await)
}

/// `SWITCHYARD_PG_BIN` if set (and only it), else the newest Debian version's bin directory, else the
/// directory of `initdb` on the PATH.
fn find_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SWITCHYARD_PG_BIN") {
        let dir = PathBuf::from(dir);
        return dir.join("initdb").is_file().then_some(dir);
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().split('.').next()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
}

/// Whom to run PostgreSQL as: ourselves, unless we are root.
fn run_as() -> Option<(u32, u32)> {
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
    if me != 0 {
        return None;
    }
    for user in ["postgres", "nobody"] {
        let id = |flag: &str| -> Option<u32> {
            let out = Command::new("id").args([flag, user]).output().ok()?;
            String::from_utf8_lossy(&out.stdout).trim().parse().ok().filter(|_| out.status.success())
        };
        if let (Some(uid), Some(gid)) = (id("-u"), id("-g")) {
            return Some((uid, gid));
        }
    }
    panic!("running as root, and neither a `postgres` nor a `nobody` user exists to run PostgreSQL as")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl PgServer {
    async fn start(bin: PathBuf) -> PgServer {
        let dir = tempfile::Builder::new().prefix("switchyard-pg-").tempdir().unwrap();
        let run_as = run_as();
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let data = dir.path().join("data");
        let mut server = PgServer { bin, data, port: 0, run_as, dir };
        let data_arg = server.data.display().to_string();
        server.run("initdb", &["-D", &data_arg, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"]);
        // The port is free when we look; another process could take it before the server binds, so try
        // again on a new one if the start fails.
        let mut last = String::new();
        for _ in 0..3 {
            server.port = free_port();
            // Durability off and small buffers: the data is thrown away, and several servers run at once.
            let opts = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
                 -c full_page_writes=off -c max_connections=50 -c shared_buffers=16MB",
                server.port,
                server.dir.path().display()
            );
            let log = server.dir.path().join("server.log").display().to_string();
            let out = server.try_run("pg_ctl", &["-D", &data_arg, "-l", &log, "-o", &opts, "-w", "-t", "60", "start"]);
            if out.status.success() {
                server.wait_until_accepting().await;
                return server;
            }
            last = format!(
                "{}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        panic!("PostgreSQL did not start:\n{last}");
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = match self.run_as {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}")).arg(format!("--regid={gid}")).arg("--clear-groups").arg(path);
                c
            }
            None => Command::new(path),
        };
        // Our working directory may not be readable by the user PostgreSQL runs as.
        cmd.current_dir(self.dir.path()).env("LC_ALL", "C");
        cmd
    }

    fn try_run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program).args(args).output().unwrap_or_else(|e| panic!("running {program}: {e}"))
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self.try_run(program, args);
        assert!(out.status.success(), "{program} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }

    async fn wait_until_accepting(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match PgPoolOptions::new().max_connections(1).connect(&self.url("postgres")).await {
                Ok(pool) => return pool.close().await,
                Err(e) if Instant::now() > deadline => panic!("PostgreSQL does not accept connections: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// A URL for `database` on this server (trust auth: no password).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub async fn create_database(&self, name: &str) -> String {
        let pool = PgPoolOptions::new().max_connections(1).connect(&self.url("postgres")).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&pool).await.unwrap();
        pool.close().await;
        self.url(name)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Immediate: the data is thrown away, so there is nothing to flush.
        let data = self.data.display().to_string();
        let _ = self.command("pg_ctl").args(["-D", &data, "-m", "immediate", "-w", "-t", "30", "stop"]).output();
    }
}
