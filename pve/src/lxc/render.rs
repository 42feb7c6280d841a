//! The LXC config file of a pod CT.
//!
//! Choices, and why:
//! * Root is a minimal directory of mount points (no image); podinit is bound read-only at
//!   `/sbin/podinit` and is the CT's init. `lxc.signal.halt = SIGTERM` because podinit stops
//!   its containers on SIGTERM (LXC's default SIGPWR is for system inits).
//! * The pod directory is bound at `/pvecri` with `rslave`; with a shared source on the host
//!   (see `pod_dir.rs`) the CT's copy receives the host's later mounts and sends none back.
//! * `cgroup:rw:force`: the CT has its own cgroup namespace rooted at its cgroup, and podinit
//!   must create a child cgroup per container. Without `force` LXC leaves mounting cgroups to
//!   an init that keeps CAP_SYS_ADMIN; with a cgroup namespace LXC treats `mixed` as `rw`.
//! * No `lxc.cgroup.devices.*` (nor `lxc.cgroup2.devices.*`), no capability drops, no seccomp:
//!   the CT is the pod's sandbox and podinit confines each container itself. Devices in
//!   particular: podinit gives every container a device cgroup of its own (default deny but
//!   runc's list, the CRI devices, all for a privileged container; see `podinit::devices`).
//!   A device cgroup only narrows down the tree (v1 children cannot be allowed more than
//!   their parent; v2 programs of every cgroup on the path must all allow), so the CT's own
//!   must stay open: a CT limited to LXC's defaults would refuse device plugins' GPUs to the
//!   container that asked for them and the node's devices to privileged containers. A
//!   container cannot use that openness: it is always in its own, closed cgroup (which only
//!   CAP_SYS_ADMIN, i.e. a privileged container, could reopen, as with runc), and podinit,
//!   the only process directly in the CT's cgroup, runs no container code.
//! * `/proc` and `/sys` read-only but for `/proc/sys/net` (`mixed`), except that `/proc` is
//!   writable when the pod sets IPC or UTS sysctls, which LXC writes there during setup.
//! * AppArmor `unconfined`: podinit needs mount and pivot_root for its containers; this host
//!   has no AppArmor. A confined profile for pod CTs is left to the Proxmox driver.
//! * A pod-wide `/dev/shm` (64 MiB tmpfs, containerd's default sandbox size) that podinit can
//!   share between the pod's containers, like the pause container's IPC namespace.
//! * Console output (podinit's own stdout/stderr) goes to `console.log`, capped at 1 MiB, and
//!   LXC's log to `lxc.log`, both in the CT's directory, for error reports.
//! * Host namespaces (`hostPID`, `hostIPC`): `lxc.namespace.keep` keeps the host's PID and
//!   IPC namespaces (see [`kept_namespaces`]); the CT still gets its own mount, UTS and
//!   cgroup namespaces. A `hostIPC` pod's `/dev/shm` is the host's, bound, and podinit is told
//!   (`--host-ipc`) not to cover it with a tmpfs of its own.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use crate::cgroup::{self, CtCgroups, Layout};
use crate::mountinfo::escape;
use crate::spec::{IdMap, NetworkMode, PodResources};
use crate::sysctl;

/// Where podinit sits inside the CT, and how it is started.
pub const PODINIT_IN_CT: &str = "/sbin/podinit";
pub const POD_DIR_IN_CT: &str = "/pvecri";
pub const SHM_SIZE_BYTES: u64 = 64 << 20;

/// Everything the config depends on; the driver fills it from a validated `PodSpec`.
pub struct CtConfig<'a> {
    pub name: &'a str,
    pub hostname: &'a str,
    /// `<lxcpath>/<id>`: holds `rootfs/`, `lxc.log`, `console.log`.
    pub ct_dir: &'a Path,
    pub podinit: &'a Path,
    pub pod_dir: &'a Path,
    pub network: NetworkMode,
    pub cgroups: &'a CtCgroups,
    pub layout: Layout,
    pub resources: &'a PodResources,
    pub sysctls: &'a BTreeMap<String, String>,
    /// Already clamped (`oom::clamp`).
    pub oom_score_adj: Option<i32>,
    /// `None`: a privileged CT; else the unprivileged CT's ID map.
    pub idmap: Option<IdMap>,
    pub host_pid: bool,
    pub host_ipc: bool,
}

/// The `lxc.namespace.keep` value for a CT in some of the host's namespaces, or `None` when
/// the CT gets all of its own (LXC's default).
///
/// LXC makes a new namespace for everything not kept (`keep` and `clone` exclude each other),
/// so the list names all the namespaces the host lends: always the user namespace (the CT is
/// privileged) and the time namespace (as without `keep`), the network namespace for host
/// network, and the PID and IPC namespaces asked for. The Proxmox driver needs the same line:
/// Proxmox refuses `lxc.namespace.*` keys in CT configs, but not an `lxc.include` of a file
/// that holds it.
pub fn kept_namespaces(network: NetworkMode, host_pid: bool, host_ipc: bool) -> Option<String> {
    if !host_pid && !host_ipc {
        return None;
    }
    let mut kept = vec!["user", "time"];
    if network == NetworkMode::Host {
        kept.push("net");
    }
    if host_pid {
        kept.push("pid");
    }
    if host_ipc {
        kept.push("ipc");
    }
    Some(kept.join(" "))
}

/// podinit's command line inside the CT.
pub fn podinit_command(host_ipc: bool) -> String {
    let mut cmd = format!("{PODINIT_IN_CT} --pod-dir {POD_DIR_IN_CT}");
    if host_ipc {
        cmd.push_str(" --host-ipc");
    }
    cmd
}

/// Renders the config. Inputs must have passed `PodSpec::validate` (no control characters, so
/// every value stays on its line).
pub fn render(c: &CtConfig<'_>) -> String {
    let dir = c.ct_dir.display();
    let mut out = String::with_capacity(2048);
    let mut key = |k: &str, v: &dyn std::fmt::Display| {
        let _ = writeln!(out, "{k} = {v}");
    };
    key("lxc.uts.name", &c.hostname);
    key("lxc.rootfs.path", &format!("dir:{dir}/rootfs"));
    key("lxc.init.cmd", &podinit_command(c.host_ipc));
    key("lxc.signal.halt", &"SIGTERM");
    key("lxc.autodev", &1);
    key("lxc.tty.max", &0);
    key("lxc.pty.max", &1024);
    key("lxc.console.logfile", &format!("{dir}/console.log"));
    key("lxc.console.size", &"1MB");
    key("lxc.log.file", &format!("{dir}/lxc.log"));
    key("lxc.log.level", &"INFO");
    key("lxc.apparmor.profile", &"unconfined");
    // LXC sets sysctls through the CT's /proc/sys, which `proc:mixed` makes read-only but
    // for net.*; other namespaced sysctls (IPC, UTS) need it writable.
    let proc_mode = if c
        .sysctls
        .keys()
        .all(|k| sysctl::normalize(k).starts_with("net."))
    {
        "mixed"
    } else {
        "rw"
    };
    key(
        "lxc.mount.auto",
        &format!("proc:{proc_mode} sys:mixed cgroup:rw:force"),
    );
    key(
        "lxc.mount.entry",
        &format!(
            "{} {} none bind,ro 0 0",
            escape(&c.podinit.display().to_string()),
            &PODINIT_IN_CT[1..]
        ),
    );
    key(
        "lxc.mount.entry",
        &format!(
            "{} {} none rbind,rslave 0 0",
            escape(&c.pod_dir.display().to_string()),
            &POD_DIR_IN_CT[1..]
        ),
    );
    if c.host_ipc {
        key(
            "lxc.mount.entry",
            &"/dev/shm dev/shm none rbind,create=dir 0 0",
        );
    } else {
        key(
            "lxc.mount.entry",
            &format!(
                "shm dev/shm tmpfs rw,nosuid,nodev,noexec,mode=1777,size={SHM_SIZE_BYTES},create=dir 0 0"
            ),
        );
    }
    match c.network {
        NetworkMode::Isolated => {
            key("lxc.net.0.type", &"empty");
            key("lxc.net.0.flags", &"up");
        }
        NetworkMode::Host => key("lxc.net.0.type", &"none"),
    }
    if let Some(kept) = kept_namespaces(c.network, c.host_pid, c.host_ipc) {
        key("lxc.namespace.keep", &kept);
    }
    key("lxc.cgroup.dir.container", &c.cgroups.container);
    key("lxc.cgroup.dir.monitor", &c.cgroups.monitor);
    key("lxc.cgroup.dir.monitor.pivot", &c.cgroups.monitor_pivot);
    for (k, v) in cgroup::resource_keys(c.layout, c.resources) {
        key(&k, &v);
    }
    if let Some(adj) = c.oom_score_adj {
        key("lxc.proc.oom_score_adj", &adj);
    }
    for (name, value) in c.sysctls {
        key(
            &format!("lxc.sysctl.{}", sysctl::normalize(name)),
            &value.trim(),
        );
    }
    if let Some(map) = &c.idmap {
        key(
            "lxc.idmap",
            &format!("u 0 {} {}", map.uid.host, map.uid.count),
        );
        key(
            "lxc.idmap",
            &format!("g 0 {} {}", map.gid.host, map.gid.count),
        );
    }
    format!(
        "# pod CT for {} ({}); written by pvecri, changes are lost\n{out}",
        c.name,
        if c.idmap.is_none() {
            "privileged"
        } else {
            "unprivileged"
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::CgroupDriver;
    use std::path::PathBuf;

    const ID: &str = crate::spec::tests::ID;

    fn render_with(f: impl FnOnce(&mut CtConfig<'_>)) -> String {
        let ct_dir = PathBuf::from(format!("/var/lib/pvecri/lxc/{ID}"));
        let pod_dir = PathBuf::from(format!("/var/lib/pvecri/pods/{ID}"));
        let podinit = PathBuf::from("/usr/lib/pvecri/podinit");
        let cgroups = CtCgroups::new(
            CgroupDriver::Cgroupfs,
            Some("/kubepods/burstable/pod1234"),
            ID,
        )
        .unwrap();
        let resources = PodResources::default();
        let sysctls = BTreeMap::new();
        let mut c = CtConfig {
            name: "default/web",
            hostname: "web",
            ct_dir: &ct_dir,
            podinit: &podinit,
            pod_dir: &pod_dir,
            network: NetworkMode::Isolated,
            cgroups: &cgroups,
            layout: Layout::Hybrid,
            resources: &resources,
            sysctls: &sysctls,
            oom_score_adj: None,
            idmap: None,
            host_pid: false,
            host_ipc: false,
        };
        f(&mut c);
        render(&c)
    }

    #[test]
    fn privileged_isolated_pod() {
        let expected = format!(
            "\
# pod CT for default/web (privileged); written by pvecri, changes are lost
lxc.uts.name = web
lxc.rootfs.path = dir:/var/lib/pvecri/lxc/{ID}/rootfs
lxc.init.cmd = /sbin/podinit --pod-dir /pvecri
lxc.signal.halt = SIGTERM
lxc.autodev = 1
lxc.tty.max = 0
lxc.pty.max = 1024
lxc.console.logfile = /var/lib/pvecri/lxc/{ID}/console.log
lxc.console.size = 1MB
lxc.log.file = /var/lib/pvecri/lxc/{ID}/lxc.log
lxc.log.level = INFO
lxc.apparmor.profile = unconfined
lxc.mount.auto = proc:mixed sys:mixed cgroup:rw:force
lxc.mount.entry = /usr/lib/pvecri/podinit sbin/podinit none bind,ro 0 0
lxc.mount.entry = /var/lib/pvecri/pods/{ID} pvecri none rbind,rslave 0 0
lxc.mount.entry = shm dev/shm tmpfs rw,nosuid,nodev,noexec,mode=1777,size=67108864,create=dir 0 0
lxc.net.0.type = empty
lxc.net.0.flags = up
lxc.cgroup.dir.container = kubepods/burstable/pod1234/{ID}
lxc.cgroup.dir.monitor = pvecri-monitor/{ID}
lxc.cgroup.dir.monitor.pivot = pvecri-monitor
"
        );
        assert_eq!(render_with(|_| {}), expected);
    }

    #[test]
    fn unprivileged_host_network_pod_with_limits_sysctls_and_oom() {
        let resources = PodResources {
            cpu_quota: Some(50_000),
            memory_limit_bytes: Some(128 << 20),
            ..PodResources::default()
        };
        let sysctls = BTreeMap::from([
            ("kernel.shm_rmid_forced".to_string(), "1".to_string()),
            ("fs/mqueue/msg_max".to_string(), " 20 ".to_string()),
        ]);
        let text = render_with(|c| {
            c.network = NetworkMode::Host;
            c.idmap = Some(IdMap::PROXMOX_DEFAULT);
            c.layout = Layout::Unified;
            c.resources = Box::leak(Box::new(resources));
            c.sysctls = Box::leak(Box::new(sysctls));
            c.oom_score_adj = Some(0);
        });
        let tail: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("lxc.net"))
            .collect();
        assert_eq!(
            tail,
            [
                "lxc.net.0.type = none",
                &format!("lxc.cgroup.dir.container = kubepods/burstable/pod1234/{ID}"),
                &format!("lxc.cgroup.dir.monitor = pvecri-monitor/{ID}"),
                "lxc.cgroup.dir.monitor.pivot = pvecri-monitor",
                "lxc.cgroup2.cpu.max = 50000 100000",
                "lxc.cgroup2.memory.max = 134217728",
                "lxc.proc.oom_score_adj = 0",
                "lxc.sysctl.fs.mqueue.msg_max = 20",
                "lxc.sysctl.kernel.shm_rmid_forced = 1",
                "lxc.idmap = u 0 100000 65536",
                "lxc.idmap = g 0 100000 65536",
            ]
        );
        assert!(text.starts_with("# pod CT for default/web (unprivileged)"));
    }

    #[test]
    fn the_kubelet_s_id_map_lands_as_it_is() {
        let text = render_with(|c| {
            c.idmap = Some(IdMap {
                uid: crate::spec::IdRange {
                    host: 1000,
                    count: 100_000,
                },
                gid: crate::spec::IdRange {
                    host: 65_536,
                    count: 65_536,
                },
            })
        });
        assert!(text.contains("lxc.idmap = u 0 1000 100000\nlxc.idmap = g 0 65536 65536\n"));
    }

    #[test]
    fn host_pid_and_ipc_keep_the_host_namespaces() {
        let text = render_with(|c| {
            c.host_pid = true;
            c.host_ipc = true;
            c.network = NetworkMode::Host;
        });
        assert!(
            text.contains("lxc.namespace.keep = user time net pid ipc\n"),
            "{text}"
        );
        assert!(text.contains("lxc.init.cmd = /sbin/podinit --pod-dir /pvecri --host-ipc\n"));
        assert!(text.contains("lxc.mount.entry = /dev/shm dev/shm none rbind,create=dir 0 0\n"));
        assert!(!text.contains("shm dev/shm tmpfs"));

        let text = render_with(|c| c.host_pid = true);
        assert!(
            text.contains("lxc.namespace.keep = user time pid\n"),
            "{text}"
        );
        assert!(text.contains("lxc.init.cmd = /sbin/podinit --pod-dir /pvecri\n"));
        assert!(text.contains("shm dev/shm tmpfs"));
        assert!(text.contains("lxc.net.0.type = empty\n"));

        assert!(!render_with(|_| {}).contains("lxc.namespace"));
    }

    #[test]
    fn kept_namespace_lists() {
        assert_eq!(kept_namespaces(NetworkMode::Host, false, false), None);
        assert_eq!(
            kept_namespaces(NetworkMode::Isolated, false, true).as_deref(),
            Some("user time ipc")
        );
    }

    #[test]
    fn net_sysctls_keep_proc_mixed() {
        let sysctls = BTreeMap::from([("net/ipv4/ip_forward".to_string(), "1".to_string())]);
        let text = render_with(|c| c.sysctls = Box::leak(Box::new(sysctls)));
        assert!(text.contains("lxc.mount.auto = proc:mixed sys:mixed cgroup:rw:force\n"));
        assert!(text.contains("lxc.sysctl.net.ipv4.ip_forward = 1\n"));
    }

    #[test]
    fn paths_with_spaces_are_escaped_in_mount_entries() {
        let pod_dir = PathBuf::from("/srv/pvecri state/pods/x");
        let text = render_with(|c| c.pod_dir = Box::leak(Box::new(pod_dir)));
        assert!(text.contains(
            "lxc.mount.entry = /srv/pvecri\\040state/pods/x pvecri none rbind,rslave 0 0\n"
        ));
    }

    #[test]
    fn systemd_scope_lands_in_the_config() {
        let cgroups =
            CtCgroups::new(CgroupDriver::Systemd, Some("kubepods-pod9.slice"), ID).unwrap();
        let text = render_with(|c| c.cgroups = Box::leak(Box::new(cgroups)));
        assert!(text.contains(&format!(
            "lxc.cgroup.dir.container = kubepods.slice/kubepods-pod9.slice/pvecri-{ID}.scope\n"
        )));
    }
}
