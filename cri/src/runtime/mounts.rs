//! A container's CRI mounts: each host path is cloned as a detached mount tree
//! (`open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)`) and passed to podinit, which attaches it in
//! the container's own mount namespace, as runc binds a volume inside the container. Nothing
//! is mounted on the host, so the host can unmount and remove what is below a volume while
//! the container runs; and the clone of a shared host mount is a peer of it, so propagation
//! (HostToContainer, Bidirectional) reaches through the pod's CT untouched.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use k8s_cri::v1::{Mount, MountPropagation};
use nix::mount::{MntFlags, umount2};

use super::error::{Result, RuntimeError};
use super::records::MountRecord;

/// Where daemons before mount trees bound a mount on the host (`ctrs/<id>/mounts/<index>`);
/// kept to undo what such a daemon left.
pub fn staging_path(ctr_dir: &Path, index: usize) -> PathBuf {
    ctr_dir.join("mounts").join(index.to_string())
}

/// A mount checked and cloned, ready to pass to podinit.
pub struct PreparedMount {
    pub record: MountRecord,
    pub tree: OwnedFd,
}

/// Checks each mount and clones its host path. Nothing is left to undo on failure: the
/// clones are detached and go with their fds.
pub fn prepare(mounts: &[Mount]) -> Result<Vec<PreparedMount>> {
    mounts
        .iter()
        .enumerate()
        .map(|(index, m)| prepare_one(index, m))
        .collect()
}

fn prepare_one(index: usize, m: &Mount) -> Result<PreparedMount> {
    if m.host_path.is_empty() || !m.host_path.starts_with('/') {
        return Err(RuntimeError::invalid(format!(
            "mount {:?}: host path {:?} must be absolute",
            m.container_path, m.host_path
        )));
    }
    if !m.container_path.starts_with('/') {
        return Err(RuntimeError::invalid(format!(
            "mount of {:?}: container path {:?} must be absolute",
            m.host_path, m.container_path
        )));
    }
    if m.image.is_some() {
        return Err(RuntimeError::unimplemented(format!(
            "mount {:?}: image volumes are not supported yet",
            m.container_path
        )));
    }
    let propagation = MountPropagation::try_from(m.propagation).map_err(|_| {
        RuntimeError::invalid(format!(
            "mount {:?}: unknown propagation {}",
            m.container_path, m.propagation
        ))
    })?;
    if m.recursive_read_only {
        if !m.readonly {
            return Err(RuntimeError::invalid(format!(
                "mount {:?}: recursive_read_only needs readonly",
                m.container_path
            )));
        }
        if !kernel_has_mount_setattr() {
            return Err(RuntimeError::invalid(format!(
                "mount {:?}: recursive_read_only needs mount_setattr (Linux 5.12 or later)",
                m.container_path
            )));
        }
        if propagation != MountPropagation::PropagationPrivate {
            return Err(RuntimeError::invalid(format!(
                "mount {:?}: recursive_read_only needs private propagation, not {}",
                m.container_path,
                propagation.as_str_name()
            )));
        }
    }
    source_metadata(&m.host_path)?;
    match propagation {
        MountPropagation::PropagationPrivate => {}
        MountPropagation::PropagationHostToContainer => {
            require_propagation(&m.host_path, false)?;
        }
        MountPropagation::PropagationBidirectional => {
            require_propagation(&m.host_path, true)?;
        }
    }
    let tree = clone_tree(Path::new(&m.host_path)).map_err(|e| {
        RuntimeError::internal(format!(
            "mount {:?}: cloning the mounts at {}: {e}",
            m.container_path, m.host_path
        ))
    })?;
    Ok(PreparedMount {
        record: MountRecord {
            index,
            host_path: m.host_path.clone(),
            container_path: m.container_path.clone(),
            readonly: m.readonly,
            recursive_read_only: m.recursive_read_only,
            propagation: propagation as i32,
        },
        tree,
    })
}

/// Makes every prepared mount show `map` (a pod in its own user namespace), as containerd
/// has runc idmap a volume: files owned by host ids `0..count` appear owned by the
/// container's, and its root writes as host root would there. A file system that cannot be
/// idmapped fails the container, naming the volume.
pub fn idmap_all(prepared: &[PreparedMount], map: &layerfs::idmap::IdMap) -> Result<()> {
    if prepared.is_empty() {
        return Ok(());
    }
    let userns = layerfs::idmap::user_namespace(map).map_err(|e| {
        RuntimeError::internal(format!("making a user namespace for idmapped volumes: {e}"))
    })?;
    for p in prepared {
        layerfs::idmap::idmap_detached(p.tree.as_fd(), userns.as_fd(), true).map_err(|e| {
            let m = &p.record;
            if layerfs::idmap::is_unsupported(&e) {
                RuntimeError::precondition(format!(
                    "mount {:?}: {} (or a mount below it) cannot be idmapped ({e}), which a \
                     pod with its own user namespace needs for its volumes",
                    m.container_path, m.host_path
                ))
            } else {
                RuntimeError::internal(format!(
                    "mount {:?}: idmapping {}: {e}",
                    m.container_path, m.host_path
                ))
            }
        })?;
    }
    Ok(())
}

const OPEN_TREE_CLONE: libc::c_uint = 1;

/// Whether the kernel has mount_setattr (Linux 5.12), which recursive read-only mounts need.
pub fn kernel_has_mount_setattr() -> bool {
    // An invalid call: EBADF or EINVAL where the syscall exists, ENOSYS where it does not.
    // SAFETY: mount_setattr with a bad fd and a null attr of size 0 reads and writes nothing.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1,
            c"".as_ptr(),
            0,
            std::ptr::null::<u8>(),
            0,
        )
    };
    !(r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS))
}

/// `open_tree(path, OPEN_TREE_CLONE | AT_RECURSIVE)`: a detached copy of the mounts at and
/// below `path`, following symlinks as a bind mount does.
pub(crate) fn clone_tree(path: &Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    let flags =
        OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_RECURSIVE as libc::c_uint;
    // SAFETY: open_tree with a NUL-terminated path that outlives the call; it returns a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(fd).map_err(|_| std::io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// containerd's rule: a HostToContainer mount needs a host path on a shared or slave mount
/// (else nothing the host mounts later can reach the container), a Bidirectional one a
/// shared mount (else nothing reaches the host). Says which mount is the problem.
fn require_propagation(host_path: &str, bidirectional: bool) -> Result<()> {
    let fail = |what: String| RuntimeError::precondition(what);
    let id = mount_id(Path::new(host_path))
        .map_err(|e| fail(format!("mount source {host_path}: {e}")))?;
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| fail(format!("reading /proc/self/mountinfo: {e}")))?;
    let Some((mount_point, optional)) = find_mount(&info, id) else {
        return Err(fail(format!(
            "mount source {host_path}: its mount (id {id}) is not in /proc/self/mountinfo"
        )));
    };
    let shared = optional.iter().any(|f| f.starts_with("shared:"));
    let slave = optional.iter().any(|f| f.starts_with("master:"));
    if bidirectional && !shared {
        return Err(fail(format!(
            "Bidirectional mount of {host_path}: it is on {mount_point}, which is not a shared \
             mount (make it one: mount --make-rshared {mount_point})"
        )));
    }
    if !bidirectional && !shared && !slave {
        return Err(fail(format!(
            "HostToContainer mount of {host_path}: it is on {mount_point}, which is neither a \
             shared nor a slave mount (make it one: mount --make-rshared {mount_point})"
        )));
    }
    Ok(())
}

/// The id of the mount `path` is on (statx STATX_MNT_ID: exact, even under stacked mounts).
fn mount_id(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: an all-zero statx is a valid buffer for the kernel to fill.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: statx with a NUL-terminated path and a buffer that outlive the call.
    let r = unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), 0, libc::STATX_MNT_ID, &mut st) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if st.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(std::io::Error::other(
            "the kernel did not report the mount id",
        ));
    }
    Ok(st.stx_mnt_id)
}

/// The mount point and the optional fields (`shared:N`, `master:N`, ...) of mount `id`.
fn find_mount(mountinfo: &str, id: u64) -> Option<(String, Vec<String>)> {
    mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.first()?.parse::<u64>().ok()? != id {
            return None;
        }
        let optional = fields
            .get(6..)?
            .iter()
            .take_while(|f| **f != "-")
            .map(|f| f.to_string())
            .collect();
        Some((unescape_mountinfo(fields.get(4)?), optional))
    })
}

/// The mount source, created as a directory (0755) when it does not exist, as containerd
/// and CRI-O do: the kubelet passes hostPath volumes without a type unchecked and relies on
/// the runtime for that. A source that cannot be created (a parent is a file, say) is an
/// invalid request.
fn source_metadata(host_path: &str) -> Result<std::fs::Metadata> {
    match std::fs::metadata(host_path) {
        Ok(meta) => return Ok(meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(RuntimeError::invalid(format!(
                "mount source {host_path}: {e}"
            )));
        }
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(host_path)
        .map_err(|e| {
            RuntimeError::invalid(format!(
                "mount source {host_path} does not exist and cannot be created: {e}"
            ))
        })?;
    tracing::info!(path = host_path, "created missing mount source directory");
    std::fs::metadata(host_path)
        .map_err(|e| RuntimeError::invalid(format!("mount source {host_path}: {e}")))
}

/// Unbinds what a daemon before mount trees staged on the host for these mounts; what is not
/// there is fine.
pub fn unstage(ctr_dir: &Path, mounts: &[MountRecord]) {
    for m in mounts {
        let target = staging_path(ctr_dir, m.index);
        match umount2(&target, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                tracing::warn!(target = %target.display(), error = %e, "unmounting staged mount")
            }
        }
    }
}

/// Unmounts everything mounted at or below `dir`, deepest first, so that the directory can
/// be removed. Used when a container or pod directory is removed and after a crash.
pub fn unmount_below(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    for p in points {
        if let Err(e) = umount2(&p, MntFlags::MNT_DETACH)
            && e != nix::errno::Errno::EINVAL
            && e != nix::errno::Errno::ENOENT
        {
            tracing::warn!(mountpoint = %p.display(), error = %e, "unmounting");
        }
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|t| u8::from_str_radix(t, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_unescaping() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/x\\"), "/x\\");
    }

    fn mount(host: &str, container: &str) -> Mount {
        Mount {
            container_path: container.into(),
            host_path: host.into(),
            ..Default::default()
        }
    }

    fn error_of(r: Result<Vec<PreparedMount>>) -> RuntimeError {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }

    #[test]
    fn bad_mounts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let tmp = dir.path().display().to_string();
        // Below a regular file: cannot exist.
        let below = format!("{}/missing", file.display());
        let e = error_of(prepare(&[mount(&below, "/data")]));
        assert_eq!(e.code, tonic::Code::InvalidArgument);
        assert!(e.message.contains("/file/missing"), "{e}");
        for m in [mount(&tmp, "data"), mount("rel", "/data")] {
            assert_eq!(error_of(prepare(&[m])).code, tonic::Code::InvalidArgument);
        }
        let rro = |readonly, propagation: MountPropagation| Mount {
            readonly,
            recursive_read_only: true,
            propagation: propagation as i32,
            ..mount(&tmp, "/data")
        };
        let e = error_of(prepare(&[rro(false, MountPropagation::PropagationPrivate)]));
        assert!(e.message.contains("needs readonly"), "{e}");
        for p in [
            MountPropagation::PropagationHostToContainer,
            MountPropagation::PropagationBidirectional,
        ] {
            let e = error_of(prepare(&[rro(true, p)]));
            assert_eq!(e.code, tonic::Code::InvalidArgument);
            assert!(e.message.contains(p.as_str_name()), "{e}");
        }
        let bad = Mount {
            propagation: 9,
            ..mount(&tmp, "/data")
        };
        assert_eq!(error_of(prepare(&[bad])).code, tonic::Code::InvalidArgument);
    }

    #[test]
    fn mountinfo_fields() {
        let info = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                    40 27 0:37 / /a\\040b rw shared:7 master:2 - tmpfs t rw\n";
        assert_eq!(find_mount(info, 22), Some(("/proc".into(), vec![])));
        assert_eq!(
            find_mount(info, 40),
            Some(("/a b".into(), vec!["shared:7".into(), "master:2".into()]))
        );
        assert_eq!(find_mount(info, 41), None);
        assert!(mount_id(Path::new("/proc")).unwrap() > 0);
    }

    #[test]
    fn this_kernel_has_mount_setattr() {
        // The test machines run Linux 6.x.
        assert!(kernel_has_mount_setattr());
    }

    #[test]
    fn missing_sources_become_directories() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a/b");
        let meta = source_metadata(src.to_str().unwrap()).unwrap();
        assert!(meta.is_dir());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
    }
}
