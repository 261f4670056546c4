//! `papercup wallet …`

use anyhow::{bail, Context, Result};
use billing::money::{format_amount, parse_amount, Money};
use billing::{LedgerKind, Movement, NewWallet, OwnerKind, Wallet};

use crate::cli::{CreditKindArg, MovementArgs, OwnerKindArg, WalletCommand};
use crate::config::Config;
use crate::output::{json, list, table, ts};

fn print_wallet(w: &Wallet) {
    let money = |micros| Money {
        micros,
        currency: &w.currency,
    };
    println!("wallet       {}", w.id);
    println!("owner        {} {}", w.owner_kind.as_str(), w.owner_ref);
    if !w.name.is_empty() {
        println!("name         {}", w.name);
    }
    println!("balance      {}", money(w.balance));
    println!("reserved     {}", money(w.reserved));
    println!("available    {}", money(w.available()));
    println!(
        "countries    {}",
        w.allowed_countries
            .as_ref()
            .map(|c| c.join(","))
            .unwrap_or_else(|| "all".into())
    );
    println!(
        "max rate     {}",
        w.max_rate_per_min
            .map(|m| format!("{} / min", format_amount(m)))
            .unwrap_or_else(|| "global default".into())
    );
}

fn parse_positive(amount: &str) -> Result<i64> {
    let v = parse_amount(amount).with_context(|| format!("amount {amount:?}"))?;
    if v <= 0 {
        bail!("amount {amount:?} must be positive");
    }
    Ok(v)
}

async fn movement(config: &Config, args: MovementArgs, debit: bool) -> Result<()> {
    let amount = parse_positive(&args.amount)?;
    let kind = match (args.kind, debit) {
        (None, _) => LedgerKind::Adjustment,
        (Some(CreditKindArg::Purchase), false) => LedgerKind::Purchase,
        (Some(CreditKindArg::Bonus), false) => LedgerKind::Bonus,
        (Some(CreditKindArg::Refund), _) => LedgerKind::Refund,
        (Some(CreditKindArg::Adjustment), _) => LedgerKind::Adjustment,
        (Some(k), true) => bail!("a debit cannot be a {k:?}; use adjustment or refund"),
    };
    if args.reason.trim().is_empty() {
        bail!("--reason must say why");
    }
    let key = args
        .idempotency_key
        .unwrap_or_else(|| format!("cli:{:032x}", rand::random::<u128>()));
    let b = super::open_billing(config).await?;
    let posted = b
        .post(Movement {
            wallet_id: args.id,
            kind,
            amount: if debit { -amount } else { amount },
            idempotency_key: key,
            reference: args.reference,
            reason: args.reason,
        })
        .await?;
    if args.json.json {
        return json(&posted);
    }
    let w = b.wallet(args.id).await?;
    let e = &posted.entry;
    if posted.applied {
        println!(
            "{} {} to wallet {} ({}); balance {}",
            if debit { "debited" } else { "credited" },
            format_amount(e.amount.abs()),
            w.id,
            e.idempotency_key,
            Money {
                micros: w.balance,
                currency: &w.currency
            }
        );
    } else {
        println!(
            "already applied: {} was posted at {} (ledger entry {}); nothing changed",
            e.idempotency_key,
            ts(e.created_at),
            e.id
        );
    }
    Ok(())
}

pub async fn run(config: &Config, cmd: WalletCommand) -> Result<()> {
    match cmd {
        WalletCommand::Create {
            owner_kind,
            owner,
            name,
            allow_countries,
            max_rate,
            json: j,
        } => {
            let max_rate = max_rate
                .as_deref()
                .map(|m| parse_amount(m).with_context(|| format!("--max-rate {m:?}")))
                .transpose()?;
            let b = super::open_billing(config).await?;
            let w = b
                .create_wallet(NewWallet {
                    owner_kind: match owner_kind {
                        OwnerKindArg::Person => OwnerKind::Person,
                        OwnerKindArg::Company => OwnerKind::Company,
                    },
                    owner_ref: owner,
                    name,
                    allowed_countries: allow_countries,
                    max_rate_per_min: max_rate,
                })
                .await?;
            if j.json {
                return json(&w);
            }
            println!("created wallet {}", w.id);
            print_wallet(&w);
        }
        WalletCommand::Show {
            id,
            ledger,
            json: j,
        } => {
            let b = super::open_billing(config).await?;
            let w = b.wallet(id).await?;
            let entries = b.ledger(id, ledger).await?;
            if j.json {
                return json(&serde_json::json!({ "wallet": w, "ledger": entries }));
            }
            print_wallet(&w);
            if entries.is_empty() {
                println!("\nno ledger entries");
            } else {
                let rows: Vec<Vec<String>> = entries
                    .iter()
                    .map(|e| {
                        vec![
                            e.id.to_string(),
                            ts(e.created_at),
                            e.kind.as_str().into(),
                            format_amount(e.amount),
                            format_amount(e.balance_after),
                            e.reason.clone(),
                        ]
                    })
                    .collect();
                println!();
                print!(
                    "{}",
                    table(
                        &["entry", "at", "kind", "amount", "balance", "reason"],
                        &rows
                    )
                );
            }
        }
        WalletCommand::List(j) => {
            let b = super::open_billing(config).await?;
            let wallets = b.wallets().await?;
            list(
                &wallets,
                j.json,
                "no wallets",
                &["id", "kind", "owner", "name", "balance", "reserved"],
                |w| {
                    vec![
                        w.id.to_string(),
                        w.owner_kind.as_str().into(),
                        w.owner_ref.clone(),
                        w.name.clone(),
                        format!("{} {}", w.currency, format_amount(w.balance)),
                        format_amount(w.reserved),
                    ]
                },
            )?;
        }
        WalletCommand::Credit(args) => movement(config, args, false).await?,
        WalletCommand::Debit(args) => movement(config, args, true).await?,
        WalletCommand::Policy {
            id,
            allow_countries,
            all_countries,
            max_rate,
            default_max_rate,
            json: j,
        } => {
            let countries = match (allow_countries, all_countries) {
                (Some(c), _) => Some(Some(c)),
                (None, true) => Some(None),
                (None, false) => None,
            };
            let max = match (max_rate, default_max_rate) {
                (Some(m), _) => Some(Some(
                    parse_amount(&m).with_context(|| format!("--max-rate {m:?}"))?,
                )),
                (None, true) => Some(None),
                (None, false) => None,
            };
            if countries.is_none() && max.is_none() {
                bail!("nothing to change: give --allow-countries, --all-countries, --max-rate or --default-max-rate");
            }
            let b = super::open_billing(config).await?;
            let w = b.update_wallet_policy(id, countries, max).await?;
            if j.json {
                return json(&w);
            }
            print_wallet(&w);
        }
    }
    Ok(())
}
