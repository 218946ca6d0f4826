//! OpenPGP for mail: recognising encrypted messages and building PGP/MIME.
//!
//! Outgoing messages are wrapped as RFC 3156 §4 `multipart/encrypted`. The original
//! MIME entity (its Content-* fields and body) becomes the encrypted payload, signed
//! inside the encryption (RFC 3156 §6.2, combined method). With header protection
//! (RFC 9788, `protected-headers="v1"`) the inner entity also carries the visible
//! header fields and the outer Subject is replaced so the provider does not see it.

mod decrypt;
pub mod protect;
mod unwrap;

pub use decrypt::{decrypt_bytes, DecryptError, Decrypted, SignatureStatus};
pub use unwrap::{view_of, View, ViewKind, STATUS_HEADER};

use crate::mime;
use openpgp::cert::Cert;
use openpgp::crypto::KeyPair;
use openpgp::serialize::stream::{Armorer, Encryptor, LiteralWriter, Message, Recipient, Signer};
use sequoia_openpgp as openpgp;
use std::io::Write;

#[derive(Debug, thiserror::Error)]
pub enum PgpError {
    #[error("no usable encryption key among the recipients' certificates")]
    NoRecipients,
    #[error("OpenPGP encryption failed: {0}")]
    Encrypt(String),
}

/// Fields that RFC 9788 header protection copies into the encrypted part.
pub const PROTECTED_FIELDS: &[&str] = &[
    "Subject",
    "From",
    "To",
    "Cc",
    "Date",
    "Message-ID",
    "Reply-To",
];

/// The Subject shown outside an encrypted message with protected headers.
pub const HIDDEN_SUBJECT: &str = "...";

const ARMOR_BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----";

/// Is the message already OpenPGP-encrypted (PGP/MIME, or inline PGP in a single
/// text part)? Such mail is relayed unchanged.
pub fn is_encrypted(raw: &[u8]) -> bool {
    let (header, body) = mime::split_message(raw);
    let content_type = mime::fields(header)
        .into_iter()
        .find(|f| f.is("Content-Type"))
        .map(|f| f.value().to_ascii_lowercase());
    match content_type {
        Some(ct) if ct.starts_with("multipart/encrypted") => {
            ct.contains("application/pgp-encrypted")
        }
        Some(ct) if !ct.starts_with("text/plain") => false,
        _ => body
            .split(|&b| b == b'\n')
            .any(|line| line.trim_ascii_start().starts_with(ARMOR_BEGIN)),
    }
}

/// Is the whole message OpenPGP-encrypted, so it may be relayed unchanged even under
/// `require`? Stricter than [`is_encrypted`]: a plaintext message that merely contains
/// an armor line, or a `multipart/encrypted` with extra parts, does not qualify.
pub fn is_fully_encrypted(raw: &[u8]) -> bool {
    use mail_parser::MimeHeaders;
    if !is_encrypted(raw) {
        return false;
    }
    let one_block = |data: &[u8]| {
        let t = data.trim_ascii();
        t.starts_with(ARMOR_BEGIN)
            && t.ends_with(b"-----END PGP MESSAGE-----")
            && t.windows(ARMOR_BEGIN.len())
                .filter(|w| *w == ARMOR_BEGIN)
                .count()
                == 1
    };
    let Some(msg) = mail_parser::MessageParser::default().parse(raw) else {
        return false;
    };
    let is = |p: &mail_parser::MessagePart<'_>, t: &str, sub: &str| {
        p.content_type().is_some_and(|c| {
            c.ctype().eq_ignore_ascii_case(t)
                && c.subtype().is_some_and(|s| s.eq_ignore_ascii_case(sub))
        })
    };
    match msg.parts.as_slice() {
        [root, version, data] if is(root, "multipart", "encrypted") => {
            is(version, "application", "pgp-encrypted")
                && is(data, "application", "octet-stream")
                && one_block(data.contents())
        }
        [root] => one_block(root.contents()),
        _ => false,
    }
}

/// What to encrypt and for whom.
pub struct EncryptRequest<'a> {
    /// The message as submitted (header and body).
    pub raw: &'a [u8],
    /// Certificates to encrypt to (recipients and the sender's own).
    pub recipients: &'a [Cert],
    /// Signs the inner entity when present.
    pub signer: Option<&'a KeyPair>,
    /// RFC 9788 header protection.
    pub protect_headers: bool,
    /// MIME boundary for the outer message (random in production).
    pub boundary: &'a str,
    /// Complete header fields (CRLF-terminated) to put first in the outer header,
    /// such as `Autocrypt:`.
    pub extra_outer: &'a [u8],
}

/// Writes into a buffer with every bare LF turned into CRLF, so the armored
/// ciphertext lands in the message in its final form without a second copy.
struct CrlfWriter<'a> {
    out: &'a mut Vec<u8>,
    prev: u8,
}

impl Write for CrlfWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for &b in buf {
            if b == b'\n' && self.prev != b'\r' {
                self.out.push(b'\r');
            }
            self.out.push(b);
            self.prev = b;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Builds the PGP/MIME message. Fields named in `drop_fields` (e.g. Bcc) are removed
/// from both the outer header and the protected copy. The inner entity is streamed
/// into the encryption and the armored result straight into the message, so a large
/// message is held about twice (input and output), not once per stage.
pub fn encrypt_message(
    req: &EncryptRequest<'_>,
    drop_fields: &[&str],
) -> Result<Vec<u8>, PgpError> {
    let raw = mime::to_crlf(req.raw);
    let (header, body) = mime::split_message(&raw);
    let fields: Vec<_> = mime::fields(header)
        .into_iter()
        .filter(|f| !drop_fields.iter().any(|d| f.is(d)))
        .collect();
    let is_content =
        |f: &mime::Field<'_>| f.name.len() >= 8 && f.name[..8].eq_ignore_ascii_case("Content-");

    // The inner entity's header: the original Content-* fields, then (with
    // protection) the protected header fields. The body follows it unchanged.
    let mut inner = Vec::with_capacity(header.len() + 512);
    let mut has_content_type = false;
    for f in fields.iter().filter(|f| is_content(f)) {
        if f.is("Content-Type") {
            has_content_type = true;
            if req.protect_headers {
                let line = f.raw.strip_suffix(b"\r\n").unwrap_or(f.raw);
                inner.extend_from_slice(line);
                inner.extend_from_slice(b"; protected-headers=\"v1\"\r\n");
                continue;
            }
        }
        mime::push_line(&mut inner, f.raw);
    }
    if !has_content_type {
        // RFC 2045 §5.2 default, stated explicitly so the inner entity stands alone.
        let charset = if body.is_ascii() { "us-ascii" } else { "utf-8" };
        inner.extend_from_slice(format!("Content-Type: text/plain; charset={charset}").as_bytes());
        if req.protect_headers {
            inner.extend_from_slice(b"; protected-headers=\"v1\"");
        }
        inner.extend_from_slice(b"\r\n");
    }
    if req.protect_headers {
        for f in fields
            .iter()
            .filter(|f| PROTECTED_FIELDS.iter().any(|p| f.is(p)))
        {
            mime::push_line(&mut inner, f.raw);
        }
    }
    inner.extend_from_slice(b"\r\n");

    // The outer message: every non-MIME field, Subject hidden when protected.
    // Armor grows the data by 4/3 plus line ends; reserve once.
    let estimate = (inner.len() + body.len()) * 14 / 10 + header.len() + 2048;
    let mut out = Vec::with_capacity(estimate);
    out.extend_from_slice(req.extra_outer);
    for f in &fields {
        if is_content(f) || f.is("MIME-Version") {
            continue;
        }
        if req.protect_headers && f.is("Subject") {
            out.extend_from_slice(format!("Subject: {HIDDEN_SUBJECT}\r\n").as_bytes());
            continue;
        }
        mime::push_line(&mut out, f.raw);
    }
    let b = req.boundary;
    out.extend_from_slice(
        format!(
            "MIME-Version: 1.0\r\n\
             Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n \
             boundary=\"{b}\"\r\n\
             \r\n\
             This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n\
             --{b}\r\n\
             Content-Type: application/pgp-encrypted\r\n\
             Content-Description: PGP/MIME version identification\r\n\
             \r\n\
             Version: 1\r\n\
             \r\n\
             --{b}\r\n\
             Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\
             Content-Description: OpenPGP encrypted message\r\n\
             Content-Disposition: inline; filename=\"encrypted.asc\"\r\n\
             \r\n"
        )
        .as_bytes(),
    );
    encrypt_into(
        &mut CrlfWriter {
            out: &mut out,
            prev: 0,
        },
        &[&inner, body],
        req.recipients,
        req.signer,
    )?;
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    Ok(out)
}

/// The streaming core: the pieces of `plaintext` go through literal data, signing,
/// encryption and armor into `sink`, for every usable encryption subkey of
/// `recipients`.
fn encrypt_into(
    sink: &mut (dyn Write + Send + Sync),
    plaintext: &[&[u8]],
    recipients: &[Cert],
    signer: Option<&KeyPair>,
) -> Result<(), PgpError> {
    let policy = &crate::keys::POLICY;
    let valid: Vec<_> = recipients
        .iter()
        .filter_map(|c| c.with_policy(policy, None).ok())
        .collect();
    let keys: Vec<Recipient<'_>> = valid
        .iter()
        .flat_map(|vc| crate::keys::encryption_keys(vc).map(Recipient::from))
        .collect();
    if keys.is_empty() {
        return Err(PgpError::NoRecipients);
    }
    let e = |e: anyhow::Error| PgpError::Encrypt(e.to_string());
    let message = Message::new(sink);
    let message = Armorer::new(message).build().map_err(e)?;
    let message = Encryptor::for_recipients(message, keys)
        .build()
        .map_err(e)?;
    let message = match signer {
        Some(kp) => Signer::new(message, kp.clone())
            .map_err(e)?
            .build()
            .map_err(e)?,
        None => message,
    };
    let mut message = LiteralWriter::new(message).build().map_err(e)?;
    for piece in plaintext {
        message
            .write_all(piece)
            .map_err(|err| PgpError::Encrypt(err.to_string()))?;
    }
    message.finalize().map_err(e)?;
    Ok(())
}

/// A random MIME boundary that cannot occur in base64 or armored text.
pub fn random_boundary() -> String {
    use rand::Rng;
    let n: u128 = rand::rng().random();
    format!("=_sealpost_{n:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::tests::make_cert;

    #[test]
    fn recognises_encrypted_mail() {
        assert!(is_encrypted(
            b"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=x\r\n\r\n--x--\r\n"
        ));
        assert!(is_encrypted(
            b"Subject: hi\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nabc\r\n-----END PGP MESSAGE-----\r\n"
        ));
        assert!(!is_encrypted(b"Subject: hi\r\n\r\nhello\r\n"));
        assert!(!is_encrypted(
            b"Content-Type: multipart/mixed; boundary=x\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n"
        ));
        assert!(!is_encrypted(
            b"Content-Type: multipart/encrypted; protocol=\"application/pkcs7-mime\"\r\n\r\n"
        ));
    }

    #[test]
    fn only_wholly_encrypted_mail_counts_as_already_encrypted() {
        let armored = "-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA\r\n-----END PGP MESSAGE-----\r\n";
        let inline = format!("Subject: x\r\n\r\n{armored}");
        assert!(is_fully_encrypted(inline.as_bytes()));
        let leaky = format!("Subject: x\r\n\r\nSecret plans\r\n{armored}");
        assert!(is_encrypted(leaky.as_bytes()) && !is_fully_encrypted(leaky.as_bytes()));
        let mime = format!("Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n{armored}--b--\r\n");
        assert!(is_fully_encrypted(mime.as_bytes()));
        let extra = mime.replace(
            "--b--",
            "--b\r\nContent-Type: text/plain\r\n\r\nplaintext\r\n--b--",
        );
        assert!(!is_fully_encrypted(extra.as_bytes()));
    }

    #[test]
    fn builds_pgp_mime_with_protected_headers() {
        let bob = make_cert("bob@example.org");
        let msg = b"From: a@example.com\r\nTo: bob@example.org\r\nBcc: secret@example.net\r\nSubject: Secret plans\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello\r\n";
        let out = encrypt_message(
            &EncryptRequest {
                raw: msg,
                recipients: std::slice::from_ref(&bob),
                signer: None,
                protect_headers: true,
                boundary: "BOUND",
                extra_outer: b"",
            },
            &["Bcc"],
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Subject: ...\r\n"), "{text}");
        assert!(!text.contains("Secret plans"));
        assert!(!text.contains("secret@example.net"));
        assert!(text.contains("To: bob@example.org\r\n"));
        assert!(text.contains("protocol=\"application/pgp-encrypted\""));
        assert!(text.contains("-----BEGIN PGP MESSAGE-----"));
        assert!(text.ends_with("\r\n--BOUND--\r\n"));
        assert!(is_encrypted(text.as_bytes()));
    }
}
