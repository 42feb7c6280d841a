//! The stats RPCs over [`super::gather`]: which pods and containers a request selects.

use std::collections::{HashMap, HashSet};

use k8s_cri::v1::{
    ContainerStats, ContainerStatsFilter, PodSandboxMetrics, PodSandboxStats, PodSandboxStatsFilter,
};

use super::{Selection, cadvisor, convert, gather, pod_key};
use crate::runtime::error::{Result, RuntimeError};
use crate::runtime::records::{ContainerRecord, PodRecord, PodState};
use crate::runtime::{Runtime, labels_match};

fn by_pod(ctrs: Vec<ContainerRecord>) -> HashMap<String, Vec<ContainerRecord>> {
    let mut map: HashMap<String, Vec<ContainerRecord>> = HashMap::new();
    for c in ctrs {
        map.entry(c.pod_id.clone()).or_default().push(c);
    }
    map
}

/// Forgets the CPU readings of whatever no longer exists (after a full listing).
fn prune(rt: &Runtime, pods: &[PodRecord], ctrs: &[ContainerRecord]) {
    let live: HashSet<String> = pods
        .iter()
        .map(|p| pod_key(&p.id))
        .chain(ctrs.iter().map(|c| c.id.clone()))
        .collect();
    rt.stats.retain(&live);
}

pub async fn container_stats(rt: &Runtime, query: &str) -> Result<ContainerStats> {
    let c = rt.find_container(query)?;
    let pod = rt.find_pod(&c.pod_id)?;
    let (mountpoint, samples) = gather(
        rt,
        Selection {
            pods: vec![pod],
            containers: by_pod(vec![c]),
            pod_level: false,
        },
    )
    .await?;
    samples
        .first()
        .and_then(|p| p.containers.first())
        .map(|c| convert::container(c, &mountpoint))
        .ok_or_else(|| RuntimeError::internal("container stats: nothing read"))
}

pub async fn list_container_stats(
    rt: &Runtime,
    filter: ContainerStatsFilter,
) -> Result<Vec<ContainerStats>> {
    let all = rt.containers()?;
    let pods = rt.pods()?;
    if filter.id.is_empty() && filter.pod_sandbox_id.is_empty() && filter.label_selector.is_empty()
    {
        prune(rt, &pods, &all);
    }
    let ctrs: Vec<ContainerRecord> = all
        .into_iter()
        .filter(|c| {
            !c.creating
                && (filter.id.is_empty() || c.id.starts_with(&filter.id))
                && (filter.pod_sandbox_id.is_empty()
                    || c.pod_id.starts_with(&filter.pod_sandbox_id))
                && labels_match(&filter.label_selector, &c.config.labels)
        })
        .collect();
    let wanted: HashSet<&str> = ctrs.iter().map(|c| c.pod_id.as_str()).collect();
    let pods: Vec<PodRecord> = pods
        .into_iter()
        .filter(|p| wanted.contains(p.id.as_str()))
        .collect();
    let (mountpoint, samples) = gather(
        rt,
        Selection {
            pods,
            containers: by_pod(ctrs),
            pod_level: false,
        },
    )
    .await?;
    Ok(samples
        .iter()
        .flat_map(|p| p.containers.iter())
        .map(|c| convert::container(c, &mountpoint))
        .collect())
}

fn pod_containers(
    rt: &Runtime,
    pods: &[PodRecord],
) -> Result<HashMap<String, Vec<ContainerRecord>>> {
    let ids: HashSet<&str> = pods.iter().map(|p| p.id.as_str()).collect();
    Ok(by_pod(
        rt.containers()?
            .into_iter()
            .filter(|c| !c.creating && ids.contains(c.pod_id.as_str()))
            .collect(),
    ))
}

pub async fn pod_sandbox_stats(rt: &Runtime, query: &str) -> Result<PodSandboxStats> {
    let pod = rt.find_pod(query)?;
    let pods = vec![pod];
    let containers = pod_containers(rt, &pods)?;
    let (mountpoint, samples) = gather(
        rt,
        Selection {
            pods,
            containers,
            pod_level: true,
        },
    )
    .await?;
    samples
        .first()
        .map(|p| convert::pod(p, &mountpoint))
        .ok_or_else(|| RuntimeError::internal("pod stats: nothing read"))
}

/// Ready pods that match; stats of pods that are not running are left out, as containerd does.
fn ready_pods(rt: &Runtime, id: &str, labels: &HashMap<String, String>) -> Result<Vec<PodRecord>> {
    Ok(rt
        .pods()?
        .into_iter()
        .filter(|p| {
            p.state == PodState::Ready
                && (id.is_empty() || p.id.starts_with(id))
                && labels_match(labels, &p.config.labels)
        })
        .collect())
}

pub async fn list_pod_sandbox_stats(
    rt: &Runtime,
    filter: PodSandboxStatsFilter,
) -> Result<Vec<PodSandboxStats>> {
    let pods = ready_pods(rt, &filter.id, &filter.label_selector)?;
    let containers = pod_containers(rt, &pods)?;
    let (mountpoint, samples) = gather(
        rt,
        Selection {
            pods,
            containers,
            pod_level: true,
        },
    )
    .await?;
    Ok(samples
        .iter()
        .filter(|p| p.cgroup.is_some())
        .map(|p| convert::pod(p, &mountpoint))
        .collect())
}

pub async fn list_pod_sandbox_metrics(rt: &Runtime) -> Result<Vec<PodSandboxMetrics>> {
    let pods = ready_pods(rt, "", &HashMap::new())?;
    let containers = pod_containers(rt, &pods)?;
    let (_, samples) = gather(
        rt,
        Selection {
            pods,
            containers,
            pod_level: true,
        },
    )
    .await?;
    Ok(samples
        .iter()
        .filter(|p| p.cgroup.is_some())
        .map(cadvisor::pod_metrics)
        .collect())
}
