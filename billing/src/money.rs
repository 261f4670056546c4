//! Money: `i64` micro-units of the wallet currency (1 USD = 1_000_000). Never floats.
//!
//! Parsing accepts what operators and rate decks write (`"0.0125"`, `"$5"`, `"-3.50"`,
//! `"1,000.25"` is refused rather than guessed); formatting gives the exact value
//! (`"0.0125"`) or, for display, cents (`"0.01"`).

use std::fmt;

/// One unit of currency in micro-units.
pub const MICROS_PER_UNIT: i64 = 1_000_000;

/// An amount of money in micro-units.
pub type Micros = i64;

/// Why a string is not an amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MoneyError {
    /// Nothing to parse.
    #[error("empty amount")]
    Empty,
    /// A character that is not a digit, sign, `$` or a single decimal point.
    #[error("invalid amount {0:?}: expected digits with an optional '.' (e.g. 0.0125)")]
    Invalid(String),
    /// More than six decimals (finer than a micro-unit).
    #[error("amount {0:?} has more than 6 decimal places")]
    TooPrecise(String),
    /// Too large for an i64 of micro-units.
    #[error("amount {0:?} is too large")]
    Overflow(String),
}

/// Parses a decimal amount into micro-units: `"0.0125"` → `12_500`.
pub fn parse_amount(input: &str) -> Result<Micros, MoneyError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(MoneyError::Empty);
    }
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let s = s.strip_prefix('$').unwrap_or(s);
    let (int_part, frac_part) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(MoneyError::Invalid(input.to_string()));
    }
    let frac_trimmed = frac_part.trim_end_matches('0');
    if frac_trimmed.len() > 6 {
        return Err(MoneyError::TooPrecise(input.to_string()));
    }
    let overflow = || MoneyError::Overflow(input.to_string());
    let mut value: i64 = 0;
    for b in int_part.bytes() {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(b - b'0')))
            .ok_or_else(overflow)?;
    }
    value = value.checked_mul(MICROS_PER_UNIT).ok_or_else(overflow)?;
    let mut frac: i64 = 0;
    for (i, b) in frac_trimmed.bytes().enumerate() {
        frac += i64::from(b - b'0') * 10_i64.pow(5 - i as u32);
    }
    value = value.checked_add(frac).ok_or_else(overflow)?;
    Ok(if neg { -value } else { value })
}

/// Formats micro-units exactly, without trailing zeros beyond cents: `12_500` → `"0.0125"`,
/// `5_000_000` → `"5.00"`.
pub fn format_amount(micros: Micros) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let units = abs / MICROS_PER_UNIT as u64;
    let frac = abs % MICROS_PER_UNIT as u64;
    let mut frac_s = format!("{frac:06}");
    while frac_s.len() > 2 && frac_s.ends_with('0') {
        frac_s.pop();
    }
    format!("{sign}{units}.{frac_s}")
}

/// Formats micro-units rounded to cents (half away from zero), for display: `12_500` →
/// `"0.01"`, `4_995_000` → `"5.00"`.
pub fn format_cents(micros: Micros) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let cents = (abs + 5_000) / 10_000;
    format!("{sign}{}.{:02}", cents / 100, cents % 100)
}

/// An amount with its currency, displayed to the cent (`"USD 5.00"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money<'a> {
    /// Micro-units.
    pub micros: Micros,
    /// ISO 4217 code.
    pub currency: &'a str,
}

impl fmt::Display for Money<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.currency, format_cents(self.micros))
    }
}

/// Parses a percentage such as `"15"` or `"12.5"` into micro-percent (`12.5` → `12_500_000`).
pub fn parse_percent(input: &str) -> Result<i64, MoneyError> {
    parse_amount(input.trim().trim_end_matches('%'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_amounts() {
        assert_eq!(parse_amount("0.0125"), Ok(12_500));
        assert_eq!(parse_amount("5"), Ok(5_000_000));
        assert_eq!(parse_amount("$5.50"), Ok(5_500_000));
        assert_eq!(parse_amount("-3.5"), Ok(-3_500_000));
        assert_eq!(parse_amount(" .5 "), Ok(500_000));
        assert_eq!(parse_amount("1."), Ok(1_000_000));
        assert_eq!(parse_amount("0.000001"), Ok(1));
        assert_eq!(parse_amount("0.1234560"), Ok(123_456));
    }

    #[test]
    fn refuses_what_it_cannot_represent_exactly() {
        assert_eq!(parse_amount(""), Err(MoneyError::Empty));
        assert!(matches!(parse_amount("1,5"), Err(MoneyError::Invalid(_))));
        assert!(matches!(parse_amount("1e3"), Err(MoneyError::Invalid(_))));
        assert!(matches!(parse_amount("."), Err(MoneyError::Invalid(_))));
        assert!(matches!(parse_amount("--1"), Err(MoneyError::Invalid(_))));
        assert!(matches!(
            parse_amount("0.0000001"),
            Err(MoneyError::TooPrecise(_))
        ));
        assert!(matches!(
            parse_amount("99999999999999999"),
            Err(MoneyError::Overflow(_))
        ));
    }

    #[test]
    fn formats_exactly_and_in_cents() {
        assert_eq!(format_amount(12_500), "0.0125");
        assert_eq!(format_amount(5_000_000), "5.00");
        assert_eq!(format_amount(-1), "-0.000001");
        assert_eq!(format_cents(12_500), "0.01");
        assert_eq!(format_cents(4_995_000), "5.00");
        assert_eq!(format_cents(-4_994_999), "-4.99");
        assert_eq!(
            Money {
                micros: 100_000_000,
                currency: "USD"
            }
            .to_string(),
            "USD 100.00"
        );
    }

    #[test]
    fn round_trips() {
        for v in [0, 1, 12_500, 999_999, 1_000_000, 123_456_789, -7_000_001] {
            assert_eq!(parse_amount(&format_amount(v)), Ok(v));
        }
    }
}
