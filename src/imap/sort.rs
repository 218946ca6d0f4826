//! SORT (RFC 5256) of messages some of which are shown through views: the sort keys
//! of each message, read from what the client sees of it, and their order.
//!
//! Strings are compared the way Dovecot compares them for SORT (i;unicode-casemap: each
//! character's titlecase, decomposed, compared as bytes); SUBJECT compares the
//! base subject (RFC 5256 §2.1); FROM, TO and CC the local part of the field's first
//! address; DATE the Date field in UTC, or the internal date when there is no readable
//! Date; ties are broken by sequence number (§3).

use crate::search::Doc;
use imap_types::extensions::sort::{SortCriterion, SortKey};
use std::cmp::Ordering;

/// What a message sorts by that its header and size tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortFields {
    subject: String,
    from: String,
    to: String,
    cc: String,
    /// The Date field in seconds since the epoch, UTC, when readable.
    date: Option<i64>,
    size: u32,
}

impl SortFields {
    /// From a message's header fields (and size), as `doc` holds them.
    pub fn of(doc: &Doc) -> SortFields {
        let field = |name: &str| {
            doc.fields
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        SortFields {
            subject: casemap(&base_subject(field("Subject").unwrap_or(""))),
            from: casemap(&first_mailbox(field("From").unwrap_or(""))),
            to: casemap(&first_mailbox(field("To").unwrap_or(""))),
            cc: casemap(&first_mailbox(field("Cc").unwrap_or(""))),
            date: field("Date")
                .and_then(|d| mail_parser::DateTime::parse_rfc822(d.trim()))
                .filter(|d| d.is_valid())
                .map(|d| d.to_timestamp()),
            size: doc.size,
        }
    }
}

/// What a message is sorted by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKeys {
    pub seq: u32,
    pub uid: u32,
    fields: SortFields,
    /// The Date field, else the internal date (seconds since the epoch, UTC).
    date: i64,
    arrival: i64,
}

impl SortKeys {
    /// The keys of a message with its internal date (seconds since the epoch) and
    /// numbers.
    pub fn new(fields: SortFields, arrival: i64, seq: u32, uid: u32) -> SortKeys {
        SortKeys {
            seq,
            uid,
            date: fields.date.unwrap_or(arrival),
            fields,
            arrival,
        }
    }

    /// The keys of a message whose header (and size) `doc` holds.
    pub fn of(doc: &Doc, arrival: i64, seq: u32, uid: u32) -> SortKeys {
        SortKeys::new(SortFields::of(doc), arrival, seq, uid)
    }
}

/// Orders `items` by `criteria`, then by sequence number.
pub fn sort(items: &mut [SortKeys], criteria: &[SortCriterion]) {
    items.sort_by(|a, b| {
        for c in criteria {
            let o = match c.key {
                SortKey::Arrival => a.arrival.cmp(&b.arrival),
                SortKey::Cc => a.fields.cc.cmp(&b.fields.cc),
                SortKey::Date => a.date.cmp(&b.date),
                SortKey::From | SortKey::DisplayFrom => a.fields.from.cmp(&b.fields.from),
                SortKey::Size => a.fields.size.cmp(&b.fields.size),
                SortKey::Subject => a.fields.subject.cmp(&b.fields.subject),
                SortKey::To | SortKey::DisplayTo => a.fields.to.cmp(&b.fields.to),
            };
            let o = if c.reverse { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        a.seq.cmp(&b.seq)
    });
}

/// i;unicode-casemap as Dovecot applies it to sort keys: titlecase, decomposed, the
/// same folding SEARCH uses.
fn casemap(s: &str) -> String {
    crate::search::fold::fold(s)
}

/// The local part of the first address of an address field's (decoded) value; empty
/// when there is none.
fn first_mailbox(value: &str) -> String {
    let addr = match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value
            .split([',', ' ', '\t'])
            .find(|t| t.contains('@'))
            .unwrap_or(""),
    };
    let addr = addr.trim();
    // A source route (`<@relay:user@host>`) is not part of the mailbox.
    let addr = addr.rsplit_once(':').map_or(addr, |(_, a)| a);
    addr.rsplit_once('@')
        .map_or(addr, |(local, _)| local)
        .trim_matches('"')
        .to_string()
}

fn is_wsp(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// The base subject of RFC 5256 §2.1: reply and forward markers, blobs (`[list]`) and
/// `(fwd)` trailers removed, whitespace collapsed.
pub fn base_subject(subject: &str) -> String {
    // (1) Whitespace runs, tabs and line ends become one space.
    let mut s = String::with_capacity(subject.len());
    for c in subject.chars() {
        let c = if c == '\r' || c == '\n' || c == '\t' {
            ' '
        } else {
            c
        };
        if c == ' ' && s.ends_with(' ') {
            continue;
        }
        s.push(c);
    }
    loop {
        // (2) Trailing "(fwd)" and whitespace.
        loop {
            let t = s.trim_end_matches(is_wsp);
            let lower = t.to_ascii_lowercase();
            if lower.ends_with("(fwd)") {
                s = t[..t.len() - 5].to_string();
            } else {
                s = t.to_string();
                break;
            }
        }
        // (3)-(5) Leaders, and blobs that leave something behind.
        loop {
            if let Some(rest) = strip_leader(&s) {
                s = rest.to_string();
                continue;
            }
            match strip_blob(&s) {
                Some(rest) if !rest.is_empty() => s = rest.to_string(),
                _ => break,
            }
        }
        // (6) A "[fwd: ...]" wrapper.
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("[fwd:") && s.ends_with(']') && s.len() >= 6 {
            s = s[5..s.len() - 1].to_string();
            continue;
        }
        return s;
    }
}

/// `subj-blob = "[" *BLOBCHAR "]" *WSP` at the start of `s`: what follows it.
fn strip_blob(s: &str) -> Option<&str> {
    let rest = s.strip_prefix('[')?;
    let end = rest.find([']', '['])?;
    if rest.as_bytes()[end] != b']' {
        return None;
    }
    Some(rest[end + 1..].trim_start_matches(is_wsp))
}

/// `subj-leader = (*subj-blob subj-refwd) / WSP` at the start of `s`: what follows it.
fn strip_leader(s: &str) -> Option<&str> {
    if s.starts_with(is_wsp) {
        return Some(&s[1..]);
    }
    let mut rest = s;
    while let Some(after) = strip_blob(rest) {
        rest = after;
    }
    let lower = rest.to_ascii_lowercase();
    let marker = ["re", "fwd", "fw"]
        .into_iter()
        .find(|m| lower.starts_with(m))?;
    let mut rest = rest[marker.len()..].trim_start_matches(is_wsp);
    if let Some(after) = strip_blob(rest) {
        rest = after;
    }
    rest.strip_prefix(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_subjects() {
        for (subject, base) in [
            ("Re: hello", "hello"),
            ("RE: re: Fwd: hello", "hello"),
            ("[list] Re: [other] hello", "hello"),
            ("Re [2]: hello (fwd)", "hello"),
            ("[Fwd: Re: hello]", "hello"),
            ("hello  \t (fwd) (FWD)", "hello"),
            ("[only a blob]", "[only a blob]"),
            ("Reply to this", "Reply to this"),
            ("  spaced   out  ", "spaced out"),
            ("", ""),
        ] {
            assert_eq!(base_subject(subject), base, "{subject:?}");
        }
    }

    #[test]
    fn mailboxes() {
        assert_eq!(first_mailbox("Alice Martin <alice@example.com>"), "alice");
        assert_eq!(first_mailbox("\"Lee, Bob\" <bob@x.org>, c@y"), "bob");
        assert_eq!(first_mailbox("carol@example.org"), "carol");
        assert_eq!(first_mailbox("undisclosed-recipients:;"), "");
    }

    fn doc(subject: &str, from: &str, date: &str, size: u32) -> Doc {
        Doc {
            fields: vec![
                ("Subject".into(), subject.into()),
                ("From".into(), from.into()),
                ("Date".into(), date.into()),
            ],
            size,
            ..Doc::default()
        }
    }

    #[test]
    fn orders_by_criteria_then_sequence() {
        let d = [
            doc("Re: beta", "zed@x", "Tue, 01 Dec 2026 10:00:00 +0100", 30),
            doc("alpha", "amy@x", "Tue, 01 Dec 2026 09:30:00 +0000", 10),
            doc("Beta", "bob@x", "garbage", 20),
        ];
        let mut keys: Vec<SortKeys> = d
            .iter()
            .enumerate()
            .map(|(i, d)| SortKeys::of(d, 1_000 + i as i64, i as u32 + 1, i as u32 + 10))
            .collect();
        let by = |key, reverse| SortCriterion { reverse, key };
        sort(&mut keys, &[by(SortKey::Subject, false)]);
        assert_eq!(keys.iter().map(|k| k.seq).collect::<Vec<_>>(), [2, 1, 3]);
        // An unreadable Date sorts by the internal date (1002, far before 2026).
        sort(&mut keys, &[by(SortKey::Date, false)]);
        assert_eq!(keys.iter().map(|k| k.seq).collect::<Vec<_>>(), [3, 1, 2]);
        sort(&mut keys, &[by(SortKey::Size, true)]);
        assert_eq!(keys.iter().map(|k| k.seq).collect::<Vec<_>>(), [1, 3, 2]);
        sort(&mut keys, &[by(SortKey::From, false)]);
        assert_eq!(keys.iter().map(|k| k.seq).collect::<Vec<_>>(), [2, 3, 1]);
    }
}
