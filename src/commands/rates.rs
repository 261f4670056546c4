//! `papercup rates …`

use std::io::{IsTerminal, Read};

use anyhow::{anyhow, bail, Context, Result};
use billing::import::{parse_date_ms, parse_deck, DeckFormat, ImportOptions, Markup};
use billing::money::{format_amount, parse_amount, parse_percent};
use serde::Serialize;

use crate::cli::{FormatArg, RatesCommand};
use crate::config::Config;
use crate::output::{json, list, ts};

pub async fn run(config: &Config, cmd: RatesCommand) -> Result<()> {
    match cmd {
        RatesCommand::Import {
            file,
            format,
            markup,
            markup_fixed,
            increments,
            effective_from,
            replace,
            dry_run,
            json: j,
        } => {
            let mut text = String::new();
            if file.as_os_str() == "-" {
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading the deck from standard input")?;
            } else {
                std::fs::File::open(&file)
                    .and_then(|mut f| f.read_to_string(&mut text))
                    .with_context(|| format!("cannot read {}", file.display()))?;
            }
            let format = match format {
                FormatArg::Twilio => DeckFormat::Twilio,
                FormatArg::Papercup => DeckFormat::Papercup,
                FormatArg::Auto => DeckFormat::detect(text.lines().next().unwrap_or("")),
            };
            let (x, y) = increments
                .split_once('/')
                .and_then(|(x, y)| {
                    Some((x.trim().parse::<i64>().ok()?, y.trim().parse::<i64>().ok()?))
                })
                .filter(|(x, y)| *x > 0 && *y > 0)
                .ok_or_else(|| {
                    anyhow!("--increments {increments:?} is not X/Y in seconds, e.g. 60/60")
                })?;
            let opts = ImportOptions {
                format,
                markup: Markup {
                    percent: markup
                        .as_deref()
                        .map(parse_percent)
                        .transpose()
                        .context("--markup")?
                        .unwrap_or(0),
                    fixed_per_min: markup_fixed
                        .as_deref()
                        .map(parse_amount)
                        .transpose()
                        .context("--markup-fixed")?
                        .unwrap_or(0),
                },
                default_increments: (x, y),
                effective_from: effective_from
                    .as_deref()
                    .map(parse_date_ms)
                    .transpose()
                    .map_err(|e| anyhow!("--effective-from: {e}"))?
                    .unwrap_or(0),
            };
            let rates = parse_deck(text.as_bytes(), &opts)
                .map_err(|e| anyhow!("{}: {e}", file.display()))?;
            if dry_run {
                let report = ImportReport {
                    file: file.display().to_string(),
                    format,
                    rates: rates.len(),
                    written: 0,
                    deleted: 0,
                    total: None,
                    dry_run: true,
                };
                return if j.json {
                    json(&report)
                } else {
                    println!(
                        "{}: {} rates ({:?} format) would be imported; nothing written",
                        report.file, report.rates, format
                    );
                    Ok(())
                };
            }
            let b = super::open_billing(config).await?;
            let mut progress = Progress::new(!j.json);
            let summary = b
                .import_rates(&rates, replace, &mut |done, total| {
                    progress.update(done, total)
                })
                .await?;
            progress.finish();
            let report = ImportReport {
                file: file.display().to_string(),
                format,
                rates: rates.len(),
                written: summary.written,
                deleted: summary.deleted,
                total: Some(summary.total),
                dry_run: false,
            };
            if j.json {
                json(&report)?;
            } else {
                println!(
                    "imported {} rates from {} ({:?} format){}; the deck now has {} rates",
                    summary.written,
                    report.file,
                    format,
                    if replace {
                        format!(", replacing {} old ones", summary.deleted)
                    } else {
                        String::new()
                    },
                    summary.total
                );
            }
        }
        RatesCommand::Lookup {
            number,
            from,
            json: j,
        } => {
            let b = super::open_billing(config).await?;
            let q = b
                .quote(&number, from.as_deref().unwrap_or(""))
                .map_err(|e| anyhow!("{e}"))?;
            if j.json {
                return json(&q);
            }
            let t = q.rate.tariff;
            let cur = &config.billing.currency;
            println!(
                "{} ({})",
                q.number,
                q.country.as_deref().unwrap_or(q.rate.country.as_str())
            );
            println!("prefix       {}", q.rate.prefix);
            if !q.rate.origin_prefix.is_empty() {
                println!("caller class {}", q.rate.origin_prefix);
            }
            println!("description  {}", q.rate.description);
            println!("price        {cur} {} / min", format_amount(t.rate_per_min));
            println!("connect fee  {cur} {}", format_amount(t.connect_fee));
            println!("increments   {}/{}", t.increment_first, t.increment_next);
            if q.rate.effective_from > 0 {
                println!("effective    {}", ts(q.rate.effective_from));
            }
        }
        RatesCommand::List {
            prefix,
            limit,
            json: j,
        } => {
            let b = super::open_billing(config).await?;
            let rates = b.list_rates(prefix.as_deref(), limit).await?;
            list(
                &rates,
                j.json,
                "no rates",
                &[
                    "prefix",
                    "from",
                    "country",
                    "per min",
                    "connect",
                    "incr",
                    "effective",
                    "description",
                ],
                |r| {
                    vec![
                        r.prefix.clone(),
                        r.origin_prefix.clone(),
                        r.country.clone(),
                        format_amount(r.tariff.rate_per_min),
                        format_amount(r.tariff.connect_fee),
                        format!("{}/{}", r.tariff.increment_first, r.tariff.increment_next),
                        if r.effective_from > 0 {
                            ts(r.effective_from)
                        } else {
                            "-".into()
                        },
                        r.description.clone(),
                    ]
                },
            )?;
        }
        RatesCommand::Block { prefix, reason } => {
            let b = super::open_billing(config).await?;
            b.block_prefix(&prefix, &reason).await?;
            println!("blocked {prefix}");
        }
        RatesCommand::Unblock { prefix } => {
            let b = super::open_billing(config).await?;
            if !b.unblock_prefix(&prefix).await? {
                bail!("{prefix} was not blocked");
            }
            println!("unblocked {prefix}");
        }
        RatesCommand::Blocked(j) => {
            let b = super::open_billing(config).await?;
            let blocked = b.blocked_prefixes().await?;
            list(
                &blocked,
                j.json,
                "no blocked prefixes",
                &["prefix", "since", "reason"],
                |p| vec![p.prefix.clone(), ts(p.created_at), p.reason.clone()],
            )?;
        }
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct ImportReport {
    file: String,
    format: DeckFormat,
    rates: usize,
    written: usize,
    deleted: u64,
    total: Option<i64>,
    dry_run: bool,
}

/// Import progress on standard error: a live line on a terminal, a line per 10 % else.
struct Progress {
    enabled: bool,
    tty: bool,
    last_decile: usize,
}

impl Progress {
    fn new(enabled: bool) -> Self {
        Self {
            enabled,
            tty: std::io::stderr().is_terminal(),
            last_decile: 0,
        }
    }

    fn update(&mut self, done: usize, total: usize) {
        if !self.enabled || total == 0 {
            return;
        }
        let pct = done * 100 / total;
        if self.tty {
            eprint!("\rwriting rates: {done}/{total} ({pct}%)");
        } else if pct / 10 > self.last_decile || done == total {
            self.last_decile = pct / 10;
            eprintln!("writing rates: {done}/{total} ({pct}%)");
        }
    }

    fn finish(&self) {
        if self.enabled && self.tty {
            eprintln!();
        }
    }
}
