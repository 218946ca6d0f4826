//! Real IMAP clients driven against any IMAP server on 127.0.0.1 (the
//! sealpost proxy, or Dovecot itself):
//!
//! * [`RawImap`]: a tiny synchronous client (plain / STARTTLS / implicit TLS
//!   via rustls) that returns the server's bytes exactly, literals included.
//!   [`parse_fetches`] picks FETCH items out of such bytes.
//! * [`imaplib_script`] / [`imaplib_spawn`]: python's imaplib with the
//!   prelude `tests/support/imap_prelude.py` (see its docstring for the
//!   names a script can use).
//! * [`curl_fetch`]: curl's IMAP support (`UID FETCH n BODY[]`).
//! * [`mbsync_pull`]: isync's mbsync pulling a mailbox into a Maildir.
//!
//! `tls_mode` arguments are `"tls"` (implicit TLS), `"starttls"` (plain
//! connect, STARTTLS required) or, where noted, `"plain"`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::net::PYTHON;

// ---------------------------------------------------------------------------
// Raw client
// ---------------------------------------------------------------------------

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// Reply to one tagged command sent with [`RawImap`].
#[derive(Debug, Clone)]
pub struct ImapReply {
    /// Raw bytes of everything the server sent before the tagged line
    /// (untagged responses and continuation requests), CRLFs and literals
    /// exactly as received.
    pub untagged: Vec<u8>,
    /// The tagged completion line including the tag and CRLF.
    pub tagged: Vec<u8>,
    /// "OK", "NO" or "BAD" (upper-cased).
    pub status: String,
}

impl ImapReply {
    pub fn is_ok(&self) -> bool {
        self.status == "OK"
    }
    /// The tagged line as text (lossy), without CRLF.
    pub fn tagged_text(&self) -> String {
        String::from_utf8_lossy(&self.tagged).trim_end().to_owned()
    }
    /// The untagged bytes as text (lossy).
    pub fn untagged_text(&self) -> String {
        String::from_utf8_lossy(&self.untagged).into_owned()
    }
    /// Untagged bytes split into responses (a response with literals stays
    /// in one piece), see [`split_responses`].
    pub fn responses(&self) -> Vec<Vec<u8>> {
        split_responses(&self.untagged)
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect()
    }
}

/// Minimal synchronous IMAP client that keeps the server's bytes exact.
///
/// Every read has a 60 s timeout (change with [`RawImap::set_timeout`]), so a
/// hung server fails the test instead of hanging it.
pub struct RawImap {
    stream: Box<dyn Stream>,
    tcp: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    next_tag: u32,
    /// The greeting line as received.
    pub greeting: Vec<u8>,
}

/// A rustls client config trusting only the PEM CA certificate(s) in
/// `cafile`.
pub fn rustls_client_config(cafile: &Path) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cafile)
        .unwrap_or_else(|e| panic!("read CA file {}: {e}", cafile.display()))
    {
        roots
            .add(cert.expect("parse CA certificate"))
            .expect("add CA certificate");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("rustls protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(cfg)
}

fn tls_wrap(tcp: TcpStream, cafile: Option<&Path>) -> Box<dyn Stream> {
    let cafile = cafile.expect("a CA file is needed for TLS");
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("server name");
    let conn = rustls::ClientConnection::new(rustls_client_config(cafile), name)
        .expect("rustls client connection");
    let mut s = rustls::StreamOwned::new(conn, tcp);
    // Complete the handshake now so certificate errors show up here.
    while s.conn.is_handshaking() {
        s.conn
            .complete_io(&mut s.sock)
            .unwrap_or_else(|e| panic!("TLS handshake with 127.0.0.1 failed: {e}"));
    }
    Box::new(s)
}

/// Quote a string as an IMAP quoted string.
pub fn imap_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        if ch == '"' || ch == '\\' {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('"');
    out
}

/// If `line` (ending in CRLF) ends with a literal announcement `{N}`,
/// `{N+}` or `~{N}`, return N.
fn literal_len(line: &[u8]) -> Option<usize> {
    let l = line
        .strip_suffix(b"\r\n")
        .or_else(|| line.strip_suffix(b"\n"))?;
    let l = l.strip_suffix(b"}")?;
    let l = l.strip_suffix(b"+").unwrap_or(l);
    let open = l.iter().rposition(|&b| b == b'{')?;
    let digits = &l[open + 1..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

impl RawImap {
    /// Connect to 127.0.0.1:`port` and read the greeting. `tls_mode`:
    /// "plain", "starttls" (STARTTLS issued right after the greeting) or
    /// "tls". The certificate is checked against `cafile` for 127.0.0.1.
    pub fn connect(port: u16, tls_mode: &str, cafile: Option<&Path>) -> RawImap {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
        tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        tcp.set_write_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let _ = tcp.set_nodelay(true);
        let clone = tcp.try_clone().expect("clone TcpStream");
        let stream: Box<dyn Stream> = match tls_mode {
            "plain" | "starttls" => Box::new(tcp),
            "tls" => tls_wrap(tcp, cafile),
            other => panic!("tls_mode must be plain, starttls or tls, not {other:?}"),
        };
        let mut c = RawImap {
            stream,
            tcp: clone,
            buf: Vec::new(),
            pos: 0,
            next_tag: 1,
            greeting: Vec::new(),
        };
        c.greeting = c.read_response();
        if tls_mode == "starttls" {
            let r = c.command("STARTTLS");
            assert!(
                r.is_ok(),
                "STARTTLS refused on port {port}: {}",
                r.tagged_text()
            );
            assert!(
                c.pos == c.buf.len(),
                "server sent data after STARTTLS OK before the handshake"
            );
            let tcp = c.tcp.try_clone().expect("clone TcpStream");
            c.stream = tls_wrap(tcp, cafile);
        }
        c
    }

    /// Connect (see [`RawImap::connect`]) and LOGIN; panics unless OK.
    pub fn connect_login(
        port: u16,
        tls_mode: &str,
        cafile: Option<&Path>,
        user: &str,
        password: &str,
    ) -> RawImap {
        let mut c = RawImap::connect(port, tls_mode, cafile);
        c.login(user, password);
        c
    }

    /// Read timeout for every later read.
    pub fn set_timeout(&mut self, t: Duration) {
        self.tcp.set_read_timeout(Some(t)).unwrap();
    }

    /// `LOGIN user password` (quoted); panics unless OK.
    pub fn login(&mut self, user: &str, password: &str) {
        let r = self.command(&format!(
            "LOGIN {} {}",
            imap_quote(user),
            imap_quote(password)
        ));
        assert!(r.is_ok(), "LOGIN as {user} failed: {}", r.tagged_text());
    }

    fn try_fill(&mut self) -> std::io::Result<()> {
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let mut chunk = [0u8; 65536];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!(
                            "IMAP server closed the connection; unread: {:?}",
                            String::from_utf8_lossy(&self.buf[self.pos..])
                        ),
                    ))
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Read one line (up to and including LF) without literal handling.
    pub fn try_read_line(&mut self) -> std::io::Result<Vec<u8>> {
        let mut searched = self.pos;
        loop {
            if let Some(i) = self.buf[searched..].iter().position(|&b| b == b'\n') {
                let end = searched + i + 1;
                let line = self.buf[self.pos..end].to_vec();
                self.pos = end;
                return Ok(line);
            }
            searched = self.buf.len();
            let before = self.pos;
            self.try_fill()?;
            // try_fill() may have compacted the buffer.
            searched -= before - self.pos;
        }
    }

    /// Like [`RawImap::try_read_line`]; panics on errors.
    pub fn read_line(&mut self) -> Vec<u8> {
        self.try_read_line()
            .unwrap_or_else(|e| panic!("reading from IMAP server: {e}"))
    }

    fn try_read_exact_bytes(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        while self.buf.len() - self.pos < n {
            self.try_fill()?;
        }
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(out)
    }

    /// Read one complete response: a line plus any literals it announces
    /// and the rest of the line after each literal, bytes exactly as sent.
    pub fn try_read_response(&mut self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let line = self.try_read_line()?;
            let lit = literal_len(&line);
            out.extend_from_slice(&line);
            match lit {
                Some(n) => {
                    let data = self.try_read_exact_bytes(n)?;
                    out.extend_from_slice(&data);
                }
                None => return Ok(out),
            }
        }
    }

    /// Like [`RawImap::try_read_response`]; panics on errors (timeout,
    /// connection closed).
    pub fn read_response(&mut self) -> Vec<u8> {
        self.try_read_response()
            .unwrap_or_else(|e| panic!("reading from IMAP server: {e}"))
    }

    /// Send raw bytes (no CRLF added).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to IMAP server");
        self.stream.flush().expect("flush to IMAP server");
    }

    /// A fresh tag ("T1", "T2", ...).
    pub fn new_tag(&mut self) -> String {
        let t = format!("T{}", self.next_tag);
        self.next_tag += 1;
        t
    }

    /// Read responses until the one tagged `tag`.
    pub fn read_until_tagged(&mut self, tag: &str) -> ImapReply {
        let prefix = format!("{tag} ");
        let mut untagged = Vec::new();
        loop {
            let resp = self.read_response();
            if resp.starts_with(prefix.as_bytes()) {
                let status = String::from_utf8_lossy(&resp[prefix.len()..])
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_ascii_uppercase();
                return ImapReply {
                    untagged,
                    tagged: resp,
                    status,
                };
            }
            untagged.extend_from_slice(&resp);
        }
    }

    /// Send `TAG command CRLF` and read everything up to the tagged reply.
    pub fn command(&mut self, command: &str) -> ImapReply {
        let tag = self.new_tag();
        self.send_raw(format!("{tag} {command}\r\n").as_bytes());
        self.read_until_tagged(&tag)
    }

    /// Like [`RawImap::command`], panicking unless OK; returns the untagged
    /// bytes.
    pub fn command_ok(&mut self, command: &str) -> Vec<u8> {
        let r = self.command(command);
        assert!(
            r.is_ok(),
            "IMAP command {command:?} failed: {}\n{}",
            r.tagged_text(),
            r.untagged_text()
        );
        r.untagged
    }

    /// Send `TAG prefix {N}` with a synchronizing literal: waits for the
    /// "+" continuation, then sends `literal` and `suffix` CRLF. If the
    /// server answers with a tagged reply instead of "+", that is returned.
    pub fn command_with_literal(
        &mut self,
        prefix: &str,
        literal: &[u8],
        suffix: &str,
    ) -> ImapReply {
        let tag = self.new_tag();
        self.send_raw(format!("{tag} {prefix} {{{}}}\r\n", literal.len()).as_bytes());
        let tagp = format!("{tag} ");
        let mut untagged = Vec::new();
        loop {
            let resp = self.read_response();
            if resp.starts_with(b"+") {
                break;
            }
            if resp.starts_with(tagp.as_bytes()) {
                let status = String::from_utf8_lossy(&resp[tagp.len()..])
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_ascii_uppercase();
                return ImapReply {
                    untagged,
                    tagged: resp,
                    status,
                };
            }
            untagged.extend_from_slice(&resp);
        }
        let mut data = literal.to_vec();
        data.extend_from_slice(suffix.as_bytes());
        data.extend_from_slice(b"\r\n");
        self.send_raw(&data);
        let mut r = self.read_until_tagged(&tag);
        untagged.extend_from_slice(&r.untagged);
        r.untagged = untagged;
        r
    }

    /// APPEND, and the UID the server gave the message (UIDPLUS's APPENDUID); `Err`
    /// names what it said instead.
    pub fn append_uid(
        &mut self,
        mailbox: &str,
        flags: &[&str],
        message: &[u8],
    ) -> Result<u32, String> {
        let r = self.append(mailbox, flags, message);
        let text = r.tagged_text();
        if !r.is_ok() {
            return Err(format!("APPEND to {mailbox} failed: {text}"));
        }
        text.split("[APPENDUID ")
            .nth(1)
            .and_then(|rest| rest.split([' ', ']']).nth(1)?.parse().ok())
            .ok_or_else(|| format!("no APPENDUID in {text:?}"))
    }

    /// EXAMINE `mailbox` (so that nothing sets \Seen), then the server's untagged answer
    /// to `UID FETCH uid (items)`, exactly as sent. `items` may come with or without
    /// the parentheses.
    pub fn examine_fetch(&mut self, mailbox: &str, uid: u32, items: &str) -> Vec<u8> {
        self.command_ok(&format!("EXAMINE {}", imap_quote(mailbox)));
        let items = items.trim();
        let items = if items.starts_with('(') {
            items.to_owned()
        } else {
            format!("({items})")
        };
        self.command_ok(&format!("UID FETCH {uid} {items}"))
    }

    /// `APPEND mailbox (flags) {N}` + message; returns the reply.
    pub fn append(&mut self, mailbox: &str, flags: &[&str], message: &[u8]) -> ImapReply {
        let prefix = format!("APPEND {} ({})", imap_quote(mailbox), flags.join(" "));
        self.command_with_literal(&prefix, message, "")
    }

    /// Start IDLE: sends IDLE, waits for "+"; returns the tag. Untagged
    /// responses that arrive before the "+" are returned too.
    pub fn idle_start(&mut self) -> (String, Vec<u8>) {
        let tag = self.new_tag();
        self.send_raw(format!("{tag} IDLE\r\n").as_bytes());
        let mut before = Vec::new();
        loop {
            let resp = self.read_response();
            if resp.starts_with(b"+") {
                return (tag, before);
            }
            assert!(
                !resp.starts_with(format!("{tag} ").as_bytes()),
                "IDLE refused: {}",
                String::from_utf8_lossy(&resp)
            );
            before.extend_from_slice(&resp);
        }
    }

    /// During IDLE: read responses until one contains `want`, within
    /// `timeout`; returns all responses read (raw). Panics on timeout.
    pub fn idle_wait(&mut self, want: &str, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        let old = self.tcp.read_timeout().ok().flatten();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {want:?} within {timeout:?} during IDLE; got {:?}",
                String::from_utf8_lossy(&got)
            );
            self.tcp.set_read_timeout(Some(left)).unwrap();
            let r = self.try_read_response();
            self.tcp.set_read_timeout(old).unwrap();
            match r {
                Ok(resp) => {
                    let hit = find(&resp, want.as_bytes()).is_some();
                    got.extend_from_slice(&resp);
                    if hit {
                        return got;
                    }
                }
                Err(e) => panic!(
                    "no {want:?} within {timeout:?} during IDLE ({e}); got {:?}",
                    String::from_utf8_lossy(&got)
                ),
            }
        }
    }

    /// End IDLE with DONE; returns the reply (panics unless OK).
    pub fn idle_done(&mut self, tag: &str) -> ImapReply {
        self.send_raw(b"DONE\r\n");
        let r = self.read_until_tagged(tag);
        assert!(r.is_ok(), "IDLE ended with {}", r.tagged_text());
        r
    }

    /// LOGOUT, ignoring errors.
    pub fn logout(mut self) {
        let tag = self.new_tag();
        let _ = self
            .stream
            .write_all(format!("{tag} LOGOUT\r\n").as_bytes());
        let _ = self.stream.flush();
        self.tcp.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let prefix = format!("{tag} ");
        while let Ok(resp) = self.try_read_response() {
            if resp.starts_with(prefix.as_bytes()) {
                break;
            }
        }
    }
}

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Split raw server bytes into responses: each ends at a CRLF that is not
/// the end of a literal announcement (literal data is kept inside).
pub fn split_responses(raw: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < raw.len() {
        match raw[i..].iter().position(|&b| b == b'\n') {
            None => {
                out.push(&raw[start..]);
                return out;
            }
            Some(off) => {
                let end = i + off + 1;
                match literal_len(&raw[i..end]) {
                    Some(n) => i = (end + n).min(raw.len()),
                    None => {
                        out.push(&raw[start..end]);
                        start = end;
                        i = end;
                    }
                }
            }
        }
    }
    if start < raw.len() {
        out.push(&raw[start..]);
    }
    out
}

/// One `* N FETCH (...)` response picked apart by [`parse_fetches`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// Message sequence number.
    pub seq: u32,
    /// (item name as sent, e.g. "UID", "FLAGS", "BODY[]", "BODY[]<0>",
    /// "BODY[HEADER.FIELDS (FROM)]"; value). Values: literal and quoted
    /// strings decoded to their content; lists raw including parentheses;
    /// atoms and numbers as is (NIL is `b"NIL"`).
    pub items: Vec<(String, Vec<u8>)>,
}

impl Fetch {
    /// Value of the item named `name` (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.items
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
    pub fn uid(&self) -> Option<u32> {
        self.get("UID")
            .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
    }
    /// FLAGS as a list of strings.
    pub fn flags(&self) -> Option<Vec<String>> {
        let v = self.get("FLAGS")?;
        let s = String::from_utf8_lossy(v);
        Some(
            s.trim_start_matches('(')
                .trim_end_matches(')')
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        )
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
    }
    fn eat(&mut self, s: &[u8]) -> bool {
        if self.b[self.i..].len() >= s.len()
            && self.b[self.i..self.i + s.len()].eq_ignore_ascii_case(s)
        {
            self.i += s.len();
            true
        } else {
            false
        }
    }
    /// `{N}` / `~{N}` CRLF data -> data
    fn literal(&mut self) -> Option<Vec<u8>> {
        if self.peek() == Some(b'~') {
            self.i += 1;
        }
        if self.peek() != Some(b'{') {
            return None;
        }
        let close = self.b[self.i..].iter().position(|&b| b == b'}')? + self.i;
        let n: usize = std::str::from_utf8(&self.b[self.i + 1..close])
            .ok()?
            .trim_end_matches('+')
            .parse()
            .ok()?;
        let mut j = close + 1;
        if self.b.get(j) == Some(&b'\r') {
            j += 1;
        }
        if self.b.get(j) == Some(&b'\n') {
            j += 1;
        }
        let data = self.b.get(j..j + n)?.to_vec();
        self.i = j + n;
        Some(data)
    }
    fn quoted(&mut self) -> Option<Vec<u8>> {
        if self.peek() != Some(b'"') {
            return None;
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let c = self.peek()?;
            self.i += 1;
            match c {
                b'"' => return Some(out),
                b'\\' => {
                    out.push(self.peek()?);
                    self.i += 1;
                }
                _ => out.push(c),
            }
        }
    }
    /// A parenthesized list, returned raw (literals inside kept raw).
    fn list(&mut self) -> Option<Vec<u8>> {
        let start = self.i;
        let mut depth = 0usize;
        loop {
            match self.peek()? {
                b'(' => {
                    depth += 1;
                    self.i += 1;
                }
                b')' => {
                    depth -= 1;
                    self.i += 1;
                    if depth == 0 {
                        return Some(self.b[start..self.i].to_vec());
                    }
                }
                b'"' => {
                    self.quoted()?;
                }
                b'{' | b'~' => {
                    if self.literal().is_none() {
                        self.i += 1;
                    }
                }
                _ => self.i += 1,
            }
        }
    }
    fn atom(&mut self) -> Vec<u8> {
        let start = self.i;
        while let Some(c) = self.peek() {
            if c == b' ' || c == b')' || c == b'\r' || c == b'\n' {
                break;
            }
            self.i += 1;
        }
        self.b[start..self.i].to_vec()
    }
    /// Item name: atom with optional [section] (may contain spaces and
    /// parentheses) and optional <partial>.
    fn item_name(&mut self) -> String {
        let start = self.i;
        let mut depth = 0usize;
        while let Some(c) = self.peek() {
            match c {
                b'[' => depth += 1,
                b']' => depth = depth.saturating_sub(1),
                b' ' | b')' if depth == 0 => break,
                _ => {}
            }
            self.i += 1;
        }
        String::from_utf8_lossy(&self.b[start..self.i]).into_owned()
    }
    fn value(&mut self) -> Option<Vec<u8>> {
        match self.peek()? {
            b'{' | b'~' => self.literal(),
            b'"' => self.quoted(),
            b'(' => self.list(),
            _ => Some(self.atom()),
        }
    }
}

fn parse_one_fetch(resp: &[u8]) -> Option<Fetch> {
    let mut c = Cursor { b: resp, i: 0 };
    if !c.eat(b"* ") {
        return None;
    }
    let num = c.atom();
    let seq: u32 = std::str::from_utf8(&num).ok()?.parse().ok()?;
    if !c.eat(b" FETCH (") {
        return None;
    }
    let mut items = Vec::new();
    loop {
        c.skip_spaces();
        match c.peek() {
            None => break,
            Some(b')') => break,
            _ => {}
        }
        let name = c.item_name();
        if name.is_empty() {
            break;
        }
        c.skip_spaces();
        let v = c.value()?;
        items.push((name, v));
    }
    Some(Fetch { seq, items })
}

/// All `* N FETCH (...)` responses in raw server bytes (e.g.
/// [`ImapReply::untagged`] or `Dovecot::fetch_raw`); other responses are
/// skipped.
pub fn parse_fetches(raw: &[u8]) -> Vec<Fetch> {
    split_responses(raw)
        .into_iter()
        .filter_map(parse_one_fetch)
        .collect()
}

// ---------------------------------------------------------------------------
// python imaplib
// ---------------------------------------------------------------------------

/// Result of a python imaplib session.
#[derive(Debug, Clone)]
pub struct ImaplibOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl ImaplibOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// A running imaplib session (see [`imaplib_spawn`]).
pub struct ImaplibChild {
    child: Child,
    rx: mpsc::Receiver<String>,
    lines: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl ImaplibChild {
    /// Wait for a stdout line containing `needle` (e.g. a marker the script
    /// prints with `show("IDLING")`); returns that line. Panics on timeout
    /// or if the script ends first (with its output).
    pub fn wait_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.contains(needle);
                    self.lines.push(l.clone());
                    if hit {
                        return l;
                    }
                }
                Err(e) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    let stderr = self
                        .stderr
                        .take()
                        .map(|h| h.join().unwrap_or_default())
                        .unwrap_or_default();
                    panic!(
                        "imaplib script: no line containing {needle:?} ({e:?})\nstdout:\n{}\nstderr:\n{stderr}",
                        self.lines.join("\n")
                    );
                }
            }
        }
    }

    /// Wait (up to 120 s) for the script to end; never panics on a script
    /// failure.
    pub fn finish_output(mut self) -> ImaplibOutput {
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("wait for python") {
                break st;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                break self.child.wait().expect("wait for python");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends at EOF.
        while let Ok(l) = self.rx.recv_timeout(Duration::from_secs(10)) {
            self.lines.push(l);
        }
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let mut stdout = self.lines.join("\n");
        if !stdout.is_empty() {
            stdout.push('\n');
        }
        ImaplibOutput {
            status,
            stdout,
            stderr,
        }
    }

    /// Wait for the script to end; panics (showing stdout and the python
    /// traceback) unless it exited 0. Returns stdout.
    pub fn finish(self) -> String {
        let out = self.finish_output();
        if !out.success() {
            panic!(
                "imaplib script failed ({}):\nstdout:\n{}\nstderr:\n{}",
                out.status, out.stdout, out.stderr
            );
        }
        out.stdout
    }
}

impl Drop for ImaplibChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Start a python imaplib session in the background (see
/// `tests/support/imap_prelude.py` for what `script_body` can use; it is
/// dedented first). `tls_mode`: "tls", "starttls" or "plain". `user` "-"
/// connects without logging in.
pub fn imaplib_spawn(
    port: u16,
    tls_mode: &str,
    cafile: &Path,
    user: &str,
    password: &str,
    script_body: &str,
) -> ImaplibChild {
    let prelude = super::support_file("imap_prelude.py");
    let mut child = Command::new(PYTHON)
        .arg(&prelude)
        .arg(port.to_string())
        .arg(tls_mode)
        .arg(cafile)
        .arg(user)
        .arg(password)
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {PYTHON}: {e}"));
    {
        let mut sin = child.stdin.take().expect("python stdin");
        // The body is read completely before anything runs; a failure to
        // write shows up as a script error.
        let _ = sin.write_all(script_body.as_bytes());
    }
    let stdout = child.stdout.take().expect("python stdout");
    let mut stderr = child.stderr.take().expect("python stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(l) => {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    ImaplibChild {
        child,
        rx,
        lines: Vec::new(),
        stderr: Some(stderr),
    }
}

/// Run a python imaplib session to completion and return its stdout;
/// panics with the traceback if it fails. Example:
///
/// ```ignore
/// let out = imaplib_script(port, "starttls", &ca.ca_pem, "alice@example.com", "alicepw", r#"
///     ok(c.select("INBOX"))
///     typ, data = c.uid("FETCH", "1", "(BODY.PEEK[])")
///     emit("body", literal(data))
/// "#);
/// assert_eq!(script_value(&out, "body"), expected);
/// ```
pub fn imaplib_script(
    port: u16,
    tls_mode: &str,
    cafile: &Path,
    user: &str,
    password: &str,
    script_body: &str,
) -> String {
    imaplib_spawn(port, tls_mode, cafile, user, password, script_body).finish()
}

/// Like [`imaplib_script`] but returns exit status, stdout and stderr
/// without panicking (for sessions expected to fail, e.g. a bad login).
pub fn imaplib_run(
    port: u16,
    tls_mode: &str,
    cafile: &Path,
    user: &str,
    password: &str,
    script_body: &str,
) -> ImaplibOutput {
    imaplib_spawn(port, tls_mode, cafile, user, password, script_body).finish_output()
}

/// The bytes of the first `label=<base64>` line (as printed by `emit`).
/// Panics if there is none.
pub fn script_value(stdout: &str, label: &str) -> Vec<u8> {
    script_values(stdout, label)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {label}=... line in script output:\n{stdout}"))
}

/// The bytes of every `label=<base64>` line, in order.
pub fn script_values(stdout: &str, label: &str) -> Vec<Vec<u8>> {
    let prefix = format!("{label}=");
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .unwrap_or_else(|e| panic!("bad base64 after {label}=: {e}"))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------

/// Run curl against `imap(s)://127.0.0.1:port/<url_path>` with the given
/// extra arguments (e.g. `["-X", "UID SEARCH ALL"]`). "starttls" uses
/// `imap://` with `--ssl-reqd` (curl then issues STARTTLS and refuses to go
/// on without it); "tls" uses `imaps://`; "plain" uses `imap://` without TLS.
pub fn curl_imap(
    port: u16,
    tls_mode: &str,
    cafile: &Path,
    user: &str,
    password: &str,
    url_path: &str,
    extra: &[&str],
) -> std::process::Output {
    let (scheme, tls_args): (&str, &[&str]) = match tls_mode {
        "tls" => ("imaps", &[]),
        "starttls" => ("imap", &["--ssl-reqd"]),
        "plain" => ("imap", &[]),
        other => panic!("tls_mode must be tls, starttls or plain, not {other:?}"),
    };
    let url = format!("{scheme}://127.0.0.1:{port}/{url_path}");
    Command::new("curl")
        // -q: ignore ~/.curlrc; -sS: no progress, but show errors.
        .args(["-q", "-sS", "--max-time", "120", "--connect-timeout", "20"])
        .args(tls_args)
        .arg("--cacert")
        .arg(cafile)
        .arg("-u")
        .arg(format!("{user}:{password}"))
        .args(extra)
        .arg(&url)
        .stdin(Stdio::null())
        .output()
        .expect("run curl")
}

/// curl fetching message `uid` of `mailbox` (`.../MAILBOX;UID=N`: curl
/// sends `UID FETCH N BODY[]`, which sets \Seen) and writing the message
/// bytes, exactly, to stdout. Panics with curl's stderr on failure.
pub fn curl_fetch(
    port: u16,
    tls_mode: &str,
    cafile: &Path,
    user: &str,
    password: &str,
    mailbox: &str,
    uid: u32,
) -> Vec<u8> {
    let path = format!("{};UID={uid}", super::percent_encode(mailbox));
    let out = curl_imap(port, tls_mode, cafile, user, password, &path, &[]);
    if !out.status.success() {
        panic!(
            "curl fetch of {mailbox};UID={uid} on port {port} ({tls_mode}) failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.stdout
}

// ---------------------------------------------------------------------------
// mbsync
// ---------------------------------------------------------------------------

/// A mailbox pulled by [`mbsync_pull`] into a local Maildir.
pub struct MbsyncPull {
    /// Holds the mbsyncrc and the Maildir; removed on drop.
    pub dir: tempfile::TempDir,
    pub rc: PathBuf,
    /// The local Maildir (with cur/ new/ tmp/ and mbsync's state files).
    pub maildir: PathBuf,
    /// mbsync's stdout+stderr of the last run.
    pub output: String,
    /// (file, bytes) of each message, ordered by the local UID mbsync gave
    /// it (which follows the server's UID order). The bytes are as mbsync
    /// stores them: LF line ends and an added `X-TUID:` header; compare
    /// with [`mbsync_normalize`].
    pub messages: Vec<(PathBuf, Vec<u8>)>,
}

impl MbsyncPull {
    /// Run mbsync again with the same configuration (pulls what is new) and
    /// refresh `messages`.
    pub fn rerun(&mut self) {
        self.output = run_mbsync(&self.rc);
        self.messages = maildir_messages(&self.maildir);
    }

    /// Messages after [`mbsync_normalize`].
    pub fn normalized(&self) -> Vec<Vec<u8>> {
        self.messages
            .iter()
            .map(|(_, m)| mbsync_normalize(m))
            .collect()
    }
}

fn mbsync_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        if ch == '"' || ch == '\\' {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('"');
    out
}

fn run_mbsync(rc: &Path) -> String {
    let home = rc.parent().expect("rc dir");
    let out = Command::new("mbsync")
        .arg("-c")
        .arg(rc)
        .arg("-a")
        // MBSYNC_DEBUG=1: mbsync's network trace, printed (to see how it pipelines).
        .args(std::env::var("MBSYNC_DEBUG").ok().map(|_| "-Dn"))
        .env("HOME", home)
        .stdin(Stdio::null())
        .output()
        .expect("run mbsync");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if std::env::var("MBSYNC_DEBUG").is_ok() {
        eprintln!("{text}");
    }
    if !out.status.success() {
        let conf = std::fs::read_to_string(rc).unwrap_or_default();
        panic!(
            "mbsync failed ({}):\n{text}\n--- {}:\n{conf}",
            out.status,
            rc.display()
        );
    }
    text
}

/// Local UID from an mbsync Maildir file name (`...,U=<n>:2,FLAGS`).
fn mbsync_uid(name: &str) -> u64 {
    name.split(",U=")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .unwrap_or(u64::MAX)
}

fn maildir_messages(maildir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for sub in ["new", "cur"] {
        if let Ok(rd) = std::fs::read_dir(maildir.join(sub)) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') {
                    files.push((mbsync_uid(&name), name, e.path()));
                }
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|(_, _, p)| {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            (p, data)
        })
        .collect()
}

/// Pull `mailbox` from the IMAP server on `localhost:port` into a fresh
/// local Maildir with mbsync (isync 1.4). `tls_mode`: "tls" (SSLType IMAPS)
/// or "starttls" (SSLType STARTTLS); the certificate is checked against
/// `cafile` for the name "localhost" (mbsync checks DNS names only).
/// Config: `Sync Pull`, `Create Near`, `Expunge None`, `SyncState *`.
/// Panics with mbsync's output on failure.
pub fn mbsync_pull(
    port: u16,
    tls_mode: &str,
    cafile: &Path,
    user: &str,
    password: &str,
    mailbox: &str,
) -> MbsyncPull {
    let ssl_type = match tls_mode {
        "tls" => "IMAPS",
        "starttls" => "STARTTLS",
        "plain" => "None",
        other => panic!("tls_mode must be tls, starttls or plain, not {other:?}"),
    };
    let dir = super::tempdir();
    let store = dir.path().join("mail");
    std::fs::create_dir_all(&store).expect("create mbsync store dir");
    let maildir = store.join("pulled");
    let rc = dir.path().join("mbsyncrc");
    let conf = format!(
        "IMAPAccount acc\n\
         Host localhost\n\
         Port {port}\n\
         User {user}\n\
         Pass {pass}\n\
         SSLType {ssl_type}\n\
         CertificateFile {ca}\n\
         Timeout 60\n\
         \n\
         IMAPStore remote\n\
         Account acc\n\
         \n\
         MaildirStore local\n\
         Path {store}/\n\
         Inbox {store}/inbox\n\
         SubFolders Verbatim\n\
         \n\
         Channel pull\n\
         Far {far}\n\
         Near :local:pulled\n\
         Sync Pull\n\
         Create Near\n\
         Expunge None\n\
         SyncState *\n",
        user = mbsync_quote(user),
        pass = mbsync_quote(password),
        ca = cafile.display(),
        store = store.display(),
        far = mbsync_quote(&format!(":remote:{mailbox}")),
    );
    std::fs::write(&rc, conf).expect("write mbsyncrc");
    let output = run_mbsync(&rc);
    let messages = maildir_messages(&maildir);
    MbsyncPull {
        dir,
        rc,
        maildir,
        output,
        messages,
    }
}

/// Undo what mbsync does to a message stored in a Maildir: drop the
/// `X-TUID:` header line it adds to the header and turn LF line ends back
/// into CRLF. For a message that used CRLF throughout, the result equals
/// the bytes the server sent.
pub fn mbsync_normalize(stored: &[u8]) -> Vec<u8> {
    let header_end = find(stored, b"\n\n").map(|i| i + 1).unwrap_or(stored.len());
    let mut without = Vec::with_capacity(stored.len());
    let mut removed = false;
    let mut i = 0;
    while i < stored.len() {
        let end = stored[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| i + p + 1)
            .unwrap_or(stored.len());
        let line = &stored[i..end];
        if !removed && i < header_end && line.starts_with(b"X-TUID: ") {
            removed = true;
        } else {
            without.extend_from_slice(line);
        }
        i = end;
    }
    let mut out = Vec::with_capacity(without.len() + without.len() / 32);
    let mut prev = 0u8;
    for &b in &without {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}
