//! `pvecri node install|uninstall`: the Helm chart's node agent. It runs in a privileged
//! DaemonSet pod whose image holds the Debian package's file tree (the payload) and puts
//! pvecri on the node: the binary and podinit under `/usr/local`, a systemd unit under
//! `/etc/systemd/system`, the config (and Proxmox token) from the chart under `/etc/pvecri`,
//! optionally a kubelet drop-in that points the kubelet at pvecri's socket. It restarts
//! what changed, and nothing else, so a pod that runs it again (after a restart of its own,
//! or once the kubelet runs on pvecri) changes nothing. What it placed is listed in a
//! manifest, which `uninstall` reverts.
//!
//! Every host path is under a host root (the host's `/` mounted into the pod), which tests
//! move to a temporary directory.

pub mod files;
pub mod host;
pub mod release;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use files::{FileChange, place, remove};
use host::{HostService, Restarter};

/// Where things go on the host, relative to its root.
pub const HOST_PVECRI: &str = "usr/local/bin/pvecri";
pub const HOST_PODINIT: &str = "usr/local/lib/pvecri/podinit";
pub const HOST_UNIT: &str = "etc/systemd/system/pvecri.service";
pub const HOST_CONFIG: &str = "etc/pvecri/config.toml";
pub const HOST_PVE_TOKEN: &str = "etc/pvecri/pve-token";
pub const HOST_KUBELET_DROPIN: &str = "etc/systemd/system/kubelet.service.d/90-pvecri.conf";
pub const HOST_MANIFEST: &str = "var/lib/pvecri-node/manifest.json";
/// dpkg's file list of the package: its presence means pvecri came as a Debian package.
pub const HOST_DPKG_LIST: &str = "var/lib/dpkg/info/pvecri.list";

/// Where things are in the payload (the package's tree).
pub const PAYLOAD_PVECRI: &str = "usr/bin/pvecri";
pub const PAYLOAD_PODINIT: &str = "usr/lib/pvecri/podinit";
pub const PAYLOAD_UNIT: &str = "usr/lib/systemd/system/pvecri.service";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("host root {0} is not a directory (mount the host's / there)")]
    NoHostRoot(PathBuf),
    #[error(
        "pvecri is installed on this node as a Debian package ({0} exists); the chart would \
         shadow it: remove the package (apt remove pvecri) or keep this node out of the \
         chart's node selector"
    )]
    PackageInstalled(PathBuf),
    #[error("payload file {path}: {error}")]
    Payload {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the config to install is invalid: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("manifest {path}: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error(transparent)]
    Host(#[from] host::HostError),
}

/// What `install` puts on the node.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    pub host_root: PathBuf,
    /// The package's file tree (`usr/bin/pvecri`, ...), `/` in the installer image.
    pub payload: PathBuf,
    /// The config.toml to install.
    pub config: PathBuf,
    /// The Proxmox API token file to install as `/etc/pvecri/pve-token` (mode 0600).
    pub pve_token: Option<PathBuf>,
    /// The kubelet drop-in to install; `None` removes one installed before.
    pub kubelet_dropin: Option<PathBuf>,
}

/// What the node holds from an install: the paths placed and the version placed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: String,
    /// Relative to the host root.
    pub files: Vec<String>,
    /// Digest of the version and the config, token and drop-in installed: a pod is ready
    /// when the node holds exactly what it installs, not what an earlier pod did.
    #[serde(default)]
    pub inputs: String,
}

/// A file as placed on the host: its path under the host root, its content, its mode.
type HostFile = (&'static str, Vec<u8>, u32);

impl InstallOptions {
    /// The config, token and drop-in as installed, with their host paths and modes.
    fn inputs(&self) -> Result<Vec<HostFile>, NodeError> {
        // The config may hold registry credentials.
        let mut inputs = vec![(HOST_CONFIG, read_payload(self.config.clone())?, 0o600)];
        if let Some(token) = &self.pve_token {
            inputs.push((HOST_PVE_TOKEN, read_payload(token.clone())?, 0o600));
        }
        if let Some(dropin) = &self.kubelet_dropin {
            inputs.push((HOST_KUBELET_DROPIN, read_payload(dropin.clone())?, 0o644));
        }
        Ok(inputs)
    }
}

fn inputs_digest(inputs: &[HostFile]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    for (rel, bytes, mode) in inputs {
        h.update([0]);
        h.update(rel.as_bytes());
        h.update(mode.to_le_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    hex::encode(h.finalize())
}

/// What an install or uninstall did, for the log and for tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub changed: Vec<String>,
    pub restarted_pvecri: bool,
    pub restarted_kubelet: bool,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> NodeError + '_ {
    move |error| NodeError::Io {
        path: path.to_path_buf(),
        error,
    }
}

pub fn read_manifest(host_root: &Path) -> Result<Option<Manifest>, NodeError> {
    let path = host_root.join(HOST_MANIFEST);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| NodeError::Manifest {
            path,
            message: e.to_string(),
        })
}

fn write_manifest(host_root: &Path, manifest: &Manifest) -> Result<(), NodeError> {
    let path = host_root.join(HOST_MANIFEST);
    let mut text = serde_json::to_string_pretty(manifest).map_err(|e| NodeError::Manifest {
        path: path.clone(),
        message: e.to_string(),
    })?;
    text.push('\n');
    place(&path, text.as_bytes(), 0o644)?;
    Ok(())
}

fn check_host_root(host_root: &Path) -> Result<(), NodeError> {
    if !host_root.is_dir() {
        return Err(NodeError::NoHostRoot(host_root.to_path_buf()));
    }
    Ok(())
}

fn read_payload(path: PathBuf) -> Result<Vec<u8>, NodeError> {
    std::fs::read(&path).map_err(|error| NodeError::Payload { path, error })
}

/// The unit as the chart installs it: the package's unit with the binary under /usr/local.
pub fn local_unit(package_unit: &str) -> String {
    package_unit.replace(&format!("/{PAYLOAD_PVECRI}"), &format!("/{HOST_PVECRI}"))
}

/// Places pvecri on the node and restarts what changed.
pub fn install(opts: &InstallOptions, restarter: &dyn Restarter) -> Result<Outcome, NodeError> {
    let root = &opts.host_root;
    check_host_root(root)?;
    let dpkg = root.join(HOST_DPKG_LIST);
    if dpkg.exists() {
        return Err(NodeError::PackageInstalled(dpkg));
    }
    // The same check the unit runs before every start, before anything is touched.
    Config::load(&opts.config, true)?;

    let unit =
        String::from_utf8_lossy(&read_payload(opts.payload.join(PAYLOAD_UNIT))?).into_owned();
    let inputs = opts.inputs()?;
    let digest = inputs_digest(&inputs);
    let mut wanted: Vec<HostFile> = vec![
        (
            HOST_PVECRI,
            read_payload(opts.payload.join(PAYLOAD_PVECRI))?,
            0o755,
        ),
        (
            HOST_PODINIT,
            read_payload(opts.payload.join(PAYLOAD_PODINIT))?,
            0o755,
        ),
        (HOST_UNIT, local_unit(&unit).into_bytes(), 0o644),
    ];
    wanted.extend(inputs);

    let before = read_manifest(root)?;
    let mut outcome = Outcome::default();
    let mut unit_files_changed = false;
    let mut pvecri_changed = before.is_none();
    let mut kubelet_changed = false;
    for (rel, bytes, mode) in &wanted {
        if place(&root.join(rel), bytes, *mode)? == FileChange::Written {
            outcome.changed.push((*rel).to_string());
            if *rel == HOST_KUBELET_DROPIN {
                kubelet_changed = true;
            } else {
                pvecri_changed = true;
            }
            unit_files_changed |= *rel == HOST_UNIT || *rel == HOST_KUBELET_DROPIN;
        }
    }
    // What an earlier install placed and this one does not (token, kubelet drop-in).
    for old in before.iter().flat_map(|m| m.files.iter()) {
        if wanted.iter().any(|(rel, _, _)| rel == old) {
            continue;
        }
        if remove(&root.join(old))? {
            outcome.changed.push(format!("-{old}"));
            if old == HOST_KUBELET_DROPIN {
                kubelet_changed = true;
                unit_files_changed = true;
            } else {
                pvecri_changed = true;
            }
        }
    }
    write_manifest(
        root,
        &Manifest {
            version: env!("CARGO_PKG_VERSION").to_string(),
            files: wanted
                .iter()
                .map(|(rel, _, _)| (*rel).to_string())
                .collect(),
            inputs: digest,
        },
    )?;

    if unit_files_changed {
        restarter.reload()?;
    }
    if pvecri_changed {
        restarter.enable(HostService::Pvecri)?;
        restarter.restart(HostService::Pvecri, "pvecri installed or changed")?;
        outcome.restarted_pvecri = true;
    }
    if kubelet_changed {
        restarter.restart(HostService::Kubelet, "kubelet drop-in written or removed")?;
        outcome.restarted_kubelet = true;
    }
    Ok(outcome)
}

/// Reverts what the manifest lists: stops and disables pvecri (pod CTs keep running, as
/// on any daemon stop), removes the files, restarts the kubelet if its drop-in goes. The
/// state directory (images, pod state) stays.
pub fn uninstall(host_root: &Path, restarter: &dyn Restarter) -> Result<Outcome, NodeError> {
    check_host_root(host_root)?;
    let mut outcome = Outcome::default();
    let Some(manifest) = read_manifest(host_root)? else {
        return Ok(outcome);
    };
    restarter.stop(HostService::Pvecri)?;
    let mut kubelet_changed = false;
    for rel in &manifest.files {
        if remove(&host_root.join(rel))? {
            outcome.changed.push(format!("-{rel}"));
            kubelet_changed |= rel == HOST_KUBELET_DROPIN;
        }
    }
    // Directories this installer made, when nothing else is left in them.
    for dir in [
        "usr/local/lib/pvecri",
        "etc/systemd/system/kubelet.service.d",
        "etc/pvecri",
    ] {
        let _ = std::fs::remove_dir(host_root.join(dir));
    }
    remove(&host_root.join(HOST_MANIFEST))?;
    let _ = std::fs::remove_dir(host_root.join("var/lib/pvecri-node"));
    restarter.reload()?;
    if kubelet_changed {
        restarter.restart(HostService::Kubelet, "kubelet drop-in removed")?;
        outcome.restarted_kubelet = true;
    }
    Ok(outcome)
}

/// Whether the node holds what `opts` installs: this version with this config, token and
/// drop-in (the DaemonSet's readiness; a new pod is not ready on what an older one placed).
pub fn installed(opts: &InstallOptions) -> Result<bool, NodeError> {
    let digest = inputs_digest(&opts.inputs()?);
    Ok(read_manifest(&opts.host_root)?
        .is_some_and(|m| m.version == env!("CARGO_PKG_VERSION") && m.inputs == digest))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records what would have been restarted.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Restarter for Recorder {
        fn reload(&self) -> Result<(), host::HostError> {
            self.0.lock().unwrap().push("reload".into());
            Ok(())
        }
        fn enable(&self, s: HostService) -> Result<(), host::HostError> {
            self.0.lock().unwrap().push(format!("enable {}", s.unit()));
            Ok(())
        }
        fn restart(&self, s: HostService, _why: &str) -> Result<(), host::HostError> {
            self.0.lock().unwrap().push(format!("restart {}", s.unit()));
            Ok(())
        }
        fn stop(&self, s: HostService) -> Result<(), host::HostError> {
            self.0.lock().unwrap().push(format!("stop {}", s.unit()));
            Ok(())
        }
    }

    impl Recorder {
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut self.0.lock().unwrap())
        }
    }

    struct Setup {
        _dir: tempfile::TempDir,
        opts: InstallOptions,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let payload = dir.path().join("payload");
        let host = dir.path().join("host");
        std::fs::create_dir_all(&host).unwrap();
        for (rel, text) in [
            (PAYLOAD_PVECRI, "pvecri v1"),
            (PAYLOAD_PODINIT, "podinit v1"),
            (
                PAYLOAD_UNIT,
                "[Service]\nExecStart=/usr/bin/pvecri serve --config /etc/pvecri/config.toml\n",
            ),
        ] {
            let p = payload.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "log_level = \"debug\"\n").unwrap();
        let dropin = dir.path().join("dropin.conf");
        std::fs::write(&dropin, "[Service]\n").unwrap();
        Setup {
            opts: InstallOptions {
                host_root: host,
                payload,
                config,
                pve_token: None,
                kubelet_dropin: Some(dropin),
            },
            _dir: dir,
        }
    }

    #[test]
    fn install_places_files_and_restarts_once() {
        let s = setup();
        let r = Recorder::default();
        let out = install(&s.opts, &r).unwrap();
        assert!(out.restarted_pvecri && out.restarted_kubelet);
        assert_eq!(
            r.take(),
            [
                "reload",
                "enable pvecri.service",
                "restart pvecri.service",
                "restart kubelet.service"
            ]
        );
        let root = &s.opts.host_root;
        assert_eq!(
            std::fs::read_to_string(root.join(HOST_PVECRI)).unwrap(),
            "pvecri v1"
        );
        let unit = std::fs::read_to_string(root.join(HOST_UNIT)).unwrap();
        assert!(
            unit.contains("ExecStart=/usr/local/bin/pvecri serve"),
            "{unit}"
        );
        assert!(installed(&s.opts).unwrap());

        // Again, nothing changed: nothing restarts.
        let out = install(&s.opts, &r).unwrap();
        assert_eq!(out, Outcome::default());
        assert!(r.take().is_empty());

        // A new config restarts pvecri only; until it is installed the node is not ready.
        std::fs::write(&s.opts.config, "log_level = \"info\"\n").unwrap();
        assert!(!installed(&s.opts).unwrap());
        let out = install(&s.opts, &r).unwrap();
        assert!(installed(&s.opts).unwrap());
        assert_eq!(out.changed, [HOST_CONFIG]);
        assert_eq!(
            r.take(),
            ["enable pvecri.service", "restart pvecri.service"]
        );
    }

    #[test]
    fn dropping_the_kubelet_dropin_removes_it_and_restarts_the_kubelet() {
        let mut s = setup();
        let r = Recorder::default();
        install(&s.opts, &r).unwrap();
        r.take();
        s.opts.kubelet_dropin = None;
        let out = install(&s.opts, &r).unwrap();
        assert_eq!(out.changed, [format!("-{HOST_KUBELET_DROPIN}")]);
        assert!(!s.opts.host_root.join(HOST_KUBELET_DROPIN).exists());
        assert_eq!(r.take(), ["reload", "restart kubelet.service"]);
    }

    #[test]
    fn a_bad_config_touches_nothing() {
        let s = setup();
        std::fs::write(&s.opts.config, "[storage]\ndriver = \"btrfs\"\n").unwrap();
        let err = install(&s.opts, &Recorder::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("storage.driver"), "{err}");
        assert_eq!(std::fs::read_dir(&s.opts.host_root).unwrap().count(), 0);
    }

    #[test]
    fn a_packaged_pvecri_is_left_alone() {
        let s = setup();
        let list = s.opts.host_root.join(HOST_DPKG_LIST);
        std::fs::create_dir_all(list.parent().unwrap()).unwrap();
        std::fs::write(&list, "/usr/bin/pvecri\n").unwrap();
        let err = install(&s.opts, &Recorder::default()).unwrap_err();
        assert!(matches!(err, NodeError::PackageInstalled(_)), "{err}");
        assert!(!s.opts.host_root.join(HOST_PVECRI).exists());
    }

    #[test]
    fn uninstall_reverts_the_manifest() {
        let mut s = setup();
        let token = s.opts.host_root.parent().unwrap().join("token");
        std::fs::write(&token, "root@pam!k8s=secret\n").unwrap();
        s.opts.pve_token = Some(token);
        let r = Recorder::default();
        install(&s.opts, &r).unwrap();
        let root = &s.opts.host_root;
        use std::os::unix::fs::PermissionsExt;
        let mode = |rel: &str| {
            std::fs::metadata(root.join(rel))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(HOST_PVE_TOKEN), 0o600);
        assert_eq!(mode(HOST_CONFIG), 0o600);
        // Something of the admin's own beside our files stays.
        std::fs::write(root.join("etc/pvecri/notes"), "mine").unwrap();
        r.take();
        let out = uninstall(root, &r).unwrap();
        assert!(out.restarted_kubelet);
        assert_eq!(
            r.take(),
            ["stop pvecri.service", "reload", "restart kubelet.service"]
        );
        for rel in [
            HOST_PVECRI,
            HOST_PODINIT,
            HOST_UNIT,
            HOST_CONFIG,
            HOST_PVE_TOKEN,
            HOST_KUBELET_DROPIN,
            HOST_MANIFEST,
        ] {
            assert!(!root.join(rel).exists(), "{rel} left");
        }
        assert!(root.join("etc/pvecri/notes").exists());
        // Nothing installed: nothing to do.
        assert_eq!(uninstall(root, &r).unwrap(), Outcome::default());
        assert!(r.take().is_empty());
    }
}
