//! Staging a container's CRI mounts on the host: each host path is bound under the
//! container's directory in the pod directory, whence the bind propagates into the CT, where
//! podinit binds it into the container at its destination.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use k8s_cri::v1::{Mount, MountPropagation};
use nix::mount::{MntFlags, MsFlags, mount, umount2};

use super::error::{Result, RuntimeError};
use super::records::MountRecord;

pub fn staging_path(ctr_dir: &Path, index: usize) -> PathBuf {
    ctr_dir.join("mounts").join(index.to_string())
}

/// Checks each mount and binds its host path at its staging path. On failure, what was
/// already bound is unbound again.
pub fn stage(ctr_dir: &Path, mounts: &[Mount]) -> Result<Vec<MountRecord>> {
    let mut done: Vec<MountRecord> = Vec::new();
    for (index, m) in mounts.iter().enumerate() {
        match stage_one(ctr_dir, index, m) {
            Ok(r) => done.push(r),
            Err(e) => {
                unstage(ctr_dir, &done);
                return Err(e);
            }
        }
    }
    Ok(done)
}

fn stage_one(ctr_dir: &Path, index: usize, m: &Mount) -> Result<MountRecord> {
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
    let meta = source_metadata(&m.host_path)?;
    let target = staging_path(ctr_dir, index);
    let io = |what: &str, e: std::io::Error| {
        RuntimeError::internal(format!(
            "staging mount {} at {}: {what}: {e}",
            m.host_path,
            target.display()
        ))
    };
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io("mkdir", e))?;
    }
    if meta.is_dir() {
        std::fs::create_dir_all(&target).map_err(|e| io("mkdir", e))?;
    } else {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&target)
            .map_err(|e| io("create", e))?;
    }
    mount(
        Some(Path::new(&m.host_path)),
        &target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| io("bind", e.into()))?;
    let propagation =
        MountPropagation::try_from(m.propagation).unwrap_or(MountPropagation::PropagationPrivate);
    if propagation == MountPropagation::PropagationPrivate {
        // Mounts made later under the host path stay out of the container.
        mount(
            None::<&str>,
            &target,
            None::<&str>,
            MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| io("make private", e.into()))?;
    }
    Ok(MountRecord {
        index,
        host_path: m.host_path.clone(),
        container_path: m.container_path.clone(),
        readonly: m.readonly,
        propagation: propagation as i32,
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

/// Unbinds staged mounts; what is already gone is fine.
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

    #[test]
    fn bad_sources_are_refused_before_anything_is_mounted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let m = Mount {
            container_path: "/data".into(),
            // Below a regular file: cannot exist.
            host_path: file.display().to_string() + "/missing",
            ..Default::default()
        };
        let e = stage(dir.path(), &[m]).unwrap_err();
        assert_eq!(e.code, tonic::Code::InvalidArgument);
        assert!(e.message.contains("/file/missing"), "{e}");
        let m = Mount {
            container_path: "data".into(),
            host_path: "/tmp".into(),
            ..Default::default()
        };
        assert_eq!(
            stage(dir.path(), &[m]).unwrap_err().code,
            tonic::Code::InvalidArgument
        );
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
