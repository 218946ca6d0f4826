//! `sealpost status` against a running instance: listeners, connections, per-account
//! counts of what was encrypted, sent plain, refused and decrypted, the key store size
//! and the last errors, as text and as JSON, over a 0600 control socket.

mod common;

use common::dovecot::Dovecot;
use common::imapclients::RawImap;
use common::listeners::{wait_for_bound, Listener};
use common::proxy::{sealpost_cmd, Proxy, ProxyOptions};
use common::{gpg_encrypt, keyring, Sink, SinkMode, TestCa};
use std::time::Duration;

fn send(proxy: &Proxy, ca: &TestCa, to: &str) -> common::PySendResult {
    let data = format!("From: alice@example.com\r\nTo: {to}\r\nSubject: s\r\n\r\nhello\r\n");
    proxy.submit_as(ca, ("sinkuser", "sinkpass"), &[to], data.as_bytes())
}

fn num(j: &serde_json::Value, path: &[&str]) -> f64 {
    let mut v = j;
    for p in path {
        v = v
            .get(p)
            .unwrap_or_else(|| panic!("no {p} in {path:?}: {j:?}"));
    }
    v.as_f64().unwrap_or_else(|| panic!("{path:?} is {v:?}"))
}

#[test]
fn status_reports_what_the_running_instance_did() {
    let ca = TestCa::shared();
    let sink = Sink::start(ca, SinkMode::Tls);
    let dovecot = Dovecot::start(ca, &[("alice@example.com", "alicepw")]);
    let kr = keyring();
    let mut opts = ProxyOptions::new(sink.port);
    opts.imap_upstream = Some((dovecot.imaps_port, "tls"));
    opts.alice_login = "alice@example.com".into();
    opts.import = vec![kr.bob().pub_asc.clone()];
    opts.rules = vec![("*@partner.example".into(), "require".into())];
    let proxy = Proxy::start(ca, &opts);

    // One encrypted (bob has a key), one plain (nobody@ has none), one refused.
    assert!(send(&proxy, ca, "bob@example.org").ok);
    assert!(send(&proxy, ca, "nobody@example.net").ok);
    assert!(!send(&proxy, ca, "x@partner.example").ok);
    sink.wait_for_messages(2, Duration::from_secs(20));

    // One message decrypted through the IMAP proxy; the connection stays open.
    let armored = gpg_encrypt(
        None,
        &["alice"],
        b"Subject: inner\r\n\r\nsecret text\r\n",
        true,
    );
    let mut msg = b"From: bob@example.org\r\nTo: alice@example.com\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
    msg.extend_from_slice(&armored);
    msg.extend_from_slice(b"\r\n--b--\r\n");
    dovecot.append("alice@example.com", "alicepw", "INBOX", &msg, &[]);
    let mut imap = RawImap::connect_login(
        proxy.imap_port,
        "starttls",
        Some(&ca.ca_pem),
        "alice@example.com",
        "alicepw",
    );
    assert!(imap.command("SELECT INBOX").is_ok());
    let r = imap.command("UID FETCH 1:* (BODY.PEEK[])");
    assert!(
        String::from_utf8_lossy(&r.untagged).contains("secret text"),
        "not decrypted: {}",
        String::from_utf8_lossy(&r.untagged)
    );

    let socket = proxy.dir.path().join("state/control.sock");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "control socket mode {mode:o}");

    let out = sealpost_cmd(&proxy.config, &["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let j: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(num(&j, &["accounts", "test", "encrypted"]), 1.0, "{text}");
    assert_eq!(num(&j, &["accounts", "test", "sent_plain"]), 1.0, "{text}");
    assert_eq!(num(&j, &["accounts", "test", "refused"]), 1.0, "{text}");
    assert_eq!(
        num(&j, &["accounts", "test", "decryptions", "decrypted"]),
        1.0,
        "{text}"
    );
    assert_eq!(num(&j, &["key_store_certificates"]), 1.0, "{text}");
    assert!(num(&j, &["connections_open"]) >= 1.0, "{text}");
    // Three SMTP connections and one IMAP connection so far.
    assert!(num(&j, &["connections_total"]) >= 4.0, "{text}");
    assert_eq!(num(&j, &["pid"]), f64::from(proxy.pid()), "{text}");
    let Some(listeners) = j.get("listeners").and_then(|l| l.as_array()) else {
        panic!("{text}")
    };
    assert_eq!(listeners.len(), 4, "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{}", proxy.imap_port)),
        "{text}"
    );
    assert!(
        !text.contains("alicepw") && !text.contains("sinkpass"),
        "{text}"
    );

    let out = sealpost_cmd(&proxy.config, &["status"]);
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{human}");
    assert!(
        human.contains("test: encrypted 1, sent plain 1, refused 1; views: decrypted 1"),
        "{human}"
    );
    assert!(human.contains("account test imap (STARTTLS)"), "{human}");
    assert!(human.contains("key store: 1 certificate(s)"), "{human}");
    drop(imap);

    drop(proxy);
}

/// The last warnings are shown: here, a provider that cannot be reached.
#[test]
fn status_shows_the_last_errors() {
    let ca = TestCa::shared();
    let mut opts = ProxyOptions::new(common::free_port());
    opts.alice_identity = false;
    let proxy = Proxy::start(ca, &opts);
    let r = send(&proxy, ca, "bob@example.org");
    assert!(!r.ok);
    let out = sealpost_cmd(&proxy.config, &["status"]);
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{human}");
    let errors = human.split("last errors:").nth(1).unwrap_or("");
    assert!(
        errors.contains("WARN") && errors.contains("upstream unreachable"),
        "{human}"
    );
    assert!(!errors.contains("sinkpass"), "{human}");
}

#[test]
fn status_without_a_running_instance_says_so() {
    let ca = TestCa::shared();
    let dir = common::tempdir();
    let config = Proxy::write_config(dir.path(), ca, &ProxyOptions::new(1), (0, 0));
    let out = sealpost_cmd(&config, &["status"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no running sealpost"), "{err}");
    assert!(err.contains("control.sock"), "{err}");
}

/// Two instances on one state_dir without `instance` names: the second must not take the
/// first one's control socket (nor remove it when it stops); it serves mail without one
/// and says how to fix it.
#[test]
fn a_second_instance_on_the_same_state_dir_leaves_the_first_ones_socket_alone() {
    let ca = TestCa::shared();
    let sink = Sink::start(ca, SinkMode::Tls);
    let first = Proxy::start(ca, &ProxyOptions::new(sink.port));
    // The same config (listeners on port 0: other ports), so the same state_dir.
    let second_config = first.dir.path().join("second.toml");
    std::fs::copy(&first.config, &second_config).unwrap();
    let log_path = first.dir.path().join("second.log");
    /// Killed if the test fails before it stops the instance itself.
    struct Second(std::process::Child);
    impl Drop for Second {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut second = Second(
        std::process::Command::new(common::proxy::sealpost_bin())
            .args(["run", "--config"])
            .arg(&second_config)
            .env("SEALPOST_LOG", "info")
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let q1 = wait_for_bound(
        &second_config,
        &log_path,
        0,
        &mut second.0,
        Duration::from_secs(30),
    )
    .port(&Listener::smtp("test", false));
    let status_pid = || {
        let out = sealpost_cmd(&first.config, &["status", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["pid"].as_u64().unwrap()
    };
    assert_eq!(status_pid(), u64::from(first.pid()));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("another running sealpost answers on")
            && log.contains("need `instance = \"...\"` each"),
        "{log}"
    );
    // The second still serves mail.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", q1)).unwrap();
    let mut greeting = [0u8; 4];
    std::io::Read::read_exact(&mut s, &mut greeting).unwrap();
    assert_eq!(&greeting, b"220 ");
    drop(s);
    let _ = std::process::Command::new("kill")
        .arg(second.0.id().to_string())
        .status();
    assert!(second.0.wait().unwrap().success());
    assert_eq!(
        status_pid(),
        u64::from(first.pid()),
        "the first lost its socket"
    );
}
