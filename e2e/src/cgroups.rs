//! A pod's and its containers' cgroups as a test finds them, independently of the daemon:
//! `/proc/<CT init>/cgroup` joined to the mount points of our own mountinfo. On cgroup v2
//! podinit sits in the leaf `podinit` of the pod's cgroup.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::cri_client::RuntimeClient;

/// v1 controllers a test reads or writes.
const V1_CONTROLLERS: &[&str] = &["cpu", "cpuacct", "cpuset", "memory", "pids"];

/// The CT init's pid, from PodSandboxStatus's verbose info.
pub async fn init_pid(rt: &mut RuntimeClient, pod_id: &str) -> anyhow::Result<u32> {
    let resp = rt
        .pod_sandbox_status(k8s_cri::v1::PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.to_string(),
            verbose: true,
        })
        .await
        .context("PodSandboxStatus")?
        .into_inner();
    let info = resp.info.get("info").context("no verbose info")?;
    let info: serde_json::Value = serde_json::from_str(info)?;
    let pid = info["init_pid"]
        .as_u64()
        .context("no init_pid in the verbose info")?;
    Ok(u32::try_from(pid)?)
}

/// A cgroup: a directory per v1 controller, or the v2 directory under the key "".
#[derive(Debug, Clone)]
pub struct Cg(pub BTreeMap<String, PathBuf>);

impl Cg {
    /// The cgroup of the pod whose CT init is `pid`.
    pub fn of_pod(pid: u32) -> anyhow::Result<Cg> {
        let proc = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
        let mut out = BTreeMap::new();
        for line in mounts.lines() {
            let Some((l, r)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mp) = l.split(' ').nth(4) else {
                continue;
            };
            let mut r = r.split(' ');
            let fstype = r.next().unwrap_or("");
            let opts = r.nth(1).unwrap_or("");
            for entry in proc.lines() {
                let mut p = entry.splitn(3, ':');
                let (Some(_), Some(ctrls), Some(path)) = (p.next(), p.next(), p.next()) else {
                    continue;
                };
                let path = path.trim_start_matches('/');
                if fstype == "cgroup" {
                    for c in V1_CONTROLLERS {
                        if ctrls.split(',').any(|x| x == *c) && opts.split(',').any(|x| x == *c) {
                            out.insert((*c).to_string(), Path::new(mp).join(path));
                        }
                    }
                } else if fstype == "cgroup2" && ctrls.is_empty() && mp == "/sys/fs/cgroup" {
                    let dir = Path::new(mp).join(path);
                    let dir = match dir.parent() {
                        Some(parent) if dir.ends_with("podinit") => parent.to_path_buf(),
                        _ => dir,
                    };
                    out.insert(String::new(), dir);
                }
            }
        }
        if out.contains_key("memory") {
            out.remove("");
        }
        anyhow::ensure!(!out.is_empty(), "no cgroup found for process {pid}");
        Ok(Cg(out))
    }

    /// The cgroup podinit makes for container `id`.
    pub fn container(&self, id: &str) -> Cg {
        self.child(&format!("ctr-{id}"))
    }

    pub fn child(&self, name: &str) -> Cg {
        Cg(self
            .0
            .iter()
            .map(|(k, v)| (k.clone(), v.join(name)))
            .collect())
    }

    pub fn v2(&self) -> bool {
        self.0.contains_key("")
    }

    pub fn path(&self, controller: &str, file: &str) -> anyhow::Result<PathBuf> {
        let dir = self
            .0
            .get(controller)
            .or_else(|| self.0.get(""))
            .with_context(|| format!("no {controller} hierarchy"))?;
        Ok(dir.join(file))
    }

    pub fn read(&self, controller: &str, file: &str) -> anyhow::Result<String> {
        let p = self.path(controller, file)?;
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    }

    /// A number file (`max` and v1's huge "no limit" read as `None`).
    pub fn number(&self, controller: &str, file: &str) -> anyhow::Result<Option<u64>> {
        Ok(self
            .read(controller, file)?
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|v| *v < 1 << 62))
    }

    /// One key of a flat-keyed file (memory.stat, cpu.stat).
    pub fn stat(&self, controller: &str, file: &str, key: &str) -> anyhow::Result<u64> {
        let text = self.read(controller, file)?;
        let v = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key} ")))
            .with_context(|| format!("no {key} in {file}"))?;
        Ok(v.trim().parse()?)
    }

    /// Cumulative CPU time in nanoseconds.
    pub fn cpu_ns(&self) -> anyhow::Result<u64> {
        if self.v2() {
            Ok(self.stat("", "cpu.stat", "usage_usec")? * 1000)
        } else {
            Ok(self.read("cpuacct", "cpuacct.usage")?.trim().parse()?)
        }
    }

    /// Usage less inactive file pages, as cAdvisor computes the working set.
    pub fn working_set(&self) -> anyhow::Result<u64> {
        let (usage, inactive) = if self.v2() {
            (
                self.number("", "memory.current")?.unwrap_or(0),
                self.stat("", "memory.stat", "inactive_file")?,
            )
        } else {
            (
                self.number("memory", "memory.usage_in_bytes")?.unwrap_or(0),
                self.stat("memory", "memory.stat", "total_inactive_file")?,
            )
        };
        Ok(usage.saturating_sub(inactive))
    }

    /// The memory limit; `None` when unlimited.
    pub fn memory_limit(&self) -> anyhow::Result<Option<u64>> {
        if self.v2() {
            self.number("", "memory.max")
        } else {
            self.number("memory", "memory.limit_in_bytes")
        }
    }

    /// CPU quota and period in microseconds; quota `None` when unlimited.
    pub fn cpu_quota(&self) -> anyhow::Result<(Option<u64>, u64)> {
        if self.v2() {
            let text = self.read("", "cpu.max")?;
            let mut it = text.split_whitespace();
            let quota = it.next().and_then(|q| q.parse().ok());
            let period = it.next().context("cpu.max without a period")?.parse()?;
            Ok((quota, period))
        } else {
            let quota: i64 = self.read("cpu", "cpu.cfs_quota_us")?.trim().parse()?;
            let period = self.read("cpu", "cpu.cfs_period_us")?.trim().parse()?;
            Ok((u64::try_from(quota).ok(), period))
        }
    }
}
