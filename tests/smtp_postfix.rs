//! The SMTP relay against a real MTA: Postfix as the provider's submission server
//! (STARTTLS required, SASL through Dovecot's auth), delivering into a Maildir. The same
//! promises as against aiosmtpd (tests/smtp_relay.rs): what arrives is encrypted and
//! signed and decrypts with gpg, a recipient the provider refuses is reported before
//! anything is sent, and 2,000 messages over 20 parallel sessions arrive exactly once.

mod common;

use common::dovecot::Dovecot;
use common::postfix::Postfix;
use common::proxy::{Proxy, ProxyOptions};
use common::{gpg_decrypt, keyring, PySend, PySendMode, TestCa};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

struct Rig {
    postfix: Postfix,
    proxy: Proxy,
    _dovecot: Dovecot,
}

fn rig() -> Rig {
    let ca = TestCa::shared();
    let dovecot = Dovecot::start_with(ca, &[("sinkuser", "sinkpass")], Postfix::DOVECOT_CONF);
    let postfix = Postfix::start(ca, &dovecot);
    let mut opts = ProxyOptions::new(postfix.port);
    opts.upstream_security = "starttls";
    opts.import = vec![keyring().bob().pub_asc.clone()];
    let proxy = Proxy::start(ca, &opts);
    Rig {
        postfix,
        proxy,
        _dovecot: dovecot,
    }
}

fn message(to: &str, token: &str) -> Vec<u8> {
    format!(
        "From: Alice <alice@example.com>\r\nTo: {to}\r\nSubject: secret plans {token}\r\nDate: Mon, 07 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{token}@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe plans, {token}.\r\n"
    )
    .into_bytes()
}

fn armored(m: &[u8]) -> Vec<u8> {
    let t = String::from_utf8_lossy(m);
    let a = t.find("-----BEGIN PGP MESSAGE-----").expect("armor");
    let b = t[a..].find("-----END PGP MESSAGE-----").expect("armor end") + a + 25;
    t[a..b].as_bytes().to_vec()
}

#[test]
fn through_postfix_mail_is_encrypted_signed_and_plain_where_no_key() {
    let r = rig();
    let ca = TestCa::shared();
    let msg = message("Bob <bob@example.org>, dave@elsewhere.example", "pf1");
    let mut p = PySend::new(
        r.proxy.smtp_port,
        PySendMode::StartTls,
        "alice@example.com",
        &["bob@example.org", "dave@elsewhere.example"],
        &msg,
    );
    p.cafile = Some(&ca.ca_pem);
    p.login = Some(("sinkuser", "sinkpass"));
    let sent = common::py_sendmail(&p);
    assert!(sent.ok, "{sent:?}\n{}", r.proxy.log());
    let got = r.postfix.wait_for_messages(2, WAIT);
    assert_eq!(got.len(), 2, "{}", r.postfix.log());
    let (enc, plain): (Vec<_>, Vec<_>) = got
        .iter()
        .partition(|m| String::from_utf8_lossy(m).contains("multipart/encrypted"));
    assert_eq!((enc.len(), plain.len()), (1, 1));
    let enc_text = String::from_utf8_lossy(enc[0]);
    assert!(
        enc_text.contains("Delivered-To: bob@example.org"),
        "{enc_text}"
    );
    assert!(!enc_text.contains("The plans"), "plaintext reached Postfix");
    gpg_decrypt("bob", &armored(enc[0])).assert_decrypted_signed_by("alice");
    let plain_text = String::from_utf8_lossy(plain[0]);
    assert!(plain_text.contains("Delivered-To: dave@elsewhere.example"));
    assert!(plain_text.contains("The plans, pf1."));
}

#[test]
fn a_recipient_postfix_refuses_is_reported_with_nothing_sent() {
    let r = rig();
    let ca = TestCa::shared();
    let msg = message("bob@example.org, refused@example.org", "pf2");
    let mut p = PySend::new(
        r.proxy.smtp_port,
        PySendMode::StartTls,
        "alice@example.com",
        &["bob@example.org", "refused@example.org"],
        &msg,
    );
    p.cafile = Some(&ca.ca_pem);
    p.login = Some(("sinkuser", "sinkpass"));
    let sent = common::py_sendmail(&p);
    assert!(!sent.ok, "{sent:?}");
    assert!(format!("{sent:?}").contains("55"), "a 5xx: {sent:?}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(r.postfix.messages().is_empty(), "{}", r.postfix.log());
    // Postfix checks the password too (through Dovecot).
    let mut p = PySend::new(
        r.proxy.smtp_port,
        PySendMode::StartTls,
        "alice@example.com",
        &["bob@example.org"],
        &msg,
    );
    p.cafile = Some(&ca.ca_pem);
    p.login = Some(("sinkuser", "wrong"));
    let sent = common::py_sendmail(&p);
    assert!(!sent.ok && format!("{sent:?}").contains("535"), "{sent:?}");
}

/// One plain-text submission session on sealpost's loopback listener.
fn session(port: u16, msgs: &[(String, Vec<u8>)]) -> Result<(), String> {
    let w = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    w.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let mut r = BufReader::new(w.try_clone().unwrap());
    let mut w = w;
    let mut reply = |want: &str| -> Result<(), String> {
        loop {
            let mut line = String::new();
            r.read_line(&mut line).map_err(|e| e.to_string())?;
            if !line.starts_with(want) {
                return Err(format!("expected {want}, got {line:?}"));
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(());
            }
        }
    };
    reply("220")?;
    let auth = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(b"\0sinkuser\0sinkpass")
    };
    let mut cmd = |line: &str, want: &str, w: &mut TcpStream| -> Result<(), String> {
        w.write_all(format!("{line}\r\n").as_bytes())
            .map_err(|e| e.to_string())?;
        reply(want).map_err(|e| format!("{line}: {e}"))
    };
    cmd("EHLO load.test", "250", &mut w)?;
    cmd(&format!("AUTH PLAIN {auth}"), "235", &mut w)?;
    for (_, m) in msgs {
        cmd("MAIL FROM:<alice@example.com>", "250", &mut w)?;
        cmd("RCPT TO:<bob@example.org>", "250", &mut w)?;
        cmd("DATA", "354", &mut w)?;
        w.write_all(m).map_err(|e| e.to_string())?;
        cmd(".", "250", &mut w)?;
    }
    cmd("QUIT", "221", &mut w)?;
    Ok(())
}

fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// 20 parallel authenticated sessions, 2,000 messages of 20 KB to a recipient with a
/// key, through sealpost into Postfix: each arrives exactly once, no session sees an
/// error, and sealpost's memory stays flat across the run.
#[test]
fn twenty_sessions_two_thousand_messages_arrive_exactly_once() {
    const SESSIONS: usize = 20;
    const EACH: usize = 100;
    let r = rig();
    let body: String = (0..260)
        .map(|i| format!("line {i:03} of a twenty kilobyte message, padded out ....\r\n"))
        .collect();
    let all: Vec<(String, Vec<u8>)> = (0..SESSIONS * EACH)
        .map(|i| {
            let id = format!("load-{i:05}");
            let m = format!(
                "From: alice@example.com\r\nTo: bob@example.org\r\nSubject: load {i}\r\nMessage-ID: <{id}@example.com>\r\n\r\n{body}"
            );
            (id, m.into_bytes())
        })
        .collect();
    let pid = r.proxy.pid();
    let port = r.proxy.smtp_port;
    let started = Instant::now();
    let mut rss_samples = vec![rss(pid)];
    let handles: Vec<_> = all
        .chunks(EACH)
        .map(|chunk| {
            let chunk = chunk.to_vec();
            std::thread::spawn(move || session(port, &chunk))
        })
        .collect();
    while handles.iter().any(|h| !h.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        rss_samples.push(rss(pid));
    }
    for h in handles {
        h.join()
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}\n{}", r.proxy.log()));
    }
    let took = started.elapsed();
    let got = r
        .postfix
        .wait_for_messages(all.len(), Duration::from_secs(120));
    let mut count: HashMap<String, usize> = HashMap::new();
    for m in &got {
        let t = String::from_utf8_lossy(m);
        assert!(t.contains("multipart/encrypted"), "sent in the clear: {t}");
        let id = t
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: <"))
            .and_then(|l| l.strip_suffix("@example.com>"))
            .unwrap_or_else(|| panic!("no Message-ID in {t}"))
            .to_string();
        *count.entry(id).or_default() += 1;
    }
    for (id, _) in &all {
        assert_eq!(
            count.get(id),
            Some(&1),
            "{id} arrived {:?} times",
            count.get(id)
        );
    }
    assert_eq!(got.len(), all.len());
    let quarter = rss_samples.len() / 4;
    let settled = rss_samples[quarter..].iter().min().copied().unwrap_or(0);
    let top = rss_samples[quarter..].iter().max().copied().unwrap_or(0);
    eprintln!(
        "{} messages in {took:?}; sealpost RSS first {} KiB, after a quarter {settled}..{top} KiB",
        all.len(),
        rss_samples[0]
    );
    assert!(
        top <= settled + 32 * 1024,
        "sealpost's RSS grew from {settled} KiB to {top} KiB"
    );
}
