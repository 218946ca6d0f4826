//! The IMAP proxy as an attacker and a demanding client try it: each defect found in the
//! first version, reproduced end to end against a real Dovecot behind the `sealpost`
//! binary, with mail encrypted by real GnuPG.

mod common;

use base64::Engine;
use common::dovecot::Dovecot;
use common::imapclients::{parse_fetches, RawImap};
use common::proxy::{Proxy, ProxyOptions};
use common::{gpg_encrypt, TestCa};
use std::time::Duration;

const ALICE: (&str, &str) = ("alice@example.com", "alicepw");
const MALLORY: (&str, &str) = ("mallory@example.net", "mallorypw");
const SECRET: &str = "the merger closes on Friday";

fn pgp_mime(subject: &str, armored: &[u8]) -> Vec<u8> {
    let mut m = format!(
        "From: Bob <bob@example.org>\r\nTo: Alice <alice@example.com>\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    for line in String::from_utf8_lossy(armored).lines() {
        m.extend_from_slice(line.as_bytes());
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(b"--b--\r\n");
    m
}

fn for_alice(subject: &str, body: &str) -> Vec<u8> {
    let inner = format!("Content-Type: text/plain; charset=us-ascii\r\n\r\n{body}\r\n");
    pgp_mime(
        subject,
        &gpg_encrypt(Some("bob"), &["alice"], inner.as_bytes(), true),
    )
}

struct Env {
    ca: &'static TestCa,
    dovecot: Dovecot,
    proxy: Proxy,
}

impl Env {
    fn new(extra: &str) -> Env {
        let ca = TestCa::shared();
        let dovecot = Dovecot::start(ca, &[ALICE, MALLORY]);
        let mut opts = ProxyOptions::new(1);
        opts.imap_upstream = Some((dovecot.imaps_port, "tls"));
        opts.alice_login = ALICE.0.into();
        opts.extra = extra.to_string();
        let proxy = Proxy::start(ca, &opts);
        Env { ca, dovecot, proxy }
    }

    fn client(&self, who: (&str, &str)) -> RawImap {
        RawImap::connect_login(
            self.proxy.imap_port,
            "starttls",
            Some(&self.ca.ca_pem),
            who.0,
            who.1,
        )
    }
}

/// Reads lines until one starts with each of `tags` (in any order); returns them all.
fn read_tagged(c: &mut RawImap, tags: &[&str]) -> String {
    let mut seen = String::new();
    let mut left: Vec<String> = tags.iter().map(|t| format!("{t} ")).collect();
    while !left.is_empty() {
        let line = String::from_utf8_lossy(&c.read_response()).into_owned();
        left.retain(|t| !line.starts_with(t.as_str()));
        seen.push_str(&line);
    }
    seen
}

/// Defect 1 (critical): logged in as mallory, `x NOOP` + `x LOGIN alice junk` in one
/// packet made Dovecot's `x OK` for the NOOP count as alice's login, and mallory's
/// copy of a message to alice was then decrypted with alice's key.
#[test]
fn a_session_cannot_switch_to_another_users_key() {
    let env = Env::new("");
    let stolen = for_alice("for alice", SECRET);
    env.dovecot
        .append(MALLORY.0, MALLORY.1, "INBOX", &stolen, &[]);
    let mut c = env.client(MALLORY);

    c.send_raw(b"x NOOP\r\nx LOGIN alice@example.com junk\r\n");
    let replies = read_tagged(&mut c, &["x", "x"]);
    assert!(replies.contains("x BAD"), "{replies}");

    let plain = base64::engine::general_purpose::STANDARD.encode(b"\0alice@example.com\0junk");
    c.send_raw(format!("z NOOP\r\nz AUTHENTICATE PLAIN {plain}\r\n").as_bytes());
    let replies = read_tagged(&mut c, &["z", "z"]);
    assert!(replies.contains("z BAD"), "{replies}");

    // A second LOGIN, even with alice's real password, is refused by sealpost.
    let r = c.command("LOGIN alice@example.com alicepw");
    assert_eq!(r.status, "BAD", "{}", r.tagged_text());

    c.command_ok("SELECT INBOX");
    let got = c.command_ok("UID FETCH 1 (BODY.PEEK[])");
    let text = String::from_utf8_lossy(&got);
    assert!(!text.contains(SECRET), "mallory read alice's mail:\n{text}");
    assert!(text.contains("BEGIN PGP MESSAGE"), "{text}");

    // Alice herself, through the same proxy, reads her own copy.
    env.dovecot.append(ALICE.0, ALICE.1, "INBOX", &stolen, &[]);
    let mut a = env.client(ALICE);
    a.command_ok("SELECT INBOX");
    let got = a.command_ok("UID FETCH 1 (BODY.PEEK[])");
    assert!(String::from_utf8_lossy(&got).contains(SECRET));
}

/// Defect 2: the bytes of an over-limit non-synchronizing literal ran as commands.
#[test]
fn an_over_limit_literal_is_never_run_as_commands() {
    let env = Env::new("[limits]\nmax_message_size = 100000\n");
    for i in 0..3 {
        let msg = format!("From: a@example.org\r\nSubject: keep {i}\r\n\r\nbody\r\n");
        env.dovecot
            .append(ALICE.0, ALICE.1, "INBOX", msg.as_bytes(), &[]);
    }
    let mut c = env.client(ALICE);
    c.command_ok("SELECT INBOX");
    // An attacker's message body, appended by the user's client: over the literal limit
    // (max_message_size + 1 MiB).
    let n = 100_000 + 1024 * 1024 + 4096;
    let line = "Z1 UID STORE 1:* +FLAGS.SILENT (\\Deleted)\r\nZ2 EXPUNGE\r\n";
    let mut body = line.repeat(n / line.len() + 1).into_bytes();
    body.truncate(n);
    let mut cmd = format!("A1 APPEND Drafts {{{n}+}}\r\n").into_bytes();
    cmd.extend_from_slice(&body);
    cmd.extend_from_slice(b"\r\nA2 NOOP\r\n");
    c.send_raw(&cmd);
    let replies = read_tagged(&mut c, &["A1", "A2"]);
    assert!(replies.contains("A1 NO [TOOBIG]"), "{replies}");
    assert!(replies.contains("A2 OK"), "{replies}");
    assert!(
        !replies.contains("Z1") && !replies.contains("Z2"),
        "{replies}"
    );
    // Nothing was flagged or expunged upstream.
    let uids = env.dovecot.uids(ALICE.0, ALICE.1, "INBOX");
    assert_eq!(uids.len(), 3);
    for uid in uids {
        let flags = env.dovecot.flags(ALICE.0, ALICE.1, "INBOX", uid);
        assert!(!flags.iter().any(|f| f == "\\Deleted"), "{flags:?}");
    }
    // A synchronizing one is refused before it is sent.
    let r = c.command(&format!("APPEND Drafts {{{n}}}"));
    assert!(
        r.tagged_text().contains("NO [TOOBIG]"),
        "{}",
        r.tagged_text()
    );
    c.command_ok("NOOP");
}

/// Defect 3: a Subject reading `[CAPABILITY ...]` was rewritten in relayed FETCHes.
#[test]
fn relayed_mail_is_not_rewritten_by_the_capability_filter() {
    let env = Env::new("");
    let msg = b"From: dev@example.org\r\nTo: alice@example.com\r\nSubject: Re: [CAPABILITY SORT BINARY] who broke it\r\nMessage-ID: <cap@example.org>\r\n\r\nsee subject\r\n";
    let uid = env.dovecot.append(ALICE.0, ALICE.1, "INBOX", msg, &[]);
    let mut direct = env.dovecot.session(ALICE.0, ALICE.1);
    direct.command_ok("SELECT INBOX");
    let want = direct.command_ok(&format!("UID FETCH {uid} (ENVELOPE)"));
    assert!(String::from_utf8_lossy(&want).contains("[CAPABILITY SORT BINARY]"));
    let mut c = env.client(ALICE);
    c.command_ok("SELECT INBOX");
    // The first FETCH classifies the message; the second is relayed as known plain.
    for _ in 0..2 {
        let got = c.command_ok(&format!("UID FETCH {uid} (ENVELOPE)"));
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want)
        );
    }
    let got = c.command_ok("FETCH 1 (ENVELOPE)");
    assert!(String::from_utf8_lossy(&got).contains("[CAPABILITY SORT BINARY]"));
}

/// Defect 4: a long command got no tagged reply. Big UID sets (24 KB, as mbsync and
/// Thunderbird send) work; a line over the limit gets a tagged BAD.
#[test]
fn long_commands_get_tagged_replies() {
    let env = Env::new("");
    for i in 0..3 {
        let msg = format!("From: a@example.org\r\nSubject: m{i}\r\n\r\nbody\r\n");
        env.dovecot
            .append(ALICE.0, ALICE.1, "INBOX", msg.as_bytes(), &[]);
    }
    let mut c = env.client(ALICE);
    c.set_timeout(Duration::from_secs(20));
    c.command_ok("SELECT INBOX");
    let mut set = String::from("1");
    let mut i = 3;
    while set.len() < 24_000 {
        set.push_str(&format!(",{i}"));
        i += 2;
    }
    let got = c.command_ok(&format!("UID FETCH {set} (UID FLAGS)"));
    assert_eq!(parse_fetches(&got).len(), 2, "UIDs 1 and 3");
    let got = c.command_ok(&format!("UID FETCH {set} (UID RFC822.SIZE)"));
    assert_eq!(parse_fetches(&got).len(), 2);
    while set.len() < 70_000 {
        set.push_str(&format!(",{i}"));
        i += 2;
    }
    let r = c.command(&format!("UID FETCH {set} (UID FLAGS)"));
    assert_eq!(r.status, "BAD", "{}", r.tagged_text());
    assert!(
        r.tagged_text().contains("longer than 65536"),
        "{}",
        r.tagged_text()
    );
    c.command_ok("NOOP");
}

/// Defect 6: once one FETCH's decryption budget was spent, the rest was cached as
/// plain for good.
#[test]
fn a_spent_decryption_budget_is_not_cached_as_a_verdict() {
    // The budget of one FETCH is max(view_cache_size, max_message_size) = 200 000 bytes;
    // each message decrypts to about 150 000.
    let env = Env::new("[limits]\nmax_message_size = 200000\nview_cache_size = 1000\n");
    let big = "a line of the quarterly report, repeated\r\n".repeat(3600);
    for i in 0..2 {
        let m = for_alice(&format!("report {i}"), &format!("{SECRET} {i}\r\n{big}"));
        env.dovecot.append(ALICE.0, ALICE.1, "INBOX", &m, &[]);
    }
    let mut c = env.client(ALICE);
    c.command_ok("SELECT INBOX");
    let both = c.command_ok("UID FETCH 1:2 (UID BODY.PEEK[])");
    let both = String::from_utf8_lossy(&both);
    // They decrypt in parallel: whichever is ready second is over the budget.
    let shown: Vec<bool> = (0..2)
        .map(|i| both.contains(&format!("{SECRET} {i}")))
        .collect();
    assert_eq!(shown.iter().filter(|s| **s).count(), 1, "{shown:?}");
    for uid in 1..=2 {
        let alone = c.command_ok(&format!("UID FETCH {uid} (UID BODY.PEEK[])"));
        assert!(
            String::from_utf8_lossy(&alone).contains(&format!("{SECRET} {}", uid - 1)),
            "alone, message {uid} decrypts"
        );
    }
}

/// Defect 7: CONDSTORE/QRESYNC fetches bypassed the view.
#[test]
fn changedsince_fetches_show_encrypted_mail_decrypted() {
    let env = Env::new("");
    env.dovecot.append(
        ALICE.0,
        ALICE.1,
        "INBOX",
        b"From: a@example.org\r\nSubject: plain\r\n\r\nplain body\r\n",
        &[],
    );
    env.dovecot
        .append(ALICE.0, ALICE.1, "INBOX", &for_alice("enc", SECRET), &[]);
    let mut c = env.client(ALICE);
    c.command_ok("ENABLE QRESYNC");
    c.command_ok("SELECT INBOX");
    let got = c.command_ok("UID FETCH 1:* (UID BODY.PEEK[]) (CHANGEDSINCE 1)");
    let fetches = parse_fetches(&got);
    assert_eq!(fetches.len(), 2, "{}", String::from_utf8_lossy(&got));
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains(SECRET), "{text}");
    assert!(text.contains("plain body"), "{text}");
    assert_eq!(text.matches("MODSEQ").count(), 2, "{text}");
    // VANISHED (EARLIER) is reported once.
    c.command_ok("UID STORE 1 +FLAGS.SILENT (\\Deleted)");
    c.command_ok("UID EXPUNGE 1");
    let got = c.command_ok("UID FETCH 1:* (UID BODY.PEEK[]) (CHANGEDSINCE 1 VANISHED)");
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("VANISHED (EARLIER) 1").count(), 1, "{text}");
    assert!(text.contains(SECRET), "{text}");
}

/// A message nested `depth` multiparts deep (a mail forwarded as an attachment a few
/// times), with `leaf` innermost.
fn nested(depth: usize, leaf: &str) -> String {
    let mut body = format!("Content-Type: text/plain\r\n\r\n{leaf}\r\n");
    for d in 0..depth {
        body = format!(
            "Content-Type: multipart/mixed; boundary=\"n{d}\"\r\n\r\n--n{d}\r\nContent-Type: text/plain\r\n\r\nlevel {d}\r\n--n{d}\r\n{body}--n{d}--\r\n"
        );
    }
    body
}

/// Defect 5: when imap-codec could not parse a BODYSTRUCTURE (nesting over its
/// limit), the classification response reached the client and its items never came.
#[test]
fn deeply_nested_mail_comes_through() {
    let env = Env::new("");
    let plain = format!(
        "From: a@example.org\r\nSubject: deep\r\nMIME-Version: 1.0\r\n{}",
        nested(12, "the innermost words")
    );
    let uid_plain = env
        .dovecot
        .append(ALICE.0, ALICE.1, "INBOX", plain.as_bytes(), &[]);
    let inner = nested(12, SECRET);
    let enc = pgp_mime(
        "deep secret",
        &gpg_encrypt(Some("bob"), &["alice"], inner.as_bytes(), true),
    );
    let uid_enc = env.dovecot.append(ALICE.0, ALICE.1, "INBOX", &enc, &[]);
    let mut direct = env.dovecot.session(ALICE.0, ALICE.1);
    direct.command_ok("SELECT INBOX");
    let items = "UID RFC822.SIZE BODYSTRUCTURE BODY.PEEK[]";
    let want = direct.command_ok(&format!("UID FETCH {uid_plain} ({items})"));
    let mut c = env.client(ALICE);
    c.command_ok("SELECT INBOX");
    let got = c.command_ok(&format!("UID FETCH {uid_plain} ({items})"));
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want)
    );
    let got = c.command_ok(&format!("UID FETCH {uid_enc} (UID BODY.PEEK[])"));
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains(SECRET), "{text}");
    assert!(text.contains("level 11"), "{text}");
    let got = c.command_ok("UID FETCH 1:* (UID RFC822.SIZE)");
    assert_eq!(
        parse_fetches(&got).len(),
        2,
        "{}",
        String::from_utf8_lossy(&got)
    );
}

/// Found by an attacking review: mallory's AUTHENTICATE PLAIN with her credentials in
/// base64 with non-zero trailing bits (Dovecot decodes it) and a second line naming
/// alice made Dovecot log mallory in and sealpost pick alice's key.
#[test]
fn sasl_tricks_cannot_pick_another_users_key() {
    let env = Env::new("");
    let stolen = for_alice("for alice", SECRET);
    env.dovecot
        .append(MALLORY.0, MALLORY.1, "INBOX", &stolen, &[]);
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut data = format!("\0{}\0{}", MALLORY.0, MALLORY.1);
    if data.len() % 3 == 0 {
        data = format!("{0}\0{0}\0{1}", MALLORY.0, MALLORY.1);
    }
    let mut l1 = b64.encode(data).into_bytes();
    let pad = l1.iter().position(|&b| b == b'=').expect("padded");
    let alph = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let v = alph.iter().position(|&c| c == l1[pad - 1]).unwrap();
    l1[pad - 1] = alph[v | if pad + 2 == l1.len() { 0x0f } else { 0x03 }];
    assert!(b64.decode(&l1).is_err(), "non-canonical on purpose");
    let l2 = b64.encode(format!("\0{}\0x", ALICE.0));
    let mut c = RawImap::connect(env.proxy.imap_port, "starttls", Some(&env.ca.ca_pem));
    c.send_raw(
        format!(
            "a AUTHENTICATE PLAIN\r\n{}\r\n{l2}\r\n",
            String::from_utf8(l1).unwrap()
        )
        .as_bytes(),
    );
    let r = c.read_until_tagged("a");
    assert_eq!(r.status, "OK", "{}", r.tagged_text());
    c.command_ok("SELECT INBOX");
    let got = c.command_ok("UID FETCH 1 (BODY.PEEK[])");
    let text = String::from_utf8_lossy(&got);
    assert!(!text.contains(SECRET), "mallory read alice's mail:\n{text}");
    assert!(
        text.contains("BEGIN PGP MESSAGE"),
        "shown as stored: {text}"
    );
}

/// Found by an attacking review: `NOOP {n+}` whose literal Dovecot ran as a SELECT
/// behind sealpost's back.
#[test]
fn a_literal_never_runs_upstream_as_a_command() {
    let env = Env::new("");
    let mut c = env.client(MALLORY);
    c.command_ok("CREATE Other");
    c.command_ok("SELECT INBOX");
    let inner = b"x SELECT Other\r\n";
    let mut cmd = format!("n NOOP {{{}+}}\r\n", inner.len() - 2).into_bytes();
    cmd.extend_from_slice(inner);
    cmd.extend_from_slice(b"z NOOP\r\n");
    c.send_raw(&cmd);
    let r = c.read_until_tagged("n");
    assert_eq!(r.status, "BAD", "{}", r.tagged_text());
    let r = c.read_until_tagged("z");
    assert_eq!(r.status, "OK", "{}", r.tagged_text());
    // A LOGIN with a synchronizing literal password still works (sealpost says `+`).
    let mut a = RawImap::connect(env.proxy.imap_port, "starttls", Some(&env.ca.ca_pem));
    let r = a.command_with_literal(&format!("LOGIN {}", ALICE.0), ALICE.1.as_bytes(), "");
    assert!(r.is_ok(), "{}", r.tagged_text());
    a.command_ok("SELECT INBOX");
}

/// `prefix{n+}CRLF` + `inner` + `suffix`: a command with a non-synchronizing literal.
fn lit(prefix: &str, inner: &[u8], suffix: &[u8]) -> Vec<u8> {
    let mut v = format!("{prefix}{{{}+}}\r\n", inner.len()).into_bytes();
    v.extend_from_slice(inner);
    v.extend_from_slice(suffix);
    v
}

/// Found by a second attacking review: before login, an APPEND that Dovecot's
/// imap-login rejects before its literal (`)`) made Dovecot skip the line and run the
/// literal, a hidden `c LOGIN mallory`, whose OK answered the visible `c LOGIN alice`.
#[test]
fn a_literal_rejected_with_its_command_never_runs_upstream() {
    let env = Env::new("");
    let stolen = for_alice("for alice", SECRET);
    env.dovecot
        .append(MALLORY.0, MALLORY.1, "INBOX", &stolen, &[]);
    let mut c = RawImap::connect(env.proxy.imap_port, "starttls", Some(&env.ca.ca_pem));
    let hidden = format!("c LOGIN {} {}\r\n", MALLORY.0, MALLORY.1);
    let mut bytes = lit("a APPEND INBOX ) ", hidden.as_bytes(), b"\r\n");
    bytes.extend_from_slice(format!("c LOGIN {} wrong\r\n", ALICE.0).as_bytes());
    c.send_raw(&bytes);
    let r = c.read_until_tagged("a");
    assert_eq!(r.status, "BAD", "{}", r.tagged_text());
    let r = c.read_until_tagged("c");
    assert_eq!(
        r.status,
        "NO",
        "alice's wrong password decides: {}",
        r.tagged_text()
    );
    let r = c.command("SELECT INBOX");
    assert_ne!(r.status, "OK", "not logged in: {}", r.tagged_text());

    // After login, the same trick (a bad date, then the literal) and a command imap-codec
    // knows but Dovecot does not (GETQUOTAROOT without the quota plugin) run nothing.
    let mut m = env.client(MALLORY);
    m.command_ok("CREATE Other");
    m.command_ok("SELECT INBOX");
    let mut bytes = lit("a APPEND INBOX \"junk\" ", b"x SELECT Other\r\n", b"\r\n");
    bytes.extend_from_slice(b"z NOOP\r\n");
    m.send_raw(&bytes);
    let all = read_tagged(&mut m, &["a", "z"]);
    assert!(!all.contains("x OK"), "literal ran as a command:\n{all}");
    let mut bytes = lit("q GETQUOTAROOT ", b"x CREATE Pwned\r\n", b"\r\n");
    bytes.extend_from_slice(b"z LIST \"\" *\r\n");
    m.send_raw(&bytes);
    let all = read_tagged(&mut m, &["q", "z"]);
    assert!(!all.contains("Pwned"), "literal ran as a command:\n{all}");
    // APPEND with a non-synchronizing literal still works (sent synchronizing).
    let msg = b"From: m@example.net\r\nSubject: kept\r\n\r\nbody\r\n";
    m.send_raw(&lit("w APPEND Other ", msg, b"\r\n"));
    let r = m.read_until_tagged("w");
    assert_eq!(r.status, "OK", "{}", r.tagged_text());
    assert_eq!(env.dovecot.uids(MALLORY.0, MALLORY.1, "Other").len(), 1);
}

/// Found by a third attacking review: `{}` is a literal to Dovecot (it sends `+`), so
/// a stray `+` could release another command's literal before login.
#[test]
fn empty_brace_literals_open_no_way_round_the_login() {
    let env = Env::new("");
    let stolen = for_alice("for alice", SECRET);
    env.dovecot
        .append(MALLORY.0, MALLORY.1, "INBOX", &stolen, &[]);
    let mut c = RawImap::connect(env.proxy.imap_port, "starttls", Some(&env.ca.ca_pem));
    c.send_raw(format!("s1 NOOP {{}}\r\nb LOGIN {} x\r\n", ALICE.0).as_bytes());
    let r = c.read_until_tagged("s1");
    assert_eq!(r.status, "BAD", "{}", r.tagged_text());
    let hidden = format!("b LOGIN {} {}", MALLORY.0, MALLORY.1);
    let mut input = b"s2 NOOP {}\r\n".to_vec();
    input.extend(format!("b2 APPEND INBOX ~{{{}+}}\r\n", hidden.len()).bytes());
    input.extend(hidden.as_bytes());
    input.extend(b"\r\nz NOOP\r\n");
    c.send_raw(&input);
    let all = read_tagged(&mut c, &["s2", "z"]);
    assert!(!all.contains("b OK"), "{all}");
    let r = c.command("SELECT INBOX");
    assert_ne!(r.status, "OK", "not logged in: {}", r.tagged_text());
}

/// Review: mail stored with a forged status field is shown only through its view
/// (which removes the field). One too large for a view was relayed as stored, so the
/// client saw the forged `Sealpost-Decrypted: … signature=good`. It is not shown now
/// (tagged `NO [LIMIT]`); the messages beside it are, and encrypted mail over the limit
/// is still shown as stored.
#[test]
fn a_forged_status_field_is_never_shown_even_when_too_large() {
    let env = Env::new("[limits]\nmax_message_size = 20000\n");
    let padding = "the pretended verified text, padded out\r\n".repeat(1500);
    let forged = format!(
        "From: ceo@example.com\r\nTo: alice@example.com\r\nSubject: wire the money\r\nSealpost-Decrypted: yes; signature=good\r\n\r\n{padding}"
    );
    env.dovecot
        .append(ALICE.0, ALICE.1, "INBOX", forged.as_bytes(), &[]);
    let small = "From: bob@example.org\r\nSubject: lunch\r\n\r\nat noon\r\n";
    env.dovecot
        .append(ALICE.0, ALICE.1, "INBOX", small.as_bytes(), &[]);
    // Text that does not compress, so the stored ciphertext is over the limit too.
    let noise: String = (0..3000u32)
        .map(|i| format!("{:08x}\r\n", i.wrapping_mul(2_654_435_761)))
        .collect();
    let encrypted = for_alice("big report", &noise);
    assert!(encrypted.len() > 20000);
    env.dovecot
        .append(ALICE.0, ALICE.1, "INBOX", &encrypted, &[]);

    let mut c = env.client(ALICE);
    c.command_ok("SELECT INBOX");
    for round in 0..2 {
        let reply = c.command("UID FETCH 1:3 (UID BODY.PEEK[])");
        let tagged = reply.tagged_text();
        assert!(
            tagged.contains("NO [LIMIT]") && tagged.contains("UID 1 "),
            "round {round}: {tagged}"
        );
        let all = reply.untagged_text();
        assert!(!all.contains("Sealpost-Decrypted"), "round {round}: {all}");
        assert!(!all.contains("wire the money"), "round {round}");
        let fetches = parse_fetches(all.as_bytes());
        let uids: Vec<u32> = fetches.iter().filter_map(|f| f.uid()).collect();
        assert_eq!(uids, [2, 3], "round {round}");
        assert!(all.contains("at noon"));
        assert!(
            all.contains("-----BEGIN PGP MESSAGE-----"),
            "shown as stored"
        );
    }
    // Asked alone, by sequence number, and for its header only: the same.
    let reply = c.command("FETCH 1 (BODY.PEEK[HEADER])");
    assert!(reply.tagged_text().contains("NO [LIMIT]"));
    assert!(!reply.untagged_text().contains("Sealpost-Decrypted"));
}
