//! What a search reads of a message ([`Doc`]) and one content criterion ([`Leaf`]).

use serde::{Deserialize, Serialize};

/// What SEARCH reads of one message, as the client sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Doc {
    /// The header fields in order: name as written, value unfolded and decoded to UTF-8
    /// (RFC 2047 encoded-words).
    pub fields: Vec<(String, String)>,
    /// The text BODY searches: every part's content, transfer-decoded and converted to
    /// UTF-8, parts separated by a line end.
    pub body: String,
    /// RFC822.SIZE of the message as the client sees it.
    pub size: u32,
    /// The calendar date of the Date field as written (year, month, day): the SENT* keys
    /// disregard time and zone (RFC 3501 §6.4.4).
    pub sent: Option<(i32, u32, u32)>,
}

/// One search criterion that depends on a message's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leaf {
    /// `HEADER name value`; `SUBJECT`, `FROM`, `TO`, `CC` and `BCC` are this with the
    /// field's name.
    Header(String, String),
    Body(String),
    Text(String),
    Larger(u32),
    Smaller(u32),
    SentBefore((i32, u32, u32)),
    SentOn((i32, u32, u32)),
    SentSince((i32, u32, u32)),
}

// TEMPORARY (replaced by the matcher branch): just enough to build the IMAP side.
impl Doc {
    pub fn from_message(message: &[u8]) -> Doc {
        let text = String::from_utf8_lossy(message);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let fields = head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.to_string(), v.trim().to_string()))
            .collect();
        Doc {
            fields,
            body: body.to_string(),
            size: message.len() as u32,
            sent: None,
        }
    }
}

impl Leaf {
    pub fn from_key(key: &imap_types::search::SearchKey<'_>) -> Option<Leaf> {
        use imap_types::search::SearchKey as K;
        let s = |a: &imap_types::core::AString<'_>| {
            let b: &[u8] = a.as_ref();
            String::from_utf8_lossy(b).into_owned()
        };
        Some(match key {
            K::Body(a) => Leaf::Body(s(a)),
            K::Text(a) => Leaf::Text(s(a)),
            K::Subject(a) => Leaf::Header("Subject".into(), s(a)),
            K::From(a) => Leaf::Header("From".into(), s(a)),
            K::To(a) => Leaf::Header("To".into(), s(a)),
            K::Cc(a) => Leaf::Header("Cc".into(), s(a)),
            K::Bcc(a) => Leaf::Header("Bcc".into(), s(a)),
            K::Header(n, v) => Leaf::Header(s(n), s(v)),
            K::Larger(n) => Leaf::Larger(*n),
            K::Smaller(n) => Leaf::Smaller(*n),
            _ => return None,
        })
    }

    pub fn matches(&self, doc: &Doc) -> bool {
        let has = |h: &str, n: &str| h.to_lowercase().contains(&n.to_lowercase());
        match self {
            Leaf::Header(name, v) => doc
                .fields
                .iter()
                .any(|(n, val)| n.eq_ignore_ascii_case(name) && has(val, v)),
            Leaf::Body(n) => has(&doc.body, n),
            Leaf::Text(n) => has(&doc.body, n) || doc.fields.iter().any(|(_, v)| has(v, n)),
            Leaf::Larger(n) => doc.size > *n,
            Leaf::Smaller(n) => doc.size < *n,
            _ => false,
        }
    }
}
