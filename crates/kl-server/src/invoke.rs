//! `ANY /fn/{tenant}/{function}[/{rest}]`: authenticate (unless public), bound the body, and
//! hand the call to the gateway, or, with `Prefer: respond-async`, queue it and answer 202.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, Uri};
use kl_core::Action;
use kl_gateway::Invocation;

use crate::auth::Caller;
use crate::deploy::read_limited;
use crate::error::ApiError;
use crate::events;
use crate::state::AppState;

/// Serves both `/fn/{tenant}/{function}` and `/fn/{tenant}/{function}/{*rest}`.
pub(crate) async fn invoke(
    State(state): State<Arc<AppState>>,
    Path(params): Path<HashMap<String, String>>,
    caller: Caller,
    method: Method,
    uri: Uri,
    mut headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (tenant, function) = (&params["tenant"], &params["function"]);
    let public = state.is_public(tenant, function);
    if public != Some(true) {
        state.authorize(&caller, Action::Invoke, Some(tenant)).await?;
        // The platform token is for the platform, never for the function's code.
        headers.remove(http::header::AUTHORIZATION);
    }
    if public.is_none() {
        return Err(ApiError::not_found(format!(
            "function {function:?} in tenant {tenant:?} not found or has no ready revision"
        )));
    }
    let body = read_limited(body, state.config.max_request_bytes).await?;
    let path_and_query = function_path(&uri, tenant, function, params.get("rest"));
    if events::is_async(&headers) {
        return events::queue_invocation(&state, tenant, function, method, path_and_query, headers, body)
            .await;
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    let call = Invocation {
        method,
        path_and_query,
        headers,
        body,
        request_id: request_id.clone(),
    };
    let mut response = state
        .invoke(tenant, function, call)
        .await?
        .map(Body::from)
        .into_response();
    response.headers_mut().insert(
        "x-kl-request-id",
        http::HeaderValue::from_str(&request_id).expect("uuid is a valid header"),
    );
    Ok(response)
}

/// The function-relative path and query, taken from the raw URI so percent-encoding (an
/// encoded `/`, say) reaches the function as the client sent it.
fn function_path(uri: &Uri, tenant: &str, function: &str, rest: Option<&String>) -> String {
    let prefix = format!("/fn/{tenant}/{function}");
    let path = match uri.path().strip_prefix(&prefix) {
        Some("") => "/".to_owned(),
        Some(p) if p.starts_with('/') => p.to_owned(),
        _ => format!("/{}", rest.map(String::as_str).unwrap_or("")),
    };
    match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_raw_rest_of_the_path_and_the_query() {
        let path = |u: &str| function_path(&u.parse().unwrap(), "t", "f", None);
        assert_eq!(path("/fn/t/f"), "/");
        assert_eq!(path("/fn/t/f/"), "/");
        assert_eq!(path("/fn/t/f/a%2Fb/c?x=1&y"), "/a%2Fb/c?x=1&y");
        assert_eq!(path("/fn/t/f?q=2"), "/?q=2");
    }
}
