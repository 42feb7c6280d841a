//! What the daemon asks of a pod host, and what it gets back.
//!
//! Everything in a [`PodSpec`] ends up in a CT definition (an LXC config file, later a Proxmox
//! CT config), whose formats are line based. [`PodSpec::validate`] therefore refuses anything
//! that could smuggle a line break or a key into those files, before any driver renders it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sysctl;

/// Host uid and gid that root of an unprivileged CT maps to (Proxmox's default idmap).
pub const UNPRIVILEGED_ID_BASE: u32 = 100_000;
/// Number of ids mapped into an unprivileged CT.
pub const UNPRIVILEGED_ID_COUNT: u32 = 65_536;

/// One contiguous range of ids: ids `0..count` inside the CT are `host..host + count` on the
/// host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub host: u32,
    pub count: u32,
}

/// The ID map of an unprivileged CT (one range for users, one for groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub uid: IdRange,
    pub gid: IdRange,
}

impl IdMap {
    /// Proxmox's default for unprivileged CTs: 0 -> 100000, 65536 ids.
    pub const PROXMOX_DEFAULT: IdMap = IdMap {
        uid: IdRange {
            host: UNPRIVILEGED_ID_BASE,
            count: UNPRIVILEGED_ID_COUNT,
        },
        gid: IdRange {
            host: UNPRIVILEGED_ID_BASE,
            count: UNPRIVILEGED_ID_COUNT,
        },
    };

    /// Host uid and gid of the CT's root.
    pub fn root(&self) -> (u32, u32) {
        (self.uid.host, self.gid.host)
    }

    /// Checks that each range is non-empty, fits in 32 bits and leaves the host's root out.
    pub fn validate(&self) -> Result<(), SpecError> {
        for (what, r) in [("uid", self.uid), ("gid", self.gid)] {
            if r.count == 0 {
                return Err(invalid("idmap", format!("the {what} range is empty")));
            }
            if r.host == 0 {
                return Err(invalid(
                    "idmap",
                    format!("the {what} range would map the CT's ids onto the host's root (0)"),
                ));
            }
            // The kernel refuses ranges that wrap around; (uid_t)-1 is never an id.
            if u64::from(r.host) + u64::from(r.count) > u64::from(u32::MAX) {
                return Err(invalid(
                    "idmap",
                    format!(
                        "the {what} range {}+{} goes past the last id (4294967294)",
                        r.host, r.count
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Network namespace of the pod CT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// A new network namespace holding only `lo` (up); CNI adds the pod's interface.
    Isolated,
    /// The host's network namespace (`hostNetwork: true`).
    Host,
}

/// How the kubelet names cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    /// Plain paths such as `/kubepods/burstable/pod<uid>`.
    #[default]
    Cgroupfs,
    /// Slice names such as `kubepods-burstable-pod<uid>.slice`.
    Systemd,
}

/// Optional pod-level limits. The kubelet usually sets them on the pod's parent cgroup already;
/// these land on the CT's own cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodResources {
    /// CFS period in microseconds (default 100000 when a quota is given).
    pub cpu_period: Option<u64>,
    /// CFS quota in microseconds per period; zero or negative means unlimited.
    pub cpu_quota: Option<i64>,
    /// cgroup v1 `cpu.shares`; converted to `cpu.weight` on cgroup v2.
    pub cpu_shares: Option<u64>,
    /// Memory limit in bytes.
    pub memory_limit_bytes: Option<u64>,
}

/// The CT a pod runs in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSpec {
    /// Pod sandbox id: 64 lowercase hex characters.
    pub id: String,
    /// `<namespace>/<pod name>`, for descriptions and tags.
    pub name: String,
    pub namespace: String,
    /// The pod's UID (Kubernetes metadata), shown in Proxmox's description of the CT.
    #[serde(default)]
    pub uid: String,
    pub hostname: String,
    /// Host directory bound at `/pvecri` inside the CT; host mounts made under it later show
    /// up inside (the driver makes it a shared mount; the CT's copy is its slave).
    pub pod_dir: PathBuf,
    /// Host path of the static podinit binary, bound read-only at `/sbin/podinit`.
    pub podinit: PathBuf,
    pub network: NetworkMode,
    /// `hostPID`: the CT stays in the host's PID namespace (podinit is not PID 1 there, and
    /// the pod's processes see, and are seen by, every process of the node).
    #[serde(default)]
    pub host_pid: bool,
    /// `hostIPC`: the CT stays in the host's IPC namespace, and its `/dev/shm` is the host's.
    #[serde(default)]
    pub host_ipc: bool,
    /// The kubelet's cgroup parent (a cgroupfs path or a systemd slice name).
    pub cgroup_parent: Option<String>,
    pub cgroup_driver: CgroupDriver,
    /// Wanted `oom_score_adj` of the CT's init; raised to the daemon's own value when lower
    /// (see [`crate::oom`]).
    pub oom_score_adj: Option<i32>,
    pub resources: PodResources,
    /// Namespaced sysctls, `net.*` only with an isolated network.
    pub sysctls: BTreeMap<String, String>,
    /// `true`: privileged CT (container root is host root). `false`: unprivileged CT with its
    /// own user namespace, whose ids are mapped as [`PodSpec::idmap`] says.
    pub privileged: bool,
    /// The ID map of an unprivileged CT (the kubelet's, for `hostUsers: false` pods);
    /// `None` is Proxmox's default, [`IdMap::PROXMOX_DEFAULT`]. Must be `None` when
    /// privileged.
    #[serde(default)]
    pub idmap: Option<IdMap>,
    pub labels: BTreeMap<String, String>,
    /// A warm pool CT: made ahead for a pod not known yet (see [`crate::warm`]).
    #[serde(default)]
    pub warm: bool,
}

/// A started CT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtRuntime {
    /// Host PID of the CT's init (podinit).
    pub init_pid: u32,
    /// The CT's network namespace, for CNI (`/proc/<init_pid>/ns/net`).
    pub netns_path: PathBuf,
}

impl CtRuntime {
    pub fn for_init(init_pid: u32) -> Self {
        Self {
            init_pid,
            netns_path: PathBuf::from(format!("/proc/{init_pid}/ns/net")),
        }
    }

    /// Path of one of the CT's namespaces (`net`, `ipc`, `uts`, `pid`, `mnt`, `cgroup`,
    /// `user`), valid while the init lives.
    pub fn ns_path(&self, namespace: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/{namespace}", self.init_pid))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtStatus {
    NotFound,
    Stopped,
    Running { init_pid: u32 },
}

/// A CT the pod host manages, as found on the node (also after a daemon restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtInfo {
    /// The pod sandbox id.
    pub id: String,
    /// `<namespace>/<pod name>` as given at create.
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub status: CtStatus,
    /// Driver-specific name of the CT, for logs (`lxc:<lxcpath>/<id>`, later `pve:<vmid>`).
    pub handle: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SpecError {
    pub field: String,
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// `true` for a pod sandbox id: exactly 64 lowercase hex characters.
pub fn is_pod_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl PodSpec {
    /// Host uid/gid that root inside this pod's CT has: podinit, and whatever it creates in
    /// the pod directory, is owned by it.
    pub fn ct_root_host_ids(&self) -> (u32, u32) {
        match self.user_idmap() {
            None => (0, 0),
            Some(map) => map.root(),
        }
    }

    /// The CT's ID map: `None` for a privileged CT, else the one given or Proxmox's default.
    pub fn user_idmap(&self) -> Option<IdMap> {
        (!self.privileged).then(|| self.idmap.unwrap_or(IdMap::PROXMOX_DEFAULT))
    }

    /// Checks every field a driver renders into a CT definition.
    pub fn validate(&self) -> Result<(), SpecError> {
        if !is_pod_id(&self.id) {
            return Err(invalid("id", "must be 64 lowercase hex characters"));
        }
        check_text("name", &self.name)?;
        check_text("namespace", &self.namespace)?;
        check_text("uid", &self.uid)?;
        check_hostname(&self.hostname)?;
        check_path("pod_dir", &self.pod_dir)?;
        check_path("podinit", &self.podinit)?;
        if let Some(parent) = &self.cgroup_parent {
            check_text("cgroup_parent", parent)?;
        }
        for (key, value) in &self.labels {
            check_text("labels", key)?;
            check_text("labels", value)?;
        }
        sysctl::validate_all(&self.sysctls, self.network)
            .map_err(|e| invalid("sysctls", e.to_string()))?;
        if let Some(map) = &self.idmap {
            if self.privileged {
                return Err(invalid(
                    "idmap",
                    "a privileged CT has no ID map (its ids are the host's)",
                ));
            }
            map.validate()?;
        }
        if !self.privileged && (self.host_pid || self.host_ipc) {
            return Err(invalid(
                "privileged",
                "a pod in the host's PID or IPC namespace cannot have its own user namespace",
            ));
        }
        if self.host_ipc
            && self
                .sysctls
                .keys()
                .any(|k| !sysctl::normalize(k).starts_with("net."))
        {
            return Err(invalid(
                "sysctls",
                "IPC sysctls would change the host's own settings in a host IPC namespace",
            ));
        }
        if let Some(quota) = self.resources.cpu_quota
            && quota > 0
            && self.resources.cpu_period == Some(0)
        {
            return Err(invalid(
                "resources.cpu_period",
                "must not be 0 with a quota",
            ));
        }
        Ok(())
    }
}

/// Free text (names, labels): anything but control characters, which would end a config line.
fn check_text(field: &str, value: &str) -> Result<(), SpecError> {
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// Hostname as the UTS namespace takes it: 1 to 64 of `[A-Za-z0-9.-]`.
fn check_hostname(hostname: &str) -> Result<(), SpecError> {
    let ok = (1..=64).contains(&hostname.len())
        && hostname
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(invalid("hostname", "must be 1 to 64 of [A-Za-z0-9.-]"))
    }
}

/// Absolute, normal, no control characters and no whitespace at either end (config values are
/// trimmed by LXC).
fn check_path(field: &str, path: &Path) -> Result<(), SpecError> {
    let Some(text) = path.to_str() else {
        return Err(invalid(field, "must be valid UTF-8"));
    };
    if !path.is_absolute() {
        return Err(invalid(field, "must be an absolute path"));
    }
    if text.chars().any(char::is_control) || text.trim_end() != text {
        return Err(invalid(
            field,
            "must not contain control characters or end in whitespace",
        ));
    }
    if path
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(invalid(field, "must not contain `..`"));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    pub(crate) fn spec() -> PodSpec {
        PodSpec {
            id: ID.to_string(),
            name: "default/web".to_string(),
            namespace: "default".to_string(),
            hostname: "web".to_string(),
            pod_dir: PathBuf::from("/var/lib/pvecri/pods").join(ID),
            podinit: PathBuf::from("/usr/lib/pvecri/podinit"),
            network: NetworkMode::Isolated,
            host_pid: false,
            host_ipc: false,
            cgroup_parent: Some("/kubepods/burstable/pod1234".to_string()),
            cgroup_driver: CgroupDriver::Cgroupfs,
            oom_score_adj: None,
            resources: PodResources::default(),
            sysctls: BTreeMap::new(),
            privileged: true,
            idmap: None,
            labels: BTreeMap::new(),
            uid: "1234-5678".to_string(),
            warm: false,
        }
    }

    #[test]
    fn a_plain_spec_is_valid() {
        spec().validate().unwrap();
    }

    #[test]
    fn ids_must_be_64_lowercase_hex() {
        for bad in [
            "",
            "abc",
            &ID.to_uppercase(),
            &format!("{ID}0"),
            &ID.replace('0', "g"),
        ] {
            let mut s = spec();
            s.id = bad.to_string();
            assert_eq!(s.validate().unwrap_err().field, "id", "{bad}");
        }
    }

    #[test]
    fn line_breaks_are_refused_everywhere_they_could_be_rendered() {
        let mut s = spec();
        s.name = "default/web\nlxc.init.cmd = /bin/sh".to_string();
        assert_eq!(s.validate().unwrap_err().field, "name");

        let mut s = spec();
        s.pod_dir = PathBuf::from("/var/lib/pvecri/pods/x\nlxc.rootfs.path = /");
        assert_eq!(s.validate().unwrap_err().field, "pod_dir");

        let mut s = spec();
        s.cgroup_parent = Some("/kubepods\n".to_string());
        assert_eq!(s.validate().unwrap_err().field, "cgroup_parent");

        let mut s = spec();
        s.labels.insert("a".to_string(), "b\r".to_string());
        assert_eq!(s.validate().unwrap_err().field, "labels");
    }

    #[test]
    fn paths_must_be_absolute_without_dotdot() {
        let mut s = spec();
        s.podinit = PathBuf::from("podinit");
        assert_eq!(s.validate().unwrap_err().field, "podinit");
        s.podinit = PathBuf::from("/usr/../podinit");
        assert_eq!(s.validate().unwrap_err().field, "podinit");
        s.podinit = PathBuf::from("/usr/podinit ");
        assert_eq!(s.validate().unwrap_err().field, "podinit");
    }

    #[test]
    fn hostnames() {
        let mut s = spec();
        for good in ["a", "web-0", "web.default.svc", &"a".repeat(64)] {
            s.hostname = good.to_string();
            s.validate().unwrap();
        }
        for bad in ["", "a b", "a_b", &"a".repeat(65), "x\n"] {
            s.hostname = bad.to_string();
            assert_eq!(s.validate().unwrap_err().field, "hostname", "{bad:?}");
        }
    }

    #[test]
    fn host_namespaces_need_a_privileged_ct_and_no_ipc_sysctls() {
        let mut s = spec();
        s.host_pid = true;
        s.host_ipc = true;
        s.validate().unwrap();
        s.privileged = false;
        assert_eq!(s.validate().unwrap_err().field, "privileged");
        s.privileged = true;
        s.sysctls
            .insert("kernel.shm_rmid_forced".to_string(), "1".to_string());
        assert_eq!(s.validate().unwrap_err().field, "sysctls");
        s.host_ipc = false;
        s.validate().unwrap();
    }

    #[test]
    fn unprivileged_root_is_the_mapped_base() {
        let mut s = spec();
        assert_eq!(s.ct_root_host_ids(), (0, 0));
        assert_eq!(s.user_idmap(), None);
        s.privileged = false;
        assert_eq!(s.ct_root_host_ids(), (100_000, 100_000));
        assert_eq!(s.user_idmap(), Some(IdMap::PROXMOX_DEFAULT));
        s.idmap = Some(IdMap {
            uid: IdRange {
                host: 1000,
                count: 100_000,
            },
            gid: IdRange {
                host: 2000,
                count: 65_536,
            },
        });
        s.validate().unwrap();
        assert_eq!(s.ct_root_host_ids(), (1000, 2000));
    }

    #[test]
    fn id_maps_are_checked() {
        let range = |host, count| IdRange { host, count };
        let mut s = spec();
        s.idmap = Some(IdMap::PROXMOX_DEFAULT);
        assert_eq!(s.validate().unwrap_err().field, "idmap", "privileged");
        s.privileged = false;
        s.validate().unwrap();
        for (uid, gid) in [
            (range(0, 65_536), range(100_000, 65_536)),
            (range(100_000, 0), range(100_000, 65_536)),
            (range(100_000, 65_536), range(u32::MAX - 1, 2)),
            (range(u32::MAX, 1), range(100_000, 65_536)),
        ] {
            s.idmap = Some(IdMap { uid, gid });
            assert_eq!(s.validate().unwrap_err().field, "idmap", "{uid:?} {gid:?}");
        }
        s.idmap = Some(IdMap {
            uid: range(u32::MAX - 1, 1),
            gid: range(1, u32::MAX - 1),
        });
        s.validate().unwrap();
    }

    proptest! {
        #[test]
        fn a_valid_spec_has_no_line_breaks_in_any_text(
            name in ".{0,40}", host in ".{0,70}", dir in "/.{0,60}", parent in ".{0,40}"
        ) {
            let mut s = spec();
            s.name = name;
            s.hostname = host;
            s.pod_dir = PathBuf::from(dir);
            s.cgroup_parent = Some(parent);
            if s.validate().is_ok() {
                let all = format!("{}{}{}{:?}", s.name, s.hostname, s.pod_dir.display(), s.cgroup_parent);
                prop_assert!(!all.contains('\n') && !all.contains('\r'));
            }
        }
    }
}
