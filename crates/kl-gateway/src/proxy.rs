//! Forwarding one request to an instance over its unix socket, on a reused HTTP/1.1
//! connection, within the function's deadline.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use kl_core::{FunctionSpec, format_duration};
use tokio::net::UnixStream;

use crate::pool::Slot;
use crate::{GatewayConfig, GatewayError, Invocation};

/// Idle HTTP/1.1 connections to one instance.
#[derive(Default)]
pub(crate) struct Connections(Mutex<Vec<SendRequest<Full<Bytes>>>>);

impl Connections {
    fn take(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.0.lock().expect("connections lock");
        while let Some(conn) = idle.pop() {
            if !conn.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    fn give_back(&self, conn: SendRequest<Full<Bytes>>) {
        if !conn.is_closed() {
            self.0.lock().expect("connections lock").push(conn);
        }
    }
}

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

pub(crate) async fn forward(
    slot: &Slot,
    call: Invocation,
    deadline_ms: u64,
    remaining: Duration,
    config: &GatewayConfig,
    spec: &FunctionSpec,
) -> Result<http::Response<Bytes>, GatewayError> {
    let exchange = exchange(slot, call, deadline_ms, config.max_response_bytes);
    match tokio::time::timeout(remaining, exchange).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(Failure::TooLarge)) => Err(GatewayError::ResponseTooLarge(config.max_response_bytes)),
        Ok(Err(Failure::Broken(reason))) => {
            // Did the instance die, or just misbehave? Either way it is replaced.
            let exit = slot.instance.wait_exit(Duration::from_millis(500)).await;
            slot.discard();
            match exit {
                Some(status) => {
                    let reason = slot.instance.exit_reason().unwrap_or(status);
                    tracing::warn!(instance = %slot.instance.id, %reason, "instance crashed during a request");
                    Err(GatewayError::Crashed(reason))
                }
                None => Err(GatewayError::Upstream(reason)),
            }
        }
        Err(_) => {
            tracing::warn!(instance = %slot.instance.id, "request timed out; replacing the instance");
            slot.discard();
            Err(GatewayError::Timeout(format_duration(spec.timeout_ms)))
        }
    }
}

enum Failure {
    TooLarge,
    Broken(String),
}

async fn exchange(
    slot: &Slot,
    call: Invocation,
    deadline_ms: u64,
    max_response: usize,
) -> Result<http::Response<Bytes>, Failure> {
    let mut conn = match slot.conns.take() {
        Some(conn) => conn,
        None => connect(slot).await?,
    };
    let mut request = http::Request::builder()
        .method(call.method)
        .uri(call.path_and_query)
        .body(Full::new(call.body))
        .map_err(|e| Failure::Broken(e.to_string()))?;
    let headers = request.headers_mut();
    for (name, value) in &call.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            headers.append(name, value.clone());
        }
    }
    headers.insert(http::header::HOST, http::HeaderValue::from_static("function"));
    headers.insert(
        "x-kl-request-id",
        http::HeaderValue::from_str(&call.request_id).map_err(|e| Failure::Broken(e.to_string()))?,
    );
    headers.insert("x-kl-deadline-ms", http::HeaderValue::from(deadline_ms));
    conn.ready().await.map_err(|e| Failure::Broken(e.to_string()))?;
    let response = conn
        .send_request(request)
        .await
        .map_err(|e| Failure::Broken(e.to_string()))?;
    let (mut parts, body) = response.into_parts();
    let body = Limited::new(body, max_response).collect().await.map_err(|e| {
        if e.is::<http_body_util::LengthLimitError>() {
            Failure::TooLarge
        } else {
            Failure::Broken(e.to_string())
        }
    })?;
    slot.conns.give_back(conn);
    for name in HOP_BY_HOP {
        parts.headers.remove(name);
    }
    Ok(http::Response::from_parts(parts, body.to_bytes()))
}

async fn connect(slot: &Slot) -> Result<SendRequest<Full<Bytes>>, Failure> {
    let stream = UnixStream::connect(&slot.instance.socket)
        .await
        .map_err(|e| Failure::Broken(format!("connect: {e}")))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure::Broken(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}
