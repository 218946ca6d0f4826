//! `BODY[<section>]` (RFC 3501 §6.4.5): a part found by number, and HEADER, TEXT, MIME
//! and HEADER.FIELDS[.NOT] of it, cut from the message as Dovecot serves them.

use std::num::NonZeroU32;

use imap_types::core::AString;
use imap_types::fetch::Section;

use super::field_name;
use super::structure::{Kind, Node};
use crate::mime::{fields, push_line, split_message};

/// The section of `m` (CRLF-normalised) whose part tree is `root`.
pub(super) fn section_raw<'m>(
    m: &'m [u8],
    root: &Node,
    section: Option<&Section<'_>>,
) -> Option<std::borrow::Cow<'m, [u8]>> {
    use std::borrow::Cow;
    let Some(section) = section else {
        return Some(Cow::Borrowed(m));
    };
    let (path, what, names) = match section {
        Section::Part(p) => (Some(p), What::Body, None),
        Section::Mime(p) => (Some(p), What::Mime, None),
        Section::Header(p) => (p.as_ref(), What::Header, None),
        Section::Text(p) => (p.as_ref(), What::Text, None),
        Section::HeaderFields(p, n) => (p.as_ref(), What::Fields, Some(n.as_ref())),
        Section::HeaderFieldsNot(p, n) => (p.as_ref(), What::FieldsNot, Some(n.as_ref())),
    };
    let mut node = root;
    if let Some(path) = path {
        node = find(root, path.0.as_ref())?;
        if !matches!(what, What::Body | What::Mime) {
            // HEADER, TEXT and HEADER.FIELDS below the top need a message/rfc822 part.
            let Kind::Msg(child) = &node.kind else {
                return None;
            };
            node = child;
        }
    }
    Some(match what {
        What::Body | What::Text => Cow::Borrowed(&m[node.body.clone()]),
        What::Mime | What::Header => Cow::Borrowed(&m[node.hdr.clone()]),
        What::Fields | What::FieldsNot => {
            let not = what == What::FieldsNot;
            Cow::Owned(header_fields(
                m,
                node,
                names.unwrap_or(&[]),
                not,
                path.is_none(),
            ))
        }
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum What {
    Body,
    Mime,
    Header,
    Text,
    Fields,
    FieldsNot,
}

/// HEADER.FIELDS: the matching fields, then an empty line; at the top level every
/// field is made to end in CRLF, in an encapsulated message the empty line is only
/// added if its header has one. HEADER.FIELDS.NOT: the other fields as they are, then
/// the empty line if there is one. (Dovecot's behaviour, also for broken headers.)
fn header_fields(m: &[u8], node: &Node, names: &[AString<'_>], not: bool, top: bool) -> Vec<u8> {
    let (mut head, mut blank) = (&m[node.hdr.start..node.blank.start], &m[node.blank.clone()]);
    let cut = blank.is_empty() && node.hdr.end < m.len();
    if cut {
        // Cut short by a boundary: Dovecot reads on to an empty line, boundaries and all.
        let (h, rest) = split_message(&m[node.hdr.start..]);
        let start = node.hdr.start + h.len();
        (head, blank) = (h, &m[start..m.len() - rest.len()]);
    }
    let mut out = Vec::new();
    for f in fields(head) {
        let name = field_name(f.raw);
        let hit = !name.is_empty() && names.iter().any(|n| n.as_ref().eq_ignore_ascii_case(name));
        match (hit, not) {
            (true, false) if top => push_line(&mut out, f.raw),
            (true, false) | (false, true) => out.extend_from_slice(f.raw),
            _ => {}
        }
    }
    if not {
        out.extend_from_slice(blank);
    } else if top || !blank.is_empty() {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Dovecot's part lookup: a number selects a child of a multipart, and only `1` is
/// valid for anything else (where it means the part itself and must end the path
/// unless the part is message/rfc822); inside a message/rfc822 part the numbers
/// continue with the encapsulated message.
fn find<'n>(root: &'n Node, path: &[NonZeroU32]) -> Option<&'n Node> {
    let mut node = root;
    for (i, n) in path.iter().enumerate() {
        let more = i + 1 < path.len();
        node = match &node.kind {
            Kind::Multi(children) => children.get(n.get() as usize - 1)?,
            Kind::Msg(_) if n.get() == 1 => node,
            _ if n.get() == 1 && !more => node,
            _ => return None,
        };
        if more {
            if let Kind::Msg(child) = &node.kind {
                node = child;
            }
        }
    }
    Some(node)
}

#[cfg(test)]
mod tests {
    use crate::mime::view::tests::text;

    #[test]
    fn header_fields_order_and_case() {
        let m = b"Subject: one\r\nX-Foo: a\r\nTo: x@y\r\n continued\r\nno colon here\r\n\
            subject: two\r\nFROM:z@w\r\nX-Empty:\r\n\r\nbody\r\n";
        let fields = "Subject: one\r\nTo: x@y\r\n continued\r\nsubject: two\r\nX-Empty:\r\n\r\n";
        assert_eq!(text(m, "HEADER.FIELDS (SUBJECT to x-empty)"), fields);
        assert_eq!(text(m, "HEADER.FIELDS (x-empty To Subject)"), fields);
        let rest = "X-Foo: a\r\nno colon here\r\nFROM:z@w\r\n\r\n";
        assert_eq!(text(m, "HEADER.FIELDS.NOT (SUBJECT to x-empty)"), rest);
        assert_eq!(text(m, "HEADER.FIELDS (nothere)"), "\r\n");
        // Without an empty line: FIELDS still ends with one, NOT keeps the bytes.
        let m = b"Subject: s\r\nFrom: a@b";
        assert_eq!(text(m, "HEADER.FIELDS (from)"), "From: a@b\r\n\r\n");
        assert_eq!(text(m, "HEADER.FIELDS.NOT (subject)"), "From: a@b");
        assert_eq!(text(m, "HEADER"), "Subject: s\r\nFrom: a@b");
        assert_eq!(text(m, "TEXT"), "");
    }
}
