//! Whether an unprivileged CT's root can reach the host paths its CT is built from.
//!
//! LXC opens the CT's rootfs, the pod directory and podinit as the CT's root (host uid
//! 100000 for the Proxmox idmap); a private ancestor such as a `0700` state directory makes
//! the start fail late with "Could not access ...". Checking the mode bits at create time turns
//! that into an error that names the directory. Directories with a POSIX ACL are taken as
//! reachable (the ACL decides, and LXC's own advice is to add one).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The first directory on the way to `path` (its ancestors, and `path` itself when it is a
/// directory) that `uid`/`gid` may not traverse; `None` when all can be traversed.
pub fn first_blocking_dir(path: &Path, uid: u32, gid: u32) -> Option<PathBuf> {
    let mut dirs: Vec<&Path> = path.ancestors().skip(1).collect();
    dirs.reverse();
    if path.is_dir() {
        dirs.push(path);
    }
    dirs.into_iter()
        .find(|dir| !may_traverse(dir, uid, gid))
        .map(Path::to_path_buf)
}

/// Whether `uid`/`gid` may read and execute `file` (podinit, run as the CT's root).
pub fn may_execute(file: &Path, uid: u32, gid: u32) -> bool {
    let Ok(meta) = std::fs::metadata(file) else {
        return false;
    };
    let mode = meta.mode();
    let bits = if meta.uid() == uid {
        (mode >> 6) & 0o5
    } else if meta.gid() == gid {
        (mode >> 3) & 0o5
    } else {
        mode & 0o5
    };
    bits == 0o5 || has_acl(file)
}

fn may_traverse(dir: &Path, uid: u32, gid: u32) -> bool {
    let Ok(meta) = std::fs::metadata(dir) else {
        // Missing parts are created later by root; nothing to say about them yet.
        return true;
    };
    let mode = meta.mode();
    let allowed = if meta.uid() == uid {
        mode & 0o100 != 0
    } else if meta.gid() == gid {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    };
    allowed || has_acl(dir)
}

fn has_acl(dir: &Path) -> bool {
    let mut buf = [0u8; 0];
    match rustix::fs::getxattr(dir, "system.posix_acl_access", &mut buf) {
        Ok(_) => true,
        Err(e) => e == rustix::io::Errno::RANGE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_private_ancestor_blocks() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let deep = state.join("lxc/ct");
        std::fs::create_dir_all(&deep).unwrap();
        chmod(tmp.path(), 0o755);
        chmod(&state, 0o700);
        for dir in [state.join("lxc"), deep.clone()] {
            chmod(&dir, 0o711);
        }
        assert_eq!(
            first_blocking_dir(&deep, 100_000, 100_000),
            Some(state.clone())
        );
        chmod(&state, 0o711);
        assert_eq!(first_blocking_dir(&deep, 100_000, 100_000), None);
        chmod(&deep, 0o700);
        assert_eq!(
            first_blocking_dir(&deep, 100_000, 100_000),
            Some(deep.clone())
        );
        // The owner's view: owner bits.
        let owner = std::fs::metadata(&deep).unwrap().uid();
        assert_eq!(first_blocking_dir(&deep, owner, u32::MAX), None);
    }

    #[test]
    fn files_count_only_through_their_directories() {
        let tmp = tempfile::tempdir().unwrap();
        chmod(tmp.path(), 0o755);
        let file = tmp.path().join("podinit");
        std::fs::write(&file, "").unwrap();
        chmod(&file, 0o600);
        assert_eq!(first_blocking_dir(&file, 100_000, 100_000), None);
        assert!(!may_execute(&file, 100_000, 100_000));
        chmod(&file, 0o755);
        assert!(may_execute(&file, 100_000, 100_000));
        chmod(&file, 0o750);
        assert!(!may_execute(&file, 100_000, 100_000));
        assert!(!may_execute(&tmp.path().join("missing"), 0, 0));
    }
}
