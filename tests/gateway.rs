//! The company-gateway features end to end: the audit log and the Prometheus endpoint
//! of a real `sealpost run`, after real SMTP submissions relayed to the test upstream
//! (aiosmtpd over TLS) and IMAP fetches from a real Dovecot, read back with serde_json
//! and scraped with curl.

mod common;

use common::prometheus::{parse_exposition, scrape, value};
use common::proxy::{sealpost_cmd, Proxy, ProxyOptions};
use common::{free_port, keyring, py_sendmail, PySend, PySendMode, Sink, SinkMode, TestCa};
use std::process::Command;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

fn message(to: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Alice <alice@example.com>\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\nMessage-ID: <g-{subject}@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

fn submit(proxy: &Proxy, ca: &TestCa, rcpts: &[&str], data: &[u8]) -> common::PySendResult {
    proxy.submit_as(ca, ("sinkuser", "sinkpass"), rcpts, data)
}

#[test]
fn audit_log_and_metrics_record_every_outbound_decision() {
    let ca = TestCa::shared();
    let sink = Sink::start(ca, SinkMode::Tls);
    let audit_dir = common::tempdir();
    let audit_path = audit_dir.path().join("audit.jsonl");
    let mut opts = ProxyOptions::new(sink.port);
    opts.import = vec![keyring().person("bob").pub_asc.clone()];
    opts.extra = format!(
        "[audit]\nfile = \"{}\"\njournal = true\n[metrics]\nlisten = \"127.0.0.1:0\"\n\
         [[policy.rule]]\nrecipient = \"secret.example\"\naction = \"require\"\n",
        audit_path.display()
    );
    let proxy = Proxy::start(ca, &opts);
    let metrics_port = proxy.metrics_port();

    // sealpost check sees the audit file and the metrics address (in use: by the proxy,
    // on the port it was given for `127.0.0.1:0`, written into a copy of its config).
    let mut table: toml::Table = std::fs::read_to_string(&proxy.config)
        .unwrap()
        .parse()
        .unwrap();
    table["metrics"]["listen"] = format!("127.0.0.1:{metrics_port}").into();
    let pinned = proxy.dir.path().join("pinned.toml");
    std::fs::write(&pinned, toml::to_string(&table).unwrap()).unwrap();
    let check = sealpost_cmd(&pinned, &["check"]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        report.contains(&format!(
            "ok   audit log: {} is writable",
            audit_path.display()
        )),
        "{report}"
    );
    assert!(report.contains("FAIL metrics listen"), "{report}");

    let (code, before) = scrape(metrics_port);
    assert_eq!(code, 200);
    let before = parse_exposition(&before);

    let words = ["Marzipan", "Quokka", "Zeppelin"];
    let r = submit(
        &proxy,
        ca,
        &["bob@example.org"],
        &message(
            "bob@example.org",
            &format!("{} one", words[0]),
            "Quokka body",
        ),
    );
    assert!(r.ok, "{r:?}");
    let r = submit(
        &proxy,
        ca,
        &["carol@example.org"],
        &message("carol@example.org", "Zeppelin two", "Marzipan body"),
    );
    assert!(r.ok, "{r:?}");
    let r = submit(
        &proxy,
        ca,
        &["bob@example.org", "eve@secret.example"],
        &message(
            "bob@example.org, eve@secret.example",
            "Quokka three",
            "Zeppelin body",
        ),
    );
    assert_eq!(r.code, 550, "{r:?}");
    assert_eq!(sink.wait_for_messages(2, WAIT).len(), 2);

    // The audit file: private, one JSON object per line, exactly these three.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&audit_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&audit_path).unwrap();
    for w in words {
        assert!(!text.contains(w), "{w} reached the audit log:\n{text}");
        assert!(
            !text.contains("sinkpass"),
            "a credential reached the audit log"
        );
    }
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(records.len(), 3, "{text}");
    let bob_fpr = keyring().person("bob").fpr.clone();
    for r in &records {
        assert_eq!(r["event"], "outbound");
        assert_eq!(r["account"], "test");
        assert_eq!(r["sender"], "alice@example.com");
        let time = r["time"].as_str().unwrap();
        assert!(
            time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
            "{time}"
        );
    }
    let strip_time = |r: &serde_json::Value| {
        let mut r = r.clone();
        r.as_object_mut().unwrap().remove("time");
        r
    };
    let expected = [
        serde_json::json!({"event": "outbound", "account": "test", "sender": "alice@example.com",
            "login": "sinkuser", "outcome": "relayed", "code": 250, "recipients": [
                {"address": "bob@example.org", "decision": "encrypted", "vouch": "local",
                 "keys": [{"fingerprint": bob_fpr}]}]}),
        serde_json::json!({"event": "outbound", "account": "test", "sender": "alice@example.com",
            "login": "sinkuser", "outcome": "relayed", "code": 250, "recipients": [
                {"address": "carol@example.org", "decision": "plain"}]}),
        serde_json::json!({"event": "outbound", "account": "test", "sender": "alice@example.com",
            "login": "sinkuser", "outcome": "refused", "code": 550, "recipients": [
                {"address": "bob@example.org", "decision": "encrypted", "vouch": "local",
                 "keys": [{"fingerprint": bob_fpr}]},
                {"address": "eve@secret.example", "decision": "refused"}]}),
    ];
    for (got, want) in records.iter().zip(&expected) {
        assert_eq!(&strip_time(got), want);
    }
    // journal = true: the same records as log events with the fixed target.
    let log = proxy.log();
    assert_eq!(log.matches("sealpost::audit").count(), 3, "{log}");
    for w in words {
        assert!(!log.contains(w), "{w} reached the log");
    }

    // Metrics moved by exactly the run's amounts.
    let deadline = Instant::now() + WAIT;
    let after = loop {
        let (code, text) = scrape(metrics_port);
        assert_eq!(code, 200);
        let s = parse_exposition(&text);
        // Sessions end just after the client's QUIT.
        if value(&s, "sealpost_connections_open{protocol=\"smtp\"}") == 0.0
            || Instant::now() > deadline
        {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let delta = |k: &str| value(&after, k) - value(&before, k);
    for (series, want) in [
        (
            "sealpost_smtp_messages_total{account=\"test\",result=\"relayed\"}",
            2.0,
        ),
        (
            "sealpost_smtp_messages_total{account=\"test\",result=\"refused\"}",
            1.0,
        ),
        (
            "sealpost_smtp_messages_total{account=\"test\",result=\"failed\"}",
            0.0,
        ),
        (
            "sealpost_smtp_recipients_total{account=\"test\",decision=\"encrypted\"}",
            2.0,
        ),
        (
            "sealpost_smtp_recipients_total{account=\"test\",decision=\"plain\"}",
            1.0,
        ),
        (
            "sealpost_smtp_recipients_total{account=\"test\",decision=\"refused\"}",
            1.0,
        ),
        (
            "sealpost_key_lookups_total{source=\"store\",result=\"found\"}",
            2.0,
        ),
        (
            "sealpost_key_lookups_total{source=\"store\",result=\"not_found\"}",
            2.0,
        ),
        (
            "sealpost_key_lookups_total{source=\"autocrypt\",result=\"not_found\"}",
            2.0,
        ),
        ("sealpost_connections_total{protocol=\"smtp\"}", 3.0),
        ("sealpost_smtp_relay_duration_seconds_count", 3.0),
        ("sealpost_upstream_errors_total{protocol=\"smtp\"}", 0.0),
    ] {
        assert_eq!(delta(series), want, "{series}");
    }
    assert_eq!(
        value(&after, "sealpost_connections_open{protocol=\"smtp\"}"),
        0.0
    );
    assert_eq!(
        value(
            &after,
            "sealpost_smtp_relay_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        3.0
    );
    // No address is ever a label.
    assert!(!after.keys().any(|k| k.contains('@')), "{after:?}");

    // Anything but GET /metrics is refused.
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://127.0.0.1:{metrics_port}/other"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
}

#[test]
fn an_unwritable_audit_file_stops_start_up_and_check() {
    let ca = TestCa::shared();
    let dir = common::tempdir();
    let mut opts = ProxyOptions::new(free_port());
    opts.extra = "[audit]\nfile = \"/nonexistent-sealpost/audit.jsonl\"\n".into();
    let config = Proxy::write_config(dir.path(), ca, &opts, (0, 0));
    let out = Command::new(common::proxy::sealpost_bin())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent-sealpost/audit.jsonl") && err.contains("[audit] file"),
        "{err}"
    );
    let check = sealpost_cmd(&config, &["check"]);
    assert!(!check.status.success());
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        report.contains("FAIL audit log") && report.contains("/nonexistent-sealpost/audit.jsonl"),
        "{report}"
    );
}

fn pgp_mime(outer: &str, armored: &[u8]) -> Vec<u8> {
    let mut m = format!(
        "{outer}MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"enc-b\"\r\n\r\n--enc-b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--enc-b\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n"
    )
    .into_bytes();
    m.extend_from_slice(
        &String::from_utf8_lossy(armored)
            .replace('\n', "\r\n")
            .into_bytes(),
    );
    m.extend_from_slice(b"\r\n--enc-b--\r\n");
    m
}

/// Every message of INBOX through sealpost as `user`: (UID, BODY[]).
fn fetch_all(proxy: &Proxy, ca: &TestCa, user: &str, pass: &str) -> Vec<(u32, String)> {
    let mut c =
        common::RawImap::connect_login(proxy.imap_port, "starttls", Some(&ca.ca_pem), user, pass);
    c.command_ok("SELECT INBOX");
    let raw = c.command_ok("UID FETCH 1:* (UID BODY.PEEK[])");
    common::parse_fetches(&raw)
        .iter()
        .map(|f| {
            let uid = String::from_utf8_lossy(f.get("UID").unwrap())
                .parse()
                .unwrap();
            (
                uid,
                String::from_utf8_lossy(f.get("BODY[]").unwrap()).into_owned(),
            )
        })
        .collect()
}

#[test]
fn secret_dir_users_decrypt_through_imap_and_each_decryption_is_audited() {
    let ca = TestCa::shared();
    let kr = keyring();
    let users = [
        ("bob@example.org", "bobpw"),
        ("alice@example.com", "alicepw"),
    ];
    let dovecot = common::Dovecot::start(ca, &users);
    let inner = |subject: &str, text: &str| {
        format!("Content-Type: text/plain; charset=us-ascii; protected-headers=\"v1\"\r\nSubject: {subject}\r\n\r\n{text}\r\n")
    };
    // A good signature counts for the From it shows (see README "Which keys are believed").
    let outer = |from: &str, to: &str| {
        format!(
            "From: {from}\r\nTo: {to}\r\nSubject: [...]\r\nMessage-ID: <{}@example.net>\r\n",
            to.len()
        )
    };
    let for_bob = pgp_mime(
        &outer("alice@example.com", "bob@example.org"),
        &common::gpg_encrypt(
            Some("alice"),
            &["bob"],
            inner("Walrus plans", "Pelican text").as_bytes(),
            true,
        ),
    );
    let for_carol = pgp_mime(
        &outer("alice@example.com", "carol@example.org"),
        &common::gpg_encrypt(
            Some("alice"),
            &["carol"],
            inner("Walrus", "Pelican").as_bytes(),
            true,
        ),
    );
    let for_alice = pgp_mime(
        &outer("bob@example.org", "alice@example.com"),
        &common::gpg_encrypt(
            Some("bob"),
            &["alice"],
            inner("Walrus notes", "Pelican news").as_bytes(),
            true,
        ),
    );
    let bob_uid = dovecot.append(users[0].0, users[0].1, "INBOX", &for_bob, &[]);
    let carol_uid = dovecot.append(users[0].0, users[0].1, "INBOX", &for_carol, &[]);
    let alice_uid = dovecot.append(users[1].0, users[1].1, "INBOX", &for_alice, &[]);

    // No [[identity]]: both keys come from the folder (alice's with its passphrase file).
    let secrets = common::tempdir();
    std::fs::copy(
        &kr.bob().sec_asc,
        secrets.path().join("bob@example.org.asc"),
    )
    .unwrap();
    std::fs::copy(
        &kr.alice().sec_asc,
        secrets.path().join("alice@example.com.asc"),
    )
    .unwrap();
    std::fs::copy(
        &kr.alice_pass,
        secrets.path().join("alice@example.com.pass"),
    )
    .unwrap();
    // A passphrase file group or others can read is refused.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            secrets.path().join("alice@example.com.pass"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    let audit_path = secrets.path().join("audit.jsonl");
    let mut opts = ProxyOptions::new(1);
    opts.alice_identity = false;
    opts.imap_upstream = Some((dovecot.imaps_port, "tls"));
    opts.import = vec![kr.alice().pub_asc.clone(), kr.bob().pub_asc.clone()];
    opts.keys_extra
        .push_str(&format!("secret_dir = \"{}\"\n", secrets.path().display()));
    opts.extra = format!(
        "[audit]\nfile = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        audit_path.display()
    );
    let proxy = Proxy::start(ca, &opts);
    let metrics_port = proxy.metrics_port();
    let check = sealpost_cmd(&proxy.config, &["check"]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(report.contains("holds 2 secret key file(s)"), "{report}");

    let before = parse_exposition(&scrape(metrics_port).1);
    let bob = fetch_all(&proxy, ca, users[0].0, users[0].1);
    let body = |uid| &bob.iter().find(|(u, _)| *u == uid).unwrap().1;
    assert!(body(bob_uid).contains("Pelican text"), "{}", body(bob_uid));
    assert!(
        body(bob_uid).contains("Subject: Walrus plans\r\n"),
        "{}",
        body(bob_uid)
    );
    assert!(
        !body(carol_uid).contains("Pelican"),
        "carol's message stays encrypted"
    );
    assert!(body(carol_uid).contains("-----BEGIN PGP MESSAGE-----"));
    let alice = fetch_all(&proxy, ca, users[1].0, users[1].1);
    assert!(alice[0].1.contains("Pelican news"), "{}", alice[0].1);

    // One audit record per decryption, and nothing from the messages.
    let text = std::fs::read_to_string(&audit_path).unwrap();
    assert!(
        !text.contains("Walrus") && !text.contains("Pelican"),
        "{text}"
    );
    let mut records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    records.sort_by_key(|r| {
        (
            r["identity"].as_str().unwrap().to_string(),
            r["uid"].as_u64(),
        )
    });
    for r in &mut records {
        r.as_object_mut().unwrap().remove("time").expect("a time");
    }
    let alice_fpr = &kr.alice().fpr;
    let bob_fpr = &kr.bob().fpr;
    assert_eq!(
        records,
        vec![
            serde_json::json!({"event": "decryption", "account": "test", "identity": "alice@example.com",
                "mailbox": "INBOX", "uid": alice_uid, "result": "decrypted", "signature": "good", "signer": bob_fpr}),
            serde_json::json!({"event": "decryption", "account": "test", "identity": "bob@example.org",
                "mailbox": "INBOX", "uid": bob_uid, "result": "decrypted", "signature": "good", "signer": alice_fpr}),
            serde_json::json!({"event": "decryption", "account": "test", "identity": "bob@example.org",
                "mailbox": "INBOX", "uid": carol_uid, "result": "undecryptable", "reason": "no key"}),
        ]
    );

    let (code, text) = scrape(metrics_port);
    assert_eq!(code, 200);
    let m = parse_exposition(&text);
    for (series, want) in [
        (
            "sealpost_imap_decryptions_total{account=\"test\",result=\"decrypted\"}",
            2.0,
        ),
        (
            "sealpost_imap_decryptions_total{account=\"test\",result=\"undecryptable\"}",
            1.0,
        ),
        ("sealpost_connections_total{protocol=\"imap\"}", 2.0),
        ("sealpost_imap_decrypt_duration_seconds_count", 3.0),
    ] {
        assert_eq!(
            value(&m, series) - value(&before, series),
            want,
            "{series}\n{text}"
        );
    }
}

#[test]
fn a_secret_dir_user_sends_mail_signed_with_the_key_from_the_folder() {
    let ca = TestCa::shared();
    let kr = keyring();
    let sink = Sink::start_with(
        ca,
        common::SinkConfig {
            user: "bob@example.org".into(),
            password: "bobpw".into(),
            ..common::SinkConfig::default()
        },
    );
    let secrets = common::tempdir();
    std::fs::copy(
        &kr.bob().sec_asc,
        secrets.path().join("bob@example.org.asc"),
    )
    .unwrap();
    let mut opts = ProxyOptions::new(sink.port);
    opts.alice_identity = false;
    opts.import = vec![kr.alice().pub_asc.clone()];
    opts.keys_extra
        .push_str(&format!("secret_dir = \"{}\"\n", secrets.path().display()));
    let proxy = Proxy::start(ca, &opts);

    let msg = String::from_utf8(message("alice@example.com", "Heron", "Osprey body"))
        .unwrap()
        .replace(
            "From: Alice <alice@example.com>",
            "From: Bob <bob@example.org>",
        );
    let mut p = PySend::new(
        proxy.smtp_port,
        PySendMode::StartTls,
        "bob@example.org",
        &["alice@example.com"],
        msg.as_bytes(),
    );
    p.cafile = Some(&ca.ca_pem);
    p.login = Some(("bob@example.org", "bobpw"));
    let r = py_sendmail(&p);
    assert!(r.ok, "{r:?}\n{}", proxy.log());
    let got = sink.wait_for_messages(1, WAIT);
    let text = got[0].text();
    let start = text.find("-----BEGIN PGP MESSAGE-----").expect("encrypted");
    let end = text.find("-----END PGP MESSAGE-----").unwrap() + 25;
    // Alice reads it, signed by bob's key from the folder; bob (the sender) can too.
    let armored = &text.as_bytes()[start..end];
    common::gpg_decrypt("alice", armored).assert_decrypted_signed_by("bob");
    assert!(common::gpg_decrypt("bob", armored).decrypted());
}

#[test]
fn an_unreachable_provider_is_counted_as_an_upstream_error() {
    let ca = TestCa::shared();
    // Nothing listens on the upstream port.
    let mut opts = ProxyOptions::new(free_port());
    opts.extra = "[metrics]\nlisten = \"127.0.0.1:0\"\n".into();
    let proxy = Proxy::start(ca, &opts);
    let metrics_port = proxy.metrics_port();
    let r = submit(
        &proxy,
        ca,
        &["bob@example.org"],
        &message("bob@example.org", "x", "y"),
    );
    assert!(!r.ok);
    assert_eq!(r.code, 454, "{r:?}");
    let m = parse_exposition(&scrape(metrics_port).1);
    // One per AUTH attempt (smtplib tries PLAIN, then LOGIN), each logged.
    let attempts = proxy
        .log()
        .matches("upstream unreachable during AUTH")
        .count();
    assert!(attempts >= 1);
    assert_eq!(
        value(&m, "sealpost_upstream_errors_total{protocol=\"smtp\"}"),
        attempts as f64
    );
    assert_eq!(
        value(
            &m,
            "sealpost_smtp_messages_total{account=\"test\",result=\"relayed\"}"
        ),
        0.0
    );
}

/// The exposition reader the tests above rely on refuses what Prometheus would.
#[test]
fn the_exposition_reader_refuses_malformed_text() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"q\\\"uote\",y=\"2\"} 3\n";
    assert_eq!(
        value(&parse_exposition(ok), "a_total{x=\"q\\\"uote\",y=\"2\"}"),
        3.0
    );
    for bad in [
        "a_total 1\n",                                    // no # TYPE
        "# TYPE a_total counter\na_total one\n",          // not a number
        "# TYPE a_total counter\na_total{x=\"1} 1\n",     // unterminated label value
        "# TYPE a_total counter\n1a_total 1\n",           // illegal name
        "# TYPE a_total counter\na_total 1\na_total 2\n", // one series twice
        "# TYPE a_total countr\na_total 1\n",             // unknown type
        "# TYPE a_total counter\na_total 1",              // no final newline
    ] {
        let r = std::panic::catch_unwind(|| parse_exposition(bad));
        assert!(r.is_err(), "accepted {bad:?}");
    }
}

#[test]
fn sealpost_seal_works_for_a_secret_dir_user() {
    let ca = TestCa::shared();
    let kr = keyring();
    let (user, pass) = ("bob@example.org", "bobpw");
    let dovecot = common::Dovecot::start(ca, &[(user, pass)]);
    let plain = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: Ibis\r\nMessage-ID: <ibis@example.com>\r\n\r\nKestrel figures\r\n";
    dovecot.append(user, pass, "INBOX", plain, &[]);
    let secrets = common::tempdir();
    std::fs::copy(
        &kr.bob().sec_asc,
        secrets.path().join("bob@example.org.asc"),
    )
    .unwrap();
    let mut opts = ProxyOptions::new(1);
    opts.alice_identity = false;
    opts.imap_upstream = Some((dovecot.imaps_port, "tls"));
    opts.keys_extra
        .push_str(&format!("secret_dir = \"{}\"\n", secrets.path().display()));
    let dir = common::tempdir();
    let config = Proxy::write_config_imap(dir.path(), ca, &opts, (0, 0), (0, 0));
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{pass}\n")).unwrap();
    let args = [
        "seal",
        "--login",
        user,
        "--mailbox",
        "INBOX",
        "--password-file",
    ];
    let mut args: Vec<&str> = args.to_vec();
    args.push(pw.to_str().unwrap());
    let out = sealpost_cmd(&config, &args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("sealed 1,"), "{text}");
    // At the provider: only the sealed copy, which bob's key opens.
    let uids = dovecot.uids(user, pass, "INBOX");
    assert_eq!(uids.len(), 1);
    let stored = dovecot.fetch_body(user, pass, "INBOX", uids[0]);
    let stored = String::from_utf8_lossy(&stored);
    assert!(!stored.contains("Kestrel"), "{stored}");
    let start = stored.find("-----BEGIN PGP MESSAGE-----").expect("sealed");
    let end = stored.find("-----END PGP MESSAGE-----").unwrap() + 25;
    let g = common::gpg_decrypt("bob", &stored.as_bytes()[start..end]);
    assert!(
        String::from_utf8_lossy(&g.plaintext).contains("Kestrel figures"),
        "{g}"
    );
    // A login with no key anywhere is refused with a reason.
    let out = sealpost_cmd(
        &config,
        &[
            "seal",
            "--login",
            "carol@example.org",
            "--mailbox",
            "INBOX",
            "--password-file",
            pw.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("secret_dir has no key"));
}
