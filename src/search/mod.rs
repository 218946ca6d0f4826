//! SEARCH that sees through the encryption (DESIGN.md, "Search").
//!
//! The IMAP side (`imap::search`) answers a client's SEARCH by asking upstream for every
//! criterion upstream can judge (flags, dates, sequence and UID sets, MODSEQ) and by
//! judging here, for encrypted messages, the criteria that depend on content. This
//! module holds what is judged here:
//!
//! * [`Doc`]: what a search reads of one message as the client sees it (its view): header
//!   fields decoded, the text of its parts decoded, its size and its Date;
//! * [`Leaf`]: one content criterion (`BODY`, `TEXT`, `HEADER`, `SUBJECT`, `FROM`, `TO`,
//!   `CC`, `BCC`, `LARGER`, `SMALLER`, `SENTBEFORE`, `SENTON`, `SENTSINCE`) and whether a
//!   [`Doc`] matches it, the way Dovecot matches the same message stored in the clear;
//! * [`index`]: the persistent per-identity store of [`Doc`]s and their words, which
//!   names the candidates for a substring search; its files are sealed by
//!   [`sealed_dir`] under a key encrypted to the identity's own certificate
//!   (`index_key`).
//!
//! Behind [`Doc`] and [`Leaf`], each rule of the reference server has its own module:
//! `fold` (Dovecot's case folding), `header` (unfolding, encoded-words, address lists as
//! FROM/TO/CC/BCC see them) and `date` (the Date field as SENT* read it).

mod date;
pub mod doc;
pub mod fold;
mod header;
pub mod index;
mod index_key;
pub mod sealed_dir;
mod terms;

pub use doc::{Doc, Leaf};
pub use index::{Field, IndexError, SearchIndex};
