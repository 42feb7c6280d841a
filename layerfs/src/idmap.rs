//! Root filesystems for containers in a user namespace: the ID map a rootfs must show, user
//! namespaces that carry it, and idmapped mounts (`mount_setattr(MOUNT_ATTR_IDMAP)`).
//!
//! A container in a user namespace whose ids `0..count` are host ids `host..host + count`
//! must find its image's files owned by those host ids. Where the file system supports it,
//! an idmapped mount shows them so without touching a byte on disk (layers stay shared with
//! every other container); elsewhere the container's own copy is shifted ([`crate::shift`]).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One contiguous range: ids `0..count` inside are `host..host + count` on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub host: u32,
    pub count: u32,
}

impl IdRange {
    /// The host id of container id `id`, `None` when the range does not hold it.
    pub fn to_host(&self, id: u32) -> Option<u32> {
        (id < self.count)
            .then(|| self.host.checked_add(id))
            .flatten()
    }

    /// A host id this range leaves unmapped, for files whose owner the container cannot
    /// name: the kernel's overflow id (65534) when it is outside the range, as an idmapped
    /// mount would show such a file.
    pub fn unmapped(&self) -> u32 {
        const OVERFLOW: u32 = 65_534;
        let end = u64::from(self.host) + u64::from(self.count);
        if !(u64::from(self.host)..end).contains(&u64::from(OVERFLOW)) {
            OVERFLOW
        } else if end < u64::from(u32::MAX) {
            // Checked just above to fit.
            u32::try_from(end).unwrap_or(u32::MAX - 1)
        } else {
            self.host.saturating_sub(1)
        }
    }

    /// `to_host`, or [`IdRange::unmapped`] for ids outside the range.
    pub fn shift(&self, id: u32) -> u32 {
        self.to_host(id).unwrap_or_else(|| self.unmapped())
    }

    fn valid(&self) -> bool {
        self.count > 0 && u64::from(self.host) + u64::from(self.count) <= u64::from(u32::MAX)
    }
}

/// The ID map a container root filesystem must show (users and groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub uid: IdRange,
    pub gid: IdRange,
}

impl IdMap {
    /// Host uid and gid of the container's root.
    pub fn root(&self) -> (u32, u32) {
        (self.uid.host, self.gid.host)
    }

    /// Whether both ranges are non-empty and end before the last id.
    pub fn is_valid(&self) -> bool {
        self.uid.valid() && self.gid.valid()
    }

    /// A compact form for records and ZFS properties: `u:HOST:COUNT,g:HOST:COUNT`.
    pub fn to_text(&self) -> String {
        format!(
            "u:{}:{},g:{}:{}",
            self.uid.host, self.uid.count, self.gid.host, self.gid.count
        )
    }
}

/// A user namespace holding `map`, for `MOUNT_ATTR_IDMAP`. Made by a short-lived child that
/// enters a new user namespace and waits while its maps are written; the namespace lives on
/// through the returned fd.
pub fn user_namespace(map: &IdMap) -> io::Result<OwnedFd> {
    let (ready_r, ready_w) = pipe()?;
    let (release_r, release_w) = pipe()?;
    let uid_map = format!("0 {} {}\n", map.uid.host, map.uid.count);
    let gid_map = format!("0 {} {}\n", map.gid.host, map.gid.count);
    // SAFETY: the child runs only async-signal-safe calls (unshare, write, read, _exit) on
    // fds opened before the fork, and never returns into Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above; plain syscalls on valid fds and a stack buffer.
        unsafe {
            // The parent's ends: without closing ours, the read below would never see EOF.
            libc::close(ready_r.as_raw_fd());
            libc::close(release_w.as_raw_fd());
            let ok = libc::unshare(libc::CLONE_NEWUSER) == 0;
            let byte = [u8::from(ok)];
            libc::write(ready_w.as_raw_fd(), byte.as_ptr().cast(), 1);
            let mut buf = [0u8; 1];
            libc::read(release_r.as_raw_fd(), buf.as_mut_ptr().cast(), 1);
            libc::_exit(0);
        }
    }
    drop(ready_w);
    drop(release_r);
    let result = (|| {
        let mut byte = [0u8; 1];
        let mut ready = std::fs::File::from(ready_r);
        std::io::Read::read_exact(&mut ready, &mut byte)?;
        if byte[0] != 1 {
            return Err(io::Error::other(
                "the helper could not make a user namespace",
            ));
        }
        std::fs::write(format!("/proc/{pid}/uid_map"), uid_map)?;
        std::fs::write(format!("/proc/{pid}/gid_map"), gid_map)?;
        std::fs::File::open(format!("/proc/{pid}/ns/user")).map(OwnedFd::from)
    })();
    drop(release_w);
    let mut status = 0;
    // SAFETY: waits for our own child, whose pid we hold; `status` is a valid out-pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    result
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned these fds; nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A detached bind of `path` (not its submounts) whose owners appear through `userns`'s map:
/// usable as a path through `/proc/self/fd/<fd>` while the fd lives. Fails with `EINVAL` or
/// `EOPNOTSUPP` on a file system without idmapped mounts (see [`is_unsupported`]).
pub fn idmapped_clone(path: &Path, userns: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    // SAFETY: open_tree with a NUL-terminated path that outlives the call; returns a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(fd).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    let tree = unsafe { OwnedFd::from_raw_fd(fd) };
    set_idmap(tree.as_raw_fd(), userns, 0)?;
    Ok(tree)
}

/// Sets `MOUNT_ATTR_IDMAP` on the detached mount (tree) `fd`; `recursive` also on its
/// submounts (`AT_RECURSIVE`).
pub fn idmap_detached(
    tree: BorrowedFd<'_>,
    userns: BorrowedFd<'_>,
    recursive: bool,
) -> io::Result<()> {
    let flags = if recursive { libc::AT_RECURSIVE } else { 0 };
    set_idmap(tree.as_raw_fd(), userns, flags)
}

fn set_idmap(fd: libc::c_int, userns: BorrowedFd<'_>, extra: libc::c_int) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: u64::try_from(userns.as_raw_fd()).unwrap_or(u64::MAX),
    };
    // SAFETY: mount_setattr on an fd we own, an empty path with AT_EMPTY_PATH and a
    // mount_attr that outlives the call, with its exact size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | extra,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether an idmapped mount failed because the file system (or kernel) cannot have one,
/// so that a shifted copy must do instead.
pub fn is_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS | libc::EPERM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBELET: IdRange = IdRange {
        host: 65_536,
        count: 65_536,
    };

    #[test]
    fn ranges_map_and_leave_the_rest_unmapped() {
        assert_eq!(KUBELET.to_host(0), Some(65_536));
        assert_eq!(KUBELET.to_host(65_535), Some(131_071));
        assert_eq!(KUBELET.to_host(65_536), None);
        assert_eq!(
            KUBELET.shift(70_000),
            65_534,
            "overflow id, outside the range"
        );
        let low = IdRange {
            host: 1000,
            count: 100_000,
        };
        assert_eq!(
            low.unmapped(),
            101_000,
            "65534 is mapped here: the first id after"
        );
        let top = IdRange {
            host: 1000,
            count: u32::MAX - 1000,
        };
        assert_eq!(top.unmapped(), 999);
        for r in [KUBELET, low, top] {
            let u = r.unmapped();
            assert!(
                !(r.host..r.host.saturating_add(r.count)).contains(&u),
                "{r:?}"
            );
        }
    }

    #[test]
    fn validity_and_text() {
        let map = IdMap {
            uid: KUBELET,
            gid: IdRange {
                host: 1000,
                count: 100_000,
            },
        };
        assert!(map.is_valid());
        assert_eq!(map.to_text(), "u:65536:65536,g:1000:100000");
        assert_eq!(map.root(), (65_536, 1000));
        let empty = IdMap {
            uid: IdRange { host: 1, count: 0 },
            ..map
        };
        assert!(!empty.is_valid());
        let wraps = IdMap {
            uid: IdRange {
                host: u32::MAX,
                count: 1,
            },
            ..map
        };
        assert!(!wraps.is_valid());
    }
}
