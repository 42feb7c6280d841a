//! The `lxc` pod host against real LXC (needs root).
//!
//! A shell script stands in for podinit: busybox (static) is linked into each pod directory,
//! which the CT sees at `/pvecri`, and the script at `/sbin/podinit` runs it as its
//! interpreter. Set `PVECRI_PODINIT` to a real podinit binary to run the lifecycle tests with
//! it instead.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test crate
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pve::lxc::{LxcDriver, LxcOptions};
use pve::{CgroupDriver, CtStatus, NetworkMode, PodHost, PodHostError, PodResources, PodSpec};

const BUSYBOX: &str = "/usr/bin/busybox";

/// Init that exits 0 on SIGTERM, as podinit does.
const INIT_GRACEFUL: &str = "#!/pvecri/busybox sh
trap 'exit 0' TERM
/pvecri/busybox touch /pvecri/ready
while :; do /pvecri/busybox sleep 1 & wait $!; done
";
/// The brief's trivial init: ignores SIGTERM (PID 1 without a handler), so stop must kill.
const INIT_STUBBORN: &str = "#!/pvecri/busybox sh
exec /pvecri/busybox sleep 1000
";
/// Exits by itself shortly after start.
const INIT_EXITS: &str = "#!/pvecri/busybox sh
/pvecri/busybox sleep 0.3
exit 0
";

/// Dies at once, saying why on stderr (podinit's console).
const INIT_DIES: &str = "#!/pvecri/busybox sh
echo 'podinit: cannot listen on /pvecri/podinit.sock' >&2
exit 3
";

struct Fixture {
    _root: tempfile::TempDir,
    state: PathBuf,
    scripts: PathBuf,
    driver: LxcDriver,
    /// Unique cgroupfs parent for this fixture, removed on drop.
    cgroup_top: String,
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the pod host e2e tests need root (LXC, mounts, cgroups)"
    );
    assert!(
        Path::new(BUSYBOX).is_file(),
        "{BUSYBOX} is missing: install busybox-static"
    );
}

fn random_hex(len: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap())
        .collect()
}

impl Fixture {
    fn new() -> Self {
        require_root();
        let root = tempfile::Builder::new()
            .prefix("pvecri-podhost-")
            .tempdir()
            .unwrap();
        // The scripts stand where podinit would be installed: readable by everyone.
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let state = root.path().join("state");
        let scripts = root.path().join("scripts");
        std::fs::create_dir_all(state.join("pods")).unwrap();
        std::fs::create_dir_all(&scripts).unwrap();
        // The daemon makes its state directory private.
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
        for (name, body) in [
            ("graceful", INIT_GRACEFUL),
            ("stubborn", INIT_STUBBORN),
            ("exits", INIT_EXITS),
            ("dies", INIT_DIES),
        ] {
            let path = scripts.join(name);
            std::fs::write(&path, body).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let driver = LxcDriver::new(LxcOptions::new(pve::config::lxc_path(&state))).unwrap();
        Self {
            _root: root,
            state,
            scripts,
            driver,
            cgroup_top: format!("pvecri-e2e-{}", random_hex(8)),
        }
    }

    /// A second driver on the same lxcpath: what a restarted daemon builds.
    fn another_driver(&self) -> LxcDriver {
        LxcDriver::new(LxcOptions::new(pve::config::lxc_path(&self.state))).unwrap()
    }

    fn podinit(&self, which: &str) -> PathBuf {
        if which == "graceful"
            && let Some(real) = std::env::var_os("PVECRI_PODINIT")
        {
            return PathBuf::from(real);
        }
        self.scripts.join(which)
    }

    /// A spec with a fresh id, its pod directory made (as the daemon does) with busybox in it.
    fn spec(&self, init: &str) -> PodSpec {
        let id = random_hex(64);
        let pod_dir = self.state.join("pods").join(&id);
        std::fs::create_dir_all(&pod_dir).unwrap();
        let busybox = pod_dir.join("busybox");
        if std::fs::hard_link(BUSYBOX, &busybox).is_err() {
            std::fs::copy(BUSYBOX, &busybox).unwrap();
        }
        PodSpec {
            id,
            name: "e2e/pod".to_string(),
            namespace: "e2e".to_string(),
            hostname: "e2e-pod".to_string(),
            pod_dir,
            podinit: self.podinit(init),
            network: NetworkMode::Isolated,
            host_pid: false,
            host_ipc: false,
            cgroup_parent: Some(format!(
                "/{}/burstable/pod{}",
                self.cgroup_top,
                random_hex(8)
            )),
            cgroup_driver: CgroupDriver::Cgroupfs,
            oom_score_adj: None,
            resources: PodResources::default(),
            sysctls: BTreeMap::new(),
            privileged: true,
            idmap: None,
            labels: BTreeMap::from([("app".to_string(), "e2e".to_string())]),
            uid: String::new(),
            warm: false,
        }
    }

    async fn run(&self, spec: &PodSpec) -> u32 {
        self.driver.create(spec).await.unwrap();
        self.driver.start(&spec.id).await.unwrap().init_pid
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let ids: Vec<String> = std::fs::read_dir(self.driver.lxcpath())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        // Dropped inside the test's runtime, which cannot block: clean up from another thread.
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                for id in ids {
                    let _ = rt.block_on(self.driver.destroy(&id));
                }
            });
        });
        for root in &self.driver.hierarchies().roots {
            let _ = remove_cgroup_tree(&root.join(&self.cgroup_top));
        }
    }
}

fn remove_cgroup_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.file_type()?.is_dir() {
            remove_cgroup_tree(&entry.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

/// Runs `nsenter -t <pid> <flags> -- <args>` and returns its stdout; panics on failure.
fn nsenter(pid: u32, flags: &[&str], args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .arg("-t")
        .arg(pid.to_string())
        .args(flags)
        .arg("--")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nsenter {flags:?} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Detaches a test's host mount even when the test fails half-way.
struct UnmountOnDrop(PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn ns_inode(pid: u32, ns: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/{ns}"))
        .unwrap()
        .ino()
}

fn interfaces(pid: u32) -> Vec<String> {
    let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap();
    dev.lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_string())
        .collect()
}

async fn wait_for_status(host: &dyn PodHost, id: &str, want: CtStatus, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let status = host.status(id).await.unwrap();
        if status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "status of {id} still {status:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the stand-in init has its SIGTERM handler (a SIGTERM that reaches PID 1 before
/// it has a handler is dropped; the daemon likewise waits for podinit's socket).
async fn wait_ready(spec: &PodSpec) {
    // The real podinit is ready once its API socket exists.
    let ready = if std::env::var_os("PVECRI_PODINIT").is_some() {
        spec.pod_dir.join("podinit.sock")
    } else {
        spec.pod_dir.join("ready")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "the init never got ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn is_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn lifecycle_create_start_status_list_stop_destroy() {
    let fx = Fixture::new();
    let spec = fx.spec("graceful");
    let host: &dyn PodHost = &fx.driver;
    assert_eq!(host.driver(), "lxc");
    assert_eq!(host.status(&spec.id).await.unwrap(), CtStatus::NotFound);

    host.create(&spec).await.unwrap();
    assert_eq!(host.status(&spec.id).await.unwrap(), CtStatus::Stopped);
    assert!(matches!(
        host.create(&spec).await,
        Err(PodHostError::AlreadyExists(_))
    ));

    let rt = host.start(&spec.id).await.unwrap();
    assert!(is_alive(rt.init_pid));
    assert_eq!(
        rt.netns_path,
        PathBuf::from(format!("/proc/{}/ns/net", rt.init_pid))
    );
    assert_eq!(
        host.status(&spec.id).await.unwrap(),
        CtStatus::Running {
            init_pid: rt.init_pid
        }
    );
    // Starting a running CT hands back the same init.
    assert_eq!(host.start(&spec.id).await.unwrap(), rt);

    // The CT owns its network (only lo, up), UTS, IPC and PID namespaces.
    assert_eq!(interfaces(rt.init_pid), ["lo"]);
    let me = std::process::id();
    for ns in ["net", "uts", "ipc", "pid", "mnt", "cgroup"] {
        assert_ne!(
            ns_inode(rt.init_pid, ns),
            ns_inode(me, ns),
            "{ns} namespace"
        );
    }
    assert_eq!(
        nsenter(rt.init_pid, &["-u"], &["hostname"]).trim(),
        "e2e-pod"
    );
    let lo = nsenter(rt.init_pid, &["-n"], &["ip", "-o", "link", "show", "lo"]);
    assert!(lo.contains("UP"), "lo is not up: {lo}");
    // podinit's place and arguments.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", rt.init_pid)).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    if std::env::var_os("PVECRI_PODINIT").is_none() {
        assert!(
            cmdline.contains("/sbin/podinit --pod-dir /pvecri"),
            "{cmdline}"
        );
    }

    let listed = host.list().await.unwrap();
    let info = listed.iter().find(|c| c.id == spec.id).unwrap();
    assert_eq!(info.name, "e2e/pod");
    assert_eq!(info.namespace, "e2e");
    assert_eq!(info.labels.get("app").map(String::as_str), Some("e2e"));
    assert_eq!(
        info.status,
        CtStatus::Running {
            init_pid: rt.init_pid
        }
    );

    wait_ready(&spec).await;
    let started = Instant::now();
    host.stop(&spec.id, Duration::from_secs(20)).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "an init that exits on SIGTERM must not wait out the timeout: {:?}",
        started.elapsed()
    );
    assert!(!is_alive(rt.init_pid));
    assert_eq!(host.status(&spec.id).await.unwrap(), CtStatus::Stopped);
    host.stop(&spec.id, Duration::from_secs(1)).await.unwrap();

    // A stopped CT starts again.
    let again = host.start(&spec.id).await.unwrap();
    assert_ne!(again.init_pid, rt.init_pid);

    host.destroy(&spec.id).await.unwrap();
    assert!(!is_alive(again.init_pid));
    assert_eq!(host.status(&spec.id).await.unwrap(), CtStatus::NotFound);
    assert!(!fx.driver.ct_dir(&spec.id).exists());
    assert!(host.list().await.unwrap().iter().all(|c| c.id != spec.id));
    host.destroy(&spec.id).await.unwrap();
    host.stop(&spec.id, Duration::from_secs(1)).await.unwrap();
    assert!(matches!(
        host.start(&spec.id).await,
        Err(PodHostError::NotFound(_))
    ));
    // The pod directory itself is the daemon's: it stays.
    assert!(spec.pod_dir.is_dir());
}

#[tokio::test]
async fn stop_kills_an_init_that_ignores_sigterm_after_the_timeout() {
    let fx = Fixture::new();
    let spec = fx.spec("stubborn");
    let init = fx.run(&spec).await;
    let started = Instant::now();
    fx.driver
        .stop(&spec.id, Duration::from_millis(500))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500),
        "stopped too early: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    assert!(!is_alive(init));
    assert_eq!(fx.driver.status(&spec.id).await.unwrap(), CtStatus::Stopped);
}

#[tokio::test]
async fn host_network_shares_the_host_netns() {
    let fx = Fixture::new();
    let mut spec = fx.spec("graceful");
    spec.network = NetworkMode::Host;
    let init = fx.run(&spec).await;
    assert_eq!(ns_inode(init, "net"), ns_inode(std::process::id(), "net"));
    assert_ne!(ns_inode(init, "uts"), ns_inode(std::process::id(), "uts"));
}

#[tokio::test]
async fn host_mounts_under_the_pod_dir_show_up_inside_and_ct_mounts_stay_inside() {
    let fx = Fixture::new();
    let spec = fx.spec("graceful");
    let init = fx.run(&spec).await;

    // A mount the daemon makes on the host after start, like a container's rootfs.
    let rootfs = spec.pod_dir.join("ctrs/c1/rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &rootfs,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let guard = UnmountOnDrop(rootfs.clone());
    std::fs::write(rootfs.join("marker"), "from the host").unwrap();
    let inside = nsenter(
        init,
        &["-m"],
        &["/pvecri/busybox", "cat", "/pvecri/ctrs/c1/rootfs/marker"],
    );
    assert_eq!(inside, "from the host");

    // Unmounting on the host propagates too.
    nix::mount::umount(&rootfs).unwrap();
    std::mem::forget(guard);
    let listing = nsenter(
        init,
        &["-m"],
        &["/pvecri/busybox", "ls", "/pvecri/ctrs/c1/rootfs"],
    );
    assert_eq!(listing.trim(), "");

    // A mount made inside the CT does not reach the host (slave, not shared).
    std::fs::create_dir_all(spec.pod_dir.join("inner")).unwrap();
    nsenter(
        init,
        &["-m"],
        &[
            "/pvecri/busybox",
            "mount",
            "-t",
            "tmpfs",
            "tmpfs",
            "/pvecri/inner",
        ],
    );
    nsenter(
        init,
        &["-m"],
        &["/pvecri/busybox", "touch", "/pvecri/inner/made-inside"],
    );
    assert!(!spec.pod_dir.join("inner/made-inside").exists());

    // podinit is there, read-only.
    let err = Command::new("nsenter")
        .args(["-t", &init.to_string(), "-m", "--"])
        .args(["/pvecri/busybox", "touch", "/sbin/podinit"])
        .output()
        .unwrap();
    assert!(!err.status.success(), "/sbin/podinit must be read-only");

    // Destroy undoes the shared self-bind of the pod directory.
    fx.driver.destroy(&spec.id).await.unwrap();
    assert!(!pve::pod_dir::is_mount_point(&spec.pod_dir).unwrap());
}

#[tokio::test]
async fn cgroup_lands_under_the_cgroupfs_parent_and_init_can_make_children() {
    let fx = Fixture::new();
    let mut spec = fx.spec("graceful");
    spec.resources.memory_limit_bytes = Some(256 << 20);
    let parent = spec.cgroup_parent.clone().unwrap();
    let init = fx.run(&spec).await;
    let want = format!("{parent}/{}", spec.id);

    let cgroups = std::fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap();
    for line in cgroups.lines() {
        assert!(line.ends_with(&format!(":{want}")), "{line} (want {want})");
    }
    let layout = fx.driver.hierarchies().layout;
    let memory_root = match layout {
        pve::cgroup::Layout::Unified => PathBuf::from("/sys/fs/cgroup"),
        _ => PathBuf::from("/sys/fs/cgroup/memory"),
    };
    let limit_file = match layout {
        pve::cgroup::Layout::Unified => "memory.max",
        _ => "memory.limit_in_bytes",
    };
    let limit = std::fs::read_to_string(memory_root.join(&want[1..]).join(limit_file)).unwrap();
    assert_eq!(limit.trim(), (256u64 << 20).to_string());

    // Inside, the CT's cgroup is the root of its cgroup namespace, writable: podinit makes a
    // child per container and sets its limits.
    let memory_in_ct = match layout {
        pve::cgroup::Layout::Unified => "/sys/fs/cgroup",
        _ => "/sys/fs/cgroup/memory",
    };
    let script = format!(
        "mkdir {memory_in_ct}/ctr1 && echo 100000000 > {memory_in_ct}/ctr1/{limit_file} && cat {memory_in_ct}/ctr1/{limit_file} && cat /proc/1/cgroup"
    );
    let out = nsenter(
        init,
        &["-m", "-C", "-p"],
        &["/pvecri/busybox", "sh", "-c", &script],
    );
    assert!(
        out.starts_with("99999744") || out.starts_with("100000000"),
        "{out}"
    );
    assert!(
        memory_root.join(&want[1..]).join("ctr1").is_dir(),
        "the child cgroup must sit below the CT's cgroup on the host"
    );

    // Destroy removes the CT's cgroup, child included, and keeps the kubelet's parent.
    fx.driver.destroy(&spec.id).await.unwrap();
    assert!(!memory_root.join(&want[1..]).exists());
    assert!(memory_root.join(&parent[1..]).is_dir());
}

/// The kubelet makes the pod cgroup before RunPodSandbox. On cgroup v1 a cpuset cgroup made
/// below a parent without `clone_children` starts with no CPUs and no memory nodes, and nothing
/// can enter it (`ENOSPC`); on v2 the pod cgroup delegates no controllers. Either way the CT's
/// cgroup, made by LXC below it, must be usable.
#[tokio::test]
async fn a_pod_cgroup_made_by_the_kubelet_beforehand_is_made_usable() {
    let fx = Fixture::new();
    let mut spec = fx.spec("graceful");
    spec.resources.memory_limit_bytes = Some(128 << 20);
    let parent = spec.cgroup_parent.clone().unwrap();
    let h = fx.driver.hierarchies().clone();
    // What the kubelet leaves: every component made with a plain mkdir, nothing filled.
    for root in &h.roots {
        let mut dir = root.clone();
        for part in parent.trim_start_matches('/').split('/') {
            dir.push(part);
            std::fs::create_dir_all(&dir).unwrap();
            if let Ok(clone) = std::fs::read_to_string(dir.join("cgroup.clone_children"))
                && clone.trim() != "0"
            {
                std::fs::write(dir.join("cgroup.clone_children"), "0").unwrap();
            }
        }
    }
    if let Some(cpuset) = &h.cpuset_v1 {
        let pod = cpuset.join(&parent[1..]);
        assert_eq!(
            std::fs::read_to_string(pod.join("cpuset.cpus"))
                .unwrap()
                .trim(),
            "",
            "the kernel fills a cpuset made without clone_children after all: this test \
             no longer reproduces the kubelet's pod cgroup"
        );
    }
    let init = fx.run(&spec).await;
    let want = format!("{parent}/{}", spec.id);
    let cgroups = std::fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap();
    assert!(
        cgroups.lines().all(|l| l.ends_with(&format!(":{want}"))),
        "{cgroups}"
    );
    if let Some(cpuset) = &h.cpuset_v1 {
        let root_cpus = std::fs::read_to_string(cpuset.join("cpuset.cpus")).unwrap();
        let ct_cpus = std::fs::read_to_string(cpuset.join(&want[1..]).join("cpuset.cpus")).unwrap();
        assert_eq!(ct_cpus.trim(), root_cpus.trim());
        let ct_mems = std::fs::read_to_string(cpuset.join(&want[1..]).join("cpuset.mems")).unwrap();
        assert!(!ct_mems.trim().is_empty());
    }
    if let Some(unified) = &h.unified {
        let delegated =
            std::fs::read_to_string(unified.join(&parent[1..]).join("cgroup.subtree_control"))
                .unwrap();
        for c in ["cpu", "memory", "pids"] {
            assert!(
                delegated.split_whitespace().any(|d| d == c),
                "{c} not in {delegated:?}"
            );
        }
        let limit = std::fs::read_to_string(unified.join(&want[1..]).join("memory.max")).unwrap();
        assert_eq!(limit.trim(), (128u64 << 20).to_string());
    }
    fx.driver.destroy(&spec.id).await.unwrap();
}

#[tokio::test]
async fn systemd_slices_expand_to_their_cgroup_path() {
    let fx = Fixture::new();
    let mut spec = fx.spec("graceful");
    let slice_prefix = fx.cgroup_top.replace('-', "_");
    spec.cgroup_driver = CgroupDriver::Systemd;
    spec.cgroup_parent = Some(format!("{slice_prefix}-burstable-pod1.slice"));
    let init = fx.run(&spec).await;
    let want = format!(
        "/{slice_prefix}.slice/{slice_prefix}-burstable.slice/{slice_prefix}-burstable-pod1.slice/pvecri-{}.scope",
        spec.id
    );
    let cgroups = std::fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap();
    assert!(
        cgroups.lines().all(|l| l.ends_with(&format!(":{want}"))),
        "{cgroups}"
    );
    fx.driver.destroy(&spec.id).await.unwrap();
    for root in &fx.driver.hierarchies().roots {
        let _ = remove_cgroup_tree(&root.join(format!("{slice_prefix}.slice")));
    }
}

#[tokio::test]
async fn negative_oom_score_adj_is_clamped_not_refused() {
    let fx = Fixture::new();
    let own = pve::oom::current().unwrap();
    let mut spec = fx.spec("graceful");
    spec.oom_score_adj = Some(-998);
    let init = fx.run(&spec).await;
    let adj: i32 = std::fs::read_to_string(format!("/proc/{init}/oom_score_adj"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(adj, pve::oom::clamp(-998, own));
    assert!(adj >= own);

    let mut spec = fx.spec("graceful");
    spec.oom_score_adj = Some(500);
    let init = fx.run(&spec).await;
    let adj = std::fs::read_to_string(format!("/proc/{init}/oom_score_adj")).unwrap();
    assert_eq!(adj.trim(), "500");
}

#[tokio::test]
async fn namespaced_sysctls_are_applied_in_the_ct() {
    let fx = Fixture::new();
    let mut spec = fx.spec("graceful");
    spec.sysctls
        .insert("net.ipv4.ip_forward".to_string(), "1".to_string());
    spec.sysctls
        .insert("kernel/shm_rmid_forced".to_string(), "1".to_string());
    let host_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let init = fx.run(&spec).await;
    let inside = nsenter(init, &["-n"], &["cat", "/proc/sys/net/ipv4/ip_forward"]);
    assert_eq!(inside.trim(), "1");
    let shm = nsenter(init, &["-i"], &["cat", "/proc/sys/kernel/shm_rmid_forced"]);
    assert_eq!(shm.trim(), "1");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_forward,
        "the host's own value must not change"
    );

    let mut host_wide = fx.spec("graceful");
    host_wide
        .sysctls
        .insert("vm.swappiness".to_string(), "1".to_string());
    assert!(matches!(
        fx.driver.create(&host_wide).await,
        Err(PodHostError::InvalidSpec(_))
    ));
}

#[tokio::test]
async fn status_is_stopped_once_the_init_exits() {
    let fx = Fixture::new();
    let spec = fx.spec("exits");
    fx.driver.create(&spec).await.unwrap();
    // The init may already be gone when start looks for it; both outcomes are valid.
    match fx.driver.start(&spec.id).await {
        Ok(_) | Err(PodHostError::Ct { .. }) => {}
        Err(e) => panic!("start: {e}"),
    }
    wait_for_status(
        &fx.driver,
        &spec.id,
        CtStatus::Stopped,
        Duration::from_secs(10),
    )
    .await;
    fx.driver
        .stop(&spec.id, Duration::from_secs(1))
        .await
        .unwrap();
    // It can be started again (LXC's leftovers of the first run are cleaned up).
    let _ = fx.driver.start(&spec.id).await;
    wait_for_status(
        &fx.driver,
        &spec.id,
        CtStatus::Stopped,
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test]
async fn an_init_that_dies_at_once_is_reported_with_its_console_output() {
    let fx = Fixture::new();
    let spec = fx.spec("dies");
    fx.driver.create(&spec).await.unwrap();
    match fx.driver.start(&spec.id).await {
        Err(e @ PodHostError::Ct { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("exited right after start") || text.contains("stopped at once"),
                "{text}"
            );
            assert!(
                text.contains("cannot listen on /pvecri/podinit.sock"),
                "{text}"
            );
        }
        // The init may still have been alive when start looked.
        Ok(_) => {}
        Err(e) => panic!("start: {e}"),
    }
    wait_for_status(
        &fx.driver,
        &spec.id,
        CtStatus::Stopped,
        Duration::from_secs(10),
    )
    .await;
    let console = std::fs::read_to_string(fx.driver.ct_dir(&spec.id).join("console.log")).unwrap();
    assert!(console.contains("cannot listen"), "{console}");
}

#[tokio::test]
async fn a_new_driver_instance_finds_running_cts() {
    let fx = Fixture::new();
    let spec = fx.spec("graceful");
    let stopped = fx.spec("graceful");
    let init = fx.run(&spec).await;
    fx.driver.create(&stopped).await.unwrap();

    // The standard LXC tools see the CT too.
    let lxcpath = fx.driver.lxcpath().display().to_string();
    let ls = Command::new("lxc-ls")
        .args(["-P", &lxcpath, "--running"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&ls.stdout).contains(&spec.id));
    let info = Command::new("lxc-info")
        .args(["-P", &lxcpath, "-n", &spec.id, "-p", "-H"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&info.stdout).trim(),
        init.to_string()
    );

    let restarted = fx.another_driver();
    let listed = restarted.list().await.unwrap();
    let running = listed.iter().find(|c| c.id == spec.id).unwrap();
    assert_eq!(running.status, CtStatus::Running { init_pid: init });
    assert_eq!(running.name, "e2e/pod");
    let idle = listed.iter().find(|c| c.id == stopped.id).unwrap();
    assert_eq!(idle.status, CtStatus::Stopped);

    assert_eq!(restarted.start(&spec.id).await.unwrap().init_pid, init);
    wait_ready(&spec).await;
    let started = Instant::now();
    restarted
        .stop(&spec.id, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!is_alive(init));
    restarted.destroy(&spec.id).await.unwrap();
    restarted.destroy(&stopped.id).await.unwrap();
    assert!(restarted.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn unprivileged_pods_run_with_the_proxmox_idmap() {
    let fx = Fixture::new();
    ensure_root_subids();
    let mut spec = fx.spec("graceful");
    spec.privileged = false;
    // The daemon's private state directory keeps the CT's root out: refused up front, with
    // the directory named.
    let err = fx.driver.create(&spec).await.unwrap_err();
    assert!(
        matches!(err, PodHostError::Unsupported { .. })
            && err.to_string().contains(&fx.state.display().to_string()),
        "{err}"
    );
    std::fs::set_permissions(&fx.state, std::fs::Permissions::from_mode(0o711)).unwrap();
    let init = fx.run(&spec).await;
    let uid_map = std::fs::read_to_string(format!("/proc/{init}/uid_map")).unwrap();
    let fields: Vec<&str> = uid_map.split_whitespace().collect();
    assert_eq!(fields, ["0", "100000", "65536"]);
    let status = std::fs::read_to_string(format!("/proc/{init}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid_line.contains("100000"), "{uid_line}");
    // podinit (CT root) can create its socket in the pod directory.
    nsenter(
        init,
        &["-a"],
        &["/pvecri/busybox", "touch", "/pvecri/podinit.sock"],
    );
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(spec.pod_dir.join("podinit.sock")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (100_000, 100_000));
    fx.driver.destroy(&spec.id).await.unwrap();
}

/// The idmap needs root's delegation when shadow's newuidmap is installed (Proxmox ships
/// these lines).
fn ensure_root_subids() {
    for file in ["/etc/subuid", "/etc/subgid"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if !pve::subid::root_has_range(&text, 100_000, 65_536) {
            let mut text = text;
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str("root:100000:65536\n");
            std::fs::write(file, text).unwrap();
        }
    }
}

#[tokio::test]
async fn a_failed_start_says_what_failed() {
    let fx = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let podinit = dir.path().join("podinit");
    std::fs::write(&podinit, INIT_GRACEFUL).unwrap();
    let mut spec = fx.spec("graceful");
    spec.podinit = podinit.clone();
    fx.driver.create(&spec).await.unwrap();
    std::fs::remove_file(&podinit).unwrap();

    let err = fx.driver.start(&spec.id).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, PodHostError::Command { .. }), "{text}");
    assert!(text.contains("lxc-start -n"), "{text}");
    assert!(text.contains("exited with code"), "{text}");
    assert!(text.contains("LXC log"), "{text}");
    assert!(text.contains("ERROR"), "{text}");
    assert!(text.contains(&podinit.display().to_string()), "{text}");
    assert_eq!(fx.driver.status(&spec.id).await.unwrap(), CtStatus::Stopped);

    // After fixing the cause the CT starts (the aborted start's cgroups were cleaned up).
    std::fs::write(&podinit, INIT_GRACEFUL).unwrap();
    std::fs::set_permissions(&podinit, std::fs::Permissions::from_mode(0o755)).unwrap();
    fx.driver.start(&spec.id).await.unwrap();
}

#[tokio::test]
async fn bad_specs_are_refused_before_anything_is_made() {
    let fx = Fixture::new();
    let mut spec = fx.spec("graceful");
    spec.podinit = fx.scripts.join("missing");
    assert!(matches!(
        fx.driver.create(&spec).await,
        Err(PodHostError::Unsupported { .. })
    ));
    let mut spec = fx.spec("graceful");
    spec.hostname = "bad\nlxc.init.cmd = /bin/sh".to_string();
    assert!(matches!(
        fx.driver.create(&spec).await,
        Err(PodHostError::InvalidSpec(_))
    ));
    let mut spec = fx.spec("graceful");
    spec.cgroup_parent = Some("/kubepods/../../etc".to_string());
    assert!(matches!(
        fx.driver.create(&spec).await,
        Err(PodHostError::Cgroup(_))
    ));
    assert!(fx.driver.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_default_config_builds_the_lxc_driver_under_the_state_dir() {
    require_root();
    let state = tempfile::tempdir().unwrap();
    let host = pve::build(
        &pve::PodHostConfig::default(),
        &pve::PveConfig::default(),
        state.path(),
    )
    .unwrap();
    assert_eq!(host.driver(), "lxc");
    assert!(state.path().join("lxc").is_dir());
    assert!(host.list().await.unwrap().is_empty());
    // Leftovers of a create interrupted after binding the pod directory are cleared, mount
    // included, when the driver comes up.
    let id = random_hex(64);
    let leftover = state.path().join("lxc").join(format!(".creating-{id}"));
    std::fs::create_dir_all(leftover.join("rootfs/tmp")).unwrap();
    let pod_dir = state.path().join("pods").join(&id);
    std::fs::create_dir_all(&pod_dir).unwrap();
    let record = pve::lxc::CtRecord {
        id: id.clone(),
        name: "e2e/crashed".into(),
        namespace: "e2e".into(),
        labels: BTreeMap::new(),
        pod_dir: pod_dir.clone(),
        pod_dir_bound: true,
        cgroups: pve::cgroup::CtCgroups::new(CgroupDriver::Cgroupfs, None, &id).unwrap(),
        privileged: true,
        host_pid: false,
        warm: false,
    };
    std::fs::write(
        leftover.join("pod.json"),
        serde_json::to_vec(&record).unwrap(),
    )
    .unwrap();
    pve::pod_dir::make_shared(&pod_dir, true).unwrap();
    let guard = UnmountOnDrop(pod_dir.clone());
    assert!(pve::pod_dir::is_mount_point(&pod_dir).unwrap());
    let again = pve::build(
        &pve::PodHostConfig::default(),
        &pve::PveConfig::default(),
        state.path(),
    )
    .unwrap();
    assert!(!leftover.exists());
    assert!(!pve::pod_dir::is_mount_point(&pod_dir).unwrap());
    std::mem::forget(guard);
    assert!(again.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pods_start_and_stop_concurrently() {
    let fx = Fixture::new();
    let host = std::sync::Arc::new(fx.another_driver());
    let specs: Vec<PodSpec> = (0..8).map(|_| fx.spec("graceful")).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for spec in specs.clone() {
        let host = host.clone();
        tasks.spawn(async move {
            host.create(&spec).await.unwrap();
            let rt = host.start(&spec.id).await.unwrap();
            (spec.id, rt.init_pid)
        });
    }
    let mut inits = Vec::new();
    while let Some(done) = tasks.join_next().await {
        inits.push(done.unwrap());
    }
    assert_eq!(inits.len(), specs.len());
    for (id, init) in &inits {
        assert_eq!(
            host.status(id).await.unwrap(),
            CtStatus::Running { init_pid: *init }
        );
    }
    for spec in &specs {
        wait_ready(spec).await;
    }
    for spec in specs.clone() {
        let host = host.clone();
        tasks.spawn(async move {
            host.stop(&spec.id, Duration::from_secs(10)).await.unwrap();
            host.destroy(&spec.id).await.unwrap();
            (spec.id, 0)
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert!(host.list().await.unwrap().is_empty());
    for (_, init) in inits {
        assert!(!is_alive(init));
    }
}
