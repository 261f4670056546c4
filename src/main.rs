//! `papercup`: the gateway binary and its operator CLI.
//!
//! `serve` wires the crates together on one host; every other command is a short-lived
//! operator action against the same database (rates, wallets, calls, migrations).

#![forbid(unsafe_code)]

mod cli;
mod commands;
mod config;
mod output;
mod serve;

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command, ConfigCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let loaded = match config::load(cli.config.as_deref(), &env) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("papercup: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    // One TLS crypto provider for the whole process (sqlx's PostgreSQL TLS, later SIP-TLS,
    // TURN-TLS and DTLS): ring. Without a default, rustls panics when a config is built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let spec = std::env::var("PAPERCUP_LOG").unwrap_or_else(|_| loaded.config.log.level.clone());
    let mut filter = EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new("info"));
    // rsipstack logs every message it receives at info: only on request.
    if !spec.contains("rsipstack") {
        if let Ok(d) = "rsipstack=warn".parse() {
            filter = filter.add_directive(d);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("papercup: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, loaded)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("papercup: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, loaded: config::Loaded) -> anyhow::Result<()> {
    let config = loaded.config;
    match command {
        Command::Serve => serve::run(config).await,
        Command::Migrate(j) => commands::migrate(&config, j.json).await,
        Command::Config(ConfigCommand::Check) => {
            println!(
                "configuration OK (from {}; node {}, database {})",
                loaded
                    .file
                    .as_ref()
                    .map(|f| f.display().to_string())
                    .unwrap_or_else(|| "defaults and environment".into()),
                config.node_id,
                storage::redact_url(&config.database.url)
            );
            Ok(())
        }
        Command::Config(ConfigCommand::Show) => {
            let mut shown = config.clone();
            shown.database.url = storage::redact_url(&shown.database.url);
            for s in &mut shown.turn.secrets {
                *s = "***".into();
            }
            print!("{}", toml::to_string_pretty(&shown)?);
            Ok(())
        }
        Command::Rates(c) => commands::rates::run(&config, c).await,
        Command::Wallet(c) => commands::wallet::run(&config, c).await,
        Command::Calls(c) => commands::calls::run(&config, c).await,
        Command::Turn(c) => commands::turn::run(&config, c).await,
        Command::Seat(c) => commands::sip::seat(&config, c).await,
        Command::Registrations(c) => commands::sip::registrations(&config, c).await,
        Command::Sip(c) => commands::sip::status(&config, c),
        Command::Trunk(c) => commands::trunk::trunk(&config, c).await,
        Command::Number(c) => commands::trunk::number(&config, c).await,
    }
}
