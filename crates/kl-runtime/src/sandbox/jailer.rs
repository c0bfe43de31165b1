//! Stage 1 of `kl __sandbox`, started by the runtime ahead of need, as a shell: dies with
//! the server (parent-death signal, and end of file on its stdin, the runtime's lifeline
//! pipe), creates the mount, pid, ipc, uts and network namespaces, starts stage 2
//! ([`super::init`]) as their first process (which waits for its function), passes
//! termination signals on, and exits with its status.
//!
//! It stays outside the instance's cgroup, so the instance's limits never hit it.

use std::os::fd::AsFd;
use std::process::{ExitStatus, Stdio};

use rustix::process::{Pid, Signal};
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{SignalKind, signal};

use super::spec::{SHELL_ENV, ShellSpec};
use super::sys::{self, Namespace};
use super::{EXIT_SETUP, INIT_STAGE, JAIL_COMMAND};

pub(crate) fn main() -> i32 {
    match setup() {
        Ok(json) => match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt.block_on(supervise(json)),
            Err(e) => fail(&format!("cannot start the jailer's event loop: {e}")),
        },
        Err(e) => fail(&e),
    }
}

/// The shell spec from the environment, as text (passed on to stage 2) and parsed.
pub(crate) fn shell_spec() -> Result<(String, ShellSpec), String> {
    let json = std::env::var(SHELL_ENV).map_err(|_| format!("{SHELL_ENV} is not set"))?;
    let shell = serde_json::from_str(&json).map_err(|e| format!("invalid {SHELL_ENV}: {e}"))?;
    Ok((json, shell))
}

pub(crate) fn fail(message: &str) -> i32 {
    eprintln!("kl-sandbox: {message}");
    EXIT_SETUP
}

fn setup() -> Result<String, String> {
    let (json, shell) = shell_spec()?;
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
        .map_err(|e| format!("cannot set the parent-death signal: {e}"))?;
    // The server may have died between our fork and the line above.
    let parent = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32);
    if parent != shell.server_pid {
        return Err("the server is gone".into());
    }
    sys::unshare(&[
        Namespace::Mount,
        Namespace::Pid,
        Namespace::Ipc,
        Namespace::Uts,
        Namespace::Net,
    ])
    .map_err(|e| format!("cannot create namespaces: {e}"))?;
    Ok(json)
}

async fn supervise(json: String) -> i32 {
    let spawned = tokio::process::Command::new("/proc/self/exe")
        .args([JAIL_COMMAND, INIT_STAGE])
        .env_clear()
        .env(SHELL_ENV, json)
        // Stage 2's lifeline: it exits when this end closes, i.e. when stage 1 is gone.
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut init = match spawned {
        Ok(child) => child,
        Err(e) => return fail(&format!("cannot start the sandbox's init: {e}")),
    };
    let _lifeline_to_init = init.stdin.take();
    let Some(pid) = init.id().and_then(|id| Pid::from_raw(id as i32)) else {
        return fail("the sandbox's init has no pid");
    };
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        let _ = rustix::process::kill_process(pid, Signal::KILL);
        return fail("cannot handle signals");
    };
    let mut server_gone = Box::pin(lifeline_closed());
    loop {
        tokio::select! {
            status = init.wait() => return match status {
                Ok(status) => exit_like(status),
                Err(e) => fail(&format!("cannot wait for the sandbox's init: {e}")),
            },
            _ = term.recv() => { let _ = rustix::process::kill_process(pid, Signal::TERM); }
            _ = int.recv() => { let _ = rustix::process::kill_process(pid, Signal::INT); }
            () = &mut server_gone => {
                let _ = rustix::process::kill_process(pid, Signal::KILL);
                let _ = init.wait().await;
                return 137;
            }
        }
    }
}

/// Resolves when the pipe on stdin reports end of file: its writer (the parent) is gone.
/// Never resolves when stdin is not a pipe.
pub(crate) async fn lifeline_closed() {
    let pipe = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .and_then(|fd| tokio::net::unix::pipe::Receiver::from_owned_fd(fd).ok());
    let Some(mut pipe) = pipe else {
        return std::future::pending().await;
    };
    let mut byte = [0u8; 1];
    loop {
        match pipe.read(&mut byte).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Exits as the sandbox did: same code, or, when it was killed by SIGKILL, killed the same
/// way (so the runtime reports `signal: 9`); other signals become `128 + n`.
fn exit_like(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return code;
    }
    let signal = status.signal().unwrap_or(0);
    if signal == Signal::KILL.as_raw() {
        let _ = rustix::process::kill_process(rustix::process::getpid(), Signal::KILL);
    }
    128 + signal
}
