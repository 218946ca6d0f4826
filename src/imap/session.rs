//! One proxied IMAP conversation, without I/O.
//!
//! Bytes from the client and from upstream are fed in; what to send where comes out.
//! Messages are relayed as they are framed (literals stream through), with four
//! exceptions: capability lists are filtered ([`super::caps`]); STARTTLS towards the
//! client is answered here (the upstream link is secured separately); plaintext
//! LOGIN/AUTHENTICATE is refused on a non-loopback listener before TLS; and a FETCH
//! in a selected mailbox that asks for content is answered by a [`FetchJob`].

use super::caps::{self, Local};
use super::fetch::{self, FetchJob, JobOutput, Selected};
use super::framer::{Frame, Framer};
use super::ImapContext;
use base64::Engine;
use imap_codec::decode::Decoder;
use imap_codec::CommandCodec;
use imap_types::auth::AuthMechanism;
use imap_types::command::CommandBody;
use imap_types::mailbox::Mailbox;
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
    Close,
}

#[derive(Debug, Clone)]
enum State {
    NotAuthenticated,
    /// `identity` is the address whose key decrypts; `None`: plain pass-through.
    Authenticated {
        identity: Option<String>,
    },
    Selected {
        identity: Option<String>,
        mailbox: String,
        uidvalidity: u32,
        read_only: bool,
    },
    Logout,
}

/// Client commands whose completion changes our state.
#[derive(Debug, Clone)]
enum Pending {
    Login(String),
    Select { mailbox: String, read_only: bool },
    Unselect,
    Logout,
}

/// How the client message being framed is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Disposition {
    /// Forward every frame upstream as it comes.
    Forward,
    /// Hold until complete, then act.
    Hold,
    /// Drop the frames, answer when complete.
    Refuse(String),
}

/// After this many bytes held from the client while a FETCH job runs, stop reading.
const MAX_HELD: usize = 1 << 20;

pub struct Session {
    ctx: Arc<ImapContext>,
    client: Framer,
    upstream: Framer,
    tls: bool,
    plaintext_ok: bool,
    greeted: bool,
    state: State,
    pending: HashMap<String, Pending>,
    /// An AUTHENTICATE in progress: (tag, mechanism, login learned so far).
    auth: Option<(String, String, Option<String>)>,
    uidvalidity: Option<u32>,
    read_only_code: bool,
    job: Option<FetchJob>,
    /// Tags of client commands relayed upstream and not completed yet.
    in_flight: std::collections::HashSet<String>,
    /// A FETCH that needs a job, waiting until the commands in flight complete (their
    /// responses must not interleave with the job's).
    deferred: Option<Vec<u8>>,
    /// The tag of a relayed command whose synchronizing literal waits for upstream's
    /// `+` (or its refusal); client input is held until then.
    awaiting_continuation: Option<String>,
    /// The tag of the client message being framed.
    message_tag: String,
    /// A relayed LOGIN/SELECT/EXAMINE with literals, parsed once complete.
    observe: bool,
    held: Vec<u8>,
    disposition: Disposition,
    tag_prefix: String,
    jobs_started: u64,
    out: Vec<Output>,
}

impl Session {
    /// `tls`: the client link is TLS from the start; `plaintext_ok`: a loopback
    /// listener, where LOGIN without TLS is acceptable.
    pub fn new(ctx: Arc<ImapContext>, tls: bool, plaintext_ok: bool) -> Session {
        let max_literal = ctx.max_message_size as u64 + 1024 * 1024;
        let line = ctx.max_line_length;
        let capture = ctx.max_message_size + 1024 * 1024;
        Session {
            client: Framer::new(line, max_literal, 64 * 1024),
            // Server lines can be long (a SEARCH of many UIDs) and literals large (they
            // stream through; only capture is bounded).
            upstream: Framer::new(line.max(8 * 1024 * 1024), u64::MAX, capture),
            ctx,
            tls,
            plaintext_ok,
            greeted: false,
            state: State::NotAuthenticated,
            pending: HashMap::new(),
            auth: None,
            uidvalidity: None,
            read_only_code: false,
            job: None,
            in_flight: Default::default(),
            deferred: None,
            awaiting_continuation: None,
            message_tag: String::new(),
            observe: false,
            held: Vec::new(),
            disposition: Disposition::Forward,
            tag_prefix: "sp".into(),
            jobs_started: 0,
            out: Vec::new(),
        }
    }

    fn local(&self) -> Local {
        Local {
            starttls: !self.tls,
            login_disabled: !self.tls && !self.plaintext_ok,
        }
    }

    /// True when no FETCH job is running (a safe point to close for shutdown).
    pub fn is_idle(&self) -> bool {
        self.job.is_none() && self.deferred.is_none() && self.awaiting_continuation.is_none()
    }

    /// While a FETCH job runs or waits, client input is held, not framed.
    fn busy(&self) -> bool {
        self.job.is_some() || self.deferred.is_some() || self.awaiting_continuation.is_some()
    }

    /// True after the client's LOGOUT completed (the server's BYE was relayed).
    pub fn logged_out(&self) -> bool {
        matches!(self.state, State::Logout)
    }

    /// True while client input should not be read (held bytes at their bound).
    pub fn client_blocked(&self) -> bool {
        self.held.len() >= MAX_HELD
    }

    /// RFC 3501 §6.2.1: after the handshake nothing sent before it counts.
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.client.clear();
        self.disposition = Disposition::Forward;
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

    // ----- client side -------------------------------------------------------

    pub fn on_client(&mut self, bytes: &[u8]) -> Vec<Output> {
        if self.busy() {
            self.held.extend_from_slice(bytes);
            return self.take();
        }
        self.client.push(bytes);
        self.drain_client();
        self.take()
    }

    fn drain_client(&mut self) {
        while !self.busy() && !matches!(self.out.last(), Some(Output::StartTls | Output::Close)) {
            let frame = match self.client.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(e) => {
                    self.send_client(format!("* BAD {e}\r\n").into_bytes());
                    self.disposition = Disposition::Forward;
                    continue;
                }
            };
            self.on_client_frame(frame);
        }
    }

    fn on_client_frame(&mut self, frame: Frame) {
        if let Frame::Line {
            bytes,
            first: true,
            literal,
        } = &frame
        {
            let in_auth = self.auth.is_some();
            self.message_tag = String::from_utf8_lossy(bytes)
                .split_ascii_whitespace()
                .next()
                .unwrap_or("")
                .to_string();
            self.observe = false;
            self.disposition = self.dispose(bytes, *literal);
            if self.disposition == Disposition::Forward && !in_auth {
                self.track(bytes);
            }
            if let Disposition::Refuse(reply) = &self.disposition {
                // A refused synchronizing literal is never sent by the client.
                if matches!(literal, Some((_, true))) {
                    let reply = reply.clone();
                    self.send_client(reply.into_bytes());
                    self.client.reset_message();
                    self.disposition = Disposition::Forward;
                    return;
                }
            }
        }
        let complete = self.client.message_complete();
        match self.disposition.clone() {
            Disposition::Forward => {
                let sync_literal = matches!(
                    frame,
                    Frame::Line {
                        literal: Some((_, true)),
                        ..
                    }
                );
                let bytes = match frame {
                    Frame::Line { bytes, .. } | Frame::Literal { bytes, .. } => bytes,
                };
                if let Some((_, mech, user)) = &mut self.auth {
                    if user.is_none() {
                        *user = sasl_user(mech, &bytes);
                    }
                }
                self.send_upstream(bytes);
                if sync_literal && self.auth.is_none() {
                    // RFC 3501 §7.5: the client sends the literal only after `+`;
                    // upstream may refuse instead, and then no literal comes.
                    self.awaiting_continuation = Some(self.message_tag.clone());
                }
                if complete && self.observe {
                    self.observe = false;
                    if let Some(msg) = self.client.message().map(|m| m.to_vec()) {
                        self.observe_relayed(&msg);
                    }
                }
            }
            Disposition::Refuse(reply) => {
                if complete {
                    self.send_client(reply.into_bytes());
                    self.disposition = Disposition::Forward;
                }
            }
            Disposition::Hold => {
                if complete {
                    let msg = self.client.message().map(|m| m.to_vec());
                    self.disposition = Disposition::Forward;
                    self.on_held(msg);
                }
            }
        }
    }

    /// Remembers the tag of a command relayed upstream until its completion.
    fn track(&mut self, first_line: &[u8]) {
        let text = String::from_utf8_lossy(first_line);
        let mut words = text.split_ascii_whitespace();
        if let (Some(tag), Some(_cmd)) = (words.next(), words.next()) {
            if tag != "*" && tag != "+" {
                self.in_flight.insert(tag.to_string());
            }
        }
    }

    /// Decides from the first line of a client message how to handle it.
    fn dispose(&mut self, line: &[u8], literal: Option<(u64, bool)>) -> Disposition {
        if self.auth.is_some() {
            // SASL responses of an AUTHENTICATE exchange.
            return Disposition::Forward;
        }
        let text = String::from_utf8_lossy(line);
        let mut words = text.split_ascii_whitespace();
        let tag = words.next().unwrap_or("*").to_string();
        let cmd = words.next().unwrap_or("").to_ascii_uppercase();
        let sub = words.next().unwrap_or("").to_ascii_uppercase();
        match cmd.as_str() {
            "STARTTLS" => Disposition::Hold,
            "LOGIN" | "AUTHENTICATE" if !self.tls && !self.plaintext_ok => Disposition::Refuse(
                format!("{tag} NO [PRIVACYREQUIRED] Use STARTTLS before logging in\r\n"),
            ),
            "COMPRESS" => Disposition::Refuse(format!(
                "{tag} NO [CANNOT] COMPRESS is not available through sealpost\r\n"
            )),
            // With a synchronizing literal the command must go upstream as it comes
            // (upstream answers the `+`); it is parsed once complete.
            "LOGIN" | "SELECT" | "EXAMINE" if matches!(literal, Some((_, true))) => {
                self.observe = true;
                Disposition::Forward
            }
            "LOGIN" | "SELECT" | "EXAMINE" => Disposition::Hold,
            "AUTHENTICATE" => {
                let mech = sub.clone();
                self.auth = Some((tag, mech, None));
                Disposition::Forward
            }
            "CLOSE" | "UNSELECT" => {
                self.pending.insert(tag, Pending::Unselect);
                Disposition::Forward
            }
            "LOGOUT" => {
                self.pending.insert(tag, Pending::Logout);
                Disposition::Forward
            }
            "FETCH" if literal.is_none() => self.fetch_disposition(),
            "UID" if sub == "FETCH" && literal.is_none() => self.fetch_disposition(),
            _ => Disposition::Forward,
        }
    }

    fn fetch_disposition(&self) -> Disposition {
        match &self.state {
            State::Selected {
                identity: Some(_), ..
            } => Disposition::Hold,
            _ => Disposition::Forward,
        }
    }

    /// A held client message is complete: act on it, and forward what remains.
    fn on_held(&mut self, msg: Option<Vec<u8>>) {
        let Some(msg) = msg else {
            self.send_client(b"* BAD Command too long\r\n".to_vec());
            return;
        };
        let parsed = CommandCodec::default().decode(&msg);
        let Ok((_, command)) = parsed else {
            // Let upstream judge what we cannot parse; a SELECT we cannot follow at
            // least leaves no stale mailbox behind (its views would be keyed wrongly).
            let word = String::from_utf8_lossy(&msg)
                .split_ascii_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_ascii_uppercase();
            if word == "SELECT" || word == "EXAMINE" {
                if let State::Selected { identity, .. } = &self.state {
                    self.state = State::Authenticated {
                        identity: identity.clone(),
                    };
                }
            }
            self.relay(msg);
            return;
        };
        let tag = command.tag.as_ref().to_string();
        match command.body {
            CommandBody::StartTLS => {
                if self.tls {
                    self.send_client(format!("{tag} BAD TLS is already active\r\n").into_bytes());
                } else {
                    self.send_client(
                        format!("{tag} OK Begin TLS negotiation now\r\n").into_bytes(),
                    );
                    self.out.push(Output::StartTls);
                }
            }
            CommandBody::Login { username, .. } => {
                let user = String::from_utf8_lossy(username.as_ref()).into_owned();
                self.pending.insert(tag, Pending::Login(user));
                self.relay(msg);
            }
            CommandBody::Select { mailbox, .. } => {
                self.select(tag, mailbox, false);
                self.relay(msg);
            }
            CommandBody::Examine { mailbox, .. } => {
                self.select(tag, mailbox, true);
                self.relay(msg);
            }
            CommandBody::Fetch {
                macro_or_item_names,
                uid,
                modifiers,
                ..
            } => {
                let State::Selected {
                    identity: Some(identity),
                    mailbox,
                    uidvalidity,
                    read_only,
                } = &self.state
                else {
                    self.relay(msg);
                    return;
                };
                if !modifiers.is_empty() {
                    // CONDSTORE/QRESYNC fetches pass through (DESIGN §9).
                    self.relay(msg);
                    return;
                }
                let selected = Selected {
                    identity: identity.clone(),
                    mailbox: mailbox.clone(),
                    uidvalidity: *uidvalidity,
                    read_only: *read_only,
                };
                let items = fetch::expand(macro_or_item_names);
                // Nothing content-dependent, or only messages known to be plain:
                // relay as sent, so the client's pipelining is kept.
                if !fetch::needs_view(&items)
                    || (uid && fetch::known_plain(&self.ctx, &selected, &msg))
                {
                    self.relay(msg);
                    return;
                }
                if !self.in_flight.is_empty() {
                    tracing::debug!(waiting_for = ?self.in_flight, "FETCH deferred until earlier commands complete");
                    self.deferred = Some(msg);
                    return;
                }
                self.jobs_started += 1;
                let prefix = format!("{}{}x", self.tag_prefix, self.jobs_started);
                match FetchJob::new(&tag, uid, &msg, items, selected, &prefix) {
                    Some(mut job) => {
                        let outputs = job.start(&self.ctx);
                        let finished = outputs.iter().any(|o| matches!(o, JobOutput::Client(_)))
                            && !outputs.iter().any(|o| matches!(o, JobOutput::Upstream(_)));
                        self.apply(outputs);
                        if !finished {
                            self.job = Some(job);
                        }
                    }
                    None => self.relay(msg),
                }
            }
            _ => self.relay(msg),
        }
    }

    /// Learns from a relayed LOGIN/SELECT/EXAMINE what `on_held` would have.
    fn observe_relayed(&mut self, msg: &[u8]) {
        let Ok((_, command)) = CommandCodec::default().decode(msg) else {
            return;
        };
        let tag = command.tag.as_ref().to_string();
        match command.body {
            CommandBody::Login { username, .. } => {
                let user = String::from_utf8_lossy(username.as_ref()).into_owned();
                self.pending.insert(tag, Pending::Login(user));
            }
            CommandBody::Select { mailbox, .. } => self.select(tag, mailbox, false),
            CommandBody::Examine { mailbox, .. } => self.select(tag, mailbox, true),
            _ => {}
        }
    }

    /// Processes the client's commands that arrived while a FETCH job ran.
    fn resume_client(&mut self) {
        let held = std::mem::take(&mut self.held);
        self.client.push(&held);
        self.drain_client();
    }

    /// Relays a held client command upstream.
    fn relay(&mut self, msg: Vec<u8>) {
        self.track(&msg);
        self.send_upstream(msg);
    }

    fn select(&mut self, tag: String, mailbox: Mailbox<'_>, read_only: bool) {
        let name = match mailbox {
            Mailbox::Inbox => "INBOX".to_string(),
            Mailbox::Other(o) => String::from_utf8_lossy(o.as_ref()).into_owned(),
        };
        self.uidvalidity = None;
        self.read_only_code = false;
        // RFC 3501 §6.3.1: a SELECT deselects the current mailbox whatever its outcome.
        if let State::Selected { identity, .. } = &self.state {
            self.state = State::Authenticated {
                identity: identity.clone(),
            };
        }
        self.pending.insert(
            tag,
            Pending::Select {
                mailbox: name,
                read_only,
            },
        );
    }

    fn apply(&mut self, outputs: Vec<JobOutput>) {
        for o in outputs {
            match o {
                JobOutput::Client(b) => self.send_client(b),
                JobOutput::Upstream(b) => self.send_upstream(b),
            }
        }
    }

    // ----- upstream side -----------------------------------------------------

    pub fn on_upstream(&mut self, bytes: &[u8]) -> Vec<Output> {
        self.upstream.push(bytes);
        loop {
            let frame = match self.upstream.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "upstream sent an over-long line or literal; closing");
                    self.send_client(
                        b"* BYE The mail server sent a response sealpost cannot relay\r\n".to_vec(),
                    );
                    self.out.push(Output::Close);
                    break;
                }
            };
            let complete = self.upstream.message_complete();
            if complete {
                if let (Some(ac), Some(m)) = (&self.ctx.autocrypt, self.upstream.message()) {
                    learn_autocrypt(ac, m);
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
                if let Some(msg) = self.deferred.take() {
                    self.on_held(Some(msg));
                    if !self.busy() {
                        self.resume_client();
                    }
                }
            }
        }
        self.take()
    }

    fn on_upstream_frame(&mut self, frame: Frame) {
        let (bytes, first) = match frame {
            Frame::Line { bytes, first, .. } => (bytes, first),
            Frame::Literal { bytes, .. } => {
                self.send_client(bytes);
                return;
            }
        };
        if !first {
            self.send_client(bytes);
            return;
        }
        if !self.greeted {
            self.greeted = true;
            if bytes.starts_with(b"* PREAUTH") {
                self.state = State::Authenticated { identity: None };
            }
            let local = self.local();
            self.send_client(caps::filter_line(&bytes, local));
            if bytes.starts_with(b"* BYE") {
                self.out.push(Output::Close);
            }
            return;
        }
        let line = caps::filter_line(&bytes, self.local());
        self.observe_untagged(&line);
        if self.awaiting_continuation.is_some() && line.starts_with(b"+") {
            // Upstream accepts the literal: let the client send it.
            self.awaiting_continuation = None;
            self.send_client(line);
            self.resume_client();
            return;
        }
        if let Some(tag) = self.tagged(&line) {
            if self.awaiting_continuation.as_deref() == Some(tag.as_str()) {
                // Refused before the literal: the client will not send it.
                self.awaiting_continuation = None;
                self.client.reset_message();
                self.disposition = Disposition::Forward;
                self.observe = false;
                self.in_flight.remove(&tag);
                self.pending.remove(&tag);
                self.send_client(line);
                self.resume_client();
                return;
            }
            self.in_flight.remove(&tag);
            if let Some(p) = self.pending.remove(&tag) {
                self.on_completion(&line, &tag, p);
            }
            if let Some((auth_tag, _, user)) = &self.auth {
                if *auth_tag == tag {
                    let user = user.clone();
                    let ok = is_ok(&line, &tag);
                    self.auth = None;
                    if ok {
                        self.logged_in(user.as_deref());
                    }
                }
            }
        }
        self.send_client(line);
    }

    fn tagged(&self, line: &[u8]) -> Option<String> {
        if line.starts_with(b"* ") || line.starts_with(b"+") {
            return None;
        }
        let end = line.iter().position(|&b| b == b' ')?;
        Some(String::from_utf8_lossy(&line[..end]).into_owned())
    }

    fn observe_untagged(&mut self, line: &[u8]) {
        let upper: Vec<u8> = line
            .iter()
            .take(64)
            .map(|b| b.to_ascii_uppercase())
            .collect();
        if upper.starts_with(b"* OK [UIDVALIDITY ") {
            let rest = &line[b"* OK [UIDVALIDITY ".len()..];
            let digits: String = rest
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .map(|&b| b as char)
                .collect();
            self.uidvalidity = digits.parse().ok();
        }
    }

    fn on_completion(&mut self, line: &[u8], tag: &str, pending: Pending) {
        let ok = is_ok(line, tag);
        match pending {
            Pending::Login(user) if ok => self.logged_in(Some(&user)),
            Pending::Select { mailbox, read_only } => {
                let identity = match &self.state {
                    State::Authenticated { identity } | State::Selected { identity, .. } => {
                        identity.clone()
                    }
                    _ => None,
                };
                if ok {
                    let upper = String::from_utf8_lossy(line).to_ascii_uppercase();
                    let read_only = read_only || upper.contains("[READ-ONLY]");
                    match self.uidvalidity {
                        Some(uidvalidity) => {
                            self.state = State::Selected {
                                identity,
                                mailbox,
                                uidvalidity,
                                read_only,
                            };
                        }
                        None => {
                            // Without UIDVALIDITY no view can be cached safely: relay only.
                            tracing::warn!(
                                "SELECT without UIDVALIDITY; encrypted mail is relayed as stored"
                            );
                            self.state = State::Selected {
                                identity: None,
                                mailbox,
                                uidvalidity: 0,
                                read_only,
                            };
                        }
                    }
                } else {
                    self.state = State::Authenticated { identity };
                }
            }
            Pending::Unselect if ok => {
                if let State::Selected { identity, .. } = &self.state {
                    self.state = State::Authenticated {
                        identity: identity.clone(),
                    };
                }
            }
            Pending::Logout => self.state = State::Logout,
            _ => {}
        }
    }

    fn logged_in(&mut self, user: Option<&str>) {
        let identity = user
            .and_then(|u| self.ctx.identity_for_login(u))
            .map(|i| i.address.clone());
        match &identity {
            Some(a) => tracing::info!(identity = %a, "logged in; decrypting for this identity"),
            None => {
                tracing::info!("logged in; no identity configured for this login, relaying only")
            }
        }
        self.state = State::Authenticated { identity };
    }
}

/// Feeds the header of any message in a FETCH response to the Autocrypt state
/// (Autocrypt 1.1 §2.3: update on every received message that carries a header).
fn learn_autocrypt(ac: &crate::keys::autocrypt::AutocryptStore, response: &[u8]) {
    use imap_codec::ResponseCodec;
    use imap_types::fetch::{MessageDataItem, Section};
    use imap_types::response::{Data, Response};
    if !response.starts_with(b"* ")
        || !response
            .windows(10)
            .any(|w| w.eq_ignore_ascii_case(b"autocrypt:"))
    {
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
            let (header, _) = crate::mime::split_message(bytes.as_ref());
            if let crate::keys::autocrypt::Learned::Key { addr } = ac.learn(header, false, now) {
                tracing::info!(address = %addr, "learned a key from an Autocrypt header");
            }
        }
    }
}

fn is_ok(line: &[u8], tag: &str) -> bool {
    let rest = &line[tag.len().min(line.len())..];
    let rest = String::from_utf8_lossy(rest);
    rest.trim_start()
        .get(..2)
        .is_some_and(|s| s.eq_ignore_ascii_case("OK"))
}

/// The login name inside a SASL response (PLAIN, XOAUTH2, OAUTHBEARER), if any.
/// The line may also be the AUTHENTICATE command itself carrying an initial response.
fn sasl_user(mechanism: &str, line: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(line);
    let words: Vec<&str> = text.split_ascii_whitespace().collect();
    // "tag AUTHENTICATE MECH initial" or a bare response line.
    let b64 = if words.len() >= 4 && words[1].eq_ignore_ascii_case("AUTHENTICATE") {
        words[3]
    } else if words.len() == 1 {
        words[0]
    } else {
        return None;
    };
    let data = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let mech = AuthMechanism::try_from(mechanism).ok()?;
    match mech {
        AuthMechanism::Plain => {
            let mut parts = data.split(|&b| b == 0);
            let _authz = parts.next()?;
            let user = parts.next()?;
            String::from_utf8(user.to_vec()).ok()
        }
        AuthMechanism::XOAuth2 => {
            let s = String::from_utf8(data).ok()?;
            s.split('\x01')
                .find_map(|kv| kv.strip_prefix("user="))
                .map(str::to_string)
        }
        AuthMechanism::OAuthBearer => {
            let s = String::from_utf8(data).ok()?;
            let gs2 = s.split('\x01').next()?;
            gs2.split(',')
                .find_map(|kv| kv.strip_prefix("a="))
                .map(str::to_string)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Arc<ImapContext> {
        let dir = tempfile::tempdir().unwrap();
        Arc::new(ImapContext {
            autocrypt: None,
            identities: Vec::new(),
            store: Arc::new(crate::keys::KeyStore::open(dir.path()).unwrap()),
            cache: Arc::new(super::super::cache::ViewCache::new(1 << 20)),
            max_message_size: 1 << 20,
            max_line_length: 8192,
            max_job_view_bytes: 1 << 20,
        })
    }

    fn client_text(outs: &[Output]) -> String {
        outs.iter()
            .filter_map(|o| match o {
                Output::Client(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect()
    }

    fn upstream_text(outs: &[Output]) -> String {
        outs.iter()
            .filter_map(|o| match o {
                Output::Upstream(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn plaintext_login_refused_off_loopback_until_starttls() {
        let mut s = Session::new(ctx(), false, false);
        let out = s.on_upstream(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN STARTTLS IDLE] ready\r\n");
        let greeting = client_text(&out);
        assert!(greeting.contains("STARTTLS LOGINDISABLED]"), "{greeting}");
        assert!(!greeting.contains("AUTH=PLAIN"), "{greeting}");
        // A synchronizing literal is refused before the client sends it.
        let out = s.on_client(b"a1 LOGIN {5}\r\n");
        assert_eq!(
            client_text(&out),
            "a1 NO [PRIVACYREQUIRED] Use STARTTLS before logging in\r\n"
        );
        assert!(upstream_text(&out).is_empty());
        let out = s.on_client(b"a2 AUTHENTICATE PLAIN AGEAYg==\r\n");
        assert!(client_text(&out).starts_with("a2 NO [PRIVACYREQUIRED]"));
        // STARTTLS is answered locally; whatever was pipelined behind it is dropped.
        let out = s.on_client(b"a3 STARTTLS\r\na4 LOGIN x y\r\n");
        assert_eq!(out.last(), Some(&Output::StartTls));
        assert!(client_text(&out).contains("a3 OK"));
        s.tls_started();
        let out = s.on_client(b"");
        assert!(
            upstream_text(&out).is_empty(),
            "injected LOGIN must not be relayed"
        );
        // After TLS, LOGIN goes upstream.
        let out = s.on_client(b"a5 LOGIN alice pw\r\n");
        assert_eq!(upstream_text(&out), "a5 LOGIN alice pw\r\n");
    }

    #[test]
    fn literals_stream_through_and_compress_is_refused() {
        let mut s = Session::new(ctx(), true, true);
        s.on_upstream(b"* OK ready\r\n");
        let out = s.on_client(b"a1 APPEND INBOX {10+}\r\n01234");
        assert_eq!(upstream_text(&out), "a1 APPEND INBOX {10+}\r\n01234");
        let out = s.on_client(b"56789\r\na2 COMPRESS DEFLATE\r\n");
        assert_eq!(upstream_text(&out), "56789\r\n");
        assert!(client_text(&out).starts_with("a2 NO [CANNOT]"));
        // A literal in a server response is never read as a response line.
        let out = s.on_upstream(b"* 1 FETCH (BODY[] {14}\r\na1 OK fake\r\n\r\n)\r\na1 OK done\r\n");
        assert_eq!(
            client_text(&out),
            "* 1 FETCH (BODY[] {14}\r\na1 OK fake\r\n\r\n)\r\na1 OK done\r\n"
        );
    }

    #[test]
    fn a_fetch_job_waits_for_relayed_commands_to_complete() {
        let dir = tempfile::tempdir().unwrap();
        let g = crate::keys::generate("alice@example.com", dir.path()).unwrap();
        let id = crate::keys::load_identity(&crate::config::Identity {
            address: "alice@example.com".into(),
            login: None,
            secret_key: g.secret_key.clone(),
            passphrase_file: Some(g.passphrase_file.clone()),
            passphrase_credential: None,
            passphrase_env: None,
        })
        .unwrap();
        let mut c = ctx();
        Arc::get_mut(&mut c).unwrap().identities = vec![Arc::new(id)];
        let mut s = Session::new(c, true, true);
        s.on_upstream(b"* OK ready\r\n");
        s.on_client(b"a1 LOGIN alice@example.com pw\r\n");
        s.on_upstream(b"a1 OK logged in\r\n");
        s.on_client(b"a2 SELECT INBOX\r\n");
        s.on_upstream(b"* OK [UIDVALIDITY 7] ok\r\na2 OK [READ-WRITE] selected\r\n");
        // A relayed FETCH, then one that needs a job, pipelined.
        let out =
            s.on_client(b"a3 UID FETCH 1:* (FLAGS)\r\na4 UID FETCH 2 (BODY.PEEK[])\r\na5 NOOP\r\n");
        assert_eq!(upstream_text(&out), "a3 UID FETCH 1:* (FLAGS)\r\n");
        // Only when a3 is complete does the job start, and a5 waits for the job.
        let out = s.on_upstream(b"* 1 FETCH (UID 1 FLAGS ())\r\na3 OK done\r\n");
        let up = upstream_text(&out);
        assert!(up.contains("UID FETCH 2:202 (UID BODYSTRUCTURE"), "{up}");
        assert!(!up.contains("NOOP"), "{up}");
        assert_eq!(
            client_text(&out),
            "* 1 FETCH (UID 1 FLAGS ())\r\na3 OK done\r\n"
        );
    }

    #[test]
    fn synchronizing_literals_wait_for_upstream_and_survive_a_refusal() {
        let mut s = Session::new(ctx(), true, true);
        s.on_upstream(b"* OK ready\r\n");
        // LOGIN with a synchronizing literal: relayed, the `+` comes from upstream.
        let out = s.on_client(b"a1 LOGIN {5}\r\n");
        assert_eq!(upstream_text(&out), "a1 LOGIN {5}\r\n");
        let out = s.on_upstream(b"+ OK\r\n");
        assert_eq!(client_text(&out), "+ OK\r\n");
        let out = s.on_client(b"alice pw\r\n");
        assert_eq!(upstream_text(&out), "alice pw\r\n");
        s.on_upstream(b"a1 OK logged in\r\n");
        // An APPEND refused before its literal: what follows is a command again.
        let out = s.on_client(b"a2 APPEND Sent {3000}\r\n");
        assert_eq!(upstream_text(&out), "a2 APPEND Sent {3000}\r\n");
        let out = s.on_client(b"a3 NOOP\r\n");
        assert!(
            upstream_text(&out).is_empty(),
            "held until upstream decides"
        );
        let out = s.on_upstream(b"a2 NO [TRYCREATE] no such mailbox\r\n");
        assert_eq!(client_text(&out), "a2 NO [TRYCREATE] no such mailbox\r\n");
        assert_eq!(upstream_text(&out), "a3 NOOP\r\n");
    }

    #[test]
    fn sasl_logins() {
        let plain = base64::engine::general_purpose::STANDARD.encode(b"\0alice@example.com\0pw");
        assert_eq!(
            sasl_user("PLAIN", format!("{plain}\r\n").as_bytes()).as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(
            sasl_user(
                "PLAIN",
                format!("a1 AUTHENTICATE PLAIN {plain}\r\n").as_bytes()
            )
            .as_deref(),
            Some("alice@example.com")
        );
        let x = base64::engine::general_purpose::STANDARD
            .encode(b"user=bob@example.org\x01auth=Bearer abc\x01\x01");
        assert_eq!(
            sasl_user("XOAUTH2", format!("{x}\r\n").as_bytes()).as_deref(),
            Some("bob@example.org")
        );
        let o = base64::engine::general_purpose::STANDARD
            .encode(b"n,a=carol@example.org,\x01host=x\x01auth=Bearer t\x01\x01");
        assert_eq!(
            sasl_user("OAUTHBEARER", format!("{o}\r\n").as_bytes()).as_deref(),
            Some("carol@example.org")
        );
    }
}
