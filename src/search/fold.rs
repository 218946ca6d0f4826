//! Case folding for SEARCH the way Dovecot folds: `i;unicode-casemap` (RFC 5051).
//!
//! RFC 3501 §6.4.4 asks for case-insensitive substring matching; the reference server,
//! Dovecot 2.3, runs both the needle and the text through one normalizer
//! (`uni_utf8_to_decomposed_titlecase`) and then compares bytes. Per character it maps to
//! the Unicode simple titlecase, then replaces the result by its decomposition (canonical
//! or compatibility). So `é`, `É` and `e` + U+0301 all become `E` + U+0301: the needle `é`
//! finds `É`, and the needle `e` finds `é` (but `é` does not find `e`). `ß` has no simple
//! titlecase, so `ß` and `ss` stay apart. Whitespace is left as it is, except that
//! decomposition turns U+00A0 (no-break space) into a space.
//!
//! Differences from Dovecot, both in rare characters, kept to avoid a 100 KB table:
//! * decomposition here is the full one (unicode-normalization's NFKD of one character);
//!   Dovecot's table decomposes one level, so for a letter with two marks (`ệ`, `ḉ`) Dovecot
//!   keeps the inner precomposed letter: there `e` does not find `ệ`, here it does;
//! * characters whose titlecase is themselves but which have a decomposition (`ǅ`) are
//!   decomposed here; Dovecot's table leaves them whole.

use unicode_normalization::char::decompose_compatible;

/// `text` folded: each character's simple titlecase, decomposed.
pub fn fold(text: &str) -> String {
    if text.is_ascii() {
        // Most mail: one pass over the bytes.
        return text.to_ascii_uppercase();
    }
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c.to_ascii_uppercase());
        } else {
            decompose_compatible(titlecase(c), |d| out.push(d));
        }
    }
    out
}

/// The Unicode simple titlecase mapping (UnicodeData.txt field 14) of `c`.
///
/// The standard library offers the full uppercase mapping; where that is one character it
/// equals the simple titlecase, except for the cases handled first: the Latin digraphs,
/// whose titlecase is the mixed-case letter, Georgian, whose titlecase is the letter
/// itself, and Greek letters with a subscript iota, whose simple titlecase is one
/// character although their full uppercase is two. Where the full uppercase is several
/// characters (`ß` → `SS`), the simple mapping is none: the character stays.
fn titlecase(c: char) -> char {
    let code = u32::from(c);
    let mapped = match code {
        0x01C4..=0x01C6 => Some(0x01C5),
        0x01C7..=0x01C9 => Some(0x01C8),
        0x01CA..=0x01CC => Some(0x01CB),
        0x01F1..=0x01F3 => Some(0x01F2),
        0x10D0..=0x10FA | 0x10FD..=0x10FF => Some(code),
        0x1F80..=0x1F87 | 0x1F90..=0x1F97 | 0x1FA0..=0x1FA7 => Some(code + 8),
        0x1FB3 => Some(0x1FBC),
        0x1FC3 => Some(0x1FCC),
        0x1FF3 => Some(0x1FFC),
        _ => None,
    };
    if let Some(mapped) = mapped {
        return char::from_u32(mapped).unwrap_or(c);
    }
    let mut upper = c.to_uppercase();
    match (upper.next(), upper.next()) {
        (Some(single), None) => single,
        _ => c,
    }
}

/// Runs of spaces and tabs become one space, and leading ones go: what Dovecot does to the
/// Subject before `SUBJECT` looks in it (`compress_lwsp` in index-search.c).
pub(crate) fn compress_lwsp(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut after_lwsp = true;
    for c in text.chars() {
        if c == ' ' || c == '\t' {
            if !after_lwsp {
                out.push(' ');
            }
            after_lwsp = true;
        } else {
            out.push(c);
            after_lwsp = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_folds_to_upper_case() {
        assert_eq!(fold("Hello, World 42!"), "HELLO, WORLD 42!");
        // The fast path for ASCII text folds as the path for mixed text does.
        let all: String = (0u8..128).map(char::from).collect();
        let mixed = format!("{all}é");
        assert_eq!(format!("{}E\u{301}", fold(&all)), fold(&mixed));
    }

    #[test]
    fn accented_letters_fold_to_base_letter_and_combining_mark() {
        assert_eq!(fold("é"), "E\u{301}");
        assert_eq!(fold("É"), "E\u{301}");
        assert_eq!(fold("e\u{301}"), "E\u{301}");
        assert_eq!(fold("Grüße"), "GRU\u{308}ßE");
    }

    #[test]
    fn a_plain_needle_finds_the_accented_word_but_not_the_reverse() {
        assert!(fold("Café crème").contains(&fold("cafe")));
        assert!(!fold("Cafe").contains(&fold("café")));
    }

    #[test]
    fn sharp_s_has_no_simple_titlecase() {
        assert_eq!(fold("ß"), "ß");
        assert!(!fold("Straße").contains(&fold("strasse")));
        assert!(fold("STRAßE").contains(&fold("straße")));
    }

    #[test]
    fn compatibility_decomposition_applies_after_titlecase() {
        // U+FB01 has no titlecase of its own: it decomposes to lower-case "fi",
        // which an upper-cased needle "fi" does not find (as in Dovecot).
        assert_eq!(fold("\u{FB01}"), "fi");
        assert_eq!(fold("a\u{A0}b"), "A B");
        assert_eq!(fold("\u{212A}"), "K");
    }

    #[test]
    fn digraphs_georgian_and_greek_take_their_simple_titlecase() {
        assert_eq!(titlecase('\u{01C6}'), '\u{01C5}');
        assert_eq!(titlecase('\u{01C4}'), '\u{01C5}');
        assert_eq!(titlecase('\u{10D0}'), '\u{10D0}');
        assert_eq!(titlecase('\u{1F80}'), '\u{1F88}');
        assert_eq!(titlecase('\u{1FB3}'), '\u{1FBC}');
        assert_eq!(titlecase('ı'), 'I');
        assert_eq!(titlecase('ſ'), 'S');
    }

    #[test]
    fn lwsp_runs_compress_to_one_space() {
        assert_eq!(compress_lwsp("  a \t b  "), "a b ");
        assert_eq!(compress_lwsp("a\u{A0} b"), "a\u{A0} b");
    }
}
