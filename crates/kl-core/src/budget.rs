//! Tenant budgets (DESIGN §4, §6): an amount per day, week or month, alert thresholds that raise
//! `notification.alert.*` events (and an optional webhook) once each per period, and an optional
//! hard cap that stops scale-ups.
//!
//! Once per period, across restarts: the server keeps, per tenant and [`PeriodKey`], the set of
//! thresholds it has notified, and asks [`crossed`] which thresholds the spending has reached
//! that are not in the set. The answer depends on the spending and the set only, not on an
//! earlier reading of the spending, so evaluating again after a restart finds nothing new, and a
//! restart between a reading and its notification cannot lose an alert. The server records a
//! threshold in the same transaction that enqueues its event (the embedded bus is durable in the
//! metadata store), so each is sent at least once and recorded once. A new period has a new key
//! and so an empty set.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::billing_window::{Period, PeriodKey};
use crate::money::Money;

/// Thresholds when a budget names none: half, most, all of it.
pub const DEFAULT_THRESHOLDS: [u16; 3] = [50, 80, 100];
/// The highest threshold, in percent: ten times the budget.
pub const MAX_THRESHOLD: u16 = 1000;

/// A tenant's budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Budget {
    /// What the tenant may spend per period, in the rates' currency.
    pub amount: Money,
    /// Default `month`.
    #[serde(default)]
    pub period: Period,
    /// Percentages of `amount` that raise an alert, increasing, each 1..=1000. Default 50, 80,
    /// 100; empty for a cap without alerts.
    #[serde(default = "default_thresholds")]
    pub thresholds: Vec<u16>,
    /// Refuse scale-ups (429) once the amount is spent, until the period ends.
    #[serde(default)]
    pub hard_cap: bool,
    /// An http(s) URL that receives each alert as JSON, besides the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

fn default_thresholds() -> Vec<u16> {
    DEFAULT_THRESHOLDS.to_vec()
}

/// Why a budget was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BudgetError {
    /// A zero budget would alert (and cap) from the first micro-unit.
    #[error("budget.amount must be more than zero; remove the budget for no limit")]
    ZeroAmount,
    /// A threshold outside 1..=1000 percent.
    #[error("budget threshold {0}% is out of range: use 1 to {MAX_THRESHOLD} percent")]
    ThresholdOutOfRange(u16),
    /// Thresholds not strictly increasing, so one could be listed twice.
    #[error("budget thresholds {0:?} must be increasing, each listed once, such as [50, 80, 100]")]
    ThresholdsUnordered(Vec<u16>),
    /// The webhook is not an http(s) URL.
    #[error("budget.webhook {0:?} is not an http:// or https:// URL")]
    Webhook(String),
}

impl Budget {
    /// A monthly budget of `amount` with the default thresholds, no cap and no webhook.
    pub fn new(amount: Money) -> Budget {
        Budget {
            amount,
            period: Period::default(),
            thresholds: default_thresholds(),
            hard_cap: false,
            webhook: None,
        }
    }

    pub fn validate(&self) -> Result<(), BudgetError> {
        if self.amount == Money::ZERO {
            return Err(BudgetError::ZeroAmount);
        }
        if let Some(&t) = self.thresholds.iter().find(|t| !(1..=MAX_THRESHOLD).contains(*t)) {
            return Err(BudgetError::ThresholdOutOfRange(t));
        }
        if self.thresholds.windows(2).any(|w| w[0] >= w[1]) {
            return Err(BudgetError::ThresholdsUnordered(self.thresholds.clone()));
        }
        if let Some(url) = &self.webhook {
            let host = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            let valid = host.is_some_and(|rest| {
                !rest.is_empty()
                    && !rest.starts_with('/')
                    && !rest.chars().any(|c| c.is_whitespace() || c.is_control())
            });
            if !valid {
                return Err(BudgetError::Webhook(url.clone()));
            }
        }
        Ok(())
    }

    /// Whether `spent` has reached `percent` of the amount, exactly (in micro-units).
    pub fn reached(&self, spent: Money, percent: u16) -> bool {
        u128::from(spent.micros()) * 100 >= u128::from(self.amount.micros()) * u128::from(percent)
    }

    /// Whether the hard cap stops scale-ups: there is one and the amount is spent.
    pub fn cap_reached(&self, spent: Money) -> bool {
        self.hard_cap && self.reached(spent, 100)
    }
}

/// How urgent an alert is: the `notification.alert.*` event it raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Below 80 %: an early heads-up.
    Info,
    /// 80 % to below 100 %: the budget is nearly spent.
    Warning,
    /// 100 % and above: the budget is spent (and a hard cap applies).
    Critical,
}

impl Severity {
    /// The severity of a threshold.
    pub fn of(percent: u16) -> Severity {
        match percent {
            0..80 => Severity::Info,
            80..100 => Severity::Warning,
            _ => Severity::Critical,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// The CloudEvent type (DESIGN §3).
    pub fn event_type(self) -> &'static str {
        match self {
            Severity::Info => "io.knative.lambda.notification.alert.info",
            Severity::Warning => "io.knative.lambda.notification.alert.warning",
            Severity::Critical => "io.knative.lambda.notification.alert.critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A threshold the spending has reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Threshold {
    pub percent: u16,
    pub severity: Severity,
}

/// The thresholds `spent` has reached that are not in `notified` (those already notified this
/// period), lowest first. A jump over several thresholds returns each of them.
pub fn crossed(budget: &Budget, spent: Money, notified: &BTreeSet<u16>) -> Vec<Threshold> {
    budget
        .thresholds
        .iter()
        .copied()
        .filter(|&percent| !notified.contains(&percent) && budget.reached(spent, percent))
        .map(|percent| Threshold {
            percent,
            severity: Severity::of(percent),
        })
        .collect()
}

/// An alert's data: the CloudEvent's data and the webhook's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BudgetAlert {
    pub tenant: String,
    pub period: Period,
    pub period_key: PeriodKey,
    pub threshold: u16,
    pub severity: Severity,
    pub spent: Money,
    pub amount: Money,
}

impl BudgetAlert {
    /// The alert for `threshold`, reached by `spent` in the period holding `at`.
    pub fn new(
        tenant: &str,
        budget: &Budget,
        threshold: Threshold,
        spent: Money,
        at: DateTime<Utc>,
    ) -> BudgetAlert {
        BudgetAlert {
            tenant: tenant.to_owned(),
            period: budget.period,
            period_key: budget.period.key(at),
            threshold: threshold.percent,
            severity: threshold.severity,
            spent,
            amount: budget.amount,
        }
    }

    pub fn event_type(&self) -> &'static str {
        self.severity.event_type()
    }
}

/// A scale-up refused by a tenant's hard cap: a 429 whose message says why and until when.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "tenant {tenant:?} has spent {spent} of its {} budget of {amount} for {period_key}; scale-ups are refused until the period ends, or a tenant admin raises the budget",
    per(*period)
)]
pub struct BudgetExceeded {
    pub tenant: String,
    pub period: Period,
    pub period_key: PeriodKey,
    pub spent: Money,
    pub amount: Money,
}

/// "monthly" for a month, and so on.
fn per(period: Period) -> &'static str {
    match period {
        Period::Day => "daily",
        Period::Week => "weekly",
        Period::Month => "monthly",
    }
}

/// Refuses a scale-up when `budget`'s hard cap is reached by `spent` in the period holding `now`.
pub fn enforce_cap(
    tenant: &str,
    budget: &Budget,
    spent: Money,
    now: DateTime<Utc>,
) -> Result<(), BudgetExceeded> {
    if !budget.cap_reached(spent) {
        return Ok(());
    }
    Err(BudgetExceeded {
        tenant: tenant.to_owned(),
        period: budget.period,
        period_key: budget.period.key(now),
        spent,
        amount: budget.amount,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn money(text: &str) -> Money {
        text.parse().unwrap()
    }

    fn percents(thresholds: &[Threshold]) -> Vec<u16> {
        thresholds.iter().map(|t| t.percent).collect()
    }

    #[test]
    fn budgets_parse_with_defaults_and_refuse_typos() {
        let b: Budget = serde_json::from_str(r#"{"amount": 100}"#).unwrap();
        assert_eq!(b, Budget::new(money("100")));
        assert_eq!(b.thresholds, [50, 80, 100]);
        assert_eq!(b.period, Period::Month);
        let b: Budget = serde_json::from_str(
            r#"{"amount": "12.50", "period": "week", "thresholds": [90], "hardCap": true, "webhook": "https://hooks.example/kl"}"#,
        )
        .unwrap();
        assert_eq!(
            (b.amount, b.period, b.hard_cap),
            (money("12.5"), Period::Week, true)
        );
        b.validate().unwrap();
        assert!(serde_json::from_str::<Budget>(r#"{"amount": 1, "cap": true}"#).is_err());
        assert!(
            serde_json::from_str::<Budget>(r#"{"period": "month"}"#).is_err(),
            "an amount is required"
        );
    }

    #[test]
    fn validation_refuses_what_would_misfire() {
        let with = |f: fn(&mut Budget)| {
            let mut b = Budget::new(money("10"));
            f(&mut b);
            b.validate()
        };
        assert_eq!(with(|b| b.amount = Money::ZERO), Err(BudgetError::ZeroAmount));
        assert_eq!(
            with(|b| b.thresholds = vec![0, 50]),
            Err(BudgetError::ThresholdOutOfRange(0))
        );
        assert_eq!(
            with(|b| b.thresholds = vec![1001]),
            Err(BudgetError::ThresholdOutOfRange(1001))
        );
        assert_eq!(
            with(|b| b.thresholds = vec![80, 50]),
            Err(BudgetError::ThresholdsUnordered(vec![80, 50]))
        );
        assert!(with(|b| b.thresholds = vec![50, 50]).is_err(), "listed twice");
        assert!(with(|b| b.thresholds = vec![]).is_ok(), "a cap without alerts");
        assert!(with(|b| b.thresholds = vec![1, 1000]).is_ok());
        for bad in [
            "ftp://x",
            "https://",
            "https:///path",
            "hooks.example",
            "https://a b",
        ] {
            let mut b = Budget::new(money("10"));
            b.webhook = Some(bad.into());
            assert_eq!(b.validate(), Err(BudgetError::Webhook(bad.into())), "{bad}");
        }
    }

    #[test]
    fn thresholds_fire_once_each_with_their_severity() {
        let b = Budget::new(money("100"));
        let mut notified = BTreeSet::new();
        assert!(crossed(&b, money("49.999999"), &notified).is_empty());
        let first = crossed(&b, money("50"), &notified);
        assert_eq!(
            first,
            [Threshold {
                percent: 50,
                severity: Severity::Info
            }]
        );
        notified.extend(percents(&first));
        assert!(crossed(&b, money("60"), &notified).is_empty(), "not again");
        let jump = crossed(&b, money("130"), &notified);
        assert_eq!(percents(&jump), [80, 100], "a jump over two raises both");
        assert_eq!(jump[0].severity, Severity::Warning);
        assert_eq!(jump[1].severity, Severity::Critical);
        notified.extend(percents(&jump));
        assert!(
            crossed(&b, money("130"), &notified).is_empty(),
            "a restart finds nothing new"
        );
        assert_eq!(Severity::of(79), Severity::Info);
        assert_eq!(Severity::of(150), Severity::Critical);
        assert_eq!(
            Severity::Warning.event_type(),
            "io.knative.lambda.notification.alert.warning"
        );
    }

    #[test]
    fn the_hard_cap_stops_scale_ups_with_a_clear_message() {
        let now = "2026-11-18T10:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let mut b = Budget::new(money("100"));
        assert!(!b.cap_reached(money("150")), "no cap, no stop");
        assert!(enforce_cap("acme", &b, money("150"), now).is_ok());
        b.hard_cap = true;
        assert!(!b.cap_reached(money("99.999999")));
        assert!(b.cap_reached(money("100")));
        let err = enforce_cap("acme", &b, money("100.5"), now).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tenant \"acme\" has spent 100.50 of its monthly budget of 100.00 for 2026-11; scale-ups are refused until the period ends, or a tenant admin raises the budget"
        );
    }

    #[test]
    fn alerts_carry_the_period_and_the_event_type() {
        let at = "2026-11-18T10:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let mut b = Budget::new(money("20"));
        b.period = Period::Week;
        let threshold = crossed(&b, money("20"), &BTreeSet::new())[2];
        let alert = BudgetAlert::new("acme", &b, threshold, money("20"), at);
        assert_eq!(
            alert.event_type(),
            "io.knative.lambda.notification.alert.critical"
        );
        let json = serde_json::to_value(&alert).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "tenant": "acme", "period": "week", "periodKey": "2026-W47", "threshold": 100,
                "severity": "critical", "spent": "20.00", "amount": "20.00"
            })
        );
    }

    fn budget_strategy() -> impl Strategy<Value = Budget> {
        (
            1u64..1 << 40,
            proptest::collection::btree_set(1u16..=MAX_THRESHOLD, 0..6),
        )
            .prop_map(|(micros, set)| Budget {
                thresholds: set.into_iter().collect(),
                ..Budget::new(Money::from_micros(micros))
            })
    }

    proptest! {
        /// Whatever the spending does, each threshold is notified at most once, exactly those
        /// reached are, and re-evaluating with the stored set (a restart) notifies nothing.
        #[test]
        fn each_threshold_is_notified_once_per_period(
            budget in budget_strategy(), spending in proptest::collection::vec(0u64..1 << 42, 1..20),
        ) {
            prop_assert!(budget.validate().is_ok());
            let mut notified = BTreeSet::new();
            let mut sent = Vec::new();
            for &micros in &spending {
                let spent = Money::from_micros(micros);
                let new = crossed(&budget, spent, &notified);
                for t in &new {
                    prop_assert!(notified.insert(t.percent), "notified twice");
                    sent.push(t.percent);
                }
                prop_assert!(crossed(&budget, spent, &notified).is_empty(), "idempotent");
            }
            let peak = Money::from_micros(*spending.iter().max().unwrap());
            let reached: BTreeSet<u16> =
                budget.thresholds.iter().copied().filter(|&p| budget.reached(peak, p)).collect();
            prop_assert_eq!(notified, reached);
            prop_assert!(sent.windows(2).all(|w| w[0] < w[1]), "in increasing order");
        }
    }
}
