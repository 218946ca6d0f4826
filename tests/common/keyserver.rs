//! Local HTTPS stand-in for Web Key Directory hosts and a keys.openpgp.org
//! style VKS: `tests/support/keyserver.py` on 127.0.0.1, one port for all
//! test hostnames (virtual hosts by Host header / SNI).
//!
//! The server certificate is a leaf signed by the given [`TestCa`] that covers
//! every name in [`KEYSERVER_HOSTS`] (plus `localhost` / `127.0.0.1`), so a
//! client that trusts `ca_pem` and connects to 127.0.0.1:`port` while using
//! the real hostname for SNI, certificate check and Host header succeeds —
//! which is what sealpost does with a `resolve` map (see
//! [`KeyServer::resolve_toml`]).
//!
//! ```ignore
//! let ks = KeyServer::start(TestCa::shared());
//! ks.publish_wkd_advanced("bob@example.org", &gpg_export_binary("bob"));
//! // sealpost config: [keys.resolve] + ks.resolve_toml(), CA = ks.ca_pem
//! assert_eq!(ks.request_count("/hu/"), 1);
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::net::{read_port_and_ready, PYTHON};
use super::pgp::{gpg, keyring, NOBODY};
use super::tls::TestCa;

/// Hostnames served (and present in the server certificate) by default.
pub const KEYSERVER_HOSTS: &[&str] = &[
    "openpgpkey.example.org",
    "example.org",
    "openpgpkey.example.net",
    "example.net",
    "keys.example.test",
    "openpgpkey.example.com",
    "example.com",
    "keys.openpgp.org",
];

/// A running `keyserver.py`. Killed on drop; its temp dir is removed then
/// (kept, and the logs printed, if the test is panicking).
pub struct KeyServer {
    /// 127.0.0.1 port the server listens on (stands in for port 443).
    pub port: u16,
    /// Document root: files are served from `root/<host>/<path>`.
    pub root: PathBuf,
    /// Request log, one line per request: `HOST TARGET STATUS`
    /// (TARGET = path as sent, with `?query` if any).
    pub log_path: PathBuf,
    /// The CA to trust (same file as the `TestCa`'s `ca_pem`).
    pub ca_pem: PathBuf,
    /// Server leaf certificate (PEM, leaf only).
    pub cert_pem: PathBuf,
    /// Server leaf key (PKCS#8 PEM, EC P-256).
    pub key_pem: PathBuf,
    /// Python's stderr (access log, connection errors, tracebacks).
    pub stderr_path: PathBuf,
    /// Hostnames in the certificate and in [`KeyServer::resolve_toml`].
    pub hosts: Vec<String>,
    child: Child,
    /// Held open: the server exits when it sees EOF (test process died).
    _stdin: Option<ChildStdin>,
    dir: Option<tempfile::TempDir>,
}

/// Result of [`KeyServer::curl_get`].
#[derive(Debug, Clone)]
pub struct HttpGet {
    /// HTTP status, 0 if no response (timeout, TLS failure...).
    pub status: u16,
    /// Content-Type of the response ("" if none).
    pub content_type: String,
    pub body: Vec<u8>,
    /// curl's exit code (0 ok, 28 timeout, 60 certificate problem...).
    pub curl_exit: i32,
    pub stderr: String,
}

impl HttpGet {
    /// curl succeeded and the status is 200.
    pub fn ok(&self) -> bool {
        self.curl_exit == 0 && self.status == 200
    }
}

impl KeyServer {
    /// Start a server for [`KEYSERVER_HOSTS`] with a leaf signed by `ca`.
    pub fn start(ca: &TestCa) -> KeyServer {
        KeyServer::start_with_hosts(ca, &[])
    }

    /// Like [`KeyServer::start`], with extra hostnames (added to the
    /// certificate and to the resolve map).
    pub fn start_with_hosts(ca: &TestCa, extra_hosts: &[&str]) -> KeyServer {
        let mut hosts: Vec<String> = KEYSERVER_HOSTS.iter().map(|h| h.to_string()).collect();
        for h in extra_hosts {
            let h = h.to_ascii_lowercase();
            assert!(valid_host(&h), "bad extra host {h:?}");
            if !hosts.contains(&h) {
                hosts.push(h);
            }
        }
        let dir = super::tempdir();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        for h in &hosts {
            std::fs::create_dir_all(root.join(h)).unwrap();
        }
        let (cert_pem, key_pem, chain_pem) = make_leaf(dir.path(), ca, &hosts);
        let log_path = dir.path().join("requests.log");
        std::fs::write(&log_path, b"").unwrap();
        let stderr_path = dir.path().join("keyserver.stderr");
        let (child, stdin, port) =
            spawn_server(&chain_pem, &key_pem, &root, &log_path, &stderr_path)
                .unwrap_or_else(|e| panic!("keyserver.py did not start: {e}"));
        KeyServer {
            port,
            root,
            log_path,
            ca_pem: ca.ca_pem.clone(),
            cert_pem,
            key_pem,
            stderr_path,
            hosts,
            child,
            _stdin: Some(stdin),
            dir: Some(dir),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Directory of virtual host `host` (created if missing).
    pub fn host_dir(&self, host: &str) -> PathBuf {
        let host = host.to_ascii_lowercase();
        assert!(valid_host(&host), "bad host {host:?}");
        let d = self.root.join(host);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Serve `bytes` at `https://<host>/<path>` (path relative or absolute,
    /// no query). Returns the file written.
    pub fn publish_file(&self, host: &str, path: &str, bytes: &[u8]) -> PathBuf {
        let mut p = self.host_dir(host);
        for part in path.split('/').filter(|s| !s.is_empty()) {
            assert!(part != "." && part != "..", "bad path {path:?}");
            p.push(part);
        }
        write_atomic(&p, bytes);
        p
    }

    /// Publish via the WKD advanced method:
    /// `https://openpgpkey.<domain>/.well-known/openpgpkey/<domain>/hu/<hash>`
    /// (+ an empty `.../openpgpkey/<domain>/policy`). Returns the hu file.
    pub fn publish_wkd_advanced(&self, email: &str, cert_binary: &[u8]) -> PathBuf {
        let (local, domain) = split_email(email);
        let host = format!("openpgpkey.{domain}");
        self.publish_file(
            &host,
            &format!(".well-known/openpgpkey/{domain}/policy"),
            b"",
        );
        self.publish_file(
            &host,
            &format!(".well-known/openpgpkey/{domain}/hu/{}", wkd_hash(&local)),
            cert_binary,
        )
    }

    /// Publish via the WKD direct method:
    /// `https://<domain>/.well-known/openpgpkey/hu/<hash>` (+ an empty
    /// `.well-known/openpgpkey/policy`). Returns the hu file.
    pub fn publish_wkd_direct(&self, email: &str, cert_binary: &[u8]) -> PathBuf {
        let (local, domain) = split_email(email);
        self.publish_file(&domain, ".well-known/openpgpkey/policy", b"");
        self.publish_file(
            &domain,
            &format!(".well-known/openpgpkey/hu/{}", wkd_hash(&local)),
            cert_binary,
        )
    }

    /// Make `GET https://<host>/vks/v1/by-email/<email>` answer `armored`
    /// (lookup is case-insensitive). Returns the file written.
    pub fn publish_vks(&self, host: &str, email: &str, armored: &[u8]) -> PathBuf {
        let email = email.to_lowercase();
        assert!(!email.contains('/'), "bad email {email:?}");
        self.publish_file(host, &format!("vks/{email}.asc"), armored)
    }

    /// Every later request to `host` sleeps `secs` before being answered
    /// (the request is logged on arrival, before the sleep).
    pub fn set_delay(&self, host: &str, secs: f64) {
        write_atomic(
            &self.host_dir(host).join(".delay"),
            format!("{secs}\n").as_bytes(),
        );
    }

    pub fn clear_delay(&self, host: &str) {
        let _ = std::fs::remove_file(self.host_dir(host).join(".delay"));
    }

    /// Every later request to `host` is answered with `status` (short text
    /// body) instead of a lookup.
    pub fn set_status(&self, host: &str, status: u16) {
        write_atomic(
            &self.host_dir(host).join(".status"),
            format!("{status}\n").as_bytes(),
        );
    }

    pub fn clear_status(&self, host: &str) {
        let _ = std::fs::remove_file(self.host_dir(host).join(".status"));
    }

    /// Request log lines so far (`HOST TARGET STATUS`).
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Number of logged requests whose line contains `needle` (e.g. a host,
    /// a WKD hash, `"/vks/"`, `" 404"`).
    pub fn request_count(&self, needle: &str) -> usize {
        self.requests()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Forget the requests logged so far.
    pub fn clear_requests(&self) {
        std::fs::write(&self.log_path, b"").unwrap();
    }

    /// Poll until at least `n` logged requests contain `needle`; returns the
    /// count. Panics (with the log) on timeout.
    pub fn wait_for_requests(&self, needle: &str, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.request_count(needle);
            if c >= n {
                return c;
            }
            if Instant::now() >= deadline {
                panic!(
                    "keyserver: expected {n} request(s) matching {needle:?} within {timeout:?}, \
                     got {c}; log:\n{}",
                    self.requests().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// (hostname, "127.0.0.1:PORT") for every served hostname.
    pub fn resolve_pairs(&self) -> Vec<(String, String)> {
        self.hosts
            .iter()
            .map(|h| (h.clone(), self.addr()))
            .collect()
    }

    /// Body of a TOML table mapping every hostname to `127.0.0.1:PORT`, one
    /// `"host" = "127.0.0.1:PORT"` line each; put it under a header such as
    /// `[keys.resolve]`.
    pub fn resolve_toml(&self) -> String {
        self.resolve_pairs()
            .iter()
            .map(|(h, a)| format!("\"{h}\" = \"{a}\"\n"))
            .collect()
    }

    /// The same map as a TOML inline table: `{ "host" = "127.0.0.1:PORT", ... }`
    /// (for `resolve = <this>`).
    pub fn resolve_inline_toml(&self) -> String {
        let body: Vec<String> = self
            .resolve_pairs()
            .iter()
            .map(|(h, a)| format!("\"{h}\" = \"{a}\""))
            .collect();
        format!("{{ {} }}", body.join(", "))
    }

    /// GET `https://<host><path_and_query>` with curl, the way sealpost
    /// connects: to 127.0.0.1:PORT (`--connect-to host:443:127.0.0.1:PORT`),
    /// SNI / Host / certificate name = `host`, trusting only `ca_pem`.
    /// Never panics on HTTP or curl failure.
    pub fn curl_get(&self, host: &str, path_and_query: &str, max_time_secs: f64) -> HttpGet {
        let url = format!("https://{host}{}", leading_slash(path_and_query));
        self.curl(
            &[
                "--connect-to".to_owned(),
                format!("{host}:443:127.0.0.1:{}", self.port),
            ],
            &url,
            max_time_secs,
        )
    }

    /// Like [`KeyServer::curl_get`] but with
    /// `--resolve host:PORT:127.0.0.1` and `https://host:PORT/...` (the Host
    /// header then carries the port; the server ignores it).
    pub fn curl_get_resolve(
        &self,
        host: &str,
        path_and_query: &str,
        max_time_secs: f64,
    ) -> HttpGet {
        let url = format!(
            "https://{host}:{}{}",
            self.port,
            leading_slash(path_and_query)
        );
        self.curl(
            &[
                "--resolve".to_owned(),
                format!("{host}:{}:127.0.0.1", self.port),
            ],
            &url,
            max_time_secs,
        )
    }

    fn curl(&self, extra: &[String], url: &str, max_time_secs: f64) -> HttpGet {
        let out = Command::new("curl")
            .args(["-sS", "--noproxy", "*", "--cacert"])
            .arg(&self.ca_pem)
            .args(extra)
            .args(["--max-time", &format!("{max_time_secs}")])
            .args(["-w", "\n%{content_type}\n%{http_code}"])
            .arg(url)
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("HTTPS_PROXY")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .env_remove("CURL_HOME")
            .stdin(Stdio::null())
            .output()
            .expect("spawn curl");
        // stdout = body "\n" content_type "\n" http_code
        let mut body = out.stdout;
        let mut tail = Vec::new();
        for _ in 0..2 {
            match body.iter().rposition(|&b| b == b'\n') {
                Some(i) => {
                    tail.push(String::from_utf8_lossy(&body[i + 1..]).trim().to_owned());
                    body.truncate(i);
                }
                None => {
                    tail.push(String::from_utf8_lossy(&body).trim().to_owned());
                    body.clear();
                }
            }
        }
        HttpGet {
            status: tail[0].parse().unwrap_or(0),
            content_type: tail[1].clone(),
            body,
            curl_exit: out.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Python's stderr so far.
    pub fn stderr_log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for KeyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                let path = dir.keep();
                eprintln!(
                    "[keyserver port {}] test panicked; kept {} ; requests:\n{}\n--- stderr:\n{}",
                    self.port,
                    path.display(),
                    std::fs::read_to_string(&self.log_path).unwrap_or_default(),
                    std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
                );
            }
        }
    }
}

/// Binary (non-armored) public certificate of a keyring person ("bob" or
/// "bob@example.org"), as `gpg --export <fpr>` prints it.
pub fn gpg_export_binary(person: &str) -> Vec<u8> {
    let fpr = keyring().person(person).fpr.clone();
    let out = gpg(NOBODY, &["--export", &fpr], &[]);
    assert!(
        out.status.success() && !out.stdout.is_empty(),
        "gpg --export {fpr} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Armored public certificate of a keyring person (the `<name>.pub.asc`).
pub fn gpg_export_armored(person: &str) -> Vec<u8> {
    let p = keyring().person(person);
    std::fs::read(&p.pub_asc).unwrap_or_else(|e| panic!("read {}: {e}", p.pub_asc.display()))
}

/// WKD hash of a local part: z-base-32 of the SHA-1 of the local part with
/// ASCII letters lower-cased (as GnuPG does). 32 characters.
pub fn wkd_hash(local_part: &str) -> String {
    zbase32(&sha1(local_part.to_ascii_lowercase().as_bytes()))
}

/// Advanced-method URL for `email`, including `?l=<local part>`.
pub fn wkd_advanced_url(email: &str) -> String {
    let (local, domain) = split_email(email);
    format!(
        "https://openpgpkey.{domain}/.well-known/openpgpkey/{domain}/hu/{}?l={}",
        wkd_hash(&local),
        super::percent_encode(&local)
    )
}

/// Direct-method URL for `email`, including `?l=<local part>`.
pub fn wkd_direct_url(email: &str) -> String {
    let (local, domain) = split_email(email);
    format!(
        "https://{domain}/.well-known/openpgpkey/hu/{}?l={}",
        wkd_hash(&local),
        super::percent_encode(&local)
    )
}

/// z-base-32 (human-oriented base-32, as used by WKD), no padding.
pub fn zbase32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &b in data {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// SHA-1 (FIPS 180-4) digest.
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (hv, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *hv = hv.wrapping_add(v);
        }
    }
    let mut out = [0u8; 20];
    for (chunk, v) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&v.to_be_bytes());
    }
    out
}

/// (local part as given, lower-cased domain). Panics without an '@'.
fn split_email(email: &str) -> (String, String) {
    let at = email
        .rfind('@')
        .unwrap_or_else(|| panic!("not an email address: {email:?}"));
    let domain = email[at + 1..].to_ascii_lowercase();
    assert!(valid_host(&domain), "bad domain in {email:?}");
    (email[..at].to_owned(), domain)
}

fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && !h.starts_with('.')
        && !h.contains("..")
        && h.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

fn leading_slash(p: &str) -> String {
    if p.starts_with('/') {
        p.to_owned()
    } else {
        format!("/{p}")
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Write via a temp file + rename so the server never sees a partial file.
fn write_atomic(path: &Path, bytes: &[u8]) {
    let parent = path.parent().expect("file has a parent");
    std::fs::create_dir_all(parent).unwrap();
    let tmp = parent.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&tmp, bytes).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("spawn openssl");
    if !out.status.success() {
        panic!(
            "openssl {:?} failed ({}):\n{}{}",
            args,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn serial() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let x = nanos ^ (u64::from(std::process::id()) << 40) ^ SEQ.fetch_add(1, Ordering::Relaxed);
    format!("0x{:016x}", (x >> 1) | 1)
}

/// Leaf for `hosts` (+ localhost, 127.0.0.1) signed by `ca`, in `dir`:
/// (leaf pem, key pem, leaf+CA chain pem).
fn make_leaf(dir: &Path, ca: &TestCa, hosts: &[String]) -> (PathBuf, PathBuf, PathBuf) {
    let mut san: Vec<String> = hosts.iter().map(|h| format!("DNS:{h}")).collect();
    san.push("DNS:localhost".into());
    san.push("IP:127.0.0.1".into());
    let cnf = "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = keys.example.test\n";
    let ext = format!(
        "[v3_leaf]\n\
         basicConstraints = critical,CA:FALSE\n\
         keyUsage = critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage = serverAuth\n\
         subjectAltName = {}\n\
         subjectKeyIdentifier = hash\n\
         authorityKeyIdentifier = keyid,issuer\n",
        san.join(",")
    );
    std::fs::write(dir.join("ks.cnf"), cnf).unwrap();
    std::fs::write(dir.join("ks.ext"), ext).unwrap();
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "ks.key",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "ks.key",
            "-config",
            "ks.cnf",
            "-subj",
            "/CN=keys.example.test/O=sealpost tests",
            "-out",
            "ks.csr",
        ],
    );
    let ca_pem = ca.ca_pem.to_str().expect("utf-8 CA path");
    let ca_key = ca.ca_key_pem.to_str().expect("utf-8 CA key path");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "ks.csr",
            "-CA",
            ca_pem,
            "-CAkey",
            ca_key,
            "-set_serial",
            &serial(),
            "-days",
            "825",
            "-sha256",
            "-extfile",
            "ks.ext",
            "-extensions",
            "v3_leaf",
            "-out",
            "ks.pem",
        ],
    );
    let leaf = std::fs::read(dir.join("ks.pem")).unwrap();
    let ca_cert = std::fs::read(&ca.ca_pem).unwrap();
    std::fs::write(dir.join("ks.chain.pem"), [leaf, ca_cert].concat()).unwrap();
    (
        dir.join("ks.pem"),
        dir.join("ks.key"),
        dir.join("ks.chain.pem"),
    )
}

/// Starts `keyserver.py` on port 0; returns it, its stdin (held open) and the port it
/// reported.
fn spawn_server(
    chain_pem: &Path,
    key_pem: &Path,
    root: &Path,
    log_path: &Path,
    stderr_path: &Path,
) -> Result<(Child, ChildStdin, u16), String> {
    let script = super::support_file("keyserver.py");
    let errlog = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(stderr_path)
        .map_err(|e| e.to_string())?;
    let mut child = Command::new(PYTHON)
        .arg(&script)
        .arg("--port")
        .arg("0")
        .arg("--cert")
        .arg(chain_pem)
        .arg("--key")
        .arg(key_pem)
        .arg("--root")
        .arg(root)
        .arg("--log")
        .arg(log_path)
        .arg("--exit-on-stdin-eof")
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(errlog))
        .spawn()
        .map_err(|e| format!("spawn {PYTHON} {}: {e}", script.display()))?;
    let stdin = child.stdin.take().expect("keyserver stdin");
    match read_port_and_ready(&mut child, Duration::from_secs(20)) {
        Ok(port) => Ok((child, stdin, port)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "{e}; stderr:\n{}",
                std::fs::read_to_string(stderr_path).unwrap_or_default()
            ))
        }
    }
}
