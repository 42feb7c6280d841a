//! The raw `lxc.*` keys pvecri adds to a pod CT's Proxmox config: what the API cannot set.
//!
//! Proxmox generates the rest of the LXC config at every start (`update_lxc_config`: cgroup
//! `lxc/<vmid>`, `common.conf`, AppArmor and seccomp, idmap for unprivileged CTs, memory and
//! CPU limits from `memory`/`cpulimit`/`cpuunits`) and appends these keys after its own, so
//! they win where both set something. They make the CT what the `lxc` driver's CTs are (see
//! `lxc/render.rs` and the crate docs for what podinit relies on):
//! * podinit as init, halted with SIGTERM;
//! * the pod directory bound at `/pvecri` (rslave: the daemon's later mounts appear inside),
//!   a pod-wide `/dev/shm`;
//! * a network namespace with only `lo` (CNI adds the pod's interface; no `net0`), or the
//!   host's for hostNetwork pods;
//! * writable cgroups (podinit makes one child per container), all devices, all
//!   capabilities, no seccomp and no AppArmor confinement for the CT itself: podinit applies
//!   each container's restrictions, which `common.conf`'s defaults would otherwise cap
//!   (device access, `sys_time`, `sys_module`, ...) or break (mount, pivot_root);
//! * podinit's console output in a log file of pvecri's, for error reports.
//!
//! Sysctls are not here: Proxmox accepts `lxc.sysctl.*` only for a few IPC names, so the
//! driver writes them inside the CT's namespaces after start.
//!
//! Host namespaces (`hostPID`, `hostIPC`): Proxmox refuses `lxc.namespace.*` keys, but passes
//! `lxc.include` to LXC as it is; the `lxc.namespace.keep` line (the `lxc` driver's, see
//! [`kept_namespaces`]) goes into a file of pvecri's that the config includes. A `hostIPC`
//! pod's `/dev/shm` is the host's, bound, and podinit is told so (`--host-ipc`).

use std::path::Path;

use crate::cgroup::Layout;
use crate::lxc::render::{POD_DIR_IN_CT, SHM_SIZE_BYTES, kept_namespaces, podinit_command};
use crate::mountinfo::escape;
use crate::spec::{IdMap, NetworkMode};

pub struct RawInput<'a> {
    pub pod_dir: &'a Path,
    /// An unprivileged CT's ID map (written out even when it is Proxmox's default, which
    /// Proxmox then does not add).
    pub idmap: Option<IdMap>,
    pub network: NetworkMode,
    pub host_pid: bool,
    pub host_ipc: bool,
    pub layout: Layout,
    pub console_log: &'a Path,
    /// The file [`included_config`] goes into.
    pub include: &'a Path,
}

/// What the CT's config includes (`lxc.namespace.keep`), or `None` when it keeps no host
/// namespace.
pub fn included_config(r: &RawInput<'_>) -> Option<String> {
    kept_namespaces(r.network, r.host_pid, r.host_ipc).map(|kept| {
        format!(
            "# pod CT's host namespaces; written by pvecri, included from the Proxmox config\n\
             lxc.namespace.keep = {kept}\n"
        )
    })
}

pub fn raw_keys(r: &RawInput<'_>) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = Vec::new();
    let mut key = |k: &str, v: String| keys.push((k.to_string(), v));
    key("lxc.init.cmd", podinit_command(r.host_ipc));
    key("lxc.signal.halt", "SIGTERM".into());
    key(
        "lxc.mount.auto",
        "proc:mixed sys:mixed cgroup:rw:force".into(),
    );
    key(
        "lxc.mount.entry",
        format!(
            "{} {} none rbind,rslave,create=dir 0 0",
            escape(&r.pod_dir.display().to_string()),
            &POD_DIR_IN_CT[1..]
        ),
    );
    if r.host_ipc {
        key(
            "lxc.mount.entry",
            "/dev/shm dev/shm none rbind,create=dir 0 0".into(),
        );
    } else {
        key(
            "lxc.mount.entry",
            format!(
                "shm dev/shm tmpfs rw,nosuid,nodev,noexec,mode=1777,size={SHM_SIZE_BYTES},create=dir 0 0"
            ),
        );
    }
    match r.network {
        NetworkMode::Isolated => {
            key("lxc.net.0.type", "empty".into());
            key("lxc.net.0.flags", "up".into());
        }
        NetworkMode::Host => key("lxc.net.0.type", "none".into()),
    }
    key("lxc.apparmor.profile", "unconfined".into());
    key("lxc.seccomp.profile", String::new());
    key("lxc.cap.drop", String::new());
    match r.layout {
        Layout::Unified => key("lxc.cgroup2.devices.allow", "a".into()),
        Layout::Legacy | Layout::Hybrid => key("lxc.cgroup.devices.allow", "a".into()),
    }
    key("lxc.console.logfile", r.console_log.display().to_string());
    if let Some(map) = &r.idmap {
        key(
            "lxc.idmap",
            format!("u 0 {} {}", map.uid.host, map.uid.count),
        );
        key(
            "lxc.idmap",
            format!("g 0 {} {}", map.gid.host, map.gid.count),
        );
    }
    if included_config(r).is_some() {
        key("lxc.include", r.include.display().to_string());
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pve::ctconf;
    use std::path::PathBuf;

    fn input(network: NetworkMode, layout: Layout) -> Vec<(String, String)> {
        with_host(network, layout, false, false).0
    }

    fn with_host(
        network: NetworkMode,
        layout: Layout,
        host_pid: bool,
        host_ipc: bool,
    ) -> (Vec<(String, String)>, Option<String>) {
        let pod_dir = PathBuf::from("/var/lib/pvecri/pods/a b");
        let log = PathBuf::from("/var/lib/pvecri/pve/cts/x.console.log");
        let include = PathBuf::from("/var/lib/pvecri/pve/cts/x.lxc.conf");
        let r = RawInput {
            pod_dir: &pod_dir,
            idmap: None,
            network,
            host_pid,
            host_ipc,
            layout,
            console_log: &log,
            include: &include,
        };
        (raw_keys(&r), included_config(&r))
    }

    #[test]
    fn an_id_map_is_written_out() {
        let pod_dir = PathBuf::from("/p");
        let map = IdMap {
            uid: crate::spec::IdRange {
                host: 65536,
                count: 65536,
            },
            gid: crate::spec::IdRange {
                host: 131072,
                count: 65536,
            },
        };
        let keys = raw_keys(&RawInput {
            pod_dir: &pod_dir,
            idmap: Some(map),
            network: NetworkMode::Isolated,
            host_pid: false,
            host_ipc: false,
            layout: Layout::Unified,
            console_log: &pod_dir,
            include: &pod_dir,
        });
        ctconf::check_raw_keys(&keys).unwrap();
        let maps: Vec<&str> = keys
            .iter()
            .filter(|(k, _)| k == "lxc.idmap")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(maps, ["u 0 65536 65536", "g 0 131072 65536"]);
    }

    #[test]
    fn host_namespaces_go_into_an_included_file() {
        let (keys, included) = with_host(NetworkMode::Host, Layout::Unified, true, true);
        ctconf::check_raw_keys(&keys).unwrap();
        assert!(keys.contains(&(
            "lxc.include".into(),
            "/var/lib/pvecri/pve/cts/x.lxc.conf".into()
        )));
        assert!(keys.contains(&(
            "lxc.init.cmd".into(),
            "/sbin/podinit --pod-dir /pvecri --host-ipc".into()
        )));
        assert!(keys.contains(&(
            "lxc.mount.entry".into(),
            "/dev/shm dev/shm none rbind,create=dir 0 0".into()
        )));
        assert!(
            included
                .unwrap()
                .ends_with("\nlxc.namespace.keep = user time net pid ipc\n")
        );
        let (keys, included) = with_host(NetworkMode::Isolated, Layout::Unified, false, false);
        assert!(included.is_none());
        assert!(!keys.iter().any(|(k, _)| k == "lxc.include"));
    }

    #[test]
    fn keys_proxmox_accepts() {
        for network in [NetworkMode::Isolated, NetworkMode::Host] {
            for layout in [Layout::Legacy, Layout::Hybrid, Layout::Unified] {
                let keys = input(network, layout);
                ctconf::check_raw_keys(&keys).unwrap();
            }
        }
    }

    #[test]
    fn isolated_pod_on_cgroup_v2() {
        let keys = input(NetworkMode::Isolated, Layout::Unified);
        let text: Vec<String> = keys.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        assert_eq!(
            text,
            [
                "lxc.init.cmd: /sbin/podinit --pod-dir /pvecri",
                "lxc.signal.halt: SIGTERM",
                "lxc.mount.auto: proc:mixed sys:mixed cgroup:rw:force",
                "lxc.mount.entry: /var/lib/pvecri/pods/a\\040b pvecri none rbind,rslave,create=dir 0 0",
                "lxc.mount.entry: shm dev/shm tmpfs rw,nosuid,nodev,noexec,mode=1777,size=67108864,create=dir 0 0",
                "lxc.net.0.type: empty",
                "lxc.net.0.flags: up",
                "lxc.apparmor.profile: unconfined",
                "lxc.seccomp.profile: ",
                "lxc.cap.drop: ",
                "lxc.cgroup2.devices.allow: a",
                "lxc.console.logfile: /var/lib/pvecri/pve/cts/x.console.log",
            ]
        );
    }

    #[test]
    fn host_network_on_cgroup_v1() {
        let keys = input(NetworkMode::Host, Layout::Hybrid);
        assert!(keys.contains(&("lxc.net.0.type".into(), "none".into())));
        assert!(!keys.iter().any(|(k, _)| k == "lxc.net.0.flags"));
        assert!(keys.contains(&("lxc.cgroup.devices.allow".into(), "a".into())));
    }
}
