//! Keys: the public key store and the identities' secret keys.
//!
//! The store is an openpgp-cert-d directory (the shared certificate directory format),
//! so `sq` and sealpost see the same certificates. Certificates are kept public-only and
//! merged on re-import, so updates such as new subkeys and revocations accumulate.
//! A certificate is *usable* for an address only when a valid user ID carries exactly
//! that address, the certificate is neither revoked nor expired, and it has a live,
//! encryption-capable subkey (RFC 9580 §5.2.3.29 key flags).

pub mod autocrypt;
pub mod discover;
mod generate;

pub use generate::{generate, Generated};

use openpgp::cert::prelude::*;
use openpgp::crypto::{KeyPair, Password};
use openpgp::parse::Parse;
use openpgp::policy::{Policy, StandardPolicy};
use openpgp::serialize::SerializeInto;
use openpgp::types::RevocationStatus;
use openpgp_cert_d::{CertD, MergeResult, Tag};
use sequoia_openpgp as openpgp;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
}

/// What `import` did with one certificate.
#[derive(Debug, Clone)]
pub struct Imported {
    pub fingerprint: String,
    pub user_ids: Vec<String>,
    /// False when the certificate was already in the store (and has been merged).
    pub new: bool,
}

/// The public key store.
pub struct KeyStore {
    dir: PathBuf,
    certd: CertD,
    /// Parsed certificates, valid while the store's tag is unchanged.
    cache: Mutex<Option<(Tag, std::sync::Arc<Vec<Cert>>)>>,
}

impl KeyStore {
    /// Opens (and creates, if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<KeyStore, KeyError> {
        let err = |message: String| KeyError::Store {
            dir: dir.to_path_buf(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let certd = CertD::with_base_dir(dir).map_err(|e| err(e.to_string()))?;
        Ok(KeyStore {
            dir: dir.to_path_buf(),
            certd,
            cache: Mutex::new(None),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Imports every certificate in `data` (armored or binary, one or many; `gpg
    /// --export` output works). Secret key material is dropped: the store is public.
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

    /// Inserts one public certificate, merging it with the stored copy.
    pub fn insert(&self, cert: Cert) -> Result<Imported, KeyError> {
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
        Ok(Imported {
            fingerprint,
            user_ids,
            new,
        })
    }

    /// Every certificate in the store (parsed once per change of the store).
    pub fn certs(&self) -> Result<std::sync::Arc<Vec<Cert>>, KeyError> {
        let tag = self.certd.tag();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((t, certs)) = cache.as_ref() {
            if *t == tag {
                return Ok(certs.clone());
            }
        }
        let mut certs = Vec::new();
        for item in self.certd.iter() {
            let (fpr, _tag, data) = item.map_err(|e| KeyError::Store {
                dir: self.dir.clone(),
                message: e.to_string(),
            })?;
            match Cert::from_bytes(&data) {
                Ok(c) => certs.push(c),
                Err(e) => {
                    tracing::warn!(fingerprint = %fpr, error = %e, "skipping unreadable certificate in the key store")
                }
            }
        }
        let certs = std::sync::Arc::new(certs);
        *cache = Some((tag, certs.clone()));
        Ok(certs)
    }

    /// Every certificate in the store with the addresses it is believed to speak for
    /// (see [`crate::trust`]); what signature verification may take as proven.
    pub fn believed(&self) -> Result<std::sync::Arc<Vec<crate::trust::Believed>>, KeyError> {
        let certs = self.certs()?;
        Ok(std::sync::Arc::new(
            certs
                .iter()
                .map(|c| crate::trust::Believed::for_all_user_ids(c.clone()))
                .collect(),
        ))
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
                // Make the change visible to the tag-based cache.
                *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = None;
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

    /// The certificates usable to encrypt to `address` (see the module docs).
    pub fn lookup(&self, address: &str) -> Result<Vec<Cert>, KeyError> {
        Ok(self
            .certs()?
            .iter()
            .filter(|c| usable_for(c, address, &POLICY))
            .cloned()
            .collect())
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Normalises an address for comparison: domain lower-cased, local part as given
/// except for case (virtually every provider treats it case-insensitively).
pub fn normalize_address(address: &str) -> String {
    address
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_lowercase()
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
