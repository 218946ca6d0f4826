//! The README's load-balancer guide, run as written: a real HAProxy with the README's
//! haproxy.cfg in front of two `sealpost run` instances with the README's config (the
//! only changes: ports, paths, the upstreams and the test certificate), relaying to the
//! test upstreams (aiosmtpd over TLS, Dovecot). Mail goes through HAProxy with smtplib
//! and imaplib; sealpost must see each client's own address, serve HAProxy's health
//! checks, and refuse a client that bypasses HAProxy.

mod common;

use common::listeners::{wait_for_bound, Listener};
use common::proxy::{sealpost_bin, sealpost_cmd};
use common::{run_python, Dovecot, Sink, SinkMode, TestCa};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const USER: &str = "alice@example.com";
const PASS: &str = "alicepw";

/// The first fenced block of `lang` in the README's load-balancer section.
fn readme_block(lang: &str) -> String {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = text
        .find("### Behind a load balancer")
        .expect("README has the load-balancer section");
    let section = &text[start..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let open = format!("```{lang}\n");
    let from = section.find(&open).expect("block in the section") + open.len();
    let len = section[from..].find("```").unwrap();
    section[from..from + len].to_string()
}

/// A child process killed (and reaped) on drop; its stderr goes to `log`.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn spawn(cmd: &mut Command, log: PathBuf) -> Running {
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
        Running { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {}:\n{}", self.log.display(), self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// smtplib and imaplib, printing their source port first (`source N`) so that sealpost's
/// log can be matched against the client's own address (everything runs on 127.0.0.1).
const PY: &str = r#"
import imaplib, smtplib, ssl, sys
kind, port, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile)
if kind == "smtp":
    s = smtplib.SMTP("127.0.0.1", port, timeout=20)
    print("source", s.sock.getsockname()[1])
    s.starttls(context=ctx)
    s.login("sinkuser", "sinkpass")
    s.sendmail("alice@example.com", ["carol@example.org"],
               "From: alice@example.com\r\nTo: carol@example.org\r\nSubject: through haproxy\r\n\r\nbody\r\n")
    s.quit()
    print("sent")
else:
    m = imaplib.IMAP4("127.0.0.1", port, timeout=20)
    print("source", m.sock.getsockname()[1])
    m.starttls(ssl_context=ctx)
    m.login(sys.argv[4], sys.argv[5])
    print("select", m.select("INBOX")[0])
    m.logout()
"#;

/// Runs [`PY`]; returns its output and the client's source port.
fn client(kind: &str, port: u16, ca: &TestCa) -> (String, u16) {
    let out = run_python(
        PY,
        &[
            kind,
            &port.to_string(),
            &ca.ca_pem.display().to_string(),
            USER,
            PASS,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{kind} through HAProxy: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let source = text
        .lines()
        .find_map(|l| l.strip_prefix("source ")?.parse().ok())
        .unwrap_or_else(|| panic!("{kind}: no source port in {text}"));
    (text, source)
}

/// HAProxy with `cfg` (the README's, backends filled in), its frontends on 127.0.0.1;
/// returns it and the SMTP and IMAP frontend ports. HAProxy refuses `bind 127.0.0.1:0`,
/// so its frontends take sockets bound to ports the kernel picked, handed to it as
/// descriptors 3 and 4 (`bind fd@3`, see `common::child::spawn_on_listeners`).
fn start_haproxy(dir: &Path, cfg: &str) -> (Running, u16, u16) {
    let cfg = cfg
        .replace("bind :587", "bind fd@3")
        .replace("bind :143", "bind fd@4");
    let cfg_path = dir.join("haproxy.cfg");
    std::fs::write(&cfg_path, &cfg).unwrap();
    // The check opens the descriptors too: it runs on sockets of its own.
    let check_log = dir.join("haproxy-check.log");
    let (mut check, _) = common::child::spawn_on_listeners(
        2,
        Path::new("/usr/sbin/haproxy"),
        &["-c".as_ref(), "-f".as_ref(), cfg_path.as_os_str()],
        &check_log,
        |_| {},
    )
    .expect("run haproxy (Debian package haproxy; scripts/deps.sh test installs it)");
    let checked = check.wait().unwrap();
    assert!(
        checked.success(),
        "haproxy -c: {}",
        std::fs::read_to_string(&check_log).unwrap_or_default()
    );
    let log = dir.join("haproxy.log");
    let (child, ports) = common::child::spawn_on_listeners(
        2,
        Path::new("/usr/sbin/haproxy"),
        &["-db".as_ref(), "-f".as_ref(), cfg_path.as_os_str()],
        &log,
        |_| {},
    )
    .unwrap_or_else(|e| panic!("HAProxy did not start: {e}"));
    let mut haproxy = Running { child, log };
    let (smtp, imap) = (ports[0], ports[1]);
    // Accepting is not enough (the sockets listen before HAProxy runs): a frontend
    // answers with its backend's greeting once HAProxy serves it.
    let greets = |port| {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut b = [0u8; 1];
        matches!(s.read(&mut b), Ok(1))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = haproxy.child.try_wait().unwrap() {
            panic!("HAProxy exited ({status}):\n{}", haproxy.log());
        }
        if greets(smtp) && greets(imap) {
            return (haproxy, smtp, imap);
        }
        assert!(
            Instant::now() < deadline,
            "HAProxy did not serve {smtp} and {imap} within 10 s:\n{}",
            haproxy.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_until(what: &str, timeout: Duration, f: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn haproxy_in_front_of_two_instances_as_the_readme_shows() {
    let ca = TestCa::shared();
    let sink = Sink::start(ca, SinkMode::Tls);
    let dovecot = Dovecot::start(ca, &[(USER, PASS)]);
    let dir = common::tempdir();
    let state = dir.path().join("state");

    // The README's sealpost config, for instance a and (as its comment says) b.
    let readme_toml = readme_block("toml");
    let test_tail = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n[keys]\ndir = \"{}/keys\"\nextra_ca = \"{}\"\ndiscover = [\"store\"]\n",
        ca.cert_pem.display(),
        ca.key_pem.display(),
        state.display(),
        ca.ca_pem.display()
    );
    // sealpost's listeners on port 0: their ports are read from the logs.
    let instance_config = |name: &str| {
        let text = readme_toml
            .replace("instance = \"a\"", &format!("instance = \"{name}\""))
            .replace("127.0.0.1:2587", "127.0.0.1:0")
            .replace("127.0.0.1:2143", "127.0.0.1:0")
            .replace("/var/lib/sealpost", &state.display().to_string())
            .replace("mail.corp.example:465", &format!("localhost:{}", sink.port))
            .replace(
                "mail.corp.example:993",
                &format!("localhost:{}", dovecot.imaps_port),
            );
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, format!("{text}{test_tail}")).unwrap();
        path
    };
    let a_config = instance_config("a");
    let b_config = instance_config("b");
    let start = |config: &Path, name: &str| {
        Running::spawn(
            Command::new(sealpost_bin())
                .args(["run", "--config"])
                .arg(config)
                .env("SEALPOST_LOG", "debug"),
            dir.path().join(format!("{name}.log")),
        )
    };
    let (mut a, mut b) = (start(&a_config, "a"), start(&b_config, "b"));
    let ports = |config: &Path, instance: &mut Running| {
        let bound = wait_for_bound(
            config,
            &instance.log,
            0,
            &mut instance.child,
            Duration::from_secs(30),
        );
        (
            bound.port(&Listener::smtp("corp", false)),
            bound.port(&Listener::imap("corp", false)),
        )
    };
    let (a_smtp, a_imap) = ports(&a_config, &mut a);
    let (b_smtp, b_imap) = ports(&b_config, &mut b);

    // The README's haproxy.cfg, on test ports.
    let cfg = readme_block("cfg");
    for server in [
        "127.0.0.1:2587",
        "127.0.0.1:2588",
        "127.0.0.1:2143",
        "127.0.0.1:2144",
    ] {
        assert!(cfg.contains(server), "README's haproxy.cfg lost {server}");
    }
    let cfg = cfg
        .replace("127.0.0.1:2587", &format!("127.0.0.1:{a_smtp}"))
        .replace("127.0.0.1:2588", &format!("127.0.0.1:{b_smtp}"))
        .replace("127.0.0.1:2143", &format!("127.0.0.1:{a_imap}"))
        .replace("127.0.0.1:2144", &format!("127.0.0.1:{b_imap}"));
    // What the instances logged so far is their start; count from here.
    let (a_mark, b_mark) = (a.log().len(), b.log().len());
    let (haproxy, lb_smtp, lb_imap) = start_haproxy(dir.path(), &cfg);

    // HAProxy's health checks (LOCAL headers) are greeted as the balancer: sessions
    // with no `via`, and not a single refusal.
    let checks = |log: &str, protocol: &str| {
        log.lines()
            .filter(|l| l.contains(&format!("{protocol}{{account=corp peer=127.0.0.1:")))
            .filter(|l| !l.contains("via="))
            .count()
    };
    wait_until(
        "health checks of both backends",
        Duration::from_secs(20),
        || {
            let (la, lb) = (a.log(), b.log());
            let (la, lb) = (&la[a_mark..], &lb[b_mark..]);
            checks(la, "smtp") >= 2
                && checks(lb, "smtp") >= 2
                && checks(la, "imap") >= 2
                && checks(lb, "imap") >= 2
        },
    );
    for (name, log, mark) in [("a", a.log(), a_mark), ("b", b.log(), b_mark)] {
        assert!(
            !log[mark..].contains("connection refused"),
            "instance {name} refused HAProxy:\n{}",
            &log[mark..]
        );
    }

    // Mail through HAProxy: each client's own address (its source port) in the logs.
    let mut sources = Vec::new();
    for _ in 0..4 {
        let (said, source) = client("smtp", lb_smtp, ca);
        assert!(said.contains("sent"), "{said}");
        sources.push(source);
    }
    assert_eq!(sink.wait_for_messages(4, Duration::from_secs(20)).len(), 4);
    for _ in 0..2 {
        let (said, source) = client("imap", lb_imap, ca);
        assert!(said.contains("select OK"), "{said}");
        sources.push(source);
    }
    let (la, lb) = (a.log(), b.log());
    for source in &sources {
        let seen = format!("peer=127.0.0.1:{source} via=127.0.0.1:");
        assert!(
            la.contains(&seen) || lb.contains(&seen),
            "no instance logged the client as {seen}"
        );
    }
    // Both instances took mail.
    for (name, log) in [("a", &la), ("b", &lb)] {
        assert!(
            log.contains("smtp{account=corp peer=127.0.0.1:") && log.contains("message relayed"),
            "instance {name} relayed nothing"
        );
    }
    assert!(!la.contains("sinkpass") && !lb.contains("sinkpass") && !la.contains(PASS));

    // A client that bypasses HAProxy is refused before any greeting.
    for port in [a_smtp, b_imap] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"EHLO direct\r\n").unwrap();
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("a direct connection to {port} was answered: {other:?}"),
        }
    }
    wait_until("the bypass is logged", Duration::from_secs(5), || {
        a.log()[a_mark..].contains("connection refused")
            && b.log()[b_mark..].contains("connection refused")
    });

    // The two instances share state_dir; each answers `sealpost status` on its own socket.
    for (config, instance, name) in [(&a_config, &a, "a"), (&b_config, &b, "b")] {
        let out = sealpost_cmd(config, &["status", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["pid"], instance.child.id(), "status of {name}");
        assert!(state.join(format!("control-{name}.sock")).exists());
    }
    drop(haproxy);
}
