//! A small IMAP client for sealpost's own work at the provider (`sealpost seal`): one
//! command at a time, commands built and encoded with imap-codec (so names, passwords
//! and messages are quoted or sent as literals as the grammar needs), responses framed
//! with the proxy's [`Framer`] and decoded with imap-codec.

use super::framer::{Frame, Framer};
use super::server::{connect_upstream, ImapUpstream};
use crate::smtp::upstream::Io;
use imap_codec::decode::Decoder;
use imap_codec::encode::{Encoder, Fragment};
use imap_codec::{CommandCodec, ResponseCodec};
use imap_types::command::{Command, CommandBody};
use imap_types::core::{Literal, LiteralMode, Tag};
use imap_types::datetime::DateTime;
use imap_types::flag::Flag;
use imap_types::response::{Code, Response, Status, StatusKind};
use imap_types::IntoStatic;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the IMAP server: {0}")]
    Connect(#[source] std::io::Error),
    #[error("connection to the IMAP server failed: {0}")]
    Io(#[source] std::io::Error),
    #[error("the IMAP server did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("the IMAP server closed the connection")]
    Closed,
    #[error("the IMAP server sent a response sealpost cannot read: {0}")]
    Protocol(String),
    #[error("cannot build the command: {0}")]
    Command(String),
}

/// The completion of one command and the untagged responses before it.
pub struct Reply {
    pub kind: StatusKind,
    pub code: Option<Code<'static>>,
    /// The tagged line as sent, for messages to the user (never contains secrets:
    /// servers do not echo passwords).
    pub text: String,
    pub untagged: Vec<Response<'static>>,
}

impl Reply {
    pub fn ok(&self) -> bool {
        self.kind == StatusKind::Ok
    }

    /// Whether an untagged CAPABILITY response among this reply's lists `name`.
    pub fn lists_capability(&self, name: &str) -> bool {
        use imap_types::response::Data;
        self.untagged.iter().any(|r| {
            matches!(r, Response::Data(Data::Capability(list))
                if list.as_ref().iter().any(|c| c.to_string().eq_ignore_ascii_case(name)))
        })
    }
}

pub struct Client {
    io: Box<dyn Io>,
    framer: Framer,
    next_tag: u64,
    timeout: std::time::Duration,
    buf: Vec<u8>,
    /// Most bytes of responses held for one command: a server that answers without
    /// end cannot exhaust memory.
    reply_limit: usize,
}

impl Client {
    /// Connects (TLS, STARTTLS or plain as configured) and reads the greeting.
    pub async fn connect(up: &ImapUpstream, max_message: usize) -> Result<Client, ClientError> {
        let (io, greeting) = connect_upstream(up).await.map_err(ClientError::Connect)?;
        let mut c = Client {
            io,
            framer: Framer::new(1 << 20, max_message + (1 << 20)),
            next_tag: 0,
            timeout: up.timeout,
            buf: vec![0; 64 * 1024],
            reply_limit: max_message.saturating_add(64 << 20),
        };
        if greeting.is_empty() {
            // TLS or plain: the greeting comes from the server.
            let line = c.read_message().await?;
            if !line.starts_with(b"* OK") && !line.starts_with(b"* PREAUTH") {
                return Err(ClientError::Protocol(
                    String::from_utf8_lossy(&line).trim_end().to_string(),
                ));
            }
        }
        Ok(c)
    }

    /// One complete server message (a line with its literals).
    async fn read_message(&mut self) -> Result<Vec<u8>, ClientError> {
        loop {
            while let Some(frame) = self.framer.next_frame() {
                if matches!(frame, Frame::Overlong { .. }) {
                    return Err(ClientError::Protocol("a response line is too long".into()));
                }
                if self.framer.message_complete() {
                    return self
                        .framer
                        .message()
                        .map(<[u8]>::to_vec)
                        .ok_or_else(|| ClientError::Protocol("a response is too large".into()));
                }
            }
            let n = tokio::time::timeout(self.timeout, self.io.read(&mut self.buf))
                .await
                .map_err(|_| ClientError::Timeout(self.timeout))?
                .map_err(ClientError::Io)?;
            if n == 0 {
                return Err(ClientError::Closed);
            }
            self.framer.push(&self.buf[..n]);
        }
    }

    /// Sends `body` and collects responses until its tagged completion. Literals wait
    /// for the server's `+` (RFC 3501 §7.5) unless they are non-synchronizing.
    pub async fn run(&mut self, body: CommandBody<'_>) -> Result<Reply, ClientError> {
        let (tag, command) = self.command(body)?;
        let fragments: Vec<Fragment> = CommandCodec::default().encode(&command).collect();
        self.exchange(&tag, fragments).await
    }

    /// One APPEND of several messages (MULTIAPPEND, RFC 3502), each with its flags and
    /// INTERNALDATE: the server stores all of them or none. The commands imap-codec
    /// encodes for each message alone are joined, so quoting stays imap-codec's. `None`
    /// (nothing sent) when they cannot be joined: a mailbox name that must itself be a
    /// literal.
    pub async fn multi_append(
        &mut self,
        mailbox: &str,
        messages: Vec<(Vec<Flag<'static>>, Option<DateTime>, Literal<'_>)>,
    ) -> Result<Option<Reply>, ClientError> {
        let bad = |e: String| ClientError::Command(format!("APPEND to {mailbox:?}: {e}"));
        let tag = self.new_tag();
        let encode = |flags: Vec<Flag<'static>>, date, message| {
            let body = CommandBody::append(mailbox, flags, date, message)
                .map_err(|e| bad(format!("{e:?}")))?;
            let tag = Tag::try_from(tag.as_str()).map_err(|e| bad(e.to_string()))?;
            Ok::<_, ClientError>(
                CommandCodec::default()
                    .encode(&Command { tag, body })
                    .collect::<Vec<Fragment>>(),
            )
        };
        // "<tag> APPEND <mailbox>": what every message's own command starts with.
        let probe = encode(
            Vec::new(),
            None,
            Literal::try_from(&b"x"[..]).map_err(|e| bad(format!("{e:?}")))?,
        )?;
        let prefix = match probe.first() {
            Some(Fragment::Line { data }) => {
                let at = data
                    .iter()
                    .rposition(|&b| b == b' ')
                    .ok_or_else(|| bad("no literal".into()))?;
                data[..at].to_vec()
            }
            _ => return Err(bad("no command line".into())),
        };
        let mut out: Vec<Fragment> = Vec::new();
        for (i, (flags, date, message)) in messages.into_iter().enumerate() {
            let mut fragments = encode(flags, date, message)?;
            // Each alone is: the line announcing the literal, the literal, the final CRLF.
            if fragments.len() != 3 {
                return Ok(None);
            }
            fragments.pop();
            if i > 0 {
                let Some(Fragment::Line { data }) = fragments.first_mut() else {
                    return Err(bad("no command line".into()));
                };
                let Some(rest) = data.strip_prefix(prefix.as_slice()) else {
                    return Ok(None);
                };
                *data = rest.to_vec();
            }
            out.extend(fragments);
        }
        out.push(Fragment::Line {
            data: b"\r\n".to_vec(),
        });
        self.exchange(&tag, out).await.map(Some)
    }

    /// Counts `msg` into what one command's responses hold (`held` so far).
    fn hold(&self, held: usize, msg: &[u8]) -> Result<usize, ClientError> {
        let held = held.saturating_add(msg.len());
        if held > self.reply_limit {
            return Err(ClientError::Protocol(format!(
                "the server sent more than {} MiB in answer to one command",
                self.reply_limit >> 20
            )));
        }
        Ok(held)
    }

    fn new_tag(&mut self) -> String {
        self.next_tag += 1;
        format!("s{}", self.next_tag)
    }

    fn command<'b>(&mut self, body: CommandBody<'b>) -> Result<(String, Command<'b>), ClientError> {
        let tag_text = self.new_tag();
        let tag =
            Tag::try_from(tag_text.clone()).map_err(|e| ClientError::Command(e.to_string()))?;
        Ok((tag_text, Command { tag, body }))
    }

    /// Writes a command's fragments and collects responses until `tag` completes.
    async fn exchange(
        &mut self,
        tag: &str,
        fragments: Vec<Fragment>,
    ) -> Result<Reply, ClientError> {
        let mut untagged = Vec::new();
        let mut held = 0usize;
        let mut pending = Vec::new();
        for fragment in fragments {
            match fragment {
                Fragment::Line { data } => pending.extend_from_slice(&data),
                Fragment::Literal {
                    data,
                    mode: LiteralMode::NonSync,
                } => pending.extend_from_slice(&data),
                Fragment::Literal { data, .. } => {
                    self.write(&std::mem::take(&mut pending)).await?;
                    // Announced by the line before: wait for the go-ahead.
                    loop {
                        let msg = self.read_message().await?;
                        if msg.starts_with(b"+") {
                            break;
                        }
                        held = self.hold(held, &msg)?;
                        if let Some(done) = take(&msg, tag, &mut untagged) {
                            return Ok(done);
                        }
                    }
                    pending.extend_from_slice(&data);
                }
            }
        }
        self.write(&pending).await?;
        loop {
            let msg = self.read_message().await?;
            if msg.starts_with(b"+") {
                continue;
            }
            held = self.hold(held, &msg)?;
            if let Some(done) = take(&msg, tag, &mut untagged) {
                return Ok(done);
            }
        }
    }

    /// Sends `body` without waiting for its completion (the caller collects it with
    /// [`Client::finish`]): for pipelining commands whose literals are non-synchronizing
    /// (LITERAL+, RFC 7888), so nothing needs the server's `+`. Returns the tag.
    pub async fn send(&mut self, body: CommandBody<'_>) -> Result<String, ClientError> {
        let (tag_text, command) = self.command(body)?;
        let mut out = Vec::new();
        for fragment in CommandCodec::default().encode(&command) {
            match fragment {
                Fragment::Line { data } => out.extend_from_slice(&data),
                Fragment::Literal { data, mode } => {
                    if mode != LiteralMode::NonSync {
                        return Err(ClientError::Command(
                            "a pipelined command needs non-synchronizing literals".into(),
                        ));
                    }
                    out.extend_from_slice(&data);
                }
            }
        }
        self.write(&out).await?;
        Ok(tag_text)
    }

    /// The completion of a command sent with [`Client::send`]; untagged responses that
    /// come before it are its own.
    pub async fn finish(&mut self, tag: &str) -> Result<Reply, ClientError> {
        let mut untagged = Vec::new();
        let mut held = 0usize;
        loop {
            let msg = self.read_message().await?;
            if msg.starts_with(b"+") {
                continue;
            }
            held = self.hold(held, &msg)?;
            if let Some(done) = take(&msg, tag, &mut untagged) {
                return Ok(done);
            }
        }
    }

    /// AUTHENTICATE with a single-step mechanism (PLAIN, XOAUTH2, OAUTHBEARER):
    /// `response` as the initial response with SASL-IR (RFC 4959), else after the
    /// server's first `+`. Any further `+` (a failure's error challenge, as XOAUTH2 and
    /// OAUTHBEARER send) is answered with `*`, which cancels (RFC 3501 §6.2.2), so a
    /// refusal never waits for the timeout. The bytes holding the secret are zeroed.
    pub async fn authenticate(
        &mut self,
        mechanism: &str,
        response: &[u8],
        sasl_ir: bool,
    ) -> Result<Reply, ClientError> {
        use base64::Engine as _;
        if !mechanism
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ClientError::Command(format!("mechanism {mechanism:?}")));
        }
        let tag = self.new_tag();
        let encoded =
            zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(response));
        let line = zeroize::Zeroizing::new(if sasl_ir {
            let ir = if encoded.is_empty() {
                "="
            } else {
                encoded.as_str()
            };
            format!("{tag} AUTHENTICATE {mechanism} {ir}\r\n")
        } else {
            format!("{tag} AUTHENTICATE {mechanism}\r\n")
        });
        self.write(line.as_bytes()).await?;
        let mut answered = sasl_ir;
        let mut untagged = Vec::new();
        loop {
            let msg = self.read_message().await?;
            if msg.starts_with(b"+") {
                if answered {
                    self.write(b"*\r\n").await?;
                } else {
                    let reply = zeroize::Zeroizing::new(format!("{}\r\n", encoded.as_str()));
                    self.write(reply.as_bytes()).await?;
                    answered = true;
                }
                continue;
            }
            if let Some(done) = take(&msg, &tag, &mut untagged) {
                return Ok(done);
            }
        }
    }

    /// A command given as text (no literals, nothing user-supplied that needs quoting).
    pub async fn run_text(&mut self, text: &str) -> Result<Reply, ClientError> {
        let line = format!("x {text}\r\n");
        let (_, command) = CommandCodec::default()
            .decode(line.as_bytes())
            .map_err(|e| ClientError::Command(format!("{text}: {e:?}")))?;
        self.run(command.body.into_static()).await
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), ClientError> {
        self.io.write_all(data).await.map_err(ClientError::Io)?;
        self.io.flush().await.map_err(ClientError::Io)
    }
}

/// Files one server message: the completion of `tag` ends the command; an untagged
/// response joins `untagged` (one imap-codec cannot read is left out: nothing sealpost
/// asks for is in it).
fn take(msg: &[u8], tag: &str, untagged: &mut Vec<Response<'static>>) -> Option<Reply> {
    match ResponseCodec::default().decode(msg) {
        Ok((_, Response::Status(Status::Tagged(t)))) if t.tag.as_ref() == tag => Some(Reply {
            kind: t.body.kind,
            code: t.body.code.map(IntoStatic::into_static),
            text: text_of(msg),
            untagged: std::mem::take(untagged),
        }),
        Ok((_, r)) => {
            untagged.push(r.into_static());
            None
        }
        Err(_) => {
            // A completion imap-codec cannot read still completes the command; it
            // counts as a failure unless it says OK.
            let line = text_of(msg);
            let rest = line.strip_prefix(tag)?.strip_prefix(' ')?;
            let kind = if rest.to_ascii_uppercase().starts_with("OK") {
                StatusKind::Ok
            } else {
                StatusKind::No
            };
            Some(Reply {
                kind,
                code: None,
                text: line,
                untagged: std::mem::take(untagged),
            })
        }
    }
}

fn text_of(msg: &[u8]) -> String {
    let line = msg.split(|&b| b == b'\n').next().unwrap_or_default();
    String::from_utf8_lossy(line).trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};

    fn scripted() -> (Client, BufReader<tokio::io::DuplexStream>) {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let c = Client {
            io: Box::new(ours),
            framer: Framer::new(1 << 16, 1 << 20),
            next_tag: 0,
            timeout: std::time::Duration::from_secs(5),
            buf: vec![0; 4096],
            reply_limit: 1 << 20,
        };
        (c, BufReader::new(theirs))
    }

    /// A server that answers one command without end is cut off at the limit instead
    /// of filling memory.
    #[tokio::test]
    async fn responses_to_one_command_are_bounded() {
        let (mut c, mut end) = scripted();
        let server = async {
            let _ = line(&mut end).await;
            let chunk = "* 1 FETCH (UID 1 FLAGS (\\Seen))\r\n".repeat(1000);
            // Until the client stops reading (it drops the connection).
            while end.get_mut().write_all(chunk.as_bytes()).await.is_ok() {}
        };
        let client = async {
            let r = c.run_text("UID FETCH 1:* (FLAGS)").await;
            drop(c);
            match r {
                Err(ClientError::Protocol(m)) => assert!(m.contains("more than 1 MiB"), "{m}"),
                Err(e) => panic!("{e}"),
                Ok(_) => panic!("an endless answer completed"),
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            tokio::join!(server, client)
        })
        .await
        .expect("cut off, not timed out");
    }

    async fn line(end: &mut BufReader<tokio::io::DuplexStream>) -> String {
        let mut l = String::new();
        end.read_line(&mut l).await.unwrap();
        l
    }

    /// Without SASL-IR the response follows the first `+`; a failure's error
    /// challenge (a second `+`, as XOAUTH2 sends) is cancelled with `*` at once.
    #[tokio::test]
    async fn authenticate_answers_the_first_challenge_and_cancels_the_next() {
        let (mut c, mut end) = scripted();
        let server = async {
            let cmd = line(&mut end).await;
            let tag = cmd.split(' ').next().unwrap().to_string();
            assert_eq!(cmd, format!("{tag} AUTHENTICATE XOAUTH2\r\n"));
            end.get_mut().write_all(b"+ \r\n").await.unwrap();
            assert_eq!(line(&mut end).await, "dXNlcj1h\r\n");
            end.get_mut()
                .write_all(b"+ eyJzdGF0dXMiOiI0MDEifQ==\r\n")
                .await
                .unwrap();
            assert_eq!(line(&mut end).await, "*\r\n");
            end.get_mut()
                .write_all(format!("{tag} NO [AUTHENTICATIONFAILED] no\r\n").as_bytes())
                .await
                .unwrap();
        };
        let client = async {
            let r = c.authenticate("XOAUTH2", b"user=a", false).await.unwrap();
            assert!(!r.ok());
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            tokio::join!(server, client)
        })
        .await
        .expect("no wait for a timeout");
        // With SASL-IR the response is on the command line.
        let (mut c, mut end) = scripted();
        let server = async {
            let cmd = line(&mut end).await;
            let tag = cmd.split(' ').next().unwrap().to_string();
            assert_eq!(cmd, format!("{tag} AUTHENTICATE PLAIN AGEAYg==\r\n"));
            end.get_mut()
                .write_all(format!("{tag} OK logged in\r\n").as_bytes())
                .await
                .unwrap();
        };
        let client = async {
            assert!(c.authenticate("PLAIN", b"\0a\0b", true).await.unwrap().ok());
            // A mechanism name that could carry more than a name is refused.
            assert!(c.authenticate("PLAIN\r\nx", b"", true).await.is_err());
        };
        tokio::join!(server, client);
    }
}
