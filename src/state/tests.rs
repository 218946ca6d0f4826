use super::*;
use crate::config::KeySource;
use crate::keys::autocrypt::PeerState;
use crate::keys::provenance::Provenance;
use crate::trust::Vouch;

fn prov(addr: &str) -> Provenance {
    let mut vouched = std::collections::BTreeMap::new();
    vouched.insert(addr.to_string(), Vouch::Wkd);
    Provenance {
        source: KeySource::Wkd,
        address: addr.into(),
        found_at: 1,
        refreshed_at: 2,
        vouched,
        local: false,
    }
}

#[test]
fn rows_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let s = State::open(&StateConfig::default(), dir.path()).unwrap();
    s.update_provenance("ab", |_| Some(prov("bob@example.org")))
        .unwrap();
    s.remember_miss("wkd", "carol@example.org", 100, None)
        .unwrap();
    s.update_peers("alice@example.com", &["bob@example.org".into()], |p| {
        p.entry("bob@example.org".into()).or_default().last_seen = 7;
    })
    .unwrap();
    drop(s);
    let s = State::open(&StateConfig::default(), dir.path()).unwrap();
    assert!(s.describe().starts_with("SQLite "));
    assert_eq!(
        s.provenance("ab").unwrap().unwrap().address,
        "bob@example.org"
    );
    assert!(s.recent_miss("wkd", "carol@example.org", 100).unwrap());
    assert!(!s.recent_miss("wkd", "carol@example.org", 101).unwrap());
    assert!(!s.recent_miss("vks", "carol@example.org", 0).unwrap());
    s.forget_misses().unwrap();
    assert!(!s.recent_miss("wkd", "carol@example.org", 0).unwrap());
    let p = s
        .peer("alice@example.com", "bob@example.org")
        .unwrap()
        .unwrap();
    assert_eq!(p.last_seen, 7);
    assert_eq!(
        s.peer("carol@example.com", "bob@example.org").unwrap(),
        None
    );
    s.update_provenance("ab", |_| None).unwrap();
    assert!(s.all_provenance().unwrap().is_empty());
}

/// Instances sharing `state_dir` (README: behind a load balancer) may start together:
/// each must open the file another one is creating at that moment.
#[test]
fn instances_starting_together_all_open_a_new_file() {
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let start = std::sync::Barrier::new(6);
        std::thread::scope(|s| {
            let opened: Vec<_> = (0..6)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        State::open(&StateConfig::default(), dir.path()).map(|_| ())
                    })
                })
                .collect();
            for o in opened {
                o.join().unwrap().unwrap();
            }
        });
    }
}

#[test]
fn garbage_file_is_reported_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SQLITE_FILE);
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();
    let err = State::open(&StateConfig::default(), dir.path())
        .err()
        .expect("a garbage file must not open");
    assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("move it aside"), "{text}");
    assert_eq!(std::fs::read(&path).unwrap(), garbage);
    assert!(!dir.path().join("state.sqlite3-wal").exists());
}

#[test]
fn legacy_toml_is_imported_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("discovered.toml"),
        "[certs.abcd]\nsource = \"wkd\"\naddress = \"Bob@example.org\"\nfound_at = 5\n",
    )
    .unwrap();
    let peer = PeerState {
        last_seen: 9,
        ..PeerState::default()
    };
    let mut peers = std::collections::BTreeMap::new();
    peers.insert("bob@example.org".to_string(), peer.clone());
    let mut ids = std::collections::BTreeMap::new();
    ids.insert("alice@example.com".to_string(), peers);
    let mut t = toml::map::Map::new();
    t.insert("identities".into(), toml::Value::try_from(&ids).unwrap());
    std::fs::write(
        dir.path().join("autocrypt.toml"),
        toml::to_string(&t).unwrap(),
    )
    .unwrap();
    let s = State::open(&StateConfig::default(), dir.path()).unwrap();
    let p = s.provenance("abcd").unwrap().unwrap();
    // Entries from before addresses were kept vouch for their one address.
    assert_eq!(p.vouch_for("bob@example.org"), Some(Vouch::Wkd));
    assert_eq!(
        s.peer("alice@example.com", "bob@example.org").unwrap(),
        Some(peer)
    );
    assert!(!dir.path().join("discovered.toml").exists());
    assert!(dir.path().join("discovered.toml.imported").exists());
    assert!(dir.path().join("autocrypt.toml.imported").exists());
    // A change after the import is not undone by a stale file put back.
    s.update_provenance("abcd", |_| None).unwrap();
    drop(s);
    std::fs::copy(
        dir.path().join("discovered.toml.imported"),
        dir.path().join("discovered.toml"),
    )
    .unwrap();
    let s = State::open(&StateConfig::default(), dir.path()).unwrap();
    assert!(s.provenance("abcd").unwrap().is_none());
}

#[test]
fn unreadable_legacy_toml_stops_the_open() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("autocrypt.toml"), "identities = 3 [").unwrap();
    let err = State::open(&StateConfig::default(), dir.path())
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("autocrypt.toml"), "{err}");
    assert!(dir.path().join("autocrypt.toml").exists());
}

#[test]
fn urls_are_checked_and_redacted() {
    assert!(check_url("postgres://sealpost@db/sealpost").is_ok());
    assert!(check_url("postgresql://u:pw@127.0.0.1:5433/x").is_ok());
    let e = check_url("mysql://u:secret@db/x").unwrap_err();
    assert!(!e.contains("secret") && e.contains("postgres://"), "{e}");
    assert_eq!(
        redact_url("postgres://u:secret@db:5432/x?sslmode=disable&password=p2"),
        "postgres://u:***@db:5432/x?sslmode=disable&password=***"
    );
    assert_eq!(redact_url("postgres://u@db/x"), "postgres://u@db/x");
}

#[test]
fn the_documented_state_section_is_valid_and_a_bad_url_is_named() {
    use crate::config::Config;
    let path = Path::new("/etc/sealpost/sealpost.toml");
    let example = include_str!("../../config.example.toml");
    let text = example.replace("#[state]\n#url = ", "[state]\nurl = ");
    let c = Config::parse(&text, path).unwrap();
    assert_eq!(
        c.state.url.as_deref(),
        Some("postgres://sealpost@db/sealpost")
    );
    let bad = example.replace("#[state]\n#url = \"postgres:", "[state]\nurl = \"mysql:");
    let err = Config::parse(&bad, path).unwrap_err().to_string();
    assert!(
        err.contains("state.url") && err.contains("postgres://"),
        "{err}"
    );
    let typo = example.replace("#[state]\n#url = ", "[state]\nuri = ");
    assert!(Config::parse(&typo, path).is_err());
}
