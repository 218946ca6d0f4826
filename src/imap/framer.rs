//! Splits an IMAP byte stream into lines and literals without parsing it.
//!
//! IMAP messages are lines that may announce literals (`{n}` / `{n+}` before CRLF,
//! RFC 3501 §4.3, RFC 7888); the literal's bytes follow and the message continues with
//! another line. Knowing these boundaries is enough to relay a conversation faithfully
//! (literal bytes are never mistaken for commands) while only the messages the proxy
//! cares about are parsed. Literal data is handed out in chunks as it arrives, so large
//! messages stream through; the bytes of the current message are also captured up to a
//! bound so that small messages can be parsed once complete.
//!
//! The framer enforces no literal limit itself: whether a literal is too large is the
//! session's decision, and whatever it decides the literal's bytes stay literal bytes
//! (a refused non-synchronizing literal is still framed, and dropped, byte for byte).
//! A line over the limit is not kept, but its start (the tag) and its end (a literal it
//! announces) are, so it can get a tagged reply and its literal is still skipped.

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
    /// A line longer than the limit, dropped: `head` holds its first bytes (where a
    /// command's tag is), `literal` what its end announced, `first` as for a line.
    Overlong {
        head: Vec<u8>,
        first: bool,
        literal: Option<(u64, bool)>,
    },
}

/// Bytes kept of an over-long line's start and end.
const KEEP_HEAD: usize = 256;
const KEEP_TAIL: usize = 32;

/// An over-long line being skipped.
struct Skip {
    head: Vec<u8>,
    tail: Vec<u8>,
}

pub struct Framer {
    buf: Vec<u8>,
    skipping: Option<Skip>,
    literal_left: u64,
    first: bool,
    max_line: usize,
    /// Lines only: literal announcements are not honoured (SASL responses, RFC 3501
    /// §6.2.2, are base64 lines and never carry literals).
    lines_only: bool,
    capture: Vec<u8>,
    capture_limit: usize,
    captured_all: bool,
    complete: bool,
}

/// Keeps the last bytes of a line being skipped, enough to read the literal it may
/// announce at its end: the digits after the last `{` are shortened to digits that read
/// the same (leading zeros dropped; past 20 significant digits, 21 nines, over u64 like
/// the original), so an announcement of any length fits in the bytes kept.
fn keep_tail(tail: &mut Vec<u8>, more: &[u8]) {
    tail.extend_from_slice(more);
    if let Some(open) = memchr::memrchr(b'{', tail) {
        let start = open + 1;
        let digits = tail[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let zeros = tail[start..start + digits]
            .iter()
            .take_while(|&&b| b == b'0')
            .count();
        if digits - zeros > 20 {
            tail.splice(start..start + digits, [b'9'; 21]);
        } else {
            tail.drain(start..start + zeros);
        }
    }
    if tail.len() > KEEP_TAIL {
        tail.drain(..tail.len() - KEEP_TAIL);
    }
}

impl Framer {
    pub fn new(max_line: usize, capture_limit: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            skipping: None,
            literal_left: 0,
            first: true,
            max_line,
            lines_only: false,
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

    /// Takes the bytes received but not yet framed (to hold them while the session
    /// cannot act on them).
    pub fn take_pending(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Honour literal announcements (`false`) or treat every line as a whole message.
    pub fn set_lines_only(&mut self, on: bool) {
        self.lines_only = on;
    }

    /// How much of the current (and later) messages is captured.
    pub fn set_capture_limit(&mut self, limit: usize) {
        self.capture_limit = limit;
    }

    /// Drops everything buffered (after STARTTLS, RFC 3501 §6.2.1 / CVE-2011-0411).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.skipping = None;
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

    /// True while a message has started and not ended.
    pub fn in_message(&self) -> bool {
        !self.first || self.literal_left > 0
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

    /// After a line: what it announced decides whether the message goes on.
    fn end_of_line(&mut self, literal: Option<(u64, bool)>) {
        match literal {
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
    }

    fn announcement(&self, line: &[u8]) -> Option<(u64, bool)> {
        if self.lines_only {
            None
        } else {
            literal_announcement(line)
        }
    }

    /// The next frame, or `None` when more input is needed.
    pub fn next_frame(&mut self) -> Option<Frame> {
        if self.complete {
            self.complete = false;
            self.capture.clear();
            self.captured_all = true;
        }
        if self.literal_left > 0 {
            if self.buf.is_empty() {
                return None;
            }
            let n = (self.literal_left.min(self.buf.len() as u64)) as usize;
            let bytes: Vec<u8> = self.buf.drain(..n).collect();
            self.literal_left -= n as u64;
            self.record(&bytes);
            return Some(Frame::Literal {
                bytes,
                last: self.literal_left == 0,
            });
        }
        if let Some(skip) = &mut self.skipping {
            let Some(pos) = self.buf.iter().position(|&b| b == b'\n') else {
                keep_tail(&mut skip.tail, &self.buf);
                self.buf.clear();
                return None;
            };
            keep_tail(&mut skip.tail, &self.buf[..=pos]);
            self.buf.drain(..=pos);
            let skip = self.skipping.take().expect("skipping");
            return Some(self.overlong(skip));
        }
        let Some(pos) = self.buf.iter().position(|&b| b == b'\n') else {
            if self.buf.len() > self.max_line {
                let head = self.buf[..KEEP_HEAD.min(self.buf.len())].to_vec();
                let mut tail = Vec::new();
                keep_tail(&mut tail, &self.buf);
                self.buf.clear();
                self.skipping = Some(Skip { head, tail });
            }
            return None;
        };
        if pos + 1 > self.max_line {
            let head = self.buf[..KEEP_HEAD.min(pos + 1)].to_vec();
            let mut tail = Vec::new();
            keep_tail(&mut tail, &self.buf[..=pos]);
            self.buf.drain(..=pos);
            return Some(self.overlong(Skip { head, tail }));
        }
        let bytes: Vec<u8> = self.buf.drain(..=pos).collect();
        let literal = self.announcement(&bytes);
        let first = self.first;
        self.record(&bytes);
        self.end_of_line(literal);
        Some(Frame::Line {
            bytes,
            first,
            literal,
        })
    }

    fn overlong(&mut self, skip: Skip) -> Frame {
        let literal = self.announcement(&skip.tail);
        let first = self.first;
        // The message cannot be captured whole any more.
        self.captured_all = false;
        self.end_of_line(literal);
        Frame::Overlong {
            head: skip.head,
            first,
            literal,
        }
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
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // As servers read it (Dovecot takes `{}` as a literal of 0 bytes and leading zeros
    // of any length): what upstream sees as a literal, the framer must too. A size
    // past u64 is as good as infinite (and over every limit).
    let n = digits.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    });
    Some((n.unwrap_or(u64::MAX), sync))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8], chunk: usize, max_line: usize) -> Vec<Frame> {
        let mut f = Framer::new(max_line, 4096);
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            f.push(piece);
            while let Some(fr) = f.next_frame() {
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
        let reference = frames(input, input.len(), 1000);
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
            assert_eq!(frames(input, chunk, 1000), reference, "chunk {chunk}");
        }
    }

    #[test]
    fn captures_whole_messages_within_bound() {
        let mut f = Framer::new(1000, 16);
        f.push(b"a LOGIN {3}\r\nabc x\r\nb NOOP\r\n");
        let mut complete = Vec::new();
        while let Some(_fr) = f.next_frame() {
            if f.message_complete() {
                complete.push(f.message().map(|m| m.to_vec()));
            }
        }
        assert_eq!(complete, vec![None, Some(b"b NOOP\r\n".to_vec())]);
    }

    #[test]
    fn an_over_long_line_keeps_its_tag_and_is_skipped_at_every_split() {
        let mut input = b"t7 UID FETCH 1".to_vec();
        for i in 2..400 {
            input.extend_from_slice(format!(",{i}").as_bytes());
        }
        input.extend_from_slice(b" (FLAGS)\r\nx NOOP\r\n");
        for chunk in [1, 7, 100, input.len()] {
            let got = frames(&input, chunk, 100);
            assert_eq!(got.len(), 2, "chunk {chunk}: {got:?}");
            match &got[0] {
                Frame::Overlong {
                    head,
                    first: true,
                    literal: None,
                } => assert!(head.starts_with(b"t7 UID FETCH 1,2,3")),
                other => panic!("chunk {chunk}: {other:?}"),
            }
            assert!(matches!(&got[1], Frame::Line { bytes, .. } if bytes == b"x NOOP\r\n"));
        }
    }

    /// The literal an over-long line announces is still a literal: its bytes never
    /// come out as lines.
    #[test]
    fn the_literal_of_an_over_long_line_is_still_skipped() {
        let mut input = b"a1 APPEND INBOX (".to_vec();
        input.extend(std::iter::repeat_n(b'x', 300));
        input.extend_from_slice(b") {26+}\r\nZ1 STORE 1:* +FLAGS (\\D)\r\n\r\nb NOOP\r\n");
        for chunk in [1, 5, input.len()] {
            let got = frames(&input, chunk, 100);
            assert!(
                matches!(
                    &got[0],
                    Frame::Overlong {
                        literal: Some((26, false)),
                        first: true,
                        ..
                    }
                ),
                "{got:?}"
            );
            assert!(matches!(&got[1], Frame::Literal { last: true, .. }));
            assert!(matches!(&got[2], Frame::Line { first: false, .. }));
            assert!(
                matches!(&got[3], Frame::Line { bytes, first: true, .. } if bytes == b"b NOOP\r\n")
            );
        }
    }

    /// Found by fuzzing (fuzz/ imap_framer): an over-long line kept only its last 32
    /// bytes, so a literal announced there with more digits than fit (`{000…018+}`,
    /// leading zeros as Dovecot reads them) was not seen, and its bytes came out as a
    /// command line.
    #[test]
    fn a_long_announcement_at_the_end_of_an_over_long_line_is_still_a_literal() {
        let mut input = b"a1 APPEND INBOX (".to_vec();
        input.extend(std::iter::repeat_n(b'x', 300));
        input.extend_from_slice(b") {");
        input.extend(std::iter::repeat_n(b'0', 40));
        input.extend_from_slice(b"18+}\r\nZZ9 DELETE INBOX\r\n\r\nb NOOP\r\n");
        for chunk in [1, 3, 7, 64, input.len()] {
            let got = frames(&input, chunk, 100);
            assert!(
                matches!(
                    &got[0],
                    Frame::Overlong {
                        literal: Some((18, false)),
                        ..
                    }
                ),
                "chunk {chunk}: {got:?}"
            );
            assert_eq!(
                got[1],
                Frame::Literal {
                    bytes: b"ZZ9 DELETE INBOX\r\n".to_vec(),
                    last: true
                },
                "chunk {chunk}"
            );
        }
        // Past u64, however many digits: as good as infinite, as within the limit.
        let mut input = b"a2 APPEND INBOX (".to_vec();
        input.extend(std::iter::repeat_n(b'x', 300));
        input.extend_from_slice(b") {");
        input.extend(std::iter::repeat_n(b'9', 50));
        input.extend_from_slice(b"}\r\n");
        for chunk in [1, 5, input.len()] {
            let got = frames(&input, chunk, 100);
            assert!(
                matches!(
                    &got[0],
                    Frame::Overlong {
                        literal: Some((u64::MAX, true)),
                        ..
                    }
                ),
                "chunk {chunk}: {got:?}"
            );
        }
    }

    #[test]
    fn lines_only_ignores_literal_announcements() {
        let mut f = Framer::new(100, 100);
        f.set_lines_only(true);
        f.push(b"abc{5}\r\nx NOOP\r\n");
        assert!(matches!(
            f.next_frame(),
            Some(Frame::Line { literal: None, .. })
        ));
        assert!(matches!(
            f.next_frame(),
            Some(Frame::Line { first: true, .. })
        ));
    }

    #[test]
    fn announcements() {
        assert_eq!(literal_announcement(b"x {12+}\r\n"), Some((12, false)));
        assert_eq!(literal_announcement(b"x {12}\r\n"), Some((12, true)));
        // Found by review: Dovecot reads these as literals, so the framer does too.
        assert_eq!(literal_announcement(b"x {}\r\n"), Some((0, true)));
        assert_eq!(literal_announcement(b"x {+}\r\n"), Some((0, false)));
        assert_eq!(literal_announcement(b"x ~{}\r\n"), Some((0, true)));
        assert_eq!(
            literal_announcement(b"x {00000000000000000005}\r\n"),
            Some((5, true))
        );
        assert_eq!(
            literal_announcement(b"x {99999999999999999999999}\r\n"),
            Some((u64::MAX, true))
        );
        assert_eq!(literal_announcement(b"x {1a}\r\n"), None);
        assert_eq!(literal_announcement(b"x {5+3}\r\n"), None);
    }
}
