//! SEARCH benchmark: `cargo bench --bench imap_search`.
//!
//! A real Dovecot holds 10,000 messages (3-5 KiB of text) twice:
//!
//! * `INBOX`: every other message PGP/MIME, encrypted to alice with its Subject
//!   protected (RFC 9788; the outer Subject is `...`), the rest plain;
//! * `Clear`: the same 10,000 messages, all in plaintext, in the same order.
//!
//! Over IMAPS on both paths, one run measures
//!
//! * (i) building what SEARCH reads of the 5,000 encrypted messages: the first content
//!   SEARCH through a fresh sealpost less the same SEARCH once built, against `mbsync`
//!   pulling INBOX directly (median of 3);
//! * (ii) `UID SEARCH TEXT word` and `UID SEARCH SUBJECT word` through sealpost once
//!   built, against the same searches at Dovecot over `Clear` (medians of 5,
//!   interleaved); the answers must be equal (checked);
//! * (iii) sealpost's memory: peak resident size while building, above its size at
//!   rest after login;
//! * (iv) the background fill alone: a fresh sealpost, a client that selects INBOX and
//!   nothing else, until the index holds the 5,000 encrypted messages (from the fill's
//!   start, 2 s after the SELECT, as its log line reports it).
//!
//! (i) runs with the background fill on, as configured by default: the SELECT before
//! the search starts it, and the two share the work.
//!
//! The encrypted copies are made in-process with sealpost's own OpenPGP code (5,000
//! `gpg` runs would take minutes); tests/search.rs covers gpg-made mail.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use common::dovecot::Dovecot;
use common::imapclients::RawImap;
use common::proxy::ProxyOptions;
use common::{keyring, TestCa};
use sequoia_openpgp::parse::Parse;
use support::{
    describe_binary, mbsync_pull_timed, median, mib, proc_status_bytes, secs, text_body,
    BenchProxy, Rng,
};

const USER: &str = "alice@example.com";
const PASS: &str = "alicepw";
const TOTAL: usize = 10_000;
const ROUNDS: usize = 5;
/// The search that builds (the first content search through a fresh sealpost).
const FIRST_SEARCH: &str = "UID SEARCH TEXT zanzibar";
/// Rare words planted in bodies and subjects, with how many messages get each.
const RARE: &[(&str, usize)] = &[("zanzibar", 40), ("quixotic", 200)];
const SUBJECT_WORDS: &[&str] = &[
    "invoice", "meeting", "offer", "report", "travel", "contract",
];

fn date(i: usize) -> String {
    let day = 1 + i % 28;
    let hour = i % 24;
    format!("Mon, {day:02} Nov 2026 {hour:02}:{:02}:00 +0000", i % 60)
}

/// Message `i` in plaintext: a Subject of two known words and a text body, with rare
/// words planted in some.
fn plain_message(i: usize, rng: &mut Rng) -> Vec<u8> {
    let mut subject = format!(
        "{} {} {i}",
        rng.pick(SUBJECT_WORDS),
        rng.pick(SUBJECT_WORDS)
    );
    let size = 3000 + rng.below(2000);
    let mut body = text_body(rng, size);
    for (word, n) in RARE {
        if i % (TOTAL / n) == 7 {
            body.push_str(&format!("\r\nAbout {word} again.\r\n"));
        }
        if i % (TOTAL / n) == 11 {
            subject.push_str(&format!(" {word}"));
        }
    }
    format!(
        "From: Bob <bob@example.org>\r\nTo: Alice <alice@example.com>\r\nSubject: {subject}\r\nDate: {}\r\nMessage-ID: <s{i}@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{body}\r\n",
        date(i)
    )
    .into_bytes()
}

fn lf(data: &[u8]) -> Vec<u8> {
    data.iter().copied().filter(|&b| b != b'\r').collect()
}

/// Encrypts the odd messages to alice, on every core.
fn encrypt_odd(messages: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let cert = sequoia_openpgp::Cert::from_file(&keyring().alice().pub_asc).expect("alice's cert");
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = messages.len().div_ceil(cores);
    std::thread::scope(|s| {
        let handles: Vec<_> = messages
            .chunks(chunk)
            .enumerate()
            .map(|(part, msgs)| {
                let cert = cert.clone();
                s.spawn(move || {
                    msgs.iter()
                        .enumerate()
                        .map(|(k, m)| {
                            if (part * chunk + k) % 2 == 1 {
                                sealpost::pgp::encrypt_message(
                                    &sealpost::pgp::EncryptRequest {
                                        raw: m,
                                        recipients: std::slice::from_ref(&cert),
                                        signer: None,
                                        protect_headers: true,
                                        boundary: "enc-b",
                                        extra_outer: b"",
                                    },
                                    &[],
                                )
                                .expect("encrypt")
                            } else {
                                m.clone()
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("encryption thread"))
            .collect()
    })
}

fn uids(raw: &[u8]) -> Vec<u32> {
    let text = String::from_utf8_lossy(raw);
    let mut out: Vec<u32> = text
        .lines()
        .filter_map(|l| l.strip_prefix("* SEARCH"))
        .flat_map(|l| l.split_whitespace().filter_map(|n| n.parse().ok()))
        .collect();
    out.sort_unstable();
    out
}

fn timed_search(c: &mut RawImap, command: &str) -> (Duration, Vec<u32>) {
    let t0 = Instant::now();
    let raw = c.command_ok(command);
    (t0.elapsed(), uids(&raw))
}

fn main() {
    let bin = support::sealpost_binary();
    println!("=== sealpost SEARCH benchmark ({TOTAL} messages, half PGP/MIME) ===");
    println!("sealpost binary: {}", describe_binary(&bin));
    let ca = TestCa::shared();
    let cafile = ca.ca_pem.clone();

    // --- corpus
    let t0 = Instant::now();
    let mut rng = Rng::new(9_001);
    let plain: Vec<Vec<u8>> = (0..TOTAL).map(|i| plain_message(i, &mut rng)).collect();
    let stored = encrypt_odd(&plain);
    println!(
        "corpus: {TOTAL} messages ({:.1} MiB in plaintext), {} encrypted in-process; made in {}",
        plain.iter().map(Vec::len).sum::<usize>() as f64 / 1048576.0,
        TOTAL / 2,
        secs(t0.elapsed())
    );

    // --- Dovecot, filled through its Maildir
    let dovecot = Dovecot::start(ca, &[(USER, PASS)]);
    let t0 = Instant::now();
    for (p, s) in plain.iter().zip(&stored) {
        dovecot.deliver_new(USER, &lf(s));
        dovecot.deliver_new_to(USER, "Clear", &lf(p));
    }
    for mailbox in ["INBOX", "Clear"] {
        assert_eq!(dovecot.uids(USER, PASS, mailbox).len(), TOTAL, "{mailbox}");
    }
    println!(
        "Dovecot: INBOX and Clear filled and indexed in {}",
        secs(t0.elapsed())
    );
    drop(plain);
    drop(stored);

    let mut opts = ProxyOptions::new(1);
    opts.imap_upstream = Some((dovecot.imaps_port, "tls"));
    opts.alice_login = USER.into();
    // As configured by default.
    opts.search_index_fill = true;
    opts.classify_on_select = true;

    // --- (i) the first content search builds the Docs; mbsync pulls INBOX directly
    // (The median of 3 pulls after one untimed: a single pull's time swings.)
    let _warmup = mbsync_pull_timed(dovecot.imaps_port, &cafile, USER, PASS, "INBOX");
    let pulls: Vec<Duration> = (0..3)
        .map(|_| {
            let pull = mbsync_pull_timed(dovecot.imaps_port, &cafile, USER, PASS, "INBOX");
            assert_eq!(pull.messages.len(), TOTAL, "{}", pull.output);
            pull.elapsed
        })
        .collect();
    let pull = median(&pulls);
    let proxy = BenchProxy::start(&bin, ca, &opts);
    let mut through = RawImap::connect_login(proxy.imaps_port, "tls", Some(&cafile), USER, PASS);
    through.command_ok("SELECT INBOX");
    let rest = proc_status_bytes(proxy.pid(), "VmRSS");
    let (build, _) = timed_search(&mut through, FIRST_SEARCH);
    let peak = proc_status_bytes(proxy.pid(), "VmHWM");

    // --- (ii) searches, interleaved
    let mut direct = RawImap::connect_login(dovecot.imaps_port, "tls", Some(&cafile), USER, PASS);
    direct.command_ok("SELECT Clear");
    let queries = [
        "UID SEARCH TEXT zanzibar",
        "UID SEARCH TEXT quixotic",
        "UID SEARCH SUBJECT zanzibar",
        "UID SEARCH SUBJECT invoice",
    ];
    println!(
        "\n{:<32} {:>12} {:>12} {:>8}  hits",
        "query", "sealpost", "Dovecot", "ratio"
    );
    let mut ratios = Vec::new();
    let mut first_search_warm = None;
    for q in queries {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let (mut hits_a, mut hits_b) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let (t, h) = timed_search(&mut through, q);
            a.push(t);
            hits_a = h;
            let (t, h) = timed_search(&mut direct, q);
            b.push(t);
            hits_b = h;
        }
        assert_eq!(
            hits_a, hits_b,
            "{q}: sealpost and Dovecot over the plaintext disagree"
        );
        assert!(!hits_a.is_empty(), "{q} found nothing");
        if q == FIRST_SEARCH {
            first_search_warm = Some(median(&a));
        }
        let ratio = median(&a).as_secs_f64() / median(&b).as_secs_f64();
        ratios.push(ratio);
        println!(
            "{q:<32} {:>10.1}ms {:>10.1}ms {ratio:>8.2}  {}",
            median(&a).as_secs_f64() * 1e3,
            median(&b).as_secs_f64() * 1e3,
            hits_a.len()
        );
    }
    // Where sealpost's time goes: its own log of the last searches (total, and the part
    // spent waiting for upstream's answer to the rewritten command).
    for line in proxy
        .log()
        .lines()
        .filter(|l| l.contains("SEARCH answered through the view"))
        .rev()
        .take(2)
    {
        let fields: Vec<&str> = line
            .split_whitespace()
            .filter(|w| {
                w.starts_with("total_ms=")
                    || w.starts_with("final_ms=")
                    || w.starts_with("decrypted=")
            })
            .collect();
        println!("  sealpost log: {}", fields.join(" "));
    }
    // --- (iv) the background fill alone: a fresh sealpost, a client that only selects
    let filling = BenchProxy::start(&bin, ca, &opts);
    let mut selecting =
        RawImap::connect_login(filling.imaps_port, "tls", Some(&cafile), USER, PASS);
    let t0 = Instant::now();
    selecting.command_ok("SELECT INBOX");
    let deadline = t0 + Duration::from_secs(300);
    // The fill starts 2 s after the SELECT (see `imap::fill`); its own log line says how
    // long it took from then, its login and classification included.
    let fill = loop {
        let log = filling.log();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("search index filled in the background"))
        {
            let seconds: f64 = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("seconds="))
                .and_then(|v| v.parse().ok())
                .expect("seconds= in the fill's log line");
            break Duration::from_secs_f64(seconds);
        }
        assert!(
            Instant::now() < deadline,
            "no background fill within 300 s:\n{}",
            filling.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(filling);

    let worst = ratios.iter().copied().fold(0.0, f64::max);
    println!("\nsummary (TLS on both sides):");
    // The first search both builds and answers; answering alone is what the same
    // search costs once built (its median from (ii)), mostly the provider's own scan of
    // the plain messages.
    let answering = first_search_warm.unwrap_or_default();
    let building = build.saturating_sub(answering);
    println!(
        "  (i)   building for {} encrypted messages: first search {} - the same search once built {} = {} ; mbsync pull of INBOX direct: {} ; ratio {:.2} (goal <= 3; first search / pull {:.2})",
        TOTAL / 2,
        secs(build),
        secs(answering),
        secs(building),
        secs(pull),
        building.as_secs_f64() / pull.as_secs_f64(),
        build.as_secs_f64() / pull.as_secs_f64()
    );
    println!("  (ii)  search through sealpost / Dovecot over the plaintext: worst {worst:.2} (goal <= 2)");
    println!(
        "  (iii) memory while building: peak {} above {} at rest = {} (goal <= 200 MiB)",
        mib(peak),
        mib(rest),
        mib(peak.saturating_sub(rest))
    );
    println!(
        "  (iv)  the background fill alone (one core) after SELECT: {} ; ÷ mbsync pull {:.2}",
        secs(fill),
        fill.as_secs_f64() / pull.as_secs_f64()
    );
}
