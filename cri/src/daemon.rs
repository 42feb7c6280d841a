//! The daemon's shared state and its start-up: the state directory and its lock, the
//! metadata store, the layer store, the image service, the pod host, reconciliation.

use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use imageservice::manifest::Platform;
use imageservice::metrics::PullMetrics;
use imageservice::service::{ImageService, ImageServiceConfig};
use nix::fcntl::{Flock, FlockArg};

use crate::catalog::MetadataCatalog;
use crate::config::{CgroupDriver, Config, StorageDriver};
use crate::metadata::{MetadataError, MetadataStore};
use crate::runtime::{Runtime, RuntimeParts};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("state directory {path}: {op}: {error}")]
    StateDir {
        path: PathBuf,
        op: &'static str,
        error: std::io::Error,
    },
    #[error("state directory {0} is in use by another pvecri")]
    StateDirInUse(PathBuf),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("layer store: {0}")]
    Store(String),
    #[error("image service: {0}")]
    Images(String),
    #[error("pod host: {0}")]
    PodHost(String),
    #[error("metrics: {0}")]
    Metrics(String),
    #[error("reconciling with what exists: {0}")]
    Reconcile(String),
    #[error(transparent)]
    Streaming(#[from] crate::streaming::StreamingError),
}

/// What every RPC handler shares.
pub struct Daemon {
    pub config: Config,
    pub metadata: Arc<MetadataStore>,
    pub images: Arc<ImageService>,
    pub runtime: Runtime,
    pub metrics: prometheus::Registry,
    /// The daemon's own metrics, registered on `metrics`.
    pub runtime_metrics: crate::metrics::Metrics,
    /// Where the Exec, Attach and PortForward URLs lead (serving once the daemon is shared).
    pub streaming: crate::streaming::StreamingServer,
    /// Held for the daemon's lifetime: two daemons on one state directory would corrupt it.
    _lock: Flock<File>,
}

impl Daemon {
    pub async fn start(config: Config) -> Result<Self, StartupError> {
        let state_dir = config.state_dir.clone();
        std::fs::DirBuilder::new()
            .recursive(true)
            // Traversable (not readable) by others: an unprivileged pod CT's root (uid 100000)
            // must reach its pod directory below it.
            .mode(0o711)
            .create(&state_dir)
            .map_err(|error| StartupError::StateDir {
                path: state_dir.clone(),
                op: "create",
                error,
            })?;
        let lock = lock_state_dir(&state_dir)?;
        let streaming = crate::streaming::StreamingServer::bind(&config.streaming)?;
        let metadata = Arc::new(MetadataStore::open(&state_dir.join("metadata.db"))?);

        let store_config = match config.storage.driver {
            StorageDriver::Overlay => layerfs::StoreConfig::Overlay {
                root: state_dir.join("overlay"),
            },
            StorageDriver::Zfs => layerfs::StoreConfig::Zfs {
                dataset: config.storage.zfs.dataset.clone(),
                mount_root: state_dir.join("zfs"),
            },
        };
        let store = tokio::task::spawn_blocking(move || layerfs::open_store(&store_config))
            .await
            .map_err(|e| StartupError::Store(e.to_string()))?
            .map_err(|e| StartupError::Store(e.to_string()))?;

        let registry = prometheus::Registry::new_custom(None, None)
            .map_err(|e| StartupError::Metrics(e.to_string()))?;
        let pull_metrics = PullMetrics::new().map_err(|e| StartupError::Metrics(e.to_string()))?;
        pull_metrics
            .register(&registry)
            .map_err(|e| StartupError::Metrics(e.to_string()))?;
        let images = ImageService::new(
            ImageServiceConfig {
                registries: config.registries.clone(),
                spool_dir: state_dir.join("spool"),
                max_concurrent_downloads: config.images.max_concurrent_downloads,
                platform: Platform::node(),
            },
            store,
            Arc::new(MetadataCatalog(metadata.clone())),
            pull_metrics,
        )
        .map_err(|e| StartupError::Images(e.to_string()))?;

        let runtime_metrics = crate::metrics::Metrics::new(&registry)
            .map_err(|e| StartupError::Metrics(e.to_string()))?;
        let pod_host = pve::build(&config.pod_host, &config.pve, &state_dir)
            .map_err(|e| StartupError::PodHost(e.to_string()))?;
        let pod_host =
            crate::metrics::podhost::TimedPodHost::wrap(pod_host, runtime_metrics.ct_start.clone());
        let podinit = find_podinit(config.podinit_path.as_deref());
        match &podinit {
            Some(p) => tracing::info!(podinit = %p.display(), "podinit found"),
            None => tracing::error!("podinit not found: pods cannot start; set podinit_path"),
        }
        let runtime = Runtime::new(RuntimeParts {
            metadata: metadata.clone(),
            pod_host,
            images: images.clone(),
            cni_bin_dirs: config.cni.bin_dirs.clone(),
            cni_conf_dir: config.cni.conf_dir.clone(),
            cgroup_driver: match config.cgroup_driver {
                CgroupDriver::Cgroupfs => pve::CgroupDriver::Cgroupfs,
                CgroupDriver::Systemd => pve::CgroupDriver::Systemd,
            },
            podinit,
            state_dir: state_dir.clone(),
        })
        .map_err(|e| StartupError::Reconcile(e.to_string()))?;
        let reconciled = runtime
            .reconcile()
            .await
            .map_err(|e| StartupError::Reconcile(e.to_string()))?;
        tracing::info!(?reconciled, "reconciled");
        let warm = config.pod_host.warm_pool_size(&config.pve);
        if warm > 0 {
            match &runtime.podinit {
                Some(podinit) => runtime.start_warm_pool(warm, podinit.clone()),
                None => tracing::warn!("no warm pool: podinit not found"),
            }
        }
        if let Err(e) = images.collect_garbage().await {
            tracing::warn!(error = %e, "collecting unused layers at start");
        }
        Ok(Self {
            config,
            metadata,
            images,
            runtime,
            metrics: registry,
            runtime_metrics,
            streaming,
            _lock: lock,
        })
    }
}

/// The configured podinit, else one next to our executable, else the install locations.
/// Only a statically linked one will do: the CT's root holds no libraries.
fn find_podinit(configured: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = configured {
        if !p.is_file() {
            return None;
        }
        if !is_static_elf(p) {
            tracing::error!(podinit = %p.display(), "podinit is dynamically linked; build it with scripts/build-podinit");
            return None;
        }
        // The pod host refuses paths with `..` or symlinks it cannot bind reliably.
        return Some(p.canonicalize().unwrap_or_else(|_| p.to_path_buf()));
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("podinit")));
    beside
        .into_iter()
        .chain([
            PathBuf::from("/usr/local/lib/pvecri/podinit"),
            PathBuf::from("/usr/lib/pvecri/podinit"),
        ])
        .find(|p| p.is_file() && is_static_elf(p))
        .map(|p| p.canonicalize().unwrap_or(p))
}

/// An ELF executable without a program interpreter (PT_INTERP) needs no dynamic loader.
fn is_static_elf(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    const PT_INTERP: u32 = 3;
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    let mut hdr = [0u8; 64];
    if f.read_exact(&mut hdr).is_err() || &hdr[..4] != b"\x7fELF" || hdr[4] != 2 || hdr[5] != 1 {
        return false; // not a 64-bit little-endian ELF
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let phoff = u64::from_le_bytes([
        hdr[32], hdr[33], hdr[34], hdr[35], hdr[36], hdr[37], hdr[38], hdr[39],
    ]);
    let phentsize = usize::from(u16_at(&hdr, 54));
    let phnum = usize::from(u16_at(&hdr, 56));
    if phentsize < 4 || phnum > 256 || f.seek(SeekFrom::Start(phoff)).is_err() {
        return false;
    }
    let mut ph = vec![0u8; phentsize * phnum];
    if f.read_exact(&mut ph).is_err() {
        return false;
    }
    !ph.chunks(phentsize)
        .any(|p| u32::from_le_bytes([p[0], p[1], p[2], p[3]]) == PT_INTERP)
}

fn lock_state_dir(state_dir: &Path) -> Result<Flock<File>, StartupError> {
    let path = state_dir.join("pvecri.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|error| StartupError::StateDir {
            path: path.clone(),
            op: "open lock file",
            error,
        })?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == nix::errno::Errno::EWOULDBLOCK {
            StartupError::StateDirInUse(state_dir.to_path_buf())
        } else {
            StartupError::StateDir {
                path,
                op: "lock",
                error: errno.into(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_daemon_on_one_state_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path()).unwrap();
        let _first = lock_state_dir(dir.path()).unwrap();
        assert!(matches!(
            lock_state_dir(dir.path()),
            Err(StartupError::StateDirInUse(_))
        ));
    }

    #[test]
    fn configured_podinit_must_exist_and_be_static() {
        assert_eq!(find_podinit(Some(Path::new("/nonexistent/podinit"))), None);
        let f = tempfile::NamedTempFile::new().unwrap();
        assert_eq!(find_podinit(Some(f.path())), None, "not an ELF");
        // Debian's busybox-static is static; /bin/ls is not.
        assert!(is_static_elf(Path::new("/bin/busybox")));
        assert!(!is_static_elf(Path::new("/bin/ls")));
        assert_eq!(find_podinit(Some(Path::new("/bin/ls"))), None);
    }
}
