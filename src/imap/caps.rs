//! Capability filtering.
//!
//! sealpost passes the provider's capabilities through, minus those whose promises it
//! cannot keep through the decrypted view (a client that asked for BINARY or PREVIEW
//! of an encrypted message would get ciphertext) or that are per hop (COMPRESS,
//! STARTTLS). The filter works on the raw line so every other byte stays as sent.

/// Capabilities removed from everything forwarded (compared case-insensitively; a
/// trailing `=` matches any value).
const REMOVED: &[&str] = &[
    "STARTTLS",
    "LOGINDISABLED",
    "COMPRESS=",
    "BINARY",
    "CATENATE",
    "URLAUTH",
    "URLAUTH=",
    "PREVIEW",
    "PREVIEW=",
    "SNIPPET=",
    // SORT itself is answered through the view (imap::search); SORT=DISPLAY is not.
    "SORT=DISPLAY",
    "ESORT",
    "THREAD=",
    "CONTEXT=",
    "SEARCH=",
    // `$` (RFC 5182) in FETCH and SEARCH is not parsed by the proxy.
    "SEARCHRES",
    "FUZZY",
    "NOTIFY",
    "UTF8=",
    "IMAP4REV2",
    "OBJECTID",
    "SAVEDATE",
    // Gmail's FETCH items are not parsed by the proxy, so such FETCHes would bypass the
    // decrypted view.
    "X-GM-EXT-1",
];

fn removed(cap: &str) -> bool {
    let up = cap.to_ascii_uppercase();
    REMOVED.iter().any(|r| {
        if let Some(prefix) = r.strip_suffix('=') {
            up == prefix || up.starts_with(r)
        } else {
            up == *r
        }
    })
}

use imap_types::response::{Bye, Code, Data, Response, Status, StatusBody, Tagged};

/// What the client connection adds to the list.
#[derive(Debug, Clone, Copy)]
pub struct Local {
    /// Offer STARTTLS (client link is not TLS yet).
    pub starttls: bool,
    /// Plaintext login is not allowed yet (RFC 3501 §6.2.3).
    pub login_disabled: bool,
}

/// Filters a list of capability atoms.
pub fn filter_list(caps: &[&str], local: Local) -> Vec<String> {
    let mut out: Vec<String> = caps
        .iter()
        .filter(|c| !c.is_empty() && !removed(c))
        .map(|c| c.to_string())
        .collect();
    if local.starttls {
        out.push("STARTTLS".into());
    }
    if local.login_disabled {
        out.push("LOGINDISABLED".into());
        // Without TLS no SASL mechanism may be used either.
        out.retain(|c| !c.to_ascii_uppercase().starts_with("AUTH="));
    }
    out
}

/// Rewrites a decoded server response that carries capabilities: an untagged
/// `CAPABILITY` response, or a status response with a `[CAPABILITY ...]` code. Every
/// other response comes back byte for byte (a Subject that reads `[CAPABILITY ...]`
/// inside FETCH data is data, not a capability list).
pub fn filter_response(line: &[u8], response: &Response<'_>, local: Local) -> Vec<u8> {
    match response {
        Response::Data(Data::Capability(_)) => {
            // The atoms as sent (imap-codec normalises their case).
            let text = String::from_utf8_lossy(line);
            let body = text.get("* CAPABILITY ".len()..).unwrap_or("");
            let caps: Vec<&str> = body.trim_end_matches(['\r', '\n']).split(' ').collect();
            format!("* CAPABILITY {}\r\n", filter_list(&caps, local).join(" ")).into_bytes()
        }
        Response::Status(
            Status::Untagged(StatusBody {
                code: Some(Code::Capability(_)),
                ..
            })
            | Status::Tagged(Tagged {
                body:
                    StatusBody {
                        code: Some(Code::Capability(_)),
                        ..
                    },
                ..
            })
            | Status::Bye(Bye {
                code: Some(Code::Capability(_)),
                ..
            }),
        ) => filter_code(line, local),
        _ => line.to_vec(),
    }
}

/// Filters the capability list of the response code of a status line already decoded
/// as one (`tag SP kind SP "[CAPABILITY" SP list "]" SP text`, RFC 3501 §7.1); the
/// rest of the line is kept as sent.
pub fn filter_code(line: &[u8], local: Local) -> Vec<u8> {
    let Some(open) = code_start(line) else {
        return line.to_vec();
    };
    let Some(close) = line[open..]
        .iter()
        .position(|&b| b == b']')
        .map(|p| open + p)
    else {
        return line.to_vec();
    };
    let inner = String::from_utf8_lossy(&line[open + 1..close]);
    let Some(list) = inner.get("CAPABILITY ".len()..) else {
        return line.to_vec();
    };
    let refs: Vec<&str> = list.split(' ').collect();
    let mut out = line[..open + 1].to_vec();
    out.extend_from_slice(b"CAPABILITY ");
    out.extend_from_slice(filter_list(&refs, local).join(" ").as_bytes());
    out.extend_from_slice(&line[close..]);
    out
}

/// Where the `[` of a status line's response code is: after the tag (or `*`) and the
/// status word.
fn code_start(line: &[u8]) -> Option<usize> {
    let tag_end = line.iter().position(|&b| b == b' ')?;
    let kind_end = tag_end + 1 + line[tag_end + 1..].iter().position(|&b| b == b' ')?;
    (line.get(kind_end + 1) == Some(&b'[')).then_some(kind_end + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: Local = Local {
        starttls: false,
        login_disabled: false,
    };

    fn filter_line(line: &[u8], local: Local) -> Vec<u8> {
        use imap_codec::decode::Decoder;
        match imap_codec::ResponseCodec::default().decode(line) {
            Ok((_, r)) => filter_response(line, &r, local),
            Err(_) => line.to_vec(),
        }
    }

    #[test]
    fn greeting_code_is_filtered_and_the_rest_kept() {
        let line = b"* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ STARTTLS AUTH=PLAIN COMPRESS=DEFLATE BINARY IDLE] Dovecot ready.\r\n";
        let out = filter_line(line, NONE);
        assert_eq!(
            out,
            b"* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ AUTH=PLAIN IDLE] Dovecot ready.\r\n"
        );
        let out = filter_line(
            line,
            Local {
                starttls: true,
                login_disabled: true,
            },
        );
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("STARTTLS LOGINDISABLED]"), "{s}");
        assert!(!s.contains("AUTH=PLAIN"), "{s}");
    }

    #[test]
    fn untagged_capability_and_other_lines() {
        let out = filter_line(
            b"* CAPABILITY IMAP4rev1 SORT SORT=DISPLAY THREAD=REFS ESORT UIDPLUS\r\n",
            NONE,
        );
        assert_eq!(out, b"* CAPABILITY IMAP4rev1 SORT UIDPLUS\r\n");
        let l = b"a1 OK [CAPABILITY IMAP4rev1 MOVE PREVIEW=FUZZY] Logged in\r\n";
        assert_eq!(
            filter_line(l, NONE),
            b"a1 OK [CAPABILITY IMAP4rev1 MOVE] Logged in\r\n"
        );
        let other = b"* 3 FETCH (FLAGS (\\Seen))\r\n";
        assert_eq!(filter_line(other, NONE), other.to_vec());
    }

    /// Defect: a Subject reading `[CAPABILITY ...]` in a relayed FETCH was rewritten.
    #[test]
    fn capability_text_inside_data_is_left_alone() {
        let fetch = b"* 4 FETCH (UID 9 ENVELOPE (NIL \"Re: [CAPABILITY SORT BINARY] who broke it\" NIL NIL NIL NIL NIL NIL NIL NIL))\r\n";
        assert_eq!(filter_line(fetch, NONE), fetch.to_vec());
        let text = b"a1 OK done [CAPABILITY SORT]\r\n";
        assert_eq!(filter_line(text, NONE), text.to_vec());
        let list = b"* LIST () \"/\" \"[CAPABILITY SORT]\"\r\n";
        assert_eq!(filter_line(list, NONE), list.to_vec());
    }
}
