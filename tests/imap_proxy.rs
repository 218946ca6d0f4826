//! End to end: real IMAP clients talk to the `sealpost` binary, which relays to a real
//! Dovecot holding mail encrypted by real GnuPG and sq. What the client sees of an
//! encrypted message is checked against gpg's own decryption, and every item computed
//! from the view is checked against what Dovecot itself answers for the decrypted
//! message (appended to a scratch mailbox as plain mail). The differential checks and
//! the real clients run against Cyrus IMAP too (`cyrus_*`), a second server with its own
//! ways (items in another order, types upper-cased, flag changes reported even after
//! `.SILENT`).

mod common;

use common::cyrus::Cyrus;
use common::dovecot::Dovecot;
use common::imapclients::{parse_fetches, RawImap};
use common::proxy::{Proxy, ProxyOptions};
use common::{gpg_decrypt, gpg_encrypt, keyring, TestCa};
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

const USER: &str = "alice@example.com";
const PASS: &str = "alicepw";

/// Deterministic pseudo-random bytes.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn base64_lines(data: &[u8]) -> String {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(data);
    b.as_bytes()
        .chunks(76)
        .map(|c| format!("{}\r\n", std::str::from_utf8(c).unwrap()))
        .collect()
}

/// Bare LFs as CRLF (sealpost's own normalisation).
fn crlf(data: &[u8]) -> Vec<u8> {
    sealpost::mime::to_crlf(data).into_owned()
}

fn pgp_mime(outer_headers: &str, armored: &[u8]) -> Vec<u8> {
    let mut m = format!(
        "{outer_headers}MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"enc-b\"\r\n\r\nThis is an OpenPGP/MIME encrypted message\r\n--enc-b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--enc-b\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n"
    )
    .into_bytes();
    m.extend_from_slice(&crlf(armored));
    m.extend_from_slice(b"\r\n--enc-b--\r\n");
    m
}

/// The test mailbox: name -> (stored message, inner plaintext as gpg sees it).
struct Corpus {
    messages: Vec<(&'static str, Vec<u8>)>,
}

fn corpus() -> &'static Corpus {
    static C: OnceLock<Corpus> = OnceLock::new();
    C.get_or_init(|| {
        let outer = "From: Bob <bob@example.org>\r\nTo: Alice <alice@example.com>\r\nSubject: ...\r\nDate: Tue, 24 Nov 2026 09:00:00 +0000\r\nMessage-ID: <m1@example.org>\r\n";
        let inner_mixed = format!(
            "Content-Type: multipart/mixed; boundary=\"inner1\"; protected-headers=\"v1\"\r\nSubject: Board meeting minutes\r\nFrom: Bob <bob@example.org>\r\nTo: Alice <alice@example.com>\r\nDate: Tue, 24 Nov 2026 09:00:00 +0000\r\nMessage-ID: <m1@example.org>\r\n\r\n--inner1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nHello Alice — the minutes are attached.\r\n--inner1\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\nContent-Disposition: attachment; filename=\"data.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--inner1--\r\n",
            base64_lines(&noise(3000, 1))
        );
        let signed_mime = pgp_mime(outer, &gpg_encrypt(Some("bob"), &["alice"], inner_mixed.as_bytes(), true));

        let inner_text = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nEncrypted by sq, not signed.\r\n";
        let sq_mime = pgp_mime(
            "From: bob@example.org\r\nTo: alice@example.com\r\nSubject: from sq\r\nMessage-ID: <m2@example.org>\r\n",
            &common::pgp::sq_encrypt("alice", inner_text),
        );

        let mut inline = b"From: bob@example.org\r\nTo: alice@example.com\r\nSubject: inline\r\nMessage-ID: <m3@example.org>\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n".to_vec();
        inline.extend_from_slice(&crlf(&gpg_encrypt(Some("bob"), &["alice"], b"inline secret text\n", true)));

        let for_carol = pgp_mime(
            "From: bob@example.org\r\nTo: carol@example.org\r\nSubject: not for alice\r\nMessage-ID: <m4@example.org>\r\n",
            &gpg_encrypt(Some("bob"), &["carol"], b"Content-Type: text/plain\r\n\r\ncarol only\r\n", true),
        );

        let plain = b"From: carol@example.org\r\nTo: alice@example.com\r\nSubject: plain hello\r\nMessage-ID: <m5@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n--alt\r\nContent-Type: text/plain\r\n\r\nplain text\r\n--alt\r\nContent-Type: text/html\r\n\r\n<p>plain html</p>\r\n--alt--\r\n".to_vec();

        // Compresses well: the view is much larger than what is stored.
        let mut big_inner = b"Content-Type: text/plain; charset=us-ascii\r\n\r\n".to_vec();
        for i in 0..60_000 {
            big_inner.extend_from_slice(format!("line {i:06} of a long and very repetitive report\r\n").as_bytes());
        }
        let big = pgp_mime(
            "From: bob@example.org\r\nTo: alice@example.com\r\nSubject: big report\r\nMessage-ID: <m6@example.org>\r\n",
            &gpg_encrypt(Some("bob"), &["alice"], &big_inner, true),
        );

        let forged = b"From: mallory@example.net\r\nTo: alice@example.com\r\nSubject: trust me\r\nSealpost-Decrypted: yes; signature=good; signer=0000\r\nMessage-ID: <m7@example.org>\r\n\r\nI am totally verified.\r\n".to_vec();

        Corpus {
            messages: vec![
                ("signed_mime", signed_mime),
                ("sq_mime", sq_mime),
                ("inline", inline),
                ("for_carol", for_carol),
                ("plain", plain),
                ("big", big),
                ("forged", forged),
            ],
        }
    })
}

/// The provider's IMAP server: Dovecot, or Cyrus as the second real server.
enum Server {
    Dovecot(Dovecot),
    Cyrus(Cyrus),
}

impl Server {
    fn imaps_port(&self) -> u16 {
        match self {
            Server::Dovecot(d) => d.imaps_port,
            Server::Cyrus(c) => c.imaps_port,
        }
    }

    fn session(&self, user: &str, pass: &str) -> RawImap {
        match self {
            Server::Dovecot(d) => d.session(user, pass),
            Server::Cyrus(c) => c.session(user, pass),
        }
    }

    fn append(&self, user: &str, pass: &str, mailbox: &str, msg: &[u8]) -> u32 {
        match self {
            Server::Dovecot(d) => d.append(user, pass, mailbox, msg, &[]),
            Server::Cyrus(c) => c.append(user, pass, mailbox, msg, &[]),
        }
    }

    fn fetch_raw(&self, user: &str, pass: &str, mailbox: &str, uid: u32, items: &str) -> Vec<u8> {
        match self {
            Server::Dovecot(d) => d.fetch_raw(user, pass, mailbox, uid, items),
            Server::Cyrus(c) => c.fetch_raw(user, pass, mailbox, uid, items),
        }
    }
}

struct Env {
    ca: &'static TestCa,
    server: Server,
    /// The login at the server (Cyrus's users have no domain).
    user: &'static str,
    proxy: Proxy,
    uids: HashMap<&'static str, u32>,
}

impl Env {
    fn new() -> Env {
        Env::with_extra("")
    }

    fn with_extra(extra: &str) -> Env {
        let ca = TestCa::shared();
        Env::on(
            Server::Dovecot(Dovecot::start(ca, &[(USER, PASS)])),
            USER,
            extra,
        )
    }

    /// The same corpus and sealpost in front of Cyrus IMAP.
    fn cyrus() -> Env {
        let ca = TestCa::shared();
        Env::on(
            Server::Cyrus(Cyrus::start(ca, &[("alice", PASS)])),
            "alice",
            "",
        )
    }

    fn on(server: Server, user: &'static str, extra: &str) -> Env {
        let ca = TestCa::shared();
        let mut uids = HashMap::new();
        for (name, msg) in &corpus().messages {
            uids.insert(*name, server.append(user, PASS, "INBOX", msg));
        }
        let mut opts = ProxyOptions::new(1);
        opts.imap_upstream = Some((server.imaps_port(), "tls"));
        opts.alice_login = user.into();
        opts.import = vec![keyring().bob().pub_asc.clone()];
        opts.extra = extra.to_string();
        let proxy = Proxy::start(ca, &opts);
        Env {
            ca,
            server,
            user,
            proxy,
            uids,
        }
    }

    fn dovecot(&self) -> &Dovecot {
        match &self.server {
            Server::Dovecot(d) => d,
            Server::Cyrus(_) => panic!("a Dovecot-only test"),
        }
    }

    fn client(&self) -> RawImap {
        let mut c = RawImap::connect_login(
            self.proxy.imap_port,
            "starttls",
            Some(&self.ca.ca_pem),
            self.user,
            PASS,
        );
        c.command_ok("SELECT INBOX");
        c
    }

    /// The server's own answer for `items` of a plain copy of `view` (appended to a
    /// scratch mailbox).
    fn server_answer(&self, view: &[u8], items: &str) -> common::imapclients::Fetch {
        let mut s = self.server.session(self.user, PASS);
        let _ = s.command("CREATE Scratch");
        let r = s.append("Scratch", &[], view);
        assert!(r.is_ok(), "{}", r.tagged_text());
        let text = r.tagged_text();
        let uid: u32 = text
            .split("APPENDUID ")
            .nth(1)
            .and_then(|t| t.split_whitespace().nth(1))
            .and_then(|u| u.trim_end_matches(']').parse().ok())
            .expect("APPENDUID");
        s.command_ok("EXAMINE Scratch");
        let raw = s.command_ok(&format!("UID FETCH {uid} ({items})"));
        parse_fetches(&raw).pop().expect("a fetch response")
    }
}

fn fetch_one(c: &mut RawImap, uid: u32, items: &str) -> common::imapclients::Fetch {
    let raw = c.command_ok(&format!("UID FETCH {uid} ({items})"));
    let mut f = parse_fetches(&raw);
    assert_eq!(f.len(), 1, "{}", String::from_utf8_lossy(&raw));
    f.pop().unwrap()
}

fn body_after_header(msg: &[u8]) -> &[u8] {
    let pos = msg
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    &msg[pos + 4..]
}

#[test]
fn encrypted_messages_are_shown_decrypted_and_every_item_agrees() {
    shown_decrypted_and_every_item_agrees(&Env::new());
}

/// The same against Cyrus IMAP: every item agrees with Cyrus's own answer.
#[test]
fn cyrus_encrypted_messages_are_shown_decrypted_and_every_item_agrees() {
    shown_decrypted_and_every_item_agrees(&Env::cyrus());
}

fn shown_decrypted_and_every_item_agrees(env: &Env) {
    let mut c = env.client();
    let kr = keyring();
    let bob_fpr = &kr.bob().fpr;

    for name in ["signed_mime", "sq_mime", "inline", "big"] {
        let uid = env.uids[name];
        let f = fetch_one(&mut c, uid, "UID RFC822.SIZE BODY.PEEK[]");
        let view = f.get("BODY[]").expect("BODY[]").to_vec();
        let size: usize = String::from_utf8_lossy(f.get("RFC822.SIZE").unwrap())
            .parse()
            .unwrap();
        assert_eq!(size, view.len(), "{name}: RFC822.SIZE == len(BODY[])");
        let text = String::from_utf8_lossy(&view);
        assert!(
            text.contains("\r\nSealpost-Decrypted: yes"),
            "{name}:\n{text}"
        );
        assert!(
            !text.contains("BEGIN PGP MESSAGE"),
            "{name} still encrypted"
        );

        // What gpg makes of the stored message.
        let stored = &corpus()
            .messages
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1;
        let s = String::from_utf8_lossy(stored);
        let a = s.find("-----BEGIN PGP MESSAGE-----").unwrap();
        let b = s.find("-----END PGP MESSAGE-----").unwrap() + 25;
        let g = gpg_decrypt("alice", s[a..b].as_bytes());
        assert!(g.decrypted(), "{g}");
        let plain = crlf(&g.plaintext);
        match name {
            "signed_mime" => {
                assert!(
                    text.contains(&format!("signature=good; signer={bob_fpr}")),
                    "{text}"
                );
                assert!(
                    text.contains("Subject: Board meeting minutes\r\n"),
                    "{text}"
                );
                assert!(!text.contains("Subject: ...\r\n"));
                assert_eq!(body_after_header(&view), body_after_header(&plain));
            }
            "sq_mime" => {
                assert!(text.contains("Sealpost-Decrypted: yes; unsigned"), "{text}");
                assert!(text.contains("Subject: from sq\r\n"));
                assert_eq!(body_after_header(&view), body_after_header(&plain));
            }
            "inline" => {
                assert!(text.contains(&format!("signer={bob_fpr}")), "{text}");
                assert_eq!(body_after_header(&view), plain.as_slice());
            }
            "big" => {
                assert!(
                    view.len() > stored.len() * 3,
                    "decompressed view is larger than stored"
                );
                assert_eq!(body_after_header(&view), body_after_header(&plain));
            }
            _ => unreachable!(),
        }

        // Every content item agrees with Dovecot's answer for the decrypted message.
        let items = "BODYSTRUCTURE BODY ENVELOPE RFC822.SIZE BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[HEADER.FIELDS (Subject From Content-Type)] BODY.PEEK[HEADER.FIELDS.NOT (Received Subject)] RFC822.HEADER";
        let ours = fetch_one(&mut c, uid, items);
        let theirs = env.server_answer(&view, items);
        for (item, value) in theirs.items.iter().filter(|(i, _)| i != "UID") {
            let mut o = ours
                .get(item)
                .map(|v| String::from_utf8_lossy(v).into_owned());
            let mut t = Some(String::from_utf8_lossy(value).into_owned());
            if item.starts_with("BODY") && !item.contains('[') {
                // imap-codec writes the text type as "TEXT", Dovecot as "text": MIME
                // types are case-insensitive (RFC 2045 §5.1).
                o = o.map(|s| s.replace("\"TEXT\"", "\"text\""));
                t = t.map(|s| s.replace("\"TEXT\"", "\"text\""));
                if matches!(env.server, Server::Cyrus(_)) {
                    // Cyrus upper-cases types, subtypes, parameter and disposition
                    // names and encodings, all case-insensitive (RFC 2045 §5.1, §6.1,
                    // RFC 2183 §2.8); the Dovecot run compares them exactly.
                    o = o.map(|s| s.to_ascii_lowercase());
                    t = t.map(|s| s.to_ascii_lowercase());
                }
            }
            assert_eq!(o, t, "{name}: {item} differs from the server's");
        }
        if name == "signed_mime" {
            for item in ["BODY.PEEK[2]", "BODY.PEEK[2.MIME]", "BODY.PEEK[1]<5.10>"] {
                let ours = fetch_one(&mut c, uid, item);
                let theirs = env.server_answer(&view, item);
                let last = |f: &common::imapclients::Fetch| {
                    f.items.iter().rfind(|(i, _)| i != "UID").cloned()
                };
                assert_eq!(last(&ours), last(&theirs), "{name}: {item}");
            }
        }

        // Chunked fetches reassemble to BODY[].
        for chunk in [4096usize, 65536] {
            let mut whole = Vec::new();
            let mut offset = 0;
            loop {
                let f = fetch_one(&mut c, uid, &format!("BODY.PEEK[]<{offset}.{chunk}>"));
                let part = f
                    .get(&format!("BODY[]<{offset}>"))
                    .expect("partial")
                    .to_vec();
                whole.extend_from_slice(&part);
                offset += chunk;
                if part.len() < chunk || offset > view.len() + chunk {
                    break;
                }
                if name == "big" && chunk == 4096 && offset > 40 * 4096 {
                    // Enough 4 KiB round trips for the big one; finish in one piece.
                    let f = fetch_one(
                        &mut c,
                        uid,
                        &format!("BODY.PEEK[]<{offset}.{}>", view.len()),
                    );
                    whole.extend_from_slice(f.get(&format!("BODY[]<{offset}>")).unwrap());
                    break;
                }
            }
            assert_eq!(
                whole, view,
                "{name}: {chunk}-byte chunks reassemble to BODY[]"
            );
        }
    }
}

#[test]
fn undecryptable_and_plain_messages_are_byte_identical_to_dovecot() {
    byte_identical_to_the_server(&Env::new());
}

/// The same against Cyrus IMAP.
#[test]
fn cyrus_undecryptable_and_plain_messages_are_byte_identical_to_cyrus() {
    byte_identical_to_the_server(&Env::cyrus());
}

fn byte_identical_to_the_server(env: &Env) {
    let mut c = env.client();
    for name in ["for_carol", "plain"] {
        let uid = env.uids[name];
        for items in [
            "UID RFC822.SIZE BODY.PEEK[]",
            "UID BODYSTRUCTURE ENVELOPE BODY.PEEK[1]",
        ] {
            let ours = c.command_ok(&format!("UID FETCH {uid} ({items})"));
            let theirs = env.server.fetch_raw(env.user, PASS, "INBOX", uid, items);
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs),
                "{name} {items}"
            );
        }
    }
    // A forged status header never reaches the client.
    let f = fetch_one(&mut c, env.uids["forged"], "UID RFC822.SIZE BODY.PEEK[]");
    let body = f.get("BODY[]").unwrap();
    assert!(!String::from_utf8_lossy(body).contains("Sealpost-Decrypted"));
    assert!(String::from_utf8_lossy(body).contains("I am totally verified."));
}

#[test]
fn body_fetch_sets_seen_and_reports_flags_like_the_server() {
    let env = Env::new();
    let mut c = env.client();
    let uid = env.uids["signed_mime"];
    let raw = c.command_ok(&format!("UID FETCH {uid} (UID BODY[1])"));
    let f = &parse_fetches(&raw)[0];
    assert!(String::from_utf8_lossy(f.get("FLAGS").expect("FLAGS reported")).contains("\\Seen"));
    assert!(String::from_utf8_lossy(f.get("BODY[1]").unwrap()).contains("minutes are attached"));
    assert!(env
        .dovecot()
        .flags(USER, PASS, "INBOX", uid)
        .iter()
        .any(|f| f == "\\Seen"));
    // PEEK leaves flags alone.
    let uid2 = env.uids["sq_mime"];
    fetch_one(&mut c, uid2, "UID BODY.PEEK[]");
    assert!(!env
        .dovecot()
        .flags(USER, PASS, "INBOX", uid2)
        .iter()
        .any(|f| f == "\\Seen"));
    // EXAMINE (read-only) never sets it.
    c.command_ok("EXAMINE INBOX");
    let f = fetch_one(&mut c, uid2, "UID BODY[]");
    assert!(f.get("BODY[]").is_some());
    assert!(!env
        .dovecot()
        .flags(USER, PASS, "INBOX", uid2)
        .iter()
        .any(|f| f == "\\Seen"));
}

#[test]
fn sequence_fetch_of_a_mixed_range_and_thunderbirds_habits() {
    let env = Env::new();
    let mut c = env.client();
    let n = corpus().messages.len();
    // Thunderbird's list-time fetch.
    let raw = c.command_ok(&format!("UID fetch 1:{n} (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To Received)])"));
    let fetches = parse_fetches(&raw);
    assert_eq!(fetches.len(), n);
    let by_uid: HashMap<u32, &common::imapclients::Fetch> =
        fetches.iter().map(|f| (f.uid().unwrap(), f)).collect();
    let hdr = |name: &str| {
        String::from_utf8_lossy(
            by_uid[&env.uids[name]]
                .items
                .iter()
                .find(|(k, _)| k.starts_with("BODY[HEADER.FIELDS"))
                .unwrap()
                .1
                .as_slice(),
        )
        .into_owned()
    };
    assert!(hdr("signed_mime").contains("Subject: Board meeting minutes"));
    assert!(hdr("signed_mime").contains("multipart/mixed"));
    assert!(hdr("plain").contains("multipart/alternative"));
    assert!(hdr("for_carol").contains("multipart/encrypted"));
    // New-mail preview, then display in chunks.
    let uid = env.uids["signed_mime"];
    let f = fetch_one(&mut c, uid, "UID BODY.PEEK[HEADER.FIELDS (Content-Type Content-Transfer-Encoding)] BODY.PEEK[TEXT]<0.2048>");
    assert!(
        String::from_utf8_lossy(f.get("BODY[TEXT]<0>").unwrap()).contains("minutes are attached")
    );
    let whole = fetch_one(&mut c, uid, "UID RFC822.SIZE BODY.PEEK[]");
    let bs = fetch_one(&mut c, uid, "UID BODYSTRUCTURE");
    assert!(String::from_utf8_lossy(bs.get("BODYSTRUCTURE").unwrap())
        .to_ascii_lowercase()
        .contains("\"mixed\""));
    assert!(whole.get("BODY[]").is_some());

    // Sequence-number FETCH over every message, plain and encrypted together.
    let raw = c.command_ok(&format!("FETCH 1:{n} (RFC822.SIZE ENVELOPE)"));
    let fetches = parse_fetches(&raw);
    assert_eq!(fetches.len(), n, "{}", String::from_utf8_lossy(&raw));
    assert!(
        fetches.iter().all(|f| f.uid().is_none()),
        "UID not asked, not shown"
    );
    let subjects: Vec<String> = fetches
        .iter()
        .map(|f| String::from_utf8_lossy(f.get("ENVELOPE").unwrap()).into_owned())
        .collect();
    assert!(
        subjects.iter().any(|s| s.contains("Board meeting minutes")),
        "{subjects:?}"
    );
}

#[test]
fn real_clients_imaplib_curl_and_mbsync_see_decrypted_mail() {
    real_clients_see_decrypted_mail(&Env::new());
}

/// The same against Cyrus IMAP.
#[test]
fn cyrus_real_clients_imaplib_curl_and_mbsync_see_decrypted_mail() {
    real_clients_see_decrypted_mail(&Env::cyrus());
}

fn real_clients_see_decrypted_mail(env: &Env) {
    let uid = env.uids["signed_mime"];
    let mut c = env.client();
    let view = fetch_one(&mut c, uid, "UID BODY.PEEK[]")
        .get("BODY[]")
        .unwrap()
        .to_vec();

    // python imaplib over implicit TLS.
    let script = r#"
import imaplib, ssl, sys, base64
port, ca, user, pw, uid = sys.argv[1:6]
c = imaplib.IMAP4_SSL("127.0.0.1", int(port), ssl_context=ssl.create_default_context(cafile=ca))
c.login(user, pw)
c.select("INBOX", readonly=True)
typ, data = c.uid("FETCH", uid, "(BODY.PEEK[])")
print(base64.b64encode(data[0][1]).decode())
c.logout()
"#;
    let out = common::run_python_ok(
        script,
        &[
            &env.proxy.imaps_port.to_string(),
            env.ca.ca_pem.to_str().unwrap(),
            env.user,
            PASS,
            &uid.to_string(),
        ],
    );
    use base64::Engine;
    let got = base64::engine::general_purpose::STANDARD
        .decode(out.trim())
        .unwrap();
    assert_eq!(got, view, "imaplib");

    // curl's IMAP support.
    let got = common::imapclients::curl_fetch(
        env.proxy.imaps_port,
        "tls",
        &env.ca.ca_pem,
        env.user,
        PASS,
        "INBOX",
        uid,
    );
    assert_eq!(got, view, "curl");

    // mbsync syncs the mailbox; the encrypted messages arrive decrypted.
    let synced = common::imapclients::mbsync_pull(
        env.proxy.imaps_port,
        "tls",
        &env.ca.ca_pem,
        env.user,
        PASS,
        "INBOX",
    );
    assert_eq!(synced.messages.len(), corpus().messages.len());
    let texts: Vec<String> = synced
        .messages
        .iter()
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert!(texts.iter().any(
        |t| t.contains("Subject: Board meeting minutes") && t.contains("minutes are attached")
    ));
    assert!(texts.iter().any(|t| t.contains("inline secret text")));
    assert_eq!(
        texts
            .iter()
            .filter(|t| t.contains("-----BEGIN PGP MESSAGE-----"))
            .count(),
        1,
        "only the one for carol stays encrypted"
    );
}

#[test]
fn idle_through_sealpost_sees_new_mail_and_capabilities_are_filtered() {
    let env = Env::new();
    let mut c = env.client();
    let caps = c.command_ok("CAPABILITY");
    let caps = String::from_utf8_lossy(&caps).to_ascii_uppercase();
    assert!(caps.contains("IDLE"), "{caps}");
    for gone in [
        "COMPRESS=",
        "BINARY",
        "STARTTLS",
        "SORT=",
        "ESORT",
        "THREAD=",
    ] {
        assert!(!caps.contains(gone), "{gone} in {caps}");
    }
    // SORT is answered through the decrypted view (tests/search.rs).
    assert!(caps.contains(" SORT"), "{caps}");
    let tag = c.new_tag();
    c.send_raw(format!("{tag} IDLE\r\n").as_bytes());
    let cont = c.read_line();
    assert!(cont.starts_with(b"+"), "{}", String::from_utf8_lossy(&cont));
    env.dovecot().deliver_new(
        USER,
        b"From: x@example.org\r\nSubject: new\r\n\r\nhello\r\n",
    );
    c.set_timeout(Duration::from_secs(20));
    let mut seen = false;
    for _ in 0..10 {
        let line = c.read_line();
        if String::from_utf8_lossy(&line).contains("EXISTS") {
            seen = true;
            break;
        }
    }
    assert!(seen, "IDLE saw no EXISTS");
    c.send_raw(b"DONE\r\n");
    let r = c.read_until_tagged(&tag);
    assert!(r.is_ok(), "{}", r.tagged_text());

    // AUTHENTICATE PLAIN with SASL-IR passes through and still selects the identity.
    use base64::Engine;
    let ir = base64::engine::general_purpose::STANDARD.encode(format!("\0{USER}\0{PASS}"));
    let mut c = RawImap::connect(env.proxy.imaps_port, "tls", Some(&env.ca.ca_pem));
    c.command_ok(&format!("AUTHENTICATE PLAIN {ir}"));
    c.command_ok("EXAMINE INBOX");
    let f = fetch_one(&mut c, env.uids["sq_mime"], "UID BODY.PEEK[HEADER]");
    assert!(
        String::from_utf8_lossy(f.get("BODY[HEADER]").unwrap()).contains("Sealpost-Decrypted: yes")
    );
}

#[test]
fn a_cache_too_small_for_any_view_still_gives_consistent_answers() {
    let env = Env::with_extra("[limits]\nview_cache_size = 1024\n");
    let mut c = env.client();
    let uid = env.uids["signed_mime"];
    let a = fetch_one(&mut c, uid, "UID RFC822.SIZE BODY.PEEK[]");
    let b = fetch_one(&mut c, uid, "UID BODY.PEEK[]<0.100> ENVELOPE");
    let view = a.get("BODY[]").unwrap();
    let size: usize = String::from_utf8_lossy(a.get("RFC822.SIZE").unwrap())
        .parse()
        .unwrap();
    assert_eq!(size, view.len());
    assert_eq!(b.get("BODY[]<0>").unwrap(), &view[..100]);
    assert!(String::from_utf8_lossy(b.get("ENVELOPE").unwrap()).contains("Board meeting minutes"));
}

/// `[imap] classify_on_select`: when a client selects a mailbox, sealpost's own
/// connection (logged in as the client did) learns which messages need a view, so the
/// client's FETCHes send no classification upstream, and what the client sees is the
/// same, byte for byte, as from a sealpost whose FETCHes classify for themselves.
#[test]
fn a_mailbox_classified_at_select_looks_exactly_as_one_each_fetch_classifies() {
    use common::fault::FaultRelay;
    let ca = TestCa::shared();
    let dovecot = Dovecot::start(ca, &[(USER, PASS)]);
    // More messages than one FETCH job classifies along: every kind of the corpus
    // (not the big one, for time) among plain mail, throughout the mailbox.
    let kinds: Vec<&[u8]> = corpus()
        .messages
        .iter()
        .filter(|(name, _)| *name != "big")
        .map(|(_, m)| m.as_slice())
        .collect();
    const ROUNDS: usize = 30;
    for round in 0..ROUNDS {
        for m in &kinds {
            dovecot.deliver_new(USER, m);
        }
        for i in 0..4 {
            dovecot.deliver_new(
                USER,
                format!("From: carol@example.org\r\nSubject: filler {round} {i}\r\n\r\nplain {round} {i}\r\n")
                    .as_bytes(),
            );
        }
    }
    let uids = dovecot.uids(USER, PASS, "INBOX");
    assert_eq!(uids.len(), ROUNDS * (kinds.len() + 4));

    // Each sealpost reaches Dovecot through a relay that records what it carries.
    let pull = |ahead: bool| -> (FaultRelay, Vec<Vec<u8>>) {
        let relay = FaultRelay::start(dovecot.imap_port);
        let mut opts = ProxyOptions::new(1);
        opts.imap_upstream = Some((relay.port, "plain"));
        opts.alice_login = USER.into();
        opts.import = vec![keyring().bob().pub_asc.clone()];
        opts.classify_on_select = ahead;
        let proxy = Proxy::start(ca, &opts);
        let mut c =
            RawImap::connect_login(proxy.imap_port, "starttls", Some(&ca.ca_pem), USER, PASS);
        c.command_ok("SELECT INBOX");
        if ahead {
            // Its own connection, second at the relay, ends with LOGOUT once done.
            let until = std::time::Instant::now() + Duration::from_secs(30);
            while !(relay.accepted() >= 2
                && String::from_utf8_lossy(&relay.carried(1).0).contains("LOGOUT"))
            {
                assert!(
                    std::time::Instant::now() < until,
                    "no classification at SELECT:\n{}",
                    proxy.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // The way mbsync syncs: list, then one message per command (without FLAGS:
        // `\Recent` goes to the first session only).
        c.command_ok("UID FETCH 1:* (UID FLAGS)");
        let shown: Vec<Vec<u8>> = uids
            .iter()
            .map(|uid| c.command_ok(&format!("UID FETCH {uid} (UID RFC822.SIZE BODY.PEEK[])")))
            .collect();
        c.logout();
        drop(proxy);
        (relay, shown)
    };
    let (with_relay, with_ahead) = pull(true);
    let (without_relay, without) = pull(false);

    for (i, (a, b)) in with_ahead.iter().zip(&without).enumerate() {
        assert_eq!(
            String::from_utf8_lossy(a),
            String::from_utf8_lossy(b),
            "UID {} differs",
            uids[i]
        );
    }
    // And what both show is the view: decrypted, the forged status field gone.
    let count = |needle: &str| {
        with_ahead
            .iter()
            .filter(|r| String::from_utf8_lossy(r).contains(needle))
            .count()
    };
    assert_eq!(count("inline secret text"), ROUNDS);
    assert_eq!(count("Encrypted by sq, not signed."), ROUNDS);
    assert_eq!(count("signer=0000"), 0);

    let classification = "BODY.PEEK[HEADER.FIELDS (CONTENT-TYPE SEALPOST-DECRYPTED)]";
    let session = String::from_utf8_lossy(&with_relay.carried(0).0).to_string();
    let own = String::from_utf8_lossy(&with_relay.carried(1).0).to_string();
    assert!(
        !session.contains(classification),
        "the client's session classified:\n{session}"
    );
    assert!(
        own.contains(&format!("FETCH 1:* (UID RFC822.SIZE {classification})")),
        "{own}"
    );
    assert!(
        own.contains("SEARCH UID"),
        "the inline candidates searched: {own}"
    );
    // Without it, the session classifies (the check above can fail), and no second
    // connection is made.
    assert!(String::from_utf8_lossy(&without_relay.carried(0).0).contains(classification));
    assert_eq!(without_relay.accepted(), 1);
}
