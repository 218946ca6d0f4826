//! Helpers shared by the benchmarks (`benches/smtp_relay.rs`, `benches/imap_sync.rs`).
//!
//! The benchmarks reuse the integration-test harness (`tests/common`) for the test
//! CA, the SMTP sink, Dovecot, the gpg keyring and mbsync, but start the `sealpost`
//! binary themselves: they pick the release build next to the bench executable when
//! it exists (and say which one they used), and run it with the default log level
//! instead of the tests' `SEALPOST_LOG=debug`, so logging does not skew the figures,
//! and without `RUST_BACKTRACE` (set on these machines, not in a service's environment:
//! with it, every error value Sequoia makes while parsing captures a stack trace).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `bin` with the environment a service has: no backtrace capture (see above).
pub fn service_command(bin: &Path) -> Command {
    let mut c = Command::new(bin);
    c.env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    c
}

use crate::common::listeners::{wait_for_bound, Listener};
use crate::common::proxy::{Proxy, ProxyOptions};
use crate::common::TestCa;

/// The `sealpost` binary to benchmark: `<target>/release/sealpost` if present,
/// else `<target>/debug/sealpost`, where `<target>` is found from the bench
/// executable (`<target>/<profile>/deps/<bench>-<hash>`). Panics with a hint
/// when neither exists.
pub fn sealpost_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the bench executable");
    // <target>/<profile>/deps/<bench>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("bench executable lives in <target>/<profile>/deps");
    let target_dir = profile_dir.parent().expect("<target> directory");
    let mut candidates = vec![
        target_dir.join("release").join("sealpost"),
        profile_dir.join("sealpost"),
        target_dir.join("debug").join("sealpost"),
    ];
    candidates.dedup();
    for c in &candidates {
        if c.is_file() {
            return c.clone();
        }
    }
    panic!(
        "no sealpost binary found (looked for {}).\n\
         Build it first:  cargo build --release --bin sealpost",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// One line describing the binary: path, build kind and age.
pub fn describe_binary(bin: &Path) -> String {
    let kind = if bin.components().any(|c| c.as_os_str() == "release") {
        "release build"
    } else {
        "DEBUG build (slow; run `cargo build --release --bin sealpost` for real figures)"
    };
    let age = std::fs::metadata(bin)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map(|d| format!(", built {} s ago", d.as_secs()))
        .unwrap_or_default();
    format!("{} ({kind}{age})", bin.display())
}

/// A running `sealpost run` started from a config written by the test harness.
pub struct BenchProxy {
    pub smtp_port: u16,
    pub smtps_port: u16,
    pub imap_port: u16,
    pub imaps_port: u16,
    pub config: PathBuf,
    pub log_path: PathBuf,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    watchdog: Option<Child>,
}

/// A detached `sh` that kills `pid` if the bench process dies without
/// dropping its [`BenchProxy`] (e.g. interrupted with Ctrl-C).
fn spawn_watchdog(pid: u32) -> Option<Child> {
    Command::new("sh")
        .arg("-c")
        .arg(r#"while kill -0 "$0" 2>/dev/null; do kill -0 "$1" 2>/dev/null || exit 0; sleep 1; done; kill -TERM "$1" 2>/dev/null"#)
        .arg(std::process::id().to_string())
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

impl BenchProxy {
    /// Writes the config (same generator as the integration tests, listeners on port
    /// 0), imports `opts.import`, starts `bin run` and reads its listeners' ports from its
    /// log.
    pub fn start(bin: &Path, ca: &TestCa, opts: &ProxyOptions) -> BenchProxy {
        let dir = crate::common::tempdir();
        let config = Proxy::write_config_imap(dir.path(), ca, opts, (0, 0), (0, 0));
        if !opts.import.is_empty() {
            let out = Command::new(bin)
                .arg("keys")
                .arg("--config")
                .arg(&config)
                .arg("import")
                .args(&opts.import)
                .output()
                .expect("run sealpost keys import");
            assert!(
                out.status.success(),
                "sealpost keys import failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let log_path = dir.path().join("sealpost.log");
        let log = std::fs::File::create(&log_path).expect("create sealpost.log");
        let child = service_command(bin)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env("SEALPOST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sealpost");
        let watchdog = spawn_watchdog(child.id());
        let mut p = BenchProxy {
            watchdog,
            smtp_port: 0,
            smtps_port: 0,
            imap_port: 0,
            imaps_port: 0,
            config,
            log_path,
            dir,
            child: Some(child),
        };
        // The listener lines are logged at info, the level set above.
        let bound = wait_for_bound(
            &p.config,
            &p.log_path,
            0,
            p.child.as_mut().expect("just started"),
            Duration::from_secs(30),
        );
        p.smtp_port = bound.port(&Listener::smtp("test", false));
        p.smtps_port = bound.port(&Listener::smtp("test", true));
        p.imap_port = bound.get(&Listener::imap("test", false)).unwrap_or(0);
        p.imaps_port = bound.get(&Listener::imap("test", true)).unwrap_or(0);
        p
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("sealpost running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for BenchProxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// `mbsync` pulling one mailbox into a fresh local Maildir, like the harness's
/// `mbsync_pull` (same channel settings) but with `FSync no` and the local
/// Maildir on tmpfs (`/dev/shm`, if present), so the figure is the IMAP transfer
/// and not the local disk, and with only the mbsync process itself timed.
pub struct Pull {
    /// Wall time of the mbsync process.
    pub elapsed: Duration,
    /// Bytes of every stored message (order of the file names).
    pub messages: Vec<Vec<u8>>,
    /// mbsync's stdout + stderr.
    pub output: String,
}

pub fn mbsync_pull_timed(
    port: u16,
    cafile: &Path,
    user: &str,
    password: &str,
    mailbox: &str,
) -> Pull {
    // The local Maildir lives on tmpfs when there is one: the disk's writeback of
    // thousands of new (and removed) files would otherwise slow later pulls down.
    let base = if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    let dir = tempfile::Builder::new()
        .prefix("spbench")
        .tempdir_in(base)
        .expect("create mbsync temp dir");
    let store = dir.path().join("mail");
    std::fs::create_dir_all(&store).expect("create mbsync store");
    let rc = dir.path().join("mbsyncrc");
    let conf = format!(
        "FSync no\n\n\
         IMAPAccount acc\nHost localhost\nPort {port}\nUser \"{user}\"\nPass \"{password}\"\n\
         SSLType IMAPS\nCertificateFile {ca}\nTimeout 60\n\n\
         IMAPStore remote\nAccount acc\n\n\
         MaildirStore local\nPath {store}/\nInbox {store}/inbox\nSubFolders Verbatim\n\n\
         Channel pull\nFar :remote:{mailbox}\nNear :local:pulled\nSync Pull\nCreate Near\n\
         Expunge None\nSyncState *\n",
        ca = cafile.display(),
        store = store.display(),
    );
    std::fs::write(&rc, conf).expect("write mbsyncrc");
    let t0 = Instant::now();
    let out = Command::new("mbsync")
        .arg("-c")
        .arg(&rc)
        .arg("-a")
        .env("HOME", dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run mbsync");
    let elapsed = t0.elapsed();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "mbsync failed ({}):\n{output}",
        out.status
    );
    let mut files = Vec::new();
    for sub in ["new", "cur"] {
        if let Ok(rd) = std::fs::read_dir(store.join("pulled").join(sub)) {
            files.extend(rd.flatten().map(|e| e.path()));
        }
    }
    files.sort();
    let messages = files
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())))
        .collect();
    Pull {
        elapsed,
        messages,
        output,
    }
}

/// Median of durations (upper median for even counts).
pub fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s[s.len() / 2]
}

/// A field of `/proc/<pid>/status` in bytes (e.g. "VmHWM", "VmRSS").
pub fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(field)?.strip_prefix(':')?;
            let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
            Some(kb * 1024)
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Deterministic xorshift64 generator (varied but reproducible content).
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
            | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform-ish in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const WORDS: &[&str] = &[
    "the",
    "meeting",
    "report",
    "budget",
    "quarter",
    "numbers",
    "draft",
    "review",
    "please",
    "attached",
    "thanks",
    "schedule",
    "project",
    "customer",
    "invoice",
    "release",
    "server",
    "update",
    "security",
    "question",
    "tomorrow",
    "agenda",
    "minutes",
    "proposal",
    "contract",
    "deadline",
    "team",
    "office",
    "travel",
    "results",
    "analysis",
    "summary",
    "feedback",
    "and",
    "of",
    "to",
    "for",
    "with",
    "on",
    "about",
    "from",
    "regarding",
    "we",
    "you",
    "should",
    "could",
    "would",
    "next",
    "week",
    "month",
    "figures",
    "changes",
    "version",
    "final",
    "notes",
    "regards",
];

/// `approx` bytes of text in CRLF lines of at most 76 characters (no line starts
/// with '.').
pub fn text_body(rng: &mut Rng, approx: usize) -> String {
    let mut out = String::with_capacity(approx + 100);
    let mut line = String::new();
    while out.len() + line.len() < approx {
        let w = rng.pick(WORDS);
        if line.len() + w.len() + 1 > 76 {
            out.push_str(&line);
            out.push_str("\r\n");
            line.clear();
            if rng.below(8) == 0 {
                out.push_str("\r\n");
            }
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(w);
    }
    out.push_str(&line);
    out.push_str("\r\n");
    out
}

/// Seconds with millisecond precision.
pub fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// Human-readable byte count (MiB with two decimals).
pub fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}
