//! The Legacy Display Element of RFC 9788 §4.5, taken out of a decrypted view.
//!
//! A sender that protects headers may also print them at the top of the main body parts
//! (for clients that cannot read protected headers) and mark each such part with the
//! Content-Type parameter `hp-legacy-display="1"`: in text/plain the element is the first
//! lines, up to and including the first empty line; in text/html it is a
//! `<div class="header-protection-legacy-display">`. sealpost shows the protected header
//! fields themselves, so the element would only repeat them above the text (§4.5.3.3: a
//! receiver that renders the protected headers hides it). The marker parameter goes with
//! it, so that a client that knows RFC 9788 does not cut the real first paragraph.
//!
//! Only parts with an identity transfer encoding (none, 7bit, 8bit, binary) are changed;
//! an encoded part keeps its element (shown, not lost).

use std::ops::Range;

use super::structure::{param, parse, Kind, Node};
use super::{to_crlf, Fields};

/// Multipart levels searched for main body parts (mixed → alternative → related).
const MAX_LEVELS: usize = 3;

/// How far into a text/plain part the element may reach.
const MAX_ELEMENT: usize = 16 * 1024;

const HTML_CLASS: &[u8] = b"header-protection-legacy-display";

/// The message without its Legacy Display Elements, or `None` when it has none.
pub fn without_legacy_display(msg: &[u8]) -> Option<Vec<u8>> {
    let m = to_crlf(msg);
    let root = parse(&m);
    let mut cuts = Vec::new();
    collect(&m, &root, 0, &mut cuts);
    if cuts.is_empty() {
        return None;
    }
    cuts.sort_by_key(|r| r.start);
    let mut out = Vec::with_capacity(m.len());
    let mut at = 0;
    for cut in cuts {
        if cut.start < at {
            continue;
        }
        out.extend_from_slice(&m[at..cut.start]);
        at = cut.end;
    }
    out.extend_from_slice(&m[at..]);
    Some(out)
}

fn collect(m: &[u8], node: &Node, level: usize, cuts: &mut Vec<Range<usize>>) {
    match &node.kind {
        Kind::Multi(children) if level < MAX_LEVELS => {
            for c in children {
                collect(m, c, level + 1, cuts);
            }
        }
        Kind::Leaf => leaf(m, node, cuts),
        _ => {}
    }
}

fn leaf(m: &[u8], node: &Node, cuts: &mut Vec<Range<usize>>) {
    let Some(ct) = &node.ct else { return };
    let marked = param(&ct.params, b"hp-legacy-display").is_some_and(|v| v.trim_ascii() == b"1");
    if !marked || !ct.ty.eq_ignore_ascii_case(b"text") {
        return;
    }
    let header = &m[node.hdr.start..node.blank.start];
    let fields = Fields::new(header);
    let identity = fields
        .first(b"content-transfer-encoding")
        .map(|v| v.trim_ascii().to_ascii_lowercase())
        .is_none_or(|v| matches!(v.as_slice(), b"7bit" | b"8bit" | b"binary"));
    if !identity {
        return;
    }
    let body = node.body.clone();
    let element = if ct.sub.eq_ignore_ascii_case(b"plain") {
        plain_element(&m[body.clone()])
    } else if ct.sub.eq_ignore_ascii_case(b"html") {
        html_element(&m[body.clone()])
    } else {
        None
    };
    let (Some(element), Some(marker)) = (element, marker_param(header)) else {
        return;
    };
    let h = node.hdr.start;
    cuts.push(h + marker.start..h + marker.end);
    cuts.push(body.start + element.start..body.start + element.end);
}

/// Leading `Name: value` lines and the empty line after them.
fn plain_element(body: &[u8]) -> Option<Range<usize>> {
    let mut p = 0;
    let mut lines = 0;
    while p < body.len().min(MAX_ELEMENT) {
        let end = body[p..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| p + i + 1)?;
        let line = body[p..end].trim_ascii_end();
        if line.is_empty() {
            return (lines > 0).then_some(0..end);
        }
        let starts_field = line
            .iter()
            .position(|&b| b == b':')
            .is_some_and(|c| c > 0 && line[..c].iter().all(|b| b.is_ascii_graphic()));
        // A folded continuation belongs to the field above it.
        let continues = lines > 0 && matches!(line.first(), Some(b' ' | b'\t'));
        if !starts_field && !continues {
            return None;
        }
        lines += 1;
        p = end;
    }
    None
}

/// The `<div class="header-protection-legacy-display">…</div>` element.
fn html_element(body: &[u8]) -> Option<Range<usize>> {
    let lower = body.to_ascii_lowercase();
    let class = find(&lower, HTML_CLASS)?;
    let open = lower[..class].windows(4).rposition(|w| w == b"<div")?;
    if lower[open..class].contains(&b'>') {
        return None;
    }
    let close = class + find(&lower[class..], b"</div>")? + b"</div>".len();
    // The line break after the element goes with it.
    let mut end = close;
    if lower[end..].starts_with(b"\r\n") {
        end += 2;
    }
    Some(open..end)
}

/// The `; hp-legacy-display=...` parameter inside the header's Content-Type field.
fn marker_param(header: &[u8]) -> Option<Range<usize>> {
    let lower = header.to_ascii_lowercase();
    let mut from = 0;
    let field = loop {
        let at = from + find(&lower[from..], b"content-type")?;
        if at == 0 || lower[at - 1] == b'\n' {
            break at;
        }
        from = at + 1;
    };
    let mut end = field;
    loop {
        end += lower[end..].iter().position(|&b| b == b'\n')? + 1;
        if !matches!(lower.get(end), Some(b' ' | b'\t')) {
            break;
        }
    }
    let name = field + find(&lower[field..end], b"hp-legacy-display")?;
    let semi = lower[field..name].iter().rposition(|&b| b == b';')? + field;
    if !lower[semi + 1..name]
        .iter()
        .all(|b| b.is_ascii_whitespace())
    {
        return None;
    }
    let mut v = name + b"hp-legacy-display".len();
    while lower
        .get(v)
        .is_some_and(|b| matches!(b, b' ' | b'\t' | b'='))
    {
        v += 1;
    }
    if lower.get(v) == Some(&b'"') {
        v += 1 + lower[v + 1..end].iter().position(|&b| b == b'"')? + 1;
    } else {
        while lower
            .get(v)
            .is_some_and(|b| !matches!(b, b';' | b'\r' | b'\n' | b' ' | b'\t'))
        {
            v += 1;
        }
    }
    Some(semi..v)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9788_text_plain_element_and_marker_go() {
        // The shape of RFC 9788 Appendix E.1's payload.
        let msg = b"Content-Type: text/plain; charset=\"us-ascii\"; hp-legacy-display=\"1\";\r\n hp=\"cipher\"\r\nSubject: Dinner plans\r\n\r\nSubject: Dinner plans\r\n\r\nLet's meet at 8pm.\r\n";
        let out = without_legacy_display(msg).expect("an element");
        assert_eq!(
            out,
            b"Content-Type: text/plain; charset=\"us-ascii\";\r\n hp=\"cipher\"\r\nSubject: Dinner plans\r\n\r\nLet's meet at 8pm.\r\n"
        );
    }

    #[test]
    fn html_element_in_an_alternative_goes() {
        let msg = b"Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; hp-legacy-display=1\r\n\r\nSubject: x\r\nTo: y\r\n\r\nHi\r\n--b\r\nContent-Type: text/html; hp-legacy-display=\"1\"\r\n\r\n<html><body><div class=\"header-protection-legacy-display\"><pre>Subject: x</pre></div>\r\n<p>Hi</p></body></html>\r\n--b--\r\n";
        let out = String::from_utf8(without_legacy_display(msg).unwrap()).unwrap();
        assert!(!out.contains("legacy-display"), "{out}");
        assert!(out.contains("\r\n\r\nHi\r\n--b"), "{out}");
        assert!(out.contains("<body><p>Hi</p>"), "{out}");
    }

    #[test]
    fn unmarked_encoded_or_not_header_like_parts_are_left_alone() {
        let unmarked = b"Content-Type: text/plain\r\n\r\nSubject: x\r\n\r\nHi\r\n";
        assert_eq!(without_legacy_display(unmarked), None);
        let encoded = b"Content-Type: text/plain; hp-legacy-display=1\r\nContent-Transfer-Encoding: base64\r\n\r\nU3ViamVjdDogeA0KDQpIaQ0K\r\n";
        assert_eq!(without_legacy_display(encoded), None);
        let prose = b"Content-Type: text/plain; hp-legacy-display=1\r\n\r\nDear Bob, it is late.\r\n\r\nHi\r\n";
        assert_eq!(without_legacy_display(prose), None);
        // An attachment that says so is no main body part.
        let attached = b"Content-Type: message/rfc822\r\n\r\nContent-Type: text/plain; hp-legacy-display=1\r\n\r\nSubject: x\r\n\r\nHi\r\n";
        assert_eq!(without_legacy_display(attached), None);
    }
}
