//! Billing windows: half-open UTC intervals [start, end) that reports cover, budgets reset on,
//! and steps split. Half-open windows tile without overlap, so the days of a month add up to the
//! month. Parsed from OpenCost's `window` grammar relative to an injected `now`, so tests (and
//! the server) choose the clock.
//!
//! ```text
//! window   = "today" | "yesterday"          the current / previous UTC day
//!          | "week"  | "lastweek"           the current / previous ISO week (Monday to Monday)
//!          | "month" | "lastmonth"          the current / previous calendar month
//!          | N ("m" | "h" | "d" | "w")      the last N minutes/hours/days/weeks, ending where the
//!                                           current one ends: 7d = today and the 6 days before
//!          | TIME "," TIME                  an explicit range
//! TIME     = RFC 3339 (2026-11-01T00:00:00Z) | a date (2026-11-01, midnight UTC) | Unix seconds
//! step     = "day" | "week" | "month"       calendar parts, aligned to calendar boundaries
//!          | a duration (15m, 1h, 2d)       parts of that length from the window's start
//! ```
//!
//! Named windows are whole periods, so `today` includes the rest of today (OpenCost does the
//! same); unlike OpenCost, weeks start on Monday (ISO 8601), and `week` and `month` run to the
//! period's end rather than to `now`, so the current period is the same window all period long.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Months, NaiveDate, NaiveTime, SecondsFormat, TimeDelta, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::quantity::{format_duration, parse_duration};
use crate::usage::Minute;

/// The most parts [`Window::tiles`] makes: a year of hours fits, a year of minutes does not.
pub const MAX_TILES: usize = 10_000;
const MS_PER_MINUTE: u64 = 60_000;

/// A half-open UTC interval [start, end), never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "WindowFields")]
pub struct Window {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

/// A window as written, before its check.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowFields {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

impl TryFrom<WindowFields> for Window {
    type Error = WindowError;

    fn try_from(fields: WindowFields) -> Result<Window, WindowError> {
        Window::new(fields.start, fields.end)
    }
}

/// Why a window, time, period or step was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WindowError {
    /// The end is not after the start.
    #[error("window end {end} is not after its start {start}")]
    Empty {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    /// The text matches no form of the window grammar.
    #[error(
        "invalid window {0:?}: use today, yesterday, week, lastweek, month, lastmonth, a duration such as 24h or 7d, or START,END"
    )]
    Unknown(String),
    /// A time in a range did not parse.
    #[error(
        "invalid time {0:?}: use RFC 3339 such as 2026-11-01T00:00:00Z, a date such as 2026-11-01, or Unix seconds"
    )]
    Time(String),
    /// The text names no period.
    #[error("invalid period {0:?}: use day, week or month")]
    Period(String),
    /// The text is no step, or a step that is not a whole number of minutes.
    #[error("invalid step {0:?}: use day, week, month or a whole number of minutes such as 15m, 1h or 2d")]
    Step(String),
    /// The window or one of its boundaries lies beyond the dates chrono represents.
    #[error("window {0:?} reaches beyond the supported calendar")]
    OutOfRange(String),
    /// Splitting would make more than [`MAX_TILES`] parts.
    #[error(
        "steps of {step} split the window into more than {MAX_TILES} parts; use a longer step or a shorter window"
    )]
    TooManyTiles { step: Step },
}

/// A calendar unit windows align to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Minute,
    Hour,
    Day,
    Week,
    Month,
}

impl Unit {
    /// The start of the unit `at` falls in.
    fn floor(self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let day = at.date_naive().and_time(NaiveTime::MIN).and_utc();
        let secs = at.timestamp();
        match self {
            Unit::Minute => DateTime::from_timestamp(secs - secs.rem_euclid(60), 0),
            Unit::Hour => DateTime::from_timestamp(secs - secs.rem_euclid(3_600), 0),
            Unit::Day => Some(day),
            Unit::Week => {
                day.checked_sub_signed(TimeDelta::days(i64::from(at.weekday().num_days_from_monday())))
            }
            Unit::Month => Some(at.date_naive().with_day(1)?.and_time(NaiveTime::MIN).and_utc()),
        }
    }

    /// `at` moved by `n` units (months keep the day of the month; callers pass a month start).
    fn shift(self, at: DateTime<Utc>, n: i64) -> Option<DateTime<Utc>> {
        let delta = match self {
            Unit::Minute => TimeDelta::try_minutes(n)?,
            Unit::Hour => TimeDelta::try_hours(n)?,
            Unit::Day => TimeDelta::try_days(n)?,
            Unit::Week => TimeDelta::try_weeks(n)?,
            Unit::Month => {
                let months = Months::new(u32::try_from(n.unsigned_abs()).ok()?);
                return if n >= 0 {
                    at.checked_add_months(months)
                } else {
                    at.checked_sub_months(months)
                };
            }
        };
        at.checked_add_signed(delta)
    }

    /// The whole unit `n` units away from the one `at` falls in.
    fn window(self, at: DateTime<Utc>, n: i64) -> Option<Window> {
        let start = self.shift(self.floor(at)?, n)?;
        Some(Window {
            start,
            end: self.shift(start, 1)?,
        })
    }
}

impl Window {
    /// The window [start, end); refuses an empty or reversed one.
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Window, WindowError> {
        if end <= start {
            return Err(WindowError::Empty { start, end });
        }
        Ok(Window { start, end })
    }

    /// Parses the window grammar (module docs) relative to `now`.
    pub fn parse(text: &str, now: DateTime<Utc>) -> Result<Window, WindowError> {
        let text = text.trim();
        let out_of_range = || WindowError::OutOfRange(text.to_owned());
        let named = match text {
            "today" => Some((Unit::Day, 0)),
            "yesterday" => Some((Unit::Day, -1)),
            "week" => Some((Unit::Week, 0)),
            "lastweek" => Some((Unit::Week, -1)),
            "month" => Some((Unit::Month, 0)),
            "lastmonth" => Some((Unit::Month, -1)),
            _ => None,
        };
        if let Some((unit, n)) = named {
            return unit.window(now, n).ok_or_else(out_of_range);
        }
        if let Some((from, to)) = text.split_once(',') {
            return Window::new(parse_time(from)?, parse_time(to)?);
        }
        let unknown = || WindowError::Unknown(text.to_owned());
        let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(unknown)?;
        let (digits, unit) = text.split_at(split);
        let unit = match unit {
            "m" => Unit::Minute,
            "h" => Unit::Hour,
            "d" => Unit::Day,
            "w" => Unit::Week,
            _ => return Err(unknown()),
        };
        let n: i64 = digits.parse().map_err(|_| unknown())?;
        if n == 0 {
            return Err(unknown());
        }
        let end = unit.window(now, 0).ok_or_else(out_of_range)?.end;
        let start = unit.shift(end, -n).ok_or_else(out_of_range)?;
        Window::new(start, end)
    }

    /// The window of `--from FROM --to TO`, each a [`parse_time`] time.
    pub fn from_to(from: &str, to: &str) -> Result<Window, WindowError> {
        Window::new(parse_time(from)?, parse_time(to)?)
    }

    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }

    pub fn end(&self) -> DateTime<Utc> {
        self.end
    }

    /// Whether `at` lies in [start, end).
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.start <= at && at < self.end
    }

    /// Whether a metering minute belongs to this window: its start lies in it. A minute is
    /// never split, so a window whose ends are not on minute boundaries takes each minute whole
    /// on the side where it starts.
    pub fn contains_minute(&self, minute: Minute) -> bool {
        self.contains(minute.start())
    }

    /// The length in milliseconds.
    pub fn len_ms(&self) -> u64 {
        self.start
            .timestamp_millis()
            .abs_diff(self.end.timestamp_millis())
    }

    /// The part of this window that lies in `other`, if any.
    pub fn intersect(&self, other: &Window) -> Option<Window> {
        Window::new(self.start.max(other.start), self.end.min(other.end)).ok()
    }

    /// Consecutive parts of `step` that tile the window exactly: the first starts at `start`,
    /// each starts where the previous ends, the last ends at `end`. Calendar steps end parts on
    /// calendar boundaries (so the first and last may be partial); duration steps count from
    /// `start` (so only the last may be short).
    pub fn tiles(&self, step: Step) -> Result<Vec<Window>, WindowError> {
        let mut tiles = Vec::new();
        let mut cursor = self.start;
        while cursor < self.end {
            if tiles.len() == MAX_TILES {
                return Err(WindowError::TooManyTiles { step });
            }
            let next = match step {
                Step::Calendar(period) => period.unit().window(cursor, 0).map(|w| w.end),
                Step::Every { minutes } => Unit::Minute.shift(cursor, i64::from(minutes)),
            };
            let next = next
                .ok_or_else(|| WindowError::OutOfRange(self.to_string()))?
                .min(self.end);
            tiles.push(Window {
                start: cursor,
                end: next,
            });
            cursor = next;
        }
        Ok(tiles)
    }
}

/// `START,END` in RFC 3339, which [`Window::parse`] reads back.
impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        write!(f, "{},{}", time(self.start), time(self.end))
    }
}

/// Parses a time: RFC 3339 (`2026-11-01T00:00:00Z`, any offset), a date (`2026-11-01`, midnight
/// UTC) or Unix seconds (`1793491200`).
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, WindowError> {
    let text = text.trim();
    let err = || WindowError::Time(text.to_owned());
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i64 = text.parse().map_err(|_| err())?;
        return DateTime::from_timestamp(secs, 0).ok_or_else(err);
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date.and_time(NaiveTime::MIN).and_utc());
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.to_utc())
        .map_err(|_| err())
}

/// The period a budget runs over, and the calendar parts a report can be stepped by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// A UTC day.
    Day,
    /// An ISO week, Monday 00:00 UTC to the next Monday.
    Week,
    /// A calendar month, the 1st 00:00 UTC to the next 1st.
    #[default]
    Month,
}

impl Period {
    pub const ALL: [Period; 3] = [Period::Day, Period::Week, Period::Month];

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }

    fn unit(self) -> Unit {
        match self {
            Period::Day => Unit::Day,
            Period::Week => Unit::Week,
            Period::Month => Unit::Month,
        }
    }

    /// The whole period `at` falls in (`--period`).
    pub fn window_containing(self, at: DateTime<Utc>) -> Result<Window, WindowError> {
        self.unit()
            .window(at, 0)
            .ok_or_else(|| WindowError::OutOfRange(at.to_rfc3339_opts(SecondsFormat::AutoSi, true)))
    }

    /// The name of the period `at` falls in: `2026-11-03`, `2026-W45` (ISO week-numbering
    /// year, which may differ from the calendar year in the first and last days of a year) or
    /// `2026-11`. What a budget's notified thresholds are stored under.
    pub fn key(self, at: DateTime<Utc>) -> PeriodKey {
        let date = at.date_naive();
        PeriodKey(match self {
            Period::Day => format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day()),
            Period::Week => {
                let week = date.iso_week();
                format!("{:04}-W{:02}", week.year(), week.week())
            }
            Period::Month => format!("{:04}-{:02}", date.year(), date.month()),
        })
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Period {
    type Err = WindowError;

    fn from_str(s: &str) -> Result<Period, WindowError> {
        Period::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| WindowError::Period(s.to_owned()))
    }
}

/// The name of one period, e.g. `2026-W45`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PeriodKey(String);

impl PeriodKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PeriodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a report splits its window (OpenCost's `step`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Calendar days, weeks or months.
    Calendar(Period),
    /// Parts of a whole number of minutes, at least one, so parts hold whole metering minutes
    /// when the window starts on a minute.
    Every { minutes: u32 },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Calendar(period) => f.write_str(period.as_str()),
            Step::Every { minutes } => f.write_str(&format_duration(u64::from(*minutes) * MS_PER_MINUTE)),
        }
    }
}

impl FromStr for Step {
    type Err = WindowError;

    fn from_str(s: &str) -> Result<Step, WindowError> {
        if let Ok(period) = s.parse::<Period>() {
            return Ok(Step::Calendar(period));
        }
        let err = || WindowError::Step(s.to_owned());
        let ms = parse_duration(s).map_err(|_| err())?;
        if ms == 0 || !ms.is_multiple_of(MS_PER_MINUTE) {
            return Err(err());
        }
        let minutes = u32::try_from(ms / MS_PER_MINUTE).map_err(|_| err())?;
        Ok(Step::Every { minutes })
    }
}

impl Serialize for Step {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Step, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(text: &str) -> DateTime<Utc> {
        parse_time(text).unwrap()
    }

    fn w(text: &str) -> Window {
        Window::parse(text, t("2026-11-18T15:42:10Z")).unwrap() // a Wednesday
    }

    #[test]
    fn named_windows_are_whole_utc_periods() {
        assert_eq!(
            w("today").to_string(),
            "2026-11-18T00:00:00Z,2026-11-19T00:00:00Z"
        );
        assert_eq!(
            w("yesterday").to_string(),
            "2026-11-17T00:00:00Z,2026-11-18T00:00:00Z"
        );
        assert_eq!(
            w("week").to_string(),
            "2026-11-16T00:00:00Z,2026-11-23T00:00:00Z",
            "Monday to Monday"
        );
        assert_eq!(
            w("lastweek").to_string(),
            "2026-11-09T00:00:00Z,2026-11-16T00:00:00Z"
        );
        assert_eq!(
            w("month").to_string(),
            "2026-11-01T00:00:00Z,2026-12-01T00:00:00Z"
        );
        assert_eq!(
            w("lastmonth").to_string(),
            "2026-10-01T00:00:00Z,2026-11-01T00:00:00Z"
        );
        let jan = Window::parse("lastmonth", t("2027-01-31T23:59:59Z")).unwrap();
        assert_eq!(
            jan.to_string(),
            "2026-12-01T00:00:00Z,2027-01-01T00:00:00Z",
            "across a year"
        );
        let sunday = Window::parse("week", t("2026-11-22T23:00:00Z")).unwrap();
        assert_eq!(
            sunday.start(),
            t("2026-11-16T00:00:00Z"),
            "Sunday ends the ISO week"
        );
    }

    #[test]
    fn durations_end_where_the_current_unit_ends() {
        assert_eq!(w("24h").to_string(), "2026-11-17T16:00:00Z,2026-11-18T16:00:00Z");
        assert_eq!(w("7d").to_string(), "2026-11-12T00:00:00Z,2026-11-19T00:00:00Z");
        assert_eq!(w("1d"), w("today"));
        assert_eq!(w("30m").to_string(), "2026-11-18T15:13:00Z,2026-11-18T15:43:00Z");
        assert_eq!(w("2w").to_string(), "2026-11-09T00:00:00Z,2026-11-23T00:00:00Z");
        for bad in [
            "",
            "0d",
            "7",
            "d",
            "7y",
            "-7d",
            "7 d",
            "week2",
            "99999999999999999999d",
        ] {
            assert!(
                matches!(
                    Window::parse(bad, t("2026-11-18T00:00:00Z")),
                    Err(WindowError::Unknown(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            Window::parse("9999999999w", t("2026-11-18T00:00:00Z")),
            Err(WindowError::OutOfRange(_))
        ));
    }

    #[test]
    fn ranges_take_rfc3339_dates_and_unix_seconds() {
        let month = w("2026-11-01T00:00:00Z,2026-12-01T00:00:00Z");
        assert_eq!(month, w("2026-11-01,2026-12-01"));
        assert_eq!(month, w("1793491200,1796083200"));
        assert_eq!(
            month,
            w("2026-11-01T01:00:00+01:00,2026-12-01T00:00:00Z"),
            "offsets convert to UTC"
        );
        assert_eq!(month, Window::from_to("2026-11-01", "2026-12-01").unwrap());
        assert!(matches!(
            Window::parse("2026-12-01,2026-11-01", Utc::now()),
            Err(WindowError::Empty { .. })
        ));
        let err = Window::parse("2026-11-01,next tuesday", Utc::now()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid time \"next tuesday\": use RFC 3339 such as 2026-11-01T00:00:00Z, a date such as 2026-11-01, or Unix seconds"
        );
    }

    #[test]
    fn windows_serialize_as_start_and_end_and_refuse_empty_ones() {
        let month = w("month");
        let json = serde_json::to_string(&month).unwrap();
        assert_eq!(
            json,
            r#"{"start":"2026-11-01T00:00:00Z","end":"2026-12-01T00:00:00Z"}"#
        );
        assert_eq!(serde_json::from_str::<Window>(&json).unwrap(), month);
        assert!(
            serde_json::from_str::<Window>(
                r#"{"start":"2026-11-01T00:00:00Z","end":"2026-11-01T00:00:00Z"}"#
            )
            .is_err()
        );
    }

    #[test]
    fn periods_have_windows_and_keys() {
        let at = t("2027-01-01T10:00:00Z"); // a Friday in ISO week 2026-W53
        assert_eq!(Period::Day.key(at).as_str(), "2027-01-01");
        assert_eq!(
            Period::Week.key(at).as_str(),
            "2026-W53",
            "the ISO week-numbering year"
        );
        assert_eq!(Period::Month.key(at).as_str(), "2027-01");
        assert_eq!(
            Period::Week.window_containing(at).unwrap().to_string(),
            "2026-12-28T00:00:00Z,2027-01-04T00:00:00Z"
        );
        assert_eq!("week".parse(), Ok(Period::Week));
        assert!(matches!(
            "fortnight".parse::<Period>(),
            Err(WindowError::Period(_))
        ));
        assert_eq!(serde_json::to_string(&Period::Month).unwrap(), "\"month\"");
    }

    #[test]
    fn steps_parse_calendar_parts_and_whole_minutes() {
        assert_eq!("day".parse(), Ok(Step::Calendar(Period::Day)));
        assert_eq!("1h".parse(), Ok(Step::Every { minutes: 60 }));
        assert_eq!("2d".parse::<Step>().unwrap().to_string(), "2d");
        for bad in ["0m", "90s", "500ms", "hourly", ""] {
            assert!(
                matches!(bad.parse::<Step>(), Err(WindowError::Step(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            serde_json::to_string(&Step::Every { minutes: 15 }).unwrap(),
            "\"15m\""
        );
    }

    #[test]
    fn calendar_steps_align_to_boundaries() {
        let window = w("2026-11-15T12:00:00Z,2027-01-10T00:00:00Z");
        let months = window.tiles(Step::Calendar(Period::Month)).unwrap();
        let shown: Vec<String> = months.iter().map(Window::to_string).collect();
        assert_eq!(
            shown,
            [
                "2026-11-15T12:00:00Z,2026-12-01T00:00:00Z",
                "2026-12-01T00:00:00Z,2027-01-01T00:00:00Z",
                "2027-01-01T00:00:00Z,2027-01-10T00:00:00Z",
            ]
        );
        assert_eq!(w("month").tiles(Step::Calendar(Period::Day)).unwrap().len(), 30);
        let weeks = w("month").tiles(Step::Calendar(Period::Week)).unwrap();
        assert_eq!(weeks[1].start(), t("2026-11-02T00:00:00Z"), "the first Monday");
        let hours = w("today").tiles("5h".parse().unwrap()).unwrap();
        assert_eq!(hours.len(), 5);
        assert_eq!(
            hours[4].to_string(),
            "2026-11-18T20:00:00Z,2026-11-19T00:00:00Z",
            "the short last part"
        );
        let err = w("2026-01-01,2027-01-01")
            .tiles("1m".parse().unwrap())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "steps of 1m split the window into more than 10000 parts; use a longer step or a shorter window"
        );
    }

    #[test]
    fn minutes_belong_to_the_window_they_start_in() {
        let window = w("2026-11-18T10:00:30Z,2026-11-18T10:02:00Z");
        let minute = |s| Minute::of(t(s));
        assert!(!window.contains_minute(minute("2026-11-18T10:00:00Z")));
        assert!(window.contains_minute(minute("2026-11-18T10:01:00Z")));
        assert!(
            !window.contains_minute(minute("2026-11-18T10:02:00Z")),
            "half-open"
        );
        assert_eq!(window.len_ms(), 90_000);
        let other = w("2026-11-18T10:01:00Z,2026-11-18T11:00:00Z");
        assert_eq!(
            window.intersect(&other).unwrap().to_string(),
            "2026-11-18T10:01:00Z,2026-11-18T10:02:00Z"
        );
        assert_eq!(window.intersect(&w("2026-11-19,2026-11-20")), None);
    }

    fn step_strategy() -> impl Strategy<Value = Step> {
        prop_oneof![
            proptest::sample::select(Period::ALL.to_vec()).prop_map(Step::Calendar),
            // From 15 minutes, so 90 days stay within MAX_TILES.
            (15u32..3_000).prop_map(|minutes| Step::Every { minutes }),
        ]
    }

    proptest! {
        #[test]
        fn tiles_are_contiguous_and_cover_the_window(
            start in 1_700_000_000i64..1_900_000_000, len in 1i64..90 * 86_400, step in step_strategy(),
        ) {
            let window = Window::new(
                DateTime::from_timestamp(start, 0).unwrap(),
                DateTime::from_timestamp(start + len, 0).unwrap(),
            ).unwrap();
            let tiles = window.tiles(step).unwrap();
            prop_assert_eq!(tiles.first().map(Window::start), Some(window.start()));
            prop_assert_eq!(tiles.last().map(Window::end), Some(window.end()));
            for pair in tiles.windows(2) {
                prop_assert_eq!(pair[0].end(), pair[1].start(), "contiguous, no overlap");
            }
            let total: u64 = tiles.iter().map(Window::len_ms).sum();
            prop_assert_eq!(total, window.len_ms());
            if let Step::Calendar(period) = step {
                for tile in &tiles {
                    let whole = period.window_containing(tile.start()).unwrap();
                    prop_assert!(whole.start() <= tile.start() && tile.end() <= whole.end(), "one period each");
                }
            }
        }

        #[test]
        fn windows_read_back_from_their_display(start in -10_000_000_000i64..10_000_000_000, len in 1i64..1 << 40) {
            let window = Window::new(
                DateTime::from_timestamp_millis(start).unwrap(),
                DateTime::from_timestamp_millis(start + len).unwrap(),
            ).unwrap();
            prop_assert_eq!(Window::parse(&window.to_string(), Utc::now()), Ok(window));
        }
    }
}
