//! Accepting clients: the loop the SMTP and IMAP listeners share.
//!
//! Every connection gets its own task and a slot among `max_connections`; a client
//! beyond that gets the protocol's refusal line and is closed. On shutdown the loop
//! stops accepting and waits for the sessions, which end at their next idle point.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

/// Serves `listener` with `handle(stream, peer, loopback_listener)` per connection;
/// `protocol` labels the connection metrics.
pub async fn accept_loop<H, F>(
    listener: TcpListener,
    protocol: &'static str,
    max_connections: usize,
    refusal: &'static [u8],
    span: impl Fn(SocketAddr) -> tracing::Span,
    mut shutdown: watch::Receiver<bool>,
    handle: H,
) where
    H: Fn(TcpStream, SocketAddr, bool) -> F,
    F: Future<Output = std::io::Result<()>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_connections));
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
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let (mut stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "connection limit reached; refusing");
                    crate::metrics::connection_refused(protocol);
                    sessions.spawn(async move {
                        let _ = stream.write_all(refusal).await;
                    });
                    continue;
                };
                let session = handle(stream, peer, loopback);
                let open = crate::metrics::connection_opened(protocol);
                let counted = counters.as_ref().map(|c| c.opened());
                sessions.spawn(
                    async move {
                        let _permit = permit;
                        let _open = (open, counted);
                        if let Err(e) = session.await {
                            tracing::info!(error = %e, "connection ended");
                        }
                    }
                    .instrument(span(peer)),
                );
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    while sessions.join_next().await.is_some() {}
}
