//! The TOML configuration: schema, defaults and validation.
//!
//! Everything a running sealpost needs to know comes from one file. Unknown keys are
//! refused (`deny_unknown_fields`) so that a typo never silently turns a setting off;
//! relative paths are resolved against the folder of the config file so a config and its
//! keys can move together.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a configuration could not be used. Every variant names the file and says what
/// to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no config file at {path}: name one with --config FILE, make this one with \
         `sealpost init` or from config.example.toml (it documents every key)"
    )]
    Missing { path: PathBuf },
    /// The cause is kept as the error's source, so a chain printer shows it once.
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// How sealpost reaches an upstream server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamSecurity {
    /// Implicit TLS from the first byte (ports 465 and 993).
    Tls,
    /// Plain connection upgraded with STARTTLS before anything else is said.
    Starttls,
    /// No TLS at all: only accepted for an upstream on a loopback address.
    Plain,
}

/// What to do for a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyAction {
    /// Encrypt when a key is found, otherwise send unchanged.
    Opportunistic,
    /// Encrypt, and refuse the message when no key is found.
    Require,
    /// Never encrypt.
    Plain,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Folder for the generated listener certificate and caches.
    pub state_dir: PathBuf,
    /// Names this instance among several that share `state_dir` (its control socket
    /// is `state_dir/control-<instance>.sock`); none: `state_dir/control.sock`.
    #[serde(default)]
    pub instance: Option<String>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default, rename = "account")]
    pub accounts: Vec<Account>,
    #[serde(default, rename = "identity")]
    pub identities: Vec<Identity>,
    #[serde(default)]
    pub keys: KeysConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub imap: ImapSettings,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// `[state]`: where key provenance, the lookup cache and Autocrypt state live.
    #[serde(default)]
    pub state: crate::state::StateConfig,
    /// Optional HTTP listener answering Thunderbird's autoconfig and Outlook's
    /// Autodiscover with sealpost's own listeners.
    #[serde(default)]
    pub autoconfig: Option<AutoconfigConfig>,
    /// Where the config was read from; set by [`Config::load`].
    #[serde(skip)]
    pub source: PathBuf,
}

/// `[autoconfig]`: mail clients fill in their settings from this HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoconfigConfig {
    /// `ip:port` of the HTTP listener.
    pub listen: SocketAddr,
    /// The server name clients are told to use; default: each listener's address
    /// (required when a listener is on 0.0.0.0 or ::).
    #[serde(default)]
    pub hostname: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub name: String,
    #[serde(default)]
    pub smtp: Option<ServiceConfig>,
    #[serde(default)]
    pub imap: Option<ServiceConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Plain listener that offers STARTTLS.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Implicit-TLS listener.
    #[serde(default)]
    pub listen_tls: Option<SocketAddr>,
    /// `host:port` of the provider's server.
    pub upstream: String,
    pub upstream_security: UpstreamSecurity,
    /// `[account.imap]` only: the authserv-id of the provider's own
    /// `Authentication-Results` fields (RFC 8601 §5: fields with other ids are the
    /// sender's claims). An Autocrypt key from a message it passed (DKIM or DMARC for
    /// the From domain) may satisfy `require`.
    #[serde(default)]
    pub authserv_id: Option<String>,
    /// Every connection starts with a PROXY protocol v2 header (a load balancer's
    /// `send-proxy-v2`), whose source address is then the client's; a connection
    /// without one is refused. Off: a connection that starts with one is refused.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Most connections at once from one client address (the header's, behind a load
    /// balancer), per listener; none: no limit per address.
    #[serde(default)]
    pub max_connections_per_ip: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub address: String,
    /// Login name at the provider when it differs from the address.
    #[serde(default)]
    pub login: Option<String>,
    /// The `[[account]]` (by name) whose listeners this identity serves; required when
    /// there are several accounts. Sessions of other accounts never use it.
    #[serde(default)]
    pub account: Option<String>,
    pub secret_key: PathBuf,
    #[serde(default)]
    pub passphrase_file: Option<PathBuf>,
    /// Name of a systemd credential (`$CREDENTIALS_DIRECTORY/<name>`) holding the passphrase.
    #[serde(default)]
    pub passphrase_credential: Option<String>,
    /// Name of an environment variable holding the passphrase.
    #[serde(default)]
    pub passphrase_env: Option<String>,
}

/// Where recipients' keys are looked for, in the configured order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeySource {
    /// The local key store.
    Store,
    /// Keys learned from Autocrypt headers of received mail.
    Autocrypt,
    /// Web Key Directory of the recipient's domain.
    Wkd,
    /// A keys.openpgp.org-style verifying key server (by e-mail).
    Vks,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// Public key store (an openpgp-cert-d directory, shared with `sq`).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Folder of secret keys, `<address>.asc` (and `<address>.pass`), for users without
    /// an `[[identity]]` (see [`crate::keys::secret_dir`]).
    #[serde(default)]
    pub secret_dir: Option<PathBuf>,
    /// PEM file of CA certificates trusted besides the system's.
    #[serde(default)]
    pub extra_ca: Option<PathBuf>,
    /// Lookup order for recipients' keys.
    #[serde(default = "default_discover")]
    pub discover: Vec<KeySource>,
    /// Base URL of the verifying key server (`/vks/v1/by-email/` is appended), or
    /// `hkps://host` for an HKP key server (`/pks/lookup?op=get`).
    #[serde(default = "default_vks")]
    pub vks: String,
    /// Host name -> `ip:port` overrides for key lookups (like curl's --resolve).
    #[serde(default)]
    pub resolve: std::collections::BTreeMap<String, String>,
    /// Seconds all lookups for one message may take together.
    #[serde(default = "default_lookup_timeout")]
    pub lookup_timeout_secs: u64,
    /// Seconds a lookup that found nothing is remembered.
    #[serde(default = "default_negative_cache")]
    pub negative_cache_secs: u64,
    /// Seconds between refreshes of discovered keys from their source (0: never).
    #[serde(default = "default_refresh")]
    pub refresh_interval_secs: u64,
    /// Announce the sender's key in outgoing mail (Autocrypt header).
    #[serde(default = "yes")]
    pub autocrypt: bool,
    /// Announce `prefer-encrypt=mutual` in the Autocrypt header.
    #[serde(default)]
    pub prefer_encrypt_mutual: bool,
    /// Look Bcc recipients up on the network too. Off by default: a WKD or key server
    /// lookup tells the recipient's domain (and the key server) that this address got
    /// mail, which a Bcc is meant to hide. The local store and Autocrypt still answer.
    #[serde(default)]
    pub lookup_bcc: bool,
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            dir: None,
            secret_dir: None,
            extra_ca: None,
            discover: default_discover(),
            vks: default_vks(),
            resolve: Default::default(),
            lookup_timeout_secs: default_lookup_timeout(),
            negative_cache_secs: default_negative_cache(),
            refresh_interval_secs: default_refresh(),
            autocrypt: true,
            prefer_encrypt_mutual: false,
            lookup_bcc: false,
        }
    }
}

fn default_discover() -> Vec<KeySource> {
    vec![
        KeySource::Store,
        KeySource::Autocrypt,
        KeySource::Wkd,
        KeySource::Vks,
    ]
}
fn default_vks() -> String {
    "https://keys.openpgp.org".into()
}
fn default_lookup_timeout() -> u64 {
    5
}
fn default_negative_cache() -> u64 {
    3600
}
fn default_refresh() -> u64 {
    86400
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default = "default_action")]
    pub default: PolicyAction,
    #[serde(default = "yes")]
    pub sign: bool,
    #[serde(default = "yes")]
    pub protect_headers: bool,
    #[serde(default, rename = "rule")]
    pub rules: Vec<PolicyRule>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            default: default_action(),
            sign: true,
            protect_headers: true,
            rules: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    /// The recipients the rule is for: an address, a domain (every address there), or
    /// a glob where `*` matches any run of characters.
    #[serde(default)]
    pub recipient: Option<String>,
    /// The senders the rule is for (envelope sender or From), in the same forms.
    #[serde(default)]
    pub sender: Option<String>,
    pub action: PolicyAction,
}

/// `[audit]`: where the audit log goes (see [`crate::audit`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// JSON lines appended to this file (created with mode 0600).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Each record also as a log event with the target `sealpost::audit` (stderr, which
    /// journald keeps under systemd).
    #[serde(default)]
    pub journal: bool,
}

/// `[metrics]`: the Prometheus endpoint (see [`crate::metrics`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the HTTP listener serving `GET /metrics`; none: no listener.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

/// How the IMAP proxy treats what clients store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapSettings {
    /// Which APPENDs are encrypted to the identity's own key before the provider
    /// stores them.
    #[serde(default)]
    pub encrypt_append: EncryptAppend,
    /// Keep what SEARCH reads of encrypted mail in a persistent index per identity
    /// (`state_dir/index`, encrypted at rest to the identity's key); off: it is kept in
    /// memory only and built again after a restart.
    #[serde(default = "yes")]
    pub search_index: bool,
    /// Most bytes the search index of one identity may take on disk (an index in use is
    /// held in memory too, decrypted); the messages indexed first are dropped beyond it
    /// (SEARCH then decrypts them again).
    #[serde(default = "default_search_index_size")]
    pub search_index_size: u64,
    /// Fill the search index in the background for each mailbox a client selects, over
    /// a connection of sealpost's own that logs in as the client did (the login's
    /// password or token is then kept in memory while the client's session lasts).
    #[serde(default = "yes")]
    pub search_index_fill: bool,
    /// Classify a mailbox's messages (encrypted or not) as soon as a client selects it,
    /// over a connection of sealpost's own that logs in as the client did (the login's
    /// password or token is then kept in memory while the client's session lasts, as
    /// for `search_index_fill`): a client syncing the mailbox then does not wait for it
    /// at its first FETCHes.
    #[serde(default = "yes")]
    pub classify_on_select: bool,
}

impl Default for ImapSettings {
    fn default() -> Self {
        ImapSettings {
            encrypt_append: EncryptAppend::default(),
            search_index: true,
            search_index_size: default_search_index_size(),
            search_index_fill: true,
            classify_on_select: true,
        }
    }
}

fn default_search_index_size() -> u64 {
    256 << 20
}

/// `[imap] encrypt_append`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EncryptAppend {
    /// Every APPEND of a message that is not already encrypted.
    #[default]
    All,
    /// Only APPENDs to the mailboxes LIST marks `\Sent` or `\Drafts` (RFC 6154), or
    /// named like them when the client has not listed them.
    SentDrafts,
    /// APPENDs pass through as they are.
    Off,
}

/// Bounds on everything a client can make sealpost hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest message accepted, in bytes (advertised with EHLO SIZE).
    #[serde(default = "default_max_message_size")]
    pub max_message_size: usize,
    /// Longest command or message line, in bytes, CRLF included.
    #[serde(default = "default_max_line_length")]
    pub max_line_length: usize,
    /// Most envelope recipients in one message.
    #[serde(default = "default_max_recipients")]
    pub max_recipients: usize,
    /// Seconds a client may stay silent before the connection is closed.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Seconds allowed for connecting to and each reply from upstream.
    #[serde(default = "default_upstream_timeout")]
    pub upstream_timeout_secs: u64,
    /// Seconds an IMAP server may stay silent while it owes a reply (not in IDLE)
    /// before the session ends with BYE.
    #[serde(default = "default_imap_reply_timeout")]
    pub imap_reply_timeout_secs: u64,
    /// Most client connections served at once, per listener.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Bytes of decrypted message views kept in memory for IMAP clients.
    #[serde(default = "default_view_cache_size")]
    pub view_cache_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: default_max_message_size(),
            max_line_length: default_max_line_length(),
            max_recipients: default_max_recipients(),
            idle_timeout_secs: default_idle_timeout(),
            upstream_timeout_secs: default_upstream_timeout(),
            imap_reply_timeout_secs: default_imap_reply_timeout(),
            max_connections: default_max_connections(),
            view_cache_size: default_view_cache_size(),
        }
    }
}

impl Limits {
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
    pub fn upstream_timeout(&self) -> Duration {
        Duration::from_secs(self.upstream_timeout_secs)
    }
    pub fn imap_reply_timeout(&self) -> Duration {
        Duration::from_secs(self.imap_reply_timeout_secs)
    }
}

fn default_action() -> PolicyAction {
    PolicyAction::Opportunistic
}
fn yes() -> bool {
    true
}
fn default_max_message_size() -> usize {
    50 * 1024 * 1024
}
fn default_max_line_length() -> usize {
    // RFC 5321 §4.5.3.1.6 asks for at least 1000 octets per text line; IMAP clients send
    // UID sets of tens of KB for big mailboxes (mbsync, Thunderbird) and long AUTH
    // responses, so give generous room while staying bounded.
    64 * 1024
}
fn default_max_recipients() -> usize {
    100
}
fn default_idle_timeout() -> u64 {
    // RFC 5321 §4.5.3.2.7 suggests a server timeout of at least 5 minutes.
    300
}
fn default_upstream_timeout() -> u64 {
    60
}
fn default_imap_reply_timeout() -> u64 {
    // Longer than Thunderbird waits for a reply (100 s by default), so that a slow
    // command the provider is still working on (a MOVE of thousands of messages, a
    // SEARCH of a large mailbox) is the client's to give up on, not sealpost's.
    120
}
fn default_max_connections() -> usize {
    256
}
fn default_view_cache_size() -> usize {
    256 * 1024 * 1024
}

impl Config {
    /// Reads, parses, resolves and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ConfigError::Missing {
                    path: path.to_path_buf(),
                }
            } else {
                ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        Config::parse(&text, path)
    }

    /// Parses config text as if read from `path` (used for relative paths and messages).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: describe_toml_error(text, &e),
        })?;
        config.source = path.to_path_buf();
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        config.resolve_paths(&base);
        config.validate()?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            // `%d/NAME`: a systemd credential (see crate::paths::resolve_credential).
            *p = crate::paths::resolve_credential(p, base);
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.state_dir);
        if let Some(tls) = &mut self.tls {
            fix(&mut tls.cert);
            fix(&mut tls.key);
        }
        for id in &mut self.identities {
            fix(&mut id.secret_key);
            if let Some(p) = &mut id.passphrase_file {
                fix(p);
            }
        }
        if let Some(p) = &mut self.keys.dir {
            fix(p);
        }
        if let Some(p) = &mut self.keys.extra_ca {
            fix(p);
        }
        if let Some(p) = &mut self.keys.secret_dir {
            fix(p);
        }
        if let Some(p) = &mut self.audit.file {
            fix(p);
        }
    }

    fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.source.clone(),
            key: key.into(),
            message: message.into(),
        }
    }

    /// The account an identity belongs to (validated: it exists).
    pub fn identity_account<'a>(&'a self, id: &'a Identity) -> &'a str {
        id.account
            .as_deref()
            .unwrap_or_else(|| self.accounts[0].name.as_str())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.state.url {
            crate::state::check_url(url).map_err(|m| self.invalid("state.url", m))?;
        }
        if self.accounts.is_empty() {
            return Err(self.invalid(
                "account",
                "no [[account]] is configured; add one with an [account.smtp] section",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, account) in self.accounts.iter().enumerate() {
            let at = format!("account[{i}]");
            if account.name.trim().is_empty() {
                return Err(self.invalid(format!("{at}.name"), "must not be empty"));
            }
            if !names.insert(account.name.as_str()) {
                return Err(self.invalid(
                    format!("{at}.name"),
                    format!("the name {:?} is used by two accounts", account.name),
                ));
            }
            if account.smtp.is_none() && account.imap.is_none() {
                return Err(self.invalid(
                    at.clone(),
                    "needs an [account.smtp] or [account.imap] section",
                ));
            }
            for (kind, service) in [("smtp", &account.smtp), ("imap", &account.imap)] {
                let Some(service) = service else { continue };
                let key = format!("{at}.{kind}");
                if kind == "smtp" && service.authserv_id.is_some() {
                    return Err(self.invalid(
                        format!("{key}.authserv_id"),
                        "belongs in [account.imap] (it is read from received mail)",
                    ));
                }
                if service
                    .authserv_id
                    .as_deref()
                    .is_some_and(|s| s.trim().is_empty() || s.contains(char::is_whitespace))
                {
                    return Err(self.invalid(
                        format!("{key}.authserv_id"),
                        "must be the host name the provider writes first in Authentication-Results, e.g. \"mx.example.com\"",
                    ));
                }
                if service.max_connections_per_ip == Some(0) {
                    return Err(self.invalid(
                        format!("{key}.max_connections_per_ip"),
                        "must be at least 1 (leave it out for no limit per address)",
                    ));
                }
                if service.listen.is_none() && service.listen_tls.is_none() {
                    return Err(self.invalid(
                        key,
                        "needs `listen` (STARTTLS) or `listen_tls` (implicit TLS), e.g. listen = \"127.0.0.1:1587\"",
                    ));
                }
                let (host, _port) = split_host_port(&service.upstream)
                    .map_err(|m| self.invalid(format!("{key}.upstream"), m))?;
                if service.upstream_security == UpstreamSecurity::Plain && !is_loopback_host(&host)
                {
                    return Err(self.invalid(
                        format!("{key}.upstream_security"),
                        format!(
                            "\"plain\" is only allowed for an upstream on a loopback address, not {host:?}; use \"tls\" or \"starttls\""
                        ),
                    ));
                }
            }
        }
        for (i, id) in self.identities.iter().enumerate() {
            if !looks_like_address(&id.address) {
                return Err(self.invalid(
                    format!("identity[{i}].address"),
                    format!("{:?} is not an email address", id.address),
                ));
            }
            match &id.account {
                Some(name) if !self.accounts.iter().any(|a| &a.name == name) => {
                    let known: Vec<&str> = self.accounts.iter().map(|a| a.name.as_str()).collect();
                    return Err(self.invalid(
                        format!("identity[{i}].account"),
                        format!("no [[account]] is named {name:?}; the accounts are {known:?}"),
                    ));
                }
                None if self.accounts.len() > 1 => {
                    return Err(self.invalid(
                        format!("identity[{i}].account"),
                        "there are several [[account]]s: name the one this identity belongs to, e.g. account = \"corp\"",
                    ));
                }
                _ => {}
            }
        }
        for (i, rule) in self.policy.rules.iter().enumerate() {
            if rule.recipient.is_none() && rule.sender.is_none() {
                return Err(self.invalid(
                    format!("policy.rule[{i}]"),
                    "needs `recipient`, `sender` or both, e.g. sender = \"legal.corp.example\"",
                ));
            }
            for (key, value) in [("recipient", &rule.recipient), ("sender", &rule.sender)] {
                if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                    return Err(self.invalid(
                        format!("policy.rule[{i}].{key}"),
                        "must be an address, a domain or a glob such as \"*@example.org\"",
                    ));
                }
            }
        }
        for (host, addr) in &self.keys.resolve {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return Err(self.invalid(
                    format!("keys.resolve.{host}"),
                    format!("{addr:?} must be ip:port, e.g. \"127.0.0.1:8443\""),
                ));
            }
        }
        if !self.keys.vks.starts_with("https://") && !self.keys.vks.starts_with("hkps://") {
            return Err(self.invalid(
                "keys.vks",
                "must be an https:// URL (VKS, e.g. \"https://keys.openpgp.org\") or an hkps:// one (HKP)",
            ));
        }
        if self.keys.secret_dir.is_some() && self.accounts.len() > 1 {
            // A login at one provider must never unlock keys meant for another's users.
            return Err(self.invalid(
                "keys.secret_dir",
                "serves the one [[account]] of a gateway; with several accounts give each user an [[identity]] with account = \"...\"",
            ));
        }
        if self.keys.lookup_timeout_secs == 0 {
            return Err(self.invalid("keys.lookup_timeout_secs", "must be at least 1"));
        }
        if let Some(ac) = &self.autoconfig {
            if let Some(h) = &ac.hostname {
                let ok = !h.is_empty()
                    && h.len() <= 253
                    && h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
                if !ok {
                    return Err(self.invalid(
                        "autoconfig.hostname",
                        format!(
                            "{h:?} must be a host name or IP address, e.g. \"mail.example.org\""
                        ),
                    ));
                }
            } else if self.accounts.iter().any(|a| {
                [&a.imap, &a.smtp].into_iter().flatten().any(|s| {
                    [s.listen, s.listen_tls]
                        .into_iter()
                        .flatten()
                        .any(|l| l.ip().is_unspecified())
                })
            }) {
                return Err(self.invalid(
                    "autoconfig.hostname",
                    "a listener is on every address (0.0.0.0 or ::), so clients must be told a name: set hostname = \"mail.example.org\"",
                ));
            }
        }
        if let Some(name) = &self.instance {
            let ok = !name.is_empty()
                && name.len() <= 32
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
            if !ok {
                return Err(self.invalid(
                    "instance",
                    format!("{name:?} must be 1 to 32 letters, digits, '-' or '_', e.g. \"a\""),
                ));
            }
        }
        let l = &self.limits;
        if l.max_line_length < 1000 {
            return Err(self.invalid(
                "limits.max_line_length",
                "must be at least 1000 (RFC 5321 §4.5.3.1.6)",
            ));
        }
        if l.max_message_size < 1024 {
            return Err(self.invalid("limits.max_message_size", "must be at least 1024"));
        }
        if l.max_recipients == 0 || l.max_connections == 0 {
            return Err(self.invalid(
                "limits",
                "max_recipients and max_connections must be at least 1",
            ));
        }
        if l.idle_timeout_secs == 0
            || l.upstream_timeout_secs == 0
            || l.imap_reply_timeout_secs == 0
        {
            return Err(self.invalid(
                "limits",
                "idle_timeout_secs, upstream_timeout_secs and imap_reply_timeout_secs must be at least 1",
            ));
        }
        Ok(())
    }

    /// Where `sealpost status` finds this instance (see [`crate::status`]).
    pub fn control_socket(&self) -> PathBuf {
        crate::status::socket_path(&self.state_dir, self.instance.as_deref())
    }

    /// The public key store folder (default: `state_dir/keys`).
    pub fn key_dir(&self) -> PathBuf {
        self.keys
            .dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("keys"))
    }
}

/// Splits `host:port` (or `[v6]:port`) and checks both parts.
pub fn split_host_port(s: &str) -> Result<(String, u16), String> {
    let err = || format!("{s:?} must be host:port, e.g. \"smtp.example.com:465\"");
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(err)?;
        (h.to_string(), p)
    } else {
        let (h, p) = s.rsplit_once(':').ok_or_else(err)?;
        (h.to_string(), p)
    };
    if host.is_empty() {
        return Err(err());
    }
    let port: u16 = port.parse().map_err(|_| err())?;
    if port == 0 {
        return Err(err());
    }
    Ok((host, port))
}

/// True for `localhost` and addresses in 127.0.0.0/8 or ::1.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

fn looks_like_address(s: &str) -> bool {
    match s.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && !domain.is_empty() && !s.contains(char::is_whitespace)
        }
        None => false,
    }
}

/// Turns a toml error into "line N: message", which is what a person needs to fix it.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().to_string();
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let snippet = text.lines().nth(line - 1).unwrap_or("").trim();
            format!("line {line}: {message} (at `{snippet}`)")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
state_dir = "state"
[[account]]
name = "example"
[account.smtp]
listen = "127.0.0.1:1587"
upstream = "smtp.example.com:465"
upstream_security = "tls"
"#;

    #[test]
    fn minimal_config_gets_defaults_and_resolved_paths() {
        let c = Config::parse(MINIMAL, Path::new("/etc/sealpost/sealpost.toml")).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/etc/sealpost/state"));
        assert_eq!(c.key_dir(), PathBuf::from("/etc/sealpost/state/keys"));
        assert_eq!(c.policy.default, PolicyAction::Opportunistic);
        assert!(c.policy.sign && c.policy.protect_headers);
        assert_eq!(c.limits.max_message_size, 50 * 1024 * 1024);
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = MINIMAL.replace("upstream_security", "upstream_securty");
        let err = Config::parse(&text, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.toml"), "{err}");
        assert!(err.contains("upstream_securty"), "{err}");
        assert!(err.contains("line 8"), "{err}");
    }

    #[test]
    fn plain_upstream_only_on_loopback() {
        let text = MINIMAL.replace("\"tls\"", "\"plain\"");
        let err = Config::parse(&text, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("upstream_security"), "{err}");
        let text = text.replace("smtp.example.com", "127.0.0.1");
        Config::parse(&text, Path::new("x.toml")).unwrap();
    }

    #[test]
    fn bad_values_are_explained() {
        let text = MINIMAL.replace("\"tls\"", "\"ssl\"");
        let err = Config::parse(&text, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls") && err.contains("starttls"), "{err}");
        let text = MINIMAL.replace("smtp.example.com:465", "smtp.example.com");
        let err = Config::parse(&text, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("host:port"), "{err}");
    }

    #[test]
    fn the_documented_example_is_valid() {
        let text = include_str!("../config.example.toml");
        let c = Config::parse(text, Path::new("/etc/sealpost/sealpost.toml")).unwrap();
        assert!(c.accounts[0].imap.is_some() && c.accounts[0].smtp.is_some());
        assert_eq!(
            c.identities[0].secret_key,
            PathBuf::from("/etc/sealpost/alice.sec.asc")
        );
        // The example shows the defaults.
        let d = ImapSettings::default();
        assert_eq!(c.imap.search_index, d.search_index);
        assert_eq!(c.imap.search_index_size, d.search_index_size);
        assert_eq!(c.imap.search_index_fill, d.search_index_fill);
        assert_eq!(c.imap.classify_on_select, d.classify_on_select);
    }

    #[test]
    fn the_documented_gateway_sections_are_valid() {
        let text = include_str!("../config.example.toml")
            .replace("#[audit]", "[audit]")
            .replace("#file = \"/var/log", "file = \"/var/log")
            .replace("#journal = false", "journal = true")
            .replace("#[metrics]", "[metrics]")
            .replace(
                "#listen = \"127.0.0.1:9187\"",
                "listen = \"127.0.0.1:9187\"",
            )
            .replace("#secret_dir = ", "secret_dir = ");
        let c = Config::parse(&text, Path::new("/etc/sealpost/sealpost.toml")).unwrap();
        assert_eq!(
            c.audit.file.as_deref(),
            Some(Path::new("/var/log/sealpost/audit.jsonl"))
        );
        assert!(c.audit.journal);
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9187".parse().unwrap()));
        assert_eq!(
            c.keys.secret_dir.as_deref(),
            Some(Path::new("/etc/sealpost/secret"))
        );
        // A folder of keys serves one provider's logins only.
        let two = text
            .replace(
                "address = \"alice@example.com\"\n",
                "address = \"alice@example.com\"\naccount = \"example\"\n",
            )
            .replace(
            "[keys]\n",
            "[[account]]\nname = \"second\"\n[account.smtp]\nlisten = \"127.0.0.1:2587\"\nupstream = \"smtp.example.net:465\"\nupstream_security = \"tls\"\n[keys]\n",
        );
        let err = Config::parse(&two, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("keys.secret_dir"), "{err}");
        assert_eq!(
            c.policy.rules[1].sender.as_deref(),
            Some("legal.corp.example")
        );
    }

    #[test]
    fn load_balancer_keys() {
        let c = Config::parse(MINIMAL, Path::new("x.toml")).unwrap();
        let smtp = c.accounts[0].smtp.as_ref().unwrap();
        assert!(!smtp.proxy_protocol);
        assert_eq!(smtp.max_connections_per_ip, None);
        let text = format!("{MINIMAL}proxy_protocol = true\nmax_connections_per_ip = 20\n");
        let c = Config::parse(&text, Path::new("x.toml")).unwrap();
        let smtp = c.accounts[0].smtp.as_ref().unwrap();
        assert!(smtp.proxy_protocol);
        assert_eq!(smtp.max_connections_per_ip, Some(20));
        let text = format!("{MINIMAL}max_connections_per_ip = 0\n");
        let err = Config::parse(&text, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("account[0].smtp.max_connections_per_ip"),
            "{err}"
        );
        // The documented lines, uncommented, are valid.
        let text = include_str!("../config.example.toml")
            .replace("#proxy_protocol = false", "proxy_protocol = true")
            .replace(
                "#max_connections_per_ip = 20",
                "max_connections_per_ip = 20",
            );
        let c = Config::parse(&text, Path::new("x.toml")).unwrap();
        for s in [&c.accounts[0].smtp, &c.accounts[0].imap] {
            let s = s.as_ref().unwrap();
            assert!(s.proxy_protocol);
            assert_eq!(s.max_connections_per_ip, Some(20));
        }
    }

    #[test]
    fn instance_names_the_control_socket() {
        let c = Config::parse(MINIMAL, Path::new("/etc/sealpost/a.toml")).unwrap();
        assert_eq!(
            c.control_socket(),
            PathBuf::from("/etc/sealpost/state/control.sock")
        );
        let text = format!("instance = \"a-1\"\n{MINIMAL}");
        let c = Config::parse(&text, Path::new("/etc/sealpost/a.toml")).unwrap();
        assert_eq!(
            c.control_socket(),
            PathBuf::from("/etc/sealpost/state/control-a-1.sock")
        );
        let text = include_str!("../config.example.toml").replace("#instance = ", "instance = ");
        let c = Config::parse(&text, Path::new("/etc/sealpost/a.toml")).unwrap();
        assert_eq!(c.instance.as_deref(), Some("a"));
        for bad in ["", "../x", "a b", "a/b"] {
            let text = format!("instance = {bad:?}\n{MINIMAL}");
            let err = Config::parse(&text, Path::new("x.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("instance"), "{err}");
        }
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("[::1]:25").unwrap(),
            ("::1".to_string(), 25)
        );
        assert!(split_host_port("a:0").is_err());
        assert!(is_loopback_host("127.0.0.2"));
        assert!(is_loopback_host("::1"));
        assert!(!is_loopback_host("10.0.0.1"));
    }
}
