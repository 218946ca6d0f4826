//! The persistent full-text index of one identity's mail, encrypted at rest.
//!
//! For each message indexed (mailbox, UIDVALIDITY, UID) it keeps the message's [`Doc`]
//! and the words of its header fields and body, so that SEARCH over encrypted mail can
//! ask [`SearchIndex::candidates`] which messages may match instead of decrypting every
//! one. The files are tantivy's, written through [`SealedDirectory`], under a key sealed
//! to the identity's own OpenPGP certificate (`index_key`).
//!
//! IMAP matches a string as a case-insensitive substring (RFC 3501 §6.4.4), which no
//! word index answers exactly: [`SearchIndex::candidates`] gives a superset (see
//! `terms` for why it never misses), and the caller judges each candidate on its stored
//! [`Doc`].
//!
//! Commits: [`SearchIndex::put`] buffers; what it added is searchable and durable after
//! [`SearchIndex::commit`], which it also does by itself every [`COMMIT_EVERY`] puts and
//! when the index is dropped. `forget` and `remove_mailbox` commit at once (they are
//! rare, and a search must not see an expunged message as indexed).
//!
//! Bound: after each commit, while the folder holds more than `max_bytes`, the documents
//! indexed longest ago are deleted and their segments merged, aiming at three quarters
//! of the bound so that eviction does not run again at the next commit. Callers see
//! them missing from [`SearchIndex::indexed`] and fall back to reading those messages.
//! A merge briefly needs room for both the old and the new segment, and tantivy's own
//! background merges can overshoot the bound between commits.

use super::index_key;
use super::sealed_dir::{IndexCipher, SealedDirectory};
use super::terms::{self, header_prefix, header_terms, indexed_words, prefix_end};
use super::Doc;
use std::collections::{HashMap, HashSet};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use tantivy::indexer::IndexWriterOptions;
use tantivy::query::RangeQuery;
use tantivy::schema::{
    self, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, FAST, INDEXED, STORED,
    STRING,
};
use tantivy::tokenizer::{PreTokenizedString, Token};
use tantivy::{
    DocId, DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, SegmentReader, TantivyDocument,
    TantivyError, Term, TERMINATED,
};

/// Puts between automatic commits: a commit writes a segment and syncs, so indexing a
/// mailbox must not commit per message; a crash loses at most this many, which are
/// indexed again on the next search.
pub const COMMIT_EVERY: usize = 500;
/// tantivy's smallest indexing arena; one indexing thread, so this is the writer's memory.
const WRITER_MEMORY: usize = 15_000_000;
/// Names of the fast fields read back per segment.
const UID: &str = "uid";
const SEQ: &str = "seq";
/// Eviction rounds per commit (each deletes, commits and merges).
const EVICTION_ROUNDS: usize = 4;

/// Which text of a message a needle is looked for in (RFC 3501 §6.4.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// `BODY`: the body text.
    Body,
    /// `TEXT`: header fields (names and values) and body.
    Text,
    /// `HEADER name` (and `SUBJECT`, `FROM`, …): the values of the fields of that name.
    Header(String),
}

/// What went wrong with an index; every variant names what to do or where to look.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("search index folder {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the search index key {path} is not encrypted to this identity's key {fingerprint}: \
         the index belongs to another key; nothing was changed (move the folder away to \
         build a new index)"
    )]
    WrongIdentity { path: PathBuf, fingerprint: String },
    #[error(
        "the search index folder {dir} has index files but no {} key: move the folder away \
         to build a new index",
        index_key::KEY_FILE
    )]
    KeyMissing { dir: PathBuf },
    #[error("cannot decrypt the search index key {path}: {source}")]
    KeyUnreadable {
        path: PathBuf,
        #[source]
        source: crate::pgp::DecryptError,
    },
    #[error("the search index key {path} does not hold a 32-byte key")]
    KeyMalformed { path: PathBuf },
    #[error("cannot encrypt the search index key to {fingerprint}: {source}")]
    KeySeal {
        fingerprint: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the system gave no random bytes for the search index key")]
    Random,
    #[error("search index: {op} failed: {source}")]
    Tantivy {
        op: &'static str,
        #[source]
        source: TantivyError,
    },
    #[error("search index: a stored document does not decode: {source}")]
    StoredDoc {
        #[source]
        source: serde_json::Error,
    },
}

/// Maps a tantivy (or tantivy I/O) error of the operation `op`.
fn tv<E: Into<TantivyError>>(op: &'static str) -> impl FnOnce(E) -> IndexError {
    move |e| IndexError::Tantivy {
        op,
        source: e.into(),
    }
}

/// The schema's fields.
#[derive(Clone, Copy)]
struct Fields {
    /// `uidvalidity:uid:mailbox`, one term per message: replaces and forgets.
    key: schema::Field,
    /// `uidvalidity:mailbox`: which messages a query may return.
    scope: schema::Field,
    uid: schema::Field,
    /// Indexing order: the oldest go first when the index outgrows its bound.
    seq: schema::Field,
    /// Words of the body.
    body: schema::Field,
    /// `name\0word` for each word of each header field value, and `name\0` for each
    /// field: HEADER scans the terms of one name, TEXT all of them (names included).
    header: schema::Field,
    /// The [`Doc`] as JSON.
    doc: schema::Field,
}

impl Fields {
    fn schema() -> (Schema, Fields) {
        let words = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("raw")
                .set_index_option(IndexRecordOption::Basic)
                .set_fieldnorms(false),
        );
        let mut b = Schema::builder();
        let fields = Fields {
            key: b.add_text_field("key", STRING),
            scope: b.add_text_field("scope", STRING),
            uid: b.add_u64_field(UID, FAST),
            seq: b.add_u64_field(SEQ, FAST | INDEXED),
            body: b.add_text_field("body", words.clone()),
            header: b.add_text_field("header", words),
            doc: b.add_bytes_field("doc", STORED),
        };
        (b.build(), fields)
    }
}

fn key_term(f: &Fields, mailbox: &str, uidvalidity: u32, uid: u32) -> Term {
    Term::from_field_text(f.key, &format!("{uidvalidity}:{uid}:{mailbox}"))
}

fn scope_term(f: &Fields, mailbox: &str, uidvalidity: u32) -> Term {
    Term::from_field_text(f.scope, &format!("{uidvalidity}:{mailbox}"))
}

/// The writer and what it has not committed yet.
struct Writer {
    inner: IndexWriter<TantivyDocument>,
    /// Operations since the last commit.
    pending: usize,
    next_seq: u64,
}

/// One identity's search index (see the module documentation).
pub struct SearchIndex {
    root: PathBuf,
    reader: IndexReader,
    writer: Mutex<Writer>,
    fields: Fields,
    max_bytes: u64,
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex")
            .field("root", &self.root)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

impl SearchIndex {
    /// Opens the index in `dir` (created, mode 0700, when missing) for `identity`, whose
    /// secret keys unseal the index key. An index sealed to another key is refused and
    /// left as it is.
    pub fn open(
        dir: &Path,
        identity: &crate::keys::LoadedIdentity,
        max_bytes: u64,
    ) -> Result<SearchIndex, IndexError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| IndexError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        let cipher =
            IndexCipher::new(&index_key::load_or_create(dir, identity)?).map_err(|source| {
                IndexError::Io {
                    path: dir.to_path_buf(),
                    source,
                }
            })?;
        let (schema, fields) = Fields::schema();
        let index = Index::open_or_create(SealedDirectory::new(dir, cipher), schema)
            .map_err(tv("opening the index"))?;
        let options = IndexWriterOptions::builder()
            .memory_budget_per_thread(WRITER_MEMORY)
            .num_worker_threads(1)
            .num_merge_threads(1)
            .build();
        let inner = index
            .writer_with_options(options)
            .map_err(tv("opening the writer"))?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(tv("opening a reader"))?;
        let next_seq = last_seq(&reader)?.map_or(0, |s| s + 1);
        Ok(SearchIndex {
            root: dir.to_path_buf(),
            reader,
            writer: Mutex::new(Writer {
                inner,
                pending: 0,
                next_seq,
            }),
            fields,
            max_bytes,
        })
    }

    /// Indexes `doc` as the message `uid`, replacing what was indexed for it. Searchable
    /// after the next [`commit`](Self::commit) (one happens every [`COMMIT_EVERY`] puts).
    pub fn put(
        &self,
        mailbox: &str,
        uidvalidity: u32,
        uid: u32,
        doc: &Doc,
    ) -> Result<(), IndexError> {
        // Words are split before taking the writer, so concurrent puts overlap there.
        let mut document = self.document(mailbox, uidvalidity, uid, doc)?;
        let mut w = self.writer();
        document.add_u64(self.fields.seq, w.next_seq);
        w.inner
            .delete_term(key_term(&self.fields, mailbox, uidvalidity, uid));
        w.inner
            .add_document(document)
            .map_err(tv("adding a document"))?;
        w.next_seq += 1;
        w.pending += 1;
        if w.pending >= COMMIT_EVERY {
            self.commit_locked(&mut w)?;
        }
        Ok(())
    }

    /// Makes every put, forget and removal so far durable and searchable, then keeps the
    /// index within its bound.
    pub fn commit(&self) -> Result<(), IndexError> {
        let mut w = self.writer();
        if w.pending == 0 {
            return Ok(());
        }
        self.commit_locked(&mut w)
    }

    /// The stored [`Doc`]s of those of `uids` that are indexed.
    pub fn get(
        &self,
        mailbox: &str,
        uidvalidity: u32,
        uids: &[u32],
    ) -> Result<HashMap<u32, Doc>, IndexError> {
        let searcher = self.reader.searcher();
        let mut out = HashMap::with_capacity(uids.len());
        for &uid in uids {
            let term = key_term(&self.fields, mailbox, uidvalidity, uid);
            for (ord, segment) in searcher.segment_readers().iter().enumerate() {
                let Some(doc_id) = alive_docs(segment, &term)?.into_iter().next() else {
                    continue;
                };
                let address = tantivy::DocAddress::new(ord as u32, doc_id);
                let stored: TantivyDocument =
                    searcher.doc(address).map_err(tv("reading a document"))?;
                let bytes = stored
                    .get_first(self.fields.doc)
                    .and_then(|v| v.as_bytes())
                    .unwrap_or_default();
                let doc = serde_json::from_slice(bytes)
                    .map_err(|source| IndexError::StoredDoc { source })?;
                out.insert(uid, doc);
                break;
            }
        }
        Ok(out)
    }

    /// The UIDs indexed (and committed) in this mailbox at this UIDVALIDITY.
    pub fn indexed(&self, mailbox: &str, uidvalidity: u32) -> Result<HashSet<u32>, IndexError> {
        let searcher = self.reader.searcher();
        let scope = scope_term(&self.fields, mailbox, uidvalidity);
        let mut out = HashSet::new();
        for segment in searcher.segment_readers() {
            let docs = alive_docs(segment, &scope)?;
            out.extend(self.uids(segment, docs)?);
        }
        Ok(out)
    }

    /// A superset of the indexed messages whose `field` contains `needle` as a
    /// case-insensitive substring: those where each word of the needle is inside a word
    /// of the field. A needle without words gives every indexed message.
    pub fn candidates(
        &self,
        mailbox: &str,
        uidvalidity: u32,
        needle: &str,
        field: Field,
    ) -> Result<HashSet<u32>, IndexError> {
        let needles = terms::needle_words(needle);
        let searcher = self.reader.searcher();
        let scope = scope_term(&self.fields, mailbox, uidvalidity);
        let mut out = HashSet::new();
        for segment in searcher.segment_readers() {
            let mut docs: HashSet<DocId> = alive_docs(segment, &scope)?.into_iter().collect();
            for word in &needles {
                if docs.is_empty() {
                    break;
                }
                let hits = self.docs_containing(segment, word, &field)?;
                docs.retain(|d| hits.contains(d));
            }
            out.extend(self.uids(segment, docs)?);
        }
        Ok(out)
    }

    /// Forgets everything indexed for this mailbox at this UIDVALIDITY (it changed, so
    /// the UIDs now name other messages).
    pub fn remove_mailbox(&self, mailbox: &str, uidvalidity: u32) -> Result<(), IndexError> {
        let mut w = self.writer();
        w.inner
            .delete_term(scope_term(&self.fields, mailbox, uidvalidity));
        w.pending += 1;
        self.commit_locked(&mut w)
    }

    /// Forgets these messages (expunged).
    pub fn forget(&self, mailbox: &str, uidvalidity: u32, uids: &[u32]) -> Result<(), IndexError> {
        if uids.is_empty() {
            return Ok(());
        }
        let mut w = self.writer();
        for &uid in uids {
            w.inner
                .delete_term(key_term(&self.fields, mailbox, uidvalidity, uid));
        }
        w.pending += uids.len();
        self.commit_locked(&mut w)
    }

    /// Bytes of the index's files on disk (sealed segments, metadata, key, locks).
    pub fn bytes_on_disk(&self) -> Result<u64, IndexError> {
        let io = |source| IndexError::Io {
            path: self.root.clone(),
            source,
        };
        let mut total = 0;
        for entry in std::fs::read_dir(&self.root).map_err(io)? {
            let meta = entry.map_err(io)?.metadata().map_err(io)?;
            if meta.is_file() {
                total += meta.len();
            }
        }
        Ok(total)
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        // A panic while holding the writer leaves at worst uncommitted operations, which
        // tantivy discards or commits whole.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn commit_locked(&self, w: &mut Writer) -> Result<(), IndexError> {
        w.inner.commit().map_err(tv("commit"))?;
        w.pending = 0;
        self.reader.reload().map_err(tv("reloading the reader"))?;
        self.keep_bound(w)
    }

    /// Deletes the oldest-indexed documents while the folder is over the bound (see the
    /// module documentation).
    fn keep_bound(&self, w: &mut Writer) -> Result<(), IndexError> {
        for _ in 0..EVICTION_ROUNDS {
            let bytes = self.bytes_on_disk()?;
            if bytes <= self.max_bytes {
                return Ok(());
            }
            let mut seqs = self.alive_seqs()?;
            if seqs.is_empty() {
                break;
            }
            // Deleted documents still take room until their segment is merged, so the
            // share to delete is estimated again after each round's merge.
            let target = self.max_bytes / 4 * 3;
            let share = (bytes - target) as f64 / bytes as f64;
            let count = ((seqs.len() as f64 * share).ceil() as usize).clamp(1, seqs.len());
            let (_, cutoff, _) = seqs.select_nth_unstable(count - 1);
            let cutoff = *cutoff;
            tracing::debug!(
                bytes,
                max = self.max_bytes,
                count,
                "search index over its bound"
            );
            let oldest = RangeQuery::new(
                std::ops::Bound::Unbounded,
                std::ops::Bound::Included(Term::from_field_u64(self.fields.seq, cutoff)),
            );
            w.inner
                .delete_query(Box::new(oldest))
                .map_err(tv("deleting the oldest"))?;
            w.inner.commit().map_err(tv("commit"))?;
            if !self.merge_deletes(w)? {
                break;
            }
        }
        Ok(())
    }

    /// Rewrites the segments that hold deleted documents and removes the files no longer
    /// used; false when tantivy is already merging them (its own merge will do).
    fn merge_deletes(&self, w: &mut Writer) -> Result<bool, IndexError> {
        self.reader.reload().map_err(tv("reloading the reader"))?;
        let ids: Vec<_> = self
            .reader
            .searcher()
            .segment_readers()
            .iter()
            .filter(|s| s.has_deletes())
            .map(SegmentReader::segment_id)
            .collect();
        if ids.is_empty() {
            return Ok(true);
        }
        if let Err(e) = w.inner.merge(&ids).wait() {
            tracing::debug!(error = %e, "search index: merge deferred");
            return Ok(false);
        }
        self.reader.reload().map_err(tv("reloading the reader"))?;
        w.inner
            .garbage_collect_files()
            .wait()
            .map_err(tv("removing unused files"))?;
        Ok(true)
    }

    fn alive_seqs(&self) -> Result<Vec<u64>, IndexError> {
        let searcher = self.reader.searcher();
        let mut seqs = Vec::new();
        for segment in searcher.segment_readers() {
            let column = segment
                .fast_fields()
                .u64(SEQ)
                .map_err(tv("reading the order"))?;
            seqs.extend(segment.doc_ids_alive().filter_map(|d| column.first(d)));
        }
        Ok(seqs)
    }

    /// The UIDs of `docs` in `segment`.
    fn uids(
        &self,
        segment: &SegmentReader,
        docs: impl IntoIterator<Item = DocId>,
    ) -> Result<Vec<u32>, IndexError> {
        let column = segment.fast_fields().u64(UID).map_err(tv("reading UIDs"))?;
        Ok(docs
            .into_iter()
            .filter_map(|d| column.first(d))
            .filter_map(|u| u32::try_from(u).ok())
            .collect())
    }

    /// The documents of `segment` (deleted ones included) with a term of `field` that
    /// contains `word`.
    fn docs_containing(
        &self,
        segment: &SegmentReader,
        word: &str,
        field: &Field,
    ) -> Result<HashSet<DocId>, IndexError> {
        let finder = memchr::memmem::Finder::new(word.as_bytes());
        let mut hits = HashSet::new();
        match field {
            Field::Body => scan(segment, self.fields.body, &[], &finder, &mut hits)?,
            Field::Text => {
                scan(segment, self.fields.body, &[], &finder, &mut hits)?;
                scan(segment, self.fields.header, &[], &finder, &mut hits)?;
            }
            Field::Header(name) => {
                let prefix = header_prefix(name);
                scan(segment, self.fields.header, &prefix, &finder, &mut hits)?;
            }
        }
        Ok(hits)
    }

    /// The tantivy document for one message, but for its indexing order (`seq`).
    fn document(
        &self,
        mailbox: &str,
        uidvalidity: u32,
        uid: u32,
        doc: &Doc,
    ) -> Result<TantivyDocument, IndexError> {
        let f = &self.fields;
        let mut d = TantivyDocument::new();
        d.add_text(f.key, format!("{uidvalidity}:{uid}:{mailbox}"));
        d.add_text(f.scope, format!("{uidvalidity}:{mailbox}"));
        d.add_u64(f.uid, u64::from(uid));
        d.add_pre_tokenized_text(f.body, tokens(indexed_words(&doc.body)));
        let header = header_terms(&doc.fields);
        d.add_pre_tokenized_text(f.header, tokens(header));
        let json = serde_json::to_vec(doc).map_err(|source| IndexError::StoredDoc { source })?;
        d.add_bytes(f.doc, &json);
        Ok(d)
    }
}

impl Drop for SearchIndex {
    /// Commits what was put since the last commit, so a clean shutdown loses nothing.
    fn drop(&mut self) {
        let w = self.writer.get_mut().unwrap_or_else(|p| p.into_inner());
        if w.pending > 0 {
            if let Err(e) = w.inner.commit() {
                tracing::warn!(error = %e, "search index: the last commit failed");
            }
        }
    }
}

/// The highest indexing order number in the index, to go on from after a restart.
fn last_seq(reader: &IndexReader) -> Result<Option<u64>, IndexError> {
    let mut last = None;
    for segment in reader.searcher().segment_readers() {
        if segment.num_docs() == 0 {
            continue;
        }
        let column = segment
            .fast_fields()
            .u64(SEQ)
            .map_err(tv("reading the order"))?;
        last = last.max(Some(column.max_value()));
    }
    Ok(last)
}

/// The live documents of `segment` that have `term`.
fn alive_docs(segment: &SegmentReader, term: &Term) -> Result<Vec<DocId>, IndexError> {
    let index = segment
        .inverted_index(term.field())
        .map_err(tv("reading the index"))?;
    let Some(mut postings) = index
        .read_postings(term, IndexRecordOption::Basic)
        .map_err(tv("reading the index"))?
    else {
        return Ok(Vec::new());
    };
    let mut docs = Vec::new();
    let mut doc = postings.doc();
    while doc != TERMINATED {
        if !segment.is_deleted(doc) {
            docs.push(doc);
        }
        doc = postings.advance();
    }
    Ok(docs)
}

/// Adds to `hits` the documents of `segment` having a term of `field` that starts with
/// `prefix` and contains the finder's word after it.
fn scan(
    segment: &SegmentReader,
    field: schema::Field,
    prefix: &[u8],
    finder: &memchr::memmem::Finder<'_>,
    hits: &mut HashSet<DocId>,
) -> Result<(), IndexError> {
    let index = segment
        .inverted_index(field)
        .map_err(tv("reading the index"))?;
    let mut range = index.terms().range();
    if !prefix.is_empty() {
        range = range.ge(prefix).lt(prefix_end(prefix));
    }
    let mut terms = range.into_stream().map_err(tv("reading the terms"))?;
    while terms.advance() {
        if finder.find(&terms.key()[prefix.len()..]).is_none() {
            continue;
        }
        let mut postings = index
            .read_postings_from_terminfo(terms.value(), IndexRecordOption::Basic)
            .map_err(tv("reading the index"))?;
        let mut doc = postings.doc();
        while doc != TERMINATED {
            hits.insert(doc);
            doc = postings.advance();
        }
    }
    Ok(())
}

/// `terms` as tantivy's pre-tokenized text (the terms are indexed as they are).
fn tokens(terms: HashSet<String>) -> PreTokenizedString {
    let tokens = terms
        .into_iter()
        .enumerate()
        .map(|(position, text)| Token {
            position,
            text,
            ..Token::default()
        })
        .collect();
    PreTokenizedString {
        text: String::new(),
        tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::LoadedIdentity;
    use openpgp::cert::CertBuilder;
    use sequoia_openpgp as openpgp;

    fn identity() -> LoadedIdentity {
        let (cert, _) = CertBuilder::general_purpose(Some("<a@example.com>"))
            .generate()
            .unwrap();
        let decryptors = cert
            .keys()
            .secret()
            .with_policy(&crate::keys::POLICY, None)
            .for_storage_encryption()
            .map(|k| k.key().clone().into_keypair().unwrap())
            .collect();
        LoadedIdentity {
            address: "a@example.com".into(),
            login: "a@example.com".into(),
            cert: cert.strip_secret_key_material(),
            signer: None,
            decryptors,
        }
    }

    fn doc(word: &str) -> Doc {
        Doc {
            fields: vec![("Subject".into(), format!("about {word}"))],
            body: word.into(),
            ..Doc::default()
        }
    }

    #[test]
    fn puts_show_after_a_commit_and_commit_by_themselves_every_commit_every() {
        let tmp = tempfile::tempdir().unwrap();
        let index = SearchIndex::open(tmp.path(), &identity(), u64::MAX).unwrap();
        index.put("INBOX", 1, 1, &doc("first")).unwrap();
        assert!(index.indexed("INBOX", 1).unwrap().is_empty());
        index.commit().unwrap();
        assert_eq!(index.indexed("INBOX", 1).unwrap(), HashSet::from([1]));
        for uid in 2..=COMMIT_EVERY as u32 {
            index.put("INBOX", 1, uid, &doc("more")).unwrap();
        }
        assert_eq!(index.indexed("INBOX", 1).unwrap().len(), 1);
        index.put("INBOX", 1, 9999, &doc("last")).unwrap();
        assert_eq!(index.indexed("INBOX", 1).unwrap().len(), COMMIT_EVERY + 1);
        assert_eq!(index.writer().pending, 0);
    }

    #[test]
    fn the_indexing_order_goes_on_after_a_restart() {
        let tmp = tempfile::tempdir().unwrap();
        let id = identity();
        let index = SearchIndex::open(tmp.path(), &id, u64::MAX).unwrap();
        assert_eq!(index.writer().next_seq, 0);
        for uid in 1..=3 {
            index.put("INBOX", 1, uid, &doc("x")).unwrap();
        }
        // A replaced message takes a new place in the order.
        index.put("INBOX", 1, 1, &doc("y")).unwrap();
        drop(index);
        let index = SearchIndex::open(tmp.path(), &id, u64::MAX).unwrap();
        assert_eq!(index.writer().next_seq, 4);
        let mut seqs = index.alive_seqs().unwrap();
        seqs.sort_unstable();
        assert_eq!(seqs, [1, 2, 3]);
    }
}
