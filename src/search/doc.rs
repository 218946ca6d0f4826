//! What a search reads of a message ([`Doc`]) and one content criterion ([`Leaf`]).
//!
//! The reference is the packaged Dovecot (Debian 12, 2.3.19, no FTS plugin) searching the
//! same message stored in the clear; `tests/search_match.rs` compares the two on a corpus.
//! Where this module knowingly answers differently, the item says so under "Differs from
//! Dovecot".

use imap_types::core::AString;
use imap_types::datetime::NaiveDate;
use imap_types::search::SearchKey;
use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders, PartType};
use serde::{Deserialize, Serialize};

use super::date::sent_date;
use super::fold::{compress_lwsp, fold};
use super::header::{address_form, decode_words, header_end, split_fields};

/// How much decoded body text a [`Doc`] keeps (bytes of UTF-8): enough for any mail a person
/// writes, while a message with megabytes of text attachments costs a bounded amount to
/// fold and to store in the index. Text past this point is not found by `BODY` or `TEXT`
/// (Dovecot, which has no such bound, would find it).
pub const BODY_TEXT_LIMIT: usize = 2 * 1024 * 1024;

/// Header fields read of one message, and bytes read of each field's value.
const MAX_FIELDS: usize = 1000;
const FIELD_LIMIT: usize = 16 * 1024;
/// Parts of type `multipart/*` or `message/*` a message may have to be parsed by parts
/// (the depth sealpost's own MIME parser goes to, `mime::view`).
const MAX_NESTED: usize = 64;

/// Whether `message` has at most [`MAX_NESTED`] multipart and message parts, counted from
/// its Content-Type fields (every level of nesting needs one), so that parsing it cannot
/// recurse deeper.
fn nesting_bounded(message: &[u8]) -> bool {
    let lower = message.to_ascii_lowercase();
    let mut nested = 0;
    for at in memchr::memmem::find_iter(&lower, b"content-type:") {
        let rest = &lower[at + b"content-type:".len()..];
        let start = rest
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(rest.len());
        let value = &rest[start..];
        if value.starts_with(b"multipart/") || value.starts_with(b"message/") {
            nested += 1;
            if nested > MAX_NESTED {
                return false;
            }
        }
    }
    true
}

/// The address fields whose search keys (`FROM`, `TO`, `CC`, `BCC`) Dovecot matches against
/// the parsed and rewritten address list rather than the field's text.
const ADDRESS_FIELDS: [&str; 4] = ["From", "To", "Cc", "Bcc"];

/// What SEARCH reads of one message, as the client sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Doc {
    /// The header fields in order: name as written, value unfolded and decoded to UTF-8
    /// (RFC 2047 encoded-words), as Dovecot's `HEADER` reads it: the one space after the
    /// colon dropped, the line breaks of a folded field removed.
    pub fields: Vec<(String, String)>,
    /// The text BODY searches: every part's content, transfer-decoded and converted to
    /// UTF-8, parts separated by a line end. As in Dovecot, only parts of type `text/*`
    /// (HTML as it is, tags included), `message/*` or without a type are read, so a text
    /// attachment is found and a binary one is not; a part with an unknown
    /// Content-Transfer-Encoding is skipped. The parts of an attached message
    /// (message/rfc822) are included. At most [`BODY_TEXT_LIMIT`] bytes.
    pub body: String,
    /// RFC822.SIZE of the message as the client sees it.
    pub size: u32,
    /// The calendar date of the Date field as written (year, month, day): the SENT* keys
    /// disregard time and zone (RFC 3501 §6.4.4).
    pub sent: Option<(i32, u32, u32)>,
    /// Added for the matcher: the From, To, Cc and Bcc fields (name as written) in the form
    /// the `FROM`, `TO`, `CC` and `BCC` keys search in Dovecot: the address list parsed and
    /// written back as `Name <local@domain>, ...` (see `header::address_form`).
    #[serde(default)]
    pub addresses: Vec<(String, String)>,
    /// Added for the matcher: the header fields below the top level (each MIME part's, an
    /// attached message's), decoded, one `Name: value` line each. Dovecot's `TEXT` reads
    /// them (`TEXT charset` finds most MIME mail); `BODY` does not.
    #[serde(default)]
    pub part_headers: String,
    /// The folded forms the matcher compares, worked out on the first match (a Doc is
    /// kept and searched many times).
    /// (Public so that Docs can be written as literals with `..Doc::default()`.)
    #[serde(skip)]
    pub folded: FoldCache,
}

/// [`Doc`]'s texts folded (see `fold`), in its order.
#[derive(Debug, Default)]
struct Folded {
    /// Each field's value as `HEADER` compares it (Subject with whitespace runs
    /// compressed).
    fields: Vec<String>,
    /// Each field as `TEXT` reads it, `Name: value`.
    text_fields: Vec<String>,
    addresses: Vec<String>,
    part_headers: String,
    body: String,
}

/// A cache that never makes two Docs differ or be costly to copy.
#[derive(Debug, Default)]
pub struct FoldCache(std::sync::OnceLock<std::sync::Arc<Folded>>);

impl Clone for FoldCache {
    fn clone(&self) -> FoldCache {
        FoldCache(self.0.clone())
    }
}

impl PartialEq for FoldCache {
    fn eq(&self, _: &FoldCache) -> bool {
        true
    }
}

impl Eq for FoldCache {}

impl Doc {
    fn folded(&self) -> &Folded {
        self.folded.0.get_or_init(|| {
            std::sync::Arc::new(Folded {
                fields: self
                    .fields
                    .iter()
                    .map(|(name, value)| {
                        if name.eq_ignore_ascii_case("Subject") {
                            fold(&compress_lwsp(value))
                        } else {
                            fold(value)
                        }
                    })
                    .collect(),
                text_fields: self
                    .fields
                    .iter()
                    .map(|(name, value)| fold(&format!("{name}: {value}")))
                    .collect(),
                addresses: self.addresses.iter().map(|(_, v)| fold(v)).collect(),
                part_headers: fold(&self.part_headers),
                body: fold(&self.body),
            })
        })
    }

    /// Bytes this Doc holds, its folded forms included (worked out here if they were not:
    /// folding can make text many times longer, so the real length is counted).
    pub fn cost(&self) -> usize {
        let pairs =
            |v: &[(String, String)]| v.iter().map(|(n, v)| n.len() + v.len() + 48).sum::<usize>();
        let strings = |v: &[String]| v.iter().map(|s| s.len() + 24).sum::<usize>();
        let f = self.folded();
        self.body.len()
            + self.part_headers.len()
            + pairs(&self.fields)
            + pairs(&self.addresses)
            + f.body.len()
            + f.part_headers.len()
            + strings(&f.fields)
            + strings(&f.text_fields)
            + strings(&f.addresses)
            + 256
    }
}

/// One search criterion that depends on a message's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leaf {
    /// `HEADER name value`; `SUBJECT`, `FROM`, `TO`, `CC` and `BCC` are this with the
    /// field's name.
    Header(String, String),
    Body(String),
    Text(String),
    Larger(u32),
    Smaller(u32),
    SentBefore((i32, u32, u32)),
    SentOn((i32, u32, u32)),
    SentSince((i32, u32, u32)),
}

impl Doc {
    /// What SEARCH reads of `message`, a whole RFC 5322 message as the client sees it.
    ///
    /// Never fails: a message mail-parser cannot make sense of still gets its header fields
    /// and, as body, the text after the header block.
    pub fn from_message(message: &[u8]) -> Doc {
        let top_end = header_end(message);
        let top = split_fields(&message[..top_end]);
        let mut doc = Doc {
            size: u32::try_from(message.len()).unwrap_or(u32::MAX),
            ..Doc::default()
        };
        let mut date_seen = false;
        for field in top.iter().take(MAX_FIELDS) {
            let name = String::from_utf8_lossy(field.name).into_owned();
            // Anyone can write a field (inside the encryption no MTA bounds it): the work
            // on each is bounded by its length.
            let value = &field.value[..field.value.len().min(FIELD_LIMIT)];
            if ADDRESS_FIELDS.iter().any(|a| a.eq_ignore_ascii_case(&name)) {
                doc.addresses.push((name.clone(), address_form(value)));
            }
            if !date_seen && name.eq_ignore_ascii_case("Date") {
                date_seen = true;
                // Only the first Date field counts (Dovecot's `mail_get_first_header`).
                doc.sent = sent_date(value);
            }
            doc.fields.push((name, decode_words(value)));
        }
        let mut body = BodyText::default();
        // mail-parser recurses once per level and so does dropping its tree: mail nested
        // deeper than sealpost's views go is read as text. And mail-parser 0.11.9 panics
        // on some MIME structures (found by fuzzing): such a message is read as one it
        // cannot make sense of, since a Doc is built from a sender's bytes where no caller
        // contains a panic.
        let parsed = if nesting_bounded(message) {
            std::panic::catch_unwind(|| MessageParser::new().with_mime_headers().parse(message))
                .ok()
                .flatten()
        } else {
            None
        };
        match parsed {
            Some(parsed) => read_parts(&parsed, true, &mut body, &mut doc.part_headers),
            None => body.push(&String::from_utf8_lossy(&message[top_end..])),
        }
        doc.body = body.text;
        doc
    }
}

/// Decoded body text with the [`BODY_TEXT_LIMIT`] bound.
#[derive(Default)]
struct BodyText {
    text: String,
}

impl BodyText {
    fn push(&mut self, part: &str) {
        if !self.text.is_empty() {
            if self.text.len() >= BODY_TEXT_LIMIT {
                return;
            }
            self.text.push('\n');
        }
        let room = BODY_TEXT_LIMIT.saturating_sub(self.text.len());
        let mut take = part.len().min(room);
        while !part.is_char_boundary(take) {
            take -= 1;
        }
        self.text.push_str(&part[..take]);
    }
}

/// Adds the text of `message`'s parts to `body` and their header fields to `headers`
/// (except the top-level header of the outermost message, which is [`Doc::fields`]).
fn read_parts(message: &Message<'_>, outermost: bool, body: &mut BodyText, headers: &mut String) {
    for (index, part) in message.parts.iter().enumerate() {
        if !(outermost && index == 0) {
            push_part_headers(message, part, headers);
        }
        if !is_searchable_text(part) {
            continue;
        }
        match &part.body {
            PartType::Text(_) | PartType::Html(_) if is_ascii_labelled(part) => {
                body.push(&utf8_content(message, part))
            }
            PartType::Text(text) | PartType::Html(text) => body.push(text),
            PartType::Binary(bytes) | PartType::InlineBinary(bytes) => {
                body.push(&String::from_utf8_lossy(bytes))
            }
            PartType::Message(inner) if !is_transfer_encoded(part) => {
                read_parts(inner, false, body, headers)
            }
            PartType::Message(_) => {}
            PartType::Multipart(_) => {}
        }
    }
}

/// Whether the part's text is labelled US-ASCII, or not labelled at all. Dovecot reads such
/// text as UTF-8 (charset_is_utf8), so 8-bit UTF-8 written by a client that did not say so
/// is found; mail-parser would read it as Windows-1252.
fn is_ascii_labelled(part: &MessagePart<'_>) -> bool {
    part.content_type()
        .and_then(|ct| ct.attribute("charset"))
        .is_none_or(|c| {
            let c = c.trim();
            c.eq_ignore_ascii_case("us-ascii") || c.eq_ignore_ascii_case("ascii")
        })
}

/// The part's content transfer-decoded and read as UTF-8 (invalid sequences replaced).
fn utf8_content(message: &Message<'_>, part: &MessagePart<'_>) -> String {
    let start = part.offset_body as usize;
    let end = (part.offset_end as usize).min(message.raw_message.len());
    let raw = message.raw_message.get(start..end).unwrap_or_default();
    let encoding = part.content_transfer_encoding().map(str::trim);
    let decoded = match encoding {
        Some(e) if e.eq_ignore_ascii_case("base64") => {
            mail_parser::decoders::base64::base64_decode(raw)
        }
        Some(e) if e.eq_ignore_ascii_case("quoted-printable") => {
            mail_parser::decoders::quoted_printable::quoted_printable_decode(raw)
        }
        _ => None,
    };
    match decoded {
        Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        None => String::from_utf8_lossy(raw).into_owned(),
    }
}

/// Appends `part`'s header fields, decoded, as `Name: value` lines.
fn push_part_headers(message: &Message<'_>, part: &MessagePart<'_>, headers: &mut String) {
    let start = part.offset_header as usize;
    let end = (part.offset_body as usize).min(message.raw_message.len());
    let Some(block) = message.raw_message.get(start..end) else {
        return;
    };
    for field in split_fields(block) {
        headers.push_str(&String::from_utf8_lossy(field.name));
        headers.push_str(": ");
        headers.push_str(&decode_words(&field.value));
        headers.push('\n');
    }
}

/// Whether Dovecot's message search reads this part's content: its type is `text/*`,
/// `message/*` or absent, and its Content-Transfer-Encoding is one Dovecot decodes
/// (message-search.c and message-decoder.c).
fn is_searchable_text(part: &MessagePart<'_>) -> bool {
    let type_is_text = part.content_type().is_none_or(|ct| {
        ct.c_type.eq_ignore_ascii_case("text") || ct.c_type.eq_ignore_ascii_case("message")
    });
    let encoding_is_known = part.content_transfer_encoding().is_none_or(|cte| {
        ["7bit", "8bit", "binary", "base64", "quoted-printable"]
            .iter()
            .any(|known| cte.trim().eq_ignore_ascii_case(known))
    });
    type_is_text && encoding_is_known
}

/// Whether the part's content is base64 or quoted-printable. For an attached message
/// (message/rfc822) so encoded, which RFC 2046 §5.2.1 forbids but senders do, mail-parser
/// decodes and parses the message while Dovecot parses the still-encoded text as a message
/// and so finds none of its words; such a part is skipped here, like there.
fn is_transfer_encoded(part: &MessagePart<'_>) -> bool {
    part.content_transfer_encoding().is_some_and(|cte| {
        let cte = cte.trim();
        cte.eq_ignore_ascii_case("base64") || cte.eq_ignore_ascii_case("quoted-printable")
    })
}

impl Leaf {
    /// The content criterion `key` is, or `None` when upstream judges it (flags, internal
    /// dates, sequence and UID sets, MODSEQ) or it combines others (`NOT`, `OR`, `AND`).
    ///
    /// Strings are taken as UTF-8 (the IMAP side has converted the client's CHARSET);
    /// invalid sequences become U+FFFD.
    pub fn from_key(key: &SearchKey<'_>) -> Option<Leaf> {
        let header = |name: &str, value: &AString<'_>| Leaf::Header(name.to_owned(), text(value));
        Some(match key {
            SearchKey::Header(name, value) => Leaf::Header(text(name), text(value)),
            SearchKey::Subject(value) => header("Subject", value),
            SearchKey::From(value) => header("From", value),
            SearchKey::To(value) => header("To", value),
            SearchKey::Cc(value) => header("Cc", value),
            SearchKey::Bcc(value) => header("Bcc", value),
            SearchKey::Body(value) => Leaf::Body(text(value)),
            SearchKey::Text(value) => Leaf::Text(text(value)),
            SearchKey::Larger(size) => Leaf::Larger(*size),
            SearchKey::Smaller(size) => Leaf::Smaller(*size),
            SearchKey::SentBefore(date) => Leaf::SentBefore(ymd(date)),
            SearchKey::SentOn(date) => Leaf::SentOn(ymd(date)),
            SearchKey::SentSince(date) => Leaf::SentSince(ymd(date)),
            _ => return None,
        })
    }

    /// Whether `doc` matches, by RFC 3501 §6.4.4 as Dovecot 2.3 reads it: strings are
    /// case-insensitive substrings under Dovecot's folding (see `fold`); an empty `HEADER`
    /// value matches every message that has the field, an empty `BODY` or `TEXT` string
    /// every message; `LARGER` and `SMALLER` compare strictly.
    ///
    /// `SENT*` compare the calendar date written in the first Date field. A message without
    /// a Date field, or with one that does not parse, is dated 1 January 1970, as in
    /// Dovecot (index-mail.c stores 0 for "not found / invalid"): `SENTBEFORE` finds it.
    ///
    /// Differs from Dovecot:
    /// * `HEADER FROM x` (TO, CC, BCC) is matched like `FROM x`, against the rewritten
    ///   address list, and `HEADER SUBJECT x` like `SUBJECT x`, with whitespace runs
    ///   compressed: a [`Leaf::Header`] does not say which key it came from. Dovecot
    ///   matches `HEADER` against the field text, so the two differ only for needles with
    ///   quotes, angle brackets next to a quoted name, or runs of whitespace.
    /// * `TEXT` reads each field as `Name: value`; Dovecot reads the separator as written
    ///   (`Name:value` has no space), which only matters for needles spanning the colon.
    /// * A needle never spans two fields or two parts (Dovecot's never spans two parts
    ///   either, but could span a field's end with a needle holding CR LF).
    /// * Elsewhere, by design: body text past [`BODY_TEXT_LIMIT`]; letters with two marks
    ///   (see `fold`); encoded-words in unknown charsets and address fields mixing
    ///   encoded and plain names (see `header`).
    pub fn matches(&self, doc: &Doc) -> bool {
        match self {
            Leaf::Header(name, needle) => header_matches(doc, name, needle),
            Leaf::Body(needle) => needle.is_empty() || doc.folded().body.contains(&fold(needle)),
            Leaf::Text(needle) => needle.is_empty() || text_matches(doc, needle),
            Leaf::Larger(size) => doc.size > *size,
            Leaf::Smaller(size) => doc.size < *size,
            Leaf::SentBefore(date) => sent_or_epoch(doc) < *date,
            Leaf::SentOn(date) => sent_or_epoch(doc) == *date,
            Leaf::SentSince(date) => sent_or_epoch(doc) >= *date,
        }
    }
}

fn text(value: &AString<'_>) -> String {
    String::from_utf8_lossy(value.as_ref()).into_owned()
}

fn ymd(date: &NaiveDate) -> (i32, u32, u32) {
    use chrono::Datelike;
    let date = date.as_ref();
    (date.year(), date.month(), date.day())
}

fn sent_or_epoch(doc: &Doc) -> (i32, u32, u32) {
    doc.sent.unwrap_or((1970, 1, 1))
}

fn header_matches(doc: &Doc, name: &str, needle: &str) -> bool {
    let named = |field: &str| field.eq_ignore_ascii_case(name);
    if needle.is_empty() {
        return doc.fields.iter().any(|(field, _)| named(field));
    }
    let needle = fold(needle);
    let folded = doc.folded();
    if ADDRESS_FIELDS.iter().any(|a| a.eq_ignore_ascii_case(name)) {
        return doc
            .addresses
            .iter()
            .zip(&folded.addresses)
            .any(|((field, _), value)| named(field) && value.contains(&needle));
    }
    doc.fields
        .iter()
        .zip(&folded.fields)
        .any(|((field, _), value)| named(field) && value.contains(&needle))
}

fn text_matches(doc: &Doc, needle: &str) -> bool {
    let needle = fold(needle);
    let folded = doc.folded();
    folded.text_fields.iter().any(|f| f.contains(&needle))
        || folded.part_headers.contains(&needle)
        || folded.body.contains(&needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by an attacking review: 200,000 nested message/rfc822 parts overflowed the
    /// stack of the thread building the Doc (mail-parser recursion), which aborts the
    /// process.
    #[test]
    fn deeply_nested_mail_does_not_overflow_the_stack() {
        let mut m =
            b"Subject: deep\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\nouter words\r\n--b\r\n".to_vec();
        for _ in 0..200_000 {
            m.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\n");
        }
        m.extend_from_slice(b"innermost words\r\n");
        let len = m.len();
        let built = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || Doc::from_message(&m))
            .unwrap()
            .join()
            .expect("no stack overflow");
        assert_eq!(built.size as usize, len);
        // Read as text (up to the body bound).
        assert!(built.body.contains("outer words"));
    }

    /// Found by an attacking review: a To of thousands of quoted names took time
    /// quadratic in its length; a field is read up to its first 16 KiB.
    #[test]
    fn huge_fields_are_read_to_a_bound() {
        let to = (0..8000)
            .map(|i| format!("\"n{i}\" <u{i}@x.example>"))
            .collect::<Vec<_>>()
            .join(", ");
        let msg = format!("To: {to}\r\nSubject: hello\r\n\r\nbody\r\n");
        let doc = Doc::from_message(msg.as_bytes());
        let (_, to) = doc.addresses.iter().find(|(n, _)| n == "To").unwrap();
        assert!(to.len() <= 2 * FIELD_LIMIT, "{}", to.len());
        assert!(Leaf::Header("To".into(), "u1@x".into()).matches(&doc));
    }

    fn crlf(text: &str) -> Vec<u8> {
        text.replace('\n', "\r\n").into_bytes()
    }

    /// Found by fuzzing (fuzz/ search_doc): mail-parser 0.11.9 panics on this MIME
    /// structure (`message.rs:485`, "Invalid part ID, could not find multipart"), and a
    /// Doc is built outside the containment of view building (`search.record` after it),
    /// so a sender could make SEARCH over their decrypted message panic.
    #[test]
    fn a_message_mail_parser_panics_on_still_gets_a_doc() {
        let m: &[u8] = b"Content-Type:multipart;boundary=out-b\n\n--out-bContent-Type:message/rfc822\n\nContent-Type:message/rfc822\n\n\n--out-b--";
        let doc = Doc::from_message(m);
        assert_eq!(doc.size as usize, m.len());
        assert_eq!(doc.fields.len(), 1);
    }

    fn multipart() -> Vec<u8> {
        crlf(
            "From: =?utf-8?q?J=C3=B6rg?= <j@example.org>\n\
             To: a@example.org,\n b@example.org\n\
             Subject: Hello\n\
             Date: Tue, 1 Dec 2026 08:00:00 +0000\n\
             Content-Type: multipart/mixed; boundary=\"b\"\n\
             \n\
             preamble words\n\
             --b\n\
             Content-Type: text/plain; charset=iso-8859-1\n\
             Content-Transfer-Encoding: quoted-printable\n\
             \n\
             gar=E7on\n\
             --b\n\
             Content-Type: application/pdf\n\
             Content-Transfer-Encoding: base64\n\
             \n\
             cGRmIHdvcmRz\n\
             --b--\n",
        )
    }

    #[test]
    fn fields_are_unfolded_and_decoded_and_addresses_rewritten() {
        let doc = Doc::from_message(&multipart());
        assert_eq!(
            doc.fields[0],
            ("From".into(), "Jörg <j@example.org>".into())
        );
        assert_eq!(
            doc.fields[1],
            ("To".into(), "a@example.org, b@example.org".into())
        );
        assert_eq!(
            doc.addresses,
            [
                ("From".to_owned(), "Jörg <j@example.org>".to_owned()),
                (
                    "To".to_owned(),
                    "<a@example.org>, <b@example.org>".to_owned()
                ),
            ]
        );
        assert_eq!(doc.sent, Some((2026, 12, 1)));
        assert_eq!(doc.size as usize, multipart().len());
    }

    #[test]
    fn body_holds_decoded_text_parts_only() {
        let doc = Doc::from_message(&multipart());
        assert_eq!(doc.body.trim_end(), "garçon");
        assert!(!doc.body.contains("preamble"));
        assert!(!doc.body.contains("pdf words"));
        assert!(doc.part_headers.contains("Content-Type: application/pdf\n"));
        assert!(doc
            .part_headers
            .contains("Content-Transfer-Encoding: quoted-printable\n"));
        assert!(!doc.part_headers.contains("Subject"));
    }

    #[test]
    fn body_text_is_bounded_on_a_character_boundary() {
        let mut message = crlf("Subject: big\nContent-Type: text/plain; charset=utf-8\n\n");
        message.extend("é".repeat(BODY_TEXT_LIMIT).as_bytes());
        let doc = Doc::from_message(&message);
        assert!(doc.body.len() <= BODY_TEXT_LIMIT);
        assert!(doc.body.len() > BODY_TEXT_LIMIT - 2);
        assert!(doc.body.chars().all(|c| c == 'é'));
    }

    #[test]
    fn many_parts_stay_within_the_bound() {
        let mut message = crlf("Content-Type: multipart/mixed; boundary=\"b\"\n\n");
        let chunk = "x".repeat(64 * 1024);
        for _ in 0..(BODY_TEXT_LIMIT / chunk.len() + 8) {
            message.extend(crlf(&format!("--b\n\n{chunk}\n")));
        }
        message.extend(crlf("--b--\n"));
        assert_eq!(Doc::from_message(&message).body.len(), BODY_TEXT_LIMIT);
    }

    #[test]
    fn garbage_never_panics() {
        let seed = crlf(
            "From: \"a (b\" <x@y>, =?utf-8?b?w6k=?= (c) <z@w>, g: h@i;\n\
             Date: Mon, (x) 7 Dec 26 9.05 (\n\
             Subject: =?iso-8859-1?q?=E9?= =?x?y?z?= =?\n\
             Content-Type: multipart/mixed; boundary=b\n\
             \n\
             --b\n\
             Content-Type: message/rfc822\n\
             \n\
             Subject: inner\n\
             Content-Type: text/plain; charset=utf-16\n\
             Content-Transfer-Encoding: base64\n\
             \n\
             2D3eAA==\n\
             --b--\n",
        );
        let specials = b"=?()<>\"\\:;,@\r\n\t \xc3\xff";
        let mut x: u32 = 0x9e37_79b9;
        for _ in 0..3_000 {
            let mut message = seed.clone();
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let at = (x as usize >> 8) % message.len();
                message[at] = specials[(x as usize) % specials.len()];
            }
            let cut = (x as usize >> 4) % (message.len() + 1);
            let doc = Doc::from_message(&message[..cut]);
            let _ = Leaf::Text("é".into()).matches(&doc);
            let _ = Leaf::Header("From".into(), "a".into()).matches(&doc);
        }
    }

    #[test]
    fn a_message_without_header_block_end_is_all_header() {
        let doc = Doc::from_message(b"Subject: only\r\nX-A: b");
        assert_eq!(doc.fields.len(), 2);
        assert_eq!(doc.sent, None);
        assert!(doc.body.is_empty());
    }

    #[test]
    fn a_doc_stored_before_the_added_fields_still_reads() {
        let old = r#"{"fields":[["Subject","x"]],"body":"b","size":3,"sent":null}"#;
        let doc: Doc = serde_json::from_str(old).unwrap();
        assert!(doc.addresses.is_empty() && doc.part_headers.is_empty());
    }

    fn key_leaf(key: SearchKey<'_>) -> Option<Leaf> {
        Leaf::from_key(&key)
    }

    fn astring(text: &str) -> AString<'_> {
        AString::try_from(text).unwrap()
    }

    #[test]
    fn content_keys_become_leaves() {
        let date = NaiveDate::try_from(chrono::NaiveDate::from_ymd_opt(2026, 12, 7).unwrap());
        assert_eq!(
            key_leaf(SearchKey::Subject(astring("x"))),
            Some(Leaf::Header("Subject".into(), "x".into()))
        );
        assert_eq!(
            key_leaf(SearchKey::Bcc(astring("eve"))),
            Some(Leaf::Header("Bcc".into(), "eve".into()))
        );
        assert_eq!(
            key_leaf(SearchKey::Header(astring("X-A"), astring(""))),
            Some(Leaf::Header("X-A".into(), String::new()))
        );
        assert_eq!(key_leaf(SearchKey::Larger(5)), Some(Leaf::Larger(5)));
        assert_eq!(
            key_leaf(SearchKey::SentOn(date.unwrap())),
            Some(Leaf::SentOn((2026, 12, 7)))
        );
        assert_eq!(key_leaf(SearchKey::Seen), None);
        assert_eq!(
            key_leaf(SearchKey::Not(Box::new(SearchKey::Body(astring("x"))))),
            None
        );
    }

    #[test]
    fn empty_strings_test_presence_or_match_all() {
        let doc = Doc::from_message(&multipart());
        assert!(Leaf::Header("subject".into(), String::new()).matches(&doc));
        assert!(!Leaf::Header("Cc".into(), String::new()).matches(&doc));
        assert!(Leaf::Body(String::new()).matches(&Doc::default()));
        assert!(Leaf::Text(String::new()).matches(&Doc::default()));
    }

    #[test]
    fn sizes_compare_strictly() {
        let doc = Doc {
            size: 100,
            ..Doc::default()
        };
        assert!(!Leaf::Larger(100).matches(&doc) && Leaf::Larger(99).matches(&doc));
        assert!(!Leaf::Smaller(100).matches(&doc) && Leaf::Smaller(101).matches(&doc));
    }

    #[test]
    fn a_missing_date_is_the_first_of_january_1970() {
        let doc = Doc::default();
        assert!(Leaf::SentBefore((1970, 1, 2)).matches(&doc));
        assert!(Leaf::SentOn((1970, 1, 1)).matches(&doc));
        assert!(!Leaf::SentSince((1970, 1, 2)).matches(&doc));
    }

    #[test]
    fn text_reads_name_and_value_part_headers_and_body() {
        let doc = Doc::from_message(&multipart());
        assert!(Leaf::Text("subject: hello".into()).matches(&doc));
        assert!(Leaf::Text("APPLICATION/PDF".into()).matches(&doc));
        assert!(Leaf::Text("GARÇON".into()).matches(&doc));
        assert!(!Leaf::Body("hello".into()).matches(&doc));
    }

    #[test]
    fn address_keys_read_the_rewritten_list() {
        let doc = Doc::from_message(&multipart());
        assert!(Leaf::Header("FROM".into(), "jörg <j@".into()).matches(&doc));
        assert!(Leaf::Header("to".into(), "<b@example.org>".into()).matches(&doc));
        assert!(!Leaf::Header("to".into(), "org,".into()).matches(&doc));
    }
}
