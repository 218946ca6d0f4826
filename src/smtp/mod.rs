//! SMTP submission: the client-facing session, the upstream client and the outbound
//! pipeline that decides, per recipient, what leaves sealpost.

pub mod pipeline;
pub mod server;
pub mod session;
pub mod upstream;

/// An SMTP reply (RFC 5321 §4.2): a code and one or more text lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            lines: vec![text.into()],
        }
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// The reply as sent on the wire, every line CRLF-terminated. Text is limited to
    /// printable ASCII so an upstream reply passed through cannot inject lines.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let n = self.lines.len().max(1);
        for i in 0..n {
            let text = self.lines.get(i).map(String::as_str).unwrap_or("");
            let clean: String = text
                .chars()
                .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
                .take(500)
                .collect();
            let sep = if i + 1 == n { ' ' } else { '-' };
            out.extend_from_slice(format!("{}{}{}\r\n", self.code, sep, clean).as_bytes());
        }
        out
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.lines.join(" / "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_wire_form() {
        let r = Reply {
            code: 250,
            lines: vec!["a".into(), "b\r\nEVIL".into()],
        };
        assert_eq!(r.to_wire(), b"250-a\r\n250 b??EVIL\r\n");
    }
}
