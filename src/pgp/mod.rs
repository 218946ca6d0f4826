//! OpenPGP for mail: recognising encrypted messages and building PGP/MIME.
//!
//! Outgoing messages are wrapped as RFC 3156 §4 `multipart/encrypted`. The original
//! MIME entity (its Content-* fields and body) becomes the encrypted payload, signed
//! inside the encryption (RFC 3156 §6.2, combined method). With header protection
//! (RFC 9788; see [`protect`]) the inner entity also carries the header fields, and the
//! outer header keeps only what transport needs, its Subject obscured.

mod armor;
mod decrypt;
pub mod protect;
pub mod stored;
mod unwrap;

pub use decrypt::{decrypt_bytes, DecryptError, Decrypted, SignatureStatus};
pub use unwrap::{own_copy, view_of, View, ViewKind, STATUS_HEADER};

use crate::mime;
use openpgp::cert::Cert;
use openpgp::crypto::KeyPair;
use openpgp::serialize::stream::{Encryptor, LiteralWriter, Message, Recipient, Signer};
use sequoia_openpgp as openpgp;
use std::io::Write;

#[derive(Debug, thiserror::Error)]
pub enum PgpError {
    #[error("no usable encryption key among the recipients' certificates")]
    NoRecipients,
    #[error("OpenPGP encryption failed: {0}")]
    Encrypt(String),
}

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
        _ => has_armor_line(body),
    }
}

/// Does a line of `body` start with the armor's BEGIN line, after white space? (Found
/// with a substring search, not line by line: every message sent is asked this.) Only
/// the white space right before a match is looked at, which no two matches share, so a
/// long line full of matches costs what its length does.
fn has_armor_line(body: &[u8]) -> bool {
    memchr::memmem::find_iter(body, ARMOR_BEGIN).any(|at| {
        matches!(
            body[..at]
                .iter()
                .rev()
                .find(|&&b| b == b'\n' || !b.is_ascii_whitespace()),
            None | Some(b'\n')
        )
    })
}

/// Is the whole message OpenPGP-encrypted, so it may be relayed unchanged even under
/// `require`? Stricter than [`is_encrypted`], which only recognises the shape: the data
/// must be one armored OpenPGP message that really is encrypted (its packets parsed, see
/// [`is_encrypted_openpgp`]), and nothing may travel beside it: no other part, no text
/// before or after the armor, and in PGP/MIME no preamble or epilogue but the usual
/// one-line note that it is an OpenPGP/MIME message.
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
            && only_plain_armor_headers(t)
            && is_encrypted_openpgp(t)
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
                && only_label_fields(version, false)
                && only_label_fields(data, true)
                && version
                    .contents()
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"Version: 1")
                && is(data, "application", "octet-stream")
                && one_block(data.contents())
                && only_a_note_outside_parts(raw)
        }
        [root] => one_block(root.contents()),
        _ => false,
    }
}

/// The armor header lines (RFC 9580 §6.2) are plaintext beside the ciphertext: only the
/// `Version` and `Comment` that implementations write are let through, once each and one
/// short line long.
fn only_plain_armor_headers(armored: &[u8]) -> bool {
    let mut seen = Vec::new();
    for line in armored.split(|&b| b == b'\n').skip(1) {
        let line = line.trim_ascii();
        if line.is_empty() {
            return true;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            // Not a header line: the body starts without a blank line (the parser decides).
            return true;
        };
        let key = line[..colon].to_ascii_lowercase();
        if !(key == b"version" || key == b"comment") || line.len() > 76 || seen.contains(&key) {
            return false;
        }
        seen.push(key);
    }
    true
}

/// The header fields of the two PGP/MIME parts are plaintext beside the ciphertext. Only
/// the fields that label them are let through, as clients write them: `Content-Type` (the
/// data part may name its file), `Content-Transfer-Encoding`, a short `Content-Description`
/// and, on the data part, `Content-Disposition` with a short file name.
fn only_label_fields(part: &mail_parser::MessagePart<'_>, data_part: bool) -> bool {
    use mail_parser::{HeaderName, HeaderValue};
    const NAME_LIMIT: usize = 40;
    let params_ok = |value: &HeaderValue<'_>, allowed: &str| match value {
        HeaderValue::ContentType(ct) => ct.attributes().unwrap_or_default().iter().all(|a| {
            data_part && a.name.eq_ignore_ascii_case(allowed) && a.value.len() <= NAME_LIMIT
        }),
        _ => false,
    };
    part.headers.iter().all(|h| match &h.name {
        HeaderName::ContentType => params_ok(&h.value, "name"),
        HeaderName::ContentTransferEncoding => true,
        HeaderName::ContentDescription => match &h.value {
            HeaderValue::Text(text) => text.len() <= 64,
            HeaderValue::Empty => true,
            _ => false,
        },
        HeaderName::ContentDisposition => params_ok(&h.value, "filename"),
        _ => false,
    })
}

/// RFC 3156 §4 leaves the preamble free; clients write one line saying what the message
/// is ("This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)"). That line is
/// allowed, nothing else.
fn only_a_note_outside_parts(raw: &[u8]) -> bool {
    let Some(lines) = mime::view::lines_outside_parts(raw) else {
        return false;
    };
    match lines.as_slice() {
        [] => true,
        [note] => {
            let lower = note.to_ascii_lowercase();
            note.len() <= 100 && lower.starts_with(b"this is an openpgp/mime encrypted message")
        }
        _ => false,
    }
}

/// Is `data` an encrypted OpenPGP message (RFC 9580 §10.3): one or more PKESK or SKESK
/// packets, then one SEIPD (v1 or v2) packet, and nothing else? The packets are parsed,
/// not guessed from armor lines: a literal data packet in armor is plaintext for anyone.
pub fn is_encrypted_openpgp(data: &[u8]) -> bool {
    use openpgp::parse::{PacketParser, PacketParserResult, Parse};
    use openpgp::Packet;
    let Ok(mut ppr) = PacketParser::from_bytes(data) else {
        return false;
    };
    let (mut esks, mut seipd) = (0usize, 0usize);
    while let PacketParserResult::Some(pp) = ppr {
        match &pp.packet {
            Packet::PKESK(_) | Packet::SKESK(_) if seipd == 0 => esks += 1,
            Packet::SEIP(_) if esks > 0 && seipd == 0 => seipd += 1,
            _ => return false,
        }
        // `next`, not `recurse`: the encrypted container is not opened.
        match pp.next() {
            Ok((_, next)) => ppr = next,
            Err(_) => return false,
        }
    }
    seipd == 1
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

/// Builds the PGP/MIME message. Fields named in `drop_fields` (e.g. Bcc) are removed
/// from both the outer header and the protected copy. The inner entity is streamed
/// into the encryption, whose output is armored into the message as it comes: a large
/// message is held about twice (input, armored output).
pub fn encrypt_message(
    req: &EncryptRequest<'_>,
    drop_fields: &[&str],
) -> Result<Vec<u8>, PgpError> {
    // Armor grows the data by 4/3 plus line ends; reserve once.
    let mut out = Vec::with_capacity(req.raw.len() * 14 / 10 + req.extra_outer.len() + 4096);
    encrypt_message_into(&mut out, req, drop_fields)?;
    Ok(out)
}

/// [`encrypt_message`], written into `sink` as it is made: the SMTP relay streams an
/// encrypted copy to the provider this way, so that a large message is held once (the
/// input), not twice.
pub fn encrypt_message_into(
    sink: &mut (dyn Write + Send + Sync),
    req: &EncryptRequest<'_>,
    drop_fields: &[&str],
) -> Result<(), PgpError> {
    let raw = mime::to_crlf(req.raw);
    let (header, body) = mime::split_message(&raw);
    let fields: Vec<_> = mime::fields(header)
        .into_iter()
        .filter(|f| !drop_fields.iter().any(|d| f.is(d)))
        .collect();
    let is_content = protect::is_content_field;

    // The inner entity's header: the original Content-* fields, then (with
    // protection, RFC 9788 §2) every other field as the client wrote it, and an
    // `HP-Outer` copy of each field left outside. The body follows it unchanged.
    // `protected-headers="v1"` beside `hp="cipher"`: what Thunderbird, Enigmail and
    // K-9 read to show the real Subject.
    const MARKERS: &[u8] = protect::MARKERS;
    let mut inner = Vec::with_capacity(2 * header.len() + 512);
    let mut has_content_type = false;
    for f in fields.iter().filter(|f| is_content(f)) {
        if f.is("Content-Type") {
            has_content_type = true;
            if req.protect_headers {
                let line = f.raw.strip_suffix(b"\r\n").unwrap_or(f.raw);
                inner.extend_from_slice(line);
                inner.extend_from_slice(MARKERS);
                inner.extend_from_slice(b"\r\n");
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
            inner.extend_from_slice(MARKERS);
        }
        inner.extend_from_slice(b"\r\n");
    }
    // The outer header: with protection only what transport and threading need
    // (`protect::kept_outside`), the Subject obscured (RFC 9788 §4.2.1).
    let mut outer = Vec::with_capacity(header.len() + 64);
    for f in fields
        .iter()
        .filter(|f| !is_content(f) && !f.is("MIME-Version"))
    {
        if !req.protect_headers {
            mime::push_line(&mut outer, f.raw);
            continue;
        }
        mime::push_line(&mut inner, f.raw);
        if let Some(shown) = protect::outer_copy(f) {
            mime::push_line(&mut outer, &shown);
        }
    }
    if req.protect_headers {
        protect::push_hp_outer(&mut inner, &outer);
    }
    inner.extend_from_slice(b"\r\n");
    let outer = [req.extra_outer, &outer].concat();
    pgp_mime_into(
        sink,
        &outer,
        &[&inner, body],
        req.recipients,
        req.signer,
        req.boundary,
    )
}

/// The RFC 3156 §4 message: `outer` header fields, then `multipart/encrypted` with the
/// pieces of `plaintext` encrypted (and signed by `signer`) to `recipients`.
pub(crate) fn pgp_mime(
    outer: &[u8],
    plaintext: &[&[u8]],
    recipients: &[Cert],
    signer: Option<&KeyPair>,
    b: &str,
) -> Result<Vec<u8>, PgpError> {
    // Armor grows the data by 4/3 plus line ends; reserve once.
    let size: usize = plaintext.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(size * 14 / 10 + outer.len() + 2048);
    pgp_mime_into(&mut out, outer, plaintext, recipients, signer, b)?;
    Ok(out)
}

/// [`pgp_mime`], written into `sink`.
fn pgp_mime_into(
    sink: &mut (dyn Write + Send + Sync),
    outer: &[u8],
    plaintext: &[&[u8]],
    recipients: &[Cert],
    signer: Option<&KeyPair>,
    b: &str,
) -> Result<(), PgpError> {
    let io = |err: std::io::Error| PgpError::Encrypt(err.to_string());
    sink.write_all(outer).map_err(io)?;
    sink.write_all(
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
    )
    .map_err(io)?;
    // The armor comes with CRLF line ends (see `armor::encode`), ending in one: written
    // as it is.
    encrypt_into(sink, plaintext, recipients, signer)?;
    sink.write_all(format!("\r\n--{b}--\r\n").as_bytes())
        .map_err(io)?;
    Ok(())
}

/// Whether `recipients` give at least one key to encrypt to (what [`encrypt_message`]
/// needs): checked before any copy of a message leaves.
pub fn has_encryption_keys(recipients: &[Cert]) -> bool {
    recipients.iter().any(|c| {
        c.with_policy(&crate::keys::POLICY, None)
            .is_ok_and(|vc| crate::keys::encryption_keys(&vc).next().is_some())
    })
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
    // Armored as the packets come (see `armor::Writer`): never held in binary too.
    let mut armored = armor::Writer::new(sink);
    let message = Message::new(&mut armored);
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
    armored
        .finish()
        .map(|_| ())
        .map_err(|err| PgpError::Encrypt(err.to_string()))
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

    #[test]
    fn an_armor_line_is_found_where_a_line_by_line_reading_finds_it() {
        let by_lines = |body: &[u8]| {
            body.split(|&b| b == b'\n')
                .any(|line| line.trim_ascii_start().starts_with(ARMOR_BEGIN))
        };
        let begin = std::str::from_utf8(ARMOR_BEGIN).unwrap();
        for body in [
            format!("{begin}\nx"),
            format!("text\n  \t{begin}\n"),
            format!("text {begin}\n"),
            format!("text\r\n\x0c{begin}"),
            format!("a\n\x0b{begin}"),
            format!("quoted: {begin}\n> {begin}\n"),
            format!("x{begin}\n \n {begin}"),
            "-----BEGIN PGP MESSAGE----".to_string(),
            String::new(),
        ] {
            assert_eq!(
                has_armor_line(body.as_bytes()),
                by_lines(body.as_bytes()),
                "{body:?}"
            );
        }
        // One long line of matches, none at its start (a search that looked back over
        // the whole line for each match took minutes on a message ten times this size).
        let mut line = b"x".to_vec();
        while line.len() < 4 << 20 {
            line.extend_from_slice(ARMOR_BEGIN);
        }
        assert!(!has_armor_line(&line));
        line.extend_from_slice(b"\n \t");
        line.extend_from_slice(ARMOR_BEGIN);
        assert!(has_armor_line(&line));
    }

    use crate::keys::tests::make_cert;
    use openpgp::serialize::stream::Armorer;

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
        let bob = make_cert("bob@example.org");
        let mut ciphertext = Vec::new();
        encrypt_into(
            &mut ciphertext,
            &[b"secret"],
            std::slice::from_ref(&bob),
            None,
        )
        .unwrap();
        let armored = String::from_utf8(ciphertext).unwrap();
        let inline = format!("Subject: x\r\n\r\n{armored}");
        assert!(is_fully_encrypted(inline.as_bytes()));
        let leaky = format!("Subject: x\r\n\r\nSecret plans\r\n{armored}");
        assert!(is_encrypted(leaky.as_bytes()) && !is_fully_encrypted(leaky.as_bytes()));
        let mime = format!("Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\nThis is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n{armored}--b--\r\n");
        assert!(is_fully_encrypted(mime.as_bytes()));
        let extra = mime.replace(
            "--b--",
            "--b\r\nContent-Type: text/plain\r\n\r\nplaintext\r\n--b--",
        );
        assert!(!is_fully_encrypted(extra.as_bytes()));
        // Plaintext in the preamble or the epilogue travels with the message.
        let preamble = mime.replace(
            "(RFC 4880 and 3156)\r\n",
            "(RFC 4880 and 3156)\r\nThe merger closes Friday.\r\n",
        );
        assert!(!is_fully_encrypted(preamble.as_bytes()));
        let epilogue = format!("{mime}The merger closes Friday.\r\n");
        assert!(!is_fully_encrypted(epilogue.as_bytes()));
        // What Thunderbird writes on the two parts is only a label.
        let labelled = mime
            .replace(
                "Content-Type: application/pgp-encrypted\r\n",
                "Content-Type: application/pgp-encrypted\r\nContent-Description: PGP/MIME version identification\r\n",
            )
            .replace(
                "Content-Type: application/octet-stream\r\n",
                "Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\nContent-Description: OpenPGP encrypted message\r\nContent-Disposition: inline; filename=\"encrypted.asc\"\r\n",
            );
        assert!(is_fully_encrypted(labelled.as_bytes()));
        // Plaintext in the parts' header fields or in the armor headers travels too.
        let data_header = "Content-Type: application/octet-stream\r\n";
        for leak in [
            "Content-Type: application/octet-stream\r\nX-Note: The merger closes Friday.\r\n",
            "Content-Type: application/octet-stream\r\nSubject: The merger closes Friday\r\n",
            "Content-Type: application/octet-stream; name=\"The merger closes Friday and the price is 4.2M.asc\"\r\n",
            "Content-Type: application/octet-stream; note=\"merger\"\r\n",
            "Content-Type: application/octet-stream\r\nContent-Description: The merger with Initech closes on Friday; tell nobody, the price is 4.2M\r\n",
            "Content-Type: application/octet-stream\r\nContent-Disposition: inline; comment=\"merger\"\r\n",
        ] {
            let leaky = mime.replace(data_header, leak);
            assert!(!is_fully_encrypted(leaky.as_bytes()), "{leak}");
        }
        let version_leak = mime.replace(
            "Content-Type: application/pgp-encrypted\r\n",
            "Content-Type: application/pgp-encrypted; name=\"merger\"\r\n",
        );
        assert!(!is_fully_encrypted(version_leak.as_bytes()));
        let begin = "-----BEGIN PGP MESSAGE-----\r\n";
        let commented = mime.replace(begin, &format!("{begin}Comment: made by a client\r\n"));
        assert!(is_fully_encrypted(commented.as_bytes()));
        for armor_leak in [
            "Comment: The merger closes Friday\r\nComment: the price is 4.2M\r\n".to_string(),
            "Hash: The merger closes Friday\r\n".to_string(),
            format!("Comment: {}\r\n", "merger ".repeat(12)),
        ] {
            let leaky = mime.replace(begin, &format!("{begin}{armor_leak}"));
            assert!(!is_fully_encrypted(leaky.as_bytes()), "{armor_leak}");
        }
    }

    #[test]
    fn armor_lines_around_anything_but_an_encrypted_message_are_plaintext() {
        // Armor around plain figures: no OpenPGP packets at all.
        let figures = "Subject: x\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nRevenue 4.2M, costs 3.1M\r\n-----END PGP MESSAGE-----\r\n";
        assert!(is_encrypted(figures.as_bytes()) && !is_fully_encrypted(figures.as_bytes()));
        // A real OpenPGP message that is only literal data: readable by anyone.
        let mut literal = Vec::new();
        {
            let message = Message::new(&mut literal);
            let message = Armorer::new(message).build().unwrap();
            let mut w = LiteralWriter::new(message).build().unwrap();
            w.write_all(b"Revenue 4.2M").unwrap();
            w.finalize().unwrap();
        }
        let text = String::from_utf8(literal).unwrap().replace('\n', "\r\n");
        assert!(text.starts_with("-----BEGIN PGP MESSAGE-----"));
        let msg = format!("Subject: x\r\n\r\n{text}");
        assert!(!is_fully_encrypted(msg.as_bytes()));
        assert!(!is_encrypted_openpgp(text.as_bytes()));
    }

    #[test]
    fn builds_pgp_mime_with_protected_headers() {
        let bob = make_cert("bob@example.org");
        let msg = b"From: a@example.com\r\nTo: bob@example.org\r\nBcc: secret@example.net\r\nSubject: Secret plans\r\nThread-Topic: Secret plans\r\nKeywords: plans\r\nUser-Agent: Outlook\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello\r\n";
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
        assert!(text.contains("Subject: [...]\r\n"), "{text}");
        assert!(!text.contains("Secret plans"));
        for gone in ["Thread-Topic", "Keywords", "User-Agent"] {
            assert!(!text.contains(gone), "{gone} outside: {text}");
        }
        assert!(!text.contains("secret@example.net"));
        assert!(text.contains("To: bob@example.org\r\n"));
        assert!(text.contains("protocol=\"application/pgp-encrypted\""));
        assert!(text.contains("-----BEGIN PGP MESSAGE-----"));
        assert!(text.ends_with("\r\n--BOUND--\r\n"));
        assert!(is_encrypted(text.as_bytes()));
    }
}
