//! Unit tests of SEARCH through encryption, fed as bytes (no sockets): the job's
//! upstream commands, the rewritten command, and what the client gets.

use super::tests::{client_text, gateway, upstream_text, with_identity};
use super::*;

/// An encrypted message to mallory whose protected Subject is `subject`.
fn sealed_to_mallory(ctx: &ImapContext, subject: &str, body: &str) -> Vec<u8> {
    let id = ctx.identities[0].clone();
    let raw = format!(
        "From: bob@example.org\r\nTo: mallory@corp.example\r\nSubject: {subject}\r\nDate: Tue, 01 Dec 2026 09:00:00 +0000\r\n\r\n{body}\r\n"
    );
    crate::pgp::stored::seal(raw.as_bytes(), &id.cert, None, "b1").unwrap()
}

fn fetch_response(seq: u32, uid: u32, raw: &[u8]) -> Vec<u8> {
    let mut out = format!("* {seq} FETCH (UID {uid} BODY[] {{{}}}\r\n", raw.len()).into_bytes();
    out.extend_from_slice(raw);
    out.extend_from_slice(b")\r\n");
    out
}

/// Runs every view the outputs ask for and feeds it back; returns what came out.
fn build_views(s: &mut Session, outs: Vec<Output>) -> Vec<Output> {
    let mut all = Vec::new();
    for o in outs {
        match o {
            Output::Decrypt(r) => {
                let view = s.ctx.view(&r.identity, &r.raw, r.limit);
                all.extend(s.on_view(&r.job, r.uid, &r.raw, view));
            }
            other => all.push(other),
        }
    }
    all
}

#[test]
fn a_search_reading_no_content_is_relayed_as_sent() {
    let ctx = gateway();
    let mut s = with_identity(&ctx);
    let out = s.on_client(b"a1 UID SEARCH UNSEEN FLAGGED\r\na2 NOOP\r\n");
    assert_eq!(
        upstream_text(&out),
        "a1 UID SEARCH UNSEEN FLAGGED\r\na2 NOOP\r\n"
    );
}

#[test]
fn a_content_search_is_answered_from_the_views() {
    let ctx = gateway();
    let mut s = with_identity(&ctx);
    let secret = sealed_to_mallory(&ctx, "Offer for Porto", "the warehouse price");
    let out =
        s.on_client(b"a1 UID SEARCH RETURN (MIN COUNT) UNDELETED SUBJECT porto\r\na2 NOOP\r\n");
    assert_eq!(upstream_text(&out), "sp1s1 UID SEARCH UID 1:*\r\n");
    // Client input waits for the job.
    assert!(!upstream_text(&out).contains("a2"));
    let out = s.on_upstream(b"* SEARCH 4 5 7\r\n* 3 EXPUNGE\r\nsp1s1 OK done\r\n");
    // What is not the job's reaches the client.
    assert_eq!(client_text(&out), "* 3 EXPUNGE\r\n");
    assert_eq!(
        upstream_text(&out),
        "sp1s2 UID SEARCH UID 4:5,7 OR OR HEADER Content-Type \"multipart/encrypted\" HEADER Sealpost-Decrypted \"\" BODY \"-----BEGIN PGP MESSAGE-----\"\r\n"
    );
    let out = s.on_upstream(b"* SEARCH 5\r\nsp1s2 OK done\r\n");
    assert_eq!(
        upstream_text(&out),
        "sp1s3 UID FETCH 5 (UID BODY.PEEK[])\r\n"
    );
    let mut download = fetch_response(2, 5, &secret);
    download.extend_from_slice(b"sp1s3 OK done\r\n");
    let out = s.on_upstream(&download);
    let out = build_views(&mut s, out);
    // Upstream judges SUBJECT for the others, the view for UID 5 (it matched), and the
    // rest of the criteria and the RETURN options for all.
    assert_eq!(
        upstream_text(&out),
        "a1 UID SEARCH RETURN (MIN COUNT) UNDELETED OR (NOT UID 5 SUBJECT porto) UID 5\r\n"
    );
    let out = s.on_upstream(b"* ESEARCH (TAG \"a1\") UID MIN 5 COUNT 1\r\na1 OK done\r\n");
    assert_eq!(
        client_text(&out),
        "* ESEARCH (TAG \"a1\") UID MIN 5 COUNT 1\r\na1 OK done\r\n"
    );
    // Then the held command goes on.
    assert_eq!(upstream_text(&out), "a2 NOOP\r\n");

    // The next search knows the mailbox and the view: one question for new mail, then
    // the answer; a view that does not match is left out.
    s.on_upstream(b"a2 OK done\r\n");
    let out = s.on_client(b"a3 SEARCH BODY lisbon\r\n");
    assert_eq!(upstream_text(&out), "sp2s1 UID SEARCH UID 8:*\r\n");
    let out = s.on_upstream(b"* SEARCH 7\r\nsp2s1 OK done\r\n");
    assert_eq!(upstream_text(&out), "a3 SEARCH (NOT UID 5 BODY lisbon)\r\n");
}

#[test]
fn a_non_ascii_needle_goes_up_as_a_synchronizing_literal() {
    let ctx = gateway();
    let mut s = with_identity(&ctx);
    let secret = sealed_to_mallory(&ctx, "Grüße", "aus München");
    // The client's non-synchronizing literal: held whole, then decoded.
    let out = s.on_client("a1 UID SEARCH CHARSET UTF-8 BODY {8+}\r\nMünchen\r\n".as_bytes());
    assert_eq!(upstream_text(&out), "sp1s1 UID SEARCH UID 1:*\r\n");
    s.on_upstream(b"* SEARCH 1\r\nsp1s1 OK done\r\n");
    let out = s.on_upstream(b"* SEARCH 1\r\nsp1s2 OK done\r\n");
    assert_eq!(
        upstream_text(&out),
        "sp1s3 UID FETCH 1 (UID BODY.PEEK[])\r\n"
    );
    let mut download = fetch_response(1, 1, &secret);
    download.extend_from_slice(b"sp1s3 OK done\r\n");
    let out = s.on_upstream(&download);
    let out = build_views(&mut s, out);
    // Upstream may lack LITERAL+: the literal waits for its `+`.
    assert_eq!(
        upstream_text(&out),
        "a1 UID SEARCH CHARSET UTF-8 OR (NOT UID 1 BODY {8}\r\n"
    );
    let out = s.on_upstream(b"+ go ahead\r\n");
    assert_eq!(upstream_text(&out), "München) UID 1\r\n");
    assert_eq!(client_text(&out), "");
    let out = s.on_upstream(b"* SEARCH 1\r\na1 OK done\r\n");
    assert_eq!(client_text(&out), "* SEARCH 1\r\na1 OK done\r\n");
}

#[test]
fn a_failed_step_answers_the_client_and_the_session_goes_on() {
    let ctx = gateway();
    let mut s = with_identity(&ctx);
    s.on_client(b"a1 UID SEARCH TEXT x\r\n");
    let out = s.on_upstream(b"sp1s1 NO [SERVERBUG] try later\r\n");
    let text = client_text(&out);
    assert!(text.starts_with("a1 NO "), "{text}");
    assert!(text.contains("[SERVERBUG] try later"), "{text}");
    let out = s.on_client(b"a2 NOOP\r\n");
    assert_eq!(upstream_text(&out), "a2 NOOP\r\n");
}

#[test]
fn searches_sealpost_cannot_read_are_refused_not_relayed() {
    let ctx = gateway();
    let mut s = with_identity(&ctx);
    // Undecodable: what it reads cannot be told.
    let out = s.on_client(b"a1 UID SEARCH X-GM-RAW \"has:attachment\"\r\n");
    assert!(
        client_text(&out).starts_with("a1 BAD "),
        "{}",
        client_text(&out)
    );
    assert_eq!(upstream_text(&out), "");
    // A charset sealpost cannot convert from, when content is read.
    let out = s.on_client(b"a2 SEARCH CHARSET X-UNKNOWN BODY x\r\n");
    assert!(
        client_text(&out).starts_with("a2 NO [BADCHARSET"),
        "{}",
        client_text(&out)
    );
    // THREAD would group by what is stored.
    let out = s.on_client(b"a5 UID THREAD REFERENCES UTF-8 ALL\r\n");
    assert!(
        client_text(&out).starts_with("a5 BAD "),
        "{}",
        client_text(&out)
    );
    assert_eq!(upstream_text(&out), "");
    // Nothing selected: upstream answers (there is nothing to search).
    let mut s = Session::new(gateway(), true, true);
    s.on_upstream(b"* OK ready\r\n");
    s.on_client(b"m1 LOGIN mallory@corp.example pw\r\n");
    s.on_upstream(b"m1 OK logged in\r\n");
    let out = s.on_client(b"a3 SEARCH BODY x\r\n");
    assert_eq!(upstream_text(&out), "a3 SEARCH BODY x\r\n");
}

#[test]
fn search_waits_behind_a_select() {
    let ctx = gateway();
    let mut s = with_identity(&ctx);
    let out = s.on_client(b"a1 SELECT Archive\r\na2 UID SEARCH BODY x\r\n");
    assert_eq!(upstream_text(&out), "a1 SELECT Archive\r\n");
    let out = s.on_upstream(b"* OK [UIDVALIDITY 9] ok\r\na1 OK [READ-WRITE] selected\r\n");
    assert_eq!(upstream_text(&out), "sp1s1 UID SEARCH UID 1:*\r\n");
}

#[test]
fn a_sort_orders_encrypted_mail_by_its_view() {
    let ctx = gateway();
    let mut s = with_identity(&ctx);
    let secret = sealed_to_mallory(&ctx, "Alpha plans", "text");
    let out = s.on_client(b"a1 SORT (SUBJECT) UTF-8 ALL\r\n");
    assert_eq!(upstream_text(&out), "sp1s1 UID SEARCH UID 1:*\r\n");
    s.on_upstream(b"* SEARCH 1 2\r\nsp1s1 OK done\r\n");
    let out = s.on_upstream(b"* SEARCH 2\r\nsp1s2 OK done\r\n");
    assert_eq!(
        upstream_text(&out),
        "sp1s3 UID FETCH 2 (UID BODY.PEEK[])\r\n"
    );
    let mut download = fetch_response(2, 2, &secret);
    download.extend_from_slice(b"sp1s3 OK done\r\n");
    let out = s.on_upstream(&download);
    let out = build_views(&mut s, out);
    // The messages: sealpost's own UID SEARCH with the criteria and charset as sent (ALL
    // reads no content).
    assert_eq!(
        upstream_text(&out),
        "sp1s4 UID SEARCH CHARSET UTF-8 ALL\r\n"
    );
    let out = s.on_upstream(b"* SEARCH 1 2\r\n* 3 EXISTS\r\nsp1s4 OK done\r\n");
    // Unrelated responses still reach the client.
    assert_eq!(client_text(&out), "* 3 EXISTS\r\n");
    assert_eq!(
        upstream_text(&out),
        "sp1s5 UID FETCH 1:2 (UID INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (DATE SUBJECT FROM TO CC)])\r\n"
    );
    let plain_header = b"Subject: Zulu time\r\nDate: Mon, 30 Nov 2026 09:00:00 +0000\r\n\r\n";
    let stored_header = b"Subject: ...\r\nDate: Tue, 01 Dec 2026 09:00:00 +0000\r\n\r\n";
    let mut answer = Vec::new();
    for (seq, uid, header) in [(1, 1, &plain_header[..]), (2, 2, &stored_header[..])] {
        answer.extend_from_slice(
            format!(
                "* {seq} FETCH (UID {uid} INTERNALDATE \"01-Dec-2026 09:00:00 +0000\" RFC822.SIZE 500 BODY[HEADER.FIELDS (DATE SUBJECT FROM TO CC)] {{{}}}\r\n",
                header.len()
            )
            .as_bytes(),
        );
        answer.extend_from_slice(header);
        answer.extend_from_slice(b")\r\n");
    }
    // An unsolicited flag update is the client's, not a sort key.
    answer.extend_from_slice(b"* 2 FETCH (UID 2 FLAGS (\\Seen))\r\nsp1s5 OK done\r\n");
    let out = s.on_upstream(&answer);
    // "Alpha plans" (the view's Subject) before "Zulu time"; sequence numbers.
    assert_eq!(
        client_text(&out),
        "* 2 FETCH (UID 2 FLAGS (\\Seen))\r\n* SORT 2 1\r\na1 OK SORT completed\r\n"
    );
}
