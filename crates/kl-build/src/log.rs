//! The build log: one file per build that both our own progress lines and the tools' output
//! (pip, npm, go) are appended to, so a client can follow it while it grows. It also adds up
//! the CPU time of the build's steps, which the server meters (DESIGN §6).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// An append-only build log file, and the CPU time of the steps run so far.
#[derive(Debug)]
pub struct BuildLog {
    file: File,
    path: PathBuf,
    cpu_ns: AtomicU64,
}

impl BuildLog {
    pub fn create(path: &Path) -> std::io::Result<BuildLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(BuildLog {
            file,
            path: path.to_path_buf(),
            cpu_ns: AtomicU64::new(0),
        })
    }

    /// Appends one progress line (`==> …`). A log write failure must not fail the build.
    pub fn line(&self, text: &str) {
        let _ = (&self.file).write_all(format!("==> {text}\n").as_bytes());
    }

    /// Appends one line of a tool's output as it is (a cluster build's log).
    pub fn output(&self, text: &str) {
        let _ = (&self.file).write_all(format!("{text}\n").as_bytes());
    }

    /// Appends the command line a step runs (`$ …`).
    pub fn command(&self, shown: &str) {
        let _ = (&self.file).write_all(format!("$ {shown}\n").as_bytes());
    }

    /// A handle for a child process's stdout or stderr.
    pub fn stdio(&self) -> std::io::Result<Stdio> {
        Ok(Stdio::from(self.file.try_clone()?))
    }

    /// Counts a finished step's CPU time (for a build in a cluster: the CPU it was given for
    /// as long as it ran, since its actual use is not measured there).
    pub fn add_cpu(&self, cpu: Duration) {
        let ns = u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX);
        self.cpu_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// CPU time the build's steps used (each step's process and the children it waited
    /// for), whether the build succeeded or not.
    pub fn cpu(&self) -> Duration {
        Duration::from_nanos(self.cpu_ns.load(Ordering::Relaxed))
    }

    /// The last `lines` lines of the log, for error messages.
    pub fn tail(&self, lines: usize) -> String {
        let text = std::fs::read(&self.path).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}
