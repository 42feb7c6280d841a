//! Images as real build tools write them, pulled through the daemon and run as containers
//! on both layer stores (`<test>::overlay`, `<test>::zfs`).
//!
//! Needs root, `scripts/build-podinit` (or `PVECRI_PODINIT`) and `cargo build -p cri`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test crate

use std::time::Duration;

use e2e::images::{self, UMOCI_OS_RELEASE, UMOCI_ROOT_MODE};
use e2e::pods::{PodEnv, Store, container_config, exec, exec_ok, wait_container_state};
use k8s_cri::v1::ContainerState;

const RUNNING: Duration = Duration::from_secs(20);

e2e::on_both_stores!(umoci_image_runs);

/// umoci/KIWI layers: a root entry `/`, absolute names, a top layer without end-of-archive
/// blocks or padding after its last entry (see `images::umoci_image`).
async fn umoci_image_runs(store: Store) {
    let env = PodEnv::start(store).await.unwrap();
    let image = images::umoci_image().unwrap();
    image.push(&env.registry, "umoci", "latest").await.unwrap();
    let reference = format!("{}/umoci:latest", env.registry.addr());
    env.pull(&reference).await.unwrap();

    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("umoci");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let cfg = container_config("umoci", &reference, &["sleep", "3600"]);
    let id = env
        .run_container(&mut rt, &pod_id, &pod, cfg)
        .await
        .unwrap();
    wait_container_state(&mut rt, &id, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();

    assert_eq!(
        exec_ok(&mut rt, &id, "cat /etc/os-release").await.unwrap(),
        UMOCI_OS_RELEASE
    );
    // The entry whose padding was missing is whole.
    assert_eq!(
        exec_ok(&mut rt, &id, "cat /etc/umoci-last").await.unwrap(),
        images::umoci_last_file()
    );
    // The absolute whiteout removed the base's file.
    let r = exec(&mut rt, &id, &["test", "-e", "/etc/motd"], 10)
        .await
        .unwrap();
    assert_eq!(r.exit_code, 1, "/etc/motd survived its whiteout");
    // The absolute hard link target is the base layer's busybox: one file, two names.
    let inodes = exec_ok(
        &mut rt,
        &id,
        "stat -c '%i %h' /bin/busybox /bin/busybox.link",
    )
    .await
    .unwrap();
    let lines: Vec<&str> = inodes.lines().collect();
    assert_eq!(lines.len(), 2, "{inodes}");
    assert_eq!(lines[0], lines[1], "not one file: {inodes}");
    assert!(lines[0].ends_with(" 2"), "link count: {inodes}");
    assert_eq!(
        exec_ok(
            &mut rt,
            &id,
            "readlink /usr/bin/os-release; cat /usr/bin/os-release"
        )
        .await
        .unwrap(),
        format!("/etc/os-release\n{UMOCI_OS_RELEASE}")
    );
    // The root entry `/` of the top layer set the root's mode.
    assert_eq!(
        exec_ok(&mut rt, &id, "stat -c %a /").await.unwrap(),
        format!("{UMOCI_ROOT_MODE:o}\n")
    );
}
