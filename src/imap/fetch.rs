//! FETCH of possibly encrypted messages, as a sequence of upstream commands.
//!
//! A client's FETCH that asks for anything computed from message content (sizes,
//! structure, envelope, sections) is answered in steps, each one upstream command with
//! a tag of our own (DESIGN.md, "The IMAP view of an encrypted message"):
//!
//! 1. *classify*: `FETCH set (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (CONTENT-TYPE
//!    SEALPOST-DECRYPTED)])` finds PGP/MIME messages and stored messages carrying a forged
//!    status field, from the header alone (BODYSTRUCTURE would make the server parse every
//!    message whole, which costs it about what sending the message does);
//!    single-part text messages are then checked for inline PGP with a `SEARCH BODY`;
//! 2. *download*: `FETCH special (UID BODY.PEEK[])` for those not cached, then the view
//!    is built (decrypted) and cached;
//! 3. *plain*: the client's own item list for the other messages; their responses are
//!    relayed byte for byte;
//! 4. *special*: `STORE +FLAGS.SILENT (\Seen)` when a non-PEEK item asks for it (RFC 3501
//!    §6.4.5), then `FETCH special (UID FLAGS …)` for the items that do not depend on
//!    content; each response is rewritten with the content items computed from the view.
//!
//! Seq-number FETCHes use seq-number commands throughout so that no EXPUNGE can arrive
//! in between (RFC 3501 §7.4.1), and UID FETCHes use UID commands.

use super::cache::{Entry, Key};
use super::framer::Frame;
use super::ImapContext;
use crate::pgp::{View, ViewKind};
use imap_codec::decode::Decoder;
use imap_codec::encode::Encoder;
use imap_codec::ResponseCodec;
use imap_types::body::{BodyStructure, SpecificFields};
use imap_types::command::FetchModifier;
use imap_types::core::{IString, Literal, NString, Vec1};
use imap_types::fetch::{
    Macro, MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Section,
};
use imap_types::response::{Data, Response};
use imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use std::num::NonZeroU32;
use std::sync::Arc;

/// Where the job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Classify,
    Search,
    Download,
    Plain,
    Store,
    Special,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    Plain,
    Special,
    /// Single-part text: inline PGP possible, to be searched.
    Candidate,
    /// Needs a view, but is larger than sealpost holds, and its stored form cannot be
    /// shown either (it carries a status field sealpost cannot remove, or its header was
    /// never seen): not shown; the FETCH ends with `NO [LIMIT]` naming it.
    Withheld,
}

impl Class {
    /// What the view cache remembers of a message so classified (a candidate not found
    /// by the armor search is plain by then).
    pub(super) fn entry(self, size: u32) -> Entry {
        match self {
            Class::Plain => Entry::Plain,
            Class::Withheld => Entry::Withheld,
            Class::Special | Class::Candidate => Entry::Special { size },
        }
    }
}

/// What a classification asks upstream of each message: its size and the two header
/// fields that decide whether it is shown through a view.
pub(super) const CLASSIFY_ITEMS: &str =
    "(UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (CONTENT-TYPE SEALPOST-DECRYPTED)])";

/// The SEARCH criterion that finds inline PGP among single-part text messages
/// ([`Class::Candidate`]).
pub(super) const ARMOR_CRITERION: &str = "BODY \"-----BEGIN PGP MESSAGE-----\"";

#[derive(Debug, Clone)]
struct Msg {
    seq: Option<u32>,
    uid: u32,
    class: Class,
    /// RFC822.SIZE as stored (0 when not known).
    size: u32,
    /// The stored header carries a status field (`Sealpost-Decrypted`): the message may
    /// only be shown through its view, which removes it.
    forged: bool,
}

/// Output of a job step.
#[derive(Debug)]
pub enum JobOutput {
    Client(Vec<u8>),
    Upstream(Vec<u8>),
    /// Build the view of `uid` from its stored bytes, with at most `limit` bytes of
    /// plaintext, and hand it to [`FetchJob::on_view`]. Decryption is CPU work: the
    /// driver runs it off the protocol task, several at once.
    Decrypt(DecryptRequest),
}

/// A client command answered by a sequence of upstream commands of sealpost's own (a
/// FETCH or SEARCH that needs views). While it runs it sees every upstream frame, and
/// client input waits.
pub trait Job: Send {
    /// The first upstream command(s).
    fn start(&mut self, ctx: &ImapContext) -> Vec<JobOutput>;
    /// Feeds one upstream frame; `message` is the complete message when this frame
    /// completed it. Returns what to send and whether the job is finished.
    fn on_upstream(
        &mut self,
        frame: &Frame,
        message: Option<&[u8]>,
        complete: bool,
        ctx: &ImapContext,
    ) -> (Vec<JobOutput>, bool);
    /// A view asked for with [`JobOutput::Decrypt`] is ready. Returns what to send and
    /// whether the job is finished.
    fn on_view(
        &mut self,
        job: &str,
        uid: u32,
        raw: &[u8],
        view: View,
        ctx: &ImapContext,
    ) -> (Vec<JobOutput>, bool);
    /// True while the job waits for views being built and for nothing from upstream
    /// (every other moment of a job, upstream owes it a reply: see
    /// [`super::session::Session::awaits_upstream`]).
    fn waits_on_views(&self) -> bool;
}

impl Job for FetchJob {
    fn waits_on_views(&self) -> bool {
        self.step == Step::Download && self.downloaded && !self.decrypting.is_empty()
    }
    fn start(&mut self, ctx: &ImapContext) -> Vec<JobOutput> {
        FetchJob::start(self, ctx)
    }
    fn on_upstream(
        &mut self,
        frame: &Frame,
        message: Option<&[u8]>,
        complete: bool,
        ctx: &ImapContext,
    ) -> (Vec<JobOutput>, bool) {
        FetchJob::on_upstream(self, frame, message, complete, ctx)
    }
    fn on_view(
        &mut self,
        job: &str,
        uid: u32,
        raw: &[u8],
        view: View,
        ctx: &ImapContext,
    ) -> (Vec<JobOutput>, bool) {
        FetchJob::on_view(self, job, uid, raw, view, ctx)
    }
}

/// Is `frame` the start of a continuation request (`+ ...`, RFC 3501 §7.5)?
pub fn is_continuation(frame: &Frame) -> bool {
    matches!(frame, Frame::Line { bytes, first: true, .. } if bytes.starts_with(b"+"))
}

/// The UID of a FETCH response, from its items.
pub fn item_uid(items: &[MessageDataItem<'_>]) -> Option<u32> {
    items.iter().find_map(|i| match i {
        MessageDataItem::Uid(u) => Some(u.get()),
        _ => None,
    })
}

/// The bytes of a FETCH response's body section: `BODY[]` when `whole`, else any
/// section (`BODY[HEADER.FIELDS …]`). NIL is empty.
/// RFC822.SIZE among a FETCH response's items (0 when not there).
pub fn item_size(items: &[MessageDataItem<'_>]) -> u32 {
    items
        .iter()
        .find_map(|i| match i {
            MessageDataItem::Rfc822Size(n) => Some(*n),
            _ => None,
        })
        .unwrap_or(0)
}

pub fn item_body(items: &[MessageDataItem<'_>], whole: bool) -> Option<Vec<u8>> {
    items.iter().find_map(|i| match i {
        MessageDataItem::BodyExt { section, data, .. } if !whole || section.is_none() => Some(
            data.0
                .as_ref()
                .map(|d| d.as_ref().to_vec())
                .unwrap_or_default(),
        ),
        _ => None,
    })
}

/// A view to build: see [`JobOutput::Decrypt`].
#[derive(Debug, PartialEq, Eq)]
pub struct DecryptRequest {
    /// The job that asks (its tag prefix): a view is only ever given to that job.
    pub job: String,
    pub uid: u32,
    pub identity: String,
    pub raw: Vec<u8>,
    pub limit: usize,
    /// Built ahead of the client's asking: the view goes to the cache (see
    /// [`store_prefetched`]), and the job does not wait for it.
    pub prefetch: bool,
    /// Where what SEARCH reads of the view is kept (see `search::SearchState::record`),
    /// worked out beside the decryption.
    pub doc: Option<Key>,
    /// The job reads that when the view comes (a SEARCH): it is worked out before the
    /// view is handed over. Otherwise (a FETCH) after, so the client does not wait for
    /// the indexing.
    pub doc_first: bool,
}

/// Mailbox context of the FETCH.
#[derive(Debug, Clone)]
pub struct Selected {
    /// The account of the listener (views are never shared across accounts).
    pub account: Arc<str>,
    pub identity: String,
    pub mailbox: String,
    pub uidvalidity: u32,
    pub read_only: bool,
    /// The mailbox holds spam (LIST `\Junk`, RFC 6154, or named so): nothing is learned
    /// from its mail.
    pub junk: bool,
}

impl Selected {
    /// The cache key of message `uid` of this mailbox, for this account and identity.
    pub fn key(&self, uid: u32) -> Key {
        Key {
            account: self.account.clone(),
            identity: self.identity.clone(),
            mailbox: self.mailbox.clone(),
            uidvalidity: self.uidvalidity,
            uid,
        }
    }
}

pub struct FetchJob {
    client_tag: String,
    uid: bool,
    set_text: String,
    /// The set's numbers when it names them all (no `*`, not huge).
    explicit: Option<Vec<u32>>,
    items_text: String,
    /// CONDSTORE `CHANGEDSINCE` (RFC 7162 §3.1.4.1): every step asks only for messages
    /// changed since, and MODSEQ is returned.
    changed_since: Option<u64>,
    /// QRESYNC `VANISHED` (RFC 7162 §3.2.6): asked once, in classification, so the
    /// client gets each `VANISHED (EARLIER)` response once.
    vanished: bool,
    items: Vec<MessageDataItemName<'static>>,
    selected: Selected,
    step: Step,
    tag: String,
    tag_seq: u64,
    tag_prefix: String,
    msgs: Vec<Msg>,
    sets_seen: bool,
    /// The views this job answers from, held so that cache eviction during the job
    /// cannot take them away.
    views: std::collections::HashMap<u32, Arc<View>>,
    /// For a UID FETCH of explicit UIDs: those UIDs. Classification then also covers
    /// the UIDs after them (`classify_ahead` of them, see [`CLASSIFY_AHEAD`]), which
    /// are only cached.
    requested: Option<std::collections::HashSet<u32>>,
    /// Messages classified ahead, outside the client's set.
    ahead: Vec<Msg>,
    /// Plaintext bytes this job may still hold in views: a FETCH over many messages
    /// that decompress hugely (a decompression bomb) cannot exhaust memory; what is
    /// beyond the budget is shown as stored and logged.
    view_budget: usize,
    /// UIDs whose views are being built (see [`JobOutput::Decrypt`]).
    decrypting: std::collections::HashSet<u32>,
    /// The download step's tagged OK came while views were still being built.
    downloaded: bool,
    /// UIDs downloaded ahead of the client's asking: their views go to the cache only,
    /// and do not count against this FETCH's budget.
    prefetched: std::collections::HashSet<u32>,
    /// UIDs whose views are being built ahead already (by an earlier job): not
    /// prefetched again.
    building: std::collections::HashSet<u32>,
    /// How many UIDs past the client's are classified (see [`CLASSIFY_AHEAD`]).
    classify_ahead: u32,
    /// `max_message_size`: a message stored larger is never downloaded for a view.
    max_stored: usize,
    /// A download response was too large to hold (it is dropped by the framer): the
    /// messages left without a view are then not shown as stored (see `Class::Withheld`).
    oversize: bool,
}

/// At most this many encrypted messages classified ahead are downloaded and decrypted
/// along with a client's FETCH, and at most this many stored bytes of them.
const PREFETCH_MESSAGES: usize = 256;
const PREFETCH_BYTES: u64 = 4 * 1024 * 1024;
/// A message decrypted ahead whose plaintext is larger than this is left for the FETCH
/// that asks for it (see [`store_prefetched`]).
const PREFETCH_VIEW_BYTES: usize = 1024 * 1024;

/// How many UIDs past an explicit UID FETCH are classified in the same round trip, at a
/// session's first job in a mailbox: clients that fetch one message per command
/// (mbsync, Thunderbird's display) then find the next messages classified already.
/// Each further job doubles it, up to [`CLASSIFY_AHEAD_MAX`]: a client that syncs a
/// whole mailbox stalls its pipeline for a few jobs only, and one that reads a message
/// now and then costs the server little for each.
pub const CLASSIFY_AHEAD: u32 = 200;
pub const CLASSIFY_AHEAD_MAX: u32 = 1600;

/// Does the item depend on message content (and so on the view)?
fn content_item(item: &MessageDataItemName<'_>) -> bool {
    matches!(
        item,
        MessageDataItemName::Body
            | MessageDataItemName::BodyExt { .. }
            | MessageDataItemName::BodyStructure
            | MessageDataItemName::Envelope
            | MessageDataItemName::Rfc822
            | MessageDataItemName::Rfc822Header
            | MessageDataItemName::Rfc822Size
            | MessageDataItemName::Rfc822Text
            | MessageDataItemName::Binary { .. }
            | MessageDataItemName::BinarySize { .. }
    )
}

/// RFC 3501 §6.4.5: BODY[...] and RFC822/RFC822.TEXT set \Seen; PEEK and HEADER do not.
fn sets_seen(item: &MessageDataItemName<'_>) -> bool {
    matches!(
        item,
        MessageDataItemName::BodyExt { peek: false, .. }
            | MessageDataItemName::Rfc822
            | MessageDataItemName::Rfc822Text
    )
}

/// Expands FAST/ALL/FULL (RFC 3501 §6.4.5).
pub fn expand(m: MacroOrMessageDataItemNames<'_>) -> Vec<MessageDataItemName<'static>> {
    use imap_types::IntoStatic;
    match m {
        MacroOrMessageDataItemNames::Macro(mac) => {
            let mut v = vec![
                MessageDataItemName::Flags,
                MessageDataItemName::InternalDate,
                MessageDataItemName::Rfc822Size,
            ];
            match mac {
                Macro::Fast => {}
                Macro::All => v.push(MessageDataItemName::Envelope),
                Macro::Full => {
                    v.push(MessageDataItemName::Envelope);
                    v.push(MessageDataItemName::Body);
                }
                // The enum is non-exhaustive; future macros are at least FAST.
                _ => {}
            }
            v
        }
        MacroOrMessageDataItemNames::MessageDataItemNames(v) => {
            v.into_iter().map(|i| i.into_static()).collect()
        }
    }
}

/// True when a UID FETCH names only messages known to need no view: it can then be
/// relayed as it is, keeping the client's pipelining intact.
pub fn known_plain(ctx: &ImapContext, selected: &Selected, set: &SequenceSet) -> bool {
    let Some(uids) = explicit_uids(set) else {
        return false;
    };
    uids.iter().all(|&uid| {
        let key = selected.key(uid);
        matches!(ctx.cache.get(&key), Some(Entry::Plain))
    })
}

/// True when a FETCH needs the view machinery at all.
pub fn needs_view(items: &[MessageDataItemName<'_>]) -> bool {
    items.iter().any(content_item)
}

/// Splits `tag [UID] FETCH set rest` textually: returns (set, rest without CRLF).
pub fn split_fetch_line(line: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(line)
        .ok()?
        .trim_end_matches(['\r', '\n']);
    let mut parts = text.splitn(3, ' ');
    let _tag = parts.next()?;
    let mut cmd = parts.next()?;
    let mut rest = parts.next()?;
    if cmd.eq_ignore_ascii_case("UID") {
        let mut p = rest.splitn(2, ' ');
        cmd = p.next()?;
        rest = p.next()?;
    }
    if !cmd.eq_ignore_ascii_case("FETCH") {
        return None;
    }
    let (set, items) = rest.split_once(' ')?;
    Some((set.to_string(), items.to_string()))
}

/// Formats numbers as a compact IMAP sequence set ("1:3,7").
pub fn format_set(nums: &[u32]) -> String {
    let mut v = nums.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

/// Expands a decoded sequence set ("4,7:9") when it has no `*` and is small.
pub fn explicit_uids(set: &SequenceSet) -> Option<Vec<u32>> {
    let value = |s: &SeqOrUid| match s {
        SeqOrUid::Value(n) => Some(n.get()),
        SeqOrUid::Asterisk => None,
    };
    let mut out = Vec::new();
    for part in set.0.as_ref() {
        let (a, b) = match part {
            Sequence::Single(s) => (value(s)?, value(s)?),
            Sequence::Range(a, b) => (value(a)?, value(b)?),
        };
        let (lo, hi) = (a.min(b), a.max(b));
        if hi - lo > 1000 || out.len() > 1000 {
            return None;
        }
        out.extend(lo..=hi);
    }
    Some(out)
}

fn nstring(data: &[u8]) -> NString<'static> {
    // RFC 3501 §4.3: literals carry no NUL; Dovecot maps it to 0x80 as well.
    let clean: Vec<u8> = data
        .iter()
        .map(|&b| if b == 0 { 0x80 } else { b })
        .collect();
    match Literal::try_from(clean) {
        Ok(l) => NString(Some(IString::Literal(l))),
        Err(_) => NString(None),
    }
}

/// A client's FETCH, decoded: what a job is made from.
pub struct FetchRequest<'a> {
    pub tag: &'a str,
    pub uid: bool,
    /// The command as the client sent it (no literals).
    pub line: &'a [u8],
    pub set: &'a SequenceSet,
    pub items: Vec<MessageDataItemName<'static>>,
    pub modifiers: &'a [FetchModifier],
}

impl FetchJob {
    /// A job for the request, or `None` when the FETCH can simply be relayed.
    pub fn new(req: FetchRequest<'_>, selected: Selected, tag_prefix: &str) -> Option<FetchJob> {
        let FetchRequest {
            tag: client_tag,
            uid,
            line,
            set,
            items,
            modifiers,
        } = req;
        if !needs_view(&items) {
            return None;
        }
        let (set_text, mut items_text) = split_fetch_line(line)?;
        let changed_since = modifiers.iter().find_map(|m| match m {
            FetchModifier::ChangedSince(n) => Some(n.get()),
            FetchModifier::Vanished => None,
        });
        let vanished = modifiers
            .iter()
            .any(|m| matches!(m, FetchModifier::Vanished));
        if !modifiers.is_empty() {
            // The steps carry the modifiers themselves (RFC 7162 §3.1.4.1, §3.2.6).
            let upper = items_text.to_ascii_uppercase();
            let at = upper
                .rfind("(CHANGEDSINCE")
                .into_iter()
                .chain(upper.rfind("(VANISHED"))
                .min()?;
            items_text = items_text[..at].trim_end().to_string();
        }
        let mut items = items;
        if changed_since.is_some() && !items.contains(&MessageDataItemName::ModSeq) {
            // RFC 7162 §3.1.4.1: with CHANGEDSINCE every response carries MODSEQ.
            items.push(MessageDataItemName::ModSeq);
        }
        Some(FetchJob {
            client_tag: client_tag.to_string(),
            uid,
            set_text,
            explicit: explicit_uids(set),
            items_text,
            changed_since,
            vanished,
            sets_seen: items.iter().any(sets_seen) && !selected.read_only,
            items,
            selected,
            step: Step::Classify,
            tag: String::new(),
            tag_seq: 0,
            tag_prefix: tag_prefix.to_string(),
            msgs: Vec::new(),
            views: Default::default(),
            requested: None,
            ahead: Vec::new(),
            view_budget: 0,
            decrypting: Default::default(),
            downloaded: false,
            prefetched: Default::default(),
            building: Default::default(),
            classify_ahead: CLASSIFY_AHEAD,
            max_stored: usize::MAX,
            oversize: false,
        })
    }

    /// How many UIDs past the client's this job classifies (see [`CLASSIFY_AHEAD`]).
    pub fn set_classify_ahead(&mut self, n: u32) {
        self.classify_ahead = n;
    }

    /// The UIDs of this mailbox whose views are being built ahead already (see
    /// [`DecryptRequest::prefetch`]): this job does not build them again.
    pub fn set_building(&mut self, uids: std::collections::HashSet<u32>) {
        self.building = uids;
    }

    fn key(&self, uid: u32) -> Key {
        self.selected.key(uid)
    }

    fn command(&mut self, body: String) -> JobOutput {
        self.tag_seq += 1;
        self.tag = format!("{}{}", self.tag_prefix, self.tag_seq);
        JobOutput::Upstream(format!("{} {}\r\n", self.tag, body).into_bytes())
    }

    fn uid_prefix(&self) -> &'static str {
        if self.uid {
            "UID "
        } else {
            ""
        }
    }

    /// The set addressing `msgs` in the job's numbering (UIDs or seq numbers).
    fn set_of(&self, class: Class) -> String {
        let nums: Vec<u32> = self
            .msgs
            .iter()
            .filter(|m| m.class == class)
            .filter_map(|m| if self.uid { Some(m.uid) } else { m.seq })
            .collect();
        format_set(&nums)
    }

    /// Starts the job: the first upstream command.
    pub fn start(&mut self, ctx: &ImapContext) -> Vec<JobOutput> {
        self.view_budget = ctx.max_job_view_bytes;
        self.max_stored = ctx.max_message_size;
        if self.items.iter().any(|i| {
            matches!(
                i,
                MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. }
            )
        }) {
            // BINARY is not advertised; a client that asks anyway gets a clear answer.
            return vec![JobOutput::Client(
                format!(
                    "{} BAD BINARY fetches are not available through sealpost\r\n",
                    self.client_tag
                )
                .into_bytes(),
            )];
        }
        // A UID FETCH of messages all known already skips classification.
        let mut classify_set = self.set_text.clone();
        // With CHANGEDSINCE only upstream knows which messages are meant: always ask.
        if self.uid && self.changed_since.is_none() {
            if let Some(uids) = self.explicit.clone() {
                let mut msgs = Vec::new();
                for &uid in &uids {
                    let class = match ctx.cache.get(&self.key(uid)) {
                        Some(Entry::Plain) => Class::Plain,
                        Some(Entry::Special { .. }) => Class::Special,
                        Some(Entry::Withheld) => Class::Withheld,
                        Some(Entry::View(v)) => {
                            self.views.insert(uid, v);
                            Class::Special
                        }
                        None => {
                            msgs.clear();
                            break;
                        }
                    };
                    msgs.push(Msg {
                        seq: None,
                        uid,
                        class,
                        size: 0,
                        // Not known here: should its download fail, it is not shown.
                        forged: true,
                    });
                }
                if msgs.len() == uids.len() {
                    self.msgs = msgs;
                    // Encrypted messages classified earlier (by a job, or at SELECT: see
                    // `super::ahead`) that come next are built along (see
                    // `after_search`, bounded by `PREFETCH_MESSAGES` and
                    // `PREFETCH_BYTES`): within the first window for a client that reads
                    // a message now and then, as far as any job looks once it reads on
                    // (a sync then meets one such job, not one per doubling window).
                    let window = if self.classify_ahead > CLASSIFY_AHEAD {
                        CLASSIFY_AHEAD_MAX
                    } else {
                        self.classify_ahead
                    };
                    let last = uids.iter().max().copied().unwrap_or(0);
                    for uid in last.saturating_add(1)..=last.saturating_add(window) {
                        if let Some(Entry::Special { size }) = ctx.cache.peek(&self.key(uid)) {
                            self.ahead.push(Msg {
                                seq: None,
                                uid,
                                class: Class::Special,
                                size,
                                forged: true,
                            });
                        }
                    }
                    // (Nothing to ask upstream when every message is withheld.)
                    let out = self.after_search(ctx);
                    return self.finish_step(out).0;
                }
                let (lo, hi) = (
                    uids.iter().min().copied().unwrap_or(1),
                    uids.iter().max().copied().unwrap_or(1),
                );
                classify_set = format!("{lo}:{}", hi.saturating_add(self.classify_ahead));
                self.requested = Some(uids.into_iter().collect());
            }
        }
        self.step = Step::Classify;
        let body = format!(
            "{}FETCH {} {CLASSIFY_ITEMS}{}",
            self.uid_prefix(),
            classify_set,
            self.modifier_text(self.vanished)
        );
        vec![self.command(body)]
    }

    /// Feeds one upstream frame. `message` is the complete message when this frame
    /// completed it. Returns what to send and whether the job is finished.
    pub fn on_upstream(
        &mut self,
        frame: &Frame,
        message: Option<&[u8]>,
        complete: bool,
        ctx: &ImapContext,
    ) -> (Vec<JobOutput>, bool) {
        if is_continuation(frame) {
            // No command of this job carries a literal, and the client's commands wait
            // until it ends: a `+` now asks for nothing. Relayed, it would tell the
            // client to send a held command's synchronizing literal, which sealpost may
            // then refuse unread, leaving its bytes to be read as commands.
            tracing::debug!("a continuation request upstream sent during a FETCH job dropped");
            return (Vec::new(), false);
        }
        // Plain step: relay the client's own responses as they stream in.
        if self.step == Step::Plain {
            if let Frame::Line { bytes, first, .. } = frame {
                if *first && self.is_our_tagged(bytes) {
                    return self.on_tagged(bytes, ctx);
                }
            }
            let bytes = match frame {
                Frame::Line { bytes, .. } | Frame::Literal { bytes, .. } => bytes.clone(),
                // The session closes the connection before a job sees one.
                Frame::Overlong { .. } => Vec::new(),
            };
            return (vec![JobOutput::Client(bytes)], false);
        }
        if !complete {
            return (Vec::new(), false);
        }
        let Some(message) = message else {
            // Too large to hold: only a download can be that big (its message is then
            // left without a view, see `after_download_step`).
            tracing::warn!("upstream response exceeded the size bound; dropped");
            self.oversize = true;
            return (Vec::new(), false);
        };
        if self.is_our_tagged(message) {
            return self.on_tagged(message, ctx);
        }
        match self.consume(message) {
            Some(out) => (out, false),
            None => (vec![JobOutput::Client(message.to_vec())], false),
        }
    }

    fn is_our_tagged(&self, bytes: &[u8]) -> bool {
        bytes.starts_with(self.tag.as_bytes()) && bytes.get(self.tag.len()) == Some(&b' ')
    }

    /// An untagged response during a step: ours to use (Some) or to relay (None).
    fn consume(&mut self, message: &[u8]) -> Option<Vec<JobOutput>> {
        if self.step == Step::Search {
            let found: Vec<u32> = match ResponseCodec::default().decode(message) {
                Ok((_, Response::Data(Data::Search(found, ..)))) => {
                    found.iter().map(|n| n.get()).collect()
                }
                // Our own SEARCH's answer, undecodable: it finds nothing, and it is ours,
                // never the client's.
                _ if message.len() >= 8 && message[..8].eq_ignore_ascii_case(b"* SEARCH") => {
                    Vec::new()
                }
                _ => return None,
            };
            let uid = self.uid;
            for m in self.msgs.iter_mut().chain(self.ahead.iter_mut()) {
                if m.class == Class::Candidate {
                    let n = if uid { Some(m.uid) } else { m.seq };
                    if n.is_some_and(|n| found.contains(&n)) {
                        m.class = Class::Special;
                    }
                }
            }
            return Some(Vec::new());
        }
        if !message.starts_with(b"* ") || !contains_ci(message, b" FETCH (") {
            return None;
        }
        let response = match ResponseCodec::default().decode(message) {
            Ok((_, r)) => r,
            Err(_) if self.step == Step::Classify => {
                // imap-codec bounds BODYSTRUCTURE nesting (a mail forwarded as an
                // attachment a few times goes past it): such a message is downloaded and
                // its own header decides (a plain one is then relayed byte for byte).
                let (seq, uid) = classify_prefix(message)?;
                tracing::debug!(
                    uid,
                    "classification response not decodable; deciding from the message"
                );
                let msg = Msg {
                    seq: Some(seq),
                    uid,
                    class: Class::Special,
                    size: 0,
                    // Its header was not seen: it is shown only through a view.
                    forged: true,
                };
                match &self.requested {
                    Some(r) if !r.contains(&uid) => {}
                    _ => self.msgs.push(msg),
                }
                return Some(Vec::new());
            }
            Err(_) => return None,
        };
        let Response::Data(Data::Fetch { seq, items }) = response else {
            return None;
        };
        let items = items.into_inner();
        let uid = item_uid(&items);
        if self.step == Step::Store {
            // Our own `STORE +FLAGS.SILENT (\Seen)` is not silent everywhere (Cyrus
            // answers it with `FETCH (FLAGS ...)`, without a UID to a seq-number STORE):
            // for the messages it was for, that is not relayed, as the special FETCH
            // right after brings their flags in the one response the client gets for
            // each (curl, for one, takes a second FETCH response without the body it
            // asked for as an error). Seq numbers hold still during a seq-number job.
            let ours = self.msgs.iter().any(|m| {
                m.class == Class::Special
                    && match uid {
                        Some(uid) => m.uid == uid,
                        None => !self.uid && m.seq == Some(seq.get()),
                    }
            });
            return ours.then(Vec::new);
        }
        let uid = uid?;
        match self.step {
            Step::Classify => {
                let (class, size, forged) =
                    classify_items(&items, self.max_stored, uid, &self.selected.mailbox)?;
                let msg = Msg {
                    seq: Some(seq.get()),
                    uid,
                    class,
                    size,
                    forged,
                };
                match &self.requested {
                    Some(r) if !r.contains(&uid) => self.ahead.push(msg),
                    _ => self.msgs.push(msg),
                }
                Some(Vec::new())
            }
            Step::Download => {
                let raw = item_body(&items, true)?;
                let prefetch = self.prefetched.remove(&uid);
                if !prefetch && !self.decrypting.insert(uid) {
                    // The same message twice in one response stream: built once.
                    return Some(Vec::new());
                }
                // What nobody asked for yet is decrypted only while it stays small: a
                // sender cannot make one FETCH decompress hundreds of large messages.
                let limit = if prefetch {
                    self.view_budget.min(PREFETCH_VIEW_BYTES)
                } else {
                    self.view_budget
                };
                Some(vec![JobOutput::Decrypt(DecryptRequest {
                    job: self.tag_prefix.clone(),
                    uid,
                    identity: self.selected.identity.clone(),
                    raw,
                    limit,
                    prefetch,
                    doc: Some(self.key(uid)),
                    doc_first: false,
                })])
            }
            // Only the messages this step asked about; anything else is unsolicited.
            Step::Special
                if self
                    .msgs
                    .iter()
                    .any(|m| m.uid == uid && m.class == Class::Special) =>
            {
                Some(self.synthesize(seq.get(), uid, &items))
            }
            _ => None,
        }
    }

    /// A view asked for with [`JobOutput::Decrypt`] is ready. Returns what to send and
    /// whether the job is finished.
    pub fn on_view(
        &mut self,
        job: &str,
        uid: u32,
        raw: &[u8],
        view: View,
        ctx: &ImapContext,
    ) -> (Vec<JobOutput>, bool) {
        // A view for an earlier job (one that ended while it was being built) belongs to
        // another mailbox, perhaps: never taken, never cached under this job's key.
        if job != self.tag_prefix || !self.decrypting.remove(&uid) {
            return (Vec::new(), false);
        }
        self.store_view(uid, raw, view, ctx);
        if self.downloaded && self.decrypting.is_empty() {
            let next = self.after_download_step(ctx);
            return self.finish_step(next);
        }
        (Vec::new(), false)
    }

    fn store_view(&mut self, uid: u32, raw: &[u8], mut view: View, ctx: &ImapContext) {
        learn_from_view(ctx, &self.selected, &view);
        if matches!(view.kind, ViewKind::Decrypted(_)) && view.bytes.len() > self.view_budget {
            // Views are built in parallel, each under the budget left when it was asked
            // for; what the job holds stays within the budget all the same.
            view = View::new(
                crate::mime::without_fields(raw, &[crate::pgp::STATUS_HEADER]),
                ViewKind::TooLarge {
                    limit: self.view_budget,
                },
                Vec::new(),
            );
        }
        if let ViewKind::Decrypted(_) = view.kind {
            self.view_budget = self.view_budget.saturating_sub(view.bytes.len());
        }
        if let ViewKind::TooLarge { limit } = view.kind {
            if limit < ctx.max_message_size {
                // This FETCH's budget is spent: shown as stored now, and not remembered,
                // so the next FETCH of it decrypts (the budget is no verdict).
                tracing::warn!(uid, mailbox = %self.selected.mailbox, "decryption budget of this FETCH spent; shown as stored this time");
                if view.bytes == raw {
                    if let Some(m) = self.msgs.iter_mut().find(|m| m.uid == uid) {
                        m.class = Class::Plain;
                    }
                } else {
                    self.views.insert(uid, Arc::new(view));
                }
                return;
            }
        }
        record_verdict(&self.selected, uid, &view.kind);
        let entry = verdict(raw, view);
        match &entry {
            Entry::Plain => {
                if let Some(m) = self.msgs.iter_mut().find(|m| m.uid == uid) {
                    m.class = Class::Plain;
                }
            }
            Entry::Special { .. } | Entry::Withheld => {}
            Entry::View(v) => {
                self.views.insert(uid, v.clone());
            }
        }
        ctx.cache.insert(self.key(uid), entry);
    }

    /// The tagged completion of our current command.
    fn on_tagged(&mut self, line: &[u8], ctx: &ImapContext) -> (Vec<JobOutput>, bool) {
        let text = String::from_utf8_lossy(line);
        let rest = text[self.tag.len()..].trim_start();
        let ok = rest.get(..2).is_some_and(|w| w.eq_ignore_ascii_case("OK"));
        if !ok {
            // Upstream's verdict, under the client's tag.
            let reply = format!("{} {}", self.client_tag, rest.trim_end());
            return (
                vec![JobOutput::Client(format!("{reply}\r\n").into_bytes())],
                true,
            );
        }
        let out = match self.step {
            Step::Classify => self.after_classify(ctx),
            Step::Search => self.after_search(ctx),
            Step::Download if !self.decrypting.is_empty() => {
                // The views still being built decide what comes next.
                self.downloaded = true;
                return (Vec::new(), false);
            }
            Step::Download => self.after_download_step(ctx),
            Step::Plain => self.after_plain(),
            Step::Store => self.special_fetch(),
            Step::Special => Vec::new(),
        };
        self.finish_step(out)
    }

    /// After the download and every view it asked for.
    fn after_download_step(&mut self, ctx: &ImapContext) -> Vec<JobOutput> {
        // Anything still special without a view could not be fetched: gone meanwhile
        // (the client's own FETCH then finds nothing either), or too large to hold, when
        // a status field it may carry must not reach the client.
        let oversize = self.oversize;
        for m in self.msgs.iter_mut() {
            if m.class == Class::Special && !self.views.contains_key(&m.uid) {
                m.class = if oversize && m.forged {
                    Class::Withheld
                } else {
                    Class::Plain
                };
            }
        }
        self.after_download(ctx)
    }

    /// The next step's commands, or the job's tagged OK when there is none.
    fn finish_step(&mut self, out: Vec<JobOutput>) -> (Vec<JobOutput>, bool) {
        if !out.is_empty() {
            return (out, false);
        }
        let withheld: Vec<u32> = self
            .msgs
            .iter()
            .filter(|m| m.class == Class::Withheld)
            .map(|m| m.uid)
            .collect();
        let done = if withheld.is_empty() {
            format!("{} OK Fetch completed (sealpost)\r\n", self.client_tag)
        } else {
            // RFC 9051 §7.1: LIMIT, the operation ignored some items because of a limit.
            tracing::warn!(mailbox = %self.selected.mailbox, uids = %format_set(&withheld), "messages over max_message_size with a status field not shown");
            format!(
                "{} NO [LIMIT] Not shown: UID {} over sealpost's max_message_size ({} bytes) (sealpost)\r\n",
                self.client_tag,
                format_set(&withheld),
                self.max_stored
            )
        };
        (vec![JobOutput::Client(done.into_bytes())], true)
    }

    fn after_classify(&mut self, ctx: &ImapContext) -> Vec<JobOutput> {
        // Cached classification wins over guessing from the structure.
        for i in 0..self.msgs.len() {
            let uid = self.msgs[i].uid;
            match ctx.cache.get(&self.key(uid)) {
                Some(Entry::Plain) => self.msgs[i].class = Class::Plain,
                Some(Entry::Special { .. }) => self.msgs[i].class = Class::Special,
                Some(Entry::Withheld) => self.msgs[i].class = Class::Withheld,
                Some(Entry::View(v)) => {
                    self.msgs[i].class = Class::Special;
                    self.views.insert(uid, v);
                }
                None => {}
            }
        }
        let ahead_known: Vec<bool> = self
            .ahead
            .iter()
            .map(|m| ctx.cache.get(&self.key(m.uid)).is_some())
            .collect();
        let mut known = ahead_known.into_iter();
        self.ahead.retain(|_| !known.next().unwrap_or(false));
        let candidates: Vec<u32> = self
            .msgs
            .iter()
            .chain(self.ahead.iter())
            .filter(|m| m.class == Class::Candidate)
            .filter_map(|m| if self.uid { Some(m.uid) } else { m.seq })
            .collect();
        if !candidates.is_empty() {
            self.step = Step::Search;
            let set = format_set(&candidates);
            let body = if self.uid {
                format!("UID SEARCH UID {set} {ARMOR_CRITERION}")
            } else {
                format!("SEARCH {set} {ARMOR_CRITERION}")
            };
            return vec![self.command(body)];
        }
        self.after_search(ctx)
    }

    fn after_search(&mut self, ctx: &ImapContext) -> Vec<JobOutput> {
        for m in self.msgs.iter_mut().chain(self.ahead.iter_mut()) {
            if m.class == Class::Candidate {
                m.class = Class::Plain;
            }
        }
        for m in self.msgs.iter().chain(self.ahead.iter()) {
            if ctx.cache.get(&self.key(m.uid)).is_none() {
                ctx.cache.insert(self.key(m.uid), m.class.entry(m.size));
            }
        }
        let mut to_download: Vec<u32> = self
            .msgs
            .iter()
            .filter(|m| m.class == Class::Special)
            .filter(|m| !self.views.contains_key(&m.uid))
            .filter_map(|m| if self.uid { Some(m.uid) } else { m.seq })
            .collect();
        if self.uid {
            // Clients that fetch one message per command (mbsync, Thunderbird's offline
            // sync) ask for the encrypted messages after this one next: download them
            // now, in the same round trip, and decrypt them in parallel while the client
            // goes on, so that their FETCHes find the views cached.
            let mut bytes = 0u64;
            let mut prefetch = Vec::new();
            for m in self
                .ahead
                .iter()
                .filter(|m| m.class == Class::Special && !self.building.contains(&m.uid))
            {
                // The session's views being built count too: a client that skips
                // around never has more than this many ahead.
                if prefetch.len() + self.building.len() >= PREFETCH_MESSAGES {
                    break;
                }
                if bytes + u64::from(m.size) > PREFETCH_BYTES {
                    // Too large to take along (or once found so): the smaller ones after
                    // it still are.
                    continue;
                }
                bytes += u64::from(m.size);
                prefetch.push(m.uid);
            }
            self.prefetched = prefetch.iter().copied().collect();
            to_download.extend(prefetch);
        }
        self.ahead.clear();
        if !to_download.is_empty() {
            self.step = Step::Download;
            let body = format!(
                "{}FETCH {} (UID BODY.PEEK[])",
                self.uid_prefix(),
                format_set(&to_download)
            );
            return vec![self.command(body)];
        }
        self.after_download(ctx)
    }

    /// ` (CHANGEDSINCE n[ VANISHED])` for a step's FETCH, or nothing.
    fn modifier_text(&self, vanished: bool) -> String {
        match self.changed_since {
            Some(n) if vanished => format!(" (CHANGEDSINCE {n} VANISHED)"),
            Some(n) => format!(" (CHANGEDSINCE {n})"),
            None => String::new(),
        }
    }

    fn after_download(&mut self, _ctx: &ImapContext) -> Vec<JobOutput> {
        if self.msgs.iter().any(|m| m.class == Class::Plain) {
            self.step = Step::Plain;
            let body = format!(
                "{}FETCH {} {}{}",
                self.uid_prefix(),
                self.set_of(Class::Plain),
                self.items_text,
                self.modifier_text(false)
            );
            return vec![self.command(body)];
        }
        self.after_plain()
    }

    fn after_plain(&mut self) -> Vec<JobOutput> {
        if !self.msgs.iter().any(|m| m.class == Class::Special) {
            return Vec::new();
        }
        if self.sets_seen {
            self.step = Step::Store;
            let body = format!(
                "{}STORE {} +FLAGS.SILENT (\\Seen)",
                self.uid_prefix(),
                self.set_of(Class::Special)
            );
            return vec![self.command(body)];
        }
        self.special_fetch()
    }

    fn special_fetch(&mut self) -> Vec<JobOutput> {
        self.step = Step::Special;
        let body = format!(
            "{}FETCH {} {}{}",
            self.uid_prefix(),
            self.set_of(Class::Special),
            state_items(&self.items, self.sets_seen, self.changed_since.is_some()),
            self.modifier_text(false)
        );
        vec![self.command(body)]
    }

    /// Builds the client's FETCH response for a message shown through its view.
    fn synthesize(&self, seq: u32, uid: u32, upstream: &[MessageDataItem<'_>]) -> Vec<JobOutput> {
        // Only messages with a view are special; nothing else reaches here.
        let Some(view) = self.views.get(&uid) else {
            return Vec::new();
        };
        let asked = Asked {
            uid_fetch: self.uid,
            items: &self.items,
        };
        synthesize(view, seq, uid, &asked, upstream)
            .map(JobOutput::Client)
            .into_iter()
            .collect()
    }
}

/// Learns the Autocrypt keys a view carries (never from Junk; see
/// [`crate::keys::autocrypt`]).
fn learn_from_view(ctx: &ImapContext, selected: &Selected, view: &View) {
    if let (Some(ac), ViewKind::Decrypted(signature), false) =
        (&ctx.autocrypt, &view.kind, selected.junk)
    {
        // Never in Junk, and only for this session's identity. The view's header
        // carries the outer Autocrypt field, which no signature covers: learned as
        // unauthenticated (unless the own provider's Authentication-Results vouch),
        // and after the payload's, so it cannot displace a signed key.
        let now = crate::keys::unix_now();
        let (header, _) = crate::mime::split_message(&view.bytes);
        let evidence = |signed_good_for| crate::keys::autocrypt::Evidence {
            signed_good_for,
            authserv_id: ac.authserv_id.as_deref(),
        };
        if let crate::pgp::SignatureStatus::Good { addresses, .. } = signature {
            // Inside encryption signed good by a key bound to the From, the payload's
            // own Autocrypt field is authenticated and Autocrypt-Gossip counts too
            // (Autocrypt 1.1 §2.7).
            let without_outer = crate::mime::without_fields(header, &["Autocrypt"]);
            let inside = [without_outer.as_slice(), &view.autocrypt].concat();
            ac.store
                .learn(&selected.identity, &inside, evidence(Some(addresses)), now);
        }
        // After the signed one: of the same message, the first key learned stays.
        ac.store
            .learn(&selected.identity, header, evidence(None), now);
    }
}

/// The view `build` makes of `raw`, or, should building it panic (a defect, never
/// expected), the message as stored with the reason: the FETCH waiting for it gets
/// its answer, and the session goes on.
pub fn view_or_stand_in(raw: &[u8], build: impl FnOnce() -> View) -> View {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(build)).unwrap_or_else(|_| {
        tracing::error!("building a message's view failed unexpectedly; shown as stored");
        View::new(
            crate::mime::without_fields(raw, &[crate::pgp::STATUS_HEADER]),
            ViewKind::Undecryptable("decryption failed unexpectedly".into()),
            Vec::new(),
        )
    })
}

/// Records a view's verdict for the audit, the metrics and `sealpost status` (the one
/// place both the job's and the prefetched views pass), and logs why an encrypted
/// message is shown as stored (never its content).
fn record_verdict(selected: &Selected, uid: u32, kind: &ViewKind) {
    let s = selected;
    // One place for the audit, the metrics and `sealpost status`: each verdict counted
    // once, by all three alike (a spent budget is no verdict and does not come here).
    crate::audit::decryption(&s.account, &s.identity, &s.mailbox, uid, kind);
    crate::metrics::decryption(&s.account, kind);
    crate::stats::global().view(&s.account, kind);
    match kind {
        ViewKind::TooLarge { limit } => {
            tracing::warn!(uid, mailbox = %selected.mailbox, limit, "decrypted message over max_message_size; shown as stored");
        }
        ViewKind::Undecryptable(reason) => {
            tracing::warn!(uid, mailbox = %selected.mailbox, %reason, "cannot decrypt; shown as stored");
        }
        ViewKind::Plain | ViewKind::Decrypted(_) => {}
    }
}

/// What is remembered of a message from its view: a decrypted view; a message shown
/// as stored (plain, or not decryptable) is relayed byte for byte from now on.
fn verdict(raw: &[u8], view: View) -> Entry {
    match &view.kind {
        ViewKind::Decrypted(_) => Entry::View(Arc::new(view)),
        _ if view.bytes == raw => Entry::Plain,
        _ => Entry::View(Arc::new(view)),
    }
}

/// A view built ahead of the client's asking (see [`DecryptRequest::prefetch`]):
/// learned from like any other and cached for the FETCH that will ask for it, whatever
/// its verdict (so that no later job downloads it ahead again).
pub fn store_prefetched(ctx: &ImapContext, selected: &Selected, uid: u32, raw: &[u8], view: View) {
    learn_from_view(ctx, selected, &view);
    let key = selected.key(uid);
    if matches!(view.kind, ViewKind::TooLarge { limit } if limit < ctx.max_message_size) {
        // Too large to build ahead: no verdict, but remembered as encrypted and too
        // large to take along again, so the FETCH that asks decrypts it with the whole
        // budget and no later job tries ahead again.
        ctx.cache.insert(key, Entry::Special { size: u32::MAX });
        return;
    }
    record_verdict(selected, uid, &view.kind);
    ctx.cache.insert(key, verdict(raw, view));
}

/// A UID FETCH whose messages all have views cached, answered within the client's
/// pipeline: upstream is asked only for the items that do not depend on content
/// (`UID FLAGS ...`, under the client's own tag, relayed in order with the client's
/// other commands), and each of its responses gets the content items from the view.
/// mbsync and Thunderbird fetch one message per command, hundreds pipelined: a job
/// would hold them all for a round trip at every encrypted message.
#[derive(Debug)]
pub struct Rewrite {
    items: Vec<MessageDataItemName<'static>>,
    /// The views not answered yet, by UID.
    views: std::collections::HashMap<u32, Arc<View>>,
}

impl Rewrite {
    /// The rewrite of `tag UID FETCH set items` when every message of the set has its
    /// view cached, with the command to send upstream instead; else `None` (a job or
    /// the relay answers it). Not for FETCHes that set `\Seen` (a job sets it), nor
    /// with CONDSTORE/QRESYNC modifiers.
    pub fn from_cache(
        ctx: &ImapContext,
        selected: &Selected,
        req: &FetchRequest<'_>,
    ) -> Option<(Rewrite, Vec<u8>)> {
        let sets_seen_here = req.items.iter().any(sets_seen) && !selected.read_only;
        let binary = req.items.iter().any(|i| {
            matches!(
                i,
                MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. }
            )
        });
        if !req.uid || !req.modifiers.is_empty() || sets_seen_here || binary {
            return None;
        }
        let mut views = std::collections::HashMap::new();
        for uid in explicit_uids(req.set)? {
            let key = selected.key(uid);
            match ctx.cache.get(&key) {
                Some(Entry::View(v)) => views.insert(uid, v),
                _ => return None,
            };
        }
        let (set, _) = split_fetch_line(req.line)?;
        let command = format!(
            "{} UID FETCH {set} {}\r\n",
            req.tag,
            state_items(&req.items, false, false)
        );
        let rewrite = Rewrite {
            items: req.items.clone(),
            views,
        };
        Some((rewrite, command.into_bytes()))
    }

    /// The bytes of the views not answered yet (what they expand to in the client's
    /// output).
    pub fn bytes(&self) -> usize {
        // Each content item is a copy of some of the view in the answer.
        let copies = self.items.iter().filter(|i| content_item(i)).count().max(1);
        self.views.values().map(|v| v.bytes.len()).sum::<usize>() * copies
    }

    /// Is a response about `uid` this rewrite's to answer?
    pub fn wants(&self, uid: u32) -> bool {
        self.views.contains_key(&uid)
    }

    /// The view of `uid`, taken: this rewrite's answer about it is being given.
    pub fn take(&mut self, uid: u32) -> Option<Arc<View>> {
        self.views.remove(&uid)
    }

    /// The items the client asked for.
    pub fn items(&self) -> &[MessageDataItemName<'static>] {
        &self.items
    }
}

/// The client's line for upstream's `* seq FETCH (UID uid ...)`, answered from `view`
/// with `items` (those of every rewrite that wanted it; see [`Rewrite`]).
pub fn respond(
    view: &View,
    seq: u32,
    uid: u32,
    items: &[MessageDataItemName<'static>],
    upstream: &[MessageDataItem<'_>],
) -> Option<Vec<u8>> {
    let asked = Asked {
        uid_fetch: true,
        items,
    };
    synthesize(view, seq, uid, &asked, upstream)
}

/// What a client's FETCH asked for, as a view's response needs it.
struct Asked<'a> {
    uid_fetch: bool,
    items: &'a [MessageDataItemName<'static>],
}

/// `(UID FLAGS ...)`: the items upstream answers for a message shown through its view,
/// those that do not depend on its content.
fn state_items(items: &[MessageDataItemName<'_>], sets_seen: bool, changed_since: bool) -> String {
    let mut names = vec!["UID"];
    for item in items {
        let n = match item {
            MessageDataItemName::Flags => "FLAGS",
            MessageDataItemName::InternalDate => "INTERNALDATE",
            MessageDataItemName::ModSeq => "MODSEQ",
            _ => continue,
        };
        if !names.contains(&n) {
            names.push(n);
        }
    }
    if sets_seen && !names.contains(&"FLAGS") {
        names.push("FLAGS");
    }
    if changed_since && !names.contains(&"MODSEQ") {
        names.push("MODSEQ");
    }
    format!("({})", names.join(" "))
}

/// The client's FETCH response for message `seq`/`uid` shown through `view`: content
/// items from the view, the others from `upstream`'s response.
fn synthesize(
    view: &View,
    seq: u32,
    uid: u32,
    asked: &Asked<'_>,
    upstream: &[MessageDataItem<'_>],
) -> Option<Vec<u8>> {
    use imap_types::IntoStatic;
    // Decrypted views are prepared when built (see `ImapContext::view`). Any other view
    // answered here (a forged status field removed, not decryptable) is prepared now, so
    // that for it too RFC822.SIZE is the length of BODY[] and RFC822 is BODY[]: these
    // are rare, and the copy is the price.
    let prepared = matches!(view.kind, ViewKind::Decrypted(_));
    let normalized;
    let msg: &[u8] = if prepared {
        &view.bytes
    } else {
        normalized = crate::mime::view::prepare(view.bytes.clone());
        &normalized
    };
    // A section of the view: of a prepared one, a range of it found through its part
    // tree, parsed once per view (not once per item); else computed from the bytes.
    let section_of = |s: Option<&Section<'_>>| -> Option<std::borrow::Cow<'_, [u8]>> {
        if prepared {
            crate::mime::view::section_of_prepared(msg, view.prepared_tree(), s)
        } else {
            crate::mime::view::section(msg, s).map(Into::into)
        }
    };
    let structure = |extended: bool| {
        if prepared {
            crate::mime::view::body_structure_of_prepared(msg, view.prepared_tree(), extended)
        } else {
            crate::mime::view::body_structure(msg, extended)
        }
    };
    let mut items: Vec<MessageDataItem<'static>> = Vec::new();
    let from_upstream = |name: &MessageDataItemName<'_>| {
        upstream.iter().find(|i| {
            matches!(
                (name, i),
                (MessageDataItemName::Flags, MessageDataItem::Flags(_))
                    | (
                        MessageDataItemName::InternalDate,
                        MessageDataItem::InternalDate(_)
                    )
                    | (MessageDataItemName::ModSeq, MessageDataItem::ModSeq(_))
            )
        })
    };
    if asked.uid_fetch {
        if let Some(u) = NonZeroU32::new(uid) {
            items.push(MessageDataItem::Uid(u));
        }
    }
    for name in asked.items {
        let item = match name {
            MessageDataItemName::Uid => {
                if asked.uid_fetch {
                    continue;
                }
                NonZeroU32::new(uid).map(MessageDataItem::Uid)
            }
            MessageDataItemName::Flags
            | MessageDataItemName::InternalDate
            | MessageDataItemName::ModSeq => from_upstream(name).map(|i| i.clone().into_static()),
            MessageDataItemName::Rfc822Size => Some(MessageDataItem::Rfc822Size(msg.len() as u32)),
            MessageDataItemName::Body => Some(MessageDataItem::Body(structure(false))),
            MessageDataItemName::BodyStructure => {
                Some(MessageDataItem::BodyStructure(structure(true)))
            }
            MessageDataItemName::Envelope => {
                Some(MessageDataItem::Envelope(crate::mime::view::envelope(msg)))
            }
            MessageDataItemName::Rfc822 => Some(MessageDataItem::Rfc822(nstring(msg))),
            MessageDataItemName::Rfc822Header => {
                let data = section_of(Some(&Section::Header(None))).unwrap_or_default();
                Some(MessageDataItem::Rfc822Header(nstring(&data)))
            }
            MessageDataItemName::Rfc822Text => {
                let data = section_of(Some(&Section::Text(None))).unwrap_or_default();
                Some(MessageDataItem::Rfc822Text(nstring(&data)))
            }
            MessageDataItemName::BodyExt {
                section, partial, ..
            } => {
                let data = section_of(section.as_ref()).unwrap_or_default();
                let part = crate::mime::view::partial(&data, *partial);
                Some(MessageDataItem::BodyExt {
                    section: section.clone(),
                    origin: partial.map(|(o, _)| o),
                    data: nstring(part),
                })
            }
            MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. } => None,
        };
        if let Some(item) = item {
            items.push(item);
        }
    }
    // Whatever else upstream reports that does not come from the content goes to the
    // client too, asked for or not: the flag change this fetch caused (RFC 3501 §6.4.5),
    // or the answer to another pipelined command about the same message (which
    // command a FETCH response answers cannot be told), which the client would
    // otherwise never get. They go right after UID, before any literal, where Dovecot
    // and Cyrus put them: curl, for one, reads nothing after a FETCH response's literal.
    let mut at = items
        .iter()
        .take_while(|i| matches!(i, MessageDataItem::Uid(_)))
        .count();
    for item in upstream {
        let content = matches!(
            item,
            MessageDataItem::Uid(_)
                | MessageDataItem::Body(_)
                | MessageDataItem::BodyExt { .. }
                | MessageDataItem::BodyStructure(_)
                | MessageDataItem::Binary { .. }
                | MessageDataItem::BinarySize { .. }
                | MessageDataItem::Envelope(_)
                | MessageDataItem::Rfc822(_)
                | MessageDataItem::Rfc822Header(_)
                | MessageDataItem::Rfc822Size(_)
                | MessageDataItem::Rfc822Text(_)
        );
        let kind = std::mem::discriminant(item);
        if !content && !items.iter().any(|i| std::mem::discriminant(i) == kind) {
            items.insert(at, item.clone().into_static());
            at += 1;
        }
    }
    let (Some(seq), Ok(items)) = (NonZeroU32::new(seq), Vec1::try_from(items)) else {
        return None;
    };
    let response = Response::Data(Data::Fetch { seq, items });
    Some(ResponseCodec::default().encode(&response).dump())
}

/// `* SEQ FETCH (UID UID ...`: the start of a response to the classification command,
/// which asks for UID first (RFC 3501 §7.4.2 grammar: nz-number SP "FETCH" SP "(").
/// A message's class from the items of its classification response ([`CLASSIFY_ITEMS`]),
/// with its stored size and whether its stored header carries a (forged) status field;
/// `None` when the header fields asked for are missing. A message stored larger than
/// `max_stored` that would need a view is decided here too: encrypted mail is then shown
/// as stored (logged), mail with a status field not at all.
pub(super) fn classify_items(
    items: &[MessageDataItem<'_>],
    max_stored: usize,
    uid: u32,
    mailbox: &str,
) -> Option<(Class, u32, bool)> {
    let structure = items.iter().find_map(|i| match i {
        MessageDataItem::BodyStructure(b) => Some(b),
        _ => None,
    });
    let header = items.iter().find_map(|i| match i {
        MessageDataItem::BodyExt {
            section: Some(Section::HeaderFields(..)),
            data,
            ..
        } => Some(data.0.as_ref().map(|d| d.as_ref()).unwrap_or_default()),
        _ => None,
    })?;
    let fields = crate::mime::fields(header);
    let forged = fields.iter().any(|f| f.is(crate::pgp::STATUS_HEADER));
    let mut class = if forged {
        // A forged status field: the message is downloaded, the field removed.
        Class::Special
    } else if let Some(structure) = structure {
        classify(structure)
    } else {
        classify_content_type(
            fields
                .iter()
                .find(|f| f.is("Content-Type"))
                .map(|f| f.value()),
        )
    };
    let size = item_size(items);
    if class != Class::Plain && size as usize > max_stored {
        // Too large to decrypt or to hold, so known now and not downloaded.
        class = if forged {
            Class::Withheld
        } else {
            tracing::warn!(
                uid,
                mailbox,
                size,
                "message over max_message_size; shown as stored"
            );
            Class::Plain
        };
    }
    Some((class, size, forged))
}

fn classify_prefix(message: &[u8]) -> Option<(u32, u32)> {
    fn number(bytes: &[u8]) -> Option<(u32, &[u8])> {
        let len = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
        let n: u32 = std::str::from_utf8(&bytes[..len]).ok()?.parse().ok()?;
        (n > 0).then_some((n, &bytes[len..]))
    }
    let rest = message.strip_prefix(b"* ")?;
    let (seq, rest) = number(rest)?;
    let rest = rest
        .get(..11)
        .filter(|p| p.eq_ignore_ascii_case(b" FETCH (UID"))
        .map(|_| &rest[11..])?;
    let (uid, rest) = number(rest.strip_prefix(b" ")?)?;
    rest.starts_with(b" ").then_some((seq, uid))
}

/// Encrypted by structure (PGP/MIME), possibly inline (single text part), or plain.
fn classify(b: &BodyStructure<'_>) -> Class {
    match b {
        BodyStructure::Multi { subtype, .. } => {
            if subtype.as_ref().eq_ignore_ascii_case(b"encrypted") {
                Class::Special
            } else {
                Class::Plain
            }
        }
        BodyStructure::Single { body, .. } => match &body.specific {
            SpecificFields::Text { subtype, .. }
                if subtype.as_ref().eq_ignore_ascii_case(b"plain") =>
            {
                Class::Candidate
            }
            _ => Class::Plain,
        },
    }
}

/// [`classify`] from the top-level Content-Type field's value (`None`: no field, which
/// is text/plain by RFC 2045 §5.2; so is a value that names no type).
fn classify_content_type(value: Option<String>) -> Class {
    let value = value.unwrap_or_default().to_ascii_lowercase();
    // Up to the parameters or a comment, without any white space or control byte in
    // it: a parser that reads `multipart/encrypted\x0b` or `multipart / encrypted` as
    // encrypted must not find it classified plain here (it would be shown as stored).
    let media: String = value
        .chars()
        .take_while(|c| !matches!(c, ';' | '('))
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .collect();
    match media.split_once('/') {
        Some(("multipart", "encrypted")) => Class::Special,
        Some(("text", "plain")) => Class::Candidate,
        Some((t, s)) if !t.is_empty() && !s.is_empty() => Class::Plain,
        _ => Class::Candidate,
    }
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    let limit = hay.len().min(200);
    hay[..limit]
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (fuzz/ mime_view): a view FETCH answers itself that was not
    /// decrypted (a forged status field removed, or not decryptable) kept bare LFs, so
    /// RFC822.SIZE counted them while BODY[] was sent with CRLF, one byte longer each.
    #[test]
    fn rfc822_size_is_the_length_of_body_for_views_not_decrypted() {
        let raw = b"Subject: x\nSealpost-Decrypted: yes\n\nbody\nmore\n";
        let view = View::new(
            crate::mime::without_fields(raw, &[crate::pgp::STATUS_HEADER]),
            ViewKind::Undecryptable("no key".into()),
            Vec::new(),
        );
        let items = [
            MessageDataItemName::Rfc822Size,
            MessageDataItemName::BodyExt {
                section: None,
                partial: None,
                peek: true,
            },
            MessageDataItemName::Rfc822,
        ];
        let line = String::from_utf8(respond(&view, 1, 5, &items, &[]).unwrap()).unwrap();
        let body = "Subject: x\r\n\r\nbody\r\nmore\r\n";
        let n = body.len();
        assert!(line.contains(&format!("RFC822.SIZE {n} ")), "{line}");
        assert!(
            line.contains(&format!("BODY[] {{{n}}}\r\n{body}")),
            "{line}"
        );
        assert!(
            line.contains(&format!("RFC822 {{{n}}}\r\n{body}")),
            "{line}"
        );
    }

    #[test]
    fn classification_prefixes() {
        assert_eq!(
            classify_prefix(b"* 5 FETCH (UID 12 BODYSTRUCTURE (((((((((("),
            Some((5, 12))
        );
        assert_eq!(classify_prefix(b"* 5 fetch (uid 12 X"), Some((5, 12)));
        assert_eq!(classify_prefix(b"* 5 FETCH (FLAGS () UID 12 "), None);
        assert_eq!(classify_prefix(b"* 0 FETCH (UID 12 "), None);
        assert_eq!(classify_prefix(b"* 5 FETCH (UID 12"), None);
        assert_eq!(classify_prefix(b"* 5 FETCH"), None);
    }

    #[test]
    fn classification_from_the_content_type() {
        let c = |v: &str| classify_content_type(Some(v.to_string()));
        assert_eq!(
            c("multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=x"),
            Class::Special
        );
        assert_eq!(c("Multipart/Encrypted;boundary=x"), Class::Special);
        assert_eq!(c("text/plain; charset=utf-8"), Class::Candidate);
        assert_eq!(c("TEXT/PLAIN (a comment)"), Class::Candidate);
        assert_eq!(classify_content_type(None), Class::Candidate);
        assert_eq!(c("garbage"), Class::Candidate);
        assert_eq!(c("multipart/mixed; boundary=x"), Class::Plain);
        assert_eq!(c("text/html"), Class::Plain);
        assert_eq!(c("multipart/encrypted-not"), Class::Plain);
        // White space and control bytes inside the media type are no disguise.
        assert_eq!(c("multipart/encrypted\x0b; boundary=x"), Class::Special);
        assert_eq!(c("multipart / encrypted;boundary=x"), Class::Special);
        assert_eq!(c("text/plain\x01"), Class::Candidate);
    }

    #[test]
    fn sets_and_lines() {
        assert_eq!(format_set(&[5, 1, 2, 3, 9, 10]), "1:3,5,9:10");
        let set = |t: &str| SequenceSet::try_from(t).unwrap();
        assert_eq!(explicit_uids(&set("4,7:9")), Some(vec![4, 7, 8, 9]));
        assert_eq!(explicit_uids(&set("9:7")), Some(vec![7, 8, 9]));
        assert_eq!(explicit_uids(&set("1:*")), None);
        assert_eq!(explicit_uids(&set("1:100000")), None);
        assert_eq!(
            split_fetch_line(b"a1 UID fetch 1:5 (UID RFC822.SIZE)\r\n"),
            Some(("1:5".into(), "(UID RFC822.SIZE)".into()))
        );
        assert_eq!(
            split_fetch_line(b"a2 FETCH 3 BODY[]\r\n"),
            Some(("3".into(), "BODY[]".into()))
        );
        assert_eq!(split_fetch_line(b"a2 STORE 3 +FLAGS (x)\r\n"), None);
    }
}
