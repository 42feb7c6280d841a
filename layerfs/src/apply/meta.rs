//! Entry metadata from tar headers: owners (with the optional id shift), modes, times and
//! extended attributes, and applying it to created files.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;

use nix::fcntl::AtFlags;
use nix::sys::stat::{FchmodatFlags, Mode, UtimensatFlags, fchmod, fchmodat, futimens, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchown, fchownat};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::sys;

/// Shift of owners applied while extracting, for unprivileged containers: ids
/// `0..count` become `offset..offset + count`. Proxmox's default is offset 100000,
/// count 65536 for both users and groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdShift {
    pub uid_offset: u32,
    pub gid_offset: u32,
    pub count: u32,
}

impl IdShift {
    /// Proxmox VE's default for unprivileged containers.
    pub const PROXMOX_DEFAULT: IdShift = IdShift {
        uid_offset: 100_000,
        gid_offset: 100_000,
        count: 65_536,
    };

    fn uid(&self, id: u32, entry: &str) -> Result<u32, StoreError> {
        shift(id, self.uid_offset, self.count, "uid", entry)
    }

    fn gid(&self, id: u32, entry: &str) -> Result<u32, StoreError> {
        shift(id, self.gid_offset, self.count, "gid", entry)
    }

    /// The host ids of the container's root.
    pub fn root(&self) -> (u32, u32) {
        (self.uid_offset, self.gid_offset)
    }
}

fn shift(id: u32, offset: u32, count: u32, what: &str, entry: &str) -> Result<u32, StoreError> {
    if id >= count {
        return Err(StoreError::invalid(
            entry,
            format!("{what} {id} is outside the id range of the shift (0..{count})"),
        ));
    }
    offset
        .checked_add(id)
        .ok_or_else(|| StoreError::invalid(entry, format!("{what} {id} + {offset} overflows")))
}

/// The owner that directories the applier creates on its own (missing parents) get.
pub(crate) fn root_owner(shift: Option<&IdShift>) -> (u32, u32) {
    shift.map(IdShift::root).unwrap_or((0, 0))
}

/// `security.capability` layouts (linux/capability.h).
const VFS_CAP_REVISION_MASK: u32 = 0xff00_0000;
const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
const VFS_CAP_REVISION_3: u32 = 0x0300_0000;
const VFS_CAP_V2_LEN: usize = 20;
const VFS_CAP_V3_LEN: usize = 24;
const CAPABILITY_XATTR: &[u8] = b"security.capability";

/// Rewrites a file capability for a shifted container: the capability must name the
/// container's root as its owner (a v3 `rootid`), or the kernel would honour it for host
/// root only (v3) or in every namespace (v2).
fn shift_capability(value: &[u8], shift: &IdShift, entry: &str) -> Result<Vec<u8>, StoreError> {
    let bad = || StoreError::invalid(entry, "malformed security.capability xattr");
    let magic = u32::from_le_bytes(
        value
            .get(0..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?,
    );
    let (body, rootid) = match magic & VFS_CAP_REVISION_MASK {
        VFS_CAP_REVISION_2 if value.len() == VFS_CAP_V2_LEN => (&value[4..20], 0),
        VFS_CAP_REVISION_3 if value.len() == VFS_CAP_V3_LEN => {
            let rootid = u32::from_le_bytes(value[20..24].try_into().map_err(|_| bad())?);
            (&value[4..20], rootid)
        }
        _ => return Err(bad()),
    };
    let new_magic = (magic & !VFS_CAP_REVISION_MASK) | VFS_CAP_REVISION_3;
    let mut out = Vec::with_capacity(VFS_CAP_V3_LEN);
    out.extend_from_slice(&new_magic.to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&shift.uid(rootid, entry)?.to_le_bytes());
    Ok(out)
}

/// Whether an xattr name is overlayfs bookkeeping. A layer must never carry these: on the
/// overlay driver they would redirect lookups or hide lower layers.
pub(crate) fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// Metadata of one entry, ready to apply.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits including setuid, setgid and sticky.
    pub mode: u32,
    pub atime: TimeSpec,
    pub mtime: TimeSpec,
    pub xattrs: Vec<(OsString, Vec<u8>)>,
}

/// Counters of metadata the applier could not keep.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Dropped {
    pub unsupported_xattrs: u64,
    pub overlay_xattrs: u64,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct MetaOptions {
    pub shift: Option<IdShift>,
    pub xattrs: bool,
    pub chown: bool,
}

impl Meta {
    pub(crate) fn from_entry<R: Read>(
        entry: &mut tar::Entry<'_, R>,
        name: &str,
        opts: &MetaOptions,
        dropped: &mut Dropped,
    ) -> Result<Meta, StoreError> {
        let header = entry.header();
        let field = |what: &str, e: std::io::Error| {
            StoreError::invalid(name, format!("bad {what} field: {e}"))
        };
        let uid = header.uid().map_err(|e| field("uid", e))?;
        let gid = header.gid().map_err(|e| field("gid", e))?;
        let mode = header.mode().map_err(|e| field("mode", e))? & 0o7777;
        let header_mtime = header.mtime().map_err(|e| field("mtime", e))?;
        let uid = u32::try_from(uid)
            .map_err(|_| StoreError::invalid(name, format!("uid {uid} too large")))?;
        let gid = u32::try_from(gid)
            .map_err(|_| StoreError::invalid(name, format!("gid {gid} too large")))?;
        let (uid, gid) = match &opts.shift {
            Some(s) => (s.uid(uid, name)?, s.gid(gid, name)?),
            None => (uid, gid),
        };
        let mut mtime = seconds(i64::try_from(header_mtime).unwrap_or(i64::MAX), 0);
        let mut atime = None;
        let mut xattrs = Vec::new();
        if let Some(pax) = entry.pax_extensions().map_err(|e| field("pax", e))? {
            for ext in pax {
                let ext = ext.map_err(|e| field("pax", e))?;
                let key = ext.key_bytes();
                if let Some(xname) = key.strip_prefix(b"SCHILY.xattr.") {
                    if is_overlay_xattr(xname) {
                        dropped.overlay_xattrs += 1;
                        continue;
                    }
                    let mut value = ext.value_bytes().to_vec();
                    if xname == CAPABILITY_XATTR
                        && let Some(shift) = &opts.shift
                    {
                        value = shift_capability(&value, shift, name)?;
                    }
                    xattrs.push((OsStr::from_bytes(xname).to_owned(), value));
                } else if key == b"mtime" {
                    if let Some(t) = parse_pax_time(ext.value_bytes()) {
                        mtime = t;
                    }
                } else if key == b"atime"
                    && let Some(t) = parse_pax_time(ext.value_bytes())
                {
                    atime = Some(t);
                }
            }
        }
        if !opts.xattrs && !xattrs.is_empty() {
            dropped.unsupported_xattrs += xattrs.len() as u64;
            xattrs.clear();
        }
        Ok(Meta {
            uid,
            gid,
            mode,
            atime: atime.unwrap_or(mtime),
            mtime,
            xattrs,
        })
    }

    /// Metadata for a directory the applier makes on its own.
    pub(crate) fn default_dir(shift: Option<&IdShift>) -> Meta {
        let (uid, gid) = root_owner(shift);
        let now = TimeSpec::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        Meta {
            uid,
            gid,
            mode: 0o755,
            atime: now,
            mtime: now,
            xattrs: Vec::new(),
        }
    }

    /// Applies owner, mode and xattrs to an open regular file or directory; for files also
    /// the times (directories get theirs after all their children exist).
    pub(crate) fn apply_to_fd(
        &self,
        fd: BorrowedFd<'_>,
        opts: &MetaOptions,
        set_times: bool,
        entry: &str,
        dropped: &mut Dropped,
    ) -> Result<(), StoreError> {
        let ctx =
            |what: &str, e: nix::Error| StoreError::io(format!("{what} of {entry:?}"), e.into());
        if opts.chown {
            // chown clears setuid/setgid and file capabilities, so it comes first.
            fchown(
                fd,
                Some(Uid::from_raw(self.uid)),
                Some(Gid::from_raw(self.gid)),
            )
            .map_err(|e| ctx("chown", e))?;
        }
        fchmod(fd, Mode::from_bits_truncate(self.mode)).map_err(|e| ctx("chmod", e))?;
        for (name, value) in &self.xattrs {
            match sys::fset_xattr(fd, name, value) {
                Ok(()) => {}
                Err(e) if sys::is_unsupported(&e) => dropped.unsupported_xattrs += 1,
                Err(e) => {
                    return Err(StoreError::io(
                        format!("setting xattr {name:?} on {entry:?}"),
                        e,
                    ));
                }
            }
        }
        if set_times {
            futimens(fd, &self.atime, &self.mtime).map_err(|e| ctx("setting times", e))?;
        }
        Ok(())
    }

    /// Applies metadata to `name` in `dir` without opening it (symlinks, devices, FIFOs).
    pub(crate) fn apply_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        is_symlink: bool,
        opts: &MetaOptions,
        entry: &str,
        dropped: &mut Dropped,
    ) -> Result<(), StoreError> {
        let ctx =
            |what: &str, e: nix::Error| StoreError::io(format!("{what} of {entry:?}"), e.into());
        if opts.chown {
            fchownat(
                dir,
                name,
                Some(Uid::from_raw(self.uid)),
                Some(Gid::from_raw(self.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| ctx("chown", e))?;
        }
        if !is_symlink {
            // Not a symlink (just created by us), so following is not a concern here.
            fchmodat(
                dir,
                name,
                Mode::from_bits_truncate(self.mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| ctx("chmod", e))?;
        }
        for (xname, value) in &self.xattrs {
            match sys::lset_xattr_at(dir, name, xname, value) {
                Ok(()) => {}
                // Linux refuses user.* xattrs on symlinks and device nodes.
                Err(e) if sys::is_unsupported(&e) || e.raw_os_error() == Some(libc::EPERM) => {
                    dropped.unsupported_xattrs += 1
                }
                Err(e) => {
                    return Err(StoreError::io(
                        format!("setting xattr {xname:?} on {entry:?}"),
                        e,
                    ));
                }
            }
        }
        utimensat(
            dir,
            name,
            &self.atime,
            &self.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| ctx("setting times", e))?;
        Ok(())
    }
}

fn seconds(secs: i64, nanos: i64) -> TimeSpec {
    TimeSpec::new(secs, nanos)
}

/// PAX times are decimal seconds with an optional fraction: `1700000000.123456789`.
fn parse_pax_time(value: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(value).ok()?;
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = whole.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, c) in frac.chars().take(9).enumerate() {
        let d = i64::from(c.to_digit(10)?);
        nanos += d * 10i64.pow(8 - i as u32);
    }
    if secs < 0 && nanos > 0 {
        // -1.5 means 1.5 s before the epoch.
        return Some(seconds(secs - 1, 1_000_000_000 - nanos));
    }
    Some(seconds(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_checks_the_range() {
        let s = IdShift::PROXMOX_DEFAULT;
        assert_eq!(s.uid(0, "x").unwrap(), 100_000);
        assert_eq!(s.gid(65_535, "x").unwrap(), 165_535);
        assert!(matches!(
            s.uid(65_536, "x"),
            Err(StoreError::InvalidLayer { .. })
        ));
        let huge = IdShift {
            uid_offset: u32::MAX,
            gid_offset: 0,
            count: 10,
        };
        assert!(huge.uid(5, "x").is_err());
    }

    #[test]
    fn capabilities_become_v3_with_the_shifted_root() {
        let s = IdShift::PROXMOX_DEFAULT;
        // v2, effective flag set, CAP_NET_BIND_SERVICE (bit 10) permitted.
        let mut v2 = Vec::new();
        v2.extend_from_slice(&(VFS_CAP_REVISION_2 | 1).to_le_bytes());
        v2.extend_from_slice(&(1u32 << 10).to_le_bytes());
        v2.extend_from_slice(&[0; 12]);
        let v3 = shift_capability(&v2, &s, "x").unwrap();
        assert_eq!(v3.len(), VFS_CAP_V3_LEN);
        assert_eq!(
            u32::from_le_bytes(v3[0..4].try_into().unwrap()),
            VFS_CAP_REVISION_3 | 1
        );
        assert_eq!(&v3[4..20], &v2[4..20]);
        assert_eq!(u32::from_le_bytes(v3[20..24].try_into().unwrap()), 100_000);
        // An existing v3 rootid is shifted as well.
        let again = shift_capability(&[&v3[..20], &7u32.to_le_bytes()].concat(), &s, "x").unwrap();
        assert_eq!(
            u32::from_le_bytes(again[20..24].try_into().unwrap()),
            100_007
        );
        assert!(shift_capability(&v2[..10], &s, "x").is_err());
    }

    #[test]
    fn pax_times() {
        let t = parse_pax_time(b"1700000000.5").unwrap();
        assert_eq!((t.tv_sec(), t.tv_nsec()), (1_700_000_000, 500_000_000));
        let t = parse_pax_time(b"12").unwrap();
        assert_eq!((t.tv_sec(), t.tv_nsec()), (12, 0));
        let t = parse_pax_time(b"-1.25").unwrap();
        assert_eq!((t.tv_sec(), t.tv_nsec()), (-2, 750_000_000));
        assert!(parse_pax_time(b"x").is_none());
    }

    #[test]
    fn overlay_xattrs_are_recognized() {
        assert!(is_overlay_xattr(b"trusted.overlay.opaque"));
        assert!(is_overlay_xattr(b"user.overlay.redirect"));
        assert!(!is_overlay_xattr(b"security.capability"));
    }
}
