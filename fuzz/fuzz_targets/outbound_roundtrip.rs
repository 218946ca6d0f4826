//! The outbound pipeline's encryption (`sealpost::pgp::encrypt_message`) undone by the
//! view (`view_of`): decrypt(encrypt(m)) == m, for arbitrary messages, with and without
//! RFC 9788 header protection.
//!
//! Properties: encryption of any message succeeds; the result is recognised as encrypted
//! and decrypts with the recipient's key, signed; the view's body is the message's body
//! byte for byte (line ends normalised to CRLF, as on the wire), and its header keeps
//! each of the message's fields except the dropped ones (Bcc).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealpost::pgp::ViewKind;

#[path = "common/input.rs"]
mod input;
#[path = "common/key.rs"]
mod key;

// Input layout: header protection (low bit), then the message.
fuzz_target!(|bytes: &[u8]| {
    let id = key::alice();
    let mut input = input::Input(bytes);
    let protect_headers = input.byte() & 1 == 1;
    let raw = input.rest();
    let req = sealpost::pgp::EncryptRequest {
        raw,
        recipients: std::slice::from_ref(&id.cert),
        signer: id.signer.as_ref(),
        protect_headers,
        boundary: "fuzz-boundary-0123456789",
        extra_outer: b"",
    };
    let sealed = sealpost::pgp::encrypt_message(&req, &["Bcc"]).expect("encrypting");
    assert!(
        sealpost::pgp::is_encrypted(&sealed),
        "not recognised as encrypted"
    );
    // A header with a line that is no field (RFC 5322 §3.6.8: a name of printable ASCII
    // but `:`, then `:`; no CR but the line end's, no NUL) is copied as it is into the outer header, where it ends the
    // header for a MIME parser, the multipart/encrypted Content-Type with it, and a
    // field with a bare CR or a NUL may not come back: see fuzz/README.md, "Found". Only that encryption succeeds is checked for it.
    let named = |f: &sealpost::mime::Field<'_>| {
        !f.name.is_empty()
            && f.name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
            && f.raw.get(f.name.len()) == Some(&b':')
            && !f.raw[..f.raw.len().saturating_sub(2)].contains(&b'\r')
            && !f.raw.contains(&0)
    };
    let crlf = sealpost::mime::to_crlf(raw);
    let (m_header, m_body) = sealpost::mime::split_message(&crlf);
    if !sealpost::mime::fields(m_header).iter().all(named) {
        return;
    }
    let me = sealpost::trust::Believed::for_addresses(id.cert.clone(), &[key::ADDRESS]);
    let v = sealpost::pgp::view_of(&sealed, &id.decryptors, &[&me], None, 1 << 24);
    assert!(matches!(v.kind, ViewKind::Decrypted(_)), "{:?}", v.kind);

    // A message that itself claims RFC 9788 protection (`hp=`, `hp-legacy-display`,
    // `protected-headers` in a Content-Type) is read back as protected: its outer fields
    // set aside, a legacy display element cut from its body, even when sealpost did not
    // protect it (see fuzz/README.md, "Found"). Only that it decrypts is checked for it.
    let lower = raw.to_ascii_lowercase();
    let has = |needle: &[u8]| lower.windows(needle.len()).any(|w| w == needle);
    if has(b"hp=") || has(b"hp-legacy-display") || has(b"protected-headers") {
        return;
    }
    let (v_header, v_body) = sealpost::mime::split_message(&v.bytes);
    assert_eq!(
        String::from_utf8_lossy(v_body),
        String::from_utf8_lossy(m_body),
        "the body changed"
    );
    let shown = sealpost::mime::fields(v_header);
    // Protected fields are shown only under a signature good for the From (a message
    // without From: alice is signed, but not by its sender): by design, not checked.
    let good = matches!(
        v.kind,
        ViewKind::Decrypted(sealpost::pgp::SignatureStatus::Good { .. })
    );
    if protect_headers && !good {
        return;
    }
    for field in sealpost::mime::fields(m_header) {
        if field.is("Bcc") || field.is(sealpost::pgp::STATUS_HEADER) {
            assert!(
                !shown.iter().any(|s| s.raw == field.raw),
                "dropped field shown"
            );
            continue;
        }
        // MIME-Version is the view's own; with protection the inner Content-Type gains
        // its `protected-headers` marker.
        if field.is("MIME-Version") || (protect_headers && field.is("Content-Type")) {
            continue;
        }
        assert!(
            shown
                .iter()
                .any(|s| s.raw.trim_ascii_end() == field.raw.trim_ascii_end()),
            "field {:?} lost; the view's header:\n{}",
            String::from_utf8_lossy(field.raw),
            String::from_utf8_lossy(v_header)
        );
    }
});
