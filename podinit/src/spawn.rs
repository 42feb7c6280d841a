//! Forking container and exec processes.
//!
//! The child reports back over a close-on-exec `SOCK_SEQPACKET` pair, as runc does with its
//! error pipe: an `E<message>` packet names what failed before exec, a `P` packet carries the
//! pty master (terminal mode), and end-of-stream without an error means exec succeeded.
//!
//! A new PID namespace is made by `unshare(CLONE_NEWPID)` in podinit just before `fork` (the
//! child becomes PID 1 there), then podinit returns to its own namespace with `setns`; an exec
//! enters a container's PID namespace the same way. Both children stay podinit's own children,
//! so podinit reaps them and sees their exit status.

use std::ffi::CString;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns, unshare};

use crate::api::{ExecUser, TermSize};
use crate::cgroup::ContainerCgroup;
use crate::rootfs::{self, SetupResult};
use crate::spec::{CapSets, ContainerConfig, DEFAULT_PATH, ProcessConfig};
use crate::sys::{self, Forked};

/// Exit code of a child that failed before exec (the parent reads the reason from the socket).
const SETUP_FAILED: i32 = 127;

/// The parent's ends of a freshly forked process.
#[derive(Debug)]
pub struct Spawned {
    pub pid: i32,
    /// Messages from the child until it executes (see the module docs).
    pub sync: OwnedFd,
    /// Read ends of stdout and stderr (`None` in terminal mode: the pty master comes over `sync`;
    /// `None` too when the caller gave the process its stdio).
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// Write end of a container's stdin pipe (CRI `stdin` without a terminal).
    pub stdin: Option<OwnedFd>,
}

/// Where an exec'd command's stdio goes.
#[derive(Debug)]
pub enum ExecStdio {
    /// Pipes podinit reads (ExecSync); stdin is /dev/null.
    Collect,
    /// The caller's fds as stdin, stdout, stderr; `None` is /dev/null.
    Given([Option<OwnedFd>; 3]),
    /// A new pseudo-terminal in the container, of this size; its master comes over `sync`.
    Terminal(Option<TermSize>),
}

/// A message from a child on its sync socket.
#[derive(Debug)]
pub enum SyncMessage {
    /// It failed before exec; the text says why.
    Error(String),
    /// The pty master of a terminal container.
    Pty(OwnedFd),
    /// End of stream: the child executed (or died without a word).
    Closed,
    /// Nothing more for now.
    WouldBlock,
}

/// Reads one message from a sync socket without blocking.
pub fn read_sync(sock: BorrowedFd<'_>) -> io::Result<SyncMessage> {
    let mut buf = [0u8; 4096];
    let mut fds = Vec::new();
    match sys::recv_with_fds(sock, &mut buf, &mut fds, true) {
        Ok(0) => Ok(SyncMessage::Closed),
        Ok(n) => match buf[0] {
            b'E' => Ok(SyncMessage::Error(
                String::from_utf8_lossy(&buf[1..n]).into_owned(),
            )),
            b'P' => fds
                .pop()
                .map(SyncMessage::Pty)
                .ok_or_else(|| io::Error::other("pty message without an fd")),
            other => Err(io::Error::other(format!("unknown sync message {other}"))),
        },
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(SyncMessage::WouldBlock),
        Err(e) => Err(e),
    }
}

fn send_error(sock: &OwnedFd, msg: &str) {
    let mut data = Vec::with_capacity(msg.len() + 1);
    data.push(b'E');
    // SEQPACKET messages are bounded by the parent's 4 KiB buffer.
    data.extend_from_slice(&msg.as_bytes()[..msg.len().min(4000)]);
    let _ = sys::send_with_fds(sock.as_fd(), &data, &[]);
}

/// Forks with the child's `pid_for_children` set to `pidns` (a new namespace when `None` and
/// `new_ns`), restoring podinit's own afterwards whatever happens.
///
/// # Safety
/// Single-threaded caller only (see [`sys::fork`]).
unsafe fn fork_into_pidns(
    new_ns: bool,
    join: Option<BorrowedFd<'_>>,
    own_pidns: BorrowedFd<'_>,
) -> io::Result<Forked> {
    let switched = if new_ns {
        unshare(CloneFlags::CLONE_NEWPID).map_err(io::Error::from)?;
        true
    } else if let Some(ns) = join {
        setns(ns, CloneFlags::CLONE_NEWPID).map_err(io::Error::from)?;
        true
    } else {
        false
    };
    // SAFETY: forwarded from the caller.
    let forked = unsafe { sys::fork() };
    if switched && !matches!(forked, Ok(Forked::Child)) {
        // Only the parent needs its own namespace back for later forks.
        if let Err(e) = setns(own_pidns, CloneFlags::CLONE_NEWPID) {
            tracing::error!("cannot return to podinit's PID namespace: {e}");
        }
    }
    forked
}

/// Forks the container's main process. It sets itself up (cgroup, mounts, pivot_root, user,
/// capabilities) and executes the spec's command; the parent learns the result over `sync`.
pub fn spawn_container(
    cfg: &ContainerConfig,
    cgroup: &ContainerCgroup,
    pod_shm: Option<&Path>,
    passed_mounts: &[OwnedFd],
    own_pidns: BorrowedFd<'_>,
) -> io::Result<Spawned> {
    let (sync_parent, sync_child) = sys::seqpacket_pair()?;
    let pipes = if cfg.process.terminal {
        None
    } else {
        Some((sys::pipe()?, sys::pipe()?))
    };
    let stdin_pipe = if cfg.stdin && !cfg.process.terminal {
        Some(sys::pipe()?)
    } else {
        None
    };
    let devnull = sys::open(Path::new("/dev/null"), libc::O_RDWR, 0)?;
    // SAFETY: podinit is single-threaded.
    match unsafe { fork_into_pidns(cfg.new_pid_ns, None, own_pidns)? } {
        Forked::Child => {
            drop(sync_parent);
            let stdin = match &stdin_pipe {
                Some((r, _)) => r.as_fd(),
                None => devnull.as_fd(),
            };
            let stdio = match &pipes {
                Some(((_, out_w), (_, err_w))) => Stdio::Pipes(stdin, out_w.as_fd(), err_w.as_fd()),
                None => Stdio::Terminal,
            };
            let err = container_child(cfg, cgroup, pod_shm, passed_mounts, stdio, &sync_child);
            send_error(&sync_child, &err);
            sys::exit_child(SETUP_FAILED)
        }
        Forked::Parent(pid) => {
            let (stdout, stderr) = match pipes {
                Some(((out_r, _), (err_r, _))) => (Some(out_r), Some(err_r)),
                None => (None, None),
            };
            Ok(Spawned {
                pid,
                sync: sync_parent,
                stdout,
                stderr,
                stdin: stdin_pipe.map(|(_, w)| w),
            })
        }
    }
}

enum Stdio<'a> {
    /// stdin, stdout, stderr
    Pipes(BorrowedFd<'a>, BorrowedFd<'a>, BorrowedFd<'a>),
    Terminal,
}

/// Runs in the forked child; returns only with the reason it could not exec.
fn container_child(
    cfg: &ContainerConfig,
    cgroup: &ContainerCgroup,
    pod_shm: Option<&Path>,
    passed_mounts: &[OwnedFd],
    stdio: Stdio<'_>,
    sync: &OwnedFd,
) -> String {
    match container_child_inner(cfg, cgroup, pod_shm, passed_mounts, stdio, sync) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn container_child_inner(
    cfg: &ContainerConfig,
    cgroup: &ContainerCgroup,
    pod_shm: Option<&Path>,
    passed_mounts: &[OwnedFd],
    stdio: Stdio<'_>,
    sync: &OwnedFd,
) -> SetupResult<std::convert::Infallible> {
    let p = &cfg.process;
    sys::reset_signals();
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    join_cgroup(cgroup)?;
    if cfg.new_cgroup_ns {
        unshare(CloneFlags::CLONE_NEWCGROUP).map_err(|e| format!("new cgroup namespace: {e}"))?;
    }
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("new mount namespace: {e}"))?;
    if let Some(adj) = p.oom_score_adj {
        set_oom_score_adj(adj)?;
    }
    rootfs::setup(cfg, pod_shm, passed_mounts)?;
    match stdio {
        Stdio::Pipes(inp, out, err) => {
            for (fd, n) in [(inp, 0), (out, 1), (err, 2)] {
                sys::dup2(fd, n).map_err(|e| format!("dup2: {e}"))?;
            }
        }
        Stdio::Terminal => setup_terminal(p, sync)?,
    }
    finish_and_exec(p, &p.env)
}

/// Forks a command inside a running container: its cgroup, PID and mount namespaces, the
/// container's user (unless `user` overrides it), capabilities and limits.
pub fn spawn_exec(
    cfg: &ContainerConfig,
    cgroup: &ContainerCgroup,
    main_pid: i32,
    req: &ExecPlan,
    stdio: ExecStdio,
    own_pidns: BorrowedFd<'_>,
) -> io::Result<Spawned> {
    let ns = |kind: &str| {
        sys::open(
            &PathBuf::from(format!("/proc/{main_pid}/ns/{kind}")),
            libc::O_RDONLY,
            0,
        )
    };
    let mnt = ns("mnt")?;
    let pidns = if cfg.new_pid_ns {
        Some(ns("pid")?)
    } else {
        None
    };
    let cgns = if cfg.new_cgroup_ns {
        Some(ns("cgroup")?)
    } else {
        None
    };
    let (sync_parent, sync_child) = sys::seqpacket_pair()?;
    let devnull = sys::open(Path::new("/dev/null"), libc::O_RDWR, 0)?;
    // (child's stdin, stdout, stderr) and the parent's read ends of collected output.
    let (child_fds, collected, term) = match stdio {
        ExecStdio::Collect => {
            let (out_r, out_w) = sys::pipe()?;
            let (err_r, err_w) = sys::pipe()?;
            ([None, Some(out_w), Some(err_w)], Some((out_r, err_r)), None)
        }
        ExecStdio::Given(fds) => (fds, None, None),
        ExecStdio::Terminal(size) => ([None, None, None], None, Some(size)),
    };
    // SAFETY: podinit is single-threaded.
    match unsafe { fork_into_pidns(false, pidns.as_ref().map(|f| f.as_fd()), own_pidns)? } {
        Forked::Child => {
            drop(sync_parent);
            let stdio = match term {
                Some(size) => ChildStdio::Terminal(size),
                None => {
                    let [a, b, c] = &child_fds;
                    ChildStdio::Fds([
                        pick_fd(a, &devnull),
                        pick_fd(b, &devnull),
                        pick_fd(c, &devnull),
                    ])
                }
            };
            let err = match exec_child(
                cfg,
                cgroup,
                req,
                mnt.as_fd(),
                cgns.as_ref().map(|f| f.as_fd()),
                stdio,
                &sync_child,
            ) {
                Ok(never) => match never {},
                Err(e) => e,
            };
            send_error(&sync_child, &err);
            sys::exit_child(SETUP_FAILED)
        }
        Forked::Parent(pid) => {
            // The child holds its own copies now; ours would keep the caller's pipes open.
            drop(child_fds);
            let (stdout, stderr) = match collected {
                Some((o, e)) => (Some(o), Some(e)),
                None => (None, None),
            };
            Ok(Spawned {
                pid,
                sync: sync_parent,
                stdout,
                stderr,
                stdin: None,
            })
        }
    }
}

fn pick_fd<'a>(fd: &'a Option<OwnedFd>, fallback: &'a OwnedFd) -> BorrowedFd<'a> {
    fd.as_ref().unwrap_or(fallback).as_fd()
}

/// An exec'd command's stdio as the child sets it up.
enum ChildStdio<'a> {
    Fds([BorrowedFd<'a>; 3]),
    Terminal(Option<TermSize>),
}

/// What an exec runs, already merged with the container's defaults.
#[derive(Clone, Debug)]
pub struct ExecPlan {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: PathBuf,
    pub user: Option<ExecUser>,
}

impl ExecPlan {
    /// The container's environment with `extra` entries added or overriding.
    pub fn new(
        p: &ProcessConfig,
        args: Vec<String>,
        extra_env: &[String],
        cwd: Option<&str>,
        user: Option<ExecUser>,
    ) -> Self {
        Self {
            args,
            env: merge_env(&p.env, extra_env),
            cwd: cwd.map(PathBuf::from).unwrap_or_else(|| p.cwd.clone()),
            user,
        }
    }
}

fn exec_child(
    cfg: &ContainerConfig,
    cgroup: &ContainerCgroup,
    plan: &ExecPlan,
    mnt: BorrowedFd<'_>,
    cgns: Option<BorrowedFd<'_>>,
    stdio: ChildStdio<'_>,
    sync: &OwnedFd,
) -> SetupResult<std::convert::Infallible> {
    sys::reset_signals();
    // Its own session and process group, so a timeout can kill the whole group.
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    join_cgroup(cgroup)?;
    if let Some(ns) = cgns {
        setns(ns, CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| format!("joining cgroup namespace: {e}"))?;
    }
    setns(mnt, CloneFlags::CLONE_NEWNS).map_err(|e| format!("joining mount namespace: {e}"))?;
    let mut p = cfg.process.clone();
    match stdio {
        ChildStdio::Fds(fds) => {
            for (fd, n) in fds.into_iter().zip(0..) {
                sys::dup2(fd, n).map_err(|e| format!("dup2: {e}"))?;
            }
        }
        ChildStdio::Terminal(size) => {
            // The container's own /dev/ptmx: the slave then lives in its devpts.
            p.console_size = size.map(|s| (s.rows, s.cols));
            setup_terminal(&p, sync)?;
        }
    }
    p.args = plan.args.clone();
    p.cwd = plan.cwd.clone();
    if let Some(u) = &plan.user {
        p.uid = u.uid;
        p.gid = u.gid;
        p.additional_gids = u.additional_gids.clone();
    }
    finish_and_exec(&p, &plan.env)
}

fn join_cgroup(cgroup: &ContainerCgroup) -> SetupResult<()> {
    for f in cgroup.procs_files() {
        std::fs::write(&f, "0").map_err(|e| format!("joining cgroup {}: {e}", f.display()))?;
    }
    Ok(())
}

/// Writes oom_score_adj; a value below podinit's own that the kernel refuses (no
/// CAP_SYS_RESOURCE) is clamped to podinit's, as containerd's `restrict_oom_score_adj` does.
fn set_oom_score_adj(adj: i32) -> SetupResult<()> {
    let path = "/proc/self/oom_score_adj";
    match std::fs::write(path, adj.to_string()) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) => {
            let current: i32 = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            if adj < current {
                // Inherited already: the clamped value is the current one.
                Ok(())
            } else {
                Err(format!("setting oom_score_adj {adj}: {e}"))
            }
        }
        Err(e) => Err(format!("setting oom_score_adj {adj}: {e}")),
    }
}

/// Opens a pty in the container's devpts, hands the master to podinit and makes the slave the
/// controlling terminal and stdio.
fn setup_terminal(p: &ProcessConfig, sync: &OwnedFd) -> SetupResult<()> {
    let master = sys::open(Path::new("/dev/ptmx"), libc::O_RDWR | libc::O_NOCTTY, 0)
        .map_err(|e| format!("opening /dev/ptmx: {e}"))?;
    let mut unlock: libc::c_int = 0;
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCSPTLCK reads an int; TIOCGPTN writes one; both point at live locals.
    let ok = unsafe {
        libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &mut unlock) == 0
            && libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) == 0
    };
    if !ok {
        return Err(format!(
            "setting up the pty: {}",
            io::Error::last_os_error()
        ));
    }
    let slave = sys::open(
        &PathBuf::from(format!("/dev/pts/{n}")),
        libc::O_RDWR | libc::O_NOCTTY,
        0,
    )
    .map_err(|e| format!("opening /dev/pts/{n}: {e}"))?;
    if let Some((rows, cols)) = p.console_size {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize.
        unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
    sys::send_with_fds(sync.as_fd(), b"P", &[master.as_fd()])
        .map_err(|e| format!("passing the pty to podinit: {e}"))?;
    drop(master);
    for n in 0..3 {
        sys::dup2(slave.as_fd(), n).map_err(|e| format!("dup2: {e}"))?;
    }
    // SAFETY: TIOCSCTTY on our stdin, which is the pty slave; we lead a new session.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(format!(
            "making the pty the controlling terminal: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Limits, no_new_privs, seccomp, identity, cwd, then exec. Runs inside the container's root.
fn finish_and_exec(p: &ProcessConfig, env: &[String]) -> SetupResult<std::convert::Infallible> {
    if let Some(mask) = p.umask {
        // SAFETY: umask has no memory effects.
        unsafe { libc::umask(mask as libc::mode_t) };
    }
    for &(res, soft, hard) in &p.rlimits {
        let lim = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads the struct.
        if unsafe { libc::setrlimit(res, &lim) } < 0 {
            return Err(format!("setrlimit {res}: {}", io::Error::last_os_error()));
        }
    }
    // The filter goes on while the process still has CAP_SYS_ADMIN (or once no_new_privs
    // is set), and before the identity change; the profile leaves the calls that follow it
    // (setgroups, setresuid, capset, prctl, chdir, close_range, execve) alone.
    if p.no_new_privileges {
        sys::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    }
    if let Some(filter) = &p.seccomp {
        filter
            .install()
            .map_err(|e| format!("installing the seccomp filter: {e}"))?;
    }
    apply_identity(p.uid, p.gid, &p.additional_gids, p.caps)?;
    std::env::set_current_dir(&p.cwd)
        .map_err(|e| format!("chdir to cwd {}: {e}", p.cwd.display()))?;
    let mut env = env.to_vec();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", home_of(p.uid)));
    }
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let exe = find_executable(&p.args[0], path_var)?;
    let argv = cstrings(&p.args)?;
    let envp = cstrings(&env)?;
    sys::cloexec_from(3).map_err(|e| format!("closing podinit's fds: {e}"))?;
    let err = nix::unistd::execve(&exe, &argv, &envp)
        .err()
        .map(io::Error::from)
        .unwrap_or_else(|| io::Error::other("execve returned"));
    Err(format!("exec {}: {err}", exe.to_string_lossy()))
}

fn cstrings(v: &[String]) -> SetupResult<Vec<CString>> {
    v.iter()
        .map(|s| CString::new(s.as_bytes()).map_err(|_| format!("NUL byte in {s:?}")))
        .collect()
}

/// Groups, uid/gid and capability sets. With no capabilities in the spec the process keeps
/// what a process of that uid normally has (all for root, none for others).
fn apply_identity(uid: u32, gid: u32, groups: &[u32], caps: Option<CapSets>) -> SetupResult<()> {
    let last = sys::cap_last_cap();
    let known: u64 = if last >= 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    };
    if let Some(c) = caps {
        for n in 0..=last {
            if c.bounding & (1u64 << n) == 0 {
                sys::drop_bounding_cap(n).map_err(|e| format!("dropping capability {n}: {e}"))?;
            }
        }
        sys::set_keepcaps(true).map_err(|e| format!("keepcaps: {e}"))?;
    }
    let gids: Vec<libc::gid_t> = groups.to_vec();
    // SAFETY: setgroups reads `gids.len()` entries.
    if unsafe { libc::setgroups(gids.len(), gids.as_ptr()) } < 0 {
        return Err(format!("setgroups: {}", io::Error::last_os_error()));
    }
    // SAFETY: setresgid/setresuid take plain integers.
    if unsafe { libc::setresgid(gid, gid, gid) } < 0 {
        return Err(format!("setgid {gid}: {}", io::Error::last_os_error()));
    }
    // SAFETY: see above.
    if unsafe { libc::setresuid(uid, uid, uid) } < 0 {
        return Err(format!("setuid {uid}: {}", io::Error::last_os_error()));
    }
    if let Some(c) = caps {
        sys::set_keepcaps(false).map_err(|e| format!("keepcaps: {e}"))?;
        sys::capset(
            c.effective & known,
            c.permitted & known,
            c.inheritable & known,
        )
        .map_err(|e| format!("setting capabilities: {e}"))?;
        sys::clear_ambient_caps().map_err(|e| format!("clearing ambient capabilities: {e}"))?;
        for n in crate::caps::numbers(c.ambient & known) {
            sys::raise_ambient_cap(n)
                .map_err(|e| format!("raising ambient capability {n}: {e}"))?;
        }
    }
    Ok(())
}

/// The user's home from the container's /etc/passwd, or `/`.
fn home_of(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 6 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[5].to_string())
            })
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".to_string())
}

/// `$PATH` lookup as exec does it (names with a `/` are used as given).
fn find_executable(name: &str, path_var: &str) -> SetupResult<CString> {
    let to_c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes()).map_err(|_| format!("NUL byte in {name:?}"))
    };
    if name.contains('/') {
        return to_c(Path::new(name));
    }
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let cand = Path::new(dir).join(name);
        let c = to_c(&cand)?;
        // SAFETY: access(2) with a NUL-terminated path.
        let executable = unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0;
        if executable && std::fs::metadata(&cand).is_ok_and(|m| m.is_file()) {
            return Ok(c);
        }
    }
    Err(format!(
        "exec: {name:?}: executable file not found in $PATH"
    ))
}

/// `base` with `extra` added; an `extra` entry replaces one of the same name.
pub fn merge_env(base: &[String], extra: &[String]) -> Vec<String> {
    let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_string();
    let mut out: Vec<String> = base
        .iter()
        .filter(|b| !extra.iter().any(|e| key(e) == key(b)))
        .cloned()
        .collect();
    out.extend(extra.iter().cloned());
    out
}

/// Writes `data` to a pipe or file fd completely (used for log lines in podinit).
pub fn write_all_fd(fd: BorrowedFd<'_>, data: &[u8]) -> io::Result<()> {
    // SAFETY: the File is wrapped in ManuallyDrop, so it never closes the borrowed fd.
    let mut f = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd.as_raw_fd()) });
    f.write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_merge_overrides_by_name() {
        let base = vec![
            "PATH=/bin".to_string(),
            "A=1".to_string(),
            "B=2".to_string(),
        ];
        let extra = vec!["A=9".to_string(), "C=3".to_string()];
        assert_eq!(
            merge_env(&base, &extra),
            vec!["PATH=/bin", "B=2", "A=9", "C=3"]
        );
    }

    #[test]
    fn executable_lookup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        let tool = bin.join("tool");
        std::fs::write(&tool, b"#!/bin/sh\n").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::write(bin.join("data"), b"x").expect("write");
        let path = format!("/nonexistent:{}", bin.display());
        assert_eq!(
            find_executable("tool", &path).expect("found"),
            CString::new(tool.as_os_str().as_bytes()).expect("c")
        );
        let e = find_executable("data", &path).expect_err("not executable");
        assert!(e.contains("executable file not found"), "{e}");
        assert!(
            find_executable("./rel/x", &path).is_ok(),
            "paths are not searched"
        );
    }
}
