//! SIGHUP reloads the config and keys: open sessions stay, the next connections get the
//! new policy; a config that does not validate is refused and the old one keeps serving.

mod common;

use common::dovecot::Dovecot;
use common::imapclients::RawImap;
use common::proxy::{sealpost_cmd, Proxy, ProxyOptions};
use common::{Sink, SinkMode, TestCa};
use std::process::Command;
use std::time::{Duration, Instant};

fn send(proxy: &Proxy, ca: &TestCa, to: &str) -> common::PySendResult {
    let data = format!("From: alice@example.com\r\nTo: {to}\r\nSubject: s\r\n\r\nhello\r\n");
    proxy.submit_as(ca, ("sinkuser", "sinkpass"), &[to], data.as_bytes())
}

fn hup(proxy: &Proxy) {
    let ok = Command::new("kill")
        .args(["-HUP", &proxy.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// Waits until the log has `n` lines containing `what`.
fn wait_log(proxy: &Proxy, what: &str, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = proxy.log();
        if log.matches(what).count() >= n {
            return log;
        }
        assert!(Instant::now() < deadline, "no {what:?} in the log:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn edit(proxy: &Proxy, from: &str, to: &str) {
    let text = std::fs::read_to_string(&proxy.config).unwrap();
    assert!(text.contains(from), "{from} not in {text}");
    std::fs::write(&proxy.config, text.replace(from, to)).unwrap();
}

#[test]
fn sighup_keeps_sessions_and_applies_the_new_policy() {
    let ca = TestCa::shared();
    let sink = Sink::start(ca, SinkMode::Tls);
    let dovecot = Dovecot::start(ca, &[("alice@example.com", "alicepw")]);
    dovecot.append(
        "alice@example.com",
        "alicepw",
        "INBOX",
        b"From: bob@example.org\r\nSubject: before\r\n\r\nhello\r\n",
        &[],
    );
    let mut opts = ProxyOptions::new(sink.port);
    opts.imap_upstream = Some((dovecot.imaps_port, "tls"));
    opts.alice_login = "alice@example.com".into();
    let mut proxy = Proxy::start(ca, &opts);

    let mut imap = RawImap::connect_login(
        proxy.imap_port,
        "starttls",
        Some(&ca.ca_pem),
        "alice@example.com",
        "alicepw",
    );
    assert!(imap.command("SELECT INBOX").is_ok());
    // Opportunistic: no key for nobody@, so it goes out plain.
    assert!(send(&proxy, ca, "nobody@example.net").ok);

    edit(
        &proxy,
        "default = \"opportunistic\"",
        "default = \"require\"",
    );
    hup(&proxy);
    wait_log(&proxy, "reloaded the config and keys", 1);

    // The session opened before the reload goes on.
    assert!(imap.command("NOOP").is_ok());
    let r = imap.command("UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
    assert!(r.is_ok(), "{}", r.tagged_text());
    assert!(String::from_utf8_lossy(&r.untagged).contains("Subject: before"));
    // The next message meets the new policy.
    let refused = send(&proxy, ca, "nobody@example.net");
    assert!(!refused.ok && refused.code == 550, "{refused:?}");
    assert_eq!(sink.messages().len(), 1);

    let out = sealpost_cmd(&proxy.config, &["status", "--json"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"reloads\": 1"));
    assert!(imap.command("LOGOUT").is_ok());
    assert!(proxy.terminate(Duration::from_secs(20)).success());
}

#[test]
fn an_invalid_config_on_sighup_is_refused_and_the_old_one_serves() {
    let ca = TestCa::shared();
    let sink = Sink::start(ca, SinkMode::Tls);
    let proxy = Proxy::start(ca, &ProxyOptions::new(sink.port));

    // Not valid: the reason (file, key, accepted values) is logged.
    edit(
        &proxy,
        "default = \"opportunistic\"",
        "default = \"sometimes\"",
    );
    hup(&proxy);
    let log = wait_log(&proxy, "reload refused", 1);
    let line = log.lines().find(|l| l.contains("reload refused")).unwrap();
    assert!(line.contains(&proxy.config.display().to_string()), "{line}");
    assert!(
        line.contains("sometimes") && line.contains("require"),
        "{line}"
    );

    // Valid TOML, but a passphrase that does not unlock the key: refused too.
    edit(&proxy, "default = \"sometimes\"", "default = \"require\"");
    let wrong = proxy.dir.path().join("wrong.pass");
    std::fs::write(&wrong, "wrong\n").unwrap();
    let text = std::fs::read_to_string(&proxy.config).unwrap();
    let pass_line = text
        .lines()
        .find(|l| l.starts_with("passphrase_file"))
        .unwrap()
        .to_string();
    edit(
        &proxy,
        &pass_line,
        &format!("passphrase_file = \"{}\"", wrong.display()),
    );
    hup(&proxy);
    let log = wait_log(&proxy, "reload refused", 2);
    assert!(log.contains("does not unlock"), "{log}");

    // The old configuration (opportunistic) still serves.
    assert!(send(&proxy, ca, "nobody@example.net").ok);
    sink.wait_for_messages(1, Duration::from_secs(20));
}

/// Review: the audit sink is opened once, at start. A SIGHUP that added `[audit]` was
/// reported as applied, and nothing was audited. Such a reload is refused now, with
/// the reason, and says to restart.
#[test]
fn a_reload_that_would_change_the_audit_is_refused() {
    let ca = TestCa::shared();
    let sink = Sink::start(ca, SinkMode::Tls);
    let proxy = Proxy::start(ca, &ProxyOptions::new(sink.port));
    let audit = proxy.dir.path().join("audit.jsonl");
    let mut text = std::fs::read_to_string(&proxy.config).unwrap();
    text.push_str(&format!(
        "\n[audit]\nfile = {:?}\n",
        audit.display().to_string()
    ));
    std::fs::write(&proxy.config, text).unwrap();
    hup(&proxy);
    let log = wait_log(&proxy, "reload refused", 1);
    let line = log.lines().find(|l| l.contains("reload refused")).unwrap();
    assert!(line.contains("audit") && line.contains("restart"), "{line}");
    assert!(!log.contains("reloaded the config"), "{log}");
    assert!(send(&proxy, ca, "nobody@example.net").ok);
    sink.wait_for_messages(1, Duration::from_secs(20));
    assert!(
        !audit.exists(),
        "nothing claims to audit what is not audited"
    );
}
