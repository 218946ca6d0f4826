//! Autocrypt Level 1: announcing our keys in outgoing mail and learning peers' keys
//! from the mail they send.
//!
//! Per peer we keep the state the specification describes (Autocrypt 1.1 §2.3):
//! `last_seen`, `autocrypt_timestamp`, the announced key and `prefer-encrypt`, plus
//! gossip learned from encrypted mail (`Autocrypt-Gossip`, §2.7). A header only
//! replaces the stored key when its message is newer than the one the key came from,
//! so replayed old mail cannot roll a key back. The state lives in the state database
//! ([`crate::state`]), one row per identity and peer, each message's changes one
//! transaction; nothing is cached here, so instances sharing PostgreSQL learn together.

use openpgp::parse::Parse;
use openpgp::serialize::SerializeInto;
use openpgp::Cert;
use sequoia_autocrypt::{AutocryptHeader, AutocryptHeaderType, AutocryptHeaders};
use sequoia_openpgp as openpgp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::trust::Vouch;

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
    /// The message `key` came from was authenticated (see [`Evidence`]).
    #[serde(default)]
    pub key_authenticated: bool,
    /// Message-ID of the message `key` came from.
    #[serde(default)]
    pub key_message_id: Option<String>,
    #[serde(default)]
    pub gossip_timestamp: i64,
    #[serde(default)]
    pub gossip_key: Option<String>,
    /// Message-ID of the message the gossip came from.
    #[serde(default)]
    pub gossip_message_id: Option<String>,
}

/// The TOML file earlier versions kept (`state_dir/autocrypt.toml`): per identity
/// (normalised address), per peer. A global state written before that layout (`peers`)
/// is not read: it cannot say which user saw the message.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    #[serde(default)]
    identities: BTreeMap<String, BTreeMap<String, PeerState>>,
}

/// Reads the legacy TOML file, to be imported into the state database once.
pub(crate) fn parse_legacy(
    text: &str,
) -> Result<BTreeMap<String, BTreeMap<String, PeerState>>, toml::de::Error> {
    Ok(toml::from_str::<StateFile>(text)?.identities)
}

pub struct AutocryptStore {
    db: Arc<crate::state::State>,
}

/// What a message taught us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Learned {
    Nothing,
    Key { addr: String },
    Gossip { addrs: Vec<String> },
}

/// What is known about the message a header comes from, which decides what it may teach.
#[derive(Debug, Clone, Copy, Default)]
pub struct Evidence<'a> {
    /// The header is from inside an encrypted part whose signature is good for these
    /// (normalised) addresses. Gossip counts only here (Autocrypt 1.1 §2.7 trusts gossip
    /// inside encryption; anyone can encrypt to us, so we ask for a good signature too),
    /// and the announced key is authenticated when the From is among them.
    pub signed_good_for: Option<&'a [String]>,
    /// The account's own provider's authserv-id: an `Authentication-Results` field from
    /// it with DKIM or DMARC pass for the From domain authenticates the message.
    pub authserv_id: Option<&'a str>,
}

/// Is `mailbox` where the provider or the user puts spam? Autocrypt state is never
/// learned there: it is where forged mail ends up. The last hierarchy level is compared
/// (`INBOX.Junk`, `[Gmail]/Spam`), case-insensitively.
pub fn is_junk_mailbox(mailbox: &str) -> bool {
    const JUNK: [&str; 7] = [
        "junk",
        "spam",
        "junk e-mail",
        "junk email",
        "bulk",
        "bulk mail",
        "junk mail",
    ];
    let leaf = mailbox.rsplit(['/', '.']).next().unwrap_or(mailbox).trim();
    JUNK.iter().any(|j| leaf.eq_ignore_ascii_case(j))
}

/// What the IMAP proxy of one account needs to learn keys: the state and the
/// account's provider authserv-id (`[account.imap] authserv_id`).
pub struct Learner {
    pub store: std::sync::Arc<AutocryptStore>,
    pub authserv_id: Option<String>,
}

impl AutocryptStore {
    /// The Autocrypt state kept in `db`.
    pub fn new(db: Arc<crate::state::State>) -> AutocryptStore {
        AutocryptStore { db }
    }

    /// The state in `dir`'s SQLite file (tests).
    #[cfg(test)]
    pub fn open(dir: &std::path::Path) -> AutocryptStore {
        let db = crate::state::State::open(&Default::default(), dir).expect("open state");
        AutocryptStore::new(Arc::new(db))
    }

    /// What `identity` knows about `addr`.
    pub fn peer(&self, identity: &str, addr: &str) -> Option<PeerState> {
        let identity = super::normalize_address(identity);
        match self.db.peer(&identity, &super::normalize_address(addr)) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read Autocrypt state");
                None
            }
        }
    }

    /// The key `identity` uses for `addr`: the announced one, else gossip; with what
    /// vouches for it (only an announced key from an authenticated message counts as
    /// the peer's for `require`).
    pub fn key_for(&self, identity: &str, addr: &str) -> Option<(Cert, Vouch)> {
        let peer = self.peer(identity, addr)?;
        if let Some(cert) = peer
            .key
            .as_deref()
            .and_then(|k| Cert::from_bytes(k.as_bytes()).ok())
        {
            let vouch = if peer.key_authenticated {
                Vouch::AutocryptAuthenticated
            } else {
                Vouch::Autocrypt
            };
            return Some((cert, vouch));
        }
        let cert = Cert::from_bytes(peer.gossip_key?.as_bytes()).ok()?;
        Some((cert, Vouch::Autocrypt))
    }

    /// Processes the header of a message `identity` received (never call this for a
    /// Junk mailbox: see [`is_junk_mailbox`]).
    pub fn learn(
        &self,
        identity: &str,
        header: &[u8],
        evidence: Evidence<'_>,
        now: i64,
    ) -> Learned {
        // The parser reads lines without stripping CR; give it LF line ends.
        let lf: Vec<u8> = header.iter().copied().filter(|&b| b != b'\r').collect();
        let Ok(parsed) = AutocryptHeaders::from_bytes(&lf) else {
            return Learned::Nothing;
        };
        if parsed.headers.is_empty() {
            return Learned::Nothing;
        }
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
        let message_id = msg.message_id().map(str::to_string);
        let from_domain = from.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        let authenticated = evidence.signed_good_for.is_some_and(|a| a.contains(&from))
            || evidence
                .authserv_id
                .is_some_and(|id| super::authres::provider_authenticated(header, id, from_domain));
        // §2.3: the effective date is the Date header, but never in the future.
        let date = msg.date().map(|d| d.to_timestamp()).unwrap_or(now).min(now);
        let gossip_counts = evidence.signed_good_for.is_some_and(|a| a.contains(&from));
        // The peers this message may change: the sender, and whom it gossips about.
        let mut addrs = vec![from.clone()];
        if gossip_counts {
            addrs.extend(
                parsed
                    .headers
                    .iter()
                    .filter(|h| h.header_type == AutocryptHeaderType::Gossip)
                    .filter_map(|h| h.get("addr"))
                    .map(|a| super::normalize_address(&a.value)),
            );
        }
        let identity = super::normalize_address(identity);
        let update = |peers: &mut BTreeMap<String, PeerState>| {
            learn_into(
                peers,
                &parsed,
                &from,
                date,
                authenticated,
                gossip_counts,
                message_id,
            )
        };
        match self.db.update_peers(&identity, &addrs, update) {
            Ok(learned) => learned,
            Err(e) => {
                tracing::warn!(error = %e, "cannot store Autocrypt state");
                Learned::Nothing
            }
        }
    }
}

/// Applies one message's headers to the stored peers (Autocrypt 1.1 §2.3, §2.7).
fn learn_into(
    peers: &mut BTreeMap<String, PeerState>,
    parsed: &AutocryptHeaders,
    from: &str,
    date: i64,
    authenticated: bool,
    gossip_counts: bool,
    message_id: Option<String>,
) -> Learned {
    {
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
        let peer = peers.entry(from.to_string()).or_default();
        if date > peer.last_seen {
            peer.last_seen = date;
        }
        // §2.1: exactly one valid header for the sender counts.
        if let [h] = sender.as_slice() {
            let critical_unknown = h.attributes.iter().any(|a| {
                a.critical && !["addr", "keydata", "prefer-encrypt"].contains(&a.key.as_str())
            });
            if let (false, Some(cert)) = (critical_unknown, &h.key) {
                let key = armored(cert);
                // The same message seen again with better evidence (decrypted and
                // signed good after its outer header was read) upgrades the key.
                let upgrade = date == peer.autocrypt_timestamp
                    && authenticated
                    && !peer.key_authenticated
                    && key == peer.key;
                if date > peer.autocrypt_timestamp || upgrade {
                    peer.autocrypt_timestamp = date;
                    peer.key = key;
                    peer.key_authenticated = authenticated;
                    peer.key_message_id = message_id.clone();
                    peer.prefer_encrypt = h
                        .get("prefer-encrypt")
                        .map(|a| a.value.clone())
                        .filter(|v| v == "mutual")
                        .unwrap_or_else(|| "nopreference".into());
                    learned = Learned::Key {
                        addr: from.to_string(),
                    };
                }
            }
        }
        if gossip_counts {
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
                let p = peers.entry(addr.clone()).or_default();
                if date > p.gossip_timestamp {
                    p.gossip_timestamp = date;
                    p.gossip_key = armored(cert);
                    p.gossip_message_id = message_id.clone();
                    addrs.push(addr);
                }
            }
            if !addrs.is_empty() && learned == Learned::Nothing {
                learned = Learned::Gossip { addrs };
            }
        }
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

    const ALICE: &str = "alice@example.com";
    const OUTER: Evidence<'static> = Evidence {
        signed_good_for: None,
        authserv_id: None,
    };

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
            ALICE,
            msg("Tue, 24 Nov 2026 09:00:00 +0000").as_bytes(),
            OUTER,
            now,
        );
        assert_eq!(
            learned,
            Learned::Key {
                addr: "bob@example.org".into()
            }
        );
        let peer = store.peer(ALICE, "BOB@example.org").unwrap();
        assert_eq!(peer.prefer_encrypt, "mutual");
        let (cert, vouch) = store.key_for(ALICE, "bob@example.org").unwrap();
        assert_eq!(cert.fingerprint(), bob.fingerprint());
        // Nobody authenticated that message: used, but never enough for `require`.
        assert_eq!(vouch, Vouch::Autocrypt);

        // An older message with another key does not roll the key back.
        let other = make_cert("bob@example.org");
        let old_field = header_field(&other, "bob@example.org", false).unwrap();
        let old = format!(
            "From: bob@example.org\r\nDate: Mon, 23 Nov 2026 09:00:00 +0000\r\n{old_field}\r\n"
        );
        assert_eq!(
            store.learn(ALICE, old.as_bytes(), OUTER, now),
            Learned::Nothing
        );
        assert_eq!(
            store
                .key_for(ALICE, "bob@example.org")
                .unwrap()
                .0
                .fingerprint(),
            bob.fingerprint()
        );

        // A header for another address than From is ignored; state survives reopening.
        let wrong = format!(
            "From: mallory@example.net\r\nDate: Wed, 25 Nov 2026 09:00:00 +0000\r\n{old_field}\r\n"
        );
        store.learn(ALICE, wrong.as_bytes(), OUTER, now);
        assert!(store.key_for(ALICE, "mallory@example.net").is_none());
        let reopened = AutocryptStore::open(dir.path());
        assert_eq!(
            reopened
                .key_for(ALICE, "bob@example.org")
                .unwrap()
                .0
                .fingerprint(),
            bob.fingerprint()
        );
    }

    #[test]
    fn state_is_per_identity() {
        let dir = tempfile::tempdir().unwrap();
        let store = AutocryptStore::open(dir.path());
        let bob = make_cert("bob@example.org");
        let field = header_field(&bob, "bob@example.org", false).unwrap();
        let msg = format!(
            "From: bob@example.org\r\nDate: Tue, 24 Nov 2026 09:00:00 +0000\r\n{field}\r\n"
        );
        store.learn(ALICE, msg.as_bytes(), OUTER, 2_000_000_000);
        assert!(store
            .key_for("Alice@EXAMPLE.com", "bob@example.org")
            .is_some());
        // Another user of the same gateway learned nothing from alice's mailbox.
        assert!(store
            .key_for("carol@example.com", "bob@example.org")
            .is_none());
    }

    #[test]
    fn gossip_only_counts_inside_a_signed_good_encrypted_part() {
        let dir = tempfile::tempdir().unwrap();
        let store = AutocryptStore::open(dir.path());
        let carol = make_cert("carol@example.org");
        let g = header_field(&carol, "carol@example.org", false)
            .unwrap()
            .replacen("Autocrypt:", "Autocrypt-Gossip:", 1);
        let msg =
            format!("From: bob@example.org\r\nDate: Tue, 24 Nov 2026 09:00:00 +0000\r\n{g}\r\n");
        store.learn(ALICE, msg.as_bytes(), OUTER, 2_000_000_000);
        assert!(store.key_for(ALICE, "carol@example.org").is_none());
        // Signed good, but by someone else than the From: no gossip either.
        let other = vec!["mallory@example.net".to_string()];
        let by_other = Evidence {
            signed_good_for: Some(&other),
            authserv_id: None,
        };
        store.learn(ALICE, msg.as_bytes(), by_other, 2_000_000_000);
        assert!(store.key_for(ALICE, "carol@example.org").is_none());
        let bob = vec!["bob@example.org".to_string()];
        let good = Evidence {
            signed_good_for: Some(&bob),
            authserv_id: None,
        };
        let l = store.learn(ALICE, msg.as_bytes(), good, 2_000_000_000);
        assert_eq!(
            l,
            Learned::Gossip {
                addrs: vec!["carol@example.org".into()]
            }
        );
        // Gossip is the sender's word about someone else: never enough for `require`.
        assert_eq!(
            store.key_for(ALICE, "carol@example.org").unwrap().1,
            Vouch::Autocrypt
        );
    }

    #[test]
    fn authenticated_only_by_a_bound_signature_or_the_own_provider() {
        let dir = tempfile::tempdir().unwrap();
        let store = AutocryptStore::open(dir.path());
        let bob = make_cert("bob@example.org");
        let field = header_field(&bob, "bob@example.org", false).unwrap();
        let msg = |date: &str, ar: &str| {
            format!("From: bob@example.org\r\nDate: {date}\r\n{ar}{field}\r\n")
        };
        let own = Evidence {
            signed_good_for: None,
            authserv_id: Some("mx.example.com"),
        };
        let forged = msg(
            "Tue, 24 Nov 2026 09:00:00 +0000",
            "Authentication-Results: mx.evil.example; dkim=pass header.d=example.org\r\n",
        );
        store.learn(ALICE, forged.as_bytes(), own, 2_000_000_000);
        assert_eq!(
            store.key_for(ALICE, "bob@example.org").unwrap().1,
            Vouch::Autocrypt
        );
        let passed = msg(
            "Wed, 25 Nov 2026 09:00:00 +0000",
            "Authentication-Results: mx.example.com; dkim=pass header.d=example.org\r\n",
        );
        store.learn(ALICE, passed.as_bytes(), own, 2_000_000_000);
        assert_eq!(
            store.key_for(ALICE, "bob@example.org").unwrap().1,
            Vouch::AutocryptAuthenticated
        );
        // The same message seen again inside a good signature by a key bound to bob.
        let dir2 = tempfile::tempdir().unwrap();
        let store2 = AutocryptStore::open(dir2.path());
        let plain = msg("Tue, 24 Nov 2026 09:00:00 +0000", "");
        store2.learn(ALICE, plain.as_bytes(), OUTER, 2_000_000_000);
        let bound = vec!["bob@example.org".to_string()];
        let signed = Evidence {
            signed_good_for: Some(&bound),
            authserv_id: None,
        };
        store2.learn(ALICE, plain.as_bytes(), signed, 2_000_000_000);
        assert_eq!(
            store2.key_for(ALICE, "bob@example.org").unwrap().1,
            Vouch::AutocryptAuthenticated
        );
    }

    #[test]
    fn junk_mailboxes() {
        for m in [
            "Junk",
            "SPAM",
            "INBOX.Junk",
            "[Gmail]/Spam",
            "Junk E-mail",
            "bulk",
        ] {
            assert!(is_junk_mailbox(m), "{m}");
        }
        for m in ["INBOX", "Sent", "Junkyard", "Archive/2026"] {
            assert!(!is_junk_mailbox(m), "{m}");
        }
    }
}
