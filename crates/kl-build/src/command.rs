//! Running build tools: output to the build log, whole process group killed if the build is
//! cancelled or times out (pip and npm start children of their own).

use std::time::Duration;

use rustix::process::{Pid, Signal, WaitId, WaitIdOptions, kill_process_group, waitid};
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
    // Build steps run the user's code (setup.py, npm scripts): never with the platform's key.
    cmd.env_remove(kl_core::secret::SECRETS_KEY_ENV)
        .stdin(std::process::Stdio::null())
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
    if let Some(pid) = guard.0
        && let Some(cpu) = exited_cpu(pid).await
    {
        log.add_cpu(cpu);
    }
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

/// Clock ticks per second of `/proc/*/stat` times: `USER_HZ`, fixed at 100 by the kernel ABI.
const USER_HZ: u64 = 100;

/// Waits for the step's process to exit without reaping it, and reads the CPU time of it and
/// of the children it waited for from `/proc` while it is a zombie (the kernel keeps the
/// figures until it is reaped, by `Child::wait` after this). Children it left running are not
/// counted. `None` when `/proc` cannot say.
async fn exited_cpu(pid: Pid) -> Option<Duration> {
    tokio::task::spawn_blocking(move || {
        waitid(WaitId::Pid(pid), WaitIdOptions::EXITED | WaitIdOptions::NOWAIT).ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero())).ok()?;
        stat_cpu(&stat)
    })
    .await
    .ok()
    .flatten()
}

/// utime + stime + cutime + cstime (fields 14 to 17) of a `/proc/PID/stat` line. The command
/// name (field 2) may hold spaces and parentheses, so fields count from its last `)`.
fn stat_cpu(stat: &str) -> Option<Duration> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields
        .get(11..15)?
        .iter()
        .map(|f| f.parse::<u64>().ok())
        .sum::<Option<u64>>()?;
    Some(Duration::from_millis(ticks * (1000 / USER_HZ)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_count_from_the_last_parenthesis() {
        let stat = "4242 (a (b) c) Z 1 4242 4242 0 -1 4194560 100 0 0 0 150 25 7 3 20 0 1 0 5 0 0";
        assert_eq!(stat_cpu(stat), Some(Duration::from_millis(1850)));
        assert_eq!(stat_cpu("garbage"), None);
    }

    #[tokio::test]
    async fn a_step_counts_its_cpu_and_its_waited_childrens() {
        let dir = tempfile::tempdir().unwrap();
        let log = BuildLog::create(&dir.path().join("build.log")).unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sh -c 'i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done'"]);
        run("spin", &mut cmd, &log).await.unwrap();
        let cpu = log.cpu();
        assert!(
            cpu >= Duration::from_millis(50),
            "a busy child's CPU time is counted: {cpu:?}"
        );
    }
}
