//! SEARCH through sealpost gives the answer Dovecot gives over the same mail stored
//! decrypted: a mailbox with plain mail, mail sealed by sealpost (protected Subject),
//! gpg-made PGP/MIME and inline PGP, searched through the `sealpost` binary, against a
//! second mailbox holding each message's view (what the client reads through sealpost)
//! in the same order, searched at Dovecot directly.

mod common;

use common::dovecot::Dovecot;
use common::imapclients::{parse_fetches, RawImap};
use common::pgp::sq_encrypt;
use common::proxy::{Proxy, ProxyOptions};
use common::{gpg_encrypt, TestCa};

const USER: &str = "alice@example.com";
const PASS: &str = "alicepw";

fn message(subject: &str, date: &str, id: u32, content: &str) -> String {
    format!(
        "From: Alice Martin <alice@example.com>\r\nTo: Bob Lee <bob@example.org>\r\nSubject: {subject}\r\nDate: {date}\r\nMessage-ID: <m{id}@example.com>\r\nMIME-Version: 1.0\r\n{content}"
    )
}

fn text(body: &str) -> String {
    format!("Content-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n")
}

fn crlf(data: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(data)
        .replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}

/// PGP/MIME made by gpg, outer header as given (no header protection).
fn gpg_pgp_mime(outer: &str, inner: &str) -> Vec<u8> {
    pgp_mime(
        outer,
        &gpg_encrypt(None, &["alice"], inner.as_bytes(), true),
    )
}

fn pgp_mime(outer: &str, armored: &[u8]) -> Vec<u8> {
    let mut m = format!(
        "{outer}MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"enc-b\"\r\n\r\nThis is an OpenPGP/MIME encrypted message\r\n--enc-b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--enc-b\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n"
    )
    .into_bytes();
    m.extend_from_slice(&crlf(armored));
    m.extend_from_slice(b"\r\n--enc-b--\r\n");
    m
}

/// A single-part message whose body is an inline-PGP message made by gpg.
fn gpg_inline(header: &str, body: &str) -> Vec<u8> {
    let armored = gpg_encrypt(None, &["alice"], body.as_bytes(), true);
    let mut m =
        format!("{header}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
            .into_bytes();
    m.extend_from_slice(&crlf(&armored));
    m
}

enum Stored {
    Plain(Vec<u8>),
    /// APPENDed through sealpost, which seals it (header protection).
    Sealed(Vec<u8>),
    /// Already encrypted: stored as is.
    Encrypted(Vec<u8>),
}

fn corpus() -> Vec<Stored> {
    let d = |n: u32| format!("Mon, {n:02} Nov 2026 10:00:00 +0000");
    vec![
        Stored::Plain(message("Invoice 2026-113 for the Lisbon office", &d(2), 1, &text("Please find the invoice attached. Total: 1,200 EUR.")).into_bytes()),
        Stored::Sealed(message("Offer for the Porto warehouse", &d(3), 2, &text("We can offer 1.2 million for the warehouse, payable in March.")).into_bytes()),
        Stored::Encrypted(gpg_pgp_mime(
            "From: Carol <carol@example.org>\r\nTo: Alice Martin <alice@example.com>\r\nSubject: Minutes of the board\r\nDate: Wed, 04 Nov 2026 09:00:00 +0000\r\nMessage-ID: <m3@example.org>\r\n",
            "Content-Type: text/plain; charset=UTF-8\r\n\r\nThe board approved the invoice for Porto.\r\n",
        )),
        Stored::Encrypted(gpg_inline(
            "From: Dave <dave@example.net>\r\nTo: alice@example.com\r\nSubject: Quick note\r\nDate: Thu, 05 Nov 2026 12:00:00 +0000\r\nMessage-ID: <m4@example.net>\r\n",
            "Lunch at the harbour on Friday?\r\n",
        )),
        Stored::Plain(message("Re: Offer for the Porto warehouse", &d(6), 5, &text("Thanks, the offer looks fine to me.")).into_bytes()),
        Stored::Sealed(message("Grüße aus München", &d(7), 6, &text("Das Angebot für München gilt bis Freitag.")).into_bytes()),
        Stored::Plain(message("=?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_Berlin?=", &d(8), 7, &text("Kein Angebot aus Berlin.")).into_bytes()),
        Stored::Sealed(message(
            "Contract draft",
            &d(9),
            8,
            "Content-Type: multipart/mixed; boundary=\"mix\"\r\n\r\n--mix\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nSee the attachment for the harbour contract.\r\n--mix\r\nContent-Type: text/plain; name=\"terms.txt\"\r\nContent-Disposition: attachment; filename=\"terms.txt\"\r\nContent-Transfer-Encoding: base64\r\n\r\nY29udHJhY3QgdGVybXM6IHBlbmFsdHkgY2xhdXNlIGZvciBsYXRlIGRlbGl2ZXJ5Lg==\r\n--mix--\r\n",
        ).into_bytes()),
        Stored::Sealed(message("Travel plans", &d(10), 9, &text(&"A long itinerary line about Porto and Lisbon.\r\n".repeat(60))).into_bytes()),
        Stored::Plain(message("Weekly report", &d(11), 10, &text(&"Status of the Lisbon office is fine.\r\n".repeat(60))).into_bytes()),
        // Made by sq, with the older header protection (protected-headers="v1") and an
        // obscured outer Subject.
        Stored::Encrypted(pgp_mime(
            "From: Erin <erin@example.org>\r\nTo: Alice Martin <alice@example.com>\r\nSubject: ...\r\nDate: Fri, 13 Nov 2026 07:00:00 +0000\r\nMessage-ID: <m13@example.org>\r\n",
            &sq_encrypt(
                "alice",
                b"Content-Type: text/plain; charset=utf-8; protected-headers=\"v1\"\r\nSubject: Budget for the lighthouse\r\nFrom: Erin <erin@example.org>\r\nTo: Alice Martin <alice@example.com>\r\n\r\nThe lighthouse repairs cost 40,000 and the offer stands.\r\n",
            ),
        )),
    ]
}

/// Search keys compared, in the form sent (`{N}` marks a UTF-8 literal follows).
const KEYS: &[&str] = &[
    "BODY invoice",
    "BODY INVOICE",
    "BODY warehouse",
    "BODY \"payable in March\"",
    "SUBJECT offer",
    "SUBJECT porto",
    "SUBJECT minutes",
    "SUBJECT lighthouse",
    "BODY lighthouse",
    "FROM erin",
    "TEXT march",
    "TEXT board",
    "TEXT harbour",
    "BODY harbour",
    "BODY penalty",
    "FROM alice",
    "FROM carol",
    "TO bob",
    "HEADER Message-ID \"<m6@\"",
    "HEADER X-Nothing \"\"",
    "NOT BODY offer",
    "NOT SUBJECT offer",
    "OR SUBJECT minutes BODY harbour",
    "FLAGGED BODY offer",
    "UNFLAGGED SUBJECT offer",
    "LARGER 1500",
    "SMALLER 800",
    "SENTSINCE 7-Nov-2026",
    "SENTBEFORE 5-Nov-2026",
    "SENTON 9-Nov-2026",
    "UID 3:* BODY offer",
    "2:6 TEXT the",
    "(SUBJECT offer) (NOT FROM carol)",
    "DELETED",
    "ALL",
];

/// SORT criteria compared (RFC 5256), each with each of [`SORT_SEARCHES`].
const SORTS: &[&str] = &[
    "(SUBJECT)",
    "(REVERSE SUBJECT)",
    "(DATE)",
    "(REVERSE DATE)",
    "(FROM)",
    "(TO)",
    "(CC)",
    "(SIZE)",
    "(REVERSE SIZE)",
    "(ARRIVAL)",
    "(SUBJECT REVERSE DATE)",
];
const SORT_SEARCHES: &[&str] = &["ALL", "BODY offer", "NOT SUBJECT offer"];

/// UTF-8 needles, sent as literals.
const UTF8_KEYS: &[(&str, &str)] = &[
    ("BODY", "München"),
    ("SUBJECT", "grüße"),
    ("SUBJECT", "Grüße aus"),
    ("TEXT", "für"),
];

struct Env {
    ca: &'static TestCa,
    dovecot: Dovecot,
    proxy: Proxy,
}

impl Env {
    fn new() -> Env {
        Env::with_extra("")
    }

    /// With `extra` TOML in the config.
    fn with_extra(extra: &str) -> Env {
        let ca = TestCa::shared();
        let dovecot = Dovecot::start(ca, &[(USER, PASS)]);
        let mut opts = ProxyOptions::new(1);
        opts.imap_upstream = Some((dovecot.imaps_port, "tls"));
        opts.alice_login = USER.into();
        opts.search_index_fill = true;
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

    fn direct(&self) -> RawImap {
        self.dovecot.session(USER, PASS)
    }

    /// Stores `corpus` in Work (as given) and each message's view in Reference.
    fn store(&self, corpus: &[Stored]) {
        let mut through = self.client();
        let mut direct = self.direct();
        for m in corpus {
            let reply = match m {
                Stored::Sealed(raw) => through.append("Work", &[], raw),
                Stored::Plain(raw) | Stored::Encrypted(raw) => direct.append("Work", &[], raw),
            };
            assert!(reply.is_ok(), "{}", reply.tagged_text());
        }
        through.command_ok("EXAMINE Work");
        let raw = through.command_ok("UID FETCH 1:* (UID BODY.PEEK[])");
        // (sealpost answers for plain messages first, then for those it shows a view of.)
        let mut views: Vec<(u32, Vec<u8>)> = parse_fetches(&raw)
            .into_iter()
            .map(|f| (f.uid().unwrap(), f.get("BODY[]").unwrap().to_vec()))
            .collect();
        views.sort_by_key(|(uid, _)| *uid);
        let done: Vec<u32> = {
            direct.command_ok("EXAMINE Reference");
            let raw = direct.command_ok("UID SEARCH ALL");
            uids(&raw)
        };
        for (uid, view) in views {
            if done.contains(&uid) {
                continue;
            }
            assert!(
                !String::from_utf8_lossy(&view).contains("BEGIN PGP MESSAGE"),
                "uid {uid} not decrypted"
            );
            assert!(direct.append("Reference", &[], &view).is_ok());
        }
    }
}

fn uids(raw: &[u8]) -> Vec<u32> {
    let text = String::from_utf8_lossy(raw);
    let mut out: Vec<u32> = text
        .lines()
        .filter_map(|l| l.strip_prefix("* SEARCH"))
        .flat_map(|l| l.split_whitespace().map(|n| n.parse::<u32>().unwrap()))
        .collect();
    out.sort_unstable();
    out
}

/// The ESEARCH response of a reply, its tag correlator removed.
fn esearch(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let line = text
        .lines()
        .find(|l| l.starts_with("* ESEARCH"))
        .unwrap_or_else(|| panic!("no ESEARCH in {text}"));
    let rest = line.split_once(')').map(|(_, r)| r).unwrap_or(line);
    rest.trim().to_string()
}

/// The numbers of a SORT response, in their order.
fn sorted(raw: &[u8]) -> Vec<u32> {
    let text = String::from_utf8_lossy(raw);
    text.lines()
        .filter_map(|l| l.strip_prefix("* SORT"))
        .flat_map(|l| l.split_whitespace().map(|n| n.parse::<u32>().unwrap()))
        .collect()
}

fn search_both(
    env: &Env,
    through: &mut RawImap,
    direct: &mut RawImap,
    command: &str,
) -> (Vec<u8>, Vec<u8>) {
    let a = through.command(command);
    assert!(
        a.is_ok(),
        "through sealpost: {command}: {}",
        a.tagged_text()
    );
    let b = direct.command(command);
    assert!(b.is_ok(), "at Dovecot: {command}: {}", b.tagged_text());
    let _ = env;
    (a.untagged, b.untagged)
}

fn search_literal(c: &mut RawImap, prefix: &str, needle: &str) -> Vec<u32> {
    let r = c.command_with_literal(prefix, needle.as_bytes(), "");
    assert!(r.is_ok(), "{prefix} {needle}: {}", r.tagged_text());
    uids(&r.untagged)
}

fn compare_all(env: &Env) {
    let mut through = env.client();
    through.command_ok("SELECT Work");
    let mut direct = env.direct();
    direct.command_ok("SELECT Reference");
    let mut mismatches = Vec::new();
    for key in KEYS {
        for form in ["UID SEARCH", "SEARCH"] {
            let command = format!("{form} {key}");
            let (a, b) = search_both(env, &mut through, &mut direct, &command);
            if uids(&a) != uids(&b) {
                mismatches.push(format!(
                    "{command}: sealpost {:?}, Dovecot {:?}",
                    uids(&a),
                    uids(&b)
                ));
            }
        }
        let command = format!("UID SEARCH RETURN (MIN MAX COUNT ALL) {key}");
        let (a, b) = search_both(env, &mut through, &mut direct, &command);
        let (a, b) = (esearch(&a), esearch(&b));
        if a != b {
            mismatches.push(format!("{command}: sealpost {a}, Dovecot {b}"));
        }
    }
    for (key, needle) in UTF8_KEYS {
        let prefix = format!("UID SEARCH CHARSET UTF-8 {key}");
        let a = search_literal(&mut through, &prefix, needle);
        let b = search_literal(&mut direct, &prefix, needle);
        if a != b {
            mismatches.push(format!("{prefix} {needle}: sealpost {a:?}, Dovecot {b:?}"));
        }
    }
    for order in SORTS {
        for criteria in SORT_SEARCHES {
            for form in ["UID SORT", "SORT"] {
                let command = format!("{form} {order} UTF-8 {criteria}");
                let (a, b) = search_both(env, &mut through, &mut direct, &command);
                if sorted(&a) != sorted(&b) {
                    mismatches.push(format!(
                        "{command}: sealpost {:?}, Dovecot {:?}",
                        sorted(&a),
                        sorted(&b)
                    ));
                }
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "answers differ:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn search_through_sealpost_equals_dovecot_over_the_decrypted_copies() {
    let env = Env::new();
    {
        let mut d = env.direct();
        d.command_ok("CREATE Work");
        d.command_ok("CREATE Reference");
    }
    env.store(&corpus());
    // The same flags on both sides.
    for mailbox in ["Work", "Reference"] {
        let mut d = env.direct();
        d.command_ok(&format!("SELECT {mailbox}"));
        d.command_ok("UID STORE 2,5,8 +FLAGS (\\Flagged)");
    }
    // Upstream alone cannot answer: the encrypted messages' words are not visible there.
    {
        let mut d = env.direct();
        d.command_ok("EXAMINE Work");
        assert_eq!(
            uids(&d.command_ok("UID SEARCH BODY warehouse")),
            Vec::<u32>::new()
        );
        assert_eq!(uids(&d.command_ok("UID SEARCH SUBJECT porto")), vec![5]);
        let stored_order = sorted(&d.command_ok("UID SORT (SUBJECT) UTF-8 ALL"));
        let mut c = env.client();
        c.command_ok("EXAMINE Work");
        let view_order = sorted(&c.command_ok("UID SORT (SUBJECT) UTF-8 ALL"));
        assert_ne!(
            stored_order, view_order,
            "the protected Subjects must count"
        );
    }
    compare_all(&env);

    // New arrivals and an expunge: the answer follows.
    for mailbox in ["Work", "Reference"] {
        let mut d = env.direct();
        d.command_ok(&format!("SELECT {mailbox}"));
        d.command_ok("UID STORE 1 +FLAGS.SILENT (\\Deleted)");
        d.command_ok("UID EXPUNGE 1");
    }
    env.store(&[
        Stored::Sealed(
            message(
                "Late offer",
                "Thu, 12 Nov 2026 08:00:00 +0000",
                11,
                &text("A second offer for the warehouse."),
            )
            .into_bytes(),
        ),
        Stored::Plain(
            message(
                "Invoice reminder",
                "Fri, 13 Nov 2026 08:00:00 +0000",
                12,
                &text("The invoice is due."),
            )
            .into_bytes(),
        ),
    ]);
    compare_all(&env);
}

/// Without a persistent index (`search_index = false`) and after a restart (nothing in
/// memory), every search decrypts what it needs again, and the answers are the same.
#[test]
fn without_an_index_searches_decrypt_and_answer_the_same() {
    let mut env = Env::with_extra("[imap]\nsearch_index = false\n");
    {
        let mut d = env.direct();
        d.command_ok("CREATE Work");
        d.command_ok("CREATE Reference");
    }
    env.store(&corpus());
    env.proxy.terminate(std::time::Duration::from_secs(10));
    env.proxy.restart();
    compare_all(&env);
    let log = env.proxy.log();
    assert!(
        log.lines()
            .any(|l| l.contains("to be decrypted for SEARCH") && !l.contains("to_decrypt=0")),
        "nothing was decrypted for SEARCH:\n{log}"
    );
    assert!(
        files_under(&env.proxy.dir.path().join("state").join("index")).is_empty(),
        "an index was written although search_index = false"
    );
}

#[test]
fn a_literal_needle_cannot_smuggle_a_command_upstream() {
    let env = Env::new();
    {
        let mut d = env.direct();
        d.command_ok("CREATE Work");
        d.command_ok("CREATE Reference");
    }
    env.store(&corpus()[..3]);
    let mut c = env.client();
    c.command_ok("SELECT Work");
    // The needle holds a line end and a command; it is a needle, nothing else.
    let r = c.command_with_literal(
        "UID SEARCH CHARSET UTF-8 BODY",
        b"x\r\nZ9 DELETE Work\r\n",
        "",
    );
    assert!(r.is_ok(), "{}", r.tagged_text());
    assert_eq!(uids(&r.untagged), Vec::<u32>::new());
    let r = c.command("UID SEARCH BODY \"\\\"quoted\\\" \\\\ back\"");
    assert!(r.is_ok(), "{}", r.tagged_text());
    let mut d = env.direct();
    let list = String::from_utf8_lossy(&d.command_ok("LIST \"\" *")).into_owned();
    assert!(list.contains("Work"), "{list}");
    // And the session goes on.
    assert_eq!(uids(&c.command_ok("UID SEARCH BODY warehouse")), vec![2]);
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() {
            out.extend(files_under(&path));
        } else if kind.is_file() {
            out.push(path);
        }
    }
    out
}

#[test]
fn the_index_survives_a_restart_and_holds_no_plaintext() {
    let mut env = Env::new();
    {
        let mut d = env.direct();
        d.command_ok("CREATE Work");
        d.command_ok("CREATE Reference");
    }
    env.store(&corpus());
    let search = |env: &Env| {
        let mut c = env.client();
        c.command_ok("EXAMINE Work");
        (
            uids(&c.command_ok("UID SEARCH BODY harbour")),
            uids(&c.command_ok("UID SEARCH SUBJECT minutes")),
        )
    };
    assert_eq!(search(&env), (vec![4, 8], vec![3]));
    // Words only the encrypted messages hold, in their bodies and protected Subjects.
    let secret_words = [
        "payable",
        "harbour",
        "penalty",
        "approved",
        "itinerary",
        "Minutes of the board",
        "Travel plans",
        "München",
    ];
    let state = env.proxy.dir.path().join("state");
    let index_files: Vec<_> = files_under(&state.join("index"));
    assert!(!index_files.is_empty(), "no index in {}", state.display());
    for file in files_under(&state) {
        let bytes = std::fs::read(&file).unwrap();
        let lower = String::from_utf8_lossy(&bytes).to_lowercase();
        for word in secret_words {
            assert!(
                !lower.contains(&word.to_lowercase()),
                "{word:?} readable in {}",
                file.display()
            );
        }
    }
    // After a restart the answers come from the index: nothing is decrypted again.
    env.proxy.terminate(std::time::Duration::from_secs(10));
    env.proxy.restart();
    let decrypting = |log: &str| {
        log.lines()
            .filter(|l| l.contains("to be decrypted for SEARCH") && !l.contains("to_decrypt=0"))
            .count()
    };
    let before = decrypting(&env.proxy.log());
    assert_eq!(search(&env), (vec![4, 8], vec![3]));
    let log = env.proxy.log();
    assert_eq!(
        decrypting(&log),
        before,
        "SEARCH decrypted again after the restart:\n{log}"
    );
    assert!(log.contains("read from the search index"), "{log}");
    // `sealpost status` counts them: the 7 encrypted messages of the corpus were read from
    // the index by the first search, the second found them in memory.
    let out = common::proxy::sealpost_cmd(&env.proxy.config, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "searches 2 (7 encrypted messages read from the search index, 0 decrypted for them)"
        ),
        "{text}"
    );
}

/// `indexed in the background N` of `sealpost status`.
fn indexed_in_background(env: &Env) -> u64 {
    let out = common::proxy::sealpost_cmd(&env.proxy.config, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("(nothing sent or read yet)") {
        return 0;
    }
    text.split("indexed in the background ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no background count in:\n{text}"))
}

fn wait_for_indexed(env: &Env, want: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let n = indexed_in_background(env);
        if n == want {
            return;
        }
        assert!(n < want, "indexed {n} in the background, expected {want}");
        assert!(
            std::time::Instant::now() < deadline,
            "indexed {n} of {want} in the background after 60 s:\n{}",
            env.proxy.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn selecting_a_mailbox_fills_the_index_in_the_background() {
    let mut env = Env::new();
    // Stored at the provider directly: nothing reaches sealpost before the EXAMINE.
    let encrypted: Vec<Vec<u8>> = corpus()
        .into_iter()
        .filter_map(|m| match m {
            Stored::Encrypted(raw) => Some(raw),
            _ => None,
        })
        .collect();
    assert_eq!(encrypted.len(), 3);
    let plain = message(
        "Lunch",
        "Mon, 02 Nov 2026 10:00:00 +0000",
        1,
        &text("At noon."),
    );
    {
        let mut d = env.direct();
        d.command_ok("CREATE Work");
        assert!(d.append("Work", &[], plain.as_bytes()).is_ok());
        for raw in &encrypted[..2] {
            assert!(d.append("Work", &[], raw).is_ok());
        }
    }
    // Selecting the mailbox is enough: the two encrypted messages are indexed while
    // the client does nothing.
    let mut c = env.client();
    c.command_ok("EXAMINE Work");
    wait_for_indexed(&env, 2);
    // A search then decrypts nothing.
    assert_eq!(uids(&c.command_ok("UID SEARCH BODY harbour")), vec![3]);
    assert_eq!(uids(&c.command_ok("UID SEARCH SUBJECT minutes")), vec![2]);
    let log = env.proxy.log();
    assert!(
        !log.lines()
            .any(|l| l.contains("to be decrypted for SEARCH") && !l.contains("to_decrypt=0")),
        "SEARCH decrypted what the background had indexed:\n{log}"
    );
    c.logout();
    // Resumable: after a restart, only what the index lacks is fetched and indexed, and
    // a client logging in with AUTHENTICATE PLAIN (SASL-IR, as Thunderbird does) starts
    // it the same way.
    env.proxy.terminate(std::time::Duration::from_secs(10));
    {
        let mut d = env.direct();
        assert!(d.append("Work", &[], &encrypted[2]).is_ok());
    }
    env.proxy.restart();
    let mut c = common::imapclients::RawImap::connect(
        env.proxy.imap_port,
        "starttls",
        Some(&env.ca.ca_pem),
    );
    use base64::Engine as _;
    let plain_sasl = base64::engine::general_purpose::STANDARD.encode(format!("\0{USER}\0{PASS}"));
    c.command_ok(&format!("AUTHENTICATE PLAIN {plain_sasl}"));
    c.command_ok("SELECT Work");
    wait_for_indexed(&env, 1);
    assert_eq!(uids(&c.command_ok("UID SEARCH FROM erin")), vec![4]);
    let log = env.proxy.log();
    assert!(
        log.contains("search index filled in the background"),
        "{log}"
    );
    for secret in [PASS, plain_sasl.as_str()] {
        assert!(
            !log.contains(secret),
            "a credential reached the log:\n{log}"
        );
    }
}
