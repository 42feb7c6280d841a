//! Gauges of what exists, refreshed when `/metrics` is scraped: pods and containers by state,
//! podinit restarts, the layer store, the zfs pool, event subscribers.
//!
//! Container states come from podinit's status files (no podinit call per container); the
//! layer store and the pool are measured at most every [`SLOW_TTL`] (a `zfs list`, or a walk of
//! the writable layers).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts, Registry};
use pve::CtStatus;

use crate::config::StorageDriver;
use crate::daemon::Daemon;
use crate::runtime::records::PodState;

/// How often the layer store and the zfs pool are measured at most.
pub const SLOW_TTL: Duration = Duration::from_secs(30);

pub struct StateMetrics {
    pub pods: IntGaugeVec,
    pub containers: IntGaugeVec,
    pub podinit_restarts: IntCounter,
    pub store_layers: IntGaugeVec,
    pub store_layer_bytes: IntGaugeVec,
    pub store_used_bytes: IntGaugeVec,
    pub store_used_inodes: IntGaugeVec,
    pub store_rootfs: IntGaugeVec,
    pub pool_size: IntGaugeVec,
    pub pool_allocated: IntGaugeVec,
    pub pool_free: IntGaugeVec,
    pub event_subscribers: IntGauge,
    /// The CT init each ready pod ran last time we looked (`None`: it was gone).
    inits: Mutex<HashMap<String, Option<u32>>>,
    slow_at: Mutex<Option<Instant>>,
}

fn gauge_vec(name: &str, help: &str, label: &str) -> Result<IntGaugeVec, prometheus::Error> {
    IntGaugeVec::new(Opts::new(name, help), &[label])
}

impl StateMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            pods: gauge_vec(
                "pvecri_pods",
                "Pod sandboxes by state (ready, notready)",
                "state",
            )?,
            containers: gauge_vec(
                "pvecri_containers",
                "Containers by state (created, running, exited, unknown)",
                "state",
            )?,
            podinit_restarts: IntCounter::with_opts(Opts::new(
                "pvecri_podinit_restarts_total",
                "Times a ready pod's podinit (its CT's init) was found gone or replaced without StopPodSandbox",
            ))?,
            store_layers: gauge_vec(
                "pvecri_layer_store_layers",
                "Complete layers in the layer store",
                "driver",
            )?,
            store_layer_bytes: gauge_vec(
                "pvecri_layer_store_layer_bytes",
                "Bytes the layers hold (each layer's own diff)",
                "driver",
            )?,
            store_used_bytes: gauge_vec(
                "pvecri_layer_store_used_bytes",
                "Bytes the layer store uses: layers and container writable layers (what ImageFsInfo reports)",
                "driver",
            )?,
            store_used_inodes: gauge_vec(
                "pvecri_layer_store_used_inodes",
                "Inodes the layer store uses",
                "driver",
            )?,
            store_rootfs: gauge_vec(
                "pvecri_layer_store_rootfs",
                "Container root filesystems in the layer store",
                "driver",
            )?,
            pool_size: gauge_vec(
                "pvecri_zfs_pool_size_bytes",
                "Size of the ZFS pool holding the layer store",
                "pool",
            )?,
            pool_allocated: gauge_vec(
                "pvecri_zfs_pool_allocated_bytes",
                "Bytes allocated in the ZFS pool holding the layer store",
                "pool",
            )?,
            pool_free: gauge_vec(
                "pvecri_zfs_pool_free_bytes",
                "Free bytes in the ZFS pool holding the layer store",
                "pool",
            )?,
            event_subscribers: IntGauge::with_opts(Opts::new(
                "pvecri_event_subscribers",
                "Clients subscribed to GetContainerEvents",
            ))?,
            inits: Mutex::new(HashMap::new()),
            slow_at: Mutex::new(None),
        })
    }

    pub fn register(&self, r: &Registry) -> Result<(), prometheus::Error> {
        for v in [
            &self.pods,
            &self.containers,
            &self.store_layers,
            &self.store_layer_bytes,
            &self.store_used_bytes,
            &self.store_used_inodes,
            &self.store_rootfs,
            &self.pool_size,
            &self.pool_allocated,
            &self.pool_free,
        ] {
            r.register(Box::new(v.clone()))?;
        }
        r.register(Box::new(self.podinit_restarts.clone()))?;
        r.register(Box::new(self.event_subscribers.clone()))?;
        Ok(())
    }

    /// Counts a podinit that went away or was replaced since the last look.
    fn observe_init(
        &self,
        seen: &mut HashMap<String, Option<u32>>,
        pod: &str,
        recorded: Option<u32>,
        now: Option<u32>,
    ) {
        let before = seen.get(pod).copied().unwrap_or(recorded);
        if let Some(before) = before
            && now != Some(before)
        {
            self.podinit_restarts.inc();
            tracing::warn!(pod, old_init = before, new_init = ?now, "podinit of a ready pod is gone or was replaced");
        }
        seen.insert(pod.to_string(), now);
    }

    /// Brings every gauge up to date.
    pub async fn refresh(&self, daemon: &Daemon) {
        let rt = &daemon.runtime;
        self.event_subscribers
            .set(i64::try_from(rt.events.subscribers()).unwrap_or(i64::MAX));

        let pods = rt.pods().unwrap_or_default();
        let (mut ready, mut notready) = (0i64, 0i64);
        let mut now_seen = Vec::new();
        for pod in pods.iter().filter(|p| p.state != PodState::Creating) {
            let running = match pod.state {
                PodState::Ready => match rt.pod_host.status(&pod.id).await {
                    Ok(CtStatus::Running { init_pid }) => Some(init_pid),
                    _ => None,
                },
                _ => None,
            };
            if running.is_some() {
                ready += 1;
            } else {
                notready += 1;
            }
            if pod.state == PodState::Ready {
                now_seen.push((pod.id.clone(), pod.init_pid, running));
            }
        }
        {
            let mut seen = self.inits.lock().unwrap_or_else(|p| p.into_inner());
            for (id, recorded, running) in &now_seen {
                self.observe_init(&mut seen, id, *recorded, *running);
            }
            seen.retain(|id, _| now_seen.iter().any(|(p, _, _)| p == id));
        }
        self.pods.with_label_values(&["ready"]).set(ready);
        self.pods.with_label_values(&["notready"]).set(notready);

        let ctrs: Vec<(std::path::PathBuf, String)> = rt
            .containers()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| !c.creating)
            .map(|c| (rt.pod_dir(&c.pod_id), c.id))
            .collect();
        let counts = tokio::task::spawn_blocking(move || {
            let mut counts: HashMap<&'static str, i64> = HashMap::new();
            for (dir, id) in ctrs {
                let state = match podinit::status::read_status(&dir, &id).map(|s| s.state) {
                    Ok(podinit::api::ContainerState::Created) => "created",
                    Ok(podinit::api::ContainerState::Running) => "running",
                    Ok(podinit::api::ContainerState::Exited) => "exited",
                    Err(_) => "unknown",
                };
                *counts.entry(state).or_default() += 1;
            }
            counts
        })
        .await
        .unwrap_or_default();
        for state in ["created", "running", "exited", "unknown"] {
            self.containers
                .with_label_values(&[state])
                .set(counts.get(state).copied().unwrap_or(0));
        }

        let due = {
            let mut at = self.slow_at.lock().unwrap_or_else(|p| p.into_inner());
            let due = at.is_none_or(|t| t.elapsed() >= SLOW_TTL);
            if due {
                *at = Some(Instant::now());
            }
            due
        };
        if due {
            self.refresh_store(daemon).await;
        }
    }

    async fn refresh_store(&self, daemon: &Daemon) {
        let store = daemon.images.store().clone();
        let pool = match daemon.config.storage.driver {
            StorageDriver::Zfs => {
                Some(super::zpool::pool_of(&daemon.config.storage.zfs.dataset).to_string())
            }
            StorageDriver::Overlay => None,
        };
        let measured = tokio::task::spawn_blocking(move || {
            let layers = store.layers();
            let rootfs = store.rootfs_ids();
            let usage = store.usage();
            let pool = pool.map(|p| {
                let u = super::zpool::usage(&p);
                (p, u)
            });
            (store.driver(), layers, rootfs, usage, pool)
        })
        .await;
        let Ok((driver, layers, rootfs, usage, pool)) = measured else {
            return;
        };
        let set = |g: &IntGaugeVec, v: u64| {
            g.with_label_values(&[driver])
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        match layers {
            Ok(l) => {
                set(&self.store_layers, l.len() as u64);
                set(&self.store_layer_bytes, l.iter().map(|l| l.size).sum());
            }
            Err(e) => tracing::warn!(error = %e, "listing layers for metrics"),
        }
        match rootfs {
            Ok(r) => set(&self.store_rootfs, r.len() as u64),
            Err(e) => tracing::warn!(error = %e, "listing root filesystems for metrics"),
        }
        match usage {
            Ok(u) => {
                set(&self.store_used_bytes, u.used_bytes);
                set(&self.store_used_inodes, u.used_inodes);
            }
            Err(e) => tracing::warn!(error = %e, "layer store usage for metrics"),
        }
        if let Some((pool, u)) = pool {
            match u {
                Ok(u) => {
                    let set = |g: &IntGaugeVec, v: u64| {
                        g.with_label_values(&[&pool])
                            .set(i64::try_from(v).unwrap_or(i64::MAX));
                    };
                    set(&self.pool_size, u.size);
                    set(&self.pool_allocated, u.allocated);
                    set(&self.pool_free, u.free);
                }
                Err(e) => tracing::warn!(error = %e, "zpool usage for metrics"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podinit_restarts_count_once_per_loss() {
        let m = StateMetrics::new().unwrap();
        let mut seen = HashMap::new();
        m.observe_init(&mut seen, "p", Some(10), Some(10));
        assert_eq!(m.podinit_restarts.get(), 0);
        m.observe_init(&mut seen, "p", Some(10), None);
        assert_eq!(m.podinit_restarts.get(), 1, "gone");
        m.observe_init(&mut seen, "p", Some(10), None);
        assert_eq!(m.podinit_restarts.get(), 1, "still gone: counted once");
        m.observe_init(&mut seen, "p", Some(10), Some(20));
        assert_eq!(m.podinit_restarts.get(), 1, "back: the loss was counted");
        m.observe_init(&mut seen, "p", Some(10), Some(30));
        assert_eq!(m.podinit_restarts.get(), 2, "replaced");
        // A pod first seen with another init than recorded (replaced while unobserved).
        m.observe_init(&mut seen, "q", Some(5), Some(6));
        assert_eq!(m.podinit_restarts.get(), 3);
    }
}
