//! Security contexts through the real daemon and LXC: users and groups, capabilities,
//! privileged containers, seccomp profiles, mount propagation and read-only mounts.
//! These do not depend on the layer store, so they run on overlay only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test crate

use std::time::Duration;

use e2e::pods::{PodEnv, Store, container_config, exec_ok, wait_container_state};
use k8s_cri::v1::{
    ContainerState, Int64Value, LinuxContainerConfig, LinuxContainerSecurityContext,
};
use tonic::Code;

const RUNNING: Duration = Duration::from_secs(20);

fn status_code<T: std::fmt::Debug>(r: anyhow::Result<T>) -> (Code, String) {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => {
            let s = e
                .downcast_ref::<tonic::Status>()
                .unwrap_or_else(|| panic!("not a gRPC status: {e:#}"));
            (s.code(), s.message().to_string())
        }
    }
}

fn with_security(
    mut cfg: k8s_cri::v1::ContainerConfig,
    sc: LinuxContainerSecurityContext,
) -> k8s_cri::v1::ContainerConfig {
    cfg.linux = Some(LinuxContainerConfig {
        security_context: Some(sc),
        ..Default::default()
    });
    cfg
}

/// A group without a user is refused at create, as containerd and CRI-O do; with a user or a
/// user name it is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_as_group_needs_a_user() {
    let env = PodEnv::start(Store::Overlay).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("groups");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();

    let cfg = with_security(
        container_config("group-only", &env.images.one_layer, &["id"]),
        LinuxContainerSecurityContext {
            run_as_group: Some(Int64Value { value: 1002 }),
            ..Default::default()
        },
    );
    let (code, message) = status_code(env.create_container(&mut rt, &pod_id, &pod, cfg).await);
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(message.contains("run_as_group 1002"), "{message}");
    // Nothing was left of the refused container.
    let ctrs = env.pod_dir(&pod_id).join("ctrs");
    let left = std::fs::read_dir(&ctrs).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0);

    for (name, sc) in [
        (
            "group-and-uid",
            LinuxContainerSecurityContext {
                run_as_user: Some(Int64Value { value: 1001 }),
                run_as_group: Some(Int64Value { value: 1002 }),
                ..Default::default()
            },
        ),
        (
            "group-and-name",
            LinuxContainerSecurityContext {
                run_as_username: "app".into(),
                run_as_group: Some(Int64Value { value: 1002 }),
                ..Default::default()
            },
        ),
    ] {
        let cfg = with_security(container_config(name, &env.images.one_layer, &["id"]), sc);
        env.create_container(&mut rt, &pod_id, &pod, cfg)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    }
}

/// The pod CT's init (podinit) pid, from PodSandboxStatus's verbose info.
async fn pod_init_pid(rt: &mut e2e::cri_client::RuntimeClient, pod_id: &str) -> u32 {
    let resp = rt
        .pod_sandbox_status(k8s_cri::v1::PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.to_string(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&resp.info["info"]).unwrap();
    info["init_pid"].as_u64().unwrap() as u32
}

/// A `Cap*:` line of a /proc/<pid>/status text, as a mask.
fn cap_field(status: &str, field: &str) -> u64 {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

/// A privileged container, and one that adds `ALL`, get every capability the pod's CT
/// holds (whatever the machine's bounding set lacks: this host's has no CAP_SYS_RESOURCE),
/// and can use them: mount (no seccomp filter either) and create a network device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_and_all_capabilities_get_what_the_ct_holds() {
    let env = PodEnv::start(Store::Overlay).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("privileged");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let init = pod_init_pid(&mut rt, &pod_id).await;
    let init_status = std::fs::read_to_string(format!("/proc/{init}/status")).unwrap();
    let ct_caps = cap_field(&init_status, "CapBnd") & cap_field(&init_status, "CapPrm");
    assert_ne!(ct_caps, 0);

    let sleep = ["sleep", "3600"];
    let privileged = with_security(
        container_config("privileged", &env.images.one_layer, &sleep),
        LinuxContainerSecurityContext {
            privileged: true,
            // A privileged container ignores its seccomp profile.
            seccomp: Some(k8s_cri::v1::SecurityProfile {
                profile_type: k8s_cri::v1::security_profile::ProfileType::RuntimeDefault as i32,
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let all = with_security(
        container_config("all-caps", &env.images.one_layer, &sleep),
        LinuxContainerSecurityContext {
            capabilities: Some(k8s_cri::v1::Capability {
                add_capabilities: vec!["ALL".into()],
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    for cfg in [privileged, all] {
        let name = cfg.metadata.as_ref().unwrap().name.clone();
        let id = env
            .run_container(&mut rt, &pod_id, &pod, cfg)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        wait_container_state(&mut rt, &id, ContainerState::ContainerRunning, RUNNING)
            .await
            .unwrap();
        let status = exec_ok(&mut rt, &id, "cat /proc/self/status")
            .await
            .unwrap();
        for field in ["CapBnd", "CapEff", "CapPrm"] {
            assert_eq!(
                cap_field(&status, field),
                ct_caps,
                "{name}: {field} is the CT's set"
            );
        }
        // CAP_SYS_ADMIN and CAP_NET_ADMIN work.
        exec_ok(
            &mut rt,
            &id,
            "mkdir -p /mnt/t && mount -t tmpfs none /mnt/t && umount /mnt/t",
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        exec_ok(&mut rt, &id, "brctl addbr pvtest0 && brctl delbr pvtest0")
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    }

    // A capability the CT does not hold, asked for by name, is refused at create, naming it.
    let lacking = (0..=40u32).find(|n| ct_caps & (1u64 << n) == 0);
    if let Some(n) = lacking {
        let cap = podinit::caps::ALL[n as usize];
        let name = cap.to_string();
        let cfg = with_security(
            container_config("lacking", &env.images.one_layer, &sleep),
            LinuxContainerSecurityContext {
                capabilities: Some(k8s_cri::v1::Capability {
                    add_capabilities: vec![name.trim_start_matches("CAP_").to_string()],
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        let (code, message) = status_code(env.create_container(&mut rt, &pod_id, &pod, cfg).await);
        assert_eq!(code, Code::InvalidArgument, "{message}");
        assert!(
            message.contains(name.trim_start_matches("CAP_")),
            "{message}"
        );
    }
}
