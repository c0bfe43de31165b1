//! Giving up privileges before the function starts: supplementary groups, resource limits,
//! the capability bounding set, `no_new_privs`; and, once the function runs, the jailer's own
//! capabilities.

use rustix::process::{Resource, Rlimit};
use rustix::thread::{CapabilitySet, CapabilitySets};

use super::spec::JailSpec;

/// Highest capability number this code knows of; the kernel's own figure is read at run time.
const FALLBACK_LAST_CAP: u32 = 40;

/// The rlimits set for the function, as (resource, soft = hard limit).
pub(crate) fn rlimits(spec: &JailSpec) -> Vec<(Resource, u64)> {
    vec![
        (Resource::Nofile, spec.nofile),
        (Resource::Core, 0),
        (Resource::Fsize, spec.file_size_bytes),
        // Locked memory is charged outside the cgroup's reclaim; keep the usual default.
        (Resource::Memlock, 64 << 10),
    ]
}

/// Clears supplementary groups and applies the rlimits (the process is single-threaded here,
/// so the per-thread `setgroups` covers it).
pub(crate) fn limit(spec: &JailSpec) -> Result<(), String> {
    rustix::thread::set_thread_groups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    for (resource, value) in rlimits(spec) {
        let limit = Rlimit {
            current: Some(value),
            maximum: Some(value),
        };
        rustix::process::setrlimit(resource, limit).map_err(|e| format!("setrlimit {resource:?}: {e}"))?;
    }
    Ok(())
}

/// Empties the capability bounding set (so nothing executed later can regain a capability)
/// and sets `no_new_privs` (no set-uid or file-capability gain, required for seccomp).
pub(crate) fn lock_down() -> Result<(), String> {
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(FALLBACK_LAST_CAP);
    for cap in 0..=last.min(63) {
        let capability = CapabilitySet::from_bits_retain(1 << cap);
        match rustix::thread::remove_capability_from_bounding_set(capability) {
            Ok(()) => {}
            // Not a capability this kernel has.
            Err(rustix::io::Errno::INVAL) => {}
            Err(e) => return Err(format!("cannot drop capability {cap} from the bounding set: {e}")),
        }
    }
    rustix::thread::set_no_new_privs(true).map_err(|e| format!("no_new_privs: {e}"))?;
    Ok(())
}

/// Drops every capability of the calling thread (the sandbox's init, once the function runs)
/// but `CAP_KILL`, which it needs to pass signals on to the function (another user); in its
/// pid namespace it can only reach the function's processes.
pub(crate) fn keep_only_kill() -> Result<(), String> {
    let kill = CapabilitySets {
        effective: CapabilitySet::KILL,
        permitted: CapabilitySet::KILL,
        inheritable: CapabilitySet::empty(),
    };
    rustix::thread::set_capabilities(None, kill)
        .map_err(|e| format!("cannot drop the init's capabilities: {e}"))
}
