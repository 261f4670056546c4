//! `papercup turn …`

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::cli::TurnCommand;
use crate::config::Config;
use crate::output::{json, table};

pub async fn run(config: &Config, cmd: TurnCommand) -> Result<()> {
    match cmd {
        TurnCommand::Credentials { user, ttl, json: j } => {
            let Some(turn) = config
                .turn_config()
                .map_err(|(k, m)| anyhow!("config key `{k}`: {m}"))?
            else {
                bail!("the TURN relay is off: set turn.secrets (see deploy/papercup.example.toml)");
            };
            if user.trim().is_empty() || user.contains(':') {
                bail!("--user must be a non-empty id without ':'");
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            let urls = turn_server::urls(&config.turn_public_host(), &turn);
            let c = turn_server::mint(
                &turn.secrets[0],
                &user,
                ttl.unwrap_or(config.turn.credential_ttl_secs),
                now,
                urls,
            );
            if j.json {
                return json(&c);
            }
            println!("username    {}", c.username);
            println!("credential  {}", c.credential);
            println!("ttl         {} s", c.ttl);
            for u in &c.urls {
                println!("url         {u}");
            }
        }
        TurnCommand::Status(j) => {
            let v = admin_get(config, "/admin/turn/allocations")?;
            if j.json {
                return json(&v);
            }
            if v["enabled"] == false {
                println!("the TURN relay is off on this host (turn.secrets is empty)");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = v["allocations"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| {
                            ["username", "transport", "client", "relay"]
                                .iter()
                                .map(|k| x[k].as_str().unwrap_or("").to_string())
                                .collect()
                        })
                        .collect()
                })
                .unwrap_or_default();
            if rows.is_empty() {
                println!("no live allocations");
            } else {
                print!(
                    "{}",
                    table(&["username", "transport", "client", "relay"], &rows)
                );
            }
            let m = &v["metrics"];
            println!(
                "\nallocations {} active, {} since start; relayed {} packets to peers, {} from peers; \
                 {} auth failures, {} denied peers, {} quota refusals",
                m["allocations_active"], m["allocations_total"], m["packets_to_peers"],
                m["packets_from_peers"], m["auth_failures"], m["denied_peers"], m["quota_refusals"]
            );
        }
    }
    Ok(())
}

/// GETs `path` from the loopback-only admin API of the server running on this host.
pub(crate) fn admin_get(config: &Config, path: &str) -> Result<serde_json::Value> {
    let addr = local_admin_addr(config);
    let body = http_get(addr, path).with_context(|| {
        format!("asking the server at http://{addr} (is `papercup serve` running here?)")
    })?;
    serde_json::from_str(&body).context("the server's answer is not JSON")
}

/// Where this host's server answers admin requests: http.listen, on loopback when it
/// listens on every address.
fn local_admin_addr(config: &Config) -> SocketAddr {
    let mut addr = config.http.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    addr
}

/// A minimal HTTP/1.1 GET for the local admin API (no client library needed for one call).
fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP answer"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("malformed HTTP status line"))?;
    if status != 200 {
        bail!("the server answered {status}: {body}");
    }
    Ok(body.to_string())
}
