//! A known panic inside sequoia-openpgp 2.4.2 on crafted encrypted data
//! (`parse.rs:6367`, `data_consume_hard(..).unwrap()` while opening a SEIP v1 packet; see
//! fuzz/README.md, "Found"): sealpost cannot fix it, and contains it where it decrypts a
//! fetched message (`imap::fetch::view_or_stand_in`). So that the targets keep looking
//! past it, a panic raised inside sequoia-openpgp unwinds to the caller instead of
//! aborting the run, and [`contained`] turns it into `None`; every other panic still
//! aborts, and a sequoia panic nobody catches still aborts too (libfuzzer-sys does).

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

static SEQUOIA_PANICKED: AtomicBool = AtomicBool::new(false);

pub fn tolerate_sequoia_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_sequoia = info
                .location()
                .is_some_and(|l| l.file().contains("/sequoia-openpgp-"));
            if in_sequoia {
                SEQUOIA_PANICKED.store(true, Ordering::Relaxed);
            } else {
                abort(info)
            }
        }));
    });
}

/// `f()`, or `None` if sequoia-openpgp panicked inside it (the known defect above).
pub fn contained<T>(f: impl FnOnce() -> T) -> Option<T> {
    tolerate_sequoia_panics();
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
