//! `sealpost init` against the test upstreams: the config it writes passes
//! `sealpost check`, every command finds it without `--config`, the certificate
//! fingerprint it prints is the one the listener shows, and nothing is overwritten
//! without `--force`.

mod common;

use common::dovecot::Dovecot;
use common::proxy::sealpost_bin;
use common::{free_port, keyring, wait_for_port, Sink, SinkMode, TestCa};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// `sealpost ARGS` with the default config path pointed into `home` (the tests run as
/// root, whose default is /etc/sealpost/config.toml).
fn sealpost(home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(sealpost_bin());
    c.args(args)
        .env("HOME", home)
        .env("SEALPOST_CONFIG", home.join("config/sealpost/config.toml"))
        .env("XDG_STATE_HOME", home.join("state"))
        .env_remove("CREDENTIALS_DIRECTORY");
    c
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn init_then_check_then_run() {
    let ca = TestCa::shared();
    let sink = Sink::start(ca, SinkMode::Tls);
    let dovecot = Dovecot::start(ca, &[("alice@example.com", "alicepw")]);
    let dir = common::tempdir();
    let home = dir.path();
    let kr = keyring();
    let (imap_port, smtp_port) = (free_port(), free_port());
    let imap = format!("localhost:{}", dovecot.imaps_port);
    let smtp = format!("localhost:{}", sink.port);
    let listen_imap = format!("127.0.0.1:{imap_port}");
    let listen_smtp = format!("127.0.0.1:{smtp_port}");
    let ca_pem = ca.ca_pem.display().to_string();
    let key = kr.alice().sec_asc.display().to_string();
    let base = [
        "init",
        "--address",
        "alice@example.com",
        "--imap",
        &imap,
        "--smtp",
        &smtp,
        "--extra-ca",
        &ca_pem,
        "--listen-imap",
        &listen_imap,
        "--listen-smtp",
        &listen_smtp,
        "--key",
        &key,
    ];

    // A protected key without its passphrase, or with a wrong one, is refused and
    // nothing is written.
    let out = sealpost(home, &base).output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("--passphrase-file"), "{}", text(&out));
    let wrong = home.join("wrong.pass");
    std::fs::write(&wrong, "not it\n").unwrap();
    let mut args = base.to_vec();
    let wrong_s = wrong.display().to_string();
    args.extend(["--passphrase-file", &wrong_s]);
    let out = sealpost(home, &args).output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("does not unlock"), "{}", text(&out));
    assert!(!home.join("config").exists());

    let pass = kr.alice_pass.display().to_string();
    let mut args = base.to_vec();
    args.extend(["--passphrase-file", &pass]);
    let out = sealpost(home, &args).output().unwrap();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        !said.contains(&kr.alice().passphrase),
        "passphrase printed: {said}"
    );
    assert!(
        said.to_uppercase().contains(&kr.alice().fpr.to_uppercase()),
        "{said}"
    );
    for want in [
        "Thunderbird",
        "Outlook",
        "STARTTLS",
        &listen_imap[..9],
        "alice@example.com",
    ] {
        assert!(said.contains(want), "{want}: {said}");
    }
    assert!(said.contains(&format!("port {imap_port}")), "{said}");
    assert!(said.contains(&format!("port {smtp_port}")), "{said}");
    let conf_dir = home.join("config/sealpost");
    use std::os::unix::fs::PermissionsExt;
    for f in ["identity.sec.asc", "identity.pass"] {
        let mode = std::fs::metadata(conf_dir.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let config = std::fs::read(conf_dir.join("config.toml")).unwrap();

    // Twice: refused without --force, and the files stay as they were.
    let out = sealpost(home, &args).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("--force"), "{}", text(&out));
    assert_eq!(config, std::fs::read(conf_dir.join("config.toml")).unwrap());

    // `sealpost check` without --config reaches both upstreams with the new config.
    let out = sealpost(home, &["check"]).output().unwrap();
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("imap upstream") && report.contains("smtp upstream"),
        "{report}"
    );
    assert!(report.contains("identity alice@example.com"), "{report}");

    // The fingerprint printed is the listener's, as openssl sees it over STARTTLS.
    let printed = said
        .lines()
        .find_map(|l| l.strip_prefix("listener certificate SHA-256: "))
        .expect("fingerprint line")
        .trim()
        .to_string();
    let mut child = sealpost(home, &["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(imap_port, Duration::from_secs(30));
    let fp = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -starttls imap -connect 127.0.0.1:{imap_port} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
        ))
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let fp = String::from_utf8_lossy(&fp.stdout);
    assert!(
        fp.trim().ends_with(&format!("={printed}")),
        "listener shows {fp}, init printed {printed}"
    );

    // --force writes again, and the new config still checks.
    let mut forced = args.clone();
    forced.push("--force");
    let out = sealpost(home, &forced).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn init_generates_a_key_when_none_is_given() {
    let dir = common::tempdir();
    let home = dir.path();
    let out = sealpost(
        home,
        &[
            "init",
            "--address",
            "new@example.org",
            "--imap",
            "localhost:993",
            "--smtp",
            "localhost:587",
            "--login",
            "newlogin",
        ],
    )
    .output()
    .unwrap();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    let conf_dir = home.join("config/sealpost");
    let pass = std::fs::read_to_string(conf_dir.join("identity.pass")).unwrap();
    assert!(pass.trim().len() >= 20);
    assert!(!said.contains(pass.trim()), "passphrase printed: {said}");
    assert!(said.contains("user name newlogin"), "{said}");
    let conf = std::fs::read_to_string(conf_dir.join("config.toml")).unwrap();
    assert!(conf.contains("upstream_security = \"starttls\""), "{conf}");
    assert!(
        conf.contains(&format!(
            "state_dir = \"{}\"",
            home.join("state/sealpost").display()
        )),
        "{conf}"
    );
    // Every command finds it without --config: the new key is in the store.
    let out = sealpost(home, &["keys", "list"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("encrypts to new@example.org"),
        "{}",
        text(&out)
    );
}
