//! The IMAP view of a message: BODYSTRUCTURE, ENVELOPE and sections computed from its
//! bytes (RFC 3501 §6.4.5, §7.4.2).
//!
//! The goal is to answer exactly as Dovecot 2.3 does for a message with the same bytes,
//! so the rules below follow Dovecot where RFC 3501 leaves room:
//!
//! * The message is first normalised to CRLF (bare LF → CRLF), as Dovecot serves it;
//!   every size, line count and section is taken from that form, so `RFC822.SIZE`
//!   must be the length of `section(msg, None)`.
//! * Multipart bodies are split on lines that *start* with `--boundary` (the longest
//!   matching boundary of this part or of any enclosing multipart wins, the innermost on
//!   a tie; boundaries count up to 80 bytes); the CRLF before a boundary line belongs
//!   to the boundary. A boundary line inside a part's header, or right after its empty
//!   line, ends the header, and the last line break goes to the boundary. After
//!   `--boundary--` the boundary is forgotten; the epilogue runs to the next enclosing
//!   boundary, and a boundary line cut off by the end of the message opens no part.
//!   Nesting deeper than [`MAX_DEPTH`] is reported as text/plain.
//! * Content-* fields count only in MIME parts (a multipart child, or a header with
//!   MIME-Version or Content-Type); the first occurrence of each wins, except that a
//!   Content-Disposition without parameters can be replaced by a later one.
//! * RFC 2231 parameters are merged but not decoded (`name*` keeps `utf-8''%E2…`) and
//!   listed after the plain parameters; text parts without a charset get
//!   `("charset" "us-ascii")`; a multipart without parts gets one empty text/plain part.
//! * ENVELOPE values are raw (no RFC 2047 decoding): for Date, Subject, Message-ID and
//!   In-Reply-To the last field wins, address fields accumulate. CR/LF are removed; the
//!   subject and display names also have whitespace runs collapsed and trimmed. Missing
//!   address parts read `MISSING_MAILBOX` / `MISSING_DOMAIN` / `SYNTAX_ERROR`, so that a
//!   broken address never looks like a group marker. NUL becomes U+FFFD. 8-bit values
//!   are still valid IMAP: imap-types makes them literals.
//!
//! imap-codec always writes text and message/rfc822 parts as `"TEXT"` / `"MESSAGE"
//! "RFC822"` where Dovecot echoes the header's spelling; MIME types are case-insensitive.

use std::num::NonZeroU32;

use imap_types::body::BodyStructure;
use imap_types::core::{IString, NString, Quoted};
use imap_types::envelope::Envelope;
use imap_types::fetch::Section;

use super::{fields, split_message, to_crlf};

mod envelope;
mod legacy;
mod section;
mod structure;

use envelope::envelope_of;
pub use legacy::without_legacy_display;
use section::section_raw;
use structure::{parse, structure};

/// Deepest nesting of multipart and message/rfc822 parts that is parsed as such.
pub const MAX_DEPTH: usize = 64;

/// BODYSTRUCTURE (extension data included) when `extended`, else BODY.
pub fn body_structure(msg: &[u8], extended: bool) -> BodyStructure<'static> {
    let m = to_crlf(msg);
    structure(&m, &parse(&m), extended)
}

/// ENVELOPE of the top-level header, with the RFC 3501 defaults (sender and reply-to
/// default to from).
pub fn envelope(msg: &[u8]) -> Envelope<'static> {
    let m = to_crlf(msg);
    envelope_of(split_message(&m).0)
}

/// The bytes of `BODY[<section>]`; `None` means `BODY[]`, the whole (CRLF-normalised)
/// message. NUL bytes come out as 0x80, as Dovecot sends them (a literal cannot hold
/// NUL). Returns `None` when the section does not exist (a part number past the end, a
/// subpart of a non-multipart part, HEADER/TEXT of a part that is not message/rfc822):
/// Dovecot then answers an empty string (`BODY[3] {0}`), not NIL, and so should the
/// caller. As in Dovecot, `1.MIME` of a non-multipart message is its header.
pub fn section(msg: &[u8], section: Option<&Section<'_>>) -> Option<Vec<u8>> {
    let m = to_crlf(msg);
    let mut out = match section {
        None => m.into_owned(),
        Some(_) => section_raw(&m, &parse(&m), section)?.into_owned(),
    };
    for b in out.iter_mut().filter(|b| **b == 0) {
        *b = 0x80;
    }
    Some(out)
}

/// The message as [`section`] serves it (CRLF line ends, NUL as 0x80), made once so a
/// prepared view can answer every section with [`section_of_prepared`].
pub fn prepare(msg: Vec<u8>) -> Vec<u8> {
    let mut out = match to_crlf(&msg) {
        std::borrow::Cow::Borrowed(_) => msg,
        std::borrow::Cow::Owned(o) => o,
    };
    for b in out.iter_mut().filter(|b| **b == 0) {
        *b = 0x80;
    }
    out
}

/// The MIME part tree of a [`prepare`]d message, parsed once and kept with it (a cached
/// view's), so that no FETCH item parses the message again: every section is then a
/// range of the message ([`section_of_prepared`]) and BODYSTRUCTURE is described from
/// the tree ([`body_structure_of_prepared`]).
pub struct Tree(structure::Node);

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tree")
    }
}

/// The part tree of `msg`, which must be [`prepare`]d.
pub fn tree_of_prepared(msg: &[u8]) -> Tree {
    Tree(parse(msg))
}

/// [`section`] of a message already [`prepare`]d, with its [`Tree`]: a range of it where
/// the section is one (everything but HEADER.FIELDS), so a partial fetch copies only its
/// own bytes.
pub fn section_of_prepared<'m>(
    msg: &'m [u8],
    tree: &Tree,
    section: Option<&Section<'_>>,
) -> Option<std::borrow::Cow<'m, [u8]>> {
    section_raw(msg, &tree.0, section)
}

/// [`body_structure`] of a message already [`prepare`]d, with its [`Tree`].
pub fn body_structure_of_prepared(
    msg: &[u8],
    tree: &Tree,
    extended: bool,
) -> BodyStructure<'static> {
    structure(msg, &tree.0, extended)
}

/// Applies an `<offset.length>` partial: an offset past the end gives nothing, a length
/// past the end is cut short.
pub fn partial(data: &[u8], origin: Option<(u32, NonZeroU32)>) -> &[u8] {
    let Some((offset, length)) = origin else {
        return data;
    };
    let start = (offset as usize).min(data.len());
    let end = start.saturating_add(length.get() as usize).min(data.len());
    &data[start..end]
}

/// The lines of a multipart message's body that lie outside its parts (preamble,
/// epilogue, anything between parts), without delimiter lines and empty lines; `None`
/// when the message is not multipart. Text there is shown by no client but travels
/// with the message.
pub fn lines_outside_parts(msg: &[u8]) -> Option<Vec<Vec<u8>>> {
    let m = to_crlf(msg);
    let root = parse(&m);
    let structure::Kind::Multi(children) = &root.kind else {
        return None;
    };
    let mut outside = Vec::new();
    let mut at = root.body.start;
    for c in children {
        outside.push(at..c.hdr.start.max(at));
        at = c.body.end.max(at);
    }
    outside.push(at..root.body.end.max(at));
    let boundary = root
        .ct
        .as_ref()
        .and_then(|c| structure::param(&c.params, b"boundary"))
        .unwrap_or_default();
    let delimiter = |line: &[u8]| {
        line.strip_prefix(b"--")
            .and_then(|l| l.strip_prefix(boundary))
            .is_some_and(|rest| {
                let rest = rest.strip_prefix(b"--").unwrap_or(rest);
                rest.iter().all(|b| b.is_ascii_whitespace())
            })
    };
    let mut lines = Vec::new();
    for r in outside {
        for line in m[r].split(|&b| b == b'\n') {
            let line = line.trim_ascii();
            if !line.is_empty() && !delimiter(line) {
                lines.push(line.to_vec());
            }
        }
    }
    Some(lines)
}

// ---------------------------------------------------------------------------------
// Header fields and lexing.

/// A header's fields as (name, value) pairs.
struct Fields<'a>(Vec<(&'a [u8], &'a [u8])>);

impl<'a> Fields<'a> {
    fn new(header: &'a [u8]) -> Self {
        Fields(
            fields(header)
                .iter()
                .map(|f| (field_name(f.raw), field_value(f.raw)))
                .collect(),
        )
    }

    fn all<'s>(&'s self, name: &'s [u8]) -> impl Iterator<Item = &'a [u8]> + 's {
        self.0
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    fn first(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.all(name).next()
    }
}

/// The name before the colon (whitespace before the colon allowed); empty if none.
fn field_name(raw: &[u8]) -> &[u8] {
    let Some(colon) = raw.iter().position(|&b| b == b':') else {
        return b"";
    };
    let name = raw[..colon].trim_ascii_end();
    if name.iter().all(|&b| (33..=126).contains(&b)) {
        name
    } else {
        b""
    }
}

/// The value after the colon: leading blanks and the final line break removed.
fn field_value(raw: &[u8]) -> &[u8] {
    let colon = raw
        .iter()
        .position(|&b| b == b':')
        .map_or(raw.len(), |c| c + 1);
    let mut v = &raw[colon..];
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    v = v.strip_suffix(b"\n").unwrap_or(v);
    v.strip_suffix(b"\r").unwrap_or(v)
}

/// Unfolded: CR and LF dropped, everything else kept.
fn nolf(v: &[u8]) -> Vec<u8> {
    v.iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect()
}

/// An IMAP string: quoted when possible, else a literal; NUL becomes U+FFFD.
fn istr(v: Vec<u8>) -> IString<'static> {
    let v = v
        .split(|&b| b == 0)
        .collect::<Vec<_>>()
        .join("\u{FFFD}".as_bytes());
    // Only NUL is invalid in a literal.
    IString::try_from(v).unwrap_or_else(|_| IString::from(Quoted::unvalidated("")))
}

fn nstr(v: Option<Vec<u8>>) -> NString<'static> {
    NString(v.map(istr))
}

fn is_atext(c: u8) -> bool {
    c > b' ' && c != 0x7f && !b"()<>[]:;@\\,.\"".contains(&c)
}

/// A cursor over a structured field value (RFC 5322 §3.2).
struct Lex<'a> {
    s: &'a [u8],
    i: usize,
    /// Text of the last comment skipped.
    comment: Vec<u8>,
}

impl<'a> Lex<'a> {
    fn new(s: &'a [u8]) -> Self {
        Lex {
            s,
            i: 0,
            comment: Vec::new(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn run(&mut self, ok: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.i;
        while self.peek().is_some_and(&ok) {
            self.i += 1;
        }
        &self.s[start..self.i]
    }

    /// Skips whitespace and (nested) comments.
    fn cfws(&mut self) {
        while let Some(c) = self.peek() {
            if c == b'(' {
                self.comment = self.delimited(b')').0;
            } else if matches!(c, b' ' | b'\t' | b'\r' | b'\n') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    /// A quoted string's content, and whether it was terminated.
    fn quoted(&mut self) -> (Vec<u8>, bool) {
        self.delimited(b'"')
    }

    /// Content of a quoted string or comment starting at the cursor: escapes resolved,
    /// line breaks dropped; an unterminated one runs to the end.
    fn delimited(&mut self, close: u8) -> (Vec<u8>, bool) {
        let open = self.s[self.i];
        self.i += 1;
        let mut depth = 1;
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            self.i += 1;
            match c {
                b'\\' => {
                    if let Some(n) = self.peek() {
                        self.i += 1;
                        out.push(n);
                    }
                }
                b'\r' | b'\n' => {}
                _ if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return (out, true);
                    }
                    out.push(c);
                }
                _ => {
                    if c == open && close == b')' {
                        depth += 1;
                    }
                    out.push(c);
                }
            }
        }
        (out, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::decode::Decoder;
    use imap_codec::encode::Encoder;
    use imap_codec::{CommandCodec, ResponseCodec};
    use imap_types::body::SpecificFields;
    use imap_types::command::CommandBody;
    use imap_types::core::Vec1;
    use imap_types::fetch::{MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName};
    use imap_types::response::{Data, Response};

    /// `BODY[<spec>]` of `msg`, the section parsed by imap-codec.
    pub(super) fn get(msg: &[u8], spec: &str) -> Option<Vec<u8>> {
        let cmd = format!("a FETCH 1 BODY[{spec}]\r\n");
        let (_, cmd) = CommandCodec::default().decode(cmd.as_bytes()).expect(spec);
        let CommandBody::Fetch {
            macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(items),
            ..
        } = cmd.body
        else {
            panic!("{spec}: not a FETCH");
        };
        let MessageDataItemName::BodyExt { section: s, .. } = &items[0] else {
            panic!("{spec}: not BODY[]");
        };
        section(msg, s.as_ref())
    }

    pub(super) fn text(msg: &[u8], spec: &str) -> String {
        String::from_utf8(get(msg, spec).expect(spec)).expect("UTF-8")
    }

    /// The untagged FETCH response with these items, as imap-codec sends it.
    fn wire(items: Vec<MessageDataItem<'static>>) -> String {
        let items = Vec1::try_from(items).expect("items");
        let seq = NonZeroU32::new(1).expect("seq");
        let r = Response::Data(Data::Fetch { seq, items });
        String::from_utf8(ResponseCodec::default().encode(&r).dump()).expect("UTF-8")
    }

    /// BODYSTRUCTURE (or BODY) on the wire, without the FETCH wrapping.
    pub(super) fn bs(msg: &[u8], ext: bool) -> String {
        let b = body_structure(msg, ext);
        let s = wire(vec![if ext {
            MessageDataItem::BodyStructure(b)
        } else {
            MessageDataItem::Body(b)
        }]);
        let s = s.strip_prefix(if ext {
            "* 1 FETCH (BODYSTRUCTURE "
        } else {
            "* 1 FETCH (BODY "
        });
        s.and_then(|s| s.strip_suffix(")\r\n"))
            .expect("fetch")
            .to_string()
    }

    pub(super) fn env(msg: &[u8]) -> String {
        let s = wire(vec![MessageDataItem::Envelope(envelope(msg))]);
        s["* 1 FETCH (ENVELOPE ".len()..s.len() - 3].to_string()
    }

    pub(super) fn lines(s: &str) -> usize {
        s.matches('\n').count()
    }

    #[test]
    fn simple_text_message() {
        let m = b"From: Alice <alice@example.org>\r\nSubject: hi\r\n\r\nhello\r\nworld\r\n";
        let hdr = "From: Alice <alice@example.org>\r\nSubject: hi\r\n\r\n";
        let basic = r#""TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 14 2"#;
        assert_eq!(bs(m, true), format!("({basic} NIL NIL NIL NIL)"));
        assert_eq!(bs(m, false), format!("({basic})"));
        let alice = r#"(("Alice" NIL "alice" "example.org"))"#;
        assert_eq!(
            env(m),
            format!(r#"(NIL "hi" {alice} {alice} {alice} NIL NIL NIL NIL NIL)"#)
        );
        assert_eq!(get(m, "").as_deref(), Some(&m[..]));
        assert_eq!(text(m, "HEADER"), hdr);
        assert_eq!(text(m, "TEXT"), "hello\r\nworld\r\n");
        assert_eq!(text(m, "1"), "hello\r\nworld\r\n");
        assert_eq!(text(m, "1.MIME"), hdr); // Dovecot: the message header
        for missing in ["2", "1.1", "1.HEADER", "1.TEXT"] {
            assert_eq!(get(m, missing), None, "{missing}");
        }
    }

    /// mixed: text, base64 attachment; with preamble and epilogue.
    pub(super) fn mixed() -> (Vec<u8>, [&'static str; 4]) {
        let t = "Hello Bob,\r\nsee the attachment.";
        let t_mime = "Content-Type: text/plain; charset=UTF-8; format=flowed\r\n\r\n";
        let a = "JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K\r\nZW5kc3RyZWFt";
        let a_mime = "Content-Type: application/pdf; name=\"report.pdf\"\r\n\
            Content-Transfer-Encoding: base64\r\n\
            Content-Disposition: attachment; filename=\"report.pdf\"; size=42\r\n\r\n";
        let m = [
            "From: a@example.org\r\nMIME-Version: 1.0\r\n",
            "Content-Type: multipart/mixed; boundary=\"=-b1\"\r\n\r\n",
            "This is a MIME message.\r\n--=-b1\r\n",
            t_mime,
            t,
            "\r\n--=-b1\r\n",
            a_mime,
            a,
            "\r\n--=-b1--\r\nepilogue\r\n",
        ];
        (m.concat().into_bytes(), [t_mime, t, a_mime, a])
    }

    #[test]
    fn a_prepared_message_answers_from_its_tree_as_from_its_bytes() {
        let (mut m, _) = mixed();
        // Bare LF and a NUL: prepared to CRLF and 0x80 once, as a cached view is.
        m.extend_from_slice(b"a bare line\nwith a \0 in it\n");
        let prepared = prepare(m.clone());
        let tree = tree_of_prepared(&prepared);
        for spec in [
            None,
            Some(Section::Header(None)),
            Some(Section::Text(None)),
            Some(Section::Part(imap_types::fetch::Part(
                imap_types::core::Vec1::from(NonZeroU32::new(2).unwrap()),
            ))),
            Some(Section::Mime(imap_types::fetch::Part(
                imap_types::core::Vec1::from(NonZeroU32::new(1).unwrap()),
            ))),
            Some(Section::Part(imap_types::fetch::Part(
                imap_types::core::Vec1::from(NonZeroU32::new(9).unwrap()),
            ))),
        ] {
            assert_eq!(
                section_of_prepared(&prepared, &tree, spec.as_ref()).map(|c| c.into_owned()),
                section(&m, spec.as_ref()),
                "{spec:?}"
            );
        }
        for ext in [false, true] {
            assert_eq!(
                body_structure_of_prepared(&prepared, &tree, ext),
                body_structure(&m, ext)
            );
        }
    }

    #[test]
    fn partials() {
        let d = b"0123456789";
        let p = |o: u32, l: u32| partial(d, Some((o, NonZeroU32::new(l).expect("length"))));
        assert_eq!(partial(d, None), d);
        assert_eq!(p(0, 3), b"012");
        assert_eq!(p(8, 5), b"89");
        assert_eq!(p(10, 1), b"");
        assert_eq!(p(u32::MAX, u32::MAX), b"");
        assert_eq!(p(3, u32::MAX), b"3456789");
    }

    #[test]
    fn bare_lf_is_served_as_crlf() {
        let (crlf, _) = mixed();
        let lf: Vec<u8> = crlf.iter().copied().filter(|&b| b != b'\r').collect();
        assert_eq!(bs(&lf, true), bs(&crlf, true));
        assert_eq!(env(&lf), env(&crlf));
        for spec in ["", "HEADER", "TEXT", "1", "2.MIME", "HEADER.FIELDS (from)"] {
            assert_eq!(get(&lf, spec), get(&crlf, spec), "{spec}");
        }
    }

    #[test]
    fn wire_form() {
        let m = b"From: Alice <alice@example.org>\r\nTo: Bob <bob@example.net>, carol@example.com\r\n\
            Subject: Test\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <m1@example.org>\r\n\
            MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n\
            --XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHi Bob\r\n\
            --XX\r\nContent-Type: application/pdf; name=\"a.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\
            Content-Disposition: attachment; filename=\"a.pdf\"\r\n\r\nJVBERi0=\r\n--XX--\r\n";
        let items = vec![
            MessageDataItem::BodyStructure(body_structure(m, true)),
            MessageDataItem::Envelope(envelope(m)),
            MessageDataItem::Body(body_structure(m, false)),
        ];
        assert_eq!(
            wire(items),
            concat!(
                r#"* 1 FETCH (BODYSTRUCTURE (("TEXT" "plain" ("charset" "utf-8") NIL NIL "7bit" 6 0 NIL NIL NIL NIL)"#,
                r#"("application" "pdf" ("name" "a.pdf") NIL NIL "base64" 8 NIL ("attachment" ("filename" "a.pdf")) NIL NIL)"#,
                r#" "mixed" ("boundary" "XX") NIL NIL NIL) "#,
                r#"ENVELOPE ("Mon, 1 Jan 2024 10:00:00 +0000" "Test" (("Alice" NIL "alice" "example.org"))"#,
                r#" (("Alice" NIL "alice" "example.org")) (("Alice" NIL "alice" "example.org"))"#,
                r#" (("Bob" NIL "bob" "example.net")(NIL NIL "carol" "example.com")) NIL NIL NIL "<m1@example.org>") "#,
                r#"BODY (("TEXT" "plain" ("charset" "utf-8") NIL NIL "7bit" 6 0)"#,
                r#"("application" "pdf" ("name" "a.pdf") NIL NIL "base64" 8) "mixed"))"#,
                "\r\n"
            )
        );
    }

    /// Levels of Multi / Message nesting down the first children.
    fn depth(b: &BodyStructure<'_>) -> usize {
        match b {
            BodyStructure::Multi { bodies, .. } => 1 + depth(&bodies.as_ref()[0]),
            BodyStructure::Single { body, .. } => match &body.specific {
                SpecificFields::Message { body_structure, .. } => 1 + depth(body_structure),
                _ => 0,
            },
        }
    }

    #[test]
    fn never_panics() {
        let specs = [
            "",
            "HEADER",
            "TEXT",
            "1",
            "2",
            "1.1",
            "2.MIME",
            "2.HEADER",
            "2.1.TEXT",
            "HEADER.FIELDS.NOT (from)",
        ];
        let check = |m: &[u8]| {
            let items = vec![
                MessageDataItem::BodyStructure(body_structure(m, true)),
                MessageDataItem::Body(body_structure(m, false)),
                MessageDataItem::Envelope(envelope(m)),
            ];
            wire(items);
            for spec in specs {
                get(m, spec);
            }
        };
        let (mixed, _) = mixed();
        let forward = [
            &b"From: <a@b\r\nTo: g:;,\"\r\nContent-Type: multipart/mixed; boundary=\"o\"\r\n\r\n--o\r\n"[..],
            b"Content-Type: message/rfc822\r\n\r\nSubject: (x\r\nContent-Type: multipart/alternative;\r\n",
            b" boundary=i\r\n\r\n--i\r\n\r\na\r\n--i--\r\n--o\r\nContent-Type: text/plain; a*0=\"x\r\n\r\nb\r\n--o--\r\n",
        ]
        .concat();
        let mut seed = 0x2545_f491_u32;
        for m in [mixed, forward] {
            for n in 0..=m.len() {
                check(&m[..n]);
            }
            for _ in 0..300 {
                let mut m = m.clone();
                for _ in 0..3 {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    let at = seed as usize % m.len();
                    m[at] = b"-\n\r\0:;\"(<@ q"[(seed >> 24) as usize % 12];
                }
                check(&m);
            }
        }
        // Deep nesting is cut off at MAX_DEPTH, where the rest reads as text/plain.
        let mut deep = String::new();
        for i in 0..200 {
            deep +=
                &format!("Content-Type: multipart/mixed; boundary=\"={i}=\"\r\n\r\n--={i}=\r\n");
        }
        let deep = deep.into_bytes();
        check(&deep);
        assert_eq!(depth(&body_structure(&deep, true)), MAX_DEPTH);
        let path = vec!["1"; MAX_DEPTH].join(".");
        assert!(text(&deep, &path).starts_with(&format!("--={MAX_DEPTH}=\r\n")));
        assert_eq!(get(&deep, &format!("{path}.1.1")), None);
        let deep = "Content-Type: message/rfc822\r\n\r\n"
            .repeat(300)
            .into_bytes();
        check(&deep);
        assert_eq!(depth(&body_structure(&deep, false)), MAX_DEPTH);
    }
}
