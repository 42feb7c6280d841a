//! The shared zfs-fuse test pool and scratch datasets, against the real zfs-fuse.

use std::path::Path;
use std::process::Command;

use e2e::cmd::run;
use e2e::mounts::{current_mounts, mounts_under};
use e2e::zfs::{POOL_MOUNT_ROOT, POOL_NAME, TestPool, dataset_exists};

#[test]
fn shared_pool_is_imported_and_safe_to_open_concurrently() {
    let handles: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(TestPool::shared))
        .collect();
    for h in handles {
        let pool = h.join().unwrap().unwrap();
        assert_eq!(pool.name, POOL_NAME);
    }
    let health =
        run(Command::new("zpool").args(["list", "-H", "-o", "health", POOL_NAME])).unwrap();
    assert_eq!(health.trim(), "ONLINE");
}

#[test]
fn scratch_dataset_is_mounted_writable_and_destroyed_on_drop() {
    let pool = TestPool::shared().unwrap();
    let scratch = pool.scratch("harness test/1").unwrap();
    assert!(
        scratch.name.starts_with("pvecri-test/harness-test-1-"),
        "{}",
        scratch.name
    );
    assert!(
        scratch.mountpoint.starts_with(POOL_MOUNT_ROOT),
        "{}",
        scratch.mountpoint.display()
    );
    std::fs::write(scratch.mountpoint.join("hello"), b"world").unwrap();

    // What a layer store does inside it: child, snapshot, clone of the snapshot.
    let child = format!("{}/layer", scratch.name);
    run(Command::new("zfs").args(["create", &child])).unwrap();
    run(Command::new("zfs").args(["snapshot", &format!("{child}@done")])).unwrap();
    let clone = format!("{}/rootfs", scratch.name);
    run(Command::new("zfs").args(["clone", &format!("{child}@done"), &clone])).unwrap();
    // And what a test might leave mounted below it.
    let extra = scratch.mountpoint.join("rootfs/mnt");
    std::fs::create_dir_all(&extra).unwrap();
    run(Command::new("mount").args(["-t", "tmpfs", "leftover", extra.to_str().unwrap()])).unwrap();

    let name = scratch.name.clone();
    let mountpoint = scratch.mountpoint.clone();
    let other = pool.scratch("harness-other").unwrap();
    assert_ne!(other.name, name);
    drop(scratch);

    assert!(!dataset_exists(&name).unwrap(), "{name} still exists");
    assert!(!dataset_exists(&clone).unwrap(), "{clone} still exists");
    let left = mounts_under(&current_mounts().unwrap(), &mountpoint);
    assert!(left.is_empty(), "mounts left: {left:?}");
    assert!(
        dataset_exists(&other.name).unwrap(),
        "destroying one scratch dataset touched another"
    );
    other.destroy().unwrap();
}

#[test]
fn stale_scratch_of_a_dead_process_is_swept() {
    let pool = TestPool::shared().unwrap();
    let name = format!("{POOL_NAME}/stale-{:08x}", rand::random::<u32>());
    // pid 4194999 is above any pid_max Linux allows, so this owner is certainly dead.
    run(Command::new("zfs").args(["create", "-o", "pvecri-test:owner=4194999:1", &name])).unwrap();
    let live = pool.scratch("live").unwrap();
    pool.destroy_stale_scratch().unwrap();
    assert!(
        !dataset_exists(&name).unwrap(),
        "stale {name} survived the sweep"
    );
    assert!(
        dataset_exists(&live.name).unwrap(),
        "a live process's dataset was swept"
    );
    assert!(Path::new(&live.mountpoint).is_dir());
}
