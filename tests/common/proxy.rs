//! Runs the real `sealpost` binary with a config written for the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::listeners::{wait_for_bound, Bound, Listener};
use super::tls::TestCa;

/// What goes into the generated config.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Upstream SMTP port on 127.0.0.1.
    pub upstream_port: u16,
    /// "tls" | "starttls" | "plain".
    pub upstream_security: &'static str,
    /// `[policy] default`.
    pub policy: &'static str,
    /// `[[policy.rule]]` entries: (recipient glob, action).
    pub rules: Vec<(String, String)>,
    pub sign: bool,
    pub protect_headers: bool,
    /// Configure alice@example.com as identity (protected key + passphrase file).
    pub alice_identity: bool,
    /// The login that is alice (it picks her key for signing and decryption); the
    /// SMTP sink's user by default, alice's Dovecot login in IMAP tests.
    pub alice_login: String,
    /// `account` of alice's `[[identity]]`: the `[[account]]` whose listeners she may use.
    pub alice_account: Option<String>,
    /// Public key files imported with `sealpost keys import` before start.
    pub import: Vec<PathBuf>,
    /// Extra TOML appended verbatim (e.g. a `[limits]` table).
    pub extra: String,
    /// Upstream IMAP (Dovecot) port on localhost and its security ("tls"/"starttls").
    pub imap_upstream: Option<(u16, &'static str)>,
    /// Lines for the `[keys]` table. The default keeps key lookups local: no test
    /// may reach the internet, so WKD/VKS are only enabled against a local server.
    pub keys_extra: String,
    /// `[keys] dir`: default `state_dir/keys`; several instances may share one.
    pub key_dir: Option<PathBuf>,
    /// Lines added to both `[account.smtp]` and `[account.imap]` (e.g. `proxy_protocol = true`).
    pub listener_extra: String,
    /// `[imap] search_index_fill`: off unless a test is about it, so that no test
    /// meets a background connection it did not ask for.
    pub search_index_fill: bool,
    /// `[imap] classify_on_select`: off unless a test is about it, for the same reason.
    pub classify_on_select: bool,
}

impl ProxyOptions {
    pub fn new(upstream_port: u16) -> Self {
        ProxyOptions {
            upstream_port,
            upstream_security: "tls",
            policy: "opportunistic",
            rules: Vec::new(),
            sign: true,
            protect_headers: true,
            alice_identity: true,
            alice_login: "sinkuser".into(),
            alice_account: None,
            import: Vec::new(),
            extra: String::new(),
            imap_upstream: None,
            keys_extra: "discover = [\"store\", \"autocrypt\"]\n".into(),
            key_dir: None,
            listener_extra: String::new(),
            search_index_fill: false,
            classify_on_select: false,
        }
    }
}

/// A running `sealpost run`. Its listeners are configured on port 0 and their ports read
/// from its log (see [`super::listeners`]); they change when it is restarted.
pub struct Proxy {
    /// Plain listener (offers STARTTLS).
    pub smtp_port: u16,
    /// Implicit-TLS listener.
    pub smtps_port: u16,
    /// IMAP listener (STARTTLS offered) and implicit-TLS IMAP listener; 0 without
    /// `imap_upstream`.
    pub imap_port: u16,
    pub imaps_port: u16,
    /// Every listener of the config (also those `extra` adds), as bound.
    pub bound: Bound,
    pub config: PathBuf,
    pub log_path: PathBuf,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

/// The sealpost binary built by cargo for the integration tests.
pub fn sealpost_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sealpost")
}

/// Runs `sealpost ARGS --config CONFIG` to completion (`--config` is global: it may follow
/// any subcommand).
pub fn sealpost_cmd(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(sealpost_bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run sealpost")
}

impl Proxy {
    /// Submits `data` from alice@example.com to `rcpts` on the STARTTLS listener (the
    /// test CA trusted), logged in as `login`: what most relay tests send.
    pub fn submit_as(
        &self,
        ca: &TestCa,
        login: (&str, &str),
        rcpts: &[&str],
        data: &[u8],
    ) -> super::net::PySendResult {
        let mut p = super::net::PySend::new(
            self.smtp_port,
            super::net::PySendMode::StartTls,
            "alice@example.com",
            rcpts,
            data,
        );
        p.cafile = Some(&ca.ca_pem);
        p.login = Some(login);
        super::net::py_sendmail(&p)
    }

    pub fn write_config(
        dir: &Path,
        ca: &TestCa,
        opts: &ProxyOptions,
        ports: (u16, u16),
    ) -> PathBuf {
        Proxy::write_config_imap(dir, ca, opts, ports, (0, 0))
    }

    pub fn write_config_imap(
        dir: &Path,
        ca: &TestCa,
        opts: &ProxyOptions,
        ports: (u16, u16),
        imap_ports: (u16, u16),
    ) -> PathBuf {
        let kr = super::pgp::keyring();
        // The config is built as data; the TOML fragments of the options are parsed and
        // merged in (see `merge`), so a test names tables the way the config does.
        let fragment = |what: &str, text: &str| -> toml::Table {
            text.parse()
                .unwrap_or_else(|e| panic!("ProxyOptions.{what} is not TOML: {e}\n{text}"))
        };
        let path_of = |p: &Path| toml::Value::from(p.display().to_string());
        let listener = |plain: u16, tls: u16, upstream: u16, security: &str| {
            let mut t = toml::Table::new();
            t.insert("listen".into(), format!("127.0.0.1:{plain}").into());
            t.insert("listen_tls".into(), format!("127.0.0.1:{tls}").into());
            t.insert("upstream".into(), format!("localhost:{upstream}").into());
            t.insert("upstream_security".into(), security.into());
            merge(&mut t, fragment("listener_extra", &opts.listener_extra));
            toml::Value::Table(t)
        };
        let mut account = toml::Table::new();
        account.insert("name".into(), "test".into());
        account.insert(
            "smtp".into(),
            listener(ports.0, ports.1, opts.upstream_port, opts.upstream_security),
        );
        if let Some((port, security)) = opts.imap_upstream {
            account.insert(
                "imap".into(),
                listener(imap_ports.0, imap_ports.1, port, security),
            );
        }
        let mut keys = toml::Table::new();
        let key_dir = opts
            .key_dir
            .clone()
            .unwrap_or_else(|| dir.join("state").join("keys"));
        keys.insert("dir".into(), path_of(&key_dir));
        keys.insert("extra_ca".into(), path_of(&ca.ca_pem));
        // Lines of the `[keys]` table, which may go on with sub-tables (`[keys.resolve]`).
        let keys_extra = fragment("keys_extra", &format!("[keys]\n{}", opts.keys_extra));
        let rules: Vec<toml::Value> = opts
            .rules
            .iter()
            .map(|(recipient, action)| {
                let mut r = toml::Table::new();
                r.insert("recipient".into(), recipient.as_str().into());
                r.insert("action".into(), action.as_str().into());
                toml::Value::Table(r)
            })
            .collect();
        let mut policy = toml::Table::new();
        policy.insert("default".into(), opts.policy.into());
        policy.insert("sign".into(), opts.sign.into());
        policy.insert("protect_headers".into(), opts.protect_headers.into());
        if !rules.is_empty() {
            policy.insert("rule".into(), rules.into());
        }
        let mut tls = toml::Table::new();
        tls.insert("cert".into(), path_of(&ca.cert_pem));
        tls.insert("key".into(), path_of(&ca.key_pem));
        let mut imap = toml::Table::new();
        imap.insert("search_index_fill".into(), opts.search_index_fill.into());
        imap.insert("classify_on_select".into(), opts.classify_on_select.into());

        let mut config = toml::Table::new();
        config.insert("state_dir".into(), path_of(&dir.join("state")));
        config.insert("tls".into(), tls.into());
        config.insert("account".into(), vec![toml::Value::Table(account)].into());
        config.insert("keys".into(), keys.into());
        config.insert("policy".into(), policy.into());
        config.insert("imap".into(), imap.into());
        if opts.alice_identity {
            let mut alice = toml::Table::new();
            alice.insert("address".into(), "alice@example.com".into());
            alice.insert("login".into(), opts.alice_login.as_str().into());
            alice.insert("secret_key".into(), path_of(&kr.alice().sec_asc));
            alice.insert("passphrase_file".into(), path_of(&kr.alice_pass));
            if let Some(account) = &opts.alice_account {
                alice.insert("account".into(), account.as_str().into());
            }
            config.insert("identity".into(), vec![toml::Value::Table(alice)].into());
        }
        merge(&mut config, keys_extra);
        merge(&mut config, fragment("extra", &opts.extra));
        let toml = toml::to_string(&config).expect("serialize the test config");
        let path = dir.join("sealpost.toml");
        std::fs::write(&path, toml).unwrap();
        path
    }

    /// Writes the config (listeners on port 0), imports keys, starts `sealpost run` and
    /// waits for its listeners.
    pub fn start(ca: &TestCa, opts: &ProxyOptions) -> Proxy {
        let dir = super::tempdir();
        let config = Proxy::write_config_imap(dir.path(), ca, opts, (0, 0), (0, 0));
        if !opts.import.is_empty() {
            let mut args = vec!["keys", "import"];
            let files: Vec<String> = opts
                .import
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            args.extend(files.iter().map(String::as_str));
            let out = sealpost_cmd(&config, &args);
            assert!(
                out.status.success(),
                "keys import failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let log_path = dir.path().join("sealpost.log");
        let mut proxy = Proxy {
            smtp_port: 0,
            smtps_port: 0,
            imap_port: 0,
            imaps_port: 0,
            bound: Bound::default(),
            config,
            log_path,
            dir,
            child: None,
        };
        proxy.spawn();
        proxy
    }

    /// Starts `sealpost run` with this config (log appended) and reads its listeners' ports
    /// from what it logs.
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        // This run's lines start here.
        let from = log.metadata().unwrap().len() as usize;
        let child = Command::new(sealpost_bin())
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("SEALPOST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sealpost");
        let child = self.child.insert(child);
        let bound = wait_for_bound(
            &self.config,
            &self.log_path,
            from,
            child,
            Duration::from_secs(30),
        );
        self.smtp_port = bound.port(&Listener::smtp("test", false));
        self.smtps_port = bound.port(&Listener::smtp("test", true));
        self.imap_port = bound.get(&Listener::imap("test", false)).unwrap_or(0);
        self.imaps_port = bound.get(&Listener::imap("test", true)).unwrap_or(0);
        self.bound = bound;
    }

    /// The `[metrics]` listener's port (`listen = "127.0.0.1:0"` in `extra`).
    pub fn metrics_port(&self) -> u16 {
        self.bound.port(&Listener::metrics())
    }

    /// The `[autoconfig]` listener's port (`listen = "127.0.0.1:0"` in `extra`).
    pub fn autoconfig_port(&self) -> u16 {
        self.bound.port(&Listener::autoconfig())
    }

    /// Kills the process with SIGKILL (no shutdown of any kind) and reaps it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(child.id().to_string())
            .status();
        let _ = child.wait();
    }

    /// Starts the stopped (terminated or killed) instance again. Its listeners get new
    /// ports: the `*_port` fields and `bound` are updated.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("sealpost did not stop within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("[sealpost] test panicked; log:\n{}", self.log());
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Merges the TOML fragment `from` into `into`: tables key by key, arrays of tables
/// appended (another `[[account]]`, `[[policy.rule]]`, `[[identity]]`), and a table given
/// for an array of tables merged into its last element (`[account.imap]` after
/// `[[account]]`, as TOML reads it in one file); any other value (a list such as
/// `discover` too) replaces the one before.
fn merge(into: &mut toml::Table, from: toml::Table) {
    let tables = |a: &[toml::Value]| !a.is_empty() && a.iter().all(toml::Value::is_table);
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(old)), toml::Value::Table(new)) => merge(old, new),
            (Some(toml::Value::Array(old)), toml::Value::Array(new))
                if tables(old) && tables(&new) =>
            {
                old.extend(new)
            }
            (Some(toml::Value::Array(old)), toml::Value::Table(new)) => match old.last_mut() {
                Some(toml::Value::Table(last)) => merge(last, new),
                _ => old.push(toml::Value::Table(new)),
            },
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}
