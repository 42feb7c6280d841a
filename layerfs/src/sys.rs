//! Thin fd-relative file system helpers: confined opens, extended attributes, recursive
//! removal and disk usage. Nothing here follows a symlink unless it says so.

use std::collections::HashSet;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// How a confined path may be resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolve {
    /// Symlinks are followed as if the root were `/`: an absolute target starts at the
    /// root, `..` stops there.
    InRoot,
    /// Any symlink fails with `ELOOP`.
    NoSymlinks,
}

/// Opens the directory `rel` below `root` (`""` or `.` is `root` itself) for use as a
/// directory fd and for metadata changes.
pub(crate) fn open_dir_beneath(
    root: BorrowedFd<'_>,
    rel: &Path,
    resolve: Resolve,
) -> nix::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let flags = match resolve {
        Resolve::InRoot => ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        Resolve::NoSymlinks => ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS,
    };
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(flags);
    loop {
        match openat2(root, rel, how) {
            // The kernel asks for a retry when a rename raced with a `..` lookup.
            Err(Errno::EAGAIN) => continue,
            other => return other,
        }
    }
}

/// Opens the directory entry `name` of `dir` without following a symlink.
pub(crate) fn open_child_dir(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// `lstat` of `name` in `dir`; `None` if it does not exist.
pub(crate) fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<Option<FileStat>> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn file_type(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

pub(crate) fn is_dir(st: &FileStat) -> bool {
    file_type(st) == SFlag::S_IFDIR
}

/// Whether `st` is an overlayfs whiteout (a character device 0:0).
pub(crate) fn is_whiteout(st: &FileStat) -> bool {
    file_type(st) == SFlag::S_IFCHR && st.st_rdev == 0
}

/// Removes `name` from `dir`, recursively if it is a directory, never following symlinks.
/// A missing `name` is not an error.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<()> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EISDIR) => {}
        Err(e) => return Err(e),
    }
    let child = match open_child_dir(dir, name) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    empty_dir(child.as_fd())?;
    match unlinkat(dir, name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes everything inside the directory `dir`.
pub(crate) fn empty_dir(dir: BorrowedFd<'_>) -> nix::Result<()> {
    for name in list_dir(dir)? {
        remove_all_at(dir, &name)?;
    }
    Ok(())
}

/// The names in directory `dir` (without `.` and `..`).
pub(crate) fn list_dir(dir: BorrowedFd<'_>) -> nix::Result<Vec<OsString>> {
    let fd = openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name.to_vec()));
        }
    }
    Ok(names)
}

/// The path the kernel reports for an open fd.
pub(crate) fn fd_path(fd: BorrowedFd<'_>) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// A path naming `name` inside the directory open as `dir`, for the few calls that have no
/// fd-relative form (`lsetxattr` and friends). The directory part is the fd itself, so the
/// path cannot be redirected; the final component is not followed by the `l*` calls.
fn proc_child_path(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<CString> {
    let mut bytes = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    bytes.extend_from_slice(name.as_bytes());
    CString::new(bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn xattr_name(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Whether this process runs in a user namespace (moby/sys's `userns.RunningInUserNS`,
/// which containerd asks): its uid map is anything but the whole identity map.
pub(crate) fn in_user_namespace() -> bool {
    static IN_USERNS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *IN_USERNS.get_or_init(|| {
        std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|map| uid_map_is_userns(&map))
    })
}

fn uid_map_is_userns(map: &str) -> bool {
    let mut lines = map.lines().filter(|l| !l.trim().is_empty());
    let first: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    lines.next().is_some() || first != ["0", "0", "4294967295"]
}

/// Whether an xattr call failed because the file system has no xattrs (or not this kind).
pub(crate) fn is_unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EOPNOTSUPP)
}

/// Sets an extended attribute on an open file or directory.
pub(crate) fn fset_xattr(fd: BorrowedFd<'_>, name: &OsStr, value: &[u8]) -> io::Result<()> {
    let name = xattr_name(name)?;
    // SAFETY: `name` is a valid C string, `value` a valid buffer of the given length, and
    // `fd` an open descriptor for the duration of the call.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Removes an extended attribute of an open file or directory.
pub(crate) fn fremove_xattr(fd: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let name = xattr_name(name)?;
    // SAFETY: `name` is a valid C string and `fd` an open descriptor during the call.
    let rc = unsafe { libc::fremovexattr(fd.as_raw_fd(), name.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets an extended attribute on `entry` in `dir` without following it if it is a symlink.
pub(crate) fn lset_xattr_at(
    dir: BorrowedFd<'_>,
    entry: &OsStr,
    name: &OsStr,
    value: &[u8],
) -> io::Result<()> {
    let path = proc_child_path(dir, entry)?;
    let name = xattr_name(name)?;
    // SAFETY: both strings are valid C strings and `value` a valid buffer of its length.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads one extended attribute of `entry` in `dir` (not following symlinks); `None` if
/// absent or if the file system has no xattrs.
pub(crate) fn lget_xattr_at(
    dir: BorrowedFd<'_>,
    entry: &OsStr,
    name: &OsStr,
) -> io::Result<Option<Vec<u8>>> {
    let path = proc_child_path(dir, entry)?;
    let name = xattr_name(name)?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: valid C strings; `buf` is writable for `buf.len()` bytes.
        let n = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(Some(buf));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::EOPNOTSUPP) => return Ok(None),
            Some(libc::ERANGE) => buf.resize(buf.len() * 4, 0),
            _ => return Err(e),
        }
        if buf.len() > 1 << 20 {
            return Err(io::Error::from_raw_os_error(libc::E2BIG));
        }
    }
}

/// All extended attributes of `entry` in `dir` (not following symlinks), sorted by name.
/// Empty if the file system has no xattrs.
pub(crate) fn list_xattrs_at(
    dir: BorrowedFd<'_>,
    entry: &OsStr,
) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let path = proc_child_path(dir, entry)?;
    let mut buf = vec![0u8; 1024];
    let len = loop {
        // SAFETY: valid C string; `buf` is writable for `buf.len()` bytes.
        let n = unsafe { libc::llistxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) => return Ok(Vec::new()),
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            _ => return Err(e),
        }
    };
    let mut out = Vec::new();
    for name in buf[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = OsStr::from_bytes(name);
        if let Some(value) = lget_xattr_at(dir, entry, name)? {
            out.push((name.to_owned(), value));
        }
    }
    out.sort();
    Ok(out)
}

/// Flushes the whole file system holding `fd` to stable storage.
pub(crate) fn syncfs(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `fd` is an open descriptor for the duration of the call.
    let rc = unsafe { libc::syncfs(fd.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bytes allocated and inodes used below (and including) the directory `dir`; hard links
/// count once.
pub(crate) fn disk_usage(dir: BorrowedFd<'_>) -> nix::Result<(u64, u64)> {
    let mut seen = HashSet::new();
    let st = nix::sys::stat::fstat(dir)?;
    let mut totals = (block_bytes(&st), 1);
    du_walk(dir, &mut seen, &mut totals)?;
    Ok(totals)
}

fn block_bytes(st: &FileStat) -> u64 {
    (st.st_blocks as u64).saturating_mul(512)
}

fn du_walk(
    dir: BorrowedFd<'_>,
    seen: &mut HashSet<(u64, u64)>,
    totals: &mut (u64, u64),
) -> nix::Result<()> {
    for name in list_dir(dir)? {
        let Some(st) = lstat_at(dir, &name)? else {
            continue;
        };
        if st.st_nlink > 1 && !is_dir(&st) && !seen.insert((st.st_dev, st.st_ino)) {
            continue;
        }
        totals.0 += block_bytes(&st);
        totals.1 += 1;
        if is_dir(&st) {
            let child = open_child_dir(dir, &name)?;
            du_walk(child.as_fd(), seen, totals)?;
        }
    }
    Ok(())
}

/// Creates `path` and its missing parents (like `mkdir -p`) with mode 0700.
pub(crate) fn create_dir_all(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Opens a directory by absolute path (following symlinks: these are configured paths).
pub(crate) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(std::fs::File::open(path)?.into())
}

/// `fsync` of an open file or directory.
pub(crate) fn fsync(fd: BorrowedFd<'_>) -> io::Result<()> {
    nix::unistd::fsync(fd).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn user_namespaces_are_told_by_the_uid_map() {
        assert!(!uid_map_is_userns("         0          0 4294967295\n"));
        assert!(uid_map_is_userns("         0     100000      65536\n"));
        assert!(uid_map_is_userns("0 0 4294967295\n1 1 1\n"));
        assert!(uid_map_is_userns(""));
    }

    #[test]
    fn in_root_resolves_escapes_inside_and_no_symlinks_refuses_them() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        symlink("../..", root.join("a/up")).unwrap();
        symlink("a/b", root.join("inner")).unwrap();
        let fd = open_dir(&root).unwrap();
        let real = |rel: &str| {
            let dir = open_dir_beneath(fd.as_fd(), Path::new(rel), Resolve::InRoot).unwrap();
            fd_path(dir.as_fd()).unwrap()
        };
        assert_eq!(real("abs"), root.join("etc"));
        assert_eq!(real("a/up"), root);
        assert_eq!(real("a/up/a/up/etc"), root.join("etc"));
        assert_eq!(real("inner"), root.join("a/b"));
        assert_eq!(
            open_dir_beneath(fd.as_fd(), Path::new("inner"), Resolve::NoSymlinks).unwrap_err(),
            Errno::ELOOP
        );
        assert!(open_dir_beneath(fd.as_fd(), Path::new(""), Resolve::NoSymlinks).is_ok());
    }

    #[test]
    fn remove_all_does_not_follow_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"x").unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("d/e/f")).unwrap();
        std::fs::write(root.join("d/e/f/file"), b"x").unwrap();
        symlink(&outside, root.join("d/link")).unwrap();
        let fd = open_dir(&root).unwrap();
        remove_all_at(fd.as_fd(), OsStr::new("d")).unwrap();
        remove_all_at(fd.as_fd(), OsStr::new("missing")).unwrap();
        assert!(!root.join("d").exists());
        assert!(outside.join("keep").exists());
    }

    #[test]
    fn disk_usage_counts_hardlinks_once() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("a"), vec![1u8; 100_000]).unwrap();
        std::fs::hard_link(tmp.path().join("a"), tmp.path().join("b")).unwrap();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        let fd = open_dir(tmp.path()).unwrap();
        let (bytes, inodes) = disk_usage(fd.as_fd()).unwrap();
        assert_eq!(inodes, 3); // root, a (= b), d
        assert!((100_000..200_000).contains(&bytes), "{bytes}");
    }
}
