//! Dialled numbers to E.164, with libphonenumber's metadata (the `phonenumber` crate).
//!
//! Accepts what people type into a softphone or a desk phone sends: `+44 20 7123 4567`,
//! `00442071234567`, `011 44 20…` from North America, or a national number
//! (`020 7123 4567`) read in the caller's default country. The result is validated against
//! the numbering plan of its country, so a typo is refused before a rate is looked up.

use std::str::FromStr;

use phonenumber::country::Id;
use phonenumber::Mode;
use serde::Serialize;

/// A valid number in E.164 form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct E164 {
    /// `+` and digits, e.g. `+442071234567`.
    pub number: String,
    /// ISO 3166-1 alpha-2 country of the number, when the numbering plan says
    /// (`None` for non-geographic codes such as +882).
    pub country: Option<String>,
}

impl E164 {
    /// The digits without the `+`, as rate prefixes are written.
    pub fn digits(&self) -> &str {
        &self.number[1..]
    }
}

/// Why a dialled string is not a callable number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NumberError {
    /// Not a phone number at all.
    #[error("{input:?} is not a phone number: {reason}")]
    Unparseable {
        /// What was dialled.
        input: String,
        /// The parser's reason.
        reason: String,
    },
    /// Parsed, but no such number exists in that country's numbering plan.
    #[error("{input:?} is not a valid number ({e164})")]
    Invalid {
        /// What was dialled.
        input: String,
        /// How it was read.
        e164: String,
    },
    /// The default country is not an ISO 3166-1 alpha-2 code the metadata knows.
    #[error("unknown country code {0:?} (expected ISO 3166-1 alpha-2, e.g. US, GB)")]
    UnknownCountry(String),
}

/// Parses an ISO country code (`"gb"`, `"GB"`).
pub fn country_id(code: &str) -> Result<Id, NumberError> {
    Id::from_str(&code.trim().to_ascii_uppercase())
        .map_err(|_| NumberError::UnknownCountry(code.to_string()))
}

/// The length of the default country's international dialling prefix at the start of
/// `digits`, if there is one.
fn idd_len(country: Id, digits: &str) -> Option<usize> {
    let meta = phonenumber::metadata::DATABASE.by_id(country.as_ref())?;
    let m = meta.international_prefix()?.find(digits)?;
    (m.start() == 0 && m.end() < digits.len()).then_some(m.end())
}

/// How many compiled patterns libphonenumber's metadata may keep. phonenumber 0.3.10
/// keeps 100 for the whole world, so a mix of a dozen destination countries recompiles
/// regexes on every parse (about 1.5 ms a number, measured in benches/rate_lookup.rs).
const REGEX_CACHE: usize = 8_192;

fn enlarge_regex_cache() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Every CachedRegex of the metadata shares this Arc, so replacing the cache
        // inside the mutex enlarges it for all of them. Patterns are compiled lazily, so
        // only the countries actually dialled take memory.
        let cache = phonenumber::metadata::DATABASE.cache();
        let mut guard = cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = regex_cache::RegexCache::new(REGEX_CACHE);
    });
}

/// Normalises a dialled number to E.164, reading national numbers in `default_country`.
pub fn normalize(input: &str, default_country: Option<Id>) -> Result<E164, NumberError> {
    enlarge_regex_cache();
    let cleaned: String = input
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '/'))
        .collect();
    // International dialling prefixes become `+`: `00` (most of the world) and the default
    // country's own (`011` in North America). A `+` number is then parsed without the
    // default country, because phonenumber 0.3.10 applies the default country's national
    // prefix to it (`+33 1 42…` read from US loses its `1`).
    let cleaned = match cleaned.strip_prefix("00") {
        Some(rest) if !rest.is_empty() => format!("+{rest}"),
        _ => match default_country.and_then(|c| idd_len(c, &cleaned)) {
            Some(n) => format!("+{}", &cleaned[n..]),
            None => cleaned,
        },
    };
    let country = if cleaned.starts_with('+') {
        None
    } else {
        default_country
    };
    let parsed = phonenumber::parse(country, &cleaned).map_err(|e| NumberError::Unparseable {
        input: input.to_string(),
        reason: e.to_string(),
    })?;
    let e164 = parsed.format().mode(Mode::E164).to_string();
    if !phonenumber::is_valid(&parsed) {
        return Err(NumberError::Invalid {
            input: input.to_string(),
            e164,
        });
    }
    Ok(E164 {
        country: parsed.country().id().map(|id| id.as_ref().to_string()),
        number: e164,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gb() -> Option<Id> {
        Some(Id::GB)
    }

    #[test]
    fn international_and_national_forms_agree() {
        for input in [
            "+442071234567",
            "+44 20 7123 4567",
            "00442071234567",
            "020 7123 4567",
            "(020) 7123-4567",
        ] {
            let n = normalize(input, gb()).expect(input);
            assert_eq!(n.number, "+442071234567", "{input}");
            assert_eq!(n.country.as_deref(), Some("GB"));
            assert_eq!(n.digits(), "442071234567");
        }
    }

    #[test]
    fn north_american_numbers_use_the_default_country() {
        let n = normalize("(415) 555-2671", Some(Id::US)).expect("US number");
        assert_eq!(n.number, "+14155552671");
        assert_eq!(n.country.as_deref(), Some("US"));
        let n = normalize("011 44 20 7123 4567", Some(Id::US)).expect("IDD from US");
        assert_eq!(n.number, "+442071234567");
        // phonenumber 0.3.10 would strip the US national prefix `1` from these.
        for input in ["+33 1 42 68 53 00", "011 33 1 42 68 53 00", "0033142685300"] {
            let n = normalize(input, Some(Id::US)).expect(input);
            assert_eq!(n.number, "+33142685300", "{input}");
            assert_eq!(n.country.as_deref(), Some("FR"));
        }
    }

    #[test]
    fn garbage_and_impossible_numbers_are_refused() {
        assert!(matches!(
            normalize("hello", gb()),
            Err(NumberError::Unparseable { .. })
        ));
        assert!(matches!(
            normalize("+44 20 7", gb()),
            Err(NumberError::Invalid { .. }) | Err(NumberError::Unparseable { .. })
        ));
        assert!(normalize("12345", None).is_err());
    }

    #[test]
    fn country_codes_are_checked() {
        assert_eq!(country_id("gb"), Ok(Id::GB));
        assert!(matches!(
            country_id("XX"),
            Err(NumberError::UnknownCountry(_))
        ));
    }
}
