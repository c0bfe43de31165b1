//! A fake Kubernetes API transport (kube's own `tower-test` pattern): every request the client
//! sends is recorded and answered by the test's responder. No cluster can run here; this is
//! the only stand-in the tests use.

use std::pin::pin;

use http::{Request, Response};
use kube::client::Body;
use tokio::task::JoinHandle;

/// A request as the client sent it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, e.g. `/api/v1/namespaces/kl-acme?&force=true&fieldManager=knative-lambda`.
    pub uri: String,
    pub content_type: String,
    pub body: String,
}

impl Recorded {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{} {}: body is not JSON: {e}", self.method, self.uri))
    }

    /// `METHOD path`, for compact assertions.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path())
    }
}

/// An answer: HTTP status and body.
pub type Answer = (u16, String);

/// A Kubernetes `Status` body, as the API server sends with an error.
pub fn status(code: u16, reason: &str, message: &str) -> Answer {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    (code, body.to_string())
}

/// `200` with `value` as JSON.
pub fn ok(value: serde_json::Value) -> Answer {
    (200, value.to_string())
}

/// A client whose requests go to `respond`. The returned task ends, giving every recorded
/// request in order, once every clone of the client is dropped.
pub fn client(
    mut respond: impl FnMut(&Recorded) -> Answer + Send + 'static,
) -> (kube::Client, JoinHandle<Vec<Recorded>>) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let task = tokio::spawn(async move {
        let mut handle = pin!(handle);
        let mut recorded = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.expect("the request body reads");
            let r = Recorded {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .map(|v| v.to_str().unwrap_or_default().to_owned())
                    .unwrap_or_default(),
                body: String::from_utf8_lossy(&bytes).into_owned(),
            };
            let (code, body) = respond(&r);
            recorded.push(r);
            let response = Response::builder()
                .status(code)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.into_bytes()))
                .expect("a valid response");
            send.send_response(response);
        }
        recorded
    });
    (kube::Client::new(service, "default"), task)
}
