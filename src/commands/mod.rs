//! The CLI commands. Each opens the database (applying pending migrations), does one
//! thing, and prints text or `--json`.

pub mod calls;
pub mod rates;
pub mod sip;
pub mod trunk;
pub mod turn;
pub mod wallet;

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::config::Config;

/// Opens the database (applying pending migrations) for a command.
pub async fn open_db(config: &Config) -> Result<storage::Db> {
    storage::Db::open(&config.database.url, &config.db_options())
        .await
        .context("opening the database")
}

/// The first line of standard input, without its line end: secrets never come from argv.
pub fn read_secret(what: &str) -> Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .with_context(|| format!("reading the {what} from standard input"))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Opens the database and the billing engine for a command.
pub async fn open_billing(config: &Config) -> Result<billing::Billing> {
    let db = open_db(config).await?;
    let b = billing::Billing::new(
        db,
        Arc::new(billing::SystemClock),
        config.node_id.clone(),
        config.billing_config(),
    )
    .await?;
    Ok(b)
}

/// `papercup migrate`
pub async fn migrate(config: &Config, json: bool) -> Result<()> {
    let db = storage::Db::connect(&config.database.url, &config.db_options())
        .await
        .context("opening the database")?;
    let applied = db.migrate().await?;
    let all = db.applied_migrations().await?;
    if json {
        crate::output::json(&serde_json::json!({
            "database": db.display_url(),
            "backend": db.backend().name(),
            "applied_now": applied,
            "applied": all,
        }))?;
    } else if applied.is_empty() {
        println!(
            "{} is up to date ({} migrations)",
            db.display_url(),
            all.len()
        );
    } else {
        println!(
            "applied {} migration(s) to {}: {:?}",
            applied.len(),
            db.display_url(),
            applied
        );
    }
    db.close().await;
    Ok(())
}
