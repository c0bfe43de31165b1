//! Tenant budgets, checked after each metering write: the spending of the current period is
//! priced from the stored buckets; each threshold it has reached and that is not yet recorded
//! for the period raises a `notification.alert.*` event and, if the budget names one, a
//! webhook POST. A threshold is recorded once its webhook answered 2xx (or it has none); until
//! then the webhook is retried each tick, while the event goes out once per server run. So
//! each alert is notified at least once per period and recorded once, across restarts. A
//! spent budget with a hard cap refuses the tenant's instance starts in the gateway.
//!
//! The period's usage is read from the store once per tenant and period, then kept up to date
//! with the buckets each tick writes, so a check costs no store scan.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kl_core::{
    Budget, BudgetAlert, Minute, Money, PeriodKey, Usage, UsageBucket, Window, crossed, enforce_cap,
};
use kl_events::CloudEvent;
use kl_store::{MeterWrite, Notified};

use crate::state::AppState;

/// How long a webhook may take to answer.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// Alerts published in this run whose webhook has not yet answered.
#[derive(Default)]
pub(crate) struct Budgets {
    published: BTreeSet<(String, PeriodKey, u16)>,
    /// Each budgeted tenant's usage in its current period.
    period_usage: HashMap<String, (Window, Usage)>,
    http: reqwest::Client,
}

impl Budgets {
    /// Checks every budget after a tick stored `written`.
    pub(crate) async fn check(&mut self, state: &AppState, now: DateTime<Utc>, written: &[UsageBucket]) {
        let tenants = match state.store.tenants().await {
            Ok(tenants) => tenants,
            Err(error) => return tracing::warn!(%error, "cannot check budgets this time"),
        };
        let mut notified = Vec::new();
        for tenant in tenants {
            let Some(budget) = tenant.spec.budget else {
                state.gateway.set_budget_cap(&tenant.name, None);
                continue;
            };
            let spent = match self.spent(state, &tenant.name, &budget, now, written).await {
                Ok(spent) => spent,
                Err(error) => {
                    tracing::warn!(tenant = %tenant.name, %error, "cannot price the budget's spending");
                    continue;
                }
            };
            let cap = enforce_cap(&tenant.name, &budget, spent, now).err();
            state.gateway.set_budget_cap(&tenant.name, cap);
            let key = budget.period.key(now);
            let done = match state.store.notified_thresholds(&tenant.name, &key).await {
                Ok(done) => done,
                Err(error) => {
                    tracing::warn!(tenant = %tenant.name, %error, "cannot read notified budget thresholds");
                    continue;
                }
            };
            for threshold in crossed(&budget, spent, &done) {
                let alert = BudgetAlert::new(&tenant.name, &budget, threshold, spent, now);
                let id = (tenant.name.clone(), key.clone(), threshold.percent);
                if self.published.insert(id.clone()) {
                    tracing::info!(tenant = %tenant.name, threshold = threshold.percent, %spent, amount = %budget.amount, "budget threshold reached");
                    state.events.emit(&tenant.name, alert_event(&alert)).await;
                }
                let delivered = match &budget.webhook {
                    Some(url) => self.post(url, &alert).await,
                    None => true,
                };
                if delivered {
                    self.published.remove(&id);
                    notified.push(Notified {
                        tenant: tenant.name.clone(),
                        period_key: key.clone(),
                        threshold: threshold.percent,
                    });
                }
            }
        }
        let write = MeterWrite {
            notified,
            ..MeterWrite::default()
        };
        if let Err(error) = state.store.record_metering(&write).await {
            tracing::warn!(%error, "cannot record notified budget thresholds; they are notified again");
        }
    }

    /// What the tenant spent in the budget's period holding `now`: its usage there priced
    /// whole (one rounding, as a report of the period rounds it).
    async fn spent(
        &mut self,
        state: &AppState,
        tenant: &str,
        budget: &Budget,
        now: DateTime<Utc>,
        written: &[UsageBucket],
    ) -> Result<Money, String> {
        let window = budget.period.window_containing(now).map_err(|e| e.to_string())?;
        let usage = match self.period_usage.get_mut(tenant) {
            Some((cached, usage)) if *cached == window => {
                for bucket in written {
                    if bucket.tenant == tenant && window.contains_minute(bucket.minute) {
                        usage.merge(&bucket.usage);
                    }
                }
                *usage
            }
            _ => {
                // The store already holds `written`.
                let buckets = state
                    .store
                    .usage_buckets(Minute::of(window.start()), Minute::of(window.end()), Some(tenant))
                    .await
                    .map_err(|e| e.to_string())?;
                let mut usage = Usage::default();
                for bucket in buckets.iter().filter(|b| window.contains_minute(b.minute)) {
                    usage.merge(&bucket.usage);
                }
                self.period_usage.insert(tenant.to_owned(), (window, usage));
                usage
            }
        };
        let costs = state
            .config
            .metering
            .rates
            .cost(&usage)
            .map_err(|e| e.to_string())?;
        Ok(costs.total)
    }

    /// POSTs the alert; whether the webhook answered 2xx.
    async fn post(&self, url: &str, alert: &BudgetAlert) -> bool {
        let sent = self
            .http
            .post(url)
            .timeout(WEBHOOK_TIMEOUT)
            .json(alert)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => true,
            Ok(response) => {
                tracing::warn!(%url, status = %response.status(), "budget webhook refused the alert; retrying next tick");
                false
            }
            Err(error) => {
                tracing::warn!(%url, %error, "budget webhook unreachable; retrying next tick");
                false
            }
        }
    }
}

/// The alert as a CloudEvent: `io.knative.lambda.notification.alert.<severity>` from the
/// tenant.
fn alert_event(alert: &BudgetAlert) -> CloudEvent {
    let data = serde_json::to_value(alert).expect("an alert serializes");
    let mut event = CloudEvent::new(
        alert.event_type(),
        format!("io.knative.lambda/{}", alert.tenant),
        data,
    );
    event.subject = Some(alert.tenant.clone());
    event
}
