//! Throw-away test PKI made with the openssl CLI: a CA plus a server leaf for
//! `localhost` / `127.0.0.1` signed by it (rustls/webpki refuse a
//! self-signed CA certificate used directly as the server certificate).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

#[derive(Debug, Clone)]
pub struct TestCa {
    pub dir: PathBuf,
    /// CA certificate (trust anchor), PEM.
    pub ca_pem: PathBuf,
    /// Server leaf certificate only, PEM (CN=localhost, SAN DNS:localhost,
    /// IP:127.0.0.1, EKU serverAuth, CA:FALSE).
    pub cert_pem: PathBuf,
    /// Server leaf private key, PKCS#8 PEM ("BEGIN PRIVATE KEY"), EC P-256.
    pub key_pem: PathBuf,
    /// Leaf followed by the CA certificate, PEM.
    pub chain_pem: PathBuf,
    /// CA private key, PKCS#8 PEM (for signing further certificates).
    pub ca_key_pem: PathBuf,
}

const CA_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = sealpost test CA
O = sealpost tests
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
";

const LEAF_EXT: &str = "\
[v3_leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
";

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

fn random_serial() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // positive, non-zero, 64 bits
    format!(
        "0x{:016x}",
        ((nanos as u64) ^ ((std::process::id() as u64) << 40)) | 1
    )
}

impl TestCa {
    /// Create the CA and leaf in `dir` (created if missing). Files:
    /// `ca.pem`, `ca.key`, `server.pem`, `server.key`, `chain.pem`.
    pub fn new(dir: impl AsRef<Path>) -> TestCa {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).expect("create TestCa dir");
        std::fs::write(dir.join("ca.cnf"), CA_CNF).unwrap();
        std::fs::write(dir.join("leaf.ext"), LEAF_EXT).unwrap();
        let ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
        let mut a = vec!["genpkey"];
        a.extend_from_slice(&ec);
        a.extend_from_slice(&["-out", "ca.key"]);
        openssl(&dir, &a);
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-sha256",
                "-days",
                "3650",
                "-config",
                "ca.cnf",
                "-extensions",
                "v3_ca",
                "-set_serial",
                &random_serial(),
                "-out",
                "ca.pem",
            ],
        );
        let mut a = vec!["genpkey"];
        a.extend_from_slice(&ec);
        a.extend_from_slice(&["-out", "server.key"]);
        openssl(&dir, &a);
        openssl(
            &dir,
            &[
                "req",
                "-new",
                "-key",
                "server.key",
                "-config",
                "ca.cnf",
                "-subj",
                "/CN=localhost/O=sealpost tests",
                "-out",
                "server.csr",
            ],
        );
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &random_serial(),
                "-days",
                "825",
                "-sha256",
                "-extfile",
                "leaf.ext",
                "-extensions",
                "v3_leaf",
                "-out",
                "server.pem",
            ],
        );
        let leaf = std::fs::read(dir.join("server.pem")).unwrap();
        let ca = std::fs::read(dir.join("ca.pem")).unwrap();
        std::fs::write(dir.join("chain.pem"), [leaf, ca].concat()).unwrap();
        TestCa {
            ca_pem: dir.join("ca.pem"),
            cert_pem: dir.join("server.pem"),
            key_pem: dir.join("server.key"),
            chain_pem: dir.join("chain.pem"),
            ca_key_pem: dir.join("ca.key"),
            dir,
        }
    }

    /// One CA per test process (in a directory that outlives the process's
    /// tests; removed by the keyring reaper at process exit). Handy when a
    /// test does not care about having its own PKI.
    pub fn shared() -> &'static TestCa {
        static CA: OnceLock<TestCa> = OnceLock::new();
        CA.get_or_init(|| TestCa::new(super::pgp::process_dir().join("ca")))
    }
}
