//! The IMAP listener: one task per client, one upstream connection per client.

use super::session::{Output, Session};
use super::ImapContext;
use crate::config::UpstreamSecurity;
use crate::listener::{Peer, Start, StartCheck};
use crate::smtp::upstream::Io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// RFC 3501 §5.4: an idle client may stay at least 30 minutes (IDLE re-issues every 29).
const IMAP_IDLE_TIMEOUT: Duration = Duration::from_secs(31 * 60);

/// Where and how to reach the provider's IMAP server.
#[derive(Clone)]
pub struct ImapUpstream {
    pub host: String,
    pub port: u16,
    pub security: UpstreamSecurity,
    pub tls: Arc<rustls::ClientConfig>,
    pub timeout: Duration,
}

pub struct ImapService {
    pub account: String,
    pub ctx: Arc<ImapContext>,
    pub upstream: ImapUpstream,
    /// How long upstream may stay silent while it owes a reply (`[limits]
    /// imap_reply_timeout_secs`).
    pub reply_timeout: Duration,
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub admission: crate::listener::Admission,
}

/// Serves until `shutdown`; sessions then end at their next idle point.
pub async fn serve(
    listener: TcpListener,
    implicit_tls: bool,
    service: watch::Receiver<Arc<ImapService>>,
    shutdown: watch::Receiver<bool>,
) {
    // Each connection takes the service current when it is admitted (SIGHUP swaps it).
    let (account, admission) = {
        let s = service.borrow();
        (s.account.clone(), s.admission)
    };
    let what = crate::listener::Listening {
        protocol: "imap",
        implicit_tls,
        admission,
        refusal: b"* BYE Too many connections, try again later\r\n",
    };
    let stop = shutdown.clone();
    crate::listener::accept_loop(
        listener,
        what,
        move |peer| match peer.via {
            Some(via) => tracing::info_span!("imap", account = %account, peer = %peer.addr, %via),
            None => tracing::info_span!("imap", account = %account, peer = %peer.addr),
        },
        shutdown,
        move |stream, peer| {
            handle(
                stream,
                implicit_tls,
                peer,
                service.borrow().clone(),
                stop.clone(),
            )
        },
    )
    .await;
}

/// Connects to the provider and returns the stream and the greeting to relay.
pub async fn connect_upstream(svc: &ImapUpstream) -> std::io::Result<(Box<dyn Io>, Vec<u8>)> {
    let endpoint = crate::net::Endpoint {
        host: svc.host.clone(),
        port: svc.port,
        timeout: svc.timeout,
    };
    let target = endpoint.label();
    let tcp = endpoint.tcp().await.map_err(std::io::Error::other)?;
    let tls_connect = |io| async {
        endpoint
            .tls(&svc.tls, io)
            .await
            .map_err(std::io::Error::other)
    };
    match svc.security {
        UpstreamSecurity::Tls => {
            let tls = tls_connect(tcp).await?;
            Ok((Box::new(tls), Vec::new()))
        }
        UpstreamSecurity::Plain => Ok((Box::new(tcp), Vec::new())),
        UpstreamSecurity::Starttls => {
            let mut reader = BufReader::new(tcp);
            let mut line = Vec::new();
            read_line(&mut reader, &mut line, svc.timeout).await?;
            if !line.starts_with(b"* OK") {
                return Err(std::io::Error::other(format!(
                    "{target}: unexpected greeting {:?}",
                    String::from_utf8_lossy(&line)
                )));
            }
            reader.get_mut().write_all(b"sp0 STARTTLS\r\n").await?;
            loop {
                line.clear();
                read_line(&mut reader, &mut line, svc.timeout).await?;
                if line.starts_with(b"sp0 ") {
                    break;
                }
            }
            if !line.starts_with(b"sp0 OK") {
                return Err(std::io::Error::other(format!(
                    "{target}: STARTTLS refused; refusing to continue in plain text"
                )));
            }
            if !reader.buffer().is_empty() {
                return Err(std::io::Error::other(format!(
                    "{target}: data before the TLS handshake"
                )));
            }
            let tls = tls_connect(reader.into_inner()).await?;
            // The first greeting's capabilities were from before TLS; ask again and
            // present a greeting of our own with the real ones.
            let mut io: Box<dyn Io> = Box::new(tls);
            io.write_all(b"sp0 CAPABILITY\r\n").await?;
            let mut reader = BufReader::new(io);
            let mut caps = None;
            loop {
                line.clear();
                read_line(&mut reader, &mut line, svc.timeout).await?;
                if let Some(list) = capability_list(&line) {
                    caps = Some(list);
                }
                if line.starts_with(b"sp0 ") {
                    break;
                }
            }
            if !reader.buffer().is_empty() {
                return Err(std::io::Error::other(format!("{target}: unexpected data")));
            }
            Ok((reader.into_inner(), greeting_with(caps.as_deref())))
        }
    }
}

/// The capability atoms of an untagged `CAPABILITY` response, as sent; `None` for any
/// other line, or one imap-codec cannot decode (an empty list, for one).
fn capability_list(line: &[u8]) -> Option<String> {
    use imap_codec::decode::Decoder;
    use imap_types::response::{Data, Response};
    match imap_codec::ResponseCodec::default().decode(line) {
        Ok((_, Response::Data(Data::Capability(_)))) => {
            let text = String::from_utf8_lossy(line);
            let list = text.get("* CAPABILITY ".len()..)?.trim();
            Some(list.to_string())
        }
        _ => None,
    }
}

/// The greeting sealpost presents after upstream STARTTLS: upstream's capabilities
/// from after the handshake (filtered by the session like any other), or none.
fn greeting_with(caps: Option<&str>) -> Vec<u8> {
    match caps {
        Some(list) if !list.is_empty() => {
            format!("* OK [CAPABILITY {list}] sealpost ready\r\n").into_bytes()
        }
        _ => b"* OK sealpost ready\r\n".to_vec(),
    }
}

async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    line: &mut Vec<u8>,
    timeout: Duration,
) -> std::io::Result<()> {
    let n = tokio::time::timeout(timeout, (&mut *r).take(64 * 1024).read_until(b'\n', line))
        .await
        .map_err(|_| std::io::Error::other("upstream did not answer in time"))??;
    if n == 0 {
        return Err(std::io::Error::other("upstream closed the connection"));
    }
    Ok(())
}

async fn handle(
    stream: TcpStream,
    implicit_tls: bool,
    peer: Peer,
    svc: Arc<ImapService>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut client: Box<dyn Io> = if implicit_tls {
        match crate::net::accept_tls(&svc.acceptor, stream, svc.upstream.timeout).await? {
            Some(tls) => Box::new(tls),
            None => return Ok(()),
        }
    } else {
        Box::new(stream)
    };
    let (mut upstream, greeting) = match connect_upstream(&svc.upstream).await {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(error = %crate::error_chain(&e), "cannot reach the IMAP server");
            crate::metrics::upstream_error("imap");
            let _ = client
                .write_all(
                    b"* BYE [UNAVAILABLE] The mail server cannot be reached; try again later\r\n",
                )
                .await;
            return Ok(());
        }
    };
    let mut session = Session::new(svc.ctx.clone(), implicit_tls, peer.plaintext_ok);
    let mut start = StartCheck::new(peer.check_start);
    // Views built on the blocking pool come back here (see `build_view`).
    let (views_tx, mut views_rx) = tokio::sync::mpsc::unbounded_channel::<Built>();
    // Sealed APPEND messages come back the same way: (tag, sealed message or why not).
    let (sealed_tx, mut sealed_rx) =
        tokio::sync::mpsc::unbounded_channel::<(String, usize, Result<Vec<u8>, String>)>();
    let mut outputs = Vec::new();
    if !greeting.is_empty() {
        outputs = session.on_upstream(&greeting);
    }
    // Per connection, so modest: a thousand clients in IDLE must not cost gigabytes
    // (TLS records are 16 KiB; larger reads bring little).
    let mut cbuf = vec![0u8; 16 * 1024];
    let mut ubuf = vec![0u8; 64 * 1024];
    let up_timeout = svc.upstream.timeout;
    let reply_timeout = svc.reply_timeout;
    // When upstream last showed life while it owed a reply: its last bytes, or the moment
    // it began to owe one. Client traffic does not count (a client sending a byte a
    // minute would otherwise keep a stuck upstream's session open).
    let mut heard = tokio::time::Instant::now();
    let mut was_awaiting = false;
    loop {
        for out in std::mem::take(&mut outputs) {
            match out {
                Output::Client(b) => write_paced(&mut client, &b, IMAP_IDLE_TIMEOUT).await?,
                Output::Upstream(b) => {
                    if let Err(e) = write_paced(&mut upstream, &b, up_timeout).await {
                        return upstream_lost(&mut client, &e).await;
                    }
                }
                Output::StartTls => {
                    client.flush().await?;
                    let Some(tls) =
                        crate::net::accept_tls(&svc.acceptor, client, svc.upstream.timeout).await?
                    else {
                        return Ok(());
                    };
                    client = Box::new(tls);
                    session.tls_started();
                }
                Output::Decrypt(req) => {
                    tokio::spawn(build_view(svc.ctx.clone(), req, views_tx.clone()));
                }
                Output::Seal(req) => {
                    let ctx = svc.ctx.clone();
                    let tx = sealed_tx.clone();
                    tokio::spawn(async move {
                        // Encryption shares the cores with decryption.
                        let Ok(_permit) = ctx.decrypt_slots.clone().acquire_owned().await else {
                            return;
                        };
                        let (tag, index) = (req.tag.clone(), req.index);
                        let sealed = tokio::task::spawn_blocking(move || {
                            ctx.seal(&req.identity, &req.message)
                                .map_err(|e| e.to_string())
                        })
                        .await
                        .unwrap_or_else(|e| Err(format!("encryption task failed: {e}")));
                        let _ = tx.send((tag, index, sealed));
                    });
                }
                Output::Background(req) => {
                    crate::imap::ahead::start(svc.ctx.clone(), svc.upstream.clone(), &req);
                    crate::imap::fill::start(svc.ctx.clone(), svc.upstream.clone(), req)
                }
                Output::Close => {
                    client.flush().await?;
                    let _ = client.shutdown().await;
                    return Ok(());
                }
            }
        }
        within(IMAP_IDLE_TIMEOUT, client.flush()).await?;
        if let Err(e) = within(up_timeout, upstream.flush()).await {
            return upstream_lost(&mut client, &e).await;
        }
        if *shutdown.borrow() && session.is_idle() {
            let _ = client
                .write_all(b"* BYE sealpost is shutting down\r\n")
                .await;
            let _ = client.shutdown().await;
            return Ok(());
        }
        let read_client = !session.client_blocked();
        // Fires only while upstream owes a reply, `reply_timeout` after it was last heard.
        let awaiting = session.awaits_upstream();
        if awaiting && !was_awaiting {
            heard = tokio::time::Instant::now();
        }
        was_awaiting = awaiting;
        let upstream_silence = tokio::time::sleep_until(heard + reply_timeout);
        tokio::select! {
            r = tokio::time::timeout(IMAP_IDLE_TIMEOUT, client.read(&mut cbuf)), if read_client => {
                let n = match r {
                    Ok(r) => r?,
                    Err(_) => {
                        let _ = client.write_all(b"* BYE Idle timeout\r\n").await;
                        return Ok(());
                    }
                };
                if n == 0 {
                    return Ok(());
                }
                match start.feed(&cbuf[..n]) {
                    Start::Data(data) => outputs = session.on_client(data),
                    Start::Wait => {}
                    Start::Header => {
                        StartCheck::refused("imap");
                        return Ok(());
                    }
                }
            }
            r = upstream.read(&mut ubuf) => {
                heard = tokio::time::Instant::now();
                let n = match r {
                    Ok(n) => n,
                    Err(e) => return upstream_lost(&mut client, &e).await,
                };
                if n == 0 {
                    if !session.logged_out() {
                        let _ = client.write_all(b"* BYE The mail server closed the connection\r\n").await;
                    }
                    return Ok(());
                }
                outputs = session.on_upstream(&ubuf[..n]);
            }
            Some((job, uid, raw, view)) = views_rx.recv() => {
                outputs = session.on_view(&job, uid, &raw, view);
            }
            Some((tag, index, sealed)) = sealed_rx.recv() => {
                outputs = session.on_sealed(&tag, index, sealed);
            }
            () = upstream_silence, if awaiting => {
                let e = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {reply_timeout:?}"),
                );
                return upstream_lost(&mut client, &e).await;
            }
            _ = shutdown.changed(), if !*shutdown.borrow() => {}
        }
    }
}

/// Writes `bytes` in pieces, each of which must be taken within `limit`: a slow peer
/// that keeps taking data is not cut off however long the whole takes (a sealed APPEND
/// of tens of megabytes over a slow uplink), a stuck one is.
async fn write_paced(io: &mut Box<dyn Io>, bytes: &[u8], limit: Duration) -> std::io::Result<()> {
    for piece in bytes.chunks(64 * 1024) {
        within(limit, io.write_all(piece)).await?;
    }
    Ok(())
}

/// `fut` (a write or flush), failing with `TimedOut` after `limit`.
async fn within(
    limit: Duration,
    fut: impl std::future::Future<Output = std::io::Result<()>>,
) -> std::io::Result<()> {
    tokio::time::timeout(limit, fut).await.map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the peer took no data for {limit:?}"),
        )
    })?
}

/// The upstream connection failed, was cut, or stopped answering: the client is told
/// with an untagged BYE (RFC 3501 §7.1.5) and the session ends. Whatever it had in flight
/// gets no tagged reply, so it cannot mistake an unfinished command for a completed one.
async fn upstream_lost(client: &mut Box<dyn Io>, e: &std::io::Error) -> std::io::Result<()> {
    tracing::warn!(error = %e, "lost the IMAP server mid-session; closing the client's session");
    crate::metrics::upstream_error("imap");
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = client
            .write_all(
                b"* BYE [UNAVAILABLE] The mail server stopped answering; try again later\r\n",
            )
            .await;
        let _ = client.flush().await;
        let _ = client.shutdown().await;
    })
    .await;
    Ok(())
}

/// Views of FETCHes waiting to be indexed for SEARCH, at most this many: beyond it a
/// view is not indexed now (a SEARCH that reads it decrypts it again, or the background
/// fill indexes it).
static INDEX_BACKLOG: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(256);

/// A view built: (job, UID, stored bytes, view).
type Built = (String, u32, Vec<u8>, crate::pgp::View);

/// Builds the view `req` asks for, in one of the process's decryption slots, and hands
/// it to the session. What SEARCH reads of it is indexed in that slot before it is
/// handed over when the job reads that (a SEARCH); for a FETCH it is indexed after,
/// in a slot taken again behind the decryptions waiting by then: those hold up clients,
/// indexing does not. (A failure in indexing is contained.)
async fn build_view(
    ctx: Arc<ImapContext>,
    req: crate::imap::fetch::DecryptRequest,
    tx: tokio::sync::mpsc::UnboundedSender<Built>,
) {
    // At most one decryption per core runs at a time, process-wide.
    let Ok(slot) = ctx.decrypt_slots.clone().acquire_owned().await else {
        return;
    };
    let worker = ctx.clone();
    // Only a runtime shutting down cancels it: the session ends too.
    let Ok(later) = tokio::task::spawn_blocking(move || {
        let ctx = worker;
        let started = std::time::Instant::now();
        let view = crate::imap::fetch::view_or_stand_in(&req.raw, || {
            ctx.view(&req.identity, &req.raw, req.limit)
        });
        crate::metrics::imap_decrypt_time(started.elapsed());
        let index = req
            .doc
            .filter(|_| crate::imap::search_state::lasting(&view));
        let later = if req.doc_first {
            if let Some(key) = index {
                ctx.search.record(&ctx, key, &view);
            }
            None
        } else {
            index.and_then(|key| {
                let queued = INDEX_BACKLOG.try_acquire().ok()?;
                Some((queued, key, view.clone()))
            })
        };
        let _ = tx.send((req.job, req.uid, req.raw, view));
        later
    })
    .await
    else {
        return;
    };
    drop(slot);
    let Some((queued, key, view)) = later else {
        return;
    };
    let Ok(_slot) = ctx.decrypt_slots.clone().acquire_owned().await else {
        return;
    };
    let _ = tokio::task::spawn_blocking(move || {
        ctx.search.record(&ctx, key, &view);
        drop(queued);
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defect 8: `* CAPABILITY \r\n` after STARTTLS panicked (slicing past the end).
    #[test]
    fn empty_or_odd_capability_lines_do_not_panic() {
        for line in [
            &b"* CAPABILITY \r\n"[..],
            b"* CAPABILITY\r\n",
            b"* CAPABILITY",
            b"* capability imap4rev1\r\n",
            b"*\r\n",
            b"",
        ] {
            let caps = capability_list(line);
            let g = greeting_with(caps.as_deref());
            assert!(g.starts_with(b"* OK "), "{}", String::from_utf8_lossy(&g));
        }
        assert_eq!(
            capability_list(b"* CAPABILITY IMAP4rev1 IDLE\r\n").as_deref(),
            Some("IMAP4rev1 IDLE")
        );
        assert_eq!(greeting_with(None), b"* OK sealpost ready\r\n");
    }
}
