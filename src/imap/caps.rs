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
    "SORT",
    "SORT=",
    "ESORT",
    "THREAD=",
    "CONTEXT=",
    "SEARCH=",
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

/// Rewrites a response line carrying capabilities: an untagged `CAPABILITY`
/// response or a `[CAPABILITY ...]` response code. Other lines come back unchanged.
pub fn filter_line(line: &[u8], local: Local) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(line) else {
        return line.to_vec();
    };
    let upper = text.to_ascii_uppercase();
    // Untagged CAPABILITY response: "* CAPABILITY a b c\r\n".
    if upper.starts_with("* CAPABILITY ") {
        let body = text["* CAPABILITY ".len()..].trim_end_matches(['\r', '\n']);
        let caps: Vec<&str> = body.split(' ').collect();
        let filtered = filter_list(&caps, local);
        return format!("* CAPABILITY {}\r\n", filtered.join(" ")).into_bytes();
    }
    // Response code: "... [CAPABILITY a b c] text".
    if let Some(start) = upper.find("[CAPABILITY ") {
        let from = start + "[CAPABILITY ".len();
        if let Some(end) = text[from..].find(']') {
            let caps: Vec<&str> = text[from..from + end].split(' ').collect();
            let filtered = filter_list(&caps, local);
            let mut out = String::with_capacity(text.len());
            out.push_str(&text[..from]);
            out.push_str(&filtered.join(" "));
            out.push_str(&text[from + end..]);
            return out.into_bytes();
        }
    }
    line.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: Local = Local {
        starttls: false,
        login_disabled: false,
    };

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
        let out = filter_line(b"* CAPABILITY IMAP4rev1 SORT THREAD=REFS UIDPLUS\r\n", NONE);
        assert_eq!(out, b"* CAPABILITY IMAP4rev1 UIDPLUS\r\n");
        let l = b"a1 OK [CAPABILITY IMAP4rev1 MOVE PREVIEW=FUZZY] Logged in\r\n";
        assert_eq!(
            filter_line(l, NONE),
            b"a1 OK [CAPABILITY IMAP4rev1 MOVE] Logged in\r\n"
        );
        let other = b"* 3 FETCH (FLAGS (\\Seen))\r\n";
        assert_eq!(filter_line(other, NONE), other.to_vec());
    }
}
