//! Path resolution below a layer root as if the root were `/`, as containerd resolves the
//! parent of every entry (`fs.RootPath`): symlinks are followed, an absolute target starts
//! again at the root, `..` never climbs above it. Components that do not exist are kept by
//! name (a later `..` drops them again), to be created by the caller.
//!
//! Every step is an `openat`/`fstatat` relative to a directory fd already inside the root,
//! and `..` is taken from the walk's own stack, never from the file system, so nothing a
//! symlink says can lead the walk out of the root.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::readlinkat;
use nix::sys::stat::SFlag;

use crate::sys::{self, Resolve};

/// Linux's limit on symlinks followed in one lookup.
pub(crate) const MAX_SYMLINKS: u32 = 40;

#[derive(Debug)]
pub(crate) enum WalkError {
    TooManySymlinks,
    /// A component that must be a directory is not one.
    NotDir,
    Sys(Errno),
}

impl From<Errno> for WalkError {
    fn from(e: Errno) -> Self {
        WalkError::Sys(e)
    }
}

/// Where a path resolved to.
#[derive(Debug)]
pub(crate) struct InRoot {
    /// The deepest existing directory of the path.
    pub fd: OwnedFd,
    /// Its real path below the root (no symlinks).
    pub existing: Vec<OsString>,
    /// The components below it that do not exist yet.
    pub missing: Vec<OsString>,
}

/// Resolves the directory path `components` below `root`, following every symlink.
pub(crate) fn resolve_dir(
    root: BorrowedFd<'_>,
    components: &[OsString],
) -> Result<InRoot, WalkError> {
    let mut pending: VecDeque<OsString> = components.iter().cloned().collect();
    // The real path so far: existing directories (with their fds), then missing names.
    let mut existing: Vec<(OsString, OwnedFd)> = Vec::new();
    let mut missing: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(c) = pending.pop_front() {
        match c.as_bytes() {
            b"" | b"." => continue,
            b".." => {
                if missing.pop().is_none() {
                    existing.pop();
                }
                continue;
            }
            _ => {}
        }
        if !missing.is_empty() {
            missing.push(c);
            continue;
        }
        let dir = match existing.last() {
            Some((_, fd)) => fd.as_fd(),
            None => root,
        };
        let Some(st) = sys::lstat_at(dir, &c)? else {
            missing.push(c);
            continue;
        };
        match sys::file_type(&st) {
            SFlag::S_IFDIR => {
                let fd = sys::open_child_dir(dir, &c)?;
                existing.push((c, fd));
            }
            SFlag::S_IFLNK => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(WalkError::TooManySymlinks);
                }
                let target = readlinkat(dir, c.as_os_str())?;
                let bytes = target.as_bytes();
                if bytes.first() == Some(&b'/') {
                    existing.clear();
                }
                for part in bytes.split(|b| *b == b'/').rev() {
                    pending.push_front(OsStr::from_bytes(part).to_owned());
                }
            }
            _ => return Err(WalkError::NotDir),
        }
    }
    let fd = match existing.last_mut() {
        Some((_, fd)) => fd
            .try_clone()
            .map_err(|e| WalkError::Sys(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))))?,
        None => sys::open_dir_beneath(root, Path::new(""), Resolve::NoSymlinks)?,
    };
    Ok(InRoot {
        fd,
        existing: existing.into_iter().map(|(name, _)| name).collect(),
        missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    fn components(p: &str) -> Vec<OsString> {
        p.split('/').map(OsString::from).collect()
    }

    fn resolve(root: &Path, p: &str) -> Result<(PathBuf, PathBuf), WalkError> {
        let fd = sys::open_dir(root).unwrap();
        let r = resolve_dir(fd.as_fd(), &components(p))?;
        let real: PathBuf = r.existing.iter().collect();
        assert_eq!(sys::fd_path(r.fd.as_fd()).unwrap(), root.join(&real));
        Ok((real, r.missing.iter().collect()))
    }

    #[test]
    fn symlinks_resolve_as_if_the_root_were_slash() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        for d in ["run/lock", "usr/lib", "var"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        symlink("/run", root.join("var/run")).unwrap();
        symlink("../../../../../run", root.join("var/uprun")).unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        symlink("/nowhere/deeper", root.join("dangling")).unwrap();
        symlink("..", root.join("run/up")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        std::fs::write(root.join("file"), b"").unwrap();
        symlink("/file", root.join("tofile")).unwrap();
        let p = |s: &str| PathBuf::from(s);
        let cases = [
            ("var/run", (p("run"), p(""))),
            ("var/run/lock", (p("run/lock"), p(""))),
            ("var/uprun/lock/x/y", (p("run/lock"), p("x/y"))),
            ("lib", (p("usr/lib"), p(""))),
            ("dangling/x", (p(""), p("nowhere/deeper/x"))),
            ("run/up/run/up/run/up/var", (p("var"), p(""))),
            ("run/up/up/var", (p(""), p("up/var"))),
            ("new/../var/run", (p("run"), p(""))),
            ("", (p(""), p(""))),
        ];
        for (path, expected) in cases {
            assert_eq!(resolve(&root, path).unwrap(), expected, "{path}");
        }
        assert!(matches!(
            resolve(&root, "loop1/x"),
            Err(WalkError::TooManySymlinks)
        ));
        assert!(matches!(resolve(&root, "file/x"), Err(WalkError::NotDir)));
        assert!(matches!(resolve(&root, "tofile"), Err(WalkError::NotDir)));
    }
}
