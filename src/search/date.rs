//! The calendar date of a Date field, read the way Dovecot reads it for SENT*.
//!
//! RFC 3501 §6.4.4: SENTBEFORE, SENTON and SENTSINCE look at the Date field "disregarding
//! time and timezone", that is the date as written. Dovecot's parser (message-date.c) is
//! laxer than RFC 5322 §3.3 in some places (the zone may be missing or unknown, a two-digit
//! year is 19xx from 70 and 20xx below) and stricter in others (a three-letter first word
//! must be a weekday followed by a comma); mail-parser's parser draws these lines
//! elsewhere, so the date is read here by Dovecot's grammar:
//!
//! `[weekday ","] day month year hour (":"|".") minute [(":"|".") second] [zone]`
//!
//! Words are RFC 5322 atoms; whitespace and comments may stand between them. Out-of-range
//! values carry over the way `mktime` normalizes them (31 Feb is 3 March, hour 24 the next
//! day).

use chrono::{NaiveDate, TimeDelta};

const MONTHS: [&[u8; 3]; 12] = [
    b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec",
];

/// The date written in a Date field value, or `None` when Dovecot would not parse it.
pub fn sent_date(value: &[u8]) -> Option<(i32, u32, u32)> {
    let mut words = Words { rest: value };
    let mut word = words.atom()?;
    if word.len() == 3 {
        words.expect(b",")?;
        word = words.atom()?;
    }
    let day = number(word, 1..=2)?;
    let month = month(words.atom()?)?;
    let year = year(words.atom()?)?;
    let hour = number(words.atom()?, 1..=2)?;
    words.expect(b":.")?;
    let minute = number(words.atom()?, 2..=2)?;
    let second = if words.expect(b":.").is_some() {
        number(words.atom()?, 2..=2)?
    } else {
        0
    };
    if !words.at_end() {
        // A zone: any atom is accepted (an unknown one counts as UTC), nothing else is.
        words.atom()?;
    }
    let start = NaiveDate::from_ymd_opt(year, month, 1)?;
    let offset = TimeDelta::days(i64::from(day) - 1)
        + TimeDelta::hours(i64::from(hour))
        + TimeDelta::minutes(i64::from(minute))
        + TimeDelta::seconds(i64::from(second));
    let date = start
        .and_hms_opt(0, 0, 0)?
        .checked_add_signed(offset)?
        .date();
    use chrono::Datelike;
    Some((date.year(), date.month(), date.day()))
}

/// The words of a field value: atoms, with whitespace and comments skipped.
struct Words<'a> {
    rest: &'a [u8],
}

impl<'a> Words<'a> {
    /// The next atom, or `None` if the next thing is not one.
    fn atom(&mut self) -> Option<&'a [u8]> {
        self.skip_space();
        let len = self.rest.iter().take_while(|&&b| is_atext(b)).count();
        if len == 0 {
            return None;
        }
        let (atom, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(atom)
    }

    /// Consumes one of the `separators` if it comes next.
    fn expect(&mut self, separators: &[u8]) -> Option<()> {
        self.skip_space();
        let (first, rest) = self.rest.split_first()?;
        if !separators.contains(first) {
            return None;
        }
        self.rest = rest;
        Some(())
    }

    fn at_end(&mut self) -> bool {
        self.skip_space();
        self.rest.is_empty()
    }

    /// Skips whitespace and (nested) comments.
    fn skip_space(&mut self) {
        loop {
            let spaces = self
                .rest
                .iter()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
            self.rest = &self.rest[spaces..];
            if self.rest.first() != Some(&b'(') {
                return;
            }
            let mut depth = 0usize;
            let mut end = self.rest.len();
            for (i, &b) in self.rest.iter().enumerate() {
                match b {
                    b'(' => depth += 1,
                    b')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            self.rest = &self.rest[end..];
        }
    }
}

/// RFC 5322 §3.2.3 atext (bytes of 8-bit text count as atext, as in Dovecot).
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80 || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// `word` as a decimal number of `digits` digits.
fn number(word: &[u8], digits: std::ops::RangeInclusive<usize>) -> Option<u32> {
    if !digits.contains(&word.len()) || !word.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(word).ok()?.parse().ok()
}

/// A month name: its first three letters decide (`December` is December).
fn month(word: &[u8]) -> Option<u32> {
    let prefix = word.get(..3)?.to_ascii_lowercase();
    let index = MONTHS.iter().position(|m| m[..] == prefix[..])?;
    u32::try_from(index + 1).ok()
}

/// A two- or four-digit year; two digits are 1970 to 2069.
fn year(word: &[u8]) -> Option<i32> {
    let value = i32::try_from(number(word, 2..=4)?).ok()?;
    match word.len() {
        2 if value < 70 => Some(2000 + value),
        2 => Some(1900 + value),
        4 if value >= 1900 => Some(value),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(value: &str) -> Option<(i32, u32, u32)> {
        sent_date(value.as_bytes())
    }

    #[test]
    fn the_date_as_written_whatever_the_zone() {
        assert_eq!(date("Mon, 07 Dec 2026 10:15:00 +0100"), Some((2026, 12, 7)));
        assert_eq!(date("Sun, 06 Dec 2026 23:30:00 -0800"), Some((2026, 12, 6)));
        assert_eq!(date("Mon, 07 Dec 2026 00:10:00 +0200"), Some((2026, 12, 7)));
    }

    #[test]
    fn dovecot_leniencies_are_kept() {
        assert_eq!(date("Wed, 02 Dec 2026 23:30:00"), Some((2026, 12, 2)));
        assert_eq!(date("2 December 2026 9.05 XYZ"), Some((2026, 12, 2)));
        assert_eq!(date("3 Dec 96 12:00:00 GMT"), Some((1996, 12, 3)));
        assert_eq!(date("3 Dec 69 12:00 GMT"), Some((2069, 12, 3)));
        assert_eq!(
            date("(sent) Tue, (really) 1 Dec 2026 08:00 +0000 (UTC)"),
            Some((2026, 12, 1))
        );
    }

    #[test]
    fn out_of_range_values_carry_over() {
        assert_eq!(date("31 Feb 2026 10:00 +0000"), Some((2026, 3, 3)));
        assert_eq!(date("31 Dec 2026 24:00 +0000"), Some((2027, 1, 1)));
    }

    #[test]
    fn what_dovecot_refuses_is_none() {
        assert_eq!(date("sometime next week"), None);
        assert_eq!(date("Mon 07 Dec 2026 10:15:00 +0100"), None);
        assert_eq!(date("07 Dec 202 10:15"), None);
        assert_eq!(date("07 Dec 1899 10:15"), None);
        assert_eq!(date("07 Dec 2026"), None);
        assert_eq!(date("07 Dec 2026 10:5"), None);
        assert_eq!(date("07 Dec 2026 10:15 [zone]"), None);
        assert_eq!(date(""), None);
    }
}
