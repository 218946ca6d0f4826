//! Reading `Authentication-Results` (RFC 8601) to tell whether the account's own
//! provider authenticated a message's From domain.
//!
//! RFC 8601 §5: a receiving MTA removes (or renames) fields carrying its own
//! authserv-id from incoming mail, so only a field with the provider's authserv-id is
//! the provider's verdict; any other one was written by whoever sent the message.

/// One `method=result` statement with its `ptype.property=value` pairs (RFC 8601 §2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResInfo {
    pub method: String,
    pub result: String,
    pub props: Vec<(String, String)>,
}

/// A parsed field value: the authserv-id and its statements (`none` gives none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthResults {
    pub authserv_id: String,
    pub results: Vec<ResInfo>,
}

/// Removes CFWS comments (RFC 5322 §3.2.2, nested, with quoted-pairs) outside quoted
/// strings, and unfolds.
fn strip_comments(value: &str) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    let mut quoted = false;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let next = chars.next();
                if depth == 0 {
                    out.push(c);
                    if let Some(n) = next {
                        out.push(n);
                    }
                }
            }
            '"' if depth == 0 => {
                quoted = !quoted;
                out.push(c);
            }
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => {
                depth -= 1;
                out.push(' ');
            }
            '\r' | '\n' => out.push(' '),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Splits at `sep` outside quoted strings.
fn split_outside_quotes(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' && quoted {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(String::new());
            continue;
        }
        parts.last_mut().expect("never empty").push(c);
    }
    parts
}

/// A value as written, or the content of a quoted string.
fn unquote(v: &str) -> String {
    let v = v.trim();
    match v.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => v.to_string(),
    }
}

/// Parses the value of one `Authentication-Results` field; `None` when it is not one.
pub fn parse(value: &str) -> Option<AuthResults> {
    let clean = strip_comments(value);
    let mut parts = split_outside_quotes(&clean, ';').into_iter();
    let head = parts.next()?;
    // authserv-id [ CFWS authres-version ]
    let authserv_id = unquote(head.split_whitespace().next()?);
    if authserv_id.is_empty() {
        return None;
    }
    let mut results = Vec::new();
    for part in parts {
        let words = split_outside_quotes(part.trim(), ' ');
        let mut words = words.iter().map(|w| w.trim()).filter(|w| !w.is_empty());
        let Some(first) = words.next() else { continue };
        if first.eq_ignore_ascii_case("none") {
            continue;
        }
        let Some((method, result)) = first.split_once('=') else {
            continue;
        };
        // method [ "/" version ]
        let method = method.split('/').next().unwrap_or("").trim();
        let mut props = Vec::new();
        for w in words {
            let Some((k, v)) = w.split_once('=') else {
                continue;
            };
            // reason= and ptype.property= pairs; only the latter are properties.
            if k.contains('.') {
                props.push((k.trim().to_ascii_lowercase(), unquote(v)));
            }
        }
        results.push(ResInfo {
            method: method.to_ascii_lowercase(),
            result: unquote(result).to_ascii_lowercase(),
            props,
        });
    }
    Some(AuthResults {
        authserv_id,
        results,
    })
}

/// The domain part of an identity such as `header.i=@example.org` or `user@example.org`.
fn domain_of(value: &str) -> String {
    let d = value.rsplit_once('@').map_or(value, |(_, d)| d);
    super::normalize_domain(d)
}

/// True when `header` carries an `Authentication-Results` field from `authserv_id`
/// saying DKIM passed for `from_domain` (`header.d`, or the domain of `header.i`:
/// RFC 6376 §3.5) or DMARC passed with `header.from` = `from_domain` (RFC 7489 §11.2).
/// Domains must be equal (strict alignment): a pass for another domain proves nothing
/// about this From.
pub fn provider_authenticated(header: &[u8], authserv_id: &str, from_domain: &str) -> bool {
    let want = super::normalize_domain(from_domain);
    crate::mime::fields(header)
        .iter()
        .filter(|f| f.is("Authentication-Results"))
        .filter_map(|f| parse(&f.value()))
        .filter(|ar| ar.authserv_id.eq_ignore_ascii_case(authserv_id.trim()))
        .flat_map(|ar| ar.results)
        .any(|r| {
            if r.result != "pass" {
                return false;
            }
            let names: &[&str] = match r.method.as_str() {
                "dkim" => &["header.d", "header.i"],
                "dmarc" => &["header.from"],
                _ => &[],
            };
            r.props
                .iter()
                .any(|(k, v)| names.contains(&k.as_str()) && domain_of(v) == want)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc_8601_examples_with_comments_and_quotes() {
        let ar = parse(
            "mx.example.com (version 1) 1; dkim=pass (good signature) header.d=\"Example.ORG\" header.s=sel;\r\n\tspf=fail smtp.mailfrom=x@y; dmarc=pass (p=reject) header.from=example.org",
        )
        .unwrap();
        assert_eq!(ar.authserv_id, "mx.example.com");
        assert_eq!(ar.results.len(), 3);
        assert_eq!(ar.results[0].method, "dkim");
        assert_eq!(
            ar.results[0].props[0],
            ("header.d".into(), "Example.ORG".into())
        );
        assert_eq!(parse("mx.example.com; none").unwrap().results, vec![]);
        assert!(parse("").is_none());
    }

    fn header(fields: &str) -> Vec<u8> {
        format!("From: bob@example.org\r\n{fields}Subject: x\r\n\r\n").into_bytes()
    }

    #[test]
    fn only_the_own_authserv_id_and_the_from_domain_count() {
        let own = "mx.example.com";
        let pass =
            header("Authentication-Results: mx.example.com; dkim=pass header.d=example.org\r\n");
        assert!(provider_authenticated(&pass, own, "example.org"));
        assert!(provider_authenticated(
            &pass,
            "MX.Example.Com",
            "EXAMPLE.org."
        ));
        // A field from another authserv-id is the sender's own claim.
        let forged =
            header("Authentication-Results: mx.evil.example; dkim=pass header.d=example.org\r\n");
        assert!(!provider_authenticated(&forged, own, "example.org"));
        // A pass for another domain, a fail, or a domain hidden in a comment prove nothing.
        for f in [
            "Authentication-Results: mx.example.com; dkim=pass header.d=evil.example\r\n",
            "Authentication-Results: mx.example.com; dkim=fail header.d=example.org\r\n",
            "Authentication-Results: mx.example.com; dkim=pass (header.d=example.org) header.d=evil.example\r\n",
            "Authentication-Results: mx.example.com; dkim=pass header.d=sub.example.org\r\n",
            "X-Authentication-Results: mx.example.com; dkim=pass header.d=example.org\r\n",
        ] {
            assert!(!provider_authenticated(&header(f), own, "example.org"), "{f}");
        }
        let i =
            header("Authentication-Results: mx.example.com; dkim=pass header.i=@example.org\r\n");
        assert!(provider_authenticated(&i, own, "example.org"));
        let dmarc = header(
            "Authentication-Results: mx.example.com;\r\n dmarc=pass (p=none) header.from=example.org\r\n",
        );
        assert!(provider_authenticated(&dmarc, own, "example.org"));
        let dmarc_other = header(
            "Authentication-Results: mx.example.com; dmarc=pass header.from=evil.example\r\n",
        );
        assert!(!provider_authenticated(&dmarc_other, own, "example.org"));
    }
}
