//! The subset of the OCI runtime spec podinit honours, checked and turned into a
//! [`ContainerConfig`]. Anything podinit cannot honour is rejected with a message naming the
//! setting. `linux.seccomp` is compiled here (see [`crate::seccomp`]), so that a profile
//! podinit cannot apply fails the create, not the start.

use std::path::{Component, Path, PathBuf};

use std::collections::HashMap;

use oci_spec::runtime::{
    Hooks, Linux, LinuxCapabilities, LinuxIdMapping, LinuxNamespaceType, LinuxResources, Mount,
    PosixRlimit, PosixRlimitType, Root, User,
};
use serde::Deserialize;

use crate::api::{STDIN_ANNOTATION, STDIN_ONCE_ANNOTATION, STOP_SIGNAL_ANNOTATION};
use crate::mountopts::{self, MountOptions};
use crate::{caps, signals};

/// Default PATH for finding the executable when the spec's environment has none (runc's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, SpecError> {
    Err(SpecError::Invalid(msg.into()))
}

/// What podinit needs to know about the pod to check a spec against it.
#[derive(Clone, Debug, Default)]
pub struct PodContext {
    /// The pod's hostname (the container shares the pod's UTS namespace).
    pub hostname: String,
    /// (dev, ino) of the pod's network, IPC and UTS namespaces, to recognise a spec naming them.
    pub net_ns: Option<(u64, u64)>,
    pub ipc_ns: Option<(u64, u64)>,
    pub uts_ns: Option<(u64, u64)>,
}

/// A validated container: everything the start and exec paths need.
#[derive(Clone, Debug)]
pub struct ContainerConfig {
    pub id: String,
    pub bundle: PathBuf,
    /// Absolute path of the root filesystem as podinit sees it.
    pub root: PathBuf,
    pub root_readonly: bool,
    /// Propagation applied to `/` in the container's mount namespace (`MS_SLAVE | MS_REC`...).
    pub root_propagation: u64,
    pub process: ProcessConfig,
    /// Mounts in the order they are made, podinit's defaults included.
    pub mounts: Vec<MountPlan>,
    pub masked_paths: Vec<PathBuf>,
    pub readonly_paths: Vec<PathBuf>,
    /// The container gets its own PID namespace (else it shares the pod's).
    pub new_pid_ns: bool,
    /// The container gets its own cgroup namespace.
    pub new_cgroup_ns: bool,
    pub resources: Resources,
    /// What the container may do with device nodes (`linux.resources.devices` and runc's
    /// defaults), enforced by its cgroup.
    pub device_policy: crate::devices::DevicePolicy,
    /// Nodes to create in the container (`linux.devices`), in order.
    pub device_nodes: Vec<DeviceNode>,
    /// Sent on pod shutdown.
    pub stop_signal: i32,
    /// Stdin is a pipe that Attach writes to (else /dev/null).
    pub stdin: bool,
    /// Stdin is closed when the first attach that wrote to it ends.
    pub stdin_once: bool,
}

/// A device node `linux.devices` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceNode {
    /// Absolute and clean path inside the container.
    pub path: PathBuf,
    /// `S_IFCHR`, `S_IFBLK` or `S_IFIFO`.
    pub kind: libc::mode_t,
    pub major: u32,
    pub minor: u32,
    /// Permission bits (runc's default 0666).
    pub mode: libc::mode_t,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Clone, Debug, Default)]
pub struct ProcessConfig {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: Option<u32>,
    pub terminal: bool,
    /// (rows, columns)
    pub console_size: Option<(u16, u16)>,
    /// `None`: the spec names no capabilities, the process keeps podinit's.
    pub caps: Option<CapSets>,
    pub no_new_privileges: bool,
    /// Installed just before the process takes the container's identity; exec'd processes
    /// get it too.
    pub seccomp: Option<crate::seccomp::Filter>,
    /// (resource, soft, hard)
    pub rlimits: Vec<(u32, u64, u64)>,
    pub oom_score_adj: Option<i32>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapSets {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountSource {
    /// Bind of a path as podinit sees it (`/pvecri/ctrs/<id>/mounts/0`, `/pvecri/etc/hosts`).
    Bind(PathBuf),
    /// A filesystem (`proc`, `sysfs`, `tmpfs`, `devpts`, `mqueue`) with its source name.
    Fs { fstype: String, source: String },
    /// The pod-wide `/dev/shm` podinit keeps (bound into every container without its own).
    PodShm,
    /// The n-th mount tree passed with Create (see [`crate::api::PASSED_MOUNTS_ANNOTATION`]).
    Passed(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountPlan {
    /// Absolute path inside the container.
    pub destination: PathBuf,
    pub source: MountSource,
    pub options: MountOptions,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub memory_limit: Option<i64>,
    /// Memory + swap, as OCI defines it.
    pub memory_swap: Option<i64>,
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub pids_limit: Option<i64>,
    /// (page size as in the cgroup file name, e.g. `2MB`, limit in bytes)
    pub hugepage_limits: Vec<(String, i64)>,
    /// cgroup v2 files to write as given (`linux.resources.unified`).
    pub unified: Vec<(String, String)>,
    /// CPUs and memory nodes the container may use (cpuset list syntax, `0-3,6`).
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }
}

/// An OCI runtime spec (`config.json`) as podinit reads it: oci-spec's types for every section
/// except `process`, whose oci-spec deserializer validates `execCPUAffinity` with a regex engine
/// that would add ~430 KB of code to this static PID 1. Fields podinit does not support are still
/// read, so that they can be rejected.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecDoc {
    #[serde(default)]
    pub oci_version: String,
    pub root: Option<Root>,
    pub mounts: Option<Vec<Mount>>,
    pub process: Option<ProcessDoc>,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub hooks: Option<Hooks>,
    pub annotations: Option<HashMap<String, String>>,
    pub linux: Option<Linux>,
    pub solaris: Option<serde_json::Value>,
    pub windows: Option<serde_json::Value>,
    pub vm: Option<serde_json::Value>,
    pub zos: Option<serde_json::Value>,
    pub uid_mappings: Option<Vec<LinuxIdMapping>>,
    pub gid_mappings: Option<Vec<LinuxIdMapping>>,
}

/// `process` of the spec (same fields and JSON names as `oci_spec::runtime::Process`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessDoc {
    pub terminal: Option<bool>,
    pub console_size: Option<ConsoleSize>,
    #[serde(default)]
    pub user: User,
    pub args: Option<Vec<String>>,
    pub command_line: Option<String>,
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub cwd: PathBuf,
    pub capabilities: Option<LinuxCapabilities>,
    pub rlimits: Option<Vec<PosixRlimit>>,
    pub no_new_privileges: Option<bool>,
    pub apparmor_profile: Option<String>,
    pub oom_score_adj: Option<i32>,
    pub selinux_label: Option<String>,
    pub io_priority: Option<serde_json::Value>,
    pub scheduler: Option<serde_json::Value>,
    #[serde(rename = "execCPUAffinity")]
    pub exec_cpu_affinity: Option<serde_json::Value>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub struct ConsoleSize {
    #[serde(default)]
    pub height: u64,
    #[serde(default)]
    pub width: u64,
}

/// Reads `<bundle>/config.json` and validates it; `passed` mount trees came with it.
pub fn load(
    id: &str,
    bundle: &Path,
    pod: &PodContext,
    passed: usize,
) -> Result<ContainerConfig, SpecError> {
    let path = bundle.join(crate::api::CONFIG_FILE);
    let data = std::fs::read(&path).map_err(|source| SpecError::Read {
        path: path.clone(),
        source,
    })?;
    let spec: SpecDoc =
        serde_json::from_slice(&data).map_err(|source| SpecError::Parse { path, source })?;
    validate(id, bundle, &spec, pod, passed)
}

/// Checks a spec against what podinit supports and builds the container's configuration.
/// Path existence (root, bind sources) is checked too, so that a bad request fails at create.
/// `passed` is the number of mount trees that came with the request.
pub fn validate(
    id: &str,
    bundle: &Path,
    spec: &SpecDoc,
    pod: &PodContext,
    passed: usize,
) -> Result<ContainerConfig, SpecError> {
    reject_unsupported_top_level(spec, pod)?;

    let root = spec
        .root
        .as_ref()
        .ok_or_else(|| SpecError::Invalid("root: missing".into()))?;
    let root_path = resolve_in_bundle(bundle, root.path());
    if !root_path.is_dir() {
        return invalid(format!(
            "root.path {} is not a directory",
            root_path.display()
        ));
    }

    let process = spec
        .process
        .as_ref()
        .ok_or_else(|| SpecError::Invalid("process: missing".into()))?;
    let mut process = validate_process(process)?;

    // Not `Linux::default()`: oci-spec's default carries namespaces and masked paths.
    let linux = match &spec.linux {
        Some(l) => l.clone(),
        None => serde_json::from_str::<oci_spec::runtime::Linux>("{}")
            .map_err(|e| SpecError::Invalid(e.to_string()))?,
    };
    let mut new_pid_ns = false;
    let mut new_cgroup_ns = false;
    for ns in linux.namespaces().iter().flatten() {
        let has_path = ns.path().is_some();
        let name = format!("{:?}", ns.typ()).to_lowercase();
        match ns.typ() {
            LinuxNamespaceType::Mount if !has_path => {}
            LinuxNamespaceType::Pid if !has_path => new_pid_ns = true,
            LinuxNamespaceType::Cgroup if !has_path => new_cgroup_ns = true,
            LinuxNamespaceType::Network | LinuxNamespaceType::Ipc | LinuxNamespaceType::Uts => {
                let pod_ns = match ns.typ() {
                    LinuxNamespaceType::Network => pod.net_ns,
                    LinuxNamespaceType::Ipc => pod.ipc_ns,
                    _ => pod.uts_ns,
                };
                match ns.path() {
                    None => {
                        return invalid(format!(
                            "linux.namespaces: a new {name} namespace was requested, but every \
                             container shares the pod's"
                        ));
                    }
                    Some(p) => {
                        let same = ns_id(p).is_some() && ns_id(p) == pod_ns;
                        if !same {
                            return invalid(format!(
                                "linux.namespaces: {name} namespace {} is not the pod's",
                                p.display()
                            ));
                        }
                    }
                }
            }
            LinuxNamespaceType::User => {
                return invalid(
                    "linux.namespaces: user namespaces are not supported (the pod CT provides one)",
                );
            }
            _ => {
                return invalid(format!(
                    "linux.namespaces: {name} namespace{} is not supported",
                    if has_path { " with a path" } else { "" }
                ));
            }
        }
    }

    let root_propagation = match linux.rootfs_propagation().as_deref() {
        None | Some("") | Some("rslave") | Some("slave") => libc::MS_SLAVE | libc::MS_REC,
        Some("rprivate") | Some("private") => libc::MS_PRIVATE | libc::MS_REC,
        Some(other) => {
            return invalid(format!(
                "linux.rootfsPropagation {other:?} is not supported"
            ));
        }
    };

    if let Some(profile) = linux.seccomp() {
        process.seccomp =
            Some(crate::seccomp::compile(profile).map_err(|e| SpecError::Invalid(e.to_string()))?);
    }
    reject_unsupported_linux(&linux)?;

    let resources = match linux.resources() {
        Some(r) => validate_resources(r)?,
        None => Resources::default(),
    };
    let rules = match linux
        .resources()
        .as_ref()
        .and_then(|r| r.devices().as_ref())
    {
        Some(d) => crate::devices::rules_from_spec(d),
        None => Ok(Vec::new()),
    }
    .and_then(|r| crate::devices::DevicePolicy::from_rules(&r))
    .map_err(|e| SpecError::Invalid(e.to_string()))?;
    let device_nodes = device_nodes(linux.devices().as_deref().unwrap_or(&[]))?;

    let spec_mounts = spec.mounts.as_deref().unwrap_or(&[]);
    let passed_at = passed_mount_indices(spec, spec_mounts.len(), passed)?;
    let mounts = plan_mounts(bundle, spec_mounts, &passed_at)?;

    let masked_paths = abs_paths("linux.maskedPaths", linux.masked_paths())?;
    let readonly_paths = abs_paths("linux.readonlyPaths", linux.readonly_paths())?;

    let stop_signal = match spec
        .annotations
        .as_ref()
        .and_then(|a| a.get(STOP_SIGNAL_ANNOTATION))
    {
        None => libc::SIGTERM,
        Some(s) => signals::parse(s).ok_or_else(|| {
            SpecError::Invalid(format!(
                "annotation {STOP_SIGNAL_ANNOTATION}: {s:?} is not a signal"
            ))
        })?,
    };

    let flag = |key: &str| -> Result<bool, SpecError> {
        match spec
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
        {
            None | Some("false") | Some("") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(SpecError::Invalid(format!(
                "annotation {key}: {other:?} is not true or false"
            ))),
        }
    };
    let stdin = flag(STDIN_ANNOTATION)?;
    let stdin_once = flag(STDIN_ONCE_ANNOTATION)?;

    Ok(ContainerConfig {
        id: id.to_string(),
        bundle: bundle.to_path_buf(),
        root: root_path,
        root_readonly: root.readonly().unwrap_or(false),
        root_propagation,
        process,
        mounts,
        masked_paths,
        readonly_paths,
        new_pid_ns,
        new_cgroup_ns,
        resources,
        device_policy: rules,
        device_nodes,
        stop_signal,
        stdin,
        stdin_once,
    })
}

/// `linux.devices`: nodes at absolute paths, of type `c` (or `u`), `b` or `p`, with runc's
/// defaults (mode 0666, owned by root).
fn device_nodes(devices: &[oci_spec::runtime::LinuxDevice]) -> Result<Vec<DeviceNode>, SpecError> {
    use oci_spec::runtime::LinuxDeviceType;
    let mut out = Vec::with_capacity(devices.len());
    for (i, d) in devices.iter().enumerate() {
        let p = d.path();
        let field = format!("linux.devices[{i}] ({})", p.display());
        if !p.is_absolute() || p.as_os_str().as_encoded_bytes().contains(&0) {
            return invalid(format!("{field}: path must be absolute"));
        }
        let path = clean_container_path(p);
        if path == Path::new("/") {
            return invalid(format!("{field}: path names no file"));
        }
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
            LinuxDeviceType::B => libc::S_IFBLK,
            LinuxDeviceType::P => libc::S_IFIFO,
            LinuxDeviceType::A => return invalid(format!("{field}: type a is not a node type")),
        };
        let number = |name: &str, v: i64| {
            u32::try_from(v)
                .map_err(|_| SpecError::Invalid(format!("{field}: {name} {v} is out of range")))
        };
        out.push(DeviceNode {
            path,
            kind,
            major: number("major", d.major())?,
            minor: number("minor", d.minor())?,
            mode: d.file_mode().unwrap_or(0o666) & 0o7777,
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        });
    }
    Ok(out)
}

fn reject_unsupported_top_level(spec: &SpecDoc, pod: &PodContext) -> Result<(), SpecError> {
    if let Some(h) = spec.hostname.as_deref()
        && !h.is_empty()
        && h != pod.hostname
    {
        return invalid(format!(
            "hostname {h:?} differs from the pod's {:?}; containers share the pod's UTS namespace",
            pod.hostname
        ));
    }
    if spec.domainname.as_deref().is_some_and(|d| !d.is_empty()) {
        return invalid("domainname: not supported (containers share the pod's UTS namespace)");
    }
    if let Some(hooks) = &spec.hooks {
        let any = [
            hooks.prestart(),
            hooks.create_runtime(),
            hooks.create_container(),
            hooks.start_container(),
            hooks.poststart(),
            hooks.poststop(),
        ]
        .iter()
        .any(|h| h.as_ref().is_some_and(|v| !v.is_empty()));
        if any {
            return invalid("hooks: not supported");
        }
    }
    if spec.uid_mappings.as_ref().is_some_and(|m| !m.is_empty())
        || spec.gid_mappings.as_ref().is_some_and(|m| !m.is_empty())
    {
        return invalid("uidMappings/gidMappings: not supported");
    }
    if spec.solaris.is_some() || spec.windows.is_some() || spec.vm.is_some() || spec.zos.is_some() {
        return invalid("only Linux containers are supported");
    }
    Ok(())
}

fn reject_unsupported_linux(linux: &Linux) -> Result<(), SpecError> {
    let nonempty = |name: &str, present: bool| -> Result<(), SpecError> {
        if present {
            invalid(format!("linux.{name}: not supported"))
        } else {
            Ok(())
        }
    };
    nonempty(
        "uidMappings/gidMappings",
        linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
            || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty()),
    )?;
    nonempty(
        "sysctl (set pod sysctls on the pod)",
        linux.sysctl().as_ref().is_some_and(|m| !m.is_empty()),
    )?;
    nonempty(
        "mountLabel",
        linux.mount_label().as_ref().is_some_and(|m| !m.is_empty()),
    )?;
    nonempty("intelRdt", linux.intel_rdt().is_some())?;
    nonempty("personality", linux.personality().is_some())?;
    nonempty(
        "timeOffsets",
        linux.time_offsets().as_ref().is_some_and(|m| !m.is_empty()),
    )?;
    nonempty("memoryPolicy", linux.memory_policy().is_some())?;
    nonempty(
        "netDevices",
        linux.net_devices().as_ref().is_some_and(|m| !m.is_empty()),
    )?;
    Ok(())
}

fn validate_process(p: &ProcessDoc) -> Result<ProcessConfig, SpecError> {
    let args = p.args.clone().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return invalid("process.args: no command given");
    }
    let env = p.env.clone().unwrap_or_default();
    for s in args.iter().chain(env.iter()) {
        if s.contains('\0') {
            return invalid("process.args/env: NUL byte in a string");
        }
    }
    let cwd = p.cwd.clone();
    if !cwd.is_absolute() {
        return invalid(format!(
            "process.cwd {} is not an absolute path",
            cwd.display()
        ));
    }
    if p.command_line.is_some() {
        return invalid("process.commandLine: not supported (Windows only)");
    }
    if let Some(profile) = p.apparmor_profile.as_deref()
        && !profile.is_empty()
        && profile != "unconfined"
    {
        return invalid(format!(
            "process.apparmorProfile {profile:?}: not supported (the pod CT's profile applies)"
        ));
    }
    if p.selinux_label.as_ref().is_some_and(|l| !l.is_empty()) {
        return invalid("process.selinuxLabel: not supported");
    }
    if p.io_priority.is_some() {
        return invalid("process.ioPriority: not supported");
    }
    if p.scheduler.is_some() {
        return invalid("process.scheduler: not supported");
    }
    if p.exec_cpu_affinity.is_some() {
        return invalid("process.execCPUAffinity: not supported");
    }
    let user = &p.user;
    if user.username().as_ref().is_some_and(|u| !u.is_empty()) {
        return invalid("process.user.username: not supported (Windows only)");
    }
    let caps = p.capabilities.as_ref().map(|c| CapSets {
        bounding: caps::mask(c.bounding().as_ref()),
        effective: caps::mask(c.effective().as_ref()),
        permitted: caps::mask(c.permitted().as_ref()),
        inheritable: caps::mask(c.inheritable().as_ref()),
        ambient: caps::mask(c.ambient().as_ref()),
    });
    if let Some(c) = caps {
        let outside = c.ambient & !(c.permitted & c.inheritable);
        if outside != 0 {
            return invalid(
                "process.capabilities.ambient: ambient capabilities must also be permitted and \
                 inheritable",
            );
        }
    }
    let mut rlimits = Vec::new();
    for r in p.rlimits.iter().flatten() {
        if r.soft() > r.hard() {
            return invalid(format!(
                "process.rlimits {:?}: soft limit above hard limit",
                r.typ()
            ));
        }
        rlimits.push((rlimit_resource(r.typ()), r.soft(), r.hard()));
    }
    if let Some(adj) = p.oom_score_adj
        && !(-1000..=1000).contains(&adj)
    {
        return invalid(format!("process.oomScoreAdj {adj} is outside -1000..=1000"));
    }
    let console_size = p.console_size.as_ref().map(|b| {
        (
            u16::try_from(b.height).unwrap_or(u16::MAX),
            u16::try_from(b.width).unwrap_or(u16::MAX),
        )
    });
    Ok(ProcessConfig {
        args,
        env,
        cwd,
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        umask: user.umask(),
        terminal: p.terminal.unwrap_or(false),
        console_size,
        caps,
        no_new_privileges: p.no_new_privileges.unwrap_or(false),
        seccomp: None, // from linux.seccomp, in validate
        rlimits,
        oom_score_adj: p.oom_score_adj,
    })
}

fn rlimit_resource(t: PosixRlimitType) -> u32 {
    use PosixRlimitType::*;
    // glibc's __rlimit_resource_t is u32.
    match t {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

/// cpuset list syntax: comma-separated numbers and ranges.
pub fn is_cpu_list(s: &str) -> bool {
    s.split(',').all(|part| {
        let mut ends = part.splitn(2, '-');
        let num = |x: Option<&str>| {
            x.is_some_and(|x| {
                !x.is_empty() && x.len() <= 5 && x.bytes().all(|b| b.is_ascii_digit())
            })
        };
        match (ends.next(), ends.next()) {
            (a, None) => num(a),
            (a, Some(b)) => num(a) && num(Some(b)),
        }
    })
}

fn validate_resources(r: &LinuxResources) -> Result<Resources, SpecError> {
    let mut out = Resources::default();
    if let Some(m) = r.memory() {
        out.memory_limit = m.limit();
        out.memory_swap = m.swap();
        let unsupported = [
            ("reservation", m.reservation().is_some()),
            ("kernel", m.kernel().is_some()),
            ("kernelTCP", m.kernel_tcp().is_some()),
            ("swappiness", m.swappiness().is_some()),
            ("disableOOMKiller", m.disable_oom_killer() == Some(true)),
        ];
        if let Some((name, _)) = unsupported.iter().find(|(_, set)| *set) {
            return invalid(format!("linux.resources.memory.{name}: not supported"));
        }
    }
    if let Some(c) = r.cpu() {
        out.cpu_shares = c.shares().filter(|s| *s != 0);
        out.cpu_quota = c.quota().filter(|q| *q != 0);
        out.cpu_period = c.period().filter(|p| *p != 0);
        let unsupported = [
            ("idle", c.idle().is_some()),
            ("burst", c.burst().is_some()),
            ("realtimeRuntime", c.realtime_runtime().is_some()),
            ("realtimePeriod", c.realtime_period().is_some()),
        ];
        if let Some((name, _)) = unsupported.iter().find(|(_, set)| *set) {
            return invalid(format!("linux.resources.cpu.{name}: not supported"));
        }
        for (name, list, out) in [
            ("cpus", c.cpus(), &mut out.cpuset_cpus),
            ("mems", c.mems(), &mut out.cpuset_mems),
        ] {
            if let Some(list) = list.as_ref().filter(|s| !s.is_empty()) {
                if !is_cpu_list(list) {
                    return invalid(format!(
                        "linux.resources.cpu.{name}: {list:?} is not a list like 0-3,6"
                    ));
                }
                *out = Some(list.clone());
            }
        }
    }
    if let Some(p) = r.pids() {
        out.pids_limit = Some(p.limit());
    }
    for h in r.hugepage_limits().iter().flatten() {
        let size = h.page_size();
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return invalid(format!(
                "linux.resources.hugepageLimits: bad page size {size:?}"
            ));
        }
        out.hugepage_limits.push((size.clone(), h.limit()));
    }
    if let Some(b) = r.block_io() {
        let any = b.weight().is_some()
            || b.leaf_weight().is_some()
            || b.weight_device().as_ref().is_some_and(|v| !v.is_empty())
            || b.throttle_read_bps_device()
                .as_ref()
                .is_some_and(|v| !v.is_empty())
            || b.throttle_write_bps_device()
                .as_ref()
                .is_some_and(|v| !v.is_empty())
            || b.throttle_read_iops_device()
                .as_ref()
                .is_some_and(|v| !v.is_empty())
            || b.throttle_write_iops_device()
                .as_ref()
                .is_some_and(|v| !v.is_empty());
        if any {
            return invalid("linux.resources.blockIO: not supported");
        }
    }
    if r.network().is_some() {
        return invalid("linux.resources.network: not supported");
    }
    if r.rdma().as_ref().is_some_and(|m| !m.is_empty()) {
        return invalid("linux.resources.rdma: not supported");
    }
    for (k, v) in r.unified().iter().flatten() {
        if k.is_empty() || k.contains('/') || k.starts_with('.') {
            return invalid(format!("linux.resources.unified: bad key {k:?}"));
        }
        out.unified.push((k.clone(), v.clone()));
    }
    out.unified.sort();
    Ok(out)
}

fn resolve_in_bundle(bundle: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        bundle.join(p)
    }
}

fn abs_paths(field: &str, v: &Option<Vec<String>>) -> Result<Vec<PathBuf>, SpecError> {
    let mut out = Vec::new();
    for p in v.iter().flatten() {
        let pb = PathBuf::from(p);
        if !pb.is_absolute() || p.contains('\0') {
            return invalid(format!("{field}: {p:?} is not an absolute path"));
        }
        out.push(pb);
    }
    Ok(out)
}

/// Lexically cleans an absolute container path (`//a/./b/../c` -> `/a/c`); `..` cannot climb
/// above `/`.
pub fn clean_container_path(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

fn default_mount(dest: &str, fstype: &str, source: &str, options: &[&str]) -> MountPlan {
    let opts: Vec<String> = options.iter().map(|s| s.to_string()).collect();
    MountPlan {
        destination: PathBuf::from(dest),
        source: MountSource::Fs {
            fstype: fstype.into(),
            source: source.into(),
        },
        // The defaults are written by us and always parse.
        options: mountopts::parse(&opts, false).unwrap_or_default(),
    }
}

/// Which of the spec's mounts take a passed mount tree: `at[i] = Some(n)` for the mount the
/// annotation lists n-th. The annotation and the passed trees must agree in number.
fn passed_mount_indices(
    spec: &SpecDoc,
    mount_count: usize,
    passed: usize,
) -> Result<Vec<Option<usize>>, SpecError> {
    let key = crate::api::PASSED_MOUNTS_ANNOTATION;
    let listed: Vec<usize> = match spec.annotations.as_ref().and_then(|a| a.get(key)) {
        None => Vec::new(),
        Some(v) => serde_json::from_str(v).map_err(|e| {
            SpecError::Invalid(format!(
                "annotation {key}: {v:?} is not a list of mount indices: {e}"
            ))
        })?,
    };
    if listed.len() != passed {
        return invalid(format!(
            "annotation {key} lists {} mounts, but {passed} mount trees were passed",
            listed.len()
        ));
    }
    let mut at = vec![None; mount_count];
    for (n, &i) in listed.iter().enumerate() {
        match at.get_mut(i) {
            Some(slot @ None) => *slot = Some(n),
            Some(Some(_)) => return invalid(format!("annotation {key}: mount {i} listed twice")),
            None => {
                return invalid(format!(
                    "annotation {key}: mount {i} does not exist (the spec has {mount_count})"
                ));
            }
        }
    }
    Ok(at)
}

/// The spec's mounts with podinit's defaults added for what the spec leaves out: `/proc`,
/// `/sys` (read-only), a `/dev` tmpfs first; `/dev/pts`, the pod's `/dev/shm` and `/dev/mqueue`
/// after the spec's own.
fn plan_mounts(
    bundle: &Path,
    mounts: &[Mount],
    passed_at: &[Option<usize>],
) -> Result<Vec<MountPlan>, SpecError> {
    let mut spec_plans = Vec::new();
    for (i, m) in mounts.iter().enumerate() {
        let passed = passed_at.get(i).copied().flatten();
        spec_plans.push(plan_mount(bundle, m, passed).map_err(|e| {
            SpecError::Invalid(format!("mounts[{i}] ({}): {e}", m.destination().display()))
        })?);
    }
    let has = |d: &str| spec_plans.iter().any(|m| m.destination == Path::new(d));
    let mut out = Vec::new();
    if !has("/proc") {
        out.push(default_mount(
            "/proc",
            "proc",
            "proc",
            &["nosuid", "noexec", "nodev"],
        ));
    }
    if !has("/sys") {
        out.push(default_mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ));
    }
    if !has("/dev") {
        out.push(default_mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ));
    }
    let tail_pts = !has("/dev/pts");
    let tail_shm = !has("/dev/shm");
    let tail_mqueue = !has("/dev/mqueue");
    out.extend(spec_plans);
    if tail_pts {
        out.push(default_mount(
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
        ));
    }
    if tail_shm {
        out.push(MountPlan {
            destination: PathBuf::from("/dev/shm"),
            source: MountSource::PodShm,
            options: MountOptions {
                bind: true,
                ..Default::default()
            },
        });
    }
    if tail_mqueue {
        out.push(default_mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ));
    }
    Ok(out)
}

fn plan_mount(bundle: &Path, m: &Mount, passed: Option<usize>) -> Result<MountPlan, String> {
    let dest = m.destination();
    if !dest.is_absolute() {
        return Err("destination is not an absolute path".into());
    }
    if dest.as_os_str().as_encoded_bytes().contains(&0) {
        return Err("NUL byte in destination".into());
    }
    let destination = clean_container_path(dest);
    let typ = m.typ().as_deref().unwrap_or("");
    let is_bind_type = typ == "bind";
    let options = mountopts::parse(m.options().as_deref().unwrap_or(&[]), is_bind_type)?;
    let source = if is_bind_type || options.bind {
        if !(typ.is_empty() || typ == "bind" || typ == "none") {
            return Err(format!("type {typ:?} with a bind option"));
        }
        let mut options = options;
        options.bind = true;
        if let Some(n) = passed {
            // The tree came with the request; `source` only names it on the host.
            return Ok(MountPlan {
                destination,
                source: MountSource::Passed(n),
                options,
            });
        }
        let src = m
            .source()
            .as_ref()
            .ok_or_else(|| "bind mount without a source".to_string())?;
        let src = resolve_in_bundle(bundle, src);
        if std::fs::symlink_metadata(&src).is_err() {
            return Err(format!("source {} does not exist", src.display()));
        }
        return Ok(MountPlan {
            destination,
            source: MountSource::Bind(src),
            options,
        });
    } else {
        match typ {
            "proc" | "sysfs" | "tmpfs" | "devpts" | "mqueue" | "cgroup" | "cgroup2" => {
                MountSource::Fs {
                    fstype: typ.to_string(),
                    source: m
                        .source()
                        .as_ref()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_else(|| typ.to_string()),
                }
            }
            "" => return Err("mount type missing".into()),
            other => return Err(format!("mount type {other:?} is not supported")),
        }
    };
    if passed.is_some() {
        return Err("a passed mount tree must be a bind mount".into());
    }
    if options.recursive_ro {
        return Err("rro is only supported on bind mounts".into());
    }
    Ok(MountPlan {
        destination,
        source,
        options,
    })
}

/// (dev, ino) of a namespace file, to compare namespaces.
pub fn ns_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Bundle {
        dir: tempfile::TempDir,
    }

    impl Bundle {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::create_dir_all(dir.path().join("rootfs")).expect("mkdir");
            std::fs::create_dir_all(dir.path().join("mounts/0")).expect("mkdir");
            Self { dir }
        }
        fn path(&self) -> &Path {
            self.dir.path()
        }
        fn check(&self, spec: serde_json::Value) -> Result<ContainerConfig, SpecError> {
            self.check_passing(spec, 0)
        }
        fn check_passing(
            &self,
            spec: serde_json::Value,
            passed: usize,
        ) -> Result<ContainerConfig, SpecError> {
            let spec: SpecDoc =
                serde_json::from_value(spec).map_err(|source| SpecError::Parse {
                    path: PathBuf::from("inline"),
                    source,
                })?;
            validate("c1", self.path(), &spec, &pod(), passed)
        }
    }

    fn pod() -> PodContext {
        PodContext {
            hostname: "podhost".into(),
            net_ns: ns_id(Path::new("/proc/self/ns/net")),
            ipc_ns: ns_id(Path::new("/proc/self/ns/ipc")),
            uts_ns: ns_id(Path::new("/proc/self/ns/uts")),
        }
    }

    fn base() -> serde_json::Value {
        json!({
            "ociVersion": "1.2.0",
            "root": {"path": "rootfs"},
            "process": {"args": ["/bin/sh", "-c", "true"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                        "env": ["PATH=/bin"]},
            "linux": {"namespaces": [{"type": "mount"}, {"type": "pid"}]}
        })
    }

    fn with(
        mut v: serde_json::Value,
        pointer: &str,
        value: serde_json::Value,
    ) -> serde_json::Value {
        let (parent, key) = pointer.rsplit_once('/').expect("pointer");
        let target = if parent.is_empty() {
            &mut v
        } else {
            v.pointer_mut(parent).expect("parent exists")
        };
        target[key] = value;
        v
    }

    fn err_of(r: Result<ContainerConfig, SpecError>) -> String {
        r.expect_err("should be rejected").to_string()
    }

    #[test]
    fn minimal_spec_gets_default_mounts() {
        let b = Bundle::new();
        let c = b.check(base()).expect("valid");
        assert_eq!(c.root, b.path().join("rootfs"));
        assert!(c.new_pid_ns);
        assert!(!c.new_cgroup_ns);
        assert_eq!(c.stop_signal, libc::SIGTERM);
        let dests: Vec<_> = c.mounts.iter().map(|m| m.destination.clone()).collect();
        let want: Vec<PathBuf> = [
            "/proc",
            "/sys",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(dests, want);
        assert_eq!(c.mounts[4].source, MountSource::PodShm);
        assert!(c.mounts[1].options.flags & libc::MS_RDONLY != 0);
        assert!(c.process.caps.is_none());
    }

    #[test]
    fn spec_mounts_replace_defaults_and_keep_order() {
        let b = Bundle::new();
        let spec = with(
            base(),
            "/mounts",
            json!([
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["mode=700"]},
                {"destination": "/data/../vol", "type": "bind", "source": "mounts/0",
                 "options": ["rbind", "ro", "rslave"]},
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["size=1m"]}
            ]),
        );
        let c = b.check(spec).expect("valid");
        let dests: Vec<_> = c
            .mounts
            .iter()
            .map(|m| m.destination.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            dests,
            vec![
                "/proc",
                "/sys",
                "/dev",
                "/vol",
                "/dev/shm",
                "/dev/pts",
                "/dev/mqueue"
            ]
        );
        match &c.mounts[3].source {
            MountSource::Bind(p) => assert_eq!(p, &b.path().join("mounts/0")),
            other => panic!("unexpected {other:?}"),
        }
        assert!(c.mounts[3].options.recursive);
    }

    #[test]
    fn passed_mount_trees_are_matched_by_the_annotation() {
        let b = Bundle::new();
        let mounts = json!([
            {"destination": "/a", "type": "bind", "source": "/host/a", "options": ["rbind", "rprivate"]},
            {"destination": "/b", "type": "bind", "source": "mounts/0", "options": ["rbind"]},
            {"destination": "/c", "type": "bind", "source": "/host/c", "options": ["rbind", "ro"]}
        ]);
        let spec = with(
            with(base(), "/mounts", mounts.clone()),
            "/annotations",
            json!({crate::api::PASSED_MOUNTS_ANNOTATION: "[2, 0]"}),
        );
        let c = b.check_passing(spec, 2).expect("valid");
        let find = |d: &str| {
            c.mounts
                .iter()
                .find(|m| m.destination == Path::new(d))
                .expect("planned")
                .source
                .clone()
        };
        // The host paths need not exist here: the trees stand for them.
        assert_eq!(find("/a"), MountSource::Passed(1));
        assert_eq!(find("/c"), MountSource::Passed(0));
        assert_eq!(find("/b"), MountSource::Bind(b.path().join("mounts/0")));

        for (annotation, passed, needle) in [
            ("[2, 0]", 1, "2 mounts, but 1"),
            ("[0, 0]", 2, "listed twice"),
            ("[7]", 1, "does not exist"),
            ("two", 1, "not a list"),
        ] {
            let spec = with(
                with(base(), "/mounts", mounts.clone()),
                "/annotations",
                json!({crate::api::PASSED_MOUNTS_ANNOTATION: annotation}),
            );
            let e = err_of(b.check_passing(spec, passed));
            assert!(e.contains(needle), "{annotation}: {e}");
        }
        // Trees passed without the annotation are refused too.
        let e = err_of(b.check_passing(with(base(), "/mounts", mounts.clone()), 1));
        assert!(e.contains("0 mounts, but 1"), "{e}");
        // A tree can only stand in for a bind mount.
        let spec = with(
            with(
                base(),
                "/mounts",
                json!([{"destination": "/t", "type": "tmpfs"}]),
            ),
            "/annotations",
            json!({crate::api::PASSED_MOUNTS_ANNOTATION: "[0]"}),
        );
        assert!(err_of(b.check_passing(spec, 1)).contains("bind mount"));
    }

    #[test]
    fn missing_bind_source_is_rejected_at_create() {
        let b = Bundle::new();
        let spec = with(
            base(),
            "/mounts",
            json!([{"destination": "/x", "type": "bind", "source": "/does/not/exist", "options": ["rbind"]}]),
        );
        let e = err_of(b.check(spec));
        assert!(
            e.contains("/does/not/exist") && e.contains("does not exist"),
            "{e}"
        );
    }

    #[test]
    fn unsupported_mount_types_and_options() {
        let b = Bundle::new();
        for (m, needle) in [
            (
                json!({"destination": "/x", "type": "overlay", "source": "o"}),
                "overlay",
            ),
            (json!({"destination": "x", "type": "tmpfs"}), "absolute"),
            (
                json!({"destination": "/x", "type": "bind", "source": "mounts/0", "options": ["idmap"]}),
                "idmap",
            ),
        ] {
            let e = err_of(b.check(with(base(), "/mounts", json!([m]))));
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn a_cgroup_mount_comes_with_a_cgroup_namespace() {
        let b = Bundle::new();
        let m = json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                       "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]});
        let spec = with(base(), "/mounts", json!([m]));
        let spec = with(
            spec,
            "/linux/namespaces",
            json!([{"type": "mount"}, {"type": "cgroup"}, {"type": "pid"}]),
        );
        let c = b.check(spec).expect("valid");
        assert!(c.new_cgroup_ns);
        let plan = c
            .mounts
            .iter()
            .find(|m| m.destination == Path::new("/sys/fs/cgroup"))
            .expect("planned");
        assert!(matches!(&plan.source, MountSource::Fs { fstype, .. } if fstype == "cgroup"));
        assert_ne!(plan.options.flags & libc::MS_RDONLY, 0);
    }

    #[test]
    fn specs_written_with_oci_spec_read_the_same() {
        // The daemon writes `oci_spec::runtime::Spec`; podinit's reader must see the same process.
        let b = Bundle::new();
        let json = with(
            base(),
            "/process",
            json!({"args": ["a", "b"], "cwd": "/w", "env": ["X=1"], "terminal": true,
                   "consoleSize": {"height": 24, "width": 80},
                   "user": {"uid": 7, "gid": 8, "additionalGids": [9], "umask": 18},
                   "capabilities": {"bounding": ["CAP_CHOWN"]},
                   "rlimits": [{"type": "RLIMIT_CORE", "soft": 1, "hard": 2}],
                   "noNewPrivileges": true, "oomScoreAdj": 3}),
        );
        let typed: oci_spec::runtime::Spec = serde_json::from_value(json).expect("oci-spec");
        let written = serde_json::to_value(&typed).expect("serialize");
        let c = b.check(written).expect("valid");
        let p = &c.process;
        assert_eq!(p.args, vec!["a", "b"]);
        assert_eq!(p.cwd, PathBuf::from("/w"));
        assert_eq!(p.console_size, Some((24, 80)));
        assert_eq!(
            (p.uid, p.gid, p.additional_gids.clone(), p.umask),
            (7, 8, vec![9], Some(18))
        );
        assert_eq!(p.caps.expect("caps").bounding, 1);
        assert_eq!(p.rlimits, vec![(libc::RLIMIT_CORE, 1, 2)]);
        assert!(p.terminal && p.no_new_privileges);
        assert_eq!(p.oom_score_adj, Some(3));
    }

    #[test]
    fn exec_cpu_affinity_is_rejected() {
        let b = Bundle::new();
        let e = err_of(b.check(with(
            base(),
            "/process/execCPUAffinity",
            json!({"initial": "0"}),
        )));
        assert!(e.contains("execCPUAffinity"), "{e}");
    }

    #[test]
    fn no_linux_section_means_no_namespaces_and_no_masks() {
        let b = Bundle::new();
        let mut spec = base();
        spec.as_object_mut().expect("object").remove("linux");
        let c = b.check(spec).expect("valid");
        assert!(!c.new_pid_ns && !c.new_cgroup_ns);
        assert!(c.masked_paths.is_empty() && c.readonly_paths.is_empty());
    }

    #[test]
    fn namespaces() {
        let b = Bundle::new();
        let shared_pid = with(base(), "/linux/namespaces", json!([{"type": "mount"}]));
        assert!(!b.check(shared_pid).expect("valid").new_pid_ns);

        let new_net = with(
            base(),
            "/linux/namespaces",
            json!([{"type": "mount"}, {"type": "network"}]),
        );
        assert!(err_of(b.check(new_net)).contains("network"));

        let pod_net = with(
            base(),
            "/linux/namespaces",
            json!([{"type": "mount"}, {"type": "network", "path": "/proc/self/ns/net"}]),
        );
        b.check(pod_net).expect("the pod's own netns is fine");

        let other_net = with(
            base(),
            "/linux/namespaces",
            json!([{"type": "network", "path": "/proc/self/ns/mnt"}]),
        );
        assert!(err_of(b.check(other_net)).contains("not the pod's"));

        let user = with(base(), "/linux/namespaces", json!([{"type": "user"}]));
        assert!(err_of(b.check(user)).contains("user"));

        let cg = with(base(), "/linux/namespaces", json!([{"type": "cgroup"}]));
        assert!(b.check(cg).expect("valid").new_cgroup_ns);
    }

    #[test]
    fn process_fields() {
        let b = Bundle::new();
        let spec = with(
            base(),
            "/process",
            json!({
                "args": ["app"], "cwd": "/work", "env": ["A=1"], "terminal": true,
                "user": {"uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 18},
                "capabilities": {"bounding": ["CAP_CHOWN", "CAP_KILL"], "effective": ["CAP_KILL"],
                                  "permitted": ["CAP_KILL"], "inheritable": ["CAP_KILL"],
                                  "ambient": ["CAP_KILL"]},
                "noNewPrivileges": true,
                "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200}],
                "oomScoreAdj": -5
            }),
        );
        let c = b.check(spec).expect("valid");
        let p = &c.process;
        assert_eq!(p.args, vec!["app"]);
        assert_eq!((p.uid, p.gid), (1000, 1000));
        assert_eq!(p.additional_gids, vec![10, 20]);
        assert_eq!(p.umask, Some(18));
        assert!(p.terminal && p.no_new_privileges);
        let caps = p.caps.expect("caps");
        assert_eq!(caps.bounding, 1 | (1 << 5));
        assert_eq!(caps.ambient, 1 << 5);
        assert_eq!(p.rlimits, vec![(libc::RLIMIT_NOFILE, 100, 200)]);
        assert_eq!(p.oom_score_adj, Some(-5));
    }

    #[test]
    fn process_rejections() {
        let b = Bundle::new();
        for (ptr, val, needle) in [
            ("/process/args", json!([]), "no command"),
            ("/process/cwd", json!("rel"), "absolute"),
            (
                "/process/apparmorProfile",
                json!("docker-default"),
                "apparmor",
            ),
            ("/process/selinuxLabel", json!("x"), "selinux"),
            ("/process/oomScoreAdj", json!(5000), "oomScoreAdj"),
            (
                "/process/rlimits",
                json!([{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 5}]),
                "soft limit",
            ),
            (
                "/process/capabilities",
                json!({"ambient": ["CAP_KILL"]}),
                "ambient",
            ),
        ] {
            let e = err_of(b.check(with(base(), ptr, val)));
            assert!(e.contains(needle), "{ptr}: {e}");
        }
        // An unknown capability name does not even parse.
        let e = err_of(b.check(with(
            base(),
            "/process/capabilities",
            json!({"bounding": ["CAP_FLY"]}),
        )));
        assert!(e.contains("CAP_FLY"), "{e}");
        // apparmor "unconfined" is no confinement to apply.
        b.check(with(
            base(),
            "/process/apparmorProfile",
            json!("unconfined"),
        ))
        .expect("unconfined is fine");
    }

    #[test]
    fn hostname_must_be_the_pods() {
        let b = Bundle::new();
        b.check(with(base(), "/hostname", json!("podhost")))
            .expect("same");
        assert!(err_of(b.check(with(base(), "/hostname", json!("other")))).contains("hostname"));
    }

    #[test]
    fn resources() {
        let b = Bundle::new();
        let spec = with(
            base(),
            "/linux/resources",
            json!({"memory": {"limit": 1048576, "swap": 1048576}, "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1,3", "mems": "0"},
                   "pids": {"limit": 64}, "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
                   "unified": {"memory.high": "900000"}}),
        );
        let c = b.check(spec).expect("valid");
        assert_eq!(
            c.resources,
            Resources {
                memory_limit: Some(1_048_576),
                memory_swap: Some(1_048_576),
                cpu_shares: Some(512),
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                pids_limit: Some(64),
                hugepage_limits: vec![("2MB".into(), 0)],
                unified: vec![("memory.high".into(), "900000".into())],
                cpuset_cpus: Some("0-1,3".into()),
                cpuset_mems: Some("0".into()),
            }
        );
        for (val, needle) in [
            (
                json!({"devices": [{"allow": false, "type": "c", "access": "x"}]}),
                "devices[0]",
            ),
            (json!({"memory": {"reservation": 5}}), "reservation"),
            (json!({"cpu": {"cpus": "0-1\n"}}), "cpus"),
            (json!({"cpu": {"mems": "a"}}), "mems"),
            (json!({"cpu": {"cpus": "1,,2"}}), "cpus"),
            (json!({"blockIO": {"weight": 10}}), "blockIO"),
            (json!({"unified": {"../x": "1"}}), "unified"),
        ] {
            let e = err_of(b.check(with(base(), "/linux/resources", val)));
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn seccomp_is_compiled_and_other_linux_fields_are_errors() {
        let b = Bundle::new();
        let c = b
            .check(with(
                base(),
                "/linux/seccomp",
                json!({"defaultAction": "SCMP_ACT_ALLOW",
                       "syscalls": [{"names": ["unshare"], "action": "SCMP_ACT_ERRNO"}]}),
            ))
            .expect("valid");
        assert!(c.process.seccomp.as_ref().is_some_and(|f| !f.is_empty()));
        let e = err_of(b.check(with(
            base(),
            "/linux/seccomp",
            json!({"defaultAction": "SCMP_ACT_NOTIFY"}),
        )));
        assert!(e.contains("SCMP_ACT_NOTIFY"), "{e}");
        for (ptr, val, needle) in [
            (
                "/linux/sysctl",
                json!({"net.ipv4.ip_forward": "1"}),
                "sysctl",
            ),
            (
                "/linux/uidMappings",
                json!([{"containerID": 0, "hostID": 1000, "size": 1}]),
                "uidMappings",
            ),
            (
                "/linux/devices",
                json!([{"path": "dev/fuse", "type": "c", "major": 10, "minor": 229}]),
                "absolute",
            ),
            (
                "/linux/devices",
                json!([{"path": "/dev/x", "type": "a"}]),
                "type a",
            ),
            (
                "/linux/devices",
                json!([{"path": "/dev/x", "type": "c", "major": -1}]),
                "major -1",
            ),
            (
                "/linux/rootfsPropagation",
                json!("shared"),
                "rootfsPropagation",
            ),
            (
                "/hooks",
                json!({"prestart": [{"path": "/bin/true"}]}),
                "hooks",
            ),
        ] {
            let e = err_of(b.check(with(base(), ptr, val)));
            assert!(e.contains(needle), "{ptr}: {e}");
        }
    }

    #[test]
    fn devices_and_their_rules() {
        use crate::devices::{Access, DevType};
        let b = Bundle::new();
        // No rules: runc's default policy.
        let c = b.check(base()).expect("valid");
        assert!(!c.device_policy.permits(DevType::Block, 8, 0, Access::READ));
        assert!(c.device_policy.permits(DevType::Block, 8, 0, Access::MKNOD));
        assert!(c.device_nodes.is_empty());

        let spec = with(
            with(
                base(),
                "/linux/devices",
                json!([{"path": "/dev/../dev/fuse", "type": "c", "major": 10, "minor": 229,
                        "fileMode": 0o20640, "uid": 5, "gid": 6},
                       {"path": "/dev/loop9", "type": "b", "major": 7, "minor": 9},
                       {"path": "/run/fifo", "type": "p"}]),
            ),
            "/linux/resources",
            json!({"devices": [{"allow": false, "access": "rwm"},
                               {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rw"},
                               {"allow": true, "type": "b", "major": 7, "minor": 9, "access": "r"}]}),
        );
        let c = b.check(spec).expect("valid");
        let p = &c.device_policy;
        assert!(p.permits(DevType::Char, 10, 229, Access(6)));
        assert!(p.permits(DevType::Block, 7, 9, Access::READ));
        assert!(!p.permits(DevType::Block, 7, 9, Access::WRITE));
        assert_eq!(
            c.device_nodes[0],
            DeviceNode {
                path: PathBuf::from("/dev/fuse"),
                kind: libc::S_IFCHR,
                major: 10,
                minor: 229,
                mode: 0o640,
                uid: 5,
                gid: 6,
            }
        );
        assert_eq!(c.device_nodes[1].kind, libc::S_IFBLK);
        assert_eq!((c.device_nodes[1].mode, c.device_nodes[1].uid), (0o666, 0));
        assert_eq!(c.device_nodes[2].kind, libc::S_IFIFO);

        // Allow all (a privileged container).
        let spec = with(
            base(),
            "/linux/resources",
            json!({"devices": [{"allow": false, "access": "rwm"}, {"allow": true, "access": "rwm"}]}),
        );
        assert!(
            b.check(spec)
                .expect("valid")
                .device_policy
                .allows_everything()
        );
    }

    #[test]
    fn stop_signal_annotation() {
        let b = Bundle::new();
        let c = b
            .check(with(
                base(),
                "/annotations",
                json!({STOP_SIGNAL_ANNOTATION: "SIGQUIT"}),
            ))
            .expect("valid");
        assert_eq!(c.stop_signal, libc::SIGQUIT);
        let e = err_of(b.check(with(
            base(),
            "/annotations",
            json!({STOP_SIGNAL_ANNOTATION: "SIGNOPE"}),
        )));
        assert!(e.contains("not a signal"));
    }

    #[test]
    fn stdin_annotations() {
        let b = Bundle::new();
        let c = b.check(base()).expect("valid");
        assert!(!c.stdin && !c.stdin_once);
        let c = b
            .check(with(
                base(),
                "/annotations",
                json!({STDIN_ANNOTATION: "true", STDIN_ONCE_ANNOTATION: "true"}),
            ))
            .expect("valid");
        assert!(c.stdin && c.stdin_once);
        let e = err_of(b.check(with(
            base(),
            "/annotations",
            json!({STDIN_ANNOTATION: "yes"}),
        )));
        assert!(e.contains(STDIN_ANNOTATION), "{e}");
    }

    #[test]
    fn root_must_exist() {
        let b = Bundle::new();
        let e = err_of(b.check(with(base(), "/root", json!({"path": "nope"}))));
        assert!(e.contains("root.path"), "{e}");
        let c = b
            .check(with(
                base(),
                "/root",
                json!({"path": "rootfs", "readonly": true}),
            ))
            .expect("valid");
        assert!(c.root_readonly);
    }

    #[test]
    fn clean_paths() {
        assert_eq!(
            clean_container_path(Path::new("/a/./b/../c")),
            PathBuf::from("/a/c")
        );
        assert_eq!(
            clean_container_path(Path::new("/../../x")),
            PathBuf::from("/x")
        );
        assert_eq!(clean_container_path(Path::new("//")), PathBuf::from("/"));
    }
}
