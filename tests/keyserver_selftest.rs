//! Self-test of the WKD / VKS stand-in (`tests/common/keyserver.rs`,
//! `tests/support/keyserver.py`), exercised with curl only.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::keyserver::{sha1, zbase32};
use common::{
    gpg_export_armored, gpg_export_binary, keyring, wkd_advanced_url, wkd_direct_url, wkd_hash,
    KeyServer, TestCa,
};

/// ("host", "/path?query") of an https URL without port.
fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("https://").expect("https URL");
    let slash = rest.find('/').expect("URL has a path");
    (rest[..slash].to_owned(), rest[slash..].to_owned())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn wkd_hash_matches_spec_and_gnupg() {
    assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    assert_eq!(
        hex(&sha1(b"abc")),
        "a9993e364706816aba3e25717850c26c9cd0d89d"
    );
    assert_eq!(
        hex(&sha1(
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
        )),
        "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
    );
    assert_eq!(zbase32(&[0xF0, 0xBF, 0xC7]), "6n9hq");
    // Test vector of draft-koch-openpgp-webkey-service.
    assert_eq!(wkd_hash("Joe.Doe"), "iy9q119eutrkn8s1mk4r39qejnbu3n5q");
    assert_eq!(wkd_hash("joe.doe"), "iy9q119eutrkn8s1mk4r39qejnbu3n5q");
    assert_eq!(
        wkd_advanced_url("bob@example.org"),
        format!(
            "https://openpgpkey.example.org/.well-known/openpgpkey/example.org/hu/{}?l=bob",
            wkd_hash("bob")
        )
    );
    assert_eq!(
        wkd_direct_url("Dave@Example.NET"),
        format!(
            "https://example.net/.well-known/openpgpkey/hu/{}?l=Dave",
            wkd_hash("dave")
        )
    );

    // Cross-check with GnuPG's own implementation when it is installed.
    let wks = Path::new("/usr/lib/gnupg/gpg-wks-client");
    if wks.exists() {
        for email in ["bob@example.org", "dave@example.net", "Joe.Doe@example.org"] {
            let out = Command::new(wks)
                .args(["--print-wkd-url", email])
                .stdin(Stdio::null())
                .output()
                .expect("run gpg-wks-client");
            assert!(out.status.success(), "gpg-wks-client failed");
            let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            // GnuPG lower-cases the whole address, `l=` included; the
            // draft (and wkd_advanced_url) send the local part unchanged.
            assert_eq!(url, wkd_advanced_url(&email.to_lowercase()), "for {email}");
        }
    }
}

#[test]
fn serves_wkd_advanced_direct_and_vks() {
    let ks = KeyServer::start(TestCa::shared());
    let k = keyring();
    let bob = gpg_export_binary("bob");
    let dave = gpg_export_binary("dave@example.net");
    let carol = gpg_export_armored("carol");
    assert!(bob[0] & 0x80 != 0, "binary export expected");
    assert!(carol.starts_with(b"-----BEGIN PGP PUBLIC KEY BLOCK-----"));

    ks.publish_wkd_advanced(&k.bob().email, &bob);
    ks.publish_wkd_direct(&k.dave().email, &dave);
    ks.publish_vks("keys.example.test", &k.carol().email, &carol);

    // WKD advanced (the way sealpost connects: real name, 127.0.0.1:PORT).
    let (host, path) = split_url(&wkd_advanced_url("bob@example.org"));
    assert_eq!(host, "openpgpkey.example.org");
    let r = ks.curl_get(&host, &path, 10.0);
    assert!(r.ok(), "advanced fetch: {r:?}");
    assert_eq!(r.body, bob);
    assert_eq!(r.content_type, "application/octet-stream");
    let policy = ks.curl_get(&host, "/.well-known/openpgpkey/example.org/policy", 10.0);
    assert!(policy.ok() && policy.body.is_empty(), "{policy:?}");

    // WKD direct, via curl --resolve (Host header then carries the port).
    let (host, path) = split_url(&wkd_direct_url("dave@example.net"));
    assert_eq!(host, "example.net");
    let r = ks.curl_get_resolve(&host, &path, 10.0);
    assert!(r.ok(), "direct fetch: {r:?}");
    assert_eq!(r.body, dave);
    let policy = ks.curl_get(&host, "/.well-known/openpgpkey/policy", 10.0);
    assert!(policy.ok(), "{policy:?}");

    // VKS by email: percent-encoded, case-insensitive.
    for email in [
        "carol%40example.org",
        "Carol%40Example.ORG",
        "carol@example.org",
    ] {
        let r = ks.curl_get(
            "keys.example.test",
            &format!("/vks/v1/by-email/{email}"),
            10.0,
        );
        assert!(r.ok(), "vks fetch {email}: {r:?}");
        assert_eq!(r.body, carol);
        assert_eq!(r.content_type, "application/pgp-keys");
    }
    // Same email on another host: not there.
    let r = ks.curl_get(
        "keys.openpgp.org",
        "/vks/v1/by-email/carol%40example.org",
        10.0,
    );
    assert_eq!(r.status, 404, "{r:?}");

    // A name outside the certificate fails verification.
    let r = ks.curl_get("unknown.example.org", "/", 10.0);
    assert_eq!(r.status, 0, "{r:?}");
    assert_ne!(r.curl_exit, 0);

    let hash = wkd_hash("bob");
    let log = ks.requests();
    assert!(
        log.contains(&format!(
            "openpgpkey.example.org /.well-known/openpgpkey/example.org/hu/{hash}?l=bob 200"
        )),
        "{log:#?}"
    );
    assert_eq!(ks.request_count("keys.example.test /vks/v1/by-email/"), 3);
    assert_eq!(
        ks.request_count("example.net /.well-known/openpgpkey/hu/"),
        1
    );
    assert_eq!(ks.request_count(" 404"), 1, "{log:#?}");
    assert_eq!(log.len(), 8, "{log:#?}");

    // The resolve map is valid TOML in both forms.
    let t: toml::Table = toml::from_str(&format!("[keys.resolve]\n{}", ks.resolve_toml()))
        .expect("resolve_toml parses");
    let map = t["keys"]["resolve"].as_table().unwrap();
    assert_eq!(
        map["openpgpkey.example.org"].as_str(),
        Some(ks.addr().as_str())
    );
    for h in [
        "example.org",
        "openpgpkey.example.net",
        "example.net",
        "keys.example.test",
    ] {
        assert_eq!(map[h].as_str(), Some(ks.addr().as_str()), "{h}");
    }
    let t: toml::Table =
        toml::from_str(&format!("resolve = {}", ks.resolve_inline_toml())).expect("inline");
    assert_eq!(t["resolve"].as_table().unwrap().len(), ks.hosts.len());
}

#[test]
fn missing_keys_delay_status_and_log() {
    let ks = KeyServer::start(TestCa::shared());
    let key = b"not really a key".to_vec();
    ks.publish_wkd_direct("bob@example.net", &key);
    let (host, bob_path) = split_url(&wkd_direct_url("bob@example.net"));
    let (_, eve_path) = split_url(&wkd_direct_url("eve@example.net"));

    // Missing key -> 404; present -> 200; control files are not served.
    let r = ks.curl_get(&host, &eve_path, 10.0);
    assert_eq!((r.curl_exit, r.status), (0, 404), "{r:?}");
    assert!(ks.curl_get(&host, &bob_path, 10.0).ok());
    ks.set_status(&host, 503);
    assert_eq!(ks.curl_get(&host, "/.status", 10.0).status, 503);
    ks.clear_status(&host);
    assert_eq!(ks.curl_get(&host, "/.status", 10.0).status, 404);
    assert_eq!(ks.curl_get(&host, "/../../etc/passwd", 10.0).status, 404);

    // Status control: every request to that host, other hosts unaffected.
    ks.set_status(&host, 503);
    for p in [&bob_path, &eve_path] {
        let r = ks.curl_get(&host, p, 10.0);
        assert_eq!((r.curl_exit, r.status), (0, 503), "{r:?}");
    }
    assert_eq!(ks.curl_get("example.org", "/x", 10.0).status, 404);
    ks.clear_status(&host);
    assert!(ks.curl_get(&host, &bob_path, 10.0).ok());

    // Delay control: a short client timeout expires; the request is logged
    // on arrival all the same.
    ks.clear_requests();
    ks.set_delay(&host, 3.0);
    let t0 = Instant::now();
    let r = ks.curl_get(&host, &bob_path, 1.0);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(r.curl_exit, 28, "expected curl timeout: {r:?}");
    assert!(t0.elapsed() < Duration::from_millis(2500));
    assert_eq!(ks.request_count(&bob_path), 1, "{:#?}", ks.requests());
    // Delay shorter than the timeout: answered, late.
    ks.set_delay(&host, 0.4);
    let t0 = Instant::now();
    let r = ks.curl_get(&host, &bob_path, 10.0);
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.body, key);
    assert!(t0.elapsed() >= Duration::from_millis(400));
    ks.clear_delay(&host);

    // Log lines: "HOST TARGET STATUS", query included, port stripped.
    ks.curl_get_resolve(&host, &format!("{eve_path}&x=1"), 10.0);
    let log = ks.requests();
    assert_eq!(log.len(), 3, "{log:#?}");
    assert_eq!(log[0], format!("example.net {bob_path} 200"));
    assert_eq!(log[1], format!("example.net {bob_path} 200"));
    assert_eq!(log[2], format!("example.net {eve_path}&x=1 404"));
    assert_eq!(ks.request_count("?l=eve"), 1);
    ks.wait_for_requests("example.net", 3, Duration::from_secs(1));
}
