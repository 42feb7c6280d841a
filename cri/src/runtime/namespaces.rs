//! Which of the host's namespaces a pod shares, from the CRI's `NamespaceOption`, and whether
//! a container's own options fit its pod.
//!
//! A pod is one CT, and its containers can only have what the CT has: a container in the
//! host's PID or IPC namespace needs a pod that keeps them (`hostPID`, `hostIPC`); the pod
//! host then keeps the CT in those namespaces (see `pve::PodSpec::host_pid`).

use k8s_cri::v1::{NamespaceMode, NamespaceOption, PodSandboxConfig};

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
