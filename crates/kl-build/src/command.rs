//! Running build tools: output to the build log, whole process group killed if the build is
//! cancelled or times out (pip and npm start children of their own).

use rustix::process::{Pid, Signal, kill_process_group};
use tokio::process::Command;

use crate::{BuildError, BuildLog};

/// Kills the process group of a running step when dropped before it finished.
struct GroupGuard(Option<Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = kill_process_group(pid, Signal::KILL);
        }
    }
}

/// Runs one build step to completion, its output appended to the log.
pub(crate) async fn run(step: &str, cmd: &mut Command, log: &BuildLog) -> Result<(), BuildError> {
    let shown = format!("{:?}", cmd.as_std()).replace('"', "");
    log.line(step);
    log.command(&shown);
    cmd.stdin(std::process::Stdio::null())
        .stdout(log.stdio()?)
        .stderr(log.stdio()?)
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| BuildError::Step {
        step: step.to_owned(),
        status: "could not start".into(),
        output: e.to_string(),
    })?;
    let mut guard = GroupGuard(child.id().and_then(|id| Pid::from_raw(id as i32)));
    let status = child.wait().await?;
    guard.0 = None;
    if status.success() {
        Ok(())
    } else {
        Err(BuildError::Step {
            step: step.to_owned(),
            status: status.to_string(),
            output: log.tail(30),
        })
    }
}

/// The first line a tool prints for a version query, or `None` if it is not installed.
pub(crate) async fn version(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().await.ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(if out.stdout.is_empty() {
        &out.stderr
    } else {
        &out.stdout
    })
    .into_owned();
    text.lines().next().map(|l| l.trim().to_owned())
}
