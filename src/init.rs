//! `sealpost init`: a working setup in one command.
//!
//! Writes a commented config, brings the identity key (imported and unlocked with its
//! passphrase, or generated with a random passphrase in a 0600 file), makes the listener
//! certificate, and says what to type into Thunderbird and Outlook. Nothing that exists
//! is overwritten unless asked (`force`), and everything is checked before the first file
//! is written, so a failed run leaves nothing half-done.

use crate::config::{split_host_port, Config, ConfigError};
use crate::keys::{self, KeyError, KeyStore};
use crate::tls::{self, TlsError};
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::serialize::SerializeInto;
use sequoia_openpgp::Cert;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// File names of the identity key and its passphrase, beside the config. Fixed names so
/// the system unit can hand them over with `LoadCredential=` (see systemd/).
pub const KEY_FILE: &str = "identity.sec.asc";
pub const PASS_FILE: &str = "identity.pass";

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(
        "{} already exists; sealpost init overwrites nothing without --force",
        .paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    Exists { paths: Vec<PathBuf> },
    #[error("--{option}: {message}")]
    BadOption {
        option: &'static str,
        message: String,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("the written config does not load (this is a bug in sealpost init)")]
    Config(#[from] ConfigError),
}

/// What `sealpost init` was asked.
pub struct InitArgs {
    pub config: PathBuf,
    pub state_dir: PathBuf,
    pub address: String,
    /// Provider's IMAP and SMTP submission servers, `host:port`.
    pub imap: String,
    pub smtp: String,
    /// An existing secret key (armored or binary) and the file holding its passphrase.
    pub key: Option<PathBuf>,
    pub passphrase_file: Option<PathBuf>,
    pub extra_ca: Option<PathBuf>,
    pub listen_imap: SocketAddr,
    pub listen_smtp: SocketAddr,
    /// Provider login when it is not the address.
    pub login: Option<String>,
    pub force: bool,
    /// Write key paths as `%d/…` (systemd credentials) instead of plain file names.
    pub credentials: bool,
}

/// What was done, for the person at the terminal.
pub struct InitReport {
    pub config: PathBuf,
    pub key_fingerprint: String,
    /// SHA-256 of the listener certificate, `AA:BB:…` as mail clients show it.
    pub cert_sha256: String,
    pub text: String,
}

/// `tls` for the implicit-TLS ports, `starttls` for the ports that upgrade.
fn security_for(port: u16) -> &'static str {
    match port {
        25 | 143 | 587 => "starttls",
        _ => "tls",
    }
}

fn bad(option: &'static str, message: impl Into<String>) -> InitError {
    InitError::BadOption {
        option,
        message: message.into(),
    }
}

/// Does it all; see the module doc.
pub fn init(a: &InitArgs) -> Result<InitReport, InitError> {
    let address = keys::normalize_address(&a.address);
    match address.rsplit_once('@') {
        Some((l, d))
            if !l.is_empty() && !d.is_empty() && !address.contains(char::is_whitespace) => {}
        _ => {
            return Err(bad(
                "address",
                format!("{:?} is not an email address", a.address),
            ))
        }
    }
    split_host_port(&a.imap).map_err(|m| bad("imap", m))?;
    split_host_port(&a.smtp).map_err(|m| bad("smtp", m))?;
    if let Some(ca) = &a.extra_ca {
        tls::client_config(Some(ca))?;
    }
    let dir = a
        .config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let key_path = dir.join(KEY_FILE);
    let pass_path = dir.join(PASS_FILE);
    let existing: Vec<PathBuf> = [&a.config, &key_path, &pass_path]
        .into_iter()
        .filter(|p| tls::something_at(p))
        .cloned()
        .collect();
    if !existing.is_empty() && !a.force {
        return Err(InitError::Exists { paths: existing });
    }
    // An imported key is unlocked before anything is written.
    let imported = match &a.key {
        Some(file) => Some(check_key(file, a.passphrase_file.as_deref(), &address)?),
        None if a.passphrase_file.is_some() => {
            return Err(bad("passphrase-file", "only goes with --key FILE"))
        }
        None => None,
    };
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InitError::Write { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(write_err(&dir))?;
    let cert = match imported {
        Some((cert, pass)) => {
            let armored = cert
                .as_tsk()
                .armored()
                .to_vec()
                .map_err(|e| KeyError::Identity {
                    address: address.clone(),
                    message: e.to_string(),
                })?;
            tls::write_private(&key_path, &armored).map_err(write_err(&key_path))?;
            // The system unit loads both credentials, so the file exists even for a
            // key without a passphrase (an empty line is never used to unlock).
            match pass.or_else(|| a.credentials.then(String::new)) {
                Some(p) => tls::write_private(&pass_path, format!("{p}\n").as_bytes())
                    .map_err(write_err(&pass_path))?,
                None => {
                    let _ = std::fs::remove_file(&pass_path);
                }
            }
            cert.strip_secret_key_material()
        }
        None => {
            let g = keys::generate(&address, &dir)?;
            std::fs::rename(&g.secret_key, &key_path).map_err(write_err(&key_path))?;
            std::fs::rename(&g.passphrase_file, &pass_path).map_err(write_err(&pass_path))?;
            g.cert
        }
    };
    let has_pass = tls::something_at(&pass_path);
    let (cert_pem, _) = tls::ensure_self_signed(&a.state_dir)?;
    let cert_sha256 = sha256_of_pem(&cert_pem)?;
    let text = config_text(a, &address, has_pass);
    std::fs::write(&a.config, text).map_err(write_err(&a.config))?;
    let config = Config::load(&a.config)?;
    let store = KeyStore::open_with_state(&config.key_dir(), &config.state_dir)?;
    store.insert(cert.clone())?;
    let key_fingerprint = cert.fingerprint().to_hex();
    let text = instructions(a, &address, &key_fingerprint, &cert_sha256, has_pass);
    Ok(InitReport {
        config: a.config.clone(),
        key_fingerprint,
        cert_sha256,
        text,
    })
}

/// Reads a secret key and unlocks it with the passphrase file, so a wrong passphrase is
/// refused now, not at the first message. Returns the key and the passphrase line.
fn check_key(
    file: &Path,
    passphrase_file: Option<&Path>,
    address: &str,
) -> Result<(Cert, Option<String>), InitError> {
    let data = std::fs::read(file)
        .map_err(|e| bad("key", format!("cannot read {}: {e}", file.display())))?;
    let cert = Cert::from_bytes(&data).map_err(|e| {
        bad(
            "key",
            format!("{} holds no OpenPGP key: {e}", file.display()),
        )
    })?;
    if !keys::usable_for(&cert, address, &keys::POLICY) {
        return Err(bad(
            "key",
            format!(
                "{} has no valid user ID for {address} with an encryption subkey",
                file.display()
            ),
        ));
    }
    let id = crate::config::Identity {
        address: address.to_string(),
        login: None,
        account: None,
        secret_key: file.to_path_buf(),
        passphrase_file: passphrase_file.map(Path::to_path_buf),
        passphrase_credential: None,
        passphrase_env: None,
    };
    // Unlocks every secret subkey with the passphrase (or says which option is missing).
    keys::load_identity(&id).map_err(|e| match (&e, passphrase_file) {
        (KeyError::Identity { .. }, None) => bad(
            "passphrase-file",
            format!(
                "{}; give the file holding its passphrase",
                crate::error_chain(&e)
            ),
        ),
        _ => InitError::Keys(e),
    })?;
    let pass = match passphrase_file {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                bad(
                    "passphrase-file",
                    format!("cannot read {}: {e}", p.display()),
                )
            })?;
            let line = text.split('\n').next().unwrap_or("");
            Some(line.strip_suffix('\r').unwrap_or(line).to_string())
        }
        None => None,
    };
    Ok((cert, pass))
}

/// `AA:BB:…` SHA-256 of the first certificate in a PEM file.
pub fn sha256_of_pem(path: &Path) -> Result<String, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use sha2::Digest;
    let der =
        rustls::pki_types::CertificateDer::from_pem_file(path).map_err(|e| TlsError::Read {
            what: "certificate file",
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let digest = sha2::Sha256::digest(der.as_ref());
    Ok(digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// A TOML basic string (escapes `"` and `\`; init's inputs are checked to be one line).
fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn config_text(a: &InitArgs, address: &str, has_pass: bool) -> String {
    let key_ref = |name: &str| {
        if a.credentials {
            format!("{}{name}", crate::paths::CREDENTIAL_PREFIX)
        } else {
            name.to_string()
        }
    };
    let imap_port = split_host_port(&a.imap).map(|x| x.1).unwrap_or(993);
    let smtp_port = split_host_port(&a.smtp).map(|x| x.1).unwrap_or(465);
    let mut t = String::new();
    t.push_str("# Written by `sealpost init`; config.example.toml documents every key.\n");
    t.push_str("# Relative paths are resolved against this file's folder; \"%d/NAME\" is the\n");
    t.push_str("# systemd credential NAME (LoadCredential=), or NAME beside this file outside systemd.\n\n");
    t.push_str("# Listener certificate, caches and the public key store.\n");
    t.push_str(&format!(
        "state_dir = {}\n\n",
        q(&a.state_dir.display().to_string())
    ));
    t.push_str("[[account]]\nname = \"default\"\n\n");
    t.push_str("[account.imap]\n");
    t.push_str(&format!(
        "listen = {}                # your mail client connects here (STARTTLS)\n",
        q(&a.listen_imap.to_string())
    ));
    t.push_str(&format!(
        "upstream = {}              # your provider's IMAP server\n",
        q(&a.imap)
    ));
    t.push_str(&format!(
        "upstream_security = \"{}\"         # tls (993) | starttls (143)\n\n",
        security_for(imap_port)
    ));
    t.push_str("[account.smtp]\n");
    t.push_str(&format!(
        "listen = {}                # your mail client sends here (STARTTLS)\n",
        q(&a.listen_smtp.to_string())
    ));
    t.push_str(&format!(
        "upstream = {}              # your provider's submission server\n",
        q(&a.smtp)
    ));
    t.push_str(&format!(
        "upstream_security = \"{}\"         # tls (465) | starttls (587)\n\n",
        security_for(smtp_port)
    ));
    t.push_str("# Your own key: signs what you send, decrypts what you read.\n");
    t.push_str("[[identity]]\n");
    t.push_str(&format!("address = {}\n", q(address)));
    if let Some(login) = &a.login {
        t.push_str(&format!(
            "login = {}                    # your login at the provider\n",
            q(login)
        ));
    }
    t.push_str(&format!("secret_key = {}\n", q(&key_ref(KEY_FILE))));
    if has_pass {
        t.push_str(&format!(
            "passphrase_file = {}           # mode 0600, never shown in logs\n",
            q(&key_ref(PASS_FILE))
        ));
    }
    t.push_str("\n[keys]\n");
    t.push_str(
        "# Recipients' keys: the local store, Autocrypt, their domain's WKD, keys.openpgp.org.\n",
    );
    t.push_str("discover = [\"store\", \"autocrypt\", \"wkd\", \"vks\"]\n");
    match &a.extra_ca {
        Some(ca) => {
            let ca = std::path::absolute(ca).unwrap_or_else(|_| ca.clone());
            t.push_str(&format!(
                "extra_ca = {}   # CA certificates trusted besides the system's\n",
                q(&ca.display().to_string())
            ));
        }
        None => t.push_str("#extra_ca = \"/etc/sealpost/ca.pem\"   # CA certificates trusted besides the system's\n"),
    }
    t.push_str("\n# Optional: let Thunderbird and Outlook find these settings by themselves.\n");
    t.push_str("#[autoconfig]\n#listen = \"127.0.0.1:8080\"\n");
    t.push_str("\n[policy]\n");
    t.push_str("default = \"opportunistic\"   # encrypt when a key is found; \"require\" refuses mail without\n");
    t.push_str("sign = true                 # sign encrypted mail with your key\n");
    t.push_str(
        "protect_headers = true      # the real Subject travels only inside the encryption\n",
    );
    t
}

fn instructions(
    a: &InitArgs,
    address: &str,
    fpr: &str,
    cert_sha256: &str,
    has_pass: bool,
) -> String {
    let user = a.login.as_deref().unwrap_or(address);
    let dir = a.config.parent().unwrap_or(Path::new("."));
    let (ih, ip) = (a.listen_imap.ip(), a.listen_imap.port());
    let (sh, sp) = (a.listen_smtp.ip(), a.listen_smtp.port());
    let mut t = format!(
        "Wrote {config}\n\
         identity key:    {fpr} ({key}, mode 0600)\n",
        config = a.config.display(),
        key = dir.join(KEY_FILE).display(),
    );
    if has_pass {
        t.push_str(&format!(
            "passphrase file: {} (mode 0600)\n",
            dir.join(PASS_FILE).display()
        ));
    }
    t.push_str(&format!(
        "listener certificate SHA-256: {cert_sha256}\n\
         (accept this certificate when your mail client asks; it must show the same fingerprint)\n\n\
         Thunderbird (Account Settings, or \"Configure manually\" when adding the account):\n\
         \x20 Incoming: IMAP  server {ih}  port {ip}  connection security STARTTLS  authentication Normal password  user name {user}\n\
         \x20 Outgoing: SMTP  server {sh}  port {sp}  connection security STARTTLS  authentication Normal password  user name {user}\n\n\
         Outlook (File > Add Account > Advanced options > Let me set up my account manually > IMAP):\n\
         \x20 Incoming mail: server {ih}  port {ip}  encryption method STARTTLS  user name {user}\n\
         \x20 Outgoing mail: server {sh}  port {sp}  encryption method STARTTLS  user name {user}\n\n\
         The password is your provider's: sealpost passes it on and never stores it.\n\
         Next: sealpost check, then sealpost run (or the systemd unit).\n"
    ));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path) -> InitArgs {
        InitArgs {
            config: dir.join("conf/config.toml"),
            state_dir: dir.join("state"),
            address: "New@Example.org".into(),
            imap: "imap.example.org:993".into(),
            smtp: "smtp.example.org:587".into(),
            key: None,
            passphrase_file: None,
            extra_ca: None,
            listen_imap: "127.0.0.1:1143".parse().unwrap(),
            listen_smtp: "127.0.0.1:1587".parse().unwrap(),
            login: Some("new \"x\"".into()),
            force: false,
            credentials: false,
        }
    }

    #[test]
    fn writes_a_loadable_config_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let a = args(dir.path());
        let r = init(&a).unwrap();
        let c = Config::load(&r.config).unwrap();
        let smtp = c.accounts[0].smtp.as_ref().unwrap();
        assert_eq!(
            smtp.upstream_security,
            crate::config::UpstreamSecurity::Starttls
        );
        assert_eq!(c.identities[0].login.as_deref(), Some("new \"x\""));
        keys::load_identity(&c.identities[0]).unwrap();
        assert_eq!(r.cert_sha256.len(), 32 * 3 - 1);
        assert!(r.text.contains(&r.cert_sha256) && r.text.contains("Outlook"));
        let before = std::fs::read(&r.config).unwrap();
        let e = init(&a).err().unwrap().to_string();
        assert!(e.contains("--force"), "{e}");
        assert_eq!(before, std::fs::read(&r.config).unwrap());
        let mut forced = args(dir.path());
        forced.force = true;
        init(&forced).unwrap();
    }

    #[test]
    fn credentials_layout_uses_percent_d() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(dir.path());
        a.credentials = true;
        init(&a).unwrap();
        let text = std::fs::read_to_string(&a.config).unwrap();
        assert!(
            text.contains("secret_key = \"%d/identity.sec.asc\""),
            "{text}"
        );
        // Outside systemd, %d/ is the config's folder.
        let c = Config::load(&a.config).unwrap();
        assert_eq!(
            c.identities[0].secret_key,
            dir.path().join("conf/identity.sec.asc")
        );
    }

    #[test]
    fn imports_a_binary_key_and_checks_its_passphrase() {
        use sequoia_openpgp::serialize::Serialize;
        let dir = tempfile::tempdir().unwrap();
        let made = keys::generate("new@example.org", &dir.path().join("made")).unwrap();
        let armored = std::fs::read(&made.secret_key).unwrap();
        let mut binary = Vec::new();
        Cert::from_bytes(&armored)
            .unwrap()
            .as_tsk()
            .serialize(&mut binary)
            .unwrap();
        assert!(!binary.starts_with(b"-----"));
        let key = dir.path().join("key.pgp");
        std::fs::write(&key, &binary).unwrap();
        let mut a = args(dir.path());
        a.key = Some(key.clone());
        a.passphrase_file = Some(dir.path().join("wrong.pass"));
        std::fs::write(dir.path().join("wrong.pass"), "nope\n").unwrap();
        let e = crate::error_chain(&init(&a).err().unwrap());
        assert!(e.contains("does not unlock"), "{e}");
        assert!(!a.config.exists(), "a refused key wrote the config");
        a.passphrase_file = Some(made.passphrase_file.clone());
        let r = init(&a).unwrap();
        assert_eq!(r.key_fingerprint, made.cert.fingerprint().to_hex());
        let c = Config::load(&a.config).unwrap();
        keys::load_identity(&c.identities[0]).unwrap();
        // Someone else's key is refused: no user ID for the address.
        let mut other = args(dir.path());
        other.address = "someone@example.org".into();
        other.key = Some(key);
        other.passphrase_file = Some(made.passphrase_file.clone());
        other.force = true;
        let e = init(&other).err().unwrap().to_string();
        assert!(
            e.contains("no valid user ID for someone@example.org"),
            "{e}"
        );
    }

    #[test]
    fn bad_options_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(dir.path());
        a.imap = "imap.example.org".into();
        let e = init(&a).err().unwrap().to_string();
        assert!(e.starts_with("--imap:"), "{e}");
        assert!(!a.config.exists());
    }

    /// Review F6: `--force --key` must not write the passphrase into an existing
    /// world-readable file and keep its mode; a symbolic link in place of a file is
    /// replaced, never written through, and a dangling one counts as existing.
    #[test]
    fn secrets_are_written_to_fresh_0600_files_never_through_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let made = keys::generate("new@example.org", &dir.path().join("made")).unwrap();
        let conf = dir.path().join("conf");
        std::fs::create_dir_all(&conf).unwrap();
        let pass = conf.join(PASS_FILE);
        std::fs::write(&pass, "old\n").unwrap();
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o644)).unwrap();
        // The key file is a link to a file elsewhere, which must stay untouched.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "").unwrap();
        std::os::unix::fs::symlink(&elsewhere, conf.join(KEY_FILE)).unwrap();
        let mut a = args(dir.path());
        a.key = Some(made.secret_key.clone());
        a.passphrase_file = Some(made.passphrase_file.clone());
        a.force = true;
        init(&a).unwrap();
        for f in [&pass, &conf.join(KEY_FILE)] {
            let m = std::fs::symlink_metadata(f).unwrap();
            assert!(m.file_type().is_file(), "{}", f.display());
            assert_eq!(m.permissions().mode() & 0o777, 0o600, "{}", f.display());
        }
        assert_eq!(std::fs::read(&elsewhere).unwrap(), b"");

        // Without --force, a dangling link where a secret goes is an existing file.
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf");
        std::fs::create_dir_all(&conf).unwrap();
        let target = dir.path().join("not-yet");
        std::os::unix::fs::symlink(&target, conf.join(KEY_FILE)).unwrap();
        let e = init(&args(dir.path())).err().unwrap().to_string();
        assert!(e.contains("--force"), "{e}");
        assert!(!target.exists(), "written through a dangling link");
    }
}
