//! Rate deck import: Twilio's outbound voice price CSV and Papercup's own CSV.
//!
//! Parsing is all or nothing: every row is checked, every bad row is reported with its
//! line number and cause, and a deck with any bad row yields no rates at all (the caller
//! then writes nothing). Markup is applied here, once, in integer arithmetic.
//!
//! Twilio: `ISO, Country, Description, Price / min, Origination Prefixes, Destination
//! Prefixes`; the prefix cells hold comma-separated lists and each (origin, destination)
//! pair becomes a rate. Twilio trunking bills per started minute, so these rates get 60/60
//! unless told otherwise. Papercup: `prefix,country,description,rate_per_min,connect_fee,
//! increment_first,increment_next` and optionally `origin_prefix` and `effective_from`.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;

use serde::Serialize;

use crate::money::{parse_amount, Micros};
use crate::tariff::Tariff;
use crate::trie::Rate;

/// Which CSV layout a deck uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DeckFormat {
    /// Twilio's outbound voice price list.
    Twilio,
    /// Papercup's own columns.
    Papercup,
}

impl DeckFormat {
    /// Guesses the format from the header line.
    pub fn detect(header: &str) -> Self {
        if normalize_header(header).contains("destinationprefixes") {
            DeckFormat::Twilio
        } else {
            DeckFormat::Papercup
        }
    }
}

/// A price markup: `percent` (in micro-percent, 12.5 % = 12_500_000) applied to the price
/// per minute and the connect fee, then `fixed_per_min` added to the price per minute.
/// Results are rounded up to the micro-unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Markup {
    /// Percentage in micro-percent.
    pub percent: i64,
    /// Fixed amount added per minute, in micro-units.
    pub fixed_per_min: Micros,
}

impl Markup {
    fn apply_percent(&self, v: Micros) -> Micros {
        let scale: i128 = 100_000_000; // 100 % in micro-percent
        let num = i128::from(v) * (scale + i128::from(self.percent));
        i64::try_from((num + scale - 1) / scale).unwrap_or(i64::MAX)
    }

    /// Applies the markup to a tariff.
    pub fn apply(&self, t: Tariff) -> Tariff {
        Tariff {
            rate_per_min: self
                .apply_percent(t.rate_per_min)
                .saturating_add(self.fixed_per_min),
            connect_fee: self.apply_percent(t.connect_fee),
            ..t
        }
    }
}

/// Options of an import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The layout (see [`DeckFormat::detect`]).
    pub format: DeckFormat,
    /// Markup applied to every row.
    pub markup: Markup,
    /// Billing increments for decks that carry none (Twilio): `(X, Y)`.
    pub default_increments: (i64, i64),
    /// Effective date for rows that carry none, Unix milliseconds (0: always).
    pub effective_from: i64,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            format: DeckFormat::Papercup,
            markup: Markup::default(),
            default_increments: (60, 60),
            effective_from: 0,
        }
    }
}

/// One bad row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    /// 1-based line number in the file.
    pub line: u64,
    /// What is wrong with it.
    pub cause: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.cause)
    }
}

/// Why a deck was not imported. Nothing of it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeckError {
    /// Every bad row, in file order.
    pub errors: Vec<RowError>,
}

impl fmt::Display for DeckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} bad row{}, nothing imported",
            self.errors.len(),
            if self.errors.len() == 1 { "" } else { "s" }
        )?;
        for e in self.errors.iter().take(20) {
            write!(f, "\n  {e}")?;
        }
        if self.errors.len() > 20 {
            write!(f, "\n  … and {} more", self.errors.len() - 20)?;
        }
        Ok(())
    }
}

impl std::error::Error for DeckError {}

fn normalize_header(h: &str) -> String {
    h.chars()
        .filter(|c| !c.is_whitespace() && *c != '"' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Parses a whole deck. On success every rate is valid and keys are unique.
pub fn parse_deck<R: Read>(input: R, opts: &ImportOptions) -> Result<Vec<Rate>, DeckError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(input);
    let err1 = |line: u64, cause: String| DeckError {
        errors: vec![RowError { line, cause }],
    };
    let headers = reader
        .headers()
        .map_err(|e| err1(1, format!("cannot read the header line: {e}")))?
        .clone();
    let columns: HashMap<String, usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| (normalize_header(h), i))
        .collect();
    let need = |names: &[&str]| -> Result<Vec<usize>, DeckError> {
        names
            .iter()
            .map(|n| {
                columns.get(*n).copied().ok_or_else(|| {
                    err1(
                        1,
                        format!(
                            "missing column {n:?} for the {:?} format (header: {})",
                            opts.format,
                            headers.iter().collect::<Vec<_>>().join(",")
                        ),
                    )
                })
            })
            .collect()
    };
    let layout = match opts.format {
        DeckFormat::Twilio => Layout::Twilio {
            cols: need(&[
                "iso",
                "country",
                "description",
                "price/min",
                "destinationprefixes",
            ])?,
            origin: columns.get("originationprefixes").copied(),
        },
        DeckFormat::Papercup => Layout::Papercup {
            cols: need(&[
                "prefix",
                "country",
                "description",
                "ratepermin",
                "connectfee",
                "incrementfirst",
                "incrementnext",
            ])?,
            origin: columns.get("originprefix").copied(),
            effective: columns.get("effectivefrom").copied(),
        },
    };

    let mut rates = Vec::new();
    let mut errors = Vec::new();
    let mut seen: HashMap<(String, String, i64), u64> = HashMap::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                errors.push(RowError {
                    line,
                    cause: format!("unreadable CSV: {e}"),
                });
                continue;
            }
        };
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        if record.iter().all(str::is_empty) {
            continue; // blank line
        }
        match layout.parse_row(&record, opts) {
            Ok(rows) => {
                for r in rows {
                    let key = (r.prefix.clone(), r.origin_prefix.clone(), r.effective_from);
                    if let Some(first) = seen.insert(key, line) {
                        errors.push(RowError {
                            line,
                            cause: format!(
                                "prefix {} (caller class {:?}) already priced on line {first}",
                                r.prefix, r.origin_prefix
                            ),
                        });
                    } else {
                        rates.push(r);
                    }
                }
            }
            Err(cause) => errors.push(RowError { line, cause }),
        }
    }
    if errors.is_empty() {
        Ok(rates)
    } else {
        Err(DeckError { errors })
    }
}

enum Layout {
    Twilio {
        cols: Vec<usize>,
        origin: Option<usize>,
    },
    Papercup {
        cols: Vec<usize>,
        origin: Option<usize>,
        effective: Option<usize>,
    },
}

fn cell<'r>(record: &'r csv::StringRecord, i: usize, name: &str) -> Result<&'r str, String> {
    record
        .get(i)
        .ok_or_else(|| format!("missing {name} (row has {} cells)", record.len()))
}

fn parse_prefix(s: &str, what: &str) -> Result<String, String> {
    let p = s.trim().trim_start_matches('+');
    if p.is_empty() || p.len() > 15 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{what} {s:?} is not 1 to 15 digits (E.164 without '+')"
        ));
    }
    Ok(p.to_string())
}

fn parse_prefix_list(s: &str, what: &str) -> Result<Vec<String>, String> {
    s.split([',', ';'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| parse_prefix(p, what))
        .collect()
}

fn parse_price(s: &str, what: &str) -> Result<Micros, String> {
    let v = parse_amount(s).map_err(|e| format!("{what}: {e}"))?;
    if v < 0 {
        return Err(format!("{what} {s:?} is negative"));
    }
    Ok(v)
}

fn parse_secs(s: &str, what: &str) -> Result<i64, String> {
    match s.trim().parse::<i64>() {
        Ok(v) if (1..=3600).contains(&v) => Ok(v),
        _ => Err(format!(
            "{what} {s:?} is not a whole number of seconds from 1 to 3600"
        )),
    }
}

/// Parses `YYYY-MM-DD` (midnight UTC), an RFC 3339 timestamp, or Unix milliseconds.
pub fn parse_date_ms(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(dt.timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(dt) = d.and_hms_opt(0, 0, 0) {
            return Ok(dt.and_utc().timestamp_millis());
        }
    }
    Err(format!(
        "date {s:?} is not YYYY-MM-DD, RFC 3339 or Unix milliseconds"
    ))
}

impl Layout {
    fn parse_row(&self, r: &csv::StringRecord, opts: &ImportOptions) -> Result<Vec<Rate>, String> {
        match self {
            Layout::Twilio { cols, origin } => {
                let iso = cell(r, cols[0], "ISO")?;
                let country = cell(r, cols[1], "Country")?;
                let description = cell(r, cols[2], "Description")?;
                let price = parse_price(cell(r, cols[3], "Price / min")?, "Price / min")?;
                let dests = parse_prefix_list(
                    cell(r, cols[4], "Destination Prefixes")?,
                    "destination prefix",
                )?;
                if dests.is_empty() {
                    return Err("no destination prefixes".into());
                }
                let mut origins = match origin {
                    Some(i) => parse_prefix_list(r.get(*i).unwrap_or(""), "origination prefix")?,
                    None => Vec::new(),
                };
                if origins.is_empty() {
                    origins.push(String::new());
                }
                if iso.len() != 2 || !iso.bytes().all(|b| b.is_ascii_alphabetic()) {
                    return Err(format!("ISO {iso:?} is not a two-letter country code"));
                }
                let (x, y) = opts.default_increments;
                let tariff = opts.markup.apply(Tariff {
                    rate_per_min: price,
                    connect_fee: 0,
                    increment_first: x,
                    increment_next: y,
                });
                let desc = if description.is_empty() {
                    country
                } else {
                    description
                };
                let mut out = Vec::with_capacity(dests.len() * origins.len());
                for d in &dests {
                    for o in &origins {
                        out.push(Rate {
                            prefix: d.clone(),
                            origin_prefix: o.clone(),
                            country: iso.to_ascii_uppercase(),
                            description: desc.to_string(),
                            tariff,
                            effective_from: opts.effective_from,
                        });
                    }
                }
                Ok(out)
            }
            Layout::Papercup {
                cols,
                origin,
                effective,
            } => {
                let prefix = parse_prefix(cell(r, cols[0], "prefix")?, "prefix")?;
                let country = cell(r, cols[1], "country")?;
                if !(country.is_empty()
                    || (country.len() == 2 && country.bytes().all(|b| b.is_ascii_alphabetic())))
                {
                    return Err(format!("country {country:?} is not a two-letter code"));
                }
                let description = cell(r, cols[2], "description")?;
                let rate = parse_price(cell(r, cols[3], "rate_per_min")?, "rate_per_min")?;
                let fee_cell = cell(r, cols[4], "connect_fee")?;
                let fee = if fee_cell.is_empty() {
                    0
                } else {
                    parse_price(fee_cell, "connect_fee")?
                };
                let x = parse_secs(cell(r, cols[5], "increment_first")?, "increment_first")?;
                let y = parse_secs(cell(r, cols[6], "increment_next")?, "increment_next")?;
                let origin_prefix = match origin.and_then(|i| r.get(i)) {
                    Some(s) if !s.is_empty() => parse_prefix(s, "origin_prefix")?,
                    _ => String::new(),
                };
                let effective_from = match effective.and_then(|i| r.get(i)) {
                    Some(s) if !s.is_empty() => parse_date_ms(s)?,
                    _ => opts.effective_from,
                };
                Ok(vec![Rate {
                    prefix,
                    origin_prefix,
                    country: country.to_ascii_uppercase(),
                    description: description.to_string(),
                    tariff: opts.markup.apply(Tariff {
                        rate_per_min: rate,
                        connect_fee: fee,
                        increment_first: x,
                        increment_next: y,
                    }),
                    effective_from,
                }])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWILIO: &str = "\
ISO,Country,Description,Price / min,Origination Prefixes,Destination Prefixes
GB,United Kingdom,United Kingdom - Landline,0.0140,,\"44, 441, 442\"
GB,United Kingdom,United Kingdom - London,0.0120,,4420
GB,United Kingdom,United Kingdom - Mobile,0.0425,,\"447400,447401\"
US,United States,United States,0.0130,\"1\",1
";

    fn twilio_opts() -> ImportOptions {
        ImportOptions {
            format: DeckFormat::Twilio,
            ..ImportOptions::default()
        }
    }

    #[test]
    fn twilio_rows_expand_their_prefix_lists() {
        assert_eq!(
            DeckFormat::detect(TWILIO.lines().next().unwrap_or("")),
            DeckFormat::Twilio
        );
        let rates = parse_deck(TWILIO.as_bytes(), &twilio_opts()).expect("valid deck");
        assert_eq!(rates.len(), 7);
        let london = rates.iter().find(|r| r.prefix == "4420").expect("4420");
        assert_eq!(london.tariff.rate_per_min, 12_000);
        assert_eq!(
            (london.tariff.increment_first, london.tariff.increment_next),
            (60, 60)
        );
        assert_eq!(london.country, "GB");
        let us = rates.iter().find(|r| r.prefix == "1").expect("1");
        assert_eq!(us.origin_prefix, "1");
    }

    #[test]
    fn one_bad_row_rejects_the_deck_and_names_its_line() {
        let bad = TWILIO.replace("0.0425", "four cents");
        let err = parse_deck(bad.as_bytes(), &twilio_opts()).expect_err("bad price");
        assert_eq!(err.errors.len(), 1);
        assert_eq!(err.errors[0].line, 4);
        assert!(
            err.errors[0].cause.contains("Price / min"),
            "{}",
            err.errors[0]
        );
        let dup = format!("{TWILIO}GB,United Kingdom,dup,0.01,,4420\n");
        let err = parse_deck(dup.as_bytes(), &twilio_opts()).expect_err("duplicate");
        assert_eq!(err.errors[0].line, 6);
        assert!(err.errors[0].cause.contains("line 3"));
    }

    #[test]
    fn papercup_format_with_markup_and_dates() {
        let deck = "\
prefix,country,description,rate_per_min,connect_fee,increment_first,increment_next,origin_prefix,effective_from
4420,GB,London,0.0100,0.0050,1,1,,
4420,GB,London (from December),0.0080,0,1,1,,2026-12-01
1,US,USA,0.0100,,6,6,1,
";
        let opts = ImportOptions {
            markup: Markup {
                percent: 15_000_000,
                fixed_per_min: 1_000,
            },
            ..ImportOptions::default()
        };
        let rates = parse_deck(deck.as_bytes(), &opts).expect("valid deck");
        assert_eq!(rates.len(), 3);
        assert_eq!(rates[0].tariff.rate_per_min, 11_500 + 1_000);
        assert_eq!(rates[0].tariff.connect_fee, 5_750);
        assert_eq!(rates[1].effective_from, 1_796_083_200_000);
        assert_eq!(rates[2].origin_prefix, "1");
        assert_eq!(
            (
                rates[2].tariff.increment_first,
                rates[2].tariff.increment_next
            ),
            (6, 6)
        );
    }

    #[test]
    fn every_bad_cell_is_reported() {
        let deck = "\
prefix,country,description,rate_per_min,connect_fee,increment_first,increment_next
44x,GB,bad prefix,0.01,0,60,60
44,GB,ok,0.01,0,60,60
45,DK,bad increment,0.01,0,0,60
46,SE,negative,-0.01,0,60,60
";
        let err = parse_deck(deck.as_bytes(), &ImportOptions::default()).expect_err("bad");
        let lines: Vec<u64> = err.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 4, 5]);
        assert!(err.to_string().contains("nothing imported"));
    }

    #[test]
    fn missing_columns_are_named() {
        let err = parse_deck(
            "prefix,rate\n44,0.01\n".as_bytes(),
            &ImportOptions::default(),
        )
        .expect_err("missing columns");
        assert!(
            err.errors[0].cause.contains("missing column"),
            "{}",
            err.errors[0]
        );
    }

    #[test]
    fn markup_rounds_up() {
        let m = Markup {
            percent: 33_333_333,
            fixed_per_min: 0,
        };
        // 10_000 * 1.33333333 = 13_333.3333 → 13_334
        assert_eq!(m.apply_percent(10_000), 13_334);
    }
}
