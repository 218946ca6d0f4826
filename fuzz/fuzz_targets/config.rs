//! The TOML configuration: parsing, path resolution and validation (src/config.rs)
//! over arbitrary text.
//!
//! Properties: never a panic; an error names the file (STYLE.md: a config error names
//! the file, the key and the accepted values); an accepted config answers every
//! accessor the rest of sealpost relies on (each identity's account exists, the
//! timeouts, the key and control paths) without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

const PATH: &str = "/fuzz/etc/sealpost.toml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match sealpost::config::Config::parse(text, Path::new(PATH)) {
        Err(e) => {
            let shown = sealpost::error_chain(&e);
            assert!(
                shown.contains(PATH),
                "error does not name the file: {shown}"
            );
        }
        Ok(cfg) => {
            for id in &cfg.identities {
                let account = cfg.identity_account(id);
                assert!(
                    cfg.accounts.iter().any(|a| a.name == account),
                    "identity in unknown account {account}"
                );
            }
            let _ = cfg.limits.idle_timeout();
            let _ = cfg.limits.upstream_timeout();
            let _ = cfg.control_socket();
            let _ = cfg.key_dir();
            assert!(cfg.state_dir.is_absolute(), "state_dir not resolved");
        }
    }
});
