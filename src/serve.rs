//! `sealpost run`: binds every listener, serves, reloads on SIGHUP, drains on SIGTERM.
//!
//! Each listener reads its service (config, keys, policy) from a `watch` channel when it
//! accepts a connection, so a reload swaps what new sessions get while sessions in
//! flight finish with what they started with: no connection is dropped. A reload that
//! does not validate (config, keys, passphrases, certificates) is refused, with the
//! reason logged, and the running configuration stays.

use crate::app::{hostname, load, target, AppError, Loaded};
use crate::autoconfig::Directory;
use crate::config::split_host_port;
use crate::config::Config;
use crate::imap::cache::ViewCache;
use crate::imap::server::{ImapService, ImapUpstream};
use crate::imap::ImapContext;
use crate::keys::KeyStore;
use crate::smtp::pipeline::Outbound;
use crate::smtp::server::SmtpService;
use crate::smtp::session::SessionConfig;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

/// What lives as long as the process, across reloads.
struct Shared {
    view_cache: Arc<ViewCache>,
    /// Search state (which messages are encrypted, what SEARCH reads of them), keyed
    /// like the view cache.
    search: Arc<crate::imap::search_state::SearchState>,
    ahead: Arc<crate::imap::ahead::Ahead>,
    decrypt_slots: Arc<Semaphore>,
}

/// The services built from one config.
struct Built {
    smtp: BTreeMap<String, Arc<SmtpService>>,
    imap: BTreeMap<String, Arc<ImapService>>,
    store: Arc<KeyStore>,
}

fn build(config: &Config, loaded: &Loaded, shared: &Shared) -> Built {
    let acceptor = tokio_rustls::TlsAcceptor::from(loaded.server_tls.clone());
    // An identity serves only the sessions of its own account (DESIGN.md, invariants):
    // a login at another account's provider is another person, whatever its name.
    let identities_of = |account: &str| -> Vec<_> {
        config
            .identities
            .iter()
            .zip(&loaded.identities)
            .filter(|(c, _)| config.identity_account(c) == account)
            .map(|(_, l)| l.clone())
            .collect()
    };
    let outbound = |account: &str| {
        Arc::new(Outbound {
            store: loaded.store.clone(),
            identities: identities_of(account),
            policy: config.policy.clone(),
            autocrypt: config
                .keys
                .autocrypt
                .then_some(config.keys.prefer_encrypt_mutual),
            autocrypt_fields: Default::default(),
        })
    };
    let imap_ctx = |account: &str| {
        Arc::new(ImapContext {
            account: account.into(),
            autocrypt: Some(Arc::new(crate::keys::autocrypt::Learner {
                store: loaded.discovery.autocrypt().clone(),
                authserv_id: config
                    .accounts
                    .iter()
                    .find(|a| a.name == account)
                    .and_then(|a| a.imap.as_ref())
                    .and_then(|i| i.authserv_id.clone()),
            })),
            identities: identities_of(account),
            store: loaded.store.clone(),
            cache: shared.view_cache.clone(),
            decrypt_slots: shared.decrypt_slots.clone(),
            max_message_size: config.limits.max_message_size,
            max_line_length: config.limits.max_line_length,
            encrypt_append: config.imap.encrypt_append,
            search: shared.search.clone(),
            ahead: shared.ahead.clone(),
            max_job_view_bytes: config
                .limits
                .view_cache_size
                .max(config.limits.max_message_size),
        })
    };
    let admission = |s: &crate::config::ServiceConfig| crate::listener::Admission {
        max_connections: config.limits.max_connections,
        max_connections_per_ip: s.max_connections_per_ip,
        proxy_protocol: s.proxy_protocol,
    };
    let mut built = Built {
        smtp: BTreeMap::new(),
        imap: BTreeMap::new(),
        store: loaded.store.clone(),
    };
    for account in &config.accounts {
        if let Some(smtp) = &account.smtp {
            let service = Arc::new(SmtpService {
                account: account.name.clone(),
                session: SessionConfig {
                    hostname: hostname(),
                    max_message_size: config.limits.max_message_size,
                    max_line_length: config.limits.max_line_length,
                    max_recipients: config.limits.max_recipients,
                    starttls_available: true,
                    plaintext_auth_ok: false,
                },
                target: target(smtp, loaded, config),
                outbound: outbound(&account.name),
                discovery: loaded.discovery.clone(),
                acceptor: acceptor.clone(),
                idle_timeout: config.limits.idle_timeout(),
                admission: admission(smtp),
            });
            built.smtp.insert(account.name.clone(), service);
        }
        if let Some(imap) = &account.imap {
            let (host, port) = split_host_port(&imap.upstream).expect("validated by Config::load");
            let service = Arc::new(ImapService {
                account: account.name.clone(),
                ctx: imap_ctx(&account.name),
                upstream: ImapUpstream {
                    host,
                    port,
                    security: imap.upstream_security,
                    tls: loaded.client_tls.clone(),
                    timeout: config.limits.upstream_timeout(),
                },
                reply_timeout: config.limits.imap_reply_timeout(),
                acceptor: acceptor.clone(),
                admission: admission(imap),
            });
            built.imap.insert(account.name.clone(), service);
        }
    }
    built
}

/// The address each account listener was bound on, by (account, "smtp"/"imap",
/// implicit TLS).
type BoundAddrs = BTreeMap<(String, &'static str, bool), SocketAddr>;

/// `config` with each account listener configured on port 0 moved to the port the
/// kernel gave it: what autoconfig must tell clients.
fn with_bound_ports(config: &Config, bound: &BoundAddrs) -> Config {
    let mut config = config.clone();
    for account in &mut config.accounts {
        for (kind, service) in [("smtp", &mut account.smtp), ("imap", &mut account.imap)] {
            let Some(service) = service else { continue };
            for (addr, implicit) in [
                (&mut service.listen, false),
                (&mut service.listen_tls, true),
            ] {
                let Some(addr) = addr.as_mut().filter(|a| a.port() == 0) else {
                    continue;
                };
                if let Some(b) = bound.get(&(account.name.clone(), kind, implicit)) {
                    *addr = *b;
                }
            }
        }
    }
    config
}

/// What must not change on a reload: the sockets already bound, where state is, and
/// where the audit goes.
fn layout(config: &Config) -> Vec<String> {
    let mut out = vec![
        format!("state_dir = {}", config.state_dir.display()),
        format!("instance = {:?}", config.instance),
    ];
    // The database in use stays for the process's life (redacted: this is logged).
    if let Some(url) = &config.state.url {
        out.push(format!("[state] url = {}", crate::state::redact_url(url)));
    }
    for a in &config.accounts {
        for (kind, s) in [("smtp", &a.smtp), ("imap", &a.imap)] {
            let Some(s) = s else { continue };
            out.push(format!(
                "account {} {kind} listen = {:?}, listen_tls = {:?}, proxy_protocol = {}, max_connections_per_ip = {:?}",
                a.name, s.listen, s.listen_tls, s.proxy_protocol, s.max_connections_per_ip
            ));
        }
    }
    if let Some(ac) = &config.autoconfig {
        out.push(format!("autoconfig listen = {}", ac.listen));
    }
    if let Some(addr) = config.metrics.listen {
        out.push(format!("metrics listen = {addr}"));
    }
    // The audit sink is opened once, before any listener: a reload that would start,
    // stop or move the audit is refused rather than reported done and not applied.
    out.push(format!(
        "audit file = {:?}, journal = {}",
        config.audit.file, config.audit.journal
    ));
    out
}

fn spawn_refresh(config: &Config, loaded: &Loaded) -> Option<JoinHandle<()>> {
    if config.keys.refresh_interval_secs == 0 {
        return None;
    }
    let discovery = loaded.discovery.clone();
    let every = std::time::Duration::from_secs(config.keys.refresh_interval_secs);
    Some(tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let n = discovery.refresh().await;
            tracing::info!(updated = n, "refreshed discovered keys");
        }
    }))
}

async fn bind(addr: std::net::SocketAddr, what: String) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr).await.map_err(|e| AppError::Listen {
        addr,
        what,
        message: e.to_string(),
    })
}

/// Names a bound listener for `sealpost status`.
fn register(listener: &TcpListener, what: &str) {
    if let Ok(addr) = listener.local_addr() {
        crate::stats::global().register_listener(addr, what);
    }
}

/// The channels that hand each listener its current service.
struct Running {
    config: Config,
    smtp: BTreeMap<String, watch::Sender<Arc<SmtpService>>>,
    imap: BTreeMap<String, watch::Sender<Arc<ImapService>>>,
    directory: watch::Sender<Arc<Directory>>,
    store: watch::Sender<Arc<KeyStore>>,
    refresh: Option<JoinHandle<()>>,
    /// Where the account listeners are; a reload cannot move them.
    bound: BoundAddrs,
}

impl Running {
    /// Reads the config file again; swaps everything in, or nothing.
    fn reload(&mut self, shared: &Shared) -> Result<(), String> {
        let config = Config::load(&self.config.source).map_err(|e| crate::error_chain(&e))?;
        let (old, new) = (layout(&self.config), layout(&config));
        if old != new {
            let changed: Vec<&String> = new.iter().filter(|l| !old.contains(l)).collect();
            return Err(format!(
                "listeners, state_dir or [audit] changed ({changed:?}); restart sealpost to apply that"
            ));
        }
        let loaded = load(&config).map_err(|e| crate::error_chain(&e))?;
        let built = build(&config, &loaded, shared);
        for (name, svc) in built.smtp {
            if let Some(tx) = self.smtp.get(&name) {
                tx.send_replace(svc);
            }
        }
        for (name, svc) in built.imap {
            if let Some(tx) = self.imap.get(&name) {
                tx.send_replace(svc);
            }
        }
        self.directory
            .send_replace(Arc::new(Directory::from_config(&with_bound_ports(
                &config,
                &self.bound,
            ))));
        self.store.send_replace(built.store);
        if let Some(r) = self.refresh.take() {
            r.abort();
        }
        self.refresh = spawn_refresh(&config, &loaded);
        if config.limits.max_connections != self.config.limits.max_connections
            || config.limits.view_cache_size != self.config.limits.view_cache_size
        {
            tracing::warn!(
                "limits.max_connections and limits.view_cache_size take effect at the next restart"
            );
        }
        self.config = config;
        Ok(())
    }
}

/// Binds every listener, serves until SIGTERM/SIGINT (reloading on SIGHUP), then
/// drains the sessions.
pub async fn run(config: Config) -> Result<(), AppError> {
    use tokio::signal::unix::{signal, SignalKind};
    // Installed first: a SIGHUP during start-up must not kill the process.
    let mut hup = signal(SignalKind::hangup()).expect("install SIGHUP handler");
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    crate::tls::warm_up();
    let loaded = load(&config)?;
    // Before any listener: a gateway that cannot audit does not start.
    crate::audit::install(crate::audit::Audit::open(&config.audit)?);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let shared = Shared {
        // One view cache for the process; its keys carry the account.
        view_cache: Arc::new(ViewCache::new(config.limits.view_cache_size)),
        search: Arc::new(if config.imap.search_index {
            // Several instances may share `state_dir`: each keeps its own indexes.
            let dir = config
                .state_dir
                .join("index")
                .join(config.instance.as_deref().unwrap_or("default"));
            crate::imap::search_state::SearchState::with_index(
                dir,
                config.imap.search_index_size,
                config.imap.search_index_fill,
            )
        } else {
            crate::imap::search_state::SearchState::default()
        }),
        decrypt_slots: Arc::new(Semaphore::new(cores)),
        ahead: Arc::new(crate::imap::ahead::Ahead::new(
            config.imap.classify_on_select,
        )),
    };
    let built = build(&config, &loaded, &shared);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut running = Running {
        smtp: BTreeMap::new(),
        imap: BTreeMap::new(),
        // Filled in once the account listeners are bound (see `with_bound_ports`).
        directory: watch::channel(Arc::new(Directory::default())).0,
        store: watch::channel(built.store.clone()).0,
        refresh: spawn_refresh(&config, &loaded),
        config: config.clone(),
        bound: BoundAddrs::new(),
    };
    for account in &config.accounts {
        if let (Some(smtp), Some(svc)) = (&account.smtp, built.smtp.get(&account.name)) {
            let (tx, rx) = watch::channel(svc.clone());
            running.smtp.insert(account.name.clone(), tx);
            for (addr, implicit) in [(smtp.listen, false), (smtp.listen_tls, true)] {
                let Some(addr) = addr else { continue };
                let what = format!("account {} smtp", account.name);
                let listener = bind(addr, what.clone()).await?;
                // The bound address: on port 0 the kernel picked one.
                let addr = listener.local_addr().unwrap_or(addr);
                running
                    .bound
                    .insert((account.name.clone(), "smtp", implicit), addr);
                tracing::info!(account = %account.name, %addr, implicit_tls = implicit, upstream = %smtp.upstream, "SMTP listener ready");
                register(
                    &listener,
                    &format!("{what} ({})", if implicit { "TLS" } else { "STARTTLS" }),
                );
                tasks.push(tokio::spawn(crate::smtp::server::serve(
                    listener,
                    implicit,
                    rx.clone(),
                    stop_rx.clone(),
                )));
            }
        }
        if let (Some(imap), Some(svc)) = (&account.imap, built.imap.get(&account.name)) {
            let (tx, rx) = watch::channel(svc.clone());
            running.imap.insert(account.name.clone(), tx);
            for (addr, implicit) in [(imap.listen, false), (imap.listen_tls, true)] {
                let Some(addr) = addr else { continue };
                let what = format!("account {} imap", account.name);
                let listener = bind(addr, what.clone()).await?;
                // The bound address: on port 0 the kernel picked one.
                let addr = listener.local_addr().unwrap_or(addr);
                running
                    .bound
                    .insert((account.name.clone(), "imap", implicit), addr);
                tracing::info!(account = %account.name, %addr, implicit_tls = implicit, upstream = %imap.upstream, "IMAP listener ready");
                register(
                    &listener,
                    &format!("{what} ({})", if implicit { "TLS" } else { "STARTTLS" }),
                );
                tasks.push(tokio::spawn(crate::imap::server::serve(
                    listener,
                    implicit,
                    rx.clone(),
                    stop_rx.clone(),
                )));
            }
        }
    }
    running
        .directory
        .send_replace(Arc::new(Directory::from_config(&with_bound_ports(
            &config,
            &running.bound,
        ))));
    if let Some(addr) = config.metrics.listen {
        let listener = bind(addr, "[metrics] listen".into()).await?;
        let addr = listener.local_addr().unwrap_or(addr);
        tracing::info!(%addr, "metrics listener ready (GET /metrics)");
        register(&listener, "metrics (HTTP)");
        tasks.push(tokio::spawn(crate::metrics::serve(
            listener,
            stop_rx.clone(),
        )));
    }
    if let Some(ac) = &config.autoconfig {
        let listener = bind(ac.listen, "autoconfig".into()).await?;
        let addr = listener.local_addr().unwrap_or(ac.listen);
        tracing::info!(%addr, "autoconfig listener ready");
        register(&listener, "autoconfig (HTTP)");
        tasks.push(tokio::spawn(crate::autoconfig::serve(
            listener,
            running.directory.subscribe(),
            stop_rx.clone(),
        )));
    }
    // `sealpost status` asks here. Without it the proxy still serves mail.
    let listeners = tasks.len();
    match crate::status::bind(&config.control_socket()) {
        Ok(control) => {
            let snapshot: Arc<dyn Fn() -> crate::stats::Snapshot + Send + Sync> = {
                let store = running.store.subscribe();
                let source = config.source.display().to_string();
                Arc::new(move || {
                    let store = store.borrow().clone();
                    crate::stats::global().snapshot(&source, store.certs().ok().map(|c| c.len()))
                })
            };
            tasks.push(tokio::spawn(crate::status::serve(
                control,
                config.control_socket(),
                snapshot,
                stop_rx.clone(),
            )));
        }
        Err(e) => {
            tracing::warn!(error = %crate::error_chain(&e), "`sealpost status` will not work")
        }
    }
    crate::stats::global().start();
    // Every listener is bound: systemd (Type=notify) may start what depends on us.
    crate::notify::tell(&format!("READY=1\nSTATUS=serving {listeners} listener(s)"));
    loop {
        tokio::select! {
            _ = hup.recv() => {
                crate::notify::tell("RELOADING=1");
                match running.reload(&shared) {
                    Ok(()) => {
                        crate::stats::global().reloaded();
                        tracing::info!(config = %running.config.source.display(), "reloaded the config and keys; new connections use them");
                    }
                    Err(reason) => tracing::error!(%reason, "reload refused; the running configuration stays"),
                }
                crate::notify::tell("READY=1");
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    crate::notify::tell("STOPPING=1");
    tracing::info!("shutting down: no new connections, finishing transactions in flight");
    let _ = stop_tx.send(true);
    let drain = async {
        for t in tasks {
            let _ = t.await;
        }
    };
    if tokio::time::timeout(running.config.limits.idle_timeout(), drain)
        .await
        .is_err()
    {
        tracing::warn!("some sessions did not finish in time; closing them");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_told_the_port_a_port_0_listener_was_bound_on() {
        let text = r#"
state_dir = "s"
[[account]]
name = "a"
[account.smtp]
listen = "127.0.0.1:0"
listen_tls = "127.0.0.1:1465"
upstream = "smtp.example.org:465"
upstream_security = "tls"
[account.imap]
listen_tls = "127.0.0.1:0"
upstream = "imap.example.org:993"
upstream_security = "tls"
[[identity]]
address = "al@example.org"
secret_key = "k"
"#;
        let config = Config::parse(text, std::path::Path::new("/x/c.toml")).unwrap();
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        let bound = BoundAddrs::from([
            (("a".into(), "smtp", false), addr("127.0.0.1:40001")),
            (("a".into(), "smtp", true), addr("127.0.0.1:1465")),
            (("a".into(), "imap", true), addr("127.0.0.1:40002")),
        ]);
        let entry = Directory::from_config(&with_bound_ports(&config, &bound))
            .lookup("al@example.org", true)
            .unwrap();
        let ports = |e: &[crate::autoconfig::Endpoint]| -> Vec<(u16, bool)> {
            e.iter().map(|e| (e.port, e.implicit_tls)).collect()
        };
        assert_eq!(ports(&entry.smtp), [(1465, true), (40001, false)]);
        assert_eq!(ports(&entry.imap), [(40002, true)]);
        // The configured addresses stay as written: a reload compares them.
        assert_eq!(
            config.accounts[0].smtp.as_ref().unwrap().listen,
            Some(addr("127.0.0.1:0"))
        );
    }
}
