//! A container's devices, as containerd gives them: the CRI `devices` (device plugins: GPUs,
//! `/dev/fuse`, ...) looked up on the node, and for a privileged container every device node
//! of the node's `/dev`. They go into the OCI spec as `linux.devices` (podinit creates the
//! nodes in the container) and as `linux.resources.devices` allow rules (podinit's device
//! cgroup; see `podinit::devices`).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};

use super::error::{Result, RuntimeError};

/// Directories of `/dev` that hold no devices of the node's own (containerd's list).
const SKIPPED_DIRS: &[&str] = &["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

/// A device node found on the node, and where it goes in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevice {
    /// The node on the host (symlinks resolved).
    pub host_path: PathBuf,
    pub container_path: String,
    pub typ: LinuxDeviceType,
    pub major: i64,
    pub minor: i64,
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl HostDevice {
    pub fn linux_device(&self) -> LinuxDevice {
        let mut d = LinuxDevice::default();
        d.set_path(PathBuf::from(&self.container_path));
        d.set_typ(self.typ);
        d.set_major(self.major);
        d.set_minor(self.minor);
        d.set_file_mode(Some(self.file_mode));
        d.set_uid(Some(self.uid));
        d.set_gid(Some(self.gid));
        d
    }

    /// The cgroup rule allowing `access` on this node.
    pub fn allow(&self, access: &str) -> LinuxDeviceCgroup {
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(true);
        r.set_typ(Some(self.typ));
        r.set_major(Some(self.major));
        r.set_minor(Some(self.minor));
        r.set_access(Some(access.to_string()));
        r
    }
}

/// A CRI device resolved on the node: its nodes and the access the container gets to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedDevice {
    pub nodes: Vec<HostDevice>,
    /// `rwm` letters as the request gave them.
    pub permissions: String,
}

/// Why a path is no device.
enum NotADevice {
    Missing,
    Other(std::io::Error),
    Kind,
}

/// The node at `path` itself (not following a symlink), as containerd's `DeviceFromPath`.
fn device_at(path: &Path, container_path: String) -> std::result::Result<HostDevice, NotADevice> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            NotADevice::Missing
        } else {
            NotADevice::Other(e)
        }
    })?;
    let ft = meta.file_type();
    let typ = if ft.is_block_device() {
        LinuxDeviceType::B
    } else if ft.is_char_device() {
        LinuxDeviceType::C
    } else {
        return Err(NotADevice::Kind);
    };
    let rdev = meta.rdev();
    Ok(HostDevice {
        host_path: path.to_path_buf(),
        container_path,
        typ,
        major: i64::from(libc::major(rdev)),
        minor: i64::from(libc::minor(rdev)),
        file_mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    })
}

/// Every device node under `dir`, recursively, skipping what containerd's `getDevices` skips
/// (`pts`, `shm`, `fd`, `mqueue`, LXC's and udev's directories, `console`, FIFOs, anything
/// that is no device and entries that vanish meanwhile). `container_dir` is where `dir` lands.
fn walk(dir: &Path, container_dir: &Path, out: &mut Vec<HostDevice>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let path = e.path();
        let target = container_dir.join(&name);
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            if SKIPPED_DIRS.iter().any(|s| name == *s) {
                continue;
            }
            walk(&path, &target, out)?;
            continue;
        }
        if name == "console" {
            continue;
        }
        match device_at(&path, target.display().to_string()) {
            Ok(d) => out.push(d),
            Err(NotADevice::Missing | NotADevice::Kind) => {}
            Err(NotADevice::Other(err)) => return Err(err),
        }
    }
    Ok(())
}

/// Every device node of the node's `/dev`, at the same paths in the container: what a
/// privileged container gets (containerd's `WithHostDevices`).
pub fn host_devices() -> Result<Vec<HostDevice>> {
    host_devices_under(Path::new("/dev"))
}

fn host_devices_under(dev: &Path) -> Result<Vec<HostDevice>> {
    let mut out = Vec::new();
    walk(dev, Path::new("/dev"), &mut out).map_err(|e| {
        RuntimeError::internal(format!("listing the devices of {}: {e}", dev.display()))
    })?;
    Ok(out)
}

/// Looks up one CRI device: `host_path` (symlinks resolved, as containerd does) must be a
/// device node or a directory of them; `container_path` must be absolute; `permissions` are
/// `r`, `w` and `m` letters.
pub fn resolve(device: &k8s_cri::v1::Device) -> Result<ResolvedDevice> {
    let host = &device.host_path;
    let what = || format!("device {host:?}");
    if !host.starts_with('/') {
        return Err(RuntimeError::invalid(format!(
            "{}: host_path must be absolute",
            what()
        )));
    }
    let container = if device.container_path.is_empty() {
        host.clone()
    } else {
        device.container_path.clone()
    };
    if !container.starts_with('/') || container.contains('\0') {
        return Err(RuntimeError::invalid(format!(
            "{}: container_path {:?} must be absolute",
            what(),
            device.container_path
        )));
    }
    let permissions = device.permissions.clone();
    if permissions.is_empty() || !permissions.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(RuntimeError::invalid(format!(
            "{}: permissions {:?} must be letters of \"rwm\"",
            what(),
            device.permissions
        )));
    }
    let resolved = std::fs::canonicalize(host).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            RuntimeError::not_found(format!("{}: no such device on the node", what()))
        } else {
            RuntimeError::invalid(format!("{}: {e}", what()))
        }
    })?;
    let nodes = if resolved.is_dir() {
        let mut out = Vec::new();
        walk(&resolved, Path::new(&container), &mut out)
            .map_err(|e| RuntimeError::invalid(format!("{}: {e}", what())))?;
        if out.is_empty() {
            return Err(RuntimeError::invalid(format!(
                "{}: a directory without device nodes",
                what()
            )));
        }
        out
    } else {
        match device_at(&resolved, container) {
            Ok(d) => vec![d],
            Err(NotADevice::Missing) => {
                return Err(RuntimeError::not_found(format!(
                    "{}: no such device on the node",
                    what()
                )));
            }
            Err(NotADevice::Kind) => {
                return Err(RuntimeError::invalid(format!(
                    "{}: {} is not a device node",
                    what(),
                    resolved.display()
                )));
            }
            Err(NotADevice::Other(e)) => {
                return Err(RuntimeError::invalid(format!("{}: {e}", what())));
            }
        }
    };
    Ok(ResolvedDevice { nodes, permissions })
}

/// All of a request's devices, in order.
pub fn resolve_all(devices: &[k8s_cri::v1::Device]) -> Result<Vec<ResolvedDevice>> {
    devices.iter().map(resolve).collect()
}

/// In a pod with its own user namespace nothing may mknod, so each device node is bound into
/// the container instead (as runc binds them there): a detached clone of the host's node,
/// passed to podinit like a volume, idmapped with the pod's map where the node's filesystem
/// allows it (so the container's root owns what the host's root owns).
pub fn bind_trees(
    nodes: &[HostDevice],
    idmap: &layerfs::idmap::IdMap,
) -> Result<Vec<super::mounts::PreparedMount>> {
    let mut out = Vec::with_capacity(nodes.len());
    for (index, n) in nodes.iter().enumerate() {
        let tree = super::mounts::clone_tree(&n.host_path).map_err(|e| {
            RuntimeError::internal(format!(
                "device {}: cloning {}: {e}",
                n.container_path,
                n.host_path.display()
            ))
        })?;
        out.push(super::mounts::PreparedMount {
            record: super::records::MountRecord {
                index,
                host_path: n.host_path.display().to_string(),
                container_path: n.container_path.clone(),
                readonly: false,
                recursive_read_only: false,
                propagation: k8s_cri::v1::MountPropagation::PropagationPrivate as i32,
            },
            tree,
        });
    }
    if out.is_empty() {
        return Ok(out);
    }
    let userns = layerfs::idmap::user_namespace(idmap).map_err(|e| {
        RuntimeError::internal(format!("making a user namespace for idmapped devices: {e}"))
    })?;
    for p in &out {
        use std::os::fd::AsFd;
        if let Err(e) = layerfs::idmap::idmap_detached(p.tree.as_fd(), userns.as_fd(), false) {
            if !layerfs::idmap::is_unsupported(&e) {
                return Err(RuntimeError::internal(format!(
                    "device {}: idmapping {}: {e}",
                    p.record.container_path, p.record.host_path
                )));
            }
            // devtmpfs without idmapped mounts: the node shows the host's owner, unmapped.
            tracing::debug!(device = %p.record.host_path, error = %e, "device node not idmapped");
        }
    }
    Ok(out)
}

/// Applies a container's device policy (its spec's `linux.resources.devices` and runc's
/// defaults, as podinit reads them) to its cgroup from the host: what podinit cannot do in a
/// pod with its own user namespace.
pub fn apply_from_host(
    cg: &crate::stats::cgroup::Cgroup,
    rules: &[LinuxDeviceCgroup],
) -> Result<()> {
    use podinit::devices::{DevicePolicy, cgroup, rules_from_spec};
    let policy = rules_from_spec(rules)
        .and_then(|r| DevicePolicy::from_rules(&r))
        .map_err(|e| RuntimeError::invalid(e.to_string()))?;
    let applied = match cg {
        crate::stats::cgroup::Cgroup::V2(dir) => cgroup::apply_v2(dir, &policy),
        crate::stats::cgroup::Cgroup::V1(_) => match cg.dir("devices") {
            Some(dir) => cgroup::apply_v1(dir, &policy),
            None => {
                return Err(RuntimeError::precondition(
                    "the pod's cgroup has no v1 devices controller: the container's device \
                     access cannot be confined",
                ));
            }
        },
    };
    applied.map_err(|e| RuntimeError::internal(format!("the container's device cgroup: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(host: &str, container: &str, perms: &str) -> k8s_cri::v1::Device {
        k8s_cri::v1::Device {
            host_path: host.into(),
            container_path: container.into(),
            permissions: perms.into(),
        }
    }

    #[test]
    fn a_device_node() {
        let d = resolve(&dev("/dev/null", "/dev/mynull", "rw")).unwrap();
        assert_eq!(d.permissions, "rw");
        let n = &d.nodes[0];
        assert_eq!(
            (n.typ, n.major, n.minor, n.container_path.as_str()),
            (LinuxDeviceType::C, 1, 3, "/dev/mynull")
        );
        assert_eq!(n.file_mode, 0o666);
        let ld = n.linux_device();
        assert_eq!(ld.path(), Path::new("/dev/mynull"));
        let rule = n.allow("rw");
        assert_eq!(rule.access().as_deref(), Some("rw"));
        assert!(rule.allow());
    }

    #[test]
    fn symlinks_are_followed_and_the_container_path_defaults_to_the_host_path() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let d = resolve(&dev(link.to_str().unwrap(), "", "r")).unwrap();
        assert_eq!((d.nodes[0].major, d.nodes[0].minor), (1, 5));
        assert_eq!(d.nodes[0].container_path, link.display().to_string());
    }

    #[test]
    fn refusals_name_the_path_with_the_right_code() {
        let missing = resolve(&dev("/dev/pvecri-no-such-device", "/dev/x", "rw")).unwrap_err();
        assert_eq!(missing.code, tonic::Code::NotFound);
        assert!(
            missing.message.contains("/dev/pvecri-no-such-device"),
            "{missing:?}"
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        let e = resolve(&dev(file.to_str().unwrap(), "/dev/x", "rw")).unwrap_err();
        assert_eq!(e.code, tonic::Code::InvalidArgument);
        assert!(e.message.contains("not a device node"), "{e:?}");
        let e = resolve(&dev(dir.path().to_str().unwrap(), "/dev/x", "rw")).unwrap_err();
        assert_eq!(e.code, tonic::Code::InvalidArgument);
        assert!(e.message.contains("without device nodes"), "{e:?}");

        for (d, needle) in [
            (dev("/dev/null", "/dev/x", ""), "permissions"),
            (dev("/dev/null", "/dev/x", "rx"), "permissions"),
            (dev("/dev/null", "dev/x", "r"), "container_path"),
            (dev("dev/null", "/dev/x", "r"), "host_path"),
        ] {
            let e = resolve(&d).unwrap_err();
            assert_eq!(e.code, tonic::Code::InvalidArgument, "{d:?}");
            assert!(e.message.contains(needle), "{e:?}");
        }
    }

    #[test]
    fn directories_are_walked_as_containerd_walks_them() {
        // A fake /dev (mknod needs root: without it only the skipped entries are checked).
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("net")).unwrap();
        std::fs::create_dir_all(root.join("pts")).unwrap();
        std::fs::write(root.join("plain"), b"").unwrap();
        std::os::unix::fs::symlink("/dev/null", root.join("stdout")).unwrap();
        let mk = |p: &Path, kind: nix::sys::stat::SFlag, maj, min| {
            nix::sys::stat::mknod(
                p,
                kind,
                nix::sys::stat::Mode::from_bits_truncate(0o640),
                nix::sys::stat::makedev(maj, min),
            )
        };
        use nix::sys::stat::SFlag;
        if mk(&root.join("null"), SFlag::S_IFCHR, 1, 3).is_err() {
            // Not root: nothing to walk but the skipped entries.
            let e = host_devices_under(root).unwrap();
            assert!(e.is_empty());
            return;
        }
        mk(&root.join("net/tun"), SFlag::S_IFCHR, 10, 200).unwrap();
        mk(&root.join("pts/0"), SFlag::S_IFCHR, 136, 0).unwrap();
        mk(&root.join("console"), SFlag::S_IFCHR, 5, 1).unwrap();
        mk(&root.join("loop0"), SFlag::S_IFBLK, 7, 0).unwrap();
        mk(&root.join("fifo"), SFlag::S_IFIFO, 0, 0).unwrap();
        let found = host_devices_under(root).unwrap();
        let paths: Vec<_> = found.iter().map(|d| d.container_path.as_str()).collect();
        assert_eq!(paths, ["/dev/loop0", "/dev/net/tun", "/dev/null"]);
        assert_eq!(found[0].typ, LinuxDeviceType::B);
        assert_eq!(found[2].file_mode, 0o640);

        // A CRI device naming the directory: its nodes under the container path.
        let d = resolve(&dev(root.join("net").to_str().unwrap(), "/dev/vnet", "rwm")).unwrap();
        assert_eq!(d.nodes.len(), 1);
        assert_eq!(d.nodes[0].container_path, "/dev/vnet/tun");
    }
}
