//! The `sealpost` command: thin wiring around the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use sealpost::config::Config;
use sealpost::keys::KeyStore;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "sealpost",
    version,
    about = "Transparent encrypting mail proxy (OpenPGP for SMTP and IMAP)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start every listener of the config and serve until SIGTERM/SIGINT.
    Run {
        #[arg(long, short, default_value = "/etc/sealpost/sealpost.toml")]
        config: PathBuf,
    },
    /// Validate the config, load every key and reach every upstream.
    Check {
        #[arg(long, short, default_value = "/etc/sealpost/sealpost.toml")]
        config: PathBuf,
    },
    /// Manage the public key store.
    Keys {
        #[arg(long, short, default_value = "/etc/sealpost/sealpost.toml")]
        config: PathBuf,
        #[command(subcommand)]
        command: KeysCommand,
    },
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
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SEALPOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
    match cli.command {
        Command::Run { config } => {
            init_logging();
            let config = Config::load(&config)?;
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(sealpost::app::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    println!("FAIL config: {e}");
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
        Command::Keys { config, command } => {
            let config = Config::load(&config)?;
            let store = KeyStore::open(&config.key_dir())?;
            match command {
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
                        println!(
                            "{} {} [{}]",
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
