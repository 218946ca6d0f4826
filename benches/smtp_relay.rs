//! SMTP relay benchmark: `cargo bench --bench smtp_relay`.
//!
//! One run measures, against the same aiosmtpd sink (implicit TLS, AUTH, fsync per
//! message) and with the same small tokio + rustls SMTP client (one session for all
//! messages, one command at a time):
//!
//! * (a) 100 x 20 KiB messages to bob submitted to sealpost (STARTTLS + AUTH), which
//!   encrypts to bob, signs as alice and relays to the sink;
//! * (a') the same through a second sealpost whose key store also holds 2,000 other
//!   people's certificates, as a company gateway's does (a lookup must not check them
//!   all);
//! * (b) the same messages submitted directly to the sink (no encryption);
//! * (c) what gpg-based gateways do: one `gpg --encrypt --sign --armor -r bob`
//!   subprocess per message (alice signing), the result wrapped as PGP/MIME and
//!   submitted directly to the sink;
//! * (d) the peak memory (`VmHWM`) of a fresh sealpost process relaying one 25 MiB
//!   message (and (e) the same with two Bcc copies);
//! * (f) 2,000 messages over 20 parallel sessions through sealpost against directly:
//!   throughput, each message arriving exactly once, sealpost's RSS across the run.
//!
//! (a)-(c) run in 3 interleaved rounds (b, a, a', c) and medians are reported, so that
//! load from other processes on the machine spreads over all three paths.
//!
//! Needs the `sealpost` binary: `cargo build --release --bin sealpost` (cargo bench
//! builds it too); the release build is used when present.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use base64::Engine;
use common::proxy::ProxyOptions;
use common::{gpg_decrypt, gpg_encrypt, keyring, Sink, SinkConfig, SinkMode, TestCa};
use support::{describe_binary, median, mib, proc_status_bytes, secs, text_body, BenchProxy, Rng};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const N: usize = 100;
const MSG_SIZE: usize = 20 * 1024;
const WARMUP: usize = 2;
/// Interleaved rounds of (b), (a), (c); medians are reported.
const ROUNDS: usize = 3;
/// Certificates of other people in the key store of path (a') (a company gateway's).
const STORE_CERTS: usize = 2000;
const BIG_SIZE: usize = 25 * 1024 * 1024;
const FROM: &str = "alice@example.com";
const TO: &str = "bob@example.org";

// ---------------------------------------------------------------------------
// A minimal SMTP submission client (tokio + tokio-rustls).

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Security {
    /// Plain connection, then STARTTLS (sealpost's submission listener).
    StartTls,
    /// TLS from the first byte (the sink).
    Implicit,
}

struct SmtpClient {
    io: BufReader<Box<dyn Io>>,
}

type Res<T> = Result<T, String>;

impl SmtpClient {
    /// Implicit TLS, EHLO and AUTH PLAIN as the sink's user.
    async fn connect_implicit(port: u16, ca: &TestCa) -> Res<SmtpClient> {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let tls = tls_connector(ca)
            .connect(server_name()?, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let mut c = SmtpClient {
            io: BufReader::new(Box::new(tls)),
        };
        c.expect(220).await?;
        c.command("EHLO bench.test", 250).await?;
        c.auth().await?;
        Ok(c)
    }

    async fn connect_starttls(port: u16, ca: &TestCa) -> Res<SmtpClient> {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut plain = BufReader::new(tcp);
        read_reply(&mut plain, 220).await?;
        plain
            .write_all(b"EHLO bench.test\r\n")
            .await
            .map_err(|e| e.to_string())?;
        read_reply(&mut plain, 250).await?;
        plain
            .write_all(b"STARTTLS\r\n")
            .await
            .map_err(|e| e.to_string())?;
        read_reply(&mut plain, 220).await?;
        if !plain.buffer().is_empty() {
            return Err("server sent data after its STARTTLS reply".into());
        }
        let tls = tls_connector(ca)
            .connect(server_name()?, plain.into_inner())
            .await
            .map_err(|e| format!("TLS handshake after STARTTLS: {e}"))?;
        let mut c = SmtpClient {
            io: BufReader::new(Box::new(tls)),
        };
        c.command("EHLO bench.test", 250).await?;
        c.auth().await?;
        Ok(c)
    }

    async fn open(port: u16, security: Security, ca: &TestCa) -> Res<SmtpClient> {
        match security {
            Security::StartTls => SmtpClient::connect_starttls(port, ca).await,
            Security::Implicit => SmtpClient::connect_implicit(port, ca).await,
        }
    }

    async fn auth(&mut self) -> Res<()> {
        let token = base64::engine::general_purpose::STANDARD.encode(b"\0sinkuser\0sinkpass");
        self.command(&format!("AUTH PLAIN {token}"), 235).await?;
        Ok(())
    }

    async fn expect(&mut self, code: u16) -> Res<String> {
        read_reply(&mut self.io, code).await
    }

    async fn command(&mut self, line: &str, code: u16) -> Res<String> {
        self.io
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .map_err(|e| format!("write {line:?}: {e}"))?;
        self.io.flush().await.map_err(|e| e.to_string())?;
        self.expect(code)
            .await
            .map_err(|e| format!("after {line:?}: {e}"))
    }

    /// One transaction; `stuffed` is the message already dot-stuffed, ending in CRLF.
    async fn send(&mut self, from: &str, to: &str, stuffed: &[u8]) -> Res<()> {
        self.send_to(from, &[to], stuffed).await
    }

    async fn send_to(&mut self, from: &str, to: &[&str], stuffed: &[u8]) -> Res<()> {
        // SIZE (RFC 1870), as mail clients declare it when the server offers it.
        self.command(&format!("MAIL FROM:<{from}> SIZE={}", stuffed.len()), 250)
            .await?;
        for rcpt in to {
            self.command(&format!("RCPT TO:<{rcpt}>"), 250).await?;
        }
        self.command("DATA", 354).await?;
        self.io
            .write_all(stuffed)
            .await
            .map_err(|e| format!("write DATA: {e}"))?;
        self.io
            .write_all(b".\r\n")
            .await
            .map_err(|e| e.to_string())?;
        self.io.flush().await.map_err(|e| e.to_string())?;
        self.expect(250)
            .await
            .map_err(|e| format!("end of DATA: {e}"))?;
        Ok(())
    }

    async fn quit(mut self) {
        let _ = self.command("QUIT", 221).await;
        let _ = self.io.shutdown().await;
    }
}

fn tls_connector(ca: &TestCa) -> TlsConnector {
    TlsConnector::from(common::imapclients::rustls_client_config(&ca.ca_pem))
}

fn server_name() -> Res<rustls_pki_types::ServerName<'static>> {
    rustls_pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())
}

/// Reads one (possibly multi-line) reply and checks its code.
async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R, want: u16) -> Res<String> {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        let n = r
            .read_line(&mut line)
            .await
            .map_err(|e| format!("read reply: {e}"))?;
        if n == 0 {
            return Err(format!("connection closed; got so far: {text:?}"));
        }
        text.push_str(&line);
        let b = line.as_bytes();
        if b.len() < 4 || b[3] != b'-' {
            let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            if code != want {
                return Err(format!("expected {want}, got {}", text.trim_end()));
            }
            return Ok(text);
        }
    }
}

/// CRLF-terminated, dot-stuffed DATA payload.
fn dot_stuff(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + msg.len() / 500 + 8);
    let mut at_line_start = true;
    for &b in msg {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Bare LFs as CRLF (sealpost's own normalisation).
fn crlf(data: &[u8]) -> Vec<u8> {
    sealpost::mime::to_crlf(data).into_owned()
}

// ---------------------------------------------------------------------------
// Workload.

const INNER_HEADERS: &str =
    "Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n";

fn outer_headers(i: usize, subject: &str) -> String {
    format!(
        "From: Alice <{FROM}>\r\nTo: Bob <{TO}>\r\nSubject: {subject}\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\nMessage-ID: <bench-{i}-{pid}@example.com>\r\nMIME-Version: 1.0\r\n",
        pid = std::process::id()
    )
}

/// (outer headers, body) pairs; whole message is `size` bytes.
struct Msg {
    headers: String,
    body: String,
}

impl Msg {
    fn new(i: usize, size: usize, rng: &mut Rng) -> Msg {
        let headers = outer_headers(i, &format!("Benchmark message {i}"));
        let overhead = headers.len() + INNER_HEADERS.len() + 2;
        let mut body = text_body(rng, size.saturating_sub(overhead + 200));
        // Pad with short lines to exactly `size` bytes.
        let mut left = size.saturating_sub(overhead + body.len());
        while left > 80 {
            body.push_str(&"x".repeat(76));
            body.push_str("\r\n");
            left -= 78;
        }
        if left >= 3 {
            body.push_str(&"x".repeat(left - 2));
            body.push_str("\r\n");
        }
        Msg { headers, body }
    }

    fn full(&self) -> Vec<u8> {
        format!("{}{INNER_HEADERS}\r\n{}", self.headers, self.body).into_bytes()
    }

    /// What a gpg-based gateway does: encrypt+sign the body entity with a gpg
    /// subprocess and wrap the armored result as PGP/MIME.
    fn gpg_gateway(&self) -> Vec<u8> {
        let inner = format!("{INNER_HEADERS}\r\n{}", self.body);
        let armored = gpg_encrypt(Some("alice"), &["bob"], inner.as_bytes(), true);
        let mut m = format!(
            "{}Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"enc-b\"\r\n\r\nThis is an OpenPGP/MIME encrypted message\r\n--enc-b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--enc-b\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n",
            self.headers
        )
        .into_bytes();
        m.extend_from_slice(&crlf(&armored));
        m.extend_from_slice(b"\r\n--enc-b--\r\n");
        m
    }
}

fn armored(data: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(data);
    let start = text
        .find("-----BEGIN PGP MESSAGE-----")
        .unwrap_or_else(|| panic!("no PGP message in the relayed mail"));
    let end = text[start..]
        .find("-----END PGP MESSAGE-----")
        .expect("end of PGP message")
        + start
        + 25;
    text[start..end].as_bytes().to_vec()
}

// ---------------------------------------------------------------------------

async fn timed_session(
    port: u16,
    security: Security,
    ca: &TestCa,
    warmup: &[Vec<u8>],
    payloads: impl Fn(usize) -> Vec<u8>,
) -> Res<Duration> {
    let mut c = SmtpClient::open(port, security, ca).await?;
    for w in warmup {
        c.send(FROM, TO, w).await?;
    }
    let t0 = Instant::now();
    for i in 0..N {
        let data = payloads(i);
        c.send(FROM, TO, &data).await?;
    }
    let elapsed = t0.elapsed();
    c.quit().await;
    Ok(elapsed)
}

/// `n` certificates of other people (`<person{i}@many.example>`), one keyring.
fn many_certs(n: usize) -> Vec<u8> {
    use sequoia_openpgp::cert::CertBuilder;
    use sequoia_openpgp::serialize::Serialize;
    let mut out = Vec::new();
    for i in 0..n {
        let (cert, _) = CertBuilder::general_purpose(Some(format!("<person{i}@many.example>")))
            .generate()
            .expect("generate a certificate");
        cert.serialize(&mut out).expect("serialize a certificate");
    }
    out
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run());
}

async fn run() {
    let t_all = Instant::now();
    let bin = support::sealpost_binary();
    println!("=== sealpost SMTP relay benchmark ===");
    println!("sealpost binary: {}", describe_binary(&bin));

    let ca = TestCa::shared();
    let kr = keyring();
    let sink = Sink::start_with(
        ca,
        SinkConfig {
            mode: SinkMode::Tls,
            size_limit: Some(256 * 1024 * 1024),
            ..SinkConfig::default()
        },
    );
    let mut opts = ProxyOptions::new(sink.port);
    opts.import = vec![kr.bob().pub_asc.clone()];
    let proxy = BenchProxy::start(&bin, ca, &opts);

    let mut rng = Rng::new(20261125);
    let msgs: Vec<Msg> = (0..N).map(|i| Msg::new(i, MSG_SIZE, &mut rng)).collect();
    let stuffed: Vec<Vec<u8>> = msgs.iter().map(|m| dot_stuff(&m.full())).collect();
    let warm: Vec<Vec<u8>> = (0..WARMUP)
        .map(|i| dot_stuff(&Msg::new(1000 + i, MSG_SIZE, &mut rng).full()))
        .collect();
    println!(
        "workload: {N} messages of {} bytes each (short lines) to 1 recipient ({TO}), \
         one SMTP session per path and round, {WARMUP} untimed warm-up messages per session",
        msgs[0].full().len()
    );
    println!("sink: aiosmtpd, implicit TLS + AUTH, fsyncs every message\n");

    let mut expected = 0usize;
    let warm_gpg: Vec<Vec<u8>> = (0..WARMUP)
        .map(|i| dot_stuff(&Msg::new(2000 + i, MSG_SIZE, &mut rng).gpg_gateway()))
        .collect();
    let (mut direct, mut sealpost, mut gpg) = (Vec::new(), Vec::new(), Vec::new());
    // (a') the same sealpost with a gateway's key store: bob and STORE_CERTS others.
    let t0 = Instant::now();
    let many_dir = common::tempdir();
    let many = many_dir.path().join("many.pgp");
    std::fs::write(&many, many_certs(STORE_CERTS)).unwrap();
    let mut opts_many = ProxyOptions::new(sink.port);
    opts_many.import = vec![kr.bob().pub_asc.clone(), many];
    let proxy_many = BenchProxy::start(&bin, ca, &opts_many);
    println!(
        "(a') has {STORE_CERTS} more certificates in its key store (made and imported in {})",
        secs(t0.elapsed())
    );
    let mut sealpost_many = Vec::new();
    let (mut encrypted_size, mut gpg_size) = (0, 0);
    for round in 0..ROUNDS {
        // (b) direct, plain.
        let t = timed_session(sink.port, Security::Implicit, ca, &warm, |i| {
            stuffed[i].clone()
        })
        .await
        .unwrap_or_else(|e| panic!("direct submission failed: {e}\n{}", sink.log()));
        direct.push(t);
        expected += WARMUP + N;
        let got = sink.wait_for_messages(expected, Duration::from_secs(30));
        assert_eq!(got.len(), expected);
        assert_eq!(got[expected - 1].data, msgs[N - 1].full());

        // (a) through sealpost.
        let first = expected + WARMUP;
        let t = timed_session(proxy.smtp_port, Security::StartTls, ca, &warm, |i| {
            stuffed[i].clone()
        })
        .await
        .unwrap_or_else(|e| panic!("submission to sealpost failed: {e}\n{}", proxy.log()));
        sealpost.push(t);
        expected += WARMUP + N;
        let got = sink.wait_for_messages(expected, Duration::from_secs(30));
        assert_eq!(got.len(), expected, "sealpost relayed one copy per message");
        if round == 0 {
            let sample = &got[first + N / 2];
            assert!(sample.text().contains("multipart/encrypted"));
            assert_eq!(sample.rcpt_tos, [TO]);
            gpg_decrypt("bob", &armored(&sample.data)).assert_decrypted_signed_by("alice");
            encrypted_size = sample.data.len();
        }

        // (a') through sealpost with the large key store.
        let t = timed_session(proxy_many.smtp_port, Security::StartTls, ca, &warm, |i| {
            stuffed[i].clone()
        })
        .await
        .unwrap_or_else(|e| panic!("submission to sealpost failed: {e}\n{}", proxy_many.log()));
        sealpost_many.push(t);
        expected += WARMUP + N;
        let got = sink.wait_for_messages(expected, Duration::from_secs(30));
        assert_eq!(
            got.len(),
            expected,
            "one copy per message through sealpost (a')"
        );
        assert!(got[expected - 1].text().contains("multipart/encrypted"));

        // (c) gpg subprocess per message, then direct submission.
        let first = expected + WARMUP;
        let t = timed_session(sink.port, Security::Implicit, ca, &warm_gpg, |i| {
            dot_stuff(&msgs[i].gpg_gateway())
        })
        .await
        .unwrap_or_else(|e| panic!("gpg-gateway submission failed: {e}\n{}", sink.log()));
        gpg.push(t);
        expected += WARMUP + N;
        let got = sink.wait_for_messages(expected, Duration::from_secs(30));
        assert_eq!(got.len(), expected);
        if round == 0 {
            let sample = &got[first + N / 2];
            gpg_decrypt("bob", &armored(&sample.data)).assert_decrypted_signed_by("alice");
            gpg_size = sample.data.len();
        }
    }

    let rate = |d: Duration| N as f64 / d.as_secs_f64();
    let (md, ms, mg) = (median(&direct), median(&sealpost), median(&gpg));
    println!(
        "throughput, {N} messages per session, {ROUNDS} interleaved rounds (b, a, a', c), median:"
    );
    println!(
        "  {:<50} {:>9} {:>8}   all rounds (msgs/s)",
        "path", "time", "msgs/s"
    );
    for (label, v) in [
        ("(a) client -> sealpost (encrypt+sign) -> sink", &sealpost),
        (
            "(a') the same, 2,000 more certificates in the store",
            &sealpost_many,
        ),
        ("(b) client -> sink directly (no encryption)", &direct),
        ("(c) gpg --encrypt --sign subprocess, then -> sink", &gpg),
    ] {
        let all: Vec<String> = v.iter().map(|d| format!("{:.1}", rate(*d))).collect();
        println!(
            "  {label:<50} {:>9} {:>8.1}   [{}]",
            secs(median(v)),
            rate(median(v)),
            all.join(", ")
        );
    }
    println!(
        "  size as relayed: sealpost {encrypted_size} bytes (not compressed), gpg gateway \
         {gpg_size} bytes (gpg compresses), plain {}",
        msgs[N / 2].full().len()
    );
    let per_round = |a: &[Duration], b: &[Duration]| -> String {
        a.iter()
            .zip(b)
            .map(|(x, y)| format!("{:.3}", rate(*x) / rate(*y)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("ratios of msgs/s (medians; per round in brackets):");
    println!(
        "  sealpost / direct         = {:.3}  [{}]  (sealpost adds {:.2} ms per message)",
        rate(ms) / rate(md),
        per_round(&sealpost, &direct),
        (ms.as_secs_f64() - md.as_secs_f64()) * 1000.0 / N as f64
    );
    let mm = median(&sealpost_many);
    println!(
        "  large store / small store = {:.3}  [{}]  (the large store adds {:.2} ms per message)",
        rate(mm) / rate(ms),
        per_round(&sealpost_many, &sealpost),
        (mm.as_secs_f64() - ms.as_secs_f64()) * 1000.0 / N as f64
    );
    println!(
        "  sealpost / gpg-subprocess = {:.3}  [{}]",
        rate(ms) / rate(mg),
        per_round(&sealpost, &gpg)
    );
    drop(proxy);
    drop(proxy_many);

    // (d) peak memory while relaying one big message, in a fresh process.
    let mut opts = ProxyOptions::new(sink.port);
    opts.import = vec![kr.bob().pub_asc.clone()];
    opts.extra = format!("[limits]\nmax_message_size = {}\n", 64 * 1024 * 1024);
    let proxy = BenchProxy::start(&bin, ca, &opts);
    std::thread::sleep(Duration::from_millis(300));
    let pid = proxy.pid();
    let base_hwm = proc_status_bytes(pid, "VmHWM");
    let base_rss = proc_status_bytes(pid, "VmRSS");
    let big = Msg::new(9999, BIG_SIZE, &mut rng).full();
    let big_stuffed = dot_stuff(&big);
    let t0 = Instant::now();
    let mut c = SmtpClient::open(proxy.smtp_port, Security::StartTls, ca)
        .await
        .unwrap_or_else(|e| panic!("connect to sealpost: {e}"));
    c.send(FROM, TO, &big_stuffed)
        .await
        .unwrap_or_else(|e| panic!("25 MiB message refused: {e}\n{}", proxy.log()));
    let big_time = t0.elapsed();
    let peak_hwm = proc_status_bytes(pid, "VmHWM");
    let after_rss = proc_status_bytes(pid, "VmRSS");
    c.quit().await;
    expected += 1;
    let got = sink.wait_for_messages(expected, Duration::from_secs(60));
    let relayed = got.last().unwrap().data.len();
    let delta = peak_hwm.saturating_sub(base_hwm);
    println!(
        "\npeak memory of a fresh sealpost process relaying ONE {} message ({} bytes; relayed as {}):",
        mib(big.len() as u64),
        big.len(),
        mib(relayed as u64)
    );
    println!(
        "  baseline after startup: VmHWM {}  (VmRSS {})",
        mib(base_hwm),
        mib(base_rss)
    );
    println!(
        "  after the message was accepted: VmHWM {}  (VmRSS {})",
        mib(peak_hwm),
        mib(after_rss)
    );
    println!(
        "  (peak - baseline) / message size = {} / {} = {:.2}",
        mib(delta),
        mib(big.len() as u64),
        delta as f64 / big.len() as f64
    );
    println!(
        "  submission of the big message took {} (connect+STARTTLS+AUTH+DATA until 250)",
        secs(big_time)
    );
    drop(proxy);

    // (e) the same with two Bcc recipients (three encrypted copies, each built just
    // before it is sent), in a fresh process: the peak should not grow with the copies.
    let mut opts = ProxyOptions::new(sink.port);
    opts.import = ["bob", "carol", "dave"]
        .iter()
        .map(|p| kr.person(p).pub_asc.clone())
        .collect();
    opts.extra = format!("[limits]\nmax_message_size = {}\n", 64 * 1024 * 1024);
    let proxy = BenchProxy::start(&bin, ca, &opts);
    std::thread::sleep(Duration::from_millis(300));
    let pid = proxy.pid();
    let bcc_base = proc_status_bytes(pid, "VmHWM");
    let mut c = SmtpClient::open(proxy.smtp_port, Security::StartTls, ca)
        .await
        .unwrap_or_else(|e| panic!("connect to sealpost: {e}"));
    let bcc = ["carol@example.org", "dave@example.net"];
    let mut rcpts = vec![TO];
    rcpts.extend(bcc);
    c.send_to(FROM, &rcpts, &big_stuffed)
        .await
        .unwrap_or_else(|e| panic!("25 MiB message with Bcc refused: {e}\n{}", proxy.log()));
    let bcc_peak = proc_status_bytes(pid, "VmHWM");
    c.quit().await;
    expected += 1 + bcc.len();
    let got = sink.wait_for_messages(expected, Duration::from_secs(120));
    let copies = got.len() - (expected - 1 - bcc.len());
    let bcc_delta = bcc_peak.saturating_sub(bcc_base);
    println!(
        "\npeak memory relaying the same message to 1 recipient + {} Bcc ({} copies relayed): {} above baseline; / one copy's peak: {:.2}",
        bcc.len(),
        copies,
        mib(bcc_delta),
        bcc_delta as f64 / delta.max(1) as f64
    );
    drop(proxy);

    // (f) 20 parallel sessions, 2,000 messages: throughput through sealpost against
    // directly, every message arriving exactly once, sealpost's RSS across the run.
    let mut opts = ProxyOptions::new(sink.port);
    opts.import = vec![kr.bob().pub_asc.clone()];
    let proxy = BenchProxy::start(&bin, ca, &opts);
    let pid = proxy.pid();
    let load: Vec<Vec<u8>> = (0..SESSIONS * PER_SESSION)
        .map(|i| dot_stuff(&Msg::new(100_000 + i, MSG_SIZE, &mut rng).full()))
        .collect();
    let load = std::sync::Arc::new(load);
    let (mut par_direct, mut par_sealpost) = (Vec::new(), Vec::new());
    let mut rss_samples = Vec::new();
    for _round in 0..2 {
        let (t, _) = parallel(sink.port, Security::Implicit, ca, load.clone(), None)
            .await
            .unwrap_or_else(|e| panic!("parallel direct submission failed: {e}\n{}", sink.log()));
        par_direct.push(t);
        expected += load.len();
        assert_eq!(
            sink.wait_for_messages(expected, Duration::from_secs(120))
                .len(),
            expected
        );

        let first = expected;
        let (t, rss) = parallel(
            proxy.smtp_port,
            Security::StartTls,
            ca,
            load.clone(),
            Some(pid),
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "parallel submission to sealpost failed: {e}\n{}",
                proxy.log()
            )
        });
        par_sealpost.push(t);
        rss_samples = rss;
        expected += load.len();
        let got = sink.wait_for_messages(expected, Duration::from_secs(120));
        assert_eq!(got.len(), expected, "one copy per message through sealpost");
        // Exactly once: every Message-ID of the load among the new messages, once.
        let mut seen = std::collections::HashMap::new();
        for m in &got[first..] {
            let text = m.text();
            let id = text
                .lines()
                .find_map(|l| l.strip_prefix("Message-ID: "))
                .unwrap_or_else(|| panic!("a relayed message without Message-ID"))
                .to_owned();
            *seen.entry(id).or_insert(0usize) += 1;
        }
        assert_eq!(seen.len(), load.len(), "every message arrived");
        assert!(seen.values().all(|&n| n == 1), "a message arrived twice");
    }
    let (pd, ps) = (median(&par_direct), median(&par_sealpost));
    let total = load.len() as f64;
    println!(
        "\n{SESSIONS} parallel sessions, {} messages of {} bytes, 2 interleaved rounds (direct, sealpost), median:",
        load.len(),
        MSG_SIZE
    );
    println!(
        "  direct {} ({:.0} msgs/s), through sealpost {} ({:.0} msgs/s): sealpost / direct = {:.3}",
        secs(pd),
        total / pd.as_secs_f64(),
        secs(ps),
        total / ps.as_secs_f64(),
        pd.as_secs_f64() / ps.as_secs_f64()
    );
    println!("  every message arrived exactly once (Message-IDs counted at the sink), both rounds");
    // Flat: after the first quarter of the run, RSS stays within a bound.
    let quarter = rss_samples.len() / 4;
    let settled = rss_samples[quarter..].iter().copied().min().unwrap_or(0);
    let top = rss_samples[quarter..].iter().copied().max().unwrap_or(0);
    println!(
        "  sealpost RSS during the last round ({} samples): first {}, after a quarter {}, max {}, last {}",
        rss_samples.len(),
        mib(rss_samples[0]),
        mib(rss_samples[quarter]),
        mib(top),
        mib(*rss_samples.last().unwrap())
    );
    assert!(
        top <= settled + 32 * 1024 * 1024,
        "sealpost's RSS grew through the run: {} to {}",
        mib(settled),
        mib(top)
    );
    drop(proxy);
    drop(sink);
    println!("\ntotal benchmark wall time: {}", secs(t_all.elapsed()));
}

const SESSIONS: usize = 20;
const PER_SESSION: usize = 100;

/// Sends `load` over `SESSIONS` concurrent sessions (session k sends messages k,
/// k + SESSIONS, ...); returns the time until the last one was accepted and, with
/// `watch`, that process's RSS sampled every 100 ms meanwhile.
async fn parallel(
    port: u16,
    security: Security,
    ca: &'static TestCa,
    load: std::sync::Arc<Vec<Vec<u8>>>,
    watch: Option<u32>,
) -> Res<(Duration, Vec<u64>)> {
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..SESSIONS {
        let load = load.clone();
        tasks.spawn(async move {
            let mut c = SmtpClient::open(port, security, ca).await?;
            for m in load.iter().skip(k).step_by(SESSIONS) {
                c.send(FROM, TO, m).await?;
            }
            c.quit().await;
            Ok::<(), String>(())
        });
    }
    let mut rss = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            done = tasks.join_next() => match done {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(e)) => return Err(format!("session task: {e}")),
            },
            _ = tick.tick() => {
                if let Some(pid) = watch {
                    rss.push(proc_status_bytes(pid, "VmRSS"));
                }
            }
        }
    }
    let elapsed = t0.elapsed();
    if let Some(pid) = watch {
        rss.push(proc_status_bytes(pid, "VmRSS"));
    }
    Ok((elapsed, rss))
}
