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
        let log_path = dir.path().join("postgres.log");
        let mut pg = Postgres {
            port: 0,
            dir,
            child: None,
            log_path,
        };
        // PostgreSQL refuses port 0 (its `port` is 1 to 65535): a free_port() pick, picked
        // again (three tries) when postgres exits because another process took it first.
        let mut last = String::new();
        for _attempt in 0..3 {
            pg.port = free_port();
            let log = std::fs::File::create(&pg.log_path).unwrap();
            let child = command(&bin.join("postgres"))
                .arg("-D")
                .arg(&data)
                .arg("-k")
                .arg(pg.dir.path())
                .args(["-h", "127.0.0.1", "-p", &pg.port.to_string()])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start postgres");
            pg.child = Some(child);
            match pg.wait_ready() {
                Ok(()) => return pg,
                Err(status) => {
                    pg.child = None;
                    last = format!("postgres exited early ({status}):\n{}", pg.log());
                }
            }
        }
        panic!("postgres did not start in three tries; the last: {last}");
    }

    /// Waits until the server answers a query (not merely until the port is open);
    /// `Err` with its exit status if it stopped first. Panics after 30 s.
    fn wait_ready(&mut self) -> Result<(), std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(s);
            }
            if self.ready() {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the server answers; each try gives up after 3 s, so that another
    /// process that took the port and never answers cannot stall the start.
    fn ready(&self) -> bool {
        let psql = bin_dir().join("psql");
        let cmd = if psql.exists() {
            Command::new(psql)
                .env("PGCONNECT_TIMEOUT", "3")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", "sealpost", "-d", "postgres", "-c", "SELECT 1"])
                .output()
        } else {
            Command::new(bin_dir().join("pg_isready"))
                .args(["-t", "3", "-h", "127.0.0.1", "-p", &self.port.to_string()])
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
        // SIGINT: PostgreSQL's fast shutdown.
        super::child::stop(&mut self.child, "INT");
    }
}
