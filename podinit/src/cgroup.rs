//! Per-container child cgroups under podinit's own cgroup, on cgroup v2 and on v1 (hybrid
//! included: the v1 controllers are used, the unified mount is left alone).
//!
//! On v2 a cgroup with processes cannot enable controllers for its children, so podinit first
//! moves itself into the leaf `<own>/podinit` and then enables what it needs in
//! `<own>/cgroup.subtree_control`. On v1 each controller has its own hierarchy and a container
//! gets one directory per controller.

use std::io;
use std::path::{Path, PathBuf};

use crate::devices::{self, DevicePolicy};
use crate::spec::Resources;
use crate::sys;

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
/// Controllers podinit places containers in (`devices` exists on v1 only; v2 enforces device
/// rules with a BPF program instead, see [`crate::devices`]).
const CONTROLLERS: &[&str] = &[
    "memory", "cpu", "cpuacct", "pids", "hugetlb", "cpuset", "devices",
];
/// Name of podinit's own leaf on v2.
const SELF_LEAF: &str = "podinit";

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(transparent)]
    Devices(#[from] devices::cgroup::ApplyError),
    #[error("{0}")]
    Unsupported(String),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    V1,
    V2,
}

/// podinit's place in the cgroup tree.
#[derive(Clone, Debug)]
pub struct CgroupRoot {
    mode: Mode,
    /// v2: one entry ("", base). v1: (controller, base dir in that controller's hierarchy).
    bases: Vec<(String, PathBuf)>,
    /// v2: controllers enabled for children.
    enabled: Vec<String>,
    /// podinit runs in a user namespace (a `hostUsers: false` pod's unprivileged CT).
    in_userns: bool,
}

/// A container's cgroup: one directory on v2, one per controller on v1.
#[derive(Clone, Debug)]
pub struct ContainerCgroup {
    mode: Mode,
    dirs: Vec<(String, PathBuf)>,
}

impl CgroupRoot {
    /// Finds podinit's cgroup and prepares it for children (on v2: leaf move + controllers).
    pub fn setup() -> Result<Self, CgroupError> {
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(io_err("reading", Path::new("/proc/self/cgroup")))?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(io_err("reading", Path::new("/proc/self/mountinfo")))?;
        let magic = sys::fs_magic(Path::new("/sys/fs/cgroup"))
            .map_err(io_err("statfs", Path::new("/sys/fs/cgroup")))?;
        if magic == CGROUP2_SUPER_MAGIC {
            Self::setup_v2(&own, &mountinfo)
        } else {
            Self::setup_v1(&own, &mountinfo)
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Controllers available to containers.
    pub fn controllers(&self) -> Vec<String> {
        match self.mode {
            Mode::V2 => self.enabled.clone(),
            Mode::V1 => self.bases.iter().map(|(c, _)| c.clone()).collect(),
        }
    }

    fn setup_v2(own: &str, mountinfo: &str) -> Result<Self, CgroupError> {
        let rel = parse_proc_cgroup(own)
            .into_iter()
            .find(|(ctrls, _)| ctrls.is_empty())
            .map(|(_, p)| p)
            .ok_or_else(|| {
                CgroupError::Unsupported("no cgroup v2 entry in /proc/self/cgroup".into())
            })?;
        let mount = parse_mountinfo(mountinfo)
            .into_iter()
            .find(|m| m.fstype == "cgroup2" && m.mount_point == Path::new("/sys/fs/cgroup"))
            .ok_or_else(|| {
                CgroupError::Unsupported("cgroup2 is not mounted on /sys/fs/cgroup".into())
            })?;
        let mut base = join_cgroup(&mount.mount_point, &mount.root, &rel);
        // A restarted podinit (or one started in its own leaf) finds itself in the leaf already.
        if base.file_name().is_some_and(|n| n == SELF_LEAF)
            && let Some(parent) = base.parent()
        {
            base = parent.to_path_buf();
        }
        let leaf = base.join(SELF_LEAF);
        mkdir(&leaf)?;
        let procs = leaf.join("cgroup.procs");
        std::fs::write(&procs, std::process::id().to_string())
            .map_err(io_err("joining", &procs))?;
        // v2 enables controllers for children only in a cgroup without processes. In a CT podinit
        // is alone; when started by hand (tests) its launcher shares the cgroup: move it along.
        if let Ok(others) = std::fs::read_to_string(base.join("cgroup.procs")) {
            for pid in others.lines() {
                if let Err(e) = std::fs::write(&procs, pid) {
                    tracing::warn!("cannot move process {pid} into {}: {e}", leaf.display());
                }
            }
        }
        let available_path = base.join("cgroup.controllers");
        let available =
            std::fs::read_to_string(&available_path).map_err(io_err("reading", &available_path))?;
        let subtree = base.join("cgroup.subtree_control");
        let mut enabled = Vec::new();
        for c in CONTROLLERS {
            if available.split_whitespace().any(|a| a == *c) {
                match std::fs::write(&subtree, format!("+{c}")) {
                    Ok(()) => enabled.push((*c).to_string()),
                    Err(e) => tracing::warn!(
                        "cannot enable cgroup controller {c} in {}: {e}",
                        subtree.display()
                    ),
                }
            }
        }
        Ok(Self {
            mode: Mode::V2,
            bases: vec![(String::new(), base)],
            enabled,
            in_userns: sys::in_user_namespace(),
        })
    }

    fn setup_v1(own: &str, mountinfo: &str) -> Result<Self, CgroupError> {
        let own = parse_proc_cgroup(own);
        let mounts = parse_mountinfo(mountinfo);
        let mut bases = Vec::new();
        for c in CONTROLLERS {
            let Some(m) = mounts
                .iter()
                .find(|m| m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == *c))
            else {
                continue;
            };
            let Some((_, rel)) = own.iter().find(|(ctrls, _)| ctrls.iter().any(|x| x == c)) else {
                continue;
            };
            bases.push(((*c).to_string(), join_cgroup(&m.mount_point, &m.root, rel)));
        }
        if bases.is_empty() {
            return Err(CgroupError::Unsupported(
                "no cgroup v1 controller hierarchy found".into(),
            ));
        }
        Ok(Self {
            mode: Mode::V1,
            bases,
            enabled: Vec::new(),
            in_userns: sys::in_user_namespace(),
        })
    }

    /// Creates the container's cgroup and writes its resource limits and device policy.
    pub fn create(
        &self,
        id: &str,
        res: &Resources,
        devices: &DevicePolicy,
    ) -> Result<ContainerCgroup, CgroupError> {
        let name = format!("ctr-{id}");
        let dirs: Vec<(String, PathBuf)> = self
            .bases
            .iter()
            .map(|(c, base)| (c.clone(), base.join(&name)))
            .collect();
        let cg = ContainerCgroup {
            mode: self.mode,
            dirs,
        };
        for (c, d) in &cg.dirs {
            let made = mkdir_fresh(d).and_then(|()| {
                if self.mode == Mode::V1 && c == "cpuset" {
                    inherit_cpuset(d)
                } else {
                    Ok(())
                }
            });
            if let Err(e) = made {
                cg.remove();
                return Err(e);
            }
        }
        let applied = cg
            .apply(res, &self.controllers())
            .and_then(|()| cg.apply_devices(devices, self.in_userns));
        if let Err(e) = applied {
            cg.remove();
            return Err(e);
        }
        Ok(cg)
    }
}

impl ContainerCgroup {
    /// `cgroup.procs` files a process writes itself ("0") into to join the container's cgroup.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|(_, d)| d.join("cgroup.procs"))
            .collect()
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        match self.mode {
            Mode::V2 => self.dirs.first().map(|(_, d)| d.as_path()),
            Mode::V1 => self
                .dirs
                .iter()
                .find(|(c, _)| c == controller)
                .map(|(_, d)| d.as_path()),
        }
    }

    fn write(
        &self,
        controller: &str,
        available: &[String],
        file: &str,
        value: &str,
    ) -> Result<(), CgroupError> {
        let dir = match self.dir(controller) {
            Some(d) if available.iter().any(|a| a == controller) => d,
            _ => {
                return Err(CgroupError::Unsupported(format!(
                    "cgroup controller {controller} is not available to podinit (needed for {file})"
                )));
            }
        };
        let path = dir.join(file);
        std::fs::write(&path, value).map_err(io_err("writing", &path))
    }

    fn has_file(&self, controller: &str, file: &str) -> bool {
        self.dir(controller).is_some_and(|d| d.join(file).exists())
    }

    fn apply(&self, r: &Resources, available: &[String]) -> Result<(), CgroupError> {
        let v2 = self.mode == Mode::V2;
        if let Some(limit) = r.memory_limit {
            let (file, val) = if v2 {
                ("memory.max", max_or(limit))
            } else {
                ("memory.limit_in_bytes", limit.to_string())
            };
            self.write("memory", available, file, &val)?;
        }
        if let Some(swap) = r.memory_swap {
            let no_swap = Some(swap) == r.memory_limit;
            let file = if v2 {
                "memory.swap.max"
            } else {
                "memory.memsw.limit_in_bytes"
            };
            if self.has_file("memory", file) {
                let val = if v2 {
                    match (swap, r.memory_limit) {
                        (s, _) if s < 0 => "max".to_string(),
                        (s, Some(l)) if l > 0 => (s - l).max(0).to_string(),
                        (s, _) => s.to_string(),
                    }
                } else {
                    swap.to_string()
                };
                self.write("memory", available, file, &val)?;
            } else if !no_swap && swap >= 0 {
                return Err(CgroupError::Unsupported(format!(
                    "memory.swap limit asked but swap accounting ({file}) is not available"
                )));
            }
        }
        if let Some(shares) = r.cpu_shares {
            if v2 {
                self.write(
                    "cpu",
                    available,
                    "cpu.weight",
                    &shares_to_weight(shares).to_string(),
                )?;
            } else {
                self.write("cpu", available, "cpu.shares", &shares.to_string())?;
            }
        }
        if r.cpu_quota.is_some() || r.cpu_period.is_some() {
            let period = r.cpu_period.unwrap_or(100_000);
            if v2 {
                let quota = match r.cpu_quota {
                    Some(q) if q > 0 => q.to_string(),
                    _ => "max".to_string(),
                };
                self.write("cpu", available, "cpu.max", &format!("{quota} {period}"))?;
            } else {
                self.write("cpu", available, "cpu.cfs_period_us", &period.to_string())?;
                if let Some(q) = r.cpu_quota {
                    let q = if q > 0 { q } else { -1 };
                    self.write("cpu", available, "cpu.cfs_quota_us", &q.to_string())?;
                }
            }
        }
        if let Some(cpus) = &r.cpuset_cpus {
            self.write("cpuset", available, "cpuset.cpus", cpus)?;
        }
        if let Some(mems) = &r.cpuset_mems {
            self.write("cpuset", available, "cpuset.mems", mems)?;
        }
        if let Some(pids) = r.pids_limit {
            self.write("pids", available, "pids.max", &max_or(pids))?;
        }
        for (size, limit) in &r.hugepage_limits {
            // The kubelet sends a zero limit for every page size the node has; without the
            // hugetlb controller that cannot be enforced, and refusing it would refuse every pod.
            if *limit == 0 && !available.iter().any(|a| a == "hugetlb") {
                tracing::debug!("hugetlb controller unavailable: zero {size} limit not enforced");
                continue;
            }
            let file = if v2 {
                format!("hugetlb.{size}.max")
            } else {
                format!("hugetlb.{size}.limit_in_bytes")
            };
            self.write("hugetlb", available, &file, &limit.to_string())?;
        }
        if !r.unified.is_empty() {
            if !v2 {
                return Err(CgroupError::Unsupported(
                    "linux.resources.unified needs cgroup v2".into(),
                ));
            }
            if let Some(dir) = self.dir("") {
                for (k, v) in &r.unified {
                    let path = dir.join(k);
                    std::fs::write(&path, v).map_err(io_err("writing", &path))?;
                }
            }
        }
        Ok(())
    }

    /// Confines the cgroup's device access to `policy`: the v1 `devices.*` files, or on v2 a
    /// device program attached to the cgroup.
    ///
    /// In a user namespace neither is possible (the v1 files and `bpf()` need capabilities of
    /// the host's user namespace): the daemon applies the policy from the host once Create
    /// has made the cgroup, as runc does it from outside the container's user namespace. The
    /// kernel refuses mknod to everything in such a pod anyway, so a container can only open
    /// the nodes bound into it.
    fn apply_devices(&self, policy: &DevicePolicy, in_userns: bool) -> Result<(), CgroupError> {
        let result = match (self.mode, self.dir("devices")) {
            (Mode::V1, Some(dir)) => devices::cgroup::apply_v1(dir, policy),
            (Mode::V1, None) if policy.allows_everything() => Ok(()),
            (Mode::V1, None) => {
                return Err(CgroupError::Unsupported(
                    "the cgroup v1 devices controller is not available to podinit, so the \
                     container's device access cannot be confined"
                        .into(),
                ));
            }
            (Mode::V2, Some(dir)) => devices::cgroup::apply_v2(dir, policy),
            (Mode::V2, None) => Ok(()),
        };
        match result {
            Err(e) if in_userns && e.is_permission() => {
                // The daemon applies it from the host (see `cri::runtime::devices`).
                tracing::debug!("device cgroup left to the daemon in a user namespace: {e}");
                Ok(())
            }
            other => other.map_err(CgroupError::from),
        }
    }

    /// The kernel OOM-killed a process of this cgroup.
    pub fn oom_killed(&self) -> bool {
        let file = match self.mode {
            Mode::V2 => "memory.events",
            Mode::V1 => "memory.oom_control",
        };
        let Some(dir) = self.dir("memory") else {
            return false;
        };
        std::fs::read_to_string(dir.join(file))
            .map(|s| oom_kill_count(&s) > 0)
            .unwrap_or(false)
    }

    /// PIDs in the cgroup (from the first hierarchy; all hold the same processes).
    pub fn pids(&self) -> Vec<i32> {
        self.dirs
            .first()
            .and_then(|(_, d)| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// SIGKILLs everything left in the cgroup.
    pub fn kill_all(&self) {
        if self.mode == Mode::V2
            && let Some(dir) = self.dir("")
            && std::fs::write(dir.join("cgroup.kill"), "1").is_ok()
        {
            return;
        }
        for _ in 0..10 {
            let pids = self.pids();
            if pids.is_empty() {
                return;
            }
            for p in pids {
                let _ = sys::kill(p, libc::SIGKILL);
            }
        }
    }

    /// Removes the cgroup directories (they must be empty of processes).
    pub fn remove(&self) {
        for (_, d) in &self.dirs {
            if let Err(e) = std::fs::remove_dir(d)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!("removing cgroup {}: {e}", d.display());
            }
        }
    }
}

fn mkdir(p: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(CgroupError::Io {
            what: "creating",
            path: p.to_path_buf(),
            source: e,
        }),
    }
}

/// Creates a container's cgroup directory. A leftover one is reused only if it can be removed
/// (it is empty); one with processes belongs to someone else and is an error.
fn mkdir_fresh(p: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            std::fs::remove_dir(p).map_err(io_err("cgroup already in use:", p))?;
            std::fs::create_dir(p).map_err(io_err("creating", p))
        }
        Err(e) => Err(CgroupError::Io {
            what: "creating",
            path: p.to_path_buf(),
            source: e,
        }),
    }
}

/// A v1 cpuset cgroup starts with no CPUs and no memory nodes, and no process can join it
/// until it has both, unless its parent has `cgroup.clone_children` set (LXC sets it): copy the
/// parent's where they are empty.
fn inherit_cpuset(dir: &Path) -> Result<(), CgroupError> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = dir.join(file);
        let current = match std::fs::read_to_string(&own) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_err("reading", &own)(e)),
        };
        if !current.trim().is_empty() {
            continue;
        }
        let from = parent.join(file);
        let value = std::fs::read_to_string(&from).map_err(io_err("reading", &from))?;
        std::fs::write(&own, value.trim()).map_err(io_err("writing", &own))?;
    }
    Ok(())
}

fn max_or(v: i64) -> String {
    if v <= 0 { "max".into() } else { v.to_string() }
}

/// CPU shares (v1, 2..262144) to cpu.weight (v2, 1..10000), the conversion runc and the
/// kubelet use.
pub fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

fn oom_kill_count(s: &str) -> u64 {
    s.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// `/proc/self/cgroup` as (controllers, path); v2's entry has no controllers.
fn parse_proc_cgroup(s: &str) -> Vec<(Vec<String>, String)> {
    s.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            let ctrls = it.next()?;
            let path = it.next()?;
            let ctrls = ctrls
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            Some((ctrls, path.to_string()))
        })
        .collect()
}

#[derive(Debug, PartialEq, Eq)]
struct MountEntry {
    root: PathBuf,
    mount_point: PathBuf,
    fstype: String,
    super_options: String,
}

fn unescape_mountinfo(s: &str) -> String {
    // Octal escapes (\040 for space) as the kernel writes them.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_mountinfo(s: &str) -> Vec<MountEntry> {
    s.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            Some(MountEntry {
                root: PathBuf::from(unescape_mountinfo(pre.get(3)?)),
                mount_point: PathBuf::from(unescape_mountinfo(pre.get(4)?)),
                fstype: post.first()?.to_string(),
                super_options: post.get(2).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

/// The directory of cgroup `path` on a mount of the hierarchy whose root is `root`.
fn join_cgroup(mount_point: &Path, root: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    let rel = p.strip_prefix(root).unwrap_or(p);
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    mount_point.join(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_cgroup_parsing() {
        let s = "9:name=systemd:/\n4:memory:/a/b\n2:cpu,cpuacct:/c\n0::/x/y\n";
        let p = parse_proc_cgroup(s);
        assert_eq!(p[1], (vec!["memory".to_string()], "/a/b".to_string()));
        assert_eq!(
            p[2],
            (
                vec!["cpu".to_string(), "cpuacct".to_string()],
                "/c".to_string()
            )
        );
        assert_eq!(p[3], (vec![], "/x/y".to_string()));
    }

    #[test]
    fn mountinfo_parsing() {
        let s = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                 41 31 0:38 /lxc/100 /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n\
                 50 27 0:50 / /mnt/a\\040b rw shared:3 - tmpfs none rw\n";
        let m = parse_mountinfo(s);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].mount_point, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(m[0].fstype, "cgroup");
        assert_eq!(m[0].super_options, "rw,memory");
        assert_eq!(m[1].root, PathBuf::from("/lxc/100"));
        assert_eq!(m[2].mount_point, PathBuf::from("/mnt/a b"));
    }

    #[test]
    fn cgroup_paths_are_relative_to_the_mount_root() {
        assert_eq!(
            join_cgroup(Path::new("/sys/fs/cgroup"), Path::new("/"), "/a/b"),
            PathBuf::from("/sys/fs/cgroup/a/b")
        );
        assert_eq!(
            join_cgroup(
                Path::new("/sys/fs/cgroup"),
                Path::new("/lxc/100"),
                "/lxc/100/ns"
            ),
            PathBuf::from("/sys/fs/cgroup/ns")
        );
        assert_eq!(
            join_cgroup(Path::new("/sys/fs/cgroup"), Path::new("/"), "/"),
            PathBuf::from("/sys/fs/cgroup")
        );
    }

    #[test]
    fn weights() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 1);
    }

    #[test]
    fn oom_counts() {
        assert_eq!(
            oom_kill_count("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"),
            3
        );
        assert_eq!(
            oom_kill_count("low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\noom_group_kill 0\n"),
            1
        );
        assert_eq!(oom_kill_count("oom_kill_disable 0\n"), 0);
    }

    #[test]
    fn resources_are_written_to_a_fake_v2_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = CgroupRoot {
            mode: Mode::V2,
            bases: vec![(String::new(), dir.path().to_path_buf())],
            enabled: vec!["memory".into(), "cpu".into(), "pids".into()],
            in_userns: false,
        };
        let res = Resources {
            memory_limit: Some(1 << 20),
            cpu_shares: Some(1024),
            cpu_quota: Some(50_000),
            pids_limit: Some(0),
            ..Default::default()
        };
        let cg = root
            .create("c1", &res, &DevicePolicy::allow_all())
            .expect("create");
        let d = dir.path().join("ctr-c1");
        let read = |f: &str| std::fs::read_to_string(d.join(f)).expect(f);
        assert_eq!(read("memory.max"), "1048576");
        assert_eq!(read("cpu.weight"), "39");
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(read("pids.max"), "max");
        assert_eq!(cg.procs_files(), vec![d.join("cgroup.procs")]);
        std::fs::write(d.join("memory.events"), "oom 1\noom_kill 1\n").expect("write");
        assert!(cg.oom_killed());
    }

    #[test]
    fn v1_cpuset_children_get_the_parents_cpus_and_then_their_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = |c: &str| dir.path().join(c);
        for c in ["cpuset", "memory"] {
            std::fs::create_dir(base(c)).expect("mkdir");
        }
        std::fs::write(base("cpuset").join("cpuset.cpus"), "0-3\n").expect("write");
        std::fs::write(base("cpuset").join("cpuset.mems"), "0\n").expect("write");
        let root = CgroupRoot {
            mode: Mode::V1,
            bases: vec![
                ("cpuset".into(), base("cpuset")),
                ("memory".into(), base("memory")),
            ],
            enabled: vec![],
            in_userns: false,
        };
        root.create("a", &Resources::default(), &DevicePolicy::allow_all())
            .expect("create");
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).expect(p);
        assert_eq!(read("cpuset/ctr-a/cpuset.cpus"), "0-3");
        assert_eq!(read("cpuset/ctr-a/cpuset.mems"), "0");
        let res = Resources {
            cpuset_cpus: Some("1".into()),
            ..Default::default()
        };
        root.create("b", &res, &DevicePolicy::allow_all())
            .expect("create");
        assert_eq!(read("cpuset/ctr-b/cpuset.cpus"), "1");
        assert_eq!(read("cpuset/ctr-b/cpuset.mems"), "0");
    }

    #[test]
    fn v1_device_rules_go_to_the_devices_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("devices")).expect("mkdir");
        let root = CgroupRoot {
            mode: Mode::V1,
            bases: vec![("devices".into(), dir.path().join("devices"))],
            enabled: vec![],
            in_userns: false,
        };
        let policy = DevicePolicy::from_rules(&[]).expect("policy");
        root.create("d", &Resources::default(), &policy)
            .expect("create");
        let read = |f: &str| std::fs::read_to_string(dir.path().join("devices/ctr-d").join(f));
        // A plain file keeps the last write: the default went to deny, exceptions to allow.
        assert_eq!(read("devices.deny").expect("deny"), "a");
        let last = policy.v1_writes().last().expect("rules").1.clone();
        assert_eq!(read("devices.allow").expect("allow"), last);

        // Without a devices hierarchy only a policy that refuses nothing is possible.
        let root = CgroupRoot {
            bases: vec![("memory".into(), dir.path().join("memory"))],
            ..root
        };
        std::fs::create_dir(dir.path().join("memory")).expect("mkdir");
        let e = root
            .create("e", &Resources::default(), &policy)
            .expect_err("cannot confine");
        assert!(e.to_string().contains("devices controller"), "{e}");
        assert!(!dir.path().join("memory/ctr-e").exists(), "cleaned up");
        root.create("f", &Resources::default(), &DevicePolicy::allow_all())
            .expect("nothing to confine");
    }

    #[test]
    fn missing_controller_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = CgroupRoot {
            mode: Mode::V1,
            bases: vec![("memory".into(), dir.path().join("memory"))],
            enabled: vec![],
            in_userns: false,
        };
        std::fs::create_dir(dir.path().join("memory")).expect("mkdir");
        let res = Resources {
            pids_limit: Some(10),
            ..Default::default()
        };
        let err = root
            .create("c1", &res, &DevicePolicy::allow_all())
            .expect_err("no pids controller");
        assert!(err.to_string().contains("pids"), "{err}");
        assert!(!dir.path().join("memory/ctr-c1").exists(), "cleaned up");
    }
}
