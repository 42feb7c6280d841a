//! The OCI runtime spec of a container: the CRI ContainerConfig merged with the image
//! config, as the kubelet and containerd define the merge. podinit runs it.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::str::FromStr;

use k8s_cri::v1::{ContainerConfig, MountPropagation, NamespaceMode};
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilities, LinuxCpu, LinuxDeviceCgroup, LinuxMemory,
    LinuxNamespace, LinuxNamespaceType, LinuxResources, LinuxSeccomp, Mount, Process, Root, Spec,
    User,
};

use super::devices::{HostDevice, ResolvedDevice};

/// Where the pod directory appears inside the CT.
pub const POD_DIR_IN_CT: &str = "/pvecri";
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// containerd's default capability set for unprivileged containers.
const DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Paths hidden from unprivileged containers when the kubelet sends none (containerd's).
const DEFAULT_MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const DEFAULT_READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("container has no command: neither the request nor the image gives one")]
    NoCommand,
    #[error("unknown capability {0:?}")]
    Capability(String),
    #[error(
        "capability {0:?} is not held by the pod's CT (not in its bounding set), so no \
         container in it can get it"
    )]
    CapabilityNotHeld(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("mount {path}: {reason}")]
    Mount { path: String, reason: String },
    /// A Localhost seccomp profile that cannot be read or applied.
    #[error(transparent)]
    SeccompProfile(#[from] super::seccomp_profile::ProfileError),
}

/// The user the process runs as, already resolved against the image's /etc/passwd.
/// `additional_gids` holds the primary gid too, as containerd sets them.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// A CRI mount whose host path the daemon passes to podinit as a mount tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedMount {
    pub host_path: String,
    pub container_path: String,
    pub readonly: bool,
    /// `rro`: read-only all the way down (mount_setattr with AT_RECURSIVE).
    pub recursive_read_only: bool,
    pub propagation: MountPropagation,
}

pub struct SpecInput<'a> {
    pub container_id: &'a str,
    pub config: &'a ContainerConfig,
    /// The image configuration document (`{"config": {...}, "rootfs": ...}`).
    pub image_config: &'a serde_json::Value,
    pub hostname: &'a str,
    pub user: ResolvedUser,
    pub mounts: Vec<StagedMount>,
    /// Which of the pod's files (`hosts`, `resolv.conf`, `hostname`) the pod directory holds.
    pub pod_files: &'a [&'a str],
    /// The capabilities the pod's CT can grant (see [`capabilities`]).
    pub pod_caps: &'a HashSet<Capability>,
    /// The CRI devices, looked up on the node (see [`super::devices::resolve`]).
    pub devices: &'a [ResolvedDevice],
    /// The node's devices, for a privileged container (see [`super::devices::host_devices`]).
    pub host_devices: &'a [HostDevice],
    /// The CRI devices come as bind mounts among `mounts` (a pod with its own user namespace,
    /// where nothing may mknod): only their cgroup rules go into the spec.
    pub devices_as_mounts: bool,
}

/// A device cgroup rule for every device (`a`).
fn all_devices(allow: bool) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow);
    r.set_access(Some("rwm".into()));
    r
}

/// `linux.devices` and the device cgroup rules, as containerd sets them: deny everything, then
/// allow each CRI device with its permissions; a privileged container also gets every node of
/// the host and all access (`WithHostDevices`, `WithAllDevicesAllowed`). podinit adds runc's
/// default allow list (`/dev/null`, ..., mknod) after these rules.
fn device_sections(
    devices: &[ResolvedDevice],
    host_devices: &[HostDevice],
    privileged: bool,
    as_mounts: bool,
) -> (Vec<oci_spec::runtime::LinuxDevice>, Vec<LinuxDeviceCgroup>) {
    let mut nodes = Vec::new();
    let mut rules = vec![all_devices(false)];
    for d in devices {
        for n in &d.nodes {
            if !as_mounts {
                nodes.push(n.linux_device());
            }
            rules.push(n.allow(&d.permissions));
        }
    }
    if privileged {
        nodes.extend(host_devices.iter().map(HostDevice::linux_device));
        rules.push(all_devices(true));
    }
    (nodes, rules)
}

/// The image config's `config` object.
fn image_field<'a>(image: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    image.get("config").and_then(|c| c.get(key))
}

fn string_list(v: Option<&serde_json::Value>) -> Vec<String> {
    v.and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Kubernetes' rule: `command` replaces the image's Entrypoint (and drops its Cmd), `args`
/// replaces Cmd.
pub fn process_args(
    config: &ContainerConfig,
    image: &serde_json::Value,
) -> Result<Vec<String>, SpecError> {
    let entrypoint = string_list(image_field(image, "Entrypoint"));
    let cmd = string_list(image_field(image, "Cmd"));
    let mut out = if config.command.is_empty() {
        entrypoint
    } else {
        config.command.clone()
    };
    if !config.args.is_empty() {
        out.extend(config.args.iter().cloned());
    } else if config.command.is_empty() {
        out.extend(cmd);
    }
    if out.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(out)
}

/// Image env first, the request's overriding by key; PATH defaulted when the image has none.
pub fn process_env(
    config: &ContainerConfig,
    image: &serde_json::Value,
    hostname: &str,
) -> Vec<String> {
    let mut env: Vec<(String, String)> = vec![("HOSTNAME".into(), hostname.into())];
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(key, _)| key == k) {
        Some(entry) => entry.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    for e in string_list(image_field(image, "Env")) {
        let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
        set(k, v);
    }
    for kv in &config.envs {
        set(&kv.key, &kv.value);
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        let (k, v) = DEFAULT_PATH.split_once('=').unwrap_or(("PATH", ""));
        env.push((k.to_string(), v.to_string()));
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

fn parse_cap(name: &str) -> Result<Capability, SpecError> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    Capability::from_str(bare).map_err(|_| SpecError::Capability(name.to_string()))
}

/// The capability set: containerd's defaults, plus adds, minus drops (`ALL` in either).
/// `pod_caps` are the capabilities the pod's CT holds (podinit's bounding and permitted
/// sets): a privileged container and `ALL` get those, as containerd gives what it holds
/// itself, so that no container asks for a capability its CT cannot grant. A capability
/// added by name that the CT lacks is refused, naming it.
pub fn capabilities(
    config: &ContainerConfig,
    pod_caps: &HashSet<Capability>,
) -> Result<HashSet<Capability>, SpecError> {
    let sc = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref());
    if sc.is_some_and(|s| s.privileged) {
        return Ok(pod_caps.clone());
    }
    let held = |name: &str| -> Result<Capability, SpecError> {
        let cap = parse_cap(name)?;
        if pod_caps.contains(&cap) {
            Ok(cap)
        } else {
            Err(SpecError::CapabilityNotHeld(name.to_string()))
        }
    };
    let mut caps: HashSet<Capability> = DEFAULT_CAPS
        .iter()
        .map(|c| parse_cap(c))
        .collect::<Result<HashSet<_>, _>>()?
        .intersection(pod_caps)
        .copied()
        .collect();
    if let Some(c) = sc.and_then(|s| s.capabilities.as_ref()) {
        // containerd's order: ALL added, ALL dropped, then the named adds, then the named
        // drops (so `add: [ALL], drop: [CHOWN]` is all but CHOWN).
        let is_all = |s: &&String| s.eq_ignore_ascii_case("ALL");
        if c.add_capabilities.iter().any(|a| is_all(&a)) {
            caps = pod_caps.clone();
        }
        if c.drop_capabilities.iter().any(|d| is_all(&d)) {
            caps.clear();
        }
        for a in c.add_capabilities.iter().filter(|a| !is_all(a)) {
            caps.insert(held(a)?);
        }
        for d in c.drop_capabilities.iter().filter(|d| !is_all(d)) {
            caps.remove(&parse_cap(d)?);
        }
    }
    Ok(caps)
}

fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(destination));
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(PathBuf::from(source)));
    m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

fn default_mounts(privileged: bool) -> Vec<Mount> {
    let sys_mode = if privileged { "rw" } else { "ro" };
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_mode],
        ),
        // The container's own cgroup (through its cgroup namespace; the pod CT's for a
        // privileged container), where programs read their limits; read-only unless
        // privileged, as in containerd.
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys_mode],
        ),
        // The pod shares one /dev/shm, as it shares one IPC namespace: the CT's.
        mount(
            "/dev/shm",
            "bind",
            "/dev/shm",
            &["rbind", "nosuid", "noexec", "nodev"],
        ),
    ]
}

fn propagation_option(p: MountPropagation) -> &'static str {
    match p {
        MountPropagation::PropagationPrivate => "rprivate",
        MountPropagation::PropagationHostToContainer => "rslave",
        MountPropagation::PropagationBidirectional => "rshared",
    }
}

/// The seccomp filter the container asks for, as the OCI section podinit compiles.
/// An absent profile and `Unconfined` ask for none, and so does a privileged container,
/// whatever it asks (as in containerd). `RuntimeDefault` is podinit's default profile for
/// the container's capabilities. A `Localhost` profile is read from its file on the node
/// (see [`super::seccomp_profile`]), its rules chosen for the container's capabilities.
pub fn seccomp_profile(
    config: &ContainerConfig,
    caps: &HashSet<Capability>,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    use k8s_cri::v1::security_profile::ProfileType;
    let Some(sc) = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
    else {
        return Ok(None);
    };
    if sc.privileged {
        return Ok(None);
    }
    #[allow(deprecated)] // older kubelets still send the path form
    let requested = match sc.seccomp.as_ref() {
        Some(p) => match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::Unconfined) => None,
            Ok(ProfileType::RuntimeDefault) => Some(Ok(())),
            Ok(ProfileType::Localhost) => Some(Err(p.localhost_ref.clone())),
            Err(_) => {
                return Err(SpecError::Unsupported(format!(
                    "unknown seccomp profile type {}",
                    p.profile_type
                )));
            }
        },
        None => match sc.seccomp_profile_path.as_str() {
            "" | "unconfined" => None,
            "runtime/default" | "docker/default" => Some(Ok(())),
            other => Some(Err(other.trim_start_matches("localhost/").to_owned())),
        },
    };
    match requested {
        None => Ok(None),
        Some(Ok(())) => podinit::seccomp::runtime_default(caps)
            .map(Some)
            .map_err(|e| SpecError::Unsupported(e.to_string())),
        Some(Err(path)) => Ok(super::seccomp_profile::load(
            &path,
            &super::seccomp_profile::Target::host(caps),
        )?),
    }
}

pub fn build(input: SpecInput<'_>) -> Result<Spec, SpecError> {
    let config = input.config;
    let linux_cfg = config.linux.as_ref();
    let sc = linux_cfg.and_then(|l| l.security_context.as_ref());
    let privileged = sc.is_some_and(|s| s.privileged);

    let mut process = Process::default();
    process.set_args(Some(process_args(config, input.image_config)?));
    process.set_env(Some(process_env(
        config,
        input.image_config,
        input.hostname,
    )));
    let cwd = if !config.working_dir.is_empty() {
        config.working_dir.clone()
    } else {
        image_field(input.image_config, "WorkingDir")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .unwrap_or("/")
            .to_string()
    };
    if !cwd.starts_with('/') {
        return Err(SpecError::Unsupported(format!(
            "working directory {cwd:?} is not absolute"
        )));
    }
    process.set_cwd(PathBuf::from(cwd));
    let mut user = User::default();
    user.set_uid(input.user.uid);
    user.set_gid(input.user.gid);
    if !input.user.additional_gids.is_empty() {
        user.set_additional_gids(Some(input.user.additional_gids.clone()));
    }
    process.set_user(user);
    process.set_terminal(Some(config.tty));
    let caps = capabilities(config, input.pod_caps)?;
    let mut lc = LinuxCapabilities::default();
    lc.set_bounding(Some(caps.clone()));
    lc.set_effective(Some(caps.clone()));
    lc.set_permitted(Some(caps.clone()));
    lc.set_inheritable(Some(HashSet::new()));
    lc.set_ambient(Some(HashSet::new()));
    process.set_capabilities(Some(lc));
    process.set_no_new_privileges(Some(sc.is_some_and(|s| s.no_new_privs)));
    let resources = linux_cfg.and_then(|l| l.resources.as_ref());
    if let Some(r) = resources.filter(|r| r.oom_score_adj != 0) {
        process.set_oom_score_adj(Some(i32::try_from(r.oom_score_adj).unwrap_or(1000)));
    }
    process.set_rlimits(None);
    process.set_apparmor_profile(None);
    process.set_selinux_label(None);

    let mut root = Root::default();
    root.set_path(PathBuf::from(format!(
        "{POD_DIR_IN_CT}/ctrs/{}/rootfs",
        input.container_id
    )));
    root.set_readonly(Some(sc.is_some_and(|s| s.readonly_rootfs)));

    let mut mounts = default_mounts(privileged);
    let user_destinations: HashSet<&str> = input
        .mounts
        .iter()
        .map(|m| m.container_path.as_str())
        .collect();
    for file in input.pod_files {
        let dest = format!("/etc/{file}");
        if !user_destinations.contains(dest.as_str()) {
            mounts.push(mount(
                &dest,
                "bind",
                &format!("{POD_DIR_IN_CT}/etc/{file}"),
                &[
                    "rbind",
                    "rprivate",
                    if *file == "resolv.conf" || *file == "hostname" {
                        "ro"
                    } else {
                        "rw"
                    },
                ],
            ));
        }
    }
    // The n-th passed mount tree is the n-th of these, in `mounts` at `passed[n]`.
    let mut passed = Vec::new();
    for m in &input.mounts {
        if !m.container_path.starts_with('/') {
            return Err(SpecError::Mount {
                path: m.container_path.clone(),
                reason: "container path must be absolute".into(),
            });
        }
        let mut options = vec!["rbind", propagation_option(m.propagation)];
        options.push(if m.readonly { "ro" } else { "rw" });
        if m.recursive_read_only {
            options.push("rro");
        }
        passed.push(mounts.len());
        mounts.push(mount(&m.container_path, "bind", &m.host_path, &options));
    }

    let pid_mode = sc
        .and_then(|s| s.namespace_options.as_ref())
        .map(|n| n.pid())
        .unwrap_or(NamespaceMode::Container);
    let mut namespaces = vec![ns(LinuxNamespaceType::Mount)];
    // A cgroup namespace rooted at the container's own cgroup: its /sys/fs/cgroup and
    // /proc/self/cgroup show its cgroup as the root (containerd's default on cgroup v2). A
    // privileged container keeps the pod's, as in containerd: node agents read other
    // processes' cgroup paths as the CT sees them.
    if !privileged {
        namespaces.push(ns(LinuxNamespaceType::Cgroup));
    }
    match pid_mode {
        NamespaceMode::Container => namespaces.push(ns(LinuxNamespaceType::Pid)),
        // The host's is podinit's in a pod that keeps it (checked at CreateContainer).
        NamespaceMode::Pod | NamespaceMode::Node => {}
        NamespaceMode::Target => {
            return Err(SpecError::Unsupported(
                "targeting another container's PID namespace is not supported".into(),
            ));
        }
    }

    let (device_nodes, device_rules) = device_sections(
        input.devices,
        input.host_devices,
        privileged,
        input.devices_as_mounts,
    );
    let mut res = LinuxResources::default();
    res.set_devices(Some(device_rules));
    if let Some(r) = resources {
        if r.memory_limit_in_bytes > 0 || r.memory_swap_limit_in_bytes != 0 {
            let mut m = LinuxMemory::default();
            m.set_limit(Some(r.memory_limit_in_bytes).filter(|l| *l > 0));
            m.set_swap(Some(r.memory_swap_limit_in_bytes).filter(|s| *s != 0));
            res.set_memory(Some(m));
        }
        if !r.hugepage_limits.is_empty() {
            res.set_hugepage_limits(Some(
                r.hugepage_limits
                    .iter()
                    .map(|h| {
                        let mut l = oci_spec::runtime::LinuxHugepageLimit::default();
                        l.set_page_size(h.page_size.clone());
                        l.set_limit(i64::try_from(h.limit).unwrap_or(i64::MAX));
                        l
                    })
                    .collect(),
            ));
        }
        if !r.unified.is_empty() {
            res.set_unified(Some(r.unified.clone()));
        }
        let mut cpu = LinuxCpu::default();
        let mut any_cpu = false;
        if r.cpu_shares > 0 {
            cpu.set_shares(Some(r.cpu_shares as u64));
            any_cpu = true;
        }
        if r.cpu_quota > 0 {
            cpu.set_quota(Some(r.cpu_quota));
            any_cpu = true;
        }
        if r.cpu_period > 0 {
            cpu.set_period(Some(r.cpu_period as u64));
            any_cpu = true;
        }
        if !r.cpuset_cpus.is_empty() {
            cpu.set_cpus(Some(r.cpuset_cpus.clone()));
            any_cpu = true;
        }
        if !r.cpuset_mems.is_empty() {
            cpu.set_mems(Some(r.cpuset_mems.clone()));
            any_cpu = true;
        }
        if any_cpu {
            res.set_cpu(Some(cpu));
        }
    }

    let (masked, readonly): (Vec<String>, Vec<String>) = if privileged {
        (vec![], vec![])
    } else {
        let masked = sc.map(|s| s.masked_paths.clone()).filter(|v| !v.is_empty());
        let readonly = sc
            .map(|s| s.readonly_paths.clone())
            .filter(|v| !v.is_empty());
        (
            masked.unwrap_or_else(|| DEFAULT_MASKED.iter().map(|s| s.to_string()).collect()),
            readonly.unwrap_or_else(|| DEFAULT_READONLY.iter().map(|s| s.to_string()).collect()),
        )
    };

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .devices(device_nodes)
        .resources(res)
        .masked_paths(masked)
        .readonly_paths(readonly)
        .build()
        .map_err(|e| SpecError::Unsupported(format!("building the linux section: {e}")))?;
    linux.set_seccomp(seccomp_profile(config, &caps)?);

    let mut spec = Spec::default();
    spec.set_version("1.2.0".into());
    spec.set_hostname(Some(input.hostname.to_string()));
    spec.set_process(Some(process));
    spec.set_root(Some(root));
    spec.set_mounts(Some(mounts));
    spec.set_linux(Some(linux));
    spec.set_hooks(None);
    let mut annotations: HashMap<String, String> = config.annotations.clone().into_iter().collect();
    if !passed.is_empty() {
        annotations.insert(
            podinit::api::PASSED_MOUNTS_ANNOTATION.to_string(),
            serde_json::to_string(&passed).unwrap_or_default(),
        );
    }
    spec.set_annotations(Some(annotations));
    Ok(spec)
}

fn ns(typ: LinuxNamespaceType) -> LinuxNamespace {
    let mut n = LinuxNamespace::default();
    n.set_typ(typ);
    n.set_path(None);
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{
        Capability as CriCaps, KeyValue, LinuxContainerConfig, LinuxContainerSecurityContext,
    };
    use serde_json::json;

    fn with_seccomp(profile_type: i32, privileged: bool) -> ContainerConfig {
        ContainerConfig {
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    privileged,
                    seccomp: Some(k8s_cri::v1::SecurityProfile {
                        profile_type,
                        localhost_ref: "/var/lib/kubelet/seccomp/p.json".into(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn seccomp_profiles_by_type() {
        let caps = HashSet::new();
        let profile = |c: &ContainerConfig| seccomp_profile(c, &caps);
        assert_eq!(profile(&ContainerConfig::default()).unwrap(), None);
        assert_eq!(profile(&with_seccomp(1, false)).unwrap(), None);
        assert_eq!(profile(&with_seccomp(0, true)).unwrap(), None, "privileged");
        let default = profile(&with_seccomp(0, false)).unwrap().unwrap();
        let denied: Vec<String> = default
            .syscalls()
            .iter()
            .flatten()
            .flat_map(|s| s.names().clone())
            .collect();
        assert!(denied.contains(&"unshare".to_string()), "{denied:?}");
        podinit::seccomp::compile(&default).unwrap();
        // A Localhost profile is read from its file; a missing one is named.
        let err = profile(&with_seccomp(2, false)).unwrap_err();
        assert!(
            matches!(
                err,
                SpecError::SeccompProfile(
                    super::super::seccomp_profile::ProfileError::Unreadable { .. }
                )
            ),
            "{err}"
        );
        assert!(err.to_string().contains("/var/lib/kubelet/seccomp/p.json"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("block-chmod.json");
        std::fs::write(
            &file,
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        let mut c = with_seccomp(2, false);
        let sc = c.linux.as_mut().unwrap().security_context.as_mut().unwrap();
        sc.seccomp.as_mut().unwrap().localhost_ref = file.display().to_string();
        let section = profile(&c).unwrap().unwrap();
        assert_eq!(section.syscalls().as_ref().unwrap().len(), 1);
        // The older path form: `localhost/` and the absolute path.
        sc_path(&mut c, &format!("localhost/{}", file.display()));
        assert!(profile(&c).unwrap().is_some());
    }

    #[allow(deprecated)] // the path form older kubelets send
    fn sc_path(c: &mut ContainerConfig, path: &str) {
        let sc = c.linux.as_mut().unwrap().security_context.as_mut().unwrap();
        sc.seccomp = None;
        sc.seccomp_profile_path = path.to_string();
    }

    fn image() -> serde_json::Value {
        json!({"config": {"Entrypoint": ["/entry"], "Cmd": ["a", "b"], "Env": ["PATH=/bin", "A=1"],
                          "WorkingDir": "/work", "User": "1000"}})
    }

    #[test]
    fn command_and_args_merge_as_kubernetes_defines() {
        let img = image();
        let mut c = ContainerConfig::default();
        assert_eq!(process_args(&c, &img).unwrap(), ["/entry", "a", "b"]);
        c.args = vec!["x".into()];
        assert_eq!(process_args(&c, &img).unwrap(), ["/entry", "x"]);
        c.command = vec!["/cmd".into()];
        assert_eq!(process_args(&c, &img).unwrap(), ["/cmd", "x"]);
        c.args.clear();
        assert_eq!(process_args(&c, &img).unwrap(), ["/cmd"]);
        assert_eq!(
            process_args(&ContainerConfig::default(), &json!({})),
            Err(SpecError::NoCommand)
        );
    }

    #[test]
    fn env_overrides_by_key_and_defaults_path() {
        let c = ContainerConfig {
            envs: vec![
                KeyValue {
                    key: "A".into(),
                    value: "2".into(),
                },
                KeyValue {
                    key: "B".into(),
                    value: "x=y".into(),
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            process_env(&c, &image(), "h"),
            ["HOSTNAME=h", "PATH=/bin", "A=2", "B=x=y"]
        );
        let env = process_env(&ContainerConfig::default(), &json!({}), "h");
        assert!(env.iter().any(|e| e.starts_with("PATH=/usr/local/sbin")));
    }

    fn with_caps(add: &[&str], drop: &[&str], privileged: bool) -> ContainerConfig {
        ContainerConfig {
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    privileged,
                    capabilities: Some(CriCaps {
                        add_capabilities: add.iter().map(|s| s.to_string()).collect(),
                        drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// What this test host's CTs hold: every capability but SYS_RESOURCE.
    fn host_caps() -> HashSet<Capability> {
        podinit::caps::set_of(0x1ff_feff_ffff)
    }

    #[test]
    fn capability_sets() {
        let pod = host_caps();
        let caps = capabilities(
            &with_caps(&["NET_ADMIN", "CAP_SYS_TIME"], &["MKNOD"], false),
            &pod,
        )
        .unwrap();
        assert!(caps.contains(&Capability::NetAdmin) && caps.contains(&Capability::SysTime));
        assert!(!caps.contains(&Capability::Mknod));
        assert!(caps.contains(&Capability::Chown));
        let caps = capabilities(&with_caps(&["NET_BIND_SERVICE"], &["ALL"], false), &pod).unwrap();
        assert_eq!(caps, HashSet::from([Capability::NetBindService]));
        // Named drops come after the adds, as in containerd.
        let caps = capabilities(&with_caps(&["ALL"], &["CHOWN"], false), &pod).unwrap();
        assert_eq!(caps.len(), pod.len() - 1);
        assert!(!caps.contains(&Capability::Chown));
        let caps = capabilities(&with_caps(&["KILL"], &["KILL"], false), &pod).unwrap();
        assert!(!caps.contains(&Capability::Kill));
        assert_eq!(
            capabilities(&with_caps(&["BOGUS"], &[], false), &pod),
            Err(SpecError::Capability("BOGUS".into()))
        );
    }

    #[test]
    fn privileged_and_all_get_what_the_pod_holds() {
        let pod = host_caps();
        for c in [
            with_caps(&[], &["ALL"], true),
            with_caps(&["ALL"], &[], false),
            with_caps(&["all"], &[], false),
        ] {
            let caps = capabilities(&c, &pod).unwrap();
            assert_eq!(caps, pod);
            assert!(caps.contains(&Capability::SysAdmin));
            assert!(!caps.contains(&Capability::SysResource));
        }
        // Asked for by name, a capability the CT lacks is an error that names it.
        let e = capabilities(&with_caps(&["SYS_RESOURCE"], &[], false), &pod).unwrap_err();
        assert_eq!(e, SpecError::CapabilityNotHeld("SYS_RESOURCE".into()));
        assert!(e.to_string().contains("SYS_RESOURCE"), "{e}");
        // containerd's defaults that the CT lacks are left out rather than failing.
        let small: HashSet<Capability> = [Capability::Chown, Capability::Kill].into();
        let caps = capabilities(&ContainerConfig::default(), &small).unwrap();
        assert_eq!(caps, small);
    }

    #[test]
    fn spec_has_root_mounts_and_pod_files() {
        let c = ContainerConfig {
            working_dir: String::new(),
            ..Default::default()
        };
        let spec = build(SpecInput {
            container_id: "cid",
            config: &c,
            image_config: &image(),
            hostname: "pod1",
            user: ResolvedUser {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![],
            },
            mounts: vec![
                StagedMount {
                    host_path: "/var/lib/kubelet/pods/x/etc-hosts".into(),
                    container_path: "/etc/hosts".into(),
                    readonly: true,
                    recursive_read_only: false,
                    propagation: MountPropagation::PropagationHostToContainer,
                },
                StagedMount {
                    host_path: "/srv/data".into(),
                    container_path: "/data".into(),
                    readonly: true,
                    recursive_read_only: true,
                    propagation: MountPropagation::PropagationPrivate,
                },
            ],
            pod_files: &["hosts", "resolv.conf", "hostname"],
            pod_caps: &host_caps(),
            devices: &[],
            host_devices: &[],
            devices_as_mounts: false,
        })
        .unwrap();
        assert_eq!(
            spec.root().as_ref().unwrap().path(),
            &PathBuf::from("/pvecri/ctrs/cid/rootfs")
        );
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.cwd(), &PathBuf::from("/work"));
        assert_eq!(process.user().uid(), 1000);
        let mounts = spec.mounts().as_ref().unwrap();
        let dests: Vec<String> = mounts
            .iter()
            .map(|m| m.destination().display().to_string())
            .collect();
        assert_eq!(
            dests.iter().filter(|d| *d == "/etc/hosts").count(),
            1,
            "the kubelet's /etc/hosts wins"
        );
        let hosts = mounts
            .iter()
            .find(|m| m.destination() == &PathBuf::from("/etc/hosts"))
            .unwrap();
        assert_eq!(
            hosts.source().as_ref().unwrap(),
            &PathBuf::from("/var/lib/kubelet/pods/x/etc-hosts")
        );
        assert_eq!(
            hosts.options().as_ref().unwrap(),
            &["rbind", "rslave", "ro"]
        );
        let data = mounts
            .iter()
            .position(|m| m.destination() == &PathBuf::from("/data"))
            .unwrap();
        assert_eq!(
            mounts[data].options().as_ref().unwrap(),
            &["rbind", "rprivate", "ro", "rro"]
        );
        let hosts_at = mounts.iter().position(|m| std::ptr::eq(m, hosts)).unwrap();
        // podinit finds the passed mount trees by this annotation, in the order passed.
        let passed = &spec.annotations().as_ref().unwrap()[podinit::api::PASSED_MOUNTS_ANNOTATION];
        assert_eq!(passed, &format!("[{hosts_at},{data}]"));
        assert!(dests.contains(&"/etc/resolv.conf".to_string()));
        let linux = spec.linux().as_ref().unwrap();
        let ns: Vec<LinuxNamespaceType> = linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        assert_eq!(
            ns,
            [
                LinuxNamespaceType::Mount,
                LinuxNamespaceType::Cgroup,
                LinuxNamespaceType::Pid
            ]
        );
        assert!(
            linux
                .masked_paths()
                .as_ref()
                .unwrap()
                .contains(&"/proc/kcore".to_string())
        );
    }

    #[test]
    fn host_pid_shares_podinit_s_namespace() {
        let c = ContainerConfig {
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(k8s_cri::v1::NamespaceOption {
                        pid: NamespaceMode::Node as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let spec = build(SpecInput {
            container_id: "c",
            config: &c,
            image_config: &image(),
            hostname: "h",
            user: ResolvedUser::default(),
            mounts: vec![],
            pod_files: &[],
            pod_caps: &host_caps(),
            devices: &[],
            host_devices: &[],
            devices_as_mounts: false,
        })
        .unwrap();
        let ns: Vec<LinuxNamespaceType> = spec
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        assert_eq!(ns, [LinuxNamespaceType::Mount, LinuxNamespaceType::Cgroup]);
    }

    #[test]
    fn privileged_containers_keep_the_pods_cgroup_namespace_and_a_writable_cgroupfs() {
        let plain = build(SpecInput {
            container_id: "c",
            config: &ContainerConfig::default(),
            image_config: &image(),
            hostname: "h",
            user: ResolvedUser::default(),
            mounts: vec![],
            pod_files: &[],
            pod_caps: &host_caps(),
            devices: &[],
            host_devices: &[],
            devices_as_mounts: false,
        })
        .unwrap();
        let privileged = build(SpecInput {
            container_id: "c",
            config: &with_caps(&[], &[], true),
            image_config: &image(),
            hostname: "h",
            user: ResolvedUser::default(),
            mounts: vec![],
            pod_files: &[],
            pod_caps: &host_caps(),
            devices: &[],
            host_devices: &[],
            devices_as_mounts: false,
        })
        .unwrap();
        let cgroup_ns = |s: &Spec| {
            s.linux()
                .as_ref()
                .and_then(|l| l.namespaces().clone())
                .unwrap_or_default()
                .iter()
                .any(|n| n.typ() == LinuxNamespaceType::Cgroup)
        };
        let cgroup_opts = |s: &Spec| {
            s.mounts()
                .as_ref()
                .unwrap()
                .iter()
                .find(|m| m.destination() == std::path::Path::new("/sys/fs/cgroup"))
                .and_then(|m| m.options().clone())
                .unwrap()
        };
        assert!(cgroup_ns(&plain));
        assert!(cgroup_opts(&plain).contains(&"ro".to_string()));
        assert!(!cgroup_ns(&privileged));
        assert!(cgroup_opts(&privileged).contains(&"rw".to_string()));
    }

    #[test]
    fn devices_and_their_cgroup_rules_as_containerd_writes_them() {
        use oci_spec::runtime::LinuxDeviceType;
        let node = |path: &str, typ, major, minor| HostDevice {
            host_path: PathBuf::from(path),
            container_path: path.into(),
            typ,
            major,
            minor,
            file_mode: 0o660,
            uid: 0,
            gid: 6,
        };
        let cri = [ResolvedDevice {
            nodes: vec![node("/dev/fuse", LinuxDeviceType::C, 10, 229)],
            permissions: "rw".into(),
        }];
        let host = [node("/dev/loop0", LinuxDeviceType::B, 7, 0)];
        let build_with = |config: &ContainerConfig| {
            build(SpecInput {
                container_id: "c",
                config,
                image_config: &image(),
                hostname: "h",
                user: ResolvedUser::default(),
                mounts: vec![],
                pod_files: &[],
                pod_caps: &host_caps(),
                devices: &cri,
                host_devices: &host,
                devices_as_mounts: false,
            })
            .unwrap()
        };
        let rules_of = |s: &Spec| -> Vec<String> {
            let linux = s.linux().as_ref().unwrap();
            linux
                .resources()
                .as_ref()
                .unwrap()
                .devices()
                .clone()
                .unwrap()
                .iter()
                .map(|r| r.to_string())
                .collect()
        };
        let paths_of = |s: &Spec| -> Vec<String> {
            s.linux()
                .as_ref()
                .unwrap()
                .devices()
                .clone()
                .unwrap_or_default()
                .iter()
                .map(|d| d.path().display().to_string())
                .collect()
        };
        let plain = build_with(&ContainerConfig::default());
        assert_eq!(paths_of(&plain), ["/dev/fuse"]);
        let rules = rules_of(&plain);
        assert_eq!(rules.len(), 2, "{rules:?}");
        let fuse = &plain.linux().as_ref().unwrap().devices().as_ref().unwrap()[0];
        assert_eq!(
            (fuse.major(), fuse.minor(), fuse.file_mode()),
            (10, 229, Some(0o660))
        );
        // Each rule as podinit reads it: deny all, then the device with its permissions.
        let policy = podinit::devices::DevicePolicy::from_rules(
            &podinit::devices::rules_from_spec(
                plain
                    .linux()
                    .as_ref()
                    .unwrap()
                    .resources()
                    .as_ref()
                    .unwrap()
                    .devices()
                    .as_ref()
                    .unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        use podinit::devices::{Access, DevType};
        assert!(policy.permits(DevType::Char, 10, 229, Access(6)));
        assert!(!policy.permits(DevType::Block, 7, 0, Access::READ));

        let privileged = build_with(&with_caps(&[], &[], true));
        assert_eq!(paths_of(&privileged), ["/dev/fuse", "/dev/loop0"]);
        let rules = privileged
            .linux()
            .as_ref()
            .unwrap()
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap();
        let policy = podinit::devices::DevicePolicy::from_rules(
            &podinit::devices::rules_from_spec(&rules).unwrap(),
        )
        .unwrap();
        assert!(policy.allows_everything());
    }
}
