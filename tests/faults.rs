//! Faults at every protocol step. A relay between sealpost and its upstream (the SMTP
//! sink, Dovecot) cuts, stalls or slows the connection at named steps and at byte
//! offsets; a client that gives up halfway plays the other side. For each fault:
//! - the client never gets `250` / `OK` for something upstream did not complete;
//! - it gets its `4xx` / `NO` / `BYE` (or the connection closes) within the timeouts;
//! - nothing is left behind: sessions, upstream connections and file descriptors return
//!   to where they were, and other sessions are served meanwhile.

mod common;

use common::dovecot::Dovecot;
use common::fault::{Action, Dir, FaultRelay, Plan, Trigger};
use common::prometheus::{parse_exposition, scrape, value};
use common::proxy::{Proxy, ProxyOptions};
use common::{keyring, Sink, SinkConfig, SinkMode, TestCa};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// `[limits]` for these tests: short, so that a stall is answered within seconds.
const UPSTREAM_TIMEOUT: u64 = 2;
const IDLE_TIMEOUT: u64 = 2;
const WAIT: Duration = Duration::from_secs(20);

fn limits() -> String {
    format!(
        "[limits]\nupstream_timeout_secs = {UPSTREAM_TIMEOUT}\nimap_reply_timeout_secs = {UPSTREAM_TIMEOUT}\nidle_timeout_secs = {IDLE_TIMEOUT}\n[metrics]\nlisten = \"127.0.0.1:0\"\n"
    )
}

/// File descriptors the process holds.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn open_sessions(proxy: &Proxy, protocol: &str) -> f64 {
    let (code, body) = scrape(proxy.metrics_port());
    assert_eq!(code, 200);
    value(
        &parse_exposition(&body),
        &format!("sealpost_connections_open{{protocol=\"{protocol}\"}}"),
    )
}

/// Waits until sealpost serves no session of `protocol`, the relay carries no
/// connection and the process holds no more descriptors than `base_fds` (+2 for a
/// connection of the metrics scrape in flight).
fn assert_nothing_left(proxy: &Proxy, relay: &FaultRelay, protocol: &str, base_fds: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let sessions = open_sessions(proxy, protocol);
        let now = fds(proxy.pid());
        if sessions == 0.0 && relay.open() == 0 && now <= base_fds + 2 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind after the faults: {sessions} {protocol} sessions, {} relayed upstream connections, {now} descriptors (at start {base_fds})\n{}",
            relay.open(),
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------
// SMTP

/// A plain-text SMTP client on sealpost's loopback listener (AUTH in the clear is
/// allowed there), with the replies it got.
struct Smtp {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

/// A reply with its text, or the connection closed with what came before. The texts are
/// read through `Debug`, in assertion messages.
#[derive(Debug)]
#[allow(dead_code)]
enum Got {
    Reply(u16, String),
    Closed(String),
}

impl Got {
    fn code(&self) -> Option<u16> {
        match self {
            Got::Reply(c, _) => Some(*c),
            Got::Closed(_) => None,
        }
    }
}

impl Smtp {
    fn connect(port: u16) -> Smtp {
        let w = TcpStream::connect(("127.0.0.1", port)).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let r = BufReader::new(w.try_clone().unwrap());
        let mut c = Smtp { r, w };
        let g = c.reply();
        assert_eq!(g.code(), Some(220), "{g:?}");
        c
    }

    fn reply(&mut self) -> Got {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            match self.r.read_line(&mut line) {
                Ok(0) => return Got::Closed(text),
                Err(e) => return Got::Closed(format!("{text}{e}")),
                Ok(_) => {}
            }
            text.push_str(&line);
            if line.len() >= 4 && line.as_bytes()[3] == b' ' {
                return Got::Reply(line[..3].parse().unwrap_or(0), text);
            }
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return Got::Reply(0, text);
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> bool {
        self.w.write_all(bytes).is_ok()
    }

    fn cmd(&mut self, line: &str) -> Got {
        if !self.send(format!("{line}\r\n").as_bytes()) {
            return Got::Closed("write failed".into());
        }
        self.reply()
    }
}

/// The steps of one submission, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Ehlo,
    Auth,
    Mail,
    Rcpt1,
    Rcpt2,
    Data,
    Body,
    Dot,
}

/// What one submission ended with: the step whose reply was not the expected success
/// (None: every step succeeded, the message was accepted), the reply, and how long the
/// slowest reply took.
#[derive(Debug)]
struct Outcome {
    failed_at: Option<Step>,
    got: Option<Got>,
    slowest: Duration,
}

const PLAIN_RCPT: &str = "dave@elsewhere.example";
const KEYED_RCPT: &str = "bob@example.org";

fn message(token: &str) -> Vec<u8> {
    let mut m = format!(
        "From: Alice <alice@example.com>\r\nTo: {KEYED_RCPT}, {PLAIN_RCPT}\r\nSubject: fault {token}\r\nMessage-ID: <{token}@example.com>\r\nDate: Mon, 07 Dec 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    .into_bytes();
    for i in 0..300 {
        m.extend_from_slice(
            format!("line {i:03} of the message with token {token}.\r\n").as_bytes(),
        );
    }
    m
}

/// Submits one message (two recipients: one with a key, one without, so two copies go
/// upstream), stopping at the first reply that is not the step's success.
fn submit(port: u16, token: &str) -> Outcome {
    let mut c = Smtp::connect(port);
    let mut slowest = Duration::ZERO;
    let auth = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(b"\0sinkuser\0sinkpass")
    };
    let msg = message(token);
    let steps: [(Step, u16); 8] = [
        (Step::Ehlo, 250),
        (Step::Auth, 235),
        (Step::Mail, 250),
        (Step::Rcpt1, 250),
        (Step::Rcpt2, 250),
        (Step::Data, 354),
        (Step::Body, 0),
        (Step::Dot, 250),
    ];
    for (step, want) in steps {
        let started = Instant::now();
        let got = match step {
            Step::Ehlo => c.cmd("EHLO client.test"),
            Step::Auth => c.cmd(&format!("AUTH PLAIN {auth}")),
            Step::Mail => c.cmd("MAIL FROM:<alice@example.com>"),
            Step::Rcpt1 => c.cmd(&format!("RCPT TO:<{KEYED_RCPT}>")),
            Step::Rcpt2 => c.cmd(&format!("RCPT TO:<{PLAIN_RCPT}>")),
            Step::Data => c.cmd("DATA"),
            Step::Body => {
                c.send(&msg);
                continue;
            }
            Step::Dot => {
                c.send(b".\r\n");
                c.reply()
            }
        };
        slowest = slowest.max(started.elapsed());
        if got.code() != Some(want) {
            return Outcome {
                failed_at: Some(step),
                got: Some(got),
                slowest,
            };
        }
    }
    let _ = c.cmd("QUIT");
    Outcome {
        failed_at: None,
        got: None,
        slowest,
    }
}

/// How many copies of the message with `token` the sink holds (the encrypted copy
/// carries it in its Message-ID, the plain one throughout).
fn delivered(sink: &Sink, token: &str) -> usize {
    // Its envelope file is written last: a message without one is not there yet.
    sink.messages()
        .iter()
        .filter(|m| m.text().contains(token))
        .count()
}

struct SmtpRig {
    sink: Sink,
    relay: FaultRelay,
    proxy: Proxy,
}

fn smtp_rig() -> SmtpRig {
    let ca = TestCa::shared();
    let sink = Sink::start_with(
        ca,
        SinkConfig {
            mode: SinkMode::Plain,
            ..SinkConfig::default()
        },
    );
    let relay = FaultRelay::start(sink.port);
    let mut opts = ProxyOptions::new(relay.port);
    opts.upstream_security = "plain";
    opts.import = vec![keyring().person("bob").pub_asc.clone()];
    opts.extra = limits();
    let proxy = Proxy::start(ca, &opts);
    SmtpRig { sink, relay, proxy }
}

/// Checks one faulted submission: no `250` for a message upstream did not take, and a
/// refused or cut submission delivered nothing when the fault came before the final dot.
fn judge(rig: &SmtpRig, what: &str, token: &str, out: &Outcome, fault_before_dot: bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut n = delivered(&rig.sink, token);
    if out.failed_at.is_none() {
        while n < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            n = delivered(&rig.sink, token);
        }
        assert_eq!(
            n,
            2,
            "{what}: the client got 250 but the sink holds {n} of 2 copies\n{}",
            rig.proxy.log()
        );
    } else {
        let code = out.got.as_ref().and_then(Got::code);
        if let Some(code) = code {
            assert!(
                (400..600).contains(&code),
                "{what}: {out:?} is neither success nor a 4xx/5xx"
            );
        }
        if fault_before_dot {
            assert_eq!(
                n,
                0,
                "{what}: refused ({out:?}) yet the sink holds a copy\n{}",
                rig.proxy.log()
            );
        }
    }
    let bound = Duration::from_secs(UPSTREAM_TIMEOUT * 3 + 2);
    assert!(
        out.slowest <= bound,
        "{what}: a reply took {:?} (timeouts {UPSTREAM_TIMEOUT}s)",
        out.slowest
    );
}

/// Upstream cut or its replies lost at every named step and at byte offsets all
/// through the conversation, in both directions.
#[test]
fn smtp_upstream_cut_at_every_step_and_offset() {
    let rig = smtp_rig();
    // Warm up (keys, TLS-free path) and take the baseline.
    let out = submit(rig.proxy.smtp_port, "tok-warmup");
    judge(&rig, "warm-up", "tok-warmup", &out, false);
    assert!(out.failed_at.is_none(), "{out:?}\n{}", rig.proxy.log());
    assert_nothing_left(&rig.proxy, &rig.relay, "smtp", usize::MAX / 2);
    let base_fds = fds(rig.proxy.pid());
    let base_rss = rss_kib(rig.proxy.pid());

    // Where sealpost's commands are cut: right after each command reached upstream, and
    // inside DATA, and after the final dot before upstream's reply.
    let mut plans: Vec<(String, Plan, bool)> = Vec::new();
    let to = |t: Trigger| Plan::new(Dir::ToTarget, t, Action::Cut);
    for (name, trig, before_dot) in [
        ("after EHLO", Trigger::after("EHLO "), true),
        ("after AUTH", Trigger::after("AUTH "), true),
        ("after MAIL", Trigger::after("MAIL FROM:"), true),
        ("after the first RCPT", Trigger::nth("RCPT TO:", 1), true),
        ("after the second RCPT", Trigger::nth("RCPT TO:", 2), true),
        ("after DATA", Trigger::after("DATA\r\n"), true),
        ("inside DATA", Trigger::after_plus("DATA\r\n", 4000), true),
        ("after the final dot", Trigger::after("\r\n.\r\n"), false),
    ] {
        plans.push((format!("upstream cut {name}"), to(trig), before_dot));
    }
    // Every 3rd byte of what sealpost writes before the message, every 5th of upstream's
    // replies.
    for off in (0..260).step_by(3) {
        plans.push((
            format!("upstream cut at byte {off} of sealpost's commands"),
            to(Trigger::Offset(off)),
            true,
        ));
    }
    for off in (0..420).step_by(5) {
        plans.push((
            format!("upstream cut at byte {off} of upstream's replies"),
            Plan::new(Dir::ToClient, Trigger::Offset(off), Action::Cut),
            // A reply cut after the message was taken still leaves the copy there.
            false,
        ));
    }
    let mut fired = 0;
    let mut refused = 0;
    for (i, (what, plan, before_dot)) in plans.iter().enumerate() {
        rig.relay.clear();
        // This fault hits the first upstream connection; a retry gets a clean one.
        rig.relay.push(plan.clone());
        let token = format!("cut{i:04}");
        let before = rig.relay.fired();
        let out = submit(rig.proxy.smtp_port, &token);
        let hit = rig.relay.fired() > before;
        fired += usize::from(hit);
        refused += usize::from(out.failed_at.is_some());
        // A fault in the first copy's transaction lands before the final dot of any copy
        // only for the command-side triggers: the offset ones may fall anywhere.
        judge(&rig, what, &token, &out, *before_dot && hit);
    }
    rig.relay.clear();
    eprintln!(
        "smtp faults: {} plans, {fired} fired, {refused} submissions refused",
        plans.len()
    );
    assert!(fired >= plans.len() * 3 / 4, "most faults must fire");
    assert!(refused > 0);

    // Still serves.
    let out = submit(rig.proxy.smtp_port, "tok-after");
    assert!(out.failed_at.is_none(), "{out:?}\n{}", rig.proxy.log());
    assert_nothing_left(&rig.proxy, &rig.relay, "smtp", base_fds);
    let rss = rss_kib(rig.proxy.pid());
    eprintln!("smtp faults: RSS {base_rss} KiB before, {rss} KiB after");
    assert!(
        rss < base_rss + 64 * 1024,
        "RSS grew from {base_rss} KiB to {rss} KiB over the faults"
    );
}

/// A stalled upstream (it stops reading or stops answering) at each step: the client
/// gets its answer within the upstream timeout, and another client is served meanwhile.
#[test]
fn smtp_upstream_stall_at_every_step_is_answered_in_time() {
    let rig = smtp_rig();
    let out = submit(rig.proxy.smtp_port, "tok-warmup");
    assert!(out.failed_at.is_none(), "{out:?}\n{}", rig.proxy.log());
    assert_nothing_left(&rig.proxy, &rig.relay, "smtp", usize::MAX / 2);
    let base_fds = fds(rig.proxy.pid());

    let stalls = [
        ("the greeting", Dir::ToClient, Trigger::Offset(0), true),
        ("EHLO", Dir::ToTarget, Trigger::after("EHLO "), true),
        ("AUTH", Dir::ToTarget, Trigger::after("AUTH "), true),
        ("MAIL", Dir::ToTarget, Trigger::after("MAIL FROM:"), true),
        (
            "the second RCPT",
            Dir::ToTarget,
            Trigger::nth("RCPT TO:", 2),
            true,
        ),
        (
            "DATA",
            Dir::ToTarget,
            Trigger::after_plus("DATA\r\n", 4000),
            true,
        ),
        (
            "the final reply",
            Dir::ToClient,
            Trigger::line("354"),
            false,
        ),
    ];
    for (i, (name, dir, trig, before_dot)) in stalls.into_iter().enumerate() {
        rig.relay.clear();
        rig.relay.push(Plan::new(dir, trig, Action::Stall));
        let token = format!("stall{i}");
        let port = rig.proxy.smtp_port;
        let t = token.clone();
        let fired = rig.relay.fired();
        let stalled = std::thread::spawn(move || submit(port, &t));
        let deadline = Instant::now() + WAIT;
        while rig.relay.fired() == fired && Instant::now() < deadline && !stalled.is_finished() {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(rig.relay.fired() > fired, "the stall of {name} never fired");
        // Another client, on a clean upstream connection, is served meanwhile.
        let other = submit(rig.proxy.smtp_port, &format!("other{i}"));
        assert!(
            other.failed_at.is_none(),
            "a stall of {name} hurt another session: {other:?}\n{}",
            rig.proxy.log()
        );
        let out = stalled.join().unwrap();
        judge(&rig, &format!("stall of {name}"), &token, &out, before_dot);
    }
    rig.relay.clear();
    assert_nothing_left(&rig.proxy, &rig.relay, "smtp", base_fds);
}

/// Upstream's replies slowed to a trickle: slow is not broken, the message goes through
/// once.
#[test]
fn smtp_slow_upstream_still_delivers_once() {
    let rig = smtp_rig();
    rig.relay.push(Plan::new(
        Dir::ToClient,
        Trigger::Offset(0),
        Action::Slow(Duration::from_millis(3)),
    ));
    let out = submit(rig.proxy.smtp_port, "tok-slow");
    assert!(out.failed_at.is_none(), "{out:?}\n{}", rig.proxy.log());
    judge(&rig, "slow upstream", "tok-slow", &out, false);
}

/// The client gives up at each step (closes, or goes silent past the idle timeout):
/// a message the client did not finish never reaches upstream, and nothing is left.
#[test]
fn smtp_client_gone_at_every_step_sends_nothing_half_done() {
    let rig = smtp_rig();
    let out = submit(rig.proxy.smtp_port, "tok-warmup");
    assert!(out.failed_at.is_none(), "{out:?}\n{}", rig.proxy.log());
    assert_nothing_left(&rig.proxy, &rig.relay, "smtp", usize::MAX / 2);
    let base_fds = fds(rig.proxy.pid());
    let auth = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(b"\0sinkuser\0sinkpass")
    };
    // Steps after which the client stops: 0 = after the greeting ... 7 = half the body.
    for silent in [false, true] {
        for stop in 0..=7 {
            let token = format!("gone{}{stop}", u8::from(silent));
            let msg = message(&token);
            let mut c = Smtp::connect(rig.proxy.smtp_port);
            let lines = [
                "EHLO client.test".to_string(),
                format!("AUTH PLAIN {auth}"),
                "MAIL FROM:<alice@example.com>".into(),
                format!("RCPT TO:<{KEYED_RCPT}>"),
                format!("RCPT TO:<{PLAIN_RCPT}>"),
                "DATA".into(),
            ];
            for line in lines.iter().take(stop.min(6)) {
                let _ = c.cmd(line);
            }
            if stop == 7 {
                // Half the message, then nothing: no final dot.
                c.send(&msg[..msg.len() / 2]);
            }
            if silent {
                // The idle timeout closes it (with a 421 first).
                let started = Instant::now();
                let got = c.reply();
                assert!(
                    started.elapsed() <= Duration::from_secs(IDLE_TIMEOUT + 3),
                    "a silent client was held {:?}",
                    started.elapsed()
                );
                assert!(
                    matches!(got, Got::Closed(_)) || got.code() == Some(421),
                    "{got:?}"
                );
            } else {
                drop(c);
            }
            std::thread::sleep(Duration::from_millis(100));
            assert_eq!(
                delivered(&rig.sink, &token),
                0,
                "a message the client never finished (stopped after step {stop}) went upstream\n{}",
                rig.proxy.log()
            );
        }
    }
    assert_nothing_left(&rig.proxy, &rig.relay, "smtp", base_fds);
    let out = submit(rig.proxy.smtp_port, "tok-after");
    assert!(out.failed_at.is_none(), "{out:?}\n{}", rig.proxy.log());
}

// ---------------------------------------------------------------------------------
// IMAP

const USER: &str = "alice@example.com";
const PASS: &str = "alicepw";

/// A plain-text IMAP client on sealpost's loopback listener that survives whatever
/// the server does: a command ends with its tagged reply, or with the connection gone.
struct Imap {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

/// How a command ended, with every byte received for it.
#[derive(Debug)]
enum Ended {
    Tagged(String, Vec<u8>),
    Gone(Vec<u8>),
}

impl Ended {
    fn ok(&self) -> bool {
        matches!(self, Ended::Tagged(s, _) if s == "OK")
    }
    /// How it ended, and the start of what came, for assertion messages.
    fn brief(&self) -> String {
        let (how, b) = match self {
            Ended::Tagged(s, b) => (s.as_str(), b),
            Ended::Gone(b) => ("gone", b),
        };
        let text = String::from_utf8_lossy(b);
        format!("{how}: {}", text.chars().take(300).collect::<String>())
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Ended::Tagged(_, b) | Ended::Gone(b) => b,
        }
    }
}

impl Imap {
    /// Connects and reads the greeting (None: the server closed instead).
    fn connect(port: u16) -> (Imap, Option<Vec<u8>>) {
        let w = TcpStream::connect(("127.0.0.1", port)).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut c = Imap {
            r: BufReader::new(w.try_clone().unwrap()),
            w,
        };
        let g = c.response().ok().filter(|g| g.starts_with(b"* OK"));
        (c, g)
    }

    /// One response: a line and the literals it announces.
    fn response(&mut self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let start = out.len();
            if self.r.read_until(b'\n', &mut out)? == 0 || !out.ends_with(b"\n") {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let line = &out[start..];
            let lit = line
                .strip_suffix(b"}\r\n")
                .and_then(|l| l.iter().rposition(|&b| b == b'{').map(|i| &l[i + 1..]))
                .and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok());
            match lit {
                Some(n) => {
                    let mut data = vec![0; n];
                    std::io::Read::read_exact(&mut self.r, &mut data)?;
                    out.extend_from_slice(&data);
                }
                None => return Ok(out),
            }
        }
    }

    fn until(&mut self, tag: &str) -> Ended {
        let mut all = Vec::new();
        loop {
            match self.response() {
                Ok(r) => {
                    all.extend_from_slice(&r);
                    if let Some(rest) = r.strip_prefix(format!("{tag} ").as_bytes()) {
                        let status = String::from_utf8_lossy(rest)
                            .split_whitespace()
                            .next()
                            .unwrap_or("")
                            .to_ascii_uppercase();
                        return Ended::Tagged(status, all);
                    }
                }
                Err(_) => return Ended::Gone(all),
            }
        }
    }

    fn cmd(&mut self, tag: &str, line: &str) -> Ended {
        if self
            .w
            .write_all(format!("{tag} {line}\r\n").as_bytes())
            .is_err()
        {
            return Ended::Gone(Vec::new());
        }
        self.until(tag)
    }

    fn login(&mut self) -> Ended {
        self.cmd("a1", &format!("LOGIN {USER} {PASS}"))
    }
}

struct ImapRig {
    dovecot: Dovecot,
    relay: FaultRelay,
    proxy: Proxy,
    /// (UID, what BODY[] must hold) of a plain and of an encrypted message.
    plain: (u32, Vec<u8>),
    encrypted: (u32, Vec<u8>),
}

fn imap_rig() -> ImapRig {
    let ca = TestCa::shared();
    let dovecot = Dovecot::start(ca, &[(USER, PASS)]);
    let mut plain = b"From: bob@example.org\r\nTo: alice@example.com\r\nSubject: plain\r\nMessage-ID: <plain@example.org>\r\n\r\n".to_vec();
    for i in 0..600 {
        plain.extend_from_slice(format!("plain line {i:04} for the fault tests\r\n").as_bytes());
    }
    let secret = "the encrypted token 7f3a";
    let enc = encrypted_for_alice(secret);
    dovecot.deliver_new(USER, &plain);
    dovecot.deliver_new(USER, &enc);
    let uids = dovecot.uids(USER, PASS, "INBOX");
    assert_eq!(uids.len(), 2);

    let relay = FaultRelay::start(dovecot.imap_port);
    let mut opts = ProxyOptions::new(1);
    opts.imap_upstream = Some((relay.port, "plain"));
    opts.alice_login = USER.into();
    opts.extra = limits();
    let proxy = Proxy::start(ca, &opts);
    ImapRig {
        dovecot,
        relay,
        proxy,
        plain: (uids[0], plain),
        encrypted: (uids[1], secret.as_bytes().to_vec()),
    }
}

/// A PGP/MIME message to alice (signed by bob) whose plaintext repeats `secret`.
fn encrypted_for_alice(secret: &str) -> Vec<u8> {
    let mut inner = b"Content-Type: text/plain; charset=utf-8\r\n\r\n".to_vec();
    for i in 0..400 {
        inner.extend_from_slice(format!("{secret} line {i:04}\r\n").as_bytes());
    }
    let armored = common::gpg_encrypt(Some("bob"), &["alice"], &inner, true);
    let mut enc = b"From: bob@example.org\r\nTo: alice@example.com\r\nSubject: ...\r\nMIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--b1\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
    enc.extend_from_slice(&sealpost::mime::to_crlf(&armored));
    enc.extend_from_slice(b"\r\n--b1--\r\n");
    enc
}

/// The tag sealpost gave upstream for the command whose line contains `word`, on relay
/// connection `conn`, and whether upstream's tagged OK for it reached sealpost.
fn upstream_said_ok(relay: &FaultRelay, conn: usize, word: &str) -> bool {
    let (up, down) = relay.carried(conn);
    let up = String::from_utf8_lossy(&up);
    let down = String::from_utf8_lossy(&down);
    up.lines()
        .filter(|l| l.contains(word))
        .filter_map(|l| l.split_whitespace().next())
        .any(|tag| {
            down.lines()
                .any(|l| l.starts_with(&format!("{tag} OK")) && down.contains(&format!("{l}\r\n")))
        })
}

fn bound() -> Duration {
    Duration::from_secs(UPSTREAM_TIMEOUT * 2 + 3)
}

/// The session ended with `* BYE` (no tagged answer for what upstream left unfinished),
/// within [`bound`] of `started`. `log`, if any, is shown on failure.
fn assert_bye_in_time(got: &Ended, started: Instant, what: &str, log: &str) {
    assert!(
        matches!(got, Ended::Gone(b) if find(b, b"* BYE")),
        "{what}: {}\n{log}",
        got.brief()
    );
    assert!(
        started.elapsed() <= bound(),
        "{what}: answered after {:?}",
        started.elapsed()
    );
}

/// Upstream cut or stalled during LOGIN, at every 4th byte of its greeting, capability
/// and login replies and right after sealpost sent LOGIN: no `OK` for a login upstream
/// did not accept, and an answer within the timeout.
#[test]
fn imap_login_faults() {
    let rig = imap_rig();
    let (mut c, g) = Imap::connect(rig.proxy.imap_port);
    assert!(g.is_some() && c.login().ok(), "{}", rig.proxy.log());
    drop(c);
    assert_nothing_left(&rig.proxy, &rig.relay, "imap", usize::MAX / 2);
    let base_fds = fds(rig.proxy.pid());

    let mut plans = vec![
        Plan::new(Dir::ToTarget, Trigger::after("LOGIN "), Action::Cut),
        Plan::new(Dir::ToTarget, Trigger::after("LOGIN "), Action::Stall),
        Plan::new(Dir::ToClient, Trigger::Offset(0), Action::Stall),
        Plan::new(Dir::ToClient, Trigger::line("* OK"), Action::Stall),
    ];
    for off in (0..400).step_by(4) {
        plans.push(Plan::new(Dir::ToClient, Trigger::Offset(off), Action::Cut));
    }
    let mut refused = 0;
    for plan in &plans {
        rig.relay.clear();
        let conn = rig.relay.accepted();
        rig.relay.push(plan.clone());
        let started = Instant::now();
        let (mut c, greeting) = Imap::connect(rig.proxy.imap_port);
        let got = match greeting {
            Some(_) => c.login(),
            None => Ended::Gone(Vec::new()),
        };
        assert!(
            started.elapsed() <= bound(),
            "{plan:?}: LOGIN answered after {:?}",
            started.elapsed()
        );
        if got.ok() {
            assert!(
                upstream_said_ok(&rig.relay, conn, "LOGIN"),
                "{plan:?}: the client got OK for a LOGIN upstream never accepted: {}",
                got.brief()
            );
        } else {
            refused += 1;
        }
    }
    assert!(refused >= plans.len() / 2, "{refused} of {}", plans.len());
    rig.relay.clear();
    assert_nothing_left(&rig.proxy, &rig.relay, "imap", base_fds);
}

/// Upstream cut or stalled inside a FETCH literal, of a plain and of an encrypted
/// message: the client never gets `OK` with a short or missing body, and gets its answer
/// (a BYE) within the timeout.
#[test]
fn imap_fetch_literal_faults() {
    let rig = imap_rig();
    assert_nothing_left(&rig.proxy, &rig.relay, "imap", usize::MAX / 2);
    let base_fds = fds(rig.proxy.pid());
    let mut trials = 0;
    for (uid, want) in [&rig.plain, &rig.encrypted] {
        for action in [Action::Cut, Action::Stall] {
            for extra in [0, 1, 100, 4000, 12000] {
                rig.relay.clear();
                // The fault hits the session's own connection, after LOGIN and SELECT.
                rig.relay.push(Plan::new(
                    Dir::ToClient,
                    Trigger::after_plus("BODY[] {", extra),
                    action,
                ));
                let (mut c, g) = Imap::connect(rig.proxy.imap_port);
                assert!(g.is_some() && c.login().ok(), "{}", rig.proxy.log());
                assert!(c.cmd("a2", "SELECT INBOX").ok());
                let started = Instant::now();
                let got = c.cmd("a3", &format!("UID FETCH {uid} (BODY.PEEK[])"));
                trials += 1;
                let what = format!("{action:?} {extra} bytes into the literal of UID {uid}");
                assert!(
                    started.elapsed() <= bound(),
                    "{what}: answered after {:?}",
                    started.elapsed()
                );
                if got.ok() {
                    assert!(
                        find(got.bytes(), want),
                        "{what}: OK without the whole message: {}",
                        String::from_utf8_lossy(got.bytes())
                    );
                } else {
                    assert!(
                        matches!(got, Ended::Gone(_)),
                        "{what}: {} (a NO or BAD is wrong here: upstream is gone)",
                        got.brief()
                    );
                }
            }
        }
    }
    eprintln!("imap fetch faults: {trials} trials");
    // The cache may hold a view now: a fresh session still gets the messages whole.
    let (mut c, _) = Imap::connect(rig.proxy.imap_port);
    assert!(c.login().ok() && c.cmd("a2", "SELECT INBOX").ok());
    let got = c.cmd(
        "a3",
        &format!("UID FETCH {} (BODY.PEEK[])", rig.encrypted.0),
    );
    assert!(
        got.ok() && find(got.bytes(), &rig.encrypted.1),
        "{}",
        got.brief()
    );
    drop(c);
    rig.relay.clear();
    assert_nothing_left(&rig.proxy, &rig.relay, "imap", base_fds);
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Upstream cut or stalled inside an APPEND literal, and its reply lost after the
/// message was sent: `OK` only when the message is stored (once); a cut inside the
/// literal stores nothing.
#[test]
fn imap_append_literal_faults() {
    let rig = imap_rig();
    let count = || rig.dovecot.uids(USER, PASS, "INBOX").len();
    let mut stored = count();
    assert_nothing_left(&rig.proxy, &rig.relay, "imap", usize::MAX / 2);
    let base_fds = fds(rig.proxy.pid());
    let mut msg =
        b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: draft\r\n\r\n".to_vec();
    for i in 0..300 {
        msg.extend_from_slice(format!("draft line {i:04}\r\n").as_bytes());
    }
    let plans = [
        (
            Dir::ToTarget,
            Trigger::after_plus("APPEND ", 200),
            Action::Cut,
            true,
        ),
        (
            Dir::ToTarget,
            Trigger::after_plus("APPEND ", 200),
            Action::Stall,
            true,
        ),
        (
            Dir::ToTarget,
            Trigger::after_plus("APPEND ", 3000),
            Action::Cut,
            true,
        ),
        (Dir::ToClient, Trigger::line("+ OK"), Action::Stall, false),
        // Cut as upstream's `+` goes by: sealpost's literal may still slip through
        // before the cut closes the other direction, so either outcome is right.
        (Dir::ToClient, Trigger::line("+ OK"), Action::Cut, false),
    ];
    for (dir, trig, action, nothing_stored) in plans {
        rig.relay.clear();
        rig.relay.push(Plan::new(dir, trig.clone(), action));
        let (mut c, g) = Imap::connect(rig.proxy.imap_port);
        assert!(g.is_some() && c.login().ok(), "{}", rig.proxy.log());
        let started = Instant::now();
        let _ =
            c.w.write_all(format!("a2 APPEND INBOX {{{}}}\r\n", msg.len()).as_bytes());
        let got = match c.response() {
            Ok(r) if r.starts_with(b"+") => {
                let _ = c.w.write_all(&msg);
                let _ = c.w.write_all(b"\r\n");
                c.until("a2")
            }
            Ok(r) => Ended::Tagged("?".into(), r),
            Err(_) => Ended::Gone(Vec::new()),
        };
        let what = format!("{action:?} at {trig:?} ({dir:?})");
        assert!(
            started.elapsed() <= bound(),
            "{what}: answered after {:?}",
            started.elapsed()
        );
        let now = count();
        if got.ok() {
            assert_eq!(
                now,
                stored + 1,
                "{what}: OK, yet {now} messages after {stored}"
            );
        } else {
            assert!(
                !nothing_stored || now == stored,
                "{what}: refused, yet stored"
            );
            assert!(now <= stored + 1, "{what}: stored twice");
        }
        stored = now;
    }
    rig.relay.clear();
    assert_nothing_left(&rig.proxy, &rig.relay, "imap", base_fds);
}

/// Upstream cut or stalled during IDLE: the client hears BYE (the cut at once, the
/// stall once DONE goes unanswered past the timeout), and another session is served
/// meanwhile.
#[test]
fn imap_idle_faults() {
    let rig = imap_rig();
    assert_nothing_left(&rig.proxy, &rig.relay, "imap", usize::MAX / 2);
    let base_fds = fds(rig.proxy.pid());
    for action in [Action::Cut, Action::Stall] {
        rig.relay.clear();
        rig.relay
            .push(Plan::new(Dir::ToClient, Trigger::line("+ idling"), action));
        let (mut c, g) = Imap::connect(rig.proxy.imap_port);
        assert!(g.is_some() && c.login().ok(), "{}", rig.proxy.log());
        assert!(c.cmd("a2", "SELECT INBOX").ok());
        c.w.write_all(b"a3 IDLE\r\n").unwrap();
        let plus = c.response().unwrap();
        assert!(plus.starts_with(b"+"), "{}", String::from_utf8_lossy(&plus));
        // Another session, meanwhile.
        let (mut o, _) = Imap::connect(rig.proxy.imap_port);
        assert!(o.login().ok() && o.cmd("b2", "SELECT INBOX").ok());
        let got = o.cmd(
            "b3",
            &format!("UID FETCH {} (BODY.PEEK[])", rig.encrypted.0),
        );
        assert!(
            got.ok() && find(got.bytes(), &rig.encrypted.1),
            "{action:?}: {}",
            got.brief()
        );
        drop(o);
        let started = Instant::now();
        if action == Action::Stall {
            c.w.write_all(b"DONE\r\n").unwrap();
        }
        let got = c.until("a3");
        assert_bye_in_time(&got, started, &format!("{action:?} during IDLE"), "");
    }
    rig.relay.clear();
    assert_nothing_left(&rig.proxy, &rig.relay, "imap", base_fds);
}

/// The client goes away inside its APPEND literal, both for a message sealpost seals
/// (held whole first) and for one already encrypted (streamed through as it comes):
/// nothing is stored upstream, and nothing is left behind.
#[test]
fn imap_client_gone_inside_append_stores_nothing() {
    let rig = imap_rig();
    let count = || rig.dovecot.uids(USER, PASS, "INBOX").len();
    let stored = count();
    assert_nothing_left(&rig.proxy, &rig.relay, "imap", usize::MAX / 2);
    let base_fds = fds(rig.proxy.pid());
    let mut plain =
        b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: draft\r\n\r\n".to_vec();
    for i in 0..2000 {
        plain.extend_from_slice(format!("draft line {i:04}\r\n").as_bytes());
    }
    // Already encrypted: appended unchanged, so relayed as it arrives.
    let armored = common::gpg_encrypt(None, &["alice"], &plain, true);
    let mut encrypted = b"From: alice@example.com\r\nSubject: ...\r\nMIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
    encrypted.extend_from_slice(&sealpost::mime::to_crlf(&armored));
    encrypted.extend_from_slice(b"\r\n--b--\r\n");
    for (what, msg) in [("plain", &plain), ("encrypted", &encrypted)] {
        for literal_plus in [false, true] {
            let (mut c, g) = Imap::connect(rig.proxy.imap_port);
            assert!(g.is_some() && c.login().ok());
            let plus = if literal_plus { "+" } else { "" };
            c.w.write_all(format!("a2 APPEND INBOX {{{}{plus}}}\r\n", msg.len()).as_bytes())
                .unwrap();
            if !literal_plus {
                let r = c.response().unwrap();
                assert!(r.starts_with(b"+"), "{}", String::from_utf8_lossy(&r));
            }
            c.w.write_all(&msg[..msg.len() / 2]).unwrap();
            std::thread::sleep(Duration::from_millis(200));
            drop(c);
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(
                count(),
                stored,
                "a {what} APPEND the client never finished was stored\n{}",
                rig.proxy.log()
            );
        }
    }
    assert_nothing_left(&rig.proxy, &rig.relay, "imap", base_fds);
}

/// Upstream stalls inside sealpost's own work for a FETCH or SEARCH of encrypted mail
/// nobody has seen yet (classification, download, SEARCH ALL): those commands are
/// sealpost's, not the client's, and a stall there too ends in a BYE within the timeout.
#[test]
fn imap_stall_inside_a_decrypting_job_is_answered_in_time() {
    let rig = imap_rig();
    assert_nothing_left(&rig.proxy, &rig.relay, "imap", usize::MAX / 2);
    let base_fds = fds(rig.proxy.pid());
    let stalls = [
        (
            "classification",
            "FETCH",
            Trigger::after("HEADER.FIELDS (CONTENT-TYPE"),
        ),
        ("download", "FETCH", Trigger::after_plus("BODY[] {", 100)),
        ("SEARCH ALL", "SEARCH", Trigger::after("* SEARCH")),
    ];
    for (i, (what, command, trigger)) in stalls.into_iter().enumerate() {
        // A message no view cache or index knows.
        rig.dovecot
            .deliver_new(USER, &encrypted_for_alice(&format!("fresh secret {i}")));
        let uid = *rig.dovecot.uids(USER, PASS, "INBOX").last().unwrap();
        rig.relay.clear();
        rig.relay
            .push(Plan::new(Dir::ToClient, trigger.clone(), Action::Stall));
        let (mut c, g) = Imap::connect(rig.proxy.imap_port);
        assert!(g.is_some() && c.login().ok(), "{}", rig.proxy.log());
        assert!(c.cmd("a2", "SELECT INBOX").ok());
        let started = Instant::now();
        let line = match command {
            "FETCH" => format!("UID FETCH {uid} (BODY.PEEK[])"),
            _ => "UID SEARCH BODY \"fresh secret\"".to_string(),
        };
        let got = c.cmd("a3", &line);
        assert_bye_in_time(
            &got,
            started,
            &format!("a stall in the {what}"),
            &rig.proxy.log(),
        );
    }
    rig.relay.clear();
    assert_nothing_left(&rig.proxy, &rig.relay, "imap", base_fds);
}

/// A client that keeps talking while upstream is stuck does not keep its session
/// waiting: the silence counts from upstream's last bytes, not from the client's.
#[test]
fn imap_a_chatty_client_does_not_hide_a_stuck_upstream() {
    let rig = imap_rig();
    rig.relay.push(Plan::new(
        Dir::ToClient,
        Trigger::line("a2 OK"),
        Action::Stall,
    ));
    let (mut c, g) = Imap::connect(rig.proxy.imap_port);
    assert!(g.is_some() && c.login().ok(), "{}", rig.proxy.log());
    assert!(c.cmd("a2", "SELECT INBOX").ok());
    let started = Instant::now();
    c.w.write_all(b"a3 NOOP\r\n").unwrap();
    // A command every half second from a second thread, as long as the socket takes them.
    let mut w = c.w.try_clone().unwrap();
    let talker = std::thread::spawn(move || {
        for i in 4..100 {
            std::thread::sleep(Duration::from_millis(500));
            if w.write_all(format!("a{i} NOOP\r\n").as_bytes()).is_err() {
                break;
            }
        }
    });
    let got = c.until("a3");
    assert_bye_in_time(&got, started, "upstream silent, the client talking", "");
    drop(c);
    let _ = talker.join();
}
