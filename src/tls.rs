//! TLS for both sides of the proxy.
//!
//! Towards mail clients sealpost shows either the configured certificate or one it
//! generates once for `localhost`/`127.0.0.1`. Towards the provider it always verifies
//! the server certificate, against the system's roots plus the configured `extra_ca`:
//! there is no switch to turn verification off.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {message}")]
    Read {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("{path} holds no {what}; expected PEM with a \"-----BEGIN {what}\" block")]
    Empty { what: &'static str, path: PathBuf },
    #[error("the listener certificate and key do not fit together: {0}")]
    Mismatch(String),
    #[error("cannot generate a listener certificate in {dir}: {message}")]
    Generate { dir: PathBuf, message: String },
    #[error(
        "no trusted root certificates: the system store is empty and no extra_ca is configured"
    )]
    NoRoots,
    #[error("{0:?} is not a valid server name for TLS")]
    BadName(String),
}

/// The process-wide crypto provider: aws-lc-rs only (see STACK.md).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Seeds the TLS library's random generator now. aws-lc seeds it once per process
/// from CPU jitter, which takes tens of milliseconds (perf: `tree_jitter_initialize_once`):
/// done at startup, before the listeners are ready, the first client's handshake does
/// not wait for it.
pub fn warm_up() {
    let mut seed = [0u8; 32];
    if provider().secure_random.fill(&mut seed).is_err() {
        tracing::warn!("the TLS library's random generator is not available");
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::Read {
            what: "certificate file",
            path: path.to_path_buf(),
            message: e.to_string(),
        })?
        .collect();
    let certs = certs.map_err(|e| TlsError::Read {
        what: "certificate file",
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what: "CERTIFICATE",
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Read {
        what: "private key file",
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Server configuration for the client-facing listeners.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = read_certs(cert)?;
    let key = read_key(key)?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Mismatch(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    Ok(Arc::new(config))
}

/// Returns the paths of the generated listener certificate in `state_dir`, creating
/// it on first use. It names `localhost`, `127.0.0.1` and `::1`.
pub fn ensure_self_signed(state_dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert_path = state_dir.join("listener-cert.pem");
    let key_path = state_dir.join("listener-key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let fail = |message: String| TlsError::Generate {
        dir: state_dir.to_path_buf(),
        message,
    };
    std::fs::create_dir_all(state_dir).map_err(|e| fail(e.to_string()))?;
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let generated = rcgen::generate_simple_self_signed(names).map_err(|e| fail(e.to_string()))?;
    write_private(&key_path, generated.signing_key.serialize_pem().as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    std::fs::write(&cert_path, generated.cert.pem()).map_err(|e| fail(e.to_string()))?;
    Ok((cert_path, key_path))
}

/// Writes a file readable by its owner only (secret keys, passphrases): the data goes
/// into a new file (mode 0600, `create_new`, so nothing already there, link or not, is
/// written through) in the same folder, which then replaces `path` by `rename`. An
/// existing file's mode is never kept, and a symbolic link at `path` is replaced, not
/// followed.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = path.with_file_name(tmp_name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let written = f
        .write_all(data)
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Whether anything (a file, a folder, a symbolic link, dangling or not) is at `path`.
pub fn something_at(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Client configuration for upstream connections: system roots plus `extra_ca`.
pub fn client_config(extra_ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    // A system store that partly fails to load still gives us the roots it could read.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = extra_ca {
        for cert in read_certs(path)? {
            roots.add(cert).map_err(|e| TlsError::Read {
                what: "extra_ca",
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        }
    }
    if roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Mismatch(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name to verify an upstream certificate against.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_string()).map_err(|_| TlsError::BadName(host.to_string()))
}

/// The certificate sealpost shows to clients: configured, or generated.
pub fn listener_config(
    config: &crate::config::Config,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    match &config.tls {
        Some(tls) => server_config(&tls.cert, &tls.key),
        None => {
            let (cert, key) = ensure_self_signed(&config.state_dir)?;
            server_config(&cert, &key)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificate_loads_and_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (c1, k1) = ensure_self_signed(dir.path()).unwrap();
        let first = std::fs::read(&c1).unwrap();
        server_config(&c1, &k1).unwrap();
        let (c2, _) = ensure_self_signed(dir.path()).unwrap();
        assert_eq!(first, std::fs::read(c2).unwrap());
    }

    #[test]
    fn missing_files_are_named() {
        let err = server_config(Path::new("/nonexistent/c.pem"), Path::new("/x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/c.pem"), "{err}");
    }
}
