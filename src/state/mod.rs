//! The gateway's own state: where discovered keys came from (see
//! [`crate::keys::provenance`]), the negative cache of key lookups, and what Autocrypt
//! taught each identity (see [`crate::keys::autocrypt`]).
//!
//! It lives in SQLite (`state_dir/state.sqlite3`, WAL, every change one transaction,
//! synced before it is acknowledged) or, with `[state] url = "postgres://…"`, in a
//! PostgreSQL database several gateway instances share. Both backends run the same
//! SQL through [`Rows`]; rows hold addresses, fingerprints, timestamps, provenance and
//! the public keys Autocrypt announced, never message content or secrets.
//!
//! A database that cannot be read is an error at startup, never silently replaced:
//! state is what makes a key believed, and quietly forgetting it would downgrade mail.
//! The public certificates themselves stay in the cert-d directory `sq` shares.

mod import;
mod postgres;
mod sqlite;

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `[state]` in the config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// `postgres://user:password@host:port/database`; absent: SQLite in `state_dir`.
    #[serde(default)]
    pub url: Option<String>,
}

/// The SQLite file's name in `state_dir`.
pub const SQLITE_FILE: &str = "state.sqlite3";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the state database {path} cannot be used: {message}. sealpost left it untouched: restore it from a backup, or move it aside to start with empty state (learned Autocrypt keys and where discovered keys came from are then forgotten)")]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot open the state database {place}: {message}")]
    Open { place: String, message: String },
    #[error("the state database {place} has schema version {found}, newer than this sealpost knows ({known}); run a newer sealpost")]
    TooNew {
        place: String,
        found: i64,
        known: i64,
    },
    #[error("state database {place}: {message}")]
    Query { place: String, message: String },
    #[error("cannot import {path} into the state database: {message}; fix or remove the file")]
    Import { path: PathBuf, message: String },
}

/// A value bound to a `$n` placeholder.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    Text(&'a str),
    Int(i64),
}

/// One transaction of either backend. Queries return text columns only (the schema
/// keeps documents as JSON text and times as `BIGINT`, selected as needed).
pub(crate) trait Rows {
    fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, StateError>;
    fn query_text(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Vec<String>>, StateError>;
}

/// Ordered migrations, applied at open in one transaction with the version table;
/// only appended to, never edited (an edited migration would not run again).
const MIGRATIONS: &[&str] = &[
    // 1: provenance per certificate, misses per source and address, Autocrypt peers
    // per identity, and which legacy TOML files were imported.
    "CREATE TABLE provenance (fingerprint TEXT PRIMARY KEY, data TEXT NOT NULL);
     CREATE TABLE key_misses (source TEXT NOT NULL, address TEXT NOT NULL, at BIGINT NOT NULL,
                              PRIMARY KEY (source, address));
     CREATE TABLE autocrypt_peers (identity TEXT NOT NULL, peer TEXT NOT NULL, data TEXT NOT NULL,
                                   PRIMARY KEY (identity, peer));
     CREATE TABLE imported (name TEXT PRIMARY KEY, at BIGINT NOT NULL);",
];

enum Backend {
    Sqlite(sqlite::Sqlite),
    Postgres(Box<postgres::Postgres>),
}

/// The open state (SQLite or PostgreSQL).
pub struct State {
    backend: Backend,
}

impl State {
    /// Opens the state the config names, applies migrations and imports the legacy
    /// TOML files of `state_dir` (once; they are then renamed `*.imported`).
    pub fn open(config: &StateConfig, state_dir: &Path) -> Result<State, StateError> {
        let state = match &config.url {
            Some(url) => State {
                backend: Backend::Postgres(Box::new(postgres::Postgres::connect(url)?)),
            },
            None => State::open_sqlite(&state_dir.join(SQLITE_FILE))?,
        };
        state.migrate()?;
        import::legacy_files(&state, state_dir)?;
        Ok(state)
    }

    /// Opens (or creates) a SQLite state file, without importing anything.
    pub fn open_sqlite(path: &Path) -> Result<State, StateError> {
        let state = State {
            backend: Backend::Sqlite(sqlite::Sqlite::open(path)?),
        };
        state.migrate()?;
        Ok(state)
    }

    /// What `sealpost check` prints: the backend and where (password redacted).
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Sqlite(s) => format!("SQLite {}", s.path().display()),
            Backend::Postgres(p) => format!("PostgreSQL {}", p.place()),
        }
    }

    fn place(&self) -> String {
        match &self.backend {
            Backend::Sqlite(s) => s.path().display().to_string(),
            Backend::Postgres(p) => p.place().to_string(),
        }
    }

    /// Runs `f` in one transaction: committed (and, for SQLite, synced) when `f`
    /// returns `Ok`, rolled back otherwise.
    pub(crate) fn tx<R: Send>(
        &self,
        f: impl FnOnce(&mut dyn Rows) -> Result<R, StateError> + Send,
    ) -> Result<R, StateError> {
        match &self.backend {
            Backend::Sqlite(s) => s.tx(f),
            Backend::Postgres(p) => p.tx(f),
        }
    }

    fn migrate(&self) -> Result<(), StateError> {
        let place = self.place();
        self.tx(|rows| {
            rows.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)",
                &[],
            )?;
            let found = rows
                .query_text("SELECT CAST(MAX(version) AS TEXT) FROM schema_version", &[])?
                .into_iter()
                .next()
                .and_then(|r| r.into_iter().next())
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0);
            let known = MIGRATIONS.len() as i64;
            if found > known {
                return Err(StateError::TooNew {
                    place,
                    found,
                    known,
                });
            }
            for (i, m) in MIGRATIONS.iter().enumerate().skip(found as usize) {
                for statement in m.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                    rows.execute(statement, &[])?;
                }
                rows.execute(
                    "INSERT INTO schema_version (version) VALUES ($1)",
                    &[Arg::Int(i as i64 + 1)],
                )?;
            }
            Ok(())
        })
    }
}

/// Checks `[state] url`: the message names what is accepted.
pub fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(format!(
            "{:?} is not accepted: give a PostgreSQL URL (postgres://user@host/database), or leave [state] out for SQLite in state_dir",
            redact_url(url)
        ));
    }
    url.parse::<::postgres::Config>()
        .map(|_| ())
        .map_err(|e| format!("{} is not a valid PostgreSQL URL: {e}", redact_url(url)))
}

/// The URL with any password replaced by `***`, for messages and `check`.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r),
        None => (String::new(), url),
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => format!("{user}@{host}"),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let q: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{path}?{}", q.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}{authority}{tail}")
}

mod records;

#[cfg(test)]
mod tests;
