//! Wiring: from a validated [`Config`] to running listeners, and the `check` report.

use crate::config::{split_host_port, Config, ServiceConfig};
use crate::imap::cache::ViewCache;
use crate::imap::server::{ImapService, ImapUpstream};
use crate::imap::ImapContext;
use crate::keys::autocrypt::AutocryptStore;
use crate::keys::discover::Discovery;
use crate::keys::{self, KeyStore, LoadedIdentity};
use crate::smtp::pipeline::Outbound;
use crate::smtp::server::{serve, SmtpService};
use crate::smtp::session::SessionConfig;
use crate::smtp::upstream::{Target, Upstream};
use crate::tls;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("seal: {message}")]
    Seal { message: String },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Status(#[from] crate::status::StatusError),
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    #[error(transparent)]
    Discovery(#[from] crate::keys::discover::DiscoveryError),
    #[error("cannot listen on {addr} ({what}): {message}")]
    Listen {
        addr: std::net::SocketAddr,
        what: String,
        message: String,
    },
}

/// Everything loaded from the config that the services share.
pub struct Loaded {
    pub store: Arc<KeyStore>,
    pub discovery: Arc<Discovery>,
    pub identities: Vec<Arc<LoadedIdentity>>,
    pub client_tls: Arc<rustls::ClientConfig>,
    pub server_tls: Arc<rustls::ServerConfig>,
}

pub fn load(config: &Config) -> Result<Loaded, AppError> {
    let store = Arc::new(KeyStore::open_with_state(
        &config.key_dir(),
        &config.state_dir,
    )?);
    let identities = config
        .identities
        .iter()
        .map(|id| keys::load_identity(id).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let client_tls = tls::client_config(config.keys.extra_ca.as_deref())?;
    let server_tls = tls::listener_config(config)?;
    let autocrypt = Arc::new(AutocryptStore::open(&config.state_dir));
    let discovery = Arc::new(Discovery::new(
        &config.keys,
        &config.state_dir,
        store.clone(),
        autocrypt,
        client_tls.clone(),
    )?);
    Ok(Loaded {
        discovery,
        store,
        identities,
        client_tls,
        server_tls,
    })
}

/// The upstream of a service, as the SMTP client needs it.
pub fn target(service: &ServiceConfig, loaded: &Loaded, config: &Config) -> Target {
    let (host, port) = split_host_port(&service.upstream).expect("validated by Config::load");
    Target {
        host,
        port,
        security: service.upstream_security,
        tls: loaded.client_tls.clone(),
        timeout: config.limits.upstream_timeout(),
        ehlo_name: hostname(),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        })
        .unwrap_or_else(|| "localhost".to_string())
}

/// Binds every listener, serves until SIGTERM/SIGINT, then drains the sessions.
pub async fn run(config: Config) -> Result<(), AppError> {
    crate::tls::warm_up();
    let loaded = load(&config)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let acceptor = tokio_rustls::TlsAcceptor::from(loaded.server_tls.clone());
    let outbound = Arc::new(Outbound {
        store: loaded.store.clone(),
        identities: loaded.identities.clone(),
        policy: config.policy.clone(),
        autocrypt: config
            .keys
            .autocrypt
            .then_some(config.keys.prefer_encrypt_mutual),
    });
    if config.keys.refresh_interval_secs > 0 {
        let discovery = loaded.discovery.clone();
        let every = std::time::Duration::from_secs(config.keys.refresh_interval_secs);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let n = discovery.refresh().await;
                tracing::info!(updated = n, "refreshed discovered keys");
            }
        });
    }
    // One view cache for the process; its keys carry the account.
    let view_cache = Arc::new(ViewCache::new(config.limits.view_cache_size));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let decrypt_slots = Arc::new(tokio::sync::Semaphore::new(cores));
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
            // An identity serves only the sessions of its own account.
            identities: config
                .identities
                .iter()
                .zip(&loaded.identities)
                .filter(|(c, _)| config.identity_account(c) == account)
                .map(|(_, l)| l.clone())
                .collect(),
            store: loaded.store.clone(),
            cache: view_cache.clone(),
            decrypt_slots: decrypt_slots.clone(),
            max_message_size: config.limits.max_message_size,
            max_line_length: config.limits.max_line_length,
            encrypt_append: config.imap.encrypt_append,
            max_job_view_bytes: config
                .limits
                .view_cache_size
                .max(config.limits.max_message_size),
        })
    };
    let mut tasks = Vec::new();
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
                target: target(smtp, &loaded, &config),
                outbound: outbound.clone(),
                discovery: loaded.discovery.clone(),
                acceptor: acceptor.clone(),
                idle_timeout: config.limits.idle_timeout(),
                max_connections: config.limits.max_connections,
            });
            for (addr, implicit) in [(smtp.listen, false), (smtp.listen_tls, true)] {
                let Some(addr) = addr else { continue };
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|e| AppError::Listen {
                        addr,
                        what: format!("account {} smtp", account.name),
                        message: e.to_string(),
                    })?;
                tracing::info!(account = %account.name, %addr, implicit_tls = implicit, upstream = %smtp.upstream, "SMTP listener ready");
                register(&listener, &account.name, "smtp", implicit);
                tasks.push(tokio::spawn(serve(
                    listener,
                    implicit,
                    service.clone(),
                    stop_rx.clone(),
                )));
            }
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
                acceptor: acceptor.clone(),
                max_connections: config.limits.max_connections,
            });
            for (addr, implicit) in [(imap.listen, false), (imap.listen_tls, true)] {
                let Some(addr) = addr else { continue };
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|e| AppError::Listen {
                        addr,
                        what: format!("account {} imap", account.name),
                        message: e.to_string(),
                    })?;
                tracing::info!(account = %account.name, %addr, implicit_tls = implicit, upstream = %imap.upstream, "IMAP listener ready");
                register(&listener, &account.name, "imap", implicit);
                tasks.push(tokio::spawn(crate::imap::server::serve(
                    listener,
                    implicit,
                    service.clone(),
                    stop_rx.clone(),
                )));
            }
        }
    }
    if let Some(ac) = &config.autoconfig {
        let listener = TcpListener::bind(ac.listen)
            .await
            .map_err(|e| AppError::Listen {
                addr: ac.listen,
                what: "autoconfig".into(),
                message: e.to_string(),
            })?;
        let (_directory_tx, directory) =
            watch::channel(Arc::new(crate::autoconfig::Directory::from_config(&config)));
        tracing::info!(addr = %ac.listen, "autoconfig listener ready");
        if let Ok(addr) = listener.local_addr() {
            crate::stats::global().register_listener(addr, "autoconfig (HTTP)");
        }
        tasks.push(tokio::spawn(crate::autoconfig::serve(
            listener,
            directory,
            stop_rx.clone(),
        )));
    }
    // `sealpost status` asks here.
    let control = crate::status::bind(&config.state_dir)?;
    let snapshot: Arc<dyn Fn() -> crate::stats::Snapshot + Send + Sync> = {
        let store = loaded.store.clone();
        let source = config.source.display().to_string();
        Arc::new(move || {
            crate::stats::global().snapshot(&source, store.certs().ok().map(|c| c.len()))
        })
    };
    tasks.push(tokio::spawn(crate::status::serve(
        control,
        crate::status::socket_path(&config.state_dir),
        snapshot,
        stop_rx.clone(),
    )));
    crate::stats::global().start();
    // Every listener is bound: systemd (Type=notify) may start what depends on us.
    crate::notify::tell(&format!(
        "READY=1\nSTATUS=serving {} listener(s)",
        tasks.len()
    ));
    wait_for_signal().await;
    crate::notify::tell("STOPPING=1");
    tracing::info!("shutting down: no new connections, finishing transactions in flight");
    let _ = stop_tx.send(true);
    let drain = async {
        for t in tasks {
            let _ = t.await;
        }
    };
    if tokio::time::timeout(config.limits.idle_timeout(), drain)
        .await
        .is_err()
    {
        tracing::warn!("some sessions did not finish in time; closing them");
    }
    Ok(())
}

/// Names a bound listener for `sealpost status`.
fn register(listener: &TcpListener, account: &str, protocol: &str, implicit: bool) {
    if let Ok(addr) = listener.local_addr() {
        let security = if implicit { "TLS" } else { "STARTTLS" };
        crate::stats::global()
            .register_listener(addr, &format!("account {account} {protocol} ({security})"));
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// One line of `sealpost check`.
pub struct CheckLine {
    pub ok: bool,
    pub what: String,
    pub detail: String,
}

/// Loads everything and connects to every upstream; never stops at the first failure
/// so the report lists every problem at once.
pub async fn check(config: &Config) -> Vec<CheckLine> {
    let mut lines = vec![CheckLine {
        ok: true,
        what: "config".into(),
        detail: format!("{} is valid", config.source.display()),
    }];
    let mut push =
        |ok: bool, what: String, detail: String| lines.push(CheckLine { ok, what, detail });
    let store = KeyStore::open(&config.key_dir());
    match &store {
        Ok(s) => match s.certs() {
            Ok(c) => push(
                true,
                "key store".into(),
                format!("{} holds {} certificate(s)", s.dir().display(), c.len()),
            ),
            Err(e) => push(false, "key store".into(), e.to_string()),
        },
        Err(e) => push(false, "key store".into(), e.to_string()),
    }
    for id in &config.identities {
        match keys::load_identity(id) {
            Ok(l) => push(
                true,
                format!("identity {}", id.address),
                format!(
                    "key {} unlocked (signing: {}, decryption subkeys: {})",
                    l.cert.fingerprint().to_hex(),
                    if l.signer.is_some() { "yes" } else { "no" },
                    l.decryptors.len()
                ),
            ),
            Err(e) => push(false, format!("identity {}", id.address), e.to_string()),
        }
    }
    let server_tls = tls::listener_config(config);
    match &server_tls {
        Ok(_) => push(
            true,
            "listener certificate".into(),
            match &config.tls {
                Some(t) => format!("{} loaded", t.cert.display()),
                None => format!("self-signed certificate in {}", config.state_dir.display()),
            },
        ),
        Err(e) => push(false, "listener certificate".into(), e.to_string()),
    }
    let client_tls = match tls::client_config(config.keys.extra_ca.as_deref()) {
        Ok(c) => Some(c),
        Err(e) => {
            push(false, "upstream TLS roots".into(), e.to_string());
            None
        }
    };
    for account in &config.accounts {
        if let Some(smtp) = &account.smtp {
            for addr in [smtp.listen, smtp.listen_tls].into_iter().flatten() {
                match std::net::TcpListener::bind(addr) {
                    Ok(_) => push(true, format!("account {} smtp listen", account.name), format!("{addr} is free")),
                    Err(e) => push(
                        false,
                        format!("account {} smtp listen", account.name),
                        format!("cannot bind {addr}: {e} (is sealpost already running, or another server on that port?)"),
                    ),
                }
            }
            if let Some(client_tls) = &client_tls {
                let (host, port) = split_host_port(&smtp.upstream).expect("validated");
                let target = Target {
                    host,
                    port,
                    security: smtp.upstream_security,
                    tls: client_tls.clone(),
                    timeout: config
                        .limits
                        .upstream_timeout()
                        .min(std::time::Duration::from_secs(15)),
                    ehlo_name: hostname(),
                };
                let what = format!("account {} smtp upstream", account.name);
                match Upstream::connect(&target).await {
                    Ok(up) => {
                        up.quit().await;
                        push(true, what, format!("{} answered over {:?}", smtp.upstream, smtp.upstream_security));
                    }
                    Err(e) => push(false, what, format!("{}; check `upstream` and `upstream_security` (\"tls\" for port 465, \"starttls\" for 587), and extra_ca for a private CA", crate::error_chain(&e))),
                }
            }
        }
        if let Some(imap) = &account.imap {
            for addr in [imap.listen, imap.listen_tls].into_iter().flatten() {
                let what = format!("account {} imap listen", account.name);
                match std::net::TcpListener::bind(addr) {
                    Ok(_) => push(true, what, format!("{addr} is free")),
                    Err(e) => push(false, what, format!("cannot bind {addr}: {e} (is sealpost already running, or another server on that port?)")),
                }
            }
            if let Some(client_tls) = &client_tls {
                let (host, port) = split_host_port(&imap.upstream).expect("validated");
                let upstream = ImapUpstream {
                    host,
                    port,
                    security: imap.upstream_security,
                    tls: client_tls.clone(),
                    timeout: config
                        .limits
                        .upstream_timeout()
                        .min(std::time::Duration::from_secs(15)),
                };
                let what = format!("account {} imap upstream", account.name);
                match crate::imap::server::connect_upstream(&upstream).await {
                    Ok(_) => push(true, what, format!("{} answered over {:?}", imap.upstream, imap.upstream_security)),
                    Err(e) => push(false, what, format!("{}; check `upstream` and `upstream_security` (\"tls\" for port 993, \"starttls\" for 143), and extra_ca for a private CA", crate::error_chain(&e))),
                }
            }
        }
    }
    if let Some(ac) = &config.autoconfig {
        match std::net::TcpListener::bind(ac.listen) {
            Ok(_) => push(true, "autoconfig listen".into(), format!("{} is free", ac.listen)),
            Err(e) => push(
                false,
                "autoconfig listen".into(),
                format!("cannot bind {}: {e} (is sealpost already running, or another server on that port?)", ac.listen),
            ),
        }
    }
    lines
}

/// `sealpost seal`'s arguments (see [`crate::imap::seal`]).
pub struct SealArgs {
    pub login: String,
    pub password: String,
    pub mailboxes: Vec<String>,
    /// IMAP date.
    pub before: Option<String>,
    pub dry_run: bool,
    /// `sealpost unseal`.
    pub unseal: bool,
}

/// Seals the mailboxes of the identity whose login is `args.login`, at its account's
/// IMAP server.
pub async fn seal(
    config: &Config,
    args: SealArgs,
    progress: &mut dyn FnMut(&crate::imap::seal::Progress<'_>),
) -> Result<crate::imap::seal::Summary, AppError> {
    let bad = |message: String| AppError::Seal { message };
    let id = config
        .identities
        .iter()
        .find(|i| {
            i.login
                .as_deref()
                .unwrap_or(&i.address)
                .eq_ignore_ascii_case(&args.login)
        })
        .ok_or_else(|| {
            bad(format!(
                "no [[identity]] has the login {}: sealing needs that identity's key",
                args.login
            ))
        })?;
    let loaded = keys::load_identity(id)?;
    let account = config.identity_account(id);
    let imap = config
        .accounts
        .iter()
        .find(|a| a.name == account)
        .and_then(|a| a.imap.as_ref())
        .ok_or_else(|| bad(format!("account {account} has no [account.imap] server")))?;
    let (host, port) = split_host_port(&imap.upstream).map_err(bad)?;
    let upstream = ImapUpstream {
        host,
        port,
        security: imap.upstream_security,
        tls: tls::client_config(config.keys.extra_ca.as_deref())?,
        timeout: config.limits.upstream_timeout(),
    };
    let job = crate::imap::seal::SealJob {
        identity: &loaded,
        login: args.login,
        password: args.password,
        mailboxes: args.mailboxes,
        before: args.before,
        dry_run: args.dry_run,
        max_message_size: config.limits.max_message_size,
        unseal: args.unseal,
    };
    crate::imap::seal::run(&upstream, &job, progress)
        .await
        .map_err(|e| bad(crate::error_chain(&e)))
}
