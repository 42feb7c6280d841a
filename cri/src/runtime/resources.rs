//! UpdateContainerResources, and the resources ContainerStatus reports.
//!
//! The daemon writes the container's cgroup (`<pod cgroup>/ctr-<id>`, made by podinit) from the
//! host, on cgroup v1 and v2, and records the new resources so that ContainerStatus reports
//! them. As containerd does, a field left at its zero value keeps its current setting.
//!
//! The pod's CT has limits of its own (the sandbox's resources, set when it was created), and
//! they sit between the kubelet's pod cgroup and the containers: when the kubelet grows a
//! container (in-place resize), the CT's memory limit and CPU quota grow by as much, so that
//! they never hold back what the kubelet allowed; they are not shrunk (the kubelet's pod cgroup
//! above bounds the pod).

use k8s_cri::v1::{ContainerResources, LinuxContainerResources};
use tonic::Code;

use super::Runtime;
use super::error::{Result, RuntimeError};
use super::records::{ContainerRecord, PodState};
use crate::metadata::Table;
use crate::stats::cgroup::{Cgroup, CgroupError, parse_u64};

const MIN_CPU_PERIOD: i64 = 1_000;
const MAX_CPU_PERIOD: i64 = 1_000_000;
const MIN_CPU_QUOTA: i64 = 1_000;
const DEFAULT_CPU_PERIOD: i64 = 100_000;
/// cgroup v1 shows "no limit" as PAGE_COUNTER_MAX pages.
const V1_UNLIMITED: u64 = 1 << 62;

/// The resources ContainerStatus reports: those the container was created with, as updated.
pub fn status(record: &ContainerRecord) -> Option<ContainerResources> {
    Some(ContainerResources {
        linux: Some(current(record)),
        windows: None,
    })
}

pub fn current(record: &ContainerRecord) -> LinuxContainerResources {
    record
        .config
        .linux
        .as_ref()
        .and_then(|l| l.resources.clone())
        .unwrap_or_default()
}

/// `new` over `old`: fields left at zero keep their value.
pub fn merge(
    old: &LinuxContainerResources,
    new: &LinuxContainerResources,
) -> LinuxContainerResources {
    let mut out = old.clone();
    let pick = |o: &mut i64, n: i64| {
        if n != 0 {
            *o = n;
        }
    };
    pick(&mut out.cpu_period, new.cpu_period);
    pick(&mut out.cpu_quota, new.cpu_quota);
    pick(&mut out.cpu_shares, new.cpu_shares);
    pick(&mut out.memory_limit_in_bytes, new.memory_limit_in_bytes);
    pick(
        &mut out.memory_swap_limit_in_bytes,
        new.memory_swap_limit_in_bytes,
    );
    if !new.cpuset_cpus.is_empty() {
        out.cpuset_cpus = new.cpuset_cpus.clone();
    }
    if !new.cpuset_mems.is_empty() {
        out.cpuset_mems = new.cpuset_mems.clone();
    }
    for h in &new.hugepage_limits {
        match out
            .hugepage_limits
            .iter_mut()
            .find(|o| o.page_size == h.page_size)
        {
            Some(o) => o.limit = h.limit,
            None => out.hugepage_limits.push(h.clone()),
        }
    }
    for (k, v) in &new.unified {
        out.unified.insert(k.clone(), v.clone());
    }
    out
}

fn invalid(m: String) -> Result<()> {
    Err(RuntimeError::invalid(m))
}

/// cpuset list syntax: `0-3,6`.
fn is_cpu_list(s: &str) -> bool {
    podinit::spec::is_cpu_list(s)
}

/// `2MB`, `1GB`, ...: the page size as the hugetlb file names spell it.
fn is_page_size(s: &str) -> bool {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && digits <= 6 && ["KB", "MB", "GB", "TB"].contains(&&s[digits..])
}

/// A unified key names one cgroup v2 interface file: `controller.file`.
fn is_unified_key(k: &str) -> bool {
    k.contains('.')
        && !k.starts_with('.')
        && !k.starts_with("cgroup.")
        && k.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_')
}

/// Checks the request before anything is written.
pub fn validate(r: &LinuxContainerResources) -> Result<()> {
    if r.cpu_period != 0 && !(MIN_CPU_PERIOD..=MAX_CPU_PERIOD).contains(&r.cpu_period) {
        return invalid(format!(
            "cpu_period {} must be between {MIN_CPU_PERIOD} and {MAX_CPU_PERIOD} microseconds",
            r.cpu_period
        ));
    }
    if r.cpu_quota != 0 && r.cpu_quota != -1 && r.cpu_quota < MIN_CPU_QUOTA {
        return invalid(format!(
            "cpu_quota {} must be -1 (no limit) or at least {MIN_CPU_QUOTA} microseconds",
            r.cpu_quota
        ));
    }
    if r.cpu_shares != 0 && !(2..=262_144).contains(&r.cpu_shares) {
        return invalid(format!(
            "cpu_shares {} must be between 2 and 262144",
            r.cpu_shares
        ));
    }
    if r.memory_limit_in_bytes < 0 {
        return invalid(format!(
            "memory_limit_in_bytes {} must not be negative",
            r.memory_limit_in_bytes
        ));
    }
    if r.memory_swap_limit_in_bytes < -1 {
        return invalid(format!(
            "memory_swap_limit_in_bytes {} must be -1 (no limit) or a size",
            r.memory_swap_limit_in_bytes
        ));
    }
    if r.memory_swap_limit_in_bytes > 0
        && r.memory_limit_in_bytes > 0
        && r.memory_swap_limit_in_bytes < r.memory_limit_in_bytes
    {
        return invalid(format!(
            "memory_swap_limit_in_bytes {} is memory plus swap and must be at least memory_limit_in_bytes {}",
            r.memory_swap_limit_in_bytes, r.memory_limit_in_bytes
        ));
    }
    for (name, list) in [
        ("cpuset_cpus", &r.cpuset_cpus),
        ("cpuset_mems", &r.cpuset_mems),
    ] {
        if !list.is_empty() && !is_cpu_list(list) {
            return invalid(format!("{name} {list:?} is not a list like 0-3,6"));
        }
    }
    for h in &r.hugepage_limits {
        if !is_page_size(&h.page_size) {
            return invalid(format!(
                "hugepage page size {:?} is not like 2MB or 1GB",
                h.page_size
            ));
        }
    }
    for k in r.unified.keys() {
        if !is_unified_key(k) {
            return invalid(format!(
                "unified key {k:?} does not name a cgroup v2 file (controller.file)"
            ));
        }
    }
    Ok(())
}

fn cgroup_status(e: CgroupError, what: &str) -> RuntimeError {
    let code = match &e {
        CgroupError::Write { source, .. } => match source.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::ERANGE) => Code::InvalidArgument,
            Some(libc::EBUSY) => Code::FailedPrecondition,
            _ if source.kind() == std::io::ErrorKind::NotFound => Code::FailedPrecondition,
            _ => Code::Internal,
        },
        CgroupError::NoController(_) => Code::FailedPrecondition,
        _ if e.is_not_found() => Code::FailedPrecondition,
        _ => Code::Internal,
    };
    RuntimeError::new(code, format!("{what}: {e}"))
}

/// Sum of memory limits; `None` when a container has none.
fn memory_sum(rs: &[LinuxContainerResources]) -> Option<u64> {
    rs.iter()
        .map(|r| {
            u64::try_from(r.memory_limit_in_bytes)
                .ok()
                .filter(|m| *m > 0)
        })
        .sum()
}

/// Sum of CPU quotas as cores (quota / period); `None` when a container has no quota.
fn cpu_sum(rs: &[LinuxContainerResources]) -> Option<f64> {
    rs.iter()
        .map(|r| {
            (r.cpu_quota > 0).then(|| {
                let period = if r.cpu_period > 0 {
                    r.cpu_period
                } else {
                    DEFAULT_CPU_PERIOD
                };
                r.cpu_quota as f64 / period as f64
            })
        })
        .sum()
}

/// Reads a limit file; `None` for no limit.
fn read_limit(cg: &Cgroup, controller: &str, file: &str) -> Result<Option<u64>> {
    let text = cg
        .read_file(controller, file)
        .map_err(|e| cgroup_status(e, "reading the CT's limits"))?;
    Ok(parse_u64(&text).filter(|v| *v < V1_UNLIMITED))
}

/// (quota, period) of a cgroup's CPU bandwidth; quota `None` for no limit.
fn read_cpu_max(cg: &Cgroup) -> Result<(Option<i64>, i64)> {
    let err = |e| cgroup_status(e, "reading the CPU limit");
    if cg.is_v2() {
        let text = cg.read_file("cpu", "cpu.max").map_err(err)?;
        let mut it = text.split_whitespace();
        let quota = it.next().and_then(|q| q.parse::<i64>().ok());
        let period = it
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(DEFAULT_CPU_PERIOD);
        Ok((quota, period))
    } else {
        let quota = cg
            .read_file("cpu", "cpu.cfs_quota_us")
            .map_err(err)?
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|q| *q > 0);
        let period = cg
            .read_file("cpu", "cpu.cfs_period_us")
            .map_err(err)?
            .trim()
            .parse()
            .unwrap_or(DEFAULT_CPU_PERIOD);
        Ok((quota, period))
    }
}

/// Grows the CT's own limits by what the containers' limits grow, where the CT has limits.
fn make_room(
    ct: &Cgroup,
    before: &[LinuxContainerResources],
    after: &[LinuxContainerResources],
) -> Result<()> {
    let mem_file = if ct.is_v2() {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    if let Some(ct_limit) = read_limit(ct, "memory", mem_file)? {
        let grow = match (memory_sum(before), memory_sum(after)) {
            (Some(b), Some(a)) if a > b => Some(a - b),
            (_, None) => None,
            _ => Some(0),
        };
        let value = match grow {
            Some(0) => None,
            Some(g) => Some((ct_limit + g).to_string()),
            None => Some(if ct.is_v2() {
                "max".into()
            } else {
                "-1".into()
            }),
        };
        if let Some(value) = value {
            if !ct.is_v2()
                && let Ok(Some(memsw)) = read_limit(ct, "memory", "memory.memsw.limit_in_bytes")
            {
                // memory+swap must stay at least memory.
                let swap = memsw.saturating_sub(ct_limit);
                let to = parse_u64(&value)
                    .map(|v| (v + swap).to_string())
                    .unwrap_or(value.clone());
                ct.write_file("memory", "memory.memsw.limit_in_bytes", &to)
                    .map_err(|e| cgroup_status(e, "growing the CT's memory+swap limit"))?;
            }
            ct.write_file("memory", mem_file, &value)
                .map_err(|e| cgroup_status(e, "growing the CT's memory limit"))?;
            tracing::info!(cgroup = %ct.describe(), limit = %value, "pod CT memory limit grown for a container resize");
        }
    }
    let (ct_quota, ct_period) = read_cpu_max(ct)?;
    if let Some(ct_quota) = ct_quota {
        let grow = match (cpu_sum(before), cpu_sum(after)) {
            (Some(b), Some(a)) if a > b => Some(a - b),
            (_, None) => None,
            _ => Some(0.0),
        };
        let quota = match grow {
            Some(g) if g <= 0.0 => None,
            Some(g) => Some(ct_quota + (g * ct_period as f64).ceil() as i64),
            None => Some(-1),
        };
        if let Some(q) = quota {
            write_cpu_bandwidth(ct, Some(q), Some(ct_period))
                .map_err(|e| cgroup_status(e, "growing the CT's CPU quota"))?;
            tracing::info!(cgroup = %ct.describe(), quota = q, "pod CT CPU quota grown for a container resize");
        }
    }
    Ok(())
}

/// Writes CPU quota and/or period; a quota of -1 is no limit.
fn write_cpu_bandwidth(
    cg: &Cgroup,
    quota: Option<i64>,
    period: Option<i64>,
) -> std::result::Result<(), CgroupError> {
    if cg.is_v2() {
        let text = cg.read_file("cpu", "cpu.max")?;
        let mut it = text.split_whitespace();
        let cur_quota = it.next().unwrap_or("max").to_string();
        let cur_period = it.next().unwrap_or("100000").to_string();
        let q = match quota {
            Some(q) if q > 0 => q.to_string(),
            Some(_) => "max".to_string(),
            None => cur_quota,
        };
        let p = period.map(|p| p.to_string()).unwrap_or(cur_period);
        return cg.write_file("cpu", "cpu.max", &format!("{q} {p}"));
    }
    let write_quota = |q: i64| cg.write_file("cpu", "cpu.cfs_quota_us", &q.to_string());
    let write_period = |p: i64| cg.write_file("cpu", "cpu.cfs_period_us", &p.to_string());
    match (quota, period) {
        (Some(q), Some(p)) => {
            // v1 checks quota/period against the parent and children after each write: one of
            // the two orders passes where the end state is valid.
            if write_quota(q).and_then(|()| write_period(p)).is_err() {
                write_period(p)?;
                write_quota(q)?;
            }
            Ok(())
        }
        (Some(q), None) => write_quota(q),
        (None, Some(p)) => write_period(p),
        (None, None) => Ok(()),
    }
}

/// Memory (and memory+swap) on v1, in the order the kernel accepts: memory+swap may never be
/// below memory.
fn write_memory_v1(
    cg: &Cgroup,
    memory: Option<i64>,
    swap: Option<i64>,
) -> std::result::Result<(), CgroupError> {
    let has_memsw = cg.has_file("memory", "memory.memsw.limit_in_bytes");
    if swap.is_some_and(|s| s != 0) && !has_memsw {
        return Err(CgroupError::NoController(
            "memory.memsw (swap accounting is off on this host)".into(),
        ));
    }
    let cur_mem = parse_u64(&cg.read_file("memory", "memory.limit_in_bytes")?);
    let cur_memsw = if has_memsw {
        parse_u64(&cg.read_file("memory", "memory.memsw.limit_in_bytes")?)
            .filter(|v| *v < V1_UNLIMITED)
    } else {
        None
    };
    let mem = memory.filter(|m| *m > 0);
    // Without a new swap setting, a limited memory+swap keeps its swap allowance.
    let memsw: Option<i64> = match swap {
        Some(s) if s != 0 => Some(s),
        _ => match (cur_memsw, mem, cur_mem) {
            (Some(sw), Some(m), Some(cm)) if (m as u64) > sw => {
                Some(m + i64::try_from(sw.saturating_sub(cm.min(sw))).unwrap_or(0))
            }
            _ => None,
        },
    };
    let grow_first = match (memsw, cur_memsw) {
        (Some(new), Some(old)) => new < 0 || (new as u64) >= old,
        _ => true,
    };
    let write_mem = || match mem {
        Some(m) => cg.write_file("memory", "memory.limit_in_bytes", &m.to_string()),
        None => Ok(()),
    };
    let write_memsw = || match memsw {
        Some(s) => cg.write_file("memory", "memory.memsw.limit_in_bytes", &s.to_string()),
        None => Ok(()),
    };
    if grow_first {
        write_memsw()?;
        write_mem()
    } else {
        write_mem()?;
        write_memsw()
    }
}

/// Writes what `r` sets (zero fields are left alone) into the container's cgroup.
fn apply(cg: &Cgroup, r: &LinuxContainerResources) -> std::result::Result<(), CgroupError> {
    let v2 = cg.is_v2();
    if v2 {
        if r.memory_limit_in_bytes > 0 {
            cg.write_file("memory", "memory.max", &r.memory_limit_in_bytes.to_string())?;
        }
        if r.memory_swap_limit_in_bytes != 0 {
            let value = if r.memory_swap_limit_in_bytes < 0 {
                "max".to_string()
            } else {
                let mem = if r.memory_limit_in_bytes > 0 {
                    Some(r.memory_limit_in_bytes as u64)
                } else {
                    parse_u64(&cg.read_file("memory", "memory.max")?)
                };
                // CRI's is memory plus swap; v2's is swap alone.
                let total = r.memory_swap_limit_in_bytes as u64;
                mem.map(|m| total.saturating_sub(m))
                    .unwrap_or(total)
                    .to_string()
            };
            cg.write_file("memory", "memory.swap.max", &value)?;
        }
    } else if r.memory_limit_in_bytes > 0 || r.memory_swap_limit_in_bytes != 0 {
        write_memory_v1(
            cg,
            Some(r.memory_limit_in_bytes),
            Some(r.memory_swap_limit_in_bytes),
        )?;
    }
    if r.cpu_shares > 0 {
        if v2 {
            let weight = pve::cgroup::shares_to_weight(r.cpu_shares as u64);
            cg.write_file("cpu", "cpu.weight", &weight.to_string())?;
        } else {
            cg.write_file("cpu", "cpu.shares", &r.cpu_shares.to_string())?;
        }
    }
    write_cpu_bandwidth(
        cg,
        (r.cpu_quota != 0).then_some(r.cpu_quota),
        (r.cpu_period != 0).then_some(r.cpu_period),
    )?;
    for (file, list) in [
        ("cpuset.cpus", &r.cpuset_cpus),
        ("cpuset.mems", &r.cpuset_mems),
    ] {
        if list.is_empty() {
            continue;
        }
        // Containers made by a podinit older than cpuset support have no cpuset cgroup.
        if !cg.has_file("cpuset", file) {
            return Err(CgroupError::NoController(format!(
                "cpuset for this container ({file})"
            )));
        }
        cg.write_file("cpuset", file, list)?;
    }
    for h in &r.hugepage_limits {
        let file = if v2 {
            format!("hugetlb.{}.max", h.page_size)
        } else {
            format!("hugetlb.{}.limit_in_bytes", h.page_size)
        };
        // A zero limit (the kubelet sends one per page size) cannot be enforced without the
        // hugetlb controller, as at create.
        if !cg.has_file("hugetlb", &file) {
            if h.limit == 0 {
                continue;
            }
            return Err(CgroupError::NoController(format!(
                "hugetlb for {} pages ({file})",
                h.page_size
            )));
        }
        cg.write_file("hugetlb", &file, &h.limit.to_string())?;
    }
    if !r.unified.is_empty() {
        if !v2 {
            return Err(CgroupError::NoController(
                "cgroup v2 (unified resources need it; this host runs cgroup v1)".into(),
            ));
        }
        for (k, v) in &r.unified {
            let controller = k.split('.').next().unwrap_or_default();
            // Never create files: a key must name an interface file the kernel has.
            if !cg.has_file(controller, k) {
                return Err(CgroupError::NoController(format!(
                    "{controller} (no file {k} in the container's cgroup)"
                )));
            }
            cg.write_file(controller, k, v)?;
        }
    }
    Ok(())
}

impl Runtime {
    pub async fn update_container_resources(
        &self,
        query: &str,
        linux: Option<LinuxContainerResources>,
    ) -> Result<()> {
        let mut record = self.find_container(query)?;
        let new = linux.ok_or_else(|| {
            RuntimeError::invalid("UpdateContainerResources without linux resources")
        })?;
        validate(&new)?;
        let pod = self.find_pod(&record.pod_id)?;
        let lock = self.pod_lock(&pod.id);
        let _pod = lock.read().await;
        let clock = self.ctr_lock(&record.id);
        let _ctr = clock.lock().await;
        // Re-read under the lock: another update may have landed meanwhile.
        record = self.find_container(&record.id)?;
        let merged = merge(&current(&record), &new);
        if !new.unified.is_empty() || !new.cpuset_cpus.is_empty() || !new.cpuset_mems.is_empty() {
            tracing::debug!(container = %record.id, "resource update with cpuset or unified keys");
        }

        let init_pid = match self.pod_host.status(&pod.id).await {
            Ok(pve::CtStatus::Running { init_pid }) if pod.state == PodState::Ready => {
                Some(init_pid)
            }
            _ => None,
        };
        if let Some(init_pid) = init_pid {
            let siblings: Vec<ContainerRecord> = self
                .containers()?
                .into_iter()
                .filter(|c| c.pod_id == pod.id && !c.creating)
                .collect();
            let before: Vec<LinuxContainerResources> = siblings.iter().map(current).collect();
            let after: Vec<LinuxContainerResources> = siblings
                .iter()
                .map(|c| {
                    if c.id == record.id {
                        merged.clone()
                    } else {
                        current(c)
                    }
                })
                .collect();
            let id = record.id.clone();
            let new_r = new.clone();
            Self::blocking(move || {
                let ct = Cgroup::of_pod(init_pid)
                    .map_err(|e| cgroup_status(e, "finding the pod's cgroup"))?;
                make_room(&ct, &before, &after)?;
                let cg = ct.container(&id);
                if !cg.exists() {
                    return Err(RuntimeError::precondition(format!(
                        "container {id} has no cgroup (it was deleted)"
                    )));
                }
                apply(&cg, &new_r).map_err(|e| cgroup_status(e, "updating the container's cgroup"))
            })
            .await?;
        }

        let cfg = &mut record.config;
        cfg.linux.get_or_insert_with(Default::default).resources = Some(merged);
        let key = ContainerRecord::key(&record.pod_id, &record.config);
        self.metadata
            .put(Table::Containers, &record.id, Some(&key), &record)?;
        tracing::info!(container = %record.id, applied = init_pid.is_some(), "container resources updated");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::HugepageLimit;
    use std::path::Path;

    fn res() -> LinuxContainerResources {
        LinuxContainerResources::default()
    }

    #[test]
    fn validation() {
        assert!(validate(&res()).is_ok());
        let ok = LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            memory_swap_limit_in_bytes: 128 << 20,
            cpuset_cpus: "0-1,3".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: 0,
            }],
            unified: [("memory.high".to_string(), "1000000".to_string())].into(),
            ..res()
        };
        assert!(validate(&ok).is_ok());
        for (bad, needle) in [
            (
                LinuxContainerResources {
                    cpu_period: 10,
                    ..res()
                },
                "cpu_period",
            ),
            (
                LinuxContainerResources {
                    cpu_quota: -5,
                    ..res()
                },
                "cpu_quota",
            ),
            (
                LinuxContainerResources {
                    cpu_quota: 10,
                    ..res()
                },
                "cpu_quota",
            ),
            (
                LinuxContainerResources {
                    cpu_shares: 1,
                    ..res()
                },
                "cpu_shares",
            ),
            (
                LinuxContainerResources {
                    memory_limit_in_bytes: -2,
                    ..res()
                },
                "memory_limit",
            ),
            (
                LinuxContainerResources {
                    memory_limit_in_bytes: 100,
                    memory_swap_limit_in_bytes: 50,
                    ..res()
                },
                "memory_swap",
            ),
            (
                LinuxContainerResources {
                    cpuset_cpus: "0-".into(),
                    ..res()
                },
                "cpuset_cpus",
            ),
            (
                LinuxContainerResources {
                    cpuset_mems: "x".into(),
                    ..res()
                },
                "cpuset_mems",
            ),
            (
                LinuxContainerResources {
                    hugepage_limits: vec![HugepageLimit {
                        page_size: "2XB".into(),
                        limit: 1,
                    }],
                    ..res()
                },
                "page size",
            ),
            (
                LinuxContainerResources {
                    unified: [("../../etc/passwd".to_string(), "x".to_string())].into(),
                    ..res()
                },
                "unified",
            ),
            (
                LinuxContainerResources {
                    unified: [("cgroup.procs".to_string(), "1".to_string())].into(),
                    ..res()
                },
                "unified",
            ),
        ] {
            let e = validate(&bad).unwrap_err();
            assert_eq!(e.code, Code::InvalidArgument);
            assert!(e.message.contains(needle), "{needle}: {}", e.message);
        }
    }

    #[test]
    fn zero_fields_keep_their_value() {
        let old = LinuxContainerResources {
            cpu_shares: 512,
            memory_limit_in_bytes: 100,
            cpuset_cpus: "0".into(),
            ..res()
        };
        let new = LinuxContainerResources {
            memory_limit_in_bytes: 200,
            cpu_quota: 50_000,
            ..res()
        };
        let m = merge(&old, &new);
        assert_eq!(
            (
                m.cpu_shares,
                m.memory_limit_in_bytes,
                m.cpu_quota,
                m.cpuset_cpus.as_str()
            ),
            (512, 200, 50_000, "0")
        );
    }

    fn v2_ctr(dir: &Path) -> Cgroup {
        for (f, v) in [
            ("memory.max", "max"),
            ("memory.swap.max", "max"),
            ("cpu.max", "max 100000"),
            ("cpu.weight", "100"),
            ("cpuset.cpus", ""),
            ("memory.high", "max"),
        ] {
            std::fs::write(dir.join(f), v).unwrap();
        }
        Cgroup::V2(dir.to_path_buf())
    }

    #[test]
    fn writes_a_v2_cgroup() {
        let dir = tempfile::tempdir().unwrap();
        let cg = v2_ctr(dir.path());
        apply(
            &cg,
            &LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                memory_swap_limit_in_bytes: 96 << 20,
                cpu_shares: 1024,
                cpu_quota: 50_000,
                cpuset_cpus: "1".into(),
                unified: [("memory.high".to_string(), "50000000".to_string())].into(),
                ..res()
            },
        )
        .unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert_eq!(read("memory.max"), (64u64 << 20).to_string());
        assert_eq!(
            read("memory.swap.max"),
            (32u64 << 20).to_string(),
            "swap alone"
        );
        assert_eq!(read("cpu.weight"), "39");
        assert_eq!(read("cpu.max"), "50000 100000", "period kept");
        assert_eq!(read("cpuset.cpus"), "1");
        assert_eq!(read("memory.high"), "50000000");
        // Only the period: the quota stays.
        apply(
            &cg,
            &LinuxContainerResources {
                cpu_period: 200_000,
                ..res()
            },
        )
        .unwrap();
        assert_eq!(read("cpu.max"), "50000 200000");
        // A non-zero hugepage limit needs the controller's file.
        let e = apply(
            &cg,
            &LinuxContainerResources {
                hugepage_limits: vec![HugepageLimit {
                    page_size: "2MB".into(),
                    limit: 1 << 21,
                }],
                ..res()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("hugetlb"), "{e}");
        let e = apply(
            &cg,
            &LinuxContainerResources {
                unified: [("pids.max".to_string(), "10".to_string())].into(),
                ..res()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("pids.max"), "{e}");
        assert!(!dir.path().join("pids.max").exists(), "no file made");
    }

    #[test]
    fn v1_memory_and_swap_are_written_in_an_order_the_kernel_takes() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("memory");
        std::fs::create_dir(&m).unwrap();
        std::fs::write(m.join("memory.limit_in_bytes"), "100").unwrap();
        std::fs::write(m.join("memory.memsw.limit_in_bytes"), "150").unwrap();
        let cg = Cgroup::V1([("memory".to_string(), m.clone())].into());
        // Growing memory past memory+swap grows memory+swap first, keeping the 50 of swap.
        write_memory_v1(&cg, Some(300), None).unwrap();
        let read = |f: &str| std::fs::read_to_string(m.join(f)).unwrap();
        assert_eq!(read("memory.limit_in_bytes"), "300");
        assert_eq!(read("memory.memsw.limit_in_bytes"), "350");
        write_memory_v1(&cg, Some(200), Some(250)).unwrap();
        assert_eq!(read("memory.limit_in_bytes"), "200");
        assert_eq!(read("memory.memsw.limit_in_bytes"), "250");
    }

    #[test]
    fn the_ct_grows_with_its_containers() {
        let dir = tempfile::tempdir().unwrap();
        let ct = v2_ctr(dir.path());
        std::fs::write(dir.path().join("memory.max"), "300").unwrap();
        std::fs::write(dir.path().join("cpu.max"), "150000 100000").unwrap();
        let c = |mem: i64, quota: i64| LinuxContainerResources {
            memory_limit_in_bytes: mem,
            cpu_quota: quota,
            cpu_period: 100_000,
            ..res()
        };
        // The CT had 100 of slack over its containers' 200; growing one by 50 keeps it.
        make_room(
            &ct,
            &[c(100, 50_000), c(100, 50_000)],
            &[c(150, 100_000), c(100, 50_000)],
        )
        .unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert_eq!(read("memory.max"), "350");
        assert_eq!(read("cpu.max"), "200000 100000");
        // Shrinking leaves the CT alone.
        make_room(&ct, &[c(150, 100_000)], &[c(50, 10_000)]).unwrap();
        assert_eq!(read("memory.max"), "350");
        assert_eq!(read("cpu.max"), "200000 100000");
        // A CT without limits stays without.
        std::fs::write(dir.path().join("memory.max"), "max").unwrap();
        std::fs::write(dir.path().join("cpu.max"), "max 100000").unwrap();
        make_room(&ct, &[c(1, 1_000)], &[c(1 << 30, 400_000)]).unwrap();
        assert_eq!(read("memory.max"), "max");
        assert_eq!(read("cpu.max"), "max 100000");
    }

    #[test]
    fn page_sizes() {
        for ok in ["2MB", "1GB", "64KB"] {
            assert!(is_page_size(ok), "{ok}");
        }
        for bad in ["", "MB", "2mb", "2M", "2MBB", "1234567MB"] {
            assert!(!is_page_size(bad), "{bad}");
        }
    }
}
