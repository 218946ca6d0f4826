//! One proxied IMAP conversation, without I/O.
//!
//! Bytes from the client and from upstream are fed in; what to send where comes out.
//! The session is built in two layers:
//!
//! * **relay**: both directions are framed ([`Framer`]: lines and literals, literals
//!   streamed), and every complete client command without a literal, and every server
//!   response sealpost acts on, is decoded once with imap-codec. Decisions are made
//!   from those parsed values; the original bytes are relayed unless sealpost rewrites
//!   that message (capability lists, FETCH of encrypted mail).
//! * **flow**: [`Phase`] is the IMAP state (RFC 3501 §3), each variant owning its data;
//!   [`Inflow`] says what the client message being framed is for; commands in flight are
//!   kept by their (unique) tag with what their completion means ([`Pending`]).
//!
//! The identity that decrypts is fixed once, on the NotAuthenticated → Authenticated
//! transition, by the tagged reply to the LOGIN or AUTHENTICATE that caused it: a tag
//! already in flight is refused, and a second LOGIN is answered by sealpost itself.

use super::caps::{self, Local};
use super::fetch::{self, DecryptRequest, FetchJob, Job, JobOutput, Selected};
use super::fill;
use super::framer::{Frame, Framer};
use super::search::{self, SearchJob};
use super::ImapContext;
use crate::config::EncryptAppend;
use base64::Engine;
use imap_codec::decode::Decoder;
use imap_codec::{CommandCodec, GreetingCodec, ResponseCodec};
use imap_types::auth::AuthMechanism;
use imap_types::command::{Command, CommandBody};
use imap_types::mailbox::Mailbox;
use imap_types::response::{Code, Data, GreetingKind, Response, Status, StatusKind};
use std::collections::HashMap;
use std::sync::Arc;

/// What the driver must do.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    Client(Vec<u8>),
    Upstream(Vec<u8>),
    /// Flush to the client, then run the server side of a TLS handshake and call
    /// [`Session::tls_started`].
    StartTls,
    /// Build this view off the protocol task (it is CPU work) and hand it to
    /// [`Session::on_view`]; several may be outstanding at once.
    Decrypt(DecryptRequest),
    /// Encrypt a message an APPEND stores to the identity's own key and hand the result
    /// to [`Session::on_sealed`] (CPU work, run off the protocol task).
    Seal(SealRequest),
    /// A mailbox was selected: work for it in the background on connections of
    /// sealpost's own: classify it ahead (see [`super::ahead::start`]) and fill the
    /// search index (see [`fill::start`]).
    Background(fill::FillRequest),
    Close,
}

/// A message to seal: see [`Output::Seal`].
#[derive(Debug, PartialEq, Eq)]
pub struct SealRequest {
    /// The APPEND's tag.
    pub tag: String,
    /// Which message of the APPEND (MULTIAPPEND, RFC 3502, has several).
    pub index: usize,
    pub identity: String,
    pub message: Vec<u8>,
}

/// An APPEND whose messages are being sealed, and the command around them.
#[derive(Debug)]
struct Sealing {
    tag: String,
    /// The command's text before each message: `texts[i]` ends with the announcement
    /// of message `i`'s literal. The first also holds the mailbox, which may itself be
    /// a literal (at `first_splits`).
    texts: Vec<Vec<u8>>,
    first_splits: Vec<usize>,
    /// Each message as it goes up; `None` while it is being sealed.
    messages: Vec<Option<Vec<u8>>>,
    /// What follows the last message (the line end).
    tail: Vec<u8>,
    /// Why a message could not be sealed (then nothing is stored).
    failed: Option<String>,
}

/// The IMAP state of the conversation (RFC 3501 §3). `identity` is the address whose
/// key decrypts; `None` relays everything as stored.
#[derive(Debug)]
enum Phase {
    NotAuthenticated,
    /// A LOGIN or AUTHENTICATE is in flight under `tag`; `login` is the name it
    /// authenticates (unknown: no identity will decrypt).
    Authenticating {
        tag: String,
        login: Option<String>,
    },
    Authenticated {
        identity: Option<String>,
    },
    Selected {
        identity: Option<String>,
        mailbox: String,
        uidvalidity: Option<u32>,
        read_only: bool,
    },
    Logout,
}

impl Phase {
    fn identity(&self) -> Option<&String> {
        match self {
            Phase::Authenticated { identity } | Phase::Selected { identity, .. } => {
                identity.as_ref()
            }
            _ => None,
        }
    }

    fn authenticated(&self) -> bool {
        matches!(self, Phase::Authenticated { .. } | Phase::Selected { .. })
    }

    /// RFC 3501 §6.3.1: SELECT, EXAMINE, CLOSE and UNSELECT leave the selected state
    /// whatever their outcome (a failed SELECT leaves no mailbox selected).
    fn deselected(self) -> Phase {
        match self {
            Phase::Selected { identity, .. } => Phase::Authenticated { identity },
            other => other,
        }
    }
}

/// What the completion of a client command in flight means.
#[derive(Debug, Clone)]
enum Pending {
    /// Nothing for sealpost.
    Relayed,
    /// The authenticating command of [`Phase::Authenticating`].
    Authenticate,
    Select {
        mailbox: String,
        read_only: bool,
    },
    Unselect,
    Logout,
    /// sealpost's own LIST after login, for `encrypt_append = "sent-drafts"`: neither
    /// its responses nor its completion reach the client. `special_use`: the RFC 6154
    /// form (`LIST (SPECIAL-USE)`); if refused, a plain LIST follows.
    Discover {
        special_use: bool,
    },
}

/// The client's commands (and sealpost's own LIST) relayed and not completed, by tag;
/// how many of them select a mailbox or are sealpost's LIST is counted as they come and
/// go, so that asking costs nothing with a thousand FETCHes pipelined.
#[derive(Debug, Default)]
struct InFlight {
    map: HashMap<String, Pending>,
    selects: usize,
    discovers: usize,
}

impl InFlight {
    fn count(&mut self, p: &Pending, up: bool) {
        let n = match p {
            Pending::Select { .. } => &mut self.selects,
            Pending::Discover { .. } => &mut self.discovers,
            _ => return,
        };
        *n = if up { *n + 1 } else { n.saturating_sub(1) };
    }

    fn insert(&mut self, tag: String, p: Pending) {
        self.count(&p, true);
        if let Some(old) = self.map.insert(tag, p) {
            self.count(&old, false);
        }
    }

    fn remove(&mut self, tag: &str) -> Option<Pending> {
        let p = self.map.remove(tag)?;
        self.count(&p, false);
        Some(p)
    }

    fn get(&self, tag: &str) -> Option<&Pending> {
        self.map.get(tag)
    }

    fn contains_key(&self, tag: &str) -> bool {
        self.map.contains_key(tag)
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn keys(&self) -> impl Iterator<Item = &String> + std::fmt::Debug {
        self.map.keys()
    }

    /// A SELECT or EXAMINE is in flight.
    fn selecting(&self) -> bool {
        self.selects > 0
    }

    /// sealpost's own LIST is in flight.
    fn discovering(&self) -> bool {
        self.discovers > 0
    }
}

/// Where an IDLE is (RFC 2177).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdleStage {
    /// Sent; upstream's `+` has not come. Client input is held.
    Requested,
    /// Idling: the client's next line must be `DONE`.
    Idling,
    /// `DONE` sent; the tagged reply has not come. Client input is held.
    Ending,
}

/// How the client message being framed is handled.
#[derive(Debug)]
enum Inflow {
    /// Between messages.
    Start,
    /// Relaying an APPEND upstream frame by frame (its message literal streams).
    /// `done`: upstream already answered the command (a MULTIAPPEND refused after one
    /// message): its next literal gets no `+`, so nothing waits for one.
    Relay { tag: String, done: bool },
    /// A relayed synchronizing literal waits for upstream's `+` (or its refusal of the
    /// command); client input is held until then.
    /// `client_waits`: the client's literal is synchronizing (it waits for the `+`);
    /// otherwise it is sent already, and upstream's `+` is for sealpost alone.
    AwaitContinuation { tag: String, client_waits: bool },
    /// Collecting the message to decode once complete. `splits` are the offsets in the
    /// captured message just after each literal's announcement: the message goes
    /// upstream in those pieces, each after upstream's `+` (see [`segments`]).
    /// `limit`: most bytes the message may have (an APPEND being sealed is held whole).
    Hold {
        tag: String,
        splits: Vec<usize>,
        limit: usize,
    },
    /// Dropping the message; `reply` goes to the client once it is complete.
    Discard { reply: Vec<u8> },
    /// AUTHENTICATE (RFC 3501 §6.2.2): in lockstep, one client line per upstream `+`
    /// (`ready`), until the tagged reply. `first`: the next line is the first response,
    /// the only one the login name is read from.
    Sasl {
        tag: String,
        mechanism: String,
        ready: bool,
        first: bool,
    },
    /// IDLE in progress: only `DONE` is read from the client.
    Idle { tag: String, stage: IdleStage },
}

/// See [`Session::waiting`].
enum Waiting {
    /// A decoded command, its tag and its literal offsets (see [`Inflow::Hold`]).
    Command(String, Vec<u8>, Vec<usize>),
    /// The first line of an APPEND with a literal (see [`Inflow::Relay`]).
    Append(Vec<u8>, Option<(u64, bool)>),
}

/// A UID FETCH answered from cached views within the client's pipeline.
struct Pipelined {
    tag: String,
    rewrite: fetch::Rewrite,
}

/// After this many bytes held from the client while a FETCH job runs, stop reading.
const MAX_HELD: usize = 1 << 20;
/// Client messages decoded whole are captured up to this size.
const CLIENT_CAPTURE: usize = 64 * 1024;

pub struct Session {
    ctx: Arc<ImapContext>,
    client: Framer,
    upstream: Framer,
    /// The client link is TLS.
    tls: bool,
    /// A loopback listener: LOGIN without TLS is acceptable.
    plaintext_ok: bool,
    greeted: bool,
    phase: Phase,
    inflow: Inflow,
    in_flight: InFlight,
    /// The FETCH job running (see [`FetchJob`]).
    job: Option<Box<dyn fetch::Job>>,
    /// UID FETCHes in flight answered from cached views, oldest first (see
    /// [`fetch::Rewrite`] and [`Pipelined`]).
    rewrites: std::collections::VecDeque<Pipelined>,
    /// Views being built ahead of the client's asking, by (job, UID), with the
    /// mailbox they belong to (see [`fetch::DecryptRequest::prefetch`]). A FETCH of
    /// one of them waits for it rather than building it twice.
    prefetching: HashMap<(String, u32), Selected>,
    /// Largest literal accepted from the client.
    max_literal: u64,
    /// The UIDVALIDITY announced for the SELECT/EXAMINE in flight.
    last_uidvalidity: Option<u32>,
    /// A command held until no other command is in flight: one that waits for
    /// upstream's `+` (literals, AUTHENTICATE, IDLE), so that any `+` can only be for
    /// it, or a FETCH job's, so that no other responses interleave with the job's.
    waiting: Option<Waiting>,
    /// A TLS handshake or the close is due (see [`Session::stopped`]).
    stopped: bool,
    /// The close is due: nothing more from upstream is relayed.
    closing: bool,
    /// The rest of a held command with synchronizing literals, for `tag`: each
    /// segment goes upstream after upstream's `+` for the one before.
    outgoing: Option<(String, std::collections::VecDeque<Vec<u8>>)>,
    held: Vec<u8>,
    /// The APPEND whose message is being sealed; client input waits for it.
    sealing: Option<Sealing>,
    /// Mailboxes LIST marked `\Sent` or `\Drafts` (RFC 6154), for
    /// `encrypt_append = "sent-drafts"`.
    special_use: std::collections::HashSet<String>,
    /// sealpost's own LIST (see [`Session::discover_special_use`]) waits for the
    /// commands in flight; client input is held meanwhile.
    discovery_due: bool,
    /// Mailboxes LIST marked `\Junk` (RFC 6154): no Autocrypt learning from them.
    junk: std::collections::HashSet<String>,
    tag_prefix: String,
    jobs_started: u64,
    /// UIDs classified ahead by the next job in this mailbox (see
    /// [`fetch::CLASSIFY_AHEAD`]), and the lowest UID the last job asked for with the
    /// last UID it classified: the window grows only while the client reads on.
    classify_ahead: u32,
    last_job: Option<(u32, u32)>,
    /// How the client is logging in, while its LOGIN or AUTHENTICATE is in flight, and
    /// once it succeeded with an identity: kept only to fill the search index in the
    /// background (see [`fill`]), when that is on.
    offered: Option<fill::Credential>,
    credential: Option<Arc<fill::Credential>>,
    out: Vec<Output>,
}

impl Session {
    /// `tls`: the client link is TLS from the start; `plaintext_ok`: a loopback
    /// listener, where LOGIN without TLS is acceptable.
    pub fn new(ctx: Arc<ImapContext>, tls: bool, plaintext_ok: bool) -> Session {
        let line = ctx.max_line_length;
        let capture = ctx.max_message_size + 1024 * 1024;
        Session {
            client: Framer::new(line, CLIENT_CAPTURE),
            // Server lines can be long (a SEARCH of many UIDs) and literals large (they
            // stream through; only capture is bounded).
            upstream: Framer::new(line.max(8 * 1024 * 1024), capture),
            max_literal: ctx.max_message_size as u64 + 1024 * 1024,
            ctx,
            tls,
            plaintext_ok,
            greeted: false,
            phase: Phase::NotAuthenticated,
            inflow: Inflow::Start,
            in_flight: InFlight::default(),
            job: None,
            rewrites: std::collections::VecDeque::new(),
            prefetching: HashMap::new(),
            last_uidvalidity: None,
            outgoing: None,
            waiting: None,
            stopped: false,
            closing: false,
            held: Vec::new(),
            sealing: None,
            special_use: std::collections::HashSet::new(),
            discovery_due: false,
            junk: std::collections::HashSet::new(),
            tag_prefix: job_tag_prefix(),
            jobs_started: 0,
            classify_ahead: fetch::CLASSIFY_AHEAD,
            last_job: None,
            offered: None,
            credential: None,
            out: Vec::new(),
        }
    }

    fn local(&self) -> Local {
        Local {
            starttls: !self.tls,
            login_disabled: !self.tls && !self.plaintext_ok,
        }
    }

    /// Are this session's APPENDs read whole to be sealed (see [`Output::Seal`])? Only
    /// with an identity, whose key they are sealed to.
    fn seals_appends(&self) -> bool {
        self.ctx.encrypt_append != EncryptAppend::Off && self.phase.identity().is_some()
    }

    /// Does `mailbox` hold spam: marked `\Junk` by LIST (RFC 6154), or named so?
    fn is_junk(&self, mailbox: &str) -> bool {
        self.junk.contains(mailbox) || crate::keys::autocrypt::is_junk_mailbox(mailbox)
    }

    /// Is an APPEND to `mailbox` sealed?
    fn seals_into(&self, mailbox: &Mailbox<'_>) -> bool {
        match self.ctx.encrypt_append {
            EncryptAppend::All => true,
            EncryptAppend::Off => false,
            EncryptAppend::SentDrafts => {
                let name = match mailbox {
                    Mailbox::Inbox => return false,
                    Mailbox::Other(o) => String::from_utf8_lossy(o.as_ref()).into_owned(),
                };
                // A client that has not listed the mailboxes: the names clients use.
                const NAMES: &[&str] = &[
                    "Sent",
                    "Sent Items",
                    "Sent Messages",
                    "Sent Mail",
                    "Drafts",
                    "Draft",
                ];
                let leaf = name.rsplit(['/', '.']).next().unwrap_or(&name);
                self.special_use.contains(&name)
                    || NAMES.iter().any(|n| n.eq_ignore_ascii_case(leaf))
            }
        }
    }

    fn discovering(&self) -> bool {
        self.in_flight.discovering()
    }

    /// After login, with `encrypt_append = "sent-drafts"`: asks upstream which
    /// mailboxes are the Sent and Drafts ones (RFC 6154 `LIST (SPECIAL-USE)`; a server
    /// that refuses it gets a plain LIST, which lists the attributes too on most
    /// servers), so that a client that never lists has its copies in a Sent folder of
    /// any name sealed. It goes up once nothing else is in flight (commands pipelined
    /// with the login complete first); client input waits until it is answered.
    fn discover_special_use(&mut self, special_use: bool) {
        if !self.in_flight.is_empty() {
            self.discovery_due = true;
            return;
        }
        self.discovery_due = false;
        let (suffix, selection) = if special_use {
            ("0l", "(SPECIAL-USE) ")
        } else {
            ("0m", "")
        };
        let tag = format!("{}{suffix}", self.tag_prefix);
        let command = format!("{tag} LIST {selection}\"\" \"*\"\r\n");
        self.relay(tag, Pending::Discover { special_use }, command.into_bytes());
    }

    /// Whether `tag` completes sealpost's own LIST (then it ends here, and the held
    /// client input goes on).
    fn discovered(&mut self, tag: &str, ok: bool) -> bool {
        let Some(Pending::Discover { special_use }) = self.in_flight.get(tag) else {
            return false;
        };
        let retry = *special_use && !ok;
        self.in_flight.remove(tag);
        if retry {
            self.discover_special_use(false);
        }
        if !self.busy() {
            self.resume_client();
        }
        true
    }

    /// True when no FETCH job is running (a safe point to close for shutdown).
    pub fn is_idle(&self) -> bool {
        !self.busy()
    }

    /// True while upstream owes a reply: its greeting, or a response to a command in
    /// flight. Not while IDLE idles, and not while a command waits for the client (an
    /// APPEND literal being uploaded, the client's next SASL response): silence from
    /// upstream is normal then. The server loop closes a session whose upstream stays
    /// silent past `[limits] imap_reply_timeout_secs` while this holds.
    pub fn awaits_upstream(&self) -> bool {
        if !self.greeted {
            return true;
        }
        // A FETCH or SEARCH job's own commands are not in `in_flight`.
        if let Some(job) = &self.job {
            return !job.waits_on_views();
        }
        !self.in_flight.is_empty()
            && !matches!(
                self.inflow,
                Inflow::Idle {
                    stage: IdleStage::Idling,
                    ..
                } | Inflow::Relay { .. }
                    | Inflow::Hold { .. }
                    | Inflow::Sasl { ready: true, .. }
            )
    }

    /// While a FETCH job runs or waits, or a literal waits for upstream's `+`, client
    /// input is held, not framed.
    fn busy(&self) -> bool {
        self.job.is_some()
            || self.discovery_due
            || self.discovering()
            || self.sealing.is_some()
            || self.outgoing.is_some()
            || self.waiting.is_some()
            || matches!(
                self.inflow,
                Inflow::AwaitContinuation { .. }
                    | Inflow::Sasl { ready: false, .. }
                    | Inflow::Idle {
                        stage: IdleStage::Requested | IdleStage::Ending,
                        ..
                    }
            )
    }

    /// The address whose key decrypts for this session, once authenticated.
    pub fn identity(&self) -> Option<&str> {
        self.phase.identity().map(String::as_str)
    }

    /// True after the client's LOGOUT completed (the server's BYE was relayed).
    pub fn logged_out(&self) -> bool {
        matches!(self.phase, Phase::Logout)
    }

    /// True while client input should not be read (held bytes at their bound).
    pub fn client_blocked(&self) -> bool {
        self.held.len() >= MAX_HELD
    }

    /// RFC 3501 §6.2.1: after the handshake nothing sent before it counts.
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.stopped = false;
        self.client.clear();
        self.held.clear();
        self.inflow = Inflow::Start;
    }

    fn send_client(&mut self, bytes: Vec<u8>) {
        if let Some(Output::Client(last)) = self.out.last_mut() {
            last.extend_from_slice(&bytes);
        } else {
            self.out.push(Output::Client(bytes));
        }
    }

    fn send_upstream(&mut self, bytes: Vec<u8>) {
        if let Some(Output::Upstream(last)) = self.out.last_mut() {
            last.extend_from_slice(&bytes);
        } else {
            self.out.push(Output::Upstream(bytes));
        }
    }

    fn take(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }

    /// True once a TLS handshake or the close is due: nothing more is framed until
    /// [`Session::tls_started`] (RFC 3501 §6.2.1: nothing sent before the handshake counts).
    fn stopped(&self) -> bool {
        self.stopped
    }

    /// Queues the handshake or the close; the session frames nothing more until then.
    fn stop(&mut self, what: Output) {
        self.stopped = true;
        self.closing |= what == Output::Close;
        self.out.push(what);
    }

    // ----- client side -------------------------------------------------------

    pub fn on_client(&mut self, bytes: &[u8]) -> Vec<Output> {
        if self.busy() || self.stopped() {
            self.held.extend_from_slice(bytes);
            return self.take();
        }
        self.client.push(bytes);
        self.drain_client();
        self.take()
    }

    fn drain_client(&mut self) {
        while !self.busy() && !self.stopped() {
            let Some(frame) = self.client.next_frame() else {
                return;
            };
            self.on_client_frame(frame);
        }
        if self.busy() {
            // What was read past the point where the session must wait is framed later,
            // before what arrived while it waited.
            let rest = self.client.take_pending();
            self.held.splice(0..0, rest);
        }
    }

    fn on_client_frame(&mut self, frame: Frame) {
        let complete = self.client.message_complete();
        match frame {
            Frame::Line {
                bytes,
                first: true,
                literal,
            } if !matches!(self.inflow, Inflow::Sasl { .. } | Inflow::Idle { .. }) => {
                self.start_message(bytes, literal, complete)
            }
            Frame::Overlong {
                head,
                first,
                literal,
            } => self.on_overlong(&head, first, literal, complete),
            Frame::Line { bytes, literal, .. } => self.continue_message(bytes, literal, complete),
            Frame::Literal { bytes, .. } => self.continue_message(bytes, None, complete),
        }
    }

    /// A client line over `max_line_length`: RFC 3501 §7.1.3 `BAD` under its tag, and
    /// whatever literal it announced is skipped, never read as commands.
    fn on_overlong(
        &mut self,
        head: &[u8],
        first: bool,
        literal: Option<(u64, bool)>,
        complete: bool,
    ) {
        let limit = self.ctx.max_line_length;
        if !first {
            match &self.inflow {
                Inflow::Relay { tag, .. } => {
                    // Part of this command is upstream already; it cannot be completed.
                    tracing::warn!(%tag, "over-long line inside a relayed command; closing");
                    self.send_client(
                        format!("* BYE Line longer than {limit} bytes inside a command\r\n")
                            .into_bytes(),
                    );
                    self.stop(Output::Close);
                    return;
                }
                Inflow::Hold { tag, .. } => {
                    let reply = format!("{tag} BAD Line longer than {limit} bytes\r\n");
                    self.inflow = Inflow::Discard {
                        reply: reply.into_bytes(),
                    };
                }
                _ => {}
            }
            self.continue_message(Vec::new(), literal, complete);
            return;
        }
        if let Inflow::Sasl { ready, .. } = &mut self.inflow {
            // Cancel the exchange (RFC 3501 §6.2.2); upstream answers the tag.
            *ready = false;
            self.send_upstream(b"*\r\n".to_vec());
            return;
        }
        if let Inflow::Idle { tag, .. } = std::mem::replace(&mut self.inflow, Inflow::Start) {
            // Not DONE: end the IDLE all the same.
            self.end_idle(tag, Some("*".into()));
            return;
        }
        let reply = match command_head(head) {
            Some((tag, _)) => format!("{tag} BAD Line longer than {limit} bytes\r\n"),
            None => format!("* BAD Line longer than {limit} bytes\r\n"),
        };
        self.refuse(reply, literal, complete);
    }

    /// Answers the message being framed with `reply` and drops it: at once when it is
    /// complete or waits for a synchronizing literal (which the client then never
    /// sends), else when its last (non-synchronizing) literal has been skipped.
    fn refuse(&mut self, reply: String, literal: Option<(u64, bool)>, complete: bool) {
        if complete || matches!(literal, Some((_, true))) {
            self.send_client(reply.into_bytes());
            if !complete {
                self.client.reset_message();
            }
            self.inflow = Inflow::Start;
        } else {
            self.inflow = Inflow::Discard {
                reply: reply.into_bytes(),
            };
        }
    }

    /// The first line of a client message: decide what the message is for.
    fn start_message(&mut self, bytes: Vec<u8>, literal: Option<(u64, bool)>, complete: bool) {
        let Some((tag, name)) = command_head(&bytes) else {
            self.refuse("* BAD Not an IMAP command\r\n".into(), literal, complete);
            return;
        };
        if self.in_flight.contains_key(&tag)
            || matches!(&self.phase, Phase::Authenticating { tag: t, .. } if *t == tag)
        {
            // Responses are matched to commands by tag (RFC 3501 §2.2.1).
            let reply =
                format!("{tag} BAD Tag {tag} is already in use by a command in progress\r\n");
            self.refuse(reply, literal, complete);
            return;
        }
        if let Some((n, _)) = literal {
            if n > self.max_literal {
                // RFC 7888 §4 / RFC 9051 §7.1: TOOBIG; a non-synchronizing literal is
                // read and dropped byte for byte, a synchronizing one is never sent.
                let reply = format!(
                    "{tag} NO [TOOBIG] Literal of {n} bytes is over the limit of {} bytes\r\n",
                    self.max_literal
                );
                self.refuse(reply, literal, complete);
                return;
            }
        }
        match name.as_str() {
            "LOGIN" | "AUTHENTICATE" if !self.tls && !self.plaintext_ok => {
                let reply =
                    format!("{tag} NO [PRIVACYREQUIRED] Use STARTTLS before logging in\r\n");
                self.refuse(reply, literal, complete);
            }
            "LOGIN" | "AUTHENTICATE" if !matches!(self.phase, Phase::NotAuthenticated) => {
                let why = if self.phase.authenticated() {
                    "Already authenticated"
                } else {
                    "A login is already in progress"
                };
                self.refuse(format!("{tag} BAD {why}\r\n"), literal, complete);
            }
            "COMPRESS" => {
                let reply =
                    format!("{tag} NO [CANNOT] COMPRESS is not available through sealpost\r\n");
                self.refuse(reply, literal, complete);
            }
            "STARTTLS" | "AUTHENTICATE" | "IDLE" if literal.is_some() => {
                self.refuse(
                    format!("{tag} BAD Unexpected literal\r\n"),
                    literal,
                    complete,
                );
            }
            // RFC 3501 §6.1-6.2: before login only these; anything else (an APPEND
            // whose literal upstream's login process would run as commands, an IDLE)
            // is refused here.
            "CAPABILITY" | "NOOP" | "LOGOUT" | "STARTTLS" | "LOGIN" | "AUTHENTICATE" | "ID" => {
                self.hold_or_relay(tag, name, bytes, literal, complete)
            }
            _ if !self.phase.authenticated() => {
                self.refuse(format!("{tag} BAD Log in first\r\n"), literal, complete);
            }
            _ => self.hold_or_relay(tag, name, bytes, literal, complete),
        }
    }

    /// A command allowed in the current phase: APPEND streams, the rest is held.
    fn hold_or_relay(
        &mut self,
        tag: String,
        name: String,
        bytes: Vec<u8>,
        literal: Option<(u64, bool)>,
        complete: bool,
    ) {
        match name.as_str() {
            // APPEND's message literal streams upstream as it comes (upstream answers a
            // synchronizing literal's `+`); its grammar makes the literal an argument, so
            // upstream never reads it as commands.
            "APPEND" if literal.is_some() && self.seals_appends() => {
                // Read whole (within the literal limit) to be sealed before it goes up.
                let limit = self.max_literal as usize + CLIENT_CAPTURE;
                self.client.set_capture_limit(limit);
                self.inflow = Inflow::Hold {
                    tag,
                    splits: Vec::new(),
                    limit,
                };
                self.continue_message(bytes, literal, complete);
            }
            "APPEND" if literal.is_some() && !self.in_flight.is_empty() => {
                self.waiting = Some(Waiting::Append(bytes, literal));
            }
            "APPEND" if literal.is_some() => {
                self.in_flight.insert(tag.clone(), Pending::Relayed);
                self.inflow = Inflow::Relay { tag, done: false };
                self.continue_message(bytes, literal, complete);
            }
            _ => {
                // Every other command is decoded whole before anything of it goes
                // upstream: a literal that upstream would not read as an argument (a
                // `NOOP {n+}`) would otherwise run there as commands unseen.
                self.client.set_capture_limit(CLIENT_CAPTURE);
                self.inflow = Inflow::Hold {
                    tag,
                    splits: Vec::new(),
                    limit: CLIENT_CAPTURE,
                };
                self.continue_message(bytes, literal, complete);
            }
        }
    }

    /// A frame of the current client message, handled as the message's inflow says.
    fn continue_message(&mut self, bytes: Vec<u8>, literal: Option<(u64, bool)>, complete: bool) {
        match std::mem::replace(&mut self.inflow, Inflow::Start) {
            Inflow::Start => {
                // Unreachable by construction (a message starts with a first line);
                // dropping is the safe answer.
                tracing::debug!("client frame outside a message dropped");
            }
            Inflow::Discard { reply } => {
                if complete || matches!(literal, Some((_, true))) {
                    // A synchronizing literal later in the dropped command is never
                    // sent: the reply is due now.
                    if !complete {
                        self.client.reset_message();
                    }
                    if !reply.is_empty() {
                        self.send_client(reply);
                    }
                } else {
                    self.inflow = Inflow::Discard { reply };
                }
            }
            Inflow::Hold {
                tag,
                mut splits,
                limit,
            } => {
                if complete {
                    match self.client.message().map(<[u8]>::to_vec) {
                        Some(msg) => self.on_command(tag, msg, splits),
                        None => {
                            self.send_client(format!("{tag} BAD Command too long\r\n").into_bytes())
                        }
                    }
                    return;
                }
                // Bytes held so far (past the capture bound: as good as infinite).
                let held = self.client.message().map_or(usize::MAX, <[u8]>::len);
                match literal {
                    Some((n, sync)) if (held as u64).saturating_add(n) > limit as u64 => {
                        // Only APPEND carries large literals.
                        let reply = format!(
                            "{tag} NO [TOOBIG] Literal of {n} bytes is too large for this command\r\n"
                        );
                        self.refuse(reply, Some((n, sync)), false);
                    }
                    Some((_, sync)) => {
                        if sync {
                            // RFC 3501 §7.5: sealpost reads this command, so it says go
                            // ahead.
                            self.send_client(b"+ Ready for literal data\r\n".to_vec());
                        }
                        splits.push(held);
                        self.inflow = Inflow::Hold { tag, splits, limit };
                    }
                    None => self.inflow = Inflow::Hold { tag, splits, limit },
                }
            }
            Inflow::Relay { tag, done } => {
                if complete {
                    self.send_upstream(bytes);
                    return;
                }
                match literal {
                    Some((_, sync)) if done => {
                        // Upstream ends the command here without a `+`: the client's
                        // literal is never sent (synchronizing) or read and dropped.
                        self.send_upstream(synchronizing(bytes));
                        if sync {
                            self.client.reset_message();
                        } else {
                            self.inflow = Inflow::Discard { reply: Vec::new() };
                        }
                    }
                    // RFC 3501 §7.5: no literal byte goes upstream before upstream's
                    // `+` says it reads a literal there. A server that rejects the line
                    // first would run a literal it was sent unasked as commands, so a
                    // non-synchronizing literal goes up as a synchronizing one.
                    Some((_, sync)) => {
                        self.send_upstream(synchronizing(bytes));
                        self.inflow = Inflow::AwaitContinuation {
                            tag,
                            client_waits: sync,
                        };
                    }
                    None => {
                        self.send_upstream(bytes);
                        self.inflow = Inflow::Relay { tag, done };
                    }
                }
            }
            Inflow::AwaitContinuation { tag, .. } => {
                // Only reached after upstream's `+`: the literal and what follows it.
                self.inflow = Inflow::Relay { tag, done: false };
                self.continue_message(bytes, literal, complete);
            }
            Inflow::Sasl {
                tag,
                mechanism,
                first,
                ..
            } => {
                if first {
                    // The login is read from the first response only; one sealpost
                    // cannot read means no identity, never a later line's.
                    if let Phase::Authenticating { login, .. } = &mut self.phase {
                        *login = sasl_response_login(&mechanism, &bytes);
                    }
                    if self.ctx.keeps_credential() {
                        self.offered = sasl_response(&bytes)
                            .and_then(|data| fill::Credential::sasl(&mechanism, &data));
                    }
                }
                self.send_upstream(bytes);
                self.inflow = Inflow::Sasl {
                    tag,
                    mechanism,
                    ready: false,
                    first: false,
                };
            }
            Inflow::Idle { tag, stage } => {
                debug_assert_eq!(stage, IdleStage::Idling);
                let line = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                // RFC 2177: only DONE ends IDLE; anything else ends it too, unrun.
                let refused = (!line.eq_ignore_ascii_case(b"DONE"))
                    .then(|| command_head(&bytes).map(|(t, _)| t).unwrap_or("*".into()));
                self.end_idle(tag, refused);
            }
        }
    }

    /// Ends the IDLE under `tag`: `DONE` goes up, and the client line that was not
    /// `DONE` (if any) gets `BAD` under `refused`, its tag.
    fn end_idle(&mut self, tag: String, refused: Option<String>) {
        if let Some(who) = refused {
            self.send_client(
                format!("{who} BAD Only DONE may be sent during IDLE\r\n").into_bytes(),
            );
        }
        self.send_upstream(b"DONE\r\n".to_vec());
        self.inflow = Inflow::Idle {
            tag,
            stage: IdleStage::Ending,
        };
    }

    /// A complete client command, held and now decoded; `splits` are the offsets just
    /// after its literals' announcements (see [`Inflow::Hold`]).
    fn on_command(&mut self, tag: String, msg: Vec<u8>, splits: Vec<usize>) {
        use imap_types::IntoStatic;
        let has_literal = !splits.is_empty();
        if command_head(&msg).is_some_and(|(_, n)| {
            matches!(n.as_str(), "SEARCH" | "UID SEARCH" | "SORT" | "UID SORT")
        }) {
            if self.in_flight.selecting() {
                // Behind a SELECT: which mailbox it searches is known at its reply.
                self.waiting = Some(Waiting::Command(tag, msg, splits));
                return;
            }
            if let Some(selected) = self.selected() {
                return self.search(tag, msg, splits, selected);
            }
        }
        let command = match CommandCodec::default().decode(&msg) {
            Ok((_, command)) => command.into_static(),
            Err(_) => {
                let sealed_multi = self.seals_appends()
                    && command_head(&msg).is_some_and(|(_, n)| n == "APPEND")
                    && self.multiappend(&tag, &msg, &splits);
                if !sealed_multi {
                    self.on_unparsed(tag, msg, has_literal);
                }
                return;
            }
        };
        let continues = has_literal
            || matches!(
                command.body,
                CommandBody::Authenticate { .. } | CommandBody::Idle
            );
        if continues && !self.in_flight.is_empty() {
            // RFC 3501 §7.5: a `+` names no command; sent alone, this one owns it.
            self.waiting = Some(Waiting::Command(tag, msg, splits));
            return;
        }
        match command.body {
            CommandBody::StartTLS => {
                if self.tls {
                    self.send_client(format!("{tag} BAD TLS is already active\r\n").into_bytes());
                } else {
                    self.send_client(
                        format!("{tag} OK Begin TLS negotiation now\r\n").into_bytes(),
                    );
                    self.stop(Output::StartTls);
                }
            }
            CommandBody::Login {
                ref username,
                ref password,
            } => {
                let user = String::from_utf8_lossy(username.as_ref()).into_owned();
                if self.ctx.keeps_credential() {
                    self.offered = Some(fill::Credential::login(
                        username.as_ref(),
                        password.declassify().as_ref(),
                    ));
                }
                self.phase = Phase::Authenticating {
                    tag: tag.clone(),
                    login: Some(user),
                };
                self.relay_segments(tag, Pending::Authenticate, &msg, &splits);
            }
            CommandBody::Authenticate {
                ref mechanism,
                ref initial_response,
            } => {
                let mechanism = mechanism.to_string();
                let login = initial_response
                    .as_ref()
                    .and_then(|r| sasl_login(&mechanism, r.declassify().as_ref()));
                if self.ctx.keeps_credential() {
                    self.offered = initial_response
                        .as_ref()
                        .and_then(|r| fill::Credential::sasl(&mechanism, r.declassify().as_ref()));
                }
                self.phase = Phase::Authenticating {
                    tag: tag.clone(),
                    login,
                };
                self.client.set_lines_only(true);
                self.relay_segments(tag.clone(), Pending::Authenticate, &msg, &splits);
                self.inflow = Inflow::Sasl {
                    tag,
                    mechanism,
                    ready: false,
                    first: initial_response.is_none(),
                };
            }
            CommandBody::Select { ref mailbox, .. } => {
                let pending = self.select(mailbox, false);
                self.relay_segments(tag, pending, &msg, &splits);
            }
            CommandBody::Examine { ref mailbox, .. } => {
                let pending = self.select(mailbox, true);
                self.relay_segments(tag, pending, &msg, &splits);
            }
            CommandBody::Close | CommandBody::Unselect => {
                self.relay_segments(tag, Pending::Unselect, &msg, &splits)
            }
            CommandBody::Logout => self.relay_segments(tag, Pending::Logout, &msg, &splits),
            CommandBody::Idle => {
                // Pending::Relayed: [`Inflow::Idle`] follows its progress.
                self.relay(tag.clone(), Pending::Relayed, msg);
                self.client.set_lines_only(true);
                self.inflow = Inflow::Idle {
                    tag,
                    stage: IdleStage::Requested,
                };
            }
            // A FETCH with literals (header field names) is relayed: the view machinery
            // builds its own commands from literal-free ones.
            CommandBody::Fetch { .. } if has_literal => {
                self.relay_segments(tag, Pending::Relayed, &msg, &splits)
            }
            CommandBody::Fetch { .. } => self.fetch(tag, command, msg),
            // Hidden from the capabilities: upstream would order and choose encrypted mail
            // by what it stores (`Subject: ...`, the ciphertext).
            CommandBody::Thread { .. } if self.selected().is_some() => self.send_client(
                format!("{tag} BAD THREAD is not available through sealpost\r\n").into_bytes(),
            ),
            CommandBody::Append { .. } => self.append(tag, command, msg, splits),
            _ => self.relay_segments(tag, Pending::Relayed, &msg, &splits),
        }
    }

    /// A command imap-codec cannot decode. Upstream judges it, except where sealpost
    /// must understand a command to keep its promises (who is logged in, what is
    /// selected, which FETCH needs the view): those get `BAD` here.
    fn on_unparsed(&mut self, tag: String, msg: Vec<u8>, has_literal: bool) {
        let name = command_head(&msg).map(|(_, n)| n).unwrap_or_default();
        match name.as_str() {
            "LOGIN" | "AUTHENTICATE" | "SELECT" | "EXAMINE" | "FETCH" | "UID FETCH"
            | "STARTTLS" | "IDLE" => {
                self.send_client(format!("{tag} BAD Invalid arguments to {name}\r\n").into_bytes());
            }
            // With a literal sealpost cannot place, upstream might run the literal as
            // commands (`XFOO {n+}`, then commands): not relayed.
            _ if has_literal || msg.contains(&b'{') => {
                self.send_client(
                    format!("{tag} BAD {name} with a literal is not understood by sealpost\r\n")
                        .into_bytes(),
                );
            }
            _ => self.relay(tag, Pending::Relayed, msg),
        }
    }

    fn fetch(&mut self, tag: String, command: Command<'_>, msg: Vec<u8>) {
        let CommandBody::Fetch {
            sequence_set,
            macro_or_item_names,
            uid,
            modifiers,
        } = command.body
        else {
            return self.relay(tag, Pending::Relayed, msg);
        };
        let items = fetch::expand(macro_or_item_names);
        // Nothing content-dependent: relay as sent, so the client's pipelining is kept.
        if !fetch::needs_view(&items) {
            return self.relay(tag, Pending::Relayed, msg);
        }
        if self.in_flight.selecting() {
            // Pipelined behind a SELECT or EXAMINE: nothing is selected until its reply,
            // and relaying it now would show encrypted mail as stored. It goes on once
            // the reply is in.
            self.waiting = Some(Waiting::Command(tag, msg, Vec::new()));
            return;
        }
        let Some(selected) = self.selected() else {
            return self.relay(tag, Pending::Relayed, msg);
        };
        // Only messages known to be plain: relayed as sent too.
        if uid && fetch::known_plain(&self.ctx, &selected, &sequence_set) {
            return self.relay(tag, Pending::Relayed, msg);
        }
        if uid && self.building_any(&selected, &sequence_set) {
            // Its view is being built already: answered once it is there.
            self.waiting = Some(Waiting::Command(tag, msg, Vec::new()));
            return;
        }
        let request = fetch::FetchRequest {
            tag: &tag,
            uid,
            line: &msg,
            set: &sequence_set,
            items,
            modifiers: &modifiers,
        };
        // Every message's view cached: answered in the pipeline, no job.
        if let Some((rewrite, command)) = fetch::Rewrite::from_cache(&self.ctx, &selected, &request)
        {
            // What the answers in flight will expand to stays within one job's budget:
            // a client that pipelines a thousand FETCHes of a large view and reads none
            // of them gets them one job at a time instead.
            let pending: usize = self.rewrites.iter().map(|p| p.rewrite.bytes()).sum();
            if pending + rewrite.bytes() <= self.ctx.max_job_view_bytes {
                self.rewrites.push_back(Pipelined {
                    tag: tag.clone(),
                    rewrite,
                });
                return self.relay(tag, Pending::Relayed, command);
            }
        }
        if !self.in_flight.is_empty() {
            tracing::debug!(waiting_for = ?self.in_flight.keys(), "FETCH deferred until earlier commands complete");
            self.waiting = Some(Waiting::Command(tag, msg, Vec::new()));
            return;
        }
        self.jobs_started += 1;
        let prefix = format!("{}{}x", self.tag_prefix, self.jobs_started);
        let selected_mailbox = (selected.mailbox.clone(), selected.uidvalidity);
        match FetchJob::new(request, selected, &prefix) {
            Some(mut job) => {
                let building = self
                    .prefetching
                    .iter()
                    .filter(|(_, s)| {
                        s.mailbox == selected_mailbox.0 && s.uidvalidity == selected_mailbox.1
                    })
                    .map(|((_, uid), _)| *uid)
                    .collect();
                job.set_building(building);
                // The window grows while the client reads on past what the last job
                // asked for, within what it classified (a sync); a client that jumps
                // around gets the small one each time.
                let asked = fetch::explicit_uids(&sequence_set).unwrap_or_default();
                let (lo, hi) = (
                    asked.iter().min().copied().unwrap_or(0),
                    asked.iter().max().copied().unwrap_or(0),
                );
                let reads_on = self
                    .last_job
                    .is_some_and(|(last_lo, reach)| lo > last_lo && lo <= reach.saturating_add(1));
                if !reads_on {
                    self.classify_ahead = fetch::CLASSIFY_AHEAD;
                }
                job.set_classify_ahead(self.classify_ahead);
                self.last_job = (lo > 0).then_some((lo, hi.saturating_add(self.classify_ahead)));
                self.classify_ahead = (self.classify_ahead * 2).min(fetch::CLASSIFY_AHEAD_MAX);
                let outputs = job.start(&self.ctx);
                let finished = outputs.iter().any(|o| matches!(o, JobOutput::Client(_)))
                    && !outputs.iter().any(|o| matches!(o, JobOutput::Upstream(_)));
                self.apply(outputs);
                if !finished {
                    self.job = Some(Box::new(job));
                }
            }
            None => self.relay(tag, Pending::Relayed, msg),
        }
    }

    /// A SEARCH or SORT in a mailbox whose mail is shown through views: a job when it
    /// reads content (see [`SearchJob`]), else relayed.
    fn search(&mut self, tag: String, msg: Vec<u8>, splits: Vec<usize>, selected: Selected) {
        let Some(request) = search::parse(&msg) else {
            // What it reads cannot be told, so neither can whether upstream's answer
            // would be right.
            return self.send_client(
                format!("{tag} BAD SEARCH or SORT arguments not understood by sealpost\r\n")
                    .into_bytes(),
            );
        };
        let prefix = format!("{}{}s", self.tag_prefix, self.jobs_started + 1);
        match SearchJob::new(request, selected, &prefix) {
            Err(reply) => self.send_client(reply.into_bytes()),
            Ok(None) if !splits.is_empty() && !self.in_flight.is_empty() => {
                // RFC 3501 §7.5: a `+` names no command; sent alone, this one owns it.
                self.waiting = Some(Waiting::Command(tag, msg, splits));
            }
            Ok(None) => self.relay_segments(tag, Pending::Relayed, &msg, &splits),
            Ok(Some(_)) if !self.in_flight.is_empty() => {
                self.waiting = Some(Waiting::Command(tag, msg, splits));
            }
            Ok(Some(mut job)) => {
                self.jobs_started += 1;
                let outputs = job.start(&self.ctx);
                self.apply(outputs);
                self.job = Some(Box::new(job));
            }
        }
    }

    /// The selected mailbox, when views of its mail are shown (an identity and a
    /// UIDVALIDITY).
    fn selected(&self) -> Option<Selected> {
        let Phase::Selected {
            identity: Some(identity),
            mailbox,
            uidvalidity: Some(uidvalidity),
            read_only,
        } = &self.phase
        else {
            return None;
        };
        Some(Selected {
            account: self.ctx.account.clone(),
            identity: identity.clone(),
            mailbox: mailbox.clone(),
            uidvalidity: *uidvalidity,
            read_only: *read_only,
            junk: self.is_junk(mailbox),
        })
    }

    /// Is the view of a UID in `set` of this mailbox being built ahead?
    fn building_any(&self, selected: &Selected, set: &imap_types::sequence::SequenceSet) -> bool {
        if self.prefetching.is_empty() {
            return false;
        }
        let Some(uids) = fetch::explicit_uids(set) else {
            return false;
        };
        self.prefetching.iter().any(|((_, uid), s)| {
            s.mailbox == selected.mailbox
                && s.uidvalidity == selected.uidvalidity
                && s.identity == selected.identity
                && uids.contains(uid)
        })
    }

    /// An APPEND read whole: sealed to the identity's key first when configured and
    /// the message is not encrypted already, else relayed as it came.
    fn append(&mut self, tag: String, command: Command<'_>, msg: Vec<u8>, splits: Vec<usize>) {
        use imap_types::extensions::binary::LiteralOrLiteral8;
        let CommandBody::Append {
            mailbox, message, ..
        } = &command.body
        else {
            return self.relay_segments(tag, Pending::Relayed, &msg, &splits);
        };
        let (LiteralOrLiteral8::Literal(literal), Some((&at, earlier))) =
            (message, splits.split_last())
        else {
            return self.relay_segments(tag, Pending::Relayed, &msg, &splits);
        };
        let data = literal.data();
        let end = at + data.len();
        if !self.seals_into(mailbox) || msg.get(at..end) != Some(data) {
            return self.relay_segments(tag, Pending::Relayed, &msg, &splits);
        }
        let sealing = Sealing {
            tag,
            texts: vec![msg[..at].to_vec()],
            first_splits: earlier.to_vec(),
            messages: vec![Some(data.to_vec())],
            tail: msg[end..].to_vec(),
            failed: None,
        };
        self.seal(sealing, &msg, &splits);
    }

    /// A MULTIAPPEND (RFC 3502: `APPEND mailbox message *(SP message)`), which imap-codec
    /// does not decode: each message is checked by decoding it as an APPEND of its own
    /// (same tag and mailbox, its flags and date), then all are sealed and go up as one
    /// command, so the server still stores all or none. `false`: not one.
    fn multiappend(&mut self, tag: &str, msg: &[u8], splits: &[usize]) -> bool {
        use imap_codec::encode::Encoder;
        use imap_types::extensions::binary::LiteralOrLiteral8;
        use imap_types::IntoStatic;
        let Some(&first) = splits.first() else {
            return false;
        };
        // Each literal's length, from its announcement (`{n}` or `{n+}`).
        let lens: Option<Vec<usize>> = splits
            .iter()
            .map(|&s| crate::imap::framer::literal_announcement(&msg[..s]).map(|(n, _)| n as usize))
            .collect();
        let Some(lens) = lens else { return false };
        let ends: Vec<usize> = splits.iter().zip(&lens).map(|(s, n)| s + n).collect();
        if ends.iter().zip(splits.iter().skip(1)).any(|(e, s)| e > s)
            || *ends.last().unwrap() > msg.len()
        {
            return false;
        }
        let decode = |bytes: &[u8]| match CommandCodec::default().decode(bytes) {
            Ok((b"", c)) => match c.body {
                CommandBody::Append {
                    mailbox,
                    message: LiteralOrLiteral8::Literal(_),
                    ..
                } => Some(mailbox.into_static()),
                _ => None,
            },
            _ => None,
        };
        // The first message, with the command's head.
        let Some(mailbox) = decode(&[&msg[..ends[0]], b"\r\n"].concat()) else {
            return false;
        };
        // The head of an APPEND of that mailbox, as imap-codec writes it.
        let Ok(probe) = CommandBody::append(mailbox.clone(), Vec::new(), None, b"x".as_slice())
        else {
            return false;
        };
        let Ok(t) = imap_types::core::Tag::try_from(tag) else {
            return false;
        };
        let encoded: Vec<u8> = CommandCodec::default()
            .encode(&Command {
                tag: t,
                body: probe,
            })
            .dump();
        let Some(head) = encoded.strip_suffix(b"{1}\r\nx\r\n") else {
            return false;
        };
        let mut texts = vec![msg[..first].to_vec()];
        let mut messages = vec![Some(msg[first..ends[0]].to_vec())];
        for i in 1..splits.len() {
            let between = &msg[ends[i - 1]..splits[i]];
            let Some(own) = between.strip_prefix(b" ") else {
                return false;
            };
            let single = [head, own, &msg[splits[i]..ends[i]], b"\r\n"].concat();
            if decode(&single).is_none() {
                return false;
            }
            texts.push(between.to_vec());
            messages.push(Some(msg[splits[i]..ends[i]].to_vec()));
        }
        let tail = &msg[*ends.last().unwrap()..];
        if !matches!(tail, b"\r\n" | b"\n") || !self.seals_into(&mailbox) {
            return false;
        }
        let sealing = Sealing {
            tag: tag.to_string(),
            texts,
            first_splits: Vec::new(),
            messages,
            tail: tail.to_vec(),
            failed: None,
        };
        self.seal(sealing, msg, splits);
        true
    }

    /// Asks for every message of `sealing` that is not encrypted already to be sealed;
    /// with none, relays the command as it came.
    fn seal(&mut self, mut sealing: Sealing, msg: &[u8], splits: &[usize]) {
        let Some(identity) = self.phase.identity().cloned() else {
            return self.relay_segments(sealing.tag, Pending::Relayed, msg, splits);
        };
        let mut asked = false;
        for (index, slot) in sealing.messages.iter_mut().enumerate() {
            if slot.as_deref().is_some_and(crate::pgp::is_fully_encrypted) {
                continue;
            }
            let Some(message) = slot.take() else { continue };
            asked = true;
            self.out.push(Output::Seal(SealRequest {
                tag: sealing.tag.clone(),
                index,
                identity: identity.clone(),
                message,
            }));
        }
        if !asked {
            return self.relay_segments(sealing.tag, Pending::Relayed, msg, splits);
        }
        self.sealing = Some(sealing);
    }

    /// A sealed message asked for with [`Output::Seal`] (or why it could not be made).
    /// Once every message of the APPEND is back, the command goes upstream with them in
    /// place of the client's, or the client gets `NO` and nothing is stored.
    pub fn on_sealed(
        &mut self,
        tag: &str,
        index: usize,
        sealed: Result<Vec<u8>, String>,
    ) -> Vec<Output> {
        let Some(state) = self.sealing.as_mut().filter(|s| s.tag == tag) else {
            return self.take();
        };
        let Some(slot) = state.messages.get_mut(index).filter(|m| m.is_none()) else {
            return self.take();
        };
        match sealed {
            Ok(m) => *slot = Some(m),
            Err(why) => {
                // An empty message stands in; the command is refused as a whole.
                *slot = Some(Vec::new());
                state.failed.get_or_insert(why);
            }
        }
        if state.messages.iter().any(Option::is_none) {
            return self.take();
        }
        let Some(state) = self.sealing.take() else {
            return self.take();
        };
        if let Some(why) = state.failed {
            tracing::warn!(tag = %state.tag, error = %why, "APPEND refused: a message could not be encrypted");
            self.send_client(
                format!(
                    "{} NO [CANNOT] Not stored: the message could not be encrypted ({why})\r\n",
                    state.tag
                )
                .into_bytes(),
            );
        } else {
            // Each announcement now gives the size that goes up, as a synchronizing
            // literal (RFC 3501 §7.5: sent after upstream's `+`).
            let mut command = Vec::new();
            let mut splits = state.first_splits;
            for (text, message) in state.texts.iter().zip(state.messages) {
                let message = message.unwrap_or_default();
                let open = text.iter().rposition(|&b| b == b'{').unwrap_or(text.len());
                command.extend_from_slice(&text[..open]);
                command.extend_from_slice(format!("{{{}}}\r\n", message.len()).as_bytes());
                splits.push(command.len());
                command.extend_from_slice(&message);
            }
            command.extend_from_slice(&state.tail);
            self.relay_segments(state.tag, Pending::Relayed, &command, &splits);
        }
        if !self.busy() {
            self.resume_client();
        }
        self.take()
    }

    /// Processes the client's input that arrived while the session had to wait.
    fn resume_client(&mut self) {
        let held = std::mem::take(&mut self.held);
        self.client.push(&held);
        self.drain_client();
    }

    /// Relays a complete client command upstream, remembering its tag until completion.
    fn relay(&mut self, tag: String, pending: Pending, msg: Vec<u8>) {
        self.in_flight.insert(tag, pending);
        self.send_upstream(msg);
    }

    /// Relays a held command whose literals sealpost answered itself: the part up to
    /// the first literal now, each further part after upstream's `+`.
    fn relay_segments(&mut self, tag: String, pending: Pending, msg: &[u8], splits: &[usize]) {
        let mut parts = segments(msg, splits);
        let Some(first) = parts.pop_front() else {
            return;
        };
        if !parts.is_empty() {
            self.outgoing = Some((tag.clone(), parts));
        }
        self.relay(tag, pending, first);
    }

    fn select(&mut self, mailbox: &Mailbox<'_>, read_only: bool) -> Pending {
        let name = match mailbox {
            Mailbox::Inbox => "INBOX".to_string(),
            Mailbox::Other(o) => String::from_utf8_lossy(o.as_ref()).into_owned(),
        };
        self.phase = std::mem::replace(&mut self.phase, Phase::Logout).deselected();
        self.last_uidvalidity = None;
        self.classify_ahead = fetch::CLASSIFY_AHEAD;
        self.last_job = None;
        Pending::Select {
            mailbox: name,
            read_only,
        }
    }

    fn apply(&mut self, outputs: Vec<JobOutput>) {
        for o in outputs {
            match o {
                JobOutput::Client(b) => self.send_client(b),
                JobOutput::Upstream(b) => self.send_upstream(b),
                JobOutput::Decrypt(r) => {
                    if r.prefetch {
                        // A job runs only in a selected mailbox, the one it was made for.
                        if let Some(selected) = self.selected() {
                            self.prefetching.insert((r.job.clone(), r.uid), selected);
                        }
                    }
                    self.out.push(Output::Decrypt(r))
                }
            }
        }
    }

    /// A view asked for with [`Output::Decrypt`] is ready.
    pub fn on_view(
        &mut self,
        job: &str,
        uid: u32,
        raw: &[u8],
        view: crate::pgp::View,
    ) -> Vec<Output> {
        if let Some(selected) = self.prefetching.remove(&(job.to_string(), uid)) {
            fetch::store_prefetched(&self.ctx, &selected, uid, raw, view);
            // A FETCH waiting for it goes on (a job's FETCH still waits for the job).
            if self.job.is_none() && matches!(self.waiting, Some(Waiting::Command(..))) {
                if let Some(Waiting::Command(tag, msg, splits)) = self.waiting.take() {
                    self.on_command(tag, msg, splits);
                    if !self.busy() {
                        self.resume_client();
                    }
                }
            }
            return self.take();
        }
        if let Some(running) = &mut self.job {
            let (outputs, done) = running.on_view(job, uid, raw, view, &self.ctx);
            self.apply(outputs);
            if done {
                self.job = None;
                self.resume_client();
            }
        }
        self.take()
    }

    // ----- upstream side -----------------------------------------------------

    pub fn on_upstream(&mut self, bytes: &[u8]) -> Vec<Output> {
        self.upstream.push(bytes);
        while !self.closing {
            let Some(frame) = self.upstream.next_frame() else {
                break;
            };
            if let Frame::Overlong { .. } = frame {
                tracing::warn!("upstream sent an over-long line; closing");
                self.send_client(
                    b"* BYE The mail server sent a response sealpost cannot relay\r\n".to_vec(),
                );
                self.stop(Output::Close);
                break;
            }
            let complete = self.upstream.message_complete();
            if complete {
                // Autocrypt state is per identity, and never learned from Junk.
                if let (
                    Some(ac),
                    Some(m),
                    Phase::Selected {
                        identity: Some(identity),
                        mailbox,
                        ..
                    },
                ) = (&self.ctx.autocrypt, self.upstream.message(), &self.phase)
                {
                    if !self.is_junk(mailbox) {
                        learn_autocrypt(ac, identity, m);
                    }
                }
            }
            if let Some(job) = &mut self.job {
                let message = if complete {
                    self.upstream.message().map(|m| m.to_vec())
                } else {
                    None
                };
                let (outputs, done) =
                    job.on_upstream(&frame, message.as_deref(), complete, &self.ctx);
                self.apply(outputs);
                if done {
                    self.job = None;
                    self.resume_client();
                }
                continue;
            }
            self.on_upstream_frame(frame);
            if self.in_flight.is_empty() {
                if let Some(waiting) = self.waiting.take() {
                    match waiting {
                        Waiting::Command(tag, msg, splits) => self.on_command(tag, msg, splits),
                        Waiting::Append(bytes, literal) => {
                            self.start_message(bytes, literal, false)
                        }
                    }
                    if !self.busy() {
                        self.resume_client();
                    }
                }
            }
        }
        self.take()
    }

    fn on_upstream_frame(&mut self, frame: Frame) {
        let (bytes, first, literal) = match frame {
            Frame::Line {
                bytes,
                first,
                literal,
            } => (bytes, first, literal),
            // (While sealpost's own LIST is in flight, see below.)
            Frame::Literal { .. } if self.discovering() => return,
            Frame::Literal { bytes, .. } => return self.send_client(bytes),
            Frame::Overlong { .. } => return,
        };
        if !first || literal.is_some() {
            if self.discovering() {
                // Only sealpost's own LIST is in flight: a LIST whose mailbox name is a
                // literal (its attributes are not read: the usual names still count).
                return;
            }
            // Inside or at the start of a response with literals (FETCH data): relayed
            // as it is; nothing sealpost acts on carries literals.
            return self.send_client(bytes);
        }
        if !self.greeted {
            self.greeted = true;
            return self.on_greeting(bytes);
        }
        if bytes.starts_with(b"+") {
            return self.on_continuation(bytes);
        }
        if !self.rewrites.is_empty() && bytes.starts_with(b"* ") {
            if let Some(line) = self.rewritten(&bytes) {
                return self.send_client(line);
            }
        }
        let response = decode_response(&bytes);
        let line = match &response {
            Some(r) => caps::filter_response(&bytes, r, self.local()),
            None => bytes.clone(),
        };
        match response {
            Some(Response::Status(Status::Tagged(t))) => {
                let tag = t.tag.as_ref().to_string();
                let ok = t.body.kind == StatusKind::Ok;
                let read_only = matches!(t.body.code, Some(Code::ReadOnly));
                if self.discovered(&tag, ok) {
                    return;
                }
                self.on_tagged(&tag, ok, read_only);
            }
            Some(Response::Data(Data::List {
                items,
                mailbox: Mailbox::Other(name),
                ..
            })) => {
                // RFC 6154 §2: the client's Sent and Drafts, whatever their names.
                let has = |want: &str| {
                    items
                        .iter()
                        .any(|a| a.to_string().eq_ignore_ascii_case(want))
                };
                let name = String::from_utf8_lossy(name.as_ref()).into_owned();
                if has("\\Junk") {
                    self.junk.insert(name.clone());
                }
                if has("\\Sent") || has("\\Drafts") {
                    self.special_use.insert(name);
                }
                if self.discovering() {
                    // The answer to sealpost's own LIST (client commands are held).
                    return;
                }
            }
            Some(Response::Status(Status::Untagged(body))) => {
                // RFC 3501 §6.3.1: `OK [UIDVALIDITY n]` comes before the tagged reply.
                if let Some(Code::UidValidity(v)) = body.code {
                    if self.in_flight.selecting() {
                        self.last_uidvalidity = Some(v.get());
                    }
                }
            }
            // The answer to sealpost's own LIST (INBOX included) is not the client's.
            Some(Response::Data(Data::List { .. })) if self.discovering() => return,
            // A LIST line imap-codec cannot read (extended data): not the client's either.
            None if self.discovering() && starts_with_ignore_case(&bytes, b"* LIST ") => return,
            _ => {
                if let Some(tag) = response_tag(&bytes) {
                    if self.discovered(&tag, false) {
                        return;
                    }
                    // A tagged reply imap-codec could not decode: it completes the command
                    // all the same, and counts as a failure.
                    self.on_tagged(&tag, false, false);
                }
            }
        }
        self.send_client(line);
        // A completion may end a wait (a refused literal, a login, IDLE's end).
        if !self.busy() && !self.held.is_empty() {
            self.resume_client();
        }
    }

    /// A `* n FETCH` line for a UID FETCH answered from views (see [`fetch::Rewrite`]):
    /// the client's response, with the view's content items.
    fn rewritten(&mut self, line: &[u8]) -> Option<Vec<u8>> {
        if !contains_ci_prefix(line, b" FETCH (") {
            return None;
        }
        let Ok((_, Response::Data(Data::Fetch { seq, items }))) =
            ResponseCodec::default().decode(line)
        else {
            return None;
        };
        let items = items.into_inner();
        let uid = super::fetch::item_uid(&items)?;
        // Which command a `* n FETCH` answers cannot be told: upstream may run
        // pipelined FETCHes in parallel (Dovecot does; RFC 3501 §5.5), and a STORE's or
        // another session's flag change looks the same. So the first one about a UID
        // gets the view's content for every rewrite that wants it, with everything else
        // upstream put in it (nothing upstream says is lost); later ones are relayed as
        // they are.
        let mut view = None;
        let mut asked: Vec<imap_types::fetch::MessageDataItemName<'static>> = Vec::new();
        for p in self.rewrites.iter_mut().filter(|p| p.rewrite.wants(uid)) {
            let Some(v) = p.rewrite.take(uid) else {
                continue;
            };
            view.get_or_insert(v);
            for item in p.rewrite.items() {
                if !asked.contains(item) {
                    asked.push(item.clone());
                }
            }
        }
        let view = view?;
        fetch::respond(&view, seq.get(), uid, &asked, &items)
    }

    fn on_greeting(&mut self, bytes: Vec<u8>) {
        let mut bye = false;
        let line = match GreetingCodec::default().decode(&bytes) {
            Ok((_, greeting)) => {
                if greeting.kind == GreetingKind::PreAuth {
                    self.phase = Phase::Authenticated { identity: None };
                }
                bye = greeting.kind == GreetingKind::Bye;
                match &greeting.code {
                    Some(Code::Capability(_)) => caps::filter_code(&bytes, self.local()),
                    _ => bytes.clone(),
                }
            }
            Err(_) => bytes.clone(),
        };
        self.send_client(line);
        if bye {
            // Closes after the greeting is relayed.
            self.stop(Output::Close);
        }
    }

    fn on_continuation(&mut self, bytes: Vec<u8>) {
        if let Some((tag, mut parts)) = self.outgoing.take() {
            // Upstream's `+` for a literal of a held command: sealpost already said go
            // ahead to the client; the next part goes up, the `+` goes no further.
            if let Some(next) = parts.pop_front() {
                self.send_upstream(next);
            }
            if !parts.is_empty() {
                self.outgoing = Some((tag, parts));
            } else if !self.busy() {
                self.resume_client();
            }
            return;
        }
        match &mut self.inflow {
            Inflow::AwaitContinuation { tag, client_waits } => {
                // Upstream reads the literal: the client may send it now (or, when it sent
                // it already, it goes up now).
                let waits = *client_waits;
                self.inflow = Inflow::Relay {
                    tag: tag.clone(),
                    done: false,
                };
                if !waits {
                    self.resume_client();
                    return;
                }
            }
            // One SASL response per challenge (RFC 3501 §6.2.2).
            Inflow::Sasl { ready, .. } => *ready = true,
            Inflow::Idle { stage, .. } if *stage == IdleStage::Requested => {
                *stage = IdleStage::Idling;
                if !self.held.is_empty() {
                    // The client sent on before the `+`: its DONE, or a line that ends
                    // the IDLE all the same (see `on_client_frame`). It waits for no `+`;
                    // one relayed now could only be taken for the go-ahead of a literal
                    // it sent after (a held command sealpost may refuse unread).
                    self.resume_client();
                    return;
                }
            }
            _ => {
                // No relayed command waits for one: a `+` now asks for nothing. Relayed,
                // it would tell the client to send the synchronizing literal of a
                // command sealpost holds (and may refuse unread), whose bytes would
                // then be read as commands.
                tracing::debug!("a continuation request no command waits for dropped");
                return;
            }
        }
        self.send_client(bytes);
        if !self.busy() {
            self.resume_client();
        }
    }

    /// A client command is complete: its rewrite, if any, ends.
    fn completed(&mut self, tag: &str) {
        self.rewrites.retain(|p| p.tag != tag);
    }

    /// The tagged completion of a client command.
    fn on_tagged(&mut self, tag: &str, ok: bool, read_only_code: bool) {
        if matches!(&self.outgoing, Some((t, _)) if t == tag) {
            // Refused before all of it was sent.
            self.outgoing = None;
        }
        if let Inflow::Relay { tag: t, done } = &mut self.inflow {
            if t == tag {
                *done = true;
            }
        }
        if matches!(&self.inflow, Inflow::Idle { tag: t, .. } if t == tag) {
            self.inflow = Inflow::Start;
            self.client.set_lines_only(false);
        }
        if let Inflow::AwaitContinuation {
            tag: t,
            client_waits,
        } = &self.inflow
        {
            if t == tag {
                if *client_waits {
                    // Refused before the literal: the client will not send it.
                    self.inflow = Inflow::Start;
                    self.client.reset_message();
                } else {
                    // Refused, but the literal was sent: its bytes (and the rest of the
                    // command) are read and dropped, never framed as commands.
                    self.inflow = Inflow::Discard { reply: Vec::new() };
                }
                // Only an APPEND streams its literals, so no phase depends on it.
                self.in_flight.remove(tag);
                self.completed(tag);
                return;
            }
        }
        let Some(pending) = self.in_flight.remove(tag) else {
            return;
        };
        self.completed(tag);
        let login = matches!(pending, Pending::Authenticate) && ok;
        let phase = std::mem::replace(&mut self.phase, Phase::Logout);
        self.phase = match (pending, phase) {
            (Pending::Authenticate, Phase::Authenticating { tag: t, login }) if t == tag => {
                if matches!(&self.inflow, Inflow::Sasl { tag: s, .. } if s == tag) {
                    self.inflow = Inflow::Start;
                    self.client.set_lines_only(false);
                }
                let offered = self.offered.take();
                if ok {
                    let phase = self.logged_in(login.as_deref());
                    if phase.identity().is_some() {
                        self.credential = offered.map(Arc::new);
                    }
                    phase
                } else {
                    Phase::NotAuthenticated
                }
            }
            (Pending::Select { mailbox, read_only }, Phase::Authenticated { identity }) if ok => {
                let uidvalidity = self.last_uidvalidity.take();
                if uidvalidity.is_none() {
                    // Without UIDVALIDITY no view can be cached safely: relay only.
                    tracing::warn!(
                        "SELECT without UIDVALIDITY; encrypted mail is relayed as stored"
                    );
                }
                if let (Some(identity), Some(credential), Some(uidvalidity)) =
                    (&identity, &self.credential, uidvalidity)
                {
                    self.out.push(Output::Background(fill::FillRequest {
                        identity: identity.clone(),
                        mailbox: mailbox.clone(),
                        uidvalidity,
                        credential: credential.clone(),
                    }));
                }
                Phase::Selected {
                    identity,
                    mailbox,
                    uidvalidity,
                    read_only: read_only || read_only_code,
                }
            }
            (Pending::Unselect, phase) if ok => phase.deselected(),
            (Pending::Logout, _) => Phase::Logout,
            (_, phase) => phase,
        };
        if login
            && self.ctx.encrypt_append == EncryptAppend::SentDrafts
            && self.phase.identity().is_some()
        {
            self.discovery_due = true;
        }
        if self.discovery_due && self.in_flight.is_empty() {
            self.discover_special_use(true);
        }
    }

    fn logged_in(&self, login: Option<&str>) -> Phase {
        let identity = login
            .and_then(|u| self.ctx.identity_for_login(u))
            .map(|i| i.address.clone());
        match &identity {
            Some(a) => tracing::info!(identity = %a, "logged in; decrypting for this identity"),
            None => {
                tracing::info!(
                    "logged in; no identity of this account for this login, relaying only"
                )
            }
        }
        Phase::Authenticated { identity }
    }
}

/// Decodes a server response line sealpost may act on. Only lines that can carry what
/// it acts on are decoded (tagged replies, untagged status and CAPABILITY).
fn decode_response(line: &[u8]) -> Option<Response<'static>> {
    use imap_types::IntoStatic;
    let untagged = line.starts_with(b"* ");
    if untagged {
        let word = line[2..]
            .iter()
            .take(12)
            .map(u8::to_ascii_uppercase)
            .collect::<Vec<u8>>();
        // LIST: for the special-use attributes (RFC 6154) of `encrypt_append`.
        let status = [
            &b"OK "[..],
            b"NO ",
            b"BAD ",
            b"BYE ",
            b"CAPABILITY",
            b"LIST ",
        ]
        .iter()
        .any(|w| word.starts_with(w));
        if !status {
            return None;
        }
    }
    ResponseCodec::default()
        .decode(line)
        .ok()
        .map(|(_, r)| r.into_static())
}

/// The tag and command name at the start of a client line (RFC 3501 §9: a tag is
/// ASTRING-CHARs except `+`; a command name is an atom). `UID x` is one name.
pub fn command_head(line: &[u8]) -> Option<(String, String)> {
    let tag_len = line.iter().position(|&b| !is_tag_char(b))?;
    if tag_len == 0 || line.get(tag_len) != Some(&b' ') {
        return None;
    }
    let tag = String::from_utf8(line[..tag_len].to_vec()).ok()?;
    let atom = |from: usize| -> (String, usize) {
        let len = line[from..]
            .iter()
            .position(|&b| !b.is_ascii_alphanumeric() && b != b'-' && b != b'.')
            .unwrap_or(line.len() - from);
        (
            String::from_utf8_lossy(&line[from..from + len]).to_ascii_uppercase(),
            from + len,
        )
    };
    let (mut name, end) = atom(tag_len + 1);
    if name.is_empty() {
        return None;
    }
    if name == "UID" && line.get(end) == Some(&b' ') {
        let (sub, _) = atom(end + 1);
        name = format!("UID {sub}");
    }
    Some((tag, name))
}

/// A line's literal announcement made synchronizing: `{n+}` becomes `{n}` (RFC 7888
/// non-synchronizing literals are a client's choice; towards upstream sealpost always
/// waits for the `+`). Other lines come back as they are.
fn synchronizing(mut line: Vec<u8>) -> Vec<u8> {
    let end =
        line.len() - usize::from(line.ends_with(b"\r\n")) - usize::from(line.ends_with(b"\n"));
    if end >= 2 && line[end - 1] == b'}' && line[end - 2] == b'+' {
        line.remove(end - 2);
    }
    line
}

/// A held command cut after each literal announcement (at `splits`), every
/// announcement made synchronizing: the pieces go upstream one per `+`.
fn segments(msg: &[u8], splits: &[usize]) -> std::collections::VecDeque<Vec<u8>> {
    let mut parts = std::collections::VecDeque::with_capacity(splits.len() + 1);
    let mut start = 0;
    for &end in splits {
        parts.push_back(synchronizing(msg[start..end].to_vec()));
        start = end;
    }
    parts.push_back(msg[start..].to_vec());
    parts
}

/// The tag prefix of sealpost's own commands: unpredictable, so no client command can
/// be mistaken for one (tests use a fixed one).
fn job_tag_prefix() -> String {
    if cfg!(test) {
        return "sp".into();
    }
    use rand::distr::{Alphanumeric, SampleString};
    format!("sp{}", Alphanumeric.sample_string(&mut rand::rng(), 8))
}

/// Does `needle` occur in the first 40 bytes of `line` (a `* n FETCH (` head)?
fn contains_ci_prefix(line: &[u8], needle: &[u8]) -> bool {
    let head = &line[..line.len().min(40)];
    head.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fn starts_with_ignore_case(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes.len() >= prefix.len() && bytes[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn is_tag_char(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && !b"(){%*\"\\+".contains(&b)
}

/// The tag of a tagged server response line.
fn response_tag(line: &[u8]) -> Option<String> {
    if line.starts_with(b"* ") || line.starts_with(b"+") {
        return None;
    }
    let end = line.iter().position(|&b| b == b' ')?;
    String::from_utf8(line[..end].to_vec()).ok()
}

/// Does `bytes` hold `Autocrypt:` (any case)? Every fetched message is looked at, so
/// this finds the colons first (memchr) rather than comparing at every byte.
fn mentions_autocrypt(bytes: &[u8]) -> bool {
    const NAME: &[u8] = b"autocrypt";
    memchr::memchr_iter(b':', bytes)
        .any(|at| at >= NAME.len() && bytes[at - NAME.len()..at].eq_ignore_ascii_case(NAME))
}

/// Feeds the header of any message in a FETCH response to `identity`'s Autocrypt
/// state (Autocrypt 1.1 §2.3: update on every received message that carries a header).
/// An outer header teaches no gossip; its key counts as authenticated only with the
/// provider's `Authentication-Results` (see [`crate::keys::authres`]).
fn learn_autocrypt(ac: &crate::keys::autocrypt::Learner, identity: &str, response: &[u8]) {
    use imap_types::fetch::{MessageDataItem, Section};
    if !response.starts_with(b"* ") || !mentions_autocrypt(response) {
        return;
    }
    let Ok((_, Response::Data(Data::Fetch { items, .. }))) =
        ResponseCodec::default().decode(response)
    else {
        return;
    };
    let now = crate::keys::unix_now();
    for item in items.as_ref() {
        let data = match item {
            MessageDataItem::BodyExt {
                section: None | Some(Section::Header(None)),
                data,
                ..
            }
            | MessageDataItem::Rfc822(data)
            | MessageDataItem::Rfc822Header(data) => data,
            _ => continue,
        };
        if let Some(bytes) = &data.0 {
            if crate::pgp::is_encrypted(bytes.as_ref()) {
                // Learned from its view, where the signed payload's field is told apart
                // from the outer one (which would otherwise come first and stay).
                continue;
            }
            let (header, _) = crate::mime::split_message(bytes.as_ref());
            let evidence = crate::keys::autocrypt::Evidence {
                signed_good_for: None,
                authserv_id: ac.authserv_id.as_deref(),
            };
            if let crate::keys::autocrypt::Learned::Key { addr } =
                ac.store.learn(identity, header, evidence, now)
            {
                tracing::info!(address = %addr, "learned a key from an Autocrypt header");
            }
        }
    }
}

/// The login in a SASL client response line (base64, RFC 3501 §6.2.2).
fn sasl_response_login(mechanism: &str, line: &[u8]) -> Option<String> {
    sasl_login(mechanism, &sasl_response(line)?)
}

/// A SASL response line (base64, RFC 3501 §6.2.2), decoded.
fn sasl_response(line: &[u8]) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    let b64 = line.strip_suffix(b"\n")?;
    let b64 = b64.strip_suffix(b"\r").unwrap_or(b64);
    // Decoded as leniently as servers do (Dovecot ignores non-zero trailing bits): the
    // name read here must be the one upstream reads.
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    lenient.decode(b64).ok().map(zeroize::Zeroizing::new)
}

/// The login name in decoded SASL data (PLAIN, XOAUTH2, OAUTHBEARER). A PLAIN
/// authorization identity other than the authentication identity (a master user
/// acting for another mailbox) yields none: whose mail that is, sealpost cannot say.
fn sasl_login(mechanism: &str, data: &[u8]) -> Option<String> {
    let mech = AuthMechanism::try_from(mechanism).ok()?;
    match mech {
        AuthMechanism::Plain => {
            let mut parts = data.split(|&b| b == 0);
            let authz = parts.next()?;
            let user = parts.next()?;
            parts.next()?;
            if !authz.is_empty() && authz != user {
                return None;
            }
            String::from_utf8(user.to_vec()).ok()
        }
        AuthMechanism::XOAuth2 => {
            let s = std::str::from_utf8(data).ok()?;
            s.split('\x01')
                .find_map(|kv| kv.strip_prefix("user="))
                .map(str::to_string)
        }
        AuthMechanism::OAuthBearer => {
            let s = std::str::from_utf8(data).ok()?;
            let gs2 = s.split('\x01').next()?;
            gs2.split(',')
                .find_map(|kv| kv.strip_prefix("a="))
                .map(str::to_string)
        }
        _ => None,
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "search_tests.rs"]
mod search_tests;
