//! The outbound pipeline: from one submitted message to the copies that leave.
//!
//! Per recipient the policy decides (encrypt / plain / refuse). Recipients named in
//! To or Cc share one encrypted copy; every other envelope recipient (a Bcc) gets a
//! copy of their own, encrypted to them and the sender only, so that no copy reveals a
//! Bcc recipient, neither in a header nor in its encryption-key list. The sender's own
//! key is always added so the Sent copy stays readable. Under `require`, a recipient
//! without a key refuses the whole message and nothing leaves.

use super::session::Envelope;
use super::Reply;
use crate::config::PolicyConfig;
use crate::keys::{normalize_address, KeyStore, LoadedIdentity};
use crate::policy::{self, Decision};
use crate::{mime, pgp};
use sequoia_openpgp::Cert;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// One message to relay upstream: its recipients, and how its bytes are made. An
/// encrypted copy is built only when it is about to be sent ([`Outbound::build_into`]), so
/// a message with many copies (Bcc recipients) holds one copy at a time.
#[derive(Debug, Clone)]
pub struct OutgoingCopy {
    pub rcpts: Vec<String>,
    pub encrypted: bool,
    make: Make,
}

#[derive(Clone)]
enum Make {
    /// The bytes as they are.
    Ready(Vec<u8>),
    /// `extra_outer`, then the message without its Bcc fields.
    Plain { extra_outer: Vec<u8> },
    /// PGP/MIME to `certs`, signed by `signer` when given.
    Encrypted {
        certs: Vec<Cert>,
        signer: Option<Arc<LoadedIdentity>>,
        extra_outer: Vec<u8>,
    },
}

impl std::fmt::Debug for Make {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Make::Ready(b) => write!(f, "Ready({} bytes)", b.len()),
            Make::Plain { .. } => f.write_str("Plain"),
            Make::Encrypted { certs, signer, .. } => write!(
                f,
                "Encrypted(to {} certificates, signed: {})",
                certs.len(),
                signer.is_some()
            ),
        }
    }
}

/// Everything the pipeline needs, shared by all sessions.
pub struct Outbound {
    pub store: Arc<KeyStore>,
    pub identities: Vec<Arc<LoadedIdentity>>,
    pub policy: PolicyConfig,
    /// Announce the sender's key with an Autocrypt header (and with `mutual`).
    pub autocrypt: Option<bool>,
    /// Those headers, made once for a while (see [`AutocryptFields`]).
    pub autocrypt_fields: AutocryptFields,
}

/// How long an identity's Autocrypt header field is kept once made: which of its keys
/// the field names can change with time (a subkey expiring), and a reloaded
/// configuration makes a new [`Outbound`].
const AUTOCRYPT_FIELD_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// The Autocrypt header field of each identity (by certificate, address and
/// `prefer-encrypt=mutual`): making one minimises and serializes the certificate, a
/// few percent of the CPU a message costs, the same every time.
#[derive(Default)]
pub struct AutocryptFields(std::sync::Mutex<HashMap<(String, String, bool), AutocryptField>>);

type AutocryptField = (std::time::Instant, Option<Arc<str>>);

impl AutocryptFields {
    fn get(&self, id: &LoadedIdentity, mutual: bool) -> Option<Arc<str>> {
        let key = (id.cert.fingerprint().to_hex(), id.address.clone(), mutual);
        let now = std::time::Instant::now();
        let mut fields = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((made, field)) = fields.get(&key) {
            if now.duration_since(*made) < AUTOCRYPT_FIELD_TTL {
                return field.clone();
            }
        }
        let field: Option<Arc<str>> =
            crate::keys::autocrypt::header_field(&id.cert, &id.address, mutual).map(Arc::from);
        fields.insert(key, (now, field.clone()));
        field
    }
}

/// Keys found for recipients, by normalised address, with what vouches for them.
pub type FoundKeys = HashMap<String, crate::trust::Found>;

/// What the policy decided for one envelope recipient, and with which keys (what the
/// audit log records).
#[derive(Debug, Clone)]
pub struct RecipientDecision {
    /// The address as the envelope named it.
    pub address: String,
    pub decision: Decision,
    /// The recipient's certificates the copy is encrypted to (none unless `Encrypt`,
    /// and none when the client encrypted the message itself).
    pub certs: Vec<Cert>,
    /// What vouches for `certs`.
    pub vouch: Option<crate::trust::Vouch>,
}

/// The outcome of [`Outbound::plan`]: the decision per recipient, and the copies to
/// relay or the reply that refuses the message (then nothing is relayed).
#[derive(Debug)]
pub struct Planned {
    pub decisions: Vec<RecipientDecision>,
    /// The client sent the message already encrypted; it leaves as it is.
    pub client_encrypted: bool,
    pub result: Result<Vec<OutgoingCopy>, Reply>,
}

/// The senders policy rules are matched against (see [`crate::policy`]): the envelope
/// sender, every address of every From and every Sender field (a message may carry
/// several; mail-parser's `from()` sees only the last), and the authenticated login
/// when it is an address.
fn senders(env: &Envelope, header: &[u8]) -> Vec<String> {
    use mail_parser::HeaderName;
    let mut out = vec![env.from.clone()];
    if let Some(m) = mail_parser::MessageParser::default().parse_headers(header) {
        for h in m.headers() {
            if matches!(h.name, HeaderName::From | HeaderName::Sender) {
                if let Some(a) = h.value.as_address() {
                    out.extend(a.iter().filter_map(|a| a.address()).map(str::to_string));
                }
            }
        }
    }
    if let Some(login) = env.login.as_deref().filter(|l| l.contains('@')) {
        out.push(login.to_string());
    }
    out
}

impl Outbound {
    /// The identity that signs this message: the one the session authenticated as
    /// (its `login`), and only when the message is sent as that identity's address
    /// (envelope sender or From). Nobody signs with another user's key.
    fn identity(&self, env: &Envelope, from_header: Option<&str>) -> Option<Arc<LoadedIdentity>> {
        let id = self.identity_for_login(env.login.as_deref()?)?;
        let own = normalize_address(&id.address);
        let candidates = [Some(env.from.as_str()), from_header];
        candidates
            .iter()
            .flatten()
            .any(|a| normalize_address(a) == own)
            .then_some(id)
    }

    /// The identity of a login: the config's `[[identity]]` with that login, else a key
    /// in `[keys] secret_dir` for it.
    pub fn identity_for_login(&self, login: &str) -> Option<Arc<LoadedIdentity>> {
        self.store.identity_for_login(&self.identities, login)
    }

    /// The recipients whose keys are worth looking up (policy is not `plain`), or
    /// none when the message is already encrypted.
    pub fn wanted_keys(&self, env: &Envelope, raw: &[u8]) -> Vec<String> {
        if pgp::is_fully_encrypted(raw) {
            return Vec::new();
        }
        let senders = senders(env, mime::split_message(raw).0);
        let senders: Vec<&str> = senders.iter().map(String::as_str).collect();
        env.rcpts
            .iter()
            .filter(|r| {
                policy::action_for(&self.policy, &senders, r) != crate::config::PolicyAction::Plain
            })
            .map(|r| normalize_address(r))
            .collect()
    }

    /// Decides what leaves for `env` and `raw`, given the keys found for the
    /// recipients.
    pub fn plan(&self, env: &Envelope, raw: &[u8], found: &FoundKeys) -> Planned {
        if pgp::is_fully_encrypted(raw) {
            // Already end-to-end encrypted by the client: relayed as it is, but for a
            // Bcc field, which no copy may carry (RFC 5322 §3.6.3).
            return Planned {
                decisions: env
                    .rcpts
                    .iter()
                    .map(|r| RecipientDecision {
                        address: r.clone(),
                        decision: Decision::Encrypt,
                        certs: Vec::new(),
                        vouch: None,
                    })
                    .collect(),
                client_encrypted: true,
                result: Ok(vec![OutgoingCopy {
                    rcpts: env.rcpts.clone(),
                    make: Make::Ready(mime::without_fields(raw, &["Bcc"])),
                    encrypted: true,
                }]),
            };
        }
        let decisions = self.decide(env, raw, found);
        let result = self.copies(env, raw, &decisions);
        Planned {
            decisions,
            client_encrypted: false,
            result,
        }
    }

    /// The policy's decision for every envelope recipient of a message that is not
    /// encrypted yet.
    fn decide(&self, env: &Envelope, raw: &[u8], found: &FoundKeys) -> Vec<RecipientDecision> {
        let senders = senders(env, mime::split_message(raw).0);
        let senders: Vec<&str> = senders.iter().map(String::as_str).collect();
        env.rcpts
            .iter()
            .map(|rcpt| {
                let action = policy::action_for(&self.policy, &senders, rcpt);
                let key = match action {
                    crate::config::PolicyAction::Plain => None,
                    _ => found
                        .get(&normalize_address(rcpt))
                        .filter(|f| !f.certs.is_empty()),
                };
                let decision = policy::decide(action, key.map(|f| f.vouch));
                let (certs, vouch) = match (decision, key) {
                    (Decision::Encrypt, Some(f)) => (f.certs.clone(), Some(f.vouch)),
                    _ => (Vec::new(), None),
                };
                RecipientDecision {
                    address: rcpt.clone(),
                    decision,
                    certs,
                    vouch,
                }
            })
            .collect()
    }

    /// The copies that leave, given the decisions. `Err` is the reply that refuses the
    /// message (nothing is relayed).
    fn copies(
        &self,
        env: &Envelope,
        raw: &[u8],
        decisions: &[RecipientDecision],
    ) -> Result<Vec<OutgoingCopy>, Reply> {
        let (header, _) = mime::split_message(raw);
        let parsed = mail_parser::MessageParser::default().parse_headers(header);
        let list = |a: Option<&mail_parser::Address<'_>>| -> Vec<String> {
            a.map(|a| {
                a.iter()
                    .filter_map(|x| x.address())
                    .map(normalize_address)
                    .collect()
            })
            .unwrap_or_default()
        };
        let (visible, from_header): (HashSet<String>, Option<String>) = match &parsed {
            Some(m) => (
                list(m.to()).into_iter().chain(list(m.cc())).collect(),
                list(m.from()).into_iter().next(),
            ),
            None => (HashSet::new(), None),
        };
        let identity_arc = self.identity(env, from_header.as_deref());
        let identity = identity_arc.as_deref();
        // Autocrypt Level 1 §2.1: announce the sender's key, unless the client does.
        let autocrypt_field = match (self.autocrypt, identity) {
            (Some(mutual), Some(id)) if !mime::fields(header).iter().any(|f| f.is("Autocrypt")) => {
                self.autocrypt_fields.get(id, mutual)
            }
            _ => None,
        };
        let extra_outer = autocrypt_field.as_deref().unwrap_or("").as_bytes();

        // Decide per recipient.
        let mut refused = Vec::new();
        let mut plain = Vec::new();
        let mut shared: Vec<(String, Vec<Cert>)> = Vec::new();
        let mut separate: Vec<(String, Vec<Cert>)> = Vec::new();
        for d in decisions {
            let (rcpt, certs) = (&d.address, d.certs.clone());
            match d.decision {
                Decision::Refuse => refused.push(rcpt.clone()),
                Decision::SendPlain => plain.push(rcpt.clone()),
                Decision::Encrypt if visible.contains(&normalize_address(rcpt)) => {
                    shared.push((rcpt.clone(), certs))
                }
                Decision::Encrypt => separate.push((rcpt.clone(), certs)),
            }
        }
        if !refused.is_empty() {
            return Err(Reply::new(
                550,
                format!(
                    "5.7.1 No OpenPGP key for {}; policy requires encryption, nothing was sent",
                    refused.join(", ")
                ),
            ));
        }

        let own: Vec<Cert> = match identity {
            Some(id) => vec![id.cert.clone()],
            None => self.store.lookup(&env.from).unwrap_or_default(),
        };
        let signer = identity_arc.filter(|id| self.policy.sign && id.signer.is_some());
        let encrypt = |group: &[(String, Vec<Cert>)]| -> Result<OutgoingCopy, Reply> {
            let mut certs: Vec<Cert> = group.iter().flat_map(|(_, c)| c.clone()).collect();
            certs.extend(own.iter().cloned());
            // What could make the encryption fail later is checked now, before any
            // copy leaves.
            if !pgp::has_encryption_keys(&certs) {
                tracing::error!("no usable encryption key among the copy's certificates");
                return Err(Reply::new(
                    451,
                    "4.7.0 Encryption failed; the message was not sent",
                ));
            }
            Ok(OutgoingCopy {
                rcpts: group.iter().map(|(r, _)| r.clone()).collect(),
                make: Make::Encrypted {
                    certs,
                    signer: signer.clone(),
                    extra_outer: extra_outer.to_vec(),
                },
                encrypted: true,
            })
        };

        let mut copies = Vec::new();
        if !shared.is_empty() {
            copies.push(encrypt(&shared)?);
        }
        for one in &separate {
            copies.push(encrypt(std::slice::from_ref(one))?);
        }
        if !plain.is_empty() {
            copies.push(OutgoingCopy {
                rcpts: plain,
                make: Make::Plain {
                    extra_outer: extra_outer.to_vec(),
                },
                encrypted: false,
            });
        }
        Ok(copies)
    }

    /// At least the size of `copy` once built from the message `raw`, for SMTP SIZE
    /// before it exists (a strict server refuses a message larger than declared). An
    /// encrypted copy holds the header up to three times (outside; protected inside, with
    /// an `HP-Outer` copy of what stays outside), one encrypted session key per
    /// recipient key (about 530 bytes for RSA-4096; two keys per certificate allowed),
    /// a signature, and the armor's growth.
    pub fn size_estimate(copy: &OutgoingCopy, raw: &[u8]) -> usize {
        // Bare LFs become CRLF on the way.
        let lf = raw.iter().filter(|&&b| b == b'\n').count();
        let raw_len = raw.len() + lf;
        match &copy.make {
            Make::Ready(bytes) => bytes.len() + bytes.iter().filter(|&&b| b == b'\n').count(),
            Make::Plain { extra_outer } => extra_outer.len() + raw_len,
            Make::Encrypted {
                extra_outer, certs, ..
            } => {
                let (header, _) = mime::split_message(raw);
                let header_len = header.len() + header.iter().filter(|&&b| b == b'\n').count();
                let binary = raw_len + 2 * header_len + 2 * certs.len() * 600 + 2048;
                let armored = binary.div_ceil(48) * 66 + 256;
                extra_outer.len() + header_len + armored + 4096
            }
        }
    }

    /// The bytes of `copy` of the message `raw`, whole (the relay streams them instead:
    /// [`Outbound::build_into`]). `Err` is the reply for a copy that cannot be made.
    #[cfg(test)]
    pub fn build(&self, copy: OutgoingCopy, raw: &[u8]) -> Result<Vec<u8>, Reply> {
        let mut out = Vec::with_capacity(Outbound::size_estimate(&copy, raw));
        self.build_into(copy, raw, &mut out)?;
        Ok(out)
    }

    /// The bytes of `copy` of the message `raw` (CPU work for an encrypted copy: call
    /// off the I/O threads), written into `sink` as they are made and flushed at the end
    /// (the relay streams each copy to the provider: a large message is held once).
    /// `Err` is the reply for a copy that cannot be made, or whose sink failed.
    pub fn build_into(
        &self,
        copy: OutgoingCopy,
        raw: &[u8],
        sink: &mut (dyn std::io::Write + Send + Sync),
    ) -> Result<(), Reply> {
        let failed = || Reply::new(451, "4.7.0 Encryption failed; the message was not sent");
        let written = |r: std::io::Result<()>| {
            r.map_err(|e| {
                tracing::debug!(error = %e, "the copy's destination went away");
                Reply::new(
                    451,
                    "4.4.1 The copy could not be sent; the message was not sent",
                )
            })
        };
        let made = match copy.make {
            Make::Ready(bytes) => written(sink.write_all(&bytes)),
            Make::Plain { extra_outer } => {
                written(sink.write_all(&extra_outer))?;
                // The header (and the blank line) without Bcc, then the body as it is:
                // the message is not copied whole.
                let (_, body) = mime::split_message(raw);
                let head = &raw[..raw.len() - body.len()];
                written(sink.write_all(&mime::without_fields(head, &["Bcc"])))?;
                written(sink.write_all(body))
            }
            Make::Encrypted {
                certs,
                signer,
                extra_outer,
            } => {
                let boundary = pgp::random_boundary();
                pgp::encrypt_message_into(
                    sink,
                    &pgp::EncryptRequest {
                        raw,
                        recipients: &certs,
                        signer: signer.as_ref().and_then(|id| id.signer.as_ref()),
                        protect_headers: self.policy.protect_headers,
                        boundary: &boundary,
                        extra_outer: &extra_outer,
                    },
                    &["Bcc"],
                )
                .map_err(|e| {
                    tracing::error!(error = %e, "encryption failed");
                    failed()
                })
            }
        };
        made?;
        written(sink.flush())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PolicyAction, PolicyRule};
    use crate::keys::tests::make_cert;
    use sequoia_openpgp::serialize::SerializeInto;

    fn setup(default: PolicyAction) -> (tempfile::TempDir, Outbound) {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        for uid in ["bob@example.org", "dave@example.net"] {
            store
                .import(&make_cert(uid).armored().to_vec().unwrap(), uid)
                .unwrap();
        }
        let out = Outbound {
            store: Arc::new(store),
            identities: Vec::new(),
            autocrypt: None,
            autocrypt_fields: Default::default(),
            policy: PolicyConfig {
                default,
                rules: vec![PolicyRule {
                    recipient: Some("*@plain.example".into()),
                    sender: None,
                    action: PolicyAction::Plain,
                }],
                ..PolicyConfig::default()
            },
        };
        (dir, out)
    }

    impl Outbound {
        /// Plans with keys from the local store only.
        fn plan_from_store(&self, env: &Envelope, raw: &[u8]) -> Result<Vec<OutgoingCopy>, Reply> {
            let found: FoundKeys = self
                .wanted_keys(env, raw)
                .into_iter()
                .map(|a| {
                    let certs = self.store.lookup(&a).unwrap();
                    let vouch = crate::trust::Vouch::Local;
                    (a, crate::trust::Found { certs, vouch })
                })
                .filter(|(_, f)| !f.certs.is_empty())
                .collect();
            self.plan(env, raw, &found).result
        }
    }

    fn env(rcpts: &[&str]) -> Envelope {
        Envelope {
            from: "alice@example.com".into(),
            rcpts: rcpts.iter().map(|s| s.to_string()).collect(),
            body_8bit: false,
            smtputf8: false,
            login: Some("alice@example.com".into()),
        }
    }

    const MSG: &[u8] = b"From: alice@example.com\r\nTo: bob@example.org, carol@example.org\r\nBcc: dave@example.net\r\nSubject: hi\r\n\r\nbody\r\n";

    #[test]
    fn the_size_declared_before_a_copy_exists_is_never_too_small() {
        let (_d, mut out) = setup(PolicyAction::Opportunistic);
        out.policy.protect_headers = true;
        // A header much larger than the body (protected headers hold it three times),
        // bare LFs (sent as CRLF), and a body of a few bytes or of some kilobytes.
        let refs: String = (0..150)
            .map(|i| format!(" <thread-{i:04}-of-a-long-discussion@lists.example.org>\n"))
            .collect();
        for body in ["x\n".to_string(), "line of text\n".repeat(400)] {
            let raw = format!(
                "From: alice@example.com\nTo: bob@example.org, carol@example.org\nSubject: s\nReferences:{refs}\n{body}"
            );
            let copies = out
                .plan_from_store(
                    &env(&["bob@example.org", "carol@example.org"]),
                    raw.as_bytes(),
                )
                .unwrap();
            for c in copies {
                let estimate = Outbound::size_estimate(&c, raw.as_bytes());
                // What the server counts: the message with CRLF line ends (RFC 1870).
                let built = out.build(c, raw.as_bytes()).unwrap();
                let sent = crate::mime::to_crlf(&built).len();
                assert!(estimate >= sent, "declared {estimate}, sent {sent}");
            }
        }
    }

    #[test]
    fn opportunistic_splits_into_shared_bcc_and_plain_copies() {
        let (_d, out) = setup(PolicyAction::Opportunistic);
        let copies = out
            .plan_from_store(
                &env(&["bob@example.org", "carol@example.org", "dave@example.net"]),
                MSG,
            )
            .unwrap();
        assert_eq!(copies.len(), 3);
        assert_eq!(copies[0].rcpts, vec!["bob@example.org"]);
        assert!(copies[0].encrypted);
        assert_eq!(copies[1].rcpts, vec!["dave@example.net"]);
        assert!(copies[1].encrypted);
        assert_eq!(copies[2].rcpts, vec!["carol@example.org"]);
        assert!(!copies[2].encrypted);
        for c in &copies {
            let built = out.build(c.clone(), MSG).unwrap();
            let text = String::from_utf8_lossy(&built);
            assert!(!text.contains("Bcc:"), "{text}");
        }
    }

    #[test]
    fn only_the_authenticated_identity_signs_and_only_for_its_own_address() {
        let (_d, mut out) = setup(PolicyAction::Opportunistic);
        let dir = tempfile::tempdir().unwrap();
        let g = crate::keys::generate("alice@example.com", dir.path()).unwrap();
        let id =
            crate::keys::load_identity(&g.identity("alice@example.com", Some("alice"))).unwrap();
        out.identities = vec![Arc::new(id)];
        let mut e = env(&["bob@example.org"]);
        e.login = Some("alice".into());
        assert!(out.identity(&e, None).is_some());
        // Another user sending as alice does not get alice's signature.
        e.login = Some("mallory".into());
        assert!(out.identity(&e, Some("alice@example.com")).is_none());
        // Alice sending as someone else is not signed with her key either.
        e.login = Some("alice".into());
        e.from = "ceo@example.com".into();
        assert!(out.identity(&e, Some("ceo@example.com")).is_none());
    }

    #[test]
    fn secret_dir_users_sign_and_configured_identities_win() {
        let (_d, mut out) = setup(PolicyAction::Opportunistic);
        let secrets = tempfile::tempdir().unwrap();
        let made = tempfile::tempdir().unwrap();
        for (addr, sub) in [("alice@example.com", "a"), ("ann@example.com", "b")] {
            std::fs::create_dir(made.path().join(sub)).unwrap();
            let g = crate::keys::generate(addr, &made.path().join(sub)).unwrap();
            let id = g.identity(addr, None);
            std::fs::copy(&id.secret_key, secrets.path().join(format!("{addr}.asc"))).unwrap();
            let pass = id.passphrase_file.unwrap();
            std::fs::copy(pass, secrets.path().join(format!("{addr}.pass"))).unwrap();
        }
        let store_dir = tempfile::tempdir().unwrap();
        out.store = Arc::new(
            KeyStore::open(store_dir.path())
                .unwrap()
                .with_secret_dir(Some(secrets.path())),
        );
        let dir = tempfile::tempdir().unwrap();
        let g = crate::keys::generate("alice@example.com", dir.path()).unwrap();
        let configured =
            Arc::new(crate::keys::load_identity(&g.identity("alice@example.com", None)).unwrap());
        out.identities = vec![configured.clone()];
        let alice = out.identity_for_login("alice@example.com").unwrap();
        assert!(Arc::ptr_eq(&alice, &configured), "the [[identity]] wins");
        let ann = out
            .identity_for_login("ann@example.com")
            .expect("from secret_dir");
        assert_eq!(ann.address, "ann@example.com");
        // Ann's mail is signed with her key from the folder.
        let mut e = env(&["bob@example.org"]);
        e.from = "ann@example.com".into();
        e.login = Some("ann@example.com".into());
        assert!(out.identity(&e, None).is_some());
        assert!(out.identity_for_login("../ann@example.com").is_none());
    }

    #[test]
    fn require_without_key_refuses_naming_recipients() {
        let (_d, out) = setup(PolicyAction::Require);
        let err = out
            .plan_from_store(&env(&["bob@example.org", "carol@example.org"]), MSG)
            .unwrap_err();
        assert_eq!(err.code, 550);
        assert!(err.lines[0].contains("carol@example.org"));
        assert!(!err.lines[0].contains("bob@"));
        // A plain rule beats the default.
        let copies = out
            .plan_from_store(&env(&["x@plain.example"]), MSG)
            .unwrap();
        assert!(!copies[0].encrypted);
    }

    #[test]
    fn a_sender_rule_matches_the_envelope_sender_or_the_from_field() {
        let (_d, mut out) = setup(PolicyAction::Opportunistic);
        out.policy.rules.push(PolicyRule {
            recipient: None,
            sender: Some("legal.corp.example".into()),
            action: PolicyAction::Require,
        });
        let rcpts = ["bob@example.org", "carol@example.org"];
        // Not from legal: carol gets a plain copy.
        assert_eq!(out.plan_from_store(&env(&rcpts), MSG).unwrap().len(), 2);
        // Envelope sender at legal: refused, naming carol only.
        let mut e = env(&rcpts);
        e.from = "ann@legal.corp.example".into();
        let err = out.plan_from_store(&e, MSG).unwrap_err();
        assert!(err.lines[0].contains("carol@example.org") && !err.lines[0].contains("bob@"));
        // From field at legal, envelope elsewhere: refused all the same.
        let from_legal = String::from_utf8_lossy(MSG).replace(
            "From: alice@example.com",
            "From: Ann <ann@LEGAL.corp.example>",
        );
        assert!(out
            .plan_from_store(&env(&rcpts), from_legal.as_bytes())
            .is_err());
        // The decisions name the key used for bob.
        let found: FoundKeys = [(
            "bob@example.org".to_string(),
            crate::trust::Found {
                certs: out.store.lookup("bob@example.org").unwrap(),
                vouch: crate::trust::Vouch::Wkd,
            },
        )]
        .into();
        let planned = out.plan(&e, MSG, &found);
        assert!(planned.result.is_err());
        let d: Vec<_> = planned
            .decisions
            .iter()
            .map(|d| (d.address.as_str(), d.decision, d.vouch, d.certs.len()))
            .collect();
        assert_eq!(
            d,
            vec![
                (
                    "bob@example.org",
                    Decision::Encrypt,
                    Some(crate::trust::Vouch::Wkd),
                    1
                ),
                ("carol@example.org", Decision::Refuse, None, 0),
            ]
        );
    }

    #[test]
    fn already_encrypted_mail_is_relayed_unchanged_but_for_bcc() {
        let (_d, out) = setup(PolicyAction::Require);
        let carol = crate::keys::tests::make_cert("carol@example.org");
        let encrypted = pgp::encrypt_message(
            &pgp::EncryptRequest {
                raw: b"To: carol@example.org\r\n\r\nsecret\r\n",
                recipients: std::slice::from_ref(&carol),
                signer: None,
                protect_headers: false,
                boundary: "b",
                extra_outer: b"",
            },
            &[],
        )
        .unwrap();
        let with_bcc = [b"Bcc: x@elsewhere.example\r\n".as_slice(), &encrypted].concat();
        let copies = out
            .plan_from_store(
                &env(&["carol@example.org", "x@elsewhere.example"]),
                &with_bcc,
            )
            .unwrap();
        assert_eq!(copies.len(), 1);
        let copy = copies.into_iter().next().unwrap();
        assert_eq!(out.build(copy, &with_bcc).unwrap(), encrypted);
        // Armor lines around plaintext are no encryption: `require` refuses it.
        let fake = b"To: carol@example.org\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nRevenue 4.2M\r\n-----END PGP MESSAGE-----\r\n";
        let refused = out.plan_from_store(&env(&["carol@example.org"]), fake);
        assert!(refused.is_err(), "{refused:?}");
    }

    /// Review F3: every From field, every Sender field, the envelope sender and the
    /// login (when an address) are senders, not only the last From field.
    #[test]
    fn policy_senders_include_every_from_and_sender_field_and_the_login() {
        let header = b"From: ann@legal.corp.example\r\nFrom: someone@other.example\r\n\
            Sender: Sec <sec@legal.corp.example>, x@y.example\r\nSender: ops@corp.example\r\n\
            Subject: x\r\n\r\n";
        let mut e = env(&["x@gmail.example"]);
        e.from = "bounce@corp.example".into();
        e.login = Some("Kate@Corp.Example".into());
        let got = senders(&e, header);
        for want in [
            "bounce@corp.example",
            "ann@legal.corp.example",
            "someone@other.example",
            "sec@legal.corp.example",
            "x@y.example",
            "ops@corp.example",
            "Kate@Corp.Example",
        ] {
            assert!(got.iter().any(|a| a == want), "{want} missing from {got:?}");
        }
        // A login that is not an address is no sender.
        e.login = Some("u48213".into());
        assert!(!senders(&e, header).iter().any(|a| a == "u48213"));

        // And the policy sees them: a require for legal holds though From ends elsewhere.
        let (_dir, mut out) = setup(PolicyAction::Opportunistic);
        out.policy.rules.push(PolicyRule {
            recipient: None,
            sender: Some("legal.corp.example".into()),
            action: PolicyAction::Require,
        });
        let raw = b"From: ann@legal.corp.example\r\nFrom: someone@other.example\r\n\r\nhi\r\n";
        assert!(out
            .plan_from_store(&env(&["carol@example.org"]), raw)
            .is_err());
    }
}
