//! What a mail client stores is sealed before the provider sees it: APPENDs through the
//! `sealpost` binary into a real Dovecot, checked at Dovecot (ciphertext only, readable
//! by gpg with the user's key) and through sealpost (the message as written).

mod common;

use common::dovecot::Dovecot;
use common::imapclients::{parse_fetches, Fetch, RawImap};
use common::proxy::{Proxy, ProxyOptions};
use common::{armored, gpg_decrypt, gpg_encrypt, keyring, TestCa};

const USER: &str = "alice@example.com";
const PASS: &str = "alicepw";

/// A draft as Thunderbird writes it: its own fields, a Bcc, format=flowed.
const DRAFT: &str = "From: Alice <alice@example.com>\r\nTo: Bob <bob@example.org>\r\nBcc: carol@example.org\r\nSubject: Offer for the Lisbon office\r\nDate: Wed, 02 Dec 2026 10:00:00 +0000\r\nMessage-ID: <draft-1@example.com>\r\nX-Mozilla-Draft-Info: internal/draft; vcard=0; receipt=0; DSN=0; uuencode=0\r\nUser-Agent: Mozilla Thunderbird\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8; format=flowed\r\nContent-Transfer-Encoding: 8bit\r\n\r\nWe can offer 1.2 million, payable in March.\r\n";

struct Env {
    ca: &'static TestCa,
    dovecot: Dovecot,
    proxy: Proxy,
}

impl Env {
    fn new(extra: &str) -> Env {
        Env::with_dovecot(extra, "")
    }

    /// `extra` for sealpost's config, `dovecot_conf` for Dovecot's.
    fn with_dovecot(extra: &str, dovecot_conf: &str) -> Env {
        let ca = TestCa::shared();
        let dovecot = Dovecot::start_with(ca, &[(USER, PASS)], dovecot_conf);
        let mut opts = ProxyOptions::new(1);
        opts.imap_upstream = Some((dovecot.imaps_port, "tls"));
        opts.alice_login = USER.into();
        opts.extra = extra.to_string();
        let proxy = Proxy::start(ca, &opts);
        Env { ca, dovecot, proxy }
    }

    fn client(&self) -> RawImap {
        RawImap::connect_login(
            self.proxy.imap_port,
            "starttls",
            Some(&self.ca.ca_pem),
            USER,
            PASS,
        )
    }

    /// The message as Dovecot stores it.
    fn stored(&self, mailbox: &str, uid: u32) -> Vec<u8> {
        let mut d = self.dovecot.session(USER, PASS);
        d.command_ok(&format!("EXAMINE \"{mailbox}\""));
        fetch(&mut d, uid, "BODY.PEEK[]")
            .get("BODY[]")
            .unwrap()
            .to_vec()
    }

    /// Dovecot's own answer for `items` of `message` stored in the clear.
    fn dovecot_answer(&self, message: &[u8], items: &str) -> Fetch {
        let mut d = self.dovecot.session(USER, PASS);
        let _ = d.command("CREATE Scratch");
        let uid = appenduid(&d.append("Scratch", &[], message).tagged_text());
        d.command_ok("EXAMINE Scratch");
        fetch(&mut d, uid, items)
    }
}

fn fetch(c: &mut RawImap, uid: u32, items: &str) -> Fetch {
    let raw = c.command_ok(&format!("UID FETCH {uid} ({items})"));
    let mut f = parse_fetches(&raw);
    assert_eq!(f.len(), 1, "{}", String::from_utf8_lossy(&raw));
    f.pop().unwrap()
}

fn appenduid(tagged: &str) -> u32 {
    tagged
        .split("[APPENDUID ")
        .nth(1)
        .and_then(|rest| rest.split([' ', ']']).nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("no APPENDUID in {tagged:?}"))
}

#[test]
fn an_appended_message_is_stored_encrypted_and_read_back_as_written() {
    let env = Env::new("");
    let mut c = env.client();
    c.command_ok("CREATE Sent");
    // Outlook's way: a synchronizing literal, flags and INTERNALDATE.
    let r = c.command_with_literal(
        "APPEND Sent (\\Seen $Forwarded) \"02-Dec-2026 10:00:01 +0000\"",
        DRAFT.as_bytes(),
        "",
    );
    assert!(r.is_ok(), "{}\n{}", r.tagged_text(), env.proxy.log());
    // Upstream's APPENDUID reaches the client.
    let uid = appenduid(&r.tagged_text());

    // At the provider: ciphertext, nothing of what was written but what transport needs.
    let stored = env.stored("Sent", uid);
    let text = String::from_utf8_lossy(&stored);
    assert!(text.contains("Content-Type: multipart/encrypted"), "{text}");
    for secret in [
        "Lisbon",
        "1.2 million",
        "carol@",
        "X-Mozilla",
        "Thunderbird",
    ] {
        assert!(
            !text.contains(secret),
            "{secret} stored in the clear: {text}"
        );
    }
    assert!(text.contains("Subject: [...]\r\n") && text.contains("To: Bob <bob@example.org>\r\n"));
    // Readable with the user's own key by any OpenPGP client, real Subject inside.
    let g = gpg_decrypt("alice", &armored(&stored));
    g.assert_decrypted_signed_by("alice");
    let inner = String::from_utf8_lossy(&g.plaintext);
    assert!(
        inner.contains("Subject: Offer for the Lisbon office\r\n"),
        "{inner}"
    );
    assert!(inner.contains("hp=\"cipher\""), "{inner}");

    // Through sealpost: the message as written, every item consistent with it.
    c.command_ok("SELECT Sent");
    let items = "FLAGS INTERNALDATE RFC822.SIZE BODYSTRUCTURE ENVELOPE BODY.PEEK[]";
    let f = fetch(&mut c, uid, items);
    assert_eq!(f.get("BODY[]").unwrap(), DRAFT.as_bytes());
    let want = env.dovecot_answer(DRAFT.as_bytes(), "RFC822.SIZE BODYSTRUCTURE ENVELOPE");
    // (imap-codec spells MIME types in capitals where Dovecot echoes the header:
    // MIME types are case-insensitive.)
    for item in ["RFC822.SIZE", "BODYSTRUCTURE", "ENVELOPE"] {
        let (got, want) = (f.get(item).unwrap(), want.get(item).unwrap());
        assert!(
            got.eq_ignore_ascii_case(want),
            "{item}: {} vs {}",
            String::from_utf8_lossy(got),
            String::from_utf8_lossy(want)
        );
    }
    let flags = f.flags().unwrap();
    assert!(flags.contains(&"\\Seen".to_string()) && flags.contains(&"$Forwarded".to_string()));
    assert_eq!(
        String::from_utf8_lossy(f.get("INTERNALDATE").unwrap()),
        "02-Dec-2026 10:00:01 +0000"
    );
    // Nothing in the log of what was written.
    assert!(!env.proxy.log().contains("Lisbon"));
}

#[test]
fn thunderbirds_drafts_and_already_encrypted_mail() {
    let env = Env::new("");
    let mut c = env.client();
    c.command_ok("CREATE Drafts");
    c.command_ok("SELECT Drafts");
    // Thunderbird saves a draft with LITERAL+, then the next version, then removes
    // the first.
    let mut uids = Vec::new();
    for version in ["first", "second"] {
        let draft = DRAFT.replace("payable in March", &format!("{version} version"));
        let tag = format!("d{}", uids.len());
        let mut line = format!(
            "{tag} APPEND Drafts (\\Draft \\Seen) {{{}+}}\r\n",
            draft.len()
        )
        .into_bytes();
        line.extend_from_slice(draft.as_bytes());
        line.extend_from_slice(b"\r\n");
        c.send_raw(&line);
        let r = c.read_until_tagged(&tag);
        assert!(r.is_ok(), "{}", r.tagged_text());
        uids.push(appenduid(&r.tagged_text()));
    }
    c.command_ok(&format!("UID STORE {} +FLAGS.SILENT (\\Deleted)", uids[0]));
    c.command_ok(&format!("UID EXPUNGE {}", uids[0]));
    let raw = c.command_ok("UID FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (Subject X-Mozilla-Draft-Info)] BODY.PEEK[TEXT])");
    let list = parse_fetches(&raw);
    assert_eq!(list.len(), 1, "{}", String::from_utf8_lossy(&raw));
    let h = String::from_utf8_lossy(
        list[0]
            .items
            .iter()
            .find(|(n, _)| n.starts_with("BODY[HEADER.FIELDS"))
            .unwrap()
            .1
            .as_slice(),
    )
    .into_owned();
    assert!(
        h.contains("Subject: Offer for the Lisbon office") && h.contains("X-Mozilla-Draft-Info"),
        "{h}"
    );
    assert_eq!(
        list[0].get("BODY[TEXT]").unwrap(),
        b"We can offer 1.2 million, second version.\r\n"
    );

    // A message encrypted by the client itself is stored as it is.
    let mut encrypted =
        b"From: bob@example.org\r\nTo: alice@example.com\r\nSubject: from gpg\r\n\r\n".to_vec();
    for line in String::from_utf8_lossy(&gpg_encrypt(
        Some("bob"),
        &["alice"],
        b"inline secret\n",
        true,
    ))
    .lines()
    {
        encrypted.extend_from_slice(line.as_bytes());
        encrypted.extend_from_slice(b"\r\n");
    }
    let r = c.append("Drafts", &[], &encrypted);
    assert!(r.is_ok(), "{}", r.tagged_text());
    assert_eq!(env.stored("Drafts", appenduid(&r.tagged_text())), encrypted);
    let _ = keyring();
}

/// A Sent folder with a name of another language, and a client that stores into it
/// without ever listing (as mbsync or a phone may): sealpost asked Dovecot itself.
#[test]
fn sent_drafts_finds_a_localised_sent_folder_the_client_never_listed() {
    let env = Env::with_dovecot(
        "[imap]\nencrypt_append = \"sent-drafts\"\n",
        "namespace inbox {\n  mailbox Gesendet {\n    special_use = \\Sent\n    auto = create\n  }\n}\n",
    );
    let mut c = env.client();
    let r = c.append("Gesendet", &[], DRAFT.as_bytes());
    let stored = env.stored("Gesendet", appenduid(&r.tagged_text()));
    let text = String::from_utf8_lossy(&stored);
    assert!(
        text.contains("multipart/encrypted") && !text.contains("Lisbon"),
        "{text}"
    );
    // A mailbox without the attribute is left alone.
    c.command_ok("CREATE Archiv");
    let r = c.append("Archiv", &[], DRAFT.as_bytes());
    assert_eq!(
        env.stored("Archiv", appenduid(&r.tagged_text())),
        DRAFT.as_bytes()
    );
}

#[test]
fn sent_drafts_leaves_other_mailboxes_alone_and_off_stores_as_sent() {
    let env = Env::new("[imap]\nencrypt_append = \"sent-drafts\"\n");
    let mut c = env.client();
    c.command_ok("CREATE Archive");
    c.command_ok("CREATE Sent");
    let r = c.append("Archive", &[], DRAFT.as_bytes());
    assert_eq!(
        env.stored("Archive", appenduid(&r.tagged_text())),
        DRAFT.as_bytes()
    );
    let r = c.append("Sent", &[], DRAFT.as_bytes());
    let stored = env.stored("Sent", appenduid(&r.tagged_text()));
    assert!(!String::from_utf8_lossy(&stored).contains("Lisbon"));

    let env = Env::new("[imap]\nencrypt_append = \"off\"\n");
    let mut c = env.client();
    c.command_ok("CREATE Sent");
    let r = c.append("Sent", &[], DRAFT.as_bytes());
    assert_eq!(
        env.stored("Sent", appenduid(&r.tagged_text())),
        DRAFT.as_bytes()
    );
}

#[test]
fn imaplib_and_curl_store_sealed_copies() {
    let env = Env::new("");
    let mut c = env.client();
    c.command_ok("CREATE Sent");
    // python imaplib (synchronizing literal), over implicit TLS.
    let script = r#"
import imaplib, ssl, sys
port, ca, user, pw, path = sys.argv[1:6]
c = imaplib.IMAP4_SSL("127.0.0.1", int(port), ssl_context=ssl.create_default_context(cafile=ca))
c.login(user, pw)
typ, data = c.append("Sent", "(\\Seen)", None, open(path, "rb").read())
print(typ, data[0].decode())
c.logout()
"#;
    let dir = common::tempdir();
    let path = dir.path().join("draft.eml");
    std::fs::write(&path, DRAFT).unwrap();
    let out = common::run_python_ok(
        script,
        &[
            &env.proxy.imaps_port.to_string(),
            env.ca.ca_pem.to_str().unwrap(),
            USER,
            PASS,
            path.to_str().unwrap(),
        ],
    );
    assert!(out.starts_with("OK "), "{out}");
    let uid = appenduid(&out);
    // curl's IMAP upload (APPEND with a literal).
    let curl = std::process::Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&env.ca.ca_pem)
        .args(["-u", &format!("{USER}:{PASS}"), "-T"])
        .arg(&path)
        .arg(format!("imaps://127.0.0.1:{}/Sent", env.proxy.imaps_port))
        .output()
        .expect("run curl");
    assert!(
        curl.status.success(),
        "{}",
        String::from_utf8_lossy(&curl.stderr)
    );
    c.command_ok("SELECT Sent");
    let raw = c.command_ok("UID FETCH 1:* (UID BODY.PEEK[])");
    let list = parse_fetches(&raw);
    assert_eq!(list.len(), 2);
    for f in &list {
        assert_eq!(f.get("BODY[]").unwrap(), DRAFT.as_bytes());
        let stored = env.stored("Sent", f.uid().unwrap());
        assert!(!String::from_utf8_lossy(&stored).contains("Lisbon"));
    }
    assert!(list.iter().any(|f| f.uid() == Some(uid)));
}

#[test]
fn a_multiappend_stores_every_message_sealed() {
    let env = Env::new("");
    let mut c = env.client();
    let other = DRAFT.replace("payable in March", "second offer");
    let mut cmd = format!("m1 APPEND Sent (\\Seen) {{{}+}}\r\n", DRAFT.len()).into_bytes();
    cmd.extend_from_slice(DRAFT.as_bytes());
    cmd.extend_from_slice(format!(" (\\Flagged) {{{}+}}\r\n", other.len()).as_bytes());
    cmd.extend_from_slice(other.as_bytes());
    cmd.extend_from_slice(b"\r\n");
    c.send_raw(&cmd);
    let r = c.read_until_tagged("m1");
    assert!(r.is_ok(), "{}\n{}", r.tagged_text(), env.proxy.log());
    c.command_ok("SELECT Sent");
    let raw = c.command_ok("UID FETCH 1:* (UID FLAGS BODY.PEEK[])");
    let list = parse_fetches(&raw);
    assert_eq!(list.len(), 2);
    for (f, want, flag) in [
        (&list[0], DRAFT, "\\Seen"),
        (&list[1], other.as_str(), "\\Flagged"),
    ] {
        assert_eq!(f.get("BODY[]").unwrap(), want.as_bytes());
        assert!(f.flags().unwrap().contains(&flag.to_string()));
        let stored = env.stored("Sent", f.uid().unwrap());
        assert!(!String::from_utf8_lossy(&stored).contains("Lisbon"));
    }
}
