//! Unwrapping stored mail (src/pgp/unwrap.rs, decrypt.rs): PGP/MIME and inline PGP over
//! arbitrary bytes, decrypted with a fixed key made once per process.
//!
//! The bytes are used as a whole message, as the OpenPGP data of a PGP/MIME message, as
//! the armored body of an inline one, or as raw ciphertext for `decrypt_bytes`.
//!
//! Properties: never a panic; a message that is not encrypted is shown as it is (minus
//! a forged status field); no view carries a status field it did not write itself:
//! a decrypted view has exactly one `Sealpost-Decrypted` field, any other view none;
//! nothing larger than the size limit is decrypted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealpost::pgp::{ViewKind, STATUS_HEADER};

#[path = "common/input.rs"]
mod input;
#[path = "common/key.rs"]
mod key;
#[path = "common/panics.rs"]
mod panics;

fn status_fields(view: &[u8]) -> usize {
    let (header, _) = sealpost::mime::split_message(view);
    sealpost::mime::fields(header)
        .iter()
        .filter(|f| f.is(STATUS_HEADER))
        .count()
}

// Input layout: the shape (whole message, PGP/MIME data, inline armor body, raw
// ciphertext), the size limit in units of 16 bytes (two bytes), then the data.
fuzz_target!(|bytes: &[u8]| {
    let id = key::alice();
    let mut raw = input::Input(bytes);
    let shape = raw.byte();
    let limit = raw.u16() as usize * 16;
    let data = raw.rest();
    let header: &[u8] = b"From: bob@example.org\r\nTo: alice@example.com\r\nSubject: x\r\n";
    let message: Vec<u8> = match shape % 4 {
        0 => data.to_vec(),
        1 => [
            header,
            b"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n",
            data,
            b"\r\n--b--\r\n",
        ]
        .concat(),
        2 => [
            header,
            b"Content-Type: text/plain\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\n",
            data,
            b"\r\n-----END PGP MESSAGE-----\r\n",
        ]
        .concat(),
        _ => {
            let me = sealpost::trust::Believed::for_all_user_ids(id.cert.clone());
            let d = panics::contained(|| {
                sealpost::pgp::decrypt_bytes(data, &id.decryptors, &[&me], limit)
            });
            if let Some(Ok(d)) = d {
                assert!(d.plaintext.len() <= limit, "decrypted past the limit");
            }
            return;
        }
    };
    let me = sealpost::trust::Believed::for_addresses(id.cert.clone(), &[key::ADDRESS]);
    // As FETCH builds it: a panic while building (a defect) shows the message as stored.
    panics::tolerate_known_panics();
    let v = sealpost::imap::fetch::view_or_stand_in(&message, || {
        sealpost::pgp::view_of(&message, &id.decryptors, &[&me], Some(&id.cert), limit)
    });
    match &v.kind {
        ViewKind::Decrypted(_) => {
            assert_eq!(
                status_fields(&v.bytes),
                1,
                "a decrypted view's status fields"
            );
        }
        kind => {
            let stripped = sealpost::mime::without_fields(&message, &[STATUS_HEADER]);
            assert_eq!(
                v.bytes, stripped,
                "{kind:?} view is not the message as stored"
            );
            if !sealpost::pgp::is_encrypted(&message) {
                assert!(matches!(kind, ViewKind::Plain), "{kind:?}");
            }
        }
    }
    // Not contained where sealpost calls it (src/imap/seal.rs): see fuzz/README.md.
    let _ =
        panics::contained(|| sealpost::pgp::own_copy(&message, &id.decryptors, &id.cert, limit));
});
