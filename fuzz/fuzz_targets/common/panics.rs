//! Known panics inside dependencies on crafted input (see fuzz/README.md, "Found"):
//! sequoia-openpgp 2.4.2 on encrypted data (`parse.rs:6367`, `data_consume_hard(..)
//! .unwrap()` while opening a SEIP v1 packet) and mail-parser 0.11.9 on some MIME
//! structures (`message.rs:485`). sealpost cannot fix them, and contains them where it
//! builds a fetched message's view (`imap::fetch::view_or_stand_in`) and a search Doc. So
//! that the targets keep looking past them, a panic raised inside either crate unwinds
//! to the caller instead of aborting the run, and [`contained`] turns it into `None`;
//! every other panic still aborts, and one of theirs nobody catches still aborts too
//! (libfuzzer-sys does).

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

static SEQUOIA_PANICKED: AtomicBool = AtomicBool::new(false);

pub fn tolerate_known_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let known = info.location().is_some_and(|l| {
                l.file().contains("/sequoia-openpgp-") || l.file().contains("/mail-parser-")
            });
            if known {
                SEQUOIA_PANICKED.store(true, Ordering::Relaxed);
            } else {
                abort(info)
            }
        }));
    });
}

/// `f()`, or `None` if one of the known panics above happened inside it.
pub fn contained<T>(f: impl FnOnce() -> T) -> Option<T> {
    tolerate_known_panics();
    SEQUOIA_PANICKED.store(false, Ordering::Relaxed);
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(p) if SEQUOIA_PANICKED.load(Ordering::Relaxed) => {
            drop(p);
            None
        }
        Err(p) => std::panic::resume_unwind(p),
    }
}
