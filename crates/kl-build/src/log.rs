//! The build log: one file per build that both our own progress lines and the tools' output
//! (pip, npm, go) are appended to, so a client can follow it while it grows.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// An append-only build log file.
#[derive(Debug)]
pub struct BuildLog {
    file: File,
    path: PathBuf,
}

impl BuildLog {
    pub fn create(path: &Path) -> std::io::Result<BuildLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(BuildLog {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Appends one progress line (`==> …`). A log write failure must not fail the build.
    pub fn line(&self, text: &str) {
        let _ = (&self.file).write_all(format!("==> {text}\n").as_bytes());
    }

    /// Appends the command line a step runs (`$ …`).
    pub fn command(&self, shown: &str) {
        let _ = (&self.file).write_all(format!("$ {shown}\n").as_bytes());
    }

    /// A handle for a child process's stdout or stderr.
    pub fn stdio(&self) -> std::io::Result<Stdio> {
        Ok(Stdio::from(self.file.try_clone()?))
    }

    /// The last `lines` lines of the log, for error messages.
    pub fn tail(&self, lines: usize) -> String {
        let text = std::fs::read(&self.path).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}
