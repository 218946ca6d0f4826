//! An independent reading of IMAP's framing (RFC 3501 §4.3, RFC 7888), written for the
//! fuzz targets' oracles: deliberately not sealpost's framer, so that the two can
//! disagree.

#![allow(dead_code)]

/// The literal a line announces at its end: `{digits}` or `{digits+}` right before the
/// line end (digits may be empty or have leading zeros, as servers read them; a size
/// past u64 saturates).
pub fn announced(line: &[u8]) -> Option<(u64, bool)> {
    let mut end = line.len();
    if end > 0 && line[end - 1] == b'\n' {
        end -= 1;
    } else {
        return None;
    }
    if end > 0 && line[end - 1] == b'\r' {
        end -= 1;
    }
    if end == 0 || line[end - 1] != b'}' {
        return None;
    }
    end -= 1;
    let mut sync = true;
    if end > 0 && line[end - 1] == b'+' {
        sync = false;
        end -= 1;
    }
    let mut start = end;
    while start > 0 && line[start - 1].is_ascii_digit() {
        start -= 1;
    }
    if start == 0 || line[start - 1] != b'{' {
        return None;
    }
    let mut n: u64 = 0;
    for &d in &line[start..end] {
        match n
            .checked_mul(10)
            .and_then(|n| n.checked_add((d - b'0') as u64))
        {
            Some(m) => n = m,
            None => return Some((u64::MAX, sync)),
        }
    }
    Some((n, sync))
}

/// What one direction of a conversation carries, as a reader of that direction sees it.
pub enum Piece<'a> {
    /// A whole line, line end included; `first` when it starts a message.
    Line { bytes: &'a [u8], first: bool },
    /// Bytes inside a literal.
    Literal(&'a [u8]),
}

/// One direction of a conversation, framed byte by byte.
#[derive(Default)]
pub struct Wire {
    line: Vec<u8>,
    owed: u64,
    /// The current line continues a message (after a literal).
    continued: bool,
}

impl Wire {
    /// Frames `bytes`; `on` sees every piece and says, for a line, whether the reader
    /// honours the literal it announces (a SASL response announces none).
    pub fn push(&mut self, mut bytes: &[u8], mut on: impl FnMut(Piece<'_>) -> bool) {
        while !bytes.is_empty() {
            if self.owed > 0 {
                let n = (self.owed.min(bytes.len() as u64)) as usize;
                on(Piece::Literal(&bytes[..n]));
                self.owed -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            match bytes.iter().position(|&b| b == b'\n') {
                None => {
                    self.line.extend_from_slice(bytes);
                    return;
                }
                Some(p) => {
                    self.line.extend_from_slice(&bytes[..=p]);
                    bytes = &bytes[p + 1..];
                    let line = std::mem::take(&mut self.line);
                    let first = !self.continued;
                    let honour = on(Piece::Line {
                        bytes: &line,
                        first,
                    });
                    match announced(&line).filter(|_| honour) {
                        Some((n, _)) => {
                            self.owed = n;
                            self.continued = true;
                        }
                        None => self.continued = false,
                    }
                }
            }
        }
    }

    /// The reader refused the literal it was waiting for (a synchronizing literal
    /// answered with a tagged response instead of `+`): what comes next is a new message.
    pub fn cancel_literal(&mut self) {
        self.owed = 0;
        self.continued = false;
    }

    pub fn in_literal(&self) -> bool {
        self.owed > 0
    }
}

/// The tag and the rest of a message's first line (`None` for an empty tag).
pub fn tag_of(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let sp = line.iter().position(|&b| b == b' ')?;
    (sp > 0).then(|| (&line[..sp], &line[sp + 1..]))
}
