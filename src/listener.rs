//! Accepting clients: the loop the SMTP and IMAP listeners share.
//!
//! Every connection gets its own task and a slot among `max_connections`; a client
//! beyond that gets the protocol's refusal line and is closed. In its task, before the
//! session starts, the connection is admitted: its PROXY protocol header read (or its
//! absence checked, see [`crate::proxy_protocol`]), which gives the client's address,
//! and a slot taken among `max_connections_per_ip` for that address. On shutdown the
//! loop stops accepting and waits for the sessions, which end at their next idle point.

use crate::per_ip::{PerIp, PerIpSlot};
use crate::proxy_protocol::{self as pp, Header, Parsed, Sniff};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

/// How long a connection may take to send its PROXY protocol header (a load balancer
/// sends it with its first packet).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How a listener admits connections; fixed while it runs.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    /// Connections served at once on the listener.
    pub max_connections: usize,
    /// Connections at once from one client address; `None`: no limit per address.
    pub max_connections_per_ip: Option<usize>,
    /// Each connection must start with a PROXY protocol v2 header.
    pub proxy_protocol: bool,
}

/// What a listener is, for [`accept_loop`].
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    /// `smtp` or `imap`: labels metrics and logs.
    pub protocol: &'static str,
    /// TLS from the first byte (the client speaks first).
    pub implicit_tls: bool,
    pub admission: Admission,
    /// The protocol's line for a client turned away at a limit.
    pub refusal: &'static [u8],
}

/// Who a connection is from, once admitted.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The client's address: from the PROXY header when the listener takes one and it
    /// names a client, else the TCP peer.
    pub addr: SocketAddr,
    /// The TCP peer when the client's address came from a PROXY header (the balancer).
    pub via: Option<SocketAddr>,
    /// Plaintext logins are acceptable: a loopback listener, and a client on loopback
    /// (behind a balancer: the header's source, never the balancer's own address).
    pub plaintext_ok: bool,
    /// The session must refuse a stream that starts with a PROXY header (a plain
    /// listener without `proxy_protocol`: the header would come after the greeting).
    pub check_start: bool,
}

/// Why a connection was refused before its session started.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("no valid PROXY protocol v2 header: {0}")]
    Header(#[from] pp::HeaderError),
    #[error("no PROXY protocol v2 header within {HEADER_TIMEOUT:?}")]
    HeaderTimeout,
    #[error("the connection closed inside its PROXY protocol header")]
    HeaderClosed,
    #[error("reading the PROXY protocol header failed: {0}")]
    HeaderIo(std::io::Error),
    #[error("a PROXY protocol header on a listener without proxy_protocol = true")]
    Unexpected,
}

impl Refused {
    /// The `reason` label of `sealpost_connections_refused_total`.
    fn reason(&self) -> &'static str {
        match self {
            Refused::Unexpected => "unexpected_proxy_header",
            _ => "proxy_header",
        }
    }
}

/// Serves `listener` with `handle(stream, peer)` per admitted connection; `span(peer)`
/// is the session's tracing span.
pub async fn accept_loop<H, F, S>(
    listener: TcpListener,
    what: Listening,
    span: S,
    mut shutdown: watch::Receiver<bool>,
    handle: H,
) where
    H: Fn(TcpStream, Peer) -> F + Send + Sync + 'static,
    F: Future<Output = std::io::Result<()>> + Send + 'static,
    S: Fn(&Peer) -> tracing::Span + Send + Sync + 'static,
{
    let (handle, span) = (Arc::new(handle), Arc::new(span));
    let slots = Arc::new(Semaphore::new(what.admission.max_connections));
    let per_ip = what.admission.max_connections_per_ip.map(PerIp::new);
    // `sealpost status`: connections open and total on this listener.
    let counters = listener
        .local_addr()
        .ok()
        .map(|a| crate::stats::global().listener(a));
    let mut sessions = JoinSet::new();
    // Plaintext logins are acceptable on a loopback listener only.
    let loopback = listener
        .local_addr()
        .map(|a| a.ip().is_loopback())
        .unwrap_or(false);
    let protocol = what.protocol;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let (mut stream, tcp_peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(protocol, peer = %tcp_peer, "connection limit reached; refusing");
                    crate::metrics::connection_refused(protocol, "max_connections");
                    sessions.spawn(async move {
                        let _ = stream.write_all(what.refusal).await;
                    });
                    continue;
                };
                let (handle, span, per_ip, counters) =
                    (handle.clone(), span.clone(), per_ip.clone(), counters.clone());
                sessions.spawn(async move {
                    let _permit = permit;
                    let peer = match admit(&mut stream, tcp_peer, &what, loopback).await {
                        Ok(peer) => peer,
                        Err(e) => {
                            tracing::warn!(protocol, peer = %tcp_peer, error = %e, "connection refused");
                            crate::metrics::connection_refused(protocol, e.reason());
                            return;
                        }
                    };
                    let Some(_slot) = per_ip_slot(per_ip.as_ref(), &peer) else {
                        tracing::warn!(protocol, peer = %peer.addr, "connections per address reached; refusing");
                        crate::metrics::connection_refused(protocol, "max_connections_per_ip");
                        let _ = stream.write_all(what.refusal).await;
                        return;
                    };
                    let span = span(&peer);
                    let _open = (
                        crate::metrics::connection_opened(protocol),
                        counters.as_ref().map(|c| c.opened()),
                    );
                    let session = handle(stream, peer);
                    async move {
                        if let Err(e) = session.await {
                            tracing::info!(error = %e, "connection ended");
                        }
                    }
                    .instrument(span)
                    .await;
                });
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    while sessions.join_next().await.is_some() {}
}

/// A slot for the peer's address, or `None` when it has its limit of connections.
fn per_ip_slot(per_ip: Option<&Arc<PerIp>>, peer: &Peer) -> Option<Option<PerIpSlot>> {
    match per_ip {
        None => Some(None),
        Some(c) => c.try_acquire(peer.addr.ip()).map(Some),
    }
}

/// Reads the PROXY header (or checks it is absent) and says who the client is.
async fn admit(
    stream: &mut TcpStream,
    tcp_peer: SocketAddr,
    what: &Listening,
    loopback_listener: bool,
) -> Result<Peer, Refused> {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    if what.admission.proxy_protocol {
        let header = tokio::time::timeout(HEADER_TIMEOUT, read_header(stream))
            .await
            .map_err(|_| Refused::HeaderTimeout)??;
        return Ok(match header {
            Header::Proxy { source, .. } => Peer {
                addr: canonical(source),
                via: Some(tcp_peer),
                plaintext_ok: loopback_listener && source.ip().to_canonical().is_loopback(),
                check_start: false,
            },
            // The balancer's own health check: it logs in nowhere.
            Header::Local => Peer {
                addr: canonical(tcp_peer),
                via: None,
                plaintext_ok: false,
                check_start: false,
            },
        });
    }
    if what.implicit_tls && peek_start(stream).await == Sniff::Header {
        return Err(Refused::Unexpected);
    }
    Ok(Peer {
        addr: canonical(tcp_peer),
        via: None,
        plaintext_ok: loopback_listener,
        check_start: !what.implicit_tls,
    })
}

/// Reads exactly the header's bytes: what follows it is the client's and stays unread.
async fn read_header(stream: &mut TcpStream) -> Result<Header, Refused> {
    let mut buf = [0u8; pp::MAX_HEADER_LEN];
    let mut filled = 0;
    loop {
        match pp::parse(&buf[..filled])? {
            Parsed::Complete { header, .. } => return Ok(header),
            Parsed::Incomplete { total } => {
                let n = stream
                    .read(&mut buf[filled..total])
                    .await
                    .map_err(Refused::HeaderIo)?;
                if n == 0 {
                    return Err(Refused::HeaderClosed);
                }
                filled += n;
            }
        }
    }
}

/// On an implicit-TLS listener the client speaks first: looks at its first bytes (left
/// in the socket for the TLS handshake) for a PROXY header.
async fn peek_start(stream: &TcpStream) -> Sniff {
    let deadline = tokio::time::Instant::now() + HEADER_TIMEOUT;
    let mut buf = [0u8; pp::SNIFF_LEN];
    loop {
        match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => match pp::sniff(&buf[..n]) {
                // A prefix of a header, and nothing more yet: look again shortly.
                Sniff::NeedMore if n < buf.len() => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Sniff::NeedMore => return Sniff::NotHeader,
                decided => return decided,
            },
            // Closed, failed or silent: the TLS handshake deals with it.
            _ => return Sniff::NotHeader,
        }
    }
}

/// What [`StartCheck::feed`] makes of a read.
#[derive(Debug, PartialEq, Eq)]
pub enum Start<'a> {
    /// The client's bytes, to hand to the session.
    Data(&'a [u8]),
    /// Held back until more bytes decide.
    Wait,
    /// The stream starts with a PROXY header: refuse the connection.
    Header,
}

/// Holds back the first bytes a client sends on a plain listener without
/// `proxy_protocol` until they show that they are not a PROXY header (at most
/// [`pp::SNIFF_LEN`] bytes are held; any client command differs from a header in its
/// first byte or two).
#[derive(Debug, Default)]
pub struct StartCheck {
    held: Vec<u8>,
    done: bool,
}

impl StartCheck {
    /// `active: false` passes everything through.
    pub fn new(active: bool) -> StartCheck {
        StartCheck {
            held: Vec::new(),
            done: !active,
        }
    }

    pub fn feed<'a>(&'a mut self, data: &'a [u8]) -> Start<'a> {
        if self.done {
            return Start::Data(data);
        }
        self.held.extend_from_slice(data);
        match pp::sniff(&self.held) {
            Sniff::Header => Start::Header,
            Sniff::NeedMore => Start::Wait,
            Sniff::NotHeader => {
                self.done = true;
                Start::Data(&self.held)
            }
        }
    }

    /// Logs and counts the refusal of a stream that started with a header.
    pub fn refused(protocol: &'static str) {
        tracing::warn!(
            protocol,
            error = %Refused::Unexpected,
            "connection refused"
        );
        crate::metrics::connection_refused(protocol, Refused::Unexpected.reason());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_check_passes_commands_and_stops_headers_split_anywhere() {
        for input in [
            &b"EHLO client\r\n"[..],
            b"a1 CAPABILITY\r\n",
            b"\r\nEHLO x\r\n",
        ] {
            for cut in 0..=input.len() {
                let mut c = StartCheck::new(true);
                let mut out = Vec::new();
                for part in [&input[..cut], &input[cut..]] {
                    if let Start::Data(d) = c.feed(part) {
                        out.extend_from_slice(d);
                    }
                }
                assert_eq!(out, input, "cut at {cut}");
            }
        }
        let mut header = pp::SIGNATURE.to_vec();
        header.extend_from_slice(&[0x21, 0x11, 0, 12]);
        for h in [&header[..], b"PROXY TCP4 192.0.2.1 127.0.0.1 1 2\r\n"] {
            for cut in 1..h.len() {
                let mut c = StartCheck::new(true);
                let first = c.feed(&h[..cut]);
                let refused = first == Start::Header || c.feed(&h[cut..]) == Start::Header;
                assert!(refused, "cut at {cut}");
            }
        }
        assert_eq!(
            StartCheck::new(false).feed(&header),
            Start::Data(&header[..])
        );
    }
}
