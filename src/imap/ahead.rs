//! Classifying a mailbox as soon as a client selects it.
//!
//! Whether a message is shown through a view (it is encrypted, or its stored header
//! carries a status field sealpost must remove) is learnt from its Content-Type, and for
//! single-part text from a SEARCH for an armor line. A FETCH job learns it for the
//! messages the client fetches and a few hundred after them, and the client's pipeline
//! waits for those round trips; a client syncing a large mailbox (mbsync, Thunderbird's
//! offline sync) meets several such stalls. So when a client selects a mailbox,
//! sealpost opens a connection of its own, logs in the way the client did (see
//! [`super::fill`] for which logins can be repeated), and classifies the mailbox into
//! the view cache while the client is still listing it: its FETCHes then find their
//! messages classified, and a job only downloads what must be decrypted.
//!
//! Bounded: the newest [`MAX_MESSAGES`] messages of a mailbox; at most [`RUNNING`]
//! mailboxes at once per `[[account]]` and [`RUNNING_ALL`] process-wide (a SELECT that
//! finds none free does without, so one account's slow provider cannot take the
//! others' turns); a mailbox again only [`AGAIN_AFTER`] its last run, and then only its
//! new messages.
//! What it learns is only added to the cache: an entry there already (a view built
//! meanwhile) stays.

use super::cache::Key;
use super::fetch::{classify_items, format_set, item_uid, Class, ARMOR_CRITERION, CLASSIFY_ITEMS};
use super::fill::{examine, Examined, FillError, FillRequest};
use super::server::ImapUpstream;
use super::ImapContext;
use imap_types::response::{Data, Response};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// The newest this many messages of a mailbox are classified ahead.
pub const MAX_MESSAGES: u32 = 20_000;
/// Mailboxes classified at once per account.
pub const RUNNING: usize = 2;
/// Mailboxes classified at once, process-wide.
pub const RUNNING_ALL: usize = 8;
/// A mailbox is classified again (its new messages) at the earliest this long after.
pub const AGAIN_AFTER: Duration = Duration::from_secs(60);
/// Mailboxes remembered; the oldest entries go first beyond it.
const REMEMBERED: usize = 4096;
/// A run that takes longer than this is given up (each read has the upstream timeout
/// too).
const DEADLINE: Duration = Duration::from_secs(120);
/// Candidates searched for an armor line per SEARCH command, so that its line stays
/// short whatever the UIDs.
const SEARCH_CHUNK: usize = 1000;

/// The permits a run holds: its account's and the process's.
type Turn = (
    tokio::sync::OwnedSemaphorePermit,
    tokio::sync::OwnedSemaphorePermit,
);

/// (account, identity, mailbox).
type MailboxOf = (Arc<str>, String, String);

/// What was classified of a mailbox, and when.
#[derive(Debug, Clone, Copy)]
struct Done {
    at: Instant,
    uidvalidity: u32,
    /// The first UID not classified yet; 0 while a run is under way or failed.
    next_uid: u32,
}

/// Which mailboxes were classified ahead, and how many runs may start.
pub struct Ahead {
    enabled: bool,
    running: Arc<tokio::sync::Semaphore>,
    /// Per account.
    accounts: Mutex<HashMap<Arc<str>, Arc<tokio::sync::Semaphore>>>,
    done: Mutex<HashMap<MailboxOf, Done>>,
}

impl Default for Ahead {
    /// Off.
    fn default() -> Ahead {
        Ahead::new(false)
    }
}

impl Ahead {
    pub fn new(enabled: bool) -> Ahead {
        Ahead {
            enabled,
            running: Arc::new(tokio::sync::Semaphore::new(RUNNING_ALL)),
            accounts: Mutex::new(HashMap::new()),
            done: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// A turn for `account`: one of its own and one of the process's, or `None`.
    fn turn(&self, account: &Arc<str>) -> Option<Turn> {
        let mine = self
            .accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(account.clone())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(RUNNING)))
            .clone();
        let mine = mine.try_acquire_owned().ok()?;
        let all = self.running.clone().try_acquire_owned().ok()?;
        Some((mine, all))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<MailboxOf, Done>> {
        self.done.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `key` is due, and from which UID (`None`: the whole mailbox, newest
    /// first); it is then marked as started now.
    fn claim(&self, key: MailboxOf, uidvalidity: u32, now: Instant) -> Option<Option<u32>> {
        let mut done = self.lock();
        let from = match done.get(&key) {
            Some(d) if now.duration_since(d.at) < AGAIN_AFTER => return None,
            Some(d) if d.uidvalidity == uidvalidity && d.next_uid > 0 => Some(d.next_uid),
            _ => None,
        };
        if done.len() >= REMEMBERED && !done.contains_key(&key) {
            done.retain(|_, d| now.duration_since(d.at) < AGAIN_AFTER);
            if done.len() >= REMEMBERED {
                return None;
            }
        }
        done.insert(
            key,
            Done {
                at: now,
                uidvalidity,
                next_uid: 0,
            },
        );
        Some(from)
    }

    /// Records a finished run: the next one starts at `next_uid`.
    fn finished(&self, key: &MailboxOf, uidvalidity: u32, next_uid: u32) {
        if let Some(d) = self.lock().get_mut(key) {
            d.uidvalidity = uidvalidity;
            d.next_uid = next_uid;
        }
    }
}

/// Starts classifying the mailbox of `req` on a task of its own, unless that is off,
/// was done recently, or enough runs are under way (see [`RUNNING`]).
pub fn start(ctx: Arc<ImapContext>, up: ImapUpstream, req: &FillRequest) {
    let ahead = &ctx.ahead;
    if !ahead.enabled() {
        return;
    }
    let Some(permit) = ahead.turn(&ctx.account) else {
        tracing::debug!("no mailbox classified ahead: enough runs under way");
        return;
    };
    let key: MailboxOf = (
        ctx.account.clone(),
        crate::keys::normalize_address(&req.identity),
        req.mailbox.clone(),
    );
    let Some(from) = ahead.claim(key.clone(), req.uidvalidity, Instant::now()) else {
        return;
    };
    // The credential lives as long as the client's session and no longer: a run whose
    // client left before it logged in does not log in.
    let credential = Arc::downgrade(&req.credential);
    let (identity, mailbox, uidvalidity) =
        (req.identity.clone(), req.mailbox.clone(), req.uidvalidity);
    let span = tracing::debug_span!("ahead", account = %ctx.account, mailbox = %mailbox);
    tokio::spawn(
        async move {
            let _permit = permit;
            let started = Instant::now();
            let run = Run {
                identity,
                mailbox,
                uidvalidity,
                from,
            };
            let ran = tokio::time::timeout(DEADLINE, classify(&ctx, &up, &run, &credential)).await;
            match ran.unwrap_or_else(|_| {
                Err(FillError::Refused(format!(
                    "not done within {}s",
                    DEADLINE.as_secs()
                )))
            }) {
                Ok((n, next_uid)) => {
                    if let Some(next_uid) = next_uid {
                        ctx.ahead.finished(&key, uidvalidity, next_uid);
                    }
                    tracing::debug!(
                        messages = n,
                        ms = started.elapsed().as_millis() as u64,
                        "mailbox classified ahead"
                    );
                }
                Err(FillError::Gone) => {
                    tracing::debug!("the client left before the mailbox was classified ahead")
                }
                Err(e) => tracing::info!(
                    error = %e,
                    "classifying the mailbox ahead failed; FETCHes classify as they go"
                ),
            }
        }
        .instrument(span),
    );
}

struct Run {
    identity: String,
    mailbox: String,
    uidvalidity: u32,
    /// Classify from this UID on; `None`: the newest [`MAX_MESSAGES`].
    from: Option<u32>,
}

/// Classifies the run's messages into the view cache; returns how many were new to it
/// and the first UID after them (`None` when the next run should look at the newest
/// messages again, as after finding none).
async fn classify(
    ctx: &ImapContext,
    up: &ImapUpstream,
    run: &Run,
    credential: &std::sync::Weak<super::fill::Credential>,
) -> Result<(usize, Option<u32>), FillError> {
    let (mut c, Examined { exists, uidnext }) =
        examine(ctx, up, credential, &run.mailbox, run.uidvalidity).await?;
    if exists == 0 {
        let _ = c.run_text("LOGOUT").await;
        return Ok((0, None));
    }
    // The new messages since the last run when there can be no more of them than a
    // run takes (UIDs below UIDNEXT), else the newest ones.
    let from = run
        .from
        .filter(|&from| uidnext.is_some_and(|next| next.saturating_sub(from) <= MAX_MESSAGES));
    let command = match from {
        Some(uid) => format!("UID FETCH {uid}:* {CLASSIFY_ITEMS}"),
        None => format!(
            "FETCH {}:* {CLASSIFY_ITEMS}",
            exists.saturating_sub(MAX_MESSAGES - 1).max(1)
        ),
    };
    let from = from.unwrap_or(1);
    let r = c.run_text(&command).await?;
    if !r.ok() {
        return Err(FillError::Refused(format!("FETCH: {}", r.text)));
    }
    let key = |uid: u32| Key {
        account: ctx.account.clone(),
        identity: run.identity.clone(),
        mailbox: run.mailbox.clone(),
        uidvalidity: run.uidvalidity,
        uid,
    };
    let mut next_uid = None;
    let mut classified: Vec<(u32, Class, u32)> = Vec::new();
    for response in &r.untagged {
        let Response::Data(Data::Fetch { items, .. }) = response else {
            continue;
        };
        let items = items.as_ref();
        // (`from:*` names the last message even when it is older than `from`.)
        let Some(uid) = item_uid(items).filter(|&u| u >= from) else {
            continue;
        };
        next_uid = next_uid.max(Some(uid.saturating_add(1)));
        if ctx.cache.peek(&key(uid)).is_some() {
            continue;
        }
        // A response without the fields asked for is left to the FETCH job.
        if let Some((class, size, _)) =
            classify_items(items, ctx.max_message_size, uid, &run.mailbox)
        {
            classified.push((uid, class, size));
        }
    }
    let candidates: Vec<u32> = classified
        .iter()
        .filter(|(_, class, _)| *class == Class::Candidate)
        .map(|(uid, ..)| *uid)
        .collect();
    let mut armored = std::collections::HashSet::new();
    for chunk in candidates.chunks(SEARCH_CHUNK) {
        let found = super::seal::search(
            &mut c,
            &format!("UID SEARCH UID {} {ARMOR_CRITERION}", format_set(chunk)),
        )
        .await?;
        armored.extend(found);
    }
    for (uid, class, _) in classified.iter_mut() {
        if *class == Class::Candidate && !armored.contains(uid) {
            *class = Class::Plain;
        }
    }
    let mut added = 0;
    for (uid, class, size) in classified {
        if ctx.cache.insert_absent(key(uid), class.entry(size)) {
            added += 1;
        }
    }
    let _ = c.run_text("LOGOUT").await;
    Ok((added, next_uid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(m: &str) -> MailboxOf {
        ("acct".into(), "a@example.com".into(), m.into())
    }

    #[test]
    fn a_mailbox_is_classified_again_only_later_and_then_from_where_it_ended() {
        let a = Ahead::new(true);
        let t0 = Instant::now();
        assert_eq!(a.claim(key("INBOX"), 7, t0), Some(None));
        assert_eq!(a.claim(key("INBOX"), 7, t0), None, "just started");
        a.finished(&key("INBOX"), 7, 1201);
        let later = t0 + AGAIN_AFTER;
        assert_eq!(a.claim(key("INBOX"), 7, later), Some(Some(1201)));
        // A run that failed (no `finished`) leaves the whole mailbox for the next.
        let again = later + AGAIN_AFTER;
        assert_eq!(a.claim(key("INBOX"), 7, again), Some(None));
        a.finished(&key("INBOX"), 7, 50);
        // Another UIDVALIDITY is another mailbox: all of it again.
        let after = again + AGAIN_AFTER;
        assert_eq!(a.claim(key("INBOX"), 8, after), Some(None));
        assert_eq!(a.claim(key("Archive"), 8, after), Some(None));
    }

    #[test]
    fn each_account_has_turns_of_its_own_within_the_process_bound() {
        let a = Ahead::new(true);
        let busy: Arc<str> = "busy".into();
        let turns: Vec<Turn> = (0..RUNNING).map(|_| a.turn(&busy).unwrap()).collect();
        assert!(
            a.turn(&busy).is_none(),
            "the busy account has used its turns"
        );
        // Another account still gets one, up to the process-wide bound.
        let mut others = Vec::new();
        for i in 0..RUNNING_ALL - RUNNING {
            let account: Arc<str> = format!("other{i}").into();
            others.push(a.turn(&account).expect("a turn of its own"));
        }
        assert!(a.turn(&"last".into()).is_none(), "the process-wide bound");
        drop(turns);
        assert!(a.turn(&busy).is_some());
    }

    #[test]
    fn the_mailboxes_remembered_are_bounded() {
        let a = Ahead::new(true);
        let t0 = Instant::now();
        for i in 0..REMEMBERED + 10 {
            a.claim(key(&format!("box{i}")), 1, t0);
        }
        assert!(a.lock().len() <= REMEMBERED);
        // Once the recent ones are old enough, new mailboxes are taken again.
        assert!(a.claim(key("fresh"), 1, t0 + AGAIN_AFTER).is_some());
    }
}
