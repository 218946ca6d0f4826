//! Learning from `Autocrypt:` / `Autocrypt-Gossip:` header fields (src/keys/autocrypt.rs,
//! with the `Authentication-Results` check of src/keys/authres.rs) over arbitrary
//! headers, optionally carrying a real key in a field sealpost itself wrote.
//!
//! Properties: never a panic; gossip is learned only inside a signed-good encrypted
//! part (Autocrypt 1.1 §2.7 as sealpost applies it); a key reported learned is then
//! the key the store gives for that peer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealpost::keys::autocrypt::{AutocryptStore, Evidence, Learned};
use std::sync::{Arc, Mutex, OnceLock};

#[path = "common/input.rs"]
mod input;

/// The state database and a fresh identity for this run: each run learns as another
/// identity (the state is per identity), and the database is replaced every 1,000 runs
/// so that it stays small (SQLite in memory cannot run the WAL journal the state uses).
fn state() -> (Arc<AutocryptStore>, String) {
    struct Db {
        store: Arc<AutocryptStore>,
        runs: u64,
        _dir: tempfile::TempDir,
    }
    static DB: Mutex<Option<Db>> = Mutex::new(None);
    let mut db = DB.lock().unwrap();
    if db.as_ref().is_none_or(|d| d.runs % 1000 == 999) {
        let dir = tempfile::tempdir().unwrap();
        let state = sealpost::state::State::open_sqlite(&dir.path().join("state.db")).unwrap();
        *db = Some(Db {
            store: Arc::new(AutocryptStore::new(Arc::new(state))),
            runs: 0,
            _dir: dir,
        });
    }
    let d = db.as_mut().unwrap();
    d.runs += 1;
    (d.store.clone(), format!("user{}@example.com", d.runs))
}

struct Fixed {
    cert: sequoia_openpgp::Cert,
    _dir: tempfile::TempDir,
}

fn fixed() -> &'static Fixed {
    static F: OnceLock<Fixed> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let g = sealpost::keys::generate("bob@example.org", dir.path()).unwrap();
        let id = sealpost::keys::load_identity(&g.identity("bob@example.org", None)).unwrap();
        Fixed {
            cert: id.cert.clone(),
            _dir: dir,
        }
    })
}

const PEERS: [&str; 4] = [
    "bob@example.org",
    "Dave <dave@example.net>",
    "alice@example.com",
    "BOB@Example.ORG",
];

// Input layout: flags (append a key field, prefer-encrypt=mutual, as gossip, inside a
// signed-good encrypted part, with the provider's authserv-id), which peers (bits
// over `PEERS`: the key field's address, and who the signature is good for), a time
// offset (two bytes), then the header.
fuzz_target!(|bytes: &[u8]| {
    let f = fixed();
    let mut raw = input::Input(bytes);
    let flags = raw.byte();
    let peers = raw.byte();
    let now = 1_800_000_000 + raw.u16() as i64 * 3600;
    let mut header = raw.rest().to_vec();
    let signed_good_for: Option<Vec<String>> = (flags & 8 != 0).then(|| {
        (0..4)
            .filter(|i| peers & (16 << i) != 0)
            .map(|i| sealpost::keys::normalize_address(PEERS[i]))
            .collect()
    });
    let authserv_id = (flags & 16 != 0).then(|| "mx.example.org".to_string());
    if flags & 1 != 0 {
        let addr = PEERS[peers as usize % 4];
        if let Some(field) = sealpost::keys::autocrypt::header_field(&f.cert, addr, flags & 2 != 0)
        {
            let field = if flags & 4 != 0 {
                field.replacen("Autocrypt:", "Autocrypt-Gossip:", 1)
            } else {
                field
            };
            header.extend_from_slice(field.as_bytes());
            if !field.ends_with('\n') {
                header.extend_from_slice(b"\r\n");
            }
        }
    }
    let (store, me) = state();
    let evidence = Evidence {
        signed_good_for: signed_good_for.as_deref(),
        authserv_id: authserv_id.as_deref(),
    };
    match store.learn(&me, &header, evidence, now) {
        Learned::Nothing => {}
        Learned::Key { addr } => {
            assert!(
                store.key_for(&me, &addr).is_some(),
                "learned a key for {addr:?} that the store does not give"
            );
        }
        Learned::Gossip { addrs } => {
            assert!(
                signed_good_for.is_some(),
                "gossip {addrs:?} learned outside a signed encrypted part"
            );
        }
    }
});
