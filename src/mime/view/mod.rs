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
        match phrase(&mut lx) {
            (name, _, true) if lx.peek() == Some(b':') => group(&mut lx, name, out),
            _ => {
                lx.i = save;
                mailbox(&mut lx, out);
            }
        }
        lx.cfws();
        if lx.peek() != Some(b',') {
            break;
        }
        lx.i += 1;
    }
}

/// `name ":" [mailbox *("," mailbox)] [";"]`, as RFC 3501 writes it: a start marker
/// (mailbox = name, host NIL), the members, an end marker (all NIL).
fn group(lx: &mut Lex<'_>, name: Vec<u8>, out: &mut Vec<Address<'static>>) {
    lx.i += 1;
    out.push(address(None, None, Some(name), None));
    lx.cfws();
    match lx.peek() {
        Some(b';') => lx.i += 1,
        Some(_) => loop {
            mailbox(lx, out);
            lx.cfws();
            match lx.peek() {
                Some(b',') => {
                    lx.i += 1;
                    lx.cfws();
                    if lx.peek().is_none() {
                        break;
                    }
                }
                Some(b';') => {
                    lx.i += 1;
                    break;
                }
                _ => break,
            }
        },
        None => {}
    }
    out.push(address(None, None, None, None));
}

/// `[phrase] "<" [route ":"] addr-spec ">"` or `addr-spec [(comment)]`.
fn mailbox(lx: &mut Lex<'_>, out: &mut Vec<Address<'static>>) {
    let save = lx.i;
    if let ((name, _, true), Some(b'<')) = (phrase(lx), lx.peek()) {
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
        let (local, _, host) = addr_spec(lx);
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
    let (local, quoted, host) = addr_spec(lx);
    let comment = std::mem::take(&mut lx.comment);
    if host.is_some() || !comment.is_empty() {
        out.push(filled(Some(comment), None, local, host));
        return;
    }
    // A local part without domain: with more words after it, or quoted, it was a
    // display name.
    let more = phrase(lx).0;
    if more.is_empty() && !quoted {
        out.push(filled(None, None, local, None));
    } else {
        let name = if more.is_empty() {
            local
        } else {
            [local, more].join(&b' ')
        };
        out.push(filled(Some(name), None, Vec::new(), None));
    }
}

/// `local-part ["@" domain]`, followed by CFWS (whose last comment is kept); also
/// whether the local part was a quoted string. Stray dots are tolerated.
fn addr_spec(lx: &mut Lex<'_>) -> (Vec<u8>, bool, Option<Vec<u8>>) {
    let (mut local, mut word, mut quoted) = (Vec::new(), false, false);
    loop {
        lx.cfws();
        match lx.peek() {
            Some(b'.') => {
                lx.i += 1;
                local.push(b'.');
                word = false;
                lx.cfws();
                if lx.peek().is_some_and(|c| c != b'"' && !is_atext(c)) {
                    // A dot before junk: not an address (Dovecot).
                    return (Vec::new(), false, None);
                }
            }
            Some(b'"') if !word => {
                let (q, closed) = lx.quoted();
                if !closed {
                    return (Vec::new(), false, None);
                }
                quoted = local.is_empty();
                local.extend(q);
                word = true;
            }
            Some(c) if is_atext(c) && !word => {
                local.extend_from_slice(lx.run(is_atext));
                word = true;
            }
            _ => break,
        }
    }
    let host = (lx.peek() == Some(b'@')).then(|| {
        lx.i += 1;
        domain(lx)
    });
    lx.cfws();
    (local, quoted, host)
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

/// Words (atoms, possibly with dots, and quoted strings) joined by single spaces, how
/// many there were, and whether that was a valid phrase (no leading dot, no unclosed
/// quote, which ends it).
fn phrase(lx: &mut Lex<'_>) -> (Vec<u8>, usize, bool) {
    let mut out = Vec::new();
    let mut words = 0;
    loop {
        lx.cfws();
        let word = match lx.peek() {
            Some(b'.') if words == 0 => return (out, 0, false),
            Some(b'"') => match lx.quoted() {
                (w, true) => w,
                (_, false) => return (out, words, false),
            },
            Some(c) if is_atext(c) || c == b'.' => lx.run(|c| is_atext(c) || c == b'.').to_vec(),
            _ => return (out, words, true),
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

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::decode::Decoder;
    use imap_codec::encode::Encoder;
    use imap_codec::{CommandCodec, ResponseCodec};
    use imap_types::command::CommandBody;
    use imap_types::fetch::{MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName};
    use imap_types::response::{Data, Response};

    /// `BODY[<spec>]` of `msg`, the section parsed by imap-codec.
    fn get(msg: &[u8], spec: &str) -> Option<Vec<u8>> {
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

    fn text(msg: &[u8], spec: &str) -> String {
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
    fn bs(msg: &[u8], ext: bool) -> String {
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

    fn env(msg: &[u8]) -> String {
        let s = wire(vec![MessageDataItem::Envelope(envelope(msg))]);
        s["* 1 FETCH (ENVELOPE ".len()..s.len() - 3].to_string()
    }

    fn lines(s: &str) -> usize {
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
    fn mixed() -> (Vec<u8>, [&'static str; 4]) {
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
    fn envelope_fields() {
        let m = "Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nSubject: first\r\n\
            Subject:  =?UTF-8?Q?h=C3=A9llo?=\r\n  \tfolded   twice \r\n\
            From: \"Doe, J. \\\"JD\\\"\" <j.doe@example.org>, x@y (Comment Name)\r\n\
            From: undisclosed-recipients:;\r\nTo: Team: a@b, B <c@d>;, <@r1,@r2:e@f>\r\n\
            Cc: nodomain, <>, broken <x, ok@x\r\nBcc: \"\" <q@r>, Jörg <j@x>\r\n\
            In-Reply-To: <a@b>  <c@d>\r\nMessage-ID:  <m@id> \r\n\r\nbody\r\n";
        let from = r#"(("Doe, J. \"JD\"" NIL "j.doe" "example.org")("Comment Name" NIL "x" "y")(NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL))"#;
        let want = format!(
            "(\"Mon, 1 Jan 2024 10:00:00 +0000\" \"=?UTF-8?Q?h=C3=A9llo?= folded twice\" {from} {from} {from} \
             ((NIL NIL \"Team\" NIL)(NIL NIL \"a\" \"b\")(\"B\" NIL \"c\" \"d\")(NIL NIL NIL NIL)(NIL \"@r1,@r2\" \"e\" \"f\")) \
             ((NIL NIL \"nodomain\" \"MISSING_DOMAIN\")(NIL NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")\
             (\"broken\" NIL \"x\" \"SYNTAX_ERROR\")(NIL NIL \"ok\" \"x\")) \
             ((NIL NIL \"q\" \"r\")({{5}}\r\nJörg NIL \"j\" \"x\")) \"<a@b>  <c@d>\" \"<m@id> \")"
        );
        assert_eq!(env(m.as_bytes()), want);
        // Sender and Reply-To fall back to From; nothing at all is NIL.
        let e = envelope(b"Sender: s@t\r\n\r\n");
        assert_eq!((e.from.len(), e.sender.len(), e.reply_to.len()), (0, 1, 0));
        assert_eq!(
            env(b"\r\nno header"),
            "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
        );
        // NUL cannot go into an IMAP string: it becomes U+FFFD (as in Dovecot).
        assert_eq!(
            env(b"Subject: a\0b\r\n\r\n"),
            "(NIL {5}\r\na\u{FFFD}b NIL NIL NIL NIL NIL NIL NIL NIL)"
        );
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
