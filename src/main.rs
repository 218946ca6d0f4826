//! The `sealpost` command: thin wiring around the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use sealpost::config::Config;
use sealpost::keys::autocrypt::AutocryptStore;
use sealpost::keys::discover::{outcome_label, Discovery};
use sealpost::keys::KeyStore;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "sealpost",
    version,
    about = "Transparent encrypting mail proxy (OpenPGP for SMTP and IMAP)"
)]
struct Cli {
    /// The config file (accepted before or after any subcommand). Default:
    /// $SEALPOST_CONFIG, else /etc/sealpost/config.toml for root, else
    /// $XDG_CONFIG_HOME/sealpost/config.toml (~/.config/sealpost/config.toml).
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a config, bring or make your key and the listener certificate, and say
    /// what to enter in your mail client.
    Init(InitCli),
    /// Start every listener of the config and serve until SIGTERM/SIGINT.
    Run,
    /// Validate the config, load every key and reach every upstream.
    Check,
    /// Ask the running instance (over its control socket in state_dir) what it is doing.
    Status {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace the plain mail stored in mailboxes by sealed copies only your key opens
    /// (each copy verified before its original is removed; safe to interrupt and rerun).
    Seal(SealCli),
    /// The reverse of `seal`: your sealed copies back to the plain originals, verified
    /// the same way.
    Unseal(SealCli),
    /// Manage the public key store.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(clap::Args)]
struct InitCli {
    /// Your email address (the identity whose mail is signed and decrypted).
    #[arg(long)]
    address: String,
    /// Your provider's IMAP server, host:port (993: TLS, 143: STARTTLS).
    #[arg(long, value_name = "HOST:PORT")]
    imap: String,
    /// Your provider's submission server, host:port (465: TLS, 587: STARTTLS).
    #[arg(long, value_name = "HOST:PORT")]
    smtp: String,
    /// Your existing secret key (armored or binary); without it a new key is made.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// The file holding the passphrase of --key (its first line).
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// PEM file of CA certificates to trust besides the system's (a private provider CA).
    #[arg(long, value_name = "FILE")]
    extra_ca: Option<PathBuf>,
    /// Where your mail client reaches sealpost's IMAP (STARTTLS).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:1143")]
    listen_imap: std::net::SocketAddr,
    /// Where your mail client reaches sealpost's SMTP submission (STARTTLS).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:1587")]
    listen_smtp: std::net::SocketAddr,
    /// Your login at the provider, when it is not your address.
    #[arg(long)]
    login: Option<String>,
    /// State folder (default: /var/lib/sealpost for a config under /etc, else
    /// $XDG_STATE_HOME/sealpost).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Overwrite an existing config and identity key.
    #[arg(long)]
    force: bool,
}

#[derive(clap::Args)]
struct SealCli {
    /// The login of the `[[identity]]` whose mail and key these are.
    #[arg(long)]
    login: String,
    /// Mailboxes to work on (repeatable).
    #[arg(long = "mailbox", value_name = "NAME", default_value = "INBOX")]
    mailboxes: Vec<String>,
    /// Only messages stored before this day (YYYY-MM-DD).
    #[arg(long, value_name = "DATE")]
    before: Option<String>,
    /// Say what would change, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// File holding the IMAP password (else the SEALPOST_PASSWORD variable, else a
    /// prompt on the terminal).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Import certificates (armored or binary, several per file; updates merge).
    Import {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List the certificates in the store and whether they can be used.
    List,
    /// Ask every configured source for ADDRESS and say which key would be used.
    Lookup {
        address: String,
        /// Consult this identity's Autocrypt state too (what its mail would use).
        #[arg(long = "as", value_name = "IDENTITY")]
        identity: Option<String>,
    },
    /// Print the stored certificates for ADDRESS, armored.
    Export { address: String },
    /// Remove a certificate from the store.
    Remove { fingerprint: String },
    /// Re-fetch discovered keys from where they were found (revocations, new subkeys).
    Refresh,
    /// Make a new key for an identity that has none, and say how to publish it.
    Generate {
        address: String,
        /// Folder for the secret key, its passphrase file and the WKD file
        /// (default: the config file's folder).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("SEALPOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        // The PostgreSQL client logs every statement's parameters at debug level.
        .add_directive("tokio_postgres=info".parse().expect("a valid directive"));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Under systemd stderr goes to the journal: no colour codes there.
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter(filter),
        )
        // `sealpost status` shows the last warnings and errors.
        .with(
            sealpost::stats::ErrorRecorder
                .with_filter(tracing_subscriber::filter::LevelFilter::WARN),
        )
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sealpost: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = cli.config.unwrap_or_else(sealpost::paths::default_config);
    match cli.command {
        Command::Init(args) => {
            let state_dir = args
                .state_dir
                .unwrap_or_else(|| sealpost::paths::default_state_dir(&config));
            let report = sealpost::init::init(&sealpost::init::InitArgs {
                // Under /etc the service reads its key as a systemd credential.
                credentials: config.starts_with("/etc"),
                config,
                state_dir,
                address: args.address,
                imap: args.imap,
                smtp: args.smtp,
                key: args.key,
                passphrase_file: args.passphrase_file,
                extra_ca: args.extra_ca,
                listen_imap: args.listen_imap,
                listen_smtp: args.listen_smtp,
                login: args.login,
                force: args.force,
            })?;
            print!("{}", report.text);
            Ok(ExitCode::SUCCESS)
        }
        Command::Run => {
            init_logging();
            let config = Config::load(&config)?;
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(sealpost::app::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    println!("FAIL config: {:#}", anyhow::Error::from(e));
                    return Ok(ExitCode::FAILURE);
                }
            };
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            let lines = rt.block_on(sealpost::app::check(&config));
            let mut ok = true;
            for l in &lines {
                println!(
                    "{} {}: {}",
                    if l.ok { "ok  " } else { "FAIL" },
                    l.what,
                    l.detail
                );
                ok &= l.ok;
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Status { json } => {
            let config = Config::load(&config)?;
            let (value, snapshot) = sealpost::status::query(&config.control_socket())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print!("{}", sealpost::status::render(&snapshot));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Seal(args) => seal(&config, args, false),
        Command::Unseal(args) => seal(&config, args, true),
        Command::Keys { command } => {
            let config = Config::load(&config)?;
            let state = std::sync::Arc::new(sealpost::state::State::open(
                &config.state,
                &config.state_dir,
            )?);
            let store = KeyStore::open_with_db(&config.key_dir(), state.clone())?;
            let discovery = || -> anyhow::Result<Discovery> {
                let tls = sealpost::tls::client_config(config.keys.extra_ca.as_deref())?;
                let autocrypt = std::sync::Arc::new(AutocryptStore::new(state.clone()));
                let store =
                    std::sync::Arc::new(KeyStore::open_with_db(&config.key_dir(), state.clone())?);
                Ok(Discovery::new(
                    &config.keys,
                    state.clone(),
                    store,
                    autocrypt,
                    tls,
                )?)
            };
            match command {
                KeysCommand::Lookup { address, identity } => {
                    let d = discovery()?;
                    let rt = tokio::runtime::Runtime::new()?;
                    let report = rt.block_on(d.lookup_uncached(&address, identity.as_deref()));
                    for a in &report.attempts {
                        println!(
                            "{:<10} {}",
                            format!("{:?}", a.source).to_lowercase(),
                            outcome_label(&a.outcome)
                        );
                    }
                    match report.chosen() {
                        Some((source, certs)) => {
                            for c in certs {
                                println!(
                                    "use        {} (from {}; valid, not revoked, encryption subkey present, user ID matches {})",
                                    c.fingerprint().to_hex(),
                                    format!("{source:?}").to_lowercase(),
                                    report.address
                                );
                            }
                        }
                        None => {
                            println!("use        none: mail to {} follows the policy for recipients without a key", report.address);
                            return Ok(ExitCode::FAILURE);
                        }
                    }
                }
                KeysCommand::Export { address } => {
                    let certs = store.with_address(&address)?;
                    if certs.is_empty() {
                        anyhow::bail!("no certificate for {address} in {}", store.dir().display());
                    }
                    use sequoia_openpgp::serialize::SerializeInto;
                    for c in certs {
                        print!("{}", String::from_utf8(c.armored().to_vec()?)?);
                    }
                }
                KeysCommand::Remove { fingerprint } => {
                    if store.remove(&fingerprint)? {
                        println!("removed {fingerprint}");
                    } else {
                        anyhow::bail!("no certificate {fingerprint} in {}", store.dir().display());
                    }
                }
                KeysCommand::Refresh => {
                    let d = discovery()?;
                    let rt = tokio::runtime::Runtime::new()?;
                    let n = rt.block_on(d.refresh());
                    println!("refreshed {n} certificate(s)");
                }
                KeysCommand::Generate { address, out } => {
                    let out = out.unwrap_or_else(|| {
                        config
                            .source
                            .parent()
                            .map(|p| p.to_path_buf())
                            .unwrap_or_default()
                    });
                    let g = sealpost::keys::generate(&address, &out)?;
                    store.insert(g.cert.clone())?;
                    println!("{}", g.instructions);
                }
                KeysCommand::Import { files } => {
                    for file in files {
                        let data = std::fs::read(&file)
                            .with_context(|| format!("cannot read {}", file.display()))?;
                        for imported in store.import(&data, &file.display().to_string())? {
                            println!(
                                "{} {} {}",
                                if imported.new { "imported" } else { "updated " },
                                imported.fingerprint,
                                imported.user_ids.join(", ")
                            );
                        }
                    }
                }
                KeysCommand::List => {
                    for cert in store.certs()?.iter() {
                        let uids: Vec<String> = cert
                            .userids()
                            .map(|u| String::from_utf8_lossy(u.userid().value()).into_owned())
                            .collect();
                        let usable: Vec<String> = cert
                            .userids()
                            .filter_map(|u| u.userid().email().ok().flatten().map(str::to_string))
                            .filter(|e| {
                                sealpost::keys::usable_for(cert, e, &sealpost::keys::POLICY)
                            })
                            .collect();
                        // Where a discovered certificate came from (see keys::provenance).
                        let origin = store
                            .provenance(&cert.fingerprint().to_hex())
                            .filter(|p| !p.local)
                            .map(|p| {
                                let v: Vec<String> = p
                                    .vouched
                                    .iter()
                                    .map(|(a, v)| {
                                        format!("{} for {a}", format!("{v:?}").to_lowercase())
                                    })
                                    .collect();
                                format!(" discovered: {}", v.join(", "))
                            })
                            .unwrap_or_default();
                        println!(
                            "{} {} [{}]{origin}",
                            cert.fingerprint().to_hex(),
                            uids.join(", "),
                            if usable.is_empty() {
                                "not usable: revoked, expired or no encryption subkey".to_string()
                            } else {
                                format!("encrypts to {}", usable.join(", "))
                            }
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `sealpost seal` / `sealpost unseal`.
fn seal(config: &std::path::Path, cli: SealCli, unseal: bool) -> anyhow::Result<ExitCode> {
    init_logging();
    let config = Config::load(config)?;
    let password = match cli.password_file {
        Some(f) => std::fs::read_to_string(&f)
            .with_context(|| format!("cannot read the password file {}", f.display()))?
            .trim_end_matches(['\r', '\n'])
            .to_string(),
        None => match std::env::var("SEALPOST_PASSWORD") {
            Ok(p) => p,
            Err(_) if std::io::stdin().is_terminal() => {
                rpassword::prompt_password(format!("IMAP password for {}: ", cli.login))
                    .context("cannot read the password from the terminal")?
            }
            Err(_) => anyhow::bail!(
                "no password: give --password-file FILE, set SEALPOST_PASSWORD, or run on a terminal to be asked"
            ),
        },
    };
    let before = cli
        .before
        .map(|d| sealpost::imap::seal::imap_date(&d))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let args = sealpost::app::SealArgs {
        login: cli.login,
        password,
        mailboxes: cli.mailboxes,
        before,
        dry_run: cli.dry_run,
        unseal,
    };
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    // On a terminal one line redrawn in place; elsewhere a plain line per mailbox.
    let mut bar = std::io::stderr()
        .is_terminal()
        .then(sealpost::imap::progress::Bar::new);
    let summary = rt.block_on(sealpost::app::seal(
        &config,
        args,
        &mut |p| match &mut bar {
            Some(bar) => {
                let mut err = std::io::stderr();
                let _ = err.write_all(bar.update(p, std::time::Instant::now()).as_bytes());
                let _ = err.flush();
            }
            None => {
                if let Some(line) = p.line() {
                    println!("{line}");
                }
            }
        },
    ))?;
    let verb = match (unseal, cli.dry_run) {
        (false, false) => "sealed",
        (false, true) => "would seal",
        (true, false) => "unsealed",
        (true, true) => "would unseal",
    };
    let other = if unseal {
        "other encrypted"
    } else {
        "already encrypted"
    };
    println!(
        "{verb} {}, {other} {}, finished from an earlier run {}, failed {}",
        summary.sealed,
        summary.already_encrypted,
        summary.finished,
        summary.failed.len()
    );
    for f in &summary.failed {
        println!("failed: {f}");
    }
    Ok(if summary.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
