//! Keys: the public key store and the identities' secret keys.
//!
//! The store is an openpgp-cert-d directory (the shared certificate directory format),
//! so `sq` and sealpost see the same certificates. Certificates are kept public-only and
//! merged on re-import, so updates such as new subkeys and revocations accumulate.
//! A certificate is *usable* for an address only when a valid user ID carries exactly
//! that address, the certificate is neither revoked nor expired, and it has a live,
//! encryption-capable subkey (RFC 9580 §5.2.3.29 key flags).

pub mod authres;
pub mod autocrypt;
pub mod discover;
mod generate;
pub mod provenance;
pub mod secret_dir;

pub use generate::{generate, Generated};

use crate::config::KeySource;
use openpgp::cert::prelude::*;
use openpgp::crypto::{KeyPair, Password};
use openpgp::parse::Parse;
use openpgp::policy::{Policy, StandardPolicy};
use openpgp::serialize::SerializeInto;
use openpgp::types::RevocationStatus;
use openpgp_cert_d::{CertD, MergeResult, Tag};
use sequoia_openpgp as openpgp;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The one OpenPGP policy sealpost uses, passed explicitly where needed.
pub static POLICY: StandardPolicy<'static> = StandardPolicy::new();

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot open the key store {dir}: {message}")]
    Store { dir: PathBuf, message: String },
    #[error("{source_name}: no OpenPGP certificate found ({message})")]
    Parse {
        source_name: String,
        message: String,
    },
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("identity {address}: {message}")]
    Identity { address: String, message: String },
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

/// What `import` did with one certificate.
#[derive(Debug, Clone)]
pub struct Imported {
    pub fingerprint: String,
    pub user_ids: Vec<String>,
    /// False when the certificate was already in the store (and has been merged).
    pub new: bool,
}

/// The public key store, and the secret keys of `[keys] secret_dir` (see
/// [`secret_dir`]), which the config's identities stand in front of.
pub struct KeyStore {
    dir: PathBuf,
    certd: CertD,
    secrets: Option<secret_dir::SecretDir>,
    /// Where provenance is kept (see [`crate::state`]); `None`: in memory only.
    db: Option<Arc<crate::state::State>>,
    state: Mutex<StoreState>,
}

/// The parsed store: each certificate file parsed once per change of that file (cert-d
/// tags per file), and the derived lists handed out as shared snapshots.
#[derive(Default)]
struct StoreState {
    /// The store's tag when `files` was last brought up to date; `None`: rescan.
    tag: Option<Tag>,
    files: HashMap<String, (Tag, Cert)>,
    /// Fingerprint -> provenance: the database's rows as of the last rescan or change
    /// (another instance sharing the database and the store changes the store's tag).
    provenance: std::collections::BTreeMap<String, provenance::Provenance>,
    /// Rebuilt after any change of `files` or `provenance`.
    snapshot: Option<Snapshot>,
    /// When the store's tag was last read (see [`TAG_PROBE_INTERVAL`]); `None` after a
    /// change made here.
    probed: Option<std::time::Instant>,
}

/// How long the store's tag, once read, is taken as current. Reading it stats every
/// sub-directory of the cert-d (256 of them in a gateway's store) and every message
/// looks keys up several times; a certificate another process adds is seen this much
/// later, one added here at once.
const TAG_PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

#[derive(Clone)]
struct Snapshot {
    certs: Arc<Vec<Cert>>,
    believed: Arc<Vec<crate::trust::Believed>>,
    /// The positions in `certs` of the certificates with a user ID (valid or not) whose
    /// address is the key, normalised, in order: a lookup checks those, not every
    /// certificate of a gateway's store.
    by_address: Arc<HashMap<String, Vec<usize>>>,
}

impl KeyStore {
    /// Opens (and creates, if needed) the store in `dir`, with provenance kept in memory
    /// only: every certificate there speaks for all its user IDs (an imported store).
    pub fn open(dir: &Path) -> Result<KeyStore, KeyError> {
        Self::open_inner(dir, None)
    }

    /// Opens the store in `dir` with the provenance of discovered certificates kept in
    /// the SQLite state of `state_dir` (see [`provenance`] and [`crate::state`]).
    pub fn open_with_state(dir: &Path, state_dir: &Path) -> Result<KeyStore, KeyError> {
        let db = crate::state::State::open(&Default::default(), state_dir)?;
        Self::open_inner(dir, Some(Arc::new(db)))
    }

    /// Opens the store in `dir` with provenance kept in `db`.
    pub fn open_with_db(dir: &Path, db: Arc<crate::state::State>) -> Result<KeyStore, KeyError> {
        Self::open_inner(dir, Some(db))
    }

    fn open_inner(dir: &Path, db: Option<Arc<crate::state::State>>) -> Result<KeyStore, KeyError> {
        let err = |message: String| KeyError::Store {
            dir: dir.to_path_buf(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let certd = CertD::with_base_dir(dir).map_err(|e| err(e.to_string()))?;
        let provenance = match &db {
            Some(db) => db.all_provenance()?,
            None => Default::default(),
        };
        Ok(KeyStore {
            dir: dir.to_path_buf(),
            certd,
            secrets: None,
            db,
            state: Mutex::new(StoreState {
                provenance,
                ..StoreState::default()
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Serves the secret keys of `dir` (`[keys] secret_dir`) through
    /// [`KeyStore::secret_identity`].
    pub fn with_secret_dir(mut self, dir: Option<&Path>) -> KeyStore {
        self.secrets = dir.map(secret_dir::SecretDir::new);
        self
    }

    /// The identity of `login` from `[keys] secret_dir`, if one is configured and holds
    /// a key for that address (loaded on first use, then kept).
    pub fn secret_identity(&self, login: &str) -> Option<Arc<LoadedIdentity>> {
        self.secrets.as_ref()?.identity(login)
    }

    /// The identity of a login that upstream accepted: among `identities` (one
    /// account's `[[identity]]` entries, which win), the one with that login, else a key
    /// in `[keys] secret_dir` for it. SMTP and IMAP sessions both ask here.
    pub fn identity_for_login(
        &self,
        identities: &[Arc<LoadedIdentity>],
        login: &str,
    ) -> Option<Arc<LoadedIdentity>> {
        identities
            .iter()
            .find(|i| i.login.eq_ignore_ascii_case(login))
            .cloned()
            .or_else(|| self.secret_identity(login))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StoreState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Imports every certificate in `data` (armored or binary, one or many; `gpg
    /// --export` output works). Secret key material is dropped: the store is public.
    /// The administrator's import vouches for every user ID.
    pub fn import(&self, data: &[u8], source_name: &str) -> Result<Vec<Imported>, KeyError> {
        let parse_err = |message: String| KeyError::Parse {
            source_name: source_name.to_string(),
            message,
        };
        let parser = CertParser::from_bytes(data).map_err(|e| parse_err(e.to_string()))?;
        let mut out = Vec::new();
        for cert in parser {
            let cert = cert.map_err(|e| parse_err(e.to_string()))?;
            out.push(self.insert(cert.strip_secret_key_material())?);
        }
        if out.is_empty() {
            return Err(parse_err("the input is empty".into()));
        }
        Ok(out)
    }

    /// Inserts one public certificate as the administrator's (every user ID believed),
    /// merging it with the stored copy.
    pub fn insert(&self, cert: Cert) -> Result<Imported, KeyError> {
        let imported = self.merge_into_certd(cert)?;
        let mut state = self.lock();
        if state
            .provenance
            .get(&imported.fingerprint)
            .is_some_and(|p| !p.local)
        {
            self.change_provenance(&mut state, &imported.fingerprint, |p| {
                p.map(|p| provenance::Provenance { local: true, ..p })
            })?;
        }
        Ok(imported)
    }

    /// Inserts a certificate `vouch` found for `address` (a key server or WKD answer):
    /// only user IDs with that address are kept, and the certificate is believed for
    /// that address only, whatever else it claims.
    pub fn insert_discovered(
        &self,
        cert: Cert,
        address: &str,
        source: KeySource,
    ) -> Result<Imported, KeyError> {
        let addr = normalize_address(address);
        let cert = cert
            .strip_secret_key_material()
            .retain_userids(|u| {
                u.userid()
                    .email()
                    .ok()
                    .flatten()
                    .is_some_and(|e| normalize_address(e) == addr)
            })
            .retain_user_attributes(|_| false);
        // Provenance first: a certificate stored without it would count as the
        // administrator's (every user ID believed) should the second write fail.
        let fingerprint = cert.fingerprint().to_hex().to_lowercase();
        let vouch = provenance::Provenance::vouch_of(source);
        let mut state = self.lock();
        let now = unix_now();
        self.change_provenance(&mut state, &fingerprint, move |old| {
            let mut p = old.unwrap_or_else(|| provenance::Provenance {
                source,
                address: addr.clone(),
                found_at: now,
                refreshed_at: 0,
                vouched: Default::default(),
                local: false,
            });
            p.refreshed_at = now;
            let v = p.vouched.entry(addr).or_insert(vouch);
            // Strongest first: a WKD answer does not weaken what a local import said.
            *v = (*v).min(vouch);
            Some(p)
        })?;
        drop(state);
        self.merge_into_certd(cert)
    }

    /// Notes that a discovered certificate was refreshed now.
    pub fn refreshed(&self, fingerprint: &str) {
        let mut state = self.lock();
        let now = unix_now();
        let fpr = fingerprint.to_lowercase();
        let r = self.change_provenance(&mut state, &fpr, move |p| {
            p.map(|p| provenance::Provenance {
                refreshed_at: now,
                ..p
            })
        });
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot note a key refresh");
        }
    }

    /// Where a stored certificate came from, if it was discovered (read from the
    /// database, so what another instance sharing it found is seen).
    pub fn provenance(&self, fingerprint: &str) -> Option<provenance::Provenance> {
        let fpr = fingerprint.to_lowercase();
        if let Some(db) = &self.db {
            match db.provenance(&fpr) {
                Ok(p) => return p,
                Err(e) => tracing::warn!(error = %e, "cannot read key provenance"),
            }
        }
        self.lock().provenance.get(&fpr).cloned()
    }

    /// Every discovered certificate's provenance, by fingerprint.
    pub fn discovered(&self) -> Vec<(String, provenance::Provenance)> {
        if let Some(db) = &self.db {
            match db.all_provenance() {
                Ok(all) => return all.into_iter().collect(),
                Err(e) => tracing::warn!(error = %e, "cannot read key provenance"),
            }
        }
        self.lock()
            .provenance
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Changes the provenance of `fpr` in the database (one transaction) and then in
    /// memory; the snapshot is rebuilt on next use.
    fn change_provenance(
        &self,
        state: &mut StoreState,
        fpr: &str,
        f: impl FnOnce(Option<provenance::Provenance>) -> Option<provenance::Provenance> + Send,
    ) -> Result<(), KeyError> {
        let new = match &self.db {
            Some(db) => db.update_provenance(fpr, f)?,
            None => f(state.provenance.get(fpr).cloned()),
        };
        match new {
            Some(p) => state.provenance.insert(fpr.to_string(), p),
            None => state.provenance.remove(fpr),
        };
        state.snapshot = None;
        Ok(())
    }

    fn merge_into_certd(&self, cert: Cert) -> Result<Imported, KeyError> {
        let fingerprint = cert.fingerprint().to_hex().to_lowercase();
        let user_ids = cert
            .userids()
            .map(|u| String::from_utf8_lossy(u.userid().value()).into_owned())
            .collect();
        let store_err = |message: String| KeyError::Store {
            dir: self.dir.clone(),
            message,
        };
        let mut new = true;
        self.certd
            .insert(&fingerprint, cert, false, |new_cert, existing| {
                let merged = match existing {
                    Some(bytes) => {
                        new = false;
                        let old = Cert::from_bytes(bytes)?;
                        old.merge_public(new_cert)?
                    }
                    None => new_cert,
                };
                Ok(MergeResult::Data(merged.to_vec()?))
            })
            .map_err(|e| store_err(e.to_string()))?;
        // Seen by the next lookup here, not only after TAG_PROBE_INTERVAL.
        self.lock().probed = None;
        Ok(Imported {
            fingerprint,
            user_ids,
            new,
        })
    }

    /// The current snapshot: files whose cert-d tag changed are parsed again, the others
    /// kept, so a busy gateway's store is not re-read whole after each discovered key.
    fn snapshot(&self) -> Result<Snapshot, KeyError> {
        {
            let state = self.lock();
            if let (Some(s), Some(at)) = (&state.snapshot, state.probed) {
                if at.elapsed() < TAG_PROBE_INTERVAL {
                    return Ok(s.clone());
                }
            }
        }
        let probed = std::time::Instant::now();
        let tag = self.certd.tag();
        let mut state = self.lock();
        state.probed = Some(probed);
        if state.tag != Some(tag) {
            let store_err = |message: String| KeyError::Store {
                dir: self.dir.clone(),
                message,
            };
            let mut files = std::mem::take(&mut state.files);
            let mut seen = HashMap::with_capacity(files.len());
            for fpr in self.certd.fingerprints() {
                let fpr = fpr.map_err(|e| store_err(e.to_string()))?;
                let old = files.remove(&fpr);
                let changed = match &old {
                    Some((t, _)) => self.certd.get_if_changed(*t, &fpr),
                    None => self.certd.get(&fpr),
                }
                .map_err(|e| store_err(e.to_string()))?;
                match (changed, old) {
                    (Some((t, data)), _) => match Cert::from_bytes(&data) {
                        Ok(c) => {
                            seen.insert(fpr, (t, c));
                        }
                        Err(e) => {
                            tracing::warn!(fingerprint = %fpr, error = %e, "skipping unreadable certificate in the key store")
                        }
                    },
                    (None, Some(old)) => {
                        seen.insert(fpr, old);
                    }
                    // Gone between listing and reading.
                    (None, None) => {}
                }
            }
            state.files = seen;
            state.tag = Some(tag);
            state.snapshot = None;
            if let Some(db) = &self.db {
                state.provenance = db.all_provenance()?;
            }
        }
        if let Some(s) = &state.snapshot {
            return Ok(s.clone());
        }
        let mut fprs: Vec<&String> = state.files.keys().collect();
        fprs.sort();
        let certs: Vec<Cert> = fprs.iter().map(|f| state.files[*f].1.clone()).collect();
        let believed = certs
            .iter()
            .map(|c| {
                let fpr = c.fingerprint().to_hex().to_lowercase();
                match state.provenance.get(&fpr) {
                    Some(p) if !p.local => crate::trust::Believed {
                        cert: c.clone(),
                        addresses: p.vouched.keys().cloned().collect(),
                    },
                    _ => crate::trust::Believed::for_all_user_ids(c.clone()),
                }
            })
            .collect();
        let mut by_address: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, c) in certs.iter().enumerate() {
            for ua in c.userids() {
                if let Ok(Some(email)) = ua.userid().email() {
                    let at = by_address.entry(normalize_address(email)).or_default();
                    if at.last() != Some(&i) {
                        at.push(i);
                    }
                }
            }
        }
        let s = Snapshot {
            certs: Arc::new(certs),
            believed: Arc::new(believed),
            by_address: Arc::new(by_address),
        };
        state.snapshot = Some(s.clone());
        Ok(s)
    }

    /// Every certificate in the store (parsed once per change of its file).
    pub fn certs(&self) -> Result<Arc<Vec<Cert>>, KeyError> {
        Ok(self.snapshot()?.certs)
    }

    /// Every certificate in the store with the addresses it is believed to speak for
    /// (see [`crate::trust`] and [`provenance`]); what signature verification may take
    /// as proven. Shared until the store or the provenance changes.
    pub fn believed(&self) -> Result<Arc<Vec<crate::trust::Believed>>, KeyError> {
        Ok(self.snapshot()?.believed)
    }

    /// Removes a certificate by fingerprint. Returns false when it was not there.
    pub fn remove(&self, fingerprint: &str) -> Result<bool, KeyError> {
        let fpr = fingerprint.replace(' ', "").to_lowercase();
        let err = |message: String| KeyError::Store {
            dir: self.dir.clone(),
            message,
        };
        let path = self
            .certd
            .get_path_by_fingerprint(&fpr)
            .map_err(|e| err(format!("{fingerprint:?} is not a fingerprint: {e}")))?;
        match std::fs::remove_file(&path) {
            Ok(()) => {
                let mut state = self.lock();
                // Make the change visible even if the store's tag did not move.
                state.tag = None;
                state.probed = None;
                self.change_provenance(&mut state, &fpr, |_| None)?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// Every stored certificate with a user ID for `address`, usable or not.
    pub fn with_address(&self, address: &str) -> Result<Vec<Cert>, KeyError> {
        let wanted = normalize_address(address);
        Ok(self
            .certs()?
            .iter()
            .filter(|c| {
                c.userids().any(|u| {
                    u.userid()
                        .email()
                        .ok()
                        .flatten()
                        .is_some_and(|e| normalize_address(e) == wanted)
                })
            })
            .cloned()
            .collect())
    }

    /// The certificates usable to encrypt to `address` that something vouches for, and
    /// the strongest such vouch (see the module docs and [`provenance`]).
    pub fn lookup_found(&self, address: &str) -> Result<Option<crate::trust::Found>, KeyError> {
        let wanted = normalize_address(address);
        let snapshot = self.snapshot()?;
        let state = self.lock();
        let mut certs = Vec::new();
        let mut best: Option<crate::trust::Vouch> = None;
        // Only a certificate with a user ID of this address can be usable for it.
        let candidates = snapshot
            .by_address
            .get(&wanted)
            .map_or(&[][..], Vec::as_slice);
        for c in candidates.iter().map(|&i| &snapshot.certs[i]) {
            let fpr = c.fingerprint().to_hex().to_lowercase();
            let vouch = match state.provenance.get(&fpr) {
                Some(p) => p.vouch_for(&wanted),
                None => Some(crate::trust::Vouch::Local),
            };
            let Some(vouch) = vouch else { continue };
            if usable_for(c, &wanted, &POLICY) {
                certs.push(c.clone());
                best = Some(best.map_or(vouch, |b| b.min(vouch)));
            }
        }
        Ok(best.map(|vouch| crate::trust::Found { certs, vouch }))
    }

    /// The certificates usable to encrypt to `address` (see [`KeyStore::lookup_found`]).
    pub fn lookup(&self, address: &str) -> Result<Vec<Cert>, KeyError> {
        Ok(self
            .lookup_found(address)?
            .map(|f| f.certs)
            .unwrap_or_default())
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The one form in which sealpost compares addresses (policy rules, key matching,
/// identities, Autocrypt state): surrounding `<>` and space removed; the domain without
/// a trailing dot (RFC 1034 §3.1: `example.org.` is the same name) and in its ASCII
/// form (RFC 5891 IDNA: `bücher.example` and `xn--bcher-kva.example` are one domain),
/// lower-cased; the local part lower-cased too (RFC 5321 §2.4 lets the receiving host
/// treat it case-sensitively, but virtually every provider does not, and a key found
/// for `Bob@` must serve `bob@`), and unquoted (`"bob"@` is `bob@`).
pub fn normalize_address(address: &str) -> String {
    let a = address
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    match a.rsplit_once('@') {
        Some((local, domain)) => {
            // A quoted local part names the same mailbox as its unquoted content
            // (RFC 5321 §4.1.2: `"boss"@` is `boss@`; quoted-pairs stand for their
            // character). Content that needs its quotes (`"a@b"`, `"a b"`) keeps them.
            let unquoted = local
                .strip_prefix('"')
                .and_then(|l| l.strip_suffix('"'))
                .map(|quoted| {
                    let mut out = String::with_capacity(quoted.len());
                    let mut chars = quoted.chars();
                    while let Some(c) = chars.next() {
                        out.push(if c == '\\' {
                            chars.next().unwrap_or(c)
                        } else {
                            c
                        });
                    }
                    out
                })
                .filter(|l| {
                    !l.is_empty()
                        && !l.starts_with('.')
                        && !l.ends_with('.')
                        && !l.contains("..")
                        && l.chars().all(|c| {
                            c.is_alphanumeric()
                                || !c.is_ascii()
                                || "!#$%&'*+-/=?^_`{|}~.".contains(c)
                        })
                });
            let local = unquoted.as_deref().unwrap_or(local);
            format!("{}@{}", local.to_lowercase(), normalize_domain(domain))
        }
        None => a.to_lowercase(),
    }
}

/// A domain in the form [`normalize_address`] uses: no trailing dot, IDNA ASCII form,
/// lower case. A name IDNA refuses (an `_` label, a glob's `*`) is only lower-cased.
pub fn normalize_domain(domain: &str) -> String {
    let d = domain.trim().trim_end_matches('.');
    match idna::domain_to_ascii(d) {
        Ok(ascii) if !ascii.is_empty() => ascii,
        _ => d.to_lowercase(),
    }
}

/// True when `cert` may be used to encrypt to `address` now.
pub fn usable_for(cert: &Cert, address: &str, policy: &dyn Policy) -> bool {
    reason_with_policy(cert, address, policy).is_none()
}

/// Why `cert` cannot be used for `address`, or `None` when it can.
pub fn unusable_reason(cert: &Cert, address: &str) -> Option<String> {
    reason_with_policy(cert, address, &POLICY)
}

fn reason_with_policy(cert: &Cert, address: &str, policy: &dyn Policy) -> Option<String> {
    let fpr = cert.fingerprint().to_hex();
    let vc = match cert.with_policy(policy, None) {
        Ok(vc) => vc,
        Err(e) => return Some(format!("{fpr}: not valid under the OpenPGP policy ({e})")),
    };
    if let RevocationStatus::Revoked(_) = vc.revocation_status() {
        return Some(format!("{fpr}: revoked"));
    }
    if let Err(e) = vc.alive() {
        return Some(format!("{fpr}: expired or not yet valid ({e})"));
    }
    let wanted = normalize_address(address);
    let uid_matches = vc.userids().any(|ua| {
        !matches!(ua.revocation_status(), RevocationStatus::Revoked(_))
            && ua
                .userid()
                .email()
                .ok()
                .flatten()
                .map(|e| normalize_address(e) == wanted)
                .unwrap_or(false)
    });
    if !uid_matches {
        return Some(format!("{fpr}: no valid user ID with the address {wanted}"));
    }
    if encryption_keys(&vc).next().is_none() {
        return Some(format!("{fpr}: no live encryption subkey"));
    }
    None
}

/// Live, unrevoked, supported subkeys that may encrypt (transport or storage).
pub fn encryption_keys<'a>(
    vc: &'a ValidCert<'a>,
) -> impl Iterator<Item = ValidErasedKeyAmalgamation<'a, openpgp::packet::key::PublicParts>> + 'a {
    vc.keys().supported().alive().revoked(false).key_flags(
        openpgp::types::KeyFlags::empty()
            .set_transport_encryption()
            .set_storage_encryption(),
    )
}

/// A configured identity with its secret key unlocked.
pub struct LoadedIdentity {
    pub address: String,
    pub login: String,
    /// The identity's certificate, public parts only.
    pub cert: Cert,
    /// Signs outgoing mail.
    pub signer: Option<KeyPair>,
    /// Decrypts incoming mail (one per encryption subkey).
    pub decryptors: Vec<KeyPair>,
}

impl std::fmt::Debug for LoadedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedIdentity")
            .field("address", &self.address)
            .field("fingerprint", &self.cert.fingerprint().to_hex())
            .finish_non_exhaustive()
    }
}

/// The passphrase of an identity and where it came from: `passphrase_file`, a
/// systemd credential (`$CREDENTIALS_DIRECTORY/<name>`) or an environment variable.
fn passphrase(id: &crate::config::Identity) -> Result<Option<(Password, String)>, KeyError> {
    let first_line = |text: &str| {
        let line = text.split('\n').next().unwrap_or("");
        Password::from(line.strip_suffix('\r').unwrap_or(line))
    };
    if let Some(path) = &id.passphrase_file {
        let text = std::fs::read_to_string(path).map_err(|e| KeyError::Read {
            path: path.clone(),
            message: e.to_string(),
        })?;
        return Ok(Some((first_line(&text), path.display().to_string())));
    }
    if let Some(name) = &id.passphrase_credential {
        let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| KeyError::Identity {
            address: id.address.clone(),
            message: format!(
                "passphrase_credential = {name:?} but $CREDENTIALS_DIRECTORY is not set (use LoadCredential= in the systemd unit)"
            ),
        })?;
        let path = PathBuf::from(dir).join(name);
        let text = std::fs::read_to_string(&path).map_err(|e| KeyError::Read {
            path: path.clone(),
            message: e.to_string(),
        })?;
        return Ok(Some((first_line(&text), format!("credential {name}"))));
    }
    if let Some(var) = &id.passphrase_env {
        let value = std::env::var(var).map_err(|_| KeyError::Identity {
            address: id.address.clone(),
            message: format!("passphrase_env = {var:?} but that environment variable is not set"),
        })?;
        return Ok(Some((first_line(&value), format!("${var}"))));
    }
    Ok(None)
}

/// Loads and unlocks an identity's secret key, so that a wrong passphrase fails at
/// start-up (and in `sealpost check`), never at the first message.
pub fn load_identity(id: &crate::config::Identity) -> Result<LoadedIdentity, KeyError> {
    let ierr = |message: String| KeyError::Identity {
        address: id.address.clone(),
        message,
    };
    let data = std::fs::read(&id.secret_key).map_err(|e| KeyError::Read {
        path: id.secret_key.clone(),
        message: e.to_string(),
    })?;
    let cert = Cert::from_bytes(&data).map_err(|e| {
        ierr(format!(
            "{} holds no OpenPGP secret key: {e}",
            id.secret_key.display()
        ))
    })?;
    if !cert.is_tsk() {
        return Err(ierr(format!(
            "{} holds only a public certificate; export the secret key (gpg --export-secret-keys --armor {})",
            id.secret_key.display(),
            id.address
        )));
    }
    let password = passphrase(id)?;
    if !usable_for(&cert, &id.address, &POLICY) && cert.with_policy(&POLICY, None).is_err() {
        return Err(ierr(
            "the key is not valid under the current OpenPGP policy".into(),
        ));
    }
    let vc = cert
        .with_policy(&POLICY, None)
        .map_err(|e| ierr(format!("the key is not valid: {e}")))?;
    let unlock = |key: openpgp::packet::Key<
        openpgp::packet::key::SecretParts,
        openpgp::packet::key::UnspecifiedRole,
    >|
     -> Result<KeyPair, KeyError> {
        let key = if key.has_unencrypted_secret() {
            key
        } else {
            let Some((pw, from)) = &password else {
                return Err(ierr(format!(
                    "the secret key in {} is protected by a passphrase; set passphrase_file, passphrase_credential or passphrase_env",
                    id.secret_key.display()
                )));
            };
            key.decrypt_secret(pw).map_err(|_| {
                ierr(format!(
                    "the passphrase from {from} does not unlock the secret key in {}",
                    id.secret_key.display()
                ))
            })?
        };
        key.into_keypair().map_err(|e| ierr(e.to_string()))
    };
    let signer = match vc
        .keys()
        .secret()
        .supported()
        .alive()
        .revoked(false)
        .for_signing()
        .next()
    {
        Some(ka) => Some(unlock(ka.key().clone().role_into_unspecified())?),
        None => None,
    };
    let mut decryptors = Vec::new();
    for ka in cert
        .keys()
        .secret()
        .with_policy(&POLICY, None)
        .supported()
        .key_flags(
            openpgp::types::KeyFlags::empty()
                .set_transport_encryption()
                .set_storage_encryption(),
        )
    {
        decryptors.push(unlock(ka.key().clone().role_into_unspecified())?);
    }
    if signer.is_none() && decryptors.is_empty() {
        return Err(ierr(
            "the key has no usable secret signing or encryption subkey".into(),
        ));
    }
    Ok(LoadedIdentity {
        address: id.address.clone(),
        login: id.login.clone().unwrap_or_else(|| id.address.clone()),
        cert: cert.strip_secret_key_material(),
        signer,
        decryptors,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh certificate with a signing and an encryption subkey.
    pub(crate) fn make_cert(uid: &str) -> Cert {
        let (cert, _) = CertBuilder::general_purpose(Some(uid)).generate().unwrap();
        cert
    }

    #[test]
    fn import_merge_and_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let bob = make_cert("Bob <bob@example.org>");
        let armored = bob.armored().to_vec().unwrap();
        let first = store.import(&armored, "bob.asc").unwrap();
        assert!(first[0].new);
        let again = store.import(&armored, "bob.asc").unwrap();
        assert!(!again[0].new);
        assert_eq!(store.lookup("Bob@Example.org").unwrap().len(), 1);
        assert!(store.lookup("bobby@example.org").unwrap().is_empty());
        // The store holds no secret key material.
        assert!(!store.certs().unwrap()[0].is_tsk());
    }

    /// A lookup checks only the certificates with a user ID of the address (the
    /// snapshot's index), and finds every one of them, whichever user ID names it.
    #[test]
    fn a_lookup_finds_every_certificate_of_the_address_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let (two, _) = CertBuilder::general_purpose(Some("Carol <carol@example.org>"))
            .add_userid("Carol Work <Carol@Work.Example>")
            .generate()
            .unwrap();
        for cert in [
            make_cert("Bob <bob@example.org>"),
            make_cert("Bob again <bob@example.org>"),
            make_cert("Dave <dave@example.org>"),
            two.clone(),
        ] {
            store
                .import(&cert.armored().to_vec().unwrap(), "t.asc")
                .unwrap();
        }
        assert_eq!(store.lookup("bob@example.org").unwrap().len(), 2);
        assert_eq!(store.lookup("DAVE@example.org").unwrap().len(), 1);
        for carol in ["carol@example.org", "carol@work.example"] {
            let found = store.lookup(carol).unwrap();
            assert_eq!(found.len(), 1, "{carol}");
            assert_eq!(found[0].fingerprint(), two.fingerprint());
        }
        assert!(store.lookup("eve@example.org").unwrap().is_empty());
    }

    #[test]
    fn addresses_have_one_normal_form() {
        for (a, b) in [
            ("Bob@Example.ORG", "bob@example.org"),
            ("<bob@example.org.>", "bob@example.org"),
            ("bob@bücher.example", "bob@xn--bcher-kva.example"),
            ("bob@BÜCHER.Example.", "bob@xn--bcher-kva.example"),
            ("bob@XN--BCHER-KVA.example", "bob@xn--bcher-kva.example"),
            ("  bob@example.org ", "bob@example.org"),
            // The last @ separates the domain; a quoted local part keeps its @.
            ("\"a@b\"@Example.org", "\"a@b\"@example.org"),
        ] {
            assert_eq!(normalize_address(a), normalize_address(b), "{a} vs {b}");
            assert_eq!(normalize_address(b), b, "{b} is normal");
        }
        assert_ne!(
            normalize_address("bob@bucher.example"),
            normalize_address("bob@bücher.example")
        );
    }

    #[test]
    fn a_discovered_certificate_speaks_only_for_the_address_it_was_found_for() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let store = KeyStore::open_with_state(dir.path(), state.path()).unwrap();
        // evil.example's WKD answers for a@evil.example with a certificate that also
        // claims the CEO's address.
        let (evil, _) = CertBuilder::general_purpose(Some("<a@evil.example>"))
            .add_userid("CEO <ceo@corp.example>")
            .generate()
            .unwrap();
        store
            .insert_discovered(evil.clone(), "a@evil.example", KeySource::Wkd)
            .unwrap();
        let found = store.lookup_found("a@evil.example").unwrap().unwrap();
        assert_eq!(found.vouch, crate::trust::Vouch::Wkd);
        assert!(store.lookup("ceo@corp.example").unwrap().is_empty());
        // The CEO's user ID is not even stored, and signatures prove only a@evil.example.
        assert!(store.with_address("ceo@corp.example").unwrap().is_empty());
        let believed = store.believed().unwrap();
        assert!(!believed[0].vouches_for("ceo@corp.example"));
        assert!(believed[0].vouches_for("A@Evil.Example"));
        // The provenance survives a restart.
        let again = KeyStore::open_with_state(dir.path(), state.path()).unwrap();
        assert!(again.lookup("ceo@corp.example").unwrap().is_empty());
        assert_eq!(again.lookup("a@evil.example").unwrap().len(), 1);
        // The same certificate merged again with the CEO user ID (a later WKD answer,
        // or `sq` writing the full one) still does not speak for the CEO.
        let store2 = KeyStore::open_with_state(dir.path(), state.path()).unwrap();
        store2.merge_into_certd(evil.clone()).unwrap();
        assert!(store2.lookup("ceo@corp.example").unwrap().is_empty());
        // The administrator's import vouches for all its user IDs.
        store2
            .import(&evil.armored().to_vec().unwrap(), "evil.asc")
            .unwrap();
        assert_eq!(
            store2
                .lookup_found("ceo@corp.example")
                .unwrap()
                .unwrap()
                .vouch,
            crate::trust::Vouch::Local
        );
    }

    #[test]
    fn the_store_is_parsed_incrementally_and_believed_is_shared() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        store.insert(make_cert("a@example.org")).unwrap();
        let first = store.believed().unwrap();
        let again = store.believed().unwrap();
        assert!(std::sync::Arc::ptr_eq(&first, &again), "no copy per call");
        store.insert(make_cert("b@example.org")).unwrap();
        let after = store.believed().unwrap();
        assert_eq!(after.len(), 2);
        assert!(!std::sync::Arc::ptr_eq(&first, &after));
        // One file changed: the other certificate's parse was kept.
        assert_eq!(store.lock().files.len(), 2);
    }

    #[test]
    fn revoked_certificate_is_not_usable() {
        let (cert, rev) = CertBuilder::general_purpose(Some("c@example.org"))
            .generate()
            .unwrap();
        assert!(usable_for(&cert, "c@example.org", &POLICY));
        let (revoked, _) = cert.insert_packets(rev).unwrap();
        assert!(!usable_for(&revoked, "c@example.org", &POLICY));
    }

    #[test]
    fn certificate_without_encryption_subkey_is_not_usable() {
        let (cert, _) = CertBuilder::new()
            .add_userid("s@example.org")
            .add_signing_subkey()
            .generate()
            .unwrap();
        assert!(!usable_for(&cert, "s@example.org", &POLICY));
    }

    #[test]
    fn expired_certificate_is_not_usable() {
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 86400);
        let (cert, _) = CertBuilder::general_purpose(Some("e@example.org"))
            .set_creation_time(past)
            .set_validity_period(std::time::Duration::from_secs(86400))
            .generate()
            .unwrap();
        assert!(!usable_for(&cert, "e@example.org", &POLICY));
    }
}
