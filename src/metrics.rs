//! Counters for Prometheus, and the `[metrics]` listener that serves them.
//!
//! One registry for the process ([`METRICS`]), so that the SMTP, IMAP and key code
//! record with one call and no handle threaded through. Labels take bounded values
//! only: protocol, account (from the config), key source, and fixed result names;
//! never an address, a mailbox or anything from a message. `GET /metrics` answers in
//! the Prometheus text exposition format (version 0.0.4).

use crate::config::KeySource;
use crate::pgp::ViewKind;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

type Labels = Vec<(&'static str, String)>;

/// Every metric sealpost keeps.
pub struct Metrics {
    registry: Registry,
    connections_open: Family<Labels, Gauge>,
    connections: Family<Labels, Counter>,
    connections_refused: Family<Labels, Counter>,
    smtp_messages: Family<Labels, Counter>,
    smtp_recipients: Family<Labels, Counter>,
    decryptions: Family<Labels, Counter>,
    key_lookups: Family<Labels, Counter>,
    upstream_errors: Family<Labels, Counter>,
    audit_write_failures: Counter,
    smtp_relay: Histogram,
    imap_decrypt: Histogram,
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("sealpost"),
            connections_open: Family::default(),
            connections: Family::default(),
            connections_refused: Family::default(),
            smtp_messages: Family::default(),
            smtp_recipients: Family::default(),
            decryptions: Family::default(),
            key_lookups: Family::default(),
            upstream_errors: Family::default(),
            audit_write_failures: Counter::default(),
            // 5 ms .. about 41 s.
            smtp_relay: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            // 1 ms .. about 8 s.
            imap_decrypt: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
        };
        let r = &mut m.registry;
        r.register(
            "connections_open",
            "Client connections being served, by protocol",
            m.connections_open.clone(),
        );
        r.register(
            "connections",
            "Client connections accepted, by protocol",
            m.connections.clone(),
        );
        r.register(
            "connections_refused",
            "Client connections refused before their session, by protocol and reason (max_connections, max_connections_per_ip, proxy_header, unexpected_proxy_header)",
            m.connections_refused.clone(),
        );
        r.register(
            "smtp_messages",
            "Submitted messages by account and result (relayed, refused, upstream_refused, failed)",
            m.smtp_messages.clone(),
        );
        r.register(
            "smtp_recipients",
            "Envelope recipients of submitted messages by account and policy decision (encrypted, plain, refused)",
            m.smtp_recipients.clone(),
        );
        r.register(
            "imap_decryptions",
            "Stored encrypted messages decrypted for IMAP clients, by account and result (decrypted, undecryptable, too_large)",
            m.decryptions.clone(),
        );
        r.register(
            "key_lookups",
            "Recipient key lookups by source and result (found, not_found, unusable, failed, cached_miss)",
            m.key_lookups.clone(),
        );
        r.register(
            "upstream_errors",
            "Failures to reach or talk to the provider, by protocol",
            m.upstream_errors.clone(),
        );
        r.register(
            "audit_write_failures",
            "Audit records that could not be written (whole or in part) to [audit] file",
            m.audit_write_failures.clone(),
        );
        r.register_with_unit(
            "smtp_relay_duration",
            "Time from the end of DATA to the reply: key lookups, encryption and relaying",
            Unit::Seconds,
            m.smtp_relay.clone(),
        );
        r.register_with_unit(
            "imap_decrypt_duration",
            "Time to decrypt one stored message and build its view",
            Unit::Seconds,
            m.imap_decrypt.clone(),
        );
        m
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// Counts an open connection until dropped.
pub struct ConnectionGuard(&'static str);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        METRICS
            .connections_open
            .get_or_create(&labels(&[("protocol", self.0)]))
            .dec();
    }
}

/// A client connection of `protocol` (`smtp`, `imap`) is being served.
pub fn connection_opened(protocol: &'static str) -> ConnectionGuard {
    let l = labels(&[("protocol", protocol)]);
    METRICS.connections.get_or_create(&l).inc();
    METRICS.connections_open.get_or_create(&l).inc();
    ConnectionGuard(protocol)
}

/// A client was turned away before its session: `reason` is `max_connections`,
/// `max_connections_per_ip`, `proxy_header` (missing or invalid where required) or
/// `unexpected_proxy_header` (sent to a listener without `proxy_protocol`).
pub fn connection_refused(protocol: &'static str, reason: &'static str) {
    METRICS
        .connections_refused
        .get_or_create(&labels(&[("protocol", protocol), ("reason", reason)]))
        .inc();
}

/// What became of a submitted message: `relayed`, `refused` (policy),
/// `upstream_refused` or `failed`, and how long it took.
pub fn smtp_message(account: &str, result: &'static str, took: Duration) {
    METRICS
        .smtp_messages
        .get_or_create(&labels(&[("account", account), ("result", result)]))
        .inc();
    METRICS.smtp_relay.observe(took.as_secs_f64());
}

/// The policy's decision for `n` recipients: `encrypted`, `plain` or `refused`.
pub fn smtp_recipients(account: &str, decision: &'static str, n: u64) {
    METRICS
        .smtp_recipients
        .get_or_create(&labels(&[("account", account), ("decision", decision)]))
        .inc_by(n);
}

/// A stored message was decrypted (or not) for an IMAP client; plain messages are not
/// counted.
pub fn decryption(account: &str, kind: &ViewKind) {
    let result = match kind {
        ViewKind::Plain => return,
        ViewKind::Decrypted(_) => "decrypted",
        ViewKind::Undecryptable(_) => "undecryptable",
        ViewKind::TooLarge { .. } => "too_large",
    };
    METRICS
        .decryptions
        .get_or_create(&labels(&[("account", account), ("result", result)]))
        .inc();
}

/// How long building one view took.
pub fn imap_decrypt_time(took: Duration) {
    METRICS.imap_decrypt.observe(took.as_secs_f64());
}

/// One key source was asked about one address.
pub fn key_lookup(source: KeySource, result: &'static str) {
    let source = match source {
        KeySource::Store => "store",
        KeySource::Autocrypt => "autocrypt",
        KeySource::Wkd => "wkd",
        KeySource::Vks => "vks",
    };
    METRICS
        .key_lookups
        .get_or_create(&labels(&[("source", source), ("result", result)]))
        .inc();
}

/// An audit record could not be written (whole) to the audit file.
pub fn audit_write_failure() {
    METRICS.audit_write_failures.inc();
}

/// The provider could not be reached, or failed mid-conversation.
pub fn upstream_error(protocol: &'static str) {
    METRICS
        .upstream_errors
        .get_or_create(&labels(&[("protocol", protocol)]))
        .inc();
}

/// Scrapes served at once; more wait for their turn.
const MAX_SCRAPES: usize = 8;

/// Serves `GET /metrics` on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let Ok((stream, _peer)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                // Never wait for a slot here: that would stop accepting and keep
                // `shutdown` from being seen. Beyond the limit, close at once.
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    tracing::warn!("metrics connection limit reached; closing");
                    continue;
                };
                tokio::spawn(async move {
                    let _permit = permit;
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(10))
                        .keep_alive(false)
                        .serve_connection(io, hyper::service::service_fn(answer));
                    // A scraper that stalls is dropped: every connection is bounded in time.
                    let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
                });
            }
        }
    }
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = content_type.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    let text = "text/plain; charset=utf-8";
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => reply(
            StatusCode::OK,
            prometheus_text::CONTENT_TYPE,
            METRICS.encode(),
        ),
        (_, "/metrics") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            text,
            "only GET /metrics\n".into(),
        ),
        _ => reply(StatusCode::NOT_FOUND, text, "see /metrics\n".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions_and_counts_add_up() {
        smtp_recipients("unit", "encrypted", 2);
        smtp_recipients("unit", "encrypted", 1);
        key_lookup(KeySource::Wkd, "found");
        {
            let _c = connection_opened("unit-proto");
            assert!(METRICS
                .encode()
                .contains("sealpost_connections_open{protocol=\"unit-proto\"} 1\n"));
        }
        let text = METRICS.encode();
        for line in [
            "sealpost_smtp_recipients_total{account=\"unit\",decision=\"encrypted\"} 3\n",
            "sealpost_key_lookups_total{source=\"wkd\",result=\"found\"} 1\n",
            "sealpost_connections_open{protocol=\"unit-proto\"} 0\n",
            "sealpost_connections_total{protocol=\"unit-proto\"} 1\n",
            "# TYPE sealpost_smtp_relay_duration_seconds histogram\n",
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
    }

    /// Connections that say nothing hold at most every slot: the ones beyond are closed
    /// at once, so the accept loop keeps running and shutdown ends it promptly (it used
    /// to wait for a free slot inside the accept arm, until a header timeout freed one).
    #[test]
    fn silent_connections_neither_block_the_accept_loop_nor_shutdown() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop_tx, stop_rx) = watch::channel(false);
            let server = tokio::spawn(serve(listener, stop_rx));
            let mut silent = Vec::new();
            for _ in 0..MAX_SCRAPES + 2 {
                silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
            }
            // The one beyond the limit is closed by the server, not left waiting.
            let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut buf = [0u8; 16];
            let closed = tokio::time::timeout(
                Duration::from_secs(3),
                tokio::io::AsyncReadExt::read(&mut extra, &mut buf),
            )
            .await;
            assert!(
                matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
                "not closed: {closed:?}"
            );
            stop_tx.send(true).unwrap();
            tokio::time::timeout(Duration::from_secs(3), server)
                .await
                .expect("shutdown waited for a scrape slot")
                .unwrap();
            drop(silent);
        });
    }
}
