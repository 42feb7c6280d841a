//! Entry metadata from tar headers: owners (with the optional id shift), modes, times and
//! extended attributes, and applying it to created files.

use std::ffi::{OsStr, OsString};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;

use nix::fcntl::AtFlags;
use nix::sys::stat::{FchmodatFlags, Mode, UtimensatFlags, fchmod, fchmodat, futimens, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchown, fchownat};
use serde::{Deserialize, Serialize};

use super::archive::Header;
use super::header::Time;
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
pub(crate) const CAPABILITY_XATTR: &[u8] = b"security.capability";

/// Rewrites a file capability for a shifted container: the capability must name the
/// container's root as its owner (a v3 `rootid`), or the kernel would honour it for host
/// root only (v3) or in every namespace (v2).
fn shift_capability(value: &[u8], shift: &IdShift, entry: &str) -> Result<Vec<u8>, StoreError> {
    capability_with_rootid(value, entry, |rootid| shift.uid(rootid, entry))
}

/// A `security.capability` value (v2 or v3) as v3 with its root id (0 for v2) mapped
/// through `map_root`.
pub(crate) fn capability_with_rootid(
    value: &[u8],
    entry: &str,
    map_root: impl FnOnce(u32) -> Result<u32, StoreError>,
) -> Result<Vec<u8>, StoreError> {
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
    out.extend_from_slice(&map_root(rootid)?.to_le_bytes());
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
    /// `trusted.*` and overlayfs xattrs in the layer, which containerd ignores too.
    pub ignored_xattrs: u64,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct MetaOptions {
    pub shift: Option<IdShift>,
    pub xattrs: bool,
    pub chown: bool,
}

impl Meta {
    /// The metadata of an entry, as containerd applies it: owners (shifted if asked),
    /// permission bits with setuid/setgid/sticky, times (the access time no earlier than
    /// the modification time; times before the epoch or past 2262 are the epoch, Go's
    /// `boundTime`), and the `SCHILY.xattr.*` PAX records but `trusted.*` ones (containerd
    /// never sets those) and overlayfs ones.
    pub(crate) fn from_header(
        header: &Header,
        name: &str,
        opts: &MetaOptions,
        dropped: &mut Dropped,
    ) -> Result<Meta, StoreError> {
        let uid = u32::try_from(header.uid)
            .map_err(|_| StoreError::invalid(name, format!("uid {} out of range", header.uid)))?;
        let gid = u32::try_from(header.gid)
            .map_err(|_| StoreError::invalid(name, format!("gid {} out of range", header.gid)))?;
        let (uid, gid) = match &opts.shift {
            Some(s) => (s.uid(uid, name)?, s.gid(gid, name)?),
            None => (uid, gid),
        };
        let mode = (header.mode & 0o7777) as u32;
        let atime = header.atime.map_or(header.mtime, |a| a.max(header.mtime));
        let mut xattrs = Vec::new();
        for (key, value) in &header.pax {
            let Some(xname) = key.strip_prefix(b"SCHILY.xattr.") else {
                continue;
            };
            if xname.starts_with(b"trusted.") || is_overlay_xattr(xname) {
                dropped.ignored_xattrs += 1;
                continue;
            }
            let mut value = value.clone();
            if xname == CAPABILITY_XATTR
                && let Some(shift) = &opts.shift
            {
                value = shift_capability(&value, shift, name)?;
            }
            xattrs.push((OsStr::from_bytes(xname).to_owned(), value));
        }
        if !opts.xattrs && !xattrs.is_empty() {
            dropped.unsupported_xattrs += xattrs.len() as u64;
            xattrs.clear();
        }
        Ok(Meta {
            uid,
            gid,
            mode,
            atime: bound(atime),
            mtime: bound(header.mtime),
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

/// Go's `boundTime`: a time before the epoch, or past what nanoseconds since the epoch hold
/// in an `int64` (2262), is the epoch.
fn bound(t: Time) -> TimeSpec {
    let nanos = i128::from(t.secs) * 1_000_000_000 + i128::from(t.nanos);
    if nanos < 0 || nanos > i128::from(i64::MAX) {
        return TimeSpec::new(0, 0);
    }
    TimeSpec::new(t.secs, t.nanos)
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
    fn times_are_bounded_as_go_bounds_them() {
        let t = |secs, nanos| {
            let b = bound(Time::new(secs, nanos));
            (b.tv_sec(), b.tv_nsec())
        };
        assert_eq!(t(1_700_000_000, 5), (1_700_000_000, 5));
        assert_eq!(t(-1, 0), (0, 0));
        assert_eq!(t(0, -1), (0, 0));
        assert_eq!(t(9_223_372_036, 854_775_807), (9_223_372_036, 854_775_807));
        assert_eq!(t(9_223_372_036, 854_775_808), (0, 0));
        assert_eq!(t(i64::MAX, 0), (0, 0));
    }

    fn header(pax: &[(&str, &[u8])]) -> Header {
        Header {
            typeflag: b'0',
            name: b"f".to_vec(),
            linkname: Vec::new(),
            mode: 0o104_755,
            uid: 7,
            gid: 8,
            size: 0,
            mtime: Time::new(1_000, 0),
            atime: None,
            devmajor: 0,
            devminor: 0,
            pax: pax
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec()))
                .collect(),
            sparse: None,
        }
    }

    #[test]
    fn xattrs_modes_owners_and_times_from_the_header() {
        let opts = MetaOptions {
            shift: None,
            xattrs: true,
            chown: true,
        };
        let mut dropped = Dropped::default();
        let mut h = header(&[
            ("SCHILY.xattr.user.a", b"1"),
            ("SCHILY.xattr.security.capability", b"cap"),
            ("SCHILY.xattr.trusted.foo", b"x"),
            ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ("SCHILY.xattr.user.overlay.redirect", b"r"),
            ("LIBARCHIVE.xattr.user.b", b"2"),
            ("SCHILY.xattr.user.empty", b""),
        ]);
        h.atime = Some(Time::new(500, 0));
        let meta = Meta::from_header(&h, "f", &opts, &mut dropped).unwrap();
        let names: Vec<&OsStr> = meta.xattrs.iter().map(|(n, _)| n.as_os_str()).collect();
        assert_eq!(names, ["security.capability", "user.a", "user.empty"]);
        assert_eq!(dropped.ignored_xattrs, 3);
        assert_eq!(meta.mode, 0o4755);
        assert_eq!((meta.uid, meta.gid), (7, 8));
        // An access time before the modification time is the modification time.
        assert_eq!(meta.atime.tv_sec(), 1_000);
        h.atime = Some(Time::new(2_000, 0));
        let meta = Meta::from_header(&h, "f", &opts, &mut dropped).unwrap();
        assert_eq!((meta.atime.tv_sec(), meta.mtime.tv_sec()), (2_000, 1_000));
        h.uid = -1;
        assert!(Meta::from_header(&h, "f", &opts, &mut dropped).is_err());
        h.uid = 1 << 32;
        assert!(Meta::from_header(&h, "f", &opts, &mut dropped).is_err());
    }

    #[test]
    fn overlay_xattrs_are_recognized() {
        assert!(is_overlay_xattr(b"trusted.overlay.opaque"));
        assert!(is_overlay_xattr(b"user.overlay.redirect"));
        assert!(!is_overlay_xattr(b"security.capability"));
    }
}
