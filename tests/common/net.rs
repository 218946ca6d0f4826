//! Ports, waiting, and running Debian's python3 (smtplib as a real client).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

/// Always Debian's interpreter: the pyenv `python3` on PATH lacks aiosmtpd.
pub const PYTHON: &str = "/usr/bin/python3";

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Lower bound of the kernel's ephemeral (outgoing source) port range.
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

fn seed() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 32)
}

/// A currently free TCP port on 127.0.0.1. Never returns the same port twice
/// within one test process (tests run in parallel threads).
///
/// Only for what can neither listen on port 0 nor take a listening socket handed to it
/// (Postfix: its master looks a service's port up by name, and "0" names none;
/// PostgreSQL and HAProxy refuse port 0), and for a port where nothing must listen:
/// another process can still take the port before the server's bind, so their starts
/// retry with another pick. sealpost, the SMTP sink and the key server bind port 0 and
/// report their ports; Cyrus listens on port 0 and its ports are read off its sockets;
/// Dovecot takes sockets bound to port 0 by systemd's socket activation
/// (`tests/support/listen_fds.py`).
///
/// Ports are taken at random from *below* the kernel's ephemeral range
/// (10000..low), so that the source port of a concurrent outgoing connection
/// cannot take the port between this call and the server's bind, and are
/// checked by a connect probe (nothing listening).
pub fn free_port() -> u16 {
    let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let used = guard.get_or_insert_with(HashSet::new);
    let low = 10000u16;
    let high = ephemeral_low();
    if high > low + 1000 {
        let span = u64::from(high - low);
        let mut x = seed() | 1;
        for _ in 0..2000 {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let port = low + (x % span) as u16;
            if used.contains(&port) {
                continue;
            }
            // Probe by connecting, not by binding: a probe socket bound here
            // can outlive its close() for a moment in a child that another
            // thread is forking (gpg, python...), making the caller's own
            // bind fail with EADDRINUSE.
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                used.insert(port);
                return port;
            }
        }
    }
    for _ in 0..1000 {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local_addr").port();
        if used.insert(port) {
            return port;
        }
    }
    panic!("free_port: could not find an unused port");
}

/// The start-up handshake of a server the tests spawn with its stdout piped, told to
/// listen on port 0 (`tests/support/*.py`): a line `PORT n` with the port the kernel
/// gave it, then `READY` once it serves. Returns the port; stdout is drained for the
/// rest of the child's life. The error says what was missing (the caller adds its log).
pub fn read_port_and_ready(child: &mut Child, timeout: Duration) -> Result<u16, String> {
    let stdout = child
        .stdout
        .take()
        .ok_or("the child's stdout is not piped")?;
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + timeout;
    let mut port = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).map_err(|e| match port {
            None => format!("no `PORT n` line ({e})"),
            Some(p) => format!("PORT {p} but no READY ({e})"),
        })?;
        match (port, line.trim().split_once(' ')) {
            (None, Some(("PORT", n))) => {
                let n: u16 = n.parse().map_err(|_| format!("bad port line {line:?}"))?;
                if n == 0 {
                    return Err("it reported port 0".into());
                }
                port = Some(n);
            }
            (Some(p), None) if line.trim() == "READY" => return Ok(p),
            _ => {}
        }
    }
}

/// Block until something accepts TCP connections on 127.0.0.1:`port`.
/// Panics with a clear message on timeout.
pub fn wait_for_port(port: u16, timeout: Duration) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(250)) {
            Ok(_) => return,
            Err(e) => {
                if Instant::now() >= deadline {
                    panic!(
                        "wait_for_port: nothing listening on 127.0.0.1:{port} after {timeout:?} \
                         (last error: {e})"
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Run `/usr/bin/python3 -c script args...` and return its output.
pub fn run_python(script: &str, args: &[&str]) -> Output {
    run_python_stdin(script, args, &[])
}

/// Like [`run_python`], feeding `stdin` to the script.
pub fn run_python_stdin(script: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(PYTHON)
        .arg("-c")
        .arg(script)
        .args(args)
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {PYTHON}: {e}"));
    let mut sin = child.stdin.take().expect("python stdin");
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        // The script may not read stdin at all; ignore EPIPE.
        let _ = sin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for python");
    let _ = writer.join();
    out
}

/// Run a python script, panic (showing stderr) unless it exits 0; return
/// stdout as a String.
pub fn run_python_ok(script: &str, args: &[&str]) -> String {
    let out = run_python(script, args);
    if !out.status.success() {
        panic!(
            "python script failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How [`py_sendmail`] connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PySendMode {
    /// Plain text, no TLS at all.
    Plain,
    /// Plain text, then STARTTLS (always issued).
    StartTls,
    /// Implicit TLS (SMTP_SSL).
    Tls,
}

/// One SMTP submission made with python's smtplib.
#[derive(Debug, Clone)]
pub struct PySend<'a> {
    pub port: u16,
    pub mode: PySendMode,
    /// CA to verify the server certificate against (hostname checked against
    /// 127.0.0.1). `None` disables verification.
    pub cafile: Option<&'a Path>,
    /// AUTH credentials (smtplib picks PLAIN/LOGIN as offered).
    pub login: Option<(&'a str, &'a str)>,
    pub mail_from: &'a str,
    pub rcpt_tos: &'a [&'a str],
    /// Message bytes; smtplib does dot-stuffing and turns bare LF into CRLF.
    pub data: &'a [u8],
    /// e.g. `["BODY=8BITMIME", "SMTPUTF8"]`.
    pub mail_options: &'a [&'a str],
}

impl<'a> PySend<'a> {
    pub fn new(
        port: u16,
        mode: PySendMode,
        mail_from: &'a str,
        rcpt_tos: &'a [&'a str],
        data: &'a [u8],
    ) -> Self {
        PySend {
            port,
            mode,
            cafile: None,
            login: None,
            mail_from,
            rcpt_tos,
            data,
            mail_options: &[],
        }
    }
}

/// Outcome of [`py_sendmail`].
#[derive(Debug, Clone)]
pub struct PySendResult {
    /// Message accepted for at least one recipient.
    pub ok: bool,
    /// Recipients refused at RCPT time: (address, code).
    pub refused: Vec<(String, u16)>,
    /// SMTP error code of a failure (AUTH/MAIL/DATA...), 0 if none / not SMTP.
    pub code: u16,
    /// Error text (SMTP reply text or python exception).
    pub error: String,
    pub stdout: String,
    pub stderr: String,
}

const PY_SENDMAIL: &str = r#"
import smtplib, ssl, sys
port, mode, cafile, user, password, opts = sys.argv[1:7]
mail_from = sys.argv[7]
rcpts = sys.argv[8:]
data = sys.stdin.buffer.read()
def ctx():
    if cafile == "-":
        c = ssl.create_default_context()
        c.check_hostname = False
        c.verify_mode = ssl.CERT_NONE
        return c
    return ssl.create_default_context(cafile=cafile)
try:
    if mode == "tls":
        s = smtplib.SMTP_SSL("127.0.0.1", int(port), context=ctx(), timeout=120)
    else:
        s = smtplib.SMTP("127.0.0.1", int(port), timeout=120)
    s.ehlo("client.test")
    if mode == "starttls":
        s.starttls(context=ctx())
        s.ehlo("client.test")
    if user != "-":
        s.login(user, password)
    refused = s.sendmail(mail_from, rcpts, data, mail_options=[o for o in opts.split(" ") if o])
    for r, (code, msg) in refused.items():
        print("REFUSED", code, r)
    print("OK")
    try:
        s.quit()
    except Exception:
        pass
except smtplib.SMTPRecipientsRefused as e:
    for r, (code, msg) in e.recipients.items():
        print("REFUSED", code, r)
    print("ERR 0 all recipients refused")
    sys.exit(1)
except smtplib.SMTPResponseException as e:
    msg = e.smtp_error.decode("utf-8", "replace") if isinstance(e.smtp_error, bytes) else str(e.smtp_error)
    print("ERR", e.smtp_code, msg.replace("\n", " "))
    sys.exit(1)
except Exception as e:
    print("ERR 0", repr(e).replace("\n", " "))
    sys.exit(1)
"#;

/// Submit one message with python smtplib and report what happened. Never
/// panics on SMTP errors (inspect the result).
pub fn py_sendmail(p: &PySend<'_>) -> PySendResult {
    let port = p.port.to_string();
    let mode = match p.mode {
        PySendMode::Plain => "plain",
        PySendMode::StartTls => "starttls",
        PySendMode::Tls => "tls",
    };
    let cafile = p
        .cafile
        .map(|c| c.to_str().expect("utf-8 cafile path").to_owned())
        .unwrap_or_else(|| "-".to_owned());
    let (user, pass) = p.login.unwrap_or(("-", "-"));
    let opts = p.mail_options.join(" ");
    let mut args: Vec<&str> = vec![&port, mode, &cafile, user, pass, &opts, p.mail_from];
    args.extend_from_slice(p.rcpt_tos);
    let out = run_python_stdin(PY_SENDMAIL, &args, p.data);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut res = PySendResult {
        ok: false,
        refused: Vec::new(),
        code: 0,
        error: String::new(),
        stdout: stdout.clone(),
        stderr,
    };
    for line in stdout.lines() {
        if line == "OK" {
            res.ok = true;
        } else if let Some(rest) = line.strip_prefix("REFUSED ") {
            let (code, addr) = rest.split_once(' ').unwrap_or((rest, ""));
            res.refused
                .push((addr.to_owned(), code.parse().unwrap_or(0)));
        } else if let Some(rest) = line.strip_prefix("ERR ") {
            let (code, msg) = rest.split_once(' ').unwrap_or((rest, ""));
            res.code = code.parse().unwrap_or(0);
            res.error = msg.to_owned();
        }
    }
    if !res.ok && res.error.is_empty() {
        res.error = format!("python failed without a result line: {}", res.stderr);
    }
    res
}
