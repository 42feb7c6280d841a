//! The bodies of the host-namespace tests: pods in the host's PID, IPC and network
//! namespaces (`hostPID`, `hostIPC`, `hostNetwork`), the shape of node DaemonSets, through
//! the real daemon and podinit. `tests/host_namespaces.rs` runs them with the lxc driver,
//! `tests/pve.rs` with the pve driver.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use e2e::pods::{PodEnv, Setup, container_config, exec_ok, pod_status, wait_container_state};
use k8s_cri::v1::{
    ContainerConfig, ContainerState, LinuxContainerConfig, LinuxContainerSecurityContext,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxState, RemovePodSandboxRequest, StopPodSandboxRequest,
};

const RUNNING: Duration = Duration::from_secs(20);

fn namespaces(network: NamespaceMode, pid: NamespaceMode, ipc: NamespaceMode) -> NamespaceOption {
    NamespaceOption {
        network: network as i32,
        pid: pid as i32,
        ipc: ipc as i32,
        ..Default::default()
    }
}

fn with_pod_namespaces(mut pod: PodSandboxConfig, ns: &NamespaceOption) -> PodSandboxConfig {
    pod.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            namespace_options: Some(ns.clone()),
            ..Default::default()
        }),
        ..Default::default()
    });
    pod
}

fn with_container_namespaces(mut c: ContainerConfig, ns: &NamespaceOption) -> ContainerConfig {
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            namespace_options: Some(ns.clone()),
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

/// Host pids whose command line is exactly `cmdline` (arguments joined by spaces).
fn pids_running(cmdline: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let text = String::from_utf8_lossy(&raw).replace('\0', " ");
            if text.trim_end() == cmdline {
                found.push(pid);
            }
        }
    }
    found
}

fn ppid(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // pid (comm) state ppid ...; comm may hold spaces, so split after the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(1).unwrap().parse().unwrap()
}

fn ns_link(pid: &str, ns: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .unwrap()
        .display()
        .to_string()
}

/// A process of the test on the host, killed on drop.
struct HostProcess(Child);

impl HostProcess {
    fn sleep(marker_secs: u32) -> Self {
        Self(
            Command::new("sleep")
                .arg(marker_secs.to_string())
                .spawn()
                .unwrap(),
        )
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
    fn alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A SysV shared memory segment made on the host (as critest does with `ipcmk`), removed
/// on drop.
struct HostShm(i32);

impl HostShm {
    fn new() -> Self {
        // SAFETY: shmget with IPC_PRIVATE only creates a segment; no memory is touched.
        let id = unsafe { libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600) };
        assert!(id >= 0, "shmget: {}", std::io::Error::last_os_error());
        Self(id)
    }
}

impl Drop for HostShm {
    fn drop(&mut self) {
        // SAFETY: IPC_RMID on our own segment id; the buffer argument is unused.
        unsafe { libc::shmctl(self.0, libc::IPC_RMID, std::ptr::null_mut()) };
    }
}

/// Waits until no process runs `cmdline`; fails after `timeout`.
async fn wait_gone(cmdline: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let left = pids_running(cmdline);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{cmdline:?} still runs as {left:?} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A node-agent pod: the host's network, PID and IPC namespaces. Its container sees the
/// host's processes with their host pids, the host's SysV IPC and `/dev/shm`; stopping the
/// pod ends every process it started, and nothing of the host's.
pub async fn a_host_namespace_pod_sees_the_host_and_ends_only_its_own(setup: Setup) {
    let env = PodEnv::start(setup).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let mut host_sleep = HostProcess::sleep(1_234_567);
    let shm = HostShm::new();

    let ns = namespaces(
        NamespaceMode::Node,
        NamespaceMode::Node,
        NamespaceMode::Node,
    );
    let pod = with_pod_namespaces(env.pod_config("agent"), &ns);
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let agent = with_container_namespaces(
        container_config(
            "agent",
            &env.images.one_layer,
            &["sh", "-c", "sleep 2345678 & exec sleep 3600"],
        ),
        &ns,
    );
    let id = env
        .run_container(&mut rt, &pod_id, &pod, agent)
        .await
        .unwrap();
    wait_container_state(&mut rt, &id, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();

    // The host's namespaces, by inode, and the host's processes under their host pids.
    let seen = exec_ok(
        &mut rt,
        &id,
        "for n in pid ipc net; do readlink /proc/self/ns/$n; done",
    )
    .await
    .unwrap();
    let host: Vec<String> = ["pid", "ipc", "net"]
        .iter()
        .map(|n| ns_link("self", n))
        .collect();
    assert_eq!(seen.lines().collect::<Vec<_>>(), host);
    let cmd = exec_ok(
        &mut rt,
        &id,
        &format!("tr '\\0' ' ' < /proc/{}/cmdline", host_sleep.pid()),
    )
    .await
    .unwrap();
    assert_eq!(cmd.trim_end(), "sleep 1234567");
    // The pod's own processes carry host pids too.
    let inner = exec_ok(&mut rt, &id, "pidof 'sleep'").await.unwrap();
    let bg = pids_running("sleep 2345678");
    assert_eq!(bg.len(), 1);
    assert!(
        inner.split_whitespace().any(|p| p == bg[0].to_string()),
        "{inner} lacks {bg:?}"
    );
    // The host's SysV segment, and the host's /dev/shm.
    // (busybox here has no `ipcs`; /proc/sysvipc shows the IPC namespace's segments.)
    let segments = exec_ok(&mut rt, &id, "cat /proc/sysvipc/shm")
        .await
        .unwrap();
    assert!(
        segments
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(&shm.0.to_string())),
        "{segments}"
    );
    let shm_file = format!("pvecri-e2e-{:08x}", rand::random::<u32>());
    exec_ok(
        &mut rt,
        &id,
        &format!("echo from-the-pod > /dev/shm/{shm_file}"),
    )
    .await
    .unwrap();
    let host_path = env.node_path(&std::path::Path::new("/dev/shm").join(&shm_file));
    let written = std::fs::read_to_string(&host_path);
    let _ = std::fs::remove_file(&host_path);
    assert_eq!(written.unwrap(), "from-the-pod\n");

    // podinit runs as an ordinary host process, the container's parent.
    let main = pids_running("sleep 3600")
        .into_iter()
        .find(|p| ppid(bg[0]) == *p)
        .expect("the container's main process");
    let podinit = ppid(main);
    assert!(
        std::fs::read_to_string(format!("/proc/{podinit}/cmdline"))
            .unwrap()
            .contains("podinit"),
    );

    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .unwrap();
    wait_gone("sleep 2345678", Duration::from_secs(5)).await;
    assert!(
        !std::path::Path::new(&format!("/proc/{podinit}")).exists(),
        "podinit {podinit} outlived its pod"
    );
    assert!(host_sleep.alive(), "the host's own process was killed");
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .unwrap();
    assert!(host_sleep.alive());
}

/// podinit killed in a hostPID pod: its containers' processes live on, reparented to the
/// host's init, and removing the pod kills them through the pod's cgroup.
pub async fn a_crashed_host_pid_pod_leaves_no_process_behind(setup: Setup) {
    let env = PodEnv::start(setup).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let ns = namespaces(NamespaceMode::Pod, NamespaceMode::Node, NamespaceMode::Pod);
    let pod = with_pod_namespaces(env.pod_config("crashing"), &ns);
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let c = with_container_namespaces(
        container_config(
            "c",
            &env.images.one_layer,
            &["sh", "-c", "sleep 3456789 & exec sleep 3601"],
        ),
        &ns,
    );
    let id = env.run_container(&mut rt, &pod_id, &pod, c).await.unwrap();
    wait_container_state(&mut rt, &id, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();
    let main = pids_running("sleep 3601");
    assert_eq!(main.len(), 1);
    let podinit = ppid(main[0]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(podinit as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    e2e::pods::eventually("the pod is reported not ready", RUNNING, || {
        let mut rt = rt.clone();
        let pod_id = pod_id.clone();
        async move {
            let st = pod_status(&mut rt, &pod_id).await?;
            Ok((st.state == PodSandboxState::SandboxNotready as i32).then_some(()))
        }
    })
    .await
    .unwrap();
    assert_eq!(
        pids_running("sleep 3456789").len(),
        1,
        "with the host's PID namespace the pod's processes outlive podinit"
    );
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .unwrap();
    wait_gone("sleep 3456789", Duration::from_secs(5)).await;
    wait_gone("sleep 3601", Duration::from_secs(5)).await;
}

/// A container gets only the host namespaces its pod keeps; a pod without them has its own.
pub async fn containers_cannot_have_host_namespaces_their_pod_lacks(setup: Setup) {
    let env = PodEnv::start(setup).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("plain");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    for (what, ns) in [
        (
            "hostPID",
            namespaces(NamespaceMode::Pod, NamespaceMode::Node, NamespaceMode::Pod),
        ),
        (
            "hostIPC",
            namespaces(NamespaceMode::Pod, NamespaceMode::Pod, NamespaceMode::Node),
        ),
    ] {
        let c = with_container_namespaces(
            container_config(what, &env.images.one_layer, &["sleep", "3600"]),
            &ns,
        );
        let err = env
            .create_container(&mut rt, &pod_id, &pod, c)
            .await
            .unwrap_err();
        let status = err.downcast_ref::<tonic::Status>().unwrap();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(what), "{}", status.message());
    }
    let id = env
        .run_container(
            &mut rt,
            &pod_id,
            &pod,
            container_config("own", &env.images.one_layer, &["sleep", "3600"]),
        )
        .await
        .unwrap();
    wait_container_state(&mut rt, &id, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();
    let seen = exec_ok(
        &mut rt,
        &id,
        "for n in pid ipc; do readlink /proc/self/ns/$n; done",
    )
    .await
    .unwrap();
    for (line, ns) in seen.lines().zip(["pid", "ipc"]) {
        assert_ne!(line, ns_link("self", ns), "{ns}");
    }
}

/// A host directory for a volume, bound onto itself rshared (a mount that can propagate, as
/// Bidirectional needs); everything mounted at or below it is unmounted on drop.
struct SharedHostDir(tempfile::TempDir, Option<u32>);

impl SharedHostDir {
    /// In the node's mount namespace (`ns`: the pve-harness's, or the test's own).
    fn new(ns: Option<u32>) -> Self {
        use nix::mount::{MsFlags, mount};
        let dir = tempfile::Builder::new()
            .prefix("pvecri-agent-vol-")
            .tempdir()
            .unwrap();
        let p = dir.path();
        match ns {
            Some(pid) => {
                e2e::cmd::run(
                    Command::new("nsenter")
                        .args(["--target", &pid.to_string(), "--mount", "--", "sh", "-c"])
                        .arg("mount --bind \"$0\" \"$0\" && mount --make-rshared \"$0\"")
                        .arg(p),
                )
                .unwrap();
            }
            None => {
                mount(Some(p), p, None::<&str>, MsFlags::MS_BIND, None::<&str>).unwrap();
                mount(
                    None::<&str>,
                    p,
                    None::<&str>,
                    MsFlags::MS_SHARED | MsFlags::MS_REC,
                    None::<&str>,
                )
                .unwrap();
            }
        }
        Self(dir, ns)
    }

    /// A path below the directory as the node sees it (mounts included).
    fn node_path(&self, rel: &str) -> std::path::PathBuf {
        let p = self.0.path().join(rel);
        match self.1 {
            Some(pid) => std::path::PathBuf::from(format!("/proc/{pid}/root"))
                .join(p.strip_prefix("/").unwrap_or(&p)),
            None => p,
        }
    }
}

impl Drop for SharedHostDir {
    fn drop(&mut self) {
        if let Some(pid) = self.1 {
            let _ = e2e::daemon::unmount_in_namespace(pid, self.0.path());
        }
        let _ = e2e::mounts::unmount_under(self.0.path(), |_| false);
    }
}

/// The whole node-agent shape (a CSI node plugin's): hostPID, hostIPC and hostNetwork, a
/// privileged container, and a Bidirectional volume. The container sees the host's
/// processes and interfaces, may mount (a CSI plugin's job), and its mounts in the volume
/// reach the host, where they outlive the pod as containerd's do.
pub async fn a_privileged_node_agent_with_a_bidirectional_volume(setup: Setup) {
    use k8s_cri::v1::{Mount, MountPropagation};
    let env = PodEnv::start(setup).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let host_sleep = HostProcess::sleep(1_234_568);
    let vol = SharedHostDir::new(env.node_mount_ns());
    std::fs::create_dir_all(vol.0.path().join("plugin")).unwrap();

    let ns = namespaces(
        NamespaceMode::Node,
        NamespaceMode::Node,
        NamespaceMode::Node,
    );
    let pod = with_pod_namespaces(env.pod_config("csi-node"), &ns);
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let mut cfg = with_container_namespaces(
        container_config("plugin", &env.images.one_layer, &["sleep", "3602"]),
        &ns,
    );
    if let Some(sc) = cfg.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.privileged = true;
    }
    cfg.mounts = vec![Mount {
        host_path: vol.0.path().display().to_string(),
        container_path: "/var/lib/kubelet".to_string(),
        propagation: MountPropagation::PropagationBidirectional as i32,
        ..Default::default()
    }];
    let id = env
        .run_container(&mut rt, &pod_id, &pod, cfg)
        .await
        .unwrap();
    wait_container_state(&mut rt, &id, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();

    let seen = exec_ok(
        &mut rt,
        &id,
        &format!(
            "for n in pid ipc net; do readlink /proc/self/ns/$n; done; \
             tr '\\0' ' ' < /proc/{}/cmdline; echo",
            host_sleep.pid()
        ),
    )
    .await
    .unwrap();
    let mut want: Vec<String> = ["pid", "ipc", "net"]
        .iter()
        .map(|n| ns_link("self", n))
        .collect();
    want.push("sleep 1234568 ".to_string());
    assert_eq!(seen.lines().collect::<Vec<_>>(), want);
    // Privileged: every capability the CT holds, so mount works.
    exec_ok(
        &mut rt,
        &id,
        "mount -t tmpfs -o size=1m csi /var/lib/kubelet/plugin && \
         echo staged > /var/lib/kubelet/plugin/volume",
    )
    .await
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(vol.node_path("plugin/volume")).unwrap(),
        "staged\n",
        "the container's mount reached the host"
    );

    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .unwrap();
    wait_gone("sleep 3602", Duration::from_secs(5)).await;
    assert_eq!(
        std::fs::read_to_string(vol.node_path("plugin/volume")).unwrap(),
        "staged\n",
        "the plugin's mount outlives the pod on the host"
    );
}

/// A hostPID pod through a `kill -9` of the daemon: the restarted daemon finds its pod (whose
/// init is in the host's PID namespace) running, its container answers, and stopping it
/// still ends every process the pod started.
pub async fn a_host_pid_pod_survives_a_daemon_restart(setup: Setup) {
    let mut env = PodEnv::start(setup).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let ns = namespaces(NamespaceMode::Pod, NamespaceMode::Node, NamespaceMode::Node);
    let pod = with_pod_namespaces(env.pod_config("restarted"), &ns);
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let c = with_container_namespaces(
        container_config(
            "c",
            &env.images.one_layer,
            &["sh", "-c", "sleep 4567890 & exec sleep 3606"],
        ),
        &ns,
    );
    let id = env.run_container(&mut rt, &pod_id, &pod, c).await.unwrap();
    wait_container_state(&mut rt, &id, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();

    env.daemon.kill9().unwrap();
    drop(rt);
    env.daemon.restart().unwrap();
    let mut rt = env.rt().await.unwrap();
    let st = pod_status(&mut rt, &pod_id).await.unwrap();
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32, "{st:?}");
    let pid = exec_ok(&mut rt, &id, "pidof sleep").await.unwrap();
    let bg = pids_running("sleep 4567890");
    assert_eq!(bg.len(), 1);
    assert!(
        pid.split_whitespace().any(|p| p == bg[0].to_string()),
        "{pid}"
    );

    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .unwrap();
    wait_gone("sleep 4567890", Duration::from_secs(5)).await;
    wait_gone("sleep 3606", Duration::from_secs(5)).await;
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .unwrap();
}
