//! IMAP soak: `cargo bench --bench imap_soak` (10 minutes; `SEALPOST_SOAK_SECS=n`).
//!
//! Many sessions use one mailbox with encrypted mail through sealpost (TLS on both
//! sides: implicit TLS from the clients, IMAPS to a real Dovecot) for a long time:
//! - fetchers read random messages whole (each checked: a plain one byte for byte, an
//!   encrypted one decrypted), flag and unflag them, and log out and in again now and
//!   then;
//! - idlers sit in IDLE, and on every new message end it, read the message and idle
//!   again;
//! - new mail, plain and encrypted by turns, arrives every few seconds.
//!
//! Passes when no command fails and no check fails, every idler saw every new message,
//! and sealpost's resident memory (sampled every second) stays flat once the first
//! fifth of the run is over. It prints what was done and the memory over the run.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use common::dovecot::Dovecot;
use common::imapclients::RawImap;
use common::proxy::ProxyOptions;
use common::{gpg_encrypt, TestCa};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{describe_binary, mib, proc_status_bytes, secs, text_body, BenchProxy, Rng};

const USER: &str = "alice@example.com";
const PASS: &str = "alicepw";
const FETCHERS: usize = 6;
const IDLERS: usize = 16;
/// Messages in INBOX at the start: half plain, half PGP/MIME to alice.
const CORPUS: usize = 60;
const NEW_MAIL_EVERY: Duration = Duration::from_secs(5);
/// Allowed growth of RSS after the first fifth of the run.
const FLAT_BYTES: u64 = 32 * 1024 * 1024;

/// What a FETCH of the message must contain: the whole message if plain, a line of
/// its plaintext if encrypted.
#[derive(Clone)]
struct Expect {
    needle: Vec<u8>,
}

fn plain_message(i: usize, rng: &mut Rng) -> Vec<u8> {
    let size = 4000 + rng.below(20_000);
    format!(
        "From: bob@example.org\r\nTo: alice@example.com\r\nSubject: soak plain {i}\r\nMessage-ID: <soak-p{i}@example.org>\r\nDate: Mon, 07 Dec 2026 10:00:00 +0000\r\n\r\n{}",
        text_body(rng, size)
    )
    .into_bytes()
}

fn encrypted_message(i: usize, rng: &mut Rng) -> (Vec<u8>, Vec<u8>) {
    let marker = format!("soak secret number {i} inside");
    let size = 4000 + rng.below(20_000);
    let inner = format!(
        "Content-Type: text/plain; charset=utf-8\r\n\r\n{marker}\r\n{}",
        text_body(rng, size)
    );
    let armored = gpg_encrypt(Some("bob"), &["alice"], inner.as_bytes(), true);
    let mut m = format!(
        "From: bob@example.org\r\nTo: alice@example.com\r\nSubject: ...\r\nMessage-ID: <soak-e{i}@example.org>\r\nDate: Mon, 07 Dec 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    m.extend_from_slice(&sealpost::mime::to_crlf(&armored));
    m.extend_from_slice(b"\r\n--b--\r\n");
    (m, marker.into_bytes())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The UIDs and what each must show, shared with the new mail as it arrives. A message
/// is known just before it is delivered (an idler woken by it finds it here); fetchers
/// pick among the first `ready` only, those delivered.
type Known = Arc<Mutex<Vec<(u32, Expect)>>>;

#[derive(Default)]
struct Counts {
    fetches: AtomicU64,
    stores: AtomicU64,
    logins: AtomicU64,
    idle_wakeups: AtomicU64,
}

fn login(port: u16, ca: &TestCa, counts: &Counts) -> RawImap {
    let mut c = RawImap::connect_login(port, "tls", Some(&ca.ca_pem), USER, PASS);
    counts.logins.fetch_add(1, Ordering::Relaxed);
    c.command_ok("SELECT INBOX");
    c
}

fn fetcher(
    seed: u64,
    port: u16,
    ca: &'static TestCa,
    known: Known,
    ready: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
) {
    let mut rng = Rng::new(seed);
    let mut c = login(port, ca, &counts);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let (uid, expect) = {
            let k = known.lock().unwrap();
            k[rng.below(ready.load(Ordering::SeqCst))].clone()
        };
        let mut r = c.command(&format!("UID FETCH {uid} (FLAGS BODY.PEEK[])"));
        if r.is_ok() && !contains(&r.untagged, &expect.needle) {
            // New mail this session has not seen yet (the FETCH names no such UID, only
            // other sessions' flag changes): a NOOP makes the server look.
            c.command_ok("NOOP");
            r = c.command(&format!("UID FETCH {uid} (FLAGS BODY.PEEK[])"));
        }
        assert!(
            r.is_ok(),
            "UID FETCH {uid}: {}\n{}",
            r.tagged_text(),
            r.untagged_text()
        );
        assert!(
            contains(&r.untagged, &expect.needle),
            "UID FETCH {uid} did not show the message: {}",
            r.untagged_text()
        );
        counts.fetches.fetch_add(1, Ordering::Relaxed);
        if n.is_multiple_of(5) {
            c.command_ok(&format!("UID STORE {uid} +FLAGS.SILENT (\\Flagged)"));
            c.command_ok(&format!("UID STORE {uid} -FLAGS.SILENT (\\Flagged)"));
            counts.stores.fetch_add(2, Ordering::Relaxed);
        }
        if n.is_multiple_of(40) {
            c.logout();
            c = login(port, ca, &counts);
        }
    }
    c.logout();
}

fn idler(port: u16, ca: &'static TestCa, known: Known, stop: Arc<AtomicBool>, counts: Arc<Counts>) {
    let mut c = login(port, ca, &counts);
    while !stop.load(Ordering::Relaxed) {
        let (tag, _) = c.idle_start();
        // New mail comes every NEW_MAIL_EVERY; the run's end too.
        let got = c.idle_wait(" EXISTS", NEW_MAIL_EVERY * 6);
        assert!(contains(&got, b"EXISTS"));
        c.idle_done(&tag);
        counts.idle_wakeups.fetch_add(1, Ordering::Relaxed);
        let (uid, expect) = known.lock().unwrap().last().unwrap().clone();
        let r = c.command(&format!("UID FETCH {uid} (BODY.PEEK[])"));
        assert!(r.is_ok(), "UID FETCH {uid} after IDLE: {}", r.tagged_text());
        // The newest UID known may still be on its way into `known`, or not yet
        // announced to this session: a server answers a UID FETCH only for messages
        // announced before it, and announces the new one with it (`* n EXISTS`).
        // Other sessions' flag changes may come along. Any answer for the UID must show
        // the message.
        let answered = contains(&r.untagged, format!("UID {uid} ").as_bytes())
            || contains(&r.untagged, format!("UID {uid})").as_bytes());
        let announced_now = contains(&r.untagged, b" EXISTS\r\n");
        assert!(
            contains(&r.untagged, &expect.needle)
                || (!answered && (r.untagged.is_empty() || announced_now)),
            "UID FETCH {uid} did not show the message: {}",
            r.untagged_text()
        );
        counts.fetches.fetch_add(1, Ordering::Relaxed);
    }
    c.logout();
}

fn main() {
    let secs_total: u64 = std::env::var("SEALPOST_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let bin = support::sealpost_binary();
    println!("=== sealpost IMAP soak ({secs_total} s) ===");
    println!("sealpost binary: {}", describe_binary(&bin));
    let ca = TestCa::shared();
    let dovecot = Dovecot::start_with(
        ca,
        &[(USER, PASS)],
        "protocol imap {\n  mail_max_userip_connections = 200\n}\nmailbox_idle_check_interval = 1 secs\n",
    );
    let mut rng = Rng::new(20261207);
    let mut expects = Vec::new();
    for i in 0..CORPUS {
        if i % 2 == 0 {
            let m = plain_message(i, &mut rng);
            dovecot.deliver_new(USER, &m);
            expects.push(Expect { needle: m });
        } else {
            let (m, marker) = encrypted_message(i, &mut rng);
            dovecot.deliver_new(USER, &m);
            expects.push(Expect { needle: marker });
        }
    }
    let uids = dovecot.uids(USER, PASS, "INBOX");
    assert_eq!(uids.len(), CORPUS);
    let known: Known = Arc::new(Mutex::new(uids.into_iter().zip(expects).collect()));

    let mut opts = ProxyOptions::new(1);
    opts.imap_upstream = Some((dovecot.imaps_port, "tls"));
    opts.alice_login = USER.into();
    // As configured by default (new logins select INBOX again and again).
    opts.classify_on_select = true;
    let proxy = BenchProxy::start(&bin, ca, &opts);
    let pid = proxy.pid();
    let port = proxy.imaps_port;
    println!(
        "workload: {FETCHERS} fetching sessions (random whole messages, checked; flags set and \
         cleared; a new login every 40 fetches), {IDLERS} sessions in IDLE (each reads every \
         new message), {CORPUS} messages at the start (half PGP/MIME), new mail every {}",
        secs(NEW_MAIL_EVERY)
    );

    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicUsize::new(CORPUS));
    let counts = Arc::new(Counts::default());
    let mut threads = Vec::new();
    for i in 0..FETCHERS {
        let (known, ready, stop, counts) =
            (known.clone(), ready.clone(), stop.clone(), counts.clone());
        threads.push(std::thread::spawn(move || {
            fetcher(i as u64 + 1, port, ca, known, ready, stop, counts)
        }));
    }
    for _ in 0..IDLERS {
        let (known, stop, counts) = (known.clone(), stop.clone(), counts.clone());
        threads.push(std::thread::spawn(move || {
            idler(port, ca, known, stop, counts)
        }));
    }

    let started = Instant::now();
    let end = started + Duration::from_secs(secs_total);
    let mut samples: Vec<(Duration, u64)> = Vec::new();
    let mut next_mail = started + NEW_MAIL_EVERY;
    let mut delivered = 0usize;
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs(1));
        samples.push((started.elapsed(), proc_status_bytes(pid, "VmRSS")));
        if threads.iter().any(|t| t.is_finished()) {
            // A session failed (its panic is printed): stop and report.
            break;
        }
        if Instant::now() >= next_mail {
            next_mail += NEW_MAIL_EVERY;
            let i = CORPUS + delivered;
            let (m, expect) = if delivered.is_multiple_of(2) {
                let m = plain_message(i, &mut rng);
                (m.clone(), Expect { needle: m })
            } else {
                let (m, marker) = encrypted_message(i, &mut rng);
                (m, Expect { needle: marker })
            };
            // Known before it arrives, so an idler woken by it finds it.
            {
                let mut k = known.lock().unwrap();
                let uid = k.last().unwrap().0 + 1;
                k.push((uid, expect));
            }
            dovecot.deliver_new(USER, &m);
            delivered += 1;
            ready.store(CORPUS + delivered, Ordering::SeqCst);
        }
    }
    stop.store(true, Ordering::SeqCst);
    // Wakes the idlers for the last time.
    dovecot.deliver_new(
        USER,
        b"From: bob@example.org\r\nSubject: the end\r\n\r\nthe end\r\n",
    );
    {
        let mut k = known.lock().unwrap();
        let uid = k.last().unwrap().0 + 1;
        k.push((
            uid,
            Expect {
                needle: b"the end".to_vec(),
            },
        ));
    }
    let mut failed = 0;
    for t in threads {
        if t.join().is_err() {
            failed += 1;
        }
    }
    let ran = started.elapsed();
    let c = &counts;
    println!(
        "ran {}: {} whole-message fetches checked, {} flag changes, {} logins, {} IDLE wake-ups, {delivered} new messages",
        secs(ran),
        c.fetches.load(Ordering::Relaxed),
        c.stores.load(Ordering::Relaxed),
        c.logins.load(Ordering::Relaxed),
        c.idle_wakeups.load(Ordering::Relaxed)
    );
    assert_eq!(
        failed,
        0,
        "{failed} sessions failed (see above)\n{}",
        proxy.log()
    );
    let fifth = samples.len() / 5;
    let settled = samples[fifth..].iter().map(|s| s.1).min().unwrap_or(0);
    let top = samples[fifth..].iter().map(|s| s.1).max().unwrap_or(0);
    let at = |frac: usize| samples[(samples.len() * frac / 10).min(samples.len() - 1)].1;
    println!(
        "sealpost RSS: at 10% {}, 20% {}, 50% {}, 80% {}, end {}; after the first fifth min {} max {} (growth {})",
        mib(at(1)),
        mib(at(2)),
        mib(at(5)),
        mib(at(8)),
        mib(samples.last().map(|s| s.1).unwrap_or(0)),
        mib(settled),
        mib(top),
        mib(top - settled)
    );
    assert!(
        top - settled <= FLAT_BYTES,
        "sealpost's RSS grew by {} after the first fifth of the run",
        mib(top - settled)
    );
    let log = proxy.log();
    let errors = log.lines().filter(|l| l.contains("ERROR")).count();
    println!("sealpost logged {errors} ERROR lines");
    assert_eq!(errors, 0, "sealpost logged errors:\n{log}");
}
