//! Seccomp for containers: the runtime's default profile, and a compiler from the OCI
//! `linux.seccomp` section to a classic BPF program that the container's process installs
//! just before it becomes the container's user.
//!
//! The compiler takes the part of the OCI format that the default profile uses, and
//! refuses the rest by name instead of passing over it. It accepts `ALLOW`, `ERRNO` and
//! `KILL*` actions, rules by syscall name, and argument checks with `SCMP_CMP_EQ` and
//! `SCMP_CMP_MASKED_EQ`. Rules are tried in order and the first whose syscall and
//! arguments all match decides; otherwise the default action applies. Syscalls of a
//! foreign architecture (32-bit x86 on x86_64, x32) fail with ENOSYS, so that a profile
//! cannot be bypassed through another syscall table.
//!
//! The profile is written by hand rather than with libseccomp because podinit is a static
//! binary that has to stay small, and the programs it needs are short.

use std::collections::HashSet;
use std::io;

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("linux.seccomp: {0}")]
    Unsupported(String),
    #[error("linux.seccomp: the filter has {0} instructions; the kernel takes at most 4096")]
    TooLong(usize),
}

/// One classic BPF instruction, laid out as the kernel's `struct sock_filter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

/// A compiled filter, ready to install without allocating (the child that installs it
/// runs between fork and exec).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter(Vec<Insn>);

impl Filter {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Installs the filter on the calling thread. Needs no_new_privs or CAP_SYS_ADMIN.
    pub fn install(&self) -> io::Result<()> {
        let len =
            u16::try_from(self.0.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let prog = libc::sock_fprog {
            len,
            // `Insn` is `#[repr(C)]` with the fields of `sock_filter` in its order; the
            // kernel copies the program and never writes through the pointer.
            filter: self.0.as_ptr().cast::<libc::sock_filter>().cast_mut(),
        };
        // SAFETY: `prog` points at `len` valid instructions that live until the call returns.
        let r = unsafe {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                std::ptr::from_ref(&prog),
                0,
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: Option<Arch> = Some(Arch::ScmpArchX86_64);
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: Option<Arch> = Some(Arch::ScmpArchAarch64);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const NATIVE_ARCH: Option<Arch> = None;

/// Set in the syscall number of an x32 call on x86_64.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const BPF_MAXINSNS: usize = 4096;
/// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARGS: u32 = 16;

const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code, jt, jf, k }
}

fn ret(action: LinuxSeccompAction, errno: Option<u32>) -> Result<Insn, SeccompError> {
    use LinuxSeccompAction::*;
    // The errno travels in the low 16 bits of the return value (SECCOMP_RET_DATA).
    if let Some(e) = errno.filter(|&e| e > 0xffff) {
        return Err(SeccompError::Unsupported(format!(
            "errnoRet {e} is out of range"
        )));
    }
    match action {
        ScmpActAllow | ScmpActErrno | ScmpActKill | ScmpActKillThread | ScmpActKillProcess => Ok(
            stmt(RET_K, action.as_u32(errno.or(Some(libc::EPERM as u32)))),
        ),
        other => Err(SeccompError::Unsupported(format!(
            "action {other} is not supported"
        ))),
    }
}

/// Compiles `profile` for this machine's architecture.
pub fn compile(profile: &LinuxSeccomp) -> Result<Filter, SeccompError> {
    let native = NATIVE_ARCH.ok_or_else(|| {
        SeccompError::Unsupported("seccomp filters are not built for this architecture".into())
    })?;
    if let Some(flags) = profile.flags().as_ref().filter(|f| !f.is_empty()) {
        return Err(SeccompError::Unsupported(format!(
            "flags {flags:?} are not supported"
        )));
    }
    if profile.listener_path().is_some() {
        return Err(SeccompError::Unsupported(
            "a listener (SCMP_ACT_NOTIFY) is not supported".into(),
        ));
    }
    if let Some(arches) = profile.architectures().as_ref().filter(|a| !a.is_empty())
        && !arches
            .iter()
            .any(|a| *a == native || *a == Arch::ScmpArchNative)
    {
        return Err(SeccompError::Unsupported(format!(
            "architectures {arches:?} do not include this machine's {native:?}"
        )));
    }
    let default = ret(profile.default_action(), profile.default_errno_ret())?;
    let enosys = stmt(
        RET_K,
        LinuxSeccompAction::ScmpActErrno.as_u32(Some(libc::ENOSYS as u32)),
    );

    let mut prog = vec![
        stmt(LD_ABS, DATA_ARCH),
        jump(JEQ_K, native as u32, 1, 0),
        enosys,
        stmt(LD_ABS, DATA_NR),
    ];
    if native == Arch::ScmpArchX86_64 {
        prog.push(jump(JSET_K, X32_SYSCALL_BIT, 0, 1));
        prog.push(enosys);
    }
    for rule in profile.syscalls().iter().flatten() {
        let action = ret(rule.action(), rule.errno_ret())?;
        if action == default && rule.args().as_ref().is_none_or(|a| a.is_empty()) {
            continue; // changes nothing
        }
        for name in rule.names() {
            let Some(nr) = syscall_number(name)? else {
                continue; // not a syscall of this architecture, as libseccomp ignores it
            };
            prog.extend(rule_block(
                nr,
                rule.args().as_deref().unwrap_or(&[]),
                action,
            )?);
        }
    }
    prog.push(default);
    if prog.len() > BPF_MAXINSNS {
        return Err(SeccompError::TooLong(prog.len()));
    }
    Ok(Filter(prog))
}

/// `nr` with all of `args` matching returns `action`; anything else falls through to the
/// instruction after the block.
fn rule_block(nr: u32, args: &[LinuxSeccompArg], action: Insn) -> Result<Vec<Insn>, SeccompError> {
    // Jumps are filled in once the block's length is known; `u8::MAX` marks "to the end".
    let mut block = vec![stmt(LD_ABS, DATA_NR), jump(JEQ_K, nr, 0, u8::MAX)];
    for arg in args {
        if arg.index() > 5 {
            return Err(SeccompError::Unsupported(format!(
                "argument index {} (a syscall has 6)",
                arg.index()
            )));
        }
        let (mask, want) = match arg.op() {
            LinuxSeccompOperator::ScmpCmpEq => (u64::MAX, arg.value()),
            LinuxSeccompOperator::ScmpCmpMaskedEq => (arg.value(), arg.value_two().unwrap_or(0)),
            other => {
                return Err(SeccompError::Unsupported(format!(
                    "argument operator {other} is not supported"
                )));
            }
        };
        let offset = DATA_ARGS + 8 * arg.index() as u32;
        // seccomp_data holds the arguments as native-endian u64: low word first here.
        for (word_offset, mask, want) in [
            (offset, mask as u32, want as u32),
            (offset + 4, (mask >> 32) as u32, (want >> 32) as u32),
        ] {
            block.push(stmt(LD_ABS, word_offset));
            if mask != u32::MAX {
                block.push(stmt(AND_K, mask));
            }
            block.push(jump(JEQ_K, want, 0, u8::MAX));
        }
    }
    block.push(action);
    let len = block.len();
    for (pos, insn) in block.iter_mut().enumerate() {
        if insn.code == JEQ_K && insn.jf == u8::MAX {
            // A jump goes to pc + 1 + offset; the end is `len`.
            insn.jf = u8::try_from(len - pos - 1).map_err(|_| {
                SeccompError::Unsupported("a rule with too many argument checks".into())
            })?;
        }
    }
    Ok(block)
}

macro_rules! syscall_table {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), libc::$name as u32)),*]
    };
}

/// Syscalls that the generic (aarch64) table and x86_64 both have.
const COMMON: &[(&str, u32)] = syscall_table![
    SYS_acct,
    SYS_add_key,
    SYS_bpf,
    SYS_clock_adjtime,
    SYS_clock_settime,
    SYS_clone,
    SYS_clone3,
    SYS_delete_module,
    SYS_finit_module,
    SYS_fsconfig,
    SYS_fsmount,
    SYS_fsopen,
    SYS_fspick,
    SYS_init_module,
    SYS_io_uring_enter,
    SYS_io_uring_register,
    SYS_io_uring_setup,
    SYS_kcmp,
    SYS_kexec_file_load,
    SYS_kexec_load,
    SYS_keyctl,
    SYS_lookup_dcookie,
    SYS_mount,
    SYS_mount_setattr,
    SYS_move_mount,
    SYS_name_to_handle_at,
    SYS_open_by_handle_at,
    SYS_open_tree,
    SYS_perf_event_open,
    SYS_pivot_root,
    SYS_process_vm_readv,
    SYS_process_vm_writev,
    SYS_ptrace,
    SYS_quotactl,
    SYS_reboot,
    SYS_request_key,
    SYS_setns,
    SYS_settimeofday,
    SYS_swapoff,
    SYS_swapon,
    SYS_syslog,
    SYS_umount2,
    SYS_unshare,
    SYS_userfaultfd,
];

#[cfg(target_arch = "x86_64")]
const ARCH_ONLY: &[(&str, u32)] = syscall_table![
    SYS_ioperm,
    SYS_iopl,
    SYS_nfsservctl,
    SYS_uselib,
    SYS_ustat,
    SYS__sysctl,
];
#[cfg(not(target_arch = "x86_64"))]
const ARCH_ONLY: &[(&str, u32)] = &[];

/// Names of syscalls that some architecture does not have (create_module,
/// get_kernel_syms and query_module have answered ENOSYS everywhere since Linux 2.6).
const X86_64_NAMES: &[&str] = &[
    "create_module",
    "get_kernel_syms",
    "ioperm",
    "iopl",
    "nfsservctl",
    "query_module",
    "uselib",
    "ustat",
    "_sysctl",
];

/// `Ok(None)` for a syscall this architecture does not have; an error for a name podinit
/// does not know, so that a profile is never applied with rules silently missing.
fn syscall_number(name: &str) -> Result<Option<u32>, SeccompError> {
    let found = COMMON
        .iter()
        .chain(ARCH_ONLY)
        .find(|(sys, _)| sys.strip_prefix("SYS_") == Some(name))
        .map(|&(_, nr)| nr);
    match found {
        Some(nr) => Ok(Some(nr)),
        None if X86_64_NAMES.contains(&name) => Ok(None),
        None => Err(SeccompError::Unsupported(format!(
            "syscall {name:?} is not known to podinit"
        ))),
    }
}

/// Namespace flags of clone(2) that need CAP_SYS_ADMIN in containerd's default profile.
const CLONE_NAMESPACE_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

/// The runtime's default profile (what `RuntimeDefault` asks for) for a container with
/// `caps`: everything is allowed but the syscalls that containerd's and Docker's default
/// profiles keep from a container, each unless the capability that lets a process use it
/// was granted. Denied calls fail with EPERM; clone3 fails with ENOSYS so that libc falls
/// back to clone, whose namespace flags are then checked.
pub fn runtime_default(caps: &HashSet<Capability>) -> Result<LinuxSeccomp, SeccompError> {
    use Capability as C;
    let has = |c: C| caps.contains(&c);
    let admin = has(C::SysAdmin);
    let denied: [(&[&str], bool); 12] = [
        (
            &[
                "mount",
                "umount2",
                "pivot_root",
                "setns",
                "unshare",
                "fsconfig",
                "fsmount",
                "fsopen",
                "fspick",
                "move_mount",
                "open_tree",
                "mount_setattr",
                "quotactl",
                "lookup_dcookie",
                "swapon",
                "swapoff",
                "nfsservctl",
                "name_to_handle_at",
                "open_by_handle_at",
                "_sysctl",
                "ustat",
                "uselib",
            ],
            admin,
        ),
        (&["add_key", "keyctl", "request_key"], false),
        (
            &[
                "userfaultfd",
                "io_uring_setup",
                "io_uring_enter",
                "io_uring_register",
            ],
            false,
        ),
        (&["bpf"], admin || has(C::Bpf)),
        (&["perf_event_open"], admin || has(C::Perfmon)),
        (
            &["clock_adjtime", "clock_settime", "settimeofday"],
            has(C::SysTime),
        ),
        (
            &[
                "init_module",
                "finit_module",
                "delete_module",
                "create_module",
                "get_kernel_syms",
                "query_module",
            ],
            has(C::SysModule),
        ),
        (
            &["kexec_load", "kexec_file_load", "reboot"],
            has(C::SysBoot),
        ),
        (&["acct"], has(C::SysPacct)),
        (&["syslog"], admin || has(C::Syslog)),
        // ptrace and process_vm_* are allowed, as containerd does on kernels from 4.8 on.
        (&["kcmp"], has(C::SysPtrace)),
        (&["iopl", "ioperm"], has(C::SysRawio)),
    ];
    let mut rules: Vec<LinuxSyscall> = denied
        .iter()
        .filter(|(_, granted)| !granted)
        .map(|(names, _)| syscall(names, libc::EPERM, Vec::new()))
        .collect();
    if !admin {
        rules.push(syscall(&["clone3"], libc::ENOSYS, Vec::new()));
        for flag in CLONE_NAMESPACE_FLAGS {
            let arg = seccomp_arg(0, LinuxSeccompOperator::ScmpCmpMaskedEq, flag, flag)?;
            rules.push(syscall(&["clone"], libc::EPERM, vec![arg]));
        }
    }
    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActAllow);
    profile.set_architectures(NATIVE_ARCH.map(|a| vec![a]));
    profile.set_syscalls(Some(rules));
    Ok(profile)
}

fn seccomp_arg(
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: u64,
) -> Result<LinuxSeccompArg, SeccompError> {
    LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value)
        .value_two(value_two)
        .build()
        .map_err(|e| SeccompError::Unsupported(e.to_string()))
}

fn syscall(names: &[&str], errno: i32, args: Vec<LinuxSeccompArg>) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(names.iter().map(|n| n.to_string()).collect());
    s.set_action(LinuxSeccompAction::ScmpActErrno);
    s.set_errno_ret(u32::try_from(errno).ok());
    if !args.is_empty() {
        s.set_args(Some(args));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` in a forked child that installs `filter` first; returns the child's exit code.
    /// The child only makes raw syscalls: the test binary is multi-threaded.
    fn in_filtered_child(filter: &Filter, f: fn() -> i32) -> i32 {
        // SAFETY: the child makes only async-signal-safe calls before _exit.
        match unsafe { libc::fork() } {
            0 => {
                // SAFETY: prctl with integer arguments.
                unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
                let code = if filter.install().is_ok() { f() } else { 100 };
                // SAFETY: ends the child without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            pid if pid > 0 => {
                let mut status = 0;
                // SAFETY: waits for our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                assert!(libc::WIFEXITED(status), "child status {status:#x}");
                libc::WEXITSTATUS(status)
            }
            _ => panic!("fork: {}", io::Error::last_os_error()),
        }
    }

    fn errno() -> i32 {
        io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    #[test]
    fn the_default_profile_compiles_and_denies_what_it_names() {
        let filter = compile(&runtime_default(&HashSet::new()).unwrap()).unwrap();
        assert!(filter.len() > 40 && filter.len() < 400, "{}", filter.len());
        // unshare(CLONE_NEWUSER) needs no capability, so only the filter can refuse it.
        let code = in_filtered_child(&filter, || {
            // SAFETY: raw syscalls with integer arguments.
            unsafe {
                if libc::unshare(libc::CLONE_NEWUSER) == 0 {
                    return 1;
                }
                if errno() != libc::EPERM {
                    return 2;
                }
                if libc::syscall(libc::SYS_clone3, 0, 0) != -1 || errno() != libc::ENOSYS {
                    return 3;
                }
                if libc::getpid() <= 0 {
                    return 4;
                }
            }
            0
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn clone_is_checked_by_its_flags() {
        let filter = compile(&runtime_default(&HashSet::new()).unwrap()).unwrap();
        let code = in_filtered_child(&filter, || {
            // A clone with CLONE_NEWUSER is refused before it creates anything; a plain
            // fork-like clone goes through (the child exits at once).
            // SAFETY: raw clone syscalls; the child of the second one only calls _exit.
            unsafe {
                let flags = libc::CLONE_NEWUSER as libc::c_long | libc::SIGCHLD as libc::c_long;
                if libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) != -1 || errno() != libc::EPERM
                {
                    return 1;
                }
                match libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0) {
                    0 => libc::_exit(0),
                    pid if pid > 0 => {
                        let mut status = 0;
                        libc::waitpid(pid as libc::pid_t, &mut status, 0);
                    }
                    _ => return 2,
                }
            }
            0
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn granted_capabilities_lift_their_denials() {
        let caps: HashSet<Capability> = [Capability::SysAdmin].into();
        let filter = compile(&runtime_default(&caps).unwrap()).unwrap();
        let code = in_filtered_child(&filter, || {
            // SAFETY: unshare with an integer argument.
            if unsafe { libc::unshare(libc::CLONE_NEWUSER) } == 0 {
                0
            } else {
                1
            }
        });
        assert_eq!(code, 0);
        let names: Vec<String> = runtime_default(&caps)
            .unwrap()
            .syscalls()
            .iter()
            .flatten()
            .flat_map(|s| s.names().clone())
            .collect();
        assert!(!names.contains(&"mount".to_string()));
        assert!(names.contains(&"keyctl".to_string()));
    }

    #[test]
    fn what_is_not_supported_is_refused_by_name() {
        let mut p = runtime_default(&HashSet::new()).unwrap();
        p.set_default_action(LinuxSeccompAction::ScmpActTrace);
        assert!(
            compile(&p)
                .unwrap_err()
                .to_string()
                .contains("SCMP_ACT_TRACE")
        );

        let mut p = runtime_default(&HashSet::new()).unwrap();
        p.set_syscalls(Some(vec![syscall(
            &["frobnicate"],
            libc::EPERM,
            Vec::new(),
        )]));
        assert!(compile(&p).unwrap_err().to_string().contains("frobnicate"));

        let mut p = runtime_default(&HashSet::new()).unwrap();
        let arg = seccomp_arg(0, LinuxSeccompOperator::ScmpCmpGt, 1, 0).unwrap();
        p.set_syscalls(Some(vec![syscall(&["mount"], libc::EPERM, vec![arg])]));
        assert!(compile(&p).unwrap_err().to_string().contains("SCMP_CMP_GT"));

        let mut p = runtime_default(&HashSet::new()).unwrap();
        let mut rule = syscall(&["mount"], libc::EPERM, Vec::new());
        rule.set_errno_ret(Some(70_000));
        p.set_syscalls(Some(vec![rule]));
        assert!(compile(&p).unwrap_err().to_string().contains("70000"));

        let mut p = runtime_default(&HashSet::new()).unwrap();
        p.set_architectures(Some(vec![Arch::ScmpArchS390x]));
        assert!(compile(&p).is_err());
    }

    #[test]
    fn jumps_land_inside_the_program() {
        let filter = compile(&runtime_default(&HashSet::new()).unwrap()).unwrap();
        for (pc, insn) in filter.0.iter().enumerate() {
            if insn.code & 0x07 == libc::BPF_JMP as u16 {
                assert!(pc + 1 + (insn.jt as usize) < filter.len());
                assert!(pc + 1 + (insn.jf as usize) < filter.len());
            }
        }
        assert_eq!(filter.0.last().map(|i| i.code), Some(RET_K));
    }
}
