//! `GET /v1/tenants/{t}/events/stream[?filter=ATTR=[DIALECT:]VALUE…]`: the tenant's events
//! as they are accepted or emitted (ingested, lifecycle, responses, pings), as NDJSON, one
//! structured-mode event per line, filtered on the server with the triggers' filters. Live
//! only: it starts from now, and a follower too slow to keep up gets a `{"lagged": N}` line
//! for the N events it missed.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use bytes::Bytes;
use http::Uri;
use kl_core::Action;
use kl_events::EventBus;
use kl_events::filter::Filter;
use tokio::sync::broadcast::error::RecvError;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// The `filter` parameters of the query, in the `--filter` syntax.
fn filter(uri: &Uri) -> Result<Filter, ApiError> {
    let query = uri.query().unwrap_or_default();
    let conditions = form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "filter")
        .map(|(_, v)| v.into_owned());
    Filter::parse_cli(conditions).map_err(|e| ApiError::bad_request("InvalidFilter", e.to_string()))
}

fn line(value: &impl serde::Serialize) -> Bytes {
    let mut line = serde_json::to_vec(value).expect("events serialize");
    line.push(b'\n');
    Bytes::from(line)
}

/// Streams until the client goes away or the server shuts down.
pub(crate) async fn follow(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    caller: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    state
        .authorize(&caller, Action::ReadEvents, Some(&tenant))
        .await?;
    state.require_tenant(&tenant).await?;
    let filter = filter(&uri)?;
    // Subscribed before the answer's head goes out: a client that has the head sees every
    // event accepted from then on.
    let feed = state.events.feed.subscribe();
    let stop = state.shutdown.subscribe();
    let stream = futures_util::stream::unfold(
        (feed, stop, tenant, filter),
        |(mut feed, mut stop, tenant, filter)| async move {
            loop {
                let next = tokio::select! {
                    next = feed.recv() => next,
                    _ = stop.wait_for(|stopping| *stopping) => return None,
                };
                let chunk = match next {
                    Ok(e) if e.tenant == tenant && filter.matches(&e.event) => line(&e.event),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => line(&serde_json::json!({ "lagged": missed })),
                    Err(RecvError::Closed) => return None,
                };
                return Some((Ok::<Bytes, std::io::Error>(chunk), (feed, stop, tenant, filter)));
            }
        },
    );
    Ok(Response::builder()
        .header(http::header::CONTENT_TYPE, "application/x-ndjson")
        .header(http::header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .expect("static response parts are valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_come_from_repeated_query_parameters() {
        let uri: Uri = "/x?filter=type%3Dprefix%3Aio.knative&filter=subject=suffix:.png&other=1"
            .parse()
            .unwrap();
        let f = filter(&uri).unwrap();
        assert_eq!(f.conditions().count(), 2);
        assert!(filter(&"/x".parse().unwrap()).unwrap().is_empty());
        let bad: Uri = "/x?filter=Type%3Dx".parse().unwrap();
        assert_eq!(filter(&bad).unwrap_err().code, "InvalidFilter");
    }
}
