//! A real Dovecot 2.3 IMAP server per test, on 127.0.0.1, with its own
//! config, users and Maildirs in a short-named directory under /tmp.
//!
//! ```ignore
//! let ca = TestCa::shared();
//! let dc = Dovecot::start(ca, &[("alice@example.com", "alicepw")]);
//! let uid = dc.append("alice@example.com", "alicepw", "INBOX", msg, &["\\Seen"]);
//! assert_eq!(dc.fetch_body("alice@example.com", "alicepw", "INBOX", uid), msg);
//! ```
//!
//! Runs as root (login processes as `dovenull`, internal ones as `dovecot`,
//! mail owned by the system user `mail`) or, when the tests are not root,
//! entirely as the current user.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::imapclients::{imap_quote, parse_fetches, RawImap};
use super::tls::TestCa;

/// A running Dovecot; stopped (by the PID in `base_dir/master.pid`) on drop.
pub struct Dovecot {
    /// Plain IMAP listener (STARTTLS offered; plaintext LOGIN allowed).
    pub imap_port: u16,
    /// Implicit-TLS listener.
    pub imaps_port: u16,
    /// Instance directory (`/tmp/spXXXXXX`), mode 0755.
    pub dir: PathBuf,
    /// Dovecot's `base_dir` (sockets, master.pid).
    pub base_dir: PathBuf,
    /// The generated dovecot.conf.
    pub config: PathBuf,
    /// Dovecot's own log (`log_path`).
    pub log_path: PathBuf,
    /// stdout/stderr of `dovecot -F` (startup errors land here).
    pub stderr_path: PathBuf,
    /// CA that signed the server certificate (for clients).
    pub ca_pem: PathBuf,
    /// (login, password) of every user.
    pub users: Vec<(String, String)>,
    mail_uid: u32,
    mail_gid: u32,
    child: Option<Child>,
    watchdog: Option<Child>,
    tmp: Option<tempfile::TempDir>,
}

/// (uid, gid, name) of `name` in /etc/passwd, or of `uid` if `name` is None.
fn passwd_entry(name: Option<&str>, uid: Option<u32>) -> Option<(u32, u32, String)> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        let (u, g) = (f[2].parse().ok()?, f[3].parse().ok()?);
        let hit = match (name, uid) {
            (Some(n), _) => f[0] == n,
            (None, Some(want)) => u == want,
            _ => false,
        };
        hit.then(|| (u, g, f[0].to_owned()))
    })
}

/// Name of group `gid` in /etc/group.
fn group_name(gid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[2].parse::<u32>().ok()? == gid).then(|| f[0].to_owned())
    })
}

fn current_ids() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata("/proc/self").expect("stat /proc/self");
    (m.uid(), m.gid())
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
}

fn dovecot_bin() -> &'static str {
    if Path::new("/usr/sbin/dovecot").exists() {
        "/usr/sbin/dovecot"
    } else {
        "dovecot"
    }
}

/// Send `sig` (e.g. "TERM") to `pid` with kill(1).
fn kill_pid(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

struct Users {
    login_user: String,
    internal_user: String,
    /// `default_internal_group` (None: the packaged default "dovecot").
    internal_group: Option<String>,
    mail_uid: u32,
    mail_gid: u32,
}

fn pick_users() -> Users {
    let (uid, gid) = current_ids();
    if uid == 0 {
        let (mu, mg, _) = passwd_entry(Some("mail"), None).expect("system user `mail`");
        for u in ["dovenull", "dovecot"] {
            assert!(
                passwd_entry(Some(u), None).is_some(),
                "system user `{u}` missing (is dovecot-core installed?)"
            );
        }
        Users {
            login_user: "dovenull".into(),
            internal_user: "dovecot".into(),
            internal_group: None,
            mail_uid: mu,
            mail_gid: mg,
        }
    } else {
        let name = passwd_entry(None, Some(uid))
            .map(|e| e.2)
            .or_else(|| std::env::var("USER").ok())
            .expect("name of the current user");
        let group = group_name(gid).unwrap_or_else(|| name.clone());
        Users {
            login_user: name.clone(),
            internal_user: name,
            internal_group: Some(group),
            mail_uid: uid,
            mail_gid: gid,
        }
    }
}

/// Writes Dovecot's config for the instance in `dir` to `path`.
fn write_config(
    path: &Path,
    dir: &Path,
    ca: &TestCa,
    users: &Users,
    ports: (u16, u16),
    extra: &str,
) {
    let d = dir.display();
    let conf = format!(
        r#"# generated by tests/common/dovecot.rs
protocols = imap
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
instance_name = sealpost-test-{port}
log_path = {d}/dovecot.log
log_timestamp = "%H:%M:%S "
auth_verbose = yes
default_login_user = {login}
default_internal_user = {internal}
{group_line}first_valid_uid = 1
first_valid_gid = 1
disable_plaintext_auth = no
auth_mechanisms = plain login
# Tests log in with wrong passwords on purpose: answer (almost) at once.
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/passwd
}}
mail_location = maildir:~/Maildir
mail_fsync = never
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
namespace inbox {{
  inbox = yes
  mailbox Sent {{
    special_use = \Sent
    auto = subscribe
  }}
  mailbox Drafts {{
    special_use = \Drafts
    auto = subscribe
  }}
  mailbox Trash {{
    special_use = \Trash
    auto = subscribe
  }}
  mailbox Junk {{
    special_use = \Junk
    auto = subscribe
  }}
}}
protocol imap {{
  mail_max_userip_connections = 1000
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {sport}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
  # mode 0 disables this listener: without it the auth process skips anvil's
  # auth penalty (after a failed login, every later login from 127.0.0.1
  # would be delayed by 2, 4, 8... up to 15 s).
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
{extra}
"#,
        port = ports.0,
        sport = ports.1,
        login = users.login_user,
        internal = users.internal_user,
        group_line = users
            .internal_group
            .as_ref()
            .map(|g| format!("default_internal_group = {g}\n"))
            .unwrap_or_default(),
        cert = ca.cert_pem.display(),
        key = ca.key_pem.display(),
    );
    std::fs::write(path, conf).expect("write dovecot.conf");
    chmod(path, 0o644);
}

/// Try a plaintext LOGIN on the plain port (no panics).
fn try_login(port: u16, user: &str, password: &str) -> Result<(), String> {
    use std::io::{BufRead, BufReader, Write};
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    if !line.starts_with("* OK") {
        return Err(format!("greeting: {line:?}"));
    }
    write!(
        w,
        "a LOGIN {} {}\r\nb LOGOUT\r\n",
        imap_quote(user),
        imap_quote(password)
    )
    .map_err(|e| e.to_string())?;
    loop {
        line.clear();
        if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err("connection closed before LOGIN reply".into());
        }
        if line.starts_with("a ") {
            return if line.starts_with("a OK") {
                Ok(())
            } else {
                Err(format!("LOGIN: {}", line.trim_end()))
            };
        }
    }
}

/// Keep the instance directory if SEALPOST_TEST_KEEP is set (else it is
/// removed); returns a description for messages.
fn keep(tmp: tempfile::TempDir) -> String {
    if std::env::var_os("SEALPOST_TEST_KEEP").is_some_and(|v| v != "0") {
        format!("{} (kept)", tmp.keep().display())
    } else {
        format!(
            "{} (removed; set SEALPOST_TEST_KEEP=1 to keep)",
            tmp.path().display()
        )
    }
}

static DELIVERY: AtomicU64 = AtomicU64::new(0);

impl Dovecot {
    /// Start Dovecot with these (login, password) users; returns once both
    /// listeners accept connections and the first user can log in.
    pub fn start(ca: &TestCa, users: &[(&str, &str)]) -> Dovecot {
        Dovecot::start_with(ca, users, "")
    }

    /// Like [`Dovecot::start`], appending `extra_conf` verbatim to the
    /// generated dovecot.conf (e.g. `"imap_capability = +XFOO"` or a
    /// `protocol imap { ... }` block; later settings win).
    pub fn start_with(ca: &TestCa, users: &[(&str, &str)], extra_conf: &str) -> Dovecot {
        assert!(!users.is_empty(), "Dovecot::start needs at least one user");
        let tmp = super::tempdir();
        let dir = tmp.path().to_path_buf();
        // Every uid Dovecot uses must be able to traverse to the Maildirs,
        // the passwd file and base_dir.
        chmod(&dir, 0o755);
        let u = pick_users();

        let mut passwd = String::new();
        let homes = dir.join("home");
        std::fs::create_dir_all(&homes).unwrap();
        chmod(&homes, 0o755);
        for (login, password) in users {
            assert!(
                !login.contains(['/', ':', '\n']) && !password.contains([':', '\n']),
                "unsupported characters in user {login:?}"
            );
            let home = homes.join(login);
            let maildir = home.join("Maildir");
            for sub in ["cur", "new", "tmp"] {
                std::fs::create_dir_all(maildir.join(sub)).unwrap();
            }
            for p in [
                home.clone(),
                maildir.clone(),
                maildir.join("cur"),
                maildir.join("new"),
                maildir.join("tmp"),
            ] {
                chmod(&p, 0o700);
                chown(&p, u.mail_uid, u.mail_gid);
            }
            passwd.push_str(&format!(
                "{login}:{{PLAIN}}{password}:{}:{}::{}::\n",
                u.mail_uid,
                u.mail_gid,
                home.display()
            ));
        }
        let passwd_path = dir.join("passwd");
        std::fs::write(&passwd_path, passwd).unwrap();
        chmod(&passwd_path, 0o644);

        let log_path = dir.join("dovecot.log");
        let stderr_path = dir.join("dovecot.stderr");
        let base_dir = dir.join("run");
        match spawn_and_wait(&dir, ca, &u, extra_conf, users[0]) {
            Ok((child, ports, config)) => {
                let watchdog = spawn_watchdog(child.id(), &dir);
                Dovecot {
                    imap_port: ports.0,
                    imaps_port: ports.1,
                    dir,
                    base_dir,
                    config,
                    log_path,
                    stderr_path,
                    ca_pem: ca.ca_pem.clone(),
                    users: users
                        .iter()
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                        .collect(),
                    mail_uid: u.mail_uid,
                    mail_gid: u.mail_gid,
                    child: Some(child),
                    watchdog,
                    tmp: Some(tmp),
                }
            }
            Err(e) => panic!("Dovecot did not start in {}:\n{e}", keep(tmp)),
        }
    }

    /// Dovecot's log plus anything it wrote to stdout/stderr.
    pub fn log(&self) -> String {
        format!(
            "{}{}",
            std::fs::read_to_string(&self.stderr_path).unwrap_or_default(),
            std::fs::read_to_string(&self.log_path).unwrap_or_default()
        )
    }

    /// PID of the Dovecot master process.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.base_dir.join("master.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .or_else(|| self.child.as_ref().map(Child::id))
    }

    /// Home directory of `user`.
    pub fn home(&self, user: &str) -> PathBuf {
        self.dir.join("home").join(user)
    }

    /// The Maildir of `user`'s INBOX (`~/Maildir`).
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.home(user).join("Maildir")
    }

    /// The Maildir++ directory of `mailbox` ("INBOX" -> `~/Maildir`, "Sent"
    /// -> `~/Maildir/.Sent`; hierarchy separator ".").
    pub fn mailbox_dir(&self, user: &str, mailbox: &str) -> PathBuf {
        if mailbox.eq_ignore_ascii_case("INBOX") {
            self.maildir(user)
        } else {
            self.maildir(user).join(format!(".{mailbox}"))
        }
    }

    /// A logged-in [`RawImap`] session on the plain port (no TLS: Dovecot
    /// allows plaintext LOGIN here).
    pub fn session(&self, user: &str, password: &str) -> RawImap {
        RawImap::connect_login(self.imap_port, "plain", None, user, password)
    }

    /// APPEND `message` (exact bytes; use CRLF line ends: Dovecot stores LF
    /// and hands out CRLF) with `flags` (e.g. `["\\Seen"]`) to `mailbox`;
    /// returns the UID from the APPENDUID response code.
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
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log()));
        s.logout();
        uid
    }

    /// Drop `message` into `user`'s INBOX as a new file in `Maildir/new`
    /// (written to `tmp/`, chowned to the mail uid, then renamed), as a
    /// local delivery agent would. An IDLEing client hears about it within
    /// about a second. Returns the file's path.
    pub fn deliver_new(&self, user: &str, message: &[u8]) -> PathBuf {
        self.deliver_new_to(user, "INBOX", message)
    }

    /// Like [`Dovecot::deliver_new`] into another mailbox (its Maildir++
    /// directory is created if missing).
    pub fn deliver_new_to(&self, user: &str, mailbox: &str, message: &[u8]) -> PathBuf {
        let md = self.mailbox_dir(user, mailbox);
        for sub in ["", "cur", "new", "tmp"] {
            let p = md.join(sub);
            if !p.exists() {
                std::fs::create_dir_all(&p).unwrap();
                chmod(&p, 0o700);
                chown(&p, self.mail_uid, self.mail_gid);
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let name = format!(
            "{}.M{}P{}Q{}.sealpost-test",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            DELIVERY.fetch_add(1, Ordering::Relaxed)
        );
        let tmp = md.join("tmp").join(&name);
        std::fs::write(&tmp, message).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
        chmod(&tmp, 0o600);
        chown(&tmp, self.mail_uid, self.mail_gid);
        let dest = md.join("new").join(&name);
        std::fs::rename(&tmp, &dest).unwrap_or_else(|e| panic!("rename into new/: {e}"));
        dest
    }

    /// Raw bytes of the untagged response(s) Dovecot sends for
    /// `UID FETCH uid (items)` in `mailbox`, exactly as sent (literals
    /// included). `items` may be given with or without the parentheses.
    /// The mailbox is opened with EXAMINE (read-only), so a `BODY[]` fetch
    /// does not set \Seen and no `FLAGS` item is added to the response.
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

    /// The message's exact bytes (`BODY.PEEK[]`), straight from Dovecot.
    pub fn fetch_body(&self, user: &str, password: &str, mailbox: &str, uid: u32) -> Vec<u8> {
        let raw = self.fetch_raw(user, password, mailbox, uid, "UID BODY.PEEK[]");
        let fetches = parse_fetches(&raw);
        fetches
            .iter()
            .find(|f| f.uid() == Some(uid))
            .and_then(|f| f.get("BODY[]"))
            .map(<[u8]>::to_vec)
            .unwrap_or_else(|| {
                panic!(
                    "no BODY[] for UID {uid} in {mailbox}: {:?}",
                    String::from_utf8_lossy(&raw)
                )
            })
    }

    /// UIDs of all messages in `mailbox` (UID SEARCH ALL), ascending.
    pub fn uids(&self, user: &str, password: &str, mailbox: &str) -> Vec<u32> {
        let mut s = self.session(user, password);
        s.command_ok(&format!("EXAMINE {}", imap_quote(mailbox)));
        let raw = s.command_ok("UID SEARCH ALL");
        s.logout();
        let text = String::from_utf8_lossy(&raw);
        let mut uids: Vec<u32> = text
            .lines()
            .filter_map(|l| l.strip_prefix("* SEARCH"))
            .flat_map(|l| {
                l.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect();
        uids.sort_unstable();
        uids
    }

    /// FLAGS of message `uid` in `mailbox`, without `\Recent` (which
    /// depends on which session saw the message first).
    pub fn flags(&self, user: &str, password: &str, mailbox: &str, uid: u32) -> Vec<String> {
        let raw = self.fetch_raw(user, password, mailbox, uid, "UID FLAGS");
        parse_fetches(&raw)
            .iter()
            .find(|f| f.uid() == Some(uid))
            .and_then(|f| f.flags())
            .map(|v| {
                v.into_iter()
                    .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
                    .collect()
            })
            .unwrap_or_else(|| {
                panic!(
                    "no FLAGS for UID {uid}: {:?}",
                    String::from_utf8_lossy(&raw)
                )
            })
    }

    /// Stop Dovecot now (also done on drop): SIGTERM to the master PID,
    /// wait up to 15 s, then SIGKILL.
    pub fn stop(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let pid = self.pid().unwrap_or(child.id());
        kill_pid(pid, "TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "[dovecot imap {} / imaps {}] test panicked; log:\n{}",
                self.imap_port,
                self.imaps_port,
                self.log()
            );
            if let Some(t) = self.tmp.take() {
                eprintln!("[dovecot] instance directory {}", keep(t));
            }
        }
    }
}

/// Starts `dovecot -F -c config` on two listening sockets bound to ports the kernel
/// picked (`tests/support/listen_fds.py` binds them and hands them over by systemd's
/// socket activation, which Debian's Dovecot takes: it uses an inherited socket whose
/// address and port match a listener's), and waits until the first user can log in.
/// Returns the child, the imap and imaps ports, and the config written.
fn spawn_and_wait(
    dir: &Path,
    ca: &TestCa,
    users: &Users,
    extra_conf: &str,
    first_user: (&str, &str),
) -> Result<(Child, (u16, u16), PathBuf), String> {
    let stderr_path = dir.join("dovecot.stderr");
    let log_path = dir.join("dovecot.log");
    let config_path = dir.join("dovecot.conf");
    let logs = || {
        format!(
            "--- stderr:\n{}--- log:\n{}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default(),
            std::fs::read_to_string(&log_path).unwrap_or_default()
        )
    };
    let (mut child, ports) = super::child::spawn_on_listeners(
        2,
        Path::new(dovecot_bin()),
        &["-F".as_ref(), "-c".as_ref(), config_path.as_os_str()],
        &stderr_path,
        |ports| {
            write_config(
                &config_path,
                dir,
                ca,
                users,
                (ports[0], ports[1]),
                extra_conf,
            )
        },
    )?;
    let ports = (ports[0], ports[1]);
    // The sockets accept from the start (they were listening before Dovecot ran): it
    // is ready once the first user can log in.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("dovecot exited early ({st}):\n{}", logs()));
        }
        let Err(last) = try_login(ports.0, first_user.0, first_user.1) else {
            return Ok((child, ports, config_path));
        };
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "dovecot not ready on ports {ports:?} after 30 s (last: {last}):\n{}",
                logs()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A detached `sh` that stops Dovecot if the test process dies without
/// dropping the [`Dovecot`] (e.g. killed by a timeout), then removes the
/// instance directory (unless SEALPOST_TEST_KEEP is set).
fn spawn_watchdog(dovecot_pid: u32, dir: &Path) -> Option<Child> {
    let keep = std::env::var_os("SEALPOST_TEST_KEEP").is_some_and(|v| v != "0");
    Command::new("sh")
        .arg("-c")
        .arg(
            r#"while kill -0 "$0" 2>/dev/null; do kill -0 "$1" 2>/dev/null || exit 0; sleep 1; done
kill -TERM "$1" 2>/dev/null
sleep 3
[ "$3" = keep ] || rm -rf "$2""#,
        )
        .arg(std::process::id().to_string())
        .arg(dovecot_pid.to_string())
        .arg(dir)
        .arg(if keep { "keep" } else { "remove" })
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}
