//! The state database end to end, with the real binary: SQLite by default (survives a
//! restart and a kill -9 in the middle of a burst of Autocrypt learning, refuses a
//! corrupt file, imports the old TOML files once) and PostgreSQL shared by two
//! instances (a server started by the test, see tests/common/postgres.rs).

mod common;

use common::dovecot::Dovecot;
use common::imapclients::RawImap;
use common::postgres::Postgres;
use common::proxy::{sealpost_bin, sealpost_cmd, Proxy, ProxyOptions};
use common::{
    armored, gpg_decrypt, gpg_export_binary, keyring, parse_fetches, wkd_hash, KeyServer,
    PySendResult, Sink, SinkConfig, TestCa,
};
use openpgp::cert::CertBuilder;
use openpgp::serialize::SerializeInto;
use sequoia_openpgp as openpgp;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);
const ALICE: (&str, &str) = ("alice@example.com", "alicepw");

/// A message from `from` announcing `key` (binary certificate) in its Autocrypt header.
fn autocrypt_message(from: &str, key: &[u8], day: u32) -> Vec<u8> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(key);
    let folded: String = b64
        .as_bytes()
        .chunks(72)
        .map(|c| format!("\r\n {}", std::str::from_utf8(c).unwrap()))
        .collect();
    format!(
        "From: <{from}>\r\nTo: alice@example.com\r\nDate: {day:02} Nov 2026 09:00:00 +0000\r\nSubject: hi\r\nAutocrypt: addr={from}; keydata={folded}\r\n\r\nhello\r\n"
    )
    .into_bytes()
}

fn alice_sink(ca: &TestCa) -> Sink {
    Sink::start_with(
        ca,
        SinkConfig {
            user: ALICE.0.into(),
            password: ALICE.1.into(),
            ..SinkConfig::default()
        },
    )
}

fn send_as_alice(proxy: &Proxy, ca: &TestCa, to: &str) -> PySendResult {
    let msg = format!("From: alice@example.com\r\nTo: {to}\r\nSubject: s\r\n\r\nwords\r\n");
    proxy.submit_as(ca, ALICE, &[to], msg.as_bytes())
}

/// What `keys lookup ADDRESS --as alice` says the Autocrypt state holds for ADDRESS.
fn autocrypt_lookup(config: &std::path::Path, address: &str) -> String {
    let out = sealpost_cmd(config, &["keys", "lookup", address, "--as", ALICE.0]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("autocrypt"))
        .unwrap_or("")
        .to_string()
}

#[test]
fn acknowledged_autocrypt_state_survives_kill_9_and_a_restart() {
    let ca = TestCa::shared();
    let sink = alice_sink(ca);
    let dovecot = Dovecot::start(ca, &[ALICE]);
    const N: usize = 40;
    let mut fprs = Vec::new();
    for i in 1..=N {
        let addr = format!("peer{i}@example.net");
        let (cert, _) = CertBuilder::general_purpose(Some(format!("<{addr}>")))
            .generate()
            .unwrap();
        let public = cert.strip_secret_key_material();
        let msg = autocrypt_message(&addr, &public.to_vec().unwrap(), 1 + (i % 28) as u32);
        dovecot.append(ALICE.0, ALICE.1, "INBOX", &msg, &[]);
        fprs.push(public.fingerprint().to_hex());
    }
    let mut opts = ProxyOptions::new(sink.port);
    opts.imap_upstream = Some((dovecot.imaps_port, "tls"));
    opts.alice_login = ALICE.0.into();
    let mut proxy = Proxy::start(ca, &opts);

    // One FETCH of every message; each untagged answer reaches the client only after
    // its Autocrypt header was learned and committed. Kill -9 halfway through.
    let mut c = RawImap::connect_login(
        proxy.imap_port,
        "starttls",
        Some(&ca.ca_pem),
        ALICE.0,
        ALICE.1,
    );
    c.command_ok("EXAMINE INBOX");
    let tag = c.new_tag();
    c.send_raw(format!("{tag} UID FETCH 1:* (UID BODY.PEEK[])\r\n").as_bytes());
    let mut acknowledged = Vec::new();
    while acknowledged.len() < N / 2 {
        let r = c.read_response();
        for f in parse_fetches(&r) {
            acknowledged.push(f.uid().expect("UID") as usize);
        }
    }
    proxy.kill9();
    drop(c);
    assert!(!proxy.dir.path().join("state/autocrypt.toml").exists());

    proxy.restart();
    for uid in &acknowledged {
        let line = autocrypt_lookup(&proxy.config, &format!("peer{uid}@example.net"));
        assert!(
            line.contains(&fprs[uid - 1]),
            "peer{uid} was acknowledged before the kill but is not in the state: {line:?}\n{}",
            proxy.log()
        );
    }
    // The restarted instance uses what was learned: mail to peer1 goes encrypted.
    let first = acknowledged[0];
    let r = send_as_alice(&proxy, ca, &format!("peer{first}@example.net"));
    assert!(r.ok, "{r:?}\n{}", proxy.log());
    let got = sink.wait_for_messages(1, WAIT);
    assert!(
        got[0].text().contains("multipart/encrypted"),
        "{}",
        got[0].text()
    );

    let out = sealpost_cmd(&proxy.config, &["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "SQLite {} opened",
            proxy.dir.path().join("state/state.sqlite3").display()
        )),
        "{text}"
    );
}

#[test]
fn a_corrupt_state_file_stops_check_and_run_and_is_left_untouched() {
    let ca = TestCa::shared();
    let dir = common::tempdir();
    let config = Proxy::write_config(dir.path(), ca, &ProxyOptions::new(1), (0, 0));
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let db = state.join("state.sqlite3");
    let garbage: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&db, &garbage).unwrap();

    let out = sealpost_cmd(&config, &["check"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&db.display().to_string()) && text.contains("move it aside"),
        "{text}"
    );

    let out = std::process::Command::new(sealpost_bin())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "run must refuse: {err}");
    assert!(
        err.contains(&db.display().to_string()) && err.contains("restore it from a backup"),
        "{err}"
    );

    assert_eq!(std::fs::read(&db).unwrap(), garbage, "the file was changed");
    assert!(!state.join("state.sqlite3-wal").exists());
}

#[test]
fn the_old_toml_state_is_imported_once() {
    let ca = TestCa::shared();
    let dir = common::tempdir();
    let mut opts = ProxyOptions::new(1);
    opts.alice_identity = false;
    let config = Proxy::write_config(dir.path(), ca, &opts, (0, 0));
    let bob = keyring().bob();
    let out = sealpost_cmd(
        &config,
        &["keys", "import", &bob.pub_asc.display().to_string()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = dir.path().join("state");
    // Written the way earlier versions wrote them.
    std::fs::write(
        state.join("discovered.toml"),
        format!(
            "[certs.{}]\nsource = \"wkd\"\naddress = \"bob@example.org\"\nfound_at = 1700000000\n",
            bob.fpr.to_lowercase()
        ),
    )
    .unwrap();
    let dave =
        String::from_utf8(std::fs::read(&keyring().person("dave").pub_asc).unwrap()).unwrap();
    std::fs::write(
        state.join("autocrypt.toml"),
        format!(
            "[identities.\"alice@example.com\".\"dave@example.net\"]\nlast_seen = 1700000000\nautocrypt_timestamp = 1700000000\nprefer_encrypt = \"mutual\"\nkey = '''\n{dave}'''\n"
        ),
    )
    .unwrap();

    let list = |config: &std::path::Path| {
        let out = sealpost_cmd(config, &["keys", "list"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = list(&config);
    assert!(
        text.contains("discovered: wkd for bob@example.org"),
        "{text}"
    );
    assert!(!state.join("discovered.toml").exists());
    assert!(state.join("discovered.toml.imported").exists());
    assert!(state.join("autocrypt.toml.imported").exists());
    let line = autocrypt_lookup(&config, "dave@example.net");
    assert!(line.contains(&keyring().person("dave").fpr), "{line:?}");

    // Once: the same file put back with other contents changes nothing.
    std::fs::write(
        state.join("discovered.toml"),
        format!(
            "[certs.{}]\nsource = \"vks\"\naddress = \"bob@example.org\"\nfound_at = 1700000000\n",
            bob.fpr.to_lowercase()
        ),
    )
    .unwrap();
    let text = list(&config);
    assert!(
        text.contains("discovered: wkd for bob@example.org"),
        "{text}"
    );
    assert!(!text.contains("vks"), "{text}");
}

fn keys_config(ks: &KeyServer) -> String {
    format!(
        "discover = [\"store\", \"autocrypt\", \"wkd\"]\nlookup_timeout_secs = 2\nrefresh_interval_secs = 0\n[keys.resolve]\n{}",
        ks.resolve_toml()
    )
}

#[test]
fn two_instances_on_one_postgresql_share_provenance_misses_and_autocrypt_state() {
    let pg = Postgres::start();
    let password = "pw-never-printed-7q";
    let ca = TestCa::shared();
    let sink = alice_sink(ca);
    let dovecot = Dovecot::start(ca, &[ALICE]);
    let ks = KeyServer::start(ca);
    ks.publish_wkd_advanced("bob@example.org", &gpg_export_binary("bob"));
    dovecot.append(
        ALICE.0,
        ALICE.1,
        "INBOX",
        &autocrypt_message("dave@example.net", &gpg_export_binary("dave"), 24),
        &[],
    );
    let mut opts = ProxyOptions::new(sink.port);
    opts.imap_upstream = Some((dovecot.imaps_port, "tls"));
    opts.alice_login = ALICE.0.into();
    opts.keys_extra = keys_config(&ks);
    opts.extra = format!("[state]\nurl = \"{}\"\n", pg.url(password));
    let a = Proxy::start(ca, &opts);
    // B shares A's certificate directory (as instances behind one name would).
    opts.key_dir = Some(a.dir.path().join("state/keys"));
    let b = Proxy::start(ca, &opts);

    // A learns dave's key from his Autocrypt header, finds bob's in WKD, and misses
    // nobody's.
    let mut c = RawImap::connect_login(a.imap_port, "starttls", Some(&ca.ca_pem), ALICE.0, ALICE.1);
    c.command_ok("EXAMINE INBOX");
    c.command_ok("UID FETCH 1:* (UID BODY.PEEK[])");
    for to in ["bob@example.org", "nobody@example.org"] {
        let r = send_as_alice(&a, ca, to);
        assert!(r.ok, "{r:?}\n{}", a.log());
    }
    sink.wait_for_messages(2, WAIT);
    let nobody_wkd = format!(
        "openpgpkey.example.org /.well-known/openpgpkey/example.org/hu/{}",
        wkd_hash("nobody")
    );
    assert_eq!(ks.request_count(&nobody_wkd), 1, "{:#?}", ks.requests());

    // B sees where bob's key came from ...
    let out = sealpost_cmd(&b.config, &["keys", "list"]);
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.lines().any(|l| l.contains(&keyring().bob().fpr)
            && l.ends_with("discovered: wkd for bob@example.org")),
        "{list}"
    );
    // ... encrypts to dave with the key A learned ...
    let r = send_as_alice(&b, ca, "dave@example.net");
    assert!(r.ok, "{r:?}\n{}", b.log());
    let got = sink.wait_for_messages(3, WAIT);
    gpg_decrypt("dave", &armored(&got[2].data)).assert_decrypted_signed_by("alice");
    // ... and does not ask the network again for the address A found no key for.
    let r = send_as_alice(&b, ca, "nobody@example.org");
    assert!(r.ok, "{r:?}");
    assert_eq!(ks.request_count(&nobody_wkd), 1, "{:#?}", ks.requests());

    // `check` names the backend, never the password; neither do the logs.
    let out = sealpost_cmd(&b.config, &["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "PostgreSQL postgres://sealpost:***@127.0.0.1:{}/postgres opened",
            pg.port
        )),
        "{text}"
    );
    for t in [text.to_string(), a.log(), b.log()] {
        assert!(!t.contains(password), "the database password was printed");
    }
}

#[test]
fn concurrent_updates_through_two_connections_lose_nothing() {
    use sealpost::state::{State, StateConfig};
    let pg = Postgres::start();
    let dirs = [common::tempdir(), common::tempdir()];
    let config = StateConfig {
        url: Some(pg.url("x")),
    };
    // Two gateways' connections, each bumping the same peer 40 times: every
    // read-modify-write must see the other's committed update.
    let states: Vec<State> = dirs
        .iter()
        .map(|d| State::open(&config, d.path()).expect("open PostgreSQL state"))
        .collect();
    let peer = vec!["bob@example.org".to_string()];
    std::thread::scope(|s| {
        for state in &states {
            let peer = &peer;
            s.spawn(move || {
                for _ in 0..40 {
                    state
                        .update_peers("alice@example.com", peer, |p| {
                            p.entry(peer[0].clone()).or_default().last_seen += 1;
                        })
                        .unwrap();
                }
            });
        }
    });
    let p = states[0]
        .peer("alice@example.com", "bob@example.org")
        .unwrap()
        .unwrap();
    assert_eq!(p.last_seen, 80, "lost updates");
}
