//! Seccomp for containers: the runtime's default profile, and a compiler from the OCI
//! `linux.seccomp` section to a classic BPF program that the container's process installs
//! just before it becomes the container's user.
//!
//! The compiler takes the OCI format as runc applies it with libseccomp: every action but
//! `SCMP_ACT_NOTIFY` (there is no seccomp agent), rules by syscall name, and argument checks
//! with all seven `SCMP_CMP_*` operators on the full 64-bit value. A rule's argument checks
//! must all hold, except that checks repeating an argument index make one rule each (runc's
//! rule). When several rules match a call, the most restrictive action wins, as in libseccomp
//! (kill, trap, errno, trace, log, allow); otherwise the default action applies. Names this
//! architecture has no syscall for are passed over, as runc does, so that one profile serves
//! every architecture. Syscalls of a foreign architecture (32-bit x86 on x86_64, x32) fail
//! with ENOSYS, so that a profile cannot be bypassed through another syscall table; a profile
//! whose `architectures` leave out this machine's is refused.
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
const JGT_K: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
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
        ScmpActAllow | ScmpActErrno | ScmpActKill | ScmpActKillThread | ScmpActKillProcess
        | ScmpActTrap | ScmpActTrace | ScmpActLog => Ok(stmt(
            RET_K,
            action.as_u32(errno.or(Some(libc::EPERM as u32))),
        )),
        ScmpActNotify => Err(SeccompError::Unsupported(
            "action SCMP_ACT_NOTIFY is not supported (there is no seccomp agent)".into(),
        )),
    }
}

/// libseccomp's precedence: when several rules match, the first of these wins.
fn precedence(action: LinuxSeccompAction) -> u8 {
    use LinuxSeccompAction::*;
    match action {
        ScmpActKillProcess => 0,
        ScmpActKill | ScmpActKillThread => 1,
        ScmpActTrap => 2,
        ScmpActErrno => 3,
        ScmpActNotify => 4,
        ScmpActTrace => 5,
        ScmpActLog => 6,
        ScmpActAllow => 7,
    }
}

/// One compiled rule: syscall `nr` with all of `conds` holding returns `action`.
struct Rule<'a> {
    precedence: u8,
    nr: u32,
    conds: Vec<&'a LinuxSeccompArg>,
    action: Insn,
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

    let mut rules: Vec<Rule<'_>> = Vec::new();
    for rule in profile.syscalls().iter().flatten() {
        let action = ret(rule.action(), rule.errno_ret())?;
        let args: &[LinuxSeccompArg] = rule.args().as_deref().unwrap_or(&[]);
        for arg in args {
            check_arg(arg)?;
        }
        // runc: checks of distinct arguments make one rule; a repeated index, a rule each.
        let mut indices: Vec<usize> = args.iter().map(|a| a.index()).collect();
        indices.sort_unstable();
        let repeated = indices.windows(2).any(|w| w[0] == w[1]);
        let groups: Vec<Vec<&LinuxSeccompArg>> = if repeated {
            args.iter().map(|a| vec![a]).collect()
        } else {
            vec![args.iter().collect()]
        };
        for name in rule.names() {
            let Some(nr) = crate::syscalls::lookup(name) else {
                continue; // not a syscall of this architecture, as runc passes over it
            };
            for conds in &groups {
                rules.push(Rule {
                    precedence: precedence(rule.action()),
                    nr,
                    conds: conds.clone(),
                    action,
                });
            }
        }
        if prog_len_bound(&rules) > BPF_MAXINSNS {
            return Err(SeccompError::TooLong(prog_len_bound(&rules)));
        }
    }
    rules.sort_by_key(|r| r.precedence);

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
    // Whether the accumulator holds the syscall number (argument checks load other words).
    let mut a_is_nr = true;
    for rule in &rules {
        prog.extend(rule_block(rule, a_is_nr)?);
        a_is_nr = rule.conds.is_empty();
    }
    prog.push(default);
    if prog.len() > BPF_MAXINSNS {
        return Err(SeccompError::TooLong(prog.len()));
    }
    Ok(Filter(prog))
}

/// An upper bound of the program's length, to stop a huge profile early.
fn prog_len_bound(rules: &[Rule<'_>]) -> usize {
    8 + rules.iter().map(|r| 3 + 6 * r.conds.len()).sum::<usize>()
}

fn check_arg(arg: &LinuxSeccompArg) -> Result<(), SeccompError> {
    if arg.index() > 5 {
        return Err(SeccompError::Unsupported(format!(
            "argument index {} (a syscall has 6)",
            arg.index()
        )));
    }
    Ok(())
}

/// Jump offset meaning "to the end of the block" (the rule does not apply), fixed up once
/// the block's length is known.
const TO_END: u8 = u8::MAX;

/// The rule's syscall with all its conditions holding returns its action; anything else
/// falls through to the instruction after the block.
fn rule_block(rule: &Rule<'_>, a_is_nr: bool) -> Result<Vec<Insn>, SeccompError> {
    let mut block = Vec::new();
    if !a_is_nr {
        block.push(stmt(LD_ABS, DATA_NR));
    }
    block.push(jump(JEQ_K, rule.nr, 0, TO_END));
    for arg in &rule.conds {
        block.extend(arg_check(arg));
    }
    block.push(rule.action);
    let len = block.len();
    for (pos, insn) in block.iter_mut().enumerate() {
        if insn.code & 0x07 != libc::BPF_JMP as u16 {
            continue;
        }
        // A jump goes to pc + 1 + offset; the end is `len`.
        let to_end = u8::try_from(len - pos - 1).map_err(|_| {
            SeccompError::Unsupported("a rule with too many argument checks".into())
        })?;
        if insn.jt == TO_END {
            insn.jt = to_end;
        }
        if insn.jf == TO_END {
            insn.jf = to_end;
        }
    }
    Ok(block)
}

/// Code that falls through when the 64-bit argument satisfies the check, and jumps
/// [`TO_END`] when it does not. seccomp_data holds the arguments as native-endian u64s:
/// the low word first on the little-endian machines podinit builds for.
fn arg_check(arg: &LinuxSeccompArg) -> Vec<Insn> {
    let lo_at = DATA_ARGS + 8 * arg.index() as u32;
    let hi_at = lo_at + 4;
    let split = |v: u64| ((v >> 32) as u32, v as u32);
    let (hi, lo) = split(arg.value());
    let ld_hi = stmt(LD_ABS, hi_at);
    let ld_lo = stmt(LD_ABS, lo_at);
    use LinuxSeccompOperator::*;
    match arg.op() {
        ScmpCmpEq => vec![
            ld_hi,
            jump(JEQ_K, hi, 0, TO_END),
            ld_lo,
            jump(JEQ_K, lo, 0, TO_END),
        ],
        ScmpCmpMaskedEq => {
            let (mask_hi, mask_lo) = split(arg.value());
            let (want_hi, want_lo) = split(arg.value_two().unwrap_or(0));
            vec![
                ld_hi,
                stmt(AND_K, mask_hi),
                jump(JEQ_K, want_hi, 0, TO_END),
                ld_lo,
                stmt(AND_K, mask_lo),
                jump(JEQ_K, want_lo, 0, TO_END),
            ]
        }
        // Different high words: holds; same: the low words must differ.
        ScmpCmpNe => vec![
            ld_hi,
            jump(JEQ_K, hi, 0, 2),
            ld_lo,
            jump(JEQ_K, lo, TO_END, 0),
        ],
        // hi > v_hi holds; hi < v_hi fails; equal high words compare the low ones.
        ScmpCmpGt | ScmpCmpGe => vec![
            ld_hi,
            jump(JGT_K, hi, 3, 0),
            jump(JEQ_K, hi, 0, TO_END),
            ld_lo,
            if arg.op() == ScmpCmpGt {
                jump(JGT_K, lo, 0, TO_END)
            } else {
                jump(JGE_K, lo, 0, TO_END)
            },
        ],
        // hi < v_hi holds; hi > v_hi fails; equal high words compare the low ones.
        ScmpCmpLt | ScmpCmpLe => vec![
            ld_hi,
            jump(JGE_K, hi, 0, 3),
            jump(JEQ_K, hi, 0, TO_END),
            ld_lo,
            if arg.op() == ScmpCmpLt {
                jump(JGE_K, lo, TO_END, 0)
            } else {
                jump(JGT_K, lo, TO_END, 0)
            },
        ],
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
        p.set_default_action(LinuxSeccompAction::ScmpActNotify);
        assert!(
            compile(&p)
                .unwrap_err()
                .to_string()
                .contains("SCMP_ACT_NOTIFY")
        );

        let mut p = runtime_default(&HashSet::new()).unwrap();
        let mut rule = syscall(&["mount"], libc::EPERM, Vec::new());
        rule.set_errno_ret(Some(70_000));
        p.set_syscalls(Some(vec![rule]));
        assert!(compile(&p).unwrap_err().to_string().contains("70000"));

        let mut p = runtime_default(&HashSet::new()).unwrap();
        let arg = seccomp_arg(6, LinuxSeccompOperator::ScmpCmpEq, 1, 0).unwrap();
        p.set_syscalls(Some(vec![syscall(&["mount"], libc::EPERM, vec![arg])]));
        assert!(compile(&p).unwrap_err().to_string().contains("index 6"));

        let mut p = runtime_default(&HashSet::new()).unwrap();
        p.set_architectures(Some(vec![Arch::ScmpArchS390x]));
        assert!(compile(&p).is_err());
    }

    #[test]
    fn names_of_other_architectures_are_passed_over() {
        let mut p = LinuxSeccomp::default();
        p.set_default_action(LinuxSeccompAction::ScmpActAllow);
        p.set_syscalls(Some(vec![syscall(
            &["frobnicate", "arm_fadvise64_64", "chmod"],
            libc::EPERM,
            Vec::new(),
        )]));
        let filter = compile(&p).unwrap();
        let chmod = crate::syscalls::lookup("chmod");
        assert!(chmod.is_some() || cfg!(not(target_arch = "x86_64")));
        let data = SeccompData::call(chmod.unwrap_or(0), [0; 6]);
        if chmod.is_some() {
            assert_eq!(run(&filter, &data), errno_ret(libc::EPERM));
        }
    }

    /// `seccomp_data` as the kernel passes it to the filter.
    struct SeccompData([u8; 64]);

    impl SeccompData {
        fn call(nr: u32, args: [u64; 6]) -> SeccompData {
            Self::with_arch(nr, NATIVE_ARCH.map_or(0, |a| a as u32), args)
        }
        fn with_arch(nr: u32, arch: u32, args: [u64; 6]) -> SeccompData {
            let mut d = [0u8; 64];
            d[0..4].copy_from_slice(&nr.to_ne_bytes());
            d[4..8].copy_from_slice(&arch.to_ne_bytes());
            for (i, a) in args.iter().enumerate() {
                d[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
            }
            SeccompData(d)
        }
    }

    /// A classic BPF interpreter for the instructions the compiler emits: what the kernel
    /// would answer for `data`.
    fn run(filter: &Filter, data: &SeccompData) -> u32 {
        let mut a: u32 = 0;
        let mut pc = 0usize;
        loop {
            let insn = filter.0[pc];
            pc += 1;
            match insn.code {
                LD_ABS => {
                    let k = insn.k as usize;
                    a = u32::from_ne_bytes(data.0[k..k + 4].try_into().unwrap());
                }
                AND_K => a &= insn.k,
                RET_K => return insn.k,
                JEQ_K | JGT_K | JGE_K | JSET_K => {
                    let taken = match insn.code {
                        JEQ_K => a == insn.k,
                        JGT_K => a > insn.k,
                        JGE_K => a >= insn.k,
                        _ => a & insn.k != 0,
                    };
                    pc += usize::from(if taken { insn.jt } else { insn.jf });
                }
                other => panic!("unexpected instruction {other:#x}"),
            }
        }
    }

    fn errno_ret(e: i32) -> u32 {
        LinuxSeccompAction::ScmpActErrno.as_u32(Some(e as u32))
    }

    const ALLOW: u32 = 0x7fff_0000;

    #[test]
    fn foreign_architectures_and_x32_get_enosys() {
        let filter = compile(&runtime_default(&HashSet::new()).unwrap()).unwrap();
        let getpid = crate::syscalls::lookup("getpid").unwrap();
        assert_eq!(run(&filter, &SeccompData::call(getpid, [0; 6])), ALLOW);
        let x86 = SeccompData::with_arch(getpid, Arch::ScmpArchX86 as u32, [0; 6]);
        assert_eq!(run(&filter, &x86), errno_ret(libc::ENOSYS));
        if NATIVE_ARCH == Some(Arch::ScmpArchX86_64) {
            let x32 = SeccompData::call(getpid | X32_SYSCALL_BIT, [0; 6]);
            assert_eq!(run(&filter, &x32), errno_ret(libc::ENOSYS));
        }
    }

    #[test]
    fn the_most_restrictive_matching_rule_wins() {
        let chmod = crate::syscalls::lookup("fchmodat").unwrap();
        let mut allow = syscall(&["fchmodat"], 0, Vec::new());
        allow.set_action(LinuxSeccompAction::ScmpActAllow);
        let deny_arg = seccomp_arg(2, LinuxSeccompOperator::ScmpCmpEq, 0o400, 0).unwrap();
        let deny = syscall(&["fchmodat"], libc::EACCES, vec![deny_arg]);
        let mut p = LinuxSeccomp::default();
        p.set_default_action(LinuxSeccompAction::ScmpActErrno);
        // The allow comes first in the profile; the errno still wins where both match.
        p.set_syscalls(Some(vec![allow, deny]));
        let filter = compile(&p).unwrap();
        assert_eq!(
            run(&filter, &SeccompData::call(chmod, [0, 0, 0o400, 0, 0, 0])),
            errno_ret(libc::EACCES)
        );
        assert_eq!(
            run(&filter, &SeccompData::call(chmod, [0, 0, 0o644, 0, 0, 0])),
            ALLOW
        );
        assert_eq!(
            run(&filter, &SeccompData::call(chmod + 1, [0; 6])),
            errno_ret(libc::EPERM)
        );
    }

    use proptest::prelude::*;

    fn op_strategy() -> impl Strategy<Value = LinuxSeccompOperator> {
        use LinuxSeccompOperator::*;
        prop::sample::select(vec![
            ScmpCmpNe,
            ScmpCmpLt,
            ScmpCmpLe,
            ScmpCmpEq,
            ScmpCmpGe,
            ScmpCmpGt,
            ScmpCmpMaskedEq,
        ])
    }

    /// Values near the interesting edges: word boundaries, equal high words, all bits.
    fn value_strategy() -> impl Strategy<Value = u64> {
        prop_oneof![
            any::<u64>(),
            (0u64..4, 0u64..4).prop_map(|(h, l)| (h << 32) | l),
            Just(u64::MAX),
            Just(0),
            Just(1 << 32),
            Just(u32::MAX as u64),
        ]
    }

    fn holds(op: LinuxSeccompOperator, arg: u64, value: u64, value_two: u64) -> bool {
        use LinuxSeccompOperator::*;
        match op {
            ScmpCmpNe => arg != value,
            ScmpCmpLt => arg < value,
            ScmpCmpLe => arg <= value,
            ScmpCmpEq => arg == value,
            ScmpCmpGe => arg >= value,
            ScmpCmpGt => arg > value,
            ScmpCmpMaskedEq => arg & value == value_two,
        }
    }

    proptest! {
        /// Every operator compares the whole 64-bit argument, as libseccomp does.
        #[test]
        fn argument_checks_compare_64_bit_values(
            op in op_strategy(),
            index in 0usize..6,
            value in value_strategy(),
            value_two in value_strategy(),
            arg in value_strategy(),
            other in value_strategy(),
        ) {
            let nr = crate::syscalls::lookup("fchmodat").unwrap();
            let check = seccomp_arg(index, op, value, value_two).unwrap();
            let mut p = LinuxSeccomp::default();
            p.set_default_action(LinuxSeccompAction::ScmpActAllow);
            p.set_syscalls(Some(vec![syscall(&["fchmodat"], libc::EACCES, vec![check])]));
            let filter = compile(&p).unwrap();
            let mut args = [other; 6];
            args[index] = arg;
            let want = if holds(op, arg, value, value_two) { errno_ret(libc::EACCES) } else { ALLOW };
            prop_assert_eq!(run(&filter, &SeccompData::call(nr, args)), want);
            // Another syscall is never affected.
            prop_assert_eq!(run(&filter, &SeccompData::call(nr + 1, args)), ALLOW);
        }

        /// Checks of two arguments must both hold; two checks of one argument make a rule each.
        #[test]
        fn several_checks_combine_as_runc_does(
            ops in (op_strategy(), op_strategy()),
            values in (value_strategy(), value_strategy()),
            args in (value_strategy(), value_strategy()),
            same_index in any::<bool>(),
        ) {
            let nr = crate::syscalls::lookup("fchmodat").unwrap();
            let (i, j) = if same_index { (1, 1) } else { (1, 2) };
            let checks = vec![
                seccomp_arg(i, ops.0, values.0, values.1).unwrap(),
                seccomp_arg(j, ops.1, values.1, values.0).unwrap(),
            ];
            let mut p = LinuxSeccomp::default();
            p.set_default_action(LinuxSeccompAction::ScmpActAllow);
            p.set_syscalls(Some(vec![syscall(&["fchmodat"], libc::EACCES, checks)]));
            let filter = compile(&p).unwrap();
            let mut call = [0u64; 6];
            call[i] = args.0;
            if !same_index {
                call[j] = args.1;
            }
            let first = holds(ops.0, call[i], values.0, values.1);
            let second = holds(ops.1, call[j], values.1, values.0);
            let denied = if same_index { first || second } else { first && second };
            let want = if denied { errno_ret(libc::EACCES) } else { ALLOW };
            prop_assert_eq!(run(&filter, &SeccompData::call(nr, call)), want);
        }
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
