//! Instance output: each stdout/stderr line is appended to the function's log with a
//! timestamp, revision and instance id, and the last lines are kept for error messages.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};

/// Lines kept in memory per instance.
const TAIL_LINES: usize = 20;
/// Longest line written; longer lines are cut (a function printing megabytes without a
/// newline must not exhaust memory).
const MAX_LINE: usize = 16 << 10;

/// The last lines an instance printed.
#[derive(Debug, Clone, Default)]
pub struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    fn push(&self, line: String) {
        let mut lines = self.0.lock().expect("tail lock");
        if lines.len() == TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The kept lines, oldest first.
    pub fn text(&self) -> String {
        self.0
            .lock()
            .expect("tail lock")
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Copies one stream of an instance into the log until it closes.
pub(crate) async fn pump(stream: impl AsyncRead + Unpin, log_path: PathBuf, prefix: String, tail: Tail) {
    let mut file = match tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .await
    {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(path = %log_path.display(), error = %e, "cannot open function log");
            return;
        }
    };
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&buf);
        let text = text.trim_end_matches(['\n', '\r']);
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let line = format!("{now} {prefix} {text}\n");
        // One write per line: O_APPEND keeps lines of concurrent instances whole.
        let _ = file.write_all(line.as_bytes()).await;
        tail.push(text.to_owned());
    }
}
