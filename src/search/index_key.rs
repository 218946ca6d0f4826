//! The key that seals an index's files ([`super::sealed_dir`]).
//!
//! 32 random bytes, made when an identity's index is first opened and kept on disk only
//! as an OpenPGP message to the identity's own certificate (`index.key.pgp`), so the
//! index is exactly as readable as the mail it was built from: whoever can decrypt the
//! identity's mail can open the index, and nobody else.

use super::index::IndexError;
use crate::keys::LoadedIdentity;
use openpgp::serialize::stream::{Encryptor, LiteralWriter, Message, Recipient};
use sequoia_openpgp as openpgp;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use zeroize::Zeroizing;

/// The sealed key's file name inside the index folder.
pub const KEY_FILE: &str = "index.key.pgp";
/// What tantivy writes first into a new index: present without a key means the key was
/// lost, and a new key must not silently replace it.
const META_FILE: &str = "meta.json";

/// The index key of the folder `dir`: unsealed from [`KEY_FILE`], or made and sealed to
/// `identity` when the folder holds no index yet.
pub fn load_or_create(
    dir: &Path,
    identity: &LoadedIdentity,
) -> Result<Zeroizing<[u8; 32]>, IndexError> {
    let path = dir.join(KEY_FILE);
    match fs::read(&path) {
        Ok(sealed) => unseal(&path, &sealed, identity),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if dir.join(META_FILE).exists() {
                return Err(IndexError::KeyMissing {
                    dir: dir.to_path_buf(),
                });
            }
            create(&path, identity)
        }
        Err(source) => Err(IndexError::Io { path, source }),
    }
}

fn create(path: &Path, identity: &LoadedIdentity) -> Result<Zeroizing<[u8; 32]>, IndexError> {
    let mut key = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(key.as_mut_slice()).map_err(|_| IndexError::Random)?;
    let sealed = seal(&key[..], identity)?;
    write_new(path, &sealed).map_err(|source| IndexError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(key)
}

/// `key` as a binary OpenPGP message to every live encryption subkey of the identity's
/// certificate.
fn seal(key: &[u8], identity: &LoadedIdentity) -> Result<Vec<u8>, IndexError> {
    let fingerprint = identity.cert.fingerprint().to_hex();
    let failed = |e: anyhow::Error| IndexError::KeySeal {
        fingerprint: fingerprint.clone(),
        source: e.into(),
    };
    let valid = identity
        .cert
        .with_policy(&crate::keys::POLICY, None)
        .map_err(failed)?;
    let recipients: Vec<Recipient<'_>> = crate::keys::encryption_keys(&valid)
        .map(Recipient::from)
        .collect();
    if recipients.is_empty() {
        return Err(failed(anyhow::anyhow!("no live encryption subkey")));
    }
    let mut out = Vec::with_capacity(1024);
    let message = Encryptor::for_recipients(Message::new(&mut out), recipients)
        .build()
        .map_err(failed)?;
    let mut message = LiteralWriter::new(message).build().map_err(failed)?;
    message
        .write_all(key)
        .map_err(|e| failed(anyhow::Error::from(e)))?;
    message.finalize().map_err(failed)?;
    Ok(out)
}

fn unseal(
    path: &Path,
    sealed: &[u8],
    identity: &LoadedIdentity,
) -> Result<Zeroizing<[u8; 32]>, IndexError> {
    use crate::pgp::DecryptError;
    let plain = match crate::pgp::decrypt_bytes(sealed, &identity.decryptors, &[], 1024) {
        Ok(decrypted) => Zeroizing::new(decrypted.plaintext),
        Err(DecryptError::NoKey) => {
            return Err(IndexError::WrongIdentity {
                path: path.to_path_buf(),
                fingerprint: identity.cert.fingerprint().to_hex(),
            })
        }
        Err(source) => {
            return Err(IndexError::KeyUnreadable {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut key = Zeroizing::new([0u8; 32]);
    if plain.len() != key.len() {
        return Err(IndexError::KeyMalformed {
            path: path.to_path_buf(),
        });
    }
    key.copy_from_slice(&plain);
    Ok(key)
}

/// Writes `data` to a new file `path` (mode 0600) through a temporary name, so that a
/// crash never leaves a half-written key that would make the index unreadable.
fn write_new(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
