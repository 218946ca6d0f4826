//! SEARCH criteria judged here for encrypted messages, whole: content criteria on the
//! view (through the matches the job worked out), everything else on the state upstream
//! reported for the message (flags, internal date, numbers, MODSEQ). Nothing of what is
//! judged here is told to upstream, which therefore never learns which encrypted
//! message contains what (RFC 3501 §6.4.4, RFC 7162 §3.1.5, RFC 5032).

use crate::search::Leaf;
use imap_types::search::SearchKey;
use imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use std::collections::BTreeSet;

/// What upstream reported of one message: `UID FETCH … (UID FLAGS INTERNALDATE [MODSEQ])`.
#[derive(Debug, Clone)]
pub struct MsgState {
    pub seq: u32,
    pub uid: u32,
    /// As reported (`\Seen`, keywords), compared case-insensitively.
    pub flags: Vec<String>,
    pub internal: chrono::DateTime<chrono::FixedOffset>,
    pub modseq: Option<u64>,
}

impl MsgState {
    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
    }
}

/// What `*` stands for (RFC 3501 §9, seq-number): the number of messages, and the
/// highest UID.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stars {
    pub messages: u32,
    pub max_uid: u32,
}

/// What is known of one message while judging it: its numbers always, its state once
/// fetched.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub seq: u32,
    pub uid: u32,
    pub stars: Stars,
    /// Seconds since the epoch (OLDER, YOUNGER).
    pub now: i64,
    pub state: Option<&'a MsgState>,
}

/// Does `key` (needles in UTF-8) hold for the message? `content` answers a content
/// criterion from its view. `None`: it depends on the state, not fetched yet (Kleene's
/// three-valued logic, so that only the messages it decides are fetched).
pub fn holds(key: &SearchKey<'_>, f: &Facts<'_>, content: &dyn Fn(&Leaf) -> bool) -> Option<bool> {
    if let Some(leaf) = Leaf::from_key(key) {
        return Some(content(&leaf));
    }
    let rec = |k: &SearchKey<'_>| holds(k, f, content);
    let flag = |name: &str| f.state.map(|st| st.has(name));
    let not = |v: Option<bool>| v.map(|b| !b);
    let date = || f.state.map(|st| st.internal.date_naive());
    let age = || f.state.map(|st| f.now - st.internal.timestamp());
    match key {
        SearchKey::And(keys) => {
            let mut all = Some(true);
            for k in keys.as_ref() {
                match rec(k) {
                    Some(false) => return Some(false),
                    None => all = None,
                    Some(true) => {}
                }
            }
            all
        }
        SearchKey::Or(a, b) => match (rec(a), rec(b)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        SearchKey::Not(k) => not(rec(k)),
        SearchKey::All => Some(true),
        SearchKey::Answered => flag("\\Answered"),
        SearchKey::Deleted => flag("\\Deleted"),
        SearchKey::Draft => flag("\\Draft"),
        SearchKey::Flagged => flag("\\Flagged"),
        SearchKey::Seen => flag("\\Seen"),
        SearchKey::Recent => flag("\\Recent"),
        SearchKey::New => f.state.map(|st| st.has("\\Recent") && !st.has("\\Seen")),
        SearchKey::Old => not(flag("\\Recent")),
        SearchKey::Unanswered => not(flag("\\Answered")),
        SearchKey::Undeleted => not(flag("\\Deleted")),
        SearchKey::Undraft => not(flag("\\Draft")),
        SearchKey::Unflagged => not(flag("\\Flagged")),
        SearchKey::Unseen => not(flag("\\Seen")),
        SearchKey::Keyword(k) => flag(k.as_ref()),
        SearchKey::Unkeyword(k) => not(flag(k.as_ref())),
        // The internal date's calendar date, as upstream reported it (RFC 3501: time
        // and zone disregarded).
        SearchKey::Before(d) => date().map(|x| x < *d.as_ref()),
        SearchKey::On(d) => date().map(|x| x == *d.as_ref()),
        SearchKey::Since(d) => date().map(|x| x >= *d.as_ref()),
        SearchKey::Older(secs) => age().map(|a| a > i64::from(secs.get())),
        SearchKey::Younger(secs) => age().map(|a| a <= i64::from(secs.get())),
        SearchKey::SequenceSet(set) => Some(in_set(set, f.seq, f.stars.messages)),
        SearchKey::Uid(set) => Some(in_set(set, f.uid, f.stars.max_uid)),
        SearchKey::ModSequence { modseq, .. } => {
            f.state.map(|st| st.modseq.is_some_and(|m| m >= *modseq))
        }
        // Content criteria are leaves (above); nothing else exists.
        SearchKey::Bcc(_)
        | SearchKey::Body(_)
        | SearchKey::Cc(_)
        | SearchKey::From(_)
        | SearchKey::Header(..)
        | SearchKey::Larger(_)
        | SearchKey::SentBefore(_)
        | SearchKey::SentOn(_)
        | SearchKey::SentSince(_)
        | SearchKey::Smaller(_)
        | SearchKey::Subject(_)
        | SearchKey::Text(_)
        | SearchKey::To(_) => Some(false),
    }
}

/// Is `n` in `set`, `*` standing for `star`? (A range is unordered: `5:2` is `2:5`.)
pub fn in_set(set: &SequenceSet, n: u32, star: u32) -> bool {
    let value = |s: &SeqOrUid| match s {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => star,
    };
    set.0.as_ref().iter().any(|part| match part {
        Sequence::Single(s) => value(s) == n,
        Sequence::Range(a, b) => {
            let (a, b) = (value(a), value(b));
            (a.min(b)..=a.max(b)).contains(&n)
        }
    })
}

/// Does any criterion read what only a message's state tells (flags, internal date,
/// MODSEQ)? Decided from the criteria alone, never from content.
pub fn uses_state(criteria: &[SearchKey<'_>]) -> bool {
    criteria.iter().any(|k| match k {
        SearchKey::And(keys) => uses_state(keys.as_ref()),
        SearchKey::Or(a, b) => {
            uses_state(std::slice::from_ref(a)) || uses_state(std::slice::from_ref(b))
        }
        SearchKey::Not(k) => uses_state(std::slice::from_ref(k)),
        SearchKey::All | SearchKey::SequenceSet(_) | SearchKey::Uid(_) => false,
        k => Leaf::from_key(k).is_none(),
    })
}

/// Does any criterion read MODSEQ (RFC 7162)?
pub fn uses_modseq(criteria: &[SearchKey<'_>]) -> bool {
    criteria.iter().any(|k| match k {
        SearchKey::ModSequence { .. } => true,
        SearchKey::And(keys) => uses_modseq(keys.as_ref()),
        SearchKey::Or(a, b) => {
            uses_modseq(std::slice::from_ref(a)) || uses_modseq(std::slice::from_ref(b))
        }
        SearchKey::Not(k) => uses_modseq(std::slice::from_ref(k)),
        _ => false,
    })
}

/// The answer to the client: `* SEARCH …`, or with `RETURN (…)` (RFC 4731) the
/// `* ESEARCH` line, then the tagged OK.
pub fn answer(
    tag: &str,
    uid: bool,
    return_options: Option<&str>,
    found: &BTreeSet<u32>,
    modseq: Option<u64>,
) -> Vec<u8> {
    let mut out = String::new();
    match return_options {
        None => {
            out.push_str("* SEARCH");
            for n in found {
                out.push_str(&format!(" {n}"));
            }
            if let (Some(m), false) = (modseq, found.is_empty()) {
                // RFC 7162 §3.1.5: the highest MODSEQ of the messages found.
                out.push_str(&format!(" (MODSEQ {m})"));
            }
            out.push_str("\r\n");
        }
        Some(options) => {
            let wanted: Vec<String> = options
                .trim_start_matches("RETURN")
                .trim()
                .trim_matches(['(', ')'])
                .split_whitespace()
                .map(|o| o.to_ascii_uppercase())
                .collect();
            // `RETURN ()` means ALL (RFC 4731 §3.1).
            let want = |o: &str| wanted.iter().any(|w| w == o) || (wanted.is_empty() && o == "ALL");
            out.push_str(&format!("* ESEARCH (TAG \"{tag}\")"));
            if uid {
                out.push_str(" UID");
            }
            if let (Some(min), true) = (found.first(), want("MIN")) {
                out.push_str(&format!(" MIN {min}"));
            }
            if let (Some(max), true) = (found.last(), want("MAX")) {
                out.push_str(&format!(" MAX {max}"));
            }
            if want("ALL") && !found.is_empty() {
                let all: Vec<u32> = found.iter().copied().collect();
                out.push_str(&format!(" ALL {}", super::fetch::format_set(&all)));
            }
            if want("COUNT") {
                out.push_str(&format!(" COUNT {}", found.len()));
            }
            if let (Some(m), false) = (modseq, found.is_empty()) {
                out.push_str(&format!(" MODSEQ {m}"));
            }
            out.push_str("\r\n");
        }
    }
    out.push_str(&format!("{tag} OK SEARCH completed\r\n"));
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::decode::Decoder;

    fn key(text: &str) -> SearchKey<'static> {
        use imap_types::command::CommandBody;
        use imap_types::IntoStatic;
        let line = format!("a UID SEARCH {text}\r\n");
        let (_, c) = imap_codec::CommandCodec::default()
            .decode(line.as_bytes())
            .unwrap();
        let CommandBody::Search { criteria, .. } = c.into_static().body else {
            panic!()
        };
        let mut v = criteria.into_inner();
        if v.len() == 1 {
            v.pop().unwrap()
        } else {
            SearchKey::And(imap_types::core::Vec1::try_from(v).unwrap())
        }
    }

    fn state() -> MsgState {
        MsgState {
            seq: 3,
            uid: 30,
            flags: vec!["\\Seen".into(), "$Work".into(), "\\Recent".into()],
            internal: chrono::DateTime::parse_from_rfc3339("2026-12-01T09:00:00+01:00").unwrap(),
            modseq: Some(50),
        }
    }

    #[test]
    fn state_criteria() {
        let stars = Stars {
            messages: 3,
            max_uid: 30,
        };
        let st = state();
        let now = st.internal.timestamp() + 100;
        let facts = |state| Facts {
            seq: 3,
            uid: 30,
            stars,
            now,
            state,
        };
        let yes = |t: &str| holds(&key(t), &facts(Some(&st)), &|_| true) == Some(true);
        for t in [
            "ALL",
            "SEEN",
            "KEYWORD $work",
            "UNKEYWORD $home",
            "RECENT",
            "OLD UNSEEN",
            "ON 1-Dec-2026",
            "SINCE 30-Nov-2026",
            "BEFORE 2-Dec-2026",
            "3",
            "*",
            "2:*",
            "UID 30",
            "UID *",
            "UID 40:25",
            "MODSEQ 50",
            "YOUNGER 100",
            "OLDER 100",
            "NOT FLAGGED",
            "OR FLAGGED SEEN",
            "BODY anything",
        ] {
            let expected = !matches!(t, "OLD UNSEEN" | "OLDER 100");
            assert_eq!(yes(t), expected, "{t}");
        }
        assert_eq!(
            holds(&key("BODY x"), &facts(Some(&st)), &|_| false),
            Some(false)
        );
        assert!(!yes("MODSEQ 51"));
        assert!(!yes("NEW"));
        assert!(yes("1:2,3"));
        assert!(!yes("1:2"));
        // Before the state is fetched: decided where content or numbers decide.
        let early = |t: &str, content: bool| holds(&key(t), &facts(None), &move |_| content);
        assert_eq!(early("UNDELETED BODY x", false), Some(false));
        assert_eq!(early("UNDELETED BODY x", true), None);
        assert_eq!(early("OR SEEN BODY x", true), Some(true));
        assert_eq!(early("OR SEEN BODY x", false), None);
        assert_eq!(early("UID 1:5 SEEN", true), Some(false));
        assert_eq!(early("NOT BODY x", true), Some(false));
    }

    #[test]
    fn answers() {
        let found: BTreeSet<u32> = [2, 3, 4, 9].into();
        assert_eq!(
            String::from_utf8(answer("a", true, None, &found, None)).unwrap(),
            "* SEARCH 2 3 4 9\r\na OK SEARCH completed\r\n"
        );
        assert_eq!(
            String::from_utf8(answer(
                "a",
                true,
                Some("RETURN (MIN MAX COUNT ALL)"),
                &found,
                None
            ))
            .unwrap(),
            "* ESEARCH (TAG \"a\") UID MIN 2 MAX 9 ALL 2:4,9 COUNT 4\r\na OK SEARCH completed\r\n"
        );
        assert_eq!(
            String::from_utf8(answer(
                "a",
                false,
                Some("RETURN (COUNT)"),
                &BTreeSet::new(),
                None
            ))
            .unwrap(),
            "* ESEARCH (TAG \"a\") COUNT 0\r\na OK SEARCH completed\r\n"
        );
        assert_eq!(
            String::from_utf8(answer("a", false, Some("RETURN ()"), &found, None)).unwrap(),
            "* ESEARCH (TAG \"a\") ALL 2:4,9\r\na OK SEARCH completed\r\n"
        );
    }
}
