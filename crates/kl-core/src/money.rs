//! Money as an exact count of micro-units (10⁻⁶) of the configured currency. Costs are summed
//! as integers, never as floats, so report rows add up to their totals and tenant charges plus
//! idle capacity add up to the platform's cost to the last micro-unit. Written as a decimal
//! string (`"12.50"`), which JSON carries without loss.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// Decimal places money keeps: micro-units, finer than any currency's minor unit, so the
/// only rounding is the one a report does once, at its end.
pub const MONEY_DECIMALS: u32 = 6;
const MICROS_PER_UNIT: u64 = 1_000_000;

/// An amount of the configured currency, in micro-units. Never negative: the cost model has
/// no credits, and idle capacity is clamped at zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(u64);

/// Why an amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MoneyError {
    /// Not a plain non-negative decimal number (no sign, no exponent).
    #[error("invalid amount {input:?}: use a non-negative decimal such as 25 or 12.50")]
    Invalid { input: String },
    /// More decimal places than money keeps.
    #[error("amount {input:?} has more than {MONEY_DECIMALS} decimal places")]
    TooPrecise { input: String },
    /// More than 2⁶⁴ micro-units (about 18 trillion).
    #[error("amount {input:?} is too large")]
    TooLarge { input: String },
}

impl Money {
    pub const ZERO: Money = Money(0);

    pub const fn from_micros(micros: u64) -> Money {
        Money(micros)
    }

    pub const fn micros(self) -> u64 {
        self.0
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    pub fn saturating_sub(self, other: Money) -> Money {
        Money(self.0.saturating_sub(other.0))
    }

    /// The amount as a float, for display and charts only: sums stay in micro-units.
    pub fn to_f64(self) -> f64 {
        self.0 as f64 / MICROS_PER_UNIT as f64
    }
}

/// Why a decimal did not parse; callers turn it into their own error with the field's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecimalError {
    Invalid,
    TooPrecise,
    TooLarge,
}

/// Parses a plain non-negative decimal (`12`, `0.5`, `3.250`) into an integer count of
/// 10^-`scale` units, exactly. Trailing zeros beyond `scale` are accepted; other digits beyond
/// it are refused rather than rounded, so no amount changes silently.
pub(crate) fn parse_scaled(text: &str, scale: u32) -> Result<u128, DecimalError> {
    let (whole, frac) = match text.split_once('.') {
        Some((_, "")) => return Err(DecimalError::Invalid),
        Some(parts) => parts,
        None => (text, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(frac) {
        return Err(DecimalError::Invalid);
    }
    let frac = frac.trim_end_matches('0');
    let Some(pad) = (scale as usize).checked_sub(frac.len()) else {
        return Err(DecimalError::TooPrecise);
    };
    // Only digits remain, so a parse failure is an overflow.
    let whole: u128 = whole.parse().map_err(|_| DecimalError::TooLarge)?;
    let frac: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| DecimalError::TooLarge)?
    };
    whole
        .checked_mul(10u128.pow(scale))
        .and_then(|w| w.checked_add(frac * 10u128.pow(pad as u32)))
        .ok_or(DecimalError::TooLarge)
}

/// Parses a float (as written in a configuration file) the same way: Rust prints a finite
/// float as the shortest decimal that reads back as the same float, without an exponent, so
/// `0.0000166667` in a file becomes exactly 0.0000166667.
pub(crate) fn float_scaled(value: f64, scale: u32) -> Result<u128, DecimalError> {
    if !value.is_finite() || (value.is_sign_negative() && value != 0.0) {
        return Err(DecimalError::Invalid);
    }
    parse_scaled(&format!("{}", value.abs()), scale)
}

impl FromStr for Money {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Money, MoneyError> {
        let input = || s.to_owned();
        let micros = parse_scaled(s.trim(), MONEY_DECIMALS).map_err(|e| match e {
            DecimalError::Invalid => MoneyError::Invalid { input: input() },
            DecimalError::TooPrecise => MoneyError::TooPrecise { input: input() },
            DecimalError::TooLarge => MoneyError::TooLarge { input: input() },
        })?;
        u64::try_from(micros)
            .map(Money)
            .map_err(|_| MoneyError::TooLarge { input: input() })
    }
}

/// At least two decimals (`12.50`), more only when they are not zero (`0.000125`): exact, and
/// familiar for amounts in a currency's minor unit.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / MICROS_PER_UNIT;
        let frac = format!("{:06}", self.0 % MICROS_PER_UNIT);
        let trimmed = frac.trim_end_matches('0');
        let shown = if trimmed.len() < 2 { &frac[..2] } else { trimmed };
        write!(f, "{whole}.{shown}")
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Accepts a decimal string (`"12.50"`, as written out) or a JSON/YAML number (`100`, `12.5`),
/// as people write budgets.
impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Money, D::Error> {
        struct MoneyVisitor;

        impl Visitor<'_> for MoneyVisitor {
            type Value = Money;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative amount such as \"12.50\" or 25")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Money, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Money, E> {
                v.checked_mul(MICROS_PER_UNIT)
                    .map(Money)
                    .ok_or_else(|| E::custom(MoneyError::TooLarge { input: v.to_string() }))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Money, E> {
                let unsigned =
                    u64::try_from(v).map_err(|_| E::custom(MoneyError::Invalid { input: v.to_string() }))?;
                self.visit_u64(unsigned)
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Money, E> {
                if !v.is_finite() || v < 0.0 {
                    return Err(E::custom(MoneyError::Invalid { input: v.to_string() }));
                }
                self.visit_str(&format!("{v}"))
            }
        }

        d.deserialize_any(MoneyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_plain_decimals_exactly() {
        assert_eq!("12.50".parse(), Ok(Money::from_micros(12_500_000)));
        assert_eq!("25".parse(), Ok(Money::from_micros(25_000_000)));
        assert_eq!("0.000001".parse(), Ok(Money::from_micros(1)));
        assert_eq!(
            "1.5000000000".parse(),
            Ok(Money::from_micros(1_500_000)),
            "trailing zeros beyond micro-units change nothing"
        );
        for bad in ["", ".5", "1.", "-1", "+1", "1e3", "1,5", "12.5 USD", "NaN"] {
            assert!(
                matches!(bad.parse::<Money>(), Err(MoneyError::Invalid { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            "0.0000001".parse::<Money>(),
            Err(MoneyError::TooPrecise { .. })
        ));
        assert!(matches!(
            "18446744073709.551616".parse::<Money>(),
            Err(MoneyError::TooLarge { .. })
        ));
        assert!(matches!(
            "99999999999999999999999999999999999999999".parse::<Money>(),
            Err(MoneyError::TooLarge { .. })
        ));
    }

    #[test]
    fn displays_at_least_two_decimals_and_never_loses_any() {
        assert_eq!(Money::ZERO.to_string(), "0.00");
        assert_eq!(Money::from_micros(12_500_000).to_string(), "12.50");
        assert_eq!(Money::from_micros(125).to_string(), "0.000125");
        assert_eq!(Money::from_micros(1_234_560).to_string(), "1.23456");
    }

    #[test]
    fn serializes_as_a_string_and_reads_numbers_too() {
        let m = Money::from_micros(1_250_000);
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"1.25\"");
        assert_eq!(serde_json::from_str::<Money>("\"1.25\"").unwrap(), m);
        assert_eq!(serde_json::from_str::<Money>("1.25").unwrap(), m);
        assert_eq!(
            serde_json::from_str::<Money>("100").unwrap(),
            Money::from_micros(100_000_000)
        );
        assert!(serde_json::from_str::<Money>("-1").is_err());
        assert!(serde_json::from_str::<Money>("-0.5").is_err());
        assert!(serde_json::from_str::<Money>("0.0000001").is_err());
    }

    #[test]
    fn floats_parse_as_the_decimal_they_were_written_as() {
        assert_eq!(float_scaled(0.0000166667, 12), Ok(16_666_700));
        assert_eq!(float_scaled(0.031611, 12), Ok(31_611_000_000));
        assert_eq!(float_scaled(1e-7, 12), Ok(100_000));
        assert_eq!(float_scaled(0.0, 12), Ok(0));
        assert_eq!(float_scaled(-0.0, 12), Ok(0));
        assert_eq!(float_scaled(-1.0, 12), Err(DecimalError::Invalid));
        assert_eq!(float_scaled(f64::NAN, 12), Err(DecimalError::Invalid));
        assert_eq!(float_scaled(f64::INFINITY, 12), Err(DecimalError::Invalid));
        assert_eq!(float_scaled(1e-13, 12), Err(DecimalError::TooPrecise));
    }

    proptest! {
        #[test]
        fn display_round_trips(micros in any::<u64>()) {
            let m = Money::from_micros(micros);
            prop_assert_eq!(m.to_string().parse::<Money>(), Ok(m));
            let json = serde_json::to_string(&m).unwrap();
            prop_assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), m);
        }
    }
}
