//! Latency of the `lxc` pod host (a benchmark, not a test; needs root):
//!
//! ```sh
//! cargo test -p e2e --test pod_host_bench -- --ignored --nocapture
//! ```
//!
//! 20 rounds with a trivial init (busybox sh that exits on SIGTERM); prints median, p95, min
//! and max of each step, and the same for plain `lxc-start -d` / `lxc-stop -k` on the same CT
//! as a floor.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)] // a test crate
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pve::lxc::{LxcDriver, LxcOptions};
use pve::{CgroupDriver, NetworkMode, PodHost, PodResources, PodSpec};

const ROUNDS: usize = 20;
const INIT: &str = "#!/pvecri/busybox sh
trap 'exit 0' TERM
/pvecri/busybox touch /pvecri/ready
while :; do /pvecri/busybox sleep 1 & wait $!; done
";

fn id(round: usize) -> String {
    format!("{:064x}", 0xbe_0000 + round)
}

fn spec(state: &Path, podinit: &Path, id: String) -> PodSpec {
    let pod_dir = state.join("pods").join(&id);
    std::fs::create_dir_all(&pod_dir).unwrap();
    std::fs::hard_link("/usr/bin/busybox", pod_dir.join("busybox"))
        .or_else(|_| std::fs::copy("/usr/bin/busybox", pod_dir.join("busybox")).map(|_| ()))
        .unwrap();
    PodSpec {
        id,
        name: "bench/pod".into(),
        namespace: "bench".into(),
        hostname: "bench".into(),
        pod_dir,
        podinit: podinit.to_path_buf(),
        network: NetworkMode::Isolated,
        host_pid: false,
        host_ipc: false,
        cgroup_parent: Some("/pvecri-bench/burstable/pod0".into()),
        cgroup_driver: CgroupDriver::Cgroupfs,
        oom_score_adj: Some(-998),
        resources: PodResources::default(),
        sysctls: BTreeMap::new(),
        privileged: true,
        idmap: None,
        labels: BTreeMap::new(),
        uid: String::new(),
        warm: false,
    }
}

struct Stats(Vec<Duration>);

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut v = self.0.clone();
        v.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let p95 = v[((v.len() * 95).div_ceil(100)).saturating_sub(1)];
        write!(
            f,
            "median {:7.2} ms  p95 {:7.2} ms  min {:7.2} ms  max {:7.2} ms",
            ms(v[v.len() / 2]),
            ms(p95),
            ms(v[0]),
            ms(v[v.len() - 1])
        )
    }
}

/// Waits (untimed) until the init has set up its SIGTERM handler, as the daemon waits for
/// podinit's socket: a SIGTERM that reaches PID 1 before it has a handler is dropped.
async fn wait_ready(spec: &PodSpec) {
    let ready = spec.pod_dir.join("ready");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "init never got ready");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn pod_host_latency() {
    assert!(nix::unistd::geteuid().is_root(), "needs root");
    let root = tempfile::Builder::new()
        .prefix("pvecri-bench-")
        .tempdir()
        .unwrap();
    let state = root.path().join("state");
    std::fs::create_dir_all(state.join("pods")).unwrap();
    let podinit: PathBuf = std::env::var_os("PVECRI_PODINIT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.path().join("podinit"));
    if std::env::var_os("PVECRI_PODINIT").is_none() {
        std::fs::write(&podinit, INIT).unwrap();
        std::fs::set_permissions(&podinit, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let lxcpath = pve::config::lxc_path(&state);
    let host = LxcDriver::new(LxcOptions::new(lxcpath.clone())).unwrap();

    let (mut create, mut start, mut create_start) = (vec![], vec![], vec![]);
    let (mut stop, mut destroy, mut stop_destroy) = (vec![], vec![], vec![]);
    let mut destroy_running = vec![];
    for round in 0..ROUNDS {
        let s = spec(&state, &podinit, id(round));
        let t0 = Instant::now();
        host.create(&s).await.unwrap();
        create.push(t0.elapsed());
        let t1 = Instant::now();
        host.start(&s.id).await.unwrap();
        start.push(t1.elapsed());
        create_start.push(t0.elapsed());
        if std::env::var_os("PVECRI_PODINIT").is_none() {
            wait_ready(&s).await;
        }

        let t2 = Instant::now();
        host.stop(&s.id, Duration::from_secs(10)).await.unwrap();
        stop.push(t2.elapsed());
        let t3 = Instant::now();
        host.destroy(&s.id).await.unwrap();
        destroy.push(t3.elapsed());
        stop_destroy.push(t2.elapsed());

        // Destroy straight from running (kills the init).
        let s = spec(&state, &podinit, id(1000 + round));
        host.create(&s).await.unwrap();
        host.start(&s.id).await.unwrap();
        let t4 = Instant::now();
        host.destroy(&s.id).await.unwrap();
        destroy_running.push(t4.elapsed());
    }

    // The floor: the LXC tools alone on one CT defined by the driver.
    let s = spec(&state, &podinit, id(5000));
    host.create(&s).await.unwrap();
    let (mut raw_start, mut raw_stop) = (vec![], vec![]);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let ok = tokio::process::Command::new("lxc-start")
            .args(["-n", &s.id, "-P"])
            .arg(&lxcpath)
            .arg("-d")
            .status()
            .await
            .unwrap();
        raw_start.push(t.elapsed());
        assert!(ok.success());
        let t = Instant::now();
        let ok = tokio::process::Command::new("lxc-stop")
            .args(["-n", &s.id, "-P"])
            .arg(&lxcpath)
            .arg("-k")
            .status()
            .await
            .unwrap();
        raw_stop.push(t.elapsed());
        assert!(ok.success());
    }
    host.destroy(&s.id).await.unwrap();
    for root in &host.hierarchies().roots {
        for dir in [
            "pvecri-bench/burstable/pod0",
            "pvecri-bench/burstable",
            "pvecri-bench",
        ] {
            let _ = std::fs::remove_dir(root.join(dir));
        }
    }

    println!(
        "pod host `lxc`, {ROUNDS} rounds, trivial init ({})",
        podinit.display()
    );
    println!("  create               {}", Stats(create));
    println!("  start                {}", Stats(start));
    println!("  create+start         {}", Stats(create_start));
    println!("  stop (init obeys)    {}", Stats(stop));
    println!("  destroy (stopped)    {}", Stats(destroy));
    println!("  stop+destroy         {}", Stats(stop_destroy));
    println!("  destroy (running)    {}", Stats(destroy_running));
    println!("  lxc-start -d (raw)   {}", Stats(raw_start));
    println!("  lxc-stop -k (raw)    {}", Stats(raw_stop));
}
