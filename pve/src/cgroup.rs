//! Where a pod CT's cgroup goes, and the cgroup keys that carry its limits.
//!
//! Paths here are relative to the root of every hierarchy (LXC, running as root, creates the
//! CT's cgroup at the same relative path in each hierarchy: cgroup v1 controllers, the named
//! `systemd` hierarchy and the unified one).
//!
//! * cgroupfs driver: the kubelet's parent `/kubepods/burstable/pod<uid>` becomes
//!   `kubepods/burstable/pod<uid>/<pod id>` (containerd puts the sandbox at
//!   `<parent>/<sandbox id>` the same way).
//! * systemd driver: `kubepods-burstable-pod<uid>.slice` is expanded as systemd (and runc's
//!   `ExpandSlice`) does, to
//!   `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`, and the CT
//!   gets `pvecri-<pod id>.scope` in it (containerd: `cri-containerd-<id>.scope`). The scope is
//!   created by LXC directly, not registered with systemd, like Proxmox's own CTs.
//!
//! LXC's monitor process (one per CT) is kept out of the pod's cgroup, under
//! [`MONITOR_ROOT`]`/<pod id>`, so that it is not billed to the pod and survives it.

use std::io;
use std::path::{Path, PathBuf};

use crate::mountinfo;
use crate::spec::{CgroupDriver, PodResources};

/// Parent of the LXC monitors' cgroups; also where LXC parks a monitor while it removes the
/// CT's cgroups (`lxc.cgroup.dir.monitor.pivot`).
pub const MONITOR_ROOT: &str = "pvecri-monitor";
/// Parent used when the kubelet gives none, per driver.
pub const DEFAULT_CGROUPFS_PARENT: &str = "pvecri";
pub const DEFAULT_SYSTEMD_PARENT: &str = "system.slice";

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup parent `{parent}`: {reason}")]
    BadParent { parent: String, reason: String },
    #[error("no cgroup hierarchy is mounted under /sys/fs/cgroup")]
    NoHierarchy,
    #[error("reading /proc/self/mountinfo: {0}")]
    Mountinfo(#[source] io::Error),
    #[error("preparing the parent cgroup {path}: {source}")]
    Prepare {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("setting {file} = {value}: {source}")]
    Write {
        file: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("removing cgroup {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// How the host mounts cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v1 only.
    Legacy,
    /// v1 controllers plus an (empty) unified hierarchy, e.g. `/sys/fs/cgroup/unified`.
    Hybrid,
    /// cgroup v2 only (Proxmox VE 7 and later).
    Unified,
}

/// The mounted hierarchies: where to find (and clean up) a CT's cgroup directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchies {
    pub layout: Layout,
    /// Mount points of every hierarchy (v1 and v2) under `/sys/fs/cgroup`.
    pub roots: Vec<PathBuf>,
    /// The v1 hierarchy holding the `cpuset` controller, if any.
    pub cpuset_v1: Option<PathBuf>,
    /// The cgroup v2 mount when it carries the controllers (layout `Unified`).
    pub unified: Option<PathBuf>,
}

impl Hierarchies {
    /// Reads the calling process's mount table.
    pub fn detect() -> Result<Self, CgroupError> {
        let text =
            std::fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::Mountinfo)?;
        Self::from_mountinfo(&text)
    }

    pub fn from_mountinfo(text: &str) -> Result<Self, CgroupError> {
        let mut roots: Vec<PathBuf> = Vec::new();
        let mut cpuset_v1 = None;
        let (mut v1, mut v2, mut v2_at_top) = (false, false, false);
        for mount in mountinfo::parse(text) {
            let is_v1 = mount.fs_type == "cgroup";
            let is_v2 = mount.fs_type == "cgroup2";
            if !(is_v1 || is_v2) || !mount.mount_point.starts_with("/sys/fs/cgroup") {
                continue;
            }
            v1 |= is_v1;
            v2 |= is_v2;
            v2_at_top |= is_v2 && mount.mount_point == "/sys/fs/cgroup";
            let point = PathBuf::from(&mount.mount_point);
            if is_v1 && mount.super_options.split(',').any(|o| o == "cpuset") {
                cpuset_v1.get_or_insert_with(|| point.clone());
            }
            if !roots.contains(&point) {
                roots.push(point);
            }
        }
        let layout = match (v1, v2) {
            (false, false) => return Err(CgroupError::NoHierarchy),
            (true, false) => Layout::Legacy,
            (false, true) => Layout::Unified,
            (true, true) if v2_at_top => Layout::Unified,
            (true, true) => Layout::Hybrid,
        };
        let unified = (layout == Layout::Unified).then(|| PathBuf::from("/sys/fs/cgroup"));
        Ok(Self {
            layout,
            roots,
            cpuset_v1,
            unified,
        })
    }
}

/// The cgroup paths LXC is told about for one CT (`lxc.cgroup.dir.*`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CtCgroups {
    /// The CT's own cgroup: podinit's root, where it makes one child per container.
    pub container: String,
    /// The LXC monitor's cgroup.
    pub monitor: String,
    /// Where LXC moves the monitor before removing `monitor`.
    pub monitor_pivot: String,
}

impl CtCgroups {
    pub fn new(driver: CgroupDriver, parent: Option<&str>, id: &str) -> Result<Self, CgroupError> {
        let parent = parent_path(driver, parent)?;
        let leaf = match driver {
            CgroupDriver::Cgroupfs => id.to_string(),
            CgroupDriver::Systemd => format!("pvecri-{id}.scope"),
        };
        let container = if parent.is_empty() {
            leaf
        } else {
            format!("{parent}/{leaf}")
        };
        Ok(Self {
            container,
            monitor: format!("{MONITOR_ROOT}/{id}"),
            monitor_pivot: MONITOR_ROOT.to_string(),
        })
    }
}

/// The kubelet's cgroup parent as a path relative to the hierarchy roots (no leading `/`;
/// empty for the root itself).
pub fn parent_path(driver: CgroupDriver, parent: Option<&str>) -> Result<String, CgroupError> {
    let parent = parent.map(str::trim).filter(|p| !p.is_empty());
    match driver {
        CgroupDriver::Cgroupfs => cgroupfs_path(parent.unwrap_or(DEFAULT_CGROUPFS_PARENT)),
        CgroupDriver::Systemd => expand_slice(parent.unwrap_or(DEFAULT_SYSTEMD_PARENT)),
    }
}

fn bad(parent: &str, reason: &str) -> CgroupError {
    CgroupError::BadParent {
        parent: parent.to_string(),
        reason: reason.to_string(),
    }
}

fn cgroupfs_path(parent: &str) -> Result<String, CgroupError> {
    let relative = parent.trim_start_matches('/').trim_end_matches('/');
    if relative.is_empty() {
        return Ok(String::new());
    }
    for part in relative.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(bad(parent, "path parts must not be empty, `.` or `..`"));
        }
        if part.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad(
                parent,
                "must not contain whitespace or control characters",
            ));
        }
    }
    Ok(relative.to_string())
}

/// systemd's slice naming: `a-b-c.slice` lives in `a.slice/a-b.slice/a-b-c.slice`; `-.slice`
/// is the root.
pub fn expand_slice(slice: &str) -> Result<String, CgroupError> {
    const SUFFIX: &str = ".slice";
    let Some(name) = slice.strip_suffix(SUFFIX) else {
        return Err(bad(
            slice,
            "a systemd cgroup parent must be a `.slice` unit name",
        ));
    };
    if name.is_empty() {
        return Err(bad(slice, "empty slice name"));
    }
    if slice.contains('/') {
        return Err(bad(slice, "a slice name must not contain `/`"));
    }
    if slice.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad(
            slice,
            "must not contain whitespace or control characters",
        ));
    }
    if name == "-" {
        return Ok(String::new());
    }
    let mut path = Vec::new();
    let mut prefix = String::new();
    for part in name.split('-') {
        if part.is_empty() {
            return Err(bad(slice, "slice name parts between `-` must not be empty"));
        }
        path.push(format!("{prefix}{part}{SUFFIX}"));
        prefix.push_str(part);
        prefix.push('-');
    }
    Ok(path.join("/"))
}

/// LXC config keys for the pod-level limits, for the host's layout (LXC ignores `cgroup2` keys
/// on v1 controllers and would fail on keys for controllers the unified hierarchy lacks).
pub fn resource_keys(layout: Layout, resources: &PodResources) -> Vec<(String, String)> {
    let mut keys = Vec::new();
    let quota = resources.cpu_quota.filter(|q| *q > 0);
    let shares = resources.cpu_shares.filter(|s| *s > 0);
    match layout {
        Layout::Legacy | Layout::Hybrid => {
            if let Some(shares) = shares {
                keys.push(("lxc.cgroup.cpu.shares".into(), shares.to_string()));
            }
            if let Some(quota) = quota {
                let period = resources.cpu_period.unwrap_or(100_000);
                keys.push(("lxc.cgroup.cpu.cfs_period_us".into(), period.to_string()));
                keys.push(("lxc.cgroup.cpu.cfs_quota_us".into(), quota.to_string()));
            }
            if let Some(memory) = resources.memory_limit_bytes {
                keys.push((
                    "lxc.cgroup.memory.limit_in_bytes".into(),
                    memory.to_string(),
                ));
            }
        }
        Layout::Unified => {
            if let Some(shares) = shares {
                keys.push((
                    "lxc.cgroup2.cpu.weight".into(),
                    shares_to_weight(shares).to_string(),
                ));
            }
            if let Some(quota) = quota {
                let period = resources.cpu_period.unwrap_or(100_000);
                keys.push(("lxc.cgroup2.cpu.max".into(), format!("{quota} {period}")));
            }
            if let Some(memory) = resources.memory_limit_bytes {
                keys.push(("lxc.cgroup2.memory.max".into(), memory.to_string()));
            }
        }
    }
    keys
}

/// runc's mapping of v1 `cpu.shares` [2, 262144] onto v2 `cpu.weight` [1, 10000].
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// Makes the parents of a CT's cgroup ready for LXC to create and enter it, as runc does for
/// its containers. The kubelet creates the pod cgroup (`kubepods/besteffort/pod<uid>`) before
/// RunPodSandbox, and LXC only initialises the first path component it is given:
///
/// * v1 `cpuset`: a new cpuset cgroup starts with empty `cpuset.cpus` and `cpuset.mems` unless
///   its parent has `cgroup.clone_children` set, and no task can enter an empty one (`ENOSPC`).
///   Every ancestor gets the values of its parent where it has none (runc's `ensureParent` /
///   `copyIfNeeded`), and the CT's parent gets `clone_children`, so that the CT's cgroup, which
///   LXC makes, starts with its parent's CPUs and memory nodes.
/// * v2: a controller is usable in a cgroup only when every ancestor lists it in
///   `cgroup.subtree_control`; the kubelet enables them down to, but not in, the pod cgroup
///   (runc's `CreateCgroupPath`). Each ancestor enables what it has in `cgroup.controllers`.
///
/// `container` is relative to the hierarchy roots; missing ancestors are created.
pub fn prepare_parents(h: &Hierarchies, container: &str) -> Result<(), CgroupError> {
    let Some((parent, _leaf)) = container.rsplit_once('/') else {
        // Directly under the root: nothing between the root and the CT.
        return Ok(());
    };
    if let Some(root) = &h.cpuset_v1 {
        prepare_cpuset_v1(root, parent)?;
    }
    if let Some(root) = &h.unified {
        delegate_v2(root, parent)?;
    }
    Ok(())
}

fn prepare_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Prepare {
        path: path.to_path_buf(),
        source,
    }
}

fn mkdir_existing_ok(dir: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(prepare_err(dir)(e)),
    }
}

/// `root` is the cpuset hierarchy's mount point, `parent` the CT cgroup's parent below it.
fn prepare_cpuset_v1(root: &Path, parent: &str) -> Result<(), CgroupError> {
    let mut above = root.to_path_buf();
    for part in parent.split('/').filter(|p| !p.is_empty()) {
        let dir = above.join(part);
        mkdir_existing_ok(&dir)?;
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let path = dir.join(file);
            let own = std::fs::read_to_string(&path).map_err(prepare_err(&path))?;
            if !own.trim().is_empty() {
                continue;
            }
            let from = above.join(file);
            let inherited = std::fs::read_to_string(&from).map_err(prepare_err(&from))?;
            let inherited = inherited.trim();
            if inherited.is_empty() {
                return Err(prepare_err(&from)(io::Error::other(
                    "empty, and so is the cgroup below it",
                )));
            }
            std::fs::write(&path, inherited).map_err(prepare_err(&path))?;
            tracing::debug!(cgroup = %dir.display(), file, value = inherited, "filled an empty cpuset from its parent");
        }
        above = dir;
    }
    if above != root {
        let clone = above.join("cgroup.clone_children");
        let set = std::fs::read_to_string(&clone).map_err(prepare_err(&clone))?;
        if set.trim() != "1" {
            std::fs::write(&clone, "1").map_err(prepare_err(&clone))?;
        }
    }
    Ok(())
}

/// `root` is the v2 mount point, `parent` the CT cgroup's parent below it. The root and every
/// ancestor down to `parent` enable their available controllers for their children.
fn delegate_v2(root: &Path, parent: &str) -> Result<(), CgroupError> {
    let mut dir = root.to_path_buf();
    enable_controllers_v2(&dir)?;
    for part in parent.split('/').filter(|p| !p.is_empty()) {
        dir.push(part);
        mkdir_existing_ok(&dir)?;
        enable_controllers_v2(&dir)?;
    }
    Ok(())
}

fn enable_controllers_v2(dir: &Path) -> Result<(), CgroupError> {
    let available_path = dir.join("cgroup.controllers");
    let available =
        std::fs::read_to_string(&available_path).map_err(prepare_err(&available_path))?;
    let subtree = dir.join("cgroup.subtree_control");
    let enabled = std::fs::read_to_string(&subtree).map_err(prepare_err(&subtree))?;
    let missing: Vec<&str> = available
        .split_whitespace()
        .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let all: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
    if std::fs::write(&subtree, all.join(" ")).is_ok() {
        return Ok(());
    }
    // One refused controller fails the whole write: enable the others one by one. What stays
    // off shows up as a missing limit file when LXC or podinit writes that limit.
    for c in missing {
        if let Err(e) = std::fs::write(&subtree, format!("+{c}")) {
            tracing::warn!(cgroup = %dir.display(), controller = c, error = %e, "cannot enable a cgroup controller for the pod CT");
        }
    }
    Ok(())
}

/// Removes `relative` and everything below it in every hierarchy; missing directories are
/// fine. A cgroup that still holds processes makes this fail (`EBUSY`), which is the point:
/// it must not be reused while something lives in it.
pub fn remove_everywhere(roots: &[PathBuf], relative: &str) -> Result<(), CgroupError> {
    if relative.is_empty() {
        return Ok(());
    }
    for root in roots {
        remove_tree(&root.join(relative))?;
    }
    Ok(())
}

/// Processes in `relative` or below it, in any hierarchy (each appears once).
///
/// A CT that keeps the host's PID namespace does not end with its init: whatever the pod
/// left running lives on, reparented to the host's init, and only its cgroup still says
/// whose it is.
pub fn procs_everywhere(roots: &[PathBuf], relative: &str) -> Vec<u32> {
    let mut found = Vec::new();
    if relative.is_empty() {
        return found;
    }
    for root in roots {
        collect_procs(&root.join(relative), &mut found);
    }
    found.sort_unstable();
    found.dedup();
    found
}

fn collect_procs(dir: &Path, found: &mut Vec<u32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        found.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_procs(&entry.path(), found);
        }
    }
}

/// Writes the limits of [`resource_keys`] straight into a running CT's cgroup `relative`
/// (what LXC does at start from the same keys): `lxc.cgroup.<controller>.<file>` into that
/// controller's v1 hierarchy, `lxc.cgroup2.<file>` into the unified one.
pub fn apply_keys(
    hierarchies: &Hierarchies,
    relative: &str,
    keys: &[(String, String)],
) -> Result<(), CgroupError> {
    for (key, value) in keys {
        let file = if let Some(file) = key.strip_prefix("lxc.cgroup2.") {
            let Some(root) = hierarchies
                .roots
                .iter()
                .find(|r| r.ends_with("unified"))
                .or_else(|| hierarchies.roots.first())
            else {
                return Err(CgroupError::NoHierarchy);
            };
            root.join(relative).join(file)
        } else if let Some(file) = key.strip_prefix("lxc.cgroup.") {
            let controller = file.split('.').next().unwrap_or_default();
            let Some(root) = hierarchies.roots.iter().find(|r| {
                r.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.split(',').any(|c| c == controller))
            }) else {
                return Err(CgroupError::NoHierarchy);
            };
            root.join(relative).join(file)
        } else {
            continue;
        };
        std::fs::write(&file, value).map_err(|source| CgroupError::Write {
            file: file.clone(),
            value: value.clone(),
            source,
        })?;
    }
    Ok(())
}

fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CgroupError::Remove {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    for entry in entries.flatten() {
        // Only sub-cgroups are directories; the control files cannot (and need not) go.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CgroupError::Remove {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: &str = crate::spec::tests::ID;

    #[test]
    fn procs_are_collected_from_the_whole_tree_of_every_hierarchy() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir_all(a.join("ct/c1")).unwrap();
        std::fs::create_dir_all(b.join("ct")).unwrap();
        std::fs::write(a.join("ct/cgroup.procs"), "10\n11\n").unwrap();
        std::fs::write(a.join("ct/c1/cgroup.procs"), "12\n").unwrap();
        std::fs::write(b.join("ct/cgroup.procs"), "11\n13\n").unwrap();
        let roots = [a, b, tmp.path().join("missing")];
        assert_eq!(procs_everywhere(&roots, "ct"), [10, 11, 12, 13]);
        assert!(procs_everywhere(&roots, "").is_empty());
        assert!(procs_everywhere(&roots, "other").is_empty());
    }

    #[test]
    fn cgroupfs_parent_gets_the_ct_below_it() {
        let c = CtCgroups::new(
            CgroupDriver::Cgroupfs,
            Some("/kubepods/burstable/pod1234"),
            ID,
        )
        .unwrap();
        assert_eq!(c.container, format!("kubepods/burstable/pod1234/{ID}"));
        assert_eq!(c.monitor, format!("pvecri-monitor/{ID}"));
        assert_eq!(c.monitor_pivot, "pvecri-monitor");
    }

    #[test]
    fn cgroupfs_parent_forms() {
        assert_eq!(
            parent_path(CgroupDriver::Cgroupfs, Some("kubepods/")).unwrap(),
            "kubepods"
        );
        assert_eq!(parent_path(CgroupDriver::Cgroupfs, Some("/")).unwrap(), "");
        assert_eq!(parent_path(CgroupDriver::Cgroupfs, None).unwrap(), "pvecri");
        assert_eq!(
            parent_path(CgroupDriver::Cgroupfs, Some("")).unwrap(),
            "pvecri"
        );
        for bad in ["/kubepods/../etc", "/a//b", "/a/./b", "/a b"] {
            assert!(
                parent_path(CgroupDriver::Cgroupfs, Some(bad)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn systemd_slices_expand_like_systemd() {
        assert_eq!(
            expand_slice("kubepods-burstable-pod1234.slice").unwrap(),
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice"
        );
        assert_eq!(expand_slice("kubepods.slice").unwrap(), "kubepods.slice");
        assert_eq!(expand_slice("-.slice").unwrap(), "");
        for bad in [
            "kubepods",
            ".slice",
            "a--b.slice",
            "-a.slice",
            "a-.slice",
            "a/b.slice",
        ] {
            assert!(expand_slice(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn systemd_ct_is_a_scope_in_the_slice() {
        let c = CtCgroups::new(
            CgroupDriver::Systemd,
            Some("kubepods-besteffort-pod9.slice"),
            ID,
        )
        .unwrap();
        assert_eq!(
            c.container,
            format!(
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod9.slice/pvecri-{ID}.scope"
            )
        );
        let root = CtCgroups::new(CgroupDriver::Systemd, Some("-.slice"), ID).unwrap();
        assert_eq!(root.container, format!("pvecri-{ID}.scope"));
        let default = CtCgroups::new(CgroupDriver::Systemd, None, ID).unwrap();
        assert_eq!(default.container, format!("system.slice/pvecri-{ID}.scope"));
    }

    const HYBRID: &str = "\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
28 27 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
29 28 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
30 28 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
33 28 0:33 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
31 28 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
32 28 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const UNIFIED: &str = "\
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
28 27 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn layouts_are_told_apart() {
        let h = Hierarchies::from_mountinfo(HYBRID).unwrap();
        assert_eq!(h.layout, Layout::Hybrid);
        assert_eq!(
            h.roots,
            ["cpu", "memory", "cpuset", "systemd", "unified"]
                .map(|c| PathBuf::from("/sys/fs/cgroup").join(c))
        );
        assert_eq!(h.cpuset_v1, Some(PathBuf::from("/sys/fs/cgroup/cpuset")));
        assert_eq!(
            h.unified, None,
            "the hybrid unified mount has no controllers"
        );
        let u = Hierarchies::from_mountinfo(UNIFIED).unwrap();
        assert_eq!(u.layout, Layout::Unified);
        assert_eq!(u.roots, [PathBuf::from("/sys/fs/cgroup")]);
        assert_eq!(u.cpuset_v1, None);
        assert_eq!(u.unified, Some(PathBuf::from("/sys/fs/cgroup")));
        let legacy: String = HYBRID
            .lines()
            .filter(|l| !l.contains("cgroup2"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            Hierarchies::from_mountinfo(&legacy).unwrap().layout,
            Layout::Legacy
        );
        assert!(matches!(
            Hierarchies::from_mountinfo("27 1 254:0 / / rw - ext4 /dev/vda rw"),
            Err(CgroupError::NoHierarchy)
        ));
    }

    #[test]
    fn this_machine_has_a_layout() {
        let h = Hierarchies::detect().unwrap();
        assert!(!h.roots.is_empty());
    }

    #[test]
    fn limits_on_v1() {
        let r = PodResources {
            cpu_period: None,
            cpu_quota: Some(50_000),
            cpu_shares: Some(512),
            memory_limit_bytes: Some(256 << 20),
        };
        assert_eq!(
            resource_keys(Layout::Hybrid, &r),
            [
                ("lxc.cgroup.cpu.shares", "512"),
                ("lxc.cgroup.cpu.cfs_period_us", "100000"),
                ("lxc.cgroup.cpu.cfs_quota_us", "50000"),
                ("lxc.cgroup.memory.limit_in_bytes", "268435456"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn limits_on_v2() {
        let r = PodResources {
            cpu_period: Some(200_000),
            cpu_quota: Some(50_000),
            cpu_shares: Some(1024),
            memory_limit_bytes: Some(1 << 30),
        };
        assert_eq!(
            resource_keys(Layout::Unified, &r),
            [
                ("lxc.cgroup2.cpu.weight", "39"),
                ("lxc.cgroup2.cpu.max", "50000 200000"),
                ("lxc.cgroup2.memory.max", "1073741824"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn no_limits_no_keys() {
        let unlimited = PodResources {
            cpu_quota: Some(-1),
            cpu_shares: Some(0),
            ..PodResources::default()
        };
        assert!(resource_keys(Layout::Unified, &unlimited).is_empty());
        assert!(resource_keys(Layout::Legacy, &PodResources::default()).is_empty());
    }

    #[test]
    fn shares_map_onto_weights_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1), 1);
    }

    #[test]
    fn removing_a_tree_takes_children_first_and_tolerates_absence() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::create_dir_all(root.join("a/d")).unwrap();
        remove_everywhere(std::slice::from_ref(&root), "a").unwrap();
        assert!(!root.join("a").exists());
        remove_everywhere(std::slice::from_ref(&root), "a").unwrap();
    }

    /// A fake v1 cpuset hierarchy as the kernel and the kubelet leave it: the root and
    /// `kubepods` filled, `besteffort` made without `clone_children` and `pod<uid>` empty.
    fn fake_cpuset_v1(root: &Path) {
        let cg = |rel: &str, cpus: &str, mems: &str, clone: &str| {
            let dir = root.join(rel);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("cpuset.cpus"), cpus).unwrap();
            std::fs::write(dir.join("cpuset.mems"), mems).unwrap();
            std::fs::write(dir.join("cgroup.clone_children"), clone).unwrap();
        };
        cg("", "0-3\n", "0\n", "0\n");
        cg("kubepods", "0-3\n", "0\n", "1\n");
        cg("kubepods/besteffort", "\n", "\n", "0\n");
        cg("kubepods/besteffort/pod1234", "\n", "\n", "0\n");
    }

    fn v1_only(cpuset: &Path) -> Hierarchies {
        Hierarchies {
            layout: Layout::Hybrid,
            roots: vec![cpuset.to_path_buf()],
            cpuset_v1: Some(cpuset.to_path_buf()),
            unified: None,
        }
    }

    #[test]
    fn v1_cpusets_of_the_kubelets_pod_cgroup_are_filled_from_the_nearest_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fake_cpuset_v1(root);
        let read = |rel: &str, f: &str| std::fs::read_to_string(root.join(rel).join(f)).unwrap();
        let c = CtCgroups::new(
            CgroupDriver::Cgroupfs,
            Some("/kubepods/besteffort/pod1234"),
            ID,
        )
        .unwrap();
        prepare_parents(&v1_only(root), &c.container).unwrap();
        for rel in ["kubepods/besteffort", "kubepods/besteffort/pod1234"] {
            assert_eq!(read(rel, "cpuset.cpus"), "0-3", "{rel}");
            assert_eq!(read(rel, "cpuset.mems"), "0", "{rel}");
        }
        // The CT's own cgroup is LXC's to make; it inherits through clone_children.
        assert_eq!(
            read("kubepods/besteffort/pod1234", "cgroup.clone_children"),
            "1"
        );
        assert!(!root.join(&c.container).exists());
        // Values already there stay (an exclusive cpuset, a CPU manager's choice).
        assert_eq!(read("kubepods", "cpuset.cpus"), "0-3\n");
        assert_eq!(read("", "cgroup.clone_children"), "0\n");
        // Idempotent.
        prepare_parents(&v1_only(root), &c.container).unwrap();
        assert_eq!(read("kubepods/besteffort/pod1234", "cpuset.cpus"), "0-3");
    }

    #[test]
    fn v1_cpuset_values_set_below_the_root_are_inherited_not_the_roots() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fake_cpuset_v1(root);
        std::fs::write(root.join("kubepods/besteffort/cpuset.cpus"), "2-3\n").unwrap();
        prepare_parents(&v1_only(root), "kubepods/besteffort/pod1234/ct").unwrap();
        let pod = root.join("kubepods/besteffort/pod1234");
        assert_eq!(
            std::fs::read_to_string(pod.join("cpuset.cpus")).unwrap(),
            "2-3"
        );
        assert_eq!(
            std::fs::read_to_string(pod.join("cpuset.mems")).unwrap(),
            "0"
        );
    }

    #[test]
    fn v1_cpuset_with_an_empty_root_is_an_error_not_an_empty_write() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fake_cpuset_v1(root);
        std::fs::write(root.join("cpuset.mems"), "").unwrap();
        std::fs::write(root.join("kubepods/cpuset.mems"), "").unwrap();
        let err = prepare_parents(&v1_only(root), "kubepods/besteffort/pod1234/ct").unwrap_err();
        assert!(err.to_string().contains("cpuset.mems"), "{err}");
    }

    #[test]
    fn v1_missing_parents_are_made_and_a_top_level_ct_needs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fake_cpuset_v1(root);
        // On real cgroupfs mkdir makes the control files; the fake needs them written, so a
        // missing parent shows up as an error naming the file it could not read.
        let err = prepare_parents(&v1_only(root), "pvecri/ct").unwrap_err();
        assert!(root.join("pvecri").is_dir());
        assert!(err.to_string().contains("pvecri/cpuset.cpus"), "{err}");
        prepare_parents(&v1_only(root), "ct").unwrap();
        assert!(!root.join("ct").exists());
    }

    /// A fake v2 tree: the root delegates to `kubepods`, which delegates to the QoS class,
    /// which delegates to the pod; the pod cgroup itself delegates nothing (runc stops at the
    /// last component).
    fn fake_v2(root: &Path, pod: &str) {
        let controllers = "cpuset cpu io memory hugetlb pids rdma misc\n";
        let mut dir = root.to_path_buf();
        let parts: Vec<&str> = pod.split('/').collect();
        for i in 0..=parts.len() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("cgroup.controllers"), controllers).unwrap();
            let delegated = if i < parts.len() { controllers } else { "" };
            std::fs::write(dir.join("cgroup.subtree_control"), delegated).unwrap();
            if let Some(part) = parts.get(i) {
                dir.push(part);
            }
        }
    }

    fn v2_only(root: &Path) -> Hierarchies {
        Hierarchies {
            layout: Layout::Unified,
            roots: vec![root.to_path_buf()],
            cpuset_v1: None,
            unified: Some(root.to_path_buf()),
        }
    }

    #[test]
    fn v2_cgroupfs_pod_cgroup_delegates_its_controllers_to_the_ct() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fake_v2(root, "kubepods/burstable/pod1234");
        let c = CtCgroups::new(
            CgroupDriver::Cgroupfs,
            Some("/kubepods/burstable/pod1234"),
            ID,
        )
        .unwrap();
        prepare_parents(&v2_only(root), &c.container).unwrap();
        let pod = root.join("kubepods/burstable/pod1234");
        assert_eq!(
            std::fs::read_to_string(pod.join("cgroup.subtree_control")).unwrap(),
            "+cpuset +cpu +io +memory +hugetlb +pids +rdma +misc"
        );
        // Ancestors that delegate everything already are not written to.
        assert_eq!(
            std::fs::read_to_string(root.join("kubepods/cgroup.subtree_control")).unwrap(),
            "cpuset cpu io memory hugetlb pids rdma misc\n"
        );
        assert!(
            !root.join(&c.container).exists(),
            "LXC makes the CT's own cgroup"
        );
    }

    #[test]
    fn v2_systemd_pod_slice_delegates_only_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let slice = "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod9.slice";
        fake_v2(root, slice);
        let pod = root.join(slice);
        // systemd enabled some controllers in the pod slice already.
        std::fs::write(pod.join("cgroup.subtree_control"), "cpu memory pids\n").unwrap();
        let c = CtCgroups::new(
            CgroupDriver::Systemd,
            Some("kubepods-besteffort-pod9.slice"),
            ID,
        )
        .unwrap();
        assert_eq!(c.container, format!("{slice}/pvecri-{ID}.scope"));
        prepare_parents(&v2_only(root), &c.container).unwrap();
        assert_eq!(
            std::fs::read_to_string(pod.join("cgroup.subtree_control")).unwrap(),
            "+cpuset +io +hugetlb +rdma +misc"
        );
    }

    #[test]
    fn v2_without_controllers_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fake_v2(root, "kubepods/besteffort/pod1");
        for d in [
            "",
            "kubepods",
            "kubepods/besteffort",
            "kubepods/besteffort/pod1",
        ] {
            std::fs::write(root.join(d).join("cgroup.controllers"), "").unwrap();
        }
        std::fs::write(
            root.join("kubepods/besteffort/pod1/cgroup.subtree_control"),
            "",
        )
        .unwrap();
        prepare_parents(&v2_only(root), "kubepods/besteffort/pod1/ct").unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("kubepods/besteffort/pod1/cgroup.subtree_control"))
                .unwrap(),
            ""
        );
    }

    proptest! {
        #[test]
        fn expanded_slices_stay_relative_and_clean(name in "[a-z0-9-]{0,20}") {
            if let Ok(path) = expand_slice(&format!("{name}.slice")) {
                prop_assert!(!path.starts_with('/'));
                prop_assert!(path.split('/').all(|p| p.is_empty() || p.ends_with(".slice")));
                prop_assert!(!path.contains("//"));
            }
        }

        #[test]
        fn cgroupfs_paths_never_escape(parent in "\\PC{0,40}") {
            if let Ok(path) = parent_path(CgroupDriver::Cgroupfs, Some(&parent)) {
                prop_assert!(!path.starts_with('/'));
                prop_assert!(path.split('/').all(|p| p != ".." && p != "."));
                prop_assert!(!path.contains(char::is_whitespace));
            }
        }
    }
}
