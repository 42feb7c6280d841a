//! Finding, signalling and waiting for processes that are not our children (a CT's LXC
//! monitor and init outlive the daemon that started them), through `/proc` and pidfds.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Reads a pid file (LXC writes the bare number, without a newline).
pub fn read_pid_file(path: &Path) -> io::Result<Option<u32>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().parse().ok().filter(|pid| *pid > 0)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The command line of `pid`, NULs turned into spaces; `None` once the process is gone.
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let text = String::from_utf8_lossy(&raw).replace('\0', " ");
    Some(text.trim().to_string())
}

/// Children of `pid`, from the `children` file of each of its threads.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            found.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    found
}

/// Inode of `pid`'s PID namespace.
pub fn pid_namespace(pid: u32) -> Option<u64> {
    namespace(pid, "pid")
}

/// Inode of `pid`'s mount namespace.
pub fn mount_namespace(pid: u32) -> Option<u64> {
    namespace(pid, "mnt")
}

fn namespace(pid: u32, which: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/{which}"))
        .ok()
        .map(|m| m.ino())
}

/// The pid, as the host sees it, of the process that is `ns_pid` in the PID namespace whose
/// init is `init` (a host pid). The processes of a CT are its init's children (or the init
/// itself): each child's `NSpid` line lists its pid in every namespace from the host's down,
/// so the one whose second entry is `ns_pid` is the process sought.
pub fn host_pid_in(init: u32, ns_pid: u32) -> Option<u32> {
    // A CT in the host's PID namespace (hostPID pods): its pids are the host's.
    if pid_namespace(init).is_some_and(|ns| Some(ns) == pid_namespace(std::process::id())) {
        return Some(ns_pid);
    }
    if ns_pid == 1 {
        return Some(init);
    }
    children(init).into_iter().find(|child| {
        std::fs::read_to_string(format!("/proc/{child}/status"))
            .ok()
            .and_then(|s| ns_pids(&s))
            .is_some_and(|pids| pids.get(1) == Some(&ns_pid))
    })
}

/// The `NSpid:` line of a `/proc/<pid>/status`: the pid in each nested namespace, outermost
/// first.
pub fn ns_pids(status: &str) -> Option<Vec<u32>> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_whitespace().map(|p| p.parse().ok()).collect()
}

/// Sends SIGKILL to `pid`; a process already gone is fine.
pub fn kill_now(pid: u32) -> io::Result<()> {
    let Some(raw) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return Ok(());
    };
    match rustix::process::kill_process(raw, Signal::KILL) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A handle on a process that stays valid even if its pid is reused.
pub struct Pidfd {
    fd: AsyncFd<OwnedFd>,
}

impl Pidfd {
    /// `None` when no process has that pid (any more).
    pub fn open(pid: u32) -> io::Result<Option<Self>> {
        let Some(raw) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
            return Ok(None);
        };
        match pidfd_open(raw, PidfdFlags::NONBLOCK) {
            Ok(fd) => {
                // SAFETY: the OwnedFd moves into the AsyncFd, which owns it until dropped; an
                // OwnedFd always reports the one descriptor it owns and closes it only on drop.
                let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                    .map_err(|e| e.into_parts().1)?;
                Ok(Some(Self { fd }))
            }
            Err(rustix::io::Errno::SRCH) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends `signal`; `false` when the process has already exited.
    pub fn signal(&self, signal: Signal) -> io::Result<bool> {
        match pidfd_send_signal(self.fd.get_ref(), signal) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::SRCH) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits up to `timeout` for the process to exit; `true` when it has. A pidfd turns
    /// readable when its process exits, child of ours or not.
    pub async fn wait_exit(&self, timeout: Duration) -> io::Result<bool> {
        match tokio::time::timeout(timeout, self.fd.readable()).await {
            Ok(Ok(_guard)) => Ok(true),
            Ok(Err(e)) => Err(e),
            Err(_elapsed) => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pid");
        assert_eq!(read_pid_file(&path).unwrap(), None);
        std::fs::write(&path, "1234").unwrap();
        assert_eq!(read_pid_file(&path).unwrap(), Some(1234));
        std::fs::write(&path, "1234\n").unwrap();
        assert_eq!(read_pid_file(&path).unwrap(), Some(1234));
        std::fs::write(&path, "garbage").unwrap();
        assert_eq!(read_pid_file(&path).unwrap(), None);
        std::fs::write(&path, "0").unwrap();
        assert_eq!(read_pid_file(&path).unwrap(), None);
    }

    #[test]
    fn nspid_lines() {
        let status = "Name:\tsleep\nTgid:\t24428\nNSpid:\t24428\t2\t1\nPPid:\t24393\n";
        assert_eq!(ns_pids(status), Some(vec![24428, 2, 1]));
        assert_eq!(ns_pids("NSpid:\t7\n"), Some(vec![7]));
        assert_eq!(ns_pids("Name:\tx\n"), None);
        assert_eq!(ns_pids("NSpid:\t7\tx\n"), None);
    }

    #[test]
    fn pids_of_a_ct_in_our_own_pid_namespace_are_host_pids() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let me = std::process::id();
        // Our own namespace is the host's here: its pids are taken as they are.
        assert_eq!(host_pid_in(me, child.id()), Some(child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[tokio::test]
    async fn a_child_is_found_signalled_and_awaited() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let me = std::process::id();
        assert!(children(me).contains(&pid));
        // Right after fork the child may not have exec'd yet.
        let mut line = String::new();
        for _ in 0..200 {
            line = cmdline(pid).unwrap();
            if line.starts_with("sleep") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(line, "sleep 30");
        assert_eq!(pid_namespace(pid), pid_namespace(me));

        let fd = Pidfd::open(pid).unwrap().unwrap();
        assert!(!fd.wait_exit(Duration::from_millis(50)).await.unwrap());
        assert!(fd.signal(Signal::KILL).unwrap());
        assert!(fd.wait_exit(Duration::from_secs(5)).await.unwrap());
        child.wait().unwrap();
        assert!(!fd.signal(Signal::KILL).unwrap());
        assert!(cmdline(pid).is_none());
    }
}
