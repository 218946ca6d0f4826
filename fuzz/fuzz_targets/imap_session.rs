//! The IMAP proxy session (sans I/O) between a fuzzed client and a fuzzed upstream.
//!
//! The client speaks the protocol the way a real client may: commands from a vocabulary
//! (login, select, FETCH in its forms, SEARCH and SORT with their literals, APPEND and
//! MULTIAPPEND, IDLE, AUTHENTICATE, STARTTLS, ...) and garbage lines, and it waits for a
//! `+` before the bytes of a synchronizing literal, as RFC 3501 §7.5 requires. Literals
//! may carry a marker command, `ZZ9 DELETE INBOX`; nothing else the client sends ever
//! holds `ZZ9`. Upstream answers with arbitrary bytes, continuations, tagged answers to
//! the commands it received, untagged data and FETCH responses with message literals;
//! decryptions and seals the session asks for complete in any order.
//!
//! Property: never a panic, and upstream never reads a command starting with `ZZ9 `,
//! as a real server reads its input: literals it was announced are data, the bytes of a
//! synchronizing literal count only after upstream's own `+` (sending them before is a
//! violation in itself), a synchronizing literal upstream refused is followed by a new
//! command, and a line answering upstream's `+` during AUTHENTICATE is a SASL response.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sealpost::imap::session::{Output, Session};
use sealpost::imap::ImapContext;
use std::sync::{Arc, OnceLock};

#[path = "common/panics.rs"]
mod panics;
#[path = "common/wire.rs"]
mod wire;
use wire::{tag_of, Piece, Wire};

const MARKER: &[u8] = b"ZZ9 DELETE INBOX\r\n";

struct Fixed {
    identities: Vec<Arc<sealpost::keys::LoadedIdentity>>,
    store: Arc<sealpost::keys::KeyStore>,
    /// A message encrypted to mallory, for FETCH responses that decrypt.
    encrypted: Vec<u8>,
    _dir: tempfile::TempDir,
}

fn fixed() -> &'static Fixed {
    static F: OnceLock<Fixed> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let identities: Vec<_> = ["mallory@corp.example", "victim@corp.example"]
            .iter()
            .map(|a| {
                let g = sealpost::keys::generate(a, dir.path()).unwrap();
                Arc::new(sealpost::keys::load_identity(&g.identity(a, None)).unwrap())
            })
            .collect();
        let store = Arc::new(sealpost::keys::KeyStore::open(&dir.path().join("store")).unwrap());
        let plain = b"From: victim@corp.example\r\nTo: mallory@corp.example\r\nSubject: hi\r\n\r\nhello ZZ9\r\n";
        let encrypted = sealpost::pgp::stored::seal(
            plain,
            &identities[0].cert,
            identities[0].signer.as_ref(),
            "b0undary",
        )
        .unwrap();
        Fixed {
            identities,
            store,
            encrypted,
            _dir: dir,
        }
    })
}

fn context(max_line: usize) -> Arc<ImapContext> {
    let f = fixed();
    Arc::new(ImapContext {
        account: "fuzz".into(),
        autocrypt: None,
        identities: f.identities.clone(),
        store: f.store.clone(),
        cache: Arc::new(sealpost::imap::cache::ViewCache::new(1 << 20)),
        decrypt_slots: Arc::new(tokio::sync::Semaphore::new(2)),
        max_message_size: 1 << 16,
        max_line_length: max_line,
        max_job_view_bytes: 1 << 18,
        encrypt_append: sealpost::config::EncryptAppend::All,
        search: Default::default(),
        ahead: Default::default(),
    })
}

#[derive(Arbitrary, Debug)]
struct Input {
    tls: bool,
    plaintext_ok: bool,
    short_lines: bool,
    preauth: bool,
    log_in: bool,
    events: Vec<Event>,
}

#[derive(Arbitrary, Debug)]
enum Event {
    Client(ClientItem),
    Upstream(UpItem),
    /// Completes the n-th outstanding decryption or seal.
    Complete {
        which: u8,
        ok: bool,
    },
    TlsDone,
}

#[derive(Arbitrary, Debug)]
enum ClientItem {
    Command {
        verb: u8,
    },
    WithLiterals {
        verb: u8,
        literals: Vec<Lit>,
    },
    /// A line of anything (no braces, no line ends, no marker).
    Line(Vec<u8>),
    Done,
}

#[derive(Arbitrary, Debug)]
struct Lit {
    sync: bool,
    before: Vec<u8>,
    marker: bool,
    after: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum UpItem {
    Plus,
    Tagged {
        which: u8,
        status: u8,
    },
    Untagged(u8),
    Fetch {
        seq: u8,
        uid: u8,
        kind: u8,
        body: Vec<u8>,
    },
    Raw(Vec<u8>),
}

const VERBS: &[&str] = &[
    "NOOP",
    "CAPABILITY",
    "SELECT INBOX",
    "EXAMINE INBOX",
    "LIST \"\" *",
    "STATUS INBOX (MESSAGES UIDNEXT)",
    "FETCH 1:* (FLAGS)",
    "UID FETCH 1:* (BODY.PEEK[])",
    "FETCH 1 (BODY[] RFC822.SIZE)",
    "UID FETCH 2 (BODYSTRUCTURE ENVELOPE)",
    "UID FETCH 1:3 (BODY.PEEK[HEADER] BODY.PEEK[1]<0.10> RFC822.SIZE)",
    "FETCH 1 RFC822",
    "STORE 1 +FLAGS (\\Seen)",
    "UID SEARCH ALL",
    "SEARCH TEXT hello",
    "UID SEARCH SUBJECT \"x y\" FROM bob",
    "SEARCH CHARSET UTF-8 BODY hello",
    "UID SEARCH OR SUBJECT a NOT BODY b",
    "SEARCH RETURN (MIN MAX COUNT) TEXT x",
    "SEARCH SINCE 1-Jan-2020 LARGER 10",
    "SORT (DATE) UTF-8 ALL",
    "UID SORT (REVERSE SUBJECT) UTF-8 TEXT foo",
    "IDLE",
    "STARTTLS",
    "COMPRESS DEFLATE",
    "ID NIL",
    "ENABLE UTF8=ACCEPT",
    "NAMESPACE",
    "CLOSE",
    "EXPUNGE",
    "AUTHENTICATE PLAIN",
    "AUTHENTICATE PLAIN AG1hbGxvcnlAY29ycC5leGFtcGxlAHB3",
    "LOGIN mallory@corp.example pw",
    "LOGIN victim@corp.example pw",
    "LOGOUT",
];

/// Commands with literals: the text before the first literal, between literals, after.
const LITERAL_VERBS: &[(&str, &str, &str)] = &[
    ("APPEND INBOX", "", ""),
    ("APPEND INBOX (\\Seen)", "", ""),
    ("APPEND Sent", " (\\Seen) \"1-Jan-2020 00:00:00 +0000\"", ""),
    ("LOGIN", " ", ""),
    ("LOGIN mallory@corp.example", " ", ""),
    ("SEARCH SUBJECT", " BODY", ""),
    ("UID SEARCH CHARSET UTF-8 TEXT", " OR FROM", " ALL"),
    ("SORT (DATE) UTF-8 BODY", " SUBJECT", ""),
    ("UID SORT (ARRIVAL) UTF-8 HEADER X-A", " ", ""),
    ("SELECT", " ", ""),
    ("NOOP", " ", ""),
    ("STATUS", " ", " (MESSAGES)"),
    ("FETCH 1 (BODY[HEADER.FIELDS", " ", ")]"),
    ("CREATE", " ", ""),
];

const UNTAGGED: &[&[u8]] = &[
    b"* 3 EXISTS\r\n",
    b"* OK [UIDVALIDITY 7] ok\r\n",
    b"* CAPABILITY IMAP4rev1 IDLE LITERAL+ SORT ESEARCH COMPRESS=DEFLATE AUTH=PLAIN\r\n",
    b"* SEARCH 1 2 3\r\n",
    b"* SORT 2 1\r\n",
    b"* ESEARCH (TAG \"x\") UID MIN 1 MAX 3\r\n",
    b"* 1 EXPUNGE\r\n",
    b"* FLAGS (\\Seen \\Deleted)\r\n",
    b"* BYE going away\r\n",
    b"+ idling\r\n",
];

/// `FUZZ_DEBUG=1`: print the conversation (to read a failing input).
fn debug() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("FUZZ_DEBUG").is_some())
}

fn scrub(bytes: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = bytes
        .iter()
        .map(|&b| match b {
            b'{' | b'}' | b'\r' | b'\n' => b'_',
            b => b,
        })
        .collect();
    // No `ZZ9` may be formed outside a literal.
    for i in 0..out.len().saturating_sub(2) {
        if &out[i..i + 3] == b"ZZ9" {
            out[i + 2] = b'8';
        }
    }
    out
}

/// What the client still has to send of a command, and where it must wait for `+`.
struct Pending {
    tag: Vec<u8>,
    /// Segments; after each but the last the client waits for a continuation.
    segments: Vec<Vec<u8>>,
}

struct Harness {
    session: Session,
    ctx: Arc<ImapContext>,
    /// The session's output to the client, as the client reads it.
    to_client: Wire,
    /// The session's output to upstream, as upstream reads it.
    to_upstream: Wire,
    /// Upstream's output to the session, as the session should read it.
    from_upstream: Wire,
    /// Tags of commands upstream has read and not answered.
    open_tags: Vec<Vec<u8>>,
    /// Upstream waits for the bytes of a synchronizing literal of this command and has
    /// not said `+`; `granted` once it has.
    awaiting: Option<(Vec<u8>, bool)>,
    /// An AUTHENTICATE upstream is running, and whether it asked for a response.
    sasl: Option<(Vec<u8>, bool)>,
    upstream_closed: bool,
    /// Client side.
    tags: u32,
    pending: Option<Pending>,
    plus_seen: bool,
    client_answered: Vec<Vec<u8>>,
    idling: bool,
    client_sasl: Option<Vec<u8>>,
    tls_pending: bool,
    closed: bool,
    decrypts: Vec<sealpost::imap::fetch::DecryptRequest>,
    seals: Vec<sealpost::imap::session::SealRequest>,
}

impl Harness {
    fn apply(&mut self, outs: Vec<Output>) {
        for o in outs {
            if debug() {
                match &o {
                    Output::Client(b) => eprintln!("  -> client {:?}", String::from_utf8_lossy(b)),
                    Output::Upstream(b) => {
                        eprintln!("  -> upstream {:?}", String::from_utf8_lossy(b))
                    }
                    o => eprintln!("  -> {o:?}"),
                }
            }
            match o {
                Output::Client(bytes) => self.to_client(&bytes),
                Output::Upstream(bytes) => self.to_upstream(&bytes),
                Output::StartTls => self.tls_pending = true,
                Output::Decrypt(r) => self.decrypts.push(r),
                Output::Seal(r) => self.seals.push(r),
                // The background fill runs on a connection of its own (not simulated).
                Output::Background(_) => {}
                Output::Close => self.closed = true,
            }
        }
    }

    fn to_client(&mut self, bytes: &[u8]) {
        let plus = &mut self.plus_seen;
        let answered = &mut self.client_answered;
        self.to_client.push(bytes, |p| {
            if let Piece::Line { bytes, first: true } = p {
                if bytes.starts_with(b"+") {
                    *plus = true;
                } else if let Some((tag, _)) = tag_of(bytes) {
                    if tag != b"*" {
                        answered.push(tag.to_vec());
                    }
                }
            }
            true
        });
    }

    fn to_upstream(&mut self, bytes: &[u8]) {
        if self.upstream_closed {
            return;
        }
        let awaiting = &mut self.awaiting;
        let sasl = &mut self.sasl;
        let open = &mut self.open_tags;
        self.to_upstream.push(bytes, |p| match p {
            Piece::Literal(data) => {
                if let Some((tag, granted)) = awaiting {
                    assert!(
                        *granted,
                        "literal bytes of {} sent upstream before its `+`: {:?}",
                        String::from_utf8_lossy(tag),
                        String::from_utf8_lossy(data)
                    );
                }
                true
            }
            Piece::Line { bytes, first } => {
                // The bytes of a literal were all sent: nothing is awaited any more.
                *awaiting = None;
                if first {
                    if let Some((_, asked)) = sasl {
                        if *asked {
                            // A SASL response: a line, never a literal.
                            *asked = false;
                            return false;
                        }
                    }
                    assert!(
                        !bytes.starts_with(b"ZZ9 "),
                        "upstream reads a literal's line as a command: {:?}",
                        String::from_utf8_lossy(bytes)
                    );
                    if let Some((tag, rest)) = tag_of(bytes) {
                        open.push(tag.to_vec());
                        let upper = rest.to_ascii_uppercase();
                        if upper.starts_with(b"AUTHENTICATE") {
                            *sasl = Some((tag.to_vec(), false));
                        }
                    }
                }
                if let Some((n, true)) = wire::announced(bytes) {
                    if n > 0 {
                        let tag = open.last().cloned().unwrap_or_default();
                        *awaiting = Some((tag, false));
                    }
                }
                true
            }
        });
    }

    fn from_upstream(&mut self, bytes: &[u8]) {
        let mut cancel = false;
        let awaiting = &mut self.awaiting;
        let sasl = &mut self.sasl;
        let open = &mut self.open_tags;
        let closed = &mut self.upstream_closed;
        self.from_upstream.push(bytes, |p| {
            if let Piece::Line { bytes, first: true } = p {
                if bytes.starts_with(b"+") {
                    if let Some((_, granted)) = awaiting {
                        *granted = true;
                    }
                    if let Some((_, asked)) = sasl {
                        *asked = true;
                    }
                } else if let Some((tag, rest)) = tag_of(bytes) {
                    if tag == b"*" {
                        if rest.to_ascii_uppercase().starts_with(b"BYE") {
                            *closed = true;
                        }
                    } else {
                        if matches!(awaiting, Some((t, false)) if t == tag) {
                            // The literal was refused: upstream reads a new command next.
                            *awaiting = None;
                            cancel = true;
                        }
                        if matches!(sasl, Some((t, _)) if t == tag) {
                            *sasl = None;
                        }
                        open.retain(|t| t != tag);
                    }
                }
            }
            true
        });
        if cancel {
            self.to_upstream.cancel_literal();
        }
    }

    /// A tag no command of this client has used: a client that reused one could not
    /// tell which command an answer is for.
    fn new_tag(&mut self) -> Vec<u8> {
        self.tags += 1;
        format!("c{}", self.tags).into_bytes()
    }

    fn client_send(&mut self, bytes: &[u8]) {
        if debug() {
            eprintln!("C: {:?}", String::from_utf8_lossy(bytes));
        }
        let outs = self.session.on_client(bytes);
        self.apply(outs);
    }

    /// Sends what the client may send of its pending command.
    fn client_progress(&mut self) {
        loop {
            let Some(p) = &mut self.pending else { return };
            if self.client_answered.contains(&p.tag) {
                // Refused before its literal: the client drops the rest.
                self.pending = None;
                return;
            }
            if !self.plus_seen {
                return;
            }
            self.plus_seen = false;
            let seg = p.segments.remove(0);
            if p.segments.is_empty() {
                self.pending = None;
            }
            self.client_send(&seg);
        }
    }

    fn client(&mut self, item: &ClientItem) {
        if self.pending.is_some() {
            return;
        }
        if self
            .client_sasl
            .as_ref()
            .is_some_and(|t| self.client_answered.contains(t))
        {
            self.client_sasl = None;
        }
        let in_sasl = self.client_sasl.is_some();
        match item {
            ClientItem::Line(bytes) => {
                let mut line = scrub(bytes);
                line.extend_from_slice(b"\r\n");
                self.client_send(&line);
            }
            ClientItem::Done => {
                self.idling = false;
                self.client_send(b"DONE\r\n");
            }
            _ if in_sasl || self.idling => {}
            ClientItem::Command { verb } => {
                let verb = VERBS[*verb as usize % VERBS.len()];
                let tag = self.new_tag();
                let mut line = tag.clone();
                line.push(b' ');
                line.extend_from_slice(verb.as_bytes());
                line.extend_from_slice(b"\r\n");
                self.client_answered.retain(|t| *t != tag);
                if verb == "IDLE" {
                    self.idling = true;
                }
                if verb.starts_with("AUTHENTICATE") {
                    self.client_sasl = Some(tag.clone());
                }
                self.client_send(&line);
            }
            ClientItem::WithLiterals { verb, literals } => {
                let (head, between, tail) = LITERAL_VERBS[*verb as usize % LITERAL_VERBS.len()];
                let tag = self.new_tag();
                self.client_answered.retain(|t| *t != tag);
                let mut segments = Vec::new();
                let mut seg = tag.clone();
                seg.push(b' ');
                seg.extend_from_slice(head.as_bytes());
                let literals = if literals.is_empty() {
                    &[][..]
                } else {
                    &literals[..literals.len().min(4)]
                };
                for (i, lit) in literals.iter().enumerate() {
                    if i > 0 {
                        seg.extend_from_slice(between.as_bytes());
                    }
                    let mut data = lit.before.clone();
                    if lit.marker {
                        data.extend_from_slice(b"\r\n");
                        data.extend_from_slice(MARKER);
                    }
                    data.extend_from_slice(&lit.after);
                    let plus = if lit.sync { "" } else { "+" };
                    seg.extend_from_slice(format!(" {{{}{plus}}}\r\n", data.len()).as_bytes());
                    if lit.sync {
                        segments.push(std::mem::take(&mut seg));
                    }
                    seg.extend_from_slice(&data);
                }
                seg.extend_from_slice(tail.as_bytes());
                seg.extend_from_slice(b"\r\n");
                segments.push(seg);
                let first = segments.remove(0);
                self.plus_seen = false;
                if !segments.is_empty() {
                    self.pending = Some(Pending { tag, segments });
                }
                self.client_send(&first);
            }
        }
    }

    fn upstream(&mut self, item: &UpItem) {
        // Upstream may ask for a continuation at any time, also when it waits for none:
        // sealpost relays a `+` only while a relayed command waits for one (see
        // fuzz/README.md, "Found").
        let bytes: Vec<u8> = match item {
            UpItem::Plus => b"+ OK\r\n".to_vec(),
            UpItem::Tagged { which, status } => {
                let Some(tag) = (!self.open_tags.is_empty())
                    .then(|| self.open_tags[*which as usize % self.open_tags.len()].clone())
                else {
                    return;
                };
                let text: &[u8] = match status % 6 {
                    0 | 1 => b" OK done\r\n",
                    2 => b" OK [READ-WRITE] selected\r\n",
                    3 => b" NO [TRYCREATE] no\r\n",
                    4 => b" BAD what\r\n",
                    _ => b" OK [CAPABILITY IMAP4rev1 IDLE SORT] logged in\r\n",
                };
                [tag.as_slice(), text].concat()
            }
            UpItem::Untagged(i) => UNTAGGED[*i as usize % UNTAGGED.len()].to_vec(),
            UpItem::Fetch {
                seq,
                uid,
                kind,
                body,
            } => {
                let seq = *seq as u32 + 1;
                let uid = *uid as u32 + 1;
                let encrypted = &fixed().encrypted;
                match kind % 4 {
                    0 => format!("* {seq} FETCH (UID {uid} FLAGS (\\Seen))\r\n").into_bytes(),
                    1 => {
                        let head: &[u8] = if body.first().is_some_and(|b| b % 2 == 0) {
                            b"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n"
                        } else {
                            b"Content-Type: text/plain\r\n\r\n"
                        };
                        let mut r = format!(
                            "* {seq} FETCH (UID {uid} RFC822.SIZE {} BODY[HEADER.FIELDS (CONTENT-TYPE SEALPOST-DECRYPTED)] {{{}}}\r\n",
                            encrypted.len(),
                            head.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(head);
                        r.extend_from_slice(b")\r\n");
                        r
                    }
                    2 => {
                        let msg: &[u8] = if body.is_empty() { encrypted } else { body };
                        let mut r = format!(
                            "* {seq} FETCH (UID {uid} RFC822.SIZE {} BODY[] {{{}}}\r\n",
                            msg.len(),
                            msg.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(msg);
                        r.extend_from_slice(b" FLAGS (\\Seen))\r\n");
                        r
                    }
                    _ => {
                        let mut r =
                            format!("* {seq} FETCH (UID {uid} BODY[] {{{}}}\r\n", body.len())
                                .into_bytes();
                        r.extend_from_slice(body);
                        r.extend_from_slice(b")\r\n");
                        r
                    }
                }
            }
            UpItem::Raw(b) => b.clone(),
        };
        if debug() {
            eprintln!("S: {:?}", String::from_utf8_lossy(&bytes));
        }
        self.from_upstream(&bytes);
        let outs = self.session.on_upstream(&bytes);
        self.apply(outs);
    }

    fn complete(&mut self, which: u8, ok: bool) {
        let n = self.decrypts.len() + self.seals.len();
        if n == 0 {
            return;
        }
        let i = which as usize % n;
        let outs = if i < self.decrypts.len() {
            let r = self.decrypts.remove(i);
            // As the server's driver does (src/imap/server.rs).
            let view = if ok {
                panics::tolerate_known_panics();
                let ctx = &self.ctx;
                sealpost::imap::fetch::view_or_stand_in(&r.raw, || {
                    ctx.view(&r.identity, &r.raw, r.limit)
                })
            } else {
                sealpost::pgp::View::new(
                    r.raw.clone(),
                    sealpost::pgp::ViewKind::Undecryptable("fuzz".into()),
                    Vec::new(),
                )
            };
            if let Some(key) = r.doc.clone() {
                self.ctx.search.record(&self.ctx, key, &view);
            }
            self.session.on_view(&r.job, r.uid, &r.raw, view)
        } else {
            let r = self.seals.remove(i - self.decrypts.len());
            let sealed = if ok {
                self.ctx
                    .seal(&r.identity, &r.message)
                    .map_err(|e| e.to_string())
            } else {
                Err("fuzz".to_string())
            };
            self.session.on_sealed(&r.tag, r.index, sealed)
        };
        self.apply(outs);
    }
}

fuzz_target!(|input: Input| {
    let ctx = context(if input.short_lines { 200 } else { 8192 });
    let session = Session::new(ctx.clone(), input.tls, input.plaintext_ok);
    let mut h = Harness {
        session,
        ctx,
        to_client: Wire::default(),
        to_upstream: Wire::default(),
        from_upstream: Wire::default(),
        open_tags: Vec::new(),
        awaiting: None,
        sasl: None,
        upstream_closed: false,
        tags: 0,
        pending: None,
        plus_seen: false,
        client_answered: Vec::new(),
        idling: false,
        client_sasl: None,
        tls_pending: false,
        closed: false,
        decrypts: Vec::new(),
        seals: Vec::new(),
    };
    if input.preauth {
        h.upstream(&UpItem::Raw(b"* PREAUTH ready\r\n".to_vec()));
    } else {
        h.upstream(&UpItem::Raw(
            b"* OK [CAPABILITY IMAP4rev1 LITERAL+ IDLE AUTH=PLAIN] ready\r\n".to_vec(),
        ));
        if input.log_in {
            h.client_send(b"m1 LOGIN mallory@corp.example pw\r\n");
            h.upstream(&UpItem::Raw(b"m1 OK logged in\r\n".to_vec()));
            h.client_send(b"m2 SELECT INBOX\r\n");
            h.upstream(&UpItem::Raw(
                b"* OK [UIDVALIDITY 7] ok\r\n* 3 EXISTS\r\nm2 OK [READ-WRITE] selected\r\n"
                    .to_vec(),
            ));
        }
    }
    for event in input.events.iter().take(64) {
        if h.closed {
            break;
        }
        match event {
            Event::Client(item) => {
                if !h.tls_pending {
                    h.client(item)
                }
            }
            Event::Upstream(item) => h.upstream(item),
            Event::Complete { which, ok } => h.complete(*which, *ok),
            Event::TlsDone => {
                if h.tls_pending {
                    h.tls_pending = false;
                    h.session.tls_started();
                    let outs = h.session.on_client(b"");
                    h.apply(outs);
                }
            }
        }
        h.client_progress();
    }
});
