//! A real Cyrus IMAP server (Debian's `cyrus-imapd`) as a second upstream, beside
//! Dovecot: its own `imapd.conf` and `cyrus.conf` under a temp dir, IMAP and IMAPS on
//! 127.0.0.1, users in a SASL database of its own (sasl2-bin's `saslpasswd2`), INBOX,
//! Sent, Drafts and Trash made at first login. Nothing of the packaged instance is used.
//!
//! Cyrus's master runs as root and its services as the package's `cyrus` user, so the
//! tests that start one need root (as the CI runs them). Cyrus logs only to syslog, which
//! a test machine may not have: a failure shows the master's own output.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::imapclients::RawImap;
use super::tls::TestCa;

/// The SASL realm users are made in: Cyrus asks for the server's name.
const SERVERNAME: &str = "cyrus.sealpost.test";

/// Cyrus's imapd, unpacked by `scripts/deps.sh test` from Debian's cyrus-imapd (which
/// cannot be installed beside dovecot-imapd); `SEALPOST_CYRUS_IMAPD` overrides.
fn imapd() -> String {
    std::env::var("SEALPOST_CYRUS_IMAPD")
        .unwrap_or_else(|_| "/opt/sealpost-test/cyrus-imapd/usr/lib/cyrus/bin/imapd".into())
}

pub struct Cyrus {
    pub imap_port: u16,
    pub imaps_port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
    _tmp: tempfile::TempDir,
}

fn own(p: &Path, mode: u32, uid_gid: (u32, u32)) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    std::os::unix::fs::chown(p, Some(uid_gid.0), Some(uid_gid.1)).unwrap();
}

impl Cyrus {
    /// Starts Cyrus with `users` (login, password); their mailboxes are made at first
    /// login.
    pub fn start(ca: &TestCa, users: &[(&str, &str)]) -> Cyrus {
        let tmp = super::tempdir();
        let dir = tmp.path().to_path_buf();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cyrus = super::child::system_user("cyrus", "cyrus-common");
        let conf = dir.join("conf");
        let spool = dir.join("spool");
        let run = dir.join("run");
        for d in [&conf, &spool, &run] {
            std::fs::create_dir_all(d).unwrap();
            own(d, 0o750, cyrus);
        }
        // Its TLS files, readable by the cyrus user.
        let cert = conf.join("cert.pem");
        let key = conf.join("key.pem");
        std::fs::copy(&ca.cert_pem, &cert).unwrap();
        std::fs::copy(&ca.key_pem, &key).unwrap();
        own(&cert, 0o640, cyrus);
        own(&key, 0o600, cyrus);
        let sasldb = conf.join("sasldb2");
        for (user, password) in users {
            let mut p = Command::new("saslpasswd2")
                .args(["-p", "-c", "-u", SERVERNAME, "-f"])
                .arg(&sasldb)
                .arg(user)
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run saslpasswd2 (Debian's sasl2-bin)");
            p.stdin
                .take()
                .unwrap()
                .write_all(password.as_bytes())
                .unwrap();
            let out = p.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "saslpasswd2 {user}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        own(&sasldb, 0o640, cyrus);
        let imapd_conf = dir.join("imapd.conf");
        std::fs::write(
            &imapd_conf,
            format!(
                "configdirectory: {conf}
partition-default: {spool}
servername: {SERVERNAME}
admins: cyrusadmin
unixhierarchysep: yes
altnamespace: yes
virtdomains: off
allowplaintext: yes
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: {sasldb}
sasl_mech_list: PLAIN LOGIN
autocreate_quota: 0
autocreate_inbox_folders: Sent | Drafts | Trash
autocreate_specialuse_folders: Sent | Drafts | Trash
xlist-sent: Sent
xlist-drafts: Drafts
xlist-trash: Trash
idlesocket: {run}/idle
lmtpsocket: {run}/lmtp
notifysocket: {run}/notify
tls_server_cert: {cert}
tls_server_key: {key}
",
                conf = conf.display(),
                spool = spool.display(),
                sasldb = sasldb.display(),
                run = run.display(),
                cert = cert.display(),
                key = key.display(),
            ),
        )
        .unwrap();
        // Every service names the config: the master's -C is its own only. Both listen
        // on port 0, and their ports are read off the master's sockets (Cyrus does not
        // print them): no port is ever free between being chosen and being bound.
        let c = imapd_conf.display();
        let imapd = imapd();
        assert!(
            Path::new(&imapd).exists(),
            "no Cyrus imapd at {imapd}: run scripts/deps.sh test"
        );
        let cyrus_conf = dir.join("cyrus.conf");
        std::fs::write(
            &cyrus_conf,
            format!(
                "START {{\n  recover cmd=\"ctl_cyrusdb -C {c} -r\"\n}}\nSERVICES {{\n  imap cmd=\"{imapd} -C {c}\" listen=\"127.0.0.1:0\" prefork=0\n  imaps cmd=\"{imapd} -s -C {c}\" listen=\"127.0.0.1:0\" prefork=0\n}}\nEVENTS {{\n}}\nDAEMON {{\n}}\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("master.log")).unwrap();
        // In a process group of its own: stopping, the master signals its whole group,
        // which would otherwise be the test process's and every other test's Cyrus.
        let child = Command::new("/usr/sbin/cyrmaster")
            .process_group(0)
            .arg("-C")
            .arg(&imapd_conf)
            .arg("-M")
            .arg(&cyrus_conf)
            .arg("-D")
            .arg("-p")
            .arg(run.join("master.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start cyrmaster (Debian's cyrus-imapd)");
        let mut child = Some(child);
        let ready = bound_ports(&mut child, Duration::from_secs(20)).and_then(|ports| {
            wait_ready(&mut child, ports, Duration::from_secs(20)).map(|()| ports)
        });
        match ready {
            Ok((p1, p2)) => {
                let c = Cyrus {
                    imap_port: p1,
                    imaps_port: p2,
                    dir,
                    child,
                    _tmp: tmp,
                };
                // First logins make the users' mailboxes.
                for (user, password) in users {
                    c.session(user, password).logout();
                }
                c
            }
            Err(e) => {
                let log = read_log(&dir);
                super::child::stop(&mut child, "TERM");
                panic!("Cyrus did not start: {e}\n{log}");
            }
        }
    }

    /// What the master printed (Cyrus's own log goes to syslog).
    pub fn log(&self) -> String {
        read_log(&self.dir)
    }

    /// A logged-in session on the plain listener.
    pub fn session(&self, user: &str, password: &str) -> RawImap {
        RawImap::connect_login(self.imap_port, "plain", None, user, password)
    }

    /// APPEND `message` with `flags` to `mailbox`; returns its UID (APPENDUID).
    pub fn append(
        &self,
        user: &str,
        password: &str,
        mailbox: &str,
        message: &[u8],
        flags: &[&str],
    ) -> u32 {
        let mut s = self.session(user, password);
        let uid = s
            .append_uid(mailbox, flags, message)
            .unwrap_or_else(|e| panic!("{e}"));
        s.logout();
        uid
    }

    /// Cyrus's own untagged answer to `UID FETCH uid (items)` in `mailbox` (EXAMINEd).
    pub fn fetch_raw(
        &self,
        user: &str,
        password: &str,
        mailbox: &str,
        uid: u32,
        items: &str,
    ) -> Vec<u8> {
        let mut s = self.session(user, password);
        let raw = s.examine_fetch(mailbox, uid, items);
        s.logout();
        raw
    }
}

/// The imap and imaps ports the master bound (it opens them in config order; should
/// that change, `wait_ready` fails at once, as no greeting comes on the imap port).
fn bound_ports(child: &mut Option<Child>, within: Duration) -> Result<(u16, u16), String> {
    let deadline = Instant::now() + within;
    loop {
        let Some(c) = child.as_mut() else {
            return Err("no cyrmaster".into());
        };
        if let Ok(Some(s)) = c.try_wait() {
            return Err(format!("cyrmaster exited: {s}"));
        }
        if let [imap, imaps] = super::child::listening_ports(c.id())[..] {
            return Ok((imap, imaps));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "cyrmaster listens on no two ports within {within:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for the plain listener's greeting and for the TLS listener to accept.
fn wait_ready(
    child: &mut Option<Child>,
    ports: (u16, u16),
    within: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    for port in [ports.0, ports.1] {
        loop {
            if let Some(s) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(format!("cyrmaster exited: {s}"));
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                if port == ports.1 {
                    break; // TLS: accepting is enough.
                }
                s.set_read_timeout(Some(Duration::from_secs(5))).ok();
                let mut b = [0u8; 4];
                if s.read_exact(&mut b).is_ok() && &b == b"* OK" {
                    break;
                }
            }
            if Instant::now() > deadline {
                return Err(format!("nothing on 127.0.0.1:{port} within {within:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("master.log")).unwrap_or_default()
}

impl Drop for Cyrus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("[cyrus] test panicked; master's output:\n{}", self.log());
        }
        super::child::stop(&mut self.child, "TERM");
    }
}
