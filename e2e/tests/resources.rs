//! Container resources through the real daemon: UpdateContainerResources changes the cgroup of
//! a running container (and grows the pod CT's own limits so that they do not hold it back),
//! ContainerStatus reports the resources, bad requests are refused with the right code, and a
//! container that exceeds its memory limit ends `OOMKilled` with exit code 137.
//!
//! Needs root, `scripts/build-podinit` (or `PVECRI_PODINIT`) and `cargo build -p cri`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test crate

use std::time::Duration;

use e2e::cgroups::{Cg, init_pid};
use e2e::pods::{
    PodEnv, Store, container_config, container_status, exec_ok, sh, wait_container_state,
};
use k8s_cri::v1::{
    ContainerState, HugepageLimit, LinuxContainerConfig, LinuxContainerResources,
    UpdateContainerResourcesRequest,
};

const RUNNING: Duration = Duration::from_secs(20);
const MIB: i64 = 1 << 20;

fn limits(memory: i64, quota: i64, shares: i64) -> LinuxContainerResources {
    LinuxContainerResources {
        memory_limit_in_bytes: memory,
        cpu_quota: quota,
        cpu_period: 100_000,
        cpu_shares: shares,
        ..Default::default()
    }
}

async fn update(
    rt: &mut e2e::cri_client::RuntimeClient,
    id: &str,
    r: LinuxContainerResources,
) -> Result<(), tonic::Status> {
    rt.update_container_resources(UpdateContainerResourcesRequest {
        container_id: id.to_string(),
        linux: Some(r),
        ..Default::default()
    })
    .await
    .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_changes_the_running_containers_cgroup() {
    let env = PodEnv::start(Store::Overlay).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let mut pod = env.pod_config("resize");
    // The sandbox's resources: the CT gets these limits of its own.
    pod.linux.as_mut().unwrap().resources = Some(limits(128 * MIB, 100_000, 1024));
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let mut c = container_config("app", &env.images.one_layer, &["sleep", "3600"]);
    c.linux = Some(LinuxContainerConfig {
        resources: Some(limits(64 * MIB, 50_000, 512)),
        ..Default::default()
    });
    let id = env.run_container(&mut rt, &pod_id, &pod, c).await.unwrap();
    wait_container_state(&mut rt, &id, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();
    let ct = Cg::of_pod(init_pid(&mut rt, &pod_id).await.unwrap()).unwrap();
    let cg = ct.container(&id);
    assert_eq!(cg.memory_limit().unwrap(), Some(64 << 20));
    assert_eq!(cg.cpu_quota().unwrap(), (Some(50_000), 100_000));
    assert_eq!(ct.memory_limit().unwrap(), Some(128 << 20));
    let reported = container_status(&mut rt, &id).await.unwrap();
    let r = reported.resources.unwrap().linux.unwrap();
    assert_eq!((r.memory_limit_in_bytes, r.cpu_quota), (64 * MIB, 50_000));

    // Grow past the CT's own limits: the CT grows by as much, and the container can use it.
    let mut grown = limits(256 * MIB, 150_000, 1024);
    grown.cpuset_cpus = "0".into();
    update(&mut rt, &id, grown).await.unwrap();
    assert_eq!(cg.memory_limit().unwrap(), Some(256 << 20));
    assert_eq!(cg.cpu_quota().unwrap(), (Some(150_000), 100_000));
    if cg.v2() {
        assert_eq!(cg.read("", "cpu.weight").unwrap().trim(), "39");
        assert_eq!(cg.read("", "cpuset.cpus").unwrap().trim(), "0");
    } else {
        assert_eq!(cg.read("cpu", "cpu.shares").unwrap().trim(), "1024");
        assert_eq!(cg.read("cpuset", "cpuset.cpus").unwrap().trim(), "0");
    }
    assert_eq!(
        ct.memory_limit().unwrap(),
        Some((128 + 192) << 20),
        "grown by 192 MiB"
    );
    assert_eq!(
        ct.cpu_quota().unwrap(),
        (Some(200_000), 100_000),
        "grown by one core"
    );
    exec_ok(
        &mut rt,
        &id,
        // A 200 MiB buffer, filled: over the old limits of both container and CT.
        "dd if=/dev/zero of=/dev/null bs=200M count=1 2>/dev/null",
    )
    .await
    .unwrap();
    let st = container_status(&mut rt, &id).await.unwrap();
    assert_eq!(st.state, ContainerState::ContainerRunning as i32);
    let r = st.resources.unwrap().linux.unwrap();
    assert_eq!(
        (
            r.memory_limit_in_bytes,
            r.cpu_quota,
            r.cpu_shares,
            r.cpuset_cpus.as_str()
        ),
        (256 * MIB, 150_000, 1024, "0")
    );

    // Shrinking leaves the CT as it is; zero fields keep their value.
    update(
        &mut rt,
        &id,
        LinuxContainerResources {
            memory_limit_in_bytes: 96 * MIB,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(cg.memory_limit().unwrap(), Some(96 << 20));
    assert_eq!(cg.cpu_quota().unwrap(), (Some(150_000), 100_000));
    assert_eq!(ct.memory_limit().unwrap(), Some(320 << 20));

    // Bad requests change nothing.
    let bad = [
        (
            LinuxContainerResources {
                cpu_shares: 1,
                ..Default::default()
            },
            tonic::Code::InvalidArgument,
        ),
        (
            LinuxContainerResources {
                cpuset_cpus: "0-".into(),
                ..Default::default()
            },
            tonic::Code::InvalidArgument,
        ),
        (
            // A CPU the node does not have: the kernel refuses it.
            LinuxContainerResources {
                cpuset_cpus: "4095".into(),
                ..Default::default()
            },
            tonic::Code::InvalidArgument,
        ),
        (
            LinuxContainerResources {
                hugepage_limits: vec![HugepageLimit {
                    page_size: "2MB".into(),
                    limit: 1 << 21,
                }],
                ..Default::default()
            },
            tonic::Code::FailedPrecondition,
        ),
    ];
    for (r, code) in bad {
        let e = update(&mut rt, &id, r.clone()).await.unwrap_err();
        assert_eq!(e.code(), code, "{r:?}: {}", e.message());
    }
    let r = container_status(&mut rt, &id)
        .await
        .unwrap()
        .resources
        .unwrap()
        .linux
        .unwrap();
    assert_eq!((r.memory_limit_in_bytes, r.cpu_shares), (96 * MIB, 1024));
    let e = update(&mut rt, "f00", limits(MIB, 0, 0)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

/// The kernel's OOM killer ends a container over its memory limit: `OOMKilled`, exit 137.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_over_its_memory_limit_is_oom_killed() {
    let env = PodEnv::start(Store::Overlay).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("oom");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let mut c = container_config("hog", &env.images.one_layer, &[]);
    // dd's buffer alone is twice the limit.
    c.command = sh("exec dd if=/dev/zero of=/dev/null bs=64M count=10");
    c.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: 32 * MIB,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = env.run_container(&mut rt, &pod_id, &pod, c).await.unwrap();
    let st = wait_container_state(&mut rt, &id, ContainerState::ContainerExited, RUNNING)
        .await
        .unwrap();
    assert_eq!(st.reason, "OOMKilled", "{st:?}");
    assert_eq!(st.exit_code, 137, "{st:?}");
    // A container that exits with 137 without an OOM kill (its child was SIGKILLed; the main
    // process is PID 1 of the container and immune to its own signals) is an `Error`.
    let mut c = container_config("selfkill", &env.images.one_layer, &[]);
    c.command = sh("sh -c 'kill -9 $$'; exit $?");
    let id = env.run_container(&mut rt, &pod_id, &pod, c).await.unwrap();
    let st = wait_container_state(&mut rt, &id, ContainerState::ContainerExited, RUNNING)
        .await
        .unwrap();
    assert_eq!((st.exit_code, st.reason.as_str()), (137, "Error"));
}
