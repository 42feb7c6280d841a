//! A shifted copy: rewrites the owners of a container's own root filesystem (a fresh ZFS
//! clone, or an overlay whose lower layers cannot be idmapped) so that a container in a user
//! namespace finds them as its own, where an idmapped mount is not to be had.
//!
//! Every entry gets the host ids its owner maps to ([`IdMap`]); owners outside the map get an
//! id the container cannot name, as an idmapped mount would show them. What `chown` clears
//! comes back: setuid/setgid bits, and file capabilities, rewritten to name the container's
//! root (v3 `rootid`). POSIX ACL entries for named users and groups are shifted too. Hard
//! links are shifted once. The walk stays on the root's file system and never follows a
//! symlink.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::AtFlags;
use nix::sys::stat::{FchmodatFlags, FileStat, Mode, SFlag, fchmodat};
use nix::unistd::{Gid, Uid, fchownat};

use crate::apply::meta::{CAPABILITY_XATTR, capability_with_rootid};
use crate::error::StoreError;
use crate::idmap::IdMap;
use crate::sys;

const ACL_ACCESS: &str = "system.posix_acl_access";
const ACL_DEFAULT: &str = "system.posix_acl_default";
/// `posix_acl_xattr_header` version, and the tags whose id names a user or a group.
const ACL_VERSION: u32 = 2;
const ACL_USER: u16 = 0x02;
const ACL_GROUP: u16 = 0x08;

/// How much a shift touched.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ShiftStats {
    pub entries: u64,
    /// Entries whose owner the map does not hold.
    pub unmapped: u64,
}

/// Shifts every entry of the tree at `root` (the root included) by `map`. With
/// `dedupe_hard_links`, a multiply linked file is shifted through its first name only (a
/// plain file system); without, through each name (an overlay mounted `index=off`, where
/// each name of a lower file is copied up on its own).
pub fn shift_tree(
    root: &Path,
    map: &IdMap,
    dedupe_hard_links: bool,
) -> Result<ShiftStats, StoreError> {
    let io = |what: &str, path: &Path, e: nix::Error| StoreError::io_at(what, path, e.into());
    let root_fd = sys::open_dir(root).map_err(|e| StoreError::io_at("opening", root, e))?;
    let st = nix::sys::stat::fstat(root_fd.as_fd()).map_err(|e| io("stat", root, e))?;
    let mut walk = Walk {
        map,
        dev: st.st_dev,
        dedupe: dedupe_hard_links,
        seen: HashSet::new(),
        stats: ShiftStats::default(),
    };
    walk.entry(root_fd.as_fd(), OsStr::new("."), &st, root)?;
    let mut stack: Vec<(OwnedFd, PathBuf)> = vec![(root_fd, root.to_path_buf())];
    while let Some((dir, path)) = stack.pop() {
        let names = sys::list_dir(dir.as_fd()).map_err(|e| io("listing", &path, e))?;
        for name in names {
            let child = path.join(&name);
            let Some(st) = sys::lstat_at(dir.as_fd(), &name).map_err(|e| io("stat", &child, e))?
            else {
                continue;
            };
            // Another file system mounted below (not the container's own).
            if st.st_dev != walk.dev {
                continue;
            }
            walk.entry(dir.as_fd(), &name, &st, &child)?;
            if sys::is_dir(&st) {
                let fd = sys::open_child_dir(dir.as_fd(), &name)
                    .map_err(|e| io("opening", &child, e))?;
                stack.push((fd, child));
            }
        }
    }
    Ok(walk.stats)
}

struct Walk<'a> {
    map: &'a IdMap,
    dev: u64,
    dedupe: bool,
    /// (dev, ino) of multiply linked files already shifted.
    seen: HashSet<(u64, u64)>,
    stats: ShiftStats,
}

impl Walk<'_> {
    fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        st: &FileStat,
        path: &Path,
    ) -> Result<(), StoreError> {
        let kind = sys::file_type(st);
        if self.dedupe
            && kind != SFlag::S_IFDIR
            && st.st_nlink > 1
            && !self.seen.insert((st.st_dev, st.st_ino))
        {
            return Ok(());
        }
        self.stats.entries += 1;
        if self.map.uid.to_host(st.st_uid).is_none() || self.map.gid.to_host(st.st_gid).is_none() {
            self.stats.unmapped += 1;
        }
        let ctx = |what: &str, e: std::io::Error| StoreError::io_at(what, path, e);
        let is_link = kind == SFlag::S_IFLNK;
        // Read before chown, which drops file capabilities.
        let cap = if kind == SFlag::S_IFREG {
            sys::lget_xattr_at(dir, name, OsStr::from_bytes(CAPABILITY_XATTR))
                .map_err(|e| ctx("reading security.capability", e))?
        } else {
            None
        };
        fchownat(
            dir,
            name,
            Some(Uid::from_raw(self.map.uid.shift(st.st_uid))),
            Some(Gid::from_raw(self.map.gid.shift(st.st_gid))),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| ctx("chown", e.into()))?;
        if is_link {
            return Ok(());
        }
        // chown clears setuid and setgid on files.
        if st.st_mode & 0o6000 != 0 && kind != SFlag::S_IFDIR {
            fchmodat(
                dir,
                name,
                Mode::from_bits_truncate(st.st_mode & 0o7777),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| ctx("chmod", e.into()))?;
        }
        if let Some(cap) = cap {
            let entry = path.display().to_string();
            let root = |rootid: u32| {
                self.map.uid.to_host(rootid).ok_or_else(|| {
                    StoreError::invalid(&entry, format!("capability root id {rootid} is unmapped"))
                })
            };
            // A capability for a root the container cannot name stays dropped.
            if let Ok(value) = capability_with_rootid(&cap, &entry, root) {
                sys::lset_xattr_at(dir, name, OsStr::from_bytes(CAPABILITY_XATTR), &value)
                    .map_err(|e| ctx("setting security.capability", e))?;
            }
        }
        let acls: &[&str] = if kind == SFlag::S_IFDIR {
            &[ACL_ACCESS, ACL_DEFAULT]
        } else {
            &[ACL_ACCESS]
        };
        for acl in acls {
            let Some(value) =
                sys::lget_xattr_at(dir, name, OsStr::new(acl)).map_err(|e| ctx("reading", e))?
            else {
                continue;
            };
            if let Some(shifted) = shift_acl(&value, self.map) {
                sys::lset_xattr_at(dir, name, OsStr::new(acl), &shifted)
                    .map_err(|e| ctx("setting an ACL", e))?;
            }
        }
        Ok(())
    }
}

/// A POSIX ACL xattr with its named users and groups shifted; `None` if it is malformed
/// (left as it is).
fn shift_acl(value: &[u8], map: &IdMap) -> Option<Vec<u8>> {
    let (header, entries) = value.split_at_checked(4)?;
    if u32::from_le_bytes(header.try_into().ok()?) != ACL_VERSION || entries.len() % 8 != 0 {
        return None;
    }
    let mut out = value.to_vec();
    for (i, e) in entries.chunks_exact(8).enumerate() {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let shifted = match tag {
            ACL_USER => map.uid.shift(id),
            ACL_GROUP => map.gid.shift(id),
            _ => continue,
        };
        let at = 4 + i * 8 + 4;
        out[at..at + 4].copy_from_slice(&shifted.to_le_bytes());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idmap::IdRange;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    const MAP: IdMap = IdMap {
        uid: IdRange {
            host: 100_000,
            count: 65_536,
        },
        gid: IdRange {
            host: 200_000,
            count: 65_536,
        },
    };

    #[test]
    fn acls_shift_named_entries_only() {
        let mut v = ACL_VERSION.to_le_bytes().to_vec();
        for (tag, id) in [
            (0x01u16, u32::MAX),
            (ACL_USER, 5),
            (ACL_GROUP, 7),
            (0x20, u32::MAX),
        ] {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&7u16.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        let out = shift_acl(&v, &MAP).unwrap();
        let id_at =
            |i: usize| u32::from_le_bytes(out[4 + i * 8 + 4..4 + i * 8 + 8].try_into().unwrap());
        assert_eq!(
            [id_at(0), id_at(1), id_at(2), id_at(3)],
            [u32::MAX, 100_005, 200_007, u32::MAX]
        );
        assert_eq!(shift_acl(&v[..7], &MAP), None);
        assert_eq!(shift_acl(&[1, 0, 0, 0], &MAP), None);
    }

    /// Needs root (chown to arbitrary ids); skipped otherwise.
    #[test]
    fn a_tree_is_shifted_once_with_modes_kept() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/su"), "x").unwrap();
        std::fs::set_permissions(root.join("bin/su"), std::fs::Permissions::from_mode(0o4755))
            .unwrap();
        std::fs::hard_link(root.join("bin/su"), root.join("bin/su2")).unwrap();
        std::os::unix::fs::symlink("su", root.join("bin/link")).unwrap();
        std::fs::write(root.join("owned"), "x").unwrap();
        std::os::unix::fs::chown(root.join("owned"), Some(1000), Some(70_000)).unwrap();
        let stats = shift_tree(&root, &MAP, true).unwrap();
        let meta = |p: &str| std::fs::symlink_metadata(root.join(p)).unwrap();
        assert_eq!((meta(".").uid(), meta(".").gid()), (100_000, 200_000));
        assert_eq!(
            (meta("bin/su").uid(), meta("bin/su").gid()),
            (100_000, 200_000)
        );
        assert_eq!(
            meta("bin/su").mode() & 0o7777,
            0o4755,
            "setuid survives chown"
        );
        assert_eq!(meta("bin/link").uid(), 100_000);
        assert_eq!(
            (meta("owned").uid(), meta("owned").gid()),
            (101_000, 65_534)
        );
        assert_eq!(stats.entries, 5, "the hard link once: . bin su link owned");
        assert_eq!(stats.unmapped, 1);
    }
}
