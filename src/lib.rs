//! sealpost: a transparent encrypting mail proxy.
//!
//! A mail client talks to sealpost as if it were the provider; sealpost relays to the
//! provider over verified TLS and applies OpenPGP on the way. See DESIGN.md for the
//! module map: each module here has one job.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod imap;
pub mod keys;
pub mod listener;
pub mod mime;
pub mod pgp;
pub mod policy;
pub mod smtp;
pub mod tls;
