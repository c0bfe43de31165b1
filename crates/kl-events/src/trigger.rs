//! A trigger: which of a tenant's events go to which function, and how they are delivered
//! (Knative's Trigger, with its `filters:` and `delivery:`), or, with a schedule, a function
//! pinged on a cron schedule (Knative's PingSource). Stored and served in this JSON shape.

use kl_core::{NameError, validate_function_name};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::delivery::{DeliveryError, DeliveryPolicy};
use crate::filter::Filter;
use crate::schedule::Schedule;

/// Why a trigger spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TriggerError {
    /// The trigger's or its function's name is not a valid name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The delivery policy is out of bounds.
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    /// A schedule trigger also has filters: a ping goes to its function alone.
    #[error(
        "a trigger has either filters (it subscribes to events) or a schedule (it pings its function), not both"
    )]
    ScheduleWithFilters,
    /// `data` without a schedule: only pings carry trigger-defined data.
    #[error("data is the payload of scheduled pings; it needs a schedule")]
    DataWithoutSchedule,
}

/// What a trigger does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggerSpec {
    /// The function of the same tenant that events are delivered to.
    pub function: String,
    /// Conditions an event must meet; none matches every event of the tenant.
    #[serde(default, skip_serializing_if = "Filter::is_empty")]
    pub filters: Filter,
    /// Makes this a ping source: the function gets an event at each fire time (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// JSON data of each ping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// Retries, backoff, timeout and dead-letter sink; Knative's broker defaults when absent.
    #[serde(default)]
    pub delivery: DeliveryPolicy,
}

impl TriggerSpec {
    /// Checks the function name, the delivery bounds and that filters and schedule do not mix.
    pub fn validate(&self) -> Result<(), TriggerError> {
        validate_function_name(&self.function)?;
        self.delivery.validate()?;
        if self.schedule.is_some() && !self.filters.is_empty() {
            return Err(TriggerError::ScheduleWithFilters);
        }
        if self.schedule.is_none() && self.data.is_some() {
            return Err(TriggerError::DataWithoutSchedule);
        }
        Ok(())
    }
}

/// Checks a trigger name: the rules of function names, since both name Kubernetes objects.
pub fn validate_trigger_name(name: &str) -> Result<(), NameError> {
    const KIND: &str = "trigger";
    validate_function_name(name).map_err(|e| match e {
        NameError::Empty { .. } => NameError::Empty { kind: KIND },
        NameError::TooLong { name, len, max, .. } => NameError::TooLong {
            kind: KIND,
            name,
            len,
            max,
        },
        NameError::Invalid { name, .. } => NameError::Invalid { kind: KIND, name },
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_knative_shaped_json_with_defaults() {
        let spec: TriggerSpec = serde_json::from_value(json!({
            "function": "resize",
            "filters": [{"exact": {"type": "com.example.created"}}, {"suffix": {"subject": ".png"}}],
            "delivery": {"retry": 2, "backoffDelay": "PT0.5S", "deadLetterSink": {"function": "dlq"}}
        }))
        .unwrap();
        assert_eq!(spec.validate(), Ok(()));
        assert_eq!(spec.filters.conditions().count(), 2);
        assert_eq!(spec.delivery.retries, 2);
        let back: TriggerSpec = serde_json::from_value(serde_json::to_value(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
        let minimal: TriggerSpec = serde_json::from_value(json!({"function": "f"})).unwrap();
        assert_eq!(minimal.delivery, DeliveryPolicy::default());
        assert!(serde_json::from_value::<TriggerSpec>(json!({"function": "f", "filter": []})).is_err());
    }

    #[test]
    fn schedules_and_filters_do_not_mix() {
        let ping: TriggerSpec =
            serde_json::from_value(json!({"function": "f", "schedule": "*/5 * * * *", "data": {"a": 1}}))
                .unwrap();
        assert_eq!(ping.validate(), Ok(()));
        let both: TriggerSpec = serde_json::from_value(
            json!({"function": "f", "schedule": "@hourly", "filters": [{"exact": {"type": "t"}}]}),
        )
        .unwrap();
        assert_eq!(both.validate(), Err(TriggerError::ScheduleWithFilters));
        let data: TriggerSpec = serde_json::from_value(json!({"function": "f", "data": 1})).unwrap();
        assert_eq!(data.validate(), Err(TriggerError::DataWithoutSchedule));
        let bad: TriggerSpec = serde_json::from_value(json!({"function": "F"})).unwrap();
        assert!(matches!(bad.validate(), Err(TriggerError::Name(_))));
    }

    #[test]
    fn trigger_names_say_trigger() {
        assert_eq!(validate_trigger_name("on-upload"), Ok(()));
        let err = validate_trigger_name("On_Upload").unwrap_err();
        assert!(err.to_string().starts_with("trigger name"), "{err}");
    }
}
