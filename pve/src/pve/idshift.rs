//! Shifting a small tree's owners from one ID map to another (a CT root volume that Proxmox
//! filled with its default map, for a CT with the map the kubelet chose).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::spec::{IdMap, IdRange};

/// The id `id` has under `to` when it has its place under `from`; ids outside `from` (the
/// host's own, nobody) are kept.
pub fn shift_id(id: u32, from: IdRange, to: IdRange) -> u32 {
    match id.checked_sub(from.host) {
        Some(inside) if inside < from.count && inside < to.count => to.host + inside,
        _ => id,
    }
}

/// Re-owns every entry of `root` (not following symlinks, not crossing into other mounts)
/// from `from` to `to`.
pub fn shift_tree(root: &Path, from: IdMap, to: IdMap) -> io::Result<()> {
    let dev = std::fs::symlink_metadata(root)?.dev();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.dev() != dev {
            continue;
        }
        let uid = shift_id(meta.uid(), from.uid, to.uid);
        let gid = shift_id(meta.gid(), from.gid, to.gid);
        if (uid, gid) != (meta.uid(), meta.gid()) {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
            // chown drops set-id bits; put them back as the extraction left them.
            if !meta.file_type().is_symlink() && meta.mode() & 0o6000 != 0 {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(
                    &path,
                    std::fs::Permissions::from_mode(meta.mode() & 0o7777),
                )?;
            }
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(host: u32, count: u32) -> IdRange {
        IdRange { host, count }
    }

    #[test]
    fn ids_move_between_ranges() {
        let from = range(100_000, 65_536);
        let to = range(65_536, 65_536);
        assert_eq!(shift_id(100_000, from, to), 65_536);
        assert_eq!(shift_id(100_005, from, to), 65_541);
        assert_eq!(shift_id(0, from, to), 0, "the host's root stays");
        assert_eq!(shift_id(165_536, from, to), 165_536, "outside the range");
        assert_eq!(
            shift_id(100_010, from, range(1_000_000, 10)),
            100_010,
            "beyond the target"
        );
    }

    #[test]
    fn a_tree_is_reowned() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sbin")).unwrap();
        std::fs::write(root.join("sbin/podinit"), b"x").unwrap();
        std::os::unix::fs::symlink("sbin", root.join("bin")).unwrap();
        for p in ["", "sbin", "sbin/podinit", "bin"] {
            std::os::unix::fs::lchown(root.join(p), Some(100_000), Some(100_000)).unwrap();
        }
        let to = IdMap {
            uid: range(65_536, 65_536),
            gid: range(131_072, 65_536),
        };
        shift_tree(&root, IdMap::PROXMOX_DEFAULT, to).unwrap();
        for p in ["", "sbin", "sbin/podinit", "bin"] {
            let m = std::fs::symlink_metadata(root.join(p)).unwrap();
            assert_eq!((m.uid(), m.gid()), (65_536, 131_072), "{p}");
        }
    }
}
