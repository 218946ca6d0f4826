//! Scraping sealpost's `/metrics` with curl and reading the Prometheus text format.

use std::collections::BTreeMap;
use std::process::Command;

/// `GET /metrics` with curl: the status line's code and the body.
pub fn scrape(port: u16) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}/metrics"))
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

/// Parses the Prometheus text exposition format (0.0.4) strictly enough to catch a
/// malformed line: every sample belongs to a family declared by `# TYPE` before it,
/// names and label names are legal, label values are quoted with escapes, values are
/// numbers. Returns each series (`name{labels}` as written) and its value.
pub fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let legal_name = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut series = BTreeMap::new();
    assert!(text.ends_with('\n'), "exposition must end with a newline");
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, value) = (parts.next(), parts.next(), parts.next());
            let name = name.unwrap_or_else(|| panic!("bad comment line {line:?}"));
            assert!(legal_name(name), "bad metric name in {line:?}");
            match kind {
                Some("HELP") => assert!(value.is_some(), "{line:?}"),
                Some("TYPE") => {
                    let t = value.unwrap_or("");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "{line:?}"
                    );
                    types.insert(name.to_string(), t.to_string());
                }
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match key.split_once('{') {
            Some((n, l)) => (n, Some(l.strip_suffix('}').expect("labels end with }"))),
            None => (key, None),
        };
        assert!(legal_name(name), "bad name in {line:?}");
        if let Some(mut l) = labels {
            while !l.is_empty() {
                let (lname, rest) = l.split_once("=\"").unwrap_or_else(|| panic!("{line:?}"));
                assert!(legal_name(lname) && !lname.contains(':'), "{line:?}");
                // The value runs to the first quote that is not escaped.
                let mut end = None;
                let mut escaped = false;
                for (i, c) in rest.char_indices() {
                    match (escaped, c) {
                        (true, _) => escaped = false,
                        (false, '\\') => escaped = true,
                        (false, '"') => {
                            end = Some(i);
                            break;
                        }
                        _ => {}
                    }
                }
                let end = end.unwrap_or_else(|| panic!("unterminated label in {line:?}"));
                l = rest[end + 1..]
                    .strip_prefix(',')
                    .unwrap_or(&rest[end + 1..]);
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(
            types.contains_key(family),
            "sample {line:?} without a # TYPE"
        );
        assert!(
            series.insert(key.to_string(), v).is_none(),
            "series twice: {line:?}"
        );
    }
    series
}

pub fn value(series: &BTreeMap<String, f64>, key: &str) -> f64 {
    series.get(key).copied().unwrap_or(0.0)
}
