//! The sandbox's only `unsafe` code: `unshare(2)`, which rustix marks unsafe because of one
//! flag (`CLONE_FILES`) that this module never passes.

use rustix::thread::{UnshareFlags, unshare_unsafe};

/// The namespaces the sandbox can create. `CLONE_FILES` (the flag that makes `unshare`
/// unsafe: other threads could observe a file table they no longer share) is not among them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Namespace {
    Mount,
    Pid,
    Ipc,
    Uts,
    Net,
    Cgroup,
}

impl Namespace {
    /// Every namespace, in the order the probe reports them.
    pub(crate) const ALL: [Namespace; 6] = [
        Namespace::Pid,
        Namespace::Mount,
        Namespace::Ipc,
        Namespace::Uts,
        Namespace::Net,
        Namespace::Cgroup,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Namespace::Mount => "mount",
            Namespace::Pid => "pid",
            Namespace::Ipc => "ipc",
            Namespace::Uts => "uts",
            Namespace::Net => "net",
            Namespace::Cgroup => "cgroup",
        }
    }

    fn flag(self) -> UnshareFlags {
        match self {
            Namespace::Mount => UnshareFlags::NEWNS,
            Namespace::Pid => UnshareFlags::NEWPID,
            Namespace::Ipc => UnshareFlags::NEWIPC,
            Namespace::Uts => UnshareFlags::NEWUTS,
            Namespace::Net => UnshareFlags::NEWNET,
            Namespace::Cgroup => UnshareFlags::NEWCGROUP,
        }
    }
}

/// Moves the calling thread into new namespaces of the given kinds (for `Pid`: its future
/// children).
pub(crate) fn unshare(namespaces: &[Namespace]) -> std::io::Result<()> {
    let flags = namespaces
        .iter()
        .fold(UnshareFlags::empty(), |flags, ns| flags | ns.flag());
    // SAFETY: `flags` is built from `Namespace::flag` only, which never yields
    // `UnshareFlags::FILES`; namespace flags change what the thread sees of the system, not
    // the validity of any file descriptor or memory another thread holds.
    unsafe { unshare_unsafe(flags) }?;
    Ok(())
}
