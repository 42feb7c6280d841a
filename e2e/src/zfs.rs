//! A machine-wide, file-backed zfs-fuse pool for tests, and throwaway datasets in it.
//!
//! Tests run as separate processes (cargo-nextest), so every step that changes the pool or
//! the zfs-fuse daemon happens under an `flock` in `/var/tmp`. Each scratch dataset records
//! its owning process; datasets whose owner died (a killed test run) are destroyed the next
//! time a process opens the pool.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cmd::{output, require_program, run};
use crate::lock::FileLock;
use crate::mounts::unmount_under;

pub const POOL_NAME: &str = "pvecri-test";
pub const POOL_IMAGE: &str = "/var/tmp/pvecri-test-pool.img";
/// Directory that `zpool import -d` scans for the pool's file vdev.
pub const POOL_IMAGE_DIR: &str = "/var/tmp";
pub const POOL_MOUNT_ROOT: &str = "/var/tmp/pvecri-test-mnt";
/// Sparse size of the pool's backing file.
pub const POOL_SIZE: u64 = 8 << 30;
/// Where `scripts/start-services` and the harness have zfs-fuse write its pid.
pub const ZFS_FUSE_PIDFILE: &str = "/run/zfs-fuse/zfs-fuse.pid";
const ZFS_FUSE: &str = "/usr/sbin/zfs-fuse";
const ZFS_FUSE_LOCK: &str = "/var/tmp/pvecri-zfs-fuse.lock";
const POOL_LOCK: &str = "/var/tmp/pvecri-test-pool.lock";
const ZFS_FUSE_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a scratch dataset that zfs-fuse calls busy is retried when its owner drops it:
/// zfs-fuse calls a dataset busy for a moment after it unmounted it or a child (seconds on
/// a loaded machine), and for as long as another mount namespace holds a copy of its mount.
const DROP_BUSY_TIMEOUT: Duration = Duration::from_secs(15);
/// The same for the sweep of stale datasets, which the next process repeats.
const SWEEP_BUSY_TIMEOUT: Duration = Duration::from_secs(3);
/// User property naming the process (`pid:starttime`) that owns a scratch dataset.
const OWNER_PROPERTY: &str = "pvecri-test:owner";

static STALE_SWEPT: AtomicBool = AtomicBool::new(false);

/// Starts `zfs-fuse` (daemonized, pid file under /run) unless `zpool list` already answers,
/// then waits until it does.
pub fn ensure_zfs_fuse() -> anyhow::Result<()> {
    require_program(ZFS_FUSE, "zfs-fuse")?;
    if zpool_answers() {
        return Ok(());
    }
    let _lock = FileLock::exclusive(Path::new(ZFS_FUSE_LOCK))?;
    if zpool_answers() {
        return Ok(());
    }
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing: zfs-fuse needs the fuse kernel module (modprobe fuse)");
    }
    if !zfs_fuse_process_exists() {
        std::fs::create_dir_all(
            Path::new(ZFS_FUSE_PIDFILE)
                .parent()
                .unwrap_or(Path::new("/run")),
        )?;
        // A file, not a pipe: the daemonized child may keep the descriptor open for good.
        let log_path = Path::new(ZFS_FUSE_PIDFILE).with_file_name("zfs-fuse.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut cmd = Command::new(ZFS_FUSE);
        cmd.args(["--pidfile", ZFS_FUSE_PIDFILE])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group, so that a test runner killing the test's group spares it.
            .process_group(0);
        // zfs-fuse forks into the background; the foreground process exits at once.
        let status = cmd.status().context("cannot run zfs-fuse")?;
        if !status.success() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!("zfs-fuse failed to start ({status}): {}", log.trim());
        }
    }
    let deadline = Instant::now() + ZFS_FUSE_START_TIMEOUT;
    while Instant::now() < deadline {
        if zpool_answers() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("zfs-fuse was started but `zpool list` did not answer within {ZFS_FUSE_START_TIMEOUT:?}")
}

fn zpool_answers() -> bool {
    Command::new("zpool")
        .args(["list", "-H", "-o", "name"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether a zfs-fuse daemon runs (maybe still starting), however it was started.
fn zfs_fuse_process_exists() -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.filter_map(Result::ok).any(|e| {
        e.file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
            && std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "zfs-fuse")
    })
}

/// The shared test pool.
#[derive(Debug, Clone)]
pub struct TestPool {
    pub name: String,
}

impl TestPool {
    /// The machine-wide pool `pvecri-test` on the sparse file [`POOL_IMAGE`]: created if the
    /// file is missing, imported if it exists but the pool is not imported.
    pub fn shared() -> anyhow::Result<TestPool> {
        ensure_zfs_fuse()?;
        {
            let _lock = FileLock::exclusive(Path::new(POOL_LOCK))?;
            if !pool_imported()? {
                if Path::new(POOL_IMAGE).exists() {
                    import_or_recreate()?;
                } else {
                    create_pool()?;
                }
            }
        }
        let pool = TestPool {
            name: POOL_NAME.to_owned(),
        };
        if !STALE_SWEPT.swap(true, Ordering::SeqCst) {
            pool.destroy_stale_scratch()?;
        }
        Ok(pool)
    }

    /// A fresh dataset `pvecri-test/<label>-<random>`, mounted under [`POOL_MOUNT_ROOT`],
    /// destroyed (with everything below it) on drop.
    pub fn scratch(&self, label: &str) -> anyhow::Result<ScratchDataset> {
        let name = format!(
            "{}/{}-{:08x}",
            self.name,
            sanitize_label(label),
            rand::random::<u32>()
        );
        let owner = current_owner()?;
        run(Command::new("zfs").args([
            "create",
            "-o",
            &format!("{OWNER_PROPERTY}={owner}"),
            &name,
        ]))?;
        let mut dataset = ScratchDataset {
            name,
            mountpoint: PathBuf::new(),
            destroyed: false,
        };
        let props = get_properties(&dataset.name, "mountpoint,mounted")?;
        let mountpoint = props
            .iter()
            .find(|(_, p, _)| p == "mountpoint")
            .map(|(_, _, v)| v.clone());
        let mounted = props.iter().any(|(_, p, v)| p == "mounted" && v == "yes");
        match mountpoint {
            Some(mp) if mounted && mp.starts_with('/') => dataset.mountpoint = PathBuf::from(mp),
            other => bail!(
                "scratch dataset {} is not mounted (mountpoint {other:?})",
                dataset.name
            ),
        }
        Ok(dataset)
    }

    /// Destroys direct children of the pool whose owning process no longer exists.
    /// [`TestPool::shared`] does this once per process. A stale dataset that cannot be
    /// destroyed now (busy: something still holds its mount) is reported on stderr and left
    /// for the next sweep: another test's leak must not fail the caller. Returns the names
    /// of the datasets left.
    pub fn destroy_stale_scratch(&self) -> anyhow::Result<Vec<String>> {
        // Two sweepers must not race to destroy the same dataset.
        let _lock = FileLock::exclusive(Path::new(POOL_LOCK))?;
        let lines = run(Command::new("zfs").args([
            "get",
            "-H",
            "-p",
            "-r",
            "-d",
            "1",
            "-o",
            "name,value,source",
            OWNER_PROPERTY,
            &self.name,
        ]))?;
        let mut left = Vec::new();
        for line in lines.lines() {
            let mut fields = line.split('\t');
            let (Some(name), Some(owner), Some(source)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            if name == self.name || source != "local" || owner_alive(owner) {
                continue;
            }
            let mountpoint = get_properties(name, "mountpoint")?
                .into_iter()
                .next()
                .map(|(_, _, v)| PathBuf::from(v))
                .unwrap_or_default();
            if let Err(e) = destroy_dataset(name, &mountpoint, SWEEP_BUSY_TIMEOUT) {
                eprintln!(
                    "e2e: stale scratch dataset {name} (owner {owner}, gone) cannot be destroyed \
                     now; left for the next sweep: {e:#}"
                );
                left.push(name.to_owned());
            }
        }
        Ok(left)
    }
}

/// A throwaway child dataset of the test pool.
#[derive(Debug)]
pub struct ScratchDataset {
    pub name: String,
    pub mountpoint: PathBuf,
    destroyed: bool,
}

impl ScratchDataset {
    /// Destroys the dataset now, reporting failure (drop only logs it).
    pub fn destroy(mut self) -> anyhow::Result<()> {
        self.destroyed = true;
        destroy_dataset(&self.name, &self.mountpoint, DROP_BUSY_TIMEOUT)
    }
}

impl Drop for ScratchDataset {
    fn drop(&mut self) {
        if !self.destroyed
            && let Err(e) = destroy_dataset(&self.name, &self.mountpoint, DROP_BUSY_TIMEOUT)
        {
            eprintln!("e2e: cannot destroy scratch dataset {}: {e:#}", self.name);
        }
    }
}

/// Whether a dataset exists.
pub fn dataset_exists(name: &str) -> anyhow::Result<bool> {
    let out = output(Command::new("zfs").args(["list", "-H", "-o", "name", name]))?;
    Ok(out.status.success())
}

/// Unmounts non-ZFS mounts a test left below the dataset (lazily, deepest first), then
/// destroys the dataset with its children, snapshots and their clones, retrying for up to
/// `busy_timeout` while zfs-fuse calls it busy.
fn destroy_dataset(name: &str, mountpoint: &Path, busy_timeout: Duration) -> anyhow::Result<()> {
    if mountpoint.is_absolute() {
        unmount_under(mountpoint, |m| m.fs_type == "fuse.zfs")?;
    }
    let deadline = Instant::now() + busy_timeout;
    let mut delay = Duration::from_millis(100);
    loop {
        // -R rather than -r: clones of snapshots inside the tree must go too, in any order.
        let out = output(Command::new("zfs").args(["destroy", "-R", "-f", name]))?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() || !dataset_exists(name)? {
            if mountpoint.is_absolute() {
                // zfs-fuse leaves the empty mountpoint directory behind.
                let _ = std::fs::remove_dir(mountpoint);
            }
            return Ok(());
        }
        if !stderr.contains("busy") || Instant::now() + delay > deadline {
            let holders = namespaces_holding(name);
            let holders = if holders.is_empty() {
                String::new()
            } else {
                format!(
                    "; other mount namespaces hold its mounts: {}",
                    holders.join(", ")
                )
            };
            bail!(
                "`zfs destroy -R -f {name}` failed: {}{holders}",
                stderr.trim()
            )
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Processes (one per mount namespace other than ours) whose namespace holds a zfs-fuse
/// mount of `dataset` or of a dataset below it: such a copy keeps the dataset busy for
/// zfs-fuse until the namespace goes away, whatever propagation it has.
pub fn namespaces_holding(dataset: &str) -> Vec<String> {
    let own = std::fs::read_link("/proc/self/ns/mnt").ok();
    let below = format!("{dataset}/");
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.filter_map(Result::ok) {
        let proc_dir = entry.path();
        let Ok(ns) = std::fs::read_link(proc_dir.join("ns/mnt")) else {
            continue;
        };
        if Some(&ns) == own.as_ref() || seen.contains(&ns) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(proc_dir.join("mountinfo")) else {
            continue;
        };
        seen.insert(ns);
        let holds = crate::mounts::parse_mountinfo(&text).iter().any(|m| {
            m.fs_type == "fuse.zfs" && (m.source == dataset || m.source.starts_with(&below))
        });
        if holds {
            let cmdline = std::fs::read(proc_dir.join("cmdline"))
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .replace('\0', " ")
                        .trim()
                        .to_owned()
                })
                .unwrap_or_default();
            out.push(format!(
                "pid {} ({cmdline})",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    out
}

fn get_properties(name: &str, properties: &str) -> anyhow::Result<Vec<(String, String, String)>> {
    let text = run(Command::new("zfs").args([
        "get",
        "-H",
        "-p",
        "-o",
        "name,property,value",
        properties,
        name,
    ]))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut f = line.splitn(3, '\t');
            Some((
                f.next()?.to_owned(),
                f.next()?.to_owned(),
                f.next()?.to_owned(),
            ))
        })
        .collect())
}

fn pool_imported() -> anyhow::Result<bool> {
    let names = run(Command::new("zpool").args(["list", "-H", "-o", "name"]))?;
    Ok(names.lines().any(|n| n.trim() == POOL_NAME))
}

fn import_or_recreate() -> anyhow::Result<()> {
    // -f: the pool is ours; after zfs-fuse died without exporting it, import needs force.
    let out =
        output(Command::new("zpool").args(["import", "-f", "-d", POOL_IMAGE_DIR, POOL_NAME]))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("no such pool") {
        // The file holds no pool (a run killed between creating the file and the pool):
        // nothing can be lost by starting over.
        std::fs::remove_file(POOL_IMAGE).with_context(|| format!("cannot remove {POOL_IMAGE}"))?;
        return create_pool();
    }
    bail!(
        "cannot import pool {POOL_NAME} from {POOL_IMAGE}: {}; delete {POOL_IMAGE} to start over",
        stderr.trim()
    )
}

fn create_pool() -> anyhow::Result<()> {
    let file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(POOL_IMAGE)
        .with_context(|| format!("cannot create {POOL_IMAGE}"))?;
    file.set_len(POOL_SIZE)
        .with_context(|| format!("cannot size {POOL_IMAGE}"))?;
    drop(file);
    let created = run(Command::new("zpool").args([
        "create",
        "-m",
        POOL_MOUNT_ROOT,
        "-O",
        "atime=off",
        POOL_NAME,
        POOL_IMAGE,
    ]));
    if let Err(e) = created {
        let _ = std::fs::remove_file(POOL_IMAGE);
        return Err(e);
    }
    Ok(())
}

/// ZFS dataset names allow alphanumerics and `_-.:`; anything else becomes `-`.
fn sanitize_label(label: &str) -> String {
    let clean: String = label
        .chars()
        .take(48)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean.is_empty() || clean.starts_with('.') {
        format!("s{clean}")
    } else {
        clean
    }
}

/// `pid:starttime`, so that a reused pid is not mistaken for the owner.
fn current_owner() -> anyhow::Result<String> {
    let pid = std::process::id();
    let start = process_start_time(pid)
        .with_context(|| format!("cannot read the start time of pid {pid}"))?;
    Ok(format!("{pid}:{start}"))
}

fn owner_alive(owner: &str) -> bool {
    let Some((pid, start)) = owner.split_once(':') else {
        return true; // not ours to judge
    };
    match pid.parse::<u32>() {
        Ok(pid) => process_start_time(pid).is_some_and(|s| s == start),
        Err(_) => true,
    }
}

/// Field 22 of /proc/PID/stat (start time in clock ticks since boot).
fn process_start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; fields after it do not.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_become_valid_dataset_names() {
        assert_eq!(sanitize_label("layer store/zfs"), "layer-store-zfs");
        assert_eq!(sanitize_label(""), "s");
        assert_eq!(sanitize_label(".x"), "s.x");
        assert_eq!(sanitize_label(&"a".repeat(100)).len(), 48);
    }

    #[test]
    fn own_process_is_alive_and_a_changed_start_time_is_not() {
        let owner = current_owner().unwrap();
        assert!(owner_alive(&owner));
        let pid = std::process::id();
        assert!(!owner_alive(&format!("{pid}:1")));
        assert!(!owner_alive("4194999:1"));
        assert!(owner_alive("garbage"));
    }
}
