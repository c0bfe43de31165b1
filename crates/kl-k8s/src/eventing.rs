//! A tenant's eventing as Knative Eventing objects (DESIGN §2, events path): one Broker of the
//! RabbitMQ class per tenant (the scale-out event bus is RabbitMQ), a Trigger per subscription
//! with our filters and delivery policy, and a PingSource per cron schedule.

use std::collections::BTreeMap;
use std::time::Duration;

use kl_events::delivery::{BackoffPolicy, DeliveryPolicy, Sink};
use kl_events::filter::{Filter, Match};
use kl_events::schedule::Schedule;
use kl_events::trigger::TriggerSpec as PlatformTrigger;

use crate::crd::{
    AttributesFilter, Broker, BrokerSpec, DeliverySpec, Destination, KReference, PingSource, PingSourceSpec,
    SERVING_V1, Trigger, TriggerSpec,
};
use crate::names;
use crate::{Object, RenderError};

/// The name of every tenant's broker; triggers and sources of the tenant point at it.
pub const BROKER_NAME: &str = "default";
/// Knative's annotation choosing a broker implementation.
pub const BROKER_CLASS_ANNOTATION: &str = "eventing.knative.dev/broker.class";
/// The RabbitMQ broker's class (eventing-rabbitmq).
pub const RABBITMQ_BROKER_CLASS: &str = "RabbitMQBroker";

/// What a tenant's broker is rendered from.
#[derive(Debug, Clone)]
pub struct BrokerInput<'a> {
    pub tenant: &'a str,
    /// Name of the `RabbitmqBrokerConfig` (eventing-rabbitmq's `eventing.knative.dev/v1alpha1`
    /// kind) in the tenant's namespace naming the RabbitMQ cluster and queue type. The platform
    /// installs it; it has no schema in `shared/schemas`, so it is referenced, not rendered.
    pub rabbitmq_config: &'a str,
    /// The tenant's default delivery, which each trigger's own overrides.
    pub delivery: Option<&'a DeliveryPolicy>,
}

/// Renders the tenant's broker.
pub fn render_broker(input: &BrokerInput<'_>) -> Result<Broker, RenderError> {
    let ns = names::namespace(input.tenant)?;
    names::check_subdomain("RabbitmqBrokerConfig", input.rabbitmq_config)?;
    let mut metadata = names::meta(BROKER_NAME, &ns, names::labels(Some(input.tenant), None));
    metadata.annotations = Some(BTreeMap::from([(
        BROKER_CLASS_ANNOTATION.to_owned(),
        RABBITMQ_BROKER_CLASS.to_owned(),
    )]));
    Ok(Broker {
        metadata,
        spec: BrokerSpec {
            config: Some(KReference {
                api_version: "eventing.knative.dev/v1alpha1".to_owned(),
                kind: "RabbitmqBrokerConfig".to_owned(),
                name: input.rabbitmq_config.to_owned(),
            }),
            delivery: input.delivery.map(delivery).transpose()?,
        },
    })
}

/// What a trigger is rendered from.
#[derive(Debug, Clone)]
pub struct TriggerInput<'a> {
    pub tenant: &'a str,
    pub name: &'a str,
    /// The function events go to.
    pub function: &'a str,
    pub filter: &'a Filter,
    pub delivery: Option<&'a DeliveryPolicy>,
}

/// Renders a trigger. A filter of exact matches only, one per attribute, becomes
/// `spec.filter.attributes`, which every Knative version understands; anything else (a prefix,
/// a suffix) becomes the newer `spec.filters` dialects, one condition per entry, so it is an AND
/// as ours is. Never both: Knative lets `filters` override `filter`, which would hide the
/// difference.
pub fn render_trigger(input: &TriggerInput<'_>) -> Result<Trigger, RenderError> {
    let ns = names::namespace(input.tenant)?;
    names::check_label("trigger", input.name)?;
    kl_core::validate_function_name(input.function)?;
    let (filter, filters) = filters(input.filter);
    Ok(Trigger {
        metadata: names::meta(
            input.name,
            &ns,
            names::labels(Some(input.tenant), Some(input.function)),
        ),
        spec: TriggerSpec {
            broker: BROKER_NAME.to_owned(),
            filter,
            filters,
            subscriber: function_ref(input.function),
            delivery: input.delivery.map(delivery).transpose()?,
        },
    })
}

type Dialects = Vec<BTreeMap<String, BTreeMap<String, String>>>;

fn filters(filter: &Filter) -> (Option<AttributesFilter>, Dialects) {
    if filter.is_empty() {
        return (None, Vec::new());
    }
    let mut exact = BTreeMap::new();
    let all_exact_once = filter.conditions().all(|c| match c.matcher() {
        Match::Exact(v) => exact.insert(c.attribute().to_owned(), v.clone()).is_none(),
        Match::Prefix(_) | Match::Suffix(_) => false,
    });
    if all_exact_once {
        return (Some(AttributesFilter { attributes: exact }), Vec::new());
    }
    let dialects = filter
        .conditions()
        .map(|c| {
            BTreeMap::from([(
                c.matcher().dialect().to_owned(),
                BTreeMap::from([(c.attribute().to_owned(), c.matcher().value().to_owned())]),
            )])
        })
        .collect();
    (None, dialects)
}

/// Renders trigger `name` of `tenant` as Knative delivers it: a schedule as a PingSource, a
/// filter as a Trigger on the tenant's Broker with its delivery policy.
pub fn render_trigger_spec(tenant: &str, name: &str, spec: &PlatformTrigger) -> Result<Object, RenderError> {
    Ok(match &spec.schedule {
        Some(schedule) => {
            let data = spec.data.as_ref().map(|d| d.to_string());
            Object::PingSource(render_ping_source(&PingSourceInput {
                tenant,
                name,
                function: &spec.function,
                schedule,
                data: data.as_deref(),
                content_type: data.as_ref().map(|_| "application/json"),
            })?)
        }
        None => Object::Trigger(render_trigger(&TriggerInput {
            tenant,
            name,
            function: &spec.function,
            filter: &spec.filters,
            delivery: Some(&spec.delivery),
        })?),
    })
}

/// What a ping source is rendered from.
#[derive(Debug, Clone)]
pub struct PingSourceInput<'a> {
    pub tenant: &'a str,
    pub name: &'a str,
    pub function: &'a str,
    pub schedule: &'a Schedule,
    /// The event's body, and its media type.
    pub data: Option<&'a str>,
    pub content_type: Option<&'a str>,
}

/// Renders a ping source: the schedule's expression, in UTC as we evaluate it, to the function.
pub fn render_ping_source(input: &PingSourceInput<'_>) -> Result<PingSource, RenderError> {
    let ns = names::namespace(input.tenant)?;
    names::check_label("ping source", input.name)?;
    kl_core::validate_function_name(input.function)?;
    Ok(PingSource {
        metadata: names::meta(
            input.name,
            &ns,
            names::labels(Some(input.tenant), Some(input.function)),
        ),
        spec: PingSourceSpec {
            schedule: input.schedule.to_string(),
            timezone: "UTC".to_owned(),
            content_type: input.content_type.map(str::to_owned),
            data: input.data.map(str::to_owned),
            sink: function_ref(input.function),
        },
    })
}

fn function_ref(function: &str) -> Destination {
    Destination::Ref(KReference {
        api_version: SERVING_V1.to_owned(),
        kind: "Service".to_owned(),
        name: function.to_owned(),
    })
}

/// Our policy in Knative's `delivery:` shape. `backoffMax` (our cap on one backoff) and the
/// per-attempt `timeout` have no field in the Knative delivery schema we validate against, so
/// they are not rendered; Knative's backoff is then uncapped (docs/kubernetes.md).
fn delivery(policy: &DeliveryPolicy) -> Result<DeliverySpec, RenderError> {
    Ok(DeliverySpec {
        retry: policy.retries,
        backoff_policy: match policy.backoff_policy {
            BackoffPolicy::Exponential => "exponential",
            BackoffPolicy::Linear => "linear",
        }
        .to_owned(),
        backoff_delay: iso8601(policy.backoff_delay),
        dead_letter_sink: match &policy.dead_letter {
            None => None,
            Some(Sink::Function(name)) => {
                kl_core::validate_function_name(name)?;
                Some(function_ref(name))
            }
            Some(Sink::Uri(uri)) => Some(Destination::Uri(uri.clone())),
        },
    })
}

/// A duration as ISO 8601 seconds, as Knative's `backoffDelay` takes it: `PT0.2S`, `PT5S`.
pub fn iso8601(d: Duration) -> String {
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    if nanos == 0 {
        return format!("PT{secs}S");
    }
    let fraction = format!("{nanos:09}");
    format!("PT{secs}.{}S", fraction.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(conditions: &[&str]) -> Filter {
        Filter::parse_cli(conditions).unwrap()
    }

    #[test]
    fn exact_filters_use_attributes_and_others_use_dialects() {
        let (attributes, dialects) = filters(&filter(&["type=com.example.created", "source=shop"]));
        assert_eq!(
            attributes.unwrap().attributes,
            BTreeMap::from([
                ("source".to_owned(), "shop".to_owned()),
                ("type".to_owned(), "com.example.created".to_owned())
            ])
        );
        assert!(dialects.is_empty());

        let (attributes, dialects) = filters(&filter(&["type=prefix:com.example.", "subject=suffix:.png"]));
        assert!(attributes.is_none());
        assert_eq!(
            serde_json::to_value(&dialects).unwrap(),
            serde_json::json!([{"suffix": {"subject": ".png"}}, {"prefix": {"type": "com.example."}}])
        );

        let (attributes, dialects) = filters(&filter(&["type=a", "type=b"]));
        assert!(
            attributes.is_none(),
            "two values for one attribute do not fit a map"
        );
        assert_eq!(dialects.len(), 2);

        assert_eq!(filters(&Filter::default()), (None, Vec::new()));
    }

    #[test]
    fn delays_are_iso_8601_seconds() {
        assert_eq!(iso8601(Duration::from_millis(200)), "PT0.2S");
        assert_eq!(iso8601(Duration::from_secs(5)), "PT5S");
        assert_eq!(iso8601(Duration::from_millis(1500)), "PT1.5S");
        assert_eq!(iso8601(Duration::from_nanos(1)), "PT0.000000001S");
    }

    #[test]
    fn delivery_maps_retries_backoff_and_dead_letter_sink() {
        let policy = DeliveryPolicy {
            retries: 5,
            backoff_policy: BackoffPolicy::Linear,
            backoff_delay: Duration::from_secs(2),
            dead_letter: Some(Sink::Function("dead-letters".into())),
            ..DeliveryPolicy::default()
        };
        let spec = delivery(&policy).unwrap();
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            serde_json::json!({
                "retry": 5,
                "backoffPolicy": "linear",
                "backoffDelay": "PT2S",
                "deadLetterSink": {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "dead-letters"}}
            })
        );
    }
}
