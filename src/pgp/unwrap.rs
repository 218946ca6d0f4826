//! From a stored message to the message a mail client is shown.
//!
//! An encrypted message (RFC 3156 PGP/MIME, or inline PGP in a single text part) is
//! replaced by a *view*: the outer header fields, with the protected header fields of
//! the inner entity taking precedence (RFC 9788), a `Sealpost-Decrypted` field saying
//! what happened, and the decrypted entity's MIME fields and body. Any
//! `Sealpost-Decrypted` field that arrives in stored mail is removed first, so a sender
//! cannot fake the result. A message that cannot be decrypted is shown as stored.

use super::decrypt::{decrypt_bytes, DecryptError, SignatureStatus};
use super::protect::{self, from_address, is_content_field};
use crate::mime;
use crate::trust::Believed;
use mail_parser::MimeHeaders;
use openpgp::cert::Cert;
use openpgp::crypto::KeyPair;
use sequoia_openpgp as openpgp;

/// The header field that reports decryption results to the client.
pub const STATUS_HEADER: &str = "Sealpost-Decrypted";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewKind {
    /// Not encrypted; at most a forged status field was removed.
    Plain,
    Decrypted(SignatureStatus),
    /// Encrypted, but not decryptable here; shown as stored.
    Undecryptable(String),
    /// Encrypted, and its plaintext is larger than the `limit` it was decrypted under;
    /// shown as stored. Under a larger limit it may decrypt: not a verdict on the message.
    TooLarge {
        limit: usize,
    },
}

#[derive(Debug, Clone)]
pub struct View {
    pub bytes: Vec<u8>,
    pub kind: ViewKind,
    /// The payload's `Autocrypt` and `Autocrypt-Gossip` fields (CRLF lines): not part of
    /// the view, but what Autocrypt may learn from inside the encryption, where the
    /// signature covers them (the view's own `Autocrypt` field is the outer one).
    pub autocrypt: Vec<u8>,
    /// The MIME part tree of `bytes` once they are prepared (see [`View::prepared_tree`]).
    tree: std::sync::OnceLock<std::sync::Arc<mime::view::Tree>>,
}

impl View {
    pub fn new(bytes: Vec<u8>, kind: ViewKind, autocrypt: Vec<u8>) -> View {
        View {
            bytes,
            kind,
            autocrypt,
            tree: std::sync::OnceLock::new(),
        }
    }

    /// The part tree of `bytes`, parsed at the first item that needs it and kept: a
    /// cached view answers every section, partial and BODYSTRUCTURE without parsing the
    /// message again. Only for bytes already [`mime::view::prepare`]d.
    pub fn prepared_tree(&self) -> &mime::view::Tree {
        self.tree
            .get_or_init(|| std::sync::Arc::new(mime::view::tree_of_prepared(&self.bytes)))
    }
}

enum Encrypted {
    PgpMime(Vec<u8>),
    Inline(Vec<u8>),
}

/// Locates the OpenPGP data of an encrypted message.
fn encrypted_payload(raw: &[u8]) -> Option<Encrypted> {
    if !super::is_encrypted(raw) {
        return None;
    }
    let msg = mail_parser::MessageParser::default().parse(raw)?;
    let root = msg.parts.first()?;
    let ct = root.content_type()?;
    if ct.ctype().eq_ignore_ascii_case("multipart")
        && ct
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case("encrypted"))
    {
        // RFC 3156 §4: the second body part, application/octet-stream, holds the data.
        let part = msg.parts.iter().skip(1).find(|p| {
            p.content_type().is_some_and(|c| {
                c.ctype().eq_ignore_ascii_case("application")
                    && c.subtype()
                        .is_some_and(|s| s.eq_ignore_ascii_case("octet-stream"))
            })
        })?;
        return Some(Encrypted::PgpMime(part.contents().to_vec()));
    }
    let body = root.contents();
    let text = if body.is_empty() {
        msg.parts.get(1).map(|p| p.contents()).unwrap_or_default()
    } else {
        body
    };
    let start = find(text, b"-----BEGIN PGP MESSAGE-----")?;
    let end_marker = b"-----END PGP MESSAGE-----";
    let end = find(&text[start..], end_marker)? + start + end_marker.len();
    Some(Encrypted::Inline(text[start..end].to_vec()))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The original of one of the identity's own sealed copies (see [`super::stored`]):
/// decrypted with `keys`, signed by `own`, and unsealed to the bytes it records. `None`
/// for any other message.
///
/// A panic inside the parsers (sequoia-openpgp 2.4 panics on some crafted SEIPD v1 data,
/// which anyone can send) is contained: such a message is no copy of ours, so `sealpost
/// seal` goes on and never removes an original on its account.
pub fn own_copy(raw: &[u8], keys: &[KeyPair], own: &Cert, max_size: usize) -> Option<Vec<u8>> {
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let Encrypted::PgpMime(ciphertext) = encrypted_payload(raw)? else {
            return None;
        };
        let me = Believed::for_all_user_ids(own.clone());
        let d = decrypt_bytes(&ciphertext, keys, &[&me], max_size).ok()?;
        unseal_own(&d.signature, own, &mime::to_crlf(&d.plaintext))
    }));
    opened.unwrap_or_else(|_| {
        tracing::error!("reading an encrypted message failed unexpectedly; taken as not ours");
        None
    })
}

/// The original a sealed payload records, when `own`'s key signed it (only then is it
/// one of the identity's own copies).
fn unseal_own(signature: &SignatureStatus, own: &Cert, payload: &[u8]) -> Option<Vec<u8>> {
    match signature {
        SignatureStatus::Good { fingerprint, .. } if *fingerprint == own.fingerprint().to_hex() => {
            super::stored::unseal(payload)
        }
        _ => None,
    }
}

/// Computes the view of a stored message for the identity whose certificate is `own`
/// (its own sealed copies, see [`super::stored`], are shown as they were written).
pub fn view_of(
    raw: &[u8],
    keys: &[KeyPair],
    certs: &[&Believed],
    own: Option<&Cert>,
    max_size: usize,
) -> View {
    let stripped = mime::without_fields(raw, &[STATUS_HEADER]);
    let Some(payload) = encrypted_payload(&stripped) else {
        return View::new(stripped, ViewKind::Plain, Vec::new());
    };
    let (ciphertext, inline) = match payload {
        Encrypted::PgpMime(c) => (c, false),
        Encrypted::Inline(c) => (c, true),
    };
    let decrypted = match decrypt_bytes(&ciphertext, keys, certs, max_size) {
        Ok(d) => d,
        Err(DecryptError::TooLarge(limit)) => {
            return View::new(stripped, ViewKind::TooLarge { limit }, Vec::new());
        }
        Err(e) => {
            let reason = match e {
                DecryptError::NoKey => "no key".to_string(),
                other => other.to_string(),
            };
            return View::new(stripped, ViewKind::Undecryptable(reason), Vec::new());
        }
    };
    let (outer_header, _) = mime::split_message(&stripped);
    let outer: Vec<_> = mime::fields(outer_header);
    let inner_plain = mime::to_crlf(&decrypted.plaintext);
    let mut out = Vec::with_capacity(decrypted.plaintext.len() + outer_header.len() + 256);

    if inline {
        // Inline PGP carries no header of its own: the outer From is what is shown.
        let signature = decrypted
            .signature
            .checked_against(from_address(&outer).as_deref());
        for f in outer.iter().filter(|f| !is_content_field(f)) {
            mime::push_line(&mut out, f.raw);
        }
        push_status(&mut out, &signature, None);
        let body = &inner_plain;
        let charset_line = if body.is_ascii() {
            "Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n"
        } else {
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
        };
        out.extend_from_slice(charset_line.as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        return View::new(out, ViewKind::Decrypted(signature), Vec::new());
    }

    let (inner_header, inner_body) = mime::split_message(&inner_plain);
    let inner: Vec<_> = mime::fields(inner_header)
        .into_iter()
        .filter(|f| !f.is(STATUS_HEADER))
        .collect();
    if inner
        .last()
        .is_some_and(|f| f.is(super::stored::STORED_FIELD))
    {
        // One of the identity's own copies: the original, when its own key signed it.
        if let Some(original) = own.and_then(|c| unseal_own(&decrypted.signature, c, &inner_plain))
        {
            // What was sealed may be mail someone else sent (`sealpost seal` of INBOX):
            // a status field in it is theirs, never shown. The own key's signature proves
            // only that sealpost sealed it, not who wrote it: the copy counts as unsigned,
            // so nothing in it (Autocrypt-Gossip under a From naming the user) is believed.
            return View::new(
                mime::without_fields(&original, &[STATUS_HEADER]),
                ViewKind::Decrypted(SignatureStatus::Unsigned),
                Vec::new(),
            );
        }
    }
    let scheme = protect::scheme_of(&inner);
    let merged = protect::merge(&outer, &inner, scheme, decrypted.signature);
    out.extend_from_slice(&merged.header);
    push_status(&mut out, &merged.signature, merged.unproven_from.as_deref());
    let mut has_content_type = false;
    for f in inner.iter().filter(|f| is_content_field(f)) {
        has_content_type |= f.is("Content-Type");
        mime::push_line(&mut out, f.raw);
    }
    if !has_content_type {
        out.extend_from_slice(b"Content-Type: text/plain; charset=us-ascii\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(inner_body);
    if scheme != protect::Scheme::None {
        // The protected fields are shown as fields: their printed copy goes.
        if let Some(without) = mime::view::without_legacy_display(&out) {
            out = without;
        }
    }
    View::new(
        out,
        ViewKind::Decrypted(merged.signature),
        protect::autocrypt_fields(&inner),
    )
}

/// The `Sealpost-Decrypted` field: the signature result, and a payload From that the
/// view does not show because nothing proves it.
fn push_status(out: &mut Vec<u8>, signature: &SignatureStatus, unproven_from: Option<&str>) {
    out.extend_from_slice(format!("{STATUS_HEADER}: {}", signature.header_value()).as_bytes());
    if let Some(from) = unproven_from {
        out.extend_from_slice(b"; ");
        out.extend_from_slice(parameter("unproven-from", from).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// `name=value` as a MIME parameter (RFC 2045 §5.1, RFC 2231 §4): a token as it is, other
/// ASCII as a quoted-string, anything else percent-encoded as UTF-8. The value comes from
/// a sender, so nothing in it can end the field or add a parameter: no control
/// character, quote or semicolon reaches the header unescaped.
fn parameter(name: &str, value: &str) -> String {
    const TSPECIALS: &[u8] = b"()<>@,;:\\\"/[]?=";
    let token = |b: u8| b.is_ascii_graphic() && !TSPECIALS.contains(&b);
    if !value.is_empty() && value.bytes().all(token) {
        return format!("{name}={value}");
    }
    if value.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        let mut quoted = String::with_capacity(value.len() + 2);
        quoted.push('"');
        for c in value.chars() {
            if c == '"' || c == '\\' {
                quoted.push('\\');
            }
            quoted.push(c);
        }
        quoted.push('"');
        return format!("{name}={quoted}");
    }
    let mut encoded = String::new();
    for b in value.bytes() {
        if token(b) && b != b'%' && b != b'*' && b != b'\'' {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{name}*=utf-8''{encoded}")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::keys::tests::make_cert;
    use openpgp::cert::CertBuilder;
    use openpgp::policy::StandardPolicy;

    /// The input the pgp_unwrap fuzz target found (`fuzz/found/sequoia-seip-v1-panic.bin`:
    /// a shape byte, two limit bytes, then armored data encrypted to `fuzz/keys/alice.pgp`)
    /// as the data of a PGP/MIME message: sequoia panics reading it; `own_copy`, which
    /// `sealpost seal` calls on every encrypted message, answers `None`.
    #[test]
    fn a_message_that_makes_the_parser_panic_is_no_copy_of_ours() {
        let dir = env!("CARGO_MANIFEST_DIR");
        let id = crate::keys::load_identity(&crate::config::Identity {
            address: "alice@example.com".into(),
            login: None,
            account: None,
            secret_key: format!("{dir}/fuzz/keys/alice.pgp").into(),
            passphrase_file: None,
            passphrase_credential: None,
            passphrase_env: None,
        })
        .unwrap();
        let found = std::fs::read(format!("{dir}/fuzz/found/sequoia-seip-v1-panic.bin")).unwrap();
        let message = [
            b"From: bob@example.org\r\nTo: alice@example.com\r\nSubject: x\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n".as_slice(),
            &found[3..],
            b"\r\n--b--\r\n",
        ]
        .concat();
        assert_eq!(own_copy(&message, &id.decryptors, &id.cert, 1 << 20), None);
    }

    /// The transport-encryption key pairs of `cert`.
    pub(crate) fn keypairs(cert: &Cert) -> Vec<KeyPair> {
        let p = StandardPolicy::new();
        cert.keys()
            .secret()
            .with_policy(&p, None)
            .for_transport_encryption()
            .map(|k| k.key().clone().into_keypair().unwrap())
            .collect()
    }

    fn signer(cert: &Cert) -> KeyPair {
        let p = StandardPolicy::new();
        cert.keys()
            .secret()
            .with_policy(&p, None)
            .for_signing()
            .next()
            .unwrap()
            .key()
            .clone()
            .into_keypair()
            .unwrap()
    }

    const MSG: &[u8] = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: Real subject\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nsecret body\r\n";

    #[test]
    fn round_trip_restores_protected_subject_and_reports_signature() {
        let (alice, _) = CertBuilder::general_purpose(Some("alice@example.com"))
            .generate()
            .unwrap();
        let (bob, _) = CertBuilder::general_purpose(Some("bob@example.org"))
            .generate()
            .unwrap();
        let sk = signer(&alice);
        let enc = super::super::encrypt_message(
            &super::super::EncryptRequest {
                raw: MSG,
                recipients: std::slice::from_ref(&bob),
                signer: Some(&sk),
                protect_headers: true,
                boundary: "b1",
                extra_outer: b"",
            },
            &[],
        )
        .unwrap();
        let alice_b = Believed::for_all_user_ids(alice.clone());
        let view = view_of(&enc, &keypairs(&bob), &[&alice_b], None, 1 << 20);
        let text = String::from_utf8(view.bytes.clone()).unwrap();
        assert!(text.contains("Subject: Real subject\r\n"), "{text}");
        assert!(!text.contains("Subject: ..."), "{text}");
        assert!(text.ends_with("\r\n\r\nsecret body\r\n"), "{text}");
        assert!(
            text.contains(&format!(
                "Sealpost-Decrypted: yes; signature=good; signer={}",
                alice.fingerprint().to_hex()
            )),
            "{text}"
        );
        assert_eq!(text.matches("Subject:").count(), 1);
        // What sealpost recorded inside for RFC 9788 readers is not part of the view.
        assert!(!text.contains("HP-Outer"), "{text}");
        // Signed by a key whose user IDs do not carry the From address.
        let bob_signer = signer(&bob);
        let forged = super::super::encrypt_message(
            &super::super::EncryptRequest {
                raw: MSG,
                recipients: std::slice::from_ref(&bob),
                signer: Some(&bob_signer),
                protect_headers: true,
                boundary: "b4",
                extra_outer: b"",
            },
            &[],
        )
        .unwrap();
        let bob_b = Believed::for_all_user_ids(bob.clone());
        let view = view_of(&forged, &keypairs(&bob), &[&bob_b], None, 1 << 20);
        let text = String::from_utf8(view.bytes).unwrap();
        assert!(
            text.contains("Sealpost-Decrypted: yes; signature=not-from-sender; signer="),
            "{text}"
        );
        // Without the signer's certificate the signature is of an unknown key.
        let view = view_of(&enc, &keypairs(&bob), &[], None, 1 << 20);
        assert!(matches!(
            view.kind,
            ViewKind::Decrypted(SignatureStatus::UnknownKey { .. })
        ));
    }

    #[test]
    fn undecryptable_and_plain_messages_are_shown_as_stored_minus_forged_status() {
        let carol = make_cert("carol@example.org");
        let bob = make_cert("bob@example.org");
        let enc = super::super::encrypt_message(
            &super::super::EncryptRequest {
                raw: MSG,
                recipients: std::slice::from_ref(&carol),
                signer: None,
                protect_headers: false,
                boundary: "b2",
                extra_outer: b"",
            },
            &[],
        )
        .unwrap();
        let view = view_of(&enc, &keypairs(&bob), &[], None, 1 << 20);
        assert_eq!(view.bytes, enc);
        // Known by its type, not by sequoia's wording.
        assert_eq!(view.kind, ViewKind::Undecryptable("no key".into()));

        let forged = b"Subject: x\r\nSealpost-Decrypted: yes; signature=good\r\n\r\nhi\r\n";
        let view = view_of(forged, &keypairs(&bob), &[], None, 1 << 20);
        assert_eq!(view.bytes, b"Subject: x\r\n\r\nhi\r\n");
        assert_eq!(view.kind, ViewKind::Plain);
    }

    #[test]
    fn tampered_ciphertext_releases_nothing() {
        let bob = make_cert("bob@example.org");
        let enc = super::super::encrypt_message(
            &super::super::EncryptRequest {
                raw: MSG,
                recipients: std::slice::from_ref(&bob),
                signer: None,
                protect_headers: false,
                boundary: "b3",
                extra_outer: b"",
            },
            &[],
        )
        .unwrap();
        // Flip one base64 character in the middle of the armored data.
        let text = String::from_utf8(enc.clone()).unwrap();
        let start = text.find("-----BEGIN PGP MESSAGE-----").unwrap() + 40;
        let pos = start + (text[start..].find("-----END").unwrap()) / 2;
        let mut bytes = enc.clone();
        bytes[pos] = if bytes[pos] == b'A' { b'B' } else { b'A' };
        let view = view_of(&bytes, &keypairs(&bob), &[], None, 1 << 20);
        assert!(
            matches!(view.kind, ViewKind::Undecryptable(_)),
            "{:?}",
            view.kind
        );
        assert_eq!(view.bytes, bytes);
    }

    #[test]
    fn an_unproven_from_cannot_end_the_status_field_or_add_a_parameter() {
        assert_eq!(
            parameter("unproven-from", "boss@corp.example"),
            "unproven-from=\"boss@corp.example\""
        );
        assert_eq!(parameter("p", "plain"), "p=plain");
        assert_eq!(
            parameter("unproven-from", "\"a; signature=good\"@x"),
            "unproven-from=\"\\\"a; signature=good\\\"@x\""
        );
        let broken = parameter("unproven-from", "a\r\nSealpost-Decrypted: yes@x");
        assert!(!broken.contains('\r') && !broken.contains('\n'), "{broken}");
        assert_eq!(
            parameter("unproven-from", "jörg@x"),
            "unproven-from*=utf-8''j%C3%B6rg%40x"
        );
    }
}
