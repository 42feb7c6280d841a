//! Which pod sysctls a CT may set.
//!
//! LXC writes `lxc.sysctl.*` keys inside the CT, but a sysctl that is not namespaced changes
//! the whole host. The rules are runc's (`libcontainer/configs/validate`): the IPC sysctls,
//! `fs.mqueue.*`, the UTS names, and `net.*` only when the pod has its own network namespace.

use std::collections::BTreeMap;

use crate::spec::NetworkMode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SysctlError {
    #[error("sysctl `{0}`: name must be made of [A-Za-z0-9_.-] with no empty parts")]
    BadName(String),
    #[error("sysctl `{0}`: value must be non-empty, without control characters")]
    BadValue(String),
    #[error("sysctl `{0}` is not namespaced: it would change the host")]
    NotNamespaced(String),
    #[error("sysctl `{0}` needs the pod's own network namespace (the pod uses the host's)")]
    HostNetwork(String),
}

const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];
const UTS_SYSCTLS: &[&str] = &["kernel.domainname", "kernel.hostname"];

/// The dotted form of a sysctl name. Kubernetes also accepts the slash form
/// (`net/ipv4/conf/eth0.100/forwarding`), in which dots and slashes trade places.
pub fn normalize(name: &str) -> String {
    match name.find(['.', '/']) {
        Some(i) if name.as_bytes()[i] == b'/' => name
            .chars()
            .map(|c| match c {
                '/' => '.',
                '.' => '/',
                c => c,
            })
            .collect(),
        _ => name.to_string(),
    }
}

/// Checks one sysctl (name already normalized) for a pod with the given network.
pub fn validate(name: &str, value: &str, network: NetworkMode) -> Result<(), SysctlError> {
    let name_ok = !name.is_empty()
        && name.split('.').all(|part| !part.is_empty())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !name_ok {
        return Err(SysctlError::BadName(name.to_string()));
    }
    if value.trim().is_empty() || value.chars().any(char::is_control) {
        return Err(SysctlError::BadValue(name.to_string()));
    }
    if IPC_SYSCTLS.contains(&name) || name.starts_with("fs.mqueue.") || UTS_SYSCTLS.contains(&name)
    {
        return Ok(());
    }
    if name.starts_with("net.") {
        return match network {
            NetworkMode::Isolated => Ok(()),
            NetworkMode::Host => Err(SysctlError::HostNetwork(name.to_string())),
        };
    }
    Err(SysctlError::NotNamespaced(name.to_string()))
}

pub fn validate_all(
    sysctls: &BTreeMap<String, String>,
    network: NetworkMode,
) -> Result<(), SysctlError> {
    sysctls
        .iter()
        .try_for_each(|(name, value)| validate(&normalize(name), value, network))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn slash_form_is_converted() {
        assert_eq!(
            normalize("net/ipv4/conf/eth0.100/forwarding"),
            "net.ipv4.conf.eth0/100.forwarding"
        );
        assert_eq!(normalize("net.ipv4.ip_forward"), "net.ipv4.ip_forward");
    }

    #[test]
    fn namespaced_sysctls_pass() {
        for name in [
            "kernel.shmmax",
            "fs.mqueue.msg_max",
            "kernel.hostname",
            "net.ipv4.ip_forward",
        ] {
            validate(name, "1", NetworkMode::Isolated).unwrap();
        }
    }

    #[test]
    fn host_wide_sysctls_are_refused() {
        for name in ["kernel.panic", "vm.overcommit_memory", "fs.file-max"] {
            assert_eq!(
                validate(name, "1", NetworkMode::Isolated),
                Err(SysctlError::NotNamespaced(name.to_string()))
            );
        }
    }

    #[test]
    fn net_sysctls_need_the_pods_own_netns() {
        assert!(matches!(
            validate("net.ipv4.ip_forward", "1", NetworkMode::Host),
            Err(SysctlError::HostNetwork(_))
        ));
    }

    #[test]
    fn names_and_values_that_would_break_the_config_are_refused() {
        assert!(matches!(
            validate(
                "net.ipv4.conf.eth0/100.forwarding",
                "1",
                NetworkMode::Isolated
            ),
            Err(SysctlError::BadName(_))
        ));
        assert!(matches!(
            validate("net..x", "1", NetworkMode::Isolated),
            Err(SysctlError::BadName(_))
        ));
        assert!(matches!(
            validate("net.x = 1\nlxc.init.cmd", "1", NetworkMode::Isolated),
            Err(SysctlError::BadName(_))
        ));
        assert!(matches!(
            validate("net.x", "", NetworkMode::Isolated),
            Err(SysctlError::BadValue(_))
        ));
        assert!(matches!(
            validate("net.x", "1\nlxc.init.cmd = /bin/sh", NetworkMode::Isolated),
            Err(SysctlError::BadValue(_))
        ));
    }

    proptest! {
        #[test]
        fn accepted_sysctls_render_as_one_line(name in ".{0,30}", value in ".{0,30}") {
            let name = normalize(&name);
            if validate(&name, &value, NetworkMode::Isolated).is_ok() {
                let line = format!("lxc.sysctl.{name} = {value}");
                prop_assert!(!line.contains('\n') && !line.contains('\r'));
                prop_assert!(!name.contains('/') && !name.contains(' ') && !name.contains('='));
            }
        }
    }
}
