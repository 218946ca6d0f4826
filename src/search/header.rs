//! Header fields as Dovecot's SEARCH reads them.
//!
//! Dovecot (index-search.c, message-search.c) reads a header block with its own parser and
//! the flag `CLEAN_ONELINE`, then decodes RFC 2047 encoded-words anywhere in a value
//! (message-header-decode.c). Doing the same here, rather than taking mail-parser's
//! structured values, keeps what a needle can find the same as on a plain message:
//! mail-parser trims, re-spaces and (for address fields) rebuilds values.

use std::borrow::Cow;

use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::parsers::MessageStream;
use mail_parser::{Addr, Address, HeaderValue};

/// One field of a header block before decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawField<'a> {
    /// The name as written, without the LWSP that may precede the colon.
    pub name: &'a [u8],
    /// The value unfolded the way Dovecot unfolds: the one space or tab after the colon
    /// dropped, each line break of a folded field removed, a tab that starts a continuation
    /// line turned into a space.
    pub value: Vec<u8>,
}

/// Where the header block of `message` ends: the offset of the body (after the empty
/// line), or the end of the message when it has no empty line.
pub fn header_end(message: &[u8]) -> usize {
    let mut line_start = 0;
    while line_start < message.len() {
        let line_end = memchr::memchr(b'\n', &message[line_start..])
            .map_or(message.len(), |i| line_start + i + 1);
        let line = &message[line_start..line_end];
        if line == b"\n" || line == b"\r\n" {
            return line_end;
        }
        line_start = line_end;
    }
    message.len()
}

/// The fields of a header block (the bytes up to and including the empty line).
///
/// A line without a colon becomes a field with an empty name and the whole line as its
/// value, as in Dovecot (TEXT finds its words); continuation lines before any field are
/// dropped.
pub fn split_fields(block: &[u8]) -> Vec<RawField<'_>> {
    let mut fields: Vec<RawField<'_>> = Vec::new();
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if is_lwsp(line[0]) {
            if let Some(field) = fields.last_mut() {
                if line[0] == b'\t' {
                    field.value.push(b' ');
                    field.value.extend_from_slice(&line[1..]);
                } else {
                    field.value.extend_from_slice(line);
                }
            }
            continue;
        }
        fields.push(match memchr::memchr(b':', line) {
            Some(colon) => {
                let name = trim_lwsp_end(&line[..colon]);
                let rest = &line[colon + 1..];
                let value = match rest.first() {
                    Some(&b) if is_lwsp(b) => &rest[1..],
                    _ => rest,
                };
                RawField {
                    name,
                    value: value.to_vec(),
                }
            }
            None => RawField {
                name: b"",
                value: line.to_vec(),
            },
        });
    }
    fields
}

fn is_lwsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_lwsp_end(mut bytes: &[u8]) -> &[u8] {
    while let [rest @ .., last] = bytes {
        if !is_lwsp(*last) {
            break;
        }
        bytes = rest;
    }
    bytes
}

/// `value` with its RFC 2047 encoded-words decoded, as UTF-8.
///
/// Dovecot's rules, which are laxer than RFC 2047 §5: an encoded-word is recognised
/// anywhere (inside a quoted string or a word too); text between two encoded-words, and
/// before the first one, is dropped when it is only whitespace; an encoded-word that
/// cannot be parsed stays as it is written. Bytes outside encoded-words are read as UTF-8
/// (invalid sequences become U+FFFD).
///
/// Differs from Dovecot: an encoded-word in a charset neither knows is read as UTF-8 in
/// both, but Dovecot then leaves its text out of case folding (so only an exact-case
/// needle finds it there); here it is folded like the rest.
pub fn decode_words(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    let mut plain_start = 0;
    let mut pos = 0;
    while pos + 1 < value.len() {
        if value[pos] != b'=' || value[pos + 1] != b'?' {
            pos += 1;
            continue;
        }
        let Some((decoded, len)) = encoded_word(&value[pos + 2..]) else {
            pos += 2;
            continue;
        };
        let plain = &value[plain_start..pos];
        if !plain
            .iter()
            .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        {
            out.push_str(&String::from_utf8_lossy(plain));
        }
        out.push_str(&decoded);
        pos += 2 + len;
        plain_start = pos;
    }
    out.push_str(&String::from_utf8_lossy(&value[plain_start..]));
    out
}

/// Decodes `charset?encoding?text?=` at the start of `rest` (the bytes after `=?`);
/// returns the text in UTF-8 and how many bytes of `rest` it used.
fn encoded_word(rest: &[u8]) -> Option<(String, usize)> {
    let mut marks = rest
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'?')
        .map(|(i, _)| i);
    let (charset_end, encoding_end, text_end) = (marks.next()?, marks.next()?, marks.next()?);
    if rest.get(text_end + 1) != Some(&b'=') {
        return None;
    }
    let text = &rest[encoding_end + 1..text_end];
    let bytes = match rest.get(charset_end + 1)? {
        b'q' | b'Q' => q_decode(text),
        b'b' | b'B' => b_decode(text),
        _ => return None,
    };
    let charset = &rest[..charset_end];
    Some((to_utf8(charset, &bytes).into_owned(), text_end + 2))
}

/// RFC 2047 §4.2 "Q": `_` is a space, `=XX` an octet; a broken `=` stays as it is.
fn q_decode(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'_' => out.push(b' '),
            b'=' => {
                let hex = text.get(i + 1..i + 3).and_then(|h| {
                    let h = std::str::from_utf8(h).ok()?;
                    u8::from_str_radix(h, 16).ok()
                });
                if let Some(byte) = hex {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                out.push(b'=');
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// RFC 2047 §4.1 "B": base64, decoded as far as it is valid (Dovecot shows what it got
/// before an invalid character).
fn b_decode(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in text {
        let sextet = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => break,
        };
        acc = (acc << 6) | u32::from(sextet);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// `bytes` in `charset`, as UTF-8; an unknown charset is read as UTF-8, as Dovecot does.
fn to_utf8<'a>(charset: &[u8], bytes: &'a [u8]) -> Cow<'a, str> {
    let utf8 = charset.eq_ignore_ascii_case(b"utf-8")
        || charset.eq_ignore_ascii_case(b"utf8")
        || charset.eq_ignore_ascii_case(b"us-ascii");
    match charset_decoder(charset) {
        Some(decode) if !utf8 => Cow::Owned(decode(bytes)),
        _ => String::from_utf8_lossy(bytes),
    }
}

/// The address list in `value` (From, To, Cc, Bcc) the way Dovecot writes it back out
/// before `FROM`, `TO`, `CC` and `BCC` look in it (`message_address_write`):
/// `Name <local@domain>` joined by `, `, groups as `name: members;`; a display name with a
/// character outside RFC 5322 atext is put in double quotes, unless it came from
/// encoded-words; encoded-words are decoded.
///
/// So the needle `Hans Mueller` finds `From: Hans  Mueller <h@example.org>`, while
/// `Mueller <h` does not (the written form is `"Hans Mueller" <h@example.org>`).
///
/// Differs from Dovecot: whether a name came from encoded-words is judged per field, not
/// per address (a field holding one encoded name and one plain name with spaces leaves the
/// plain one unquoted here); an address Dovecot cannot parse gets its placeholders there
/// (`MISSING_DOMAIN`), and whatever mail-parser makes of it here.
pub fn address_form(value: &[u8]) -> String {
    let mut line = value.to_vec();
    line.push(b'\n');
    let raw = Raw {
        value,
        had_words: memchr::memmem::find(value, b"=?").is_some(),
    };
    let mut out = String::new();
    match MessageStream::new(&line).parse_address() {
        HeaderValue::Address(Address::List(list)) => write_list(&mut out, &list, &raw),
        HeaderValue::Address(Address::Group(groups)) => {
            for (i, group) in groups.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                match group.name.as_deref() {
                    Some(name) => {
                        write_phrase(&mut out, name, &raw);
                        out.push(':');
                        if !group.addresses.is_empty() {
                            out.push(' ');
                        }
                        write_list(&mut out, &group.addresses, &raw);
                        out.push(';');
                    }
                    None => write_list(&mut out, &group.addresses, &raw),
                }
            }
        }
        _ => {}
    }
    out
}

/// What the writer needs to know of the field as written.
struct Raw<'a> {
    value: &'a [u8],
    /// Whether it holds encoded-words: Dovecot writes such a display name bare.
    had_words: bool,
}

impl Raw<'_> {
    /// Whether `name` is written in the field inside a quoted string or a comment, whose
    /// whitespace Dovecot keeps; elsewhere a phrase is words joined by one space.
    fn keeps_spacing(&self, name: &str) -> bool {
        let name = name.as_bytes();
        self.value
            .windows(name.len() + 1)
            .any(|w| (w[0] == b'"' || w[0] == b'(') && &w[1..] == name)
    }
}

fn write_list(out: &mut String, list: &[Addr<'_>], raw: &Raw<'_>) {
    for (i, addr) in list.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let name = addr.name.as_deref().filter(|n| !n.is_empty());
        if let Some(name) = name {
            write_phrase(out, name, raw);
        }
        if let Some(address) = addr.address.as_deref() {
            if name.is_some() {
                out.push(' ');
            }
            out.push('<');
            out.push_str(address);
            out.push('>');
        }
    }
}

/// A display name as `message_address_write` puts it: bare when it is all atext (or came
/// from encoded-words), else quoted with `"` and `\` escaped; the words of a phrase that
/// was not quoted are joined by one space (`rfc822_parse_phrase`).
fn write_phrase(out: &mut String, name: &str, raw: &Raw<'_>) {
    let joined;
    let name = if raw.keeps_spacing(name) {
        name
    } else {
        joined = name
            .split([' ', '\t'])
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        &joined
    };
    if raw.had_words || name.bytes().all(is_atext) {
        out.push_str(name);
        return;
    }
    out.push('"');
    for c in name.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// RFC 5322 §3.2.3 atext.
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(block: &str) -> Vec<(String, String)> {
        split_fields(block.as_bytes())
            .into_iter()
            .map(|f| {
                (
                    String::from_utf8_lossy(f.name).into_owned(),
                    String::from_utf8_lossy(&f.value).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn folded_lines_join_without_the_line_break() {
        let got = fields("Subject: one\r\n two\r\n\tthree\r\nX-A :  b \r\n\r\nbody: no\r\n");
        assert_eq!(
            got,
            [
                ("Subject".to_owned(), "one two three".to_owned()),
                ("X-A".to_owned(), " b ".to_owned()),
            ]
        );
    }

    #[test]
    fn a_line_without_colon_is_a_nameless_field() {
        assert_eq!(
            fields("junk line\nA: b\n"),
            [
                (String::new(), "junk line".to_owned()),
                ("A".to_owned(), "b".to_owned()),
            ]
        );
    }

    #[test]
    fn header_end_is_after_the_empty_line() {
        assert_eq!(header_end(b"A: b\r\n\r\nbody"), 8);
        assert_eq!(header_end(b"A: b\n\nbody"), 6);
        assert_eq!(header_end(b"A: b\r\n"), 6);
    }

    #[test]
    fn encoded_words_decode_in_both_forms_and_charsets() {
        assert_eq!(
            decode_words(b"=?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus?= Berlin"),
            "Grüße aus Berlin"
        );
        assert_eq!(decode_words(b"=?utf-8?B?w6l0w6k=?="), "été");
        assert_eq!(decode_words(b"=?ISO-8859-1?Q?Fran=E7ois?="), "François");
        assert_eq!(decode_words(b"=?iso-8859-1?b?6XTp?="), "été");
    }

    #[test]
    fn whitespace_between_encoded_words_goes_but_other_text_stays() {
        assert_eq!(decode_words(b"=?utf-8?q?a?= \t =?utf-8?q?b?="), "ab");
        assert_eq!(decode_words(b"  =?utf-8?q?a?= x =?utf-8?q?b?= "), "a x b ");
        assert_eq!(decode_words(b"pre=?utf-8?q?a?=post"), "preapost");
    }

    #[test]
    fn broken_encoded_words_stay_as_written() {
        assert_eq!(
            decode_words(b"=?utf-8?x?abc?= =?utf-8?q?abc"),
            "=?utf-8?x?abc?= =?utf-8?q?abc"
        );
        assert_eq!(decode_words(b"a =? b"), "a =? b");
        assert_eq!(decode_words(b"=?unknown-cs?q?caf=C3=A9?="), "café");
        assert_eq!(decode_words(b"=?utf-8?q?a=ZZ?="), "a=ZZ");
    }

    #[test]
    fn raw_eight_bit_is_read_as_utf8() {
        assert_eq!(decode_words("Zoë".as_bytes()), "Zoë");
        assert_eq!(decode_words(b"Zo\xeb"), "Zo\u{FFFD}");
    }

    #[test]
    fn addresses_are_written_back_like_dovecot() {
        assert_eq!(
            address_form(b"Hans Mueller <hans@example.org>"),
            "\"Hans Mueller\" <hans@example.org>"
        );
        assert_eq!(
            address_form(b"=?utf-8?q?J=C3=B6rg?= Schmidt <js@example.org>, bob@example.org"),
            "Jörg Schmidt <js@example.org>, <bob@example.org>"
        );
        assert_eq!(
            address_form(b"Bob <bob@example.org>"),
            "Bob <bob@example.org>"
        );
        assert_eq!(
            address_form(b"\"Doe, \\\"J\\\"\" <j@example.org>"),
            "\"Doe, \\\"J\\\"\" <j@example.org>"
        );
    }

    #[test]
    fn groups_are_written_with_colon_and_semicolon() {
        assert_eq!(
            address_form(b"undisclosed-recipients:;"),
            "undisclosed-recipients:;"
        );
        assert_eq!(
            address_form(b"team: a@example.org, b@example.org;"),
            "team: <a@example.org>, <b@example.org>;"
        );
    }
}
