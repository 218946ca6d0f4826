//! The SMTP listener: accepts clients and drives one [`Session`] per connection.
//!
//! This is the only part of the SMTP module that touches sockets. Plain (STARTTLS)
//! and implicit-TLS connections run the same loop over a boxed stream.

use super::pipeline::Outbound;
use super::session::{Action, Envelope, Session, SessionConfig};
use super::upstream::{Io, Target, Upstream, UpstreamError};
use super::Reply;
use crate::listener::{Peer, Start, StartCheck};
use secrecy::SecretString;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Everything a listener shares between its connections.
pub struct SmtpService {
    pub account: String,
    pub session: SessionConfig,
    pub target: Target,
    pub outbound: Arc<Outbound>,
    pub discovery: Arc<crate::keys::discover::Discovery>,
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub idle_timeout: Duration,
    pub admission: crate::listener::Admission,
}

/// Serves `listener` until `shutdown` turns true, then waits for the sessions to end
/// (each finishes its transaction in flight and closes when idle).
pub async fn serve(
    listener: TcpListener,
    implicit_tls: bool,
    service: watch::Receiver<Arc<SmtpService>>,
    shutdown: watch::Receiver<bool>,
) {
    // Each connection takes the service current when it is admitted (SIGHUP swaps it).
    let (account, admission) = {
        let s = service.borrow();
        (s.account.clone(), s.admission)
    };
    let what = crate::listener::Listening {
        protocol: "smtp",
        implicit_tls,
        admission,
        refusal: b"421 4.7.0 Too many connections, try again later\r\n",
    };
    let stop = shutdown.clone();
    crate::listener::accept_loop(
        listener,
        what,
        move |peer| match peer.via {
            Some(via) => tracing::info_span!("smtp", account = %account, peer = %peer.addr, %via),
            None => tracing::info_span!("smtp", account = %account, peer = %peer.addr),
        },
        shutdown,
        move |stream, peer| {
            handle(
                stream,
                peer,
                implicit_tls,
                service.borrow().clone(),
                stop.clone(),
            )
        },
    )
    .await;
}

async fn write(io: &mut Box<dyn Io>, data: &[u8]) -> std::io::Result<()> {
    if !data.is_empty() {
        io.write_all(data).await?;
        io.flush().await?;
    }
    Ok(())
}

/// The upstream connection of a session, reopened if the provider dropped it
/// between messages.
struct UpstreamLink {
    conn: Option<Upstream>,
    credentials: Option<(String, SecretString)>,
}

impl UpstreamLink {
    async fn login(
        &mut self,
        target: &Target,
        user: &str,
        password: &SecretString,
    ) -> Result<Reply, UpstreamError> {
        let mut conn = Upstream::connect(target).await?;
        let reply = conn.authenticate(user, password).await?;
        if reply.code == 235 {
            self.conn = Some(conn);
            self.credentials = Some((user.to_string(), password.clone()));
        }
        Ok(reply)
    }

    /// The session's connection, opened (and logged in) when there is none. `fresh`
    /// tells whether it was just opened: a reused one may have been closed by the
    /// provider since (see [`UpstreamLink::begin`]).
    async fn ready(&mut self, target: &Target) -> Result<(&mut Upstream, bool), UpstreamError> {
        let fresh = self.conn.is_none();
        if fresh {
            let (user, password) = self.credentials.clone().ok_or(UpstreamError::Io {
                target: format!("{}:{}", target.host, target.port),
                message: "not logged in".into(),
            })?;
            let mut conn = Upstream::connect(target).await?;
            let reply = conn.authenticate(&user, &password).await?;
            if reply.code != 235 {
                return Err(UpstreamError::Refused {
                    target: format!("{}:{}", target.host, target.port),
                    reply,
                });
            }
            self.conn = Some(conn);
        }
        Ok((self.conn.as_mut().expect("set above"), fresh))
    }

    /// The connection failed `when`: it is dropped, and the client told nothing was
    /// sent.
    fn failed(&mut self, e: &UpstreamError, when: &str) -> Reply {
        tracing::warn!(error = %e, "upstream failed {when}");
        crate::metrics::upstream_error("smtp");
        self.conn = None;
        Reply::new(
            451,
            "4.4.1 Connection to the mail provider failed; the message was not sent",
        )
    }

    /// Opens a transaction (see [`Upstream::begin`]). A connection kept from an earlier
    /// message that turns out closed (an error, or the `421` a provider sends when it
    /// times a connection out) is replaced and the transaction tried once more on a new
    /// one: nothing was accepted yet. This saves asking the provider before every
    /// message whether the connection still works.
    async fn begin(
        &mut self,
        target: &Target,
        from: &str,
        rcpts: &[String],
        params: &[&str],
        size: usize,
        open: bool,
    ) -> Result<Result<(), Reply>, UpstreamError> {
        let (conn, fresh) = self.ready(target).await?;
        let first = conn.transaction(from, rcpts, params, size, open).await;
        let closed = match &first {
            Err(_) => true,
            Ok(Err(r)) => r.code == 421,
            Ok(Ok(())) => false,
        };
        if fresh || !closed {
            return first;
        }
        tracing::debug!("the provider closed the kept connection; opening a new one");
        self.conn = None;
        let (conn, _) = self.ready(target).await?;
        conn.transaction(from, rcpts, params, size, open).await
    }
}

async fn handle(
    stream: TcpStream,
    peer: Peer,
    implicit_tls: bool,
    svc: Arc<SmtpService>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut io: Box<dyn Io> = if implicit_tls {
        match crate::net::accept_tls(&svc.acceptor, stream, svc.idle_timeout).await? {
            Some(tls) => Box::new(tls),
            None => return Ok(()),
        }
    } else {
        Box::new(stream)
    };
    tracing::debug!(peer = %peer.addr, "connected");
    let mut cfg = svc.session.clone();
    cfg.plaintext_auth_ok = peer.plaintext_ok;
    let mut start = StartCheck::new(peer.check_start);
    let mut session = Session::new(cfg, implicit_tls);
    let mut link = UpstreamLink {
        conn: None,
        credentials: None,
    };
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match session.poll() {
            Action::NeedInput => {
                write(&mut io, &session.take_output()).await?;
                if *shutdown.borrow() && session.is_idle() {
                    write(
                        &mut io,
                        &Reply::new(421, "4.3.2 Service shutting down").to_wire(),
                    )
                    .await?;
                    break;
                }
                let n = tokio::select! {
                    r = tokio::time::timeout(svc.idle_timeout, io.read(&mut buf)) => match r {
                        Ok(r) => r?,
                        Err(_) => {
                            write(&mut io, &Reply::new(421, "4.4.2 Idle timeout, closing connection").to_wire()).await?;
                            break;
                        }
                    },
                    _ = shutdown.changed(), if !*shutdown.borrow() => continue,
                };
                if n == 0 {
                    break;
                }
                match start.feed(&buf[..n]) {
                    Start::Data(data) => session.feed(data),
                    Start::Wait => {}
                    Start::Header => {
                        StartCheck::refused("smtp");
                        break;
                    }
                }
            }
            Action::StartTls => {
                write(&mut io, &session.take_output()).await?;
                let Some(tls) = crate::net::accept_tls(&svc.acceptor, io, svc.idle_timeout).await?
                else {
                    return Ok(());
                };
                io = Box::new(tls);
                session.tls_started();
            }
            Action::Authenticate { user, password } => {
                write(&mut io, &session.take_output()).await?;
                let result = match link.login(&svc.target, &user, &password).await {
                    Ok(r) if r.code == 235 => {
                        tracing::info!(user = %user, "authenticated upstream");
                        Ok(user)
                    }
                    Ok(r) => {
                        tracing::info!(user = %user, code = r.code, "upstream refused login");
                        Err(r)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "upstream unreachable during AUTH");
                        crate::metrics::upstream_error("smtp");
                        Err(Reply::new(
                            454,
                            "4.7.0 Temporary authentication failure: the mail provider cannot be reached",
                        ))
                    }
                };
                session.auth_result(result);
            }
            Action::Deliver { envelope, message } => {
                write(&mut io, &session.take_output()).await?;
                let verdict = deliver(&svc, &mut link, &envelope, message).await;
                session.delivered(verdict);
            }
            Action::Close => {
                write(&mut io, &session.take_output()).await?;
                let _ = io.shutdown().await;
                break;
            }
        }
    }
    if let Some(conn) = link.conn.take() {
        conn.quit().await;
    }
    Ok(())
}

/// The (normalised) addresses in the message's To and Cc: every other envelope
/// recipient is a Bcc (RFC 5322 §3.6.3).
fn visible_recipients(raw: &[u8]) -> std::collections::HashSet<String> {
    let (header, _) = crate::mime::split_message(raw);
    let Some(m) = mail_parser::MessageParser::default().parse_headers(header) else {
        return Default::default();
    };
    [m.to(), m.cc()]
        .into_iter()
        .flatten()
        .flat_map(|a| a.iter())
        .filter_map(|a| a.address())
        .map(crate::keys::normalize_address)
        .collect()
}

/// What [`relay`] did with a message, for the audit log and the metrics.
struct Relayed {
    reply: Reply,
    outcome: crate::audit::Outcome,
    /// Absent when the pipeline itself failed.
    planned: Option<(bool, Vec<crate::audit::RecipientRecord>)>,
}

/// Relays the message (see [`relay`]), then audits and counts what happened.
async fn deliver(
    svc: &SmtpService,
    link: &mut UpstreamLink,
    envelope: &Envelope,
    message: Vec<u8>,
) -> Reply {
    use crate::audit::Outcome;
    let started = std::time::Instant::now();
    let done = relay(svc, link, envelope, message).await;
    let result = match done.outcome {
        Outcome::Relayed => "relayed",
        Outcome::Refused => "refused",
        Outcome::UpstreamRefused => "upstream_refused",
        Outcome::Failed => "failed",
    };
    crate::metrics::smtp_message(&svc.account, result, started.elapsed());
    let (client_encrypted, recipients) = done.planned.unwrap_or_default();
    for decision in ["encrypted", "plain", "refused"] {
        let n = recipients.iter().filter(|r| r.decision == decision).count();
        if n > 0 {
            crate::metrics::smtp_recipients(&svc.account, decision, n as u64);
        }
    }
    crate::audit::outbound(
        &svc.account,
        &envelope.from,
        envelope.login.as_deref(),
        done.outcome,
        done.reply.code,
        client_encrypted,
        recipients,
    );
    done.reply
}

/// Plans the copies and relays them; the reply is 250 only if upstream accepted all.
async fn relay(
    svc: &SmtpService,
    link: &mut UpstreamLink,
    envelope: &Envelope,
    message: Vec<u8>,
) -> Relayed {
    use crate::audit::Outcome;
    let done = |reply, outcome, planned| Relayed {
        reply,
        outcome,
        planned,
    };
    let outbound = svc.outbound.clone();
    let wanted = outbound.wanted_keys(envelope, &message);
    // Bounded in time: a slow key source never holds up the transaction.
    // Autocrypt state is the sending user's own (per identity, by login).
    // A key from `[keys] secret_dir` is unlocked on first use: off the I/O threads.
    let identity = match envelope.login.clone() {
        Some(login) => {
            let outbound = outbound.clone();
            tokio::task::spawn_blocking(move || {
                outbound
                    .identity_for_login(&login)
                    .map(|i| i.address.clone())
            })
            .await
            .ok()
            .flatten()
        }
        None => None,
    };
    let visible = visible_recipients(&message);
    let wanted: Vec<crate::keys::discover::Wanted> = wanted
        .into_iter()
        .map(|address| crate::keys::discover::Wanted {
            bcc: !visible.contains(&address),
            address,
        })
        .collect();
    let found = svc.discovery.keys_for(identity.as_deref(), &wanted).await;
    let env = envelope.clone();
    let size = message.len();
    // Planning and encryption are CPU work: off the I/O threads. The message is held
    // until its last copy is built; each copy is built just before it is sent and
    // dropped after, so a message held several times is never held all at once.
    let raw = Arc::new(message);
    let planned = {
        let raw = raw.clone();
        tokio::task::spawn_blocking(move || outbound.plan(&env, &raw, &found)).await
    };
    let planned = match planned {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "outbound pipeline crashed");
            let reply = Reply::new(451, "4.3.0 Internal error; the message was not sent");
            return done(reply, Outcome::Failed, None);
        }
    };
    let store = &svc.outbound.store;
    let records = Some((
        planned.client_encrypted,
        crate::audit::recipients(&planned, |fp| store.provenance(fp)),
    ));
    let copies = match planned.result {
        Ok(c) => c,
        Err(refusal) => {
            tracing::info!(
                code = refusal.code,
                rcpts = envelope.rcpts.len(),
                "message refused by policy"
            );
            // A 5xx is the policy's refusal; a 4xx, encryption that failed (which
            // `sealpost status` does not count as refused, as the metrics and audit do not).
            let outcome = if refusal.code >= 500 {
                crate::stats::global().refused(&svc.account);
                Outcome::Refused
            } else {
                Outcome::Failed
            };
            return done(refusal, outcome, records);
        }
    };
    let mut params = Vec::new();
    if envelope.body_8bit {
        params.push("BODY=8BITMIME");
    }
    if envelope.smtputf8 {
        params.push("SMTPUTF8");
    }
    let encrypted = copies.iter().filter(|c| c.encrypted).count();
    let total = copies.len();
    // Several copies (Bcc recipients get their own) cannot be sent atomically: before
    // the first is sent, every later copy's sender and recipients are put to the
    // provider (then reset), so that a recipient it refuses is reported with nothing
    // sent.
    for copy in copies.iter().skip(1) {
        let probed = link
            .begin(
                &svc.target,
                &envelope.from,
                &copy.rcpts,
                &params,
                Outbound::size_estimate(copy, &raw),
                false,
            )
            .await;
        let (reply, outcome) = match probed {
            Ok(Ok(())) => continue,
            Ok(Err(r)) => {
                tracing::info!(code = r.code, "upstream refused a copy; nothing sent");
                (r, Outcome::UpstreamRefused)
            }
            Err(e) => (link.failed(&e, "before relaying"), Outcome::Failed),
        };
        return done(reply, outcome, records);
    }
    for copy in copies {
        let rcpts = copy.rcpts.clone();
        let size = Outbound::size_estimate(&copy, &raw);
        // The copy is made while the transaction opens (MAIL, RCPT, DATA round trips):
        // a small one is ready when upstream's 354 comes; a large one waits in the
        // bounded channel. Refused or failed, the pieces are dropped and the making stops.
        let making = make_copy(svc, copy, raw.clone());
        let opened = link
            .begin(&svc.target, &envelope.from, &rcpts, &params, size, true)
            .await;
        let sent = match opened {
            Ok(Ok(())) => send_copy(svc, link, making).await,
            Ok(Err(r)) => Ok(Ok(r)),
            Err(e) => Err(e),
        };
        match sent {
            Ok(Ok(r)) if r.is_positive() => {}
            Ok(Ok(r)) => {
                tracing::info!(code = r.code, "upstream refused a copy");
                return done(r, Outcome::UpstreamRefused, records);
            }
            Ok(Err(reply)) => return done(reply, Outcome::Failed, records),
            Err(e) => {
                let reply = link.failed(&e, "during relay");
                return done(reply, Outcome::Failed, records);
            }
        }
    }
    crate::stats::global().relayed(&svc.account, encrypted, total - encrypted);
    tracing::info!(
        copies = total,
        encrypted,
        rcpts = envelope.rcpts.len(),
        size,
        "message relayed"
    );
    let reply = Reply::new(
        250,
        format!(
            "2.0.0 Message relayed ({} encrypted, {} plain)",
            encrypted,
            total - encrypted
        ),
    );
    done(reply, Outcome::Relayed, records)
}

/// A copy being made on the blocking pool (see [`make_copy`]): its pieces, and the
/// verdict once made.
struct Making {
    pieces: tokio::sync::mpsc::Receiver<Vec<u8>>,
    done: tokio::task::JoinHandle<Result<(), Reply>>,
}

/// Starts making `copy` on the blocking pool, 64 KiB pieces at a time into a bounded
/// channel: a copy is never held whole, and its making stops when the pieces are
/// dropped.
fn make_copy(
    svc: &SmtpService,
    copy: crate::smtp::pipeline::OutgoingCopy,
    raw: Arc<Vec<u8>>,
) -> Making {
    let (tx, pieces) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let outbound = svc.outbound.clone();
    let done = tokio::task::spawn_blocking(move || {
        let mut sink = ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        // `build_into` flushes the last piece.
        outbound.build_into(copy, &raw, &mut sink)
    });
    Making { pieces, done }
}

/// Streams a copy in the making into the transaction `link` has open (after its
/// `354`). `Ok(Ok(reply))` is upstream's final reply; `Ok(Err(reply))`, a copy that
/// could not be made, whose connection is dropped before the final dot (so upstream
/// discards the part it got); `Err`, connection trouble.
async fn send_copy(
    svc: &SmtpService,
    link: &mut UpstreamLink,
    making: Making,
) -> Result<Result<Reply, Reply>, UpstreamError> {
    let Making { mut pieces, done } = making;
    let conn = link.conn.as_mut().ok_or_else(|| UpstreamError::Io {
        target: format!("{}:{}", svc.target.host, svc.target.port),
        message: "connection lost".into(),
    })?;
    let mut stuffer = crate::smtp::upstream::DotStuffer::default();
    while let Some(piece) = pieces.recv().await {
        // On an error the pieces are dropped with this frame: the maker's next send
        // fails and it stops.
        conn.data_piece(&mut stuffer, &piece).await?;
    }
    match done.await {
        Ok(Ok(())) => conn.end_data(stuffer).await.map(Ok),
        Ok(Err(reply)) => {
            // No final dot: upstream drops what it got of this copy.
            link.conn = None;
            Ok(Err(reply))
        }
        Err(e) => {
            tracing::error!(error = %e, "building a copy crashed");
            link.conn = None;
            Ok(Err(Reply::new(
                451,
                "4.3.0 Internal error; the message was not sent",
            )))
        }
    }
}

/// Pieces of a copy in the making, handed to the relay over a bounded channel.
const CHUNK: usize = 64 * 1024;

struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(full)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "relay gone"))
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let take = (CHUNK - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..take]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}
