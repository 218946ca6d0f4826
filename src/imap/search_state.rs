//! What SEARCH keeps between commands, shared by the sessions of a process: per mailbox,
//! which messages are encrypted; per message, its [`Doc`] — in memory, and in the
//! identity's persistent index ([`SearchIndex`], encrypted at rest) when configured.

use super::cache::Key;
use super::fetch::Selected;
use super::ImapContext;
use crate::pgp::View;
use crate::search::{Doc, SearchIndex};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Mailboxes whose classification is remembered (least recently used go first).
const CLASSIFIED_MAILBOXES: usize = 1024;
/// Bytes of Docs kept in memory, process-wide.
const DOC_CACHE_BYTES: usize = 64 << 20;

/// The mailbox a classification belongs to: (account, identity, mailbox, UIDVALIDITY).
pub(super) type MailboxKey = (Arc<str>, String, String, u32);

/// What is known of one mailbox: the UIDs seen up to `upto`, and which of them are shown
/// through a view. UIDs only grow and messages never change (RFC 3501 §2.3.1.1), so
/// this only ever grows too; an expunged UID stays listed, which is harmless (it
/// matches nothing upstream).
#[derive(Debug, Clone, Default)]
pub(super) struct Classified {
    pub upto: u32,
    pub all: BTreeSet<u32>,
    pub encrypted: BTreeSet<u32>,
}

/// Whether what a view shows is what the message will always show: decrypted, or plain.
/// A view cut short by a size budget, or of mail that could not be decrypted this time, is
/// not kept (SEARCH builds it again), so that a limit never becomes the message's text
/// for good.
pub fn lasting(view: &View) -> bool {
    matches!(
        view.kind,
        crate::pgp::ViewKind::Decrypted(_) | crate::pgp::ViewKind::Plain
    )
}

pub struct SearchState {
    classes: Mutex<lru::LruCache<MailboxKey, Classified>>,
    docs: Mutex<DocCache>,
    indexes: Option<Indexes>,
    /// Fills the indexes in the background for mailboxes clients select.
    filler: super::fill::Filler,
}

struct DocCache {
    map: lru::LruCache<Key, Arc<Doc>>,
    bytes: usize,
    max_bytes: usize,
}

/// The persistent indexes, one per (account, identity), opened on first use; at most
/// [`OPEN_INDEXES`] stay open (each holds its files decrypted in memory, a writer and
/// its threads), the least recently used closing first.
struct Indexes {
    dir: PathBuf,
    max_bytes: u64,
    /// Each opened once, outside the map's lock (opening reads and decrypts the whole
    /// index); `None`: it could not be opened (logged once); SEARCH decrypts instead.
    open: Mutex<lru::LruCache<String, Arc<OnceIndex>>>,
}

type OnceIndex = std::sync::OnceLock<Option<Arc<SearchIndex>>>;

/// Search indexes open at once, process-wide.
const OPEN_INDEXES: usize = 32;

impl Default for SearchState {
    fn default() -> SearchState {
        SearchState::new(DOC_CACHE_BYTES)
    }
}

impl SearchState {
    /// In memory only; `max_bytes`: the Docs kept.
    pub fn new(max_bytes: usize) -> SearchState {
        SearchState {
            classes: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(CLASSIFIED_MAILBOXES).expect("non-zero"),
            )),
            docs: Mutex::new(DocCache {
                map: lru::LruCache::unbounded(),
                bytes: 0,
                max_bytes,
            }),
            indexes: None,
            filler: super::fill::Filler::new(false),
        }
    }

    /// With a persistent index per identity under `dir`, each at most `max_bytes`;
    /// `fill`: filled in the background for the mailboxes clients select.
    pub fn with_index(dir: PathBuf, max_bytes: u64, fill: bool) -> SearchState {
        SearchState {
            indexes: Some(Indexes {
                dir,
                max_bytes,
                open: Mutex::new(lru::LruCache::new(
                    std::num::NonZeroUsize::new(OPEN_INDEXES).expect("non-zero"),
                )),
            }),
            filler: super::fill::Filler::new(fill),
            ..SearchState::default()
        }
    }

    pub(super) fn classified(&self, key: &MailboxKey) -> Classified {
        let mut classes = self.classes.lock().unwrap_or_else(|e| e.into_inner());
        classes.get(key).cloned().unwrap_or_default()
    }

    /// Adds what one job learned: `new` UIDs up to `upto`, of which `encrypted`.
    pub(super) fn learn(&self, key: MailboxKey, upto: u32, new: &[u32], encrypted: &[u32]) {
        let mut classes = self.classes.lock().unwrap_or_else(|e| e.into_inner());
        let entry = classes.get_or_insert_mut(key, Classified::default);
        entry.all.extend(new.iter().copied());
        entry.encrypted.extend(encrypted.iter().copied());
        entry.upto = entry.upto.max(upto);
    }

    /// Forgets the UIDs of a mailbox that no longer exist.
    pub(super) fn prune(&self, key: MailboxKey, alive: &BTreeSet<u32>) {
        let mut classes = self.classes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = classes.get_mut(&key) {
            entry.all.retain(|u| alive.contains(u));
            entry.encrypted.retain(|u| alive.contains(u));
        }
    }

    pub(super) fn filler(&self) -> &super::fill::Filler {
        &self.filler
    }

    /// The index of `identity` of the context's account (opened on first use, which
    /// reads the whole index: call off the protocol task); `None` without one.
    pub(super) fn index_of(&self, ctx: &ImapContext, identity: &str) -> Option<Arc<SearchIndex>> {
        self.index(ctx, &ctx.account, identity)
    }

    /// The index of the identity `key` names, opened on first use; `None` without one.
    fn index(&self, ctx: &ImapContext, account: &str, identity: &str) -> Option<Arc<SearchIndex>> {
        let indexes = self.indexes.as_ref()?;
        let name = format!("{account}\0{}", crate::keys::normalize_address(identity));
        let cell = {
            let mut open = indexes.open.lock().unwrap_or_else(|e| e.into_inner());
            match open.get(&name) {
                Some(cell) => cell.clone(),
                None => {
                    let cell = Arc::new(OnceIndex::new());
                    open.put(name.clone(), cell.clone());
                    cell
                }
            }
        };
        cell.get_or_init(|| {
            // The folder name tells nothing of the address.
            let digest = Sha256::digest(name.as_bytes());
            let folder: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            let dir = indexes.dir.join(folder);
            let id = ctx.loaded_identity(identity)?;
            match SearchIndex::open(&dir, &id, indexes.max_bytes) {
                Ok(index) => Some(Arc::new(index)),
                Err(e) => {
                    tracing::warn!(identity, error = %crate::error_chain(&e), "search index unavailable; SEARCH decrypts instead");
                    None
                }
            }
        })
        .clone()
    }

    /// What SEARCH reads of a view just built: kept in memory and in the index. Called
    /// beside the decryption, off the protocol task. A panic while reading the view is
    /// contained and logged: whoever built the view goes on with it (a FETCH job waits
    /// for it; the background fill has more to index).
    pub fn record(&self, ctx: &ImapContext, key: Key, view: &View) {
        if !lasting(view) {
            return;
        }
        let recorded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let doc = Arc::new(Doc::from_message(&view.bytes));
            if let Some(index) = self.index(ctx, &key.account, &key.identity) {
                if let Err(e) = index.put(&key.mailbox, key.uidvalidity, key.uid, &doc) {
                    tracing::warn!(error = %crate::error_chain(&e), "could not add to the search index");
                }
            }
            self.put_doc(key, doc);
        }));
        if recorded.is_err() {
            tracing::error!("reading a view for SEARCH failed");
        }
    }

    /// Makes what was added to the identity's index durable, on a thread of its own (a
    /// commit writes and syncs files).
    pub(super) fn commit(&self, ctx: &ImapContext, selected: &Selected) {
        if let Some(index) = self.index(ctx, &selected.account, &selected.identity) {
            std::thread::spawn(move || {
                if let Err(e) = index.commit() {
                    tracing::warn!(error = %crate::error_chain(&e), "could not commit the search index");
                }
            });
        }
    }

    /// The Docs of `uids` that the identity's persistent index holds (kept in memory
    /// from then on).
    pub(super) fn read_index(
        &self,
        ctx: &ImapContext,
        selected: &Selected,
        uids: &[u32],
    ) -> Vec<(u32, Arc<Doc>)> {
        if uids.is_empty() {
            return Vec::new();
        }
        let Some(index) = self.index(ctx, &selected.account, &selected.identity) else {
            return Vec::new();
        };
        let found = match index.get(&selected.mailbox, selected.uidvalidity, uids) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "could not read the search index");
                return Vec::new();
            }
        };
        found
            .into_iter()
            .map(|(uid, doc)| {
                let doc = Arc::new(doc);
                self.put_doc(selected.key(uid), doc.clone());
                (uid, doc)
            })
            .collect()
    }

    pub fn doc(&self, key: &Key) -> Option<Arc<Doc>> {
        let mut docs = self.docs.lock().unwrap_or_else(|e| e.into_inner());
        docs.map.get(key).cloned()
    }

    pub fn put_doc(&self, key: Key, doc: Arc<Doc>) {
        let cost = doc.cost();
        let mut docs = self.docs.lock().unwrap_or_else(|e| e.into_inner());
        if cost > docs.max_bytes {
            return;
        }
        if let Some(old) = docs.map.put(key, doc) {
            docs.bytes -= old.cost();
        }
        docs.bytes += cost;
        while docs.bytes > docs.max_bytes {
            match docs.map.pop_lru() {
                Some((_, old)) => docs.bytes -= old.cost(),
                None => break,
            }
        }
    }
}
