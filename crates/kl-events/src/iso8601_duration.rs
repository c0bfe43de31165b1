//! Durations as Knative's delivery fields write them (ISO 8601: `PT0.2S`, `PT5M`, `P1D`), also
//! accepting the platform's own `200ms`, `2s`, `5m` so users can write either.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Parses an ISO 8601 duration (`P[nW][nD][T[nH][nM][n[.f]S]]`) or one of ours (`200ms`, `30s`,
/// `5m`, `1h`, `1d`). Years and months are refused: their length depends on the calendar.
pub(crate) fn parse(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    match s.strip_prefix('P') {
        Some(rest) => parse_iso(rest).ok_or_else(|| {
            format!(
                "{input:?} is not an ISO 8601 duration such as PT0.2S, PT30S, PT5M, PT1H or P1D \
                 (no years or months)"
            )
        }),
        None => kl_core::parse_duration(s)
            .map(Duration::from_millis)
            .map_err(|e| format!("{e}, or ISO 8601 such as PT0.2S")),
    }
}

/// Parses what follows `P`: designated numbers in order, a fraction only on seconds.
fn parse_iso(s: &str) -> Option<Duration> {
    let (date, time) = match s.split_once('T') {
        Some((date, time)) if !time.is_empty() => (date, Some(time)),
        Some(_) => return None,
        None => (s, None),
    };
    if date.is_empty() && time.is_none() {
        return None;
    }
    let mut total = Duration::ZERO;
    for (part, units) in [
        (date, &[('W', 604_800), ('D', 86_400)][..]),
        (time.unwrap_or(""), &[('H', 3600), ('M', 60), ('S', 1)][..]),
    ] {
        let mut rest = part;
        let mut units = units.iter();
        while !rest.is_empty() {
            let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
            let (number, after) = rest.split_at(end);
            let designator = after.chars().next()?;
            let &(_, seconds) = units.by_ref().find(|(d, _)| *d == designator)?;
            total = total.checked_add(amount(number, seconds, designator == 'S')?)?;
            rest = &after[1..];
        }
    }
    Some(total)
}

/// `number` units of `seconds` each; `n.fff` only where a fraction is allowed.
fn amount(number: &str, seconds: u64, fraction_allowed: bool) -> Option<Duration> {
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f))
            if fraction_allowed && !f.is_empty() && f.len() <= 9 && f.bytes().all(|c| c.is_ascii_digit()) =>
        {
            (w, f)
        }
        Some(_) => return None,
        None => (number, ""),
    };
    if whole.is_empty() || !whole.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let nanos: u32 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}").parse().ok()?
    };
    Duration::from_secs(whole.checked_mul(seconds)?).checked_add(Duration::new(0, nanos))
}

/// Formats as ISO 8601 with hours, minutes and seconds (`PT0.2S`, `PT1H30M`, `PT0S`), the
/// form Knative reads.
pub(crate) fn format(d: Duration) -> String {
    let secs = d.as_secs();
    let (hours, minutes, seconds) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::from("PT");
    if hours > 0 {
        out += &format!("{hours}H");
    }
    if minutes > 0 {
        out += &format!("{minutes}M");
    }
    let nanos = d.subsec_nanos();
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        out += &format!("{seconds}.{}S", fraction.trim_end_matches('0'));
    } else if seconds > 0 || out == "PT" {
        out += &format!("{seconds}S");
    }
    out
}

/// Serde for a `Duration` field in this form.
pub(crate) mod required {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Serde for an `Option<Duration>` field in this form.
pub(crate) mod optional {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format(*d)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| parse(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_knative_and_platform_forms() {
        let ms = |s: &str| parse(s).map(|d| d.as_millis());
        assert_eq!(ms("PT0.2S"), Ok(200));
        assert_eq!(ms("PT1S"), Ok(1000));
        assert_eq!(ms("PT1M30S"), Ok(90_000));
        assert_eq!(ms("PT2H"), Ok(7_200_000));
        assert_eq!(ms("P1D"), Ok(86_400_000));
        assert_eq!(ms("P1W"), Ok(604_800_000));
        assert_eq!(ms("P1DT1S"), Ok(86_401_000));
        assert_eq!(ms("PT0S"), Ok(0));
        assert_eq!(ms("200ms"), Ok(200));
        assert_eq!(ms("2s"), Ok(2000));
        assert_eq!(ms("5m"), Ok(300_000));
    }

    #[test]
    fn refuses_calendar_units_and_malformed_text() {
        for bad in [
            "P", "PT", "P1Y", "P1M", "PT1.5M", "PT1S1M", "PTS", "PT.5S", "PT1.S", "PT-1S", "P1DT", "pt1s",
            "1.5s", "soon", "",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_as_knative_writes_it() {
        assert_eq!(format(Duration::from_millis(200)), "PT0.2S");
        assert_eq!(format(Duration::from_secs(90)), "PT1M30S");
        assert_eq!(format(Duration::from_secs(3600)), "PT1H");
        assert_eq!(format(Duration::from_secs(86_400)), "PT24H");
        assert_eq!(format(Duration::ZERO), "PT0S");
        assert_eq!(format(Duration::new(3601, 5)), "PT1H1.000000005S");
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(secs in 0u64..10_000_000, nanos in 0u32..1_000_000_000) {
            let d = Duration::new(secs, nanos);
            prop_assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}
