//! Where each discovered certificate came from and which addresses it was verified for.
//!
//! A certificate's user IDs are its maker's claims. A source vouches only for what it
//! was asked: the Web Key Directory of `example.org` for the address looked up there
//! (draft-koch-openpgp-webkey-service §3.1: the server returns keys for the queried
//! address), a verifying key server for the e-mail it checked. So per certificate we keep
//! the addresses something vouched for, and by what; a certificate without an entry was
//! put in the store by the administrator (`sealpost keys import`, or `sq` sharing the
//! directory) and speaks for all its user IDs. It is kept in the state database
//! ([`crate::state`]).

use crate::config::KeySource;
use crate::trust::Vouch;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

/// The TOML file earlier versions kept (`state_dir/discovered.toml`), read once to be
/// imported into the state database (see [`crate::state`]).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ProvenanceFile {
    #[serde(default)]
    pub(crate) certs: BTreeMap<String, Provenance>,
}

impl ProvenanceFile {
    /// Parses the file. Entries written before addresses were kept vouch for the one
    /// address they were found for, nothing more.
    pub(crate) fn parse(text: &str) -> Result<ProvenanceFile, toml::de::Error> {
        let mut file: ProvenanceFile = toml::from_str(text)?;
        for p in file.certs.values_mut() {
            if p.vouched.is_empty() {
                let a = super::normalize_address(&p.address);
                p.vouched.insert(a, Provenance::vouch_of(p.source));
            }
        }
        Ok(file)
    }
}
