//! sealpost: a transparent encrypting mail proxy.
//!
//! A mail client talks to sealpost as if it were the provider; sealpost relays to the
//! provider over verified TLS and applies OpenPGP on the way. See DESIGN.md for the
//! module map: each module here has one job.
#![forbid(unsafe_code)]

pub mod app;
pub mod audit;
pub mod autoconfig;
pub mod config;
pub mod imap;
pub mod init;
pub mod keys;
pub mod listener;
pub mod metrics;
pub mod mime;
pub mod net;
pub mod notify;
pub mod paths;
pub mod per_ip;
pub mod pgp;
pub mod policy;
pub mod proxy_protocol;
pub mod search;
pub mod serve;
pub mod smtp;
pub mod state;
pub mod stats;
pub mod status;
pub mod tls;
pub mod trust;

/// An error and its causes, each once: `what: why: deeper why` (what anyhow's `{:#}`
/// prints), for places that report errors as text (`sealpost check`, logs).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}
