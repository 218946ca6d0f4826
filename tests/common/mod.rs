//! Shared integration-test harness for sealpost.
//!
//! Use from a test file with `mod common;` and then e.g.
//! `use common::{keyring, Sink, SinkConfig, SinkMode, TestCa};`.
//!
//! Everything here talks to 127.0.0.1 only and uses external tools that are
//! installed on the test machine: the `openssl` CLI, `gpg` (2.2), `sq` (0.27)
//! and Debian's `/usr/bin/python3` with python3-aiosmtpd; [`pullers`] drives
//! offlineimap3, getmail6 and fetchmail.
#![allow(dead_code, unused_imports)]

pub mod child;
pub mod cyrus;
pub mod dovecot;
pub mod fault;
pub mod imapclients;
pub mod keyserver;
pub mod listeners;
pub mod net;
pub mod pgp;
pub mod postfix;
pub mod postgres;
pub mod prometheus;
pub mod proxy;
pub mod pullers;
pub mod sink;
pub mod tls;

pub use dovecot::Dovecot;
pub use imapclients::{
    curl_fetch, curl_imap, imaplib_run, imaplib_script, imaplib_spawn, mbsync_normalize,
    mbsync_pull, parse_fetches, script_value, script_values, Fetch, ImapReply, ImaplibChild,
    ImaplibOutput, MbsyncPull, RawImap,
};
pub use keyserver::{
    gpg_export_armored, gpg_export_binary, wkd_advanced_url, wkd_direct_url, wkd_hash, HttpGet,
    KeyServer, KEYSERVER_HOSTS,
};
pub use net::{
    free_port, py_sendmail, run_python, run_python_ok, wait_for_port, PySend, PySendMode,
    PySendResult, PYTHON,
};
pub use pgp::{
    armored, gpg, gpg_decrypt, gpg_detach_sign, gpg_encrypt, gpg_list_packets,
    gpg_recipient_keyids, keyring, sq_decrypt, GpgResult, Keyring, Person,
};
pub use pullers::{Pull, Puller};
pub use sink::{Sink, SinkConfig, SinkMessage, SinkMode};
pub use tls::TestCa;

use std::path::PathBuf;

/// A fresh temporary directory (removed on drop) under /tmp with a short
/// name.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sp")
        .tempdir_in("/tmp")
        .expect("create temp dir under /tmp")
}

/// Path to a file under `tests/support/`.
pub fn support_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("support")
        .join(name)
}

/// `s` as one URL path segment or query value: everything but RFC 3986's unreserved
/// characters percent-encoded (IMAP URLs for curl, the key server's WKD and VKS paths).
pub fn percent_encode(s: &str) -> String {
    const NOT_UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, NOT_UNRESERVED).to_string()
}
