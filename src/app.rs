//! Wiring: from a validated [`Config`] to running listeners, and the `check` report.

use crate::config::{split_host_port, Config, ServiceConfig};
use crate::imap::server::ImapUpstream;
use crate::keys::autocrypt::AutocryptStore;
use crate::keys::discover::Discovery;
use crate::keys::{self, KeyStore, LoadedIdentity};
use crate::smtp::upstream::{Target, Upstream};
use crate::tls;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("seal: {message}")]
    Seal { message: String },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    #[error(transparent)]
    Discovery(#[from] crate::keys::discover::DiscoveryError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("cannot listen on {addr} ({what}): {message}")]
    Listen {
        addr: std::net::SocketAddr,
        what: String,
        message: String,
    },
}

/// Everything loaded from the config that the services share.
pub struct Loaded {
    /// Provenance, the lookup cache and Autocrypt state (see [`crate::state`]).
    pub state: Arc<crate::state::State>,
    pub store: Arc<KeyStore>,
    pub discovery: Arc<Discovery>,
    pub identities: Vec<Arc<LoadedIdentity>>,
    pub client_tls: Arc<rustls::ClientConfig>,
    pub server_tls: Arc<rustls::ServerConfig>,
}

pub fn load(config: &Config) -> Result<Loaded, AppError> {
    let state = Arc::new(crate::state::State::open(&config.state, &config.state_dir)?);
    let store = Arc::new(
        KeyStore::open_with_db(&config.key_dir(), state.clone())?
            .with_secret_dir(config.keys.secret_dir.as_deref()),
    );
    let identities = config
        .identities
        .iter()
        .map(|id| keys::load_identity(id).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let client_tls = tls::client_config(config.keys.extra_ca.as_deref())?;
    let server_tls = tls::listener_config(config)?;
    let autocrypt = Arc::new(AutocryptStore::new(state.clone()));
    let discovery = Arc::new(Discovery::new(
        &config.keys,
        state.clone(),
        store.clone(),
        autocrypt,
        client_tls.clone(),
    )?);
    Ok(Loaded {
        state,
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

pub(crate) fn hostname() -> String {
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

pub use crate::serve::run;

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
    match crate::state::State::open(&config.state, &config.state_dir) {
        Ok(s) => push(true, "state".into(), format!("{} opened", s.describe())),
        Err(e) => push(false, "state".into(), e.to_string()),
    }
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
    if let Some(dir) = &config.keys.secret_dir {
        match keys::secret_dir::SecretDir::new(dir).count() {
            Ok(n) => push(
                true,
                "secret_dir".into(),
                format!("{} holds {n} secret key file(s) (<address>.asc), loaded when their user first logs in or sends", dir.display()),
            ),
            Err(e) => push(false, "secret_dir".into(), format!("cannot read {}: {e}", dir.display())),
        }
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
    if let Some(path) = &config.audit.file {
        match crate::audit::check(&config.audit) {
            Ok(()) => push(
                true,
                "audit log".into(),
                format!("{} is writable", path.display()),
            ),
            Err(e) => push(false, "audit log".into(), e.to_string()),
        }
    }
    if let Some(addr) = config.metrics.listen {
        match std::net::TcpListener::bind(addr) {
            Ok(_) => push(true, "metrics listen".into(), format!("{addr} is free")),
            Err(e) => push(
                false,
                "metrics listen".into(),
                format!("cannot bind {addr}: {e} (is sealpost already running, or another server on that port?)"),
            ),
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
    let configured = config.identities.iter().find(|i| {
        i.login
            .as_deref()
            .unwrap_or(&i.address)
            .eq_ignore_ascii_case(&args.login)
    });
    // An [[identity]] wins; else the login's key in `[keys] secret_dir` (one account).
    let (loaded, account) = match configured {
        Some(id) => (
            Arc::new(keys::load_identity(id)?),
            config.identity_account(id),
        ),
        None => {
            let from_dir = config
                .keys
                .secret_dir
                .as_deref()
                .and_then(|dir| keys::secret_dir::SecretDir::new(dir).identity(&args.login));
            match from_dir {
                Some(l) => (l, config.accounts[0].name.as_str()),
                None => {
                    return Err(bad(format!(
                        "no [[identity]] has the login {}, and [keys] secret_dir has no key for it: sealing needs that identity's key",
                        args.login
                    )))
                }
            }
        }
    };
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
