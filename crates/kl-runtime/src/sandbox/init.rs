//! Stage 2 of `kl __sandbox`: the first process of the sandbox's pid namespace. It sets the
//! host name and brings loopback up, then waits for its function's [`JailSpec`] on the spec
//! FIFO (this is where a shell made ahead waits). Then it joins the instance's cgroup, builds the file system and `pivot_root`s into it, brings loopback up,
//! gives up privileges (groups, rlimits, bounding set, `no_new_privs`, seccomp), starts the
//! function as the tenant's user, drops its own capabilities but `CAP_KILL` (to pass signals
//! on), then reaps orphans, forwards egress and exits with the function's status. When it
//! exits, the kernel kills whatever is left in the namespace.

use std::os::unix::process::CommandExt;
use std::process::Stdio;

use rustix::event::{PollFd, PollFlags};
use rustix::process::{Pid, Signal, WaitOptions};
use tokio::signal::unix::{SignalKind, signal};

use super::jailer::{fail, lifeline_closed, shell_spec};
use super::spec::{EGRESS_PATH, JailSpec, PROXY_ADDR};
use super::sys::{self, Namespace};
use super::{mounts, net, privileges, seccomp};

pub(crate) fn main() -> i32 {
    let (function, listener) = match setup() {
        Ok(started) => started,
        Err(e) => return fail(&e),
    };
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(serve(function, listener)),
        Err(e) => {
            let _ = rustix::process::kill_process(function, Signal::KILL);
            fail(&format!("cannot start the init's event loop: {e}"))
        }
    }
}

fn setup() -> Result<(Pid, Option<std::net::TcpListener>), String> {
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
        .map_err(|e| format!("cannot set the parent-death signal: {e}"))?;
    if stage1_gone() {
        return Err("the jailer is gone".into());
    }
    let (_, shell) = shell_spec()?;
    rustix::system::sethostname(shell.id.as_bytes()).map_err(|e| format!("sethostname: {e}"))?;
    net::loopback_up()?;
    let spec = wait_for_spec(&shell.spec_fifo)?;
    for dir in &spec.cgroups {
        let procs = dir.join("cgroup.procs");
        std::fs::write(&procs, "0").map_err(|e| format!("cannot join cgroup {}: {e}", dir.display()))?;
    }
    // Best effort (the probe reports it): hides the host's cgroup paths.
    let _ = sys::unshare(&[Namespace::Cgroup]);
    let steps = mounts::plan(&spec, mounts::host_kind)?;
    mounts::build(&spec, &steps)?;
    let listener = match &spec.egress_socket {
        Some(_) => Some(
            std::net::TcpListener::bind(PROXY_ADDR)
                .map_err(|e| format!("cannot listen on {PROXY_ADDR}: {e}"))?,
        ),
        None => None,
    };
    privileges::limit(&spec)?;
    privileges::lock_down()?;
    seccomp::install()?;
    let child = std::process::Command::new(&spec.program)
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .uid(spec.uid)
        .gid(spec.gid)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", spec.program.display()))?;
    let pid = Pid::from_raw(child.id() as i32).ok_or("the function has no pid")?;
    if let Err(e) = privileges::keep_only_kill() {
        let _ = rustix::process::kill_process(pid, Signal::KILL);
        return Err(e);
    }
    Ok((pid, listener))
}

/// Blocks until the runtime writes the function's spec, one JSON line, on `fifo`. The
/// runtime holds the FIFO open for reading and writing, so opening it does not block and end
/// of file means the runtime dropped this shell.
fn wait_for_spec(fifo: &std::path::Path) -> Result<JailSpec, String> {
    use std::io::BufRead;
    let file = std::fs::File::open(fifo).map_err(|e| format!("cannot open {}: {e}", fifo.display()))?;
    let mut line = String::new();
    std::io::BufReader::new(file)
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the spec: {e}"))?;
    if line.is_empty() {
        return Err("the runtime dropped this shell".into());
    }
    JailSpec::from_json(&line).map_err(|e| format!("invalid spec: {e}"))
}

/// Whether stage 1 (which holds the other end of our stdin) has already exited.
fn stage1_gone() -> bool {
    let stdin = std::io::stdin();
    let mut fds = [PollFd::new(&stdin, PollFlags::IN)];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
        && fds[0].revents().contains(PollFlags::HUP)
}

async fn serve(function: Pid, listener: Option<std::net::TcpListener>) -> i32 {
    let (Ok(mut children), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::child()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        let _ = rustix::process::kill_process(function, Signal::KILL);
        return fail("cannot handle signals");
    };
    if let Some(listener) = listener {
        let listener = listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(listener));
        match listener {
            Ok(listener) => {
                tokio::spawn(net::forward(listener, EGRESS_PATH.into()));
            }
            Err(e) => eprintln!("kl-sandbox: egress forwarder unavailable: {e}"),
        }
    }
    let mut stage1_gone = Box::pin(lifeline_closed());
    loop {
        // Reap every child that exited: the function, and orphans handed to us.
        while let Ok(Some((pid, status))) = rustix::process::wait(WaitOptions::NOHANG) {
            if pid == function {
                return match (status.exit_status(), status.terminating_signal()) {
                    (Some(code), _) => code,
                    (None, Some(signal)) => 128 + signal,
                    (None, None) => 128,
                };
            }
        }
        tokio::select! {
            _ = children.recv() => {}
            _ = term.recv() => { let _ = rustix::process::kill_process(function, Signal::TERM); }
            _ = int.recv() => { let _ = rustix::process::kill_process(function, Signal::INT); }
            () = &mut stage1_gone => return 137,
        }
    }
}
