//! Finding recipients' keys: the local store, Autocrypt, Web Key Directory and a
//! verifying key server, in the configured order.
//!
//! A key found on the network is used only when it is usable for the address (see
//! [`super::usable_for`]); it is then kept in the store, with where and when it was
//! found, and refreshed from there in the background so revocations and new subkeys
//! take effect. Misses are remembered for a while so that a busy gateway does not ask
//! the network for every message, and all lookups for one message share one deadline:
//! a slow or dead source counts as "no key" and the SMTP transaction goes on.

use super::autocrypt::AutocryptStore;
use super::{unusable_reason, KeyStore};
use crate::config::{KeySource, KeysConfig};
use crate::trust::Vouch;
use openpgp::parse::Parse;
use openpgp::Cert;
use sequoia_openpgp as openpgp;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot build the HTTP client for key lookups: {0}")]
    Http(String),
}

/// What one source said about an address.
#[derive(Debug, Clone)]
pub enum Outcome {
    Found(Vec<Cert>),
    NotFound,
    /// Certificates were found but none can be used (reason per certificate).
    Unusable(Vec<String>),
    Failed(String),
    /// A recent miss is remembered; the source was not asked.
    CachedMiss,
    /// Source not asked because an earlier one answered.
    NotAsked,
}

#[derive(Debug, Clone)]
pub struct Attempt {
    pub source: KeySource,
    pub outcome: Outcome,
    /// What vouches for the key found, when one was.
    pub vouch: Option<Vouch>,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub address: String,
    pub attempts: Vec<Attempt>,
}

impl Report {
    /// The certificates that will be used, and where they came from.
    /// An Autocrypt key is chosen only when no other source found one (the store and
    /// WKD always win over it).
    pub fn chosen(&self) -> Option<(KeySource, &[Cert])> {
        self.chosen_attempt().and_then(|a| match &a.outcome {
            Outcome::Found(c) => Some((a.source, c.as_slice())),
            _ => None,
        })
    }

    fn chosen_attempt(&self) -> Option<&Attempt> {
        self.attempts
            .iter()
            .filter(|a| matches!(a.outcome, Outcome::Found(_)))
            .min_by_key(|a| a.source == KeySource::Autocrypt)
    }

    /// The chosen keys and what vouches for them.
    pub fn found(&self) -> Option<crate::trust::Found> {
        let a = self.chosen_attempt()?;
        match &a.outcome {
            Outcome::Found(certs) => Some(crate::trust::Found {
                certs: certs.clone(),
                vouch: a.vouch.unwrap_or(Provenance::vouch_of(a.source)),
            }),
            _ => None,
        }
    }
}

pub use super::provenance::Provenance;

pub struct Discovery {
    store: Arc<KeyStore>,
    autocrypt: Arc<AutocryptStore>,
    order: Vec<KeySource>,
    http: reqwest::Client,
    vks: String,
    timeout: Duration,
    negative_ttl: Duration,
    /// Misses (negative cache) live in the state database, shared by instances.
    db: Arc<crate::state::State>,
    /// Counts misses remembered, to prune expired ones now and then.
    misses_noted: AtomicU64,
    lookup_bcc: bool,
}

/// A recipient whose key is wanted. A Bcc recipient (an envelope recipient not named in
/// To or Cc) is looked up on the network only with `[keys] lookup_bcc = true`, and its
/// address is logged at debug level only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub address: String,
    pub bcc: bool,
}

impl Discovery {
    pub fn new(
        cfg: &KeysConfig,
        db: Arc<crate::state::State>,
        store: Arc<KeyStore>,
        autocrypt: Arc<AutocryptStore>,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Discovery, DiscoveryError> {
        let timeout = Duration::from_secs(cfg.lookup_timeout_secs);
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .https_only(true)
            .timeout(timeout)
            .user_agent(concat!("sealpost/", env!("CARGO_PKG_VERSION")));
        for (host, addr) in &cfg.resolve {
            if let Ok(a) = addr.parse() {
                builder = builder.resolve(host, a);
            }
        }
        let http = builder
            .build()
            .map_err(|e| DiscoveryError::Http(e.to_string()))?;
        Ok(Discovery {
            store,
            autocrypt,
            order: cfg.discover.clone(),
            http,
            vks: cfg.vks.trim_end_matches('/').to_string(),
            timeout,
            negative_ttl: Duration::from_secs(cfg.negative_cache_secs),
            db,
            misses_noted: AtomicU64::new(0),
            lookup_bcc: cfg.lookup_bcc,
        })
    }

    pub fn autocrypt(&self) -> &Arc<AutocryptStore> {
        &self.autocrypt
    }

    /// Where a stored certificate came from, if it was discovered.
    pub fn provenance(&self, fingerprint: &str) -> Option<Provenance> {
        self.store.provenance(fingerprint)
    }

    fn recent_miss(&self, source: KeySource, addr: &str) -> bool {
        let since = super::unix_now() - self.negative_ttl.as_secs() as i64;
        self.db
            .recent_miss(source_name(source), addr, since)
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read the key lookup cache");
                false
            })
    }

    fn remember_miss(&self, source: KeySource, addr: &str) {
        let now = super::unix_now();
        // Expired misses are dropped every 256th miss, not scanned for on each.
        let prune = self
            .misses_noted
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(256)
            .then(|| now - self.negative_ttl.as_secs() as i64);
        if let Err(e) = self.db.remember_miss(source_name(source), addr, now, prune) {
            tracing::warn!(error = %e, "cannot remember a key lookup miss");
        }
    }

    /// Asks the sources in order until one has a usable key, for mail sent by
    /// `identity` (whose Autocrypt state is consulted). An Autocrypt key does not stop
    /// the search before the domain's WKD: a key the domain publishes wins.
    pub async fn lookup(&self, address: &str, identity: Option<&str>) -> Report {
        self.lookup_in(address, identity, true, true).await
    }

    /// [`Discovery::lookup`], asking the network even where a miss is remembered (what
    /// `sealpost keys lookup` shows: every source's answer now). The answers are kept
    /// as usual.
    pub async fn lookup_uncached(&self, address: &str, identity: Option<&str>) -> Report {
        self.lookup_in(address, identity, true, false).await
    }

    /// [`Discovery::lookup`]; with `network` false only the local sources are asked,
    /// with `cached` false remembered misses are not believed.
    async fn lookup_in(
        &self,
        address: &str,
        identity: Option<&str>,
        network: bool,
        cached: bool,
    ) -> Report {
        let addr = super::normalize_address(address);
        let mut attempts = Vec::new();
        let mut found = false;
        let mut autocrypt_found = false;
        for &source in &self.order {
            let is_network = matches!(source, KeySource::Wkd | KeySource::Vks);
            if found || (autocrypt_found && source != KeySource::Wkd) || (is_network && !network) {
                attempts.push(Attempt {
                    source,
                    outcome: Outcome::NotAsked,
                    vouch: None,
                });
                continue;
            }
            let (outcome, vouch) = self.ask(source, &addr, identity, cached).await;
            crate::metrics::key_lookup(source, metric_label(&outcome));
            if matches!(outcome, Outcome::Found(_)) {
                if source == KeySource::Autocrypt {
                    autocrypt_found = true;
                } else {
                    found = true;
                }
            }
            attempts.push(Attempt {
                source,
                outcome,
                vouch,
            });
        }
        Report {
            address: addr,
            attempts,
        }
    }

    async fn ask(
        &self,
        source: KeySource,
        addr: &str,
        identity: Option<&str>,
        cached: bool,
    ) -> (Outcome, Option<Vouch>) {
        let outcome = match source {
            KeySource::Store => match self.store.lookup_found(addr) {
                Ok(Some(f)) if !f.certs.is_empty() => {
                    return (Outcome::Found(f.certs), Some(f.vouch))
                }
                Ok(_) => Outcome::NotFound,
                Err(e) => Outcome::Failed(e.to_string()),
            },
            KeySource::Autocrypt => match identity.and_then(|i| self.autocrypt.key_for(i, addr)) {
                Some((cert, vouch)) => match unusable_reason(&cert, addr) {
                    None => return (Outcome::Found(vec![cert]), Some(vouch)),
                    Some(r) => Outcome::Unusable(vec![r]),
                },
                None => Outcome::NotFound,
            },
            KeySource::Wkd | KeySource::Vks => {
                if cached && self.recent_miss(source, addr) {
                    return (Outcome::CachedMiss, None);
                }
                let fetched = match source {
                    KeySource::Wkd => self.fetch_wkd(addr).await,
                    _ => self.fetch_vks(addr).await,
                };
                let outcome = match fetched {
                    Ok(certs) if certs.is_empty() => Outcome::NotFound,
                    Ok(certs) => {
                        let (usable, reasons): (Vec<_>, Vec<_>) = certs
                            .into_iter()
                            .map(|c| {
                                let r = unusable_reason(&c, addr);
                                (c, r)
                            })
                            .partition(|(_, r)| r.is_none());
                        if usable.is_empty() {
                            Outcome::Unusable(reasons.into_iter().filter_map(|(_, r)| r).collect())
                        } else {
                            let certs: Vec<Cert> = usable.into_iter().map(|(c, _)| c).collect();
                            self.keep(&certs, source, addr);
                            Outcome::Found(certs)
                        }
                    }
                    Err(e) => Outcome::Failed(e),
                };
                if !matches!(outcome, Outcome::Found(_)) {
                    tracing::info!(source = ?source, address = %addr, result = ?outcome_label(&outcome), "key lookup found nothing usable");
                    self.remember_miss(source, addr);
                }
                outcome
            }
        };
        let vouch = matches!(outcome, Outcome::Found(_)).then(|| Provenance::vouch_of(source));
        (outcome, vouch)
    }

    /// Stores discovered certificates with their provenance: each speaks for `addr`
    /// only (see [`super::provenance`]).
    fn keep(&self, certs: &[Cert], source: KeySource, addr: &str) {
        for c in certs {
            match self.store.insert_discovered(c.clone(), addr, source) {
                Ok(imported) => {
                    tracing::info!(source = ?source, address = %addr, fingerprint = %imported.fingerprint, "key discovered and stored");
                }
                Err(e) => tracing::warn!(error = %e, "cannot store a discovered key"),
            }
        }
    }

    async fn fetch_wkd(&self, addr: &str) -> Result<Vec<Cert>, String> {
        let fut = sequoia_net::wkd::get_with_client(&self.http, addr);
        let certs = tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| "timed out".to_string())?;
        match certs {
            Ok(list) => Ok(list.into_iter().filter_map(Result::ok).collect()),
            Err(e) => {
                let text = e.to_string();
                // 404 on both methods: the domain publishes no key for this address.
                if text.contains("404") || text.contains("Not Found") || text.contains("NotFound") {
                    Ok(Vec::new())
                } else {
                    Err(text)
                }
            }
        }
    }

    async fn fetch_vks(&self, addr: &str) -> Result<Vec<Cert>, String> {
        // keys.openpgp.org's VKS API, or the older HKP lookup for an `hkps://` base.
        let url = match self.vks.strip_prefix("hkps://") {
            Some(host) => format!(
                "https://{host}/pks/lookup?op=get&options=mr&search={}",
                percent_encode(addr)
            ),
            None => format!("{}/vks/v1/by-email/{}", self.vks, percent_encode(addr)),
        };
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| describe_reqwest(&e))?;
        match resp.status().as_u16() {
            200 => {
                let body = resp.bytes().await.map_err(|e| describe_reqwest(&e))?;
                let certs: Vec<Cert> = openpgp::cert::CertParser::from_bytes(&body)
                    .map_err(|e| e.to_string())?
                    .filter_map(Result::ok)
                    .collect();
                Ok(certs)
            }
            404 => Ok(Vec::new()),
            s => Err(format!("HTTP status {s}")),
        }
    }

    /// The usable keys for each address, for mail sent by `identity`. The local store
    /// (and Autocrypt state) answer first, outside any deadline: a stored key is never
    /// lost to a slow network. The network lookups then run in parallel within one
    /// deadline; one still running at the deadline counts as "no key from the network".
    pub async fn keys_for(
        self: &Arc<Self>,
        identity: Option<&str>,
        wanted: &[Wanted],
    ) -> HashMap<String, crate::trust::Found> {
        let mut out = HashMap::new();
        let mut handles = Vec::new();
        for w in wanted {
            let addr = super::normalize_address(&w.address);
            let local = self.lookup_in(&addr, identity, false, true).await;
            let network_allowed = !w.bcc || self.lookup_bcc;
            if !network_allowed {
                tracing::debug!(address = %addr, "Bcc recipient: local store and Autocrypt only ([keys] lookup_bcc = false)");
            }
            let stored = local
                .attempts
                .iter()
                .any(|t| t.source == KeySource::Store && matches!(t.outcome, Outcome::Found(_)));
            let fallback = local.found();
            let needs_network = !stored
                && network_allowed
                && self
                    .order
                    .iter()
                    .any(|s| matches!(s, KeySource::Wkd | KeySource::Vks));
            if !needs_network {
                if let Some(f) = fallback {
                    out.insert(addr, f);
                }
                continue;
            }
            let me = self.clone();
            let id = identity.map(str::to_string);
            let a2 = addr.clone();
            let h = tokio::spawn(async move { me.lookup_in(&a2, id.as_deref(), true, true).await });
            handles.push((addr, w.bcc, fallback, h));
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        for (addr, bcc, fallback, h) in handles {
            // A lookup still running at the deadline goes on in the background (its
            // result then serves later messages) but counts as "no key" now.
            let found = match tokio::time::timeout_at(deadline, h).await {
                Ok(Ok(report)) => report.found(),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "key lookup task failed");
                    fallback
                }
                Err(_) => {
                    if bcc {
                        tracing::debug!(address = %addr, "key lookup of a Bcc recipient timed out");
                        tracing::warn!("key lookup of a Bcc recipient timed out; using what the local store and Autocrypt know");
                    } else {
                        tracing::warn!(address = %addr, "key lookup timed out; using what the local store and Autocrypt know");
                    }
                    fallback
                }
            };
            if let Some(f) = found {
                out.insert(addr, f);
            }
        }
        out
    }

    /// Re-fetches every discovered certificate from its source and merges what comes
    /// back into the store (revocations, new subkeys). Returns how many were updated.
    pub async fn refresh(&self) -> usize {
        let mut updated = 0;
        for (fpr, prov) in self.store.discovered() {
            for (address, vouch) in &prov.vouched {
                let fetched = match vouch {
                    Vouch::Wkd => self.fetch_wkd(address).await,
                    Vouch::Vks => self.fetch_vks(address).await,
                    _ => continue,
                };
                let Ok(certs) = fetched else { continue };
                let source = if *vouch == Vouch::Wkd {
                    KeySource::Wkd
                } else {
                    KeySource::Vks
                };
                for c in certs
                    .into_iter()
                    .filter(|c| c.fingerprint().to_hex().eq_ignore_ascii_case(&fpr))
                {
                    if self.store.insert_discovered(c, address, source).is_ok() {
                        updated += 1;
                    }
                }
                self.store.refreshed(&fpr);
            }
        }
        // A refreshed key may now be usable or not: forget misses.
        if let Err(e) = self.db.forget_misses() {
            tracing::warn!(error = %e, "cannot clear the key lookup cache");
        }
        updated
    }
}

/// The name a source's misses are kept under.
fn source_name(source: KeySource) -> &'static str {
    match source {
        KeySource::Store => "store",
        KeySource::Wkd => "wkd",
        KeySource::Vks => "vks",
        KeySource::Autocrypt => "autocrypt",
    }
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        format!("cannot connect: {e}")
    } else {
        e.to_string()
    }
}

/// Everything but unreserved characters (RFC 3986 §2.3) is percent-encoded.
const NOT_UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `s` as one URL path segment or query value.
fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, NOT_UNRESERVED).to_string()
}

/// The `result` label of `sealpost_key_lookups_total` for an outcome.
fn metric_label(o: &Outcome) -> &'static str {
    match o {
        Outcome::Found(_) => "found",
        Outcome::NotFound => "not_found",
        Outcome::Unusable(_) => "unusable",
        Outcome::Failed(_) => "failed",
        Outcome::CachedMiss => "cached_miss",
        Outcome::NotAsked => "not_asked",
    }
}

/// A short label for logs and `keys lookup`.
pub fn outcome_label(o: &Outcome) -> String {
    match o {
        Outcome::Found(c) => format!(
            "found {}",
            c.iter()
                .map(|c| c.fingerprint().to_hex())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Outcome::NotFound => "no key".into(),
        Outcome::Unusable(r) => format!("key found but not usable: {}", r.join("; ")),
        Outcome::Failed(e) => format!("lookup failed: {e}"),
        Outcome::CachedMiss => "no key (remembered miss, not asked again)".into(),
        Outcome::NotAsked => "not asked".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_addresses_for_urls() {
        assert_eq!(percent_encode("a.b+c@x.org"), "a.b%2Bc%40x.org");
    }
}
