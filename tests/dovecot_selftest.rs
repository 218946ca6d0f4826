//! Self-test of the Dovecot fixture and the real-client helpers (no sealpost
//! involved): every test starts its own Dovecot, in parallel.

mod common;

use std::time::{Duration, Instant};

use common::imapclients::{find, split_responses};
use common::{
    curl_fetch, imaplib_script, imaplib_spawn, mbsync_pull, parse_fetches, script_value,
    script_values, Dovecot, RawImap, TestCa,
};

const ALICE: &str = "alice@example.com";
const ALICE_PW: &str = "alicepw";

fn small_message() -> Vec<u8> {
    b"From: Bob <bob@example.org>\r\n\
To: Alice <alice@example.com>\r\n\
Subject: small plain\r\n\
Date: Mon, 24 Nov 2025 10:00:00 +0000\r\n\
Message-ID: <small@example.org>\r\n\
\r\n\
Hello Alice,\r\n\
just a short note.\r\n"
        .to_vec()
}

fn multipart_message() -> Vec<u8> {
    let mut m = String::from(
        "From: Carol <carol@example.org>\r\n\
To: Alice <alice@example.com>\r\n\
Subject: =?UTF-8?Q?multipart_caf=C3=A9?=\r\n\
Date: Mon, 24 Nov 2025 11:00:00 +0000\r\n\
Message-ID: <multi@example.org>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
\r\n\
preamble\r\n\
--b1\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
Grüße — ünïcödé text\r\n\
--b1\r\n\
Content-Type: application/octet-stream; name=\"data.bin\"\r\n\
Content-Disposition: attachment; filename=\"data.bin\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n",
    );
    for i in 0..20 {
        m.push_str(&format!(
            "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ej{i:02}\r\n"
        ));
    }
    m.push_str("--b1--\r\nepilogue\r\n");
    m.into_bytes()
}

fn large_message() -> Vec<u8> {
    let mut m = b"From: Dave <dave@example.net>\r\n\
To: Alice <alice@example.com>\r\n\
Subject: large\r\n\
Message-ID: <large@example.net>\r\n\
\r\n"
        .to_vec();
    let mut n: u32 = 0;
    while m.len() < 2 * 1024 * 1024 {
        let line: String = (0..74)
            .map(|j| {
                let c = b'!' + ((n.wrapping_mul(31).wrapping_add(j * 7)) % 90) as u8;
                c as char
            })
            .collect();
        m.extend_from_slice(line.as_bytes());
        m.extend_from_slice(b"\r\n");
        n += 1;
    }
    m
}

fn messages() -> Vec<Vec<u8>> {
    vec![small_message(), multipart_message(), large_message()]
}

fn start_with_three() -> (Dovecot, Vec<(u32, Vec<u8>)>) {
    let dc = Dovecot::start(
        TestCa::shared(),
        &[(ALICE, ALICE_PW), ("bob@example.org", "bobpw")],
    );
    let mut out = Vec::new();
    for (i, m) in messages().into_iter().enumerate() {
        let flags: &[&str] = if i == 0 { &["\\Seen"] } else { &[] };
        let uid = dc.append(ALICE, ALICE_PW, "INBOX", &m, flags);
        out.push((uid, m));
    }
    (dc, out)
}

#[test]
fn append_and_fetch_exact() {
    let (dc, msgs) = start_with_three();
    let uids: Vec<u32> = msgs.iter().map(|(u, _)| *u).collect();
    assert_eq!(uids, vec![1, 2, 3]);
    assert_eq!(dc.uids(ALICE, ALICE_PW, "INBOX"), uids);
    for (uid, m) in &msgs {
        assert!(
            dc.fetch_body(ALICE, ALICE_PW, "INBOX", *uid) == *m,
            "BODY[] of UID {uid} differs"
        );
    }
    assert_eq!(dc.flags(ALICE, ALICE_PW, "INBOX", 1), vec!["\\Seen"]);
    assert!(dc.flags(ALICE, ALICE_PW, "INBOX", 2).is_empty());

    // fetch_raw: exact bytes of the untagged response.
    let small = &msgs[0].1;
    let raw = dc.fetch_raw(ALICE, ALICE_PW, "INBOX", 1, "RFC822.SIZE BODY.PEEK[]");
    let mut expect = format!(
        "* 1 FETCH (UID 1 RFC822.SIZE {} BODY[] {{{}}}\r\n",
        small.len(),
        small.len()
    )
    .into_bytes();
    expect.extend_from_slice(small);
    expect.extend_from_slice(b")\r\n");
    assert_eq!(
        String::from_utf8_lossy(&raw),
        String::from_utf8_lossy(&expect)
    );
    let f = parse_fetches(&raw);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].seq, 1);
    assert_eq!(f[0].uid(), Some(1));
    assert_eq!(
        f[0].get("rfc822.size"),
        Some(small.len().to_string().as_bytes())
    );

    // Header fields with a section containing spaces, partial body, flags.
    let raw = dc.fetch_raw(
        ALICE,
        ALICE_PW,
        "INBOX",
        2,
        "(FLAGS BODY.PEEK[HEADER.FIELDS (Subject Content-Type)] BODY.PEEK[TEXT]<0.10>)",
    );
    let f = &parse_fetches(&raw)[0];
    // Only sessions that SELECT clear \Recent; fetch_raw uses EXAMINE.
    assert_eq!(f.flags().unwrap(), vec!["\\Recent"]);
    let hdr = f.get("BODY[HEADER.FIELDS (SUBJECT CONTENT-TYPE)]").unwrap();
    assert_eq!(
        hdr,
        b"Subject: =?UTF-8?Q?multipart_caf=C3=A9?=\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
    );
    assert_eq!(f.get("BODY[TEXT]<0>"), Some(&b"preamble\r\n"[..]));

    // Server features the proxy tests rely on.
    let mut s = dc.session(ALICE, ALICE_PW);
    let caps = String::from_utf8(s.command_ok("CAPABILITY")).unwrap();
    for c in [
        "IDLE",
        "CONDSTORE",
        "QRESYNC",
        "UIDPLUS",
        "SPECIAL-USE",
        "MOVE",
    ] {
        assert!(caps.split_whitespace().any(|w| w == c), "no {c} in {caps}");
    }
    assert!(!caps.contains("COMPRESS"), "{caps}");
    let list = String::from_utf8(s.command_ok("LIST \"\" \"*\"")).unwrap();
    for (flag, name) in [
        ("\\Sent", "Sent"),
        ("\\Drafts", "Drafts"),
        ("\\Trash", "Trash"),
        ("\\Junk", "Junk"),
    ] {
        assert!(
            list.lines().any(|l| l.contains(flag) && l.ends_with(name)),
            "{name} missing: {list}"
        );
    }
    let r = s.command("SELECT Sent");
    assert!(r.is_ok(), "{}", r.tagged_text());
    s.logout();
    let sent = dc.append(ALICE, ALICE_PW, "Sent", &msgs[0].1, &["\\Seen"]);
    assert_eq!(dc.fetch_body(ALICE, ALICE_PW, "Sent", sent), msgs[0].1);

    // A second user and a wrong password.
    let r = std::panic::catch_unwind(|| dc.session(ALICE, "wrong"));
    assert!(r.is_err(), "a wrong password must not log in");
    assert!(dc.uids("bob@example.org", "bobpw", "INBOX").is_empty());
}

#[test]
fn raw_client_tls_modes() {
    let (dc, msgs) = start_with_three();
    let ca = &dc.ca_pem;
    for (port, mode) in [(dc.imaps_port, "tls"), (dc.imap_port, "starttls")] {
        let mut c = RawImap::connect_login(port, mode, Some(ca), ALICE, ALICE_PW);
        c.command_ok("SELECT INBOX");
        let r = c.command("UID FETCH 1:* (UID BODY.PEEK[])");
        assert!(r.is_ok());
        let parts = split_responses(&r.untagged);
        assert_eq!(parts.len(), 3);
        let f = parse_fetches(&r.untagged);
        for (fe, (uid, m)) in f.iter().zip(&msgs) {
            assert_eq!(fe.uid(), Some(*uid));
            assert!(
                fe.get("BODY[]") == Some(&m[..]),
                "{mode}: UID {uid} differs"
            );
        }
        c.logout();
    }
}

#[test]
fn imaplib_curl_mbsync() {
    let (dc, msgs) = start_with_three();
    let ca = dc.ca_pem.clone();
    let script = r#"
        show("folders", len(ok(c.list())))
        typ, data = c.select("INBOX")
        assert typ == "OK", data
        show("exists", int(data[0]))
        for uid in uids(c):
            typ, data = c.uid("FETCH", str(uid), "(BODY.PEEK[])")
            emit("body", literal(ok((typ, data))))
    "#;
    for (port, mode) in [(dc.imap_port, "starttls"), (dc.imaps_port, "tls")] {
        let out = imaplib_script(port, mode, &ca, ALICE, ALICE_PW, script);
        assert!(out.contains("folders 5"), "{out}");
        assert!(out.contains("exists 3"), "{out}");
        let bodies = script_values(&out, "body");
        assert_eq!(bodies.len(), 3);
        for (b, (_, m)) in bodies.iter().zip(&msgs) {
            assert!(b == m, "imaplib {mode}: body differs");
        }
    }

    for (port, mode) in [(dc.imap_port, "starttls"), (dc.imaps_port, "tls")] {
        for (uid, m) in &msgs[..2] {
            let got = curl_fetch(port, mode, &ca, ALICE, ALICE_PW, "INBOX", *uid);
            assert!(
                got == *m,
                "curl {mode}: UID {uid} differs:\n{}",
                String::from_utf8_lossy(&got)
            );
        }
    }
    let got = curl_fetch(dc.imaps_port, "tls", &ca, ALICE, ALICE_PW, "INBOX", 3);
    assert!(got == msgs[2].1, "curl: large message differs");
    // curl's BODY[] fetch set \Seen.
    assert_eq!(dc.flags(ALICE, ALICE_PW, "INBOX", 2), vec!["\\Seen"]);

    let mut pull = mbsync_pull(dc.imaps_port, "tls", &ca, ALICE, ALICE_PW, "INBOX");
    assert_eq!(pull.messages.len(), 3, "{}", pull.output);
    for ((path, _), (n, (_, m))) in pull
        .messages
        .iter()
        .zip(pull.normalized().iter().zip(&msgs))
    {
        assert!(n == m, "mbsync: {} differs", path.display());
    }
    let uid = dc.append(
        ALICE,
        ALICE_PW,
        "INBOX",
        b"Subject: later\r\n\r\nx\r\n",
        &[],
    );
    assert_eq!(uid, 4);
    pull.rerun();
    assert_eq!(pull.messages.len(), 4, "{}", pull.output);

    let pull = mbsync_pull(dc.imap_port, "starttls", &ca, ALICE, ALICE_PW, "INBOX");
    assert_eq!(pull.messages.len(), 4, "{}", pull.output);
    assert_eq!(pull.normalized()[0], msgs[0].1);
}

#[test]
fn idle_sees_delivery() {
    let dc = Dovecot::start(TestCa::shared(), &[(ALICE, ALICE_PW)]);
    dc.append(ALICE, ALICE_PW, "INBOX", &small_message(), &[]);
    let mut py = imaplib_spawn(
        dc.imaps_port,
        "tls",
        &dc.ca_pem,
        ALICE,
        ALICE_PW,
        r#"
        typ, data = c.select("INBOX")
        show("exists", int(data[0]))
        tag = idle_start(c)
        show("IDLING")
        lines = idle_wait(c, b"EXISTS", timeout=15)
        emit("idle", b"".join(lines))
        idle_done(c, tag)
        emit("new", fetch_body(c, uids(c)[-1]))
        "#,
    );
    py.wait_line("IDLING", Duration::from_secs(20));
    let msg = multipart_message();
    let t0 = Instant::now();
    let path = dc.deliver_new(ALICE, &msg);
    assert!(path.starts_with(dc.maildir(ALICE).join("new")));
    let out = py.finish();
    let waited = t0.elapsed();
    assert!(out.contains("exists 1"), "{out}");
    let idle = script_value(&out, "idle");
    assert!(
        find(&idle, b"* 2 EXISTS").is_some(),
        "{}",
        String::from_utf8_lossy(&idle)
    );
    assert_eq!(script_value(&out, "new"), msg);
    assert!(waited < Duration::from_secs(10), "IDLE took {waited:?}");

    // The same with the raw client over STARTTLS.
    let mut c = RawImap::connect_login(dc.imap_port, "starttls", Some(&dc.ca_pem), ALICE, ALICE_PW);
    c.command_ok("SELECT INBOX");
    let (tag, _) = c.idle_start();
    dc.deliver_new(ALICE, &small_message());
    let got = c.idle_wait("EXISTS", Duration::from_secs(10));
    assert!(
        find(&got, b"* 3 EXISTS").is_some(),
        "{}",
        String::from_utf8_lossy(&got)
    );
    c.idle_done(&tag);
    c.logout();
    assert_eq!(dc.uids(ALICE, ALICE_PW, "INBOX"), vec![1, 2, 3]);
}

#[test]
fn parallel_instances() {
    let handles: Vec<_> = (0..3)
        .map(|i| {
            std::thread::spawn(move || {
                let user = format!("u{i}@example.com");
                let dc = Dovecot::start(TestCa::shared(), &[(&user, "pw")]);
                let m = format!("Subject: n{i}\r\n\r\nbody {i}\r\n").into_bytes();
                let uid = dc.append(&user, "pw", "INBOX", &m, &[]);
                assert_eq!(dc.fetch_body(&user, "pw", "INBOX", uid), m);
                (dc.imap_port, dc.imaps_port, dc.pid().unwrap())
            })
        })
        .collect();
    let mut ports = Vec::new();
    for h in handles {
        let (a, b, pid) = h.join().unwrap();
        ports.push(a);
        ports.push(b);
        // Stopped (and reaped) on drop: the master is gone.
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 6);
}
