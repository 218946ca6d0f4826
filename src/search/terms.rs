//! What the index keeps of a text, and how a needle is looked for in it.
//!
//! IMAP matches a string as a case-insensitive substring (RFC 3501 §6.4.4), which no
//! word index answers exactly; the index answers a superset. Words are the maximal runs
//! of alphanumeric characters, each character lowercased on its own
//! (`char::to_lowercase`, no context rules such as Greek final sigma), so when a needle
//! occurs in a text, each word of the needle lies inside one word of the text, whatever
//! separators, case or punctuation surround it: a message is a candidate when every
//! needle word is inside some indexed term of the field.

use std::collections::HashSet;

/// Longest word indexed whole, in characters; a longer run (base64, hex, a URL without
/// separators) is indexed as overlapping windows of this length every [`STRIDE`]
/// characters, so it cannot flood the term dictionary.
pub const WINDOW: usize = 48;
/// Window step. Every substring of at most this many characters of a long run lies
/// inside one window, so a needle word is looked up by its first `STRIDE` characters.
pub const STRIDE: usize = WINDOW / 2;
/// Header names longer than this (in bytes) are cut: tantivy drops terms over 64 KiB.
pub const MAX_NAME: usize = 256;

/// `name\0`, the name lowercased and cut to at most [`MAX_NAME`] bytes (on a character
/// boundary: terms are UTF-8).
pub fn header_prefix(name: &str) -> Vec<u8> {
    let mut name = name.to_lowercase();
    let mut end = name.len().min(MAX_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.truncate(end);
    let mut prefix = name.into_bytes();
    prefix.push(0);
    prefix
}

/// The first byte string after every string starting with `prefix` (which ends in 0).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// The words of `text`: maximal runs of alphanumeric characters, each character
/// lowercased on its own.
pub fn words(text: &str) -> Vec<String> {
    if text.is_ascii() {
        // The same words, found byte by byte (for ASCII, `is_alphanumeric` and
        // `to_lowercase` are their ASCII forms).
        return text
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_ascii_lowercase)
            .collect();
    }
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            if w.is_ascii() {
                w.to_ascii_lowercase()
            } else {
                w.chars().flat_map(char::to_lowercase).collect()
            }
        })
        .collect()
}

/// The distinct terms to index for `text`: its words, a word longer than [`WINDOW`]
/// characters as windows of `WINDOW` characters starting every [`STRIDE`].
pub fn indexed_words(text: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    for word in words(text) {
        if word.len() <= WINDOW {
            // At most as many characters as bytes.
            out.insert(word);
            continue;
        }
        let chars: Vec<char> = word.chars().collect();
        if chars.len() <= WINDOW {
            out.insert(word);
            continue;
        }
        let mut start = 0;
        loop {
            let end = (start + WINDOW).min(chars.len());
            out.insert(chars[start..end].iter().collect());
            if end == chars.len() {
                break;
            }
            start += STRIDE;
        }
    }
    out
}

/// The terms of a message's header fields: `name\0word` for each word of each value
/// and `name\0` for each field, so HEADER scans the terms under one name and TEXT finds
/// names too.
pub fn header_terms(fields: &[(String, String)]) -> HashSet<String> {
    let mut out = HashSet::new();
    for (name, value) in fields {
        // Valid UTF-8: a lowercased name cut on a character boundary, then a NUL.
        let prefix = String::from_utf8(header_prefix(name)).unwrap_or_default();
        for word in indexed_words(value) {
            out.insert(format!("{prefix}{word}"));
        }
        out.insert(prefix);
    }
    out
}

/// The words of a needle, each cut to its first [`STRIDE`] characters (see
/// [`indexed_words`]): every one lies inside an indexed term of any text holding the
/// needle.
pub fn needle_words(needle: &str) -> Vec<String> {
    words(needle)
        .into_iter()
        .map(|w| w.chars().take(STRIDE).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ascii_path_finds_the_same_words_as_the_general_one() {
        let general = |text: &str| -> Vec<String> {
            text.split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(|w| w.chars().flat_map(char::to_lowercase).collect())
                .collect()
        };
        let all: String = (0u8..128).map(char::from).collect();
        let mut x = 7u32;
        for len in 0..400 {
            let text: String = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    char::from((x >> 16) as u8 & 0x7f)
                })
                .collect();
            assert_eq!(words(&text), general(&text), "{text:?}");
        }
        assert_eq!(words(&all), general(&all));
    }

    #[test]
    fn words_split_on_anything_not_alphanumeric_and_lowercase_each_char() {
        assert_eq!(
            words("Re: INVOICES—Café_Müller,straße 42\r\nİx"),
            [
                "re",
                "invoices",
                "café",
                "müller",
                "straße",
                "42",
                "i\u{307}x"
            ]
        );
        assert!(words(" .,-\r\n").is_empty());
    }

    /// Whether each word of `needle` is inside an indexed term of `text` (what the index
    /// asks of a candidate).
    fn found(text: &str, needle: &str) -> bool {
        let terms = indexed_words(text);
        needle_words(needle)
            .iter()
            .all(|w| terms.iter().any(|t| t.contains(w)))
    }

    #[test]
    fn every_substring_of_a_long_run_is_inside_an_indexed_term() {
        let run: String = (0..150)
            .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
            .collect();
        let text = format!("x {run} y");
        let terms = indexed_words(&text);
        assert!(terms.iter().all(|t| t.chars().count() <= WINDOW));
        for start in 0..run.len() {
            for end in start + 1..=run.len() {
                assert!(found(&text, &run[start..end]), "{start}..{end}");
            }
        }
        assert!(!found(&text, "zz"));
    }

    /// Every cut of a text is found, and so is its uppercase form wherever uppercasing
    /// and lowercasing agree (not "ﬁ" → "FI", which lowercases to "fi": the index, like
    /// IMAP's comparison, lowercases one character at a time).
    #[test]
    fn a_needle_in_a_text_is_found_whatever_its_case_and_cut() {
        let lower = |s: &str| -> String { s.chars().flat_map(char::to_lowercase).collect() };
        let text = "Subject: Ünïcode İnvoices, ΣΟΦΟΣ and ﬁsh-42\r\n\r\nbody";
        let chars: Vec<char> = text.chars().collect();
        for start in 0..chars.len() {
            for end in start + 1..=chars.len() {
                let needle: String = chars[start..end].iter().collect();
                assert!(found(text, &needle), "{needle:?}");
                let upper = needle.to_uppercase();
                if lower(&upper) == lower(&needle) {
                    assert!(found(text, &upper), "{upper:?}");
                }
            }
        }
    }

    #[test]
    fn header_terms_carry_the_lowercased_name() {
        let fields = [
            ("Subject".to_string(), "Re: Invoices, invoices".to_string()),
            ("X-Empty".to_string(), " ".to_string()),
        ];
        let want: HashSet<String> = ["subject\0", "subject\0re", "subject\0invoices", "x-empty\0"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(header_terms(&fields), want);
    }

    #[test]
    fn header_prefixes_bound_their_range() {
        assert_eq!(header_prefix("Subject"), b"subject\0");
        assert_eq!(prefix_end(b"subject\0"), b"subject\x01");
        assert_eq!(header_prefix(&"x".repeat(1000)).len(), MAX_NAME + 1);
        let long = header_prefix(&format!("x{}", "é".repeat(500)));
        assert!(long.len() <= MAX_NAME + 1);
        assert!(std::str::from_utf8(&long).is_ok());
    }
}
