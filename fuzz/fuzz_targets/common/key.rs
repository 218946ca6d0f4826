//! The fixed test key of the OpenPGP targets: `fuzz/keys/alice.pgp`, made once with
//! `sq key generate --userid '<alice@example.com>' --expires never` and committed (a
//! fuzzing key, no secret), so that the seeds encrypted to it (`fuzz/keys/sample*`)
//! decrypt in every run and a crash input replays the same way anywhere.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

pub const ADDRESS: &str = "alice@example.com";

pub fn alice() -> &'static sealpost::keys::LoadedIdentity {
    static ID: OnceLock<sealpost::keys::LoadedIdentity> = OnceLock::new();
    ID.get_or_init(|| {
        let id = sealpost::config::Identity {
            address: ADDRESS.into(),
            login: None,
            account: None,
            secret_key: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/keys/alice.pgp")),
            passphrase_file: None,
            passphrase_credential: None,
            passphrase_env: None,
        };
        sealpost::keys::load_identity(&id).expect("loading fuzz/keys/alice.pgp")
    })
}
