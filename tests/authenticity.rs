//! What the decrypted view may claim, tried as an attacker would: mail made with real
//! GnuPG, stored in a real Dovecot, read through the `sealpost` binary. Anyone can
//! encrypt to alice (her key is public) and dave has an honest key of his own; neither
//! may make alice see a sender, a verdict or a provider field that nothing proved.

mod common;

use common::dovecot::Dovecot;
use common::imapclients::{parse_fetches, Fetch, RawImap};
use common::proxy::{Proxy, ProxyOptions};
use common::{gpg_encrypt, keyring, TestCa};

const USER: &str = "alice@example.com";
const PASS: &str = "alicepw";

/// The outer header an attacker writes: the CEO as sender, and the provider's verdicts.
const CEO_OUTER: &str = "Received: from mx.corp.example by imap.corp.example\r\nAuthentication-Results: mx.corp.example; dkim=fail header.d=example.org\r\nX-Spam-Flag: YES\r\nFrom: CEO Bob <bob@example.org>\r\nTo: Alice <alice@example.com>\r\nSubject: [...]\r\nDate: Tue, 01 Dec 2026 09:00:00 +0000\r\nMessage-ID: <att-{n}@example.org>\r\n";

fn pgp_mime(outer: &str, armored: &[u8]) -> Vec<u8> {
    let mut m = format!(
        "{outer}MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    for line in String::from_utf8_lossy(armored).lines() {
        m.extend_from_slice(line.as_bytes());
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(b"--b--\r\n");
    m
}

fn outer(n: u32) -> String {
    CEO_OUTER.replace("{n}", &n.to_string())
}

/// The stored messages, by name.
fn corpus() -> Vec<(&'static str, Vec<u8>)> {
    // 1. dave signs, with his own honest key, an inner part that names him, without
    //    any protected-headers marker; outside it claims to be from the CEO.
    let unmarked = "Content-Type: text/plain; charset=us-ascii\r\nFrom: dave@example.net\r\n\r\nPlease wire the money today.\r\n";
    // 2. Protected headers that try to replace the provider's fields and teach a key.
    let transit = "Content-Type: text/plain; charset=us-ascii; protected-headers=\"v1\"\r\nFrom: CEO Bob <bob@example.org>\r\nSubject: Budget approved\r\nAuthentication-Results: mx.corp.example; dkim=pass header.d=example.org\r\nX-Spam-Flag: NO\r\nReceived: from trusted.example\r\nAutocrypt: addr=bob@example.org; keydata=AAAA\r\n\r\nAll good.\r\n";
    // 3. A protected From naming carol (outside: the CEO), signed by dave: not proven.
    let other_from = "Content-Type: text/plain; charset=us-ascii; protected-headers=\"v1\"\r\nFrom: Carol <carol@example.org>\r\nSubject: Change of account\r\n\r\nNew IBAN follows.\r\n";
    // 4. A protected From naming dave, signed by dave: proven, shown.
    let own_from = "Content-Type: text/plain; charset=us-ascii; protected-headers=\"v1\"\r\nFrom: Dave <dave@example.net>\r\nSubject: Honest note\r\n\r\nIt is me, Dave.\r\n";
    // 5. RFC 9788 (Appendix E.1's shape): hp="cipher", HP-Outer, a Legacy Display
    //    Element, the outer Subject obscured.
    let rfc9788 = "Content-Type: text/plain; charset=\"us-ascii\"; hp-legacy-display=\"1\";\r\n hp=\"cipher\"\r\nDate: Tue, 01 Dec 2026 09:00:00 +0000\r\nFrom: CEO Bob <bob@example.org>\r\nTo: Alice <alice@example.com>\r\nSubject: Dinner plans\r\nMessage-ID: <att-5@example.org>\r\nHP-Outer: Date: Tue, 01 Dec 2026 09:00:00 +0000\r\nHP-Outer: From: CEO Bob <bob@example.org>\r\nHP-Outer: To: Alice <alice@example.com>\r\nHP-Outer: Subject: [...]\r\nHP-Outer: Message-ID: <att-5@example.org>\r\n\r\nSubject: Dinner plans\r\n\r\nLet's meet at Rama's Roti Shop at 8pm.\r\n";
    // 6. Dressed as one of alice's own sealed copies (shown as written), signed by dave.
    let fake_copy = "Content-Type: text/plain; charset=us-ascii; hp=\"cipher\"; protected-headers=\"v1\"\r\nFrom: CEO Bob <bob@example.org>\r\nAuthentication-Results: mx.corp.example; dkim=pass header.d=example.org\r\nSubject: Urgent transfer\r\nSealpost-Stored: v1; content-type=kept; hp-outer=0\r\n\r\nPay now.\r\n";
    vec![
        (
            "fake_copy",
            pgp_mime(
                &outer(6),
                &gpg_encrypt(Some("dave"), &["alice"], fake_copy.as_bytes(), true),
            ),
        ),
        (
            "unmarked",
            pgp_mime(
                &outer(1),
                &gpg_encrypt(Some("dave"), &["alice"], unmarked.as_bytes(), true),
            ),
        ),
        (
            "transit",
            pgp_mime(
                &outer(2),
                &gpg_encrypt(None, &["alice"], transit.as_bytes(), true),
            ),
        ),
        (
            "other_from",
            pgp_mime(
                &outer(3),
                &gpg_encrypt(Some("dave"), &["alice"], other_from.as_bytes(), true),
            ),
        ),
        (
            "own_from",
            pgp_mime(
                &outer(4).replace("CEO Bob <bob@example.org>", "dave@example.net"),
                &gpg_encrypt(Some("dave"), &["alice"], own_from.as_bytes(), true),
            ),
        ),
        (
            "rfc9788",
            pgp_mime(
                &outer(5),
                &gpg_encrypt(Some("bob"), &["alice"], rfc9788.as_bytes(), true),
            ),
        ),
    ]
}

struct Env {
    ca: &'static TestCa,
    _dovecot: Dovecot,
    proxy: Proxy,
    uids: Vec<(&'static str, u32)>,
}

impl Env {
    fn new() -> Env {
        let ca = TestCa::shared();
        let dovecot = Dovecot::start(ca, &[(USER, PASS)]);
        let uids = corpus()
            .into_iter()
            .map(|(name, msg)| (name, dovecot.append(USER, PASS, "INBOX", &msg, &[])))
            .collect();
        let mut opts = ProxyOptions::new(1);
        opts.imap_upstream = Some((dovecot.imaps_port, "tls"));
        opts.alice_login = USER.into();
        opts.import = vec![
            keyring().bob().pub_asc.clone(),
            keyring().dave().pub_asc.clone(),
        ];
        let proxy = Proxy::start(ca, &opts);
        Env {
            ca,
            _dovecot: dovecot,
            proxy,
            uids,
        }
    }

    fn client(&self) -> RawImap {
        let mut c = RawImap::connect_login(
            self.proxy.imap_port,
            "starttls",
            Some(&self.ca.ca_pem),
            USER,
            PASS,
        );
        c.command_ok("SELECT INBOX");
        c
    }

    fn uid(&self, name: &str) -> u32 {
        self.uids.iter().find(|(n, _)| *n == name).unwrap().1
    }
}

fn fetch(c: &mut RawImap, uid: u32, items: &str) -> Fetch {
    let raw = c.command_ok(&format!("UID FETCH {uid} ({items})"));
    let mut f = parse_fetches(&raw);
    assert_eq!(f.len(), 1, "{}", String::from_utf8_lossy(&raw));
    f.pop().unwrap()
}

fn header(c: &mut RawImap, uid: u32) -> String {
    let f = fetch(c, uid, "BODY.PEEK[HEADER]");
    String::from_utf8(f.get("BODY[HEADER]").unwrap().to_vec()).unwrap()
}

fn status(header: &str) -> &str {
    header
        .lines()
        .find_map(|l| l.strip_prefix("Sealpost-Decrypted: "))
        .unwrap_or_else(|| panic!("no status in {header}"))
}

#[test]
fn a_signature_counts_only_for_the_from_the_user_sees() {
    let env = Env::new();
    let mut c = env.client();
    let dave = &keyring().dave().fpr;

    // Signed by dave, shown as from the CEO: not from the sender, whatever the inner
    // (unprotected) From says.
    let h = header(&mut c, env.uid("unmarked"));
    assert!(h.contains("From: CEO Bob <bob@example.org>\r\n"), "{h}");
    assert!(!h.contains("From: dave@example.net"), "{h}");
    assert_eq!(
        status(&h),
        format!("yes; signature=not-from-sender; signer={dave}")
    );

    // A protected From naming carol, signed by dave: the outer From stays and the
    // status says which From was not proven.
    let h = header(&mut c, env.uid("other_from"));
    assert!(h.contains("From: CEO Bob <bob@example.org>\r\n"), "{h}");
    assert!(!h.contains("Carol"), "{h}");
    assert_eq!(
        status(&h),
        format!(
            "yes; signature=not-from-sender; signer={dave}; unproven-from=\"carol@example.org\""
        )
    );
    assert!(h.contains("Subject: Change of account\r\n"), "{h}");

    // A protected From that dave's good signature proves is shown.
    let h = header(&mut c, env.uid("own_from"));
    assert!(h.contains("From: Dave <dave@example.net>\r\n"), "{h}");
    assert_eq!(status(&h), format!("yes; signature=good; signer={dave}"));
    let f = fetch(&mut c, env.uid("own_from"), "ENVELOPE");
    let envelope = String::from_utf8_lossy(f.get("ENVELOPE").unwrap()).into_owned();
    assert!(
        envelope.contains("\"Dave\" NIL \"dave\" \"example.net\""),
        "{envelope}"
    );
}

#[test]
fn protected_headers_never_replace_what_the_provider_wrote() {
    let env = Env::new();
    let mut c = env.client();
    let h = header(&mut c, env.uid("transit"));
    assert!(h.contains("Subject: Budget approved\r\n"), "{h}");
    assert!(h.contains("dkim=fail") && !h.contains("dkim=pass"), "{h}");
    assert!(
        h.contains("X-Spam-Flag: YES\r\n") && !h.contains("X-Spam-Flag: NO"),
        "{h}"
    );
    assert!(
        h.contains("Received: from mx.corp.example") && !h.contains("trusted.example"),
        "{h}"
    );
    assert!(!h.contains("Autocrypt"), "{h}");
    assert_eq!(status(&h), "yes; unsigned");
}

#[test]
fn only_alices_own_key_makes_a_copy_shown_as_written() {
    let env = Env::new();
    let mut c = env.client();
    let h = header(&mut c, env.uid("fake_copy"));
    assert!(h.contains("dkim=fail") && !h.contains("dkim=pass"), "{h}");
    assert!(!h.contains("Sealpost-Stored"), "{h}");
    assert_eq!(
        status(&h),
        format!(
            "yes; signature=not-from-sender; signer={}",
            keyring().dave().fpr
        )
    );
}

#[test]
fn rfc9788_mail_shows_its_real_subject_without_the_legacy_display() {
    let env = Env::new();
    let mut c = env.client();
    let uid = env.uid("rfc9788");
    let f = fetch(
        &mut c,
        uid,
        "ENVELOPE BODYSTRUCTURE BODY.PEEK[HEADER] BODY.PEEK[TEXT] RFC822.SIZE BODY.PEEK[]",
    );
    let envelope = String::from_utf8_lossy(f.get("ENVELOPE").unwrap()).into_owned();
    assert!(envelope.contains("\"Dinner plans\""), "{envelope}");
    let h = String::from_utf8_lossy(f.get("BODY[HEADER]").unwrap()).into_owned();
    assert!(
        h.contains("Subject: Dinner plans\r\n") && !h.contains("[...]"),
        "{h}"
    );
    assert!(!h.contains("HP-Outer"), "{h}");
    assert_eq!(
        status(&h),
        format!("yes; signature=good; signer={}", keyring().bob().fpr)
    );
    let text = f.get("BODY[TEXT]").unwrap();
    assert_eq!(text, b"Let's meet at Rama's Roti Shop at 8pm.\r\n");
    let structure = String::from_utf8_lossy(f.get("BODYSTRUCTURE").unwrap()).to_ascii_lowercase();
    assert!(!structure.contains("hp-legacy-display"), "{structure}");
    let whole = f.get("BODY[]").unwrap();
    assert_eq!(
        String::from_utf8_lossy(f.get("RFC822.SIZE").unwrap()),
        whole.len().to_string()
    );

    // Thunderbird's list view (its header fetch, ../shared/notes) shows the real Subject
    // for both forms of header protection.
    let raw = c.command_ok(&format!(
        "UID fetch {}:{} (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To Received)])",
        env.uid("transit"),
        uid
    ));
    let subjects: Vec<String> = parse_fetches(&raw)
        .iter()
        .map(|f| {
            let h = String::from_utf8_lossy(
                f.items
                    .iter()
                    .find(|(n, _)| n.starts_with("BODY[HEADER.FIELDS"))
                    .unwrap()
                    .1
                    .as_slice(),
            )
            .into_owned();
            h.lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap_or("")
                .to_string()
        })
        .collect();
    for want in ["Budget approved", "Dinner plans"] {
        assert!(
            subjects.iter().any(|s| s == want),
            "{want} not in {subjects:?}"
        );
    }
    assert!(!subjects.iter().any(|s| s == "[...]"), "{subjects:?}");
}
