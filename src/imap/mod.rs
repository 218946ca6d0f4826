//! The IMAP proxy: one upstream connection per client connection, the conversation
//! relayed as it is except where the decrypted view of encrypted mail must be shown.

pub mod ahead;
pub mod cache;
pub mod caps;
pub mod client;
pub mod fetch;
pub mod fill;
pub mod framer;
pub mod progress;
pub mod seal;
pub mod search;
pub mod search_eval;
pub mod search_state;
pub mod server;
pub mod session;
pub mod sort;

use crate::keys::{KeyStore, LoadedIdentity};
use crate::pgp::{view_of, View, ViewKind};
use std::sync::Arc;

/// Shared by every IMAP session of the process.
pub struct ImapContext {
    /// The `[[account]]` this context serves; its listeners' sessions use only it.
    pub account: Arc<str>,
    /// Learns peers' keys from Autocrypt headers in fetched mail (per identity, with this
    /// account's provider authserv-id).
    pub autocrypt: Option<Arc<crate::keys::autocrypt::Learner>>,
    pub identities: Vec<Arc<LoadedIdentity>>,
    pub store: Arc<KeyStore>,
    pub cache: Arc<cache::ViewCache>,
    /// Largest message (and literal) handled, in bytes.
    pub max_message_size: usize,
    /// Longest line accepted from client or server.
    pub max_line_length: usize,
    /// Decryptions that may run at once, process-wide (one per core).
    pub decrypt_slots: Arc<tokio::sync::Semaphore>,
    /// Decrypted bytes one FETCH may hold at once (see `fetch::FetchJob`).
    pub max_job_view_bytes: usize,
    /// Which APPENDs are sealed to the identity's own key.
    pub encrypt_append: crate::config::EncryptAppend,
    /// Which messages of a mailbox are encrypted, and what SEARCH reads of them.
    pub search: Arc<search_state::SearchState>,
    /// Mailboxes classified at SELECT over a connection of sealpost's own (see
    /// [`ahead`]).
    pub ahead: Arc<ahead::Ahead>,
}

impl ImapContext {
    /// Whether a session keeps the credential its client logged in with, for the
    /// connections sealpost opens in its name (see [`ahead`] and [`fill`]).
    pub fn keeps_credential(&self) -> bool {
        self.ahead.enabled() || self.search.filler().enabled()
    }

    /// The identity whose key decrypts for a login name (`login`, else `address`),
    /// among this account's identities only, else from `[keys] secret_dir`.
    pub fn identity_for_login(&self, login: &str) -> Option<Arc<LoadedIdentity>> {
        self.store.identity_for_login(&self.identities, login)
    }

    /// `raw`, a message a client APPENDs as `identity`, sealed to that identity's own
    /// key (see [`crate::pgp::stored`]).
    /// The loaded identity `address` names: this account's, else one from `[keys]
    /// secret_dir`.
    pub fn loaded_identity(&self, address: &str) -> Option<Arc<LoadedIdentity>> {
        self.identities
            .iter()
            .find(|i| {
                crate::keys::normalize_address(&i.address)
                    == crate::keys::normalize_address(address)
            })
            .cloned()
            .or_else(|| self.store.secret_identity(address))
    }

    pub fn seal(&self, identity: &str, raw: &[u8]) -> Result<Vec<u8>, crate::pgp::PgpError> {
        let id = self
            .identities
            .iter()
            .find(|i| i.address.eq_ignore_ascii_case(identity))
            .cloned()
            .or_else(|| self.store.secret_identity(identity))
            .ok_or(crate::pgp::PgpError::NoRecipients)?;
        let boundary = crate::pgp::random_boundary();
        crate::pgp::stored::seal(raw, &id.cert, id.signer.as_ref(), &boundary)
    }

    /// The view of a stored message for `identity` (decrypting when it can), with
    /// at most `max_size` bytes of plaintext.
    pub fn view(&self, identity: &str, raw: &[u8], max_size: usize) -> View {
        let Some(id) = self
            .identities
            .iter()
            .find(|i| {
                crate::keys::normalize_address(&i.address)
                    == crate::keys::normalize_address(identity)
            })
            .cloned()
            .or_else(|| self.store.secret_identity(identity))
        else {
            return View::new(
                raw.to_vec(),
                ViewKind::Undecryptable("no identity".into()),
                Vec::new(),
            );
        };
        // References only: the store's certificates are shared, never copied per message.
        let stored = self.store.believed().unwrap_or_default();
        let own = crate::trust::Believed::for_addresses(id.cert.clone(), &[&id.address]);
        let mut certs: Vec<&crate::trust::Believed> = stored.iter().collect();
        certs.push(&own);
        let mut view = view_of(
            raw,
            &id.decryptors,
            &certs,
            Some(&id.cert),
            max_size.min(self.max_message_size),
        );
        if let ViewKind::Decrypted(_) = view.kind {
            // Prepared once: every FETCH item is then a range of these bytes, and
            // RFC822.SIZE is the length of BODY[].
            view.bytes = crate::mime::view::prepare(std::mem::take(&mut view.bytes));
        }
        view
    }
}
