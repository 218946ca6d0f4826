//! OpenPGP fixtures made with GnuPG 2.2 once per test process, plus helpers
//! to check sealpost's output with independent implementations (gpg, sq).

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Passphrase of alice's secret key (in her gpg homedir and `alice.sec.asc`).
pub const ALICE_PASS: &str = "alice-pass";

/// (name, "Name <email>", email)
const PEOPLE: &[(&str, &str, &str)] = &[
    ("alice", "Alice <alice@example.com>", "alice@example.com"),
    ("bob", "Bob <bob@example.org>", "bob@example.org"),
    ("carol", "Carol <carol@example.org>", "carol@example.org"),
    ("dave", "Dave <dave@example.net>", "dave@example.net"),
];

/// Name of the extra homedir holding everyone's public keys but no secret
/// key (used for `--list-packets` and plain signature checks).
pub const NOBODY: &str = "nobody";

const GPG_CONF: &str = "pinentry-mode loopback\ntrust-model always\nno-auto-key-locate\n";
const AGENT_CONF: &str = "allow-loopback-pinentry\n\
    s2k-count 65536\n\
    default-cache-ttl 0\n\
    max-cache-ttl 0\n";

/// A short-named directory under /tmp that lives as long as this test
/// process. A small `sh` reaper waits for the process to exit, then stops the
/// gpg-agents started for the keyring and removes the directory (set
/// `SEALPOST_TEST_KEEP=1` to keep it for debugging).
pub fn process_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("sp")
            .tempdir_in("/tmp")
            .expect("create /tmp/spXXXXXX")
            .keep();
        let keep = std::env::var_os("SEALPOST_TEST_KEEP").is_some_and(|v| v != "0");
        let script = format!(
            r#"while kill -0 "$0" 2>/dev/null; do sleep 1; done
for h in "$1"/*/; do
  gpgconf --homedir "$h" --kill gpg-agent >/dev/null 2>&1
  gpgconf --homedir "$h" --remove-socketdir >/dev/null 2>&1
done
{}"#,
            if keep { "" } else { r#"rm -rf "$1""# }
        );
        // Fully detached stdio so that a `cargo test | tee` pipeline is not
        // held open by the reaper.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(std::process::id().to_string())
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        dir
    })
}

fn mkdir_private(p: &Path) {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
}

#[derive(Debug, Clone)]
pub struct Person {
    /// "alice", "bob", "carol", "dave".
    pub name: String,
    pub email: String,
    /// "Alice <alice@example.com>"
    pub uid: String,
    /// gpg homedir: own secret key + everyone's public keys.
    pub home: PathBuf,
    /// Armored public certificate (`<name>.pub.asc`).
    pub pub_asc: PathBuf,
    /// Armored secret key (`<name>.sec.asc`); alice's is protected with
    /// [`ALICE_PASS`], the others are unprotected.
    pub sec_asc: PathBuf,
    /// Armored secret key without passphrase (`<name>.nopass.sec.asc`; for
    /// bob/carol/dave the same content as `sec_asc`).
    pub sec_nopass_asc: PathBuf,
    /// Passphrase of the key in `home` ("" unless alice).
    pub passphrase: String,
    /// Primary key fingerprint (40 upper-case hex), ed25519 sign/certify.
    pub fpr: String,
    /// Primary key id (last 16 hex of `fpr`).
    pub keyid: String,
    /// cv25519 encryption subkey fingerprint.
    pub enc_fpr: String,
    /// Encryption subkey key id, as printed by `gpg --list-packets`
    /// (":pubkey enc packet: ... keyid <enc_keyid>").
    pub enc_keyid: String,
}

#[derive(Debug)]
pub struct Keyring {
    /// /tmp/spXXXXXX (per process); homedirs are `<dir>/<name>`.
    pub dir: PathBuf,
    pub people: Vec<Person>,
    /// File containing "alice-pass\n".
    pub alice_pass: PathBuf,
    /// All four public certificates concatenated (armored blocks).
    pub all_pub_asc: PathBuf,
    /// Homedir with all public keys and no secret keys.
    pub nobody_home: PathBuf,
}

impl Keyring {
    /// Same as [`keyring()`].
    pub fn get() -> &'static Keyring {
        keyring()
    }

    /// Look up by name ("bob") or email ("bob@example.org"). Panics if unknown.
    pub fn person(&self, who: &str) -> &Person {
        self.people
            .iter()
            .find(|p| p.name == who || p.email == who)
            .unwrap_or_else(|| panic!("unknown keyring person {who:?}"))
    }

    pub fn alice(&self) -> &Person {
        self.person("alice")
    }
    pub fn bob(&self) -> &Person {
        self.person("bob")
    }
    pub fn carol(&self) -> &Person {
        self.person("carol")
    }
    pub fn dave(&self) -> &Person {
        self.person("dave")
    }
}

/// The per-process keyring (generated on first use, ~1 s).
pub fn keyring() -> &'static Keyring {
    static K: OnceLock<Keyring> = OnceLock::new();
    K.get_or_init(build_keyring)
}

fn run_gpg_raw(home: &Path, passphrase: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args([
            "--batch",
            "--no-tty",
            "--yes",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            passphrase,
        ])
        .args(args)
        .env_remove("GNUPGHOME")
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gpg");
    let mut sin = child.stdin.take().expect("gpg stdin");
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = sin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for gpg");
    let _ = writer.join();
    out
}

fn gpg_ok(home: &Path, passphrase: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let out = run_gpg_raw(home, passphrase, args, stdin);
    if !out.status.success() {
        panic!(
            "gpg --homedir {} {:?} failed ({}):\n{}",
            home.display(),
            args,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.stdout
}

fn build_keyring() -> Keyring {
    let dir = process_dir().to_path_buf();
    let mut homes = Vec::new();
    for (name, uid, email) in PEOPLE {
        let home = dir.join(name);
        mkdir_private(&home);
        std::fs::write(home.join("gpg.conf"), GPG_CONF).unwrap();
        std::fs::write(home.join("gpg-agent.conf"), AGENT_CONF).unwrap();
        gpg_ok(
            &home,
            "",
            &[
                "--quiet",
                "--quick-gen-key",
                uid,
                "future-default",
                "default",
                "never",
            ],
            &[],
        );
        let pub_asc = dir.join(format!("{name}.pub.asc"));
        let nopass = dir.join(format!("{name}.nopass.sec.asc"));
        std::fs::write(
            &pub_asc,
            gpg_ok(&home, "", &["--armor", "--export", email], &[]),
        )
        .unwrap();
        std::fs::write(
            &nopass,
            gpg_ok(&home, "", &["--armor", "--export-secret-keys", email], &[]),
        )
        .unwrap();
        let (sec_asc, passphrase) = if *name == "alice" {
            // Protect the key in the homedir, then export the protected form.
            gpg_ok(&home, ALICE_PASS, &["--quiet", "--passwd", email], &[]);
            let sec = dir.join("alice.sec.asc");
            std::fs::write(
                &sec,
                gpg_ok(
                    &home,
                    ALICE_PASS,
                    &["--armor", "--export-secret-keys", email],
                    &[],
                ),
            )
            .unwrap();
            (sec, ALICE_PASS.to_owned())
        } else {
            let sec = dir.join(format!("{name}.sec.asc"));
            std::fs::copy(&nopass, &sec).unwrap();
            (sec, String::new())
        };
        homes.push((
            *name, *uid, *email, home, pub_asc, sec_asc, nopass, passphrase,
        ));
    }

    let mut all = Vec::new();
    for h in &homes {
        all.extend(std::fs::read(&h.4).unwrap());
    }
    let all_pub_asc = dir.join("all.pub.asc");
    std::fs::write(&all_pub_asc, &all).unwrap();

    let nobody_home = dir.join(NOBODY);
    mkdir_private(&nobody_home);
    std::fs::write(nobody_home.join("gpg.conf"), GPG_CONF).unwrap();
    std::fs::write(nobody_home.join("gpg-agent.conf"), AGENT_CONF).unwrap();
    gpg_ok(&nobody_home, "", &["--quiet", "--import"], &all);

    let mut people = Vec::new();
    for (name, uid, email, home, pub_asc, sec_asc, nopass, passphrase) in homes {
        gpg_ok(&home, &passphrase, &["--quiet", "--import"], &all);
        let colons = String::from_utf8(gpg_ok(
            &home,
            "",
            &["--with-colons", "--fixed-list-mode", "--list-keys", email],
            &[],
        ))
        .unwrap();
        let (fpr, enc_fpr) = parse_fprs(&colons);
        people.push(Person {
            name: name.to_owned(),
            email: email.to_owned(),
            uid: uid.to_owned(),
            home,
            pub_asc,
            sec_asc,
            sec_nopass_asc: nopass,
            passphrase,
            keyid: fpr[fpr.len() - 16..].to_owned(),
            enc_keyid: enc_fpr[enc_fpr.len() - 16..].to_owned(),
            fpr,
            enc_fpr,
        });
    }
    let alice_pass = dir.join("alice.pass");
    std::fs::write(&alice_pass, format!("{ALICE_PASS}\n")).unwrap();
    Keyring {
        dir,
        people,
        alice_pass,
        all_pub_asc,
        nobody_home,
    }
}

/// (primary fpr, encryption subkey fpr) from `--with-colons` output.
fn parse_fprs(colons: &str) -> (String, String) {
    let mut primary = None;
    let mut enc = None;
    let mut last_kind = "";
    let mut last_caps = String::new();
    for line in colons.lines() {
        let f: Vec<&str> = line.split(':').collect();
        match f[0] {
            "pub" | "sub" => {
                last_kind = if f[0] == "pub" { "pub" } else { "sub" };
                last_caps = f.get(11).copied().unwrap_or("").to_owned();
            }
            "fpr" => {
                let fp = f.get(9).copied().unwrap_or("").to_owned();
                if last_kind == "pub" && primary.is_none() {
                    primary = Some(fp);
                } else if last_kind == "sub" && last_caps.contains('e') && enc.is_none() {
                    enc = Some(fp);
                }
                last_kind = "";
            }
            _ => {}
        }
    }
    (
        primary.unwrap_or_else(|| panic!("no primary fpr in:\n{colons}")),
        enc.unwrap_or_else(|| panic!("no encryption subkey in:\n{colons}")),
    )
}

fn home_and_pass(who: &str) -> (PathBuf, String) {
    let k = keyring();
    if who.is_empty() || who == NOBODY {
        (k.nobody_home.clone(), String::new())
    } else {
        let p = k.person(who);
        (p.home.clone(), p.passphrase.clone())
    }
}

/// Run gpg in `who`'s homedir (`"nobody"` or `""`: public keys only) with
/// `--batch --no-tty --yes --pinentry-mode loopback --passphrase <theirs>`
/// prepended. Returns the raw output whatever the exit status.
pub fn gpg(who: &str, args: &[&str], stdin: &[u8]) -> Output {
    let (home, pass) = home_and_pass(who);
    run_gpg_raw(&home, &pass, args, stdin)
}

/// Result of [`gpg_decrypt`].
#[derive(Debug, Clone)]
pub struct GpgResult {
    pub exit_ok: bool,
    pub plaintext: Vec<u8>,
    /// Only the machine-readable `[GNUPG:] ...` status lines.
    pub status: String,
    /// Human-readable diagnostics.
    pub stderr: String,
}

impl GpgResult {
    /// Status lines with keyword `kw`, split into fields (keyword excluded).
    pub fn status_lines(&self, kw: &str) -> Vec<Vec<String>> {
        self.status
            .lines()
            .filter_map(|l| l.strip_prefix("[GNUPG:] "))
            .filter_map(|l| {
                let mut it = l.split(' ');
                if it.next() == Some(kw) {
                    Some(it.map(str::to_owned).collect())
                } else {
                    None
                }
            })
            .collect()
    }

    /// Whether a status line with keyword `kw` (e.g. "DECRYPTION_OKAY") exists.
    pub fn has(&self, kw: &str) -> bool {
        !self.status_lines(kw).is_empty()
    }

    /// Primary-key fingerprints of all VALIDSIG lines.
    pub fn valid_signers(&self) -> Vec<String> {
        self.status_lines("VALIDSIG")
            .into_iter()
            .filter_map(|f| f.last().cloned())
            .collect()
    }

    /// GOODSIG present and a VALIDSIG by `who`'s primary key, no BADSIG/ERRSIG.
    pub fn signed_by(&self, who: &str) -> bool {
        let fpr = &keyring().person(who).fpr;
        self.has("GOODSIG")
            && !self.has("BADSIG")
            && !self.has("ERRSIG")
            && self.valid_signers().iter().any(|f| f == fpr)
    }

    /// Decryption succeeded with integrity protection.
    pub fn decrypted(&self) -> bool {
        self.exit_ok && self.has("DECRYPTION_OKAY") && !self.has("DECRYPTION_FAILED")
    }

    /// Panic with full diagnostics unless decrypted and signed by `signer`.
    pub fn assert_decrypted_signed_by(&self, signer: &str) {
        assert!(
            self.decrypted() && self.signed_by(signer),
            "expected decryption OK and a valid signature by {signer}; got\n{self}"
        );
    }
}

impl std::fmt::Display for GpgResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit_ok={}\n--- status\n{}--- stderr\n{}--- plaintext ({} bytes)\n{}",
            self.exit_ok,
            self.status,
            self.stderr,
            self.plaintext.len(),
            String::from_utf8_lossy(&self.plaintext[..self.plaintext.len().min(2000)])
        )
    }
}

static STATUS_SEQ: AtomicU64 = AtomicU64::new(0);

/// Decrypt (and verify) `data` (armored or binary) as `who` with gpg.
/// Does not panic on failure: inspect `exit_ok` / `status`.
pub fn gpg_decrypt(who: &str, data: &[u8]) -> GpgResult {
    gpg_status_run(who, &["--decrypt"], data)
}

/// Verify an inline-signed / clearsigned message (no decryption) as `who`.
pub fn gpg_verify_inline(who: &str, data: &[u8]) -> GpgResult {
    gpg_status_run(who, &["--decrypt"], data)
}

/// Verify a detached signature `sig` over `signed_data` as `who` (or
/// "nobody"). `plaintext` is empty.
pub fn gpg_verify_detached(who: &str, sig: &[u8], signed_data: &[u8]) -> GpgResult {
    let k = keyring();
    let n = STATUS_SEQ.fetch_add(1, Ordering::Relaxed);
    let sig_path = k.dir.join(format!("sig-{n}.asc"));
    let data_path = k.dir.join(format!("sig-{n}.data"));
    std::fs::write(&sig_path, sig).unwrap();
    std::fs::write(&data_path, signed_data).unwrap();
    let r = gpg_status_run(
        who,
        &[
            "--verify",
            sig_path.to_str().unwrap(),
            data_path.to_str().unwrap(),
        ],
        &[],
    );
    let _ = std::fs::remove_file(sig_path);
    let _ = std::fs::remove_file(data_path);
    r
}

fn gpg_status_run(who: &str, args: &[&str], data: &[u8]) -> GpgResult {
    let k = keyring();
    let n = STATUS_SEQ.fetch_add(1, Ordering::Relaxed);
    let status_file = k.dir.join(format!("status-{n}"));
    let sf = status_file.to_str().unwrap().to_owned();
    let mut full = vec!["--status-file", &sf];
    full.extend_from_slice(args);
    let out = gpg(who, &full, data);
    // Sequoia's salt notation puts raw bytes into NOTATION_DATA: read lossily.
    let status =
        String::from_utf8_lossy(&std::fs::read(&status_file).unwrap_or_default()).into_owned();
    let _ = std::fs::remove_file(&status_file);
    GpgResult {
        exit_ok: out.status.success(),
        plaintext: out.stdout,
        status,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `gpg --list-packets` in the secret-less "nobody" homedir: stdout+stderr,
/// whatever the exit code (it is 2 for encrypted data, "No secret key").
/// Shows ":pubkey enc packet: version 3, algo 18, keyid <ENC_KEYID>" lines.
pub fn gpg_list_packets(data: &[u8]) -> String {
    let out = gpg(NOBODY, &["--list-packets"], data);
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    s
}

/// `gpg --list-packets` as `who`: decrypts, so the inner packets (one-pass
/// signature, literal data, signature) are listed too.
pub fn gpg_list_packets_as(who: &str, data: &[u8]) -> String {
    let out = gpg(who, &["--list-packets"], data);
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    s
}

/// Key ids (16 upper-case hex) of all PKESK packets of `data`, in order;
/// compare with `Person::enc_keyid`.
pub fn gpg_recipient_keyids(data: &[u8]) -> Vec<String> {
    gpg_list_packets(data)
        .lines()
        .filter(|l| l.starts_with(":pubkey enc packet:"))
        .filter_map(|l| l.split("keyid ").nth(1))
        .map(|s| s.trim().to_uppercase())
        .collect()
}

/// Encrypt `data` with gpg to `recipients` (names or emails), optionally
/// signing as `signer`. Panics on failure.
pub fn gpg_encrypt(signer: Option<&str>, recipients: &[&str], data: &[u8], armor: bool) -> Vec<u8> {
    let k = keyring();
    let mut args: Vec<String> = vec!["--encrypt".into()];
    if armor {
        args.push("--armor".into());
    }
    if let Some(s) = signer {
        args.push("--sign".into());
        args.push("--local-user".into());
        args.push(k.person(s).fpr.clone());
    }
    for r in recipients {
        args.push("--recipient".into());
        args.push(k.person(r).fpr.clone());
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = gpg(signer.unwrap_or(NOBODY), &a, data);
    assert!(
        out.status.success(),
        "gpg encrypt failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Armored detached signature by `signer` over `data`. Panics on failure.
pub fn gpg_detach_sign(signer: &str, data: &[u8]) -> Vec<u8> {
    let fpr = keyring().person(signer).fpr.clone();
    let out = gpg(
        signer,
        &["--armor", "--detach-sign", "--local-user", &fpr],
        data,
    );
    assert!(
        out.status.success(),
        "gpg detach-sign failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Decrypt with Debian's sq 0.27:
/// `sq decrypt --recipient-key <who's unprotected secret key>
/// [--signer-cert <signer>.pub.asc]` (no signer check if `signer` is "").
/// With a signer, sq fails (and withholds output) unless at least one valid
/// signature by that cert is present.
/// Returns (success, plaintext, stderr).
pub fn sq_decrypt(who: &str, signer: &str, data: &[u8]) -> (bool, Vec<u8>, String) {
    let k = keyring();
    let p = k.person(who);
    let mut cmd = Command::new("sq");
    cmd.arg("decrypt")
        .arg("--recipient-key")
        .arg(&p.sec_nopass_asc);
    if !signer.is_empty() {
        cmd.arg("--signer-cert").arg(&k.person(signer).pub_asc);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sq");
    let mut sin = child.stdin.take().expect("sq stdin");
    let input = data.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = sin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for sq");
    let _ = writer.join();
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The armored OpenPGP message inside a PGP/MIME body (or any text holding one).
pub fn armored(data: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(data);
    let start = text
        .find("-----BEGIN PGP MESSAGE-----")
        .unwrap_or_else(|| panic!("no PGP message in:\n{text}"));
    let end = text[start..].find("-----END PGP MESSAGE-----").unwrap() + start + 25;
    text[start..end].as_bytes().to_vec()
}

/// `data` encrypted to `who`'s certificate by Debian's `sq` (armored).
pub fn sq_encrypt(who: &str, data: &[u8]) -> Vec<u8> {
    let dir = super::tempdir();
    let input = dir.path().join("in");
    std::fs::write(&input, data).unwrap();
    let out = Command::new("sq")
        .args(["encrypt", "--recipient-cert"])
        .arg(&keyring().person(who).pub_asc)
        .arg(&input)
        .output()
        .expect("run sq");
    assert!(
        out.status.success(),
        "sq encrypt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
