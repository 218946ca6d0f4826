//! `sealpost keys generate`: a key for an identity that has none, and how to publish it.

use super::KeyError;
use openpgp::cert::{CertBuilder, CipherSuite};
use openpgp::crypto::Password;
use openpgp::serialize::{Serialize, SerializeInto};
use openpgp::Cert;
use sequoia_openpgp as openpgp;
use std::path::{Path, PathBuf};

pub struct Generated {
    /// The public certificate.
    pub cert: Cert,
    pub secret_key: PathBuf,
    pub passphrase_file: PathBuf,
    /// What to do next, for a person.
    pub instructions: String,
}

impl Generated {
    /// The `[[identity]]` that uses this key (what the instructions tell a person to add).
    pub fn identity(&self, address: &str, login: Option<&str>) -> crate::config::Identity {
        crate::config::Identity {
            address: address.to_string(),
            account: None,
            login: login.map(str::to_string),
            secret_key: self.secret_key.clone(),
            passphrase_file: Some(self.passphrase_file.clone()),
            passphrase_credential: None,
            passphrase_env: None,
        }
    }
}

/// Generates a passphrase-protected key for `address`, writes the secret key, its
/// passphrase file (both mode 0600) and the binary certificate to publish by WKD.
pub fn generate(address: &str, out: &Path) -> Result<Generated, KeyError> {
    let err = |message: String| KeyError::Identity {
        address: address.to_string(),
        message,
    };
    let address = super::normalize_address(address);
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err(err("not an email address".into()));
    };
    std::fs::create_dir_all(out)
        .map_err(|e| err(format!("cannot create {}: {e}", out.display())))?;
    let passphrase: String = {
        use rand::Rng;
        const CHARS: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
        let mut rng = rand::rng();
        (0..28)
            .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
            .collect()
    };
    let (cert, _revocation) = CertBuilder::general_purpose(Some(format!("<{address}>")))
        .set_cipher_suite(CipherSuite::Cv25519)
        .set_password(Some(Password::from(passphrase.as_str())))
        .generate()
        .map_err(|e| err(e.to_string()))?;
    let base = address.replace(['@', '/'], "_");
    let secret_key = out.join(format!("{base}.sec.asc"));
    let passphrase_file = out.join(format!("{base}.pass"));
    let write = |path: &Path, data: &[u8]| {
        crate::tls::write_private(path, data)
            .map_err(|e| err(format!("cannot write {}: {e}", path.display())))
    };
    write(
        &secret_key,
        &cert
            .as_tsk()
            .armored()
            .to_vec()
            .map_err(|e| err(e.to_string()))?,
    )?;
    write(&passphrase_file, format!("{passphrase}\n").as_bytes())?;
    let public = cert.clone().strip_secret_key_material();
    let armored_pub = out.join(format!("{base}.pub.asc"));
    std::fs::write(
        &armored_pub,
        public.armored().to_vec().map_err(|e| err(e.to_string()))?,
    )
    .map_err(|e| err(e.to_string()))?;

    // Web Key Directory file names (draft-koch-openpgp-webkey-service §3.1).
    let wkd = sequoia_net::wkd::Url::from(&address).map_err(|e| err(e.to_string()))?;
    let advanced = wkd
        .to_file_path(sequoia_net::wkd::Variant::Advanced)
        .map_err(|e| err(e.to_string()))?;
    let direct = wkd
        .to_file_path(sequoia_net::wkd::Variant::Direct)
        .map_err(|e| err(e.to_string()))?;
    let wkd_file = out.join(format!("{base}.wkd"));
    let mut binary = Vec::new();
    public
        .serialize(&mut binary)
        .map_err(|e| err(e.to_string()))?;
    std::fs::write(&wkd_file, &binary).map_err(|e| err(e.to_string()))?;
    let hash = advanced
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();

    let instructions = format!(
        "Generated {fpr} for {address}.\n\
         secret key:      {sk} (mode 0600)\n\
         passphrase file: {pf} (mode 0600)\n\
         public key:      {pk}\n\n\
         Add to the config:\n\
         [[identity]]\n\
         address = \"{address}\"\n\
         secret_key = \"{sk}\"\n\
         passphrase_file = \"{pf}\"\n\n\
         Publish it with Web Key Directory: put the binary file {wkd} on the web server as\n\
         \x20 https://openpgpkey.{domain}/{adv}   (advanced method), or\n\
         \x20 https://{domain}/{dir}   (direct method)\n\
         (the name {hash} is the z-base-32 SHA-1 of \"{local}\"), plus an empty \"policy\" file\n\
         beside the hu/ folder, served with Access-Control-Allow-Origin: *.\n\n\
         Publish it on keys.openpgp.org: upload {pk} at https://keys.openpgp.org/upload\n\
         and confirm the verification mail sent to {address}.",
        fpr = cert.fingerprint().to_hex(),
        sk = secret_key.display(),
        pf = passphrase_file.display(),
        pk = armored_pub.display(),
        wkd = wkd_file.display(),
        adv = advanced.display(),
        dir = direct.display(),
    );
    Ok(Generated {
        cert: public,
        secret_key,
        passphrase_file,
        instructions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_loads_as_an_identity() {
        let dir = tempfile::tempdir().unwrap();
        let g = generate("New.User@Example.org", dir.path()).unwrap();
        assert!(g
            .instructions
            .contains("openpgpkey.example.org/.well-known/openpgpkey/example.org/hu/"));
        let id = g.identity("new.user@example.org", None);
        let loaded = super::super::load_identity(&id).unwrap();
        assert!(loaded.signer.is_some() && !loaded.decryptors.is_empty());
        assert!(super::super::usable_for(
            &g.cert,
            "new.user@example.org",
            &super::super::POLICY
        ));
        // Without the passphrase the key does not unlock.
        let mut bad = id.clone();
        bad.passphrase_file = None;
        let e = super::super::load_identity(&bad).unwrap_err().to_string();
        assert!(e.contains("protected by a passphrase"), "{e}");
    }
}
