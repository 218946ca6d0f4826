//! BODY and BODYSTRUCTURE (RFC 3501 §7.4.2): the MIME part tree of a message, split on
//! boundaries as Dovecot does, and its description with Content-Type parameters parsed
//! per RFC 2045 §5.1 and merged per RFC 2231.

use std::ops::Range;

use imap_types::body::{
    BasicFields, Body, BodyStructure, Disposition, Language, Location, MultiPartExtensionData,
    SinglePartExtensionData, SpecificFields,
};
use imap_types::core::{IString, Vec1};

use super::envelope::envelope_of;
use super::{is_atext, istr, nolf, nstr, Fields, Lex, MAX_DEPTH};

// ---------------------------------------------------------------------------------
// The part tree.

/// One entity: header region (with its empty line), body region, what it contains.
pub(super) struct Node {
    pub(super) hdr: Range<usize>,
    /// The empty line after the fields (empty if none); its start ends the fields. It
    /// lies outside `hdr` when a boundary line follows it directly.
    pub(super) blank: Range<usize>,
    pub(super) body: Range<usize>,
    /// Content-* fields apply.
    mime: bool,
    /// The Content-Type in effect; `None` means the default.
    pub(super) ct: Option<Ctype>,
    /// Without Content-Type this is message/rfc822 (a multipart/digest child).
    digest_default: bool,
    pub(super) kind: Kind,
}

pub(super) enum Kind {
    Leaf,
    Multi(Vec<Node>),
    Msg(Box<Node>),
}

impl Node {
    fn is_multipart(&self) -> bool {
        self.ct
            .as_ref()
            .is_some_and(|c| c.ty.eq_ignore_ascii_case(b"multipart") && !c.sub.is_empty())
    }

    /// The boundary, cut to 80 bytes as Dovecot does.
    fn boundary(&self) -> Option<&[u8]> {
        let b = param(&self.ct.as_ref()?.params, b"boundary")?;
        (self.is_multipart() && !b.is_empty()).then_some(&b[..b.len().min(80)])
    }

    fn is_rfc822(&self) -> bool {
        match &self.ct {
            Some(c) => {
                c.ty.eq_ignore_ascii_case(b"message") && c.sub.eq_ignore_ascii_case(b"rfc822")
            }
            None => self.digest_default,
        }
    }
}

/// How a scan ended: at the end of the message or at a boundary line.
#[derive(Clone, Copy)]
enum Stop {
    Eof,
    At {
        /// Index of the matching boundary in the stack.
        idx: usize,
        /// Start of the CRLF before the boundary line (the line itself on the first
        /// line of a region).
        crlf: usize,
        /// Just after the boundary line.
        next: usize,
        close: bool,
    },
}

struct Parser<'a> {
    m: &'a [u8],
    stack: Vec<Vec<u8>>,
}

pub(super) fn parse(m: &[u8]) -> Node {
    let mut p = Parser {
        m,
        stack: Vec::new(),
    };
    p.part(0, 0, false, false).0
}

impl Parser<'_> {
    fn line_end(&self, p: usize) -> usize {
        self.m[p..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(self.m.len(), |i| p + i + 1)
    }

    /// If the line at `p` is a boundary line: (stack index, close delimiter, next line).
    fn boundary_at(&self, p: usize) -> Option<(usize, bool, usize)> {
        if self.stack.is_empty() || !self.m[p..].starts_with(b"--") {
            return None;
        }
        let next = self.line_end(p);
        let mut line = &self.m[p + 2..next];
        line = line.strip_suffix(b"\n").unwrap_or(line);
        line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut best: Option<usize> = None;
        for (i, b) in self.stack.iter().enumerate().rev() {
            if line.starts_with(b) && best.is_none_or(|j| self.stack[j].len() < b.len()) {
                best = Some(i);
            }
        }
        let i = best?;
        Some((i, line[self.stack[i].len()..].starts_with(b"--"), next))
    }

    fn stop_at(&self, p: usize, region_start: usize) -> Option<Stop> {
        let (idx, close, next) = self.boundary_at(p)?;
        let mut crlf = p;
        if p > region_start {
            crlf -= 1;
            if crlf > region_start && self.m[crlf - 1] == b'\r' {
                crlf -= 1;
            }
        }
        Some(Stop::At {
            idx,
            crlf,
            next,
            close,
        })
    }

    /// Finds the first boundary line at or after the line start `from`.
    fn scan(&self, from: usize) -> Stop {
        let mut p = from;
        while !self.stack.is_empty() && p < self.m.len() {
            if let Some(stop) = self.stop_at(p, from) {
                return stop;
            }
            p = self.line_end(p);
        }
        Stop::Eof
    }

    fn end_of(&self, stop: Stop) -> usize {
        match stop {
            Stop::Eof => self.m.len(),
            Stop::At { crlf, .. } => crlf,
        }
    }

    /// Parses the entity at `start`; returns it, where it stopped, and where its content
    /// ends for the enclosing parts (Dovecot counts the CRLF before a boundary that cut
    /// a header into their bodies, though not into the header).
    fn part(
        &mut self,
        start: usize,
        depth: usize,
        in_multi: bool,
        digest: bool,
    ) -> (Node, Stop, usize) {
        let len = self.m.len();
        let mut p = start;
        let (hdr_end, blank, cut) = loop {
            if p >= len {
                break (len, len..len, None);
            }
            if let Some(stop) = self.stop_at(p, start) {
                let end = self.end_of(stop);
                break (end, end..end, Some((stop, p)));
            }
            let e = self.line_end(p);
            if matches!(&self.m[p..e], b"\r\n" | b"\n") {
                // An enclosing boundary right after the empty line takes it as its
                // line break (a multipart's own boundary there does not).
                let own = header_info(&self.m[start..p], in_multi, digest)
                    .boundary()
                    .map(<[u8]>::to_vec);
                let outer = self.stack.len();
                self.stack.extend(own);
                let stop = self.stop_at(e, start);
                self.stack.truncate(outer);
                match stop {
                    Some(stop @ Stop::At { idx, .. }) if idx < outer => {
                        break (p, p..e, Some((stop, e)))
                    }
                    _ => break (e, p..e, None),
                }
            }
            p = e;
        };
        let mut node = header_info(&self.m[start..blank.start], in_multi, digest);
        node.hdr = start..hdr_end;
        node.body = hdr_end..hdr_end;
        node.blank = blank;
        if depth >= MAX_DEPTH && (node.is_multipart() || node.is_rfc822()) {
            node.ct = None;
            node.digest_default = false;
        }
        let b0 = node.hdr.end;
        if let Some((stop, line)) = cut {
            node.kind = if node.is_multipart() {
                Kind::Multi(Vec::new())
            } else if node.is_rfc822() {
                let (mut child, at) = (header_info(b"", false, false), node.hdr.end);
                (child.hdr, child.blank, child.body) = (at..at, at..at, at..at);
                Kind::Msg(Box::new(child))
            } else {
                Kind::Leaf
            };
            return (node, stop, line);
        }
        let (stop, tail) = if let Some(b) = node.boundary() {
            let is_digest = node
                .ct
                .as_ref()
                .is_some_and(|c| c.sub.eq_ignore_ascii_case(b"digest"));
            let (children, stop, tail) = self.multipart(b0, b.to_vec(), depth, is_digest);
            node.kind = Kind::Multi(children);
            (stop, tail)
        } else if node.is_rfc822() {
            let (child, stop, tail) = self.part(b0, depth + 1, false, false);
            node.kind = Kind::Msg(Box::new(child));
            (stop, tail)
        } else {
            if node.is_multipart() {
                node.kind = Kind::Multi(Vec::new());
            }
            let stop = self.scan(b0);
            (stop, self.end_of(stop))
        };
        node.body = b0..tail;
        (node, stop, tail)
    }

    fn multipart(
        &mut self,
        b0: usize,
        boundary: Vec<u8>,
        depth: usize,
        digest: bool,
    ) -> (Vec<Node>, Stop, usize) {
        let my = self.stack.len();
        self.stack.push(boundary);
        let mut children = Vec::new();
        let mut stop = self.scan(b0);
        let mut tail = self.end_of(stop);
        while let Stop::At {
            idx, next, close, ..
        } = stop
        {
            if idx != my {
                break;
            }
            if close {
                // The epilogue runs to an enclosing boundary.
                self.stack.truncate(my);
                stop = self.scan(next);
                tail = self.end_of(stop);
                break;
            }
            if !self.m[..next].ends_with(b"\n") {
                // A boundary line cut off by the end of the message opens no part.
                (stop, tail) = (Stop::Eof, next);
                break;
            }
            let (child, s, t) = self.part(next, depth + 1, true, digest);
            children.push(child);
            (stop, tail) = (s, t);
        }
        self.stack.truncate(my);
        (children, stop, tail)
    }
}

/// A node with the MIME information of this header (regions still unset).
fn header_info(header: &[u8], in_multi: bool, digest: bool) -> Node {
    let h = Fields::new(header);
    let mime = in_multi || h.first(b"mime-version").is_some() || h.first(b"content-type").is_some();
    let ct = h.first(b"content-type").filter(|_| mime).map(parse_ctype);
    Node {
        hdr: 0..0,
        blank: 0..0,
        body: 0..0,
        mime,
        digest_default: digest && ct.is_none(),
        ct,
        kind: Kind::Leaf,
    }
}

// ---------------------------------------------------------------------------------
// BODYSTRUCTURE.

pub(super) fn structure(m: &[u8], n: &Node, ext: bool) -> BodyStructure<'static> {
    let h = Fields::new(&m[n.hdr.start..n.blank.start]);
    let mime = |name: &[u8]| h.first(name).filter(|_| n.mime);
    let params = n.ct.as_ref().map(|c| c.params.clone()).unwrap_or_default();
    let disposition = || {
        let mut disp: Option<(Vec<u8>, Params)> = None;
        for v in h.all(b"content-disposition").filter(|_| n.mime) {
            if disp.as_ref().is_some_and(|d| !d.1.is_empty()) {
                break;
            }
            let mut lx = Lex::new(v);
            lx.cfws();
            let ty = lx.run(is_token).to_vec();
            disp = Some((ty, parse_params(&mut lx)));
        }
        Disposition {
            disposition: disp.map(|(t, p)| (istr(t), pairs(p))),
            tail: Some(Language {
                language: mime(b"content-language").map(languages).unwrap_or_default(),
                tail: Some(Location {
                    location: nstr(mime(b"content-location").map(nolf)),
                    extensions: Vec::new(),
                }),
            }),
        }
    };
    if n.is_multipart() {
        let mut bodies: Vec<_> = match &n.kind {
            Kind::Multi(children) => children.iter().map(|c| structure(m, c, ext)).collect(),
            _ => Vec::new(),
        };
        if bodies.is_empty() {
            // Dovecot's stand-in for a multipart without parts.
            bodies.push(structure(b"", &header_info(b"", false, false), ext));
        }
        let sub = n.ct.as_ref().map(|c| c.sub.clone()).unwrap_or_default();
        return BodyStructure::Multi {
            bodies: Vec1::unvalidated(bodies),
            subtype: istr(sub),
            extension_data: ext.then(|| MultiPartExtensionData {
                parameter_list: pairs(params),
                tail: Some(disposition()),
            }),
        };
    }
    let (ty, sub) = match &n.ct {
        Some(c) => (c.ty.clone(), c.sub.clone()),
        None if n.digest_default => (b"message".to_vec(), b"rfc822".to_vec()),
        None => (b"text".to_vec(), b"plain".to_vec()),
    };
    let text = ty.eq_ignore_ascii_case(b"text");
    let mut params = params;
    if text && param(&params, b"charset").is_none() {
        params.push((b"charset".to_vec(), b"us-ascii".to_vec()));
    }
    // A single token (comments allowed), else the default.
    let cte = mime(b"content-transfer-encoding").and_then(|v| {
        let mut lx = Lex::new(v);
        lx.cfws();
        let token = lx.run(is_token).to_vec();
        lx.cfws();
        (!token.is_empty() && lx.peek().is_none()).then_some(token)
    });
    let body = &m[n.body.clone()];
    let lines = u32::try_from(body.iter().filter(|&&b| b == b'\n').count()).unwrap_or(u32::MAX);
    let basic = BasicFields {
        parameter_list: pairs(params),
        id: nstr(mime(b"content-id").map(nolf)),
        description: nstr(mime(b"content-description").map(nolf)),
        content_transfer_encoding: istr(cte.unwrap_or(b"7bit".to_vec())),
        size: u32::try_from(body.len()).unwrap_or(u32::MAX),
    };
    let specific = match &n.kind {
        Kind::Msg(child) => SpecificFields::Message {
            envelope: Box::new(envelope_of(&m[child.hdr.start..child.blank.start])),
            body_structure: Box::new(structure(m, child, ext)),
            number_of_lines: lines,
        },
        _ if text => SpecificFields::Text {
            subtype: istr(sub),
            number_of_lines: lines,
        },
        _ => SpecificFields::Basic {
            r#type: istr(ty),
            subtype: istr(sub),
        },
    };
    BodyStructure::Single {
        body: Body { basic, specific },
        extension_data: ext.then(|| SinglePartExtensionData {
            md5: nstr(mime(b"content-md5").map(nolf)),
            tail: Some(disposition()),
        }),
    }
}

pub(super) type Params = Vec<(Vec<u8>, Vec<u8>)>;

pub(super) struct Ctype {
    pub(super) ty: Vec<u8>,
    pub(super) sub: Vec<u8>,
    pub(super) params: Params,
}

/// `type ["/" subtype]`, then parameters; anything else makes it `"" ""` (Dovecot).
fn parse_ctype(v: &[u8]) -> Ctype {
    let mut lx = Lex::new(v);
    lx.cfws();
    let ty = lx.run(is_token).to_vec();
    lx.cfws();
    let mut sub = Vec::new();
    let mut ok = !ty.is_empty();
    if lx.peek() == Some(b'/') {
        lx.i += 1;
        lx.cfws();
        sub = lx.run(is_token).to_vec();
        ok &= !sub.is_empty();
        lx.cfws();
    }
    if !ok || !matches!(lx.peek(), None | Some(b';')) {
        let params = Params::new();
        return Ctype {
            ty: Vec::new(),
            sub: Vec::new(),
            params,
        };
    }
    let params = parse_params(&mut lx);
    Ctype { ty, sub, params }
}

pub(super) fn param<'p>(params: &'p Params, name: &[u8]) -> Option<&'p [u8]> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// `*(";" attribute "=" value)`, then RFC 2231 merging.
fn parse_params(lx: &mut Lex<'_>) -> Params {
    let mut raw = Vec::new();
    loop {
        lx.cfws();
        if lx.peek() != Some(b';') {
            break;
        }
        lx.i += 1;
        lx.cfws();
        let name = lx.run(is_token).to_vec();
        lx.cfws();
        if name.is_empty() || lx.peek() != Some(b'=') {
            break;
        }
        lx.i += 1;
        lx.cfws();
        let value = match lx.peek() {
            Some(b'"') => match lx.quoted() {
                (v, true) => v,
                (_, false) => break,
            },
            // Broken senders write name==?utf-8?...?= unquoted.
            Some(b'=') => lx
                .run(|c| !matches!(c, b';' | b' ' | b'\t' | b'\r' | b'\n'))
                .to_vec(),
            _ => lx.run(is_token).to_vec(),
        };
        raw.push((name, value));
        lx.cfws();
        // Junk after a value is skipped up to the next parameter.
        lx.run(|c| c != b';');
    }
    rfc2231(raw)
}

/// Merges `name*0`, `name*1*`, … continuations (sorted by name and index, after the
/// plain parameters). Values stay encoded; the key gets a `*` if any piece was.
fn rfc2231(raw: Params) -> Params {
    let mut out = Params::new();
    let mut ext: Vec<(Vec<u8>, u32, bool, Vec<u8>)> = Vec::new();
    for (k, v) in raw {
        let Some(star) = k.iter().position(|&c| c == b'*') else {
            out.push((k, v));
            continue;
        };
        let rest = &k[star + 1..];
        let digits = rest.strip_suffix(b"*").unwrap_or(rest);
        let idx = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse::<u32>().ok());
        match (rest.is_empty(), idx) {
            (true, _) => ext.push((k[..star].to_vec(), 0, true, v)),
            (false, Some(i)) => ext.push((k[..star].to_vec(), i, rest.ends_with(b"*"), v)),
            (false, None) => out.push((k, v)),
        }
    }
    ext.sort_by(|a, b| {
        a.0.to_ascii_lowercase()
            .cmp(&b.0.to_ascii_lowercase())
            .then(a.1.cmp(&b.1))
    });
    let mut i = 0;
    while i < ext.len() {
        let mut j = i;
        while j < ext.len() && ext[j].0.eq_ignore_ascii_case(&ext[i].0) {
            j += 1;
        }
        let group = &ext[i..j];
        let have_ext = group.iter().any(|g| g.2);
        if group.iter().enumerate().any(|(n, g)| g.1 as usize != n) {
            for (base, idx, enc, v) in group {
                let star = if *enc { "*" } else { "" };
                out.push((
                    [base.as_slice(), format!("*{idx}{star}").as_bytes()].concat(),
                    v.clone(),
                ));
            }
        } else {
            let mut value = Vec::new();
            if have_ext && !group[0].2 {
                value.extend_from_slice(b"''");
            }
            for (_, _, enc, v) in group {
                if have_ext && !enc {
                    for &c in v {
                        if is_token(c) && !b"*'%".contains(&c) && c < 0x80 {
                            value.push(c);
                        } else {
                            value.extend_from_slice(format!("%{c:02X}").as_bytes());
                        }
                    }
                } else {
                    value.extend_from_slice(v);
                }
            }
            let key = [group[0].0.as_slice(), if have_ext { b"*" } else { b"" }].concat();
            out.push((key, value));
        }
        i = j;
    }
    out
}

/// Content-Language: a comma-separated list of tags.
fn languages(v: &[u8]) -> Vec<IString<'static>> {
    let mut lx = Lex::new(v);
    let mut out = Vec::new();
    loop {
        lx.cfws();
        let tag = lx.run(is_atext);
        if tag.is_empty() {
            break;
        }
        out.push(istr(tag.to_vec()));
        lx.cfws();
        if lx.peek() != Some(b',') {
            break;
        }
        lx.i += 1;
    }
    out
}

fn pairs(p: Params) -> Vec<(IString<'static>, IString<'static>)> {
    p.into_iter().map(|(k, v)| (istr(k), istr(v))).collect()
}

fn is_token(c: u8) -> bool {
    c > b' ' && c != 0x7f && !b"()<>@,;:\\\"/[]?=".contains(&c)
}

#[cfg(test)]
mod tests {
    use crate::mime::view::tests::{bs, get, lines, mixed, text};

    #[test]
    fn multipart_with_attachment() {
        let (m, [t_mime, t, a_mime, a]) = mixed();
        let text_part = format!(
            r#"("TEXT" "plain" ("charset" "UTF-8" "format" "flowed") NIL NIL "7bit" {} {} NIL NIL NIL NIL)"#,
            t.len(),
            lines(t)
        );
        let pdf = format!(
            r#"("application" "pdf" ("name" "report.pdf") NIL NIL "base64" {} NIL ("attachment" ("filename" "report.pdf" "size" "42")) NIL NIL)"#,
            a.len()
        );
        let ext = r#""mixed" ("boundary" "=-b1") NIL NIL NIL"#;
        assert_eq!(bs(&m, true), format!("({text_part}{pdf} {ext})"));
        assert_eq!(text(&m, "1"), t);
        assert_eq!(text(&m, "1.MIME"), t_mime);
        assert_eq!(text(&m, "2"), a);
        assert_eq!(text(&m, "2.MIME"), a_mime);
        assert!(text(&m, "TEXT").starts_with("This is a MIME message.\r\n--=-b1\r\n"));
        assert!(text(&m, "TEXT").ends_with("--=-b1--\r\nepilogue\r\n"));
        assert_eq!(text(&m, "1.1"), t); // Dovecot: `1` of a leaf is the leaf itself
        for missing in ["3", "1.1.1", "2.HEADER", "1.TEXT"] {
            assert_eq!(get(&m, missing), None, "{missing}");
        }
    }

    #[test]
    fn nested_alternative_and_message() {
        let (p_mime, p) = (
            "Content-Type: text/plain; charset=us-ascii\r\n\r\n",
            "plain\r\nversion",
        );
        let (h_mime, h) = ("Content-Type: text/html\r\n\r\n", "<p>html</p>\r\n");
        let alt_mime = "Content-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n";
        let alt = format!("--alt\r\n{p_mime}{p}\r\n--alt\r\n{h_mime}{h}\r\n--alt--\r\n");
        let msg_mime = "Content-Type: message/rfc822\r\nContent-Description: forwarded\r\n\r\n";
        let inner_hdr = "From: Eve <eve@example.org>\r\nSubject: inner\r\n\
            Date: Tue, 2 Jan 2024 08:00:00 +0100\r\nMessage-ID: <in@example.org>\r\n\
            MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=inner\r\n\r\n";
        let inner_body = "--inner\r\n\r\ninner text\r\n--inner\r\n\
            Content-Type: application/octet-stream\r\n\r\nAAAA\r\n--inner--\r\n";
        let inner = format!("{inner_hdr}{inner_body}");
        let img_mime = "Content-Type: image/png; name=\"dot.png\"\r\n\
            Content-Transfer-Encoding: base64\r\nContent-ID: <dot@example.org>\r\n\
            Content-Description: a dot\r\n\
            Content-Disposition: inline; filename*=utf-8''d%C3%B6t.png\r\n\
            Content-Language: en, de-CH\r\nContent-Location: http://example.org/dot.png\r\n\r\n";
        let img = "iVBORw0KGgo=";
        let m = format!(
            "From: Carol <carol@example.com>\r\nSubject: nested\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=outer\r\n\r\n\
             --outer\r\n{alt_mime}{alt}--outer\r\n{msg_mime}{inner}\r\n\
             --outer\r\n{img_mime}{img}\r\n--outer--\r\n"
        );
        let m = m.as_bytes();
        let none4 = "NIL NIL NIL NIL";
        let plain = format!(
            r#"("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" {} {} {none4})"#,
            p.len(),
            lines(p)
        );
        let html = format!(
            r#"("TEXT" "html" ("charset" "us-ascii") NIL NIL "7bit" {} {} {none4})"#,
            h.len(),
            lines(h)
        );
        let eve = r#"(("Eve" NIL "eve" "example.org"))"#;
        let inner_env = format!(
            r#"("Tue, 2 Jan 2024 08:00:00 +0100" "inner" {eve} {eve} {eve} NIL NIL NIL NIL "<in@example.org>")"#
        );
        let inner_bs = format!(
            r#"(("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 0 {none4})("application" "octet-stream" NIL NIL NIL "7bit" 4 {none4}) "mixed" ("boundary" "inner") NIL NIL NIL)"#
        );
        let png = format!(
            r#"("image" "png" ("name" "dot.png") "<dot@example.org>" "a dot" "base64" {} NIL ("inline" ("filename*" "utf-8''d%C3%B6t.png")) ("en" "de-CH") "http://example.org/dot.png")"#,
            img.len()
        );
        let expected = format!(
            r#"(({plain}{html} "alternative" ("boundary" "alt") NIL NIL NIL)("MESSAGE" "RFC822" NIL NIL "forwarded" "7bit" {} {inner_env} {inner_bs} {} {none4}){png} "mixed" ("boundary" "outer") NIL NIL NIL)"#,
            inner.len(),
            lines(&inner)
        );
        assert_eq!(bs(m, true), expected);
        let sections = [
            ("1", alt.as_str()),
            ("1.MIME", alt_mime),
            ("1.1", p),
            ("1.1.MIME", p_mime),
            ("1.1.1", p),
            ("1.2", h),
            ("1.2.MIME", h_mime),
            ("2", &inner),
            ("2.MIME", msg_mime),
            ("2.HEADER", inner_hdr),
            ("2.TEXT", inner_body),
            ("2.1", "inner text"),
            ("2.1.MIME", "\r\n"),
            ("2.1.1", "inner text"),
            ("2.2", "AAAA"),
            ("2.2.MIME", "Content-Type: application/octet-stream\r\n\r\n"),
            ("3", img),
            ("3.1", img),
            ("3.MIME", img_mime),
            (
                "2.HEADER.FIELDS (subject FROM)",
                "From: Eve <eve@example.org>\r\nSubject: inner\r\n\r\n",
            ),
            (
                "2.HEADER.FIELDS.NOT (from subject Date message-id)",
                "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=inner\r\n\r\n",
            ),
        ];
        for (spec, want) in sections {
            assert_eq!(text(m, spec), want, "{spec}");
        }
        for missing in [
            "4",
            "1.3",
            "2.3",
            "1.HEADER",
            "3.TEXT",
            "2.1.HEADER",
            "1.1.1.1",
            "3.1.1",
        ] {
            assert_eq!(get(m, missing), None, "{missing}");
        }
    }

    #[test]
    fn dovecot_quirks() {
        let mp = |body: &str| {
            let h = "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=q\r\n\r\n";
            format!("{h}{body}").into_bytes()
        };
        let tp = r#""TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit""#;
        // A boundary line ends a header; the CRLF before it goes with the boundary, also
        // when it is the empty line.
        let m =
            mp("--q\r\nContent-Type: text/plain\r\n--q\r\nX: y\r\n\r\n--q\r\n\r\nz\r\n--q--\r\n");
        assert_eq!(text(&m, "1.MIME"), "Content-Type: text/plain");
        assert_eq!(
            (text(&m, "1"), text(&m, "2.MIME"), text(&m, "3")),
            ("".into(), "X: y\r\n".into(), "z".into())
        );
        // Boundaries match as prefixes, the innermost wins a tie, and a closed one no
        // longer counts; its epilogue belongs to its multipart.
        let m = mp(
            "--q\r\nContent-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n\r\ninner\r\n\
            --q--\r\nafter\r\n--q   \r\n\r\nsecond\r\n--q--\r\n",
        );
        assert_eq!(
            bs(&m, false),
            format!(r#"((({tp} 5 0) "mixed")({tp} 6 0) "mixed")"#)
        );
        assert_eq!(text(&m, "1"), "--q\r\n\r\ninner\r\n--q--\r\nafter");
        // A multipart without parts shows one empty text/plain part, which BODY[1] is not.
        let empty = format!("({tp} 0 0 NIL NIL NIL NIL)");
        for m in [
            mp("no parts\r\n"),
            mp("--q--\r\n"),
            b"Content-Type: multipart/mixed\r\n\r\n--q\r\n\r\nx\r\n".to_vec(),
        ] {
            let params = if m.starts_with(b"MIME") {
                r#"("boundary" "q")"#
            } else {
                "NIL"
            };
            assert_eq!(
                bs(&m, true),
                format!(r#"({empty} "mixed" {params} NIL NIL NIL)"#)
            );
            assert_eq!(get(&m, "1"), None);
        }
        // A boundary line cut off by the end of the message opens no part.
        assert_eq!(
            bs(&mp("--q\r\n\r\na\r\n--q"), false),
            format!(r#"(({tp} 1 0) "mixed")"#)
        );
        // Parts of a multipart/digest are message/rfc822 by default.
        let m = b"Content-Type: multipart/digest; boundary=q\r\n\r\n--q\r\n\r\nSubject: d1\r\n\r\nbody1\r\n--q--\r\n";
        let env = "(NIL \"d1\" NIL NIL NIL NIL NIL NIL NIL NIL)";
        assert_eq!(
            bs(m, false),
            format!(r#"(("MESSAGE" "RFC822" NIL NIL NIL "7bit" 20 {env} ({tp} 5 0) 2) "digest")"#)
        );
        // Broken Content-Type and -Transfer-Encoding, RFC 2231, and no MIME at all.
        let one = |hdr: &str| bs(format!("{hdr}\r\n\r\nbody\r\n").as_bytes(), false);
        assert_eq!(
            one("Content-Type: text/plain garbage"),
            r#"("" "" NIL NIL NIL "7bit" 6)"#
        );
        assert_eq!(
            one("Content-Type: text/plain\r\nContent-Transfer-Encoding: 8 bit"),
            format!("({tp} 6 1)")
        );
        assert_eq!(
            one(r#"Content-Type: application/x; b*1*=%41; b*0*=utf-8''; a="q\""; c*=x"#),
            r#"("application" "x" ("a" "q\"" "b*" "utf-8''%41" "c*" "x") NIL NIL "7bit" 6)"#
        );
        assert_eq!(
            one("Content-ID: <x@y>\r\nContent-Transfer-Encoding: base64"),
            format!("({tp} 6 1)")
        );
        // NUL in a section is sent as 0x80.
        assert_eq!(
            get(b"Subject: x\r\n\r\na\0b", "TEXT").as_deref(),
            Some(&b"a\x80b"[..])
        );
    }
}
