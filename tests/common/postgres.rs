//! A PostgreSQL server of its own for a test, from Debian's `postgresql` package
//! (`scripts/deps.sh test` installs it): `initdb` into a temporary directory, then
//! `postgres` on 127.0.0.1 and a free port, its socket in that directory. As root the
//! server runs as the package's `postgres` user (it refuses to run as root); otherwise
//! as the user running the tests. Stopped (fast shutdown) when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::net::free_port;

pub struct Postgres {
    pub port: u16,
    /// Where the cluster lives (also the socket directory).
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    log_path: PathBuf,
}

/// The directory holding `initdb` and `postgres`; a missing one fails the test loudly.
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists() && b.join("postgres").exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("PostgreSQL's initdb was not found under /usr/lib/postgresql/<version>/bin: run scripts/deps.sh test (it installs the postgresql package)")
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `program args…`, as the `postgres` user when running as root.
fn command(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--reset-env",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = super::tempdir();
        if is_root() {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(
                ok,
                "chown of the PostgreSQL directory to the postgres user failed"
            );
        }
        let data = dir.path().join("data");
        let out = command(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "sealpost", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let log_path = dir.path().join("postgres.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = command(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(dir.path())
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        let mut pg = Postgres {
            port,
            dir,
            child: Some(child),
            log_path,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = pg.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("postgres exited early ({s}):\n{}", pg.log());
            }
            // Ready when it answers a query, not merely when the port is open.
            if pg.ready() {
                return pg;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start:\n{}",
                pg.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn ready(&self) -> bool {
        let psql = bin_dir().join("psql");
        let cmd = if psql.exists() {
            Command::new(psql)
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", "sealpost", "-d", "postgres", "-c", "SELECT 1"])
                .output()
        } else {
            Command::new(bin_dir().join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .output()
        };
        cmd.map(|o| o.status.success()).unwrap_or(false)
    }

    /// A URL for the `sealpost` superuser; `password` goes into it (trust auth
    /// ignores it), so a test can check it is never printed.
    pub fn url(&self, password: &str) -> String {
        format!(
            "postgres://sealpost:{password}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGINT: PostgreSQL's fast shutdown.
            let _ = Command::new("kill")
                .arg("-INT")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
