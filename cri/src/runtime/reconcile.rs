//! Start-up reconciliation: the records against what exists. Pods and containers keep
//! running while the daemon is away; what a crash left half made is cleaned.

use std::collections::HashSet;

use pve::CtStatus;

use super::Runtime;
use super::error::Result;
use super::records::{PodRecord, PodState};
use crate::metadata::Table;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub pods_running: usize,
    pub pods_found_stopped: usize,
    pub half_made_pods_removed: usize,
    pub orphan_cts_removed: usize,
    pub half_made_containers_removed: usize,
    pub orphan_rootfs_removed: usize,
}

impl Runtime {
    pub async fn reconcile(&self) -> Result<Reconciled> {
        let mut out = Reconciled::default();
        let pods = self.pods()?;
        let mut known: HashSet<String> = HashSet::new();
        for mut pod in pods {
            match pod.state {
                PodState::Creating => {
                    tracing::info!(pod = %pod.id, "removing a pod left half made by a crash");
                    self.tear_down(&pod).await;
                    self.metadata.delete(Table::Pods, &pod.id)?;
                    out.half_made_pods_removed += 1;
                    continue;
                }
                PodState::Ready | PodState::NotReady => {}
            }
            known.insert(pod.id.clone());
            match self.pod_host.status(&pod.id).await {
                Ok(CtStatus::Running { init_pid }) => {
                    out.pods_running += 1;
                    if pod.init_pid != Some(init_pid) && pod.state == PodState::Ready {
                        pod.init_pid = Some(init_pid);
                        self.save_pod(&pod)?;
                    }
                }
                Ok(CtStatus::Stopped | CtStatus::NotFound) => {
                    if pod.state == PodState::Ready {
                        tracing::warn!(pod = %pod.id, "pod CT stopped while the daemon was away");
                        pod.state = PodState::NotReady;
                        pod.init_pid = None;
                        self.save_pod(&pod)?;
                        out.pods_found_stopped += 1;
                    }
                }
                Err(e) => tracing::warn!(pod = %pod.id, error = %e, "pod CT status unknown"),
            }
        }
        match self.pod_host.list().await {
            Ok(cts) => {
                for ct in cts.into_iter().filter(|c| !known.contains(&c.id)) {
                    tracing::info!(ct = %ct.id, "removing a CT no pod record owns");
                    if let Err(e) = self.pod_host.destroy(&ct.id).await {
                        tracing::warn!(ct = %ct.id, error = %e, "removing orphan CT");
                    }
                    let dir = self.pod_dir(&ct.id);
                    let _ = Self::blocking(move || {
                        super::remove_tree(&dir);
                        Ok(())
                    })
                    .await;
                    out.orphan_cts_removed += 1;
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing CTs"),
        }
        let mut live_ctrs: HashSet<String> = HashSet::new();
        for c in self.containers()? {
            if c.creating || !known.contains(&c.pod_id) {
                tracing::info!(container = %c.id, "removing a container left half made or without its pod");
                self.remove_container_files(&c).await;
                self.metadata.delete(Table::Containers, &c.id)?;
                out.half_made_containers_removed += 1;
            } else {
                live_ctrs.insert(c.id);
            }
        }
        let store = self.images.store().clone();
        let rootfs = Self::blocking(move || Ok(store.rootfs_ids()?)).await?;
        for id in rootfs.into_iter().filter(|id| !live_ctrs.contains(id)) {
            let store = self.images.store().clone();
            let rid = id.clone();
            match Self::blocking(move || Ok(store.remove_rootfs(&rid)?)).await {
                Ok(()) => out.orphan_rootfs_removed += 1,
                Err(e) => tracing::warn!(rootfs = %id, error = %e, "removing orphan rootfs"),
            }
        }
        Ok(out)
    }

    fn save_pod(&self, pod: &PodRecord) -> Result<()> {
        let key = PodRecord::key(&pod.config);
        self.metadata.put(Table::Pods, &pod.id, Some(&key), pod)?;
        Ok(())
    }
}
