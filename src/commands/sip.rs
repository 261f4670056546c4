//! `papercup seat …` and `papercup registrations …`

use anyhow::{anyhow, Result};
use rand::Rng;
use signaling::store;

use crate::cli::{RegistrationsCommand, SeatCommand, SipCommand};
use crate::config::Config;
use crate::output::{json, list, ts};

fn realm(config: &Config) -> Result<String> {
    Ok(config
        .sip_config()
        .map_err(|(k, m)| anyhow!("config key `{k}`: {m}"))?
        .registrar
        .realm)
}

/// The password from standard input, or a generated one (returned with `true`).
fn password(from_stdin: bool) -> Result<(String, bool)> {
    if from_stdin {
        return Ok((super::read_secret("password")?, false));
    }
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    let p = (0..20)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    Ok((p, true))
}

pub async fn seat(config: &Config, cmd: SeatCommand) -> Result<()> {
    let db = super::open_db(config).await?;
    let result = seat_inner(config, &db, cmd).await;
    db.close().await;
    result
}

async fn seat_inner(config: &Config, db: &storage::Db, cmd: SeatCommand) -> Result<()> {
    match cmd {
        SeatCommand::Create {
            username,
            wallet,
            display_name,
            password_stdin,
            json: j,
        } => {
            let (pw, generated) = password(password_stdin)?;
            let realm = realm(config)?;
            let s = store::create_seat(db, &username, wallet, &pw, &realm, &display_name).await?;
            if j.json {
                let mut v = serde_json::to_value(&s)?;
                if generated {
                    v["password"] = pw.into();
                }
                return json(&v);
            }
            println!(
                "created seat {} (id {}) paying from wallet {}, realm {}",
                s.username, s.id, s.wallet_id, s.realm
            );
            if generated {
                println!("password {pw}  (shown once; only its digest hashes are stored)");
            }
        }
        SeatCommand::Passwd {
            username,
            password_stdin,
            json: j,
        } => {
            let (pw, generated) = password(password_stdin)?;
            store::set_password(db, &username, &pw, &realm(config)?).await?;
            if j.json {
                let mut v = serde_json::json!({ "username": username });
                if generated {
                    v["password"] = pw.into();
                }
                return json(&v);
            }
            println!("password of seat {username} changed");
            if generated {
                println!("password {pw}  (shown once)");
            }
        }
        SeatCommand::Disable { username } => {
            store::set_disabled(db, &username, true).await?;
            println!("seat {username} disabled; its registrations are removed");
        }
        SeatCommand::Enable { username } => {
            store::set_disabled(db, &username, false).await?;
            println!("seat {username} enabled");
        }
        SeatCommand::List(j) => {
            let seats = store::seats(db).await?;
            list(
                &seats,
                j.json,
                "no seats (create one with `papercup seat create NAME --wallet ID`)",
                &[
                    "username",
                    "id",
                    "wallet",
                    "display name",
                    "realm",
                    "state",
                    "created",
                ],
                |s| {
                    vec![
                        s.username.clone(),
                        s.id.to_string(),
                        s.wallet_id.to_string(),
                        s.display_name.clone(),
                        s.realm.clone(),
                        if s.disabled { "disabled" } else { "enabled" }.into(),
                        ts(s.created_at),
                    ]
                },
            )?;
        }
    }
    Ok(())
}

pub async fn registrations(config: &Config, cmd: RegistrationsCommand) -> Result<()> {
    let db = super::open_db(config).await?;
    let RegistrationsCommand::List { seat, json: j } = cmd;
    let now = chrono::Utc::now().timestamp_millis();
    let result = store::bindings(&db, seat.as_deref(), now).await;
    db.close().await;
    let bindings = result?;
    list(
        &bindings,
        j.json,
        "no live registrations",
        &[
            "seat",
            "contact",
            "source",
            "expires in",
            "node",
            "user agent",
        ],
        |b| {
            vec![
                b.username.clone(),
                b.contact.clone(),
                b.source.clone(),
                format!("{} s", (b.expires_at - now).max(0) / 1000),
                b.node_id.clone(),
                b.user_agent.clone(),
            ]
        },
    )
}

/// `papercup sip status`: asks the local server's loopback-only admin route.
pub fn status(config: &Config, cmd: SipCommand) -> Result<()> {
    let SipCommand::Status(j) = cmd;
    let v = crate::commands::turn::admin_get(config, "/admin/sip/status")?;
    if j.json {
        return json(&v);
    }
    let m = &v["metrics"];
    let pairs = |key: &str| -> String {
        m[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|p| p[1].as_u64().unwrap_or(0) > 0)
                    .map(|p| format!("{} {}", p[0].as_str().unwrap_or("?"), p[1]))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let listening: Vec<String> = v["listening"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    println!("listening        {}", listening.join(" "));
    println!("requests         {}", pairs("requests"));
    println!("responses sent   {}", pairs("responses_sent"));
    println!(
        "auth             {} ok, {} failed; {} sources blocked so far",
        m["auth_successes"], m["auth_failures"], m["sources_blocked"]
    );
    println!(
        "dropped          {} from blocked sources, {} rate-limited, {} malformed",
        m["dropped_blocked"], m["dropped_rate_limited"], m["malformed"]
    );
    println!(
        "registrations    {} (un-registrations {})",
        m["registrations"], m["unregistrations"]
    );
    println!("active dialogs   {}", m["active_dialogs"]);
    if let Some(b) = v["blocked"].as_array().filter(|b| !b.is_empty()) {
        for x in b {
            println!(
                "blocked          {} ({} s left)",
                x[0].as_str().unwrap_or("?"),
                x[1]
            );
        }
    }
    Ok(())
}
