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
