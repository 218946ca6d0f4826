//! A real Postfix (Debian's `postfix`) as the SMTP upstream: a submission service on
//! 127.0.0.1 with STARTTLS required (the test CA's certificate) and SASL through a
//! Dovecot's auth socket, delivering every accepted message into one Maildir that the
//! test reads. Its own configuration, queue and mail directories under a temp dir;
//! nothing of the packaged instance is used or started.
//!
//! Postfix's master runs as root and its daemons as the package's `postfix` user, so
//! the tests that start one need root (as the CI runs them).

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::dovecot::Dovecot;
use super::net::free_port;
use super::tls::TestCa;

pub struct Postfix {
    /// The submission port (STARTTLS, AUTH).
    pub port: u16,
    pub dir: PathBuf,
    maildir: PathBuf,
    child: Option<Child>,
    /// Removed on drop.
    _tmp: tempfile::TempDir,
}

/// The core services of Debian's master.cf, none chrooted (the temp dirs are not in a
/// chroot), plus the submission listener.
fn master_cf(port: u16) -> String {
    format!(
        "127.0.0.1:{port} inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_recipient_restrictions=check_recipient_access,inline:{{refused@example.org=REJECT}},permit_sasl_authenticated,reject
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"
    )
}

fn mkdir(p: &Path, mode: u32, owner: Option<(u32, u32)>) {
    std::fs::create_dir_all(p).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    if let Some((u, g)) = owner {
        std::os::unix::fs::chown(p, Some(u), Some(g)).unwrap();
    }
}

impl Postfix {
    /// Starts Postfix with SASL checked by `dovecot`'s users (its auth socket
    /// `auth-postfix`, which [`Postfix::DOVECOT_CONF`] adds to a Dovecot's config).
    pub fn start(ca: &TestCa, dovecot: &Dovecot) -> Postfix {
        assert!(
            super::child::is_root(),
            "Postfix tests need root (its master runs as root)"
        );
        let tmp = super::tempdir();
        let dir = tmp.path().to_path_buf();
        mkdir(&dir, 0o755, None);
        let (uid, gid) = super::child::system_user("postfix", "postfix");
        let config = dir.join("etc");
        let spool = dir.join("spool");
        let data = dir.join("data");
        let mail = dir.join("mail");
        mkdir(&config, 0o755, None);
        mkdir(&spool, 0o755, None);
        mkdir(&data, 0o700, Some((uid, gid)));
        mkdir(&mail, 0o755, Some((uid, gid)));
        let auth = dovecot.base_dir.join("auth-postfix");
        let mut last = String::new();
        for _attempt in 0..4 {
            let port = free_port();
            std::fs::write(
                config.join("main.cf"),
                format!(
                    "compatibility_level = 3.6
queue_directory = {spool}
data_directory = {data}
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = /dev/stdout
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.sealpost.test
mydestination =
relay_domains =
mynetworks = 127.0.0.0/8
smtputf8_enable = yes
biff = no
message_size_limit = 0
virtual_mailbox_domains = example.org example.net example.com elsewhere.example
virtual_mailbox_base = {mail}
virtual_mailbox_maps = static:Maildir/
virtual_mailbox_limit = 0
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_sasl_type = dovecot
smtpd_sasl_path = {auth}
",
                    spool = spool.display(),
                    data = data.display(),
                    mail = mail.display(),
                    cert = ca.cert_pem.display(),
                    key = ca.key_pem.display(),
                    auth = auth.display(),
                ),
            )
            .unwrap();
            std::fs::write(config.join("master.cf"), master_cf(port)).unwrap();
            // Creates the queue's directories with their owners.
            let check = Command::new("/usr/sbin/postfix")
                .arg("-c")
                .arg(&config)
                .arg("check")
                .output()
                .expect("run postfix check (is Debian's postfix installed?)");
            assert!(
                check.status.success(),
                "postfix check: {}",
                String::from_utf8_lossy(&check.stderr)
            );
            let log = std::fs::File::create(dir.join("postfix.log")).unwrap();
            let child = Command::new("/usr/sbin/postfix")
                .arg("-c")
                .arg(&config)
                .arg("start-fg")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start postfix");
            let mut child = Some(child);
            match wait_ready(&mut child, port, Duration::from_secs(20)) {
                Ok(()) => {
                    return Postfix {
                        port,
                        dir,
                        maildir: mail.join("Maildir"),
                        child,
                        _tmp: tmp,
                    };
                }
                Err(e) => {
                    last = format!("{e}\n{}", read_log(&dir));
                    super::child::stop(&mut child, "TERM");
                }
            }
        }
        panic!("Postfix did not start: {last}");
    }

    /// The Dovecot settings that give Postfix its SASL socket.
    pub const DOVECOT_CONF: &'static str =
        "service auth {\n  unix_listener auth-postfix {\n    mode = 0666\n  }\n}\n";

    /// Messages delivered so far (the Maildir's `new`), oldest first.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.maildir.join("new"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files.iter().filter_map(|f| std::fs::read(f).ok()).collect()
    }

    /// Waits until at least `n` messages are delivered; returns them all.
    pub fn wait_for_messages(&self, n: usize, within: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + within;
        loop {
            let m = self.messages();
            if m.len() >= n || Instant::now() > deadline {
                return m;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Postfix's own log and what its master printed.
    pub fn log(&self) -> String {
        read_log(&self.dir)
    }
}

/// Waits for the submission port's greeting.
fn wait_ready(child: &mut Option<Child>, port: u16, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            return Err(format!("postfix exited: {s}"));
        }
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            use std::io::Read;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut b = [0u8; 4];
            if (&s).read_exact(&mut b).is_ok() && &b[..3] == b"220" {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("no 220 on 127.0.0.1:{port} within {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Postfix's log (`maillog_file = /dev/stdout` under `start-fg`) and what its master
/// printed.
fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("postfix.log")).unwrap_or_default()
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("[postfix] test panicked; log:\n{}", self.log());
        }
        super::child::stop(&mut self.child, "TERM");
    }
}
