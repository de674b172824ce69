//! A throwaway Redis server per test: `redis-server` (Debian's package `redis-server`) on a free port on
//! 127.0.0.1, keeping nothing on disk, its directory a temp dir; killed on drop. Tests never touch a Redis
//! the machine already runs. It can be stopped and started again on the same port, as an outage would.
//! Without the binary the test fails and says what to install; with `SWITCHYARD_SKIP_REDIS=1` it is skipped
//! with a note instead.

#![allow(dead_code)] // each test binary uses part of this module

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
}

/// The server for a Redis test, or `None` when `SWITCHYARD_SKIP_REDIS=1` says to skip it.
pub fn server() -> Option<RedisServer> {
    if std::env::var("SWITCHYARD_SKIP_REDIS").as_deref() == Ok("1") {
        eprintln!("note: SWITCHYARD_SKIP_REDIS=1: skipping this Redis test");
        return None;
    }
    if Command::new("redis-server").arg("--version").output().is_err() {
        panic!(
            "the Redis tests need redis-server on the PATH. Install it (Debian/Ubuntu: `apt-get install redis-server`; \
             .ci/run does this), or set SWITCHYARD_SKIP_REDIS=1 to skip these tests"
        );
    }
    let mut last = String::new();
    // The port is free when we look; another process could take it first, so try again on a new one.
    for _ in 0..3 {
        let mut s =
            RedisServer { child: None, port: free_port(), dir: tempfile::Builder::new().prefix("switchyard-redis-").tempdir().unwrap() };
        match s.try_start() {
            Ok(()) => return Some(s),
            Err(e) => last = e,
        }
    }
    panic!("redis-server did not start: {last}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl RedisServer {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn try_start(&mut self) -> Result<(), String> {
        let log = self.dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.ping() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!("exited with {status}: {}", std::fs::read_to_string(&log).unwrap_or_default()));
            }
            if Instant::now() > deadline {
                return Err(format!("no PONG within 20 s: {}", std::fs::read_to_string(&log).unwrap_or_default()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it answers PING (a plain RESP exchange, so this helper needs no client library).
    pub fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// Sends one inline command and returns the first line of the answer.
    pub fn command(&self, line: &str) -> String {
        use std::io::{BufRead, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        let mut answer = String::new();
        std::io::BufReader::new(s).read_line(&mut answer).unwrap();
        answer.trim_end().to_string()
    }

    /// Makes Redis hold every client's commands for `ms` (CLIENT PAUSE): to its clients an outage, but
    /// nothing it holds is lost, and the commands held run when it ends.
    pub fn pause(&self, ms: u64) {
        assert_eq!(self.command(&format!("CLIENT PAUSE {ms}")), "+OK");
    }

    /// Kills the server, as a crash or an outage would (its data is gone: it keeps nothing on disk).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.try_start().unwrap();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
