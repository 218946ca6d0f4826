//! `sealpost status`: a running instance answers on a Unix socket in `state_dir`.
//!
//! The socket is `state_dir/control.sock`, mode 0600 (only the service's own user, and
//! root, may connect). A client connects and reads one JSON document, the
//! [`crate::stats::Snapshot`]; nothing is read from the client, so there is nothing to
//! parse on the server side.
//!
//! Several instances may share a `state_dir` (two behind one load balancer): each then
//! names itself with `instance = "..."` and gets `state_dir/control-<instance>.sock`. An
//! instance never takes over a socket another running instance answers on (it starts
//! without one, and says why), and removes the socket on exit only if it is still its own.

use crate::stats::Snapshot;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tokio::sync::watch;

pub const SOCKET_NAME: &str = "control.sock";

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot create the control socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another running sealpost answers on {path}: instances that share a state_dir need `instance = \"...\"` each (or a state_dir each)"
    )]
    InUse { path: PathBuf },
    #[error(
        "no running sealpost answers on {path} (start it with `sealpost run`, or name its config with --config)"
    )]
    NotRunning {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the answer on {path} is not a status report")]
    Garbled {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The control socket in `state_dir`, named after `instance` when there is one.
pub fn socket_path(state_dir: &Path, instance: Option<&str>) -> PathBuf {
    match instance {
        Some(name) => state_dir.join(format!("control-{name}.sock")),
        None => state_dir.join(SOCKET_NAME),
    }
}

/// Binds the control socket `path` with mode 0600. It is made under a temporary name and
/// renamed into place once restricted, so nobody can connect while it is still open to
/// all; a stale socket of an earlier run is replaced, one a running instance answers on
/// is not.
pub fn bind(path: &Path) -> Result<UnixListener, StatusError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| StatusError::Bind {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(StatusError::InUse {
            path: path.to_path_buf(),
        });
    }
    let name = path
        .file_name()
        .map_or_else(|| SOCKET_NAME.into(), |n| n.to_string_lossy().into_owned());
    let temp = dir.join(format!(".{name}.{}", std::process::id()));
    let _ = std::fs::remove_file(&temp);
    let listener = UnixListener::bind(&temp).map_err(err)?;
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    std::fs::rename(&temp, path).map_err(err)?;
    Ok(listener)
}

/// The file's identity, to tell our socket from one bound there later.
fn inode(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Answers every connection with a fresh snapshot until `stop` changes, then removes
/// the socket.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    snapshot: Arc<dyn Fn() -> Snapshot + Send + Sync>,
    mut stop: watch::Receiver<bool>,
) {
    let ours = inode(&path);
    loop {
        let mut stream = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let snapshot = snapshot.clone();
        tokio::spawn(async move {
            // Counting the key store reads files: off the I/O threads.
            let Ok(snap) = tokio::task::spawn_blocking(move || snapshot()).await else {
                return;
            };
            let mut json = serde_json::to_vec(&snap).unwrap_or_default();
            json.push(b'\n');
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(&json)).await;
        });
    }
    if ours.is_some() && inode(&path) == ours {
        let _ = std::fs::remove_file(&path);
    }
}

/// Asks the instance whose control socket is `path`; returns the raw JSON and the
/// parsed snapshot.
pub fn query(path: &Path) -> Result<(serde_json::Value, Snapshot), StatusError> {
    use std::io::Read;
    let not_running = |source| StatusError::NotRunning {
        path: path.to_path_buf(),
        source,
    };
    let stream = std::os::unix::net::UnixStream::connect(path).map_err(not_running)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(not_running)?;
    let mut text = Vec::new();
    stream
        .take(16 << 20)
        .read_to_end(&mut text)
        .map_err(not_running)?;
    let garbled = |source| StatusError::Garbled {
        path: path.to_path_buf(),
        source,
    };
    let value: serde_json::Value = serde_json::from_slice(&text).map_err(garbled)?;
    let snap: Snapshot = serde_json::from_value(value.clone()).map_err(garbled)?;
    Ok((value, snap))
}

fn duration(secs: u64) -> String {
    format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// The report for a person.
pub fn render(s: &Snapshot) -> String {
    let mut t = format!(
        "sealpost {} (pid {}), up {}, config {}, reloads {}\n",
        s.version,
        s.pid,
        duration(s.uptime_secs),
        s.config,
        s.reloads
    );
    t.push_str("listeners:\n");
    for l in &s.listeners {
        t.push_str(&format!(
            "  {:<22} {:<32} open {}, total {}\n",
            l.addr.to_string(),
            l.what,
            l.open,
            l.total
        ));
    }
    t.push_str(&format!(
        "connections: {} open, {} total\n",
        s.connections_open, s.connections_total
    ));
    t.push_str("accounts:\n");
    if s.accounts.is_empty() {
        t.push_str("  (nothing sent or read yet)\n");
    }
    for (name, a) in &s.accounts {
        let dec: Vec<String> = a
            .decryptions
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        t.push_str(&format!(
            "  {name}: encrypted {}, sent plain {}, refused {}; views: {}; searches {} \
             ({} encrypted messages read from the search index, {} decrypted for them); \
             indexed in the background {}\n",
            a.encrypted,
            a.sent_plain,
            a.refused,
            if dec.is_empty() {
                "none".to_string()
            } else {
                dec.join(", ")
            },
            a.searches,
            a.search_from_index,
            a.search_decrypted,
            a.indexed_in_background
        ));
    }
    match s.key_store_certificates {
        Some(n) => t.push_str(&format!("key store: {n} certificate(s)\n")),
        None => t.push_str("key store: cannot be read\n"),
    }
    t.push_str("last errors:\n");
    if s.last_errors.is_empty() {
        t.push_str("  (none)\n");
    }
    let now = s.started + s.uptime_secs;
    for e in &s.last_errors {
        t.push_str(&format!(
            "  {} ago {} {}: {}\n",
            duration(now.saturating_sub(e.at)),
            e.level,
            e.target,
            e.message
        ));
    }
    t
}
