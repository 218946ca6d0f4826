//! The audit log: one JSON line per outbound decision and per inbound decryption.
//!
//! A gateway's administrator must be able to show, per message, who sent what to whom,
//! encrypted to which key and why that key was believed, and which stored messages were
//! decrypted for whom. A record carries addresses, account, mailbox, UID, fingerprints
//! and verdicts only: never a Subject, a body or a credential.
//!
//! Records go to `[audit] file` (created 0600, opened `O_APPEND`, each line written with
//! one `write` so concurrent lines never interleave; a symbolic link there is refused and
//! an existing file group or others can read is made 0600; after a write that failed
//! part way the next record starts on a new line, and failures are counted in
//! `sealpost_audit_write_failures_total`) and/or, with `journal = true`, to
//! the process log as an event with the target [`TARGET`] (journald captures stderr).
//! The sink is installed once at start-up ([`install`]); until then, as in unit tests
//! and one-shot commands, recording does nothing.

use crate::config::AuditConfig;
use crate::pgp::{SignatureStatus, ViewKind};
use crate::smtp::pipeline::Planned;
use crate::trust::Vouch;
use serde::Serialize;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// The tracing target of audit events (`journal = true`).
pub const TARGET: &str = "sealpost::audit";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(
        "cannot open the audit log {path} for appending ([audit] file): {source}; \
         create its folder and make it writable for the user sealpost runs as"
    )]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("refusing the audit log {path} ([audit] file): {message}")]
    Refused { path: PathBuf, message: String },
}

/// Where records go.
#[derive(Debug)]
pub struct Audit {
    file: Option<(PathBuf, File)>,
    journal: bool,
    /// The last write to the file failed or was cut short: the file may end inside a
    /// line, so the next record starts with a newline.
    broken: AtomicBool,
}

static SINK: OnceLock<Audit> = OnceLock::new();

/// Opens `path` for appending, creating it with mode 0600. A symbolic link is refused:
/// checked with `symlink_metadata` before the open and again after it (the same file,
/// by device and inode, as the one opened), so a link swapped in between is caught
/// (there is no `O_NOFOLLOW` without libc). An existing file group or others can read
/// is made 0600 through the open handle.
fn open_append(path: &Path) -> Result<File, AuditError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let refused = |message: &str| AuditError::Refused {
        path: path.to_path_buf(),
        message: message.to_string(),
    };
    let open_err = |source| AuditError::Open {
        path: path.to_path_buf(),
        source,
    };
    let is_link = |p: &Path| {
        std::fs::symlink_metadata(p)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false)
    };
    if is_link(path) {
        return Err(refused("it is a symbolic link; name the file itself"));
    }
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(open_err)?;
    let opened = file.metadata().map_err(open_err)?;
    let named = std::fs::symlink_metadata(path).map_err(open_err)?;
    if named.file_type().is_symlink() || (named.dev(), named.ino()) != (opened.dev(), opened.ino())
    {
        return Err(refused(
            "it was replaced by a symbolic link while being opened",
        ));
    }
    if !opened.file_type().is_file() {
        return Err(refused("it is not a regular file"));
    }
    if opened.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| AuditError::Refused {
                path: path.to_path_buf(),
                message: format!("group or others can read it and it cannot be made 0600: {e}"),
            })?;
        tracing::warn!(path = %path.display(), "the audit log was readable by group or others; made 0600");
    }
    Ok(file)
}

/// Can the audit file be opened for appending? (`sealpost check`; creates the file as
/// start-up would.)
pub fn check(cfg: &AuditConfig) -> Result<(), AuditError> {
    match &cfg.file {
        Some(path) => open_append(path).map(drop),
        None => Ok(()),
    }
}

impl Audit {
    /// Opens the configured sinks; an unwritable file is an error naming it.
    pub fn open(cfg: &AuditConfig) -> Result<Audit, AuditError> {
        let file = match &cfg.file {
            Some(path) => Some((path.clone(), open_append(path)?)),
            None => None,
        };
        Ok(Audit {
            file,
            journal: cfg.journal,
            broken: AtomicBool::new(false),
        })
    }

    /// Is anything configured?
    pub fn enabled(&self) -> bool {
        self.file.is_some() || self.journal
    }

    /// Writes one record. A failed write is logged (without the record) and does not
    /// stop the mail flow.
    pub fn write(&self, record: &impl Serialize) {
        let Ok(mut line) = serde_json::to_string(record) else {
            return;
        };
        if self.journal {
            tracing::info!(target: TARGET, record = %line, "audit");
        }
        if let Some((path, file)) = &self.file {
            line.push('\n');
            if self.broken.load(Ordering::Relaxed) {
                line.insert(0, '\n');
            }
            // One write(2) with O_APPEND: the line lands whole at the end of the file.
            let failed = match (&*file).write(line.as_bytes()) {
                Ok(n) if n == line.len() => false,
                Ok(n) => {
                    tracing::error!(path = %path.display(), written = n, "audit line written only in part");
                    true
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot write the audit log");
                    true
                }
            };
            // A failed write may still have left part of a line (a full disk, a signal).
            self.broken.store(failed, Ordering::Relaxed);
            if failed {
                crate::metrics::audit_write_failure();
            }
        }
    }
}

/// Makes `audit` the process's sink (once; later calls are ignored).
pub fn install(audit: Audit) {
    if audit.enabled() {
        let _ = SINK.set(audit);
    }
}

fn sink() -> Option<&'static Audit> {
    SINK.get()
}

/// One recipient of an outbound record.
#[derive(Debug, Serialize)]
pub struct RecipientRecord {
    pub address: String,
    /// `encrypted`, `plain` or `refused`: the policy's decision for this recipient
    /// (the record's `outcome` says whether the message left).
    pub decision: &'static str,
    /// What vouches for the keys (see [`Vouch`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vouch: Option<Vouch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyRecord>,
}

/// A certificate a copy was encrypted to.
#[derive(Debug, Serialize)]
pub struct KeyRecord {
    pub fingerprint: String,
    /// Where a discovered certificate was found (absent for certificates the
    /// administrator imported).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<crate::config::KeySource>,
}

/// What became of an outbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Upstream accepted every copy.
    Relayed,
    /// The policy refused it; nothing was sent.
    Refused,
    /// Upstream refused a copy; the client got upstream's reply.
    UpstreamRefused,
    /// Encryption or the connection upstream failed; the client was told to retry.
    Failed,
}

#[derive(Debug, Serialize)]
struct OutboundRecord<'a> {
    time: String,
    event: &'static str,
    account: &'a str,
    sender: &'a str,
    /// Who authenticated the SMTP session, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    login: Option<&'a str>,
    outcome: Outcome,
    /// The SMTP reply code the client got.
    code: u16,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    client_encrypted: bool,
    recipients: Vec<RecipientRecord>,
}

/// The recipients of a plan, with each key's fingerprint and where it was found.
pub fn recipients(
    planned: &Planned,
    provenance: impl Fn(&str) -> Option<crate::keys::provenance::Provenance>,
) -> Vec<RecipientRecord> {
    use crate::policy::Decision;
    planned
        .decisions
        .iter()
        .map(|d| RecipientRecord {
            address: d.address.clone(),
            decision: match d.decision {
                Decision::Encrypt => "encrypted",
                Decision::SendPlain => "plain",
                Decision::Refuse => "refused",
            },
            vouch: d.vouch,
            keys: d
                .certs
                .iter()
                .map(|c| {
                    let fingerprint = c.fingerprint().to_hex();
                    let source = provenance(&fingerprint)
                        .filter(|p| !p.local)
                        .map(|p| p.source);
                    KeyRecord {
                        fingerprint,
                        source,
                    }
                })
                .collect(),
        })
        .collect()
}

/// Records an outbound decision (see [`Outcome`]).
pub fn outbound(
    account: &str,
    sender: &str,
    login: Option<&str>,
    outcome: Outcome,
    code: u16,
    client_encrypted: bool,
    recipients: Vec<RecipientRecord>,
) {
    let Some(sink) = sink() else { return };
    sink.write(&OutboundRecord {
        time: rfc3339_now(),
        event: "outbound",
        account,
        sender,
        login,
        outcome,
        code,
        client_encrypted,
        recipients,
    });
}

#[derive(Debug, Serialize)]
struct DecryptionRecord<'a> {
    time: String,
    event: &'static str,
    account: &'a str,
    identity: &'a str,
    mailbox: &'a str,
    uid: u32,
    /// `decrypted`, `undecryptable` or `too-large`.
    result: &'static str,
    /// For a decrypted message: `good`, `wrong-signer`, `bad`, `unknown-key`, `unsigned`.
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<&'static str>,
    /// The signer's fingerprint when the signature verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    signer: Option<&'a str>,
    /// Why an encrypted message could not be decrypted.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// Records the verdict on a stored message decrypted for an IMAP client (a message
/// that is not encrypted is not recorded).
pub fn decryption(account: &str, identity: &str, mailbox: &str, uid: u32, kind: &ViewKind) {
    if let (Some(sink), Some(record)) = (
        sink(),
        decryption_record(account, identity, mailbox, uid, kind),
    ) {
        sink.write(&record);
    }
}

fn decryption_record<'a>(
    account: &'a str,
    identity: &'a str,
    mailbox: &'a str,
    uid: u32,
    kind: &'a ViewKind,
) -> Option<DecryptionRecord<'a>> {
    let (result, signature, signer, reason) = match kind {
        ViewKind::Plain => return None,
        ViewKind::Decrypted(s) => {
            let (label, signer) = match s {
                SignatureStatus::Unsigned => ("unsigned", None),
                SignatureStatus::Good { fingerprint, .. } => ("good", Some(fingerprint.as_str())),
                SignatureStatus::WrongSigner { fingerprint } => {
                    ("wrong-signer", Some(fingerprint.as_str()))
                }
                SignatureStatus::Bad => ("bad", None),
                SignatureStatus::UnknownKey { .. } => ("unknown-key", None),
            };
            ("decrypted", Some(label), signer, None)
        }
        ViewKind::Undecryptable(reason) => ("undecryptable", None, None, Some(reason.as_str())),
        ViewKind::TooLarge { .. } => ("too-large", None, None, None),
    };
    Some(DecryptionRecord {
        time: rfc3339_now(),
        event: "decryption",
        account,
        identity,
        mailbox,
        uid,
        result,
        signature,
        signer,
        reason,
    })
}

/// Now as RFC 3339 UTC with milliseconds, e.g. `2026-12-07T02:42:43.120Z`.
pub fn rfc3339_now() -> String {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(since.as_secs() as i64, since.subsec_millis())
}

/// Unix seconds (and milliseconds) as RFC 3339 UTC.
fn rfc3339(secs: i64, millis: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_date(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01: count in 400-year eras of
/// 146 097 days, with years starting in March so the leap day falls last.
fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_796_611_363, 120), "2026-12-07T02:42:43.120Z");
        assert_eq!(rfc3339(4_107_542_399, 999), "2100-02-28T23:59:59.999Z");
        assert_eq!(rfc3339(-1, 0), "1969-12-31T23:59:59.000Z");
    }

    #[test]
    fn the_file_is_private_and_lines_are_whole_json() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let cfg = AuditConfig {
            file: Some(path.clone()),
            journal: false,
        };
        let audit = std::sync::Arc::new(Audit::open(&cfg).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let audit = audit.clone();
                std::thread::spawn(move || {
                    for i in 0..200u32 {
                        let kind =
                            ViewKind::Undecryptable(format!("reason {t} {}", "x".repeat(300)));
                        audit.write(&decryption_record("acct", "a@b.example", "INBOX", i, &kind));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1600);
        for l in lines {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["event"], "decryption");
            assert_eq!(v["result"], "undecryptable");
        }
        // A plain message is no decryption.
        assert!(decryption_record("a", "b", "c", 1, &ViewKind::Plain).is_none());
    }

    #[test]
    fn an_unwritable_file_is_named() {
        let cfg = AuditConfig {
            file: Some("/nonexistent-dir/audit.jsonl".into()),
            journal: false,
        };
        let err = Audit::open(&cfg).unwrap_err().to_string();
        assert!(
            err.contains("/nonexistent-dir/audit.jsonl") && err.contains("[audit] file"),
            "{err}"
        );
        assert!(check(&cfg).is_err());
    }

    /// Review F7: a symbolic link at the audit path is refused (never followed), and an
    /// existing file group or others can read is made 0600.
    #[test]
    fn a_linked_audit_file_is_refused_and_a_readable_one_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        let link = dir.path().join("audit.jsonl");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let cfg = AuditConfig {
            file: Some(link.clone()),
            journal: false,
        };
        let err = Audit::open(&cfg).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(check(&cfg).is_err());
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "the link's target was touched");

        let cfg = AuditConfig {
            file: Some(target.clone()),
            journal: false,
        };
        Audit::open(&cfg).unwrap();
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// After a write that failed part way, the next record starts on a new line, so
    /// every complete line stays one whole record; failures are counted.
    #[test]
    fn after_a_failed_write_the_next_record_starts_a_new_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::open(&AuditConfig {
            file: Some(path.clone()),
            journal: false,
        })
        .unwrap();
        // What a write cut short leaves behind.
        (&audit.file.as_ref().unwrap().1)
            .write_all(b"{\"event\":\"outb")
            .unwrap();
        audit.broken.store(true, Ordering::Relaxed);
        let kind = ViewKind::TooLarge { limit: 1 };
        audit.write(&decryption_record("acct", "a@b.example", "INBOX", 7, &kind));
        audit.write(&decryption_record("acct", "a@b.example", "INBOX", 8, &kind));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], "{\"event\":\"outb");
        for (l, uid) in lines[1..].iter().zip([7, 8]) {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["uid"], uid);
        }
        assert!(!audit.broken.load(Ordering::Relaxed));

        // A write that fails is counted and marks the file.
        let before = crate::metrics::METRICS.encode();
        let read_only = Audit {
            file: Some((path.clone(), std::fs::File::open(&path).unwrap())),
            journal: false,
            broken: AtomicBool::new(false),
        };
        read_only.write(&decryption_record("acct", "a@b.example", "INBOX", 9, &kind));
        assert!(read_only.broken.load(Ordering::Relaxed));
        let count = |text: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix("sealpost_audit_write_failures_total "))
                .map(|n| n.trim().parse().unwrap())
                .unwrap_or(0)
        };
        assert!(count(&crate::metrics::METRICS.encode()) > count(&before));
    }
}
