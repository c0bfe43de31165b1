//! The HTTP API client: base URL, bearer token, and errors decoded from the server's
//! `{"error": {"code", "message"}}` bodies.

use std::fmt;

use anyhow::{Context, Result};
use kl_api::ErrorBody;
use reqwest::{Method, RequestBuilder, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cli::Conn;

/// A non-2xx answer from the server.
#[derive(Debug)]
pub struct ApiFailure {
    /// The HTTP status.
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ApiFailure {}

/// Turns a non-2xx response into an [`ApiFailure`], keeping any body that is not ours.
pub async fn failure(response: Response) -> ApiFailure {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => ApiFailure {
            status,
            code: body.error.code,
            message: body.error.message,
        },
        Err(_) => ApiFailure {
            status,
            code: format!("HTTP {status}"),
            message: if text.trim().is_empty() {
                "request failed".into()
            } else {
                text.trim().to_owned()
            },
        },
    }
}

/// A client of one server.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// From the connection flags: `--token`/`KL_TOKEN`, else `DATA_DIR/admin.token`.
    pub fn from_conn(conn: &Conn) -> Result<Client> {
        let token = match &conn.token {
            Some(t) => Some(t.clone()),
            None => std::fs::read_to_string(conn.data_dir.join("admin.token"))
                .ok()
                .map(|t| t.trim().to_owned()),
        };
        Ok(Client::new(&conn.url, token))
    }

    pub fn new(base: &str, token: Option<String>) -> Client {
        Client {
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .build()
                .expect("the HTTP client builds"),
            base: base.trim_end_matches('/').to_owned(),
            token,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => builder.bearer_auth(t),
            None => builder,
        }
    }

    /// Sends a request; a non-2xx answer becomes an error.
    pub async fn send(&self, builder: RequestBuilder) -> Result<Response> {
        let response = builder.send().await.with_context(|| {
            format!(
                "cannot reach the kl server at {} (is `kl server` running? set KL_URL)",
                self.base
            )
        })?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(failure(response).await.into())
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let response = self.send(self.request(Method::GET, path)).await?;
        response
            .json()
            .await
            .context("the server's answer is not the expected JSON")
    }

    /// Sends `body` as JSON and decodes the JSON answer.
    pub async fn send_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let response = self.send(self.request(method, path).json(body)).await?;
        response
            .json()
            .await
            .context("the server's answer is not the expected JSON")
    }

    /// Sends a DELETE; any 2xx is success.
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.send(self.request(Method::DELETE, path)).await.map(drop)
    }
}

/// The server's answer if `err` is a non-2xx answer with this status.
pub fn failed_with(err: &anyhow::Error, status: u16) -> Option<&ApiFailure> {
    err.downcast_ref::<ApiFailure>().filter(|f| f.status == status)
}

/// `s` percent-encoded as one URL path segment.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
