//! Reading a pod's and its containers' cgroups from the host, on cgroup v1 (hybrid included)
//! and v2.
//!
//! The daemon finds a pod's cgroup through its CT's init (podinit): `/proc/<pid>/cgroup`, read
//! from the host's cgroup namespace, gives the path in each hierarchy, and the daemon's own
//! mount table gives where each hierarchy is mounted. This works for any pod host (LXC puts the
//! init in `lxc.cgroup.dir.container`, Proxmox in `lxc/<vmid>/ns`). On v2 podinit moves itself
//! into the leaf `<cgroup>/podinit` to enable controllers for its children, so the pod's cgroup
//! is the leaf's parent. A container's cgroup is `<pod cgroup>/ctr-<id>` (podinit's naming) in
//! every hierarchy.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// podinit's own leaf on cgroup v2.
const PODINIT_LEAF: &str = "podinit";
/// v1 controllers whose files the stats read.
const V1_CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "memory", "pids", "cpuset", "hugetlb", "devices",
];
/// `cpuacct.stat` counts in USER_HZ, which is 100 on every Linux ABI.
const NS_PER_USER_HZ: u64 = 10_000_000;
/// cgroup v1 reports "no memory limit" as PAGE_COUNTER_MAX pages, about 2^63; anything this
/// large is no limit.
const V1_UNLIMITED: u64 = 1 << 62;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("writing {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: io::Error,
    },
    #[error("no cgroup of process {pid} found under /sys/fs/cgroup")]
    NotFound { pid: u32 },
    #[error("cgroup controller {0} is not available")]
    NoController(String),
}

impl CgroupError {
    pub fn is_not_found(&self) -> bool {
        match self {
            CgroupError::Read { source, .. } | CgroupError::Write { source, .. } => {
                source.kind() == io::ErrorKind::NotFound
            }
            CgroupError::NotFound { .. } => true,
            CgroupError::NoController(_) => false,
        }
    }
}

/// A cgroup: one directory on v2, one per controller on v1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    V1(BTreeMap<String, PathBuf>),
    V2(PathBuf),
}

impl Cgroup {
    /// The cgroup of the pod whose CT init is `init_pid`.
    pub fn of_pod(init_pid: u32) -> Result<Cgroup, CgroupError> {
        let proc_path = PathBuf::from(format!("/proc/{init_pid}/cgroup"));
        let own = read(&proc_path)?;
        let mountinfo = read(Path::new("/proc/self/mountinfo"))?;
        let cg = locate(&own, &mountinfo).ok_or(CgroupError::NotFound { pid: init_pid })?;
        Ok(cg.without_podinit_leaf())
    }

    fn without_podinit_leaf(self) -> Cgroup {
        match self {
            Cgroup::V2(dir) if dir.file_name().is_some_and(|n| n == PODINIT_LEAF) => {
                Cgroup::V2(dir.parent().map(Path::to_path_buf).unwrap_or(dir))
            }
            other => other,
        }
    }

    /// The cgroup podinit makes for container `id` below this (pod) cgroup.
    pub fn container(&self, id: &str) -> Cgroup {
        self.child(&format!("ctr-{id}"))
    }

    pub fn child(&self, name: &str) -> Cgroup {
        match self {
            Cgroup::V1(dirs) => Cgroup::V1(
                dirs.iter()
                    .map(|(c, d)| (c.clone(), d.join(name)))
                    .collect(),
            ),
            Cgroup::V2(dir) => Cgroup::V2(dir.join(name)),
        }
    }

    pub fn is_v2(&self) -> bool {
        matches!(self, Cgroup::V2(_))
    }

    /// The directory holding `controller`'s files.
    pub fn dir(&self, controller: &str) -> Option<&Path> {
        match self {
            Cgroup::V1(dirs) => dirs.get(controller).map(PathBuf::as_path),
            Cgroup::V2(dir) => Some(dir),
        }
    }

    /// Whether the cgroup exists (its directory in the first hierarchy).
    pub fn exists(&self) -> bool {
        match self {
            Cgroup::V1(dirs) => dirs.values().next().is_some_and(|d| d.is_dir()),
            Cgroup::V2(dir) => dir.is_dir(),
        }
    }

    pub fn read_file(&self, controller: &str, file: &str) -> Result<String, CgroupError> {
        let dir = self
            .dir(controller)
            .ok_or_else(|| CgroupError::NoController(controller.to_string()))?;
        read(&dir.join(file))
    }

    /// A file that may be absent (an optional kernel feature): `None` then.
    fn read_optional(&self, controller: &str, file: &str) -> Result<Option<String>, CgroupError> {
        match self.read_file(controller, file) {
            Ok(s) => Ok(Some(s)),
            Err(CgroupError::NoController(_)) => Ok(None),
            Err(CgroupError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub fn write_file(&self, controller: &str, file: &str, value: &str) -> Result<(), CgroupError> {
        let dir = self
            .dir(controller)
            .ok_or_else(|| CgroupError::NoController(controller.to_string()))?;
        let path = dir.join(file);
        std::fs::write(&path, value).map_err(|source| CgroupError::Write {
            path,
            value: value.to_string(),
            source,
        })
    }

    pub fn has_file(&self, controller: &str, file: &str) -> bool {
        self.dir(controller).is_some_and(|d| d.join(file).exists())
    }

    /// CPU, memory and process figures. A cgroup that does not exist is an error whose
    /// [`CgroupError::is_not_found`] holds.
    pub fn sample(&self) -> Result<Sample, CgroupError> {
        match self {
            Cgroup::V1(_) => self.sample_v1(),
            Cgroup::V2(_) => self.sample_v2(),
        }
    }

    fn sample_v1(&self) -> Result<Sample, CgroupError> {
        let usage_ns = parse_u64(&self.read_file("cpuacct", "cpuacct.usage")?).unwrap_or(0);
        let acct = self
            .read_optional("cpuacct", "cpuacct.stat")?
            .unwrap_or_default();
        let acct = flat_keyed(&acct);
        let throttle = self.read_optional("cpu", "cpu.stat")?.unwrap_or_default();
        let throttle = flat_keyed(&throttle);
        let cpu = CpuSample {
            usage_ns,
            user_ns: acct.get("user").copied().unwrap_or(0) * NS_PER_USER_HZ,
            system_ns: acct.get("system").copied().unwrap_or(0) * NS_PER_USER_HZ,
            periods: throttle.get("nr_periods").copied().unwrap_or(0),
            throttled_periods: throttle.get("nr_throttled").copied().unwrap_or(0),
            throttled_ns: throttle.get("throttled_time").copied().unwrap_or(0),
        };

        let usage = parse_u64(&self.read_file("memory", "memory.usage_in_bytes")?).unwrap_or(0);
        let stat_text = self.read_file("memory", "memory.stat")?;
        let stat = flat_keyed(&stat_text);
        // The hierarchical (`total_`) figures include child cgroups: a pod's containers.
        let get = |k: &str| {
            stat.get(format!("total_{k}").as_str())
                .or_else(|| stat.get(k))
                .copied()
                .unwrap_or(0)
        };
        let limit = self
            .read_optional("memory", "memory.limit_in_bytes")?
            .and_then(|s| parse_u64(&s))
            .filter(|l| *l < V1_UNLIMITED);
        let swap = match self.read_optional("memory", "memory.memsw.usage_in_bytes")? {
            Some(s) => parse_u64(&s).map(|memsw| memsw.saturating_sub(usage)),
            None => None,
        };
        let oom_kills = self
            .read_optional("memory", "memory.oom_control")?
            .map(|s| flat_keyed(&s).get("oom_kill").copied().unwrap_or(0));
        let memory = MemorySample {
            usage,
            working_set: usage.saturating_sub(get("inactive_file")),
            rss: get("rss"),
            cache: get("cache"),
            mapped_file: get("mapped_file"),
            swap,
            kernel: self
                .read_optional("memory", "memory.kmem.usage_in_bytes")?
                .and_then(|s| parse_u64(&s))
                .unwrap_or(0),
            failcnt: self
                .read_optional("memory", "memory.failcnt")?
                .and_then(|s| parse_u64(&s))
                .unwrap_or(0),
            max_usage: self
                .read_optional("memory", "memory.max_usage_in_bytes")?
                .and_then(|s| parse_u64(&s)),
            limit,
            swap_limit: self
                .read_optional("memory", "memory.memsw.limit_in_bytes")?
                .and_then(|s| parse_u64(&s))
                .filter(|l| *l < V1_UNLIMITED),
            pgfault: get("pgfault"),
            pgmajfault: get("pgmajfault"),
            oom_kills,
        };
        Ok(Sample {
            cpu,
            memory,
            processes: self.process_count()?,
        })
    }

    fn sample_v2(&self) -> Result<Sample, CgroupError> {
        let cpu_stat = self.read_file("cpu", "cpu.stat")?;
        let cpu_stat = flat_keyed(&cpu_stat);
        let us = |k: &str| cpu_stat.get(k).copied().unwrap_or(0).saturating_mul(1000);
        let cpu = CpuSample {
            usage_ns: us("usage_usec"),
            user_ns: us("user_usec"),
            system_ns: us("system_usec"),
            periods: cpu_stat.get("nr_periods").copied().unwrap_or(0),
            throttled_periods: cpu_stat.get("nr_throttled").copied().unwrap_or(0),
            throttled_ns: us("throttled_usec"),
        };
        // memory.current and memory.stat are absent where the memory controller is not
        // enabled for this cgroup (the root of a delegated subtree without it).
        let usage = self
            .read_optional("memory", "memory.current")?
            .and_then(|s| parse_u64(&s))
            .unwrap_or(0);
        let stat_text = self
            .read_optional("memory", "memory.stat")?
            .unwrap_or_default();
        let stat = flat_keyed(&stat_text);
        let get = |k: &str| stat.get(k).copied().unwrap_or(0);
        let events = self
            .read_optional("memory", "memory.events")?
            .unwrap_or_default();
        let memory = MemorySample {
            usage,
            working_set: usage.saturating_sub(get("inactive_file")),
            // cAdvisor's v2 RSS: anonymous memory.
            rss: get("anon"),
            cache: get("file"),
            mapped_file: get("file_mapped"),
            swap: self
                .read_optional("memory", "memory.swap.current")?
                .and_then(|s| parse_u64(&s)),
            kernel: get("kernel"),
            failcnt: flat_keyed(&events).get("max").copied().unwrap_or(0),
            max_usage: self
                .read_optional("memory", "memory.peak")?
                .and_then(|s| parse_u64(&s)),
            limit: self
                .read_optional("memory", "memory.max")?
                .and_then(|s| parse_u64(&s)),
            swap_limit: self
                .read_optional("memory", "memory.swap.max")?
                .and_then(|s| parse_u64(&s)),
            pgfault: get("pgfault"),
            pgmajfault: get("pgmajfault"),
            oom_kills: flat_keyed(&events).get("oom_kill").copied(),
        };
        Ok(Sample {
            cpu,
            memory,
            processes: self.process_count()?,
        })
    }

    /// `pids.current` where the pids controller is there, else the processes listed in this
    /// cgroup and its children.
    fn process_count(&self) -> Result<u64, CgroupError> {
        if let Some(n) = self
            .read_optional("pids", "pids.current")?
            .and_then(|s| parse_u64(&s))
        {
            return Ok(n);
        }
        let Some(dir) = (match self {
            Cgroup::V1(dirs) => dirs.values().next(),
            Cgroup::V2(dir) => Some(dir),
        }) else {
            return Ok(0);
        };
        Ok(count_procs(dir))
    }

    /// Everything in the cgroup's hierarchy for one controller's files, for verbose output.
    pub fn describe(&self) -> String {
        match self {
            Cgroup::V1(dirs) => dirs
                .iter()
                .map(|(c, d)| format!("{c}:{}", d.display()))
                .collect::<Vec<_>>()
                .join(","),
            Cgroup::V2(dir) => dir.display().to_string(),
        }
    }
}

fn count_procs(dir: &Path) -> u64 {
    let mut n = std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter(|l| !l.trim().is_empty()).count() as u64)
        .unwrap_or(0);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                n += count_procs(&e.path());
            }
        }
    }
    n
}

fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// One reading of a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    pub cpu: CpuSample,
    pub memory: MemorySample,
    pub processes: u64,
}

/// Cumulative CPU figures, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuSample {
    pub usage_ns: u64,
    pub user_ns: u64,
    pub system_ns: u64,
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_ns: u64,
}

/// Memory figures in bytes, as cAdvisor derives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemorySample {
    /// All memory charged to the cgroup (page cache included).
    pub usage: u64,
    /// Usage less inactive file pages: what cannot be reclaimed easily; the kubelet evicts on it.
    pub working_set: u64,
    /// Anonymous memory (v2 `anon`, v1 `total_rss`).
    pub rss: u64,
    pub cache: u64,
    pub mapped_file: u64,
    pub swap: Option<u64>,
    pub kernel: u64,
    /// Times the limit was hit (v1 `memory.failcnt`, v2 `memory.events` `max`).
    pub failcnt: u64,
    pub max_usage: Option<u64>,
    /// The memory limit; `None` when unlimited.
    pub limit: Option<u64>,
    pub swap_limit: Option<u64>,
    /// Page faults (minor and major), and major faults alone.
    pub pgfault: u64,
    pub pgmajfault: u64,
    /// OOM kills in the cgroup, where the kernel counts them.
    pub oom_kills: Option<u64>,
}

impl MemorySample {
    /// What is left under the limit; `None` without a limit.
    pub fn available(&self) -> Option<u64> {
        self.limit.map(|l| l.saturating_sub(self.working_set))
    }
}

/// A number, or `None` for `max`, empty or garbage.
pub fn parse_u64(s: &str) -> Option<u64> {
    s.trim().parse().ok()
}

/// `key value` lines (memory.stat, cpu.stat, cpuacct.stat, memory.events); lines that do not
/// parse are skipped.
pub fn flat_keyed(s: &str) -> BTreeMap<&str, u64> {
    s.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let k = it.next()?;
            let v = it.next()?.parse().ok()?;
            Some((k, v))
        })
        .collect()
}

/// `hierarchy-id:controllers:path` lines of `/proc/<pid>/cgroup`.
fn parse_proc_cgroup(s: &str) -> Vec<(Vec<&str>, &str)> {
    s.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            let ctrls = it.next()?;
            let path = it.next()?;
            Some((ctrls.split(',').filter(|c| !c.is_empty()).collect(), path))
        })
        .collect()
}

/// A cgroup mount: where it is, which part of the hierarchy it shows, its controllers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CgroupMount {
    root: String,
    mount_point: PathBuf,
    v2: bool,
    controllers: Vec<String>,
}

fn cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut l = left.split(' ');
            let root = pve::mountinfo::unescape(l.nth(3)?);
            let mount_point = PathBuf::from(pve::mountinfo::unescape(l.next()?));
            let mut r = right.split(' ');
            let fs_type = r.next()?;
            let _source = r.next()?;
            let super_options = r.next().unwrap_or("");
            let v2 = match fs_type {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            Some(CgroupMount {
                root,
                mount_point,
                v2,
                controllers: super_options.split(',').map(str::to_string).collect(),
            })
        })
        .collect()
}

/// Joins a cgroup path (from `/proc/<pid>/cgroup`) onto a mount showing the hierarchy from
/// `root`; a path outside the mount's part is not reachable through it.
fn join_cgroup(mount: &CgroupMount, path: &str) -> Option<PathBuf> {
    let root = mount.root.trim_end_matches('/');
    let rel = if root.is_empty() {
        path
    } else {
        path.strip_prefix(root)?
    };
    let rel = rel.trim_start_matches('/');
    if rel.split('/').any(|p| p == "..") {
        return None;
    }
    Some(if rel.is_empty() {
        mount.mount_point.clone()
    } else {
        mount.mount_point.join(rel)
    })
}

/// Where a process's cgroup is, from its `/proc/<pid>/cgroup` and the reader's mountinfo:
/// v1 controllers when any are mounted (the unified hierarchy of a hybrid host holds no
/// controllers), else the cgroup2 mount.
fn locate(proc_cgroup: &str, mountinfo: &str) -> Option<Cgroup> {
    let entries = parse_proc_cgroup(proc_cgroup);
    let mounts = cgroup_mounts(mountinfo);
    let mut v1 = BTreeMap::new();
    for c in V1_CONTROLLERS {
        let Some(m) = mounts
            .iter()
            .find(|m| !m.v2 && m.controllers.iter().any(|x| x == c))
        else {
            continue;
        };
        let Some((_, path)) = entries.iter().find(|(cs, _)| cs.contains(c)) else {
            continue;
        };
        if let Some(dir) = join_cgroup(m, path) {
            v1.insert((*c).to_string(), dir);
        }
    }
    if v1.contains_key("memory") || v1.contains_key("cpuacct") {
        return Some(Cgroup::V1(v1));
    }
    let (_, path) = entries.iter().find(|(cs, _)| cs.is_empty())?;
    let m = mounts
        .iter()
        .find(|m| m.v2 && m.mount_point == Path::new("/sys/fs/cgroup"))
        .or_else(|| mounts.iter().find(|m| m.v2))?;
    join_cgroup(m, path).map(Cgroup::V2)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    const HYBRID_MOUNTS: &str = "\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
28 27 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
29 28 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
30 28 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
31 28 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
32 28 0:33 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
33 28 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
34 28 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
";
    const HYBRID_PROC: &str = "\
9:name=systemd:/pvecri/abc
8:pids:/pvecri/abc
4:memory:/pvecri/abc
2:cpuacct:/pvecri/abc
1:cpu:/pvecri/abc
0::/pvecri/abc
";
    const UNIFIED_MOUNTS: &str = "\
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
28 27 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn locates_v1_controllers_on_a_hybrid_host() {
        let cg = locate(HYBRID_PROC, HYBRID_MOUNTS).unwrap();
        let Cgroup::V1(dirs) = &cg else {
            panic!("{cg:?}")
        };
        assert_eq!(
            dirs.get("memory").unwrap(),
            Path::new("/sys/fs/cgroup/memory/pvecri/abc")
        );
        assert_eq!(
            dirs.get("cpuacct").unwrap(),
            Path::new("/sys/fs/cgroup/cpuacct/pvecri/abc")
        );
        assert!(!dirs.contains_key("systemd"));
        assert_eq!(
            cg.container("c1").dir("cpu").unwrap(),
            Path::new("/sys/fs/cgroup/cpu/pvecri/abc/ctr-c1")
        );
    }

    #[test]
    fn locates_v2_and_steps_out_of_podinits_leaf() {
        let cg = locate("0::/lxc/100/ns/podinit\n", UNIFIED_MOUNTS)
            .unwrap()
            .without_podinit_leaf();
        assert_eq!(cg, Cgroup::V2(PathBuf::from("/sys/fs/cgroup/lxc/100/ns")));
        assert_eq!(
            cg.container("c1"),
            Cgroup::V2(PathBuf::from("/sys/fs/cgroup/lxc/100/ns/ctr-c1"))
        );
        // Only a leaf named podinit is stepped out of.
        let cg = locate("0::/kubepods/pod1/abc\n", UNIFIED_MOUNTS)
            .unwrap()
            .without_podinit_leaf();
        assert_eq!(
            cg,
            Cgroup::V2(PathBuf::from("/sys/fs/cgroup/kubepods/pod1/abc"))
        );
    }

    #[test]
    fn co_mounted_controllers_and_mount_roots() {
        let mounts = "\
29 28 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
31 28 0:32 /lxc/7 /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
        let proc = "3:cpu,cpuacct:/a/b\n4:memory:/lxc/7/x\n";
        let Some(Cgroup::V1(dirs)) = locate(proc, mounts) else {
            panic!()
        };
        assert_eq!(dirs["cpu"], Path::new("/sys/fs/cgroup/cpu,cpuacct/a/b"));
        assert_eq!(dirs["cpuacct"], Path::new("/sys/fs/cgroup/cpu,cpuacct/a/b"));
        assert_eq!(dirs["memory"], Path::new("/sys/fs/cgroup/memory/x"));
        // A path outside the mount's root cannot be reached.
        assert!(locate("4:memory:/other\n", mounts).is_none());
        assert!(locate("", UNIFIED_MOUNTS).is_none());
    }

    /// A fake cgroup v2 directory as the kernel lays it out for a pod with one container.
    pub(crate) fn fake_v2_pod(dir: &Path) {
        let write = |rel: &str, text: &str| {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write(
            "cpu.stat",
            "usage_usec 3000000\nuser_usec 2000000\nsystem_usec 1000000\nnr_periods 10\nnr_throttled 2\nthrottled_usec 5000\n",
        );
        write("memory.current", "104857600\n");
        write(
            "memory.stat",
            "anon 52428800\nfile 41943040\nkernel 1048576\nfile_mapped 4096\ninactive_file 20971520\nactive_file 20971520\npgfault 1000\npgmajfault 7\n",
        );
        write("memory.max", "max\n");
        write("memory.swap.current", "0\n");
        write("memory.swap.max", "max\n");
        write(
            "memory.events",
            "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n",
        );
        write("pids.current", "3\n");
        write("cgroup.procs", "");
        write(
            "ctr-c1/cpu.stat",
            "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n",
        );
        write("ctr-c1/memory.current", "83886080\n");
        write(
            "ctr-c1/memory.stat",
            "anon 41943040\nfile 41943040\ninactive_file 41943040\npgfault 900\npgmajfault 1\n",
        );
        write("ctr-c1/memory.max", "134217728\n");
        write("ctr-c1/memory.events", "max 0\noom_kill 0\n");
        write("ctr-c1/pids.current", "2\n");
    }

    #[test]
    fn reads_a_v2_tree() {
        let dir = tempfile::tempdir().unwrap();
        fake_v2_pod(dir.path());
        let pod = Cgroup::V2(dir.path().to_path_buf());
        let s = pod.sample().unwrap();
        assert_eq!(s.cpu.usage_ns, 3_000_000_000);
        assert_eq!(s.cpu.user_ns, 2_000_000_000);
        assert_eq!(s.cpu.throttled_ns, 5_000_000);
        assert_eq!(s.cpu.throttled_periods, 2);
        assert_eq!(s.memory.usage, 100 << 20);
        assert_eq!(s.memory.working_set, 80 << 20, "usage less inactive_file");
        assert_eq!(s.memory.rss, 50 << 20);
        assert_eq!(s.memory.limit, None, "max is no limit");
        assert_eq!(s.memory.available(), None);
        assert_eq!(s.memory.oom_kills, Some(1));
        assert_eq!(s.memory.failcnt, 4);
        assert_eq!((s.memory.pgfault, s.memory.pgmajfault), (1000, 7));
        assert_eq!(s.processes, 3);

        let c = pod.container("c1").sample().unwrap();
        assert_eq!(c.cpu.usage_ns, 2_500_000_000);
        assert_eq!(c.memory.working_set, 40 << 20);
        assert_eq!(c.memory.limit, Some(128 << 20));
        assert_eq!(c.memory.available(), Some(88 << 20));
        assert_eq!(c.memory.swap, None, "no swap file");
        assert_eq!(c.processes, 2);

        let gone = pod.container("nope").sample().unwrap_err();
        assert!(gone.is_not_found(), "{gone}");
    }

    #[test]
    fn reads_a_v1_tree() {
        let dir = tempfile::tempdir().unwrap();
        let d = |c: &str| dir.path().join(c).join("pod");
        for c in ["cpu", "cpuacct", "memory"] {
            std::fs::create_dir_all(d(c)).unwrap();
        }
        std::fs::write(d("cpuacct").join("cpuacct.usage"), "123456789\n").unwrap();
        std::fs::write(d("cpuacct").join("cpuacct.stat"), "user 10\nsystem 2\n").unwrap();
        std::fs::write(
            d("cpu").join("cpu.stat"),
            "nr_periods 5\nnr_throttled 1\nthrottled_time 999\n",
        )
        .unwrap();
        std::fs::write(d("memory").join("memory.usage_in_bytes"), "10485760\n").unwrap();
        std::fs::write(
            d("memory").join("memory.stat"),
            "cache 1\nrss 2\ninactive_file 3\ntotal_cache 4194304\ntotal_rss 5242880\ntotal_inactive_file 2097152\ntotal_pgfault 50\ntotal_pgmajfault 5\n",
        )
        .unwrap();
        std::fs::write(
            d("memory").join("memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        std::fs::write(
            d("memory").join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        std::fs::write(d("cpu").join("cgroup.procs"), "1\n2\n").unwrap();
        let cg = Cgroup::V1(
            ["cpu", "cpuacct", "memory"]
                .iter()
                .map(|c| (c.to_string(), d(c)))
                .collect(),
        );
        let s = cg.sample().unwrap();
        assert_eq!(s.cpu.usage_ns, 123_456_789);
        assert_eq!(s.cpu.user_ns, 100_000_000);
        assert_eq!(s.cpu.system_ns, 20_000_000);
        assert_eq!(s.cpu.throttled_ns, 999);
        assert_eq!(s.memory.working_set, 8 << 20, "hierarchical figures");
        assert_eq!(s.memory.rss, 5 << 20);
        assert_eq!(s.memory.limit, None, "PAGE_COUNTER_MAX is no limit");
        assert_eq!(s.memory.oom_kills, Some(2));
        assert_eq!(s.memory.pgmajfault, 5);
        // No pids controller: the processes listed in the hierarchy.
        assert_eq!(s.processes, 2);
    }

    #[test]
    fn flat_keyed_skips_junk() {
        let m =
            flat_keyed("a 1\nb\nc x\n d  4 \n\ne 18446744073709551615\nf 18446744073709551616\n");
        assert_eq!(
            m.into_iter().collect::<Vec<_>>(),
            vec![("a", 1), ("d", 4), ("e", u64::MAX)]
        );
        assert_eq!(parse_u64("max\n"), None);
        assert_eq!(parse_u64(" 42\n"), Some(42));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(text in "\\PC{0,300}") {
            let _ = flat_keyed(&text);
            let _ = parse_u64(&text);
            let _ = parse_proc_cgroup(&text);
            let _ = cgroup_mounts(&text);
            if let Some(Cgroup::V2(d)) = locate(&text, UNIFIED_MOUNTS) {
                prop_assert!(d.starts_with("/sys/fs/cgroup"));
                prop_assert!(!d.components().any(|c| c == std::path::Component::ParentDir));
            }
        }
    }
}
