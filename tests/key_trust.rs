//! Which keys are believed, end to end: a certificate from a Web Key Directory speaks
//! only for the address it was found for, and Autocrypt headers in Junk teach nothing.

mod common;

use common::dovecot::Dovecot;
use common::imapclients::RawImap;
use common::proxy::{sealpost_cmd, Proxy, ProxyOptions};
use common::{
    gpg_export_binary, py_sendmail, KeyServer, PySend, PySendMode, PySendResult, Sink, SinkConfig,
    SinkMode, TestCa,
};
use openpgp::cert::CertBuilder;
use openpgp::serialize::SerializeInto;
use sequoia_openpgp as openpgp;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn send_as(proxy: &Proxy, ca: &TestCa, to: &str, login: (&str, &str)) -> PySendResult {
    let msg =
        format!("From: alice@example.com\r\nTo: {to}\r\nSubject: trust\r\n\r\nsecret words\r\n");
    proxy.submit_as(ca, login, &[to], msg.as_bytes())
}

#[test]
fn a_wkd_certificate_claiming_another_domain_is_not_used_for_it() {
    let ca = TestCa::shared();
    let sink = Sink::start(ca, SinkMode::Tls);
    let ks = KeyServer::start_with_hosts(
        ca,
        &[
            "openpgpkey.evil.example",
            "evil.example",
            "openpgpkey.corp.example",
            "corp.example",
        ],
    );
    // evil.example's WKD serves, for a@evil.example, a certificate that also claims
    // the CEO of corp.example.
    let (evil, _) = CertBuilder::general_purpose(Some("<a@evil.example>"))
        .add_userid("CEO <ceo@corp.example>")
        .generate()
        .unwrap();
    let public = evil.strip_secret_key_material().to_vec().unwrap();
    ks.publish_wkd_advanced("a@evil.example", &public);
    let mut opts = ProxyOptions::new(sink.port);
    opts.policy = "require";
    opts.keys_extra = format!(
        "discover = [\"store\", \"autocrypt\", \"wkd\", \"vks\"]\nvks = \"https://keys.example.test\"\nlookup_timeout_secs = 2\nrefresh_interval_secs = 0\n[keys.resolve]\n{}",
        ks.resolve_toml()
    );
    let proxy = Proxy::start(ca, &opts);

    let r = send_as(&proxy, ca, "a@evil.example", ("sinkuser", "sinkpass"));
    assert!(r.ok, "{r:?}\n{}", proxy.log());
    sink.wait_for_messages(1, WAIT);

    // The stored certificate does not speak for the CEO: no key, so `require` refuses
    // (before, the mail was encrypted to the attacker).
    let r = send_as(&proxy, ca, "ceo@corp.example", ("sinkuser", "sinkpass"));
    assert_eq!(r.code, 550, "{r:?}\n{}", proxy.log());
    assert!(r.error.contains("ceo@corp.example"), "{r:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.messages().len(), 1, "only the first message left");
    // The state says so: the WKD of evil.example vouched for a@evil.example only.
    let list = sealpost_cmd(&proxy.config, &["keys", "list"]);
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.lines()
            .any(|l| l.ends_with("discovered: wkd for a@evil.example")),
        "{list}"
    );
}

/// A message announcing dave's key, as a peer's mail client writes it.
fn autocrypt_message() -> String {
    use base64::Engine;
    let keydata = base64::engine::general_purpose::STANDARD.encode(gpg_export_binary("dave"));
    let folded: String = keydata
        .as_bytes()
        .chunks(72)
        .map(|c| format!("\r\n {}", std::str::from_utf8(c).unwrap()))
        .collect();
    format!(
        "From: Dave <dave@example.net>\r\nTo: alice@example.com\r\nDate: Tue, 24 Nov 2026 09:00:00 +0000\r\nSubject: hi\r\nAutocrypt: addr=dave@example.net; prefer-encrypt=mutual; keydata={folded}\r\n\r\nhello alice\r\n"
    )
}

#[test]
fn an_autocrypt_header_in_junk_teaches_nothing_one_in_inbox_does() {
    let ca = TestCa::shared();
    let sink = Sink::start_with(
        ca,
        SinkConfig {
            user: "alice@example.com".into(),
            password: "alicepw".into(),
            ..SinkConfig::default()
        },
    );
    let dovecot = Dovecot::start(ca, &[("alice@example.com", "alicepw")]);
    let mut opts = ProxyOptions::new(sink.port);
    opts.imap_upstream = Some((dovecot.imaps_port, "tls"));
    opts.alice_login = "alice@example.com".into();
    let proxy = Proxy::start(ca, &opts);
    let mut c = RawImap::connect_login(
        proxy.imap_port,
        "starttls",
        Some(&ca.ca_pem),
        "alice@example.com",
        "alicepw",
    );
    c.command_ok("CREATE Junk");
    dovecot.append(
        "alice@example.com",
        "alicepw",
        "Junk",
        autocrypt_message().as_bytes(),
        &[],
    );
    c.command_ok("EXAMINE Junk");
    c.command_ok("UID FETCH 1:* (UID BODY.PEEK[])");
    let login = ("alice@example.com", "alicepw");
    let r = send_as(&proxy, ca, "dave@example.net", login);
    assert!(r.ok, "{r:?}");
    let got = sink.wait_for_messages(1, WAIT);
    assert!(
        !got[0].text().contains("BEGIN PGP MESSAGE"),
        "a key from Junk was used"
    );

    dovecot.append(
        "alice@example.com",
        "alicepw",
        "INBOX",
        autocrypt_message().as_bytes(),
        &[],
    );
    c.command_ok("EXAMINE INBOX");
    c.command_ok("UID FETCH 1:* (UID BODY.PEEK[])");
    let r = send_as(&proxy, ca, "dave@example.net", login);
    assert!(r.ok, "{r:?}\n{}", proxy.log());
    let got = sink.wait_for_messages(2, WAIT);
    assert!(
        got[1].text().contains("BEGIN PGP MESSAGE"),
        "{}",
        proxy.log()
    );
}

#[test]
fn bcc_recipients_are_not_looked_up_on_the_network() {
    let ca = TestCa::shared();
    let sink = Sink::start(ca, SinkMode::Tls);
    let ks = KeyServer::start(ca);
    let mut opts = ProxyOptions::new(sink.port);
    opts.keys_extra = format!(
        "discover = [\"store\", \"autocrypt\", \"wkd\", \"vks\"]\nvks = \"https://keys.example.test\"\nlookup_timeout_secs = 2\nrefresh_interval_secs = 0\n[keys.resolve]\n{}",
        ks.resolve_toml()
    );
    let proxy = Proxy::start(ca, &opts);
    let msg = b"From: alice@example.com\r\nTo: shown@example.org\r\nSubject: bcc\r\n\r\nbody\r\n";
    let mut p = PySend::new(
        proxy.smtp_port,
        PySendMode::StartTls,
        "alice@example.com",
        &["shown@example.org", "hidden@example.org"],
        msg,
    );
    p.cafile = Some(&ca.ca_pem);
    p.login = Some(("sinkuser", "sinkpass"));
    let r = py_sendmail(&p);
    assert!(r.ok, "{r:?}\n{}", proxy.log());
    // Neither has a key: one plain copy for both.
    sink.wait_for_messages(1, WAIT);
    // The visible recipient was looked up; the Bcc recipient's domain and the key
    // server never heard of it.
    assert!(
        ks.request_count(&common::wkd_hash("shown")) >= 1,
        "{:#?}",
        ks.requests()
    );
    assert_eq!(
        ks.request_count(&common::wkd_hash("hidden")),
        0,
        "{:#?}",
        ks.requests()
    );
    assert_eq!(ks.request_count("hidden"), 0, "{:#?}", ks.requests());
}

#[test]
fn a_stored_key_is_used_while_the_network_stalls() {
    let ca = TestCa::shared();
    let sink = Sink::start(ca, SinkMode::Tls);
    let ks = KeyServer::start(ca);
    for host in [
        "openpgpkey.example.org",
        "example.org",
        "openpgpkey.example.net",
        "example.net",
        "keys.example.test",
    ] {
        ks.set_delay(host, 15.0);
    }
    let mut opts = ProxyOptions::new(sink.port);
    opts.import = vec![common::keyring().bob().pub_asc.clone()];
    opts.keys_extra = format!(
        "discover = [\"store\", \"autocrypt\", \"wkd\", \"vks\"]\nvks = \"https://keys.example.test\"\nlookup_timeout_secs = 1\nrefresh_interval_secs = 0\n[keys.resolve]\n{}",
        ks.resolve_toml()
    );
    let proxy = Proxy::start(ca, &opts);
    // slow@example.net's lookup runs into the deadline; bob's stored key is still used.
    let msg = b"From: alice@example.com\r\nTo: slow@example.net, bob@example.org\r\nSubject: s\r\n\r\nbody\r\n";
    let mut p = PySend::new(
        proxy.smtp_port,
        PySendMode::StartTls,
        "alice@example.com",
        &["slow@example.net", "bob@example.org"],
        msg,
    );
    p.cafile = Some(&ca.ca_pem);
    p.login = Some(("sinkuser", "sinkpass"));
    let r = py_sendmail(&p);
    assert!(r.ok, "{r:?}\n{}", proxy.log());
    let got = sink.wait_for_messages(2, WAIT);
    let bob = got
        .iter()
        .find(|m| m.rcpt_tos == vec!["bob@example.org".to_string()])
        .expect("a copy for bob alone");
    assert!(bob.text().contains("BEGIN PGP MESSAGE"), "{}", proxy.log());
}
