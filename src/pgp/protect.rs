//! Header protection (RFC 9788, and the `protected-headers="v1"` scheme it grew out of,
//! which Thunderbird, Enigmail, K-9 and Mailpile write): which header fields of a
//! decrypted view come from the encrypted payload, and which stay outside when sealpost
//! encrypts.
//!
//! Anyone can encrypt to the user (the key is public), so the payload's header proves
//! nothing by itself. What it may change is therefore narrow: only the user-facing fields
//! of RFC 9788 §1.1.1 are taken from it, the transit fields the provider and the relays
//! wrote (Received, Authentication-Results, X-Spam-*, …) always come from outside, and a
//! payload From that names someone other than the outer From is shown only when a good
//! signature by a key bound to that address covers it (see [`crate::trust`]).

use super::decrypt::SignatureStatus;
use crate::mime::{self, Field};
use mail_parser::MimeHeaders;

/// The fields RFC 9788 calls user-facing: the payload's copy is the one shown.
pub const USER_FACING: &[&str] = &[
    "Subject",
    "From",
    "To",
    "Cc",
    "Date",
    "Reply-To",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Followup-To",
];

/// Fields written in transit: whatever the payload says, the outer copy is shown.
const TRANSIT: &[&str] = &[
    "Received",
    "Return-Path",
    "Delivered-To",
    "Authentication-Results",
    "DKIM-Signature",
];
const TRANSIT_PREFIXES: &[&str] = &["ARC-", "X-Spam-", "List-"];

/// The Subject sealpost writes outside an encrypted message (RFC 9788 §4.2.1).
pub const OBSCURED_SUBJECT: &str = "[...]";

/// Fields that stay in the outer header of an encrypted message: what delivery,
/// threading and replies need before the message is opened. Every other field (Subject
/// obscured) travels only inside the encryption: `Thread-Topic`, `Keywords`, `Comments`,
/// `User-Agent` and the like repeat the content or say more than transport needs.
const KEPT_OUTSIDE: &[&str] = &[
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Return-Path",
    "Received",
    "Autocrypt",
    "Disposition-Notification-To",
    "Auto-Submitted",
    "Precedence",
];
const KEPT_OUTSIDE_PREFIXES: &[&str] = &["Resent-", "List-"];

fn named(f: &Field<'_>, names: &[&str], prefixes: &[&str]) -> bool {
    names.iter().any(|n| f.is(n))
        || prefixes
            .iter()
            .any(|p| f.name.len() >= p.len() && f.name[..p.len()].eq_ignore_ascii_case(p))
}

pub fn is_user_facing(f: &Field<'_>) -> bool {
    named(f, USER_FACING, &[])
}

pub fn is_transit(f: &Field<'_>) -> bool {
    named(f, TRANSIT, TRANSIT_PREFIXES)
}

/// Does this outer field stay visible when sealpost encrypts?
pub fn kept_outside(f: &Field<'_>) -> bool {
    named(f, KEPT_OUTSIDE, KEPT_OUTSIDE_PREFIXES)
}

pub fn is_content_field(f: &Field<'_>) -> bool {
    f.name.len() >= 8 && f.name[..8].eq_ignore_ascii_case("Content-")
}

/// The Content-Type parameters sealpost adds to a payload it protects: RFC 9788's, and
/// `protected-headers="v1"`, what Thunderbird, Enigmail and K-9 read to show the real
/// Subject.
pub const MARKERS: &[u8] = b"; hp=\"cipher\"; protected-headers=\"v1\"";

/// What of an outer field stays outside a protected message: the field itself when
/// transport needs it, the obscured Subject, or nothing.
pub fn outer_copy<'f>(f: &Field<'f>) -> Option<std::borrow::Cow<'f, [u8]>> {
    if f.is("Subject") {
        Some(
            format!("Subject: {OBSCURED_SUBJECT}\r\n")
                .into_bytes()
                .into(),
        )
    } else if kept_outside(f) {
        Some(f.raw.into())
    } else {
        None
    }
}

/// RFC 9788 §2.2: an `HP-Outer` field inside for each field of `outer`, so a reader
/// knows what the outside showed. Returns how many were written.
pub fn push_hp_outer(inner: &mut Vec<u8>, outer: &[u8]) -> usize {
    let fields = mime::fields(outer);
    for f in &fields {
        inner.extend_from_slice(b"HP-Outer: ");
        mime::push_line(inner, f.raw);
    }
    fields.len()
}

/// How the payload says its header fields are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// No marker: the payload's header carries only its MIME fields as far as the view
    /// is concerned.
    None,
    /// `protected-headers="v1"` (draft-autocrypt-lamps-protected-headers).
    LegacyV1,
    /// RFC 9788 `hp="cipher"` or `hp="clear"`.
    Rfc9788,
}

/// The scheme named by the payload's Content-Type field, read from its parsed parameters.
pub fn scheme_of(inner: &[Field<'_>]) -> Scheme {
    let Some(ct) = inner.iter().find(|f| f.is("Content-Type")) else {
        return Scheme::None;
    };
    let Some(parsed) = mail_parser::MessageParser::default().parse_headers(ct.raw) else {
        return Scheme::None;
    };
    let Some(ctype) = parsed.content_type() else {
        return Scheme::None;
    };
    let attr = |name: &str| {
        ctype
            .attributes()
            .into_iter()
            .flatten()
            .find(|a| a.name.eq_ignore_ascii_case(name))
            .map(|a| a.value.to_ascii_lowercase())
    };
    if matches!(attr("hp").as_deref(), Some("cipher" | "clear")) {
        Scheme::Rfc9788
    } else if attr("protected-headers").as_deref() == Some("v1") {
        Scheme::LegacyV1
    } else {
        Scheme::None
    }
}

/// The first mailbox address of the From field among `fields`, normalised.
pub fn from_address(fields: &[Field<'_>]) -> Option<String> {
    let f = fields.iter().find(|f| f.is("From"))?;
    let parsed = mail_parser::MessageParser::default().parse_headers(f.raw)?;
    let addr = parsed.from()?.first()?.address()?;
    Some(crate::keys::normalize_address(addr))
}

/// The header of a decrypted view (without its Content-* fields) and what the
/// signature proves about the From it shows.
pub struct Merged {
    /// Header fields, CRLF-terminated, in the outer header's order.
    pub header: Vec<u8>,
    /// The signature as checked against the From the header shows.
    pub signature: SignatureStatus,
    /// The payload named this From, which the view does not show: not proven.
    pub unproven_from: Option<String>,
}

/// Merges the outer header with the payload's, per the module rules.
pub fn merge(
    outer: &[Field<'_>],
    inner: &[Field<'_>],
    scheme: Scheme,
    signature: SignatureStatus,
) -> Merged {
    let outer_from = from_address(outer);
    let payload: Vec<&Field<'_>> = match scheme {
        Scheme::None => Vec::new(),
        _ => inner.iter().filter(|f| is_user_facing(f)).collect(),
    };
    // Only a single From field with a single mailbox can be taken from the payload: a
    // second field or mailbox would ride along unchecked.
    let single_from = {
        let froms: Vec<_> = inner.iter().filter(|f| f.is("From")).collect();
        froms.len() == 1
            && mail_parser::MessageParser::default()
                .parse_headers(froms[0].raw)
                .and_then(|m| m.from().map(|a| a.iter().count() == 1))
                .unwrap_or(false)
    };
    let payload_from = from_address(inner).filter(|_| scheme != Scheme::None);
    // Which From is shown: the payload's when it names the same sender, or one its
    // good signature proves; otherwise the outer one.
    let (take_payload_from, unproven_from) = match &payload_from {
        None => (false, None),
        Some(p) if !single_from => (false, Some(p.clone())),
        Some(p) if Some(p) == outer_from.as_ref() => (true, None),
        Some(p) => {
            let proven = matches!(&signature, SignatureStatus::Good { addresses, .. } if addresses.contains(p));
            if proven {
                (true, None)
            } else {
                (false, Some(p.clone()))
            }
        }
    };
    let shown_from = if take_payload_from {
        payload_from.clone()
    } else {
        outer_from.clone()
    };
    let from_payload = |f: &Field<'_>| !f.is("From") || take_payload_from;
    let replaces = |name: &str| {
        payload
            .iter()
            .any(|p| p.name.eq_ignore_ascii_case(name) && from_payload(p))
    };
    let mut header = Vec::new();
    let mut emitted: Vec<String> = Vec::new();
    for f in outer.iter().filter(|f| !is_content_field(f)) {
        if is_user_facing(f) && replaces(f.name) {
            let name = f.name.to_ascii_lowercase();
            if !emitted.contains(&name) {
                for p in payload.iter().filter(|p| p.is(f.name)) {
                    mime::push_line(&mut header, p.raw);
                }
                emitted.push(name);
            }
            continue;
        }
        // RFC 9788: with `hp`, the payload carries every user-facing field the sender
        // meant; an outer one it lacks (the obscured `[...]` Subject) is not shown.
        // The outer From stays whenever the payload's is not shown.
        let keeps_from = f.is("From") && !take_payload_from;
        let dropped = scheme == Scheme::Rfc9788 && is_user_facing(f) && !keeps_from;
        if !dropped {
            mime::push_line(&mut header, f.raw);
        }
    }
    for p in &payload {
        if from_payload(p) && !emitted.contains(&p.name.to_ascii_lowercase()) {
            mime::push_line(&mut header, p.raw);
        }
    }
    Merged {
        header,
        signature: signature.checked_against(shown_from.as_deref()),
        unproven_from,
    }
}

/// The `Autocrypt` and `Autocrypt-Gossip` fields of a payload header (Autocrypt 1.1
/// §2.7), which are not shown but may teach keys.
pub fn autocrypt_fields(inner: &[Field<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in inner
        .iter()
        .filter(|f| f.is("Autocrypt") || f.is("Autocrypt-Gossip"))
    {
        mime::push_line(&mut out, f.raw);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good(addrs: &[&str]) -> SignatureStatus {
        SignatureStatus::Good {
            fingerprint: "F00".into(),
            addresses: addrs.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn run(outer: &str, inner: &str, sig: SignatureStatus) -> (String, Merged) {
        let o = mime::fields(outer.as_bytes());
        let i = mime::fields(inner.as_bytes());
        let m = merge(&o, &i, scheme_of(&i), sig);
        (String::from_utf8(m.header.clone()).unwrap(), m)
    }

    const OUTER: &str = "Received: from mx\r\nAuthentication-Results: mx.example; dkim=fail\r\nFrom: CEO <ceo@corp.example>\r\nTo: a@corp.example\r\nSubject: [...]\r\nX-Spam-Flag: YES\r\n";

    #[test]
    fn without_a_marker_the_payload_changes_no_field_and_the_outer_from_is_checked() {
        let inner = "Content-Type: text/plain\r\nFrom: a@evil.example\r\nSubject: hi\r\nX-Spam-Flag: NO\r\n";
        let (h, m) = run(OUTER, inner, good(&["a@evil.example"]));
        assert!(h.contains("From: CEO <ceo@corp.example>\r\n"), "{h}");
        assert!(
            h.contains("Subject: [...]\r\n") && h.contains("X-Spam-Flag: YES"),
            "{h}"
        );
        assert!(matches!(m.signature, SignatureStatus::WrongSigner { .. }));
    }

    #[test]
    fn protected_fields_replace_only_user_facing_ones() {
        let inner = "Content-Type: text/plain; hp=\"cipher\"\r\nFrom: CEO <ceo@corp.example>\r\nSubject: Q3 plan\r\nAuthentication-Results: mx.example; dkim=pass\r\nReceived: forged\r\nX-Spam-Flag: NO\r\nAutocrypt: addr=ceo@corp.example; keydata=AAAA\r\nHP-Outer: Subject: [...]\r\n";
        let (h, m) = run(OUTER, inner, SignatureStatus::Unsigned);
        assert!(
            h.contains("Subject: Q3 plan\r\n") && !h.contains("[...]"),
            "{h}"
        );
        assert!(h.contains("dkim=fail") && !h.contains("dkim=pass"), "{h}");
        assert!(
            h.contains("X-Spam-Flag: YES") && !h.contains("X-Spam-Flag: NO"),
            "{h}"
        );
        assert!(
            !h.contains("forged") && !h.contains("Autocrypt") && !h.contains("HP-Outer"),
            "{h}"
        );
        assert_eq!(m.unproven_from, None);
        assert_eq!(h.matches("Subject:").count(), 1);
    }

    #[test]
    fn a_different_payload_from_needs_a_good_signature_bound_to_it() {
        let inner = "Content-Type: text/plain; protected-headers=\"v1\"\r\nFrom: Boss <boss@corp.example>\r\nSubject: pay this\r\n";
        let (h, m) = run(OUTER, inner, good(&["a@evil.example"]));
        assert!(
            h.contains("From: CEO <ceo@corp.example>\r\n") && !h.contains("boss@"),
            "{h}"
        );
        assert_eq!(m.unproven_from.as_deref(), Some("boss@corp.example"));
        assert!(matches!(m.signature, SignatureStatus::WrongSigner { .. }));
        let (h, m) = run(OUTER, inner, good(&["boss@corp.example"]));
        assert!(
            h.contains("From: Boss <boss@corp.example>\r\n") && !h.contains("ceo@"),
            "{h}"
        );
        assert!(matches!(m.signature, SignatureStatus::Good { .. }));
        assert_eq!(m.unproven_from, None);
    }

    #[test]
    fn legacy_v1_keeps_outer_fields_the_payload_lacks_rfc9788_does_not() {
        let outer = "From: b@x.example\r\nSubject: ...\r\nMessage-ID: <1@x>\r\n";
        let (h, _) = run(
            outer,
            "Content-Type: text/plain; protected-headers=v1\r\nSubject: real\r\n",
            SignatureStatus::Unsigned,
        );
        assert_eq!(
            h,
            "From: b@x.example\r\nSubject: real\r\nMessage-ID: <1@x>\r\n"
        );
        let (h, _) = run(
            outer,
            "Content-Type: text/plain; hp=cipher\r\nFrom: b@x.example\r\nSubject: real\r\n",
            SignatureStatus::Unsigned,
        );
        assert_eq!(h, "From: b@x.example\r\nSubject: real\r\n");
    }

    #[test]
    fn fields_kept_outside_an_encrypted_message() {
        let f = mime::fields(b"Thread-Topic: secret\r\nKeywords: secret\r\nUser-Agent: x\r\nList-Id: <l>\r\nResent-From: a\r\nTo: b\r\n");
        let kept: Vec<&str> = f
            .iter()
            .filter(|f| kept_outside(f))
            .map(|f| f.name)
            .collect();
        assert_eq!(kept, ["List-Id", "Resent-From", "To"]);
    }
}

#[cfg(test)]
mod review_tests {
    use super::*;

    fn good(addrs: &[&str]) -> SignatureStatus {
        SignatureStatus::Good {
            fingerprint: "F00".into(),
            addresses: addrs.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// A second payload From (field or mailbox) cannot ride along with a first one that
    /// names the outer sender (found by an attacking review).
    #[test]
    fn a_second_payload_from_is_not_shown_unproven() {
        let outer =
            mime::fields(b"From: a@evil.example\r\nTo: ceo@corp.example\r\nSubject: [...]\r\n");
        for inner in [
            &b"Content-Type: text/plain; hp=\"cipher\"\r\nFrom: a@evil.example\r\nFrom: CEO <ceo@corp.example>\r\nSubject: pay this\r\n"[..],
            b"Content-Type: text/plain; hp=\"cipher\"\r\nFrom: a@evil.example, CEO <ceo@corp.example>\r\nSubject: pay this\r\n",
        ] {
            let inner = mime::fields(inner);
            let m = merge(&outer, &inner, scheme_of(&inner), good(&["a@evil.example"]));
            let h = String::from_utf8(m.header).unwrap();
            assert!(!h.contains("CEO"), "unproven From shown: {h}");
            assert!(h.contains("From: a@evil.example\r\n"), "{h}");
        }
    }
}
