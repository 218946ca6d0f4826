//! ENVELOPE (RFC 3501 §7.4.2) of a header, with a lenient parser for RFC 5322 §3.4
//! address lists (and the obsolete routes of §4.4), tolerant of broken input as Dovecot is.

use imap_types::envelope::{Address, Envelope};

use super::{is_atext, nolf, nstr, Fields, Lex};

pub(super) fn envelope_of(header: &[u8]) -> Envelope<'static> {
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

#[cfg(test)]
mod tests {
    use crate::mime::view::envelope;
    use crate::mime::view::tests::env;

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
}
