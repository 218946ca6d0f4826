//! `sealpost seal` against a real Dovecot: the stored plain mail becomes sealed copies,
//! every message, flag and INTERNALDATE kept, nothing copied twice after an interrupted
//! run, and a server without UIDPLUS left untouched.

mod common;

use common::dovecot::Dovecot;
use common::imapclients::{parse_fetches, Fetch, RawImap};
use common::proxy::{sealpost_cmd, Proxy, ProxyOptions};
use common::{gpg_encrypt, TestCa};

const USER: &str = "alice@example.com";
const PASS: &str = "alicepw";

fn plain(n: u32) -> Vec<u8> {
    format!("From: Bob <bob@example.org>\r\nTo: alice@example.com\r\nSubject: Quarterly note {n}\r\nDate: Mon, 0{n} Nov 2026 09:00:00 +0000\r\nMessage-ID: <q{n}@example.org>\r\n\r\nRevenue line {n}: 4.{n} million.\r\n")
        .into_bytes()
}

fn encrypted() -> Vec<u8> {
    let mut m =
        b"From: bob@example.org\r\nTo: alice@example.com\r\nSubject: already\r\n\r\n".to_vec();
    for line in String::from_utf8_lossy(&gpg_encrypt(Some("bob"), &["alice"], b"x\n", true)).lines()
    {
        m.extend_from_slice(line.as_bytes());
        m.extend_from_slice(b"\r\n");
    }
    m
}

fn fetch_all(c: &mut RawImap, mailbox: &str) -> Vec<Fetch> {
    c.command_ok(&format!("EXAMINE {mailbox}"));
    let raw = c.command_ok("UID FETCH 1:* (UID FLAGS INTERNALDATE BODY.PEEK[])");
    parse_fetches(&raw)
}

fn appended(d: &mut RawImap, msg: &[u8], flags: &str, date: &str) {
    let r = d.command_with_literal(&format!("APPEND INBOX ({flags}) \"{date}\""), msg, "");
    assert!(r.is_ok(), "{}", r.tagged_text());
}

fn password_file(dir: &std::path::Path) -> String {
    let p = dir.join("imap-password");
    std::fs::write(&p, format!("{PASS}\n")).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn seal_replaces_plain_mail_with_verified_copies_and_resumes_without_duplicates() {
    let ca = TestCa::shared();
    let dovecot = Dovecot::start(ca, &[(USER, PASS)]);
    let mut d = dovecot.session(USER, PASS);
    appended(&mut d, &plain(1), "\\Seen", "01-Nov-2026 09:00:00 +0000");
    appended(
        &mut d,
        &plain(2),
        "\\Flagged $Label1",
        "02-Nov-2026 09:00:00 +0000",
    );
    // Marked deleted by the user, not expunged: sealing must not expunge it for them.
    appended(&mut d, &plain(3), "\\Deleted", "03-Nov-2026 09:00:00 +0000");
    let already = encrypted();
    appended(&mut d, &already, "", "04-Nov-2026 09:00:00 +0000");
    appended(&mut d, &plain(5), "", "05-Nov-2026 09:00:00 +0000");

    let mut opts = ProxyOptions::new(1);
    opts.imap_upstream = Some((dovecot.imaps_port, "tls"));
    opts.alice_login = USER.into();
    let proxy = Proxy::start(ca, &opts);
    // An interrupted earlier run: message 5's copy was stored (here through sealpost's
    // own APPEND, which seals the same way), its original not yet removed.
    let mut c = RawImap::connect_login(proxy.imap_port, "starttls", Some(&ca.ca_pem), USER, PASS);
    appended(&mut c, &plain(5), "", "05-Nov-2026 09:00:00 +0000");

    let pw = password_file(proxy.dir.path());
    let seal = |extra: &[&str]| {
        let mut args = vec![
            "seal",
            "--login",
            USER,
            "--mailbox",
            "INBOX",
            "--password-file",
            &pw,
        ];
        args.extend_from_slice(extra);
        sealpost_cmd(&proxy.config, &args)
    };
    // A dry run changes nothing.
    let before = fetch_all(&mut d, "INBOX");
    let out = seal(&["--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(
            "would seal 3, already encrypted 2, finished from an earlier run 1, failed 0"
        ),
        "{text}"
    );
    assert_eq!(fetch_all(&mut d, "INBOX").len(), before.len());

    let out = seal(&[]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("sealed 3, already encrypted 2, finished from an earlier run 1, failed 0"),
        "{text}"
    );

    // At the provider: five messages, no plaintext, flags and dates as they were.
    let after = fetch_all(&mut d, "INBOX");
    assert_eq!(after.len(), 5, "nothing lost, nothing twice");
    for f in &after {
        let body = String::from_utf8_lossy(f.get("BODY[]").unwrap());
        assert!(
            !body.contains("Revenue") && !body.contains("Quarterly"),
            "{body}"
        );
        assert!(body.contains("multipart/encrypted") || body.contains("BEGIN PGP MESSAGE"));
    }
    let dates: Vec<String> = after
        .iter()
        .map(|f| String::from_utf8_lossy(f.get("INTERNALDATE").unwrap()).into_owned())
        .collect();
    for day in 1..=5 {
        assert!(
            dates
                .iter()
                .any(|d| d.starts_with(&format!("0{day}-Nov-2026"))),
            "{dates:?}"
        );
    }
    // Through sealpost: the originals, byte for byte, with their flags.
    let through = fetch_all(&mut c, "INBOX");
    for (n, flags) in [(1, "\\Seen"), (2, "\\Flagged"), (3, "\\Deleted")] {
        let f = through
            .iter()
            .find(|f| f.get("BODY[]") == Some(plain(n).as_slice()))
            .unwrap_or_else(|| panic!("message {n} lost"));
        assert!(
            f.flags().unwrap().contains(&flags.to_string()),
            "{n}: {:?}",
            f.flags()
        );
    }
    assert!(through
        .iter()
        .any(|f| f.get("BODY[]") == Some(plain(5).as_slice())));
    // Mail encrypted already is left as it was stored.
    assert!(after
        .iter()
        .any(|f| f.get("BODY[]") == Some(already.as_slice())));

    // A second run finds nothing left to do.
    let out = seal(&[]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("sealed 0, already encrypted 5, finished from an earlier run 0, failed 0"),
        "{text}"
    );

    // unseal gives back the originals, byte for byte, flags and dates as they were.
    let out = sealpost_cmd(
        &proxy.config,
        &[
            "unseal",
            "--login",
            USER,
            "--mailbox",
            "INBOX",
            "--password-file",
            &pw,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("unsealed 4, other encrypted 1, finished from an earlier run 0, failed 0"),
        "{text}"
    );
    let restored = fetch_all(&mut d, "INBOX");
    assert_eq!(restored.len(), 5);
    for (n, flags, day) in [
        (1, "\\Seen", "01"),
        (2, "$Label1", "02"),
        (3, "\\Deleted", "03"),
        (5, "", "05"),
    ] {
        let f = restored
            .iter()
            .find(|f| f.get("BODY[]") == Some(plain(n).as_slice()))
            .unwrap_or_else(|| panic!("original {n} not restored"));
        assert!(flags.is_empty() || f.flags().unwrap().contains(&flags.to_string()));
        let date = String::from_utf8_lossy(f.get("INTERNALDATE").unwrap()).into_owned();
        assert!(date.starts_with(&format!("{day}-Nov-2026")), "{date}");
    }
    assert!(restored
        .iter()
        .any(|f| f.get("BODY[]") == Some(already.as_slice())));
}

#[test]
fn a_server_without_uidplus_is_left_untouched() {
    let ca = TestCa::shared();
    let dovecot = Dovecot::start_with(
        ca,
        &[(USER, PASS)],
        "imap_capability = IMAP4rev1 LITERAL+ IDLE\n",
    );
    let mut d = dovecot.session(USER, PASS);
    appended(&mut d, &plain(1), "", "01-Nov-2026 09:00:00 +0000");
    let mut opts = ProxyOptions::new(1);
    opts.imap_upstream = Some((dovecot.imaps_port, "tls"));
    opts.alice_login = USER.into();
    let proxy = Proxy::start(ca, &opts);
    let pw = password_file(proxy.dir.path());
    let out = sealpost_cmd(
        &proxy.config,
        &["seal", "--login", USER, "--password-file", &pw],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not offer UIDPLUS"), "{err}");
    let after = fetch_all(&mut d, "INBOX");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].get("BODY[]").unwrap(), plain(1).as_slice());
}

#[test]
fn a_full_quota_stops_the_run_and_leaves_the_originals() {
    let ca = TestCa::shared();
    let quota = "mail_plugins = $mail_plugins quota\nprotocol imap {\n  mail_plugins = $mail_plugins quota imap_quota\n}\nplugin {\n  quota = maildir:User quota\n  quota_rule = *:storage=2K\n}\n";
    let dovecot = Dovecot::start_with(ca, &[(USER, PASS)], quota);
    let mut d = dovecot.session(USER, PASS);
    appended(&mut d, &plain(1), "\\Seen", "01-Nov-2026 09:00:00 +0000");
    appended(&mut d, &plain(2), "", "02-Nov-2026 09:00:00 +0000");
    let mut opts = ProxyOptions::new(1);
    opts.imap_upstream = Some((dovecot.imaps_port, "tls"));
    opts.alice_login = USER.into();
    let proxy = Proxy::start(ca, &opts);
    let pw = password_file(proxy.dir.path());
    let out = sealpost_cmd(
        &proxy.config,
        &["seal", "--login", USER, "--password-file", &pw],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the originals are untouched") && err.contains("bytes of quota"),
        "{err}"
    );
    let after = fetch_all(&mut d, "INBOX");
    assert_eq!(after.len(), 2);
    for n in [1, 2] {
        assert!(after
            .iter()
            .any(|f| f.get("BODY[]") == Some(plain(n).as_slice())));
    }
}

/// Killed at random points (four seeds), then run to the end: every message once.
#[test]
fn a_run_killed_anywhere_and_resumed_loses_and_duplicates_nothing() {
    use rand::{Rng, SeedableRng};
    let ca = TestCa::shared();
    let dovecot = Dovecot::start(ca, &[(USER, PASS)]);
    let mut d = dovecot.session(USER, PASS);
    let messages: Vec<Vec<u8>> = (1..=24)
        .map(|n| {
            format!("From: Bob <bob@example.org>\r\nTo: alice@example.com\r\nSubject: Note {n}\r\nMessage-ID: <k{n}@example.org>\r\n\r\nLine {n} of the plan.\r\n")
                .into_bytes()
        })
        .collect();
    for m in &messages {
        appended(&mut d, m, "\\Seen", "01-Nov-2026 09:00:00 +0000");
    }
    let mut opts = ProxyOptions::new(1);
    opts.imap_upstream = Some((dovecot.imaps_port, "tls"));
    opts.alice_login = USER.into();
    let proxy = Proxy::start(ca, &opts);
    let pw = password_file(proxy.dir.path());
    let args = ["seal", "--login", USER, "--password-file", &pw, "--config"];
    for seed in 1..=4u64 {
        let delay = rand::rngs::StdRng::seed_from_u64(seed).random_range(30..500);
        let mut child = std::process::Command::new(common::proxy::sealpost_bin())
            .args(args)
            .arg(&proxy.config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
    }
    let out = sealpost_cmd(
        &proxy.config,
        &["seal", "--login", USER, "--password-file", &pw],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let at_provider = fetch_all(&mut d, "INBOX");
    assert_eq!(at_provider.len(), messages.len(), "{text}");
    for f in &at_provider {
        assert!(!String::from_utf8_lossy(f.get("BODY[]").unwrap()).contains("of the plan"));
    }
    let mut c = RawImap::connect_login(proxy.imap_port, "starttls", Some(&ca.ca_pem), USER, PASS);
    let through = fetch_all(&mut c, "INBOX");
    for m in &messages {
        let n = through
            .iter()
            .filter(|f| f.get("BODY[]") == Some(m.as_slice()))
            .count();
        assert_eq!(n, 1, "{}", String::from_utf8_lossy(m));
    }
}

/// On a terminal: no password file and no variable, so sealpost asks (echo off), and
/// the run is shown as one line redrawn with messages, bytes, rate and time left.
/// Driven through a real pseudo-terminal (python3's `pty`).
#[test]
fn on_a_terminal_it_asks_for_the_password_and_shows_a_progress_line() {
    let ca = TestCa::shared();
    let dovecot = Dovecot::start(ca, &[(USER, PASS)]);
    let mut d = dovecot.session(USER, PASS);
    for n in 1..=3 {
        appended(&mut d, &plain(n), "", "01-Nov-2026 09:00:00 +0000");
    }
    let mut opts = ProxyOptions::new(1);
    opts.imap_upstream = Some((dovecot.imaps_port, "tls"));
    opts.alice_login = USER.into();
    let proxy = Proxy::start(ca, &opts);
    // The child gets the terminal as stdin, stdout and stderr; the script types the
    // password after the prompt and prints everything the terminal showed.
    let script = r#"
import os, pty, sys, termios, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:3] + ["--login", sys.argv[3], "--config", sys.argv[4]])
out = b""
sent = False
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
    if not sent and b"IMAP password for" in out:
        # Typed once the prompt has turned echo off, as a person would.
        for _ in range(500):
            if not termios.tcgetattr(fd)[3] & termios.ECHO:
                break
            time.sleep(0.01)
        os.write(fd, sys.argv[5].encode() + b"\n")
        sent = True
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let bin = common::proxy::sealpost_bin();
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(bin)
        .arg("seal")
        .arg(USER)
        .arg(&proxy.config)
        .arg(PASS)
        .env_remove("SEALPOST_PASSWORD")
        .output()
        .expect("run python3");
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{shown}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        shown.contains(&format!("IMAP password for {USER}: ")),
        "{shown}"
    );
    assert!(!shown.contains(PASS), "the password was echoed: {shown}");
    assert!(
        shown.contains("INBOX [####################] 3/3 messages,") && shown.contains(" left"),
        "{shown}"
    );
    assert!(
        shown.contains("\x1b[KINBOX: 3 sealed, 0 already encrypted"),
        "{shown}"
    );
    assert!(shown.contains("sealed 3, already encrypted 0"), "{shown}");
    assert!(fetch_all(&mut d, "INBOX")
        .iter()
        .all(|f| !String::from_utf8_lossy(f.get("BODY[]").unwrap()).contains("Revenue line")));

    // Not on a terminal and no password given: a clear error, nothing asked or changed.
    let out = sealpost_cmd(&proxy.config, &["seal", "--login", USER]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("give --password-file FILE, set SEALPOST_PASSWORD"),
        "{err}"
    );
}
