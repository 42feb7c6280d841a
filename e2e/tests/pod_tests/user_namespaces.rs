//! The bodies of the user-namespace tests: pods with their own user namespace
//! (`hostUsers: false`) as unprivileged CTs with the ID map the kubelet gives, image files
//! shown as the container's own, idmapped volumes, and the mappings refused as containerd
//! refuses them. `tests/user_namespaces.rs` runs them with the lxc driver on both stores,
//! `tests/pve.rs` with the pve driver.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use e2e::pods::{PodEnv, Setup, container_config, exec_ok, wait_container_state};
use k8s_cri::v1::{
    ContainerState, IdMapping, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, Mount,
    NamespaceMode, NamespaceOption, PodSandboxConfig, RunPodSandboxRequest, StatusRequest,
    UserNamespace,
};

const RUNNING: Duration = Duration::from_secs(20);

fn mapping(container_id: u32, host_id: u32, length: u32) -> IdMapping {
    IdMapping {
        host_id,
        container_id,
        length,
    }
}

fn with_userns(
    mut pod: PodSandboxConfig,
    userns: UserNamespace,
    network: NamespaceMode,
) -> PodSandboxConfig {
    pod.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            namespace_options: Some(NamespaceOption {
                network: network as i32,
                userns_options: Some(userns),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    pod
}

/// The kubelet's kind of mapping: one range of 65536 ids at a multiple of 65536 (a random
/// one, as pods of one node get distinct ranges), users and groups apart here to tell them
/// apart.
fn kubelet_userns() -> (UserNamespace, u32, u32) {
    let uid_host = 65_536 * (2 + rand::random::<u32>() % 1000);
    let gid_host = uid_host + 65_536 * 1000;
    (
        UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids: vec![mapping(0, uid_host, 65_536)],
            gids: vec![mapping(0, gid_host, 65_536)],
        },
        uid_host,
        gid_host,
    )
}

/// The real uids (as the host sees them) of the processes running exactly `cmdline`.
fn host_uids_of(cmdline: &str) -> Vec<u32> {
    let mut uids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&raw).replace('\0', " ").trim_end() != cmdline {
            continue;
        }
        if let Ok(status) = std::fs::read_to_string(entry.path().join("status"))
            && let Some(line) = status.lines().find(|l| l.starts_with("Uid:"))
        {
            uids.push(line.split_whitespace().nth(1).unwrap().parse().unwrap());
        }
    }
    uids
}

pub async fn a_user_namespace_pod_owns_its_image_and_volumes(setup: Setup) {
    let env = PodEnv::start(setup).await.unwrap();
    env.pull(&env.images.multi_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let status = rt
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(
        status.runtime_handlers[0]
            .features
            .as_ref()
            .unwrap()
            .user_namespaces,
        "user namespaces are advertised"
    );

    let (userns, uid_host, gid_host) = kubelet_userns();
    let pod = with_userns(env.pod_config("userns"), userns, NamespaceMode::Pod);
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    // A volume on the host, owned by host root: the container's root owns it.
    let vol = tempfile::Builder::new()
        .prefix("pvecri-userns-vol-")
        .tempdir()
        .unwrap();
    std::fs::write(vol.path().join("from-host"), "host\n").unwrap();
    let mut cfg = container_config("c", &env.images.multi_layer, &["sleep", "3603"]);
    cfg.mounts = vec![Mount {
        host_path: vol.path().display().to_string(),
        container_path: "/vol".to_string(),
        ..Default::default()
    }];
    let id = env
        .run_container(&mut rt, &pod_id, &pod, cfg)
        .await
        .unwrap();
    wait_container_state(&mut rt, &id, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();

    // The kubelet's map, exactly.
    let maps = exec_ok(&mut rt, &id, "cat /proc/self/uid_map /proc/self/gid_map")
        .await
        .unwrap();
    let fields: Vec<Vec<&str>> = maps
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        fields,
        [
            vec!["0".to_string(), uid_host.to_string(), "65536".to_string()],
            vec!["0".to_string(), gid_host.to_string(), "65536".to_string()],
        ]
    );
    // Root of the container, owning the image's files as the image says, modes intact.
    let seen = exec_ok(
        &mut rt,
        &id,
        "id -u; stat -c '%u:%g %a %n' /bin/busybox /data/owned.txt /home/app/owned.txt \
         /usr/bin/suidprog /usr/bin/sgidprog; stat -c %i /link/target.txt /link/hard.txt",
    )
    .await
    .unwrap();
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(
        &lines[..6],
        [
            "0",
            "0:0 755 /bin/busybox",
            "4242:4343 640 /data/owned.txt",
            "1000:1000 640 /home/app/owned.txt",
            "0:0 4755 /usr/bin/suidprog",
            "0:42 2755 /usr/bin/sgidprog",
        ],
        "{seen}"
    );
    assert_eq!(lines[6], lines[7], "a hard link stays one inode");
    // It may write where root may: its image, and the volume.
    exec_ok(
        &mut rt,
        &id,
        "echo written > /etc/written && cat /vol/from-host && echo ctr > /vol/from-ctr && \
         chown 1000:1000 /vol/from-ctr && echo '10.9.9.9 extra' >> /etc/hosts",
    )
    .await
    .unwrap();
    // On the host: the container's processes and files carry the mapped ids; the volume's
    // files stay the host's own (idmapped, not chowned).
    let rootfs = env.node_path(&env.pod_dir(&pod_id).join("ctrs").join(&id).join("rootfs"));
    let meta = std::fs::metadata(rootfs.join("etc/written")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (uid_host, gid_host));
    let meta = std::fs::metadata(rootfs.join("data/owned.txt")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (uid_host + 4242, gid_host + 4343));
    let meta = std::fs::metadata(vol.path().join("from-ctr")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1000, 1000));
    let meta = std::fs::metadata(vol.path().join("from-host")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    let uids = host_uids_of("sleep 3603");
    assert_eq!(
        uids,
        [uid_host],
        "the container's process runs as the mapped root"
    );

    // The layers are shared and untouched: a host-users pod sees the image's owners.
    let plain = env.pod_config("plain");
    let plain_id = env.run_pod(&mut rt, &plain).await.unwrap();
    let c2 = env
        .run_container(
            &mut rt,
            &plain_id,
            &plain,
            container_config("c2", &env.images.multi_layer, &["sleep", "3604"]),
        )
        .await
        .unwrap();
    wait_container_state(&mut rt, &c2, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();
    let c2_rootfs = env.node_path(&env.pod_dir(&plain_id).join("ctrs").join(&c2).join("rootfs"));
    let meta = std::fs::metadata(c2_rootfs.join("data/owned.txt")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (4242, 4343));
    assert_eq!(
        exec_ok(&mut rt, &c2, "cat /proc/self/uid_map")
            .await
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["0", "0", "4294967295"]
    );
}

/// Mappings and modes containerd refuses are refused with InvalidArgument before anything
/// is made; without mappings a POD user namespace gets Proxmox's default map.
pub async fn bad_user_namespaces_are_refused(setup: Setup) {
    let env = PodEnv::start(setup).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let one = vec![mapping(0, 65_536, 65_536)];
    let bad = [
        (
            "two mappings",
            UserNamespace {
                mode: NamespaceMode::Pod as i32,
                uids: vec![mapping(0, 65_536, 65_536), mapping(0, 131_072, 65_536)],
                gids: one.clone(),
            },
            NamespaceMode::Pod,
        ),
        (
            "root unmapped",
            UserNamespace {
                mode: NamespaceMode::Pod as i32,
                uids: vec![mapping(1, 65_536, 65_536)],
                gids: vec![mapping(1, 65_536, 65_536)],
            },
            NamespaceMode::Pod,
        ),
        (
            "NODE with mappings",
            UserNamespace {
                mode: NamespaceMode::Node as i32,
                uids: one.clone(),
                gids: one.clone(),
            },
            NamespaceMode::Pod,
        ),
        (
            "CONTAINER",
            UserNamespace {
                mode: NamespaceMode::Container as i32,
                ..Default::default()
            },
            NamespaceMode::Pod,
        ),
        (
            "host network",
            UserNamespace {
                mode: NamespaceMode::Pod as i32,
                uids: one.clone(),
                gids: one.clone(),
            },
            NamespaceMode::Node,
        ),
    ];
    for (what, userns, network) in bad {
        let pod = with_userns(env.pod_config("bad"), userns, network);
        let err = rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{what}: {err:?}");
    }
    assert!(
        std::fs::read_dir(env.daemon.state_dir.join("lxc"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "nothing was made"
    );

    let pod = with_userns(
        env.pod_config("default-map"),
        UserNamespace {
            mode: NamespaceMode::Pod as i32,
            ..Default::default()
        },
        NamespaceMode::Pod,
    );
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let id = env
        .run_container(
            &mut rt,
            &pod_id,
            &pod,
            container_config("c", &env.images.one_layer, &["sleep", "3605"]),
        )
        .await
        .unwrap();
    wait_container_state(&mut rt, &id, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();
    let map = exec_ok(&mut rt, &id, "cat /proc/self/uid_map")
        .await
        .unwrap();
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"]
    );
}
