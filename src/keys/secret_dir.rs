//! `[keys] secret_dir`: one secret key per address, for a gateway with many users.
//!
//! The folder holds `<address>.asc` (the secret key, armored or binary) and, for a
//! protected key, `<address>.pass` (its passphrase on the first line). A key is loaded
//! the first time its address logs in or sends, unlocked once and kept; an address
//! without a file is asked again after [`RETRY`], so a key added later is picked up.
//! `[[identity]]` entries of the config are looked at first and win.
//!
//! An address becomes a file name only after it passed [`file_stem`]: the login must be
//! ASCII and already in its normalised form but for ASCII case (so a Kelvin sign for
//! `K`, fullwidth letters or a trailing dot, which normalise onto another user's
//! address, select nothing), then ASCII letters, digits and a few punctuation
//! characters, one `@`, a domain of dot-separated labels; so nothing a client sends as a
//! login can name a path outside the folder or another user's key.
//!
//! Key and passphrase files must be regular files, not symbolic links, and a `.pass`
//! file must not be readable by group or others; anything else is refused (logged,
//! retried after [`RETRY`]).

use super::{load_identity, normalize_address, KeyError, LoadedIdentity};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a miss (no file, or a key that does not load) is remembered.
pub const RETRY: Duration = Duration::from_secs(60);

/// The secret keys of a folder, loaded on demand.
pub struct SecretDir {
    dir: PathBuf,
    loaded: Mutex<HashMap<String, Entry>>,
}

enum Entry {
    Loaded(Arc<LoadedIdentity>),
    Missing(Instant),
}

/// The file name stem for `address` (its normalised form), or `None` when the address
/// cannot safely be one. `address` is what the client sent as a login: it must be ASCII
/// and equal to its normalised form but for ASCII case, before any lookup.
pub fn file_stem(address: &str) -> Option<String> {
    if !address.is_ascii() {
        return None;
    }
    let a = normalize_address(address);
    if !a.eq_ignore_ascii_case(address) {
        return None;
    }
    let (local, domain) = a.split_once('@')?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-=!#$%&'*^`{|}~".contains(c));
    let domain_ok = !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    (local_ok && domain_ok).then_some(a)
}

impl SecretDir {
    pub fn new(dir: &Path) -> SecretDir {
        SecretDir {
            dir: dir.to_path_buf(),
            loaded: Mutex::new(HashMap::new()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The identity for `login` (which must be an address), loading its key on first use.
    pub fn identity(&self, login: &str) -> Option<Arc<LoadedIdentity>> {
        let stem = file_stem(login)?;
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        match loaded.get(&stem) {
            Some(Entry::Loaded(id)) => return Some(id.clone()),
            Some(Entry::Missing(at)) if at.elapsed() < RETRY => return None,
            _ => {}
        }
        // Unlocking takes a moment; it happens once per address (or per RETRY for a
        // broken one), so holding the lock keeps two sessions from doing it twice.
        let entry = match self.load(&stem, login) {
            Ok(Some(id)) => Entry::Loaded(Arc::new(id)),
            Ok(None) => Entry::Missing(Instant::now()),
            Err(e) => {
                tracing::warn!(error = %e, "secret_dir: key not usable; retrying in a minute");
                Entry::Missing(Instant::now())
            }
        };
        let found = match &entry {
            Entry::Loaded(id) => Some(id.clone()),
            Entry::Missing(_) => None,
        };
        if loaded.len() > 100_000 {
            loaded.retain(|_, e| matches!(e, Entry::Loaded(_)));
        }
        loaded.insert(stem, entry);
        found
    }

    /// Loads `<stem>.asc` (with `<stem>.pass`), or `None` when there is no such file.
    fn load(&self, stem: &str, login: &str) -> Result<Option<LoadedIdentity>, KeyError> {
        let key = self.dir.join(format!("{stem}.asc"));
        if !regular_file(&key)? {
            return Ok(None);
        }
        let pass = self.dir.join(format!("{stem}.pass"));
        let has_pass = regular_file(&pass)?;
        if has_pass {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::symlink_metadata(&pass)
                .map_err(|e| read_error(&pass, e))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(KeyError::Read {
                    path: pass,
                    message: format!(
                        "readable by group or others (mode {:o}); chmod 600 it",
                        mode & 0o777
                    ),
                });
            }
        }
        let id = crate::config::Identity {
            address: stem.to_string(),
            login: Some(login.to_string()),
            account: None,
            secret_key: key.clone(),
            passphrase_file: has_pass.then_some(pass),
            passphrase_credential: None,
            passphrase_env: None,
        };
        let loaded = load_identity(&id)?;
        // The file name says whose key it is; the key must say so too.
        let believed = crate::trust::Believed::for_all_user_ids(loaded.cert.clone());
        if !believed.vouches_for(stem) {
            return Err(KeyError::Identity {
                address: stem.to_string(),
                message: format!("{} has no user ID with this address", key.display()),
            });
        }
        Ok(Some(loaded))
    }

    /// How many `*.asc` files the folder holds (`sealpost check`).
    pub fn count(&self) -> std::io::Result<usize> {
        Ok(std::fs::read_dir(&self.dir)?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".asc"))
            .count())
    }
}

/// Whether `path` is a regular file: `false` when absent, an error for a symbolic link
/// or anything else. Checked with `symlink_metadata` just before the file is read, so a
/// link swapped in between the check and the open (by someone who can write the folder)
/// is still followed: keep `secret_dir` writable by its owner only. (No `O_NOFOLLOW`:
/// its value differs between architectures and the crate does not depend on libc.)
fn regular_file(path: &Path) -> Result<bool, KeyError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => Ok(true),
        Ok(m) if m.file_type().is_symlink() => Err(KeyError::Read {
            path: path.to_path_buf(),
            message: "is a symbolic link; refused".into(),
        }),
        Ok(_) => Err(KeyError::Read {
            path: path.to_path_buf(),
            message: "is not a regular file".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(read_error(path, e)),
    }
}

fn read_error(path: &Path, e: std::io::Error) -> KeyError {
    KeyError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_that_could_name_another_path_are_refused() {
        assert_eq!(
            file_stem("Bob@Example.ORG").as_deref(),
            Some("bob@example.org")
        );
        assert_eq!(
            file_stem("a.b+tag@xn--bcher-kva.example").as_deref(),
            Some("a.b+tag@xn--bcher-kva.example")
        );
        for bad in [
            "../../etc/passwd@x.example",
            "a/b@x.example",
            "a\\b@x.example",
            ".hidden@x.example",
            "a..b@x.example",
            "a@../x",
            "a@x/../y",
            "a@.x",
            "a@x..y",
            "a@",
            "@x.example",
            "noat",
            "a\0@x.example",
            "a b@x.example",
            "ü@x.example",
        ] {
            assert_eq!(file_stem(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn keys_load_on_demand_with_their_passphrase_and_must_carry_the_address() {
        let dir = tempfile::tempdir().unwrap();
        let made = tempfile::tempdir().unwrap();
        let g = crate::keys::generate("ann@corp.example", made.path()).unwrap();
        let secrets = SecretDir::new(dir.path());
        assert!(
            secrets.identity("ann@corp.example").is_none(),
            "not there yet"
        );
        // A key found later is picked up after RETRY; a fresh SecretDir sees it at once.
        let id = g.identity("ann@corp.example", None);
        std::fs::copy(&id.secret_key, dir.path().join("ann@corp.example.asc")).unwrap();
        if let Some(p) = &id.passphrase_file {
            std::fs::copy(p, dir.path().join("ann@corp.example.pass")).unwrap();
        }
        let secrets = SecretDir::new(dir.path());
        let ann = secrets.identity("Ann@Corp.Example").expect("loaded");
        assert_eq!(ann.address, "ann@corp.example");
        assert!(!ann.decryptors.is_empty());
        assert!(Arc::ptr_eq(
            &ann,
            &secrets.identity("ann@corp.example").unwrap()
        ));
        // Ann's key filed under another address is refused.
        std::fs::copy(
            dir.path().join("ann@corp.example.asc"),
            dir.path().join("bob@corp.example.asc"),
        )
        .unwrap();
        std::fs::copy(
            dir.path().join("ann@corp.example.pass"),
            dir.path().join("bob@corp.example.pass"),
        )
        .unwrap();
        assert!(secrets.identity("bob@corp.example").is_none());
        assert_eq!(secrets.count().unwrap(), 2);
    }

    /// Review F5: a login that only normalises onto an address (Kelvin sign for `K`,
    /// fullwidth letters, a trailing dot) must not select that address's key.
    #[test]
    fn logins_that_only_normalise_onto_an_address_select_no_key() {
        for login in [
            "\u{212A}ate@corp.example",
            "kate@\u{ff43}\u{ff4f}\u{ff52}\u{ff50}.example",
            "kate@corp.example.",
            "<kate@corp.example>",
            " kate@corp.example",
            "kate@b\u{fc}cher.example",
        ] {
            assert_eq!(file_stem(login), None, "{login:?}");
        }
        assert_eq!(
            file_stem("Kate@Corp.Example").as_deref(),
            Some("kate@corp.example")
        );
    }

    /// A key file that is a symbolic link, and a passphrase file group or others can
    /// read, are refused; fixed, the key loads.
    #[test]
    fn symlinked_keys_and_readable_passphrase_files_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let made = tempfile::tempdir().unwrap();
        let g = crate::keys::generate("ann@corp.example", made.path()).unwrap();
        let id = g.identity("ann@corp.example", None);
        let asc = dir.path().join("ann@corp.example.asc");
        let pass = dir.path().join("ann@corp.example.pass");
        std::os::unix::fs::symlink(&id.secret_key, &asc).unwrap();
        std::fs::copy(id.passphrase_file.as_ref().unwrap(), &pass).unwrap();
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(SecretDir::new(dir.path())
            .identity("ann@corp.example")
            .is_none());

        std::fs::remove_file(&asc).unwrap();
        std::fs::copy(&id.secret_key, &asc).unwrap();
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(SecretDir::new(dir.path())
            .identity("ann@corp.example")
            .is_none());

        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(SecretDir::new(dir.path())
            .identity("ann@corp.example")
            .is_some());
    }
}
