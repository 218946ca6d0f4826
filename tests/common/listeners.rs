//! The ports sealpost's listeners were bound on, read from its log.
//!
//! A test configures its listeners on `127.0.0.1:0`: the kernel picks each port at the
//! bind, so no other process can take it between a test's choice and sealpost's bind
//! (the race of [`super::net::free_port`]). `sealpost run` logs every listener with the
//! address it got, once it listens:
//!
//! ```text
//! 2026-01-02T10:00:00.000000Z  INFO sealpost::serve: SMTP listener ready account=test addr=127.0.0.1:40123 implicit_tls=false upstream=localhost:465
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    Smtp,
    Imap,
    Metrics,
    Autoconfig,
}

impl Service {
    /// The message of its "listener ready" log event (src/serve.rs).
    fn ready_message(self) -> &'static str {
        match self {
            Service::Smtp => "SMTP listener ready",
            Service::Imap => "IMAP listener ready",
            Service::Metrics => "metrics listener ready (GET /metrics)",
            Service::Autoconfig => "autoconfig listener ready",
        }
    }

    const ALL: [Service; 4] = [
        Service::Smtp,
        Service::Imap,
        Service::Metrics,
        Service::Autoconfig,
    ];
}

/// One listener of a config: SMTP and IMAP ones belong to an account and are STARTTLS
/// (`listen`) or implicit TLS (`listen_tls`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Listener {
    pub service: Service,
    pub account: Option<String>,
    pub implicit_tls: bool,
}

impl Listener {
    pub fn smtp(account: &str, implicit_tls: bool) -> Listener {
        Listener {
            service: Service::Smtp,
            account: Some(account.into()),
            implicit_tls,
        }
    }

    pub fn imap(account: &str, implicit_tls: bool) -> Listener {
        Listener {
            service: Service::Imap,
            account: Some(account.into()),
            implicit_tls,
        }
    }

    pub fn metrics() -> Listener {
        Listener {
            service: Service::Metrics,
            account: None,
            implicit_tls: false,
        }
    }

    pub fn autoconfig() -> Listener {
        Listener {
            service: Service::Autoconfig,
            account: None,
            implicit_tls: false,
        }
    }
}

/// The listeners the sealpost config at `path` declares.
pub fn configured(path: &Path) -> Vec<Listener> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let table: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{} is not TOML: {e}", path.display()));
    let mut out = Vec::new();
    let accounts = table.get("account").and_then(toml::Value::as_array);
    for account in accounts.into_iter().flatten() {
        let name = account
            .get("name")
            .and_then(toml::Value::as_str)
            .unwrap_or_else(|| panic!("an [[account]] without a name in {}", path.display()));
        for (kind, make) in [
            ("smtp", Listener::smtp as fn(&str, bool) -> Listener),
            ("imap", Listener::imap),
        ] {
            let Some(service) = account.get(kind).and_then(toml::Value::as_table) else {
                continue;
            };
            for (key, implicit_tls) in [("listen", false), ("listen_tls", true)] {
                if service.contains_key(key) {
                    out.push(make(name, implicit_tls));
                }
            }
        }
    }
    for (section, listener) in [
        ("metrics", Listener::metrics()),
        ("autoconfig", Listener::autoconfig()),
    ] {
        let listen = table
            .get(section)
            .and_then(toml::Value::as_table)
            .is_some_and(|t| t.contains_key("listen"));
        if listen {
            out.push(listener);
        }
    }
    out
}

/// A "listener ready" line of sealpost's log (tracing's text format: time, level,
/// target, then the message and its `key=value` fields), or `None` for any other line.
pub fn parse_ready(line: &str) -> Option<(Listener, SocketAddr)> {
    let mut words = line.split_whitespace();
    let (_time, level, target) = (words.next()?, words.next()?, words.next()?);
    if level != "INFO" || !target.ends_with(':') {
        return None;
    }
    // What follows the target, as written (the message has spaces).
    let rest = line[line.find(target)? + target.len()..].trim_start();
    let (service, fields) = Service::ALL.into_iter().find_map(|s| {
        let fields = rest.strip_prefix(s.ready_message())?;
        (fields.is_empty() || fields.starts_with(' ')).then_some((s, fields))
    })?;
    let fields: BTreeMap<&str, &str> = fields
        .split_whitespace()
        .filter_map(|f| f.split_once('='))
        .collect();
    let addr = fields.get("addr")?.parse().ok()?;
    let listener = Listener {
        service,
        account: fields.get("account").map(|a| a.to_string()),
        implicit_tls: fields.get("implicit_tls") == Some(&"true"),
    };
    Some((listener, addr))
}

/// Where each listener of one sealpost process was bound.
#[derive(Debug, Clone, Default)]
pub struct Bound(BTreeMap<Listener, SocketAddr>);

impl Bound {
    /// The port of `listener`; panics if sealpost has no such listener.
    pub fn port(&self, listener: &Listener) -> u16 {
        self.get(listener)
            .unwrap_or_else(|| panic!("sealpost has no {listener:?}; it has {:?}", self.0))
    }

    pub fn get(&self, listener: &Listener) -> Option<u16> {
        self.0.get(listener).map(SocketAddr::port)
    }
}

/// Waits until the log at `log` names, after its first `from` bytes, every listener the
/// config at `config` declares, and returns where they were bound: each then accepts
/// connections. Panics with the log when `child` exits first or after `timeout`.
pub fn wait_for_bound(
    config: &Path,
    log: &Path,
    from: usize,
    child: &mut Child,
    timeout: Duration,
) -> Bound {
    let wanted = configured(config);
    let deadline = Instant::now() + timeout;
    loop {
        let bytes = std::fs::read(log).unwrap_or_default();
        let text = String::from_utf8_lossy(bytes.get(from..).unwrap_or_default());
        // Whole lines only: the last one may be half written.
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        let bound = Bound(complete.lines().filter_map(parse_ready).collect());
        let missing: Vec<&Listener> = wanted.iter().filter(|l| !bound.0.contains_key(l)).collect();
        if missing.is_empty() {
            for (listener, addr) in &bound.0 {
                assert!(
                    addr.port() != 0,
                    "sealpost logged {addr} for {listener:?}: a binary that logs the configured \
                     address instead of the bound one (rebuild it)\n{text}"
                );
            }
            return bound;
        }
        if let Some(status) = child.try_wait().expect("wait for sealpost") {
            panic!(
                "sealpost exited ({status}) before listening on {missing:?}; log {}:\n{text}",
                log.display()
            );
        }
        if Instant::now() >= deadline {
            panic!(
                "sealpost did not log {missing:?} as listening within {timeout:?}; log {}:\n{text}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
