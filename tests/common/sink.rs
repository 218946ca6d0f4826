//! Upstream SMTP server for tests: `tests/support/smtp_sink.py` (aiosmtpd).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::net::{read_port_and_ready, PYTHON};
use super::tls::TestCa;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkMode {
    /// Implicit TLS from the first byte (like port 465).
    Tls,
    /// Plain text; STARTTLS required before anything else (like port 587).
    StartTls,
    /// No TLS; AUTH in the clear (for tests that put a fault-injecting relay in front).
    Plain,
}

/// Options for [`Sink::start_with`]. `Default` = implicit TLS, user
/// "sinkuser", password "sinkpass", no rejections.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub mode: SinkMode,
    pub user: String,
    pub password: String,
    /// RCPT TO containing any of these -> `550 5.1.1 mailbox unavailable`.
    pub reject_rcpt: Vec<String>,
    /// Message containing this -> `554 5.6.0 rejected by test sink` after DATA.
    pub reject_data: Option<String>,
    /// Max accepted line length incl. CRLF (default 1001, RFC 5321); longer
    /// lines get `500 Line too long` after DATA.
    pub max_line: Option<usize>,
    /// SIZE limit in bytes (default 128 MiB).
    pub size_limit: Option<u64>,
    /// After this many messages in one session the sink sends `421` and closes the
    /// connection (as a provider's idle timeout does).
    pub close_after: Option<u32>,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            mode: SinkMode::Tls,
            user: "sinkuser".into(),
            password: "sinkpass".into(),
            reject_rcpt: Vec::new(),
            reject_data: None,
            max_line: None,
            size_limit: None,
            close_after: None,
        }
    }
}

/// One message accepted by the sink.
#[derive(Debug, Clone)]
pub struct SinkMessage {
    /// File number (1-based, NNNN.eml / NNNN.json).
    pub num: u32,
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    /// MAIL FROM parameters as sent, upper-cased (e.g. "BODY=8BITMIME", "SIZE=123").
    pub mail_options: Vec<String>,
    /// The AUTH login used for the session.
    pub auth_user: Option<String>,
    /// Exact bytes of the message as received (CRLF, dot-unstuffed).
    pub data: Vec<u8>,
}

impl SinkMessage {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

pub struct Sink {
    pub port: u16,
    pub outdir: PathBuf,
    pub mode: SinkMode,
    pub user: String,
    pub password: String,
    /// stdout/stderr of the python process.
    pub log_path: PathBuf,
    child: Child,
    dir: Option<tempfile::TempDir>,
}

impl Sink {
    /// Start a sink with default credentials ("sinkuser"/"sinkpass").
    pub fn start(ca: &TestCa, mode: SinkMode) -> Sink {
        Sink::start_with(
            ca,
            SinkConfig {
                mode,
                ..SinkConfig::default()
            },
        )
    }

    /// Start a sink on a port the kernel picks and wait for it to report that port and
    /// READY.
    pub fn start_with(ca: &TestCa, cfg: SinkConfig) -> Sink {
        let dir = super::tempdir();
        let outdir = dir.path().join("out");
        std::fs::create_dir_all(&outdir).unwrap();
        let log_path = dir.path().join("sink.log");
        let (child, port) = spawn_sink(ca, &cfg, &outdir, &log_path)
            .unwrap_or_else(|e| panic!("smtp_sink.py did not start: {e}"));
        Sink {
            port,
            outdir,
            mode: cfg.mode,
            user: cfg.user.clone(),
            password: cfg.password.clone(),
            log_path,
            child,
            dir: Some(dir),
        }
    }

    /// Completed messages (json present), sorted by number.
    pub fn messages(&self) -> Vec<SinkMessage> {
        let mut nums: Vec<u32> = std::fs::read_dir(&self.outdir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        let name = e.file_name().into_string().ok()?;
                        name.strip_suffix(".json")?.parse::<u32>().ok()
                    })
                    .collect()
            })
            .unwrap_or_default();
        nums.sort_unstable();
        nums.into_iter()
            .map(|n| read_message(&self.outdir, n))
            .collect()
    }

    /// Wait until at least `n` messages are complete; returns all messages.
    /// Panics (with the sink log) on timeout.
    pub fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<SinkMessage> {
        let deadline = Instant::now() + timeout;
        loop {
            let msgs = self.messages();
            if msgs.len() >= n {
                return msgs;
            }
            if Instant::now() >= deadline {
                panic!(
                    "sink on port {}: expected {n} message(s) within {timeout:?}, got {}\n\
                     --- sink log:\n{}",
                    self.port,
                    msgs.len(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Assert no message is (or becomes, within `settle`) complete.
    pub fn assert_no_messages(&self, settle: Duration) {
        std::thread::sleep(settle);
        let msgs = self.messages();
        assert!(
            msgs.is_empty(),
            "sink unexpectedly received {} message(s): {:?}",
            msgs.len(),
            msgs.iter()
                .map(|m| (&m.mail_from, &m.rcpt_tos))
                .collect::<Vec<_>>()
        );
    }

    /// Contents of the sink's log (python stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                let path = dir.keep();
                eprintln!(
                    "[sink port {}] test panicked; kept {} ; log:\n{}",
                    self.port,
                    path.display(),
                    std::fs::read_to_string(path.join("sink.log")).unwrap_or_default()
                );
            }
        }
    }
}

/// Starts `smtp_sink.py` on port 0; returns it and the port it reported.
fn spawn_sink(
    ca: &TestCa,
    cfg: &SinkConfig,
    outdir: &Path,
    log_path: &Path,
) -> Result<(Child, u16), String> {
    let script = super::support_file("smtp_sink.py");
    let log = std::fs::File::create(log_path).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(PYTHON);
    cmd.arg(&script)
        .arg("--port")
        .arg("0")
        .arg("--cert")
        .arg(&ca.cert_pem)
        .arg("--key")
        .arg(&ca.key_pem)
        .arg("--mode")
        .arg(match cfg.mode {
            SinkMode::Tls => "tls",
            SinkMode::StartTls => "starttls",
            SinkMode::Plain => "plain",
        })
        .arg("--user")
        .arg(&cfg.user)
        .arg("--password")
        .arg(&cfg.password)
        .arg("--outdir")
        .arg(outdir);
    for r in &cfg.reject_rcpt {
        cmd.arg(format!("--reject-rcpt={r}"));
    }
    if let Some(d) = &cfg.reject_data {
        cmd.arg(format!("--reject-data={d}"));
    }
    if let Some(m) = cfg.max_line {
        cmd.arg("--max-line").arg(m.to_string());
    }
    if let Some(s) = cfg.size_limit {
        cmd.arg("--size-limit").arg(s.to_string());
    }
    if let Some(n) = cfg.close_after {
        cmd.arg("--close-after").arg(n.to_string());
    }
    let mut child = cmd
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| format!("spawn {PYTHON} {}: {e}", script.display()))?;
    match read_port_and_ready(&mut child, Duration::from_secs(20)) {
        Ok(port) => Ok((child, port)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "{e}; log:\n{}",
                std::fs::read_to_string(log_path).unwrap_or_default()
            ))
        }
    }
}

fn read_message(outdir: &Path, n: u32) -> SinkMessage {
    let base = outdir.join(format!("{n:04}"));
    let meta_text = std::fs::read_to_string(base.with_extension("json"))
        .unwrap_or_else(|e| panic!("read {n:04}.json: {e}"));
    let meta: serde_json::Value =
        serde_json::from_str(&meta_text).unwrap_or_else(|e| panic!("parse {n:04}.json: {e}"));
    let str_list = |j: &serde_json::Value| -> Vec<String> {
        j.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let data = std::fs::read(base.with_extension("eml"))
        .unwrap_or_else(|e| panic!("read {n:04}.eml: {e}"));
    SinkMessage {
        num: n,
        mail_from: meta
            .get("mail_from")
            .and_then(|j| j.as_str())
            .unwrap_or("")
            .to_owned(),
        rcpt_tos: meta.get("rcpt_tos").map(str_list).unwrap_or_default(),
        mail_options: meta.get("mail_options").map(str_list).unwrap_or_default(),
        auth_user: meta
            .get("auth_user")
            .and_then(|j| j.as_str())
            .map(str::to_owned),
        data,
    }
}
