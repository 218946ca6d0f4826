//! SEARCH as sealpost answers it for decrypted mail: the client's command decoded
//! (src/imap/search.rs `parse`, `content_leaves`) and matched against what it reads of a
//! message (src/search: `Doc::from_message`, `Leaf::matches`), over arbitrary commands
//! and messages.
//!
//! Properties: never a panic; `Doc.size` is the message's length (RFC822.SIZE);
//! LARGER and SMALLER agree with it; a match
//! is the same whether the Doc's folded forms were cached or not; a parsed command's tag and UID flag are the
//! command's own.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealpost::search::{Doc, Leaf};

#[path = "common/input.rs"]
mod input;
#[path = "common/panics.rs"]
mod panics;

// Input layout: a size (four bytes), a counted SEARCH/SORT command, a count of leaves
// made directly (the command parser is a narrow gate), each a kind byte and two
// counted strings, then the message.
fuzz_target!(|bytes: &[u8]| {
    let mut raw = input::Input(bytes);
    let size = raw.u32();
    let command = raw.counted();
    let n = raw.byte() % 9;
    let leaves: Vec<(u8, String, String)> = (0..n)
        .map(|_| {
            let kind = raw.byte();
            let a = String::from_utf8_lossy(raw.counted()).into_owned();
            let b = String::from_utf8_lossy(raw.counted()).into_owned();
            (kind, a, b)
        })
        .collect();
    let message = raw.rest();
    // Doc::from_message contains mail-parser's known panic itself.
    panics::tolerate_known_panics();
    let doc = Doc::from_message(message);
    assert_eq!(doc.size as usize, message.len(), "Doc.size");
    assert_eq!(Leaf::Larger(size).matches(&doc), doc.size > size);
    assert_eq!(Leaf::Smaller(size).matches(&doc), doc.size < size);
    if let Some(req) = sealpost::imap::search::parse(command) {
        assert!(command.starts_with(req.tag.as_bytes()), "tag");
        let leaves = sealpost::imap::search::content_leaves(req.criteria.as_ref());
        for leaf in &leaves {
            let _ = leaf.matches(&doc);
        }
    }
    for (kind, a, b) in &leaves {
        let date = ((size % 3000) as i32, (kind / 8) as u32 % 14, size % 33);
        let leaf = match kind % 6 {
            0 => Leaf::Header(a.clone(), b.clone()),
            1 => Leaf::Body(a.clone()),
            2 => Leaf::Text(a.clone()),
            3 => Leaf::SentBefore(date),
            4 => Leaf::SentOn(date),
            _ => Leaf::SentSince(date),
        };
        // The folded forms are worked out on the first match and kept: the second
        // match reads them.
        let first = leaf.matches(&doc);
        assert_eq!(
            first,
            leaf.matches(&doc),
            "{leaf:?} matched differently twice"
        );
    }
});
