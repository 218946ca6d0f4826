//! Self-test of the integration-test harness (no sealpost involved).

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{
    free_port, gpg_decrypt, gpg_encrypt, gpg_list_packets, gpg_recipient_keyids, keyring,
    py_sendmail, run_python, sq_decrypt, wait_for_port, PySend, PySendMode, Sink, SinkConfig,
    SinkMode, TestCa,
};

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn ports() {
    let a = free_port();
    let b = free_port();
    assert_ne!(a, b);
    let l = std::net::TcpListener::bind(("127.0.0.1", a)).unwrap();
    wait_for_port(a, Duration::from_secs(2));
    drop(l);
    let r = std::panic::catch_unwind(|| wait_for_port(b, Duration::from_millis(200)));
    let msg = r.expect_err("wait_for_port must panic on timeout");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains(&b.to_string()), "{msg}");
}

/// A spawned server's `PORT n` / `READY` handshake: the port, or what was missing.
#[test]
fn port_and_ready_handshake() {
    let run = |script: &str| {
        let mut child = Command::new(common::PYTHON)
            .args(["-c", script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let got = common::net::read_port_and_ready(&mut child, Duration::from_secs(10));
        let _ = child.kill();
        let _ = child.wait();
        got
    };
    assert_eq!(
        run("print('starting'); print('PORT 40125'); print('READY')"),
        Ok(40125)
    );
    let no_port = run("print('READY')").unwrap_err();
    assert!(no_port.contains("no `PORT n` line"), "{no_port}");
    let no_ready = run("print('PORT 40125')").unwrap_err();
    assert!(no_ready.contains("PORT 40125 but no READY"), "{no_ready}");
    let zero = run("print('PORT 0'); print('READY')").unwrap_err();
    assert!(zero.contains("port 0"), "{zero}");
}

/// sealpost's "listener ready" log lines give the bound ports; nothing else does.
#[test]
fn listener_ready_lines_are_parsed_and_others_are_not() {
    use common::listeners::{parse_ready, Listener};
    let smtp = "2026-01-02T10:00:00.000001Z  INFO sealpost::serve: SMTP listener ready account=test addr=127.0.0.1:40123 implicit_tls=true upstream=localhost:465";
    assert_eq!(
        parse_ready(smtp),
        Some((
            Listener::smtp("test", true),
            "127.0.0.1:40123".parse().unwrap()
        ))
    );
    let imap = "2026-01-02T10:00:00.000001Z  INFO sealpost::serve: IMAP listener ready account=corp addr=127.0.0.1:40124 implicit_tls=false upstream=localhost:993";
    assert_eq!(
        parse_ready(imap),
        Some((
            Listener::imap("corp", false),
            "127.0.0.1:40124".parse().unwrap()
        ))
    );
    let metrics = "2026-01-02T10:00:00.000001Z  INFO sealpost::serve: metrics listener ready (GET /metrics) addr=[::1]:9187";
    assert_eq!(
        parse_ready(metrics),
        Some((Listener::metrics(), "[::1]:9187".parse().unwrap()))
    );
    for other in [
        "2026-01-02T10:00:00.000001Z DEBUG sealpost::serve: SMTP listener ready account=test addr=127.0.0.1:1 implicit_tls=true",
        "2026-01-02T10:00:00.000001Z  INFO smtp{account=test peer=127.0.0.1:5}: sealpost::smtp: said SMTP listener ready addr=127.0.0.1:1",
        "2026-01-02T10:00:00.000001Z  INFO sealpost::serve: SMTP listener readyish addr=127.0.0.1:1",
        "2026-01-02T10:00:00.000001Z  INFO sealpost::serve: autoconfig listener ready",
        "",
    ] {
        assert_eq!(parse_ready(other), None, "{other}");
    }
}

#[test]
fn test_ca_is_accepted_by_rustls_webpki() {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::client::WebPkiServerVerifier;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

    let dir = common::tempdir();
    let ca = TestCa::new(dir.path());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&ca.ca_pem).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .unwrap();
    let leaf = CertificateDer::from_pem_file(&ca.cert_pem).unwrap();
    for name in ["localhost", "127.0.0.1"] {
        verifier
            .verify_server_cert(
                &leaf,
                &[],
                &ServerName::try_from(name).unwrap(),
                &[],
                UnixTime::now(),
            )
            .unwrap_or_else(|e| panic!("rustls rejected leaf for {name}: {e}"));
    }
    // wrong name is refused
    assert!(verifier
        .verify_server_cert(
            &leaf,
            &[],
            &ServerName::try_from("example.com").unwrap(),
            &[],
            UnixTime::now()
        )
        .is_err());
    // the CA itself cannot be used as a server certificate
    let ca_der = CertificateDer::from_pem_file(&ca.ca_pem).unwrap();
    assert!(verifier
        .verify_server_cert(
            &ca_der,
            &[],
            &ServerName::try_from("localhost").unwrap(),
            &[],
            UnixTime::now()
        )
        .is_err());
    // key is PKCS#8
    match PrivateKeyDer::from_pem_file(&ca.key_pem).unwrap() {
        PrivateKeyDer::Pkcs8(_) => {}
        other => panic!("expected PKCS#8 key, got {other:?}"),
    }
    // chain = leaf + CA
    let chain: Vec<_> = CertificateDer::pem_file_iter(&ca.chain_pem)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(chain, vec![leaf, ca_der]);
}

#[test]
fn sink_tls_python_smtplib() {
    let ca = TestCa::shared();
    let sink = Sink::start(ca, SinkMode::Tls);
    let body = "From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: t\r\n\
        \r\nline one \u{e9}\r\n.leading dot\r\n";
    let mut send = PySend::new(
        sink.port,
        PySendMode::Tls,
        "alice@example.com",
        &["bob@example.org"],
        body.as_bytes(),
    );
    send.cafile = Some(&ca.ca_pem);

    // no AUTH -> 530
    let r = py_sendmail(&send);
    assert!(!r.ok && r.code == 530, "{r:?}");
    // wrong password -> 535
    send.login = Some(("sinkuser", "wrong"));
    let r = py_sendmail(&send);
    assert!(!r.ok && r.code == 535, "{r:?}");
    // good
    send.login = Some(("sinkuser", "sinkpass"));
    send.mail_options = &["BODY=8BITMIME", "SMTPUTF8"];
    let r = py_sendmail(&send);
    assert!(r.ok && r.refused.is_empty(), "{r:?}");

    let msgs = sink.wait_for_messages(1, WAIT);
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.num, 1);
    assert_eq!(m.mail_from, "alice@example.com");
    assert_eq!(m.rcpt_tos, vec!["bob@example.org"]);
    assert!(m.mail_options.iter().any(|o| o == "BODY=8BITMIME"), "{m:?}");
    assert!(m.mail_options.iter().any(|o| o == "SMTPUTF8"), "{m:?}");
    assert_eq!(m.auth_user.as_deref(), Some("sinkuser"));
    assert_eq!(m.data, body.as_bytes(), "exact bytes, dot-unstuffed");

    // a bigger message (3 MB), multiple recipients
    let mut big = String::from("Subject: big\r\n\r\n");
    while big.len() < 3_000_000 {
        big.push_str(
            "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n",
        );
    }
    send.data = big.as_bytes();
    send.rcpt_tos = &["bob@example.org", "carol@example.org"];
    send.mail_options = &[];
    let r = py_sendmail(&send);
    assert!(r.ok, "{r:?}");
    let msgs = sink.wait_for_messages(2, WAIT);
    assert_eq!(
        msgs[1].rcpt_tos,
        vec!["bob@example.org", "carol@example.org"]
    );
    assert_eq!(msgs[1].data, big.as_bytes());
}

#[test]
fn sink_tls_verification_fails_without_ca() {
    // Python's default trust store does not know our CA.
    let ca = TestCa::shared();
    let sink = Sink::start(ca, SinkMode::Tls);
    let out = run_python(
        "import smtplib,ssl,sys\n\
         try:\n    smtplib.SMTP_SSL('127.0.0.1', int(sys.argv[1]), context=ssl.create_default_context(), timeout=10)\n\
         except ssl.SSLCertVerificationError:\n    print('VERIFY-FAILED')\n",
        &[&sink.port.to_string()],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "VERIFY-FAILED",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sink_starttls_swaks() {
    let ca = TestCa::shared();
    let sink = Sink::start_with(
        ca,
        SinkConfig {
            mode: SinkMode::StartTls,
            user: "u1".into(),
            password: "p1".into(),
            ..SinkConfig::default()
        },
    );
    let server = format!("127.0.0.1:{}", sink.port);
    let swaks = |extra: &[&str]| {
        let out = Command::new("swaks")
            .args(["--server", &server, "--helo", "client.test"])
            .args(["--from", "alice@example.com", "--to", "bob@example.org"])
            .args([
                "--header",
                "Subject: swaks test",
                "--body",
                "hello from swaks",
            ])
            .args(["--timeout", "20"])
            .args(extra)
            .output()
            .expect("run swaks");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let ca_path = ca.ca_pem.to_str().unwrap();
    // AUTH without STARTTLS is refused
    let (ok, log) = swaks(&[
        "--auth",
        "PLAIN",
        "--auth-user",
        "u1",
        "--auth-password",
        "p1",
    ]);
    assert!(!ok, "{log}");
    // STARTTLS with verification against our CA, AUTH LOGIN
    let (ok, log) = swaks(&[
        "--tls",
        "--tls-verify",
        "--tls-ca-path",
        ca_path,
        "--auth",
        "LOGIN",
        "--auth-user",
        "u1",
        "--auth-password",
        "p1",
    ]);
    assert!(ok, "{log}");
    let msgs = sink.wait_for_messages(1, WAIT);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].mail_from, "alice@example.com");
    assert_eq!(msgs[0].rcpt_tos, vec!["bob@example.org"]);
    assert!(msgs[0].text().contains("hello from swaks"));
    assert!(msgs[0].text().contains("\r\n"));

    // python smtplib STARTTLS + AUTH PLAIN, verifying
    let mut send = PySend::new(
        sink.port,
        PySendMode::StartTls,
        "alice@example.com",
        &["dave@example.net"],
        b"Subject: x\r\n\r\ny\r\n",
    );
    send.cafile = Some(&ca.ca_pem);
    send.login = Some(("u1", "p1"));
    let r = py_sendmail(&send);
    assert!(r.ok, "{r:?}");
    // plain (no STARTTLS): AUTH is not even offered, MAIL gets 530
    send.mode = PySendMode::Plain;
    let r = py_sendmail(&send);
    assert!(
        !r.ok && r.error.contains("AUTH extension not supported"),
        "{r:?}"
    );
    send.login = None;
    let r = py_sendmail(&send);
    assert!(!r.ok && r.code == 530, "{r:?}");
    let msgs = sink.wait_for_messages(2, WAIT);
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[1].rcpt_tos, vec!["dave@example.net"]);
}

#[test]
fn sink_rejections() {
    let ca = TestCa::shared();
    let sink = Sink::start_with(
        ca,
        SinkConfig {
            mode: SinkMode::Tls,
            reject_rcpt: vec!["nobody".into(), "ghost@".into()],
            reject_data: Some("X-Reject-Me".into()),
            ..SinkConfig::default()
        },
    );
    let mut send = PySend::new(
        sink.port,
        PySendMode::Tls,
        "alice@example.com",
        &["bob@example.org", "nobody@example.org"],
        b"Subject: r\r\n\r\nbody\r\n",
    );
    send.cafile = Some(&ca.ca_pem);
    send.login = Some(("sinkuser", "sinkpass"));
    let r = py_sendmail(&send);
    assert!(r.ok, "{r:?}");
    assert_eq!(r.refused, vec![("nobody@example.org".to_owned(), 550)]);

    send.rcpt_tos = &["ghost@example.org"];
    let r = py_sendmail(&send);
    assert!(!r.ok, "{r:?}");
    assert_eq!(r.refused, vec![("ghost@example.org".to_owned(), 550)]);

    send.rcpt_tos = &["bob@example.org"];
    send.data = b"Subject: r\r\nX-Reject-Me: yes\r\n\r\nbody\r\n";
    let r = py_sendmail(&send);
    assert!(!r.ok && r.code == 554, "{r:?}");
    assert!(r.error.contains("rejected by test sink"), "{r:?}");

    let msgs = sink.wait_for_messages(1, WAIT);
    std::thread::sleep(Duration::from_millis(200));
    let msgs2 = sink.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs2.len(), 1);
    assert_eq!(msgs[0].rcpt_tos, vec!["bob@example.org"]);
}

#[test]
fn keyring_gpg_and_sq() {
    let k = keyring();
    assert_eq!(k.people.len(), 4);
    let alice = k.alice();
    let bob = k.bob();
    for p in &k.people {
        assert_eq!(p.fpr.len(), 40);
        assert_eq!(p.enc_keyid.len(), 16);
        assert!(p.pub_asc.exists() && p.sec_asc.exists() && p.home.exists());
        let pubtxt = std::fs::read_to_string(&p.pub_asc).unwrap();
        assert!(pubtxt.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
        let sec = std::fs::read_to_string(&p.sec_asc).unwrap();
        assert!(sec.starts_with("-----BEGIN PGP PRIVATE KEY BLOCK-----"));
    }
    assert_eq!(
        std::fs::read_to_string(&k.alice_pass).unwrap(),
        "alice-pass\n"
    );
    // alice's exported key is passphrase-protected, the nopass copy is not
    let dump = gpg_list_packets(&std::fs::read(&alice.sec_asc).unwrap());
    assert!(dump.contains("protected"), "{dump}");
    let dump = gpg_list_packets(&std::fs::read(&alice.sec_nopass_asc).unwrap());
    assert!(!dump.contains("protected"), "{dump}");

    let msg = b"Content-Type: text/plain\r\n\r\nsecret for bob\r\n";
    let ct = gpg_encrypt(Some("alice"), &["bob"], msg, true);
    assert!(String::from_utf8_lossy(&ct).starts_with("-----BEGIN PGP MESSAGE-----"));
    assert_eq!(gpg_recipient_keyids(&ct), vec![bob.enc_keyid.clone()]);

    let r = gpg_decrypt("bob", &ct);
    r.assert_decrypted_signed_by("alice");
    assert!(r.status.contains(&format!("VALIDSIG {}", alice.fpr)), "{r}");
    assert_eq!(r.plaintext, msg);

    let (ok, pt, err) = sq_decrypt("bob", "alice", &ct);
    assert!(ok, "{err}");
    assert_eq!(pt, msg);
    // wrong signer cert -> sq refuses
    let (ok, _, _) = sq_decrypt("bob", "carol", &ct);
    assert!(!ok);
    // not a recipient
    let r = gpg_decrypt("carol", &ct);
    assert!(!r.decrypted(), "{r}");
    let (ok, _, _) = sq_decrypt("dave", "", &ct);
    assert!(!ok);

    // several recipients, unsigned, binary
    let ct = gpg_encrypt(None, &["carol", "dave@example.net"], msg, false);
    let ids = gpg_recipient_keyids(&ct);
    assert!(ids.contains(&k.carol().enc_keyid) && ids.contains(&k.dave().enc_keyid));
    let r = gpg_decrypt("dave", &ct);
    assert!(r.decrypted() && !r.has("GOODSIG"), "{r}");
    let (ok, pt, err) = sq_decrypt("carol", "", &ct);
    assert!(ok, "{err}");
    assert_eq!(pt, msg);

    // to alice (protected key in her homedir; sq uses the nopass export)
    let ct = gpg_encrypt(Some("bob"), &["alice"], msg, true);
    gpg_decrypt("alice", &ct).assert_decrypted_signed_by("bob");
    let (ok, pt, err) = sq_decrypt("alice", "bob", &ct);
    assert!(ok && pt == msg, "{err}");

    // detached signature check
    let sig = common::gpg_detach_sign("alice", msg);
    let v = common::pgp::gpg_verify_detached("nobody", &sig, msg);
    assert!(v.signed_by("alice"), "{v}");
    let v = common::pgp::gpg_verify_detached("nobody", &sig, b"tampered");
    assert!(!v.signed_by("alice") && v.has("BADSIG"), "{v}");
}
