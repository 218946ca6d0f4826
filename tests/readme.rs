//! The README cannot drift from the binary: every command it shows is read from README.md
//! and either run here, as written, against the test upstreams (aiosmtpd and Dovecot over
//! TLS), or named as a step of `.ci/run`. A command added to the README that no test runs
//! fails this suite.

mod common;

use common::dovecot::Dovecot;
use common::listeners::{wait_for_bound, Listener};
use common::proxy::{sealpost_bin, Proxy, ProxyOptions};
use common::{keyring, Sink, SinkMode, TestCa};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

/// The commands of the README: each line of a ```sh block (comments stripped), and each
/// inline code span that starts with a command this project ships or drives.
fn readme_commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sh = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(lang) = trimmed.strip_prefix("```") {
            in_sh = !in_sh && lang == "sh";
            continue;
        }
        if in_sh {
            let cmd = trimmed.split(" # ").next().unwrap_or("").trim();
            if !cmd.is_empty() && !cmd.starts_with('#') {
                out.push(cmd.to_string());
            }
            continue;
        }
        for (i, span) in line.split('`').enumerate() {
            let first = span.split_whitespace().next().unwrap_or("");
            if i % 2 == 1 && ["sealpost", "make", "cargo"].contains(&first) {
                out.push(span.trim().to_string());
            }
        }
    }
    out
}

/// How a README command is proven to work.
enum Covered {
    /// Run by [`every_readme_command_runs`] in the README's own words.
    Here,
    /// Run by `.ci/run`, which must contain this text.
    Ci(&'static str),
    /// A name for commands shown elsewhere in full (a word-prefix of a covered command).
    Mention,
}

/// Every command the README shows, and what runs it.
const COVERAGE: &[(&str, Covered)] = &[
    (
        "make run CONFIG=sealpost.toml",
        Covered::Ci("scripts/smoke-run.sh"),
    ),
    ("make test", Covered::Ci("make test")),
    ("make test-interop", Covered::Ci("make test-interop")),
    ("make check", Covered::Ci("make check")),
    ("cargo test", Covered::Ci("make test")),
    ("cargo fmt --check", Covered::Ci("make check")),
    ("cargo build --release", Covered::Ci("scripts/smoke-run.sh")),
    (
        "cargo bench --bench smtp_relay",
        Covered::Ci("cargo bench --locked --bench smtp_relay"),
    ),
    (
        "cargo bench --bench imap_sync",
        Covered::Ci("cargo bench --locked --bench imap_sync"),
    ),
    (
        "cargo bench --bench imap_idle",
        Covered::Ci("cargo bench --locked --bench imap_idle"),
    ),
    (
        "cargo bench --bench imap_search",
        Covered::Ci("cargo bench --locked --bench imap_search"),
    ),
    (
        "cargo bench --bench imap_soak",
        Covered::Ci("cargo bench --locked --bench imap_soak"),
    ),
    (
        "gpg --export-secret-keys --armor you@example.com > you.sec.asc",
        Covered::Here,
    ),
    (
        "sealpost keys generate you@example.com --config sealpost.toml",
        Covered::Here,
    ),
    (
        "sealpost keys import --config sealpost.toml bob.asc carol.asc",
        Covered::Here,
    ),
    ("sealpost keys list --config sealpost.toml", Covered::Here),
    ("sealpost check --config sealpost.toml", Covered::Here),
    ("sealpost run --config sealpost.toml", Covered::Here),
    (
        "SEALPOST_PASSWORD=yourpassword sealpost seal --config sealpost.toml --login you@example.com --mailbox INBOX --mailbox Sent --dry-run",
        Covered::Here,
    ),
    ("sealpost keys lookup bob@example.org", Covered::Here),
    ("sealpost keys import FILE...", Covered::Here),
    ("sealpost keys list", Covered::Mention),
    ("sealpost keys export ADDRESS", Covered::Here),
    ("sealpost keys remove FINGERPRINT", Covered::Here),
    ("sealpost keys refresh", Covered::Here),
    (
        "sealpost keys generate you@example.org [--out DIR]",
        Covered::Here,
    ),
    ("sealpost check", Covered::Mention),
    ("sealpost run", Covered::Mention),
    ("sealpost status", Covered::Mention),
    ("sealpost status --config sealpost.toml", Covered::Here),
    ("sealpost status --json --config sealpost.toml", Covered::Here),
    ("sealpost init", Covered::Mention),
    (
        "systemd-analyze security --offline=yes systemd/sealpost.service",
        Covered::Here,
    ),
    (
        "sealpost init --address you@example.org --imap imap.example.org:993 --smtp smtp.example.org:465",
        Covered::Here,
    ),
    ("make run", Covered::Mention),
];

#[test]
fn every_readme_command_has_a_test() {
    let text = readme();
    let ci =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/run")).unwrap();
    let commands = readme_commands(&text);
    assert!(commands.len() > 10, "README parsing broke: {commands:?}");
    for cmd in &commands {
        let entry = COVERAGE.iter().find(|(c, _)| c == cmd);
        match entry {
            None => panic!("README command `{cmd}` is run by no test: add it to COVERAGE in tests/readme.rs and run it"),
            Some((_, Covered::Ci(step))) => {
                assert!(ci.contains(step), ".ci/run does not run `{step}` (for README's `{cmd}`)")
            }
            Some((_, Covered::Mention)) => {
                let full = COVERAGE.iter().any(|(c, how)| {
                    !matches!(how, Covered::Mention) && c.starts_with(&format!("{cmd} "))
                });
                assert!(full, "`{cmd}` is mentioned but no full form of it is run");
            }
            Some((_, Covered::Here)) => {}
        }
    }
    for (c, _) in COVERAGE {
        assert!(
            commands.iter().any(|x| x == c),
            "COVERAGE lists `{c}`, which the README no longer shows: remove it"
        );
    }
}

/// A README command as `sh -c` runs it in `dir`, with the built `sealpost` first on PATH.
fn sh_command(dir: &Path, cmd: &str, gnupg: &Path) -> Command {
    let bin_dir = Path::new(sealpost_bin()).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .env("PATH", path)
        .env("GNUPGHOME", gnupg);
    command
}

/// One README command run to completion (see [`sh_command`]).
fn sh(dir: &Path, cmd: &str, gnupg: &Path) -> Output {
    sh_command(dir, cmd, gnupg).output().unwrap()
}

/// The command's output, lowercased (fingerprints are printed in either case).
fn ok(out: &Output, cmd: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        out.status.success(),
        "README command `{cmd}` failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The README command for `prefix`, exactly as the README shows it.
fn find(commands: &[String], prefix: &str) -> String {
    commands
        .iter()
        .find(|c| c.starts_with(prefix))
        .unwrap_or_else(|| panic!("the README has no `{prefix}...` command"))
        .clone()
}

/// A key-command table row, made runnable: placeholders filled in and the config named
/// (the table says every key command takes `--config FILE`).
fn row(commands: &[String], prefix: &str, fill: &[(&str, &str)]) -> String {
    let mut cmd = find(commands, prefix);
    for (from, to) in fill {
        cmd = cmd.replace(from, to);
    }
    format!("{cmd} --config sealpost.toml")
}

#[test]
fn every_readme_command_runs() {
    let commands = readme_commands(&readme());
    let ca = TestCa::shared();
    let sink = Sink::start(ca, SinkMode::Tls);
    let dovecot = Dovecot::start(ca, &[("alice@example.com", "alicepw")]);
    let dir = common::tempdir();
    let d = dir.path();
    let mut opts = ProxyOptions::new(sink.port);
    opts.imap_upstream = Some((dovecot.imaps_port, "tls"));
    opts.alice_login = "alice@example.com".into();
    // Listeners on port 0: `sealpost run` logs the ports it was given.
    let written = Proxy::write_config_imap(d, ca, &opts, (0, 0), (0, 0));
    assert_eq!(written, d.join("sealpost.toml"));
    let kr = keyring();
    let bob_fpr = kr.bob().fpr.to_lowercase();
    let carol_fpr = kr.carol().fpr.to_lowercase();
    std::fs::copy(&kr.bob().pub_asc, d.join("bob.asc")).unwrap();
    std::fs::copy(&kr.carol().pub_asc, d.join("carol.asc")).unwrap();

    // A GnuPG home that has the newcomer's own key, to export as the README says.
    let gnupg = d.join("gnupg");
    std::fs::create_dir(&gnupg).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&gnupg, std::fs::Permissions::from_mode(0o700)).unwrap();
    let made = sh(
        d,
        "gpg --batch --pinentry-mode loopback --passphrase '' --quick-gen-key 'You <you@example.com>' ed25519 sign,cert never",
        &gnupg,
    );
    ok(&made, "gpg --quick-gen-key (test setup)");

    // `sealpost init` as written: the default path is pointed into the test folder (the
    // tests run as root, whose default is /etc/sealpost/config.toml). It reaches no server.
    let init = find(&commands, "sealpost init ");
    let init_home = d.join("init-home");
    let init_config = init_home.join(".config/sealpost/config.toml");
    let out = sh_command(d, &init, &gnupg)
        .env("HOME", &init_home)
        .env("SEALPOST_CONFIG", &init_config)
        .env("XDG_STATE_HOME", init_home.join("state"))
        .output()
        .unwrap();
    let said = ok(&out, &init);
    for want in [
        "thunderbird",
        "outlook",
        "starttls",
        "sha-256",
        "you@example.org",
    ] {
        assert!(said.contains(want), "{want}: {said}");
    }
    let written = std::fs::read_to_string(&init_config).unwrap();
    assert!(
        written.contains("upstream = \"imap.example.org:993\""),
        "{written}"
    );
    let again = sh_command(d, &init, &gnupg)
        .env("HOME", &init_home)
        .env("SEALPOST_CONFIG", &init_config)
        .output()
        .unwrap();
    assert!(
        !again.status.success(),
        "a second init overwrote the config"
    );

    // The unit's rating, from the project folder as the README's path says.
    let analyze = find(&commands, "systemd-analyze security");
    let out = sh_command(d, &analyze, &gnupg)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let said = ok(&out, &analyze);
    let rating = said
        .lines()
        .find_map(|l| {
            l.split("overall exposure level for sealpost.service: ")
                .nth(1)
        })
        .unwrap_or_else(|| panic!("{said}"));
    let value: f64 = rating.split_whitespace().next().unwrap().parse().unwrap();
    assert!(value <= 2.0, "{rating}");
    assert!(
        readme().contains(&format!("sealpost.service: {value:.1} ")),
        "{rating}"
    );

    let export = find(&commands, "gpg --export-secret-keys");
    ok(&sh(d, &export, &gnupg), &export);
    let exported = std::fs::read_to_string(d.join("you.sec.asc")).unwrap();
    assert!(
        exported.contains("BEGIN PGP PRIVATE KEY BLOCK"),
        "{exported}"
    );

    let generate = find(&commands, "sealpost keys generate you@example.com");
    let out = ok(&sh(d, &generate, &gnupg), &generate);
    assert!(out.contains("[[identity]]"), "{out}");

    let import = find(&commands, "sealpost keys import --config");
    let out = ok(&sh(d, &import, &gnupg), &import);
    assert!(out.contains(&bob_fpr) && out.contains(&carol_fpr), "{out}");

    let list = find(&commands, "sealpost keys list --config");
    let out = ok(&sh(d, &list, &gnupg), &list);
    assert!(out.contains(&bob_fpr), "{out}");
    assert!(out.contains("encrypts to bob@example.org"), "{out}");

    let check = find(&commands, "sealpost check --config");
    let out = ok(&sh(d, &check, &gnupg), &check);
    assert!(!out.contains("FAIL"), "{out}");
    assert!(out.contains("imap") && out.contains("smtp"), "{out}");

    // The table of key commands.
    let lookup = row(&commands, "sealpost keys lookup bob@example.org", &[]);
    let out = ok(&sh(d, &lookup, &gnupg), &lookup);
    assert!(out.contains(&format!("use        {}", bob_fpr)), "{out}");
    let import_row = row(
        &commands,
        "sealpost keys import FILE",
        &[("FILE...", "bob.asc")],
    );
    let out = ok(&sh(d, &import_row, &gnupg), &import_row);
    assert!(out.contains(&format!("updated  {}", bob_fpr)), "{out}");
    let export_row = row(
        &commands,
        "sealpost keys export ADDRESS",
        &[("ADDRESS", "bob@example.org")],
    );
    let out = ok(&sh(d, &export_row, &gnupg), &export_row);
    assert!(out.contains("begin pgp public key block"), "{out}");
    let remove_row = row(
        &commands,
        "sealpost keys remove FINGERPRINT",
        &[("FINGERPRINT", carol_fpr.as_str())],
    );
    let out = ok(&sh(d, &remove_row, &gnupg), &remove_row);
    assert!(out.contains(&format!("removed {}", carol_fpr)), "{out}");
    let refresh_row = row(&commands, "sealpost keys refresh", &[]);
    let out = ok(&sh(d, &refresh_row, &gnupg), &refresh_row);
    assert!(out.contains("refreshed"), "{out}");
    let generate_row = row(
        &commands,
        "sealpost keys generate you@example.org",
        &[("[--out DIR]", "--out gen")],
    );
    let out = ok(&sh(d, &generate_row, &gnupg), &generate_row);
    assert!(out.contains("you@example.org"), "{out}");
    assert!(d.join("gen/you_example.org.sec.asc").exists());

    // `sealpost seal --dry-run`, for the config's identity at the test Dovecot.
    dovecot.append(
        "alice@example.com",
        "alicepw",
        "INBOX",
        b"From: bob@example.org\r\nSubject: plain\r\n\r\nhello\r\n",
        &[],
    );
    let _ = dovecot
        .session("alice@example.com", "alicepw")
        .command("CREATE Sent");
    let seal = find(&commands, "SEALPOST_PASSWORD=yourpassword sealpost seal")
        .replace("yourpassword", "alicepw")
        .replace("you@example.com", "alice@example.com");
    let out = ok(&sh(d, &seal, &gnupg), &seal);
    assert!(out.contains("would seal 1, already encrypted 0"), "{out}");

    // `sealpost run`: it listens on the config's listeners and exits 0 on SIGTERM.
    let run = find(&commands, "sealpost run --config");
    let run_log = d.join("run.log");
    let mut child = sh_command(d, &format!("exec {run}"), &gnupg)
        .env("SEALPOST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&run_log).unwrap())
        .spawn()
        .unwrap();
    let bound = wait_for_bound(
        &d.join("sealpost.toml"),
        &run_log,
        0,
        &mut child,
        Duration::from_secs(30),
    );
    let imap_port = bound.port(&Listener::imap("test", false));
    // `sealpost status` asks the running instance.
    let status = find(&commands, "sealpost status --config");
    let out = ok(&sh(d, &status, &gnupg), &status);
    assert!(out.contains(&format!("127.0.0.1:{imap_port}")), "{out}");
    assert!(out.contains("connections: "), "{out}");
    let status_json = find(&commands, "sealpost status --json");
    let out = ok(&sh(d, &status_json, &gnupg), &status_json);
    assert!(out.contains("\"connections_total\""), "{out}");
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "`{run}` did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "`{run}` exited with {status} on SIGTERM");
}

/// `--config` is one global option: before the subcommand, after it, or after the
/// subcommand's own arguments.
#[test]
fn config_option_is_accepted_anywhere() {
    let ca = TestCa::shared();
    let dir = common::tempdir();
    let config = Proxy::write_config(dir.path(), ca, &ProxyOptions::new(1), (0, 0));
    let c = config.display().to_string();
    for args in [
        vec!["--config", &c, "keys", "list"],
        vec!["keys", "--config", &c, "list"],
        vec!["keys", "list", "--config", &c],
        vec!["keys", "import", &c, "--config", &c],
    ] {
        let out = Command::new(sealpost_bin()).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("unexpected argument"), "{args:?}: {err}");
        if args[1] != "import" {
            assert!(out.status.success(), "{args:?}: {err}");
        }
    }
}

/// A missing config names the path that was tried and how to make one, and every cause is
/// printed once.
#[test]
fn a_missing_config_says_which_path_and_what_to_do() {
    let dir = common::tempdir();
    let missing: PathBuf = dir.path().join("nope.toml");
    for sub in [&["keys", "list"][..], &["run"], &["check"]] {
        let out = Command::new(sealpost_bin())
            .args(sub)
            .arg("--config")
            .arg(&missing)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains(&missing.display().to_string()), "{text}");
        assert!(text.contains("--config FILE"), "{text}");
        assert!(text.contains("config.example.toml"), "{text}");
    }
    // Without --config, the default path is the one named.
    let out = Command::new(sealpost_bin())
        .args(["keys", "list"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let default = if sealpost::paths::is_root() {
        PathBuf::from("/etc/sealpost/config.toml")
    } else {
        sealpost::paths::default_config()
    };
    if std::env::var_os("SEALPOST_CONFIG").is_none() && !default.exists() {
        assert!(err.contains(&default.display().to_string()), "{err}");
        assert!(err.contains("sealpost init"), "{err}");
    }
    // A file that exists but cannot be read as text: the cause appears exactly once.
    let unreadable = dir.path().join("dir.toml");
    std::fs::create_dir(&unreadable).unwrap();
    let out = Command::new(sealpost_bin())
        .args(["keys", "list", "--config"])
        .arg(&unreadable)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let cause = "Is a directory";
    assert_eq!(err.matches(cause).count(), 1, "{err}");
}
