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
use openpgp::parse::Parse;
use openpgp::Cert;
use sequoia_openpgp as openpgp;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
}

#[derive(Debug, Clone)]
pub struct Report {
    pub address: String,
    pub attempts: Vec<Attempt>,
}

impl Report {
    /// The certificates that will be used, and where they came from.
    pub fn chosen(&self) -> Option<(KeySource, &[Cert])> {
        self.attempts.iter().find_map(|a| match &a.outcome {
            Outcome::Found(c) => Some((a.source, c.as_slice())),
            _ => None,
        })
    }
}

/// Where a discovered certificate came from (kept beside the store).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Provenance {
    pub source: KeySource,
    pub address: String,
    /// Unix time of discovery and of the last successful refresh.
    pub found_at: i64,
    #[serde(default)]
    pub refreshed_at: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ProvenanceFile {
    #[serde(default)]
    certs: BTreeMap<String, Provenance>,
}

pub struct Discovery {
    store: Arc<KeyStore>,
    autocrypt: Arc<AutocryptStore>,
    order: Vec<KeySource>,
    http: reqwest::Client,
    vks: String,
    timeout: Duration,
    negative_ttl: Duration,
    misses: Mutex<HashMap<(KeySource, String), Instant>>,
    provenance_path: PathBuf,
    provenance: Mutex<ProvenanceFile>,
}

use super::unix_now as now;

impl Discovery {
    pub fn new(
        cfg: &KeysConfig,
        state_dir: &std::path::Path,
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
        let provenance_path = state_dir.join("discovered.toml");
        let provenance = std::fs::read_to_string(&provenance_path)
            .ok()
            .and_then(|t| toml::from_str(&t).ok())
            .unwrap_or_default();
        Ok(Discovery {
            store,
            autocrypt,
            order: cfg.discover.clone(),
            http,
            vks: cfg.vks.trim_end_matches('/').to_string(),
            timeout,
            negative_ttl: Duration::from_secs(cfg.negative_cache_secs),
            misses: Mutex::new(HashMap::new()),
            provenance_path,
            provenance: Mutex::new(provenance),
        })
    }

    pub fn autocrypt(&self) -> &Arc<AutocryptStore> {
        &self.autocrypt
    }

    /// Where a stored certificate came from, if it was discovered.
    pub fn provenance(&self, fingerprint: &str) -> Option<Provenance> {
        let p = self.provenance.lock().unwrap_or_else(|e| e.into_inner());
        p.certs.get(&fingerprint.to_lowercase()).cloned()
    }

    fn save_provenance(&self, file: &ProvenanceFile) {
        if let Ok(text) = toml::to_string(file) {
            let tmp = self.provenance_path.with_extension("toml.tmp");
            if std::fs::write(&tmp, text).is_ok() {
                let _ = std::fs::rename(&tmp, &self.provenance_path);
            }
        }
    }

    fn recent_miss(&self, source: KeySource, addr: &str) -> bool {
        let misses = self.misses.lock().unwrap_or_else(|e| e.into_inner());
        misses
            .get(&(source, addr.to_string()))
            .is_some_and(|t| t.elapsed() < self.negative_ttl)
    }

    fn remember_miss(&self, source: KeySource, addr: &str) {
        let mut misses = self.misses.lock().unwrap_or_else(|e| e.into_inner());
        if misses.len() > 100_000 {
            let ttl = self.negative_ttl;
            misses.retain(|_, t| t.elapsed() < ttl);
        }
        misses.insert((source, addr.to_string()), Instant::now());
    }

    /// Asks the sources in order until one has a usable key.
    pub async fn lookup(&self, address: &str) -> Report {
        let addr = super::normalize_address(address);
        let mut attempts = Vec::new();
        let mut found = false;
        for &source in &self.order {
            if found {
                attempts.push(Attempt {
                    source,
                    outcome: Outcome::NotAsked,
                });
                continue;
            }
            let outcome = self.ask(source, &addr).await;
            found = matches!(outcome, Outcome::Found(_));
            attempts.push(Attempt { source, outcome });
        }
        Report {
            address: addr,
            attempts,
        }
    }

    async fn ask(&self, source: KeySource, addr: &str) -> Outcome {
        match source {
            KeySource::Store => match self.store.lookup(addr) {
                Ok(c) if !c.is_empty() => Outcome::Found(c),
                Ok(_) => Outcome::NotFound,
                Err(e) => Outcome::Failed(e.to_string()),
            },
            KeySource::Autocrypt => match self.autocrypt.key_for(addr) {
                Some(cert) => match unusable_reason(&cert, addr) {
                    None => Outcome::Found(vec![cert]),
                    Some(r) => Outcome::Unusable(vec![r]),
                },
                None => Outcome::NotFound,
            },
            KeySource::Wkd | KeySource::Vks => {
                if self.recent_miss(source, addr) {
                    return Outcome::CachedMiss;
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
        }
    }

    /// Stores discovered certificates with their provenance.
    fn keep(&self, certs: &[Cert], source: KeySource, addr: &str) {
        let mut p = self.provenance.lock().unwrap_or_else(|e| e.into_inner());
        for c in certs {
            match self.store.insert(c.clone().strip_secret_key_material()) {
                Ok(imported) => {
                    let entry = p
                        .certs
                        .entry(imported.fingerprint.clone())
                        .or_insert(Provenance {
                            source,
                            address: addr.to_string(),
                            found_at: now(),
                            refreshed_at: 0,
                        });
                    entry.refreshed_at = now();
                    tracing::info!(source = ?source, address = %addr, fingerprint = %imported.fingerprint, "key discovered and stored");
                }
                Err(e) => tracing::warn!(error = %e, "cannot store a discovered key"),
            }
        }
        self.save_provenance(&p);
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

    /// The usable keys for each address, looked up in parallel within one deadline.
    pub async fn keys_for(
        self: &Arc<Self>,
        addrs: &[String],
    ) -> HashMap<String, crate::trust::Found> {
        let mut handles = Vec::new();
        for a in addrs {
            let me = self.clone();
            let a = a.clone();
            handles.push((a.clone(), tokio::spawn(async move { me.lookup(&a).await })));
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut out = HashMap::new();
        for (addr, h) in handles {
            // A lookup still running at the deadline goes on in the background (its
            // result then serves later messages) but counts as "no key" now.
            match tokio::time::timeout_at(deadline, h).await {
                Ok(Ok(report)) => {
                    if let Some((source, certs)) = report.chosen() {
                        let vouch = match source {
                            KeySource::Store => crate::trust::Vouch::Local,
                            KeySource::Wkd => crate::trust::Vouch::Wkd,
                            KeySource::Vks => crate::trust::Vouch::Vks,
                            KeySource::Autocrypt => crate::trust::Vouch::Autocrypt,
                        };
                        let certs = certs.to_vec();
                        out.insert(addr, crate::trust::Found { certs, vouch });
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "key lookup task failed"),
                Err(_) => {
                    tracing::warn!(address = %addr, "key lookup timed out; treating as no key for this message")
                }
            }
        }
        out
    }

    /// Re-fetches every discovered certificate from its source and merges what comes
    /// back into the store (revocations, new subkeys). Returns how many were updated.
    pub async fn refresh(&self) -> usize {
        let entries: Vec<(String, Provenance)> = {
            let p = self.provenance.lock().unwrap_or_else(|e| e.into_inner());
            p.certs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let mut updated = 0;
        for (fpr, prov) in entries {
            let fetched = match prov.source {
                KeySource::Wkd => self.fetch_wkd(&prov.address).await,
                KeySource::Vks => self.fetch_vks(&prov.address).await,
                _ => continue,
            };
            let Ok(certs) = fetched else { continue };
            for c in certs
                .into_iter()
                .filter(|c| c.fingerprint().to_hex().eq_ignore_ascii_case(&fpr))
            {
                if self.store.insert(c.strip_secret_key_material()).is_ok() {
                    updated += 1;
                }
            }
            let mut p = self.provenance.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = p.certs.get_mut(&fpr) {
                e.refreshed_at = now();
            }
            self.save_provenance(&p);
        }
        // A refreshed key may now be usable or not: forget misses.
        self.misses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        updated
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

/// Percent-encodes everything but unreserved characters (RFC 3986 §2.3).
fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
