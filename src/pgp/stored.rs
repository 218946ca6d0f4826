//! The user's own copies, sealed before the provider stores them: what a mail client
//! APPENDs (Sent, Drafts, any mailbox) is stored encrypted to the identity's own key,
//! and shown back through sealpost exactly as the client wrote it.
//!
//! The payload is an RFC 9788 cryptographic payload (`hp="cipher"`, the real Subject
//! inside, `HP-Outer` for what the outside shows), so any OpenPGP mail client with the
//! key reads it well. It is also the original message with as few, recorded changes as
//! possible: the header fields in their order, the first Content-Type with the markers
//! appended (or one added), then the `HP-Outer` fields and a `Sealpost-Stored` field
//! saying what was changed. That lets [`unseal`] give back the original bytes, so a
//! draft reopened in Thunderbird keeps its `X-Mozilla-*` fields and Bcc, and
//! RFC822.SIZE, BODYSTRUCTURE and every section are those of the message as written.
//!
//! The copy is signed by the identity's own key: the signature is what tells sealpost's
//! own copies from mail that someone else encrypted to the user, whose header fields
//! are shown only under the rules of [`super::protect`].

use super::{protect, PgpError};
use crate::mime;
use openpgp::cert::Cert;
use openpgp::crypto::KeyPair;
use sequoia_openpgp as openpgp;

/// The field recording how the payload differs from the original message.
pub const STORED_FIELD: &str = "Sealpost-Stored";

/// Encrypts `raw` (a message as a client APPENDs it) to `own`, signed by `signer`.
pub fn seal(
    raw: &[u8],
    own: &Cert,
    signer: Option<&KeyPair>,
    boundary: &str,
) -> Result<Vec<u8>, PgpError> {
    let raw = mime::to_crlf(raw);
    let (header, body) = mime::split_message(&raw);
    let fields = mime::fields(header);
    let mut inner = Vec::with_capacity(2 * header.len() + 512);
    let mut outer = Vec::with_capacity(header.len() + 64);
    let mut kept = false;
    for f in &fields {
        if f.is("Content-Type") && !kept {
            kept = true;
            let line = f.raw.strip_suffix(b"\r\n").unwrap_or(f.raw);
            inner.extend_from_slice(line);
            inner.extend_from_slice(protect::MARKERS);
            inner.extend_from_slice(b"\r\n");
            continue;
        }
        mime::push_line(&mut inner, f.raw);
        if !protect::is_content_field(f) && !f.is("MIME-Version") {
            if let Some(shown) = protect::outer_copy(f) {
                mime::push_line(&mut outer, &shown);
            }
        }
    }
    if !kept {
        // RFC 2045 §5.2: what a message without Content-Type is.
        inner.extend_from_slice(b"Content-Type: text/plain; charset=us-ascii");
        inner.extend_from_slice(protect::MARKERS);
        inner.extend_from_slice(b"\r\n");
    }
    let n = protect::push_hp_outer(&mut inner, &outer);
    let ct = if kept { "kept" } else { "added" };
    let digest = digest(&raw);
    inner.extend_from_slice(
        format!("{STORED_FIELD}: v1; content-type={ct}; hp-outer={n}; sha256={digest}\r\n\r\n")
            .as_bytes(),
    );
    super::pgp_mime(
        &outer,
        &[&inner, body],
        std::slice::from_ref(own),
        signer,
        boundary,
    )
}

/// SHA-256 of a message (as CRLF text), hex: names the original inside its sealed
/// copy, so `sealpost seal` recognises copies it already made and `unseal` checks
/// that it gives back exactly the original.
pub fn digest(message: &[u8]) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(mime::to_crlf(message).as_ref());
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// The digest of the original that a payload [`seal`] made records.
pub fn stored_digest(payload: &[u8]) -> Option<String> {
    let (header, _) = mime::split_message(payload);
    let fields = mime::fields(header);
    let stored = fields.last().filter(|f| f.is(STORED_FIELD))?;
    stored
        .value()
        .split(';')
        .find_map(|p| p.trim().strip_prefix("sha256=").map(str::to_string))
}

/// The original message of a payload [`seal`] made, or `None` when `payload` is not
/// one (or was changed in a way `seal` does not make).
pub fn unseal(payload: &[u8]) -> Option<Vec<u8>> {
    let (header, body) = mime::split_message(payload);
    let fields = mime::fields(header);
    let (stored, rest) = fields.split_last()?;
    if !stored.is(STORED_FIELD) {
        return None;
    }
    let value = stored.value();
    let mut params = value.split(';').map(str::trim);
    if params.next()? != "v1" {
        return None;
    }
    let (mut ct, mut n, mut sha) = (None, None, None);
    for p in params {
        match p.split_once('=')? {
            ("content-type", v) => ct = Some(v == "kept"),
            ("hp-outer", v) => n = v.parse::<usize>().ok(),
            ("sha256", v) => sha = Some(v.to_string()),
            _ => return None,
        }
    }
    let (kept, n) = (ct?, n?);
    let original = rest.len().checked_sub(n)?;
    if !rest[original..].iter().all(|f| f.is("HP-Outer")) {
        return None;
    }
    let mut out = Vec::with_capacity(payload.len());
    let mut first = true;
    for f in &rest[..original] {
        if f.is("Content-Type") && first {
            first = false;
            if !kept {
                continue;
            }
            let line = f
                .raw
                .strip_suffix(b"\r\n")?
                .strip_suffix(protect::MARKERS)?;
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
            continue;
        }
        mime::push_line(&mut out, f.raw);
    }
    if first {
        return None;
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    // A recorded digest must match: what comes back is exactly what was sealed.
    if sha.is_some_and(|d| d != digest(&out)) {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::tests::make_cert;
    use openpgp::policy::StandardPolicy;

    fn keypairs(cert: &Cert) -> (Vec<KeyPair>, KeyPair) {
        let p = StandardPolicy::new();
        let keys = || cert.keys().secret().with_policy(&p, None);
        let dec = keys()
            .for_transport_encryption()
            .map(|k| k.key().clone().into_keypair().unwrap())
            .collect();
        let sig = keys().for_signing().next().unwrap().key().clone();
        let sig = sig.into_keypair().unwrap();
        (dec, sig)
    }

    const DRAFT: &[u8] = b"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nBcc: carol@example.org\r\nSubject: Draft plans\r\nX-Mozilla-Draft-Info: internal/draft; vcard=0\r\nThread-Topic: Draft plans\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8;\r\n format=flowed\r\n\r\nNot sent yet.\r\n";

    #[test]
    fn a_sealed_copy_hides_everything_but_transport_and_unseals_byte_for_byte() {
        let alice = make_cert("alice@example.com");
        let (dec, sig) = keypairs(&alice);
        for original in [
            DRAFT.to_vec(),
            b"Subject: no type\r\n\r\nplain\r\n".to_vec(),
        ] {
            let sealed = seal(&original, &alice, Some(&sig), "b").unwrap();
            let text = String::from_utf8_lossy(&sealed);
            assert!(super::super::is_fully_encrypted(&sealed), "{text}");
            for secret in [
                "Draft plans",
                "Not sent",
                "carol@",
                "X-Mozilla",
                "Thread-Topic",
                "no type",
            ] {
                assert!(!text.contains(secret), "{secret} outside: {text}");
            }
            let own = crate::trust::Believed::for_all_user_ids(alice.clone());
            let d = super::super::decrypt_bytes(
                &sealed[text.find("-----BEGIN").unwrap()..],
                &dec,
                &[&own],
                1 << 20,
            )
            .unwrap();
            assert!(matches!(
                d.signature,
                super::super::SignatureStatus::Good { .. }
            ));
            assert_eq!(unseal(&d.plaintext).as_deref(), Some(original.as_slice()));
        }
    }

    #[test]
    fn unseal_refuses_what_seal_did_not_make() {
        assert_eq!(unseal(b"Subject: x\r\n\r\nhi\r\n"), None);
        let forged = b"Content-Type: text/plain\r\nSubject: x\r\nSealpost-Stored: v1; content-type=kept; hp-outer=0\r\n\r\nhi\r\n";
        // The markers sealpost appends are missing: not its payload.
        assert_eq!(unseal(forged), None);
        let wrong_count = b"Content-Type: text/plain; hp=\"cipher\"; protected-headers=\"v1\"\r\nSubject: x\r\nSealpost-Stored: v1; content-type=kept; hp-outer=3\r\n\r\nhi\r\n";
        assert_eq!(unseal(wrong_count), None);
    }
}

#[cfg(test)]
mod review_tests {
    use super::*;
    use crate::keys::tests::make_cert;
    use openpgp::policy::StandardPolicy;

    /// Sealed mail someone else sent keeps no forged status field (found by an
    /// attacking review).
    #[test]
    fn a_sealed_copy_does_not_show_a_forged_status_field() {
        let me = make_cert("me@example.org");
        let p = StandardPolicy::new();
        let keys: Vec<KeyPair> = me
            .keys()
            .secret()
            .with_policy(&p, None)
            .for_transport_encryption()
            .map(|k| k.key().clone().into_keypair().unwrap())
            .collect();
        let sig = me
            .keys()
            .secret()
            .with_policy(&p, None)
            .for_signing()
            .next()
            .unwrap();
        let sig = sig.key().clone().into_keypair().unwrap();
        let forged = b"From: CEO <ceo@corp.example>\r\nSubject: wire it\r\nSealpost-Decrypted: yes; signature=good; signer=0123456789ABCDEF\r\n\r\nPay 1M to X.\r\n";
        let sealed = seal(forged, &me, Some(&sig), "b").unwrap();
        let own = crate::trust::Believed::for_all_user_ids(me.clone());
        let view = super::super::view_of(&sealed, &keys, &[&own], Some(&me), 1 << 20);
        let text = String::from_utf8_lossy(&view.bytes);
        assert!(text.contains("Pay 1M"), "{text}");
        assert!(!text.contains("signer=0123"), "{text}");
        // The own key sealed it; it says nothing about who wrote it.
        assert!(matches!(
            view.kind,
            crate::pgp::ViewKind::Decrypted(crate::pgp::SignatureStatus::Unsigned)
        ));
    }
}
