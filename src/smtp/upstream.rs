//! The SMTP client towards the provider.
//!
//! One upstream connection per client session, opened when the client authenticates
//! (its credentials are checked by the provider, so the provider stays the authority).
//! Every step returns the provider's reply so that its verdict can reach the client
//! unchanged; connection trouble is an [`UpstreamError`], which the caller turns into
//! `451 4.4.1`.

use super::Reply;
use crate::config::UpstreamSecurity;
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// A byte stream: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Connecting or the TLS handshake failed or timed out.
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    #[error("TLS with {target} failed: {message}")]
    Tls { target: String, message: String },
    #[error("{target} did not answer within {0:?}", .timeout)]
    Timeout { target: String, timeout: Duration },
    #[error("connection to {target} lost: {message}")]
    Io { target: String, message: String },
    #[error("{target} sent a malformed reply: {line:?}")]
    Protocol { target: String, line: String },
    #[error("{target} refused: {reply}")]
    Refused { target: String, reply: Reply },
}

/// Where and how to reach the provider's submission server.
#[derive(Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub security: UpstreamSecurity,
    pub tls: Arc<rustls::ClientConfig>,
    pub timeout: Duration,
    /// Our name in EHLO.
    pub ehlo_name: String,
}

impl Target {
    fn label(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn endpoint(&self) -> crate::net::Endpoint {
        crate::net::Endpoint {
            host: self.host.clone(),
            port: self.port,
            timeout: self.timeout,
        }
    }
}

/// Longest reply line accepted from upstream.
const MAX_REPLY_LINE: usize = 4096;
/// Most lines in one reply.
const MAX_REPLY_LINES: usize = 100;

pub struct Upstream {
    stream: BufReader<Box<dyn Io>>,
    target: Target,
    extensions: Vec<String>,
}

impl Upstream {
    /// Connects, secures and greets the provider (TLS or STARTTLS as configured).
    pub async fn connect(target: &Target) -> Result<Upstream, UpstreamError> {
        let label = target.label();
        let endpoint = target.endpoint();
        let tcp = endpoint.tcp().await?;
        let stream: Box<dyn Io> = match target.security {
            UpstreamSecurity::Tls => Box::new(endpoint.tls(&target.tls, tcp).await?),
            _ => Box::new(tcp),
        };
        let mut up = Upstream {
            stream: BufReader::new(stream),
            target: target.clone(),
            extensions: Vec::new(),
        };
        up.expect(220).await?;
        up.ehlo().await?;
        if target.security == UpstreamSecurity::Starttls {
            if !up.has_extension("STARTTLS") {
                return Err(UpstreamError::Tls {
                    target: label,
                    message:
                        "the server does not offer STARTTLS; refusing to continue in plain text"
                            .into(),
                });
            }
            up.send_line("STARTTLS").await?;
            up.expect(220).await?;
            // Nothing may be buffered from before the handshake (RFC 3207 §4.2).
            if !up.stream.buffer().is_empty() {
                return Err(UpstreamError::Protocol {
                    target: label,
                    line: "data sent before the TLS handshake".into(),
                });
            }
            let Upstream { stream, .. } = up;
            let inner = stream.into_inner();
            let tls = endpoint.tls(&target.tls, inner).await?;
            up = Upstream {
                stream: BufReader::new(Box::new(tls)),
                target: target.clone(),
                extensions: Vec::new(),
            };
            up.ehlo().await?;
        }
        Ok(up)
    }

    fn has_extension(&self, name: &str) -> bool {
        self.extensions.iter().any(|e| {
            e.split_whitespace()
                .next()
                .map(|k| k.eq_ignore_ascii_case(name))
                .unwrap_or(false)
        })
    }

    fn auth_mechanisms(&self) -> Vec<String> {
        self.extensions
            .iter()
            .filter_map(|e| {
                let mut it = e.split_whitespace();
                let k = it.next()?;
                k.eq_ignore_ascii_case("AUTH")
                    .then(|| it.map(|m| m.to_ascii_uppercase()).collect::<Vec<_>>())
            })
            .flatten()
            .collect()
    }

    async fn ehlo(&mut self) -> Result<(), UpstreamError> {
        let name = self.target.ehlo_name.clone();
        self.send_line(&format!("EHLO {name}")).await?;
        let reply = self.expect(250).await?;
        self.extensions = reply.lines.into_iter().skip(1).collect();
        Ok(())
    }

    /// Logs in with the client's credentials. `Ok(reply)` is the provider's verdict
    /// (235 on success); `Err` is connection trouble.
    pub async fn authenticate(
        &mut self,
        user: &str,
        password: &SecretString,
    ) -> Result<Reply, UpstreamError> {
        let mechs = self.auth_mechanisms();
        let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        if mechs.iter().any(|m| m == "PLAIN") || !mechs.iter().any(|m| m == "LOGIN") {
            let mut blob = Vec::new();
            blob.push(0);
            blob.extend_from_slice(user.as_bytes());
            blob.push(0);
            blob.extend_from_slice(password.expose_secret().as_bytes());
            let line = SecretString::from(format!("AUTH PLAIN {}", b64(&blob)));
            self.send_line(line.expose_secret()).await?;
            return self.read_reply().await;
        }
        self.send_line("AUTH LOGIN").await?;
        let r = self.read_reply().await?;
        if r.code != 334 {
            return Ok(r);
        }
        self.send_line(&b64(user.as_bytes())).await?;
        let r = self.read_reply().await?;
        if r.code != 334 {
            return Ok(r);
        }
        let line = SecretString::from(b64(password.expose_secret().as_bytes()));
        self.send_line(line.expose_secret()).await?;
        self.read_reply().await
    }

    /// Opens a transaction: MAIL FROM, each RCPT TO, DATA. `Ok(Ok(()))`: the server
    /// waits for the message (354); `Ok(Err(reply))`: its first refusal (the transaction
    /// is reset); `Err`: connection trouble. Nothing is accepted before the message
    /// itself, so a transaction that failed here can be tried again elsewhere.
    ///
    /// With PIPELINING (RFC 2920) MAIL and the RCPTs go in one write and their replies
    /// are read together; DATA waits for them (were it pipelined too, a refused RCPT
    /// could only be followed by an empty message to the others).
    pub async fn begin(
        &mut self,
        from: &str,
        rcpts: &[String],
        params: &[&str],
        size: usize,
    ) -> Result<Result<(), Reply>, UpstreamError> {
        self.transaction(from, rcpts, params, size, true).await
    }

    /// MAIL and the RCPTs, then DATA (`open`, see [`begin`](Self::begin)) or RSET: a
    /// probe of whether the provider takes this sender and these recipients, which
    /// sends and stores nothing (`Ok(Ok(()))`: all accepted).
    pub async fn transaction(
        &mut self,
        from: &str,
        rcpts: &[String],
        params: &[&str],
        size: usize,
        open: bool,
    ) -> Result<Result<(), Reply>, UpstreamError> {
        let mut mail = format!("MAIL FROM:<{from}>");
        for p in params {
            mail.push(' ');
            mail.push_str(p);
        }
        if self.has_extension("SIZE") {
            mail.push_str(&format!(" SIZE={size}"));
        }
        let commands: Vec<String> = std::iter::once(mail)
            .chain(rcpts.iter().map(|r| format!("RCPT TO:<{r}>")))
            .collect();
        let mut refused = None;
        if self.has_extension("PIPELINING") {
            let mut batch = String::new();
            for c in &commands {
                batch.push_str(c);
                batch.push_str("\r\n");
            }
            self.write_all(batch.as_bytes()).await?;
            for _ in &commands {
                let r = self.read_reply().await?;
                if !r.is_positive() && refused.is_none() {
                    refused = Some(r);
                }
            }
        } else {
            for c in &commands {
                self.send_line(c).await?;
                let r = self.read_reply().await?;
                if !r.is_positive() {
                    refused = Some(r);
                    break;
                }
            }
        }
        if let Some(r) = refused {
            self.reset().await;
            return Ok(Err(r));
        }
        if !open {
            self.send_line("RSET").await?;
            let r = self.read_reply().await?;
            return Ok(if r.is_positive() { Ok(()) } else { Err(r) });
        }
        self.send_line("DATA").await?;
        let r = self.read_reply().await?;
        if r.code != 354 {
            self.reset().await;
            return Ok(Err(r));
        }
        Ok(Ok(()))
    }

    /// Sends a piece of the message of a transaction [`begin`](Self::begin) opened,
    /// stuffed by `stuffer` (the message streams, never held twice: see
    /// [`Upstream::end_data`]).
    pub async fn data_piece(
        &mut self,
        stuffer: &mut DotStuffer,
        piece: &[u8],
    ) -> Result<(), UpstreamError> {
        let out = stuffer.push(piece);
        self.write_all(&out).await
    }

    /// Ends a message sent with [`Upstream::data_piece`]; the server's final reply.
    pub async fn end_data(&mut self, stuffer: DotStuffer) -> Result<Reply, UpstreamError> {
        self.write_all(&stuffer.finish()).await?;
        self.read_reply().await
    }

    async fn reset(&mut self) {
        if self.send_line("RSET").await.is_ok() {
            let _ = self.read_reply().await;
        }
    }

    pub async fn quit(mut self) {
        if self.send_line("QUIT").await.is_ok() {
            let _ = self.read_reply().await;
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> Result<(), UpstreamError> {
        let label = self.target.label();
        let timeout = self.target.timeout;
        let s = self.stream.get_mut();
        let fut = async {
            s.write_all(data).await?;
            s.flush().await
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| UpstreamError::Timeout {
                target: label.clone(),
                timeout,
            })?
            .map_err(|e| UpstreamError::Io {
                target: label,
                message: e.to_string(),
            })
    }

    async fn send_line(&mut self, line: &str) -> Result<(), UpstreamError> {
        let mut data = Vec::with_capacity(line.len() + 2);
        data.extend_from_slice(line.as_bytes());
        data.extend_from_slice(b"\r\n");
        self.write_all(&data).await
    }

    async fn expect(&mut self, code: u16) -> Result<Reply, UpstreamError> {
        let r = self.read_reply().await?;
        if r.code != code {
            return Err(UpstreamError::Refused {
                target: self.target.label(),
                reply: r,
            });
        }
        Ok(r)
    }

    /// Reads one (possibly multi-line) reply, RFC 5321 §4.2.1.
    pub async fn read_reply(&mut self) -> Result<Reply, UpstreamError> {
        let label = self.target.label();
        let timeout = self.target.timeout;
        let mut lines = Vec::new();
        let mut code = 0;
        loop {
            let mut line = Vec::new();
            let n = tokio::time::timeout(
                timeout,
                (&mut self.stream)
                    .take(MAX_REPLY_LINE as u64)
                    .read_until(b'\n', &mut line),
            )
            .await
            .map_err(|_| UpstreamError::Timeout {
                target: label.clone(),
                timeout,
            })?
            .map_err(|e| UpstreamError::Io {
                target: label.clone(),
                message: e.to_string(),
            })?;
            if n == 0 {
                return Err(UpstreamError::Io {
                    target: label,
                    message: "connection closed".into(),
                });
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\r', '\n']);
            let bad = || UpstreamError::Protocol {
                target: label.clone(),
                line: text.chars().take(100).collect(),
            };
            if text.len() < 3 || !line.ends_with(b"\n") {
                return Err(bad());
            }
            let c: u16 = text.get(..3).and_then(|t| t.parse().ok()).ok_or_else(bad)?;
            if !(200..600).contains(&c) || (code != 0 && c != code) {
                return Err(bad());
            }
            code = c;
            let sep = text.as_bytes().get(3).copied();
            lines.push(text.get(4..).unwrap_or("").to_string());
            match sep {
                None | Some(b' ') => break,
                Some(b'-') if lines.len() < MAX_REPLY_LINES => continue,
                _ => return Err(bad()),
            }
        }
        Ok(Reply { code, lines })
    }
}

/// Normalises line endings to CRLF and doubles leading dots (RFC 5321 §4.5.2),
/// incrementally; [`DotStuffer::finish`] ends the data with `.CRLF`.
#[derive(Default)]
pub struct DotStuffer {
    /// Inside a line: the last byte pushed ended none (at the start, a line starts).
    mid_line: bool,
    /// The chunk ended in a CR: whether an LF follows is for the next one to say.
    cr_pending: bool,
}

impl DotStuffer {
    /// Every line end becomes CRLF, a bare CR or a bare LF too (RFC 5321 §2.3.8 allows
    /// no other), and a line's leading dot is doubled. A bare CR passed on would end a
    /// line, and with `<CR>.<CR><LF>` the message, at a server that reads it so (SMTP
    /// smuggling): what came after would run there as commands of this session.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.len() + chunk.len() / 32 + 4);
        let mut rest = chunk;
        if self.cr_pending {
            let Some(&first) = rest.first() else {
                return out;
            };
            self.cr_pending = false;
            out.extend_from_slice(b"\r\n");
            if first == b'\n' {
                rest = &rest[1..];
            }
        }
        // A line at a time (or the piece of one this chunk holds): each step starts at
        // a line's start or at the chunk's.
        while let Some(&first) = rest.first() {
            if !self.mid_line && first == b'.' {
                out.push(b'.');
            }
            let Some(i) = memchr::memchr2(b'\r', b'\n', rest) else {
                out.extend_from_slice(rest);
                self.mid_line = true;
                break;
            };
            out.extend_from_slice(&rest[..i]);
            let end = match (rest[i], rest.get(i + 1)) {
                (b'\r', Some(b'\n')) => i + 2,
                (b'\r', None) => {
                    // A line ends here either way: CRLF, or a bare CR made one.
                    self.cr_pending = true;
                    self.mid_line = false;
                    break;
                }
                _ => i + 1,
            };
            out.extend_from_slice(b"\r\n");
            self.mid_line = false;
            rest = &rest[end..];
        }
        out
    }

    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.cr_pending || self.mid_line {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }
}

/// The whole message, stuffed and terminated (see [`DotStuffer`]); the relay streams
/// instead.
#[cfg(test)]
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut s = DotStuffer::default();
    let mut out = s.push(message);
    out.extend(s.finish());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client end whose server end the test scripts, offering `extensions`.
    fn scripted(extensions: &[&str]) -> (Upstream, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let up = Upstream {
            stream: BufReader::new(Box::new(ours)),
            target: Target {
                host: "provider.example".into(),
                port: 587,
                security: UpstreamSecurity::Tls,
                tls: Arc::new(tls),
                timeout: Duration::from_secs(5),
                ehlo_name: "sealpost.test".into(),
            },
            extensions: extensions.iter().map(|e| e.to_string()).collect(),
        };
        (up, theirs)
    }

    /// Reads `n` lines from the server end.
    async fn lines(end: &mut BufReader<tokio::io::DuplexStream>, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..n {
            let mut line = String::new();
            end.read_line(&mut line).await.expect("read");
            out.push(line);
        }
        out
    }

    /// With PIPELINING, MAIL and every RCPT are written before any reply is read (the
    /// server here answers only once it has them all); DATA waits for their replies,
    /// and a refused RCPT resets the transaction without DATA.
    #[tokio::test]
    async fn mail_and_rcpts_are_pipelined_when_offered() {
        let (mut up, theirs) = scripted(&["PIPELINING", "SIZE 1000000"]);
        let mut end = BufReader::new(theirs);
        let rcpts = vec!["a@example.org".to_string(), "b@example.org".to_string()];
        let server = async {
            let got = lines(&mut end, 3).await;
            assert_eq!(
                got,
                [
                    "MAIL FROM:<s@example.com> BODY=8BITMIME SIZE=42\r\n",
                    "RCPT TO:<a@example.org>\r\n",
                    "RCPT TO:<b@example.org>\r\n"
                ]
            );
            end.get_mut()
                .write_all(b"250 ok\r\n250 ok\r\n550 5.1.1 no such user\r\n")
                .await
                .unwrap();
            assert_eq!(lines(&mut end, 1).await, ["RSET\r\n"]);
            end.get_mut().write_all(b"250 reset\r\n").await.unwrap();
            // The next transaction: all accepted, then DATA.
            lines(&mut end, 3).await;
            end.get_mut()
                .write_all(b"250 ok\r\n250 ok\r\n250 ok\r\n")
                .await
                .unwrap();
            assert_eq!(lines(&mut end, 1).await, ["DATA\r\n"]);
            end.get_mut().write_all(b"354 go on\r\n").await.unwrap();
        };
        let client = async {
            let refused = up
                .begin("s@example.com", &rcpts, &["BODY=8BITMIME"], 42)
                .await
                .unwrap();
            assert_eq!(refused.unwrap_err().code, 550);
            let open = up
                .begin("s@example.com", &rcpts, &["BODY=8BITMIME"], 42)
                .await
                .unwrap();
            assert!(open.is_ok());
        };
        tokio::time::timeout(Duration::from_secs(5), async {
            tokio::join!(server, client)
        })
        .await
        .expect("the client waited for a reply before sending the whole batch");
    }

    /// Without PIPELINING each command waits for its reply, and the first refusal ends
    /// the transaction.
    #[tokio::test]
    async fn without_pipelining_each_command_waits_for_its_reply() {
        let (mut up, theirs) = scripted(&[]);
        let mut end = BufReader::new(theirs);
        let rcpts = vec!["a@example.org".to_string(), "b@example.org".to_string()];
        let server = async {
            assert_eq!(lines(&mut end, 1).await, ["MAIL FROM:<s@example.com>\r\n"]);
            end.get_mut().write_all(b"250 ok\r\n").await.unwrap();
            assert_eq!(lines(&mut end, 1).await, ["RCPT TO:<a@example.org>\r\n"]);
            end.get_mut()
                .write_all(b"451 4.3.0 later\r\n")
                .await
                .unwrap();
            assert_eq!(lines(&mut end, 1).await, ["RSET\r\n"]);
            end.get_mut().write_all(b"250 reset\r\n").await.unwrap();
        };
        let client = async {
            let r = up.begin("s@example.com", &rcpts, &[], 42).await.unwrap();
            assert_eq!(r.unwrap_err().code, 451);
        };
        tokio::time::timeout(Duration::from_secs(5), async {
            tokio::join!(server, client)
        })
        .await
        .expect("no deadlock");
    }

    /// The stuffer a byte at a time, with the whole message in view: CRLF, a bare CR
    /// and a bare LF each end a line and become CRLF, and a line's leading dot is
    /// doubled (RFC 5321 §2.3.8, §4.5.2); then the end of the data.
    fn stuffed_bytewise(data: &[u8]) -> Vec<u8> {
        let (mut out, mut line_start, mut i) = (Vec::new(), true, 0);
        while i < data.len() {
            let b = data[i];
            if line_start && b == b'.' {
                out.push(b'.');
            }
            line_start = b == b'\r' || b == b'\n';
            if line_start {
                out.extend_from_slice(b"\r\n");
                if b == b'\r' && data.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            } else {
                out.push(b);
            }
            i += 1;
        }
        if !data.is_empty() && !line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    #[test]
    fn stuffing_is_the_same_in_any_pieces() {
        let samples: [&[u8]; 9] = [
            b".a\n..b\r\n.\r\nc.\n\n.\r\r\n.",
            b"\n\n\n...\n",
            b"\r\n.\r\n",
            b"no line end at all",
            b"",
            b".",
            b"smuggle\r.\r\nMAIL FROM:<x@y>\r\n",
            b"bare\r\r\r.\n.\r",
            b"\r",
        ];
        for data in samples {
            let want = stuffed_bytewise(data);
            for cut in 0..=data.len() {
                for cut2 in cut..=data.len() {
                    let mut s = DotStuffer::default();
                    let mut got = s.push(&data[..cut]);
                    got.extend(s.push(&data[cut..cut2]));
                    got.extend(s.push(&data[cut2..]));
                    got.extend(s.finish());
                    assert_eq!(got, want, "{data:?} cut at {cut} and {cut2}");
                }
            }
        }
    }

    /// No line of the data sent ends otherwise than in CRLF, so `.` alone on a line
    /// ends it only where the message ends, whatever a server takes for a line end.
    #[test]
    fn no_bare_cr_or_lf_reaches_the_server() {
        let data = dot_stuff(b"a\rb\nc\r.\r\nQUIT\r\n\r.\n.\r");
        for (i, &b) in data.iter().enumerate() {
            match b {
                b'\r' => assert_eq!(data.get(i + 1), Some(&b'\n'), "{data:?} at {i}"),
                b'\n' => assert_eq!(data[i - 1], b'\r', "{data:?} at {i}"),
                _ => {}
            }
        }
        assert!(data.ends_with(b"\r\n.\r\n"));
        let ends = data.windows(5).filter(|w| w == b"\r\n.\r\n").count();
        assert_eq!(ends, 1, "{data:?}");
    }

    #[test]
    fn dot_stuffing() {
        assert_eq!(
            dot_stuff(b".a\r\nb\n.\r\nc"),
            b"..a\r\nb\r\n..\r\nc\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b""), b".\r\n");
        // Chunk boundaries do not matter.
        let msg = b".a\r\nb\n.\r\nc\r\n..d";
        for cut in 0..msg.len() {
            let mut s = DotStuffer::default();
            let mut out = s.push(&msg[..cut]);
            out.extend(s.push(&msg[cut..]));
            out.extend(s.finish());
            assert_eq!(out, dot_stuff(msg), "cut at {cut}");
        }
    }
}
