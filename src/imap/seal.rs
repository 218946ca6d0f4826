//! `sealpost seal`: the mail already stored at the provider, converted into sealed
//! copies (see [`crate::pgp::stored`]) that only the identity's key opens.
//!
//! Nothing may be lost, so each message goes through the same steps, and the original
//! is removed only at the end: fetch it; seal it; APPEND the copy with the same flags
//! and INTERNALDATE; fetch the copy back by its APPENDUID (RFC 4315) and check that it
//! opens to exactly the original bytes; only then mark the original `\Deleted` and
//! remove it with `UID EXPUNGE` of that one UID (never a plain EXPUNGE, which would also
//! remove what the user marked deleted). A server without UIDPLUS is refused.
//!
//! A run stopped anywhere (killed, connection cut, quota full) leaves each message as it
//! was, or as it was plus a verified copy. Every copy records the SHA-256 of its
//! original, so the next run first opens the copies already in the mailbox and, for an
//! original whose copy exists, only finishes the removal: nothing is copied twice.

use super::client::{Client, ClientError, Reply};
use super::server::ImapUpstream;
use crate::keys::LoadedIdentity;
use imap_types::command::CommandBody;
use imap_types::core::Vec1;
use imap_types::fetch::MessageDataItem;
use imap_types::flag::{Flag, FlagFetch};
use imap_types::response::{Code, Data, Response};
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("login as {login} refused by the server: {reply}")]
    Login { login: String, reply: String },
    #[error("the server does not offer UIDPLUS (RFC 4315); without it sealpost cannot remove exactly the one original it copied, so it changes nothing")]
    NoUidPlus,
    #[error("the server refused to store a sealed copy in {mailbox} ({reply}); the originals are untouched. About {needed} more bytes of quota are needed to seal the rest")]
    Quota {
        mailbox: String,
        reply: String,
        needed: u64,
    },
}

/// What to seal.
pub struct SealJob<'a> {
    pub identity: &'a LoadedIdentity,
    pub login: String,
    pub password: String,
    pub mailboxes: Vec<String>,
    /// Only messages stored before this day (IMAP date, e.g. `1-Feb-2026`).
    pub before: Option<String>,
    pub dry_run: bool,
    pub max_message_size: usize,
    /// The reverse: sealed copies back to the originals (`sealpost unseal`).
    pub unseal: bool,
}

/// What a run did, per mailbox and in all.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Messages replaced by a verified sealed copy (with `dry_run`: that would be).
    pub sealed: usize,
    /// Messages already encrypted (sealed copies included), left as they are.
    pub already_encrypted: usize,
    /// Originals of copies an earlier run made, now removed.
    pub finished: usize,
    /// Messages left as they were, with the reason.
    pub failed: Vec<String>,
}

impl Summary {
    fn add(&mut self, other: &Summary) {
        self.sealed += other.sealed;
        self.already_encrypted += other.already_encrypted;
        self.finished += other.finished;
        self.failed.extend(other.failed.iter().cloned());
    }
}

/// What a run reports as it goes.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// `mailbox` holds `messages` plain messages of `bytes` in all to look at.
    Started {
        mailbox: &'a str,
        messages: usize,
        bytes: u64,
    },
    /// So many of them looked at (sealed, found encrypted, finished or failed).
    Batch {
        mailbox: &'a str,
        done: usize,
        bytes_done: u64,
    },
    /// The mailbox is done.
    Finished {
        mailbox: &'a str,
        summary: &'a Summary,
        unseal: bool,
    },
}

impl Progress<'_> {
    /// The plain line for a log or a pipe: one per mailbox, when it is done.
    pub fn line(&self) -> Option<String> {
        let Progress::Finished {
            mailbox,
            summary: s,
            unseal,
        } = self
        else {
            return None;
        };
        let (done, other) = if *unseal {
            ("unsealed", "other encrypted")
        } else {
            ("sealed", "already encrypted")
        };
        Some(format!(
            "{mailbox}: {} {done}, {} {other}, {} finished from an earlier run, {} failed",
            s.sealed,
            s.already_encrypted,
            s.finished,
            s.failed.len()
        ))
    }
}

/// One message as fetched.
pub(super) struct Stored {
    pub(super) uid: u32,
    flags: Vec<Flag<'static>>,
    date: Option<imap_types::datetime::DateTime>,
    pub(super) raw: Vec<u8>,
}

/// Seals the job's mailboxes; `progress` hears of each mailbox and batch.
pub async fn run(
    up: &ImapUpstream,
    job: &SealJob<'_>,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<Summary, SealError> {
    let mut c = Client::connect(up, job.max_message_size).await?;
    let login = CommandBody::login(job.login.as_str(), job.password.as_str())
        .map_err(|e| ClientError::Command(format!("login name or password: {e:?}")))?;
    let r = c.run(login).await?;
    if !r.ok() {
        return Err(SealError::Login {
            login: job.login.clone(),
            reply: r.text,
        });
    }
    let caps = c.run_text("CAPABILITY").await?;
    let offers = |name: &str| caps.lists_capability(name);
    if !offers("UIDPLUS") {
        return Err(SealError::NoUidPlus);
    }
    // RFC 3502: a batch's copies in one APPEND (one transaction at the server);
    // RFC 7888: with LITERAL+ its messages go out without waiting for `+`.
    let append = Appending {
        literal_plus: offers("LITERAL+"),
        multi: offers("MULTIAPPEND"),
    };
    let mut total = Summary::default();
    for mailbox in &job.mailboxes {
        let s = if job.unseal {
            unseal_mailbox(&mut c, job, mailbox).await?
        } else {
            seal_mailbox(&mut c, job, mailbox, append, progress).await?
        };
        progress(&Progress::Finished {
            mailbox,
            summary: &s,
            unseal: job.unseal,
        });
        total.add(&s);
    }
    let _ = c.run_text("LOGOUT").await;
    Ok(total)
}

async fn seal_mailbox(
    c: &mut Client,
    job: &SealJob<'_>,
    mailbox: &str,
    append: Appending,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<Summary, SealError> {
    let mut summary = Summary::default();
    let (plain, encrypted) = match open_mailbox(c, job, mailbox).await? {
        Ok(split) => split,
        Err(why) => {
            summary.failed.push(why);
            return Ok(summary);
        }
    };
    // The copies already here, by the digest of their originals.
    let mut copies: HashMap<String, u32> = HashMap::new();
    for batch in encrypted.chunks(BATCH) {
        for m in fetch(c, batch).await? {
            summary.already_encrypted += 1;
            if let Some(original) = own_copy(job, &m.raw) {
                copies.insert(crate::pgp::stored::digest(&original), m.uid);
            }
        }
    }
    let sizes = sizes(c, &plain).await?;
    let mut left: u64 = sizes.values().sum();
    let bytes_total = left;
    progress(&Progress::Started {
        mailbox,
        messages: plain.len(),
        bytes: bytes_total,
    });
    // Rounds overlap: while round k is sealed on other threads, the connection fetches
    // round k+1 and stores and fetches back round k; round k's copies are checked while
    // round k+1 is sealed. Only what a check passed is removed.
    let crypto = std::sync::Arc::new(Crypto::of(job));
    let rounds = batches(&plain, &sizes);
    let mut next = match rounds.first() {
        Some(first) => fetch(c, first).await?,
        None => Vec::new(),
    };
    let mut checking: Option<Checking> = None;
    let mut done = 0usize;
    for (k, round) in rounds.iter().enumerate() {
        let mut remove_uids = Vec::new();
        let mut todo = Vec::new();
        for m in std::mem::take(&mut next) {
            left = left.saturating_sub(sizes.get(&m.uid).copied().unwrap_or(0));
            if crate::pgp::is_encrypted(&m.raw) {
                summary.already_encrypted += 1;
                continue;
            }
            let digest = crate::pgp::stored::digest(&m.raw);
            if copies.contains_key(&digest) {
                // An earlier run made and verified the copy: only the removal is left.
                remove_uids.push(m.uid);
                summary.finished += 1;
                continue;
            }
            if job.dry_run {
                summary.sealed += 1;
                continue;
            }
            todo.push((m, digest));
        }
        let todo = std::sync::Arc::new(todo);
        let sealing = (!job.dry_run).then(|| {
            let (crypto, todo) = (crypto.clone(), todo.clone());
            tokio::task::spawn_blocking(move || crypto.seal_all(&todo))
        });
        if let Some(following) = rounds.get(k + 1) {
            next = fetch(c, following).await?;
        }
        if job.dry_run {
            continue;
        }
        let sealed = joined(sealing.expect("sealing when not a dry run").await);
        let stored = store_all(c, mailbox, &todo, sealed, append).await?;
        let copy_uids: Vec<u32> = stored
            .iter()
            .filter_map(|s| s.as_ref().ok().copied())
            .collect();
        let back = fetch(c, &copy_uids).await?;
        // The round before is checked by now (or nearly): its originals go.
        if let Some(before) = checking.take() {
            let report = before.progress(mailbox, bytes_total);
            before.finish(c, mailbox, &mut summary, &mut copies).await?;
            progress(&report);
        }
        let quota = stored.iter().find_map(|r| match r {
            Err(Refused::Quota(reply)) => Some(reply.clone()),
            _ => None,
        });
        for ((m, _), r) in todo.iter().zip(&stored) {
            if matches!(r, Err(Refused::Quota(_))) {
                left += m.raw.len() as u64;
            }
        }
        let check = {
            let (crypto, todo) = (crypto.clone(), todo.clone());
            let stored: Vec<Option<u32>> =
                stored.iter().map(|r| r.as_ref().ok().copied()).collect();
            let back: HashMap<u32, Vec<u8>> = back.into_iter().map(|m| (m.uid, m.raw)).collect();
            tokio::task::spawn_blocking(move || crypto.check_all(&todo, &stored, &back))
        };
        let failures: Vec<String> = todo
            .iter()
            .zip(&stored)
            .filter_map(|((m, _), r)| match r {
                Err(Refused::Other(why)) => Some(format!("{mailbox} UID {}: {why}", m.uid)),
                _ => None,
            })
            .collect();
        checking = Some(Checking {
            todo,
            stored: stored.into_iter().map(|r| r.ok()).collect(),
            check,
            remove_uids,
            failures,
            done: done + round.len(),
            left,
        });
        if let Some(reply) = quota {
            if let Some(last) = checking.take() {
                last.finish(c, mailbox, &mut summary, &mut copies).await?;
            }
            return Err(SealError::Quota {
                mailbox: mailbox.to_string(),
                reply,
                // Armor makes a copy about 4/3 of its original, plus headers.
                needed: left * 14 / 10,
            });
        }
        done += round.len();
    }
    if let Some(last) = checking.take() {
        let report = last.progress(mailbox, bytes_total);
        last.finish(c, mailbox, &mut summary, &mut copies).await?;
        progress(&report);
    }
    Ok(summary)
}

/// A round whose copies are stored and being checked on other threads.
struct Checking {
    todo: std::sync::Arc<Vec<(Stored, String)>>,
    /// Each copy's UID, or `None` when it was not stored.
    stored: Vec<Option<u32>>,
    check: tokio::task::JoinHandle<Vec<bool>>,
    /// Originals an earlier run copied.
    remove_uids: Vec<u32>,
    failures: Vec<String>,
    /// Messages of the mailbox done, and bytes left, after this round.
    done: usize,
    left: u64,
}

impl Checking {
    /// Where the mailbox stands once this round is finished.
    fn progress<'m>(&self, mailbox: &'m str, bytes_total: u64) -> Progress<'m> {
        Progress::Batch {
            mailbox,
            done: self.done,
            bytes_done: bytes_total.saturating_sub(self.left),
        }
    }

    /// Waits for the checks and removes the originals whose copies passed.
    async fn finish(
        self,
        c: &mut Client,
        mailbox: &str,
        summary: &mut Summary,
        copies: &mut HashMap<String, u32>,
    ) -> Result<(), SealError> {
        let verified = joined(self.check.await);
        let mut remove_uids = self.remove_uids;
        summary.failed.extend(self.failures);
        for (((m, digest), copy), verified) in self.todo.iter().zip(self.stored).zip(verified) {
            let Some(copy) = copy else { continue };
            if verified {
                remove_uids.push(m.uid);
                copies.insert(digest.clone(), copy);
                summary.sealed += 1;
            } else {
                summary.failed.push(format!(
                    "{mailbox} UID {}: the stored copy (UID {copy}) did not open to the original; original kept",
                    m.uid
                ));
            }
        }
        remove(c, &remove_uids).await
    }
}

/// What a blocking task returned; a panic there is a panic here.
fn joined<T>(r: Result<T, tokio::task::JoinError>) -> T {
    r.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// The identity's keys, shared with the threads that seal and check.
struct Crypto {
    cert: sequoia_openpgp::Cert,
    signer: Option<sequoia_openpgp::crypto::KeyPair>,
    decryptors: Vec<sequoia_openpgp::crypto::KeyPair>,
    max_message_size: usize,
}

impl Crypto {
    fn of(job: &SealJob<'_>) -> Crypto {
        Crypto {
            cert: job.identity.cert.clone(),
            signer: job.identity.signer.clone(),
            decryptors: job.identity.decryptors.clone(),
            max_message_size: job.max_message_size,
        }
    }

    /// Seals each message, on all cores.
    fn seal_all(&self, todo: &[(Stored, String)]) -> Vec<Result<Vec<u8>, String>> {
        par_map(todo, |(m, _)| {
            let boundary = crate::pgp::random_boundary();
            crate::pgp::stored::seal(&m.raw, &self.cert, self.signer.as_ref(), &boundary)
                .map_err(|e| e.to_string())
        })
    }

    /// Whether each stored copy (fetched `back`) opens to its original, on all cores.
    fn check_all(
        &self,
        todo: &[(Stored, String)],
        stored: &[Option<u32>],
        back: &HashMap<u32, Vec<u8>>,
    ) -> Vec<bool> {
        let items: Vec<(&Stored, Option<u32>)> = todo
            .iter()
            .map(|(m, _)| m)
            .zip(stored.iter().copied())
            .collect();
        par_map(&items, |(m, copy)| {
            copy.and_then(|uid| back.get(&uid))
                .and_then(|raw| {
                    crate::pgp::own_copy(raw, &self.decryptors, &self.cert, self.max_message_size)
                })
                .is_some_and(|original| original == m.raw)
        })
    }
}

/// Selects `mailbox` and splits the UIDs the job covers into (plain, encrypted), by
/// the server's own search for PGP/MIME; `Ok(Err(why))` when it cannot be selected.
async fn open_mailbox(
    c: &mut Client,
    job: &SealJob<'_>,
    mailbox: &str,
) -> Result<Result<(Vec<u32>, Vec<u32>), String>, SealError> {
    let select = CommandBody::select(mailbox)
        .map_err(|e| ClientError::Command(format!("mailbox {mailbox:?}: {e:?}")))?;
    let r = c.run(select).await?;
    if !r.ok() {
        return Ok(Err(format!("{mailbox}: cannot select it ({})", r.text)));
    }
    let range = match &job.before {
        Some(d) => format!("BEFORE {d}"),
        None => "ALL".into(),
    };
    let all = search(c, &format!("UID SEARCH {range}")).await?;
    let encrypted = search(
        c,
        &format!("UID SEARCH {range} HEADER Content-Type \"multipart/encrypted\""),
    )
    .await?;
    let set: std::collections::HashSet<u32> = encrypted.iter().copied().collect();
    let plain = all.into_iter().filter(|u| !set.contains(u)).collect();
    Ok(Ok((plain, encrypted)))
}

/// Messages per round of fetch, seal, store, verify and remove.
const BATCH: usize = 25;
/// Messages per round of sealing, and their bytes at most (a round holds each
/// original, its copy and the copy fetched back in memory).
const SEAL_BATCH: usize = 100;
const SEAL_BATCH_BYTES: u64 = 8 << 20;

/// `uids` cut into rounds of at most [`SEAL_BATCH`] messages and [`SEAL_BATCH_BYTES`]
/// (a larger message is a round of its own).
pub(super) fn batches<'u>(uids: &'u [u32], sizes: &HashMap<u32, u64>) -> Vec<&'u [u32]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, uid) in uids.iter().enumerate() {
        let size = sizes.get(uid).copied().unwrap_or(0);
        if i > start && (i - start == SEAL_BATCH || bytes + size > SEAL_BATCH_BYTES) {
            out.push(&uids[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < uids.len() {
        out.push(&uids[start..]);
    }
    out
}

/// How the server takes APPENDs.
#[derive(Clone, Copy)]
struct Appending {
    literal_plus: bool,
    multi: bool,
}

/// `f` over `items` on all cores, results in order (called on a blocking thread).
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = items.len().div_ceil(threads).max(1);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(per)
            .map(|chunk| scope.spawn(move || chunk.iter().map(f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// APPENDs each sealed copy with its original's flags and INTERNALDATE: in one
/// MULTIAPPEND when the server has it, else all sent at once with LITERAL+, else one
/// by one. The copy's UID (APPENDUID) or why not.
async fn store_all(
    c: &mut Client,
    mailbox: &str,
    todo: &[(Stored, String)],
    sealed: Vec<Result<Vec<u8>, String>>,
    append: Appending,
) -> Result<Vec<Result<u32, Refused>>, SealError> {
    fn literal<'b>(
        bytes: impl TryInto<imap_types::core::Literal<'b>, Error: std::fmt::Debug>,
        append: Appending,
    ) -> Result<imap_types::core::Literal<'b>, ClientError> {
        let l = bytes
            .try_into()
            .map_err(|e| ClientError::Command(format!("sealed message: {e:?}")))?;
        Ok(if append.literal_plus {
            l.into_non_sync()
        } else {
            l
        })
    }
    if append.multi && todo.len() > 1 {
        let mut messages = Vec::new();
        let mut out: Vec<Option<Result<u32, Refused>>> = Vec::new();
        for ((m, _), sealed) in todo.iter().zip(&sealed) {
            match sealed {
                Ok(s) => {
                    messages.push((
                        m.flags.clone(),
                        m.date.clone(),
                        literal(s.as_slice(), append)?,
                    ));
                    out.push(None);
                }
                Err(e) => out.push(Some(Err(Refused::Other(format!("cannot encrypt: {e}"))))),
            }
        }
        let n = messages.len();
        if n == 0 {
            return Ok(out.into_iter().flatten().collect());
        }
        // `None`: the mailbox name cannot go into a joined command (nothing was sent).
        if let Some(r) = c.multi_append(mailbox, messages).await? {
            if r.ok() {
                // Stored. Without one UID per copy no original can go now; the next
                // run finds the copies by their digests and finishes.
                let uids = appended_all(&r, n);
                let mut uids = uids.iter().flatten().copied();
                return Ok(out
                    .into_iter()
                    .map(|o| {
                        o.unwrap_or_else(|| {
                            uids.next().ok_or_else(|| {
                                Refused::Other(
                                    "stored, but the server named no UID for the copy; original kept (the next run finishes it)".into(),
                                )
                            })
                        })
                    })
                    .collect());
            }
            if let Refused::Quota(reply) = refusal(&r) {
                return Ok(out
                    .into_iter()
                    .map(|o| o.unwrap_or_else(|| Err(Refused::Quota(reply.clone()))))
                    .collect());
            }
            // Nothing was stored: one by one, so that one bad message keeps only itself.
        }
    }
    let mut out: Vec<Option<Result<u32, Refused>>> = Vec::new();
    let mut sent = Vec::new();
    for ((m, _), sealed) in todo.iter().zip(sealed) {
        let sealed = match sealed {
            Ok(s) => s,
            Err(e) => {
                out.push(Some(Err(Refused::Other(format!("cannot encrypt: {e}")))));
                continue;
            }
        };
        let command = CommandBody::append(
            mailbox,
            m.flags.clone(),
            m.date.clone(),
            literal(sealed, append)?,
        )
        .map_err(|e| ClientError::Command(format!("APPEND to {mailbox:?}: {e:?}")))?;
        if append.literal_plus {
            sent.push((out.len(), c.send(command).await?));
            out.push(None);
        } else {
            out.push(Some(appended(&c.run(command).await?)));
        }
    }
    for (i, tag) in sent {
        out[i] = Some(appended(&c.finish(&tag).await?));
    }
    Ok(out.into_iter().flatten().collect())
}

/// The copies' UIDs from a successful MULTIAPPEND's reply, in the order of the
/// messages (RFC 4315 §3: `APPENDUID validity uid-set`); `None` unless there is exactly
/// one per message.
fn appended_all(r: &Reply, n: usize) -> Option<Vec<u32>> {
    let uids = match &r.code {
        Some(Code::AppendUid { uid, .. }) => Some(vec![uid.get()]),
        // imap-codec reads only a single UID; a set comes as an unknown code.
        Some(Code::Other(o)) => uid_list(o.inner()),
        _ => None,
    };
    uids.filter(|u| u.len() == n)
}

/// `APPENDUID <validity> <uid-set>` as the UIDs it names, in order.
fn uid_list(code: &[u8]) -> Option<Vec<u32>> {
    let text = std::str::from_utf8(code).ok()?;
    let mut words = text.split(' ');
    if !words.next()?.eq_ignore_ascii_case("APPENDUID") {
        return None;
    }
    words.next()?.parse::<u32>().ok()?;
    let set = words.next()?;
    if words.next().is_some() {
        return None;
    }
    let mut out = Vec::new();
    for part in set.split(',') {
        match part.split_once(':') {
            Some((a, b)) => {
                // `b:a` is the same range as `a:b` (RFC 3501 §9, seq-range); UIDs are
                // assigned in the order of the messages, so ascending.
                let (a, b) = (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?);
                let (low, high) = (a.min(b), a.max(b));
                if high - low > 100_000 {
                    return None;
                }
                out.extend(low..=high);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

/// The copy's UID from an APPEND's reply, or why there is none.
fn appended(r: &Reply) -> Result<u32, Refused> {
    if !r.ok() {
        return Err(refusal(r));
    }
    append_uid(r).ok_or_else(|| {
        Refused::Other("the server gave no APPENDUID for the copy; original kept".into())
    })
}

/// An IMAP date (RFC 3501 `date`, `1-Feb-2026`) from `YYYY-MM-DD`.
pub fn imap_date(day: &str) -> Result<String, String> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let err = || format!("{day:?} is not a date: use YYYY-MM-DD, e.g. 2026-02-01");
    let mut parts = day.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(err());
    };
    let (y, m, d): (u32, usize, u32) = (
        y.parse().map_err(|_| err())?,
        m.parse().map_err(|_| err())?,
        d.parse().map_err(|_| err())?,
    );
    if y < 1900 || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(err());
    }
    Ok(format!("{d}-{}-{y}", MONTHS[m - 1]))
}

/// The reverse of [`seal_mailbox`], with the same care: each of the identity's own
/// copies gives back its original, stored with the copy's flags and INTERNALDATE and
/// fetched back byte for byte before the copy is removed. An original already there
/// (an interrupted run) only has its copy removed. In the summary, `sealed` counts the
/// messages unsealed and `already_encrypted` the encrypted messages that are not the
/// identity's own copies (left alone).
async fn unseal_mailbox(
    c: &mut Client,
    job: &SealJob<'_>,
    mailbox: &str,
) -> Result<Summary, SealError> {
    let mut summary = Summary::default();
    let (plain, encrypted) = match open_mailbox(c, job, mailbox).await? {
        Ok(split) => split,
        Err(why) => {
            summary.failed.push(why);
            return Ok(summary);
        }
    };
    let mut originals = std::collections::HashSet::new();
    for batch in plain.chunks(BATCH) {
        for m in fetch(c, batch).await? {
            if crate::pgp::is_encrypted(&m.raw) {
                summary.already_encrypted += 1;
            }
            originals.insert(crate::pgp::stored::digest(&m.raw));
        }
    }
    for batch in encrypted.chunks(BATCH) {
        for m in fetch(c, batch).await? {
            let Some(original) = own_copy(job, &m.raw) else {
                summary.already_encrypted += 1;
                continue;
            };
            let digest = crate::pgp::stored::digest(&original);
            if originals.contains(&digest) {
                if !job.dry_run {
                    remove(c, &[m.uid]).await?;
                }
                summary.finished += 1;
                continue;
            }
            if job.dry_run {
                summary.sealed += 1;
                continue;
            }
            let literal = imap_types::core::Literal::try_from(original.as_slice())
                .map_err(|e| ClientError::Command(format!("original message: {e:?}")))?;
            let append = CommandBody::append(mailbox, m.flags.clone(), m.date.clone(), literal)
                .map_err(|e| ClientError::Command(format!("APPEND to {mailbox:?}: {e:?}")))?;
            let r = c.run(append).await?;
            let Some(uid) = append_uid(&r).filter(|_| r.ok()) else {
                summary.failed.push(format!(
                    "{mailbox} UID {}: the server did not store the original ({}); copy kept",
                    m.uid, r.text
                ));
                continue;
            };
            let back = fetch(c, &[uid]).await?;
            if back
                .first()
                .map(|b| crate::mime::to_crlf(&b.raw).into_owned())
                != Some(crate::mime::to_crlf(&original).into_owned())
            {
                summary.failed.push(format!(
                    "{mailbox} UID {}: the stored original (UID {uid}) differs; copy kept",
                    m.uid
                ));
                continue;
            }
            remove(c, &[m.uid]).await?;
            originals.insert(digest);
            summary.sealed += 1;
        }
    }
    Ok(summary)
}

/// Why the server refused an APPEND: quota (the run stops) or anything else.
fn refusal(r: &Reply) -> Refused {
    let quota = matches!(&r.code, Some(Code::OverQuota))
        || matches!(&r.code, Some(Code::Other(o)) if o.inner().eq_ignore_ascii_case(b"OVERQUOTA".as_slice()))
        || r.text.to_ascii_lowercase().contains("quota");
    if quota {
        Refused::Quota(r.text.clone())
    } else {
        Refused::Other(format!("the server refused the copy: {}", r.text))
    }
}

enum Refused {
    Quota(String),
    Other(String),
}

fn own_copy(job: &SealJob<'_>, raw: &[u8]) -> Option<Vec<u8>> {
    let id = job.identity;
    crate::pgp::own_copy(raw, &id.decryptors, &id.cert, job.max_message_size)
}

fn append_uid(r: &Reply) -> Option<u32> {
    match &r.code {
        Some(Code::AppendUid { uid, .. }) => Some(uid.get()),
        _ => None,
    }
}

/// Marks these UIDs `\Deleted` and expunges exactly them (RFC 4315 §2.1).
async fn remove(c: &mut Client, uids: &[u32]) -> Result<(), SealError> {
    if uids.is_empty() {
        return Ok(());
    }
    let set = uid_set(uids);
    for cmd in [
        format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"),
        format!("UID EXPUNGE {set}"),
    ] {
        let r = c.run_text(&cmd).await?;
        if !r.ok() {
            return Err(ClientError::Protocol(format!("{cmd}: {}", r.text)).into());
        }
    }
    Ok(())
}

pub(super) async fn search(c: &mut Client, command: &str) -> Result<Vec<u32>, SealError> {
    let r = c.run_text(command).await?;
    if !r.ok() {
        return Err(ClientError::Protocol(format!("{command}: {}", r.text)).into());
    }
    let mut uids: Vec<u32> = r
        .untagged
        .iter()
        .filter_map(|r| match r {
            Response::Data(Data::Search(list, ..)) => Some(list.iter().map(|n| n.get())),
            _ => None,
        })
        .flatten()
        .collect();
    uids.sort_unstable();
    Ok(uids)
}

fn uid_set(uids: &[u32]) -> String {
    uids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) async fn sizes(c: &mut Client, uids: &[u32]) -> Result<HashMap<u32, u64>, SealError> {
    let mut out = HashMap::new();
    for batch in uids.chunks(500) {
        let r = c
            .run_text(&format!("UID FETCH {} (UID RFC822.SIZE)", uid_set(batch)))
            .await?;
        for resp in &r.untagged {
            if let Response::Data(Data::Fetch { items, .. }) = resp {
                let (mut uid, mut size) = (None, None);
                for item in items.as_ref() {
                    match item {
                        MessageDataItem::Uid(u) => uid = Some(u.get()),
                        MessageDataItem::Rfc822Size(s) => size = Some(*s as u64),
                        _ => {}
                    }
                }
                if let (Some(u), Some(s)) = (uid, size) {
                    out.insert(u, s);
                }
            }
        }
    }
    Ok(out)
}

pub(super) async fn fetch(c: &mut Client, uids: &[u32]) -> Result<Vec<Stored>, SealError> {
    if uids.is_empty() {
        return Ok(Vec::new());
    }
    let cmd = format!(
        "UID FETCH {} (UID FLAGS INTERNALDATE BODY.PEEK[])",
        uid_set(uids)
    );
    let r = c.run_text(&cmd).await?;
    if !r.ok() {
        return Err(ClientError::Protocol(format!("{cmd}: {}", r.text)).into());
    }
    Ok(stored_from(r.untagged, uids))
}

/// The messages of `uids` in a FETCH's untagged responses, ascending. A server may
/// split one message's items over several responses, and adds unsolicited ones (a flag
/// change made meanwhile, with its UID): items are merged per UID, and a message whose
/// whole `BODY[]` did not come is left out (never taken as empty).
fn stored_from(responses: Vec<Response<'static>>, uids: &[u32]) -> Vec<Stored> {
    let mut found: std::collections::BTreeMap<u32, (Stored, bool)> = Default::default();
    for resp in responses {
        let Response::Data(Data::Fetch { items, .. }) = resp else {
            continue;
        };
        let items: Vec1<MessageDataItem<'static>> = items;
        let Some(uid) = super::fetch::item_uid(items.as_ref()) else {
            continue;
        };
        if !uids.contains(&uid) {
            continue;
        }
        let (m, has_body) = found.entry(uid).or_insert_with(|| {
            (
                Stored {
                    uid,
                    flags: Vec::new(),
                    date: None,
                    raw: Vec::new(),
                },
                false,
            )
        });
        for item in items.into_iter() {
            match item {
                MessageDataItem::Flags(f) => {
                    // \Recent belongs to the session, not the message.
                    m.flags = f
                        .into_iter()
                        .filter_map(|f| match f {
                            FlagFetch::Flag(f) => Some(f),
                            FlagFetch::Recent => None,
                        })
                        .collect();
                }
                MessageDataItem::InternalDate(d) => m.date = Some(d),
                MessageDataItem::BodyExt {
                    section: None,
                    origin: None,
                    data,
                } => {
                    if let Some(d) = data.0 {
                        m.raw = d.as_ref().to_vec();
                        *has_body = true;
                    }
                }
                _ => {}
            }
        }
    }
    found
        .into_values()
        .filter(|(_, has_body)| *has_body)
        .map(|(m, _)| m)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn responses(raw: &[&[u8]]) -> Vec<Response<'static>> {
        use imap_codec::decode::Decoder;
        use imap_types::IntoStatic;
        raw.iter()
            .map(|r| {
                imap_codec::ResponseCodec::default()
                    .decode(r)
                    .expect("a response")
                    .1
                    .into_static()
            })
            .collect()
    }

    /// An unsolicited flag update with the UID (as Dovecot sends during UID commands),
    /// or a message's items split over two responses, never make an empty message.
    #[test]
    fn fetched_messages_need_their_whole_body() {
        let got = stored_from(
            responses(&[
                b"* 1 FETCH (UID 5 FLAGS (\\Seen) INTERNALDATE \"01-Jan-2026 10:00:00 +0000\" BODY[] {5}\r\nhello)\r\n",
                b"* 1 FETCH (UID 5 FLAGS (\\Seen \\Flagged))\r\n",
                b"* 2 FETCH (UID 6 FLAGS (\\Seen))\r\n",
                b"* 3 FETCH (UID 7 BODY[HEADER] {3}\r\nx\r\n)\r\n",
                b"* 4 FETCH (UID 8 BODY[] NIL)\r\n",
                b"* 5 FETCH (FLAGS () UID 9)\r\n",
                b"* 5 FETCH (UID 9 BODY[] {2}\r\nhi)\r\n",
                b"* 6 FETCH (UID 10 BODY[] {2}\r\nno)\r\n",
            ]),
            &[5, 6, 7, 8, 9],
        );
        let summary: Vec<(u32, &[u8], usize)> = got
            .iter()
            .map(|m| (m.uid, m.raw.as_slice(), m.flags.len()))
            .collect();
        assert_eq!(summary, [(5, &b"hello"[..], 2), (9, &b"hi"[..], 0)]);
        assert!(got[0].date.is_some());
    }

    #[test]
    fn a_multiappend_uid_set_names_each_copy_in_order() {
        assert_eq!(
            uid_list(b"APPENDUID 38505 3955:3957,3960"),
            Some(vec![3955, 3956, 3957, 3960])
        );
        assert_eq!(uid_list(b"appenduid 1 7"), Some(vec![7]));
        assert_eq!(uid_list(b"APPENDUID 1 9:7"), Some(vec![7, 8, 9]));
        // Not an APPENDUID, junk after the set, absurd ranges: no UIDs at all.
        for bad in [
            &b"COPYUID 1 2 3"[..],
            b"APPENDUID 1 2 3",
            b"APPENDUID 1 1:4294967295",
            b"APPENDUID x 2",
        ] {
            assert_eq!(uid_list(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_stored_round_without_one_uid_per_copy_names_none() {
        use imap_types::response::{CodeOther, StatusKind};
        let reply = |code: Option<Code<'static>>| Reply {
            kind: StatusKind::Ok,
            code,
            text: "s1 OK done".into(),
            untagged: Vec::new(),
        };
        let set = |text: &'static [u8]| Some(Code::Other(CodeOther::unvalidated(text)));
        assert_eq!(
            appended_all(&reply(set(b"APPENDUID 5 10:12")), 3),
            Some(vec![10, 11, 12])
        );
        // Too few or too many UIDs, none at all (UIDNOTSTICKY): no copy can be matched
        // to its original, so none of them is removed (and none stored twice).
        assert_eq!(appended_all(&reply(set(b"APPENDUID 5 10:11")), 3), None);
        assert_eq!(appended_all(&reply(set(b"APPENDUID 5 10:13")), 3), None);
        assert_eq!(appended_all(&reply(Some(Code::UidNotSticky)), 3), None);
        assert_eq!(appended_all(&reply(None), 3), None);
    }

    #[test]
    fn rounds_are_cut_by_count_and_by_bytes() {
        let uids: Vec<u32> = (1..=250).collect();
        let mut sizes: HashMap<u32, u64> = uids.iter().map(|&u| (u, 1000)).collect();
        let lens: Vec<usize> = batches(&uids, &sizes).iter().map(|b| b.len()).collect();
        assert_eq!(lens, [100, 100, 50]);
        // A 9 MB message is a round of its own; no round passes 8 MiB otherwise.
        sizes.insert(3, 9 << 20);
        for u in 10..=13 {
            sizes.insert(u, 3 << 20);
        }
        let rounds = batches(&uids[..14], &sizes);
        let cut: Vec<&[u32]> = vec![&[1, 2], &[3], &[4, 5, 6, 7, 8, 9, 10, 11], &[12, 13, 14]];
        assert_eq!(rounds, cut);
        assert!(batches(&[], &sizes).is_empty());
    }
}
