//! Resource usage of pods and containers: the CRI stats RPCs (ContainerStats,
//! ListContainerStats, PodSandboxStats, ListPodSandboxStats) and the cAdvisor-style metrics
//! (ListPodSandboxMetrics), all read from the cgroups of the pod CTs on the host, the pods'
//! network namespaces and the layer store.
//!
//! [`gather`] takes one reading of the pods asked for; [`convert`] and [`cadvisor`] turn it
//! into CRI messages. The [`Stats`] kept between calls holds the previous CPU reading of each
//! pod and container (for `usage_nano_cores`) and the writable layers' usage, which is
//! measured at most every [`FS_USAGE_TTL`] (a walk of every upper directory, or a `zfs list`).

pub mod cadvisor;
pub mod cgroup;
pub mod convert;
pub mod netdev;
pub mod service;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use layerfs::{LayerStore, RootfsUsage};
use pve::CtStatus;

use crate::runtime::error::{Result, RuntimeError};
use crate::runtime::records::{ContainerRecord, PodRecord, PodState};
use crate::runtime::{Runtime, now_ns};
use cgroup::{Cgroup, Sample};
use netdev::InterfaceStats;

/// How old the writable layers' usage may be.
pub const FS_USAGE_TTL: Duration = Duration::from_secs(10);
/// The shortest window `usage_nano_cores` is computed over; readings closer together than this
/// to the previous one answer the previous rate.
const MIN_CPU_WINDOW_NS: i64 = 1_000_000_000;

/// What the stats keep between calls.
#[derive(Default)]
pub struct Stats {
    cpu: Mutex<HashMap<String, CpuPoint>>,
    fs: Mutex<FsCache>,
    /// Where each pod's cgroup is, by pod id, for the CT init it was found through: finding it
    /// reads the daemon's mount table, which grows with the pods.
    places: Mutex<HashMap<String, (u32, Cgroup)>>,
}

#[derive(Debug, Clone, Copy)]
struct CpuPoint {
    ts_ns: i64,
    usage_ns: u64,
    nano_cores: Option<u64>,
}

#[derive(Default)]
struct FsCache {
    at: Option<Instant>,
    usage: BTreeMap<String, RootfsUsage>,
    mountpoint: Option<String>,
}

impl Stats {
    /// CPU cores used (in nanocores) since the previous reading of `key`; `None` for the first.
    pub fn nano_cores(&self, key: &str, ts_ns: i64, usage_ns: u64) -> Option<u64> {
        let mut map = self.cpu.lock().unwrap_or_else(|p| p.into_inner());
        let Some(prev) = map.get(key).copied() else {
            map.insert(
                key.to_string(),
                CpuPoint {
                    ts_ns,
                    usage_ns,
                    nano_cores: None,
                },
            );
            return None;
        };
        let window = ts_ns - prev.ts_ns;
        if window < MIN_CPU_WINDOW_NS {
            return prev.nano_cores;
        }
        let used = usage_ns.saturating_sub(prev.usage_ns);
        let nano = u64::try_from(u128::from(used) * 1_000_000_000 / window.unsigned_abs() as u128)
            .unwrap_or(u64::MAX);
        map.insert(
            key.to_string(),
            CpuPoint {
                ts_ns,
                usage_ns,
                nano_cores: Some(nano),
            },
        );
        Some(nano)
    }

    /// Drops the CPU readings of pods and containers that are gone.
    pub fn retain(&self, live: &HashSet<String>) {
        let mut map = self.cpu.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|k, _| live.contains(k));
        let mut places = self.places.lock().unwrap_or_else(|p| p.into_inner());
        places.retain(|pod, _| live.contains(&pod_key(pod)));
    }

    /// The cgroup of the pod whose CT init is `init_pid` (blocking).
    fn pod_cgroup(
        &self,
        pod_id: &str,
        init_pid: u32,
    ) -> std::result::Result<Cgroup, cgroup::CgroupError> {
        if let Some((pid, cg)) = self
            .places
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(pod_id)
            && *pid == init_pid
        {
            return Ok(cg.clone());
        }
        let cg = Cgroup::of_pod(init_pid)?;
        self.places
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pod_id.to_string(), (init_pid, cg.clone()));
        Ok(cg)
    }

    pub fn forget(&self, key: &str) {
        let mut map = self.cpu.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(key);
    }

    /// Blocking. The writable layer usage of `ids` and the store's mount point, refreshed when
    /// older than [`FS_USAGE_TTL`] or when an id is missing from a reading older than a second
    /// (a container created since).
    pub fn writable_layers(
        &self,
        store: &dyn LayerStore,
        ids: &[String],
    ) -> (String, HashMap<String, RootfsUsage>) {
        let mut fs = self.fs.lock().unwrap_or_else(|p| p.into_inner());
        if fs.mountpoint.is_none() {
            match store.usage() {
                Ok(u) => fs.mountpoint = Some(u.mountpoint.display().to_string()),
                Err(e) => tracing::warn!(error = %e, "layer store usage"),
            }
        }
        let age = fs.at.map(|t| t.elapsed());
        let stale = age.is_none_or(|a| a >= FS_USAGE_TTL)
            || (age.is_some_and(|a| a >= Duration::from_secs(1))
                && ids.iter().any(|id| !fs.usage.contains_key(id)));
        if stale {
            match store.rootfs_usage() {
                Ok(u) => {
                    fs.usage = u;
                    fs.at = Some(Instant::now());
                }
                Err(e) => tracing::warn!(error = %e, "measuring writable layers"),
            }
        }
        let out = ids
            .iter()
            .filter_map(|id| fs.usage.get(id).map(|u| (id.clone(), *u)))
            .collect();
        (fs.mountpoint.clone().unwrap_or_default(), out)
    }
}

/// One reading of a container.
#[derive(Debug, Clone)]
pub struct ContainerSample {
    pub record: ContainerRecord,
    pub ts_ns: i64,
    /// `None` when the container's cgroup cannot be read (its pod's CT is not running).
    pub cgroup: Option<Sample>,
    pub nano_cores: Option<u64>,
    pub writable_layer: Option<RootfsUsage>,
}

/// One reading of a pod.
#[derive(Debug, Clone)]
pub struct PodSample {
    pub record: PodRecord,
    pub ts_ns: i64,
    /// `None` when the pod's CT is not running or its cgroup cannot be read.
    pub cgroup: Option<Sample>,
    pub nano_cores: Option<u64>,
    /// `None` for host-network pods and pods that are not running.
    pub network: Option<Vec<InterfaceStats>>,
    pub containers: Vec<ContainerSample>,
}

/// Where the pod's figures are: its CT init and its cgroup.
#[derive(Debug, Clone)]
struct PodPlace {
    init_pid: u32,
    cgroup: Cgroup,
}

/// What to read.
pub struct Selection {
    pub pods: Vec<PodRecord>,
    /// Containers by pod id.
    pub containers: HashMap<String, Vec<ContainerRecord>>,
    /// Read the pods' own cgroup and network (not only their containers').
    pub pod_level: bool,
}

/// Reads everything `sel` names. Pods whose CT is not running come back without figures.
pub async fn gather(rt: &Runtime, sel: Selection) -> Result<(String, Vec<PodSample>)> {
    let mut places: HashMap<String, PodPlace> = HashMap::new();
    for pod in &sel.pods {
        if pod.state != PodState::Ready {
            continue;
        }
        let init_pid = match rt.pod_host.status(&pod.id).await {
            Ok(CtStatus::Running { init_pid }) => init_pid,
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(pod = %pod.id, error = %e, "pod CT status for stats");
                continue;
            }
        };
        let stats = rt.stats.clone();
        let id = pod.id.clone();
        let found = tokio::task::spawn_blocking(move || stats.pod_cgroup(&id, init_pid))
            .await
            .map_err(|e| RuntimeError::internal(format!("stats task: {e}")))?;
        match found {
            Ok(cgroup) => {
                places.insert(pod.id.clone(), PodPlace { init_pid, cgroup });
            }
            Err(e) => tracing::debug!(pod = %pod.id, error = %e, "pod cgroup for stats"),
        }
    }
    let store: Arc<dyn LayerStore> = rt.images.store().clone();
    let stats = rt.stats.clone();
    let Selection {
        pods,
        mut containers,
        pod_level,
    } = sel;
    tokio::task::spawn_blocking(move || {
        let ids: Vec<String> = containers
            .values()
            .flatten()
            .map(|c| c.id.clone())
            .collect();
        let (mountpoint, fs) = stats.writable_layers(store.as_ref(), &ids);
        let mut out = Vec::with_capacity(pods.len());
        for pod in pods {
            let place = places.get(&pod.id);
            let ts_ns = now_ns();
            let (cgroup, nano_cores, network) = match (place, pod_level) {
                (Some(p), true) => {
                    let sample = read_sample(&p.cgroup, &pod.id);
                    let nano = sample
                        .as_ref()
                        .and_then(|s| stats.nano_cores(&pod_key(&pod.id), ts_ns, s.cpu.usage_ns));
                    let net = if pod.host_network {
                        None
                    } else {
                        match netdev::read(p.init_pid) {
                            Ok(n) => Some(n),
                            Err(e) => {
                                tracing::debug!(pod = %pod.id, error = %e, "pod network counters");
                                None
                            }
                        }
                    };
                    (sample, nano, net)
                }
                _ => (None, None, None),
            };
            let ctrs = containers.remove(&pod.id).unwrap_or_default();
            let containers = ctrs
                .into_iter()
                .map(|record| {
                    let ts_ns = now_ns();
                    let cgroup = place
                        .and_then(|p| read_sample(&p.cgroup.container(&record.id), &record.id));
                    let nano_cores = cgroup
                        .as_ref()
                        .and_then(|s| stats.nano_cores(&record.id, ts_ns, s.cpu.usage_ns));
                    ContainerSample {
                        writable_layer: fs.get(&record.id).copied(),
                        record,
                        ts_ns,
                        cgroup,
                        nano_cores,
                    }
                })
                .collect();
            out.push(PodSample {
                record: pod,
                ts_ns,
                cgroup,
                nano_cores,
                network,
                containers,
            });
        }
        (mountpoint, out)
    })
    .await
    .map_err(|e| RuntimeError::internal(format!("stats task: {e}")))
}

fn read_sample(cg: &Cgroup, what: &str) -> Option<Sample> {
    match cg.sample() {
        Ok(s) => Some(s),
        Err(e) if e.is_not_found() => None,
        Err(e) => {
            tracing::debug!(%what, error = %e, "reading cgroup");
            None
        }
    }
}

/// The key of a pod's CPU reading (container ids and pod ids share one map).
pub fn pod_key(pod_id: &str) -> String {
    format!("pod/{pod_id}")
}

/// Where the daemon would look for a pod's cgroup, for verbose status output.
pub fn pod_cgroup_path(init_pid: u32) -> Option<PathBuf> {
    match Cgroup::of_pod(init_pid).ok()? {
        Cgroup::V2(d) => Some(d),
        Cgroup::V1(dirs) => dirs.get("memory").cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nano_cores_between_readings() {
        let s = Stats::default();
        assert_eq!(s.nano_cores("c", 0, 0), None, "first reading");
        // Half a second later: too close, no rate yet.
        assert_eq!(s.nano_cores("c", 500_000_000, 400_000_000), None);
        // Two seconds after the first, 1.5 s of CPU: 0.75 cores.
        assert_eq!(
            s.nano_cores("c", 2_000_000_000, 1_500_000_000),
            Some(750_000_000)
        );
        // Too close again: the last rate.
        assert_eq!(
            s.nano_cores("c", 2_100_000_000, 1_600_000_000),
            Some(750_000_000)
        );
        // A counter that went back (a new cgroup under the same key) gives 0, not garbage.
        assert_eq!(s.nano_cores("c", 4_000_000_000, 10), Some(0));
        s.retain(&HashSet::new());
        assert_eq!(s.nano_cores("c", 5_000_000_000, 10), None, "forgotten");
    }
}
