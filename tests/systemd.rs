//! The systemd units: rated by `systemd-analyze security`, verified by
//! `systemd-analyze verify`, and the readiness notification they rely on (`Type=notify`)
//! sent only once every listener accepts connections.

mod common;

use common::listeners::{wait_for_bound, Listener};
use common::proxy::{sealpost_bin, Proxy, ProxyOptions};
use common::{keyring, TestCa};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn unit(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("systemd")
        .join(name)
}

/// The exposure `systemd-analyze security --offline=yes` gives a unit file.
fn exposure(path: &Path) -> (f64, String) {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(path)
        .output()
        .expect("systemd-analyze (Debian package systemd; scripts/deps.sh test installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no rating: {text}{}", String::from_utf8_lossy(&out.stderr)));
    // "→ Overall exposure level for sealpost.service: 1.2 OK 🙂", or with ":-)" where
    // the locale has no UTF-8: the first word after the unit's colon that is a number.
    let value = line
        .split_once(".service:")
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.split_whitespace().find_map(|w| w.parse().ok()))
        .unwrap_or_else(|| panic!("cannot read the rating in {line:?}"));
    (value, line.to_string())
}

#[test]
fn system_unit_is_rated_ok_or_safe() {
    let path = unit("sealpost.service");
    let (value, line) = exposure(&path);
    assert!(value <= 2.0, "exposure {value} above 2.0: {line}");
    assert!(line.contains("OK") || line.contains("SAFE"), "{line}");
    // The README quotes the rating: keep it true.
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("{value:.1} OK")) || readme.contains(&format!("{value:.1} SAFE")),
        "README does not show the rating {value:.1}"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    for want in [
        "Type=notify",
        "Restart=on-failure",
        "DynamicUser=yes",
        "StateDirectory=sealpost",
        "LoadCredential=identity.sec.asc:/etc/sealpost/identity.sec.asc",
        "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
    ] {
        assert!(text.contains(want), "sealpost.service lacks {want:?}");
    }
}

/// `systemd-analyze verify` on a copy whose ExecStart names the binary cargo built (the
/// installed path does not exist here); any warning at all fails.
fn verify(name: &str, installed: &str, user: bool) {
    let dir = common::tempdir();
    let text = std::fs::read_to_string(unit(name)).unwrap();
    assert!(
        text.contains(installed),
        "{name} does not start {installed}"
    );
    let copy = dir.path().join(name);
    std::fs::write(&copy, text.replace(installed, sealpost_bin())).unwrap();
    let mut cmd = Command::new("systemd-analyze");
    if user {
        // A user manager needs a runtime directory of its own.
        let runtime = dir.path().join("runtime");
        std::fs::create_dir(&runtime).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
        cmd.arg("--user").env("XDG_RUNTIME_DIR", &runtime);
    }
    let out = cmd.arg("verify").arg(&copy).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "verify {name}: {said}");
    assert!(said.trim().is_empty(), "verify {name} warns: {said}");
}

#[test]
fn units_verify_without_warnings() {
    verify("sealpost.service", "/usr/local/bin/sealpost", false);
    verify("sealpost-user.service", "%h/.local/bin/sealpost", true);
}

/// The system unit installs and enables as the README says, in a scratch root
/// (`systemctl --root` works offline: no running systemd needed): its [Install] section
/// hooks it into multi-user.target.
#[test]
fn system_unit_enables_into_multi_user_target() {
    let root = common::tempdir();
    let units = root.path().join("etc/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::copy(unit("sealpost.service"), units.join("sealpost.service")).unwrap();
    let out = Command::new("systemctl")
        .arg(format!("--root={}", root.path().display()))
        .args(["enable", "sealpost"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = units.join("multi-user.target.wants/sealpost.service");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("/etc/systemd/system/sealpost.service")
    );
}

fn run_with_notify(config: &Path, notify: &str, log: &Path) -> Child {
    Command::new(sealpost_bin())
        .args(["run", "--config"])
        .arg(config)
        .env("NOTIFY_SOCKET", notify)
        .env("SEALPOST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Reads datagrams until one contains `want`; returns all read so far.
fn wait_for(rx: &UnixDatagram, want: &str) -> String {
    rx.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut all = String::new();
    let mut buf = [0u8; 4096];
    while !all.contains(want) {
        let n = rx
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no {want} from sealpost ({e}); got {all:?}"));
        all.push_str(&String::from_utf8_lossy(&buf[..n]));
        all.push('\n');
    }
    all
}

#[test]
fn ready_is_sent_once_every_listener_is_bound() {
    let ca = TestCa::shared();
    let dir = common::tempdir();
    let mut opts = ProxyOptions::new(1);
    opts.imap_upstream = Some((1, "tls"));
    let config = Proxy::write_config_imap(dir.path(), ca, &opts, (0, 0), (0, 0));

    // A socket path, as the system manager passes it.
    let path = dir.path().join("notify");
    let rx = UnixDatagram::bind(&path).unwrap();
    let log = dir.path().join("sealpost.log");
    let mut child = run_with_notify(&config, &path.display().to_string(), &log);
    let said = wait_for(&rx, "READY=1");
    // Each listener has logged its port already (no waiting), and accepts.
    let bound = wait_for_bound(&config, &log, 0, &mut child, Duration::ZERO);
    let listeners = [
        Listener::smtp("test", false),
        Listener::smtp("test", true),
        Listener::imap("test", false),
        Listener::imap("test", true),
    ];
    for port in listeners.iter().map(|l| bound.port(l)) {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            "READY=1 before port {port} listens"
        );
    }
    assert!(said.contains("STATUS="), "{said}");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    wait_for(&rx, "STOPPING=1");
    assert!(child.wait().unwrap().success());

    // An abstract socket (`@name`), as a user manager may pass it.
    use std::os::linux::net::SocketAddrExt;
    let name = format!("sealpost-notify-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let rx = UnixDatagram::bind_addr(&addr).unwrap();
    let log = dir.path().join("sealpost-abstract.log");
    let mut child = run_with_notify(&config, &format!("@{name}"), &log);
    wait_for(&rx, "READY=1");
    let _ = child.kill();
    let _ = child.wait();
}

/// A key given as a systemd credential (`%d/NAME` in the config) is read from
/// `$CREDENTIALS_DIRECTORY`, and without it from beside the config.
#[test]
fn identity_key_from_credentials_directory() {
    let ca = TestCa::shared();
    let dir = common::tempdir();
    let kr = keyring();
    let mut opts = ProxyOptions::new(1);
    opts.alice_identity = false;
    opts.extra = "[[identity]]\naddress = \"alice@example.com\"\nsecret_key = \"%d/identity.sec.asc\"\npassphrase_file = \"%d/identity.pass\"\n".into();
    let config = Proxy::write_config(dir.path(), ca, &opts, (0, 0));
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::copy(&kr.alice().sec_asc, creds.join("identity.sec.asc")).unwrap();
    std::fs::copy(&kr.alice_pass, creds.join("identity.pass")).unwrap();
    let check = |creds_dir: Option<&Path>| {
        let mut c = Command::new(sealpost_bin());
        c.args(["check", "--config"]).arg(&config);
        match creds_dir {
            Some(d) => c.env("CREDENTIALS_DIRECTORY", d),
            None => c.env_remove("CREDENTIALS_DIRECTORY"),
        };
        String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
    };
    let with = check(Some(&creds));
    assert!(with.contains("ok   identity alice@example.com"), "{with}");
    let without = check(None);
    assert!(
        without.contains("FAIL identity alice@example.com"),
        "{without}"
    );
    assert!(
        without.contains(&dir.path().join("identity.sec.asc").display().to_string()),
        "{without}"
    );
}
