//! The container's filesystem view, built in its new mount namespace (runs in the forked child
//! before exec): mounts resolved inside the root filesystem, the spec's device nodes (mknod, as
//! runc makes them), a `/dev` with the usual nodes bound from the CT's `/dev`, `pivot_root`,
//! masked and read-only paths.
//!
//! Every mount target is resolved with `openat2(RESOLVE_IN_ROOT)` and mounted through its
//! `/proc/self/fd` link, so a symlink in the image cannot redirect a mount outside the rootfs.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::mountopts::locked_flags;
use crate::spec::{ContainerConfig, DeviceNode, MountPlan, MountSource};
use crate::sys;

/// Device nodes bound from the CT's `/dev` into a container's `/dev` tmpfs.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// An error in the child, already phrased for the Start caller.
pub type SetupResult<T> = Result<T, String>;

fn ctx<T>(r: io::Result<T>, what: impl FnOnce() -> String) -> SetupResult<T> {
    r.map_err(|e| format!("{}: {e}", what()))
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

/// `mount(2)` with optional parts.
pub fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: u64,
    data: Option<&str>,
) -> io::Result<()> {
    let src = source.map(cstr).transpose()?;
    let tgt = cstr(target)?;
    let fs = fstype
        .map(|s| CString::new(s).map_err(|_| io::Error::other("NUL in fstype")))
        .transpose()?;
    let dat = data
        .filter(|d| !d.is_empty())
        .map(|s| CString::new(s).map_err(|_| io::Error::other("NUL in mount data")))
        .transpose()?;
    // SAFETY: all pointers are NUL-terminated strings that outlive the call, or null.
    let ret = unsafe {
        libc::mount(
            src.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            tgt.as_ptr(),
            fs.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags as libc::c_ulong,
            dat.as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr().cast::<libc::c_void>()),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Opens `path` inside `root` as an `O_PATH` handle.
fn open_path(root: BorrowedFd<'_>, path: &Path) -> io::Result<OwnedFd> {
    sys::open_in_root(root, path, libc::O_PATH, 0)
}

/// `mkdir -p` inside `root`; returns a handle on the final directory. A dangling symlink on
/// the way is followed (inside the root) and its target created, as `mkdir -p` in a chroot does.
pub fn mkdir_all_in_root(root: BorrowedFd<'_>, path: &Path) -> io::Result<OwnedFd> {
    mkdir_all_depth(root, path, 0)
}

fn mkdir_all_depth(root: BorrowedFd<'_>, path: &Path, depth: u32) -> io::Result<OwnedFd> {
    if depth > 40 {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    let mut prefix = PathBuf::from("/");
    let mut cur = open_path(root, &prefix)?;
    for c in path.components() {
        let Component::Normal(name) = c else { continue };
        let parent = prefix.clone();
        prefix.push(name);
        let dir_flags = libc::O_PATH | libc::O_DIRECTORY;
        cur = match sys::open_in_root(root, &prefix, dir_flags, 0) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let cname =
                    CString::new(name.as_bytes()).map_err(|_| io::Error::other("NUL in path"))?;
                sys::mkdirat(cur.as_fd(), &cname, 0o755)?;
                match sys::open_in_root(root, &prefix, dir_flags, 0) {
                    Ok(fd) => fd,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                        // The name exists but leads nowhere: a dangling symlink.
                        let target = std::fs::read_link(fd_path(cur.as_fd()).join(name))?;
                        let resolved = if target.is_absolute() {
                            target
                        } else {
                            parent.join(target)
                        };
                        let clean = crate::spec::clean_container_path(&resolved);
                        mkdir_all_depth(root, &clean, depth + 1)?;
                        sys::open_in_root(root, &prefix, dir_flags, 0)?
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
    }
    Ok(cur)
}

/// Makes sure `path` exists inside `root` as a file (for binding a non-directory onto it).
fn ensure_file_in_root(root: BorrowedFd<'_>, path: &Path) -> io::Result<OwnedFd> {
    match open_path(root, path) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(e),
    }
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let dir = mkdir_all_in_root(root, parent)?;
    let cname = CString::new(name.as_bytes()).map_err(|_| io::Error::other("NUL in path"))?;
    // SAFETY: openat with a valid dirfd and NUL-terminated name; the fd is closed right away.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            cname.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o644 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by openat and is owned by nobody else.
    unsafe { libc::close(fd) };
    open_path(root, path)
}

/// Builds the container's filesystem and pivots into it. `pod_shm` is the pod-wide `/dev/shm`
/// (None: the container gets a private tmpfs there); `passed` are the mount trees passed with
/// Create, attached here, in the container's own mount namespace.
pub fn setup(cfg: &ContainerConfig, pod_shm: Option<&Path>, passed: &[OwnedFd]) -> SetupResult<()> {
    ctx(
        mount(None, Path::new("/"), None, cfg.root_propagation, None),
        || "setting mount propagation of /".into(),
    )?;
    ctx(
        mount(
            Some(&cfg.root),
            &cfg.root,
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        ),
        || format!("bind-mounting root {}", cfg.root.display()),
    )?;
    let root = ctx(
        sys::open(&cfg.root, libc::O_PATH | libc::O_DIRECTORY, 0),
        || format!("opening root {}", cfg.root.display()),
    )?;

    let mut dev_is_tmpfs = false;
    for m in &cfg.mounts {
        mount_one(root.as_fd(), m, pod_shm, passed)
            .map_err(|e| format!("mount {}: {e}", m.destination.display()))?;
        if m.destination == Path::new("/dev") {
            dev_is_tmpfs = matches!(&m.source, MountSource::Fs { fstype, .. } if fstype == "tmpfs");
        }
    }
    for node in &cfg.device_nodes {
        make_node(root.as_fd(), node).map_err(|e| {
            format!(
                "creating device {} ({}:{}): {e}",
                node.path.display(),
                node.major,
                node.minor
            )
        })?;
    }
    if dev_is_tmpfs {
        populate_dev(root.as_fd(), &cfg.device_nodes)?;
    }
    ctx(mkdir_all_in_root(root.as_fd(), &cfg.process.cwd), || {
        format!("creating cwd {}", cfg.process.cwd.display())
    })?;
    drop(root);
    pivot(&cfg.root)?;

    for p in &cfg.masked_paths {
        mask_path(p).map_err(|e| format!("masking {}: {e}", p.display()))?;
    }
    for p in &cfg.readonly_paths {
        readonly_path(p).map_err(|e| format!("making {} read-only: {e}", p.display()))?;
    }
    if cfg.root_readonly {
        let root = ctx(sys::open(Path::new("/"), libc::O_PATH, 0), || {
            "opening /".into()
        })?;
        let locked = locked_flags(ctx(sys::mount_flags(root.as_fd()), || "statvfs /".into())?);
        ctx(
            mount(
                None,
                Path::new("/"),
                None,
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | locked,
                None,
            ),
            || "remounting / read-only".into(),
        )?;
    }
    Ok(())
}

fn mount_one(
    root: BorrowedFd<'_>,
    m: &MountPlan,
    pod_shm: Option<&Path>,
    passed: &[OwnedFd],
) -> io::Result<()> {
    let opts = &m.options;
    let dest = &m.destination;
    if let MountSource::Passed(n) = m.source {
        let tree = passed
            .get(n)
            .ok_or_else(|| io::Error::other(format!("mount tree {n} was not passed")))?;
        let is_dir = sys::fstat(tree.as_fd())?.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let target = if is_dir {
            mkdir_all_in_root(root, dest)?
        } else {
            ensure_file_in_root(root, dest)?
        };
        sys::move_mount_onto(tree.as_fd(), target.as_fd())?;
        return finish_bind(root, dest, opts);
    }
    match (&m.source, bind_source(&m.source, pod_shm)) {
        (MountSource::Fs { fstype, .. }, _) if crate::cgroupmount::is_cgroup_mount(fstype) => {
            mount_cgroupfs(root, dest, opts.flags)
        }
        (MountSource::Fs { fstype, source }, _) => {
            let target = mkdir_all_in_root(root, dest)?;
            let data = opts.data_string();
            mount(
                Some(Path::new(source)),
                &fd_path(target.as_fd()),
                Some(fstype),
                opts.flags,
                Some(&data),
            )?;
            if !opts.propagation.is_empty() {
                let target = open_path(root, dest)?;
                propagate(target.as_fd(), &opts.propagation)?;
            }
            Ok(())
        }
        (_, Some(src)) => {
            let meta = std::fs::metadata(&src)
                .map_err(|e| io::Error::new(e.kind(), format!("source {}: {e}", src.display())))?;
            let target = if meta.is_dir() {
                mkdir_all_in_root(root, dest)?
            } else {
                ensure_file_in_root(root, dest)?
            };
            let mut flags = libc::MS_BIND;
            if opts.recursive {
                flags |= libc::MS_REC;
            }
            mount(Some(&src), &fd_path(target.as_fd()), None, flags, None)?;
            finish_bind(root, dest, opts)
        }
        (_, None) => {
            // No pod-wide /dev/shm (podinit is not PID 1 or could not mount it): private tmpfs.
            let target = mkdir_all_in_root(root, dest)?;
            mount(
                Some(Path::new("shm")),
                &fd_path(target.as_fd()),
                Some("tmpfs"),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                Some("mode=1777,size=65536k"),
            )
        }
    }
}

/// The container's `/sys/fs/cgroup` (see [`crate::cgroupmount`]). Runs in the container's
/// mount and cgroup namespaces, before pivot_root: the CT's own `/sys/fs/cgroup` is still at
/// its place and says what to mount.
fn mount_cgroupfs(root: BorrowedFd<'_>, dest: &Path, flags: u64) -> io::Result<()> {
    use crate::cgroupmount::{Layout, ct_links, layout};
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let Some(found) = layout(&mountinfo, ct_links()) else {
        return Err(io::Error::other(
            "the pod CT has no cgroup filesystem under /sys/fs/cgroup",
        ));
    };
    let readonly = flags & libc::MS_RDONLY != 0;
    let target = mkdir_all_in_root(root, dest)?;
    match found {
        Layout::Unified => mount(
            Some(Path::new("cgroup2")),
            &fd_path(target.as_fd()),
            Some("cgroup2"),
            flags,
            None,
        ),
        Layout::Legacy {
            hierarchies,
            unified,
            links,
        } => {
            let common = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            mount(
                Some(Path::new("tmpfs")),
                &fd_path(target.as_fd()),
                Some("tmpfs"),
                common,
                Some("mode=755"),
            )?;
            let at =
                |name: &str| -> io::Result<OwnedFd> { mkdir_all_in_root(root, &dest.join(name)) };
            for (name, controllers) in &hierarchies {
                let dir = at(name)?;
                mount(
                    Some(Path::new("cgroup")),
                    &fd_path(dir.as_fd()),
                    Some("cgroup"),
                    flags,
                    Some(controllers),
                )
                .map_err(|e| io::Error::new(e.kind(), format!("cgroup {controllers}: {e}")))?;
            }
            if let Some(name) = unified {
                let dir = at(&name)?;
                mount(
                    Some(Path::new("cgroup2")),
                    &fd_path(dir.as_fd()),
                    Some("cgroup2"),
                    flags,
                    None,
                )?;
            }
            let tmpfs = open_path(root, dest)?;
            for (name, to) in links {
                let link = fd_path(tmpfs.as_fd()).join(&name);
                if let Err(e) = std::os::unix::fs::symlink(&to, &link)
                    && e.kind() != io::ErrorKind::AlreadyExists
                {
                    return Err(e);
                }
            }
            if readonly {
                mount(
                    None,
                    &fd_path(tmpfs.as_fd()),
                    None,
                    libc::MS_REMOUNT | libc::MS_RDONLY | common,
                    Some("mode=755"),
                )?;
            }
            Ok(())
        }
    }
}

/// After a bind (or an attached tree) is in place at `dest`: its flags (`ro` on the top mount
/// only, unless `rro`), then its propagation.
fn finish_bind(
    root: BorrowedFd<'_>,
    dest: &Path,
    opts: &crate::mountopts::MountOptions,
) -> io::Result<()> {
    // Reopen: the old handle still names the directory under the new mount.
    let target = open_path(root, dest)?;
    let extra = opts.flags & !(libc::MS_BIND | libc::MS_REC);
    if extra != 0 {
        let locked = locked_flags(sys::mount_flags(target.as_fd())?);
        mount(
            None,
            &fd_path(target.as_fd()),
            None,
            libc::MS_BIND | libc::MS_REMOUNT | extra | locked,
            None,
        )?;
    }
    if opts.recursive_ro {
        set_recursive_readonly(target.as_fd())?;
    }
    propagate(target.as_fd(), &opts.propagation)
}

/// Where a bind mount reads from: its own source, or the pod's shm for `PodShm`.
fn bind_source(s: &MountSource, pod_shm: Option<&Path>) -> Option<PathBuf> {
    match s {
        MountSource::Bind(p) => Some(p.clone()),
        MountSource::PodShm => pod_shm.map(Path::to_path_buf),
        MountSource::Fs { .. } | MountSource::Passed(_) => None,
    }
}

fn propagate(target: BorrowedFd<'_>, changes: &[u64]) -> io::Result<()> {
    for &p in changes {
        mount(None, &fd_path(target), None, p, None)?;
    }
    Ok(())
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;

/// `rro`: read-only on the whole mount tree (mount_setattr, Linux 5.12+).
fn set_recursive_readonly(target: BorrowedFd<'_>) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let empty = c"";
    // SAFETY: mount_setattr reads `attr` (size given) and the empty path; both outlive it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            target.as_raw_fd(),
            empty.as_ptr(),
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Creates a `linux.devices` node inside `root` with its mode and owner. An existing entry is
/// left alone (as runc leaves it).
fn make_node(root: BorrowedFd<'_>, node: &DeviceNode) -> io::Result<()> {
    let parent = node.path.parent().unwrap_or(Path::new("/"));
    let name = node
        .path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let cname = CString::new(name.as_bytes()).map_err(|_| io::Error::other("NUL in path"))?;
    let dir = mkdir_all_in_root(root, parent)?;
    match sys::mknodat(
        dir.as_fd(),
        &cname,
        node.kind | node.mode,
        node.major,
        node.minor,
    ) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => return Ok(()),
        Err(e) => return Err(e),
    }
    // The umask may have taken bits away.
    sys::fchmodat(dir.as_fd(), &cname, node.mode)?;
    sys::fchownat(dir.as_fd(), &cname, node.uid, node.gid)
}

/// Binds the usual device nodes from the CT's `/dev` (unless the spec made a node at that
/// path) and adds the standard symlinks; `/dev/ptmx` is always the link to `pts/ptmx`, even
/// where the spec made a node (a privileged container's host devices), as runc replaces it.
fn populate_dev(root: BorrowedFd<'_>, nodes: &[DeviceNode]) -> SetupResult<()> {
    for name in DEVICES {
        if nodes.iter().any(|n| n.path == Path::new("/dev").join(name)) {
            continue;
        }
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            if *name == "tty" {
                continue;
            }
            return Err(format!("device {} is missing in the pod", host.display()));
        }
        let dest = Path::new("/dev").join(name);
        let target = ctx(ensure_file_in_root(root, &dest), || {
            format!("creating {}", dest.display())
        })?;
        ctx(
            mount(
                Some(&host),
                &fd_path(target.as_fd()),
                None,
                libc::MS_BIND,
                None,
            ),
            || format!("binding {}", host.display()),
        )?;
    }
    let dev = ctx(
        sys::open_in_root(root, Path::new("/dev"), libc::O_PATH | libc::O_DIRECTORY, 0),
        || "opening /dev".into(),
    )?;
    let links: [(&CStr, &CStr); 5] = [
        (c"/proc/self/fd", c"fd"),
        (c"/proc/self/fd/0", c"stdin"),
        (c"/proc/self/fd/1", c"stdout"),
        (c"/proc/self/fd/2", c"stderr"),
        (c"pts/ptmx", c"ptmx"),
    ];
    ctx(sys::unlinkat(dev.as_fd(), c"ptmx"), || {
        "removing /dev/ptmx".into()
    })?;
    for (target, name) in links {
        ctx(sys::symlinkat(target, dev.as_fd(), name), || {
            format!("symlink /dev/{}", name.to_string_lossy())
        })?;
    }
    if Path::new("/proc/kcore").exists() {
        ctx(sys::symlinkat(c"/proc/kcore", dev.as_fd(), c"core"), || {
            "symlink /dev/core".into()
        })?;
    }
    Ok(())
}

/// `pivot_root` into `root` and detach the old root, as runc does it.
fn pivot(root: &Path) -> SetupResult<()> {
    let old_root = ctx(
        sys::open(Path::new("/"), libc::O_DIRECTORY | libc::O_RDONLY, 0),
        || "opening the old root".into(),
    )?;
    ctx(std::env::set_current_dir(root), || {
        format!("chdir {}", root.display())
    })?;
    let dot = c".";
    // SAFETY: pivot_root with two NUL-terminated paths.
    let ret = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) };
    if ret < 0 {
        return Err(format!("pivot_root: {}", io::Error::last_os_error()));
    }
    // The old root is stacked on the new one. "." must name the old root's mount, not the
    // new root's: a recursive change on the new root would reach the container's own
    // mounts and turn a Bidirectional (shared) volume into a slave.
    // SAFETY: fchdir to a directory fd we own.
    if unsafe { libc::fchdir(old_root.as_raw_fd()) } < 0 {
        return Err(format!(
            "chdir to the old root: {}",
            io::Error::last_os_error()
        ));
    }
    drop(old_root);
    // Keep our unmount from propagating anywhere, then drop the old root.
    ctx(
        mount(
            None,
            Path::new("."),
            None,
            libc::MS_SLAVE | libc::MS_REC,
            None,
        ),
        || "making the old root a slave".into(),
    )?;
    // SAFETY: umount2 of "." with MNT_DETACH.
    if unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) } < 0 {
        return Err(format!(
            "detaching the old root: {}",
            io::Error::last_os_error()
        ));
    }
    ctx(std::env::set_current_dir("/"), || "chdir /".into())
}

fn mask_path(p: &Path) -> io::Result<()> {
    let meta = match std::fs::metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.is_dir() {
        mount(
            Some(Path::new("tmpfs")),
            p,
            Some("tmpfs"),
            libc::MS_RDONLY,
            None,
        )
    } else {
        mount(Some(Path::new("/dev/null")), p, None, libc::MS_BIND, None)
    }
}

fn readonly_path(p: &Path) -> io::Result<()> {
    match mount(Some(p), p, None, libc::MS_BIND | libc::MS_REC, None) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    }
    let fd = sys::open(p, libc::O_PATH, 0)?;
    let locked = locked_flags(sys::mount_flags(fd.as_fd())?);
    mount(
        None,
        p,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC | locked,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mkdir_all_stays_inside_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&root).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        // An absolute symlink that would point outside when followed on the host.
        std::os::unix::fs::symlink(&outside, root.join("escape")).expect("symlink");
        let rootfd = sys::open(&root, libc::O_PATH | libc::O_DIRECTORY, 0).expect("open");
        mkdir_all_in_root(rootfd.as_fd(), Path::new("/escape/a/b")).expect("mkdir_all");
        assert!(
            !outside.join("a").exists(),
            "nothing created outside the root"
        );
        // The symlink target is resolved inside the root instead.
        let inner = root
            .join(outside.strip_prefix("/").expect("abs"))
            .join("a/b");
        assert!(inner.is_dir(), "{}", inner.display());
    }

    #[test]
    fn ensure_file_creates_missing_parents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rootfd = sys::open(dir.path(), libc::O_PATH | libc::O_DIRECTORY, 0).expect("open");
        ensure_file_in_root(rootfd.as_fd(), Path::new("/etc/x/hosts")).expect("file");
        assert!(dir.path().join("etc/x/hosts").is_file());
        // Existing files are left alone.
        std::fs::write(dir.path().join("etc/x/hosts"), b"keep").expect("write");
        ensure_file_in_root(rootfd.as_fd(), Path::new("/etc/x/hosts")).expect("file");
        assert_eq!(
            std::fs::read(dir.path().join("etc/x/hosts")).expect("read"),
            b"keep"
        );
    }
}
