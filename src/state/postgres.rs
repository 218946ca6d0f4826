//! The PostgreSQL backend, for several gateway instances sharing one state.
//!
//! The synchronous `postgres` client drives a runtime of its own, which must not be
//! entered from a tokio worker; each transaction therefore runs on a short scoped
//! thread. Every transaction first takes one advisory lock, so the read-modify-write
//! updates of two instances happen one after the other and neither is lost.

use super::{redact_url, Arg, Rows, StateError};
use postgres::types::ToSql;
use postgres::{Client, NoTls};
use std::sync::Mutex;

/// `pg_advisory_xact_lock` key shared by every sealpost instance ("sealpost" state).
const LOCK_KEY: i64 = 0x5ea1_9057;

pub(super) struct Postgres {
    /// The URL as configured (may hold a password: never printed; see `place`).
    url: String,
    place: String,
    /// Always `Some` but while being dropped (see the `Drop` impl).
    client: Mutex<Option<Client>>,
}

impl Postgres {
    pub(super) fn connect(url: &str) -> Result<Postgres, StateError> {
        let place = redact_url(url);
        let client = on_own_thread(|| connect(url, &place))?;
        Ok(Postgres {
            url: url.to_string(),
            place,
            client: Mutex::new(Some(client)),
        })
    }

    pub(super) fn place(&self) -> &str {
        &self.place
    }

    pub(super) fn tx<R: Send>(
        &self,
        f: impl FnOnce(&mut dyn Rows) -> Result<R, StateError> + Send,
    ) -> Result<R, StateError> {
        on_own_thread(|| {
            let mut guard = self.client.lock().unwrap_or_else(|p| p.into_inner());
            // A restarted server closed the connection: open a new one.
            if guard.as_ref().is_none_or(Client::is_closed) {
                *guard = Some(connect(&self.url, &self.place)?);
            }
            let Some(client) = guard.as_mut() else {
                unreachable!("connected just above");
            };
            let err = |e: postgres::Error| query_err(&self.place, e);
            let mut tx = client.transaction().map_err(err)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
                .map_err(err)?;
            let out = f(&mut PgRows {
                tx: &mut tx,
                place: &self.place,
            })?;
            tx.commit().map_err(err)?;
            Ok(out)
        })
    }
}

impl Drop for Postgres {
    /// The client owns a runtime, which must not be dropped inside tokio's (a reload
    /// drops the old state from a task): drop it on a thread of its own.
    fn drop(&mut self) {
        let client = self.client.get_mut().ok().and_then(Option::take);
        if let Some(client) = client {
            on_own_thread(move || drop(client));
        }
    }
}

fn connect(url: &str, place: &str) -> Result<Client, StateError> {
    Client::connect(url, NoTls).map_err(|e| StateError::Open {
        place: place.to_string(),
        message: e.to_string(),
    })
}

fn query_err(place: &str, e: postgres::Error) -> StateError {
    StateError::Query {
        place: place.to_string(),
        message: e.to_string(),
    }
}

/// Runs `f` on a scoped thread outside any tokio runtime (see the module docs).
fn on_own_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

struct PgRows<'a, 'b> {
    tx: &'a mut postgres::Transaction<'b>,
    place: &'a str,
}

fn bind<'a>(args: &'a [Arg<'a>]) -> Vec<Box<dyn ToSql + Sync + 'a>> {
    args.iter()
        .map(|a| match *a {
            Arg::Text(s) => Box::new(s) as Box<dyn ToSql + Sync>,
            Arg::Int(i) => Box::new(i) as Box<dyn ToSql + Sync>,
        })
        .collect()
}

impl Rows for PgRows<'_, '_> {
    fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, StateError> {
        let owned = bind(args);
        let refs: Vec<&(dyn ToSql + Sync)> = owned.iter().map(|b| b.as_ref()).collect();
        self.tx
            .execute(sql, &refs)
            .map_err(|e| query_err(self.place, e))
    }

    fn query_text(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Vec<String>>, StateError> {
        let owned = bind(args);
        let refs: Vec<&(dyn ToSql + Sync)> = owned.iter().map(|b| b.as_ref()).collect();
        let rows = self
            .tx
            .query(sql, &refs)
            .map_err(|e| query_err(self.place, e))?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| {
                        r.try_get::<_, Option<String>>(i)
                            .map(Option::unwrap_or_default)
                            .map_err(|e| query_err(self.place, e))
                    })
                    .collect()
            })
            .collect()
    }
}
