//! Stats through the real daemon: ContainerStats, ListContainerStats, PodSandboxStats,
//! ListPodSandboxStats and ListPodSandboxMetrics against the cgroup files, network counters
//! and writable layers the test reads itself, for a container that burns CPU and fills memory.
//!
//! Needs root, `scripts/build-podinit` (or `PVECRI_PODINIT`) and `cargo build -p cri`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test crate

use std::collections::HashMap;
use std::time::{Duration, Instant};

use e2e::cgroups::{Cg, init_pid};
use e2e::pods::{PodEnv, Store, container_config, eventually, exec_ok, sh, wait_container_state};
use k8s_cri::v1::{
    ContainerState, ContainerStats, ContainerStatsFilter, ContainerStatsRequest,
    ListContainerStatsRequest, ListMetricDescriptorsRequest, ListPodSandboxMetricsRequest,
    ListPodSandboxStatsRequest, PodSandboxStatsFilter, PodSandboxStatsRequest,
};

e2e::on_both_stores!(writable_layer_usage);

const RUNNING: Duration = Duration::from_secs(20);
const MIB: u64 = 1 << 20;

fn within(actual: u64, expected: u64, pct: u64, what: &str) {
    let diff = actual.abs_diff(expected);
    assert!(
        diff * 100 <= expected.max(1) * pct,
        "{what}: {actual} is not within {pct}% of {expected}"
    );
}

async fn container_stats(rt: &mut e2e::cri_client::RuntimeClient, id: &str) -> ContainerStats {
    rt.container_stats(ContainerStatsRequest {
        container_id: id.to_string(),
    })
    .await
    .unwrap()
    .into_inner()
    .stats
    .unwrap()
}

/// A container burning one CPU and holding 64 MiB in the pod's tmpfs (anonymous, so in the
/// working set): the stats follow the cgroup within 10%.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_track_the_cgroup() {
    let env = PodEnv::start(Store::Overlay).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("burner");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let mut burn = container_config("burn", &env.images.one_layer, &[]);
    burn.command =
        sh("dd if=/dev/zero of=/dev/shm/fill bs=1M count=64 2>/dev/null; while :; do :; done");
    let burn_id = env
        .run_container(&mut rt, &pod_id, &pod, burn)
        .await
        .unwrap();
    let idle = container_config("idle", &env.images.one_layer, &["sleep", "3600"]);
    let idle_id = env
        .run_container(&mut rt, &pod_id, &pod, idle)
        .await
        .unwrap();
    for id in [&burn_id, &idle_id] {
        wait_container_state(&mut rt, id, ContainerState::ContainerRunning, RUNNING)
            .await
            .unwrap();
    }
    let pid = init_pid(&mut rt, &pod_id).await.unwrap();
    let pod_cg = Cg::of_pod(pid).unwrap();
    let cg = pod_cg.container(&burn_id);
    eventually("the burner holds its 64 MiB", RUNNING, || {
        let ws = cg.working_set().unwrap();
        async move { Ok((ws >= 64 * MIB).then_some(())) }
    })
    .await
    .unwrap();

    // Cumulative CPU and memory, read right after the daemon's reading.
    let first = container_stats(&mut rt, &burn_id).await;
    let (cpu0, t0) = (cg.cpu_ns().unwrap(), Instant::now());
    let got = first
        .cpu
        .as_ref()
        .unwrap()
        .usage_core_nano_seconds
        .unwrap()
        .value;
    within(got, cpu0, 10, "usage_core_nano_seconds");
    let mem = first.memory.as_ref().unwrap();
    within(
        mem.working_set_bytes.unwrap().value,
        cg.working_set().unwrap(),
        10,
        "working_set_bytes",
    );
    assert!(mem.usage_bytes.unwrap().value >= mem.working_set_bytes.unwrap().value);
    assert!(mem.page_faults.unwrap().value > 0);
    assert_eq!(mem.available_bytes, None, "no memory limit");
    assert_eq!(first.attributes.as_ref().unwrap().id, burn_id);
    assert!(first.cpu.as_ref().unwrap().timestamp > 0);

    // The rate between two readings: what the cgroup counted over the same window.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = container_stats(&mut rt, &burn_id).await;
    let (cpu1, t1) = (cg.cpu_ns().unwrap(), Instant::now());
    let rate = (cpu1 - cpu0) as f64 / (t1 - t0).as_secs_f64();
    let nano = second.cpu.unwrap().usage_nano_cores.unwrap().value;
    within(nano, rate as u64, 10, "usage_nano_cores");
    assert!(
        nano > 100_000_000,
        "a busy loop uses more than 0.1 cores: {nano}"
    );

    // The pod: its cgroup holds both containers and podinit; its network is eth0's.
    let ps = rt
        .pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let linux = ps.linux.unwrap();
    within(
        linux.cpu.unwrap().usage_core_nano_seconds.unwrap().value,
        pod_cg.cpu_ns().unwrap(),
        10,
        "pod usage_core_nano_seconds",
    );
    within(
        linux.memory.unwrap().working_set_bytes.unwrap().value,
        pod_cg.working_set().unwrap(),
        10,
        "pod working_set_bytes",
    );
    // podinit, the busy shell, sleep.
    assert!(linux.process.unwrap().process_count.unwrap().value >= 3);
    let net = linux.network.unwrap();
    let eth0 = net.default_interface.unwrap();
    assert_eq!(eth0.name, "eth0");
    let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap();
    let line = dev
        .lines()
        .find(|l| l.trim_start().starts_with("eth0:"))
        .unwrap();
    let rx: u64 = line
        .split(':')
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rx > 0, "the bridge has sent something");
    assert!(eth0.rx_bytes.unwrap().value <= rx && eth0.rx_bytes.unwrap().value * 2 >= rx);
    let mut ids: Vec<_> = linux
        .containers
        .iter()
        .map(|c| c.attributes.as_ref().unwrap().id.clone())
        .collect();
    ids.sort();
    let mut want = vec![burn_id.clone(), idle_id.clone()];
    want.sort();
    assert_eq!(ids, want);

    // Filters.
    let list = |filter: ContainerStatsFilter| {
        let mut rt = rt.clone();
        async move {
            let mut ids: Vec<String> = rt
                .list_container_stats(ListContainerStatsRequest {
                    filter: Some(filter),
                })
                .await
                .unwrap()
                .into_inner()
                .stats
                .into_iter()
                .map(|s| s.attributes.unwrap().id)
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(list(ContainerStatsFilter::default()).await, want);
    assert_eq!(
        list(ContainerStatsFilter {
            id: burn_id[..12].to_string(),
            ..Default::default()
        })
        .await,
        vec![burn_id.clone()]
    );
    assert_eq!(
        list(ContainerStatsFilter {
            label_selector: HashMap::from([("name".into(), "idle".into())]),
            ..Default::default()
        })
        .await,
        vec![idle_id.clone()]
    );
    assert_eq!(
        list(ContainerStatsFilter {
            pod_sandbox_id: "0000".into(),
            ..Default::default()
        })
        .await,
        Vec::<String>::new()
    );
    let pods = rt
        .list_pod_sandbox_stats(ListPodSandboxStatsRequest {
            filter: Some(PodSandboxStatsFilter {
                label_selector: HashMap::from([("app".into(), "burner".into())]),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(pods.len(), 1);
    let none = rt
        .list_pod_sandbox_stats(ListPodSandboxStatsRequest {
            filter: Some(PodSandboxStatsFilter {
                label_selector: HashMap::from([("app".into(), "other".into())]),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert!(none.is_empty());

    // An unknown container is NotFound.
    let err = rt
        .container_stats(ContainerStatsRequest {
            container_id: "f00".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // The cAdvisor metrics carry the same working set.
    let descs = rt
        .list_metric_descriptors(ListMetricDescriptorsRequest {})
        .await
        .unwrap()
        .into_inner()
        .descriptors;
    assert!(
        descs
            .iter()
            .any(|d| d.name == "container_memory_working_set_bytes")
    );
    let metrics = rt
        .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pod_metrics;
    let pm = metrics.iter().find(|m| m.pod_sandbox_id == pod_id).unwrap();
    let cm = pm
        .container_metrics
        .iter()
        .find(|c| c.container_id == burn_id)
        .unwrap();
    let ws = cm
        .metrics
        .iter()
        .find(|m| m.name == "container_memory_working_set_bytes")
        .unwrap();
    within(
        ws.value.unwrap().value,
        cg.working_set().unwrap(),
        10,
        "metric working set",
    );
    assert_eq!(&ws.label_values[..2], ["burn", burn_id.as_str()]);
    assert!(
        pm.metrics
            .iter()
            .any(|m| m.name == "container_network_receive_bytes_total"
                && m.label_values.last().map(String::as_str) == Some("eth0"))
    );
}

/// Bytes a container writes to its root filesystem show up in its writable layer.
async fn writable_layer_usage(store: Store) {
    let env = PodEnv::start(store).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("writer");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let c = container_config("w", &env.images.one_layer, &["sleep", "3600"]);
    let id = env.run_container(&mut rt, &pod_id, &pod, c).await.unwrap();
    wait_container_state(&mut rt, &id, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();
    exec_ok(
        &mut rt,
        &id,
        "mkdir /data && head -c 12582912 /dev/urandom > /data/blob && for i in 1 2 3 4 5; do touch /data/f$i; done && sync",
    )
    .await
    .unwrap();
    // Measured at most every 10 s; ZFS counts a clone's `used` only once its transaction
    // group is written out, which zfs-fuse does lazily (over 12 s here).
    let layer = eventually(
        "the writable layer holds the 12 MiB",
        Duration::from_secs(90),
        || {
            let mut rt = rt.clone();
            let id = id.clone();
            async move {
                let s = container_stats(&mut rt, &id).await;
                let l = s.writable_layer.unwrap();
                Ok((l.used_bytes.unwrap().value >= 12 * MIB).then_some(l))
            }
        },
    )
    .await
    .unwrap();
    assert!(
        layer.used_bytes.unwrap().value < 20 * MIB,
        "only what the container wrote: {:?}",
        layer.used_bytes
    );
    assert!(
        layer.inodes_used.unwrap().value >= 7,
        "/data, blob, 5 files: {:?}",
        layer.inodes_used
    );
    // On the image filesystem ImageFsInfo reports.
    let fs = env
        .daemon
        .image_client()
        .await
        .unwrap()
        .image_fs_info(k8s_cri::v1::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let image_fs = &fs.image_filesystems[0];
    assert_eq!(
        layer.fs_id.unwrap().mountpoint,
        image_fs.fs_id.as_ref().unwrap().mountpoint
    );
    assert!(image_fs.used_bytes.unwrap().value >= 12 * MIB);
}
