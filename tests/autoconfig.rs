//! Thunderbird's autoconfig and Outlook's Autodiscover, asked over HTTP with curl from
//! a running sealpost: the answers describe sealpost's own listeners, parse as XML,
//! every address at a configured domain is answered (the configured login only to this
//! loopback client), other domains get 404, and a request body that does not arrive is
//! given up on.

mod common;

use common::net::run_python_stdin;
use common::proxy::{Proxy, ProxyOptions};
use common::TestCa;
use std::process::Command;
use std::time::Duration;

/// (HTTP status, body) of a curl request.
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Parses `xml` with Python's XML parser and prints `path=text` for every element whose
/// local name is in `names`, in document order.
fn xml_fields(xml: &str, names: &[&str]) -> Vec<String> {
    let script = format!(
        r#"import sys, xml.etree.ElementTree as ET
root = ET.fromstring(sys.stdin.read())
for e in root.iter():
    tag = e.tag.split('}}')[-1]
    if tag in {names:?}:
        print(tag + '=' + (e.text or '').strip())
"#
    );
    let out = run_python_stdin(&script, &[], xml.as_bytes());
    assert!(
        out.status.success(),
        "not XML: {}\n{xml}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn thunderbird_and_outlook_are_told_sealposts_listeners() {
    let ca = TestCa::shared();
    let mut opts = ProxyOptions::new(1);
    opts.imap_upstream = Some((1, "tls"));
    opts.alice_login = "alice&co".into();
    // Every listener on port 0: clients are told the ports sealpost was given.
    opts.extra = "[autoconfig]\nlisten = \"127.0.0.1:0\"\n".into();
    let proxy = Proxy::start(ca, &opts);
    let port = proxy.autoconfig_port();
    let base = format!("http://127.0.0.1:{port}");

    for path in [
        "/mail/config-v1.1.xml",
        "/.well-known/autoconfig/mail/config-v1.1.xml",
    ] {
        let (code, body) = curl(&[&format!("{base}{path}?emailaddress=alice%40example.com")]);
        assert_eq!(code, 200, "{path}: {body}");
        let fields = xml_fields(&body, &["hostname", "port", "socketType", "username"]);
        let want: Vec<String> = [
            (proxy.imaps_port, "SSL"),
            (proxy.imap_port, "STARTTLS"),
            (proxy.smtps_port, "SSL"),
            (proxy.smtp_port, "STARTTLS"),
        ]
        .iter()
        .flat_map(|(p, s)| {
            [
                "hostname=127.0.0.1".to_string(),
                format!("port={p}"),
                format!("socketType={s}"),
                "username=alice&co".to_string(),
            ]
        })
        .collect();
        assert_eq!(fields, want, "{body}");
        assert!(body.contains("alice&amp;co"), "{body}");
    }
    let (code, _) = curl(&[&format!(
        "{base}/mail/config-v1.1.xml?emailaddress=bob%40example.org"
    )]);
    assert_eq!(code, 404);
    // An address nobody configured, at a configured domain: answered like any other,
    // with itself as user name.
    let (code, body) = curl(&[&format!(
        "{base}/mail/config-v1.1.xml?emailaddress=Bob%40example.com"
    )]);
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("<username>Bob@example.com</username>"),
        "{body}"
    );
    assert!(!body.contains("alice"), "{body}");
    // A request whose body never comes is answered 408 within seconds, not held.
    {
        use std::io::{Read, Write};
        let started = std::time::Instant::now();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(
            b"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n<",
        )
        .unwrap();
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{:?}",
            started.elapsed()
        );
    }
    let (code, body) = curl(&[&format!(
        "{base}/mail/config-v1.1.xml?emailaddress=%3Cscript%3E%40example.com"
    )]);
    assert_eq!(code, 404);
    assert!(!body.contains("<script>"), "{body}");

    let request = |address: &str| {
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>{address}</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>"#
        )
    };
    let (code, body) = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: text/xml",
        "--data-binary",
        &request("Alice@Example.com"),
        &format!("{base}/Autodiscover/Autodiscover.xml"),
    ]);
    assert_eq!(code, 200, "{body}");
    let fields = xml_fields(
        &body,
        &["Type", "Server", "Port", "LoginName", "SSL", "Encryption"],
    );
    assert_eq!(
        fields,
        vec![
            "Type=IMAP".to_string(),
            "Server=127.0.0.1".into(),
            format!("Port={}", proxy.imaps_port),
            "LoginName=alice&co".into(),
            "SSL=on".into(),
            "Encryption=SSL".into(),
            "Type=SMTP".into(),
            "Server=127.0.0.1".into(),
            format!("Port={}", proxy.smtps_port),
            "LoginName=alice&co".into(),
            "SSL=on".into(),
            "Encryption=SSL".into(),
        ],
        "{body}"
    );
    let (code, _) = curl(&[
        "-X",
        "POST",
        "--data-binary",
        &request("carol@example.org"),
        &format!("{base}/autodiscover/autodiscover.xml"),
    ]);
    assert_eq!(code, 404);
}

#[test]
fn a_wildcard_listener_needs_a_hostname() {
    let ca = TestCa::shared();
    let dir = common::tempdir();
    let mut opts = ProxyOptions::new(1);
    opts.extra = "[autoconfig]\nlisten = \"127.0.0.1:0\"\n".into();
    let config = Proxy::write_config(dir.path(), ca, &opts, (0, 0));
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "listen = \"127.0.0.1:",
        "listen = \"0.0.0.0:",
        1,
    );
    std::fs::write(&config, text).unwrap();
    let out = common::proxy::sealpost_cmd(&config, &["check"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(said.contains("autoconfig.hostname"), "{said}");
    assert!(said.contains(&config.display().to_string()), "{said}");
}
