//! More real IMAP clients pull a mailbox through sealpost and directly from Dovecot, and
//! the two pulls are compared: offlineimap3 and getmail6 over implicit TLS, fetchmail over
//! implicit TLS and over STARTTLS (tests/imap_proxy.rs does the same with imaplib, curl
//! and mbsync). Plain mail and mail sealpost cannot decrypt must arrive byte for byte as
//! it does directly; mail encrypted to the login's identity must arrive decrypted through
//! sealpost and still encrypted directly. Each tool's own additions (a Received field and
//! the like, as its documentation lists them) are taken off before comparing, and what
//! each tool stored is also compared with the BODY[] the server it talked to answers.

mod common;

use common::dovecot::Dovecot;
use common::imapclients::{parse_fetches, RawImap};
use common::proxy::{Proxy, ProxyOptions};
use common::pullers::{message_id, unfold_header, Pull, Puller};
use common::{gpg_encrypt, keyring, TestCa};
use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Instant;

const USER: &str = "alice@example.com";
const PASS: &str = "alicepw";
const BEGIN_PGP: &str = "-----BEGIN PGP MESSAGE-----";

/// What a message of the test mailbox is.
enum Kind {
    /// Not encrypted: passes through sealpost byte for byte.
    Plain,
    /// Encrypted to alice: decrypted through sealpost; the text is inside the encryption.
    ForAlice { text: &'static str },
    /// Encrypted to carol only: sealpost shows it exactly as stored.
    NotForAlice,
}

struct Message {
    id: &'static str,
    kind: Kind,
    stored: Vec<u8>,
}

/// Bare LFs as CRLF (sealpost's own normalisation).
fn crlf(data: &[u8]) -> Vec<u8> {
    sealpost::mime::to_crlf(data).into_owned()
}

/// Deterministic pseudo-random bytes, base64 in 76-character CRLF lines.
fn base64_noise(n: usize, seed: u64) -> String {
    use base64::Engine;
    let mut x = seed.wrapping_mul(6364136223846793005) | 1;
    let data: Vec<u8> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let b = base64::engine::general_purpose::STANDARD.encode(data);
    b.as_bytes()
        .chunks(76)
        .map(|c| format!("{}\r\n", std::str::from_utf8(c).unwrap()))
        .collect()
}

/// RFC 3156 PGP/MIME around an armored OpenPGP message.
fn pgp_mime(outer_headers: &str, armored: &[u8]) -> Vec<u8> {
    let mut m = format!(
        "{outer_headers}MIME-Version: 1.0\r\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n\
         \tboundary=\"enc-boundary\"\r\n\
         \r\n\
         This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n\
         --enc-boundary\r\n\
         Content-Type: application/pgp-encrypted\r\n\
         \r\n\
         Version: 1\r\n\
         \r\n\
         --enc-boundary\r\n\
         Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\
         \r\n"
    )
    .into_bytes();
    m.extend_from_slice(&crlf(armored));
    m.extend_from_slice(b"\r\n--enc-boundary--\r\n");
    m
}

fn headers(from: &str, subject: &str, id: &str) -> String {
    format!(
        "From: {from}\r\nTo: Alice <alice@example.com>\r\nSubject: {subject}\r\n\
         Date: Wed, 25 Nov 2026 10:00:00 +0000\r\nMessage-ID: {id}\r\n"
    )
}

/// The test mailbox: plain mail of several shapes, PGP/MIME and inline PGP for alice
/// (signed by bob or not, by gpg and by sq, small and large), one message for carol.
fn corpus() -> &'static [Message] {
    static C: OnceLock<Vec<Message>> = OnceLock::new();
    C.get_or_init(|| {
        let mut out = Vec::new();

        out.push(Message {
            id: "<plain-1@example.org>",
            kind: Kind::Plain,
            stored: format!(
                "{}Content-Type: text/plain; charset=us-ascii\r\n\r\nJust a plain note.\r\n",
                headers("Carol <carol@example.org>", "plain note", "<plain-1@example.org>")
            )
            .into_bytes(),
        });

        out.push(Message {
            id: "<plain-2@example.org>",
            kind: Kind::Plain,
            stored: (
                "From: =?utf-8?q?J=C3=BCrgen?= <juergen@example.org>\r\n\
                 To: Alice <alice@example.com>\r\n\
                 Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe_aus_M=C3=BCnchen=2C_mit_einem_sehr_langen?=\r\n\
                 \x20=?utf-8?q?_Betreff_der_umbrochen_wird?=\r\n\
                 Date: Wed, 25 Nov 2026 10:01:00 +0100\r\n\
                 Message-ID: <plain-2@example.org>\r\n\
                 References: <a-very-long-reference-identifier-0001@example.org>\r\n\
                 \t<a-very-long-reference-identifier-0002@example.org>\r\n\
                 MIME-Version: 1.0\r\n\
                 Content-Type: multipart/alternative; boundary=\"alt\"\r\n\
                 \r\n\
                 --alt\r\n\
                 Content-Type: text/plain; charset=utf-8\r\n\
                 Content-Transfer-Encoding: 8bit\r\n\
                 \r\n\
                 Grüße — ünïcödé in 8 bit.\r\n\
                 --alt\r\n\
                 Content-Type: text/html; charset=utf-8\r\n\
                 Content-Transfer-Encoding: 8bit\r\n\
                 \r\n\
                 <p>Grüße</p>\r\n\
                 --alt--\r\n"
            )
            .as_bytes()
            .to_vec(),
        });

        out.push(Message {
            id: "<plain-3@example.org>",
            kind: Kind::Plain,
            stored: format!(
                "{}MIME-Version: 1.0\r\n\
                 Content-Type: multipart/mixed; boundary=\"mixed\"\r\n\
                 \r\n\
                 --mixed\r\n\
                 Content-Type: text/plain; charset=us-ascii\r\n\
                 \r\n\
                 The data is attached.\r\n\
                 --mixed\r\n\
                 Content-Type: application/octet-stream; name=\"data.bin\"\r\n\
                 Content-Disposition: attachment; filename=\"data.bin\"\r\n\
                 Content-Transfer-Encoding: base64\r\n\
                 \r\n\
                 {}--mixed--\r\n",
                headers("bob@example.org", "plain attachment", "<plain-3@example.org>"),
                base64_noise(200_000, 3)
            )
            .into_bytes(),
        });

        out.push(Message {
            id: "<plain-4@example.org>",
            kind: Kind::Plain,
            stored: format!(
                "{}Content-Type: text/plain; charset=us-ascii\r\n\r\n\
                 A line that mbox would quote:\r\n\
                 From here on, nothing changes.\r\n\
                 .\r\n\
                 ..and a dot line above, as SMTP would stuff it.\r\n",
                headers("bob@example.org", "From lines and dots", "<plain-4@example.org>")
            )
            .into_bytes(),
        });

        let inner = "Content-Type: multipart/mixed; boundary=\"inner\"; protected-headers=\"v1\"\r\n\
             Subject: Board meeting minutes\r\n\
             From: Bob <bob@example.org>\r\n\
             To: Alice <alice@example.com>\r\n\
             Date: Wed, 25 Nov 2026 10:02:00 +0000\r\n\
             Message-ID: <enc-1@example.org>\r\n\
             \r\n\
             --inner\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: 8bit\r\n\
             \r\n\
             The board minutes are attached — signed by Bob.\r\n\
             --inner\r\n\
             Content-Type: application/octet-stream; name=\"minutes.bin\"\r\n\
             Content-Disposition: attachment; filename=\"minutes.bin\"\r\n\
             Content-Transfer-Encoding: base64\r\n\
             \r\n"
            .to_string()
            + &base64_noise(4000, 5)
            + "--inner--\r\n";
        out.push(Message {
            id: "<enc-1@example.org>",
            kind: Kind::ForAlice {
                text: "The board minutes are attached",
            },
            stored: pgp_mime(
                &headers("Bob <bob@example.org>", "...", "<enc-1@example.org>"),
                &gpg_encrypt(Some("bob"), &["alice"], inner.as_bytes(), true),
            ),
        });

        out.push(Message {
            id: "<enc-2@example.org>",
            kind: Kind::ForAlice {
                text: "Encrypted by sq, not signed.",
            },
            stored: pgp_mime(
                &headers("bob@example.org", "from sq", "<enc-2@example.org>"),
                &common::pgp::sq_encrypt(
                    "alice",
                    b"Content-Type: text/plain; charset=us-ascii\r\n\r\nEncrypted by sq, not signed.\r\n",
                ),
            ),
        });

        let mut inline = format!(
            "{}Content-Type: text/plain; charset=us-ascii\r\n\r\n",
            headers("bob@example.org", "inline", "<enc-3@example.org>")
        )
        .into_bytes();
        inline.extend_from_slice(&crlf(&gpg_encrypt(
            Some("bob"),
            &["alice"],
            b"Inline secret text, signed by Bob.\n",
            true,
        )));
        out.push(Message {
            id: "<enc-3@example.org>",
            kind: Kind::ForAlice {
                text: "Inline secret text, signed by Bob.",
            },
            stored: inline,
        });

        // Compresses well: what the clients see is much larger than what is stored.
        let mut big = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nA long report.\r\n".to_vec();
        for i in 0..8_000 {
            big.extend_from_slice(format!("line {i:05} of a long and repetitive report\r\n").as_bytes());
        }
        out.push(Message {
            id: "<enc-4@example.org>",
            kind: Kind::ForAlice {
                text: "line 07999 of a long and repetitive report",
            },
            stored: pgp_mime(
                &headers("bob@example.org", "big report", "<enc-4@example.org>"),
                &gpg_encrypt(Some("bob"), &["alice"], &big, true),
            ),
        });

        out.push(Message {
            id: "<carol-1@example.org>",
            kind: Kind::NotForAlice,
            stored: pgp_mime(
                &headers("bob@example.org", "not for alice", "<carol-1@example.org>"),
                &gpg_encrypt(
                    Some("bob"),
                    &["carol"],
                    b"Content-Type: text/plain\r\n\r\nFor Carol only.\r\n",
                    true,
                ),
            ),
        });
        out
    })
}

struct Env {
    ca: &'static TestCa,
    dovecot: Dovecot,
    proxy: Proxy,
}

impl Env {
    /// Dovecot holding the corpus in alice's INBOX, sealpost in front of it (implicit TLS
    /// upstream) with alice's identity and bob's certificate.
    fn new() -> Env {
        let ca = TestCa::shared();
        let dovecot = Dovecot::start(ca, &[(USER, PASS)]);
        for m in corpus() {
            dovecot.append(USER, PASS, "INBOX", &m.stored, &[]);
        }
        let mut opts = ProxyOptions::new(1);
        opts.imap_upstream = Some((dovecot.imaps_port, "tls"));
        opts.alice_login = USER.into();
        opts.import = vec![keyring().bob().pub_asc.clone()];
        let proxy = Proxy::start(ca, &opts);
        Env { ca, dovecot, proxy }
    }

    /// (Dovecot's port, sealpost's port) for `tls_mode`.
    fn ports(&self, tls_mode: &str) -> (u16, u16) {
        match tls_mode {
            "tls" => (self.dovecot.imaps_port, self.proxy.imaps_port),
            _ => (self.dovecot.imap_port, self.proxy.imap_port),
        }
    }
}

/// Message-ID -> BODY[] of every message in INBOX, as the server on `port` answers.
fn server_view(port: u16, tls_mode: &str, ca: &TestCa) -> BTreeMap<String, Vec<u8>> {
    let mut c = RawImap::connect_login(port, tls_mode, Some(&ca.ca_pem), USER, PASS);
    c.command_ok("EXAMINE INBOX");
    let raw = c.command_ok("UID FETCH 1:* (UID BODY.PEEK[])");
    parse_fetches(&raw)
        .into_iter()
        .map(|f| {
            let body = f.get("BODY[]").expect("BODY[] in FETCH").to_vec();
            let id = message_id(&body).expect("a Message-ID");
            (id, body)
        })
        .collect()
}

/// Message-ID -> (file, message with the tool's additions taken off). Panics unless every
/// message of the corpus is there exactly once.
fn by_message_id(pull: &Pull, via: &str) -> BTreeMap<String, (String, Vec<u8>)> {
    let name = pull.puller.name();
    let mut out = BTreeMap::new();
    for ((file, stored), normalized) in pull.messages.iter().zip(pull.normalized()) {
        let id = message_id(stored).unwrap_or_else(|| {
            panic!(
                "{name} {via}: no Message-ID in {}:\n{}",
                file.display(),
                String::from_utf8_lossy(&stored[..stored.len().min(2000)])
            )
        });
        let shown = file.display().to_string();
        if let Some((other, _)) = out.insert(id.clone(), (shown, normalized)) {
            panic!("{name} {via}: {id} stored twice (also in {other})");
        }
    }
    let mut want: Vec<&str> = corpus().iter().map(|m| m.id).collect();
    want.sort_unstable();
    let got: Vec<&str> = out.keys().map(String::as_str).collect();
    assert_eq!(
        got, want,
        "{name} {via}: not the messages of the mailbox; output:\n{}",
        pull.output
    );
    out
}

/// Panics with where `a` and `b` first differ, and a little of each around it.
fn assert_same(a: &[u8], b: &[u8], what: &str) {
    if a == b {
        return;
    }
    let at = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let around = |m: &[u8]| {
        let s = at.saturating_sub(200);
        String::from_utf8_lossy(&m[s..(at + 200).min(m.len())]).into_owned()
    };
    panic!(
        "{what}: {} and {} bytes, first difference at byte {at}\n--- first:\n{}\n--- second:\n{}",
        a.len(),
        b.len(),
        around(a),
        around(b)
    );
}

fn text(m: &[u8]) -> String {
    String::from_utf8_lossy(m).into_owned()
}

/// Pulls the mailbox with `puller` directly from Dovecot and through sealpost over
/// `tls_mode`, and compares the two pulls message by message.
fn pull_both_ways_and_compare(puller: Puller, tls_mode: &str) {
    let name = puller.name();
    let env = Env::new();
    let (direct_port, sealpost_port) = env.ports(tls_mode);
    let ca = &env.ca.ca_pem;

    let started = Instant::now();
    let direct = puller.pull(direct_port, tls_mode, ca, USER, PASS, "INBOX");
    let direct_took = started.elapsed();
    let started = Instant::now();
    let through = puller.pull(sealpost_port, tls_mode, ca, USER, PASS, "INBOX");
    let through_took = started.elapsed();
    eprintln!(
        "{name} ({tls_mode}): {} messages directly in {direct_took:.2?}, through sealpost in {through_took:.2?}",
        corpus().len()
    );

    assert_eq!(
        direct.messages.len(),
        corpus().len(),
        "{name} directly:\n{}",
        direct.output
    );
    assert_eq!(
        through.messages.len(),
        direct.messages.len(),
        "{name} through sealpost pulled another number of messages than directly:\n{}",
        through.output
    );
    let direct = by_message_id(&direct, "directly");
    let through = by_message_id(&through, "through sealpost");
    let dovecot_view = server_view(direct_port, tls_mode, env.ca);
    let sealpost_view = server_view(sealpost_port, tls_mode, env.ca);

    for m in corpus() {
        let (direct_file, d) = &direct[m.id];
        let (through_file, t) = &through[m.id];
        let what = format!("{name} ({tls_mode}), {}", m.id);
        // What the tool stored is what the server sent, modulo the tool's own additions
        // (and, for getmail, the folding of long header lines: sealpost's own
        // `Sealpost-Decrypted: yes; signature=good; signer=<fingerprint>` is 88 characters).
        let as_compared = |msg: &[u8]| {
            if puller.refolds_header() {
                unfold_header(msg)
            } else {
                msg.to_vec()
            }
        };
        assert_same(
            &as_compared(d),
            &as_compared(&dovecot_view[m.id]),
            &format!("{what}: {direct_file} against Dovecot's BODY[]"),
        );
        assert_same(
            &as_compared(t),
            &as_compared(&sealpost_view[m.id]),
            &format!("{what}: {through_file} against sealpost's BODY[]"),
        );
        assert_same(
            &dovecot_view[m.id],
            &m.stored,
            &format!("{what}: Dovecot's BODY[] against what was stored"),
        );
        match m.kind {
            Kind::Plain | Kind::NotForAlice => {
                assert_same(t, d, &format!("{what}: through sealpost against directly"));
                assert!(
                    !text(t).contains("Sealpost-Decrypted"),
                    "{what}: {}",
                    text(t)
                );
            }
            Kind::ForAlice { text: secret } => {
                let (d, t) = (text(d), text(t));
                assert!(
                    d.contains(BEGIN_PGP) && !d.contains(secret),
                    "{what}: not encrypted directly:\n{d}"
                );
                assert!(
                    t.contains(secret) && !t.contains(BEGIN_PGP),
                    "{what}: not decrypted through sealpost:\n{t}"
                );
                assert!(t.contains("\r\nSealpost-Decrypted: yes"), "{what}:\n{t}");
            }
        }
        if matches!(m.kind, Kind::NotForAlice) {
            assert!(text(t).contains(BEGIN_PGP), "{what}");
        }
    }
}

#[test]
fn offlineimap_pulls_through_sealpost_like_directly_with_encrypted_mail_decrypted() {
    pull_both_ways_and_compare(Puller::Offlineimap, "tls");
}

#[test]
fn getmail_pulls_through_sealpost_like_directly_with_encrypted_mail_decrypted() {
    pull_both_ways_and_compare(Puller::Getmail, "tls");
}

#[test]
fn fetchmail_over_starttls_pulls_through_sealpost_like_directly_with_encrypted_mail_decrypted() {
    pull_both_ways_and_compare(Puller::Fetchmail, "starttls");
}

#[test]
fn fetchmail_over_implicit_tls_pulls_through_sealpost_like_directly() {
    pull_both_ways_and_compare(Puller::Fetchmail, "tls");
}

#[test]
fn every_puller_refuses_a_certificate_its_ca_did_not_sign() {
    let env = Env::new();
    let other_dir = common::tempdir();
    let other = TestCa::new(other_dir.path());
    for puller in Puller::ALL {
        for &tls_mode in puller.tls_modes() {
            let (_, port) = env.ports(tls_mode);
            let what = format!("{} ({tls_mode})", puller.name());
            match puller.try_pull(port, tls_mode, &other.ca_pem, USER, PASS, "INBOX") {
                Ok(pull) => panic!(
                    "{what} pulled {} messages from a server its CA did not sign:\n{}",
                    pull.messages.len(),
                    pull.output
                ),
                // OpenSSL's words, through Python's ssl module or fetchmail.
                Err(failure) => assert!(
                    failure.contains("certificate verify failed"),
                    "{what} failed for another reason:\n{failure}"
                ),
            }
        }
    }
}
