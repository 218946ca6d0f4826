//! The decrypted-view cache, shared by every IMAP session of the process.
//!
//! Keyed by (account, identity, mailbox, UIDVALIDITY, UID): a UID names one immutable message
//! for as long as UIDVALIDITY is unchanged (RFC 3501 §2.3.1.1), so an entry never goes
//! stale; a change of UIDVALIDITY simply stops matching. Bounded by total bytes, the
//! least recently used entries go first. Also remembers which messages need no view,
//! so repeated fetches of plain mail cost no extra round trip.

use crate::pgp::View;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// The `[[account]]` whose listener the session came in on.
    pub account: Arc<str>,
    pub identity: String,
    pub mailbox: String,
    pub uidvalidity: u32,
    pub uid: u32,
}

/// How a message is shown.
#[derive(Debug, Clone)]
pub enum Entry {
    /// Shown exactly as upstream has it.
    Plain,
    /// Needs a view, not built yet (classified ahead of its first fetch); `size`:
    /// RFC822.SIZE as stored (0 when not known).
    Special {
        size: u32,
    },
    /// Needs a view but is over `max_message_size`, and its stored form carries a status
    /// field: never shown (see `fetch::Class::Withheld`).
    Withheld,
    View(Arc<View>),
}

struct Inner {
    /// Unbounded by count: the byte bound below decides what goes, least recently
    /// used first, in O(1) per entry.
    map: lru::LruCache<Key, Entry>,
    bytes: usize,
}

pub struct ViewCache {
    inner: Mutex<Inner>,
    max_bytes: usize,
    max_entries: usize,
}

fn cost(e: &Entry) -> usize {
    match e {
        Entry::Plain | Entry::Special { .. } | Entry::Withheld => 64,
        Entry::View(v) => v.bytes.len() + 128,
    }
}

impl ViewCache {
    pub fn new(max_bytes: usize) -> ViewCache {
        ViewCache {
            inner: Mutex::new(Inner {
                map: lru::LruCache::unbounded(),
                bytes: 0,
            }),
            max_bytes,
            max_entries: 1_000_000,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &Key) -> Option<Entry> {
        self.lock().map.get(key).cloned()
    }

    /// Like [`ViewCache::get`], without making the entry recently used (for looking
    /// ahead).
    pub fn peek(&self, key: &Key) -> Option<Entry> {
        self.lock().map.peek(key).cloned()
    }

    pub fn insert(&self, key: Key, entry: Entry) {
        let c = cost(&entry);
        if c > self.max_bytes {
            return;
        }
        let mut inner = self.lock();
        if let Some(old) = inner.map.put(key, entry) {
            inner.bytes -= cost(&old);
        }
        inner.bytes += c;
        Self::evict(&mut inner, self.max_bytes, self.max_entries);
    }

    /// Inserts `entry` unless `key` has one already (whatever it is): a classification
    /// learnt ahead never replaces a view built meanwhile. Returns whether it did.
    pub fn insert_absent(&self, key: Key, entry: Entry) -> bool {
        let c = cost(&entry);
        if c > self.max_bytes {
            return false;
        }
        let mut inner = self.lock();
        if inner.map.peek(&key).is_some() {
            return false;
        }
        inner.map.put(key, entry);
        inner.bytes += c;
        Self::evict(&mut inner, self.max_bytes, self.max_entries);
        true
    }

    fn evict(inner: &mut Inner, max_bytes: usize, max_entries: usize) {
        while inner.bytes > max_bytes || inner.map.len() > max_entries {
            let Some((_, e)) = inner.map.pop_lru() else {
                break;
            };
            inner.bytes -= cost(&e);
        }
    }

    pub fn remove(&self, key: &Key) {
        let mut inner = self.lock();
        if let Some(e) = inner.map.pop(key) {
            inner.bytes -= cost(&e);
        }
    }

    /// Total bytes held (for tests and logs).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgp::ViewKind;

    fn key(uid: u32) -> Key {
        Key {
            account: "acct".into(),
            identity: "a@x".into(),
            mailbox: "INBOX".into(),
            uidvalidity: 7,
            uid,
        }
    }

    fn view(n: usize) -> Entry {
        Entry::View(Arc::new(View::new(
            vec![b'x'; n],
            ViewKind::Plain,
            Vec::new(),
        )))
    }

    #[test]
    fn bounded_by_bytes_least_recently_used_first() {
        let c = ViewCache::new(3000);
        c.insert(key(1), view(1000));
        c.insert(key(2), view(1000));
        assert!(c.get(&key(1)).is_some());
        c.insert(key(3), view(1000));
        assert!(c.get(&key(2)).is_none(), "2 was least recently used");
        assert!(c.get(&key(1)).is_some() && c.get(&key(3)).is_some());
        assert!(c.bytes() <= 3000);
        c.insert(key(4), view(5000));
        assert!(c.get(&key(4)).is_none(), "larger than the whole cache");
        let mut other = key(1);
        other.uidvalidity = 8;
        assert!(c.get(&other).is_none());
    }
}
