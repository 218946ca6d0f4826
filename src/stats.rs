//! Counters for `sealpost status`: what the running process has done since it started.
//!
//! One process-wide [`Stats`] ([`global`]) so that the SMTP and IMAP code records a
//! decision with one line where it is made, without carrying a handle through every
//! layer. Only counts and log lines are kept: never addresses of correspondents, message
//! content or credentials (the last errors are the warnings already logged, which obey
//! the same rule).

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// How many of the last warnings and errors are kept.
const LAST_ERRORS: usize = 20;

/// Connections of one listener.
#[derive(Debug, Default)]
pub struct ListenerCounters {
    open: AtomicU64,
    total: AtomicU64,
}

impl ListenerCounters {
    /// Counts a new connection; it stays open until the guard is dropped.
    pub fn opened(self: &Arc<Self>) -> OpenConnection {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self.clone())
    }
}

/// A connection counted as open by [`ListenerCounters::opened`].
pub struct OpenConnection(Arc<ListenerCounters>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct AccountCounts {
    /// Messages relayed with at least one encrypted copy.
    pub encrypted: u64,
    /// Messages relayed with at least one plain copy (policy allowed it).
    pub sent_plain: u64,
    /// Messages refused by policy (nothing sent).
    pub refused: u64,
    /// IMAP views computed, by result: decrypted, undecryptable, too-large, plain.
    pub decryptions: BTreeMap<String, u64>,
    /// SEARCH and SORT commands that read encrypted mail's content.
    #[serde(default)]
    pub searches: u64,
    /// Encrypted messages those read from the search index, and decrypted for them (the
    /// index then holds them).
    #[serde(default)]
    pub search_from_index: u64,
    #[serde(default)]
    pub search_decrypted: u64,
    /// Encrypted messages indexed in the background (see `imap::fill`).
    #[serde(default)]
    pub indexed_in_background: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorEntry {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub level: String,
    pub target: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListenerSnapshot {
    pub addr: SocketAddr,
    pub what: String,
    pub open: u64,
    pub total: u64,
}

/// What `sealpost status` shows (and `--json` prints as it is).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub pid: u32,
    pub version: String,
    /// Seconds since the Unix epoch.
    pub started: u64,
    pub uptime_secs: u64,
    pub listeners: Vec<ListenerSnapshot>,
    pub connections_open: u64,
    pub connections_total: u64,
    pub accounts: BTreeMap<String, AccountCounts>,
    pub key_store_certificates: Option<usize>,
    pub config: String,
    pub reloads: u64,
    pub last_errors: Vec<ErrorEntry>,
}

#[derive(Default)]
pub struct Stats {
    started: Mutex<Option<SystemTime>>,
    listeners: Mutex<Vec<(SocketAddr, String, Arc<ListenerCounters>)>>,
    accounts: Mutex<BTreeMap<String, AccountCounts>>,
    errors: Mutex<VecDeque<ErrorEntry>>,
    reloads: AtomicU64,
}

/// The process's counters.
pub fn global() -> &'static Stats {
    static STATS: LazyLock<Stats> = LazyLock::new(Stats::default);
    &STATS
}

/// A poisoned lock only means a panic elsewhere; counters stay usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Stats {
    /// Marks the start of serving (uptime counts from here).
    pub fn start(&self) {
        lock(&self.started).get_or_insert_with(SystemTime::now);
    }

    /// Names a listener (by its bound address) for the report.
    pub fn register_listener(&self, addr: SocketAddr, what: &str) {
        let mut l = lock(&self.listeners);
        match l.iter_mut().find(|(a, _, _)| *a == addr) {
            Some(entry) => entry.1 = what.to_string(),
            None => l.push((addr, what.to_string(), Arc::default())),
        }
    }

    /// The counters of the listener bound to `addr`.
    pub fn listener(&self, addr: SocketAddr) -> Arc<ListenerCounters> {
        let mut l = lock(&self.listeners);
        if let Some((_, _, c)) = l.iter().find(|(a, _, _)| *a == addr) {
            return c.clone();
        }
        let c = Arc::<ListenerCounters>::default();
        l.push((addr, "listener".into(), c.clone()));
        c
    }

    fn account(&self, account: &str, f: impl FnOnce(&mut AccountCounts)) {
        f(lock(&self.accounts).entry(account.to_string()).or_default());
    }

    /// A message relayed upstream with `encrypted` and `plain` copies.
    pub fn relayed(&self, account: &str, encrypted: usize, plain: usize) {
        self.account(account, |a| {
            a.encrypted += u64::from(encrypted > 0);
            a.sent_plain += u64::from(plain > 0);
        });
    }

    /// A message refused by policy.
    pub fn refused(&self, account: &str) {
        self.account(account, |a| a.refused += 1);
    }

    /// The verdict of one IMAP view.
    pub fn view(&self, account: &str, kind: &crate::pgp::ViewKind) {
        use crate::pgp::ViewKind;
        let result = match kind {
            ViewKind::Plain => "plain",
            ViewKind::Decrypted(_) => "decrypted",
            ViewKind::Undecryptable(_) => "undecryptable",
            ViewKind::TooLarge { .. } => "too-large",
        };
        self.account(account, |a| {
            *a.decryptions.entry(result.to_string()).or_default() += 1
        });
    }

    /// A SEARCH or SORT through the view: messages read from the index, and to decrypt.
    pub fn searched(&self, account: &str, from_index: usize, decrypted: usize) {
        self.account(account, |a| {
            a.searches += 1;
            a.search_from_index += from_index as u64;
            a.search_decrypted += decrypted as u64;
        });
    }

    /// Encrypted messages the background filler indexed.
    pub fn indexed_in_background(&self, account: &str, messages: usize) {
        self.account(account, |a| a.indexed_in_background += messages as u64);
    }

    pub fn reloaded(&self) {
        self.reloads.fetch_add(1, Ordering::Relaxed);
    }

    fn record_error(&self, entry: ErrorEntry) {
        let mut e = lock(&self.errors);
        if e.len() == LAST_ERRORS {
            e.pop_front();
        }
        e.push_back(entry);
    }

    pub fn snapshot(&self, config: &str, key_store_certificates: Option<usize>) -> Snapshot {
        let now = SystemTime::now();
        let started = lock(&self.started).unwrap_or(now);
        let listeners: Vec<ListenerSnapshot> = lock(&self.listeners)
            .iter()
            .map(|(addr, what, c)| ListenerSnapshot {
                addr: *addr,
                what: what.clone(),
                open: c.open.load(Ordering::Relaxed),
                total: c.total.load(Ordering::Relaxed),
            })
            .collect();
        Snapshot {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started: epoch(started),
            uptime_secs: now.duration_since(started).map_or(0, |d| d.as_secs()),
            connections_open: listeners.iter().map(|l| l.open).sum(),
            connections_total: listeners.iter().map(|l| l.total).sum(),
            listeners,
            accounts: lock(&self.accounts).clone(),
            key_store_certificates,
            config: config.to_string(),
            reloads: self.reloads.load(Ordering::Relaxed),
            last_errors: lock(&self.errors).iter().cloned().collect(),
        }
    }
}

/// A `tracing` layer that keeps the last warnings and errors for `sealpost status`.
pub struct ErrorRecorder;

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ErrorRecorder {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let meta = event.metadata();
        if *meta.level() > tracing::Level::WARN {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        global().record_error(ErrorEntry {
            at: epoch(SystemTime::now()),
            level: meta.level().to_string(),
            target: meta.target().to_string(),
            message: format!("{}{}", fields.message, fields.rest),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_open_connections() {
        let s = Stats::default();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        s.register_listener(addr, "account a smtp");
        let c = s.listener(addr);
        let one = c.opened();
        let two = c.opened();
        drop(one);
        s.relayed("a", 1, 0);
        s.relayed("a", 1, 1);
        s.refused("a");
        s.view("a", &crate::pgp::ViewKind::Undecryptable("no key".into()));
        let snap = s.snapshot("c.toml", Some(3));
        assert_eq!((snap.connections_open, snap.connections_total), (1, 2));
        assert_eq!(snap.listeners[0].what, "account a smtp");
        let a = &snap.accounts["a"];
        assert_eq!((a.encrypted, a.sent_plain, a.refused), (2, 1, 1));
        assert_eq!(a.decryptions["undecryptable"], 1);
        drop(two);
        assert_eq!(s.snapshot("c", None).connections_open, 0);
    }
}
