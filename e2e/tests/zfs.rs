//! The shared zfs-fuse test pool and scratch datasets, against the real zfs-fuse.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

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

/// A process in a mount namespace of its own that keeps only the pool's root mount and the
/// mount of `dataset` (so that it holds no other test's dataset busy). Killed on drop.
struct NamespaceHolder(std::process::Child);

impl NamespaceHolder {
    fn hold(dataset_mount: &Path) -> anyhow::Result<NamespaceHolder> {
        let script = r#"
            awk '{ for (i = 7; i <= NF; i++) if ($i == "-") { print $(i + 1), $5; break } }' \
                /proc/self/mountinfo | sort -r -k2 | while read -r type point; do
                [ "$type" = fuse.zfs ] || continue
                [ "$point" = "$1" ] || [ "$point" = "$2" ] || umount -l "$point"
            done
            echo ready
            exec sleep 120
        "#;
        let child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(dataset_mount)
            .arg(POOL_MOUNT_ROOT)
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let mut holder = NamespaceHolder(child);
        let mut line = String::new();
        let stdout = holder.0.stdout.as_mut().context("no stdout pipe")?;
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        anyhow::ensure!(line.trim() == "ready", "the holder said {line:?}");
        Ok(holder)
    }
}

impl Drop for NamespaceHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Another test's leak (here: a stale dataset whose mount a live mount namespace holds,
/// which zfs-fuse calls busy) is reported and left for a later sweep, not an error; once
/// the namespace is gone the next sweep destroys it.
#[test]
fn a_busy_stale_scratch_is_reported_and_swept_later() {
    let pool = TestPool::shared().unwrap();
    let name = format!("{POOL_NAME}/stale-busy-{:08x}", rand::random::<u32>());
    run(Command::new("zfs").args(["create", "-o", "pvecri-test:owner=4194999:1", &name])).unwrap();
    let mountpoint =
        Path::new(POOL_MOUNT_ROOT).join(name.trim_start_matches(&format!("{POOL_NAME}/")));
    assert!(mountpoint.is_dir());
    let holder = NamespaceHolder::hold(&mountpoint).unwrap();
    let holders = e2e::zfs::namespaces_holding(&name);
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert!(
        holders[0].starts_with(&format!("pid {} ", holder.0.id())) || holders[0].contains("sleep"),
        "{holders:?}"
    );

    let left = pool.destroy_stale_scratch().unwrap();
    assert!(
        left.contains(&name),
        "{name} not reported as left: {left:?}"
    );
    assert!(dataset_exists(&name).unwrap(), "the busy {name} vanished");

    drop(holder);
    let left = pool.destroy_stale_scratch().unwrap();
    assert!(!left.contains(&name), "{name} still left: {left:?}");
    assert!(
        !dataset_exists(&name).unwrap(),
        "{name} survived the second sweep"
    );
}
