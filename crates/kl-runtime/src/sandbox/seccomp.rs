//! The seccomp filter: every system call is allowed except the known ways out of a sandbox
//! (mounting, changing namespaces or root, tracing other processes, loading kernel code,
//! keyrings, raw file handles, ...), which fail with `EPERM`. `clone3` fails with `ENOSYS` (its
//! flags are behind a pointer the filter cannot read), so libc falls back to `clone`, whose
//! namespace flags the filter does check. Another architecture's system calls (32-bit
//! `int 0x80`, x32) kill the process.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch, sock_filter,
};

/// System calls denied outright.
const DENIED: &[(&str, i64)] = &[
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("open_tree", libc::SYS_open_tree),
    ("move_mount", libc::SYS_move_mount),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("acct", libc::SYS_acct),
    ("quotactl", libc::SYS_quotactl),
    ("quotactl_fd", libc::SYS_quotactl_fd),
    ("syslog", libc::SYS_syslog),
    ("vhangup", libc::SYS_vhangup),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    #[cfg(target_arch = "x86_64")]
    ("iopl", libc::SYS_iopl),
    #[cfg(target_arch = "x86_64")]
    ("ioperm", libc::SYS_ioperm),
    #[cfg(target_arch = "x86_64")]
    ("modify_ldt", libc::SYS_modify_ldt),
];

/// `clone` flags that create namespaces.
const NAMESPACE_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// Set on x32 system call numbers (x86_64 kernels with x32 support).
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The filters to install, in order: the deny list (`EPERM`), then `clone3` (`ENOSYS`).
pub(crate) fn filters() -> Result<Vec<BpfProgram>, String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| format!("seccomp: {e}"))?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = DENIED.iter().map(|(_, nr)| (*nr, Vec::new())).collect();
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|flag| {
            let cond =
                SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::MaskedEq(*flag), *flag)?;
            SeccompRule::new(vec![cond])
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("seccomp: {e}"))?;
    rules.insert(libc::SYS_clone, clone_rules);
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .and_then(BpfProgram::try_from)
    .map_err(|e| format!("seccomp: {e}"))?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .and_then(BpfProgram::try_from)
    .map_err(|e| format!("seccomp: {e}"))?;
    Ok(vec![with_x32_guard(deny), clone3])
}

/// Prepends a check that fails x32 system calls, whose numbers would otherwise slip past
/// the deny list (seccompiler compares numbers exactly). Jumps in the program are relative,
/// so prepending keeps them right.
#[cfg(target_arch = "x86_64")]
fn with_x32_guard(program: BpfProgram) -> BpfProgram {
    const LD_W_ABS: u16 = 0x20;
    const JMP_JSET_K: u16 = 0x45;
    const RET_K: u16 = 0x06;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    let mut guarded = vec![
        // A = seccomp_data.nr
        sock_filter {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        // if (A & X32_SYSCALL_BIT) goto deny else goto program
        sock_filter {
            code: JMP_JSET_K,
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        },
        sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
    ];
    guarded.extend(program);
    guarded
}

#[cfg(not(target_arch = "x86_64"))]
fn with_x32_guard(program: BpfProgram) -> BpfProgram {
    program
}

/// Installs the filters on the calling thread (inherited by the processes it starts).
/// Requires `no_new_privs` (or `CAP_SYS_ADMIN`).
pub(crate) fn install() -> Result<(), String> {
    for program in filters()? {
        seccompiler::apply_filter(&program).map_err(|e| format!("cannot install the seccomp filter: {e}"))?;
    }
    Ok(())
}

/// The names of the denied system calls, for the probe's report.
pub(crate) fn denied_names() -> impl Iterator<Item = &'static str> {
    DENIED.iter().map(|(name, _)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;

    /// A classic-BPF interpreter for the instructions seccompiler emits, run on a
    /// `seccomp_data` (nr, arch, instruction pointer, six arguments).
    fn run(program: &[sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
        let mut data = Vec::with_capacity(64);
        data.extend(nr.to_ne_bytes());
        data.extend(arch.to_ne_bytes());
        data.extend(0u64.to_ne_bytes());
        for arg in args {
            data.extend(arg.to_ne_bytes());
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let ins = &program[pc];
            pc += 1;
            match ins.code {
                0x20 => {
                    let at = ins.k as usize;
                    acc = u32::from_ne_bytes(data[at..at + 4].try_into().expect("4 bytes"));
                }
                0x54 => acc &= ins.k,
                0x05 => pc += ins.k as usize,
                0x06 => return ins.k,
                0x15 | 0x25 | 0x35 | 0x45 => {
                    let taken = match ins.code {
                        0x15 => acc == ins.k,
                        0x25 => acc > ins.k,
                        0x35 => acc >= ins.k,
                        _ => acc & ins.k != 0,
                    };
                    pc += usize::from(if taken { ins.jt } else { ins.jf });
                }
                other => panic!("instruction {other:#x} not modelled"),
            }
        }
    }

    /// The verdict of all filters, as the kernel combines them (most restrictive wins;
    /// ERRNO beats ALLOW).
    fn verdict(nr: i64, args: [u64; 6]) -> u32 {
        let arch = audit_arch();
        filters()
            .expect("filters")
            .iter()
            .map(|p| run(p, nr as u32, arch, args))
            .min_by_key(|ret| match ret & 0xffff_0000 {
                SECCOMP_RET_KILL_PROCESS => 0,
                SECCOMP_RET_ERRNO => 1,
                _ => 2,
            })
            .expect("at least one filter")
    }

    fn audit_arch() -> u32 {
        match std::env::consts::ARCH {
            "x86_64" => 0xc000_003e,
            "aarch64" => 0xc000_00b7,
            other => panic!("no audit arch for {other}"),
        }
    }

    fn errno(e: i32) -> u32 {
        SECCOMP_RET_ERRNO | e as u32
    }

    #[test]
    fn escapes_are_denied_with_eperm() {
        for (name, nr) in DENIED {
            assert_eq!(verdict(*nr, [0; 6]), errno(libc::EPERM), "{name}");
        }
    }

    #[test]
    fn ordinary_calls_are_allowed() {
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_openat,
            libc::SYS_mmap,
            libc::SYS_execve,
            libc::SYS_socket,
            libc::SYS_connect,
            libc::SYS_setuid,
        ] {
            assert_eq!(verdict(nr, [0; 6]), SECCOMP_RET_ALLOW, "syscall {nr}");
        }
    }

    #[test]
    fn clone_is_allowed_for_threads_and_forks_but_not_namespaces() {
        let thread = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        let fork = (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID | libc::SIGCHLD) as u64;
        assert_eq!(
            verdict(libc::SYS_clone, [thread, 0, 0, 0, 0, 0]),
            SECCOMP_RET_ALLOW
        );
        assert_eq!(verdict(libc::SYS_clone, [fork, 0, 0, 0, 0, 0]), SECCOMP_RET_ALLOW);
        for flag in NAMESPACE_FLAGS {
            assert_eq!(
                verdict(libc::SYS_clone, [fork | flag, 0, 0, 0, 0, 0]),
                errno(libc::EPERM),
                "clone with {flag:#x}"
            );
        }
    }

    #[test]
    fn clone3_falls_back_with_enosys() {
        assert_eq!(verdict(libc::SYS_clone3, [0; 6]), errno(libc::ENOSYS));
    }

    #[test]
    fn another_architecture_is_killed() {
        let program = &filters().expect("filters")[0];
        assert_eq!(
            run(program, libc::SYS_read as u32, 0x4000_0003, [0; 6]),
            SECCOMP_RET_KILL_PROCESS,
            "i386 system calls from a 64-bit process"
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_numbers_are_denied() {
        let nr = X32_SYSCALL_BIT | libc::SYS_read as u32;
        assert_eq!(
            run(&filters().expect("filters")[0], nr, audit_arch(), [0; 6]),
            errno(libc::EPERM)
        );
    }
}
