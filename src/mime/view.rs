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
//!   a tie); the CRLF before a boundary line belongs to the boundary. A boundary line
//!   inside a part's header ends the header (whose last CRLF then goes to the boundary).
//!   After `--boundary--` the boundary is forgotten; the epilogue runs to the next
//!   enclosing boundary. Nesting deeper than [`MAX_DEPTH`] is reported as text/plain.
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
use std::ops::Range;

use imap_types::body::{
    BasicFields, Body, BodyStructure, Disposition, Language, Location, MultiPartExtensionData,
    SinglePartExtensionData, SpecificFields,
};
use imap_types::core::{AString, IString, NString, Quoted, Vec1};
use imap_types::envelope::{Address, Envelope};
use imap_types::fetch::Section;

use super::{fields, push_line, split_message, to_crlf};

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
    let mut out = section_raw(&to_crlf(msg), section)?;
    for b in out.iter_mut().filter(|b| **b == 0) {
        *b = 0x80;
    }
    Some(out)
}

fn section_raw(m: &[u8], section: Option<&Section<'_>>) -> Option<Vec<u8>> {
    let Some(section) = section else {
        return Some(m.to_vec());
    };
    let root = parse(m);
    let (path, what, names) = match section {
        Section::Part(p) => (Some(p), What::Body, None),
        Section::Mime(p) => (Some(p), What::Mime, None),
        Section::Header(p) => (p.as_ref(), What::Header, None),
        Section::Text(p) => (p.as_ref(), What::Text, None),
        Section::HeaderFields(p, n) => (p.as_ref(), What::Fields, Some(n.as_ref())),
        Section::HeaderFieldsNot(p, n) => (p.as_ref(), What::FieldsNot, Some(n.as_ref())),
    };
    let mut node = &root;
    if let Some(path) = path {
        node = find(&root, path.0.as_ref())?;
        if !matches!(what, What::Body | What::Mime) {
            // HEADER, TEXT and HEADER.FIELDS below the top need a message/rfc822 part.
            let Kind::Msg(child) = &node.kind else {
                return None;
            };
            node = child;
        }
    }
    Some(match what {
        What::Body | What::Text => m[node.body.clone()].to_vec(),
        What::Mime | What::Header => m[node.hdr.clone()].to_vec(),
        What::Fields | What::FieldsNot => {
            let not = what == What::FieldsNot;
            header_fields(m, node, names.unwrap_or(&[]), not, path.is_none())
        }
    })
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

// ---------------------------------------------------------------------------------
// The part tree.

/// One entity: header region (with its empty line), body region, what it contains.
struct Node {
    hdr: Range<usize>,
    /// The empty line after the fields (empty if none); its start ends the fields. It
    /// lies outside `hdr` when a boundary line follows it directly.
    blank: Range<usize>,
    body: Range<usize>,
    /// Content-* fields apply.
    mime: bool,
    /// The Content-Type in effect; `None` means the default.
    ct: Option<Ctype>,
    /// Without Content-Type this is message/rfc822 (a multipart/digest child).
    digest_default: bool,
    kind: Kind,
}

enum Kind {
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

fn parse(m: &[u8]) -> Node {
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
    /// ends for an enclosing message/rfc822 part (Dovecot counts the CRLF before a
    /// boundary that cut a header into the message/rfc822 body).
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

// ---------------------------------------------------------------------------------
// BODYSTRUCTURE.

fn structure(m: &[u8], n: &Node, ext: bool) -> BodyStructure<'static> {
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

type Params = Vec<(Vec<u8>, Vec<u8>)>;

struct Ctype {
    ty: Vec<u8>,
    sub: Vec<u8>,
    params: Params,
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

fn param<'p>(params: &'p Params, name: &[u8]) -> Option<&'p [u8]> {
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

// ---------------------------------------------------------------------------------
// ENVELOPE.

fn envelope_of(header: &[u8]) -> Envelope<'static> {
    let h = Fields::new(header);
    let last = |name: &[u8]| h.all(name).last();
    let list = |name: &[u8]| {
        let mut out = Vec::new();
        for v in h.all(name) {
            address_list(v, &mut out);
        }
        out
    };
    let from = list(b"from");
    let or_from = |l: Vec<Address<'static>>| if l.is_empty() { from.clone() } else { l };
    Envelope {
        date: nstr(last(b"date").map(nolf)),
        subject: nstr(last(b"subject").map(humans)),
        sender: or_from(list(b"sender")),
        reply_to: or_from(list(b"reply-to")),
        to: list(b"to"),
        cc: list(b"cc"),
        bcc: list(b"bcc"),
        in_reply_to: nstr(last(b"in-reply-to").map(nolf)),
        message_id: nstr(last(b"message-id").map(nolf)),
        from,
    }
}

/// `address *("," address)`; an empty entry before a comma reads as a missing address,
/// anything unparsable ends the list (as in Dovecot).
fn address_list(v: &[u8], out: &mut Vec<Address<'static>>) {
    let mut lx = Lex::new(v);
    loop {
        lx.cfws();
        if lx.peek().is_none() {
            break;
        }
        let save = lx.i;
        let (group, words) = phrase(&mut lx);
        if words > 0 && lx.peek() == Some(b':') {
            // RFC 3501: group start (mailbox = name, host NIL) … end (all NIL).
            lx.i += 1;
            out.push(address(None, None, Some(group), None));
            loop {
                lx.cfws();
                match lx.peek() {
                    None => break,
                    Some(b';') => {
                        lx.i += 1;
                        break;
                    }
                    Some(b',') => lx.i += 1,
                    Some(_) => {
                        let at = lx.i;
                        mailbox(&mut lx, out);
                        if lx.i == at {
                            break;
                        }
                    }
                }
            }
            out.push(address(None, None, None, None));
        } else {
            lx.i = save;
            mailbox(&mut lx, out);
        }
        lx.cfws();
        if lx.peek() != Some(b',') {
            break;
        }
        lx.i += 1;
    }
}

/// `[phrase] "<" [route ":"] addr-spec ">"` or `addr-spec [(comment)]`.
fn mailbox(lx: &mut Lex<'_>, out: &mut Vec<Address<'static>>) {
    let save = lx.i;
    let (name, words) = phrase(lx);
    let phrase_end = lx.i;
    if lx.peek() == Some(b'<') {
        lx.i += 1;
        lx.cfws();
        let mut route = Vec::new();
        while lx.peek() == Some(b'@') {
            lx.i += 1;
            if !route.is_empty() {
                route.push(b',');
            }
            route.push(b'@');
            route.extend(domain(lx));
            lx.cfws();
            if lx.peek() == Some(b',') {
                lx.i += 1;
                lx.cfws();
            }
        }
        if !route.is_empty() && lx.peek() == Some(b':') {
            lx.i += 1;
        }
        let (local, host) = addr_spec(lx);
        let host = if lx.peek() == Some(b'>') {
            lx.i += 1;
            host
        } else {
            Some(b"SYNTAX_ERROR".to_vec())
        };
        out.push(filled(Some(name), Some(route), local, host));
        return;
    }
    lx.i = save;
    lx.comment.clear();
    let (local, host) = addr_spec(lx);
    if host.is_none() && words > 1 {
        // "foo bar": a display name without an address.
        lx.i = phrase_end;
        out.push(filled(Some(name), None, Vec::new(), None));
    } else {
        let comment = std::mem::take(&mut lx.comment);
        out.push(filled(Some(comment), None, local, host));
    }
}

/// `local-part ["@" domain]`, followed by CFWS (whose last comment is kept).
fn addr_spec(lx: &mut Lex<'_>) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut local = Vec::new();
    loop {
        lx.cfws();
        match lx.peek() {
            Some(b'"') => local.extend(lx.quoted().0),
            Some(c) if is_atext(c) => local.extend_from_slice(lx.run(is_atext)),
            _ => break,
        }
        lx.cfws();
        if lx.peek() != Some(b'.') {
            break;
        }
        lx.i += 1;
        local.push(b'.');
    }
    let host = (lx.peek() == Some(b'@')).then(|| {
        lx.i += 1;
        domain(lx)
    });
    lx.cfws();
    (local, host)
}

/// A dot-atom or a domain literal.
fn domain(lx: &mut Lex<'_>) -> Vec<u8> {
    lx.cfws();
    let mut out = Vec::new();
    if lx.peek() == Some(b'[') {
        while let Some(c) = lx.peek() {
            lx.i += 1;
            if !matches!(c, b'\r' | b'\n') {
                out.push(c);
            }
            if c == b']' {
                break;
            }
        }
        return out;
    }
    loop {
        out.extend_from_slice(lx.run(is_atext));
        lx.cfws();
        if lx.peek() != Some(b'.') {
            return out;
        }
        lx.i += 1;
        out.push(b'.');
        lx.cfws();
    }
}

/// Words (atoms, possibly with dots, and quoted strings) joined by single spaces, and
/// how many there were.
fn phrase(lx: &mut Lex<'_>) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut words = 0;
    loop {
        lx.cfws();
        let word = match lx.peek() {
            Some(b'"') => lx.quoted().0,
            Some(c) if is_atext(c) || c == b'.' => lx.run(|c| is_atext(c) || c == b'.').to_vec(),
            _ => return (out, words),
        };
        if words > 0 {
            out.push(b' ');
        }
        out.extend(word);
        words += 1;
    }
}

fn filled(
    name: Option<Vec<u8>>,
    adl: Option<Vec<u8>>,
    local: Vec<u8>,
    host: Option<Vec<u8>>,
) -> Address<'static> {
    let or = |v: Vec<u8>, d: &[u8]| Some(if v.is_empty() { d.to_vec() } else { v });
    let name = name.map(|n| humans(&n)).filter(|n| !n.is_empty());
    let host = or(host.unwrap_or_default(), b"MISSING_DOMAIN");
    address(
        name,
        adl.filter(|a| !a.is_empty()),
        or(local, b"MISSING_MAILBOX"),
        host,
    )
}

fn address(
    name: Option<Vec<u8>>,
    adl: Option<Vec<u8>>,
    mailbox: Option<Vec<u8>>,
    host: Option<Vec<u8>>,
) -> Address<'static> {
    Address {
        name: nstr(name),
        adl: nstr(adl),
        mailbox: nstr(mailbox),
        host: nstr(host),
    }
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

/// For humans (subject, names): whitespace runs become one space, trimmed.
fn humans(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut space = false;
    for &b in v {
        if matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
            space = !out.is_empty();
        } else {
            if space {
                out.push(b' ');
                space = false;
            }
            out.push(b);
        }
    }
    out
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

fn pairs(p: Params) -> Vec<(IString<'static>, IString<'static>)> {
    p.into_iter().map(|(k, v)| (istr(k), istr(v))).collect()
}

fn is_token(c: u8) -> bool {
    c > b' ' && c != 0x7f && !b"()<>@,;:\\\"/[]?=".contains(&c)
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
