//! A tantivy [`Directory`] whose files are encrypted at rest.
//!
//! Every file tantivy writes (segment components, `meta.json`, `.managed.json`) is sealed
//! with AES-256-GCM under the index key: a fresh random nonce per write, and the file's
//! name bound as associated data, so that one sealed file put in place of another fails
//! to open instead of being read as the other. Reads open and check the whole file
//! before tantivy sees a byte of it, so a tampered or truncated file is an I/O error,
//! never garbage handed to tantivy's decoders. Only the lock files are plain: they are
//! empty and exist for `flock` (`File::lock`).
//!
//! Limits: each file is held whole in memory, decrypted, while tantivy uses it, so an
//! open index takes about its size on disk in memory (the owner bounds that size); and
//! putting back an older sealed `meta.json` (a rollback of the whole folder) is not
//! detected here.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use tantivy::directory::error::{DeleteError, LockError, OpenReadError, OpenWriteError};
use tantivy::directory::{
    AntiCallToken, Directory, DirectoryLock, FileHandle, Lock, OwnedBytes, TerminatingWrite,
    WatchCallback, WatchHandle, WritePtr,
};
use zeroize::Zeroizing;

/// The first bytes of every sealed file: names the format so a later one can be told
/// apart, and is bound into the associated data.
const MAGIC: &[u8; 8] = b"SPIDX\x001\n";
/// Domain separation for the associated data: `AAD_LABEL || MAGIC || file name`.
const AAD_LABEL: &[u8] = b"sealpost search index file\0";
const TAG_LEN: usize = 16;
/// `MAGIC || nonce`, before the ciphertext.
const HEAD_LEN: usize = MAGIC.len() + NONCE_LEN;
/// Suffix of a file being written by [`SealedDirectory::atomic_write`] before its rename.
const TMP_SUFFIX: &str = ".sealing";

/// The 32-byte index key as an AEAD key. Built from bytes the caller holds in a
/// [`Zeroizing`] buffer; aws-lc's own copy is cleansed when this is dropped
/// (`OPENSSL_free` clears what it frees).
pub struct IndexCipher {
    key: LessSafeKey,
}

impl IndexCipher {
    /// AES-256 takes any 32 bytes, so this fails only if aws-lc itself cannot work.
    pub fn new(raw: &Zeroizing<[u8; 32]>) -> io::Result<IndexCipher> {
        let unbound = UnboundKey::new(&AES_256_GCM, raw.as_slice())
            .map_err(|_| io::Error::other("aws-lc refused the AES-256-GCM key"))?;
        Ok(IndexCipher {
            key: LessSafeKey::new(unbound),
        })
    }

    /// Encrypts `data` in place for the file `name` and returns what goes before it
    /// (`MAGIC || nonce`) and after it (the tag): a segment is sealed in the one buffer
    /// that holds it, never copied.
    pub fn seal_in_place(
        &self,
        name: &Path,
        data: &mut [u8],
    ) -> io::Result<([u8; HEAD_LEN], [u8; TAG_LEN])> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| io::Error::other("no random nonce"))?;
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(name)),
                data,
            )
            .map_err(|_| io::Error::other("AES-GCM sealing failed"))?;
        let mut head = [0u8; HEAD_LEN];
        head[..MAGIC.len()].copy_from_slice(MAGIC);
        head[MAGIC.len()..].copy_from_slice(&nonce);
        let mut tail = [0u8; TAG_LEN];
        tail.copy_from_slice(tag.as_ref());
        Ok((head, tail))
    }

    /// `MAGIC || nonce || ciphertext || tag` of `plain`, for the file `name`.
    pub fn seal(&self, name: &Path, plain: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(HEAD_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&[0u8; HEAD_LEN]);
        out.extend_from_slice(plain);
        let (head, tag) = self.seal_in_place(name, &mut out[HEAD_LEN..])?;
        out[..HEAD_LEN].copy_from_slice(&head);
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// The plaintext of a sealed file named `name`; `InvalidData` when the file is not
    /// one we sealed under that name with this key (tampered, truncated, swapped).
    pub fn open(&self, name: &Path, mut sealed: Vec<u8>) -> io::Result<Vec<u8>> {
        let head = HEAD_LEN;
        if sealed.len() < head + TAG_LEN || &sealed[..MAGIC.len()] != MAGIC {
            return Err(invalid(
                name,
                "not a sealed index file (bad header or truncated)",
            ));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[MAGIC.len()..head]);
        let plain_len = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(name)),
                &mut sealed[head..],
            )
            .map_err(|_| invalid(name, "authentication failed (tampered, truncated or moved)"))?
            .len();
        sealed.drain(..head);
        sealed.truncate(plain_len);
        Ok(sealed)
    }
}

fn aad(name: &Path) -> Vec<u8> {
    [AAD_LABEL, MAGIC.as_slice(), name.as_os_str().as_bytes()].concat()
}

fn invalid(name: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("index file {}: {why}", name.display()),
    )
}

/// A tantivy directory over a folder whose files are sealed by an [`IndexCipher`].
#[derive(Clone)]
pub struct SealedDirectory {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    cipher: IndexCipher,
    /// Files already opened and still held by a reader: tantivy opens a segment's files
    /// again for each searcher, and files are write-once, so one decryption serves all.
    /// Weak, so a file's plaintext leaves memory with its last reader.
    open: Mutex<HashMap<PathBuf, Weak<OwnedBytes>>>,
}

impl fmt::Debug for SealedDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedDirectory({})", self.inner.root.display())
    }
}

impl SealedDirectory {
    /// The sealed directory over the existing folder `root`.
    pub fn new(root: &Path, cipher: IndexCipher) -> SealedDirectory {
        SealedDirectory {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                cipher,
                open: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn full(&self, path: &Path) -> PathBuf {
        self.inner.root.join(path)
    }

    /// Reads and opens the sealed file `path`.
    fn read_plain(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
        let sealed = fs::read(self.full(path)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => OpenReadError::FileDoesNotExist(path.to_path_buf()),
            _ => OpenReadError::wrap_io_error(e, path.to_path_buf()),
        })?;
        self.inner
            .cipher
            .open(path, sealed)
            .map_err(|e| OpenReadError::wrap_io_error(e, path.to_path_buf()))
    }

    /// Writes `parts` one after the other as the file `full`, durable before returning.
    fn write_durable(full: &Path, parts: &[&[u8]]) -> io::Result<()> {
        let mut file = File::create(full)?;
        for part in parts {
            file.write_all(part)?;
        }
        file.sync_data()
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Weak<OwnedBytes>>> {
        // The map holds no invariant a panicking thread could break half-way.
        self.inner
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Directory for SealedDirectory {
    fn get_file_handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
        if let Some(bytes) = self.cache().get(path).and_then(Weak::upgrade) {
            return Ok(bytes);
        }
        let bytes = Arc::new(OwnedBytes::new(self.read_plain(path)?));
        let mut cache = self.cache();
        cache.retain(|_, weak| weak.strong_count() > 0);
        cache.insert(path.to_path_buf(), Arc::downgrade(&bytes));
        Ok(bytes)
    }

    fn delete(&self, path: &Path) -> Result<(), DeleteError> {
        self.cache().remove(path);
        fs::remove_file(self.full(path)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => DeleteError::FileDoesNotExist(path.to_path_buf()),
            _ => DeleteError::IoError {
                io_error: Arc::new(e),
                filepath: path.to_path_buf(),
            },
        })
    }

    fn exists(&self, path: &Path) -> Result<bool, OpenReadError> {
        self.full(path)
            .try_exists()
            .map_err(|e| OpenReadError::wrap_io_error(e, path.to_path_buf()))
    }

    fn open_write(&self, path: &Path) -> Result<WritePtr, OpenWriteError> {
        let full = self.full(path);
        // Claim the name now, as tantivy expects (a second writer for it is an error);
        // the content is written sealed when tantivy terminates the writer.
        File::create_new(&full).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => OpenWriteError::FileAlreadyExists(path.to_path_buf()),
            _ => OpenWriteError::wrap_io_error(e, path.to_path_buf()),
        })?;
        let writer = SealingWriter {
            dir: self.clone(),
            name: path.to_path_buf(),
            plain: Vec::new(),
        };
        Ok(io::BufWriter::new(Box::new(writer)))
    }

    fn atomic_read(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
        self.read_plain(path)
    }

    fn atomic_write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let sealed = self.inner.cipher.seal(path, data)?;
        let full = self.full(path);
        let mut tmp = full.clone().into_os_string();
        tmp.push(TMP_SUFFIX);
        let tmp = PathBuf::from(tmp);
        Self::write_durable(&tmp, &[&sealed])?;
        fs::rename(&tmp, &full)?;
        self.sync_directory()
    }

    fn sync_directory(&self) -> io::Result<()> {
        File::open(&self.inner.root)?.sync_all()
    }

    /// An advisory `flock` on a plain, empty lock file: released when the lock is
    /// dropped or the process dies, so a crash never leaves the index locked.
    fn acquire_lock(&self, lock: &Lock) -> Result<DirectoryLock, LockError> {
        let full = self.full(&lock.filepath);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&full)
            .map_err(|e| LockError::IoError(Arc::new(e)))?;
        if lock.is_blocking {
            file.lock().map_err(|e| LockError::IoError(Arc::new(e)))?;
        } else {
            file.try_lock().map_err(|e| match e {
                fs::TryLockError::WouldBlock => LockError::LockBusy,
                fs::TryLockError::Error(e) => LockError::IoError(Arc::new(e)),
            })?;
        }
        Ok(DirectoryLock::from(Box::new(file)))
    }

    /// Readers are reloaded explicitly after each commit (`ReloadPolicy::Manual`).
    fn watch(&self, _callback: WatchCallback) -> tantivy::Result<WatchHandle> {
        Ok(WatchHandle::empty())
    }
}

/// Collects a file's bytes in memory and writes them sealed when tantivy terminates it.
struct SealingWriter {
    dir: SealedDirectory,
    name: PathBuf,
    plain: Vec<u8>,
}

impl Write for SealingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.plain.extend_from_slice(buf);
        Ok(buf.len())
    }

    /// Nothing reaches the disk before `terminate`: a flushed prefix would need its own
    /// seal, and tantivy reads a file only after terminating it.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TerminatingWrite for SealingWriter {
    fn terminate_ref(&mut self, _: AntiCallToken) -> io::Result<()> {
        let mut data = std::mem::take(&mut self.plain);
        let (head, tag) = self.dir.inner.cipher.seal_in_place(&self.name, &mut data)?;
        SealedDirectory::write_durable(&self.dir.full(&self.name), &[&head, &data, &tag])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> IndexCipher {
        IndexCipher::new(&Zeroizing::new([7u8; 32])).unwrap()
    }

    #[test]
    fn seal_then_open_gives_back_the_bytes_and_hides_them() {
        let c = cipher();
        let sealed = c.seal(Path::new("a.idx"), b"secret words here").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        let plain = c.open(Path::new("a.idx"), sealed).unwrap();
        assert_eq!(plain, b"secret words here");
    }

    #[test]
    fn two_seals_of_the_same_bytes_differ() {
        let c = cipher();
        let a = c.seal(Path::new("a"), b"same").unwrap();
        let b = c.seal(Path::new("a"), b"same").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn a_file_under_another_name_or_key_does_not_open() {
        let c = cipher();
        let sealed = c.seal(Path::new("meta.json"), b"{}").unwrap();
        let moved = c.open(Path::new("other.json"), sealed.clone()).unwrap_err();
        assert_eq!(moved.kind(), io::ErrorKind::InvalidData);
        let other = IndexCipher::new(&Zeroizing::new([8u8; 32])).unwrap();
        assert!(other.open(Path::new("meta.json"), sealed).is_err());
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_an_error() {
        let c = cipher();
        let sealed = c.seal(Path::new("f"), b"0123456789").unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(c.open(Path::new("f"), bad).is_err(), "flip at {i}");
            assert!(
                c.open(Path::new("f"), sealed[..i].to_vec()).is_err(),
                "cut at {i}"
            );
        }
    }

    #[test]
    fn directory_round_trip_on_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SealedDirectory::new(tmp.path(), cipher());
        let mut w = dir.open_write(Path::new("seg.store")).unwrap();
        w.write_all(b"plain segment bytes").unwrap();
        w.terminate().unwrap();
        let on_disk = fs::read(tmp.path().join("seg.store")).unwrap();
        assert!(!on_disk.windows(5).any(|w| w == b"plain"));
        let read = dir.open_read(Path::new("seg.store")).unwrap();
        assert_eq!(
            read.read_bytes().unwrap().as_slice(),
            b"plain segment bytes"
        );
        assert!(matches!(
            dir.open_write(Path::new("seg.store")),
            Err(OpenWriteError::FileAlreadyExists(_))
        ));
        dir.atomic_write(Path::new("meta.json"), b"{\"x\":1}")
            .unwrap();
        assert_eq!(
            dir.atomic_read(Path::new("meta.json")).unwrap(),
            b"{\"x\":1}"
        );
        dir.delete(Path::new("seg.store")).unwrap();
        assert!(!dir.exists(Path::new("seg.store")).unwrap());
        assert!(matches!(
            dir.open_read(Path::new("seg.store")),
            Err(OpenReadError::FileDoesNotExist(_))
        ));
    }

    #[test]
    fn a_second_writer_lock_is_busy_until_the_first_is_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SealedDirectory::new(tmp.path(), cipher());
        let lock = Lock {
            filepath: PathBuf::from(".test.lock"),
            is_blocking: false,
        };
        let held = dir.acquire_lock(&lock).unwrap();
        assert!(matches!(dir.acquire_lock(&lock), Err(LockError::LockBusy)));
        drop(held);
        dir.acquire_lock(&lock).unwrap();
    }
}
