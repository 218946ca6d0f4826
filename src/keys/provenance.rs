//! Where each discovered certificate came from and which addresses it was verified for.
//!
//! A certificate's user IDs are its maker's claims. A source vouches only for what it
//! was asked: the Web Key Directory of `example.org` for the address looked up there
//! (draft-koch-openpgp-webkey-service §3.1: the server returns keys for the queried
//! address), a verifying key server for the e-mail it checked. So per certificate we keep
//! the addresses something vouched for, and by what; a certificate without an entry was
//! put in the store by the administrator (`sealpost keys import`, or `sq` sharing the
//! directory) and speaks for all its user IDs. The file is `state_dir/discovered.toml`.

use crate::config::KeySource;
use crate::trust::Vouch;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Where a discovered certificate came from (kept beside the store).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Provenance {
    /// The source that found the certificate first.
    pub source: KeySource,
    /// The address it was first found for.
    pub address: String,
    /// Unix time of discovery and of the last successful refresh.
    pub found_at: i64,
    #[serde(default)]
    pub refreshed_at: i64,
    /// Normalised address -> what vouched for the certificate speaking for it. Only
    /// these addresses are believed, unless `local`.
    #[serde(default)]
    pub vouched: BTreeMap<String, Vouch>,
    /// Also imported by the administrator: then every user ID is believed.
    #[serde(default)]
    pub local: bool,
}

impl Provenance {
    /// The vouch a source gives for the address it was asked about.
    pub fn vouch_of(source: KeySource) -> Vouch {
        match source {
            KeySource::Store => Vouch::Local,
            KeySource::Wkd => Vouch::Wkd,
            KeySource::Vks => Vouch::Vks,
            KeySource::Autocrypt => Vouch::Autocrypt,
        }
    }

    /// What vouches for this certificate speaking for `address` (normalised), if anything.
    pub fn vouch_for(&self, address: &str) -> Option<Vouch> {
        if self.local {
            return Some(Vouch::Local);
        }
        self.vouched.get(address).copied()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ProvenanceFile {
    #[serde(default)]
    pub(crate) certs: BTreeMap<String, Provenance>,
}

impl ProvenanceFile {
    /// Reads the file; a missing file is empty. Entries written before addresses were
    /// kept vouch for the one address they were found for, nothing more.
    pub(crate) fn load(path: &Path) -> ProvenanceFile {
        let mut file: ProvenanceFile = match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "unreadable key provenance; discovered keys are believed for no address until found again");
                ProvenanceFile::default()
            }),
            Err(_) => ProvenanceFile::default(),
        };
        for p in file.certs.values_mut() {
            if p.vouched.is_empty() {
                let a = super::normalize_address(&p.address);
                p.vouched.insert(a, Provenance::vouch_of(p.source));
            }
        }
        file
    }

    /// Rewrites the file atomically (write a temporary file, then rename).
    pub(crate) fn save(&self, path: &Path) {
        let Ok(text) = toml::to_string(self) else {
            return;
        };
        let tmp = path.with_extension("toml.tmp");
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path)) {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot save key provenance; check that state_dir is writable")
            }
        }
    }
}
