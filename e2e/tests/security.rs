//! Security contexts through the real daemon and LXC: users and groups, capabilities,
//! privileged containers, seccomp profiles, mount propagation and read-only mounts.
//! These do not depend on the layer store, so they run on overlay only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test crate

use e2e::pods::{PodEnv, Store, container_config};
use k8s_cri::v1::{Int64Value, LinuxContainerConfig, LinuxContainerSecurityContext};
use tonic::Code;

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
