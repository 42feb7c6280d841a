//! Security contexts through the real daemon and LXC: users and groups, capabilities,
//! privileged containers, seccomp profiles, mount propagation and read-only mounts.
//! These do not depend on the layer store, so they run on overlay only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test crate

use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e::pods::{PodEnv, Store, container_config, exec_ok, wait_container_state};
use k8s_cri::v1::{
    ContainerState, Int64Value, LinuxContainerConfig, LinuxContainerSecurityContext, Mount,
    MountPropagation, SupplementalGroupsPolicy,
};
use nix::mount::MsFlags;
use tonic::Code;

const RUNNING: Duration = Duration::from_secs(20);

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

/// The pod CT's init (podinit) pid, from PodSandboxStatus's verbose info.
async fn pod_init_pid(rt: &mut e2e::cri_client::RuntimeClient, pod_id: &str) -> u32 {
    let resp = rt
        .pod_sandbox_status(k8s_cri::v1::PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.to_string(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&resp.info["info"]).unwrap();
    info["init_pid"].as_u64().unwrap() as u32
}

/// A `Cap*:` line of a /proc/<pid>/status text, as a mask.
fn cap_field(status: &str, field: &str) -> u64 {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

/// A privileged container, and one that adds `ALL`, get every capability the pod's CT
/// holds (whatever the machine's bounding set lacks: this host's has no CAP_SYS_RESOURCE),
/// and can use them: mount (no seccomp filter either) and create a network device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_and_all_capabilities_get_what_the_ct_holds() {
    let env = PodEnv::start(Store::Overlay).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("privileged");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let init = pod_init_pid(&mut rt, &pod_id).await;
    let init_status = std::fs::read_to_string(format!("/proc/{init}/status")).unwrap();
    let ct_caps = cap_field(&init_status, "CapBnd") & cap_field(&init_status, "CapPrm");
    assert_ne!(ct_caps, 0);

    let sleep = ["sleep", "3600"];
    let privileged = with_security(
        container_config("privileged", &env.images.one_layer, &sleep),
        LinuxContainerSecurityContext {
            privileged: true,
            // A privileged container ignores its seccomp profile.
            seccomp: Some(k8s_cri::v1::SecurityProfile {
                profile_type: k8s_cri::v1::security_profile::ProfileType::RuntimeDefault as i32,
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let all = with_security(
        container_config("all-caps", &env.images.one_layer, &sleep),
        LinuxContainerSecurityContext {
            capabilities: Some(k8s_cri::v1::Capability {
                add_capabilities: vec!["ALL".into()],
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    for cfg in [privileged, all] {
        let name = cfg.metadata.as_ref().unwrap().name.clone();
        let id = env
            .run_container(&mut rt, &pod_id, &pod, cfg)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        wait_container_state(&mut rt, &id, ContainerState::ContainerRunning, RUNNING)
            .await
            .unwrap();
        let status = exec_ok(&mut rt, &id, "cat /proc/self/status")
            .await
            .unwrap();
        for field in ["CapBnd", "CapEff", "CapPrm"] {
            assert_eq!(
                cap_field(&status, field),
                ct_caps,
                "{name}: {field} is the CT's set"
            );
        }
        // CAP_SYS_ADMIN and CAP_NET_ADMIN work.
        exec_ok(
            &mut rt,
            &id,
            "mkdir -p /mnt/t && mount -t tmpfs none /mnt/t && umount /mnt/t",
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        exec_ok(&mut rt, &id, "brctl addbr pvtest0 && brctl delbr pvtest0")
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    }

    // A capability the CT does not hold, asked for by name, is refused at create, naming it.
    let lacking = (0..=40u32).find(|n| ct_caps & (1u64 << n) == 0);
    if let Some(n) = lacking {
        let cap = podinit::caps::ALL[n as usize];
        let name = cap.to_string();
        let cfg = with_security(
            container_config("lacking", &env.images.one_layer, &sleep),
            LinuxContainerSecurityContext {
                capabilities: Some(k8s_cri::v1::Capability {
                    add_capabilities: vec![name.trim_start_matches("CAP_").to_string()],
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        let (code, message) = status_code(env.create_container(&mut rt, &pod_id, &pod, cfg).await);
        assert_eq!(code, Code::InvalidArgument, "{message}");
        assert!(
            message.contains(name.trim_start_matches("CAP_")),
            "{message}"
        );
    }
}

/// A host directory for volume tests, unmounted (lazily, deepest first) and removed on drop.
struct HostDir {
    dir: tempfile::TempDir,
}

impl HostDir {
    fn new() -> HostDir {
        HostDir {
            dir: tempfile::Builder::new()
                .prefix("pvecri-vol-")
                .tempdir()
                .unwrap(),
        }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn tmpfs(&self, rel: &str) -> PathBuf {
        let p = self.path().join(rel);
        std::fs::create_dir_all(&p).unwrap();
        nix::mount::mount(
            Some("none"),
            &p,
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        p
    }
    /// The directory bound onto itself with `flags` propagation (rshared, ...).
    fn self_bind(&self, flags: MsFlags) {
        nix::mount::mount(
            Some(self.path()),
            self.path(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .unwrap();
        nix::mount::mount(
            None::<&str>,
            self.path(),
            None::<&str>,
            flags | MsFlags::MS_REC,
            None::<&str>,
        )
        .unwrap();
    }
    /// How many mounts of this host's namespace are at or below the directory.
    fn mounts(&self) -> usize {
        let all = e2e::mounts::current_mounts().unwrap();
        e2e::mounts::mounts_under(&all, self.path()).len()
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = e2e::mounts::unmount_under(self.path(), |_| false);
    }
}

fn volume(host: &Path, container: &str) -> Mount {
    Mount {
        host_path: host.display().to_string(),
        container_path: container.to_string(),
        ..Default::default()
    }
}

/// A read-only volume with a tmpfs below it: the volume itself is read-only, the tmpfs under
/// it stays writable (not recursive), and the host can unmount and remove it all while the
/// container runs: nothing of the volume is mounted in the host's namespace (the bug was a
/// bind staged on the host, which kept the tmpfs's directory busy: EBUSY on rmdir).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_leave_nothing_mounted_on_the_host() {
    let env = PodEnv::start(Store::Overlay).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("ro-volume");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let host = HostDir::new();
    let tmpfs = host.tmpfs("tmpfs");
    std::fs::write(host.path().join("file"), "from the host\n").unwrap();

    let mut cfg = container_config("ro", &env.images.one_layer, &["sleep", "3600"]);
    cfg.mounts = vec![Mount {
        readonly: true,
        ..volume(host.path(), "/mnt")
    }];
    let id = env
        .run_container(&mut rt, &pod_id, &pod, cfg)
        .await
        .unwrap();
    wait_container_state(&mut rt, &id, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();
    assert_eq!(
        exec_ok(&mut rt, &id, "cat /mnt/file").await.unwrap(),
        "from the host\n"
    );
    exec_ok(&mut rt, &id, "touch /mnt/tmpfs/file")
        .await
        .unwrap();
    let out = exec_ok(&mut rt, &id, "touch /mnt/new 2>&1 || true")
        .await
        .unwrap();
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(
        tmpfs.join("file").exists(),
        "the write went to the host's tmpfs"
    );
    // Nothing of the volume is mounted in the host's namespace: below the container's
    // directory there is its root filesystem only, and nothing at all below the volume.
    let all = e2e::mounts::current_mounts().unwrap();
    let ctr_dir = env.pod_dir(&pod_id).join("ctrs").join(&id);
    let below: Vec<PathBuf> = e2e::mounts::mounts_under(&all, &ctr_dir)
        .into_iter()
        .map(|m| m.mount_point)
        .collect();
    assert_eq!(below, vec![ctr_dir.join("rootfs")]);
    assert_eq!(host.mounts(), 1, "only the host's own tmpfs");

    // The host takes its tmpfs away and removes the directory, as critest does.
    nix::mount::umount2(&tmpfs, nix::mount::MntFlags::MNT_DETACH).unwrap();
    std::fs::remove_dir_all(host.path()).expect("nothing on the host keeps the volume busy");
    assert_eq!(host.mounts(), 0);
    // The container is not disturbed.
    exec_ok(&mut rt, &id, "ls /mnt").await.unwrap();
}

/// `recursive_read_only`: read-only all the way down (the tmpfs below too); advertised in
/// Status; refused without `readonly` or with a propagation other than private.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_read_only_volumes() {
    let env = PodEnv::start(Store::Overlay).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let status = rt
        .status(k8s_cri::v1::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let handler = &status.runtime_handlers[0];
    assert!(
        handler
            .features
            .as_ref()
            .unwrap()
            .recursive_read_only_mounts,
        "{status:?}"
    );
    let pod = env.pod_config("rro");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let host = HostDir::new();
    host.tmpfs("tmpfs");
    let rro = Mount {
        readonly: true,
        recursive_read_only: true,
        ..volume(host.path(), "/mnt")
    };
    let mut cfg = container_config("rro", &env.images.one_layer, &["sleep", "3600"]);
    cfg.mounts = vec![rro.clone()];
    let id = env
        .run_container(&mut rt, &pod_id, &pod, cfg)
        .await
        .unwrap();
    wait_container_state(&mut rt, &id, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();
    for path in ["/mnt/x", "/mnt/tmpfs/x"] {
        let out = exec_ok(&mut rt, &id, &format!("touch {path} 2>&1 || true"))
            .await
            .unwrap();
        assert!(out.contains("Read-only file system"), "{path}: {out}");
    }
    let st = e2e::pods::container_status(&mut rt, &id).await.unwrap();
    assert!(
        st.mounts[0].recursive_read_only && st.mounts[0].readonly,
        "{st:?}"
    );
    // The host's tmpfs itself is still writable.
    std::fs::write(host.path().join("tmpfs/host"), "x").unwrap();

    for (name, bad) in [
        (
            "rro-rw",
            Mount {
                readonly: false,
                ..rro.clone()
            },
        ),
        (
            "rro-slave",
            Mount {
                propagation: MountPropagation::PropagationHostToContainer as i32,
                ..rro.clone()
            },
        ),
        (
            "rro-shared",
            Mount {
                propagation: MountPropagation::PropagationBidirectional as i32,
                ..rro.clone()
            },
        ),
    ] {
        let mut cfg = container_config(name, &env.images.one_layer, &["true"]);
        cfg.mounts = vec![bad];
        let (code, message) = status_code(env.create_container(&mut rt, &pod_id, &pod, cfg).await);
        assert_eq!(code, Code::InvalidArgument, "{name}: {message}");
        assert!(message.contains("recursive_read_only"), "{name}: {message}");
    }
}

/// Mount propagation through the pod's CT, as runc gives it: Private sees nothing the host
/// mounts later, HostToContainer does, Bidirectional also sends the container's mounts back
/// to the host. Each needs a host path on a mount that can propagate (containerd's rule).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_propagation_reaches_through_the_ct() {
    let env = PodEnv::start(Store::Overlay).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("propagation");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let source = HostDir::new();
    std::fs::write(source.path().join("flag"), "x").unwrap();

    for (name, propagation, host_to_ctr, ctr_to_host) in [
        (
            "private",
            MountPropagation::PropagationPrivate,
            false,
            false,
        ),
        (
            "slave",
            MountPropagation::PropagationHostToContainer,
            true,
            false,
        ),
        (
            "shared",
            MountPropagation::PropagationBidirectional,
            true,
            true,
        ),
    ] {
        let host = HostDir::new();
        host.self_bind(MsFlags::MS_SHARED);
        let vol = host.path().join("vol");
        std::fs::create_dir_all(vol.join("from-host")).unwrap();
        let mut cfg = with_security(
            container_config(name, &env.images.one_layer, &["sleep", "3600"]),
            LinuxContainerSecurityContext {
                privileged: true,
                ..Default::default()
            },
        );
        cfg.mounts = vec![Mount {
            propagation: propagation as i32,
            ..volume(&vol, "/vol")
        }];
        let id = env
            .run_container(&mut rt, &pod_id, &pod, cfg)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        wait_container_state(&mut rt, &id, ContainerState::ContainerRunning, RUNNING)
            .await
            .unwrap();
        let st = e2e::pods::container_status(&mut rt, &id).await.unwrap();
        assert_eq!(st.mounts[0].propagation, propagation as i32, "{name}");

        // The host mounts something below the volume after the container started.
        nix::mount::mount(
            Some(source.path()),
            &vol.join("from-host"),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        let seen = exec_ok(&mut rt, &id, "ls -A /vol/from-host").await.unwrap();
        assert_eq!(
            seen.contains("flag"),
            host_to_ctr,
            "{name}: host -> container: {seen:?}"
        );

        // The container mounts something below the volume.
        exec_ok(
            &mut rt,
            &id,
            "mkdir -p /vol/from-ctr && mount --bind /etc /vol/from-ctr",
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let on_host: Vec<_> = std::fs::read_dir(vol.join("from-ctr")).unwrap().collect();
        assert_eq!(
            !on_host.is_empty(),
            ctr_to_host,
            "{name}: container -> host: {on_host:?}"
        );
        rt.remove_container(k8s_cri::v1::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    }

    // HostToContainer and Bidirectional need a host mount that propagates.
    let private = HostDir::new();
    private.self_bind(MsFlags::MS_PRIVATE);
    for (name, propagation) in [
        (
            "private-slave",
            MountPropagation::PropagationHostToContainer,
        ),
        ("private-shared", MountPropagation::PropagationBidirectional),
    ] {
        let mut cfg = container_config(name, &env.images.one_layer, &["true"]);
        cfg.mounts = vec![Mount {
            propagation: propagation as i32,
            ..volume(private.path(), "/vol")
        }];
        let (code, message) = status_code(env.create_container(&mut rt, &pod_id, &pod, cfg).await);
        assert_eq!(code, Code::FailedPrecondition, "{name}: {message}");
        assert!(message.contains("--make-rshared"), "{name}: {message}");
    }
}

fn localhost_profile(path: &Path) -> Option<k8s_cri::v1::SecurityProfile> {
    Some(k8s_cri::v1::SecurityProfile {
        profile_type: k8s_cri::v1::security_profile::ProfileType::Localhost as i32,
        localhost_ref: path.display().to_string(),
    })
}

/// `Localhost` seccomp profiles in the Docker/containerd format: enforced in the container
/// and its execs, rules chosen by the container's capabilities, ignored for a privileged
/// container; a missing or bad file is refused at create, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localhost_seccomp_profiles() {
    let env = PodEnv::start(Store::Overlay).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("seccomp");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    // chmod is denied unless the container holds CAP_SYS_ADMIN (an `excludes` rule).
    let chmod = write(
        "block-chmod.json",
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["chmod", "fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO",
                          "excludes": {"caps": ["CAP_SYS_ADMIN"]}}]}"#,
    );
    let hostname = write(
        "block-hostname.json",
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO"}]}"#,
    );
    let sleep = ["sleep", "3600"];
    let run = |name: &str, sc: LinuxContainerSecurityContext| {
        with_security(container_config(name, &env.images.one_layer, &sleep), sc)
    };
    let admin = || {
        Some(k8s_cri::v1::Capability {
            add_capabilities: vec!["SYS_ADMIN".into()],
            ..Default::default()
        })
    };
    let cases = [
        (
            run(
                "chmod-denied",
                LinuxContainerSecurityContext {
                    seccomp: localhost_profile(&chmod),
                    ..Default::default()
                },
            ),
            "chmod 400 /tmp 2>&1 || true",
            Some("Operation not permitted"),
        ),
        (
            run(
                "chmod-admin",
                LinuxContainerSecurityContext {
                    seccomp: localhost_profile(&chmod),
                    capabilities: admin(),
                    ..Default::default()
                },
            ),
            "chmod 400 /tmp 2>&1 && echo changed",
            None,
        ),
        (
            run(
                "hostname-denied",
                LinuxContainerSecurityContext {
                    seccomp: localhost_profile(&hostname),
                    capabilities: admin(),
                    ..Default::default()
                },
            ),
            "hostname seccomp-test 2>&1 || true",
            Some("Operation not permitted"),
        ),
        (
            run(
                "hostname-privileged",
                LinuxContainerSecurityContext {
                    seccomp: localhost_profile(&hostname),
                    privileged: true,
                    ..Default::default()
                },
            ),
            "hostname seccomp && echo changed",
            None,
        ),
    ];
    for (cfg, script, denied) in cases {
        let name = cfg.metadata.as_ref().unwrap().name.clone();
        let id = env
            .run_container(&mut rt, &pod_id, &pod, cfg)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        wait_container_state(&mut rt, &id, ContainerState::ContainerRunning, RUNNING)
            .await
            .unwrap();
        let out = exec_ok(&mut rt, &id, script).await.unwrap();
        match denied {
            Some(msg) => assert!(out.contains(msg), "{name}: {out}"),
            None => assert!(out.contains("changed"), "{name}: {out}"),
        }
        let status = exec_ok(&mut rt, &id, "grep Seccomp: /proc/self/status")
            .await
            .unwrap();
        let want = if name.ends_with("privileged") {
            "0"
        } else {
            "2"
        };
        assert!(status.trim().ends_with(want), "{name}: {status}");
    }

    // Files that cannot be read or applied are refused at create, naming the file.
    let bad_json = write("bad.json", "{\"defaultAction\": ");
    let notify = write("notify.json", r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#);
    for (file, code, needle) in [
        (
            dir.path().join("missing.json"),
            Code::FailedPrecondition,
            "No such file",
        ),
        (bad_json, Code::InvalidArgument, "not JSON"),
        (notify, Code::InvalidArgument, "SCMP_ACT_NOTIFY"),
    ] {
        let cfg = run(
            "refused",
            LinuxContainerSecurityContext {
                seccomp: localhost_profile(&file),
                ..Default::default()
            },
        );
        let (got, message) = status_code(env.create_container(&mut rt, &pod_id, &pod, cfg).await);
        assert_eq!(got, code, "{message}");
        assert!(
            message.contains(&file.display().to_string()) && message.contains(needle),
            "{message}"
        );
    }
}

/// busybox whose user `app` (1000, group 1000) is also in group 50000 of its /etc/group.
async fn push_group_image(env: &PodEnv) -> String {
    use e2e::images::{self, Compression, ImageFormat, LayerBuilder, TestImage};
    let mut groups = LayerBuilder::new();
    groups.file(
        "etc/group",
        format!("{}group-in-image:x:50000:app\n", images::GROUP),
        0o644,
    );
    let config = serde_json::json!({
        "architecture": images::host_arch(),
        "os": "linux",
        "created": images::CREATED,
        "config": { "Env": [images::DEFAULT_PATH], "Cmd": ["sh"], "User": "1000" },
    });
    let image = TestImage::build(
        "groups",
        ImageFormat::Oci(Compression::Gzip),
        config,
        &[images::busybox_layer().unwrap(), groups],
    )
    .unwrap();
    image.push(&env.registry, "groups", "latest").await.unwrap();
    format!("{}/groups:latest", env.registry.addr())
}

/// SupplementalGroupsPolicy: `Merge` (the default) adds the image's groups of the user to the
/// requested ones, `Strict` does not; ContainerStatus.user says what the process got, and
/// the process and its execs have exactly that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supplemental_groups_policies() {
    let env = PodEnv::start(Store::Overlay).await.unwrap();
    let image = push_group_image(&env).await;
    env.pull(&image).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let status = rt
        .status(k8s_cri::v1::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(status.features.unwrap().supplemental_groups_policy);
    let pod = env.pod_config("groups");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    for (name, policy, want) in [
        (
            "merge",
            SupplementalGroupsPolicy::Merge,
            vec![1000, 1234, 50000],
        ),
        ("strict", SupplementalGroupsPolicy::Strict, vec![1000, 1234]),
    ] {
        let cfg = with_security(
            container_config(name, &image, &["sh", "-c", "id -G; sleep 3600"]),
            LinuxContainerSecurityContext {
                run_as_user: Some(Int64Value { value: 1000 }),
                supplemental_groups: vec![1234],
                supplemental_groups_policy: policy as i32,
                ..Default::default()
            },
        );
        let id = env
            .run_container(&mut rt, &pod_id, &pod, cfg)
            .await
            .unwrap();
        let st = wait_container_state(&mut rt, &id, ContainerState::ContainerRunning, RUNNING)
            .await
            .unwrap();
        let user = st.user.unwrap().linux.unwrap();
        let mut groups = user.supplemental_groups.clone();
        groups.sort_unstable();
        assert_eq!(
            (user.uid, user.gid, groups),
            (1000, 1000, want.clone()),
            "{name}"
        );
        let line = want
            .iter()
            .map(|g| g.to_string())
            .collect::<Vec<_>>()
            .join(" ")
            + "\n";
        assert_eq!(
            exec_ok(&mut rt, &id, "id -G").await.unwrap(),
            line,
            "{name}: exec"
        );
        let log = std::path::Path::new(&pod.log_directory).join(format!("{name}/0.log"));
        let first = e2e::pods::eventually("the first line of the log", RUNNING, || {
            let log = log.clone();
            async move {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let lines = e2e::pods::parse_cri_log(&text)?;
                Ok(e2e::pods::full_lines(&lines, "stdout").into_iter().next())
            }
        })
        .await
        .unwrap();
        assert_eq!(first + "\n", line, "{name}: the first process");
    }
    // A policy this runtime does not know is refused.
    let cfg = with_security(
        container_config("unknown-policy", &image, &["id"]),
        LinuxContainerSecurityContext {
            supplemental_groups_policy: 9,
            ..Default::default()
        },
    );
    let (code, message) = status_code(env.create_container(&mut rt, &pod_id, &pod, cfg).await);
    assert_eq!(code, Code::InvalidArgument, "{message}");
}
