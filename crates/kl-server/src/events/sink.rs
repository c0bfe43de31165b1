//! Delivering one event, in binary mode, to a function (through the gateway, as any call) or
//! to a URL (through the tenant's egress proxy, so a URL sink reaches exactly what the
//! tenant's own functions may reach, and nothing of the platform's), and what the answer
//! means for retrying.

use std::time::Duration;

use http::{Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use kl_events::CloudEvent;
use kl_events::delivery::Sink;
use kl_events::http_binding::to_binary;
use kl_gateway::Invocation;
use tokio::net::UnixStream;

use crate::state::AppState;

/// How long a URL delivery may take when its policy sets no timeout.
const URL_TIMEOUT: Duration = Duration::from_secs(30);

/// What one delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// The target answered 2xx.
    Delivered,
    /// Worth another try later (5xx, 404, 408, 409, 429, no answer, no capacity).
    Transient(String),
    /// Trying again will not help (any other 4xx): dead-letter at once.
    Permanent(String),
}

/// Knative's retry rule on an answer's status.
pub(crate) fn judge(status: StatusCode, target: &str) -> Attempt {
    let answered = || format!("{target} answered HTTP {status}");
    match status.as_u16() {
        200..=299 => Attempt::Delivered,
        404 | 408 | 409 | 429 | 500..=599 => Attempt::Transient(answered()),
        _ => Attempt::Permanent(answered()),
    }
}

/// Delivers to a function of the tenant; `timeout` caps the attempt below the function's own.
pub(crate) async fn to_function(
    state: &AppState,
    tenant: &str,
    function: &str,
    event: &CloudEvent,
    timeout: Option<Duration>,
) -> Attempt {
    let (headers, body) = match to_binary(event) {
        Ok(binary) => binary,
        Err(e) => return Attempt::Permanent(format!("the event cannot be sent in binary mode: {e}")),
    };
    let call = Invocation {
        method: Method::POST,
        path_and_query: "/".into(),
        headers,
        body,
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    let target = format!("function {function:?}");
    let invoked = state.invoke(tenant, function, call);
    let answer = match timeout {
        Some(limit) => match tokio::time::timeout(limit, invoked).await {
            Ok(answer) => answer,
            Err(_) => {
                return Attempt::Transient(format!(
                    "{target} did not answer within the delivery timeout of {}",
                    kl_core::format_duration(limit.as_millis() as u64)
                ));
            }
        },
        None => invoked.await,
    };
    match answer {
        Ok(response) => judge(response.status(), &target),
        Err(e) => Attempt::Transient(format!("{target}: {e}")),
    }
}

/// Refuses a URL this server cannot deliver to: it has no TLS client, so plain `http://`
/// only (the tenant's egress policy decides the rest, at delivery).
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    let uri: Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http"), Some(_)) => Ok(()),
        (Some("https"), _) => Err(format!(
            "{url:?}: this server delivers to plain http:// URLs only (it has no TLS client); use a function, or an http:// endpoint"
        )),
        _ => Err(format!("{url:?} is not an absolute http:// URL")),
    }
}

/// POSTs the event to `url` through the tenant's egress proxy.
pub(crate) async fn to_url(
    state: &AppState,
    tenant: &str,
    url: &str,
    event: &CloudEvent,
    timeout: Option<Duration>,
) -> Attempt {
    if let Err(reason) = check_url(url) {
        return Attempt::Permanent(reason);
    }
    let Some(socket) = state.egress.socket(tenant) else {
        return Attempt::Transient(format!("tenant {tenant:?} has no egress proxy running"));
    };
    let (headers, body) = match to_binary(event) {
        Ok(binary) => binary,
        Err(e) => return Attempt::Permanent(format!("the event cannot be sent in binary mode: {e}")),
    };
    let target = format!("URL {url}");
    let post = async {
        let stream = UnixStream::connect(&socket)
            .await
            .map_err(|e| format!("the egress proxy: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("the egress proxy: {e}"))?;
        tokio::spawn(conn);
        let uri: Uri = url.parse().map_err(|e| format!("{e}"))?;
        let mut request = http::Request::post(uri.clone())
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        *request.headers_mut() = headers;
        if let Some(authority) = uri.authority() {
            let host = http::HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
            request.headers_mut().insert(http::header::HOST, host);
        }
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        // Read the answer so the connection ends cleanly; its content does not matter.
        let _ = response.into_body().collect().await.map(|b| b.to_bytes());
        Ok::<StatusCode, String>(status)
    };
    match tokio::time::timeout(timeout.unwrap_or(URL_TIMEOUT), post).await {
        Ok(Ok(status)) => judge(status, &target),
        Ok(Err(e)) => Attempt::Transient(format!("{target}: {e}")),
        Err(_) => Attempt::Transient(format!("{target} did not answer in time")),
    }
}

/// Posts the event, in binary mode, to the tenant's Knative Broker (`--eventing knative`).
pub(crate) async fn to_knative_broker(state: &AppState, tenant: &str, event: &CloudEvent) -> Attempt {
    let Some(cluster) = &state.cluster else {
        return Attempt::Permanent("no cluster: --eventing knative needs --backend kubernetes".to_owned());
    };
    let (headers, body) = match to_binary(event) {
        Ok(binary) => binary,
        Err(e) => return Attempt::Permanent(format!("the event cannot be sent in binary mode: {e}")),
    };
    match cluster.post_to_broker(tenant, headers, body).await {
        Ok(status) => judge(status, &format!("the Knative Broker of tenant {tenant:?}")),
        Err(reason) => Attempt::Transient(reason),
    }
}

/// Delivers to a function or URL sink.
pub(crate) async fn to_sink(
    state: &AppState,
    tenant: &str,
    sink: &Sink,
    event: &CloudEvent,
    timeout: Option<Duration>,
) -> Attempt {
    match sink {
        Sink::Function(function) => to_function(state, tenant, function, event, timeout).await,
        Sink::Uri(url) => to_url(state, tenant, url, event, timeout).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_judged_as_knative_does() {
        let judged = |code: u16| judge(StatusCode::from_u16(code).unwrap(), "f");
        assert_eq!(judged(200), Attempt::Delivered);
        assert_eq!(judged(204), Attempt::Delivered);
        for transient in [404, 408, 409, 429, 500, 502, 503, 504] {
            assert!(matches!(judged(transient), Attempt::Transient(_)), "{transient}");
        }
        for permanent in [400, 401, 403, 413, 422] {
            assert!(matches!(judged(permanent), Attempt::Permanent(_)), "{permanent}");
        }
    }

    #[test]
    fn only_plain_http_urls_are_deliverable() {
        assert_eq!(check_url("http://hooks.example.com/in"), Ok(()));
        assert!(
            check_url("https://hooks.example.com/in")
                .unwrap_err()
                .contains("no TLS")
        );
        assert!(check_url("/relative").is_err());
        assert!(check_url("ftp://x/y").is_err());
    }
}
