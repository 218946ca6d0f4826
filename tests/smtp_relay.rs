//! End to end: a real SMTP client submits to the `sealpost` binary, which relays to a
//! real SMTP server (aiosmtpd over TLS with a test CA); what arrives is checked with
//! real GnuPG and sq.

mod common;

use common::proxy::{sealpost_cmd, Proxy, ProxyOptions};
use common::{
    armored, gpg_decrypt, gpg_encrypt, gpg_recipient_keyids, keyring, py_sendmail, sq_decrypt,
    PySend, PySendMode, Sink, SinkConfig, SinkMode, TestCa,
};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn message(to: &str, extra_headers: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Alice <alice@example.com>\r\nTo: {to}\r\n{extra_headers}Subject: {subject}\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\nMessage-ID: <t-{n}@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}",
        n = std::process::id()
    )
    .into_bytes()
}

fn submit(
    proxy: &Proxy,
    ca: &TestCa,
    from: &str,
    rcpts: &[&str],
    data: &[u8],
) -> common::PySendResult {
    let mut p = PySend::new(proxy.smtp_port, PySendMode::StartTls, from, rcpts, data);
    p.cafile = Some(&ca.ca_pem);
    p.login = Some(("sinkuser", "sinkpass"));
    py_sendmail(&p)
}

fn keys(names: &[&str]) -> Vec<std::path::PathBuf> {
    names
        .iter()
        .map(|n| keyring().person(n).pub_asc.clone())
        .collect()
}

#[test]
fn encrypted_and_signed_mail_decrypts_with_gpg_and_sq() {
    let ca = TestCa::shared();
    let sink = Sink::start(ca, SinkMode::Tls);
    let mut opts = ProxyOptions::new(sink.port);
    opts.import = keys(&["bob", "carol"]);
    let proxy = Proxy::start(ca, &opts);

    let body = "Grüße — the numbers are in.\r\n.leading dot line\r\n";
    let msg = message(
        "Bob <bob@example.org>",
        // Outlook repeats the Subject in Thread-Topic: it must not stay outside.
        "Cc: carol@example.org\r\nThread-Topic: Quarterly numbers\r\n",
        "Quarterly numbers",
        body,
    );
    let r = submit(
        &proxy,
        ca,
        "alice@example.com",
        &["bob@example.org", "carol@example.org"],
        &msg,
    );
    assert!(r.ok, "{r:?}\n{}", proxy.log());

    let got = sink.wait_for_messages(1, WAIT);
    assert_eq!(got.len(), 1, "To and Cc share one copy");
    let m = &got[0];
    assert_eq!(m.mail_from, "alice@example.com");
    assert_eq!(m.rcpt_tos, vec!["bob@example.org", "carol@example.org"]);
    let text = m.text();
    assert!(text.contains("multipart/encrypted"), "{text}");
    assert!(
        text.contains("protocol=\"application/pgp-encrypted\""),
        "{text}"
    );
    // RFC 9788 §4.2.1: the Subject obscured outside.
    assert!(text.contains("\r\nSubject: [...]\r\n"), "{text}");
    assert!(!text.contains("Quarterly"), "subject leaked: {text}");
    assert!(!text.contains("numbers are in"), "body leaked");
    assert!(text.contains("To: Bob <bob@example.org>\r\n"), "{text}");

    let kr = keyring();
    let ids = gpg_recipient_keyids(&armored(&m.data));
    for who in ["bob", "carol", "alice"] {
        assert!(
            ids.contains(&kr.person(who).enc_keyid),
            "{who} missing in {ids:?}"
        );
    }

    for who in ["bob", "carol", "alice"] {
        let g = gpg_decrypt(who, &armored(&m.data));
        g.assert_decrypted_signed_by("alice");
        let plain = String::from_utf8(g.plaintext.clone()).unwrap();
        // Both markers: RFC 9788's and the one Thunderbird reads; the outer fields
        // recorded inside, the real Subject there too.
        assert!(
            plain.contains("hp=\"cipher\"; protected-headers=\"v1\""),
            "{plain}"
        );
        assert!(plain.contains("Subject: Quarterly numbers\r\n"), "{plain}");
        assert!(
            plain.contains("\r\nHP-Outer: Subject: [...]\r\n"),
            "{plain}"
        );
        assert!(
            plain.contains("\r\nHP-Outer: To: Bob <bob@example.org>\r\n"),
            "{plain}"
        );
        assert!(
            plain.contains("Content-Transfer-Encoding: 8bit\r\n"),
            "{plain}"
        );
        assert!(plain.ends_with(&format!("\r\n\r\n{body}")), "{plain}");
    }
    let (ok, plain, log) = sq_decrypt("bob", "alice", &armored(&m.data));
    assert!(ok, "sq failed: {log}");
    let plain = String::from_utf8_lossy(&plain);
    assert!(plain.contains("Grüße"));
    assert!(plain.contains("Subject: Quarterly numbers\r\n"), "{plain}");
    // Message bodies never reach the log.
    assert!(!proxy.log().contains("numbers are in"));
}

#[test]
fn bcc_recipients_get_separate_copies_that_reveal_nothing() {
    let ca = TestCa::shared();
    let sink = Sink::start(ca, SinkMode::Tls);
    let mut opts = ProxyOptions::new(sink.port);
    opts.import = keys(&["bob", "dave"]);
    let proxy = Proxy::start(ca, &opts);

    let msg = message(
        "bob@example.org",
        "Bcc: dave@example.net\r\n",
        "Hidden",
        "hi\r\n",
    );
    let r = submit(
        &proxy,
        ca,
        "alice@example.com",
        &["bob@example.org", "dave@example.net"],
        &msg,
    );
    assert!(r.ok, "{r:?}");
    let got = sink.wait_for_messages(2, WAIT);
    assert_eq!(got.len(), 2);
    let kr = keyring();
    let to_bob = got
        .iter()
        .find(|m| m.rcpt_tos == ["bob@example.org"])
        .expect("bob's copy");
    let to_dave = got
        .iter()
        .find(|m| m.rcpt_tos == ["dave@example.net"])
        .expect("dave's copy");

    let bob_ids = gpg_recipient_keyids(&armored(&to_bob.data));
    assert!(bob_ids.contains(&kr.bob().enc_keyid));
    assert!(
        !bob_ids.contains(&kr.dave().enc_keyid),
        "Bcc key in the shared copy"
    );
    assert!(!to_bob.text().contains("dave"), "{}", to_bob.text());
    let g = gpg_decrypt("bob", &armored(&to_bob.data));
    g.assert_decrypted_signed_by("alice");
    assert!(!String::from_utf8_lossy(&g.plaintext).contains("dave"));

    let dave_ids = gpg_recipient_keyids(&armored(&to_dave.data));
    let mut expected = vec![kr.dave().enc_keyid.clone(), kr.alice().enc_keyid.clone()];
    expected.sort();
    let mut dave_sorted = dave_ids.clone();
    dave_sorted.sort();
    assert_eq!(
        dave_sorted, expected,
        "dave's copy is for dave and the sender only"
    );
    gpg_decrypt("dave", &armored(&to_dave.data)).assert_decrypted_signed_by("alice");
}

#[test]
fn opportunistic_sends_plain_to_recipients_without_keys() {
    let ca = TestCa::shared();
    let sink = Sink::start(ca, SinkMode::Tls);
    let mut opts = ProxyOptions::new(sink.port);
    opts.import = keys(&["bob"]);
    let proxy = Proxy::start(ca, &opts);

    let msg = message(
        "bob@example.org, carol@example.org",
        "",
        "Mixed",
        "plain for carol\r\n",
    );
    let r = submit(
        &proxy,
        ca,
        "alice@example.com",
        &["bob@example.org", "carol@example.org"],
        &msg,
    );
    assert!(r.ok, "{r:?}");
    let got = sink.wait_for_messages(2, WAIT);
    let plain = got
        .iter()
        .find(|m| m.rcpt_tos == ["carol@example.org"])
        .unwrap();
    // The plain copy is the message as submitted, plus the sender's Autocrypt header.
    let text = plain.text();
    assert!(
        text.starts_with("Autocrypt: addr=alice@example.com; keydata=\r\n "),
        "{text}"
    );
    assert!(plain.data.ends_with(&msg), "{text}");
    let enc = got
        .iter()
        .find(|m| m.rcpt_tos == ["bob@example.org"])
        .unwrap();
    gpg_decrypt("bob", &armored(&enc.data)).assert_decrypted_signed_by("alice");
}

/// A bare CR before a dot (`<CR>.<CR><LF>`) ends the data at a server that takes a
/// bare CR for a line end, and what follows runs there as commands of sealpost's own
/// session (SMTP smuggling: here a second transaction past the policy). Every line end
/// reaches upstream as CRLF, so the dot is doubled and the data ends only at its end.
#[test]
fn a_bare_cr_never_reaches_upstream_so_nothing_can_be_smuggled() {
    let ca = TestCa::shared();
    let sink = Sink::start(ca, SinkMode::Tls);
    let proxy = Proxy::start(ca, &ProxyOptions::new(sink.port));
    let body = "first\r.\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<dave@example.net>\r\nDATA\r\nsmuggled\r\n\r.\r\nlast\rline\r\n";
    let msg = message("carol@example.org", "", "Bare CR", body);
    let r = submit(
        &proxy,
        ca,
        "alice@example.com",
        &["carol@example.org"],
        &msg,
    );
    assert!(r.ok, "{r:?}");
    let got = sink.wait_for_messages(1, WAIT);
    assert_eq!(got.len(), 1);
    let data = &got[0].data;
    for (i, &b) in data.iter().enumerate() {
        assert!(
            b != b'\r' || data.get(i + 1) == Some(&b'\n'),
            "a bare CR reached upstream at {i}: {:?}",
            String::from_utf8_lossy(data)
        );
    }
    let text = got[0].text();
    assert!(
        text.contains("first\r\n.\r\nMAIL FROM:<alice@example.com>\r\n")
            && text.contains("smuggled\r\n\r\n.\r\nlast\r\nline\r\n"),
        "{text}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sink.messages().len(), 1, "a second message was smuggled");
}

#[test]
fn require_policy_refuses_and_nothing_leaves() {
    let ca = TestCa::shared();
    let sink = Sink::start(ca, SinkMode::Tls);
    let mut opts = ProxyOptions::new(sink.port);
    opts.import = keys(&["bob"]);
    opts.rules = vec![("*@example.org".into(), "require".into())];
    let proxy = Proxy::start(ca, &opts);

    let msg = message("bob@example.org, carol@example.org", "", "No key", "x\r\n");
    let r = submit(
        &proxy,
        ca,
        "alice@example.com",
        &["bob@example.org", "carol@example.org"],
        &msg,
    );
    assert!(!r.ok);
    assert_eq!(r.code, 550, "{r:?}");
    assert!(
        r.error.contains("5.7.1") && r.error.contains("carol@example.org"),
        "{r:?}"
    );
    assert!(!r.error.contains("bob@"), "{r:?}");
    sink.assert_no_messages(Duration::from_millis(500));
}

#[test]
fn a_sender_rule_requires_encryption_for_mail_from_that_domain() {
    let ca = TestCa::shared();
    let sink = Sink::start(ca, SinkMode::Tls);
    let mut opts = ProxyOptions::new(sink.port);
    opts.import = keys(&["bob"]);
    opts.extra = "[[policy.rule]]\nsender = \"legal.corp.example\"\naction = \"require\"\n".into();
    let proxy = Proxy::start(ca, &opts);
    let rcpts = ["bob@example.org", "carol@example.org"];
    let msg = |from: &str| {
        String::from_utf8(message(
            "bob@example.org, carol@example.org",
            "",
            "Contract",
            "x\r\n",
        ))
        .unwrap()
        .replace("From: Alice <alice@example.com>", &format!("From: {from}"))
        .into_bytes()
    };

    // From legal: carol has no key, so nothing leaves and the reply names her.
    let r = submit(
        &proxy,
        ca,
        "ann@legal.corp.example",
        &rcpts,
        &msg("ann@legal.corp.example"),
    );
    assert!(!r.ok);
    assert_eq!(r.code, 550, "{r:?}");
    assert!(
        r.error.contains("5.7.1") && r.error.contains("carol@example.org"),
        "{r:?}"
    );
    assert!(!r.error.contains("bob@"), "{r:?}");
    sink.assert_no_messages(Duration::from_millis(500));

    // The same message from elsewhere follows the default: bob encrypted, carol plain.
    let r = submit(
        &proxy,
        ca,
        "alice@example.com",
        &rcpts,
        &msg("alice@example.com"),
    );
    assert!(r.ok, "{r:?}\n{}", proxy.log());
    let got = sink.wait_for_messages(2, WAIT);
    assert_eq!(got.len(), 2);
}

#[test]
fn already_encrypted_mail_is_relayed_unchanged() {
    let ca = TestCa::shared();
    let sink = Sink::start(ca, SinkMode::StartTls);
    let mut opts = ProxyOptions::new(sink.port);
    opts.upstream_security = "starttls";
    opts.policy = "require";
    let proxy = Proxy::start(ca, &opts);

    let armored_body = gpg_encrypt(Some("alice"), &["carol"], b"client-side encrypted\n", true);
    let mut msg =
        b"From: alice@example.com\r\nTo: carol@example.org\r\nSubject: inline\r\n\r\n".to_vec();
    msg.extend_from_slice(&common_crlf(&armored_body));
    let r = submit(
        &proxy,
        ca,
        "alice@example.com",
        &["carol@example.org"],
        &msg,
    );
    assert!(r.ok, "{r:?}");
    let got = sink.wait_for_messages(1, WAIT);
    assert_eq!(got[0].data, msg);

    // A Bcc field never leaves, not even on mail that is already encrypted.
    let with_bcc = [b"Bcc: dave@example.net\r\n".as_slice(), &msg].concat();
    let r = submit(
        &proxy,
        ca,
        "alice@example.com",
        &["carol@example.org", "dave@example.net"],
        &with_bcc,
    );
    assert!(r.ok, "{r:?}");
    let got = sink.wait_for_messages(2, WAIT);
    assert_eq!(got[1].data, msg);
}

#[test]
fn armor_lines_or_a_preamble_are_not_encryption_under_require() {
    let ca = TestCa::shared();
    let sink = Sink::start(ca, SinkMode::StartTls);
    let mut opts = ProxyOptions::new(sink.port);
    opts.upstream_security = "starttls";
    opts.policy = "require";
    let proxy = Proxy::start(ca, &opts);

    // Armor lines around plain figures: carol has no key, so nothing may leave.
    let figures = b"From: alice@example.com\r\nTo: carol@example.org\r\nSubject: q3\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nRevenue 4.2M, costs 3.1M\r\n-----END PGP MESSAGE-----\r\n";
    // Real ciphertext, with the secret in the PGP/MIME preamble.
    let armored = common_crlf(&gpg_encrypt(Some("alice"), &["carol"], b"x\n", true));
    let mut preamble = b"From: alice@example.com\r\nTo: carol@example.org\r\nSubject: q3\r\nMIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\r\n\r\nRevenue 4.2M, costs 3.1M\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
    preamble.extend_from_slice(&armored);
    preamble.extend_from_slice(b"\r\n--b--\r\n");
    for msg in [figures.to_vec(), preamble] {
        let r = submit(
            &proxy,
            ca,
            "alice@example.com",
            &["carol@example.org"],
            &msg,
        );
        assert!(!r.ok, "{r:?}");
        assert_eq!(r.code, 550, "{r:?}");
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(sink.messages().is_empty(), "something left");
}

fn common_crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in data {
        if b == b'\n' && out.last() != Some(&b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

#[test]
fn upstream_verdicts_reach_the_client() {
    let ca = TestCa::shared();
    let sink = Sink::start_with(
        ca,
        SinkConfig {
            reject_rcpt: vec!["refuse-me".into()],
            ..SinkConfig::default()
        },
    );
    let proxy = Proxy::start(ca, &ProxyOptions::new(sink.port));

    // Wrong password: the provider's 535 comes back.
    let msg = message("x@example.org", "", "s", "b\r\n");
    let mut p = PySend::new(
        proxy.smtp_port,
        PySendMode::StartTls,
        "alice@example.com",
        &["x@example.org"],
        &msg,
    );
    p.cafile = Some(&ca.ca_pem);
    p.login = Some(("sinkuser", "wrong"));
    let r = py_sendmail(&p);
    assert_eq!(r.code, 535, "{r:?}");

    // A recipient the provider refuses: its reply, and nothing is reported sent.
    let r = submit(
        &proxy,
        ca,
        "alice@example.com",
        &["refuse-me@example.org"],
        &msg,
    );
    assert!(!r.ok);
    assert_eq!(r.code, 550, "{r:?}");
    assert!(r.error.contains("5.1.1"), "{r:?}");
    sink.assert_no_messages(Duration::from_millis(300));
}

#[test]
fn upstream_down_gives_451_and_the_client_keeps_the_message() {
    let ca = TestCa::shared();
    let sink = Sink::start(ca, SinkMode::Tls);
    let proxy = Proxy::start(ca, &ProxyOptions::new(sink.port));

    // Log in while the provider is up, then take it down before sending.
    let script = r#"
import smtplib, ssl, sys
port, cafile = sys.argv[1], sys.argv[2]
s = smtplib.SMTP("127.0.0.1", int(port), timeout=60)
s.starttls(context=ssl.create_default_context(cafile=cafile))
s.login("sinkuser", "sinkpass")
print("LOGGED_IN", flush=True)
sys.stdin.readline()
try:
    s.sendmail("alice@example.com", ["bob@example.org"], b"Subject: x\r\n\r\nbody\r\n")
    print("SENT")
except smtplib.SMTPResponseException as e:
    print("ERR", e.smtp_code, e.smtp_error.decode())
"#;
    let mut child = Command::new(common::PYTHON)
        .args([
            "-c",
            script,
            &proxy.smtp_port.to_string(),
            ca.ca_pem.to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "LOGGED_IN");
    drop(sink);
    std::thread::sleep(Duration::from_millis(200));
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    out.read_line(&mut rest).unwrap();
    child.wait().unwrap();
    assert!(rest.starts_with("ERR 451 4.4.1"), "{rest}\n{}", proxy.log());
}

#[test]
fn swaks_submits_over_implicit_tls() {
    let ca = TestCa::shared();
    let sink = Sink::start(ca, SinkMode::Tls);
    let mut opts = ProxyOptions::new(sink.port);
    opts.import = keys(&["bob"]);
    let proxy = Proxy::start(ca, &opts);
    let out = Command::new("swaks")
        .args([
            "--server",
            &format!("127.0.0.1:{}", proxy.smtps_port),
            "--tls-on-connect",
            "--auth",
            "PLAIN",
            "--auth-user",
            "sinkuser",
            "--auth-password",
            "sinkpass",
            "--from",
            "alice@example.com",
            "--to",
            "bob@example.org",
            "--header",
            "Subject: via swaks",
            "--body",
            "swaks body",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", proxy.log());
    let got = sink.wait_for_messages(1, WAIT);
    let g = gpg_decrypt("bob", &armored(&got[0].data));
    g.assert_decrypted_signed_by("alice");
    assert!(String::from_utf8_lossy(&g.plaintext).contains("swaks body"));
}

#[test]
fn check_reports_each_problem_and_graceful_stop_exits_zero() {
    let ca = TestCa::shared();
    let sink = Sink::start(ca, SinkMode::Tls);
    let dir = common::tempdir();
    let opts = ProxyOptions::new(sink.port);
    let config = Proxy::write_config(dir.path(), ca, &opts, (0, 0));
    let out = sealpost_cmd(&config, &["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("ok   identity alice@example.com"),
        "{stdout}"
    );
    assert!(stdout.contains("smtp upstream"), "{stdout}");

    // Wrong passphrase and an upstream that is down: both named, non-zero exit.
    let bad_pass = dir.path().join("bad.pass");
    std::fs::write(&bad_pass, "nope\n").unwrap();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            &keyring().alice_pass.display().to_string(),
            &bad_pass.display().to_string(),
        )
        .replace(
            &format!("localhost:{}", sink.port),
            &format!("localhost:{}", common::free_port()),
        );
    std::fs::write(&config, text).unwrap();
    let out = sealpost_cmd(&config, &["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("FAIL identity alice@example.com") && stdout.contains("passphrase"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL account test smtp upstream"),
        "{stdout}"
    );

    // An unknown key in the config is named with its line.
    std::fs::write(&config, "state_dir = \"s\"\nbogus = 1\n").unwrap();
    let out = sealpost_cmd(&config, &["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && stdout.contains("bogus") && stdout.contains("line 2"),
        "{stdout}"
    );

    let mut proxy = Proxy::start(ca, &opts);
    let status = proxy.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status}\n{}", proxy.log());
}

/// Review: one outbound pipeline with the identities of every account served every
/// account's SMTP listener, so a login at another account's provider that happens to be
/// alice's login (another provider, another person) sent mail signed with alice's key.
/// An identity belongs to its account: through another account's listener that login
/// has no identity, so nothing is signed with alice's key or encrypted to it.
#[test]
fn an_identity_signs_only_for_its_own_accounts_listener() {
    let ca = TestCa::shared();
    let sink = Sink::start(ca, SinkMode::Tls);
    let mut opts = ProxyOptions::new(sink.port);
    opts.import = keys(&["bob"]);
    // The harness's `[[identity]]` (alice) belongs to account "test"; account "other"
    // has the same upstream.
    opts.alice_account = Some("test".into());
    opts.extra = format!(
        "[[account]]\nname = \"other\"\n[account.smtp]\nlisten = \"127.0.0.1:0\"\nupstream = \"localhost:{}\"\nupstream_security = \"tls\"\n",
        sink.port
    );
    let proxy = Proxy::start(ca, &opts);
    let other_port = proxy
        .bound
        .port(&common::listeners::Listener::smtp("other", false));
    let msg = message(
        "Bob <bob@example.org>",
        "",
        "hello",
        "through the other door\r\n",
    );
    let mut p = PySend::new(
        other_port,
        PySendMode::StartTls,
        "alice@example.com",
        &["bob@example.org"],
        &msg,
    );
    p.cafile = Some(&ca.ca_pem);
    p.login = Some(("sinkuser", "sinkpass"));
    let r = py_sendmail(&p);
    assert!(r.ok, "{r:?}\n{}", proxy.log());
    let got = sink.wait_for_messages(1, WAIT);
    let data = &got[0].data;
    let kr = keyring();
    let ids = gpg_recipient_keyids(&armored(data));
    assert!(ids.contains(&kr.person("bob").enc_keyid), "{ids:?}");
    assert!(
        !ids.contains(&kr.person("alice").enc_keyid),
        "alice's key belongs to account test: {ids:?}"
    );
    let g = gpg_decrypt("bob", &armored(data));
    assert!(g.decrypted(), "{g}");
    assert!(!g.signed_by("alice"), "signed with alice's key: {g}");

    // Through her own account's listener the same login is alice.
    let r = submit(&proxy, ca, "alice@example.com", &["bob@example.org"], &msg);
    assert!(r.ok, "{r:?}");
    let got = sink.wait_for_messages(2, WAIT);
    gpg_decrypt("bob", &armored(&got[1].data)).assert_decrypted_signed_by("alice");
}

/// A provider that closes a kept connection between messages (with the `421` of an idle
/// timeout): each next message goes out on a new connection, and the client sees every
/// message accepted once.
#[test]
fn a_connection_the_provider_closed_between_messages_is_replaced() {
    let ca = TestCa::shared();
    let sink = Sink::start_with(
        ca,
        SinkConfig {
            close_after: Some(1),
            ..SinkConfig::default()
        },
    );
    let proxy = Proxy::start(ca, &ProxyOptions::new(sink.port));
    let script = r#"
import smtplib, ssl, sys, time
port, cafile = sys.argv[1], sys.argv[2]
s = smtplib.SMTP("127.0.0.1", int(port), timeout=60)
s.starttls(context=ssl.create_default_context(cafile=cafile))
s.login("sinkuser", "sinkpass")
for i in range(3):
    s.sendmail("alice@example.com", ["x@example.org"], b"Subject: n%d\r\n\r\nbody\r\n" % i)
    print("SENT", i, flush=True)
    time.sleep(0.5)
s.quit()
"#;
    let out = Command::new(common::PYTHON)
        .args([
            "-c",
            script,
            &proxy.smtp_port.to_string(),
            ca.ca_pem.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("SENT 2"),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.log()
    );
    let got = sink.wait_for_messages(3, Duration::from_secs(10));
    let subjects: Vec<bool> = (0..3)
        .map(|i| {
            got.iter()
                .any(|m| String::from_utf8_lossy(&m.data).contains(&format!("Subject: n{i}")))
        })
        .collect();
    assert_eq!(subjects, [true; 3]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.messages().len(), 3, "a message was sent twice");
}

/// A message with a Bcc copy whose recipient the provider refuses: the refusal reaches
/// the client and no copy was sent (before, the To copy had already been delivered, so
/// the client's retry would deliver it twice).
#[test]
fn a_refused_bcc_recipient_is_reported_before_any_copy_is_sent() {
    let ca = TestCa::shared();
    let sink = Sink::start_with(
        ca,
        SinkConfig {
            reject_rcpt: vec!["refuse-me".into()],
            ..SinkConfig::default()
        },
    );
    let mut opts = ProxyOptions::new(sink.port);
    opts.import = keys(&["bob"]);
    let proxy = Proxy::start(ca, &opts);
    let msg = message("bob@example.org", "", "Two copies", "hi\r\n");
    let r = submit(
        &proxy,
        ca,
        "alice@example.com",
        &["bob@example.org", "refuse-me@example.net"],
        &msg,
    );
    assert!(!r.ok, "{r:?}");
    assert_eq!(r.code, 550, "{r:?}\n{}", proxy.log());
    sink.assert_no_messages(Duration::from_millis(500));
    // The connection stays usable: the next message goes out.
    let r = submit(&proxy, ca, "alice@example.com", &["bob@example.org"], &msg);
    assert!(r.ok, "{r:?}");
    assert_eq!(sink.wait_for_messages(1, WAIT).len(), 1);
}
