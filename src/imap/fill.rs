//! Filling an identity's search index in the background.
//!
//! When a client selects a mailbox, sealpost opens a connection of its own to the
//! provider, logs in the way the client did, finds the mailbox's encrypted messages the
//! index does not hold yet, and downloads, decrypts and indexes them a batch at a time
//! (newest first), so that the first SEARCH of a large mailbox reads the index instead of
//! decrypting everything while the client waits.
//!
//! Bounded: one mailbox is filled at a time, process-wide, starting [`START_AFTER`] the
//! SELECT (the client's own first fetches go first); each batch decrypts on one blocking
//! thread holding one of the process's decryption slots, taken only while another slot
//! is free (so it never takes more than one core, and never the sessions' last one); a
//! mailbox is filled at most once every [`AGAIN_AFTER`]. Resumable: what was committed is skipped
//! the next time, after a restart too.
//!
//! The credential a client logged in with is kept in its session's memory for this
//! (zeroed when dropped, never logged); only single-step logins can be replayed: LOGIN,
//! and AUTHENTICATE PLAIN, XOAUTH2 or OAUTHBEARER.

use super::cache::Key;
use super::client::{Client, ClientError};
use super::server::ImapUpstream;
use super::ImapContext;
use imap_types::auth::AuthMechanism;
use imap_types::command::CommandBody;
use imap_types::response::{Code, Data, Response, Status};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::Instrument;
use zeroize::Zeroizing;

/// A mailbox is filled again at the earliest this long after its last fill started (new
/// mail in between is indexed when the client fetches it).
const AGAIN_AFTER: Duration = Duration::from_secs(10 * 60);
/// How long after the SELECT a fill starts: the client's own first fetches (which index
/// what they decrypt) go first.
const START_AFTER: Duration = Duration::from_secs(2);
/// Messages decrypted per turn (each turn holds one decryption slot).
const BATCH: usize = 32;
/// How long the fill waits for a decryption slot to come free before it looks again.
const YIELD: Duration = Duration::from_millis(20);
/// A progress line at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// Mailboxes remembered as recently filled; older entries go first beyond it.
const REMEMBERED: usize = 4096;

/// How a client logged in, so that a background connection can log in the same way.
#[derive(PartialEq, Eq)]
pub enum Credential {
    Login {
        user: Vec<u8>,
        password: Zeroizing<Vec<u8>>,
    },
    /// The one response of a single-step SASL mechanism, decoded.
    Sasl {
        mechanism: String,
        response: Zeroizing<Vec<u8>>,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Login { .. } => f.write_str("Credential::Login(<redacted>)"),
            Credential::Sasl { mechanism, .. } => {
                write!(f, "Credential::Sasl({mechanism}, <redacted>)")
            }
        }
    }
}

impl Credential {
    pub fn login(user: &[u8], password: &[u8]) -> Credential {
        Credential::Login {
            user: user.to_vec(),
            password: Zeroizing::new(password.to_vec()),
        }
    }

    /// A SASL login that can be replayed, or `None` (mechanisms with challenges, or
    /// several steps, cannot).
    pub fn sasl(mechanism: &str, response: &[u8]) -> Option<Credential> {
        let replayable = matches!(
            AuthMechanism::try_from(mechanism).ok()?,
            AuthMechanism::Plain | AuthMechanism::XOAuth2 | AuthMechanism::OAuthBearer
        );
        replayable.then(|| Credential::Sasl {
            mechanism: mechanism.to_ascii_uppercase(),
            response: Zeroizing::new(response.to_vec()),
        })
    }
}

/// A mailbox to fill: see [`super::session::Output::Fill`].
#[derive(Debug, PartialEq, Eq)]
pub struct FillRequest {
    pub identity: String,
    pub mailbox: String,
    /// The mailbox's UIDVALIDITY as the client's session saw it: the fill's own EXAMINE
    /// must find the same, or it is not the same mailbox.
    pub uidvalidity: u32,
    pub credential: Arc<Credential>,
}

/// (account, identity, mailbox).
type MailboxOf = (Arc<str>, String, String);

/// A fill waiting for its turn or running: the credential only while the client's
/// session holds it.
struct Job {
    identity: String,
    mailbox: String,
    uidvalidity: u32,
    credential: std::sync::Weak<Credential>,
}

/// Which mailboxes are being or were recently filled, and whose turn it is.
pub struct Filler {
    enabled: bool,
    turn: tokio::sync::Semaphore,
    started: Mutex<HashMap<MailboxOf, Instant>>,
}

impl Filler {
    pub fn new(enabled: bool) -> Filler {
        Filler {
            enabled,
            turn: tokio::sync::Semaphore::new(1),
            started: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Makes `key` due again.
    fn release(&self, key: &MailboxOf) {
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        started.remove(key);
    }

    /// Whether `key` is due: not filled within [`AGAIN_AFTER`]; it is then marked.
    fn claim(&self, key: MailboxOf) -> bool {
        let now = Instant::now();
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = started.get(&key) {
            if now.duration_since(*at) < AGAIN_AFTER {
                return false;
            }
        }
        if started.len() >= REMEMBERED {
            started.retain(|_, at| now.duration_since(*at) < AGAIN_AFTER);
            if started.len() >= REMEMBERED {
                // All recent (a client selecting thousands of mailboxes): no more until
                // some are older; a recent claim is never dropped, or selecting them
                // in a loop would queue fills without end.
                return false;
            }
        }
        started.insert(key, now);
        true
    }
}

/// Starts filling the index for `req` on a task of its own, unless that mailbox was
/// filled recently or filling is off.
pub fn start(ctx: Arc<ImapContext>, up: ImapUpstream, req: FillRequest) {
    let filler = ctx.search.filler();
    let claimed = (
        ctx.account.clone(),
        crate::keys::normalize_address(&req.identity),
        req.mailbox.clone(),
    );
    if !filler.enabled() || !filler.claim(claimed.clone()) {
        return;
    }
    // The credential lives as long as the client's session and no longer: a fill still
    // waiting for its turn when the client leaves does not run.
    let job = Job {
        identity: req.identity,
        mailbox: req.mailbox,
        uidvalidity: req.uidvalidity,
        credential: Arc::downgrade(&req.credential),
    };
    drop(req.credential);
    let span = tracing::info_span!("index", account = %ctx.account, mailbox = %job.mailbox);
    tokio::spawn(
        async move {
            tokio::time::sleep(START_AFTER).await;
            let Ok(_turn) = ctx.search.filler().turn.acquire().await else {
                return;
            };
            if job.credential.strong_count() == 0 {
                // The client left while the fill waited: nothing to do, and no
                // credential to do it with.
                ctx.search.filler().release(&claimed);
                return;
            }
            let started = Instant::now();
            match fill(&ctx, &up, &job).await {
                Ok(0) => tracing::debug!("search index already holds this mailbox"),
                Ok(n) => tracing::info!(
                    messages = n,
                    seconds = started.elapsed().as_secs_f32(),
                    "search index filled in the background"
                ),
                Err(FillError::Gone) => {
                    tracing::debug!("the client left before the background fill's turn");
                    ctx.search.filler().release(&claimed);
                }
                Err(e) => tracing::warn!(error = %e, "background indexing stopped; SEARCH decrypts what is missing"),
            }
        }
        .instrument(span),
    );
}

#[derive(Debug, thiserror::Error)]
pub(super) enum FillError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Refused(String),
    #[error("no search index for this identity")]
    NoIndex,
    #[error("the client left before its turn")]
    Gone,
}

impl From<super::seal::SealError> for FillError {
    fn from(e: super::seal::SealError) -> FillError {
        FillError::Refused(e.to_string())
    }
}

/// Indexes the encrypted messages of the request's mailbox that the index lacks;
/// returns how many were indexed.
async fn fill(ctx: &Arc<ImapContext>, up: &ImapUpstream, req: &Job) -> Result<usize, FillError> {
    let index = {
        let (ctx, identity) = (ctx.clone(), req.identity.clone());
        tokio::task::spawn_blocking(move || ctx.search.index_of(&ctx, &identity))
            .await
            .ok()
            .flatten()
            .ok_or(FillError::NoIndex)?
    };
    let (mut c, _) = examine(ctx, up, &req.credential, &req.mailbox, req.uidvalidity).await?;
    let uidvalidity = req.uidvalidity;
    // The same test SEARCH uses (see `search::SearchJob`), within the size views are
    // built for.
    let encrypted = super::seal::search(
        &mut c,
        &format!(
            "UID SEARCH SMALLER {} {}",
            ctx.max_message_size.saturating_add(1),
            super::search::encrypted_criteria()
        ),
    )
    .await?;
    let indexed = {
        let (index, mailbox) = (index.clone(), req.mailbox.clone());
        tokio::task::spawn_blocking(move || index.indexed(&mailbox, uidvalidity))
            .await
            .map_err(|e| FillError::Refused(e.to_string()))?
            .map_err(|e| FillError::Refused(crate::error_chain(&e)))?
    };
    // Newest first: what a user looks for most.
    let missing: Vec<u32> = encrypted
        .into_iter()
        .rev()
        .filter(|u| !indexed.contains(u))
        .collect();
    if missing.is_empty() {
        let _ = c.run_text("LOGOUT").await;
        return Ok(0);
    }
    tracing::info!(
        messages = missing.len(),
        "indexing encrypted mail in the background"
    );
    let sizes = super::seal::sizes(&mut c, &missing).await?;
    let (mut done, mut last_line) = (0usize, Instant::now());
    let mut indexing: Option<tokio::task::JoinHandle<usize>> = None;
    let key = |uid: u32| Key {
        account: ctx.account.clone(),
        identity: req.identity.clone(),
        mailbox: req.mailbox.clone(),
        uidvalidity,
        uid,
    };
    // The process has a decryption slot per core (see `serve`); on one core the fill
    // waits only for it to be free.
    let keep_free = usize::from(
        std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get) > 1,
    );
    let batches = super::seal::batches(&missing, &sizes);
    // (A block, so that a batch still decrypting is waited for however it ends: the
    // fill never leaves work behind that holds a slot after its turn.)
    let looped: Result<(), FillError> = async {
        for batch in batches.iter().flat_map(|b| b.chunks(BATCH)) {
            // What a SEARCH or a FETCH read meanwhile is indexed already.
            let batch: Vec<u32> = batch
                .iter()
                .copied()
                .filter(|&uid| ctx.search.doc(&key(uid)).is_none())
                .collect();
            if batch.is_empty() {
                continue;
            }
            let stored = super::seal::fetch(&mut c, &batch).await?;
            // One batch decrypts while the next downloads; never two at once.
            if let Some(previous) = indexing.take() {
                done += finish(ctx, previous).await?;
            }
            // Second to the sessions' own decryptions: a slot only while another is free.
            let slot = loop {
                if ctx.decrypt_slots.available_permits() > keep_free {
                    if let Ok(slot) = ctx.decrypt_slots.clone().try_acquire_owned() {
                        break Some(slot);
                    }
                }
                if ctx.decrypt_slots.is_closed() {
                    break None;
                }
                tokio::time::sleep(YIELD).await;
            };
            let Some(slot) = slot else {
                return Ok(());
            };
            let keys: Vec<Key> = stored.iter().map(|m| key(m.uid)).collect();
            let work = {
                let ctx = ctx.clone();
                let identity = req.identity.clone();
                move || {
                    let _slot = slot;
                    let mut n = 0;
                    for (m, key) in stored.into_iter().zip(keys) {
                        let view = super::fetch::view_or_stand_in(&m.raw, || {
                            ctx.view(&identity, &m.raw, ctx.max_message_size)
                        });
                        // Audited like every decryption (not counted as a view shown).
                        crate::audit::decryption(
                            &ctx.account,
                            &identity,
                            &key.mailbox,
                            key.uid,
                            &view.kind,
                        );
                        if super::search_state::lasting(&view) {
                            n += 1;
                        }
                        ctx.search.record(&ctx, key, &view);
                    }
                    n
                }
            };
            indexing = Some(tokio::task::spawn_blocking(work));
            if last_line.elapsed() >= PROGRESS_EVERY {
                last_line = Instant::now();
                tracing::info!(
                    indexed = done,
                    of = missing.len(),
                    "indexing encrypted mail in the background"
                );
            }
        }
        Ok(())
    }
    .await;
    if let Some(last) = indexing.take() {
        done += finish(ctx, last).await?;
    }
    looped?;
    let committed = tokio::task::spawn_blocking(move || index.commit())
        .await
        .map_err(|e| FillError::Refused(e.to_string()))?;
    if let Err(e) = committed {
        return Err(FillError::Refused(crate::error_chain(&e)));
    }
    let _ = c.run_text("LOGOUT").await;
    Ok(done)
}

/// Waits for a batch's decryption; counts what it indexed.
async fn finish(
    ctx: &ImapContext,
    batch: tokio::task::JoinHandle<usize>,
) -> Result<usize, FillError> {
    let n = batch
        .await
        .map_err(|e| FillError::Refused(format!("indexing task failed: {e}")))?;
    crate::stats::global().indexed_in_background(&ctx.account, n);
    Ok(n)
}

/// What EXAMINE told of a mailbox.
pub(super) struct Examined {
    pub exists: u32,
    pub uidnext: Option<u32>,
}

/// Connects, logs in the way the client did (unless the client has left: `Gone`) and
/// EXAMINEs `mailbox`, which must have the UIDVALIDITY the client's session saw.
pub(super) async fn examine(
    ctx: &ImapContext,
    up: &ImapUpstream,
    credential: &std::sync::Weak<Credential>,
    mailbox: &str,
    uidvalidity: u32,
) -> Result<(Client, Examined), FillError> {
    let mut c = Client::connect(up, ctx.max_message_size).await?;
    let Some(credential) = credential.upgrade() else {
        return Err(FillError::Gone);
    };
    let logged_in = login(&mut c, &credential).await;
    drop(credential);
    logged_in?;
    let command = CommandBody::examine(mailbox)
        .map_err(|e| FillError::Refused(format!("mailbox name: {e:?}")))?;
    let r = c.run(command).await?;
    if !r.ok() {
        return Err(FillError::Refused(format!("EXAMINE: {}", r.text)));
    }
    let (mut found, mut uidnext, mut exists) = (None, None, 0u32);
    for response in &r.untagged {
        match response {
            Response::Status(Status::Untagged(body)) => match body.code {
                Some(Code::UidValidity(v)) => found = Some(v.get()),
                Some(Code::UidNext(v)) => uidnext = Some(v.get()),
                _ => {}
            },
            Response::Data(Data::Exists(n)) => exists = *n,
            _ => {}
        }
    }
    let found = found.ok_or_else(|| FillError::Refused("EXAMINE gave no UIDVALIDITY".into()))?;
    if found != uidvalidity {
        return Err(FillError::Refused(format!(
            "the mailbox has UIDVALIDITY {found} here but {uidvalidity} in the client's session"
        )));
    }
    Ok((c, Examined { exists, uidnext }))
}

/// Logs in the way the client did.
async fn login(c: &mut Client, credential: &Credential) -> Result<(), FillError> {
    let r = match credential {
        Credential::Login { user, password } => {
            let command = CommandBody::login(user.as_slice(), password.as_slice())
                .map_err(|_| FillError::Refused("the login cannot be repeated".into()))?;
            c.run(command).await?
        }
        Credential::Sasl {
            mechanism,
            response,
        } => {
            let caps = c.run_text("CAPABILITY").await?;
            c.authenticate(mechanism, response, caps.lists_capability("SASL-IR"))
                .await?
        }
    };
    if r.ok() {
        Ok(())
    } else {
        // Its status and code only: nothing the server echoes of the command.
        Err(FillError::Refused(format!(
            "login refused ({:?}{})",
            r.kind,
            r.code
                .as_ref()
                .map(|c| format!(" [{c:?}]"))
                .unwrap_or_default()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mailbox_is_filled_once_until_released() {
        let f = Filler::new(true);
        let key = |m: &str| -> MailboxOf { ("acct".into(), "a@example.com".into(), m.into()) };
        assert!(f.claim(key("INBOX")));
        assert!(!f.claim(key("INBOX")));
        assert!(f.claim(key("Archive")));
        f.release(&key("INBOX"));
        assert!(f.claim(key("INBOX")));
        // Bounded: claiming many mailboxes keeps at most REMEMBERED.
        for i in 0..REMEMBERED + 10 {
            f.claim(key(&format!("box{i}")));
        }
        assert!(f.started.lock().unwrap().len() <= REMEMBERED);
    }

    #[test]
    fn credentials_never_print_their_secret() {
        let login = Credential::login(b"alice", b"hunter2");
        let sasl = Credential::sasl("plain", b"\0alice\0hunter2").unwrap();
        for c in [&login, &sasl] {
            let shown = format!("{c:?}");
            assert!(
                !shown.contains("hunter2") && !shown.contains("alice"),
                "{shown}"
            );
        }
        assert_eq!(format!("{sasl:?}"), "Credential::Sasl(PLAIN, <redacted>)");
        // Only single-step mechanisms can be repeated.
        for m in ["XOAUTH2", "OAUTHBEARER"] {
            assert!(Credential::sasl(m, b"x").is_some(), "{m}");
        }
        for m in ["CRAM-MD5", "SCRAM-SHA-256", "GSSAPI", "LOGIN", "no such"] {
            assert!(Credential::sasl(m, b"x").is_none(), "{m}");
        }
    }
}
