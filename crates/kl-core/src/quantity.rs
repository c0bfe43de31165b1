//! Memory quantities (Kubernetes notation: `256Mi`, `1Gi`, `500M`), CPU quantities (`250m`,
//! `0.5`, `2`) and durations (`30s`, `500ms`, `2m`, `1h`), parsed once at the edge so the rest
//! of the code deals in bytes, millicores and milliseconds.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// Why a quantity or duration was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuantityError {
    /// Not a number with a known suffix.
    #[error("invalid {what} {input:?}: {hint}")]
    Invalid {
        what: &'static str,
        input: String,
        hint: &'static str,
    },
}

const MEMORY_HINT: &str = "use a number with a suffix such as 128Mi, 1Gi or 500M";
const CPU_HINT: &str = "use cores or millicores such as 0.5, 2 or 250m";
const DURATION_HINT: &str = "use a number with a unit such as 500ms, 30s, 5m, 1h or 30d";

/// Parses a memory quantity into bytes.
pub fn parse_memory(input: &str) -> Result<u64, QuantityError> {
    let err = || QuantityError::Invalid {
        what: "memory",
        input: input.to_owned(),
        hint: MEMORY_HINT,
    };
    let s = input.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, suffix) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| err())?;
    let mult: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return Err(err()),
    };
    n.checked_mul(mult).ok_or_else(err)
}

/// Formats bytes in the largest binary unit that divides them exactly (`268435456` → `256Mi`).
pub fn format_memory(bytes: u64) -> String {
    for (suffix, unit) in [
        ("Ti", 1u64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

/// Parses a CPU quantity into millicores: `250m`, `0.5` (500m), `2` (2000m).
pub fn parse_cpu(input: &str) -> Result<u64, QuantityError> {
    let err = || QuantityError::Invalid {
        what: "cpu",
        input: input.to_owned(),
        hint: CPU_HINT,
    };
    let s = input.trim();
    if let Some(millis) = s.strip_suffix('m') {
        if millis.is_empty() || !millis.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        return millis.parse().map_err(|_| err());
    }
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(frac) || frac.len() > 3 || s.ends_with('.') {
        return Err(err());
    }
    let whole: u64 = whole.parse().map_err(|_| err())?;
    let frac: u64 = format!("{frac:0<3}").parse().map_err(|_| err())?;
    whole
        .checked_mul(1000)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(err)
}

/// Formats millicores as whole cores when exact (`2000` → `2`), else in millicores (`250m`).
pub fn format_cpu(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// A byte count written as a memory quantity in specs (`8Gi`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ByteQuantity(pub u64);

/// A CPU amount in millicores, written as a CPU quantity in specs (`500m`, `2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct CpuQuantity(pub u64);

impl fmt::Display for ByteQuantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_memory(self.0))
    }
}

impl fmt::Display for CpuQuantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_cpu(self.0))
    }
}

/// Accepts a quantity string or a plain number (bytes or cores).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawQuantity {
    Number(u64),
    Text(String),
}

impl Serialize for ByteQuantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_memory(self.0))
    }
}

impl<'de> Deserialize<'de> for ByteQuantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match RawQuantity::deserialize(d)? {
            RawQuantity::Number(n) => Ok(ByteQuantity(n)),
            RawQuantity::Text(t) => parse_memory(&t)
                .map(ByteQuantity)
                .map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for CpuQuantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_cpu(self.0))
    }
}

impl<'de> Deserialize<'de> for CpuQuantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let millis = match RawQuantity::deserialize(d)? {
            RawQuantity::Number(cores) => cores.checked_mul(1000),
            RawQuantity::Text(t) => Some(parse_cpu(&t).map_err(serde::de::Error::custom)?),
        };
        millis
            .map(CpuQuantity)
            .ok_or_else(|| serde::de::Error::custom("cpu quantity is too large"))
    }
}

/// Parses a duration into milliseconds. A bare number means seconds.
pub fn parse_duration(input: &str) -> Result<u64, QuantityError> {
    let err = || QuantityError::Invalid {
        what: "duration",
        input: input.to_owned(),
        hint: DURATION_HINT,
    };
    let s = input.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| err())?;
    let mult: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(err()),
    };
    n.checked_mul(mult).ok_or_else(err)
}

/// Formats milliseconds in the largest unit that divides them exactly (`30000` → `30s`).
pub fn format_duration(ms: u64) -> String {
    for (unit, size) in [
        ("d", 86_400_000u64),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_kubernetes_memory() {
        assert_eq!(parse_memory("256Mi"), Ok(256 << 20));
        assert_eq!(parse_memory("1Gi"), Ok(1 << 30));
        assert_eq!(parse_memory("500M"), Ok(500_000_000));
        assert_eq!(parse_memory("1024"), Ok(1024));
        for bad in ["", "Mi", "1.5Gi", "-1Mi", "12XB", "99999999999999999999"] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("30s"), Ok(30_000));
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("2m"), Ok(120_000));
        assert_eq!(parse_duration("1h"), Ok(3_600_000));
        assert_eq!(parse_duration("30d"), Ok(30 * 86_400_000));
        assert_eq!(parse_duration("7"), Ok(7_000));
        for bad in ["", "s", "1.5s", "10w", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_cpu() {
        assert_eq!(parse_cpu("250m"), Ok(250));
        assert_eq!(parse_cpu("0.5"), Ok(500));
        assert_eq!(parse_cpu("2"), Ok(2000));
        assert_eq!(parse_cpu("1.25"), Ok(1250));
        for bad in ["", "m", "1.", ".5", "0.0001", "-1", "1.5m", "2 cores"] {
            assert!(parse_cpu(bad).is_err(), "{bad}");
        }
        assert_eq!(format_cpu(2000), "2");
        assert_eq!(format_cpu(250), "250m");
    }

    #[test]
    fn quantities_serialize_as_strings_and_accept_numbers() {
        let q: CpuQuantity = serde_json::from_str("\"500m\"").unwrap();
        assert_eq!(q, CpuQuantity(500));
        assert_eq!(
            serde_json::from_str::<CpuQuantity>("4").unwrap(),
            CpuQuantity(4000)
        );
        assert_eq!(serde_json::to_string(&ByteQuantity(8 << 30)).unwrap(), "\"8Gi\"");
        assert!(serde_json::from_str::<ByteQuantity>("\"8 gigs\"").is_err());
    }

    proptest! {
        #[test]
        fn cpu_round_trips(millis in 0u64..(1 << 40)) {
            prop_assert_eq!(parse_cpu(&format_cpu(millis)), Ok(millis));
        }

        #[test]
        fn memory_round_trips(bytes in 0u64..(1 << 50)) {
            prop_assert_eq!(parse_memory(&format_memory(bytes)), Ok(bytes));
        }

        #[test]
        fn duration_round_trips(ms in 0u64..(1 << 40)) {
            prop_assert_eq!(parse_duration(&format_duration(ms)), Ok(ms));
        }
    }
}
