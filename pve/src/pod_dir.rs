//! The pod directory's propagation on the host.
//!
//! The CT gets the pod directory as a bind mount that is a *slave* of the host's copy, so that
//! the daemon's later mounts under it (container root filesystems, volume binds) appear inside
//! while nothing the CT mounts leaks out. A slave only receives events from a *shared* master,
//! and most hosts' root is private (systemd makes `/` shared; this sandbox and many container
//! hosts do not). So the pod directory is made a mount of its own (a bind onto itself, when it
//! is not a mount point already) and marked shared.

use std::io;
use std::path::Path;

use rustix::fs::{AtFlags, CWD, StatxAttributes, StatxFlags, statx};
use rustix::mount::{MountPropagationFlags, UnmountFlags, mount_bind, mount_change, unmount};

/// Makes `dir` a shared mount point, binding it onto itself first when `bind` is set (pass
/// `!is_mount_point(dir)`; the caller records that choice first, so that a crash in between
/// can be undone by [`release`]).
pub fn make_shared(dir: &Path, bind: bool) -> io::Result<()> {
    if bind {
        mount_bind(dir, dir)?;
    }
    if let Err(e) = mount_change(
        dir,
        MountPropagationFlags::SHARED | MountPropagationFlags::REC,
    ) {
        if bind {
            let _ = unmount(dir, UnmountFlags::DETACH);
        }
        return Err(e.into());
    }
    Ok(())
}

/// Undoes the self-bind made by [`make_shared`] (lazily, so busy submounts do not block it).
/// A directory that is gone or no longer a mount point is fine.
pub fn release(dir: &Path) -> io::Result<()> {
    match is_mount_point(dir) {
        Ok(true) => {}
        Ok(false) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    match unmount(dir, UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether `dir` is the root of a mount (`STATX_ATTR_MOUNT_ROOT`, Linux 5.8+).
pub fn is_mount_point(dir: &Path) -> io::Result<bool> {
    let st = statx(CWD, dir, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::BASIC_STATS)?;
    if !st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the kernel does not report STATX_ATTR_MOUNT_ROOT (Linux 5.8 or later needed)",
        ));
    }
    Ok(st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_a_mount_point_and_a_fresh_directory_is_not() {
        assert!(is_mount_point(Path::new("/")).unwrap());
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mount_point(dir.path()).unwrap());
    }
}
