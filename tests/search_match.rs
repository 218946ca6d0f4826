//! The SEARCH content matcher (`sealpost::search`) against the real Dovecot: a corpus of
//! plain messages is appended to a Dovecot started by the test, and for each search key of
//! a table Dovecot's `UID SEARCH` answer is compared with the messages whose
//! `Doc::from_message(bytes)` the key's `Leaf` (parsed from the same command by imap-codec)
//! matches.
//!
//! Each row also names the messages Dovecot is expected to find, so a row that both sides
//! get wrong alike (say, both find nothing) fails too. The rows where sealpost differs on
//! purpose say what sealpost finds instead; the reasons are in `Leaf::matches`.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use common::{Dovecot, RawImap, TestCa};
use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::CommandBody;
use imap_codec::CommandCodec;
use sealpost::search::{Doc, Leaf};

const USER: &str = "alice@example.com";
const PASS: &str = "alicepw";

/// `text` with LF line ends turned into CRLF (Dovecot hands messages out with CRLF).
fn crlf(text: &str) -> Vec<u8> {
    text.replace('\n', "\r\n").into_bytes()
}

fn b64(data: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    lines.join("\n")
}

/// The corpus: (name, message).
fn corpus() -> Vec<(&'static str, Vec<u8>)> {
    let mut latin1 = crlf(
        "From: Claire <claire@example.fr>\n\
         To: Bob <bob@example.net>\n\
         Subject: =?ISO-8859-1?Q?Fran=E7ois_et_la_facture?=\n\
         Date: Fri, 04 Dec 2026 09:00:00 +0100\n\
         MIME-Version: 1.0\n\
         Content-Type: text/plain; charset=ISO-8859-1\n\
         Content-Transfer-Encoding: 8bit\n\
         \n",
    );
    latin1.extend_from_slice(b"\xc7a co\xfbte cher, gar\xe7on. \xc0 bient\xf4t.\r\n");

    let binary: Vec<u8> = (0u8..=255)
        .chain(b"binaryneedle".iter().copied())
        .chain((0u8..=255).rev())
        .collect();
    let mixed = crlf(&format!(
        "From: Alice Example <alice@example.org>\n\
         To: Bob <bob@example.net>\n\
         Subject: Plans with attachments\n\
         Date: Tue, 01 Dec 2026 08:00:00 +0000\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=\"mix-b\"\n\
         \n\
         This preamble mentions preamblefox.\n\
         --mix-b\n\
         Content-Type: text/plain; charset=utf-8\n\
         \n\
         See the two files.\n\
         --mix-b\n\
         Content-Type: text/plain; charset=utf-8; name=\"plan.txt\"\n\
         Content-Disposition: attachment; filename=\"plan.txt\"\n\
         Content-Transfer-Encoding: base64\n\
         \n\
         {}\n\
         --mix-b\n\
         Content-Type: application/octet-stream; name=\"blob.bin\"\n\
         Content-Disposition: attachment; filename=\"blob.bin\"\n\
         Content-Transfer-Encoding: base64\n\
         \n\
         {}\n\
         --mix-b--\n\
         Epilogue with epiloguefox.\n",
        b64("The launch codes are in the blue folder.\n".as_bytes()),
        b64(&binary),
    ));

    let base64_text = crlf(&format!(
        "From: Hélène <helene@example.fr>\n\
         To: Bob <bob@example.net>\n\
         Subject: Compte rendu\n\
         Date: Wed, 02 Dec 2026 14:00:00 +0100\n\
         MIME-Version: 1.0\n\
         Content-Type: text/plain; charset=utf-8\n\
         Content-Transfer-Encoding: base64\n\
         \n\
         {}\n",
        b64("Réunion annuelle : le budget est approuvé.\n".as_bytes()),
    ));

    let dsn = crlf(
        "From: Mail Delivery System <mailer-daemon@example.net>\n\
         To: Alice Example <alice@example.org>\n\
         Subject: Undelivered Mail Returned to Sender\n\
         Date: 3 Dec 96 12:00:00 GMT\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"dsn-b\"\n\
         \n\
         --dsn-b\n\
         Content-Type: text/plain\n\
         \n\
         Your message could not be delivered.\n\
         --dsn-b\n\
         Content-Type: message/delivery-status\n\
         \n\
         Reporting-MTA: dns; mx.example.net\n\
         \n\
         Final-Recipient: rfc822; nobody@example.net\n\
         Status: 5.1.1\n\
         --dsn-b\n\
         Content-Type: text/plain\n\
         Content-Transfer-Encoding: x-uuencode\n\
         \n\
         uuneedle\n\
         --dsn-b--\n",
    );

    let nested_base64 = crlf(&format!(
        "From: Alice Example <alice@example.org>\n\
         To: Bob <bob@example.net>\n\
         Subject: =?utf-8?q?Re:_caf=C3=A9?= and\ttabs\n\
         Date: Wed, 02 Dec 2026 23:30:00\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=\"nb-b\"\n\
         \n\
         --nb-b\n\
         Content-Type: message/rfc822\n\
         Content-Transfer-Encoding: base64\n\
         \n\
         {}\n\
         --nb-b--\n",
        b64(b"Subject: encoded inner okapi\r\n\r\nThe encoded inner body has a narwhal.\r\n"),
    ));

    vec![
        (
            "plain",
            crlf(
                "From: Alice Example <alice@example.org>\n\
                 To: Bob <bob@example.net>\n\
                 Subject: Quarterly report\n\
                 Date: Mon, 07 Dec 2026 10:15:00 +0100\n\
                 Message-ID: <plain@example.org>\n\
                 \n\
                 Hello Bob,\n\
                 the quarterly numbers look fine.\n",
            ),
        ),
        (
            "utf8",
            crlf(
                "From: Jörg Müller <joerg@example.de>\n\
                 To: Bob <bob@example.net>\n\
                 Subject: Grüße aus München\n\
                 Date: Sun, 06 Dec 2026 23:30:00 -0800\n\
                 MIME-Version: 1.0\n\
                 Content-Type: text/plain; charset=utf-8\n\
                 Content-Transfer-Encoding: 8bit\n\
                 \n\
                 Liebe Grüße aus der Straße, schöne Feiertage!\n",
            ),
        ),
        (
            "qp",
            crlf(
                "From: Claire <claire@example.fr>\n\
                 To: Bob <bob@example.net>\n\
                 Subject: Menu\n\
                 Date: Mon, 07 Dec 2026 00:10:00 +0200\n\
                 MIME-Version: 1.0\n\
                 Content-Type: text/plain; charset=utf-8\n\
                 Content-Transfer-Encoding: quoted-printable\n\
                 \n\
                 Le caf=C3=A9 est tr=C3=A8s bon =C3=A0 No=C3=ABl, mais la cr=C3=A8me br=\n\
                 =C3=BBl=C3=A9e est meilleure.\n",
            ),
        ),
        ("base64", base64_text),
        ("dsn", dsn),
        ("nested_base64", nested_base64),
        ("latin1", latin1),
        (
            "words",
            crlf(
                "From: =?utf-8?q?J=C3=B6rg_Schmidt?= <js@example.de>\n\
                 To: =?ISO-8859-1?B?SOls6G5l?= <helene@example.fr>\n\
                 Subject: =?UTF-8?B?w5xiZXJyYXNjaHVuZyBmw7xy?= =?UTF-8?Q?_=C3=89lodie?=\n\
                 Date: Thu, 03 Dec 2026 12:00:00 +0000\n\
                 \n\
                 Nothing to see here.\n",
            ),
        ),
        (
            "alternative",
            crlf(
                "From: Shop <shop@example.com>\n\
                 To: Bob <bob@example.net>\n\
                 Subject: Weekly offer\n\
                 Date: Sat, 05 Dec 2026 07:00:00 +0000\n\
                 MIME-Version: 1.0\n\
                 Content-Type: multipart/alternative; boundary=\"alt-b\"\n\
                 \n\
                 --alt-b\n\
                 Content-Type: text/plain; charset=us-ascii\n\
                 \n\
                 Angebot and more\n\
                 --alt-b\n\
                 Content-Type: text/html; charset=us-ascii\n\
                 \n\
                 <html><body><p><b>Angebot</b> &amp; more</p></body></html>\n\
                 --alt-b--\n",
            ),
        ),
        ("mixed", mixed),
        (
            "nested",
            crlf(
                "From: Alice Example <alice@example.org>\n\
                 To: Bob <bob@example.net>\n\
                 Subject: Fwd: old mail\n\
                 Date: Mon, 30 Nov 2026 18:00:00 +0000\n\
                 MIME-Version: 1.0\n\
                 Content-Type: multipart/mixed; boundary=\"out-b\"\n\
                 \n\
                 --out-b\n\
                 Content-Type: text/plain\n\
                 \n\
                 Forwarding this.\n\
                 --out-b\n\
                 Content-Type: message/rfc822\n\
                 \n\
                 From: Carol <carol@example.com>\n\
                 Subject: Inner subject zebra\n\
                 Date: Sun, 01 Nov 2026 10:00:00 +0000\n\
                 \n\
                 The inner body mentions a giraffe.\n\
                 --out-b--\n",
            ),
        ),
        (
            "folded",
            crlf(
                "From: Alice Example <alice@example.org>\n\
                 To: Bob <bob@example.net>,\n  Carol <carol@example.com>\n\
                 Cc: team: a@example.org, b@example.org;\n\
                 Subject: A very long subject line that\n  continues on the next line\n\
                 X-Folded: one two\n\tthree four\n\
                 Date: Mon, 07 Dec 2026 09:00:00 +0000\n\
                 \n\
                 Short body.\n",
            ),
        ),
        (
            "nodate",
            crlf(
                "From: Alice Example <alice@example.org>\n\
                 To: Bob <bob@example.net>\n\
                 Subject: No date at all\n\
                 \n\
                 Undated body.\n",
            ),
        ),
        (
            "baddate",
            crlf(
                "From: alice@example.org (Alice Example)\n\
                 To: Bob <bob@example.net>\n\
                 Subject: Broken date\n\
                 Date: sometime next week\n\
                 \n\
                 Body of the broken date.\n",
            ),
        ),
        (
            "oddcase",
            crlf(
                "fRoM: Dave <dave@example.org>\n\
                 tO: Bob <bob@example.net>\n\
                 SUBJECT: Shouting field names\n\
                 x-CUSTOM-tag: Blue Moon\n\
                 DATE: Tue, 10 Nov 2026 10:00:00 +0000\n\
                 \n\
                 Odd case body.\n",
            ),
        ),
        (
            "bcc",
            crlf(
                "From: Alice Example <alice@example.org>\n\
                 To: Bob <bob@example.net>\n\
                 Cc: Frank <frank@example.org>, Grace <grace@example.org>\n\
                 Bcc: Eve <eve@example.org>\n\
                 Subject: Team   lunch\n\
                 Date: Mon, 07 Dec 2026 12:00:00 +0000\n\
                 Message-ID: <bcc@example.org>\n\
                 \n\
                 Lunch at noon.\n",
            ),
        ),
        (
            "accents",
            crlf(
                "From: \"Mueller, Hans\" <hans@example.org>\n\
                 To: Hans   Mueller <hans2@example.org>\n\
                 Subject: =?utf-8?q?L=C3=89L=C3=88VE_na=C3=AFve?=\n\
                 Date: Sun, 29 Nov 2026 10:00:00 +0000\n\
                 MIME-Version: 1.0\n\
                 Content-Type: text/plain; charset=utf-8\n\
                 Content-Transfer-Encoding: 8bit\n\
                 \n\
                 L'e\u{301}le\u{300}ve habite STRASSE 5. Ein ÉCLAIR, bitte.\n\
                 Die \u{FB01}nale Stra\u{DF}e, \u{1C6}ungla, \u{1FB3}, 5 \u{212A}.\n",
            ),
        ),
        (
            // 8-bit UTF-8 with no MIME label, as some clients write it.
            "unlabelled",
            crlf(
                "From: Kai <kai@example.org>\n\
                 To: Bob <bob@example.net>\n\
                 Subject: Anreise\n\
                 Date: Sat, 28 Nov 2026 10:00:00 +0000\n\
                 \n\
                 Wir kommen über Köln.\n",
            ),
        ),
        (
            // The same, labelled US-ASCII (sealpost's views of such mail are).
            "asciilabel",
            crlf(
                "From: Kai <kai@example.org>\n\
                 To: Bob <bob@example.net>\n\
                 Subject: Abreise\n\
                 Date: Sat, 28 Nov 2026 11:00:00 +0000\n\
                 MIME-Version: 1.0\n\
                 Content-Type: text/plain; charset=us-ascii\n\
                 \n\
                 Zurück über Köln.\n",
            ),
        ),
    ]
}

/// Expected answer of one row: the messages Dovecot finds, and, for an intentional
/// difference, the messages sealpost finds instead.
struct Row {
    key: String,
    dovecot: Vec<&'static str>,
    sealpost: Option<Vec<&'static str>>,
}

fn same(key: impl Into<String>, found: &[&'static str]) -> Row {
    Row {
        key: key.into(),
        dovecot: found.to_vec(),
        sealpost: None,
    }
}

fn differs(key: &str, dovecot: &[&'static str], sealpost: &[&'static str]) -> Row {
    Row {
        key: key.to_owned(),
        dovecot: dovecot.to_vec(),
        sealpost: Some(sealpost.to_vec()),
    }
}

/// Every message but `except`.
fn all_but(names: &[&'static str], except: &[&str]) -> Vec<&'static str> {
    names
        .iter()
        .copied()
        .filter(|n| !except.contains(n))
        .collect()
}

fn rows(sizes: &BTreeMap<&'static str, usize>) -> Vec<Row> {
    let names: Vec<&'static str> = corpus().into_iter().map(|(n, _)| n).collect();
    let dated = all_but(&names, &["nodate", "baddate"]);
    let plain_size = sizes["plain"];
    vec![
        // SUBJECT: case, encoded-words, folding, compressed whitespace.
        same("SUBJECT \"report\"", &["plain"]),
        same("SUBJECT \"QUARTERLY REPORT\"", &["plain"]),
        same("SUBJECT \"grüße\"", &["utf8"]),
        same("SUBJECT \"GRÜSSE\"", &[]),
        same("SUBJECT \"überraschung für élodie\"", &["words"]),
        same("SUBJECT \"françois\"", &["latin1"]),
        same("SUBJECT \"subject line that continues\"", &["folded"]),
        same("SUBJECT \"team lunch\"", &["bcc"]),
        same("SUBJECT \"shouting\"", &["oddcase"]),
        same("SUBJECT \"re: café and tabs\"", &["nested_base64"]),
        same("SUBJECT \"zebra\"", &[]),
        // Unlabelled and US-ASCII-labelled 8-bit text is read as UTF-8.
        same("BODY \"köln\"", &["unlabelled", "asciilabel"]),
        same("SUBJECT \"lélève naïve\"", &["accents"]),
        same("SUBJECT \"leleve\"", &[]),
        // FROM / TO / CC / BCC: the rewritten address list.
        same(
            "FROM \"alice\"",
            &[
                "plain",
                "mixed",
                "nested",
                "nested_base64",
                "folded",
                "nodate",
                "baddate",
                "bcc",
            ],
        ),
        same("FROM \"JÖRG\"", &["utf8", "words"]),
        same("FROM \"jörg schmidt <js@\"", &["words"]),
        same("FROM \"dave@example.org\"", &["oddcase"]),
        same("FROM \"mueller, hans\"", &["accents"]),
        same("TO \"hélène\"", &["words"]),
        same("TO \"carol\"", &["folded"]),
        same("TO \"hans mueller\"", &["accents"]),
        same("TO \"mueller <hans2\"", &[]),
        same("CC \"frank@\"", &["bcc"]),
        same(
            "CC \"team: <a@example.org>, <b@example.org>;\"",
            &["folded"],
        ),
        // A comment is the name when there is no other; names with spaces are quoted.
        same(
            "FROM \"\\\"alice example\\\" <alice@\"",
            &[
                "plain",
                "mixed",
                "nested",
                "nested_base64",
                "folded",
                "nodate",
                "baddate",
                "bcc",
            ],
        ),
        same("FROM \"(alice\"", &[]),
        same("BCC \"eve\"", &["bcc"]),
        same("BCC \"\"", &["bcc"]),
        // HEADER: any field, empty value = the field exists.
        same("HEADER X-CUSTOM-TAG \"blue moon\"", &["oddcase"]),
        same("HEADER x-folded \"two three\"", &["folded"]),
        same("HEADER Message-ID \"\"", &["plain", "bcc"]),
        same("HEADER Date \"\"", &all_but(&names, &["nodate"])),
        same("HEADER Subject \"grüße\"", &["utf8"]),
        differs("HEADER To \"mueller <hans2\"", &["accents"], &[]),
        differs("HEADER Subject \"team lunch\"", &[], &["bcc"]),
        // BODY: decoded text parts, not headers, not binary attachments.
        same("BODY \"quarterly\"", &["plain"]),
        same("BODY \"quarterly report\"", &[]),
        same("BODY \"GRÜßE\"", &["utf8"]),
        same("BODY \"strasse\"", &["accents"]),
        same("BODY \"café\"", &["qp"]),
        same("BODY \"cafe\"", &["qp"]),
        same("BODY \"crème brûlée\"", &["qp"]),
        same("BODY \"réunion\"", &["base64"]),
        same("BODY \"garçon\"", &["latin1"]),
        same("BODY \"<b>angebot\"", &["alternative"]),
        same("BODY \"launch codes\"", &["mixed"]),
        same("BODY \"binaryneedle\"", &[]),
        same("BODY \"preamblefox\"", &[]),
        same("BODY \"epiloguefox\"", &[]),
        same("BODY \"giraffe\"", &["nested"]),
        same("BODY \"zebra\"", &[]),
        same("BODY \"élève\"", &["accents"]),
        same("BODY \"eclair\"", &[]),
        same("BODY \"l'élève\"", &["accents"]),
        // Folding corners: a ligature decomposes to lower case after titlecasing, ß and
        // ẞ stay apart, the digraph and the iota subscript take their titlecase forms,
        // the Kelvin sign is a K.
        same("BODY \"finale\"", &[]),
        same("BODY \"STRAẞE\"", &[]),
        same("BODY \"straße\"", &["utf8", "accents"]),
        same("BODY \"ǅungla\"", &["accents"]),
        same("BODY \"ᾼ\"", &["accents"]),
        same("BODY \"5 k\"", &["accents"]),
        same("BODY \"\"", &names),
        same("BODY \"5.1.1\"", &["dsn"]),
        same("BODY \"uuneedle\"", &[]),
        same("BODY \"narwhal\"", &[]),
        // TEXT: every header (nested and MIME part headers too) and the body.
        same("TEXT \"zebra\"", &["nested"]),
        same("TEXT \"giraffe\"", &["nested"]),
        same("TEXT \"subject: quarterly\"", &["plain"]),
        same("TEXT \"plan.txt\"", &["mixed"]),
        same("TEXT \"okapi\"", &[]),
        same("TEXT \"\"", &names),
        // Sizes compare strictly.
        same(format!("LARGER {plain_size}"), &larger(sizes, plain_size)),
        same(format!("SMALLER {plain_size}"), &smaller(sizes, plain_size)),
        same(
            format!("LARGER {}", plain_size - 1),
            &larger(sizes, plain_size - 1),
        ),
        same(
            format!("SMALLER {}", plain_size + 1),
            &smaller(sizes, plain_size + 1),
        ),
        // SENT*: the date as written; no or a broken Date is 1 January 1970.
        same("SENTON 7-Dec-2026", &["plain", "qp", "folded", "bcc"]),
        same("SENTON 6-Dec-2026", &["utf8"]),
        same("SENTSINCE 7-Dec-2026", &["plain", "qp", "folded", "bcc"]),
        same(
            "SENTBEFORE 7-Dec-2026",
            &all_but(&names, &["plain", "qp", "folded", "bcc"]),
        ),
        same(
            "SENTBEFORE 1-Dec-2026",
            &[
                "dsn",
                "nested",
                "nodate",
                "baddate",
                "oddcase",
                "accents",
                "unlabelled",
                "asciilabel",
            ],
        ),
        same("SENTON 1-Jan-1970", &["nodate", "baddate"]),
        same("SENTON 3-Dec-1996", &["dsn"]),
        same("SENTON 2-Dec-2026", &["base64", "nested_base64"]),
        same("SENTSINCE 2-Jan-1970", &dated),
    ]
}

fn larger(sizes: &BTreeMap<&'static str, usize>, n: usize) -> Vec<&'static str> {
    sizes
        .iter()
        .filter(|(_, &s)| s > n)
        .map(|(&k, _)| k)
        .collect()
}

fn smaller(sizes: &BTreeMap<&'static str, usize>, n: usize) -> Vec<&'static str> {
    sizes
        .iter()
        .filter(|(_, &s)| s < n)
        .map(|(&k, _)| k)
        .collect()
}

/// The key as sent: each quoted string with non-ASCII characters becomes a LITERAL+
/// literal (RFC 7888), the form a client uses for `CHARSET UTF-8` needles.
fn wire(key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = key;
    while let Some(open) = rest.find('"') {
        let close = open + 1 + rest[open + 1..].find('"').expect("closing quote");
        let inner = &rest[open + 1..close];
        out.extend_from_slice(&rest.as_bytes()[..open]);
        if inner.is_ascii() {
            out.extend_from_slice(&rest.as_bytes()[open..=close]);
        } else {
            out.extend_from_slice(format!("{{{}+}}\r\n", inner.len()).as_bytes());
            out.extend_from_slice(inner.as_bytes());
        }
        rest = &rest[close + 1..];
    }
    out.extend_from_slice(rest.as_bytes());
    out
}

/// The whole `UID SEARCH` command for `key`.
fn command(tag: &str, key: &str) -> Vec<u8> {
    let mut cmd = format!("{tag} UID SEARCH CHARSET UTF-8 ").into_bytes();
    cmd.extend_from_slice(&wire(key));
    cmd.extend_from_slice(b"\r\n");
    cmd
}

/// The leaf imap-codec's parse of the same command gives.
fn leaf(key: &str) -> Leaf {
    let cmd = command("L", key);
    let (rest, parsed) = CommandCodec::default()
        .decode(&cmd)
        .unwrap_or_else(|e| panic!("imap-codec cannot parse {key:?}: {e:?}"));
    assert!(rest.is_empty(), "left over after {key:?}: {rest:?}");
    let CommandBody::Search { criteria, .. } = parsed.body else {
        panic!("not a SEARCH: {key:?}");
    };
    let keys = criteria.into_inner();
    assert_eq!(keys.len(), 1, "one key expected in {key:?}");
    Leaf::from_key(&keys[0]).unwrap_or_else(|| panic!("no content leaf for {key:?}"))
}

/// Dovecot's answer to `UID SEARCH CHARSET UTF-8 key`.
fn dovecot_search(session: &mut RawImap, key: &str) -> BTreeSet<u32> {
    let tag = session.new_tag();
    session.send_raw(&command(&tag, key));
    let reply = session.read_until_tagged(&tag);
    assert!(
        reply.is_ok(),
        "Dovecot refused {key:?}: {}",
        reply.tagged_text()
    );
    reply
        .untagged_text()
        .lines()
        .filter_map(|l| l.strip_prefix("* SEARCH"))
        .flat_map(|l| l.split_whitespace().map(|n| n.parse::<u32>().unwrap()))
        .collect()
}

#[test]
fn content_keys_match_like_dovecot() {
    let dc = Dovecot::start(TestCa::shared(), &[(USER, PASS)]);
    let mut uid_of = BTreeMap::new();
    let mut docs = Vec::new();
    let mut sizes = BTreeMap::new();
    for (name, message) in corpus() {
        let uid = dc.append(USER, PASS, "INBOX", &message, &[]);
        let stored = dc.fetch_body(USER, PASS, "INBOX", uid);
        assert_eq!(stored, message, "Dovecot changed {name}");
        uid_of.insert(uid, name);
        sizes.insert(name, stored.len());
        docs.push((name, Doc::from_message(&stored)));
    }

    let mut session = dc.session(USER, PASS);
    session.command_ok("EXAMINE INBOX");
    let mut failures = Vec::new();
    for row in rows(&sizes) {
        let from_dovecot: BTreeSet<&str> = dovecot_search(&mut session, &row.key)
            .iter()
            .map(|uid| uid_of[uid])
            .collect();
        let leaf = leaf(&row.key);
        let from_sealpost: BTreeSet<&str> = docs
            .iter()
            .filter(|(_, doc)| leaf.matches(doc))
            .map(|(name, _)| *name)
            .collect();
        let want_dovecot: BTreeSet<&str> = row.dovecot.iter().copied().collect();
        let want_sealpost: BTreeSet<&str> = row
            .sealpost
            .as_ref()
            .map_or(want_dovecot.clone(), |s| s.iter().copied().collect());
        if from_dovecot != want_dovecot || from_sealpost != want_sealpost {
            failures.push(format!(
                "{}\n  dovecot  {from_dovecot:?} (row says {want_dovecot:?})\n  sealpost {from_sealpost:?} (row says {want_sealpost:?})",
                row.key
            ));
        }
    }
    session.logout();
    assert!(
        failures.is_empty(),
        "{} rows disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Flags, internal dates, sets, MODSEQ and the combinators are not content leaves: the
/// IMAP side asks upstream for them or combines leaves itself.
#[test]
fn non_content_keys_are_left_to_upstream() {
    for key in [
        "SEEN",
        "NOT BODY \"x\"",
        "OR BODY \"x\" BODY \"y\"",
        "UID 1:5",
        "SINCE 1-Jan-2020",
        "KEYWORD $Junk",
        "MODSEQ 5",
        "BEFORE 1-Jan-2020",
        "ALL",
        "(BODY \"x\" SEEN)",
    ] {
        let cmd = command("L", key);
        let (_, parsed) = CommandCodec::default().decode(&cmd).unwrap();
        let CommandBody::Search { criteria, .. } = parsed.body else {
            panic!("not a SEARCH: {key:?}");
        };
        let keys = criteria.into_inner();
        assert_eq!(Leaf::from_key(&keys[0]), None, "{key}");
    }
}
