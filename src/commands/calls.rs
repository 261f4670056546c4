//! `papercup calls …`

use anyhow::{bail, Result};
use billing::money::format_amount;

use crate::cli::CallsCommand;
use crate::config::Config;
use crate::output::{json, list, ts, ts_opt};

pub async fn run(config: &Config, cmd: CallsCommand) -> Result<()> {
    let b = super::open_billing(config).await?;
    match cmd {
        CallsCommand::List {
            wallet,
            limit,
            json: j,
        } => {
            let cdrs = b.cdrs(wallet, limit).await?;
            list(
                &cdrs,
                j.json,
                "no calls",
                &[
                    "call", "wallet", "to", "answered", "ended", "billed s", "cost", "cause",
                ],
                |c| {
                    vec![
                        c.call_id.clone(),
                        c.wallet_id.to_string(),
                        c.callee.clone(),
                        ts_opt(c.answered_at),
                        ts(c.ended_at),
                        c.billable_secs.to_string(),
                        format_amount(c.cost),
                        c.hangup_cause.clone(),
                    ]
                },
            )?;
        }
        CallsCommand::Show { call_id, json: j } => {
            let cdr = b.cdr(&call_id).await?;
            let attempts = sip_trunk::store::attempts(b.db(), &call_id).await?;
            if cdr.is_none() && attempts.is_empty() {
                bail!("no call {call_id:?}");
            }
            if j.json {
                let mut v = match &cdr {
                    Some(c) => serde_json::to_value(c)?,
                    None => serde_json::json!({ "call_id": call_id }),
                };
                v["attempts"] = serde_json::to_value(&attempts)?;
                return json(&v);
            }
            match &cdr {
                Some(c) => print_cdr(c),
                None => println!("call          {call_id} (no charge: inbound, or still live)"),
            }
            if !attempts.is_empty() {
                println!("attempts");
                for a in &attempts {
                    let took = a
                        .ended_at
                        .map(|e| format!("{} ms", e - a.started_at))
                        .unwrap_or_else(|| "running".into());
                    println!(
                        "  {}. {} {:<8} {}  {}  ({}, {took}, node {})",
                        a.seq,
                        ts(a.started_at),
                        match a.direction {
                            sip_trunk::AttemptDirection::Outbound => "out via",
                            sip_trunk::AttemptDirection::Inbound => "in from",
                        },
                        a.trunk,
                        a.outcome,
                        a.target,
                        a.node_id
                    );
                }
            }
        }
        CallsCommand::Live(j) => {
            let live = b.live_grants().await?;
            list(
                &live,
                j.json,
                "no live calls",
                &[
                    "call",
                    "node",
                    "wallet",
                    "to",
                    "answered",
                    "granted s",
                    "reserved",
                ],
                |g| {
                    vec![
                        g.call_id.clone(),
                        g.node_id.clone(),
                        g.wallet_id.to_string(),
                        g.callee.clone(),
                        ts_opt(g.answered_at),
                        format!(
                            "{}{}",
                            g.granted_ms / 1000,
                            if g.final_units { " (final)" } else { "" }
                        ),
                        format_amount(g.reserved),
                    ]
                },
            )?;
        }
    }
    Ok(())
}

fn print_cdr(c: &billing::Cdr) {
    let t = c.tariff;
    println!("call          {}", c.call_id);
    println!("wallet        {}", c.wallet_id);
    println!("node          {}", c.node_id);
    println!("from          {}", c.caller);
    println!("to            {}", c.callee);
    println!("trunk         {}", c.trunk.as_deref().unwrap_or("-"));
    println!(
        "rate          prefix {}: {}/min, connect {}, {}/{}",
        c.rate_prefix,
        format_amount(t.rate_per_min),
        format_amount(t.connect_fee),
        t.increment_first,
        t.increment_next
    );
    println!("authorized    {}", ts(c.created_at));
    println!("answered      {}", ts_opt(c.answered_at));
    println!("ended         {}", ts(c.ended_at));
    println!(
        "talk time     {}.{:03} s",
        c.duration_ms / 1000,
        c.duration_ms % 1000
    );
    println!("billed        {} s", c.billable_secs);
    println!("cost          {}", format_amount(c.cost));
    println!("hangup cause  {}", c.hangup_cause);
    if let Some(q) = &c.quality {
        println!("quality       {q}");
    }
}
