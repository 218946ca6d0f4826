//! Byte-exact handling of RFC 5322 messages: header sections here, the IMAP view of a
//! message (BODYSTRUCTURE, ENVELOPE, sections) in [`view`].
//!
//! PGP/MIME needs to move header fields between the outer message and the encrypted
//! inner entity without re-encoding them, so fields are kept as the raw bytes the
//! client sent (folding included) and only their names are interpreted.

pub mod view;

/// Splits a message into its header section (including the final line break of the
/// last field) and its body (after the empty line). A message without an empty line
/// is all header (RFC 5322 §3.5 allows a missing body).
pub fn split_message(raw: &[u8]) -> (&[u8], &[u8]) {
    let mut i = 0;
    // An empty first line means an empty header section.
    if raw.starts_with(b"\r\n") {
        return (&raw[..0], &raw[2..]);
    }
    if raw.starts_with(b"\n") {
        return (&raw[..0], &raw[1..]);
    }
    while let Some(pos) = raw[i..].iter().position(|&b| b == b'\n') {
        let line_end = i + pos + 1;
        let rest = &raw[line_end..];
        if rest.starts_with(b"\r\n") {
            return (&raw[..line_end], &raw[line_end + 2..]);
        }
        if rest.starts_with(b"\n") {
            return (&raw[..line_end], &raw[line_end + 1..]);
        }
        i = line_end;
    }
    (raw, &raw[raw.len()..])
}

/// One header field: its name and the raw bytes of the whole field, from the first
/// character of the name to the line break that ends its last continuation line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<'a> {
    pub name: &'a str,
    pub raw: &'a [u8],
}

impl Field<'_> {
    /// True when the field is named `name` (case-insensitive, RFC 5322 §1.2.2).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// The unfolded value, trimmed; non-UTF-8 bytes are replaced.
    pub fn value(&self) -> String {
        let colon = self.raw.iter().position(|&b| b == b':').unwrap_or(0);
        let v = String::from_utf8_lossy(&self.raw[colon + 1..]);
        v.replace("\r\n", "").replace('\n', "").trim().to_string()
    }
}

/// Splits a header section into fields. Lines that are not fields (no colon, or
/// garbage before the first field) are attached to the preceding field or, when there
/// is none, returned as a nameless field so that nothing is lost.
pub fn fields(header: &[u8]) -> Vec<Field<'_>> {
    let mut out: Vec<Field<'_>> = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let n = header.len();
    while i < n {
        let line_end = header[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| i + p + 1)
            .unwrap_or(n);
        let next_is_continuation = line_end < n && matches!(header[line_end], b' ' | b'\t');
        if !next_is_continuation {
            let raw = &header[start..line_end];
            // RFC 5322 §4.5.8 (obsolete syntax): WSP may stand before the colon, and
            // common parsers accept it, so the name is what precedes it, trimmed.
            let name = raw
                .iter()
                .position(|&b| b == b':')
                .and_then(|c| std::str::from_utf8(&raw[..c]).ok())
                .map(|s| s.trim_end_matches([' ', '\t']))
                .filter(|s| !s.is_empty() && s.bytes().all(|b| (33..=126).contains(&b)))
                .unwrap_or("");
            out.push(Field { name, raw });
            start = line_end;
        }
        i = line_end;
    }
    out
}

/// `raw` with every bare LF turned into CRLF (RFC 5322 §2.3 line endings); borrowed
/// when it already has none, so large CRLF messages are not copied.
pub fn to_crlf(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    // Every message passes here: the line ends are found with memchr, and the text
    // between them is copied whole.
    let bare = |i: usize| i == 0 || raw[i - 1] != b'\r';
    if !memchr::memchr_iter(b'\n', raw).any(bare) {
        return std::borrow::Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
    let mut from = 0;
    for i in memchr::memchr_iter(b'\n', raw).filter(|&i| bare(i)) {
        out.extend_from_slice(&raw[from..i]);
        out.extend_from_slice(b"\r\n");
        from = i + 1;
    }
    out.extend_from_slice(&raw[from..]);
    std::borrow::Cow::Owned(out)
}

/// Appends `raw` to `out`, making sure it ends with CRLF.
pub fn push_line(out: &mut Vec<u8>, raw: &[u8]) {
    out.extend_from_slice(raw);
    if !raw.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
}

/// The message with the named header fields removed, everything else byte for byte.
pub fn without_fields(raw: &[u8], names: &[&str]) -> Vec<u8> {
    let (header, body) = split_message(raw);
    let fields: Vec<Field<'_>> = self::fields(header);
    if !fields.iter().any(|f| names.iter().any(|n| f.is(n))) {
        return raw.to_vec();
    }
    let mut out = Vec::with_capacity(raw.len());
    for f in fields.iter().filter(|f| !names.iter().any(|n| f.is(n))) {
        out.extend_from_slice(f.raw);
    }
    // Restore the separator exactly as it was.
    out.extend_from_slice(&raw[header.len()..raw.len() - body.len()]);
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_fields_keeps_the_rest_exact() {
        let m = b"A: 1\r\nBcc: x\r\n y\r\nB: 2\r\n\r\nbody";
        assert_eq!(without_fields(m, &["bcc"]), b"A: 1\r\nB: 2\r\n\r\nbody");
        assert_eq!(without_fields(b"A: 1\n\nb", &["Bcc"]), b"A: 1\n\nb");
    }

    #[test]
    fn splits_header_and_body() {
        let m = b"A: 1\r\nB: 2\r\n\r\nbody\r\n";
        let (h, b) = split_message(m);
        assert_eq!(h, b"A: 1\r\nB: 2\r\n");
        assert_eq!(b, b"body\r\n");
        let (h, b) = split_message(b"A: 1\n\nx");
        assert_eq!((h, b), (&b"A: 1\n"[..], &b"x"[..]));
        let (h, b) = split_message(b"A: 1\r\n");
        assert_eq!((h, b), (&b"A: 1\r\n"[..], &b""[..]));
    }

    #[test]
    fn keeps_folded_fields_whole() {
        let h = b"Subject: a\r\n  b\r\nTo: x@y\r\n";
        let f = fields(h);
        assert_eq!(f.len(), 2);
        assert!(f[0].is("subject"));
        assert_eq!(f[0].raw, b"Subject: a\r\n  b\r\n");
        assert_eq!(f[0].value(), "a  b");
        assert_eq!(f[1].value(), "x@y");
        let joined: Vec<u8> = f.iter().flat_map(|f| f.raw.to_vec()).collect();
        assert_eq!(joined, h);
    }

    #[test]
    fn a_space_before_the_colon_still_names_the_field() {
        let f = fields(b"Sealpost-Decrypted : yes\r\nA: 1\r\n");
        assert!(f[0].is("sealpost-decrypted"));
        assert_eq!(
            without_fields(b"X : 1\r\nY: 2\r\n\r\nb", &["x"]),
            b"Y: 2\r\n\r\nb"
        );
    }

    #[test]
    fn crlf_normalisation() {
        assert_eq!(&*to_crlf(b"a\nb\r\nc"), b"a\r\nb\r\nc");
        assert!(matches!(to_crlf(b"a\r\n"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(&*to_crlf(b"\n\nx\r\n\r\ny\n"), b"\r\n\r\nx\r\n\r\ny\r\n");
        assert_eq!(&*to_crlf(b"\r\r\n\n\r"), b"\r\r\n\r\n\r");
    }
}
