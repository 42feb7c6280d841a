//! Which of the host's namespaces a pod shares, from the CRI's `NamespaceOption`, and whether
//! a container's own options fit its pod.
//!
//! A pod is one CT, and its containers can only have what the CT has: a container in the
//! host's PID or IPC namespace needs a pod that keeps them (`hostPID`, `hostIPC`); the pod
//! host then keeps the CT in those namespaces (see `pve::PodSpec::host_pid`). A pod with its
//! own user namespace (`hostUsers: false`, mode POD) is an unprivileged CT with the ID map
//! the kubelet gives, checked by containerd's rules.

use k8s_cri::v1::{IdMapping, NamespaceMode, NamespaceOption, PodSandboxConfig};
use pve::{IdMap, IdRange};

use super::error::{Result, RuntimeError};

/// The host namespaces a pod shares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostNamespaces {
    pub network: bool,
    pub pid: bool,
    pub ipc: bool,
}

fn pod_options(config: &PodSandboxConfig) -> Option<&NamespaceOption> {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
}

/// The pod's host namespaces; refuses modes a pod cannot have. CONTAINER network or IPC,
/// which the kubelet never sends, means the pod's own, as in containerd.
pub fn of_pod(config: &PodSandboxConfig) -> Result<HostNamespaces> {
    let Some(ns) = pod_options(config) else {
        return Ok(HostNamespaces::default());
    };
    for (what, mode) in [
        ("network", ns.network()),
        ("PID", ns.pid()),
        ("IPC", ns.ipc()),
    ] {
        if mode == NamespaceMode::Target {
            return Err(RuntimeError::invalid(format!(
                "pod {what} namespace mode TARGET is for containers, not pods"
            )));
        }
    }
    Ok(HostNamespaces {
        network: ns.network() == NamespaceMode::Node,
        pid: ns.pid() == NamespaceMode::Node,
        ipc: ns.ipc() == NamespaceMode::Node,
    })
}

/// The pod's user namespace: `None` for the host's (mode NODE, the default), else the ID map
/// of its unprivileged CT. As containerd: NODE takes no mappings; POD takes exactly one
/// mapping each for uids and gids, which must map container id 0; CONTAINER and TARGET are
/// refused. Without mappings (a client other than the kubelet) POD gets Proxmox's default
/// map, 0 -> 100000 for 65536 ids. A user namespace cannot go with host namespaces (the
/// kubelet refuses that combination too).
pub fn user_namespace(config: &PodSandboxConfig) -> Result<Option<IdMap>> {
    let Some(ns) = pod_options(config) else {
        return Ok(None);
    };
    let Some(userns) = &ns.userns_options else {
        return Ok(None);
    };
    let mode = userns.mode();
    match mode {
        NamespaceMode::Node => {
            if !userns.uids.is_empty() || !userns.gids.is_empty() {
                return Err(RuntimeError::invalid(format!(
                    "user namespace mode NODE takes no ID mappings, got {} uid and {} gid \
                     mappings",
                    userns.uids.len(),
                    userns.gids.len()
                )));
            }
            return Ok(None);
        }
        NamespaceMode::Pod => {}
        NamespaceMode::Container | NamespaceMode::Target => {
            return Err(RuntimeError::invalid(format!(
                "user namespace mode {} is not supported: a pod's containers share its user \
                 namespace (use POD or NODE)",
                mode.as_str_name()
            )));
        }
    }
    let host = of_pod(config)?;
    if host.network || host.pid || host.ipc {
        return Err(RuntimeError::invalid(
            "a pod with its own user namespace cannot use the host's network, PID or IPC \
             namespace",
        ));
    }
    let map = match (userns.uids.as_slice(), userns.gids.as_slice()) {
        ([], []) => IdMap::PROXMOX_DEFAULT,
        (uids, gids) => IdMap {
            uid: one_range("uid", uids)?,
            gid: one_range("gid", gids)?,
        },
    };
    map.validate()
        .map_err(|e| RuntimeError::invalid(format!("user namespace: {e}")))?;
    Ok(Some(map))
}

/// The ID map a container's root filesystem and volumes must show in a pod with `map`.
pub fn rootfs_idmap(map: &IdMap) -> layerfs::idmap::IdMap {
    let range = |r: IdRange| layerfs::idmap::IdRange {
        host: r.host,
        count: r.count,
    };
    layerfs::idmap::IdMap {
        uid: range(map.uid),
        gid: range(map.gid),
    }
}

fn one_range(what: &str, mappings: &[IdMapping]) -> Result<IdRange> {
    let [m] = mappings else {
        return Err(RuntimeError::invalid(format!(
            "user namespace mode POD needs exactly one {what} mapping, got {}",
            mappings.len()
        )));
    };
    if m.container_id != 0 {
        return Err(RuntimeError::invalid(format!(
            "user namespace: the {what} mapping must start at container id 0 (root), not {}",
            m.container_id
        )));
    }
    Ok(IdRange {
        host: m.host_id,
        count: m.length,
    })
}

/// Refuses a container that asks for a host PID or IPC namespace its pod does not keep: it
/// runs inside the pod's CT and can only have the CT's.
pub fn check_container(pod: HostNamespaces, ns: Option<&NamespaceOption>) -> Result<()> {
    let Some(ns) = ns else { return Ok(()) };
    if ns.pid() == NamespaceMode::Node && !pod.pid {
        return Err(RuntimeError::invalid(
            "the container asks for the host PID namespace, but its pod sandbox was not \
             created with one (hostPID)",
        ));
    }
    if ns.ipc() == NamespaceMode::Node && !pod.ipc {
        return Err(RuntimeError::invalid(
            "the container asks for the host IPC namespace, but its pod sandbox was not \
             created with one (hostIPC)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{LinuxPodSandboxConfig, LinuxSandboxSecurityContext};

    fn pod(network: NamespaceMode, pid: NamespaceMode, ipc: NamespaceMode) -> PodSandboxConfig {
        PodSandboxConfig {
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: network as i32,
                        pid: pid as i32,
                        ipc: ipc as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    use NamespaceMode::{Container, Node, Pod, Target};

    #[test]
    fn pod_modes() {
        assert_eq!(
            of_pod(&PodSandboxConfig::default()).unwrap(),
            HostNamespaces::default()
        );
        assert_eq!(
            of_pod(&pod(Node, Node, Node)).unwrap(),
            HostNamespaces {
                network: true,
                pid: true,
                ipc: true
            }
        );
        assert_eq!(
            of_pod(&pod(Pod, Container, Pod)).unwrap(),
            HostNamespaces::default(),
            "CONTAINER pid: each container its own, inside the pod's CT"
        );
        assert_eq!(
            of_pod(&pod(Container, Pod, Container)).unwrap(),
            HostNamespaces::default()
        );
        for bad in [
            pod(Target, Pod, Pod),
            pod(Pod, Target, Pod),
            pod(Pod, Pod, Target),
        ] {
            assert_eq!(of_pod(&bad).unwrap_err().code, tonic::Code::InvalidArgument);
        }
    }

    fn userns_pod(
        mode: NamespaceMode,
        uids: &[(u32, u32, u32)],
        gids: &[(u32, u32, u32)],
    ) -> PodSandboxConfig {
        let maps = |v: &[(u32, u32, u32)]| {
            v.iter()
                .map(|&(container_id, host_id, length)| IdMapping {
                    host_id,
                    container_id,
                    length,
                })
                .collect()
        };
        let mut c = pod(Pod, Pod, Pod);
        c.linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .and_then(|s| s.namespace_options.as_mut())
            .unwrap()
            .userns_options = Some(k8s_cri::v1::UserNamespace {
            mode: mode as i32,
            uids: maps(uids),
            gids: maps(gids),
        });
        c
    }

    #[test]
    fn user_namespaces_follow_containerd_s_rules() {
        assert_eq!(user_namespace(&PodSandboxConfig::default()).unwrap(), None);
        assert_eq!(user_namespace(&userns_pod(Node, &[], &[])).unwrap(), None);
        // critest's mapping, and the kubelet's.
        let map = user_namespace(&userns_pod(
            Pod,
            &[(0, 1000, 100_000)],
            &[(0, 1000, 100_000)],
        ))
        .unwrap()
        .unwrap();
        assert_eq!(map.root(), (1000, 1000));
        assert_eq!(map.uid.count, 100_000);
        let map = user_namespace(&userns_pod(
            Pod,
            &[(0, 65_536, 65_536)],
            &[(0, 131_072, 65_536)],
        ))
        .unwrap()
        .unwrap();
        assert_eq!(map.root(), (65_536, 131_072));
        assert_eq!(
            user_namespace(&userns_pod(Pod, &[], &[])).unwrap(),
            Some(IdMap::PROXMOX_DEFAULT),
            "no mappings: Proxmox's default"
        );
        let one = [(0, 1000, 100_000)];
        let bad: Vec<(PodSandboxConfig, &str)> = vec![
            (userns_pod(Node, &one, &one), "NODE"),
            (
                userns_pod(Pod, &[(0, 1000, 100_000), (0, 2000, 100_000)], &one),
                "exactly one",
            ),
            (userns_pod(Pod, &one, &[]), "exactly one gid"),
            (
                userns_pod(Pod, &[(1, 1000, 100_000)], &[(1, 1000, 100_000)]),
                "container id 0",
            ),
            (userns_pod(Pod, &[(0, 1000, 0)], &one), "empty"),
            (userns_pod(Pod, &[(0, 0, 65_536)], &one), "host's root"),
            (
                userns_pod(Pod, &[(0, u32::MAX - 10, 65_536)], &one),
                "last id",
            ),
            (userns_pod(Container, &[], &[]), "CONTAINER"),
            (userns_pod(Target, &[], &[]), "TARGET"),
        ];
        for (config, needle) in bad {
            let e = user_namespace(&config).unwrap_err();
            assert_eq!(e.code, tonic::Code::InvalidArgument, "{needle}");
            assert!(e.message.contains(needle), "{needle}: {}", e.message);
        }
        let mut hostnet = userns_pod(Pod, &one, &one);
        hostnet
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .and_then(|s| s.namespace_options.as_mut())
            .unwrap()
            .network = Node as i32;
        assert!(
            user_namespace(&hostnet)
                .unwrap_err()
                .message
                .contains("host's network")
        );
    }

    #[test]
    fn containers_get_only_what_their_pod_keeps() {
        let host_pid = NamespaceOption {
            pid: Node as i32,
            ..Default::default()
        };
        let host_ipc = NamespaceOption {
            ipc: Node as i32,
            ..Default::default()
        };
        let plain = HostNamespaces::default();
        check_container(plain, None).unwrap();
        check_container(plain, Some(&NamespaceOption::default())).unwrap();
        let e = check_container(plain, Some(&host_pid)).unwrap_err();
        assert_eq!(e.code, tonic::Code::InvalidArgument);
        assert!(e.message.contains("hostPID"), "{}", e.message);
        assert!(check_container(plain, Some(&host_ipc)).is_err());
        let all = HostNamespaces {
            network: false,
            pid: true,
            ipc: true,
        };
        check_container(all, Some(&host_pid)).unwrap();
        check_container(all, Some(&host_ipc)).unwrap();
    }
}
