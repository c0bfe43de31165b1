//! Async invocation (`Prefer: respond-async`, `kl invoke --async`): the gateway records the
//! invocation and queues the request as an `io.knative.lambda.invoke.async` event; the
//! dispatcher runs it (retrying failures, then dead-lettering), stores the outcome, and
//! publishes `io.knative.lambda.response.{success,error,timeout}` through the same fan-out as
//! any event (so triggers can match replies), plus to the request's destination if it named
//! one. `GET /v1/tenants/{t}/invocations/{id}` reads the outcome.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use kl_api::{InvocationAccepted, InvocationState, InvocationView};
use kl_core::Action;
use kl_events::delivery::{DeliveryPolicy, Sink};
use kl_events::{CloudEvent, Delivery, NewDelivery, types};
use kl_gateway::{GatewayError, Invocation};
use kl_store::{InvocationOutcome, InvocationRecord, InvocationStatus, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Subscriber;
use super::dispatch::{Settled, dead_letter, settle};
use super::sink::{self, Attempt};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Names where the response event goes besides triggers: `function NAME` or an http:// URL.
const DESTINATION: &str = "x-kl-destination";
/// Links the response event to the caller's own bookkeeping; the invocation id otherwise.
const CORRELATION: &str = "x-kl-correlation-id";
/// Most response bytes an invocation record keeps.
const MAX_RESULT_BYTES: usize = 256 << 10;

/// Retries of a failed invocation, as AWS Lambda does for async calls (two), sooner.
fn invocation_policy() -> DeliveryPolicy {
    DeliveryPolicy {
        retries: 2,
        backoff_delay: Duration::from_millis(500),
        ..DeliveryPolicy::default()
    }
}

/// Retries of a response's delivery to its destination.
fn destination_policy() -> DeliveryPolicy {
    DeliveryPolicy {
        retries: 3,
        ..DeliveryPolicy::default()
    }
}

/// Whether the request prefers an async answer (RFC 7240 `Prefer: respond-async`).
pub(crate) fn is_async(headers: &HeaderMap) -> bool {
    headers
        .get_all(HeaderName::from_static("prefer"))
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|p| p.split(';').next())
        .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
}

/// The request an `invoke.async` event carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct QueuedRequest {
    method: String,
    /// Function-relative path and query.
    path: String,
    headers: BTreeMap<String, String>,
    /// The body, base64.
    body: String,
}

/// The `x-kl-destination` header: `function NAME` or an http:// URL.
fn destination(headers: &HeaderMap) -> Result<Option<Sink>, ApiError> {
    let Some(value) = headers.get(DESTINATION) else {
        return Ok(None);
    };
    let invalid = |m: String| ApiError::bad_request("InvalidDestination", m);
    let value = value
        .to_str()
        .map_err(|_| invalid(format!("{DESTINATION} is not visible ASCII")))?
        .trim();
    if let Some(name) = value.strip_prefix("function ") {
        let name = name.trim();
        kl_core::validate_function_name(name).map_err(|e| invalid(e.to_string()))?;
        Ok(Some(Sink::Function(name.to_owned())))
    } else {
        sink::check_url(value).map_err(invalid)?;
        Ok(Some(Sink::Uri(value.to_owned())))
    }
}

/// Records and queues an invocation; answers 202 with its id and where to read the outcome.
pub(crate) async fn queue_invocation(
    state: &AppState,
    tenant: &str,
    function: &str,
    method: Method,
    path: String,
    mut headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let destination = destination(&headers)?;
    if let Some(Sink::Function(f)) = &destination
        && let Err(StoreError::NotFound(_)) = state.store.function(tenant, f).await
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "UnknownFunction",
            format!("destination function {f:?} does not exist in tenant {tenant:?}"),
        ));
    }
    for platform in [
        DESTINATION,
        "prefer",
        http::header::HOST.as_str(),
        "content-length",
    ] {
        headers.remove(platform);
    }
    let id = uuid::Uuid::new_v4().to_string();
    let correlation = headers
        .remove(CORRELATION)
        .and_then(|v| v.to_str().ok().map(str::to_owned))
        .unwrap_or_else(|| id.clone());
    let request = QueuedRequest {
        method: method.to_string(),
        path,
        headers: headers
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_owned())))
            .collect(),
        body: BASE64.encode(&body),
    };
    let mut event = kl_events::lifecycle(
        types::INVOKE_ASYNC,
        tenant,
        function,
        &correlation,
        serde_json::to_value(&request).expect("a request serializes"),
    );
    event.id = id.clone();
    state
        .store
        .create_invocation(&id, tenant, function, &correlation, destination.as_ref())
        .await?;
    let run = NewDelivery {
        tenant: tenant.to_owned(),
        subscriber: Subscriber::Invocation(id.clone()).to_string(),
        event: event.clone(),
    };
    if let Err(e) = state.events.publish(tenant, vec![event], vec![run]).await {
        let outcome = failed_outcome(format!("could not be queued: {e}"));
        let _ = state.store.finish_invocation(tenant, &id, &outcome).await;
        return Err(e.into());
    }
    let location = format!("/v1/tenants/{tenant}/invocations/{id}");
    let body = Json(InvocationAccepted {
        invocation_id: id,
        status: InvocationState::Queued,
    });
    let mut response = (StatusCode::ACCEPTED, body).into_response();
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(http::header::LOCATION, location);
    }
    Ok(response)
}

fn failed_outcome(error: String) -> InvocationOutcome {
    InvocationOutcome {
        status: InvocationStatus::Failed,
        status_code: None,
        result: None,
        result_type: None,
        result_truncated: false,
        error: Some(error),
        duration_ms: 0,
        cold_start: false,
    }
}

/// Runs one attempt of an invocation and settles its delivery.
pub(crate) async fn run(state: &AppState, delivery: Delivery, id: &str) -> Settled {
    let request: QueuedRequest = match delivery
        .event
        .data
        .clone()
        .map(serde_json::from_value)
        .transpose()
    {
        Ok(Some(request)) => request,
        Ok(None) | Err(_) => {
            return dead_letter(state, delivery, "the invocation's request is malformed").await;
        }
    };
    let record = match state.store.start_invocation(&delivery.tenant, id).await {
        Ok(record) => record,
        Err(StoreError::NotFound(what)) => {
            return dead_letter(state, delivery, &format!("{what} no longer exists")).await;
        }
        Err(e) => {
            return settle(
                state,
                delivery,
                Attempt::Transient(e.to_string()),
                &invocation_policy(),
            )
            .await;
        }
    };
    let call = match call(&request, id) {
        Ok(call) => call,
        Err(reason) => return dead_letter(state, delivery, &reason).await,
    };
    let started = tokio::time::Instant::now();
    let answer = state.invoke(&record.tenant, &record.function, call).await;
    let duration_ms = started.elapsed().as_millis() as u64;
    let (outcome, attempt) = outcome(answer, duration_ms, &record.function);
    let policy = invocation_policy();
    let last = !matches!(attempt, Attempt::Transient(_)) || delivery.attempt >= policy.retries;
    if !last {
        let queued = InvocationOutcome {
            status: InvocationStatus::Queued,
            ..outcome
        };
        if let Err(e) = state.store.finish_invocation(&record.tenant, id, &queued).await {
            tracing::error!(invocation = %id, error = %e, "cannot record an invocation attempt");
        }
        return settle(state, delivery, attempt, &policy).await;
    }
    if let Err(e) = state.store.finish_invocation(&record.tenant, id, &outcome).await {
        return settle(state, delivery, Attempt::Transient(e.to_string()), &policy).await;
    }
    let response = response_event(&record, &outcome);
    let extra = record
        .destination
        .iter()
        .map(|_| NewDelivery {
            tenant: record.tenant.clone(),
            subscriber: Subscriber::Destination(record.id.clone()).to_string(),
            event: response.clone(),
        })
        .collect();
    if let Err(e) = state.events.publish(&record.tenant, vec![response], extra).await {
        let reason = format!("could not publish the response event: {e}");
        return settle(state, delivery, Attempt::Transient(reason), &policy).await;
    }
    settle(state, delivery, attempt, &policy).await
}

/// The gateway call a queued request makes.
fn call(request: &QueuedRequest, id: &str) -> Result<Invocation, String> {
    let malformed = |what: &str| format!("the invocation's request has a malformed {what}");
    let mut headers = HeaderMap::new();
    for (k, v) in &request.headers {
        let name = HeaderName::try_from(k.as_str()).map_err(|_| malformed("header name"))?;
        let value = HeaderValue::from_str(v).map_err(|_| malformed("header value"))?;
        headers.append(name, value);
    }
    Ok(Invocation {
        method: Method::from_bytes(request.method.as_bytes()).map_err(|_| malformed("method"))?,
        path_and_query: request.path.clone(),
        headers,
        body: Bytes::from(BASE64.decode(&request.body).map_err(|_| malformed("body"))?),
        request_id: id.to_owned(),
    })
}

/// What an attempt's answer means for the record and for retrying.
fn outcome(
    answer: Result<http::Response<Bytes>, GatewayError>,
    duration_ms: u64,
    function: &str,
) -> (InvocationOutcome, Attempt) {
    match answer {
        Ok(response) => {
            let status = response.status();
            let attempt = sink::judge(status, &format!("function {function:?}"));
            let cold_start = response.headers().contains_key("x-kl-cold-start");
            let result_type = response
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = response.into_body();
            let truncated = body.len() > MAX_RESULT_BYTES;
            let error = match &attempt {
                Attempt::Delivered => None,
                Attempt::Transient(reason) | Attempt::Permanent(reason) => Some(reason.clone()),
            };
            let outcome = InvocationOutcome {
                status: if error.is_none() {
                    InvocationStatus::Succeeded
                } else {
                    InvocationStatus::Failed
                },
                status_code: Some(status.as_u16()),
                result: Some(body[..body.len().min(MAX_RESULT_BYTES)].to_vec()),
                result_type,
                result_truncated: truncated,
                error,
                duration_ms,
                cold_start,
            };
            (outcome, attempt)
        }
        Err(e) => {
            let status = match e {
                GatewayError::Timeout(_) => InvocationStatus::Timeout,
                _ => InvocationStatus::Failed,
            };
            let outcome = InvocationOutcome {
                status,
                duration_ms,
                ..failed_outcome(e.to_string())
            };
            (outcome, Attempt::Transient(e.to_string()))
        }
    }
}

/// The response body as JSON (JSON content), a string (text), or `None` (other bytes).
fn readable(body: &[u8], content_type: Option<&str>) -> Option<Value> {
    let json = content_type.is_some_and(|t| t.contains("json"));
    if json && let Ok(value) = serde_json::from_slice(body) {
        return Some(value);
    }
    std::str::from_utf8(body)
        .ok()
        .map(|s| Value::String(s.to_owned()))
}

/// `io.knative.lambda.response.{success,error,timeout}` with the catalog's data.
fn response_event(record: &InvocationRecord, outcome: &InvocationOutcome) -> CloudEvent {
    let ty = match outcome.status {
        InvocationStatus::Succeeded => types::RESPONSE_SUCCESS,
        InvocationStatus::Timeout => types::RESPONSE_TIMEOUT,
        _ => types::RESPONSE_ERROR,
    };
    let body = outcome.result.as_deref().unwrap_or_default();
    let readable = readable(body, outcome.result_type.as_deref());
    let mut data = json!({
        "functionName": record.function,
        "tenant": record.tenant,
        "invocationId": record.id,
        "correlationId": record.correlation_id,
        "metrics": {"durationMs": outcome.duration_ms, "coldStart": outcome.cold_start},
    });
    match &outcome.error {
        None => data["result"] = readable.unwrap_or_else(|| Value::String(BASE64.encode(body))),
        Some(message) => {
            data["error"] = json!({"message": message, "statusCode": outcome.status_code});
            if let Some(body) = readable {
                data["error"]["body"] = body;
            }
        }
    }
    kl_events::lifecycle(ty, &record.tenant, &record.function, &record.correlation_id, data)
}

/// Delivers a response event to its invocation's destination.
pub(crate) async fn to_destination(state: &AppState, delivery: Delivery, id: &str) -> Settled {
    let policy = destination_policy();
    let sink = match state.store.invocation(&delivery.tenant, id).await {
        Ok(InvocationRecord {
            destination: Some(sink),
            ..
        }) => sink,
        Ok(_) | Err(StoreError::NotFound(_)) => {
            let reason = format!("invocation {id:?} or its destination no longer exists");
            return dead_letter(state, delivery, &reason).await;
        }
        Err(e) => return settle(state, delivery, Attempt::Transient(e.to_string()), &policy).await,
    };
    let attempt = sink::to_sink(state, &delivery.tenant, &sink, &delivery.event, policy.timeout).await;
    settle(state, delivery, attempt, &policy).await
}

/// `GET /v1/tenants/{t}/invocations/{id}`
pub(crate) async fn get_invocation(
    State(state): State<Arc<AppState>>,
    Path((tenant, id)): Path<(String, String)>,
    caller: Caller,
) -> Result<Json<InvocationView>, ApiError> {
    state
        .authorize(&caller, Action::ReadEvents, Some(&tenant))
        .await?;
    let record = state.store.invocation(&tenant, &id).await?;
    Ok(Json(view(record)))
}

fn view(r: InvocationRecord) -> InvocationView {
    let status = match r.status {
        InvocationStatus::Queued => InvocationState::Queued,
        InvocationStatus::Running => InvocationState::Running,
        InvocationStatus::Succeeded => InvocationState::Succeeded,
        InvocationStatus::Failed => InvocationState::Failed,
        InvocationStatus::Timeout => InvocationState::Timeout,
    };
    let outcome = r.outcome.as_ref();
    let body = outcome.and_then(|o| o.result.as_deref());
    let content_type = outcome.and_then(|o| o.result_type.as_deref());
    let result = body.and_then(|b| readable(b, content_type));
    InvocationView {
        result_base64: body.filter(|_| result.is_none()).map(|b| BASE64.encode(b)),
        result,
        id: r.id,
        tenant: r.tenant,
        function: r.function,
        status,
        correlation_id: r.correlation_id,
        destination: r.destination,
        attempts: r.attempts,
        status_code: outcome.and_then(|o| o.status_code),
        result_type: outcome.and_then(|o| o.result_type.clone()),
        result_truncated: outcome.is_some_and(|o| o.result_truncated),
        error: outcome.and_then(|o| o.error.clone()),
        duration_ms: outcome.map(|o| o.duration_ms),
        cold_start: outcome.map(|o| o.cold_start),
        created_at: r.created_at,
        started_at: r.started_at,
        finished_at: r.finished_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn prefer_respond_async_is_recognised_among_other_preferences() {
        assert!(is_async(&headers(&[("prefer", "respond-async")])));
        assert!(is_async(&headers(&[(
            "prefer",
            "return=minimal, Respond-Async; wait=10"
        )])));
        assert!(!is_async(&headers(&[("prefer", "return=representation")])));
        assert!(!is_async(&headers(&[])));
    }

    #[test]
    fn destinations_are_functions_or_plain_http_urls() {
        let dest = |v: &str| destination(&headers(&[(DESTINATION, v)]));
        assert_eq!(
            dest("function sink").unwrap(),
            Some(Sink::Function("sink".into()))
        );
        assert_eq!(
            dest("http://hooks.example.com/x").unwrap(),
            Some(Sink::Uri("http://hooks.example.com/x".into()))
        );
        assert_eq!(dest("function Bad_Name").unwrap_err().code, "InvalidDestination");
        assert_eq!(
            dest("https://x.example.com/").unwrap_err().code,
            "InvalidDestination"
        );
        assert_eq!(destination(&HeaderMap::new()).unwrap(), None);
    }

    #[test]
    fn a_queued_request_becomes_the_same_call() {
        let request = QueuedRequest {
            method: "PUT".into(),
            path: "/a?b=1".into(),
            headers: BTreeMap::from([("content-type".into(), "application/json".into())]),
            body: BASE64.encode(b"{\"x\":1}"),
        };
        let call = call(&request, "id-1").unwrap();
        assert_eq!(call.method, Method::PUT);
        assert_eq!(call.path_and_query, "/a?b=1");
        assert_eq!(call.headers["content-type"], "application/json");
        assert_eq!(&call.body[..], b"{\"x\":1}");
        assert_eq!(call.request_id, "id-1");
    }

    #[test]
    fn outcomes_follow_the_answer() {
        let ok = http::Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .header("x-kl-cold-start", "true")
            .body(Bytes::from_static(b"{\"r\":1}"))
            .unwrap();
        let (succeeded, attempt) = outcome(Ok(ok), 7, "f");
        assert_eq!(attempt, Attempt::Delivered);
        assert_eq!(succeeded.status, InvocationStatus::Succeeded);
        assert!(succeeded.cold_start);
        let error = http::Response::builder()
            .status(500)
            .body(Bytes::from_static(b"boom"))
            .unwrap();
        let (failed, attempt) = outcome(Ok(error), 1, "f");
        assert!(matches!(attempt, Attempt::Transient(_)));
        assert_eq!(
            (failed.status, failed.status_code),
            (InvocationStatus::Failed, Some(500))
        );
        let (timed_out, _) = outcome(Err(GatewayError::Timeout("1s".into())), 1000, "f");
        assert_eq!(timed_out.status, InvocationStatus::Timeout);
    }

    #[test]
    fn readable_bodies_are_json_or_text() {
        assert_eq!(
            readable(b"{\"a\":1}", Some("application/json")),
            Some(json!({"a": 1}))
        );
        assert_eq!(
            readable(b"{\"a\":1}", Some("text/plain")),
            Some(json!("{\"a\":1}"))
        );
        assert_eq!(readable(b"\xff\x00", Some("application/octet-stream")), None);
    }
}
