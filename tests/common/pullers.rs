//! Real mail retrievers that pull a whole IMAP mailbox into local files, each with its own
//! configuration in a fresh directory: offlineimap3 (into a Maildir), getmail6 (into a
//! Maildir) and fetchmail (handing each message to an MDA script that writes a file).
//!
//! ```ignore
//! let pull = Puller::Getmail.pull(port, "tls", &ca.ca_pem, USER, PASS, "INBOX");
//! for (file, stored) in &pull.messages {
//!     let server_bytes = Puller::Getmail.normalize(stored);
//! }
//! ```
//!
//! Every tool connects to `localhost` (the test certificate's DNS name; fetchmail and
//! offlineimap check DNS names only) and verifies the certificate against the given CA.
//! [`Puller::normalize`] undoes exactly what the tool documents doing to a message it
//! stores, so that the result can be compared with what the server sent.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long one run of a tool may take before the test kills it and fails.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(120);

/// A retriever the tests drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Puller {
    /// offlineimap3 (`offlineimap -o -u basic`): IMAP remote, Maildir local, read-only remote.
    Offlineimap,
    /// getmail6 (`getmail --rcfile`): SimpleIMAPSSLRetriever, Maildir destination.
    Getmail,
    /// fetchmail (`fetchmail -f`): `keep`, `fetchall`, an MDA writing one file per message.
    Fetchmail,
}

/// A mailbox pulled by one run of a [`Puller`].
pub struct Pull {
    pub puller: Puller,
    /// Holds the tool's configuration, its state and the delivered messages; removed on drop.
    pub dir: tempfile::TempDir,
    /// The tool's stdout and stderr.
    pub output: String,
    /// (file, bytes as the tool stored them), ordered by file name.
    pub messages: Vec<(PathBuf, Vec<u8>)>,
}

impl Pull {
    /// The stored messages after [`Puller::normalize`].
    pub fn normalized(&self) -> Vec<Vec<u8>> {
        self.messages
            .iter()
            .map(|(_, m)| self.puller.normalize(m))
            .collect()
    }
}

impl Puller {
    pub const ALL: [Puller; 3] = [Puller::Offlineimap, Puller::Getmail, Puller::Fetchmail];

    /// The command's name.
    pub fn name(self) -> &'static str {
        match self {
            Puller::Offlineimap => "offlineimap",
            Puller::Getmail => "getmail",
            Puller::Fetchmail => "fetchmail",
        }
    }

    /// The `tls_mode`s the tool can use with a verified certificate: getmail and
    /// offlineimap verify only on implicit TLS (offlineimap's STARTTLS is opportunistic
    /// and unverified; getmail has none), fetchmail can do both.
    pub fn tls_modes(self) -> &'static [&'static str] {
        match self {
            Puller::Offlineimap | Puller::Getmail => &["tls"],
            Puller::Fetchmail => &["tls", "starttls"],
        }
    }

    /// Pull every message of `mailbox` from the IMAP server on `localhost:port` into a
    /// fresh directory, leaving them on the server. `tls_mode` is one of
    /// [`Puller::tls_modes`]. Panics, showing the tool's output and configuration, if the
    /// tool fails or runs longer than [`PULL_TIMEOUT`].
    pub fn pull(
        self,
        port: u16,
        tls_mode: &str,
        cafile: &Path,
        user: &str,
        password: &str,
        mailbox: &str,
    ) -> Pull {
        self.try_pull(port, tls_mode, cafile, user, password, mailbox)
            .unwrap_or_else(|failure| panic!("{failure}"))
    }

    /// Like [`Puller::pull`], but a tool that fails or times out is an `Err` describing
    /// it (its output and configuration) instead of a panic.
    pub fn try_pull(
        self,
        port: u16,
        tls_mode: &str,
        cafile: &Path,
        user: &str,
        password: &str,
        mailbox: &str,
    ) -> Result<Pull, String> {
        assert!(
            self.tls_modes().contains(&tls_mode),
            "{} cannot use tls_mode {tls_mode:?} with a verified certificate",
            self.name()
        );
        for s in [user, password, mailbox] {
            // Each configuration format below quotes differently; none of the tests needs these.
            assert!(
                !s.contains(['"', '\\', '%', '\n', '\'']),
                "unsupported character in {s:?}"
            );
        }
        let dir = super::tempdir();
        let ca = cafile
            .canonicalize()
            .unwrap_or_else(|e| panic!("CA file {}: {e}", cafile.display()));
        let (cmd, conf, store) = match self {
            Puller::Offlineimap => {
                offlineimap_setup(dir.path(), port, &ca, user, password, mailbox)
            }
            Puller::Getmail => getmail_setup(dir.path(), port, &ca, user, password, mailbox),
            Puller::Fetchmail => {
                fetchmail_setup(dir.path(), port, tls_mode, &ca, user, password, mailbox)
            }
        };
        let output = run_tool(self.name(), cmd, dir.path(), &conf)?;
        let messages = stored_messages(&store);
        Ok(Pull {
            puller: self,
            dir,
            output,
            messages,
        })
    }

    /// Whether the tool writes the header anew, folding lines longer than 78 characters
    /// (RFC 5322 §2.1.1 asks for at most 78): getmail stores what Python's `email` package
    /// generates from the parsed message; offlineimap and fetchmail keep the lines as sent.
    /// Compare such a tool's messages after [`unfold_header`].
    pub fn refolds_header(self) -> bool {
        self == Puller::Getmail
    }

    /// Undo what the tool does to a message it stores, as its documentation and code say,
    /// and turn its LF line ends back into CRLF:
    /// * offlineimap adds nothing when it pulls (its `X-OfflineIMAP` field is only for
    ///   uploads to a server without UIDPLUS);
    /// * getmail puts `Return-Path`, `Delivered-To` and `Received` fields on top (options
    ///   `delivered_to` and `received`; a `Return-Path` the message had is dropped, so
    ///   compare only messages without one) and appends `X-getmail-retrieved-from-mailbox`
    ///   (option `record_mailbox`);
    /// * fetchmail puts one `Received` field on top (unless `invisible`).
    ///
    /// Panics when what the tool should have added is not there.
    pub fn normalize(self, stored: &[u8]) -> Vec<u8> {
        let (mut fields, rest) = split_header(stored);
        let shown = || String::from_utf8_lossy(&stored[..stored.len().min(1500)]).into_owned();
        match self {
            Puller::Offlineimap => {}
            Puller::Getmail => {
                let top: Vec<String> = fields.iter().take(3).map(|f| field_name(f)).collect();
                assert_eq!(
                    top,
                    ["return-path", "delivered-to", "received"],
                    "getmail did not add its fields on top:\n{}",
                    shown()
                );
                fields.drain(..3);
                let at = fields
                    .iter()
                    .position(|f| field_name(f) == "x-getmail-retrieved-from-mailbox")
                    .unwrap_or_else(|| {
                        panic!(
                            "getmail added no X-getmail-retrieved-from-mailbox:\n{}",
                            shown()
                        )
                    });
                fields.remove(at);
            }
            Puller::Fetchmail => {
                let first = fields.first().copied().unwrap_or_default();
                assert!(
                    field_name(first) == "received"
                        && String::from_utf8_lossy(first).contains("fetchmail"),
                    "fetchmail added no Received field on top:\n{}",
                    shown()
                );
                fields.remove(0);
            }
        }
        let mut out: Vec<u8> = fields.concat();
        out.extend_from_slice(rest);
        to_crlf(&out)
    }
}

/// `msg` with its header fields unfolded (RFC 5322 §2.2.3: a line end followed by white
/// space is taken out), the body as it is.
pub fn unfold_header(msg: &[u8]) -> Vec<u8> {
    let (fields, rest) = split_header(msg);
    let mut out = Vec::with_capacity(msg.len());
    for f in fields {
        let mut i = 0;
        while i < f.len() {
            let eol = if f[i..].starts_with(b"\r\n") {
                2
            } else if f[i] == b'\n' {
                1
            } else {
                0
            };
            if eol > 0 && matches!(f.get(i + eol), Some(b' ' | b'\t')) {
                i += eol;
            } else {
                out.push(f[i]);
                i += 1;
            }
        }
    }
    out.extend_from_slice(rest);
    out
}

/// The value of the first `Message-ID` field of `msg` (unfolded, trimmed), if any.
pub fn message_id(msg: &[u8]) -> Option<String> {
    let (fields, _) = split_header(msg);
    let f = fields.into_iter().find(|f| field_name(f) == "message-id")?;
    let text = String::from_utf8_lossy(f);
    let value = text.split_once(':')?.1;
    Some(value.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Splits `msg` into its header fields (each with its continuation lines and line end)
/// and the rest, from the empty line that ends the header on.
pub fn split_header(msg: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut starts = Vec::new();
    let mut i = 0;
    while i < msg.len() {
        let end = msg[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(msg.len(), |p| i + p + 1);
        let line = &msg[i..end];
        if line == b"\n" || line == b"\r\n" {
            break;
        }
        // RFC 5322 §2.2.3: a line starting with white space continues the field above.
        if starts.is_empty() || !matches!(line[0], b' ' | b'\t') {
            starts.push(i);
        }
        i = end;
    }
    let fields = starts
        .iter()
        .enumerate()
        .map(|(k, &s)| &msg[s..starts.get(k + 1).copied().unwrap_or(i)])
        .collect();
    (fields, &msg[i..])
}

/// Lower-cased name of a header field (the text before its colon).
fn field_name(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == b':').unwrap_or(0);
    String::from_utf8_lossy(&field[..end])
        .trim()
        .to_ascii_lowercase()
}

/// Bare LF line ends turned into CRLF (CRLF stays as it is).
fn to_crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 32);
    let mut prev = 0u8;
    for &b in data {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

fn write_file(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn make_maildir(path: &Path) {
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(path.join(sub))
            .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    }
}

/// A command with the environment the tools would otherwise pick configuration up from
/// (HOME, Python's search path, fetchmail's user for the MDA) set to nothing of the host's.
fn command(program: &str, home: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("HOME", home)
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .env_remove("FETCHMAILHOME")
        .env_remove("FETCHMAILUSER")
        .env("LC_ALL", "C.UTF-8")
        .stdin(Stdio::null());
    cmd
}

/// offlineimap3: one account, a read-only IMAP remote over implicit TLS checked against
/// `sslcacertfile`, a Maildir local repository; only `mailbox` is synced. Returns (command,
/// config file, directory holding the pulled messages).
fn offlineimap_setup(
    dir: &Path,
    port: u16,
    ca: &Path,
    user: &str,
    password: &str,
    mailbox: &str,
) -> (Command, PathBuf, PathBuf) {
    let local = dir.join("mail");
    std::fs::create_dir_all(&local).expect("create offlineimap local folder");
    let conf = dir.join("offlineimaprc");
    write_file(
        &conf,
        &format!(
            "[general]\n\
             accounts = test\n\
             metadata = {meta}\n\
             maxsyncaccounts = 1\n\
             \n\
             [Account test]\n\
             localrepository = local\n\
             remoterepository = remote\n\
             \n\
             [Repository local]\n\
             type = Maildir\n\
             localfolders = {local}\n\
             \n\
             [Repository remote]\n\
             type = IMAP\n\
             remotehost = localhost\n\
             remoteport = {port}\n\
             remoteuser = {user}\n\
             remotepass = {password}\n\
             ssl = yes\n\
             sslcacertfile = {ca}\n\
             readonly = True\n\
             createfolders = False\n\
             maxconnections = 1\n\
             holdconnectionopen = no\n\
             folderfilter = lambda folder: folder == '{mailbox}'\n",
            meta = dir.join("meta").display(),
            local = local.display(),
            ca = ca.display(),
        ),
        0o600,
    );
    let mut cmd = command("offlineimap", dir);
    cmd.arg("-c").arg(&conf).args(["-o", "-u", "basic"]);
    (cmd, conf, local)
}

/// getmail6: SimpleIMAPSSLRetriever checking the certificate against `ca_certs`, every
/// message (`read_all`), none deleted, into a Maildir.
fn getmail_setup(
    dir: &Path,
    port: u16,
    ca: &Path,
    user: &str,
    password: &str,
    mailbox: &str,
) -> (Command, PathBuf, PathBuf) {
    let maildir = dir.join("Maildir");
    make_maildir(&maildir);
    // getmail refuses to deliver as root: as root, it delivers as the system user `mail`
    // (`[destination] user`), which must reach and write the Maildir.
    let deliver_as = if super::child::is_root() {
        let (uid, gid) = super::child::system_user("mail", "base-passwd");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .expect("chmod getmail dir");
        for p in ["", "cur", "new", "tmp"].map(|sub| maildir.join(sub)) {
            std::os::unix::fs::chown(&p, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
        }
        "user = mail\n"
    } else {
        ""
    };
    let state = dir.join("getmail");
    std::fs::create_dir_all(&state).expect("create getmail dir");
    let conf = dir.join("getmailrc");
    write_file(
        &conf,
        &format!(
            "[retriever]\n\
             type = SimpleIMAPSSLRetriever\n\
             server = localhost\n\
             port = {port}\n\
             username = {user}\n\
             password = {password}\n\
             mailboxes = (\"{mailbox}\",)\n\
             ca_certs = {ca}\n\
             \n\
             [destination]\n\
             type = Maildir\n\
             path = {maildir}/\n\
             {deliver_as}\
             \n\
             [options]\n\
             read_all = true\n\
             delete = false\n\
             verbose = 2\n",
            ca = ca.display(),
            maildir = maildir.display(),
        ),
        0o600,
    );
    let mut cmd = command("getmail", dir);
    cmd.arg("--rcfile")
        .arg(&conf)
        .arg("--getmaildir")
        .arg(&state);
    (cmd, conf, maildir)
}

/// fetchmail: `keep` and `fetchall` on `mailbox`, TLS required and checked against
/// `--sslcertfile` (`--ssl` for implicit TLS, `--sslproto TLS1.2+` for mandatory
/// STARTTLS), each message handed to an MDA script that writes it to a file of its own.
/// The rcfile is mode 0600 (fetchmail refuses others); its PID and UID files stay in `dir`.
fn fetchmail_setup(
    dir: &Path,
    port: u16,
    tls_mode: &str,
    ca: &Path,
    user: &str,
    password: &str,
    mailbox: &str,
) -> (Command, PathBuf, PathBuf) {
    let out = dir.join("delivered");
    std::fs::create_dir_all(&out).expect("create fetchmail delivery dir");
    let mda = dir.join("deliver.sh");
    write_file(
        &mda,
        &format!(
            "#!/bin/sh\nset -e\nf=$(mktemp '{}/msg.XXXXXXXX')\ncat > \"$f\"\n",
            out.display()
        ),
        0o755,
    );
    let conf = dir.join("fetchmailrc");
    write_file(
        &conf,
        &format!(
            "poll localhost with protocol IMAP and port {port} and timeout 60\n\
             \x20 user \"{user}\" with password \"{password}\"\n\
             \x20 folder \"{mailbox}\"\n\
             \x20 options keep fetchall\n\
             \x20 mda \"{mda}\"\n",
            mda = mda.display(),
        ),
        0o600,
    );
    let mut cmd = command("fetchmail", dir);
    cmd.arg("-f")
        .arg(&conf)
        .args(["--nosyslog", "-v", "--pidfile"])
        .arg(dir.join("fetchmail.pid"))
        .arg("--idfile")
        .arg(dir.join("fetchids"))
        .args(["--sslcertck", "--sslcertfile"])
        .arg(ca);
    match tls_mode {
        "tls" => cmd.arg("--ssl"),
        _ => cmd.args(["--sslproto", "TLS1.2+"]),
    };
    (cmd, conf, out)
}

/// Runs `cmd` (output captured), killing it after [`PULL_TIMEOUT`]. Returns stdout followed
/// by stderr if it exits 0, else a description with that output and `conf`.
fn run_tool(name: &str, mut cmd: Command, dir: &Path, conf: &Path) -> Result<String, String> {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e} (scripts/deps.sh test installs it)"));
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut s| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            buf
        })
    })
    .collect();
    let status: Option<ExitStatus> = loop {
        if let Some(st) = child.try_wait().expect("wait for tool") {
            break Some(st);
        }
        if started.elapsed() > PULL_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output: String = readers
        .into_iter()
        .map(|r| String::from_utf8_lossy(&r.join().unwrap_or_default()).into_owned())
        .collect();
    if status.is_some_and(|s| s.success()) {
        return Ok(output);
    }
    let how = match status {
        Some(s) => format!("failed ({s})"),
        None => format!("did not finish within {PULL_TIMEOUT:?}"),
    };
    Err(format!(
        "{name} {how} in {}:\n{output}\n--- {}:\n{}",
        dir.display(),
        conf.display(),
        std::fs::read_to_string(conf).unwrap_or_default()
    ))
}

/// Every message file under `root` (in Maildir `cur`/`new` folders, or any plain file
/// directly in a delivery folder), ordered by path.
fn stored_messages(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display()));
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "tmp" {
                    dirs.push(path);
                }
            } else if !name.starts_with('.') {
                files.push(path);
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            (p, data)
        })
        .collect()
}
