//! Splits an IMAP byte stream into lines and literals without parsing it.
//!
//! IMAP messages are lines that may announce literals (`{n}` / `{n+}` before CRLF,
//! RFC 3501 §4.3, RFC 7888); the literal's bytes follow and the message continues with
//! another line. Knowing these boundaries is enough to relay a conversation faithfully
//! (literal bytes are never mistaken for commands) while only the messages the proxy
//! cares about are parsed. Literal data is handed out in chunks as it arrives, so large
//! messages stream through; the bytes of the current message are also captured up to a
//! bound so that small messages can be parsed once complete.

/// A piece of the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line, CRLF included. `first` marks the first line of a message;
    /// `literal` the length of a literal announced at its end and whether it is
    /// synchronizing (the sender waits for a `+` continuation).
    Line {
        bytes: Vec<u8>,
        first: bool,
        literal: Option<(u64, bool)>,
    },
    /// A chunk of literal data; `last` when the literal is complete.
    Literal { bytes: Vec<u8>, last: bool },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("literal of {0} bytes exceeds the limit")]
    LiteralTooLarge(u64),
}

pub struct Framer {
    buf: Vec<u8>,
    /// Dropping the rest of an over-long line, up to its LF.
    skipping: bool,
    literal_left: u64,
    first: bool,
    max_line: usize,
    max_literal: u64,
    capture: Vec<u8>,
    capture_limit: usize,
    captured_all: bool,
    complete: bool,
}

impl Framer {
    pub fn new(max_line: usize, max_literal: u64, capture_limit: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            skipping: false,
            literal_left: 0,
            first: true,
            max_line,
            max_literal,
            capture: Vec::new(),
            capture_limit,
            captured_all: true,
            complete: false,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet framed.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Drops everything buffered (after STARTTLS, RFC 3501 §6.2.1 / CVE-2011-0411).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.skipping = false;
        self.literal_left = 0;
        self.first = true;
        self.capture.clear();
        self.captured_all = true;
        self.complete = false;
    }

    /// Abandons the current message: the next line starts a new one. Used when a
    /// command with a synchronizing literal is refused before its literal was sent.
    pub fn reset_message(&mut self) {
        self.literal_left = 0;
        self.first = true;
        self.complete = true;
    }

    /// True right after the frame that ended a message.
    pub fn message_complete(&self) -> bool {
        self.complete
    }

    /// The current (or just completed) message, if it fit in the capture bound.
    pub fn message(&self) -> Option<&[u8]> {
        self.captured_all.then_some(self.capture.as_slice())
    }

    fn record(&mut self, bytes: &[u8]) {
        if self.capture.len() + bytes.len() <= self.capture_limit {
            self.capture.extend_from_slice(bytes);
        } else {
            self.captured_all = false;
        }
    }

    /// The next frame, or `None` when more input is needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.complete {
            self.complete = false;
            self.capture.clear();
            self.captured_all = true;
        }
        if self.literal_left > 0 {
            if self.buf.is_empty() {
                return Ok(None);
            }
            let n = (self.literal_left.min(self.buf.len() as u64)) as usize;
            let bytes: Vec<u8> = self.buf.drain(..n).collect();
            self.literal_left -= n as u64;
            self.record(&bytes);
            return Ok(Some(Frame::Literal {
                bytes,
                last: self.literal_left == 0,
            }));
        }
        if self.skipping {
            match self.buf.iter().position(|&b| b == b'\n') {
                Some(pos) => {
                    self.buf.drain(..=pos);
                    self.skipping = false;
                }
                None => {
                    self.buf.clear();
                    return Ok(None);
                }
            }
        }
        let Some(pos) = self.buf.iter().position(|&b| b == b'\n') else {
            if self.buf.len() > self.max_line {
                // Report once, then drop everything up to the line's end.
                self.buf.clear();
                self.skipping = true;
                self.reset_message();
                return Err(FrameError::LineTooLong(self.max_line));
            }
            return Ok(None);
        };
        if pos + 1 > self.max_line {
            self.buf.drain(..=pos);
            self.reset_message();
            return Err(FrameError::LineTooLong(self.max_line));
        }
        let bytes: Vec<u8> = self.buf.drain(..=pos).collect();
        let literal = literal_announcement(&bytes);
        let first = self.first;
        self.record(&bytes);
        match literal {
            Some((n, _)) if n > self.max_literal => {
                self.reset_message();
                return Err(FrameError::LiteralTooLarge(n));
            }
            Some((n, _)) if n > 0 => {
                self.literal_left = n;
                self.first = false;
            }
            Some(_) => self.first = false,
            None => {
                self.first = true;
                self.complete = true;
            }
        }
        Ok(Some(Frame::Line {
            bytes,
            first,
            literal,
        }))
    }
}

/// Parses `{n}` / `{n+}` (and `~{n}`) at the end of a line.
pub fn literal_announcement(line: &[u8]) -> Option<(u64, bool)> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let spec = &inner[open + 1..];
    let (digits, sync) = match spec.strip_suffix(b"+") {
        Some(d) => (d, false),
        None => (spec, true),
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((n, sync))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8], chunk: usize) -> Vec<Frame> {
        let mut f = Framer::new(1000, 1 << 20, 4096);
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            f.push(piece);
            while let Some(fr) = f.next_frame().unwrap() {
                out.push(fr);
            }
        }
        // Merge literal chunks so results compare across chunk sizes.
        let mut merged: Vec<Frame> = Vec::new();
        for fr in out {
            match (merged.last_mut(), fr) {
                (
                    Some(Frame::Literal { bytes, last }),
                    Frame::Literal {
                        bytes: more,
                        last: l2,
                    },
                ) if !*last => {
                    bytes.extend(more);
                    *last = l2;
                }
                (_, fr) => merged.push(fr),
            }
        }
        merged
    }

    #[test]
    fn lines_and_literals_at_every_split() {
        let input = b"a1 LOGIN {5}\r\nalice {3+}\r\npw!\r\na2 NOOP\r\n";
        let reference = frames(input, input.len());
        assert_eq!(reference.len(), 6);
        assert_eq!(
            reference[0],
            Frame::Line {
                bytes: b"a1 LOGIN {5}\r\n".to_vec(),
                first: true,
                literal: Some((5, true))
            }
        );
        assert_eq!(
            reference[4],
            Frame::Line {
                bytes: b"\r\n".to_vec(),
                first: false,
                literal: None
            }
        );
        for chunk in 1..input.len() {
            assert_eq!(frames(input, chunk), reference, "chunk {chunk}");
        }
    }

    #[test]
    fn captures_whole_messages_within_bound() {
        let mut f = Framer::new(1000, 100, 16);
        f.push(b"a LOGIN {3}\r\nabc x\r\nb NOOP\r\n");
        let mut complete = Vec::new();
        while let Some(_fr) = f.next_frame().unwrap() {
            if f.message_complete() {
                complete.push(f.message().map(|m| m.to_vec()));
            }
        }
        assert_eq!(complete, vec![None, Some(b"b NOOP\r\n".to_vec())]);
    }

    #[test]
    fn an_over_long_line_is_reported_once_and_skipped() {
        let mut f = Framer::new(10, 5, 100);
        f.push(&[b'a'; 50]);
        assert_eq!(f.next_frame(), Err(FrameError::LineTooLong(10)));
        assert_eq!(f.next_frame(), Ok(None));
        assert_eq!(f.pending(), 0, "nothing of the long line is kept");
        f.push(b"aaaa\r\nx NOOP\r\n");
        assert!(matches!(
            f.next_frame(),
            Ok(Some(Frame::Line { bytes, .. })) if bytes == b"x NOOP\r\n"
        ));
    }

    #[test]
    fn limits() {
        let mut f = Framer::new(10, 5, 100);
        f.push(b"0123456789abc\r\nok\r\n");
        assert_eq!(f.next_frame(), Err(FrameError::LineTooLong(10)));
        assert!(matches!(f.next_frame(), Ok(Some(Frame::Line { .. }))));
        f.push(b"a {6}\r\n");
        assert_eq!(f.next_frame(), Err(FrameError::LiteralTooLarge(6)));
        assert_eq!(literal_announcement(b"x {12+}\r\n"), Some((12, false)));
        assert_eq!(literal_announcement(b"x {}\r\n"), None);
        assert_eq!(literal_announcement(b"x {1a}\r\n"), None);
    }
}
