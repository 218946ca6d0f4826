//! The client-facing SMTP submission session, without I/O.
//!
//! The driver feeds received bytes with [`Session::feed`] and asks [`Session::poll`]
//! what to do next. Replies accumulate in an output buffer ([`Session::take_output`]);
//! anything that needs the outside world (TLS handshake, upstream authentication,
//! relaying a message) is returned as an [`Action`] whose result the driver hands back.
//! That keeps every protocol rule testable without sockets, including input split at
//! arbitrary byte boundaries and pipelined commands (RFC 2920).

use super::Reply;
use base64::Engine;
use secrecy::SecretString;
use smtp_proto::request::receiver::DataReceiver;
use smtp_proto::{Error as ParseError, Request};

/// Fixed settings of one listener.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub hostname: String,
    pub max_message_size: usize,
    pub max_line_length: usize,
    pub max_recipients: usize,
    /// STARTTLS can be offered (a certificate is loaded and the link is not TLS yet).
    pub starttls_available: bool,
    /// AUTH without TLS is acceptable (loopback listener).
    pub plaintext_auth_ok: bool,
}

/// The envelope of a message (RFC 5321 §2.3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub from: String,
    pub rcpts: Vec<String>,
    /// BODY=8BITMIME was given (RFC 6152).
    pub body_8bit: bool,
    /// SMTPUTF8 was given (RFC 6531).
    pub smtputf8: bool,
    /// Who authenticated the session (RFC 4954); chooses the signing identity.
    pub login: Option<String>,
}

/// What the driver must do next.
#[derive(Debug)]
pub enum Action {
    /// Flush the output and read more input.
    NeedInput,
    /// Flush the output, run the server side of a TLS handshake, then call
    /// [`Session::tls_started`].
    StartTls,
    /// Log in upstream with these credentials and call [`Session::auth_result`].
    Authenticate {
        user: String,
        password: SecretString,
    },
    /// Relay the message and call [`Session::delivered`] with the verdict.
    Deliver {
        envelope: Envelope,
        message: Vec<u8>,
    },
    /// Flush the output and close the connection.
    Close,
}

enum Mode {
    Command,
    /// Skipping the rest of an over-long line.
    DiscardLine,
    AuthPlain,
    AuthLoginUser,
    AuthLoginPassword {
        user: String,
    },
    Data {
        rx: DataReceiver,
        message: Vec<u8>,
        oversize: bool,
    },
    /// An action is out; no input is processed until its result arrives.
    Waiting,
    Closed,
}

/// After this many rejected commands the client is disconnected (a misbehaving or
/// hostile client should not keep a connection slot forever).
const MAX_ERRORS: u32 = 20;

pub struct Session {
    cfg: SessionConfig,
    mode: Mode,
    tls: bool,
    greeted: bool,
    user: Option<String>,
    from: Option<(String, bool, bool)>,
    /// The message size MAIL FROM declared (RFC 1870), within the limit: DATA is read
    /// into a buffer of that size, never copied to grow.
    declared_size: usize,
    rcpts: Vec<String>,
    input: Vec<u8>,
    output: Vec<u8>,
    errors: u32,
}

impl Session {
    /// A new session; `tls` is true on an implicit-TLS listener.
    pub fn new(cfg: SessionConfig, tls: bool) -> Session {
        let mut s = Session {
            cfg,
            mode: Mode::Command,
            tls,
            greeted: false,
            user: None,
            from: None,
            declared_size: 0,
            rcpts: Vec::new(),
            input: Vec::new(),
            output: Vec::new(),
            errors: 0,
        };
        let greeting = Reply::new(220, format!("{} ESMTP sealpost ready", s.cfg.hostname));
        s.reply(greeting);
        s
    }

    /// The authenticated user, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Adds received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if !matches!(self.mode, Mode::Closed) {
            self.input.extend_from_slice(bytes);
        }
    }

    /// Replies produced so far, to be written to the client.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// True when nothing is buffered and no transaction is open, so closing now
    /// loses nothing (used for graceful shutdown).
    pub fn is_idle(&self) -> bool {
        self.input.is_empty() && self.from.is_none() && matches!(self.mode, Mode::Command)
    }

    fn reply(&mut self, r: Reply) {
        self.output.extend_from_slice(&r.to_wire());
    }

    fn error(&mut self, r: Reply) {
        self.reply(r);
        self.errors += 1;
        if self.errors >= MAX_ERRORS {
            self.reply(Reply::new(421, "4.7.0 Too many errors, closing connection"));
            self.mode = Mode::Closed;
        }
    }

    fn reset_transaction(&mut self) {
        self.from = None;
        self.declared_size = 0;
        self.rcpts.clear();
    }

    /// The TLS handshake succeeded. RFC 3207 §4.2: forget everything learned before,
    /// including any input the client sent ahead of the handshake.
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.greeted = false;
        self.user = None;
        self.reset_transaction();
        self.input.clear();
        self.mode = Mode::Command;
    }

    /// The upstream verdict on an AUTH.
    pub fn auth_result(&mut self, result: Result<String, Reply>) {
        match result {
            Ok(user) => {
                self.user = Some(user);
                self.reply(Reply::new(235, "2.7.0 Authentication successful"));
            }
            Err(r) => self.error(r),
        }
        self.mode = Mode::Command;
    }

    /// The outcome of relaying a message; the transaction ends either way.
    pub fn delivered(&mut self, verdict: Reply) {
        self.reply(verdict);
        self.reset_transaction();
        self.mode = Mode::Command;
    }

    /// Processes buffered input until an action is needed.
    pub fn poll(&mut self) -> Action {
        loop {
            match &mut self.mode {
                Mode::Closed => return Action::Close,
                Mode::Waiting => return Action::NeedInput,
                Mode::Data { .. } => {
                    if let Some(action) = self.data_step() {
                        return action;
                    }
                    if matches!(self.mode, Mode::Data { .. }) {
                        return Action::NeedInput;
                    }
                }
                Mode::DiscardLine => match self.input.iter().position(|&b| b == b'\n') {
                    Some(p) => {
                        self.input.drain(..=p);
                        self.mode = Mode::Command;
                    }
                    None => {
                        self.input.clear();
                        return Action::NeedInput;
                    }
                },
                _ => {
                    let Some(line) = self.next_line() else {
                        return Action::NeedInput;
                    };
                    if let Some(action) = self.on_line(line) {
                        return action;
                    }
                }
            }
        }
    }

    /// Takes one complete line from the input, enforcing the line length limit.
    fn next_line(&mut self) -> Option<Vec<u8>> {
        match self.input.iter().position(|&b| b == b'\n') {
            Some(p) if p < self.cfg.max_line_length => Some(self.input.drain(..=p).collect()),
            Some(p) => {
                self.input.drain(..=p);
                self.line_too_long();
                self.next_line()
            }
            None if self.input.len() >= self.cfg.max_line_length => {
                self.input.clear();
                self.line_too_long();
                self.mode = Mode::DiscardLine;
                None
            }
            None => None,
        }
    }

    fn line_too_long(&mut self) {
        if !matches!(self.mode, Mode::Command | Mode::DiscardLine) {
            self.mode = Mode::Command;
        }
        self.error(Reply::new(500, "5.5.2 Line too long"));
    }

    fn on_line(&mut self, line: Vec<u8>) -> Option<Action> {
        match std::mem::replace(&mut self.mode, Mode::Command) {
            Mode::AuthPlain => self.auth_plain(trim_crlf(&line)),
            Mode::AuthLoginUser => {
                let line = trim_crlf(&line);
                if line == b"*" {
                    self.error(Reply::new(501, "5.0.0 Authentication cancelled"));
                    return None;
                }
                match decode_b64_text(line) {
                    Some(user) => {
                        self.reply(Reply::new(334, "UGFzc3dvcmQ6"));
                        self.mode = Mode::AuthLoginPassword { user };
                        None
                    }
                    None => {
                        self.error(Reply::new(501, "5.5.2 Invalid base64 data"));
                        None
                    }
                }
            }
            Mode::AuthLoginPassword { user } => {
                let line = trim_crlf(&line);
                if line == b"*" {
                    self.error(Reply::new(501, "5.0.0 Authentication cancelled"));
                    return None;
                }
                match decode_b64_text(line) {
                    Some(password) => self.authenticate(user, password),
                    None => {
                        self.error(Reply::new(501, "5.5.2 Invalid base64 data"));
                        None
                    }
                }
            }
            _ => self.command(&line),
        }
    }

    fn command(&mut self, line: &[u8]) -> Option<Action> {
        let request = match Request::parse(&mut line.iter()) {
            Ok(r) => r.into_owned(),
            Err(e) => {
                let r = parse_error_reply(&e);
                self.error(r);
                return None;
            }
        };
        match request {
            Request::Ehlo { host: _ } => {
                self.reset_transaction();
                self.greeted = true;
                let mut lines = vec![
                    format!("{} greets you", self.cfg.hostname),
                    "PIPELINING".to_string(),
                    format!("SIZE {}", self.cfg.max_message_size),
                    "8BITMIME".to_string(),
                    "SMTPUTF8".to_string(),
                    "ENHANCEDSTATUSCODES".to_string(),
                ];
                if !self.tls && self.cfg.starttls_available {
                    lines.push("STARTTLS".to_string());
                }
                if self.auth_allowed() && self.user.is_none() {
                    lines.push("AUTH PLAIN LOGIN".to_string());
                }
                self.reply(Reply { code: 250, lines });
            }
            Request::Helo { host: _ } | Request::Lhlo { host: _ } => {
                self.reset_transaction();
                self.greeted = true;
                let r = Reply::new(250, self.cfg.hostname.clone());
                self.reply(r);
            }
            Request::StartTls => {
                if self.tls {
                    self.error(Reply::new(503, "5.5.1 TLS is already active"));
                } else if !self.cfg.starttls_available {
                    self.error(Reply::new(502, "5.5.1 STARTTLS not available"));
                } else {
                    self.reply(Reply::new(220, "2.0.0 Ready to start TLS"));
                    self.mode = Mode::Waiting;
                    return Some(Action::StartTls);
                }
            }
            Request::Auth {
                mechanism,
                initial_response,
            } => return self.auth(mechanism, initial_response),
            Request::Mail { from } => self.mail(from),
            Request::Rcpt { to } => {
                if self.from.is_none() {
                    self.error(Reply::new(503, "5.5.1 Need MAIL before RCPT"));
                } else if self.rcpts.len() >= self.cfg.max_recipients {
                    self.reply(Reply::new(452, "4.5.3 Too many recipients"));
                } else if to.address.is_empty() {
                    self.error(Reply::new(501, "5.1.3 Bad recipient address syntax"));
                } else {
                    self.rcpts.push(to.address);
                    self.reply(Reply::new(250, "2.1.5 Recipient OK"));
                }
            }
            Request::Data => {
                if self.from.is_none() {
                    self.error(Reply::new(503, "5.5.1 Need MAIL before DATA"));
                } else if self.rcpts.is_empty() {
                    // RFC 2920 §3.1: DATA after only failed RCPTs.
                    self.error(Reply::new(554, "5.5.1 No valid recipients"));
                } else {
                    self.reply(Reply::new(354, "Start mail input; end with <CRLF>.<CRLF>"));
                    self.mode = Mode::Data {
                        rx: DataReceiver::new(),
                        // (Capacity only: no memory is touched before data comes.)
                        message: Vec::with_capacity(self.declared_size),
                        oversize: false,
                    };
                }
            }
            Request::Bdat { .. } => {
                self.error(Reply::new(502, "5.5.1 BDAT is not supported, use DATA"))
            }
            Request::Rset => {
                self.reset_transaction();
                self.reply(Reply::new(250, "2.0.0 OK"));
            }
            Request::Noop { .. } => self.reply(Reply::new(250, "2.0.0 OK")),
            Request::Quit => {
                self.reply(Reply::new(221, "2.0.0 Bye"));
                self.mode = Mode::Closed;
                return Some(Action::Close);
            }
            Request::Vrfy { .. } | Request::Expn { .. } => self.reply(Reply::new(
                252,
                "2.5.0 Cannot verify the user, but will accept the message",
            )),
            Request::Help { .. } => self.reply(Reply::new(214, "2.0.0 sealpost: see RFC 5321")),
            Request::Etrn { .. } | Request::Atrn { .. } | Request::Burl { .. } => {
                self.error(Reply::new(502, "5.5.1 Command not implemented"))
            }
        }
        None
    }

    fn auth_allowed(&self) -> bool {
        self.tls || self.cfg.plaintext_auth_ok
    }

    fn auth(&mut self, mechanism: u64, initial: String) -> Option<Action> {
        if !self.greeted {
            self.error(Reply::new(503, "5.5.1 Send EHLO first"));
        } else if self.user.is_some() {
            self.error(Reply::new(503, "5.5.1 Already authenticated"));
        } else if self.from.is_some() {
            self.error(Reply::new(
                503,
                "5.5.1 AUTH not allowed during a mail transaction",
            ));
        } else if !self.auth_allowed() {
            // RFC 4954 §4 / RFC 5248: encryption required first.
            self.error(Reply::new(
                538,
                "5.7.11 Encryption required: use STARTTLS before AUTH",
            ));
        } else if mechanism == smtp_proto::AUTH_PLAIN {
            if initial.is_empty() {
                self.reply(Reply::new(334, ""));
                self.mode = Mode::AuthPlain;
            } else {
                return self.auth_plain(initial.as_bytes());
            }
        } else if mechanism == smtp_proto::AUTH_LOGIN {
            if initial.is_empty() {
                self.reply(Reply::new(334, "VXNlcm5hbWU6"));
                self.mode = Mode::AuthLoginUser;
            } else {
                match decode_b64_text(initial.as_bytes()) {
                    Some(user) => {
                        self.reply(Reply::new(334, "UGFzc3dvcmQ6"));
                        self.mode = Mode::AuthLoginPassword { user };
                    }
                    None => self.error(Reply::new(501, "5.5.2 Invalid base64 data")),
                }
            }
        } else {
            self.error(Reply::new(
                504,
                "5.5.4 Unrecognized authentication type; use PLAIN or LOGIN",
            ));
        }
        None
    }

    /// RFC 4616: `[authzid] NUL authcid NUL passwd`, base64.
    fn auth_plain(&mut self, response: &[u8]) -> Option<Action> {
        if response == b"*" {
            self.error(Reply::new(501, "5.0.0 Authentication cancelled"));
            return None;
        }
        let decoded = if response == b"=" {
            Some(Vec::new())
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(response)
                .ok()
        };
        let parts = decoded.and_then(|d| {
            let mut it = d.split(|&b| b == 0);
            let (_authz, user, pass) = (it.next()?, it.next()?, it.next()?);
            if it.next().is_some() {
                return None;
            }
            Some((
                String::from_utf8(user.to_vec()).ok()?,
                String::from_utf8(pass.to_vec()).ok()?,
            ))
        });
        match parts {
            Some((user, pass)) if !user.is_empty() => self.authenticate(user, pass),
            _ => {
                self.error(Reply::new(501, "5.5.2 Malformed AUTH PLAIN response"));
                None
            }
        }
    }

    fn authenticate(&mut self, user: String, password: String) -> Option<Action> {
        self.mode = Mode::Waiting;
        Some(Action::Authenticate {
            user,
            password: SecretString::from(password),
        })
    }

    fn mail(&mut self, from: smtp_proto::MailFrom<String>) {
        if !self.greeted {
            self.error(Reply::new(503, "5.5.1 Send EHLO first"));
        } else if self.user.is_none() {
            self.error(Reply::new(530, "5.7.0 Authentication required"));
        } else if self.from.is_some() {
            self.error(Reply::new(503, "5.5.1 Nested MAIL command"));
        } else if from.size > self.cfg.max_message_size {
            self.reply(Reply::new(
                552,
                format!(
                    "5.3.4 Message size exceeds the limit of {} bytes",
                    self.cfg.max_message_size
                ),
            ));
        } else {
            let body_8bit = from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0;
            let smtputf8 = from.flags & smtp_proto::MAIL_SMTPUTF8 != 0;
            self.from = Some((from.address, body_8bit, smtputf8));
            self.declared_size = from.size.min(self.cfg.max_message_size);
            self.reply(Reply::new(250, "2.1.0 Sender OK"));
        }
    }

    /// Feeds input to the DATA receiver; returns an action when the message is complete.
    fn data_step(&mut self) -> Option<Action> {
        let max = self.cfg.max_message_size;
        let Mode::Data {
            rx,
            message,
            oversize,
        } = &mut self.mode
        else {
            return None;
        };
        let input = std::mem::take(&mut self.input);
        let mut iter = input.iter();
        let done = rx.ingest(&mut iter, message);
        if message.len() > max {
            *oversize = true;
            // Keep consuming up to the final dot, but hold nothing more.
            message.clear();
        }
        self.input = iter.as_slice().to_vec();
        if !done {
            return None;
        }
        let Mode::Data {
            message, oversize, ..
        } = std::mem::replace(&mut self.mode, Mode::Command)
        else {
            unreachable!("checked above")
        };
        if oversize {
            self.reset_transaction();
            self.reply(Reply::new(
                552,
                format!("5.3.4 Message size exceeds the limit of {max} bytes"),
            ));
            return None;
        }
        let (from, body_8bit, smtputf8) = self.from.clone().unwrap_or_default();
        self.mode = Mode::Waiting;
        Some(Action::Deliver {
            envelope: Envelope {
                from,
                rcpts: self.rcpts.clone(),
                body_8bit,
                smtputf8,
                login: self.user.clone(),
            },
            message,
        })
    }
}

fn trim_crlf(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn decode_b64_text(data: &[u8]) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim_ascii())
        .ok()?;
    String::from_utf8(bytes).ok()
}

fn parse_error_reply(e: &ParseError) -> Reply {
    match e {
        ParseError::UnknownCommand => Reply::new(500, "5.5.1 Unrecognized command"),
        ParseError::InvalidSenderAddress => Reply::new(501, "5.1.7 Bad sender address syntax"),
        ParseError::InvalidRecipientAddress => {
            Reply::new(501, "5.1.3 Bad recipient address syntax")
        }
        ParseError::SyntaxError { syntax } => Reply::new(501, format!("5.5.4 Syntax: {syntax}")),
        ParseError::InvalidParameter { param } => {
            Reply::new(501, format!("5.5.4 Invalid parameter {param}"))
        }
        ParseError::UnsupportedParameter { param } => {
            Reply::new(555, format!("5.5.4 Unsupported parameter {param}"))
        }
        ParseError::ResponseTooLong => Reply::new(500, "5.5.2 Line too long"),
        ParseError::NeedsMoreData { .. } | ParseError::InvalidResponse { .. } => {
            Reply::new(500, "5.5.2 Syntax error")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn cfg() -> SessionConfig {
        SessionConfig {
            hostname: "sealpost.test".into(),
            max_message_size: 1000,
            max_line_length: 1000,
            max_recipients: 3,
            starttls_available: true,
            plaintext_auth_ok: true,
        }
    }

    /// Feeds `input` one byte at a time and runs the session like a driver would,
    /// answering AUTH with success and DATA with 250.
    fn run(cfg: SessionConfig, input: &[u8], chunk: usize) -> (String, Vec<Action>) {
        let mut s = Session::new(cfg, false);
        let mut actions = Vec::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            s.feed(piece);
            loop {
                match s.poll() {
                    Action::NeedInput => break,
                    Action::Authenticate { user, password } => {
                        let ok = password.expose_secret() == "pw";
                        s.auth_result(if ok {
                            Ok(user.clone())
                        } else {
                            Err(Reply::new(535, "5.7.8 bad credentials"))
                        });
                        actions.push(Action::Authenticate { user, password });
                    }
                    Action::Deliver { envelope, message } => {
                        s.delivered(Reply::new(250, "2.0.0 relayed"));
                        actions.push(Action::Deliver { envelope, message });
                    }
                    Action::StartTls => {
                        s.tls_started();
                        actions.push(Action::StartTls);
                    }
                    Action::Close => {
                        out.extend(s.take_output());
                        return (String::from_utf8(out).unwrap(), actions);
                    }
                }
            }
            out.extend(s.take_output());
        }
        (String::from_utf8(out).unwrap(), actions)
    }

    const PLAIN_OK: &str = "AHVzZXIAcHc="; // \0user\0pw

    fn transaction() -> String {
        format!(
            "EHLO c\r\nAUTH PLAIN {PLAIN_OK}\r\nMAIL FROM:<a@x.org> BODY=8BITMIME\r\nRCPT TO:<b@y.org>\r\nRCPT TO:<c@z.org>\r\nDATA\r\nSubject: t\r\n\r\n..dot\r\nline\r\n.\r\nQUIT\r\n"
        )
    }

    #[test]
    fn full_transaction_at_every_split() {
        let input = transaction();
        let (reference, _) = run(cfg(), input.as_bytes(), input.len());
        for chunk in 1..input.len() {
            let (out, actions) = run(cfg(), input.as_bytes(), chunk);
            assert_eq!(out, reference, "chunk size {chunk}");
            let delivered: Vec<_> = actions
                .iter()
                .filter_map(|a| match a {
                    Action::Deliver { envelope, message } => Some((envelope, message)),
                    _ => None,
                })
                .collect();
            assert_eq!(delivered.len(), 1);
            let (env, msg) = delivered[0];
            assert_eq!(env.from, "a@x.org");
            assert_eq!(env.rcpts, vec!["b@y.org", "c@z.org"]);
            assert!(env.body_8bit);
            assert_eq!(msg.as_slice(), b"Subject: t\r\n\r\n.dot\r\nline\r\n");
        }
        assert!(reference.starts_with("220 sealpost.test ESMTP"));
        assert!(
            reference.contains("250-AUTH PLAIN LOGIN\r\n")
                || reference.contains("250 AUTH PLAIN LOGIN\r\n")
        );
        assert!(reference.contains("235 2.7.0"));
        assert!(reference.contains("354 "));
        assert!(reference.contains("250 2.0.0 relayed"));
        assert!(reference.ends_with("221 2.0.0 Bye\r\n"));
    }

    #[test]
    fn no_mail_without_auth() {
        let (out, actions) = run(
            cfg(),
            b"EHLO c\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\nDATA\r\n",
            100,
        );
        assert!(out.contains("530 5.7.0"), "{out}");
        assert!(out.contains("503 5.5.1 Need MAIL"), "{out}");
        assert!(actions.is_empty());
    }

    #[test]
    fn wrong_password_gets_upstream_reply() {
        let (out, _) = run(
            cfg(),
            b"EHLO c\r\nAUTH PLAIN AHVzZXIAeHg=\r\nMAIL FROM:<a@x.org>\r\n",
            100,
        );
        assert!(out.contains("535 5.7.8 bad credentials"), "{out}");
        assert!(out.contains("530 5.7.0"), "{out}");
    }

    #[test]
    fn auth_login_dialogue() {
        let input = "EHLO c\r\nAUTH LOGIN\r\ndXNlcg==\r\ncHc=\r\n";
        let (out, actions) = run(cfg(), input.as_bytes(), 3);
        assert!(
            out.contains("334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 "),
            "{out}"
        );
        assert!(matches!(&actions[0], Action::Authenticate { user, .. } if user == "user"));
    }

    #[test]
    fn plaintext_auth_refused_off_loopback_until_tls() {
        let mut c = cfg();
        c.plaintext_auth_ok = false;
        let (out, actions) = run(
            c.clone(),
            format!("EHLO c\r\nAUTH PLAIN {PLAIN_OK}\r\n").as_bytes(),
            100,
        );
        assert!(!out.contains("AUTH PLAIN LOGIN"), "{out}");
        assert!(out.contains("538 5.7.11"), "{out}");
        assert!(actions.is_empty());
        // After STARTTLS it is offered and works.
        let mut s = Session::new(c, false);
        s.feed(b"EHLO c\r\nSTARTTLS\r\n");
        assert!(matches!(s.poll(), Action::StartTls));
        s.tls_started();
        s.feed(format!("EHLO c\r\nAUTH PLAIN {PLAIN_OK}\r\n").as_bytes());
        assert!(matches!(s.poll(), Action::Authenticate { .. }));
        let out = String::from_utf8(s.take_output()).unwrap();
        assert!(out.contains("220 2.0.0 Ready to start TLS"), "{out}");
        assert!(out.contains("AUTH PLAIN LOGIN"), "{out}");
    }

    #[test]
    fn input_sent_before_tls_handshake_is_discarded() {
        let mut s = Session::new(cfg(), false);
        s.feed(b"EHLO c\r\nSTARTTLS\r\nRSET\r\n");
        assert!(matches!(s.poll(), Action::StartTls));
        s.tls_started();
        // The injected RSET must not be answered.
        assert!(matches!(s.poll(), Action::NeedInput));
        let out = String::from_utf8(s.take_output()).unwrap();
        assert!(!out.contains("250 2.0.0 OK"), "{out}");
    }

    #[test]
    fn limits_are_enforced() {
        let long = format!("EHLO c\r\nNOOP {}\r\nNOOP\r\n", "x".repeat(2000));
        let (out, _) = run(cfg(), long.as_bytes(), 7);
        assert!(out.contains("500 5.5.2 Line too long"), "{out}");
        assert!(out.ends_with("250 2.0.0 OK\r\n"), "{out}");

        let big = format!(
            "EHLO c\r\nAUTH PLAIN {PLAIN_OK}\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\nDATA\r\n{}\r\n.\r\nNOOP\r\n",
            "y\r\n".repeat(600)
        );
        let (out, actions) = run(cfg(), big.as_bytes(), 50);
        assert!(out.contains("552 5.3.4"), "{out}");
        assert!(out.ends_with("250 2.0.0 OK\r\n"), "{out}");
        assert!(!actions.iter().any(|a| matches!(a, Action::Deliver { .. })));

        let many = format!(
            "EHLO c\r\nAUTH PLAIN {PLAIN_OK}\r\nMAIL FROM:<a@x.org> SIZE=5000\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<1@y>\r\nRCPT TO:<2@y>\r\nRCPT TO:<3@y>\r\nRCPT TO:<4@y>\r\n"
        );
        let (out, _) = run(cfg(), many.as_bytes(), 1000);
        assert!(out.contains("552 5.3.4"), "{out}");
        assert!(out.contains("452 4.5.3"), "{out}");
    }

    #[test]
    fn garbage_never_panics_and_ends_with_close() {
        let mut junk = Vec::new();
        for i in 0..5000u32 {
            junk.push((i.wrapping_mul(2654435761) >> 13) as u8);
        }
        let (out, _) = run(cfg(), &junk, 13);
        assert!(out.starts_with("220 "));
    }
}
