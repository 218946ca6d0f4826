//! The SQLite backend: one connection, WAL, `synchronous = FULL`, and each change an
//! immediate transaction, so what a caller was told is stored survives a crash or a
//! power cut. A file SQLite cannot read is reported, never replaced.

use super::{Arg, Rows, StateError};
use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a statement waits for another connection (another instance sharing
/// `state_dir`) to release the file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) struct Sqlite {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Arg::Text(s) => s.to_sql(),
            Arg::Int(i) => i.to_sql(),
        }
    }
}

/// SQLite numbers placeholders `?n`; the shared SQL writes PostgreSQL's `$n`.
fn dialect(sql: &str) -> String {
    sql.replace('$', "?")
}

impl Sqlite {
    pub(super) fn open(path: &Path) -> Result<Sqlite, StateError> {
        let open_err = |message: String| StateError::Open {
            place: path.display().to_string(),
            message,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        }
        // Created owner-only: the state names who writes to whom.
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path);
            match created {
                Ok(_) => {}
                // Another instance sharing state_dir created it in the meantime.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(open_err(e.to_string())),
            }
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| classify(path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| classify(path, e))?;
        // Reading the header first: a file that is not a database fails here, before
        // anything could be written to it.
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| classify(path, e))?;
        if check != "ok" {
            return Err(StateError::Corrupt {
                path: path.to_path_buf(),
                message: format!("integrity check failed ({check})"),
            });
        }
        // Switching to WAL needs the file to itself, and SQLite answers SQLITE_BUSY at
        // once instead of waiting (no busy handler there) while another instance opens
        // it: retried within the busy timeout. Once in WAL the switch takes no lock.
        let deadline = Instant::now() + BUSY_TIMEOUT;
        let mode: String = loop {
            match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)) {
                Err(e)
                    if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                done => break done.map_err(|e| classify(path, e))?,
            }
        };
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_err(format!(
                "cannot switch to WAL (journal mode {mode})"
            )));
        }
        conn.execute_batch("PRAGMA synchronous = FULL;")
            .map_err(|e| classify(path, e))?;
        Ok(Sqlite {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn tx<R>(
        &self,
        f: impl FnOnce(&mut dyn Rows) -> Result<R, StateError>,
    ) -> Result<R, StateError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| classify(&self.path, e))?;
        let mut rows = SqliteRows {
            tx: &tx,
            path: &self.path,
        };
        let out = f(&mut rows)?;
        tx.commit().map_err(|e| classify(&self.path, e))?;
        Ok(out)
    }
}

struct SqliteRows<'a> {
    tx: &'a rusqlite::Transaction<'a>,
    path: &'a Path,
}

impl Rows for SqliteRows<'_> {
    fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, StateError> {
        let mut stmt = self
            .tx
            .prepare_cached(&dialect(sql))
            .map_err(|e| classify(self.path, e))?;
        stmt.execute(rusqlite::params_from_iter(args.iter()))
            .map(|n| n as u64)
            .map_err(|e| classify(self.path, e))
    }

    fn query_text(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Vec<String>>, StateError> {
        let mut stmt = self
            .tx
            .prepare_cached(&dialect(sql))
            .map_err(|e| classify(self.path, e))?;
        let n = stmt.column_count();
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                (0..n)
                    .map(|i| r.get::<_, Option<String>>(i).map(Option::unwrap_or_default))
                    .collect::<rusqlite::Result<Vec<String>>>()
            })
            .map_err(|e| classify(self.path, e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| classify(self.path, e))
    }
}

/// A file that is not a database, or a damaged one, is [`StateError::Corrupt`];
/// anything else (locked, read-only, disk full) says what SQLite said.
fn classify(path: &Path, e: rusqlite::Error) -> StateError {
    let corrupt = matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    );
    if corrupt {
        StateError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    } else {
        StateError::Query {
            place: path.display().to_string(),
            message: e.to_string(),
        }
    }
}
