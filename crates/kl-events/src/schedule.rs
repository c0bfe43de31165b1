//! Cron schedules for ping sources (Knative's PingSource): the standard five fields and the
//! `@hourly`-style macros, evaluated in UTC only (there is no `CRON_TZ=`), to the minute.
//!
//! Written here rather than taken from a crate: the `cron` crate wants a seconds field, and
//! `croner` pulls proc-macro builders; this is small, and its errors name the field.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a cron expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScheduleError {
    /// Not five fields (and not a macro).
    #[error(
        "cron expression {expression:?} has {found} fields; use five (minute hour day-of-month \
         month day-of-week) or one of @hourly, @daily, @weekly, @monthly, @yearly"
    )]
    FieldCount { expression: String, found: usize },

    /// A field's value is malformed or out of range, or the expression can never fire.
    #[error("cron {field} field {value:?}: {reason}")]
    Field {
        field: &'static str,
        value: String,
        reason: String,
    },

    /// An `@` macro other than the known ones.
    #[error("unknown cron macro {name:?}; use @hourly, @daily, @weekly, @monthly or @yearly")]
    UnknownMacro { name: String },

    /// A `CRON_TZ=` or `TZ=` prefix.
    #[error("schedules run in UTC; remove the {prefix} prefix and give the times in UTC")]
    TimeZone { prefix: String },
}

/// A parsed cron schedule. Serialized as its expression.
///
/// Day-of-month and day-of-week combine as in Vixie cron and robfig/cron (which PingSource
/// uses): when both are restricted, a day matching either fires; when either is `*` or `?`,
/// the other alone decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Schedule {
    expression: String,
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    days_of_week: u64,
    any_day_of_month: bool,
    any_day_of_week: bool,
}

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY_OF_MONTH: FieldSpec = FieldSpec {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
/// 0 and 7 are both Sunday.
const DAY_OF_WEEK: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

/// Years searched ahead for the next fire time: a 29 February schedule can wait eight years
/// (2096 to 2104), so nine always reach a fire time of a schedule that can fire.
const SEARCH_YEARS: i32 = 9;

impl Schedule {
    /// The first fire time strictly after `after`, on a whole minute. `None` only past the
    /// end of chrono's calendar.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut date = after.date_naive();
        let (mut hour, mut minute) = (after.hour(), after.minute());
        (hour, minute, date) = next_minute(hour, minute, date)?;
        let last_year = date.year() + SEARCH_YEARS;
        while date.year() <= last_year {
            if !has(self.months, date.month()) {
                date = first_of_next_month(date)?;
                (hour, minute) = (0, 0);
            } else if !self.fires_on(date) {
                date = date.succ_opt()?;
                (hour, minute) = (0, 0);
            } else if !has(self.hours, hour) {
                (hour, minute, date) = next_minute(hour, 59, date)?;
            } else if !has(self.minutes, minute) {
                (hour, minute, date) = next_minute(hour, minute, date)?;
            } else {
                return Some(Utc.from_utc_datetime(&date.and_hms_opt(hour, minute, 0)?));
            }
        }
        None
    }

    /// Whether the schedule fires in the minute holding `at` (seconds are ignored).
    pub fn fires_at(&self, at: DateTime<Utc>) -> bool {
        has(self.months, at.month())
            && self.fires_on(at.date_naive())
            && has(self.hours, at.hour())
            && has(self.minutes, at.minute())
    }

    fn fires_on(&self, date: NaiveDate) -> bool {
        let dom = has(self.days_of_month, date.day());
        let dow = has(self.days_of_week, date.weekday().num_days_from_sunday());
        if self.any_day_of_month || self.any_day_of_week {
            dom && dow
        } else {
            dom || dow
        }
    }
}

fn has(set: u64, n: u32) -> bool {
    set & (1 << n) != 0
}

/// The minute after `hour:minute` on `date`, rolling over into the next day.
fn next_minute(hour: u32, minute: u32, date: NaiveDate) -> Option<(u32, u32, NaiveDate)> {
    match (hour, minute) {
        (23, 59) => Some((0, 0, date.succ_opt()?)),
        (h, 59) => Some((h + 1, 0, date)),
        (h, m) => Some((h, m + 1, date)),
    }
}

fn first_of_next_month(date: NaiveDate) -> Option<NaiveDate> {
    match date.month() {
        12 => NaiveDate::from_ymd_opt(date.year() + 1, 1, 1),
        m => NaiveDate::from_ymd_opt(date.year(), m + 1, 1),
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(input: &str) -> Result<Schedule, ScheduleError> {
        let expression = input.trim();
        for prefix in ["CRON_TZ=", "TZ="] {
            if expression.starts_with(prefix) {
                return Err(ScheduleError::TimeZone {
                    prefix: prefix.into(),
                });
            }
        }
        let fields = match expression.strip_prefix('@') {
            Some(name) => expand_macro(name)?,
            None => expression,
        };
        let parts: Vec<&str> = fields.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = parts[..] else {
            return Err(ScheduleError::FieldCount {
                expression: expression.into(),
                found: parts.len(),
            });
        };
        let (days_of_month, any_day_of_month) = parse_field(dom, &DAY_OF_MONTH)?;
        let (days_of_week, any_day_of_week) = parse_field(dow, &DAY_OF_WEEK)?;
        let schedule = Schedule {
            expression: expression.into(),
            minutes: parse_field(minute, &MINUTE)?.0,
            hours: parse_field(hour, &HOUR)?.0,
            days_of_month,
            months: parse_field(month, &MONTH)?.0,
            // Sunday is 0; 7 is its other name.
            days_of_week: (days_of_week | days_of_week >> 7) & 0x7f,
            any_day_of_month,
            any_day_of_week,
        };
        schedule.check_days_exist(dom)?;
        Ok(schedule)
    }
}

impl Schedule {
    /// Refuses a day-of-month that no chosen month has (`0 0 30 2 *`), which would never fire.
    /// With a restricted day-of-week as well, that day-of-week still fires, so it is allowed.
    fn check_days_exist(&self, dom: &str) -> Result<(), ScheduleError> {
        if !self.any_day_of_week {
            return Ok(());
        }
        const LONGEST: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        let exists = (1..=12u32)
            .filter(|&m| has(self.months, m))
            .any(|m| (1..=LONGEST[m as usize - 1]).any(|d| has(self.days_of_month, d)));
        if exists {
            return Ok(());
        }
        Err(ScheduleError::Field {
            field: DAY_OF_MONTH.name,
            value: dom.into(),
            reason: "no month in the schedule has this day, so it would never fire".into(),
        })
    }
}

fn expand_macro(name: &str) -> Result<&'static str, ScheduleError> {
    match name {
        "yearly" | "annually" => Ok("0 0 1 1 *"),
        "monthly" => Ok("0 0 1 * *"),
        "weekly" => Ok("0 0 * * 0"),
        "daily" | "midnight" => Ok("0 0 * * *"),
        "hourly" => Ok("0 * * * *"),
        _ => Err(ScheduleError::UnknownMacro {
            name: format!("@{name}"),
        }),
    }
}

/// A field as a bit set, and whether it is unrestricted (`*` or `?`).
fn parse_field(text: &str, spec: &FieldSpec) -> Result<(u64, bool), ScheduleError> {
    let err = |reason: String| ScheduleError::Field {
        field: spec.name,
        value: text.into(),
        reason,
    };
    let mut set = 0u64;
    let mut any = false;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| err(format!("step {step:?} is not a number")))?;
                if step == 0 {
                    return Err(err("a step cannot be 0".into()));
                }
                (range, Some(step))
            }
            None => (item, None),
        };
        let (low, high) = match range {
            "*" | "?" if range == "*" || spec.name.starts_with("day-of") => {
                any |= step.is_none_or(|s| s == 1);
                (spec.min, spec.max)
            }
            _ => match range.split_once('-') {
                Some((low, high)) => (value(low, spec).map_err(&err)?, value(high, spec).map_err(&err)?),
                // `N/step` runs from N to the end of the range, as in robfig/cron.
                None if step.is_some() => (value(range, spec).map_err(&err)?, spec.max),
                None => {
                    let n = value(range, spec).map_err(&err)?;
                    (n, n)
                }
            },
        };
        if low > high {
            return Err(err(format!("range {low}-{high} runs backwards")));
        }
        for n in (low..=high).step_by(step.unwrap_or(1) as usize) {
            set |= 1 << n;
        }
    }
    Ok((set, any))
}

/// A number or a name (`jan`, `mon`, any case) within the field's range.
fn value(text: &str, spec: &FieldSpec) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    // Month names count from 1, day names from 0.
    let named = spec
        .names
        .iter()
        .zip(spec.min.min(1)..)
        .find(|(name, _)| **name == lower);
    let named = named.map(|(_, n)| n);
    let n = match named {
        Some(n) => n,
        None => text.parse().map_err(|_| format!("{text:?} is not a number"))?,
    };
    if !(spec.min..=spec.max).contains(&n) {
        return Err(format!("{n} is outside {}-{}", spec.min, spec.max));
    }
    Ok(n)
}

impl TryFrom<String> for Schedule {
    type Error = ScheduleError;

    fn try_from(expression: String) -> Result<Schedule, ScheduleError> {
        expression.parse()
    }
}

impl From<Schedule> for String {
    fn from(schedule: Schedule) -> String {
        schedule.expression
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expression)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use proptest::prelude::*;

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(expr: &str, after: &str) -> String {
        let schedule: Schedule = expr.parse().unwrap();
        schedule
            .next_after(at(after))
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    #[test]
    fn fires_strictly_after_on_whole_minutes() {
        assert_eq!(next("* * * * *", "2024-01-01T00:00:00Z"), "2024-01-01T00:01:00Z");
        assert_eq!(
            next("* * * * *", "2024-01-01T00:00:59.9Z"),
            "2024-01-01T00:01:00Z"
        );
        assert_eq!(
            next("*/15 * * * *", "2024-01-01T00:15:00Z"),
            "2024-01-01T00:30:00Z"
        );
        assert_eq!(next("5 4 * * *", "2024-01-01T04:05:00Z"), "2024-01-02T04:05:00Z");
        assert_eq!(next("0 0 1 1 *", "2024-06-01T00:00:00Z"), "2025-01-01T00:00:00Z");
    }

    #[test]
    fn lists_ranges_steps_and_names() {
        assert_eq!(
            next("0 9-17/4 * * *", "2024-01-01T10:00:00Z"),
            "2024-01-01T13:00:00Z"
        );
        assert_eq!(
            next("30 8 * * mon-fri", "2024-01-05T09:00:00Z"),
            "2024-01-08T08:30:00Z"
        );
        assert_eq!(
            next("0 0 * JUN,dec *", "2024-07-01T00:00:00Z"),
            "2024-12-01T00:00:00Z"
        );
        assert_eq!(next("0 0 * * 7", "2024-01-01T00:00:00Z"), "2024-01-07T00:00:00Z");
        assert_eq!(
            next("10/20 * * * *", "2024-01-01T00:31:00Z"),
            "2024-01-01T00:50:00Z"
        );
        assert_eq!(
            next("1,2,59 * * * *", "2024-01-01T00:02:00Z"),
            "2024-01-01T00:59:00Z"
        );
    }

    #[test]
    fn macros_expand_to_their_fields() {
        assert_eq!(next("@hourly", "2024-01-01T00:30:00Z"), "2024-01-01T01:00:00Z");
        assert_eq!(next("@daily", "2024-01-01T00:30:00Z"), "2024-01-02T00:00:00Z");
        assert_eq!(next("@weekly", "2024-01-01T00:30:00Z"), "2024-01-07T00:00:00Z");
        assert_eq!(next("@monthly", "2024-01-31T00:00:00Z"), "2024-02-01T00:00:00Z");
        assert_eq!(next("@yearly", "2024-01-01T00:00:00Z"), "2025-01-01T00:00:00Z");
    }

    #[test]
    fn restricted_days_of_month_and_week_combine_with_or() {
        // The 13th, or any Friday: 2024-09-06 is a Friday before the 13th.
        assert_eq!(next("0 0 13 * 5", "2024-09-01T00:00:00Z"), "2024-09-06T00:00:00Z");
        // With a `*` day-of-week only the 13th counts.
        assert_eq!(next("0 0 13 * *", "2024-09-01T00:00:00Z"), "2024-09-13T00:00:00Z");
        // `*/1` is still unrestricted; `*/2` is a restriction, so the OR rule applies.
        assert_eq!(
            next("0 0 13 * */1", "2024-09-01T00:00:00Z"),
            "2024-09-13T00:00:00Z"
        );
        assert_eq!(
            next("0 0 13 * */2", "2024-09-01T00:00:00Z"),
            "2024-09-03T00:00:00Z"
        );
    }

    #[test]
    fn month_ends_and_leap_days() {
        assert_eq!(next("0 0 31 * *", "2024-04-01T00:00:00Z"), "2024-05-31T00:00:00Z");
        assert_eq!(next("0 0 29 2 *", "2025-01-01T00:00:00Z"), "2028-02-29T00:00:00Z");
        assert_eq!(next("0 0 29 2 *", "2097-01-01T00:00:00Z"), "2104-02-29T00:00:00Z");
        assert_eq!(
            next("59 23 31 12 *", "2024-12-31T23:59:00Z"),
            "2025-12-31T23:59:00Z"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let field = |expr: &str| match expr.parse::<Schedule>() {
            Err(ScheduleError::Field { field, .. }) => field,
            other => panic!("{expr}: {other:?}"),
        };
        assert_eq!(field("60 * * * *"), "minute");
        assert_eq!(field("* 24 * * *"), "hour");
        assert_eq!(field("* * 0 * *"), "day-of-month");
        assert_eq!(field("* * * 13 *"), "month");
        assert_eq!(field("* * * * 8"), "day-of-week");
        assert_eq!(field("*/0 * * * *"), "minute");
        assert_eq!(field("5-1 * * * *"), "minute");
        assert_eq!(field("a * * * *"), "minute");
        assert_eq!(field("1,,2 * * * *"), "minute");
        assert_eq!(field("? * * * *"), "minute");
        assert_eq!(field("* * * foo *"), "month");
        assert_eq!(field("0 0 30 2 *"), "day-of-month");
        assert!("0 0 30 2 mon".parse::<Schedule>().is_ok());
        assert!(matches!(
            "* * * *".parse::<Schedule>(),
            Err(ScheduleError::FieldCount { found: 4, .. })
        ));
        assert!(matches!(
            "@every 5m".parse::<Schedule>(),
            Err(ScheduleError::UnknownMacro { .. })
        ));
        assert!(matches!(
            "CRON_TZ=Europe/Paris 0 9 * * *".parse::<Schedule>(),
            Err(ScheduleError::TimeZone { .. })
        ));
    }

    #[test]
    fn serializes_as_its_expression() {
        let s: Schedule = serde_json::from_str("\"*/5 * * * *\"").unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"*/5 * * * *\"");
        assert!(serde_json::from_str::<Schedule>("\"* *\"").is_err());
    }

    fn field(min: u32, max: u32) -> impl Strategy<Value = String> {
        let single = (min..=max).prop_map(|n| n.to_string());
        let range = (min..=max, min..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b)));
        let step = (1..=max.max(2)).prop_map(|s| format!("*/{s}"));
        let item = prop_oneof![Just("*".to_owned()), single, range, step];
        proptest::collection::vec(item, 1..3).prop_map(|items| items.join(","))
    }

    fn expressions() -> impl Strategy<Value = Schedule> {
        (
            field(0, 59),
            field(0, 23),
            field(1, 31),
            field(1, 12),
            field(0, 7),
        )
            .prop_filter_map("can fire", |(m, h, dom, mon, dow)| {
                format!("{m} {h} {dom} {mon} {dow}").parse().ok()
            })
    }

    proptest! {
        #[test]
        fn next_is_the_first_matching_minute_after(
            schedule in expressions(),
            secs in 0i64..4_000_000_000,
        ) {
            let after = DateTime::from_timestamp(secs, 0).unwrap();
            let next = schedule.next_after(after).unwrap();
            prop_assert!(next > after);
            prop_assert_eq!(next.second(), 0);
            prop_assert!(schedule.fires_at(next));
            // No earlier minute fires (checked over at most 40 days, to keep the test quick).
            let mut t = next - Duration::minutes(1);
            let mut checked = 0;
            while t > after && checked < 40 * 24 * 60 {
                prop_assert!(!schedule.fires_at(t), "{} fires at {} before {}", schedule, t, next);
                t -= Duration::minutes(1);
                checked += 1;
            }
        }
    }
}
