//! The IMAP framer over arbitrary bytes in arbitrary chunkings, with the settings the
//! client side uses (short line limit, small capture) and the upstream side uses (long
//! lines, large capture), and SASL's lines-only mode.
//!
//! Properties, checked against an independent reading of RFC 3501 §4.3 / RFC 7888
//! written here (not the framer's own `literal_announcement`):
//! * the frames are the same however the input is split;
//! * lines and literal chunks reassemble to the input exactly; an over-long line is
//!   dropped whole, its `head` a prefix of it;
//! * every literal a line (or an over-long line) announces at its end is framed as
//!   literal data, byte for byte, so what is inside a literal is never a line;
//! * a message is complete exactly when a line announces no literal, and a captured
//!   message is the bytes of that message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealpost::imap::framer::{Frame, Framer};

#[path = "common/input.rs"]
mod input;
#[path = "common/wire.rs"]
mod wire;
use wire::announced;

/// Input layout: settings (0 client, 1 upstream, else small limits from the next two
/// bytes), lines-only flag, a count of chunk sizes and the sizes (cycled), then the
/// stream.
struct Input<'a> {
    lines_only: bool,
    chunks: &'a [u8],
    data: &'a [u8],
}

/// What the frames say, merged across literal chunks so chunkings compare.
#[derive(Debug, PartialEq, Eq)]
enum Merged {
    Line(Vec<u8>, bool, Option<(u64, bool)>),
    Literal(Vec<u8>, bool),
    Overlong(Vec<u8>, bool, Option<(u64, bool)>),
    /// A message ended here, with its captured bytes if it fit.
    Complete(Option<Vec<u8>>),
}

fn run(input: &Input<'_>, max_line: usize, capture: usize, whole: bool) -> (Vec<Merged>, usize) {
    let mut f = Framer::new(max_line, capture);
    f.set_lines_only(input.lines_only);
    let mut out: Vec<Merged> = Vec::new();
    let mut pieces: Vec<&[u8]> = Vec::new();
    if whole || input.chunks.is_empty() {
        pieces.push(input.data);
    } else {
        let mut rest = input.data;
        let mut i = 0;
        while !rest.is_empty() {
            let n = (input.chunks[i % input.chunks.len()] as usize).clamp(1, rest.len());
            pieces.push(&rest[..n]);
            rest = &rest[n..];
            i += 1;
        }
    }
    for piece in pieces {
        f.push(piece);
        while let Some(frame) = f.next_frame() {
            match frame {
                Frame::Line {
                    bytes,
                    first,
                    literal,
                } => out.push(Merged::Line(bytes, first, literal)),
                Frame::Overlong {
                    head,
                    first,
                    literal,
                } => out.push(Merged::Overlong(head, first, literal)),
                Frame::Literal { bytes, last } => match out.last_mut() {
                    Some(Merged::Literal(b, l)) if !*l => {
                        b.extend_from_slice(&bytes);
                        *l = last;
                    }
                    _ => out.push(Merged::Literal(bytes, last)),
                },
            }
            if f.message_complete() {
                out.push(Merged::Complete(f.message().map(<[u8]>::to_vec)));
            }
        }
    }
    (out, f.pending())
}

fuzz_target!(|bytes: &[u8]| {
    let mut raw = input::Input(bytes);
    let (max_line, capture) = match raw.byte() {
        0 => (8192, 64 * 1024),
        1 => (8 * 1024 * 1024, 2 * 1024 * 1024),
        _ => (raw.byte() as usize + 1, raw.byte() as usize),
    };
    let lines_only = raw.byte() == 1;
    let n = raw.byte() as usize % 16;
    let chunks = raw.bytes(n);
    let input = Input {
        lines_only,
        chunks,
        data: raw.rest(),
    };
    let (mut frames, pending) = run(&input, max_line, capture, true);
    let (mut chunked, chunked_pending) = run(&input, max_line, capture, false);
    // An over-long line keeps at least its first 256 bytes (where the tag is), or all the
    // bytes up to the limit when the limit is shorter (only here: the config's minimum is
    // 1000); beyond that, how much depends on where the input was split.
    let keep = 256.min(max_line + 1);
    for f in frames.iter_mut().chain(chunked.iter_mut()) {
        if let Merged::Overlong(head, ..) = f {
            assert!(
                head.len() >= keep,
                "over-long line's head of {} bytes",
                head.len()
            );
            head.truncate(keep);
        }
    }
    assert_eq!(frames, chunked, "frames depend on the chunking");
    assert_eq!(pending, chunked_pending);

    let data = input.data;
    let mut at = 0usize;
    // Literal bytes still owed by the last line, by the independent reading.
    let mut owed: u64 = 0;
    let mut first = true;
    let mut message_start = 0usize;
    let mut message_has_overlong = false;
    for frame in &frames {
        match frame {
            Merged::Line(bytes, f, lit) | Merged::Overlong(bytes, f, lit) => {
                assert_eq!(owed, 0, "a line inside a literal: {frame:?}");
                let nl = data[at..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .expect("a line without its line end");
                let line = &data[at..at + nl + 1];
                assert_eq!(*f, first, "first flag");
                if first {
                    message_start = at;
                    message_has_overlong = false;
                }
                if let Merged::Line(..) = frame {
                    assert_eq!(bytes.as_slice(), line, "line bytes");
                    assert!(line.len() <= max_line, "a line over the limit");
                } else {
                    assert!(line.len() > max_line, "an over-long line within the limit");
                    assert!(line.starts_with(bytes), "head is not the line's start");
                    assert!(!bytes.is_empty());
                    message_has_overlong = true;
                }
                let expect = if input.lines_only {
                    None
                } else {
                    announced(line)
                };
                assert_eq!(*lit, expect, "literal announcement of {:?}", line);
                owed = expect.map_or(0, |(n, _)| n);
                first = expect.is_none();
                at += line.len();
            }
            Merged::Literal(bytes, last) => {
                assert!(owed > 0, "literal data nobody announced");
                assert!(bytes.len() as u64 <= owed);
                assert_eq!(bytes.as_slice(), &data[at..at + bytes.len()]);
                owed -= bytes.len() as u64;
                assert_eq!(*last, owed == 0);
                at += bytes.len();
            }
            Merged::Complete(captured) => {
                assert!(first, "message complete in the middle of a message");
                let msg = &data[message_start..at];
                match captured {
                    Some(c) => {
                        assert!(
                            !message_has_overlong,
                            "captured a message with a dropped line"
                        );
                        assert_eq!(c.as_slice(), msg, "captured bytes");
                    }
                    None => assert!(message_has_overlong || msg.len() > capture),
                }
            }
        }
    }
    // Whatever is left was not framed: inside a literal nothing may be left, outside one
    // it holds no complete line.
    let rest = &data[at..];
    if owed > 0 {
        assert!(rest.is_empty(), "literal bytes left unframed");
    } else {
        assert!(!rest.contains(&b'\n'), "a complete line left unframed");
        assert!(pending <= rest.len());
    }
});
