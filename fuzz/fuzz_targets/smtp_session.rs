//! The SMTP submission session (sans I/O) fed arbitrary client bytes in arbitrary
//! chunks, with arbitrary upstream verdicts on AUTH and on each message.
//!
//! Properties: never a panic; every reply line is `DDD SP text CRLF` or `DDD - text
//! CRLF` (RFC 5321 §4.2) with printable text, the lines of one reply share their code
//! and the reply ends with a space line; nothing is relayed before upstream accepted a
//! login (no relay without authentication), a relayed message has a sender and between
//! one and `max_recipients` recipients and fits `max_message_size`; after STARTTLS
//! nothing the client sent before the handshake is acted on (RFC 3207 §4.2).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealpost::smtp::session::{Action, Session, SessionConfig};
use sealpost::smtp::Reply;

#[path = "common/input.rs"]
mod input;

/// Checks the replies written since the last call: whole lines, whole replies.
fn check_replies(out: &[u8], partial: &mut Vec<u8>) {
    partial.extend_from_slice(out);
    let mut reply_code: Option<&[u8]> = None;
    let text = std::mem::take(partial);
    let mut rest = &text[..];
    while let Some(p) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..=p];
        rest = &rest[p + 1..];
        assert!(line.len() >= 6, "short reply line {line:?}");
        assert!(line.ends_with(b"\r\n"), "reply line without CRLF {line:?}");
        let code = &line[..3];
        assert!(
            code[0].is_ascii_digit() && (b'2'..=b'5').contains(&code[0]),
            "reply code {line:?}"
        );
        assert!(
            code[1].is_ascii_digit() && code[2].is_ascii_digit(),
            "{line:?}"
        );
        assert!(line[3] == b' ' || line[3] == b'-', "separator {line:?}");
        let body = &line[4..line.len() - 2];
        assert!(
            body.iter().all(|b| (b' '..=b'~').contains(b)),
            "unprintable reply text {line:?}"
        );
        if let Some(c) = reply_code {
            assert_eq!(c, code, "one reply, two codes");
        }
        reply_code = if line[3] == b'-' { Some(code) } else { None };
    }
    // A multi-line reply is always written whole.
    assert!(
        reply_code.is_none() && rest.is_empty(),
        "unterminated reply {text:?}"
    );
}

// Input layout: flags (TLS listener, STARTTLS available, plaintext AUTH allowed, small
// limits), upstream's verdicts (one bit per AUTH or message, cycled), a chunk size,
// then the client's bytes.
fuzz_target!(|bytes: &[u8]| {
    let mut raw = input::Input(bytes);
    let flags = raw.byte();
    let verdicts = raw.byte();
    let chunk = raw.byte() as usize % 64 + 1;
    let stream = raw.rest();
    let small = flags & 8 != 0;
    let cfg = SessionConfig {
        hostname: "sealpost.fuzz".into(),
        max_message_size: if small { 64 } else { 1 << 20 },
        max_line_length: if small { 40 } else { 1000 },
        max_recipients: if small { 2 } else { 100 },
        starttls_available: flags & 2 != 0,
        plaintext_auth_ok: flags & 4 != 0,
    };
    let max_size = cfg.max_message_size;
    let max_rcpts = cfg.max_recipients;
    let mut s = Session::new(cfg, flags & 1 != 0);
    let mut partial = Vec::new();
    let mut answers = 0u32;
    let mut verdict = || {
        let ok = verdicts & (1 << (answers % 8)) == 0;
        answers += 1;
        (ok, 400 + (answers * 37 % 200) as u16)
    };
    let mut authenticated = false;
    check_replies(&s.take_output(), &mut partial);
    'feed: for piece in stream.chunks(chunk) {
        s.feed(piece);
        // Drive the session as the server task does, answering its actions.
        loop {
            let action = s.poll();
            check_replies(&s.take_output(), &mut partial);
            match action {
                Action::NeedInput => break,
                Action::Close => break 'feed,
                Action::StartTls => {
                    assert!(!s.is_tls(), "STARTTLS inside TLS");
                    // The handshake; whatever the client sent ahead of it is gone.
                    authenticated = false;
                    s.tls_started();
                    assert!(matches!(s.poll(), Action::NeedInput));
                    assert!(s.take_output().is_empty(), "acted on pre-handshake input");
                    break;
                }
                Action::Authenticate { user, password: _ } => {
                    assert!(!authenticated, "AUTH twice");
                    let (ok, code) = verdict();
                    if ok {
                        authenticated = true;
                        s.auth_result(Ok(user));
                    } else {
                        s.auth_result(Err(Reply::new(code, "5.7.8 no")));
                    }
                }
                Action::Deliver { envelope, message } => {
                    assert!(authenticated, "relayed without authentication");
                    assert_eq!(envelope.login.as_deref(), s.user());
                    assert!(!envelope.rcpts.is_empty() && envelope.rcpts.len() <= max_rcpts);
                    assert!(message.len() <= max_size, "message over the size limit");
                    let (ok, code) = verdict();
                    let r = if ok {
                        Reply {
                            code: 250,
                            lines: vec!["2.0.0 queued".into(), "line\r\ntwo".into()],
                        }
                    } else {
                        Reply::new(code, "4.0.0 \u{1b}[31mupstream\0says no")
                    };
                    s.delivered(r);
                }
            }
            check_replies(&s.take_output(), &mut partial);
        }
    }
});
