//! Unit tests of the IMAP session: every phase transition and each defect found by
//! attacking it, fed as bytes (no sockets).

use super::*;

fn ctx() -> Arc<ImapContext> {
    let dir = tempfile::tempdir().unwrap();
    Arc::new(ImapContext {
        account: "test".into(),
        autocrypt: None,
        identities: Vec::new(),
        store: Arc::new(crate::keys::KeyStore::open(dir.path()).unwrap()),
        cache: Arc::new(super::super::cache::ViewCache::new(1 << 20)),
        decrypt_slots: Arc::new(tokio::sync::Semaphore::new(2)),
        max_message_size: 1 << 20,
        max_line_length: 8192,
        max_job_view_bytes: 1 << 20,
        encrypt_append: crate::config::EncryptAppend::All,
        search: Default::default(),
        ahead: Default::default(),
    })
}

pub(super) fn client_text(outs: &[Output]) -> String {
    outs.iter()
        .filter_map(|o| match o {
            Output::Client(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .collect()
}

pub(super) fn upstream_text(outs: &[Output]) -> String {
    outs.iter()
        .filter_map(|o| match o {
            Output::Upstream(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .collect()
}

#[test]
fn plaintext_login_refused_off_loopback_until_starttls() {
    let mut s = Session::new(ctx(), false, false);
    let out = s.on_upstream(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN STARTTLS IDLE] ready\r\n");
    let greeting = client_text(&out);
    assert!(greeting.contains("STARTTLS LOGINDISABLED]"), "{greeting}");
    assert!(!greeting.contains("AUTH=PLAIN"), "{greeting}");
    // A synchronizing literal is refused before the client sends it.
    let out = s.on_client(b"a1 LOGIN {5}\r\n");
    assert_eq!(
        client_text(&out),
        "a1 NO [PRIVACYREQUIRED] Use STARTTLS before logging in\r\n"
    );
    assert!(upstream_text(&out).is_empty());
    let out = s.on_client(b"a2 AUTHENTICATE PLAIN AGEAYg==\r\n");
    assert!(client_text(&out).starts_with("a2 NO [PRIVACYREQUIRED]"));
    // STARTTLS is answered locally; whatever was pipelined behind it is dropped.
    let out = s.on_client(b"a3 STARTTLS\r\na4 LOGIN x y\r\n");
    assert_eq!(out.last(), Some(&Output::StartTls));
    assert!(client_text(&out).contains("a3 OK"));
    s.tls_started();
    let out = s.on_client(b"");
    assert!(
        upstream_text(&out).is_empty(),
        "injected LOGIN must not be relayed"
    );
    // After TLS, LOGIN goes upstream.
    let out = s.on_client(b"a5 LOGIN alice pw\r\n");
    assert_eq!(upstream_text(&out), "a5 LOGIN alice pw\r\n");
}

#[test]
fn literals_stream_through_and_compress_is_refused() {
    let mut s = Session::new(ctx(), true, true);
    s.on_upstream(b"* PREAUTH ready\r\n");
    // A non-synchronizing literal goes up as a synchronizing one: its bytes only after
    // upstream's `+`, then streamed.
    let out = s.on_client(b"a1 APPEND INBOX {10+}\r\n01234");
    assert_eq!(upstream_text(&out), "a1 APPEND INBOX {10}\r\n");
    let out = s.on_upstream(b"+ OK\r\n");
    assert_eq!(client_text(&out), "", "the client did not ask for a +");
    assert_eq!(upstream_text(&out), "01234");
    let out = s.on_client(b"56789\r\na2 COMPRESS DEFLATE\r\n");
    assert_eq!(upstream_text(&out), "56789\r\n");
    assert!(client_text(&out).starts_with("a2 NO [CANNOT]"));
    // A literal in a server response is never read as a response line.
    let out = s.on_upstream(b"* 1 FETCH (BODY[] {14}\r\na1 OK fake\r\n\r\n)\r\na1 OK done\r\n");
    assert_eq!(
        client_text(&out),
        "* 1 FETCH (BODY[] {14}\r\na1 OK fake\r\n\r\n)\r\na1 OK done\r\n"
    );
}

#[test]
fn a_fetch_job_waits_for_relayed_commands_to_complete() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = ctx();
    Arc::get_mut(&mut c).unwrap().identities = vec![identity("alice@example.com", dir.path())];
    let mut s = Session::new(c, true, true);
    s.on_upstream(b"* OK ready\r\n");
    s.on_client(b"a1 LOGIN alice@example.com pw\r\n");
    s.on_upstream(b"a1 OK logged in\r\n");
    s.on_client(b"a2 SELECT INBOX\r\n");
    s.on_upstream(b"* OK [UIDVALIDITY 7] ok\r\na2 OK [READ-WRITE] selected\r\n");
    // A relayed FETCH, then one that needs a job, pipelined.
    let out =
        s.on_client(b"a3 UID FETCH 1:* (FLAGS)\r\na4 UID FETCH 2 (BODY.PEEK[])\r\na5 NOOP\r\n");
    assert_eq!(upstream_text(&out), "a3 UID FETCH 1:* (FLAGS)\r\n");
    // Only when a3 is complete does the job start, and a5 waits for the job.
    let out = s.on_upstream(b"* 1 FETCH (UID 1 FLAGS ())\r\na3 OK done\r\n");
    let up = upstream_text(&out);
    assert!(
        up.contains("UID FETCH 2:202 (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (CONTENT-TYPE SEALPOST-DECRYPTED)])"),
        "{up}"
    );
    assert!(!up.contains("NOOP"), "{up}");
    assert_eq!(
        client_text(&out),
        "* 1 FETCH (UID 1 FLAGS ())\r\na3 OK done\r\n"
    );
}

#[test]
fn synchronizing_literals_wait_for_upstream_and_survive_a_refusal() {
    let mut s = Session::new(ctx(), true, true);
    s.on_upstream(b"* OK ready\r\n");
    // LOGIN with a synchronizing literal: sealpost reads the whole command first (it
    // says `+` itself), then relays it in step with upstream's own `+`.
    let out = s.on_client(b"a1 LOGIN {5}\r\n");
    assert_eq!(upstream_text(&out), "");
    assert_eq!(client_text(&out), "+ Ready for literal data\r\n");
    let out = s.on_client(b"alice pw\r\na9 NOOP\r\n");
    assert_eq!(upstream_text(&out), "a1 LOGIN {5}\r\n");
    let out = s.on_upstream(b"+ OK\r\n");
    assert_eq!(client_text(&out), "", "upstream's + is for sealpost");
    assert_eq!(
        upstream_text(&out),
        "alice pw\r\na9 NOOP\r\n",
        "then what was pipelined behind it"
    );
    s.on_upstream(b"a1 OK logged in\r\na9 OK\r\n");
    // An APPEND refused before its literal: what follows is a command again.
    let out = s.on_client(b"a2 APPEND Sent {3000}\r\n");
    assert_eq!(upstream_text(&out), "a2 APPEND Sent {3000}\r\n");
    let out = s.on_client(b"a3 NOOP\r\n");
    assert!(
        upstream_text(&out).is_empty(),
        "held until upstream decides"
    );
    let out = s.on_upstream(b"a2 NO [TRYCREATE] no such mailbox\r\n");
    assert_eq!(client_text(&out), "a2 NO [TRYCREATE] no such mailbox\r\n");
    assert_eq!(upstream_text(&out), "a3 NOOP\r\n");
}

#[test]
fn sasl_logins() {
    let plain = b"\0alice@example.com\0pw";
    assert_eq!(
        sasl_login("PLAIN", plain).as_deref(),
        Some("alice@example.com")
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(plain);
    assert_eq!(
        sasl_response_login("PLAIN", format!("{b64}\r\n").as_bytes()).as_deref(),
        Some("alice@example.com")
    );
    // A master user acting for another mailbox: whose mail it is, sealpost cannot say.
    assert_eq!(sasl_login("PLAIN", b"victim\0admin\0pw"), None);
    assert_eq!(
        sasl_login("PLAIN", b"alice\0alice\0pw").as_deref(),
        Some("alice")
    );
    assert_eq!(
        sasl_login(
            "XOAUTH2",
            b"user=bob@example.org\x01auth=Bearer abc\x01\x01"
        )
        .as_deref(),
        Some("bob@example.org")
    );
    assert_eq!(
        sasl_login(
            "OAUTHBEARER",
            b"n,a=carol@example.org,\x01host=x\x01auth=Bearer t\x01\x01"
        )
        .as_deref(),
        Some("carol@example.org")
    );
}

#[test]
fn command_heads() {
    assert_eq!(
        command_head(b"a1 uid fetch 1 (FLAGS)\r\n"),
        Some(("a1".into(), "UID FETCH".into()))
    );
    assert_eq!(
        command_head(b"x LOGIN a b\r\n"),
        Some(("x".into(), "LOGIN".into()))
    );
    assert_eq!(command_head(b"a+b NOOP\r\n"), None);
    assert_eq!(command_head(b" NOOP\r\n"), None);
    assert_eq!(command_head(b"DONE\r\n"), None);
}

/// Two identities, as on a gateway: mallory and the victim.
pub(super) fn gateway() -> Arc<ImapContext> {
    gateway_with(crate::config::EncryptAppend::All)
}

fn gateway_with(encrypt_append: crate::config::EncryptAppend) -> Arc<ImapContext> {
    let dir = tempfile::tempdir().unwrap();
    let ids = ["mallory@corp.example", "victim@corp.example"]
        .map(|addr| identity(addr, dir.path()))
        .to_vec();
    let mut c = ctx();
    let m = Arc::get_mut(&mut c).unwrap();
    m.identities = ids;
    m.encrypt_append = encrypt_append;
    c
}

/// A new identity for `addr`, its key made and loaded as `sealpost run` loads it.
fn identity(addr: &str, dir: &std::path::Path) -> Arc<crate::keys::LoadedIdentity> {
    let g = crate::keys::generate(addr, dir).unwrap();
    Arc::new(crate::keys::load_identity(&g.identity(addr, None)).unwrap())
}

/// A gateway session (TLS) that has relayed upstream's greeting.
fn greeted() -> Session {
    let mut s = Session::new(gateway(), true, true);
    s.on_upstream(b"* OK ready\r\n");
    s
}

fn logged_in_as_mallory() -> Session {
    logged_in_as_mallory_in(gateway())
}

/// With `encrypt_append = "off"`: APPENDs stream through.
fn streaming_mallory() -> Session {
    logged_in_as_mallory_in(gateway_with(crate::config::EncryptAppend::Off))
}

/// A session in `ctx` that has just seen upstream accept mallory's LOGIN, and what
/// that acceptance made it do.
fn just_logged_in_as_mallory(ctx: Arc<ImapContext>) -> (Session, Vec<Output>) {
    let mut s = Session::new(ctx, true, true);
    s.on_upstream(b"* OK ready\r\n");
    s.on_client(b"m1 LOGIN mallory@corp.example pw\r\n");
    let out = s.on_upstream(b"m1 OK logged in\r\n");
    (s, out)
}

fn logged_in_as_mallory_in(ctx: Arc<ImapContext>) -> Session {
    let (mut s, out) = just_logged_in_as_mallory(ctx);
    if upstream_text(&out).starts_with("sp0l LIST (SPECIAL-USE)") {
        // `sent-drafts`: sealpost's own LIST, answered with nothing special.
        s.on_upstream(b"sp0l OK done\r\n");
    }
    assert_eq!(s.identity(), Some("mallory@corp.example"));
    s
}

/// Defect 1: `x NOOP` then `x LOGIN victim` in one packet; upstream's `x OK` for the
/// NOOP was taken as victim's LOGIN succeeding.
#[test]
fn a_reused_tag_cannot_switch_the_identity() {
    let mut s = logged_in_as_mallory();
    let out = s.on_client(b"x NOOP\r\nx LOGIN victim@corp.example junk\r\n");
    assert_eq!(
        upstream_text(&out),
        "x NOOP\r\n",
        "the LOGIN never goes upstream"
    );
    let reply = client_text(&out);
    assert!(reply.starts_with("x BAD"), "{reply}");
    s.on_upstream(b"x OK NOOP completed\r\n");
    assert_eq!(s.identity(), Some("mallory@corp.example"));
}

#[test]
fn login_and_authenticate_after_login_are_refused_here() {
    let mut s = logged_in_as_mallory();
    for cmd in [
        &b"y LOGIN victim@corp.example junk\r\n"[..],
        b"y AUTHENTICATE PLAIN AHZpY3RpbUBjb3JwLmV4YW1wbGUAanVuaw==\r\n",
        b"y LOGIN {19}\r\n",
    ] {
        let out = s.on_client(cmd);
        assert_eq!(upstream_text(&out), "", "{}", String::from_utf8_lossy(cmd));
        assert!(client_text(&out).starts_with("y BAD Already authenticated"));
        s.on_upstream(b"y OK whatever\r\n");
        assert_eq!(s.identity(), Some("mallory@corp.example"));
    }
}

/// The same trick during the login itself: the tag of the login in flight is taken.
#[test]
fn a_tag_in_flight_during_login_is_refused() {
    let mut s = greeted();
    let out = s.on_client(b"x NOOP\r\nx LOGIN victim@corp.example junk\r\n");
    assert_eq!(upstream_text(&out), "x NOOP\r\n");
    s.on_upstream(b"x OK NOOP completed\r\n");
    assert_eq!(s.identity(), None);
    // A LOGIN while another is in flight is refused too.
    let out =
        s.on_client(b"a LOGIN mallory@corp.example pw\r\nb LOGIN victim@corp.example junk\r\n");
    assert_eq!(upstream_text(&out), "a LOGIN mallory@corp.example pw\r\n");
    assert!(client_text(&out).contains("b BAD A login is already in progress"));
    s.on_upstream(b"a OK logged in\r\nb OK logged in\r\n");
    assert_eq!(s.identity(), Some("mallory@corp.example"));
}

#[test]
fn authenticate_sets_the_identity_from_its_own_reply() {
    let mut s = greeted();
    let out = s.on_client(b"a1 AUTHENTICATE PLAIN\r\n");
    assert_eq!(upstream_text(&out), "a1 AUTHENTICATE PLAIN\r\n");
    s.on_upstream(b"+ \r\n");
    let resp = base64::engine::general_purpose::STANDARD.encode(b"\0victim@corp.example\0pw");
    // The SASL response is a line, whatever it looks like.
    let out = s.on_client(format!("{resp}\r\n").as_bytes());
    assert_eq!(upstream_text(&out), format!("{resp}\r\n"));
    s.on_upstream(b"a1 NO [AUTHENTICATIONFAILED] wrong\r\n");
    assert_eq!(s.identity(), None);
    let resp = base64::engine::general_purpose::STANDARD.encode(b"\0mallory@corp.example\0pw");
    s.on_client(format!("a2 AUTHENTICATE PLAIN {resp}\r\n").as_bytes());
    s.on_upstream(b"a2 OK [CAPABILITY IMAP4rev1 SORT] ok\r\n");
    assert_eq!(s.identity(), Some("mallory@corp.example"));
}

/// An identity belongs to its account: a login of another account never decrypts.
#[test]
fn identities_of_other_accounts_are_never_candidates() {
    let mut c = gateway();
    Arc::get_mut(&mut c)
        .unwrap()
        .identities
        .retain(|i| i.address == "mallory@corp.example");
    let mut s = Session::new(c, true, true);
    s.on_upstream(b"* OK ready\r\n");
    s.on_client(b"a LOGIN victim@corp.example pw\r\n");
    s.on_upstream(b"a OK logged in\r\n");
    assert_eq!(s.identity(), None);
}

/// Defect 2: a non-synchronizing literal over the limit was dropped with its
/// announcing line, and its bytes ran as the user's commands.
#[test]
fn an_over_limit_literal_is_skipped_not_run() {
    let limit = 1 << 20; // ctx(): max_message_size
    let n = limit + 1024 * 1024 + 1;
    let body = "Z1 UID STORE 1:* +FLAGS.SILENT (\\Deleted)\r\n".repeat(n / 43 + 1);
    let body = &body.as_bytes()[..n];
    let mut input = format!("A1 APPEND Drafts {{{n}+}}\r\n").into_bytes();
    input.extend_from_slice(body);
    input.extend_from_slice(b"\r\nA2 NOOP\r\n");
    for chunk in [7, 4096, input.len()] {
        let mut s = logged_in_as_mallory();
        let mut up = String::new();
        let mut client = String::new();
        for piece in input.chunks(chunk) {
            let out = s.on_client(piece);
            up.push_str(&upstream_text(&out));
            client.push_str(&client_text(&out));
        }
        assert_eq!(up, "A2 NOOP\r\n", "chunk {chunk}");
        assert!(client.starts_with("A1 NO [TOOBIG]"), "{client}");
        assert!(!client.contains("Z1"));
    }
    // A synchronizing one gets NO at once; nothing is read as a literal.
    let mut s = logged_in_as_mallory();
    let out = s.on_client(format!("A3 APPEND Drafts {{{n}}}\r\nA4 NOOP\r\n").as_bytes());
    assert!(client_text(&out).starts_with("A3 NO [TOOBIG]"));
    assert_eq!(upstream_text(&out), "A4 NOOP\r\n");
}

/// Defect 4: an over-long line got only an untagged BAD and the client waited forever.
#[test]
fn an_over_long_line_gets_a_tagged_bad() {
    let mut s = logged_in_as_mallory();
    let mut line = b"t9 UID FETCH 1".to_vec();
    let mut i = 2;
    while line.len() < 9000 {
        line.extend_from_slice(format!(",{i}").as_bytes());
        i += 2;
    }
    line.extend_from_slice(b" (FLAGS)\r\nt10 NOOP\r\n");
    let out = s.on_client(&line);
    assert_eq!(client_text(&out), "t9 BAD Line longer than 8192 bytes\r\n");
    assert_eq!(upstream_text(&out), "t10 NOOP\r\n");
}

/// Defect 3: capability lists are filtered only where they are capability lists.
#[test]
fn relayed_data_is_not_rewritten() {
    let mut s = logged_in_as_mallory();
    s.on_client(b"a2 SELECT INBOX\r\n");
    s.on_upstream(b"* OK [UIDVALIDITY 7] ok\r\na2 OK [READ-WRITE] selected\r\n");
    s.on_client(b"a3 FETCH 1 (FLAGS)\r\n");
    let line = b"* 1 FETCH (FLAGS () X \"Re: [CAPABILITY SORT BINARY] who broke it\")\r\n";
    let out = s.on_upstream(line);
    assert_eq!(client_text(&out).as_bytes(), line);
    let out = s.on_upstream(
        b"* CAPABILITY IMAP4rev1 SORT BINARY IDLE\r\na3 OK [CAPABILITY IMAP4rev1 BINARY] done\r\n",
    );
    // (SORT is answered through the view, so it stays.)
    assert_eq!(
        client_text(&out),
        "* CAPABILITY IMAP4rev1 SORT IDLE\r\na3 OK [CAPABILITY IMAP4rev1] done\r\n"
    );
}

#[test]
fn a_failed_select_leaves_nothing_selected_and_examine_is_read_only() {
    let mut s = logged_in_as_mallory();
    s.on_client(b"a2 SELECT INBOX\r\n");
    s.on_upstream(b"* OK [UIDVALIDITY 7] ok\r\na2 OK [READ-WRITE] selected\r\n");
    assert!(matches!(
        s.phase,
        Phase::Selected {
            uidvalidity: Some(7),
            read_only: false,
            ..
        }
    ));
    s.on_client(b"a3 SELECT Nope\r\n");
    s.on_upstream(b"a3 NO no such mailbox\r\n");
    assert!(matches!(s.phase, Phase::Authenticated { .. }));
    s.on_client(b"a4 EXAMINE INBOX\r\n");
    s.on_upstream(b"* OK [UIDVALIDITY 9] ok\r\na4 OK [READ-ONLY] examined\r\n");
    assert!(matches!(
        s.phase,
        Phase::Selected {
            uidvalidity: Some(9),
            read_only: true,
            ..
        }
    ));
    s.on_client(b"a5 CLOSE\r\n");
    s.on_upstream(b"a5 OK closed\r\n");
    assert!(matches!(s.phase, Phase::Authenticated { .. }));
    s.on_client(b"a6 LOGOUT\r\n");
    s.on_upstream(b"* BYE bye\r\na6 OK done\r\n");
    assert!(s.logged_out());
}

#[test]
fn idle_done_is_relayed_and_preauth_authenticates() {
    let mut s = logged_in_as_mallory();
    let out = s.on_client(b"i1 IDLE\r\n");
    assert_eq!(upstream_text(&out), "i1 IDLE\r\n");
    let out = s.on_upstream(b"+ idling\r\n");
    assert_eq!(client_text(&out), "+ idling\r\n");
    let out = s.on_client(b"DONE\r\n");
    assert_eq!(upstream_text(&out), "DONE\r\n");
    let out = s.on_upstream(b"i1 OK Idle completed\r\n");
    assert_eq!(client_text(&out), "i1 OK Idle completed\r\n");
    let out = s.on_client(b"i2 NOOP\r\n");
    assert_eq!(upstream_text(&out), "i2 NOOP\r\n");

    let mut p = Session::new(gateway(), true, true);
    p.on_upstream(b"* PREAUTH [CAPABILITY IMAP4rev1 COMPRESS=DEFLATE] hi\r\n");
    assert!(matches!(p.phase, Phase::Authenticated { identity: None }));
    let out = p.on_client(b"a LOGIN victim@corp.example x\r\n");
    assert!(client_text(&out).starts_with("a BAD Already authenticated"));
}

/// Garbage from the client at every split never panics and never reaches upstream
/// as anything but whole messages; every tagged line gets a tagged reply.
#[test]
fn garbage_input_gets_replies_and_no_panic() {
    let inputs: [&[u8]; 5] = [
        b"\x00\xff\r\n{5}\r\n\r\n",
        b"a1 FETCH\r\n",
        b"a2 SELECT {3}\r\nabc\r\n",
        b"+ a\r\n* x\r\n",
        b"a3 UID FETCH 1:* (BODY[] \r\n",
    ];
    for input in inputs {
        for chunk in 1..=input.len() {
            let mut s = logged_in_as_mallory();
            for piece in input.chunks(chunk) {
                s.on_client(piece);
            }
        }
    }
    let mut s = logged_in_as_mallory();
    let out = s.on_client(b"a1 FETCH\r\n");
    assert!(client_text(&out).starts_with("a1 BAD"));
}

/// The session with alice's identity (mallory's gateway with alice as mallory).
pub(super) fn with_identity(ctx: &Arc<ImapContext>) -> Session {
    let mut s = Session::new(ctx.clone(), true, true);
    s.on_upstream(b"* OK ready\r\n");
    s.on_client(b"m1 LOGIN mallory@corp.example pw\r\n");
    s.on_upstream(b"m1 OK logged in\r\n");
    s.on_client(b"m2 SELECT INBOX\r\n");
    s.on_upstream(b"* OK [UIDVALIDITY 3] ok\r\nm2 OK [READ-WRITE] selected\r\n");
    s
}

/// Feeds `bytes` to upstream in `chunk`-sized pieces, collecting the outputs.
fn feed_upstream(s: &mut Session, bytes: &[u8], chunk: usize) -> Vec<Output> {
    let mut out = Vec::new();
    for piece in bytes.chunks(chunk) {
        out.extend(s.on_upstream(piece));
    }
    out
}

/// A whole FETCH job on canned upstream bytes, fed at many splits: classify, download,
/// decryption asked of the driver (not done in the session), then the answer from the
/// view, and the client's next command only after the job.
#[test]
fn a_fetch_job_step_by_step() {
    let ctx = gateway();
    let id = ctx.identities[0].clone();
    let stored = crate::pgp::encrypt_message(
        &crate::pgp::EncryptRequest {
            raw: b"From: bob@example.org\r\nSubject: hidden\r\n\r\nsecret body\r\n",
            recipients: std::slice::from_ref(&id.cert),
            signer: None,
            protect_headers: true,
            boundary: "b1",
            extra_outer: b"",
        },
        &[],
    )
    .unwrap();
    let structure = b"(\"application\" \"pgp-encrypted\" NIL NIL NIL \"7bit\" 10 NIL NIL NIL NIL)(\"application\" \"octet-stream\" NIL NIL NIL \"7bit\" 500 NIL NIL NIL NIL) \"encrypted\" (\"protocol\" \"application/pgp-encrypted\" \"boundary\" \"b1\") NIL NIL NIL";
    for chunk in [1, 3, 64, usize::MAX] {
        // A fresh cache each round, so every round classifies and decrypts.
        let mut c = ctx.clone();
        let fresh = ImapContext {
            account: c.account.clone(),
            autocrypt: None,
            identities: c.identities.clone(),
            store: c.store.clone(),
            cache: Arc::new(super::super::cache::ViewCache::new(1 << 20)),
            decrypt_slots: c.decrypt_slots.clone(),
            max_message_size: c.max_message_size,
            max_line_length: c.max_line_length,
            max_job_view_bytes: c.max_job_view_bytes,
            encrypt_append: c.encrypt_append,
            search: Default::default(),
            ahead: Default::default(),
        };
        c = Arc::new(fresh);
        let mut s = with_identity(&c);
        let out = s.on_client(b"a1 UID FETCH 5 (UID RFC822.SIZE BODY.PEEK[])\r\na2 NOOP\r\n");
        let up = upstream_text(&out);
        assert!(
            up.starts_with("sp1x1 UID FETCH 5:205 (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (CONTENT-TYPE SEALPOST-DECRYPTED)])"),
            "{up}"
        );
        // UID 5 is asked for; UID 6, encrypted too, comes next in the mailbox.
        let mut classify = Vec::new();
        for (seq, uid) in [(1, 5), (2, 6)] {
            classify.extend_from_slice(
                format!("* {seq} FETCH (UID {uid} RFC822.SIZE 900 BODYSTRUCTURE (").as_bytes(),
            );
            classify.extend_from_slice(structure);
            classify
                .extend_from_slice(b") BODY[HEADER.FIELDS (SEALPOST-DECRYPTED)] {2}\r\n\r\n)\r\n");
        }
        classify.extend_from_slice(b"sp1x1 OK done\r\n");
        let out = feed_upstream(&mut s, &classify, chunk.min(classify.len()));
        assert_eq!(
            upstream_text(&out),
            "sp1x2 UID FETCH 5:6 (UID BODY.PEEK[])\r\n",
            "the next encrypted message is downloaded in the same round trip"
        );
        assert_eq!(client_text(&out), "", "nothing of ours reaches the client");
        let mut download = Vec::new();
        for (seq, uid) in [(1, 5), (2, 6)] {
            download.extend_from_slice(
                format!("* {seq} FETCH (UID {uid} BODY[] {{{}}}\r\n", stored.len()).as_bytes(),
            );
            download.extend_from_slice(&stored);
            download.extend_from_slice(b")\r\n");
        }
        download.extend_from_slice(b"sp1x2 OK done\r\n");
        let out = feed_upstream(&mut s, &download, chunk.min(download.len()));
        let requests: Vec<DecryptRequest> = out
            .into_iter()
            .filter_map(|o| match o {
                Output::Decrypt(r) => Some(r),
                other => {
                    assert!(
                        !matches!(other, Output::Upstream(_)),
                        "the job waits for the views"
                    );
                    None
                }
            })
            .collect();
        assert_eq!(requests.iter().map(|r| r.uid).collect::<Vec<_>>(), [5, 6]);
        assert_eq!(requests[0].raw, stored);
        // The driver builds the views, in any order; a stray view is ignored.
        assert!(s
            .on_view(
                "sp1x",
                7,
                b"x",
                s.ctx.view(&requests[0].identity, b"x", 100)
            )
            .is_empty());
        let mut views = Vec::new();
        for r in requests.iter().rev() {
            let view = s.ctx.view(&r.identity, &r.raw, r.limit);
            assert!(
                matches!(view.kind, crate::pgp::ViewKind::Decrypted(_)),
                "{:?}",
                view.kind
            );
            views.push((r.uid, r.raw.clone(), view));
        }
        let (uid, raw, view) = views.remove(0);
        assert!(
            upstream_text(&s.on_view("sp1x", uid, &raw, view)).is_empty(),
            "one view still missing"
        );
        let (uid, raw, view) = views.remove(0);
        let out = s.on_view("sp1x", uid, &raw, view);
        assert_eq!(upstream_text(&out), "sp1x3 UID FETCH 5 (UID)\r\n");
        let out = feed_upstream(
            &mut s,
            b"* 1 FETCH (UID 5)\r\nsp1x3 OK done\r\n",
            chunk.min(10),
        );
        let text = client_text(&out);
        assert!(text.contains("secret body"), "{text}");
        assert!(text.contains("a1 OK"), "{text}");
        assert_eq!(
            upstream_text(&out),
            "a2 NOOP\r\n",
            "held until the job ended"
        );
        s.on_upstream(b"a2 OK done\r\n");
        // UID 6 was decrypted ahead: its FETCH needs one round trip in the client's
        // pipeline, no download, no job.
        let out = s.on_client(b"a3 UID FETCH 6 (UID BODY.PEEK[])\r\n");
        assert_eq!(upstream_text(&out), "a3 UID FETCH 6 (UID)\r\n");
        let out = s.on_upstream(b"* 2 FETCH (UID 6)\r\na3 OK done\r\n");
        let text = client_text(&out);
        assert!(
            text.contains("secret body") && text.contains("a3 OK"),
            "{text}"
        );
    }
}

/// The BODYSTRUCTURE upstream reports for a PGP/MIME message.
const PGP_MIME_STRUCTURE: &str = "(\"application\" \"pgp-encrypted\" NIL NIL NIL \"7bit\" 10 NIL NIL NIL NIL)(\"application\" \"octet-stream\" NIL NIL NIL \"7bit\" 500 NIL NIL NIL NIL) \"encrypted\" (\"protocol\" \"application/pgp-encrypted\" \"boundary\" \"b1\") NIL NIL NIL";

/// Upstream's answer to a FETCH job's classification (tag `sp1x1`) naming UID 5 (seq
/// 1) a PGP/MIME message.
fn five_classified_encrypted() -> Vec<u8> {
    format!("* 1 FETCH (UID 5 RFC822.SIZE 900 BODYSTRUCTURE ({PGP_MIME_STRUCTURE}) BODY[HEADER.FIELDS (SEALPOST-DECRYPTED)] {{2}}\r\n\r\n)\r\nsp1x1 OK done\r\n").into_bytes()
}

/// Upstream's answer to the job's download (tag `sp1x2`) of UID 5, stored as `stored`;
/// returns the decryption the job then asks for.
fn five_downloaded(s: &mut Session, stored: &[u8]) -> DecryptRequest {
    let mut download = format!("* 1 FETCH (UID 5 BODY[] {{{}}}\r\n", stored.len()).into_bytes();
    download.extend_from_slice(stored);
    download.extend_from_slice(b")\r\nsp1x2 OK done\r\n");
    s.on_upstream(&download)
        .into_iter()
        .find_map(|o| match o {
            Output::Decrypt(r) => Some(r),
            _ => None,
        })
        .expect("a decrypt request")
}

/// A FETCH that sets `\Seen` through a view, as Cyrus answers it: Cyrus reports the
/// flag change of sealpost's own `STORE +FLAGS.SILENT` anyway, and puts FLAGS before
/// the body. The client gets one FETCH response for the message, FLAGS before the
/// literal (curl reads nothing after a literal and fails on a second response).
#[test]
fn a_fetch_that_sets_seen_gives_one_response_with_flags_before_the_body() {
    let ctx = gateway();
    let stored = sealed_to_mallory(&ctx, "secret body");
    let mut s = with_identity(&ctx);
    let out = s.on_client(b"a1 UID FETCH 5 (UID BODY[])\r\n");
    assert!(
        upstream_text(&out).starts_with("sp1x1 UID FETCH 5:"),
        "{}",
        upstream_text(&out)
    );
    let out = s.on_upstream(&five_classified_encrypted());
    assert_eq!(
        upstream_text(&out),
        "sp1x2 UID FETCH 5 (UID BODY.PEEK[])\r\n"
    );
    let req = five_downloaded(&mut s, &stored);
    let view = s.ctx.view(&req.identity, &req.raw, req.limit);
    let out = s.on_view("sp1x", 5, &req.raw, view);
    assert_eq!(
        upstream_text(&out),
        "sp1x3 UID STORE 5 +FLAGS.SILENT (\\Seen)\r\n"
    );
    // Not silent after all.
    let out = s.on_upstream(b"* 1 FETCH (FLAGS (\\Recent \\Seen) UID 5)\r\nsp1x3 OK done\r\n");
    assert_eq!(client_text(&out), "", "our own STORE's echo is not relayed");
    assert_eq!(upstream_text(&out), "sp1x4 UID FETCH 5 (UID FLAGS)\r\n");
    let out = s.on_upstream(b"* 1 FETCH (FLAGS (\\Recent \\Seen) UID 5)\r\nsp1x4 OK done\r\n");
    let text = client_text(&out);
    assert_eq!(text.matches("FETCH").count(), 1, "{text}");
    assert!(
        text.starts_with("* 1 FETCH (UID 5 FLAGS (\\Recent \\Seen) BODY[] {"),
        "{text}"
    );
    assert!(
        text.contains("secret body") && text.contains("a1 OK"),
        "{text}"
    );
}

/// The same through a seq-number FETCH: Cyrus's echo of a seq-number STORE carries no
/// UID, and was relayed as a second FETCH response for the message.
#[test]
fn a_seq_number_fetch_that_sets_seen_gives_one_response() {
    let ctx = gateway();
    let stored = sealed_to_mallory(&ctx, "secret body");
    let mut s = with_identity(&ctx);
    let out = s.on_client(b"a1 FETCH 1 (BODY[])\r\n");
    assert!(
        upstream_text(&out).starts_with("sp1x1 FETCH 1 (UID RFC822.SIZE"),
        "{}",
        upstream_text(&out)
    );
    let out = s.on_upstream(&five_classified_encrypted());
    assert_eq!(upstream_text(&out), "sp1x2 FETCH 1 (UID BODY.PEEK[])\r\n");
    let req = five_downloaded(&mut s, &stored);
    let view = s.ctx.view(&req.identity, &req.raw, req.limit);
    let out = s.on_view("sp1x", 5, &req.raw, view);
    assert_eq!(
        upstream_text(&out),
        "sp1x3 STORE 1 +FLAGS.SILENT (\\Seen)\r\n"
    );
    // Cyrus: the echo, without a UID; and another message's flags changing meanwhile.
    let out = s.on_upstream(
        b"* 1 FETCH (FLAGS (\\Seen))\r\n* 2 FETCH (FLAGS (\\Flagged))\r\nsp1x3 OK done\r\n",
    );
    assert_eq!(
        client_text(&out),
        "* 2 FETCH (FLAGS (\\Flagged))\r\n",
        "only the echo of our own STORE is not relayed"
    );
    assert_eq!(upstream_text(&out), "sp1x4 FETCH 1 (UID FLAGS)\r\n");
    let out = s.on_upstream(b"* 1 FETCH (UID 5 FLAGS (\\Seen))\r\nsp1x4 OK done\r\n");
    let text = client_text(&out);
    assert_eq!(text.matches("FETCH").count(), 1, "{text}");
    assert!(
        text.starts_with("* 1 FETCH (FLAGS (\\Seen) BODY[] {"),
        "{text}"
    );
    assert!(
        text.contains("secret body") && text.contains("a1 OK"),
        "{text}"
    );
}

/// Found by fuzzing (`imap_session`, after 5.8 million runs): upstream sent a `+` while
/// a FETCH job ran and a LOGIN with a synchronizing literal was held. Relayed, it told
/// the client to send the literal; sealpost then refused the LOGIN itself without
/// reading it, and the literal's `ZZ9 DELETE INBOX` went upstream as a command. A `+`
/// that no relayed command waits for is dropped, during a job or not.
#[test]
fn a_continuation_no_command_waits_for_is_never_relayed() {
    let ctx = gateway();
    let mut s = with_identity(&ctx);
    let out = s.on_client(b"a1 UID FETCH 5 (UID BODY[])\r\na2 LOGIN {23}\r\n");
    assert!(
        upstream_text(&out).starts_with("sp1x1 UID FETCH 5:"),
        "{}",
        upstream_text(&out)
    );
    assert_eq!(
        client_text(&out),
        "",
        "the LOGIN waits; sealpost says no go-ahead"
    );
    let out = s.on_upstream(b"+ OK\r\n");
    assert_eq!(client_text(&out), "", "a + during a job is dropped");
    assert_eq!(upstream_text(&out), "");
    // The job goes on: UID 5 is plain, and the client's own FETCH is relayed.
    let out = s.on_upstream(
        b"* 1 FETCH (UID 5 RFC822.SIZE 10 BODY[HEADER.FIELDS (CONTENT-TYPE SEALPOST-DECRYPTED)] {2}\r\n\r\n)\r\nsp1x1 OK done\r\n",
    );
    assert!(upstream_text(&out).starts_with("sp1x2 UID SEARCH UID 5 BODY"));
    let out = s.on_upstream(b"* SEARCH\r\n+ more\r\nsp1x2 OK done\r\n");
    assert_eq!(client_text(&out), "", "a + during a job is dropped");
    let up = upstream_text(&out);
    assert!(up.contains("UID FETCH 5 (UID BODY[])"), "{up}");
    let tag = up.split(' ').next().unwrap().to_string();
    let out = s.on_upstream(format!("+ go on\r\n{tag} OK done\r\n").as_bytes());
    let text = client_text(&out);
    assert!(!text.contains("+ "), "{text}");
    assert!(text.contains("a1 OK") && text.contains("a2 BAD"), "{text}");

    // Without a job, nothing waits for a continuation either.
    let mut s = with_identity(&ctx);
    let out = s.on_upstream(b"+ idling\r\n");
    assert_eq!(client_text(&out), "");
}

/// Found by fuzzing too: a client that sends `DONE` before IDLE's `+`, then a command
/// with a synchronizing literal, would take the `+` for the literal's go-ahead. It waits
/// for no `+` (its IDLE is over), so none is relayed.
#[test]
fn an_idle_ended_before_its_continuation_relays_no_continuation() {
    let ctx = gateway();
    // DONE as RFC 2177 writes it, with a bare LF (which ends an IDLE too).
    for done in ["DONE\r\n", "DONE\n"] {
        let mut s = with_identity(&ctx);
        let out = s.on_client(format!("c1 IDLE\r\n{done}c2 LOGIN {{5}}\r\n").as_bytes());
        assert_eq!(upstream_text(&out), "c1 IDLE\r\n");
        let out = s.on_upstream(b"+ idling\r\n");
        assert_eq!(client_text(&out), "", "no + for an IDLE the client ended");
        assert_eq!(upstream_text(&out), "DONE\r\n");
        let out = s.on_upstream(b"c1 OK done\r\n");
        let text = client_text(&out);
        assert!(text.starts_with("c1 OK done\r\n"), "{text}");
        assert!(text.contains("c2 BAD") && !text.contains("+ "), "{text}");
        assert_eq!(upstream_text(&out), "");
    }
}

// ----- found by an attacking review ---------------------------------------------

/// During AUTHENTICATE the login was taken from the first line sealpost could decode;
/// Dovecot accepts base64 with non-zero trailing bits, so line 1 logged mallory in
/// upstream while line 2 named the identity. Now: one line per `+`, and the login is
/// read from the first response only (leniently, as Dovecot decodes it).
#[test]
fn sasl_is_in_lockstep_and_the_login_comes_from_the_first_response() {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut s = greeted();
    let mut l1 = b64
        .encode(b"\0mallory@corp.example\0mallorypw")
        .into_bytes();
    let i = l1.iter().position(|&b| b == b'=').unwrap() - 1;
    l1[i] = b'/'; // same bytes, trailing bits set
    let l1 = String::from_utf8(l1).unwrap();
    let l2 = b64.encode(b"\0victim@corp.example\0x");
    let out = s.on_client(format!("a AUTHENTICATE PLAIN\r\n{l1}\r\n{l2}\r\n").as_bytes());
    assert_eq!(
        upstream_text(&out),
        "a AUTHENTICATE PLAIN\r\n",
        "nothing before upstream's +"
    );
    let out = s.on_upstream(b"+ \r\n");
    assert_eq!(
        upstream_text(&out),
        format!("{l1}\r\n"),
        "one response per challenge"
    );
    let out = s.on_upstream(b"a OK [CAPABILITY IMAP4rev1] Logged in\r\n");
    assert_eq!(s.identity(), Some("mallory@corp.example"));
    // The second line is now a command (and not one): refused here, never relayed.
    assert_eq!(upstream_text(&out), "");
    assert!(client_text(&out).contains("BAD"), "{}", client_text(&out));
}

/// A first response sealpost cannot read at all gives no identity, never a later one.
#[test]
fn an_unreadable_first_sasl_response_gives_no_identity() {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut s = greeted();
    s.on_client(b"a AUTHENTICATE PLAIN\r\n");
    s.on_upstream(b"+ \r\n");
    s.on_client(b"!!not base64!!\r\n");
    s.on_upstream(b"+ again\r\n");
    s.on_client(format!("{}\r\n", b64.encode(b"\0victim@corp.example\0x")).as_bytes());
    s.on_upstream(b"a OK Logged in\r\n");
    assert_eq!(s.identity(), None);
}

/// Lines pipelined behind an AUTHENTICATE that upstream refused at once were untracked
/// commands to upstream. Now they wait, and are commands (tracked) after the reply.
#[test]
fn commands_behind_a_refused_authenticate_are_tracked() {
    let mut s = greeted();
    let out = s.on_client(b"a AUTHENTICATE FOO\r\nv LOGIN mallory@corp.example {32}\r\n");
    assert_eq!(upstream_text(&out), "a AUTHENTICATE FOO\r\n");
    let out = s.on_upstream(b"a NO [ALERT] Unsupported authentication mechanism.\r\n");
    assert_eq!(
        client_text(&out),
        "a NO [ALERT] Unsupported authentication mechanism.\r\n+ Ready for literal data\r\n"
    );
    // v is a LOGIN in progress now: a second v is refused, and v's own reply decides.
    let out = s.on_client(b"v LOGIN victim@corp.example junk\r\n");
    assert_eq!(
        upstream_text(&out),
        "v LOGIN mallory@corp.example {32}\r\n",
        "the 32 bytes are v's literal, as upstream reads them too"
    );
    let mut pw = b"mallorypw".to_vec();
    pw.resize(32, b'x');
    pw.extend_from_slice(b"\r\n");
    let mut s = greeted();
    s.on_client(b"a AUTHENTICATE FOO\r\nv LOGIN mallory@corp.example {32}\r\n");
    s.on_upstream(b"a NO unsupported\r\n");
    s.on_client(&pw);
    s.on_upstream(b"+ OK\r\nv OK Logged in\r\n");
    assert_eq!(s.identity(), Some("mallory@corp.example"));
    let out = s.on_client(b"w LOGIN victim@corp.example junk\r\n");
    assert!(client_text(&out).starts_with("w BAD Already authenticated"));
}

/// IDLE before login, and a literal upstream would ignore (`ID NIL {n+}`), both let
/// an untracked LOGIN reach upstream. Now IDLE needs a login and the literal is read.
#[test]
fn idle_before_login_and_stray_literals_smuggle_nothing() {
    let smuggled =
        b"b LOGIN mallory@corp.example wrong\r\nv LOGIN mallory@corp.example mallorypw\r\n";
    let lit = &smuggled[..smuggled.len() - 2];
    let mut id = format!("a ID NIL {{{}+}}\r\n", lit.len()).into_bytes();
    id.extend_from_slice(smuggled);
    let mut idle = b"i1 IDLE\r\n".to_vec();
    idle.extend_from_slice(smuggled);
    for input in [idle, id] {
        let mut s = Session::new(gateway(), true, true);
        s.on_upstream(b"* OK ready\r\n");
        let out = s.on_client(&input);
        let up = upstream_text(&out);
        assert!(!up.contains("i1 IDLE") && !up.contains("a ID"), "{up}");
        assert!(client_text(&out).starts_with("i1 BAD") || client_text(&out).starts_with("a BAD"));
    }
    // Before TLS, IDLE does not open a way round PRIVACYREQUIRED either.
    let mut s = Session::new(ctx(), false, false);
    s.on_upstream(b"* OK ready\r\n");
    let out = s.on_client(b"i1 IDLE\r\nx LOGIN mallory@corp.example mallorypw\r\n");
    assert_eq!(upstream_text(&out), "");
    assert!(client_text(&out).contains("x NO [PRIVACYREQUIRED]"));
}

/// After login, `NOOP {n+}` (whose literal Dovecot runs as commands) and IDLE + DONE
/// pipelined with commands behind, smuggled an untracked SELECT and a LOGIN.
#[test]
fn literals_and_idle_smuggle_nothing_after_login() {
    let inner = b"x SELECT Other\r\ny LOGIN victim@corp.example junk\r\n";
    let mut noop = format!("n NOOP {{{}+}}\r\n", inner.len() - 2).into_bytes();
    noop.extend_from_slice(inner);
    let mut s = logged_in_as_mallory();
    s.on_client(b"s SELECT INBOX\r\n");
    s.on_upstream(b"* OK [UIDVALIDITY 7] ok\r\ns OK [READ-WRITE] selected\r\n");
    let out = s.on_client(&noop);
    assert_eq!(
        upstream_text(&out),
        "",
        "a NOOP with a literal is not relayed"
    );
    assert!(client_text(&out).starts_with("n BAD"));

    let mut idle = b"i1 IDLE\r\nDONE\r\n".to_vec();
    idle.extend_from_slice(inner);
    let out = s.on_client(&idle);
    assert_eq!(
        upstream_text(&out),
        "i1 IDLE\r\n",
        "held until upstream's +"
    );
    let out = s.on_upstream(b"+ idling\r\n");
    assert_eq!(
        upstream_text(&out),
        "DONE\r\n",
        "DONE, then held until the reply"
    );
    let out = s.on_upstream(b"i1 OK Idle completed\r\n");
    // Now x SELECT is a tracked command, and y LOGIN is refused here.
    assert_eq!(upstream_text(&out), "x SELECT Other\r\n");
    assert!(client_text(&out).contains("y BAD Already authenticated"));
    s.on_upstream(b"* OK [UIDVALIDITY 9] ok\r\nx OK [READ-WRITE] selected\r\n");
    assert!(
        matches!(&s.phase, Phase::Selected { mailbox, uidvalidity: Some(9), .. } if mailbox == "Other"),
        "{:?}",
        s.phase
    );
}

/// A literal announced during IDLE was forwarded and then dropped: the command got no
/// reply and upstream read the next command as literal data.
#[test]
fn only_done_ends_idle() {
    let mut s = logged_in_as_mallory();
    s.on_client(b"i1 IDLE\r\n");
    s.on_upstream(b"+ idling\r\n");
    let out = s.on_client(b"x APPEND INBOX {5+}\r\nhello\r\n");
    assert_eq!(
        upstream_text(&out),
        "DONE\r\n",
        "IDLE ended, the line not relayed"
    );
    assert!(client_text(&out).starts_with("x BAD Only DONE"));
    s.on_upstream(b"i1 OK Idle completed\r\n");
    let out = s.on_client(b"y NOOP\r\n");
    assert_eq!(upstream_text(&out), "y NOOP\r\n");
}

/// A held command with synchronizing literals goes upstream in step with its `+`s,
/// and a refusal midway stops it.
#[test]
fn held_literals_follow_upstreams_continuations() {
    let mut s = logged_in_as_mallory();
    let out = s.on_client(b"c1 CREATE {3}\r\n");
    assert_eq!(client_text(&out), "+ Ready for literal data\r\n");
    let out = s.on_client(b"Box\r\n");
    assert_eq!(upstream_text(&out), "c1 CREATE {3}\r\n");
    let out = s.on_upstream(b"c1 NO [CANNOT] refused\r\n");
    assert_eq!(client_text(&out), "c1 NO [CANNOT] refused\r\n");
    assert!(upstream_text(&out).is_empty(), "the rest is not sent");
    let out = s.on_client(b"c2 NOOP\r\n");
    assert_eq!(upstream_text(&out), "c2 NOOP\r\n");
}

// ----- found by a second attacking review --------------------------------------

/// R2-1: before login, `a APPEND INBOX ) {n+}`: Dovecot's imap-login answers
/// `a BAD Unexpected ')'`, skips the line and runs the literal, a hidden
/// `c LOGIN mallory`; its `c OK` completes sealpost's visible `c LOGIN victim`.
#[test]
fn r2_preauth_append_literal_cannot_pick_the_identity() {
    let mut s = greeted();
    let hidden = b"c LOGIN mallory@corp.example pw\r\n";
    let mut input = format!("a APPEND INBOX ) {{{}+}}\r\n", hidden.len()).into_bytes();
    input.extend_from_slice(hidden);
    input.extend_from_slice(b"\r\nc LOGIN victim@corp.example junk\r\n");
    let out = s.on_client(&input);
    let up = upstream_text(&out);
    // APPEND before login is refused here, its literal read and dropped: the hidden
    // LOGIN never reaches upstream, so no upstream reply can be mistaken for it.
    assert!(
        client_text(&out).starts_with("a BAD Log in first"),
        "{}",
        client_text(&out)
    );
    assert_eq!(up, "c LOGIN victim@corp.example junk\r\n");
    // After login, a rejected APPEND line's literal is never sent unasked either:
    // streamed, it waits for upstream's `+`...
    let mut s = streaming_mallory();
    let hidden = b"x SELECT Other\r\n";
    let mut input = format!("a APPEND INBOX \"junk\" {{{}+}}\r\n", hidden.len()).into_bytes();
    input.extend_from_slice(hidden);
    input.extend_from_slice(b"\r\nz NOOP\r\n");
    let out = s.on_client(&input);
    assert_eq!(upstream_text(&out), "a APPEND INBOX \"junk\" {16}\r\n");
    let out = s.on_upstream(b"a BAD Invalid internal date\r\n");
    assert_eq!(
        upstream_text(&out),
        "z NOOP\r\n",
        "the literal was read and dropped"
    );
    // ...read whole to be sealed, it does not decode and sealpost refuses it.
    let mut s = logged_in_as_mallory();
    let out = s.on_client(&input);
    assert_eq!(upstream_text(&out), "z NOOP\r\n");
    assert!(
        client_text(&out).starts_with("a BAD APPEND with a literal"),
        "{}",
        client_text(&out)
    );
}

/// R2-2: a literal of a held command imap-codec decodes but upstream does not know
/// (GETQUOTAROOT without Dovecot's quota plugin: `BAD Unknown command`, line skipped)
/// goes up with the command; upstream runs it.
#[test]
fn r2_a_held_non_synchronizing_literal_waits_for_upstream() {
    let mut s = logged_in_as_mallory();
    let out = s.on_client(b"q GETQUOTAROOT {16+}\r\nx CREATE Pwned\r\n\r\n");
    let up = upstream_text(&out);
    assert!(
        !up.contains("x CREATE"),
        "literal bytes sent before upstream's +: {up:?}"
    );
}

/// R2-3: a refused (discarded) command whose later line announces a synchronizing
/// literal never gets a `+` nor its tagged reply: the client waits forever.
#[test]
fn r2_a_discarded_command_with_a_later_sync_literal_is_answered() {
    let mut s = logged_in_as_mallory();
    let n = CLIENT_CAPTURE + 10;
    let mut input = format!("d NOOP {{{n}+}}\r\n").into_bytes();
    input.extend(std::iter::repeat_n(b'x', n));
    input.extend_from_slice(b" {5}\r\n");
    let out = s.on_client(&input);
    let text = client_text(&out);
    assert!(text.contains("d NO") || text.starts_with('+'), "{text:?}");
}

/// R2-4: after STARTTLS is decided, a second upstream `+` in the same read resumes
/// the client and frames bytes sent before the handshake (here `c NOOP`).
#[test]
fn r2_nothing_after_starttls_is_framed_on_a_late_continuation() {
    let mut s = Session::new(ctx(), false, true);
    s.on_upstream(b"* PREAUTH ready\r\n");
    s.on_client(b"s CREATE {1}\r\n");
    let out = s.on_client(b"X\r\nb STARTTLS\r\nc NOOP\r\n");
    assert_eq!(upstream_text(&out), "s CREATE {1}\r\n");
    let out = s.on_upstream(b"+ OK\r\n+ OK\r\n");
    let at = out
        .iter()
        .position(|o| *o == Output::StartTls)
        .expect("STARTTLS");
    let after = upstream_text(&out[at..]);
    assert!(!after.contains("c NOOP"), "pre-TLS bytes ran: {out:?}");
}

/// R2-5: a job that ends on a non-OK download reply leaves its decryptions running;
/// their views are taken by the next job by UID alone (another mailbox here), shown
/// and cached under its key.
#[test]
fn r2_a_view_from_an_ended_job_is_not_taken_by_the_next() {
    let ctx = gateway();
    let id = ctx.identities[0].clone();
    let enc = |body: &str| {
        crate::pgp::encrypt_message(
            &crate::pgp::EncryptRequest {
                raw: format!("From: bob@example.org\r\nSubject: s\r\n\r\n{body}\r\n").as_bytes(),
                recipients: std::slice::from_ref(&id.cert),
                signer: None,
                protect_headers: true,
                boundary: "b1",
                extra_outer: b"",
            },
            &[],
        )
        .unwrap()
    };
    let (inbox5, other5) = (enc("INBOX five"), enc("OTHER five"));
    let structure = "(\"application\" \"pgp-encrypted\" NIL NIL NIL \"7bit\" 10 NIL NIL NIL NIL)(\"application\" \"octet-stream\" NIL NIL NIL \"7bit\" 500 NIL NIL NIL NIL) \"encrypted\" (\"protocol\" \"application/pgp-encrypted\" \"boundary\" \"b1\") NIL NIL NIL";
    let classify = |tag: &str| {
        format!("* 1 FETCH (UID 5 RFC822.SIZE 900 BODYSTRUCTURE ({structure}) BODY[HEADER.FIELDS (SEALPOST-DECRYPTED)] {{2}}\r\n\r\n)\r\n{tag} OK done\r\n").into_bytes()
    };
    let download = |stored: &[u8]| {
        let mut d = format!("* 1 FETCH (UID 5 BODY[] {{{}}}\r\n", stored.len()).into_bytes();
        d.extend_from_slice(stored);
        d.extend_from_slice(b")\r\n");
        d
    };
    let decrypts = |out: Vec<Output>| -> Vec<DecryptRequest> {
        out.into_iter()
            .filter_map(|o| match o {
                Output::Decrypt(r) => Some(r),
                _ => None,
            })
            .collect()
    };
    let mut s = with_identity(&ctx);
    s.on_client(b"a1 UID FETCH 5 (BODY.PEEK[])\r\n");
    s.on_upstream(&classify("sp1x1"));
    let old = decrypts(s.on_upstream(&download(&inbox5)));
    let out = s.on_upstream(b"sp1x2 NO [UNAVAILABLE] try later\r\n");
    assert!(client_text(&out).starts_with("a1 NO"));
    s.on_client(b"m3 SELECT Other\r\n");
    s.on_upstream(b"* OK [UIDVALIDITY 9] ok\r\nm3 OK [READ-WRITE] selected\r\n");
    s.on_client(b"a2 UID FETCH 5 (BODY.PEEK[])\r\n");
    s.on_upstream(&classify("sp2x1"));
    let new = decrypts(s.on_upstream(&download(&other5)));
    assert_eq!(new.len(), 1);
    // The late view of INBOX's UID 5 arrives first.
    let v = s.ctx.view(&old[0].identity, &old[0].raw, old[0].limit);
    s.on_view(&old[0].job, 5, &old[0].raw, v);
    let v = s.ctx.view(&new[0].identity, &new[0].raw, new[0].limit);
    s.on_view(&new[0].job, 5, &new[0].raw, v);
    s.on_upstream(b"sp2x2 OK done\r\n");
    let out = s.on_upstream(b"* 1 FETCH (UID 5)\r\nsp2x3 OK done\r\n");
    let text = client_text(&out);
    assert!(
        text.contains("OTHER five"),
        "Other's UID 5 shown as: {text}"
    );
}

// ----- found by a third attacking review ---------------------------------------

/// `{}` is a literal of 0 bytes to Dovecot (it sends `+` and reads the next line as
/// arguments); sealpost's framer did not take it as one, so a stray `+` released another
/// command's literal, run upstream as a LOGIN that answered a tracked one.
#[test]
fn empty_brace_literals_are_literals_and_a_plus_belongs_to_one_command() {
    let mut s = greeted();
    let out = s.on_client(b"s1 NOOP {}\r\nb LOGIN victim@corp.example x\r\n");
    assert_eq!(
        upstream_text(&out),
        "",
        "NOOP with a literal is not relayed"
    );
    assert!(
        client_text(&out).contains("s1 BAD"),
        "{}",
        client_text(&out)
    );
    let hidden = b"b LOGIN mallory@corp.example mallorypw";
    let mut input = b"s2 NOOP {}\r\n".to_vec();
    input.extend(format!("b2 APPEND INBOX ~{{{}+}}\r\n", hidden.len()).bytes());
    input.extend(hidden);
    input.extend(b"\r\n");
    let out = s.on_client(&input);
    let up = upstream_text(&out);
    assert!(
        !up.contains("LOGIN mallory") && !up.contains("APPEND"),
        "{up:?}"
    );
    s.on_upstream(b"+ OK\r\nb OK Logged in\r\n");
    assert_ne!(s.identity(), Some("victim@corp.example"));
}

/// A command that waits for `+` goes up only when nothing else is in flight.
#[test]
fn a_command_waiting_for_a_plus_goes_up_alone() {
    let mut s = streaming_mallory();
    let out = s.on_client(b"n1 NOOP\r\nc1 CREATE {3}\r\n");
    assert_eq!(upstream_text(&out), "n1 NOOP\r\n");
    let out = s.on_client(b"Box\r\n");
    assert_eq!(upstream_text(&out), "", "waits for n1");
    let out = s.on_upstream(b"n1 OK\r\n");
    assert_eq!(upstream_text(&out), "c1 CREATE {3}\r\n");
    let out = s.on_upstream(b"+ OK\r\n");
    assert_eq!(upstream_text(&out), "Box\r\n");
    s.on_upstream(b"c1 OK\r\n");
    // APPEND with a literal, and IDLE, wait the same way.
    let out = s.on_client(b"n2 NOOP\r\na1 APPEND INBOX {2+}\r\nhi\r\nn3 NOOP\r\n");
    assert_eq!(upstream_text(&out), "n2 NOOP\r\n");
    let out = s.on_upstream(b"n2 OK\r\n");
    assert_eq!(upstream_text(&out), "a1 APPEND INBOX {2}\r\n");
    let out = s.on_upstream(b"+ OK\r\n");
    assert_eq!(upstream_text(&out), "hi\r\nn3 NOOP\r\n");
}

/// A MULTIAPPEND refused after its first message (over quota): upstream ends the
/// command without a `+` for the next literal; the session must not wait for one.
#[test]
fn an_append_answered_before_its_next_message_does_not_hang() {
    let mut s = streaming_mallory();
    s.on_client(b"a APPEND INBOX {3}\r\n");
    s.on_upstream(b"+ OK\r\n");
    s.on_client(b"abc");
    s.on_upstream(b"a NO [OVERQUOTA] Quota exceeded\r\n");
    let out = s.on_client(b" {4+}\r\nwxyz\r\nb NOOP\r\n");
    assert_eq!(
        upstream_text(&out),
        " {4}\r\nb NOOP\r\n",
        "wxyz dropped, b relayed"
    );
    let mut s = streaming_mallory();
    s.on_client(b"a APPEND INBOX {3}\r\n");
    s.on_upstream(b"+ OK\r\n");
    s.on_client(b"abc");
    s.on_upstream(b"a NO [OVERQUOTA] Quota exceeded\r\n");
    let out = s.on_client(b" {4}\r\nb NOOP\r\n");
    assert_eq!(upstream_text(&out), " {4}\r\nb NOOP\r\n");
}

// ----- encrypted APPEND (issue 10) ---------------------------------------------

fn seal_request(outs: &[Output]) -> Option<&SealRequest> {
    outs.iter().find_map(|o| match o {
        Output::Seal(r) => Some(r),
        _ => None,
    })
}

/// An APPEND is read whole (sealpost answers the `+`), sealed off the protocol task,
/// and goes up with the sealed message's size; commands after it wait their turn.
#[test]
fn an_append_is_sealed_before_it_goes_up() {
    let mut s = logged_in_as_mallory();
    let out = s.on_client(b"a1 APPEND Sent (\\Seen) {5}\r\n");
    assert_eq!(client_text(&out), "+ Ready for literal data\r\n");
    assert_eq!(upstream_text(&out), "");
    let out = s.on_client(b"hello\r\nn1 NOOP\r\n");
    let req = seal_request(&out).expect("a seal request");
    assert_eq!(req.tag, "a1");
    assert_eq!(req.identity, "mallory@corp.example");
    assert_eq!(req.message, b"hello");
    assert_eq!(
        upstream_text(&out),
        "",
        "nothing goes up before the sealed copy"
    );
    let out = s.on_sealed("a1", 0, Ok(b"SEALED!".to_vec()));
    assert_eq!(upstream_text(&out), "a1 APPEND Sent (\\Seen) {7}\r\n");
    let out = s.on_upstream(b"+ OK\r\n");
    // Once the APPEND is wholly upstream, the client's pipeline goes on.
    assert_eq!(upstream_text(&out), "SEALED!\r\nn1 NOOP\r\n");
    let out = s.on_upstream(b"a1 OK [APPENDUID 7 12] Append completed.\r\n");
    assert_eq!(
        client_text(&out),
        "a1 OK [APPENDUID 7 12] Append completed.\r\n"
    );
}

/// Encryption that fails stores nothing and says why; the session goes on.
#[test]
fn an_append_that_cannot_be_sealed_is_refused_and_nothing_is_stored() {
    let mut s = logged_in_as_mallory();
    s.on_client(b"a1 APPEND Drafts {2+}\r\nhi\r\nn1 NOOP\r\n");
    let out = s.on_sealed("a1", 0, Err("no usable encryption key".into()));
    assert!(
        client_text(&out).starts_with("a1 NO [CANNOT] Not stored: the message could not be encrypted (no usable encryption key)"),
        "{}",
        client_text(&out)
    );
    assert_eq!(upstream_text(&out), "n1 NOOP\r\n");
    // A late or foreign answer changes nothing.
    let out = s.on_sealed("zz", 0, Ok(b"x".to_vec()));
    assert!(out.is_empty());
}

/// `sent-drafts`: only mailboxes LIST marks \Sent or \Drafts (or named so) are sealed;
/// MULTIAPPEND stays offered (see the next test).
#[test]
fn sent_drafts_seals_only_those_mailboxes() {
    let mut s = logged_in_as_mallory_in(gateway_with(crate::config::EncryptAppend::SentDrafts));
    s.on_client(b"l1 LIST \"\" \"*\"\r\n");
    let out = s.on_upstream(
        b"* LIST (\\HasNoChildren \\Drafts) \"/\" Entw&APw-rfe\r\n* LIST (\\HasNoChildren) \"/\" Archive\r\nl1 OK done\r\n",
    );
    assert!(client_text(&out).contains("Archive"));
    // Relayed as it comes: no seal request.
    let out = s.on_client(b"a1 APPEND Archive {2+}\r\nhi\r\n");
    assert!(seal_request(&out).is_none());
    assert_eq!(upstream_text(&out), "a1 APPEND Archive {2}\r\n");
    s.on_upstream(b"+ OK\r\na1 OK done\r\n");
    let out = s.on_client(b"a2 APPEND Entw&APw-rfe {2+}\r\nhi\r\n");
    assert!(seal_request(&out).is_some(), "the \\Drafts mailbox");
    s.on_sealed("a2", 0, Ok(b"xx".to_vec()));
    s.on_upstream(b"+ OK\r\na2 OK done\r\n");
    let out = s.on_client(b"a3 APPEND \"Sent Items\" {2+}\r\nhi\r\n");
    assert!(seal_request(&out).is_some(), "named like Sent");
    s.on_sealed("a3", 0, Ok(b"xx".to_vec()));
    s.on_upstream(b"+ OK\r\na3 OK done\r\n");
    let out = s.on_client(b"c1 CAPABILITY\r\n");
    assert_eq!(upstream_text(&out), "c1 CAPABILITY\r\n");
    let out = s.on_upstream(b"* CAPABILITY IMAP4rev1 MULTIAPPEND LITERAL+ IDLE\r\nc1 OK\r\n");
    assert!(client_text(&out).starts_with("* CAPABILITY IMAP4rev1 MULTIAPPEND LITERAL+ IDLE\r\n"));
}

/// `sent-drafts` with a client that never lists (mbsync, Outlook's first sync, a
/// localised Sent folder): sealpost asks upstream itself right after login, the client
/// sees none of it, and its commands wait for the answer instead of racing it.
#[test]
fn sent_drafts_finds_a_sent_folder_of_any_name_without_the_client_listing() {
    let sent_drafts = || gateway_with(crate::config::EncryptAppend::SentDrafts);
    let (mut s, out) = just_logged_in_as_mallory(sent_drafts());
    assert_eq!(
        upstream_text(&out),
        "sp0l LIST (SPECIAL-USE) \"\" \"*\"\r\n"
    );
    assert!(
        client_text(&out).starts_with("m1 OK"),
        "{}",
        client_text(&out)
    );
    // The client's APPEND waits for the answer.
    let out = s.on_client(b"a1 APPEND Gesendet {2+}\r\nhi\r\n");
    assert!(out.is_empty(), "{out:?}");
    let out = s.on_upstream(
        b"* LIST (\\Sent) \"/\" Gesendet\r\n* LIST (\\Drafts) \"/\" Entw&APw-rfe\r\n* LIST (\\HasChildren) \"/\" INBOX\r\nsp0l OK done\r\n",
    );
    assert_eq!(
        client_text(&out),
        "",
        "nothing of sealpost's own LIST reaches the client"
    );
    assert!(
        seal_request(&out).is_some(),
        "the \\Sent mailbox, by its attribute"
    );
    s.on_sealed("a1", 0, Ok(b"xx".to_vec()));
    s.on_upstream(b"+ OK\r\na1 OK done\r\n");
    // The client's own LIST afterwards is relayed as always.
    s.on_client(b"l1 LIST \"\" \"*\"\r\n");
    let out = s.on_upstream(b"* LIST (\\Sent) \"/\" Gesendet\r\nl1 OK done\r\n");
    assert!(
        client_text(&out).starts_with("* LIST (\\Sent)"),
        "{}",
        client_text(&out)
    );
    // A server without the extension: BAD, then a plain LIST (whose attributes count;
    // a line with a literal name or one imap-codec cannot read is dropped, not relayed);
    // if that fails too, the usual names still count.
    let (mut s, _) = just_logged_in_as_mallory(sent_drafts());
    let out = s.on_upstream(b"sp0l BAD unknown list option\r\n");
    assert_eq!(client_text(&out), "");
    assert_eq!(upstream_text(&out), "sp0m LIST \"\" \"*\"\r\n");
    s.on_client(b"n1 NOOP\r\n");
    let out = s.on_upstream(
        b"* LIST (\\Sent) \"/\" {9}\r\nEnviados \r\n* LIST () \"/\" x (\"OLDNAME\" (\"y\"))\r\n* LIST (\\Sent) \"/\" Elementos\r\nsp0m OK done\r\n",
    );
    assert_eq!(client_text(&out), "");
    assert_eq!(upstream_text(&out), "n1 NOOP\r\n", "held until then");
    s.on_upstream(b"n1 OK\r\n");
    let out = s.on_client(b"a1 APPEND Elementos {2+}\r\nhi\r\n");
    assert!(seal_request(&out).is_some());
    // A completion imap-codec cannot read ends it all the same, unseen.
    let (mut odd, _) = just_logged_in_as_mallory(sent_drafts());
    odd.on_client(b"n1 NOOP\r\n");
    let out = odd.on_upstream(b"sp0l BAD [\x01 garbled\r\n");
    assert_eq!(client_text(&out), "");
    let out = odd.on_upstream(b"sp0m NO no\r\n");
    assert_eq!(client_text(&out), "");
    assert_eq!(upstream_text(&out), "n1 NOOP\r\n");
    odd.on_upstream(b"n1 OK\r\n");
    let out = odd.on_client(b"a1 APPEND Sent {2+}\r\nhi\r\n");
    assert!(seal_request(&out).is_some(), "named Sent");
    // A command pipelined with the login completes first; the LIST goes up after it,
    // and nothing the client sends meanwhile overtakes it.
    let mut piped = Session::new(sent_drafts(), true, true);
    piped.on_upstream(b"* OK ready\r\n");
    let out = piped.on_client(b"m1 LOGIN mallory@corp.example pw\r\nm2 CAPABILITY\r\n");
    assert_eq!(
        upstream_text(&out),
        "m1 LOGIN mallory@corp.example pw\r\nm2 CAPABILITY\r\n"
    );
    let out = piped.on_upstream(b"m1 OK logged in\r\n");
    assert_eq!(upstream_text(&out), "");
    let out = piped.on_client(b"a1 APPEND Gesendet {2+}\r\nhi\r\n");
    assert!(out.is_empty(), "{out:?}");
    let out = piped.on_upstream(b"* CAPABILITY IMAP4rev1\r\nm2 OK\r\n");
    assert!(client_text(&out).contains("m2 OK"));
    assert_eq!(
        upstream_text(&out),
        "sp0l LIST (SPECIAL-USE) \"\" \"*\"\r\n"
    );
    let out = piped.on_upstream(b"* LIST (\\Sent) \"/\" Gesendet\r\nsp0l OK done\r\n");
    assert!(seal_request(&out).is_some(), "{out:?}");
}

/// MULTIAPPEND (RFC 3502): every message sealed, the command goes up whole (all or
/// none stored), each literal announced with its sealed size.
#[test]
fn a_multiappend_is_sealed_message_by_message_and_goes_up_as_one() {
    let mut s = logged_in_as_mallory();
    let out = s.on_client(
        b"a1 APPEND Sent (\\Seen) {3+}\r\none (\\Draft) \"02-Dec-2026 10:00:00 +0000\" {3+}\r\ntwo\r\nn1 NOOP\r\n",
    );
    let asked: Vec<(usize, Vec<u8>)> = out
        .iter()
        .filter_map(|o| match o {
            Output::Seal(r) => Some((r.index, r.message.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(asked, vec![(0, b"one".to_vec()), (1, b"two".to_vec())]);
    assert_eq!(
        upstream_text(&s.on_sealed("a1", 1, Ok(b"SEALED-2".to_vec()))),
        ""
    );
    let out = s.on_sealed("a1", 0, Ok(b"SEALED1".to_vec()));
    assert_eq!(upstream_text(&out), "a1 APPEND Sent (\\Seen) {7}\r\n");
    let out = s.on_upstream(b"+ OK\r\n");
    assert_eq!(
        upstream_text(&out),
        "SEALED1 (\\Draft) \"02-Dec-2026 10:00:00 +0000\" {8}\r\n"
    );
    let out = s.on_upstream(b"+ OK\r\n");
    assert_eq!(upstream_text(&out), "SEALED-2\r\nn1 NOOP\r\n");
    // One message that cannot be sealed: nothing is stored.
    s.on_upstream(b"a1 OK [APPENDUID 7 1:2] done\r\nn1 OK\r\n");
    s.on_client(b"a2 APPEND Sent {1+}\r\nx {1+}\r\ny\r\n");
    s.on_sealed("a2", 0, Err("no key".into()));
    let out = s.on_sealed("a2", 1, Ok(b"z".to_vec()));
    assert!(
        client_text(&out).starts_with("a2 NO [CANNOT]"),
        "{}",
        client_text(&out)
    );
    assert_eq!(upstream_text(&out), "");
    // A second message whose flags do not parse is refused whole.
    let out = s.on_client(b"a3 APPEND Sent {1+}\r\nx (\\Bad {1+}\r\ny\r\n");
    assert!(
        client_text(&out).starts_with("a3 BAD"),
        "{}",
        client_text(&out)
    );
    assert_eq!(upstream_text(&out), "");
}

/// An APPEND over the literal limit is refused as before; without an identity nothing
/// is sealed (there is no key to seal to).
#[test]
fn appends_without_identity_or_over_the_limit_are_not_sealed() {
    let mut s = logged_in_as_mallory();
    let out = s.on_client(b"a1 APPEND Sent {99999999}\r\n");
    assert!(
        client_text(&out).starts_with("a1 NO [TOOBIG]"),
        "{}",
        client_text(&out)
    );
    let mut s = Session::new(ctx(), true, true);
    s.on_upstream(b"* OK ready\r\n");
    s.on_client(b"m1 LOGIN nobody pw\r\n");
    s.on_upstream(b"m1 OK logged in\r\n");
    let out = s.on_client(b"a1 APPEND Sent {2+}\r\nhi\r\n");
    assert!(seal_request(&out).is_none());
    assert_eq!(upstream_text(&out), "a1 APPEND Sent {2}\r\n");
}

/// A mailbox LIST marks `\Junk` (RFC 6154) counts as Junk whatever its name; so do the
/// usual names before any LIST.
#[test]
fn junk_mailboxes_come_from_list_and_names() {
    let mut s = logged_in_as_mallory();
    assert!(s.is_junk("Junk") && s.is_junk("INBOX/Spam"));
    assert!(!s.is_junk("Werbung"));
    s.on_client(b"l1 LIST \"\" \"*\"\r\n");
    s.on_upstream(b"* LIST (\\HasNoChildren \\Junk) \"/\" Werbung\r\nl1 OK done\r\n");
    assert!(s.is_junk("Werbung"));
    assert!(!s.is_junk("INBOX"));
}

/// The outer `Autocrypt` field of an encrypted message is not covered by its
/// signature: a key announced there (swapped in transit) is learned as unauthenticated
/// and never displaces the one inside the signed payload.
#[test]
fn only_the_signed_payloads_autocrypt_key_is_authenticated() {
    use crate::keys::tests::make_cert;
    use crate::trust::Vouch;
    let dir = tempfile::tempdir().unwrap();
    let ctx = gateway();
    let id = ctx.identities[0].clone();
    let bob = make_cert("bob@example.org");
    let (honest, swapped) = (make_cert("bob@example.org"), make_cert("bob@example.org"));
    let keys = Arc::new(crate::keys::KeyStore::open(&dir.path().join("keys")).unwrap());
    keys.insert(bob.clone().strip_secret_key_material())
        .unwrap();
    let signer = bob
        .keys()
        .secret()
        .with_policy(&crate::keys::POLICY, None)
        .for_signing()
        .next()
        .unwrap()
        .key()
        .clone()
        .into_keypair()
        .unwrap();
    let field = |c| crate::keys::autocrypt::header_field(c, "bob@example.org", false).unwrap();
    let raw = format!(
        "From: bob@example.org\r\nDate: Tue, 01 Dec 2026 09:00:00 +0000\r\n{}Subject: keys\r\n\r\nhi\r\n",
        field(&honest)
    );
    let sealed = crate::pgp::encrypt_message(
        &crate::pgp::EncryptRequest {
            raw: raw.as_bytes(),
            recipients: std::slice::from_ref(&id.cert),
            signer: Some(&signer),
            protect_headers: true,
            boundary: "b1",
            extra_outer: b"",
        },
        &[],
    )
    .unwrap();
    // On the way, the outer copy of the field is swapped for another key.
    let text = String::from_utf8(sealed).unwrap();
    let honest_field = field(&honest);
    let (outer, inner) = text.split_once("\r\n\r\n").unwrap();
    let outer = outer.replacen(honest_field.trim_end(), field(&swapped).trim_end(), 1);
    let stored = format!("{outer}\r\n\r\n{inner}").into_bytes();
    let store = Arc::new(crate::keys::autocrypt::AutocryptStore::open(dir.path()));
    let mut c = ImapContext {
        account: ctx.account.clone(),
        autocrypt: Some(Arc::new(crate::keys::autocrypt::Learner {
            store: store.clone(),
            authserv_id: None,
        })),
        identities: ctx.identities.clone(),
        store: keys,
        cache: Arc::new(super::super::cache::ViewCache::new(1 << 20)),
        decrypt_slots: ctx.decrypt_slots.clone(),
        max_message_size: ctx.max_message_size,
        max_line_length: ctx.max_line_length,
        max_job_view_bytes: ctx.max_job_view_bytes,
        encrypt_append: ctx.encrypt_append,
        search: Default::default(),
        ahead: Default::default(),
    };
    c.max_job_view_bytes = 1 << 20;
    let c = Arc::new(c);
    let mut s = with_identity(&c);
    s.on_client(b"a1 UID FETCH 5 (UID BODY.PEEK[])\r\n");
    s.on_upstream(&five_classified_encrypted());
    let req = five_downloaded(&mut s, &stored);
    let view = s.ctx.view(&req.identity, &req.raw, req.limit);
    assert!(matches!(
        view.kind,
        crate::pgp::ViewKind::Decrypted(crate::pgp::SignatureStatus::Good { .. })
    ));
    s.on_view("sp1x", req.uid, &req.raw, view);
    let (key, vouch) = store
        .key_for("mallory@corp.example", "bob@example.org")
        .unwrap();
    assert_eq!(key.fingerprint(), honest.fingerprint());
    assert_eq!(vouch, Vouch::AutocryptAuthenticated);
}

/// A sealed copy is signed by the identity's own key, which proves only that sealpost
/// sealed it. Mail someone sent with the user's own address as From and an
/// `Autocrypt-Gossip` field, sealed by `sealpost seal`, teaches no key when read back
/// (found by an attacking review: it counted as signed good by the From).
#[test]
fn a_sealed_copy_of_received_mail_vouches_for_nothing_in_it() {
    use crate::keys::tests::make_cert;
    let dir = tempfile::tempdir().unwrap();
    let ctx = gateway();
    let id = ctx.identities[0].clone();
    let attacker = make_cert("ceo@corp.example");
    let gossip = crate::keys::autocrypt::header_field(&attacker, "ceo@corp.example", false)
        .unwrap()
        .replacen("Autocrypt:", "Autocrypt-Gossip:", 1);
    let raw = format!(
        "From: {}\r\nTo: {}\r\nDate: Tue, 01 Dec 2026 09:00:00 +0000\r\n{gossip}Subject: new key\r\n\r\nhi\r\n",
        id.address, id.address
    );
    let stored =
        crate::pgp::stored::seal(raw.as_bytes(), &id.cert, id.signer.as_ref(), "b1").unwrap();
    let store = Arc::new(crate::keys::autocrypt::AutocryptStore::open(dir.path()));
    let mut c = ImapContext {
        account: ctx.account.clone(),
        autocrypt: Some(Arc::new(crate::keys::autocrypt::Learner {
            store: store.clone(),
            authserv_id: None,
        })),
        identities: ctx.identities.clone(),
        store: ctx.store.clone(),
        cache: Arc::new(super::super::cache::ViewCache::new(1 << 20)),
        decrypt_slots: ctx.decrypt_slots.clone(),
        max_message_size: ctx.max_message_size,
        max_line_length: ctx.max_line_length,
        max_job_view_bytes: ctx.max_job_view_bytes,
        encrypt_append: ctx.encrypt_append,
        search: Default::default(),
        ahead: Default::default(),
    };
    c.max_job_view_bytes = 1 << 20;
    let c = Arc::new(c);
    let mut s = with_identity(&c);
    s.on_client(b"a1 UID FETCH 5 (UID BODY.PEEK[])\r\n");
    s.on_upstream(&five_classified_encrypted());
    let req = five_downloaded(&mut s, &stored);
    let view = s.ctx.view(&req.identity, &req.raw, req.limit);
    assert_eq!(view.bytes, raw.as_bytes(), "the copy reads as the original");
    s.on_view("sp1x", req.uid, &req.raw, view);
    assert!(store.key_for(&id.address, "ceo@corp.example").is_none());
}

// ----- pipelined FETCHes of encrypted mail ---------------------------------------

/// `body` in a PGP/MIME message to mallory's key, as Dovecot would store it.
fn sealed_to_mallory(ctx: &ImapContext, body: &str) -> Vec<u8> {
    crate::pgp::encrypt_message(
        &crate::pgp::EncryptRequest {
            raw: format!("From: bob@example.org\r\nSubject: s\r\n\r\n{body}\r\n").as_bytes(),
            recipients: std::slice::from_ref(&ctx.identities[0].cert),
            signer: None,
            protect_headers: true,
            boundary: "b1",
            extra_outer: b"",
        },
        &[],
    )
    .unwrap()
}

/// The cache key of `uid` in the INBOX that [`with_identity`] selects.
fn inbox_key(uid: u32) -> super::super::cache::Key {
    super::super::cache::Key {
        account: "test".into(),
        identity: "mallory@corp.example".into(),
        mailbox: "INBOX".into(),
        uidvalidity: 3,
        uid,
    }
}

/// mbsync sends one `UID FETCH n (BODY.PEEK[])` per message, hundreds pipelined. A
/// message whose view is cached no longer stops that pipeline for a job: upstream is
/// asked for its UID (and flags) under the client's own tag, in order with the rest,
/// and the response gets the view's content. A FETCH line inside another message's
/// literal is data, never taken for that response.
#[test]
fn cached_views_are_answered_within_the_clients_pipeline() {
    use super::super::cache::Entry;
    let ctx = gateway();
    let stored = sealed_to_mallory(&ctx, "secret six");
    let view = ctx.view("mallory@corp.example", &stored, 1 << 20);
    assert!(matches!(view.kind, crate::pgp::ViewKind::Decrypted(_)));
    ctx.cache.insert(inbox_key(6), Entry::View(Arc::new(view)));
    for uid in [5, 7] {
        ctx.cache.insert(inbox_key(uid), Entry::Plain);
    }
    let mut s = with_identity(&ctx);
    let out = s.on_client(
        b"a UID FETCH 5 (BODY.PEEK[])\r\nb UID FETCH 6 (FLAGS BODY.PEEK[])\r\nc UID FETCH 7 (BODY.PEEK[])\r\n",
    );
    assert_eq!(
        upstream_text(&out),
        "a UID FETCH 5 (BODY.PEEK[])\r\nb UID FETCH 6 (UID FLAGS)\r\nc UID FETCH 7 (BODY.PEEK[])\r\n",
        "all three go up at once"
    );
    // UID 5's body carries a line that looks like the answer for UID 6.
    let five = b"Subject: 5\r\n\r\n* 2 FETCH (UID 6 FLAGS ())\r\n";
    let mut up = format!("* 1 FETCH (UID 5 BODY[] {{{}}}\r\n", five.len()).into_bytes();
    up.extend_from_slice(five);
    up.extend_from_slice(b")\r\na OK done\r\n");
    let relayed_five = up.clone();
    up.extend_from_slice(b"* 2 FETCH (UID 6 FLAGS (\\Seen))\r\nb OK done\r\n");
    // After b's answer, a flag update for UID 6 is upstream's news: relayed as it is.
    up.extend_from_slice(b"* 2 FETCH (UID 6 FLAGS (\\Seen \\Flagged))\r\n");
    up.extend_from_slice(b"* 3 FETCH (UID 7 BODY[] {4}\r\n7777)\r\nc OK done\r\n");
    for chunk in [1, 7, up.len()] {
        let mut s2 = with_identity(&ctx);
        s2.on_client(
            b"a UID FETCH 5 (BODY.PEEK[])\r\nb UID FETCH 6 (FLAGS BODY.PEEK[])\r\nc UID FETCH 7 (BODY.PEEK[])\r\n",
        );
        let text = client_text(&feed_upstream(&mut s2, &up, chunk));
        let rel = String::from_utf8_lossy(&relayed_five);
        assert!(
            text.starts_with(rel.as_ref()),
            "UID 5 byte for byte:\n{text}"
        );
        let rest = &text[rel.len()..];
        assert!(
            rest.starts_with("* 2 FETCH (UID 6 FLAGS (\\Seen) BODY[] {"),
            "UID 6 from its view:\n{rest}"
        );
        assert!(
            rest.contains("secret six") && !rest.contains("BEGIN PGP"),
            "{rest}"
        );
        assert_eq!(rest.matches("secret six").count(), 1, "{rest}");
        assert!(
            rest.contains("b OK done\r\n* 2 FETCH (UID 6 FLAGS (\\Seen \\Flagged))\r\n"),
            "{rest}"
        );
        assert!(rest.ends_with("7777)\r\nc OK done\r\n"), "{rest}");
    }
    // A FETCH that sets \Seen, or with a CONDSTORE modifier, still runs as a job.
    for fetch in [
        &b"d UID FETCH 6 (BODY[])\r\n"[..],
        b"d UID FETCH 6 (BODY.PEEK[]) (CHANGEDSINCE 4)\r\n",
    ] {
        let mut s3 = with_identity(&ctx);
        let up = upstream_text(&s3.on_client(fetch));
        assert!(up.starts_with("sp1x1 "), "{up}");
    }
}

/// Messages after the one asked for are decrypted ahead while the client goes on; a
/// FETCH of one whose view is still being built waits for it (no second download or
/// decryption), then goes up in the pipeline.
#[test]
fn a_fetch_of_a_message_being_decrypted_ahead_waits_for_its_view() {
    let ctx = gateway();
    let (five, six) = (
        sealed_to_mallory(&ctx, "secret five"),
        sealed_to_mallory(&ctx, "secret six"),
    );
    let structure = "(\"application\" \"pgp-encrypted\" NIL NIL NIL \"7bit\" 10 NIL NIL NIL NIL)(\"application\" \"octet-stream\" NIL NIL NIL \"7bit\" 500 NIL NIL NIL NIL) \"encrypted\" (\"protocol\" \"application/pgp-encrypted\" \"boundary\" \"b1\") NIL NIL NIL";
    let mut s = with_identity(&ctx);
    s.on_client(b"a1 UID FETCH 5 (BODY.PEEK[])\r\n");
    let mut classify = Vec::new();
    for (seq, uid) in [(1, 5), (2, 6)] {
        classify.extend_from_slice(format!("* {seq} FETCH (UID {uid} RFC822.SIZE 900 BODYSTRUCTURE ({structure}) BODY[HEADER.FIELDS (SEALPOST-DECRYPTED)] {{2}}\r\n\r\n)\r\n").as_bytes());
    }
    classify.extend_from_slice(b"sp1x1 OK done\r\n");
    let out = s.on_upstream(&classify);
    assert_eq!(
        upstream_text(&out),
        "sp1x2 UID FETCH 5:6 (UID BODY.PEEK[])\r\n"
    );
    let mut download = Vec::new();
    for (seq, uid, stored) in [(1, 5, &five), (2, 6, &six)] {
        download.extend_from_slice(
            format!("* {seq} FETCH (UID {uid} BODY[] {{{}}}\r\n", stored.len()).as_bytes(),
        );
        download.extend_from_slice(stored);
        download.extend_from_slice(b")\r\n");
    }
    download.extend_from_slice(b"sp1x2 OK done\r\n");
    let requests: Vec<DecryptRequest> = s
        .on_upstream(&download)
        .into_iter()
        .filter_map(|o| match o {
            Output::Decrypt(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(
        requests
            .iter()
            .map(|r| (r.uid, r.prefetch))
            .collect::<Vec<_>>(),
        [(5, false), (6, true)]
    );
    // The job needs only its own view; UID 6 is still being built when it ends.
    let r = &requests[0];
    let out = s.on_view(&r.job, 5, &r.raw, ctx.view(&r.identity, &r.raw, r.limit));
    assert_eq!(upstream_text(&out), "sp1x3 UID FETCH 5 (UID)\r\n");
    let out = s.on_upstream(b"* 1 FETCH (UID 5)\r\nsp1x3 OK done\r\n");
    assert!(client_text(&out).contains("secret five"));
    let out = s.on_client(b"a2 UID FETCH 6 (BODY.PEEK[])\r\na3 NOOP\r\n");
    assert!(
        upstream_text(&out).is_empty(),
        "waits for the view being built: {}",
        upstream_text(&out)
    );
    let r = &requests[1];
    let out = s.on_view(&r.job, 6, &r.raw, ctx.view(&r.identity, &r.raw, r.limit));
    assert_eq!(
        upstream_text(&out),
        "a2 UID FETCH 6 (UID)\r\na3 NOOP\r\n",
        "answered from the view, in the pipeline"
    );
    let out = s.on_upstream(b"* 2 FETCH (UID 6)\r\na2 OK done\r\na3 OK done\r\n");
    let text = client_text(&out);
    assert!(
        text.contains("secret six") && text.ends_with("a2 OK done\r\na3 OK done\r\n"),
        "{text}"
    );
}

#[test]
fn autocrypt_is_found_at_any_case_and_only_as_a_field_name() {
    assert!(mentions_autocrypt(
        b"X: 1\r\nAutocrypt: addr=a@b; keydata=x\r\n"
    ));
    assert!(mentions_autocrypt(b"AUTOCRYPT:x"));
    assert!(!mentions_autocrypt(b"autocrypt"));
    assert!(!mentions_autocrypt(b"utocrypt: x"));
    assert!(!mentions_autocrypt(b":autocrypt"));
}

/// A cached view of UID 6 in a fresh gateway session, with the job budget `budget`.
fn with_view_of_six(budget: usize) -> (Arc<ImapContext>, Session) {
    use super::super::cache::Entry;
    let mut ctx = gateway();
    Arc::get_mut(&mut ctx).unwrap().max_job_view_bytes = budget;
    let stored = sealed_to_mallory(&ctx, "secret six");
    let view = ctx.view("mallory@corp.example", &stored, 1 << 20);
    assert!(matches!(view.kind, crate::pgp::ViewKind::Decrypted(_)));
    ctx.cache.insert(inbox_key(6), Entry::View(Arc::new(view)));
    let s = with_identity(&ctx);
    (ctx, s)
}

/// Review of the pipelined answers: a STORE pipelined before a FETCH answered from
/// a view gets `* n FETCH (UID 6 FLAGS ...)` first. Which command a FETCH response
/// answers cannot be told (upstream may run pipelined commands in parallel), so the
/// first about UID 6 carries the view's content; every flag list upstream sent still
/// reaches the client, in order, and the content comes once.
#[test]
fn a_pipelined_answer_loses_none_of_upstreams_fetch_data() {
    let (_ctx, mut s) = with_view_of_six(1 << 20);
    let out = s.on_client(b"a UID STORE 6 +FLAGS (\\Flagged)\r\nb UID FETCH 6 (BODY.PEEK[])\r\n");
    assert_eq!(
        upstream_text(&out),
        "a UID STORE 6 +FLAGS (\\Flagged)\r\nb UID FETCH 6 (UID)\r\n"
    );
    let text = client_text(&s.on_upstream(
        b"* 2 FETCH (UID 6 FLAGS (\\Flagged))\r\na OK stored\r\n* 2 FETCH (UID 6 FLAGS (\\Flagged \\Seen))\r\nb OK done\r\n",
    ));
    // The flags before the literal, where servers put them (curl reads nothing after).
    assert!(
        text.starts_with("* 2 FETCH (UID 6 FLAGS (\\Flagged) BODY[] {"),
        "{text}"
    );
    assert_eq!(text.matches("secret six").count(), 1, "{text}");
    let flags: Vec<&str> = text
        .match_indices("FLAGS (")
        .map(|(at, _)| &text[at..at + text[at..].find(')').unwrap() + 1])
        .collect();
    assert_eq!(
        flags,
        ["FLAGS (\\Flagged)", "FLAGS (\\Flagged \\Seen)"],
        "{text}"
    );
    assert!(
        text.ends_with(
            ")\r\na OK stored\r\n* 2 FETCH (UID 6 FLAGS (\\Flagged \\Seen))\r\nb OK done\r\n"
        ),
        "{text}"
    );
}

/// Two pipelined FETCHes of the same message from its view: the first response about
/// it answers both, whichever command upstream completes first (it may run them in
/// parallel), so neither is left without its content.
#[test]
fn pipelined_answers_for_one_message_are_given_at_its_first_response() {
    for upstream in [
        &b"* 2 FETCH (UID 6)\r\na OK done\r\n* 2 FETCH (UID 6)\r\nb OK done\r\n"[..],
        b"* 2 FETCH (UID 6)\r\nb OK done\r\n* 2 FETCH (UID 6)\r\na OK done\r\n",
    ] {
        let (_ctx, mut s) = with_view_of_six(1 << 20);
        s.on_client(b"a UID FETCH 6 (BODY.PEEK[HEADER])\r\nb UID FETCH 6 (BODY.PEEK[TEXT])\r\n");
        let text = client_text(&s.on_upstream(upstream));
        let (first, rest) = text.split_once(" OK done\r\n").unwrap();
        assert!(
            first.contains("BODY[HEADER] {") && first.contains("BODY[TEXT] {"),
            "{first}"
        );
        assert_eq!(first.matches("secret six").count(), 1, "{first}");
        assert!(!rest.contains("secret six"), "{rest}");
    }
}

/// Another pipelined command's answer about the same message (here INTERNALDATE) may
/// be the response that gets the view's content: its items reach the client too.
#[test]
fn a_pipelined_answer_keeps_another_commands_items() {
    let (_ctx, mut s) = with_view_of_six(1 << 20);
    let out = s.on_client(b"a UID FETCH 6 (INTERNALDATE)\r\nb UID FETCH 6 (BODY.PEEK[])\r\n");
    assert_eq!(
        upstream_text(&out),
        "a UID FETCH 6 (INTERNALDATE)\r\nb UID FETCH 6 (UID)\r\n"
    );
    let text = client_text(&s.on_upstream(
        b"* 2 FETCH (UID 6 INTERNALDATE \"04-Dec-2026 10:00:00 +0000\")\r\na OK done\r\n* 2 FETCH (UID 6)\r\nb OK done\r\n",
    ));
    let (first, _) = text.split_once("a OK done").unwrap();
    assert!(
        first.contains("secret six")
            && first.contains("INTERNALDATE \"04-Dec-2026 10:00:00 +0000\""),
        "{first}"
    );
}

/// Review: a FETCH pipelined behind a SELECT was relayed as sent (nothing was selected
/// yet), so encrypted mail, and stored mail with a forged status field, reached the
/// client as stored. It waits for the SELECT's reply now.
#[test]
fn a_fetch_pipelined_behind_a_select_waits_for_it() {
    let ctx = gateway();
    let logged_in = || {
        let mut s = Session::new(ctx.clone(), true, true);
        s.on_upstream(b"* OK ready\r\n");
        s.on_client(b"m1 LOGIN mallory@corp.example pw\r\n");
        s.on_upstream(b"m1 OK logged in\r\n");
        s
    };
    let mut s = logged_in();
    let out = s.on_client(b"m2 SELECT INBOX\r\nm3 UID FETCH 5 (BODY.PEEK[])\r\n");
    assert_eq!(upstream_text(&out), "m2 SELECT INBOX\r\n");
    let out = s.on_upstream(b"* OK [UIDVALIDITY 3] ok\r\nm2 OK [READ-WRITE] selected\r\n");
    let up = upstream_text(&out);
    assert!(
        up.starts_with("sp1x1 UID FETCH 5:205 (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS"),
        "classified first: {up}"
    );
    // Items that do not depend on content need not wait.
    let mut s = logged_in();
    let out = s.on_client(b"m2 SELECT INBOX\r\nm3 UID FETCH 1:* (UID FLAGS)\r\n");
    assert_eq!(
        upstream_text(&out),
        "m2 SELECT INBOX\r\nm3 UID FETCH 1:* (UID FLAGS)\r\n"
    );
}

/// What pipelined answers in flight expand to stays within one job's view budget;
/// a FETCH beyond it waits for the others.
#[test]
fn pipelined_answers_in_flight_stay_within_the_view_budget() {
    let (ctx, _) = with_view_of_six(1 << 20);
    let size = match ctx.cache.get(&inbox_key(6)) {
        Some(super::super::cache::Entry::View(v)) => v.bytes.len(),
        _ => unreachable!(),
    };
    let (_ctx, mut s) = with_view_of_six(2 * size);
    let out = s.on_client(
        b"a UID FETCH 6 (BODY.PEEK[])\r\nb UID FETCH 6 (BODY.PEEK[])\r\nc UID FETCH 6 (BODY.PEEK[])\r\n",
    );
    assert_eq!(
        upstream_text(&out),
        "a UID FETCH 6 (UID)\r\nb UID FETCH 6 (UID)\r\n",
        "the third waits"
    );
    let out =
        s.on_upstream(b"* 2 FETCH (UID 6)\r\na OK done\r\n* 2 FETCH (UID 6)\r\nb OK done\r\n");
    // Both answered at the first response about UID 6, with one copy of the content.
    assert_eq!(client_text(&out).matches("secret six").count(), 1);
    assert_eq!(
        upstream_text(&out),
        "c UID FETCH 6 (UID)\r\n",
        "then the third"
    );
}

/// A message decrypted ahead that turns out undecryptable (or plain) is remembered
/// like one the client asked for: later jobs do not download it ahead again. A spent
/// budget is no verdict.
#[test]
fn what_is_decrypted_ahead_is_remembered_whatever_its_verdict() {
    use super::super::cache::Entry;
    use crate::pgp::{View, ViewKind};
    let ctx = gateway();
    let selected = super::super::fetch::Selected {
        account: "test".into(),
        identity: "mallory@corp.example".into(),
        mailbox: "INBOX".into(),
        uidvalidity: 3,
        read_only: false,
        junk: false,
    };
    let raw = b"Subject: x\r\nContent-Type: multipart/encrypted; boundary=b\r\n\r\n--b--\r\n";
    let view = |kind| View::new(raw.to_vec(), kind, Vec::new());
    super::super::fetch::store_prefetched(
        &ctx,
        &selected,
        5,
        raw,
        view(ViewKind::Undecryptable("no key".into())),
    );
    assert!(matches!(ctx.cache.get(&inbox_key(5)), Some(Entry::Plain)));
    super::super::fetch::store_prefetched(
        &ctx,
        &selected,
        6,
        raw,
        view(ViewKind::TooLarge { limit: 10 }),
    );
    // Too large to build ahead: remembered as encrypted and too large to take along.
    assert!(matches!(
        ctx.cache.get(&inbox_key(6)),
        Some(Entry::Special { size: u32::MAX })
    ));
}

/// Should building a view ever panic, the FETCH waiting for it still gets the message
/// as stored (a view always comes back; the session does not hang).
#[test]
fn a_view_that_fails_to_build_comes_back_as_stored() {
    let raw = b"Sealpost-Decrypted: forged\r\nSubject: x\r\n\r\nbody\r\n";
    let view = super::super::fetch::view_or_stand_in(raw, || panic!("a defect"));
    assert!(matches!(view.kind, crate::pgp::ViewKind::Undecryptable(_)));
    assert_eq!(view.bytes, b"Subject: x\r\n\r\nbody\r\n");
}

/// Each job in a mailbox classifies twice as far ahead as the one before while the
/// client reads on (up to a bound); a client that goes back starts small again.
#[test]
fn the_classification_window_grows_while_the_client_reads_on() {
    let ctx = gateway();
    let mut s = with_identity(&ctx);
    let mut windows = Vec::new();
    for (job, uid) in (1..).zip([10, 20, 30, 40, 50, 60, 5, 6]) {
        let up = upstream_text(
            &s.on_client(format!("a{job} UID FETCH {uid} (BODY.PEEK[])\r\n").as_bytes()),
        );
        let prefix = format!("sp{job}x1 UID FETCH {uid}:");
        let rest = up
            .strip_prefix(prefix.as_str())
            .unwrap_or_else(|| panic!("{up}"));
        let end: u32 = rest.split(' ').next().unwrap().parse().unwrap();
        windows.push(end - uid);
        // Nothing there: each step's reply ends it, and the client gets its own.
        let mut out = s.on_upstream(format!("sp{job}x1 OK done\r\n").as_bytes());
        while let Some(tag) = upstream_text(&out)
            .split(' ')
            .next()
            .filter(|t| !t.is_empty())
        {
            let tag = tag.to_string();
            out = s.on_upstream(format!("{tag} OK done\r\n").as_bytes());
        }
        assert!(
            client_text(&out).contains(&format!("a{job} OK")),
            "{}",
            client_text(&out)
        );
    }
    assert_eq!(windows, [200, 400, 800, 1600, 1600, 1600, 200, 400]);
}

/// Review: a message carrying a (forged) status field is shown only through its view,
/// which removes the field. One too large to download for a view was relayed as
/// stored, field and all. Such a message is not shown now: the FETCH answers the others
/// and ends with `NO [LIMIT]`. Encrypted mail over the limit is still shown as stored.
#[test]
fn a_forged_status_field_too_large_for_a_view_is_never_relayed() {
    let ctx = gateway(); // max_message_size: 1 MiB, held up to 2 MiB
    let big = 3usize << 20;
    let classify = |s: &mut Session, header: &str, size: usize| {
        let up = upstream_text(&s.on_client(b"a1 UID FETCH 5 (UID BODY.PEEK[])\r\n"));
        assert!(up.starts_with("sp1x1 UID FETCH 5:205 "), "{up}");
        let fields = format!("{header}\r\n\r\n");
        let response = format!(
            "* 1 FETCH (UID 5 RFC822.SIZE {size} BODY[HEADER.FIELDS (CONTENT-TYPE SEALPOST-DECRYPTED)] {{{}}}\r\n{fields})\r\nsp1x1 OK done\r\n",
            fields.len()
        );
        s.on_upstream(response.as_bytes())
    };
    // Its stored size says so: never downloaded, never relayed.
    let mut s = with_identity(&ctx);
    let out = classify(&mut s, "Sealpost-Decrypted: yes; signature=good", big);
    assert_eq!(
        upstream_text(&out),
        "",
        "nothing downloaded, nothing relayed"
    );
    let text = client_text(&out);
    assert!(
        text.starts_with("a1 NO [LIMIT] Not shown: UID 5 "),
        "{text}"
    );
    // Remembered: the next FETCH of it says the same at once.
    let out = s.on_client(b"a2 UID FETCH 5 (BODY.PEEK[HEADER])\r\n");
    assert!(
        client_text(&out).starts_with("a2 NO [LIMIT]"),
        "{}",
        client_text(&out)
    );
    assert_eq!(upstream_text(&out), "");

    // Its stored size lied: the download is too large to hold, and not relayed either.
    let ctx = gateway();
    let mut s = with_identity(&ctx);
    let out = classify(&mut s, "Sealpost-Decrypted: yes; signature=good", 900);
    assert_eq!(
        upstream_text(&out),
        "sp1x2 UID FETCH 5 (UID BODY.PEEK[])\r\n"
    );
    let forged = "Sealpost-Decrypted: yes; signature=good\r\n\r\n".to_string() + &"x".repeat(big);
    let mut download = format!("* 1 FETCH (UID 5 BODY[] {{{}}}\r\n", forged.len()).into_bytes();
    download.extend_from_slice(forged.as_bytes());
    download.extend_from_slice(b")\r\nsp1x2 OK done\r\n");
    let out = feed_upstream(&mut s, &download, 65536);
    assert_eq!(
        upstream_text(&out),
        "",
        "the client's FETCH does not go up as stored"
    );
    let text = client_text(&out);
    assert!(
        text.starts_with("a1 NO [LIMIT] Not shown: UID 5 "),
        "{text}"
    );
    assert!(!text.contains("Sealpost-Decrypted"));

    // Encrypted mail over the limit, with no status field: shown as stored, without
    // downloading it for a view first.
    let ctx = gateway();
    let mut s = with_identity(&ctx);
    let out = classify(
        &mut s,
        "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b",
        big,
    );
    assert_eq!(
        upstream_text(&out),
        "sp1x2 UID FETCH 5 (UID BODY.PEEK[])\r\n"
    );
    let out = s.on_upstream(b"* 1 FETCH (UID 5 BODY[] {4}\r\nabcd)\r\nsp1x2 OK done\r\n");
    assert_eq!(
        client_text(&out),
        "* 1 FETCH (UID 5 BODY[] {4}\r\nabcd)\r\na1 OK Fetch completed (sealpost)\r\n"
    );
}

/// A gateway context whose search index is filled in the background.
fn filling_gateway() -> Arc<ImapContext> {
    let mut c = gateway();
    let dir = tempfile::tempdir().unwrap();
    Arc::get_mut(&mut c).unwrap().search =
        Arc::new(super::super::search_state::SearchState::with_index(
            dir.path().to_path_buf(),
            1 << 20,
            true,
        ));
    c
}

fn fills(outs: &[Output]) -> Vec<&fill::FillRequest> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Background(r) => Some(r),
            _ => None,
        })
        .collect()
}

/// A SELECT by a login with an identity asks the driver to fill that mailbox's index,
/// with the credential the login used; nothing else does, and the credential is never
/// printed.
#[test]
fn a_select_starts_the_background_fill_with_the_logins_credential() {
    let select = |s: &mut Session| {
        s.on_client(b"m2 SELECT Archive\r\n");
        s.on_upstream(b"* OK [UIDVALIDITY 7] ok\r\nm2 OK [READ-WRITE] selected\r\n")
    };
    // LOGIN.
    let mut s = Session::new(filling_gateway(), true, true);
    s.on_upstream(b"* OK ready\r\n");
    s.on_client(b"m1 LOGIN mallory@corp.example \"secret pw\"\r\n");
    assert!(fills(&s.on_upstream(b"m1 OK logged in\r\n")).is_empty());
    let out = select(&mut s);
    let f = fills(&out);
    assert_eq!(f.len(), 1, "{out:?}");
    assert_eq!(f[0].identity, "mallory@corp.example");
    assert_eq!(f[0].mailbox, "Archive");
    assert_eq!(
        *f[0].credential,
        fill::Credential::login(b"mallory@corp.example", b"secret pw")
    );
    assert!(!format!("{out:?}").contains("secret"), "{out:?}");
    // AUTHENTICATE PLAIN, with the response after `+`.
    let mut s = Session::new(filling_gateway(), true, true);
    s.on_upstream(b"* OK ready\r\n");
    s.on_client(b"m1 AUTHENTICATE PLAIN\r\n");
    s.on_upstream(b"+ \r\n");
    // "\0mallory@corp.example\0pw"
    s.on_client(b"AG1hbGxvcnlAY29ycC5leGFtcGxlAHB3\r\n");
    s.on_upstream(b"m1 OK logged in\r\n");
    let out = select(&mut s);
    assert_eq!(
        *fills(&out)[0].credential,
        fill::Credential::sasl("PLAIN", b"\0mallory@corp.example\0pw").unwrap()
    );
    // A failed login, a login without an identity of this account, a challenge
    // mechanism, or filling turned off: no fill.
    let cases: [(&[u8], &[u8], Arc<ImapContext>); 4] = [
        (
            b"m1 LOGIN mallory@corp.example pw\r\n",
            b"m1 NO wrong\r\n",
            filling_gateway(),
        ),
        (
            b"m1 LOGIN eve@elsewhere.example pw\r\n",
            b"m1 OK logged in\r\n",
            filling_gateway(),
        ),
        (
            b"m1 AUTHENTICATE CRAM-MD5\r\n",
            b"+ PDEyMz4=\r\n",
            filling_gateway(),
        ),
        (
            b"m1 LOGIN mallory@corp.example pw\r\n",
            b"m1 OK logged in\r\n",
            gateway(),
        ),
    ];
    for (login, reply, ctx) in cases {
        let mut s = Session::new(ctx, true, true);
        s.on_upstream(b"* OK ready\r\n");
        s.on_client(login);
        s.on_upstream(reply);
        if login.starts_with(b"m1 AUTHENTICATE") {
            s.on_client(b"bWFsbG9yeUBjb3JwLmV4YW1wbGUgZDQxZA==\r\n");
            s.on_upstream(b"m1 OK logged in\r\n");
        }
        assert!(fills(&select(&mut s)).is_empty(), "{login:?}");
    }
}

/// What is in flight is counted by kind whatever the order of coming and going: a tag
/// reused (refused by the session, but counted right here too), one removed twice.
#[test]
fn commands_in_flight_are_counted_by_kind() {
    let mut f = InFlight::default();
    let select = || Pending::Select {
        mailbox: "INBOX".into(),
        read_only: false,
    };
    f.insert("a".into(), select());
    f.insert("b".into(), Pending::Discover { special_use: true });
    f.insert("c".into(), Pending::Relayed);
    assert!(f.selecting() && f.discovering());
    f.insert("a".into(), Pending::Relayed);
    assert!(!f.selecting(), "a SELECT replaced is no longer in flight");
    f.insert("c".into(), select());
    assert!(f.selecting());
    assert!(f.remove("c").is_some());
    assert!(f.remove("c").is_none());
    assert!(!f.selecting());
    f.remove("b");
    assert!(!f.discovering());
    f.remove("a");
    assert!(f.is_empty());
}
