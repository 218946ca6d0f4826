//! Where sealpost's files live when nobody says: the default config path, the default
//! state folder, and systemd credentials (`%d/NAME` paths).
//!
//! A person runs `sealpost init` once and then every command without `--config`, so the
//! default must be the same for every command: `$SEALPOST_CONFIG` if set, otherwise
//! `/etc/sealpost/config.toml` for root and `$XDG_CONFIG_HOME/sealpost/config.toml`
//! (XDG Base Directory spec, falling back to `~/.config`) for everyone else.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The system-wide config, used when running as root.
pub const SYSTEM_CONFIG: &str = "/etc/sealpost/config.toml";
/// The state folder of the system service (systemd's `StateDirectory=sealpost`).
pub const SYSTEM_STATE: &str = "/var/lib/sealpost";
/// Prefix of a path inside systemd's credentials directory (the unit's `%d`).
pub const CREDENTIAL_PREFIX: &str = "%d/";

/// True when this process runs as root (the owner of `/proc/self` is our real uid).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The config path every command uses without `--config`.
pub fn default_config() -> PathBuf {
    config_for(
        is_root(),
        std::env::var_os("SEALPOST_CONFIG"),
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    )
}

/// [`default_config`] from its inputs (testable without touching the environment).
pub fn config_for(
    root: bool,
    explicit: Option<OsString>,
    xdg_config_home: Option<OsString>,
    home: Option<OsString>,
) -> PathBuf {
    if let Some(p) = explicit.filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if root {
        return PathBuf::from(SYSTEM_CONFIG);
    }
    // XDG: a relative $XDG_CONFIG_HOME is invalid and must be ignored.
    let base = xdg_config_home
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| home.map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from(".config"));
    base.join("sealpost").join("config.toml")
}

/// The state folder `sealpost init` writes into a new config: the system one for a
/// config under `/etc`, else `$XDG_STATE_HOME/sealpost` (fallback `~/.local/state`).
pub fn default_state_dir(config: &Path) -> PathBuf {
    if config.starts_with("/etc") {
        return PathBuf::from(SYSTEM_STATE);
    }
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from(".local/state"))
        .join("sealpost")
}

/// Resolves a configured path that starts with `%d/`: the file of that name in
/// `$CREDENTIALS_DIRECTORY` when systemd provides one (`LoadCredential=`), otherwise
/// the file of that name beside the config, where `LoadCredential=` reads it from. Other
/// paths are returned unchanged.
pub fn resolve_credential(path: &Path, config_dir: &Path) -> PathBuf {
    resolve_credential_in(
        path,
        config_dir,
        std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
    )
}

fn resolve_credential_in(path: &Path, config_dir: &Path, creds: Option<PathBuf>) -> PathBuf {
    let Some(name) = path
        .to_str()
        .and_then(|s| s.strip_prefix(CREDENTIAL_PREFIX))
    else {
        return path.to_path_buf();
    };
    match creds.filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir.join(name),
        None => config_dir.join(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_follows_root_xdg_and_home() {
        let s = |x: &str| Some(OsString::from(x));
        assert_eq!(
            config_for(true, None, s("/x"), s("/home/a")),
            PathBuf::from("/etc/sealpost/config.toml")
        );
        assert_eq!(
            config_for(false, None, s("/x"), s("/home/a")),
            PathBuf::from("/x/sealpost/config.toml")
        );
        assert_eq!(
            config_for(false, None, s("relative"), s("/home/a")),
            PathBuf::from("/home/a/.config/sealpost/config.toml")
        );
        assert_eq!(
            config_for(false, None, None, s("/home/a")),
            PathBuf::from("/home/a/.config/sealpost/config.toml")
        );
        assert_eq!(
            config_for(true, s("/t/c.toml"), None, None),
            PathBuf::from("/t/c.toml")
        );
    }

    #[test]
    fn credential_paths() {
        let conf = Path::new("/etc/sealpost");
        let p = Path::new("%d/identity.pass");
        assert_eq!(
            resolve_credential_in(p, conf, Some("/run/credentials/sealpost.service".into())),
            PathBuf::from("/run/credentials/sealpost.service/identity.pass")
        );
        assert_eq!(
            resolve_credential_in(p, conf, None),
            PathBuf::from("/etc/sealpost/identity.pass")
        );
        let other = Path::new("/x/%d/y");
        assert_eq!(resolve_credential_in(other, conf, None), other);
    }
}
