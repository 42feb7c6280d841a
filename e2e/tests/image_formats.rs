//! Images as real build tools write them, pulled through the daemon and run as containers
//! on both layer stores (`<test>::overlay`, `<test>::zfs`).
//!
//! Needs root, `scripts/build-podinit` (or `PVECRI_PODINIT`) and `cargo build -p cri`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test crate

use std::time::Duration;

use e2e::images::{self, QUIRKS_AFTER, QUIRKS_PID, UMOCI_OS_RELEASE};
use e2e::pods::{PodEnv, Store, container_config, exec, exec_ok, wait_container_state};
use k8s_cri::v1::{ContainerState, ImageSpec, ImageStatusRequest};

const RUNNING: Duration = Duration::from_secs(20);

e2e::on_both_stores!(umoci_image_runs);
e2e::on_both_stores!(quirks_image_runs_as_containerd_unpacks_it);
e2e::on_both_stores!(a_contiguous_file_fails_the_pull_as_in_containerd);

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
    // The root entries `/` (0751 in the top layer) are ignored, as containerd ignores them.
    assert_eq!(
        exec_ok(&mut rt, &id, "stat -c %a /").await.unwrap(),
        "755\n"
    );
}

/// `images::quirks_image`: symlinked parents (out of the root, dangling), AUFS
/// bookkeeping, a symlink entry with a size field, type `\0` entries, a root entry.
async fn quirks_image_runs_as_containerd_unpacks_it(store: Store) {
    let env = PodEnv::start(store).await.unwrap();
    let image = images::quirks_image().unwrap();
    image.push(&env.registry, "quirks", "latest").await.unwrap();
    let reference = format!("{}/quirks:latest", env.registry.addr());
    env.pull(&reference).await.unwrap();

    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("quirks");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let cfg = container_config("quirks", &reference, &["sleep", "3600"]);
    let id = env
        .run_container(&mut rt, &pod_id, &pod, cfg)
        .await
        .unwrap();
    wait_container_state(&mut rt, &id, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();

    let mut run = async |cmd: &str| exec_ok(&mut rt, &id, cmd).await.unwrap();
    // Through `var/run -> /run`: the file is in /run, the symlink stays.
    assert_eq!(run("cat /run/app.pid").await, QUIRKS_PID);
    assert_eq!(
        run("readlink /var/run; cat /var/run/app.pid").await,
        format!("/run\n{QUIRKS_PID}")
    );
    // Through `var/lock -> ../../../run/lock`, which climbed out of the root and dangled.
    assert_eq!(run("cat /run/lock/app.lock").await, "locked\n");
    assert_eq!(
        run("cat /usr/lib/libquirk.so; readlink /lib").await,
        "quirk\nusr/lib\n"
    );
    // The whiteout through the symlink removed the file from /run.
    assert_eq!(run("test -e /run/gone; echo $?").await, "1\n");
    // AUFS bookkeeping: the hard link into .wh..wh.plnk resolved.
    let inodes = run("stat -c %i /usr/bin/shared /.wh..wh.plnk/1234.5678").await;
    let lines: Vec<&str> = inodes.lines().collect();
    assert_eq!(lines.len(), 2, "{inodes}");
    assert_eq!(lines[0], lines[1], "not one file: {inodes}");
    // The symlink's size field did not swallow the next entry.
    assert_eq!(run("readlink /etc/sized-link").await, "/etc/motd\n");
    assert_eq!(run("cat /etc/after-sized-link").await, QUIRKS_AFTER);
    // Type `\0`: a directory by its trailing slash, else a file.
    assert_eq!(run("test -d /olddir && cat /oldfile").await, "old-f\n");
    // The root entry (0700) was ignored.
    assert_eq!(run("stat -c %a /").await, "755\n");
}

/// A contiguous file (type `7`) fails the pull naming the entry, as containerd fails it;
/// nothing of the image stays.
async fn a_contiguous_file_fails_the_pull_as_in_containerd(store: Store) {
    let env = PodEnv::start(store).await.unwrap();
    let image = images::contiguous_image().unwrap();
    image
        .push(&env.registry, "contiguous", "latest")
        .await
        .unwrap();
    let reference = format!("{}/contiguous:latest", env.registry.addr());
    let err = env.pull(&reference).await.unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("etc/contiguous") && message.contains("contiguous file"),
        "{message}"
    );
    let status = env
        .daemon
        .image_client()
        .await
        .unwrap()
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: reference.clone(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(status.image.is_none(), "{reference} is there: {status:?}");
}
