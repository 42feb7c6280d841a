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

use std::path::Path;

use crate::cgroup::Layout;
use crate::lxc::render::{POD_DIR_IN_CT, PODINIT_IN_CT, SHM_SIZE_BYTES};
use crate::mountinfo::escape;
use crate::spec::NetworkMode;

pub struct RawInput<'a> {
    pub pod_dir: &'a Path,
    pub network: NetworkMode,
    pub layout: Layout,
    pub console_log: &'a Path,
}

pub fn raw_keys(r: &RawInput<'_>) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = Vec::new();
    let mut key = |k: &str, v: String| keys.push((k.to_string(), v));
    key(
        "lxc.init.cmd",
        format!("{PODINIT_IN_CT} --pod-dir {POD_DIR_IN_CT}"),
    );
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
    key(
        "lxc.mount.entry",
        format!(
            "shm dev/shm tmpfs rw,nosuid,nodev,noexec,mode=1777,size={SHM_SIZE_BYTES},create=dir 0 0"
        ),
    );
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
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pve::ctconf;
    use std::path::PathBuf;

    fn input(network: NetworkMode, layout: Layout) -> Vec<(String, String)> {
        let pod_dir = PathBuf::from("/var/lib/pvecri/pods/a b");
        let log = PathBuf::from("/var/lib/pvecri/pve/cts/x.console.log");
        raw_keys(&RawInput {
            pod_dir: &pod_dir,
            network,
            layout,
            console_log: &log,
        })
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
