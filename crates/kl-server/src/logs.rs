//! Streaming log files over HTTP: the function log (`kl logs [-f]`) and a build log
//! (followed by `kl deploy` until the build ends).

use std::future::Future;
use std::io::SeekFrom;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use bytes::Bytes;
use kl_core::Action;
use kl_store::RevisionStatus;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// How often a followed file is checked for growth.
const POLL: Duration = Duration::from_millis(50);
/// Most bytes sent per chunk.
const CHUNK: usize = 64 << 10;

#[derive(Debug, Deserialize)]
pub(crate) struct LogQuery {
    #[serde(default)]
    follow: bool,
    /// Start with the last N lines (function logs); default 100.
    tail: Option<usize>,
}

/// `GET /v1/tenants/{t}/functions/{f}/logs?follow=&tail=`
pub(crate) async fn function_log(
    State(state): State<Arc<AppState>>,
    Path((tenant, function)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
    caller: Caller,
) -> Result<Response, ApiError> {
    state.authorize(&caller, Action::ReadLogs, Some(&tenant)).await?;
    state.store.function(&tenant, &function).await?;
    let path = state.layout.function_log(&tenant, &function);
    let start = tail_offset(&path, query.tail.unwrap_or(100)).await;
    let done: Done = if query.follow {
        Box::new(|| Box::pin(async { false }))
    } else {
        Box::new(|| Box::pin(async { true }))
    };
    Ok(stream_file(path, start, done))
}

/// `GET /v1/tenants/{t}/functions/{f}/revisions/{n}/log?follow=`: ends when the build does.
pub(crate) async fn build_log(
    State(state): State<Arc<AppState>>,
    Path((tenant, function, number)): Path<(String, String, i64)>,
    Query(query): Query<LogQuery>,
    caller: Caller,
) -> Result<Response, ApiError> {
    state.authorize(&caller, Action::ReadLogs, Some(&tenant)).await?;
    state.store.revision(&tenant, &function, number).await?;
    let path = state.layout.build_log(&tenant, &function, number);
    let follow = query.follow;
    let done: Done = Box::new(move || {
        let state = state.clone();
        let (tenant, function) = (tenant.clone(), function.clone());
        Box::pin(async move {
            !follow
                || state
                    .store
                    .revision(&tenant, &function, number)
                    .await
                    .map(|r| r.status != RevisionStatus::Building)
                    .unwrap_or(true)
        })
    });
    Ok(stream_file(path, 0, done))
}

/// Says, when the file has no new bytes, whether the stream should end.
type Done = Box<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// Byte offset of the last `lines` lines of a file (0 if shorter or missing).
async fn tail_offset(path: &std::path::Path, lines: usize) -> u64 {
    let Ok(bytes) = tokio::fs::read(path).await else {
        return 0;
    };
    if lines == 0 {
        return bytes.len() as u64;
    }
    let mut seen = 0;
    for (i, b) in bytes.iter().enumerate().rev() {
        if *b == b'\n' && i + 1 != bytes.len() {
            seen += 1;
            if seen == lines {
                return i as u64 + 1;
            }
        }
    }
    0
}

/// Streams `path` from `offset`, then follows its growth until `done` says so (checked only
/// when there is nothing new, so the last bytes are always sent first).
fn stream_file(path: PathBuf, offset: u64, done: Done) -> Response {
    let stream = futures_util::stream::unfold((offset, done, false), move |(mut offset, done, finished)| {
        let path = path.clone();
        async move {
            if finished {
                return None;
            }
            loop {
                match read_from(&path, offset).await {
                    Some(chunk) if !chunk.is_empty() => {
                        offset += chunk.len() as u64;
                        return Some((Ok::<Bytes, std::io::Error>(chunk), (offset, done, false)));
                    }
                    Some(_) if file_len(&path).await < offset => offset = 0,
                    _ => {
                        if done().await {
                            // One more read: bytes may have landed between the read and the check.
                            let last = read_from(&path, offset).await.unwrap_or_default();
                            return (!last.is_empty()).then(|| (Ok(last), (offset, done, true)));
                        }
                        tokio::time::sleep(POLL).await;
                    }
                }
            }
        }
    });
    Response::builder()
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(http::header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .expect("static response parts are valid")
}

async fn read_from(path: &std::path::Path, offset: u64) -> Option<Bytes> {
    let mut file = tokio::fs::File::open(path).await.ok()?;
    file.seek(SeekFrom::Start(offset)).await.ok()?;
    let mut buf = vec![0; CHUNK];
    let n = file.read(&mut buf).await.ok()?;
    buf.truncate(n);
    Some(Bytes::from(buf))
}

async fn file_len(path: &std::path::Path) -> u64 {
    tokio::fs::metadata(path).await.map(|m| m.len()).unwrap_or(0)
}
