//! Memory quantities (Kubernetes notation: `256Mi`, `1Gi`, `500M`) and durations (`30s`,
//! `500ms`, `2m`, `1h`), parsed once at the edge so the rest of the code deals in bytes and
//! milliseconds.

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

    proptest! {
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
