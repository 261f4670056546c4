//! The arithmetic of a rate: billing increments, cost, and the longest affordable talk time.
//!
//! `billed(d) = 0 if d == 0; X if d <= X; X + ceil((d - X) / Y) * Y otherwise` (seconds,
//! with `d` in milliseconds so that 60.001 s is 61 s at 1/1), and
//! `cost = connect_fee + ceil(billed * rate_per_min / 60)` in micro-units. All integer.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::money::Micros;

/// The priced terms of one rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tariff {
    /// Price per minute in micro-units.
    pub rate_per_min: Micros,
    /// Charged once when the call is answered.
    pub connect_fee: Micros,
    /// First block in seconds (`X` of `X/Y`).
    pub increment_first: i64,
    /// Later blocks in seconds (`Y` of `X/Y`).
    pub increment_next: i64,
}

impl Tariff {
    /// Reads the four tariff columns (`rate_per_min`, `connect_fee`, `increment_first`,
    /// `increment_next`) that the rates, reservations and calls tables share.
    pub(crate) fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            rate_per_min: row.try_get("rate_per_min")?,
            connect_fee: row.try_get("connect_fee")?,
            increment_first: row.try_get("increment_first")?,
            increment_next: row.try_get("increment_next")?,
        })
    }

    /// Billable seconds for a talk time of `duration_ms`.
    pub fn billed_secs(&self, duration_ms: i64) -> i64 {
        if duration_ms <= 0 {
            return 0;
        }
        let x = self.increment_first;
        let y = self.increment_next;
        if duration_ms <= x * 1000 {
            return x;
        }
        let over = duration_ms - x * 1000;
        let block = y * 1000;
        x + (over + block - 1) / block * y
    }

    /// The cost of `billed_secs` billable seconds, connect fee included.
    pub fn cost_of_secs(&self, billed_secs: i64) -> Micros {
        let talk = i128::from(billed_secs) * i128::from(self.rate_per_min);
        let talk = (talk + 59) / 60; // ceil, rounded up to the micro-unit
        self.connect_fee
            .saturating_add(i64::try_from(talk).unwrap_or(i64::MAX))
    }

    /// The cost of an answered call that talked for `duration_ms`.
    pub fn cost(&self, duration_ms: i64) -> Micros {
        self.cost_of_secs(self.billed_secs(duration_ms))
    }

    /// Rounds a talk time up to the end of its billing block, in seconds.
    pub fn align_up_secs(&self, secs: i64) -> i64 {
        self.billed_secs(secs.saturating_mul(1000))
    }

    /// The longest block-aligned talk time, in seconds, whose cost (connect fee included)
    /// fits in `budget`; `None` if not even the first block does. A free rate is capped at
    /// `cap_secs`.
    pub fn max_affordable_secs(&self, budget: Micros, cap_secs: i64) -> Option<i64> {
        let x = self.increment_first;
        let y = self.increment_next;
        if budget < self.cost_of_secs(x) {
            return None;
        }
        let secs = if self.rate_per_min == 0 {
            cap_secs.max(x)
        } else {
            // cost(s) <= budget  <=>  ceil(s * rate / 60) <= budget - fee
            //                      <=>  s * rate <= 60 * (budget - fee)
            let limit = i128::from(budget - self.connect_fee) * 60 / i128::from(self.rate_per_min);
            i64::try_from(limit).unwrap_or(i64::MAX / 1000)
        };
        let secs = secs.min(i64::MAX / 1000 - y);
        // Align down to the block grid X, X+Y, X+2Y, …
        let aligned = x + (secs - x) / y * y;
        debug_assert!(self.cost_of_secs(aligned) <= budget);
        Some(aligned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(rate: i64, fee: i64, x: i64, y: i64) -> Tariff {
        Tariff {
            rate_per_min: rate,
            connect_fee: fee,
            increment_first: x,
            increment_next: y,
        }
    }

    #[test]
    fn increments_follow_the_formula() {
        let m = t(0, 0, 60, 60);
        assert_eq!(m.billed_secs(0), 0);
        assert_eq!(m.billed_secs(1), 60);
        assert_eq!(m.billed_secs(60_000), 60);
        assert_eq!(m.billed_secs(60_001), 120);
        let s = t(0, 0, 6, 6);
        assert_eq!(s.billed_secs(6_000), 6);
        assert_eq!(s.billed_secs(6_001), 12);
        let o = t(0, 0, 1, 1);
        assert_eq!(o.billed_secs(59_001), 60);
        let mixed = t(0, 0, 30, 6);
        assert_eq!(mixed.billed_secs(29_000), 30);
        assert_eq!(mixed.billed_secs(31_000), 36);
    }

    #[test]
    fn cost_rounds_up_to_the_micro_unit() {
        // $0.07/min at 1/1: 1 s costs 1166.67 µ → 1167.
        let r = t(70_000, 0, 1, 1);
        assert_eq!(r.cost(1_000), 1_167);
        assert_eq!(r.cost(60_000), 70_000);
        let fee = t(70_000, 50_000, 60, 60);
        assert_eq!(fee.cost(0), 50_000);
        assert_eq!(fee.cost(61_000), 190_000);
    }

    #[test]
    fn max_affordable_is_the_last_block_that_fits() {
        for tariff in [
            t(300_000, 0, 60, 60),
            t(70_000, 25_000, 6, 6),
            t(123_457, 10_000, 1, 1),
            t(99_999, 0, 30, 6),
        ] {
            for budget in [0, 1, 10_000, 35_000, 100_000, 999_999, 1_000_000, 7_654_321] {
                let got = tariff.max_affordable_secs(budget, 14_400);
                // Brute force over the block grid.
                let mut best = None;
                let mut s = tariff.increment_first;
                while tariff.cost_of_secs(s) <= budget {
                    best = Some(s);
                    s += tariff.increment_next;
                }
                assert_eq!(got, best, "{tariff:?} budget {budget}");
            }
        }
    }

    #[test]
    fn free_rates_are_capped() {
        assert_eq!(t(0, 0, 60, 60).max_affordable_secs(0, 3_600), Some(3_600));
        assert_eq!(t(0, 0, 60, 60).max_affordable_secs(0, 90), Some(60));
    }
}
