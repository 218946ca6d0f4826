//! Behind a load balancer: the PROXY protocol v2 and the limit of connections per
//! client address, on a real `sealpost run` relaying to the test upstreams (aiosmtpd
//! over TLS, Dovecot). The tests write the header themselves (a few bytes), so one
//! test can claim to be any number of client addresses; Python's smtplib and imaplib
//! then talk SMTP and IMAP over the same socket.

mod common;

use common::prometheus::{parse_exposition, scrape};
use common::proxy::{Proxy, ProxyOptions};
use common::{run_python, Dovecot, Sink, SinkMode, TestCa};
use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::{Duration, Instant};

const USER: &str = "alice@example.com";
const PASS: &str = "alicepw";

/// A PROXY protocol v2 header: command PROXY (TCP over IPv4 or IPv6) from `source`, or
/// LOCAL when `source` is `None`.
fn header(source: Option<&str>) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    let Some(source) = source else {
        h.extend_from_slice(&[0x20, 0x00, 0, 0]);
        return h;
    };
    let ip: IpAddr = source.parse().unwrap();
    let mut block = Vec::new();
    match ip {
        IpAddr::V4(a) => {
            h.extend_from_slice(&[0x21, 0x11]);
            block.extend_from_slice(&a.octets());
            block.extend_from_slice(&[127, 0, 0, 1]);
        }
        IpAddr::V6(a) => {
            h.extend_from_slice(&[0x21, 0x21]);
            block.extend_from_slice(&a.octets());
            block.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        }
    }
    block.extend_from_slice(&40123u16.to_be_bytes());
    block.extend_from_slice(&587u16.to_be_bytes());
    // A NOOP TLV, as padding: skipped.
    block.extend_from_slice(&[0x04, 0, 2, 0, 0]);
    h.extend_from_slice(&(block.len() as u16).to_be_bytes());
    h.extend_from_slice(&block);
    h
}

/// A TCP connection to 127.0.0.1:`port` that first sends `prefix`.
fn connect(port: u16, prefix: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    if !prefix.is_empty() {
        s.write_all(prefix).unwrap();
    }
    s
}

/// The first line the server sends, or "" when it closes first.
fn first_line(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") {
        match s.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("no answer: {e}"),
        }
    }
    String::from_utf8_lossy(&line).into_owned()
}

/// True when the server closes without sending anything more.
fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(n) => n == 0,
        // Closed with the client's bytes unread: the kernel answers with a reset.
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// Python's smtplib and imaplib over a socket that first sends a PROXY v2 header.
const PY_CLIENTS: &str = r#"
import imaplib, smtplib, socket, ssl, struct, sys

kind, port, source, tls, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "tls", sys.argv[5]

def header(source):
    v6 = ":" in source
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    block = socket.inet_pton(fam, source) + socket.inet_pton(fam, "::1" if v6 else "127.0.0.1")
    block += struct.pack("!HH", 40124, 25)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x21 if v6 else 0x11]) + struct.pack("!H", len(block)) + block

def proxied(host, port, timeout):
    s = socket.create_connection((host, port), timeout)
    s.sendall(header(source))
    return s

ctx = ssl.create_default_context(cafile=cafile)

class Smtp(smtplib.SMTP):
    def _get_socket(self, host, port, timeout):
        return proxied(host, port, timeout)

class SmtpTls(smtplib.SMTP_SSL, Smtp):
    pass

class Imap(imaplib.IMAP4):
    def _create_socket(self, timeout):
        return proxied(self.host, self.port, timeout)

class ImapTls(imaplib.IMAP4_SSL):
    def _create_socket(self, timeout):
        return self.ssl_context.wrap_socket(proxied(self.host, self.port, timeout), server_hostname=self.host)

if kind == "smtp":
    s = SmtpTls("127.0.0.1", port, timeout=20, context=ctx) if tls else Smtp("127.0.0.1", port, timeout=20)
    s.ehlo()
    print("auth-offered", s.has_extn("auth"))
    if not tls:
        s.starttls(context=ctx)
        s.ehlo()
    s.login("sinkuser", "sinkpass")
    msg = "From: alice@example.com\r\nTo: carol@example.org\r\nSubject: via " + source + "\r\n\r\nbody\r\n"
    s.sendmail("alice@example.com", ["carol@example.org"], msg)
    s.quit()
    print("sent")
else:
    m = ImapTls("127.0.0.1", port, ssl_context=ctx, timeout=20) if tls else Imap("127.0.0.1", port, timeout=20)
    print("login-disabled", "LOGINDISABLED" in m.capabilities)
    if not tls:
        m.starttls(ssl_context=ctx)
    m.login(sys.argv[6], sys.argv[7])
    typ, _ = m.select("INBOX")
    print("select", typ)
    m.logout()
"#;

fn py_client(kind: &str, port: u16, source: &str, tls: bool, ca: &TestCa) -> String {
    let cafile = ca.ca_pem.display().to_string();
    let out = run_python(
        PY_CLIENTS,
        &[
            kind,
            &port.to_string(),
            source,
            if tls { "tls" } else { "plain" },
            &cafile,
            USER,
            PASS,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{kind} via {source}: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `sealpost_connections_refused_total` for `protocol` and `reason`.
fn refused(metrics_port: u16, protocol: &str, reason: &str) -> f64 {
    let (code, text) = scrape(metrics_port);
    assert_eq!(code, 200);
    let key = format!(
        "sealpost_connections_refused_total{{protocol=\"{protocol}\",reason=\"{reason}\"}}"
    );
    parse_exposition(&text).get(&key).copied().unwrap_or(0.0)
}

/// Waits until `f` holds (counters move when a session task ends).
fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start(ca: &TestCa, sink: &Sink, dovecot: &Dovecot, listener_extra: &str) -> (Proxy, u16) {
    let mut opts = ProxyOptions::new(sink.port);
    opts.imap_upstream = Some((dovecot.imaps_port, "tls"));
    opts.listener_extra = listener_extra.into();
    opts.extra = "[metrics]\nlisten = \"127.0.0.1:0\"\n".into();
    let proxy = Proxy::start(ca, &opts);
    let metrics_port = proxy.metrics_port();
    (proxy, metrics_port)
}

#[test]
fn proxy_protocol_gives_sealpost_the_client_address() {
    let ca = TestCa::shared();
    let sink = Sink::start(ca, SinkMode::Tls);
    let dovecot = Dovecot::start(ca, &[(USER, PASS)]);
    let (proxy, metrics) = start(ca, &sink, &dovecot, "proxy_protocol = true\n");

    // Through the balancer from a remote address: no plaintext login on the loopback
    // listener (the balancer's own address is loopback, the client's is not).
    let out = py_client("smtp", proxy.smtp_port, "192.0.2.10", false, ca);
    assert!(
        out.contains("auth-offered False") && out.contains("sent"),
        "{out}"
    );
    let out = py_client("smtp", proxy.smtps_port, "2001:db8::7", true, ca);
    assert!(out.contains("sent"), "{out}");
    // A client that is itself on loopback keeps the loopback rule.
    let out = py_client("smtp", proxy.smtp_port, "127.0.0.1", false, ca);
    assert!(out.contains("auth-offered True"), "{out}");
    assert_eq!(sink.wait_for_messages(3, Duration::from_secs(20)).len(), 3);

    let out = py_client("imap", proxy.imap_port, "198.51.100.20", false, ca);
    assert!(
        out.contains("login-disabled True") && out.contains("select OK"),
        "{out}"
    );
    let out = py_client("imap", proxy.imaps_port, "2001:db8::8", true, ca);
    assert!(out.contains("select OK"), "{out}");

    // The logs name the client, and the balancer as `via`.
    let log = proxy.log();
    for client in [
        "peer=192.0.2.10:40124",
        "peer=[2001:db8::7]:40124",
        "peer=198.51.100.20:40124",
        "peer=[2001:db8::8]:40124",
        "via=127.0.0.1:",
    ] {
        assert!(log.contains(client), "{client} not in the log:\n{log}");
    }
    assert!(!log.contains("sinkpass") && !log.contains(PASS));

    // A LOCAL header (the balancer's health check) is served as the balancer.
    let mut s = connect(proxy.smtp_port, &header(None));
    assert!(first_line(&mut s).starts_with("220 "));
    let mut s = connect(proxy.imap_port, &header(None));
    assert!(first_line(&mut s).starts_with("* OK"));

    // No header, a wrong one, or a v1 line: closed before the greeting, logged, counted.
    let before = refused(metrics, "smtp", "proxy_header");
    let mut bad_version = header(Some("192.0.2.1"));
    bad_version[12] = 0x11;
    let mut too_long = header(Some("192.0.2.1"));
    too_long[14..16].copy_from_slice(&4000u16.to_be_bytes());
    let mut unspec = header(Some("192.0.2.1"));
    unspec[13] = 0x00;
    for prefix in [
        &b"EHLO direct\r\n"[..],
        b"PROXY TCP4 192.0.2.1 127.0.0.1 1000 25\r\n",
        &bad_version,
        &too_long,
        &unspec,
        &header(Some("192.0.2.1"))[..20],
    ] {
        let mut s = connect(proxy.smtp_port, prefix);
        if prefix.len() == 20 {
            // Truncated: the connection waits for the rest, then times out.
            let t = Instant::now();
            assert!(closed(&mut s), "a truncated header was accepted");
            assert!(t.elapsed() >= Duration::from_secs(4), "{:?}", t.elapsed());
        } else {
            assert!(
                closed(&mut s),
                "{:?} was accepted",
                String::from_utf8_lossy(prefix)
            );
        }
    }
    // And on the TLS listener: a ClientHello is no header.
    let mut s = connect(proxy.smtps_port, &[0x16, 0x03, 0x01, 0x00, 0x05]);
    assert!(closed(&mut s));
    eventually("refusals counted", || {
        refused(metrics, "smtp", "proxy_header") >= before + 7.0
    });
    let log = proxy.log();
    assert!(
        log.contains("no valid PROXY protocol v2 header: the connection does not start with the PROXY protocol v2 signature"),
        "{log}"
    );
    assert!(log.contains("PROXY protocol version 1"), "{log}");
    assert!(
        log.contains("no PROXY protocol v2 header within 5s"),
        "{log}"
    );
    // The good sessions still work after all that.
    let out = py_client("imap", proxy.imap_port, "203.0.113.5", false, ca);
    assert!(out.contains("select OK"), "{out}");
}

#[test]
fn a_header_where_none_is_expected_is_refused() {
    let ca = TestCa::shared();
    let sink = Sink::start(ca, SinkMode::Tls);
    let dovecot = Dovecot::start(ca, &[(USER, PASS)]);
    let (proxy, metrics) = start(ca, &sink, &dovecot, "");
    let before = refused(metrics, "smtp", "unexpected_proxy_header")
        + refused(metrics, "imap", "unexpected_proxy_header");

    // Plain listeners greet first; the header then comes as the client's first bytes,
    // and must never reach the session as a command.
    let mut s = connect(proxy.smtp_port, &[]);
    assert!(first_line(&mut s).starts_with("220 "));
    s.write_all(&header(Some("192.0.2.1"))).unwrap();
    s.write_all(b"EHLO x\r\n").unwrap();
    assert!(closed(&mut s), "the SMTP session answered a PROXY header");
    let mut s = connect(proxy.imap_port, &[]);
    assert!(first_line(&mut s).starts_with("* OK"));
    // Split, as a slow network may deliver it.
    s.write_all(b"PRO").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(b"XY TCP4 192.0.2.1 127.0.0.1 1000 143\r\na1 CAPABILITY\r\n")
        .unwrap();
    assert!(closed(&mut s), "the IMAP session answered a PROXY header");
    // TLS listeners: the header instead of a ClientHello.
    for port in [proxy.smtps_port, proxy.imaps_port] {
        let mut s = connect(port, &header(Some("192.0.2.1")));
        assert!(closed(&mut s));
    }
    eventually("unexpected headers counted", || {
        refused(metrics, "smtp", "unexpected_proxy_header")
            + refused(metrics, "imap", "unexpected_proxy_header")
            >= before + 4.0
    });
    let log = proxy.log();
    assert!(
        log.contains("a PROXY protocol header on a listener without proxy_protocol = true"),
        "{log}"
    );
    // Clients without a header are served as before.
    let out = run_python(
        "import imaplib,sys\nm=imaplib.IMAP4('127.0.0.1',int(sys.argv[1]))\nm.login(sys.argv[2],sys.argv[3])\nprint(m.select('INBOX')[0])\nm.logout()",
        &[&proxy.imap_port.to_string(), USER, PASS],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK", "{out:?}");
}

#[test]
fn connections_per_client_address_are_limited() {
    let ca = TestCa::shared();
    let sink = Sink::start(ca, SinkMode::Tls);
    let dovecot = Dovecot::start(ca, &[(USER, PASS)]);
    let (proxy, metrics) = start(
        ca,
        &sink,
        &dovecot,
        "proxy_protocol = true\nmax_connections_per_ip = 2\n",
    );
    for (port, protocol, ok, refusal) in [
        (
            proxy.smtp_port,
            "smtp",
            "220 ",
            "421 4.7.0 Too many connections",
        ),
        (
            proxy.imap_port,
            "imap",
            "* OK",
            "* BYE Too many connections",
        ),
    ] {
        let before = refused(metrics, protocol, "max_connections_per_ip");
        let a = Some("192.0.2.50");
        let mut held: Vec<TcpStream> = (0..2).map(|_| connect(port, &header(a))).collect();
        for s in &mut held {
            assert!(first_line(s).starts_with(ok));
        }
        // The third from the same address is refused; IPv4-mapped IPv6 is the same address.
        for source in ["192.0.2.50", "::ffff:192.0.2.50"] {
            let mut third = connect(port, &header(Some(source)));
            let line = first_line(&mut third);
            assert!(line.starts_with(refusal), "{protocol} {source}: {line:?}");
            assert!(closed(&mut third));
        }
        // Another address is counted on its own.
        let mut other = connect(port, &header(Some("192.0.2.51")));
        assert!(first_line(&mut other).starts_with(ok));
        assert_eq!(
            refused(metrics, protocol, "max_connections_per_ip"),
            before + 2.0
        );
        // A slot is freed when its session ends.
        drop(held.pop());
        eventually("a freed slot is given again", || {
            let mut s = connect(port, &header(a));
            first_line(&mut s).starts_with(ok)
        });
        let log = proxy.log();
        assert!(
            log.contains("connections per address reached; refusing")
                && log.contains("peer=192.0.2.50:40123"),
            "{log}"
        );
    }
}
