//! critest, the cri-tools validation suite that containerd and CRI-O run in their CI, against
//! the real daemon: the whole suite on the overlay store, and the pod, container and
//! security-context specs on the zfs store (lxc driver); the whole suite again with the pve
//! driver against the pve-harness.
//!
//! The stand-in images are served through registry mirrors, so that critest pulls and checks
//! the upstream names. A run fails on any failed spec but the digest one and on any skip
//! other than AppArmor (absent here) and the benchmarks (see `e2e::critest`); it also fails
//! when critest leaves pods or containers behind. The JUnit report and critest's output are
//! kept in `target/critest/` (the path is printed).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use e2e::cni::NetworkOptions;
use e2e::critest::{area_table, findings, parse_junit};
use e2e::k8s_tools::{self, StandInRegistry};
use e2e::lock::FileLock;
use e2e::mounts::{current_mounts, mounts_under};
use e2e::pods::{Driver, PodEnv, PodEnvOptions, Setup, Store};
use k8s_cri::v1::{ListContainersRequest, ListPodSandboxRequest};

/// critest uses host ports 12000-12003 and makes host mounts: one run at a time per machine.
const CRITEST_LOCK: &str = "/var/tmp/pvecri-critest.lock";

/// The areas run on the zfs store, where the layer store matters.
const ZFS_FOCUS: &str = r"\[k8s\.io\] (PodSandbox|Container|Multiple Containers|Security Context) ";

fn report_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/critest")
}

fn label(setup: Setup) -> &'static str {
    match setup.driver {
        Driver::Lxc => setup.store.label(),
        Driver::Pve => "pve",
    }
}

async fn critest(setup: impl Into<Setup>, focus: Option<&str>) -> anyhow::Result<()> {
    let setup = setup.into();
    // A developer chasing one spec reruns it alone, with the daemon's debug log.
    let focus_override = std::env::var("PVECRI_CRITEST_FOCUS").ok();
    let focus = focus_override.as_deref().or(focus);
    let log_level = std::env::var("PVECRI_CRITEST_LOG_LEVEL").unwrap_or_else(|_| "info".into());
    let critest = k8s_tools::tool("critest")?;
    let _lock = FileLock::exclusive(std::path::Path::new(CRITEST_LOCK))?;
    let stand_ins = tokio::task::spawn_blocking(StandInRegistry::start).await??;
    let env = PodEnv::start_with(
        setup,
        PodEnvOptions {
            network: NetworkOptions { portmap: true },
            config_top: stand_ins.mirrors_toml(),
            log_level: Some(log_level),
            ..Default::default()
        },
    )
    .await?;
    let dir = report_dir();
    std::fs::create_dir_all(&dir)?;
    let junit = dir.join(format!("{}.xml", label(setup)));
    let log = dir.join(format!("{}.log", label(setup)));
    let _ = std::fs::remove_file(&junit);
    let endpoint = format!("unix://{}", env.daemon.socket.display());
    let mut cmd = match &env.pve {
        // The daemon runs in the harness's mount namespace: critest's host paths, and the
        // mounts it makes on them for the propagation and non-recursive read-only specs,
        // must be in that one too, as on a node where the kubelet, critest and the runtime
        // share the host's mounts. (The harness namespace sees no mount the host makes after
        // `up` on this machine, whose mounts are private.)
        Some(h) => {
            let mut c = Command::new("nsenter");
            c.arg("--target")
                .arg(h.ns_pid()?.to_string())
                .args(["--mount", "--uts", "--"])
                .arg(&critest);
            c
        }
        None => Command::new(&critest),
    };
    cmd.arg("-runtime-endpoint")
        .arg(&endpoint)
        .arg("-image-endpoint")
        .arg(&endpoint)
        .arg("-ginkgo.no-color")
        .arg(format!("-ginkgo.junit-report={}", junit.display()));
    if let Some(focus) = focus {
        cmd.arg(format!("-ginkgo.focus={focus}"));
    }
    let out = std::fs::File::create(&log)?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    eprintln!(
        "critest on the {} store: report {}, output {}",
        label(setup),
        junit.display(),
        log.display()
    );
    let status = tokio::task::spawn_blocking(move || cmd.status())
        .await?
        .with_context(|| format!("running {}", critest.display()))?;

    // What critest did not clean up is a finding: every spec removes what it made.
    let mut rt = env.rt().await?;
    let pods = rt
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await?
        .into_inner()
        .items;
    let ctrs = rt
        .list_containers(ListContainersRequest::default())
        .await?
        .into_inner()
        .containers;
    let mut problems = Vec::new();
    for p in &pods {
        let m = p.metadata.clone().unwrap_or_default();
        problems.push(format!(
            "pod left behind: {} ({}/{})",
            p.id, m.namespace, m.name
        ));
    }
    for c in &ctrs {
        let m = c.metadata.clone().unwrap_or_default();
        problems.push(format!("container left behind: {} ({})", c.id, m.name));
    }

    let xml = std::fs::read_to_string(&junit).with_context(|| {
        format!(
            "critest ({status}) wrote no JUnit report; its output:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    })?;
    let specs = parse_junit(&xml)?;
    eprintln!(
        "critest on the {} store ({status}):\n{}",
        label(setup),
        area_table(&specs)
    );
    for f in findings(&specs, focus.is_some()) {
        // critest in the harness's namespace sees its /var/lib, an overlay that cannot be
        // idmapped, and skips the one spec that needs the kubelet's directory idmappable;
        // the pve driver's user-namespace pods are in pve.rs. On a node /var/lib is the
        // host's.
        if env.pve.is_some()
            && f.starts_with("SKIPPED")
            && f.contains("ID mapping is not supported with path: /var/lib")
        {
            eprintln!("critest on the pve-harness, not counted: {f}");
            continue;
        }
        problems.push(f);
    }

    // Every pod is removed through the daemon; then nothing may stay mounted in its state.
    drop(rt);
    e2e::cri_client::remove_all_pods(&env.daemon.socket).await?;
    let pods_dir = env.daemon.state_dir.join("pods");
    let left: Vec<String> = match &env.pve {
        // The daemon runs in the harness's mount namespace: look there.
        Some(h) => {
            let out = e2e::cmd::run(Command::new(h.script()).args([
                "exec",
                "awk",
                "{ print $5 }",
                "/proc/self/mountinfo",
            ]))?;
            out.lines()
                .filter(|m| std::path::Path::new(m).starts_with(&pods_dir))
                .map(str::to_string)
                .collect()
        }
        None => mounts_under(&current_mounts()?, &pods_dir)
            .into_iter()
            .map(|m| m.mount_point.display().to_string())
            .collect(),
    };
    for m in left {
        problems.push(format!("still mounted after every pod was removed: {m}"));
    }
    // The daemon's log goes with the report: it is removed with the daemon.
    let _ = std::fs::copy(
        &env.daemon.log_path,
        dir.join(format!("{}-daemon.log", label(setup))),
    );
    if !problems.is_empty() {
        bail!(
            "critest on the {} store: {} finding(s):\n{}\n(daemon log: {})",
            label(setup),
            problems.len(),
            problems.join("\n"),
            env.daemon.log_path.display()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlay_full_suite() {
    critest(Store::Overlay, None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zfs_pods_containers_security() {
    critest(Store::Zfs, Some(ZFS_FOCUS)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pve_full_suite() {
    critest(Setup::pve(), None).await.unwrap();
}
