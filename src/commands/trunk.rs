//! `papercup trunk …` and `papercup number …`

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use sip_trunk::store::{self, TrunkSettings};
use sip_trunk::{Provider, Trunk, TrunkTransport};

use crate::cli::{NumberCommand, TrunkArgs, TrunkCommand};
use crate::config::Config;
use crate::output::{json, list, ts};

fn settings(a: TrunkArgs) -> Result<TrunkSettings> {
    let password = if a.password_stdin {
        let p = super::read_secret("trunk password")?;
        if p.is_empty() {
            bail!("--password-stdin: standard input held no password");
        }
        Some(p)
    } else {
        None
    };
    Ok(TrunkSettings {
        provider: a
            .provider
            .map(|p| {
                Provider::parse(&p)
                    .ok_or_else(|| anyhow!("--provider {p:?}: twilio, telnyx or generic"))
            })
            .transpose()?,
        host: a.host,
        port: a.port.map(Some),
        transport: a
            .transport
            .map(|t| {
                TrunkTransport::parse(&t)
                    .ok_or_else(|| anyhow!("--transport {t:?}: udp, tcp or tls"))
            })
            .transpose()?,
        srtp: a.srtp,
        username: a.username,
        password,
        caller_ids: a.caller_ids,
        codecs: a.codecs,
        max_channels: a.max_channels,
        max_cps: a.max_cps,
        priority: a.priority,
        weight: a.weight,
        enabled: None,
        inbound_sources: a.inbound_sources,
    })
}

fn print_trunk(t: &Trunk) {
    let port = t.port_or_default();
    println!(
        "trunk        {} (id {}), {}",
        t.name,
        t.id,
        if t.enabled { "enabled" } else { "disabled" }
    );
    println!("provider     {}", t.provider.as_str());
    println!(
        "termination  {}:{port} over {}{}",
        t.host,
        t.transport.as_str(),
        if t.srtp { ", SRTP" } else { "" }
    );
    println!(
        "auth         {}",
        match (t.username.is_empty(), t.has_password) {
            (true, false) => "none (IP-based)".to_string(),
            (_, true) => format!("digest as {:?}, password set", t.username),
            (false, false) => format!("digest as {:?}, no password", t.username),
        }
    );
    println!(
        "caller IDs   {}",
        if t.caller_ids.is_empty() {
            "none allowed yet".into()
        } else {
            t.caller_ids.join(", ")
        }
    );
    println!("codecs       {}", t.codecs.join(", "));
    println!(
        "limits       {} channels, {} calls/s",
        if t.max_channels == 0 {
            "unlimited".into()
        } else {
            t.max_channels.to_string()
        },
        t.max_cps
    );
    println!("routing      priority {}, weight {}", t.priority, t.weight);
    println!(
        "inbound from {}",
        if t.inbound_sources.is_empty() {
            "nowhere yet".into()
        } else {
            t.inbound_sources.join(", ")
        }
    );
    println!("updated      {}", ts(t.updated_at));
}

pub async fn trunk(config: &Config, cmd: TrunkCommand) -> Result<()> {
    let db = super::open_db(config).await?;
    let result = trunk_inner(&db, cmd).await;
    db.close().await;
    result
}

async fn trunk_inner(db: &storage::Db, cmd: TrunkCommand) -> Result<()> {
    match cmd {
        TrunkCommand::Add {
            name,
            settings: a,
            json: j,
        } => {
            let t = store::add(db, &name, &settings(a)?).await?;
            if j.json {
                return json(&t);
            }
            println!("added trunk {}", t.name);
            print_trunk(&t);
        }
        TrunkCommand::List(j) => {
            let trunks = store::trunks(db).await?;
            let health = store::health(db).await?;
            list(
                &trunks,
                j.json,
                "no trunks (add one with `papercup trunk add NAME --provider … --host …`)",
                &[
                    "name",
                    "provider",
                    "termination",
                    "state",
                    "health",
                    "priority",
                    "weight",
                    "cps",
                    "channels",
                ],
                |t| {
                    let h: Vec<String> = health
                        .iter()
                        .filter(|h| h.trunk == t.name)
                        .map(|h| format!("{} on {}", h.state, h.node_id))
                        .collect();
                    vec![
                        t.name.clone(),
                        t.provider.as_str().into(),
                        format!(
                            "{}:{}/{}",
                            t.host,
                            t.port_or_default(),
                            t.transport.as_str()
                        ),
                        if t.enabled { "enabled" } else { "disabled" }.into(),
                        if h.is_empty() {
                            "not probed".into()
                        } else {
                            h.join(", ")
                        },
                        t.priority.to_string(),
                        t.weight.to_string(),
                        t.max_cps.to_string(),
                        if t.max_channels == 0 {
                            "-".into()
                        } else {
                            t.max_channels.to_string()
                        },
                    ]
                },
            )?;
        }
        TrunkCommand::Show { name, json: j } => {
            let t = store::trunk(db, &name).await?;
            if j.json {
                return json(&t);
            }
            print_trunk(&t);
        }
        TrunkCommand::Update {
            name,
            settings: a,
            json: j,
        } => {
            let t = store::update(db, &name, &settings(a)?).await?;
            if j.json {
                return json(&t);
            }
            println!("updated trunk {}", t.name);
            print_trunk(&t);
        }
        TrunkCommand::Enable { name } => {
            let s = TrunkSettings {
                enabled: Some(true),
                ..TrunkSettings::default()
            };
            store::update(db, &name, &s).await?;
            println!("trunk {name} enabled");
        }
        TrunkCommand::Disable { name } => {
            let s = TrunkSettings {
                enabled: Some(false),
                ..TrunkSettings::default()
            };
            store::update(db, &name, &s).await?;
            println!("trunk {name} disabled: no new call is routed through it");
        }
        TrunkCommand::Remove { name } => {
            store::remove(db, &name).await?;
            println!("trunk {name} removed");
        }
        TrunkCommand::Health(j) => {
            let rows = store::health(db).await?;
            list(
                &rows,
                j.json,
                "no trunk probed yet (a running server probes every trunks.health_interval_secs)",
                &[
                    "trunk",
                    "host",
                    "state",
                    "latency",
                    "last answer",
                    "checked",
                ],
                |h| {
                    vec![
                        h.trunk.clone(),
                        h.node_id.clone(),
                        h.state.clone(),
                        h.latency_ms
                            .map(|l| format!("{l:.1} ms"))
                            .unwrap_or_else(|| "-".into()),
                        h.last_result.clone(),
                        ts(h.checked_at),
                    ]
                },
            )?;
        }
        TrunkCommand::Test {
            name,
            timeout,
            json: j,
        } => {
            let t = store::trunk(db, &name).await?;
            let r = signaling::probe::probe_trunk(&t, Duration::from_secs(timeout.max(1)))
                .await
                .with_context(|| format!("trunk {name} is not reachable"))?;
            if j.json {
                return json(&serde_json::json!({ "trunk": name, "reachable": true, "probe": r }));
            }
            println!(
                "trunk {name} reachable: {} {} from {} over {} in {:.1} ms{}",
                r.status,
                r.reason,
                r.target,
                r.transport,
                r.latency_ms,
                r.agent.map(|a| format!(" ({a})")).unwrap_or_default()
            );
        }
    }
    Ok(())
}

pub async fn number(config: &Config, cmd: NumberCommand) -> Result<()> {
    let db = super::open_db(config).await?;
    let result = number_inner(&db, cmd).await;
    db.close().await;
    result
}

async fn number_inner(db: &storage::Db, cmd: NumberCommand) -> Result<()> {
    let print = |n: &sip_trunk::Number, j: bool, what: &str| -> Result<()> {
        if j {
            return json(n);
        }
        println!(
            "{what} {} via trunk {}{}",
            n.e164,
            n.trunk,
            match (&n.owner_kind, &n.owner_ref) {
                (Some(k), Some(o)) => format!(", owned by {k} {o}"),
                _ => String::new(),
            }
        );
        Ok(())
    };
    match cmd {
        NumberCommand::Add {
            number,
            trunk,
            json: j,
        } => {
            let n = store::add_number(db, &number, &trunk).await?;
            print(&n, j.json, "added number")?;
        }
        NumberCommand::List(j) => {
            let nums = store::numbers(db).await?;
            list(
                &nums,
                j.json,
                "no numbers",
                &["number", "trunk", "owner", "target"],
                |n| {
                    vec![
                        n.e164.clone(),
                        n.trunk.clone(),
                        match (&n.owner_kind, &n.owner_ref) {
                            (Some(k), Some(o)) => format!("{k} {o}"),
                            _ => "-".into(),
                        },
                        n.target.clone(),
                    ]
                },
            )?;
        }
        NumberCommand::Assign {
            number,
            owner_kind,
            owner,
            target,
            json: j,
        } => {
            let n = store::assign_number(db, &number, &owner_kind, &owner, &target).await?;
            print(&n, j.json, "assigned number")?;
        }
        NumberCommand::Remove { number } => {
            store::remove_number(db, &number).await?;
            println!("number {number} removed");
        }
    }
    Ok(())
}
