//! IDLE memory benchmark: `cargo bench --bench imap_idle`.
//!
//! A mail client keeps a connection per folder it watches, each in IDLE (Thunderbird
//! keeps four), so a gateway holds thousands of connections that do nothing for
//! minutes. This measures what they cost sealpost: 1,000 sessions log in through
//! sealpost to a real Dovecot (TLS on both sides: implicit TLS from the client, IMAPS
//! upstream), select INBOX and enter IDLE. sealpost's resident memory (VmRSS) with all
//! of them idling is compared with its resident memory at rest, after one session has
//! come and gone (so that what is made once per process is counted at rest). A message
//! then delivered to INBOX must reach every one of the 1,000 sessions as `EXISTS`:
//! they are measured alive, not stalled.
//!
//! Goal (issue 8): 1,000 sessions in IDLE cost at most 100 MB above idle.
//!
//! `SEALPOST_BENCH_IDLE_SESSIONS=n` changes the number of sessions.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use common::dovecot::Dovecot;
use common::imapclients::rustls_client_config;
use common::proxy::ProxyOptions;
use common::TestCa;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{describe_binary, mib, proc_status_bytes, secs, BenchProxy};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const USER: &str = "alice@example.com";
const PASS: &str = "alicepw";
const GOAL_BYTES: u64 = 100 * 1000 * 1000;
/// Logins at once while the sessions are opened (Dovecot's auth and TLS handshakes
/// on 2 cores).
const OPENING_AT_ONCE: usize = 32;

type Conn = BufReader<TlsStream<TcpStream>>;

/// Reads lines until one starts with `prefix`; panics with what came on EOF.
async fn read_until(conn: &mut Conn, prefix: &str) -> String {
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(60), conn.read_line(&mut line))
            .await
            .unwrap_or_else(|_| panic!("no {prefix:?} within 60 s; saw: {seen}"))
            .expect("read from sealpost");
        assert!(n > 0, "connection closed before {prefix:?}; saw: {seen}");
        seen.push_str(&line);
        if line.starts_with(prefix) {
            return seen;
        }
    }
}

/// One session through sealpost, logged in, INBOX selected, in IDLE.
async fn idling(port: u16, tls: Arc<rustls::ClientConfig>) -> Conn {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to sealpost");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("server name");
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .expect("TLS handshake with sealpost");
    let mut conn = BufReader::new(stream);
    read_until(&mut conn, "* OK").await;
    for (tag, command) in [
        ("a", format!("LOGIN {USER} {PASS}")),
        ("b", "SELECT INBOX".to_string()),
    ] {
        let line = format!("{tag} {command}\r\n");
        conn.get_mut()
            .write_all(line.as_bytes())
            .await
            .expect("send");
        let reply = read_until(&mut conn, &format!("{tag} ")).await;
        assert!(
            reply
                .lines()
                .last()
                .unwrap_or("")
                .starts_with(&format!("{tag} OK")),
            "{command}: {reply}"
        );
    }
    conn.get_mut().write_all(b"c IDLE\r\n").await.expect("send");
    read_until(&mut conn, "+").await;
    conn
}

fn rss(pid: u32) -> u64 {
    proc_status_bytes(pid, "VmRSS")
}

fn main() {
    let sessions: usize = std::env::var("SEALPOST_BENCH_IDLE_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let bin = support::sealpost_binary();
    println!("=== sealpost IDLE memory benchmark ({sessions} sessions) ===");
    println!("sealpost binary: {}", describe_binary(&bin));
    let ca = TestCa::shared();
    // Room for every session at Dovecot: one login process proxies all TLS
    // connections (high-performance mode), one imap process each.
    let dovecot = Dovecot::start_with(
        ca,
        &[(USER, PASS)],
        &format!(
            "default_client_limit = {clients}\nprotocol imap {{\n  mail_max_userip_connections = {clients}\n}}\nservice imap-login {{\n  service_count = 0\n  client_limit = {clients}\n}}\nservice imap {{\n  process_limit = {clients}\n}}\nmailbox_idle_check_interval = 1 secs\n",
            clients = sessions + 100
        ),
    );
    dovecot.deliver_new(
        USER,
        b"From: bob@example.org\r\nSubject: first\r\n\r\nhello\r\n",
    );
    let mut opts = ProxyOptions::new(1);
    opts.imap_upstream = Some((dovecot.imaps_port, "tls"));
    opts.alice_login = USER.into();
    opts.extra = format!("[limits]\nmax_connections = {}\n", sessions + 50);
    let proxy = BenchProxy::start(&bin, ca, &opts);
    let pid = proxy.pid();
    let port = proxy.imaps_port;
    let tls = rustls_client_config(&ca.ca_pem);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");

    // At rest: after one whole session, so what is made once per process counts here.
    rt.block_on(async {
        let mut c = idling(proxy.imaps_port, tls.clone()).await;
        c.get_mut()
            .write_all(b"DONE\r\nd LOGOUT\r\n")
            .await
            .expect("send");
        read_until(&mut c, "d ").await;
    });
    std::thread::sleep(Duration::from_millis(500));
    let at_rest = rss(pid);

    let t0 = Instant::now();
    let mut conns: Vec<Conn> = rt.block_on(async {
        let limit = Arc::new(tokio::sync::Semaphore::new(OPENING_AT_ONCE));
        let tasks: Vec<_> = (0..sessions)
            .map(|_| {
                let (limit, tls) = (limit.clone(), tls.clone());
                tokio::spawn(async move {
                    let _slot = limit.acquire_owned().await.expect("semaphore");
                    idling(port, tls).await
                })
            })
            .collect();
        let mut conns = Vec::new();
        for t in tasks {
            conns.push(t.await.expect("session task"));
        }
        conns
    });
    let opened = t0.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let with_sessions = rss(pid);
    let peak = proc_status_bytes(pid, "VmHWM");

    // Alive: new mail reaches every session in IDLE.
    let t1 = Instant::now();
    dovecot.deliver_new(
        USER,
        b"From: bob@example.org\r\nSubject: second\r\n\r\nhello again\r\n",
    );
    conns = rt.block_on(async {
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|mut c| {
                tokio::spawn(async move {
                    let seen = read_until(&mut c, "* 2 EXISTS").await;
                    assert!(seen.contains("* 2 EXISTS"));
                    c
                })
            })
            .collect();
        let mut conns = Vec::new();
        for t in tasks {
            conns.push(t.await.expect("every session sees the new message"));
        }
        conns
    });
    let notified = t1.elapsed();
    let after_mail = rss(pid);
    // Closed without LOGOUT: Dovecot's sessions past the inotify instance limit (128
    // per user by default) are slow to end an IDLE, and that is not sealpost's to wait for.
    drop(conns);
    std::thread::sleep(Duration::from_secs(2));
    let after_close = rss(pid);

    let above = with_sessions.saturating_sub(at_rest);
    println!(
        "{sessions} sessions opened (login, SELECT, IDLE; TLS both sides) in {}",
        secs(opened)
    );
    println!(
        "new mail seen as EXISTS by all {sessions} in {}",
        secs(notified)
    );
    println!("sealpost RSS:");
    println!("  at rest (after one session)           {}", mib(at_rest));
    println!(
        "  {sessions:>5} sessions in IDLE               {}",
        mib(with_sessions)
    );
    println!(
        "  after the new mail reached them all   {}",
        mib(after_mail)
    );
    println!("  peak (VmHWM)                          {}", mib(peak));
    println!(
        "  after all closed                      {}",
        mib(after_close)
    );
    println!(
        "  above rest: {} = {:.1} KiB per session (goal: <= 100 MB for 1,000: {})",
        mib(above),
        above as f64 / 1024.0 / sessions as f64,
        if above * 1000 <= GOAL_BYTES * sessions as u64 {
            "met"
        } else {
            "NOT met"
        }
    );
}
