//! Autocrypt Level 1: announcing our keys in outgoing mail and learning peers' keys
//! from the mail they send.
//!
//! Per peer we keep the state the specification describes (Autocrypt 1.1 §2.3):
//! `last_seen`, `autocrypt_timestamp`, the announced key and `prefer-encrypt`, plus
//! gossip learned from encrypted mail (`Autocrypt-Gossip`, §2.7). A header only
//! replaces the stored key when its message is newer than the one the key came from,
//! so replayed old mail cannot roll a key back. The state lives in one TOML file in
//! `state_dir`, rewritten atomically on change.

use openpgp::parse::Parse;
use openpgp::serialize::SerializeInto;
use openpgp::Cert;
use sequoia_autocrypt::{AutocryptHeader, AutocryptHeaderType, AutocryptHeaders};
use sequoia_openpgp as openpgp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerState {
    /// Unix time of the newest message seen from the peer.
    pub last_seen: i64,
    /// Unix time of the newest message whose Autocrypt header gave `key`.
    pub autocrypt_timestamp: i64,
    /// The announced key, armored.
    #[serde(default)]
    pub key: Option<String>,
    /// `mutual` or `nopreference`.
    #[serde(default)]
    pub prefer_encrypt: String,
    #[serde(default)]
    pub gossip_timestamp: i64,
    #[serde(default)]
    pub gossip_key: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    #[serde(default)]
    peers: BTreeMap<String, PeerState>,
}

pub struct AutocryptStore {
    path: PathBuf,
    state: Mutex<StateFile>,
}

/// What a message taught us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Learned {
    Nothing,
    Key { addr: String },
    Gossip { addrs: Vec<String> },
}

impl AutocryptStore {
    /// Opens the state in `dir/autocrypt.toml` (an unreadable file starts fresh,
    /// with a warning: losing learned keys only means fewer encrypted messages).
    pub fn open(dir: &Path) -> AutocryptStore {
        let path = dir.join("autocrypt.toml");
        let state = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "unreadable Autocrypt state; starting fresh");
                StateFile::default()
            }),
            Err(_) => StateFile::default(),
        };
        AutocryptStore {
            path,
            state: Mutex::new(state),
        }
    }

    fn save(&self, state: &StateFile) {
        let Ok(text) = toml::to_string(state) else {
            return;
        };
        let tmp = self.path.with_extension("toml.tmp");
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, &self.path);
        }
    }

    pub fn peer(&self, addr: &str) -> Option<PeerState> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.peers.get(&super::normalize_address(addr)).cloned()
    }

    /// The key to use for `addr`: the announced one, else gossip.
    pub fn key_for(&self, addr: &str) -> Option<Cert> {
        let peer = self.peer(addr)?;
        let armored = peer.key.or(peer.gossip_key)?;
        Cert::from_bytes(armored.as_bytes()).ok()
    }

    /// Processes the header of a received message. `decrypted`: the header comes
    /// from inside an encrypted message, where gossip may be trusted (§2.7).
    pub fn learn(&self, header: &[u8], decrypted: bool, now: i64) -> Learned {
        // The parser reads lines without stripping CR; give it LF line ends.
        let lf: Vec<u8> = header.iter().copied().filter(|&b| b != b'\r').collect();
        let Ok(parsed) = AutocryptHeaders::from_bytes(&lf) else {
            return Learned::Nothing;
        };
        let Some(msg) = mail_parser::MessageParser::default().parse_headers(header) else {
            return Learned::Nothing;
        };
        let Some(from) = msg
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .map(super::normalize_address)
        else {
            return Learned::Nothing;
        };
        // §2.3: the effective date is the Date header, but never in the future.
        let date = msg.date().map(|d| d.to_timestamp()).unwrap_or(now).min(now);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut learned = Learned::Nothing;
        let sender: Vec<&AutocryptHeader> = parsed
            .headers
            .iter()
            .filter(|h| h.header_type == AutocryptHeaderType::Sender)
            .filter(|h| {
                h.get("addr")
                    .is_some_and(|a| super::normalize_address(&a.value) == from)
            })
            .collect();
        let peer = state.peers.entry(from.clone()).or_default();
        if date > peer.last_seen {
            peer.last_seen = date;
        }
        // §2.1: exactly one valid header for the sender counts.
        if let [h] = sender.as_slice() {
            let critical_unknown = h.attributes.iter().any(|a| {
                a.critical && !["addr", "keydata", "prefer-encrypt"].contains(&a.key.as_str())
            });
            if let (false, Some(cert)) = (critical_unknown, &h.key) {
                if date > peer.autocrypt_timestamp {
                    peer.autocrypt_timestamp = date;
                    peer.key = armored(cert);
                    peer.prefer_encrypt = h
                        .get("prefer-encrypt")
                        .map(|a| a.value.clone())
                        .filter(|v| v == "mutual")
                        .unwrap_or_else(|| "nopreference".into());
                    learned = Learned::Key { addr: from.clone() };
                }
            }
        }
        if decrypted {
            let mut addrs = Vec::new();
            for h in parsed
                .headers
                .iter()
                .filter(|h| h.header_type == AutocryptHeaderType::Gossip)
            {
                let (Some(addr), Some(cert)) = (h.get("addr"), &h.key) else {
                    continue;
                };
                let addr = super::normalize_address(&addr.value);
                let p = state.peers.entry(addr.clone()).or_default();
                if date > p.gossip_timestamp {
                    p.gossip_timestamp = date;
                    p.gossip_key = armored(cert);
                    addrs.push(addr);
                }
            }
            if !addrs.is_empty() && learned == Learned::Nothing {
                learned = Learned::Gossip { addrs };
            }
        }
        self.save(&state);
        learned
    }
}

/// A certificate as the armored text the state file keeps.
fn armored(cert: &Cert) -> Option<String> {
    String::from_utf8(cert.armored().to_vec().ok()?).ok()
}

/// The `Autocrypt:` header field announcing `cert` for `addr` (minimal key:
/// primary, signing and encryption subkeys, the matching user ID), folded.
pub fn header_field(cert: &Cert, addr: &str, mutual: bool) -> Option<String> {
    let h = AutocryptHeader::new_sender(
        &super::POLICY,
        cert,
        addr,
        if mutual { Some("mutual") } else { None },
    )
    .ok()?;
    let key = h.key.as_ref()?.to_vec().ok()?;
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(key);
    let mut out = format!("Autocrypt: addr={addr};");
    if mutual {
        out.push_str(" prefer-encrypt=mutual;");
    }
    out.push_str(" keydata=");
    for chunk in b64.as_bytes().chunks(72) {
        out.push_str("\r\n ");
        out.push_str(std::str::from_utf8(chunk).unwrap_or(""));
    }
    out.push_str("\r\n");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::tests::make_cert;

    #[test]
    fn header_round_trip_and_ordering_rules() {
        let dir = tempfile::tempdir().unwrap();
        let store = AutocryptStore::open(dir.path());
        let bob = make_cert("Bob <bob@example.org>");
        let field = header_field(&bob, "bob@example.org", true).unwrap();
        assert!(field.lines().all(|l| l.len() <= 998));
        let msg = |date: &str| {
            format!("From: Bob <bob@example.org>\r\nDate: {date}\r\n{field}Subject: x\r\n\r\n")
        };
        let now = 2_000_000_000;
        let learned = store.learn(
            msg("Tue, 24 Nov 2026 09:00:00 +0000").as_bytes(),
            false,
            now,
        );
        assert_eq!(
            learned,
            Learned::Key {
                addr: "bob@example.org".into()
            }
        );
        let peer = store.peer("BOB@example.org").unwrap();
        assert_eq!(peer.prefer_encrypt, "mutual");
        assert_eq!(
            store.key_for("bob@example.org").unwrap().fingerprint(),
            bob.fingerprint()
        );

        // An older message with another key does not roll the key back.
        let other = make_cert("bob@example.org");
        let old_field = header_field(&other, "bob@example.org", false).unwrap();
        let old = format!(
            "From: bob@example.org\r\nDate: Mon, 23 Nov 2026 09:00:00 +0000\r\n{old_field}\r\n"
        );
        assert_eq!(store.learn(old.as_bytes(), false, now), Learned::Nothing);
        assert_eq!(
            store.key_for("bob@example.org").unwrap().fingerprint(),
            bob.fingerprint()
        );

        // A header for another address than From is ignored; state survives reopening.
        let wrong = format!(
            "From: mallory@example.net\r\nDate: Wed, 25 Nov 2026 09:00:00 +0000\r\n{old_field}\r\n"
        );
        store.learn(wrong.as_bytes(), false, now);
        assert!(store.key_for("mallory@example.net").is_none());
        let reopened = AutocryptStore::open(dir.path());
        assert_eq!(
            reopened.key_for("bob@example.org").unwrap().fingerprint(),
            bob.fingerprint()
        );
    }

    #[test]
    fn gossip_only_counts_inside_encryption() {
        let dir = tempfile::tempdir().unwrap();
        let store = AutocryptStore::open(dir.path());
        let carol = make_cert("carol@example.org");
        let g = header_field(&carol, "carol@example.org", false)
            .unwrap()
            .replacen("Autocrypt:", "Autocrypt-Gossip:", 1);
        let msg =
            format!("From: bob@example.org\r\nDate: Tue, 24 Nov 2026 09:00:00 +0000\r\n{g}\r\n");
        store.learn(msg.as_bytes(), false, 2_000_000_000);
        assert!(store.key_for("carol@example.org").is_none());
        let l = store.learn(msg.as_bytes(), true, 2_000_000_000);
        assert_eq!(
            l,
            Learned::Gossip {
                addrs: vec!["carol@example.org".into()]
            }
        );
        assert!(store.key_for("carol@example.org").is_some());
    }
}
